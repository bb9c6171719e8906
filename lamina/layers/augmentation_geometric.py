"""Keras 3's mixing and geometric augmentation layers: MixUp, CutMix, RandomShear, RandomPerspective,
RandomElasticTransform, and the policies AugMix and RandAugment, which compose lamina's other augmentation
layers.

Each layer works in Keras's two steps (its BaseImagePreprocessingLayer):
``get_random_transformation(data, training=True, seed=None)`` draws the parameters for a batch and returns
them as a dict of host arrays under Keras's keys; ``transform_images(images, transformation,
training=True)`` (and ``transform_labels``, ``transform_segmentation_masks``) applies given parameters to
the whole batch at once. A transformation drawn by Keras can be handed to lamina's ``transform_*`` as it is
(its arrays are read with ``np.asarray``), which is how the tests compare the two.

Calling the layer does both steps (lamina/layers/image_preprocessing.py). It takes a batch (N, H, W, C), one image
(H, W, C), or Keras's dict ``{"images", "labels", "bounding_boxes", "segmentation_masks"}`` (returned as a new dict
with the same keys); RandomShear, RandomPerspective, MixUp and RandAugment move bounding boxes as Keras 3.15 does,
AugMix passes them, CutMix and RandomElasticTransform refuse them (NotImplementedError), as Keras.
As in Keras, ``training`` defaults to True when the layer is called directly; fit() passes True and
predict()/evaluate() pass False, where the images pass through (cast to float, as Keras does).
Random draws come from the layer's own generator when a ``seed`` is given, else from lamina's seeded one.
"""
import numpy as np

from .. import backend, ops
from ..ops.image import _gauss1d, _homography, _sample_nhwc, affine_transform, perspective_transform
from ..tensor import Tensor, as_tensor, host_array
from .augmentation_color import Equalization, RandomSharpness
from .image_preprocessing import _Boxes, _ImageAugmentation, _checked_factor, _float, _keras_factor, _on
from .preprocessing import RandomContrast, RandomRotation, RandomTranslation
from .preprocessing_extra import (AutoContrast, RandomBrightness, RandomColorDegeneration, RandomPosterization,
                                  Solarization)

__all__ = ["MixUp", "CutMix", "RandomShear", "RandomPerspective", "RandomElasticTransform", "AugMix",
           "RandAugment"]

_INTERPOLATIONS = ("nearest", "bilinear")


# ----------------------------------------------------------------------------- helpers
# a NumPy array from a transformation value: a NumPy/CuPy array, a lamina Tensor, a number, or anything with
# __array__ (a CPU torch tensor that Keras drew)
_host = host_array


def _check_interpolation(interpolation, valid=_INTERPOLATIONS):
    if interpolation not in valid:
        raise NotImplementedError(f"Unknown `interpolation` {interpolation}. Expected of one {valid}.")


def _mix(weight, a, b, shape):
    """weight * a + (1 - weight) * b, weight (N,) reshaped to ``shape`` in a's dtype (Keras's order)."""
    w = ops.reshape(_on(weight, a, a.dtype), shape)
    return w * a + (1.0 - w) * b


def _mix_labels(layer, labels, transformation):
    """Labels (N, ...) mixed with their permutation by the transformation's mix_weight (integer labels in
    the layer's float dtype)."""
    labels = labels if isinstance(labels, Tensor) else Tensor(backend.to_device(np.asarray(labels),
                                                                                  layer._array_module()))
    if labels.dtype.kind != "f":
        labels = ops.cast(labels, layer.compute_dtype)
    perm = _host(transformation["permutation_order"]).astype(np.int64)
    return _mix(transformation["mix_weight"], labels, ops.take(labels, perm, axis=0),
                (-1,) + (1,) * (labels.ndim - 1))


