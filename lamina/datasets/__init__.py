"""Data sets with keras.datasets signatures: digits (bundled, offline), mnist, fashion_mnist,
cifar10, cifar100, imdb, reuters, boston_housing, california_housing.

``(x_train, y_train), (x_test, y_test) = lamina.datasets.mnist.load_data()``. Downloads are cached under
``$LAMINA_HOME/datasets`` (default ``~/.lamina``), verified by SHA-256 and never unpickled.
"""
from . import digits, mnist, fashion_mnist, cifar10, text  # noqa: F401
from . import imdb, reuters, cifar100, boston_housing, california_housing  # noqa: F401

__all__ = ["digits", "mnist", "fashion_mnist", "cifar10", "text", "imdb", "reuters", "cifar100", "boston_housing",
           "california_housing"]
