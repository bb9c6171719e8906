"""CategoryEncoding, Discretization, StringLookup, IntegerLookup, colour augmentations and MelSpectrogram
(issue 14): against real Keras where Keras runs without TensorFlow, else against Keras's documented examples;
gradients of the differentiable image layers by central differences."""
import numpy as np
import pytest

from lamina import layers
from lamina.testing import check_grad

from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")
R = np.random.default_rng(7)


def _np(t):
    return keras.ops.convert_to_numpy(t)


@pytest.mark.parametrize("mode,ids", [
    ("one_hot", [3, 2, 0, 1]), ("one_hot", [[3], [2], [0]]), ("multi_hot", [[0, 1], [0, 0], [1, 2], [3, 1]]),
    ("count", [[1, 1, 3], [0, 2, 2]]),
])
def test_category_encoding_matches_keras(mode, ids):
    ids = np.asarray(ids)
    got = layers.CategoryEncoding(4, output_mode=mode)(ids)
    want = _np(keras.layers.CategoryEncoding(4, output_mode=mode)(ids))
    np.testing.assert_array_equal(got.numpy(), want)
    assert tuple(layers.CategoryEncoding(4, output_mode=mode).compute_output_shape(ids.shape)) == want.shape


def test_category_encoding_count_weights_and_range_error():
    ids, w = np.array([[1, 1, 3], [0, 2, 2]]), np.array([[0.5, 1.0, 2.0], [1.0, 0.25, 0.25]], np.float32)
    want = _np(keras.layers.CategoryEncoding(4, output_mode="count")(ids, count_weights=w))
    np.testing.assert_allclose(layers.CategoryEncoding(4, output_mode="count")(ids, count_weights=w).numpy(), want)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        layers.CategoryEncoding(4)(np.array([[4]]))


@pytest.mark.parametrize("mode", ["int", "one_hot", "multi_hot", "count"])
def test_discretization_matches_keras(mode):
    x = np.array([[-1.0, 0.0, 0.5, 1.0, 2.0], [3.0, -0.2, 1.0, 0.99, 0.0]], np.float32)
    kwargs = dict(bin_boundaries=[0.0, 1.0, 2.5], output_mode=mode)
    got = layers.Discretization(**kwargs)(x if mode != "one_hot" else x[:, :1]).numpy()
    want = _np(keras.layers.Discretization(**kwargs)(x if mode != "one_hot" else x[:, :1]))
    np.testing.assert_array_equal(got, want)


def test_discretization_adapt_documented_example():
    # Keras's adapt needs TensorFlow here; its documented example: num_bins=4 on this data gives these ids
    data = np.array([[-1.5, 1.0, 3.4, .5], [0.0, 3.0, 1.3, 0.0]])
    layer = layers.Discretization(num_bins=4, epsilon=0.01)
    layer.adapt(data)
    np.testing.assert_array_equal(layer(data).numpy(), [[0, 2, 3, 1], [1, 3, 2, 1]])
    quartiles = layers.Discretization(num_bins=4)
    quartiles.adapt(R.permutation(np.arange(1000.0)))
    assert quartiles.bin_boundaries == [250.0, 500.0, 750.0]


