"""lamina.io: the model-file and weights-file formats, their validation, atomic writes, and no pickle anywhere."""
import json
import os
import pathlib
import re
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

from lamina import io as lio
from lamina.io import ModelFileError

WEIGHTS = {"0/dense/kernel": np.arange(6, dtype=np.float32).reshape(2, 3), "0/dense/bias": np.zeros(3, np.float32),
           "optimizer/0": np.array(7, np.int64)}


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "m.lamina"
    lio.write_model_file(path, {"class_name": "Sequential", "config": {"layers": []}}, WEIGHTS, "0.1.0")
    return path


def test_round_trip(model_file):
    config, weights, meta = lio.read_model_file(model_file)
    assert config == {"class_name": "Sequential", "config": {"layers": []}}
    assert set(weights) == set(WEIGHTS)
    for k, v in WEIGHTS.items():
        assert weights[k].dtype == v.dtype and weights[k].shape == v.shape and np.array_equal(weights[k], v)
    assert meta["format"] == "lamina.model" and meta["format_version"] == lio.FORMAT_VERSION == 2 and meta["lamina_version"] == "0.1.0"
    assert "date_saved" in meta
    with zipfile.ZipFile(model_file) as z:
        assert sorted(z.namelist()) == ["config.json", "metadata.json", "model.weights.safetensors"]
    assert lio.read_weights_any(model_file).keys() == WEIGHTS.keys()


def test_weights_file_round_trip(tmp_path):
    path = tmp_path / "w.weights.safetensors"
    lio.write_weights_file(path, WEIGHTS, {"lamina_version": "0.1.0"})
    weights, meta = lio.read_weights_file(path)
    assert meta == {"lamina_version": "0.1.0"} and np.array_equal(weights["0/dense/kernel"], WEIGHTS["0/dense/kernel"])
    weights["0/dense/bias"][0] = 1.0   # loaded arrays are writable copies
    assert lio.read_weights_any(path).keys() == WEIGHTS.keys()


def test_no_temp_files_left(model_file):
    assert [p.name for p in model_file.parent.iterdir()] == ["m.lamina"]


def test_failed_write_keeps_old_file(model_file):
    before = model_file.read_bytes()
    with pytest.raises(ValueError):
        lio.write_model_file(model_file, {"x": float("nan")}, WEIGHTS)   # NaN is not JSON
    with pytest.raises(ValueError):
        lio.write_model_file(model_file, {}, {"w": np.array(["a"])})     # strings are not weights
    assert model_file.read_bytes() == before
    assert [p.name for p in model_file.parent.iterdir()] == ["m.lamina"]


# --------------------------------------------------------------------------------------------- fuzz
def rewrite(src, dst, members=None, extra=()):
    """Copy the model file src into a new zip dst, replacing member contents and adding extra members."""
    members = members or {}
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = members.get(name, zin.read(name))
            if data is not None:
                zout.writestr(name, data)
        for name, data in extra:
            zout.writestr(name, data)
    return dst


