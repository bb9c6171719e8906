"""Normalisation ops: batch, layer and group normalisation, each one fused op with a hand-written backward.

All three share one idea: subtract a mean, divide by a standard deviation, then scale by ``gamma`` and
shift by ``beta``. They differ only in which entries share a mean and variance:

- batch norm: every entry of one channel, over the whole batch (and all spatial positions);
- layer norm: every entry of one sample, over the given feature axes;
- group norm: the entries of one sample within one group of channels (and all spatial positions).

Forward, with the statistics taken over the reduction axes R (M entries each):
    mu = mean_R(x),  var = mean_R((x - mu)^2)  (biased),  inv = 1 / sqrt(var + epsilon)
    xhat = (x - mu) * inv,   y = xhat * gamma + beta
Backward, when mu and var come from x itself (gxhat = gy * gamma):
    dx = inv * (gxhat - mean_R(gxhat) - xhat * mean_R(gxhat * xhat))
    dgamma = sum(gy * xhat) and dbeta = sum(gy) over every axis but the parameter axes.
``gamma`` / ``beta`` may be None (Keras's scale=False / center=False).
"""
from math import prod as _prod

import numpy as np

from .. import backend
from ..tensor import Op
from . import cuda_kernels as _cuda_kernels
from . import kernels as _kernels
from .math import rows_op, split_pass, sum_rows

__all__ = ["batch_norm", "batch_norm_training", "layer_norm", "group_norm"]


def _compute_dtype(dtype):
    """The dtype the statistics are computed in: at least float32, as Keras (result_type(x, float32)).
    float16 (and bfloat16) have too little range and precision for a variance: x = [0, 300, 600, 900]
    squares to 2.5e5 > 65504 (float16's largest), i.e. var = inf and an output of zeros."""
    dtype = np.dtype(dtype)
    if dtype.name == "bfloat16" or (dtype.kind == "f" and dtype.itemsize < 4):
        return np.dtype(np.float32)
    return dtype


def _upcast(cd, *arrays):
    """Arrays in the compute dtype (None stays None); an array already in it is returned as it is."""
    return tuple(None if a is None else a if a.dtype == cd else a.astype(cd) for a in arrays)


def _in_dtypes(grads, dtypes):
    """Each gradient in its input's dtype (the statistics ran in float32 for a float16 input)."""
    return tuple(g if g is None or d is None or g.dtype == d else g.astype(d) for g, d in zip(grads, dtypes))


def _out_dtype(x_dtype, computed):
    """A half-precision input gets its own dtype back; otherwise the dtype the arithmetic promoted to."""
    return x_dtype if _compute_dtype(x_dtype) != x_dtype else computed


def _norm_backward(gxhat, xhat, inv, axes, xp):
    """dx when the mean and variance over ``axes`` were computed from x (the three-term rule above)."""
    m = _prod([xhat.shape[i] for i in axes])
    return inv * (gxhat - _sum_but(xp, gxhat, axes, True) / m - xhat * (_sum_but(xp, gxhat * xhat, axes, True) / m))


_BLAS_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _sum_but(xp, a, axes, keepdims=False):
    """a summed over ``axes``. Over every axis but one (a per-channel sum: a batch norm over a channel axis that is
    not the last), for a C-contiguous float NumPy array, as two products with ones vectors over its (before, C,
    after) view, where NumPy's sum over axes around a kept one runs a strided row at a time ((32, 32, 32, 32)
    float32 over (0, 2, 3): ~0.6 ms against ~0.1). Else NumPy's sum."""
    keep = [i for i in range(a.ndim) if i not in axes]
    if (xp is not np or len(keep) != 1 or len(axes) != a.ndim - 1 or a.dtype not in _BLAS_FLOATS
            or not a.flags.c_contiguous or a.size == 0):
        return a.sum(axis=axes, keepdims=keepdims)
    c = keep[0]
    a3 = a.reshape(_prod(a.shape[:c]), a.shape[c], -1)
    s = sum_rows(xp, np.matmul(a3, np.ones(a3.shape[2], a.dtype)))   # (the (before, C) sums' column sums)
    return s.reshape(_param_shape(a.ndim, (c,), a.shape)) if keepdims else s


def _sum_over(xp, a, axes):
    """a summed over ``axes``; when those are the leading axes (LayerNorm over the last ones), as one GEMV."""
    if axes == tuple(range(len(axes))) and a.flags.c_contiguous:
        return sum_rows(xp, a.reshape(-1, _prod(a.shape[len(axes):])))
    return a.sum(axis=axes)


def _param_shape(ndim, axes, shape):
    """Shape that makes a parameter over ``axes`` broadcast against an array of rank ndim."""
    return tuple(shape[i] if i in axes else 1 for i in range(ndim))


def _channel_axis(axis, ndim, op):
    if not -ndim <= axis < ndim:
        raise ValueError(f"{op}: axis={axis} is out of range for an input of rank {ndim}.")
    return axis % ndim


def _check_param(p, name, want, op):
    if p is not None and tuple(p.shape) != tuple(want):
        raise ValueError(f"{op}: {name} must have shape {tuple(want)} (the normalised axes of the input), "
                         f"received shape {tuple(p.shape)}.")


