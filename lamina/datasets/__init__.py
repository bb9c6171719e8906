"""Data sets with keras.datasets signatures: digits (bundled, offline), mnist, fashion_mnist, cifar10."""
