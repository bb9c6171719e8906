"""Keras 3.15 colour / blur / erasing augmentations, histogram equalisations and MaxNumBoundingBoxes
(issue 14). The main check replays one draw in both libraries: lamina's get_random_transformation gives the
per-image parameters, which go unchanged to Keras's own transform_images (KERAS_BACKEND=torch) and to
lamina's. Also: the draws' statistics, seeds, inference, errors, configs, gradients by central differences,
fit() and .keras files read by both libraries."""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import lamina  # noqa: E402
from lamina import layers  # noqa: E402
from lamina.testing import check_grad  # noqa: E402

from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")
torch = pytest.importorskip("torch")
R = np.random.default_rng(1415)


def _np(t):
    return keras.ops.convert_to_numpy(t)


def _torch(t):
    """A lamina transformation (nested dict of NumPy arrays) as Keras's torch backend takes it."""
    if t is None:
        return None
    if isinstance(t, dict):
        return {k: _torch(v) for k, v in t.items()}
    return torch.tensor(np.asarray(t))


def _images(shape=(3, 7, 9, 3), value_range=(0, 255)):
    x = R.uniform(0, 255, shape).astype(np.float32)
    return x if tuple(value_range) == (0, 255) else (x / 255 * (value_range[1] - value_range[0])
                                                     + value_range[0]).astype(np.float32)


def _close(got, want, value_range=(0, 255)):
    span = float(value_range[1] - value_range[0])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * span)


REPLAY = [
    ("RandomHue", dict(factor=0.8), {}),
    ("RandomHue", dict(factor=(0.3, 0.9), value_range=(0, 1)), {}),
    ("RandomHue", dict(factor=(0.2, 1.0), value_range=(-1, 1), data_format="channels_first"), {}),
    ("RandomSaturation", dict(factor=0.8), {}),
    ("RandomSaturation", dict(factor=(0.2, 0.7), value_range=(0, 1)), {}),
    ("RandomSaturation", dict(factor=(0.5, 0.95), data_format="channels_first"), {}),
    ("RandomSharpness", dict(factor=0.8), {}),
    ("RandomSharpness", dict(factor=(0.2, 1.0), value_range=(0, 1)), {}),
    ("RandomSharpness", dict(factor=(0.0, 0.4), data_format="channels_first"), {}),
    ("RandomGaussianBlur", dict(factor=0.8, kernel_size=5, sigma=(0.3, 0.9)), {}),
    ("RandomGaussianBlur", dict(kernel_size=(3, 3), value_range=(0, 1)), {}),
    ("RandomGaussianBlur", dict(factor=(0.5, 1.0), kernel_size=7, data_format="channels_first"), {}),
    ("RandomErasing", dict(factor=0.8), {}),
    ("RandomErasing", dict(factor=1.0, scale=(0.1, 0.6), fill_value=[10, 20, 300]), {}),
    ("RandomErasing", dict(factor=(0.5, 1.0), fill_value=40.0, value_range=(0, 1)), {}),
    ("RandomErasing", dict(factor=1.0, data_format="channels_first"), {}),
    ("Equalization", dict(), {}),
    ("Equalization", dict(bins=17, value_range=(0, 1)), {}),
    ("Equalization", dict(bins=64, value_range=(1, -1)), {}),
    ("Equalization", dict(data_format="channels_first"), {}),
    ("Equalization", dict(), dict(integer_levels=True)),
    ("ContrastLimitedAdaptiveHistogramEqualization", dict(tile_grid_size=(2, 2)), {}),
    ("ContrastLimitedAdaptiveHistogramEqualization", dict(tile_grid_size=(3, 4), clip_limit=2.0,
                                                          value_range=(0, 1)), {}),
    ("ContrastLimitedAdaptiveHistogramEqualization", dict(), dict(shape=(2, 40, 50, 3))),
    ("ContrastLimitedAdaptiveHistogramEqualization", dict(clip_limit=0), dict(shape=(2, 40, 50, 3))),
    ("ContrastLimitedAdaptiveHistogramEqualization", dict(tile_grid_size=(3, 3), clip_limit=7.5,
                                                          data_format="channels_first"), dict(shape=(2, 3, 20, 17))),
]