class BatchNorm(Op):
    """Inference batch norm with given statistics: y = (x - mean) * gamma / sqrt(var + eps) + beta."""

    def forward(self, x, gamma, beta, mean, var):
        ax = _channel_axis(self.axis, x.ndim, "batch_norm")
        C = x.shape[ax]
        for p, n in ((gamma, "gamma"), (beta, "beta"), (mean, "mean"), (var, "variance")):
            _check_param(p, n, (C,), "batch_norm")
        self.red = tuple(i for i in range(x.ndim) if i != ax)
        self.bshape = _param_shape(x.ndim, (ax,), x.shape)
        self.dtypes = tuple(None if a is None else a.dtype for a in (x, gamma, beta, mean, var))
        cd = _compute_dtype(np.result_type(*(a.dtype for a in (x, gamma, beta, mean, var) if a is not None)))
        x, gamma, beta, mean, var = _upcast(cd, x, gamma, beta, mean, var)
        inv = 1.0 / self.xp.sqrt(var + self.epsilon)
        scale = inv if gamma is None else inv * gamma
        shift = -mean * scale if beta is None else beta - mean * scale
        # backward reads the per-channel vectors as they are NOW: copies (C entries each, cheap), since the
        # layer passes its moving-statistics arrays, which a later training call updates in place
        self.saved = (x, None if gamma is None else gamma.copy(), mean.copy(), inv, scale)
        if ax == x.ndim - 1 and x.flags.c_contiguous and x.size:   # channels last: rows_op's wide rows
            y = _kernels.scale_shift(x.reshape(-1, C), scale, shift)  # one pass where compiled (kernels.py)
            if y is None:
                y = rows_op(self.xp, self.xp.multiply, x.reshape(-1, C), scale)
                y = rows_op(self.xp, self.xp.add, y, shift, out=y)
            y = y.reshape(x.shape)
        else:
            y = x * scale.reshape(self.bshape) + shift.reshape(self.bshape)
        return y.astype(_out_dtype(self.dtypes[0], y.dtype), copy=False)

    def backward(self, gy):
        x, gamma, mean, inv, scale = self.saved
        gy = gy.astype(x.dtype, copy=False)
        return _in_dtypes(self._backward(gy, x, gamma, mean, inv, scale), self.dtypes)

    def _backward(self, gy, x, gamma, mean, inv, scale):
        need_x, need_g, need_b, need_m, need_v = self.needs_grad
        dx = gy * scale.reshape(self.bshape) if need_x else None
        dgamma = dbeta = dmean = dvar = None
        if need_g or need_b or need_m or need_v:
            sum_g = gy.sum(axis=self.red)
            dbeta = sum_g if need_b else None
            dmean = -scale * sum_g if need_m else None
            if need_g or need_v:
                # sum(gy * (x - mean)) without materialising x - mean
                sum_gd = (gy * x).sum(axis=self.red) - mean * sum_g
                dgamma = inv * sum_gd if need_g else None
                if need_v:
                    g = 1.0 if gamma is None else gamma
                    dvar = -0.5 * g * sum_gd * inv * inv * inv
        return dx, dgamma, dbeta, dmean, dvar


def _bn_training_inputs(op, x, gamma, beta):
    """Checked, upcast inputs of a training batch norm, its channel axis, channel count and compute dtype
    (op.dtypes set)."""
    ax = _channel_axis(op.axis, x.ndim, "batch_norm_training")
    C = x.shape[ax]
    _check_param(gamma, "gamma", (C,), "batch_norm_training")
    _check_param(beta, "beta", (C,), "batch_norm_training")
    op.dtypes = tuple(None if a is None else a.dtype for a in (x, gamma, beta))
    cd = _compute_dtype(np.result_type(*(a.dtype for a in (x, gamma, beta) if a is not None)))
    x, gamma, beta = _upcast(cd, x, gamma, beta)
    return x, gamma, beta, ax, C, cd


def _bn_mask_weights(xp, mask, x, ax):
    """The mask (the input's shape without the channel axis) as 0/1 weights broadcasting against x."""
    want = x.shape[:ax] + x.shape[ax + 1:]
    if tuple(mask.shape) != want:
        raise ValueError(f"batch_norm_training: the mask must have the input's shape without the channel "
                         f"axis, {want}; received {tuple(mask.shape)}.")
    return xp.expand_dims(mask.astype(x.dtype), ax)


