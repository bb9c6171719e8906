"""Activation functions: forward and backward side by side, numerically stable, any array module.

An activation gives a neuron its non-linearity: without one, a stack of Dense layers is one linear map.
"""
import math

import numpy as np

from .. import threads as _threads
from ..tensor import Op
from . import cuda_kernels as _cuda_kernels
from . import kernels as _kernels
from .math import _WORD as _WORDS  # float width -> signed integer of that width (select's)
from .math import _norm_axis, relu_grad, relu_into, row_max, select, sum_rows, unbroadcast

__all__ = ["relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "sigmoid", "hard_sigmoid", "tanh",
           "softplus", "softsign", "silu", "swish", "softmax", "log_softmax", "exponential", "linear_act",
           "prelu", "hard_silu", "log_sigmoid"]

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


# Chains of element-wise passes (GELU's ~25, a few for the other activations) run over flat blocks of this
# many elements, in cache across the passes, in place: ConvNeXtTiny's GELU on (8, 56, 56, 384) float32, erf
# alone, 76 -> 22 ms (whole arrays, a fresh array a pass) with the same numbers.
_CHAIN_BLOCK = 1 << 16
# A compiled chain's rows (kernels._rows: a flat run of a multiple of this many values)
_KERNEL_ROW = 1024


def _chain(xp, fn, inputs, n_out, min_split=None, kernel=None):
    """``fn(*input blocks, *output blocks, scratch)`` over flat blocks of equally shaped inputs; returns the
    n_out outputs (new arrays of the first input's shape and dtype). CuPy takes whole arrays (one kernel a
    pass is what it wants). Large arrays are split over lamina's threads (threads.split_width; ``min_split``
    elements for chains dear enough to gain below its default), each thread a contiguous run of blocks with a
    scratch of its own: the same numbers as one thread.

    ``kernel(*flat inputs, *flat outputs)``: the chain as one compiled pass (kernels.py), True where it ran. It
    takes each thread's whole run at once, as rows of _KERNEL_ROW values and one call for the short rest (the
    same values however the runs fall: the kernels are element-wise); where it declines, ``fn`` does the blocks.
    (Block by block, the calls' ~5 us of Python each were half of a LeakyReLU's compiled pass.)"""
    first = inputs[0]
    # C order whatever the inputs' layout: the blocks are written through flat views (reshape(-1) of a
    # transposed output would be a copy, and the values would be lost)
    outs = [xp.empty(first.shape, first.dtype) for _ in range(n_out)]
    small = first.size <= _CHAIN_BLOCK
    if xp is not np or (small and kernel is None):
        fn(*inputs, *outs, xp.empty_like(first))
        return outs
    flat = [a.reshape(-1) for a in inputs] + [o.reshape(-1) for o in outs]

    width = 1 if small else _threads.split_width(first.size, min_split)
    # on several threads, blocks twice as long: half the NumPy calls, each of which hands the GIL over (each
    # core has its own L2); GELU on 3.2 M float32, fwd+bwd on two threads, 8.1 -> 7.1 ms, sigmoid 3.8 -> 3.4
    step = _CHAIN_BLOCK * (2 if width > 1 else 1)

    def run(lo, hi):
        if kernel is not None:
            cut = lo + (hi - lo) // _KERNEL_ROW * _KERNEL_ROW
            if cut == lo or kernel(*[a[lo:cut] for a in flat]):
                if cut == hi or kernel(*[a[cut:hi] for a in flat]):
                    return
                lo = cut
        scratch = np.empty(step, first.dtype)
        for s in range(lo, hi, step):
            e = min(s + step, hi)
            fn(*[a[s:e] for a in flat], scratch[:e - s])
    _threads.run_split([lambda r=r: run(*r) for r in _threads.ranges(first.size, width, _CHAIN_BLOCK)])
    return outs


# What the chains take: float32 / float64. Half precision (computed in its own dtype, as NumPy does), integers
# and 0-d arrays keep the whole-array formulas.
_CHAIN_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _chains(x, gy=None, alpha=0.0):
    """Whether the chains take x (and gy, and a parameter alpha): x float32 / float64 of one dimension or more,
    gy of x's dtype, alpha not promoting x (a NumPy float64 scalar times a float32 array is float64)."""
    return (x.dtype in _CHAIN_DTYPES and x.ndim > 0 and (gy is None or gy.dtype == x.dtype)
            and np.result_type(x.dtype, alpha) == x.dtype)


_FILLED = {}


def _filled(xp, x, value):
    """``value`` in x's shape and dtype (x a chain block) for maximum / minimum against it: NumPy's SIMD loop is
    for two arrays, and against a scalar runs ~5x slower (0.31 against 0.066 ns an element, 65536 float32). A
    cached read-only block; CuPy takes the number."""
    if xp is not np:
        return value
    key = (x.dtype.str, repr(value))  # repr keeps 0.0 and -0.0 apart
    block = _FILLED.get(key)
    if block is None or block.size < x.size:  # (a block of a split part is twice as long)
        block = np.full(max(x.size, 2 * _CHAIN_BLOCK), value, x.dtype)
        block.flags.writeable = False
        _FILLED[key] = block
    return block[:x.size].reshape(x.shape)


def _words(a):
    """a's bits as signed integers of its width (a view)."""
    return a.view(_WORDS[a.dtype.itemsize])


def _bits(dtype, value):
    """The bits of ``value`` as a ``dtype`` float, a Python int (signed as _words)."""
    return int(np.array(value, dtype).view(_WORDS[dtype.itemsize]))


def _where_positive_words(xp, x, m, k):
    """m's words set to the integer k where x > 0, else 0 (NaN is not > 0); returns them. Xor-ed into an array
    that holds exactly a wherever x > 0, k = bits(a) ^ bits(b) turns those into b and leaves the rest: a select
    to the bit without np.where, whose per-element branch costs ~3 ns an element on a random sign (these two
    in-cache passes ~0.2 ns)."""
    mw = _words(m)
    xp.greater(x, 0, out=mw)
    mw *= k
    return mw


