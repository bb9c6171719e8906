"""Keras 3's image-preprocessing protocol (its BaseImagePreprocessingLayer), shared by every image augmentation and
resizing layer of lamina (preprocessing.py, preprocessing_extra.py, augmentation_color.py, augmentation_geometric.py).

A layer works in Keras's steps. ``get_random_transformation(data, training=True, seed=None)`` draws the parameters
for a batch: host arrays under Keras's keys (or Keras's tuple, or bare array, where Keras uses one), drawn from the
layer's own generator when it has a ``seed``, else from lamina's seeded one; an int ``seed`` draws the same values
each time. ``transform_images``, ``transform_labels``, ``transform_bounding_boxes`` and
``transform_segmentation_masks`` apply given parameters to a whole batch at once, so one draw can be replayed,
differentiated, or compared with Keras: a transformation that Keras drew (torch tensors) can be handed to lamina's
``transform_*`` as it is.

Calling the layer does both steps, on a batch (N, H, W, C), one image (H, W, C) ((N, C, H, W) with
``data_format='channels_first'``), or Keras's dict ``{"images", "labels", "bounding_boxes": {"boxes", "labels"},
"segmentation_masks"}``, returned as a new dict with the same keys. A single image's entries are transformed as a
batch of one, as Keras does. Boxes need the layer's ``bounding_box_format`` (one of keras.utils.bounding_boxes'
formats: xyxy, yxyx, xywh, center_xywh, center_yxhw and their rel_ forms); they are moved, clipped and converted on
the host in float32 with lamina.utils.bounding_boxes, in Keras's order of operations, and carry no gradient.
"""
import numbers

import numpy as np

from .. import backend, ops
from ..ops.image import _data_format
from ..tensor import Tensor, as_tensor, host_array
from .layer import Layer, _autocast_state

_F32 = np.float32


def _boxes_module():
    """lamina.utils.bounding_boxes (Keras's box formats). Imported on first use: lamina.utils' package imports
    layers (FeatureSpace), so it cannot load while lamina.layers does; the module itself needs only tensor."""
    from ..utils import bounding_boxes
    return bounding_boxes


def _to_batch(inputs):
    """(H, W, C) -> (1, H, W, C); returns the batched tensor and whether to unbatch at the end."""
    if inputs.ndim == 3:
        return ops.expand_dims(inputs, 0), True
    if inputs.ndim != 4:
        raise ValueError(f"Expected images of rank 3 (H, W, C) or 4 (N, H, W, C); received shape {inputs.shape}.")
    return inputs, False


def _keras_factor(factor, bounds=(-1, 1), name="factor"):
    """Keras's BaseImagePreprocessingLayer._set_factor: x -> (max(-|x|, low), |x|) with x inside bounds; a pair (a, b)
    -> sorted, refused only when it lies wholly outside them (a > high or b < low). Keras's message."""
    msg = (f"The `{name}` argument should be a number (or a list of two numbers) in the range "
           f"[{bounds[0]}, {bounds[1]}]. Received: factor={factor}")
    if isinstance(factor, (tuple, list)):
        if len(factor) != 2 or factor[0] > bounds[1] or factor[1] < bounds[0]:
            raise ValueError(msg)
        lo, hi = sorted(factor)
    elif isinstance(factor, numbers.Real) and not isinstance(factor, bool):
        if factor < bounds[0] or factor > bounds[1]:
            raise ValueError(msg)
        factor = abs(factor)
        lo, hi = max(-factor, bounds[0]), factor
    else:
        raise ValueError(msg)
    return lo, hi


