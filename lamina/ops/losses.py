"""Per-sample losses (Keras's loss *functions*): each reduces over the class / last axis only, never
over the batch (the Loss classes in ``lamina.losses`` do the batch reduction and sample weights).

The hot losses are fused ops with a hand-written backward, all numerically stable:
cross-entropy from logits works on log-softmax (never exp of a large logit), and from probabilities
follows Keras 3 exactly: normalise to sum 1, clip to [1e-7, 1 - 1e-7], take the log.
``y_true`` is normally a constant; where a gradient with respect to it is cheap it is given too
(soft targets in distillation), so every float input is differentiable.
"""
import math

import numpy as np

from .. import backend
from ..tensor import Op, Tensor, as_tensor
from . import math as _m
from . import manipulation as _s
from . import activations as _act
from . import cuda_kernels as _cuda_kernels
from . import kernels as _kernels
from .activations import _last_axis_rows, row_softmax
from .math import unbroadcast

__all__ = [
    "sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy",
    "mean_squared_error", "mean_absolute_error", "huber", "kl_divergence", "log_cosh", "hinge",
    "squared_hinge", "categorical_hinge", "mean_absolute_percentage_error", "mean_squared_logarithmic_error",
    "poisson",
]

EPSILON = 1e-7  # Keras's backend.epsilon()


# ----------------------------------------------------------------------------- input handling
def _pred(y_pred):
    y_pred = as_tensor(y_pred)
    if not np.issubdtype(y_pred.dtype, np.floating):
        y_pred = Tensor(y_pred.data.astype(backend.floatx()))
    return y_pred


def _true(y_true, y_pred):
    """y_true as a Tensor of y_pred's float dtype on y_pred's device (a Tensor that needs a gradient
    is kept as it is, cast if needed)."""
    if isinstance(y_true, Tensor):
        if y_true.dtype == y_pred.dtype:
            return y_true
        if y_true.requires_grad:
            return _m.cast(y_true, y_pred.dtype)
        y_true = y_true.data
    xp = backend.get_array_module(y_pred.data)
    a = y_true if backend.is_cupy_array(y_true) else np.asarray(y_true)
    if xp is not np and not backend.is_cupy_array(a):
        a = backend.to_device(a, xp)
    return Tensor(a.astype(y_pred.dtype, copy=False))


def _same_rank(t, p):
    """Keras's squeeze_or_expand_to_same_rank: fix a trailing axis of 1 on one side."""
    rt, rp = len(t.shape), len(p.shape)
    if rt == rp + 1 and t.shape[-1] == 1:
        t = _s.reshape(t, t.shape[:-1]) if rp != 1 else t
        p = _s.expand_dims(p, -1) if rp == 1 else p
    elif rp == rt + 1 and p.shape[-1] == 1:
        if rt == 1:
            t = _s.expand_dims(t, -1)
        else:
            p = _s.reshape(p, p.shape[:-1])
    return t, p


def _check_axis(axis, ndim, op):
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise ValueError(f"{op}: axis must be an int in [-{ndim}, {ndim}) for y_pred of rank {ndim}. "
                         f"Received: axis={axis!r}")
    return int(axis) % ndim