class ReLU(Op):
    """max(x, 0), optionally capped at max_value, with Keras's negative_slope and threshold."""

    def forward(self, x):
        xp = self.xp
        th, slope, cap = self.threshold, self.negative_slope, self.max_value
        self.saved = (x,)
        if th == 0 and not slope and cap is None:
            return relu_into(xp, x, xp.empty_like(x))  # the common case: one pass; NaN stays NaN
        if th == 0 and not slope and x.dtype.kind == "f":
            # ReLU6 and other caps (MobileNet's activation): one clip, NaN staying NaN. The general form below
            # (np.where against a 0-d zero, then np.minimum against a 0-d cap) took 11x as long: 90.8 against
            # 7.9 ms on a (16, 112, 112, 96) float32 activation.
            t = x.dtype.type
            return xp.clip(x, t(0), t(cap), out=xp.empty_like(x))
        # x <= th selects the low side, so NaN (never <= anything) passes through as NaN, as in torch
        low = (x - th) * slope if slope else xp.zeros_like(x)
        y = select(xp, x <= th, low.astype(x.dtype, copy=False), x)
        if cap is not None:
            y = xp.minimum(y, xp.asarray(cap, x.dtype))
        return y.astype(x.dtype, copy=False)

    def backward(self, gy):
        (x,) = self.saved
        th, slope, cap = self.threshold, self.negative_slope, self.max_value
        if th == 0 and not slope and cap is None:
            return relu_grad(self.xp, gy, x)
        if th == 0 and not slope:
            return gy * ((x > 0) & (x < cap))
        d = (x > th).astype(gy.dtype)
        if slope:
            d = d + (x <= th) * slope
        if cap is not None:
            d = d * (x < cap)
        return gy * d


class LeakyReLU(Op):
    """x if x > 0 else alpha x. Forward as max(x, alpha x) (min for alpha > 1): the same values (NaN stays NaN)
    in plain passes, where np.where's per-element branch on a random sign cost ~10x; a zero or non-finite
    alpha (inf * 0 is NaN) takes the exact branch-free select. Backward: gy d, d = 1 where x > 0 else alpha,
    the bits of select(x > 0, gy, gy alpha) (gy 1 is gy). Both as in-cache chains for float32 / float64."""

    def forward(self, x):
        xp, alpha = self.xp, self.alpha
        self.saved = (x,)
        pick = xp.maximum if alpha <= 1 else xp.minimum
        if _chains(x, alpha=alpha) and math.isfinite(alpha) and alpha != 0:
            def forward(x, y, t):
                xp.multiply(x, alpha, out=y)
                pick(x, y, out=y)

            # one compiled pass where the kernels run, the select's bits (kernels.py)
            return _chain(xp, forward, [x], 1, kernel=lambda x, y: _kernels.leaky_relu(x, alpha, y))[0]
        xa = x * alpha
        if (xa.dtype != x.dtype or x.dtype.kind != "f" or not math.isfinite(alpha) or alpha == 0
                or x.ndim == 0):
            return select(xp, x > 0, x, xa)
        return pick(x, xa, out=xa)

    def backward(self, gy):
        xp, alpha = self.xp, self.alpha
        (x,) = self.saved
        if _chains(x, gy, alpha):
            low, high = _bits(x.dtype, alpha), _bits(x.dtype, 1.0)

            def backward(x, gy, gx, t):
                d = _where_positive_words(xp, x, t, low ^ high)
                d ^= low
                xp.multiply(gy, t, out=gx)

            return _chain(xp, backward, [x, xp.broadcast_to(gy, x.shape)], 1,
                          kernel=lambda x, gy, gx: _kernels.leaky_relu_grad(x, gy, alpha, gx))[0]
        return select(xp, x > 0, gy, gy * alpha)


def _exp_side_into(xp, x, t, alpha):
    """alpha (e^min(x, 0) - 1) into t: ELU's x <= 0 side (0 or -0.0 for x > 0, alpha finite)."""
    xp.minimum(x, _filled(xp, x, 0.0), out=t)
    xp.expm1(t, out=t)
    t *= alpha


class ELU(Op):
    """x if x > 0 else alpha (e^x - 1). Backward: 1 or alpha e^x (as y + alpha).

    The forward chain writes the select as a sum: neg + max(x, -0.0), neg = alpha (e^min(x, 0) - 1). For x > 0,
    neg is 0 and the sum x; otherwise the other term is -0.0, which adds to anything (-0.0 and +0.0 included)
    without changing it (at x = +0.0: neg is +0.0, the sum +0.0). The same bits as select (NaN: NaN + NaN).
    With alpha >= 0, y > 0 just where x > 0 and y is neg elsewhere, so backward reads y alone. A negative
    alpha (neg = -0.0 at x = +0.0) or a non-finite one (inf * 0) keeps select."""

    def forward(self, x):
        xp, alpha = self.xp, self.alpha
        if _chains(x, alpha=alpha) and 0 <= alpha < math.inf:
            def forward(x, y, t):
                _exp_side_into(xp, x, y, alpha)
                xp.maximum(x, _filled(xp, x, -0.0), out=t)
                y += t

            # one compiled pass where NumPy's expm1 is scalar (kernels.py)
            y = _chain(xp, forward, [x], 1, kernel=lambda x, y: _kernels.elu(x, alpha, 1.0, y))[0]
            self.saved = (None, y)
            return y
        self.saved = (x, None)
        return select(xp, x > 0, x, alpha * xp.expm1(xp.minimum(x, 0)))

    def backward(self, gy):
        xp, alpha = self.xp, self.alpha
        x, y = self.saved
        if y is None:
            neg = alpha * xp.expm1(xp.minimum(x, 0))
            return select(xp, x > 0, gy, gy * (neg + alpha))
        if not _chains(y, gy):
            return select(xp, y > 0, gy, gy * (y + alpha))
        flip = _bits(y.dtype, alpha) ^ _bits(y.dtype, 1.0)

        def backward(y, gy, gx, t):  # gy d, d = y + alpha, 1 where y > 0 (there min(y, 0) + alpha is alpha)
            xp.minimum(y, _filled(xp, y, 0.0), out=t)
            t += alpha
            d = _words(t)
            d ^= _where_positive_words(xp, y, gx, flip)
            xp.multiply(gy, t, out=gx)

        return _chain(xp, backward, [y, xp.broadcast_to(gy, y.shape)], 1,   # (compiled: the same bits)
                      kernel=lambda y, gy, gx: _kernels.elu_grad(y, y, gy, alpha, 1.0, gx))[0]


