"""MixUp, CutMix, RandomShear, RandomPerspective, RandomElasticTransform (issue 14) against real Keras 3
(torch backend).

The strong check: Keras draws a transformation with get_random_transformation, and Keras's and lamina's
transform_images (and transform_labels) apply that same transformation; then the other way round, with
lamina's draw fed to Keras. Also: dict inputs, inference pass-through, the ranges of the draws, seeding,
errors and get_config as Keras, fit() and .keras round trips, and gradients by central differences."""
import re
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

R = np.random.default_rng(11)
X = R.uniform(0, 255, (5, 12, 10, 3)).astype(np.float32)
LABELS = np.eye(4, dtype=np.float32)[R.integers(0, 4, 5)]


def _np(t):
    return keras.ops.convert_to_numpy(t)


def _kt(x):
    return keras.ops.convert_to_tensor(x)


def _to_keras(transformation):
    """lamina's draw as Keras's transform_* expect it (torch tensors)."""
    return {k: _kt(v) if isinstance(v, np.ndarray) else v for k, v in transformation.items()}


def _both_ways(klayer, llayer, x=X, atol=0.0):
    """Keras's draw through both transform_images; lamina's draw through both. Returns Keras's draw."""
    xt = _kt(x)
    kt = klayer.get_random_transformation(xt, training=True)
    want = _np(klayer.transform_images(xt, kt))
    got = llayer.transform_images(x, kt).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=atol)
    assert got.dtype == want.dtype
    lt = llayer.get_random_transformation(x, training=True)
    want = _np(klayer.transform_images(xt, _to_keras(lt)))
    np.testing.assert_allclose(llayer.transform_images(x, lt).numpy(), want, rtol=0, atol=atol)
    return kt


# ----------------------------------------------------------------------------- same transformation, same output
def test_mixup_matches_keras_images_and_labels():
    k, l = keras.layers.MixUp(alpha=0.4), layers.MixUp(alpha=0.4)
    kt = _both_ways(k, l)
    assert np.abs(l.transform_images(X, kt).numpy() - X).max() > 1.0     # it did mix
    want = _np(k.transform_labels(_kt(LABELS), kt))
    np.testing.assert_allclose(l.transform_labels(LABELS, kt).numpy(), want, rtol=0, atol=1e-7)
    lt = l.get_random_transformation(X)
    want = _np(k.transform_labels(_kt(LABELS), _to_keras(lt)))
    np.testing.assert_allclose(l.transform_labels(LABELS, lt).numpy(), want, rtol=0, atol=1e-7)


def test_cutmix_matches_keras_images_and_labels():
    k, l = keras.layers.CutMix(factor=(0.3, 0.9)), layers.CutMix(factor=(0.3, 0.9))
    kt = _both_ways(k, l)
    want = _np(k.transform_labels(_kt(LABELS), kt))
    np.testing.assert_allclose(l.transform_labels(LABELS, kt).numpy(), want, rtol=0, atol=1e-7)
    lt = l.get_random_transformation(X)
    want = _np(k.transform_labels(_kt(LABELS), _to_keras(lt)))
    np.testing.assert_allclose(l.transform_labels(LABELS, lt).numpy(), want, rtol=0, atol=1e-7)


@pytest.mark.parametrize("fill_mode", ["reflect", "constant", "nearest", "wrap"])
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_random_shear_matches_keras(fill_mode, interpolation):
    kw = dict(x_factor=0.3, y_factor=(0.1, 0.5), fill_mode=fill_mode, interpolation=interpolation, fill_value=7.0)
    k, l = keras.layers.RandomShear(**kw), layers.RandomShear(**kw)
    # bilinear weights from coordinates whose last bit depends on the order of the products (torch's einsum
    # runs them through MKL on an Intel CPU): a few float32 ulps of these 0-255 values
    kt = _both_ways(k, l, atol=1e-3 if interpolation == "bilinear" else 0.0)
    assert np.abs(l.transform_images(X, kt).numpy() - X).max() > 1.0


