"""``keras.utils.bounding_boxes``: conversions between box formats, IoU and CIoU, clipping, cropping, padding, affine
moves and anchor deltas, with Keras 3.15's names, arguments and results (computed in NumPy, returned as Tensors).

Formats (case-insensitive), one box a row of four numbers:

    xyxy         [left, top, right, bottom]          yxyx         [top, left, bottom, right]
    xywh         [left, top, width, height]          center_xywh  [center x, center y, width, height]
    center_yxhw  [center y, center x, height, width]
    rel_xyxy, rel_yxyx, rel_xywh, rel_center_xywh: the same divided by the image's width (x) and height (y)

Boxes are (N, 4) or (batch, N, 4); where a function takes a dict, it is Keras's {"boxes": ..., "labels": ...}.
"""
import math

import numpy as np

from ..backend import epsilon
from ..tensor import Tensor
from ..tensor import host_array as _host

__all__ = ["convert_format", "compute_iou", "compute_ciou", "clip_to_image_size", "crop", "pad", "affine_transform",
           "encode_box_to_deltas", "decode_deltas_to_boxes"]

SUPPORTED_FORMATS = ("xyxy", "yxyx", "xywh", "center_xywh", "center_yxhw", "rel_xyxy", "rel_yxyx", "rel_xywh",
                     "rel_center_xywh")


def _columns(b):
    return b[..., 0:1], b[..., 1:2], b[..., 2:3], b[..., 3:4]


def _to_xyxy(b, fmt, h, w):
    p, q, r, s = _columns(b)
    if fmt == "xyxy":
        return b
    if fmt == "yxyx":
        return np.concatenate([q, p, s, r], axis=-1)
    if fmt == "xywh":
        return np.concatenate([p, q, p + r, q + s], axis=-1)
    if fmt == "center_xywh":
        return np.concatenate([p - r / 2.0, q - s / 2.0, p + r / 2.0, q + s / 2.0], axis=-1)
    if fmt == "center_yxhw":
        return np.concatenate([q - s / 2.0, p - r / 2.0, q + s / 2.0, p + r / 2.0], axis=-1)
    if fmt == "rel_xyxy":
        return np.concatenate([p * w, q * h, r * w, s * h], axis=-1)
    if fmt == "rel_yxyx":
        return np.concatenate([q * w, p * h, s * w, r * h], axis=-1)
    if fmt == "rel_xywh":
        return np.concatenate([p * w, q * h, (p + r) * w, (q + s) * h], axis=-1)
    # rel_center_xywh
    return np.concatenate([(p - r / 2.0) * w, (q - s / 2.0) * h, (p + r / 2.0) * w, (q + s / 2.0) * h], axis=-1)


def _from_xyxy(b, fmt, h, w):
    x1, y1, x2, y2 = _columns(b)
    bw, bh = x2 - x1, y2 - y1
    if fmt == "xyxy":
        return b
    if fmt == "yxyx":
        return np.concatenate([y1, x1, y2, x2], axis=-1)
    if fmt == "xywh":
        return np.concatenate([x1, y1, bw, bh], axis=-1)
    if fmt == "center_xywh":
        return np.concatenate([x1 + bw / 2.0, y1 + bh / 2.0, bw, bh], axis=-1)
    if fmt == "center_yxhw":
        return np.concatenate([y1 + bh / 2.0, x1 + bw / 2.0, bh, bw], axis=-1)
    if fmt == "rel_xyxy":
        return np.concatenate([x1 / w, y1 / h, x2 / w, y2 / h], axis=-1)
    if fmt == "rel_yxyx":
        return np.concatenate([y1 / h, x1 / w, y2 / h, x2 / w], axis=-1)
    if fmt == "rel_xywh":
        return np.concatenate([x1 / w, y1 / h, bw / w, bh / h], axis=-1)
    # rel_center_xywh
    return np.concatenate([(x1 + bw / 2.0) / w, (y1 + bh / 2.0) / h, bw / w, bh / h], axis=-1)


