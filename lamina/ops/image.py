"""Image resampling ops: resize by interpolation matrices and batched affine sampling.

Resizing applies two small interpolation matrices (rows, then columns) as GEMMs, so its backward is two
transposed products; affine sampling gathers each output pixel from its source coordinates and
scatters gradients back with one bincount. Used by the preprocessing and augmentation layers.
"""
import numpy as np

from .. import backend
from ..dtypes import result_type, standardize_dtype
from ..tensor import Op, Tensor, as_tensor
from . import convolution as _c
from .decompositions import Solve as _Solve
from . import manipulation as _s
from . import math as _m

__all__ = ["affine_transform", "crop_images", "elastic_transform", "extract_patches", "extract_patches_3d",
           "gaussian_blur", "hsv_to_rgb", "map_coordinates", "pad_images", "perspective_transform", "resize",
           "rgb_to_grayscale", "rgb_to_hsv", "scale_and_translate", "sobel_edges", "ssim"]

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


def _sparse_rows(m, x, axis, xp):
    """m (out, in) applied along ``axis`` of x, reading only the (few) non-zero weights of each row: a gather
    of those pixels and a sum of weight * pixel where the weight is not 0 (so an inf meets no 0 weight)."""
    m = m.get() if hasattr(m, "get") else m                                   # (a small table: on the host)
    nz = m != 0
    k = max(int(nz.sum(axis=1).max()), 1)
    idx = np.argsort(~nz, axis=1, kind="stable")[:, :k]                       # (out, k): non-zero columns first
    wts = xp.asarray(np.take_along_axis(m, idx, axis=1))                       # (out, k), 0 where padding
    idx = xp.asarray(idx)
    g = xp.take(x, idx.reshape(-1), axis=axis)
    g = g.reshape(x.shape[:axis] + idx.shape + x.shape[axis + 1:])             # (..., out, k, ...)
    wshape = (1,) * axis + wts.shape + (1,) * (x.ndim - axis - 1)
    wts = wts.reshape(wshape)
    return xp.where(wts != 0, g * wts, 0).sum(axis=axis + 1).astype(x.dtype, copy=False)


class Resize(Op):
    """Separable resize of (N, H, W, C) images: y = A_h x A_w^T per channel, as two batched GEMMs.

    Forward: t = A_h @ x (over H), y = A_w @ t (over W). Backward: the transposes, in reverse order.
    """

    def _matrices(self, x):
        """The (OH, H) and (OW, W) interpolation matrices for images x, in x's dtype."""
        oh, ow = self.size
        return (_interp_matrix(oh, x.shape[1], self.method, self.xp, x.dtype),
                _interp_matrix(ow, x.shape[2], self.method, self.xp, x.dtype))

    def forward(self, x):
        xp = self.xp
        n, h, w, c = x.shape
        oh, ow = self.size
        ah, aw = self._matrices(x)
        self.saved = (ah, aw, x.shape)
        if not bool(xp.isfinite(x).all()):
            # 0 * inf is NaN: the GEMMs would spread a NaN or inf to every output row and column that
            # shares its image row or column; sum only the pixels each output really reads
            return _sparse_rows(aw, _sparse_rows(ah, x, 1, xp), 2, xp)
        t = xp.matmul(ah, x.reshape(n, h, w * c)).reshape(n * oh, w, c)      # (N*OH, W, C)
        return xp.matmul(aw, t).reshape(n, oh, ow, c)

    def backward(self, gy):
        xp = self.xp
        ah, aw, (n, h, w, c) = self.saved
        oh, ow = self.size
        gt = xp.matmul(aw.T, gy.reshape(n * oh, ow, c))                      # (N*OH, W, C)
        return xp.matmul(ah.T, gt.reshape(n, oh, w * c)).reshape(n, h, w, c)


def _resize(images, size, interpolation="bilinear"):
    """Kernel of the Resizing layer: resize (N, H, W, C) images to size=(height, width), 'bilinear' or
    'nearest'."""
    _check_pixels(images.shape[1], images.shape[2], images.shape)
    return Resize.apply(images, size=tuple(int(s) for s in size), method=interpolation)


def _check_pixels(h, w, shape):
    if h == 0 or w == 0:   # (no pixel to interpolate from: an IndexError in the interpolation table)
        raise ValueError(f"resize: the images must be at least 1 pixel high and wide. Received images of shape "
                         f"{tuple(shape)}")


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


def _affine_transform(images, transforms, interpolation="bilinear", fill_mode="constant", fill_value=0.0):
    """Kernel of the augmentation layers: one 8-number projective transform per (N, H, W, C) image
    (see AffineSample)."""
    return AffineSample.apply(images, transforms=np.asarray(transforms, np.float64), interpolation=interpolation,
                              fill_mode=fill_mode, fill_value=float(fill_value))


# ================================================================= keras.ops.image (public API)
# The functions below follow Keras 3's signatures; images are channels_last (N, H, W, C) by default,
# channels_first (N, C, H, W) with data_format="channels_first", and a single image (rank 3) is accepted.


def _data_format(data_format):
    data_format = "channels_last" if data_format is None else str(data_format).lower()
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError("The `data_format` argument must be one of {'channels_first', 'channels_last'}. "
                         f"Received: data_format={data_format}")
    return data_format


def _check_rank(images, ranks=(3, 4), what="images"):
    if images.ndim not in ranks:
        kinds = "rank 3 (single image) or rank 4 (batch of images)" if ranks == (3, 4) else f"rank in {ranks}"
        raise ValueError(f"Invalid {what} rank: expected {kinds}. Received input with shape: "
                         f"{what}.shape={images.shape}")


def _to_nhwc(images, data_format):
    """(tensor (N, H, W, C), undo) for a rank-3 or rank-4 image tensor in either layout."""
    unbatched = images.ndim == 3
    x = _s.expand_dims(images, 0) if unbatched else images
    if data_format == "channels_first":
        x = _s.transpose(x, (0, 2, 3, 1))

    def undo(y, channels_first_axes=(0, 3, 1, 2)):
        if data_format == "channels_first":
            y = _s.transpose(y, channels_first_axes)
        return _s.squeeze(y, 0) if unbatched else y
    return x, undo


def _is_int(dtype):
    return np.dtype(dtype).kind in "iub"


def _round_cast(y, dtype):
    """Back to an integer dtype with rounding (Keras's torch backend rounds before casting)."""
    xp = backend.get_array_module(y.data)
    return Tensor(xp.round(y.data).astype(dtype))


