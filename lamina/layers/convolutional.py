"""Convolution layers: Conv1D, Conv2D, Conv1DTranspose, Conv2DTranspose.

A convolution slides a small learned filter over the image (or sequence) and computes, at every
position, a weighted sum of the pixels under it: the same weights everywhere, so a feature learned
in one corner is recognised in every other, with far fewer weights than a Dense layer. Each of the
``filters`` filters gives one output channel (a feature map). The math lives in ``lamina.ops.convolution``.
"""
import numpy as np

from .. import activations, constraints, initializers, ops, regularizers
from ..ops.activations import relu as _relu
from .layer import InputSpec, Layer

_DATA_FORMATS = ("channels_last", "channels_first")


def standardize_data_format(data_format, layer_name):
    """None -> 'channels_last' (lamina's image data format); otherwise checked."""
    if data_format is None:
        return "channels_last"
    value = str(data_format).lower()
    if value not in _DATA_FORMATS:
        raise ValueError(f"Layer '{layer_name}': unknown data_format {data_format!r}. Valid values: "
                         f"{', '.join(repr(v) for v in _DATA_FORMATS)}.")
    return value


def to_channels_last(x, data_format):
    """(N, C, *spatial) -> (N, *spatial, C) for 'channels_first' input; x itself otherwise."""
    if data_format == "channels_first":
        return ops.transpose(x, (0,) + tuple(range(2, x.ndim)) + (1,))
    return x


def to_channels_first(y, data_format):
    """Inverse of to_channels_last."""
    if data_format == "channels_first":
        return ops.transpose(y, (0, y.ndim - 1) + tuple(range(1, y.ndim - 1)))
    return y


