"""Recurrent layers: SimpleRNN, LSTM, GRU, their cells, StackedRNNCells, the generic RNN(cell), Bidirectional,
TimeDistributed and Masking.

A recurrent layer reads a sequence one step at a time and keeps a hidden state h, a summary of what it
has seen so far: h_t = f(x_t, h_{t-1}). As in Keras 3, the weights live in the cell (``layer.cell``:
kernel, recurrent_kernel, bias), and the layer walks the time axis. SimpleRNN, LSTM and GRU run the
fused sequence ops of ``lamina.ops.recurrent`` (one GEMM for the inputs of all steps, one per step for
the recurrence, hand-written backward through time); user cells, other activations and recurrent
dropout in training run a Python loop over time that calls the cell, autograd doing the rest.

Masks (from ``Embedding(mask_zero=True)`` or ``Masking``): a masked step keeps the states unchanged and
its output is the carried-forward state (Keras 3; zero when ``zero_output_for_mask``, which
Bidirectional sets for sequence outputs).
"""
import numpy as np

from .. import activations, backend, constraints, initializers, ops, regularizers
from ..registry import get_registered_object, serialize
from ..tensor import Tensor, Variable, no_grad
from .layer import InputSpec, Layer

__all__ = ["SimpleRNNCell", "LSTMCell", "GRUCell", "StackedRNNCells", "RNN", "SimpleRNN", "LSTM", "GRU",
           "Bidirectional", "TimeDistributed", "Masking"]


def _rate(owner, name, value):
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{type(owner).__name__} '{owner.name}': {name} must be in [0, 1). Received: {name}={value}")
    return value


def _dropout_mask(shape, rate, dtype, like):
    """A Keras dropout mask of ones: kept entries are 1 / (1 - rate), dropped ones 0."""
    keep = (backend.rng().random(shape) >= rate).astype(dtype) / np.asarray(1.0 - rate, dtype)
    return Tensor(backend.to_device(keep, backend.get_array_module(like.data)))


def _set_weight_arguments(cell, kernel_initializer, recurrent_initializer, bias_initializer, kernel_regularizer,
                          recurrent_regularizer, bias_regularizer, kernel_constraint, recurrent_constraint,
                          bias_constraint, dropout, recurrent_dropout, seed):
    """A recurrent cell's kernel/recurrent/bias initializers, regularizers and constraints, its two dropout
    rates (checked) and seed, under Keras's attribute names (the dense cells and ConvLSTMCell alike)."""
    cell.kernel_initializer = initializers.get(kernel_initializer)
    cell.recurrent_initializer = initializers.get(recurrent_initializer)
    cell.bias_initializer = initializers.get(bias_initializer)
    cell.kernel_regularizer = regularizers.get(kernel_regularizer)
    cell.recurrent_regularizer = regularizers.get(recurrent_regularizer)
    cell.bias_regularizer = regularizers.get(bias_regularizer)
    cell.kernel_constraint = constraints.get(kernel_constraint)
    cell.recurrent_constraint = constraints.get(recurrent_constraint)
    cell.bias_constraint = constraints.get(bias_constraint)
    cell.dropout = _rate(cell, "dropout", dropout)
    cell.recurrent_dropout = _rate(cell, "recurrent_dropout", recurrent_dropout)
    cell.seed = seed


def _unit_forget_bias(base, units):
    """The LSTM bias initializer with Keras's unit_forget_bias: base for the gates i, c, o and ones for the
    forget gate (Jozefowicz et al. 2015: a forget gate open at start lets gradients flow through c)."""
    def init(shape, dtype=None):
        return np.concatenate([np.asarray(base((units,), dtype=dtype)), np.ones((units,), dtype),
                               np.asarray(base((2 * units,), dtype=dtype))])
    return init