@pytest.mark.parametrize("name,kwargs,opts", REPLAY)
def test_one_draw_replayed_in_keras(name, kwargs, opts):
    value_range = kwargs.get("value_range", (0, 255))
    shape = opts.get("shape", (3, 3, 7, 9) if kwargs.get("data_format") == "channels_first" else (3, 7, 9, 3))
    x = _images(shape, sorted(value_range))
    if opts.get("integer_levels"):
        x = np.floor(x)       # the boundaries k / 255 * 255 of Keras's float32 lookup index
    mine = getattr(layers, name)(**kwargs)
    theirs = getattr(keras.layers, name)(**kwargs)
    t = mine.get_random_transformation(x, training=True)
    got = mine.transform_images(x, t, training=True).numpy()
    want = _np(theirs.transform_images(torch.tensor(x), _torch(t), training=True))
    assert got.shape == want.shape == x.shape and got.dtype == want.dtype
    _close(got, want, sorted(value_range))
    assert np.abs(got - x).max() > 1e-3 * (max(value_range) - min(value_range))   # the draw did something


def test_one_image_and_the_call_path_match_keras():
    """Rank-3 inputs, and layer(x) for draws that leave nothing to chance (deterministic factors)."""
    x = _images((2, 6, 5, 3))
    cases = [("RandomSaturation", dict(factor=(0.3, 0.3))), ("RandomSharpness", dict(factor=(0.9, 0.9))),
             ("RandomGaussianBlur", dict(factor=(1.0, 1.0), sigma=(0.6, 0.6), kernel_size=3)),
             ("Equalization", dict()), ("ContrastLimitedAdaptiveHistogramEqualization", dict(tile_grid_size=(2, 2))),
             # contrast (-0.2, 0.2): Keras draws c ~ U(1 - lower, 1 + upper) = U(1.2, 1.2)
             ("RandomColorJitter", dict(brightness_factor=(0.1, 0.1), contrast_factor=(-0.2, 0.2),
                                        saturation_factor=(0.7, 0.7)))]
    for name, kwargs in cases:
        for inputs in (x, x[0]):
            got = getattr(layers, name)(**kwargs)(inputs, training=True).numpy()
            want = _np(getattr(keras.layers, name)(**kwargs)(inputs, training=True))
            assert got.shape == want.shape, name
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4, err_msg=name)


@pytest.mark.parametrize("kwargs", [
    dict(brightness_factor=0.3, contrast_factor=0.4, saturation_factor=(0.2, 0.9), hue_factor=0.5),
    dict(value_range=(0, 1), contrast_factor=(0.1, 0.6), hue_factor=(0.2, 0.3)),
    dict(brightness_factor=(-0.2, 0.5), saturation_factor=0.8, data_format="channels_first"),
])
def test_color_jitter_steps_replayed_in_keras(kwargs):
    """lamina's jitter draw, step by step through Keras's own sub-layers of the same RandomColorJitter."""
    first = kwargs.get("data_format") == "channels_first"
    x = _images((3, 3, 6, 7) if first else (3, 6, 7, 3), kwargs.get("value_range", (0, 255)))
    mine, theirs = layers.RandomColorJitter(**kwargs), keras.layers.RandomColorJitter(**kwargs)
    theirs.build(x.shape)
    t = mine.get_random_transformation(x)
    assert set(t) == {k for k in ("brightness", "contrast", "saturation", "hue") if f"{k}_factor" in kwargs}
    want = torch.tensor(x)
    for step in ("brightness", "contrast", "saturation", "hue"):
        if step in t:
            sub = getattr(theirs, f"random_{step}")
            if first:   # Keras's sub-layers are built channels_last; the jitter's steps are layout-free per pixel
                want = want.permute(0, 2, 3, 1)
            want = sub.transform_images(want, _torch(t[step]))
            if first:
                want = want.permute(0, 3, 1, 2)
    got = mine.transform_images(x, t).numpy()
    _close(got, _np(want), kwargs.get("value_range", (0, 255)))
    assert not np.allclose(got, x)
    # transform_images(images, None) draws as Keras's jitter does
    assert mine.transform_images(x, None).shape == x.shape