# ----------------------------------------------------------------- colour
def rgb_to_grayscale(images, data_format=None):
    """Luma 0.2989 R + 0.587 G + 0.114 B, keeping a channel axis of size 1 (a 1-channel input is copied).

    Differentiable for float images (a weighted sum of channels).
    """
    images = as_tensor(images)
    df = _data_format(data_format)
    _check_rank(images)
    axis = -3 if df == "channels_first" else -1
    c = images.shape[axis]
    if c not in (1, 3):
        raise ValueError("Invalid channel size: expected 3 (RGB) or 1 (Grayscale). Received input with shape: "
                         f"images.shape={images.shape}")
    if c == 1:
        return _m.multiply(images, 1) if not _is_int(images.dtype) else Tensor(images.data.copy())
    dtype = images.dtype
    x = images if not _is_int(dtype) else _m.cast(images, "float32")
    idx = [slice(None)] * x.ndim
    planes = []
    for k in range(3):
        idx[axis] = slice(k, k + 1)
        planes.append(_s.getitem(x, tuple(idx)))
    r, g, b = planes
    y = _m.add(_m.add(_m.multiply(r, 0.2989), _m.multiply(g, 0.587)), _m.multiply(b, 0.114))
    if _is_int(dtype):
        return Tensor(y.data.astype(dtype))     # torch's .to(int) truncates
    return y


def _planes(images, axis):
    idx = [slice(None)] * images.ndim
    out = []
    for k in range(3):
        idx[axis] = k
        out.append(_s.getitem(images, tuple(idx)))
    return out


def _check_float_images(images, df):
    images = as_tensor(images)
    _check_rank(images)
    if not np.issubdtype(images.dtype, np.floating):
        raise ValueError(f"Invalid images dtype: expected float dtype. Received: images.dtype={images.dtype}")
    return images, (-1 if df == "channels_last" else -3)


def rgb_to_hsv(images, data_format=None):
    """RGB in [0, 1] -> HSV in [0, 1] (hue as a fraction of a turn), as dm_pix / Keras.

    Differentiable piecewise (through max, min and the selected hue branch).
    """
    df = _data_format(data_format)
    images, axis = _check_float_images(images, df)
    xp = backend.get_array_module(images.data)
    eps = np.finfo(images.dtype).eps
    images = _m.where(Tensor(xp.abs(images.data) < eps), Tensor(xp.zeros((), images.dtype)), images)
    r, g, b = _planes(images, axis)
    value = _m.maximum(_m.maximum(r, g), b)
    minimum = _m.minimum(_m.minimum(r, g), b)
    rng = _m.subtract(value, minimum)
    one = Tensor(xp.ones((), images.dtype))
    zero = Tensor(xp.zeros((), images.dtype))
    vpos, rpos = Tensor(value.data > 0), Tensor(rng.data > 0)
    safe_value = _m.where(vpos, value, one)
    safe_range = _m.where(rpos, rng, one)
    saturation = _m.where(vpos, _m.divide(rng, safe_value), zero)
    norm = _m.divide(one, _m.multiply(safe_range, 6.0))
    hue = _m.where(Tensor(value.data == g.data), _m.add(_m.multiply(norm, _m.subtract(b, r)), 2.0 / 6.0),
                   _m.add(_m.multiply(norm, _m.subtract(r, g)), 4.0 / 6.0))
    hue = _m.where(Tensor(value.data == r.data), _m.multiply(norm, _m.subtract(g, b)), hue)
    hue = _m.add(_m.where(rpos, hue, zero), Tensor((hue.data < 0).astype(images.dtype)))
    return _s.stack([hue, saturation, value], axis=axis)


def hsv_to_rgb(images, data_format=None):
    """HSV in [0, 1] -> RGB, as dm_pix / Keras. Differentiable (piecewise linear in hue)."""
    df = _data_format(data_format)
    images, axis = _check_float_images(images, df)
    h, s, v = _planes(images, axis)
    xp = backend.get_array_module(images.data)
    dh = _m.multiply(_m.subtract(h, Tensor(xp.floor(h.data))), 6.0)      # remainder(h, 1) * 6
    dr = _m.clip(_m.subtract(_m.abs(_m.subtract(dh, 3.0)), 1.0), 0.0, 1.0)
    dg = _m.clip(_m.subtract(2.0, _m.abs(_m.subtract(dh, 2.0))), 0.0, 1.0)
    db = _m.clip(_m.subtract(2.0, _m.abs(_m.subtract(dh, 4.0))), 0.0, 1.0)
    one_minus_s = _m.subtract(1.0, s)
    planes = [_m.multiply(v, _m.add(one_minus_s, _m.multiply(s, d))) for d in (dr, dg, db)]
    return _s.stack(planes, axis=axis)


# ----------------------------------------------------------------- sampling at coordinates
def _mirror(xp, i, size):
    if size == 1:
        return xp.zeros_like(i)
    s = size - 1
    return xp.abs(xp.mod(i + s, 2 * s) - s)


def _fix_any(xp, i, size, mode):
    """Keras's index fixers: constant / nearest clamp (constant masks later), wrap, mirror, reflect."""
    if mode in ("constant", "nearest"):
        return xp.clip(i, 0, size - 1)
    if mode == "wrap":
        return xp.mod(i, size)
    if mode == "mirror":
        return _mirror(xp, i, size)
    return (_mirror(xp, 2 * i + 1, 2 * size + 1) - 1) // 2        # reflect


_MAP_FILL_MODES = ("constant", "nearest", "wrap", "mirror", "reflect")


