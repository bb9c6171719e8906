"""Pooling layers: max and average pooling (1-D, 2-D) and their global forms.

Pooling shrinks a feature map by summarising each small window with one number: its maximum (the
strongest response of a feature there: small shifts of the image change little) or its mean. It has
no weights. Global pooling summarises each whole channel with one number, turning a feature map into
a vector (a light alternative to Flatten before the classifier). The math lives in ``lamina.ops.convolution``.
"""
from .. import ops
from ..tensor import Tensor
from .convolutional import (standardize_data_format, standardize_padding, standardize_tuple, to_channels_first,
                            to_channels_last)
from .layer import InputSpec, Layer


class BasePooling(Layer):
    """Shared arguments and shapes of the windowed pooling layers."""

    def __init__(self, rank, mode, pool_size, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.rank, self.mode = rank, mode
        self.pool_size = standardize_tuple(pool_size, rank, "pool_size", self.name)
        self.strides = self.pool_size if strides is None else standardize_tuple(strides, rank, "strides", self.name)
        self.padding = standardize_padding(padding, self.name)
        self.data_format = standardize_data_format(data_format, self.name)
        self.input_spec = InputSpec(ndim=rank + 2)

    def call(self, inputs):
        x = to_channels_last(inputs, self.data_format)
        if self.rank == 1:
            fn = ops.max_pool1d if self.mode == "max" else ops.avg_pool1d
        else:
            fn = ops.max_pool2d if self.mode == "max" else ops.avg_pool2d
        return to_channels_first(fn(x, self.pool_size, self.strides, self.padding), self.data_format)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        spatial = shape[1:-1] if self.data_format == "channels_last" else shape[2:]
        out = tuple(ops.conv_output_length(n, self.pool_size[a], self.padding, self.strides[a])
                    for a, n in enumerate(spatial))
        if any(n is not None and n <= 0 for n in out):
            raise ValueError(f"Layer '{self.name}': the input {shape} is smaller than pool_size {self.pool_size}.")
        if self.data_format == "channels_last":
            return (shape[0],) + out + (shape[-1],)
        return (shape[0], shape[1]) + out


class MaxPooling1D(BasePooling):
    """Max over windows of ``pool_size`` steps: (N, L, C) -> (N, OL, C); no parameters.
    OL = floor((L - pool) / strides) + 1 ('valid') or ceil(L / strides) ('same'); strides default to pool_size."""

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(1, "max", pool_size, strides, padding, data_format, **kwargs)


class MaxPooling2D(BasePooling):
    """Max over (ph, pw) windows: (N, H, W, C) -> (N, OH, OW, C); no parameters.
    y[n,p,q,c] = max_{i<ph, j<pw} x[n, p*sh + i, q*sw + j, c]. OH = floor((H - ph) / sh) + 1 ('valid')
    or ceil(H / sh) ('same'); strides default to pool_size."""

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(2, "max", pool_size, strides, padding, data_format, **kwargs)


class AveragePooling1D(BasePooling):
    """Mean over windows of ``pool_size`` steps: (N, L, C) -> (N, OL, C); no parameters.
    With 'same' padding, border windows average their real elements only."""

    _cast_integer_inputs = True  # bool/int inputs compute in the layer's float dtype (a mean is no integer)

    def __init__(self, pool_size=2, strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(1, "avg", pool_size, strides, padding, data_format, **kwargs)


class AveragePooling2D(BasePooling):
    """Mean over (ph, pw) windows: (N, H, W, C) -> (N, OH, OW, C); no parameters.
    With 'same' padding, border windows average their real elements only (as Keras)."""

    _cast_integer_inputs = True  # bool/int inputs compute in the layer's float dtype (a mean is no integer)

    def __init__(self, pool_size=(2, 2), strides=None, padding="valid", data_format=None, **kwargs):
        super().__init__(2, "avg", pool_size, strides, padding, data_format, **kwargs)


class BaseGlobalPooling(Layer):
    """Mean or max over every spatial axis."""

    def __init__(self, rank, mode, data_format=None, keepdims=False, **kwargs):
        super().__init__(**kwargs)
        self.rank, self.mode = rank, mode
        self.data_format = standardize_data_format(data_format, self.name)
        self.keepdims = bool(keepdims)
        self.input_spec = InputSpec(ndim=rank + 2)

    def _axes(self):
        first = 1 if self.data_format == "channels_last" else 2
        return tuple(range(first, first + self.rank))

    def call(self, inputs):
        fn = ops.mean if self.mode == "avg" else ops.max
        return fn(inputs, axis=self._axes(), keepdims=self.keepdims)

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        axes = self._axes()
        if self.keepdims:
            return tuple(1 if i in axes else n for i, n in enumerate(shape))
        return tuple(n for i, n in enumerate(shape) if i not in axes)


class GlobalAveragePooling1D(BaseGlobalPooling):
    """Mean over the steps: (N, L, C) -> (N, C) (keepdims: (N, 1, C)); no parameters.
    With a mask (N, L), masked steps are left out of the mean: sum(x * m) / sum(m)."""

    _cast_integer_inputs = True  # bool/int inputs compute in the layer's float dtype, as Keras

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(1, "avg", data_format, keepdims, **kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            return super().call(inputs)
        steps = 1 if self.data_format == "channels_last" else 2
        m = ops.cast(mask if isinstance(mask, Tensor) else Tensor(mask), inputs.dtype)
        m = ops.expand_dims(m, 2 if self.data_format == "channels_last" else 1)
        return (ops.sum(inputs * m, axis=steps, keepdims=self.keepdims)
                / ops.sum(m, axis=steps, keepdims=self.keepdims))

    def compute_mask(self, inputs, mask=None):
        return None


class GlobalAveragePooling2D(BaseGlobalPooling):
    """Mean of each channel over the image: (N, H, W, C) -> (N, C) (keepdims: (N, 1, 1, C)); no parameters."""

    _cast_integer_inputs = True  # bool/int inputs compute in the layer's float dtype, as Keras

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(2, "avg", data_format, keepdims, **kwargs)


class GlobalMaxPooling1D(BaseGlobalPooling):
    """Max over the steps: (N, L, C) -> (N, C) (keepdims: (N, 1, C)); no parameters."""

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(1, "max", data_format, keepdims, **kwargs)


class GlobalMaxPooling2D(BaseGlobalPooling):
    """Max of each channel over the image: (N, H, W, C) -> (N, C) (keepdims: (N, 1, 1, C)); no parameters."""

    def __init__(self, data_format=None, keepdims=False, **kwargs):
        super().__init__(2, "max", data_format, keepdims, **kwargs)


MaxPool1D, MaxPool2D, AvgPool1D, AvgPool2D = MaxPooling1D, MaxPooling2D, AveragePooling1D, AveragePooling2D
GlobalAvgPool1D, GlobalAvgPool2D = GlobalAveragePooling1D, GlobalAveragePooling2D
GlobalMaxPool1D, GlobalMaxPool2D = GlobalMaxPooling1D, GlobalMaxPooling2D

__all__ = ["MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D", "GlobalAveragePooling1D",
           "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "MaxPool1D", "MaxPool2D",
           "AvgPool1D", "AvgPool2D", "GlobalAvgPool1D", "GlobalAvgPool2D", "GlobalMaxPool1D", "GlobalMaxPool2D"]
