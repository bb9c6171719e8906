"""The convolutional LSTMs (ConvLSTM1D, ConvLSTM2D, ConvLSTM3D), as Keras 3, and StackedRNNCells (defined in
rnn.py beside RNN, which makes one from a list of cells; exported here too, where it used to live).

ConvLSTM is an LSTM whose matrix products are convolutions, so its state keeps the input's spatial layout
(precipitation nowcasting, video frames): with gates i, f, c, o (Keras's order),
    z = conv(x_t, W, strides, padding) + b + conv(h_{t-1}, U, 'same');
    c_t = f c_{t-1} + i act(z_c);  h_t = o act(c_t),
i, f, o = recurrent_activation(z_i, z_f, z_o). Weights (Keras's names, under ``<layer>/cell`` in files):
kernel (*k, C, 4 filters), recurrent_kernel (*k, filters, 4 filters), bias (4 filters,).
"""
import numpy as np

from .. import activations, backend, ops
from ..tensor import Tensor, Variable
from .convolutional import standardize_data_format, standardize_padding, standardize_tuple
from .layer import InputSpec, Layer
from .rnn import StackedRNNCells  # noqa: F401  (re-exported; it lives in rnn.py, as RNN builds one from a list of cells)
from .rnn import _dropout_mask, _set_weight_arguments, _unit_forget_bias

__all__ = ["StackedRNNCells", "ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D"]


