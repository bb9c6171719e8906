"""Seeded synthetic data sets that need no download: shapes with segmentation masks, 2-D distributions.

- ``shapes(n, size=32, ...)``: grey images of circles, squares and triangles on a noisy background, with a
  per-pixel class mask (0 background, 1 circle, 2 square, 3 triangle); ``load_shapes()`` splits it the way
  ``keras.datasets.*.load_data()`` does. The mask is computed from the same geometry that paints the image,
  so every pixel's label is exact, and shapes painted later hide the earlier ones in both.
- ``moons``, ``rings``, ``gaussian_ring``, ``sample_2d(name, n)``: points of small 2-D distributions, the
  usual first targets of a GAN (a GAN that misses modes of the 8-Gaussian ring is easy to see).

Everything is vectorised over samples and pixels; the same ``seed`` always gives the same arrays.
"""
import numpy as np

__all__ = ["SHAPE_CLASSES", "shapes", "load_shapes", "moons", "rings", "gaussian_ring", "sample_2d",
           "DISTRIBUTIONS"]

SHAPE_CLASSES = ("background", "circle", "square", "triangle")


def _circle(dy, dx, r):
    return dy * dy + dx * dx <= r * r


def _square(dy, dx, r):
    return (np.abs(dy) <= 0.8 * r) & (np.abs(dx) <= 0.8 * r)


def _triangle(dy, dx, r):
    inradius = 0.575 * r
    s = np.sqrt(3.0) / 2.0
    # outward unit normals of the three sides, in (x, y) with y pointing down: base (0, 1), slants (+-s, -1/2)
    return (dy <= inradius) & (s * dx - 0.5 * dy <= inradius) & (-s * dx - 0.5 * dy <= inradius)


def _shape_inside(which, active, dy, dx, r):
    """(N, H, W) bool: each image's inside test of its own shape (which (N,): 0 circle, 1 square, 2 triangle),
    False in the images that are not active ((N,) bool), for offsets (dy, dx) from each centre and size r
    (broadcast (N, 1, 1)). Each test runs on the images of its shape only.

    circle: radius r; square: axis-aligned, half side 0.8 r; triangle: equilateral, apex up, circumradius
    1.15 r (its inradius, the distance from the centre to each side, is half the circumradius)."""
    inside = np.zeros((len(which), dy.shape[1], dx.shape[2]), bool)
    for shape, test in enumerate((_circle, _square, _triangle)):
        chosen = (which == shape) & active
        if chosen.any():
            inside[chosen] = test(dy[chosen], dx[chosen], r[chosen])
    return inside


def shapes(n, size=32, max_shapes=3, min_radius=None, max_radius=None, noise=0.05, seed=0):
    """n grey images of random circles, squares and triangles with their segmentation masks.

    Each image holds 1..max_shapes shapes of random class, centre, size (radius between min_radius and
    max_radius, default 0.12 and 0.25 of size) and brightness (0.45..1), drawn one over the other on a dark
    background (0..0.15 plus Gaussian noise of std ``noise``); brightness says nothing about the class, so a
    model has to learn the geometry.

    Args:
        n: number of images.
        size: height and width in pixels (at least 8).
        max_shapes: most shapes per image (at least 1).
        min_radius, max_radius: shape size range in pixels.
        noise: standard deviation of the pixel noise.
        seed: seed of the generator (same seed, same arrays).
    Returns:
        images float32 (n, size, size, 1) in [0, 1]; masks int64 (n, size, size), values 0..3
        (``SHAPE_CLASSES``).
    """
    n, size, max_shapes = int(n), int(size), int(max_shapes)
    if n < 0 or size < 8 or max_shapes < 1:
        raise ValueError(f"shapes: need n >= 0, size >= 8 and max_shapes >= 1. Received: n={n}, size={size}, "
                         f"max_shapes={max_shapes}")
    lo = 0.12 * size if min_radius is None else float(min_radius)
    hi = 0.25 * size if max_radius is None else float(max_radius)
    if not 0 < lo <= hi < size / 2:
        raise ValueError(f"shapes: need 0 < min_radius <= max_radius < size / 2. Received: min_radius={lo}, "
                         f"max_radius={hi}, size={size}")
    rng = np.random.default_rng(seed)
    count = rng.integers(1, max_shapes + 1, size=n)
    kind = rng.integers(1, 4, size=(n, max_shapes))
    radius = rng.uniform(lo, hi, size=(n, max_shapes))
    # centres keep most of each shape inside the image (a part may be cut off at the border, as in photos)
    cy = rng.uniform(0.6 * radius, size - 1 - 0.6 * radius)
    cx = rng.uniform(0.6 * radius, size - 1 - 0.6 * radius)
    bright = rng.uniform(0.45, 1.0, size=(n, max_shapes))
    background = rng.uniform(0.0, 0.15, size=(n, 1, 1))
    pixel_noise = rng.normal(0.0, noise, size=(n, size, size))

    grid = np.arange(size, dtype=np.float64)
    images = np.broadcast_to(background, (n, size, size)).copy()
    masks = np.zeros((n, size, size), np.int64)
    for k in range(max_shapes):          # a loop over shape slots (a handful), vectorised over images and pixels
        dy = grid[None, :, None] - cy[:, k, None, None]
        dx = grid[None, None, :] - cx[:, k, None, None]
        c = kind[:, k, None, None]
        inside = _shape_inside(kind[:, k] - 1, k < count, dy, dx, radius[:, k, None, None])   # kind 1..3
        masks = np.where(inside, c, masks)
        images = np.where(inside, bright[:, k, None, None], images)
    images = np.clip(images + pixel_noise, 0.0, 1.0).astype(np.float32)
    return images[..., None], masks


