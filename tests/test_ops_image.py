"""keras.ops.image: values against Keras 3.15 (torch backend), gradients by central differences and
against torch autograd through Keras, layouts, dtypes, keyword calls."""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")

from lamina import Tensor  # noqa: E402
from lamina.ops import image as I  # noqa: E402
from lamina.testing import check_grad  # noqa: E402

KI = lazy_module("keras.ops.image")
RNG = np.random.default_rng(0)
X = RNG.random((2, 9, 11, 3)).astype("float32")
XCF = np.ascontiguousarray(X.transpose(0, 3, 1, 2))
Y = np.clip(X + RNG.normal(0, 0.1, X.shape), 0, 1).astype("float32")
T = np.array([[1.2, 0.3, -2, 0.1, 0.9, 1.5, 0, 0], [0.8, -0.2, 1, 0.3, 1.1, -1, 0, 0]], "float32")
T_NEAREST = T + np.array([0, 0, 0.25, 0, 0, 0.25, 0, 0], "float32")  # no source coordinate near a half-integer
SP = np.array([[0, 0], [10, 0], [0, 8], [10, 8]], "float32")
EP = np.array([[1, 1], [9, 0], [0, 7], [10, 8.5]], "float32")
V = RNG.random((2, 6, 7, 5, 2)).astype("float32")
COORDS = RNG.uniform(-2, 12, (2, 5, 6)).astype("float32")
PLANE = RNG.random((9, 11)).astype("float32")


def _np(t):
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


def same(got, want, tol=2e-6):
    want = _np(want)
    got = got.numpy()
    assert got.shape == want.shape
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    tol = 1e-3 if got.dtype == np.float16 else tol      # one float16 ulp from the other rounding order
    np.testing.assert_allclose(got.astype("float64"), want.astype("float64"), rtol=tol, atol=tol)


def test_namespace_matches_keras_signatures():
    import inspect
    import json
    sigs = json.load(open(os.path.join(os.path.dirname(__file__), "data", "keras_ops_signatures.json")))["image"]
    assert sorted(I.__all__) == sorted(sigs)
    for name, sig in sigs.items():
        assert str(inspect.signature(getattr(I, name))) == sig, name
        assert getattr(I, name).__doc__.strip().splitlines()[0]


