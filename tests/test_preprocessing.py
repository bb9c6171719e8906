"""Preprocessing layers: Normalization.adapt, Resizing vs PyTorch, crops, augmentation identity at
inference, exact geometric cases, seeded reproducibility, gradient checks and the layer contract."""
import numpy as np
import pytest

import lamina
from lamina import layers
from lamina.layers import preprocessing as P
from lamina.testing import check_grad, check_layer

R = np.random.default_rng(4)


def images(n=2, h=6, w=5, c=3):
    return R.random((n, h, w, c)).astype(np.float32)


# ---------------------------------------------------------------- Normalization
def test_normalization_adapt_matches_numpy():
    x = (R.standard_normal((50, 4)) * [1, 2, 3, 4] + [5, -1, 0, 2]).astype(np.float32)
    norm = layers.Normalization()
    norm.adapt(x)
    w = {v.name: v.numpy() for v in norm.weights}
    np.testing.assert_allclose(w["mean"], x.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(w["variance"], x.var(0), rtol=1e-5)
    y = norm(x).numpy()
    np.testing.assert_allclose(y, (x - x.mean(0)) / x.std(0), rtol=1e-4, atol=1e-5)
    assert y.dtype == np.float32 and not any(v.trainable for v in norm.weights)


def test_normalization_adapt_batches_equals_whole():
    x = R.random((40, 3, 3, 2)).astype(np.float32)
    a, b = layers.Normalization(), layers.Normalization()
    a.adapt(x)
    b.adapt(iter([x[:7], x[7:25], (x[25:], None)]))
    for u, v in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-7)
    assert a.get_weights()[0].shape == (2,)


def test_normalization_axes_and_invert():
    x = R.random((10, 4, 3)).astype(np.float32)
    norm = layers.Normalization(axis=(1, 2))
    norm.adapt(x)
    np.testing.assert_allclose(norm.get_weights()[0], x.mean(0), rtol=1e-5)
    inv = layers.Normalization(axis=(1, 2), mean=x.mean(0), variance=x.var(0), invert=True)
    np.testing.assert_allclose(inv(norm(x)).numpy(), x, rtol=1e-4, atol=1e-5)
    assert inv.weights == []
    scalar = layers.Normalization(axis=None)
    scalar.adapt(x)
    np.testing.assert_allclose(scalar.get_weights()[0], x.mean(), rtol=1e-5)


def test_normalization_contract():
    check_layer(layers.Normalization, {}, (3, 4), (3, 4), expected_num_trainable_weights=0,
                expected_num_non_trainable_weights=3, expected_weight_names=["mean", "variance", "count"])
    check_layer(layers.Normalization, {"mean": [1.0, 2.0], "variance": [4.0, 9.0]}, (3, 2), (3, 2))
    with pytest.raises(ValueError, match="both `mean` and `variance`"):
        layers.Normalization(mean=1.0)


def test_normalization_gradient():
    norm = layers.Normalization(mean=[0.5, -1.0], variance=[4.0, 0.25])
    check_grad(norm, R.standard_normal((3, 2)))


# ---------------------------------------------------------------- Rescaling, Resizing, CenterCrop
def test_rescaling():
    x = R.integers(0, 256, (2, 3, 3, 1)).astype(np.uint8)
    y = layers.Rescaling(1 / 127.5, offset=-1)(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.numpy(), x / 127.5 - 1, rtol=1e-6, atol=1e-6)
    check_layer(layers.Rescaling, {"scale": 0.5, "offset": 1.0}, (2, 3), (2, 3))


@pytest.mark.parametrize("size", [(3, 4), (9, 7), (6, 5), (12, 2)])
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_resizing_matches_torch(size, interpolation):
    torch = pytest.importorskip("torch")
    x = images()
    layer = layers.Resizing(*size, interpolation=interpolation)
    xt = lamina.Tensor(x, requires_grad=True)
    y = layer(xt)
    gy = R.standard_normal(y.shape).astype(np.float32)
    (y * lamina.Tensor(gy)).sum().backward()
    tx = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    mode = "bilinear" if interpolation == "bilinear" else "nearest-exact"
    kw = {"align_corners": False} if mode == "bilinear" else {}
    ty = torch.nn.functional.interpolate(tx, size=size, mode=mode, **kw)
    ty.backward(torch.tensor(gy.transpose(0, 3, 1, 2)))
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(xt.grad, tx.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-5)