def test_inference_passes_images_through_as_keras():
    x = _images((2, 6, 5, 3))
    random_ones = [("RandomHue", dict(factor=0.5)), ("RandomSaturation", dict(factor=0.5)),
                   ("RandomSharpness", dict(factor=0.5)), ("RandomColorJitter", dict(hue_factor=0.5)),
                   ("RandomGaussianBlur", dict()), ("RandomErasing", dict()), ("Equalization", dict())]
    for name, kwargs in random_ones:
        out = getattr(layers, name)(**kwargs)(x, training=False).numpy()
        np.testing.assert_array_equal(out, x, err_msg=name)
        np.testing.assert_array_equal(_np(getattr(keras.layers, name)(**kwargs)(x, training=False)), x)
    # CLAHE runs at inference too, as Keras; the output keeps an integer input's dtype
    xi = np.floor(x).astype(np.uint8)
    for inputs in (x, xi):
        got = layers.ContrastLimitedAdaptiveHistogramEqualization(tile_grid_size=(2, 3))(inputs, training=False)
        want = _np(keras.layers.ContrastLimitedAdaptiveHistogramEqualization(tile_grid_size=(2, 3))(
            inputs, training=False))
        assert got.dtype == want.dtype == inputs.dtype
        _close(got.numpy().astype(np.float32), want.astype(np.float32))
    # layers Keras casts to float even at inference
    for name in ("RandomSharpness", "RandomGaussianBlur", "RandomErasing"):
        kwargs = dict(factor=0.5) if name == "RandomSharpness" else {}
        got = getattr(layers, name)(**kwargs)(xi, training=False)
        want = _np(getattr(keras.layers, name)(**kwargs)(xi, training=False))
        assert got.dtype == want.dtype == np.float32, name
        np.testing.assert_array_equal(got.numpy(), want)


def test_draw_statistics_respect_the_factor_ranges():
    n = 4000
    x = np.zeros((n, 4, 4, 3), np.float32)
    hue = layers.RandomHue((0.2, 0.6), seed=1).get_random_transformation(x)["factor"]
    assert hue.shape == (n,) and np.all((np.abs(hue) >= 0.1 - 1e-7) & (np.abs(hue) <= 0.3 + 1e-7))
    assert 0.45 < np.mean(hue > 0) < 0.55
    assert abs(np.abs(hue).mean() - 0.2) < 0.01            # |d| ~ U(0.1, 0.3)
    sat = layers.RandomSaturation((0.2, 0.8), seed=1).get_random_transformation(x)["factor"].astype(np.float64)
    f = sat / (1 + sat)                                      # inverts f / (1 - f)
    assert f.min() >= 0.2 - 1e-5 and f.max() <= 0.8 + 1e-5 and abs(f.mean() - 0.5) < 0.01
    sat = layers.RandomSaturation(0.5, seed=2).get_random_transformation(x)["factor"]   # Keras: U(-0.5, 0.5)
    assert 0.45 < np.mean(sat < 0) < 0.55
    sharp = layers.RandomSharpness(0.3, seed=1).get_random_transformation(x)["factor"]
    assert sharp.min() >= 0 and sharp.max() <= 0.3 and abs(sharp.mean() - 0.15) < 0.01
    blur = layers.RandomGaussianBlur(factor=(0.2, 0.6), sigma=(0.3, 0.5), seed=1).get_random_transformation(x)
    assert abs(blur["should_apply_blur"].mean() - 0.4) < 0.03   # P(u < p), p ~ U(0.2, 0.6)
    assert blur["blur_factor"].shape == (2,) and np.all((blur["blur_factor"] >= 0.3) & (blur["blur_factor"] <= 0.5
                                                                                          + 1e-5))
    jit = layers.RandomColorJitter(brightness_factor=0.2, contrast_factor=0.3, seed=1).get_random_transformation(x)
    delta = jit["brightness"]["rgb_delta"].ravel() / 255
    assert delta.min() >= -0.2 and delta.max() <= 0.2 and 0.45 < np.mean(delta > 0) < 0.55
    c = jit["contrast"]["contrast_factor"].ravel()          # Keras 3.15: a number f means U(1, 1 + f)
    assert c.min() >= 1.0 and c.max() <= 1.3 and abs(c.mean() - 1.15) < 0.01


