"""``keras.visualization``: pictures of image batches for learners, with Keras 3.15's names and arguments.

- ``draw_bounding_boxes`` / ``draw_segmentation_masks``: a batch of images (N, H, W, C) with boxes or class masks
  painted in, as uint8 NumPy arrays;
- ``plot_image_gallery``: a grid of images (titles from labels), shown or saved to a file;
  ``plot_bounding_box_gallery`` and ``plot_segmentation_mask_gallery``: the same with boxes (ground truth and
  predictions in two colours) or masks (beside each image).

The boxes are drawn by lamina in NumPy (an outline ``line_thickness`` pixels wide around each box's edges) and
their class names with Pillow's default font, where Keras calls OpenCV: the same places and colours, not the same
pixels of the text. The galleries need matplotlib (``pip install 'lamina[plot]'``), the class names Pillow; a
gallery is saved atomically (lamina.plotting.save_figure) when given a ``path``, else shown.
"""
import math

import numpy as np

from .ops.image import _data_format
from .plotting import _pyplot
from .tensor import host_array as _host
from .utils.bounding_boxes import _convert

__all__ = ["draw_bounding_boxes", "draw_segmentation_masks", "plot_image_gallery", "plot_bounding_box_gallery",
           "plot_segmentation_mask_gallery"]


def _batched(images, what="images"):
    images = _host(images)
    if images.ndim != 4:
        raise ValueError(f"`{what}` must be batched 4D tensor. Received: {what}.shape={images.shape}")
    return images


def _channels_last(images, data_format):
    return images.transpose(0, 2, 3, 1) if _data_format(data_format) == "channels_first" else images


def _text_location(x, y, font_scale, thickness):
    """Where a box's label goes: above its top edge, or inside it below the edge near the image's top (Keras's
    placement)."""
    font_height = int(font_scale * 12)
    if y - 8 - 2 * font_height > 0:
        return x, y - 8
    return x + 3, y + 2 * font_height + thickness + 3


def _draw_text(image, text, origin, color, font_scale):
    """``text`` onto image (H, W, C uint8, in place), its baseline at ``origin`` (x, y)."""
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        raise ImportError("draw_bounding_boxes writes class names with Pillow: pip install pillow") from None
    size = max(int(round(20 * font_scale)), 6)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:   # (Pillow < 10.1: one size)
        font = ImageFont.load_default()
    channels = image.shape[-1]
    picture = Image.fromarray(image if channels in (3, 4) else image[..., 0])
    ImageDraw.Draw(picture).text(origin, text, fill=tuple(color[:channels]) if channels > 1 else color[0],
                                 font=font, anchor="ls")
    drawn = np.asarray(picture)
    image[...] = drawn if drawn.ndim == 3 else drawn[..., None]


def _outline(image, x1, y1, x2, y2, color, thickness):
    """The rectangle's edges, ``thickness`` pixels wide and centred on them, clipped to the image (in place)."""
    h, w = image.shape[:2]
    lo, hi = thickness // 2, (thickness - 1) // 2 + 1
    color = np.asarray(color, image.dtype)[:image.shape[-1]]

    def fill(r0, r1, c0, c1):
        r0, r1, c0, c1 = max(r0, 0), min(r1, h), max(c0, 0), min(c1, w)
        if r0 < r1 and c0 < c1:
            image[r0:r1, c0:c1] = color
    xa, xb, ya, yb = min(x1, x2), max(x1, x2), min(y1, y2), max(y1, y2)
    fill(ya - lo, ya + hi, xa - lo, xb + hi)   # top
    fill(yb - lo, yb + hi, xa - lo, xb + hi)   # bottom
    fill(ya - lo, yb + hi, xa - lo, xa + hi)   # left
    fill(ya - lo, yb + hi, xb - lo, xb + hi)   # right