class _CellBase(Layer):
    """What the three built-in cells share: arguments, dropout masks reused across the time steps."""

    _cast_integer_inputs = True  # bool/int inputs compute in the layer's float dtype, as Keras

    def _setup(self, units, activation, use_bias, kernel_initializer, recurrent_initializer, bias_initializer,
               kernel_regularizer, recurrent_regularizer, bias_regularizer, kernel_constraint,
               recurrent_constraint, bias_constraint, dropout, recurrent_dropout, seed):
        if not isinstance(units, (int, np.integer)) or isinstance(units, bool) or units <= 0:
            raise ValueError(f"{type(self).__name__} '{self.name}': units must be a positive int. "
                             f"Received: units={units!r}")
        self.units = int(units)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        _set_weight_arguments(self, kernel_initializer, recurrent_initializer, bias_initializer,
                              kernel_regularizer, recurrent_regularizer, bias_regularizer, kernel_constraint,
                              recurrent_constraint, bias_constraint, dropout, recurrent_dropout, seed)
        self._dp_mask = self._rec_dp_mask = None

    def _weights(self, input_dim, gates, bias_shape, bias_init):
        self.kernel = self.add_weight(shape=(input_dim, gates * self.units), initializer=self.kernel_initializer,
                                      regularizer=self.kernel_regularizer, constraint=self.kernel_constraint,
                                      name="kernel")
        self.recurrent_kernel = self.add_weight(shape=(self.units, gates * self.units),
                                                initializer=self.recurrent_initializer,
                                                regularizer=self.recurrent_regularizer,
                                                constraint=self.recurrent_constraint, name="recurrent_kernel")
        self.bias = self.add_weight(shape=bias_shape, initializer=bias_init, regularizer=self.bias_regularizer,
                                    constraint=self.bias_constraint, name="bias") if self.use_bias else None
        self.input_spec = InputSpec(min_ndim=2, axes={-1: input_dim})
        self.built = True

    # Keras reuses one dropout mask for every time step of a sequence (reset by the RNN after each call)
    def get_dropout_mask(self, step_input):
        if self._dp_mask is None and self.dropout > 0:
            self._dp_mask = _dropout_mask(step_input.shape, self.dropout, step_input.dtype, step_input)
        return self._dp_mask

    def get_recurrent_dropout_mask(self, step_state):
        if self._rec_dp_mask is None and self.recurrent_dropout > 0:
            self._rec_dp_mask = _dropout_mask(step_state.shape, self.recurrent_dropout, step_state.dtype, step_state)
        return self._rec_dp_mask

    def reset_dropout_mask(self):
        self._dp_mask = None

    def reset_recurrent_dropout_mask(self):
        self._rec_dp_mask = None

    def _drop(self, inputs, h_tm1, training):
        if training and self.dropout > 0:
            inputs = inputs * self.get_dropout_mask(inputs)
        if training and self.recurrent_dropout > 0:
            h_tm1 = h_tm1 * self.get_recurrent_dropout_mask(h_tm1)
        return inputs, h_tm1

    def get_initial_state(self, batch_size=None):
        sizes = self.state_size if isinstance(self.state_size, (list, tuple)) else [self.state_size]
        return [Tensor(backend.to_device(np.zeros((batch_size, s), self.compute_dtype), self._array_module())) for s in sizes]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.units)

    def _fused_ok(self, training):
        """The fused sequence op applies unless recurrent dropout is active or an activation is not fused."""
        names = [ops.recurrent._act_name(getattr(self, "activation", None))]
        if hasattr(self, "recurrent_activation"):
            names.append(ops.recurrent._act_name(self.recurrent_activation))
        return all(n is not None for n in names) and not (training and self.recurrent_dropout > 0)


class SimpleRNNCell(_CellBase):
    """One step of a fully-connected RNN: h_t = activation(x_t W + h_{t-1} U + b).

    Weights: kernel (in, units), recurrent_kernel (units, units), bias (units,).
    Parameters: units * (in + units + 1). Call: (inputs (N, in), states) -> (h (N, units), [h]).
    """

    def __init__(self, units, activation="tanh", use_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros", kernel_regularizer=None,
                 recurrent_regularizer=None, bias_regularizer=None, kernel_constraint=None,
                 recurrent_constraint=None, bias_constraint=None, dropout=0.0, recurrent_dropout=0.0, seed=None,
                 **kwargs):
        super().__init__(**kwargs)
        self._setup(units, activation, use_bias, kernel_initializer, recurrent_initializer, bias_initializer,
                    kernel_regularizer, recurrent_regularizer, bias_regularizer, kernel_constraint,
                    recurrent_constraint, bias_constraint, dropout, recurrent_dropout, seed)
        self.state_size = self.units
        self.output_size = self.units

    def build(self, input_shape):
        self._weights(input_shape[-1], 1, (self.units,), self.bias_initializer)

    def call(self, inputs, states, training=False):
        h_tm1 = states[0] if isinstance(states, (list, tuple)) else states
        inputs, h_tm1 = self._drop(inputs, h_tm1, training)
        h = ops.matmul(inputs, self.kernel)
        if self.bias is not None:
            h = h + self.bias
        h = self.activation(h + ops.matmul(h_tm1, self.recurrent_kernel))
        return h, ([h] if isinstance(states, (list, tuple)) else h)

    def _fused(self, x, states, mask, go_backwards):
        seq, h = ops.simple_rnn(x, self.kernel, self.recurrent_kernel, self.bias, initial_state=states[0],
                                mask=mask, go_backwards=go_backwards, activation=self.activation)
        return seq, [h]