def _checked_factor(factor, name, message, low, high, low_open=False, single=None):
    """The factor rule of Keras's translation, zoom, shear and solarization layers: every number in [low, high]
    ((low, high] with ``low_open``), a pair sorted, one number x -> ``single(x)`` (default (-|x|, |x|)); Keras's
    ValueError (``message`` followed by the offending number, or by the argument for a wrong type or length)."""
    def check(v):
        if not isinstance(v, numbers.Real) or isinstance(v, bool) or v > high or v < low or (low_open and v == low):
            raise ValueError(message + f"Received: input_number={v}")
    if isinstance(factor, (tuple, list)):
        if len(factor) != 2:
            raise ValueError(message + f"Received: {name}={factor}")
        check(factor[0])
        check(factor[1])
        return tuple(sorted(factor))
    if isinstance(factor, numbers.Real) and not isinstance(factor, bool):
        check(factor)
        return (-abs(factor), abs(factor)) if single is None else single(factor)
    raise ValueError(message + f"Received: {name}={factor}")


def _value_range(layer, value_range):
    """Keras's _set_value_range: two numbers, kept sorted."""
    if not isinstance(value_range, (tuple, list)) or len(value_range) != 2:
        raise ValueError(f"{type(layer).__name__} '{layer.name}': `value_range` must be a list of two numbers. "
                         f"Received: value_range={value_range!r}")
    return sorted(value_range)


def _float(layer, x):
    """x (an array or Tensor) as a Tensor in the layer's compute dtype, on the layer's device (as Keras casts);
    float images keep their dtype inside lamina.layers.layer.no_autocast() (float64 gradient checks)."""
    x = x if isinstance(x, Tensor) else Tensor(backend.to_device(np.asarray(x), layer._array_module()))
    if x.dtype == np.dtype(layer.compute_dtype) or (x.dtype.kind == "f" and getattr(_autocast_state, "off", False)):
        return x
    return ops.cast(x, layer.compute_dtype)


def _on(v, like, dtype=None, shape=None):
    """A transformation value (a host or device array, a Tensor, a number, a CPU torch tensor that Keras drew) as
    a constant Tensor on the device of the Tensor ``like``, in ``dtype`` and ``shape`` when given."""
    a = host_array(v)
    a = a if dtype is None else a.astype(dtype)
    a = a if shape is None else a.reshape(shape)
    return Tensor(backend.to_device(a, backend.get_array_module(like.data)))


def _squeeze0(x):
    """Drop a leading axis of size 1 (torch's squeeze(0), which leaves any other size alone)."""
    return x[0] if x.shape and x.shape[0] == 1 else x


# ----------------------------------------------------------------------------- shared numerics
def _keras_range(x, src, dst):
    """Keras's _transform_value_range in float32, in its order of operations: ((x - a) / (b - a)) * (d - c) + c.
    x: a Tensor (differentiable) or an array."""
    if src[0] == dst[0] and src[1] == dst[1]:
        return x
    a, b, c, d = (_F32(v) for v in (src[0], src[1], dst[0], dst[1]))
    return (x - a) / (b - a) * (d - c) + c


def _column(values, x):
    """(N,) host values -> an (N, 1, 1, 1) constant Tensor on x's device, in x's dtype."""
    xp = backend.get_array_module(x.data)
    v = np.asarray(backend.to_numpy(values.data if isinstance(values, Tensor) else values))
    return Tensor(xp.asarray(v.astype(x.dtype).reshape(-1, 1, 1, 1)))


def _brightness(x, rgb_delta, value_range):
    return ops.clip(x + _column(rgb_delta, x), value_range[0], value_range[1])


def _contrast(x, contrast_factor, value_range):
    mean = ops.mean(ops.mean(x, axis=1, keepdims=True), axis=2, keepdims=True)   # per image and channel
    return ops.clip((x - mean) * _column(contrast_factor, x) + mean, value_range[0], value_range[1])


class _RandomLayer(Layer):
    """A seeded generator for the random layers: the layer's own when it has a seed, else lamina's."""

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        self._gen = np.random.default_rng(seed) if seed is not None else None
        self.supports_masking = True

    def _rng(self):
        return self._gen if self._gen is not None else backend.rng()

    def compute_output_shape(self, input_shape):
        return input_shape


