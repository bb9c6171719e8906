"""Preprocessing layers used inside Keras pipelines: Normalization, Rescaling, Resizing, CenterCrop, and
the augmentation layers RandomFlip, RandomRotation, RandomTranslation, RandomZoom, RandomContrast.

Images are channels-last (N, H, W, C); a single image (H, W, C) is accepted too. Augmentation runs only
when the layer is called with ``training=True`` (fit does); at inference the input passes unchanged.
Random draws come from lamina's seeded generator (``lamina.utils.set_random_seed``), or from the layer's
own generator when a ``seed`` is given. Geometric augmentations build one affine map per image and
resample the whole batch at once (no loop over images); resizing is two small interpolation matrices
applied as GEMMs, so both are differentiable with plain matrix backward passes.
"""
import math

import numpy as np

from .. import backend, ops
from ..ops.image import _FILL_MODES, _INTERPOLATIONS, _affine_transform as affine_transform, _resize as resize
from ..tensor import Tensor
from .layer import InputSpec, Layer

_EPS = 1e-7


class Normalization(Layer):
    """Feature-wise standardisation: ``(x - mean) / max(sqrt(variance), 1e-7)``; with invert,
    ``mean + x * max(sqrt(variance), 1e-7)``.

    ``adapt(data)`` computes mean and (population) variance over every axis except ``axis`` and stores
    them in the non-trainable weights 'mean' and 'variance' (then 'count', a scalar Keras keeps). Or give
    ``mean`` and ``variance`` directly (then the layer holds them as constants and has no weights, as in Keras).

    Args: axis=-1 (int, tuple of kept axes, or None for one scalar), mean=None, variance=None, invert=False.
    Input shape: any, (N, ..., d). Output: same shape.
    """

    _cast_integer_inputs = True  # bool/int inputs compute in the layer's float dtype, as Keras

    def __init__(self, axis=-1, mean=None, variance=None, invert=False, **kwargs):
        super().__init__(**kwargs)
        if axis is None:
            axis = ()
        elif isinstance(axis, int):
            axis = (axis,)
        self.axis = tuple(axis)
        if (mean is None) != (variance is None):
            raise ValueError(f"Normalization '{self.name}': set both `mean` and `variance`, or neither. "
                             f"Received: mean={mean!r}, variance={variance!r}")
        self.input_mean, self.input_variance, self.invert = mean, variance, bool(invert)
        self.supports_masking = True

    def build(self, input_shape):
        ndim = len(input_shape)
        for a in self.axis:
            if not -ndim <= a < ndim:
                raise ValueError(f"Normalization '{self.name}': axis {a} is out of range for input shape "
                                 f"{tuple(input_shape)}.")
        self._keep = tuple(sorted(a % ndim for a in self.axis))
        if any(input_shape[a] is None for a in self._keep):
            raise ValueError(f"Normalization '{self.name}': the normalised axes {self._keep} must have known "
                             f"sizes. Received input shape {tuple(input_shape)}.")
        self._reduce = tuple(a for a in range(ndim) if a not in self._keep)
        shape = tuple(input_shape[a] for a in self._keep)
        self._broadcast = tuple(input_shape[a] if a in self._keep else 1 for a in range(ndim))
        if self.input_mean is None:
            self.adapt_mean = self.add_weight(name="mean", shape=shape, initializer="zeros", trainable=False)
            self.adapt_variance = self.add_weight(name="variance", shape=shape, initializer="ones", trainable=False)
            # Keras keeps a scalar int32 'count' (never updated) for old saved models: one parameter, one file entry
            self.count = self.add_weight(name="count", shape=(), dtype="int32", initializer="zeros", trainable=False)
        else:
            xp = self._array_module()
            self._const_mean = Tensor(xp.asarray(np.broadcast_to(np.asarray(self.input_mean, np.float32),
                                                                  self._broadcast).copy()))
            self._const_var = Tensor(xp.asarray(np.broadcast_to(np.asarray(self.input_variance, np.float32),
                                                                 self._broadcast).copy()))
        self.input_spec = InputSpec(ndim=ndim, axes={a: input_shape[a] for a in self._keep})

    def adapt(self, data, batch_size=None, steps=None):
        """Compute mean and variance from data: an array (or Tensor), or an iterable of batches (arrays or
        (x, y) tuples), combined exactly across batches."""
        if self.input_mean is not None:
            raise ValueError(f"Normalization '{self.name}': cannot adapt a layer created with fixed mean and "
                             "variance.")
        if isinstance(data, (np.ndarray, Tensor, list)) or backend.is_cupy_array(data):
            chunks = [data]
        else:
            chunks = data
        count, mean, m2 = 0, None, None
        for i, chunk in enumerate(chunks):
            if steps is not None and i >= steps:
                break
            if isinstance(chunk, tuple):
                chunk = chunk[0]
            x = backend.to_numpy(chunk.data if isinstance(chunk, Tensor) else chunk).astype(np.float64)
            if not self.built:
                self.build(tuple(x.shape))
                self.built = True
            n = int(np.prod([x.shape[a] for a in self._reduce])) if self._reduce else 1
            bm = x.mean(axis=self._reduce) if self._reduce else x
            bv = x.var(axis=self._reduce) if self._reduce else np.zeros_like(x)
            if mean is None:
                count, mean, m2 = n, bm, bv * n
            else:  # Chan et al.'s pairwise combination of means and squared deviations
                total = count + n
                delta = bm - mean
                mean = mean + delta * (n / total)
                m2 = m2 + bv * n + delta ** 2 * (count * n / total)
                count = total
        if mean is None:
            raise ValueError(f"Normalization '{self.name}': adapt() received no data.")
        self.adapt_mean.assign(np.asarray(mean, np.float32).reshape(self.adapt_mean.shape))
        self.adapt_variance.assign(np.asarray(m2 / count, np.float32).reshape(self.adapt_variance.shape))

    @property
    def mean(self):
        """The mean subtracted, broadcast to the input's rank ((1, d) for axis=-1), as Keras's attribute; None
        before the layer is built."""
        return self._stats()[0] if self.built else None

    @property
    def variance(self):
        """The variance divided by (its square root), shaped as ``mean``; None before the layer is built."""
        return self._stats()[1] if self.built else None

    def _stats(self):
        if self.input_mean is not None:
            return self._const_mean, self._const_var
        return ops.reshape(self.adapt_mean, self._broadcast), ops.reshape(self.adapt_variance, self._broadcast)

    def call(self, inputs):
        mean, var = self._stats()
        mean, var = ops.cast(mean, inputs.dtype), ops.cast(var, inputs.dtype)  # follow the input's float dtype
        std = ops.math.maximum(ops.sqrt(var), _EPS)
        if self.invert:
            return mean + inputs * std
        return (inputs - mean) / std

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config["axis"] = list(self.axis) if len(self.axis) != 1 else self.axis[0]
        for k, v in (("mean", self.input_mean), ("variance", self.input_variance)):
            config[k] = None if v is None else np.asarray(v).tolist()
        return config


