"""More Keras 3 preprocessing layers: CategoryEncoding, Discretization, StringLookup, IntegerLookup, MelSpectrogram,
the colour augmentations RandomBrightness, RandomGrayscale, RandomInvert, Solarization, AutoContrast,
RandomColorDegeneration, RandomPosterization, and RandomCrop.

Encodings and lookups work on integer ids or strings and have no gradient (as in Keras). The image layers follow
Keras's image-preprocessing protocol (lamina/layers/image_preprocessing.py): get_random_transformation and the
transform_* methods under Keras's keys, and dict inputs with labels, bounding boxes and segmentation masks. The
colour augmentations are differentiable NumPy/CuPy expressions of the images (RandomPosterization aside); they run
only when called with ``training=True`` (AutoContrast, which is deterministic, always runs, as Keras). Random
draws come from the layer's own generator when a ``seed`` is given, else from lamina's seeded one.
"""
import numpy as np

from .. import backend, ops
from ..ops import image as image_ops
from ..ops.image import rgb_to_grayscale
from ..tensor import Tensor, host_array
from ._encoding import _encode, _xp_of
from .hashing import fingerprint64, siphash24
from .image_preprocessing import (_Augmentation, _Boxes, _brightness, _column, _float, _ImageAugmentation,
                                  _checked_factor, _keras_factor, _keras_range, _value_range)
from .layer import Layer
from .preprocessing import _crop_box, _sized_shape

__all__ = ["CategoryEncoding", "Discretization", "StringLookup", "IntegerLookup", "RandomBrightness",
           "RandomGrayscale", "RandomInvert", "Solarization", "AutoContrast", "MelSpectrogram",
           "RandomColorDegeneration", "RandomPosterization", "RandomCrop"]


def _array(x):
    if isinstance(x, Tensor):
        return x.data
    if isinstance(x, (list, tuple)):
        return np.asarray(x)
    return x


_MODES = ("int", "one_hot", "multi_hot", "count", "tf_idf")


def _check_mode(layer, mode, valid=_MODES, aliases=None):
    """The output_mode, with Keras's deprecated spellings given in ``aliases`` (e.g. 'binary') renamed."""
    mode = (aliases or {}).get(mode, mode)
    if mode not in valid:
        raise ValueError(f"{type(layer).__name__} '{layer.name}': unknown output_mode {mode!r}. "
                         f"Valid: {', '.join(repr(v) for v in valid)}.")
    return mode


class CategoryEncoding(Layer):
    """Integer ids -> one_hot, multi_hot or count vectors of num_tokens entries (Keras's modes).

    Inputs of rank 1 or 2 (as Keras documents). one_hot: each id becomes a vector (an input (N,) or (N, 1)
    gives (N, num_tokens)); multi_hot: 1 where an id of the last axis occurs; count: how often (weighted by
    ``count_weights`` when given to call).
    """

    def __init__(self, num_tokens=None, output_mode="multi_hot", sparse=False, **kwargs):
        super().__init__(**kwargs)
        if num_tokens is None or int(num_tokens) < 1:
            raise ValueError(f"CategoryEncoding '{self.name}': num_tokens must be a positive int. "
                             f"Received: num_tokens={num_tokens!r}")
        self.num_tokens = int(num_tokens)
        self.output_mode = _check_mode(self, output_mode, ("one_hot", "multi_hot", "count"),
                                       {"binary": "multi_hot"})  # Keras's deprecated name, still accepted
        if sparse:
            raise ValueError(f"CategoryEncoding '{self.name}': sparse outputs are not supported by lamina.")
        self.sparse = False

    def call(self, inputs, count_weights=None):
        ids = _array(inputs)
        xp = _xp_of(ids)
        ids = xp.asarray(ids)
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= self.num_tokens):
            raise ValueError(f"CategoryEncoding '{self.name}': ids must be in [0, {self.num_tokens}); received "
                             f"values from {int(ids.min())} to {int(ids.max())}.")
        if ids.ndim > 2:
            raise ValueError(f"CategoryEncoding '{self.name}': inputs must have rank 1 or 2. "
                             f"Received shape {ids.shape}")
        w = None if count_weights is None else _array(count_weights)
        # (in the variables' dtype, as Keras encodes: float32 under 'mixed_float16')
        return Tensor(_encode(ids.astype(np.int64), self.num_tokens, self.output_mode, np.dtype(self.dtype), w))

    def compute_output_shape(self, input_shape):
        s = tuple(input_shape)
        if not s:
            return (self.num_tokens,)
        if self.output_mode == "one_hot":
            if len(s) > 1 and s[-1] == 1:
                s = s[:-1]
            return s + (self.num_tokens,)
        return s[:-1] + (self.num_tokens,) if len(s) > 1 else (self.num_tokens,)

    def compute_output_spec(self, inputs, **kwargs):
        return self.compute_output_shape(inputs.shape), self.dtype

    def get_config(self):
        config = super().get_config()
        config["output_mode"] = self.output_mode   # 'binary' reported as 'multi_hot', as Keras
        return config


