"""Kernels behind ``lamina.ops.core`` (keras.ops outside numpy/nn/linalg/image): special functions,
segment and scatter reductions, top-k, log-sum-exp, log-determinant, pairwise distances, the FFT
family, overlap-add and the user-defined gradient of ``custom_gradient``.

Forward and backward side by side, vectorised and array-module agnostic (``self.xp``).
The FFT kernels take and give (real, imaginary) pairs of float arrays, as Keras's FFT ops do; their
backward is the adjoint of the linear map (for ``y = F x``: ``dL/dx = F^H dL/dy`` with
``dL/dz = dL/dRe z + i dL/dIm z``).
"""
import math

import numpy as np

from ..tensor import Op
from .indexing import add_at_flat, flat_index
from .math import _norm_axis, unbroadcast

__all__ = []  # kernels only: the public functions are in core.py

_SQRT_PI = math.sqrt(math.pi)
_TWO_OVER_SQRT_PI = 2.0 / _SQRT_PI


# ----------------------------------------------------------------------------- special functions
def _work_dtype(x):
    """float16/bfloat16 are computed in float32, others in their own precision."""
    return np.float32 if x.dtype.itemsize < 4 else x.dtype


def _erf_series(xp, x):
    """erf(x) = 2/sqrt(pi) exp(-x^2) sum_n 2^n x^(2n+1) / (1*3*...*(2n+1)): positive terms, no
    cancellation; 60 terms reach double precision for |x| <= 2.5."""
    x2 = x * x
    term = x.copy()
    total = x.copy()
    for n in range(1, 60):
        term = term * (2.0 * x2 / (2 * n + 1))
        total = total + term
    return _TWO_OVER_SQRT_PI * xp.exp(-x2) * total


def _erfc_cf(xp, x):
    """erfc(x) for x >= 2.5 by its continued fraction exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + ...))),
    evaluated from the tail (80 levels: double precision there)."""
    t = xp.zeros_like(x)
    for k in range(80, 0, -1):
        t = (k / 2.0) / (x + t)
    return xp.exp(-x * x) / _SQRT_PI / (x + t)


def erf_array(xp, x):
    """erf on an array, accurate to double precision (series below 2.5, continued fraction above)."""
    w = x.astype(_work_dtype(x))
    a = xp.abs(w)
    small = a < 2.5
    s = _erf_series(xp, xp.where(small, a, 0.0).astype(w.dtype))
    c = 1.0 - _erfc_cf(xp, xp.where(small, 2.5, a).astype(w.dtype))
    out = xp.sign(w) * xp.where(small, s, c)
    out = xp.where(xp.isnan(w), w, out)
    return out.astype(x.dtype)


def erfc_array(xp, x):
    """erfc on an array, keeping relative precision in the far right tail."""
    w = x.astype(_work_dtype(x))
    a = xp.abs(w)
    small = a < 2.5
    s = _erf_series(xp, xp.where(small, a, 0.0).astype(w.dtype))
    tail = _erfc_cf(xp, xp.where(small, 2.5, a).astype(w.dtype))
    pos = xp.where(small, 1.0 - s, tail)          # erfc(|x|)
    out = xp.where(w >= 0, pos, 2.0 - pos)
    out = xp.where(xp.isnan(w), w, out)
    return out.astype(x.dtype)


def erfinv_array(xp, y):
    """erfinv by Winitzki's closed-form guess refined with Newton steps on erf (or on erfc near +-1)."""
    w = y.astype(_work_dtype(y))
    a = xp.abs(w)
    inside = a < 1
    a_in = xp.where(inside, a, 0.5).astype(w.dtype)
    k = 0.147
    ln = xp.log1p(-a_in * a_in)
    first = 2.0 / (math.pi * k) + ln / 2.0
    x = xp.sqrt(xp.sqrt(first * first - ln / k) - first)
    tail = a_in > 0.5
    one_minus = (1.0 - a_in)  # exact for a_in in [0.5, 1]
    for _ in range(6):
        f = xp.where(tail, one_minus - erfc_array(xp, x), erf_array(xp, x) - a_in)
        x = x - f / (_TWO_OVER_SQRT_PI * xp.exp(-x * x))
    out = xp.where(inside, x, xp.where(a == 1, xp.inf, xp.nan)) * xp.sign(w)
    out = xp.where(w == 0, 0.0, out)
    return out.astype(y.dtype)


class Erf(Op):
    """erf(x); d/dx = 2/sqrt(pi) exp(-x^2)."""

    def forward(self, x):
        self.saved = (x,)
        return erf_array(self.xp, x)

    def backward(self, gy):
        (x,) = self.saved
        return gy * (_TWO_OVER_SQRT_PI * self.xp.exp(-x * x))