# ----------------------------------------------------------------------------- bounding boxes
def _check_boxes(layer, bounding_boxes):
    """Keras's validate_bounding_boxes and densify_bounding_boxes: a {'boxes', 'labels'} dict with boxes (B, 4) or
    (N, B, 4) and labels of rank 1-2 or 2-3 (Keras's ValueErrors); boxes become float32, labels keep their dtype."""
    if not isinstance(bounding_boxes, dict) or "boxes" not in bounding_boxes or "labels" not in bounding_boxes:
        raise ValueError(f"{type(layer).__name__} '{layer.name}': `bounding_boxes` must be a dict with keys 'boxes' "
                         f"and 'labels'. Received: bounding_boxes={bounding_boxes!r}")
    out = dict(bounding_boxes)
    boxes, labels = as_tensor(out["boxes"]), as_tensor(out["labels"])
    if boxes.ndim not in (2, 3):
        raise ValueError(f"{type(layer).__name__} '{layer.name}': bounding_boxes['boxes'] must have rank 2 or 3, "
                         f"(num_boxes, 4) or (batch_size, num_boxes, 4). Received shape {boxes.shape}")
    if labels.ndim not in ((1, 2) if boxes.ndim == 2 else (2, 3)):
        raise ValueError(f"{type(layer).__name__} '{layer.name}': bounding_boxes['labels'] has shape {labels.shape}, "
                         f"which does not go with boxes of shape {boxes.shape}.")
    out["boxes"] = boxes if boxes.dtype == np.float32 else Tensor(boxes.data.astype(np.float32))
    out["labels"] = labels
    return out


class _Boxes:
    """The host float32 boxes and labels of a {'boxes', 'labels'} dict, moved through Keras's box steps, and handed
    back as a new dict of Tensors (on the device the boxes came from) by ``result``."""

    def __init__(self, bounding_boxes):
        self.source = bounding_boxes
        self.boxes = host_array(bounding_boxes["boxes"]).astype(_F32)
        labels = bounding_boxes.get("labels")
        self.labels = None if labels is None else host_array(labels)
        raw = bounding_boxes["boxes"]
        on_device = isinstance(raw, Tensor) or backend.is_cupy_array(raw)
        self.xp = backend.get_array_module(raw.data if isinstance(raw, Tensor) else raw) if on_device else np

    def convert(self, source, target, height, width):
        self.boxes = _boxes_module()._convert(self.boxes, source, target, height, width)
        return self

    def clip(self, height, width, fmt="xyxy"):
        """keras.utils.bounding_boxes.clip_to_image_size: into the image, label -1 for a box left with no area."""
        clipped = _boxes_module().clip_to_image_size({"boxes": self.boxes, "labels": self.labels}, height=height,
                                                     width=width, bounding_box_format=fmt)
        self.boxes = host_array(clipped["boxes"])
        if self.labels is not None:
            self.labels = host_array(clipped["labels"])
        return self

    def result(self):
        out = dict(self.source)
        to = (lambda a: Tensor(backend.to_device(np.ascontiguousarray(a), self.xp)))
        out["boxes"] = to(self.boxes.astype(_F32, copy=False))
        if self.labels is not None:
            out["labels"] = to(self.labels)
        return out


