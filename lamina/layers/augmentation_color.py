"""Keras 3 colour, blur and erasing augmentations: RandomHue, RandomSaturation, RandomSharpness,
RandomColorJitter, RandomGaussianBlur, RandomErasing, the histogram equalisations Equalization and
ContrastLimitedAdaptiveHistogramEqualization, and MaxNumBoundingBoxes.

Each layer splits its work as Keras 3 does: ``get_random_transformation(data, training=True, seed=None)`` draws
the per-image parameters (a dict of NumPy arrays under Keras's keys, drawn on the host from the layer's own
generator when it has a ``seed``, else from lamina's seeded one), and ``transform_images(images,
transformation, training=True)`` applies given parameters to a whole batch at once (no loop over images).
So the same draw can be replayed, compared with Keras, or differentiated. The random layers change images
only with ``training=True``; Equalization too (as Keras); CLAHE and MaxNumBoundingBoxes always run (as Keras).

Hue, saturation, sharpness, blur and erasing are differentiable expressions of the images (through
lamina's rgb_to_hsv / hsv_to_rgb, a depthwise convolution, where and clip). The equalisations are lookups
of integer pixel levels and have no gradient (as in Keras). Inputs are (N, H, W, C) or one (H, W, C) image;
``data_format='channels_first'`` takes (N, C, H, W). Dict inputs {"images", "bounding_boxes", "labels",
"segmentation_masks"} are accepted as in Keras (lamina/layers/image_preprocessing.py): the images are transformed;
labels, masks and boxes (which need ``bounding_box_format``) pass unchanged, except the boxes through
MaxNumBoundingBoxes.
"""
import numbers

import numpy as np

from .. import backend, ops
from ..ops.image import _depthwise, gaussian_blur, hsv_to_rgb, rgb_to_hsv
from ..tensor import Tensor, as_tensor
from .image_preprocessing import (_Augmentation, _brightness, _column, _contrast, _keras_range, _to_batch,
                                  _value_range)

__all__ = ["RandomHue", "RandomSaturation", "RandomSharpness", "RandomColorJitter", "RandomGaussianBlur",
           "RandomErasing", "Equalization", "ContrastLimitedAdaptiveHistogramEqualization", "MaxNumBoundingBoxes"]

_F32 = np.float32
_KERAS_EPSILON = 1e-7   # keras.backend.epsilon()


# ----------------------------------------------------------------------------- argument checks (Keras's rules)
def _bounded_factor(layer, value, bounds, name="factor"):
    """Keras's _set_factor: x -> (max(-|x|, low bound), |x|), a pair -> sorted; out of bounds -> ValueError.

    As in Keras, a pair is refused only when it lies wholly outside the bounds."""
    lo_b, hi_b = bounds
    msg = (f"{type(layer).__name__} '{layer.name}': `{name}` must be a number or a pair of numbers in the range "
           f"[{lo_b}, {hi_b}]. Received: {name}={value!r}")
    if isinstance(value, (tuple, list)):
        if len(value) != 2 or not all(isinstance(v, numbers.Real) for v in value):
            raise ValueError(msg)
        if value[0] > hi_b or value[1] < lo_b:
            raise ValueError(msg)
        return tuple(sorted(value))
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        if value < lo_b or value > hi_b:
            raise ValueError(msg)
        value = abs(value)
        return (max(-value, lo_b), value)
    raise ValueError(msg)


# ----------------------------------------------------------------------------- shared numerics
def _hue(x, delta, value_range):
    """Rotates the hue of NHWC images by delta (N,) turns on the 0..1 scale (Keras's RandomHue)."""
    y = _keras_range(x, value_range, (0, 1))
    hsv = rgb_to_hsv(y)
    h = hsv[..., 0:1] + _column(delta, y)
    h = ops.where(h > 1.0, h - 1.0, h)
    h = ops.where(h < 0.0, h + 1.0, h)
    rgb = ops.clip(hsv_to_rgb(ops.concatenate([h, hsv[..., 1:]], axis=-1)), 0.0, 1.0)
    return _keras_range(rgb, (0, 1), value_range)