class MapCoordinates(Op):
    """out[p] = sum over taps of w(p) * x[fix(idx(p))] (fill_value where a constant-mode tap falls outside),
    one coordinate array per input axis (broadcast together); order 0 rounds (half to even), order 1 blends
    the two neighbours per axis; integer coordinate arrays take their one exact tap.

    Backward: the input's gradient is one bincount of g * w over the tapped positions; a float coordinate
    gets g * sum over taps of (+-) (product of the other axes' weights) * value (order 1; 0 for order 0).
    """

    def forward(self, x, *coords):
        xp = self.xp
        out_shape = np.broadcast_shapes(*[c.shape for c in coords])
        axes = []
        for d, c in enumerate(coords):
            if c.dtype.kind in "iub":
                axes.append([(c.astype(np.int64), None, 0)])
            elif self.order == 0:
                axes.append([(xp.round(c).astype(np.int64), None, 0)])
            else:
                lo = xp.floor(c)
                f = (c - lo).astype(x.dtype)
                lo = lo.astype(np.int64)
                axes.append([(lo, 1 - f, -1), (lo + 1, f, 1)])
        strides = np.cumprod((x.shape[1:] + (1,))[::-1])[::-1]
        flat_x = x.reshape(-1)
        fill = x.dtype.type(self.fill_value)
        out = xp.zeros(out_shape, x.dtype)
        taps = []
        for combo in _product(axes):
            flat, valid, ws = 0, None, []
            for d, (idx, w, sign) in enumerate(combo):
                size = x.shape[d]
                flat = flat + _fix_any(xp, idx, size, self.fill_mode) * int(strides[d])
                if self.fill_mode == "constant":
                    ok = (idx >= 0) & (idx < size)
                    valid = ok if valid is None else valid & ok
                ws.append((w, sign))
            flat = xp.broadcast_to(flat, out_shape)
            val = flat_x[flat]
            if valid is not None:
                valid = xp.broadcast_to(valid, out_shape)
                val = xp.where(valid, val, fill)
            weight = _prod_weights([w for w, _ in ws], out_shape, xp, x.dtype)
            out += weight * val
            taps.append((flat, valid, ws, val if any(self.needs_grad[1:]) else None))
        self.saved = (taps, x.shape, x.dtype, [c.shape for c in coords])
        return out

    def backward(self, g):
        xp = self.xp
        taps, shape, dtype, cshapes = self.saved
        size = int(np.prod(shape))
        gx = xp.zeros(size, g.dtype) if self.needs_grad[0] else None
        gcs = [xp.zeros(g.shape, g.dtype) if need else None for need in self.needs_grad[1:]]
        for flat, valid, ws, val in taps:
            if gx is not None:
                wg = g * _prod_weights([w for w, _ in ws], g.shape, xp, g.dtype)
                if valid is not None:
                    wg = wg * valid
                gx += xp.bincount(flat.reshape(-1), weights=wg.reshape(-1), minlength=size).astype(g.dtype)
            for d, gc in enumerate(gcs):
                if gc is None or ws[d][1] == 0:
                    continue
                others = _prod_weights([w for k, (w, _) in enumerate(ws) if k != d], g.shape, xp, g.dtype)
                gc += ws[d][1] * others * val * g
        gcs = [None if gc is None else _m.unbroadcast(gc, s) for gc, s in zip(gcs, cshapes)]
        return (None if gx is None else gx.reshape(shape), *gcs)


def _product(lists):
    combos = [[]]
    for options in lists:
        combos = [c + [o] for c in combos for o in options]
    return combos


def _prod_weights(ws, shape, xp, dtype):
    out = None
    for w in ws:
        if w is not None:
            out = w if out is None else out * w
    return xp.ones((), dtype) if out is None else out.astype(dtype, copy=False)


def _map(x, coords, order, fill_mode, fill_value):
    """MapCoordinates on a float tensor; integer inputs are sampled in float32, rounded and cast back."""
    if fill_mode not in _MAP_FILL_MODES:
        raise ValueError(f"Invalid value for argument `fill_mode`. Expected one of {set(_MAP_FILL_MODES)}. "
                         f"Received: fill_mode={fill_mode}")
    if order not in (0, 1):
        raise NotImplementedError("map_coordinates currently requires order<=1")
    x = as_tensor(x)
    if _is_int(x.dtype):
        y = MapCoordinates.apply(_m.cast(x, "float32"), *coords, order=int(order), fill_mode=fill_mode,
                                 fill_value=float(int(fill_value)))
        return _round_cast(y, x.dtype)
    return MapCoordinates.apply(x, *coords, order=int(order), fill_mode=fill_mode, fill_value=float(fill_value))


def map_coordinates(inputs, coordinates, order, fill_mode="constant", fill_value=0):
    """Sample inputs at the given coordinates (one array per input axis): order 0 nearest, 1 linear;
    fill_mode 'constant' (fill_value outside), 'nearest', 'wrap', 'mirror' or 'reflect'.

    Differentiable with respect to inputs, and (order 1) to the coordinates.
    """
    inputs = as_tensor(inputs)
    if isinstance(coordinates, (list, tuple)):
        coords = [as_tensor(c) for c in coordinates]
    else:
        ct = as_tensor(coordinates)
        coords = [_s.getitem(ct, i) for i in range(ct.shape[0])]
    if len(coords) != inputs.ndim:
        raise ValueError("First dim of `coordinates` must be the same as the rank of `inputs`. Received inputs "
                         f"with shape: {inputs.shape} and coordinate leading dim of {len(coords)}")
    if coords[0].ndim < 1:
        raise ValueError("Invalid coordinates rank: expected at least rank 2. Received input with shape: "
                         f"{(len(coords),) + coords[0].shape}")
    return _map(inputs, coords, order, fill_mode, fill_value)


_ORDERS = {"nearest": 0, "bilinear": 1}


def _check_interp(interpolation):
    if interpolation not in _ORDERS:
        raise ValueError(f"Invalid value for argument `interpolation`. Expected of one {set(_ORDERS)}. "
                         f"Received: interpolation={interpolation}")


def _sample_nhwc(x, rows, cols, order, fill_mode, fill_value):
    """Sample (N, H, W, C) images at per-image (N, H', W') source rows / cols (arrays or Tensors; Tensors that
    require a gradient receive one, for order 1)."""
    xp = backend.get_array_module(x.data)
    n, c = x.shape[0], x.shape[3]
    bi = Tensor(xp.arange(n).reshape(n, 1, 1, 1))
    ci = Tensor(xp.arange(c).reshape(1, 1, 1, c))
    rows, cols = _s.expand_dims(as_tensor(rows), -1), _s.expand_dims(as_tensor(cols), -1)
    return _map(x, [bi, rows, cols, ci], order, fill_mode, fill_value)


def _beside(t, ref):
    """A constant tensor t moved to ref's device (a transform given as a host array for device images)."""
    xp = backend.get_array_module(ref.data)
    if backend.get_array_module(t.data) is xp or t.requires_grad:
        return t
    return Tensor(backend.to_device(t.data, xp))


