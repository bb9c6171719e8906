"""Object detection: a single-stage grid detector in the YOLO style, trained on synthetic scenes.

    lamina train detection        # mAP@0.5 on held-out scenes, and detections.png

The image (64x64) goes through a small convolutional backbone down to an 8x8 grid; each cell predicts
whether an object's centre falls in it (objectness), the box (centre offset in the cell and the size
relative to the cell), and the class. The object whose centre lies in a cell is that cell's target. The
loss adds binary cross-entropy on objectness over every cell, and, on the cells holding an object, the box
error as (1 - IoU) plus a squared error on the encoded box, and the class cross-entropy. At inference the
cells' scores (objectness times class probability) are thresholded and non-maximum suppression keeps the
best of overlapping boxes per class.

Box utilities (``iou``, ``nms``, ``encode_boxes``, ``decode_predictions``, ``average_precision``,
``mean_average_precision``) are plain NumPy functions with tests of their own. Boxes are [x1, y1, x2, y2] in
pixels.
"""
import os
import time

import numpy as np

from .. import backend, layers, losses, ops, optimizers
from ..datasets import scenes as scene_data
from ..models import Sequential
from . import common

__all__ = ["iou", "nms", "encode_boxes", "decode_predictions", "average_precision", "mean_average_precision",
           "detector", "detection_loss", "DetectionLoss", "detect", "draw_detections", "class_name",
           "train_detection", "RECIPES"]

GRID, CELL, IMAGE = 8, 8, 64
NUM_CLASSES = len(scene_data.CLASSES)
CHANNELS = 5 + NUM_CLASSES            # objectness, tx, ty, tw, th, class scores


# ------------------------------------------------------------------------------------ box utilities
def iou(a, b):
    """Pairwise intersection over union of boxes a (N, 4) and b (M, 4): an (N, M) array."""
    a, b = np.asarray(a, np.float64).reshape(-1, 4), np.asarray(b, np.float64).reshape(-1, 4)
    return _iou(a[:, None, :], b[None, :, :])