class Rescaling(Layer):
    """``inputs * scale + offset`` (e.g. ``Rescaling(1/255)`` maps [0, 255] pixels to [0, 1]).

    Args: scale, offset=0.0 (floats, or arrays broadcast over the channels). Output: same shape, float.
    """

    def __init__(self, scale, offset=0.0, **kwargs):
        super().__init__(**kwargs)
        self.scale, self.offset = scale, offset

    def call(self, inputs):
        dtype = inputs.dtype if np.issubdtype(inputs.dtype, np.floating) else np.dtype(self.compute_dtype)
        if inputs.dtype != dtype:
            inputs = ops.cast(inputs, dtype)
        xp = backend.get_array_module(inputs.data)
        scale = Tensor(backend.to_device(np.asarray(self.scale, dtype), xp))
        offset = Tensor(backend.to_device(np.asarray(self.offset, dtype), xp))
        return inputs * scale + offset

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


def _to_batch(inputs):
    """(H, W, C) -> (1, H, W, C); returns the batched tensor and whether to unbatch at the end."""
    if inputs.ndim == 3:
        return ops.expand_dims(inputs, 0), True
    if inputs.ndim != 4:
        raise ValueError(f"Expected images of rank 3 (H, W, C) or 4 (N, H, W, C); received shape {inputs.shape}.")
    return inputs, False


