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
import json
import os
import struct
import tempfile
import zipfile

import numpy as np

__all__ = ["ModelFileError", "atomic_write", "write_model_file", "read_model_file", "write_weights_file",
           "read_weights_file", "read_weights_any", "is_model_file", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "lamina.model"
FORMAT_VERSION = 1
CONFIG_NAME, METADATA_NAME, WEIGHTS_NAME = "config.json", "metadata.json", "model.weights.safetensors"
MEMBERS = (CONFIG_NAME, METADATA_NAME, WEIGHTS_NAME)

MAX_JSON_BYTES = 64 << 20          # a config is kilobytes; 64 MiB leaves room for huge models
MAX_JSON_DEPTH = 200
MAX_WEIGHTS_BYTES = 16 << 30       # 16 GiB
MAX_HEADER_BYTES = 100 << 20       # the safetensors library's own cap on its JSON header
# safetensors dtype names -> NumPy dtypes (little-endian, as the format stores them).
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
          "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}


class ModelFileError(ValueError):
    """A model or weights file that cannot be read: truncated, corrupt, foreign or unsafe."""

    def __init__(self, path, problem):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")


# ------------------------------------------------------------------------------------- atomic writes
def atomic_write(path, write):
    """Create ``path`` atomically. ``write(f)`` fills a binary file object (or pass bytes).

    The data go to a temporary file in the target's folder (same file system, so the rename is atomic),
    which is flushed and fsynced before ``os.replace`` puts it in place; the folder is fsynced after, so
    the new name survives a power cut. On any error the temporary file is removed and the old file stays.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(write, (bytes, bytearray, memoryview)):
                f.write(write)
            else:
                write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
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
def _encode_weights(weights, metadata=None):
    from safetensors.numpy import save
    arrays = {}
    for name, value in weights.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"Weight names must be non-empty strings. Received {name!r}")
        a = np.asarray(value)
        if not a.flags.c_contiguous:   # (np.ascontiguousarray would also turn 0-d arrays into 1-d ones)
            a = a.copy(order="C")
        if a.dtype.kind not in "fiub":
            raise ValueError(f"Weight {name!r} has dtype {a.dtype}, which a weights file cannot hold.")
        arrays[name] = a
    return save(arrays, metadata={str(k): str(v) for k, v in metadata.items()} if metadata else None)


def _decode_weights(path, blob):
    """Check a safetensors byte string field by field, then decode it with the safetensors library."""
    if len(blob) < 8:
        raise ModelFileError(path, f"the weights are truncated ({len(blob)} bytes; a safetensors file starts "
                                   "with an 8-byte header length).")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > MAX_HEADER_BYTES or 8 + n > len(blob):
        raise ModelFileError(path, f"the weights' safetensors header claims {n} bytes, but the data hold "
                                   f"{len(blob) - 8} bytes after the length field (corrupt or truncated).")
    header = _parse_json(path, blob[8:8 + n], "the safetensors header")
    data_len = len(blob) - 8 - n
    for name, info in header.items():
        if name == "__metadata__":
            continue
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
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(DTYPES[dtype]).itemsize
        if offsets[1] - offsets[0] != nbytes:
            raise ModelFileError(path, f"weights entry {name!r} of shape {shape} and dtype {dtype} needs "
                                       f"{nbytes} bytes but its byte range holds {offsets[1] - offsets[0]}.")
    from safetensors.numpy import load
    try:
        arrays = load(bytes(blob))
    except Exception as e:  # the library's SafetensorError is not a public class
        raise ModelFileError(path, f"the weights are not valid safetensors data ({e}).") from e
    return {k: np.array(v) for k, v in arrays.items()}   # own, writable copies


def _metadata_of(path, blob):
    """The string metadata stored in a safetensors header (after _decode_weights has validated it)."""
    (n,) = struct.unpack("<Q", blob[:8])
    meta = json.loads(blob[8:8 + n]).get("__metadata__") or {}
    if not isinstance(meta, dict):
        raise ModelFileError(path, "the safetensors metadata is not an object.")
    return meta


def write_weights_file(path, weights, metadata=None):
    """Write {name: array} as one safetensors file, atomically. ``metadata``: {str: str}, stored in the header."""
    atomic_write(path, _encode_weights(weights, metadata))


def read_weights_file(path, max_bytes=MAX_WEIGHTS_BYTES):
    """({name: array}, {str: str} metadata) from a safetensors file, checked as described above."""
    blob = _read_bounded(path, max_bytes)
    arrays = _decode_weights(path, blob)
    return arrays, _metadata_of(path, blob)


def _read_bounded(path, max_bytes):
    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            raise ModelFileError(path, f"the file is {size} bytes, over the {max_bytes}-byte limit.")
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"No such file: {path}") from e
    except IsADirectoryError as e:
        raise ModelFileError(path, "is a directory, not a file.") from e


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
    """True when path is a zip archive (a model file, or something claiming to be one)."""
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def _read_member(path, z, info, limit):
    if info.file_size > limit:
        raise ModelFileError(path, f"member {info.filename} declares {info.file_size} bytes, over the "
                                   f"{limit}-byte limit.")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ModelFileError(path, f"member {info.filename} uses unsupported compression {info.compress_type}.")
    if info.flag_bits & 0x1:
        raise ModelFileError(path, f"member {info.filename} is encrypted.")
    try:
        with z.open(info) as f:
            data = f.read(limit + 1)   # never trust the declared size: stop reading past the limit
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError) as e:
        raise ModelFileError(path, f"member {info.filename} is corrupt ({e}).") from e
    if len(data) > limit or len(data) != info.file_size:
        raise ModelFileError(path, f"member {info.filename} does not have its declared size "
                                   f"({info.file_size} bytes).")
    return data


def read_model_file(path, max_bytes=MAX_WEIGHTS_BYTES):
    """(config dict, {name: array}, metadata dict) from a model file, after checking all of it."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such file: {path}")
    if os.path.isdir(path):
        raise ModelFileError(path, "is a directory, not a model file.")
    size = os.path.getsize(path)
    if size > max_bytes + (MAX_JSON_BYTES * 2):
        raise ModelFileError(path, f"the file is {size} bytes, over the size limit.")
    try:
        with open(path, "rb") as raw:
            head = raw.read(4)
        if head[:2] != b"PK":
            what = "empty" if not head else ("a bare safetensors weights file (use load_weights)"
                                             if _looks_like_safetensors(path) else "not a zip archive")
            raise ModelFileError(path, f"not a lamina model file: {what}.")
        with zipfile.ZipFile(path, "r") as z:
            infos = z.infolist()
            names = [i.filename for i in infos]
            unexpected = [n for n in names if n not in MEMBERS]
            if unexpected:
                raise ModelFileError(path, f"unexpected member(s) {', '.join(repr(n) for n in unexpected[:5])} "
                                           f"(a model file holds only {', '.join(MEMBERS)}).")
            if len(set(names)) != len(names):
                raise ModelFileError(path, "duplicate members in the archive.")
            missing = [m for m in MEMBERS if m not in names]
            if missing:
                raise ModelFileError(path, f"missing member(s) {', '.join(missing)}; not a lamina model file "
                                           "(or one cut short).")
            by_name = {i.filename: i for i in infos}
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
    except zipfile.BadZipFile as e:
        raise ModelFileError(path, f"not a lamina model file: corrupt or truncated zip archive ({e}).") from e
    except (EOFError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        raise ModelFileError(path, f"could not be read ({e}).") from e
    weights = _decode_weights(f"{path} ({WEIGHTS_NAME})", blob)
    return config, weights, metadata


def _looks_like_safetensors(path):
    try:
        with open(path, "rb") as f:
            head = f.read(9)
        return len(head) == 9 and head[8:9] == b"{"
    except OSError:
        return False


def read_weights_any(path):
    """{name: array} from a bare safetensors file or from the weights inside a model file."""
    if is_model_file(path):
        return read_model_file(path)[1]
    return read_weights_file(path)[0]