def _iou(a, b):
    """IoU of the boxes a (..., 4) and b (..., 4) broadcast against each other (float64)."""
    x1 = np.maximum(a[..., 0], b[..., 0])
    y1 = np.maximum(a[..., 1], b[..., 1])
    x2 = np.minimum(a[..., 2], b[..., 2])
    y2 = np.minimum(a[..., 3], b[..., 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda z: np.clip(z[..., 2] - z[..., 0], 0, None) * np.clip(z[..., 3] - z[..., 1], 0, None)  # noqa: E731
    union = area(a) + area(b) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


# Up to this many boxes NMS computes every pair's IoU at once (256^2 float64: 0.5 MB an array), then only
# walks the kept boxes; more boxes take one IoU row per kept box, so memory stays linear.
_NMS_PAIRS = 256


def nms(boxes, scores, iou_threshold=0.45, max_output=100):
    """Indices of the boxes kept by greedy non-maximum suppression, best score first."""
    boxes, scores = np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores, np.float64).ravel()
    order = np.argsort(-scores, kind="stable")
    keep = []
    if order.size <= _NMS_PAIRS:
        ranked = boxes[order]
        stays = iou(ranked, ranked) <= iou_threshold      # stays[i, j]: box j survives kept box i
        alive = np.ones(order.size, bool)
        for i in range(order.size):
            if alive[i]:
                keep.append(int(order[i]))
                if len(keep) == max_output:
                    break
                alive[i + 1:] &= stays[i, i + 1:]
        return np.array(keep, np.int64)
    while order.size and len(keep) < max_output:   # one pass per kept box, each vectorised over the rest
        best = order[0]
        keep.append(int(best))
        rest = order[1:]
        order = rest[iou(boxes[best], boxes[rest])[0] <= iou_threshold]
    return np.array(keep, np.int64)


def encode_boxes(boxes, grid=GRID, cell=CELL):
    """Targets (N, grid, grid, CHANNELS) from boxes (N, K, 5) rows [class, x1, y1, x2, y2] (class -1: none).
    A cell's target: objectness 1, (tx, ty) the centre's offset within the cell in [0, 1), (tw, th) the log
    of the box size over the cell size, and the one-hot class. Two centres in one cell: the larger box wins."""
    boxes = np.asarray(boxes, np.float64)
    n, k = boxes.shape[:2]
    out = np.zeros((n, grid, grid, 5 + NUM_CLASSES), np.float32)
    valid = boxes[:, :, 0] >= 0
    cx, cy = (boxes[:, :, 1] + boxes[:, :, 3]) / 2, (boxes[:, :, 2] + boxes[:, :, 4]) / 2
    w, h = boxes[:, :, 3] - boxes[:, :, 1], boxes[:, :, 4] - boxes[:, :, 2]
    col = np.clip((cx // cell).astype(int), 0, grid - 1)
    row = np.clip((cy // cell).astype(int), 0, grid - 1)
    for slot in np.argsort(w * h, axis=1).T:          # smallest first, so larger boxes overwrite: K passes
        i = np.arange(n)
        ok = valid[i, slot]
        r, c = row[i, slot][ok], col[i, slot][ok]
        ii, s = i[ok], slot[ok]
        out[ii, r, c, 0] = 1.0
        out[ii, r, c, 1] = cx[ii, s] / cell - c
        out[ii, r, c, 2] = cy[ii, s] / cell - r
        out[ii, r, c, 3] = np.log(w[ii, s] / cell)
        out[ii, r, c, 4] = np.log(h[ii, s] / cell)
        out[ii, r, c, 5:] = 0.0
        out[ii, r, c, 5 + boxes[ii, s, 0].astype(int)] = 1.0
    return out


def _sigmoid(z):
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1 / (1 + e), e / (1 + e))


def decode_predictions(raw, score_threshold=0.05, iou_threshold=0.45, cell=CELL):
    """Per image, the detections [(class, score, x1, y1, x2, y2), ...] from raw outputs (N, grid, grid,
    CHANNELS): score = objectness x class probability, thresholded, then NMS per class."""
    raw = np.asarray(raw, np.float64)
    n, gh, gw, _ = raw.shape
    cols, rows = np.meshgrid(np.arange(gw), np.arange(gh))
    obj = _sigmoid(raw[..., 0])
    cx = (cols + _sigmoid(raw[..., 1])) * cell
    cy = (rows + _sigmoid(raw[..., 2])) * cell
    w = np.exp(np.clip(raw[..., 3], -8, 8)) * cell
    h = np.exp(np.clip(raw[..., 4], -8, 8)) * cell
    logits = raw[..., 5:]
    probs = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    cls = probs.argmax(axis=-1)
    score = obj * probs.max(axis=-1)
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)
    out = []
    for i in range(n):              # per image: a variable number of detections
        keep = score[i] > score_threshold
        b, s, c = boxes[i][keep], score[i][keep], cls[i][keep]
        found = []
        for k in np.unique(c):
            idx = np.flatnonzero(c == k)
            for j in idx[nms(b[idx], s[idx], iou_threshold)]:
                found.append((int(k), float(s[j]), *map(float, b[j])))
        out.append(sorted(found, key=lambda d: -d[1]))
    return out


def average_precision(recall, precision):
    """Area under the precision-recall curve with the precision envelope (VOC's all-point interpolation)."""
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    step = np.flatnonzero(r[1:] != r[:-1])
    return float(np.sum((r[step + 1] - r[step]) * p[step + 1]))


def mean_average_precision(detections, boxes, iou_threshold=0.5, num_classes=NUM_CLASSES):
    """mAP@iou_threshold as VOC/COCO define it: per class, detections of all images sorted by score, each a
    true positive when it overlaps an unmatched ground-truth box of its class in its image by at least the
    threshold; AP is the area under the interpolated precision-recall curve; mAP the mean over classes
    that have ground truth. Returns (mAP, {class: AP})."""
    boxes = np.asarray(boxes)
    flat = [(d[0], d[1], i, d[2:6]) for i, ds in enumerate(detections) for d in ds]
    det_cls = np.array([d[0] for d in flat], np.int64)
    det_score = np.array([d[1] for d in flat], np.float64)
    det_img = np.array([d[2] for d in flat], np.int64)
    det_box = np.array([d[3] for d in flat], np.float64).reshape(-1, 4)
    aps = {}
    for k in range(num_classes):
        mine = boxes[..., 0] == k                                  # (images, K) ground truth of class k
        total = int(mine.sum())
        if total == 0:
            continue
        # each image's boxes of class k in their order, padded to the longest (padding never matches)
        slots = max(1, int(mine.sum(axis=1).max()))
        gt = np.zeros((len(boxes), slots, 4))
        real = np.zeros((len(boxes), slots), bool)
        rank = np.cumsum(mine, axis=1) - 1
        img, col = np.nonzero(mine)
        gt[img, rank[img, col]] = boxes[img, col, 1:5]
        real[img, rank[img, col]] = True
        sel = np.flatnonzero(det_cls == k)
        sel = sel[np.argsort(-det_score[sel], kind="stable")]     # by score; ties in detection order
        tp = np.zeros(len(sel))
        if len(sel):
            imgs = det_img[sel]
            overlaps = np.where(real[imgs], _iou(det_box[sel][:, None, :], gt[imgs]), -np.inf)
            # Greedy matching, in score order within each image (images never share a ground truth): the
            # r-th detection of every image at once, r = 0, 1, ...
            used = np.zeros_like(real)
            order = np.argsort(imgs, kind="stable")                # by image, score order kept within one
            starts = np.searchsorted(imgs[order], imgs[order], side="left")
            nth = np.arange(len(sel)) - starts                     # each detection's rank within its image
            for r in range(int(nth.max()) + 1):
                js = order[nth == r]
                ov = np.where(used[imgs[js]], -1.0, overlaps[js])
                best = np.argmax(ov, axis=1)
                hit = ov[np.arange(len(js)), best] >= iou_threshold
                used[imgs[js][hit], best[hit]] = True
                tp[js[hit]] = 1
        hits = np.cumsum(tp)
        recall = hits / total
        precision = hits / np.arange(1, len(sel) + 1) if len(sel) else np.zeros(0)
        aps[scene_data.CLASSES[k] if k < len(scene_data.CLASSES) else k] = average_precision(recall, precision)
    return (float(np.mean(list(aps.values()))) if aps else 0.0), aps


# ------------------------------------------------------------------------------------- the model
def detector(input_shape=(IMAGE, IMAGE, 1), width=32):
    """Backbone 64 -> 8 (three conv + pool stages) and a 1x1 head with CHANNELS outputs per cell."""
    return Sequential([
        layers.Input(input_shape),
        layers.Conv2D(width // 2, 3, padding="same", activation="relu"), layers.MaxPooling2D(2),
        layers.Conv2D(width, 3, padding="same", activation="relu"), layers.MaxPooling2D(2),
        layers.Conv2D(2 * width, 3, padding="same", activation="relu"), layers.MaxPooling2D(2),
        layers.Conv2D(2 * width, 3, padding="same", activation="relu"),
        layers.Conv2D(CHANNELS, 1, name="head"),
    ], name="grid_detector")


def _box_iou(px, py, pw, ph, tx, ty, tw, th):
    """IoU of centre-size boxes (tensors), differentiable in the predicted ones."""
    ix = ops.maximum(ops.minimum(px + pw / 2, tx + tw / 2) - ops.maximum(px - pw / 2, tx - tw / 2), 0.0)
    iy = ops.maximum(ops.minimum(py + ph / 2, ty + th / 2) - ops.maximum(py - ph / 2, ty - th / 2), 0.0)
    inter = ix * iy
    return inter / (pw * ph + tw * th - inter + 1e-9)


def detection_loss(y_true, y_pred):
    """Objectness BCE on every cell; on object cells (1 - IoU) + squared error of the encoded box, and the
    class cross-entropy; the object terms averaged over the objects in the batch."""
    obj = y_true[..., 0]
    positives = ops.maximum(ops.sum(obj), 1.0)
    logit = y_pred[..., 0]
    # BCE with logits, stable: max(z, 0) - z t + log(1 + e^-|z|); object cells weighted up (they are few)
    bce = ops.maximum(logit, 0.0) - logit * obj + ops.log1p(ops.exp(-ops.abs(logit)))
    obj_loss = ops.sum(bce * (1.0 + 4.0 * obj)) / ops.cast(ops.size(obj), "float32")
    pxy = ops.sigmoid(y_pred[..., 1:3])
    pwh = y_pred[..., 3:5]
    box_sq = ops.sum(ops.square(pxy - y_true[..., 1:3]) + ops.square(pwh - y_true[..., 3:5]), axis=-1)
    pw, ph = ops.exp(ops.clip(pwh[..., 0], -8.0, 8.0)), ops.exp(ops.clip(pwh[..., 1], -8.0, 8.0))
    tw, th = ops.exp(y_true[..., 3]), ops.exp(y_true[..., 4])
    overlap = _box_iou(pxy[..., 0], pxy[..., 1], pw, ph, y_true[..., 1], y_true[..., 2], tw, th)
    cls = -ops.sum(y_true[..., 5:] * ops.nn.log_softmax(y_pred[..., 5:], axis=-1), axis=-1)
    object_terms = ops.sum(obj * (box_sq + (1.0 - overlap) + cls)) / positives
    return obj_loss * ops.cast(ops.size(obj), "float32") / positives * 0.1 + object_terms


class DetectionLoss(losses.Loss):
    """``detection_loss`` as a registered Loss, so a compiled detector saves and loads with its loss."""

    def __init__(self, name="detection_loss", reduction="sum", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        return detection_loss(y_true, y_pred)


def detect(model, images, score_threshold=0.3, iou_threshold=0.45):
    """Detections [(class, score, x1, y1, x2, y2), ...] for each image."""
    raw = model.predict(np.asarray(images, np.float32), verbose=0)
    return decode_predictions(raw, score_threshold, iou_threshold)


def draw_detections(images, detections, path, boxes=None, columns=4):
    """Save a picture of the images with their detections (coloured boxes labelled with class and score) and,
    when ``boxes`` are given, the true boxes (dotted). Returns False when matplotlib is not installed."""
    try:
        from ..plotting import _pyplot, save_figure
        plt = _pyplot()
    except ImportError:
        return False
    colours = ("tab:red", "tab:green", "tab:blue")
    n = len(images)
    columns = min(columns, n)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.5 * columns, 2.7 * rows), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i >= n:
            continue
        img = np.asarray(images[i])
        ax.imshow(img[..., 0] if img.ndim == 3 and img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
        if boxes is not None:
            truth = np.asarray(boxes[i])
            for c, x1, y1, x2, y2 in truth[truth[:, 0] >= 0]:
                ax.add_patch(plt.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, ls=":", ec="white"))
        for c, s, x1, y1, x2, y2 in detections[i]:
            colour = colours[int(c) % len(colours)]
            ax.add_patch(plt.Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, lw=2, ec=colour))
            ax.text(x1, y1 - 1, f"{class_name(c)} {s:.2f}", color=colour, fontsize=7)
    fig.suptitle("detections" + (" (coloured) over the true boxes (dotted)" if boxes is not None else ""))
    fig.tight_layout()
    save_figure(fig, path, dpi=90, close=True)
    return True


def class_name(c):
    """The scenes data set's name of class index c."""
    return scene_data.CLASSES[int(c)] if 0 <= int(c) < NUM_CLASSES else str(int(c))


def train_detection(epochs=None, batch_size=None, out=None, seed=0, verbose=2, num_train=2000, num_test=400,
                    plot=True):
    """Train the grid detector on synthetic scenes and report mAP@0.5 on held-out scenes (and per class),
    against the mAP of the untrained network (a baseline that knows nothing)."""
    r = RECIPES["detection"]
    epochs, batch_size = epochs or r.epochs, batch_size or r.batch_size
    out = out or os.path.join("runs", r.name)
    backend.set_random_seed(seed)
    (x, boxes), (xt, boxes_t) = scene_data.load_data(num_train, num_test, seed=seed)
    model = detector()
    model.compile(optimizer=optimizers.Adam(r.learning_rate), loss=DetectionLoss())
    baseline, _ = mean_average_precision(detect(model, xt, score_threshold=0.05), boxes_t)
    common.say(verbose, f"Training '{r.name}' ({r.description}): {len(x)} training and {len(xt)} test scenes, "
                         f"{epochs} epochs, batch size {batch_size}, seed {seed}.")
    start = time.perf_counter()
    history = model.fit(x, encode_boxes(boxes), batch_size=batch_size, epochs=epochs,
                        verbose=common.fit_verbose(verbose),
                        validation_data=(xt, encode_boxes(boxes_t))).history
    seconds = time.perf_counter() - start
    detections = detect(model, xt, score_threshold=0.05)
    m_ap, per_class = mean_average_precision(detections, boxes_t)
    run = {"model": r.name, "dataset": r.dataset, "epochs": epochs, "batch_size": batch_size, "seed": seed,
           "test_map50": m_ap, "test_ap50_per_class": per_class, "untrained_map50": baseline,
           "train_seconds": round(seconds, 2), "params": int(model.count_params())}
    common.say(verbose, f"Test mAP@0.5 {m_ap:.3f} (" + ", ".join(f"{k} {v:.3f}" for k, v in per_class.items())
                + f"); untrained network {baseline:.3f}; {seconds:.1f} s of training.")
    common.save_run(out, {"model.lamina": model}, history, run, verbose, plot)
    if plot and draw_detections(xt[:8], detect(model, xt[:8]), os.path.join(out, "detections.png"), boxes_t[:8]):
        common.say(verbose, f"Saved {os.path.join(out, 'detections.png')}")
    return run


RECIPES = {r.name: r for r in [
    common.LoopRecipe("detection", lambda input_shape=(IMAGE, IMAGE, 1), num_classes=None: detector(input_shape),
                       "scenes", 15, 32, 2e-3,
                       "YOLO-style grid detector on synthetic scenes of shapes (mAP@0.5; detections PNG)",
                       train_detection),
]}

common.OTHER_DATASETS.setdefault("scenes", "64x64 synthetic scenes with 1-4 circles/squares/triangles and exact "
                                            "boxes (seeded)")
common.RECIPES.update({k: v for k, v in RECIPES.items() if k not in common.RECIPES})
