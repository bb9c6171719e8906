"""Attention layers: MultiHeadAttention, Attention (dot / concat), AdditiveAttention, and positional
embeddings (learned PositionEmbedding, fixed SinusoidalPositionEncoding, TokenAndPositionEmbedding).

Attention lets a model focus on what matters: each query position scores every key position,
turns the scores into weights with a softmax, and takes the weighted mix of the values. Because
every position is handled at once (no recurrence), a Transformer needs the positions told to it:
that is what the positional embeddings add.

Masks follow Keras: True = keep/attend. Padding masks from ``Embedding(mask_zero=True)`` (the
``_keras_mask`` of the inputs) are combined with ``attention_mask`` and the causal mask by AND.
"""
import numpy as np

from .. import backend, initializers, ops
from ..ops.attention import causal_mask, project_heads, scaled_dot_product_attention
from ..tensor import Tensor
from .layer import InputSpec, KerasTensor, Layer

__all__ = ["MultiHeadAttention", "Attention", "AdditiveAttention", "PositionEmbedding",
           "SinusoidalPositionEncoding", "TokenAndPositionEmbedding"]


def _positive_int(layer, name, value, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{type(layer).__name__} '{layer.name}': {name} must be a positive int. "
                         f"Received: {name}={value!r}")
    return int(value)


def _shape_of(x):
    return None if x is None else tuple(x.shape) if hasattr(x, "shape") else np.shape(x)   # (a nested list)


def _mask_array(m, xp):
    """A mask (Tensor, array, list) as a boolean array on the device of xp, or None."""
    if m is None:
        return None
    if isinstance(m, Tensor):
        m = m.data
    if backend.get_array_module(m) is not xp:
        m = backend.to_device(np.asarray(m), xp)
    return m.astype(bool, copy=False)


def _query_value_call(layer, title, short, args, kwargs):
    """The (query, value, key) call of a multi-head layer: arguments in place, a value required, and the
    layer built from the shapes it is first called with."""
    args, kwargs = _move_call_args(layer, args, kwargs, ("query", "value", "key"))
    if len(args) < 2 or args[1] is None:
        raise ValueError(f"{title} '{layer.name}' needs a value: call it as {short}(query, value) "
                         f"({short}(x, x) for self-attention).")
    if not layer.built:
        layer.build(_shape_of(args[0]), _shape_of(args[1]), _shape_of(args[2]) if len(args) > 2 else None)
    return args, kwargs


def _move_call_args(layer, args, kwargs, names):
    """Keras lets the first inputs of attention layers come by keyword (``query=x, value=y``): make them
    positional so that Layer.__call__ sees the first one as the input."""
    args = list(args)
    for i, name in enumerate(names):
        if name in kwargs:
            if len(args) > i:
                raise TypeError(f"{type(layer).__name__} '{layer.name}': got '{name}' both by position and by keyword.")
            if len(args) < i:
                args.extend([None] * (i - len(args)))
            args.append(kwargs.pop(name))
    return tuple(args), kwargs


def _project_heads(x, kernel, bias, n, t, heads, d):
    """x (N, T, dim) through an EinsumDense kernel (dim, heads, d) and bias (heads, d): (N, heads, T, d)."""
    k2 = ops.reshape(kernel, (kernel.shape[0], heads * d))
    b2 = None if bias is None else ops.reshape(bias, (heads * d,))
    y = ops.reshape(ops.linear(x, k2, b2), (n, t, heads, d))
    return ops.transpose(y, (0, 2, 1, 3))


def _empty_rows(dropout, return_attention_scores, high_rank=False):
    """What a query row with no key left gets, as Keras 3.15 decides: its fused dot_product_attention
    (taken for rank-3 inputs without dropout or returned scores) gives uniform weights; its masked
    Softmax layer (the other cases) zeroes the masked entries, so the row's weights are all zero."""
    return "zeros" if dropout > 0 or return_attention_scores or high_rank else "uniform"


