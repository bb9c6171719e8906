"""The 1,797 8x8 handwritten digits of UCI's optdigits (as scikit-learn ships them), bundled with lamina.

``(x_train, y_train), (x_test, y_test) = load_data()`` works offline:
- x: uint8 (1437, 8, 8) and (360, 8, 8); each pixel counts the set pixels of a 4x4 block of the original
  32x32 bitmap, so values run 0..16 (divide by 16 to get [0, 1]).
- y: uint8 (1437,) and (360,), labels 0..9.
The split is fixed: a stratified 20% per class (seed 0) is the test set, stored as indices in
lamina/data/digits.npz (made once by tools/bundle_digits.py), so it never changes between versions.
"""
import os

import numpy as np

__all__ = ["load_data", "load_all"]

PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data", "digits.npz")


def load_all():
    """(images uint8 (1797, 8, 8), labels uint8 (1797,), test_index int (360,)) from the bundled file."""
    with np.load(PATH, allow_pickle=False) as f:
        return f["images"], f["labels"], f["test_index"].astype(np.int64)


def load_data():
    """The bundled digits as ((x_train, y_train), (x_test, y_test)), 1,437 / 360 samples."""
    images, labels, test_index = load_all()
    is_test = np.zeros(len(labels), dtype=bool)
    is_test[test_index] = True
    return (images[~is_test], labels[~is_test]), (images[is_test], labels[is_test])
