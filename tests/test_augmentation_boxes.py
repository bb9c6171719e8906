"""Keras 3.15's image-preprocessing protocol for the image layers (lamina/layers/image_preprocessing.py): bounding
boxes in every format, segmentation masks, labels, dict and single-image inputs, channels_first, errors and configs,
against real Keras (torch backend).

The strong check replays one draw in both libraries: Keras's get_random_transformation, handed unchanged to Keras's
and lamina's transform_bounding_boxes / transform_images / transform_segmentation_masks, must give the same boxes,
labels, images and masks; then lamina's draw handed to Keras. Deterministic layers (and random ones with a fixed
factor) are also compared through the whole call, batched and single-image. The boxes include a box partly outside
the image, padding rows (all -1, label -1; all 0) and, where the layer moves them out, boxes that leave the image
(label -1 as Keras)."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")

import lamina  # noqa: E402
from lamina import layers  # noqa: E402
from lamina.testing import check_grad  # noqa: E402

from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")
torch = pytest.importorskip("torch")

R = np.random.default_rng(2024)
N, H, W = 3, 12, 16                     # not square: a height and width swapped somewhere shows
X = R.uniform(0, 255, (N, H, W, 3)).astype(np.float32)
MASKS = R.integers(0, 4, (N, H, W, 1)).astype(np.float32)
XYXY = np.array([[[1, 2, 9, 10], [10, 3, 15, 11], [-3, -2, 4, 5], [-1, -1, -1, -1]],
                 [[0, 0, 16, 12], [12, 8, 20, 15], [5, 5, 6, 6], [0, 0, 0, 0]],
                 [[2.5, 1.5, 7.25, 11.5], [14, 1, 16, 3], [3, 4, 8, 9], [-1, -1, -1, -1]]], np.float32)
BOX_LABELS = np.array([[1, 2, 3, -1], [0, 4, 5, -1], [2, 3, 1, -1]], np.int32)
FORMATS = ["xyxy", "xywh", "center_xywh", "rel_xyxy", "yxyx"]


def _np(t):
    return keras.ops.convert_to_numpy(t)


def _arr(v):
    """A lamina result as a NumPy array (a layer that leaves a value as it is hands back what it was given)."""
    return np.asarray(v.numpy() if hasattr(v, "numpy") else v)


def _torch(t):
    """A lamina transformation (nested dicts / tuples of NumPy arrays) as Keras's torch backend takes it."""
    if isinstance(t, dict):
        return {k: _torch(v) for k, v in t.items()}
    if isinstance(t, list):
        return [_torch(v) for v in t]
    return torch.tensor(t) if isinstance(t, np.ndarray) else t


def _clone(t):
    """A deep copy: Keras's torch affine_transform swaps entries of the transform it is given, in place (so its
    RandomRotation's rotation_matrix changes each time it is applied); each library gets its own copy."""
    if isinstance(t, dict):
        return {k: _clone(v) for k, v in t.items()}
    if isinstance(t, (list, tuple)) and not isinstance(t, torch.Size):
        return type(t)(_clone(v) for v in t)
    return t.clone() if isinstance(t, torch.Tensor) else t


def _boxes(fmt, xyxy=XYXY, height=H, width=W):
    """XYXY in format fmt (Keras's conversion), the padding rows left as they are (all -1, all 0)."""
    b = _np(keras.utils.bounding_boxes.convert_format(xyxy.copy(), "xyxy", fmt, height=height, width=width))
    pad = (xyxy == -1).all(-1) | (xyxy == 0).all(-1)
    return np.where(pad[..., None], xyxy, b).astype(np.float32)


def _kboxes(b, labels=BOX_LABELS):
    return {"boxes": torch.tensor(b), "labels": torch.tensor(labels)}


def _assert_boxes(got, want, atol=1e-5):
    for key in ("boxes", "labels"):
        g, w = _arr(got[key]), _np(want[key])
        assert g.shape == w.shape, (key, g.shape, w.shape)
        np.testing.assert_allclose(g, w, rtol=0, atol=atol if key == "boxes" else 0, err_msg=key)


def _draws(klayer, llayer, x=X):
    """Keras's draw, then lamina's (as (for Keras, for lamina) pairs)."""
    kt = klayer.get_random_transformation(torch.tensor(x), training=True)
    lt = llayer.get_random_transformation(x, training=True)
    return [(kt, kt), (_torch(lt), lt)]


