"""Hashing and HashedCrossing: Keras 3's hashing-trick preprocessing layers, with TensorFlow's hashes.

Keras computes the bins with TensorFlow string ops (and needs TensorFlow installed for it); lamina
computes the same 64-bit hashes in vectorised NumPy integer arithmetic (uint64 wraps modulo 2**64,
as C does), so the bins are TensorFlow's without TensorFlow:

- ``fingerprint64``: FarmHash's Fingerprint64 (the ``farmhashna`` 64-bit hash), TensorFlow's
  ``Fingerprint64`` behind ``tf.strings.to_hash_bucket_fast``.
- ``siphash24``: SipHash-2-4 (Aumasson and Bernstein, 2012) keyed by two 64-bit words, behind
  ``tf.strings.to_hash_bucket_strong(key=salt)``.
- ``fingerprint_cat64``: TensorFlow's ``FingerprintCat64``, which ``tf.sparse.cross_hashed`` folds over
  the features of a cross, starting from the key 0xDECAFCAFFE.

Strings are hashed as their UTF-8 bytes. Every string of a batch is processed at once: the bytes sit in a
zero-padded (N, width) uint8 matrix and each hash step works on whole columns of words gathered at
per-row offsets; strings of different lengths take different branches through boolean row selections,
and the loops run over 64-byte (FarmHash) or 8-byte (SipHash) blocks, never over the strings.
One limit: NumPy's fixed-width string arrays cannot hold trailing NUL characters, so a string that ends
with '\\x00' is hashed without them.
"""
import numpy as np

from .. import backend
from ..tensor import Tensor
from ._encoding import _encode
from .layer import Layer

__all__ = ["Hashing", "HashedCrossing"]

_U64 = np.uint64
_K0, _K1, _K2 = 0xC3A5C85C97CB3127, 0xB492B66FBE98F273, 0x9AE16A3B2F90404F   # FarmHash's primes
_KMUL = 0xC6A4A7935BD1E995                                                     # FingerprintCat64's
CROSS_HASH_KEY = 0xDECAFCAFFE   # tf.sparse.cross_hashed's default hash_key


# ------------------------------------------------------------------------------------ byte matrices
def _byte_matrix(flat):
    """Strings or bytes (1-D object array) -> (uint8 matrix (N, width) zero-padded, byte lengths (N,) uint64)."""
    if flat.size and all(isinstance(v, (bytes, np.bytes_)) for v in flat):
        raw = np.asarray(flat.tolist(), dtype="S")
    else:
        raw = np.strings.encode(np.asarray(flat.tolist(), dtype=str) if flat.size else np.zeros(0, "U1"), "utf-8")
    n, width = raw.shape[0], raw.dtype.itemsize
    lens = np.strings.str_len(raw).astype(_U64) if n else np.zeros(0, _U64)
    buf = np.zeros((n, width + 128), np.uint8)   # room for every fetch past the end of a string
    if n and width:
        buf[:, :width] = raw.view(np.uint8).reshape(n, width)
    return buf, lens


def _hash_strings(values, fn):
    """fn(byte matrix, byte lengths) -> uint64 hashes, applied to groups of strings of similar length
    (lengths within a power of two), so one long string does not widen the matrix of every short one."""
    shape = () if isinstance(values, (str, bytes)) else np.shape(values)
    flat = np.asarray(values, dtype=object).reshape(-1)
    out = np.empty(flat.shape, _U64)
    if not flat.size:
        return out.reshape(shape)
    size = np.frompyfunc(len, 1, 1)(flat).astype(np.int64)
    group = np.ceil(np.log2(np.maximum(size, 1))).astype(np.int64)
    for g in np.unique(group):
        idx = np.nonzero(group == g)[0]
        out[idx] = fn(*_byte_matrix(flat[idx]))
    return out.reshape(shape)


def _fetch(buf, off, size=8):
    """Little-endian words of ``size`` bytes at byte offset ``off[i]`` of row i: (N,) uint64."""
    idx = off.astype(np.int64)[:, None] + np.arange(size)
    b = np.ascontiguousarray(np.take_along_axis(buf, idx, axis=1))
    return b.view("<u8" if size == 8 else "<u4")[:, 0].astype(_U64)


def _rot(v, s):
    """Rotate right by s bits (0 < s < 64)."""
    return (v >> _U64(s)) | (v << _U64(64 - s))