class SELU(Op):
    """scale * ELU(x) with alpha = 1.67..., scale = 1.05.... The forward chain as ELU's, keeping
    neg = alpha (e^min(x, 0) - 1) (0 for x > 0) for backward."""

    def forward(self, x):
        xp = self.xp
        if _chains(x):
            def forward(x, y, neg, t):
                _exp_side_into(xp, x, neg, _SELU_ALPHA)
                xp.maximum(x, _filled(xp, x, -0.0), out=t)
                xp.add(neg, t, out=y)
                y *= _SELU_SCALE

            y, neg = _chain(xp, forward, [x], 2,   # one compiled pass, as ELU's
                            kernel=lambda x, y, neg: _kernels.elu(x, _SELU_ALPHA, _SELU_SCALE, y, neg))
        else:
            neg = _SELU_ALPHA * xp.expm1(xp.minimum(x, 0))
            y = (_SELU_SCALE * select(xp, x > 0, x, neg)).astype(x.dtype, copy=False)
        self.saved = (x, neg)
        return y

    def backward(self, gy):
        xp = self.xp
        x, neg = self.saved
        if _chains(x, gy):
            flip = _bits(x.dtype, _SELU_ALPHA) ^ _bits(x.dtype, 1.0)

            def backward(x, neg, gy, gx, t):  # gy d scale, d = neg + alpha, 1 where x > 0 (there it is alpha)
                xp.add(neg, _SELU_ALPHA, out=t)
                d = _words(t)
                d ^= _where_positive_words(xp, x, gx, flip)
                xp.multiply(gy, t, out=gx)
                gx *= _SELU_SCALE

            return _chain(xp, backward, [x, neg, xp.broadcast_to(gy, x.shape)], 1,   # (compiled: the same bits)
                          kernel=lambda x, neg, gy, gx: _kernels.elu_grad(x, neg, gy, _SELU_ALPHA, _SELU_SCALE, gx))[0]
        return (_SELU_SCALE * select(xp, x > 0, gy, gy * (neg + _SELU_ALPHA))).astype(gy.dtype, copy=False)


def _half(dtype):
    """float16 / bfloat16: computed in float32 (softmax as Keras, GELU as PyTorch), the result cast back."""
    return dtype.name == "bfloat16" or (dtype.kind == "f" and dtype.itemsize < 4)


def _erf_into(xp, x, out, t):
    """erf(x) by Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7, below float32 resolution), written into
    ``out`` with ``t`` as scratch (both x's shape): t = 1 / (1 + p|x|), out = sign(x) (1 - t P(t) e^(-x^2))."""
    xp.abs(x, out=t)
    t *= 0.3275911
    t += 1.0
    xp.divide(1.0, t, out=t)
    xp.multiply(t, 1.061405429, out=out)
    for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        out += c
        out *= t
    xp.negative(x, out=t)
    t *= x
    xp.exp(t, out=t)
    out *= t
    xp.subtract(1.0, out, out=out)
    xp.sign(x, out=t)
    out *= t
    return out


_GELU_C = math.sqrt(2.0 / math.pi)
# GELU's chains (~25 passes exact, ~10 approximate) gain from two threads from ~256 K elements (with a product
# before: 262144 float32 fwd+bwd 0.88 -> 0.76 ms, 524288 1.72 -> 1.26); cheaper chains (sigmoid) only from
# ~1 M, the default (1048576: 1.51 -> 1.34; 262144: 0.38 -> 0.60).
_SPLIT_GELU = 1 << 18


def _split_exp(tanh=False):
    """Where a compiled pass runs with the kernels' own exp (kernels.OWN_EXP; ``tanh``: the own tanh, only where
    NumPy's is not vectorised), the dearest of them (tanh's and softplus', ~2 ns a value on the Zen 2) split over
    threads from GELU's _SPLIT_GELU as GELU's do: forward + backward on the 2-core Zen 2, 262144 float32 softplus
    1.01 -> 0.87 ms, 524288 1.89 -> 1.48, tanh 1.40 -> 1.14 (the sigmoid's, SiLU's and ELU's, ~1 ns a value,
    gained at 524288 and lost at 262144: the default). NumPy's exp and tanh elsewhere: the default."""
    if tanh:
        return _SPLIT_GELU if _kernels.OWN_EXP and not _kernels.NUMPY_SIMD_EXP else None
    return _SPLIT_GELU if _kernels.OWN_EXP else None