class BatchNormTraining(Op):
    """Training batch norm: statistics from the batch (optionally weighted by a mask), returned too.

    Channels last without a mask (the usual case) runs on the (M, C) matrix of rows: the per-channel sums are
    GEMVs with a ones vector (sum_rows) and the element-wise passes reuse their buffers (see _rows_forward)."""

    none_grads = True   # the layer reads the statistics outputs as constants: no zeros for them in backward

    def forward(self, x, gamma, beta, mask):
        xp = self.xp
        x, gamma, beta, ax, C, cd = _bn_training_inputs(self, x, gamma, beta)
        if x.size == 0 and C > 0:
            # statistics of no entries are undefined: a clear error rather than NaN moving statistics
            raise ValueError(f"batch_norm_training: the input {tuple(x.shape)} has no entries per channel, so "
                             "there are no batch statistics. Run inference mode (batch_norm) on an empty batch.")
        shape = x.shape
        if mask is None and ax != x.ndim - 1 and x.flags.c_contiguous and x.size > 0:
            # a channel axis before others (channels first) as (before, C, after): each channel's positions one
            # contiguous run, along which the broadcasts' inner loops go, and the sums two GEMVs (_sum_but). With
            # the in-place passes below and _folded_backward, a (32, 32, 32, 32) float32 batch over axis 1:
            # forward 2.9 -> 1.9 ms, forward and backward 8.3 -> 4.7 (PyTorch 1.6-1.8; the broadcasts of a
            # channel's number along its run cost NumPy ~2x a plain pass, and there are ten)
            x = x.reshape(_prod(shape[:ax]), C, -1)
            ax = 1
        red = tuple(i for i in range(x.ndim) if i != ax)
        self.ax, self.red, self.bshape = ax, red, _param_shape(x.ndim, (ax,), x.shape)
        self.channels = False
        if mask is None and ax == 1 and x.ndim == 3 and x.size > 0:
            # compiled passes over each channel's runs where they run (kernels.py): (32, 32, 32, 32) float32 over
            # axis 1, forward and backward 4.6 -> 1.3 ms on the 2-core Zen 2 (PyTorch 1.6-2.6)
            done = _kernels.batch_norm_channels_forward(x, gamma, beta, self.epsilon)
            if done is not None:
                y, mean, var, inv = done
                self.channels = True
                self.saved = (x, inv, gamma, None, None, mean)   # x and the mean: x-hat recomputed in backward
                self.rows = False
                return y.reshape(shape).astype(_out_dtype(self.dtypes[0], y.dtype), copy=False), mean, var
        self.rows = (mask is None and ax == x.ndim - 1 and x.flags.c_contiguous and x.dtype.kind == "f"
                     and x.size > 0)
        if self.rows:
            return self._rows_forward(x, gamma, beta, C)
        if mask is None:   # (two passes for the variance: no cancellation; x-hat in d's buffer, y in d^2's)
            m = x.size // C if C else 1
            mean = _sum_but(xp, x, red, True) / m
            d = x - mean
            sq = d * d
            var = _sum_but(xp, sq, red, True) / m
            inv = 1.0 / xp.sqrt(var + self.epsilon)
            xhat = xp.multiply(d, inv, out=d)
            y = xhat if gamma is None else xp.multiply(xhat, gamma.reshape(self.bshape), out=sq)
            if beta is not None:
                y = xp.add(y, beta.reshape(self.bshape), out=sq)
            self.saved = (xhat, inv, gamma, None, None, None)
            y = y.reshape(shape).astype(_out_dtype(self.dtypes[0], y.dtype), copy=False)
            return y, mean.reshape(C), var.reshape(C)
        else:
            w = _bn_mask_weights(xp, mask, x, ax)
            # Keras adds epsilon 1e-7 to the weight total so that an all-masked batch gives 0, not NaN
            W = w.sum(axis=red, keepdims=True) + 1e-7
            mean = (w * x).sum(axis=red, keepdims=True) / W
            d = x - mean
            var = (w * d * d).sum(axis=red, keepdims=True) / W
        inv = 1.0 / xp.sqrt(var + self.epsilon)
        xhat = d * inv
        y = xhat if gamma is None else xhat * gamma.reshape(self.bshape)
        if beta is not None:
            y = y + beta.reshape(self.bshape)
        self.saved = (xhat, inv, gamma, w, W, d)
        # y in the input's dtype; the statistics stay in the compute dtype (float32 for a float16 input),
        # which is what the layer's moving averages need
        y = y.reshape(shape).astype(_out_dtype(self.dtypes[0], y.dtype), copy=False)
        return y, mean.reshape(C), var.reshape(C)

    def _rows_forward(self, x, gamma, beta, C):
        """Forward on x as (M, C) rows: mean, d = x - mean, var = mean(d^2) (two passes: no cancellation),
        xhat = d * inv in d's buffer, y = xhat * gamma + beta in the buffer of d^2."""
        xp = self.xp
        x2 = x.reshape(-1, C)
        M = x2.shape[0]
        done = _kernels.batch_norm_forward(x2, gamma, beta, self.epsilon)   # where compiled (kernels.py)
        if done is not None:
            y, mean, var, inv = done
            self.saved = (x2, inv, gamma, None, None, mean)   # x and the mean: x-hat is recomputed in backward
            y = y.reshape(x.shape)
            return y.astype(_out_dtype(self.dtypes[0], y.dtype), copy=False), mean, var
        mean = sum_rows(xp, x2) * (1.0 / M)
        xhat = rows_op(xp, xp.subtract, x2, mean)
        buf = xp.multiply(xhat, xhat)
        var = sum_rows(xp, buf) * (1.0 / M)
        inv = 1.0 / xp.sqrt(var + self.epsilon)
        rows_op(xp, xp.multiply, xhat, inv, out=xhat)
        if gamma is None and beta is None:
            y = xhat
        else:
            y = rows_op(xp, xp.multiply if gamma is not None else xp.add, xhat,
                        gamma if gamma is not None else beta, out=buf)
            if gamma is not None and beta is not None:
                rows_op(xp, xp.add, y, beta, out=y)
        self.saved = (xhat, inv, gamma, None, None, None)
        y = y.reshape(x.shape)
        return y.astype(_out_dtype(self.dtypes[0], y.dtype), copy=False), mean, var

    def backward(self, gy, gmean, gvar):
        xhat, inv, gamma, w, W, d = self.saved
        cd = xhat.dtype
        if self.rows:
            if d is not None:   # the kernels' forward ran: saved x (not x-hat) and the mean (d)
                x2, mean = xhat, d
                done = self._kernels_backward(_kernels.batch_norm_backward, gy, gmean, gvar, x2, mean, inv, gamma, cd)
                if done is not None:
                    return done
                xhat = rows_op(self.xp, self.xp.subtract, x2, mean)   # the kernels were switched off in between
                rows_op(self.xp, self.xp.multiply, xhat, inv, out=xhat)
            return _in_dtypes(self._rows_backward(gy, gmean, gvar, xhat, inv, gamma, cd), self.dtypes + (None,))
        if self.channels:   # the kernels' forward ran: saved x (B, C, A), not x-hat, and the mean (d)
            x3, mean = xhat, d
            done = self._kernels_backward(_kernels.batch_norm_channels_backward, gy, gmean, gvar, x3, mean, inv, gamma,
                                          cd)
            if done is not None:
                return done
            # (no gradient for y, or the kernels switched off in between: x-hat for the NumPy code)
            xhat = (x3 - mean.reshape(self.bshape)) * inv.reshape(self.bshape)
            inv = inv.reshape(self.bshape)
        if w is None:
            gy = self.xp.zeros(*self.out_meta[0]) if gy is None else gy
            gmean, gvar = (None if g is None else g.astype(cd, copy=False) for g in (gmean, gvar))
            dx, dgamma, dbeta, _ = self._folded_backward(gy.astype(cd, copy=False).reshape(xhat.shape), gmean, gvar,
                                                         xhat, inv, gamma)
        else:
            gy, gmean, gvar = (self.xp.zeros(s, dt) if g is None else g
                               for g, (s, dt) in zip((gy, gmean, gvar), self.out_meta))
            gy, gmean, gvar = (g.astype(cd, copy=False) for g in (gy, gmean, gvar))
            dx, dgamma, dbeta, _ = self._backward(gy, gmean, gvar, xhat, inv, gamma, w, W, d)
        dx = None if dx is None else dx.reshape(self.out_meta[0][0])   # (forward's (before, C, after) view undone)
        return _in_dtypes((dx, dgamma, dbeta, None), self.dtypes + (None,))

    def _kernels_backward(self, backward, gy, gmean, gvar, x, mean, inv, gamma, cd):
        """The gradients through the kernels' backward (kernels.batch_norm_backward or its channels-first twin) from the
        kept x (its rows or (B, C, A) view) and the mean, as backward returns them; None where there is no gradient
        for y or the kernels do not run (the caller's NumPy code then)."""
        if gy is None:
            return None
        done = backward(self.xp.ascontiguousarray(gy.astype(cd, copy=False).reshape(x.shape)), x, mean, inv, gamma,
                        None if gmean is None else gmean.astype(cd, copy=False),
                        None if gvar is None else gvar.astype(cd, copy=False), self.needs_grad[0])
        if done is None:
            return None
        dx, dgamma, dbeta = done
        return _in_dtypes((None if dx is None else dx.reshape(self.out_meta[0][0]),
                           dgamma if self.needs_grad[1] else None, dbeta if self.needs_grad[2] else None, None),
                          self.dtypes + (None,))

    def _folded_backward(self, gy, gmean, gvar, xhat, inv, gamma):
        """_rows_backward's folded rule, dx = a * gy + c * xhat + b, with per-channel factors broadcast in the
        op's parameter shape: any layout without a mask (a channel axis before others as forward's (before, C,
        after) view); the sums by _sum_but. Four passes for dx where the plain three-term rule with the
        statistics' terms made eleven."""
        xp, red, bshape = self.xp, self.red, self.bshape
        C = xhat.shape[self.ax]
        M = xhat.size // C if C else 1
        t = xp.multiply(gy, xhat)
        sum_gx, sum_g = _sum_but(xp, t, red), _sum_but(xp, gy, red)
        dx = None
        if self.needs_grad[0]:
            inv_c = inv.reshape(C)
            a = inv_c if gamma is None else inv_c * gamma
            b = -a * sum_g
            c = -a * sum_gx
            if gmean is not None:
                b = b + gmean
            if gvar is not None:   # (the variance output's 2 (x - mean) / M is 2 x-hat / inv / M)
                c = c + 2.0 * gvar / inv_c
            b, c = b * (1.0 / M), c * (1.0 / M)
            dx = xp.multiply(xhat, c.reshape(bshape))
            dx += b.reshape(bshape)
            dx += xp.multiply(gy, a.reshape(bshape), out=t)
        return dx, sum_gx if self.needs_grad[1] else None, sum_g if self.needs_grad[2] else None, None

    def _rows_backward(self, gy, gmean, gvar, xhat, inv, gamma, cd):
        """The three-term rule on (M, C) rows with every per-channel factor folded together:
        dx = a * gy + c * xhat + b, a = inv * gamma, b = (gmean - a * sum(gy)) / M,
        c = (2 * gvar / inv - a * sum(gy * xhat)) / M  (the variance output's 2 (x - mean) / M is 2 xhat / inv / M);
        sums are GEMVs; two (M, C) buffers."""
        xp = self.xp
        M, C = xhat.shape
        need_x, need_g, need_b = self.needs_grad[:3]
        if gy is None:   # only the statistics reached the loss
            sum_g = sum_gx = xp.zeros(C, cd)
            gy2 = None
        else:
            gy2 = gy.astype(cd, copy=False).reshape(M, C)
            sum_g = sum_rows(xp, gy2)
            t = xp.multiply(gy2, xhat)
            sum_gx = sum_rows(xp, t)
        dx = None
        if need_x:
            a = inv if gamma is None else inv * gamma
            b = -a * sum_g
            c = -a * sum_gx
            if gmean is not None:
                b = b + gmean.astype(cd, copy=False)
            if gvar is not None:
                c = c + 2.0 * gvar.astype(cd, copy=False) / inv
            b, c = b * (1.0 / M), c * (1.0 / M)
            u = rows_op(xp, xp.multiply, xhat, c)
            rows_op(xp, xp.add, u, b, out=u)
            if gy2 is not None:
                dx = rows_op(xp, xp.multiply, gy2, a, out=t)
                dx += u
            else:
                dx = u
            dx = dx.reshape(self.out_meta[0][0])
        return dx, sum_gx if need_g else None, sum_g if need_b else None, None

    def _backward(self, gy, gmean, gvar, xhat, inv, gamma, w, W, d):
        """A masked batch's gradients: the general weighted rule (the mean and variance depend on x only through
        the weighted entries)."""
        red, bshape = self.red, self.bshape
        dx = dgamma = dbeta = None
        if self.needs_grad[1]:
            dgamma = (gy * xhat).sum(axis=red)
        if self.needs_grad[2]:
            dbeta = gy.sum(axis=red)
        if self.needs_grad[0]:
            gxhat = gy if gamma is None else gy * gamma.reshape(bshape)
            gm, gv = gmean.reshape(bshape), gvar.reshape(bshape)
            dvar = -0.5 * inv * inv * (gxhat * xhat).sum(axis=red, keepdims=True) + gv
            dmean = (-inv * gxhat.sum(axis=red, keepdims=True)
                     - 2.0 * dvar * (w * d).sum(axis=red, keepdims=True) / W + gm)
            dx = gxhat * inv + (w / W) * (2.0 * dvar * d + dmean)
        return dx, dgamma, dbeta, None