def test_random_shear_channels_first_matches_keras():
    x = np.ascontiguousarray(X.transpose(0, 3, 1, 2))
    kw = dict(x_factor=0.4, y_factor=0.2, data_format="channels_first")
    _both_ways(keras.layers.RandomShear(**kw), layers.RandomShear(**kw), x=x, atol=1e-3)


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_random_perspective_matches_keras(interpolation):
    kw = dict(factor=(0.5, 0.8), scale=0.6, interpolation=interpolation, fill_value=3.0)
    k, l = keras.layers.RandomPerspective(**kw), layers.RandomPerspective(**kw)
    xt = _kt(X)
    kt = k.get_random_transformation(xt)
    kt["apply_perspective"] = torch.tensor([True, False, True, True, False])   # both branches of the where
    want = _np(k.transform_images(xt, kt))
    got = l.transform_images(X, kt).numpy()
    # the homography is an 8x8 float32 solve (torch's LAPACK here, NumPy's there): the source coordinates
    # agree to ~1e-6 pixel, so a bilinear pixel may move by (coordinate error) x (local slope <= 255)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-3)
    np.testing.assert_array_equal(got[[1, 4]], X[[1, 4]])
    assert np.abs(got[0] - X[0]).max() > 1.0
    _both_ways(k, l, atol=2e-3)


@pytest.mark.parametrize("fill_mode", ["reflect", "constant", "nearest", "wrap", "mirror"])
@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_random_elastic_transform_matches_keras(fill_mode, interpolation):
    kw = dict(factor=(0.5, 0.9), interpolation=interpolation, fill_mode=fill_mode, fill_value=5.0,
              value_range=(10, 240))
    k, l = keras.layers.RandomElasticTransform(**kw), layers.RandomElasticTransform(**kw)
    xt = _kt(X)
    kt = k.get_random_transformation(xt)
    kt["apply_transform"] = torch.tensor([True, True, False, True, False])
    kt["distortion_factor"] = torch.tensor(0.8)
    # Keras's torch backend draws the two normal fields from torch's global generator (on CPU it ignores
    # the seed): draw them here first, then let Keras draw the same ones again
    torch.manual_seed(123)
    shape = X.shape[:3]
    noise = np.stack([torch.normal(0.0, 1.0, size=shape).numpy(), torch.normal(0.0, 1.0, size=shape).numpy()])
    torch.manual_seed(123)
    want = _np(k.transform_images(xt, kt))
    got = l.transform_images(X, dict(kt, noise=noise)).numpy()
    # the Gaussian kernel is built in float64 here and in float32 by Keras: displacements agree to ~1e-7
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)
    assert np.abs(got - np.clip(X, 10, 240)).max() > 20.0        # pixels really moved
    np.testing.assert_array_equal(got[[2, 4]], np.clip(X[[2, 4]], 10, 240))


# ----------------------------------------------------------------------------- calls: dicts, single images, inference
@pytest.mark.parametrize("cls", [layers.MixUp, layers.CutMix])
def test_dict_input_mixes_labels_with_the_images_weights(cls):
    out = cls(seed=3)({"images": X, "labels": LABELS})
    t = cls(seed=3).get_random_transformation(X)                 # the same draw
    w, p = np.asarray(t["mix_weight"]).reshape(-1, 1), np.asarray(t["permutation_order"])
    np.testing.assert_allclose(out["labels"].numpy(), w * LABELS + (1 - w) * LABELS[p], atol=1e-6)
    if cls is layers.MixUp:
        want = w.reshape(-1, 1, 1, 1) * X + (1 - w.reshape(-1, 1, 1, 1)) * X[p]
    else:
        want = np.where(t["batch_masks"], X[p], X)
        # Keras's label weight is 1 - (real-valued box area) / (H W): the pixel count agrees to the box edge
        kept = 1 - t["batch_masks"][..., 0].mean(axis=(1, 2))
        assert np.all(np.abs(kept - w[:, 0]) <= (X.shape[1] + X.shape[2]) / (X.shape[1] * X.shape[2]))
    np.testing.assert_allclose(out["images"].numpy(), want, rtol=1e-6, atol=1e-4)
    assert sorted(out) == ["images", "labels"]


