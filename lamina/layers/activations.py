"""Activation layers: ReLU, LeakyReLU, ELU, PReLU, Softmax.

An activation gives a network its non-linearity (two Dense layers with nothing between them are one
linear map). ``Dense(64, activation='relu')`` applies one inside the layer; these layers exist for
activations with arguments (a capped or leaky ReLU), a learned one (PReLU) or a masked softmax.
All keep the input's shape and pass its mask through.
"""
import numbers

import numpy as np

from .. import constraints, initializers, ops, regularizers
from ..ops import activations as _act  # the kernels (lamina.ops.relu is keras.ops.relu(x))
from ..backend import get_array_module
from ..tensor import Tensor
from .layer import InputSpec, Layer

__all__ = ["ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax"]


def _non_negative(layer, arg, value, allow_none=False):
    if value is None and allow_none:
        return None
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{type(layer).__name__} '{layer.name}': {arg} must be a non-negative number"
                         f"{' or None' if allow_none else ''}. Received: {arg}={value!r}")
    return float(value)


class _Elementwise(Layer):
    _numeric_inputs = True   # (an object array's None became NaN)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


class ReLU(_Elementwise):
    """Rectified linear unit with Keras's options.

    Args: max_value (cap, None for none), negative_slope (slope below the threshold), threshold.
    Forward: y = min(x, max_value) for x > threshold, negative_slope * (x - threshold) otherwise.
    Backward: dy where threshold < x < max_value, negative_slope * dy below the threshold, 0 above the cap.
    """

    def __init__(self, max_value=None, negative_slope=0.0, threshold=0.0, **kwargs):
        super().__init__(**kwargs)
        self.max_value = _non_negative(self, "max_value", max_value, allow_none=True)
        self.negative_slope = _non_negative(self, "negative_slope", negative_slope)
        self.threshold = _non_negative(self, "threshold", threshold)

    def call(self, inputs):
        return _act.relu(inputs, negative_slope=self.negative_slope, max_value=self.max_value,
                        threshold=self.threshold)


class LeakyReLU(_Elementwise):
    """y = x for x > 0, negative_slope * x otherwise (Keras 3's layer default slope is 0.3).

    ``alpha=`` (Keras 2's name) is accepted. Backward: dy or negative_slope * dy.
    """

    def __init__(self, negative_slope=0.3, **kwargs):
        if "alpha" in kwargs:  # Keras 2 name of the same argument
            negative_slope = kwargs.pop("alpha")
        super().__init__(**kwargs)
        self.negative_slope = _non_negative(self, "negative_slope", negative_slope)

    def call(self, inputs):
        return ops.leaky_relu(inputs, negative_slope=self.negative_slope)

    def get_config(self):
        config = super().get_config()
        config.pop("alpha", None)
        config["negative_slope"] = self.negative_slope
        return config


class ELU(_Elementwise):
    """Exponential linear unit: y = x for x > 0, alpha (e^x - 1) otherwise. Backward: dy or dy (y + alpha)."""

    def __init__(self, alpha=1.0, **kwargs):
        super().__init__(**kwargs)
        self.alpha = float(alpha)

    def call(self, inputs):
        return ops.elu(inputs, alpha=self.alpha)