def _convert(boxes, source, target, height=None, width=None, dtype="float32"):
    """convert_format on host arrays (a NumPy array in, one out)."""
    boxes = _host(boxes)
    if boxes.shape[-1:] != (4,):
        raise ValueError(f"`boxes` must be a tensor with the last dimension of 4. Received: boxes.shape={boxes.shape}")
    source, target = source.lower(), target.lower()
    if source not in SUPPORTED_FORMATS or target not in SUPPORTED_FORMATS:
        raise ValueError(f"Invalid source or target format. Supported formats: {SUPPORTED_FORMATS}")
    if (source.startswith("rel_") or target.startswith("rel_")) and (width is None or height is None):
        raise ValueError("convert_format() must receive `height` and `width` transforming between relative and "
                         f"absolute formats. convert_format() received source=`{source}`, target=`{target}`, but "
                         f"height={height} and width={width}.")
    boxes = boxes.astype(dtype, copy=False)
    if source == target:
        return boxes
    h = None if height is None else _host(height, dtype)
    w = None if width is None else _host(width, dtype)
    if source.startswith("rel_") and target.startswith("rel_"):   # (no image size in between)
        source, target = source[4:], target[4:]
    return _from_xyxy(_to_xyxy(boxes, source, h, w), target, h, w)


def convert_format(boxes, source, target, height=None, width=None, dtype="float32"):
    """Boxes converted from format ``source`` to ``target`` (in ``dtype``); ``height`` and ``width`` (the image's)
    are needed to or from a relative format. A dict's "boxes" are converted in place and the dict returned."""
    if isinstance(boxes, dict):
        boxes["boxes"] = convert_format(boxes["boxes"], source, target, height=height, width=width, dtype=dtype)
        return boxes
    return Tensor(_convert(boxes, source, target, height, width, dtype))


def _iou_table(b1, b2):
    """IoU of every box of b1 (..., N, 4) with every box of b2 (..., M, 4), both yxyx: (..., N, M)."""
    lo = np.maximum(b1[..., :, None, :2], b2[..., None, :, :2])
    hi = np.minimum(b1[..., :, None, 2:4], b2[..., None, :, 2:4])
    inter = np.prod(np.maximum(hi - lo, 0), axis=-1)
    area1 = (b1[..., 2] - b1[..., 0]) * (b1[..., 3] - b1[..., 1])
    area2 = (b2[..., 2] - b2[..., 0]) * (b2[..., 3] - b2[..., 1])
    union = area1[..., :, None] + area2[..., None, :] - inter
    return inter / (union + np.asarray(epsilon(), inter.dtype))


def compute_iou(boxes1, boxes2, bounding_box_format, use_masking=False, mask_val=-1, image_shape=None):
    """The IoU of every box of boxes1 with every box of boxes2: (N, M) for (N, 4) and (M, 4), (batch, N, M) where
    either is batched. With ``use_masking``, pairs where either box has all coordinates negative (padding) give
    ``mask_val``. A relative format needs ``image_shape`` (height, width, channels)."""
    ranks = (np.ndim(_host(boxes1)), np.ndim(_host(boxes2)))
    for i, rank in enumerate(ranks):
        if rank not in (2, 3):
            raise ValueError(f"compute_iou() expects boxes{i + 1} to be batched, or to be unbatched. Received "
                             f"len(boxes1.shape)={ranks[0]}, len(boxes2.shape)={ranks[1]}. Expected either "
                             f"len(boxes{i + 1}.shape)=2 AND or len(boxes{i + 1}.shape)=3.")
    if "rel" in bounding_box_format and image_shape is None:
        raise ValueError("When using relative bounding box formats (e.g. `rel_yxyx`) the `image_shape` argument "
                         f"must be provided.Received `image_shape`: {image_shape}")
    height, width = (None, None) if image_shape is None else tuple(image_shape)[:2]
    b1 = _convert(boxes1, bounding_box_format, "yxyx", height, width)
    b2 = _convert(boxes2, bounding_box_format, "yxyx", height, width)
    iou = _iou_table(b1, b2)
    if use_masking:
        background = (b1.max(axis=-1) < 0)[..., :, None] | (b2.max(axis=-1) < 0)[..., None, :]
        iou = np.where(background, np.asarray(mask_val, iou.dtype), iou)
    return Tensor(iou)