def _saturation(x, factor, value_range):
    """Multiplies the HSV saturation of NHWC images by factor (N,), clipped to value_range (Keras's formula,
    which works on the images' own scale)."""
    hsv = rgb_to_hsv(x)
    s = ops.clip(hsv[..., 1:2] * _column(factor, x), value_range[0], value_range[1])
    return hsv_to_rgb(ops.concatenate([hsv[..., 0:1], s, hsv[..., 2:3]], axis=-1))


# ----------------------------------------------------------------------------- colour
class RandomHue(_Augmentation):
    """Rotates each image's hue by d = +-f / 2 turns, f ~ U(factor) and the sign a fair coin per image (Keras's
    draw): RGB on the 0..1 scale -> HSV, h + d wrapped into [0, 1], -> RGB clipped to [0, 1], back to
    value_range. factor: f (-> (0, f)) or (lower, upper), in [0, 1]. Transformation: {'factor': d}."""

    def __init__(self, factor, value_range=(0, 255), data_format=None, seed=None, **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        self.factor = _bounded_factor(self, factor, (0, 1))
        self.value_range = value_range

    def _draw(self, shape, rng):
        n = shape[0]
        sign = np.where(rng.uniform(size=n).astype(_F32) > 0.5, _F32(-1), _F32(1))
        f = rng.uniform(self.factor[0], self.factor[1], n).astype(_F32)
        return {"factor": sign * f * _F32(0.5)}

    def _transform(self, x, t):
        return _hue(x, t["factor"], self.value_range)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "value_range": self.value_range}


class RandomSaturation(_Augmentation):
    """Scales each image's HSV saturation by f / (1 - f + 1e-7), f ~ U(factor) per image, clipping the
    saturation to value_range (Keras's formula; f = 0.5 leaves the image, 0 makes it gray, near 1 saturates).
    factor: f (-> (-f, f), as Keras's bounds [-1, 1] give; a negative draw also makes the image gray) or
    (lower, upper). Transformation: {'factor': f / (1 - f + 1e-7)}."""

    def __init__(self, factor, value_range=(0, 255), data_format=None, seed=None, **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        self.factor = _bounded_factor(self, factor, (-1, 1))
        self.value_range = _value_range(self, value_range)

    def _draw(self, shape, rng):
        f = rng.uniform(self.factor[0], self.factor[1], shape[0]).astype(_F32)
        return {"factor": f / (_F32(1) - f + _F32(_KERAS_EPSILON))}

    def _transform(self, x, t):
        return _saturation(x, t["factor"], self.value_range)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "value_range": self.value_range}


class RandomSharpness(_Augmentation):
    """Blends each image with its smoothed version (3x3 kernel [[1, 1, 1], [1, 5, 1], [1, 1, 1]] / 13, zero
    padding): x + (1 - 2 f) (smooth - x), f ~ U(factor) per image, clipped to value_range. f = 0 blurs, 0.5
    leaves the image, 1 sharpens. factor: f (-> (0, f)) or (lower, upper) in [0, 1]. Transformation:
    {'factor': f}."""

    _float_at_inference = True

    def __init__(self, factor, value_range=(0, 255), data_format=None, seed=None, **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        self.factor = _bounded_factor(self, factor, (0, 1))
        self.value_range = _value_range(self, value_range)

    def _draw(self, shape, rng):
        return {"factor": rng.uniform(self.factor[0], self.factor[1], shape[0]).astype(_F32)}

    def _transform(self, x, t):
        xp = backend.get_array_module(x.data)
        a, b = 1.0 / 13.0, 5.0 / 13.0
        kernel = Tensor(xp.asarray(np.array([[a, a, a], [a, b, a], [a, a, a]]).reshape(3, 3, 1, 1), x.dtype))
        smooth = _depthwise(x, kernel, (1, 1))
        s = _column(np.asarray(t["factor"], _F32) * _F32(2), x)
        return ops.clip(x + (1.0 - s) * (smooth - x), self.value_range[0], self.value_range[1])

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "value_range": self.value_range}


