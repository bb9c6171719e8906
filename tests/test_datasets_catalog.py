"""imdb, reuters, boston_housing, california_housing and cifar100 with Keras's load_data signatures, on small
fixture files written in the published formats (numpy .npz with pickled object arrays; the CIFAR-100 binary
tarball), compared with real Keras's loaders on the same files. The restricted pickle reader is fuzzed."""
import io
import os
import struct
import tarfile

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

os.environ.setdefault("KERAS_BACKEND", "torch")

from lamina import datasets  # noqa: E402
from lamina.datasets import _intpickle, _npz  # noqa: E402
from lamina.datasets._intpickle import UnsafePickleError, read_int_sequences  # noqa: E402

rng = np.random.default_rng(0)


def _ragged(n, vocab=60, max_len=12):
    out = np.empty(n, dtype=object)
    for i in range(n):
        out[i] = [int(v) for v in rng.integers(1, vocab, rng.integers(1, max_len))]
    return out


@pytest.fixture
def files(tmp_path, monkeypatch):
    """Fixture .npz files in the published layouts; lamina's and Keras's downloads both return them."""
    paths = {}
    paths["imdb.npz"] = str(tmp_path / "imdb.npz")
    np.savez(paths["imdb.npz"], x_train=_ragged(30), y_train=rng.integers(0, 2, 30),
             x_test=_ragged(20), y_test=rng.integers(0, 2, 20))
    paths["reuters.npz"] = str(tmp_path / "reuters.npz")
    np.savez(paths["reuters.npz"], x=_ragged(40), y=rng.integers(0, 46, 40))
    paths["boston_housing.npz"] = str(tmp_path / "boston_housing.npz")
    np.savez(paths["boston_housing.npz"], x=rng.normal(size=(50, 13)), y=rng.normal(size=50))
    paths["california_housing.npz"] = str(tmp_path / "california_housing.npz")
    np.savez(paths["california_housing.npz"], x=rng.normal(size=(700, 8)).astype(np.float32),
             y=rng.normal(size=700).astype(np.float32))
    monkeypatch.setattr(_npz, "get_file", lambda fname, *a, **k: paths[fname])
    return paths


def _keras_with(monkeypatch, module, paths):
    keras = pytest.importorskip("keras")
    import importlib
    mod = importlib.import_module(f"keras.src.datasets.{module}")
    monkeypatch.setattr(mod, "get_file", lambda fname=None, *a, **k: paths[k.get("fname", fname)])
    return mod


def _same(ours, ref):
    (a, b), (c, d) = ours
    (e, f), (g, h) = ref
    for x, y in ((a, e), (c, g)):
        assert len(x) == len(y)
        assert [list(s) for s in x] == [list(s) for s in y]
    np.testing.assert_array_equal(b, f)
    np.testing.assert_array_equal(d, h)


@pytest.mark.parametrize("kw", [{}, {"num_words": 30, "skip_top": 2}, {"maxlen": 8, "seed": 7},
                                {"start_char": None, "oov_char": None, "index_from": 0, "num_words": 20}])
def test_imdb_matches_keras(files, monkeypatch, kw):
    mod = _keras_with(monkeypatch, "imdb", files)
    _same(datasets.imdb.load_data(**kw), mod.load_data(**kw))


@pytest.mark.parametrize("kw", [{}, {"num_words": 25, "test_split": 0.3}, {"maxlen": 9, "seed": 3, "skip_top": 5}])
def test_reuters_matches_keras(files, monkeypatch, kw):
    mod = _keras_with(monkeypatch, "reuters", files)
    _same(datasets.reuters.load_data(**kw), mod.load_data(**kw))
    assert len(datasets.reuters.get_label_names()) == 46


@pytest.mark.parametrize("name,kw", [("boston_housing", {}), ("boston_housing", {"test_split": 0.4, "seed": 1}),
                                     ("california_housing", {}), ("california_housing", {"version": "small"})])
def test_housing_matches_keras(files, monkeypatch, name, kw):
    mod = _keras_with(monkeypatch, name, files)
    ours, ref = getattr(datasets, name).load_data(**kw), mod.load_data(**kw)
    for a, b in zip(ours, ref):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
            assert x.dtype == y.dtype
    with pytest.raises(ValueError, match="test_split"):
        getattr(datasets, name).load_data(test_split=1.0)


