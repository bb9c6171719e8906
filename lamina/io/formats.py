"""lamina's file formats, with nothing model-specific in them.

A model file is a zip archive holding exactly three members:
  config.json                  what to rebuild (any JSON object; models/saving.py decides what goes in)
  metadata.json                {"format": "lamina.model", "format_version": 1, "lamina_version", "date_saved"}
  model.weights.safetensors    named arrays (weights, optimizer state) in the safetensors format
A weights file is one bare safetensors file.

Safe by construction: no pickle; reading parses JSON and raw little-endian arrays only, and checks
everything before trusting it (member names whitelisted, sizes bounded before decompression and while
reading, JSON depth and size bounded, the safetensors header length checked before its header is parsed,
every tensor's dtype, shape and byte range checked). Every problem raises ``ModelFileError`` naming the
file and what is wrong. Writes are atomic: a temporary file in the same folder, fsync, then os.replace,
so a crash (even SIGKILL) leaves either the old file or the new one, never half of one.
"""
import datetime
import glob
import json
import os
import struct
import tempfile
import zipfile
import zlib

import numpy as np

from .errors import ModelFileError
from .limits import open_regular

__all__ = ["ModelFileError", "atomic_write", "write_model_file", "read_model_file", "write_weights_file",
           "read_weights_file", "read_weights_any", "is_model_file", "read_model_parts", "FORMAT_NAME",
           "FORMAT_VERSION"]

FORMAT_NAME = "lamina.model"
FORMAT_VERSION = 2                 # 2: the weights carry per-tensor CRC-32s (version 1 files still load)
CONFIG_NAME, METADATA_NAME, WEIGHTS_NAME = "config.json", "metadata.json", "model.weights.safetensors"
MEMBERS = (CONFIG_NAME, METADATA_NAME, WEIGHTS_NAME)

MAX_JSON_BYTES = 64 << 20          # a config is kilobytes; 64 MiB leaves room for huge models
MAX_JSON_DEPTH = 200
MAX_WEIGHTS_BYTES = 16 << 30       # 16 GiB
MAX_HEADER_BYTES = 100 << 20       # the safetensors library's own cap on its JSON header
MAX_TENSORS = 100_000
# A deflated member may inflate to at most this many times its stored size (once past 1 MiB): weights barely
# compress, JSON about 10x; a zip bomb inflates ~1000x.
MAX_INFLATE_RATIO = 100
CHECKSUM_KEY = "lamina.crc32"      # safetensors metadata: JSON {tensor name: crc32 of its bytes, 8 hex digits}
# a second, separate marker: a damaged (renamed) checksum key cannot switch the check off on its own
CHECKSUM_MARKER = "lamina.checksummed"
# safetensors dtype names -> NumPy dtypes (little-endian, as the format stores them).
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
          "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}
_NAMES = {np.dtype(v).str: k for k, v in DTYPES.items()}


# ------------------------------------------------------------------------------------- atomic writes
def _tmp_prefix(path):
    return f".{os.path.basename(path)}."


def _remove_stale_temps(path):
    """Remove the temporary files earlier writes of path left behind when they were killed.

    A writer holds an exclusive lock on its temporary file for as long as it writes; a temporary file whose
    lock can be taken belongs to a dead writer (POSIX). Without fcntl (Windows) nothing is removed."""
    try:
        import fcntl
    except ImportError:
        return
    folder = os.path.dirname(os.path.abspath(path))
    pattern = os.path.join(glob.escape(folder), glob.escape(_tmp_prefix(path)) + "*.tmp")
    for stale in glob.glob(pattern):
        try:
            fd = os.open(stale, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)    # a live writer holds it
            continue
        try:
            os.remove(stale)
        except OSError:
            pass
        finally:
            os.close(fd)


