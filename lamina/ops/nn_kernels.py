"""Kernels behind ``keras.ops.nn`` that the other family modules lack: forward and backward side by side.

- elementwise activations (celu, hard_tanh, the shrinks, threshold, squareplus, sparse_plus,
  sparse_sigmoid, log_sigmoid) and sparsemax;
- N-d convolution helpers: a strided window view (im2col without a copy) and its adjoint (col2im, one
  strided addition per kernel offset), a grouped convolution (groups = 1 is a plain 3-D convolution,
  groups = channels is a depthwise one), a transposed convolution and max / average pooling of any rank;
- adaptive max pooling along one axis, unfold / fold (torch's im2col / col2im, channels-first);
- the CTC loss (forward-backward in log space, vectorised over the batch and the label positions,
  one step per time frame).

Every kernel is xp-agnostic (``self.xp`` is NumPy or CuPy). The public functions are in ``nn.py``.
"""
import itertools

import numpy as np

from .. import threads as _threads
from ..tensor import Op
from . import activations as _act
from . import kernels as _kernels
from .math import mm_tn, relu_grad, relu_into, sum_rows

__all__ = []  # kernels only: the public functions live in lamina.ops.nn


# ----------------------------------------------------------------------------- elementwise activations
class _Elementwise(Op):
    """y = f(x); backward gy * f'(x). Subclasses give f and df."""

    def forward(self, x):
        self.saved = (x,)
        return self.f(x).astype(x.dtype, copy=False)

    def backward(self, gy):
        (x,) = self.saved
        return (gy * self.df(x)).astype(gy.dtype, copy=False)


class CELU(_Elementwise):
    """max(x, 0) + min(0, alpha (e^(x/alpha) - 1)). Derivative: 1 for x > 0, e^(x/alpha) otherwise."""

    def f(self, x):
        xp = self.xp
        return xp.where(x > 0, x, self.alpha * xp.expm1(xp.minimum(x, 0) / self.alpha))

    def df(self, x):
        xp = self.xp
        return xp.where(x > 0, 1.0, xp.exp(xp.minimum(x, 0) / self.alpha))


class HardTanh(_Elementwise):
    """clip(x, -1, 1). Derivative: 1 inside (-1, 1), else 0."""

    def f(self, x):
        return self.xp.clip(x, -1, 1)

    def df(self, x):
        return (x > -1) & (x < 1)


class HardShrink(_Elementwise):
    """x where |x| > threshold, else 0. Derivative: 1 where |x| > threshold."""

    def f(self, x):
        return self.xp.where(self.xp.abs(x) <= self.threshold, 0, x)   # (NaN stays NaN, as torch's)

    def df(self, x):
        return self.xp.abs(x) > self.threshold


class SoftShrink(_Elementwise):
    """x - t for x > t, x + t for x < -t, else 0. Derivative: 1 where |x| > t."""

    def f(self, x):
        t = self.threshold
        return self.xp.where(self.xp.abs(x) <= t, 0, x - self.xp.sign(x) * t)   # (NaN stays NaN, as torch's)

    def df(self, x):
        return self.xp.abs(x) > self.threshold


class TanhShrink(_Elementwise):
    """x - tanh(x). Derivative: tanh(x)^2."""

    def f(self, x):
        return x - self.xp.tanh(x)

    def df(self, x):
        t = self.xp.tanh(x)
        return t * t


class Threshold(_Elementwise):
    """x where x > threshold, else default_value. Derivative: 1 where x > threshold."""

    def f(self, x):
        return self.xp.where(x > self.threshold, x, self.default_value)

    def df(self, x):
        return x > self.threshold


class Squareplus(_Elementwise):
    """(x + sqrt(x^2 + b)) / 2. Derivative: (1 + x / sqrt(x^2 + b)) / 2. For x < 0 both are written without the
    difference of two near-equal numbers, b / (2 (s - x)) and b / (2 s (s - x)) with s = sqrt(x^2 + b) (a hypot,
    finite for |x| past sqrt of float32's largest): at x = -88, b = 4 the direct sum lost 4 of float32's 7 digits
    (0.0113640 against 0.0113622)."""

    def _parts(self, x):
        xp = self.xp
        s = xp.hypot(x, xp.sqrt(xp.asarray(self.b, x.dtype)))   # sqrt(x^2 + b) without x^2's overflow
        with np.errstate(divide="ignore", invalid="ignore"):
            return x < 0, s, xp.asarray(self.b, x.dtype) / (s - x)   # (b / (s - x): at x < 0 only)

    def f(self, x):
        negative, s, ratio = self._parts(x)
        return self.xp.where(negative, ratio / 2, (x + s) / 2)

    def df(self, x):
        negative, s, ratio = self._parts(x)
        return self.xp.where(negative, ratio / (2 * s), (1 + x / s) / 2)


class SparsePlus(_Elementwise):
    """0 for x <= -1, (x + 1)^2 / 4 for -1 < x < 1, x for x >= 1. Derivative: 0, (x + 1) / 2, 1."""

    def f(self, x):
        xp = self.xp
        return xp.where(x <= -1, 0, xp.where(x < 1, 0.25 * (x + 1) ** 2, x))

    def df(self, x):
        xp = self.xp
        return xp.where(x <= -1, 0, xp.where(x < 1, 0.5 * (x + 1), 1))


class SparseSigmoid(_Elementwise):
    """0 for x <= -1, (x + 1) / 2 for -1 < x < 1, 1 for x >= 1. Derivative: 1/2 inside (-1, 1)."""

    def f(self, x):
        xp = self.xp
        return xp.where(x <= -1, 0, xp.where(x >= 1, 1, 0.5 * (x + 1)))

    def df(self, x):
        return ((x > -1) & (x < 1)) * 0.5


class LogSigmoid(_act.LogSigmoid):
    """log(sigmoid(x)) = min(x, 0) - log1p(e^-|x|) (never overflows; activations.LogSigmoid's forward).
    Derivative: sigmoid(-x) as 0.5 (1 - tanh(x / 2))."""

    def backward(self, gy):
        xp = self.xp
        (x,) = self.saved
        if _act._chains(x, gy):
            def backward(x, gy, gx, t):
                xp.multiply(x, 0.5, out=gx)
                xp.tanh(gx, out=gx)
                xp.subtract(1.0, gx, out=gx)
                gx *= 0.5
                gx *= gy

            return _act._chain(xp, backward, [x, xp.broadcast_to(gy, x.shape)], 1)[0]
        return (gy * (0.5 * (1.0 - xp.tanh(0.5 * x)))).astype(gy.dtype, copy=False)


class Sparsemax(Op):
    """Euclidean projection of x onto the probability simplex along ``axis``:
    y = max(x - tau, 0), tau chosen so that y sums to 1 (found on the sorted values).
    Backward: on the support S (y > 0), dx = gy - mean_S(gy); 0 elsewhere."""

    def forward(self, x):
        xp = self.xp
        ax = self.axis
        if x.size == 0:   # nothing to project (an empty axis has no largest value)
            self.saved = (xp.zeros(x.shape, bool),)
            return xp.empty(x.shape, x.dtype)
        z = -xp.sort(-x, axis=ax)                                    # descending
        cs = xp.cumsum(z, axis=ax)
        shape = [1] * x.ndim
        shape[ax] = -1
        r = xp.arange(1, x.shape[ax] + 1, dtype=x.dtype).reshape(shape)
        support = z - (cs - 1) / r > 0
        k = support.sum(axis=ax, keepdims=True)
        tau = (xp.take_along_axis(cs, k - 1, axis=ax) - 1) / k                 # (sum of the k largest - 1) / k
        y = xp.maximum(x - tau, 0).astype(x.dtype, copy=False)
        self.saved = (y > 0,)
        return y

    def backward(self, gy):
        (s,) = self.saved
        if s.size == 0:
            return self.xp.zeros(s.shape, gy.dtype)
        gs = gy * s
        return (gs - s * (gs.sum(axis=self.axis, keepdims=True) / s.sum(axis=self.axis, keepdims=True))).astype(
            gy.dtype, copy=False)


# ----------------------------------------------------------------------------- N-d windows
def window_view(xp, x, kernel, out, stride, dilation):
    """The (N, O1..Od, K1..Kd, C) strided view of x (N, S1..Sd, C): entry [n, o, k, c] is
    x[n, o*stride + k*dilation, c]. No copy."""
    d = len(kernel)
    st = x.strides
    shape = (x.shape[0],) + tuple(out) + tuple(kernel) + (x.shape[-1],)
    strides = ((st[0],) + tuple(st[1 + i] * stride[i] for i in range(d))
               + tuple(st[1 + i] * dilation[i] for i in range(d)) + (st[-1],))
    return xp.lib.stride_tricks.as_strided(x, shape=shape, strides=strides)


def col2im(xp, cols, shape, kernel, out, stride, dilation):
    """The adjoint of ``window_view``: cols (N, O..., K..., C) summed into a zero array of ``shape``
    (N, S..., C), one strided, vectorised addition per kernel offset."""
    d = len(kernel)
    g = xp.zeros(shape, dtype=cols.dtype)
    lead = (slice(None),) * (1 + d)
    for off in np.ndindex(*kernel):
        sl = tuple(slice(off[i] * dilation[i], off[i] * dilation[i] + stride[i] * (out[i] - 1) + 1, stride[i])
                   for i in range(d))
        g[(slice(None),) + sl] += cols[lead + off]
    return g


def _pad(xp, x, pads, value=0):
    if not any(a or b for a, b in pads):
        return x
    return xp.pad(x, ((0, 0),) + tuple(pads) + ((0, 0),), constant_values=value)


