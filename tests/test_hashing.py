"""Hashing and HashedCrossing. Real Keras cannot run them here (they need TensorFlow), so the bins are
checked on Keras's own documented examples (its docstrings' outputs, which TensorFlow computed), and
the hashes against independent implementations: Google's FarmHash (pyfarmhash) and a C SipHash-2-4
(siphash24), whose values tests/data/make_hash_vectors.py stored, plus the SipHash paper's vector."""
import json
import os

import numpy as np
import pytest

import lamina
from lamina import layers
from lamina.layers.hashing import CROSS_HASH_KEY, fingerprint64, fingerprint_cat64, siphash24

DATA = os.path.join(os.path.dirname(__file__), "data", "hash_vectors.json")
LETTERS = [["A"], ["B"], ["C"], ["D"], ["E"]]


# ---------------------------------------------------------------------- Keras's documented examples
@pytest.mark.parametrize("kwargs, inputs, want", [
    (dict(num_bins=3), LETTERS, [1, 0, 1, 1, 2]),                                     # FarmHash64
    (dict(num_bins=3, mask_value=""), [["A"], ["B"], [""], ["C"], ["D"]], [1, 1, 0, 2, 2]),
    (dict(num_bins=3, salt=[133, 137]), LETTERS, [1, 2, 1, 0, 2]),                      # SipHash64
    (dict(num_bins=3, salt=133), LETTERS, [0, 0, 2, 1, 0]),                             # = salt [133, 133]
])
def test_hashing_keras_docstring_examples(kwargs, inputs, want):
    out = layers.Hashing(**kwargs)(inputs)
    assert out.shape == (5, 1) and out.dtype == np.int64
    assert out.numpy().ravel().tolist() == want


def test_hashed_crossing_keras_docstring_examples():
    feat1 = np.array(["A", "B", "A", "B", "A"])
    feat2 = np.array([101, 101, 101, 102, 102])
    out = layers.HashedCrossing(num_bins=5)((feat1, feat2))
    assert out.dtype == np.int64 and out.numpy().tolist() == [1, 4, 1, 1, 3]
    hot = layers.HashedCrossing(num_bins=5, output_mode="one_hot")((feat1, feat2))
    assert hot.dtype == np.float32
    np.testing.assert_array_equal(hot.numpy(), np.eye(5, dtype="float32")[[1, 4, 1, 1, 3]])


# ------------------------------------------------------------------- hashes vs independent references
@pytest.fixture(scope="module")
def vectors():
    with open(DATA) as f:
        d = json.load(f)
    return np.array([bytes.fromhex(h) for h in d["values_hex"]], dtype=object), d


def test_fingerprint64_matches_google_farmhash(vectors):
    values, d = vectors
    lengths = {len(v) for v in values}
    assert {0, 1, 3, 4, 7, 8, 16, 17, 32, 33, 64, 65, 128, 129, 4097} <= lengths   # every branch and its edges
    want = np.array([int(x) for x in d["fingerprint64"]], np.uint64)
    got = fingerprint64(values)
    assert got.dtype == np.uint64
    np.testing.assert_array_equal(got, want)
    # one value at a time gives the same (the batch's width and branches do not leak between rows)
    for i in (0, 5, 40, 100, len(values) - 1):
        assert fingerprint64(values[i:i + 1])[0] == want[i]


def test_siphash24_matches_reference_and_paper(vectors):
    values, d = vectors
    for key, want in d["siphash24"].items():
        k = [int(x) for x in key.split(",")]
        np.testing.assert_array_equal(siphash24(values, k), np.array([int(x) for x in want], np.uint64))
    # Aumasson & Bernstein, "SipHash: a fast short-input PRF", appendix A: key 00..0f, message 00..0e
    key = (int.from_bytes(bytes(range(8)), "little"), int.from_bytes(bytes(range(8, 16)), "little"))
    assert int(siphash24([bytes(range(15))], key)[0]) == 0xA129CA6149BE45E5


def test_live_reference_packages_when_installed():
    farmhash = pytest.importorskip("farmhash")
    rng = np.random.default_rng(0)
    words = ["".join(chr(c) for c in rng.integers(32, 0x3000, n)) for n in rng.integers(0, 150, 200)]
    np.testing.assert_array_equal(fingerprint64(words), [farmhash.fingerprint64(w.encode()) for w in words])