def test_dict_input_single_image_and_segmentation_masks():
    out = layers.MixUp(seed=1)({"images": X[0], "labels": LABELS[0]})
    assert out["images"].shape == X[0].shape and out["labels"].shape == LABELS[0].shape
    np.testing.assert_allclose(out["images"].numpy(), X[0], atol=1e-4)          # mixed with itself
    masks = R.integers(0, 3, (5, 12, 10, 1)).astype(np.float32)
    layer = layers.RandomShear(0.5, 0.5, seed=2)
    out = layer({"images": X, "segmentation_masks": masks})
    t = layers.RandomShear(0.5, 0.5, seed=2).get_random_transformation(X)
    k = keras.layers.RandomShear(0.5, 0.5)
    want = _np(k.transform_segmentation_masks(_kt(masks), _to_keras(t)))      # Keras: nearest resampling
    np.testing.assert_array_equal(out["segmentation_masks"].numpy(), want)
    assert set(np.unique(want)) <= {0.0, 1.0, 2.0}


@pytest.mark.parametrize("name,kw", [("MixUp", {}), ("CutMix", {}), ("RandomShear", dict(x_factor=0.3)),
                                     ("RandomPerspective", {}), ("RandomElasticTransform", {})])
def test_inference_passes_through_as_keras(name, kw):
    x = R.integers(0, 255, (4, 8, 8, 3)).astype(np.uint8)
    want = getattr(keras.layers, name)(**kw)(x, training=False)
    got = getattr(layers, name)(**kw)(x, training=False)
    np.testing.assert_array_equal(got.numpy(), _np(want))
    assert got.dtype == _np(want).dtype                  # float32, except MixUp, which returns the input
    d = getattr(layers, name)(**kw)({"images": x, "labels": LABELS[:4]}, training=False)
    np.testing.assert_array_equal(d["labels"].numpy(), LABELS[:4])
    single = getattr(layers, name)(**kw)(X[0], training=True)
    assert single.shape == X[0].shape and single.dtype == np.float32


def test_bounding_box_format_is_kept_and_boxes_are_refused_where_keras_refuses_them():
    layer = layers.RandomShear(0.2, bounding_box_format="xyxy")
    want = keras.layers.RandomShear(0.2, bounding_box_format="xyxy").get_config()["bounding_box_format"]
    assert layer.get_config()["bounding_box_format"] == want == "xyxy"
    boxes = {"boxes": np.zeros((5, 1, 4), np.float32), "labels": np.zeros((5, 1), np.int32)}
    for name in ("CutMix", "RandomElasticTransform"):   # (tests/test_augmentation_boxes.py: the layers that move them)
        for lib in (keras, lamina):
            with pytest.raises(NotImplementedError):
                getattr(lib.layers, name)(bounding_box_format="xyxy")({"images": X, "bounding_boxes": dict(boxes)})


