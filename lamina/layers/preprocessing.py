"""Preprocessing layers used inside Keras pipelines: Normalization, Rescaling, Resizing, CenterCrop, and
the augmentation layers RandomFlip, RandomRotation, RandomTranslation, RandomZoom, RandomContrast.

The image layers follow Keras 3.15's image-preprocessing protocol (lamina/layers/image_preprocessing.py):
get_random_transformation draws Keras's transformation, transform_images / transform_labels /
transform_bounding_boxes / transform_segmentation_masks apply it, and a call takes a batch (N, H, W, C), one image
(H, W, C) (channels_first with data_format) or Keras's dict {"images", "labels", "bounding_boxes",
"segmentation_masks"}; boxes need bounding_box_format. Augmentation runs only when the layer is called with
``training=True`` (fit does); at inference the images pass unchanged (cast to float, as Keras). Random draws come
from lamina's seeded generator (``lamina.utils.set_random_seed``), or from the layer's own generator when a
``seed`` is given. Geometric augmentations build one affine map per image and resample the whole batch at once (no
loop over images); resizing is two small interpolation matrices applied as GEMMs, so both are differentiable with
plain matrix backward passes.
"""
import math

import numpy as np

from .. import backend, ops
from ..ops import image as image_ops
from ..ops.image import _INTERPOLATIONS, _RESIZE_METHODS
from ..tensor import Tensor, host_array
from .image_preprocessing import (_Augmentation, _Boxes, _boxes_module, _contrast, _float, _ImageAugmentation,
                                  _checked_factor, _keras_factor, _on)
from .layer import InputSpec, Layer

_EPS = 1e-7
# the resampling kernels under the names lamina's tests and older code use (lamina.layers.preprocessing.resize ...)
resize, affine_transform = image_ops._resize, image_ops._affine_transform


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
        config["axis"] = self.axis   # (a tuple, as Keras writes it: (-1,) for axis=-1)
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


def _check_choice(layer, arg, value, valid):
    if value not in valid:
        raise ValueError(f"{type(layer).__name__} '{layer.name}': unknown {arg} {value!r}. "
                         f"Valid: {', '.join(repr(v) for v in valid)}.")


def _crop_box(h, w, th, tw):
    """Keras's centred crop to the target aspect ratio: (top, left, height, width)."""
    ch = max(min(h, int(float(w * th) / tw)), 1)
    cw = max(min(w, int(float(h * tw) / th)), 1)
    return int(float(h - ch) / 2), int(float(w - cw) / 2), ch, cw


def _sized_shape(layer, input_shape):
    """input_shape with its height and width axes (rank 3 or 4, in the layer's data_format) set to the layer's."""
    shape = list(input_shape)
    h_axis, w_axis = (-3, -2) if layer.data_format == "channels_last" else (-2, -1)
    shape[h_axis], shape[w_axis] = layer.height, layer.width
    return tuple(shape)