def _shift_mix(v):
    return v ^ (v >> _U64(47))


# ---------------------------------------------------------------------------------------- FarmHash
def _hash_len16(u, v, mul):
    a = _shift_mix((u ^ v) * mul)
    b = _shift_mix((v ^ a) * mul)
    return b * mul


def _len0to16(buf, n):
    out = np.full(n.shape, _K2, _U64)                      # the empty string
    big = n >= 8
    if big.any():
        b, m = buf[big], n[big]
        mul = _U64(_K2) + m * _U64(2)
        a = _fetch(b, np.zeros_like(m)) + _U64(_K2)
        e = _fetch(b, m - _U64(8))
        out[big] = _hash_len16(_rot(e, 37) * mul + a, (_rot(a, 25) + e) * mul, mul)
    mid = (n >= 4) & (n < 8)
    if mid.any():
        b, m = buf[mid], n[mid]
        mul = _U64(_K2) + m * _U64(2)
        a = _fetch(b, np.zeros_like(m), 4)
        out[mid] = _hash_len16(m + (a << _U64(3)), _fetch(b, m - _U64(4), 4), mul)
    small = (n > 0) & (n < 4)
    if small.any():
        b, m = buf[small], n[small].astype(np.int64)
        rows = np.arange(len(m))
        a, mid_b, c = b[rows, 0].astype(_U64), b[rows, m >> 1].astype(_U64), b[rows, m - 1].astype(_U64)
        y = a + (mid_b << _U64(8))
        z = m.astype(_U64) + (c << _U64(2))
        out[small] = _shift_mix((y * _U64(_K2)) ^ (z * _U64(_K0))) * _U64(_K2)
    return out


def _len17to32(buf, n):
    mul = _U64(_K2) + n * _U64(2)
    a = _fetch(buf, np.zeros_like(n)) * _U64(_K1)
    b = _fetch(buf, np.full_like(n, 8))
    c = _fetch(buf, n - _U64(8)) * mul
    d = _fetch(buf, n - _U64(16)) * _U64(_K2)
    return _hash_len16(_rot(a + b, 43) + _rot(c, 30) + d, a + _rot(b + _U64(_K2), 18) + c, mul)


def _len33to64(buf, n):
    mul = _U64(_K2) + n * _U64(2)
    a = _fetch(buf, np.zeros_like(n)) * _U64(_K2)
    b = _fetch(buf, np.full_like(n, 8))
    c = _fetch(buf, n - _U64(8)) * mul
    d = _fetch(buf, n - _U64(16)) * _U64(_K2)
    y = _rot(a + b, 43) + _rot(c, 30) + d
    z = _hash_len16(y, a + _rot(b + _U64(_K2), 18) + c, mul)
    e = _fetch(buf, np.full_like(n, 16)) * mul
    f = _fetch(buf, np.full_like(n, 24))
    g = (y + _fetch(buf, n - _U64(32))) * mul
    h = (z + _fetch(buf, n - _U64(24))) * mul
    return _hash_len16(_rot(e + f, 43) + _rot(g, 30) + h, e + _rot(f + a, 18) + g, mul)


def _weak32(buf, off, a, b):
    """FarmHash's WeakHashLen32WithSeeds over the 32 bytes at off, seeds a and b: a pair of words."""
    w, x, y, z = (_fetch(buf, off + _U64(8 * i)) for i in range(4))
    a = a + w
    b = _rot(b + a + z, 21)
    c = a
    a = a + x + y
    b = b + _rot(a, 44)
    return a + z, b + c


