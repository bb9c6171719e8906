"""keras.visualization (lamina/visualization.py): masks painted as Keras paints them (against real Keras 3.15),
boxes outlined where they are, and the galleries saved as pictures."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
import lamina  # noqa: E402

from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")

V = lamina.visualization


def _images(n=2, size=24, seed=0):
    return (np.random.default_rng(seed).random((n, size, size, 3)) * 255).astype("float32")


def test_segmentation_masks_painted_as_keras():
    images = _images(size=8)
    masks = np.random.default_rng(1).integers(-1, 4, (2, 8, 8, 1)).astype("int32")
    for kw in ({"num_classes": 5}, {"num_classes": 4, "alpha": 0.3}, {"num_classes": 4, "blend": False},
               {"num_classes": 4, "color_mapping": {0: (1, 2, 3), 1: (250, 0, 0), 2: (0, 250, 0), 3: (9, 9, 9)}}):
        mine = V.draw_segmentation_masks(images, masks, **kw)
        theirs = keras.ops.convert_to_numpy(keras.visualization.draw_segmentation_masks(images, masks, **kw))
        assert mine.dtype == theirs.dtype
        np.testing.assert_array_equal(mine, theirs)


def test_segmentation_masks_by_hand():
    images = np.full((1, 2, 2, 3), 100.0, "float32")
    masks = np.array([[[0], [1]], [[-1], [1]]], "int32")[None]
    out = V.draw_segmentation_masks(images, masks, num_classes=2, color_mapping={0: (0, 0, 0), 1: (200, 0, 0)},
                                    alpha=0.5)
    np.testing.assert_array_equal(out[0, 0, 0], [50, 50, 50])      # half black
    np.testing.assert_array_equal(out[0, 0, 1], [150, 50, 50])     # half red
    np.testing.assert_array_equal(out[0, 1, 0], [100, 100, 100])   # ignore_index: the image
    with pytest.raises(TypeError, match="integer"):
        V.draw_segmentation_masks(images, masks.astype("float32"))


def test_boxes_are_outlined_where_they_are():
    images = np.zeros((2, 20, 20, 3), "float32")              # floats <= 1: read as [0, 1]
    boxes = {"boxes": np.array([[[2, 3, 10, 12], [0, 0, 5, 5]], [[5, 5, 15, 15], [1, 1, 2, 2]]], "float32"),
             "labels": np.array([[0, -1], [1, 1]])}
    out = V.draw_bounding_boxes(images, boxes, "xyxy", color=(255, 0, 0), line_thickness=1)
    assert out.dtype == np.uint8 and out.shape == (2, 20, 20, 3)
    red = (out[..., 0] == 255) & (out[..., 1] == 0)
    expected = np.zeros((20, 20), bool)
    expected[3, 2:11] = expected[12, 2:11] = True
    expected[3:13, 2] = expected[3:13, 10] = True
    np.testing.assert_array_equal(red[0], expected)           # the second box (label -1) is not drawn
    assert not red[0][4:12, 3:10].any()                       # the inside stays
    thick = V.draw_bounding_boxes(images, boxes, "xyxy", color=(255, 0, 0), line_thickness=3)
    assert thick[0, 2, 5, 0] == 255 and thick[0, 4, 5, 0] == 255 and thick[0, 5, 5, 0] == 0   # 3 rows around y=3
    rel = dict(boxes, boxes=boxes["boxes"] / 20)              # the same boxes in a relative format
    np.testing.assert_array_equal(V.draw_bounding_boxes(images, rel, "rel_xyxy", color=(255, 0, 0),
                                                        line_thickness=1), out)
    named = V.draw_bounding_boxes(images, boxes, "xyxy", class_mapping={1: "cat"}, color=(0, 255, 0))
    assert (named[1, :5] != 0).any() or (named[1, 5:15, 5:15] != 0).sum() > (out[1, 5:15, 5:15] != 0).sum()
    with pytest.raises(ValueError, match="'boxes' and 'labels'"):
        V.draw_bounding_boxes(images, {"boxes": boxes["boxes"]}, "xyxy")
    with pytest.raises(ValueError, match="4D"):
        V.draw_bounding_boxes(images[0], boxes, "xyxy")


def test_galleries_are_saved(tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image
    images = _images(n=4)
    path = tmp_path / "g.png"
    V.plot_image_gallery(images, y_true=np.array([0, 1, 1, 0]), label_map={0: "cat", 1: "dog"}, path=path)
    assert Image.open(path).size[0] > 0
    V.plot_image_gallery(images / 255.0, value_range=(0, 1), rows=1, cols=3, path=tmp_path / "row.png")
    boxes = {"boxes": np.array([[[2, 3, 10, 12]]] * 4, "float32"), "labels": np.zeros((4, 1), int)}
    V.plot_bounding_box_gallery(images, "xyxy", y_true=boxes, y_pred=boxes, class_mapping={0: "a"}, legend=True,
                                path=tmp_path / "b.png")
    masks = np.zeros((4, 24, 24, 1), "int32")
    V.plot_segmentation_mask_gallery(images, num_classes=2, y_true=masks, y_pred=masks, path=tmp_path / "m.png")
    for name in ("row.png", "b.png", "m.png"):
        assert Image.open(tmp_path / name).size[0] > 0
    with pytest.raises(ValueError, match="label_map"):
        V.plot_image_gallery(images, y_true=np.zeros(4), path=tmp_path / "x.png")
    with pytest.raises(ValueError, match="either `path`"):
        V.plot_image_gallery(images, path=tmp_path / "x.png", show=True)