class GELU(Op):
    """x Phi(x), exact (erf) or with the tanh approximation. A half-precision x is computed in float32 and
    the result cast back (as PyTorch's kernels do): 1 + erf(x) cancels for x < 0, and float16 keeps
    too few digits for it (gelu(-3.75) came out 0 instead of -3.3e-4)."""

    def forward(self, x):
        xp = self.xp
        self.dtype = x.dtype
        if _half(x.dtype):
            x = x.astype(xp.float32)
        return self._forward(xp, x).astype(self.dtype, copy=False)

    def backward(self, gy):
        x = self.saved[0]
        return self._backward(gy.astype(x.dtype, copy=False)).astype(self.dtype, copy=False)

    def _forward(self, xp, x):
        if self.approximate:
            if x.dtype.kind != "f":
                x = x.astype(np.float64)

            def forward(x, y, t, s):  # t = tanh(c (x + 0.044715 x^3)), y = x (1 + t) / 2
                xp.multiply(x, x, out=s)
                s *= _GELU_C * 0.044715
                s += _GELU_C
                s *= x
                if not _kernels.sigmoid_tanh(s, True, out=t):   # compiled, where NumPy's tanh is scalar
                    xp.tanh(s, out=t)
                xp.add(t, 1.0, out=y)
                y *= x
                y *= 0.5

            y, t = _chain(xp, forward, [x], 2, _SPLIT_GELU)
            self.saved = (x, t)
            return y
        if x.dtype.kind != "f":  # integers: in float64, as x / sqrt(2) made them before
            x = x.astype(np.float64)

        def forward(x, y, cdf, t):  # cdf = (1 + erf(x / sqrt 2)) / 2, y = x cdf
            xp.divide(x, math.sqrt(2.0), out=y)
            _erf_into(xp, y, cdf, t)
            cdf += 1.0
            cdf *= 0.5
            xp.multiply(x, cdf, out=y)

        # one compiled pass with the kernels' own exp (kernels.OWN_EXP)
        y, cdf = _chain(xp, forward, [x], 2, _SPLIT_GELU, kernel=_kernels.gelu)
        self.saved = (x, cdf)
        return y

    def _backward(self, gy):
        xp = self.xp
        x, s = self.saved
        if self.approximate:
            def backward(x, t, gy, gx, s):  # gy (1 + t + x (1 - t^2) c (1 + 3 * 0.044715 x^2)) / 2
                xp.multiply(x, x, out=s)
                s *= _GELU_C * 3 * 0.044715
                s += _GELU_C
                s *= x
                xp.multiply(t, t, out=gx)
                xp.subtract(1.0, gx, out=gx)
                gx *= s
                gx += t
                gx += 1.0
                gx *= 0.5
                gx *= gy

            return _chain(xp, backward, [x, s, xp.broadcast_to(gy, x.shape)], 1, _SPLIT_GELU)[0]

        def backward(x, s, gy, gx, t):  # gy (cdf + x pdf), pdf = e^(-x^2 / 2) / sqrt(2 pi)
            xp.multiply(x, -0.5, out=t)
            t *= x
            xp.exp(t, out=t)
            t /= math.sqrt(2.0 * math.pi)
            t *= x
            t += s
            xp.multiply(gy, t, out=gx)

        return _chain(xp, backward, [x, s, xp.broadcast_to(gy, x.shape)], 1, _SPLIT_GELU,   # (compiled, as forward)
                      kernel=_kernels.gelu_grad)[0]


def _sigmoid_into(xp, x, s, t):
    """sigmoid(x) into s (x itself allowed) with t as scratch: e = exp(-|x|), max(e, [x >= 0]) / (1 + e)."""
    xp.abs(x, out=t)
    xp.negative(t, out=t)
    xp.exp(t, out=t)
    xp.fmax(t, x >= 0, out=s)
    t += 1.0
    s /= t
    return s


def sigmoid_inplace(xp, a, subnormals=True):
    """Logistic sigmoid of ``a`` written INTO ``a`` (which may be a view), accurate for every x.

    With e = exp(-|x|), in (0, 1] so it never overflows: sigmoid(x) = 1 / (1 + e) for x >= 0 and
    e / (1 + e) for x < 0; the numerator is max(e, [x >= 0]). Neither side subtracts nearly equal
    numbers, so the relative error is a few ulps everywhere, subnormal results included (the form
    0.5 (tanh(x / 2) + 1) cancels for negative x: relative error 2.6e-2 at x = -15 and exactly 0 from
    x = -20 in float64). fmax, not maximum: with x = NaN, e is NaN and fmax gives 0, and 0 / (NaN + 1)
    is NaN again.

    subnormals=False (float32/float64; the fused recurrent gates): 1 / (1 + exp(-x)), with exp(-x) in a
    contiguous scratch array. The same few-ulp relative error wherever the result is a normal number
    (for x < 0, exp(-x) is large but exact to an ulp, and nothing cancels); exp(-x) overflows to inf
    only where sigmoid(x) is subnormal (x < -87.3 in float32, -708 in float64), which gives 0 there
    (the overflow flag is silenced). Four passes instead of six: an LSTM step's (64, 384) gate view,
    whose rows are strided, 35 -> 22 us.
    """
    if not subnormals and a.dtype.kind == "f" and a.dtype.itemsize >= 4:
        e = xp.empty_like(a)
        xp.negative(a, out=e)  # (out=: a 0-d input would give a scalar otherwise)
        with np.errstate(over="ignore"):
            xp.exp(e, out=e)
        e += 1.0
        xp.divide(1.0, e, out=a)
        return a
    return _sigmoid_into(xp, a, a, xp.empty_like(a))  # (a scratch array: a 0-d input keeps its out= targets)


def stable_sigmoid(xp, x):
    """sigmoid(x) as a new array of x's dtype (see sigmoid_inplace for the formula)."""
    return sigmoid_inplace(xp, x.copy())