# Keras's documented examples (the lookups need TensorFlow inside Keras, so they cannot run here)
def test_string_lookup_documented_examples():
    vocab, data = ["a", "b", "c", "d"], np.array([["a", "c", "d"], ["d", "z", "b"]])
    np.testing.assert_array_equal(layers.StringLookup(vocabulary=vocab)(data).numpy(), [[1, 3, 4], [4, 0, 2]])
    layer = layers.StringLookup(vocabulary=vocab)
    assert layer.get_vocabulary() == ["[UNK]", "a", "b", "c", "d"] and layer.vocabulary_size() == 5
    adapted = layers.StringLookup()
    adapted.adapt(np.array([["d", "z", "b", "z"], ["c", "c", "z", "d"]]))
    assert adapted.get_vocabulary()[:2] == ["[UNK]", "z"]  # most frequent first
    two_oov = layers.StringLookup(vocabulary=vocab, num_oov_indices=2)(data).numpy()
    np.testing.assert_array_equal(np.delete(two_oov, 4), [2, 4, 5, 5, 3])
    assert two_oov[1, 1] in (0, 1)
    # Keras's documented multi-OOV example (slots from TensorFlow's Fingerprint64): "m" -> 0, "z" -> 1
    np.testing.assert_array_equal(layers.StringLookup(vocabulary=vocab, num_oov_indices=2)(
        np.array([["a", "c", "d"], ["m", "z", "b"]])).numpy(), [[2, 4, 5], [0, 1, 3]])
    from lamina.layers.hashing import fingerprint64
    words = np.array([f"word{i}" for i in range(200)])
    slots = layers.StringLookup(vocabulary=vocab, num_oov_indices=7)(words).numpy()
    np.testing.assert_array_equal(slots, fingerprint64(words).astype(np.uint64) % np.uint64(7))
    np.testing.assert_array_equal(
        layers.StringLookup(vocabulary=vocab, output_mode="one_hot")(np.array(["a", "b", "c", "d", "z"])).numpy(),
        np.eye(5)[[1, 2, 3, 4, 0]])
    np.testing.assert_array_equal(
        layers.StringLookup(vocabulary=vocab, output_mode="multi_hot")(np.array([["a", "c", "d", "d"],
                                                                                ["d", "z", "b", "z"]])).numpy(),
        [[0, 1, 0, 1, 1], [1, 0, 1, 0, 1]])
    np.testing.assert_array_equal(
        layers.StringLookup(vocabulary=vocab, output_mode="count")(np.array([["a", "c", "d", "d"],
                                                                            ["d", "z", "b", "z"]])).numpy(),
        [[0, 1, 0, 1, 2], [2, 0, 1, 0, 1]])
    tfidf = layers.StringLookup(output_mode="tf_idf", vocabulary=vocab, idf_weights=[0.25, 0.75, 0.6, 0.4])
    np.testing.assert_allclose(tfidf(np.array([["a", "c", "d", "d"], ["d", "z", "b", "z"]])).numpy(),
                               [[0, 0.25, 0, 0.6, 0.8], [1.0, 0, 0.75, 0, 0.4]])
    inverse = layers.StringLookup(vocabulary=vocab, invert=True)(np.array([[1, 3, 4], [4, 0, 2]]))
    np.testing.assert_array_equal(inverse, [["a", "c", "d"], ["d", "[UNK]", "b"]])
    masked = layers.StringLookup(vocabulary=vocab, mask_token="")
    np.testing.assert_array_equal(masked(np.array([["a", "", "z"]])).numpy(), [[2, 0, 1]])


def test_integer_lookup_documented_examples():
    vocab, data = [12, 36, 1138, 42], np.array([[12, 1138, 42], [42, 1000, 36]])
    np.testing.assert_array_equal(layers.IntegerLookup(vocabulary=vocab)(data).numpy(), [[1, 3, 4], [4, 0, 2]])
    np.testing.assert_array_equal(layers.IntegerLookup(vocabulary=vocab, num_oov_indices=2)(data).numpy(),
                                  [[2, 4, 5], [5, 0, 3]])   # 1000 % 2 == 0
    np.testing.assert_array_equal(layers.IntegerLookup(vocabulary=vocab, invert=True)(
        np.array([[1, 3, 4], [4, 0, 2]])).numpy(), [[12, 1138, 42], [42, -1, 36]])
    layer = layers.IntegerLookup()
    layer.adapt(np.array([[12, 1138, 42], [42, 1000, 36]]))
    assert layer.get_vocabulary()[:2] == [-1, 42]
    again = layers.IntegerLookup.from_config(layer.get_config())
    assert again.get_vocabulary() == layer.get_vocabulary()


def _images(n=3, h=5, w=4):
    return R.uniform(0, 255, (n, h, w, 3)).astype(np.float32)


@pytest.mark.parametrize("name,kwargs", [
    ("AutoContrast", dict()), ("AutoContrast", dict(value_range=(0, 1))),
    ("RandomGrayscale", dict(factor=1.0)), ("RandomGrayscale", dict(factor=0.0)),
    ("RandomBrightness", dict(factor=(0.2, 0.2))), ("RandomBrightness", dict(factor=(-0.3, -0.3), value_range=(0, 1))),
    ("RandomInvert", dict(factor=(1.0, 1.0))), ("Solarization", dict()),
    ("RandomColorDegeneration", dict(factor=(0.4, 0.4))), ("RandomColorDegeneration", dict(factor=(1.0, 1.0))),
    ("RandomPosterization", dict(factor=(3, 3))), ("RandomPosterization", dict(factor=(5, 5), value_range=(0, 1))),
])
def test_colour_layers_match_keras(name, kwargs):
    x = _images()
    if kwargs.get("value_range") == (0, 1):
        x = x / 255
    x[0, :, :, 1] = 7.0 * x.max() / 255  # a constant channel: AutoContrast leaves it as it is
    got = getattr(layers, name)(**kwargs)(x, training=True).numpy()
    want = _np(getattr(keras.layers, name)(**kwargs)(x, training=True))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


