"""Readers for the published binary formats: IDX (MNIST, Fashion-MNIST) and the CIFAR-10 binary tarball.

Both parse bytes with NumPy (no pickle) and check every header and size, so a truncated or foreign file
raises a ValueError naming it instead of returning garbage.
"""
import gzip
import struct
import tarfile

import numpy as np

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path):
    """An array from an IDX file (gzip-compressed or not). Header: 2 zero bytes, a type code, the rank,
    then one big-endian uint32 per dimension; the data follow in C order."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"{path}: not a readable IDX file ({e}).") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number {raw[:4].hex() or 'empty'}).")
    dtype, rank = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    if len(raw) < 4 + 4 * rank:
        raise ValueError(f"{path}: IDX header is truncated.")
    shape = struct.unpack(f">{rank}I", raw[4:4 + 4 * rank])
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    body = raw[4 + 4 * rank:]
    if len(body) != expected:
        raise ValueError(f"{path}: IDX header declares shape {shape} ({expected} bytes of data) but the file "
                         f"holds {len(body)} bytes.")
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


CIFAR10_RECORD = 1 + 32 * 32 * 3   # one label byte, then the red, green and blue 32x32 planes


def read_cifar_binary(blob, name):
    """(images uint8 (n, 32, 32, 3), labels uint8 (n,)) from the bytes of one CIFAR-10 binary batch."""
    if len(blob) == 0 or len(blob) % CIFAR10_RECORD:
        raise ValueError(f"{name}: {len(blob)} bytes is not a whole number of {CIFAR10_RECORD}-byte "
                         "CIFAR-10 records.")
    records = np.frombuffer(blob, dtype=np.uint8).reshape(-1, CIFAR10_RECORD)
    labels = records[:, 0].copy()
    if labels.max() > 9:
        raise ValueError(f"{name}: label {int(labels.max())} is out of range 0..9; not a CIFAR-10 batch.")
    # Stored channels-first (C, H, W) per record; Keras returns channels-last.
    images = np.ascontiguousarray(records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, labels


def read_tar_members(path, names):
    """{name: bytes} for the named regular-file members of a .tar.gz, read in memory (nothing is extracted
    to disk, so member paths can never escape the cache)."""
    out = {}
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for member in tar:
                if member.name in names and member.isfile():
                    out[member.name] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable .tar.gz archive ({e}).") from e
    missing = [n for n in names if n not in out]
    if missing:
        raise ValueError(f"{path}: archive lacks {', '.join(missing)}; not the CIFAR-10 binary distribution.")
    return out
