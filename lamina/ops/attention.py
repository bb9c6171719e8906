"""Scaled dot-product attention as one fused op: forward and hand-written backward side by side.

Attention lets every query position look at all key positions at once and take a weighted mix of
their values, the weights saying how much each position matters to this query:

    S = scale * Q K^T            (..., Tq, Tk)   scores: how well each query matches each key
    W = softmax(S) over keys     masked entries get weight 0; a row with no allowed key gives zeros
    O = dropout(W) V             (..., Tq, dv)

One op instead of a chain of matmul/softmax/where/multiply ops keeps a single (Tq, Tk) weight
array in memory for backward (plus the dropout mask) and runs five batched GEMMs in all.
"""
import numpy as np

from .. import backend
from ..tensor import Op, Tensor, as_tensor
from ..threads import split_rows
from . import cuda_kernels as _cuda_kernels
from .math import mm, mm_tn, sum_rows, unbroadcast

__all__ = ["scaled_dot_product_attention", "causal_mask"]


def causal_mask(q_len, k_len, xp=np):
    """Boolean (q_len, k_len) mask, True where query i may attend key j (j <= i): a lower triangle,
    aligned at the top-left as in Keras's ``use_causal_mask`` and torch's ``is_causal``."""
    return xp.tril(xp.ones((q_len, k_len), dtype=bool))