def draw_bounding_boxes(images, bounding_boxes, bounding_box_format, class_mapping=None, color=(128, 128, 128),
                        line_thickness=2, text_thickness=1, font_scale=1.0, data_format=None):
    """The images (N, H, W, C) as uint8 with each box of ``bounding_boxes`` ({"boxes": (N, B, 4), "labels":
    (N, B)[, "confidences": (N, B)]}, in ``bounding_box_format``) outlined in ``color``; a box labelled -1 is
    skipped, and a label in ``class_mapping`` is written by the box (with its confidence when given). Float
    images are read as [0, 1] when none exceeds 1, else [0, 255]."""
    images = _channels_last(_batched(images), data_format).copy()
    if not isinstance(bounding_boxes, dict):
        raise TypeError(f"`bounding_boxes` should be a dict. Received: bounding_boxes={bounding_boxes} of type "
                        f"{type(bounding_boxes)}")
    if "boxes" not in bounding_boxes or "labels" not in bounding_boxes:
        raise ValueError(f"`bounding_boxes` should be a dict containing 'boxes' and 'labels' keys. Received: "
                         f"bounding_boxes={bounding_boxes}")
    class_mapping = class_mapping or {}
    text_thickness = text_thickness or line_thickness
    height, width = images.shape[1:3]
    boxes = _convert(bounding_boxes["boxes"], bounding_box_format, "xyxy", height, width)
    labels = _host(bounding_boxes["labels"])
    confidences = _host(bounding_boxes["confidences"]) if "confidences" in bounding_boxes else None
    if images.dtype.kind == "f" and images.size:
        images = np.clip(images, 0, 1) * 255 if images.max() <= 1.0 else np.clip(images, 0, 255)
    images = images.astype(np.uint8)
    for i, image in enumerate(images):
        for j, box in enumerate(boxes[i]):
            c = int(labels[i][j])
            if c == -1:
                continue
            x1, y1, x2, y2 = (int(v) for v in box.astype(np.int32))
            _outline(image, x1, y1, x2, y2, color, line_thickness)
            if c in class_mapping:
                text = str(class_mapping[c])
                if confidences is not None:
                    text = f"{text} | {float(confidences[i][j]):.2f}"
                _draw_text(image, text, _text_location(x1, y1, font_scale, text_thickness), color, font_scale)
    return images


def _palette(num_classes):
    """Keras's colours for classes 0..num_classes-1 (a fixed spread of RGB triples)."""
    base = np.array([2 ** 25 - 1, 2 ** 15 - 1, 2 ** 21 - 1])
    return [((i * base) % 255).tolist() for i in range(num_classes)]


def draw_segmentation_masks(images, segmentation_masks, num_classes=None, color_mapping=None, alpha=0.8, blend=True,
                            ignore_index=-1, data_format=None):
    """The images (N, H, W, C) with each pixel's class (``segmentation_masks``, integers (N, H, W, 1)) painted in its
    colour (``color_mapping[class]``, else Keras's palette): blended, ``alpha`` of the colour, as uint8 (pixels of
    ``ignore_index`` keep the image), or the painted float32 images with ``blend=False``. As in Keras 3.15,
    ``num_classes`` defaults to the largest class present, and classes from ``num_classes`` on are not painted."""
    images = _channels_last(_batched(images), data_format).astype(np.float32)
    masks = _channels_last(_batched(segmentation_masks, "segmentation_masks"), data_format)
    if masks.dtype.kind not in "iu":
        raise TypeError(f"`segmentation_masks` must be in integer dtype. Received: segmentation_masks.dtype="
                        f"{masks.dtype}")
    masks = masks[..., 0]
    if num_classes is None:
        num_classes = int(masks.max())
    colors = _palette(num_classes) if color_mapping is None else [color_mapping[i] for i in range(num_classes)]
    painted = images.copy()
    for k, color in enumerate(colors):
        painted[masks == k] = np.asarray(color, np.float32)
    if not blend:
        return painted
    mixed = images * (1 - alpha) + painted * alpha
    return np.where((masks != ignore_index)[..., None], mixed, images).astype(np.uint8)


