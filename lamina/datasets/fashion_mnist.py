"""Fashion-MNIST: 70,000 28x28 grey images of clothes in 10 classes (Zalando Research), from IDX gzip files.

``(x_train, y_train), (x_test, y_test) = load_data()``: x uint8 (60000, 28, 28) / (10000, 28, 28),
y uint8 labels 0..9 (T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot).
"""
from .mnist import load_idx_set

__all__ = ["load_data"]

ORIGINS = ["https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
           "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]
FILES = {
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}


def load_data():
    """Download (once) and return Fashion-MNIST as ((x_train, y_train), (x_test, y_test))."""
    return load_idx_set("fashion_mnist", ORIGINS, FILES)