# ----------------------------------------------------------------------------- cross-entropies
class SparseCategoricalCrossentropy(Op):
    """-log p[label] over the class axis (last, after moving ``axis`` there).

    From logits: loss = logsumexp(x) - x[label]; dx = (softmax(x) - onehot) * g.
    From probabilities: q = clip(p / sum(p), eps, 1 - eps); loss = -log q[label];
    dp = (1 - onehot / qc[label]) * inrange / sum(p) * g (the normalisation's Jacobian included; qc, the
    clipped value, equals q wherever inrange is 1 and is never 0, so the gradient is finite everywhere).
    Entries whose label is ``ignore_class`` give 0 and no gradient.
    """

    def forward(self, y_pred):
        xp = self.xp
        x = _to_last(xp, y_pred, self.axis)
        labels, valid = self.labels, self.valid
        K = x.shape[-1]
        if self.from_logits:
            # as (R, K) rows: the label's logit picked, not a one-hot product summed (one pass less, and a logit
            # of -inf elsewhere in the row, a masked class, no longer made 0 * -inf = NaN of the loss); the
            # softmax kept for backward, normalised in place
            x2 = x.reshape(-1, K)
            lab = labels.reshape(-1)
            x2 = xp.ascontiguousarray(x2)
            e, m, s = row_softmax(xp, x2)   # compiled: the kernels' own exp (one launch on a GPU)
            loss = None if xp is np else _cuda_kernels.sce_loss(x2, lab, m, s)   # the pick and log in one launch
            if loss is None:
                loss = xp.log(s) - (x2[xp.arange(x2.shape[0]), lab] - m)
            loss = loss.reshape(labels.shape)
            self.saved = (e, lab, x.shape)
        else:
            total = x.sum(axis=-1, keepdims=True)
            # the label's probability picked (no (rows, classes) one-hot and product: 56 -> 12 ms forward and
            # backward at (2048, 5000) float32)
            q = xp.take_along_axis(x, labels[..., None], axis=-1) / total
            qc = xp.clip(q, EPSILON, 1.0 - EPSILON)
            loss = -xp.log(qc)[..., 0]
            inrange = ((q >= EPSILON) & (q <= 1.0 - EPSILON)).astype(x.dtype)
            # backward divides by the CLIPPED value: equal to q wherever inrange is 1, never 0 (a
            # probability of exactly 0 would give 0 / 0 = NaN, and NaN * 0 is still NaN)
            self.saved = (qc, total, inrange, labels, x.shape)
        if valid is not None:
            loss = loss * valid
        return loss.astype(y_pred.dtype, copy=False)

    def backward(self, g):
        xp = self.xp
        g = g[..., None] if self.valid is None else (g * self.valid)[..., None]
        if self.from_logits:
            soft, lab, shape = self.saved
            g2 = g.reshape(-1, 1)
            dx = None if xp is np else _cuda_kernels.sce_grad(soft, lab, xp.ascontiguousarray(g2[:, 0]))
            if dx is None:
                dx = soft * g2                                   # (softmax - onehot) g, the onehot's part picked
                rows = xp.arange(dx.shape[0])
                dx[rows, lab] = (soft[rows, lab] - 1.0) * g2[:, 0]
            dx = dx.reshape(shape)
        else:
            # (1 - onehot / qc) (inrange / total) g: the row's (inrange / total) g everywhere, and at the label
            # (1 - 1 / qc) times it, in that order (the same values as the one-hot formula)
            qc, total, inrange, labels, shape = self.saved
            scale = inrange / total
            dx = xp.empty(shape, dtype=np.result_type(scale.dtype, g.dtype))
            dx[...] = scale * g
            at = ((1.0 - 1.0 / qc) * scale * g).reshape(-1)
            dx.reshape(-1, shape[-1])[xp.arange(at.shape[0]), labels.reshape(-1)] = at
        return _to_last(xp, dx, self.axis, back=True)


def _to_last(xp, x, axis, back=False):
    """x with ``axis`` moved last (``back``: the last axis moved to ``axis``): x itself where it is last already
    (np.moveaxis costs ~5 us even then, a tenth of a small batch's cross-entropy)."""
    if axis == -1 or axis == x.ndim - 1:
        return x
    return xp.moveaxis(x, -1, axis) if back else xp.moveaxis(x, axis, -1)