def plot_image_gallery(images, y_true=None, y_pred=None, label_map=None, rows=None, cols=None, value_range=(0, 255),
                       scale=2, path=None, show=None, transparent=True, dpi=60, legend_handles=None,
                       data_format=None):
    """The first ``rows`` x ``cols`` images (default: a square-ish grid of the batch) in one figure, each titled
    with its ``label_map`` names of ``y_true`` / ``y_pred`` when given; images in ``value_range`` are shown on
    [0, 255]. Saved to ``path`` (then closed), or shown (``show``, the default without a path)."""
    if path is not None and show:
        raise ValueError("plot_gallery() expects either `path` to be set, or `show` to be true.")
    if (y_true is not None or y_pred is not None) and label_map is None:
        raise ValueError("If `y_true` or `y_pred` are provided, a `label_map` must also be provided.")
    plt = _pyplot(headless=False)   # (shown in the user's backend, a notebook's too)
    show = show if show is not None else path is None
    images = _host(images)
    if images.ndim != 4:
        raise ValueError("`plot_images_gallery()` requires you to batch your `np.array` samples together.")
    batch = images.shape[0]
    rows = rows or int(math.ceil(math.sqrt(batch)))
    cols = cols or int(math.ceil(batch // rows))
    images = _channels_last(images[:rows * cols], data_format).astype(np.float32)
    low, high = (float(v) for v in value_range)
    if (low, high) != (0.0, 255.0):
        images = (images - low) / (high - low) * 255.0
    fig, axes = plt.subplots(nrows=rows, ncols=cols, figsize=(cols * scale, rows * scale), frameon=False,
                             layout="tight", squeeze=False, sharex="row", sharey="col")
    fig.subplots_adjust(wspace=0, hspace=0)
    if legend_handles is not None:
        fig.legend(handles=legend_handles, loc="lower center")
    y_true = None if y_true is None else _host(y_true)
    y_pred = None if y_pred is None else _host(y_pred)
    for index in range(rows * cols):
        ax = axes[index // cols, index % cols]
        ax.axis("off")
        if index >= len(images):
            continue
        picture = images[index].astype(np.uint8)
        ax.imshow(picture[..., 0] if picture.shape[-1] == 1 else picture, cmap="gray" if picture.shape[-1] == 1
                  else None)
        ax.margins(x=0, y=0)
        title = []
        if y_true is not None and index < len(y_true):
            title.append(f"Label: {label_map.get(_key(y_true[index]), 'Unknown')}")
        if y_pred is not None and index < len(y_pred):
            title.append(f"Pred: {label_map.get(_key(y_pred[index]), 'Unknown')}")
        if title:
            ax.set_title("  ".join(title), fontsize=8)
    if path is not None:
        from .plotting import save_figure
        save_figure(fig, path, close=True, pad_inches=0, bbox_inches="tight", transparent=transparent, dpi=dpi)
    elif show:
        plt.show()
        plt.close(fig)
    return fig


def _key(label):
    """A label_map key from one label (a NumPy scalar or a one-element array)."""
    value = np.asarray(label).reshape(-1)
    return value[0].item() if value.size == 1 else tuple(value.tolist())


def plot_bounding_box_gallery(images, bounding_box_format, y_true=None, y_pred=None, value_range=(0, 255),
                              true_color=(0, 188, 212), pred_color=(255, 235, 59), line_thickness=2, font_scale=1.0,
                              text_thickness=None, class_mapping=None, ground_truth_mapping=None,
                              prediction_mapping=None, legend=False, legend_handles=None, rows=None, cols=None,
                              data_format=None, **kwargs):
    """plot_image_gallery of the images with the boxes of ``y_true`` (``true_color``) and ``y_pred``
    (``pred_color``) drawn in (draw_bounding_boxes), and with ``legend`` a legend of the two colours."""
    images = _channels_last(_batched(images), data_format)
    drawn = images
    for boxes, color, mapping in ((y_true, true_color, ground_truth_mapping or class_mapping),
                                  (y_pred, pred_color, prediction_mapping or class_mapping)):
        if boxes is not None:
            drawn = draw_bounding_boxes(drawn, boxes, bounding_box_format, class_mapping=mapping, color=color,
                                        line_thickness=line_thickness, text_thickness=text_thickness,
                                        font_scale=font_scale)
    if legend:
        if legend_handles:
            raise ValueError("Only pass `legend` OR `legend_handles` to "
                             "`keras.visualization.plot_bounding_box_gallery()`.")
        from matplotlib import patches
        legend_handles = [patches.Patch(color=np.array(true_color) / 255.0, label="Ground Truth"),
                          patches.Patch(color=np.array(pred_color) / 255.0, label="Prediction")]
    return plot_image_gallery(drawn, value_range=value_range, legend_handles=legend_handles, rows=rows, cols=cols,
                              **kwargs)


def plot_segmentation_mask_gallery(images, num_classes, value_range=(0, 255), y_true=None, y_pred=None,
                                   color_mapping=None, blend=True, alpha=0.8, ignore_index=-1, data_format=None,
                                   **kwargs):
    """A gallery with one row a sample: the image, then its ``y_true`` and ``y_pred`` masks painted over it
    (draw_segmentation_masks)."""
    images = _channels_last(_batched(images), data_format)
    columns = [images]
    for masks in (y_true, y_pred):
        if masks is not None:
            masks = _channels_last(_host(masks), data_format).astype(np.int32)
            columns.append(draw_segmentation_masks(images, masks, num_classes=num_classes,
                                                   color_mapping=color_mapping, alpha=alpha, blend=blend,
                                                   ignore_index=ignore_index))
    gallery = np.stack([c[i].astype(np.float32) for i in range(len(images)) for c in columns])
    return plot_image_gallery(gallery, value_range=value_range, rows=len(images), cols=len(columns), **kwargs)