def _crop(x, pads, size):
    if not any(a or b for a, b in pads):
        return x
    return x[(slice(None),) + tuple(slice(a, a + n) for (a, _), n in zip(pads, size))]


def _depth_stacked(w):
    """A 3-D kernel (KD, KH, KW, A, B) as a 2-D one (KH, KW, KD * A, B), its depth slices side by side along the third
    axis (slice a's entries at a * A + i): the one 2-D convolution (or transposed one) of the 3-D ways by depth."""
    kd, kh, kw, a, b = w.shape
    return np.ascontiguousarray(w.transpose(1, 2, 0, 3, 4)).reshape(kh, kw, kd * a, b)


def _depth_unstacked(g, shape):
    """:func:`_depth_stacked` undone: a (KH, KW, KD * A, B) kernel gradient as the (KD, KH, KW, A, B) ``shape``."""
    kd, kh, kw, a, b = shape
    return np.ascontiguousarray(g.reshape(kh, kw, kd, a, b).transpose(2, 0, 1, 3, 4))


def _out_size(padded, kernel, stride, dilation):
    return tuple((p - (k - 1) * d - 1) // s + 1 for p, k, s, d in zip(padded, kernel, stride, dilation))


# 3-D convolutions of up to this many groups run each group as a convolution of its own (GroupConvND); more (a
# depthwise 3-D convolution's) keep the batched general way
_GROUPS_3D = 16


class GroupConvND(Op):
    """Grouped N-d convolution, channels last: x (N, S..., C), w (K..., C/G, O), G groups; output channel
    g*(O/G) + j is group g's j-th filter (torch's / Keras's order; groups = C with w (K..., 1, C*M) is a
    depthwise convolution).

    1-D and 2-D: each group through the dense 2-D convolution's own forward and backward (ops.convolution.Conv2D:
    its blocked im2col, compiled where built, and its input gradient as a convolution or a col2im), on a
    contiguous copy of the group's channels; where the groups qualify for the planes convolution (few channels at
    stride 1: _planes_forward), those kernels instead, straight from x's channels into y's. Measured (forward +
    backward, 2 threads, the per-group Conv2D ops against the general way below): (32, 32, 32, 32) 3x3 G=4 84 -> 30
    ms (PyTorch 10), (16, 14, 14, 128) G=32 34.5 -> 20.4, (16, 28, 28, 64) G=8 57.8 -> 24.9, (32, 16, 16, 64) G=2
    33.8 -> 18.9; the general way's transposing copies and its col2im (one strided addition per offset over the
    padded gradient) were most of its time.
    3-D with one group: as one 2-D convolution over the depth slices stacked along the channels (_depth_forward);
    with up to _GROUPS_3D groups, each group so on a copy of its channels (_per_group_3d_forward).
    Otherwise (more 3-D groups, an empty input): cols = im2col(pad(x)) arranged (G, M, K*C/G); y = cols @ w
    (G, K*C/G, O/G), one batched GEMM. Backward: dw = cols^T dy (batched GEMM); dx = crop(col2im(dy w^T)).

    The bias b (O,) or None, and activation None or 'relu' (the layers' own, through ops.nn.conv_bias): inside the
    planes kernels' passes where the groups run so (the bias added and the ReLU taken as each output row is
    written; backward the ReLU's mask read in the packing of dy and the bias gradient summed in the kernel
    gradient's pass); else on the finished output, in place. bench.layers conv3x3_g4 (a bias, no activation):
    the separate bias addition and its gradient's sum were ~1.7 of 18.4 ms.
    """

    half_via_float32 = True  # float16 through float32 BLAS (tensor.Op)
    _groups = None           # (the per-group Conv2D ops, x's shape, w's shape) of the 1-D and 2-D way
    _planes = None           # (kernels, x, w, geometry) where the groups run as planes convolutions
    _depth = None            # (the per-depth-offset Conv2D ops, shapes) of the 3-D way through 2-D convolutions
    _groups3d = None         # the per-group one-group ops of the 3-D grouped way (_per_group_3d_forward)
    activation = None        # or 'relu'
    _out = None              # the output where the ReLU was applied (its mask in backward)

    def forward(self, x, w, b=None):
        y, fused = self._conv_forward(x, w, b)
        relu = self.activation == "relu"
        if not fused:   # (the planes kernels did both themselves)
            if b is not None:
                y += b   # (y is this op's own new array on every way)
            if relu:
                relu_into(self.xp, y, y)
        self._out = y if relu else None   # (a reference: the graph holds the output anyway)
        return y

    def _conv_forward(self, x, w, b):
        """(y, whether the bias and the ReLU are in it already)."""
        xp = self.xp
        G, d = self.groups, x.ndim - 2
        if d in (1, 2) and x.size and w.size:
            return self._per_group_forward(x, w, b)
        if d == 3 and G == 1 and x.size and w.size and xp is np:
            y = self._depth_forward(x, w)
            if y is not None:
                return y, False
        if d == 3 and 1 < G <= _GROUPS_3D and x.size and w.size and xp is np:
            y = self._per_group_3d_forward(x, w)
            if y is not None:
                return y, False
        kernel = w.shape[:d]
        cg, o = w.shape[-2], w.shape[-1]
        og, kp = o // G, int(np.prod(kernel))
        xpd = _pad(xp, x, self.pads)
        out = _out_size(xpd.shape[1:-1], kernel, self.stride, self.dilation)
        n, m = x.shape[0], x.shape[0] * int(np.prod(out))
        view = window_view(xp, xpd, kernel, out, self.stride, self.dilation)
        cols = xp.ascontiguousarray(view.reshape(m, kp, G, cg).transpose(2, 0, 1, 3)).reshape(G, m, kp * cg)
        w3 = w.reshape(kp, cg, G, og).transpose(2, 0, 1, 3).reshape(G, kp * cg, og)
        y = xp.matmul(cols, w3)                                            # (G, M, O/G)
        self.meta = (x.shape, xpd.shape, out)
        self.saved = (cols if self.needs_grad[1] else None, w3, w.shape)
        return xp.ascontiguousarray(y.transpose(1, 0, 2)).reshape((n,) + out + (o,)), False

    def _conv2d_op(self, stride, dilation, pads):
        """A dense 2-D convolution op (ops.convolution.Conv2D, no bias) for one of this op's parts (a group, a depth
        offset), run by hand: its forward and backward called here, the gradients this op needs."""
        from .convolution import Conv2D   # (the same floor, imported where used)
        op = Conv2D(stride=stride, dilation=dilation, pads=pads)
        op.xp, op.needs_grad = self.xp, (self.needs_grad[0], self.needs_grad[1], False)
        return op

    def _per_group_forward(self, x, w, b):
        xp, G, d = self.xp, self.groups, x.ndim - 2
        # 1-D as 2-D with a height of one, as ops.convolution.conv1d runs it
        x4 = x if d == 2 else x.reshape(x.shape[0], 1, x.shape[1], x.shape[2])
        w4 = w if d == 2 else w.reshape((1,) + w.shape)
        stride, dilation = ((tuple(self.stride), tuple(self.dilation)) if d == 2
                            else ((1,) + tuple(self.stride), (1,) + tuple(self.dilation)))
        pads = tuple(self.pads) if d == 2 else ((0, 0),) + tuple(self.pads)
        n, h, wd, c = x4.shape
        kh, kw, cg, o = w4.shape
        og = o // G
        y = self._planes_forward(x4, w4, b, stride, dilation, pads, (x.shape, w.shape))
        if y is not None:
            return (y if d == 2 else y.reshape(n, y.shape[2], o)), True
        xg = xp.ascontiguousarray(xp.moveaxis(x4.reshape(n, h, wd, G, cg), 3, 0))     # (G, N, H, W, C/G)
        wg = xp.ascontiguousarray(xp.moveaxis(w4.reshape(kh, kw, cg, G, og), 3, 0))   # (G, KH, KW, C/G, O/G)
        ops = [self._conv2d_op(stride, dilation, pads) for _ in range(G)]
        ys = [op.forward(xg[g], wg[g], None) for g, op in enumerate(ops)]
        self._groups = (ops, x.shape, w.shape)
        y = xp.stack(ys, axis=-2)                                                      # (N, OH, OW, G, O/G)
        return (y.reshape(y.shape[:3] + (o,)) if d == 2 else y.reshape(n, y.shape[2], o)), False

    def _depth_forward(self, x, w):
        """A 3-D convolution (one group) as one 2-D convolution over KD times the channels: each output depth's KD
        input depth slices (a dd, a dd + sd, ... of the zero-padded depth) side by side along the channels, a
        (N * OD, H, W, KD * C) copy, and the kernel as (KH, KW, KD * C, O), through the dense 2-D convolution's op
        (its blocks shared over lamina's threads, the planes kernels where they qualify); backward the op's kernel
        gradient taken apart again and its input gradient's KD slices added into the padded depth. Keeps that copy
        (KD times x) where the general way kept its whole im2col (KD * KH * KW times x). 3x3x3 'same', forward +
        backward at 2 threads (Zen 2): (8, 16, 16, 16, 16) -> 16: general 56 ms, KD 2-D convolutions added 28, one
        over the stacked slices 19 (PyTorch 16)."""
        n, depth, h, wd, c = x.shape
        kd = w.shape[0]
        (p0, p1), sd, dd = self.pads[0], self.stride[0], self.dilation[0]
        out = _out_size(tuple(m + lo + hi for m, (lo, hi) in zip(x.shape[1:4], self.pads)), w.shape[:3], self.stride,
                        self.dilation)
        if min(out) <= 0:   # (no output position: the general way's)
            return None
        od = out[0]
        xpad = x
        if p0 or p1:
            xpad = np.zeros((n, depth + p0 + p1, h, wd, c), dtype=x.dtype)
            xpad[:, p0:p0 + depth] = x
        stacked = np.empty((n, od, h, wd, kd, c), dtype=x.dtype)
        for a in range(kd):
            stacked[:, :, :, :, a] = xpad[:, a * dd:a * dd + (od - 1) * sd + 1:sd]
        op = self._conv2d_op(tuple(self.stride[1:]), tuple(self.dilation[1:]), tuple(self.pads[1:]))
        y = op.forward(stacked.reshape(n * od, h, wd, kd * c), _depth_stacked(w), None)
        self._depth = (op, x.shape, xpad.shape, od, w.shape)
        return y.reshape((n, od) + y.shape[1:])

    def _per_group_3d_forward(self, x, w):
        """3-D groups (at most _GROUPS_3D) each as a one-group convolution of its own (_depth_forward, over a
        contiguous copy of the group's channels), the outputs side by side; None where a group's would not run so.
        3x3x3 'same' (8, 16, 16, 16, 16) -> 16 in 4 groups, forward + backward on the 2-core Zen 2: 115 -> 24 ms
        (PyTorch 27; the general way's batched GEMM of 4-channel groups and its col2im were the time)."""
        G = self.groups
        cg, og = w.shape[-2], w.shape[-1] // G
        parts = []
        for g in range(G):
            op = GroupConvND(groups=1, stride=self.stride, dilation=self.dilation, pads=self.pads)
            op.xp, op.needs_grad = self.xp, self.needs_grad
            y = op._depth_forward(np.ascontiguousarray(x[..., g * cg:(g + 1) * cg]),
                                  np.ascontiguousarray(w[..., g * og:(g + 1) * og]))
            if y is None:
                return None
            parts.append((op, y))
        self._groups3d = [op for op, _ in parts]
        return np.concatenate([y for _, y in parts], axis=-1)

    def _depth_backward(self, gy):
        op, xshape, pshape, od, wshape = self._depth
        n, depth = xshape[:2]
        kd, c = wshape[0], wshape[3]
        (p0, _), sd, dd = self.pads[0], self.stride[0], self.dilation[0]
        g2 = np.ascontiguousarray(gy).reshape((n * od,) + gy.shape[2:])
        gxs, gw2, _ = op.backward(g2)
        gw = None if gw2 is None else _depth_unstacked(gw2, wshape)
        gx = None
        if gxs is not None:
            gxs = gxs.reshape((n, od) + gxs.shape[1:3] + (kd, c))
            gxp = np.zeros(pshape, dtype=gy.dtype)
            for a in range(kd):
                gxp[:, a * dd:a * dd + (od - 1) * sd + 1:sd] += gxs[:, :, :, :, a]
            gx = np.ascontiguousarray(gxp[:, p0:p0 + depth])
        return gx, gw

    def _planes_forward(self, x4, w4, b, stride, dilation, pads, shapes):
        """The groups as planes convolutions (ops.convolution's few-channel stride-1 way: kernel_loops.conv_planes)
        straight from x's channels into y's, no per-group copies, where each group qualifies, its input gradient
        too when needed; else None. bench.layers conv3x3_g4 ((64, 32, 32, 32) 3x3 'same' G=4: 8 channels a group),
        forward + backward: 31 -> 23.8 ms (PyTorch 12-15); the per-group copies and the stacking were 12 of the 31."""
        from . import convolution as cv   # (the same floor, imported where used)
        n, h, wd, c = x4.shape
        kh, kw, cg, o = w4.shape
        og = o // self.groups
        (pt, pb), (pl, pr) = pads
        out = _out_size((h + pt + pb, wd + pl + pr), (kh, kw), stride, dilation)
        k = cv._planes_kernels(x4, w4[..., :og], b, out, stride) if self.xp is np and min(out) > 0 else None
        if k is None or (self.needs_grad[0] and h * wd < cv._PLANES_POSITIONS) or not x4.flags.c_contiguous:
            return None
        y = np.empty((n,) + out + (o,), dtype=x4.dtype)
        relu = self.activation == "relu"
        for g in range(self.groups):
            cv._planes_conv(k, x4, w4[..., g * og:(g + 1) * og], None if b is None else b[g * og:(g + 1) * og], out,
                            (pt, pl), dilation, relu, y=y, c0=g * cg, o0=g * og)
        self._planes = (k, x4 if self.needs_grad[1] else None, w4 if self.needs_grad[0] else None, (pt, pl), dilation,
                        x4.shape, w4.shape, shapes)
        return y

    def _planes_backward(self, gy):
        from . import convolution as cv   # (the same floor, imported where used)
        k, x4, w4, corner, dilation, xshape4, wshape4, (xshape, wshape) = self._planes
        G, o = self.groups, gy.shape[-1]
        kh, kw, cg, _ = wshape4
        og = o // G
        g4 = np.ascontiguousarray(gy)
        g4 = g4.reshape(g4.shape[0], 1, g4.shape[1], o) if g4.ndim == 3 else g4   # (1-D as 2-D, as forward)
        mask = None if self._out is None else self._out.reshape(g4.shape)   # (the fused ReLU's: dy where y > 0)
        need_b = len(self.needs_grad) > 2 and self.needs_grad[2]
        gx = gw = gb = None
        if x4 is not None:   # each group's kernel gradient, side by side along the output channels, and its bias
            # gradient from the same pass
            parts = [cv._planes_grad_weight(k, x4, g4, (kh, kw, cg, og), corner, dilation, c0=g * cg, o0=g * og,
                                            mask=mask, bias=need_b) for g in range(G)]
            gw = np.concatenate([p[0] for p in parts], axis=-1).reshape(wshape)
            gb = np.concatenate([p[1] for p in parts]) if need_b else None
        elif need_b:   # (a frozen kernel: the bias's gradient alone)
            gb = sum_rows(np, (g4 if mask is None else relu_grad(np, g4, mask)).reshape(-1, o))
        if w4 is not None:   # each group's input gradient: its dy's convolution by its turned kernel
            dh, dw = dilation
            gx = np.empty(xshape4, dtype=g4.dtype)
            for g in range(G):
                wf = w4[::-1, ::-1, :, g * og:(g + 1) * og].transpose(0, 1, 3, 2)
                cv._planes_conv(k, g4, wf, None, xshape4[1:3], ((kh - 1) * dh - corner[0], (kw - 1) * dw - corner[1]),
                                dilation, False, y=gx, c0=g * og, o0=g * cg, mask=mask)
            gx = gx.reshape(xshape)
        return gx, gw, gb

    def backward(self, gy):
        if self._planes is not None:
            gx, gw, gb = self._planes_backward(gy)
        else:
            if self._out is not None:   # the ReLU's backward, then the convolution's
                gy = relu_grad(self.xp, gy, self._out)
            need_b = len(self.needs_grad) > 2 and self.needs_grad[2]
            gb = sum_rows(self.xp, gy.reshape(-1, gy.shape[-1])) if need_b else None
            gx, gw = self._conv_backward(gy)
        return (gx, gw) if len(self.needs_grad) == 2 else (gx, gw, gb)

    def _conv_backward(self, gy):
        xp = self.xp
        if self._depth is not None:
            return self._depth_backward(gy)
        if self._groups3d is not None:
            og = gy.shape[-1] // self.groups
            parts = [op._depth_backward(gy[..., g * og:(g + 1) * og]) for g, op in enumerate(self._groups3d)]
            gx = np.concatenate([p[0] for p in parts], axis=-1) if self.needs_grad[0] else None
            gw = np.concatenate([p[1] for p in parts], axis=-1) if self.needs_grad[1] else None
            return gx, gw
        if self._groups is not None:
            ops, xshape, wshape = self._groups
            G, o = self.groups, gy.shape[-1]
            g4 = gy if gy.ndim == 4 else gy.reshape(gy.shape[0], 1, gy.shape[1], o)
            gg = xp.ascontiguousarray(xp.moveaxis(g4.reshape(g4.shape[:3] + (G, o // G)), 3, 0))
            parts = [op.backward(gg[g]) for g, op in enumerate(ops)]
            gx = xp.stack([p[0] for p in parts], axis=-2).reshape(xshape) if self.needs_grad[0] else None
            gw = xp.stack([p[1] for p in parts], axis=-2).reshape(wshape) if self.needs_grad[1] else None
            return gx, gw
        cols, w3, wshape = self.saved
        xshape, pshape, out = self.meta
        G, d = self.groups, len(out)
        kernel = wshape[:d]
        cg, o = wshape[-2], wshape[-1]
        kp, og = int(np.prod(kernel)), o // G
        g2 = xp.ascontiguousarray(gy.reshape(-1, G, og).transpose(1, 0, 2))  # (G, M, O/G)
        gx = gw = None
        if self.needs_grad[1]:
            gw = xp.matmul(cols.transpose(0, 2, 1), g2)                    # (G, K*C/G, O/G)
            gw = gw.reshape(G, kp, cg, og).transpose(1, 2, 0, 3).reshape(wshape)
        if self.needs_grad[0] and G == 1:
            gx = _crop(_offset_col2im(xp, g2[0], w3[0].reshape(kp, cg, o), pshape, kernel, out, self.stride,
                                      self.dilation), self.pads, xshape[1:-1])
        elif self.needs_grad[0]:
            gc = xp.matmul(g2, w3.transpose(0, 2, 1))                      # (G, M, K*C/G)
            gc = gc.reshape(G, -1, kp, cg).transpose(1, 2, 0, 3)           # (M, K, G, C/G)
            gc = gc.reshape((xshape[0],) + out + tuple(kernel) + (G * cg,))
            gx = _crop(col2im(xp, gc, pshape, kernel, out, self.stride, self.dilation), self.pads, xshape[1:-1])
        return gx, gw


def _offset_col2im(xp, g2, wk, shape, kernel, out, stride, dilation):
    """The input gradient on the padded canvas ``shape`` (N, S..., C) of a dense N-d convolution, from dy's rows
    g2 (M, O) and the kernel wk (K, C, O) (K offsets in C order): per kernel offset one product g2 wk[k]^T, a
    contiguous (M, C) block added at its strided window (the 2-D convolution's _gemm_col2im in any rank). The
    columns of one product with every offset, (M, K*C), read offset by offset, were strided sources: (8, 16, 16,
    16, 16) 3x3x3 -> 16 channels, its col2im 42 -> 13 ms, the Conv3D layer's forward + backward 88 -> 45 ms
    (PyTorch 19)."""
    d = len(kernel)
    n, c = shape[0], shape[-1]
    gx = xp.zeros(shape, dtype=g2.dtype)
    buf = xp.empty((g2.shape[0], c), dtype=g2.dtype)
    for k, off in enumerate(np.ndindex(*kernel)):
        xp.matmul(g2, wk[k].T, out=buf)
        sl = tuple(slice(off[i] * dilation[i], off[i] * dilation[i] + stride[i] * (out[i] - 1) + 1, stride[i])
                   for i in range(d))
        gx[(slice(None),) + sl] += buf.reshape((n,) + tuple(out) + (c,))
    return gx


# DepthwiseConvND's flat passes run over rows of about this many entries (a whole number of positions, each C
# entries): long enough for NumPy's inner loop, and a block of rows stays in cache. (It was 256 positions
# whatever C: rows of 245 K entries for MobileNetV2's 960 channels, one row a block, out of cache.)
_FLAT_ROW = 8192
_FLAT_BLOCK = 2 ** 16  # entries a block (whole rows), in cache across the kernel offsets
# The depthwise forward is split over threads by output blocks from this many element-offset products
# (flat positions x kernel offsets), with a product before each call: (8,56,56,384) 7x7 110 -> 79 ms,
# (8,112,112,96) 3x3 27 -> 22, (8,14,14,576) 3x3 (10.6 M) 2.8 -> 2.4; (8,7,7,960) (5.6 M) no gain.
_SPLIT_DEPTHWISE = 1 << 23
# ... and the backward (weight and input gradients, counted twice) from this many: (8,20,20,96) 3x3 at 2 threads
# 1.65 -> 1.35 ms, (16,12,12,144) 1.88 -> 1.67, (8,8,8,480) 1.8-2.2 -> 1.6; about even at (8,5,5,480), below.
_SPLIT_DEPTHWISE_BACKWARD = 1 << 21
# The compiled weight gradient adds its products by chunks of output rows of about this many values, then the
# chunks in order (a fixed size: the same sums however the chunks are shared over threads)
_DIRECT_CHUNK = 1 << 15


class DepthwiseConvND(Op):
    """Depthwise N-d convolution, channels last: x (N, S..., C), w (K..., C, M) -> (N, O..., C*M), output
    channel c*M + m = sum_k x[o*stride + k*dilation, c] w[k, c, m].

    Elementwise passes only, no im2col copy and no tiny per-channel GEMMs. An optional bias b (C*M,) is added in
    the op (the DepthwiseConv layers pass theirs: ops.nn.depthwise_conv_bias). A multiplier M > 1 runs as M = 1
    over the channels repeated M times. Three ways, the first that applies:

    - The compiled kernels (kernels.depthwise; NumPy arrays of one float dtype, 1-D to 3-D): straight from the
      unpadded input, output row by output row (all axes but the last spatial one), each kernel offset's
      products only where its window lies inside the input, then the bias, while the row is in cache; backward
      gathers the input gradient row by row the same way and sums the weight and bias gradients by fixed chunks
      of output rows. No padded copy of the input or of the gradient, no output position outside the output
      ((64,32,32,32) 3x3 'same' with its bias, forward + backward at 2 threads: 16.1 ms over the flat passes'
      kernels and a separate bias addition -> 6.0 ms, against PyTorch's 16.0 in the same run).
    - NumPy's code (or a device's) on the padded input as one flat array (see _flat_forward): in padded
      coordinates offset k reads the same array shifted by a constant, so every pass is over contiguous memory,
      as rows of ~_FLAT_ROW entries against the weights tiled to that width (a strided view, or broadcasting a
      row of C = 32 weights, costs NumPy 2-3x per pass), a block of rows at a time (in cache across the K
      passes); backward gathers the input gradient by blocks the same way, so both directions run on lamina's
      threads by blocks. At a stride s the input's s^d stride phases are laid side by side first (see
      _flat_layout), so each offset is again one shifted slice.
    - The fallback (an empty input, or input and kernel of different dtypes) works per kernel offset and
      multiplier m: one strided view of the padded input times that offset's (C,) weights, accumulated;
      backward, per offset: dw[k, :, m] = sum over positions of view * dy[m]; dx's window += dy[m] w[k, :, m].
    """

    half_via_float32 = True  # float16 through float32 BLAS (tensor.Op)

    def forward(self, x, w, b=None):
        xp = self.xp
        d = x.ndim - 2
        kernel, (c, m) = w.shape[:d], w.shape[d:]
        padded = tuple(n + lo + hi for n, (lo, hi) in zip(x.shape[1:-1], self.pads))
        out = _out_size(padded, kernel, self.stride, self.dilation)
        w3 = w.reshape(-1, c, m)
        self.flat = x.size > 0 and x.dtype == w.dtype
        self.direct = None   # the compiled kernels where they ran
        if self.flat:
            if m > 1:
                # each input channel repeated M times is a depthwise convolution with multiplier 1 over C*M
                # channels, output channel c*M + m reading channel c with w[..., c, m]: the flat path again
                # ((64,32,32,32) 3x3, M = 2, forward + backward 86-100 -> 60 ms); backward sums the copies
                x = xp.repeat(x, m, axis=-1)
                w3 = w3.reshape(w3.shape[0], c * m, 1)
            k = _kernels.depthwise(x) if xp is np and d <= 3 and (b is None or b.dtype == x.dtype) else None
            if k is not None:   # compiled (kernels.py): straight from x, the bias added in the same pass
                self.direct = k
                return self._direct_forward(k, xp.ascontiguousarray(x), w3, b, w.shape, out)
            y = self._flat_forward(x, w3, w.shape, kernel, out)
        else:
            xpd = _pad(xp, x, self.pads)
            y = xp.zeros((m, x.shape[0]) + out + (c,), dtype=x.dtype)       # multiplier first: contiguous slices
            for j, off in enumerate(np.ndindex(*kernel)):
                v = self._view(xpd, off, out)
                for k in range(m):
                    y[k] += v * w3[j, :, k]
            self.meta = (x.shape, xpd.shape, out)
            self.saved = (xpd if self.needs_grad[1] else None, w3, w.shape)
            y = xp.moveaxis(y, 0, -1).reshape((x.shape[0],) + out + (c * m,))
        if b is not None:    # (y is this op's own array)
            y += b
        return y

    def _geometry(self, xshape, out, wshape):
        """The direct kernels' int64 geometry (kernel_loops.depthwise_direct): the input's spatial sizes and
        channels, the output's sizes, the kernel's, the strides, dilations and padding before, three of each
        (1-D and 2-D as 3-D, leading axes of one)."""
        d = len(out)
        lead = 3 - d

        def three(values, fill=1):
            return (fill,) * lead + tuple(int(v) for v in values)
        return np.array(three(xshape[1:-1]) + (int(xshape[-1]),) + three(out) + three(wshape[:d]) + three(self.stride)
                        + three(self.dilation) + three((p[0] for p in self.pads), 0), np.int64)

    def _direct_forward(self, k, x, w3, b, wshape, out):
        """The output through the compiled direct kernel, output rows (every axis but the last spatial one)
        shared over lamina's threads: no padded copy, only the output's positions computed, the bias added
        to each row while it is in cache."""
        c = x.shape[-1]
        geo = self._geometry(x.shape, out, wshape)
        wt = np.tile(w3[:, :, 0], (1, out[-1]))              # (K, OW * C): each offset's weights along a row
        bt = np.tile(b, out[-1]) if b is not None else np.zeros(0, x.dtype)
        y = np.empty((x.shape[0],) + tuple(out) + (c,), dtype=x.dtype)
        rows = y.size // (out[-1] * c)
        self.meta = (x.shape, geo, wt, out)
        self.saved = (x if self.needs_grad[1] else None, w3, wshape)
        xf, yf = x.reshape(-1), y.reshape(-1)
        width = min(rows, _threads.split_width(y.size * wt.shape[0], _SPLIT_DEPTHWISE))
        if width > 1:
            _threads.run_split([lambda r=r: k.depthwise_direct(xf, wt, bt, yf, geo, *r)
                                for r in _threads.ranges(rows, width)])
        else:
            k.depthwise_direct(xf, wt, bt, yf, geo, 0, rows)
        return y

    def _direct_backward(self, gy):
        """Input, weight and bias gradients through the compiled direct kernels (each thread a share of the
        input rows and of the weight gradient's chunks, in one handoff). The weight gradient adds fixed chunks
        of output rows in order: the same numbers on any number of threads."""
        x, w3, wshape = self.saved
        xshape, geo, wt, out = self.meta
        k = self.direct
        gy = np.ascontiguousarray(gy, dtype=wt.dtype)
        gf = gy.reshape(-1)
        c, K = xshape[-1], wt.shape[0]
        need_x, need_w, need_b = self.needs_grad[0], self.needs_grad[1], len(self.needs_grad) > 2 and self.needs_grad[2]
        gx = np.empty(xshape, dtype=gy.dtype) if need_x else None
        xrows = int(np.prod(xshape[:-2]))
        per = out[-1] * c
        orows = gy.size // per
        chunk = max(1, _DIRECT_CHUNK // per)
        chunks = -(-orows // chunk)
        parts = np.empty((chunks, K + bool(need_b), c), dtype=gy.dtype) if need_w else None

        def share(x_range, w_range):
            if gx is not None:
                k.depthwise_direct_grad_input(gf, wt, gx.reshape(-1), geo, *x_range)
            if parts is not None:
                acc = np.empty(parts.shape[1:2] + (per,), dtype=gy.dtype)
                k.depthwise_direct_grad_weight(x.reshape(-1), gf, acc, parts, geo, chunk, *w_range)

        width = min(max(xrows, chunks), _threads.split_width(gy.size * K * 2, _SPLIT_DEPTHWISE_BACKWARD))
        if width > 1:   # (fewer chunks than threads, or rows: the short list's threads take an empty range)
            _threads.run_split([lambda a=a, b=b: share(a, b) for a, b in itertools.zip_longest(
                _threads.ranges(xrows, width), _threads.ranges(chunks, width), fillvalue=(0, 0))])
        else:
            share((0, xrows), (0, chunks))
        gw = gb = None
        if parts is not None:
            sums = parts.sum(axis=0)
            gw = sums[:K].reshape(wshape)
            gb = sums[K] if need_b else None
        elif need_b:
            gb = gy.reshape(-1, c).sum(axis=0)
        m = wshape[-1]
        if gx is not None and m > 1:   # the input's channels were repeated M times: their gradients add up
            gx = gx.reshape(gx.shape[:-1] + (c // m, m)).sum(axis=-1)
        return gx, gw, gb

    def _view(self, a, off, out):
        return a[(slice(None),) + tuple(
            slice(o * dl, o * dl + st * (n - 1) + 1, st) for o, dl, st, n in zip(off, self.dilation, self.stride, out))]

    def _flat_layout(self, xshape, kernel, c):
        """Flat geometry. The padded input (N, P..., C) is split into its stride phases: along an axis of stride
        s, phase a holds positions u*s + a, a grid of Q = ceil(P / s) positions (zeros past the end); the
        phases lie one after another in one flat array, ``length`` entries apart. Kernel offset k (padded
        position o*s + k*dl) reads phase (k*dl mod s) at grid position o + (k*dl div s): a constant shift of
        the flat output index, so each offset is again one contiguous slice (at stride 1 there is one phase,
        the padded input itself). Returns the K offsets, the grid shape (N, Q..., C), the positions computed
        per phase (a multiple of the block), the block, the row width, and the phases."""
        padded = tuple(n + a + b for n, (a, b) in zip(xshape[1:-1], self.pads))
        grid = (xshape[0],) + tuple(-(-p // st) for p, st in zip(padded, self.stride)) + (c,)
        strides = np.cumprod((1,) + grid[:0:-1])[::-1]     # flat element strides of the grid's axes
        phases = list(np.ndindex(*self.stride))
        row = c * max(1, _FLAT_ROW // c)
        total = int(np.prod(grid))
        # NumPy: blocks that stay in cache across the K passes; a device: the whole grid as one block (a
        # fixed 2^26 there made a (1, 4, 5, 3, 2) input allocate ~2 GB of tiled weights and zeros)
        block = row * (max(1, _FLAT_BLOCK // row) if self.xp is np else -(-total // row))
        length = -(-total // block) * block
        offs = []
        for off in np.ndindex(*kernel):
            q = [o * dl for o, dl in zip(off, self.dilation)]
            ph = phases.index(tuple(v % st for v, st in zip(q, self.stride)))
            offs.append(ph * length + int(sum((v // st) * sd for v, st, sd in zip(q, self.stride, strides[1:-1]))))
        return offs, grid, length, block, row, phases

    def _phase_slices(self, xshape, phase):
        """(slices of x, slices of the grid) pairing each input position that falls in stride phase ``phase``
        with its grid position: padded position u*s + a is input position u*s + a - (padding before)."""
        xs, gs = [slice(None)], [slice(None)]
        for n, (before, _), a, st in zip(xshape[1:-1], self.pads, phase, self.stride):
            u0 = max(0, -(-(before - a) // st))
            i0 = u0 * st + a - before
            count = max(0, -(-(n - i0) // st))
            xs.append(slice(i0, i0 + st * (count - 1) + 1, st) if count else slice(0, 0))
            gs.append(slice(u0, u0 + count))
        return tuple(xs), tuple(gs)

    def _flat_forward(self, x, w3, wshape, kernel, out):
        """y over every grid position (flat, valid where the window fits), then cropped:
        y_flat[p] = sum_k x_flat[p + off_k] * w_k[p mod C]."""
        xp = self.xp
        c = w3.shape[1]
        offs, grid, length, block, row, phases = self._flat_layout(x.shape, kernel, c)
        # the phases of the padded input, flat, zeros past the end: room for every phase and the largest shift
        span = (len(phases) - 1) * length + max(o % length for o in offs)
        xf = xp.zeros(length + span, dtype=x.dtype)
        for i, ph in enumerate(phases):  # (one phase at stride 1: x into the padded grid)
            xs, gs = self._phase_slices(x.shape, ph)
            self._padded(xf[i * length:], grid)[gs] = x[xs]
        self.meta = (x.shape, grid, out, offs, length, block, row, phases, span)
        self.saved = (xf if self.needs_grad[1] else None, w3, wshape)
        wts = xp.tile(w3[:, :, 0], (1, row // c))           # (K, row): each offset's weights along a row
        yf = xp.empty(length, dtype=x.dtype)

        def blocks(lo, hi, many=1):  # output blocks lo:hi, ``many`` at a time (each reads xf only, writes
            step = block * many         # its own slice of yf)
            tmp = xp.empty(step, dtype=x.dtype).reshape(-1, row)
            for b0 in range(lo * block, hi * block, step):
                n = min(step, hi * block - b0)
                yb = yf[b0:b0 + n].reshape(-1, row)
                for j, o in enumerate(offs):
                    xb = xf[b0 + o:b0 + o + n].reshape(-1, row)
                    if j == 0:
                        xp.multiply(xb, wts[j], out=yb)
                    else:
                        yb += xp.multiply(xb, wts[j], out=tmp[:n // row])
        nblocks = length // block
        width = min(nblocks, _threads.split_width(length * len(offs), _SPLIT_DEPTHWISE)) if xp is np else 1
        if width > 1:  # over lamina's threads by blocks, two at a time (half the NumPy calls, each a GIL
            # handoff): the same numbers
            _threads.run_split([lambda r=r: blocks(*r, many=2) for r in _threads.ranges(nblocks, width)])
        else:
            blocks(0, nblocks)
        return xp.ascontiguousarray(self._crop_out(yf, grid, out))

    @staticmethod
    def _padded(flat, padded):
        """A flat array's first prod(padded) entries as the (N, P..., C) array (a view)."""
        return flat[:int(np.prod(padded))].reshape(padded)

    def _crop_out(self, flat, grid, out):
        """The (N, O..., C) valid output positions of a flat array in grid coordinates (a view)."""
        return self._padded(flat, grid)[(slice(None),) + tuple(slice(0, n) for n in out)]

    def _flat_backward(self, gy):
        """Adjoint of _flat_forward, on gy placed in grid coordinates (zeros elsewhere): per offset k,
        dw_k = sum_p x_flat[p + off_k] g_flat[p], and dx_flat[q] = sum_k g_flat[q - off_k] w_k (a gather at
        each offset's shift, every dx block written once, so blocks run on lamina's threads like the
        forward's); each phase of dx goes back to its input positions (the padding's are dropped). The
        weight gradient's per-block sums are added in block order: the same numbers on any thread count."""
        xp = self.xp
        xf, w3, wshape = self.saved
        xshape, grid, out, offs, length, block, row, phases, span = self.meta
        c, K = w3.shape[1], len(offs)
        gpad = xp.zeros(length + 2 * block, dtype=gy.dtype)  # g_flat with a block of zeros each side: the gather
        gf = gpad[block:block + length]                      # reads windows of it that overlap it
        self._crop_out(gf, grid, out)[...] = gy
        total = length + span                               # dx's flat extent: every phase and shift
        gx = xp.empty(total, dtype=gy.dtype) if self.needs_grad[0] else None
        parts = xp.empty((length // block, K, row), dtype=gy.dtype) if self.needs_grad[1] else None
        wlong = xp.tile(w3[:, :, 0], (1, block // c)) if gx is not None else None  # (K, block): w_k by channel

        def weight_blocks(lo, hi):
            tmp = xp.empty((block // row, row), dtype=gy.dtype)
            for b in range(lo, hi):
                b0 = b * block
                gb = gf[b0:b0 + block].reshape(-1, row)
                for j, o in enumerate(offs):
                    xp.multiply(xf[b0 + o:b0 + o + block].reshape(-1, row), gb, out=tmp)
                    tmp.sum(axis=0, out=parts[b, j])

        def input_blocks(lo, hi):  # (offsets are multiples of C: g_flat[q - off_k] has q's channel)
            tmp = xp.empty(block, dtype=gy.dtype)
            for b in range(lo, hi):
                q0 = b * block
                n = min(block, total - q0)
                gxb = gx[q0:q0 + n]
                first = True
                for j, o in enumerate(offs):
                    if q0 - o + n <= 0 or q0 - o >= length:  # reads only zeros (at a stride: another phase's
                        continue                             # offset)
                    g = gpad[block + q0 - o:block + q0 - o + n]
                    if first:
                        xp.multiply(g, wlong[j, :n], out=gxb)
                        first = False
                    else:
                        gxb += xp.multiply(g, wlong[j, :n], out=tmp[:n])
                if first:
                    gxb[...] = 0

        def share(w_range, x_range):
            if parts is not None:
                with np.errstate(invalid="ignore"):   # (0 * inf outside the windows: redone below)
                    weight_blocks(*w_range)
            if gx is not None:
                input_blocks(*x_range)

        wblocks, xblocks = length // block, -(-total // block)    # (xblocks >= wblocks)
        width = min(wblocks, _threads.split_width(length * K * 2, _SPLIT_DEPTHWISE_BACKWARD)) if xp is np else 1
        if width > 1:  # each thread a share of both (one handoff)
            _threads.run_split([lambda w=w, x=x: share(w, x) for w, x in zip(_threads.ranges(wblocks, width),
                                                                            _threads.ranges(xblocks, width))])
        else:
            share((0, wblocks), (0, xblocks))
        gws = None if parts is None else parts.sum(axis=0)
        gw = None if gws is None else gws.reshape(len(offs), -1, c).sum(axis=1).reshape(wshape)
        if gw is not None and not bool(xp.isfinite(gw).all()):
            # the flat products also pair grid positions outside the output (gradient 0) with input values that
            # offset never reads: an inf or NaN there made 0 * inf = NaN in a gradient that is finite
            gw = self._windowed_weight_grad(xf, gy).reshape(wshape)
        if gx is not None:
            if len(phases) == 1:
                gx = _crop(self._padded(gx, grid), self.pads, xshape[1:-1])
            else:  # every input position lies in exactly one phase
                gxf, gx = gx, xp.empty(xshape[:-1] + (c,), dtype=gx.dtype)
                for i, ph in enumerate(phases):
                    xs, gs = self._phase_slices(xshape, ph)
                    gx[xs] = self._padded(gxf[i * length:], grid)[gs]
            m = wshape[-1]
            if m > 1:  # the input's channels were repeated M times: their gradients add up
                gx = gx.reshape(gx.shape[:-1] + (c // m, m)).sum(axis=-1)
        return gx, gw

    def _windowed_weight_grad(self, xf, gy):
        """The weight gradient (K, C) from the flat padded input's phases put back in place, per kernel offset
        over that offset's window only (_flat_backward's way where the flat products met a non-finite input)."""
        xp = self.xp
        xshape, grid, out, offs, length, block, row, phases, span = self.meta
        x = xp.empty(xshape, dtype=xf.dtype)
        for i, ph in enumerate(phases):
            xs, gs = self._phase_slices(xshape, ph)
            x[xs] = self._padded(xf[i * length:], grid)[gs]
        xpd, lead = _pad(xp, x, self.pads), tuple(range(len(out) + 1))
        kernel = self.saved[2][:len(out)]
        return xp.stack([(self._view(xpd, off, out) * gy).sum(axis=lead) for off in np.ndindex(*kernel)])

    def backward(self, gy):
        gb = None
        if len(self.needs_grad) > 2 and self.needs_grad[2] and self.direct is None:
            gb = gy.sum(axis=tuple(range(gy.ndim - 1)))
        if self.direct is not None:
            return self._direct_backward(gy)[:len(self.needs_grad)]
        if self.flat:
            return (self._flat_backward(gy) + (gb,))[:len(self.needs_grad)]
        xp = self.xp
        xpd, w3, wshape = self.saved
        xshape, pshape, out = self.meta
        d = len(out)
        kernel, (c, m) = wshape[:d], wshape[d:]
        g = xp.ascontiguousarray(xp.moveaxis(gy.reshape(gy.shape[:-1] + (c, m)), -1, 0))  # (M, N, O..., C)
        lead = tuple(range(d + 1))
        gx = xp.zeros(pshape, dtype=gy.dtype) if self.needs_grad[0] else None
        gw = xp.empty_like(w3) if self.needs_grad[1] else None
        for j, off in enumerate(np.ndindex(*kernel)):
            v = self._view(xpd, off, out) if gw is not None else None
            win = self._view(gx, off, out) if gx is not None else None
            for k in range(m):
                if gw is not None:
                    gw[j, :, k] = (g[k] * v).sum(axis=lead)
                if win is not None:
                    win += g[k] * w3[j, :, k]
        return (None if gx is None else _crop(gx, self.pads, xshape[1:-1]),
                None if gw is None else gw.reshape(wshape), gb)[:len(self.needs_grad)]


class ConvTransposeND(Op):
    """N-d transposed convolution, channels last: x (N, S..., C), w (K..., O, C) (Keras's layout).

    Forward: every input position adds x @ w[k]^T at position s*stride + k*dilation of a full canvas
    (col2im of x @ W2^T, W2 = w.reshape(K*O, C)), then the Keras output window is cut from it
    (zeros where the window runs past the canvas).
    Backward: dcols = im2col(dy placed on the canvas); dx = dcols @ W2; dw = dcols^T x.
    """

    half_via_float32 = True  # float16 through float32 BLAS (tensor.Op)
    _depth = None            # 3-D: (the per-depth-offset Conv2DTranspose ops, their depth ranges, shapes)
    by_depth = True          # 3-D through 2-D transposed convolutions (False: the general way, which tests compare)

    def forward(self, x, w):
        xp = self.xp
        d = x.ndim - 2
        if d == 3 and xp is np and x.size and w.size and self.by_depth:
            return self._depth_forward(x, w)
        kernel, (o, c) = w.shape[:d], w.shape[d:]
        size = x.shape[1:-1]
        full = tuple((s - 1) * st + (k - 1) * dl + 1 for s, k, st, dl in zip(size, kernel, self.stride, self.dilation))
        w2 = w.reshape(-1, c)
        cols = (x.reshape(-1, c) @ w2.T).reshape(x.shape[:-1] + tuple(kernel) + (o,))
        canvas = col2im(xp, cols, (x.shape[0],) + full + (o,), kernel, size, self.stride, self.dilation)
        y = xp.zeros((x.shape[0],) + tuple(n for _, n in self.window) + (o,), dtype=x.dtype)
        src, dst = self._slices(full)
        y[dst] = canvas[src]
        self.meta = (x.shape, full)
        self.saved = (x if self.needs_grad[1] else None, w)
        return y

    def _slices(self, full):
        src, dst = [slice(None)], [slice(None)]
        for (b, n), f in zip(self.window, full):
            m = max(min(n, f - b), 0)
            src.append(slice(b, b + m))
            dst.append(slice(0, m))
        return tuple(src), tuple(dst)

    def _depth_forward(self, x, w):
        """3-D as one 2-D transposed convolution (ops.convolution.Conv2DTranspose: its col2im, compiled gather and
        thin layout) over the N * D depth slices with the KD kernel slices side by side along its output channels
        ((KH, KW, KD * O, C)), kernel slice a's outputs then added at output depths a dd + i sd - b of the window;
        backward the op's from dy's matching slices placed side by side the same way. (8, 16, 16, 16, 16) -> 8,
        3x3x3 stride 2 'same', forward + backward on the 2-core Zen 2: the general way 69 ms, KD 2-D transposed
        convolutions 33, one over the stacked kernel slices 24 (PyTorch 16-22; the general way's whole 3-D col2im
        and im2col were the time)."""
        from .convolution import Conv2DTranspose   # (the same floor, imported where used)
        n, depth = x.shape[:2]
        kd, o = w.shape[0], w.shape[3]
        sd, dd = self.stride[0], self.dilation[0]
        b, od = self.window[0]
        x4 = np.ascontiguousarray(x).reshape((n * depth,) + x.shape[2:])
        op = Conv2DTranspose(stride=tuple(self.stride[1:]), dilation=tuple(self.dilation[1:]),
                             window=tuple(self.window[1:]))
        op.xp, op.needs_grad = np, (self.needs_grad[0], self.needs_grad[1], False)
        ys = op.forward(x4, _depth_stacked(w), None)
        ys = ys.reshape((n, depth) + ys.shape[1:3] + (kd, o))
        y = np.zeros((n, od) + ys.shape[2:4] + (o,), ys.dtype)
        ranges = []
        for a in range(kd):
            # the slices lo:hi whose output depths a dd + i sd - b fall in the window
            lo = max(0, -(-(b - a * dd) // sd))
            hi = min(depth, -(-(od + b - a * dd) // sd))
            p = a * dd + lo * sd - b   # (the first of them's output depth)
            if hi > lo:
                y[:, p:p + (hi - lo - 1) * sd + 1:sd] += ys[:, lo:hi, :, :, a]
            ranges.append((lo, hi, p))
        self._depth = (op, ranges, x.shape, w.shape)
        return y

    def _depth_backward(self, gy):
        op, ranges, xshape, wshape = self._depth
        n, depth = xshape[:2]
        kd, o = wshape[0], wshape[3]
        sd = self.stride[0]
        gs = np.zeros((n, depth) + gy.shape[2:4] + (kd, o), gy.dtype)
        for a, (lo, hi, p) in enumerate(ranges):
            if hi > lo:
                gs[:, lo:hi, :, :, a] = gy[:, p:p + (hi - lo - 1) * sd + 1:sd]
        gx4, gw2, _ = op.backward(gs.reshape((n * depth,) + gy.shape[2:4] + (kd * o,)))
        gx = None if gx4 is None else gx4.reshape(xshape)
        gw = None if gw2 is None else _depth_unstacked(gw2, wshape)
        return gx, gw

    def backward(self, gy):
        xp = self.xp
        if self._depth is not None:
            return self._depth_backward(gy)
        x, w = self.saved
        xshape, full = self.meta
        d = len(full)
        kernel, (o, c) = w.shape[:d], w.shape[d:]
        gfull = xp.zeros((xshape[0],) + full + (o,), dtype=gy.dtype)
        src, dst = self._slices(full)
        gfull[src] = gy[dst]
        gcols = xp.ascontiguousarray(window_view(xp, gfull, kernel, xshape[1:-1], self.stride, self.dilation))
        gcols = gcols.reshape(-1, int(np.prod(kernel)) * o)
        w2 = w.reshape(-1, c)
        gx = (gcols @ w2).reshape(xshape) if self.needs_grad[0] else None
        gw = mm_tn(xp, gcols, x.reshape(-1, c)).reshape(w.shape) if self.needs_grad[1] else None
        return gx, gw


def _plane_pool(cls, op):
    """The 2-D pooling op (ops.convolution.MaxPool2D / AvgPool2D) for the depth slices of a 3-D pooling op's input
    (N, D, H, W, C) as (N * D, H, W, C), with op's height and width pool, stride and pads."""
    from . import convolution as cv   # (the same floor, imported where used)
    inner = getattr(cv, cls)(pool=op.pool[1:], stride=op.stride[1:], pads=op.pads[1:])
    inner.xp, inner.needs_grad = op.xp, op.needs_grad[:1]
    return inner


def _depth_planes(op, cls, x, fill):
    """A 3-D pooling op's first step: the 2-D pooling op ``cls`` over x's depth slices, its outputs padded along
    depth with ``fill`` by op's depth pads, and their views at each depth offset of op's windows:
    (the 2-D op, the padded outputs (N, D', OH, OW, C), the views)."""
    n, depth = x.shape[:2]
    inner = _plane_pool(cls, op)
    m = inner.forward(x.reshape((n * depth,) + x.shape[2:]))
    m = _pad(op.xp, m.reshape((n, depth) + m.shape[1:]), op.pads[:1] + ((0, 0),) * 2, fill)
    od = (m.shape[1] - op.pool[0]) // op.stride[0] + 1
    return inner, m, _depth_windows(m, op.pool[0], op.stride[0], od)


def _through_planes(op, inner, gm, xshape):
    """A 3-D pooling op's input gradient from gm, the gradient of its padded depth slices' 2-D pooling (as
    _depth_planes made them): the depth padding cropped, then the 2-D op's backward."""
    front = op.pads[0][0]
    gm = op.xp.ascontiguousarray(gm[:, front:front + xshape[1]])
    return inner.backward(gm.reshape((-1,) + gm.shape[2:])).reshape(xshape)


def _depth_windows(a, pool, stride, out):
    """The views a[:, k : k + stride (out - 1) + 1 : stride] of depth offset k = 0..pool-1 of a (N, D, ...) array
    (already padded along depth): each (N, out, ...)."""
    return [a[:, k:k + stride * (out - 1) + 1:stride] for k in range(pool)]


class MaxPoolND(Op):
    """Max over each window (-inf padding, never chosen). Backward: dy to the first maximum of each
    window (row-major order within the window, as torch).

    3-D: the 2-D max pooling of every depth slice (ops.convolution.MaxPool2D: compiled where built, with its note
    of each window's first maximum), then the maximum over each window's depth offsets of those, noting the first
    offset that holds it: the first maximum in the window's row-major order (depth first), as the general way
    below. Backward routes dy to the noted depth slice, then through the 2-D pooling's backward. (2x2x2 pools of a
    (8, 16, 16, 16, 16) float32 batch, forward and backward on the 2-core Zen 2: 5.4 -> 1.4 ms; PyTorch 1.6-1.75.)
    A window holding NaN is NaN, its dy routed by MaxPool2D's rule (the general way's argmax picks the NaN)."""

    half_via_float32 = True  # float16 in float32 (tensor.Op): NumPy's float16 comparisons have no SIMD loops
    _planes = None           # 3-D: (the 2-D pooling op of the depth slices, the depth note, shapes)
    by_depth = True          # 3-D through the depth slices' 2-D pooling (False: the general way, which tests compare)

    def forward(self, x):
        xp = self.xp
        d = x.ndim - 2
        if d == 3 and x.dtype.kind == "f" and self.by_depth:
            return self._by_depth(x)
        xpd = _pad(xp, x, self.pads, -xp.inf)
        out = _out_size(xpd.shape[1:-1], self.pool, self.stride, (1,) * d)
        view = window_view(xp, xpd, self.pool, out, self.stride, (1,) * d)
        flat = view.reshape((x.shape[0],) + out + (int(np.prod(self.pool)), x.shape[-1]))   # (N, O..., K, C)
        arg = flat.argmax(axis=-2)
        self.meta = (x.shape, xpd.shape, out)
        self.saved = (arg,)
        return xp.take_along_axis(flat, arg[..., None, :], axis=-2)[..., 0, :]

    def _by_depth(self, x):
        xp = self.xp
        inner, m, views = _depth_planes(self, "MaxPool2D", x, -xp.inf)
        y = views[0].copy()
        note = xp.zeros(y.shape, np.uint8) if self.needs_grad[0] else None
        above = xp.empty(y.shape, bool) if note is not None else None
        for k, v in enumerate(views[1:], 1):
            if note is not None:   # (an offset noted where it beats the maximum so far: the first one stays)
                xp.greater(v, y, out=above)
                note[above] = k
            xp.maximum(y, v, out=y)
        self._planes = (inner, note, x.shape, m.shape)
        return y

    def backward(self, gy):
        xp = self.xp
        if self._planes is not None:
            inner, note, xshape, mshape = self._planes
            gm = xp.zeros(mshape, gy.dtype)
            for k, v in enumerate(_depth_windows(gm, self.pool[0], self.stride[0], gy.shape[1])):
                v += gy * (note == k)
            return _through_planes(self, inner, gm, xshape)
        (arg,) = self.saved
        xshape, pshape, out = self.meta
        kp = int(np.prod(self.pool))
        onehot = arg[..., None, :] == xp.arange(kp).reshape(kp, 1)
        cols = (onehot * gy[..., None, :]).reshape((xshape[0],) + out + tuple(self.pool) + (xshape[-1],))
        g = col2im(xp, cols.astype(gy.dtype, copy=False), pshape, self.pool, out, self.stride, (1,) * len(out))
        return _crop(g, self.pads, xshape[1:-1])


class AvgPoolND(Op):
    """Mean of the real (non-padded) entries of each window. Backward: dy / count to every entry.

    3-D: the 2-D average pooling of every depth slice (ops.convolution.AvgPool2D: each window's mean over its real
    entries), then the mean of those over each window's real depth offsets (a mean of equally weighted means: the
    window's mean); backward the reverse. (2x2x2 pools of a (8, 16, 16, 16, 16) float32 batch, forward and
    backward: 2.8 -> 1.3 ms; PyTorch 1.2-1.3.)"""

    half_via_float32 = True  # float16 in float32 (tensor.Op): NumPy's float16 comparisons have no SIMD loops
    _planes = None           # 3-D: (the 2-D pooling op of the depth slices, the depth counts, shapes)
    by_depth = True          # as MaxPoolND's

    def forward(self, x):
        xp = self.xp
        d = x.ndim - 2
        if d == 3 and x.dtype.kind == "f" and self.by_depth:
            return self._by_depth(x)
        ones = (1,) * d
        xpd = _pad(xp, x, self.pads)
        out = _out_size(xpd.shape[1:-1], self.pool, self.stride, ones)
        axes = tuple(range(1 + d, 1 + 2 * d))
        s = window_view(xp, xpd, self.pool, out, self.stride, ones).sum(axis=axes)
        mask = _pad(xp, xp.ones((1,) + x.shape[1:-1] + (1,), dtype=x.dtype), self.pads)
        count = window_view(xp, mask, self.pool, out, self.stride, ones).sum(axis=axes)
        self.meta = (x.shape, xpd.shape, out, count)
        return (s / count).astype(x.dtype, copy=False)

    def _by_depth(self, x):
        xp = self.xp
        inner, m, views = _depth_planes(self, "AvgPool2D", x, 0)
        y = views[0].copy()
        for v in views[1:]:
            y += v
        # each window's real depth offsets: the same sums over a padded line of ones
        od = y.shape[1]
        ones = _pad(np, np.ones((1, x.shape[1], 1), x.dtype), self.pads[:1])
        count = xp.asarray(sum(_depth_windows(ones, self.pool[0], self.stride[0], od)).reshape(
            (1, od) + (1,) * (x.ndim - 2)))
        y /= count
        self._planes = (inner, count, x.shape, m.shape)
        return y

    def backward(self, gy):
        xp = self.xp
        if self._planes is not None:
            inner, count, xshape, mshape = self._planes
            g = gy / count
            gm = xp.zeros(mshape, g.dtype)
            for v in _depth_windows(gm, self.pool[0], self.stride[0], gy.shape[1]):
                v += g
            return _through_planes(self, inner, gm, xshape)
        xshape, pshape, out, count = self.meta
        d = len(out)
        g = gy / count
        cols = xp.broadcast_to(g.reshape(g.shape[:-1] + (1,) * d + g.shape[-1:]),
                               g.shape[:-1] + tuple(self.pool) + g.shape[-1:])
        return _crop(col2im(xp, cols, pshape, self.pool, out, self.stride, (1,) * d), self.pads, xshape[1:-1])


# ----------------------------------------------------------------------------- adaptive pooling
def adaptive_bounds(n_in, n_out):
    """torch's adaptive windows along one axis: [floor(i n / o), ceil((i + 1) n / o)) for i < o."""
    i = np.arange(n_out)
    start = (i * n_in) // n_out
    end = -((-(i + 1) * n_in) // n_out)
    return start, end


class AdaptiveMaxAxis(Op):
    """Max over torch's adaptive windows along the LAST axis: (..., L) -> (..., out).
    A window gathers at most ceil(L/out)+1 entries (the index clamped inside the window, repeats are
    harmless for a max). Backward: dy to the first maximum of each window."""

    def forward(self, x):
        xp = self.xp
        n = x.shape[-1]
        start, end = adaptive_bounds(n, self.size)
        width = int((end - start).max())
        idx = np.minimum(start[:, None] + np.arange(width)[None, :], end[:, None] - 1)   # (out, W)
        idx = xp.asarray(idx)
        g = x[..., idx]                                                      # (..., out, W)
        am = g.argmax(axis=-1)
        self.saved = (xp.take_along_axis(idx[None], am.reshape(-1, self.size, 1), axis=-1)[..., 0]
                      .reshape(am.shape),)
        self.n = n
        return xp.take_along_axis(g, am[..., None], axis=-1)[..., 0]

    def backward(self, gy):
        xp = self.xp
        (src,) = self.saved
        onehot = src[..., None] == xp.arange(self.n)                        # (..., out, L)
        return (onehot * gy[..., None]).sum(axis=-2).astype(gy.dtype, copy=False)


# ----------------------------------------------------------------------------- unfold / fold (NCHW)
def _unfold_array(xp, x, kernel, dilation, padding, stride):
    """(N, C, H, W) -> (N, C*KH*KW, L): torch's unfold (im2col, channel-major rows)."""
    n, c = x.shape[:2]
    xl = _pad(xp, xp.moveaxis(x, 1, -1), tuple((p, p) for p in padding))
    out = _out_size(xl.shape[1:3], kernel, stride, dilation)
    v = window_view(xp, xl, kernel, out, stride, dilation)                  # (N, OH, OW, KH, KW, C)
    return xp.ascontiguousarray(v.transpose(0, 5, 3, 4, 1, 2)).reshape(n, c * kernel[0] * kernel[1], -1), out


def _fold_array(xp, cols, size, kernel, dilation, padding, stride):
    """The adjoint of ``_unfold_array``: (N, C*KH*KW, L) -> (N, C, H, W), overlapping blocks summed."""
    n = cols.shape[0]
    kh, kw = kernel
    c = cols.shape[1] // (kh * kw)
    padded = tuple(s + 2 * p for s, p in zip(size, padding))
    out = _out_size(padded, kernel, stride, dilation)
    blocks = cols.reshape(n, c, kh, kw, out[0], out[1]).transpose(0, 4, 5, 2, 3, 1)
    g = col2im(xp, blocks, (n,) + padded + (c,), kernel, out, stride, dilation)
    g = _crop(g, tuple((p, p) for p in padding), size)
    return xp.moveaxis(g, -1, 1)


class Unfold(Op):
    """Sliding blocks of an NCHW image as columns. Backward: fold (col2im) of the gradient."""

    def forward(self, x):
        y, _ = _unfold_array(self.xp, x, self.kernel, self.dilation, self.padding, self.stride)
        self.size = x.shape[2:]
        return y

    def backward(self, gy):
        return self.xp.ascontiguousarray(
            _fold_array(self.xp, gy, self.size, self.kernel, self.dilation, self.padding, self.stride))


class Fold(Op):
    """Columns summed back into an NCHW image (overlaps add up). Backward: unfold of the gradient."""

    def forward(self, x):
        return self.xp.ascontiguousarray(
            _fold_array(self.xp, x, self.size, self.kernel, self.dilation, self.padding, self.stride))

    def backward(self, gy):
        return _unfold_array(self.xp, gy, self.kernel, self.dilation, self.padding, self.stride)[0]


# ----------------------------------------------------------------------------- CTC
def _logsumexp(xp, *arrays):
    """log(sum(exp(a))) over the given same-shape arrays, -inf safe (all -inf gives -inf, not NaN)."""
    m = arrays[0]
    for a in arrays[1:]:
        m = xp.maximum(m, a)
    ms = xp.where(xp.isfinite(m), m, 0)
    s = sum(xp.exp(a - ms) for a in arrays)
    with np.errstate(divide="ignore"):
        return xp.log(s) + ms


class CTCLoss(Op):
    """Negative log-likelihood of each target under CTC, from log-probabilities lp (B, T, C).

    The target l (length U) is extended with blanks to l' (length 2U+1). Forward variables (alpha, with
    the emission at t) and backward ones (beta, without it) are computed in log space, all samples and
    positions at once, one recursion step per frame; frames past a sample's output length freeze.
    loss = -log P, P = alpha_{T-1}(2U) + alpha_{T-1}(2U-1).
    Backward: d loss / d lp[t, c] = -sum_{s: l'_s = c} exp(alpha_t(s) + beta_t(s) - log P) for t < T_b,
    0 after; an impossible target (P = 0, loss inf) gets a zero gradient.
    """

    def forward(self, lp):
        xp = self.xp
        labels, tl, ol, blank = self.labels, self.target_length, self.output_length, self.blank
        B, T, C = lp.shape
        U = labels.shape[1]
        S = 2 * U + 1
        ext = xp.full((B, S), blank, dtype=labels.dtype)
        ext[:, 1::2] = labels
        s_idx = xp.arange(S)
        valid = s_idx[None, :] < (2 * tl[:, None] + 1)
        skip = xp.zeros((B, S), dtype=bool)
        skip[:, 2:] = (ext[:, 2:] != blank) & (ext[:, 2:] != ext[:, :-2])
        e = xp.take_along_axis(lp, xp.broadcast_to(ext[:, None, :], (B, T, S)), axis=2)   # (B, T, S)
        neg = xp.asarray(-xp.inf, dtype=lp.dtype)
        alpha = xp.full((T, B, S), -xp.inf, dtype=lp.dtype)
        a = xp.full((B, S), -xp.inf, dtype=lp.dtype)
        a[:, 0] = e[:, 0, 0]
        if S > 1:
            a[:, 1] = xp.where(tl > 0, e[:, 0, 1], neg)
        a = xp.where(valid & (ol[:, None] > 0), a, neg)
        alpha[0] = a
        ninf1 = xp.full((B, 1), -xp.inf, dtype=lp.dtype)
        ninf2 = xp.full((B, 2), -xp.inf, dtype=lp.dtype)
        for t in range(1, T):
            a1 = xp.concatenate([ninf1, a[:, :-1]], axis=1)
            a2 = xp.where(skip, xp.concatenate([ninf2, a[:, :-2]], axis=1), neg)
            new = xp.where(valid, _logsumexp(xp, a, a1, a2) + e[:, t], neg)
            a = xp.where((t < ol)[:, None], new, a)
            alpha[t] = a
        end = xp.take_along_axis(a, (2 * tl)[:, None], axis=1)[:, 0]
        end1 = xp.where(tl > 0, xp.take_along_axis(a, xp.maximum(2 * tl - 1, 0)[:, None], axis=1)[:, 0], neg)
        logp = _logsumexp(xp, end, end1)
        self.saved = (alpha, e, ext, skip, valid, logp)
        return (-logp).astype(lp.dtype, copy=False)

    def backward(self, gy):
        xp = self.xp
        alpha, e, ext, skip, valid, logp = self.saved
        tl, ol = self.target_length, self.output_length
        T, B, S = alpha.shape
        C = self.num_classes
        neg = xp.asarray(-xp.inf, dtype=alpha.dtype)
        s_idx = xp.arange(S)[None, :]
        init = xp.where((s_idx == 2 * tl[:, None]) | (s_idx == 2 * tl[:, None] - 1), 0.0, neg).astype(alpha.dtype)
        init = xp.where(valid, init, neg)
        ninf1 = xp.full((B, 1), -xp.inf, dtype=alpha.dtype)
        ninf2 = xp.full((B, 2), -xp.inf, dtype=alpha.dtype)
        skip_next = xp.concatenate([skip[:, 2:], xp.zeros((B, 2), dtype=bool)], axis=1)   # may s jump to s+2
        ok = xp.isfinite(logp)
        lps = xp.where(ok, logp, 0)
        grad = xp.zeros((B, T, S), dtype=alpha.dtype)
        b = init
        for t in range(T - 1, -1, -1):
            if t < T - 1:
                be = b + e[:, t + 1]
                b1 = xp.concatenate([be[:, 1:], ninf1], axis=1)
                b2 = xp.where(skip_next, xp.concatenate([be[:, 2:], ninf2], axis=1), neg)
                rec = xp.where(valid, _logsumexp(xp, be, b1, b2), neg)
                b = xp.where((t < ol - 1)[:, None], rec, init)
            gamma = xp.exp(alpha[t] + b - lps[:, None])
            grad[:, t] = xp.where(((t < ol) & ok)[:, None], gamma, 0)
        onehot = (ext[:, :, None] == xp.arange(C)).astype(alpha.dtype)                 # (B, S, C)
        g = -xp.matmul(grad, onehot)                                                   # (B, T, C)
        return (g * gy[:, None, None]).astype(gy.dtype, copy=False)