# ----------------------------------------------------------------------------- MixUp, CutMix
class MixUp(_ImageAugmentation):
    """MixUp (Zhang et al. 2018): each image becomes w x_i + (1 - w) x_perm(i), w ~ Beta(alpha, alpha) per
    image and perm a random permutation of the batch; one-hot labels are mixed by the same weights.

    Args: alpha=0.2, data_format=None, seed=None. Call with a batch of images or with
    ``{"images": ..., "labels": ...}``. Transformation keys: mix_weight (N,), permutation_order (N,).
    Differentiable with respect to the images.
    """

    _ALWAYS_CAST = False     # Keras's MixUp returns the images untouched (not cast) at inference

    def __init__(self, alpha=0.2, data_format=None, seed=None, **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        self.alpha = alpha

    def get_random_transformation(self, data, training=True, seed=None):
        if not training:
            return None
        shape = self._images_of(data).shape
        n = 1 if len(shape) == 3 else shape[0]
        rng = self._generator(seed)
        permutation = rng.permutation(n).astype(np.int64)
        weight = rng.beta(self.alpha, self.alpha, n).astype(np.float32)
        return {"mix_weight": weight, "permutation_order": permutation}

    def _transform(self, images, transformation, interpolation):
        perm = _host(transformation["permutation_order"]).astype(np.int64)
        return _mix(transformation["mix_weight"], images, ops.take(images, perm, axis=0), (-1, 1, 1, 1))

    def transform_labels(self, labels, transformation, training=True):
        return _mix_labels(self, labels, transformation) if training and transformation is not None else labels

    def transform_segmentation_masks(self, segmentation_masks, transformation, training=True):
        """The masks mixed as the images (in float). Keras 3.15 takes the permuted masks from the flattened
        array (its ``take`` has no axis), which gives masks of another shape; lamina mixes whole masks."""
        if not training or transformation is None:
            return segmentation_masks
        m = _float(self, segmentation_masks)
        return self._batched(self._transform, m, transformation, "nearest")

    def transform_bounding_boxes(self, bounding_boxes, transformation, training=True):
        """Keras's: each image's boxes followed by those of the image it was mixed with, boxes (N, 2B, 4); the box
        labels are joined along the batch axis, (2N, B), as Keras 3.15 joins them. Only 'boxes' and 'labels' are
        returned (as Keras)."""
        if not training or transformation is None:
            return bounding_boxes
        perm = _host(transformation["permutation_order"]).astype(np.int64)
        boxes, labels = as_tensor(bounding_boxes["boxes"]), as_tensor(bounding_boxes["labels"])
        return {"boxes": ops.concatenate([boxes, ops.take(boxes, perm, axis=0)], axis=1),
                "labels": ops.concatenate([labels, ops.take(labels, perm, axis=0)], axis=0)}

    def get_config(self):
        config = super().get_config()
        config.update(alpha=self.alpha, seed=self.seed)
        return config


class CutMix(_ImageAugmentation):
    """CutMix (Yun et al. 2019): a box of each image is replaced by the same box of another image of the
    batch, and the labels are mixed by the area that stays: w = 1 - box area / image area.

    Keras's draws: alpha ~ U(factor) + 1e-6 for the batch, lambda ~ Beta(alpha, alpha) per image; the box
    has sides sqrt(1 - lambda) * (W, H) (real numbers) at a uniform position inside the image; a pixel is
    replaced when its integer (x, y) lies in [x0, x1) x [y0, y1). Single images pass unchanged.

    Args: factor=1.0 (f -> (0, f), or a pair, in [0, 1]), seed=None, data_format=None. Transformation
    keys: permutation_order (N,), batch_masks (the images' shape, bool), mix_weight (N,).
    """

    def __init__(self, factor=1.0, seed=None, data_format=None, **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        self.factor = _keras_factor(factor, (0, 1))

    def get_random_transformation(self, data, training=True, seed=None):
        if not training:
            return None
        shape = tuple(self._images_of(data).shape)
        if len(shape) == 3:
            return None
        n = shape[0]
        h, w = self._hw(shape)
        c = shape[-1] if self.data_format == "channels_last" else shape[1]
        rng = self._generator(seed)
        f32 = np.float32
        alpha = f32(rng.uniform(self.factor[0], self.factor[1])) + f32(1e-6)
        lam = rng.beta(alpha, alpha, n).astype(f32)
        ratio = np.sqrt(f32(1.0) - lam)

        def bounds(length):
            cut = (ratio * f32(length)).astype(f32)
            start = rng.uniform(0.0, 1.0, n).astype(f32) * (f32(length) - cut)
            return start, start + cut
        x0, x1 = bounds(w)
        y0, y1 = bounds(h)
        gy, gx = np.meshgrid(np.arange(h, dtype=f32), np.arange(w, dtype=f32), indexing="ij")
        box = lambda v: v[:, None, None]  # noqa: E731
        mask = (gx >= box(x0)) & (gx < box(x1)) & (gy >= box(y0)) & (gy < box(y1))       # (N, H, W)
        if self.data_format == "channels_last":
            mask = np.repeat(mask[..., None], c, axis=-1)
        else:
            mask = np.repeat(mask[:, None], c, axis=1)
        weight = (f32(1.0) - (x1 - x0) * (y1 - y0) / f32(w * h)).astype(f32)
        permutation = rng.permutation(n).astype(np.int32)
        return {"permutation_order": permutation, "batch_masks": mask, "mix_weight": weight}

    def _transform(self, images, transformation, interpolation):
        perm = _host(transformation["permutation_order"]).astype(np.int64)
        mask = _on(transformation["batch_masks"], images, bool)
        return ops.where(mask, ops.take(images, perm, axis=0), images)

    def transform_labels(self, labels, transformation, training=True):
        return _mix_labels(self, labels, transformation) if training and transformation is not None else labels

    def transform_segmentation_masks(self, segmentation_masks, transformation, training=True):
        return self.transform_images(segmentation_masks, transformation, training)

    def get_config(self):
        config = super().get_config()
        config.update(factor=list(self.factor), seed=self.seed)
        return config


# ----------------------------------------------------------------------------- geometric
class RandomShear(_ImageAugmentation):
    """Shears each image: the output pixel (x, y) reads the input at (x + s_x y, y + s_y x) (about the
    top-left corner, as Keras), with s_x ~ U(x_factor), s_y ~ U(y_factor) and both signs flipped together
    with probability 1/2. Resampled by lamina.ops.image.affine_transform (bilinear or nearest, fill_mode
    'reflect' | 'wrap' | 'constant' | 'nearest'), so it is differentiable with respect to the images.

    Args: x_factor=0.0, y_factor=0.0: f in [0, 1] -> (-f, f), or a pair of values in [0, 1];
    interpolation='bilinear', fill_mode='reflect', fill_value=0.0, data_format=None, seed=None.
    Transformation keys: shear_factor (N, 2) = (s_x, s_y), input_shape.
    """

    _FILL_MODES = ("reflect", "wrap", "constant", "nearest")
    _MSG = "The `factor` argument should be a number (or a list of two numbers) in the range [0, 1.0]. "

    def __init__(self, x_factor=0.0, y_factor=0.0, interpolation="bilinear", fill_mode="reflect", fill_value=0.0,
                 data_format=None, seed=None, **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        self.x_factor = self._factor(x_factor, "x_factor")
        self.y_factor = self._factor(y_factor, "y_factor")
        if fill_mode not in self._FILL_MODES:
            raise NotImplementedError(f"Unknown `fill_mode` {fill_mode}. Expected of one {self._FILL_MODES}.")
        _check_interpolation(interpolation)
        self.fill_mode, self.fill_value, self.interpolation = fill_mode, fill_value, interpolation

    def _factor(self, factor, name):
        """Keras's RandomShear rule: every number in [0, 1]; x -> (-x, x); a pair is sorted."""
        if isinstance(factor, (tuple, list)) and len(factor) == 2 and factor[0] < 0 and factor[0] == -factor[1] <= 1:
            # (-f, f) is what Keras's get_config writes for f, and Keras 3.15 rejects it when loading;
            # lamina reads such configs and files
            return (float(factor[0]), float(factor[1]))
        return _checked_factor(factor, name, self._MSG, 0.0, 1.0)

    def get_random_transformation(self, data, training=True, seed=None):
        if not training:
            return None
        shape = tuple(self._images_of(data).shape)
        n = 1 if len(shape) == 3 else shape[0]
        rng = self._generator(seed)
        invert = np.where(rng.uniform(0.0, 1.0, (n, 1)) > 0.5, -1.0, 1.0)
        shear_y = rng.uniform(self.y_factor[0], self.y_factor[1], (n, 1))
        shear_x = rng.uniform(self.x_factor[0], self.x_factor[1], (n, 1))
        factor = (np.concatenate([shear_x, shear_y], axis=1) * invert).astype(np.float32)
        return {"shear_factor": factor, "input_shape": shape}

    @staticmethod
    def _matrix(shear):
        """(N, 2) shear factors -> Keras's (N, 8) transforms [1, s_x, 0, s_y, 1, 0, 0, 0]."""
        n = shear.shape[0]
        one, zero = np.ones(n, shear.dtype), np.zeros(n, shear.dtype)
        return np.stack([one, shear[:, 0], zero, shear[:, 1], one, zero, zero, zero], axis=1)

    def _transform(self, images, transformation, interpolation):
        shear = _host(transformation["shear_factor"]).astype(np.float32)
        return affine_transform(images, _on(self._matrix(shear), images), interpolation=interpolation,
                                fill_mode=self.fill_mode, fill_value=self.fill_value, data_format=self.data_format)

    def transform_bounding_boxes(self, bounding_boxes, transformation, training=True):
        """Keras 3.15's box shear, on relative xyxy boxes (the factors are applied to relative coordinates, as
        Keras does): x1, x2 move by -s_x times the top or bottom edge (the one that widens the box), then y1, y2
        by -s_y times the left or right edge; clipped to [0, 1] (a box left with no area gets label -1)."""
        if not training or transformation is None:
            return bounding_boxes
        h, w = self._hw(transformation["input_shape"])
        b = _Boxes(bounding_boxes).convert(self.bounding_box_format, "rel_xyxy", h, w)
        shear = _host(transformation["shear_factor"]).astype(np.float32)
        sx, sy = shear[..., 0:1], shear[..., 1:2]                                  # (N, 1), against boxes (N, B)
        x1, y1, x2, y2 = (b.boxes[..., k] for k in range(4))
        x1 = np.where(sx < 0, x1 - sx * y1, x1 - sx * y2)
        x2 = np.where(sx < 0, x2 - sx * y2, x2 - sx * y1)
        y1 = np.where(sy > 0, y1 - sy * x2, y1 - sy * x1)
        y2 = np.where(sy > 0, y2 - sy * x1, y2 - sy * x2)
        b.boxes = np.stack([x1, y1, x2, y2], axis=-1)
        return b.clip(h, w, "rel_xyxy").convert("rel_xyxy", self.bounding_box_format, h, w).result()

    def get_config(self):
        config = super().get_config()
        # Keras writes (-f, f) for a factor f, which Keras 3.15 then refuses to load; f means the same and
        # loads in both
        readable = lambda p: p[1] if p[0] < 0 and p[0] == -p[1] else list(p)  # noqa: E731
        config.update(x_factor=readable(self.x_factor), y_factor=readable(self.y_factor), fill_mode=self.fill_mode,
                      interpolation=self.interpolation, seed=self.seed, fill_value=self.fill_value)
        return config


class RandomPerspective(_ImageAugmentation):
    """Warps each image (with probability p ~ U(factor), drawn per image) by the homography that moves the
    corners (0, 0), (W-1, 0), (0, H-1), (W-1, H-1) to corner * (1 + d), d ~ U(-scale/2, scale/2) per
    coordinate (so, as in Keras, the (0, 0) corner stays), via lamina.ops.image.perspective_transform
    (constant fill_value outside). Differentiable with respect to the images.

    Args: factor=1.0 (probability; f -> (0, f), or a pair, in [0, 1]), scale=1.0 (in [0, 1]),
    interpolation='bilinear', fill_value=0.0, seed=None, data_format=None. Transformation keys:
    apply_perspective (N,) bool, start_points, end_points (N, 4, 2) as (x, y), input_shape.
    """

    def __init__(self, factor=1.0, scale=1.0, interpolation="bilinear", fill_value=0.0, seed=None, data_format=None,
                 **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        self.factor = _keras_factor(factor, (0, 1))
        self.scale, self.fill_value, self.interpolation = scale, fill_value, interpolation
        if scale < 0.0 or scale > 1.0:
            raise ValueError(f"The `scale` argument should be a number in the range [0,1]. Received: scale={scale}")
        _check_interpolation(interpolation)

    def get_random_transformation(self, data, training=True, seed=None):
        if not training:
            return None
        n, h, w, rng, apply = self._draw_which(data, seed)
        shift = rng.uniform(-0.5 * self.scale, 0.5 * self.scale, (n, 4, 2)).astype(np.float32)
        start = np.repeat(np.array([[[0.0, 0.0], [w - 1, 0.0], [0.0, h - 1], [w - 1, h - 1]]], np.float32), n, axis=0)
        return {"apply_perspective": apply, "start_points": start, "end_points": start + start * shift,
                "input_shape": tuple(self._images_of(data).shape)}

    def _transform(self, images, transformation, interpolation):
        start = _host(transformation["start_points"]).astype(np.float32)
        end = _host(transformation["end_points"]).astype(np.float32)
        warped = perspective_transform(images, _on(start, images), _on(end, images), interpolation=interpolation,
                                       fill_value=self.fill_value, data_format=self.data_format)
        apply = _on(transformation["apply_perspective"], images, bool)
        return ops.where(ops.reshape(apply, (-1, 1, 1, 1)), warped, images)

    def transform_bounding_boxes(self, bounding_boxes, transformation, training=True):
        """Keras 3.15's: each box's four corners through the inverse of the images' homography (input to output
        points), the box around them where the image is warped, then clipped to the image (a box left with no
        area gets label -1). As in Keras, the boxes come back in xyxy whatever bounding_box_format is."""
        if not training or transformation is None:
            return bounding_boxes
        h, w = self._hw(transformation["input_shape"])
        b = _Boxes(bounding_boxes).convert(self.bounding_box_format, "xyxy", h, w)
        start = Tensor(_host(transformation["start_points"]).astype(np.float32))
        end = Tensor(_host(transformation["end_points"]).astype(np.float32))
        m = _host(_homography(start, end)).astype(np.float32)                    # output -> input, (N, 8)
        m = np.linalg.inv(np.concatenate([m, np.ones((m.shape[0], 1), np.float32)], axis=1).reshape(-1, 3, 3))
        x0, y0, x1, y1 = (b.boxes[..., k] for k in range(4))
        xs, ys = [], []
        for x, y in ((x0, y0), (x1, y1), (x0, y1), (x1, y0)):                      # the four corners
            p = m.astype(np.float32) @ np.stack([x, y, np.ones_like(x)], axis=-2)  # (N, 3, B)
            xs.append(p[:, 0] / p[:, 2])
            ys.append(p[:, 1] / p[:, 2])
        xs, ys = np.stack(xs, axis=-1), np.stack(ys, axis=-1)
        moved = np.stack([xs.min(-1), ys.min(-1), xs.max(-1), ys.max(-1)], axis=-1)
        apply = _host(transformation["apply_perspective"]).astype(bool).reshape(-1, 1, 1)
        b.boxes = np.where(apply, moved, b.boxes)
        return b.clip(h, w, "xyxy").result()

    def get_config(self):
        config = super().get_config()
        config.update(factor=list(self.factor), scale=self.scale, interpolation=self.interpolation,
                      fill_value=self.fill_value, seed=self.seed)
        return config


def _band(size, ks, sigma, xp, dtype):
    """(size, size) matrix of a zero-padded 1-D Gaussian blur of ks taps: row i holds g[j - i + ks // 2]."""
    g = _gauss1d(ks, sigma)
    d = np.arange(size)[None, :] - np.arange(size)[:, None] + ks // 2
    m = np.where((d >= 0) & (d < ks), g[np.clip(d, 0, ks - 1)], 0.0)
    return xp.asarray(m.astype(dtype))


class RandomElasticTransform(_ImageAugmentation):
    """Elastic deformation (Simard et al. 2003) as Keras: with probability p ~ U(factor) per image, every
    pixel moves by alpha * G_sigma * (sigma * noise), noise ~ N(0, 1) per pixel and axis, G_sigma a Gaussian
    blur of size int(6 sigma) | 1 (zero padded); alpha = 0.1 d max(H, W), sigma = 0.05 d min(H, W), d ~
    U(scale) once per batch (the blur is applied as two band-matrix products). Then every image is clipped
    to value_range (as Keras). Differentiable with respect to the images (the field is a constant draw).

    Args: factor=1.0 (probability; f -> (0, f), or a pair), scale=1.0 (f -> (0, f), or a pair), in [0, 1];
    interpolation='bilinear', fill_mode='reflect' ('constant', 'nearest', 'wrap', 'mirror'), fill_value=0.0,
    value_range=(0, 255), seed=None, data_format=None. Transformation keys: apply_transform (N,) bool,
    distortion_factor (), and lamina's noise (2, N, H, W): the standard normals for (dx, dy) (drawn at
    apply time from the layer's generator when absent, e.g. in a transformation that Keras drew).
    """

    _FILL_MODES = {"constant", "nearest", "wrap", "mirror", "reflect"}

    def __init__(self, factor=1.0, scale=1.0, interpolation="bilinear", fill_mode="reflect", fill_value=0.0,
                 value_range=(0, 255), seed=None, data_format=None, **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        self.factor = _keras_factor(factor, (0, 1))
        self.scale = _keras_factor(scale, (0, 1), "scale")
        self.interpolation, self.fill_mode, self.fill_value = interpolation, fill_mode, fill_value
        self.value_range = value_range
        _check_interpolation(interpolation)
        if fill_mode not in self._FILL_MODES:
            raise NotImplementedError(f"Unknown `fill_mode` {fill_mode}. Expected of one {self._FILL_MODES}.")

    def get_random_transformation(self, data, training=True, seed=None):
        if not training or self.scale[1] == 0 or self.factor[1] == 0:
            return None
        n, h, w, rng, apply = self._draw_which(data, seed)
        distortion = np.float32(rng.uniform(self.scale[0], self.scale[1]))
        noise = rng.standard_normal((2, n, h, w)).astype(np.float32)
        return {"apply_transform": apply, "distortion_factor": distortion, "noise": noise}

    @staticmethod
    def elastic_params(height, width, factor):
        """Keras's get_elastic_transform_params, in float32: alpha = max(H, W) * 0.1 f, sigma = min(H, W) *
        0.05 f."""
        f = np.float32(factor)
        return (np.float32(max(height, width)) * (np.float32(0.1) * f),
                np.float32(min(height, width)) * (np.float32(0.05) * f))

    def _transform(self, images, transformation, interpolation):
        x = images if self.data_format == "channels_last" else ops.transpose(images, (0, 2, 3, 1))
        n, h, w, _ = x.shape
        xp = backend.get_array_module(x.data)
        dt = x.dtype if x.dtype.kind == "f" else np.dtype("float32")     # integer segmentation masks
        alpha, sigma = self.elastic_params(h, w, _host(transformation["distortion_factor"]))
        noise = transformation.get("noise")
        noise = (self._rng().standard_normal((2, n, h, w)) if noise is None else _host(noise)).astype(dt)
        # the two fields (2N planes) blurred as Keras does (a ks x ks Gaussian, zero padding ks // 2), as
        # the separable product rows @ field @ cols^T: two GEMMs instead of a ks^2-tap convolution
        ks = int(6 * float(sigma)) | 1
        field = xp.asarray((noise * sigma).reshape(2 * n, h, w))
        field = _band(h, ks, float(sigma), xp, dt) @ field @ _band(w, ks, float(sigma), xp, dt).T
        field = field.reshape(2, n, h, w)
        ys, xs = xp.meshgrid(xp.arange(h, dtype=dt), xp.arange(w, dtype=dt), indexing="ij")
        a = dt.type(alpha)
        rows, cols = ys + a * field[1], xs + a * field[0]
        moved = _sample_nhwc(x, rows, cols, {"nearest": 0, "bilinear": 1}[interpolation], self.fill_mode,
                             self.fill_value)
        apply = _on(transformation["apply_transform"], x, bool)
        y = ops.where(ops.reshape(apply, (-1, 1, 1, 1)), moved, x)
        y = ops.clip(y, self.value_range[0], self.value_range[1])
        return y if self.data_format == "channels_last" else ops.transpose(y, (0, 3, 1, 2))

    def get_config(self):
        config = super().get_config()
        config.update(factor=list(self.factor), scale=list(self.scale), interpolation=self.interpolation,
                      fill_mode=self.fill_mode, fill_value=self.fill_value, value_range=list(self.value_range),
                      seed=self.seed)
        return config


# ----------------------------------------------------------------------------- policies
# Keras's names of the augmentations the two policies choose from, and the lamina.layers class of each
def _policy_layers():
    """The layer class of each policy operation name (RandomShear is defined above in this module)."""
    return {
        "random_shear": RandomShear, "random_translation": RandomTranslation, "random_rotation": RandomRotation,
        "random_brightness": RandomBrightness, "random_color_degeneration": RandomColorDegeneration,
        "random_contrast": RandomContrast, "random_sharpness": RandomSharpness,
        "random_posterization": RandomPosterization, "solarization": Solarization, "auto_contrast": AutoContrast,
        "equalization": Equalization,
    }


class _Policy(_ImageAugmentation):
    """Shared by AugMix and RandAugment: Keras's set of augmentation layers, made with the policy's data_format
    and bounding_box_format (as Keras makes them). Each draws its own Keras transformation, from an int seed taken
    from the policy's generator, and applies it with its own transform_* (a transformation that Keras drew works
    as it is); a deterministic layer (AutoContrast, Equalization) has the transformation None."""

    def _make_layers(self, names, factor, value_range, interpolation):
        f = tuple(factor)
        args = {
            "random_shear": dict(x_factor=f, y_factor=f, interpolation=interpolation),
            "random_translation": dict(height_factor=f, width_factor=f, interpolation=interpolation),
            "random_rotation": dict(factor=f, interpolation=interpolation),
            "random_brightness": dict(factor=f, value_range=value_range),
            "random_color_degeneration": dict(factor=f, value_range=value_range),
            "random_contrast": dict(factor=f, value_range=value_range),
            "random_sharpness": dict(factor=f, value_range=value_range),
            "random_posterization": dict(factor=max(1, int(8 * f[1])), value_range=value_range),
            "solarization": dict(addition_factor=f, threshold_factor=f, value_range=value_range),
            "auto_contrast": dict(value_range=value_range),
            "equalization": dict(value_range=value_range),
        }
        classes = _policy_layers()
        # a plain dict, not attributes: the sub-layers hold no weights and are not part of the saved model
        self._ops = {n: classes[n](**args[n], data_format=self.data_format,
                                   bounding_box_format=self.bounding_box_format, name=f"{self.name}_{n}",
                                   dtype=self.dtype_policy) for n in names}

    def _draw(self, name, x, rng):
        return self._ops[name].get_random_transformation(x, training=True, seed=int(rng.integers(2 ** 31)))

    def _apply(self, name, x, transformation):
        return self._ops[name].transform_images(x, transformation, training=True)

    def _transform(self, images, transformation, interpolation):
        return self._mixed(images, transformation)


class AugMix(_Policy):
    """AugMix (Hendrycks et al. 2020), as Keras: num_chains chains, each of up to chain_depth augmentations
    (each step picks one of the policy's layers, or none, uniformly) applied to the whole batch; the
    chains are mixed with Dirichlet(alpha) weights m, and the result with the images by w ~ Beta(alpha,
    alpha): clip(w x + (1 - w) sum_k m_k chain_k(x), value_range).

    The choices are drawn from the layer's generator (Keras uses Python's unseeded ``random.choice``), so a
    seeded AugMix repeats its augmentations. The layers: RandomShear, RandomTranslation, RandomRotation,
    RandomPosterization, Solarization, AutoContrast, Equalization, and with all_ops=True also RandomBrightness,
    RandomColorDegeneration, RandomContrast, RandomSharpness, all with strength factor (f -> (0, f), in [0, 1]).
    Segmentation masks go through the same chains and are mixed the same way; bounding boxes pass unchanged (both
    as Keras 3.15).

    Args: value_range=(0, 255), num_chains=3, chain_depth=3, factor=0.3, alpha=1.0, all_ops=True,
    interpolation='bilinear', seed=None, data_format=None. Transformation keys (Keras's):
    chain_mixing_weights (num_chains,), weight_sample (), chain_transforms (per chain, a list of
    {"layer_name", "transformation"}).
    """

    _LAYERS = ["random_shear", "random_translation", "random_rotation", "random_posterization", "solarization",
               "auto_contrast", "equalization"]
    _LAYERS_ALL = _LAYERS + ["random_brightness", "random_color_degeneration", "random_contrast",
                             "random_sharpness"]

    def __init__(self, value_range=(0, 255), num_chains=3, chain_depth=3, factor=0.3, alpha=1.0, all_ops=True,
                 interpolation="bilinear", seed=None, data_format=None, **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        self.value_range, self.num_chains, self.chain_depth = value_range, num_chains, chain_depth
        self.factor = _keras_factor(factor, (0, 1))
        self.alpha, self.all_ops, self.interpolation = alpha, all_ops, interpolation
        self._augment_layers = list(self._LAYERS_ALL if all_ops else self._LAYERS)
        self._make_layers(self._augment_layers, self.factor, value_range, interpolation)

    def get_random_transformation(self, data, training=True, seed=None):
        if not training:
            return None
        x = self._images_of(data)
        rng = self._generator(seed)
        gamma = rng.gamma(self.alpha, 1.0, self.num_chains)
        weights = (gamma / gamma.sum()).astype(np.float32)
        sample = np.float32(rng.beta(self.alpha, self.alpha))
        choices = self._augment_layers + [None]
        chains = []
        for _ in range(self.num_chains):          # a few Python steps per batch, not per image
            steps = []
            for _ in range(self.chain_depth):
                name = choices[int(rng.integers(len(choices)))]
                if name is not None:
                    steps.append({"layer_name": name, "transformation": self._draw(name, x, rng)})
            chains.append(steps)
        return {"chain_mixing_weights": weights, "weight_sample": sample, "chain_transforms": chains}

    def _mixed(self, x, transformation):
        weights = _host(transformation["chain_mixing_weights"]).astype(x.dtype)
        sample = x.dtype.type(_host(transformation["weight_sample"]))
        mixed = None
        for k, chain in enumerate(transformation["chain_transforms"]):
            y = x
            for step in chain:
                y = self._apply(step["layer_name"], y, step["transformation"])
            term = y * x.dtype.type(weights[k])
            mixed = term if mixed is None else mixed + term
        if mixed is None:
            mixed = x * 0.0
        out = x * sample + mixed * (x.dtype.type(1) - sample)
        return ops.clip(out, self.value_range[0], self.value_range[1])

    def transform_segmentation_masks(self, segmentation_masks, transformation, training=True):
        """Keras's: each chain's steps through the layers' own transform_segmentation_masks (the geometric ones
        move the masks with nearest sampling, the colour ones leave them), mixed as the images are but not
        clipped. Integer masks are mixed in the layer's float dtype."""
        if not training or transformation is None:
            return segmentation_masks
        m = as_tensor(segmentation_masks)
        if m.dtype.kind != "f":
            m = _float(self, m)
        weights = _host(transformation["chain_mixing_weights"]).astype(m.dtype)
        sample = m.dtype.type(_host(transformation["weight_sample"]))
        mixed = m * 0.0
        for k, chain in enumerate(transformation["chain_transforms"]):
            y = m
            for step in chain:
                y = self._ops[step["layer_name"]].transform_segmentation_masks(y, step["transformation"])
            mixed = mixed + y * m.dtype.type(weights[k])
        return m * sample + mixed * (m.dtype.type(1) - sample)

    def transform_bounding_boxes(self, bounding_boxes, transformation, training=True):
        """The boxes pass unchanged, as in Keras 3.15 (whose AugMix does not move them)."""
        return bounding_boxes

    def get_config(self):
        config = super().get_config()
        config.update(value_range=list(self.value_range), num_chains=self.num_chains, chain_depth=self.chain_depth,
                      factor=list(self.factor), alpha=self.alpha, all_ops=self.all_ops,
                      interpolation=self.interpolation, seed=self.seed)
        return config


class RandAugment(_Policy):
    """RandAugment (Cubuk et al. 2020), as Keras: num_ops augmentations, each chosen uniformly (with
    repeats) among RandomShear, RandomTranslation, RandomRotation, RandomBrightness,
    RandomColorDegeneration, RandomContrast, RandomSharpness, RandomPosterization, Solarization,
    AutoContrast and Equalization, applied in turn to the whole batch with strength factor. Each layer's
    parameters are drawn once per batch (a layer chosen twice applies the same draw twice, as Keras).

    Args: value_range=(0, 255), num_ops=2, factor=0.5 (f -> (0, f), in [0, 1]), interpolation='bilinear',
    seed=None, data_format=None. Transformation keys (Keras's): transforms ({layer name: its
    transformation}), layer_idxes (num_ops,) into that list.
    """

    _AUGMENT_LAYERS = ["random_shear", "random_translation", "random_rotation", "random_brightness",
                       "random_color_degeneration", "random_contrast", "random_sharpness", "random_posterization",
                       "solarization", "auto_contrast", "equalization"]

    def __init__(self, value_range=(0, 255), num_ops=2, factor=0.5, interpolation="bilinear", seed=None,
                 data_format=None, **kwargs):
        super().__init__(seed=seed, data_format=data_format, **kwargs)
        self.value_range, self.num_ops = value_range, num_ops
        self.factor = _keras_factor(factor, (0, 1))
        self.interpolation = interpolation
        self._make_layers(self._AUGMENT_LAYERS, self.factor, value_range, interpolation)

    def get_random_transformation(self, data, training=True, seed=None):
        if not training:
            return None
        x = self._images_of(data)
        rng = self._generator(seed)
        idxes = rng.integers(0, len(self._AUGMENT_LAYERS), self.num_ops).astype(np.int32)
        transforms = {name: self._draw(name, x, rng) for name in self._AUGMENT_LAYERS}
        return {"transforms": transforms, "layer_idxes": idxes}

    def _mixed(self, x, transformation):
        transforms = transformation["transforms"]
        for i in _host(transformation["layer_idxes"]).reshape(-1)[:self.num_ops]:
            name = self._AUGMENT_LAYERS[int(i)]
            x = self._apply(name, x, transforms[name])
        return x

    def _chosen(self, transformation):
        return [self._AUGMENT_LAYERS[int(i)] for i in _host(transformation["layer_idxes"]).reshape(-1)[:self.num_ops]]

    def transform_segmentation_masks(self, segmentation_masks, transformation, training=True):
        """The chosen layers' own transform_segmentation_masks in turn (nearest sampling for the geometric ones;
        the colour ones leave the masks), as Keras."""
        if not training or transformation is None:
            return segmentation_masks
        for name in self._chosen(transformation):
            segmentation_masks = self._ops[name].transform_segmentation_masks(segmentation_masks,
                                                                              transformation["transforms"][name])
        return segmentation_masks

    def transform_bounding_boxes(self, bounding_boxes, transformation, training=True):
        """Keras 3.15's order: each chosen layer once, in the order of the layer list (not of the draw), moves the
        boxes with its own transform_bounding_boxes (a layer chosen twice moves them once)."""
        if not training or transformation is None:
            return bounding_boxes
        chosen = set(self._chosen(transformation))
        boxes = dict(bounding_boxes)
        for name in self._AUGMENT_LAYERS:
            if name in chosen:
                moved = self._ops[name].transform_bounding_boxes(dict(boxes), transformation["transforms"][name])
                boxes["boxes"], boxes["labels"] = moved["boxes"], moved["labels"]
        return boxes

    def get_config(self):
        config = super().get_config()
        config.update(value_range=list(self.value_range), num_ops=self.num_ops, factor=list(self.factor),
                      interpolation=self.interpolation, seed=self.seed)
        return config