def _len_over64(buf, n):
    """FarmHash na's loop for strings over 64 bytes: 56 bytes of state (x, y, z, v, w) per string,
    stirred by each 64-byte block, then the last 64 bytes once more with a length-dependent multiplier."""
    seed = _U64(81)
    zero = np.zeros_like(n)
    x = np.full_like(n, seed)
    y = np.full_like(n, seed) * _U64(_K1) + _U64(113)
    z = _shift_mix(y * _U64(_K2) + _U64(113)) * _U64(_K2)
    v0 = v1 = w0 = w1 = zero
    x = x * _U64(_K2) + _fetch(buf, zero)
    blocks = (n - _U64(1)) // _U64(64)                    # 64-byte blocks before the last 1..64 bytes
    for i in range(int(blocks.max())):
        live = blocks > _U64(i)
        s = np.full_like(n, 64 * i)
        nx = _rot(x + y + v0 + _fetch(buf, s + _U64(8)), 37) * _U64(_K1)
        ny = _rot(y + v1 + _fetch(buf, s + _U64(48)), 42) * _U64(_K1)
        nx = nx ^ w1
        ny = ny + v0 + _fetch(buf, s + _U64(40))
        nz = _rot(z + w0, 33) * _U64(_K1)
        nv0, nv1 = _weak32(buf, s, v1 * _U64(_K1), nx + w0)
        nw0, nw1 = _weak32(buf, s + _U64(32), nz + w1, ny + _fetch(buf, s + _U64(16)))
        nx, nz = nz, nx                                    # the state's x and z trade places
        x, y, z = np.where(live, nx, x), np.where(live, ny, y), np.where(live, nz, z)
        v0, v1, w0, w1 = (np.where(live, a, b) for a, b in ((nv0, v0), (nv1, v1), (nw0, w0), (nw1, w1)))
    mul = _U64(_K1) + ((z & _U64(0xFF)) << _U64(1))
    s = n - _U64(64)                                       # the last 64 bytes
    w0 = w0 + ((n - _U64(1)) & _U64(63))
    v0 = v0 + w0
    w0 = w0 + v0
    x = _rot(x + y + v0 + _fetch(buf, s + _U64(8)), 37) * mul
    y = _rot(y + v1 + _fetch(buf, s + _U64(48)), 42) * mul
    x = x ^ (w1 * _U64(9))
    y = y + v0 * _U64(9) + _fetch(buf, s + _U64(40))
    z = _rot(z + w0, 33) * mul
    v0, v1 = _weak32(buf, s, v1 * mul, x + w0)
    w0, w1 = _weak32(buf, s + _U64(32), z + w1, y + _fetch(buf, s + _U64(16)))
    x, z = z, x
    return _hash_len16(_hash_len16(v0, w0, mul) + _shift_mix(y) * _U64(_K0) + z, _hash_len16(v1, w1, mul) + x, mul)


def fingerprint64(values):
    """FarmHash Fingerprint64 of each string (UTF-8) or bytes value: uint64 array of the input's shape.

    TensorFlow's ``Fingerprint64`` (FarmHash's ``farmhashna::Hash64``), the hash of
    ``tf.strings.to_hash_bucket_fast`` and ``tf.fingerprint``: strings of 0-16, 17-32, 33-64 bytes each
    have their own mix of a few 64-bit words; longer ones run a 64-byte block loop.

    >>> int(fingerprint64(["hello world"])[0])
    6381520714923946011
    """
    return _hash_strings(values, _farmhash_na)


def _farmhash_na(buf, n):
    out = np.empty(n.shape, _U64)
    for lo, hi, fn in ((0, 16, _len0to16), (17, 32, _len17to32), (33, 64, _len33to64), (65, None, _len_over64)):
        sel = (n >= _U64(lo)) & (True if hi is None else n <= _U64(hi))
        if np.any(sel):
            out[sel] = fn(buf[sel], n[sel])
    return out


# ----------------------------------------------------------------------------------------- SipHash
def _sip_round(v0, v1, v2, v3):
    v0 = v0 + v1
    v1 = _rot(v1, 51) ^ v0          # rotate left 13 = right 51
    v0 = _rot(v0, 32)
    v2 = v2 + v3
    v3 = _rot(v3, 48) ^ v2          # left 16
    v0 = v0 + v3
    v3 = _rot(v3, 43) ^ v0          # left 21
    v2 = v2 + v1
    v1 = _rot(v1, 47) ^ v2          # left 17
    v2 = _rot(v2, 32)
    return v0, v1, v2, v3


def siphash24(values, key):
    """SipHash-2-4 of each string (UTF-8) or bytes value under the 128-bit key (k0, k1) (two uint64):
    uint64 array of the input's shape. TensorFlow's ``to_hash_bucket_strong(key=[k0, k1])`` hash.

    State v0..v3 starts as the key xor "somepseudorandomlygeneratedbytes"; each 8-byte little-endian word
    m is mixed in by v3 ^= m, two SipRounds, v0 ^= m; the last word holds the leftover bytes and the
    length mod 256 in its top byte; then v2 ^= 0xff, four SipRounds, and v0 ^ v1 ^ v2 ^ v3.

    >>> hex(int(siphash24([bytes(range(15))], (0x0706050403020100, 0x0F0E0D0C0B0A0908))[0]))
    '0xa129ca6149be45e5'
    """
    k0, k1 = (_U64(int(k) & 0xFFFFFFFFFFFFFFFF) for k in key)
    return _hash_strings(values, lambda buf, n: _siphash(buf, n, k0, k1))