class Resizing(_ImageAugmentation):
    """Resize images to (height, width) with Keras's ``keras.ops.image.resize`` (half-pixel centres; 'bilinear',
    'nearest', 'bicubic', ... with ``antialias`` as Keras's). ``crop_to_aspect_ratio`` first crops the largest
    centred window of the target aspect ratio; ``pad_to_aspect_ratio`` pads the image with fill_value to it. Runs at
    inference too; integer images come back in their dtype, rounded (as Keras). Segmentation masks are resized with
    'nearest'. Bounding boxes are scaled (and shifted by the crop or the padding) as Keras 3.15 does, clipped to
    the output (label -1 for a box left with no area); all-0 and all-(-1) boxes (padding) come back as zeros.

    Input (N, H, W, C) or (H, W, C) ((N, C, H, W) with data_format='channels_first') -> height x width.
    Transformation (Keras's): the input's (height, width). Backward: the transposed interpolation matrices.
    """

    def __init__(self, height, width, interpolation="bilinear", crop_to_aspect_ratio=False, pad_to_aspect_ratio=False,
                 fill_mode="constant", fill_value=0.0, antialias=False, data_format=None, **kwargs):
        super().__init__(data_format=data_format, **kwargs)
        _check_choice(self, "interpolation", interpolation, _RESIZE_METHODS)
        if pad_to_aspect_ratio and crop_to_aspect_ratio:
            raise ValueError(f"Resizing '{self.name}': only one of crop_to_aspect_ratio and pad_to_aspect_ratio.")
        self.height, self.width = int(height), int(width)
        self.interpolation, self.crop_to_aspect_ratio = interpolation, bool(crop_to_aspect_ratio)
        self.pad_to_aspect_ratio, self.fill_mode, self.fill_value = bool(pad_to_aspect_ratio), fill_mode, fill_value
        self.antialias = bool(antialias)

    def get_random_transformation(self, data, training=True, seed=None):
        return self._hw(self._shape_of(data))

    def _resize(self, images, interpolation):
        x = images if isinstance(images, Tensor) else self._convert_input(images)
        return image_ops.resize(x, (self.height, self.width), interpolation=interpolation, antialias=self.antialias,
                                crop_to_aspect_ratio=self.crop_to_aspect_ratio,
                                pad_to_aspect_ratio=self.pad_to_aspect_ratio, fill_mode=self.fill_mode,
                                fill_value=self.fill_value, data_format=self.data_format)

    def transform_images(self, images, transformation=None, training=True):
        return self._resize(images, self.interpolation)

    def transform_segmentation_masks(self, segmentation_masks, transformation=None, training=True):
        return self._resize(segmentation_masks, "nearest")

    def transform_bounding_boxes(self, bounding_boxes, transformation=None, training=True):
        h, w = (int(v) for v in transformation)
        b = _Boxes(bounding_boxes)
        padding = np.all(b.boxes == -1, axis=-1) | np.all(b.boxes == 0, axis=-1)
        b.convert(self.bounding_box_format, "xyxy", h, w)
        f, (th, tw) = np.float32, (self.height, self.width)
        h32, w32 = f(h), f(w)                      # (Keras computes in the boxes' float32 from here)
        if self.pad_to_aspect_ratio:
            scale_x = scale_y = np.minimum(f(th) / h32, f(tw) / w32)
            left, top = (f(tw) - w32 * scale_x) // f(2), (f(th) - h32 * scale_y) // f(2)
            shift = 1                               # the padding moves the boxes right and down
        elif self.crop_to_aspect_ratio:
            source = w32 / h32
            wider = source > f(tw / th)
            new_w = f(th) * source if wider else f(tw)
            new_h = f(th) if wider else f(tw) / source
            scale_x, scale_y = new_w / w32, new_h / h32
            left, top = (new_w - f(tw)) // f(2), (new_h - f(th)) // f(2)
            shift = -1                              # the crop moves them left and up
        else:
            scale_x, scale_y, left, top, shift = f(tw) / w32, f(th) / h32, f(0), f(0), 1
        x1, y1, x2, y2 = (b.boxes[..., k] for k in range(4))
        if shift > 0:
            b.boxes = np.stack([x1 * scale_x + left, y1 * scale_y + top, x2 * scale_x + left, y2 * scale_y + top], -1)
        else:
            b.boxes = np.stack([x1 * scale_x - left, y1 * scale_y - top, x2 * scale_x - left, y2 * scale_y - top], -1)
        b.clip(th, tw)
        b.boxes = np.where(padding[..., None], f(0), b.boxes)
        return b.convert("xyxy", self.bounding_box_format, th, tw).result()

    def compute_output_shape(self, input_shape):
        return _sized_shape(self, input_shape)


class CenterCrop(_ImageAugmentation):
    """Crop the central (height, width) window of each image; an image smaller than the target on either axis is
    first cropped to the target aspect ratio and resized to it (Keras's smart_resize). Runs at inference too (as
    Keras); the output is in the compute dtype. Masks are cropped as the images; boxes are clipped to the window
    and moved into it (scaled with the resize), then clipped to the output, as Keras 3.15 does.

    Input (N, H, W, C) or (H, W, C) -> height x width. Transformation (Keras's): {'input_shape'}.
    """

    def __init__(self, height, width, data_format=None, **kwargs):
        super().__init__(data_format=data_format, **kwargs)
        self.height, self.width = int(height), int(width)

    def get_random_transformation(self, data, training=True, seed=None):
        return {"input_shape": self._shape_of(data)}

    def transform_images(self, images, transformation=None, training=True):
        x = _float(self, images)
        h, w = self._hw(x.shape)
        if h >= self.height and w >= self.width:
            top, left = (h - self.height) // 2, (w - self.width) // 2
            rows, cols = slice(top, top + self.height), slice(left, left + self.width)
            index = (Ellipsis, rows, cols, slice(None)) if self.data_format == "channels_last" else (
                Ellipsis, rows, cols)
            return x[index]
        return image_ops.resize(x, (self.height, self.width), crop_to_aspect_ratio=True, data_format=self.data_format)

    def transform_segmentation_masks(self, segmentation_masks, transformation=None, training=True):
        return self.transform_images(segmentation_masks, transformation, training)

    def transform_bounding_boxes(self, bounding_boxes, transformation=None, training=True):
        h, w = (int(v) for v in self._hw(transformation["input_shape"]))
        b = _Boxes(bounding_boxes).convert(self.bounding_box_format, "xyxy", h, w)
        fits = h >= self.height and w >= self.width
        if fits:
            top, left = int((h - self.height) / 2), int((w - self.width) / 2)
            ch, cw = self.height, self.width
        else:
            top, left, ch, cw = _crop_box(h, w, self.height, self.width)
        lo = np.array([left, top, left, top], np.float32)
        hi = np.array([left + cw, top + ch, left + cw, top + ch], np.float32)
        b.boxes = np.clip(b.boxes, lo, hi) - lo
        if not fits:   # the crop is resized to the output: the boxes scale with it
            b.convert("xyxy", "rel_xyxy", ch, cw).convert("rel_xyxy", "xyxy", self.height, self.width)
        b.clip(self.height, self.width)
        return b.convert("xyxy", self.bounding_box_format, self.height, self.width).result()

    def compute_output_shape(self, input_shape):
        return _sized_shape(self, input_shape)