def test_rank_must_be_three_or_four():
    with pytest.raises(ValueError, match="rank 3"):
        layers.MixUp()(np.zeros((2, 2, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="rank 3"):
        layers.RandomShear(0.2)(np.zeros((4, 4), np.float32))


# ----------------------------------------------------------------------------- draws
def test_draws_respect_their_ranges():
    big = np.zeros((4000, 6, 8, 1), np.float32)
    w = layers.MixUp(alpha=0.5).get_random_transformation(big)["mix_weight"]
    assert np.all((w >= 0) & (w <= 1))
    assert abs(w.mean() - 0.5) < 0.02 and abs(w.var() - 1 / (4 * 2.0)) < 0.02    # Beta(a, a): var 1/(4(2a+1))
    s = layers.RandomShear(x_factor=(0.1, 0.2), y_factor=(0.3, 0.4)).get_random_transformation(big)["shear_factor"]
    assert np.all((np.abs(s[:, 0]) >= 0.1) & (np.abs(s[:, 0]) <= 0.2))
    assert np.all((np.abs(s[:, 1]) >= 0.3) & (np.abs(s[:, 1]) <= 0.4))
    assert np.all(np.sign(s[:, 0]) == np.sign(s[:, 1])) and abs((s[:, 0] < 0).mean() - 0.5) < 0.03
    t = layers.RandomPerspective(factor=(0.2, 0.4), scale=0.5).get_random_transformation(big)
    d = (t["end_points"] - t["start_points"]) / np.maximum(t["start_points"], 1)
    assert np.all(np.abs(d) <= 0.25 + 1e-6) and np.all(t["end_points"][:, 0] == 0)   # (0, 0) stays
    assert abs(t["apply_perspective"].mean() - 0.3) < 0.03
    t = layers.RandomElasticTransform(factor=0.5, scale=(0.2, 0.3)).get_random_transformation(big)
    assert 0.2 <= t["distortion_factor"] <= 0.3 and abs(t["apply_transform"].mean() - 0.25) < 0.03
    assert t["noise"].shape == (2, 4000, 6, 8) and abs(t["noise"].std() - 1) < 0.01
    c = layers.CutMix(factor=0.5).get_random_transformation(big[:500])
    kept = 1 - c["batch_masks"][..., 0].mean(axis=(1, 2))
    assert np.all((c["mix_weight"] >= 0) & (c["mix_weight"] <= 1)) and np.all(kept >= 0)
    assert layers.RandomElasticTransform(scale=0.0).get_random_transformation(big) is None     # as Keras


@pytest.mark.parametrize("make", [lambda s: layers.MixUp(seed=s), lambda s: layers.CutMix(seed=s),
                                  lambda s: layers.RandomShear(0.3, 0.3, seed=s),
                                  lambda s: layers.RandomPerspective(seed=s),
                                  lambda s: layers.RandomElasticTransform(seed=s)])
def test_seeded_layers_are_reproducible(make):
    a, b, c = make(4)(X).numpy(), make(4)(X).numpy(), make(5)(X).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0
    layer = make(4)
    assert np.abs(layer(X).numpy() - layer(X).numpy()).max() > 0      # a layer's stream moves on
    lamina.utils.set_random_seed(9)
    u = make(None)(X).numpy()
    lamina.utils.set_random_seed(9)
    np.testing.assert_array_equal(make(None)(X).numpy(), u)


# ----------------------------------------------------------------------------- arguments, config, models
_BAD = [
    ("CutMix", dict(factor=2)), ("CutMix", dict(factor=-0.5)), ("CutMix", dict(factor="a")),
    ("CutMix", dict(factor=(1.5, 2.0))), ("RandomShear", dict(x_factor=1.5)),
    ("RandomShear", dict(x_factor=(0.1, 0.2, 0.3))), ("RandomShear", dict(y_factor=(-0.1, 0.2))),
    ("RandomShear", dict(x_factor=-0.3)), ("RandomShear", dict(fill_mode="foo")),
    ("RandomShear", dict(interpolation="bicubic")), ("RandomPerspective", dict(scale=2.0)),
    ("RandomPerspective", dict(factor=2.0)), ("RandomPerspective", dict(interpolation="x")),
    ("RandomElasticTransform", dict(scale=2.0)), ("RandomElasticTransform", dict(factor=(0.1, 0.2, 0.3))),
    ("RandomElasticTransform", dict(fill_mode="x")), ("RandomElasticTransform", dict(interpolation="x")),
    ("MixUp", dict(data_format="foo")),
]


@pytest.mark.parametrize("name,kw", _BAD)
def test_bad_arguments_raise_as_keras(name, kw):
    with pytest.raises(Exception) as kerr:
        getattr(keras.layers, name)(**kw)
    with pytest.raises(kerr.type) as lerr:
        getattr(layers, name)(**kw)
    assert _set_order_free(str(lerr.value)) == _set_order_free(str(kerr.value))


def _set_order_free(message):
    """A message with each printed set's items sorted: Keras prints a Python set, whose order follows the
    per-process string hash seed."""
    return re.sub(r"\{([^{}]*)\}", lambda m: "{" + ", ".join(sorted(m.group(1).split(", "))) + "}", message)


_CONFIGS = [("MixUp", dict(alpha=0.3, seed=2)), ("CutMix", dict(factor=0.4)), ("CutMix", dict(factor=(0.7, 0.2))),
            ("RandomShear", dict(x_factor=0.2, y_factor=(0.3, 0.1), fill_mode="constant", fill_value=2.0)),
            ("RandomPerspective", dict(factor=(0.2, 0.5), scale=0.3, interpolation="nearest", seed=1)),
            ("RandomElasticTransform", dict(factor=0.6, scale=(0.1, 0.4), fill_mode="mirror",
                                            value_range=(0, 1)))]


def _plain(v):
    return [_plain(a) for a in v] if isinstance(v, (list, tuple)) else v


@pytest.mark.parametrize("name,kw", _CONFIGS)
def test_get_config_matches_keras(name, kw):
    want = getattr(keras.layers, name)(**kw).get_config()
    got = getattr(layers, name)(**kw).get_config()
    for key in set(want) - {"name", "dtype", "trainable"}:
        if name == "RandomShear" and key in ("x_factor", "y_factor"):
            # lamina writes f where Keras writes (-f, f) (which Keras cannot load back): same range
            assert layers.RandomShear(**{key: got[key]}).get_config()[key] == got[key]
            assert tuple(getattr(layers.RandomShear(**{key: got[key]}), key)) == tuple(want[key])
            assert tuple(getattr(keras.layers.RandomShear(**{key: got[key]}), key)) == tuple(want[key])
            continue
        assert _plain(got[key]) == _plain(want[key]), key
    clone = getattr(layers, name).from_config(got)
    assert _plain(clone.get_config()) == _plain(got)


@pytest.mark.parametrize("layer", [layers.MixUp(seed=1), layers.CutMix(seed=1), layers.RandomShear(0.2, 0.2, seed=1),
                                   layers.RandomPerspective(scale=0.3, seed=1),
                                   layers.RandomElasticTransform(scale=0.5, value_range=(0, 1), seed=1)],
                         ids=lambda l: type(l).__name__)
def test_layer_trains_in_fit_and_round_trips_through_keras_file(layer, tmp_path):
    x = R.uniform(0, 1, (16, 8, 8, 3)).astype(np.float32)
    y = np.eye(2, dtype=np.float32)[R.integers(0, 2, 16)]
    model = lamina.models.Sequential([lamina.layers.Input((8, 8, 3)), layer, layers.Flatten(),
                                      layers.Dense(2, activation="softmax")])
    model.compile("adam", "categorical_crossentropy")
    before = model.layers[-1].get_weights()[0].copy()
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert np.abs(model.layers[-1].get_weights()[0] - before).max() > 0
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = lamina.models.load_model(path)
    assert type(loaded.layers[0]) is type(layer)
    assert _plain(loaded.layers[0].get_config()) == _plain(layer.get_config())
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize("cls", [layers.MixUp, layers.CutMix])
def test_mix_layers_in_a_keras_style_input_pipeline(cls):
    # Keras's examples map {"images", "labels"} batches through the layer before fit (tf.data there; a
    # PyDataset here): the soft labels it returns train the model
    x = R.uniform(0, 255, (32, 8, 8, 3)).astype(np.float32)
    y = np.eye(3, dtype=np.float32)[R.integers(0, 3, 32)]
    mix, seen = cls(seed=0), []

    class Batches(lamina.utils.PyDataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            out = mix({"images": x[i * 8:(i + 1) * 8], "labels": y[i * 8:(i + 1) * 8]})
            seen.append(out["labels"].numpy())
            return out["images"], out["labels"]
    model = lamina.models.Sequential([layers.Input((8, 8, 3)), layers.Rescaling(1 / 255), layers.Flatten(),
                                      layers.Dense(3, activation="softmax")])
    model.compile("adam", "categorical_crossentropy")
    history = model.fit(Batches(), epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    labels = np.concatenate(seen)
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, atol=1e-6)
    assert ((labels > 0.01) & (labels < 0.99)).any()                 # soft, mixed labels


_FILES = [("MixUp", dict(alpha=0.3)), ("CutMix", dict(factor=0.5)), ("RandomShear", dict(x_factor=0.2, y_factor=0.1)),
          ("RandomPerspective", dict(scale=0.3)), ("RandomElasticTransform", dict(value_range=(0, 1))),
          ("RandAugment", dict(value_range=(0, 1))), ("AugMix", dict(value_range=(0, 1), all_ops=False))]


@pytest.mark.parametrize("name,kw", _FILES)
def test_keras_files_load_both_ways(policy_layers, name, kw, tmp_path):
    x = R.uniform(0, 1, (4, 8, 8, 3)).astype(np.float32)
    kmodel = keras.Sequential([keras.Input((8, 8, 3)), getattr(keras.layers, name)(**kw), keras.layers.Flatten(),
                               keras.layers.Dense(2)])
    kmodel.save(str(tmp_path / "k.keras"))
    loaded = lamina.models.load_model(str(tmp_path / "k.keras"))
    assert type(loaded.layers[0]) is getattr(layers, name)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), _np(kmodel.predict(x, verbose=0)), atol=1e-5)
    lmodel = lamina.models.Sequential([layers.Input((8, 8, 3)), getattr(layers, name)(**kw), layers.Flatten(),
                                       layers.Dense(2)])
    lmodel.save(str(tmp_path / "l.keras"))
    back = keras.models.load_model(str(tmp_path / "l.keras"))
    assert type(back.layers[0]) is getattr(keras.layers, name)
    np.testing.assert_allclose(_np(back.predict(x, verbose=0)), lmodel.predict(x, verbose=0), atol=1e-5)


# ----------------------------------------------------------------------------- gradients
def _fixed(layer, x):
    t = layer.get_random_transformation(x)
    return lambda images: layer.transform_images(images, t)


@pytest.mark.parametrize("make", [
    lambda: layers.MixUp(alpha=1.0, seed=0, dtype="float64"),
    lambda: layers.CutMix(seed=0, dtype="float64"),
    lambda: layers.RandomShear(0.4, 0.3, fill_mode="reflect", seed=0, dtype="float64"),
    lambda: layers.RandomShear(0.4, 0.3, fill_mode="constant", fill_value=2.0, seed=1, dtype="float64"),
    lambda: layers.RandomPerspective(scale=0.5, seed=0, dtype="float64"),
    lambda: layers.RandomElasticTransform(scale=(0.8, 1.0), value_range=(-10, 10), seed=0, dtype="float64"),
], ids=["MixUp", "CutMix", "RandomShear-reflect", "RandomShear-constant", "RandomPerspective",
        "RandomElasticTransform"])
def test_gradients_with_respect_to_images(make):
    x = R.uniform(-1, 1, (3, 6, 5, 2))
    check_grad(_fixed(make(), x), x)


# ----------------------------------------------------------------------------- AugMix, RandAugment
# Equalization and RandomSharpness come from lamina/layers/augmentation_color.py (another branch). Until
# they are here, the policies are built with these stand-ins, which the Keras comparisons never choose;
# they are plain objects (not Layers), so nothing joins lamina's class registry.
class _StandInEqualization:
    def __init__(self, value_range=(0, 255), name=None, **kwargs):
        self.value_range = value_range

    def __call__(self, x):
        return x


class _StandInSharpness:
    def __init__(self, factor=(0, 1), value_range=(0, 255), name=None, **kwargs):
        self._gen = None

    def _augment(self, x):
        return x


HAVE_COLOR = hasattr(layers, "Equalization") and hasattr(layers, "RandomSharpness")


@pytest.fixture
def policy_layers(monkeypatch):
    if not hasattr(layers, "Equalization"):
        monkeypatch.setattr(layers, "Equalization", _StandInEqualization, raising=False)
    if not hasattr(layers, "RandomSharpness"):
        monkeypatch.setattr(layers, "RandomSharpness", _StandInSharpness, raising=False)


@pytest.mark.parametrize("idxes", [[0, 9], [9, 0], [0, 0], [9, 9, 0]])
def test_rand_augment_matches_keras_on_its_split_layers(policy_layers, keras_brightness_without_aliasing, idxes):
    # RandomShear (index 0) has Keras's split in lamina, AutoContrast (9) is deterministic: on these the
    # composition can be compared with Keras's own transform_images, same draws
    kw = dict(num_ops=len(idxes), factor=0.6, value_range=(0, 255))
    k, l = keras.layers.RandAugment(**kw), layers.RandAugment(**kw)
    xt = _kt(X)
    kt = k.get_random_transformation(xt)
    kt["layer_idxes"] = torch.tensor(idxes, dtype=torch.int32)
    want = _np(k.transform_images(xt, kt))
    got = l.transform_images(X, kt).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-3)
    assert np.abs(want - X).max() > 1.0


