"""Core layers: Input, Dense, Activation, Lambda.

The input layer only declares the shape of the data; a hidden or output Dense layer connects every
input to every unit (y = activation(x W + b)); the output layer's activation fits the task
(softmax for classes, linear for regression).
"""
import numpy as np

from .. import activations, initializers, ops
from ..tensor import Tensor
from .layer import InputSpec, KerasTensor, Layer, Node, unique_name


class InputLayer(Layer):
    """The entry of a functional model: holds the shape (without the batch axis) of the data fed in."""

    def __init__(self, shape=None, batch_size=None, dtype=None, sparse=None, batch_shape=None, name=None,
                 input_tensor=None, **kwargs):
        kwargs.pop("input_shape", None)
        if "batch_input_shape" in kwargs:
            batch_shape = kwargs.pop("batch_input_shape")
        super().__init__(name=name or unique_name("input_layer"), dtype=dtype, **kwargs)
        if batch_shape is None:
            if shape is None:
                raise ValueError("InputLayer needs a shape, e.g. InputLayer(shape=(28, 28, 1)).")
            if isinstance(shape, int):
                shape = (shape,)
            batch_shape = (batch_size,) + tuple(shape)
        self.batch_shape = tuple(None if d is None else int(d) for d in batch_shape)
        self._input_dtype = np.dtype(dtype or "float32")
        self.built = True
        tensor = KerasTensor(self.batch_shape, self._input_dtype, name=self.name, history=(self, 0, 0))
        self._inbound_nodes.append(Node(self, (), {}, tensor))
        self.output_tensor = tensor

    def call(self, inputs):
        return inputs

    def get_config(self):
        return {"batch_shape": list(self.batch_shape), "dtype": self._input_dtype.name, "name": self.name}


def Input(shape=None, batch_size=None, dtype=None, sparse=None, batch_shape=None, name=None, tensor=None):
    """A symbolic input tensor for the functional API: ``x = Input(shape=(32, 32, 3))``."""
    layer = InputLayer(shape=shape, batch_size=batch_size, dtype=dtype, batch_shape=batch_shape, name=name)
    return layer.output_tensor


class Dense(Layer):
    """Fully connected layer: ``activation(inputs @ kernel + bias)`` over the last axis.

    Args: units, activation, use_bias, kernel/bias initializer, regularizer and constraint.
    Input shape (..., in) -> output shape (..., units). Parameters: in * units + units.
    Backward: dx = dy W^T, dW = x^T dy, db = sum(dy).
    """

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, lora_rank=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(units, (int, np.integer)) or isinstance(units, bool) or units <= 0:
            raise ValueError(f"Dense '{self.name}': units must be a positive int. Received: units={units!r}")
        self.units = int(units)
        self.activation = activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer, self.bias_regularizer = kernel_regularizer, bias_regularizer
        self.kernel_constraint, self.bias_constraint = kernel_constraint, bias_constraint
        self.activity_regularizer = activity_regularizer
        self.input_spec = InputSpec(min_ndim=2)
        self.supports_masking = True

    def build(self, input_shape):
        in_dim = input_shape[-1]
        if in_dim is None:
            raise ValueError(f"Dense '{self.name}': the last axis of the input must be known. "
                             f"Received input_shape={tuple(input_shape)}")
        self.kernel = self.add_weight(shape=(in_dim, self.units), initializer=self.kernel_initializer,
                                      regularizer=self.kernel_regularizer, constraint=self.kernel_constraint,
                                      name="kernel")
        self.bias = self.add_weight(shape=(self.units,), initializer=self.bias_initializer,
                                    regularizer=self.bias_regularizer, constraint=self.bias_constraint,
                                    name="bias") if self.use_bias else None
        self.input_spec = InputSpec(min_ndim=2, axes={-1: in_dim})
        self.built = True

    def call(self, inputs):
        return self.activation(ops.linear(inputs, self.kernel, self.bias))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)


class Activation(Layer):
    """Applies an activation function by name or callable: ``Activation('relu')``."""

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.get(activation)
        self.supports_masking = True

    def call(self, inputs):
        return self.activation(inputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


class Lambda(Layer):
    """Wraps a Python function as a layer. In memory only: a model file never stores or runs its code,
    so a model with a Lambda layer cannot be saved (use a registered custom layer instead)."""

    def __init__(self, function, output_shape=None, mask=None, arguments=None, **kwargs):
        super().__init__(**kwargs)
        if not callable(function):
            raise ValueError(f"Lambda '{self.name}': function must be callable. Received: {function!r}")
        self.function = function
        self.arguments = arguments or {}
        self._output_shape = output_shape
        self.supports_masking = mask is not None

    def call(self, inputs):
        return self.function(inputs, **self.arguments)

    def compute_output_shape(self, input_shape):
        if self._output_shape is None:
            raise NotImplementedError
        if callable(self._output_shape):
            return self._output_shape(input_shape)
        return (input_shape[0],) + tuple(self._output_shape)

    def get_config(self):
        raise ValueError(f"Lambda layer '{self.name}' cannot be serialised: lamina never stores or executes "
                         "code from a model file. Replace it with a custom Layer subclass registered with "
                         "lamina.utils.register_keras_serializable.")


__all__ = ["InputLayer", "Input", "Dense", "Activation", "Lambda"]
_ = Tensor