class ScaledDotProductAttention(Op):
    """Fused attention. Inputs q, k, v (float) and an optional boolean mask (True = attend).
    Params: scale, rate (dropout on the weights), training, is_causal, return_weights, empty_rows."""

    half_via_float32 = True  # float16 through float32 BLAS (tensor.Op)
    grad_into = None         # a ProjectHeads op whose outputs q, k, v are (see ProjectHeads.gradient_views)
    # The scores are computed transposed, sT = K (scale Q)^T of shape (..., Tk, Tq): the softmax over keys
    # then reduces down columns (axis -2), which NumPy vectorises across rows, while a max or sum over a
    # short last axis runs row by row (softmax of (32, 4, 64, 64) scores: 1.04 -> 0.70 ms). The weights W
    # are the transposed view of that buffer; every product reads it with BLAS's transpose flag.

    def forward(self, q, k, v, mask):
        xp = self.xp
        dt = q.dtype.type
        self.shapes = (q.shape, k.shape, v.shape)
        allowed = None if mask is None else mask.astype(bool, copy=False)
        if self.is_causal:
            tri = causal_mask(q.shape[-2], k.shape[-2], xp)
            allowed = tri if allowed is None else allowed & tri
        allowed_t = None if allowed is None else xp.swapaxes(allowed, -1, -2)
        self.dead = None
        if allowed is not None and self.empty_rows != "zeros":
            # 'uniform' (Keras): a query with no allowed key keeps its uniform weights
            dead = ~allowed_t.any(axis=-2, keepdims=True)
            self.dead = dead if bool(dead.any()) else None
        tq, tk = q.shape[-2], k.shape[-2]
        # the scores' batch axes: those of q, k, v, and of a mask that has more (every head its own mask)
        batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2],
                                    () if allowed is None else allowed.shape[:-2])
        if (q.shape[:-2], k.shape[:-2], v.shape[:-2]) != (batch,) * 3:  # views, for the products' slices
            q, k, v = (xp.broadcast_to(a, batch + a.shape[-2:]) for a in (q, k, v))
        keep = None
        if self.training and self.rate > 0.0:
            # inverted dropout on the weights: drop whole key positions for a query, as in Keras (one draw
            # for the whole batch, before any split: the same mask whatever the thread count)
            draw = (self.rng or backend.rng()).random(batch + (tq, tk), dtype=np.float32) >= self.rate
            keep = draw.astype(q.dtype) * dt(1.0 / (1.0 - self.rate))
            if xp is not np:
                keep = backend.to_device(keep, xp)
        # A positive scale is folded into the softmax, softmax(scale S) = exp(scale (S - max S)) / sum, in the
        # pass that subtracts the maxima (and backward into the one that forms dS), so that Q is not multiplied
        # (a strided pass over a view of the projection, 0.11 ms of 1.1 at (32, 4, 64, 32)); any other scale
        # multiplies Q (Tq*d products rather than Tq*Tk), whose maxima then need no sign.
        self.fold = fold = bool(np.isfinite(self.scale) and self.scale > 0)
        qs = q if fold else xp.multiply(q, dt(self.scale))
        factor = dt(self.scale) if fold else dt(1.0)
        st = xp.empty(batch + (tk, tq), q.dtype)        # S^T, then the weights W^T in place
        if len(batch) == 2:
            # (N, heads, Tq, dv) as a view of an (N, Tq, heads, dv) array: the heads side by side is what
            # every attention layer asks for next (transpose, reshape to (N, Tq, heads*dv)), and that is then
            # a view instead of a copy; the products write the strided view directly (BLAS's leading dimension)
            out = xp.swapaxes(xp.empty((batch[0], tq, batch[1], v.shape[-1]), q.dtype), 1, 2)
        else:
            out = xp.empty(batch + (tq, v.shape[-1]), q.dtype)
        low = dt(xp.finfo(q.dtype).min) if allowed is not None else None

        def part(sl):
            s = st[sl]
            xp.matmul(k[sl], xp.swapaxes(qs[sl], -1, -2), out=s)   # (..., Tk, Tq): S^T
            a = None if allowed_t is None else _part(allowed_t, sl, len(batch))
            if a is not None:
                # the most negative finite float: exp() of it minus the column max is exactly 0, and a
                # query with no allowed key stays finite (uniform), to be zeroed below instead of NaN
                xp.copyto(s, low, where=~a)            # in place: keeps the transposed layout
            if s.shape[-2] == 0:                       # no keys: no weights, and W V of no values is zeros
                pass
            # two compiled passes around the exp (kernels.py), one launch on a GPU (cuda_kernels.py)
            elif not _cuda_kernels.kernels_for(xp).softmax_columns(s, factor):
                s -= s.max(axis=-2, keepdims=True)     # stable softmax over keys, in place
                if fold:
                    s *= factor
                xp.exp(s, out=s)
                s /= s.sum(axis=-2, keepdims=True)
            if a is not None and self.empty_rows == "zeros":
                s *= a
            w = xp.swapaxes(s, -1, -2)                 # (..., Tq, Tk), a view
            if keep is not None:
                w = w * keep[sl]
            xp.matmul(w, v[sl], out=out[sl])
        _by_batch(xp, part, batch, (q, k, v), st.size, tq * tk * max(q.shape[-1], v.shape[-1]))
        self.saved = (qs, k, v, st, keep, out)
        return (out, xp.swapaxes(st, -1, -2)) if self.return_weights else out

    def backward(self, gy, gw=None):
        xp = self.xp
        qs, k, v, st, keep, out = self.saved
        q_shape, k_shape, v_shape = self.shapes
        batch = st.shape[:-2]
        need_v, need_s = self.needs_grad[2], self.needs_grad[0] or self.needs_grad[1]
        # gradients over the broadcast batch shape, reduced to each input's shape after the parts; where q, k
        # and v came from one ProjectHeads (self-attention), straight into the buffer its backward multiplies
        into = self.grad_into.gradient_views() if self.grad_into is not None and all(self.needs_grad[:3]) else None
        if into is not None and [a.shape for a in into] == [batch + s[-2:] for s in (q_shape, k_shape, v_shape)] \
                and all(a.dtype == qs.dtype for a in into):
            gq, gk, gv = into
        else:
            gv = xp.empty(batch + v_shape[-2:], v.dtype) if need_v else None
            gq = xp.empty(batch + q_shape[-2:], qs.dtype) if self.needs_grad[0] else None
            gk = xp.empty(batch + k_shape[-2:], k.dtype) if self.needs_grad[1] else None
        scale = qs.dtype.type(self.scale)
        factor = scale if self.fold else qs.dtype.type(1.0)

        def part(sl):
            s = st[sl]
            keep_t = None if keep is None else xp.swapaxes(keep[sl], -1, -2)
            if need_v:
                xp.matmul(s if keep is None else s * keep_t, gy[sl], out=gv[sl])   # dV = Wd^T dO
            if not need_s:
                return
            ds_t = v[sl] @ xp.swapaxes(gy[sl], -1, -2)                               # dWd^T = V dO^T
            if keep is not None:
                ds_t *= keep_t
            # softmax backward: dS = W * (dW - sum_j dW_j W_j); masked entries have W = 0, so dS = 0.
            # The row sum needs no (Tq, Tk) temporary: sum_j (dO V^T)_ij keep_ij W_ij = dO_i . O_i
            # (a row-wise dot product: einsum's one pass, 3x faster than a product and a sum over a short axis)
            # (C order: with the output laid out heads side by side, einsum would follow that layout)
            rowsum = xp.ascontiguousarray(xp.einsum("...i,...i->...", gy[sl], out[sl]))[..., None, :]  # (..., 1, Tq)
            if gw is not None:                                                       # weights returned and used
                gw_t = xp.swapaxes(_part(gw, sl, len(batch)), -1, -2)
                ds_t += gw_t
                rowsum += (gw_t * s).sum(axis=-2, keepdims=True)
            # one compiled pass (kernels.py; one launch on a GPU)
            if not _cuda_kernels.kernels_for(xp).softmax_columns_grad(ds_t, rowsum, s, factor):
                ds_t -= rowsum
                ds_t *= s
                if self.fold:       # dS of the unscaled scores Q K^T: no scaling of dQ below, Q itself for dK
                    ds_t *= factor
            if self.dead is not None:  # uniform rows came from constants (Keras's where): no score gradient
                ds_t *= ~_part(self.dead, sl, len(batch))
            if gq is not None:
                xp.matmul(xp.swapaxes(ds_t, -1, -2), k[sl], out=gq[sl])   # dS K, then the scale (unless folded)
                if not self.fold:
                    gq[sl] *= scale
            if gk is not None:
                xp.matmul(ds_t, qs[sl], out=gk[sl])                  # dK = dS^T (scale Q), or folded dS^T Q
        _by_batch(xp, part, batch, (qs, k, v, gy, out), st.size,
                  st.shape[-1] * st.shape[-2] * max(qs.shape[-1], v.shape[-1]))
        return (None if gq is None else unbroadcast(gq, q_shape), None if gk is None else unbroadcast(gk, k_shape),
                None if gv is None else unbroadcast(gv, v_shape), None)