def test_random_colour_layers_draw_per_image_and_pass_through_at_inference():
    x = _images(200, 2, 2)
    for layer in (layers.RandomBrightness(0.3, seed=1), layers.RandomGrayscale(0.5, seed=1),
                  layers.RandomInvert(0.5, seed=1)):
        np.testing.assert_array_equal(layer(x, training=False).numpy(), x)
        y = layer(x, training=True).numpy()
        changed = np.any(np.abs(y - x) > 1e-4, axis=(1, 2, 3))
        assert 0.2 < changed.mean() < 1.0 or isinstance(layer, layers.RandomBrightness), type(layer).__name__
    post = layers.RandomPosterization(4, seed=3)(x, training=True).numpy()   # 1 to 3 bits kept, per image
    steps = [next(s for s in (128, 64, 32) if np.all(np.mod(img, s) == 0)) for img in post]
    assert set(steps) == {128, 64, 32}
    np.testing.assert_array_equal(post, np.floor(np.floor(x) / np.reshape(steps, (-1, 1, 1, 1)))
                                  * np.reshape(steps, (-1, 1, 1, 1)))
    y = layers.RandomInvert(0.5, seed=2)(x, training=True).numpy()
    assert np.all(np.isclose(y, x, atol=1e-3) | np.isclose(y, 255 - x, atol=1e-3))
    sol = layers.Solarization(threshold_factor=(0.0, 0.5), seed=1)
    np.testing.assert_array_equal(sol(x, training=False).numpy(), x)
    y = sol(x, training=True).numpy()
    flipped = np.isclose(y, 255 - x, atol=1e-3) & ~np.isclose(y, x, atol=1e-3)
    assert np.all(flipped | np.isclose(y, x, atol=1e-3))
    # within an image, every flipped pixel is at least as bright as every kept one (one threshold per image)
    bright_kept = np.where(flipped, -np.inf, x).max(axis=(1, 2, 3))
    dim_flipped = np.where(flipped, x, np.inf).min(axis=(1, 2, 3))
    assert np.all(bright_kept <= dim_flipped)
    assert flipped.mean(axis=(1, 2, 3)).std() > 0.05   # thresholds drawn per image


@pytest.mark.parametrize("layer", [layers.AutoContrast(), layers.RandomGrayscale(1.0),
                                   layers.RandomColorDegeneration((0.3, 0.3)),
                                   layers.RandomBrightness((0.1, 0.1))])
def test_colour_layer_gradients(layer):
    x = R.permutation(np.linspace(10, 200, 2 * 3 * 3 * 3)).reshape(2, 3, 3, 3)
    check_grad(lambda t: layer(t, training=True), x, name=type(layer).__name__)


@pytest.mark.parametrize("kwargs,n", [
    (dict(), 16000),
    (dict(fft_length=512, sequence_stride=160, sequence_length=400, num_mel_bins=40, sampling_rate=16000,
          min_freq=60.0, max_freq=7600.0), 8000),
    (dict(fft_length=256, sequence_stride=100, power_to_db=False, mag_exp=1.0, window="hamming"), 3000),
    (dict(fft_length=256, sequence_stride=64, top_db=20.0, ref_power=10.0, window=None), 2000),
])
def test_mel_spectrogram_matches_keras(kwargs, n):
    audio = (R.standard_normal((2, n)) * np.sin(np.arange(n) / 40.0)).astype(np.float32)
    got = layers.MelSpectrogram(**kwargs)(audio).numpy()
    want = _np(keras.layers.MelSpectrogram(**kwargs)(audio))
    assert got.shape == want.shape == tuple(layers.MelSpectrogram(**kwargs).compute_output_shape(audio.shape))
    scale = np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * scale)
    cfg = layers.MelSpectrogram(**kwargs).get_config()
    kcfg = keras.layers.MelSpectrogram(**kwargs).get_config()
    for key in ("fft_length", "sequence_stride", "window", "sampling_rate", "num_mel_bins", "min_freq",
                "power_to_db", "top_db", "mag_exp", "min_power", "ref_power"):
        assert cfg[key] == kcfg[key], key