# ----------------------------------------------------------------------------- boxes: one draw, both libraries
BOX_LAYERS = [
    ("RandomFlip", dict(mode="horizontal")), ("RandomFlip", dict(mode="vertical")),
    ("RandomFlip", dict(mode="horizontal_and_vertical")),
    ("RandomRotation", dict(factor=0.3)),
    ("RandomTranslation", dict(height_factor=0.4, width_factor=(-0.6, 0.5))),
    ("RandomZoom", dict(height_factor=0.5)), ("RandomZoom", dict(height_factor=(-0.5, 0.6), width_factor=(0.2, 0.9))),
    ("RandomShear", dict(x_factor=0.4, y_factor=0.3)),
    ("RandomPerspective", dict(scale=0.6)),
    ("RandomCrop", dict(height=8, width=10)), ("RandomCrop", dict(height=14, width=10)),
    ("Resizing", dict(height=8, width=20)), ("Resizing", dict(height=20, width=8, crop_to_aspect_ratio=True)),
    ("Resizing", dict(height=8, width=20, crop_to_aspect_ratio=True)),
    ("Resizing", dict(height=20, width=9, pad_to_aspect_ratio=True)),
    ("Resizing", dict(height=8, width=20, pad_to_aspect_ratio=True)),
    ("CenterCrop", dict(height=8, width=10)), ("CenterCrop", dict(height=14, width=10)),
    ("CenterCrop", dict(height=6, width=30)),
]


def _force(name, t):
    """Keras's draw with its coin flips set, so that both branches of the where are taken."""
    if name == "RandomFlip":
        t["flips"] = torch.tensor([True, False, True]).reshape(3, 1, 1, 1)
    if name == "RandomPerspective":
        t["apply_perspective"] = torch.tensor([True, False, True])
    return t


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name,kw", BOX_LAYERS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(BOX_LAYERS)])
def test_boxes_replay_one_draw_in_both_libraries(name, kw, fmt):
    k = getattr(keras.layers, name)(bounding_box_format=fmt, **kw)
    l = getattr(layers, name)(bounding_box_format=fmt, **kw)
    b = _boxes(fmt)
    for for_keras, for_lamina in _draws(k, l):
        if for_keras is for_lamina:
            for_keras = for_lamina = _force(name, for_keras)
        want = k.transform_bounding_boxes(_kboxes(b), _clone(for_keras), training=True)
        got = l.transform_bounding_boxes({"boxes": b.copy(), "labels": BOX_LABELS.copy()}, _clone(for_lamina))
        _assert_boxes(got, want, atol=1e-5 if name not in ("RandomRotation", "RandomPerspective") else 1e-4)
    moved = np.asarray(got["boxes"].numpy())
    if moved.shape == b.shape:
        assert np.abs(moved - b).max() > 0.05            # the boxes did move
    assert got["boxes"].dtype == np.float32 and got["labels"].dtype == np.int32


def test_boxes_pushed_out_of_the_image_lose_their_label_as_in_keras():
    kw = dict(height_factor=(0.7, 0.7), width_factor=(-0.8, -0.8), bounding_box_format="center_xywh")
    b = _boxes("center_xywh")
    k, l = keras.layers.RandomTranslation(**kw), layers.RandomTranslation(**kw)
    t = l.get_random_transformation(X)
    want = k.transform_bounding_boxes(_kboxes(b), _torch(t))
    got = l.transform_bounding_boxes({"boxes": b, "labels": BOX_LABELS}, t)
    _assert_boxes(got, want)
    gone = np.asarray(got["labels"].numpy()) == -1
    assert gone.sum() > (BOX_LABELS == -1).sum()       # real boxes left the image: label -1, box of no area
    boxes = np.asarray(got["boxes"].numpy())
    assert np.all(np.prod(boxes[..., 2:], axis=-1)[gone & (BOX_LABELS != -1)] == 0)


def test_rotation_and_perspective_boxes_keep_keras_formats():
    """Keras 3.15 quirks kept: RandomRotation reads the boxes as xyxy whatever bounding_box_format says (and writes
    them in it); RandomPerspective reads them in it and returns xyxy."""
    b = _boxes("xyxy")
    k, l = keras.layers.RandomRotation(0.2, bounding_box_format="xywh"), layers.RandomRotation(
        0.2, bounding_box_format="xywh")
    t = l.get_random_transformation(X)
    got = l.transform_bounding_boxes({"boxes": b, "labels": BOX_LABELS}, t)
    _assert_boxes(got, k.transform_bounding_boxes(_kboxes(b), _torch(t)), atol=1e-4)
    as_xyxy = layers.RandomRotation(0.2, bounding_box_format="xyxy").transform_bounding_boxes(
        {"boxes": b, "labels": BOX_LABELS}, t)
    np.testing.assert_allclose(got["boxes"].numpy(), _boxes("xywh", as_xyxy["boxes"].numpy()), atol=1e-5)
    p = layers.RandomPerspective(scale=0.5, bounding_box_format="xywh")
    t = p.get_random_transformation(X)
    t["apply_perspective"][:] = False
    out = p.transform_bounding_boxes({"boxes": _boxes("xywh"), "labels": BOX_LABELS}, t)
    np.testing.assert_allclose(out["boxes"].numpy(), np.clip(np.where(XYXY == -1, 0, XYXY), 0, [W, H, W, H]),
                               atol=1e-5)