def test_resize_grad_and_contract():
    check_grad(lambda x: P.resize(x, (4, 3)), R.random((1, 5, 4, 2)))
    check_layer(layers.Resizing, {"height": 4, "width": 3}, (2, 6, 5, 3), (2, 4, 3, 3))


def test_resizing_crop_to_aspect_ratio_and_single_image():
    x = images(1, 6, 10, 2)
    y = layers.Resizing(3, 3, crop_to_aspect_ratio=True)(x[0])      # crops the central 6x6 first
    want = layers.Resizing(3, 3)(x[:, :, 2:8, :])[0]
    np.testing.assert_allclose(y.numpy(), want.numpy(), rtol=1e-6)
    assert y.shape == (3, 3, 2)


def test_center_crop():
    x = images(2, 7, 6, 1)
    np.testing.assert_array_equal(layers.CenterCrop(3, 4)(x).numpy(), x[:, 2:5, 1:5, :])
    assert layers.CenterCrop(10, 8)(x).shape == (2, 10, 8, 1)   # smaller input: cropped to ratio, resized up
    check_layer(layers.CenterCrop, {"height": 2, "width": 2}, (2, 4, 4, 3), (2, 2, 2, 3))


# ---------------------------------------------------------------- augmentation
AUG = [(layers.RandomFlip, {}), (layers.RandomRotation, {"factor": 0.2}),
       (layers.RandomTranslation, {"height_factor": 0.3, "width_factor": 0.3}),
       (layers.RandomZoom, {"height_factor": 0.3}), (layers.RandomContrast, {"factor": 0.5, "value_range": (0, 1)})]


@pytest.mark.parametrize("cls,kw", AUG)
def test_augmentation_identity_at_inference_and_seeded(cls, kw):
    x = images(4)
    layer = cls(**kw)
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x)
    # called directly, the layer augments: call()'s default training=True applies, as in Keras 3
    assert not np.allclose(layer(x).numpy(), x)
    model = lamina.Sequential([lamina.Input(x.shape[1:]), cls(**kw)])
    np.testing.assert_array_equal(model.predict(x, verbose=0), x)           # inference inside predict
    lamina.backend.set_random_seed(7)
    a = layer(x, training=True).numpy()
    lamina.backend.set_random_seed(7)
    b = layer(x, training=True).numpy()
    np.testing.assert_array_equal(a, b)
    assert a.shape == x.shape and a.dtype == np.float32 and not np.allclose(a, x)
    c1 = cls(**kw, seed=3)(x, training=True).numpy()
    c2 = cls(**kw, seed=3)(x, training=True).numpy()
    np.testing.assert_array_equal(c1, c2)
    check_layer(cls, kw, (2, 5, 5, 3), (2, 5, 5, 3), expected_num_trainable_weights=0)


def test_random_flip_results_are_flips():
    x = images(16, 4, 4, 1)
    y = layers.RandomFlip("horizontal")(x, training=True).numpy()
    flipped = np.all(y == x[:, :, ::-1], axis=(1, 2, 3))
    same = np.all(y == x, axis=(1, 2, 3))
    assert np.all(flipped | same) and flipped.any() and same.any()
    y = layers.RandomFlip("vertical")(x, training=True).numpy()
    assert np.all(np.all(y == x[:, ::-1], axis=(1, 2, 3)) | np.all(y == x, axis=(1, 2, 3)))


def test_rotation_quarter_turn_is_rot90():
    x = images(3, 5, 5, 2)
    y = layers.RandomRotation((0.25, 0.25), fill_mode="constant")(x, training=True).numpy()
    np.testing.assert_allclose(y, np.rot90(x, k=1, axes=(1, 2)), atol=1e-5)
    y0 = layers.RandomRotation((0.0, 0.0))(x, training=True).numpy()
    np.testing.assert_allclose(y0, x, atol=1e-6)