# ---------------------------------------------------------------- augmentation
class RandomFlip(_ImageAugmentation):
    """Flip each image left-right and/or up-down with probability 1/2 (Keras's draw: one coin per image, used for
    both directions with mode='horizontal_and_vertical'). Masks are flipped with the images; boxes are flipped on
    the relative scale, as Keras 3.15 does.

    Args: mode='horizontal_and_vertical' | 'horizontal' | 'vertical', seed=None, data_format=None,
    bounding_box_format=None. Transformation (Keras's): {'flips': (N, 1, 1, 1) bool, 'input_shape'}.
    """

    def __init__(self, mode="horizontal_and_vertical", seed=None, data_format=None, **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        _check_choice(self, "mode", mode, ("horizontal", "vertical", "horizontal_and_vertical"))
        self.mode = mode

    def _directions(self):
        return (self.mode != "vertical", self.mode != "horizontal")   # (horizontal, vertical)

    def get_random_transformation(self, data, training=True, seed=None):
        if not training:
            return None
        shape = self._shape_of(data)
        flips = self._generator(seed).uniform(size=(1, 1, 1) if len(shape) == 3 else (shape[0], 1, 1, 1))
        return {"flips": flips.astype(np.float32) <= 0.5, "input_shape": shape}

    def _transform(self, images, transformation, interpolation):
        flips = _on(transformation["flips"], images, bool, (-1, 1, 1, 1))
        h_axis, w_axis = (1, 2) if self.data_format == "channels_last" else (2, 3)
        horizontal, vertical = self._directions()
        for axis, on in ((w_axis, horizontal), (h_axis, vertical)):
            if on:
                index = [slice(None)] * 4
                index[axis] = slice(None, None, -1)
                images = ops.where(flips, images[tuple(index)], images)
        return images

    def transform_segmentation_masks(self, segmentation_masks, transformation=None, training=True):
        return self.transform_images(segmentation_masks, transformation, training)

    def transform_bounding_boxes(self, bounding_boxes, transformation=None, training=True):
        if not training or transformation is None:
            return bounding_boxes
        h, w = self._hw(transformation["input_shape"])
        b = _Boxes(bounding_boxes).convert(self.bounding_box_format, "rel_xyxy", h, w)
        flips = host_array(transformation["flips"]).astype(bool).reshape(-1, 1, 1)
        one = np.float32(1)
        horizontal, vertical = self._directions()
        x1, y1, x2, y2 = (b.boxes[..., k:k + 1] for k in range(4))
        if horizontal:
            b.boxes = np.where(flips, np.concatenate([one - x2, y1, one - x1, y2], axis=-1), b.boxes)
            x1, y1, x2, y2 = (b.boxes[..., k:k + 1] for k in range(4))
        if vertical:
            b.boxes = np.where(flips, np.concatenate([x1, one - y2, x2, one - y1], axis=-1), b.boxes)
        # Keras clips these relative boxes to the image's pixel size (which leaves them as they are but at
        # negative values, and sets the label of a box with no area to -1)
        return b.clip(h, w, "xyxy").convert("rel_xyxy", self.bounding_box_format, h, w).result()

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "seed": self.seed}