class SyncBatchNormTraining(BatchNormTraining):
    """Training batch norm whose statistics span the global batch of a data-parallel step.

    ``reducer`` connects the ranks: ``reducer.share`` is this rank's share of the step's loss (its rows /
    the global batch; 0 for a rank whose slice is empty and computes on a dummy row), and
    ``reducer.allgather(v)`` / ``reducer.allreduce(v)`` gather / sum a float64 host vector over the ranks.
    Forward: every rank gathers (count, mean, M2 = sum of squared deviations) of its slice per channel and
    combines them (Chan's pairwise rule in float64: M2 = sum_r M2_r + n_r (mean_r - mean)^2), so the
    statistics are those of the global batch without the cancellation of sum-of-squares formulas.
    Backward: the loss being sum_r share_r L_r, the mean and variance receive gradient from every rank;
    the per-channel sums they need (sum gxhat * xhat, sum gxhat, weighted by share, and sum mask * d) are
    all-reduced in one float64 call. Each rank returns dL/dx of its rows divided by its share, the
    convention of every other gradient of the step (the gradient all-reduce weights them by the share).
    """

    none_grads = False   # its backward all-reduces every output's gradient, zeros included

    def forward(self, x, gamma, beta, mask):
        xp = self.xp
        x, gamma, beta, ax, C, cd = _bn_training_inputs(self, x, gamma, beta)
        red = tuple(i for i in range(x.ndim) if i != ax)
        self.ax, self.red, self.bshape = ax, red, _param_shape(x.ndim, (ax,), x.shape)
        share = float(self.reducer.share)
        w = None
        if mask is not None:
            w = _bn_mask_weights(xp, mask, x, ax)
        # this rank's (count, mean, M2) per channel; a rank with an empty slice contributes nothing
        local = np.zeros((3, C), np.float64)
        if share > 0 and x.size:
            if w is None:
                n = x.size // C
                mean_r = x.mean(axis=red, keepdims=True)
                d = x - mean_r
                m2_r = (d * d).sum(axis=red)
                local[0] = n
            else:
                n = w.sum(axis=red, keepdims=True)
                mean_r = (w * x).sum(axis=red, keepdims=True) / xp.maximum(n, 1e-30)
                d = x - mean_r
                m2_r = (w * d * d).sum(axis=red)
                local[0] = backend.to_numpy(n).reshape(-1)   # the same for every channel
            local[1] = backend.to_numpy(mean_r).reshape(C)
            local[2] = backend.to_numpy(m2_r).reshape(C)
        rows = np.asarray(self.reducer.allgather(local.reshape(-1)), np.float64).reshape(-1, 3, C)
        counts, means, m2s = rows[:, 0], rows[:, 1], rows[:, 2]
        # Keras adds 1e-7 to a mask's weight total (an all-masked batch gives 0, not NaN)
        W = counts.sum(axis=0) + (0.0 if w is None else 1e-7)
        mean = (counts * means).sum(axis=0) / W
        var = (m2s + counts * (means - mean) ** 2).sum(axis=0) / W
        on_device = (lambda a: backend.to_device(a.astype(cd), xp)) if xp is not np else (lambda a: a.astype(cd))
        mean_x, var_x = on_device(mean), on_device(var)
        d = x - mean_x.reshape(self.bshape)
        inv = 1.0 / xp.sqrt(var_x.reshape(self.bshape) + self.epsilon)
        xhat = d * inv
        y = xhat if gamma is None else xhat * gamma.reshape(self.bshape)
        if beta is not None:
            y = y + beta.reshape(self.bshape)
        self.saved = (xhat, inv, gamma, w, W, d, share)
        return y.astype(_out_dtype(self.dtypes[0], y.dtype), copy=False), mean_x, var_x

    def backward(self, gy, gmean, gvar):
        xhat, inv, gamma, w, W, d, share = self.saved
        cd = xhat.dtype
        gy, gmean, gvar = (g.astype(cd, copy=False) for g in (gy, gmean, gvar))
        red, bshape, xp = self.red, self.bshape, self.xp
        dx = dgamma = dbeta = None
        if self.needs_grad[1]:
            dgamma = (gy * xhat).sum(axis=red)
        if self.needs_grad[2]:
            dbeta = gy.sum(axis=red)
        if self.needs_grad[0]:   # the same on every rank (one graph), so every rank joins the all-reduce
            C = xhat.shape[self.ax]
            gxhat = gy if gamma is None else gy * gamma.reshape(bshape)
            local = np.zeros((5, C), np.float64)
            if share > 0:
                host = backend.to_numpy
                local[0] = share * host((gxhat * xhat).sum(axis=red)).astype(np.float64)
                local[1] = share * host(gxhat.sum(axis=red)).astype(np.float64)
                local[2] = host((d if w is None else w * d).sum(axis=red)).astype(np.float64)
                local[3] = share * host(gvar).astype(np.float64)
                local[4] = share * host(gmean).astype(np.float64)
            tot = np.asarray(self.reducer.allreduce(local.reshape(-1)), np.float64).reshape(5, C)
            inv_h = backend.to_numpy(inv).reshape(C).astype(np.float64)
            dvar = -0.5 * inv_h * inv_h * tot[0] + tot[3]
            dmean = -inv_h * tot[1] - 2.0 * dvar * tot[2] / W + tot[4]
            if share > 0:
                a, b = 2.0 * dvar / (W * share), dmean / (W * share)   # per channel, float64 on the host
                to = (lambda v: backend.to_device(v.astype(cd), xp)) if xp is not np else (lambda v: v.astype(cd))
                dx = gxhat * inv + (1.0 if w is None else w) * (to(a).reshape(bshape) * d + to(b).reshape(bshape))
            else:   # a dummy row: its gradient is dropped by the all-reduce anyway (share 0)
                dx = xp.zeros_like(xhat)
        return _in_dtypes((dx, dgamma, dbeta, None), self.dtypes + (None,))