class Discretization(Layer):
    """Buckets values by bin_boundaries: id = number of boundaries <= x (bins [b_{i-1}, b_i)).

    ``adapt(data)`` with num_bins sets the boundaries to the data's quantiles at i / num_bins. output_mode
    'int' gives the ids; 'one_hot', 'multi_hot', 'count' encode them over the num_bins = len(boundaries) + 1
    bins.
    """

    def __init__(self, bin_boundaries=None, num_bins=None, epsilon=0.01, output_mode="int", sparse=False,
                 dtype=None, name=None, **kwargs):
        if dtype is None:
            dtype = "int64" if output_mode == "int" else "float32"
        kwargs.setdefault("autocast", False)   # float inputs are bucketed as they are, whatever the output dtype
        super().__init__(name=name, dtype=dtype, **kwargs)
        if bin_boundaries is not None and num_bins is not None:
            raise ValueError(f"Discretization '{self.name}': give bin_boundaries or num_bins, not both.")
        if bin_boundaries is None and num_bins is None:
            raise ValueError(f"Discretization '{self.name}': give bin_boundaries, or num_bins and call adapt().")
        self.bin_boundaries = None if bin_boundaries is None else [float(b) for b in bin_boundaries]
        if self.bin_boundaries is not None and any(np.diff(self.bin_boundaries) < 0):
            raise ValueError(f"Discretization '{self.name}': bin_boundaries must be sorted. "
                             f"Received: {bin_boundaries!r}")
        self.num_bins = num_bins
        self.epsilon = float(epsilon)
        self.output_mode = _check_mode(self, output_mode, ("int", "one_hot", "multi_hot", "count"))
        if sparse:
            raise ValueError(f"Discretization '{self.name}': sparse outputs are not supported by lamina.")
        self.sparse = False
        self.built = True

    def adapt(self, data, steps=None):
        parts = data if not isinstance(data, (np.ndarray, Tensor, list)) else [data]
        values = np.concatenate([backend.to_numpy(_array(p[0] if isinstance(p, tuple) else p)).reshape(-1)
                                 for i, p in enumerate(parts) if steps is None or i < steps]).astype(np.float64)
        n, values = int(self.num_bins), np.sort(values)
        # the sorted value at floor(q * count) for q = i / num_bins: exact where Keras's epsilon-approximate
        # quantile summary is exact (small data)
        at = np.minimum((np.arange(1, n) * len(values)) // n, len(values) - 1)
        self.bin_boundaries = [float(v) for v in values[at]]

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """An adapted layer's config holds both num_bins and the learned bin_boundaries (as Keras's): the layer
        is made with num_bins and given the boundaries after, as Keras does."""
        if config.get("bin_boundaries") is not None and config.get("num_bins") is not None:
            layer = cls(**dict(config, num_bins=None))   # the boundaries checked as given ones are
            layer.num_bins = config["num_bins"]
            return layer
        return cls(**config)

    def call(self, inputs):
        if self.bin_boundaries is None:
            raise ValueError(f"Discretization '{self.name}': call adapt() first (num_bins given, no boundaries).")
        x = _array(inputs)
        xp = _xp_of(x)
        ids = xp.searchsorted(xp.asarray(self.bin_boundaries, dtype=np.float64), xp.asarray(x, np.float64),
                              side="right")
        if self.output_mode == "int":
            return Tensor(ids.astype(self.compute_dtype))
        return Tensor(_encode(ids, len(self.bin_boundaries) + 1, self.output_mode, np.dtype(self.compute_dtype)))

    def compute_output_shape(self, input_shape):
        s = tuple(input_shape)
        if self.output_mode == "int":
            return s
        depth = None if self.bin_boundaries is None else len(self.bin_boundaries) + 1
        if self.output_mode == "one_hot":
            return (s[:-1] if len(s) > 1 and s[-1] == 1 else s) + (depth,)
        return s[:-1] + (depth,)

    def compute_output_spec(self, inputs, **kwargs):
        return self.compute_output_shape(inputs.shape), self.compute_dtype

    def get_config(self):
        config = super().get_config()
        config["bin_boundaries"] = self.bin_boundaries
        return config


class _Lookup(Layer):
    """Vocabulary lookup shared by StringLookup and IntegerLookup (Keras's index layout).

    Indices: the mask token (when given) is 0, then num_oov_indices OOV slots, then the vocabulary in order.
    An unknown token goes to an OOV slot (with several slots: a stable hash for strings, value mod slots for
    integers). invert=True maps indices back to tokens.
    """

    _default_oov = None

    def __init__(self, max_tokens, num_oov_indices, mask_token, oov_token, vocabulary, idf_weights, invert,
                 output_mode, pad_to_max_tokens, sparse, **kwargs):
        super().__init__(**kwargs)
        if max_tokens is not None and max_tokens <= 1:
            raise ValueError(f"{type(self).__name__} '{self.name}': max_tokens must be > 1. "
                             f"Received: max_tokens={max_tokens!r}")
        if num_oov_indices < 0:
            raise ValueError(f"{type(self).__name__} '{self.name}': num_oov_indices must be >= 0. "
                             f"Received: {num_oov_indices!r}")
        self.max_tokens = max_tokens
        self.num_oov_indices = int(num_oov_indices)
        self.mask_token = mask_token
        self.oov_token = oov_token
        self.invert = bool(invert)
        # Keras's deprecated names 'binary' and 'tf-idf' are still accepted and stored under the new ones.
        self.output_mode = _check_mode(self, output_mode, aliases={"binary": "multi_hot", "tf-idf": "tf_idf"})
        if self.invert and self.output_mode != "int":
            raise ValueError(f"{type(self).__name__} '{self.name}': invert=True needs output_mode='int'.")
        if self.output_mode == "tf_idf" and idf_weights is None and vocabulary is not None:
            raise ValueError(f"{type(self).__name__} '{self.name}': output_mode='tf_idf' needs idf_weights.")
        if sparse:
            raise ValueError(f"{type(self).__name__} '{self.name}': sparse outputs are not supported by lamina.")
        self.pad_to_max_tokens = bool(pad_to_max_tokens)
        self.sparse = False
        self.idf_weights = None if idf_weights is None else [float(v) for v in np.asarray(idf_weights).ravel()]
        self._vocab = []
        if vocabulary is not None:
            self.set_vocabulary(vocabulary, idf_weights)
        self.built = True

    # ----- vocabulary
    def _token(self, t):
        return t

    def _reserved(self):
        return (1 if self.mask_token is not None else 0) + self.num_oov_indices

    def set_vocabulary(self, vocabulary, idf_weights=None):
        vocab = [self._token(t) for t in (np.asarray(vocabulary).ravel().tolist()
                                          if not isinstance(vocabulary, list) else vocabulary)]
        if len(set(vocab)) != len(vocab):
            raise ValueError(f"{type(self).__name__} '{self.name}': the vocabulary has repeated tokens.")
        for special in (self.mask_token, self.oov_token):
            if special is not None and special in vocab:
                raise ValueError(f"{type(self).__name__} '{self.name}': the vocabulary contains the reserved "
                                 f"token {special!r}.")
        if self.max_tokens is not None and len(vocab) + self._reserved() > self.max_tokens:
            raise ValueError(f"{type(self).__name__} '{self.name}': the vocabulary ({len(vocab)} tokens) does "
                             f"not fit in max_tokens={self.max_tokens}.")
        self._vocab = vocab
        self._index = {t: i + self._reserved() for i, t in enumerate(vocab)}
        if idf_weights is not None:
            self.idf_weights = [float(v) for v in np.asarray(idf_weights).ravel()]

    def get_vocabulary(self, include_special_tokens=True):
        if not include_special_tokens:
            return list(self._vocab)
        head = [] if self.mask_token is None else [self.mask_token]
        return head + [self.oov_token] * self.num_oov_indices + list(self._vocab)

    def vocabulary_size(self):
        return len(self._vocab) + self._reserved()

    def adapt(self, data, steps=None):
        parts = data if not isinstance(data, (np.ndarray, Tensor, list)) else [data]
        counts = {}
        for i, p in enumerate(parts):
            if steps is not None and i >= steps:
                break
            for t in np.asarray(backend.to_numpy(_array(p[0] if isinstance(p, tuple) else p))).ravel().tolist():
                t = self._token(t)
                if t == self.mask_token or t == self.oov_token:
                    continue
                counts[t] = counts.get(t, 0) + 1
        # most frequent first, ties by the token, higher first: Keras's np.lexsort((tokens, counts))[::-1]
        order = sorted(counts, key=lambda t: (counts[t], t), reverse=True)
        if self.max_tokens is not None:
            order = order[:self.max_tokens - self._reserved()]
        self.set_vocabulary(order)
        if self.output_mode == "tf_idf":  # Keras's idf: log(1 + documents / (1 + documents with the token))
            docs = [set(self._token(t) for t in np.asarray(row).ravel().tolist())
                    for p in parts for row in np.atleast_2d(np.asarray(backend.to_numpy(_array(p))))]
            n = len(docs)
            self.idf_weights = [float(np.log(1 + n / (1 + sum(t in d for d in docs)))) for t in self._vocab]

    # ----- lookup
    def _oov_slot(self, tokens):
        raise NotImplementedError

    def _lookup(self, flat):
        reserved0 = 1 if self.mask_token is not None else 0
        ids = np.empty(len(flat), np.int64)
        missing = []
        for k, t in enumerate(flat):
            i = self._index.get(t)
            if i is None:
                if self.mask_token is not None and t == self.mask_token:
                    i = 0
                else:
                    missing.append(k)
                    i = -1
            ids[k] = i
        if missing:
            if self.num_oov_indices == 0:
                bad = [flat[k] for k in missing[:3]]
                raise ValueError(f"{type(self).__name__} '{self.name}': out-of-vocabulary tokens {bad} and "
                                 f"num_oov_indices=0.")
            ids[missing] = reserved0 + self._oov_slot([flat[k] for k in missing])
        return ids

    def _invert(self, ids):
        table = np.asarray(self.get_vocabulary(), dtype=object)
        flat = ids.ravel().astype(np.int64)
        ok = (flat >= 0) & (flat < len(table))
        out = np.full(flat.shape, self.oov_token, dtype=object)
        out[ok] = table[flat[ok]]
        return out.reshape(ids.shape)

    def call(self, inputs):
        a = np.asarray(backend.to_numpy(_array(inputs)))
        if self.invert:
            return self._finish_invert(self._invert(a))
        ids = self._lookup([self._token(t) for t in a.ravel().tolist()]).reshape(a.shape)
        if self.output_mode == "int":
            return Tensor(ids)
        depth = self.max_tokens if self.pad_to_max_tokens and self.max_tokens else self.vocabulary_size()
        if self.output_mode in ("one_hot", "multi_hot", "count"):
            return Tensor(_encode(ids, depth, self.output_mode, np.dtype(self.compute_dtype)))
        counts = _encode(ids, depth, "count", np.dtype(self.compute_dtype))
        idf = np.zeros(depth, self.compute_dtype)
        known = np.asarray(self.idf_weights, self.compute_dtype)
        idf[self._reserved():self._reserved() + len(known)] = known
        idf[(1 if self.mask_token is not None else 0):self._reserved()] = known.mean() if len(known) else 0
        return Tensor(counts * idf)

    def _finish_invert(self, tokens):
        return tokens

    def compute_output_shape(self, input_shape):
        s = tuple(input_shape)
        if self.output_mode == "int":
            return s
        depth = self.max_tokens if self.pad_to_max_tokens and self.max_tokens else self.vocabulary_size()
        if self.output_mode == "one_hot":
            return s + (depth,)
        return s[:-1] + (depth,)

    def get_config(self):
        config = super().get_config()
        config["vocabulary"] = list(self._vocab)
        config["idf_weights"] = self.idf_weights
        config["output_mode"] = self.output_mode   # 'binary' reported as 'multi_hot', as Keras
        return config


class StringLookup(_Lookup):
    """Strings -> integer indices (or one_hot/multi_hot/count/tf_idf vectors), or back with invert=True.

    OOV tokens: with num_oov_indices = k > 1 a token goes to slot Fingerprint64(token) mod k, TensorFlow's
    vocabulary-table hash that Keras uses (lamina.layers.hashing computes it without TensorFlow); with a
    salt, SipHash-2-4 keyed by it, as Hashing(salt=...).
    """

    def __init__(self, max_tokens=None, num_oov_indices=1, mask_token=None, oov_token="[UNK]", vocabulary=None,
                 idf_weights=None, invert=False, output_mode="int", pad_to_max_tokens=False, sparse=False,
                 encoding="utf-8", name=None, salt=None, **kwargs):
        self.encoding = encoding
        if "dtype" not in kwargs and output_mode == "int" and not invert:
            kwargs["dtype"] = "int64"
        super().__init__(max_tokens, num_oov_indices, mask_token, oov_token, vocabulary, idf_weights, invert,
                         output_mode, pad_to_max_tokens, sparse, name=name, **kwargs)
        self.salt = salt

    def _token(self, t):
        return t.decode(self.encoding) if isinstance(t, bytes) else str(t)

    def _oov_slot(self, tokens):
        text = np.asarray([t.encode(self.encoding) for t in tokens], dtype=object)
        if self.salt is None:
            h = fingerprint64(text)
        else:
            key = list(self.salt) if isinstance(self.salt, (list, tuple)) else [int(self.salt)] * 2
            h = siphash24(text, key)
        return (np.asarray(h, np.uint64) % np.uint64(self.num_oov_indices)).astype(np.int64)

    def _finish_invert(self, tokens):
        return tokens.astype(str)


class IntegerLookup(_Lookup):
    """Integer tokens -> indices (or encoded vectors), or back with invert=True; OOV slot = value mod k."""

    def __init__(self, max_tokens=None, num_oov_indices=1, mask_token=None, oov_token=-1, vocabulary=None,
                 vocabulary_dtype="int64", idf_weights=None, invert=False, output_mode="int", sparse=False,
                 pad_to_max_tokens=False, oov_method="floormod", salt=None, name=None, **kwargs):
        if oov_method != "floormod":
            raise ValueError(f"IntegerLookup: only oov_method='floormod' is supported. Received: {oov_method!r}")
        self.vocabulary_dtype = vocabulary_dtype
        self.oov_method, self.salt = oov_method, salt
        if "dtype" not in kwargs and output_mode == "int":
            kwargs["dtype"] = "int64"
        super().__init__(max_tokens, num_oov_indices, mask_token, oov_token, vocabulary, idf_weights, invert,
                         output_mode, pad_to_max_tokens, sparse, name=name, **kwargs)

    def _token(self, t):
        if not isinstance(t, (int, np.integer, np.bool_, float, np.floating)) \
                or (isinstance(t, (float, np.floating)) and not float(t).is_integer()):
            raise ValueError(f"IntegerLookup '{self.name}': the vocabulary, mask and OOV tokens must be integers "
                             f"(use StringLookup for strings). Received: {t!r}")
        return int(t)

    def _oov_slot(self, tokens):
        return np.asarray(tokens, np.int64) % self.num_oov_indices

    def _finish_invert(self, tokens):
        return Tensor(tokens.astype(np.int64))


# ----------------------------------------------------------------------------- audio
_MEL_BREAK_HZ, _MEL_HIGH_Q = 700.0, 1127.0


def _hz_to_mel(f):
    return _MEL_HIGH_Q * np.log(1.0 + f / _MEL_BREAK_HZ)


def mel_weight_matrix(num_mel_bins, num_spectrogram_bins, sampling_rate, lower_edge_hertz, upper_edge_hertz):
    """(num_spectrogram_bins, num_mel_bins) triangular HTK mel filters, peak 1, DC bin zero (Keras's matrix)."""
    freqs = np.linspace(0.0, sampling_rate / 2.0, num_spectrogram_bins)[1:]
    mel = _hz_to_mel(freqs)[:, None]
    edges = np.linspace(_hz_to_mel(lower_edge_hertz), _hz_to_mel(upper_edge_hertz), num_mel_bins + 2)
    lo, mid, hi = edges[:-2][None], edges[1:-1][None], edges[2:][None]
    w = np.maximum(0.0, np.minimum((mel - lo) / (mid - lo), (hi - mel) / (hi - mid)))
    return np.concatenate([np.zeros((1, num_mel_bins)), w], axis=0)


def _window(name, length, xp):
    if name is None:
        return xp.ones(length)
    n = np.arange(length)
    if name == "hann":
        w = 0.5 - 0.5 * np.cos(2 * np.pi * n / length)
    elif name == "hamming":
        w = 0.54 - 0.46 * np.cos(2 * np.pi * n / length)
    else:
        raise ValueError(f"window must be 'hann', 'hamming' or None. Received: window={name!r}")
    return xp.asarray(w)


class MelSpectrogram(Layer):
    """Audio (..., samples) -> mel spectrogram (..., num_mel_bins, frames), Keras's numerics.

    STFT with centred frames (reflect padding of fft_length // 2), a periodic window of sequence_length
    (default fft_length) centred in fft_length; |X|^mag_exp; HTK mel filters over [min_freq, max_freq]; with
    power_to_db, 10 log10(max(P, min_power) / max(ref_power, min_power)) floored at (the batch's maximum -
    top_db). frames = 1 + samples // sequence_stride. No weights; not differentiable (a preprocessing step).
    """

    def __init__(self, fft_length=2048, sequence_stride=512, sequence_length=None, window="hann",
                 sampling_rate=16000, num_mel_bins=128, min_freq=20.0, max_freq=None, power_to_db=True,
                 top_db=80.0, mag_exp=2.0, min_power=1e-10, ref_power=1.0, **kwargs):
        super().__init__(**kwargs)
        self.fft_length, self.sequence_stride = int(fft_length), int(sequence_stride)
        self.sequence_length = int(sequence_length or fft_length)
        if self.sequence_length > self.fft_length:
            raise ValueError(f"MelSpectrogram '{self.name}': sequence_length must be <= fft_length.")
        _window(window, 2, np)
        self.window, self.sampling_rate, self.num_mel_bins = window, sampling_rate, int(num_mel_bins)
        self.min_freq = float(min_freq)
        self.max_freq = float(max_freq) if max_freq is not None else sampling_rate / 2.0
        self.power_to_db, self.top_db, self.mag_exp = bool(power_to_db), float(top_db), float(mag_exp)
        self.min_power, self.ref_power = float(min_power), float(ref_power)
        self.built = True

    def _frames(self, n):
        return 1 + n // self.sequence_stride

    def call(self, inputs):
        x = inputs.data if isinstance(inputs, Tensor) else np.asarray(inputs)
        xp = backend.get_array_module(x)
        x = x.astype(np.float64)
        pad = self.fft_length // 2
        x = xp.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
        f, s = self.fft_length, self.sequence_stride
        n_frames = 1 + (x.shape[-1] - f) // s
        idx = xp.arange(f)[None, :] + s * xp.arange(n_frames)[:, None]           # (frames, fft)
        frames = x[..., idx]                                                       # (..., frames, fft)
        win = xp.zeros(f)
        left = (f - self.sequence_length) // 2
        win[left:left + self.sequence_length] = _window(self.window, self.sequence_length, xp)
        spec = xp.abs(xp.fft.rfft(frames * win, n=f, axis=-1)) ** self.mag_exp   # (..., frames, bins)
        mel = spec @ xp.asarray(mel_weight_matrix(self.num_mel_bins, spec.shape[-1], self.sampling_rate,
                                                  self.min_freq, self.max_freq))
        if self.power_to_db:
            db = 10.0 * xp.log10(xp.maximum(mel, self.min_power))
            db = db - 10.0 * np.log10(max(abs(self.ref_power), self.min_power))
            mel = xp.maximum(db, db.max() - self.top_db)
        return Tensor(xp.swapaxes(mel, -1, -2).astype(self.compute_dtype))

    def compute_output_shape(self, input_shape):
        s = tuple(input_shape)
        return s[:-1] + (self.num_mel_bins, None if s[-1] is None else self._frames(s[-1]))


# ----------------------------------------------------------------------------- colour augmentations
# Keras 3.15's draws and formulas, on lamina/layers/image_preprocessing.py's _Augmentation: the transformation of a
# batch under Keras's keys, applied to NHWC float images (channels_first ones are transposed around it); labels,
# bounding boxes and segmentation masks pass unchanged, as in Keras.
def _bool_column(values, x):
    """(N,) host booleans -> an (N, 1, 1, 1) constant Tensor on x's device."""
    xp = backend.get_array_module(x.data)
    return Tensor(xp.asarray(host_array(values).astype(bool).reshape(-1, 1, 1, 1)))


class RandomBrightness(_Augmentation):
    """Adds delta (value_range[1] - value_range[0]) to each image, delta ~ U(factor), then clips to value_range.
    factor: f (-> (-f, f)) or (lower, upper) in [-1, 1]. Transformation: {'rgb_delta': (N, 1, 1, 1)}."""

    def __init__(self, factor, value_range=(0, 255), seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.factor = _keras_factor(factor, (-1, 1))
        self.value_range = _value_range(self, value_range)

    def _draw(self, shape, rng):
        delta = rng.uniform(self.factor[0], self.factor[1], (shape[0], 1, 1, 1)).astype(np.float32)
        return {"rgb_delta": delta * np.float32(self.value_range[1] - self.value_range[0])}

    def _transform(self, x, t):
        return _brightness(x, t["rgb_delta"], self.value_range)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "value_range": self.value_range, "seed": self.seed}


class RandomGrayscale(_Augmentation):
    """With probability factor, replaces an image by its luma (0.2989 R + 0.587 G + 0.114 B) on every channel.
    Transformation (Keras's): the (N, 1, 1, 1) booleans of the images to change (not a dict)."""

    def __init__(self, factor=0.5, data_format=None, seed=None, **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        if not isinstance(factor, (int, float)) or isinstance(factor, bool) or not 0 <= factor <= 1:
            raise ValueError(f"`factor` should be between 0 and 1. Received: factor={factor}")
        self.factor = factor

    def _draw(self, shape, rng):
        return (rng.uniform(0.0, 1.0, shape[0]).astype(np.float32) < self.factor).reshape(-1, 1, 1, 1)

    def _transform(self, x, t):
        return ops.where(_bool_column(t, x), rgb_to_grayscale(x), x)


class RandomInvert(_Augmentation):
    """With probability p ~ U(factor) per image, x -> value_range[1] - x (Keras's formula and draw).
    Transformation: {'apply_inversion': (N,) bool}."""

    def __init__(self, factor=1.0, value_range=(0, 255), seed=None, data_format=None, **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        self.factor = _keras_factor(factor, (0, 1))
        self.value_range = value_range

    def _draw(self, shape, rng):
        probability = rng.uniform(self.factor[0], self.factor[1], shape[0]).astype(np.float32)
        return {"apply_inversion": rng.uniform(0.0, 1.0, shape[0]).astype(np.float32) < probability}

    def _transform(self, x, t):
        return ops.where(_bool_column(t["apply_inversion"], x), float(self.value_range[1]) - x, x)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "value_range": self.value_range, "seed": self.seed}


def _solarization_factor(factor, name):
    """Keras's Solarization rule: numbers in [0, 1]; x -> (0, x); a pair sorted."""
    msg = "The `factor` argument should be a number (or a list of two numbers) in the range [0, 1.0]. "
    return _checked_factor(factor, name, msg, 0.0, 1.0, single=lambda x: (0, x))


class Solarization(_Augmentation):
    """Keras's solarization on a 0..255 scale: x + a (a ~ U(lower, upper * 255) of addition_factor), clipped, then
    pixels at or above a threshold t ~ U(lower, upper * 255) of threshold_factor become 255 - x; mapped back to
    value_range. Transformation: {'additions', 'thresholds'}, each (N, 1, 1, 1)."""

    _float_at_inference = True
    _draw_when_none = False

    def __init__(self, addition_factor=0.0, threshold_factor=0.0, value_range=(0, 255), seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.addition_factor = _solarization_factor(addition_factor, "addition_factor")
        self.threshold_factor = _solarization_factor(threshold_factor, "threshold_factor")
        self.value_range = _value_range(self, value_range)

    def _draw(self, shape, rng):
        size = (shape[0], 1, 1, 1)
        (a0, a1), (t0, t1) = self.addition_factor, self.threshold_factor
        return {"additions": rng.uniform(a0, a1 * 255, size).astype(np.float32),
                "thresholds": rng.uniform(t0, t1 * 255, size).astype(np.float32)}

    def _transform(self, x, t):
        if t is None:
            return x
        y = ops.clip(_keras_range(x, self.value_range, (0, 255)) + _column(t["additions"], x), 0, 255)
        y = ops.where(y < _column(t["thresholds"], x), y, 255.0 - y)
        return _keras_range(y, (0, 255), self.value_range)

    def get_config(self):
        return {**super().get_config(), "addition_factor": self.addition_factor,
                "threshold_factor": self.threshold_factor, "value_range": self.value_range, "seed": self.seed}


class AutoContrast(_Augmentation):
    """Stretches each image's channels to the full value_range: on the 0..255 scale x (255 / (max - min)) -
    min (255 / (max - min)), per image and channel, clipped (a constant channel is left as it is). Deterministic,
    so it also runs at inference (as Keras)."""

    _always = True
    _draw_when_none = False

    def __init__(self, value_range=(0, 255), **kwargs):
        super().__init__(**kwargs)
        self.value_range = _value_range(self, value_range)

    def _transform(self, x, t):
        y = _keras_range(x, self.value_range, (0, 255))
        low = ops.min(y, axis=(1, 2), keepdims=True)
        high = ops.max(y, axis=(1, 2), keepdims=True)
        span = high - low
        flat = span == 0
        scale = 255.0 / ops.where(flat, span * 0.0 + 1.0, span)   # (no inf where the channel is flat)
        out = _keras_range(ops.clip(y * scale + (0.0 - low) * scale, 0.0, 255.0), (0, 255), self.value_range)
        return ops.where(flat, x, out)

    def get_config(self):
        return {**super().get_config(), "value_range": self.value_range}


class RandomColorDegeneration(_Augmentation):
    """Blends each image towards its grayscale version: x + f (gray - x), f ~ U(factor) per image, clipped to
    value_range. factor: f (-> (-f, f), Keras's bounds [-1, 1]: a negative f moves away from gray) or (lower,
    upper). Transformation: {'factor': (N, 1, 1, 1)}."""

    def __init__(self, factor, value_range=(0, 255), data_format=None, seed=None, **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        self.factor = _keras_factor(factor, (-1, 1))
        self.value_range = _value_range(self, value_range)

    def _draw(self, shape, rng):
        return {"factor": rng.uniform(self.factor[0], self.factor[1], (shape[0], 1, 1, 1)).astype(np.float32)}

    def _transform(self, x, t):
        y = x + _column(t["factor"], x) * (rgb_to_grayscale(x) - x)
        return ops.clip(y, self.value_range[0], self.value_range[1])

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "value_range": self.value_range, "seed": self.seed}


class RandomPosterization(_Augmentation):
    """Keeps the top b bits of each 8-bit channel value: on the 0..255 scale the value truncated to uint8, shifted
    right then left by 8 - b, mapped back to value_range. No gradient. b per image as Keras draws it: an int in
    [lower, upper) of factor (exactly lower when lower == upper); an int factor f means (1, f), in [1, 8].
    Transformation: {'shift_factor': (N,) uint8, 8 - b}."""

    def __init__(self, factor, value_range=(0, 255), data_format=None, seed=None, **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        self.factor = _keras_factor(factor, (1, 8))
        self.value_range = _value_range(self, value_range)

    def _draw(self, shape, rng):
        lo, hi = int(self.factor[0]), int(self.factor[1])
        bits = np.full(shape[0], lo) if lo == hi else rng.integers(lo, hi, shape[0])
        return {"shift_factor": (8 - bits).astype(np.uint8)}

    def _transform(self, x, t):
        xp = backend.get_array_module(x.data)
        shift = xp.asarray(host_array(t["shift_factor"]).astype(np.uint8).reshape(-1, 1, 1, 1))
        v = xp.trunc(_keras_range(x.data, self.value_range, (0, 255))).astype(np.uint8)
        y = ((v >> shift) << shift).astype(x.dtype)
        return Tensor(_keras_range(y, (0, 255), self.value_range).astype(x.dtype))

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "value_range": self.value_range, "seed": self.seed}


class RandomCrop(_ImageAugmentation):
    """Training: crops one random (height, width) window (the same offset for the whole batch, as Keras) when the
    images are larger on both axes; otherwise, as Keras 3.15, the window [top:top+height, left:left+width] from the
    offset of the centred aspect-ratio crop, resized bilinearly to (height, width) when it comes out smaller. At
    inference the images pass unchanged, as in Keras 3.15. Transformation (Keras's): the tuple (top, left).

    Masks are cropped as the images, also at inference (Keras 3.15 crops them with training=True whatever it is
    given). Boxes follow Keras 3.15 exactly: read with the crop's size, moved by (top, left) applied to (x, y) in
    that order (Keras's axes) and floored at 0, not clipped to the crop; their labels are kept.
    """

    def __init__(self, height, width, seed=None, data_format=None, name=None, **kwargs):
        super().__init__(seed=seed, data_format=data_format, name=name, **kwargs)
        self.height, self.width = int(height), int(width)
        self.supports_masking = False

    def get_random_transformation(self, data, training=True, seed=None):
        h, w = self._hw(self._shape_of(data))
        if training and h > self.height and w > self.width:
            rng = self._generator(seed)
            top = int(rng.uniform(0, h - self.height + 1))
            left = int(rng.uniform(0, w - self.width + 1))
            return top, left
        top, left, _, _ = _crop_box(h, w, self.height, self.width)
        return top, left

    def transform_images(self, images, transformation=None, training=True):
        if not training:
            return images
        x = _float(self, images)
        if transformation is None:
            transformation = self.get_random_transformation(x, training=True)
        top, left = (int(v) for v in transformation)
        rows, cols = slice(top, top + self.height), slice(left, left + self.width)
        x = x[(Ellipsis, rows, cols, slice(None)) if self.data_format == "channels_last" else (Ellipsis, rows, cols)]
        if tuple(self._hw(x.shape)) != (self.height, self.width):
            x = image_ops.resize(x, (self.height, self.width), data_format=self.data_format)
        return x

    def transform_segmentation_masks(self, segmentation_masks, transformation=None, training=True):
        return self.transform_images(segmentation_masks, transformation)

    def transform_bounding_boxes(self, bounding_boxes, transformation=None, training=True):
        if not training:
            return bounding_boxes
        top, left = (np.float32(v) for v in transformation)
        b = _Boxes(bounding_boxes).convert(self.bounding_box_format, "xyxy", self.height, self.width)
        b.boxes = np.maximum(b.boxes - np.array([top, left, top, left], np.float32), np.float32(0))
        out = b.convert("xyxy", self.bounding_box_format, self.height, self.width).result()
        return {"boxes": out["boxes"], "labels": out["labels"]}

    def compute_output_shape(self, input_shape):
        return _sized_shape(self, input_shape)

    def get_config(self):
        return {**super().get_config(), "height": self.height, "width": self.width, "seed": self.seed}
