"""Synthetic detection scenes: grey images holding 1-4 circles, squares and triangles, each with its exact
bounding box and class, seeded (no download). The object-detection recipe trains on them.

    >>> from lamina.datasets import scenes
    >>> (x, boxes), _ = scenes.load_data(num_train=4, num_test=1)
    >>> x.shape, boxes.shape                     # boxes: (N, max_objects, 5) rows [class, x1, y1, x2, y2]
    ((4, 64, 64, 1), (4, 4, 5))

Objects never overlap (a new object is dropped when it would touch one already placed), so every box is the
exact pixel extent of its shape: x1, y1 the first pixel column and row it covers, x2, y2 one past the last.
Unused rows have class -1.
"""
import numpy as np

from .synthetic import _shape_inside

__all__ = ["CLASSES", "scenes", "load_data"]

CLASSES = ("circle", "square", "triangle")


def scenes(n, size=64, max_objects=4, min_radius=5.0, max_radius=10.0, noise=0.05, seed=0):
    """n images float32 (n, size, size, 1) in [0, 1] and boxes float32 (n, max_objects, 5)."""
    n, size, max_objects = int(n), int(size), int(max_objects)
    if n < 0 or size < 16 or max_objects < 1 or not 0 < min_radius <= max_radius < size / 4:
        raise ValueError(f"scenes: need n >= 0, size >= 16, max_objects >= 1 and 0 < min_radius <= max_radius < "
                         f"size / 4. Received: n={n}, size={size}, max_objects={max_objects}, "
                         f"radius=({min_radius}, {max_radius})")
    rng = np.random.default_rng(seed)
    wanted = rng.integers(1, max_objects + 1, size=n)
    kind = rng.integers(0, 3, size=(n, max_objects))
    radius = rng.uniform(min_radius, max_radius, size=(n, max_objects))
    cy = rng.uniform(1.2 * radius, size - 1 - 1.2 * radius)
    cx = rng.uniform(1.2 * radius, size - 1 - 1.2 * radius)
    bright = rng.uniform(0.45, 1.0, size=(n, max_objects))
    background = rng.uniform(0.0, 0.15, size=(n, 1, 1))
    pixel_noise = rng.normal(0.0, noise, size=(n, size, size))
    # keep slot k when it is wanted and clear of every kept earlier slot (a loop over the few slots only)
    keep = np.zeros((n, max_objects), bool)
    for k in range(max_objects):
        clear = np.ones(n, bool)
        for j in range(k):
            gap = np.hypot(cy[:, k] - cy[:, j], cx[:, k] - cx[:, j]) - 1.25 * (radius[:, k] + radius[:, j]) - 2
            clear &= ~keep[:, j] | (gap > 0)
        keep[:, k] = (k < wanted) & clear
    grid = np.arange(size, dtype=np.float64)
    images = np.broadcast_to(background, (n, size, size)).copy()
    boxes = np.full((n, max_objects, 5), -1.0, np.float32)
    for k in range(max_objects):
        dy = grid[None, :, None] - cy[:, k, None, None]
        dx = grid[None, None, :] - cx[:, k, None, None]
        inside = _shape_inside(kind[:, k], keep[:, k], dy, dx, radius[:, k, None, None])
        images = np.where(inside, bright[:, k, None, None], images)
        rows, cols = inside.any(axis=2), inside.any(axis=1)          # (n, size) each
        present = rows.any(axis=1)
        y1, x1 = rows.argmax(axis=1), cols.argmax(axis=1)
        y2, x2 = size - rows[:, ::-1].argmax(axis=1), size - cols[:, ::-1].argmax(axis=1)
        boxes[:, k] = np.where(present[:, None], np.stack([kind[:, k], x1, y1, x2, y2], axis=1), -1.0)
    # kept objects first in each row
    order = np.argsort(boxes[:, :, 0] < 0, axis=1, kind="stable")
    boxes = np.take_along_axis(boxes, order[:, :, None], axis=1)
    images = np.clip(images + pixel_noise, 0.0, 1.0).astype(np.float32)
    return images[..., None], boxes


def load_data(num_train=2000, num_test=400, size=64, max_objects=4, seed=0):
    """((x_train, boxes_train), (x_test, boxes_test)); train and test come from different seeds."""
    return (scenes(num_train, size, max_objects, seed=seed),
            scenes(num_test, size, max_objects, seed=seed + 10_007))