class Erfc(Op):
    """erfc(x) = 1 - erf(x); d/dx = -2/sqrt(pi) exp(-x^2)."""

    def forward(self, x):
        self.saved = (x,)
        return erfc_array(self.xp, x)

    def backward(self, gy):
        (x,) = self.saved
        return gy * (-_TWO_OVER_SQRT_PI * self.xp.exp(-x * x))


class Erfinv(Op):
    """erfinv(y); d/dy = sqrt(pi)/2 exp(erfinv(y)^2)."""

    def forward(self, x):
        y = erfinv_array(self.xp, x)
        self.saved = (y,)
        return y

    def backward(self, gy):
        (y,) = self.saved
        return gy * ((_SQRT_PI / 2.0) * self.xp.exp(y * y))


class Rsqrt(Op):
    """1/sqrt(x); d/dx = -1/2 x^(-3/2) = -y^3/2."""

    def forward(self, x):
        y = 1.0 / self.xp.sqrt(x)
        self.saved = (y,)
        return y.astype(x.dtype, copy=False)

    def backward(self, gy):
        (y,) = self.saved
        return gy * (-0.5 * y * y * y)


# ----------------------------------------------------------------------------- reductions
def product_at(xp, shape, idx, vals, dtype):
    """P with P[idx] = product of the vals that land there (1 elsewhere), without ``multiply.at``,
    which CuPy lacks: magnitudes multiply as a sum of logs, signs by counting negatives, zeros by
    counting zeros."""
    add = xp.add
    logs = xp.zeros(shape, dtype)
    add.at(logs, idx, xp.log(xp.where(vals == 0, 1, xp.abs(vals))).astype(dtype))
    negs = xp.zeros(shape, np.int64)
    add.at(negs, idx, (vals < 0).astype(np.int64))
    zeros = xp.zeros(shape, np.int64)
    add.at(zeros, idx, (vals == 0).astype(np.int64))
    sign = 1 - 2 * (negs % 2)
    return xp.where(zeros > 0, 0, sign * xp.exp(logs)).astype(dtype)


def multiply_at(xp, out, idx, vals):
    """out[idx] *= vals with repeated indices all applied (NumPy's multiply.at; a log-sum on CuPy)."""
    if xp is np:
        np.multiply.at(out, idx, vals)
    else:
        out *= product_at(xp, out.shape, idx, vals, out.dtype)


def _norm_axes(axis, ndim):
    return tuple(sorted(_norm_axis(axis, ndim)))


class LogSumExp(Op):
    """log(sum(exp(x))) over axes, shifted by the max; backward: softmax(x) * g."""

    def forward(self, x):
        xp = self.xp
        self.axes = _norm_axes(self.axis, x.ndim)
        m = x.max(axis=self.axes, keepdims=True) if x.size else xp.zeros((1,) * x.ndim, x.dtype)
        m = xp.where(xp.isfinite(m), m, 0).astype(x.dtype)
        s = xp.exp(x - m).sum(axis=self.axes, keepdims=True)
        with np.errstate(divide="ignore"):
            y = xp.log(s) + m
        self.saved = (x, y)
        return y if self.keepdims else y.reshape([n for i, n in enumerate(y.shape) if i not in self.axes])

    def backward(self, gy):
        x, y = self.saved
        if not self.keepdims:
            gy = gy.reshape(y.shape)
        return (gy * self.xp.exp(x - y)).astype(x.dtype, copy=False)


