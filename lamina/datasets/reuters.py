"""Reuters newswire topics (11,228 wires, 46 topics) as word-index sequences, as keras.datasets.reuters.

The published reuters.npz stores the ragged sequences as a pickled object array; lamina reads it with a
restricted opcode reader (``lamina.datasets._intpickle``) and never unpickles.
"""
from . import _npz

__all__ = ["load_data", "get_word_index", "get_label_names"]

FILENAME = "reuters.npz"
SHA256 = "d6586e694ee56d7a4e65172e12b3e987c03096cb01eab99753921ef915959916"   # Keras 3.15's file_hash
WORD_INDEX_MD5 = "4d44cc38712099c9e383dc6e5f11a921"                           # Keras 3.15's file_hash (MD5)


def load_data(path="reuters.npz", num_words=None, skip_top=0, maxlen=None, test_split=0.2, seed=113, start_char=1,
              oov_char=2, index_from=3, **kwargs):
    """((x_train, y_train), (x_test, y_test)) with Keras's arguments (see imdb.load_data; test_split: the
    fraction of the shuffled wires kept for the test split)."""
    if kwargs:
        raise TypeError(f"Unrecognized keyword arguments: {sorted(kwargs)}")
    f = _npz.load_npz(_npz.fetch(path, SHA256, "reuters"), ["x", "y"])
    return from_arrays(f["x"], f["y"], num_words, skip_top, maxlen, test_split, seed, start_char, oov_char,
                       index_from)


def from_arrays(xs, labels, num_words=None, skip_top=0, maxlen=None, test_split=0.2, seed=113, start_char=1,
                oov_char=2, index_from=3):
    """Keras's Reuters post-processing on loaded arrays (shuffle, index, filter, cut, split)."""
    import numpy as np
    xs, labels = _npz.shuffle(seed, xs, labels)
    xs = _npz.index_words(xs, num_words, skip_top, start_char, oov_char, index_from)
    if maxlen:
        xs, labels = _npz.remove_long_seq(maxlen, xs, labels)
    xs = _npz.cut_vocabulary(xs, num_words, skip_top, oov_char)
    k = int(len(xs) * (1 - test_split))
    return ((_npz.object_array(xs[:k]), np.array(labels[:k])), (_npz.object_array(xs[k:]), np.array(labels[k:])))


def get_word_index(path="reuters_word_index.json"):
    """{word: index} (indices start at 1; add index_from to match load_data's sequences)."""
    return _npz.load_word_index(path, WORD_INDEX_MD5, "reuters")


def get_label_names():
    """The 46 topic names, in label order (as keras.datasets.reuters.get_label_names)."""
    return ("cocoa", "grain", "veg-oil", "earn", "acq", "wheat", "copper", "housing", "money-supply", "coffee",
            "sugar", "trade", "reserves", "ship", "cotton", "carcass", "crude", "nat-gas", "cpi", "money-fx",
            "interest", "gnp", "meal-feed", "alum", "oilseed", "gold", "tin", "strategic-metal", "livestock",
            "retail", "ipi", "iron-steel", "rubber", "heat", "jobs", "lei", "bop", "zinc", "orange", "pet-chem",
            "dlr", "gas", "silver", "wpi", "hog", "lead")