class Sigmoid(Op):
    def forward(self, x):
        xp = self.xp
        if _chains(x):
            # one compiled pass with the kernels' own exp (kernels.OWN_EXP), else the stable formula's six
            y = _chain(xp, lambda x, y, t: _sigmoid_into(xp, x, y, t), [x], 1, kernel=_kernels.sigmoid)[0]
        else:
            y = stable_sigmoid(xp, x)
        self.saved = (y,)
        return y

    def backward(self, gy):
        xp = self.xp
        (y,) = self.saved
        if _chains(y, gy):
            def backward(y, gy, gx, t):  # gy y (1 - y)
                xp.multiply(gy, y, out=gx)
                xp.subtract(1.0, y, out=t)
                gx *= t

            return _chain(xp, backward, [y, xp.broadcast_to(gy, y.shape)], 1,   # (compiled: the same bits)
                          kernel=_kernels.sigmoid_grad)[0]
        return gy * y * (1.0 - y)


def forward_values(cls, xp, x):
    """Activation op ``cls``'s forward values of the array x as a new array, outside the autograd graph (an
    activation inside another op's arithmetic: the binary cross-entropy's softplus and sigmoid)."""
    op = cls()
    op.xp = xp
    return op.forward(x)


def _hard_sigmoid_into(xp, x, out):
    """clip(x / 6 + 0.5, 0, 1) into out: relu6(x + 3) / 6 as the whole-array code computed it."""
    xp.divide(x, 6.0, out=out)
    out += 0.5
    xp.clip(out, 0.0, 1.0, out=out)


class HardSigmoid(Op):
    """Keras 3: relu6(x + 3) / 6. Backward: 1/6 inside (-3, 3)."""

    def forward(self, x):
        xp = self.xp
        self.saved = (x,)
        if _chains(x):
            return _chain(xp, lambda x, y, t: _hard_sigmoid_into(xp, x, y), [x], 1)[0]
        return xp.clip(x / 6.0 + 0.5, 0.0, 1.0).astype(x.dtype, copy=False)

    def backward(self, gy):
        xp = self.xp
        (x,) = self.saved
        if _chains(x, gy):
            def backward(x, gy, gx, t):  # gy [|x| < 3] / 6 (as 1.0 / 0.0; NaN is outside)
                xp.abs(x, out=t)
                xp.less(t, 3.0, out=gx)
                gx *= gy
                gx /= 6.0

            return _chain(xp, backward, [x, xp.broadcast_to(gy, x.shape)], 1)[0]
        return gy * ((x > -3.0) & (x < 3.0)) / 6.0


class HardSiLU(Op):
    """x * hard_sigmoid(x). Backward: hs + x [-3 < x < 3] / 6 (the chains recompute hs rather than keep it)."""

    def forward(self, x):
        xp = self.xp
        self.saved = (x,)
        if _chains(x):
            def forward(x, y, t):
                _hard_sigmoid_into(xp, x, t)
                xp.multiply(x, t, out=y)

            return _chain(xp, forward, [x], 1)[0]
        return (x * xp.clip(x / 6.0 + 0.5, 0.0, 1.0)).astype(x.dtype, copy=False)

    def backward(self, gy):
        xp = self.xp
        (x,) = self.saved
        if _chains(x, gy):
            def backward(x, gy, gx, t):  # gy (hs + [|x| < 3] (x / 6)): x / 6 once, the bits of x [|x| < 3] / 6
                xp.divide(x, 6.0, out=gx)
                xp.abs(x, out=t)
                xp.less(t, 3.0, out=t)
                t *= gx
                gx += 0.5
                xp.clip(gx, 0.0, 1.0, out=gx)
                gx += t
                gx *= gy

            return _chain(xp, backward, [x, xp.broadcast_to(gy, x.shape)], 1)[0]
        hs = xp.clip(x / 6.0 + 0.5, 0.0, 1.0)
        return (gy * (hs + x * ((x > -3.0) & (x < 3.0)) / 6.0)).astype(gy.dtype, copy=False)


class Tanh(Op):
    def forward(self, x):
        xp = self.xp
        if _chains(x):
            # one compiled pass where NumPy's tanh is scalar (kernels.sigmoid_tanh: the kernels' own, 3 ulps)
            y = _chain(xp, lambda x, y, t: xp.tanh(x, out=y), [x], 1, _split_exp(tanh=True),
                       kernel=lambda x, y: _kernels.sigmoid_tanh(x, True, out=y))[0]
        else:
            y = xp.tanh(x)
        self.saved = (y,)
        return y

    def backward(self, gy):
        xp = self.xp
        (y,) = self.saved
        if _chains(y, gy):
            def backward(y, gy, gx, t):  # gy (1 - y^2)
                xp.multiply(y, y, out=t)
                xp.subtract(1.0, t, out=t)
                xp.multiply(gy, t, out=gx)

            return _chain(xp, backward, [y, xp.broadcast_to(gy, y.shape)], 1)[0]
        return gy * (1.0 - y * y)


def _log1p_exp_into(xp, x, t):
    """log1p(e^-|x|) into t: in (0, log 2], never overflowing."""
    xp.abs(x, out=t)
    xp.negative(t, out=t)
    xp.exp(t, out=t)
    xp.log1p(t, out=t)


class Softplus(Op):
    """log(1 + e^x), computed as max(x, 0) + log1p(e^-|x|). Backward: sigmoid(x)."""

    def forward(self, x):
        xp = self.xp
        self.saved = (x,)
        if _chains(x):
            def forward(x, y, t):
                _log1p_exp_into(xp, x, t)
                xp.maximum(x, _filled(xp, x, 0.0), out=y)
                y += t

            # one compiled pass where NumPy's exp and log1p are scalar (kernels.py)
            return _chain(xp, forward, [x], 1, _split_exp(), kernel=_kernels.softplus)[0]
        return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))

    def backward(self, gy):
        xp = self.xp
        (x,) = self.saved
        if _chains(x, gy):
            def backward(x, gy, gx, t):
                _sigmoid_into(xp, x, gx, t)
                gx *= gy

            return _chain(xp, backward, [x, xp.broadcast_to(gy, x.shape)], 1,   # (compiled: as Sigmoid's)
                          kernel=lambda x, gy, gx: _kernels.sigmoid(x, gx, gy))[0]
        return gy * stable_sigmoid(xp, x)