class LSTMCell(_CellBase):
    """One LSTM step (Hochreiter & Schmidhuber 1997), Keras gate order i, f, c, o.

    z = x_t W + h_{t-1} U + b; i = ract(z_i), f = ract(z_f), g = act(z_c), o = ract(z_o);
    c_t = f c_{t-1} + i g; h_t = o act(c_t).
    Weights: kernel (in, 4u), recurrent_kernel (u, 4u), bias (4u,) (forget part initialised to 1 when
    unit_forget_bias). Parameters: 4u (in + u + 1). Call: (inputs, [h, c]) -> (h, [h, c]).
    """

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 unit_forget_bias=True, kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
                 kernel_constraint=None, recurrent_constraint=None, bias_constraint=None, dropout=0.0,
                 recurrent_dropout=0.0, seed=None, **kwargs):
        kwargs.pop("implementation", None)
        super().__init__(**kwargs)
        self._setup(units, activation, use_bias, kernel_initializer, recurrent_initializer, bias_initializer,
                    kernel_regularizer, recurrent_regularizer, bias_regularizer, kernel_constraint,
                    recurrent_constraint, bias_constraint, dropout, recurrent_dropout, seed)
        self.recurrent_activation = activations.get(recurrent_activation)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.state_size = [self.units, self.units]
        self.output_size = self.units

    def build(self, input_shape):
        u = self.units
        init = _unit_forget_bias(self.bias_initializer, u) if self.unit_forget_bias else self.bias_initializer
        self._weights(input_shape[-1], 4, (4 * u,), init)

    def call(self, inputs, states, training=False):
        h_tm1, c_tm1 = states[0], states[1]
        inputs, h_tm1 = self._drop(inputs, h_tm1, training)
        z = ops.matmul(inputs, self.kernel) + ops.matmul(h_tm1, self.recurrent_kernel)
        if self.bias is not None:
            z = z + self.bias
        u = self.units
        i = self.recurrent_activation(z[:, :u])
        f = self.recurrent_activation(z[:, u:2 * u])
        c = f * c_tm1 + i * self.activation(z[:, 2 * u:3 * u])
        o = self.recurrent_activation(z[:, 3 * u:])
        h = o * self.activation(c)
        return h, [h, c]

    def _fused(self, x, states, mask, go_backwards):
        seq, h, c = ops.lstm(x, self.kernel, self.recurrent_kernel, self.bias, initial_state=states, mask=mask,
                             go_backwards=go_backwards, activation=self.activation,
                             recurrent_activation=self.recurrent_activation)
        return seq, [h, c]


class GRUCell(_CellBase):
    """One GRU step (Cho et al. 2014), Keras gate order z, r, h.

    z, r = ract(x W_zr + b_zr + h U_zr [+ b'_zr]);
    reset_after=True (default, PyTorch's form): hh = act(x W_h + b_h + r (h U_h + b'_h)), bias (2, 3u);
    reset_after=False: hh = act(x W_h + b_h + (r h) U_h), bias (3u,);
    h_t = z h_{t-1} + (1 - z) hh. Parameters: 3u (in + u) + 6u (or 3u). Call: (inputs, h) -> (h, [h]).
    """

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None, kernel_constraint=None,
                 recurrent_constraint=None, bias_constraint=None, dropout=0.0, recurrent_dropout=0.0,
                 reset_after=True, seed=None, **kwargs):
        kwargs.pop("implementation", None)
        super().__init__(**kwargs)
        self._setup(units, activation, use_bias, kernel_initializer, recurrent_initializer, bias_initializer,
                    kernel_regularizer, recurrent_regularizer, bias_regularizer, kernel_constraint,
                    recurrent_constraint, bias_constraint, dropout, recurrent_dropout, seed)
        self.recurrent_activation = activations.get(recurrent_activation)
        self.reset_after = bool(reset_after)
        self.state_size = self.units
        self.output_size = self.units

    def build(self, input_shape):
        u = self.units
        self._weights(input_shape[-1], 3, (2, 3 * u) if self.reset_after else (3 * u,), self.bias_initializer)

    def call(self, inputs, states, training=False):
        h_tm1 = states[0] if isinstance(states, (list, tuple)) else states
        inputs, h_rec = self._drop(inputs, h_tm1, training)
        u = self.units
        xw = ops.matmul(inputs, self.kernel)
        if self.bias is not None:
            xw = xw + (self.bias[0] if self.reset_after else self.bias)
        if self.reset_after:
            rec = ops.matmul(h_rec, self.recurrent_kernel)
            if self.bias is not None:
                rec = rec + self.bias[1]
            z = self.recurrent_activation(xw[:, :u] + rec[:, :u])
            r = self.recurrent_activation(xw[:, u:2 * u] + rec[:, u:2 * u])
            hh = self.activation(xw[:, 2 * u:] + r * rec[:, 2 * u:])
        else:
            z = self.recurrent_activation(xw[:, :u] + ops.matmul(h_rec, self.recurrent_kernel[:, :u]))
            r = self.recurrent_activation(xw[:, u:2 * u] + ops.matmul(h_rec, self.recurrent_kernel[:, u:2 * u]))
            hh = self.activation(xw[:, 2 * u:] + ops.matmul(r * h_rec, self.recurrent_kernel[:, 2 * u:]))
        h = z * h_tm1 + (1.0 - z) * hh
        return h, ([h] if isinstance(states, (list, tuple)) else h)

    def _fused(self, x, states, mask, go_backwards):
        seq, h = ops.gru(x, self.kernel, self.recurrent_kernel, self.bias, initial_state=states[0], mask=mask,
                         go_backwards=go_backwards, activation=self.activation,
                         recurrent_activation=self.recurrent_activation, reset_after=self.reset_after)
        return seq, [h]


def _flat_states(x):
    """Initial states given flat or per cell (StackedRNNCells, as Keras), as one flat list."""
    out = []
    for s in _as_list(x):
        out += _flat_states(s) if isinstance(s, (list, tuple)) else [s]
    return out