def test_erasing_draws_one_rectangle_of_the_scale():
    n, h, w = 600, 20, 30
    layer = layers.RandomErasing(factor=(0.2, 0.6), scale=(0.05, 0.3), seed=4)
    t = layer.get_random_transformation(np.zeros((n, h, w, 3), np.float32))
    assert abs(t["apply_erasing"].mean() - 0.4) < 0.06
    masks = t["batch_masks"]
    assert masks.shape == (n, h, w, 3) and np.all(masks == masks[..., :1])
    rows, cols = masks[..., 0].any(axis=2), masks[..., 0].any(axis=1)
    height, width = rows.sum(1), cols.sum(1)
    assert np.array_equal(masks[..., 0].sum((1, 2)), height * width)            # a filled rectangle
    # sides sqrt(a) * size rounded to the pixel grid, a ~ U(scale)
    assert np.all(height <= np.ceil(np.sqrt(0.3) * h) + 1) and np.all(height >= np.floor(np.sqrt(0.05) * h) - 1)
    assert np.all(width <= np.ceil(np.sqrt(0.3) * w) + 1) and np.all(width >= np.floor(np.sqrt(0.05) * w) - 1)
    fill = t["fill_value"]      # noise * value_range[1], clipped to the range
    assert fill.min() == 0 and fill.max() == 255 and 0.45 < np.mean(fill == 0) < 0.55
    x = _images((n, h, w, 3))
    y = layer.transform_images(x, t).numpy()
    erased = t["apply_erasing"][:, None, None, None] & masks
    np.testing.assert_array_equal(y, np.where(erased, fill, x))


def test_seeded_layers_are_reproducible():
    x = _images((4, 6, 6, 3))
    for cls, kwargs in ((layers.RandomHue, dict(factor=0.5)), (layers.RandomSaturation, dict(factor=0.9)),
                        (layers.RandomSharpness, dict(factor=0.9)), (layers.RandomGaussianBlur, dict(factor=0.7)),
                        (layers.RandomErasing, dict()),
                        (layers.RandomColorJitter, dict(brightness_factor=0.2, hue_factor=0.3))):
        a = cls(seed=11, **kwargs)(x, training=True).numpy()
        b = cls(seed=11, **kwargs)(x, training=True).numpy()
        c = cls(seed=12, **kwargs)(x, training=True).numpy()
        np.testing.assert_array_equal(a, b, err_msg=cls.__name__)
        assert not np.array_equal(a, c), cls.__name__
        layer = cls(**kwargs)
        t1 = layer.get_random_transformation(x, seed=3)
        t2 = layer.get_random_transformation(x, seed=3)
        np.testing.assert_array_equal(layer.transform_images(x, t1).numpy(), layer.transform_images(x, t2).numpy())
    lamina.utils.set_random_seed(5)
    a = layers.RandomHue(0.5)(x, training=True).numpy()
    lamina.utils.set_random_seed(5)
    np.testing.assert_array_equal(layers.RandomHue(0.5)(x, training=True).numpy(), a)