def test_aug_mix_matches_keras_on_its_split_layers(policy_layers):
    kw = dict(num_chains=3, chain_depth=2, factor=0.5, alpha=0.7, value_range=(0, 255))
    k, l = keras.layers.AugMix(**kw), layers.AugMix(**kw)
    xt = _kt(X)
    shear = [keras.layers.RandomShear(0.5, 0.5).get_random_transformation(xt) for _ in range(3)]
    kt = {"chain_mixing_weights": torch.tensor([0.2, 0.5, 0.3]), "weight_sample": torch.tensor(0.35),
          "chain_transforms": [
              [{"layer_name": "random_shear", "transformation": shear[0]},
               {"layer_name": "auto_contrast", "transformation": None}],
              [],                                                     # a chain that drew 'none' twice
              [{"layer_name": "random_shear", "transformation": shear[1]},
               {"layer_name": "random_shear", "transformation": shear[2]}]]}
    want = _np(k.transform_images(xt, kt))
    np.testing.assert_allclose(l.transform_images(X, kt).numpy(), want, rtol=0, atol=1e-3)
    # and the formula, with lamina's own layers: clip(w x + (1 - w) sum_k m_k chain_k(x))
    sh, ac = layers.RandomShear(0.5, 0.5), layers.AutoContrast()
    chains = [ac(sh.transform_images(X, shear[0])).numpy(), X,
              sh.transform_images(sh.transform_images(X, shear[1]), shear[2]).numpy()]
    mixed = sum(m * c for m, c in zip([0.2, 0.5, 0.3], chains))
    np.testing.assert_allclose(l.transform_images(X, kt).numpy(), np.clip(0.35 * X + 0.65 * mixed, 0, 255),
                               rtol=1e-5, atol=1e-3)


