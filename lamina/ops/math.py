"""Elementwise arithmetic, reductions and matmul: forward and backward side by side.

Binary ops broadcast like NumPy; their backward sums each gradient back to its operand's shape
with ``unbroadcast``.
"""
import sys as _sys
from math import prod as _prod

import numpy as np

from .. import threads as _threads
from .. import tensor as _tensor_module
from ..backend import get_array_module
from ..tensor import Op, Tensor, as_tensor
from . import kernels as _kernels

__all__ = [
    "unbroadcast", "add", "subtract", "multiply", "divide", "negative", "power", "matmul", "exp", "log",
    "sqrt", "square", "abs", "clip", "maximum", "minimum", "where", "sum", "mean", "max", "min", "var",
    "std", "cast", "linear", "sign",
]


def unbroadcast(g, shape):
    """Sum g over the axes that broadcasting added or stretched, so that it has ``shape``. Where those are the
    leading axes of a C-contiguous float32 / float64 NumPy array (a bias added over a batch and its positions), as
    one product with a ones vector (sum_rows): (32, 32, 32, 32) float32 to (32,) 0.56 -> 0.07 ms, (64, 128, 512)
    to (512,) 1.02 -> 0.52."""
    shape = tuple(shape)
    if g.shape == shape:
        return g
    lead = g.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, n in enumerate(shape) if n == 1 and g.shape[i + lead] != 1)
    if (axes and type(g) is np.ndarray and g.dtype in _BLAS_FLOATS and g.flags.c_contiguous
            and axes == tuple(range(axes[-1] + 1)) and axes[-1] + 1 < g.ndim and g.size):
        return sum_rows(np, g.reshape(-1, _prod(g.shape[axes[-1] + 1:]))).reshape(shape)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    if lead:
        g = g.reshape(g.shape[lead:])
    return g.reshape(shape)


class Add(Op):
    same_float_dtype = True

    def forward(self, a, b):
        self.shapes = (a.shape, b.shape)
        if self.xp is np:   # a bias over the last axis of a large array (either operand): rows_op's tiled rows
            if _bias_of(a, b):
                return rows_op(np, np.add, a.reshape(-1, a.shape[-1]), b.reshape(-1)).reshape(a.shape)
            if _bias_of(b, a):
                return rows_op(np, np.add, b.reshape(-1, b.shape[-1]), a.reshape(-1)).reshape(b.shape)
        return a + b

    def backward(self, gy):
        sa, sb = self.shapes
        return (unbroadcast(gy, sa) if self.needs_grad[0] else None,
                unbroadcast(gy, sb) if self.needs_grad[1] else None)


# Add takes rows_op's way for arrays of this many values or more (below, the few microseconds of choosing it cost more
# than a broadcast saves)
_BIAS_ROWS = 1 << 15


def _bias_of(a, b):
    """Whether b is a vector over a's last axis (shape (C,) or (1, ..., 1, C)) for a C-contiguous float NumPy array a
    of _BIAS_ROWS values or more, of b's dtype: a bias added after a layer whose op has none inside (Conv3DTranspose,
    SeparableConv, EinsumDense). NumPy broadcasts it a row of C at a time, slow for a few channels ((262144, 8) float32
    + (8,): 2.5 ms, rows_op's tiled rows 0.4; 32 channels 1.05 -> 0.37)."""
    return (type(a) is np.ndarray and type(b) is np.ndarray and a.ndim >= 2 and a.size >= _BIAS_ROWS
            and a.dtype == b.dtype and a.dtype in _BLAS_FLOATS and a.flags.c_contiguous and b.ndim <= a.ndim
            and b.size == a.shape[-1] and b.shape[-1] == a.shape[-1])


class Subtract(Op):
    same_float_dtype = True

    def forward(self, a, b):
        self.shapes = (a.shape, b.shape)
        return a - b

    def backward(self, gy):
        sa, sb = self.shapes
        return (unbroadcast(gy, sa) if self.needs_grad[0] else None,
                unbroadcast(-gy, sb) if self.needs_grad[1] else None)


def _product_unbroadcast(gy, other, shape):
    """unbroadcast(gy * other, shape): where ``other`` has gy's shape and ``shape`` is broadcast along axes other
    than the last (a squeeze-excite scale (N, 1, 1, C) of a feature map, a per-channel scale), one einsum that
    multiplies and sums without the gy-sized product (NumPy: (16, 48, 48, 96) float32 4.2 -> 2.2 ms); the same
    values, as NumPy's sum also adds down those axes one row after another. A sum along the last axis keeps the
    product and NumPy's sum (pairwise there: einsum's running sum would lose precision over long rows)."""
    shape = tuple(shape)
    if (type(gy) is np.ndarray and type(other) is np.ndarray and gy.shape == other.shape and gy.shape != shape
            and gy.dtype == other.dtype and gy.dtype.kind == "f" and 0 < gy.ndim <= 26
            and shape and shape[-1] == gy.shape[-1]):
        lead = gy.ndim - len(shape)
        letters = "abcdefghijklmnopqrstuvwxyz"[:gy.ndim]
        keep = "".join(letters[i + lead] for i, n in enumerate(shape) if n != 1 or gy.shape[i + lead] == 1)
        return np.einsum(f"{letters},{letters}->{keep}", gy, other).reshape(shape)
    return unbroadcast(gy * other, shape)


class Multiply(Op):
    same_float_dtype = True

    def forward(self, a, b):
        self.saved = (a, b)
        return a * b

    def backward(self, gy):
        a, b = self.saved
        return (_product_unbroadcast(gy, b, a.shape) if self.needs_grad[0] else None,
                _product_unbroadcast(gy, a, b.shape) if self.needs_grad[1] else None)


class Divide(Op):
    same_float_dtype = True

    def forward(self, a, b):
        self.saved = (a, b)
        return a / b

    def backward(self, gy):
        a, b = self.saved
        ga = unbroadcast(gy / b, a.shape) if self.needs_grad[0] else None
        # -(a / b) / b, not -a / b^2: b^2 underflows to 0 for |b| below ~1e-19 in float32 (a = 0 then gave 0 / 0,
        # NaN, and a = b = 1e-30 -inf, where the slope is 0 and -1e30)
        gb = unbroadcast(-(gy * (a / b)) / b, b.shape) if self.needs_grad[1] else None
        return ga, gb