def atomic_write(path, write):
    """Create ``path`` atomically. ``write(f)`` fills a binary file object (or pass bytes).

    The data go to a temporary file ``.<name>.XXXXXXXX.tmp`` in the target's folder (same file system, so the
    rename is atomic), locked while it is written, flushed and fsynced before ``os.replace`` puts it in place;
    the folder is fsynced after, so the new name survives a power cut. On any error the temporary file is
    removed and the old file stays; temporary files of writers that were killed (SIGKILL, power cut) are
    removed by the next write to the same path. Errors name ``path``, not the temporary file.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a directory; give a file name to write to.")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"Cannot write {path}: the folder {folder} does not exist.")
    _remove_stale_temps(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=".tmp", dir=folder)
    except OSError as e:   # name the path asked for, not the temporary file
        raise type(e)(e.errno, f"Cannot write {path}: {e.strerror} (in {folder})") from None
    try:
        try:
            import fcntl
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (ImportError, OSError):
            pass
        with os.fdopen(fd, "wb") as f:
            if isinstance(write, (bytes, bytearray, memoryview)):
                f.write(write)
            else:
                write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and e.errno is not None and getattr(e, "filename", None) in (tmp, path):
            raise type(e)(e.errno, f"Cannot write {path}: {e.strerror}") from None
        raise
    try:  # persist the rename itself (POSIX); not possible on every platform
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


# -------------------------------------------------------------------------------------- safetensors
def _crc(buffer):
    return f"{zlib.crc32(buffer) & 0xFFFFFFFF:08x}"


def _encode_weights(weights, metadata=None):
    """safetensors bytes for {name: array}, with a CRC-32 of every tensor's bytes in the metadata."""
    arrays = []
    for name, value in weights.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"Weight names must be non-empty strings. Received {name!r}")
        a = np.asarray(value)
        if a.dtype.kind not in "fiub":
            raise ValueError(f"Weight {name!r} has dtype {a.dtype}, which a weights file cannot hold.")
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        if not a.flags.c_contiguous:   # (np.ascontiguousarray would also turn 0-d arrays into 1-d ones)
            a = a.copy(order="C")
        arrays.append((name, a))
    # the safetensors convention: tensors sorted by dtype alignment (largest first), then by name
    arrays.sort(key=lambda na: (-na[1].dtype.itemsize, na[0]))
    header, offset, checksums = {}, 0, {}
    for name, a in arrays:
        buf = memoryview(a).cast("B") if a.size else b""
        header[name] = {"dtype": _NAMES[a.dtype.str], "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        checksums[name] = _crc(buf)
        offset += a.nbytes
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    meta[CHECKSUM_KEY] = json.dumps(checksums, separators=(",", ":"))
    meta[CHECKSUM_MARKER] = "crc32"
    header = {"__metadata__": meta, **header}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)   # the data start 8-byte aligned
    out = bytearray(struct.pack("<Q", len(text)) + text)
    for _, a in arrays:
        if a.size:
            out += memoryview(a).cast("B")
    return bytes(out)


