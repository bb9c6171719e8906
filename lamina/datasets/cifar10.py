"""CIFAR-10: 60,000 32x32 colour images in 10 classes (Krizhevsky, 2009), from the BINARY distribution.

``(x_train, y_train), (x_test, y_test) = load_data()``: x uint8 (50000, 32, 32, 3) / (10000, 32, 32, 3)
channels-last, y uint8 (50000, 1) / (10000, 1), as keras.datasets.cifar10. lamina reads
cifar-10-binary.tar.gz (fixed 3,073-byte records) and never the pickled "python version".
Classes: airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck.
"""
import os

import numpy as np

from ..utils.data_utils import get_file
from ._readers import read_cifar_binary, read_tar_members

__all__ = ["load_data"]

ORIGINS = ["https://www.cs.toronto.edu/~kriz/"]
FILENAME = "cifar-10-binary.tar.gz"
SHA256 = "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"   # 170,052,171 bytes
FOLDER = "cifar-10-batches-bin/"
TRAIN_BATCHES = [f"{FOLDER}data_batch_{i}.bin" for i in range(1, 6)]
TEST_BATCH = f"{FOLDER}test_batch.bin"


def load_data():
    """Download (once) and return CIFAR-10 as ((x_train, y_train), (x_test, y_test))."""
    path = get_file(FILENAME, [o + FILENAME for o in ORIGINS], file_hash=SHA256, cache_subdir=os.path.join("datasets", "cifar10"))
    blobs = read_tar_members(path, TRAIN_BATCHES + [TEST_BATCH])
    train = [read_cifar_binary(blobs[n], f"{path}:{n}") for n in TRAIN_BATCHES]
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train]).reshape(-1, 1)
    x_test, y_test = read_cifar_binary(blobs[TEST_BATCH], f"{path}:{TEST_BATCH}")
    return (x_train, y_train), (x_test, y_test.reshape(-1, 1))