def _as_list(x):
    if x is None:
        return None
    return list(x) if isinstance(x, (list, tuple)) else [x]


def _sizes(state_size):
    return list(state_size) if isinstance(state_size, (list, tuple)) else [state_size]


class StackedRNNCells(Layer):
    """Several RNN cells run as one cell, the output of each the input of the next:
    ``RNN(StackedRNNCells([LSTMCell(8), GRUCell(4)]))``.

    state_size is the flat list of the cells' state sizes (the RNN passes and returns the states flat;
    ``return_state`` regroups them per cell as Keras does). The output is the last cell's.
    """

    def __init__(self, cells, **kwargs):
        super().__init__(**kwargs)
        cells = [(_deserialize(c) if isinstance(c, dict) else c) for c in cells]
        for c in cells:
            if not hasattr(c, "call") or not hasattr(c, "state_size"):
                raise ValueError(f"StackedRNNCells: every cell needs a `call` method and a `state_size` "
                                 f"attribute. Received: {c!r}")
        self.cells = cells

    @property
    def state_size(self):
        return [int(s) for c in self.cells for s in _sizes(c.state_size)]

    @property
    def output_size(self):
        last = self.cells[-1]
        return getattr(last, "output_size", None) or _sizes(last.state_size)[0]

    def _nest_states(self, flat):
        out, k = [], 0
        for c in self.cells:
            n = len(_sizes(c.state_size))
            group = list(flat[k:k + n])
            out.append(group if isinstance(c.state_size, (list, tuple)) else group[0])
            k += n
        return out

    def build(self, input_shape):
        shape = tuple(input_shape)
        for c in self.cells:
            if isinstance(c, Layer) and not c.built:
                c.build(shape)
                c.built = True
            shape = shape[:-1] + (getattr(c, "output_size", None) or _sizes(c.state_size)[0],)
        self.built = True

    def call(self, inputs, states, training=False):
        new_states = []
        for c, group in zip(self.cells, self._nest_states(list(states))):
            inputs, new = c(inputs, group if isinstance(group, list) else [group], training=training)
            new_states += list(new) if isinstance(new, (list, tuple)) else [new]
        return inputs, new_states

    def get_initial_state(self, batch_size=None):
        out = []
        for c in self.cells:
            fn = getattr(c, "get_initial_state", None)
            if fn is not None:
                s = fn(batch_size=batch_size)
                out += list(s) if isinstance(s, (list, tuple)) else [s]
            else:
                xp = self._array_module()
                out += [Tensor(xp.zeros((batch_size, n), self.compute_dtype)) for n in _sizes(c.state_size)]
        return out

    def reset_dropout_mask(self):
        for c in self.cells:
            getattr(c, "reset_dropout_mask", lambda: None)()

    def reset_recurrent_dropout_mask(self):
        for c in self.cells:
            getattr(c, "reset_recurrent_dropout_mask", lambda: None)()

    @property
    def trainable_weights(self):
        return [w for c in self.cells for w in c.trainable_weights] if self.trainable else []

    @property
    def non_trainable_weights(self):
        ws = [w for c in self.cells for w in c.non_trainable_weights]
        return ws if self.trainable else [w for c in self.cells for w in c.weights]

    @property
    def weights(self):
        return [w for c in self.cells for w in c.weights]

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_size)

    def get_config(self):
        config = super().get_config()
        config["cells"] = [serialize(c) for c in self.cells]
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["cells"] = [(_deserialize(c) if isinstance(c, dict) else c) for c in config["cells"]]
        return cls(**config)