def _siphash(buf, n, k0, k1):
    v0 = np.full(n.shape, k0 ^ _U64(0x736F6D6570736575), _U64)
    v1 = np.full(n.shape, k1 ^ _U64(0x646F72616E646F6D), _U64)
    v2 = np.full(n.shape, k0 ^ _U64(0x6C7967656E657261), _U64)
    v3 = np.full(n.shape, k1 ^ _U64(0x7465646279746573), _U64)
    words = n >> _U64(3)

    def compress(state, m, live):
        a, b, c, d = state
        d2 = d ^ m
        a2, b2, c2, d2 = _sip_round(*_sip_round(a, b, c, d2))
        a2 = a2 ^ m
        return tuple(np.where(live, new, old) for new, old in ((a2, a), (b2, b), (c2, c), (d2, d)))

    state = (v0, v1, v2, v3)
    for i in range(int(words.max())):
        state = compress(state, _fetch(buf, np.full_like(n, 8 * i)), words > _U64(i))
    # the bytes past a string's end are zeros in the matrix: the last word is its tail plus the length
    last = _fetch(buf, words << _U64(3)) | ((n & _U64(0xFF)) << _U64(56))
    v0, v1, v2, v3 = compress(state, last, np.ones(n.shape, bool))
    v2 = v2 ^ _U64(0xFF)
    for _ in range(4):
        v0, v1, v2, v3 = _sip_round(v0, v1, v2, v3)
    return v0 ^ v1 ^ v2 ^ v3


def fingerprint_cat64(fp1, fp2):
    """TensorFlow's FingerprintCat64: a 64-bit combination of two fingerprints (uint64 arrays)."""
    fp1, fp2 = np.asarray(fp1, _U64), np.asarray(fp2, _U64)
    with np.errstate(over="ignore"):   # NumPy warns on wrapping 0-d products; wrapping is the point
        r = fp1 ^ _U64(_KMUL)
        r = r ^ (_shift_mix(fp2 * _U64(_KMUL)) * _U64(_KMUL))
        r = r * _U64(_KMUL)
        r = _shift_mix(r) * _U64(_KMUL)
        return _shift_mix(r)


# ------------------------------------------------------------------------------------------ layers
def _host_array(x):
    if isinstance(x, Tensor):
        x = x.data
    if backend.is_cupy_array(x):
        x = x.get()
    if isinstance(x, (str, bytes)):
        return np.asarray(x, dtype=object)
    a = np.asarray(x)
    if a.dtype.kind in "US":
        a = a.astype(object)
    return a


def _is_positive_int(n):
    return isinstance(n, (int, np.integer)) and not isinstance(n, bool) and n > 0


def _is_text(a):
    return a.dtype == object


def _check_encoding(layer, output_mode, valid, sparse):
    if output_mode not in valid:
        raise ValueError(f"{type(layer).__name__} '{layer.name}': invalid value for argument output_mode. Expected "
                         f"one of {valid}. Received: output_mode={output_mode!r}")
    if sparse:
        raise ValueError(f"{type(layer).__name__} '{layer.name}': sparse=True (a tf.SparseTensor output) is not "
                         "supported by lamina; use sparse=False for a dense output.")


def _default_dtype(kwargs, output_mode):
    if kwargs.get("dtype") is None:
        kwargs["dtype"] = "int64" if output_mode == "int" else backend.floatx()
    kwargs.setdefault("autocast", False)   # inputs are hashed as given, whatever the output dtype (Keras)
    return kwargs