def _projective_coords(t, h, w, dt):
    """Source (rows, cols), each (N, H, W), of output pixels under transforms t (N, 8), differentiably:
    cols = (t0 x + t1 y + t2) / k, rows = (t3 x + t4 y + t5) / k, k = t6 x + t7 y + 1."""
    xp = backend.get_array_module(t.data)
    ys, xs = xp.meshgrid(xp.arange(h, dtype=dt), xp.arange(w, dtype=dt), indexing="ij")
    ys, xs = Tensor(ys), Tensor(xs)
    n = t.shape[0]
    col = [_s.reshape(_s.getitem(t, (slice(None), k)), (n, 1, 1)) for k in range(8)]
    lin = lambda a, b, c: _m.add(_m.add(_m.multiply(a, xs), _m.multiply(b, ys)), c)  # noqa: E731
    k = _m.add(_m.add(_m.multiply(col[6], xs), _m.multiply(col[7], ys)), 1.0)
    cols = _m.divide(lin(col[0], col[1], col[2]), k)
    rows = _m.divide(lin(col[3], col[4], col[5]), k)
    return rows, cols


def affine_transform(images, transform, interpolation="bilinear", fill_mode="constant", fill_value=0,
                     data_format=None):
    """Resample images through [a0, a1, a2, b0, b1, b2, c0, c1] (one per image, or one for all): output
    (x, y) reads input ((a0 x + a1 y + a2) / k, (b0 x + b1 y + b2) / k), k = c0 x + c1 y + 1.

    Differentiable with respect to images and (bilinear) to the transform.
    """
    df = _data_format(data_format)
    _check_interp(interpolation)
    if fill_mode not in _MAP_FILL_MODES:
        raise ValueError(f"Invalid value for argument `fill_mode`. Expected of one {set(_MAP_FILL_MODES)}. "
                         f"Received: fill_mode={fill_mode}")
    images = as_tensor(images)
    _check_rank(images)
    t = as_tensor(transform)
    if t.ndim not in (1, 2):
        raise ValueError("Invalid transform rank: expected rank 1 (single transform) or rank 2 (batch of "
                         f"transforms). Received input with shape: transform.shape={t.shape}")
    if not np.issubdtype(t.dtype, np.floating):
        t = _m.cast(t, "float32")
    t = _beside(t, images)
    x, undo = _to_nhwc(images, df)
    n, h, w, _ = x.shape
    t = _s.reshape(t, (-1, 8))
    rows, cols = _projective_coords(t, h, w, t.dtype)
    if rows.shape[0] != n:
        rows, cols = _s.broadcast_to(rows, (n, h, w)), _s.broadcast_to(cols, (n, h, w))
    return undo(_sample_nhwc(x, rows, cols, _ORDERS[interpolation], fill_mode, fill_value))


def _homography(start, end):
    """(N, 8) transforms mapping end points to start points (N, 4, 2) (Keras's compute_homography_matrix):
    an 8 x 8 linear solve per image, differentiable in both point sets."""
    n = start.shape[0]
    ex, ey = _s.getitem(end, (slice(None), slice(None), 0)), _s.getitem(end, (slice(None), slice(None), 1))
    sx, sy = _s.getitem(start, (slice(None), slice(None), 0)), _s.getitem(start, (slice(None), slice(None), 1))
    xp = backend.get_array_module(ex.data)
    one, zero = Tensor(xp.ones(ex.shape, ex.dtype)), Tensor(xp.zeros(ex.shape, ex.dtype))
    row_x = _s.stack([ex, ey, one, zero, zero, zero, _m.negative(_m.multiply(sx, ex)),
                      _m.negative(_m.multiply(sx, ey))], axis=-1)                      # (N, 4, 8)
    row_y = _s.stack([zero, zero, zero, ex, ey, one, _m.negative(_m.multiply(sy, ex)),
                      _m.negative(_m.multiply(sy, ey))], axis=-1)
    a = _s.reshape(_s.stack([row_x, row_y], axis=2), (n, 8, 8))
    b = _s.reshape(_s.stack([sx, sy], axis=-1), (n, 8, 1))
    return _s.reshape(_Solve.apply(a, b), (n, 8))


def perspective_transform(images, start_points, end_points, interpolation="bilinear", fill_value=0,
                          data_format=None):
    """Warp images so that the 4 start_points (x, y) land on the 4 end_points ((4, 2) or (N, 4, 2)),
    constant fill outside. Differentiable with respect to images and (bilinear) to both point sets."""
    df = _data_format(data_format)
    _check_interp(interpolation)
    images = as_tensor(images)
    _check_rank(images)
    dt = images.dtype if np.issubdtype(images.dtype, np.floating) else np.dtype("float32")
    sp, ep = _beside(as_tensor(start_points), images), _beside(as_tensor(end_points), images)
    sp = sp if sp.dtype == dt else _m.cast(sp, dt)
    ep = ep if ep.dtype == dt else _m.cast(ep, dt)
    for name, p in (("start_points", sp), ("end_points", ep)):
        if p.shape[-2:] != (4, 2) or p.ndim not in (2, 3):
            raise ValueError(f"Invalid {name} shape: expected (4,2) for a single image or (N,4,2) for a batch. "
                             f"Received shape: {p.shape}")
    if sp.shape != ep.shape:
        raise ValueError("start_points and end_points must have the same shape. Received start_points.shape="
                         f"{sp.shape}, end_points.shape={ep.shape}")
    sp, ep = _s.reshape(sp, (-1, 4, 2)), _s.reshape(ep, (-1, 4, 2))
    cdt = np.promote_types(dt, np.float32)
    if cdt != dt:
        sp, ep = _m.cast(sp, cdt), _m.cast(ep, cdt)
    t = _homography(sp, ep)
    t = t if t.dtype == dt else _m.cast(t, dt)
    x, undo = _to_nhwc(images, df)
    n, h, w, _ = x.shape
    rows, cols = _projective_coords(t, h, w, dt)
    if rows.shape[0] != n:
        rows, cols = _s.broadcast_to(rows, (n, h, w)), _s.broadcast_to(cols, (n, h, w))
    return undo(_sample_nhwc(x, rows, cols, _ORDERS[interpolation], "constant", fill_value))


def _rng(seed):
    if seed is None:
        return backend.rng()
    if hasattr(seed, "generator"):           # a lamina.random.SeedGenerator
        return seed.generator()
    if isinstance(seed, (int, np.integer)):
        return np.random.default_rng(int(seed))
    raise ValueError(f"seed must be None, an int or a SeedGenerator. Received: seed={seed!r}")