def test_cifar100_binary_tarball(tmp_path):
    n = {"train": 5, "test": 3}
    truth = {}
    path = tmp_path / "cifar-100-binary.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for split, k in n.items():
            img = rng.integers(0, 256, (k, 32, 32, 3), dtype=np.uint8)
            coarse = rng.integers(0, 20, k, dtype=np.uint8)
            fine = rng.integers(0, 100, k, dtype=np.uint8)
            truth[split] = (img, coarse, fine)
            rec = np.concatenate([coarse[:, None], fine[:, None], img.transpose(0, 3, 1, 2).reshape(k, -1)], axis=1)
            data = rec.astype(np.uint8).tobytes()
            info = tarfile.TarInfo(f"cifar-100-binary/{split}.bin")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    for mode, col in (("fine", 2), ("coarse", 1)):
        (xtr, ytr), (xte, yte) = datasets.cifar100.from_archive(str(path), mode)
        np.testing.assert_array_equal(xtr, truth["train"][0])
        np.testing.assert_array_equal(ytr[:, 0], truth["train"][col])
        np.testing.assert_array_equal(xte, truth["test"][0])
        assert ytr.shape == (5, 1) and yte.shape == (3, 1) and xtr.dtype == np.uint8
    with pytest.raises(ValueError, match="label_mode"):
        datasets.cifar100.load_data("medium")


# ------------------------------------------------------------------ the restricted reader
def _object_array_stream(seqs):
    a = np.empty(len(seqs), dtype=object)
    for i, s in enumerate(seqs):
        a[i] = s
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=True)
    raw = buf.getvalue()
    hl = struct.unpack("<H", raw[8:10])[0]
    return raw[10 + hl:]


def test_reader_parses_numpy_object_arrays_and_big_ints():
    seqs = [[1, 2, 3], [], [2 ** 40, -5, 255, 256, 65535, 65536]]
    assert read_int_sequences(_object_array_stream(seqs)) == seqs


@pytest.mark.parametrize("stream", [
    b"cos\nsystem\n(S'echo pwned'\ntR.",                                   # GLOBAL os.system + REDUCE
    b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c\x02hi\x85R.",               # STACK_GLOBAL os.system
    b"\x80\x02cnumpy\nndarray\n)R.",                                        # REDUCE on ndarray itself
    b"\x80\x02}q\x00.",                                                     # a dict
    b"\x80\x02]q\x00G?\xf0\x00\x00\x00\x00\x00\x00a.",                      # a float in a list
    b"\x80\x02(cbuiltins\neval\nS'1'\no.",                                  # OBJ
    b"\x80\x02]q\x00(K\x01K\x02e",                                          # truncated (no STOP)
    b"\x80\x02]q\x00.extra",                                                # data after STOP
])
def test_reader_refuses_everything_else(stream):
    with pytest.raises(UnsafePickleError):
        read_int_sequences(stream)


_BASE = _object_array_stream([[1, 2, 3], [40, 5], [7]])
_PLAIN = b"\x80\x02]q\x00(]q\x01(K\x01K\x02e]q\x02K\x03ae."


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(base=st.sampled_from([_BASE, _PLAIN]), edits=st.lists(
    st.tuples(st.integers(0, 10 ** 6), st.integers(0, 255), st.sampled_from(["set", "insert", "delete"])),
    min_size=1, max_size=6))
def test_fuzzed_streams_parse_to_int_lists_or_raise_the_documented_error(base, edits):
    data = bytearray(base)
    for pos, byte, kind in edits:
        if not data:
            break
        i = pos % len(data)
        if kind == "set":
            data[i] = byte
        elif kind == "insert":
            data.insert(i, byte)
        else:
            del data[i]
    try:
        out = read_int_sequences(bytes(data))
    except UnsafePickleError:
        return
    assert isinstance(out, list)
    assert all(isinstance(s, list) and all(type(v) is int for v in s) for s in out)


def test_reader_module_never_imports_pickle():
    src = open(_intpickle.__file__).read() + open(_npz.__file__).read()
    assert "import pickle" not in src and "allow_pickle=True" not in src and "pickle.loads" not in src