class RandomColorJitter(_Augmentation):
    """Keras's RandomColorJitter: brightness, contrast, saturation and hue changes in that order, each with
    its own per-image draw, for the factors given (None skips one).

    brightness_factor as RandomBrightness (x + d (high - low), d ~ U(f), f -> (-f, f), in [-1, 1]);
    contrast_factor as Keras 3.15's RandomContrast ((x - mean) c + mean per image and channel, c ~ U(1 - lower,
    1 + upper) where a number f means (0, f), in [0, 1]); saturation_factor as RandomSaturation; hue_factor as
    RandomHue. Each step clips to value_range. Transformation: {'brightness': {'rgb_delta'}, 'contrast':
    {'contrast_factor'} (both (N, 1, 1, 1) as Keras), 'saturation': {'factor'}, 'hue': {'factor'}} for the steps
    in use; as in Keras, transform_images(images, None) draws them itself.
    """

    def __init__(self, value_range=(0, 255), brightness_factor=None, contrast_factor=None, saturation_factor=None,
                 hue_factor=None, seed=None, data_format=None, **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        self.value_range = value_range
        self.brightness_factor, self.contrast_factor = brightness_factor, contrast_factor
        self.saturation_factor, self.hue_factor = saturation_factor, hue_factor
        self._steps = {}
        if brightness_factor is not None:
            self._steps["brightness"] = _bounded_factor(self, brightness_factor, (-1, 1), "brightness_factor")
            self._brightness_range = _value_range(self, value_range)
        if contrast_factor is not None:
            self._steps["contrast"] = _bounded_factor(self, contrast_factor, (0, 1), "contrast_factor")
        if saturation_factor is not None:
            self._steps["saturation"] = _bounded_factor(self, saturation_factor, (-1, 1), "saturation_factor")
            self._saturation_range = _value_range(self, value_range)
        if hue_factor is not None:
            self._steps["hue"] = _bounded_factor(self, hue_factor, (0, 1), "hue_factor")

    def _draw(self, shape, rng):
        n, out = shape[0], {}
        for step, (lo, hi) in self._steps.items():
            if step == "brightness":
                span = self._brightness_range[1] - self._brightness_range[0]
                out[step] = {"rgb_delta": rng.uniform(lo, hi, (n, 1, 1, 1)).astype(_F32) * _F32(span)}
            elif step == "contrast":
                out[step] = {"contrast_factor": rng.uniform(1.0 - lo, 1.0 + hi, (n, 1, 1, 1)).astype(_F32)}
            elif step == "saturation":
                f = rng.uniform(lo, hi, n).astype(_F32)
                out[step] = {"factor": f / (_F32(1) - f + _F32(_KERAS_EPSILON))}
            else:
                sign = np.where(rng.uniform(size=n).astype(_F32) > 0.5, _F32(-1), _F32(1))
                out[step] = {"factor": sign * rng.uniform(lo, hi, n).astype(_F32) * _F32(0.5)}
        return out

    def _transform(self, x, t):
        if "brightness" in t:
            x = _brightness(x, t["brightness"]["rgb_delta"], self._brightness_range)
        if "contrast" in t:
            x = _contrast(x, t["contrast"]["contrast_factor"], self.value_range)
        if "saturation" in t:
            x = _saturation(x, t["saturation"]["factor"], self._saturation_range)
        if "hue" in t:
            x = _hue(x, t["hue"]["factor"], self.value_range)
        return x


class RandomGaussianBlur(_Augmentation):
    """Blurs each image with probability p ~ U(factor) (one uniform draw against p per image) by a Gaussian of
    kernel_size and sigmas (s_y, s_x) ~ U(sigma) + 1e-6, one pair for the batch (Keras's draw), then clips to
    value_range. kernel_size: odd int or pair; factor and sigma: f (-> (0, f)) or pairs in [0, 1].
    Transformation: {'should_apply_blur': (N,) bool, 'blur_factor': (2,)}."""

    _float_at_inference = True

    def __init__(self, factor=1.0, kernel_size=3, sigma=1.0, value_range=(0, 255), data_format=None, seed=None,
                 **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        self.factor = _bounded_factor(self, factor, (0, 1))
        self.kernel_size = self._kernel_size(kernel_size)
        self.sigma = _bounded_factor(self, sigma, (0, 1), "sigma")
        self.value_range = value_range

    def _kernel_size(self, k):
        msg = (f"RandomGaussianBlur '{self.name}': kernel_size must be an odd number or a pair of odd numbers. "
               f"Received: kernel_size={k!r}")
        ks = tuple(k) if isinstance(k, (tuple, list)) else (k, k) if isinstance(k, numbers.Real) else None
        if ks is None or len(ks) != 2 or any(not isinstance(v, numbers.Real) or v % 2 == 0 for v in ks):
            raise ValueError(msg)
        return ks

    def _draw(self, shape, rng):
        n = shape[0]
        p = rng.uniform(self.factor[0], self.factor[1], n).astype(_F32)
        apply = rng.uniform(size=n).astype(_F32) < p
        sig = rng.uniform(self.sigma[0], self.sigma[1], 2).astype(_F32) + _F32(1e-6)
        return {"should_apply_blur": apply, "blur_factor": sig}

    _draw_when_none = False   # Keras leaves the images as they are without a transformation

    def _transform(self, x, t):
        if t is None:
            return x
        sig = np.asarray(backend.to_numpy(t["blur_factor"]), np.float64)
        blurred = gaussian_blur(x, tuple(int(k) for k in self.kernel_size), (float(sig[0]), float(sig[1])))
        apply = _column(np.asarray(backend.to_numpy(t["should_apply_blur"])), x) > 0.5
        return ops.clip(ops.where(apply, blurred, x), self.value_range[0], self.value_range[1])

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "kernel_size": self.kernel_size,
                "sigma": self.sigma, "value_range": self.value_range}


class RandomErasing(_Augmentation):
    """Erases one random rectangle per image with probability p ~ U(factor) (Keras's draw): side fractions
    sqrt(a_x), sqrt(a_y), a ~ U(scale), placed uniformly inside the image; the rectangle is filled with
    fill_value (a number or 3 per-channel numbers), or with Gaussian noise * value_range[1] when None, clipped
    to value_range. factor and scale: f (-> (0, f)) or pairs in [0, 1]. Transformation: {'apply_erasing': (N,),
    'batch_masks': bool like the images, 'fill_value': like the images}."""

    _nhwc = False   # masks and fills are drawn in the images' own layout, as Keras
    _float_at_inference = True

    def __init__(self, factor=1.0, scale=(0.02, 0.33), fill_value=None, value_range=(0, 255), seed=None,
                 data_format=None, **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        self.factor = _bounded_factor(self, factor, (0, 1))
        self.scale = _bounded_factor(self, scale, (0, 1), "scale")
        self.fill_value, self.value_range = fill_value, value_range

    def _draw(self, shape, rng):
        n = shape[0]
        first = self.data_format == "channels_first"
        c, h, w = (shape[1], shape[2], shape[3]) if first else (shape[3], shape[1], shape[2])
        mix = np.sqrt(rng.uniform(self.scale[0], self.scale[1], (n, 2)).astype(_F32))

        def bounds(length, ratio):
            size = (ratio * _F32(length)).astype(_F32)
            start = rng.uniform(size=n).astype(_F32) * (_F32(length) - size)
            return start, start + size
        x0, x1 = bounds(w, mix[:, 0])
        y0, y1 = bounds(h, mix[:, 1])
        gy = np.arange(h, dtype=_F32)[None, :, None]
        gx = np.arange(w, dtype=_F32)[None, None, :]
        box = ((gx >= x0[:, None, None]) & (gx < x1[:, None, None]) &
               (gy >= y0[:, None, None]) & (gy < y1[:, None, None]))               # (N, H, W)
        masks = np.repeat(box[:, None], c, axis=1) if first else np.repeat(box[..., None], c, axis=-1)
        p = rng.uniform(self.factor[0], self.factor[1], n).astype(_F32)
        apply = rng.uniform(size=n).astype(_F32) < p
        return {"apply_erasing": apply, "batch_masks": masks, "fill_value": self._fill(masks.shape, rng)}

    def _fill(self, shape, rng):
        fv = self.fill_value
        if fv is None:
            fill = rng.standard_normal(shape).astype(_F32) * _F32(self.value_range[1])
        elif isinstance(fv, (tuple, list)):
            if len(fv) != 3:
                raise ValueError(f"RandomErasing '{self.name}': fill_value must be a number or a list of three "
                                 f"numbers. Received: fill_value={fv!r}")
            per_channel = np.asarray(fv, _F32).reshape((1, 3, 1, 1) if self.data_format == "channels_first"
                                                       else (1, 1, 1, 3))
            fill = np.broadcast_to(per_channel, shape).astype(_F32)
        elif isinstance(fv, numbers.Real):
            fill = np.full(shape, fv, _F32)
        else:
            raise ValueError(f"RandomErasing '{self.name}': fill_value must be a number or a list of three numbers. "
                             f"Received: fill_value={fv!r}")
        return np.clip(fill, self.value_range[0], self.value_range[1])

    def _transform(self, x, t):
        xp = backend.get_array_module(x.data)
        as_x = lambda a: xp.asarray(np.asarray(backend.to_numpy(a.data if isinstance(a, Tensor) else a)))
        masks = Tensor(as_x(t["batch_masks"]).astype(bool).reshape(x.shape))
        fill = Tensor(as_x(t["fill_value"]).astype(x.dtype).reshape(x.shape))
        apply = Tensor(as_x(t["apply_erasing"]).astype(bool).reshape(-1, 1, 1, 1))
        return ops.where(apply, ops.where(masks, fill, x), x)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "scale": self.scale}


# ----------------------------------------------------------------------------- histogram equalisation
class Equalization(_Augmentation):
    """Histogram equalisation with Keras 3.15's numerics. On the 0..255 scale, for each channel a histogram of
    `bins` levels is taken over the whole batch (as Keras does: one histogram per channel, not per image), its
    cumulative sum gives the lookup round(255 (cdf - cdf_min) / (count - cdf_min)), and each value v becomes
    lookup[trunc(v / 255 (bins - 1))]; a channel whose values fall in one bin is left as it is. Applies only
    with training=True, as Keras. No gradient (a lookup of integer levels), except through unchanged channels.
    Vectorised over batch and channels: one bincount over (channel, level) keys."""

    def __init__(self, value_range=(0, 255), bins=256, data_format=None, **kwargs):
        super().__init__(data_format=data_format, **kwargs)
        self.bins = int(bins)
        self.value_range = _value_range(self, value_range)

    _draw_when_none = False

    def _scale(self, x, src, dst):
        """Keras's _scale_values with its Python arithmetic for scale and offset (float32 product)."""
        scale = (dst[1] - dst[0]) / (src[1] - src[0])
        offset = dst[0] - src[0] * scale
        return x * float(scale) + float(offset)

    def _transform(self, x, t):
        xp = backend.get_array_module(x.data)
        c, bins = x.shape[-1], self.bins
        v = self._scale(x, self.value_range, (0, 255))              # (N, H, W, C)
        a = v.data.astype(_F32)
        at = (a * _F32(bins - 1)) / _F32(255)                         # Keras's histogram index, then the lookup's
        hist_idx = xp.clip(xp.clip(at, -1, bins).astype(np.int32), 0, bins - 1)
        keys = hist_idx.astype(np.int64) + bins * xp.arange(c, dtype=np.int64)
        hist = xp.bincount(keys.reshape(-1), minlength=c * bins).reshape(c, bins)
        cdf = xp.cumsum(hist, axis=1)
        first = xp.argmax(hist > 0, axis=1)
        cdf_min = xp.take_along_axis(cdf, first[:, None], axis=1)
        denom = cdf[:, -1:] - cdf_min
        denom = xp.where(denom == 0, 1, denom)
        lut = ((cdf - cdf_min) * 255).astype(_F32) / denom.astype(_F32)   # torch: int / int in float32
        lut = xp.clip(xp.round(lut), 0, 255)
        look = xp.clip((a / _F32(255.0)) * _F32(bins - 1), 0, bins - 1).astype(np.int32)
        eq = lut[xp.arange(c), look]                                  # (N, H, W, C) by fancy indexing
        flat = (xp.count_nonzero(hist, axis=1) <= 1).reshape(1, 1, 1, c)
        y = ops.where(Tensor(xp.broadcast_to(flat, a.shape)), v, Tensor(eq.astype(x.dtype)))
        return self._scale(y, (0, 255), self.value_range)

    def get_config(self):
        return {**super().get_config(), "bins": self.bins, "value_range": self.value_range}


class ContrastLimitedAdaptiveHistogramEqualization(_Augmentation):
    """CLAHE with Keras 3.15's numerics (torch backend). On the 0..255 scale each image is cut into
    tile_grid_size tiles (the image is padded at the bottom and right by repeating its edge, as Keras's torch
    backend pads); each tile's 256-level histogram of trunc(v) is clipped at trunc(clip_limit * tile_pixels /
    256) (Keras's torch backend counts in integers) and the excess spread evenly; the normalised cdfs give
    per-tile lookups, and each pixel is the bilinear blend of the lookups of the four nearest tile centres.
    Runs at inference too (as Keras); the output has the input's dtype; no gradient. Vectorised over batch,
    tiles and channels: one bincount for all (image, tile, channel) histograms and one gather per corner."""

    _always = True

    def __init__(self, value_range=(0, 255), clip_limit=4.0, tile_grid_size=(8, 8), data_format=None, **kwargs):
        super().__init__(data_format=data_format, **kwargs)
        self.value_range, self.clip_limit = value_range, clip_limit
        self.tile_grid_size = tile_grid_size

    _draw_when_none = False

    def transform_images(self, images, transformation=None, training=True):
        x = images if isinstance(images, Tensor) else self._convert_input(images)
        dtype = x.dtype
        x, single = _to_batch(x)
        first = self.data_format == "channels_first"
        a = x.data.transpose(0, 2, 3, 1) if first else x.data
        y = _keras_range(a.astype(_F32), self.value_range, (0, 255))
        y = _keras_range(self._clahe(y), (0, 255), self.value_range)
        y = y.transpose(0, 3, 1, 2) if first else y
        y = Tensor(y.astype(dtype))
        return y[0] if single else y

    def _clahe(self, a):
        xp = backend.get_array_module(a)
        n, h, w, c = a.shape
        gh, gw = (int(g) for g in self.tile_grid_size)
        th, tw = -(-h // gh), -(-w // gw)
        hp, wp = th * gh, tw * gw
        if hp != h or wp != w:
            a = xp.pad(a, ((0, 0), (0, hp - h), (0, wp - w), (0, 0)), mode="edge")
        levels = xp.clip(xp.clip(a, -1, 256).astype(np.int32), 0, 255)          # (N, Hp, Wp, C)
        tiles = levels.reshape(n, gh, th, gw, tw, c)
        base = (((xp.arange(n).reshape(n, 1, 1, 1, 1, 1) * gh + xp.arange(gh).reshape(1, gh, 1, 1, 1, 1)) * gw
                 + xp.arange(gw).reshape(1, 1, 1, gw, 1, 1)) * c + xp.arange(c).reshape(1, 1, 1, 1, 1, c)) * 256
        hist = xp.bincount((base + tiles).reshape(-1), minlength=n * gh * gw * c * 256)
        hist = hist.reshape(n, gh, gw, c, 256)
        count = th * tw
        if self.clip_limit > 0:   # integer counts, so the limit is truncated (Keras's torch backend counts in int64)
            limit = int(self.clip_limit * count / 256.0)
            clipped = xp.clip(hist, 0, limit)
            hist = clipped + (hist - clipped).sum(axis=-1, keepdims=True).astype(_F32) / _F32(256.0)
        hist = hist.astype(_F32)
        cdf = xp.cumsum(hist.astype(np.float64), axis=-1).astype(_F32)          # torch's CPU cumsum adds in double
        cdf_min = cdf.min(axis=-1, keepdims=True)
        denom = _F32(count) - cdf_min
        denom = xp.where(denom == 0, _F32(1), denom)
        lut = xp.clip((cdf - cdf_min) * _F32(255.0) / denom, 0, 255)            # (N, gh, gw, C, 256)
        lut = xp.concatenate([lut[:, :1], lut, lut[:, -1:]], axis=1)
        lut = xp.concatenate([lut[:, :, :1], lut, lut[:, :, -1:]], axis=2)       # (N, gh + 2, gw + 2, C, 256)

        def grid(size, tile, count_):
            g = (xp.arange(size, dtype=_F32) - _F32(tile / 2.0)) / _F32(tile) + _F32(1.0)
            g0 = xp.floor(g)
            return (xp.clip(g0, 0, count_ + 1).astype(np.int64), xp.clip(g0 + 1, 0, count_ + 1).astype(np.int64),
                    g - g0)
        y0, y1, wy = grid(hp, th, gh)
        x0, x1, wx = grid(wp, tw, gw)
        pix = xp.clip(xp.clip(a, -1, 256), 0, 255).astype(np.int64)
        b = xp.arange(n).reshape(n, 1, 1, 1)
        ch = xp.arange(c).reshape(1, 1, 1, c)
        ya, yb = y0.reshape(1, hp, 1, 1), y1.reshape(1, hp, 1, 1)
        xa, xb = x0.reshape(1, 1, wp, 1), x1.reshape(1, 1, wp, 1)
        wx, wy = wx.reshape(1, 1, wp, 1), wy.reshape(1, hp, 1, 1)
        top = lut[b, ya, xa, ch, pix] * (_F32(1.0) - wx) + lut[b, ya, xb, ch, pix] * wx
        bottom = lut[b, yb, xa, ch, pix] * (_F32(1.0) - wx) + lut[b, yb, xb, ch, pix] * wx
        return (top * (_F32(1.0) - wy) + bottom * wy)[:, :h, :w, :]

    def get_config(self):
        return {**super().get_config(), "value_range": self.value_range, "clip_limit": self.clip_limit,
                "tile_grid_size": self.tile_grid_size}


# ----------------------------------------------------------------------------- bounding boxes
class MaxNumBoundingBoxes(_Augmentation):
    """Pads or truncates the boxes of {"images", "bounding_boxes": {"boxes", "labels"}} inputs to max_number
    per image, padding boxes and labels with fill_value (Keras's layer; like every Keras image layer it needs
    bounding_box_format to accept boxes). Images, and plain image inputs, pass unchanged. Runs at inference too.
    """

    _always = True
    _draw_when_none = False

    def __init__(self, max_number, fill_value=-1, **kwargs):
        super().__init__(**kwargs)
        self.max_number, self.fill_value = int(max_number), int(fill_value)

    def transform_images(self, images, transformation=None, training=True):
        return images if isinstance(images, Tensor) else self._convert_input(images)

    def transform_bounding_boxes(self, bounding_boxes, transformation=None, training=True):
        out = dict(bounding_boxes)
        k = self.max_number
        for key, width in (("boxes", 4), ("labels", None)):
            t = as_tensor(out[key])
            xp = backend.get_array_module(t.data)
            v = t.data[:, :k]
            pad = k - v.shape[1]
            if pad > 0:
                v = xp.concatenate([v, xp.full((v.shape[0], pad) + v.shape[2:], self.fill_value, v.dtype)], axis=1)
            out[key] = Tensor(v.reshape((v.shape[0], k, width) if width else (v.shape[0], k)))
        return out

    def compute_output_shape(self, input_shape):
        if isinstance(input_shape, dict) and "bounding_boxes" in input_shape:
            extra = set(input_shape["bounding_boxes"]) - {"boxes", "labels"}
            if extra:
                raise KeyError(f"There are unsupported keys in `bounding_boxes`: {sorted(extra)}. Only `boxes` and "
                               "`labels` are supported.")
            shape = dict(input_shape)
            boxes = dict(shape["bounding_boxes"])
            batched = len(boxes["boxes"]) == 3
            for key in ("boxes", "labels"):
                s = list(boxes[key])
                s[1 if batched else 0] = self.max_number
                boxes[key] = tuple(s)
            shape["bounding_boxes"] = boxes
            return shape
        return input_shape

    def get_config(self):
        return {**super().get_config(), "max_number": self.max_number, "fill_value": self.fill_value}