# ----------------------------------------------------------------------------- the protocol
class _ImagePreprocessing(_RandomLayer):
    """Keras's BaseImagePreprocessingLayer: the draw / apply split, rank-3 images, data_format, and dict inputs.

    Subclasses define get_random_transformation and the transform_* they change; by default labels and
    segmentation masks pass unchanged and bounding boxes raise NotImplementedError (Keras's base does)."""

    def __init__(self, seed=None, data_format=None, bounding_box_format=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        self.data_format = _data_format(data_format)
        self.bounding_box_format = bounding_box_format

    # ----- draws
    def _generator(self, seed=None):
        """The NumPy Generator for a draw: the layer's (or lamina's) by default; an int seed draws the same values
        every time, as Keras's integer seeds; a Generator or SeedGenerator is used as given."""
        if seed is None:
            return self._rng()
        if isinstance(seed, np.random.Generator):
            return seed
        if hasattr(seed, "generator"):
            return seed.generator()
        return np.random.default_rng(int(seed))

    @staticmethod
    def _images_of(data):
        return data["images"] if isinstance(data, dict) else data

    def _shape_of(self, data):
        images = self._images_of(data)
        return tuple(images.shape) if hasattr(images, "shape") else np.shape(images)

    def _hw(self, shape):
        """(height, width) of an image shape (rank 3 or 4) in the layer's data_format."""
        return (shape[-3], shape[-2]) if self.data_format == "channels_last" else (shape[-2], shape[-1])

    def get_random_transformation(self, data, training=True, seed=None):
        return None

    # ----- the transforms (Keras's defaults)
    def transform_images(self, images, transformation=None, training=True):
        raise NotImplementedError

    def transform_labels(self, labels, transformation=None, training=True):
        return labels

    def transform_bounding_boxes(self, bounding_boxes, transformation=None, training=True):
        raise NotImplementedError(f"{type(self).__name__} does not transform bounding boxes (neither does Keras 3.15's "
                                  f"{type(self).__name__}).")

    def transform_segmentation_masks(self, segmentation_masks, transformation=None, training=True):
        return segmentation_masks

    # ----- calling
    @staticmethod
    def _rank(images):
        nd = len(images.shape)
        if nd not in (3, 4):
            raise ValueError("Expected image tensor to have rank 3 (single image) or 4 (batch of images). "
                             f"Received: data.shape={tuple(images.shape)}")
        return nd

    @staticmethod
    def _one(fn, value, transformation, training):
        """fn on a batch of one made from a single image's value, squeezed back (Keras's transform_single_*)."""
        return _squeeze0(fn(ops.expand_dims(as_tensor(value), 0), transformation, training=training))

    def call(self, inputs, training=True):
        if not isinstance(inputs, dict):
            single = self._rank(inputs) == 3
            transformation = self.get_random_transformation(inputs, training=training)
            if single:
                return self._one(self.transform_images, inputs, transformation, training)
            return self.transform_images(inputs, transformation, training=training)
        if "images" not in inputs:
            raise ValueError(f"{type(self).__name__} '{self.name}': a dict input needs an 'images' entry. "
                             f"Received keys: {sorted(inputs)}")
        single = self._rank(inputs["images"]) == 3
        transformation = self.get_random_transformation(inputs, training=training)
        out = dict(inputs)

        def apply(fn, value):
            return self._one(fn, value, transformation, training) if single else fn(value, transformation,
                                                                                   training=training)
        out["images"] = apply(self.transform_images, inputs["images"])
        if "bounding_boxes" in inputs:
            if not self.bounding_box_format:
                raise ValueError("You passed an input with a 'bounding_boxes' key, but you didn't specify a bounding "
                                 f"box format. Pass a `bounding_box_format` argument to your {type(self).__name__} "
                                 "layer, e.g. `bounding_box_format='xyxy'`.")
            boxes = _check_boxes(self, inputs["bounding_boxes"])
            if single:
                boxes = {k: (ops.expand_dims(v, 0) if k in ("boxes", "labels") else v) for k, v in boxes.items()}
            boxes = self.transform_bounding_boxes(boxes, transformation, training=training)
            if single:
                boxes = {k: (_squeeze0(v) if k in ("boxes", "labels") else v) for k, v in boxes.items()}
            out["bounding_boxes"] = boxes
        if "labels" in inputs:
            out["labels"] = apply(self.transform_labels, inputs["labels"])
        if "segmentation_masks" in inputs:
            out["segmentation_masks"] = apply(self.transform_segmentation_masks, inputs["segmentation_masks"])
        return out

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["data_format"] = self.data_format
        if self.bounding_box_format is None:
            config.pop("bounding_box_format", None)
        else:
            config["bounding_box_format"] = self.bounding_box_format
        return config


class _Augmentation(_ImagePreprocessing):
    """The colour layers' base: ``_draw(shape, rng)`` makes the transformation of a batch of images (shape in the
    layer's data_format), ``_transform(x, transformation)`` applies it to NHWC float images (channels_first images
    are transposed around it); labels, boxes and masks pass unchanged, as in Keras's colour layers."""

    _nhwc = True                 # transpose channels_first images to NHWC around _transform
    _always = False              # also applies at inference (training=False)
    _float_at_inference = False  # Keras casts the images to float even when it leaves them unchanged
    _draw_when_none = True       # transform_images(images, None) draws its own parameters

    def _images_shape(self, data):
        shape = self._shape_of(data)
        if len(shape) not in (3, 4):
            raise ValueError(f"{type(self).__name__} '{self.name}': expected images of rank 3 or 4. "
                             f"Received: images.shape={shape}")
        return shape if len(shape) == 4 else (1,) + shape

    def get_random_transformation(self, data, training=True, seed=None):
        """The per-image parameters for a batch of images (or a dict with 'images'): Keras's keys, or None for a
        deterministic layer or (for most layers) outside training."""
        if not training and not self._always:
            return None
        return self._draw(self._images_shape(data), self._generator(seed))

    def _draw(self, shape, rng):
        return None

    def transform_images(self, images, transformation=None, training=True):
        """Applies given parameters (from get_random_transformation) to a batch (or one image)."""
        x = images if isinstance(images, Tensor) else self._convert_input(images)
        if not (training or self._always):
            return ops.cast(x, self.compute_dtype) if self._float_at_inference and x.dtype != self.compute_dtype else x
        x, single = _to_batch(x)
        if not np.issubdtype(x.dtype, np.floating):
            x = ops.cast(x, self.compute_dtype)
        if transformation is None and self._draw_when_none:   # Keras's RandomColorJitter draws here
            transformation = self._draw(tuple(x.shape), self._rng())
        first = self._nhwc and self.data_format == "channels_first"
        if first:
            x = ops.transpose(x, (0, 2, 3, 1))
        y = self._transform(x, transformation)
        if first:
            y = ops.transpose(y, (0, 3, 1, 2))
        return y[0] if single else y

    def _transform(self, x, transformation):
        raise NotImplementedError

    def transform_bounding_boxes(self, bounding_boxes, transformation=None, training=True):
        return bounding_boxes


class _ImageAugmentation(_ImagePreprocessing):
    """The geometric and mixing layers' base: ``_transform(images, transformation, interpolation)`` works on batched
    images in the layer's data_format; transform_images casts them to the compute dtype (as Keras's base does, even
    at inference, unless _ALWAYS_CAST is off) and applies the transformation with training=True; segmentation masks
    go through _transform with 'nearest' interpolation (Keras's base)."""

    _ALWAYS_CAST = True      # Keras's base transform_images casts to the compute dtype even at inference

    def __init__(self, seed=None, data_format=None, bounding_box_format=None, **kwargs):
        super().__init__(seed=seed, data_format=data_format, bounding_box_format=bounding_box_format, **kwargs)
        self.interpolation = getattr(self, "interpolation", "bilinear")

    def _draw_which(self, data, seed):
        """(images, height, width, generator, which images to transform): each image is transformed with a
        probability drawn in the factor range, as Keras's perspective and elastic layers draw it."""
        shape = self._shape_of(data)
        n = 1 if len(shape) == 3 else shape[0]
        h, w = self._hw(shape)
        rng = self._generator(seed)
        probability = rng.uniform(self.factor[0], self.factor[1], n)
        return n, h, w, rng, rng.uniform(0.0, 1.0, n) < probability

    def _transform(self, images, transformation, interpolation):
        raise NotImplementedError

    def _batched(self, fn, images, *args):
        """fn on a batch; a single image is expanded to a batch of one and squeezed back."""
        if images.ndim == 3:
            return fn(ops.expand_dims(images, 0), *args)[0]
        return fn(images, *args)

    def transform_images(self, images, transformation=None, training=True):
        x = _float(self, images) if (self._ALWAYS_CAST or training) else images
        if training and transformation is not None:
            x = self._batched(self._transform, x, transformation, self.interpolation)
        return x

    def transform_segmentation_masks(self, segmentation_masks, transformation=None, training=True):
        if training and transformation is not None:
            masks = as_tensor(segmentation_masks)
            return self._batched(self._transform, masks, transformation, "nearest")
        return segmentation_masks