@pytest.mark.parametrize("name,kw", [("RandomFlip", dict()), ("RandomRotation", dict(factor=0.3)),
                                     ("RandomTranslation", dict(height_factor=0.3, width_factor=0.3)),
                                     ("RandomZoom", dict(height_factor=(-0.4, 0.4))), ("RandomCrop", dict(height=8,
                                                                                                       width=9)),
                                     ("Resizing", dict(height=9, width=7, crop_to_aspect_ratio=True)),
                                     ("CenterCrop", dict(height=9, width=7)), ("RandomShear", dict(x_factor=0.3)),
                                     ("RandomPerspective", dict(scale=0.4))])
def test_channels_first_images_masks_and_boxes_match_keras(name, kw):
    x, m = np.ascontiguousarray(X.transpose(0, 3, 1, 2)), np.ascontiguousarray(MASKS.transpose(0, 3, 1, 2))
    kw = dict(kw, data_format="channels_first", bounding_box_format="rel_xyxy")
    k, l = getattr(keras.layers, name)(**kw), getattr(layers, name)(**kw)
    b = _boxes("rel_xyxy")
    for for_keras, for_lamina in _draws(k, l, x):
        want = k.transform_bounding_boxes(_kboxes(b), _clone(for_keras))
        _assert_boxes(l.transform_bounding_boxes({"boxes": b, "labels": BOX_LABELS}, _clone(for_lamina)), want,
                      atol=1e-4)
        want = _np(k.transform_images(torch.tensor(x), _clone(for_keras)))
        got = l.transform_images(x, _clone(for_lamina)).numpy()
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-3)
        want = _np(k.transform_segmentation_masks(torch.tensor(m), _clone(for_keras)))
        np.testing.assert_allclose(_arr(l.transform_segmentation_masks(m, _clone(for_lamina))), want, rtol=0,
                                   atol=1e-5)


# ----------------------------------------------------------------------------- images and masks of the older layers
REPLAY = [
    ("RandomFlip", dict()), ("RandomRotation", dict(factor=0.3)),
    ("RandomRotation", dict(factor=0.3, fill_mode="constant", interpolation="nearest", fill_value=9.0)),
    ("RandomTranslation", dict(height_factor=0.4, width_factor=0.5, fill_mode="wrap")),
    ("RandomZoom", dict(height_factor=(-0.5, 0.6), width_factor=(0.2, 0.9), fill_mode="nearest")),
    ("RandomCrop", dict(height=8, width=10)), ("RandomCrop", dict(height=14, width=10)),
    ("Resizing", dict(height=8, width=20, crop_to_aspect_ratio=True)),
    ("Resizing", dict(height=20, width=9, pad_to_aspect_ratio=True, fill_value=3.0)),
    ("Resizing", dict(height=7, width=9, interpolation="nearest")), ("CenterCrop", dict(height=14, width=10)),
    ("RandomContrast", dict(factor=0.5)), ("RandomContrast", dict(factor=(0.2, 0.6), value_range=(0, 1))),
    ("RandomBrightness", dict(factor=0.3)), ("RandomGrayscale", dict(factor=0.6)),
    ("RandomInvert", dict(factor=0.7)), ("Solarization", dict(addition_factor=0.3, threshold_factor=(0.2, 0.8))),
    ("AutoContrast", dict()), ("RandomColorDegeneration", dict(factor=0.6)),
    ("RandomPosterization", dict(factor=5)), ("RandomPosterization", dict(factor=(2, 6), value_range=(0, 1))),
]


