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
           "read_weights_h5", "write_weights_h5", "has_assets", "extract_assets"]

CONFIG, METADATA, WEIGHTS_H5, WEIGHTS_NPZ, ASSETS = "config.json", "metadata.json", "model.weights.h5", \
    "model.weights.npz", "assets/"
MAX_DATASETS = 100_000
MAX_ASSETS_BYTES = 1 << 30   # all the assets of one archive, inflated
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


def write_keras_archive(path, config, weight_groups, keras_version="3.15.1", assets=()):
    """Write a .keras archive atomically. weight_groups: [(group path, [arrays])] in Keras's layout; assets:
    [(member name under assets/, bytes)], the files the layers' save_assets wrote (Keras's layout)."""
    config_bytes = json.dumps(config, allow_nan=False).encode("utf-8")
    metadata = {"keras_version": keras_version,
                "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M:%S")}
    h5_bytes = write_weights_h5(weight_groups)

    def write(f):
        with zipfile.ZipFile(f, "w") as z:
            z.writestr(METADATA, json.dumps(metadata), compress_type=zipfile.ZIP_STORED)
            z.writestr(CONFIG, config_bytes, compress_type=zipfile.ZIP_STORED)
            z.writestr(WEIGHTS_H5, h5_bytes, compress_type=zipfile.ZIP_STORED)
            for name, data in assets:
                z.writestr(ASSETS + name, data, compress_type=zipfile.ZIP_STORED)

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
            for info in infos:
                _check_member_name(path, info)
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


def _check_member_name(path, info):
    """Refuse a member that could land outside a folder it is extracted to (an absolute path, a '..', a drive, a
    backslash) or that is a link, whether or not lamina extracts it."""
    name = info.filename
    parts = name.split("/")
    if (name.startswith("/") or "\\" in name or "\0" in name or ":" in parts[0] or ".." in parts
            or any(p in ("", ".") for p in parts[:-1])):
        raise ModelFileError(path, f"member {name!r} has an unsafe path (absolute, '..' or odd); refused.")
    if (info.external_attr >> 16) & 0o170000 == 0o120000:
        raise ModelFileError(path, f"member {name!r} is a symbolic link; refused.")


def has_assets(path):
    """True when the archive at path holds files under assets/."""
    with open_regular(path, ".keras file") as f:
        with open_zip(path, f, max_members=1000) as z:
            return any(n.startswith(ASSETS) and not n.endswith("/") for n in z.namelist())


def extract_assets(path, prefix, dest):
    """Copy the files under assets/<prefix>/ of the archive at path into dest (a folder lamina made), each
    member's name checked and its size bounded before it is inflated. Returns the number of files copied."""
    want = ASSETS + (prefix.strip("/") + "/" if prefix.strip("/") else "")   # "": the model's own, all of them
    budget, count = MAX_ASSETS_BYTES, 0
    dest_real = os.path.realpath(dest)
    with open_regular(path, ".keras file") as f:
        with open_zip(path, f, max_members=1000) as z:
            for info in z.infolist():
                _check_member_name(path, info)
                if not info.filename.startswith(want) or info.filename.endswith("/"):
                    continue
                budget -= info.file_size
                if budget < 0:
                    raise ModelFileError(path, f"the assets add up to more than the {MAX_ASSETS_BYTES}-byte limit.")
                data = _read_member(path, z, info, MAX_ASSETS_BYTES)
                target = os.path.realpath(os.path.join(dest, *info.filename[len(want):].split("/")))
                if os.path.commonpath([dest_real, target]) != dest_real:
                    raise ModelFileError(path, f"member {info.filename!r} would land outside its folder; refused.")
                try:
                    os.makedirs(os.path.dirname(target), exist_ok=True)
                    with open(target, "xb") as out:
                        out.write(data)
                except OSError as e:   # a file where a folder should be (a/x and a/x/y), a name the OS refuses
                    raise ModelFileError(path, f"cannot extract member {info.filename!r}: {e}") from e
                count += 1
    return count