def _attention_mask(xp, n, t, s, query_mask, value_mask, key_mask, attention_mask, use_causal_mask, q_pos, v_pos,
                    sliding_window=None):
    """AND of the masks, shape (N or 1, T, S), or None; True = attend (Keras's rules). The sliding window
    keeps keys j with |i - j| < sliding_window (Keras's GroupQueryAttention band)."""
    mask = None

    def both(a, b):
        return b if a is None else a & b
    if query_mask is not None:
        mask = _mask_array(query_mask, xp).reshape(n, t)[:, :, None]
    if value_mask is not None:
        mask = both(mask, _mask_array(value_mask, xp).reshape(n, s)[:, None, :])
    if key_mask is not None:
        mask = both(mask, _mask_array(key_mask, xp).reshape(n, s)[:, None, :])
    if use_causal_mask:
        mask = both(mask, causal_mask(t, s, xp)[None])
    if sliding_window is not None:
        gap = xp.abs(xp.arange(t)[:, None] - xp.arange(s)[None, :])
        mask = both(mask, (gap < sliding_window)[None])
    if attention_mask is not None:
        am = _mask_array(attention_mask, xp)
        if am.ndim == len(q_pos) + len(v_pos) + 1 and am.ndim > 3:   # (N, *T, *S) of high-rank inputs
            am = am.reshape(am.shape[0], t, s)
        if am.ndim == 2:
            am = am[None]
        mask = both(mask, am)
    return mask