class SegmentReduce(Op):
    """Reduce rows of data that share a segment id (sum, max, min, prod); ids < 0 or >= num_segments
    are dropped. Empty segments hold 0 (sum), -inf (max), +inf (min), 1 (prod), as Keras's torch
    backend. Backward: sum gathers g; max/min share g equally among the rows equal to the result;
    prod gives g * (product of the other rows), computed without dividing by zero."""

    def forward(self, data, ids):
        xp = self.xp
        n = self.num_segments
        ids = ids.reshape(-1).astype(np.int64)
        valid = (ids >= 0) & (ids < n)
        ids_c = xp.where(valid, ids, n)  # an extra row that is dropped at the end
        init = {"sum": 0, "max": -np.inf, "min": np.inf, "prod": 1}[self.kind]
        if data.dtype.kind != "f" and self.kind in ("max", "min"):
            info = np.iinfo(data.dtype) if data.dtype.kind in "iu" else None
            init = (info.min if self.kind == "max" else info.max) if info else (self.kind == "min")
        if self.kind == "sum" and xp is np and data.dtype.kind == "f" and data.ndim >= 1:
            # ops.indexing.add_at_flat: np.add.at walked the rows one by one ((2048, 128) into 512 segments 3.6 ms)
            out = add_at_flat(ids_c, data.reshape(data.shape[0], -1), n + 1).reshape((n + 1,) + tuple(data.shape[1:]))
            self.saved = (data, ids_c, out)
            return out[:n]
        out = xp.full((n + 1,) + tuple(data.shape[1:]), init, dtype=data.dtype)
        if self.kind == "prod":
            multiply_at(xp, out, ids_c, data)
        else:
            {"sum": xp.add, "max": xp.maximum, "min": xp.minimum}[self.kind].at(out, ids_c, data)
        self.saved = (data, ids_c, out)
        return out[:n]

    def backward(self, gy):
        xp = self.xp
        data, ids, out = self.saved
        g = xp.concatenate([gy, xp.zeros((1,) + gy.shape[1:], gy.dtype)])  # dropped rows get 0
        if self.kind == "sum":
            return g[ids], None
        if self.kind in ("max", "min"):
            hit = (data == out[ids])
            count = xp.zeros(out.shape, gy.dtype)
            xp.add.at(count, ids, hit.astype(gy.dtype))
            return xp.where(hit, g[ids] / xp.maximum(count[ids], 1), 0).astype(gy.dtype), None
        zero = data == 0
        nz = xp.where(zero, 1, data)
        prod_nz = xp.ones(out.shape, data.dtype)
        multiply_at(xp, prod_nz, ids, nz)
        zeros = xp.zeros(out.shape, np.int64)
        xp.add.at(zeros, ids, zero.astype(np.int64))
        zc = zeros[ids]
        others = xp.where(zero, xp.where(zc == 1, prod_nz[ids], 0), xp.where(zc == 0, prod_nz[ids] / nz, 0))
        return (g[ids] * others).astype(gy.dtype), None


# ----------------------------------------------------------------------------- scatter and slices
def _index_tuple(xp, indices):
    """(N, k) integer indices -> a tuple of k index arrays."""
    idx = xp.asarray(indices).astype(np.int64)
    return tuple(idx[:, j] for j in range(idx.shape[1]))


class Scatter(Op):
    """zeros(shape) with values added at indices (duplicates add). Backward: gather g at indices."""

    def forward(self, values):
        xp = self.xp
        k = self.indices.shape[-1]
        idx = _index_tuple(xp, self.indices.reshape(-1, k))
        self.idx, self.vshape = idx, values.shape
        rows = values.reshape((-1,) + tuple(self.shape[k:]))
        dims = tuple(self.shape[:k])
        if xp is np and values.dtype.kind == "f" and k and all(((a >= -n) & (a < n)).all() for a, n in zip(idx, dims)):
            # one flat index into the first k axes' rows (ops.indexing.add_at_flat). Ids out of range go to NumPy's
            # own call below, for its IndexError.
            flat = flat_index(idx, dims)
            return add_at_flat(flat, rows.reshape(flat.shape[0], -1), int(np.prod(dims))).reshape(self.shape)
        out = xp.zeros(self.shape, values.dtype)
        xp.add.at(out, idx, rows)
        return out

    def backward(self, gy):
        return gy[self.idx].reshape(self.vshape)


class ScatterUpdate(Op):
    """inputs with rows at indices replaced by updates (reduction None: the last duplicate wins), or
    combined with them (add, max, min, mul)."""

    def forward(self, x, u):
        xp = self.xp
        idx = _index_tuple(xp, self.indices)
        rows = len(idx[0])
        u = u.reshape((rows,) + tuple(x.shape[len(idx):])) if u.ndim == 0 or u.shape[0] != rows else u
        out = x.copy()
        red = self.reduction
        if red is None:
            out[idx] = u
        elif red == "mul":
            multiply_at(xp, out, idx, u)
        elif red in ("add", "max", "min"):
            {"add": xp.add, "max": xp.maximum, "min": xp.minimum}[red].at(out, idx, u)
        else:
            raise ValueError(f"Unsupported reduction: {red!r}. Expected None, 'add', 'max', 'min' or 'mul'.")
        self.idx, self.ushape = idx, u.shape
        self.saved = (x, u, out) if red in ("max", "min", "mul") else None
        return out

    def backward(self, gy):
        xp, idx, red = self.xp, self.idx, self.reduction
        rows = len(idx[0])
        if red is None:
            gx = gy.copy()
            gx[idx] = 0
            # only the update that was written last at each place reaches the output
            owner = xp.full(gy.shape[:len(idx)], -1, np.int64)
            owner[idx] = xp.arange(rows)
            won = (owner[idx] == xp.arange(rows)).reshape((rows,) + (1,) * (gy.ndim - len(idx)))
            return gx, xp.where(won, gy[idx], 0).astype(gy.dtype)
        if red == "add":
            return gy, gy[idx]
        x, u, out = self.saved
        if red == "mul":
            # out = x * prod(u at the same place): d/dx = out / x, d/du_i = out / u_i (nonzero factors)
            factor = xp.ones_like(x)
            multiply_at(xp, factor, idx, u)
            return gy * factor, gy[idx] * out[idx] / u
        # max/min: the gradient goes to every term equal to the result, shared equally
        hit_x = (x == out)
        hit_u = (u == out[idx])
        count = hit_x.astype(gy.dtype)
        xp.add.at(count, idx, hit_u.astype(gy.dtype))
        share = gy / xp.maximum(count, 1)
        return xp.where(hit_x, share, 0), xp.where(hit_u, share[idx], 0)