def test_strings_are_hashed_as_utf8_in_any_container():
    words = ["héllo", "日本", "", "plain"]
    want = fingerprint64(np.array([w.encode() for w in words], dtype=object))
    for form in (words, np.array(words), np.array(words, dtype=object), lamina.Tensor(np.array(words, dtype=object))):
        np.testing.assert_array_equal(layers.Hashing(2 ** 31 - 1)(form).numpy(), (want % np.uint64(2 ** 31 - 1)))
    assert layers.Hashing(7)("A").shape == ()


def test_fingerprint_cat64_on_tensorflow_formula():
    """FingerprintCat64 in plain Python ints (mod 2**64) against the vectorised uint64 version."""
    m, kmul = (1 << 64) - 1, 0xC6A4A7935BD1E995

    def mix(v):
        return v ^ (v >> 47)

    def cat(a, b):
        r = a ^ kmul
        r ^= (mix((b * kmul) & m) * kmul) & m
        r = (r * kmul) & m
        r = (mix(r) * kmul) & m
        return mix(r)
    rng = np.random.default_rng(1)
    a, b = (rng.integers(0, 2 ** 63, 50, dtype=np.uint64) * np.uint64(2) + np.uint64(1) for _ in range(2))
    np.testing.assert_array_equal(fingerprint_cat64(a, b), [cat(int(x), int(y)) for x, y in zip(a, b)])


# --------------------------------------------------------------------------------- Hashing behaviour
def test_integers_are_hashed_as_their_decimal_text_and_floats_truncated():
    ints = np.array([[0, 7, -12], [101, 2 ** 40, -1]])
    text = np.array([[str(v) for v in row] for row in ints.tolist()])
    for salt in (None, 9):
        a = layers.Hashing(1000, salt=salt)(ints).numpy()
        np.testing.assert_array_equal(a, layers.Hashing(1000, salt=salt)(text).numpy())
    np.testing.assert_array_equal(layers.Hashing(1000)(np.array([1.7, -2.5, 3.0])).numpy(),
                                  layers.Hashing(1000)(np.array([1, -2, 3])).numpy())


def test_mask_value_takes_bin_zero_and_shifts_the_rest():
    x = np.array([[3, 0, 5], [0, 9, 3]])
    plain = fingerprint64(x.astype(str))
    out = layers.Hashing(4, mask_value=0)(x).numpy()
    np.testing.assert_array_equal(out, np.where(x == 0, 0, (plain % np.uint64(3)).astype(np.int64) + 1))
    # with a single bin there is no room for a mask bin: everything is 0, as in Keras
    np.testing.assert_array_equal(layers.Hashing(1, mask_value=0)(x).numpy(), 0)


@pytest.mark.parametrize("mode", ["one_hot", "multi_hot", "count"])
def test_output_modes(mode):
    x = np.array([["A", "B", "A"], ["C", "C", "C"]])
    ids = layers.Hashing(6)(x).numpy()
    layer = layers.Hashing(6, output_mode=mode)
    out = layer(x).numpy()
    assert out.dtype == np.float32
    hot = np.eye(6, dtype="float32")[ids]               # (2, 3, 6)
    want = {"one_hot": hot, "multi_hot": (hot.sum(1) > 0).astype("float32"), "count": hot.sum(1)}[mode]
    np.testing.assert_array_equal(out, want)
    assert layer.compute_output_shape((2, 3)) == want.shape
    col = layers.Hashing(6, output_mode="one_hot")(x[:, :1])
    assert col.shape == (2, 6)                           # a last axis of 1 is replaced, as Keras


def test_int_output_dtype_follows_dtype_argument():
    assert layers.Hashing(5, dtype="int32")(LETTERS).dtype == np.int32
    with pytest.raises(ValueError, match="integer type"):
        layers.Hashing(5, dtype="float32")


def test_hashing_errors():
    with pytest.raises(ValueError, match="num_bins"):
        layers.Hashing(0)
    with pytest.raises(ValueError, match="output_mode"):
        layers.Hashing(3, output_mode="tf_idf")
    with pytest.raises(ValueError, match="sparse"):
        layers.Hashing(3, sparse=True)
    with pytest.raises(ValueError, match="sparse"):
        layers.Hashing(3, output_mode="one_hot", sparse=True)
    with pytest.raises(ValueError, match="salt"):
        layers.Hashing(3, salt=[1, 2, 3])
    with pytest.raises(ValueError, match="strings or numbers"):
        layers.Hashing(3)(np.array([True, False]))


# -------------------------------------------------------------------------- HashedCrossing behaviour
def _cross_reference(features, bins):
    """tf.sparse.cross_hashed by its definition, one row at a time in Python ints."""
    out = []
    for row in zip(*features):
        h = np.uint64(CROSS_HASH_KEY)
        for v in row:
            f = fingerprint64([v])[0] if isinstance(v, str) else np.int64(v).view(np.uint64)
            h = fingerprint_cat64(h, f)
        out.append(int(h) % bins)
    return out