@pytest.mark.skipif(not HAVE_COLOR, reason="Equalization / RandomSharpness are not on this branch yet")
@pytest.mark.parametrize("idxes", [[10], [6], [10, 0]])
def test_rand_augment_colour_layers_match_keras(keras_brightness_without_aliasing, idxes):
    k, l = keras.layers.RandAugment(num_ops=len(idxes)), layers.RandAugment(num_ops=len(idxes))
    xt = _kt(X)
    kt = k.get_random_transformation(xt)
    kt["layer_idxes"] = torch.tensor(idxes, dtype=torch.int32)
    np.testing.assert_allclose(l.transform_images(X, kt).numpy(), _np(k.transform_images(xt, kt)), atol=1e-3)


def test_policy_draws(policy_layers):
    r = layers.RandAugment(num_ops=3, seed=2)
    t = r.get_random_transformation(X)
    assert sorted(t["transforms"]) == sorted(keras.layers.RandAugment()._AUGMENT_LAYERS)
    assert t["layer_idxes"].shape == (3,) and np.all((t["layer_idxes"] >= 0) & (t["layer_idxes"] < 11))
    assert t["transforms"]["auto_contrast"] is None and set(t["transforms"]["random_shear"]) >= {"shear_factor"}
    # a transformation is one augmentation: applied twice it gives the same images (legacy layers too)
    for idx in range(11):
        t["layer_idxes"] = np.array([idx, idx, idx])
        np.testing.assert_array_equal(r.transform_images(X, t).numpy(), r.transform_images(X, t).numpy())
    seen = np.concatenate([layers.RandAugment(seed=s).get_random_transformation(X)["layer_idxes"]
                           for s in range(200)])
    assert set(seen) == set(range(11))
    a = layers.AugMix(num_chains=4, chain_depth=3, all_ops=False, alpha=0.5, seed=1)
    names, total = set(), 0
    for _ in range(60):
        t = a.get_random_transformation(X)
        w = t["chain_mixing_weights"]
        assert w.shape == (4,) and abs(w.sum() - 1) < 1e-6 and np.all(w >= 0) and 0 <= t["weight_sample"] <= 1
        assert len(t["chain_transforms"]) == 4 and all(len(c) <= 3 for c in t["chain_transforms"])
        names |= {s["layer_name"] for c in t["chain_transforms"] for s in c}
        total += sum(len(c) for c in t["chain_transforms"])
    assert names == set(keras.layers.AugMix(all_ops=False)._augment_layers)        # the 7 of all_ops=False
    assert abs(total / (60 * 4 * 3) - 7 / 8) < 0.07          # each step: one of 7 layers or none, uniformly