class ProjectHeads(Op):
    """x (N, T, dim) through several EinsumDense kernels (dim, heads, d_i) with biases (heads, d_i) or None,
    as ONE product: each projection comes out split by head, (N, heads, T, d_i), a view of one
    (N*T, sum of heads*d_i) array. Self-attention projects one input three times (query, key, value): one
    GEMM three times as wide forward, and backward one product for the input's gradient (instead of three
    and two additions of input-sized gradients) and one for the kernels'.
    Inputs: x, the kernels, then their biases (None where a projection has none)."""

    half_via_float32 = True  # float16 through float32 BLAS (tensor.Op)
    same_float_dtype = True
    none_grads = True        # a projection no gradient reached adds nothing
    _grads = None            # (buffer, views) handed out by gradient_views for this backward

    def forward(self, x, *wb):
        xp = self.xp
        m = len(wb) // 2
        ws, bs = wb[:m], wb[m:]
        n, t, dim = x.shape
        widths = [w.shape[1] * w.shape[2] for w in ws]
        w_all = xp.concatenate([w.reshape(dim, -1) for w in ws], axis=1)     # (dim, sum of heads*d_i)
        y = mm(xp, x.reshape(n * t, dim), w_all)
        if any(b is not None for b in bs):
            y += xp.concatenate([xp.zeros(c, y.dtype) if b is None else b.reshape(-1) for b, c in zip(bs, widths)])
        ends = np.cumsum(widths)
        # each projection: its kernel's shape, whether it has a bias, and its columns of y
        self.parts = [(w.shape, b is not None, slice(int(e) - c, int(e)))
                      for w, b, c, e in zip(ws, bs, widths, ends)]
        self.saved = (x, w_all)
        # rows split into (N, T) and columns into (heads, d): still views of y
        return tuple(xp.swapaxes(y[:, cols].reshape(n, t, shape[1], shape[2]), 1, 2)
                     for shape, _, cols in self.parts)

    def gradient_views(self):
        """Arrays for the outputs' gradients, shaped as the outputs, that are views of the one (N*T, width)
        array backward multiplies: the op computing those gradients (attention, which gets this op as its
        ``grad_into``) writes them there, and backward takes the array as it is instead of copying each
        head-split gradient in (three transposing copies of an input-sized array per self-attention)."""
        x, w_all = self.saved
        n, t, _ = x.shape
        g = self.xp.empty((n * t, w_all.shape[1]), w_all.dtype)
        views = tuple(self.xp.swapaxes(g[:, cols].reshape(n, t, shape[1], shape[2]), 1, 2)
                      for shape, _, cols in self.parts)
        self._grads = (g, views)
        return views

    def backward(self, *gys):
        xp = self.xp
        x, w_all = self.saved
        n, t, dim = x.shape
        handed, self._grads = self._grads, None
        if handed is not None and all(gy is view for gy, view in zip(gys, handed[1])):
            g = handed[0]   # every gradient arrived as written into gradient_views' array, nothing added
        else:
            g = xp.empty((n * t, w_all.shape[1]), w_all.dtype)   # the product's gradient, filled per projection
            for gy, (shape, _, cols) in zip(gys, self.parts):
                part = g[:, cols].reshape(n, t, shape[1], shape[2])                 # a view into g
                if gy is None:
                    part[...] = 0
                else:
                    xp.copyto(part, xp.swapaxes(gy, 1, 2))
        m = len(self.parts)
        gx = mm(xp, g, w_all.T).reshape(x.shape) if self.needs_grad[0] else None
        gw = mm_tn(xp, x.reshape(n * t, dim), g) if any(self.needs_grad[1:1 + m]) else None
        gb = sum_rows(xp, g) if any(self.needs_grad[1 + m:]) else None
        gws = [xp.ascontiguousarray(gw[:, cols]).reshape(shape) if self.needs_grad[1 + i] else None
               for i, (shape, _, cols) in enumerate(self.parts)]
        gbs = [gb[cols].reshape(shape[1:]).copy() if has_bias and self.needs_grad[1 + m + i] else None
               for i, (shape, has_bias, cols) in enumerate(self.parts)]
        return (gx, *gws, *gbs)