@pytest.mark.parametrize("name,kw", REPLAY, ids=[f"{n}-{i}" for i, (n, _) in enumerate(REPLAY)])
def test_images_and_masks_replay_one_draw_in_both_libraries(name, kw):
    scale = kw.get("value_range", (0, 255))[1] / 255.0
    x = (X * scale).astype(np.float32)
    k, l = getattr(keras.layers, name)(**kw), getattr(layers, name)(**kw)
    for for_keras, for_lamina in _draws(k, l, x):
        want = _np(k.transform_images(torch.tensor(x), _clone(for_keras), training=True))
        got = l.transform_images(x, _clone(for_lamina), training=True).numpy()
        assert got.shape == want.shape and got.dtype == want.dtype
        # bilinear resampling and resizing in float32: the last bits of a 0-255 value
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-3 * scale)
        want = _np(k.transform_segmentation_masks(torch.tensor(MASKS), _clone(for_keras), training=True))
        got_m = l.transform_segmentation_masks(MASKS, _clone(for_lamina), training=True)
        np.testing.assert_allclose(_arr(got_m), want, atol=1e-5)
    assert np.abs(got - x).max() > 1e-2 * scale if got.shape == x.shape else True


DRAWS = [("RandomFlip", dict()), ("RandomRotation", dict(factor=(-0.1, 0.3))),
         ("RandomTranslation", dict(height_factor=0.4, width_factor=(-0.2, 0.1))),
         ("RandomZoom", dict(height_factor=(-0.5, 0.6), width_factor=(0.2, 0.9))),
         ("RandomZoom", dict(height_factor=0.3)),
         ("RandomContrast", dict(factor=0.5)), ("RandomContrast", dict(factor=(0.2, 0.6))),
         ("RandomBrightness", dict(factor=0.3, value_range=(0, 1))), ("RandomGrayscale", dict(factor=0.3)),
         ("RandomInvert", dict(factor=0.7)), ("Solarization", dict(addition_factor=0.3, threshold_factor=(0.2, 0.8))),
         ("RandomColorDegeneration", dict(factor=0.6)), ("RandomPosterization", dict(factor=6))]


@pytest.mark.parametrize("name,kw", DRAWS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(DRAWS)])
def test_draws_have_keras_ranges_and_keys(name, kw):
    big = np.zeros((4000, 6, 8, 3), np.float32)
    want = getattr(keras.layers, name)(**kw).get_random_transformation(torch.tensor(big), training=True)
    got = getattr(layers, name)(**kw).get_random_transformation(big, training=True)
    if not isinstance(want, dict):                  # RandomGrayscale: Keras's bare (N, 1, 1, 1) booleans
        want, got = {"": want}, {"": got}
    assert sorted(got) == sorted(want)
    for key in want:
        w, g = _np(torch.as_tensor(want[key])), np.asarray(got[key])
        assert g.shape == w.shape and g.dtype == w.dtype, (key, g.shape, w.shape, g.dtype, w.dtype)
        if g.dtype.kind in "fbiu" and g.size > 100:
            w, g = w.astype(np.float64), g.astype(np.float64)
            span = max(w.max() - w.min(), 1e-6)
            for stat in (np.min, np.max, np.mean):
                assert abs(stat(g) - stat(w)) < 0.04 * span, (key, stat.__name__, stat(g), stat(w))


# ----------------------------------------------------------------------------- the whole call, as Keras
CALLS = [
    ("Resizing", dict(height=8, width=20)), ("Resizing", dict(height=20, width=9, pad_to_aspect_ratio=True)),
    ("Resizing", dict(height=9, width=9, crop_to_aspect_ratio=True, interpolation="nearest")),
    ("CenterCrop", dict(height=8, width=10)), ("CenterCrop", dict(height=14, width=10)),
    ("RandomCrop", dict(height=14, width=10)),
    ("RandomRotation", dict(factor=(0.1, 0.1))),
    ("RandomTranslation", dict(height_factor=(0.2, 0.2), width_factor=(-0.3, -0.3))),
    ("RandomZoom", dict(height_factor=(0.3, 0.3), width_factor=(-0.2, -0.2))),
]