def test_policies_run_and_pass_through(policy_layers):
    x = R.uniform(0, 1, (4, 8, 8, 3)).astype(np.float32)
    for layer in (layers.RandAugment(value_range=(0, 1), num_ops=3, seed=0),
                  layers.AugMix(value_range=(0, 1), seed=0)):
        y = layer(x).numpy()
        assert y.shape == x.shape and y.dtype == np.float32 and np.all((y >= 0) & (y <= 1))
        np.testing.assert_array_equal(layer(x, training=False).numpy(), x)
        xcf = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        cf = type(layer)(value_range=(0, 1), seed=0, data_format="channels_first")
        t = cf.get_random_transformation(x)
        np.testing.assert_allclose(cf.transform_images(xcf, t).numpy().transpose(0, 2, 3, 1),
                                   layer.transform_images(x, t).numpy(), atol=1e-6)


@pytest.mark.parametrize("name,kw", [("AugMix", dict(factor=2.0)), ("RandAugment", dict(factor=2.0)),
                                     ("AugMix", dict(factor=(0.1, 0.2, 0.3)))])
def test_policy_bad_arguments_raise_as_keras(policy_layers, name, kw):
    test_bad_arguments_raise_as_keras(name, kw)


@pytest.mark.parametrize("name,kw", [("AugMix", dict(num_chains=2, chain_depth=4, factor=0.4, alpha=0.5,
                                                     all_ops=False, interpolation="nearest", seed=3)),
                                     ("RandAugment", dict(value_range=(0, 1), num_ops=3, factor=(0.2, 0.6)))])