class RNN(Layer):
    """Runs a cell over the time axis of (N, T, features) inputs.

    Args: cell (a layer with ``call(inputs, states) -> (output, new_states)`` and ``state_size``);
    return_sequences (all outputs (N, T, out) instead of the last (N, out)); return_state (also return
    the final states); go_backwards (read from the end; sequence outputs come in processing order);
    stateful (the final states of a batch are the initial states of the next; ``reset_states()``);
    unroll (accepted, no effect); zero_output_for_mask.
    Call: ``layer(x, initial_state=None, mask=None, training=False)``.
    """

    _cast_integer_inputs = True  # bool/int inputs compute in the layer's float dtype, as Keras

    def __init__(self, cell, return_sequences=False, return_state=False, go_backwards=False, stateful=False,
                 unroll=False, zero_output_for_mask=False, **kwargs):
        if isinstance(cell, (list, tuple)):  # as Keras: a list of cells runs as StackedRNNCells
            cell = StackedRNNCells(cell)
        if isinstance(cell, dict):
            cell = _deserialize(cell)
        if not hasattr(cell, "call") or not hasattr(cell, "state_size"):
            raise ValueError(f"RNN: the cell needs a `call` method and a `state_size` attribute. Received: cell={cell!r}")
        super().__init__(**kwargs)
        self.cell = cell
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.go_backwards = bool(go_backwards)
        self.stateful = bool(stateful)
        self.unroll = bool(unroll)
        self.zero_output_for_mask = bool(zero_output_for_mask)
        self.supports_masking = True
        self.states = None
        sizes = cell.state_size
        self.state_size = [int(sizes)] if isinstance(sizes, (int, np.integer)) else [int(s) for s in sizes]

    @property
    def units(self):
        return getattr(self.cell, "units", None)

    def get_config(self):
        config = super().get_config()
        config["zero_output_for_mask"] = self.zero_output_for_mask   # (LSTM, GRU, SimpleRNN take it in kwargs)
        # lamina's own arguments Keras's config lacks, written only when they are not their defaults
        if config.get("use_cudnn") == "auto":
            del config["use_cudnn"]
        return config

    def build(self, sequences_shape, initial_state_shape=None):
        if len(sequences_shape) != 3:
            raise ValueError(f"{type(self).__name__} '{self.name}': expected 3-D inputs (batch, timesteps, "
                             f"features). Received input_shape={tuple(sequences_shape)}")
        if isinstance(self.cell, Layer) and not self.cell.built:
            self.cell.build((sequences_shape[0],) + tuple(sequences_shape[2:]))
            self.cell.built = True
        self.input_spec = InputSpec(ndim=3, axes={-1: sequences_shape[-1]})
        self.built = True

    # ----- states
    def get_initial_state(self, batch_size):
        fn = getattr(self.cell, "get_initial_state", None)
        if fn is not None:
            return _as_list(fn(batch_size=batch_size))
        xp = self._array_module()
        return [Tensor(xp.zeros((batch_size, s), self.compute_dtype)) for s in self.state_size]

    def reset_states(self):
        self.reset_state()

    def reset_state(self):
        if self.states is not None:
            for v in self.states:
                v.data[...] = 0

    def _initial_states(self, sequences, initial_state):
        N = sequences.shape[0]
        if initial_state is not None:
            xp = backend.get_array_module(sequences.data)
            states = [s if isinstance(s, Tensor) else Tensor(backend.to_device(np.asarray(s, self.compute_dtype), xp))
                      for s in _flat_states(initial_state)]
            if len(states) != len(self.state_size):
                raise ValueError(f"{type(self).__name__} '{self.name}': expected {len(self.state_size)} initial "
                                 f"state(s), received {len(states)}.")
            for s, size in zip(states, self.state_size):
                if tuple(s.shape) != (N, size):
                    raise ValueError(f"{type(self).__name__} '{self.name}': an initial state must have shape "
                                     f"{(N, size)}. Received {tuple(s.shape)}")
            return states
        if self.stateful:
            if self.states is None or self.states[0].shape[0] != N:
                xp = backend.get_array_module(sequences.data)
                # not weights: Keras makes them without its attribute tracking (not counted, saved or trained)
                object.__setattr__(self, "states", [Variable(xp.zeros((N, s), self.compute_dtype), name="rnn_state",
                                                             trainable=False) for s in self.state_size])
            return [Tensor(v.data.copy()) for v in self.states]
        return self.get_initial_state(N)

    # ----- the time loop
    def call(self, sequences, initial_state=None, mask=None, training=False):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        if mask is not None:
            mask = mask.data if isinstance(mask, Tensor) else np.asarray(mask)
            mask = mask.astype(bool)
        states = self._initial_states(sequences, initial_state)
        cell = self.cell
        fused = getattr(cell, "_fused", None)
        if fused is not None and cell._fused_ok(training):
            x = sequences
            if training and cell.dropout > 0:
                # the cell's one input-dropout mask, shared by every time step
                x = x * ops.expand_dims(cell.get_dropout_mask(sequences[:, 0]), 1)
            seq, new_states = fused(x, states, mask, self.go_backwards)
        else:
            seq, new_states = self._loop(sequences, states, mask, training)
        for reset in ("reset_dropout_mask", "reset_recurrent_dropout_mask"):
            getattr(cell, reset, lambda: None)()
        last = new_states[0] if isinstance(cell, _CellBase) else None
        if mask is not None and self.zero_output_for_mask:
            m = mask[:, ::-1] if self.go_backwards else mask
            seq = seq * Tensor(backend.to_device(m[:, :, None].astype(seq.dtype), backend.get_array_module(seq.data)))
            last = None
        if last is None:
            last = seq[:, -1]
        if self.stateful:
            for v, s in zip(self.states, new_states):
                v.assign(s.data)
        output = seq if self.return_sequences else last
        if self.return_state:
            nest = getattr(cell, "_nest_states", None)  # StackedRNNCells: the states per cell, as Keras
            return [output] + (nest(list(new_states)) if nest else list(new_states))
        return output

    def _loop(self, sequences, states, mask, training):
        """Generic path: one cell call per step (autograd records it), Keras's masking rule with where."""
        T = sequences.shape[1]
        outs = []
        kwargs = {"training": training}
        for t in (range(T - 1, -1, -1) if self.go_backwards else range(T)):
            out, new = self.cell(sequences[:, t], list(states), **kwargs)
            new = _as_list(new)
            if mask is not None:
                m = mask[:, t, None]
                out = ops.where(m, out, states[0])
                new = [ops.where(m, n, s) for n, s in zip(new, states)]
            outs.append(out)
            states = new
        return ops.stack(outs, axis=1), states

    # ----- shapes, masks, config
    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        N, T = sequences_shape[0], sequences_shape[1]
        out = getattr(self.cell, "output_size", None) or self.state_size[0]
        output_shape = (N, T, out) if self.return_sequences else (N, out)
        if self.return_state:
            nest = getattr(self.cell, "_nest_states", None)
            shapes = [(N, s) for s in self.state_size]
            return [output_shape] + (nest(shapes) if nest else shapes)
        return output_shape

    def compute_mask(self, inputs, mask):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        out = mask if self.return_sequences else None
        if self.return_state:
            nest = getattr(self.cell, "_nest_states", None)
            masks = [None] * len(self.state_size)
            return [out] + (nest(masks) if nest else masks)
        return out

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("cell"), dict):
            config["cell"] = _deserialize(config["cell"])
        return cls(**config)


