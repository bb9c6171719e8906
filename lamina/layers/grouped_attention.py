"""Grouped-query attention (Ainslie et al., 2023), Keras 3's ``keras.layers.GroupQueryAttention``.

Multi-head attention where several query heads share one key/value head: ``num_query_heads`` query
projections, ``num_key_value_heads`` key and value projections, each key/value head serving
``num_query_heads // num_key_value_heads`` consecutive query heads. One key/value head is multi-query
attention; as many as the query heads is plain multi-head attention. Fewer key/value heads mean a
smaller key/value cache when a decoder generates one token at a time.

The masks, the projections and the fused attention op are MultiHeadAttention's (layers/attention.py).
The shared key/value heads are not copied: queries are grouped as (N, kv_heads, repeats, T, d) and
the keys/values (N, kv_heads, 1, S, d) broadcast over the repeats, so the op's backward sums their
gradients over the query heads of each group.
"""
import numpy as np

from .. import backend, initializers, ops
from ..registry import register
from .attention import _attention_mask, _empty_rows, _positive_int, _project_heads, _query_value_call
from ..ops.attention import scaled_dot_product_attention
from .layer import InputSpec, Layer

__all__ = ["GroupQueryAttention"]


class GroupedQueryAttention(Layer):
    """Grouped-query attention with Keras 3's arguments, weight layout and file names.

    Args: head_dim (size of every head), num_query_heads, num_key_value_heads (must divide
    num_query_heads), dropout (on the attention weights), use_bias, sliding_window (None, or keep only
    keys j with |i - j| < sliding_window), flash_attention (accepted; lamina has one attention kernel,
    so it changes no number; True refuses dropout and returned scores, as Keras does), kernel/bias
    initializer, regularizer, constraint, activity_regularizer, use_gate (sigmoid gate from the query
    multiplying each head's output, Qiu et al., 2025), seed (dropout mask).
    Call: ``gqa(query, value, key=None, query_mask=None, value_mask=None, key_mask=None,
    attention_mask=None, return_attention_scores=False, training=None, use_causal_mask=False)``.
    Shapes: query (B, T, dim), value (B, S, dim_v), key (B, S, dim_k) -> (B, T, dim); attention scores
    (B, num_query_heads, T, S).
    Weights (Keras order): query kernel (dim, Hq, head_dim) + bias (Hq, head_dim); key kernel
    (dim_k, Hkv, head_dim) + bias (Hkv, head_dim); gate kernel (dim, Hq, head_dim) + bias if use_gate;
    value kernel (dim_v, Hkv, head_dim) + bias; attention_output kernel (Hq, head_dim, dim) + bias (dim,).
    Forward: Q_u = q Wq_u + bq_u; K_g, V_g likewise for group g; head u uses group g = u // (Hq / Hkv);
    O_u = softmax(Q_u K_g^T / sqrt(head_dim), mask) V_g; with use_gate O_u *= sigmoid(q Wg_u + bg_u);
    out = sum_u O_u Wo_u + bo. A query row with no key left by the masks gets what Keras 3.15 gives it:
    uniform weights from its fused kernel (no scores asked for, dropout 0), zero weights from its masked
    Softmax otherwise. Backward: the fused attention op and the projections (GEMMs); each shared
    key/value head receives the sum of its query heads' gradients.
    Parameters (all inputs of size dim, with bias): dim*h*(2 Hq + 2 Hkv) + h*(Hq + 2 Hkv) + dim (+ gate).

    >>> import numpy as np
    >>> gqa = GroupQueryAttention(head_dim=4, num_query_heads=4, num_key_value_heads=2)
    >>> x = np.zeros((2, 5, 8), "float32")
    >>> out, scores = gqa(x, x, return_attention_scores=True)
    >>> out.shape, scores.shape
    ((2, 5, 8), (2, 4, 5, 5))
    """

    _registered_name = "GroupQueryAttention"   # Keras's public name (its class is GroupedQueryAttention)

    def __init__(self, head_dim, num_query_heads, num_key_value_heads, dropout=0.0, use_bias=True,
                 sliding_window=None, flash_attention=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, use_gate=False,
                 seed=None, **kwargs):
        super().__init__(**kwargs)
        self.head_dim = _positive_int(self, "head_dim", head_dim)
        self.num_query_heads = _positive_int(self, "num_query_heads", num_query_heads)
        self.num_key_value_heads = _positive_int(self, "num_key_value_heads", num_key_value_heads)
        if self.num_query_heads % self.num_key_value_heads:
            raise ValueError(f"GroupQueryAttention '{self.name}': num_query_heads must be divisible by "
                             f"num_key_value_heads. Received: num_query_heads={num_query_heads}, "
                             f"num_key_value_heads={num_key_value_heads}")
        self.num_repeats = self.num_query_heads // self.num_key_value_heads
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.floating)) or not 0 <= dropout < 1:
            raise ValueError(f"GroupQueryAttention '{self.name}': dropout must be a float in [0, 1). "
                             f"Received: dropout={dropout!r}")
        self.dropout = float(dropout)
        self.use_bias = bool(use_bias)
        self.use_gate = bool(use_gate)
        self.sliding_window = _positive_int(self, "sliding_window", sliding_window, allow_none=True)
        self._flash_attention = bool(flash_attention)
        if self._flash_attention and self.dropout > 0.0:
            raise ValueError(f"GroupQueryAttention '{self.name}': dropout is not supported when flash attention "
                             "is enabled. Set dropout=0.0 or flash_attention=None.")
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer, self.bias_regularizer = kernel_regularizer, bias_regularizer
        self.kernel_constraint, self.bias_constraint = kernel_constraint, bias_constraint
        self.activity_regularizer = activity_regularizer
        self.seed = seed
        self._rng = None if seed is None else np.random.default_rng(int(seed))
        self.supports_masking = True
        self._inverse_sqrt_head_dim = 1.0 / float(np.sqrt(self.head_dim))

    # ----- building
    def _dense(self, sub, kernel_shape, bias_shape):
        """Keras's EinsumDense sublayer ``sub``: kernel and (with use_bias) bias, named by Keras's path."""
        kernel = self.add_weight(shape=kernel_shape, initializer=self.kernel_initializer,
                                 regularizer=self.kernel_regularizer, constraint=self.kernel_constraint, name="kernel")
        kernel.path = f"{kernel.path.rsplit('/', 1)[0]}/{sub}/kernel"  # Keras's EinsumDense sublayer's path
        bias = None
        if self.use_bias:
            bias = self.add_weight(shape=bias_shape, initializer=self.bias_initializer,
                                   regularizer=self.bias_regularizer, constraint=self.bias_constraint, name="bias")
            bias.path = f"{bias.path.rsplit('/', 1)[0]}/{sub}/bias"
        return kernel, bias

    def build(self, query_shape, value_shape=None, key_shape=None):
        value_shape = query_shape if value_shape is None else value_shape
        key_shape = value_shape if key_shape is None else key_shape
        for what, shape in (("query", query_shape), ("value", value_shape), ("key", key_shape)):
            if shape is None or len(shape) != 3 or shape[-1] is None:
                raise ValueError(f"GroupQueryAttention '{self.name}': {what} must have shape (batch, length, "
                                 f"features) with a known last axis. Received: {what} shape {shape}")
        dim, dv, dk = int(query_shape[-1]), int(value_shape[-1]), int(key_shape[-1])
        hq, hkv, h = self.num_query_heads, self.num_key_value_heads, self.head_dim
        self.feature_dim = dim
        self._dims = (dim, dv, dk)
        self.query_kernel, self.query_bias = self._dense("query", (dim, hq, h), (hq, h))
        self.key_kernel, self.key_bias = self._dense("key", (dk, hkv, h), (hkv, h))
        self.gate_kernel = self.gate_bias = None
        if self.use_gate:
            self.gate_kernel, self.gate_bias = self._dense("gate", (dim, hq, h), (hq, h))
        self.value_kernel, self.value_bias = self._dense("value", (dv, hkv, h), (hkv, h))
        self.output_kernel, self.output_bias = self._dense("attention_output", (hq, h, dim), (dim,))
        self.input_spec = InputSpec(ndim=3, axes={-1: dim})
        self.built = True

    def __call__(self, *args, **kwargs):
        args, kwargs = _query_value_call(self, "GroupQueryAttention", "gqa", args, kwargs)
        return super().__call__(*args, **kwargs)

    # ----- calling
    def call(self, query, value, key=None, query_mask=None, value_mask=None, key_mask=None, attention_mask=None,
             return_attention_scores=False, training=None, use_causal_mask=False):
        if self._flash_attention and return_attention_scores:
            raise ValueError(f"GroupQueryAttention '{self.name}': returning attention scores is not supported "
                             "when flash attention is enabled. Set flash_attention=None to get them.")
        # bool/int inputs compute in the layer's float dtype, as Dense (not float64 by promotion)
        query, value, key = (None if t is None else self._cast_integers(self._convert_input(t))
                             for t in (query, value, key)) if self.autocast else (query, value, key)
        key_is_value = key is None or key is value
        key = value if key is None else key
        if query_mask is None:
            query_mask = getattr(query, "_keras_mask", None)
        if value_mask is None:
            value_mask = getattr(value, "_keras_mask", None)
        if key_mask is None and not key_is_value:
            key_mask = getattr(key, "_keras_mask", None)
        for what, x, want in (("query", query, self._dims[0]), ("value", value, self._dims[1]),
                              ("key", key, self._dims[2])):
            if x.ndim != 3 or x.shape[-1] != want:
                raise ValueError(f"GroupQueryAttention '{self.name}': expected {what} of shape (batch, length, "
                                 f"{want}), received {what} shape {tuple(x.shape)}")
        if tuple(key.shape[:2]) != tuple(value.shape[:2]):
            raise ValueError(f"GroupQueryAttention '{self.name}': key and value must have the same batch and "
                             f"length. Received: key shape {tuple(key.shape)}, value shape {tuple(value.shape)}")
        n, t = query.shape[0], query.shape[1]
        nv, s = value.shape[0], value.shape[1]
        hq, hkv, r, h = self.num_query_heads, self.num_key_value_heads, self.num_repeats, self.head_dim
        q = _project_heads(query, self.query_kernel, self.query_bias, n, t, hq, h)        # (N, Hq, T, h)
        k = _project_heads(key, self.key_kernel, self.key_bias, nv, s, hkv, h)            # (N, Hkv, S, h)
        v = _project_heads(value, self.value_kernel, self.value_bias, nv, s, hkv, h)
        xp = backend.get_array_module(q.data)
        mask = _attention_mask(xp, n, t, s, query_mask, value_mask, key_mask, attention_mask, use_causal_mask,
                               (t,), (s,), sliding_window=self.sliding_window)
        if mask is not None:
            mask = mask[:, None, None]                      # the same mask for every group and head
        # query head u = g * r + j reads key/value head g (Keras's ops.repeat on the head axis)
        res = scaled_dot_product_attention(ops.reshape(q, (n, hkv, r, t, h)), ops.reshape(k, (nv, hkv, 1, s, h)),
                                           ops.reshape(v, (nv, hkv, 1, s, h)), mask=mask,
                                           scale=self._inverse_sqrt_head_dim, dropout_rate=self.dropout,
                                           training=bool(training), return_weights=return_attention_scores,
                                           rng=self._rng, empty_rows=_empty_rows(self.dropout, return_attention_scores))
        o, w = res if return_attention_scores else (res, None)
        o = ops.reshape(o, (n, hq, t, h))
        if self.use_gate:
            o = o * ops.sigmoid(_project_heads(query, self.gate_kernel, self.gate_bias, n, t, hq, h))
        o = ops.reshape(ops.transpose(o, (0, 2, 1, 3)), (n, t, hq * h))
        wo = ops.reshape(self.output_kernel, (hq * h, self.feature_dim))
        out = ops.linear(o, wo, self.output_bias)
        if return_attention_scores:
            return out, ops.reshape(w, (n, hq, t, s))
        return out

    def compute_output_shape(self, query_shape, value_shape=None, key_shape=None):
        value_shape = query_shape if value_shape is None else value_shape
        key_shape = value_shape if key_shape is None else key_shape
        if tuple(value_shape[1:-1]) != tuple(key_shape[1:-1]):
            raise ValueError(f"GroupQueryAttention '{self.name}': all dimensions of value and key, except the last "
                             f"one, must be equal. Received: value_shape={tuple(value_shape)} and "
                             f"key_shape={tuple(key_shape)}")
        return tuple(query_shape)


GroupQueryAttention = GroupedQueryAttention
register(GroupedQueryAttention, "GroupQueryAttention")