class LogSigmoid(Op):
    """log(sigmoid(x)) = min(x, 0) - log1p(e^-|x|) (no overflow, no log of 0). Backward: sigmoid(-x)."""

    def forward(self, x):
        xp = self.xp
        self.saved = (x,)
        if _chains(x):
            def forward(x, y, t):
                _log1p_exp_into(xp, x, t)
                xp.minimum(x, _filled(xp, x, 0.0), out=y)
                y -= t

            return _chain(xp, forward, [x], 1)[0]
        return xp.minimum(x, 0) - xp.log1p(xp.exp(-xp.abs(x)))

    def backward(self, gy):
        xp = self.xp
        (x,) = self.saved
        if _chains(x, gy):
            def backward(x, gy, gx, t):
                xp.negative(x, out=gx)
                _sigmoid_into(xp, gx, gx, t)
                gx *= gy

            return _chain(xp, backward, [x, xp.broadcast_to(gy, x.shape)], 1)[0]
        # -x of a 0-d array is a NumPy scalar, which sigmoid_inplace cannot write into
        return gy * sigmoid_inplace(xp, xp.negative(x, out=xp.empty_like(x)))


class Softsign(Op):
    """x / (1 + |x|). Backward: 1 / (1 + |x|)^2."""

    def forward(self, x):
        xp = self.xp
        self.saved = (x,)
        if _chains(x):
            def forward(x, y, t):
                xp.abs(x, out=t)
                t += 1.0
                xp.divide(x, t, out=y)

            return _chain(xp, forward, [x], 1)[0]
        return x / (1.0 + xp.abs(x))

    def backward(self, gy):
        xp = self.xp
        (x,) = self.saved
        if _chains(x, gy):
            def backward(x, gy, gx, t):
                xp.abs(x, out=t)
                t += 1.0
                t *= t
                xp.divide(gy, t, out=gx)

            return _chain(xp, backward, [x, xp.broadcast_to(gy, x.shape)], 1)[0]
        d = 1.0 + xp.abs(x)
        return gy / (d * d)


class SiLU(Op):
    """x sigmoid(x) (swish: EfficientNet's activation). Backward: s + x s (1 - s). Both chains run over
    in-cache blocks (_chain), with the same numbers as whole-array passes."""

    def forward(self, x):
        xp = self.xp
        if x.dtype.kind != "f" or x.dtype.itemsize < 4:
            s = stable_sigmoid(xp, x)
            self.saved = (x, s)
            return x * s

        def forward(x, y, s, t):
            _sigmoid_into(xp, x, s, t)
            xp.multiply(x, s, out=y)

        y, s = _chain(xp, forward, [x], 2, kernel=_kernels.silu)   # one compiled pass (the kernels' own exp)
        self.saved = (x, s)
        return y

    def backward(self, gy):
        xp = self.xp
        x, s = self.saved
        if x.dtype.kind != "f" or x.dtype.itemsize < 4 or gy.dtype != x.dtype:
            return gy * (s + x * s * (1.0 - s))

        def backward(x, s, gy, gx, t):
            xp.multiply(x, s, out=gx)
            xp.subtract(1.0, s, out=t)
            gx *= t
            gx += s
            gx *= gy

        return _chain(xp, backward, [x, s, xp.broadcast_to(gy, x.shape)], 1,   # (one compiled pass, the same bits)
                      kernel=_kernels.silu_grad)[0]


def _last_axis_rows(x, axis):
    """x as (R, D) rows when ``axis`` is its last axis and x is a C-contiguous float array (a view); else None."""
    if not isinstance(axis, (int, np.integer)) or x.ndim == 0 or x.size == 0 or x.dtype.kind != "f":
        return None
    if axis not in (-1, x.ndim - 1) or not x.flags.c_contiguous:   # (NumPy's code refuses an axis x lacks)
        return None
    return x.reshape(-1, x.shape[-1])


def row_exp(xp, rows, shift=None):
    """exp(rows - shift[:, None]) (exp(rows) without ``shift``) of (R, D) rows as a new array: the compiled exp
    with the subtraction in its pass where NumPy's float32 exp is scalar (kernels.exp_rows), else NumPy's
    subtraction and exp (the log-softmax's)."""
    e = xp.empty(rows.shape, rows.dtype)
    if xp is np and _kernels.exp_rows(rows, shift, out=e):
        return e
    if shift is None:
        return xp.exp(rows, out=e)
    xp.subtract(rows, shift[:, None], out=e)
    return xp.exp(e, out=e)


def _compiled_softmax(xp, rows):
    """(softmax, maxima, sums) of C-contiguous (R, D) rows from one compiled visit of each row (kernels.exp_rows:
    the maximum found, the exp, the sum and the division), or None where it does not run (float64, CuPy, fewer
    values than kernels.SOFTMAX_MIN_ELEMENTS: their arrays not made for nothing)."""
    least = min(_kernels.SOFTMAX_MIN_ELEMENTS, _kernels.MIN_ELEMENTS)
    if xp is not np or rows.size < least or rows.dtype != np.float32:
        return None
    e = np.empty(rows.shape, rows.dtype)
    m, sums = np.empty((2, rows.shape[0]), rows.dtype)
    return (e, m, sums) if _kernels.exp_rows(rows, m, out=e, sums=sums, find_max=True, least=least) else None