@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("name,kw", CALLS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CALLS)])
def test_the_whole_call_on_a_dict_matches_keras(name, kw, batched):
    fmt = "xywh" if batched else "rel_xyxy"
    b = _boxes(fmt)
    pick = (lambda a: a) if batched else (lambda a: a[1])
    data = lambda lib: {"images": pick(X), "labels": pick(np.eye(3, dtype=np.float32)),   # noqa: E731
                        "bounding_boxes": {"boxes": pick(b), "labels": pick(BOX_LABELS)},
                        "segmentation_masks": pick(MASKS)}
    k, l = getattr(keras.layers, name)(bounding_box_format=fmt, **kw), getattr(layers, name)(
        bounding_box_format=fmt, **kw)
    given = data(lamina)
    got = l(given, training=True)
    want = k(data(keras), training=True)
    assert sorted(got) == sorted(given) and got is not given
    assert isinstance(given["bounding_boxes"]["boxes"], np.ndarray)        # the caller's dict is left as it was
    np.testing.assert_allclose(got["images"].numpy(), _np(want["images"]), atol=1e-3)
    np.testing.assert_array_equal(got["labels"].numpy(), _np(want["labels"]))
    _assert_boxes(got["bounding_boxes"], want["bounding_boxes"], atol=1e-4)
    if name != "RandomRotation":   # (Keras's torch backend moves those masks with its altered rotation_matrix)
        np.testing.assert_allclose(got["segmentation_masks"].numpy(), _np(want["segmentation_masks"]), atol=1e-5)
    assert got["images"].shape[:-1] == got["segmentation_masks"].shape[:-1]
    off = l(data(lamina), training=False)
    k_off = k(data(keras), training=False)
    _assert_boxes(off["bounding_boxes"], k_off["bounding_boxes"], atol=1e-4)
    np.testing.assert_allclose(off["images"].numpy(), _np(k_off["images"]), atol=1e-3)


def test_integer_images_come_back_in_keras_dtypes():
    x = R.integers(0, 255, (2, 8, 10, 3)).astype(np.uint8)
    for name, kw in [("Resizing", dict(height=4, width=5)), ("Resizing", dict(height=5, width=5,
                                                                             pad_to_aspect_ratio=True)),
                     ("CenterCrop", dict(height=4, width=5)), ("RandomCrop", dict(height=9, width=12)),
                     ("AutoContrast", {}), ("RandomFlip", dict(mode="vertical"))]:
        for training in (True, False):
            want = _np(getattr(keras.layers, name)(**kw)(x, training=training))
            got = getattr(layers, name)(**kw)(x, training=training).numpy()
            assert got.dtype == want.dtype and got.shape == want.shape, (name, training)
            if name != "RandomFlip" or not training:
                np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), atol=1e-3)


def test_random_layers_pass_dicts_through_at_inference_and_draw_once_per_call():
    data = {"images": X, "bounding_boxes": {"boxes": _boxes("xyxy"), "labels": BOX_LABELS},
            "segmentation_masks": MASKS}
    for layer in (layers.RandomFlip(bounding_box_format="xyxy"), layers.RandomZoom(0.3, bounding_box_format="xyxy"),
                  layers.RandomBrightness(0.3, bounding_box_format="xyxy")):
        out = layer(data, training=False)
        np.testing.assert_array_equal(out["images"].numpy(), X)
        np.testing.assert_array_equal(out["bounding_boxes"]["boxes"].numpy(), data["bounding_boxes"]["boxes"])
        np.testing.assert_array_equal(out["segmentation_masks"].numpy(), MASKS)
    # one draw moves images, masks and boxes together: a flipped image has flipped masks and boxes
    flip = layers.RandomFlip("horizontal", bounding_box_format="xyxy", seed=3)
    out = flip(data)
    flipped = np.all(out["images"].numpy() == X[:, :, ::-1], axis=(1, 2, 3))
    assert flipped.any() and not flipped.all()
    np.testing.assert_array_equal(np.all(out["segmentation_masks"].numpy() == MASKS[:, :, ::-1], axis=(1, 2, 3)),
                                  flipped)
    boxes = out["bounding_boxes"]["boxes"].numpy()
    real = BOX_LABELS[:, 0] != -1
    np.testing.assert_allclose(boxes[flipped & real, 0, 2], W - XYXY[flipped & real, 0, 0], atol=1e-5)


def test_colour_layers_pass_boxes_masks_and_labels_through_as_keras():
    data = lambda: {"images": X, "labels": np.eye(3, dtype=np.float32),   # noqa: E731
                    "bounding_boxes": {"boxes": _boxes("xyxy"), "labels": BOX_LABELS}, "segmentation_masks": MASKS}
    for name, kw in [("RandomContrast", dict(factor=0.5)), ("RandomBrightness", dict(factor=0.3)),
                     ("RandomInvert", dict()), ("Solarization", dict(addition_factor=0.2)), ("AutoContrast", dict()),
                     ("RandomColorDegeneration", dict(factor=0.5)), ("RandomPosterization", dict(factor=3)),
                     ("RandomGrayscale", dict(factor=0.5))]:
        out = getattr(layers, name)(bounding_box_format="xyxy", **kw)(data())
        np.testing.assert_array_equal(out["bounding_boxes"]["boxes"].numpy(), _boxes("xyxy"))
        np.testing.assert_array_equal(out["bounding_boxes"]["labels"].numpy(), BOX_LABELS)
        np.testing.assert_array_equal(out["segmentation_masks"].numpy(), MASKS)
        np.testing.assert_array_equal(out["labels"].numpy(), np.eye(3))
        if name != "RandomGrayscale":     # (Keras 3.15's RandomGrayscale cannot take a dict: it reads data.shape)
            want = getattr(keras.layers, name)(bounding_box_format="xyxy", **kw)(data())
            _assert_boxes(out["bounding_boxes"], want["bounding_boxes"])