class CategoricalCrossentropy(Op):
    """-sum(t * log p) over ``axis`` with soft / one-hot targets t (smoothed: t (1 - ls) + ls / K).

    From logits: loss = sum(t) * logsumexp(x) - sum(t x); dx = softmax(x) sum(t) - t; dt = -log_softmax(x).
    From probabilities (Keras): q = clip(p / sum(p), eps, 1 - eps); loss = -sum(t log q);
    dp = (-t / qc * inrange + sum(t * inrange)) / sum(p), qc = clip(q) (finite at q = 0); dt = -log qc.
    """

    def forward(self, t, p):
        xp = self.xp
        self.shapes = (t.shape, p.shape)
        t, p = xp.broadcast_arrays(t, p)
        ax, ls = self.axis, self.label_smoothing
        if ls:
            t = t * (1.0 - ls) + ls / p.shape[ax]
        if self.from_logits:
            rows = _last_axis_rows(p, ax) if p.size else None
            if rows is not None:   # the usual layout: the softmax's rows in one compiled visit, kept for backward
                soft, m, s = row_softmax(xp, rows)
                logq = xp.subtract(rows, m[:, None])
                logq -= xp.log(s)[:, None]
                logq, soft = logq.reshape(p.shape), soft.reshape(p.shape)
            else:
                z = p - p.max(axis=ax, keepdims=True)
                logq = z - xp.log(xp.exp(z).sum(axis=ax, keepdims=True))
                soft = None
            self.saved = (t, logq, soft)
        else:
            total = p.sum(axis=ax, keepdims=True)
            q = p / total
            inrange = ((q >= EPSILON) & (q <= 1.0 - EPSILON)).astype(p.dtype)
            qc = xp.clip(q, EPSILON, 1.0 - EPSILON)
            logq = xp.log(qc)
            # backward divides by qc (= q where inrange, never 0): t / q at q = 0 would be NaN
            self.saved = (t, logq, qc, total, inrange)
        if ax in (-1, p.ndim - 1):
            return -_row_dot(xp, t, logq)   # (one pass, no product array)
        return -(t * logq).sum(axis=ax)

    def backward(self, g):
        xp = self.xp
        ax = self.axis
        g = xp.expand_dims(g, ax)
        t, logq = self.saved[:2]
        dt = dp = None
        if self.needs_grad[0]:
            dt = unbroadcast(-logq * g * (1.0 - self.label_smoothing), self.shapes[0])
        if self.needs_grad[1]:
            if self.from_logits:
                soft = self.saved[2]
                q = xp.exp(logq) if soft is None else soft
                ts = t.sum(axis=ax, keepdims=True)
                # one-hot or soft labels summing to 1 (the usual): softmax - t, the rest's scale by sum(t) left out;
                # a batch mean's g one number: a scalar product (_row_factor), twice the speed of a broadcast one
                dp = xp.subtract(q, t) if _all_equal(xp, ts, 1) else xp.multiply(q, ts) - t
                dp *= g.reshape(-1)[0] if _all_equal(xp, g) else g
            else:
                _, _, qc, total, inrange = self.saved
                dp = (-t / qc * inrange + (t * inrange).sum(axis=ax, keepdims=True)) / total * g
            dp = unbroadcast(dp, self.shapes[1])
        return dt, dp


class BinaryCrossentropy(Op):
    """Elementwise binary cross-entropy, averaged over ``axis``.

    From logits (stable): l = max(x, 0) - x t + log1p(exp(-|x|)); dx = sigmoid(x) - t; dt = -x.
    From probabilities (Keras): pc = clip(p, eps, 1 - eps); l = -(t log pc + (1 - t) log(1 - pc));
    dp = (pc - t) / (pc (1 - pc)) * inrange; dt = log(1 - pc) - log(pc).
    """

    def forward(self, t, p):
        xp = self.xp
        self.shapes = (t.shape, p.shape)
        t, p = xp.broadcast_arrays(t, p)
        ls = self.label_smoothing
        if ls:
            t = t * (1.0 - ls) + 0.5 * ls
        self.count = p.shape[self.axis]
        if self.from_logits:
            # softplus(p) - p t: the softplus (max(p, 0) + log1p(exp(-|p|))) as the activation's chain computes it,
            # one compiled pass where NumPy's exp and log1p are scalar ((4096, 256) float32 forward + backward:
            # 20.5 -> 4.2 ms; PyTorch 3.1-3.3)
            l = _act.forward_values(_act.Softplus, xp, p)
            l -= p * t
            self.saved = (t, p)
        else:
            pc = xp.clip(p, EPSILON, 1.0 - EPSILON)
            l = -(t * xp.log(pc) + (1.0 - t) * xp.log(1.0 - pc))
            inrange = ((p >= EPSILON) & (p <= 1.0 - EPSILON)).astype(p.dtype)
            self.saved = (t, pc, inrange)
        return l.mean(axis=self.axis)

    def backward(self, g):
        xp = self.xp
        g = xp.expand_dims(g, self.axis) * (1.0 / self.count)
        dt = dp = None
        if self.from_logits:
            t, x = self.saved
            if self.needs_grad[0]:
                dt = -x * g * (1.0 - self.label_smoothing)
            if self.needs_grad[1]:
                dp = _act.forward_values(_act.Sigmoid, xp, x)   # (compiled where NumPy's exp is scalar)
                dp -= t
                dp *= g
        else:
            t, pc, inrange = self.saved
            if self.needs_grad[0]:
                dt = (xp.log(1.0 - pc) - xp.log(pc)) * g * (1.0 - self.label_smoothing)
            if self.needs_grad[1]:
                dp = (pc - t) / (pc * (1.0 - pc)) * inrange * g
        return (None if dt is None else unbroadcast(dt, self.shapes[0]),
                None if dp is None else unbroadcast(dp, self.shapes[1]))