def project_heads(x, kernels, biases):
    """x (N, T, dim) through each EinsumDense kernel (dim, heads, d_i) and bias (heads, d_i) (or None), in one
    product: a tuple of (N, heads, T, d_i) tensors (see ProjectHeads)."""
    if len(kernels) != len(biases):
        raise ValueError(f"project_heads: {len(kernels)} kernels but {len(biases)} biases")
    return ProjectHeads.apply(as_tensor(x), *kernels, *biases)


def _projection_of(q, k, v):
    """The ProjectHeads op whose three outputs are exactly q, k and v (in that order), or None."""
    op = q._op
    if (op is None or type(op) is not ProjectHeads or len(op.parts) != 3 or k._op is not op or v._op is not op
            or (q._out_index, k._out_index, v._out_index) != (0, 1, 2)):
        return None
    return op


# Attention is split over threads by its first batch axis from this many scores (a (32, 4, 64, 64) batch has
# 524 K): each thread runs its samples' products, softmax and weighted sums; (32, 4, 64, 32) fwd+bwd 5.8 ->
# 4.7 ms. Only while each batch entry's product is small enough for OpenBLAS to run it on one thread (M N K
# up to 2^18; NumPy calls it once per entry): larger ones run threaded, and two threads calling them at once
# compete for the BLAS team ((8, 4, 128, 64) 4.3-4.8 -> 4.9-7.7 ms, (4, 8, 512, 64) 57 -> 67-70 when split).
_SPLIT_SCORES = 1 << 18
_SMALL_PRODUCT = 1 << 18


def _part(a, sl, nbatch):
    """``a`` (broadcastable to batch + 2 trailing axes) for the batch slice ``sl`` of the first axis: sliced
    where a has that axis at full length, else whole (it broadcasts)."""
    if a.ndim < nbatch + 2 or a.shape[0] == 1:
        return a
    return a[sl]


def _by_batch(xp, part, batch, arrays, scores, product):
    """part(slice) over the first batch axis, split over lamina's threads when large, when each entry's
    product (M N K = ``product``) runs on one BLAS thread, and when every array has that axis at full length
    (no broadcasting along it); else part(slice(None)) once."""
    n = batch[0] if batch else 1
    if (xp is np and bool(batch) and product <= _SMALL_PRODUCT
            and all(a.ndim == len(batch) + 2 and a.shape[0] == n for a in arrays)):
        split_rows(lambda lo, hi: part(slice(lo, hi)), n, scores, _SPLIT_SCORES)
    else:
        part(slice(None))


def _shape_error(msg, q, k, v):
    return ValueError(f"scaled_dot_product_attention: {msg}. Received: query shape {q.shape}, key shape "
                      f"{k.shape}, value shape {v.shape}.")