class MultiHeadAttention(Layer):
    """Multi-head attention (Vaswani et al., 2017) with Keras 3's arguments and weight layout.

    Each of ``num_heads`` heads projects query, key and value to its own ``key_dim`` / ``value_dim``
    space, attends (scaled dot product), and the heads' outputs are projected back together.

    Args: num_heads, key_dim (size of each query/key head), value_dim (default key_dim), dropout (on
    the attention weights), use_bias, output_shape (default: the query's last axis), attention_axes
    (only the default None: attend over all axes between batch and features), kernel/bias
    initializer, regularizer, constraint, seed (for the dropout mask).
    Call: ``mha(query, value, key=None, query_mask=None, value_mask=None, key_mask=None,
    attention_mask=None, return_attention_scores=False, training=None, use_causal_mask=False)``.
    Shapes: query (B, T, dim), value (B, S, dim_v), key (B, S, dim_k) -> output (B, T, dim or
    output_shape); attention scores (B, heads, T, S). Higher-rank inputs (B, *T, dim) attend over the
    flattened positions.
    Weights (Keras order): query kernel (dim, heads, key_dim) + bias (heads, key_dim); key kernel
    (dim_k, heads, key_dim) + bias; value kernel (dim_v, heads, value_dim) + bias (heads, value_dim);
    output kernel (heads, value_dim, dim) + bias (dim,). Parameters (dim_q = dim_k = dim_v = dim):
    3 (dim h k + h k) with value_dim = key_dim = k, plus h k dim + dim; e.g. 4 heads of 32 on 128: 66,048.
    Forward: Q_h = q Wq_h + bq_h (likewise K_h, V_h); O_h = softmax(Q_h K_h^T / sqrt(key_dim), mask) V_h;
    out = sum_h O_h Wo_h + bo. A query row with no key left by the masks gets uniform weights (Keras 3.15's
    fused kernel) for rank-3 inputs without dropout or returned scores, else zero weights (its masked
    Softmax). Backward: through the fused attention op and the projections (GEMMs).
    """

    def __init__(self, num_heads, key_dim, value_dim=None, dropout=0.0, use_bias=True, output_shape=None,
                 attention_axes=None, sliding_window=None, flash_attention=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, use_gate=False, seed=None,
                 **kwargs):
        super().__init__(**kwargs)
        for arg, value, off in (("sliding_window", sliding_window, None), ("use_gate", use_gate, False)):
            if value != off:   # (Keras 3.15's banded attention and gated heads: accepted off, as its configs hold)
                raise NotImplementedError(f"MultiHeadAttention '{self.name}': lamina does not implement "
                                          f"{arg}={value!r}; only {arg}={off!r}.")
        self._num_heads = _positive_int(self, "num_heads", num_heads)
        self._key_dim = _positive_int(self, "key_dim", key_dim)
        self._value_dim = _positive_int(self, "value_dim", value_dim, allow_none=True) or self._key_dim
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.floating)) or not 0 <= dropout < 1:
            raise ValueError(f"MultiHeadAttention '{self.name}': dropout must be a float in [0, 1). "
                             f"Received: dropout={dropout!r}")
        self._dropout = float(dropout)
        self._use_bias = bool(use_bias)
        if output_shape is not None:
            output_shape = (output_shape,) if isinstance(output_shape, (int, np.integer)) else tuple(output_shape)
            for d in output_shape:
                _positive_int(self, "output_shape entries", d)
        self._output_shape = output_shape
        if isinstance(attention_axes, (int, np.integer)):
            attention_axes = (int(attention_axes),)
        # Keras's files hold the axes it chose at build: (1,) for (batch, time, features). Any other choice
        # (attending over some of several inner axes) is refused at build.
        self._attention_axes = None if attention_axes is None else tuple(int(a) for a in attention_axes)
        self._kernel_initializer = initializers.get(kernel_initializer)
        self._bias_initializer = initializers.get(bias_initializer)
        self._kernel_regularizer, self._bias_regularizer = kernel_regularizer, bias_regularizer
        self._kernel_constraint, self._bias_constraint = kernel_constraint, bias_constraint
        self.activity_regularizer = activity_regularizer
        self.seed = seed
        self._rng = None if seed is None else np.random.default_rng(int(seed))
        self.supports_masking = True
        self._inverse_sqrt_key_dim = 1.0 / float(np.sqrt(self._key_dim))

    num_heads = property(lambda self: self._num_heads)
    key_dim = property(lambda self: self._key_dim)
    value_dim = property(lambda self: self._value_dim)
    dropout = property(lambda self: self._dropout)
    use_bias = property(lambda self: self._use_bias)
    attention_axes = property(lambda self: self._attention_axes)

    # ----- building
    def _projection(self, sub, in_dim, mid, out_shape):
        """kernel (in_dim, *mid) or (*mid, *out) and bias; Keras's EinsumDense 'query'/'key'/... weights."""
        kernel = self.add_weight(shape=(in_dim,) + mid if out_shape is None else mid + out_shape,
                                 initializer=self._kernel_initializer, regularizer=self._kernel_regularizer,
                                 constraint=self._kernel_constraint, name="kernel")
        kernel.path = f"{kernel.path.rsplit('/', 1)[0]}/{sub}/kernel"  # Keras's EinsumDense sublayer's path
        bias = None
        if self._use_bias:
            bias = self.add_weight(shape=mid if out_shape is None else out_shape, initializer=self._bias_initializer,
                                   regularizer=self._bias_regularizer, constraint=self._bias_constraint, name="bias")
            bias.path = f"{bias.path.rsplit('/', 1)[0]}/{sub}/bias"
        return kernel, bias

    def build(self, query_shape, value_shape=None, key_shape=None):
        value_shape = query_shape if value_shape is None else value_shape
        key_shape = value_shape if key_shape is None else key_shape
        for what, shape in (("query", query_shape), ("value", value_shape), ("key", key_shape)):
            if shape is None or len(shape) < 3 or shape[-1] is None:
                raise ValueError(f"MultiHeadAttention '{self.name}': {what} must have shape (batch, length, features) "
                                 f"with a known last axis. Received: {what} shape {shape}")
        if self._attention_axes is not None:
            rank = len(query_shape)
            if tuple(a % rank for a in self._attention_axes) != tuple(range(1, rank - 1)):
                raise ValueError(f"MultiHeadAttention '{self.name}': only attention over every axis between batch "
                                 f"and features is supported (attention_axes=None or {tuple(range(1, rank - 1))}). "
                                 f"Received: attention_axes={self._attention_axes}")
        if tuple(value_shape[1:-1]) != tuple(key_shape[1:-1]):
            raise ValueError(f"MultiHeadAttention '{self.name}': all dimensions of value and key, except the last one, "
                             f"must be equal. Received: value_shape={tuple(value_shape)} and key_shape={tuple(key_shape)}")
        dim = int(query_shape[-1])
        h, kd, vd = self._num_heads, self._key_dim, self._value_dim
        self._query_dims = (dim, int(value_shape[-1]), int(key_shape[-1]))
        self.query_kernel, self.query_bias = self._projection("query", dim, (h, kd), None)
        self.key_kernel, self.key_bias = self._projection("key", int(key_shape[-1]), (h, kd), None)
        self.value_kernel, self.value_bias = self._projection("value", int(value_shape[-1]), (h, vd), None)
        out = self._output_shape or (dim,)
        self.output_kernel, self.output_bias = self._projection("attention_output", None, (h, vd), tuple(out))
        self.input_spec = InputSpec(min_ndim=3, axes={-1: dim})
        self.built = True

    def __call__(self, *args, **kwargs):
        args, kwargs = _query_value_call(self, "MultiHeadAttention", "mha", args, kwargs)
        return super().__call__(*args, **kwargs)

    # ----- calling
    def _project_in(self, x, kernel, bias, n, t, heads, d):
        return _project_heads(x, kernel, bias, n, t, heads, d)

    def _compute_attention_mask(self, xp, n, t, s, query_mask, value_mask, key_mask, attention_mask,
                                use_causal_mask, q_pos, v_pos):
        return _attention_mask(xp, n, t, s, query_mask, value_mask, key_mask, attention_mask, use_causal_mask,
                               q_pos, v_pos)

    def call(self, query, value, key=None, query_mask=None, value_mask=None, key_mask=None, attention_mask=None,
             return_attention_scores=False, training=None, use_causal_mask=False):
        # bool/int inputs compute in the layer's float dtype, as Dense (not float64 by promotion)
        query, value, key = (None if t is None else self._cast_integers(self._convert_input(t))
                             for t in (query, value, key)) if self.autocast else (query, value, key)
        key_is_value = key is None or key is value
        self_attention = key_is_value and query is value
        key = value if key is None else key
        if query_mask is None:
            query_mask = getattr(query, "_keras_mask", None)
        if value_mask is None:
            value_mask = getattr(value, "_keras_mask", None)
        if key_mask is None and not key_is_value:
            key_mask = getattr(key, "_keras_mask", None)
        dims = self._query_dims
        for what, x, want in (("query", query, dims[0]), ("value", value, dims[1]), ("key", key, dims[2])):
            if x.ndim < 3 or x.shape[-1] != want:
                raise ValueError(f"MultiHeadAttention '{self.name}': expected {what} of shape (batch, ..., {want}), "
                                 f"received {what} shape {tuple(x.shape)}")
        n = query.shape[0]
        q_pos, v_pos = tuple(query.shape[1:-1]), tuple(value.shape[1:-1])
        if tuple(key.shape[1:-1]) != v_pos or key.shape[0] != value.shape[0]:
            raise ValueError(f"MultiHeadAttention '{self.name}': key and value must have the same batch and length. "
                             f"Received: key shape {tuple(key.shape)}, value shape {tuple(value.shape)}")
        t, s = int(np.prod(q_pos)), int(np.prod(v_pos))
        if len(q_pos) > 1:   # attend over all positions of a higher-rank input, flattened
            query = ops.reshape(query, (n, t, query.shape[-1]))
        if len(v_pos) > 1:
            value = ops.reshape(value, (value.shape[0], s, value.shape[-1]))
            key = value if key_is_value else ops.reshape(key, (key.shape[0], s, key.shape[-1]))
        h, kd, vd = self._num_heads, self._key_dim, self._value_dim
        nv = value.shape[0]
        if self_attention and type(self)._project_in is MultiHeadAttention._project_in:
            # one input projected three times: one product (ProjectHeads)
            q, k, v = project_heads(query, (self.query_kernel, self.key_kernel, self.value_kernel),
                                    (self.query_bias, self.key_bias, self.value_bias))
        else:
            q = self._project_in(query, self.query_kernel, self.query_bias, n, t, h, kd)
            k = self._project_in(key, self.key_kernel, self.key_bias, nv, s, h, kd)
            v = self._project_in(value, self.value_kernel, self.value_bias, nv, s, h, vd)
        xp = backend.get_array_module(q.data)
        mask = self._compute_attention_mask(xp, n, t, s, query_mask, value_mask, key_mask, attention_mask,
                                            use_causal_mask, q_pos, v_pos)
        if mask is not None:
            mask = mask[:, None]                                     # one mask for every head
        res = scaled_dot_product_attention(q, k, v, mask=mask, scale=self._inverse_sqrt_key_dim,
                                           dropout_rate=self._dropout, training=bool(training),
                                           return_weights=return_attention_scores, rng=self._rng,
                                           empty_rows=_empty_rows(self._dropout, return_attention_scores,
                                                                  len(q_pos) > 1))
        o, w = res if return_attention_scores else (res, None)
        o = ops.reshape(ops.transpose(o, (0, 2, 1, 3)), (n, t, h * vd))   # heads side by side
        out_shape = tuple(self.output_kernel.shape[2:])
        wo = ops.reshape(self.output_kernel, (h * vd, int(np.prod(out_shape))))
        bo = None if self.output_bias is None else ops.reshape(self.output_bias, (int(np.prod(out_shape)),))
        out = ops.reshape(ops.linear(o, wo, bo), (n,) + q_pos + out_shape)
        if return_attention_scores:
            return out, ops.reshape(w, (n, h) + q_pos + v_pos)
        return out

    def get_config(self):
        config = super().get_config()
        config["value_dim"] = self._value_dim           # (None resolved to key_dim, as Keras writes it)
        if config.get("flash_attention") is None:       # (Keras takes it but does not write it)
            config.pop("flash_attention", None)
        config.setdefault("activity_regularizer", None)
        return config

    def compute_output_shape(self, query_shape, value_shape=None, key_shape=None):
        out = self._output_shape or (query_shape[-1],)
        return tuple(query_shape[:-1]) + tuple(out)


