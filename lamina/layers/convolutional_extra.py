"""Keras 3 layers beyond the core catalog: 3-D convolution/pooling/resampling, depthwise and separable
convolutions, adaptive pooling, RMS and unit normalisation, EinsumDense, Identity, AlphaDropout.

Every layer takes Keras's constructor arguments and defaults and creates its weights under Keras's names,
shapes and order, so ``.keras`` files move both ways. The math is in ``lamina.ops.nn`` (conv, depthwise_conv,
conv_transpose, max_pool, average_pool, adaptive pools, rms_normalization) and ``ops.einsum``.
"""
import re

import numpy as np

from .. import activations, backend, constraints, initializers, ops, regularizers
from ..ops.convolution import _pairs
from ..tensor import Tensor
from .convolutional import (BaseConv, standardize_data_format, standardize_padding, standardize_tuple,
                            to_channels_first, to_channels_last)
from .core import LoraKernel, _check_lora_rank, _check_quantization_config
from .layer import InputSpec, Layer
from .pooling import BaseGlobalPooling, BasePooling

__all__ = ["Conv3D", "Conv3DTranspose", "Convolution3D", "Convolution3DTranspose", "DepthwiseConv1D",
           "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D", "SeparableConvolution1D",
           "SeparableConvolution2D", "MaxPooling3D", "AveragePooling3D", "MaxPool3D", "AvgPool3D",
           "GlobalMaxPooling3D", "GlobalAveragePooling3D", "GlobalMaxPool3D", "GlobalAvgPool3D",
           "AdaptiveAveragePooling1D", "AdaptiveAveragePooling2D", "AdaptiveAveragePooling3D",
           "AdaptiveMaxPooling1D", "AdaptiveMaxPooling2D", "AdaptiveMaxPooling3D", "UpSampling3D",
           "ZeroPadding3D", "Cropping3D", "RMSNormalization", "UnitNormalization", "EinsumDense", "Identity",
           "AlphaDropout"]


def _like(w, x):
    """The weight w in x's float dtype (weights stay float32 when a check runs the layer in float64)."""
    return w if w.dtype == x.dtype else ops.cast(w, x.dtype)


def _bias(y, bias):
    return y if bias is None else y + _like(bias, y)


