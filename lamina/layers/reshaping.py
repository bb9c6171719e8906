"""Reshaping layers: Flatten, Reshape, Permute, RepeatVector, UpSampling1D/2D, ZeroPadding1D/2D,
Cropping1D/2D.

None of them has weights: they move, repeat, add or cut values so that the next layer gets the
shape it expects (Flatten between the convolutional part of a CNN and its Dense classifier,
UpSampling and ZeroPadding in decoders and U-Nets, Cropping to match skip connections).
"""
import numpy as np

from .. import ops
from ..ops.convolution import _pairs
from .convolutional import standardize_data_format, standardize_tuple, to_channels_first, to_channels_last
from .layer import InputSpec, Layer


def _prod(dims):
    return None if any(d is None for d in dims) else int(np.prod(dims, dtype=np.int64))


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1*d2*...), the batch axis kept. No parameters.
    With data_format='channels_first' the channels are moved last first, so the order of the
    features is the same as for channels-last data."""

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = standardize_data_format(data_format, self.name)
        self.input_spec = InputSpec(min_ndim=1)

    def call(self, inputs):
        if self.data_format == "channels_first" and inputs.ndim > 2:
            inputs = to_channels_last(inputs, "channels_first")
        return ops.reshape(inputs, (inputs.shape[0], _prod(inputs.shape[1:])))   # not -1: a batch of 0 samples

    def compute_output_shape(self, input_shape):
        return (input_shape[0], _prod(input_shape[1:]))


class Reshape(Layer):
    """(N, ...) -> (N, *target_shape); one entry of target_shape may be -1 (inferred). No parameters."""

    def __init__(self, target_shape, **kwargs):
        super().__init__(**kwargs)
        try:
            self.target_shape = tuple(int(d) for d in target_shape)
        except TypeError:
            raise ValueError(f"Layer '{self.name}': target_shape must be a tuple of ints. "
                             f"Received: target_shape={target_shape!r}") from None
        if sum(d == -1 for d in self.target_shape) > 1 or any(d < -1 or d == 0 for d in self.target_shape):
            raise ValueError(f"Layer '{self.name}': target_shape must hold positive sizes and at most one -1. "
                             f"Received: target_shape={target_shape!r}")
        self.input_spec = InputSpec(min_ndim=1)   # (the batch axis is kept)

    def _resolve(self, input_shape):
        size = _prod(input_shape[1:])
        known = _prod([d for d in self.target_shape if d != -1])
        if -1 not in self.target_shape:
            if size is not None and size != known:
                raise ValueError(f"Layer '{self.name}': cannot reshape an input of shape {tuple(input_shape)} "
                                 f"({size} values per sample) to {self.target_shape} ({known} values).")
            return self.target_shape
        if size is None:
            return tuple(None if d == -1 else d for d in self.target_shape)
        if size % known:
            raise ValueError(f"Layer '{self.name}': cannot reshape an input of shape {tuple(input_shape)} "
                             f"({size} values per sample) to {self.target_shape}.")
        return tuple(size // known if d == -1 else d for d in self.target_shape)

    def call(self, inputs):
        return ops.reshape(inputs, (inputs.shape[0],) + self._resolve(inputs.shape))

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + self._resolve(tuple(input_shape))


class Permute(Layer):
    """Reorders the non-batch axes: dims is a permutation of 1..rank-1 (1-indexed, as Keras).
    Permute((2, 1)) turns (N, a, b) into (N, b, a). No parameters."""

    def __init__(self, dims, **kwargs):
        super().__init__(**kwargs)
        self.dims = tuple(int(d) for d in dims)
        if sorted(self.dims) != list(range(1, len(self.dims) + 1)):
            raise ValueError(f"Layer '{self.name}': dims must be a permutation of 1..{len(self.dims)} "
                             f"(the batch axis 0 is never moved). Received: dims={dims!r}")
        self.input_spec = InputSpec(ndim=len(self.dims) + 1)

    def call(self, inputs):
        return ops.transpose(inputs, (0,) + self.dims)

    def compute_output_shape(self, input_shape):
        return (input_shape[0],) + tuple(input_shape[d] for d in self.dims)


class RepeatVector(Layer):
    """(N, F) -> (N, n, F): the vector repeated n times (e.g. an encoder state fed to every decoder
    step). No parameters. Backward: the n gradients summed."""

    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n <= 0:
            raise ValueError(f"Layer '{self.name}': n must be a positive int. Received: n={n!r}")
        self.n = int(n)
        self.input_spec = InputSpec(ndim=2)

    def call(self, inputs):
        return ops.repeat(ops.expand_dims(inputs, 1), self.n, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n, input_shape[1])


def _mul(n, k):
    return None if n is None else n * k


class UpSampling1D(Layer):
    """Repeats each step ``size`` times: (N, L, C) -> (N, L*size, C). No parameters."""

    def __init__(self, size=2, **kwargs):
        super().__init__(**kwargs)
        self.size = standardize_tuple(size, 1, "size", self.name)[0]
        self.input_spec = InputSpec(ndim=3)

    def call(self, inputs):
        return ops.upsampling1d(inputs, self.size)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], _mul(input_shape[1], self.size), input_shape[2])


class UpSampling2D(Layer):
    """Enlarges images by integer factors: (N, H, W, C) -> (N, H*sh, W*sw, C). No parameters.
    interpolation 'nearest' repeats pixels; 'bilinear' interpolates linearly between pixel centres
    (half-pixel centres, edges clamped: Keras 3 / TF's resize, PyTorch's align_corners=False)."""

    def __init__(self, size=(2, 2), data_format=None, interpolation="nearest", **kwargs):
        super().__init__(**kwargs)
        self.size = standardize_tuple(size, 2, "size", self.name)
        self.data_format = standardize_data_format(data_format, self.name)
        if interpolation not in ("nearest", "bilinear"):
            raise ValueError(f"Layer '{self.name}': unknown interpolation {interpolation!r}. "
                             "Valid values: 'nearest', 'bilinear'.")
        self.interpolation = interpolation
        self.input_spec = InputSpec(ndim=4)

    def call(self, inputs):
        y = ops.upsampling2d(to_channels_last(inputs, self.data_format), self.size, self.interpolation)
        return to_channels_first(y, self.data_format)

    def compute_output_shape(self, input_shape):
        n = tuple(input_shape)
        if self.data_format == "channels_last":
            return (n[0], _mul(n[1], self.size[0]), _mul(n[2], self.size[1]), n[3])
        return (n[0], n[1], _mul(n[2], self.size[0]), _mul(n[3], self.size[1]))


def _add(n, k):
    return None if n is None else n + k


class ZeroPadding1D(Layer):
    """Adds zeros at the start and end of the steps: (N, L, C) -> (N, L+a+b, C). padding: int or (a, b).
    No parameters."""

    def __init__(self, padding=1, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.padding = _pairs(padding, 1, "padding", f"Layer '{self.name}'")[0]
        self.data_format = standardize_data_format(data_format, self.name)
        self.input_spec = InputSpec(ndim=3)

    def call(self, inputs):
        y = ops.zero_padding1d(to_channels_last(inputs, self.data_format), self.padding)
        return to_channels_first(y, self.data_format)

    def compute_output_shape(self, input_shape):
        n = list(input_shape)
        axis = 1 if self.data_format == "channels_last" else 2
        n[axis] = _add(n[axis], sum(self.padding))
        return tuple(n)


class ZeroPadding2D(Layer):
    """Adds rows and columns of zeros around images: (N, H, W, C) -> (N, H+t+b, W+l+r, C).
    padding: int, (h, w) (symmetric) or ((t, b), (l, r)). No parameters."""

    def __init__(self, padding=(1, 1), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.padding = _pairs(padding, 2, "padding", f"Layer '{self.name}'")
        self.data_format = standardize_data_format(data_format, self.name)
        self.input_spec = InputSpec(ndim=4)

    def call(self, inputs):
        y = ops.zero_padding2d(to_channels_last(inputs, self.data_format), self.padding)
        return to_channels_first(y, self.data_format)

    def compute_output_shape(self, input_shape):
        n = list(input_shape)
        first = 1 if self.data_format == "channels_last" else 2
        for a in range(2):
            n[first + a] = _add(n[first + a], sum(self.padding[a]))
        return tuple(n)


class Cropping1D(Layer):
    """Cuts steps off the start and end: (N, L, C) -> (N, L-a-b, C). cropping: int or (a, b).
    No parameters."""

    def __init__(self, cropping=(1, 1), **kwargs):
        super().__init__(**kwargs)
        self.cropping = _pairs(cropping, 1, "cropping", f"Layer '{self.name}'")[0]
        self.input_spec = InputSpec(ndim=3)

    def call(self, inputs):
        return ops.cropping1d(inputs, self.cropping)

    def compute_output_shape(self, input_shape):
        n = list(input_shape)
        n[1] = _add(n[1], -sum(self.cropping))
        if n[1] is not None and n[1] <= 0:
            raise ValueError(f"Layer '{self.name}': cropping {self.cropping} leaves nothing of the input "
                             f"of shape {tuple(input_shape)}.")
        return tuple(n)


class Cropping2D(Layer):
    """Cuts rows and columns off the borders: (N, H, W, C) -> (N, H-t-b, W-l-r, C).
    cropping: int, (h, w) (symmetric) or ((t, b), (l, r)). No parameters."""

    def __init__(self, cropping=((0, 0), (0, 0)), data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.cropping = _pairs(cropping, 2, "cropping", f"Layer '{self.name}'")
        self.data_format = standardize_data_format(data_format, self.name)
        self.input_spec = InputSpec(ndim=4)

    def call(self, inputs):
        y = ops.cropping2d(to_channels_last(inputs, self.data_format), self.cropping)
        return to_channels_first(y, self.data_format)

    def compute_output_shape(self, input_shape):
        n = list(input_shape)
        first = 1 if self.data_format == "channels_last" else 2
        for a in range(2):
            n[first + a] = _add(n[first + a], -sum(self.cropping[a]))
            if n[first + a] is not None and n[first + a] <= 0:
                raise ValueError(f"Layer '{self.name}': cropping {self.cropping} leaves nothing of the input "
                                 f"of shape {tuple(input_shape)}.")
        return tuple(n)


__all__ = ["Flatten", "Reshape", "Permute", "RepeatVector", "UpSampling1D", "UpSampling2D", "ZeroPadding1D",
           "ZeroPadding2D", "Cropping1D", "Cropping2D"]