def _deserialize(d):
    cls = get_registered_object(d["class_name"])
    if cls is None:
        raise ValueError(f"Unknown layer class {d['class_name']!r} in a config (register custom layers with "
                         "lamina.utils.register_keras_serializable).")
    return cls.from_config(dict(d.get("config", {})))


_RNN_FLAGS = ("return_sequences", "return_state", "go_backwards", "stateful", "unroll")


class SimpleRNN(RNN):
    """Fully-connected RNN whose output is fed back: h_t = activation(x_t W + h_{t-1} U + b).

    Input (N, T, in) -> (N, units), or (N, T, units) with return_sequences; + final state with
    return_state. Parameters: units * (in + units + 1) (SimpleRNN(128) on 256 features: 49,280).
    Weights (in ``layer.cell``): kernel (in, units), recurrent_kernel (units, units), bias (units,).
    """

    def __init__(self, units, activation="tanh", use_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros", kernel_regularizer=None,
                 recurrent_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 kernel_constraint=None, recurrent_constraint=None, bias_constraint=None, dropout=0.0,
                 recurrent_dropout=0.0, return_sequences=False, return_state=False, go_backwards=False,
                 stateful=False, unroll=False, seed=None, **kwargs):
        zero = kwargs.pop("zero_output_for_mask", False)
        cell = SimpleRNNCell(units, activation=activation, use_bias=use_bias, kernel_initializer=kernel_initializer,
                             recurrent_initializer=recurrent_initializer, bias_initializer=bias_initializer,
                             kernel_regularizer=kernel_regularizer, recurrent_regularizer=recurrent_regularizer,
                             bias_regularizer=bias_regularizer, kernel_constraint=kernel_constraint,
                             recurrent_constraint=recurrent_constraint, bias_constraint=bias_constraint,
                             dropout=dropout, recurrent_dropout=recurrent_dropout, seed=seed,
                             dtype=kwargs.get("dtype"), name="simple_rnn_cell")
        super().__init__(cell, return_sequences=return_sequences, return_state=return_state,
                         go_backwards=go_backwards, stateful=stateful, unroll=unroll, zero_output_for_mask=zero,
                         **kwargs)
        self.activity_regularizer = activity_regularizer

    def get_config(self):
        config = super().get_config()
        if config.get("seed") is None:   # (Keras's SimpleRNN does not write its seed; lamina's only when given)
            config.pop("seed", None)
        return config


class LSTM(RNN):
    """Long Short-Term Memory layer (Keras 3 arguments; gates i, f, c, o).

    A cell state c runs along the sequence, changed only by gated additions: f decides what to keep,
    i what to write, o what to show as h. Because c_t = f c_{t-1} + i g, the gradient through c is
    multiplied by f (near 1 when the gate is open), not squashed by a weight matrix at every step.
    Input (N, T, in) -> (N, units) / (N, T, units); return_state adds [h, c].
    Parameters: 4 units (in + units + 1) (LSTM(128) on 256 features: 197,120).
    """

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 unit_forget_bias=True, kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, recurrent_constraint=None, bias_constraint=None,
                 dropout=0.0, recurrent_dropout=0.0, seed=None, return_sequences=False, return_state=False,
                 go_backwards=False, stateful=False, unroll=False, use_cudnn="auto", **kwargs):
        zero = kwargs.pop("zero_output_for_mask", False)
        kwargs.pop("implementation", None)
        cell = LSTMCell(units, activation=activation, recurrent_activation=recurrent_activation, use_bias=use_bias,
                        kernel_initializer=kernel_initializer, recurrent_initializer=recurrent_initializer,
                        bias_initializer=bias_initializer, unit_forget_bias=unit_forget_bias,
                        kernel_regularizer=kernel_regularizer, recurrent_regularizer=recurrent_regularizer,
                        bias_regularizer=bias_regularizer, kernel_constraint=kernel_constraint,
                        recurrent_constraint=recurrent_constraint, bias_constraint=bias_constraint, dropout=dropout,
                        recurrent_dropout=recurrent_dropout, seed=seed, dtype=kwargs.get("dtype"), name="lstm_cell")
        super().__init__(cell, return_sequences=return_sequences, return_state=return_state,
                         go_backwards=go_backwards, stateful=stateful, unroll=unroll, zero_output_for_mask=zero,
                         **kwargs)
        self.activity_regularizer = activity_regularizer
        self.use_cudnn = use_cudnn


