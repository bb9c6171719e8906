"""Boston housing prices (506 samples, 13 features), as keras.datasets.boston_housing."""
from . import _npz

__all__ = ["load_data"]

SHA256 = "f553886a1f8d56431e820c5b82552d9d95cfcb96d1e678153f8839538947dff5"   # Keras 3.15's file_hash


def load_data(path="boston_housing.npz", test_split=0.2, seed=113):
    """((x_train, y_train), (x_test, y_test)) after Keras's seeded shuffle and split."""
    _npz.check_split(test_split)
    f = _npz.load_npz(_npz.fetch(path, SHA256, "boston_housing"), ["x", "y"])
    x, y = _npz.shuffle(seed, f["x"], f["y"])
    return _npz.split(x, y, test_split)