def _decode_weights(path, blob, require_checksums=False):
    """{name: array} and the metadata of a safetensors byte string, every field checked before use.

    Checked: header length, JSON (size, depth, duplicates), each entry's dtype, shape and byte range; the
    byte ranges must tile the data exactly (no gaps, overlaps or trailing bytes); and when the metadata holds
    lamina's per-tensor CRC-32s (files lamina writes), every tensor's bytes must match its checksum."""
    blob = memoryview(blob).cast("B")
    if len(blob) < 8:
        raise ModelFileError(path, f"the weights are truncated ({len(blob)} bytes; a safetensors file starts "
                                   "with an 8-byte header length).")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > MAX_HEADER_BYTES or 8 + n > len(blob):
        raise ModelFileError(path, f"the weights' safetensors header claims {n} bytes, but the data hold "
                                   f"{len(blob) - 8} bytes after the length field (corrupt or truncated).")
    header = _parse_json(path, blob[8:8 + n], "the safetensors header")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items()):
        raise ModelFileError(path, "the safetensors metadata must map strings to strings.")
    if len(header) > MAX_TENSORS:
        raise ModelFileError(path, f"the weights hold {len(header)} tensors, over the {MAX_TENSORS} limit.")
    data = blob[8 + n:]
    data_len = len(data)
    entries = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) - {"dtype", "shape", "data_offsets"}:
            raise ModelFileError(path, f"weights entry {name!r} is malformed.")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in DTYPES:
            raise ModelFileError(path, f"weights entry {name!r} has unsupported dtype {dtype!r} "
                                       f"(supported: {', '.join(DTYPES)}).")
        if (not isinstance(shape, list) or len(shape) > 32
                or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2 ** 40 for d in shape)):
            raise ModelFileError(path, f"weights entry {name!r} has an invalid shape {shape!r}.")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= data_len):
            raise ModelFileError(path, f"weights entry {name!r} has byte range {offsets!r} outside the "
                                       f"{data_len} bytes of data.")
        count = 1
        for d in shape:
            count *= d
        nbytes = count * np.dtype(DTYPES[dtype]).itemsize
        if offsets[1] - offsets[0] != nbytes:
            raise ModelFileError(path, f"weights entry {name!r} of shape {shape} and dtype {dtype} needs "
                                       f"{nbytes} bytes but its byte range holds {offsets[1] - offsets[0]}.")
        entries.append((offsets[0], offsets[1], name, dtype, shape, count))
    entries.sort(key=lambda e: (e[0], e[1]))
    end = 0
    for start, stop, name, *_ in entries:
        if start != end:
            raise ModelFileError(path, f"weights entry {name!r} starts at byte {start}, but the previous tensor "
                                       f"ends at {end} (byte ranges must follow one another without gaps or "
                                       "overlaps).")
        end = stop
    if end != data_len:
        raise ModelFileError(path, f"the weights data hold {data_len} bytes but the tensors cover {end}.")
    checksums = None
    if (require_checksums or CHECKSUM_MARKER in meta) and CHECKSUM_KEY not in meta:
        raise ModelFileError(path, "the weights' checksums are missing (the file was written with them: corrupt).")
    if CHECKSUM_MARKER in meta and meta[CHECKSUM_MARKER] != "crc32":
        raise ModelFileError(path, f"unknown checksum kind {meta[CHECKSUM_MARKER]!r} in the weights' metadata.")
    if CHECKSUM_KEY in meta:
        checksums = _parse_json(path, meta[CHECKSUM_KEY].encode("utf-8"), "the weights' checksums")
        if set(checksums) != {e[2] for e in entries}:
            raise ModelFileError(path, "the weights' checksums do not list exactly the tensors stored.")
    arrays = {}
    for start, stop, name, dtype, shape, count in entries:
        raw = data[start:stop]
        if checksums is not None and checksums[name] != _crc(raw):
            raise ModelFileError(path, f"weights entry {name!r} fails its checksum: the file is corrupt (bits "
                                       "changed or byte ranges moved since it was written).")
        a = np.frombuffer(raw, dtype=DTYPES[dtype], count=count).reshape(shape)
        if dtype == "BOOL":
            a = a.view(np.uint8) != 0
        else:
            a = a.astype(a.dtype.newbyteorder("="), copy=True)   # an own, writable, native-order copy
        arrays[name] = a
    return arrays, {k: v for k, v in meta.items() if k not in (CHECKSUM_KEY, CHECKSUM_MARKER)}


def write_weights_file(path, weights, metadata=None):
    """Write {name: array} as one safetensors file, atomically. ``metadata``: {str: str}, stored in the header."""
    atomic_write(path, _encode_weights(weights, metadata))


def read_weights_file(path, max_bytes=MAX_WEIGHTS_BYTES):
    """({name: array}, {str: str} metadata) from a safetensors file, checked as described above."""
    blob = _read_bounded(path, max_bytes)
    return _decode_weights(path, blob)


def _read_bounded(path, max_bytes, what="weights file"):
    """The bytes of a regular file of at most max_bytes (never reads more than that)."""
    with open_regular(path, what) as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise ModelFileError(path, f"the file is {size} bytes, over the {max_bytes}-byte limit.")
        data = f.read(size + 1)   # (never ask for more than the file holds: read(n) reserves n bytes)
    if len(data) != size:
        raise ModelFileError(path, f"the file changed size while it was read ({size} bytes expected).")
    return data


# ---------------------------------------------------------------------------------------------- JSON
def _reject_constant(name):
    raise ValueError(f"the non-standard JSON constant {name} is not allowed")