class GRU(RNN):
    """Gated Recurrent Unit layer (Keras 3 arguments; gates z, r, h; reset_after=True by default).

    The update gate z mixes old state and candidate: h_t = z h_{t-1} + (1 - z) hh, so with z near 1 the
    state (and its gradient) passes through unchanged; the reset gate r decides how much of h_{t-1}
    the candidate reads. Input (N, T, in) -> (N, units) / (N, T, units); return_state adds h.
    Parameters: 3 units (in + units) + 6 units with reset_after (GRU(128) on 256: 148,224), else + 3 units.
    """

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal", bias_initializer="zeros",
                 kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, recurrent_constraint=None, bias_constraint=None,
                 dropout=0.0, recurrent_dropout=0.0, seed=None, return_sequences=False, return_state=False,
                 go_backwards=False, stateful=False, unroll=False, reset_after=True, use_cudnn="auto", **kwargs):
        zero = kwargs.pop("zero_output_for_mask", False)
        kwargs.pop("implementation", None)
        cell = GRUCell(units, activation=activation, recurrent_activation=recurrent_activation, use_bias=use_bias,
                       kernel_initializer=kernel_initializer, recurrent_initializer=recurrent_initializer,
                       bias_initializer=bias_initializer, kernel_regularizer=kernel_regularizer,
                       recurrent_regularizer=recurrent_regularizer, bias_regularizer=bias_regularizer,
                       kernel_constraint=kernel_constraint, recurrent_constraint=recurrent_constraint,
                       bias_constraint=bias_constraint, dropout=dropout, recurrent_dropout=recurrent_dropout,
                       reset_after=reset_after, seed=seed, dtype=kwargs.get("dtype"), name="gru_cell")
        super().__init__(cell, return_sequences=return_sequences, return_state=return_state,
                         go_backwards=go_backwards, stateful=stateful, unroll=unroll, zero_output_for_mask=zero,
                         **kwargs)
        self.activity_regularizer = activity_regularizer
        self.use_cudnn = use_cudnn


def _clone(layer, **changes):
    config = layer.get_config()
    config.update(changes)
    return type(layer).from_config(config)


class Bidirectional(Layer):
    """Runs a recurrent layer forwards and a copy backwards over the sequence and merges the outputs.

    Args: layer (an RNN layer); merge_mode 'concat' (default), 'sum', 'mul', 'ave' or None (a list of
    both outputs); backward_layer (optional, must have go_backwards=True). The backward outputs are
    flipped back to the input's time order before merging. return_state adds the forward states, then
    the backward states. Weights: forward layer's, then backward layer's.
    """

    _cast_integer_inputs = True  # bool/int inputs compute in the layer's float dtype, as Keras

    def __init__(self, layer, merge_mode="concat", weights=None, backward_layer=None, **kwargs):
        if isinstance(layer, dict):
            layer = _deserialize(layer)
        if isinstance(backward_layer, dict):
            backward_layer = _deserialize(backward_layer)
        if not isinstance(layer, Layer):
            raise ValueError(f"Bidirectional: `layer` must be a Layer instance. Received: layer={layer!r}")
        if merge_mode not in ("sum", "mul", "ave", "concat", None):
            raise ValueError(f"Bidirectional: invalid merge_mode {merge_mode!r}. Expected one of "
                             "'sum', 'mul', 'ave', 'concat', None.")
        super().__init__(**kwargs)
        base = layer.name
        for p in ("forward_", "backward_"):
            base = base[len(p):] if base.startswith(p) else base
        self.forward_layer = _clone(layer, name="forward_" + base)
        if backward_layer is None:
            self.backward_layer = _clone(layer, name="backward_" + base, go_backwards=not layer.go_backwards)
        else:
            self.backward_layer = backward_layer
        if self.forward_layer.go_backwards == self.backward_layer.go_backwards:
            raise ValueError("Bidirectional: the forward and backward layers must have different go_backwards "
                             f"values. Received {self.forward_layer.go_backwards} for both.")
        for a in ("stateful", "return_sequences", "return_state"):
            if getattr(self.forward_layer, a) != getattr(self.backward_layer, a):
                raise ValueError(f"Bidirectional: the forward and backward layers must have the same {a}.")
        for sub in (self.forward_layer, self.backward_layer):
            if hasattr(sub, "zero_output_for_mask"):
                sub.zero_output_for_mask = sub.return_sequences  # Keras: masked sequence outputs are zeros
        self.merge_mode = merge_mode
        self.stateful = layer.stateful
        self.return_sequences = layer.return_sequences
        self.return_state = layer.return_state
        self.supports_masking = True
        if weights:
            self._initial_weights = weights

    def build(self, sequences_shape, initial_state_shape=None):
        for sub in (self.forward_layer, self.backward_layer):
            if not sub.built:
                sub.build(sequences_shape)
                sub.built = True
        self.input_spec = InputSpec(ndim=3, axes={-1: sequences_shape[-1]})
        self.built = True
        if getattr(self, "_initial_weights", None):
            self.set_weights(self._initial_weights)
            self._initial_weights = None

    def call(self, sequences, initial_state=None, mask=None, training=False):
        fs = bs = None
        if initial_state is not None:
            initial_state = _as_list(initial_state)
            half = len(initial_state) // 2
            fs, bs = initial_state[:half], initial_state[half:]
        y = self.forward_layer(sequences, initial_state=fs, mask=mask, training=training)
        y_rev = self.backward_layer(sequences, initial_state=bs, mask=mask, training=training)
        states = []
        if self.return_state:
            states = list(y[1:]) + list(y_rev[1:])
            y, y_rev = y[0], y_rev[0]
        if self.return_sequences:
            y_rev = y_rev[:, ::-1]
        if self.merge_mode == "concat":
            out = ops.concatenate([y, y_rev], axis=-1)
        elif self.merge_mode == "sum":
            out = y + y_rev
        elif self.merge_mode == "ave":
            out = (y + y_rev) * 0.5
        elif self.merge_mode == "mul":
            out = y * y_rev
        else:
            out = [y, y_rev]
        if self.return_state:
            return (out if isinstance(out, list) else [out]) + states
        return out

    def compute_output_shape(self, sequences_shape, initial_state_shape=None):
        shape = self.forward_layer.compute_output_shape(sequences_shape)
        states = []
        if self.return_state:
            shape, states = shape[0], list(shape[1:])
        if self.merge_mode == "concat":
            shape = tuple(shape[:-1]) + (None if shape[-1] is None else 2 * shape[-1],)
            outs = [shape]
        elif self.merge_mode is None:
            outs = [tuple(shape), tuple(shape)]
        else:
            outs = [tuple(shape)]
        if self.return_state:
            return outs + states + states
        return outs[0] if self.merge_mode is not None else outs

    def compute_mask(self, inputs, mask):
        if isinstance(mask, (list, tuple)):
            mask = mask[0]
        out = mask if self.return_sequences else None
        if self.merge_mode is None:
            out = [out, out]
        if self.return_state:
            n = len(self.forward_layer.state_size) * 2
            return (out if isinstance(out, list) else [out]) + [None] * n
        return out

    def reset_states(self):
        self.reset_state()

    def reset_state(self):
        if not self.stateful:
            raise AttributeError(f"Bidirectional '{self.name}': the layer must be stateful to reset its states.")
        self.forward_layer.reset_state()
        self.backward_layer.reset_state()

    @property
    def states(self):
        if self.forward_layer.states and self.backward_layer.states:
            return tuple(self.forward_layer.states + self.backward_layer.states)
        return None

    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable, "dtype": self._dtype_config(),
                  "merge_mode": self.merge_mode}
        from ..registry import serialize
        config["layer"] = serialize(self.forward_layer)
        config["backward_layer"] = serialize(self.backward_layer)
        return config


