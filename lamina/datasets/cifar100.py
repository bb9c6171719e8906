"""CIFAR-100: 60,000 32x32 colour images in 100 fine / 20 coarse classes, from the BINARY distribution.

``(x_train, y_train), (x_test, y_test) = load_data(label_mode="fine")``: x uint8 (50000, 32, 32, 3) /
(10000, 32, 32, 3) channels-last, y uint8 (n, 1), as keras.datasets.cifar100. Keras reads the pickled
"python version"; lamina reads cifar-100-binary.tar.gz (3,074-byte records: coarse label, fine label,
then the red, green and blue 32x32 planes) and never unpickles.

Integrity: the toronto.edu page publishes an MD5 for this archive (checked after download); no SHA-256
from a public source was found, so the archive's SHA-256 is not pinned.
"""
import hashlib
import os

import numpy as np

from ..utils.data_utils import get_file
from ._readers import read_tar_members

__all__ = ["load_data"]

ORIGINS = ["https://www.cs.toronto.edu/~kriz/"]
FILENAME = "cifar-100-binary.tar.gz"
MD5 = "03b5dce01913d631647c71ecec9e9cb8"   # published MD5 of cifar-100-binary.tar.gz
FOLDER = "cifar-100-binary/"
RECORD = 2 + 32 * 32 * 3


def read_cifar100_binary(blob, name):
    """(images uint8 (n, 32, 32, 3), coarse labels (n,), fine labels (n,)) from one CIFAR-100 binary file."""
    if len(blob) == 0 or len(blob) % RECORD:
        raise ValueError(f"{name}: {len(blob)} bytes is not a whole number of {RECORD}-byte CIFAR-100 records.")
    rec = np.frombuffer(blob, dtype=np.uint8).reshape(-1, RECORD)
    coarse, fine = rec[:, 0].copy(), rec[:, 1].copy()
    if coarse.max() > 19 or fine.max() > 99:
        raise ValueError(f"{name}: labels out of range (coarse <= 19, fine <= 99); not a CIFAR-100 binary file.")
    images = np.ascontiguousarray(rec[:, 2:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return images, coarse, fine


def load_data(label_mode="fine"):
    """Download (once) and return CIFAR-100 as ((x_train, y_train), (x_test, y_test))."""
    if label_mode not in ("fine", "coarse"):
        raise ValueError(f'`label_mode` must be one of `"fine"`, `"coarse"`. Received: label_mode={label_mode}.')
    path = get_file(FILENAME, [o + FILENAME for o in ORIGINS], file_hash=None,
                    cache_subdir=os.path.join("datasets", "cifar100"))
    md5 = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            md5.update(chunk)
    if md5.hexdigest() != MD5:
        raise ValueError(f"{path}: MD5 {md5.hexdigest()} does not match the published {MD5}; delete the file to "
                         "download it again.")
    return from_archive(path, label_mode)


def from_archive(path, label_mode="fine"):
    """Parse a cifar-100-binary.tar.gz already on disk."""
    blobs = read_tar_members(path, [FOLDER + "train.bin", FOLDER + "test.bin"])
    out = []
    for split in ("train", "test"):
        x, coarse, fine = read_cifar100_binary(blobs[f"{FOLDER}{split}.bin"], f"{path}:{split}.bin")
        out.append((x, (fine if label_mode == "fine" else coarse).reshape(-1, 1)))
    return tuple(out)
