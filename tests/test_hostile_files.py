"""Hostile files (issue 15): every malformed model or weights file, of lamina's format and of Keras's, is a
ModelFileError naming the file (or loads as the identical model), within a memory cap; special files, zip
bombs, configs asking for huge weights, lying headers and paths inside configs are refused before anything
is allocated or opened. See docs/security.md."""
import json
import os
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import lamina
from lamina import layers as L
from lamina.io import ModelFileError
from lamina.models import load_model

MEMORY_CAP = 64 << 20    # every load below peaks at well under a MiB; a blow-up would pass 64 MiB at once


def _model():
    lamina.utils.set_random_seed(1)
    m = lamina.Sequential([L.Input((4,)), L.Dense(3, activation="relu"), L.Dense(3)])
    m.compile("adam", "mse")
    m.fit(np.ones((8, 4), np.float32), np.zeros((8, 3), np.float32), epochs=1, verbose=0)
    return m


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    """The bytes of a valid file of each kind, and the weights they hold."""
    d = tmp_path_factory.mktemp("originals")
    m = _model()
    out = {}
    for kind, name in (("lamina", "m.lamina"), ("keras", "m.keras"), ("safetensors", "w.safetensors"),
                       ("h5", "w.weights.h5")):
        path = d / name
        (m.save_weights if kind in ("safetensors", "h5") else m.save)(str(path))
        out[kind] = (name, path.read_bytes())
    return out, [w.copy() for w in m.get_weights()]


def _load(kind, path):
    """Load path as its kind wants; returns the weights loaded."""
    if kind in ("lamina", "keras"):
        return load_model(str(path)).get_weights()
    m = lamina.Sequential([L.Input((4,)), L.Dense(3, activation="relu"), L.Dense(3)])
    m.load_weights(str(path))
    return m.get_weights()


def _outcome(kind, path, expected):
    """'error' (a ModelFileError naming the file), 'same' (the original weights) or 'other' (weights differ)."""
    tracemalloc.start()
    try:
        try:
            got = _load(kind, path)
        except ModelFileError as e:
            assert str(path) in str(e) and "\n" not in str(e)
            return "error"
        finally:
            peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < MEMORY_CAP, f"loading took {peak} bytes"
    same = len(got) == len(expected) and all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(got, expected))
    return "same" if same else "other"


# ------------------------------------------------------------------------------------------ mutations
def _central_entries(data):
    """Offsets of the zip central-directory entries in data."""
    out, i = [], data.find(b"PK\x01\x02")
    while i >= 0:
        out.append(i)
        i = data.find(b"PK\x01\x02", i + 4)
    return out


def _patch(data, offset, fmt, value):
    b = bytearray(data)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


def _rezip(data, edit):
    """Rebuild a zip after edit(list of (name, bytes)) -> list of (name, bytes, compress_type)."""
    import io
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        members = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, body, ctype in edit(members):
            z.writestr(zipfile.ZipInfo(name) if isinstance(name, str) else name, body, compress_type=ctype)
    return buf.getvalue()


mutation = st.one_of(
    st.tuples(st.just("flip"), st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 7)),
                                          min_size=1, max_size=4)),
    st.tuples(st.just("truncate"), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("header_lie"), st.sampled_from(["usize", "csize", "method", "flags", "namelen", "crc"]),
              st.integers(0, 2 ** 32 - 1)),
    st.tuples(st.just("zip_edit"), st.sampled_from(["drop", "duplicate", "extra", "deflate", "traversal"]),
              st.integers(0, 5)),
    st.tuples(st.just("st_lie"), st.sampled_from(["F32", "I32", "F64", "F16", "U8", "BOOL"]),
              st.sampled_from(["dtype", "shape", "offsets", "swap"]), st.integers(0, 5)),
)


def _safetensors_lie(blob, dtype, field, k):
    """Rewrite one entry of a safetensors header (re-encoded, so the JSON itself stays valid)."""
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    names = sorted(x for x in header if x != "__metadata__")
    name = names[k % len(names)]
    other = names[(k + 1) % len(names)]
    if field == "dtype":
        header[name]["dtype"] = dtype
    elif field == "shape":
        header[name]["shape"] = [d + 1 for d in header[name]["shape"]] or [2]
    elif field == "offsets":
        header[name]["data_offsets"] = [header[name]["data_offsets"][0], header[name]["data_offsets"][1] + 4 * k]
    else:   # two tensors' byte ranges swapped (same sizes: both biases)
        header[name]["data_offsets"], header[other]["data_offsets"] = \
            header[other]["data_offsets"], header[name]["data_offsets"]
        header[name]["shape"], header[other]["shape"] = header[other]["shape"], header[name]["shape"]
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + blob[8 + n:]