def scaled_dot_product_attention(q, k, v, mask=None, scale=None, dropout_rate=0.0, training=False,
                                 is_causal=False, return_weights=False, rng=None, empty_rows="zeros"):
    """Attention of queries over keys, mixing values: ``softmax(scale * q k^T, masked) v``.

    Args:
        q: queries, shape (..., Tq, d).
        k: keys, shape (..., Tk, d).
        v: values, shape (..., Tk, dv).
        mask: optional boolean array/Tensor broadcastable to (..., Tq, Tk); True = may attend.
            A query row with no allowed key gets all-zero weights (and output), never NaN, or with
            ``empty_rows="uniform"`` equal weights over all keys, as Keras's masked softmax gives (the
            attention layers use that); either way no gradient reaches its scores.
        scale: multiplier of the scores; default 1 / sqrt(d).
        dropout_rate: fraction of attention weights dropped when ``training`` (inverted dropout,
            mask drawn from ``lamina.backend.rng()``).
        is_causal: also forbid query i to attend key j > i (lower-triangular mask, top-left aligned).
        return_weights: also return the attention weights W (before dropout), shape (..., Tq, Tk).
        rng: a NumPy Generator for the dropout mask (default: lamina's seeded one).
    Output: (..., Tq, dv), or (output, weights).

    Forward: S = scale q k^T; W = softmax(S) with masked entries 0; O = dropout(W) v.
    Backward: dV = Wd^T dO; dW = dO V^T (times the dropout mask); dS = W * (dW - sum(dW * W, -1)),
    where the row sum equals sum(dO * O, -1) (no (Tq, Tk) temporary); dQ = scale dS K; dK = dS^T (scale Q).

    >>> import numpy as np
    >>> q = k = v = np.eye(2, dtype="float32")[None]
    >>> scaled_dot_product_attention(q, k, v, is_causal=True).numpy()[0, 0]
    array([1., 0.], dtype=float32)
    """
    q, k, v = as_tensor(q), as_tensor(k), as_tensor(v)
    for name, t in (("query", q), ("key", k), ("value", v)):
        if t.ndim < 2 or not np.issubdtype(t.dtype, np.floating):
            raise _shape_error(f"{name} must be a float tensor of rank >= 2 (..., length, features)", q, k, v)
    if q.shape[-1] != k.shape[-1]:
        raise _shape_error("query and key must have the same last axis (the dot product's length)", q, k, v)
    if k.shape[-2] != v.shape[-2]:
        raise _shape_error("key and value must have the same length (axis -2)", q, k, v)
    if not (k.dtype == q.dtype == v.dtype):
        raise ValueError(f"scaled_dot_product_attention: query, key and value must share one dtype. "
                         f"Received: {q.dtype}, {k.dtype}, {v.dtype}.")
    try:
        batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except ValueError:
        raise _shape_error("the leading (batch, head) axes must broadcast", q, k, v) from None
    if mask is not None:
        mask = mask if isinstance(mask, Tensor) else Tensor(backend.to_device(mask, backend.get_array_module(q.data)))
        try:
            np.broadcast_shapes(mask.shape, batch + (q.shape[-2], k.shape[-2]))
        except ValueError:
            raise ValueError(f"scaled_dot_product_attention: mask of shape {mask.shape} does not broadcast to "
                             f"the scores' shape {batch + (q.shape[-2], k.shape[-2])} (..., Tq, Tk).") from None
    if not isinstance(dropout_rate, (int, float, np.floating)) or not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"scaled_dot_product_attention: dropout_rate must be in [0, 1). "
                         f"Received: dropout_rate={dropout_rate!r}")
    if empty_rows not in ("zeros", "uniform"):
        raise ValueError(f"scaled_dot_product_attention: empty_rows must be 'zeros' or 'uniform'. "
                         f"Received: empty_rows={empty_rows!r}")
    if scale is None:
        scale = 1.0 / float(np.sqrt(q.shape[-1]))
    return ScaledDotProductAttention.apply(q, k, v, mask, scale=float(scale), rate=float(dropout_rate),
                                           training=bool(training), is_causal=bool(is_causal),
                                           return_weights=bool(return_weights), rng=rng, empty_rows=empty_rows,
                                           grad_into=_projection_of(q, k, v))