# ----------------------------------------------------------------------------- 3-D convolution
class Conv3D(BaseConv):
    """3-D convolution over volumes (video, scans): (N, D, H, W, C) -> (N, OD, OH, OW, filters).

    Weights: kernel (kd, kh, kw, C // groups, filters), bias (filters,). Output lengths as Conv2D's per axis.
    groups > 1 splits the channels into that many independent convolutions (as Keras).
    """

    def __init__(self, filters, kernel_size, strides=(1, 1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1, 1), groups=1, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 **kwargs):
        super().__init__(3, filters, kernel_size, strides=strides, padding=padding, data_format=data_format,
                         dilation_rate=dilation_rate, activation=activation, use_bias=use_bias,
                         kernel_initializer=kernel_initializer, bias_initializer=bias_initializer,
                         kernel_regularizer=kernel_regularizer, bias_regularizer=bias_regularizer,
                         activity_regularizer=activity_regularizer, kernel_constraint=kernel_constraint,
                         bias_constraint=bias_constraint, **kwargs)
        if not isinstance(groups, (int, np.integer)) or groups < 1 or self.filters % groups:
            raise ValueError(f"Layer '{self.name}': groups must be a positive int dividing filters "
                             f"({self.filters}). Received: groups={groups!r}")
        self.groups = int(groups)

    def build(self, input_shape):
        c = input_shape[self._channel_axis]
        if c is None or c % self.groups:
            raise ValueError(f"Layer '{self.name}': the input channels ({c}) must be known and a multiple of "
                             f"groups ({self.groups}).")
        self.kernel = self.add_weight(shape=self.kernel_size + (c // self.groups, self.filters), name="kernel",
                                      initializer=self.kernel_initializer, regularizer=self.kernel_regularizer,
                                      constraint=self.kernel_constraint)
        self.bias = self.add_weight(shape=(self.filters,), initializer=self.bias_initializer,
                                    regularizer=self.bias_regularizer, constraint=self.bias_constraint,
                                    name="bias") if self.use_bias else None
        self.input_spec = InputSpec(ndim=5, axes={self._channel_axis: c})
        self.built = True

    _fuses_relu = True

    def _conv(self, x, activation=None):   # (the bias and a ReLU inside the op: ops.nn.conv_bias)
        return ops.nn.conv_bias(x, self.kernel, self.bias, self.strides, self.padding, self.dilation_rate, activation)


class Conv3DTranspose(BaseConv):
    """Transposed 3-D convolution (learned upsampling of volumes): (N, D, H, W, C) -> (N, OD, OH, OW, filters).

    Weights: kernel (kd, kh, kw, filters, C), bias (filters,). Output lengths as Conv2DTranspose's per axis.
    """

    transpose = True

    def __init__(self, filters, kernel_size, strides=(1, 1, 1), padding="valid", data_format=None,
                 output_padding=None, dilation_rate=(1, 1, 1), activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros", kernel_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 **kwargs):
        super().__init__(3, filters, kernel_size, strides=strides, padding=padding, output_padding=output_padding,
                         data_format=data_format, dilation_rate=dilation_rate, activation=activation,
                         use_bias=use_bias, kernel_initializer=kernel_initializer,
                         bias_initializer=bias_initializer, kernel_regularizer=kernel_regularizer,
                         bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
                         kernel_constraint=kernel_constraint, bias_constraint=bias_constraint, **kwargs)

    def _conv(self, x):
        y = ops.conv_transpose(x, self.kernel, self.strides, self.padding, self.output_padding, "channels_last",
                               self.dilation_rate)
        return _bias(y, self.bias)


Convolution3D, Convolution3DTranspose = Conv3D, Conv3DTranspose


# ----------------------------------------------------------------------------- depthwise / separable
class _BaseDepthwise(Layer):
    """Shared arguments of the depthwise and separable convolutions (rank 1 or 2)."""

    _cast_integer_inputs = True  # bool/int inputs compute in the layer's float dtype, as the other convolutions

    def _init_common(self, rank, kernel_size, strides, padding, data_format, dilation_rate, depth_multiplier,
                     activation, use_bias, bias_initializer, bias_regularizer, bias_constraint,
                     activity_regularizer):
        self.rank = rank
        self.kernel_size = standardize_tuple(kernel_size, rank, "kernel_size", self.name)
        self.strides = standardize_tuple(strides, rank, "strides", self.name)
        self.dilation_rate = standardize_tuple(dilation_rate, rank, "dilation_rate", self.name)
        self.padding = standardize_padding(padding, self.name)
        self.data_format = standardize_data_format(data_format, self.name)
        if not isinstance(depth_multiplier, (int, np.integer)) or depth_multiplier < 1:
            raise ValueError(f"Layer '{self.name}': depth_multiplier must be a positive int. "
                             f"Received: depth_multiplier={depth_multiplier!r}")
        if max(self.strides) > 1 and max(self.dilation_rate) > 1:
            raise ValueError(f"Layer '{self.name}': strides > 1 are not supported together with "
                             f"dilation_rate > 1 (as in Keras). Received: strides={self.strides}, "
                             f"dilation_rate={self.dilation_rate}")
        self.depth_multiplier = int(depth_multiplier)
        self.activation = activations.get(activation)
        self.use_bias = bool(use_bias)
        self.bias_initializer = initializers.get(bias_initializer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.bias_constraint = constraints.get(bias_constraint)
        self.activity_regularizer = activity_regularizer
        self.input_spec = InputSpec(ndim=rank + 2)

    @property
    def _channel_axis(self):
        return -1 if self.data_format == "channels_last" else 1

    def _in_channels(self, input_shape):
        c = input_shape[self._channel_axis]
        if c is None:
            raise ValueError(f"Layer '{self.name}': the channel axis of the input must be known. "
                             f"Received input_shape={tuple(input_shape)}")
        self.input_spec = InputSpec(ndim=self.rank + 2, axes={self._channel_axis: c})
        return c

    def _out_channels(self, c):
        raise NotImplementedError

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        spatial = shape[1:-1] if self.data_format == "channels_last" else shape[2:]
        out = tuple(ops.conv_output_length(n, self.kernel_size[a], self.padding, self.strides[a],
                                           self.dilation_rate[a]) for a, n in enumerate(spatial))
        if any(n is not None and n <= 0 for n in out):
            raise ValueError(f"Layer '{self.name}': the input {shape} is too small for kernel_size "
                             f"{self.kernel_size} with dilation_rate {self.dilation_rate}.")
        c = self._out_channels(shape[self._channel_axis])
        return (shape[0],) + out + (c,) if self.data_format == "channels_last" else (shape[0], c) + out

    def call(self, inputs):
        y = self._conv_bias(to_channels_last(inputs, self.data_format))
        y = y if self.activation is None else self.activation(y)  # None once set by hand, as Keras
        return to_channels_first(y, self.data_format)

    def _conv_bias(self, x):
        return _bias(self._conv(x), self.bias)


class _DepthwiseConv(_BaseDepthwise):
    """Each input channel convolved with its own depth_multiplier filters: C -> C * depth_multiplier channels,
    output channel c * M + m. Weights: kernel (*k, C, M), bias (C * M,)."""

    def __init__(self, rank, kernel_size, strides, padding, depth_multiplier, data_format, dilation_rate,
                 activation, use_bias, depthwise_initializer, bias_initializer, depthwise_regularizer,
                 bias_regularizer, activity_regularizer, depthwise_constraint, bias_constraint, **kwargs):
        super().__init__(**kwargs)
        self._init_common(rank, kernel_size, strides, padding, data_format, dilation_rate, depth_multiplier,
                          activation, use_bias, bias_initializer, bias_regularizer, bias_constraint,
                          activity_regularizer)
        self.depthwise_initializer = initializers.get(depthwise_initializer)
        self.depthwise_regularizer = regularizers.get(depthwise_regularizer)
        self.depthwise_constraint = constraints.get(depthwise_constraint)

    def _out_channels(self, c):
        return None if c is None else c * self.depth_multiplier

    def build(self, input_shape):
        c = self._in_channels(input_shape)
        self.kernel = self.add_weight(shape=self.kernel_size + (c, self.depth_multiplier), name="kernel",
                                      initializer=self.depthwise_initializer,
                                      regularizer=self.depthwise_regularizer,
                                      constraint=self.depthwise_constraint)
        self.bias = self.add_weight(shape=(c * self.depth_multiplier,), name="bias",
                                    initializer=self.bias_initializer, regularizer=self.bias_regularizer,
                                    constraint=self.bias_constraint) if self.use_bias else None
        self.built = True

    def _conv(self, x):
        return ops.depthwise_conv(x, self.kernel, self.strides, self.padding, "channels_last", self.dilation_rate)

    def _conv_bias(self, x):   # the bias inside the op (ops.nn.depthwise_conv_bias)
        return ops.nn.depthwise_conv_bias(x, self.kernel, self.bias, self.strides, self.padding, self.dilation_rate)


class DepthwiseConv1D(_DepthwiseConv):
    """Depthwise 1-D convolution: (N, L, C) -> (N, OL, C * depth_multiplier). Weights: kernel (k, C, M), bias."""

    def __init__(self, kernel_size, strides=1, padding="valid", depth_multiplier=1, data_format=None,
                 dilation_rate=1, activation=None, use_bias=True, depthwise_initializer="glorot_uniform",
                 bias_initializer="zeros", depthwise_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, depthwise_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(1, kernel_size, strides, padding, depth_multiplier, data_format, dilation_rate,
                         activation, use_bias, depthwise_initializer, bias_initializer, depthwise_regularizer,
                         bias_regularizer, activity_regularizer, depthwise_constraint, bias_constraint, **kwargs)


class DepthwiseConv2D(_DepthwiseConv):
    """Depthwise 2-D convolution (MobileNet's spatial filter): (N, H, W, C) -> (N, OH, OW, C * depth_multiplier).

    Weights: kernel (kh, kw, C, M), bias (C * M,)."""

    def __init__(self, kernel_size, strides=(1, 1), padding="valid", depth_multiplier=1, data_format=None,
                 dilation_rate=(1, 1), activation=None, use_bias=True, depthwise_initializer="glorot_uniform",
                 bias_initializer="zeros", depthwise_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, depthwise_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(2, kernel_size, strides, padding, depth_multiplier, data_format, dilation_rate,
                         activation, use_bias, depthwise_initializer, bias_initializer, depthwise_regularizer,
                         bias_regularizer, activity_regularizer, depthwise_constraint, bias_constraint, **kwargs)


class _SeparableConv(_BaseDepthwise):
    """A depthwise convolution (depthwise_kernel (*k, C, M)) then a pointwise 1x1 convolution
    (pointwise_kernel (1..., C * M, filters)) and the bias (filters,)."""

    def __init__(self, rank, filters, kernel_size, strides, padding, data_format, dilation_rate, depth_multiplier,
                 activation, use_bias, depthwise_initializer, pointwise_initializer, bias_initializer,
                 depthwise_regularizer, pointwise_regularizer, bias_regularizer, activity_regularizer,
                 depthwise_constraint, pointwise_constraint, bias_constraint, **kwargs):
        super().__init__(**kwargs)
        self._init_common(rank, kernel_size, strides, padding, data_format, dilation_rate, depth_multiplier,
                          activation, use_bias, bias_initializer, bias_regularizer, bias_constraint,
                          activity_regularizer)
        if not isinstance(filters, (int, np.integer)) or isinstance(filters, bool) or filters <= 0:
            raise ValueError(f"Layer '{self.name}': filters must be a positive int. Received: filters={filters!r}")
        self.filters = int(filters)
        self.depthwise_initializer = initializers.get(depthwise_initializer)
        self.pointwise_initializer = initializers.get(pointwise_initializer)
        self.depthwise_regularizer = regularizers.get(depthwise_regularizer)
        self.pointwise_regularizer = regularizers.get(pointwise_regularizer)
        self.depthwise_constraint = constraints.get(depthwise_constraint)
        self.pointwise_constraint = constraints.get(pointwise_constraint)

    def _out_channels(self, c):
        return self.filters

    def build(self, input_shape):
        c = self._in_channels(input_shape)
        m = self.depth_multiplier
        self.depthwise_kernel = self.add_weight(shape=self.kernel_size + (c, m), name="depthwise_kernel",
                                                initializer=self.depthwise_initializer,
                                                regularizer=self.depthwise_regularizer,
                                                constraint=self.depthwise_constraint)
        self.pointwise_kernel = self.add_weight(shape=(1,) * self.rank + (c * m, self.filters),
                                                name="pointwise_kernel", initializer=self.pointwise_initializer,
                                                regularizer=self.pointwise_regularizer,
                                                constraint=self.pointwise_constraint)
        self.bias = self.add_weight(shape=(self.filters,), name="bias", initializer=self.bias_initializer,
                                    regularizer=self.bias_regularizer,
                                    constraint=self.bias_constraint) if self.use_bias else None
        self.built = True

    def _conv(self, x):
        return ops.separable_conv(x, self.depthwise_kernel, self.pointwise_kernel, self.strides, self.padding,
                                  "channels_last", self.dilation_rate)


class SeparableConv1D(_SeparableConv):
    """Depthwise then pointwise 1-D convolution: (N, L, C) -> (N, OL, filters)."""

    def __init__(self, filters, kernel_size, strides=1, padding="valid", data_format=None, dilation_rate=1,
                 depth_multiplier=1, activation=None, use_bias=True, depthwise_initializer="glorot_uniform",
                 pointwise_initializer="glorot_uniform", bias_initializer="zeros", depthwise_regularizer=None,
                 pointwise_regularizer=None, bias_regularizer=None, activity_regularizer=None,
                 depthwise_constraint=None, pointwise_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(1, filters, kernel_size, strides, padding, data_format, dilation_rate, depth_multiplier,
                         activation, use_bias, depthwise_initializer, pointwise_initializer, bias_initializer,
                         depthwise_regularizer, pointwise_regularizer, bias_regularizer, activity_regularizer,
                         depthwise_constraint, pointwise_constraint, bias_constraint, **kwargs)


class SeparableConv2D(_SeparableConv):
    """Depthwise then pointwise 2-D convolution (Xception's block): (N, H, W, C) -> (N, OH, OW, filters)."""

    def __init__(self, filters, kernel_size, strides=(1, 1), padding="valid", data_format=None,
                 dilation_rate=(1, 1), depth_multiplier=1, activation=None, use_bias=True,
                 depthwise_initializer="glorot_uniform", pointwise_initializer="glorot_uniform",
                 bias_initializer="zeros", depthwise_regularizer=None, pointwise_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, depthwise_constraint=None,
                 pointwise_constraint=None, bias_constraint=None, **kwargs):
        super().__init__(2, filters, kernel_size, strides, padding, data_format, dilation_rate, depth_multiplier,
                         activation, use_bias, depthwise_initializer, pointwise_initializer, bias_initializer,
                         depthwise_regularizer, pointwise_regularizer, bias_regularizer, activity_regularizer,
                         depthwise_constraint, pointwise_constraint, bias_constraint, **kwargs)


SeparableConvolution1D, SeparableConvolution2D = SeparableConv1D, SeparableConv2D


# ----------------------------------------------------------------------------- 3-D pooling
class _Pooling3D(BasePooling):
    def call(self, inputs):
        fn = ops.max_pool if self.mode == "max" else ops.average_pool
        return fn(inputs, self.pool_size, self.strides, self.padding, self.data_format)


class MaxPooling3D(_Pooling3D):
    """Max over (pd, ph, pw) windows: (N, D, H, W, C) -> (N, OD, OH, OW, C); no parameters."""

    def __init__(self, pool_size=(2, 2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(3, "max", pool_size, strides, padding, data_format, **kwargs)


class AveragePooling3D(_Pooling3D):
    """Mean over (pd, ph, pw) windows (of the real entries under 'same'): (N, D, H, W, C) -> (N, OD, OH, OW, C)."""

    _cast_integer_inputs = True  # bool/int inputs compute in the layer's float dtype (a mean is no integer)

    def __init__(self, pool_size=(2, 2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(3, "avg", pool_size, strides, padding, data_format, **kwargs)


class GlobalMaxPooling3D(BaseGlobalPooling):
    """Max of each channel over the volume: (N, D, H, W, C) -> (N, C) (keepdims: (N, 1, 1, 1, C))."""

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(3, "max", data_format, keepdims, **kwargs)


class GlobalAveragePooling3D(BaseGlobalPooling):
    """Mean of each channel over the volume: (N, D, H, W, C) -> (N, C) (keepdims: (N, 1, 1, 1, C))."""

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(3, "avg", data_format, keepdims, **kwargs)


MaxPool3D, AvgPool3D = MaxPooling3D, AveragePooling3D
GlobalMaxPool3D, GlobalAvgPool3D = GlobalMaxPooling3D, GlobalAveragePooling3D


class _AdaptivePooling(Layer):
    """Pools each spatial axis to output_size with torch's adaptive windows (Keras 3.15's definition)."""

    rank, mode = 1, "avg"

    def __init__(self, output_size, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.output_size = standardize_tuple(output_size, self.rank, "output_size", self.name)
        self.data_format = standardize_data_format(data_format, self.name)
        self.input_spec = InputSpec(ndim=self.rank + 2)

    def call(self, inputs):
        fn = ops.adaptive_average_pool if self.mode == "avg" else ops.adaptive_max_pool
        return fn(inputs, self.output_size, self.data_format)

    def compute_output_shape(self, input_shape):
        s = tuple(input_shape)
        if self.data_format == "channels_last":
            return (s[0],) + self.output_size + (s[-1],)
        return (s[0], s[1]) + self.output_size


def _adaptive(name, rank, mode):
    doc = (f"Adaptive {'average' if mode == 'avg' else 'max'} pooling of {rank}-D inputs to a fixed "
           f"output_size per spatial axis (windows [floor(i L / o), ceil((i + 1) L / o))); no parameters.")
    cls = type(name, (_AdaptivePooling,), {"rank": rank, "mode": mode, "__doc__": doc, "__module__": __name__})
    return cls


AdaptiveAveragePooling1D = _adaptive("AdaptiveAveragePooling1D", 1, "avg")
AdaptiveAveragePooling2D = _adaptive("AdaptiveAveragePooling2D", 2, "avg")
AdaptiveAveragePooling3D = _adaptive("AdaptiveAveragePooling3D", 3, "avg")
AdaptiveMaxPooling1D = _adaptive("AdaptiveMaxPooling1D", 1, "max")
AdaptiveMaxPooling2D = _adaptive("AdaptiveMaxPooling2D", 2, "max")
AdaptiveMaxPooling3D = _adaptive("AdaptiveMaxPooling3D", 3, "max")


# ----------------------------------------------------------------------------- 3-D resampling
def _spatial_axes(data_format):
    return (1, 2, 3) if data_format == "channels_last" else (2, 3, 4)


class UpSampling3D(Layer):
    """Repeats each voxel size[a] times along spatial axis a: (N, D, H, W, C) -> (N, D*s0, H*s1, W*s2, C)."""

    def __init__(self, size=(2, 2, 2), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.size = standardize_tuple(size, 3, "size", self.name)
        self.data_format = standardize_data_format(data_format, self.name)
        self.input_spec = InputSpec(ndim=5)

    def call(self, inputs):
        y = inputs
        for axis, s in zip(_spatial_axes(self.data_format), self.size):
            if s > 1:
                y = ops.repeat(y, s, axis=axis)
        return y

    def compute_output_shape(self, input_shape):
        n = list(input_shape)
        for axis, s in zip(_spatial_axes(self.data_format), self.size):
            n[axis] = None if n[axis] is None else n[axis] * s
        return tuple(n)


class ZeroPadding3D(Layer):
    """Adds zeros around volumes: padding int, (d, h, w) or ((d0, d1), (h0, h1), (w0, w1)). No parameters."""

    def __init__(self, padding=((1, 1), (1, 1), (1, 1)), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.padding = _pairs(padding, 3, "padding", f"Layer '{self.name}'")
        self.data_format = standardize_data_format(data_format, self.name)
        self.input_spec = InputSpec(ndim=5)

    def _widths(self):
        pads = [(0, 0)] * 5
        for axis, p in zip(_spatial_axes(self.data_format), self.padding):
            pads[axis] = tuple(p)
        return pads

    def call(self, inputs):
        return ops.pad(inputs, self._widths())

    def compute_output_shape(self, input_shape):
        return tuple(None if n is None else n + sum(p) for n, p in zip(input_shape, self._widths()))


class Cropping3D(Layer):
    """Cuts voxels off the borders: cropping int, (d, h, w) or ((d0, d1), (h0, h1), (w0, w1)). No parameters."""

    def __init__(self, cropping=((1, 1), (1, 1), (1, 1)), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.cropping = _pairs(cropping, 3, "cropping", f"Layer '{self.name}'")
        self.data_format = standardize_data_format(data_format, self.name)
        self.input_spec = InputSpec(ndim=5)

    def call(self, inputs):
        self.compute_output_shape(tuple(inputs.shape))   # (a cropping that leaves nothing: the error, not (N, 0, ...))
        index = [slice(None)] * 5
        for axis, (a, b) in zip(_spatial_axes(self.data_format), self.cropping):
            index[axis] = slice(a, inputs.shape[axis] - b)
        return inputs[tuple(index)]

    def compute_output_shape(self, input_shape):
        n = list(input_shape)
        for axis, c in zip(_spatial_axes(self.data_format), self.cropping):
            if n[axis] is not None:
                n[axis] -= sum(c)
                if n[axis] <= 0:
                    raise ValueError(f"Layer '{self.name}': cropping {self.cropping} leaves nothing of the "
                                     f"input of shape {tuple(input_shape)}.")
        return tuple(n)


# ----------------------------------------------------------------------------- normalisation
class RMSNormalization(Layer):
    """y = x / sqrt(mean(x^2 over axis) + epsilon) * scale (Keras 3.15: scale of the normalised axes' shape,
    initialised to ones; epsilon default 1e-6)."""

    _cast_integer_inputs = True  # bool/int inputs compute in the layer's float dtype, as LayerNormalization

    def __init__(self, axis=-1, epsilon=1e-6, **kwargs):
        super().__init__(**kwargs)
        self.axis = axis
        self.epsilon = float(epsilon)
        self.supports_masking = True

    def _axes(self, ndim):
        axes = self.axis if isinstance(self.axis, (list, tuple)) else [self.axis]
        for a in axes:
            if not -ndim <= int(a) < ndim:
                raise ValueError(f"RMSNormalization '{self.name}': axis {a} is out of range for an input of rank "
                                 f"{ndim}.")
        return tuple(sorted(int(a) % ndim for a in axes))

    def build(self, input_shape):
        axes = self._axes(len(input_shape))
        shape = tuple(input_shape[a] for a in axes)
        self.scale = self.add_weight(shape=shape, initializer="ones", name="scale")
        raw = self.axis if isinstance(self.axis, (list, tuple)) else [self.axis]
        self.input_spec = InputSpec(axes={int(a): input_shape[int(a)] for a in raw})   # the scale's axes
        self.built = True

    def call(self, x):
        axes = self._axes(x.ndim)
        scale = _like(self.scale, x)
        if len(axes) > 1 or axes[0] != x.ndim - 1:
            scale = ops.reshape(scale, tuple(x.shape[a] if a in axes else 1 for a in range(x.ndim)))
        ms = ops.mean(ops.square(x), axis=axes, keepdims=True)
        return x / ops.sqrt(ms + self.epsilon) * scale

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


class UnitNormalization(Layer):
    """Scales each sample to unit L2 norm over axis (Keras's ops.normalize: x / max(||x||, epsilon)). No parameters."""

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.axis = list(axis) if isinstance(axis, (list, tuple)) else axis
        self.supports_masking = True

    def call(self, x):
        axis = tuple(self.axis) if isinstance(self.axis, list) else self.axis
        return ops.normalize(x, axis=axis, order=2)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


# ----------------------------------------------------------------------------- EinsumDense
def _einsum_shapes(equation, bias_axes, input_shape, output_shape, name):
    """(kernel shape, bias shape or None, full output shape) from Keras's EinsumDense rules."""
    dot = r"[a-zA-Z]"
    m = re.match("^([a-zA-Z]+),([a-zA-Z]+)->([a-zA-Z]+)$", equation)
    left = False
    if m is None:
        m = re.match(r"^\.\.\.([a-zA-Z]+),([a-zA-Z]+)->\.\.\.([a-zA-Z]+)$", equation)
        left = m is not None
    if m is None:
        m = re.match(r"^([a-zA-Z]+)\.\.\.,([a-zA-Z]+)->([a-zA-Z]+)\.\.\.$", equation)
    if m is None:
        raise ValueError(f"Layer '{name}': invalid einsum equation {equation!r}. Equations must be of the form "
                         f"'ab,bc->ac', '...ab,bc->...ac' or 'ab...,bc->ac...' ({dot}: one letter per axis).")
    in_spec, w_spec, out_spec = m.groups()
    input_shape = list(input_shape)
    out = list(output_shape) if isinstance(output_shape, (list, tuple)) else [output_shape]
    elided = len(input_shape) - len(in_spec)
    if elided < 0 or (elided > 0 and "..." not in equation):
        raise ValueError(f"Layer '{name}': the equation {equation!r} expects an input of rank "
                         f"{'at least ' if '...' in equation else ''}{len(in_spec)}. "
                         f"Received input_shape={tuple(input_shape)}")
    if elided > 0 and left:
        out = input_shape[:elided] + out
    else:
        out.insert(0, input_shape[0])
    if elided > 0 and not left:
        for i in range(len(input_shape) - elided, len(input_shape)):
            out.append(input_shape[i])
    shift = elided if left else 0
    in_map = {c: i + shift for i, c in enumerate(in_spec)}
    out_map = {c: i + shift for i, c in enumerate(out_spec)}
    for c in in_spec:
        if c in out_map:
            n, o = input_shape[in_map[c]], out[out_map[c]]
            if o is None:
                out[out_map[c]] = n
            elif n is not None and n != o:
                raise ValueError(f"Layer '{name}': input axis '{c}' has size {n} but output_shape gives {o}.")
    for c in out_spec:
        if c not in in_map and c not in w_spec:
            raise ValueError(f"Layer '{name}': output axis '{c}' of {equation!r} is in neither the input nor "
                             f"the weight.")
    kernel = []
    for c in w_spec:
        if c in in_map:
            kernel.append(input_shape[in_map[c]])
        elif c in out_map:
            kernel.append(out[out_map[c]])
        else:
            raise ValueError(f"Layer '{name}': weight axis '{c}' of {equation!r} is in neither the input nor "
                             f"the output.")
    bias = None
    if bias_axes:
        for c in bias_axes:
            if c not in out_spec:
                raise ValueError(f"Layer '{name}': bias axis '{c}' is not an output axis of {equation!r}.")
        first = min(out_spec.find(c) for c in bias_axes)
        bias = [out[out_map[c]] if c in bias_axes else 1 for c in out_spec[first:]]
        if not left:
            bias += [1] * elided
    return tuple(kernel), None if bias is None else tuple(bias), tuple(out)


def _einsum_input_spec(equation, input_shape):
    """The input's rank and the sizes of its axes that the kernel was built for (a later input that differs
    gets the InputSpec error naming the layer, not NumPy's einsum message)."""
    in_spec, w_spec = equation.split("->")[0].split(",")
    left, ellipsis = in_spec.startswith("..."), "..." in in_spec
    in_spec = in_spec.replace("...", "")
    n = len(in_spec)
    axes = {(i - n if left else i): input_shape[i - n if left else i] for i, c in enumerate(in_spec) if c in w_spec}
    return InputSpec(ndim=None if ellipsis else n, min_ndim=n if ellipsis else None, axes=axes)


class EinsumDense(LoraKernel, Layer):
    """A Dense layer for any einsum: y = activation(einsum(equation, x, kernel) + bias).

    output_shape: the output's shape without the batch axis (None entries are taken from the input);
    bias_axes: the output letters the bias runs along. Weights (Keras's names): kernel, bias.
    lora_rank, lora_alpha: freeze the kernel (..., k, n) and train ``(lora_alpha / rank) * A @ B`` instead,
    A (..., k, rank), B (rank, n) from zero, as Keras's ``enable_lora``; a .keras file holds the merged kernel.
    """

    _cast_integer_inputs = True  # bool/int inputs compute in the layer's float dtype, as Dense

    def __init__(self, equation, output_shape, activation=None, bias_axes=None, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None, kernel_constraint=None,
                 bias_constraint=None, lora_rank=None, lora_alpha=None, quantization_config=None, **kwargs):
        super().__init__(**kwargs)
        _check_quantization_config(self, quantization_config)
        _check_lora_rank(self, lora_rank)
        self.equation = equation
        self.partial_output_shape = (tuple(output_shape) if isinstance(output_shape, (list, tuple))
                                     else (output_shape,))
        self.bias_axes = bias_axes
        self.activation = activations.get(activation)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.kernel_constraint = constraints.get(kernel_constraint)
        self.bias_constraint = constraints.get(bias_constraint)
        self.lora_rank, self.lora_alpha = lora_rank, lora_alpha
        self.lora_enabled = False

    def build(self, input_shape):
        k, b, out = _einsum_shapes(self.equation, self.bias_axes, input_shape, self.partial_output_shape, self.name)
        self.full_output_shape = out
        self.input_spec = _einsum_input_spec(self.equation, input_shape)
        self.kernel = self.add_weight(shape=k, name="kernel", initializer=self.kernel_initializer,
                                      regularizer=self.kernel_regularizer, constraint=self.kernel_constraint)
        self.bias = None if b is None else self.add_weight(shape=b, name="bias", initializer=self.bias_initializer,
                                                           regularizer=self.bias_regularizer,
                                                           constraint=self.bias_constraint)
        self.built = True
        if self.lora_rank:
            self.enable_lora(self.lora_rank, self.lora_alpha)

    def call(self, inputs):
        y = _bias(ops.einsum(self.equation, inputs, _like(self.effective_kernel(), inputs)), self.bias)
        return y if self.activation is None else self.activation(y)  # None once set by hand, as Keras

    def compute_output_shape(self, input_shape):
        return _einsum_shapes(self.equation, self.bias_axes, input_shape, self.partial_output_shape, self.name)[2]

    def get_config(self):
        config = super().get_config()
        config["output_shape"] = self.partial_output_shape   # (a tuple, as Keras writes it)
        config.setdefault("activity_regularizer", None)      # (Keras's EinsumDense writes it always)
        return config


# ----------------------------------------------------------------------------- small ones
class Identity(Layer):
    """Returns its input unchanged (a placeholder in models built by code). No parameters."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


class AlphaDropout(Layer):
    """Dropout that keeps SELU's self-normalising mean and variance (Keras's formula).

    Training: each unit is kept with probability 1 - rate, else set to alpha' = -alpha * scale of SELU; then
    y = a * x' + b with a = ((1 - rate) (1 + rate alpha'^2))^-1/2, b = -a alpha' rate. Inference: y = x.
    """

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(rate, (int, float, np.floating, np.integer)) or not 0 <= rate <= 1:
            raise ValueError(f"Layer '{self.name}': rate must be a float in [0, 1]. Received: rate={rate!r}")
        self.rate = float(rate)
        self.noise_shape = None if noise_shape is None else tuple(noise_shape)
        self.seed = seed
        self._rng = None if seed is None else np.random.default_rng(int(seed))
        self.supports_masking = True

    def call(self, inputs, training=None):
        if not training or self.rate <= 0:
            return inputs
        inputs = self._cast_integers(inputs)  # a * x + b of bool/int values is float, as Keras
        shape = tuple(inputs.shape) if self.noise_shape is None else tuple(
            n if k is None else k for n, k in zip(inputs.shape, self.noise_shape))
        gen = self._rng or backend.rng()
        xp = backend.get_array_module(inputs.data)
        kept = backend.to_device(gen.random(shape) >= self.rate, xp)
        alpha_p = -_SELU_ALPHA * _SELU_SCALE
        a = ((1 - self.rate) * (1 + self.rate * alpha_p ** 2)) ** -0.5
        b = -a * alpha_p * self.rate
        y = ops.where(Tensor(xp.broadcast_to(kept, inputs.shape)), inputs, alpha_p)
        return ops.cast(y * a + b, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)
