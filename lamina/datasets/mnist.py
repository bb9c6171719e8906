"""MNIST: 70,000 28x28 grey handwritten digits (LeCun, Cortes and Burges), read from the IDX gzip files.

``(x_train, y_train), (x_test, y_test) = load_data()``: x uint8 (60000, 28, 28) / (10000, 28, 28) with
values 0..255, y uint8 (60000,) / (10000,) with values 0..9, as keras.datasets.mnist.
"""
import os

from ..utils.data_utils import get_files
from ._readers import read_idx

__all__ = ["load_data"]

# Mirrors tried in order (the original yann.lecun.com site is often unreachable).
ORIGINS = ["https://storage.googleapis.com/cvdf-datasets/mnist/",
           "https://ossci-datasets.s3.amazonaws.com/mnist/"]
# SHA-256 of the published gzip files.
FILES = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}


def load_idx_set(subdir, origins, files, image_shape=(28, 28)):
    paths = get_files({name: ([o + name for o in origins], sha) for name, sha in files.items()},
                      cache_subdir=os.path.join("datasets", subdir))
    x_train = read_idx(paths["train-images-idx3-ubyte.gz"])
    y_train = read_idx(paths["train-labels-idx1-ubyte.gz"])
    x_test = read_idx(paths["t10k-images-idx3-ubyte.gz"])
    y_test = read_idx(paths["t10k-labels-idx1-ubyte.gz"])
    for x, y, name in ((x_train, y_train, "train"), (x_test, y_test, "t10k")):
        if x.ndim != 3 or x.shape[1:] != image_shape or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"{subdir}: the {name} files hold images {x.shape} and labels {y.shape}; expected "
                             f"(n, {image_shape[0]}, {image_shape[1]}) images and (n,) labels.")
    return (x_train, y_train), (x_test, y_test)


def load_data(path="mnist.npz"):
    """Download (once) and return MNIST as ((x_train, y_train), (x_test, y_test)).

    Args: path: accepted for keras.datasets signature compatibility; lamina caches the four IDX files
    under ``$LAMINA_HOME/datasets/mnist`` instead.
    """
    return load_idx_set("mnist", ORIGINS, FILES)
