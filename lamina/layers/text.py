"""Text preprocessing: TextVectorization turns raw strings into token ids (or bag-of-token vectors).

The pipeline, as in Keras 3: standardise each string (lower-case and/or strip punctuation), split it into
tokens (words on whitespace, or characters), optionally form n-grams, then look each token up in a
vocabulary learned by ``adapt()`` or given directly. Strings are handled on the CPU with Python's own
string methods (one call per string, no loop over characters); the lookup is one dict ``get`` per token
and the padding, multi-hot and count encodings are single NumPy scatter operations.

In 'int' mode index 0 is the padding token '' and index 1 the out-of-vocabulary token '[UNK]'; learned
tokens follow by descending frequency, ties broken by the token, higher first (Keras's rule). In the
'multi_hot', 'count' and 'tf_idf' modes there is no padding entry: '[UNK]' is index 0.
"""
import collections
import itertools
import os
import string

import numpy as np

from .. import backend
from ..registry import get_registered_object, serialize
from ..tensor import Tensor
from .layer import KerasTensor, Layer

__all__ = ["TextVectorization"]

_STANDARDIZE = ("lower_and_strip_punctuation", "lower", "strip_punctuation")
_SPLIT = ("whitespace", "character")
_MODES = ("int", "multi_hot", "count", "tf_idf")
MASK_TOKEN, OOV_TOKEN = "", "[UNK]"
# Keras lower-cases with tf.strings.lower, which changes ASCII letters only, and strips exactly the 32
# ASCII punctuation characters of string.punctuation: two translation tables do both in C.
_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
_STRIP = str.maketrans("", "", string.punctuation)


MAX_VOCABULARY_FILE_BYTES = 1 << 30   # a vocabulary file larger than 1 GiB is refused, not read


def _as_strings(data, who):
    """A NumPy array of Python strings from a str, a list/tuple/array of str or bytes, or a Tensor of them."""
    if isinstance(data, Tensor):
        data = data.data
    if backend.is_cupy_array(data):
        data = data.get()
    arr = np.asarray(data, dtype=object)
    flat = arr.reshape(-1)
    if flat.size and not all(isinstance(s, str) for s in flat):
        # bytes are decoded as UTF-8 (tf.string semantics); anything else is a caller error
        try:
            flat = np.array([s.decode("utf-8") if isinstance(s, bytes) else s for s in flat], dtype=object)
        except (AttributeError, UnicodeDecodeError) as e:
            raise ValueError(f"{who}: expected strings. Received {type(data).__name__} holding "
                             f"{type(flat[0]).__name__} values ({e}).") from None
        if not all(isinstance(s, str) for s in flat):
            bad = next(s for s in flat if not isinstance(s, str))
            raise ValueError(f"{who}: expected strings. Received a value of type {type(bad).__name__}: {bad!r}")
        arr = flat.reshape(arr.shape)
    return arr