class LayerNorm(Op):
    """Per-sample normalisation over ``axes``; with rms_scaling, y = x * gamma / sqrt(var + eps)."""

    def forward(self, x, gamma, beta):
        xp = self.xp
        axes = tuple(sorted(_channel_axis(a, x.ndim, "layer_norm") for a in self.axes))
        pshape = tuple(x.shape[a] for a in axes)
        for p, n in ((gamma, "gamma"), (beta, "beta")):
            if p is not None and p.size != _prod(pshape):
                raise ValueError(f"layer_norm: {n} must have shape {pshape} (the normalised axes of the input), "
                                 f"received shape {tuple(p.shape)}.")
        self.axes, self.bshape = axes, _param_shape(x.ndim, axes, x.shape)
        self.beta_shape = None if beta is None else beta.shape
        self.other = tuple(i for i in range(x.ndim) if i not in axes)
        self.dtypes = tuple(None if a is None else a.dtype for a in (x, gamma, beta))
        x, gamma, beta = _upcast(_compute_dtype(x.dtype), x, gamma, beta)
        self.rows = None
        if (not self.rms_scaling and axes == tuple(range(x.ndim - len(axes), x.ndim)) and x.size
                and x.flags.c_contiguous):
            return self._rows_forward(x, gamma, beta)
        mean = x.mean(axis=axes, keepdims=True)
        d = x - mean
        sq = d * d
        inv = 1.0 / xp.sqrt(sq.mean(axis=axes, keepdims=True) + self.epsilon)
        # rms_scaling (Keras 3): scale by the inverse standard deviation but do not subtract the mean.
        # In place where an array is no longer needed (fewer fresh allocations of the input's size).
        if self.rms_scaling:
            xhat = xp.multiply(x, inv, out=sq)
        else:
            xhat = d
            xhat *= inv
        y = xhat if gamma is None else xhat * gamma.reshape(self.bshape)
        if beta is not None:
            if y is xhat:
                y = y + beta.reshape(self.bshape)
            else:
                y += beta.reshape(self.bshape)
        self.saved = (xhat, inv, gamma, d if self.rms_scaling else None)
        return y.astype(_out_dtype(self.dtypes[0], y.dtype), copy=False)

    def _rows_forward(self, x, gamma, beta):
        """The usual case, the trailing axes: x as (R, D) rows, each row's statistics as matrix-vector
        products (a mean over a short last axis is a slow per-row reduction in NumPy) and the variance as
        a row-wise dot product (no squared temporary). (2048, 128) float32, forward + backward: 0.76 ->
        0.47 ms."""
        xp = self.xp
        D = _prod([x.shape[a] for a in self.axes])
        x2 = x.reshape(-1, D)
        vectors = [None if p is None else p.reshape(D) for p in (gamma, beta)]
        # one pass, where compiled (kernels.py; on a GPU one launch, cuda_kernels.py)
        done = _cuda_kernels.kernels_for(xp).layer_norm_forward(x2, *vectors, self.epsilon)
        if done is not None:
            y, mean, inv = done
            self.rows = D
            self.saved = (x2, inv, gamma, mean)   # x (not x-hat) and the mean: x-hat is recomputed in backward
            return y.reshape(x.shape).astype(_out_dtype(self.dtypes[0], y.dtype), copy=False)
        mean = x2 @ xp.full(D, 1.0 / D, dtype=x2.dtype)
        d = xp.empty(x2.shape, x2.dtype)          # x - mean, then xhat in place
        inv = xp.empty(x2.shape[0], x2.dtype)
        params = [a for a in (gamma, beta) if a is not None]
        y = xp.empty(x2.shape, np.result_type(x2, *params)) if params else d

        def rows(lo, hi):  # everything after the means is row by row
            dr, ir = d[lo:hi], inv[lo:hi]
            xp.subtract(x2[lo:hi], mean[lo:hi, None], out=dr)
            if xp is np:
                xp.einsum("ij,ij->i", dr, dr, out=ir)
            else:   # (CuPy's einsum takes no out=)
                ir[...] = xp.einsum("ij,ij->i", dr, dr)
            ir *= 1.0 / D
            ir += self.epsilon
            xp.sqrt(ir, out=ir)
            xp.divide(1.0, ir, out=ir)
            dr *= ir[:, None]
            if gamma is not None:
                xp.multiply(dr, gamma.reshape(D), out=y[lo:hi])
            if beta is not None:
                xp.add(y[lo:hi] if gamma is not None else dr, beta.reshape(D), out=y[lo:hi])
        split_pass(xp, rows, x2.shape[0], x2.size)
        self.rows = D
        self.saved = (d, inv, gamma, None)
        return y.reshape(x.shape).astype(_out_dtype(self.dtypes[0], y.dtype), copy=False)

    def _rows_backward(self, gy):
        """dx = inv (gxhat - mean(gxhat) - xhat mean(gxhat xhat)) with gxhat = gy gamma, on (R, D) rows;
        both means as matrix-vector products with gamma (no gxhat * xhat temporary). The products run on
        the BLAS threads; the passes before and after them row by row (over lamina's threads when large)."""
        xp = self.xp
        xhat, inv, gamma, mean = self.saved
        D = self.rows
        gy2 = gy.astype(xhat.dtype, copy=False).reshape(-1, D)
        R = gy2.shape[0]
        need_x, need_g, need_b = self.needs_grad
        if mean is not None:   # the kernels' forward ran: saved x (not x-hat), inv and the mean
            g = None if gamma is None else gamma.reshape(D)
            done = _cuda_kernels.kernels_for(xp).layer_norm_backward(
                xp.ascontiguousarray(gy2), xhat, mean, inv, g, need_x, need_g or need_b)
            if done is not None:
                dx, dgamma, dbeta = done
                return _in_dtypes((None if dx is None else dx.reshape(gy.shape),
                                   dgamma.reshape(gamma.shape) if need_g else None,
                                   dbeta.reshape(self.beta_shape) if need_b else None), self.dtypes)
            xhat = (xhat - mean[:, None]) * inv[:, None]   # the kernels were switched off in between
        p = xp.empty(gy2.shape, gy2.dtype) if (need_g or need_x) else None  # gy xhat: dgamma's rows, and
        dx = xp.empty(gy2.shape, gy2.dtype) if need_x else None            # gxhat xhat / gamma
        g = None if gamma is None else gamma.reshape(D)

        def first(lo, hi):
            if p is not None:
                xp.multiply(gy2[lo:hi], xhat[lo:hi], out=p[lo:hi])
            if dx is not None:
                if g is None:
                    dx[lo:hi] = gy2[lo:hi]
                else:
                    xp.multiply(gy2[lo:hi], g, out=dx[lo:hi])
        split_pass(xp, first, R, gy2.size)
        dgamma = sum_rows(xp, p).reshape(gamma.shape) if need_g else None
        dbeta = sum_rows(xp, gy2).reshape(self.beta_shape) if need_b else None
        if need_x:
            if g is None:
                m1, m2 = sum_rows(xp, gy2.T), sum_rows(xp, p.T)
            else:
                m1, m2 = gy2 @ g, p @ g
            m1 *= 1.0 / D
            m2 *= 1.0 / D

            def second(lo, hi):
                dr = dx[lo:hi]
                dr -= m1[lo:hi, None]
                dr -= xp.multiply(xhat[lo:hi], m2[lo:hi, None], out=p[lo:hi])
                dr *= inv[lo:hi, None]
            split_pass(xp, second, R, gy2.size)
            dx = dx.reshape(gy.shape)
        return _in_dtypes((dx, dgamma, dbeta), self.dtypes)

    def backward(self, gy):
        if self.rows is not None:
            return self._rows_backward(gy)
        xhat, inv, gamma, d = self.saved
        gy = gy.astype(xhat.dtype, copy=False)
        dx = dgamma = dbeta = None
        if self.needs_grad[1]:
            dgamma = _sum_over(self.xp, gy * xhat, self.other).reshape(gamma.shape)
        if self.needs_grad[2]:
            dbeta = _sum_over(self.xp, gy, self.other).reshape(self.beta_shape)
        if self.needs_grad[0]:
            gxhat = gy if gamma is None else gy * gamma.reshape(self.bshape)
            if self.rms_scaling:
                # y = x * inv: d inv/dx = -inv^3 (x - mean) / M
                dx = inv * gxhat - d * (inv * inv) * (gxhat * xhat).mean(axis=self.axes, keepdims=True)
            else:
                dx = _norm_backward(gxhat, xhat, inv, self.axes, self.xp)
        return _in_dtypes((dx, dgamma, dbeta), self.dtypes)