def _check_choice(layer, arg, value, valid):
    if value not in valid:
        raise ValueError(f"{type(layer).__name__} '{layer.name}': unknown {arg} {value!r}. "
                         f"Valid: {', '.join(repr(v) for v in valid)}.")


def _crop_box(h, w, th, tw):
    """Keras's centred crop to the target aspect ratio: (top, left, height, width)."""
    ch = max(min(h, int(float(w * th) / tw)), 1)
    cw = max(min(w, int(float(h * tw) / th)), 1)
    return int(float(h - ch) / 2), int(float(w - cw) / 2), ch, cw


class Resizing(Layer):
    """Resize images to (height, width) with half-pixel-centred 'bilinear' or 'nearest' interpolation
    (Keras/TF ``resize`` without antialiasing). With ``crop_to_aspect_ratio``, first crop the largest
    centred window of the target aspect ratio so that the image is not distorted.

    Input (N, H, W, C) or (H, W, C) -> (N, height, width, C).
    Backward: the transposed interpolation matrices (the op ``Resize``).
    """

    def __init__(self, height, width, interpolation="bilinear", crop_to_aspect_ratio=False, pad_to_aspect_ratio=False,
                 fill_mode="constant", fill_value=0.0, data_format=None, **kwargs):
        super().__init__(**kwargs)
        _check_choice(self, "interpolation", interpolation, _INTERPOLATIONS)
        if data_format not in (None, "channels_last"):
            raise ValueError(f"Resizing '{self.name}': only data_format='channels_last' is supported. "
                             f"Received: {data_format!r}")
        if pad_to_aspect_ratio and crop_to_aspect_ratio:
            raise ValueError(f"Resizing '{self.name}': only one of crop_to_aspect_ratio and pad_to_aspect_ratio.")
        self.height, self.width = int(height), int(width)
        self.interpolation, self.crop_to_aspect_ratio = interpolation, bool(crop_to_aspect_ratio)
        self.pad_to_aspect_ratio, self.fill_value = bool(pad_to_aspect_ratio), fill_value

    def call(self, inputs):
        x, single = _to_batch(inputs)
        _, h, w, c = x.shape
        if self.crop_to_aspect_ratio:
            top, left, ch, cw = _crop_box(h, w, self.height, self.width)
            x = x[:, top:top + ch, left:left + cw, :]
        elif self.pad_to_aspect_ratio:
            ph = max(h, int(math.ceil(w * self.height / self.width)))
            pw = max(w, int(math.ceil(h * self.width / self.height)))
            top, left = (ph - h) // 2, (pw - w) // 2
            x = ops.pad(x, ((0, 0), (top, ph - h - top), (left, pw - w - left), (0, 0)),
                        constant_values=self.fill_value)
        if not np.issubdtype(x.dtype, np.floating):
            x = ops.cast(x, self.compute_dtype)
        y = resize(x, (self.height, self.width), self.interpolation)
        return y[0] if single else y

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-3]) + (self.height, self.width, input_shape[-1])


class CenterCrop(Layer):
    """Crop the central (height, width) window of each image; an image smaller than the target is first
    cropped to the target aspect ratio and resized up (Keras's behaviour).

    Input (N, H, W, C) or (H, W, C) -> (N, height, width, C).
    """

    def __init__(self, height, width, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.height, self.width = int(height), int(width)

    def call(self, inputs):
        x, single = _to_batch(inputs)
        _, h, w, _ = x.shape
        dh, dw = h - self.height, w - self.width
        if dh < 0 or dw < 0:
            top, left, ch, cw = _crop_box(h, w, self.height, self.width)
            x = x[:, top:top + ch, left:left + cw, :]
            if not np.issubdtype(x.dtype, np.floating):
                x = ops.cast(x, self.compute_dtype)
            y = resize(x, (self.height, self.width))
        else:
            top, left = dh // 2, dw // 2
            y = x[:, top:top + self.height, left:left + self.width, :]
        return y[0] if single else y

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-3]) + (self.height, self.width, input_shape[-1])