def standardize_tuple(value, n, name, layer_name, allow_zero=False):
    """An int or a sequence of n ints -> tuple of n ints, each >= 1 (>= 0 when allow_zero)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value),) * n
    try:
        value = tuple(int(v) for v in value)
    except TypeError:
        raise ValueError(f"Layer '{layer_name}': {name} must be an int or a tuple of {n} ints. "
                         f"Received: {name}={value!r}") from None
    low = 0 if allow_zero else 1
    if len(value) != n or any(v < low for v in value):
        raise ValueError(f"Layer '{layer_name}': {name} must be {'a non-negative' if allow_zero else 'a positive'} "
                         f"int or a tuple of {n} such ints. Received: {name}={value!r}")
    return value


def standardize_padding(padding, layer_name, allowed=("valid", "same")):
    p = padding.lower() if isinstance(padding, str) else padding
    if p not in allowed:
        raise ValueError(f"Layer '{layer_name}': unknown padding {padding!r}. Valid values: "
                         f"{', '.join(repr(a) for a in allowed)}.")
    return p


class BaseConv(Layer):
    """Shared argument handling, weights and shapes of the convolution layers of every rank."""

    rank = 2
    transpose = False
    paddings = ("valid", "same")
    _cast_integer_inputs = True  # bool/int inputs compute in the layer's float dtype (not float64 by promotion)

    def __init__(self, rank, filters, kernel_size, strides=1, padding="valid", output_padding=None,
                 data_format=None, dilation_rate=1, groups=1, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.rank = rank
        if not isinstance(filters, (int, np.integer)) or isinstance(filters, bool) or filters <= 0:
            raise ValueError(f"Layer '{self.name}': filters must be a positive int. Received: filters={filters!r}")
        self.filters = int(filters)
        self.kernel_size = standardize_tuple(kernel_size, rank, "kernel_size", self.name)
        self.strides = standardize_tuple(strides, rank, "strides", self.name)
        self.dilation_rate = standardize_tuple(dilation_rate, rank, "dilation_rate", self.name)
        self.padding = standardize_padding(padding, self.name, self.paddings)
        self.data_format = standardize_data_format(data_format, self.name)
        if (not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1
                or self.filters % groups or (groups != 1 and self.transpose)):
            raise ValueError(f"Layer '{self.name}': groups must be a positive int dividing filters ({self.filters})"
                             f"{'; transposed convolutions take groups=1 only' if self.transpose else ''}. "
                             f"Received: groups={groups!r}")
        self.groups = int(groups)   # > 1: the channels split into that many independent convolutions
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(f"Layer '{self.name}': strides > 1 are not supported together with "
                             f"dilation_rate > 1 (as in Keras). Received: strides={self.strides}, "
                             f"dilation_rate={self.dilation_rate}")
        if output_padding is not None:
            output_padding = standardize_tuple(output_padding, rank, "output_padding", self.name, allow_zero=True)
            if any(p >= s for p, s in zip(output_padding, self.strides)):
                raise ValueError(f"Layer '{self.name}': output_padding must be smaller than the strides along "
                                 f"every axis. Received: output_padding={output_padding}, strides={self.strides}")
        self.output_padding = output_padding
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.activity_regularizer = activity_regularizer  # applied by Layer.__call__
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.input_spec = InputSpec(ndim=rank + 2)

    @property
    def _channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def build(self, input_shape):
        in_channels = input_shape[self._channel_axis]
        if in_channels is None:
            raise ValueError(f"Layer '{self.name}': the channel axis of the input must be known. "
                             f"Received input_shape={tuple(input_shape)}")
        if in_channels % self.groups:
            raise ValueError(f"Layer '{self.name}': the input channels ({in_channels}) must be a multiple of "
                             f"groups ({self.groups}).")
        # Conv kernel (*k, in / groups, filters); transposed conv kernel (*k, filters, in), as Keras.
        io = (self.filters, in_channels) if self.transpose else (in_channels // self.groups, self.filters)
        self.kernel = self.add_weight(shape=self.kernel_size + io, initializer=self.kernel_initializer,
                                      regularizer=self.kernel_regularizer, constraint=self.kernel_constraint,
                                      name="kernel")
        self.bias = self.add_weight(shape=(self.filters,), initializer=self.bias_initializer,
                                    regularizer=self.bias_regularizer, constraint=self.bias_constraint,
                                    name="bias") if self.use_bias else None
        self.input_spec = InputSpec(ndim=self.rank + 2, axes={self._channel_axis: in_channels})
        self.built = True

    _fuses_relu = False  # whether _conv takes activation='relu' (fused into the op)

    def _conv(self, x):
        raise NotImplementedError

    def call(self, inputs):
        x = to_channels_last(inputs, self.data_format)
        if self._fuses_relu and self.activation is _relu:
            y = self._conv(x, activation="relu")  # inside the op, block by block (ops.conv2d, ops.nn.conv_bias)
        else:
            y = self._conv(x)
            y = y if self.activation is None else self.activation(y)  # None once set by hand, as Keras
        return to_channels_first(y, self.data_format)

    def _spatial_out(self, size, a):
        if self.transpose:
            return ops.conv_transpose_output_length(size, self.kernel_size[a], self.padding,
                                                    None if self.output_padding is None else self.output_padding[a],
                                                    self.strides[a], self.dilation_rate[a])
        return ops.conv_output_length(size, self.kernel_size[a], self.padding, self.strides[a], self.dilation_rate[a])

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        spatial = shape[1:-1] if self.data_format == "channels_last" else shape[2:]
        out = tuple(self._spatial_out(n, a) for a, n in enumerate(spatial))
        if any(n is not None and n <= 0 for n in out):
            raise ValueError(f"Layer '{self.name}': the input {shape} is too small for kernel_size "
                             f"{self.kernel_size} with dilation_rate {self.dilation_rate} "
                             f"(output would be {out}).")
        if self.data_format == "channels_last":
            return (shape[0],) + out + (self.filters,)
        return (shape[0], self.filters) + out


def _grouped_conv(layer, x, activation=None):
    """groups > 1 (depthwise when groups equals the input channels): ops.nn.conv_bias infers the groups from the
    kernel's input channels, and adds the bias and takes a ReLU inside its op."""
    padding = layer.padding
    if padding == "causal":      # Conv1D: pad the past only
        x = ops.pad(x, ((0, 0), (layer.dilation_rate[0] * (layer.kernel_size[0] - 1), 0), (0, 0)))
        padding = "valid"
    return ops.nn.conv_bias(x, layer.kernel, layer.bias, layer.strides, padding, layer.dilation_rate, activation)


class Conv1D(BaseConv):
    """1-D convolution over steps: (N, L, C) -> (N, OL, filters).

    padding 'valid', 'same' or 'causal' (output t sees inputs <= t only: WaveNet-style models).
    Weights: kernel (kernel_size, C, filters), bias (filters,). Parameters: k*C*filters + filters.
    OL = floor((L - (k-1)*d - 1) / s) + 1 ('valid'), ceil(L / s) ('same', 'causal').
    """

    paddings = ("valid", "same", "causal")

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1,
                 groups=1, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(1, filters, kernel_size, strides=strides, padding=padding, data_format=data_format,
                         dilation_rate=dilation_rate, groups=groups, activation=activation, use_bias=use_bias,
                         kernel_initializer=kernel_initializer, bias_initializer=bias_initializer,
                         kernel_regularizer=kernel_regularizer, bias_regularizer=bias_regularizer,
                         activity_regularizer=activity_regularizer, kernel_constraint=kernel_constraint,
                         bias_constraint=bias_constraint, **kwargs)

    _fuses_relu = True

    def _conv(self, x, activation=None):
        if self.groups > 1:
            return _grouped_conv(self, x, activation)
        return ops.conv1d(x, self.kernel, self.bias, self.strides, self.padding, self.dilation_rate,
                          activation=activation)