BAD = [
    ("RandomHue", dict(factor=1.5)), ("RandomHue", dict(factor=-0.1)), ("RandomHue", dict(factor=(1.2, 1.5))),
    ("RandomHue", dict(factor=(0.1, 0.2, 0.3))), ("RandomHue", dict(factor="a")),
    ("RandomSaturation", dict(factor=1.5)), ("RandomSaturation", dict(factor=0.5, value_range=(0, 1, 2))),
    ("RandomSaturation", dict(factor=0.5, value_range=1)),
    ("RandomSharpness", dict(factor=-0.5)), ("RandomSharpness", dict(factor=0.5, value_range=[1])),
    ("RandomColorJitter", dict(brightness_factor=1.5)), ("RandomColorJitter", dict(contrast_factor=-0.5)),
    ("RandomColorJitter", dict(saturation_factor=(2, 3))), ("RandomColorJitter", dict(hue_factor=2.0)),
    ("RandomGaussianBlur", dict(kernel_size=4)), ("RandomGaussianBlur", dict(kernel_size=(3, 4))),
    ("RandomGaussianBlur", dict(kernel_size=(3, 3, 3))), ("RandomGaussianBlur", dict(sigma=2.0)),
    ("RandomGaussianBlur", dict(factor=1.5)),
    ("RandomErasing", dict(factor=2.0)), ("RandomErasing", dict(scale=(1.5, 2.0))),
    ("RandomHue", dict(factor=0.5, data_format="channels_middle")),
]


@pytest.mark.parametrize("name,kwargs", BAD)
def test_bad_arguments_raise_value_error_like_keras(name, kwargs):
    with pytest.raises(ValueError):
        getattr(keras.layers, name)(**kwargs)
    with pytest.raises(ValueError):
        getattr(layers, name)(**kwargs)


def test_equalization_bad_value_range():
    # Keras 3.15 refuses these too, but with an AttributeError (its message constant is missing on the class)
    for value_range in ((0, 1, 2), 5):
        with pytest.raises((ValueError, AttributeError)):
            keras.layers.Equalization(value_range=value_range)
        with pytest.raises(ValueError, match="value_range"):
            layers.Equalization(value_range=value_range)


def test_erasing_bad_fill_value_raises_when_drawing_like_keras():
    x = _images((2, 5, 5, 3))
    for fill in ([1, 2], "red"):
        theirs, mine = keras.layers.RandomErasing(fill_value=fill), layers.RandomErasing(fill_value=fill)
        with pytest.raises(ValueError):
            theirs(x, training=True)
        with pytest.raises(ValueError):
            mine(x, training=True)


CONFIGS = [
    ("RandomHue", dict(factor=0.5)), ("RandomHue", dict(factor=(0.3, 0.1), seed=4, value_range=(0, 1))),
    ("RandomSaturation", dict(factor=0.5)), ("RandomSaturation", dict(factor=(0.2, 0.7), value_range=(255, 0))),
    ("RandomSharpness", dict(factor=0.3)), ("RandomColorJitter", dict()),
    ("RandomColorJitter", dict(brightness_factor=0.2, contrast_factor=0.3, saturation_factor=(0.4, 0.6),
                               hue_factor=0.1, seed=3)),
    ("RandomGaussianBlur", dict()), ("RandomGaussianBlur", dict(factor=(0.5, 0.2), kernel_size=(3, 5), sigma=0.4)),
    ("RandomErasing", dict()), ("RandomErasing", dict(scale=0.1, fill_value=[1, 2, 3])),
    ("Equalization", dict()), ("Equalization", dict(bins=32, value_range=(1, 0))),
    ("ContrastLimitedAdaptiveHistogramEqualization", dict()),
    ("ContrastLimitedAdaptiveHistogramEqualization", dict(clip_limit=2.0, tile_grid_size=(4, 2))),
    ("MaxNumBoundingBoxes", dict(max_number=3)),
]


