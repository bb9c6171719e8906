"""keras.utils.bounding_boxes (lamina/utils/bounding_boxes.py): hand-computed cases, and every function against real
Keras 3.15 (torch backend) on the same boxes: values, shapes and dtypes."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
import lamina  # noqa: E402

from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")

B = lamina.utils.bounding_boxes
FORMATS = ["xyxy", "yxyx", "xywh", "center_xywh", "center_yxhw", "rel_xyxy", "rel_yxyx", "rel_xywh", "rel_center_xywh"]


def _boxes(seed=0):
    r = np.random.default_rng(seed)
    xy = r.random((2, 5, 2)) * 50
    return np.concatenate([xy, xy + r.random((2, 5, 2)) * 30 + 1], -1).astype("float32")


def test_hand_computed_cases():
    boxes = np.array([[10, 20, 30, 40], [50, 60, 70, 80]])
    np.testing.assert_array_equal(B.convert_format(boxes, "xyxy", "xywh").numpy(), [[10, 20, 20, 20], [50, 60, 20, 20]])
    np.testing.assert_allclose(B.convert_format(boxes, "xyxy", "rel_xyxy", height=200, width=300).numpy(),
                               [[10 / 300, 0.1, 0.1, 0.2], [50 / 300, 0.3, 70 / 300, 0.4]], rtol=1e-6)
    np.testing.assert_array_equal(B.convert_format(boxes, "xyxy", "center_yxhw").numpy(),
                                  [[30, 20, 20, 20], [70, 60, 20, 20]])
    for fmt in FORMATS:   # there and back
        there = B.convert_format(boxes, "xyxy", fmt, height=200, width=300)
        np.testing.assert_allclose(B.convert_format(there.numpy(), fmt, "xyxy", height=200, width=300).numpy(), boxes,
                                   rtol=1e-6, atol=1e-5)
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], "float32")
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [100, 100, 101, 101]], "float32")
    np.testing.assert_allclose(B.compute_iou(a, b, "xyxy").numpy(), [[1, 50 / 150, 0], [0, 0, 0]], atol=1e-6)
    np.testing.assert_allclose(B.compute_ciou(a[0], a[0], "xyxy").numpy(), 1.0, atol=1e-5)   # the same box
    np.testing.assert_array_equal(B.crop(np.array([[10, 20, 50, 60], [70, 80, 100, 120]]), top=10, left=20, height=40,
                                         width=30).numpy(), [[0, 10, 30, 40], [30, 40, 30, 40]])
    np.testing.assert_array_equal(B.pad(a, top=2, left=3).numpy(), [[3, 2, 13, 12], [23, 22, 33, 32]])
    clipped = B.clip_to_image_size({"boxes": np.array([[-10, -20, 150, 160], [50, 40, 70, 80], [130, 5, 140, 9]],
                                                      "float32"), "labels": np.array([0, 1, 2])}, height=100, width=120)
    np.testing.assert_array_equal(clipped["boxes"].numpy(), [[0, 0, 120, 100], [50, 40, 70, 80], [120, 5, 120, 9]])
    np.testing.assert_array_equal(clipped["labels"].numpy(), [0, 1, -1])   # no area left: label -1
    anchors = a + 1
    deltas = B.encode_box_to_deltas(anchors, a, "xyxy", "xyxy", variance=[0.1, 0.1, 0.2, 0.2])
    np.testing.assert_allclose(B.decode_deltas_to_boxes(anchors, deltas.numpy(), "xyxy", "xyxy",
                                                        variance=[0.1, 0.1, 0.2, 0.2]).numpy(), a, atol=1e-4)
    moved = B.affine_transform(a[None], [90.0], [0.0], [0.0], [1.0], [0.0], [0.0], height=11, width=11)
    np.testing.assert_allclose(moved.numpy()[0, 0], [0, 0, 10, 10], atol=1e-4)   # a quarter turn of the whole image


def test_refusals():
    with pytest.raises(ValueError, match="last dimension of 4"):
        B.convert_format(np.zeros((2, 3)), "xyxy", "xywh")
    with pytest.raises(ValueError, match="Invalid source or target"):
        B.convert_format(np.zeros((2, 4)), "xyxy", "xywhz")
    with pytest.raises(ValueError, match="height"):
        B.convert_format(np.zeros((2, 4)), "xyxy", "rel_xyxy")
    with pytest.raises(ValueError, match="image_shape"):
        B.compute_iou(np.zeros((2, 4)), np.zeros((2, 4)), "rel_xyxy")
    with pytest.raises(ValueError, match="expects boxes1"):
        B.compute_iou(np.zeros(4), np.zeros((2, 4)), "xyxy")
    with pytest.raises(ValueError, match="variance"):
        B.encode_box_to_deltas(np.zeros((2, 4)), np.zeros((2, 4)), "xyxy", "xyxy", variance=[1, 1])
    with pytest.raises(ValueError, match="encoding_format"):
        B.encode_box_to_deltas(np.zeros((2, 4)), np.zeros((2, 4)), "xyxy", "xyxy", encoding_format="xyxy")
    with pytest.raises(NotImplementedError):
        B.crop(np.zeros((2, 4)), 0, 0, 5, 5, bounding_box_format="yxyx")
    with pytest.raises(ValueError, match="height"):
        B.clip_to_image_size({"boxes": np.zeros((1, 4))})


def _same(mine, theirs, rtol=1e-5):
    theirs = keras.ops.convert_to_numpy(theirs)
    mine = np.asarray(mine)
    assert mine.shape == theirs.shape and mine.dtype == theirs.dtype
    np.testing.assert_allclose(mine, theirs, rtol=rtol, atol=1e-4)


def test_every_function_as_keras():
    K = keras.utils.bounding_boxes
    boxes = _boxes()
    for source in FORMATS:
        src = keras.ops.convert_to_numpy(K.convert_format(boxes, "xyxy", source, height=80, width=100))
        for target in FORMATS:
            _same(B.convert_format(src, source, target, height=80, width=100),
                  K.convert_format(src, source, target, height=80, width=100))
    for fmt in ("xyxy", "center_xywh", "rel_yxyx"):
        src = keras.ops.convert_to_numpy(K.convert_format(boxes, "xyxy", fmt, height=80, width=100))
        for a, b in ((src[0], src[1]), (src, src), (src, src[0])):
            _same(B.compute_iou(a, b, fmt, image_shape=(80, 100, 3)),
                  K.compute_iou(a, b, fmt, image_shape=(80, 100, 3)))
        padded = src.copy()
        padded[0, 1] = -1
        _same(B.compute_iou(padded, padded, fmt, use_masking=True, mask_val=-2, image_shape=(80, 100, 3)),
              K.compute_iou(padded, padded, fmt, use_masking=True, mask_val=-2, image_shape=(80, 100, 3)))
    for fmt in ("xyxy", "center_xywh", "yxyx"):
        src = keras.ops.convert_to_numpy(K.convert_format(boxes, "xyxy", fmt))
        _same(B.compute_ciou(src[0], src[1], fmt), K.compute_ciou(src[0], src[1], fmt))
    wide = boxes.copy()
    wide[0, 0], wide[1, 2] = [-10, -5, -1, 3], [90, 70, 130, 95]
    labels = np.arange(10).reshape(2, 5)
    for fmt, kw, data in (("xyxy", {"height": 80, "width": 100}, wide), ("rel_xyxy", {}, wide / 100)):
        a = B.clip_to_image_size({"boxes": data, "labels": labels}, bounding_box_format=fmt, **kw)
        b = K.clip_to_image_size({"boxes": data, "labels": labels}, bounding_box_format=fmt, **kw)
        _same(a["boxes"], b["boxes"])
        _same(a["labels"], b["labels"])
    _same(B.crop(boxes, 10, 20, 40, 30), K.crop(boxes, 10, 20, 40, 30))
    _same(B.pad(boxes, 7, 3), K.pad(boxes, 7, 3))
    params = [np.array(v, "float32") for v in ([15, -30], [0.1, -0.05], [0, 0.2], [1, 1.2], [5, 0], [0, -7])]
    for centre in ({}, {"center_x": 0.3, "center_y": 0.6}):
        _same(B.affine_transform(boxes, *params, 80, 100, **centre),
              K.affine_transform(boxes, *params, 80, 100, **centre), rtol=1e-4)
    anchors = boxes[0] + 2
    for encoding in ("center_yxhw", "center_xywh"):
        for variance in (None, [0.1, 0.1, 0.2, 0.2]):
            mine = B.encode_box_to_deltas(anchors, boxes, "xyxy", "xyxy", encoding_format=encoding, variance=variance)
            theirs = K.encode_box_to_deltas(anchors, boxes, "xyxy", "xyxy", encoding_format=encoding, variance=variance)
            _same(mine, theirs)
            _same(B.decode_deltas_to_boxes(anchors, mine.numpy(), "xyxy", "rel_xywh", encoded_format=encoding,
                                           variance=variance, image_shape=(80, 100, 3)),
                  K.decode_deltas_to_boxes(anchors, theirs, "xyxy", "rel_xywh", encoded_format=encoding,
                                           variance=variance, image_shape=(80, 100, 3)))
