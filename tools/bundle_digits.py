"""Write lamina/data/digits.npz from scikit-learn's copy of the UCI optdigits 8x8 digits (run once).

The bundled file holds:
  images      uint8 (1797, 8, 8), pixel values 0..16 (counts of set pixels in 4x4 blocks of the 32x32 scan)
  labels      uint8 (1797,), 0..9
  test_index  int16 (360,), rows of the fixed test split, sorted

The split is stratified and seeded: for each class, 20% of its rows (rounded so that the test set has
exactly 360 rows) are drawn with numpy.random.default_rng(0); the other 1,437 rows are the training set.
The indices are stored, not recomputed, so the split never changes with the NumPy version.

Usage: python tools/bundle_digits.py   (needs scikit-learn; lamina itself does not)
"""
import os

import numpy as np
from sklearn.datasets import load_digits

N_TEST = 360


def stratified_test_index(labels, n_test, seed=0):
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    # Largest-remainder rounding so the per-class quotas sum to exactly n_test.
    exact = counts * n_test / len(labels)
    quota = np.floor(exact).astype(int)
    quota[np.argsort(-(exact - quota), kind="stable")[: n_test - quota.sum()]] += 1
    picked = [rng.choice(np.flatnonzero(labels == c), size=q, replace=False) for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(picked)).astype(np.int16)


def main():
    d = load_digits()
    images = d.images.astype(np.uint8)
    assert images.shape == (1797, 8, 8) and images.max() == 16 and np.array_equal(images, d.images)
    labels = d.target.astype(np.uint8)
    test_index = stratified_test_index(labels, N_TEST)
    out = os.path.join(os.path.dirname(__file__), "..", "lamina", "data", "digits.npz")
    np.savez_compressed(out, images=images, labels=labels, test_index=test_index)
    print(f"wrote {os.path.normpath(out)}: {os.path.getsize(out)} bytes")


if __name__ == "__main__":
    main()