def _plain(v):
    return [_plain(a) for a in v] if isinstance(v, (list, tuple)) else v


@pytest.mark.parametrize("name,kwargs", CONFIGS)
def test_get_config_matches_keras_and_round_trips(name, kwargs):
    mine = getattr(layers, name)(**kwargs)
    theirs = getattr(keras.layers, name)(**kwargs)
    cfg, kcfg = mine.get_config(), theirs.get_config()
    for key in set(kcfg) - {"name", "dtype", "trainable"}:
        assert _plain(cfg[key]) == _plain(kcfg[key]), (key, cfg[key], kcfg[key])
    again = getattr(layers, name).from_config(cfg)
    assert {k: _plain(v) for k, v in again.get_config().items() if k != "name"} == \
        {k: _plain(v) for k, v in cfg.items() if k != "name"}
    assert type(getattr(keras.layers, name).from_config(
        {k: v for k, v in cfg.items() if k not in ("dtype",)})).__name__ == name


# gradients: the same draw on every evaluation (transform_images with a fixed transformation)
GRAD = [
    ("RandomHue", dict(factor=(0.2, 0.9))), ("RandomHue", dict(factor=(0.2, 0.9), value_range=(0, 1))),
    ("RandomSaturation", dict(factor=(0.3, 0.7))), ("RandomSharpness", dict(factor=(0.0, 1.0))),
    ("RandomGaussianBlur", dict(factor=(0.5, 0.5), sigma=(0.4, 0.9), kernel_size=3)),
    ("RandomErasing", dict(factor=(0.7, 0.7), scale=(0.2, 0.4))),
    ("RandomColorJitter", dict(brightness_factor=0.05, contrast_factor=0.2, saturation_factor=(0.4, 0.6),
                               hue_factor=0.4)),
]


@pytest.mark.parametrize("name,kwargs", GRAD)
def test_gradients_by_central_differences(name, kwargs):
    vr = kwargs.get("value_range", (0, 255))
    x = (R.uniform(0.15, 0.85, (2, 4, 5, 3)) * vr[1]).astype(np.float64)   # away from the clipping edges
    layer = getattr(layers, name)(seed=2, **kwargs)
    t = layer.get_random_transformation(x)
    if name == "RandomGaussianBlur":
        t["should_apply_blur"] = np.array([True, False])
    if name == "RandomErasing":
        t["apply_erasing"] = np.array([True, False])
    check_grad(lambda im: layer.transform_images(im, t), x, name=name)


def test_equalization_and_clahe_have_no_gradient_and_equalization_keeps_flat_channels():
    x = _images((2, 5, 6, 3))
    x[..., 1] = 80.0                        # one level: Keras leaves the channel as it is
    got = layers.Equalization()(x, training=True).numpy()
    np.testing.assert_array_equal(got[..., 1], x[..., 1])
    _close(got, _np(keras.layers.Equalization()(x, training=True)))
    # one histogram per channel over the whole batch, as Keras: equalising the batch is not equalising each image
    alone = layers.Equalization()(x[:1], training=True).numpy()
    assert not np.allclose(alone, got[:1])
    t = lamina.Tensor(x.astype(np.float64), requires_grad=True)
    for layer in (layers.Equalization(), layers.ContrastLimitedAdaptiveHistogramEqualization()):
        with lamina.layers.layer.no_autocast():
            y = layer.transform_images(t, None)
        assert not y.requires_grad or np.all(lamina.gradient_tape.grad(y[:, :, :, ::2].sum(), [t])[0] == 0)


def _boxes(batched=True):
    boxes = R.uniform(0, 50, (2, 3, 4)).astype(np.float32)
    labels = np.array([[1, 2, 3], [4, 5, 6]])
    return (boxes, labels) if batched else (boxes[0], labels[0])


@pytest.mark.parametrize("max_number,batched,training", [(5, True, True), (2, True, False), (3, True, True),
                                                         (2, False, True), (4, False, False)])