class PReLU(_Elementwise):
    """Parametric ReLU: a leaky ReLU whose slope ``alpha`` is learned, one per input entry.

    Args: alpha_initializer ('Zeros': starts as a plain ReLU), alpha_regularizer, alpha_constraint,
        shared_axes (axes, counted with the batch axis as 0, that share one slope: e.g. [1, 2] for one
        slope per channel of an (N, H, W, C) image).
    Weight ``alpha`` of shape input_shape[1:] with the shared axes set to 1; parameters: its size.
    Forward: y = x for x > 0, alpha * x otherwise. Backward: dx = dy or alpha * dy;
    dalpha = sum of dy * x over the entries with x <= 0 (and over the batch and shared axes).
    """

    _cast_integer_inputs = True  # bool/int inputs compute in the layer's float dtype, as Keras

    def __init__(self, alpha_initializer="Zeros", alpha_regularizer=None, alpha_constraint=None, shared_axes=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.alpha_initializer = initializers.get(alpha_initializer)
        self.alpha_regularizer = regularizers.get(alpha_regularizer)
        self.alpha_constraint = constraints.get(alpha_constraint)
        if shared_axes is None:
            self.shared_axes = None
        elif isinstance(shared_axes, (list, tuple)):
            self.shared_axes = [int(a) for a in shared_axes]
        else:
            self.shared_axes = [int(shared_axes)]

    def build(self, input_shape):
        rank = len(input_shape)
        shared = self.shared_axes or []
        for a in shared:
            if not 1 <= a < rank:
                raise ValueError(f"PReLU '{self.name}': shared_axes must be axes 1..{rank - 1} of the input "
                                 f"(0 is the batch axis). Received: shared_axes={self.shared_axes} for input "
                                 f"shape {tuple(input_shape)}")
        param_shape = [1 if i in shared else input_shape[i] for i in range(1, rank)]
        if any(d is None for d in param_shape):
            raise ValueError(f"PReLU '{self.name}': every non-shared axis must have a known size to build alpha. "
                             f"Received input shape {tuple(input_shape)} with shared_axes={self.shared_axes}")
        self.alpha = self.add_weight(shape=param_shape, initializer=self.alpha_initializer,
                                     regularizer=self.alpha_regularizer, constraint=self.alpha_constraint,
                                     name="alpha")
        # Unlike Keras (which checks only the rank when no axis is shared) every non-shared axis is
        # checked, so a wrong shape gets a ValueError naming the layer rather than a broadcasting error.
        self.input_spec = InputSpec(ndim=rank, axes={i: input_shape[i] for i in range(1, rank) if i not in shared})
        self.built = True

    def call(self, inputs):
        return ops.prelu(inputs, self.alpha)


class Softmax(_Elementwise):
    """Softmax along ``axis`` (an int or a tuple of axes): exponentials normalised to sum to 1.

    Call: ``layer(x, mask=None)``; where the mask is False (a mask over x's leading axes, like (N, T)
    for (N, T, D), covers the rest; otherwise it broadcasts as NumPy does) the input gets -1e9
    added, as in Keras, so masked positions get ~0 probability, and the output is multiplied by the
    mask (an entirely masked slice gives zeros, not a uniform distribution).
    Forward: y_i = exp(x_i) / sum_j exp(x_j). Backward: dx = y * (dy - sum(dy * y)).
    """

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = list(axis) if isinstance(axis, (list, tuple)) else int(axis)

    def _softmax(self, x):
        if isinstance(self.axis, int):
            return ops.softmax(x, axis=self.axis)
        if len(self.axis) == 1:
            return ops.softmax(x, axis=self.axis[0])
        # several axes: move them to the end, flatten them into one, softmax, and undo the moves
        axes = sorted(a % x.ndim for a in self.axis)
        keep = [i for i in range(x.ndim) if i not in axes]
        moved = ops.transpose(x, keep + axes)
        lead = tuple(moved.shape[:len(keep)])
        y = ops.softmax(ops.reshape(moved, lead + (-1,)), axis=-1)
        y = ops.reshape(y, tuple(moved.shape))
        return ops.transpose(y, list(np.argsort(keep + axes)))

    def call(self, inputs, mask=None):
        if mask is None:
            return self._softmax(inputs)
        m = mask.data if isinstance(mask, Tensor) else mask
        xp = get_array_module(inputs.data)
        m = xp.asarray(m).astype(bool)
        if m.ndim < inputs.ndim and tuple(m.shape) == tuple(inputs.shape[:m.ndim]):
            # a propagated mask covers the leading axes ((N, T) for (N, T, D)): spread it over the rest
            m = m.reshape(m.shape + (1,) * (inputs.ndim - m.ndim))
        large_negative = -3e4 if inputs.dtype == np.float16 else -1e9
        adder = Tensor(xp.where(m, 0.0, large_negative).astype(inputs.dtype))
        y = self._softmax(ops.add(inputs, adder))
        return ops.multiply(y, Tensor(m.astype(inputs.dtype)))