# ----------------------------------------------------------------------------- regression losses
class _MeanOfDiff(Op):
    """mean over the last axis of f(d), d = y_pred - y_true. Subclasses give f and f' (``mean`` for a mean of
    their own, ``scaled_df`` for f'(d) times the per-row factor s in fewer passes).
    Backward: dp = f'(d) / D * g, dt = -dp."""

    kind = None   # the compiled passes' kind (kernels.diff_loss) for the losses they have

    def forward(self, t, p):
        self.shapes = (t.shape, p.shape)
        self.pair = None
        rows = self._rows(t, p)
        if rows is not None:   # one compiled pass, d never stored (backward recomputes it with f')
            sums = _kernels.diff_loss(*rows, self.kind, getattr(self, "delta", 0.0))
            if sums is not None:
                self.pair, self.saved, self.count = rows, (None,), p.shape[-1]
                return (sums / self.count).reshape(p.shape[:-1])
        d = p - t
        self.saved = (d,)
        self.count = d.shape[-1] if d.ndim else 1
        if d.ndim:
            return self.mean(d)
        return self.f(d)

    def _rows(self, t, p):
        """(t, p) as (R, D) rows for the compiled passes: NumPy arrays of one shape and float dtype, C-contiguous,
        of one axis or more; else None."""
        if (self.kind is None or self.xp is not np or type(t) is not np.ndarray or type(p) is not np.ndarray
                or t.shape != p.shape or t.dtype != p.dtype or p.ndim == 0 or p.size == 0
                or not (t.flags.c_contiguous and p.flags.c_contiguous)):
            return None
        return t.reshape(-1, p.shape[-1]), p.reshape(-1, p.shape[-1])

    def mean(self, d):
        return self.f(d).mean(axis=-1)

    def factor(self, s):
        """The per-row factor s as scaled_df and the compiled gradient pass take it, f'(d) times that (MSE: d times
        2 s)."""
        return s

    def scaled_df(self, d, s):
        return self.df(d) * s

    def backward(self, g):
        (d,) = self.saved
        if self.pair is not None:
            t2, p2 = self.pair
            s = self.factor(_row_factor(self.xp, g * (1.0 / self.count)))
            s = np.ascontiguousarray(s, dtype=p2.dtype).reshape(-1) if np.result_type(s) == p2.dtype else None
            gd = None if s is None else _kernels.diff_loss_grad(t2, p2, self.kind, getattr(self, "delta", 0.0), s)
            if gd is not None:
                gd = gd.reshape(self.shapes[1])
                return (-gd if self.needs_grad[0] else None), (gd if self.needs_grad[1] else None)
            d = (p2 - t2).reshape(self.shapes[1])   # (the kernels declined: NumPy's code)
        if d.ndim:   # (the per-row factor g / D first: one pass over d-sized arrays where there were three)
            gd = self.scaled_df(d, _row_factor(self.xp, g * (1.0 / self.count)))
        else:
            gd = self.df(d) * g
        return (unbroadcast(-gd, self.shapes[0]) if self.needs_grad[0] else None,
                unbroadcast(gd, self.shapes[1]) if self.needs_grad[1] else None)


def _all_equal(xp, a, value=None):
    """Whether every value of the NumPy array a equals ``value`` (default: a's first value; NaN equals nothing)."""
    return xp is np and a.size > 0 and bool((a == (a.reshape(-1)[0] if value is None else value)).all())


def _row_factor(xp, s):
    """The per-row factors s (...,) to multiply (..., D) rows by: s[..., None], or s's one value where every row has
    the same (a mean over the batch: g = 1 / N), whose scalar product NumPy runs at twice the speed of the
    row-broadcast one ((4096, 256) float32: 0.13 against 0.29 ms). The same products either way (NaN is never
    equal to itself: rows with NaN factors broadcast)."""
    if s.ndim and _all_equal(xp, s):
        return s.reshape(-1)[0]
    return s[..., None]