@pytest.mark.parametrize("shape,target", [((2, 6, 8, 3), (6, 4)), ((2, 4, 5, 3), (6, 6)), ((1, 5, 5, 2), (5, 5))])
def test_random_crop_deterministic_paths_match_keras(shape, target):
    x = R.uniform(0, 255, shape).astype(np.float32)
    got = layers.RandomCrop(*target)(x, training=True).numpy()
    want = _np(keras.layers.RandomCrop(*target)(x, training=True))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-3)


def test_random_crop_takes_a_window_of_the_batch():
    x = R.uniform(0, 255, (3, 9, 7, 2)).astype(np.float32)
    layer = layers.RandomCrop(4, 3, seed=5)
    offsets = set()
    for _ in range(20):
        y = layer(x, training=True).numpy()
        assert y.shape == (3, 4, 3, 2)
        hits = [(i, j) for i in range(6) for j in range(5) if np.array_equal(x[:, i:i + 4, j:j + 3], y)]
        assert len(hits) == 1
        offsets.add(hits[0])
    assert len(offsets) > 3
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x)   # Keras 3.15: unchanged at inference
    check_grad(lambda t: layers.RandomCrop(5, 5)(t, training=True), R.standard_normal((1, 3, 4, 2)))


def test_adapted_discretization_config_loads_back(tmp_path):
    """An adapted layer's config holds num_bins and the learnt bin_boundaries (Keras's too); from_config made
    the layer with both and refused it ("not both"), so a model with one did not load from its file."""
    import lamina
    from lamina import layers as L
    layer = L.Discretization(num_bins=3)
    layer.adapt(np.arange(1.0, 10.0))
    config = layer.get_config()
    assert config["num_bins"] == 3 and config["bin_boundaries"] == [4.0, 7.0]
    again = L.Discretization.from_config(config)
    assert again.bin_boundaries == [4.0, 7.0] and again.num_bins == 3
    x = np.array([[0.5, 4.0, 6.9, 7.0, 100.0]])
    np.testing.assert_array_equal(again(x).numpy(), layer(x).numpy())
    with pytest.raises(ValueError, match="must be sorted"):
        L.Discretization.from_config(dict(config, bin_boundaries=[7.0, 4.0]))
    model = lamina.Sequential([lamina.Input((5,)), layer])
    model.save(tmp_path / "d.keras")
    np.testing.assert_array_equal(lamina.models.load_model(tmp_path / "d.keras").predict(x, verbose=0),
                                  model.predict(x, verbose=0))


def test_lookup_vocabulary_ties_follow_keras():
    """Keras ranks an adapted vocabulary by count, ties by the token itself, higher first
    (np.lexsort((tokens, counts))[::-1] in its index_lookup); lamina broke ties by first appearance, so equal
    counts gave other one-hot positions than Keras."""
    s = layers.StringLookup()
    s.adapt(np.array(["b", "a", "c", "a", "b", "d"]))
    assert s.get_vocabulary() == ["[UNK]", "b", "a", "d", "c"]
    i = layers.IntegerLookup()
    i.adapt(np.array([3, 1, 2, 1, 3, 5]))
    assert i.get_vocabulary() == [-1, 3, 1, 5, 2]


@pytest.mark.parametrize("vocabulary", [["a", "b"], [1.5, 2.0], [b"7"]])
def test_integer_lookup_names_itself_when_given_tokens_that_are_not_integers(vocabulary):
    """A string (or fractional) vocabulary is a mistake worth a message that says which layer and what to use
    (it was Python's "invalid literal for int() with base 10: 'a'"); integral floats still count as integers."""
    with pytest.raises(ValueError, match="IntegerLookup .* must be integers .*StringLookup"):
        layers.IntegerLookup(vocabulary=vocabulary)
    lookup = layers.IntegerLookup(vocabulary=[3.0, 7.0])
    np.testing.assert_array_equal(lookup(np.array([7, 3, 5])).numpy(), [2, 1, 0])
