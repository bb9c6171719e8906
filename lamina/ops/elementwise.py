"""Differentiable kernels behind keras.ops.numpy's math: trigonometric and hyperbolic functions and
their inverses, log/exp variants, two-operand functions (arctan2, hypot, logaddexp, fmod, ...),
products and cumulative sums/products, quantiles and slogdet. Forward and backward side by side;
each works on the op's array module (``self.xp``) so the same code runs on NumPy and CuPy.

The public functions with Keras's names and dtype rules are in ``_np_math.py``; these kernels take
inputs that already have one float dtype.
"""
import math as _pymath

import numpy as np

from ..tensor import Op
from .math import unbroadcast

__all__ = []


# ----------------------------------------------------------------------------- unary, elementwise

class _Unary(Op):
    """y = f(x); backward multiplies by f'(x), written from x and y."""

    def forward(self, x):
        y = self.f(self.xp, x)
        self.saved = (x, y)
        return y

    def backward(self, gy):
        x, y = self.saved
        return gy * self.df(self.xp, x, y)


class Sin(_Unary):
    """sin x; d/dx = cos x."""
    def f(self, xp, x): return xp.sin(x)
    def df(self, xp, x, y): return xp.cos(x)


class Cos(_Unary):
    """cos x; d/dx = -sin x."""
    def f(self, xp, x): return xp.cos(x)
    def df(self, xp, x, y): return -xp.sin(x)


class Tan(_Unary):
    """tan x; d/dx = 1 + tan^2 x."""
    def f(self, xp, x): return xp.tan(x)
    def df(self, xp, x, y): return 1 + y * y


class Arcsin(_Unary):
    """arcsin x; d/dx = 1 / sqrt(1 - x^2)."""
    def f(self, xp, x): return xp.arcsin(x)
    def df(self, xp, x, y): return 1 / xp.sqrt(1 - x * x)


class Arccos(_Unary):
    """arccos x; d/dx = -1 / sqrt(1 - x^2)."""
    def f(self, xp, x): return xp.arccos(x)
    def df(self, xp, x, y): return -1 / xp.sqrt(1 - x * x)


class Arctan(_Unary):
    """arctan x; d/dx = 1 / (1 + x^2)."""
    def f(self, xp, x): return xp.arctan(x)
    def df(self, xp, x, y): return 1 / (1 + x * x)


class Sinh(_Unary):
    """sinh x; d/dx = cosh x."""
    def f(self, xp, x): return xp.sinh(x)
    def df(self, xp, x, y): return xp.cosh(x)


class Cosh(_Unary):
    """cosh x; d/dx = sinh x."""
    def f(self, xp, x): return xp.cosh(x)
    def df(self, xp, x, y): return xp.sinh(x)


class Arcsinh(_Unary):
    """arcsinh x; d/dx = 1 / sqrt(x^2 + 1)."""
    def f(self, xp, x): return xp.arcsinh(x)
    def df(self, xp, x, y): return 1 / xp.sqrt(x * x + 1)


class Arccosh(_Unary):
    """arccosh x; d/dx = 1 / sqrt(x^2 - 1)."""
    def f(self, xp, x): return xp.arccosh(x)
    def df(self, xp, x, y): return 1 / xp.sqrt(x * x - 1)


class Arctanh(_Unary):
    """arctanh x; d/dx = 1 / (1 - x^2)."""
    def f(self, xp, x): return xp.arctanh(x)
    def df(self, xp, x, y): return 1 / (1 - x * x)


class Log1p(_Unary):
    """log(1 + x); d/dx = 1 / (1 + x)."""
    def f(self, xp, x): return xp.log1p(x)
    def df(self, xp, x, y): return 1 / (1 + x)


class Expm1(_Unary):
    """e^x - 1; d/dx = e^x = y + 1."""
    def f(self, xp, x): return xp.expm1(x)
    def df(self, xp, x, y): return y + 1


class Log2(_Unary):
    """log2 x; d/dx = 1 / (x ln 2)."""
    def f(self, xp, x): return xp.log2(x)
    def df(self, xp, x, y): return 1 / (x * _pymath.log(2.0))


class Log10(_Unary):
    """log10 x; d/dx = 1 / (x ln 10)."""
    def f(self, xp, x): return xp.log10(x)
    def df(self, xp, x, y): return 1 / (x * _pymath.log(10.0))


class Exp2(_Unary):
    """2^x; d/dx = 2^x ln 2."""
    def f(self, xp, x): return xp.exp2(x)
    def df(self, xp, x, y): return y * _pymath.log(2.0)


class Cbrt(_Unary):
    """x^(1/3) (real, odd); d/dx = 1 / (3 y^2)."""
    def f(self, xp, x): return xp.cbrt(x)
    def df(self, xp, x, y): return 1 / (3 * y * y)