def _row_dot(xp, a, b):
    """sum(a * b) over the last axis, without the product array (einsum's contiguous sum of products)."""
    return xp.einsum("...i,...i->...", a, b)


class MeanSquaredError(_MeanOfDiff):
    """mean(d^2): forward a sum of products and a division (NumPy's mean divides its sum too), backward d (2 g / D)
    in one pass (a (4096, 256) float32 batch, forward + backward: 2.0 -> 1.0 ms; PyTorch 0.4). The compiled passes
    (kind 0) where they run: 1.0 -> 0.67 ms (mean absolute error 2.0 -> 0.65, Huber 2.8 -> 0.66; PyTorch 0.5, 1.3,
    0.4: the 2-core Zen 2)."""
    kind = 0
    def f(self, d): return d * d
    def df(self, d): return 2.0 * d

    def mean(self, d):
        return _row_dot(self.xp, d, d) / self.count

    def factor(self, s):
        return 2.0 * s

    def scaled_df(self, d, s):
        return d * self.factor(s)


class MeanAbsoluteError(_MeanOfDiff):
    kind = 1

    def f(self, d): return self.xp.abs(d)
    def df(self, d): return self.xp.sign(d)

    def scaled_df(self, d, s):
        out = self.xp.sign(d)
        out *= s
        return out


class Huber(_MeanOfDiff):
    """0.5 d^2 where |d| <= delta, else delta (|d| - 0.5 delta); derivative clip(d, -delta, delta).
    Both sides as one formula, q (|d| - q / 2) with q = min(|d|, delta) (no select: 0.5 d^2 exactly where
    |d| <= delta, NaN staying NaN), its mean a sum of products. The compiled passes (kind 2) where they run."""
    kind = 2

    def f(self, d):
        a = self.xp.abs(d)
        q = self.xp.clip(a, 0.0, self.delta)   # (min(|d|, delta): NumPy's clip is SIMD, minimum by a scalar 4x slower)
        a -= 0.5 * q
        a *= q
        return a

    def df(self, d): return self.xp.clip(d, -self.delta, self.delta)

    def mean(self, d):
        xp = self.xp
        a = xp.abs(d)
        q = xp.clip(a, 0.0, self.delta)
        a -= 0.5 * q
        return _row_dot(xp, q, a) / self.count

    def scaled_df(self, d, s):
        out = self.xp.clip(d, -self.delta, self.delta)
        out *= s
        return out


class LogCosh(_MeanOfDiff):
    """log(cosh(d)) = d + softplus(-2 d) - log 2 (no overflow); derivative tanh(d)."""
    def f(self, d):
        xp = self.xp
        z = -2.0 * d
        return d + (xp.maximum(z, 0) + xp.log1p(xp.exp(-xp.abs(z)))) - math.log(2.0)

    def df(self, d): return self.xp.tanh(d)


class KLDivergence(Op):
    """sum(tc * log(tc / pc)) over the last axis, tc = clip(t, eps, 1), pc = clip(p, eps, 1) (Keras).
    Backward: dp = -tc / pc * [eps <= p <= 1] * g; dt = (log(tc / pc) + 1) * [eps <= t <= 1] * g."""

    def forward(self, t, p):
        xp = self.xp
        self.shapes = (t.shape, p.shape)
        t, p = xp.broadcast_arrays(t, p)
        tc, pc = xp.clip(t, EPSILON, 1.0), xp.clip(p, EPSILON, 1.0)
        logr = xp.log(tc / pc)
        self.saved = (t, p, tc, pc, logr)
        return (tc * logr).sum(axis=-1)

    def backward(self, g):
        t, p, tc, pc, logr = self.saved
        g = g[..., None]
        dt = dp = None
        if self.needs_grad[0]:
            dt = unbroadcast((logr + 1.0) * ((t >= EPSILON) & (t <= 1.0)) * g, self.shapes[0])
        if self.needs_grad[1]:
            dp = unbroadcast(-tc / pc * ((p >= EPSILON) & (p <= 1.0)) * g, self.shapes[1])
        return dt, dp