def test_policy_get_config_matches_keras(policy_layers, name, kw):
    test_get_config_matches_keras(name, kw)


@pytest.mark.parametrize("name", ["AugMix", "RandAugment"])
def test_policy_trains_in_fit_and_round_trips(policy_layers, name, tmp_path):
    layer = getattr(layers, name)(value_range=(0, 1), seed=1)
    test_layer_trains_in_fit_and_round_trips_through_keras_file(layer, tmp_path)


def test_rand_augment_gradient_through_shear(policy_layers):
    layer = layers.RandAugment(num_ops=2, factor=0.5, seed=0, dtype="float64")
    x = R.uniform(-1, 1, (2, 6, 5, 2))
    t = layer.get_random_transformation(x)
    t["layer_idxes"] = np.array([0, 0])
    check_grad(lambda images: layer.transform_images(images, t), x)


# ----------------------------------------------------------------------------- device (fake CuPy here, CuPy with a GPU)
_DEVICE_LAYERS = {
    "MixUp": lambda: layers.MixUp(seed=1), "CutMix": lambda: layers.CutMix(seed=1),
    "RandomShear": lambda: layers.RandomShear(0.3, 0.3, seed=1),
    "RandomShear-nearest-constant": lambda: layers.RandomShear(0.3, 0.3, interpolation="nearest",
                                                               fill_mode="constant", fill_value=1.0, seed=1),
    "RandomPerspective": lambda: layers.RandomPerspective(scale=0.5, seed=1),
    "RandomElasticTransform": lambda: layers.RandomElasticTransform(value_range=(-5, 5), seed=1),
    "RandAugment": lambda: layers.RandAugment(num_ops=4, value_range=(-5, 5), seed=3),
    "AugMix": lambda: layers.AugMix(value_range=(-5, 5), seed=3),
}


def _device_run(make, x, xp, device):
    lamina.backend.set_device(device)
    t = lamina.Tensor(lamina.backend.to_device(x, xp), requires_grad=True)
    y = make()(t, training=True)
    (y * y).sum().backward()
    for a in (y.data, t.grad):
        assert lamina.backend.get_array_module(a) is xp
    return [lamina.backend.to_numpy(a) for a in (y.data, t.grad)]


@pytest.mark.parametrize("name", sorted(_DEVICE_LAYERS))
def test_layers_on_device_match_cpu(name, device_xp, policy_layers):
    x = R.uniform(-3, 3, (4, 7, 6, 3)).astype(np.float32)
    want = _device_run(_DEVICE_LAYERS[name], x, np, "cpu")
    got = _device_run(_DEVICE_LAYERS[name], x, device_xp, "cuda")
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