def test_max_num_bounding_boxes_matches_keras(max_number, batched, training):
    boxes, labels = _boxes(batched)
    images = _images((2, 4, 4, 3) if batched else (4, 4, 3)).astype(np.uint8)
    kwargs = dict(max_number=max_number, fill_value=-7, bounding_box_format="xyxy")
    data = lambda: {"images": images, "bounding_boxes": {"boxes": boxes, "labels": labels}, "labels": labels}
    got = layers.MaxNumBoundingBoxes(**kwargs)(data(), training=training)
    want = keras.layers.MaxNumBoundingBoxes(**kwargs)(data(), training=training)
    for key in ("boxes", "labels"):
        g, w = got["bounding_boxes"][key].numpy(), _np(want["bounding_boxes"][key])
        assert g.shape == w.shape and g.dtype == w.dtype, key
        np.testing.assert_array_equal(g, w)
    np.testing.assert_array_equal(got["images"].numpy(), images)
    assert got["images"].dtype == np.uint8
    np.testing.assert_array_equal(np.asarray(got["labels"].numpy()), labels)
    # plain images pass unchanged
    np.testing.assert_array_equal(layers.MaxNumBoundingBoxes(2)(images).numpy(), images)
    spec = layers.MaxNumBoundingBoxes(max_number).compute_output_shape(
        {"images": images.shape, "bounding_boxes": {"boxes": boxes.shape, "labels": labels.shape}})
    assert tuple(spec["bounding_boxes"]["boxes"])[-2] == tuple(spec["bounding_boxes"]["labels"])[-1] == max_number


def test_bounding_boxes_need_a_format_and_a_valid_dict_like_keras():
    boxes, labels = _boxes()
    images = _images((2, 4, 4, 3))
    for lib in (keras, lamina):
        with pytest.raises(ValueError, match="bounding_box_format|bounding box format"):
            lib.layers.MaxNumBoundingBoxes(2)({"images": images, "bounding_boxes": {"boxes": boxes,
                                                                                      "labels": labels}})
        with pytest.raises(ValueError):
            lib.layers.MaxNumBoundingBoxes(2, bounding_box_format="xyxy")(
                {"images": images, "bounding_boxes": {"boxes": boxes}})
        with pytest.raises(ValueError):
            lib.layers.MaxNumBoundingBoxes(2, bounding_box_format="xyxy")(
                {"images": images, "bounding_boxes": {"boxes": boxes[..., None], "labels": labels}})
    # a colour layer passes the boxes through (with a format), as Keras
    out = layers.RandomHue(0.3, bounding_box_format="xyxy")(
        {"images": images, "bounding_boxes": {"boxes": boxes, "labels": labels}}, training=True)
    np.testing.assert_array_equal(out["bounding_boxes"]["boxes"].numpy(), boxes)
    assert out["images"].shape == images.shape and not np.allclose(out["images"].numpy(), images)


def _augmenter(lib, equalization=True):
    L = lib.layers
    return [L.RandomHue(0.3, seed=1), L.RandomSaturation((0.3, 0.7), seed=2), L.RandomSharpness(0.5, seed=3),
            L.RandomColorJitter(brightness_factor=0.1, contrast_factor=0.2, seed=4),
            L.RandomGaussianBlur(0.5, seed=5), L.RandomErasing(0.5, seed=6)] + \
        ([L.Equalization()] if equalization else []) + \
        [L.ContrastLimitedAdaptiveHistogramEqualization(tile_grid_size=(2, 2))]