# ----------------------------------------------------------------------------- public functions
def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, axis=-1, ignore_class=None):
    """Cross-entropy with integer class labels (one fused op).

    Args:
        y_true: integer labels of shape y_pred.shape without the class axis (a trailing axis of 1 is
            accepted); floats holding integers are accepted too. A constant.
        y_pred: logits (from_logits=True) or probabilities, classes on ``axis``.
        ignore_class: a label value whose entries give loss 0 and no gradient; the result then carries
            ``_keras_mask`` (True where the label is valid), as in Keras.
    Output: shape y_pred.shape without the class axis.
    Forward (logits): logsumexp(x) - x[label]. Backward: (softmax(x) - onehot(label)) * g.
    Forward (probabilities): -log(clip(p[label] / sum(p), 1e-7, 1 - 1e-7)).
    """
    y_pred = _pred(y_pred)
    ax = _check_axis(axis, y_pred.ndim, "sparse_categorical_crossentropy")
    lab = y_true.data if isinstance(y_true, Tensor) else y_true
    xp = backend.get_array_module(y_pred.data)
    lab = lab if backend.is_cupy_array(lab) else np.asarray(lab)
    want = y_pred.shape[:ax] + y_pred.shape[ax + 1:]
    if tuple(lab.shape) == want + (1,):
        lab = lab.reshape(want)
    if tuple(lab.shape) != want:
        raise ValueError(f"sparse_categorical_crossentropy: y_true must hold one integer label per sample, "
                         f"shape {want} (or {want + (1,)}) for y_pred of shape {y_pred.shape}; "
                         f"received y_true of shape {tuple(lab.shape)}.")
    if xp is not np and not backend.is_cupy_array(lab):
        lab = backend.to_device(lab, xp)
    lab = lab.astype(np.int64, copy=False)
    K = y_pred.shape[ax]
    valid = None
    if ignore_class is not None:
        keep = lab != int(ignore_class)
        valid = keep.astype(y_pred.dtype)
        lab = xp.where(keep, lab, 0)
    # (on a GPU one launch and one read of a flag, the extremes only for the message)
    bad = None if xp is np else _cuda_kernels.labels_out_of_range(lab, K)
    if lab.size and bad is not False:
        lo, hi = int(lab.min()), int(lab.max())
        if lo < 0 or hi >= K:
            raise ValueError(f"sparse_categorical_crossentropy: labels must be in [0, {K}) for {K} classes; "
                             f"received labels from {lo} to {hi}.")
    out = SparseCategoricalCrossentropy.apply(y_pred, labels=lab, valid=valid, axis=ax,
                                              from_logits=bool(from_logits))
    if ignore_class is not None:
        out._keras_mask = Tensor(valid > 0)
    return out


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """Cross-entropy with one-hot or soft targets over ``axis`` (one fused op).

    Output: y_pred's shape without ``axis``.
    Forward (logits): -sum(t * log_softmax(x)). Backward: dx = softmax(x) sum(t) - t.
    Forward (probabilities, Keras): -sum(t * log(clip(p / sum(p), 1e-7, 1 - 1e-7))).
    label_smoothing: t <- t (1 - ls) + ls / num_classes.
    """
    y_pred = _pred(y_pred)
    ax = _check_axis(axis, y_pred.ndim, "categorical_crossentropy")
    y_true = _true(y_true, y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"categorical_crossentropy: y_true and y_pred must have the same shape (one-hot or soft "
                         f"labels); received y_true {y_true.shape} and y_pred {y_pred.shape}. For integer labels "
                         "use sparse_categorical_crossentropy.")
    return CategoricalCrossentropy.apply(y_true, y_pred, from_logits=bool(from_logits),
                                         label_smoothing=float(label_smoothing), axis=ax)


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """Binary cross-entropy of each entry, averaged over ``axis`` (one fused op).

    Forward (logits, stable): max(x, 0) - x t + log1p(exp(-|x|)). Backward: (sigmoid(x) - t) / D.
    Forward (probabilities, Keras): -(t log pc + (1 - t) log(1 - pc)), pc = clip(p, 1e-7, 1 - 1e-7).
    label_smoothing: t <- t (1 - ls) + 0.5 ls.
    """
    y_pred = _pred(y_pred)
    y_true = _true(y_true, y_pred)
    ax = _check_axis(axis, max(y_pred.ndim, y_true.ndim), "binary_crossentropy")
    return BinaryCrossentropy.apply(y_true, y_pred, from_logits=bool(from_logits),
                                    label_smoothing=float(label_smoothing), axis=ax)