# ----------------------------------------------------------------------------- mixing and policies
def test_mixup_boxes_as_keras_and_cutmix_elastic_refuse_them():
    b = _boxes("xyxy")
    k, l = keras.layers.MixUp(bounding_box_format="xyxy"), layers.MixUp(bounding_box_format="xyxy")
    for for_keras, for_lamina in _draws(k, l):
        _assert_boxes(l.transform_bounding_boxes({"boxes": b, "labels": BOX_LABELS}, for_lamina),
                      k.transform_bounding_boxes(_kboxes(b), for_keras))
    got = l.transform_bounding_boxes({"boxes": b, "labels": BOX_LABELS}, {"permutation_order": np.array([2, 0, 1]),
                                                                           "mix_weight": np.ones(3, np.float32)})
    np.testing.assert_array_equal(got["boxes"].numpy()[0, 4:], b[2])           # image 0 also holds image 2's boxes
    assert got["labels"].shape == (6, 4)                                         # Keras joins labels on axis 0
    for name in ("CutMix", "RandomElasticTransform"):
        for lib in (keras, lamina):
            with pytest.raises(NotImplementedError):
                getattr(lib.layers, name)(bounding_box_format="xyxy")(
                    {"images": X, "bounding_boxes": {"boxes": b, "labels": BOX_LABELS}})


@pytest.mark.parametrize("idxes", [[2, 0], [0, 2], [1, 1], [4, 9]])
def test_rand_augment_boxes_and_masks_replay_keras(idxes):
    kw = dict(num_ops=2, factor=0.5, bounding_box_format="xyxy")
    k, l = keras.layers.RandAugment(**kw), layers.RandAugment(**kw)
    t = k.get_random_transformation(torch.tensor(X))
    t["layer_idxes"] = torch.tensor(idxes, dtype=torch.int32)
    b = _boxes("xyxy")
    _assert_boxes(l.transform_bounding_boxes({"boxes": b, "labels": BOX_LABELS}, _clone(t)),
                  k.transform_bounding_boxes(_kboxes(b), _clone(t)), atol=1e-4)
    if 2 not in idxes[1:]:
        # (Keras evaluates every layer at every op: its torch affine_transform alters the rotation_matrix at the
        # first op, so a rotation chosen later moves Keras's masks by another matrix)
        want = _np(k.transform_segmentation_masks(torch.tensor(MASKS), _clone(t)))
        np.testing.assert_array_equal(_arr(l.transform_segmentation_masks(MASKS, _clone(t))), want)
    if idxes[0] < 3:   # a geometric layer: the boxes moved
        assert np.abs(l.transform_bounding_boxes({"boxes": b, "labels": BOX_LABELS}, t)["boxes"].numpy()
                      - np.where(b < 0, 0, b)).max() > 0.1