@pytest.mark.parametrize("equalization", [True, False])
def test_fit_save_and_load(tmp_path, equalization):
    """fit() with the augmentations active; .keras files read back by lamina, and by Keras where Keras can
    build the model (Keras 3.15's Equalization returns its input tensor as its symbolic output, so a Keras model
    holding it after another layer fails with 'part of a cycle': that file is checked in lamina only)."""
    x = _images((16, 8, 8, 3))
    y = R.integers(0, 2, 16)
    model = lamina.Sequential([lamina.Input((8, 8, 3))] + _augmenter(lamina, equalization) +
                              [layers.Rescaling(1 / 255), layers.Flatten(), layers.Dense(2)])
    model.compile(optimizer="adam", loss=lamina.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [w.numpy().copy() for w in model.weights]
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert any(not np.allclose(a, w.numpy()) for a, w in zip(before, model.weights))
    want = model.predict(x, verbose=0)     # inference: only CLAHE acts among the augmentations
    model.save(tmp_path / "m.keras")
    back = lamina.models.load_model(tmp_path / "m.keras")
    assert [type(a).__name__ for a in back.layers] == [type(a).__name__ for a in model.layers]
    assert back.layers[3].get_config()["brightness_factor"] == 0.1
    np.testing.assert_allclose(back.predict(x, verbose=0), want, rtol=1e-5, atol=1e-5)
    if equalization:
        return
    theirs = keras.models.load_model(tmp_path / "m.keras", compile=False)
    np.testing.assert_allclose(_np(theirs.predict(x, verbose=0)), want, rtol=1e-4, atol=1e-4)
    theirs.save(tmp_path / "k.keras")
    again = lamina.models.load_model(tmp_path / "k.keras", compile=False)
    np.testing.assert_allclose(again.predict(x, verbose=0), want, rtol=1e-5, atol=1e-5)


DEVICE = [("RandomHue", dict(factor=0.5)), ("RandomSaturation", dict(factor=(0.3, 0.8))),
          ("RandomSharpness", dict(factor=0.9)), ("RandomGaussianBlur", dict(factor=0.8)),
          ("RandomErasing", dict(factor=0.9, fill_value=[1, 2, 3])),
          ("RandomColorJitter", dict(brightness_factor=0.1, contrast_factor=0.2, saturation_factor=0.7,
                                     hue_factor=0.2)),
          ("Equalization", dict()), ("ContrastLimitedAdaptiveHistogramEqualization", dict(tile_grid_size=(2, 3)))]


@pytest.mark.parametrize("name,kwargs", DEVICE)
def test_on_device_matches_cpu(name, kwargs, device_xp):
    """The CuPy path (real CuPy where a GPU is present, else the fake_cupy stand-in that refuses host arrays)."""
    from lamina import backend
    x = _images((2, 7, 6, 3))
    layer = getattr(layers, name)(**kwargs)
    t = layer.get_random_transformation(x, seed=9)
    backend.set_device("cpu")
    want = layer.transform_images(lamina.Tensor(x), t).numpy()
    backend.set_device("cuda")
    xd = lamina.Tensor(backend.to_device(x, device_xp), requires_grad=True)
    y = layer.transform_images(xd, t)
    assert backend.get_array_module(y.data) is device_xp
    np.testing.assert_allclose(backend.to_numpy(y.data), want, rtol=1e-5, atol=1e-3)
    if y.requires_grad:
        (y * 1.0).sum().backward()
        assert backend.get_array_module(xd.grad) is device_xp


def test_transform_without_a_transformation_as_keras():
    x = _images((2, 5, 5, 3))
    # Keras's RandomGaussianBlur leaves images unchanged without a transformation; lamina's too
    np.testing.assert_array_equal(_np(keras.layers.RandomGaussianBlur().transform_images(torch.tensor(x), None)), x)
    np.testing.assert_array_equal(layers.RandomGaussianBlur().transform_images(x, None).numpy(), x)
    # Keras's RandomColorJitter draws its own; so does lamina's (seeded: reproducible)
    a = layers.RandomColorJitter(hue_factor=0.4, seed=3).transform_images(x, None).numpy()
    b = layers.RandomColorJitter(hue_factor=0.4, seed=3).transform_images(x, None).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, x)