class TextVectorization(Layer):
    """Map strings to integer token ids ('int') or to bag-of-token vectors ('multi_hot', 'count', 'tf_idf').

    Args:
        max_tokens: largest vocabulary size, special tokens included ('' and '[UNK]' in 'int' mode, '[UNK]'
            otherwise); None for no limit. ``adapt`` keeps the most frequent tokens.
        standardize: 'lower_and_strip_punctuation' (default), 'lower', 'strip_punctuation', None, or a
            callable str -> str (kept in memory only: a model file cannot store a function).
            'lower' changes ASCII letters only, as Keras's tf.strings.lower.
        split: 'whitespace' (runs of whitespace separate tokens), 'character' (every character, spaces
            included, is a token), None (each input string is one token), or a callable str -> list of str.
        ngrams: None, an int n (all 1..n-grams) or a tuple of widths; n-grams join tokens with one space.
        output_mode: 'int' (ids), 'multi_hot' (1 where a token occurs), 'count' (occurrences) or 'tf_idf'.
        output_sequence_length: in 'int' mode, pad with 0 or cut at the end to this length; default the
            longest sequence of the batch.
        pad_to_max_tokens: in the vector modes, make the output max_tokens wide whatever the vocabulary size.
        vocabulary: list of tokens (or a path to a file with one token per line) instead of ``adapt``.
        idf_weights: with 'tf_idf' and a given vocabulary, one weight per vocabulary token.
    Input: a string, or a list/array of N strings (shape (N,) or (N, 1)).
    Output: 'int' mode int64 (N, L); other modes float32 (N, vocabulary_size) (or (N, max_tokens)).
    Not differentiable (strings in); it has no weights: the vocabulary lives in get_config.

    >>> layer = TextVectorization(output_sequence_length=4)
    >>> layer.adapt(["the cat sat", "the dog"])
    >>> layer.get_vocabulary()
    ['', '[UNK]', 'the', 'sat', 'dog', 'cat']
    >>> layer(["The cat, the bird!"]).numpy().tolist()
    [[2, 5, 2, 1]]
    """

    def __init__(self, max_tokens=None, standardize="lower_and_strip_punctuation", split="whitespace", ngrams=None,
                 output_mode="int", output_sequence_length=None, pad_to_max_tokens=False, vocabulary=None,
                 idf_weights=None, sparse=False, ragged=False, encoding="utf-8", **kwargs):
        kwargs.pop("vocabulary_size", None)        # written by get_config for Keras's sake; derived here
        has_input_vocabulary = kwargs.pop("has_input_vocabulary", vocabulary is not None)
        super().__init__(**kwargs)
        who = f"TextVectorization '{self.name}'"
        if not (standardize is None or callable(standardize) or standardize in _STANDARDIZE):
            raise ValueError(f"{who}: standardize must be one of {', '.join(map(repr, _STANDARDIZE))}, None or a "
                             f"callable. Received: standardize={standardize!r}")
        if not (split is None or callable(split) or split in _SPLIT):
            raise ValueError(f"{who}: split must be one of {', '.join(map(repr, _SPLIT))}, None or a callable. "
                             f"Received: split={split!r}")
        if output_mode == "binary":
            output_mode = "multi_hot"
        if output_mode == "tf-idf":
            output_mode = "tf_idf"
        if output_mode not in _MODES:
            raise ValueError(f"{who}: output_mode must be one of {', '.join(map(repr, _MODES))}. "
                             f"Received: output_mode={output_mode!r}")
        if isinstance(ngrams, list):
            ngrams = tuple(ngrams)
        if not (ngrams is None or (isinstance(ngrams, int) and not isinstance(ngrams, bool) and ngrams >= 1)
                or (isinstance(ngrams, tuple) and ngrams and all(isinstance(n, int) and n >= 1 for n in ngrams))):
            raise ValueError(f"{who}: ngrams must be None, a positive integer or a tuple of positive integers. "
                             f"Received: ngrams={ngrams!r}")
        if output_sequence_length is not None:
            if output_mode != "int":
                raise ValueError(f"{who}: output_sequence_length must not be set if output_mode is not 'int'. "
                                 f"Received: output_sequence_length={output_sequence_length!r}")
            if not isinstance(output_sequence_length, (int, np.integer)) or output_sequence_length < 1:
                raise ValueError(f"{who}: output_sequence_length must be None or a positive integer. "
                                 f"Received: output_sequence_length={output_sequence_length!r}")
            output_sequence_length = int(output_sequence_length)
        if max_tokens is not None and (not isinstance(max_tokens, (int, np.integer)) or max_tokens <= 1):
            raise ValueError(f"{who}: max_tokens must be None or an integer greater than 1. "
                             f"Received: max_tokens={max_tokens!r}")
        if pad_to_max_tokens and max_tokens is None and output_mode != "int":
            raise ValueError(f"{who}: pad_to_max_tokens=True needs max_tokens to be set.")
        if sparse or ragged:
            raise ValueError(f"{who}: sparse and ragged outputs need TensorFlow; lamina returns dense arrays "
                             "(padded with 0 in 'int' mode). Received: "
                             f"sparse={sparse!r}, ragged={ragged!r}")
        if str(encoding).lower().replace("-", "") != "utf8":
            raise ValueError(f"{who}: only the 'utf-8' encoding is supported. Received: encoding={encoding!r}")
        self.max_tokens = None if max_tokens is None else int(max_tokens)
        self.standardize, self.split, self.output_mode = standardize, split, output_mode
        self.ngrams = ngrams
        self._ngrams = tuple(range(1, ngrams + 1)) if isinstance(ngrams, int) else ngrams
        self.output_sequence_length = output_sequence_length
        self.pad_to_max_tokens = bool(pad_to_max_tokens)
        self.encoding = "utf-8"
        self._has_input_vocabulary = bool(has_input_vocabulary)   # adapt() is refused only for a given one
        self._tokens, self._index, self._idf = None, None, None
        self.built = True                          # no weights: nothing to build
        if vocabulary is not None:
            self.set_vocabulary(vocabulary, idf_weights=idf_weights)
        elif idf_weights is not None:
            raise ValueError(f"{who}: idf_weights needs a vocabulary.")

    # ----- vocabulary
    @property
    def _specials(self):
        return [MASK_TOKEN, OOV_TOKEN] if self.output_mode == "int" else [OOV_TOKEN]

    def _who(self):
        return f"TextVectorization '{self.name}'"

    def get_vocabulary(self, include_special_tokens=True):
        """The vocabulary, index i holding the token the layer maps to id i (with the special tokens first
        when include_special_tokens)."""
        tokens = list(self._tokens or [])
        return self._specials + tokens if include_special_tokens else tokens

    def vocabulary_size(self):
        """Number of ids the layer can output: learned tokens plus the special tokens."""
        return len(self._specials) + len(self._tokens or [])

    def set_vocabulary(self, vocabulary, idf_weights=None):
        """Use this vocabulary (a list/tuple/array of str, or a path to a UTF-8 file with one token per
        line). Leading special tokens ('' and '[UNK]' in 'int' mode) are accepted and dropped, so
        ``set_vocabulary(get_vocabulary())`` round-trips. In 'tf_idf' mode idf_weights (one per token,
        or one per entry including '[UNK]') are required."""
        who = self._who()
        if isinstance(vocabulary, (str, os.PathLike)):   # a file named in code (from_config refuses paths)
            from ..io.formats import _read_bounded
            if not os.path.exists(vocabulary):
                raise ValueError(f"{who}: vocabulary file {os.fspath(vocabulary)!r} does not exist.")
            raw = _read_bounded(vocabulary, MAX_VOCABULARY_FILE_BYTES, "vocabulary file")
            try:
                lines = raw.decode("utf-8").split("\n")
            except UnicodeDecodeError as e:
                from ..io import ModelFileError
                raise ModelFileError(vocabulary, f"the vocabulary file is not UTF-8 text ({e}).") from e
            while lines and lines[-1] == "":
                lines.pop()
            vocabulary = lines
        tokens = [t.decode("utf-8") if isinstance(t, bytes) else t for t in np.asarray(vocabulary, object).reshape(-1)]
        if not all(isinstance(t, str) for t in tokens):
            raise ValueError(f"{who}: the vocabulary must hold strings. Received {vocabulary!r:.200}")
        specials = self._specials
        had_specials = tokens[:len(specials)] == specials
        if had_specials:
            tokens = tokens[len(specials):]
        repeated = [t for t, c in collections.Counter(tokens).items() if c > 1]
        if repeated:
            raise ValueError(f"{who}: the vocabulary holds repeated tokens: {repeated[:10]}")
        for special in (MASK_TOKEN, OOV_TOKEN):
            if special in tokens:
                raise ValueError(f"{who}: the special token {special!r} may only come first in the vocabulary "
                                 f"(as get_vocabulary() returns it); found it at position "
                                 f"{tokens.index(special) + (len(specials) if had_specials else 0)}.")
        if self.max_tokens is not None and len(tokens) + len(specials) > self.max_tokens:
            raise ValueError(f"{who}: a vocabulary of {len(tokens)} tokens plus {len(specials)} special token(s) "
                             f"exceeds max_tokens={self.max_tokens}.")
        if self.output_mode == "tf_idf":
            if idf_weights is None:
                raise ValueError(f"{who}: output_mode='tf_idf' needs idf_weights with the vocabulary.")
            w = np.asarray(idf_weights, np.float32).reshape(-1)
            if len(w) == len(tokens) + 1:
                w = w[1:]                          # given with the '[UNK]' entry, as get_config writes them
            if len(w) != len(tokens):
                raise ValueError(f"{who}: idf_weights has {len(w)} entries for a vocabulary of {len(tokens)} tokens.")
            self._idf = w
        elif idf_weights is not None:
            raise ValueError(f"{who}: idf_weights is only used with output_mode='tf_idf'. "
                             f"Received output_mode={self.output_mode!r}")
        self._set_tokens(tokens)

    def _set_tokens(self, tokens):
        start = len(self._specials)
        self._tokens = list(tokens)
        self._index = {t: i + start for i, t in enumerate(self._tokens)}

    def adapt(self, data, batch_size=None, steps=None):
        """Build the vocabulary from data: a list/array of strings (shape (N,) or (N, 1)) or an iterable of
        such batches (at most ``steps`` of them). Tokens are ranked by count, ties by the token (higher
        first); max_tokens keeps the top ones."""
        if self._has_input_vocabulary:
            raise ValueError(f"{self._who()}: cannot adapt a layer created with a fixed vocabulary.")
        if isinstance(data, (str, bytes)):
            batches = [[data]]
        elif isinstance(data, (list, tuple, np.ndarray, Tensor)) or backend.is_cupy_array(data):
            batches = [data]
        elif hasattr(data, "__iter__"):
            batches = data if steps is None else itertools.islice(data, steps)
        else:
            raise ValueError(f"{self._who()}: adapt expects strings, a list/array of strings or an iterable of "
                             f"batches. Received {type(data).__name__}")
        counts, doc_counts, n_docs = collections.Counter(), collections.Counter(), 0
        for batch in batches:
            if isinstance(batch, tuple) and len(batch) == 2 and not isinstance(batch[0], str):
                batch = batch[0]                   # (x, y) pairs from a data pipeline
            docs, _, _ = self._tokenize(batch)
            for doc in docs:                       # one C-level Counter.update per document
                counts.update(doc)
            if self.output_mode == "tf_idf":
                for doc in docs:
                    doc_counts.update(set(doc))
                n_docs += len(docs)
        counts.pop(MASK_TOKEN, None)
        counts.pop(OOV_TOKEN, None)
        # Keras: np.lexsort((tokens, counts))[::-1]: descending count, ties by descending token
        ranked = sorted(counts.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
        if self.max_tokens is not None:
            ranked = ranked[:max(self.max_tokens - len(self._specials), 0)]
        tokens = [t for t, _ in ranked]
        if self.output_mode == "tf_idf":
            df = np.array([doc_counts[t] for t in tokens], np.float64)
            self._idf = np.log(1.0 + n_docs / (1.0 + df)).astype(np.float32)
        self._set_tokens(tokens)

    # ----- the pipeline
    def _standardize_one(self, s):
        if self.standardize in ("lower", "lower_and_strip_punctuation"):
            s = s.translate(_LOWER)
        if self.standardize in ("strip_punctuation", "lower_and_strip_punctuation"):
            s = s.translate(_STRIP)
        if callable(self.standardize):
            s = self.standardize(s)
        return s

    def _ngram(self, tokens):
        if self._ngrams is None:
            return tokens
        out = []
        for n in self._ngrams:               # all n-grams of one width, then the next width (tf.strings.ngrams)
            out.extend(tokens if n == 1 else [" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1)])
        return out

    def _tokenize(self, inputs):
        """(list of token lists, batch shape, flat) where flat says each string of a 1-D input (or a single
        string) is one token (split=None) and the 'int' output keeps the input's shape."""
        who = self._who()
        arr = _as_strings(inputs, who)
        if self.split is None:
            if arr.ndim > 2:
                raise ValueError(f"{who}: with split=None the input must have rank 0, 1 or 2. Received an input "
                                 f"of shape {arr.shape}.")
            rows = arr.reshape(-1, 1) if arr.ndim < 2 else arr
            docs = [self._ngram([self._standardize_one(s) for s in row]) for row in rows]
            return docs, arr.shape[:1], arr.ndim < 2
        if arr.ndim == 0:
            strings, shape = [arr.item()], ()
        elif arr.ndim == 1 or (arr.ndim == 2 and arr.shape[1] == 1):
            strings, shape = list(arr.reshape(-1)), (arr.shape[0],)
        else:
            raise ValueError(f"{who}: to split strings into tokens the input must be a string, shape (N,) or "
                             f"(N, 1). Received an input of shape {arr.shape}.")
        if self.standardize is not None:
            strings = [self._standardize_one(s) for s in strings]
        if self.split == "whitespace":
            docs = [s.split() for s in strings]
        elif self.split == "character":
            docs = [list(s) for s in strings]
        else:
            docs = [list(self.split(s)) for s in strings]
        if self._ngrams is not None:
            docs = [self._ngram(d) for d in docs]
        return docs, shape, False

    def _lookup(self, docs):
        """Flat int64 ids of every token and the number of tokens of each document."""
        if self._index is None:
            raise ValueError(f"{self._who()}: the layer has no vocabulary yet. Call adapt(data) or pass "
                             "vocabulary=[...] first.")
        lengths = np.fromiter((len(d) for d in docs), np.int64, count=len(docs))
        flat = list(itertools.chain.from_iterable(docs))
        oov = 1 if self.output_mode == "int" else 0
        index = self._index
        ids = np.fromiter(map(index.get, flat, itertools.repeat(oov, len(flat))), np.int64, count=len(flat))
        if self.output_mode == "int" and flat:
            ids[np.fromiter((t == MASK_TOKEN for t in flat), bool, count=len(flat))] = 0
        return ids, lengths, flat

    def call(self, inputs):
        docs, shape, flat_tokens = self._tokenize(inputs)
        ids, lengths, flat = self._lookup(docs)
        n = len(docs)
        rows = np.repeat(np.arange(n), lengths)
        if self.output_mode == "int":
            if flat_tokens and self.output_sequence_length is None and self._ngrams is None:
                out = ids.reshape(shape)             # split=None: one id per string, the input's shape
            else:
                out = self._pad(ids, lengths, rows, n)
        else:
            depth = self.max_tokens if self.pad_to_max_tokens else self.vocabulary_size()
            keep = np.fromiter((t != MASK_TOKEN for t in flat), bool, count=len(flat))
            # one scatter: occurrences of (document, id) pairs counted by bincount over the flattened grid
            counts = np.bincount(rows[keep] * depth + ids[keep], minlength=n * depth).reshape(n, depth)
            if self.output_mode == "multi_hot":
                out = (counts > 0).astype(np.float32)
            elif self.output_mode == "count":
                out = counts.astype(np.float32)
            else:
                out = counts.astype(np.float32) * self._idf_vector(depth)
        if shape == () and out.ndim > 0:
            out = out[0]
        return Tensor(backend.to_device(out))

    def _pad(self, ids, lengths, rows, n):
        """(n, L) ids, padded with 0 or cut at the end (L = output_sequence_length or the longest)."""
        length = self.output_sequence_length
        if length is None:
            length = int(lengths.max()) if n else 0
        starts = np.cumsum(lengths) - lengths
        cols = np.arange(len(ids)) - np.repeat(starts, lengths)
        keep = cols < length
        out = np.zeros((n, length), np.int64)
        out[rows[keep], cols[keep]] = ids[keep]
        return out

    def _idf_vector(self, depth):
        w = np.zeros(depth, np.float32)
        learned = self._idf if self._idf is not None else np.zeros(0, np.float32)
        # Keras gives '[UNK]' the mean idf of the vocabulary (its own idf cannot be known from adapt)
        w[0] = learned.mean() if len(learned) else 0.0
        w[1:1 + len(learned)] = learned[:depth - 1]
        return w

    # ----- Layer plumbing: strings in, ids out
    def __call__(self, *args, **kwargs):
        inputs = args[0] if args else kwargs.get("inputs")
        if isinstance(inputs, KerasTensor):
            return super().__call__(*args, **kwargs)
        kwargs.pop("training", None)
        kwargs.pop("inputs", None)
        return self.call(inputs)

    def _output_dtype(self, inputs):
        return "int64" if self.output_mode == "int" else "float32"

    def compute_output_shape(self, input_shape):
        if self.output_mode == "int":
            if self.split is None and len(input_shape) == 1 and self.output_sequence_length is None:
                return tuple(input_shape)
            return (input_shape[0], self.output_sequence_length)
        depth = self.max_tokens if self.pad_to_max_tokens else (self.vocabulary_size() if self._tokens is not None
                                                                else None)
        return (input_shape[0], depth)

    def get_config(self):
        config = super().get_config()
        for key in ("standardize", "split"):
            value = getattr(self, key)
            if callable(value):
                name = getattr(value, "__name__", None)
                if name is None or get_registered_object(name) is not value:
                    raise ValueError(
                        f"{self._who()}: the {key} callable {value!r} cannot be saved (a model file stores no "
                        "code). Use one of the built-in options, or register the function with "
                        "lamina.utils.register_keras_serializable and rebuild it from its name.")
                value = serialize(value)
            config[key] = value
        config.update({
            "max_tokens": self.max_tokens, "ngrams": list(self.ngrams) if isinstance(self.ngrams, tuple) else self.ngrams,
            "output_mode": self.output_mode, "output_sequence_length": self.output_sequence_length,
            "pad_to_max_tokens": self.pad_to_max_tokens, "sparse": False, "ragged": False, "encoding": self.encoding,
            # the learned vocabulary is part of the config, so a saved model file keeps it
            "vocabulary": self.get_vocabulary(include_special_tokens=False) if self._tokens is not None else None,
            "idf_weights": ([float(v) for v in self._idf] if self.output_mode == "tf_idf" and self._idf is not None
                            else None),
            "vocabulary_size": self.vocabulary_size() if self._tokens is not None else None,
            "has_input_vocabulary": self._has_input_vocabulary,
        })
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        # A config comes from a model file: it must carry its vocabulary inline. A path here would make loading
        # a file read another file (any file on the machine) into the model, so it is refused, never opened.
        for key in ("vocabulary", "idf_weights"):
            value = config.get(key)
            if value is not None and not isinstance(value, (list, tuple)):
                raise ValueError(f"TextVectorization.from_config: '{key}' must be a list held in the config "
                                 f"itself; a config never names a file to read. Received {type(value).__name__} "
                                 f"{value!r:.100}")
        for key in ("standardize", "split"):
            value = config.get(key)
            if isinstance(value, (dict, str)) and value not in (_STANDARDIZE + _SPLIT):
                found = get_registered_object(value.get("config", value.get("class_name")) if isinstance(value, dict)
                                              else value)
                if found is not None:
                    config[key] = found
        return cls(**config)