def row_softmax(xp, rows):
    """(softmax, maxima, sums) of C-contiguous (R, D) rows: exp(rows - max) / sum, with the rows' maxima and the
    sums of exp(rows - max) (R,), as new arrays (the softmax's and the cross-entropies'): compiled for float32
    (_compiled_softmax), one fused kernel on a GPU (cuda_kernels.row_softmax), else the array module's maxima,
    exp, row sums (a GEMV) and division."""
    done = _compiled_softmax(xp, rows) if xp is np else _cuda_kernels.row_softmax(rows)  # (a launch on a GPU)
    if done is not None:
        return done
    m = row_max(xp, rows)
    e = xp.subtract(rows, m[:, None])
    xp.exp(e, out=e)
    sums = sum_rows(xp, e.T)
    e /= sums[:, None]
    return e, m, sums


def _row_logsumexp(xp, rows):
    """(maxima, sums of exp(rows - maxima)) (R,) of C-contiguous (R, D) rows (the log-softmax's where the
    compiled softmax does not run): NumPy's maxima, exp and a GEMV."""
    m = row_max(xp, rows)
    return m, sum_rows(xp, row_exp(xp, rows, m).T)


class Softmax(Op):
    """exp(x - max) / sum (in float32 for a half-precision x). Backward: y (g - sum(g y))."""

    def forward(self, x):
        xp = self.xp
        self.dtype = x.dtype
        if _half(x.dtype):
            x = x.astype(xp.float32)
        rows = _last_axis_rows(x, self.axis)
        if x.size == 0:   # (an empty axis has no maximum to subtract)
            _norm_axis(self.axis, x.ndim)   # (an axis x lacks: an error, as NumPy's code gives)
            y = xp.empty(x.shape, x.dtype)
        elif rows is not None:  # the usual case: over the last axis of a contiguous array, as (R, D) rows
            y = row_softmax(xp, rows)[0].reshape(x.shape)
        else:
            e = xp.exp(x - x.max(axis=self.axis, keepdims=True))
            y = e / e.sum(axis=self.axis, keepdims=True)
        self.saved = (y,)
        return y.astype(self.dtype, copy=False)

    def backward(self, gy):
        (y,) = self.saved
        gy = gy.astype(y.dtype, copy=False)
        g2 = _last_axis_rows(gy, self.axis)
        if self.xp is np and g2 is not None and y.flags.c_contiguous:   # each row visited once (kernels.py)
            gx = np.empty(y.shape, y.dtype)
            if _kernels.softmax_rows_grad(y.reshape(g2.shape), g2, gx.reshape(g2.shape)):
                return gx.astype(self.dtype, copy=False)
        gyy = gy * y
        rows = _last_axis_rows(gyy, self.axis)
        if rows is not None:
            y2 = y.reshape(rows.shape)
            rows -= y2 * sum_rows(self.xp, rows.T)[:, None]
            return gyy.astype(self.dtype, copy=False)
        return (gyy - y * gyy.sum(axis=self.axis, keepdims=True)).astype(self.dtype, copy=False)


class LogSoftmax(Op):
    """x - max - log(sum(exp(x - max))) (in float32 for a half-precision x). Backward: g - softmax * sum(g)."""

    def forward(self, x):
        xp = self.xp
        self.dtype = x.dtype
        if _half(x.dtype):
            x = x.astype(xp.float32)
        rows = _last_axis_rows(x, self.axis)
        if x.size == 0:   # (an empty axis has no maximum to subtract)
            _norm_axis(self.axis, x.ndim)   # (an axis x lacks: an error, as NumPy's code gives)
            y = xp.empty(x.shape, x.dtype)
        elif rows is not None:  # over the last axis of a contiguous array, as (R, D) rows
            done = _compiled_softmax(xp, rows)
            if done is not None:
                # one compiled visit of each row gave the softmax, its maxima and sums; the softmax is what backward
                # needs (kept instead of y: no exp there), y = (x - m) - log(s) one more compiled pass
                e, m, s = done
                z = _kernels.shift_rows(rows, m, np.log(s))
                if z is not None:
                    self.saved = (e.reshape(x.shape),)
                    self._softmax = True
                    return z.reshape(x.shape).astype(self.dtype, copy=False)
            else:
                m, s = _row_logsumexp(xp, rows)
            z = xp.subtract(rows, m[:, None])
            z -= xp.log(s)[:, None]
            y = z.reshape(x.shape)
        else:
            z = x - x.max(axis=self.axis, keepdims=True)
            y = z - xp.log(xp.exp(z).sum(axis=self.axis, keepdims=True))
        self.saved = (y,)
        self._softmax = False
        return y.astype(self.dtype, copy=False)

    def backward(self, gy):
        (y,) = self.saved   # (the softmax where self._softmax)
        gy = gy.astype(y.dtype, copy=False)
        rows = _last_axis_rows(gy, self.axis)
        if rows is not None:
            g = y.reshape(rows.shape) if self._softmax else row_exp(self.xp, y.reshape(rows.shape))   # the softmax
            if self.xp is np:   # one visit a row (into another array: written over its input, the loop ran scalar)
                gx = np.empty(g.shape, g.dtype)
                if _kernels.softmax_rows_grad(g, rows, gx, log=True):
                    return gx.reshape(gy.shape).astype(self.dtype, copy=False)
            sums = sum_rows(self.xp, rows.T)[:, None]
            if self._softmax:   # (the saved softmax stays as it is)
                g = g * sums
            else:
                g *= sums
            self.xp.subtract(rows, g, out=g)
            return g.reshape(gy.shape).astype(self.dtype, copy=False)
        softmax = y if self._softmax else self.xp.exp(y)
        return (gy - softmax * gy.sum(axis=self.axis, keepdims=True)).astype(self.dtype, copy=False)


class Exponential(Op):
    def forward(self, x):
        y = self.xp.exp(x)
        self.saved = (y,)
        return y

    def backward(self, gy):
        return gy * self.saved[0]


