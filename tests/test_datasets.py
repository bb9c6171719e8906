"""Data: bundled digits, downloadable sets against fixture files on a loopback HTTP server, batching, utils."""
import gzip
import hashlib
import http.server
import io
import socket
import struct
import tarfile
import threading

import numpy as np
import pytest

import lamina
from lamina.data import batches, num_batches
from lamina.datasets import cifar10, digits, fashion_mnist, mnist
from lamina.utils import data_utils
from lamina.utils import normalize, pad_sequences, split_dataset, to_categorical


# ------------------------------------------------------------------------------------------ digits
def test_digits_bundled_split():
    (x_train, y_train), (x_test, y_test) = digits.load_data()
    assert x_train.shape == (1437, 8, 8) and x_test.shape == (360, 8, 8)
    assert y_train.shape == (1437,) and y_test.shape == (360,)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.uint8
    assert x_train.max() == 16 and x_train.min() == 0
    assert set(np.unique(y_test)) == set(range(10))
    # Stratified: every class has 35..37 test samples (20% of 174..183).
    assert np.bincount(y_test).min() >= 35 and np.bincount(y_test).max() <= 37
    # Fixed: two loads give the same split, and train and test are disjoint rows of the 1,797.
    (x2, _), _ = digits.load_data()
    assert np.array_equal(x_train, x2)
    images, labels, test_index = digits.load_all()
    assert images.shape == (1797, 8, 8) and len(np.unique(test_index)) == 360
    assert np.array_equal(images[test_index], x_test) and np.array_equal(labels[test_index], y_test)


def test_digits_match_sklearn():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    d = sklearn_datasets.load_digits()
    images, labels, _ = digits.load_all()
    assert np.array_equal(images, d.images) and np.array_equal(labels, d.target)


# ------------------------------------------------------------------------------- fixture formats
def idx_bytes(array):
    codes = {np.dtype(np.uint8): 0x08}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.tobytes())