class Negative(Op):
    def forward(self, x):
        return -x

    def backward(self, gy):
        return -gy


class PowerScalar(Op):
    """x ** p for a constant p. Backward: p x^(p-1)."""

    def forward(self, x):
        self.saved = (x,)
        return x ** self.p

    def backward(self, gy):
        (x,) = self.saved
        if self.p == 0:  # x**0 is constant 1: gradient 0 everywhere, also at x = 0 (not 0 * inf)
            return self.xp.zeros_like(gy)
        return gy * self.p * x ** (self.p - 1)


class Power(Op):
    """a ** b with both operands tensors. Backward: b a^(b-1) for a (0 where b == 0), and a^b log(a)
    for b (0 where a == 0 and b >= 0, where a^b is flat in b; NaN for a < 0), as PyTorch."""
    same_float_dtype = True

    def forward(self, a, b):
        y = a ** b
        self.saved = (a, b, y)
        return y

    def backward(self, gy):
        a, b, y = self.saved
        xp = self.xp
        ga = gb = None
        with np.errstate(divide="ignore", invalid="ignore"):
            if self.needs_grad[0]:
                ga = unbroadcast(xp.where(b == 0, 0, gy * b * a ** (b - 1)).astype(gy.dtype, copy=False), a.shape)
            if self.needs_grad[1]:
                flat = (a == 0) & (b >= 0)
                loga = xp.log(xp.where(flat, 1, a))
                gb = unbroadcast(xp.where(flat, 0, gy * y * loga).astype(gy.dtype, copy=False), b.shape)
        return ga, gb


class MatMul(Op):
    """a @ b with NumPy's batching rules. Backward: gy b^T and a^T gy, summed over broadcast batches."""

    half_via_float32 = True  # float16 through float32 BLAS (tensor.Op)
    same_float_dtype = True


    def forward(self, a, b):
        self.saved = (a, b)
        return mm(self.xp, a, b)

    def backward(self, gy):
        a, b = self.saved
        xp = self.xp
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = gy
        if a.ndim == 1:
            g2 = xp.expand_dims(g2, -2)
        if b.ndim == 1:
            g2 = xp.expand_dims(g2, -1)
        ga = gb = None
        if self.needs_grad[0]:
            ga = mm(xp, g2, xp.swapaxes(b2, -1, -2))
            ga = unbroadcast(ga, a2.shape).reshape(a.shape)
        if self.needs_grad[1]:
            if a2.ndim == 2 and g2.ndim == 2:
                gb = mm_tn(xp, a2, g2)
            elif b2.ndim == 2:  # fold batch axes into one big product
                gb = mm_tn(xp, a2.reshape(-1, a2.shape[-1]), g2.reshape(-1, g2.shape[-1]))
            else:
                gb = unbroadcast(mm(xp, xp.swapaxes(a2, -1, -2), g2), b2.shape)
            gb = gb.reshape(b.shape)
        return ga, gb


def mm(xp, a, b, out=None):
    """``a @ b`` (into ``out`` when given). An inner dimension of 1, an outer product (the input gradient of a
    Dense(1) layer, a Dense layer on one feature, a 1x1 convolution to or from one channel), does not go
    through np.matmul, which runs it in a loop of its own about 10x slower than BLAS ((65536, 1) @ (1, 64)
    float32: 3.9 ms against 0.42 through np.dot; NumPy 2.4): np.dot for 2-D operands, else a broadcast
    product (the same numbers: a single term per entry)."""
    if xp is not np or a.ndim < 2 or b.ndim < 2 or a.shape[-1] != 1:
        return a @ b if out is None else xp.matmul(a, b, out=out)
    if a.ndim == b.ndim == 2:
        if out is None:
            return np.dot(a, b)
        if out.flags.c_contiguous and out.dtype == np.result_type(a, b):
            return np.dot(a, b, out=out)
        out[...] = np.dot(a, b)
        return out
    return np.multiply(a, b, out=out)


# mm_tn's chunks of rows, the largest product it chunks (M N), and the work (K M N) from which they go to threads
_TN_CHUNK = 4096
_TN_MAX_OUT = 1 << 16
_TN_MIN_WORK = 1 << 22