class Reciprocal(_Unary):
    """1 / x; d/dx = -1 / x^2 = -y^2."""
    def f(self, xp, x): return xp.reciprocal(x)
    def df(self, xp, x, y): return -y * y


class Sinc(_Unary):
    """sin(pi x) / (pi x), 1 at 0; d/dx = (cos(pi x) - sinc x) / x, 0 at 0."""
    def f(self, xp, x): return xp.sinc(x)

    def df(self, xp, x, y):
        safe = xp.where(x == 0, 1, x)
        return xp.where(x == 0, 0, (xp.cos(np.pi * x) - y) / safe)


def _bessel_i1(xp, x):
    """Modified Bessel function I1: its power series for |x| <= 30, the asymptotic expansion beyond."""
    ax = xp.abs(x)
    h = xp.minimum(ax, 30.0) / 2
    term = h.copy()
    total = h.copy()
    for k in range(1, 90):  # a fixed number of series terms, each vectorised over x
        term = term * h * h / (k * (k + 1))
        total = total + term
    z = xp.maximum(ax, 30.0)
    # I1(z) ~ e^z / sqrt(2 pi z) sum_k a_k, a_k = -a_{k-1} (4 - (2k - 1)^2) / (8 k z)
    a = xp.ones_like(z)
    asym = a.copy()
    for k in range(1, 15):
        a = -a * (4.0 - (2 * k - 1) ** 2) / (8.0 * k * z)
        asym = asym + a
    asym = asym * xp.exp(z) / xp.sqrt(2 * np.pi * z)
    return xp.sign(x) * xp.where(ax <= 30.0, total, asym)


class I0(_Unary):
    """Modified Bessel function of the first kind, order 0; d/dx = I1(x)."""
    def f(self, xp, x): return xp.i0(x) if hasattr(xp, "i0") else np.i0(x)
    def df(self, xp, x, y): return _bessel_i1(xp, x)


# ----------------------------------------------------------------------------- binary, elementwise

class _Binary(Op):
    """y = f(a, b) with broadcasting; backward gives (df/da, df/db) summed back to each shape."""
    same_float_dtype = True

    def forward(self, a, b):
        y = self.f(self.xp, a, b)
        self.saved = (a, b, y)
        return y

    def backward(self, gy):
        a, b, y = self.saved
        da, db = self.df(self.xp, a, b, y)
        return (unbroadcast(gy * da, a.shape) if self.needs_grad[0] else None,
                unbroadcast(gy * db, b.shape) if self.needs_grad[1] else None)


class Arctan2(_Binary):
    """atan2(a, b); d/da = b / (a^2 + b^2), d/db = -a / (a^2 + b^2), written (b / r) / r with r = hypot(a, b) (a^2 +
    b^2 underflowed to 0 for tiny a and b: inf or NaN where the slopes are finite), and 0 at the origin, where they are
    undefined (torch's value there; it was NaN)."""
    def f(self, xp, a, b): return xp.arctan2(a, b)

    def df(self, xp, a, b, y):
        r = xp.hypot(a, b)
        with np.errstate(divide="ignore", invalid="ignore"):
            da, db = (b / r) / r, (-a / r) / r
        origin = r == 0
        return xp.where(origin, 0, da).astype(da.dtype), xp.where(origin, 0, db).astype(db.dtype)


class Hypot(_Binary):
    """sqrt(a^2 + b^2); d/da = a / y, d/db = b / y."""
    def f(self, xp, a, b): return xp.hypot(a, b)
    def df(self, xp, a, b, y): return a / y, b / y


class LogAddExp(_Binary):
    """log(e^a + e^b), stable; d/da = sigmoid(a - b), d/db = sigmoid(b - a)."""
    def f(self, xp, a, b): return xp.logaddexp(a, b)

    def df(self, xp, a, b, y):
        wa = xp.exp(a - y)
        return wa, 1 - wa


class LogAddExp2(_Binary):
    """log2(2^a + 2^b); d/da = 2^a / (2^a + 2^b) = 2^(a - y)."""
    def f(self, xp, a, b): return xp.logaddexp2(a, b)

    def df(self, xp, a, b, y):
        wa = xp.exp2(a - y)
        return wa, 1 - wa


class Fmod(_Binary):
    """a - trunc(a / b) b (sign of a); d/da = 1, d/db = -trunc(a / b)."""
    def f(self, xp, a, b): return xp.fmod(a, b)
    def df(self, xp, a, b, y): return xp.ones_like(y), -xp.trunc(a / b)


class Mod(_Binary):
    """a - floor(a / b) b (sign of b); d/da = 1, d/db = -floor(a / b)."""
    def f(self, xp, a, b): return xp.mod(a, b)
    def df(self, xp, a, b, y): return xp.ones_like(y), -xp.floor(a / b)