def compute_ciou(boxes1, boxes2, bounding_box_format, image_shape=None):
    """The complete IoU (IoU minus the centres' squared distance over the enclosing box's squared diagonal, minus the
    aspect-ratio term) of boxes1 and boxes2, box by box (broadcast): a CIoU loss is 1 minus it. Relative formats are
    refused, as Keras 3.15 does."""
    if "rel" in bounding_box_format:
        raise ValueError("When using relative bounding box formats (e.g. `rel_yxyx`) the `image_shape` argument "
                         f"must be provided.Received `image_shape`: {image_shape}")
    b1 = _convert(boxes1, bounding_box_format, "xyxy")
    b2 = _convert(boxes2, bounding_box_format, "xyxy")
    eps = np.float32(epsilon())
    x1a, y1a, x2a, y2a = (b1[..., i] for i in range(4))
    x1b, y1b, x2b, y2b = (b2[..., i] for i in range(4))
    wa, ha = x2a - x1a, y2a - y1a + eps
    wb, hb = x2b - x1b, y2b - y1b + eps
    inter = (np.maximum(np.minimum(x2a, x2b) - np.maximum(x1a, x1b), 0)
             * np.maximum(np.minimum(y2a, y2b) - np.maximum(y1a, y1b), 0))
    iou = inter / (wa * ha + wb * hb - inter + eps + eps)
    diagonal = (np.maximum(x2a, x2b) - np.minimum(x1a, x1b)) ** 2 + (np.maximum(y2a, y2b) - np.minimum(y1a, y1b)) ** 2
    centres = ((x1a + x2a) / 2 - (x1b + x2b) / 2) ** 2 + ((y1a + y2a) / 2 - (y1b + y2b) / 2) ** 2
    v = np.float32(4 / math.pi ** 2) * (np.arctan(wb / hb) - np.arctan(wa / ha)) ** 2
    alpha = v / (v - iou + (1 + eps))
    return Tensor(iou - (centres / (diagonal + eps) + v * alpha))


def clip_to_image_size(bounding_boxes, height=None, width=None, bounding_box_format="xyxy"):
    """A copy of the dict {"boxes", "labels"} with the boxes clipped to the image (``xyxy``: to [0, width] and
    [0, height]; ``rel_xyxy``: to [0, 1]); a box left with no area gets the label -1."""
    if bounding_box_format not in ("xyxy", "rel_xyxy"):
        raise NotImplementedError(f"clip_to_image_size supports 'xyxy' and 'rel_xyxy' boxes. Received: "
                                  f"{bounding_box_format!r}")
    if bounding_box_format == "xyxy" and (height is None or width is None):
        raise ValueError("`height` and `width` must be set if `format='xyxy'`.")
    boxes = _host(bounding_boxes["boxes"])
    if bounding_box_format == "xyxy":
        limits = np.asarray([width, height, width, height], boxes.dtype)
    else:
        limits = np.ones(4, boxes.dtype)
    boxes = np.clip(boxes, np.zeros(4, boxes.dtype), limits)
    result = dict(bounding_boxes)
    result["boxes"] = Tensor(boxes)
    if bounding_boxes.get("labels") is not None:
        area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
        labels = _host(bounding_boxes["labels"])
        result["labels"] = Tensor(np.where(area > 0, labels, np.asarray(-1, labels.dtype)))
    return result


def _xyxy_only(fmt, what):
    if fmt != "xyxy":
        raise NotImplementedError(f"{what} supports 'xyxy' boxes only. Received: bounding_box_format={fmt!r}")


def crop(boxes, top, left, height, width, bounding_box_format="xyxy"):
    """Boxes in the frame of the crop of ``height`` x ``width`` from (``top``, ``left``): moved by the corner and
    clipped to the crop."""
    _xyxy_only(bounding_box_format, "crop")
    b = _host(boxes)
    b = b - _per_column(b, left, top)
    return Tensor(np.clip(b, 0, _per_column(b, width, height)))


def pad(boxes, top, left, height=None, width=None, bounding_box_format="xyxy"):
    """Boxes moved by the padding added at the ``top`` and ``left`` of the image."""
    _xyxy_only(bounding_box_format, "pad")
    b = _host(boxes)
    return Tensor(b + _per_column(b, left, top))


def _per_column(b, x, y):
    """[x, y, x, y] for the columns of xyxy boxes b, in b's dtype where b holds floats (a Python number would)."""
    v = np.asarray([x, y, x, y])
    return v.astype(b.dtype) if b.dtype.kind == "f" else v


def _inverse_affine(center_x, center_y, angle, translate_x, translate_y, scale, shear_x, shear_y, height, width):
    """(batch, 2, 3): Keras's inverse affine matrix of each transformation (angles in degrees, translations and
    centre as fractions of the image)."""
    f = np.float32 if np.asarray(angle).dtype != np.float64 else np.float64
    angle, translate_x, translate_y, scale, shear_x, shear_y = (
        np.atleast_1d(_host(v)).astype(f) for v in (angle, translate_x, translate_y, scale, shear_x, shear_y))
    cx, cy = f(center_x) * f(width - 1), f(center_y) * f(height - 1)
    rot = -angle * f(math.pi / 180.0)
    sx, sy = -shear_x * f(math.pi / 180.0), -shear_y * f(math.pi / 180.0)
    tx, ty = -translate_x * f(width - 1), -translate_y * f(height - 1)
    a = np.cos(rot - sy) / np.cos(sy)
    b = a * np.tan(sx) + np.sin(rot)
    c = -np.sin(rot - sy) / np.cos(sy)
    d = np.cos(rot) - c * np.tan(sx)
    a0, a1, b0, b1 = d * scale, -b * scale, -c * scale, a * scale
    a2 = cx - a0 * (cx + tx) - a1 * (cy + ty)
    b2 = cy - b0 * (cx + tx) - b1 * (cy + ty)
    return np.stack([np.stack([a0, a1, a2], -1), np.stack([b0, b1, b2], -1)], axis=1)