class Hashing(Layer):
    """Hashes strings or integers into ``num_bins`` bins (the hashing trick), as Keras 3's Hashing.

    Args: num_bins (including the mask bin when mask_value is set), mask_value (inputs equal to it go to
    bin 0 and the others to 1..num_bins-1), salt (None: FarmHash Fingerprint64; an int s or a pair
    [s0, s1]: SipHash-2-4 keyed by (s0, s1), an int meaning [s, s]), output_mode 'int', 'one_hot',
    'multi_hot' or 'count', sparse (False only), dtype (int64 for 'int', else float32).
    Input: strings (any shape; bytes or str, hashed as UTF-8), integers (hashed as their decimal text, as
    tf.as_string writes them) or floats (truncated to int64 first). Output: 'int' the bins, same shape;
    'one_hot' (..., num_bins) (a last axis of 1 is replaced); 'multi_hot'/'count' over the last axis.
    Forward: bin = Fingerprint64(text) mod num_bins (unsigned 64-bit), as ``tf.strings.to_hash_bucket_fast``;
    with a salt, SipHash(key, text) mod num_bins as ``to_hash_bucket_strong``. No weights, no gradient.

    >>> Hashing(num_bins=3)([["A"], ["B"], ["C"], ["D"], ["E"]]).numpy().ravel().tolist()
    [1, 0, 1, 1, 2]
    """

    def __init__(self, num_bins, mask_value=None, salt=None, output_mode="int", sparse=False, **kwargs):
        super().__init__(**_default_dtype(kwargs, output_mode))
        if not _is_positive_int(num_bins):
            raise ValueError(f"Hashing '{self.name}': num_bins cannot be None or non-positive. "
                             f"Received: num_bins={num_bins!r}")
        if sparse and output_mode == "int":
            raise ValueError(f"Hashing '{self.name}': sparse may only be true if output_mode is 'one_hot', "
                             f"'multi_hot', or 'count'. Received: sparse={sparse} and output_mode={output_mode!r}")
        _check_encoding(self, output_mode, ("int", "one_hot", "multi_hot", "count"), sparse)
        if output_mode == "int" and np.dtype(self.compute_dtype) not in (np.dtype("int32"), np.dtype("int64")):
            raise ValueError(f"Hashing '{self.name}': when output_mode='int', dtype should be an integer type, "
                             f"'int32' or 'int64'. Received: dtype={self.compute_dtype}")
        self.num_bins = int(num_bins)
        self.mask_value = mask_value
        self.output_mode = output_mode
        self.sparse = False
        if salt is None:
            self.salt = None
        elif isinstance(salt, (tuple, list)) and len(salt) == 2 and all(isinstance(s, (int, np.integer)) for s in salt):
            self.salt = [int(s) for s in salt]
        elif isinstance(salt, (int, np.integer)) and not isinstance(salt, bool):
            self.salt = [int(salt), int(salt)]
        else:
            raise ValueError(f"Hashing '{self.name}': salt can only be a tuple of size 2 integers, or a single "
                             f"integer. Received: salt={salt!r}")
        self.strong_hash = self.salt is not None
        self.built = True

    def _bins(self, a):
        """Bin index (int64) of every value of a (strings as objects, or numbers)."""
        bins = self.num_bins
        mask = None
        if self.mask_value is not None and bins > 1:
            bins -= 1
            mask = a == self.mask_value
            mask = np.asarray(mask, bool) if np.shape(mask) == a.shape else np.zeros(a.shape, bool)
        if not _is_text(a):
            if a.dtype.kind == "b" or a.dtype.kind not in "iuf":
                raise ValueError(f"Hashing '{self.name}': inputs must be strings or numbers. "
                                 f"Received dtype {a.dtype}")
            if a.dtype.kind == "f":
                a = a.astype(np.int64)
            a = a.astype(str)          # decimal text, as tf.as_string
        h = siphash24(a, self.salt) if self.strong_hash else fingerprint64(a)
        out = (h % _U64(bins)).astype(np.int64)
        if mask is not None:
            out = np.where(mask, 0, out + 1)
        return out

    def call(self, inputs):
        a = _host_array(inputs)
        if self.output_mode == "one_hot" and a.ndim and a.shape[-1] == 1:
            a = a[..., 0]
        ids = self._bins(a)
        if self.output_mode == "int":
            out = ids.astype(self.compute_dtype)
        else:
            out = _encode(ids, self.num_bins, self.output_mode, np.dtype(self.compute_dtype))
        return Tensor(backend.to_device(out, self._array_module()))

    def compute_output_shape(self, input_shape):
        s = tuple(input_shape)
        if self.output_mode == "int":
            return s
        if not s:
            return (self.num_bins,)
        if self.output_mode == "one_hot" and s[-1] != 1:
            return s + (self.num_bins,)
        return s[:-1] + (self.num_bins,)

    def compute_output_spec(self, inputs, **kwargs):
        return self.compute_output_shape(inputs.shape), self.compute_dtype

    def get_config(self):
        config = super().get_config()
        config["salt"] = self.salt   # Keras stores the pair
        return config


