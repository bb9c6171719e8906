"""California housing prices (20,640 districts, 8 features), as keras.datasets.california_housing."""
from . import _npz

__all__ = ["load_data"]

SHA256 = "1a2e3a52e0398de6463aebe6f4a8da34fb21fbb6b934cf88c3425e766f2a1a6f"   # Keras 3.15's file_hash


def load_data(version="large", path="california_housing.npz", test_split=0.2, seed=113):
    """((x_train, y_train), (x_test, y_test)); version='small' keeps the first 600 districts."""
    _npz.check_split(test_split)
    f = _npz.load_npz(_npz.fetch(path, SHA256, "california_housing"), ["x", "y"])
    x, y = f["x"], f["y"]
    if version == "small":
        x, y = x[:600], y[:600]
    elif version != "large":
        raise ValueError(f"Argument `version` must be one of 'small', 'large'. Received: version={version}")
    x, y = _npz.shuffle(seed, x, y)
    return _npz.split(x, y, test_split)