@pytest.mark.parametrize("fill_mode,rows", [("constant", None), ("reflect", [1, 0]), ("wrap", [2, 3]),
                                            ("nearest", [0, 0])])
def test_translation_integer_shift_fill_modes(fill_mode, rows):
    x = images(2, 4, 3, 1)
    y = layers.RandomTranslation((0.5, 0.5), (0.0, 0.0), fill_mode=fill_mode, fill_value=0.0)(x, training=True).numpy()
    np.testing.assert_allclose(y[:, 2:], x[:, :2], atol=1e-6)      # shifted down by 2 rows
    want_top = np.zeros_like(x[:, :2]) if rows is None else x[:, rows]
    np.testing.assert_allclose(y[:, :2], want_top, atol=1e-6)


def test_zoom_exact_cases():
    x = images(2, 5, 5, 1)
    np.testing.assert_allclose(layers.RandomZoom((0.0, 0.0))(x, training=True).numpy(), x, atol=1e-6)
    # zoom factor 2 (height_factor 1.0) about the centre of a 5x5 image: output pixel (2, 2) stays
    y = layers.RandomZoom((1.0, 1.0), fill_mode="constant")(x, training=True).numpy()
    np.testing.assert_allclose(y[:, 2, 2], x[:, 2, 2], atol=1e-6)
    np.testing.assert_allclose(y[:, 1, 1], x[:, 0, 0], atol=1e-6)   # output 1 reads input 2*1 - 2 = 0


def test_contrast_formula():
    x = images(3, 4, 4, 2)
    layer = layers.RandomContrast((0.5, 0.5), value_range=(0, 1))   # factor range [0.5, 1.5]
    lamina.backend.set_random_seed(1)
    y = layer(x, training=True).numpy()
    lamina.backend.set_random_seed(1)
    c = lamina.backend.rng().uniform(0.5, 1.5, 3).reshape(3, 1, 1, 1)
    m = x.mean(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(y, np.clip((x - m) * c + m, 0, 1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("fill_mode", ["reflect", "constant", "wrap"])
def test_affine_sample_gradient(interpolation, fill_mode):
    t = np.array([[0.9, -0.3, 0.7, 0.25, 1.1, -0.4, 0.0, 0.0], [1.2, 0.1, -0.5, 0.0, 0.8, 0.3, 0.0, 0.0]])
    check_grad(lambda x: P.affine_transform(x, t, interpolation, fill_mode, 0.5), R.random((2, 4, 5, 2)))


def test_bad_arguments():
    with pytest.raises(ValueError, match="fill_mode"):
        layers.RandomRotation(0.1, fill_mode="mirrorr")
    with pytest.raises(ValueError, match="mode"):
        layers.RandomFlip("diagonal")
    with pytest.raises(ValueError, match="interpolation"):
        layers.Resizing(2, 2, interpolation="lanczos7")


def test_normalization_mean_and_variance_attributes_as_keras():
    # Keras's tutorials print normalizer.mean after adapt: the statistics broadcast to the input's rank
    data = np.random.default_rng(0).normal(2.0, 3.0, (50, 3)).astype(np.float32)
    norm = lamina.layers.Normalization(axis=-1)
    assert norm.mean is None and norm.variance is None          # not built yet
    norm.adapt(data)
    assert tuple(norm.mean.shape) == tuple(norm.variance.shape) == (1, 3)
    np.testing.assert_allclose(np.asarray(norm.mean), data.mean(0, keepdims=True), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(norm.variance), data.var(0, keepdims=True), rtol=1e-4)
    fixed = lamina.layers.Normalization(mean=[1.0, 2.0, 3.0], variance=[4.0, 1.0, 0.25])
    fixed(data)
    np.testing.assert_allclose(np.asarray(fixed.mean), [[1.0, 2.0, 3.0]])
