"""Image resampling ops: resize by interpolation matrices and batched affine sampling.

Resizing applies two small interpolation matrices (rows, then columns) as GEMMs, so its backward is two
transposed products; affine sampling gathers each output pixel from its source coordinates and
scatters gradients back with one bincount. Used by the preprocessing and augmentation layers.
"""
import numpy as np

from .. import backend
from ..tensor import Op

__all__ = ["resize", "affine_transform"]

_FILL_MODES = ("reflect", "wrap", "constant", "nearest")
_INTERPOLATIONS = ("bilinear", "nearest")


def _interp_matrix(out_size, in_size, method, xp, dtype):
    """(out_size, in_size) matrix of 1-D interpolation weights with half-pixel centres
    (source = (i + 0.5) * in / out - 0.5), as TF / Keras / torch align_corners=False."""
    scale = in_size / out_size
    src = (np.arange(out_size) + 0.5) * scale - 0.5
    m = np.zeros((out_size, in_size), np.float64)
    rows = np.arange(out_size)
    if method == "nearest":
        idx = np.minimum(np.floor((np.arange(out_size) + 0.5) * scale).astype(np.int64), in_size - 1)
        m[rows, idx] = 1.0
    else:
        src = np.clip(src, 0.0, in_size - 1)
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, in_size - 1)
        frac = src - lo
        np.add.at(m, (rows, lo), 1.0 - frac)  # over out_size rows only (a tiny 1-D table), not pixels
        np.add.at(m, (rows, hi), frac)
    return xp.asarray(m.astype(dtype))


class Resize(Op):
    """Separable resize of (N, H, W, C) images: y = A_h x A_w^T per channel, as two batched GEMMs.

    Forward: t = A_h @ x (over H), y = A_w @ t (over W). Backward: the transposes, in reverse order.
    """

    def forward(self, x):
        xp = self.xp
        n, h, w, c = x.shape
        oh, ow = self.size
        ah = _interp_matrix(oh, h, self.method, xp, x.dtype)
        aw = _interp_matrix(ow, w, self.method, xp, x.dtype)
        self.saved = (ah, aw, x.shape)
        t = xp.matmul(ah, x.reshape(n, h, w * c)).reshape(n * oh, w, c)      # (N*OH, W, C)
        return xp.matmul(aw, t).reshape(n, oh, ow, c)

    def backward(self, gy):
        xp = self.xp
        ah, aw, (n, h, w, c) = self.saved
        oh, ow = self.size
        gt = xp.matmul(aw.T, gy.reshape(n * oh, ow, c))                      # (N*OH, W, C)
        return xp.matmul(ah.T, gt.reshape(n, oh, w * c)).reshape(n, h, w, c)


def resize(images, size, interpolation="bilinear"):
    """Resize (N, H, W, C) images to size=(height, width) with 'bilinear' or 'nearest' interpolation."""
    return Resize.apply(images, size=tuple(int(s) for s in size), method=interpolation)


def _fix_index(i, size, mode):
    """Map integer pixel indices outside [0, size) by fill_mode; returns (index, inside-mask)."""
    xp = backend.get_array_module(i)
    inside = (i >= 0) & (i < size)
    if mode == "reflect":          # (d c b a | a b c d | d c b a)
        period = 2 * size
        j = xp.mod(i, period)
        j = xp.where(j >= size, period - 1 - j, j)
        return j, None
    if mode == "wrap":             # (a b c d | a b c d | a b c d)
        return xp.mod(i, size), None
    if mode == "nearest":          # (a a a a | a b c d | d d d d)
        return xp.clip(i, 0, size - 1), None
    return xp.clip(i, 0, size - 1), inside   # constant: read anything, then mask with fill_value


class AffineSample(Op):
    """Resample (N, H, W, C) images through one projective map per image (Keras's 8-number transform
    [a0, a1, a2, b0, b1, b2, c0, c1]: output (x, y) reads input ((a0 x + a1 y + a2) / k,
    (b0 x + b1 y + b2) / k), k = c0 x + c1 y + 1), with bilinear or nearest interpolation and a fill mode.

    Forward: gather the (up to) four neighbours of every output pixel from the flattened batch and blend.
    Backward: the same weights scatter the gradient back with one bincount per channel block.
    """

    def forward(self, x):
        xp = self.xp
        n, h, w, c = x.shape
        t = xp.asarray(self.transforms, dtype=np.float64)                     # (N, 8)
        ys, xs = xp.meshgrid(xp.arange(h, dtype=np.float64), xp.arange(w, dtype=np.float64), indexing="ij")
        k = t[:, 6, None, None] * xs + t[:, 7, None, None] * ys + 1.0
        src_x = (t[:, 0, None, None] * xs + t[:, 1, None, None] * ys + t[:, 2, None, None]) / k   # (N, H, W)
        src_y = (t[:, 3, None, None] * xs + t[:, 4, None, None] * ys + t[:, 5, None, None]) / k
        if self.interpolation == "nearest":
            corners = [(xp.floor(src_y + 0.5), xp.floor(src_x + 0.5), None)]
        else:
            y0, x0 = xp.floor(src_y), xp.floor(src_x)
            fy, fx = src_y - y0, src_x - x0
            corners = [(y0, x0, (1 - fy) * (1 - fx)), (y0, x0 + 1, (1 - fy) * fx),
                       (y0 + 1, x0, fy * (1 - fx)), (y0 + 1, x0 + 1, fy * fx)]
        base = (xp.arange(n) * (h * w))[:, None, None]
        flat = x.reshape(n * h * w, c)
        out = xp.zeros((n, h, w, c), x.dtype)
        taps = []
        for cy, cx, wt in corners:          # 4 bilinear taps (a fixed count, not a loop over pixels)
            iy, my = _fix_index(cy.astype(np.int64), h, self.fill_mode)
            ix, mx = _fix_index(cx.astype(np.int64), w, self.fill_mode)
            weight = xp.ones((n, h, w)) if wt is None else wt
            if my is not None:
                weight = weight * (my & mx)
            idx = (base + iy * w + ix).reshape(-1)
            weight = weight.astype(x.dtype)
            out += flat[idx].reshape(n, h, w, c) * weight[..., None]
            taps.append((idx, weight.reshape(-1)))
        if self.fill_mode == "constant" and self.fill_value:
            # the share of each output pixel that fell outside the image takes fill_value
            covered = sum(wt for _, wt in taps).reshape(n, h, w, 1)
            out += (1 - covered) * x.dtype.type(self.fill_value)
        self.saved = (taps, x.shape)
        return out

    def backward(self, gy):
        xp = self.xp
        taps, (n, h, w, c) = self.saved
        size = n * h * w * c
        g = xp.zeros(size, gy.dtype)
        gflat = gy.reshape(-1, c)
        chans = xp.arange(c)
        for idx, wt in taps:
            # scatter-add: one bincount over (source pixel, channel) flat positions, so repeats add up
            where = (idx[:, None] * c + chans[None, :]).reshape(-1)
            g += xp.bincount(where, weights=(gflat * wt[:, None]).reshape(-1), minlength=size).astype(gy.dtype)
        return g.reshape(n, h, w, c)


def affine_transform(images, transforms, interpolation="bilinear", fill_mode="constant", fill_value=0.0):
    """Apply one 8-number projective transform per image (see AffineSample) to (N, H, W, C) images."""
    return AffineSample.apply(images, transforms=np.asarray(transforms, np.float64), interpolation=interpolation,
                              fill_mode=fill_mode, fill_value=float(fill_value))


# ---------------------------------------------------------------- deterministic layers