def load_shapes(num_train=2000, num_test=400, size=32, max_shapes=3, seed=0):
    """The shapes segmentation set as ((x_train, y_train), (x_test, y_test)): x float32 (N, size, size, 1),
    y int64 masks (N, size, size). Train and test images come from different seeds, so none repeats."""
    train = shapes(num_train, size=size, max_shapes=max_shapes, seed=seed)
    test = shapes(num_test, size=size, max_shapes=max_shapes, seed=seed + 10_007)
    return train, test


# ----------------------------------------------------------------------------------------- 2-D points
def moons(n, noise=0.08, seed=0):
    """Two interleaving half circles (float32 (n, 2)), each point jittered by Gaussian noise, roughly
    centred on 0 with a spread of about 1, and labels int64 (n,) saying which moon."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, size=n)
    t = rng.uniform(0.0, np.pi, size=n)
    x = np.where(label == 0, np.cos(t), 1.0 - np.cos(t))
    y = np.where(label == 0, np.sin(t), 0.5 - np.sin(t))
    points = np.stack([x - 0.5, y - 0.25], axis=1) + rng.normal(0.0, noise, size=(n, 2))
    return points.astype(np.float32), label.astype(np.int64)


def rings(n, radii=(0.5, 1.0), noise=0.05, seed=0):
    """Concentric circles of the given radii (float32 (n, 2)), points spread uniformly in angle, with the
    index of each point's ring int64 (n,)."""
    rng = np.random.default_rng(seed)
    radii = np.asarray(radii, np.float64)
    label = rng.integers(0, len(radii), size=n)
    t = rng.uniform(0.0, 2 * np.pi, size=n)
    points = radii[label, None] * np.stack([np.cos(t), np.sin(t)], axis=1) + rng.normal(0.0, noise, size=(n, 2))
    return points.astype(np.float32), label.astype(np.int64)


def gaussian_ring(n, modes=8, radius=1.0, std=0.05, seed=0):
    """A mixture of ``modes`` small Gaussians evenly spaced on a circle (float32 (n, 2)), with the mode of
    each point int64 (n,): a GAN that collapses onto a few modes shows it at a glance."""
    rng = np.random.default_rng(seed)
    label = rng.integers(0, modes, size=n)
    angle = 2 * np.pi * label / modes
    centres = radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return (centres + rng.normal(0.0, std, size=(n, 2))).astype(np.float32), label.astype(np.int64)


DISTRIBUTIONS = {"moons": moons, "rings": rings, "gaussian_ring": gaussian_ring}


def sample_2d(name, n, seed=0, **kwargs):
    """n points of a named 2-D distribution ('moons', 'rings', 'gaussian_ring'): (points, labels)."""
    if name not in DISTRIBUTIONS:
        raise ValueError(f"sample_2d: unknown distribution {name!r}. Valid: {', '.join(DISTRIBUTIONS)}.")
    return DISTRIBUTIONS[name](n, seed=seed, **kwargs)