def test_aug_mix_masks_replay_keras_and_boxes_pass():
    kw = dict(num_chains=2, chain_depth=2, bounding_box_format="xyxy")
    k, l = keras.layers.AugMix(**kw), layers.AugMix(**kw)
    xt = torch.tensor(X)
    steps = [("random_shear", keras.layers.RandomShear(0.5, 0.5)), ("random_translation",
                                                                   keras.layers.RandomTranslation(0.3, 0.3)),
             ("random_brightness", keras.layers.RandomBrightness(0.3))]
    draws = {name: layer.get_random_transformation(xt) for name, layer in steps}
    t = {"chain_mixing_weights": torch.tensor([0.3, 0.7]), "weight_sample": torch.tensor(0.4),
         "chain_transforms": [[{"layer_name": "random_shear", "transformation": draws["random_shear"]},
                               {"layer_name": "random_brightness", "transformation": draws["random_brightness"]}],
                              [{"layer_name": "random_translation", "transformation": draws["random_translation"]}]]}
    want = _np(k.transform_segmentation_masks(torch.tensor(MASKS), _clone(t)))
    got = l.transform_segmentation_masks(MASKS, _clone(t)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert np.abs(got - MASKS).max() > 0.1
    b = {"boxes": _boxes("xyxy"), "labels": BOX_LABELS}
    assert l.transform_bounding_boxes(b, t) is b
    out = l({"images": X, "bounding_boxes": b, "segmentation_masks": MASKS})
    np.testing.assert_array_equal(out["bounding_boxes"]["boxes"].numpy(), b["boxes"])


def test_policies_with_keras_transformations_of_the_older_layers(keras_brightness_without_aliasing):
    """RandAugment's sub-layers (translation, rotation, contrast, brightness, ...) take Keras's own draws now."""
    k, l = keras.layers.RandAugment(num_ops=3), layers.RandAugment(num_ops=3)
    t = k.get_random_transformation(torch.tensor(X))
    for idxes in ([1, 5, 7], [2, 3, 4], [8, 9, 1]):   # translation, contrast, posterization; rotation, brightness...
        t["layer_idxes"] = torch.tensor(idxes, dtype=torch.int32)
        got = l.transform_images(X, _clone(t)).numpy()
        np.testing.assert_allclose(got, _np(k.transform_images(torch.tensor(X), _clone(t))), atol=1e-3)
        assert np.abs(got - X).max() > 1.0


# ----------------------------------------------------------------------------- errors and configs
def test_bad_box_inputs_raise_keras_exception_types():
    b = _boxes("xyxy")
    cases = [
        dict(fmt=None, boxes={"boxes": b, "labels": BOX_LABELS}),                     # no bounding_box_format
        dict(fmt="xyxy", boxes={"boxes": b}),                                          # no labels
        dict(fmt="xyxy", boxes=b),                                                     # not a dict
        dict(fmt="xyxy", boxes={"boxes": b[..., None], "labels": BOX_LABELS}),         # rank 4
        dict(fmt="xyxy", boxes={"boxes": b, "labels": BOX_LABELS[..., None, None]}),  # labels of rank 4
        dict(fmt="xyxy", boxes={"boxes": b[..., :3], "labels": BOX_LABELS}),          # 3 numbers a box
        dict(fmt="xyxz", boxes={"boxes": b, "labels": BOX_LABELS}),                   # unknown format
    ]
    for case in cases:
        with pytest.raises(Exception) as kerr:
            keras.layers.RandomFlip(bounding_box_format=case["fmt"])({"images": X, "bounding_boxes": case["boxes"]})
        with pytest.raises(kerr.type) as lerr:
            layers.RandomFlip(bounding_box_format=case["fmt"])({"images": X, "bounding_boxes": case["boxes"]})
        assert kerr.type is ValueError, case
    assert "bounding_box_format" in str(lerr.value) or "format" in str(lerr.value)
    with pytest.raises(ValueError, match="rank 3"):
        layers.RandomZoom(0.2)({"images": X[0, 0]})
    with pytest.raises(ValueError, match="images"):
        layers.RandomZoom(0.2)({"masks": X})


CONFIGS = [("RandomFlip", dict(mode="vertical", seed=3)), ("RandomRotation", dict(factor=(0.1, -0.2))),
           ("RandomTranslation", dict(height_factor=0.1, width_factor=(0.2, -0.1), fill_mode="constant")),
           ("RandomZoom", dict(height_factor=0.2, width_factor=(0.1, 0.3))), ("RandomContrast", dict(factor=0.3)),
           ("RandomCrop", dict(height=3, width=4)), ("RandomBrightness", dict(factor=0.2)),
           ("RandomGrayscale", dict(factor=0.3)), ("RandomInvert", dict(factor=0.4)),
           ("Solarization", dict(addition_factor=0.5, threshold_factor=(0.1, 0.3))), ("AutoContrast", dict()),
           ("RandomColorDegeneration", dict(factor=0.3)), ("RandomPosterization", dict(factor=4)),
           ("Resizing", dict(height=3, width=4, pad_to_aspect_ratio=True, antialias=True)),
           ("CenterCrop", dict(height=3, width=4))]


def _plain(v):
    return [_plain(a) for a in v] if isinstance(v, (list, tuple)) else v


@pytest.mark.parametrize("name,kw", CONFIGS)
def test_get_config_matches_keras_and_round_trips(name, kw):
    kw = dict(kw, bounding_box_format="center_xywh", data_format="channels_first")
    mine, theirs = getattr(layers, name)(**kw), getattr(keras.layers, name)(**kw)
    cfg, kcfg = mine.get_config(), theirs.get_config()
    for key in set(kcfg) - {"name", "dtype", "trainable", "seed"}:
        assert _plain(cfg[key]) == _plain(kcfg[key]), (key, cfg[key], kcfg[key])
    again = getattr(layers, name).from_config(cfg)
    assert _plain(again.get_config()) == _plain(cfg)
    assert again.bounding_box_format == "center_xywh" and again.data_format == "channels_first"
    back = getattr(keras.layers, name).from_config({k: v for k, v in cfg.items() if k != "dtype"})
    assert back.bounding_box_format == "center_xywh"
    assert getattr(layers, name).from_config({k: v for k, v in kcfg.items() if k != "dtype"}).get_config()[
        "bounding_box_format"] == "center_xywh"
    assert "bounding_box_format" not in getattr(layers, name)(**{k: v for k, v in kw.items()
                                                                 if k != "bounding_box_format"}).get_config()


# ----------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("make", [lambda: layers.RandomRotation(0.2, seed=1, dtype="float64"),
                                  lambda: layers.RandomZoom((-0.3, 0.3), seed=1, dtype="float64"),
                                  lambda: layers.RandomFlip(seed=2, dtype="float64"),
                                  lambda: layers.Resizing(3, 5, pad_to_aspect_ratio=True, dtype="float64"),
                                  lambda: layers.RandomContrast(0.4, seed=1, dtype="float64")],
                         ids=["RandomRotation", "RandomZoom", "RandomFlip", "Resizing", "RandomContrast"])
