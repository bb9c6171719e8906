"""Loading the Keras data set .npz files without unpickling: numeric members through
np.load(allow_pickle=False), object members (ragged integer sequences) through the restricted reader."""
import os
import zipfile

import numpy as np

from ..utils.data_utils import get_file
from ._intpickle import read_npy_int_sequences

KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"


def fetch(fname, sha256, subdir):
    """The cached path of one of Keras's published files, downloaded (once) and checked by SHA-256."""
    return get_file(fname, KERAS_ORIGIN + fname, file_hash=sha256, cache_subdir=os.path.join("datasets", subdir))


def load_npz(path, names):
    """{name: array} for the named members of an .npz archive (object arrays become 1-D arrays of int lists)."""
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            members = set(z.namelist())
            for name in names:
                member = name + ".npy"
                if member not in members:
                    raise ValueError(f"{path}: the archive lacks {member}.")
                out[name] = read_npy_int_sequences(z.read(member), f"{path}:{member}")
    except zipfile.BadZipFile as e:
        raise ValueError(f"{path}: not a readable .npz archive ({e}).") from e
    return out


def shuffle(seed, *arrays):
    """Keras's shuffle: one permutation from np.random.RandomState(seed) applied to each array."""
    rng = np.random.RandomState(seed)
    idx = np.arange(len(arrays[0]))
    rng.shuffle(idx)
    return [a[idx] for a in arrays]


def check_split(test_split):
    if not 0 <= test_split < 1:
        raise ValueError(f"Invalid `test_split` argument: {test_split}. It must be between 0 and 1 (exclusive of 1).")


def split(x, y, test_split):
    k = int(len(x) * (1 - test_split))
    return (np.array(x[:k]), np.array(y[:k])), (np.array(x[k:]), np.array(y[k:]))


def remove_long_seq(maxlen, seqs, labels):
    keep = [i for i, s in enumerate(seqs) if len(s) < maxlen]
    return [seqs[i] for i in keep], labels[np.asarray(keep, dtype=np.int64)] if keep else labels[:0]


def index_words(xs, num_words, skip_top, start_char, oov_char, index_from):
    """Keras's word-index arithmetic on lists of ints (start marker, offset, vocabulary cut, OOV)."""
    if start_char is not None:
        xs = [[start_char] + [w + index_from for w in x] for x in xs]
    elif index_from:
        xs = [[w + index_from for w in x] for x in xs]
    else:
        xs = [list(x) for x in xs]
    return xs


def cut_vocabulary(xs, num_words, skip_top, oov_char):
    if not num_words:
        num_words = max(max(x) for x in xs if x) if any(xs) else 0
    if oov_char is not None:
        return [[w if skip_top <= w < num_words else oov_char for w in x] for x in xs]
    return [[w for w in x if skip_top <= w < num_words] for x in xs]


def object_array(seqs):
    out = np.empty(len(seqs), dtype=object)
    for i, s in enumerate(seqs):
        out[i] = s
    return out


def load_word_index(fname, md5, subdir):
    """The published word -> index JSON (Keras checks it by MD5; lamina checks the same MD5 after download)."""
    import hashlib
    import json
    path = get_file(fname, KERAS_ORIGIN + fname, file_hash=None, cache_subdir=os.path.join("datasets", subdir))
    with open(path, "rb") as f:
        raw = f.read()
    if hashlib.md5(raw).hexdigest() != md5:
        raise ValueError(f"{path}: MD5 {hashlib.md5(raw).hexdigest()} does not match the published {md5}; "
                         "delete the file to download it again.")
    return json.loads(raw.decode("utf-8"))