class Conv2D(BaseConv):
    """2-D convolution over images: (N, H, W, C) -> (N, OH, OW, filters).

    y[n,p,q,o] = activation(b[o] + sum_{i,j,c} x_pad[n, p*sh + i*dh, q*sw + j*dw, c] * kernel[i,j,c,o]).
    Weights: kernel (kh, kw, C, filters), bias (filters,). Parameters: kh*kw*C*filters + filters.
    OH = floor((H - (kh-1)*dh - 1) / sh) + 1 ('valid') or ceil(H / sh) ('same', Keras's asymmetric padding).
    """

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), groups=1, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(2, filters, kernel_size, strides=strides, padding=padding, data_format=data_format,
                         dilation_rate=dilation_rate, groups=groups, activation=activation, use_bias=use_bias,
                         kernel_initializer=kernel_initializer, bias_initializer=bias_initializer,
                         kernel_regularizer=kernel_regularizer, bias_regularizer=bias_regularizer,
                         activity_regularizer=activity_regularizer, kernel_constraint=kernel_constraint,
                         bias_constraint=bias_constraint, **kwargs)

    _fuses_relu = True

    def _conv(self, x, activation=None):
        if self.groups > 1:
            return _grouped_conv(self, x, activation)
        return ops.conv2d(x, self.kernel, self.bias, self.strides, self.padding, self.dilation_rate,
                          activation=activation)


class Conv1DTranspose(BaseConv):
    """Transposed 1-D convolution (learned upsampling of sequences): (N, L, C) -> (N, OL, filters).

    Weights: kernel (kernel_size, filters, C), bias (filters,). Parameters: k*C*filters + filters.
    OL = L*s + max(k - s, 0) ('valid') or L*s ('same'); with output_padding p: (L-1)*s + k - 2*pad + p.
    """

    transpose = True

    def __init__(self, filters, kernel_size, strides=1, padding="valid", output_padding=None, data_format=None,
                 dilation_rate=1, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(1, filters, kernel_size, strides=strides, padding=padding, output_padding=output_padding,
                         data_format=data_format, dilation_rate=dilation_rate, activation=activation,
                         use_bias=use_bias, kernel_initializer=kernel_initializer,
                         bias_initializer=bias_initializer, kernel_regularizer=kernel_regularizer,
                         bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
                         kernel_constraint=kernel_constraint, bias_constraint=bias_constraint, **kwargs)

    def _conv(self, x):
        return ops.conv1d_transpose(x, self.kernel, self.bias, self.strides, self.padding,
                                    None if self.output_padding is None else self.output_padding[0],
                                    self.dilation_rate)


class Conv2DTranspose(BaseConv):
    """Transposed 2-D convolution (learned upsampling: decoders, GAN generators, U-Nets).

    Each input pixel paints kernel[i, j] @ x[n, h, w] at (h*sh + i*dh, w*sw + j*dw) of the output,
    overlapping paints add up; the canvas is cropped as Keras does. (N, H, W, C) -> (N, OH, OW, filters).
    Weights: kernel (kh, kw, filters, C), bias (filters,). Parameters: kh*kw*C*filters + filters.
    OH = H*sh + max(kh - sh, 0) ('valid') or H*sh ('same'); with output_padding p: (H-1)*sh + kh - 2*pad + p.
    """

    transpose = True

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", output_padding=None,
                 data_format=None, dilation_rate=(1, 1), activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 **kwargs):
        super().__init__(2, filters, kernel_size, strides=strides, padding=padding, output_padding=output_padding,
                         data_format=data_format, dilation_rate=dilation_rate, activation=activation,
                         use_bias=use_bias, kernel_initializer=kernel_initializer,
                         bias_initializer=bias_initializer, kernel_regularizer=kernel_regularizer,
                         bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
                         kernel_constraint=kernel_constraint, bias_constraint=bias_constraint, **kwargs)

    def _conv(self, x):
        return ops.conv2d_transpose(x, self.kernel, self.bias, self.strides, self.padding, self.output_padding,
                                    self.dilation_rate)


Convolution1D, Convolution2D = Conv1D, Conv2D
Convolution1DTranspose, Convolution2DTranspose = Conv1DTranspose, Conv2DTranspose

__all__ = ["Conv1D", "Conv2D", "Conv1DTranspose", "Conv2DTranspose", "Convolution1D", "Convolution2D",
           "Convolution1DTranspose", "Convolution2DTranspose"]