class FMax(_Binary):
    """max ignoring NaN; the gradient goes to a where a >= b or b is NaN, else to b."""
    def f(self, xp, a, b): return xp.fmax(a, b)

    def df(self, xp, a, b, y):
        wa = ((a >= b) | xp.isnan(b)).astype(y.dtype)
        return wa, 1 - wa


class FMin(_Binary):
    """min ignoring NaN; the gradient goes to a where a <= b or b is NaN, else to b."""
    def f(self, xp, a, b): return xp.fmin(a, b)

    def df(self, xp, a, b, y):
        wa = ((a <= b) | xp.isnan(b)).astype(y.dtype)
        return wa, 1 - wa


class DivideNoNan(_Binary):
    """a / b, and 0 where b == 0; the gradient is 0 there too."""
    def f(self, xp, a, b):
        zero = b == 0
        return xp.where(zero, 0, a / xp.where(zero, 1, b)).astype(a.dtype, copy=False)

    def df(self, xp, a, b, y):
        zero = b == 0
        inv = xp.where(zero, 0, 1 / xp.where(zero, 1, b))
        return inv, -y * inv


# ----------------------------------------------------------------------------- products and scans

def _to_last(x, axes):
    """x with `axes` moved to the end and merged into one; returns (x2, kept_shape)."""
    keep = [i for i in range(x.ndim) if i not in axes]
    xt = x.transpose(keep + list(axes))
    kept_shape = tuple(x.shape[i] for i in keep)
    return xt.reshape(kept_shape + (int(np.prod([x.shape[a] for a in axes])),)), keep   # (not -1: may be empty)


def _from_last(g2, shape, axes, keep):
    """Inverse of _to_last for a gradient of the merged shape."""
    perm = keep + list(axes)
    gt = g2.reshape(tuple(shape[i] for i in perm))
    inv = np.argsort(perm)
    return gt.transpose(tuple(int(i) for i in inv))


def _exclusive_cumprod(xp, x, reverse=False):
    """Product of the entries strictly before (after, with reverse) each one along the last axis."""
    if reverse:
        x = x[..., ::-1]
    ones = xp.ones(x.shape[:-1] + (1,), x.dtype)
    out = xp.cumprod(xp.concatenate([ones, x[..., :-1]], axis=-1), axis=-1)
    return out[..., ::-1] if reverse else out


class Prod(Op):
    """Product over axes. Backward: the product of all the other entries (exact with zeros)."""

    def forward(self, x):
        self.saved = (x,)
        return x.prod(axis=self.axes, keepdims=self.keepdims)

    def backward(self, gy):
        (x,) = self.saved
        xp = self.xp
        x2, keep = _to_last(x, self.axes)
        others = _exclusive_cumprod(xp, x2) * _exclusive_cumprod(xp, x2, reverse=True)
        g = gy.reshape(x2.shape[:-1] + (1,))
        return _from_last(g * others, x.shape, self.axes, keep)


class Cumsum(Op):
    """Running sum along axis. Backward: the reversed running sum of the gradient."""

    def forward(self, x):
        return self.xp.cumsum(x, axis=self.axis)

    def backward(self, gy):
        xp = self.xp
        return xp.flip(xp.cumsum(xp.flip(gy, self.axis), axis=self.axis), self.axis)


class Cumprod(Op):
    """Running product along axis. Backward: sum_{j >= i} g_j y_j / x_i where no x is 0; rows with a 0
    use d y_j / d x_i = prod_{k <= j, k != i} x_k (an n x n table per row)."""

    def forward(self, x):
        y = self.xp.cumprod(x, axis=self.axis)
        self.saved = (x, y)
        return y

    def backward(self, gy):
        x, y = self.saved
        xp = self.xp
        ax = self.axis
        xl, yl, gl = (xp.moveaxis(a, ax, -1) for a in (x, y, gy))
        has_zero = (xl == 0).any(axis=-1, keepdims=True)
        safe = xp.where(xl == 0, 1, xl)
        rev = xp.flip(xp.cumsum(xp.flip(gl * yl, -1), axis=-1), -1)
        g = rev / safe
        if bool(has_zero.any()):
            n = xl.shape[-1]
            eye = xp.eye(n, dtype=bool)
            # table[..., i, j] = prod_{k <= j} (x_k, with x_i replaced by 1)
            table = xp.cumprod(xp.where(eye, 1, xl[..., None, :]), axis=-1)
            upper = xp.triu(xp.ones((n, n), dtype=bool))
            exact = (xp.where(upper, table, 0) * gl[..., None, :]).sum(axis=-1)
            g = xp.where(has_zero, exact, g)
        return xp.moveaxis(g, -1, ax)