# ----------------------------------------------------------------------------- values against Keras
CASES = {
    "gray": lambda m: m.rgb_to_grayscale(X),
    "gray_cf": lambda m: m.rgb_to_grayscale(XCF, data_format="channels_first"),
    "gray_uint8": lambda m: m.rgb_to_grayscale((X * 255).astype("uint8")),
    "gray_single": lambda m: m.rgb_to_grayscale(X[0]),
    "hsv": lambda m: m.rgb_to_hsv(X),
    "hsv_cf": lambda m: m.rgb_to_hsv(XCF, data_format="channels_first"),
    "rgb": lambda m: m.hsv_to_rgb(X),
    "rgb_f64": lambda m: m.hsv_to_rgb(X.astype("float64") * 3 - 1),
    "resize_crop": lambda m: m.resize(X, (5, 5), crop_to_aspect_ratio=True),
    "resize_pad_h": lambda m: m.resize(X, (5, 3), pad_to_aspect_ratio=True, fill_value=0.5),
    "resize_pad_w": lambda m: m.resize(X, (3, 8), pad_to_aspect_ratio=True, fill_value=0.5),
    "resize_uint8_bicubic": lambda m: m.resize((X * 255).astype("uint8"), (5, 7), "bicubic"),
    "resize_int32": lambda m: m.resize((X * 255).astype("int32"), (13, 4)),
    "resize_float16": lambda m: m.resize(X.astype("float16"), (13, 4)),
    "resize_cf": lambda m: m.resize(XCF, (5, 7), data_format="channels_first"),
    "resize_single": lambda m: m.resize(X[0], (5, 7), interpolation="bicubic", antialias=True),
    "affine_single": lambda m: m.affine_transform(X[0], T[0]),
    "affine_cf": lambda m: m.affine_transform(XCF, T, data_format="channels_first"),
    "affine_uint8": lambda m: m.affine_transform((X * 255).astype("uint8"), T, fill_value=7),
    "persp_bilinear": lambda m: m.perspective_transform(X, SP, EP, fill_value=0.2),
    "persp_nearest": lambda m: m.perspective_transform(X, SP, EP, "nearest"),
    "persp_cf_batch": lambda m: m.perspective_transform(XCF, np.stack([SP, EP]), np.stack([EP, SP]),
                                                        data_format="channels_first"),
    "blur": lambda m: m.gaussian_blur(X, data_format="channels_last"),
    "blur_sigmas": lambda m: m.gaussian_blur(X, (5, 5), (1.5, 0.7), data_format="channels_last"),
    "blur_rect": lambda m: m.gaussian_blur(X, (5, 3), (1.5, 0.7), data_format="channels_last"),
    "blur_cf": lambda m: m.gaussian_blur(XCF, (5, 5), data_format="channels_first"),
    "sobel": lambda m: m.sobel_edges(X),
    "sobel_cf": lambda m: m.sobel_edges(XCF, data_format="channels_first"),
    "ssim": lambda m: m.ssim(X, Y, filter_size=5),
    "ssim_single": lambda m: m.ssim(X[0], Y[0], max_val=2.0, filter_size=3, filter_sigma=0.8, k1=0.02, k2=0.05),
    "ssim_cf": lambda m: m.ssim(XCF, np.ascontiguousarray(Y.transpose(0, 3, 1, 2)), filter_size=5,
                                data_format="channels_first"),
    "patches": lambda m: m.extract_patches(X, (3, 2), (2, 3)),
    "patches_same": lambda m: m.extract_patches(X, (3, 2), (2, 3), padding="same"),
    "patches_dilated": lambda m: m.extract_patches(X, 2, 1, 2, "same"),
    "patches_cf": lambda m: m.extract_patches(XCF, 3, data_format="channels_first"),
    "patches_single": lambda m: m.extract_patches(X[0], 4),
    "patches_3d_via_2d": lambda m: m.extract_patches(V, (2, 3, 2)),
    "patches3d": lambda m: m.extract_patches_3d(V, (2, 3, 2), (1, 2, 2)),
    "patches3d_same": lambda m: m.extract_patches_3d(V, (2, 3, 2), (1, 2, 2), padding="same"),
    "patches3d_dilated_cf": lambda m: m.extract_patches_3d(np.ascontiguousarray(V.transpose(0, 4, 1, 2, 3)), 2, 1, 2,
                                                            data_format="channels_first"),
    "patches3d_single": lambda m: m.extract_patches_3d(V[0], 2),
    "pad": lambda m: m.pad_images(X, 1, 2, target_height=12, right_padding=1),
    "pad_cf": lambda m: m.pad_images(XCF, bottom_padding=2, left_padding=0, target_height=13, target_width=12,
                                     data_format="channels_first"),
    "pad_single": lambda m: m.pad_images(X[0], 0, 1, 2, 3),
    "crop": lambda m: m.crop_images(X, 1, 2, target_height=5, right_cropping=1),
    "crop_cf": lambda m: m.crop_images(XCF, bottom_cropping=2, left_cropping=3, target_height=4, target_width=5,
                                       data_format="channels_first"),
    "crop_single": lambda m: m.crop_images(X[0], 1, 1, 1, 1),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_values_match_keras(case):
    same(CASES[case](I), CASES[case](KI))


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest", "bicubic"])
@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("size", [(5, 7), (15, 20), (9, 4)])
def test_resize_matches_keras(interpolation, antialias, size):
    same(I.resize(X, size, interpolation, antialias), KI.resize(X, size, interpolation, antialias), 2e-6)


@pytest.mark.parametrize("fill_mode", ["constant", "nearest", "wrap", "mirror", "reflect"])
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_affine_transform_and_map_coordinates_match_keras(fill_mode, interpolation):
    # T maps some pixels to exact half-integers (0.1 * 7 + 0.9 * 7 + 1.5 = 8.5), where nearest sampling picks
    # either neighbour by the last bit of the float32 coordinate, which depends on the order of the products
    # (Keras's einsum runs them through MKL on an Intel CPU, NumPy/OpenBLAS elsewhere): nearest is compared on
    # a transform whose coordinates all lie well away from such ties (T's offsets moved by a quarter pixel)
    t = T if interpolation == "bilinear" else T_NEAREST
    if interpolation == "nearest":
        ys, xs = np.meshgrid(np.arange(X.shape[1]), np.arange(X.shape[2]), indexing="ij")
        t64 = t.astype("float64")[:, :, None, None]
        coords = np.stack([t64[:, 0] * xs + t64[:, 1] * ys + t64[:, 2], t64[:, 3] * xs + t64[:, 4] * ys + t64[:, 5]])
        assert np.abs(coords - np.floor(coords) - 0.5).min() > 0.01
    same(I.affine_transform(X, t, interpolation, fill_mode, 0.3),
         KI.affine_transform(X, t, interpolation, fill_mode, 0.3))
    order = 1 if interpolation == "bilinear" else 0
    same(I.map_coordinates(PLANE, COORDS, order, fill_mode, 0.7),
         KI.map_coordinates(PLANE, COORDS, order, fill_mode, 0.7))


@pytest.mark.parametrize("method", ["linear", "bilinear", "cubic", "lanczos3", "lanczos5"])
@pytest.mark.parametrize("antialias", [True, False])
def test_scale_and_translate_matches_keras(method, antialias):
    args = ((2, 5, 17, 3), np.array([0.5, 1.6], "float32"), np.array([0.3, -1.0], "float32"), (1, 2), method)
    same(I.scale_and_translate(X, *args, antialias=antialias), KI.scale_and_translate(X, *args, antialias=antialias))


def test_scale_and_translate_integer_images_round_and_clip():
    xi = (X * 255).astype("uint8")
    args = ((2, 20, 5, 3), np.array([2.2, 0.4], "float32"), np.array([0.0, 0.5], "float32"), (1, 2), "cubic")
    same(I.scale_and_translate(xi, *args), KI.scale_and_translate(xi, *args))


@pytest.mark.parametrize("method", ["lanczos3", "lanczos5"])
@pytest.mark.parametrize("antialias", [False, True])
@pytest.mark.parametrize("size", [(4, 5), (17, 20)])
def test_resize_lanczos_is_jax_scale_and_translate(method, antialias, size):
    """Keras's torch backend refuses lanczos; lamina resizes as Keras's JAX backend does (jax.image.resize,
    i.e. scale_and_translate with scale out/in and no translation), checked against Keras's own
    scale_and_translate."""
    scale = np.array([size[0] / 9, size[1] / 11], "float32")
    want = KI.scale_and_translate(X, (2,) + size + (3,), scale, np.zeros(2, "float32"), (1, 2), method, antialias)
    same(I.resize(X, size, method, antialias=antialias), want, 2e-6)


def test_resize_area_is_box_average():
    """'area' (TensorFlow's; Keras's torch backend refuses it): integer factors give torch's adaptive average
    pooling, and any factor keeps the mean of a constant image."""
    x = RNG.random((2, 9, 12, 3)).astype("float32")
    pooled = torch.nn.functional.adaptive_avg_pool2d(torch.tensor(x).permute(0, 3, 1, 2), (3, 4)).permute(0, 2, 3, 1)
    same(I.resize(x, (3, 4), "area"), pooled)
    np.testing.assert_allclose(I.resize(np.full((1, 7, 5, 1), 2.5, "float32"), (3, 4), "area").numpy(), 2.5,
                               rtol=1e-6)
    check_grad(lambda t: I.resize(t, (4, 3), "area"), X64)


def test_keyword_calls():
    same(I.resize(images=X, size=(4, 6), interpolation="bicubic", antialias=True, data_format="channels_last"),
         KI.resize(X, (4, 6), "bicubic", antialias=True))
    same(I.affine_transform(images=X, transform=T_NEAREST, interpolation="nearest", fill_mode="wrap", fill_value=0,
                            data_format="channels_last"), KI.affine_transform(X, T_NEAREST, "nearest", "wrap"))
    same(I.map_coordinates(inputs=PLANE, coordinates=COORDS, order=1, fill_mode="mirror", fill_value=0),
         KI.map_coordinates(PLANE, COORDS, 1, "mirror"))
    same(I.pad_images(images=X, top_padding=1, left_padding=1, bottom_padding=0, right_padding=2),
         KI.pad_images(X, 1, 1, 0, 2))
    same(I.crop_images(images=X, top_cropping=1, left_cropping=1, target_height=3, target_width=4),
         KI.crop_images(X, 1, 1, target_height=3, target_width=4))
    same(I.extract_patches(images=X, size=3, strides=2, dilation_rate=1, padding="same"),
         KI.extract_patches(X, 3, 2, padding="same"))
    same(I.ssim(image1=X, image2=Y, max_val=1.0, filter_size=3), KI.ssim(X, Y, filter_size=3))
    same(I.gaussian_blur(images=X, kernel_size=(3, 3), sigma=(2.0, 2.0), data_format="channels_last"),
         KI.gaussian_blur(X, (3, 3), (2.0, 2.0), data_format="channels_last"))


def test_gaussian_blur_default_is_channels_last():
    """Keras's torch backend treats data_format=None as channels_first in gaussian_blur (it skips the
    standardisation the other image ops do); lamina uses the documented default, channels_last."""
    same(I.gaussian_blur(X), KI.gaussian_blur(X, data_format="channels_last"))


def test_elastic_transform_properties():
    np.testing.assert_array_equal(I.elastic_transform(X, alpha=0.0, seed=1).numpy(), X)
    a = I.elastic_transform(X, alpha=5.0, sigma=1.0, seed=3).numpy()
    b = I.elastic_transform(X, alpha=5.0, sigma=1.0, seed=3).numpy()
    np.testing.assert_array_equal(a, b)
    assert a.shape == X.shape and a.dtype == np.float32
    assert 0 < np.abs(a - X).mean() < 0.5 and a.min() >= 0 and a.max() <= 1  # reflect fill keeps values in range
    cf = I.elastic_transform(XCF, alpha=5.0, sigma=1.0, seed=3, data_format="channels_first").numpy()
    np.testing.assert_allclose(cf.transpose(0, 2, 3, 1), a, atol=1e-6)
    k = KI.elastic_transform(X, alpha=5.0, sigma=1.0, seed=3)
    assert tuple(k.shape) == a.shape


def test_errors():
    with pytest.raises(ValueError, match="interpolation"):
        I.resize(X, (3, 3), "cubic")
    with pytest.raises(ValueError, match="fill_mode"):
        I.affine_transform(X, T, fill_mode="edge")
    with pytest.raises(ValueError, match="channel"):
        I.rgb_to_grayscale(X[..., :2])
    with pytest.raises(ValueError, match="exactly two"):
        I.pad_images(X, 1, 1)
    with pytest.raises(ValueError, match="rank"):
        I.resize(X[0, 0], (2, 2))
    with pytest.raises(ValueError, match="float"):
        I.rgb_to_hsv((X * 255).astype("uint8"))


# ----------------------------------------------------------------------------- gradients
X64 = X[:1, :6, :7].astype("float64")
T64 = T[:1]


@pytest.mark.parametrize("label,fn,args", [
    ("resize_bilinear", lambda x: I.resize(x, (4, 9)), (X64,)),
    ("resize_bicubic_aa", lambda x: I.resize(x, (4, 3), "bicubic", antialias=True), (X64,)),
    ("resize_lanczos3", lambda x: I.resize(x, (8, 5), "lanczos3"), (X64,)),
    ("resize_crop_cf", lambda x: I.resize(x, (3, 3), crop_to_aspect_ratio=True, data_format="channels_first"),
     (X64.transpose(0, 3, 1, 2).copy(),)),
    ("affine_bilinear_reflect", lambda x: I.affine_transform(x, T64, fill_mode="reflect"), (X64,)),
    ("affine_constant_fill", lambda x: I.affine_transform(x, T64, fill_value=0.5), (X64,)),
    ("affine_nearest_mirror", lambda x: I.affine_transform(x, T64, "nearest", "mirror"), (X64,)),
    ("perspective", lambda x: I.perspective_transform(x, SP, EP), (X64,)),
    ("affine_wrt_transform", lambda x, t: I.affine_transform(x, t, fill_mode="reflect"),
     (X64, np.array([[1.1317, 0.2683, -1.9121, 0.1234, 0.9312, 1.4711, 0.0, 0.0]]))),   # no integer coordinates (kinks)
    ("affine_projective", lambda x, t: I.affine_transform(x, t, fill_value=0.2),
     (X64, np.array([[1.1031, 0.2137, -0.5123, 0.1071, 0.9043, 0.3111, 0.0123, -0.0217]]))),
    ("perspective_wrt_points", lambda x, s, e: I.perspective_transform(x, s, e, fill_value=0.1),
     (X64, SP.astype("float64") * 0.6, EP.astype("float64") * 0.6)),
    ("elastic", lambda x: I.elastic_transform(x, 3.0, 1.0, seed=2), (X64,)),
    ("map_coordinates", lambda x, c: I.map_coordinates(x, c, 1, "constant", 0.3),
     (PLANE[:5, :6].astype("float64"), RNG.uniform(-1, 6, (2, 3, 4)))),
    ("map_coordinates_wrap", lambda x, c: I.map_coordinates(x, c, 1, "wrap"),
     (PLANE[:5, :6].astype("float64"), RNG.uniform(-3, 8, (2, 7)))),
    ("gaussian_blur", lambda x: I.gaussian_blur(x, (3, 5), (1.0, 2.0)), (X64,)),
    ("sobel", I.sobel_edges, (X64,)),
    ("ssim", lambda a, b: I.ssim(a, b, filter_size=3), (X64, np.clip(X64 + 0.1, 0, 1))),
    ("gray", I.rgb_to_grayscale, (X64,)),
    ("hsv", I.rgb_to_hsv, (X64,)),
    ("rgb", I.hsv_to_rgb, (X64 * 0.9 + 0.05,)),
    ("patches", lambda x: I.extract_patches(x, 2, 1, padding="same"), (X64,)),
    ("patches3d", lambda x: I.extract_patches_3d(x, 2, 1, 1, "same"), (V[:1, :3, :3, :3].astype("float64"),)),
    ("pad", lambda x: I.pad_images(x, 1, 2, 0, 1), (X64,)),
    ("crop", lambda x: I.crop_images(x, 1, 2, 0, 1), (X64,)),
    ("scale_and_translate", lambda x: I.scale_and_translate(x, (1, 4, 9, 3), [0.7, 1.3], [0.2, 0.1], (1, 2), "cubic"),
     (X64,)),
])
def test_gradients_numerical(label, fn, args):
    check_grad(fn, *args, name=label)


@pytest.mark.parametrize("name,call", [
    ("resize", lambda m, x: m.resize(x, (5, 13), "bicubic")),
    ("resize_aa", lambda m, x: m.resize(x, (4, 5), "bilinear", antialias=True)),
    ("affine", lambda m, x: m.affine_transform(x, T, fill_mode="reflect")),
    ("blur", lambda m, x: m.gaussian_blur(x, (5, 5), (1.0, 2.0), data_format="channels_last")),
    ("gray", lambda m, x: m.rgb_to_grayscale(x)),
    ("hsv", lambda m, x: m.rgb_to_hsv(x)),
    ("rgb", lambda m, x: m.hsv_to_rgb(x)),
    ("sobel", lambda m, x: m.sobel_edges(x)),
    ("ssim", lambda m, x: m.ssim(x, Y, filter_size=5)),
    ("perspective", lambda m, x: m.perspective_transform(x, SP, EP)),
])
def test_gradients_match_keras_autograd(name, call):
    gy = RNG.standard_normal(_np(call(KI, X)).shape).astype("float32")
    tx = torch.tensor(X, requires_grad=True)
    (call(KI, tx) * torch.tensor(gy)).sum().backward()
    x = Tensor(X, requires_grad=True)
    (call(I, x) * Tensor(gy)).sum().backward()
    np.testing.assert_allclose(x.grad, _np(tx.grad), rtol=1e-4, atol=1e-5)


def test_transform_and_point_gradients_match_keras_autograd():
    gy = RNG.standard_normal(X.shape).astype("float32")
    tt = torch.tensor(T, requires_grad=True)
    # (Keras's torch backend writes into the transform in place, so it must not be a leaf there)
    (KI.affine_transform(torch.tensor(X), tt * 1.0, fill_mode="wrap") * torch.tensor(gy)).sum().backward()
    t = Tensor(T, requires_grad=True)
    (I.affine_transform(X, t, fill_mode="wrap") * Tensor(gy)).sum().backward()
    # c0, c1 (entries 6, 7): Keras's torch backend multiplies them with the channel index instead of dividing
    # by c0 x + c1 y + 1, so only the affine entries are comparable; the projective ones are checked numerically
    np.testing.assert_allclose(t.grad[:, :6], _np(tt.grad)[:, :6], rtol=1e-4, atol=1e-3)
    # points off the integer grid, so that no pixel samples exactly at a kink of bilinear interpolation
    sp, ep = SP * 0.93 + 0.137, EP * 0.97 + 0.211
    ts, te = torch.tensor(sp, requires_grad=True), torch.tensor(ep, requires_grad=True)
    (KI.perspective_transform(torch.tensor(X), ts, te) * torch.tensor(gy)).sum().backward()
    s, e = Tensor(sp, requires_grad=True), Tensor(ep, requires_grad=True)
    (I.perspective_transform(X, s, e) * Tensor(gy)).sum().backward()
    np.testing.assert_allclose(s.grad, _np(ts.grad), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(e.grad, _np(te.grad), rtol=1e-3, atol=1e-3)


def test_map_coordinates_coordinate_gradient_matches_keras():
    c = torch.tensor(COORDS, requires_grad=True)
    gy = RNG.standard_normal(COORDS.shape[1:]).astype("float32")
    (KI.map_coordinates(torch.tensor(PLANE), [c[0], c[1]], 1, "mirror") * torch.tensor(gy)).sum().backward()
    ct = Tensor(COORDS, requires_grad=True)
    (I.map_coordinates(PLANE, ct, 1, "mirror") * Tensor(gy)).sum().backward()
    np.testing.assert_allclose(ct.grad, _np(c.grad), rtol=1e-4, atol=1e-5)


def test_layer_kernels_unchanged():
    """The preprocessing layers keep their kernels (the same numbers as the public resize for bilinear)."""
    from lamina.layers import preprocessing as P
    np.testing.assert_allclose(P.resize(X, (5, 7)).numpy(), I.resize(X, (5, 7)).numpy(), atol=1e-6)
    np.testing.assert_allclose(P.affine_transform(X, T.astype("float64"), "bilinear", "constant", 0.0).numpy(),
                               I.affine_transform(X, T).numpy(), atol=1e-5)


# ----------------------------------------------------------------------------- device path
DEVICE_CASES = {
    "resize": lambda x: I.resize(x, (5, 13), "bicubic") .sum() + I.resize(x, (4, 5), antialias=True).sum()
    + I.resize(x, (6, 6), "lanczos3", crop_to_aspect_ratio=True).sum(),
    "affine_persp": lambda x: I.affine_transform(x, T, fill_mode="reflect").sum()
    + I.perspective_transform(x, SP, EP).sum() + I.elastic_transform(x, 2.0, 1.0, seed=1).sum(),
    "filters": lambda x: I.gaussian_blur(x, (5, 3)).sum() + I.sobel_edges(x).sum()
    + I.ssim(x, x * 0.9, filter_size=3).sum(),
    "colour": lambda x: I.rgb_to_hsv(x).sum() + I.hsv_to_rgb(x).sum() + I.rgb_to_grayscale(x).sum(),
    "patches": lambda x: I.extract_patches(x, 2, padding="same").sum() + I.pad_images(x, 1, 1, 1, 1).sum()
    + I.crop_images(x, 1, 1, 1, 1).sum() + I.extract_patches_3d(x, 2).sum()
    + I.scale_and_translate(x, (2, 4, 5, 3), [0.5, 0.5], [0, 0], (1, 2), "cubic").sum(),
}


@pytest.mark.parametrize("case", sorted(DEVICE_CASES))
def test_device_path_matches_cpu(case, device_xp):
    """Forward and backward on the 'cuda' array module (fake CuPy in CI) equal the CPU's."""
    from lamina import backend
    outs = []
    for xp in (np, device_xp):
        x = Tensor(backend.to_device(X, xp), requires_grad=True)
        y = DEVICE_CASES[case](x)
        y.backward()
        assert backend.get_array_module(y.data) is xp and backend.get_array_module(x.grad) is xp
        outs.append((backend.to_numpy(y.data), backend.to_numpy(x.grad)))
    for cpu, dev in zip(*outs):
        np.testing.assert_allclose(dev, cpu, rtol=2e-4, atol=2e-5)
    coords = Tensor(backend.to_device(COORDS, device_xp), requires_grad=True)
    m = I.map_coordinates(backend.to_device(PLANE, device_xp), coords, 1, "mirror")
    m.sum().backward()
    np.testing.assert_allclose(backend.to_numpy(m.data), I.map_coordinates(PLANE, COORDS, 1, "mirror").numpy(),
                               rtol=1e-6)


# ----------------------------------------------------------------------------- dtypes
DTYPE_CASES = {
    "resize": lambda m, a: m.resize(a, (5, 7)),
    "resize_bicubic": lambda m, a: m.resize(a, (5, 7), "bicubic"),
    "affine": lambda m, a: m.affine_transform(a, T),
    "map": lambda m, a: m.map_coordinates(a[0, ..., 0], COORDS, 1),
    "gray": lambda m, a: m.rgb_to_grayscale(a),
    "hsv": lambda m, a: m.rgb_to_hsv(a),
    "rgb": lambda m, a: m.hsv_to_rgb(a),
    "blur": lambda m, a: m.gaussian_blur(a, data_format="channels_last"),
    "sobel": lambda m, a: m.sobel_edges(a),
    "patches": lambda m, a: m.extract_patches(a, 2),
    "patches3d": lambda m, a: m.extract_patches_3d(a[None], 2),
    "pad": lambda m, a: m.pad_images(a, 1, 1, 1, 1),
    "crop": lambda m, a: m.crop_images(a, 1, 1, 1, 1),
    "scale_and_translate": lambda m, a: m.scale_and_translate(a, (2, 5, 5, 3), np.array([0.5, 0.5], "float32"),
                                                              np.array([0, 0], "float32"), (1, 2), "linear"),
    "ssim": lambda m, a: m.ssim(a, a, filter_size=3),
    "perspective": lambda m, a: m.perspective_transform(a, SP, EP),
}


@pytest.mark.parametrize("dtype", ["uint8", "int32", "int64", "bool", "float16", "float32", "float64"])
def test_result_dtypes_match_keras(dtype):
    """Where Keras's torch backend accepts the dtype, lamina returns the same dtype (and the same values for
    the exact ops); where Keras raises, lamina either raises too or computes in float32 and rounds back."""
    a = (X * 10).astype(dtype)
    checked = 0
    for name, fn in DTYPE_CASES.items():
        try:
            want = fn(KI, a)
        except Exception:
            continue
        got = fn(I, a)
        assert got.dtype == np.dtype(keras.backend.standardize_dtype(want.dtype)), name
        if name in ("pad", "crop", "patches", "patches3d", "gray") or (dtype == "float32" and name != "hsv"):
            np.testing.assert_allclose(got.numpy().astype("float64"), _np(want).astype("float64"),
                                       rtol=2e-3 if dtype == "float16" else 1e-5, atol=1e-5)
        checked += 1
    assert checked >= 8


def test_integer_blur_rounds_in_float():
    a = (X * 200).astype("uint8")
    got = I.gaussian_blur(a).numpy()
    want = np.round(I.gaussian_blur(a.astype("float32")).numpy())
    np.testing.assert_array_equal(got, want.astype("uint8"))


def test_pad_and_crop_refuse_negative_amounts_by_name():
    x = np.zeros((1, 4, 4, 1), np.float32)
    with pytest.raises(ValueError, match="top_padding must be >= 0"):
        I.pad_images(x, top_padding=-1, left_padding=0, target_height=6, target_width=6)
    with pytest.raises(ValueError, match="bottom_padding must be >= 0"):      # derived: 3 - 1 - 4 < 0
        I.pad_images(x, top_padding=1, left_padding=0, target_height=3, target_width=6)
    with pytest.raises(ValueError, match="target_height must be >= 0"):       # derived: 4 - 3 - 2 < 0
        I.crop_images(x, top_cropping=3, bottom_cropping=2, left_cropping=0, target_width=2)
    with pytest.raises(ValueError, match="left_cropping must be >= 0"):
        I.crop_images(x, top_cropping=0, target_height=2, left_cropping=-2, target_width=2)