# ----------------------------------------------------------------------------- ConvLSTM
class ConvLSTMCell(Layer):
    """One ConvLSTM step on channels-last tensors (the state of the ConvLSTM layers; Keras's names)."""

    def __init__(self, rank, filters, kernel_size, strides=1, padding="valid", dilation_rate=1,
                 activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 unit_forget_bias=True, kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
                 kernel_constraint=None, recurrent_constraint=None, bias_constraint=None, dropout=0.0,
                 recurrent_dropout=0.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rank = rank
        if not isinstance(filters, (int, np.integer)) or isinstance(filters, bool) or filters <= 0:
            raise ValueError(f"Layer '{self.name}': filters must be a positive int. Received: filters={filters!r}")
        self.filters = int(filters)
        self.kernel_size = standardize_tuple(kernel_size, rank, "kernel_size", self.name)
        self.strides = standardize_tuple(strides, rank, "strides", self.name)
        self.dilation_rate = standardize_tuple(dilation_rate, rank, "dilation_rate", self.name)
        self.padding = standardize_padding(padding, self.name)
        self.activation = activations.get(activation)
        self.recurrent_activation = activations.get(recurrent_activation)
        self.use_bias = bool(use_bias)
        self.unit_forget_bias = bool(unit_forget_bias)
        _set_weight_arguments(self, kernel_initializer, recurrent_initializer, bias_initializer,
                              kernel_regularizer, recurrent_regularizer, bias_regularizer, kernel_constraint,
                              recurrent_constraint, bias_constraint, dropout, recurrent_dropout, seed)

    def build(self, input_shape):
        c, f = input_shape[-1], self.filters
        self.kernel = self.add_weight(shape=self.kernel_size + (c, 4 * f), name="kernel",
                                      initializer=self.kernel_initializer, regularizer=self.kernel_regularizer,
                                      constraint=self.kernel_constraint)
        self.recurrent_kernel = self.add_weight(shape=self.kernel_size + (f, 4 * f), name="recurrent_kernel",
                                                initializer=self.recurrent_initializer,
                                                regularizer=self.recurrent_regularizer,
                                                constraint=self.recurrent_constraint)
        init = _unit_forget_bias(self.bias_initializer, f) if self.unit_forget_bias else self.bias_initializer
        self.bias = self.add_weight(shape=(4 * f,), name="bias", initializer=init,
                                    regularizer=self.bias_regularizer,
                                    constraint=self.bias_constraint) if self.use_bias else None
        self.built = True

    def input_conv(self, x):
        """All time steps at once: (N, T, *S, C) -> (N, T, *S', 4 filters), bias added."""
        n, t = x.shape[0], x.shape[1]
        flat = ops.reshape(x, (n * t,) + tuple(x.shape[2:]))
        k = self.kernel if self.kernel.dtype == x.dtype else ops.cast(self.kernel, x.dtype)
        z = ops.conv(flat, k, self.strides, self.padding, "channels_last", self.dilation_rate)
        if self.bias is not None:
            z = z + (self.bias if self.bias.dtype == x.dtype else ops.cast(self.bias, x.dtype))
        return ops.reshape(z, (n, t) + tuple(z.shape[1:]))

    def step(self, zx, h_tm1, c_tm1):
        u = self.recurrent_kernel if self.recurrent_kernel.dtype == h_tm1.dtype else \
            ops.cast(self.recurrent_kernel, h_tm1.dtype)
        z = zx + ops.conv(h_tm1, u, 1, "same", "channels_last", 1)
        f = self.filters
        i = self.recurrent_activation(z[..., :f])
        fg = self.recurrent_activation(z[..., f:2 * f])
        c = fg * c_tm1 + i * self.activation(z[..., 2 * f:3 * f])
        o = self.recurrent_activation(z[..., 3 * f:])
        return o * self.activation(c), c


class _ConvLSTM(Layer):
    """ConvLSTM over (N, T, *S, C) ('channels_last') or (N, T, C, *S) ('channels_first') sequences."""

    rank = 2
    _cast_integer_inputs = True  # bool/int inputs compute in the layer's float dtype, as the other RNNs

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1,
                 activation="tanh", recurrent_activation="sigmoid", use_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros", unit_forget_bias=True,
                 kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, recurrent_constraint=None, bias_constraint=None,
                 dropout=0.0, recurrent_dropout=0.0, seed=None, return_sequences=False, return_state=False,
                 go_backwards=False, stateful=False, unroll=False, zero_output_for_mask=False, **kwargs):
        super().__init__(**kwargs)
        self.cell = ConvLSTMCell(self.rank, filters, kernel_size, strides=strides, padding=padding,
                                 dilation_rate=dilation_rate, activation=activation,
                                 recurrent_activation=recurrent_activation, use_bias=use_bias,
                                 kernel_initializer=kernel_initializer, recurrent_initializer=recurrent_initializer,
                                 bias_initializer=bias_initializer, unit_forget_bias=unit_forget_bias,
                                 kernel_regularizer=kernel_regularizer, recurrent_regularizer=recurrent_regularizer,
                                 bias_regularizer=bias_regularizer, kernel_constraint=kernel_constraint,
                                 recurrent_constraint=recurrent_constraint, bias_constraint=bias_constraint,
                                 dropout=dropout, recurrent_dropout=recurrent_dropout, seed=seed,
                                 name="conv_lstm_cell", dtype=kwargs.get("dtype"))
        if max(self.cell.strides) > 1 and max(self.cell.dilation_rate) > 1:
            raise ValueError(f"Layer '{self.name}': strides > 1 are not supported together with "
                             f"dilation_rate > 1 (as in Keras).")
        for key in ("filters", "kernel_size", "strides", "padding", "dilation_rate", "activation",
                    "recurrent_activation", "use_bias", "dropout", "recurrent_dropout", "unit_forget_bias"):
            setattr(self, key, getattr(self.cell, key))
        self.data_format = standardize_data_format(data_format, self.name)
        self.activity_regularizer = activity_regularizer
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.unroll = bool(unroll)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.supports_masking = True
        self.states = None
        self.input_spec = InputSpec(ndim=self.rank + 3)
        self._rng = None if seed is None else np.random.default_rng(int(seed))

    def _last(self, x):
        """(N, T, C, *S) -> (N, T, *S, C) for 'channels_first'."""
        if self.data_format == "channels_first":
            return ops.transpose(x, (0, 1) + tuple(range(3, x.ndim)) + (2,))
        return x

    def _first(self, y, time):
        if self.data_format == "channels_first":
            lead = 2 if time else 1
            return ops.transpose(y, tuple(range(lead)) + (y.ndim - 1,) + tuple(range(lead, y.ndim - 1)))
        return y

    def build(self, input_shape, initial_state_shape=None):
        c = input_shape[2] if self.data_format == "channels_first" else input_shape[-1]
        if c is None:
            raise ValueError(f"Layer '{self.name}': the channel axis of the input must be known. "
                             f"Received input_shape={tuple(input_shape)}")
        self.cell.build((None,) + (None,) * self.rank + (c,))
        ax = 2 if self.data_format == "channels_first" else -1
        self.input_spec = InputSpec(ndim=self.rank + 3, axes={ax: c})
        self.built = True

    @property
    def trainable_weights(self):
        return list(self.cell.trainable_weights) if self.trainable else []

    @property
    def non_trainable_weights(self):
        return [] if self.trainable else list(self.cell.weights)

    @property
    def weights(self):
        return list(self.cell.weights)

    def _spatial_out(self, spatial):
        cell = self.cell
        return tuple(ops.conv_output_length(n, cell.kernel_size[a], cell.padding, cell.strides[a],
                                            cell.dilation_rate[a]) for a, n in enumerate(spatial))

    def compute_output_shape(self, input_shape, initial_state_shape=None):
        s = tuple(input_shape)
        spatial = s[3:] if self.data_format == "channels_first" else s[2:-1]
        out = self._spatial_out(spatial)
        f = self.cell.filters
        state = (s[0], f) + out if self.data_format == "channels_first" else (s[0],) + out + (f,)
        y = state[:1] + (s[1],) + state[1:] if self.return_sequences else state
        return [y, state, state] if self.return_state else y

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        out = mask if self.return_sequences else None
        return [out, None, None] if self.return_state else out

    def reset_states(self):
        self.reset_state()

    def reset_state(self):
        if self.states is not None:
            for v in self.states:
                v.data[...] = 0

    def _drop_mask(self, like, rate):
        return _dropout_mask(like.shape, rate, like.dtype, like)

    def call(self, sequences, initial_state=None, mask=None, training=False):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        cell = self.cell
        x = self._last(sequences)
        if training and cell.dropout > 0:  # one mask for every step, as Keras
            x = x * ops.expand_dims(self._drop_mask(x[:, 0], cell.dropout), 1)
        zx = cell.input_conv(x)
        n, t = zx.shape[0], zx.shape[1]
        state_shape = (n,) + tuple(zx.shape[2:-1]) + (cell.filters,)
        xp = backend.get_array_module(zx.data)
        if initial_state is not None:
            h, c = [self._last(s[:, None])[:, 0] if isinstance(s, Tensor) else
                    self._last(Tensor(backend.to_device(np.asarray(s, zx.dtype), xp))[:, None])[:, 0]
                    for s in initial_state]
        elif self.stateful and self.states is not None and tuple(self.states[0].shape) == state_shape:
            h, c = [Tensor(v.data.copy()) for v in self.states]
        else:
            h = c = Tensor(xp.zeros(state_shape, zx.dtype))
        rec_mask = self._drop_mask(h, cell.recurrent_dropout) if training and cell.recurrent_dropout > 0 else None
        m = None
        if mask is not None:
            m = mask.data if isinstance(mask, Tensor) else backend.to_device(np.asarray(mask), xp)
            m = m.astype(bool)
        outs = []
        for k in (range(t - 1, -1, -1) if self.go_backwards else range(t)):
            h_in = h if rec_mask is None else h * rec_mask
            h_new, c_new = cell.step(zx[:, k], h_in, c)
            if m is not None:
                mk = Tensor(m[:, k].reshape((n,) + (1,) * (h.ndim - 1)))
                h_new, c_new = ops.where(mk, h_new, h), ops.where(mk, c_new, c)
            h, c = h_new, c_new
            outs.append(h)
        if self.stateful:
            if self.states is None or tuple(self.states[0].shape) != state_shape:
                # not weights: Keras makes them without its attribute tracking (not counted, saved or trained)
                object.__setattr__(self, "states", [Variable(xp.zeros(state_shape, zx.dtype), name="rnn_state",
                                                             trainable=False) for _ in range(2)])
            for v, s in zip(self.states, (h, c)):
                v.assign(s.data)
        y = self._first(ops.stack(outs, axis=1), True) if self.return_sequences else self._first(h, False)
        if self.return_state:
            return [y, self._first(h, False), self._first(c, False)]
        return y

    def get_config(self):
        config = super().get_config()
        for key in ("kernel_size", "strides", "dilation_rate"):
            config[key] = tuple(getattr(self.cell, key))
        config["data_format"] = self.data_format
        return config


class ConvLSTM1D(_ConvLSTM):
    """1-D convolutional LSTM: (N, T, L, C) -> (N, OL, filters) (return_sequences: (N, T, OL, filters))."""

    rank = 1


class ConvLSTM2D(_ConvLSTM):
    """2-D convolutional LSTM: (N, T, H, W, C) -> (N, OH, OW, filters) (return_sequences: (N, T, OH, OW, filters))."""

    rank = 2


class ConvLSTM3D(_ConvLSTM):
    """3-D convolutional LSTM: (N, T, D, H, W, C) -> (N, OD, OH, OW, filters)."""

    rank = 3