def _regression(cls, y_true, y_pred, **params):
    y_pred = _pred(y_pred)
    t, p = _same_rank(_true(y_true, y_pred), y_pred)
    return cls.apply(t, p, **params)


def mean_squared_error(y_true, y_pred):
    """mean((y_pred - y_true)^2, axis=-1). Backward: 2 (y_pred - y_true) / D."""
    return _regression(MeanSquaredError, y_true, y_pred)


def mean_absolute_error(y_true, y_pred):
    """mean(|y_pred - y_true|, axis=-1). Backward: sign(y_pred - y_true) / D."""
    return _regression(MeanAbsoluteError, y_true, y_pred)


def huber(y_true, y_pred, delta=1.0):
    """mean over the last axis of 0.5 d^2 (|d| <= delta) or delta (|d| - 0.5 delta), d = y_pred - y_true.
    Quadratic near 0, linear for outliers. Backward: clip(d, -delta, delta) / D."""
    return _regression(Huber, y_true, y_pred, delta=float(delta))


def log_cosh(y_true, y_pred):
    """mean(log(cosh(y_pred - y_true)), axis=-1), computed without overflow. Backward: tanh(d) / D."""
    return _regression(LogCosh, y_true, y_pred)


def kl_divergence(y_true, y_pred):
    """sum(t log(t / p), axis=-1) with both clipped to [1e-7, 1] (Keras). Backward: -t / p."""
    y_pred = _pred(y_pred)
    return KLDivergence.apply(_true(y_true, y_pred), y_pred)


def _hinge_labels(t):
    """Keras converts 0/1 labels to -1/1 for the hinge losses (only when every label is 0 or 1)."""
    d = t.data
    if bool(((d == 0) | (d == 1)).all()):
        return t * 2.0 - 1.0
    return t


def hinge(y_true, y_pred):
    """mean(max(1 - t p, 0), axis=-1) with t in {-1, 1} (0/1 labels are converted)."""
    y_pred = _pred(y_pred)
    t, p = _same_rank(_true(y_true, y_pred), y_pred)
    return _m.mean(_m.maximum(1.0 - _hinge_labels(t) * p, 0.0), axis=-1)


def squared_hinge(y_true, y_pred):
    """mean(max(1 - t p, 0)^2, axis=-1) with t in {-1, 1} (0/1 labels are converted)."""
    y_pred = _pred(y_pred)
    t, p = _same_rank(_true(y_true, y_pred), y_pred)
    return _m.mean(_m.square(_m.maximum(1.0 - _hinge_labels(t) * p, 0.0)), axis=-1)


def categorical_hinge(y_true, y_pred):
    """max(0, 1 + max((1 - t) p) - sum(t p)) over the last axis (one-hot t)."""
    y_pred = _pred(y_pred)
    t = _true(y_true, y_pred)
    pos = _m.sum(t * y_pred, axis=-1)
    neg = _m.max((1.0 - t) * y_pred, axis=-1)
    return _m.maximum(neg - pos + 1.0, 0.0)


def mean_absolute_percentage_error(y_true, y_pred):
    """100 * mean(|t - p| / max(|t|, 1e-7), axis=-1)."""
    y_pred = _pred(y_pred)
    t, p = _same_rank(_true(y_true, y_pred), y_pred)
    return _m.mean(_m.abs(t - p) / _m.maximum(_m.abs(t), EPSILON), axis=-1) * 100.0


def mean_squared_logarithmic_error(y_true, y_pred):
    """mean((log(max(p, 1e-7) + 1) - log(max(t, 1e-7) + 1))^2, axis=-1)."""
    y_pred = _pred(y_pred)
    t, p = _same_rank(_true(y_true, y_pred), y_pred)
    d = _m.log(_m.maximum(p, EPSILON) + 1.0) - _m.log(_m.maximum(t, EPSILON) + 1.0)
    return _m.mean(d * d, axis=-1)


def poisson(y_true, y_pred):
    """mean(p - t log(p + 1e-7), axis=-1)."""
    y_pred = _pred(y_pred)
    t = _true(y_true, y_pred)
    return _m.mean(y_pred - t * _m.log(y_pred + EPSILON), axis=-1)
