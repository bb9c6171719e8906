"""Keras 3's ``.keras`` archive, as files: a zip of config.json, metadata.json and model.weights.h5.

This module knows the container only (zip members, the HDF5 weights file, limits); which weight goes where
is decided in lamina.models.keras_format. Every archive is treated as hostile: member names, counts and
sizes are checked before reading, the HDF5 file is opened from memory (it cannot name other files:
external and soft links are refused), each dataset's dtype and size are checked against the limits before
its data is read, and nothing is ever unpickled (Keras's ``model.weights.npz`` variant stores pickled
objects and is refused).
"""
import datetime
import io
import json
import os
import zipfile

import numpy as np

from .formats import (MAX_INFLATE_RATIO, MAX_JSON_BYTES, MAX_WEIGHTS_BYTES, ModelFileError, _parse_json, _read_member,
                      atomic_write, open_zip)
from .limits import open_regular

__all__ = ["CONFIG", "METADATA", "WEIGHTS_H5", "is_keras_archive", "read_keras_archive", "write_keras_archive",
           "read_weights_h5", "write_weights_h5"]

CONFIG, METADATA, WEIGHTS_H5, WEIGHTS_NPZ, ASSETS = "config.json", "metadata.json", "model.weights.h5", \
    "model.weights.npz", "assets/"
MAX_DATASETS = 100_000
_NUMERIC = "biuf"


def is_keras_archive(path):
    """True when path is a zip whose members are Keras's (config.json beside model.weights.h5)."""
    try:
        with open_regular(path) as f:
            if f.read(4) != b"PK\x03\x04":
                return False
            f.seek(0)
            with open_zip(path, f) as z:
                names = set(z.namelist())
    except (OSError, ModelFileError):
        return False
    return CONFIG in names and (WEIGHTS_H5 in names or WEIGHTS_NPZ in names)


def write_keras_archive(path, config, weight_groups, keras_version="3.15.1"):
    """Write a .keras archive atomically. weight_groups: [(group path, [arrays])] in Keras's layout."""
    config_bytes = json.dumps(config, allow_nan=False).encode("utf-8")
    metadata = {"keras_version": keras_version,
                "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")}
    h5_bytes = write_weights_h5(weight_groups)

    def write(f):
        with zipfile.ZipFile(f, "w") as z:
            z.writestr(METADATA, json.dumps(metadata), compress_type=zipfile.ZIP_STORED)
            z.writestr(CONFIG, config_bytes, compress_type=zipfile.ZIP_STORED)
            z.writestr(WEIGHTS_H5, h5_bytes, compress_type=zipfile.ZIP_STORED)

    atomic_write(path, write)


def write_weights_h5(weight_groups, target=None):
    """HDF5 bytes (or a file at target) holding each group's arrays as datasets "<group>/<i>" (a list of
    arrays) or "<group>/<name>" (a dict of name -> array)."""
    import h5py
    buffer = io.BytesIO() if target is None else None
    with h5py.File(buffer if target is None else target, "w") as f:
        for group_path, arrays in weight_groups:
            group = f.require_group(group_path)
            for name, a in (arrays.items() if isinstance(arrays, dict) else enumerate(arrays)):
                group.create_dataset(str(name), data=np.asarray(a))
    return buffer.getvalue() if target is None else None


def _walk_h5(path, group, prefix, out, budget):
    """Fill out[prefix + name] = array for every dataset under group, following hard links only."""
    import h5py
    for name in group.keys():
        link = group.get(name, getlink=True)
        if not isinstance(link, h5py.HardLink):
            raise ModelFileError(path, f"the weights file has a {type(link).__name__} at {prefix}{name}; only "
                                       "plain groups and datasets are read (no links to other files).")
        item = group[name]
        full = prefix + name
        if isinstance(item, h5py.Group):
            _walk_h5(path, item, full + "/", out, budget)
            continue
        if not isinstance(item, h5py.Dataset):
            raise ModelFileError(path, f"unexpected object at {full} in the weights file.")
        if len(out) >= MAX_DATASETS:
            raise ModelFileError(path, f"the weights file holds more than {MAX_DATASETS} datasets.")
        if item.dtype.kind not in _NUMERIC or item.dtype.hasobject:
            raise ModelFileError(path, f"weight {full} has dtype {item.dtype}; only numbers are read.")
        if item.is_virtual or item.external:
            raise ModelFileError(path, f"weight {full} stores its data outside the file; refused.")
        nbytes = int(np.prod(item.shape, dtype=np.float64)) * item.dtype.itemsize
        stored = item.id.get_storage_size()
        if nbytes > 4096 and nbytes > MAX_INFLATE_RATIO * stored:
            raise ModelFileError(path, f"weight {full} declares shape {item.shape} ({nbytes} bytes) but stores "
                                       f"{stored} bytes; refused before reading it.")
        budget[0] -= nbytes
        if budget[0] < 0:
            raise ModelFileError(path, f"the weights add up to more than the {MAX_WEIGHTS_BYTES}-byte limit.")
        out[full] = item[()] if item.shape else np.asarray(item[()])


def read_weights_h5(path, blob):
    """{dataset path: array} from HDF5 bytes, checked as described in the module docstring."""
    import h5py
    if not blob.startswith(b"\x89HDF\r\n\x1a\n"):
        raise ModelFileError(path, f"{WEIGHTS_H5} is not an HDF5 file.")
    out = {}
    try:
        with h5py.File(io.BytesIO(blob), "r") as f:
            _walk_h5(path, f, "", out, [min(MAX_WEIGHTS_BYTES, MAX_INFLATE_RATIO * len(blob))])
    except ModelFileError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, IndexError, OverflowError, RecursionError,
            UnicodeDecodeError, AttributeError) as e:
        raise ModelFileError(path, f"{WEIGHTS_H5} is corrupt ({' '.join(str(e).split())}).") from e
    return out


def read_keras_archive(path):
    """(config dict, metadata dict, {dataset path: array}) of a .keras archive."""
    with open_regular(path, ".keras file") as f:
        size = os.fstat(f.fileno()).st_size
        with open_zip(path, f, max_members=1000) as z:
            infos = z.infolist()
            by_name = {i.filename: i for i in infos}
            if WEIGHTS_NPZ in by_name and WEIGHTS_H5 not in by_name:
                raise ModelFileError(path, f"its weights are in {WEIGHTS_NPZ}, which stores pickled objects; "
                                           "lamina never unpickles. Re-save the model with Keras as .keras "
                                           "(model.weights.h5).")
            missing = [m for m in (CONFIG, WEIGHTS_H5) if m not in by_name]
            if missing:
                raise ModelFileError(path, f"missing member(s) {', '.join(missing)}: not a Keras 3 .keras file.")
            if sum(i.compress_size for i in infos) > size:
                raise ModelFileError(path, "the archive's members claim more bytes than the file holds.")
            config = _parse_json(path, _read_member(path, z, by_name[CONFIG], MAX_JSON_BYTES), CONFIG)
            metadata = {}
            if METADATA in by_name:
                metadata = _parse_json(path, _read_member(path, z, by_name[METADATA], 1 << 20), METADATA)
            blob = _read_member(path, z, by_name[WEIGHTS_H5], MAX_WEIGHTS_BYTES)
    return config, metadata, read_weights_h5(path, blob)