def elastic_transform(images, alpha=20.0, sigma=5.0, interpolation="bilinear", fill_mode="reflect",
                      fill_value=0.0, seed=None, data_format=None):
    """Elastic deformation: a random displacement field (normal * sigma, blurred by a Gaussian of std sigma
    and size int(6 sigma) | 1, scaled by alpha) moves every pixel. Differentiable with respect to images
    (the field is a constant draw)."""
    df = _data_format(data_format)
    _check_interp(interpolation)
    if fill_mode not in _MAP_FILL_MODES:
        raise ValueError(f"Invalid value for argument `fill_mode`. Expected of one {set(_MAP_FILL_MODES)}. "
                         f"Received: fill_mode={fill_mode}")
    images = as_tensor(images)
    _check_rank(images)
    x, undo = _to_nhwc(images, df)
    xp = backend.get_array_module(x.data)
    n, h, w, _ = x.shape
    dt = x.dtype if np.issubdtype(x.dtype, np.floating) else np.dtype("float32")
    sigma, alpha = float(sigma), float(alpha)
    ks = int(6 * sigma) | 1
    rng = _rng(seed)
    field = rng.standard_normal((2, n, h, w, 1)) * sigma
    field = gaussian_blur(Tensor(xp.asarray(field.reshape(2 * n, h, w, 1), dt)), (ks, ks), (sigma, sigma)).data
    field = field.reshape(2, n, h, w)
    ys, xs = xp.meshgrid(xp.arange(h, dtype=dt), xp.arange(w, dtype=dt), indexing="ij")
    rows = ys + alpha * field[1]
    cols = xs + alpha * field[0]
    return undo(_sample_nhwc(x, rows, cols, _ORDERS[interpolation], fill_mode, fill_value))


# ----------------------------------------------------------------- filters
def _depthwise(x, kernel, pads):
    """Same 2-D kernel on every channel of (N, H, W, C): channels go to the batch, one conv2d."""
    n, h, w, c = x.shape
    y = _s.reshape(_s.transpose(x, (0, 3, 1, 2)), (n * c, h, w, 1))
    if any(pads):
        y = _s.pad(y, ((0, 0), (pads[0], pads[0]), (pads[1], pads[1]), (0, 0)))
    y = _c.conv2d(y, kernel)
    oh, ow = y.shape[1], y.shape[2]
    return _s.transpose(_s.reshape(y, (n, c, oh, ow)), (0, 2, 3, 1))


def _gauss1d(size, sigma):
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def _pair(v, what):
    if isinstance(v, (int, float, np.integer, np.floating)):
        return (v, v)
    v = tuple(v)
    if len(v) != 2:
        raise ValueError(f"`{what}` must be a number or a pair. Received: {what}={v}")
    return v


def gaussian_blur(images, kernel_size=(3, 3), sigma=(1.0, 1.0), data_format=None):
    """Blur each channel with a separable Gaussian: kernel outer(g(k[1], sigma[1]), g(k[0], sigma[0])) laid
    out as (k[0], k[1]), zero padding k[0] // 2 on both axes (Keras's torch layout). Differentiable."""
    df = _data_format(data_format)
    images = as_tensor(images)
    _check_rank(images)
    ks = tuple(int(k) for k in _pair(kernel_size, "kernel_size"))
    sg = tuple(float(s) for s in _pair(sigma, "sigma"))
    if _is_int(images.dtype):   # Keras's torch backend raises here; lamina blurs in float32 and rounds back
        return _round_cast(gaussian_blur(_m.cast(images, "float32"), ks, sg, df), images.dtype)
    x, undo = _to_nhwc(images, df)
    xp = backend.get_array_module(x.data)
    k2 = np.outer(_gauss1d(ks[1], sg[1]), _gauss1d(ks[0], sg[0])).reshape(ks[0], ks[1])
    kernel = Tensor(xp.asarray(k2.reshape(ks[0], ks[1], 1, 1), x.dtype))
    p = ks[0] // 2
    return undo(_depthwise(x, kernel, (p, p)))


_SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float64)


def sobel_edges(images, data_format=None):
    """Sobel gradients of each channel (zero padding 1): (..., 2) with [d/dy, d/dx] stacked last, i.e.
    (N, H, W, C, 2) channels_last or (N, C, H, W, 2) channels_first. Differentiable."""
    df = _data_format(data_format)
    images = as_tensor(images)
    _check_rank(images, (4,))
    x, _ = _to_nhwc(images, df)
    xp = backend.get_array_module(x.data)
    kx = Tensor(xp.asarray(_SOBEL_X.reshape(3, 3, 1, 1), x.dtype))
    ky = Tensor(xp.asarray(_SOBEL_X.T.copy().reshape(3, 3, 1, 1), x.dtype))
    edges = _s.stack([_depthwise(x, ky, (1, 1)), _depthwise(x, kx, (1, 1))], axis=-1)   # (N, H, W, C, 2)
    if df == "channels_first":
        edges = _s.transpose(edges, (0, 3, 1, 2, 4))
    return edges


def ssim(image1, image2, max_val=1.0, filter_size=11, filter_sigma=1.5, k1=0.01, k2=0.03, data_format=None):
    """Structural similarity per image (mean over valid Gaussian windows and channels), as Keras:
    ((2 mu1 mu2 + c1)(2 s12 + c2)) / ((mu1^2 + mu2^2 + c1)(s1^2 + s2^2 + c2)), c_i = (k_i max_val)^2.
    Differentiable in both images."""
    df = _data_format(data_format)
    image1, image2 = as_tensor(image1), as_tensor(image2)
    out_dtype = image1.dtype
    cdt = result_type(standardize_dtype(image1.dtype), float)
    if image1.dtype == np.float64:
        cdt = "float64"  # Keras computes float64 images in float32 (its result_type); output float64 either way
    for name, im in (("image1", image1), ("image2", image2)):
        _check_rank(im, what=name)
    a, undo = _to_nhwc(_m.cast(image1, cdt) if image1.dtype != cdt else image1, df)
    b, _ = _to_nhwc(_m.cast(image2, cdt) if image2.dtype != cdt else image2, df)
    xp = backend.get_array_module(a.data)
    g = _gauss1d(int(filter_size), float(filter_sigma))
    kernel = Tensor(xp.asarray(np.outer(g, g).reshape(filter_size, filter_size, 1, 1), cdt))
    c1 = (k1 * max_val) ** 2
    c2 = (k2 * max_val) ** 2
    mu1, mu2 = _depthwise(a, kernel, (0, 0)), _depthwise(b, kernel, (0, 0))
    mu1_sq, mu2_sq, mu12 = _m.multiply(mu1, mu1), _m.multiply(mu2, mu2), _m.multiply(mu1, mu2)
    s1 = _m.subtract(_depthwise(_m.multiply(a, a), kernel, (0, 0)), mu1_sq)
    s2 = _m.subtract(_depthwise(_m.multiply(b, b), kernel, (0, 0)), mu2_sq)
    s12 = _m.subtract(_depthwise(_m.multiply(a, b), kernel, (0, 0)), mu12)
    num = _m.multiply(_m.add(_m.multiply(mu12, 2.0), c1), _m.add(_m.multiply(s12, 2.0), c2))
    den = _m.multiply(_m.add(_m.add(mu1_sq, mu2_sq), c1), _m.add(_m.add(s1, s2), c2))
    val = _m.mean(_m.mean(_m.divide(num, den), (1, 2)), -1)
    if image1.ndim == 3:
        val = _s.squeeze(val, 0)
    return val if val.dtype == out_dtype else _m.cast(val, out_dtype)