# ---------------------------------------------------------------- augmentation
def _factor_range(layer, name, factor, symmetric=True):
    """A factor given as x (-> (-x, x)) or (lo, hi), checked."""
    if isinstance(factor, (int, float)):
        lo, hi = (-abs(factor), abs(factor)) if symmetric else (0.0, float(factor))
    elif isinstance(factor, (list, tuple)) and len(factor) == 2:
        lo, hi = float(factor[0]), float(factor[1])
    else:
        raise ValueError(f"{type(layer).__name__} '{layer.name}': `{name}` must be a float or a pair (lower, upper). "
                         f"Received: {name}={factor!r}")
    if lo > hi:
        raise ValueError(f"{type(layer).__name__} '{layer.name}': `{name}` lower bound {lo} is above the upper "
                         f"bound {hi}.")
    return lo, hi


class _RandomLayer(Layer):
    """Shared by augmentation layers: a seeded generator, and identity outside training."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self._gen = np.random.default_rng(seed) if seed is not None else None
        self.supports_masking = True

    def _rng(self):
        return self._gen if self._gen is not None else backend.rng()

    def call(self, inputs, training=True):
        if not training:
            return inputs
        x, single = _to_batch(inputs)
        if not np.issubdtype(x.dtype, np.floating):
            x = ops.cast(x, self.compute_dtype)
        y = self._augment(x)
        return y[0] if single else y

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


class RandomFlip(_RandomLayer):
    """Flip each image left-right and/or up-down with probability 1/2 (per image, per direction).

    Args: mode='horizontal_and_vertical' | 'horizontal' | 'vertical', seed=None.
    """

    def __init__(self, mode="horizontal_and_vertical", seed=None, data_format=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        _check_choice(self, "mode", mode, ("horizontal", "vertical", "horizontal_and_vertical"))
        self.mode = mode

    def _augment(self, x):
        n = x.shape[0]
        xp = backend.get_array_module(x.data)
        if self.mode in ("horizontal", "horizontal_and_vertical"):
            flip = xp.asarray(self._rng().random(n) < 0.5).reshape(n, 1, 1, 1)
            x = ops.where(Tensor(flip), x[:, :, ::-1, :], x)
        if self.mode in ("vertical", "horizontal_and_vertical"):
            flip = xp.asarray(self._rng().random(n) < 0.5).reshape(n, 1, 1, 1)
            x = ops.where(Tensor(flip), x[:, ::-1, :, :], x)
        return x


class _AffineLayer(_RandomLayer):
    def __init__(self, fill_mode="reflect", interpolation="bilinear", seed=None, fill_value=0.0, **kwargs):
        super().__init__(seed=seed, **kwargs)
        _check_choice(self, "fill_mode", fill_mode, _FILL_MODES)
        _check_choice(self, "interpolation", interpolation, _INTERPOLATIONS)
        self.fill_mode, self.interpolation, self.fill_value = fill_mode, interpolation, fill_value

    def _augment(self, x):
        n, h, w, _ = x.shape
        return affine_transform(x, self._transforms(n, h, w), self.interpolation, self.fill_mode, self.fill_value)


class RandomRotation(_AffineLayer):
    """Rotate each image by a random angle about its centre.

    Args: factor: a fraction of a full turn, x -> angle in [-x, x] * 2 pi, or (lower, upper);
    fill_mode='reflect' ('wrap', 'constant', 'nearest'), interpolation='bilinear' | 'nearest', seed,
    fill_value=0.0 (for 'constant').
    """

    def __init__(self, factor, fill_mode="reflect", interpolation="bilinear", seed=None, fill_value=0.0,
                 value_range=(0, 255), data_format=None, **kwargs):
        super().__init__(fill_mode=fill_mode, interpolation=interpolation, seed=seed, fill_value=fill_value, **kwargs)
        self.factor = factor
        self._lo, self._hi = _factor_range(self, "factor", factor)

    def _transforms(self, n, h, w):
        angle = self._rng().uniform(self._lo, self._hi, n) * 2.0 * math.pi
        cos, sin = np.cos(angle), np.sin(angle)
        x_off = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2.0
        y_off = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2.0
        zero = np.zeros(n)
        return np.stack([cos, -sin, x_off, sin, cos, y_off, zero, zero], axis=1)


class RandomTranslation(_AffineLayer):
    """Shift each image by a random fraction of its height and width.

    Args: height_factor, width_factor: x -> shift in [-x, x] * size, or (lower, upper); fill_mode='reflect',
    interpolation='bilinear', seed, fill_value=0.0.
    """

    def __init__(self, height_factor, width_factor, fill_mode="reflect", interpolation="bilinear", seed=None,
                 fill_value=0.0, data_format=None, **kwargs):
        super().__init__(fill_mode=fill_mode, interpolation=interpolation, seed=seed, fill_value=fill_value, **kwargs)
        self.height_factor, self.width_factor = height_factor, width_factor
        self._h = _factor_range(self, "height_factor", height_factor)
        self._w = _factor_range(self, "width_factor", width_factor)

    def _transforms(self, n, h, w):
        r = self._rng()
        dy = r.uniform(*self._h, n) * h
        dx = r.uniform(*self._w, n) * w
        one, zero = np.ones(n), np.zeros(n)
        return np.stack([one, zero, -dx, zero, one, -dy, zero, zero], axis=1)


class RandomZoom(_AffineLayer):
    """Zoom each image in or out about its centre by a random factor.

    Args: height_factor: x -> zoom in [-x, x], or (lower, upper); a positive value zooms out (the image
    shrinks), a negative one zooms in; width_factor=None keeps the aspect ratio; fill_mode='reflect',
    interpolation='bilinear', seed, fill_value=0.0.
    """

    def __init__(self, height_factor, width_factor=None, fill_mode="reflect", interpolation="bilinear", seed=None,
                 fill_value=0.0, data_format=None, **kwargs):
        super().__init__(fill_mode=fill_mode, interpolation=interpolation, seed=seed, fill_value=fill_value, **kwargs)
        self.height_factor, self.width_factor = height_factor, width_factor
        self._h = _factor_range(self, "height_factor", height_factor)
        self._w = None if width_factor is None else _factor_range(self, "width_factor", width_factor)

    def _transforms(self, n, h, w):
        r = self._rng()
        zy = 1.0 + r.uniform(*self._h, n)
        zx = zy if self._w is None else 1.0 + r.uniform(*self._w, n)
        x_off = (w - 1) / 2.0 * (1.0 - zx)
        y_off = (h - 1) / 2.0 * (1.0 - zy)
        zero = np.zeros(n)
        return np.stack([zx, zero, x_off, zero, zy, y_off, zero, zero], axis=1)


class RandomContrast(_RandomLayer):
    """Scale each image's deviation from its per-channel mean by a random factor in [1 - f, 1 + f], then
    clip to value_range: ``clip((x - mean) * c + mean, *value_range)``.

    Args: factor: f or (lower, upper) with values in [0, 1]; value_range=(0, 255); seed.
    """

    def __init__(self, factor, value_range=(0, 255), seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        lo, hi = _factor_range(self, "factor", factor)
        if isinstance(factor, (int, float)):
            lo, hi = abs(factor), abs(factor)
        else:
            lo, hi = abs(lo), abs(hi)
        if not (0 <= lo <= 1 and 0 <= hi <= 1):
            raise ValueError(f"RandomContrast '{self.name}': `factor` must be in [0, 1]. Received: {factor!r}")
        self.factor, self.value_range = factor, tuple(value_range)
        self._lo, self._hi = 1.0 - lo, 1.0 + hi

    def _augment(self, x):
        n = x.shape[0]
        xp = backend.get_array_module(x.data)
        c = xp.asarray(self._rng().uniform(self._lo, self._hi, n).astype(x.dtype)).reshape(n, 1, 1, 1)
        mean = ops.mean(x, axis=(1, 2), keepdims=True)
        y = (x - mean) * Tensor(c) + mean
        return ops.clip(y, self.value_range[0], self.value_range[1])


__all__ = ["Normalization", "Rescaling", "Resizing", "CenterCrop", "RandomFlip", "RandomRotation",
           "RandomTranslation", "RandomZoom", "RandomContrast"]