def cifar_tar_bytes(batches_, folder="cifar-10-batches-bin/"):
    """A .tar.gz laid out like cifar-10-binary.tar.gz, from {member: (images NHWC uint8, labels uint8)}."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, (x, y) in batches_.items():
            records = np.concatenate([y.reshape(-1, 1), x.transpose(0, 3, 1, 2).reshape(len(x), -1)], axis=1)
            data = records.astype(np.uint8).tobytes()
            info = tarfile.TarInfo(folder + name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        meta = b"airplane\nautomobile\n"
        info = tarfile.TarInfo(folder + "batches.meta.txt")
        info.size = len(meta)
        tar.addfile(info, io.BytesIO(meta))
    return buf.getvalue()


def sha(b):
    return hashlib.sha256(b).hexdigest()


class Server:
    """A loopback HTTP server over an in-memory {path: bytes}. Honours Range; can cut a response short."""

    def __init__(self, files):
        self.files = dict(files)
        self.requests = []          # (path, Range header)
        self.cut_next = set()       # paths whose next response is cut in the middle
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                if self.path in server.cut_next:
                    server.cut_next.discard(self.path)
                    self.wfile.write(body[start:start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        # shutdown() waits for serve_forever's next poll: 0.5 s by default, for each test
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMINA_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(data_utils.time, "sleep", lambda s: None)
    return tmp_path / "home"


def small_idx_set(rng):
    x_train = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    y_train = rng.integers(0, 10, 6, dtype=np.uint8)
    x_test = rng.integers(0, 256, (3, 28, 28), dtype=np.uint8)
    y_test = rng.integers(0, 10, 3, dtype=np.uint8)
    files = {"train-images-idx3-ubyte.gz": idx_bytes(x_train), "train-labels-idx1-ubyte.gz": idx_bytes(y_train),
             "t10k-images-idx3-ubyte.gz": idx_bytes(x_test), "t10k-labels-idx1-ubyte.gz": idx_bytes(y_test)}
    return (x_train, y_train, x_test, y_test), files


@pytest.mark.parametrize("module,subdir", [(mnist, "mnist"), (fashion_mnist, "fashion_mnist")])
def test_idx_datasets_download_verify_and_cache(module, subdir, home, rng, monkeypatch):
    expected, files = small_idx_set(rng)
    with Server({"/" + k: v for k, v in files.items()}) as srv:
        monkeypatch.setattr(module, "ORIGINS", [srv.url])
        monkeypatch.setattr(module, "FILES", {k: sha(v) for k, v in files.items()})
        (x_train, y_train), (x_test, y_test) = module.load_data()
        for got, want in zip((x_train, y_train, x_test, y_test), expected):
            assert got.dtype == np.uint8 and np.array_equal(got, want)
        assert (home / "datasets" / subdir / "train-images-idx3-ubyte.gz").exists()
        assert not list((home / "datasets" / subdir).glob("*.part"))
        n = len(srv.requests)
        module.load_data()                 # cached: no new request
        assert len(srv.requests) == n


def test_mnist_real_checksums_are_recorded():
    assert mnist.FILES["train-images-idx3-ubyte.gz"].startswith("440fcabf")
    assert cifar10.SHA256.startswith("c4a38c50")
    assert all(len(v) == 64 for v in list(mnist.FILES.values()) + list(fashion_mnist.FILES.values()))


def test_cifar10_binary_fixture(home, rng, monkeypatch):
    data = {f"data_batch_{i}.bin": (rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8),
                                    rng.integers(0, 10, 2, dtype=np.uint8)) for i in range(1, 6)}
    data["test_batch.bin"] = (rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8), np.array([0, 9, 4], np.uint8))
    blob = cifar_tar_bytes(data)
    with Server({"/cifar-10-binary.tar.gz": blob}) as srv:
        monkeypatch.setattr(cifar10, "ORIGINS", [srv.url])
        monkeypatch.setattr(cifar10, "SHA256", sha(blob))
        (x_train, y_train), (x_test, y_test) = cifar10.load_data()
    assert x_train.shape == (10, 32, 32, 3) and y_train.shape == (10, 1) and y_train.dtype == np.uint8
    assert np.array_equal(x_train[:2], data["data_batch_1.bin"][0])
    assert np.array_equal(x_train[8:], data["data_batch_5.bin"][0])
    assert np.array_equal(x_test, data["test_batch.bin"][0]) and y_test.ravel().tolist() == [0, 9, 4]


def test_cifar10_rejects_foreign_archive(home, monkeypatch):
    blob = cifar_tar_bytes({"data_batch_1.bin": (np.zeros((1, 32, 32, 3), np.uint8), np.zeros(1, np.uint8))})
    with Server({"/cifar-10-binary.tar.gz": blob}) as srv:
        monkeypatch.setattr(cifar10, "ORIGINS", [srv.url])
        monkeypatch.setattr(cifar10, "SHA256", sha(blob))
        with pytest.raises(ValueError, match="lacks .*data_batch_2.bin"):
            cifar10.load_data()


def test_corrupt_download_is_deleted_and_reported(home, rng, monkeypatch):
    _, files = small_idx_set(rng)
    with Server({"/" + k: v for k, v in files.items()}) as srv:
        monkeypatch.setattr(mnist, "ORIGINS", [srv.url])
        bad = {k: sha(v) for k, v in files.items()}
        bad["train-images-idx3-ubyte.gz"] = "0" * 64
        monkeypatch.setattr(mnist, "FILES", bad)
        with pytest.raises(data_utils.DownloadError, match="corrupt: SHA-256 .*deleted"):
            mnist.load_data()
    folder = home / "datasets" / "mnist"
    assert not (folder / "train-images-idx3-ubyte.gz").exists()
    assert not (folder / "train-images-idx3-ubyte.gz.part").exists()


def test_cached_file_with_wrong_hash_is_fetched_again(home):
    good = b"payload" * 100
    folder = home / "datasets" / "x"
    folder.mkdir(parents=True)
    (folder / "f.bin").write_bytes(b"tampered")
    with Server({"/f.bin": good}) as srv:
        path = data_utils.get_file("f.bin", srv.url + "f.bin", file_hash=sha(good), cache_subdir="x", verbose=False)
    assert open(path, "rb").read() == good


def test_resume_after_cut_connection(home):
    body = bytes(range(256)) * 400
    with Server({"/big.bin": body}) as srv:
        srv.cut_next.add("/big.bin")
        path = data_utils.get_file("big.bin", srv.url + "big.bin", file_hash=sha(body), verbose=False)
        assert open(path, "rb").read() == body
        ranges = [r for p, r in srv.requests if p == "/big.bin"]
    assert ranges[0] is None and ranges[1] == f"bytes={len(body) // 2}-"


def test_second_mirror_used_when_first_lacks_file(home):
    body = b"abc" * 10
    with Server({"/f": body}) as srv:
        path = data_utils.get_file("f", [srv.url + "missing", srv.url + "f"], file_hash=sha(body), verbose=False)
    assert open(path, "rb").read() == body


def unused_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_offline_message_names_url_and_cache_path(home, monkeypatch):
    url = f"http://127.0.0.1:{unused_port()}/"
    monkeypatch.setattr(mnist, "ORIGINS", [url])
    with pytest.raises(data_utils.DownloadError) as info:
        mnist.load_data()
    msg = str(info.value)
    assert "offline" in msg and url + "train-images-idx3-ubyte.gz" in msg
    assert str(home / "datasets" / "mnist" / "train-images-idx3-ubyte.gz") in msg
    assert mnist.FILES["train-images-idx3-ubyte.gz"] in msg


def test_file_placed_by_hand_is_used_offline(home, rng, monkeypatch):
    _, files = small_idx_set(rng)
    folder = home / "datasets" / "mnist"
    folder.mkdir(parents=True)
    for k, v in files.items():
        (folder / k).write_bytes(v)
    monkeypatch.setattr(mnist, "ORIGINS", [f"http://127.0.0.1:{unused_port()}/"])
    monkeypatch.setattr(mnist, "FILES", {k: sha(v) for k, v in files.items()})
    (x_train, _), _ = mnist.load_data()
    assert x_train.shape == (6, 28, 28)


def test_truncated_idx_rejected(tmp_path):
    path = tmp_path / "a-idx3-ubyte.gz"
    path.write_bytes(idx_bytes(np.zeros((2, 28, 28), np.uint8))[:-20])
    with pytest.raises(ValueError, match="a-idx3-ubyte.gz"):
        from lamina.datasets._readers import read_idx
        read_idx(str(path))


def test_get_file_rejects_path_names(home):
    with pytest.raises(ValueError, match="plain file name"):
        data_utils.get_file("../evil", "http://127.0.0.1/x")


# ---------------------------------------------------------------------------------------- batching
def test_batches_cover_all_samples_once_with_shuffle():
    x = np.arange(10)[:, None] * np.ones((1, 3))
    y = np.arange(10)
    seen = []
    for xb, yb in batches(x, y, batch_size=4, shuffle=True, seed=3):
        assert np.array_equal(xb[:, 0], yb)
        seen.extend(yb.tolist())
    assert sorted(seen) == list(range(10)) and seen != list(range(10))
    assert [len(yb) for _, yb in batches(x, y, batch_size=4)] == [4, 4, 2]
    assert [len(yb) for _, yb in batches(x, y, batch_size=4, drop_remainder=True)] == [4, 4]
    assert num_batches(10, 4) == 3
    a = [yb.tolist() for _, yb in batches(x, y, batch_size=4, shuffle=True, seed=3)]
    b = [yb.tolist() for _, yb in batches(x, y, batch_size=4, shuffle=True, seed=3)]
    assert a == b


def test_batches_multi_input_and_sample_weight():
    x = {"a": np.arange(5), "b": np.arange(5) * 10}
    y = [np.arange(5), -np.arange(5)]
    sw = np.linspace(0, 1, 5)
    out = list(batches(x, y, batch_size=2, sample_weight=sw, shuffle=True, seed=0))
    assert len(out) == 3
    for xb, yb, swb in out:
        assert np.array_equal(xb["b"], xb["a"] * 10) and np.array_equal(yb[1], -yb[0])
        assert np.allclose(swb, sw[xb["a"]])
    xb, yb = next(batches(np.arange(3), batch_size=8))
    assert yb is None and xb.tolist() == [0, 1, 2]


def test_batches_errors():
    with pytest.raises(ValueError, match="same number of samples"):
        next(batches(np.zeros(3), np.zeros(4)))
    with pytest.raises(ValueError, match="batch_size"):
        next(batches(np.zeros(3), batch_size=0))


def test_shuffle_uses_lamina_seed():
    lamina.utils.set_random_seed(7)
    a = [yb.tolist() for _, yb in batches(np.arange(8), np.arange(8), batch_size=8, shuffle=True)]
    lamina.utils.set_random_seed(7)
    b = [yb.tolist() for _, yb in batches(np.arange(8), np.arange(8), batch_size=8, shuffle=True)]
    assert a == b


# -------------------------------------------------------------------------------------------- utils
def test_to_categorical():
    out = to_categorical([0, 2, 1], 4)
    assert out.dtype == np.float32 and out.tolist() == [[1, 0, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0]]
    assert to_categorical(np.array([[1], [3]])).shape == (2, 4)       # trailing 1 dropped, classes inferred
    assert to_categorical(np.zeros((2, 3), int), 2).shape == (2, 3, 2)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        to_categorical([3], 3)


def test_pad_sequences_keras_semantics():
    seqs = [[1, 2, 3], [4, 5], [6]]
    assert pad_sequences(seqs).tolist() == [[1, 2, 3], [0, 4, 5], [0, 0, 6]]
    assert pad_sequences(seqs, padding="post").tolist() == [[1, 2, 3], [4, 5, 0], [6, 0, 0]]
    assert pad_sequences(seqs, maxlen=2).tolist() == [[2, 3], [4, 5], [0, 6]]
    assert pad_sequences(seqs, maxlen=2, truncating="post").tolist() == [[1, 2], [4, 5], [0, 6]]
    assert pad_sequences(seqs, maxlen=4, value=-1).tolist()[2] == [-1, -1, -1, 6]
    assert pad_sequences(seqs).dtype == np.int32
    assert pad_sequences([[0.5], []], dtype="float32", maxlen=2).tolist() == [[0, 0.5], [0, 0]]
    assert pad_sequences([np.ones((2, 3))], maxlen=3).shape == (1, 3, 3)
    assert pad_sequences([["a", "b"], ["c"]], dtype=object, value="").tolist() == [["a", "b"], ["", "c"]]
    with pytest.raises(ValueError, match="padding"):
        pad_sequences(seqs, padding="middle")
    with pytest.raises(ValueError, match="non-iterable"):
        pad_sequences([1, 2])


def test_split_dataset():
    x, y = np.arange(10), np.arange(10) * 2
    (lx, ly), (rx, ry) = split_dataset((x, y), left_size=0.8)
    assert lx.tolist() == list(range(8)) and rx.tolist() == [8, 9] and np.array_equal(ly, lx * 2)
    left, right = split_dataset(x, right_size=3, shuffle=True, seed=1)
    assert len(left) == 7 and len(right) == 3 and sorted(np.concatenate([left, right]).tolist()) == list(range(10))
    left, right = split_dataset({"a": x, "b": y}, left_size=2, right_size=3)
    assert left["a"].tolist() == [0, 1] and right["b"].tolist() == [4, 6, 8]
    with pytest.raises(ValueError, match="exceeds"):
        split_dataset(x, left_size=6, right_size=6)
    with pytest.raises(ValueError, match="same length"):
        split_dataset((x, y[:3]))


def test_normalize():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)
    out = normalize(x)
    assert out.dtype == np.float32 and np.allclose(out, [[0.6, 0.8], [0, 0]])
    assert np.allclose(normalize(x, axis=0, order=1)[:, 0], [1, 0])


def test_offline_message_lists_every_missing_file_once(home, monkeypatch):
    urls = [f"http://127.0.0.1:{unused_port()}/", f"http://127.0.0.1:{unused_port()}/m2/"]
    monkeypatch.setattr(mnist, "ORIGINS", urls)
    with pytest.raises(data_utils.DownloadError) as info:
        mnist.load_data()
    msg = str(info.value)
    for name, file_hash in mnist.FILES.items():
        assert msg.count(f"- {name} -> ") == 1 and file_hash in msg
        assert str(home / "datasets" / "mnist" / name) in msg
        for url in urls:
            assert msg.count(url + name + ":") == 1       # each URL once, with its reason


def test_silent_server_gives_up_within_the_timeout(home):
    """A server that accepts the connection and never answers costs one timeout per mirror, not minutes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/f"
    try:
        with pytest.raises(data_utils.DownloadError) as info:
            data_utils.get_file("f", url, file_hash="0" * 64, verbose=False, timeout=0.5)
    finally:
        listener.close()
    assert "no answer within 0.5 s" in str(info.value)


def test_checksum_mismatch_falls_through_to_next_mirror_and_keeps_the_reason(home):
    good, bad = b"good" * 10, b"bad!" * 10
    with Server({"/a/f": bad, "/b/f": good}) as srv:
        path = data_utils.get_file("f", [srv.url + "a/f", srv.url + "b/f"], file_hash=sha(good), verbose=False)
        assert open(path, "rb").read() == good
        with pytest.raises(data_utils.DownloadError) as info:
            data_utils.get_file("g", [srv.url + "a/f"], file_hash=sha(good), verbose=False, cache_subdir="y")
    assert "corrupt: SHA-256 " + sha(bad) in str(info.value) and "deleted" in str(info.value)