def affine_transform(boxes, angle, translate_x, translate_y, scale, shear_x, shear_y, height, width, center_x=None,
                     center_y=None, bounding_box_format="xyxy"):
    """Boxes (batch, N, 4) moved by each sample's affine transformation (the parameters one value a sample:
    rotation and shear in degrees, translation and the centre, default 0.5, as fractions of the image): each box's
    four corners through the matrix, and the box around them."""
    _xyxy_only(bounding_box_format, "affine_transform")
    b = _host(boxes)
    single = b.ndim == 2
    if single:
        b = b[None]
    m = _inverse_affine(0.5 if center_x is None else center_x, 0.5 if center_y is None else center_y, angle,
                        translate_x, translate_y, scale, shear_x, shear_y, height, width)
    b = b.astype(m.dtype, copy=False)
    x1, y1, x2, y2 = (b[..., i] for i in range(4))
    corners = np.stack([np.stack([x1, y1], -1), np.stack([x2, y1], -1), np.stack([x2, y2], -1),
                        np.stack([x1, y2], -1)], axis=2)                            # (batch, N, 4, 2)
    moved = np.einsum("bnkj,bij->bnki", corners, m[:, :, :2]) + m[:, None, None, :, 2]
    out = np.concatenate([moved.min(axis=2), moved.max(axis=2)], axis=-1)
    return Tensor(out[0] if single else out)


def _check_variance(variance):
    if variance is None:
        return None
    v = np.asarray(_host(variance), np.float32)
    if v.shape[-1:] != (4,):
        raise ValueError(f"`variance` must be length 4, got {variance}")
    return v


def encode_box_to_deltas(anchors, boxes, anchor_format, box_format, encoding_format="center_yxhw", variance=None,
                         image_shape=None):
    """Each box as deltas from its anchor in ``encoding_format`` (center_yxhw or center_xywh): the centre's offset
    over the anchor's size, then the log of the size ratio; divided by ``variance`` when given."""
    variance = _check_variance(variance)
    if encoding_format not in ("center_xywh", "center_yxhw"):
        raise ValueError(f"`encoding_format` should be one of 'center_xywh' or 'center_yxhw', got {encoding_format}")
    height, width = (None, None) if image_shape is None else tuple(image_shape)[:2]
    a = _convert(anchors, anchor_format, encoding_format, height, width)
    b = _convert(boxes, box_format, encoding_format, height, width)
    eps = np.float32(epsilon())
    size_a, size_b = np.maximum(a[..., 2:], eps), np.maximum(b[..., 2:], eps)
    deltas = np.concatenate([(b[..., :2] - a[..., :2]) / size_a, np.log(size_b / size_a)], axis=-1)
    return Tensor(deltas if variance is None else deltas / variance)


def decode_deltas_to_boxes(anchors, boxes_delta, anchor_format, box_format, encoded_format="center_yxhw",
                           variance=None, image_shape=None):
    """The boxes (in ``box_format``) that ``encode_box_to_deltas`` encoded as ``boxes_delta`` from ``anchors``; dicts
    of anchors and deltas (one entry a feature level) give a dict of boxes."""
    variance = _check_variance(variance)
    if encoded_format not in ("center_xywh", "center_yxhw"):
        raise ValueError(f"`encoded_format` should be 'center_xywh' or 'center_yxhw', but got '{encoded_format}'.")
    height, width = (None, None) if image_shape is None else tuple(image_shape)[:2]

    def level(anchor, delta):
        a = _convert(anchor, anchor_format, encoded_format, height, width)
        d = _host(delta, np.float32)
        if variance is not None:
            d = d * variance
        box = np.concatenate([d[..., :2] * a[..., 2:] + a[..., :2], np.exp(d[..., 2:]) * a[..., 2:]], axis=-1)
        return Tensor(_convert(box, encoded_format, box_format, height, width))

    if isinstance(anchors, dict) and isinstance(boxes_delta, dict):
        return {k: level(anchor, boxes_delta[k]) for k, anchor in anchors.items()}
    return level(anchors, boxes_delta)
