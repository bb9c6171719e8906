"""IMDB movie reviews (25,000 train / 25,000 test) as word-index sequences, as keras.datasets.imdb.

The published imdb.npz stores the ragged sequences as pickled object arrays; lamina reads them with a
restricted opcode reader (``lamina.datasets._intpickle``) and never unpickles.
"""
import numpy as np

from . import _npz

__all__ = ["load_data", "get_word_index"]

FILENAME = "imdb.npz"
SHA256 = "69664113be75683a8fe16e3ed0ab59fda8886cb3cd7ada244f7d9544e4676b9f"   # Keras 3.15's file_hash
WORD_INDEX = "imdb_word_index.json"
WORD_INDEX_MD5 = "bfafd718b763782e994055a2d397834f"                           # Keras 3.15's file_hash (MD5)


def load_data(path="imdb.npz", num_words=None, skip_top=0, maxlen=None, seed=113, start_char=1, oov_char=2,
              index_from=3, **kwargs):
    """((x_train, y_train), (x_test, y_test)): x object arrays of int lists, y int labels (0/1).

    Args (Keras's): path (file name in the cache), num_words (keep the most frequent words only; others
    become oov_char, or are dropped when oov_char is None), skip_top, maxlen (drop longer sequences),
    seed (shuffle), start_char, oov_char, index_from (offset added to every word index)."""
    if kwargs:
        raise TypeError(f"Unrecognized keyword arguments: {sorted(kwargs)}")
    f = _npz.load_npz(_npz.fetch(path, SHA256, "imdb"), ["x_train", "y_train", "x_test", "y_test"])
    return from_arrays(f["x_train"], f["y_train"], f["x_test"], f["y_test"], num_words, skip_top, maxlen, seed,
                       start_char, oov_char, index_from)


def from_arrays(x_train, labels_train, x_test, labels_test, num_words=None, skip_top=0, maxlen=None, seed=113,
                start_char=1, oov_char=2, index_from=3):
    """Keras's IMDB post-processing on already loaded arrays (shuffle each split, index, cut, filter)."""
    x_train, labels_train = _npz.shuffle(seed, x_train, labels_train)
    rng_state = np.random.RandomState(seed)  # Keras draws the test permutation from the same generator
    idx = np.arange(len(x_train))
    rng_state.shuffle(idx)
    idx = np.arange(len(x_test))
    rng_state.shuffle(idx)
    x_test, labels_test = x_test[idx], labels_test[idx]
    x_train = _npz.index_words(x_train, num_words, skip_top, start_char, oov_char, index_from)
    x_test = _npz.index_words(x_test, num_words, skip_top, start_char, oov_char, index_from)
    if maxlen:
        x_train, labels_train = _npz.remove_long_seq(maxlen, x_train, labels_train)
        x_test, labels_test = _npz.remove_long_seq(maxlen, x_test, labels_test)
        if not x_train or not x_test:
            raise ValueError(f"After filtering for sequences shorter than maxlen={maxlen}, no sequence was kept. "
                             "Increase maxlen.")
    xs = _npz.cut_vocabulary(x_train + x_test, num_words, skip_top, oov_char)
    labels = np.concatenate([labels_train, labels_test])
    k = len(x_train)
    return ((_npz.object_array(xs[:k]), labels[:k]), (_npz.object_array(xs[k:]), labels[k:]))


def get_word_index(path="imdb_word_index.json"):
    """{word: index} (indices start at 1; add index_from to match load_data's sequences)."""
    return _npz.load_word_index(path, WORD_INDEX_MD5, "imdb")