def _check_rate(layer, rate):
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.floating)) or not 0 <= rate < 1:
        raise ValueError(f"{type(layer).__name__} '{layer.name}': dropout must be a float in [0, 1). "
                         f"Received: dropout={rate!r}")
    return float(rate)


class Attention(Layer):
    """Dot-product (Luong-style) attention over a query, value and optional key sequence.

    Args (Keras 3): use_scale (learn a scalar multiplying the scores), score_mode 'dot' or 'concat',
    dropout (on the attention weights), seed.
    Call: ``layer([query, value])`` or ``layer([query, value, key])`` with optional
    ``mask=[query_mask, value_mask]``, ``return_attention_scores``, ``use_causal_mask``, ``training``.
    Shapes: query (B, Tq, dim), value (B, Tv, dim_v), key (B, Tv, dim) -> (B, Tq, dim_v); scores (B, Tq, Tv).
    Weights: scale () if use_scale; concat_score_weight () if score_mode='concat'.
    Forward: 'dot': S = q k^T (* scale); 'concat': S = c * sum(tanh(scale * (q_i + k_j)), -1);
    W = softmax(S) over keys with masked keys removed; out = W v, times the query mask.
    Differences from Keras: a query row whose keys are all masked gets zero weights (Keras: uniform),
    and in 'dot' mode the returned scores are the weights before dropout.
    """

    _cast_integer_inputs = True  # bool/int inputs compute in the layer's float dtype, as Dense

    def __init__(self, use_scale=False, score_mode="dot", dropout=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if score_mode not in ("dot", "concat"):
            raise ValueError(f"{type(self).__name__} '{self.name}': unknown score_mode {score_mode!r}. "
                             "Valid values: 'dot', 'concat'.")
        self.use_scale = bool(use_scale)
        self.score_mode = score_mode
        self.dropout = _check_rate(self, dropout)
        self.seed = seed
        self._rng = None if seed is None else np.random.default_rng(int(seed))
        self.scale = None
        self.concat_score_weight = None
        self.supports_masking = True
        self.input_spec = [InputSpec(min_ndim=2)] * 3   # query, value, key: (..., length, features)

    def _validate_inputs(self, inputs, what="inputs"):
        if not isinstance(inputs, (list, tuple)) or not 2 <= len(inputs) <= 3:
            raise ValueError(f"{type(self).__name__} '{self.name}': {what} must be a list [query, value] or "
                             f"[query, value, key]. Received: {type(inputs).__name__}"
                             f"{'' if not isinstance(inputs, (list, tuple)) else f' of length {len(inputs)}'}")

    def build(self, input_shape):
        self._validate_inputs(input_shape)
        if self.use_scale:
            self.scale = self.add_weight(shape=(), initializer="ones", name="scale")
        if self.score_mode == "concat":
            self.concat_score_weight = self.add_weight(shape=(), initializer="ones", name="concat_score_weight")
        self.built = True

    def _calculate_scores(self, query, key):
        if self.score_mode == "dot":
            s = ops.matmul(query, ops.swapaxes(key, -1, -2))
            return s * self.scale if self.scale is not None else s
        q = ops.expand_dims(query, -2)                       # (B, Tq, 1, d)
        k = ops.expand_dims(key, -3)                         # (B, 1, Tv, d)
        z = q + k if self.scale is None else self.scale * (q + k)
        return self.concat_score_weight * ops.sum(ops.tanh(z), axis=-1)

    def _apply_scores(self, scores, value, scores_mask, training):
        """Keras's masked softmax (masked scores minus 1e9), dropout, mix of the values."""
        if scores_mask is not None:
            penalty = (~scores_mask).astype(scores.dtype) * scores.dtype.type(1e9)
            scores = scores - Tensor(penalty)
        weights = ops.softmax(scores, axis=-1)
        if training and self.dropout > 0:
            weights = ops.dropout(weights, self.dropout, training=True, rng=self._rng)
        return ops.matmul(weights, value), weights

    def call(self, inputs, mask=None, training=False, return_attention_scores=False, use_causal_mask=False):
        self._validate_inputs(inputs)
        q, v = inputs[0], inputs[1]
        k = inputs[2] if len(inputs) > 2 else v
        if mask is not None:
            self._validate_inputs(mask, "mask")
        q_mask = mask[0] if mask is not None else None
        v_mask = mask[1] if mask is not None else None
        if q.shape[-1] != k.shape[-1]:
            raise ValueError(f"{type(self).__name__} '{self.name}': query and key must have the same last axis. "
                             f"Received: query shape {tuple(q.shape)}, key shape {tuple(k.shape)}")
        if q.ndim >= 3 and not q.shape[0] == v.shape[0] == k.shape[0]:
            raise ValueError(f"{type(self).__name__} '{self.name}': query, value and key must have the same batch "
                             f"size. Received: query shape {tuple(q.shape)}, value shape {tuple(v.shape)}, "
                             f"key shape {tuple(k.shape)}")
        if k.shape[-2] != v.shape[-2]:
            raise ValueError(f"{type(self).__name__} '{self.name}': key and value must have the same length "
                             f"(axis -2). Received: value shape {tuple(v.shape)}, key shape {tuple(k.shape)}")
        xp = backend.get_array_module(q.data)
        scores_mask = None
        if v_mask is not None:
            scores_mask = _mask_array(v_mask, xp)[..., None, :]          # (B, 1, Tv)
        if use_causal_mask:
            c = causal_mask(q.shape[-2], k.shape[-2], xp)[None]
            scores_mask = c if scores_mask is None else scores_mask & c
        if self.score_mode == "dot" and type(self) is Attention:
            # one fused op: scores, masked softmax, dropout, mix (the learned scale multiplies q)
            qs = q * self.scale if self.scale is not None else q
            out, w = scaled_dot_product_attention(qs, k, v, mask=scores_mask, scale=1.0, dropout_rate=self.dropout,
                                                  training=bool(training), return_weights=True, rng=self._rng,
                                                  empty_rows="uniform")
        else:
            out, w = self._apply_scores(self._calculate_scores(q, k), v, scores_mask, training)
        if q_mask is not None:
            qm = _mask_array(q_mask, xp)[..., None].astype(out.dtype)
            out = out * Tensor(qm)
        return (out, w) if return_attention_scores else out

    def compute_mask(self, inputs, mask=None):
        if mask is None or not isinstance(mask, (list, tuple)) or mask[0] is None:
            return None
        m = mask[0]
        return m if isinstance(m, Tensor) else Tensor(m)

    def compute_output_shape(self, input_shape):
        q, v = input_shape[0], input_shape[1]
        return tuple(q[:-1]) + (v[-1],)


class AdditiveAttention(Attention):
    """Additive (Bahdanau-style) attention: scores are sum(scale * tanh(q_i + k_j)) over features.

    Args (Keras 3): use_scale=True (learn a per-feature scale vector), dropout.
    Call and shapes as ``Attention``. Weights: scale (dim,) (glorot_uniform) if use_scale.
    Forward: S_ij = sum_d scale_d tanh(q_id + k_jd); W = softmax(S) (masked); out = W v.
    """

    def __init__(self, use_scale=True, dropout=0.0, **kwargs):
        super().__init__(use_scale=use_scale, dropout=dropout, **kwargs)

    def build(self, input_shape):
        self._validate_inputs(input_shape)
        dim = input_shape[0][-1]
        self.scale = None
        if self.use_scale:
            self.scale = self.add_weight(shape=(dim,), initializer="glorot_uniform", name="scale")
            # the query's features (the key's must equal them)
            self.input_spec = [InputSpec(min_ndim=2, axes={-1: dim})] + [InputSpec(min_ndim=2)] * 2
        self.built = True

    def _calculate_scores(self, query, key):
        z = ops.tanh(ops.expand_dims(query, -2) + ops.expand_dims(key, -3))     # (B, Tq, Tv, d)
        if self.scale is not None:
            z = z * self.scale
        return ops.sum(z, axis=-1)


class PositionEmbedding(Layer):
    """A learned embedding per position (keras_hub's PositionEmbedding): returns the position
    embeddings broadcast to the input's shape, to be added to the token embeddings.

    Args: sequence_length (the longest sequence), initializer ('glorot_uniform').
    Call: ``layer(inputs, start_index=0)``; inputs (B, T, dim) with start_index + T <= sequence_length.
    Weights: embeddings (sequence_length, dim). Parameters: sequence_length * dim.
    Output shape: the input's. Forward: out[b, t] = E[start_index + t]. Backward: dE = sum over batch.
    """

    def __init__(self, sequence_length, initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        self.sequence_length = _positive_int(self, "sequence_length", sequence_length)
        self.initializer = initializers.get(initializer)
        self.supports_masking = True

    def build(self, inputs_shape):
        dim = inputs_shape[-1]
        if dim is None or len(inputs_shape) < 2:
            raise ValueError(f"PositionEmbedding '{self.name}': inputs must be (batch, length, features) with a "
                             f"known feature size. Received shape {tuple(inputs_shape)}")
        self.position_embeddings = self.add_weight(shape=(self.sequence_length, int(dim)), initializer=self.initializer,
                                                   name="embeddings")
        self.input_spec = InputSpec(min_ndim=2, axes={-1: int(dim)})
        self.built = True

    def call(self, inputs, start_index=0):
        t = inputs.shape[-2]
        if start_index + t > self.sequence_length:
            raise ValueError(f"PositionEmbedding '{self.name}': positions {start_index}..{start_index + t - 1} do not "
                             f"fit sequence_length={self.sequence_length}. Received input shape {tuple(inputs.shape)}")
        e = ops.getitem(self.position_embeddings, slice(start_index, start_index + t))
        return ops.broadcast_to(e, inputs.shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


class SinusoidalPositionEncoding(Layer):
    """Fixed sine/cosine position encodings (Vaswani et al.; keras_hub's layer), broadcast to the input.

    Args: max_wavelength (10000). Call: ``layer(inputs, start_index=0)``. No weights.
    Output shape: the input's. Forward: for position p and feature i, with f_i = max_wavelength^(-2 floor(i/2) / dim):
    out[p, i] = sin(p f_i) for even i, cos(p f_i) for odd i. A constant: no gradient flows to the input.
    """

    def __init__(self, max_wavelength=10000, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(max_wavelength, (int, float, np.integer, np.floating)) or max_wavelength <= 0:
            raise ValueError(f"SinusoidalPositionEncoding '{self.name}': max_wavelength must be > 0. "
                             f"Received: max_wavelength={max_wavelength!r}")
        self.max_wavelength = max_wavelength
        self.supports_masking = True

    def call(self, inputs, start_index=0):
        t, dim = inputs.shape[-2], inputs.shape[-1]
        pos = np.arange(start_index, start_index + t, dtype=np.float64)[:, None]
        i = np.arange(dim)
        freq = np.power(1.0 / self.max_wavelength, 2 * (i // 2) / dim)
        angles = pos * freq[None, :]
        table = np.where(i % 2 == 0, np.sin(angles), np.cos(angles)).astype(inputs.dtype)
        table = backend.to_device(table, backend.get_array_module(inputs.data))
        return ops.broadcast_to(Tensor(table), inputs.shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


class TokenAndPositionEmbedding(Layer):
    """Token embedding plus learned position embedding (keras_hub's TokenAndPositionEmbedding).

    Args: vocabulary_size, sequence_length, embedding_dim, tie_weights (accepted for keras_hub
    compatibility; lamina has no reverse projection), embeddings_initializer ('uniform'), mask_zero.
    Call: ``layer(token_ids, start_index=0)``: ints (B, T) -> (B, T, embedding_dim); with mask_zero the
    output carries the padding mask (token id 0). Weights: token_embedding/embeddings
    (vocabulary_size, embedding_dim), position_embedding/embeddings (sequence_length, embedding_dim).
    Forward: out[b, t] = E_tok[x[b, t]] + E_pos[start_index + t].
    """

    def __init__(self, vocabulary_size, sequence_length, embedding_dim, tie_weights=True,
                 embeddings_initializer="uniform", mask_zero=False, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size = _positive_int(self, "vocabulary_size", vocabulary_size)
        self.sequence_length = _positive_int(self, "sequence_length", sequence_length)
        self.embedding_dim = _positive_int(self, "embedding_dim", embedding_dim)
        self.tie_weights = tie_weights
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self.mask_zero = bool(mask_zero)
        from . import core                  # Embedding lives with the core layers
        if not hasattr(core, "Embedding"):  # pragma: no cover - while the core layer is being written
            raise RuntimeError("TokenAndPositionEmbedding needs lamina.layers.Embedding, which is missing.")
        self.token_embedding = core.Embedding(self.vocabulary_size, self.embedding_dim,
                                              embeddings_initializer=self.embeddings_initializer,
                                              mask_zero=self.mask_zero, name="token_embedding")
        self.position_embedding = PositionEmbedding(self.sequence_length, initializer=self.embeddings_initializer,
                                                    name="position_embedding")
        self.supports_masking = self.mask_zero

    def build(self, input_shape):
        self.token_embedding.build(tuple(input_shape))
        self.token_embedding.built = True
        self.position_embedding.build(tuple(input_shape) + (self.embedding_dim,))
        self.position_embedding.built = True
        self.built = True

    def call(self, inputs, start_index=0):
        e = self.token_embedding(inputs)
        return e + self.position_embedding(e, start_index=start_index)

    def compute_mask(self, inputs, mask=None):
        if not self.mask_zero:
            return None
        if isinstance(inputs, Tensor):
            return Tensor(inputs.data != 0)
        return Tensor(backend.to_device(np.asarray(inputs) != 0, self._array_module()))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.embedding_dim,)


_ = KerasTensor