class PReLU(Op):
    """x if x > 0 else alpha x, with a learned alpha broadcast against x. On NumPy, for float32 / float64 x and alpha
    of its dtype broadcasting into x's sample shape, x as (R, S) rows and alpha as S slopes (the axes where alpha is
    1 before its first full axis fold into the rows; the rest of alpha is broadcast into a (S,) copy), forward and
    both gradients in one compiled pass each (kernels.prelu / prelu_grad): (32, 32, 32, 32) float32, a slope an
    entry (Keras's default), forward + backward 8.7 -> 0.6 ms on the 2-core Zen 2 (PyTorch's PReLU, a slope a
    channel: 3.6). Elsewhere NumPy's passes, the slopes' gradient through the branch-free select."""

    def forward(self, x, alpha):
        self.saved = (x, alpha)
        view = _prelu_rows(self.xp, x, alpha)
        self._rows, self._rest = (None, None) if view is None else (view[:2], view[2])
        if self._rows is not None:
            x2, a = self._rows
            y = np.empty(x.shape, x.dtype)
            if _kernels.prelu(x2, a, y.reshape(x2.shape)):
                return y
            self._rows = None
        return select(self.xp, x > 0, x, x * alpha)

    def backward(self, gy):
        x, alpha = self.saved
        want_gx, want_ga = self.needs_grad
        if self._rows is not None and gy.dtype == x.dtype:
            x2, a = self._rows
            done = _kernels.prelu_grad(x2, np.ascontiguousarray(gy).reshape(x2.shape), a, want_gx, want_ga)
            if done is not None:
                gx, ga = done
                if ga is not None:   # the slopes' sums over the rows, then over alpha's broadcast axes in the rest
                    ga = unbroadcast(ga.reshape(x.shape[x.ndim - len(self._rest):]), self._rest).reshape(alpha.shape)
                return (None if gx is None else gx.reshape(x.shape)), ga
        xp = self.xp
        pos = x > 0
        gx = select(xp, pos, gy, gy * alpha) if want_gx else None
        ga = None
        if want_ga:
            t = gy * x
            ga = unbroadcast(select(xp, pos, xp.zeros_like(t), t) if pos.shape == t.shape else xp.where(pos, 0, t),
                             alpha.shape).astype(gy.dtype)
        return gx, ga


_PRELU_WIDTH = 256


def _prelu_rows(xp, x, alpha):
    """(x as (R, S), alpha as a C-contiguous (S,)) for PReLU's kernels, or None: NumPy float32 / float64 arrays of
    one dtype, x C-contiguous of two or more axes, alpha broadcasting into x's sample shape (its axes after the
    first), and alpha's shape over the columns' axes (its gradient's). The leading axes where alpha is 1 fold into
    the rows (while the rows stay _PRELU_WIDTH wide: a few channels' rows would leave the loops little to vectorise).
    """
    if (xp is not np or type(x) is not np.ndarray or type(alpha) is not np.ndarray or x.ndim < 2
            or x.dtype not in _CHAIN_DTYPES or alpha.dtype != x.dtype or alpha.ndim >= x.ndim
            or not x.flags.c_contiguous or x.size == 0):
        return None
    sample = x.shape[1:]
    full = (1,) * (len(sample) - alpha.ndim) + alpha.shape
    if any(n not in (1, m) for n, m in zip(full, sample)):
        return None
    lead = next((i for i, n in enumerate(full) if n != 1), len(full))
    while lead > 0 and math.prod(sample[lead:]) < _PRELU_WIDTH:
        lead -= 1
    rest = sample[lead:]
    a = np.ascontiguousarray(np.broadcast_to(alpha.reshape(full[lead:]), rest)).reshape(-1)
    return x.reshape(-1, a.size), a, full[lead:]


def relu(x, negative_slope=0.0, max_value=None, threshold=0.0):
    """Rectified linear unit: max(x, 0). Backward: gy where x > 0."""
    return ReLU.apply(x, negative_slope=negative_slope, max_value=max_value, threshold=threshold)


def relu6(x):
    """min(max(x, 0), 6)."""
    return ReLU.apply(x, negative_slope=0.0, max_value=6.0, threshold=0.0)


def leaky_relu(x, negative_slope=0.2):
    """x if x > 0 else negative_slope * x (Keras's default slope is 0.2)."""
    return LeakyReLU.apply(x, alpha=negative_slope)


def elu(x, alpha=1.0):
    return ELU.apply(x, alpha=alpha)


def selu(x):
    return SELU.apply(x)


def gelu(x, approximate=False):
    """Gaussian error linear unit; approximate=True uses the tanh form.

    Keras's activations.gelu defaults to approximate=False, as here."""
    return GELU.apply(x, approximate=approximate)


def sigmoid(x):
    """Logistic sigmoid 1 / (1 + e^-x). Backward: gy * y * (1 - y)."""
    return Sigmoid.apply(x)


def log_sigmoid(x):
    """log(sigmoid(x)) = -softplus(-x), stable for every x. Backward: gy * sigmoid(-x)."""
    return LogSigmoid.apply(x)


def hard_sigmoid(x):
    return HardSigmoid.apply(x)


def hard_silu(x):
    return HardSiLU.apply(x)


def tanh(x):
    """Hyperbolic tangent. Backward: gy * (1 - y^2)."""
    return Tanh.apply(x)


def softplus(x):
    return Softplus.apply(x)


def softsign(x):
    return Softsign.apply(x)


def silu(x):
    """x * sigmoid(x), also called swish."""
    return SiLU.apply(x)


swish = silu


def softmax(x, axis=-1):
    """Normalised exponentials along axis; each slice sums to 1."""
    return Softmax.apply(x, axis=axis)


def log_softmax(x, axis=-1):
    return LogSoftmax.apply(x, axis=axis)


def exponential(x):
    return Exponential.apply(x)


def linear_act(x):
    """The identity activation ('linear')."""
    return x


def prelu(x, alpha):
    return PReLU.apply(x, alpha)