# ----------------------------------------------------------------------------- quantiles

class Quantile(Op):
    """Quantiles q (1-D, in [0, 1]) over `axes` with NumPy's methods (linear, lower, higher,
    midpoint, nearest); ``ignore_nan`` skips NaNs (nanquantile), else a row with a NaN gives NaN.
    Backward routes the gradient to the one or two order statistics each quantile reads, with the
    interpolation weights."""

    def forward(self, x):
        xp = self.xp
        x2, keep = _to_last(x, self.axes)
        n = x2.shape[-1]
        self.meta = (x.shape, keep)
        if n == 0:   # quantiles of no values: NaN, as NumPy's (no order statistic to read, no gradient)
            self.saved = None
            out = xp.full((len(self.q),) + x2.shape[:-1], np.nan, x.dtype)
            return self._shaped(out, x.shape)
        order = xp.argsort(x2, axis=-1)   # NaNs sort last
        xs = xp.take_along_axis(x2, order, axis=-1)
        nan_count = xp.isnan(x2).sum(axis=-1)
        valid = (n - nan_count) if self.ignore_nan else xp.full(x2.shape[:-1], n)
        q = xp.asarray(self.q, dtype=np.float64).reshape((-1,) + (1,) * (x2.ndim - 1))
        pos = q * xp.maximum(valid - 1, 0)
        lo = xp.floor(pos)
        hi = xp.ceil(pos)
        m = self.method
        if m == "linear":
            w = pos - lo
        elif m == "lower":
            hi, w = lo, xp.zeros_like(pos)
        elif m == "higher":
            lo, w = hi, xp.zeros_like(pos)
        elif m == "midpoint":
            w = xp.where(hi > lo, 0.5, 0.0)
        elif m == "nearest":
            lo = hi = xp.around(pos)
            w = xp.zeros_like(pos)
        else:
            raise ValueError(f"Invalid method: {m!r}. Expected 'linear', 'lower', 'higher', "
                             "'midpoint' or 'nearest'.")
        lo = lo.astype(np.int64)[..., None]
        hi = hi.astype(np.int64)[..., None]
        xs_b = xp.broadcast_to(xs, (q.shape[0],) + xs.shape)
        v_lo = xp.take_along_axis(xs_b, lo, axis=-1)[..., 0]
        v_hi = xp.take_along_axis(xs_b, hi, axis=-1)[..., 0]
        w = w.astype(x.dtype)
        out = v_lo + (v_hi - v_lo) * w
        out = xp.where(w == 0, v_lo, out)  # exact order statistics (and infinities) where no blend
        bad = (valid == 0) if self.ignore_nan else (nan_count > 0)
        out = xp.where(bad, xp.asarray(np.nan, dtype=x.dtype), out).astype(x.dtype, copy=False)
        self.saved = (order, lo, hi, w, bad)
        return self._shaped(out, x.shape)

    def _shaped(self, out, shape):
        """(Q, kept axes...) quantiles with the reduced axes kept as 1 (keepdims) and the q axis dropped for a
        scalar q."""
        if self.keepdims:
            shp = [1 if i in self.axes else s for i, s in enumerate(shape)]
            out = out.reshape((out.shape[0],) + tuple(shp))
        if self.scalar_q:
            out = out[0]
        return out

    def backward(self, gy):
        shape, keep = self.meta
        xp = self.xp
        if self.saved is None:   # no values were reduced: an empty gradient
            return xp.zeros(shape, gy.dtype)
        order, lo, hi, w, bad = self.saved
        g = gy[None] if self.scalar_q else gy
        g = g.reshape(w.shape)
        g = xp.where(bad, 0, g)
        n = order.shape[-1]
        pos = xp.arange(n)
        # gradient in sorted order: one-hot of the two positions read, summed over the quantiles
        gs = ((pos == lo) * (g * (1 - w))[..., None] + (pos == hi) * (g * w)[..., None]).sum(axis=0)
        inv = xp.argsort(order, axis=-1)
        g2 = xp.take_along_axis(gs, inv, axis=-1)
        return _from_last(g2, shape, self.axes, keep).astype(gy.dtype, copy=False)


# ----------------------------------------------------------------------------- linear algebra

class SlogDet(Op):
    """(sign, log|det x|) of square matrices; backward of the log: inv(x)^T (sign has none)."""

    def forward(self, x):
        sign, logdet = self.xp.linalg.slogdet(x)
        self.saved = (x,)
        return sign.astype(x.dtype, copy=False), logdet.astype(x.dtype, copy=False)

    def backward(self, gsign, glog):
        (x,) = self.saved
        xp = self.xp
        inv_t = xp.swapaxes(xp.linalg.inv(x), -1, -2)
        return glog[..., None, None] * inv_t