class HashedCrossing(Layer):
    """Crosses categorical features with the hashing trick, as Keras 3's HashedCrossing.

    Args: num_bins, output_mode 'int' or 'one_hot', sparse (False only), dtype (int64 for 'int', else
    float32). Call: ``layer((feature_1, feature_2, ...))`` with at least two features of equal shape (),
    (batch,) or (batch, 1), each integers or strings.
    Output: 'int' the bins, the features' shape; 'one_hot' (batch, num_bins) (or (num_bins,)).
    Forward (``tf.sparse.cross_hashed``): each string feature is hashed with Fingerprint64, an integer
    feature is its own 64-bit value; h = 0xDECAFCAFFE, then h = FingerprintCat64(h, f) for each feature in
    order; bin = h mod num_bins (unsigned). No weights, no gradient.

    >>> HashedCrossing(num_bins=5)((["A", "B", "A", "B", "A"], [101, 101, 101, 102, 102])).numpy().tolist()
    [1, 4, 1, 1, 3]
    """

    def __init__(self, num_bins, output_mode="int", sparse=False, name=None, dtype=None, **kwargs):
        super().__init__(**_default_dtype(dict(kwargs, name=name, dtype=dtype), output_mode))
        if not _is_positive_int(num_bins):
            raise ValueError(f"HashedCrossing '{self.name}': num_bins must be a positive int. "
                             f"Received: num_bins={num_bins!r}")
        _check_encoding(self, output_mode, ("int", "one_hot"), sparse)
        self.num_bins = int(num_bins)
        self.output_mode = output_mode
        self.sparse = False
        self.built = True

    def __call__(self, inputs, *args, **kwargs):
        if not isinstance(inputs, (list, tuple)):
            raise ValueError(f"HashedCrossing '{self.name}' should be called on a list or tuple of inputs. "
                             f"Received: inputs of type {type(inputs).__name__}")
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs):
        if len(inputs) < 2:
            raise ValueError(f"HashedCrossing '{self.name}' should be called on at least two inputs. "
                             f"Received: {len(inputs)} input(s)")
        feats = [_host_array(x) for x in inputs]
        shape = feats[0].shape
        if len(shape) > 2 or (len(shape) == 2 and shape[-1] != 1):
            raise ValueError(f"HashedCrossing '{self.name}': all inputs should have shape (), (batch_size) or "
                             f"(batch_size, 1). Received shape {shape}")
        if any(f.shape != shape for f in feats[1:]):
            raise ValueError(f"HashedCrossing '{self.name}': all inputs should have equal shape. "
                             f"Received shapes {[f.shape for f in feats]}")
        h = np.full(shape, CROSS_HASH_KEY, _U64)
        for f in feats:   # a handful of features; each step is vectorised over the batch
            if _is_text(f):
                fh = fingerprint64(f)
            elif f.dtype.kind in "iu" and f.dtype.kind != "b":
                fh = f.astype(np.int64).view(_U64) if f.ndim else np.asarray(f, np.int64).reshape(1).view(_U64)[0]
            else:
                raise ValueError(f"HashedCrossing '{self.name}': all inputs should have an integer or string dtype. "
                                 f"Received dtype {f.dtype}")
            h = fingerprint_cat64(h, fh)
        ids = (np.asarray(h, _U64) % _U64(self.num_bins)).astype(np.int64).reshape(shape)
        if self.output_mode == "int":
            out = ids.astype(self.compute_dtype)
        else:
            out = _encode(ids, self.num_bins, "one_hot", np.dtype(self.compute_dtype))
        return Tensor(backend.to_device(np.asarray(out), self._array_module()))

    def compute_output_shape(self, input_shape):
        s = tuple(input_shape[0])
        if self.output_mode == "int":
            return s
        if not s:
            return (self.num_bins,)
        return (s[:-1] if s[-1] == 1 and len(s) > 1 else s) + (self.num_bins,)

    def compute_output_spec(self, inputs, **kwargs):
        return self.compute_output_shape([tuple(x.shape) for x in inputs]), self.compute_dtype