@pytest.mark.parametrize("shape", [(6,), (6, 1)])
def test_hashed_crossing_three_features_and_shapes(shape):
    rng = np.random.default_rng(3)
    a = rng.integers(-5, 5, 6)
    b = np.array(["x", "y", "x", "zz", "", "y"])
    c = rng.integers(0, 2 ** 40, 6)
    layer = layers.HashedCrossing(7)
    out = layer((a.reshape(shape), b.reshape(shape), c.reshape(shape)))
    assert out.shape == shape and out.dtype == np.int64
    np.testing.assert_array_equal(out.numpy().ravel(), _cross_reference([a.tolist(), b.tolist(), c.tolist()], 7))
    hot = layers.HashedCrossing(7, output_mode="one_hot")((a.reshape(shape), b.reshape(shape)))
    assert hot.shape == (6, 7) == layers.HashedCrossing(7, output_mode="one_hot").compute_output_shape([shape, shape])
    # a scalar cross
    s = layers.HashedCrossing(7)((np.array("A"), np.array(101)))
    assert s.shape == () and int(s.numpy()) == _cross_reference([["A"], [101]], 7)[0]


def test_hashed_crossing_order_matters_and_errors():
    a, b = np.array(["A", "B"]), np.array(["B", "A"])
    layer = layers.HashedCrossing(1 << 30)
    assert layer((a, b)).numpy().tolist() != layer((b, a)).numpy().tolist()
    with pytest.raises(ValueError, match="list or tuple"):
        layer(a)
    with pytest.raises(ValueError, match="at least two"):
        layer((a,))
    with pytest.raises(ValueError, match="equal shape"):
        layer((a, np.array(["A"])))
    with pytest.raises(ValueError, match=r"\(batch_size, 1\)"):
        layer((np.zeros((2, 3), int), np.zeros((2, 3), int)))
    with pytest.raises(ValueError, match="integer or string"):
        layer((a, np.array([0.5, 1.5])))
    with pytest.raises(ValueError, match="output_mode"):
        layers.HashedCrossing(3, output_mode="multi_hot")
    with pytest.raises(ValueError, match="sparse"):
        layers.HashedCrossing(3, output_mode="one_hot", sparse=True)


# ------------------------------------------------------------------------------------ serialisation
def test_config_and_keras_file_round_trip(tmp_path):
    h = layers.Hashing(11, mask_value=0, salt=5, output_mode="one_hot")
    cfg = h.get_config()
    # Keras's Hashing.get_config keys (keras/src/layers/preprocessing/hashing.py), the salt as its pair
    assert {"num_bins", "salt", "mask_value", "output_mode", "sparse"} <= set(cfg) and cfg["salt"] == [5, 5]
    assert layers.Hashing.from_config(cfg).get_config() == cfg
    c = layers.HashedCrossing(9, output_mode="one_hot")
    assert {"num_bins", "output_mode", "sparse", "name", "dtype"} <= set(c.get_config())
    assert layers.HashedCrossing.from_config(c.get_config()).get_config() == c.get_config()

    lamina.utils.set_random_seed(0)
    model = lamina.Sequential([lamina.Input((3,), dtype="int64"),
                               layers.Hashing(11, salt=[3, 4], output_mode="multi_hot"), layers.Dense(2)])
    x = np.array([[1, 2, 3], [4, 5, 5], [0, 0, 7]])
    want = model.predict(x, verbose=0)
    model.save(tmp_path / "h.keras")
    back = lamina.models.load_model(tmp_path / "h.keras")
    assert back.layers[0].salt == [3, 4] and back.layers[0].output_mode == "multi_hot"
    np.testing.assert_allclose(back.predict(x, verbose=0), want, rtol=1e-6)


def test_outputs_land_on_the_device(device_xp):
    words = np.array([["A", "B"], ["C", ""]])
    want = layers.Hashing(5, output_mode="count").call(words).numpy()   # computed on the CPU strings either way
    for layer, x in ((layers.Hashing(5, output_mode="count"), words),
                     (layers.HashedCrossing(5), (words[:, 0], np.array([1, 2])))):
        out = layer(x)
        assert lamina.backend.get_array_module(out.data) is device_xp
    np.testing.assert_array_equal(lamina.backend.to_numpy(layers.Hashing(5, output_mode="count")(words).data), want)