def assert_clean_error(path, match):
    with pytest.raises(ModelFileError, match=match) as info:
        lio.read_model_file(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("cut", [0, 10, 100, 0.5, -30])
def test_truncated_file(model_file, cut):
    data = model_file.read_bytes()
    n = int(len(data) * cut) if isinstance(cut, float) else (cut if cut >= 0 else len(data) + cut)
    model_file.write_bytes(data[:n])
    assert_clean_error(model_file, "empty|zip|corrupt|missing")


@pytest.mark.parametrize("seed", range(5))
def test_random_bytes(tmp_path, seed):
    path = tmp_path / "r.keras"
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    assert_clean_error(path, "not a lamina model file")


@pytest.mark.parametrize("seed", range(8))
def test_flipped_bytes(model_file, seed):
    data = bytearray(model_file.read_bytes())
    rng = np.random.default_rng(seed)
    for i in rng.integers(0, len(data), 8):
        data[i] ^= 0xFF
    model_file.write_bytes(bytes(data))
    try:
        lio.read_model_file(model_file)   # flips may land in slack bytes: then the file still reads
    except ModelFileError as e:
        assert str(model_file) in str(e)


@pytest.mark.parametrize("name", ["../evil.py", "/etc/passwd", "config.json/../../x", "sub/config.json",
                                  "model.weights.h5"])
def test_unexpected_or_traversal_member(model_file, tmp_path, name):
    bad = rewrite(model_file, tmp_path / "bad.lamina", extra=[(name, b"print('pwned')")])
    assert_clean_error(bad, "unexpected member")
    assert not (tmp_path.parent / "evil.py").exists()


def test_missing_member(model_file, tmp_path):
    bad = rewrite(model_file, tmp_path / "bad.lamina", members={"config.json": None})
    assert_clean_error(bad, "missing member.*config.json")


def safetensors_with_header_length(n, tail=b"{}"):
    return struct.pack("<Q", n) + tail


@pytest.mark.parametrize("blob", [
    safetensors_with_header_length(2 ** 63),                 # huge header length
    safetensors_with_header_length(10 ** 9, b"{}" * 100),    # longer than the data
    b"\x01\x02",                                             # shorter than the length field
    safetensors_with_header_length(2, b"[]"),                # header not an object
    safetensors_with_header_length(4, b"{,,}"),              # header not JSON
])
def test_bad_safetensors_header(model_file, tmp_path, blob):
    bad = rewrite(model_file, tmp_path / "bad.lamina", members={"model.weights.safetensors": blob})
    assert_clean_error(bad, "safetensors|truncated|JSON object|not valid JSON")


def header_blob(entries, data):
    h = json.dumps(entries).encode()
    return struct.pack("<Q", len(h)) + h + data


@pytest.mark.parametrize("entry,match", [
    ({"dtype": "F32", "shape": [2], "data_offsets": [0, 400]}, "outside"),
    ({"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}, "needs 12 bytes"),
    ({"dtype": "PICKLE", "shape": [2], "data_offsets": [0, 8]}, "unsupported dtype"),
    ({"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}, "invalid shape"),
    ({"dtype": "F32", "shape": [2], "data_offsets": [0, 8], "code": "x"}, "malformed"),
])
def test_bad_safetensors_entries(model_file, tmp_path, entry, match):
    blob = header_blob({"w": entry}, b"\0" * 8)
    bad = rewrite(model_file, tmp_path / "bad.lamina", members={"model.weights.safetensors": blob})
    assert_clean_error(bad, match)


@pytest.mark.parametrize("config,match", [
    (b"[1, 2]", "JSON object"),
    (b"{\"a\": NaN}", "not valid JSON"),
    (b"{\"a\": 1, \"a\": 2}", "duplicate key"),
    (b"{\"a\": " + b"[" * 5000 + b"]" * 5000 + b"}", "nests deeper"),
    (b"\xff\xfe{}", "UTF-8"),
])
def test_bad_config_json(model_file, tmp_path, config, match):
    bad = rewrite(model_file, tmp_path / "bad.lamina", members={"config.json": config})
    assert_clean_error(bad, match)


def test_foreign_or_newer_metadata(model_file, tmp_path):
    bad = rewrite(model_file, tmp_path / "a.keras", members={"metadata.json": b'{"keras_version": "3.0"}'})
    assert_clean_error(bad, "format None")
    newer = json.dumps({"format": "lamina.model", "format_version": 99, "lamina_version": "9.0"}).encode()
    bad = rewrite(model_file, tmp_path / "b.keras", members={"metadata.json": newer})
    assert_clean_error(bad, "newer lamina")


def test_declared_size_is_not_trusted(model_file, tmp_path):
    # A member whose local header lies about its size is refused, not read to the end.
    data = bytearray(model_file.read_bytes())
    with zipfile.ZipFile(model_file) as z:
        info = z.getinfo("config.json")
    # Patch the central directory's uncompressed size of config.json to a smaller value.
    idx = data.find(b"config.json", data.find(b"PK\x01\x02"))
    start = idx - 46
    assert data[start:start + 4] == b"PK\x01\x02"
    struct.pack_into("<I", data, start + 24, max(1, info.file_size // 2))
    model_file.write_bytes(bytes(data))
    assert_clean_error(model_file, "declared size|corrupt")


def test_not_found_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.keras"):
        lio.read_model_file(tmp_path / "nope.keras")
    with pytest.raises(ModelFileError, match="directory"):
        lio.read_model_file(tmp_path)


def test_bare_safetensors_hint(tmp_path):
    path = tmp_path / "w.keras"
    lio.write_weights_file(path, WEIGHTS)
    assert_clean_error(path, "bare safetensors weights file")


# --------------------------------------------------------------------------------- crash safety
SAVER = textwrap.dedent("""
    import sys, numpy as np
    from lamina import io
    path, big = sys.argv[1], np.random.default_rng(0).standard_normal((512, 512)).astype("float32")
    i = 0
    print("ready", flush=True)
    while True:
        i += 1
        io.write_model_file(path, {"i": i}, {"w": big + i, "n": np.array(i)})
""")


@pytest.mark.parametrize("delay", [0.3, 0.55])
def test_sigkill_while_saving_leaves_a_loadable_file(tmp_path, delay):
    path = tmp_path / "m.lamina"
    lio.write_model_file(path, {"i": 0}, {"w": np.zeros((512, 512), np.float32), "n": np.array(0)})
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)   # let it save a few times, then kill it in the middle of whatever it is doing
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    config, weights, _ = lio.read_model_file(path)
    i = config["i"]
    assert i == int(weights["n"])
    expected = np.zeros((512, 512), np.float32) if i == 0 else \
        np.random.default_rng(0).standard_normal((512, 512)).astype("float32") + i
    assert np.array_equal(weights["w"], expected)


# ------------------------------------------------------------------------------------- no pickle
PICKLE_PATTERNS = [
    (r"^\s*(import|from)\s+(c?pickle|dill|cloudpickle|joblib|marshal|shelve)\b", "imports a pickle module"),
    (r"\ballow_pickle\s*=\s*True", "allow_pickle=True"),
    (r"\btorch\.load\(", "torch.load"),
    (r"(?<![.\w])(eval|exec)\(", "eval/exec"),
]


def test_no_pickle_in_the_package():
    root = pathlib.Path(__file__).resolve().parents[1] / "lamina"
    problems = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        for pattern, what in PICKLE_PATTERNS:
            for m in re.finditer(pattern, text, flags=re.M):
                line = text.count("\n", 0, m.start()) + 1
                problems.append(f"{path.relative_to(root.parent)}:{line}: {what}")
        # np.load / numpy.load must say allow_pickle=False in the same call.
        for m in re.finditer(r"\b(np|numpy)\.load\(", text):
            call = text[m.start():text.find(")", m.start()) + 1]
            if "allow_pickle=False" not in call:
                line = text.count("\n", 0, m.start()) + 1
                problems.append(f"{path.relative_to(root.parent)}:{line}: np.load without allow_pickle=False")
    assert not problems, "pickle-capable code in lamina:\n" + "\n".join(problems)
