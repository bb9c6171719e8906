"""Transformer blocks: TransformerEncoder and TransformerDecoder (keras_hub's arguments and weights).

A Transformer processes all positions of a sequence at once: self-attention lets each position
gather what it needs from every other position in one step (no recurrence), and a position-wise
feed-forward network then transforms each position on its own. Residual connections and layer
normalisation keep deep stacks trainable:

    post-norm (normalize_first=False, the original paper):  x = LN(x + Dropout(Sublayer(x)))
    pre-norm  (normalize_first=True, GPT-2 style):          x = x + Dropout(Sublayer(LN(x)))

The decoder adds a causal mask to its self-attention (position i sees positions <= i only, so it
can be trained to predict the next token on whole sequences) and, when given encoder outputs,
cross-attention from the decoder positions to the encoder positions.
"""
import numpy as np

from .. import activations, backend, initializers
from ..ops.attention import causal_mask
from ..tensor import Tensor
from .attention import MultiHeadAttention, _mask_array, _move_call_args, _shape_of
from .core import Dense
from .layer import InputSpec, Layer
from .normalization import LayerNormalization
from .regularization import Dropout

__all__ = ["TransformerEncoder", "TransformerDecoder"]


def _check_args(layer, intermediate_dim, num_heads, dropout):
    for name, v in (("intermediate_dim", intermediate_dim), ("num_heads", num_heads)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
            raise ValueError(f"{type(layer).__name__} '{layer.name}': {name} must be a positive int. "
                             f"Received: {name}={v!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.floating)) or not 0 <= dropout < 1:
        raise ValueError(f"{type(layer).__name__} '{layer.name}': dropout must be a float in [0, 1). "
                         f"Received: dropout={dropout!r}")


def _merge_padding_and_attention_mask(inputs, padding_mask, attention_mask):
    """(B, 1, T) padding mask (given, or the inputs' Keras mask) AND a (B, T', T) attention mask."""
    xp = backend.get_array_module(inputs.data)
    mask = padding_mask if padding_mask is not None else getattr(inputs, "_keras_mask", None)
    mask = _mask_array(mask, xp)
    if mask is not None:
        if mask.ndim != 2:
            raise ValueError(f"A padding mask must have shape (batch, length). Received shape {tuple(mask.shape)}")
        mask = mask[:, None, :]
    am = _mask_array(attention_mask, xp)
    if am is not None:
        if am.ndim != 3:
            raise ValueError(f"An attention mask must have shape (batch, target length, source length). "
                             f"Received shape {tuple(am.shape)}")
        mask = am if mask is None else mask & am
    return mask


class _TransformerBase(Layer):
    def _common(self, intermediate_dim, num_heads, dropout, activation, layer_norm_epsilon, kernel_initializer,
                bias_initializer, normalize_first):
        _check_args(self, intermediate_dim, num_heads, dropout)
        self.intermediate_dim, self.num_heads, self.dropout = int(intermediate_dim), int(num_heads), float(dropout)
        self.activation = activations.get(activation)
        self.layer_norm_epsilon = float(layer_norm_epsilon)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.normalize_first = bool(normalize_first)
        self.supports_masking = True

    def _head_dim(self, hidden_dim):
        if hidden_dim is None:
            raise ValueError(f"{type(self).__name__} '{self.name}': the feature axis of the input must be known.")
        head_dim = int(hidden_dim) // self.num_heads
        if head_dim == 0:
            raise ValueError(f"{type(self).__name__} '{self.name}': the attention head size hidden_dim // num_heads "
                             f"is zero: hidden_dim={hidden_dim} must be >= num_heads={self.num_heads}.")
        return head_dim

    def _attention(self, head_dim, name, query_shape, value_shape):
        mha = MultiHeadAttention(self.num_heads, head_dim, dropout=self.dropout,
                                 kernel_initializer=self.kernel_initializer, bias_initializer=self.bias_initializer,
                                 name=name)
        mha.build(query_shape, value_shape)
        return mha

    def _norm(self, name, shape):
        ln = LayerNormalization(epsilon=self.layer_norm_epsilon, name=name)
        ln.build(shape)
        ln.built = True
        return ln

    def _dense(self, units, name, shape, activation=None):
        d = Dense(units, activation=activation, kernel_initializer=self.kernel_initializer,
                  bias_initializer=self.bias_initializer, name=name)
        d.build(shape)
        return d

    def _feedforward(self, x, training):
        residual = x
        if self.normalize_first:
            x = self._feedforward_layer_norm(x)
        x = self._feedforward_intermediate_dense(x)
        x = self._feedforward_output_dense(x)
        x = self._feedforward_dropout(x, training=training)
        x = x + residual
        if not self.normalize_first:
            x = self._feedforward_layer_norm(x)
        return x

    def compute_output_spec(self, *args, **kwargs):
        if kwargs.get("return_attention_scores"):
            return self._trace_output_spec(*args, **kwargs)
        return super().compute_output_spec(*args, **kwargs)


class TransformerEncoder(_TransformerBase):
    """One Transformer encoder block: self-attention then a feed-forward network, each with a
    residual connection and layer normalisation (keras_hub's TransformerEncoder).

    Args: intermediate_dim (width of the feed-forward hidden layer), num_heads (head size =
    hidden_dim // num_heads), dropout (attention weights and both residual branches), activation
    ('relu'), layer_norm_epsilon (1e-5), kernel/bias initializer, normalize_first (pre-norm if True).
    Call: ``block(inputs, padding_mask=None, attention_mask=None, training=None,
    return_attention_scores=False)``; the padding mask defaults to the inputs' Keras mask (from
    ``Embedding(mask_zero=True)``), shape (B, T); attention_mask (B, T, T); True = attend.
    Shapes: (B, T, hidden_dim) -> (B, T, hidden_dim) (+ scores (B, heads, T, T)).
    Weights: self_attention_layer (8 arrays, MultiHeadAttention), self_attention_layer_norm
    gamma/beta, feedforward_layer_norm gamma/beta, feedforward_intermediate_dense kernel/bias,
    feedforward_output_dense kernel/bias. Parameters (d = hidden_dim, f = intermediate_dim):
    4 d^2 + 4 d (attention) + 4 d (norms) + 2 d f + f + d; d=128, f=512: 198,272.
    Forward (post-norm): x = LN1(x + Drop(MHA(x, x, mask))); y = LN2(x + Drop(W2 act(W1 x + b1) + b2)).
    """

    def __init__(self, intermediate_dim, num_heads, dropout=0, activation="relu", layer_norm_epsilon=1e-05,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", normalize_first=False, **kwargs):
        super().__init__(**kwargs)
        self._common(intermediate_dim, num_heads, dropout, activation, layer_norm_epsilon, kernel_initializer,
                     bias_initializer, normalize_first)

    def build(self, inputs_shape):
        inputs_shape = tuple(inputs_shape)
        if len(inputs_shape) != 3:
            raise ValueError(f"TransformerEncoder '{self.name}': inputs must have shape (batch, length, features). "
                             f"Received shape {inputs_shape}")
        hidden_dim = inputs_shape[-1]
        head_dim = self._head_dim(hidden_dim)
        self._self_attention_layer = self._attention(head_dim, "self_attention_layer", inputs_shape, inputs_shape)
        self._self_attention_layer_norm = self._norm("self_attention_layer_norm", inputs_shape)
        self._self_attention_dropout = Dropout(self.dropout, name="self_attention_dropout")
        self._feedforward_layer_norm = self._norm("feedforward_layer_norm", inputs_shape)
        self._feedforward_intermediate_dense = self._dense(self.intermediate_dim, "feedforward_intermediate_dense",
                                                           inputs_shape, self.activation)
        self._feedforward_output_dense = self._dense(hidden_dim, "feedforward_output_dense",
                                                     inputs_shape[:-1] + (self.intermediate_dim,))
        self._feedforward_dropout = Dropout(self.dropout, name="feedforward_dropout")
        self.input_spec = InputSpec(ndim=3, axes={-1: hidden_dim})
        self.built = True

    def call(self, inputs, padding_mask=None, attention_mask=None, training=None, return_attention_scores=False):
        mask = _merge_padding_and_attention_mask(inputs, padding_mask, attention_mask)
        x = inputs
        residual = x
        if self.normalize_first:
            x = self._self_attention_layer_norm(x)
        res = self._self_attention_layer(x, x, attention_mask=mask, training=training,
                                         return_attention_scores=return_attention_scores)
        x, scores = res if return_attention_scores else (res, None)
        x = self._self_attention_dropout(x, training=training)
        x = x + residual
        if not self.normalize_first:
            x = self._self_attention_layer_norm(x)
        x = self._feedforward(x, training)
        return (x, scores) if return_attention_scores else x

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape)


class TransformerDecoder(_TransformerBase):
    """One Transformer decoder block: causal self-attention, optional cross-attention to encoder
    outputs, and a feed-forward network, each with a residual connection and layer normalisation
    (keras_hub's TransformerDecoder, without the generation caches).

    Args: as TransformerEncoder.
    Call: ``block(decoder_sequence, encoder_sequence=None, decoder_padding_mask=None,
    decoder_attention_mask=None, encoder_padding_mask=None, encoder_attention_mask=None,
    use_causal_mask=True, training=None, return_attention_scores=False)``. A block first called
    without ``encoder_sequence`` has no cross-attention (decoder-only, GPT style) and must always be
    called the same way. Padding masks default to the sequences' Keras masks.
    Shapes: decoder (B, T, d), encoder (B, S, d_enc) -> (B, T, d). With return_attention_scores:
    (outputs, self-attention scores (B, heads, T, T)[, cross-attention scores (B, heads, T, S)]).
    Weights: self_attention (8), self_attention_layer_norm (2), [cross_attention (8),
    cross_attention_layer_norm (2)], feedforward_intermediate_dense (2), feedforward_output_dense (2),
    feedforward_layer_norm (2), in keras_hub's order.
    Forward (post-norm): x = LN1(x + Drop(MHA(x, x, causal & padding))); x = LN2(x + Drop(MHA(x, enc)));
    y = LN3(x + Drop(FFN(x))).
    """

    def __init__(self, intermediate_dim, num_heads, dropout=0, activation="relu", layer_norm_epsilon=1e-05,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", normalize_first=False, **kwargs):
        super().__init__(**kwargs)
        self._common(intermediate_dim, num_heads, dropout, activation, layer_norm_epsilon, kernel_initializer,
                     bias_initializer, normalize_first)
        self._cross_attention_layer = None

    def build(self, decoder_sequence_shape, encoder_sequence_shape=None):
        shape = tuple(decoder_sequence_shape)
        if len(shape) != 3:
            raise ValueError(f"TransformerDecoder '{self.name}': decoder_sequence must have shape (batch, length, "
                             f"features). Received shape {shape}")
        hidden_dim = shape[-1]
        head_dim = self._head_dim(hidden_dim)
        self._self_attention_layer = self._attention(head_dim, "self_attention", shape, shape)
        self._self_attention_layer_norm = self._norm("self_attention_layer_norm", shape)
        self._self_attention_dropout = Dropout(self.dropout, name="self_attention_dropout")
        self._cross_attention_layer = None
        if encoder_sequence_shape is not None:
            enc = tuple(encoder_sequence_shape)
            self._cross_attention_layer = self._attention(head_dim, "cross_attention", shape, enc)
            self._cross_attention_layer_norm = self._norm("cross_attention_layer_norm", shape)
            self._cross_attention_dropout = Dropout(self.dropout, name="cross_attention_dropout")
        self._feedforward_intermediate_dense = self._dense(self.intermediate_dim, "feedforward_intermediate_dense",
                                                           shape, self.activation)
        self._feedforward_output_dense = self._dense(hidden_dim, "feedforward_output_dense",
                                                     shape[:-1] + (self.intermediate_dim,))
        self._feedforward_layer_norm = self._norm("feedforward_layer_norm", shape)
        self._feedforward_dropout = Dropout(self.dropout, name="feedforward_dropout")
        self.input_spec = InputSpec(ndim=3, axes={-1: hidden_dim})
        self.built = True

    def __call__(self, *args, **kwargs):
        args, kwargs = _move_call_args(self, args, kwargs, ("decoder_sequence", "encoder_sequence"))
        if not self.built:
            enc = args[1] if len(args) > 1 else None
            self.build(_shape_of(args[0]), _shape_of(enc))
        return super().__call__(*args, **kwargs)

    def call(self, decoder_sequence, encoder_sequence=None, decoder_padding_mask=None, decoder_attention_mask=None,
             encoder_padding_mask=None, encoder_attention_mask=None, use_causal_mask=True, training=None,
             return_attention_scores=False):
        has_cross = self._cross_attention_layer is not None
        if has_cross != (encoder_sequence is not None):
            built = "with" if has_cross else "without"
            raise ValueError(f"TransformerDecoder '{self.name}' was built {built} cross-attention, so it must be "
                             f"called {'with' if has_cross else 'without'} encoder_sequence. Use "
                             "layer(decoder_sequence, encoder_sequence) for an encoder-decoder block and "
                             "layer(decoder_sequence) for a decoder-only block, the same way every time.")
        x = decoder_sequence
        mask = _merge_padding_and_attention_mask(x, decoder_padding_mask, decoder_attention_mask)
        if use_causal_mask:
            xp = backend.get_array_module(x.data)
            c = causal_mask(x.shape[1], x.shape[1], xp)[None]
            mask = c if mask is None else mask & c
        residual = x
        if self.normalize_first:
            x = self._self_attention_layer_norm(x)
        res = self._self_attention_layer(x, x, attention_mask=mask, training=training,
                                         return_attention_scores=return_attention_scores)
        x, self_scores = res if return_attention_scores else (res, None)
        x = self._self_attention_dropout(x, training=training)
        x = x + residual
        if not self.normalize_first:
            x = self._self_attention_layer_norm(x)
        cross_scores = None
        if has_cross:
            cmask = _merge_padding_and_attention_mask(encoder_sequence, encoder_padding_mask, encoder_attention_mask)
            residual = x
            if self.normalize_first:
                x = self._cross_attention_layer_norm(x)
            res = self._cross_attention_layer(x, encoder_sequence, attention_mask=cmask, training=training,
                                              return_attention_scores=return_attention_scores)
            x, cross_scores = res if return_attention_scores else (res, None)
            x = self._cross_attention_dropout(x, training=training)
            x = x + residual
            if not self.normalize_first:
                x = self._cross_attention_layer_norm(x)
        x = self._feedforward(x, training)
        if return_attention_scores:
            return (x, self_scores, cross_scores) if has_cross else (x, self_scores)
        return x

    def compute_output_shape(self, decoder_sequence_shape, encoder_sequence_shape=None):
        return tuple(decoder_sequence_shape)


_ = Tensor