def _no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _json_depth(text):
    """Nesting depth of a JSON text, counted without parsing (brackets inside strings are skipped)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _parse_json(path, raw, what):
    if len(raw) > MAX_JSON_BYTES:
        raise ModelFileError(path, f"{what} is {len(raw)} bytes, over the {MAX_JSON_BYTES}-byte limit.")
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ModelFileError(path, f"{what} is not UTF-8 text ({e}).") from e
    # Bracket counting is linear but slow in Python: only run it when deep nesting is possible at all.
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _json_depth(text) > MAX_JSON_DEPTH:
        raise ModelFileError(path, f"{what} nests deeper than {MAX_JSON_DEPTH} levels.")
    try:
        value = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as e:
        raise ModelFileError(path, f"{what} is not valid JSON ({e}).") from e
    if not isinstance(value, dict):
        raise ModelFileError(path, f"{what} must be a JSON object, not {type(value).__name__}.")
    return value


# --------------------------------------------------------------------------------------- model files
def write_model_file(path, config, weights, lamina_version="unknown"):
    """Write a model file (zip: config.json, metadata.json, model.weights.safetensors) atomically.

    Args: config: JSON-able dict; weights: {name: array}. Returns the metadata written.
    """
    config_bytes = json.dumps(config, indent=1, allow_nan=False).encode("utf-8")
    metadata = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "lamina_version": lamina_version,
                "date_saved": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    weights_bytes = _encode_weights(weights)

    def write(f):
        with zipfile.ZipFile(f, "w") as z:
            z.writestr(METADATA_NAME, json.dumps(metadata, indent=1), compress_type=zipfile.ZIP_DEFLATED)
            z.writestr(CONFIG_NAME, config_bytes, compress_type=zipfile.ZIP_DEFLATED)
            # Stored, not deflated: float weights barely compress and loading stays a plain copy.
            z.writestr(WEIGHTS_NAME, weights_bytes, compress_type=zipfile.ZIP_STORED)

    atomic_write(path, write)
    return metadata


def is_model_file(path):
    """True when path is a regular file that starts like a zip archive (a model file, or a claim to be one)."""
    try:
        with open_regular(path) as f:
            return f.read(4) == b"PK\x03\x04"
    except (OSError, ModelFileError):
        return False


# Exceptions a corrupt archive can raise from the zip and zlib modules (and from struct on odd headers)
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, ValueError,
               UnicodeDecodeError, NotImplementedError, struct.error, OverflowError, IndexError, KeyError,
               TypeError, RuntimeError)


def open_zip(path, f, max_members=1000):
    """zipfile.ZipFile over an opened regular file, with every way it can fail turned into ModelFileError."""
    try:
        z = zipfile.ZipFile(f, "r")
    except ModelFileError:
        raise
    except _ZIP_ERRORS as e:
        raise ModelFileError(path, f"corrupt or truncated zip archive ({type(e).__name__}: {e}).") from e
    infos = z.infolist()
    if len(infos) > max_members:
        z.close()
        raise ModelFileError(path, f"the archive has {len(infos)} members, over the {max_members} this format "
                                   "can hold.")
    names = [i.filename for i in infos]
    if len(set(names)) != len(names):
        z.close()
        raise ModelFileError(path, "duplicate members in the archive.")
    return z


def _read_member(path, z, info, limit):
    """A member's bytes, after checking its declared size against limit and, when deflated, against its stored
    size (MAX_INFLATE_RATIO), so a zip bomb is refused before anything is inflated."""
    name = info.filename
    if info.file_size > limit:
        raise ModelFileError(path, f"member {name} declares {info.file_size} bytes, over the {limit}-byte limit.")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ModelFileError(path, f"member {name} uses unsupported compression {info.compress_type}.")
    if info.flag_bits & 0x1:
        raise ModelFileError(path, f"member {name} is encrypted.")
    if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
        raise ModelFileError(path, f"member {name} is stored uncompressed but declares {info.file_size} bytes "
                                   f"for {info.compress_size} stored bytes.")
    if (info.compress_type == zipfile.ZIP_DEFLATED and info.file_size > (1 << 20)
            and info.file_size > MAX_INFLATE_RATIO * max(info.compress_size, 1)):
        raise ModelFileError(path, f"member {name} would inflate from {info.compress_size} to {info.file_size} "
                                   f"bytes (over {MAX_INFLATE_RATIO}x: a decompression bomb?); refused.")
    try:
        with z.open(info) as f:
            data = f.read(info.file_size + 1)   # zipfile stops at the declared size and checks the CRC-32
    except ModelFileError:
        raise
    except _ZIP_ERRORS as e:
        raise ModelFileError(path, f"member {name} is corrupt ({type(e).__name__}: {e}).") from e
    if len(data) != info.file_size:
        raise ModelFileError(path, f"member {name} does not have its declared size ({info.file_size} bytes).")
    return data


def read_model_file(path, max_bytes=MAX_WEIGHTS_BYTES):
    """(config dict, {name: array}, metadata dict) from a model file, after checking all of it."""
    config, weights_blob, metadata = read_model_parts(path, max_bytes)
    weights = _decode_weights(f"{path} ({WEIGHTS_NAME})", weights_blob,
                              require_checksums=metadata.get("format_version", 1) >= 2)[0]
    return config, weights, metadata


def read_model_parts(path, max_bytes=MAX_WEIGHTS_BYTES):
    """(config dict, raw safetensors bytes, metadata dict) of a model file, the container fully checked."""
    path = os.fspath(path)
    with open_regular(path, "model file") as raw:
        size = os.fstat(raw.fileno()).st_size
        if size > max_bytes + (MAX_JSON_BYTES * 2):
            raise ModelFileError(path, f"the file is {size} bytes, over the size limit.")
        head = raw.read(4)
        if head[:2] != b"PK":
            what = "empty" if not head else ("a bare safetensors weights file (use load_weights)"
                                             if _looks_like_safetensors(raw) else "not a zip archive")
            raise ModelFileError(path, f"not a lamina model file: {what}.")
        raw.seek(0)
        with open_zip(path, raw, max_members=16) as z:
            infos = z.infolist()
            names = [i.filename for i in infos]
            unexpected = [n for n in names if n not in MEMBERS]
            if unexpected:
                raise ModelFileError(path, f"unexpected member(s) {', '.join(repr(n) for n in unexpected[:5])} "
                                           f"(a model file holds only {', '.join(MEMBERS)}).")
            missing = [m for m in MEMBERS if m not in names]
            if missing:
                raise ModelFileError(path, f"missing member(s) {', '.join(missing)}; not a lamina model file "
                                           "(or one cut short).")
            by_name = {i.filename: i for i in infos}
            if sum(i.compress_size for i in infos) > size:
                raise ModelFileError(path, "the archive's members claim more bytes than the file holds.")
            metadata = _parse_json(path, _read_member(path, z, by_name[METADATA_NAME], 1 << 20), METADATA_NAME)
            if metadata.get("format") != FORMAT_NAME:
                raise ModelFileError(path, f"metadata.json names format {metadata.get('format')!r}, "
                                           f"expected {FORMAT_NAME!r}.")
            version = metadata.get("format_version")
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise ModelFileError(path, f"invalid format_version {version!r} in metadata.json.")
            if version > FORMAT_VERSION:
                raise ModelFileError(path, f"format version {version} was written by a newer lamina "
                                           f"({metadata.get('lamina_version')}); this one reads up to "
                                           f"version {FORMAT_VERSION}. Upgrade lamina.")
            config = _parse_json(path, _read_member(path, z, by_name[CONFIG_NAME], MAX_JSON_BYTES), CONFIG_NAME)
            blob = _read_member(path, z, by_name[WEIGHTS_NAME], max_bytes)
    return config, blob, metadata


def _looks_like_safetensors(f):
    f.seek(0)
    head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def read_weights_any(path):
    """{name: array} from a bare safetensors file or from the weights inside a model file."""
    if is_model_file(path):
        return read_model_file(path)[1]
    return read_weights_file(path)[0]