# ----------------------------------------------------------------- patches
def _size_tuple(v, n, what):
    if isinstance(v, (int, np.integer)):
        return (int(v),) * n
    v = tuple(int(a) for a in v)
    if len(v) != n:
        raise ValueError(f"Invalid `{what}` argument. Expected an int or a tuple of length {n}. Received: {v}")
    return v


def _patches_nd(x, size, strides, dilation, padding):
    """Patches of channels-last x (N, *spatial, C) by strided slices, one per kernel offset, concatenated on
    the last axis in (offset..., channel) order: the order of Keras's identity-kernel convolution."""
    nd = len(size)
    spatial = x.shape[1:1 + nd]
    pads, outs = [], []
    for n_in, k, s, d in zip(spatial, size, strides, dilation):
        eff = (k - 1) * d + 1
        if padding == "same":
            out = -(-n_in // s)
            total = max((out - 1) * s + eff - n_in, 0)
            pads.append((total // 2, total - total // 2))
        else:
            out = (n_in - eff) // s + 1
            pads.append((0, 0))
        outs.append(out)
    if any(p != (0, 0) for p in pads):
        x = _s.pad(x, [(0, 0)] + pads + [(0, 0)])
    parts = []
    for offset in np.ndindex(*size):
        idx = (slice(None),) + tuple(slice(o * d, o * d + (m - 1) * s + 1, s)
                                     for o, d, m, s in zip(offset, dilation, outs, strides)) + (slice(None),)
        parts.append(_s.getitem(x, idx))
    return _s.concatenate(parts, axis=-1)


def _extract(images, size, strides, dilation_rate, padding, data_format, nd):
    df = _data_format(data_format)
    images = as_tensor(images)
    if images.ndim not in (nd + 1, nd + 2):
        raise ValueError(f"Invalid images rank: expected rank {nd + 1} or {nd + 2}. Received: {images.shape}")
    padding = str(padding).lower()
    if padding not in ("valid", "same"):
        raise ValueError(f"Invalid `padding`: expected 'valid' or 'same'. Received: padding={padding}")
    size = _size_tuple(size, nd, "size")
    strides = size if not strides else _size_tuple(strides, nd, "strides")
    dilation = _size_tuple(dilation_rate, nd, "dilation_rate")
    unbatched = images.ndim == nd + 1
    x = _s.expand_dims(images, 0) if unbatched else images
    if df == "channels_first":
        x = _s.transpose(x, (0,) + tuple(range(2, nd + 2)) + (1,))
    y = _patches_nd(x, size, strides, dilation, padding)
    if df == "channels_first":
        y = _s.transpose(y, (0, nd + 1) + tuple(range(1, nd + 1)))
    return _s.squeeze(y, 0) if unbatched else y


def extract_patches(images, size, strides=None, dilation_rate=1, padding="valid", data_format=None):
    """Patches of size (h, w) as vectors of h * w * C values on the channel axis (strides default: size);
    a 3-tuple size delegates to extract_patches_3d. Differentiable (slices)."""
    if not isinstance(size, (int, np.integer)) and len(size) == 3:
        return extract_patches_3d(images, size, strides, dilation_rate, padding, data_format)
    if not isinstance(size, (int, np.integer)) and len(size) != 2:
        raise TypeError(f"Invalid `size` argument. Expected an int or a tuple of length 2. Received: size={size}")
    return _extract(images, size, strides, dilation_rate, padding, data_format, 2)


def extract_patches_3d(volumes, size, strides=None, dilation_rate=1, padding="valid", data_format=None):
    """Patches of size (d, h, w) of volumes (N, D, H, W, C) as vectors of d * h * w * C values on the channel
    axis (strides default: size). Differentiable (slices)."""
    return _extract(volumes, size, strides, dilation_rate, padding, data_format, 3)


# ----------------------------------------------------------------- padding and cropping
def _check_three(a, b, target, names):
    if [a, b, target].count(None) != 1:
        raise ValueError(f"Must specify exactly two of {', '.join(names)}. Received: {names[0]}={a}, "
                         f"{names[1]}={b}, {names[2]}={target}")
    _check_non_negative(zip(names, (a, b, target)))


def _check_non_negative(named_values):
    """ValueError naming the first (name, value) pair whose value is negative (None values are skipped)."""
    for name, v in named_values:
        if v is not None and v < 0:
            raise ValueError(f"{name} must be >= 0. Received: {name}={v}")


def _hw(images, df):
    return (images.shape[-3], images.shape[-2]) if df == "channels_last" else (images.shape[-2], images.shape[-1])


def pad_images(images, top_padding=None, left_padding=None, bottom_padding=None, right_padding=None,
               target_height=None, target_width=None, data_format=None):
    """Zero-pad images: two of (top, bottom, target_height) and two of (left, right, target_width) given.
    Differentiable."""
    df = _data_format(data_format)
    images = as_tensor(images)
    _check_rank(images)
    _check_three(top_padding, bottom_padding, target_height, ("top_padding", "bottom_padding", "target_height"))
    _check_three(left_padding, right_padding, target_width, ("left_padding", "right_padding", "target_width"))
    h, w = _hw(images, df)
    if top_padding is None:
        top_padding = target_height - bottom_padding - h
    if bottom_padding is None:
        bottom_padding = target_height - top_padding - h
    if left_padding is None:
        left_padding = target_width - right_padding - w
    if right_padding is None:
        right_padding = target_width - left_padding - w
    _check_non_negative((("top_padding", top_padding), ("left_padding", left_padding),
                         ("right_padding", right_padding), ("bottom_padding", bottom_padding)))
    pw = [(int(top_padding), int(bottom_padding)), (int(left_padding), int(right_padding))]
    pw = pw + [(0, 0)] if df == "channels_last" else [(0, 0)] + pw
    if images.ndim == 4:
        pw = [(0, 0)] + pw
    return _s.pad(images, pw)


def crop_images(images, top_cropping=None, left_cropping=None, bottom_cropping=None, right_cropping=None,
                target_height=None, target_width=None, data_format=None):
    """Crop images: two of (top, bottom, target_height) and two of (left, right, target_width) given.
    Differentiable."""
    df = _data_format(data_format)
    images = as_tensor(images)
    _check_rank(images)
    _check_three(top_cropping, bottom_cropping, target_height, ("top_cropping", "bottom_cropping", "target_height"))
    _check_three(left_cropping, right_cropping, target_width, ("left_cropping", "right_cropping", "target_width"))
    h, w = _hw(images, df)
    if top_cropping is None:
        top_cropping = h - target_height - bottom_cropping
    if target_height is None:
        target_height = h - bottom_cropping - top_cropping
    if left_cropping is None:
        left_cropping = w - target_width - right_cropping
    if target_width is None:
        target_width = w - right_cropping - left_cropping
    _check_non_negative((("top_cropping", top_cropping), ("target_height", target_height),
                         ("left_cropping", left_cropping), ("target_width", target_width)))
    top, left = int(top_cropping), int(left_cropping)
    sl = [slice(top, top + int(target_height)), slice(left, left + int(target_width))]
    sl = sl + [slice(None)] if df == "channels_last" else [slice(None)] + sl
    if images.ndim == 4:
        sl = [slice(None)] + sl
    return _s.getitem(images, tuple(sl))


# ----------------------------------------------------------------- resizing
def _kernel_triangle(x):
    return np.maximum(0.0, 1 - np.abs(x))


def _kernel_keys_cubic(x):
    out = ((1.5 * x - 2.5) * x) * x + 1.0
    out = np.where(x >= 1.0, ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0, out)
    return np.where(x >= 2.0, 0.0, out)


def _kernel_lanczos(radius):
    def k(x):
        with np.errstate(divide="ignore", invalid="ignore"):
            y = radius * np.sin(np.pi * x) * np.sin(np.pi * x / radius)
            out = np.where(x > 1e-3, y / np.where(x != 0, np.pi ** 2 * x ** 2, 1), 1)
        return np.where(x > radius, 0.0, out)
    return k


_ST_KERNELS = {"linear": _kernel_triangle, "cubic": _kernel_keys_cubic,
               "lanczos3": _kernel_lanczos(3.0), "lanczos5": _kernel_lanczos(5.0)}
_ST_METHODS = ("linear", "bilinear", "trilinear", "cubic", "bicubic", "tricubic", "lanczos3", "lanczos5")


def _st_matrix(in_size, out_size, scale, translation, kernel, antialias):
    """(out, in) weights of JAX's scale_and_translate along one axis (as Keras's backends compute them)."""
    inv = 1.0 / scale
    kscale = max(inv, 1.0) if antialias else 1.0
    sample = (np.arange(out_size) + 0.5) * inv - translation * inv - 0.5
    x = np.abs(sample[None, :] - np.arange(in_size)[:, None]) / kscale
    w = kernel(x)
    total = w.sum(axis=0, keepdims=True)
    w = np.where(np.abs(total) > 1000.0 * float(np.finfo(np.float32).eps), w / np.where(total != 0, total, 1), 0)
    w = np.where(((sample >= -0.5) & (sample <= in_size - 0.5))[None, :], w, 0)
    return w.T                                                         # (out, in)


def _apply_axis(x, mat, axis):
    """Contract x's axis with mat (out, in): a differentiable matmul with the axis moved last."""
    nd = x.ndim
    perm = [i for i in range(nd) if i != axis] + [axis]
    y = _m.matmul(_s.transpose(x, perm), mat.T)
    inv = np.argsort(perm)
    return _s.transpose(y, tuple(int(i) for i in inv))


def scale_and_translate(images, output_shape, scale, translation, spatial_dims, method, antialias=True):
    """JAX's scale_and_translate: along each of spatial_dims, out[o] = sum_i k((o + 0.5) / s - t / s - 0.5 - i)
    x[i] with kernel k ('linear', 'cubic' (Keys), 'lanczos3', 'lanczos5'; widened by 1 / s when antialias
    and downscaling). Differentiable with respect to images."""
    if method not in _ST_METHODS:
        raise ValueError(f"Invalid value for argument `method`. Expected of one {set(_ST_METHODS)}. "
                         f"Received: method={method}")
    method = "linear" if method in ("linear", "bilinear", "trilinear") else \
        "cubic" if method in ("cubic", "bicubic", "tricubic") else method
    images = as_tensor(images)
    if len(spatial_dims) == 0:
        return images
    scale = np.asarray(as_tensor(scale).numpy(), np.float64).reshape(-1)
    translation = np.asarray(as_tensor(translation).numpy(), np.float64).reshape(-1)
    int_in = _is_int(images.dtype)
    x = _m.cast(images, "float32") if int_in else images
    xp = backend.get_array_module(x.data)
    for i, d in enumerate(spatial_dims):
        d = d % x.ndim
        mat = _st_matrix(images.shape[d], int(output_shape[d]), scale[i], translation[i], _ST_KERNELS[method],
                         antialias)
        x = _apply_axis(x, xp.asarray(mat, x.dtype), d)
    if int_in:
        lo, hi = images.data.min(), images.data.max()
        return Tensor(xp.clip(xp.round(x.data), lo, hi).astype(images.dtype))
    return x


def _cubic_matrix(out_size, in_size, a=-0.75):
    """torch's bicubic (align_corners=False, A = -0.75, indices clamped at the border)."""
    scale = in_size / out_size
    src = (np.arange(out_size) + 0.5) * scale - 0.5
    x0 = np.floor(src)
    t = src - x0
    cc1 = lambda x: ((a + 2) * x - (a + 3)) * x * x + 1          # noqa: E731
    cc2 = lambda x: ((a * x - 5 * a) * x + 8 * a) * x - 4 * a     # noqa: E731
    weights = [cc2(t + 1), cc1(t), cc1(1 - t), cc2(2 - t)]
    m = np.zeros((out_size, in_size))
    rows = np.arange(out_size)
    for k, wk in enumerate(weights):     # four taps: a fixed count
        np.add.at(m, (rows, np.clip(x0.astype(np.int64) - 1 + k, 0, in_size - 1)), wk)
    return m


def _aa_matrix(out_size, in_size, interp_size, filt):
    """torch's antialiased interpolation weights (PIL-style support widened by the downscale factor)."""
    scale = in_size / out_size
    support = interp_size * 0.5 * scale if scale >= 1.0 else interp_size * 0.5
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    centers = scale * (np.arange(out_size) + 0.5)
    xmin = np.maximum(np.trunc(centers - support + 0.5), 0).astype(np.int64)
    xmax = np.minimum(np.trunc(centers + support + 0.5).astype(np.int64), in_size)
    j = np.arange(in_size)[None, :]
    inside = (j >= xmin[:, None]) & (j < xmax[:, None])
    w = np.where(inside, filt((j - centers[:, None] + 0.5) * invscale), 0.0)
    total = w.sum(axis=1, keepdims=True)
    return np.where(total != 0, w / np.where(total != 0, total, 1), w)


def _aa_linear(x):
    x = np.abs(x)
    return np.where(x < 1, 1 - x, 0.0)


def _aa_cubic(x, a=-0.5):
    x = np.abs(x)
    return np.where(x < 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


_RESIZE_METHODS = ("bilinear", "nearest", "bicubic", "lanczos3", "lanczos5", "area")


def _area_matrix(out_size, in_size):
    """TensorFlow's 'area' resize: output i averages the input over [i s, (i + 1) s), s = in / out, each input
    pixel weighted by its overlap with that box."""
    s = in_size / out_size
    lo = np.arange(out_size)[:, None] * s
    hi = lo + s
    j = np.arange(in_size)[None, :]
    return np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0, None) / s


def _resize_matrix(out_size, in_size, method, antialias):
    if method == "nearest" or (method == "bilinear" and not antialias):
        return _interp_matrix(out_size, in_size, method, np, np.float64)
    if method == "bilinear":
        return _aa_matrix(out_size, in_size, 2, _aa_linear)
    if method == "bicubic":
        return _aa_matrix(out_size, in_size, 4, _aa_cubic) if antialias else _cubic_matrix(out_size, in_size)
    if method == "area":
        return _area_matrix(out_size, in_size)
    return _st_matrix(in_size, out_size, out_size / in_size, 0.0, _ST_KERNELS[method], antialias)


class _MatrixResize(Resize):
    """Resize with given (OH, H) and (OW, W) interpolation matrices; forward and backward as Resize's."""

    def _matrices(self, x):
        return self.xp.asarray(self.ah, x.dtype), self.xp.asarray(self.aw, x.dtype)


def resize(images, size, interpolation="bilinear", antialias=False, crop_to_aspect_ratio=False,
           pad_to_aspect_ratio=False, fill_mode="constant", fill_value=0.0, data_format=None):
    """Resize images to size=(height, width): 'bilinear', 'nearest' (half-pixel centres, torch's
    'nearest-exact'), 'bicubic' (A = -0.75), with torch's antialias filter when antialias=True; 'lanczos3' /
    'lanczos5' as JAX (scale_and_translate kernels) and 'area' as TensorFlow (box averages), which Keras's
    torch backend refuses. Optional centre crop or fill_value padding to the target
    aspect ratio first. Differentiable (two interpolation matrices)."""
    df = _data_format(data_format)
    if interpolation not in _RESIZE_METHODS:
        raise ValueError(f"Invalid value for argument `interpolation`. Expected of one {_RESIZE_METHODS}. "
                         f"Received: interpolation={interpolation}")
    if fill_mode != "constant":
        raise ValueError(f"Invalid value for argument `fill_mode`. Only `'constant'` is supported. "
                         f"Received: fill_mode={fill_mode}")
    if pad_to_aspect_ratio and crop_to_aspect_ratio:
        raise ValueError("Only one of `pad_to_aspect_ratio` & `crop_to_aspect_ratio` can be `True`.")
    if len(size) != 2:
        raise ValueError(f"Argument `size` must be a tuple of two elements (height, width). Received: size={size}")
    th, tw = int(size[0]), int(size[1])
    images = as_tensor(images)
    _check_rank(images)
    out_dtype = images.dtype
    x = images if images.dtype in (np.float32, np.float64) else _m.cast(images, "float32")
    x, undo = _to_nhwc(x, df)
    n, h, w, c = x.shape
    _check_pixels(h, w, images.shape)
    if crop_to_aspect_ratio:
        ch = max(min(h, int(float(w * th) / tw)), 1)
        cw = max(min(w, int(float(h * tw) / th)), 1)
        top, left = int(float(h - ch) / 2), int(float(w - cw) / 2)
        x = _s.getitem(x, (slice(None), slice(top, top + ch), slice(left, left + cw), slice(None)))
    elif pad_to_aspect_ratio:
        ph = max(h, int(float(w * th) / tw))
        pw = max(w, int(float(h * tw) / th))
        top, left = int(float(ph - h) / 2), int(float(pw - w) / 2)
        if top > 0 or left > 0:
            x = _s.pad(x, ((0, 0), (top, top), (left, left), (0, 0)), constant_values=float(fill_value))
    n, h, w, c = x.shape
    aa = bool(antialias) and interpolation not in ("nearest", "area")
    ah = _resize_matrix(th, h, interpolation, aa)
    aw = _resize_matrix(tw, w, interpolation, aa)
    y = _MatrixResize.apply(x, size=(th, tw), ah=ah, aw=aw)
    y = undo(y)
    if y.dtype == out_dtype:
        return y
    if _is_int(out_dtype):
        xp = backend.get_array_module(y.data)
        data = xp.round(y.data)
        if interpolation == "bicubic" and out_dtype == np.uint8:
            data = xp.clip(data, 0, 255)
        return Tensor(data.astype(out_dtype))
    return _m.cast(y, out_dtype)