class SliceUpdate(Op):
    """inputs with the block at start_indices replaced by updates. Backward: g outside the block to
    inputs, g inside it to updates."""

    def forward(self, x, u):
        self.block = tuple(slice(s, s + n) for s, n in zip(self.starts, u.shape))
        out = x.copy()
        out[self.block] = u
        return out

    def backward(self, gy):
        gx = None
        if self.needs_grad[0]:
            gx = gy.copy()
            gx[self.block] = 0
        return gx, gy[self.block]


class TopK(Op):
    """The k largest entries along the last axis, in descending order, and their indices. Backward:
    the values' gradient goes back to the positions they came from."""

    def forward(self, x):
        xp = self.xp
        n = x.shape[-1]
        k = self.k
        if k < n:
            part = xp.argpartition(-x, k - 1, axis=-1)[..., :k]
            vals = xp.take_along_axis(x, part, axis=-1)
            order = xp.argsort(-vals, axis=-1, kind="stable")
            idx = xp.take_along_axis(part, order, axis=-1)
        else:
            idx = xp.argsort(-x, axis=-1, kind="stable")[..., :k]
        self.idx, self.shape_in = idx, x.shape
        self.sink["indices"] = idx.astype(np.int64)  # an integer output: handed back beside the graph
        return xp.take_along_axis(x, idx, axis=-1)

    def backward(self, gy):
        xp = self.xp
        n = self.shape_in[-1]
        rows = int(np.prod(self.shape_in[:-1], dtype=np.int64))
        flat = (self.idx.reshape(rows, -1) + (xp.arange(rows) * n)[:, None]).reshape(-1)
        g = xp.zeros(rows * n, gy.dtype)
        g[flat] = gy.reshape(-1)
        return g.reshape(self.shape_in)


class OverlapAdd(Op):
    """Frames (..., F, N) placed every ``stride`` samples and summed: (..., stride*(F-1) + N).
    Backward: each frame reads the gradient over its span."""

    def forward(self, frames):
        xp = self.xp
        *batch, f, n = frames.shape
        self.shape_in = frames.shape
        self.pos = (xp.arange(f)[:, None] * self.stride + xp.arange(n)[None, :]).reshape(-1)
        length = self.stride * (f - 1) + n
        flat = frames.reshape(-1, f * n)
        out = xp.zeros((flat.shape[0], length), frames.dtype)
        xp.add.at(out, (slice(None), self.pos), flat)
        return out.reshape(tuple(batch) + (length,))

    def backward(self, gy):
        g = gy.reshape(-1, gy.shape[-1])[:, self.pos]
        return g.reshape(self.shape_in)


# ----------------------------------------------------------------------------- linear algebra
class LogDet(Op):
    """log(det(x)) for a batch of square matrices (nan where det < 0, -inf where 0, like torch.logdet).
    Backward: g * inv(x)^T."""

    def forward(self, x):
        xp = self.xp
        sign, logabs = xp.linalg.slogdet(x)
        self.saved = (x,)
        out = xp.where(sign > 0, logabs, xp.where(sign == 0, -xp.inf, xp.nan))
        return out.astype(x.dtype, copy=False)

    def backward(self, gy):
        (x,) = self.saved
        inv = self.xp.linalg.inv(x)
        return gy[..., None, None] * self.xp.swapaxes(inv, -1, -2)