def _mutate(kind, data, m):
    op = m[0]
    if op == "flip":
        b = bytearray(data)
        for pos, bit in m[1]:
            b[int(pos * len(b))] ^= 1 << bit
        return bytes(b)
    if op == "truncate":
        return data[:int(m[1] * len(data))]
    if op == "header_lie":
        entries = _central_entries(data)
        if not entries:
            return data[:len(data) // 2]
        e = entries[m[2] % len(entries)]
        field, value = m[1], m[2]
        off, fmt = {"usize": (24, "<I"), "csize": (20, "<I"), "method": (10, "<H"), "flags": (8, "<H"),
                    "namelen": (28, "<H"), "crc": (16, "<I")}[field]
        return _patch(data, e + off, fmt, value % (1 << (8 * struct.calcsize(fmt))))
    if op == "zip_edit":
        if kind not in ("lamina", "keras"):
            return data + b"PK\x05\x06" + bytes(18)   # a zip trailer glued to a bare weights file
        what, k = m[1], m[2]

        def edit(members):
            out = [(n, b, zipfile.ZIP_STORED) for n, b in members]
            j = k % len(out)
            if what == "drop":
                del out[j]
            elif what == "duplicate":
                out.append(out[j])
            elif what == "extra":
                out.append(("assets/extra.txt", b"x" * 10, zipfile.ZIP_STORED))
            elif what == "deflate":
                out[j] = (out[j][0], out[j][1], zipfile.ZIP_DEFLATED)
            else:
                out[j] = ("../" + out[j][0], out[j][1], zipfile.ZIP_STORED)
            return out
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # zipfile warns on a duplicate name
            return _rezip(data, edit)
    # st_lie: a lying safetensors header, inside a lamina model file or bare
    _, dtype, field, k = m
    if kind == "safetensors":
        return _safetensors_lie(data, dtype, field, k)
    if kind == "lamina":
        return _rezip(data, lambda members: [(n, _safetensors_lie(b, dtype, field, k) if n.endswith("safetensors")
                                              else b, zipfile.ZIP_STORED) for n, b in members])
    return data


@pytest.mark.parametrize("kind", ["lamina", "keras", "safetensors", "h5"])
def test_fuzzed_files_fail_cleanly_or_load_identically(kind, originals, tmp_path_factory):
    files, expected = originals
    name, data = files[kind]
    folder = tmp_path_factory.mktemp(f"fuzz_{kind}")
    outcomes = []

    @settings(max_examples=250, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(mutation)
    def run(m):
        path = folder / name
        path.write_bytes(_mutate(kind, data, m))
        result = _outcome(kind, path, expected)
        outcomes.append(result)
        if kind != "h5":   # Keras's bare .weights.h5 has no checksum: a flipped data bit cannot be seen
            assert result in ("error", "same"), f"{m} loaded different weights without an error"

    run()
    # the mutations really damaged the files (HDF5 has much slack: flips in unused bytes change nothing)
    assert outcomes.count("error") > len(outcomes) // (3 if kind == "h5" else 2)


# ------------------------------------------------------------------------------- targeted hostile files
def _peak(fn):
    tracemalloc.start()
    try:
        try:
            fn()
        finally:
            peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak


def test_special_files_are_refused_at_once(tmp_path):
    m = _model()
    with pytest.raises(ModelFileError, match="/dev/zero: is a character device"):
        m.load_weights("/dev/zero")
    with pytest.raises(ModelFileError, match="character device"):
        load_model("/dev/zero")
    fifo = tmp_path / "pipe.keras"
    os.mkfifo(fifo)                      # nobody writes to it: opening it for reading would block forever
    for call in (lambda: load_model(str(fifo)), lambda: m.load_weights(str(fifo)),
                 lambda: lamina.io.read_weights_file(str(fifo))):
        with pytest.raises(ModelFileError, match="is a FIFO"):
            call()
    with pytest.raises(ModelFileError, match="directory"):
        load_model(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        load_model(str(tmp_path / "missing.lamina"))


def _rewrite(src, dst, replace=None, add=None, ctype=zipfile.ZIP_STORED):
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    for n, f in (replace or {}).items():
        members[n] = f(members[n])
    members.update(add or {})
    with zipfile.ZipFile(dst, "w") as z:
        for n, b in members.items():
            z.writestr(n, b, compress_type=ctype)
    return dst


def _bomb(src, dst, member, zeros):
    """src's zip with ``member`` followed by ``zeros`` zero bytes, deflated: a decompression bomb. zipfile would
    run zlib over every zero (~1 s a 100 MB); the deflate stream of 1 MiB of zeros after a full flush depends on
    nothing before it, so it is made once and repeated, and the member's header fields (method, CRC, sizes)
    are written into a copy stored with that stream as its bytes."""
    import zlib
    assert zeros % (1 << 20) == 0
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    head, block = members[member], bytes(1 << 20)
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    start = c.compress(head) + c.flush(zlib.Z_FULL_FLUSH)
    chunk = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    assert c.compress(block) + c.flush(zlib.Z_FULL_FLUSH) == chunk    # the same bytes each time
    stream = start + chunk * (zeros >> 20) + c.flush()
    crc = zlib.crc32(head)
    for _ in range(zeros >> 20):
        crc = zlib.crc32(block, crc)
    members[member] = stream
    with zipfile.ZipFile(dst, "w") as z:
        for n, b in members.items():
            z.writestr(n, b, compress_type=zipfile.ZIP_STORED)
    data = bytearray(dst.read_bytes())
    name = member.encode()
    for e in _central_entries(bytes(data)):
        if data[e + 46:e + 46 + len(name)] == name:
            local = struct.unpack_from("<I", data, e + 42)[0]
            for at in (e + 10, local + 8):   # method, time, date, CRC, sizes: central entry, then local header
                _, t, d, _, csize, _ = struct.unpack_from("<HHHIII", data, at)
                struct.pack_into("<HHHIII", data, at, zipfile.ZIP_DEFLATED, t, d, crc, csize, len(head) + zeros)
    dst.write_bytes(bytes(data))
    return dst


@pytest.mark.parametrize("ext", [".lamina", ".keras"])
def test_config_asking_for_huge_weights_fails_before_allocating(tmp_path, ext):
    path = tmp_path / f"m{ext}"
    _model().save(str(path))
    for units in (20_000_000, 10 ** 9, 10 ** 15):
        bad = _rewrite(path, tmp_path / f"big{ext}",
                       {"config.json": lambda b: b.replace(b'"units": 3', f'"units": {units}'.encode(), 1)})
        with pytest.raises(ModelFileError, match=r"asks for weight .*beyond the \d+ bytes of weights the file stores"):
            assert _peak(lambda: load_model(str(bad))) < (1 << 20)
        peak = _peak(lambda: pytest.raises(ModelFileError, load_model, str(bad)))
        assert peak < (1 << 20)


def test_zip_bomb_is_refused_before_inflating(tmp_path):
    path = tmp_path / "m.lamina"
    _model().save(str(path))
    bomb = _bomb(path, tmp_path / "bomb.lamina", "model.weights.safetensors", 256 << 20)
    assert os.path.getsize(bomb) < (1 << 20)
    peak = _peak(lambda: pytest.raises(ModelFileError, load_model, str(bomb)))
    assert peak < (4 << 20)
    with pytest.raises(ModelFileError, match="decompression bomb"):
        load_model(str(bomb))


def test_corrupt_deflate_stream_and_bad_member_names_are_model_file_errors(tmp_path):
    path = tmp_path / "m.lamina"
    _model().save(str(path))
    deflated = _rewrite(path, tmp_path / "d.lamina", ctype=zipfile.ZIP_DEFLATED)
    data = bytearray(deflated.read_bytes())
    start = data.find(b"model.weights.safetensors") + len("model.weights.safetensors")
    for i in range(start + 10, start + 60):
        data[i] ^= 0xFF                              # garbage in the deflate stream: zlib.error inside zipfile
    deflated.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="d.lamina"):
        load_model(str(deflated))
    # a member name flagged UTF-8 (bit 11) holding invalid UTF-8 bytes
    raw = bytearray(path.read_bytes())
    for e in _central_entries(bytes(raw)):
        struct.pack_into("<H", raw, e + 8, struct.unpack_from("<H", raw, e + 8)[0] | 0x800)
        raw[e + 46] = 0xFF
    bad = tmp_path / "names.lamina"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="names.lamina.*UnicodeDecodeError"):
        load_model(str(bad))


def test_weight_keys_with_non_ascii_digits_are_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    m = _model()
    weights = {k.replace("model/00001", "model/0000\u00b9"): v for k, v in
               lamina.io.read_weights_file(m.save_weights(str(path)) or str(path))[0].items()}
    assert "\u00b9".isdigit()           # what str.isdigit() accepts and int() refuses
    lamina.io.write_weights_file(path, weights)
    with pytest.raises(ModelFileError, match="has no index"):
        m.load_weights(str(path))


def test_vocabulary_path_inside_a_model_file_is_never_opened(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("SECRET-TOKEN\nother\n")
    tv = lamina.Sequential([L.Input((1,), dtype="string"), L.TextVectorization(vocabulary=["a", "b"])])
    path = tmp_path / "tv.lamina"
    tv.save(str(path))

    def point_at_secret(b):
        config = json.loads(b)
        layer = [c for c in config["config"]["layers"] if c["class_name"] == "TextVectorization"][0]
        layer["config"]["vocabulary"] = str(secret)
        return json.dumps(config).encode()
    bad = _rewrite(path, tmp_path / "tv_bad.lamina", {"config.json": point_at_secret})
    assert str(secret).encode() in zipfile.ZipFile(bad).read("config.json")
    atime = os.stat(secret).st_atime_ns
    with pytest.raises(ModelFileError, match="never names a file") as info:
        load_model(str(bad))
    assert "SECRET-TOKEN" not in str(info.value)
    assert os.stat(secret).st_atime_ns == atime
    # the inline list still works, and a vocabulary file given in code (not in a file) is the user's choice
    assert load_model(str(path)).layers[0].get_vocabulary() == ["", "[UNK]", "a", "b"]


def test_lying_dtype_and_swapped_ranges_and_bit_flips_are_detected(tmp_path):
    m = _model()
    path = tmp_path / "w.safetensors"
    m.save_weights(str(path))
    blob = path.read_bytes()
    cases = {"I32": (_safetensors_lie(blob, "I32", "dtype", 0), "declares int32 data"),
             "swap": (_safetensors_lie(blob, "F32", "swap", 0), "checksum"),
             "flip": (blob[:-5] + bytes([blob[-5] ^ 4]) + blob[-4:], "checksum")}
    for name, (data, match) in cases.items():
        bad = tmp_path / f"{name}.safetensors"
        bad.write_bytes(data)
        with pytest.raises(ModelFileError, match=match):
            m.load_weights(str(bad))
    # the same lies inside a model file (whose zip CRC is recomputed, as a forger would)
    model_path = tmp_path / "m.lamina"
    m.save(str(model_path))
    for field in ("dtype", "swap"):
        bad = _rewrite(model_path, tmp_path / f"{field}.lamina",
                       {"model.weights.safetensors": lambda b: _safetensors_lie(b, "I32", field, 0)})
        with pytest.raises(ModelFileError, match="int32|checksum"):
            load_model(str(bad))


def test_checksums_are_written_per_tensor(tmp_path):
    import zlib
    path = tmp_path / "w.safetensors"
    _model().save_weights(str(path))
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    sums = json.loads(header["__metadata__"]["lamina.crc32"])
    data = blob[8 + n:]
    for name, info in header.items():
        if name != "__metadata__":
            a, b = info["data_offsets"]
            assert sums[name] == f"{zlib.crc32(data[a:b]):08x}"
    from safetensors.numpy import load_file   # still a standard safetensors file for other readers
    assert set(load_file(str(path))) == set(sums)


def test_hdf5_weights_that_point_elsewhere_or_inflate_are_refused(tmp_path):
    import h5py
    m = _model()
    good = tmp_path / "w.weights.h5"
    m.save_weights(str(good))
    # a dataset declaring 400 MB of zeros in a few KB (gzip): refused before reading
    bomb = tmp_path / "bomb.weights.h5"
    with h5py.File(bomb, "w") as f:
        f.create_dataset("layers/dense/vars/0", shape=(100_000_000,), dtype="f4", compression="gzip",
                         chunks=(1_000_000,), fillvalue=0.0)
        f["layers/dense/vars/0"][:1000] = 1.0
    assert os.path.getsize(bomb) < (1 << 20)
    peak = _peak(lambda: pytest.raises(ModelFileError, m.load_weights, str(bomb)))
    assert peak < (8 << 20)
    with pytest.raises(ModelFileError, match="stores|limit"):
        m.load_weights(str(bomb))
    # links to other files (or to nothing) are never followed
    for kind in ("external", "soft"):
        linked = tmp_path / f"{kind}.weights.h5"
        with h5py.File(linked, "w") as f, h5py.File(good, "r") as g:
            g.copy(g["layers"], f, "layers")
            del f["layers/dense/vars/0"]
            f["layers/dense/vars/0"] = (h5py.ExternalLink(str(good), "/layers/dense/vars/0") if kind == "external"
                                        else h5py.SoftLink("/layers/dense_1/vars/0"))
        with pytest.raises(ModelFileError, match="Link"):
            m.load_weights(str(linked))


MEMORY_CAPPED = """
import resource, sys, numpy as np, lamina
from lamina.io import ModelFileError
from lamina.models import load_model
vm = [int(l.split()[1]) * 1024 for l in open('/proc/self/status') if l.startswith('VmSize')][0]
resource.setrlimit(resource.RLIMIT_AS, (vm + (256 << 20), resource.RLIM_INFINITY))   # 256 MiB more, at most
m = lamina.Sequential([lamina.layers.Input((4,)), lamina.layers.Dense(3, activation="relu"), lamina.layers.Dense(3)])
for path in sys.argv[1:]:
    try:
        load_model(path) if path.endswith((".lamina", ".keras")) else m.load_weights(path)
        print("loaded", path)
    except ModelFileError as e:
        print("refused", path)
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux's /proc")
def test_hostile_files_stay_under_an_address_space_cap(tmp_path):
    """The same refusals in a process whose address space may grow by 256 MiB only (C allocations included)."""
    import subprocess
    import sys
    import h5py
    path = tmp_path / "m.lamina"
    _model().save(str(path))
    bomb = _bomb(path, tmp_path / "bomb.lamina", "model.weights.safetensors", 320 << 20)
    big = _rewrite(path, tmp_path / "big.lamina",
                   {"config.json": lambda b: b.replace(b'"units": 3', b'"units": 1000000000', 1)})
    keras_path = tmp_path / "m.keras"
    _model().save(str(keras_path))
    kbig = _rewrite(keras_path, tmp_path / "big.keras",
                    {"config.json": lambda b: b.replace(b'"units": 3', b'"units": 1000000000', 1)})
    h5 = tmp_path / "bomb.weights.h5"
    with h5py.File(h5, "w") as f:
        f.create_dataset("layers/dense/vars/0", shape=(1 << 28,), dtype="f4", compression="gzip", chunks=(1 << 20,))
    files = [str(p) for p in (bomb, big, kbig, h5)] + ["/dev/zero"]
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", MEMORY_CAPPED, *files], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:-1] == [f"refused {f}" for f in files]


def test_a_renamed_checksum_key_cannot_switch_the_check_off(tmp_path):
    """A flipped bit in the metadata key 'lamina.crc32' must not turn the checksums off: the separate marker
    (bare weights files) and the model file's format version (model files) still require them."""
    from lamina.io import formats
    model = lamina.Sequential([lamina.layers.Input((3,)), lamina.layers.Dense(2)])
    for path, save in ((tmp_path / "w.safetensors", model.save_weights), (tmp_path / "m.lamina", model.save)):
        save(path)
        data = bytearray(path.read_bytes())
        key = formats.CHECKSUM_KEY.encode()
        at = bytes(data).index(key)
        data[at + len(key) - 1] ^= 1                  # 'lamina.crc32' -> 'lamina.crc33'
        data[-1] ^= 0x40                               # and a data bit
        if path.suffix == ".lamina":                   # inside a zip: rewrite it stored, with its own CRC right
            import zipfile
            with zipfile.ZipFile(path) as z:
                members = {n: z.read(n) for n in z.namelist()}
            blob = bytearray(members[formats.WEIGHTS_NAME])
            k = bytes(blob).index(key)
            blob[k + len(key) - 1] ^= 1
            blob[-1] ^= 0x40
            members[formats.WEIGHTS_NAME] = bytes(blob)
            with zipfile.ZipFile(path, "w") as z:
                for n, b in members.items():
                    z.writestr(n, b)
            load = lambda: lamina.models.load_model(path)  # noqa: E731
        else:
            path.write_bytes(bytes(data))
            load = lambda: model.load_weights(path)  # noqa: E731
        with pytest.raises(lamina.io.ModelFileError, match="checksum"):
            load()