class TimeDistributed(Layer):
    """Applies a layer to every time step: (N, T, ...) -> layer on (N*T, ...) -> (N, T, ...).

    The wrapped layer's weights are shared by all steps (one set of parameters)."""

    def __init__(self, layer, **kwargs):
        if isinstance(layer, dict):
            layer = _deserialize(layer)
        if not isinstance(layer, Layer):
            raise ValueError(f"TimeDistributed: `layer` must be a Layer instance. Received: layer={layer!r}")
        super().__init__(**kwargs)
        self.layer = layer
        self.supports_masking = True

    def build(self, input_shape):
        if len(input_shape) < 3:
            raise ValueError(f"TimeDistributed '{self.name}': the input must be at least 3-D (batch, time, ...). "
                             f"Received input_shape={tuple(input_shape)}")
        if not self.layer.built:
            self.layer.build((None,) + tuple(input_shape[2:]))
            self.layer.built = True
        self.input_spec = InputSpec(min_ndim=3, axes={-1: input_shape[-1]})
        self.built = True

    def call(self, inputs, training=False):
        N, T = inputs.shape[0], inputs.shape[1]
        y = self.layer(ops.reshape(inputs, (N * T,) + tuple(inputs.shape[2:])), training=training)
        return ops.reshape(y, (N, T) + tuple(y.shape[1:]))

    def compute_output_shape(self, input_shape):
        inner = self.layer.compute_output_shape((None,) + tuple(input_shape[2:]))
        return (input_shape[0], input_shape[1]) + tuple(inner[1:])

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("layer"), dict):
            config["layer"] = _deserialize(config["layer"])
        return cls(**config)


class Masking(Layer):
    """Masks time steps whose features all equal mask_value: they are skipped by the layers downstream
    (recurrent layers carry their state over them). Output: inputs * mask; mask (N, T) bool."""

    def __init__(self, mask_value=0.0, **kwargs):
        super().__init__(**kwargs)
        self.mask_value = mask_value
        self.supports_masking = True

    def _mask(self, inputs):
        x = inputs.data if isinstance(inputs, Tensor) else np.asarray(inputs)
        return (x != self.mask_value).any(axis=-1)

    def call(self, inputs):
        keep = self._mask(inputs)
        out = inputs * Tensor(keep[..., None].astype(inputs.dtype))
        return out

    def compute_mask(self, inputs, mask=None):
        return Tensor(self._mask(inputs))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


_ = (no_grad, Variable)