def test_gradients_through_a_fixed_transformation(make):
    layer = make()
    x = R.uniform(0.1, 0.9, (2, 5, 4, 2))
    t = layer.get_random_transformation(x)
    check_grad(lambda images: layer.transform_images(images, t), x)


# ----------------------------------------------------------------------------- device (fake CuPy here, CuPy with a GPU)
@pytest.mark.parametrize("name,kw", [("RandomRotation", dict(factor=0.3)), ("RandomZoom", dict(height_factor=0.4)),
                                     ("RandomFlip", dict()), ("Resizing", dict(height=9, width=7,
                                                                               pad_to_aspect_ratio=True)),
                                     ("CenterCrop", dict(height=14, width=10)), ("RandomShear", dict(x_factor=0.3)),
                                     ("RandomPerspective", dict(scale=0.5)), ("RandomCrop", dict(height=8, width=9))])
def test_images_masks_and_boxes_on_device_match_cpu(name, kw, device_xp):
    from lamina import backend
    layer = getattr(layers, name)(bounding_box_format="xywh", **kw)
    t = layer.get_random_transformation(X, seed=5)
    b = _boxes("xywh")

    def run(xp):
        on = (lambda a: lamina.Tensor(backend.to_device(a, xp)))   # noqa: E731
        out = [layer.transform_images(on(X), t), layer.transform_segmentation_masks(on(MASKS), t)]
        boxes = layer.transform_bounding_boxes({"boxes": on(b), "labels": on(BOX_LABELS)}, t)
        return out + [boxes["boxes"], boxes["labels"]]
    backend.set_device("cpu")
    want = [backend.to_numpy(v.data) for v in run(np)]
    backend.set_device("cuda")
    got = run(device_xp)
    for g, w in zip(got, want):
        assert backend.get_array_module(g.data) is device_xp
        np.testing.assert_allclose(backend.to_numpy(g.data), w, rtol=1e-5, atol=1e-3)


def test_a_sequential_pipeline_takes_the_dict_as_keras_does():
    """keras.Sequential of augmentation layers called on {"images", "bounding_boxes"}: Keras runs the layers one
    after another on the dict (no graph from one input shape); lamina refused it ("takes a single input")."""
    data = {"images": X, "bounding_boxes": {"boxes": XYXY, "labels": BOX_LABELS}, "segmentation_masks": MASKS}

    def pipeline(lib):
        return lib.Sequential([lib.layers.Resizing(24, 20, bounding_box_format="xyxy"),
                               lib.layers.CenterCrop(16, 16, bounding_box_format="xyxy")])
    want = pipeline(keras)({k: (dict(v) if isinstance(v, dict) else v.copy()) for k, v in data.items()})
    got = pipeline(lamina)(data)
    assert sorted(got) == sorted(want)
    np.testing.assert_allclose(_arr(got["images"]), _np(want["images"]), atol=1e-3)
    np.testing.assert_allclose(_arr(got["segmentation_masks"]), _np(want["segmentation_masks"]), atol=1e-4)
    np.testing.assert_allclose(_arr(got["bounding_boxes"]["boxes"]), _np(want["bounding_boxes"]["boxes"]), atol=1e-4)
    np.testing.assert_array_equal(_arr(got["bounding_boxes"]["labels"]), _np(want["bounding_boxes"]["labels"]))
    # the same pipeline on plain images still builds its graph from the one input shape
    plain = pipeline(lamina)
    assert tuple(plain(X).shape) == (N, 16, 16, 3) and plain.built