def _channel_sums(xp, a, b=None):
    """For a (N, S, C) array: each sample's and channel's sum over positions, of a (or of a * b), (N, C): a
    matrix-vector product with ones (BLAS), or einsum's one pass for a product."""
    n, size, c = a.shape
    if b is not None:
        return xp.einsum("nsc,nsc->nc", a, b)
    return xp.matmul(xp.ones(size, a.dtype), a) if size else xp.zeros((n, c), a.dtype)


def _spread_groups(xp, per, groups):
    """(N, C) per-channel values -> (N, 1, C), each channel holding its group's sum."""
    n, c = per.shape
    g = per.reshape(n, groups, c // groups).sum(axis=-1, keepdims=True)
    return xp.broadcast_to(g, (n, groups, c // groups)).reshape(n, 1, c)


def _group_sums(xp, a, groups, b=None):
    """For a (N, S, C) array: the sums over positions and over each group's channels, of a (or of a * b), as
    (N, 1, C), each channel holding its group's sum: the channels' sums first (_channel_sums), then the groups'.
    NumPy's own reduction over axes (1, 3) of the (N, S, G, C/G) view walks its short inner axis element by
    element ((64, 1024, 8, 4) float32: 12.6 ms against 0.22 for the product with ones)."""
    return _spread_groups(xp, _channel_sums(xp, a, b), groups)


class GroupNorm(Op):
    """Per-sample normalisation within groups of channels (channels on ``axis``, default last). Computed on
    the (N, S, C) rows of the channels-last input (S: every position): through its compiled kernels, each sample's
    passes while it is in cache, where they run (kernels.group_norm_forward / group_norm_backward), else NumPy's
    passes with the statistics through _group_sums. (64, 32, 32, 32) float32 with 8 groups, forward + backward at 2
    threads: 80 ms (a NumPy reduction over axes (1, 3)) -> 12.8 (_group_sums) -> 6.9 (the batch norm's kernels sample
    by sample) -> 2.7 (its own); PyTorch 1.9-2.0."""

    def forward(self, x, gamma, beta):
        xp = self.xp
        ax = _channel_axis(self.axis, x.ndim, "group_norm")
        C, G = x.shape[ax], self.groups
        if G <= 0 or C % G:
            raise ValueError(f"group_norm: the number of channels ({C}) must be a positive multiple of "
                             f"groups ({G}).")
        _check_param(gamma, "gamma", (C,), "group_norm")
        _check_param(beta, "beta", (C,), "group_norm")
        self.dtypes = tuple(None if a is None else a.dtype for a in (x, gamma, beta))
        x, gamma, beta = _upcast(_compute_dtype(x.dtype), x, gamma, beta)
        xc = xp.moveaxis(x, ax, -1)  # channels last: (N, ..., C)
        self.ax, self.cshape = ax, xc.shape
        # (N, S, C) rows, a copy where the channels were not last (channels first: one transposing pass)
        x3 = xp.ascontiguousarray(xc.reshape(xc.shape[0], _prod(xc.shape[1:-1]), C))
        self.kernels = False
        done = _kernels.group_norm_forward(x3, G, gamma, beta, self.epsilon)
        if done is not None:   # compiled (kernels.py): x and the mean kept, x-hat recomputed in backward
            y, mean, inv = done
            self.kernels = True
            self.saved = (x3, inv, gamma, mean)
            return xp.moveaxis(y.reshape(xc.shape), -1, ax).astype(_out_dtype(self.dtypes[0], y.dtype), copy=False)
        count = x3.shape[1] * (C // G)   # values in each sample's group
        d = x3 - _group_sums(xp, x3, G) / count
        inv = 1.0 / xp.sqrt(_group_sums(xp, d, G, d) / count + self.epsilon)   # (N, 1, C)
        d *= inv   # x-hat, in place
        y = d if gamma is None else d * gamma
        if beta is not None:
            y = y + beta if y is d else xp.add(y, beta, out=y)
        self.saved = (d, inv, gamma, None)
        return xp.moveaxis(y.reshape(xc.shape), -1, ax).astype(_out_dtype(self.dtypes[0], y.dtype), copy=False)

    def backward(self, gy):
        xp = self.xp
        xhat, inv, gamma, mean = self.saved
        n, size, c = xhat.shape
        gc = xp.moveaxis(gy.astype(xhat.dtype, copy=False), self.ax, -1).reshape(n, size, c)
        need_x, need_g, need_b = self.needs_grad
        if self.kernels:   # saved x (not x-hat), inv and the mean, each (N, C)
            done = _kernels.group_norm_backward(xp.ascontiguousarray(gc), xhat, self.groups, mean, inv, gamma, need_x)
            if done is not None:
                dx, dgamma, dbeta = done
                if dx is not None:
                    dx = xp.moveaxis(dx.reshape(self.cshape), -1, self.ax)
                return _in_dtypes((dx, dgamma if need_g else None, dbeta if need_b else None), self.dtypes)
            inv = inv[:, None, :]                          # the kernels were switched off in between
            xhat = (xhat - mean[:, None, :]) * inv
        # per sample and channel: the sums of gy x-hat (dgamma's) and of gy (dbeta's), each one pass
        e = _channel_sums(xp, gc, xhat) if need_x or need_g else None
        f = _channel_sums(xp, gc) if need_x or need_b else None
        dgamma = e.sum(axis=0) if need_g else None
        dbeta = f.sum(axis=0) if need_b else None
        dx = None
        if need_x:
            # dx = inv (g - mean(g) - x-hat mean(g x-hat)) with g = gy gamma, the means over each sample's group:
            # from the per-channel sums (times gamma), summed within the groups
            if gamma is not None:
                e, f = e * gamma, f * gamma
            count = size * (c // self.groups)
            dx = gc * (inv if gamma is None else inv * gamma)
            dx -= xhat * (inv * (_spread_groups(xp, e, self.groups) / count))
            dx -= inv * (_spread_groups(xp, f, self.groups) / count)
            dx = xp.moveaxis(dx.reshape(self.cshape), -1, self.ax)
        return _in_dtypes((dx, dgamma, dbeta), self.dtypes)


def batch_norm(x, gamma, beta, mean, variance, epsilon=1e-3, axis=-1):
    """Batch normalisation with given statistics (inference, Keras's moving mean and variance).

    Args:
        x: input (..., C, ...), channels on ``axis``.
        gamma, beta: (C,) scale and offset, or None (no scale / no offset).
        mean, variance: (C,) statistics to normalise with.
        epsilon: added to the variance.
    Output: the shape of x.
    Forward: y = (x - mean) * gamma / sqrt(variance + epsilon) + beta.
    Backward: dx = gy * gamma * inv; dgamma = sum(gy * xhat); dbeta = sum(gy);
    dmean = -sum(gy) * gamma * inv; dvariance = -0.5 * gamma * inv^3 * sum(gy * (x - mean)).
    """
    return BatchNorm.apply(x, gamma, beta, mean, variance, epsilon=float(epsilon), axis=int(axis))


def batch_norm_training(x, gamma, beta, epsilon=1e-3, axis=-1, mask=None, reducer=None):
    """Batch normalisation with the statistics of this batch (training mode).

    The mean and the biased variance are taken over every axis but the channel ``axis``; with a
    ``mask`` (the input's shape without the channel axis; 1 keeps an entry, 0 ignores it) they are
    weighted means over the kept entries, as Keras does for masked sequences. Gradients flow through
    the statistics.

    Returns: (y, batch_mean, batch_variance), the last two of shape (C,) (differentiable too).
    Forward: y = (x - mean) / sqrt(var + epsilon) * gamma + beta.
    Backward: dx = inv * (gxhat - mean(gxhat) - xhat * mean(gxhat * xhat)), gxhat = gy * gamma,
    plus the contributions of the mean and variance outputs (1/M and 2 (x - mean) / M).

    ``reducer`` (synchronized batch norm, from lamina.distribution during a data-parallel step): the
    statistics are those of the global batch, every rank's slice together (see SyncBatchNormTraining).
    """
    if reducer is not None:
        return SyncBatchNormTraining.apply(x, gamma, beta, mask, epsilon=float(epsilon), axis=int(axis),
                                           reducer=reducer)
    return BatchNormTraining.apply(x, gamma, beta, mask, epsilon=float(epsilon), axis=int(axis))


def layer_norm(x, gamma=None, beta=None, axes=-1, epsilon=1e-3, rms_scaling=False):
    """Layer normalisation (Keras LayerNormalization) over ``axes`` of each sample.

    Args:
        x: input of any rank.
        gamma, beta: parameters with the sizes of x on ``axes`` (in sorted axis order), or None.
        axes: int or list of ints: the axes normalised together.
        rms_scaling: Keras 3's option: y = x / sqrt(var(x) + epsilon) * gamma (no centring, no beta).
    Output: the shape of x.
    Forward: y = (x - mean) / sqrt(var + epsilon) * gamma + beta, statistics over ``axes``.
    Backward: dx = inv * (gxhat - mean(gxhat) - xhat * mean(gxhat * xhat)); dgamma = sum(gy * xhat);
    dbeta = sum(gy), sums over the other axes.
    """
    if isinstance(axes, (int, np.integer)):
        axes = (int(axes),)
    return LayerNorm.apply(x, gamma, beta, axes=tuple(int(a) for a in axes), epsilon=float(epsilon),
                           rms_scaling=bool(rms_scaling))


def group_norm(x, gamma=None, beta=None, groups=32, epsilon=1e-3, axis=-1):
    """Group normalisation (Keras GroupNormalization): channels split into ``groups`` groups; each
    sample's group is normalised over its channels and all spatial positions.

    Args:
        x: input (N, ..., C) (channels on ``axis``, default last).
        gamma, beta: (C,) or None.
        groups: number of groups; C must be a multiple of it (groups == C is instance norm, 1 is layer norm
            over all non-batch axes).
    Output: the shape of x.
    Forward: reshape to (N, S, G, C/G); y = (x - mean) / sqrt(var + epsilon) * gamma + beta with the
    statistics over S and C/G.
    Backward: the three-term rule within each group; dgamma, dbeta summed over all but the channel axis.
    """
    return GroupNorm.apply(x, gamma, beta, groups=int(groups), epsilon=float(epsilon), axis=int(axis))