def mm_tn(xp, a, b):
    """``a.T @ b`` for 2-D a (K, M) and b (K, N): a weight's gradient, a sum over K rows (a batch's samples and
    positions). Where K is long and the product small (K >= 2 _TN_CHUNK, M N <= _TN_MAX_OUT, float32 / float64), as
    the products of chunks of rows (a multiple of four of them, each at most _TN_CHUNK long: fixed by K alone) shared
    over lamina's threads, BLAS on one thread each (threads.split_products), then added in chunk order: the same
    sums on any number of threads. OpenBLAS's own threads split M and N, of which a small product has little: on the
    2-core Zen 2, (32768, 32) by (32768, 32) float32 1.31 ms on its two threads (1.02 on one) against 0.67 chunked;
    (32768, 128) pairs 9.7 -> 7.3 ms; (100352, 32) pairs 5.3 -> 2.2; (8192, 512) pairs 25 -> 23 (so not chunked past
    M N = 2^16)."""
    k = a.shape[0]
    if (xp is not np or a.ndim != 2 or b.ndim != 2 or k < 2 * _TN_CHUNK or a.shape[1] * b.shape[1] > _TN_MAX_OUT
            or a.dtype != b.dtype or a.dtype not in _BLAS_FLOATS):
        return mm(xp, a.T, b)
    count = 4 * -(-k // (4 * _TN_CHUNK))   # (a multiple of four: as many on each of 2 or 4 threads)
    size = -(-k // count)
    parts = np.empty((count, a.shape[1], b.shape[1]), a.dtype)

    def body(lo, hi):
        for c in range(lo, hi):
            rows = slice(c * size, (c + 1) * size)
            np.matmul(a[rows].T, b[rows], out=parts[c])
    _threads.split_products(body, parts.shape[0], k * parts.shape[1] * parts.shape[2], _TN_MIN_WORK)
    return parts.sum(axis=0)


_WORD = {2: np.int16, 4: np.int32, 8: np.int64}


def select(xp, cond, a, b):
    """``xp.where(cond, a, b)`` for float arrays of one shape and dtype, without branches. NumPy's where picks
    each element through a branch, and on a data-dependent condition (x > 0 over activations, about half
    true at random) the mispredictions make it ~5x slower than plain passes ((3.2 M,) float32: 11.8 against
    2.1 ms here). Exact to the bit (NaN payloads, -0.0, infinities): the words are chosen through an integer
    mask, b ^ ((a ^ b) & -cond). Anything else (broadcasting, other dtypes, CuPy) goes to xp.where."""
    arrays = all(isinstance(v, np.ndarray) for v in (cond, a, b))
    word = _WORD.get(a.dtype.itemsize) if arrays else None
    if (xp is not np or word is None or a.dtype.kind != "f" or b.dtype != a.dtype or a.shape != b.shape
            or cond.shape != a.shape or cond.dtype != bool):
        return xp.where(cond, a, b)
    m = cond.view(np.int8).astype(word)
    np.negative(m, out=m)
    out = np.bitwise_xor(a.view(word), b.view(word))
    out &= m
    out ^= b.view(word)
    return out.view(a.dtype)


def row_max(xp, x2):
    """The maximum of each row of a C-contiguous (R, D) float matrix. NumPy reduces a short last axis row by
    row at ~200 ns a row ((25088, 128) float32: 5.6 ms); here the rows are halved by elementwise maxima down to
    16 columns, and those are reduced across the rows of their transposed copy (2.2 ms). The same maxima
    (NaN propagates). An odd width stops the halving early; long rows (D > 512), fewer than 64 rows and CuPy
    keep the plain reduction."""
    if xp is not np or x2.shape[1] > 512 or x2.shape[1] < 2 or x2.shape[0] < 64:
        return x2.max(axis=1)
    a = x2
    while a.shape[1] > 16 and a.shape[1] % 2 == 0:
        h = a.shape[1] // 2
        a = np.maximum(a[:, :h], a[:, h:])
    return np.maximum.reduce(np.ascontiguousarray(a.T), axis=0)


def sum_rows(xp, g2):
    """Column sums of a tall 2-D (M, O) matrix as a GEMV with a ones vector: 2-3x faster than
    g2.sum(axis=0) at the shapes of bias gradients (e.g. (2048, 512) float32: 0.04 against 0.08 ms). Narrow rows
    (O < _SUM_WIDTH / 2) of a C-contiguous NumPy matrix are taken k at a time, k O about _SUM_WIDTH wide: the GEMV
    over (M / k, k O) and then the k partial sums of each column added (OpenBLAS's GEMV crawls over narrow rows:
    (262144, 8) float32 1.04 -> 0.12 ms, (65536, 32) 0.42 -> 0.11, (32768, 64) 0.31 -> 0.10)."""
    if g2.dtype.kind != "f" or g2.ndim != 2:
        return g2.sum(axis=0)
    m, o = g2.shape
    if (m * o >= _BIAS_ROWS and 0 < o < _SUM_WIDTH // 2 and xp is np and m >= 4 * (_SUM_WIDTH // o)
            and g2.flags.c_contiguous):
        k = _SUM_WIDTH // o
        main = m - m % k
        s = (np.ones(main // k, dtype=g2.dtype) @ g2[:main].reshape(main // k, k * o)).reshape(k, o).sum(axis=0)
        if main < m:
            s += np.ones(m - main, dtype=g2.dtype) @ g2[main:]
        return s
    return xp.ones(m, dtype=g2.dtype) @ g2


# sum_rows takes narrow rows this many values at a time
_SUM_WIDTH = 1024

_ZERO_ROWS = {}

# rows_op tiles its vector from this many rows: below, the ~2 us of choosing the width and tiling cost more
# than the wider rows save (~1-2 ns a row: (1024, 16) float32, tiled 11.0 against 10.1 us; (2048, 16), 17.7
# against 19.8; (8192, 32), 102 against 107)
_ROWS_TILED = 2048


def rows_op(xp, ufunc, a2, vec, out=None):
    """``ufunc(a2, vec, out=out)`` for a C-contiguous (M, C) matrix and a (C,) vector (a per-channel scale or
    shift), with the vector tiled k times so that NumPy's inner loop runs over rows of k*C entries instead of
    C: for a short C (a conv layer's 32 or 64 channels) broadcasting a row costs ~1.5x a plain pass
    ((65536, 32) float32: 0.40 against 0.27 ms). Large matrices are split over lamina's threads by rows; short
    ones (under _ROWS_TILED rows) broadcast as they are. The same numbers either way (one operation an
    element). Returns ``out`` (a new array when None)."""
    if out is None:
        out = xp.empty(a2.shape, dtype=xp.result_type(a2, vec))
    M, C = a2.shape
    if xp is np and a2.flags.c_contiguous and out.flags.c_contiguous:
        rows, v, o = a2, vec, out
        if M >= _ROWS_TILED:   # (tile_middle: np.tile(vec, k) without its ~5-10 us of Python)
            r3, v3 = tile_middle(a2.reshape(1, M, C), vec.reshape(1, 1, C))
            rows, v = r3[0], v3[0, 0]
            o = out.reshape(rows.shape)
        split_pass(xp, lambda lo, hi: ufunc(rows[lo:hi], v, out=o[lo:hi]), len(rows), a2.size)
        return out
    ufunc(a2, vec, out=out)
    return out


def _flat_width(size):
    """The widest row (4096, 1024, 256, 64 or 16 values) that a contiguous array of ``size`` values splits into
    evenly, or 0: element-wise passes over a whole array run on rows that long, whatever its shape."""
    for w in _FLAT_WIDTHS:   # (a loop: next() over a generator cost ~1 us a call, on every small pass)
        if size % w == 0:
            return w
    return 0


_FLAT_WIDTHS = (4096, 1024, 256, 64, 16)
_SCALAR_ZERO_MAX = 1024   # relu_into's scalar zero below this many values (measured crossover 1-2 K, float32)
_ZERO_SCALARS = {}


def relu_into(xp, x, out):
    """max(x, 0) written to ``out`` (``x`` itself for in place); NaN stays NaN, as the ReLU op. One compiled pass
    where the kernels run (kernels.relu, with the values below).

    NumPy (2.4) runs ``maximum(x, 0)`` against a scalar about 2.4x slower than against an array (its SIMD
    loop is for two arrays: 0.55 against 0.23 ms for a (57600, 32) float32 conv output), so a contiguous x
    is taken as rows of a small cached zero row instead of broadcasting a scalar. Large arrays are split
    over lamina's threads by rows. Small arrays (below _SCALAR_ZERO_MAX values) take the scalar: there the rows'
    setup costs more than the loop saves ((1, 64): 0.6 us against 1.9)."""
    if xp is np and x.size < _SCALAR_ZERO_MAX and x.size < _kernels.MIN_ELEMENTS:   # (the kernels decline these)
        zero = _ZERO_SCALARS.get(x.dtype)
        if zero is None:
            zero = _ZERO_SCALARS[x.dtype] = x.dtype.type(0)
        return np.maximum(x, zero, out=out)
    if xp is np and x.flags.c_contiguous and out.flags.c_contiguous and x.size:
        width = _flat_width(x.size)
        if (width and x.size >= _kernels.MIN_ELEMENTS and out.shape == x.shape   # (below it the kernels decline)
                and _kernels.relu(x.reshape(-1, width), out.reshape(-1, width))):
            return out   # one compiled pass (kernels.py)
        if width:
            key = (x.dtype, width)
            zero = _ZERO_ROWS.get(key)
            if zero is None:
                zero = _ZERO_ROWS[key] = np.zeros(width, dtype=x.dtype)
                zero.flags.writeable = False
            rows_x, rows_out = x.reshape(-1, width), out.reshape(-1, width)
            if x.size < _SPLIT_PASS:   # one pass here, no split to set up (~2 us at a small Dense's size)
                np.maximum(rows_x, zero, out=rows_out)
            else:
                split_pass(xp, lambda lo, hi: xp.maximum(rows_x[lo:hi], zero, out=rows_out[lo:hi]), len(rows_x),
                           x.size)
            return out
    xp.maximum(x, x.dtype.type(0), out=out)
    return out


def _plain_pair(xp, gy, y):
    """Whether gy and y are NumPy arrays of one shape, both C-contiguous: what relu_grad's flat passes need."""
    return xp is np and gy.shape == y.shape and gy.flags.c_contiguous and y.flags.c_contiguous


def relu_grad(xp, gy, y):
    """gy where y > 0, else 0: the ReLU's backward from its input or output (NaN in y passes nothing, NaN
    in gy passes through where y > 0). One compiled pass where the kernels run (kernels.py: NumPy's code reads
    y twice and gy once, through a boolean mask); else large contiguous arrays are split over lamina's threads."""
    width = _flat_width(gy.size) if _plain_pair(xp, gy, y) else 0
    done = _kernels.relu_bias_grad(gy.reshape(-1, width), y.reshape(-1, width), False) if width else None
    if done is not None:
        return done[0].reshape(gy.shape)
    return _relu_grad_numpy(xp, gy, y)


def _relu_grad_numpy(xp, gy, y):
    """relu_grad's NumPy code: contiguous arrays of one shape in flat passes (split over lamina's threads when
    large), anything else broadcast."""
    if not _plain_pair(xp, gy, y):
        return gy * (y > 0)
    if gy.size < _SPLIT_PASS:   # one pass here: no flat views and split to set up (~5 us at a small Dense's size)
        return np.multiply(gy, y > 0)
    out = np.empty(gy.shape, np.result_type(gy.dtype, np.bool_))
    fg, fy, fo = gy.reshape(-1), y.reshape(-1), out.reshape(-1)
    split_pass(np, lambda lo, hi: np.multiply(fg[lo:hi], fy[lo:hi] > 0, out=fo[lo:hi]), fg.size, fg.size)
    return out


def relu_bias_grad(xp, gy, y, need_b):
    """The fused ReLU's backward (gy where y > 0, as relu_grad) for a layer whose output y had a bias added
    before the ReLU: (the masked gradient, the bias gradient or None). Where the compiled kernels run
    (kernels.py) the bias gradient comes from the same pass; otherwise it is None and the caller sums the
    masked gradient itself."""
    if not need_b:
        return relu_grad(xp, gy, y), None
    d = gy.shape[-1]
    done = _kernels.relu_bias_grad(gy.reshape(-1, d), y.reshape(-1, d), need_b)
    if done is None:   # (not relu_grad: the kernels were asked once for this call, and said no)
        return _relu_grad_numpy(xp, gy, y), None
    return done[0].reshape(gy.shape), done[1]


# Element-wise passes over rows are split over lamina's threads from this many elements (a ReLU, its mask,
# a per-channel scale, max pooling's offsets, layer norm's rows: ~0.3-1 ms of one core).
_SPLIT_PASS = 1 << 20


def split_pass(xp, body, n, elements, min_elements=_SPLIT_PASS):
    """body(lo, hi) over rows 0..n of a pass over ``elements`` values: spread over lamina's threads
    (threads.split_rows) for NumPy, once for CuPy (one kernel a pass is what it wants)."""
    if xp is np:
        _threads.split_rows(body, n, elements, min_elements)
    else:
        body(0, n)


class Linear(Op):
    """x @ kernel + bias over the last axis (Dense). One GEMM forward, two backward.

    Leading axes are folded into one before each product: NumPy runs (N, T, k) @ (k, n) as N separate
    small GEMMs, while (N*T, k) @ (k, n) is one large one (~20% faster at the transformer's shapes)."""

    half_via_float32 = True  # float16 through float32 BLAS (tensor.Op)
    same_float_dtype = True
    activation = None  # or 'relu', fused (linear's argument)

    def forward(self, x, w, b):
        x2 = x.reshape(-1, x.shape[-1]) if x.ndim > 2 else x
        y = mm(self.xp, x2, w)
        relu = self.activation == "relu"
        if not (relu and b is not None and y.size >= _kernels.MIN_ELEMENTS   # (below it the kernels decline)
                and _kernels.bias_relu(y, b)):   # one pass where compiled (kernels.py)
            if b is not None:
                y += b
            if relu:
                relu_into(self.xp, y, y)  # in place: no second output-sized array
        y = y.reshape(x.shape[:-1] + (w.shape[-1],)) if x.ndim > 2 else y
        self.saved = (x, w, y if relu else None)   # the output for the ReLU's mask (the graph holds it anyway)
        return y

    def backward(self, gy):
        x, w, out = self.saved
        need_b = len(self.needs_grad) > 2 and self.needs_grad[2]
        gb = None
        if out is not None:   # the fused ReLU's backward, as the ReLU op's
            gy, gb = relu_bias_grad(self.xp, gy, out, need_b)
        g2 = gy.reshape(-1, gy.shape[-1])
        gx = gw = None
        if self.needs_grad[0]:
            gx = mm(self.xp, g2, w.T).reshape(x.shape)
        if self.needs_grad[1]:
            gw = mm_tn(self.xp, x.reshape(-1, x.shape[-1]), g2)
        if need_b and gb is None:
            gb = sum_rows(self.xp, g2)
        return gx, gw, gb


class Exp(Op):
    def forward(self, x):
        y = self.xp.exp(x)
        self.saved = (y,)
        return y

    def backward(self, gy):
        return gy * self.saved[0]


class Log(Op):
    def forward(self, x):
        self.saved = (x,)
        return self.xp.log(x)

    def backward(self, gy):
        return gy / self.saved[0]


class Sqrt(Op):
    def forward(self, x):
        y = self.xp.sqrt(x)
        self.saved = (y,)
        return y

    def backward(self, gy):
        return gy * 0.5 / self.saved[0]


class Square(Op):
    def forward(self, x):
        self.saved = (x,)
        return x * x

    def backward(self, gy):
        return gy * 2 * self.saved[0]


class Abs(Op):
    def forward(self, x):
        self.saved = (x,)
        return self.xp.abs(x)

    def backward(self, gy):
        return gy * self.xp.sign(self.saved[0])


class Clip(Op):
    """Clip to [lo, hi]. Backward passes the gradient where the input was inside the range."""

    def forward(self, x):
        self.saved = (x,)
        return self.xp.clip(x, self.lo, self.hi)

    def backward(self, gy):
        (x,) = self.saved
        mask = (x >= self.lo) & (x <= self.hi) if self.lo is not None and self.hi is not None else \
            (x >= self.lo) if self.lo is not None else (x <= self.hi)
        return gy * mask


class Maximum(Op):
    """Elementwise max; a tie sends half the gradient to each side."""
    same_float_dtype = True


    def forward(self, a, b):
        self.saved = (a, b)
        return self.xp.maximum(a, b)

    def backward(self, gy):
        a, b = self.saved
        wa = (a > b) + 0.5 * (a == b)
        return (unbroadcast(gy * wa, a.shape) if self.needs_grad[0] else None,
                unbroadcast(gy * (1 - wa), b.shape) if self.needs_grad[1] else None)


class Minimum(Op):
    same_float_dtype = True

    def forward(self, a, b):
        self.saved = (a, b)
        return self.xp.minimum(a, b)

    def backward(self, gy):
        a, b = self.saved
        wa = (a < b) + 0.5 * (a == b)
        return (unbroadcast(gy * wa, a.shape) if self.needs_grad[0] else None,
                unbroadcast(gy * (1 - wa), b.shape) if self.needs_grad[1] else None)


class Where(Op):
    """where(cond, a, b); cond is a constant. Backward routes the gradient by cond."""

    def forward(self, c, a, b):
        self.saved = (c, a.shape, b.shape)
        return select(self.xp, c, a, b)  # np.where unless one shape and float dtype (then branch-free)

    def backward(self, gy):
        xp = self.xp
        c, sa, sb = self.saved
        z = xp.zeros_like(gy) if getattr(c, "shape", None) == gy.shape else xp.zeros((), gy.dtype)
        return (None,
                unbroadcast(select(xp, c, gy, z), sa) if self.needs_grad[1] else None,
                unbroadcast(select(xp, c, z, gy), sb) if self.needs_grad[2] else None)


def axis_index(axis, ndim):
    """``axis`` as an index in [0, ndim) (a 0-d input takes 0 or -1, as NumPy's reductions do); a ValueError
    (NumPy's AxisError is one) for an axis the input does not have, instead of wrapping it onto another one."""
    axis, top = int(axis), ndim or 1   # (this module's max is the op)
    if not -top <= axis < top:
        raise ValueError(f"axis {axis} is out of bounds for an array of rank {ndim}.")
    return axis % top


def _norm_axis(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axis = (axis,)
    return tuple(axis_index(a, ndim) for a in axis)


def _expand(g, shape, axes, keepdims):
    """Reshape a reduced gradient so it broadcasts against the input."""
    if keepdims:
        return g
    shp = list(shape)
    for a in axes:
        shp[a] = 1
    return g.reshape(shp)


# NumPy reduces axes that end in a short trailing run, with other reduced axes before a kept one, element by
# element along that run: (64, 1024, 8, 4) float32 over axes (1, 3) 12.7 ms, against 1.3 for the other axes first
# (the run kept: vectorised along it), then the run; (32, 32, 32, 8, 4) over (1, 2, 4) 6.4 against 0.6. Where the
# reduced axes are one trailing run (merged into one contiguous reduction), or the run is long, NumPy's own is the
# fast one ((64, 8192, 2) over (1, 2) 0.4 ms, 8.7 the other way; (32, 32, 32, 32) over (0, 2, 3) 0.26, 0.66).
_SHORT_LAST_RUN = 64


def _reduce_axes(xp, x, axes, keepdims, method="sum"):
    """x.sum (or x.max, x.min: ``method``) over ``axes`` (normalised); a short trailing run of reduced axes behind
    other reduced axes and a kept one is reduced after the others; a float sum over one run of axes before kept
    ones as a product with a ones vector (_sum_run)."""
    ax = sorted(set(axes))
    if method == "sum":
        s = _sum_run(xp, x, ax)
        if s is not None:
            return s.reshape([1 if i in ax else n for i, n in enumerate(x.shape)] if keepdims
                             else [n for i, n in enumerate(x.shape) if i not in ax])
    run = 0
    while run < len(ax) and ax[-1 - run] == x.ndim - 1 - run:
        run += 1
    if (xp is not np or run == 0 or run == len(ax) or x.dtype.kind != "f"
            or _prod(x.shape[x.ndim - run:]) >= _SHORT_LAST_RUN):
        return getattr(x, method)(axis=axes, keepdims=keepdims)
    s = getattr(x, method)(axis=tuple(ax[:-run]), keepdims=True)
    s = getattr(s, method)(axis=tuple(range(x.ndim - run, x.ndim)), keepdims=True)
    return s if keepdims else s.reshape([n for i, n in enumerate(x.shape) if i not in ax])


def _sum_run(xp, x, ax):
    """The sum of a C-contiguous float32 / float64 NumPy array over the consecutive axes ``ax`` (sorted) with kept
    axes after them, as ones (run,) @ x (before, run, after): (before, after), BLAS's products; else None. NumPy
    adds such a run one strided row at a time: a global average pooling's (32, 32, 32, 32) over (1, 2) 0.57 ms
    against 0.086, a batch of (2048, 512) over 0 107 us against 41, (64, 32, 32, 32) over (0, 1, 2) 1.11 against
    0.28 ms; the sums as accurate (BLAS's blocked order: the float64 sum's error 2-4x smaller at those shapes). A
    run that ends the array (after = 1) is NumPy's pairwise contiguous sum, the faster there."""
    if (xp is not np or not ax or x.dtype not in _BLAS_FLOATS or not x.flags.c_contiguous or x.size == 0
            or ax != list(range(ax[0], ax[-1] + 1)) or ax[-1] == x.ndim - 1):
        return None
    sh = x.shape
    run = _prod(sh[ax[0]:ax[-1] + 1])
    if run < 2:
        return None
    x3 = x.reshape(_prod(sh[:ax[0]]), run, _prod(sh[ax[-1] + 1:]))
    return np.matmul(np.ones(run, x.dtype), x3)


_BLAS_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _mean_axes(xp, x, axes, keepdims, count=None):
    """x.mean over ``axes`` as NumPy's (the sum, then divided by the count: ``count``, where the caller has it), the
    sum by _reduce_axes; float16 as NumPy (its mean accumulates in float32)."""
    if x.dtype == np.float16 or x.dtype.kind != "f" or not axes:
        return x.mean(axis=axes, keepdims=keepdims)
    if count is None:
        count = _prod([x.shape[a] for a in axes])
    s = _reduce_axes(xp, x, axes, keepdims)
    return xp.true_divide(s, count, out=s if isinstance(s, xp.ndarray) else None)


class Sum(Op):
    def forward(self, x):
        self.shape_in = x.shape
        self.axes = _norm_axis(self.axis, x.ndim)
        return _reduce_axes(self.xp, x, self.axes, self.keepdims)

    def backward(self, gy):
        g = _expand(gy, self.shape_in, self.axes, self.keepdims)
        return self.xp.broadcast_to(g, self.shape_in)


class Mean(Op):
    def forward(self, x):
        self.shape_in = x.shape
        self.axes = _norm_axis(self.axis, x.ndim)
        self.count = _prod([x.shape[a] for a in self.axes]) if self.axes else 1
        return _mean_axes(self.xp, x, self.axes, self.keepdims, self.count)

    def backward(self, gy):
        g = _expand(gy, self.shape_in, self.axes, self.keepdims) / self.count
        if self.xp is np and _prod(self.shape_in) >= MEAN_FILL_MIN:
            # a global average pooling's (a run of axes): its gradient as an array of its own, filled through
            # tile_middle, where the broadcast view sent the op below off its compiled kernels (they take C-contiguous
            # arrays; NumPy's broadcasting product instead) or made the leaf's copy (a broadcast along a middle axis
            # with 32 channels: 0.38 ms at (64, 32, 32, 32) against 0.20 filled so). A ReLU + GlobalAveragePooling2D
            # step there (forward and backward, 8 alternations in one process): 1.66 -> 1.15 ms
            out = np.empty(self.shape_in, gy.dtype)
            a3 = _run_of_axes(out, self.axes)
            if a3 is not None:
                rows, value = tile_middle(a3, g.astype(gy.dtype, copy=False).reshape(a3.shape[0], 1, a3.shape[2]))
                rows[...] = value
                return out
        return self.xp.broadcast_to(g, self.shape_in).astype(gy.dtype, copy=False)


# Mean's gradient is an array of its own (not a broadcast view) from this many values
MEAN_FILL_MIN = 1 << 16


def tile_middle(a3, v3):
    """(a3, v3) for a3 (B, R, A) C-contiguous and v3 (B, 1, A) broadcast against it, as (B, R / k, k A) and v3
    tiled k times to (B, 1, k A) (a copy): NumPy's inner loop then runs over k A entries instead of A (a broadcast
    along a middle axis with a short last one, a conv layer's 32 channels, runs ~2x a plain pass). The same element
    pairs; (a3, v3) as they are where no k > 1 divides R."""
    b, r, a = a3.shape
    # (this module's max and min are ops: no builtin max here)
    k = next((k for k in range(4096 // a, 1, -1) if r % k == 0), 1) if 0 < a < 1024 else 1
    if k == 1:
        return a3, v3
    tiled = np.empty((b, 1, k, a), v3.dtype)
    tiled[...] = v3.reshape(b, 1, 1, a)
    return a3.reshape(b, r // k, k * a), tiled.reshape(b, 1, k * a)


def _run_of_axes(x, axes):
    """x as (before, run, after) when ``axes`` are consecutive axes of a C-contiguous array (a view); else None."""
    if not axes or list(axes) != list(range(axes[0], axes[0] + len(axes))) or not x.flags.c_contiguous:
        return None
    sh = x.shape
    before, run, after = sh[:axes[0]], sh[axes[0]:axes[-1] + 1], sh[axes[-1] + 1:]
    return x.reshape(_prod(before), _prod(run), _prod(after))


def run_extreme(ufunc, a3):
    """ufunc (np.maximum or np.minimum) reduced over the middle axis of (before, run, after), as (before, 1,
    after), by halving the run with elementwise passes: NumPy's reduction over middle axes crawls (a global max
    pooling of (32, 56, 56, 64) float32: 10.7 ms, halving 2.1 ms; the same values, NaN propagating)."""
    while a3.shape[1] > 1:
        run = a3.shape[1]
        half = run // 2
        m = ufunc(a3[:, :half], a3[:, half:2 * half])
        if run % 2:
            ufunc(m[:, :1], a3[:, 2 * half:], out=m[:, :1])
        a3 = m
    return a3


class MaxMin(Op):
    """max or min over axes; ties share the gradient equally (like reduce_max)."""

    def forward(self, x):
        xp = self.xp
        self.axes = _norm_axis(self.axis, x.ndim)
        run = _run_of_axes(x, self.axes) if xp is np and x.size and x.dtype.kind == "f" else None
        if run is not None and run.shape[2] > 1:  # a middle run of axes (global pooling over steps or pixels)
            y = run_extreme(np.maximum if self.is_max else np.minimum, run)
            y = y.reshape([1 if i in self.axes else n for i, n in enumerate(x.shape)])
        else:
            y = _reduce_axes(xp, x, self.axes, True, "max" if self.is_max else "min")
        self.saved = (x, y)
        return y if self.keepdims else y.reshape([n for i, n in enumerate(y.shape) if i not in self.axes])

    def backward(self, gy):
        x, y = self.saved
        x3 = _run_of_axes(x, self.axes) if self.xp is np else None
        if x3 is not None and gy.dtype == x.dtype:
            # two compiled passes, the bits of the NumPy code below: a global max pooling's (32, 32, 32, 32) forward
            # + backward 1.44 -> 0.84 ms (PyTorch 0.8; the mask, its cast and the spread were the time)
            b, r, a = x3.shape
            gx = _kernels.extreme_grad(x3, y.reshape(b, a), np.ascontiguousarray(gy).reshape(b, a))
            if gx is not None:
                return gx.reshape(x.shape)
        if x3 is not None and gy.dtype in _BLAS_FLOATS:
            # (before, run, after): the mask in gy's dtype, its counts a product with ones (_sum_run's way: NumPy
            # sums a middle run of booleans a strided row at a time), each window's share gy / count in gy's dtype
            # and then spread in the mask's buffer; the compare and the spread with the maxima and shares tiled
            # along the kept axes (tile_middle). A global max pooling's (32, 32, 32, 32) backward: the counts'
            # strided sum, a float64 product over the input and its cast back were 2.9 of its 3.7 ms.
            b, r, a = x3.shape
            m3 = np.equal(*tile_middle(x3, y.reshape(b, 1, a))).reshape(x3.shape).astype(gy.dtype)
            count = np.matmul(np.ones(r, gy.dtype), m3)
            g3 = _expand(gy, x.shape, self.axes, self.keepdims).reshape(b, 1, a)
            rows, share = tile_middle(m3, g3 / count[:, None, :])
            rows *= share
            return m3.reshape(x.shape)
        mask = (x == y)
        run = _run_of_axes(mask, self.axes) if self.xp is np else None
        if run is not None:
            count = run.sum(axis=1, dtype=np.int32).reshape(y.shape)
        elif self.xp is np and gy.dtype.kind == "f":   # (in the gradient's dtype: the short-run reroute applies)
            count = _reduce_axes(np, mask.astype(gy.dtype), self.axes, True)
        else:
            count = mask.sum(axis=self.axes, keepdims=True)
        g = _expand(gy, x.shape, self.axes, self.keepdims)
        return (mask * (g / count)).astype(gy.dtype, copy=False)


class Var(Op):
    """Population variance (ddof=0). Backward: 2 (x - mean) / n."""

    def forward(self, x):
        self.axes = _norm_axis(self.axis, x.ndim)
        self.count = _prod([x.shape[a] for a in self.axes]) if self.axes else 1
        mu = _mean_axes(self.xp, x, self.axes, True)
        d = x - mu
        self.saved = (d,)
        return _mean_axes(self.xp, d * d, self.axes, self.keepdims)

    def backward(self, gy):
        (d,) = self.saved
        g = _expand(gy, d.shape, self.axes, self.keepdims)
        return (g * d * (2.0 / self.count)).astype(gy.dtype, copy=False)


class Std(Op):
    """Population standard deviation (ddof=0), from the deviations scaled by their largest magnitude m:
    std = m sqrt(mean((d / m)^2)). sqrt(var) overflowed where the variance passes float32's range ((1e20, 1e20, 0,
    0): inf, std 5e19) and underflowed to 0 where it falls under it; its slope (x - mean) / (n std) was then 0 / 0,
    NaN, also for constant entries, where it is 0 here (torch's value). Backward: r / (n sqrt(mean(r^2))), r = d / m."""

    def forward(self, x):
        xp = self.xp
        self.axes = _norm_axis(self.axis, x.ndim)
        self.count = _prod([x.shape[a] for a in self.axes]) if self.axes else 1
        d = x - _mean_axes(xp, x, self.axes, True)
        m = xp.abs(d).max(axis=self.axes, keepdims=True) if d.size else xp.ones((1,) * d.ndim, d.dtype)
        m = xp.where(m > 0, m, xp.ones((), m.dtype))                  # (constant entries: d = 0, any scale)
        r = d / m
        root = xp.sqrt(_mean_axes(xp, r * r, self.axes, True))
        self.saved = (r, root)
        out = (m * root).astype(x.dtype, copy=False)
        return out if self.keepdims else out.reshape([n for a, n in enumerate(out.shape) if a not in self.axes])

    def backward(self, gy):
        r, root = self.saved
        g = _expand(gy, r.shape, self.axes, self.keepdims)
        with np.errstate(invalid="ignore", divide="ignore"):
            slope = self.xp.where(root > 0, r / (self.count * root), 0)
        return (g * slope).astype(gy.dtype, copy=False)


class Cast(Op):
    keeps_variables = True  # (the autocast of variables is itself a Cast)

    def forward(self, x):
        self.dtype_in = x.dtype
        return x.astype(self.dtype)

    def backward(self, gy):
        return gy.astype(self.dtype_in)


def add(a, b):
    """a + b with broadcasting."""
    return Add.apply(a, b)


def subtract(a, b):
    """a - b with broadcasting."""
    return Subtract.apply(a, b)


def multiply(a, b):
    """a * b with broadcasting."""
    return Multiply.apply(a, b)


def divide(a, b):
    """a / b with broadcasting."""
    return Divide.apply(a, b)


def negative(x):
    return Negative.apply(x)


def power(a, b):
    """a ** b; b a Python number or a tensor."""
    if isinstance(b, (int, float)):
        return PowerScalar.apply(a, p=b)
    return Power.apply(a, b)


def matmul(a, b):
    """Matrix product with NumPy's batching rules."""
    return MatMul.apply(a, b)


def linear(x, kernel, bias=None, activation=None):
    """x @ kernel + bias, contracting the last axis of x (the Dense layer's op). activation: None or
    'relu' (lamina's own): ReLU applied in place inside the op, instead of as one more op with its own
    output array (the Dense layer passes its ReLU here)."""
    return Linear.apply(x, kernel, bias, activation=fused_activation(activation, "linear"))


def fused_activation(activation, op):
    """The activation an op runs inside itself (linear, conv1d, conv2d): None or 'relu', checked."""
    if activation not in (None, "relu"):
        raise ValueError(f"{op}: activation must be None or 'relu' (the one fused into the op). "
                         f"Received: activation={activation!r}")
    return activation


def exp(x):
    return Exp.apply(x)


def log(x):
    return Log.apply(x)


def sqrt(x):
    return Sqrt.apply(x)


def square(x):
    return Square.apply(x)


def abs(x):  # noqa: A001 - NumPy's name
    return Abs.apply(x)


def sign(x):
    """Sign, elementwise; no gradient."""
    x = as_tensor(x)
    return Tensor(get_array_module(x.data).sign(x.data))


def clip(x, lo, hi):
    """Clip values to [lo, hi] (either may be None)."""
    return Clip.apply(x, lo=lo, hi=hi)


def maximum(a, b):
    return Maximum.apply(a, b)


def minimum(a, b):
    return Minimum.apply(a, b)


def _is_weak(v):
    """A Python (or NumPy) scalar: a weak type that takes the other operand's dtype, as in Keras."""
    return isinstance(v, (bool, int, float, np.generic)) and not isinstance(v, np.ndarray)


def _scalar_kind(v):
    if isinstance(v, (bool, np.bool_)):
        return "b"
    return "i" if isinstance(v, (int, np.integer)) else "f"


def _where_dtype(a, b):
    """Keras 3's result dtype of where(c, a, b); None: leave it to NumPy's promotion.

    A scalar keeps a tensor's dtype when it fits its kind (float16 stays float16 with 0.0; int32 stays
    int32 with 0) and moves an integer or bool tensor to floatx when it is a float; two scalars give
    floatx, int32 or bool; an integer tensor with a float tensor gives the float tensor's dtype."""
    from ..backend import floatx
    weak_a, weak_b = _is_weak(a), _is_weak(b)
    if weak_a and weak_b:
        kinds = {_scalar_kind(a), _scalar_kind(b)}
        return np.dtype(floatx() if "f" in kinds else "int32" if "i" in kinds else bool)
    if weak_a or weak_b:
        scalar, t = (a, b) if weak_a else (b, a)
        dt = np.dtype(t.dtype) if hasattr(t, "dtype") else np.asarray(t).dtype
        k = _scalar_kind(scalar)
        if dt.kind == "f":
            return dt
        if k == "f":
            return np.dtype(floatx())
        if dt.kind == "b" and k == "i":
            return np.dtype("int32")
        return dt
    da, db = (np.dtype(x.dtype) if hasattr(x, "dtype") else np.asarray(x).dtype for x in (a, b))
    if (da.kind == "f") != (db.kind == "f"):
        return da if da.kind == "f" else db
    return None


def where(cond, a, b):
    """Elementwise cond ? a : b. cond carries no gradient.

    Result dtype as Keras's ops.where: a Python scalar is weakly typed, so where(c, x_float16, 0.0) is
    float16 and where(c, x_int32, 0) int32 (see _where_dtype)."""
    cond = cond.data if isinstance(cond, Tensor) else cond
    dt = _where_dtype(a, b)
    if dt is not None:
        a, b = (np.asarray(v, dt) if _is_weak(v) else
                cast(v, dt) if isinstance(v, Tensor) and v.dtype != dt else
                v if isinstance(v, Tensor) or getattr(v, "dtype", None) == dt else Tensor(v, dtype=dt)
                for v in (a, b))
    return Where.apply(Tensor(cond), a, b)


def sum(x, axis=None, keepdims=False):  # noqa: A001
    return Sum.apply(x, axis=axis, keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    return Mean.apply(x, axis=axis, keepdims=keepdims)


def max(x, axis=None, keepdims=False):  # noqa: A001
    return MaxMin.apply(x, axis=axis, keepdims=keepdims, is_max=True)


def min(x, axis=None, keepdims=False):  # noqa: A001
    return MaxMin.apply(x, axis=axis, keepdims=keepdims, is_max=False)


def var(x, axis=None, keepdims=False):
    """Population variance (ddof=0), as Keras's ops.var."""
    return Var.apply(x, axis=axis, keepdims=keepdims)


def std(x, axis=None, keepdims=False):
    """Population standard deviation (ddof=0), as Keras's ops.std (see Std)."""
    return Std.apply(x, axis=axis, keepdims=keepdims)


def cast(x, dtype):
    """Change dtype. Float to float is differentiable (the gradient is cast back); a cast to or from
    an integer or bool dtype gives a tensor without gradient, as in PyTorch and Keras."""
    x = x if isinstance(x, Tensor) else as_tensor(x)  # (a variable as it is, also in an autocast scope)
    dtype = np.dtype(dtype)
    if x.dtype == dtype:
        return x
    if dtype.kind != "f" or x.dtype.kind != "f":
        return Tensor(x.data.astype(dtype))
    return Cast.apply(x, dtype=dtype)


# Tensor's operator methods (arithmetic, reductions, cast) call this module's ops through the slot tensor._m:
# tensor.py is the floor below and cannot import this module, so this module puts itself there.
_tensor_module._m = _sys.modules[__name__]