_AFFINE_FILL_MODES = ("reflect", "wrap", "constant", "nearest")


class _AffineLayer(_ImageAugmentation):
    """Rotation, translation and zoom: one projective transform per image (Keras's 8 numbers), resampled by
    lamina.ops.image.affine_transform (differentiable with respect to the images); masks with 'nearest'."""

    def __init__(self, fill_mode="reflect", interpolation="bilinear", seed=None, fill_value=0.0, data_format=None,
                 **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        _check_choice(self, "fill_mode", fill_mode, _AFFINE_FILL_MODES)
        _check_choice(self, "interpolation", interpolation, _INTERPOLATIONS)
        self.fill_mode, self.interpolation, self.fill_value = fill_mode, interpolation, fill_value

    def _transform(self, images, transformation, interpolation):
        return image_ops.affine_transform(images, _on(self._matrix(transformation, images.shape), images),
                                          interpolation=interpolation, fill_mode=self.fill_mode,
                                          fill_value=self.fill_value, data_format=self.data_format)

    def _shape_info(self, data):
        shape = self._shape_of(data)
        return shape, (1 if len(shape) == 3 else shape[0]), self._hw(shape)

    def get_config(self):
        return {**super().get_config(), "fill_mode": self.fill_mode, "interpolation": self.interpolation,
                "seed": self.seed, "fill_value": self.fill_value}


def _rotation_matrix(angle, height, width):
    """Keras's _compute_affine_matrix of a rotation by ``angle`` degrees (N,) about the image centre, float32 in
    its order of operations: (N, 8) transforms mapping output pixels to input pixels."""
    f = np.float32
    theta = host_array(angle).astype(f).reshape(-1) * f(math.pi / 180.0)
    cx, cy = f(0.5) * (f(width) - f(1)), f(0.5) * (f(height) - f(1))
    cos, sin = np.cos(theta), np.sin(theta)
    zero = np.zeros_like(theta)
    a2 = (zero + cx) - cx * cos - cy * (-sin)
    b2 = (zero + cy) - cx * sin - cy * cos
    return np.stack([cos, -sin, a2, sin, cos, b2, zero, zero], axis=1)


class RandomRotation(_AffineLayer):
    """Rotate each image by a random angle about its centre: angle ~ U(factor) * 360 degrees per image (Keras's
    draw). Boxes: their corners through the inverse rotation (keras.utils.bounding_boxes.affine_transform), then
    clipped to the image; as in Keras 3.15 they are read as xyxy and written in bounding_box_format.

    Args: factor: a fraction of a full turn, x -> [-x, x], or (lower, upper), in [-1, 1]; fill_mode='reflect'
    ('wrap', 'constant', 'nearest'), interpolation='bilinear' | 'nearest', seed, fill_value=0.0 (for 'constant'),
    data_format=None, bounding_box_format=None. Transformation (Keras's): {'angle', 'rotation_matrix',
    'image_height', 'image_width', 'batch_size'}.
    """

    def __init__(self, factor, fill_mode="reflect", interpolation="bilinear", seed=None, fill_value=0.0,
                 value_range=(0, 255), data_format=None, **kwargs):
        super().__init__(fill_mode=fill_mode, interpolation=interpolation, seed=seed, fill_value=fill_value,
                         data_format=data_format, **kwargs)
        self.factor = _keras_factor(factor)

    def get_random_transformation(self, data, training=True, seed=None):
        if not training:
            return None
        shape, n, (h, w) = self._shape_info(data)
        angle = self._generator(seed).uniform(self.factor[0] * 360.0, self.factor[1] * 360.0, n).astype(np.float32)
        matrix = _rotation_matrix(angle, h, w)
        return {"angle": angle, "rotation_matrix": matrix[0] if len(shape) == 3 else matrix, "image_height": h,
                "image_width": w, "batch_size": n}

    def _matrix(self, transformation, shape):
        return host_array(transformation["rotation_matrix"]).astype(np.float32)

    def transform_bounding_boxes(self, bounding_boxes, transformation=None, training=True):
        if not training or transformation is None:
            return bounding_boxes
        h, w = int(transformation["image_height"]), int(transformation["image_width"])
        n = int(transformation["batch_size"])
        b = _Boxes(bounding_boxes)
        zeros, ones = np.zeros(n, np.float32), np.ones(n, np.float32)
        b.boxes = host_array(_boxes_module().affine_transform(
            b.boxes, host_array(transformation["angle"]).astype(np.float32), zeros, zeros, ones, zeros, zeros, h, w))
        return b.clip(h, w).convert("xyxy", self.bounding_box_format, h, w).result()

    def get_config(self):
        config = super().get_config()
        config.pop("value_range", None)   # (accepted for older Keras code; Keras 3.15 has none)
        return {**config, "factor": self.factor}


def _check_shift_factor(factor, name, low_open=False):
    """Keras's RandomTranslation / RandomZoom factor rule: numbers in [-1, 1] ((-1, 1] for a zoom); x -> (-|x|, |x|);
    a pair sorted."""
    what = ("The `height_factor` and `width_factor` arguments should be a number (or a list of two numbers) in the "
            "range (-1.0, 1.0]. ") if low_open else ("The `factor` argument should be a number (or a list of two "
                                                     "numbers) in the range [-1.0, 1.0]. ")
    return _checked_factor(factor, name, what, -1.0, 1.0, low_open)


class RandomTranslation(_AffineLayer):
    """Shift each image by dy ~ U(height_factor) * H, dx ~ U(width_factor) * W pixels (Keras's draw, height first).
    Boxes are shifted by (dx, dy) and clipped to the image (label -1 for a box left with no area).

    Args: height_factor, width_factor: x -> [-x, x], or (lower, upper), in [-1, 1]; fill_mode='reflect',
    interpolation='bilinear', seed, fill_value=0.0, data_format=None, bounding_box_format=None.
    Transformation (Keras's): {'translations': (N, 2) float32 (dx, dy), 'input_shape'}.
    """

    def __init__(self, height_factor, width_factor, fill_mode="reflect", interpolation="bilinear", seed=None,
                 fill_value=0.0, data_format=None, **kwargs):
        super().__init__(fill_mode=fill_mode, interpolation=interpolation, seed=seed, fill_value=fill_value,
                         data_format=data_format, **kwargs)
        self.height_factor, self.width_factor = height_factor, width_factor
        self.height_lower, self.height_upper = _check_shift_factor(height_factor, "height_factor")
        self.width_lower, self.width_upper = _check_shift_factor(width_factor, "width_factor")

    def get_random_transformation(self, data, training=True, seed=None):
        if not training:
            return None
        shape, n, (h, w) = self._shape_info(data)
        rng = self._generator(seed)
        dy = rng.uniform(self.height_lower, self.height_upper, (n, 1)).astype(np.float32) * np.float32(h)
        dx = rng.uniform(self.width_lower, self.width_upper, (n, 1)).astype(np.float32) * np.float32(w)
        return {"translations": np.concatenate([dx, dy], axis=1), "input_shape": shape}

    def _matrix(self, transformation, shape):
        t = host_array(transformation["translations"]).astype(np.float32).reshape(-1, 2)
        one, zero = np.ones(len(t), np.float32), np.zeros(len(t), np.float32)
        return np.stack([one, zero, -t[:, 0], zero, one, -t[:, 1], zero, zero], axis=1)

    def transform_bounding_boxes(self, bounding_boxes, transformation=None, training=True):
        if not training or transformation is None:
            return bounding_boxes
        h, w = self._hw(transformation["input_shape"])
        b = _Boxes(bounding_boxes).convert(self.bounding_box_format, "xyxy", h, w)
        m = self._matrix(transformation, None)
        shift = np.stack([m[:, 2], m[:, 5], m[:, 2], m[:, 5]], axis=-1)[:, None, :]   # (N, 1, 4): -dx, -dy
        b.boxes = b.boxes - shift
        return b.clip(h, w).convert("xyxy", self.bounding_box_format, h, w).result()

    def get_config(self):
        return {**super().get_config(), "height_factor": self.height_factor, "width_factor": self.width_factor}


class RandomZoom(_AffineLayer):
    """Zoom each image about its centre by z ~ 1 + U(height_factor) (and 1 + U(width_factor), or the same z when it
    is None): a positive factor zooms out (the image shrinks), a negative one zooms in. Boxes are clipped to the
    part of the image that stays in view, rescaled to the output, and clipped to it, as Keras 3.15 does.

    Args: height_factor: x -> [-x, x], or (lower, upper), in (-1, 1]; width_factor=None; fill_mode='reflect',
    interpolation='bilinear', seed, fill_value=0.0, data_format=None, bounding_box_format=None.
    Transformation (Keras's): {'height_zoom': (N, 1), 'width_zoom': (N, 1), 'input_shape'}.
    """

    def __init__(self, height_factor, width_factor=None, fill_mode="reflect", interpolation="bilinear", seed=None,
                 fill_value=0.0, data_format=None, **kwargs):
        super().__init__(fill_mode=fill_mode, interpolation=interpolation, seed=seed, fill_value=fill_value,
                         data_format=data_format, **kwargs)
        self.height_factor, self.width_factor = height_factor, width_factor
        self.height_lower, self.height_upper = _check_shift_factor(height_factor, "height_factor", low_open=True)
        if width_factor is not None:
            self.width_lower, self.width_upper = _check_shift_factor(width_factor, "width_factor", low_open=True)

    def get_random_transformation(self, data, training=True, seed=None):
        if not training:
            return None
        shape, n, _ = self._shape_info(data)
        rng = self._generator(seed)
        zy = rng.uniform(1.0 + self.height_lower, 1.0 + self.height_upper, (n, 1)).astype(np.float32)
        zx = zy if self.width_factor is None else rng.uniform(1.0 + self.width_lower, 1.0 + self.width_upper,
                                                              (n, 1)).astype(np.float32)
        return {"height_zoom": zy, "width_zoom": zx, "input_shape": shape}

    @staticmethod
    def _zoom_matrix(transformation, h, w):
        f = np.float32
        zx = host_array(transformation["width_zoom"]).astype(f).reshape(-1, 1)
        zy = host_array(transformation["height_zoom"]).astype(f).reshape(-1, 1)
        zero = np.zeros_like(zx)
        x_off = ((f(w) - f(1)) / f(2)) * (f(1) - zx)
        y_off = ((f(h) - f(1)) / f(2)) * (f(1) - zy)
        return np.concatenate([zx, zero, x_off, zero, zy, y_off, zero, zero], axis=1)

    def _matrix(self, transformation, shape):
        h, w = self._hw(shape)
        return self._zoom_matrix(transformation, h, w)

    def transform_bounding_boxes(self, bounding_boxes, transformation=None, training=True):
        if not training or transformation is None:
            return bounding_boxes
        h, w = self._hw(transformation["input_shape"])
        b = _Boxes(bounding_boxes).convert(self.bounding_box_format, "xyxy", h, w)
        m = self._zoom_matrix(transformation, h, w)[:, :, None]                 # (N, 8, 1) against boxes (N, B)
        f = np.float32
        x0, y0 = m[:, 2], m[:, 5]                                              # where (0, 0) reads
        x1, y1 = m[:, 0] * f(w) + m[:, 1] * f(h) + m[:, 2], m[:, 3] * f(w) + m[:, 4] * f(h) + m[:, 5]
        lo, hi = np.stack([x0, y0, x0, y0], axis=-1), np.stack([x1, y1, x1, y1], axis=-1)
        b.boxes = np.clip(b.boxes, lo, hi) - lo
        b.convert("xyxy", "rel_xyxy", (y1 - y0)[..., None], (x1 - x0)[..., None])
        return b.clip(None, None, "rel_xyxy").convert("rel_xyxy", self.bounding_box_format, h, w).result()

    def get_config(self):
        return {**super().get_config(), "height_factor": self.height_factor, "width_factor": self.width_factor}


class RandomContrast(_Augmentation):
    """Scale each image's deviation from its per-channel mean by c ~ U(1 - lower, 1 + upper), then clip to
    value_range: ``clip((x - mean) c + mean, *value_range)`` (Keras's draw: factor f means (0, f), so c in
    [1, 1 + f]; a pair (lower, upper) in [0, 1] gives [1 - lower, 1 + upper]).

    Args: factor, value_range=(0, 255), seed, data_format=None. Transformation (Keras's): {'contrast_factor':
    (N, 1, 1, 1)}.
    """

    def __init__(self, factor, value_range=(0, 255), seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.factor = _keras_factor(factor, (0, 1))
        self.value_range = value_range

    def _draw(self, shape, rng):
        lo, hi = self.factor
        return {"contrast_factor": rng.uniform(1.0 - lo, 1.0 + hi, (shape[0], 1, 1, 1)).astype(np.float32)}

    def _transform(self, x, t):
        return _contrast(x, t["contrast_factor"], self.value_range)

    def get_config(self):
        return {**super().get_config(), "factor": self.factor, "value_range": self.value_range, "seed": self.seed}


__all__ = ["Normalization", "Rescaling", "Resizing", "CenterCrop", "RandomFlip", "RandomRotation",
           "RandomTranslation", "RandomZoom", "RandomContrast"]