class CDist(Op):
    """Euclidean distances between the rows of x (..., n, d) and of y (..., m, d): (..., n, m), batch
    axes broadcast. Backward: (x_i - y_j)/d_ij (0 where d_ij = 0, as torch's subgradient)."""

    def forward(self, x, y):
        diff = x[..., :, None, :] - y[..., None, :, :]
        d = self.xp.sqrt((diff * diff).sum(axis=-1))
        self.saved = (diff, d)
        self.shapes = (x.shape, y.shape)
        return d

    def backward(self, gy):
        xp = self.xp
        diff, d = self.saved
        w = xp.where(d > 0, gy / xp.where(d > 0, d, 1), 0)[..., None] * diff   # (..., n, m, d)
        sx, sy = self.shapes
        gx = unbroadcast(w.sum(axis=-2), sx) if self.needs_grad[0] else None
        gyy = unbroadcast(-w.sum(axis=-3), sy) if self.needs_grad[1] else None
        return gx, gyy


# ----------------------------------------------------------------------------- FFT family
def _pair(z, dtype):
    return z.real.astype(dtype), z.imag.astype(dtype)


class ComplexFFT(Op):
    """fft (last axis), fft2 / ifft2 (last two axes) of a (real, imag) pair, as a (real, imag) pair."""

    def forward(self, re, im):
        xp = self.xp
        z = re + 1j * im
        axes = (-1,) if self.kind == "fft" else (-2, -1)
        self.n = int(np.prod([re.shape[a] for a in axes]))
        out = {"fft": lambda: xp.fft.fft(z, axis=-1), "fft2": lambda: xp.fft.fft2(z),
               "ifft2": lambda: xp.fft.ifft2(z)}[self.kind]()
        self.dtype = re.dtype
        return _pair(out, re.dtype)

    def backward(self, gr, gi):
        xp = self.xp
        g = gr + 1j * gi
        if self.kind == "fft":
            back = xp.fft.ifft(g, axis=-1) * self.n   # F^H g = n ifft(g)
        elif self.kind == "fft2":
            back = xp.fft.ifft2(g) * self.n
        else:
            back = xp.fft.fft2(g) / self.n          # ifft2 = conj(F)/n, whose adjoint is F/n
        return _pair(back, self.dtype)


class RFFT(Op):
    """rfft of a real signal over the last axis (zero-padded or cut to fft_length) as (real, imag).
    Backward: Re(F^H P^T g), P the projection on the first n//2+1 bins, then cut/padded back."""

    def forward(self, x):
        xp = self.xp
        self.n = int(self.fft_length) if self.fft_length is not None else x.shape[-1]
        self.len_in, self.dtype = x.shape[-1], x.dtype
        return _pair(xp.fft.rfft(x, n=self.n, axis=-1), x.dtype)

    def backward(self, gr, gi):
        xp = self.xp
        g = gr + 1j * gi
        full = xp.zeros(g.shape[:-1] + (self.n,), g.dtype)
        full[..., :g.shape[-1]] = g
        gx = (xp.fft.ifft(full, axis=-1) * self.n).real
        if self.len_in <= self.n:
            gx = gx[..., :self.len_in]
        else:
            gx = xp.concatenate([gx, xp.zeros(gx.shape[:-1] + (self.len_in - self.n,), gx.dtype)], axis=-1)
        return gx.astype(self.dtype)


class IRFFT(Op):
    """irfft of a half spectrum (real, imag) over the last axis: a real signal of fft_length
    (default 2*(m-1)). Backward: bin k gets c_k/n rfft(g)_k, c_k = 2 except 1 at DC and Nyquist
    (whose imaginary parts irfft ignores)."""

    def forward(self, re, im):
        xp = self.xp
        m = re.shape[-1]
        self.n = int(self.fft_length) if self.fft_length is not None else 2 * (m - 1)
        self.m, self.dtype = m, re.dtype
        return xp.fft.irfft(re + 1j * im, n=self.n, axis=-1).astype(re.dtype)

    def backward(self, gy):
        xp = self.xp
        n, m = self.n, self.m
        spec = xp.fft.rfft(gy, n=n, axis=-1)           # n//2 + 1 bins
        k = xp.arange(spec.shape[-1])
        c = xp.where((k == 0) | (2 * k == n), 1.0, 2.0) / n
        spec = spec * c
        used = min(m, spec.shape[-1])
        g = xp.zeros(gy.shape[:-1] + (m,), spec.dtype)
        g[..., :used] = spec[..., :used]
        return _pair(g, self.dtype)


# ----------------------------------------------------------------------------- custom gradient
class CustomGradient(Op):
    """Carries the output of a ``custom_gradient`` function; backward calls the user's gradient
    function (see lamina.ops.core.custom_gradient)."""

    def forward(self, *arrays):
        return self.output

    def backward(self, gy):
        return tuple(self.grad_call(gy))
