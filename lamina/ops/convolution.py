"""Convolution, transposed convolution, pooling, resampling, zero padding and cropping.

Channels-last throughout: images (N, H, W, C), sequences (N, L, C). Kernels use Keras's layouts:
convolution (KH, KW, C_in, C_out), transposed convolution (KH, KW, C_out, C_in).

How the convolution is computed (the hot path of a CNN):
- forward: the padded input is viewed through strides as (N, OH, OW, KH, KW, C) without copying
  (``as_strided``), copied into the (N*OH*OW, KH*KW*C) "column" matrix (im2col), and multiplied
  by the kernel reshaped to (KH*KW*C, C_out). The columns are built a block of samples at a time (about
  2 MB on the CPU: the copy and its GEMM stay in cache), so the whole matrix never exists;
- backward keeps the smaller of (input, columns): for a 3x3 kernel the input (9x smaller), and
  dW = cols^T dY is accumulated over the same blocks, rebuilding their columns; the input gradient
  col2im(dY W^T) is computed per kernel
  offset: one (N*OH*OW, O) @ (O, C) GEMM and one strided, vectorised addition into the input
  gradient per offset (KH*KW of them), never a scatter over pixels. The input gradient is
  skipped when the input needs none (a first layer);
- thin images (fewer than _THIN_CHANNELS channels: an RGB or grey input, a generator's RGB output) take the
  transposed layout: the columns as (KH*KW*C, rows) built from a channels-first copy, whose row copies run OW
  floats instead of KW*C, the bias as a row of ones inside the product; their col2im adds channels-first
  slabs (_thin_blocks, _thin_col2im);
- few channels each way at stride 1 (at most 32, C * O <= 512: a U-Net's first levels, an RGB first layer) and
  256 output positions or more: no im2col, but the compiled planes kernels (kernel_loops.conv_planes), each sample
  packed channels-first into zero-padded planes, each kernel offset one pass over contiguous runs; the input
  gradient is the same kernel on dy with the turned kernel, the kernel gradient dot products of the same runs.
  BLAS runs a product with so few output columns far below its rate, after a 9x copy of the input.

Padding follows Keras (TensorFlow's rule): 'same' pads total = max((ceil(n/s)-1)*s + (k-1)*d + 1 - n, 0)
with total // 2 before and the rest after (so at stride 2 the extra row goes at the bottom, unlike
PyTorch's symmetric padding); 'causal' (1-D) pads (k-1)*d on the left only.
"""
import numpy as np

from .. import threads as _threads
from ..tensor import Op, as_tensor
from .manipulation import getitem, pad, repeat, reshape
from . import cuda_kernels as _cuda_kernels
from . import kernels as _kernels
from .math import fused_activation, mm, mm_tn, relu_bias_grad, relu_into, split_pass, sum_rows

__all__ = ["conv1d", "conv2d", "conv1d_transpose", "conv2d_transpose", "max_pool1d", "max_pool2d",
           "avg_pool1d", "avg_pool2d", "upsampling1d", "upsampling2d", "zero_padding1d", "zero_padding2d",
           "cropping1d", "cropping2d", "conv_output_length", "conv_transpose_output_length"]

_PADDINGS = ("valid", "same")


# ----------------------------------------------------------------------------- argument helpers
def _tuple(value, n, what, op):
    """An int or a sequence of n positive ints -> tuple of n ints."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value),) * n
    try:
        value = tuple(int(v) for v in value)
    except TypeError:
        raise ValueError(f"{op}: {what} must be an int or a tuple of {n} ints. Received: {what}={value!r}") from None
    if len(value) != n or any(v < 1 for v in value):
        raise ValueError(f"{op}: {what} must be a positive int or a tuple of {n} positive ints. "
                         f"Received: {what}={value!r}")
    return value


def _padding_name(padding, op, allowed=_PADDINGS):
    p = padding.lower() if isinstance(padding, str) else padding
    if p not in allowed:
        raise ValueError(f"{op}: unknown padding {padding!r}. Valid values: "
                         f"{', '.join(repr(a) for a in allowed)}.")
    return p


def _pads(padding, size, k, s, d):
    """(before, after) padding of one spatial axis under Keras's rule."""
    keff = (k - 1) * d + 1
    if padding == "valid":
        return 0, 0
    if padding == "causal":
        return keff - 1, 0
    total = max((-(-size // s) - 1) * s + keff - size, 0)
    return total // 2, total - total // 2


def conv_output_length(size, kernel_size, padding, stride, dilation=1):
    """Output length of a convolution or pooling along one axis (None stays None).

    'valid': floor((n - keff) / s) + 1; 'same': ceil(n / s); 'causal': ceil(n / s), with keff = (k-1)*d + 1.
    """
    if size is None:
        return None
    keff = (kernel_size - 1) * dilation + 1
    if padding == "valid":
        return (size - keff) // stride + 1
    return -(-size // stride)


def conv_transpose_output_length(size, kernel_size, padding, output_padding, stride, dilation=1):
    """Output length of a transposed convolution along one axis, as Keras computes it.

    Without output_padding: 'valid' n*s + max(keff - s, 0), 'same' n*s.
    With output_padding p: (n-1)*s + keff - 2*pad + p, pad = 0 ('valid') or keff // 2 ('same').
    """
    if size is None:
        return None
    keff = (kernel_size - 1) * dilation + 1
    if output_padding is None:
        return size * stride + max(keff - stride, 0) if padding == "valid" else size * stride
    pad_ = 0 if padding == "valid" else keff // 2
    return (size - 1) * stride + keff - 2 * pad_ + output_padding


def _pad_hw(xp, x, pads, value):
    """x (N, H, W, C) with (top, bottom), (left, right) constant padding; x itself when no padding."""
    (t, b), (l, r) = pads
    if not (t or b or l or r):
        return x
    n, h, w, c = x.shape
    out = xp.full((n, h + t + b, w + l + r, c), value, dtype=x.dtype)
    out[:, t:t + h, l:l + w, :] = x
    return out


def _window(x, i, j, oh, ow, stride, dilation=(1, 1)):
    """The (N, OH, OW, C) strided view of x seen by kernel offset (i, j)."""
    sh, sw = stride
    r0, c0 = i * dilation[0], j * dilation[1]
    return x[:, r0:r0 + sh * (oh - 1) + 1:sh, c0:c0 + sw * (ow - 1) + 1:sw, :]


def _im2col(xp, x, kh, kw, oh, ow, stride, dilation):
    """(N*OH*OW, KH*KW*C) matrix of the receptive fields of x (N, Hp, Wp, C), one row per output pixel.

    A strided view does the gathering (no Python loop); the single copy makes the GEMM operand contiguous.
    """
    n, _, _, c = x.shape
    sn, sh_, sw_, sc = x.strides
    view = xp.lib.stride_tricks.as_strided(
        x, shape=(n, oh, ow, kh, kw, c),
        strides=(sn, sh_ * stride[0], sw_ * stride[1], sh_ * dilation[0], sw_ * dilation[1], sc))
    return xp.ascontiguousarray(view).reshape(n * oh * ow, kh * kw * c)


def _im2col_into(xp, x, kh, kw, oh, ow, stride, dilation, buf):
    """_im2col written into the first rows of the preallocated 2-D ``buf`` (returned as that view)."""
    n, _, _, c = x.shape
    sn, sh_, sw_, sc = x.strides
    view = xp.lib.stride_tricks.as_strided(
        x, shape=(n, oh, ow, kh, kw, c),
        strides=(sn, sh_ * stride[0], sw_ * stride[1], sh_ * dilation[0], sw_ * dilation[1], sc))
    rows = buf[:n * oh * ow]
    rows.reshape(n, oh, ow, kh, kw, c)[...] = view
    return rows


# The im2col matrix is built a block of samples at a time, each block about this many bytes: on the CPU
# the block stays in cache between its copy and its GEMM (faster than one matrix of 9x the input in
# memory), and neither pass ever holds the whole matrix. On a GPU one big GEMM is better: a larger block.
_BLOCK_BYTES_CPU = 2 ** 21
_BLOCK_BYTES_DEVICE = 2 ** 28
# Conv2D keeps its im2col matrix for the kernel gradient up to this size (rebuilding it in backward cost
# ~0.4-3 ms of the bench cnn's 19-27 ms step, whose two larger matrices are 6 and 12.5 MB); larger ones
# (big images or batches: 9x the input for 3x3) are rebuilt block by block, so memory stays bounded.
_KEEP_COLS_BYTES = 2 ** 24


def _block(xp, n, per_sample_bytes):
    """Samples per block (at least 1)."""
    target = _BLOCK_BYTES_CPU if xp is np else _BLOCK_BYTES_DEVICE
    return max(1, min(n, target // max(per_sample_bytes, 1)))


def _im2col_blocks(xp, x, pads, kh, kw, oh, ow, stride, dilation, into=None):
    """(first sample, end sample, im2col rows of those samples of pad(x)) for consecutive blocks of
    samples; the rows live in one reused buffer, valid until the next block, or, given ``into`` (the
    whole (N*OH*OW, KH*KW*C) matrix), in their own rows of it."""
    n, c = x.shape[0], x.shape[3]
    k = kh * kw * c
    step = _block(xp, n, oh * ow * k * x.dtype.itemsize)
    buf = xp.empty((step * oh * ow, k), dtype=x.dtype) if into is None else None
    # compiled where it runs (kernels.py) and x is padded: each block's rows written straight from x, the padding
    # as zeros, in one pass (NumPy: a padded copy of the block, then a strided copy; (16, 56, 56, 64) 3x3 'same'
    # 6.8 -> 4.0 ms, (64, 32, 32, 32) 5.2 -> 5.0)
    padded = any(a or b for a, b in pads)   # (unpadded, NumPy's strided copy runs KW*C floats: as fast)
    gather = _kernels.im2col(x) if xp is np and padded and (into is None or into.dtype == x.dtype) else None
    (pt, _), (pl, _) = pads
    for s0 in range(0, n, step):  # blocks of samples, each one vectorised copy (and the caller's GEMM)
        s1 = min(s0 + step, n)
        rows = buf if into is None else into[s0 * oh * ow:]
        if gather is not None:
            rows = rows[:(s1 - s0) * oh * ow]
            gather(x, rows, s0, s1, oh, ow, kh, kw, stride[0], stride[1], dilation[0], dilation[1], pt, pl)
            yield s0, s1, rows
            continue
        xb = _pad_hw(xp, x[s0:s1], pads, 0)
        yield s0, s1, _im2col_into(xp, xb, kh, kw, oh, ow, stride, dilation, rows)


# Inputs with fewer channels than this (RGB images: a first layer) take the transposed-columns layout of
# _thin_blocks. Measured on the bench cnn's first layer ((64, 32, 32, 3) -> 32, 3x3): cnn step 0.94x,
# cnn_infer 0.92x (bench.ab, 8 process pairs each).
_THIN_CHANNELS = 8


def _channels_first(xp, x, pads):
    """The zero-padded input as a (C, N, Hp, Wp) array."""
    return xp.ascontiguousarray(_pad_hw(xp, x, pads, 0).transpose(3, 0, 1, 2))


def _thin_blocks(xp, xt, kh, kw, oh, ow, stride, dilation, bias, into=None):
    """(first sample, end sample, TRANSPOSED im2col block (KH*KW*C [+ 1], samples*OH*OW)) for consecutive
    blocks of samples of the channels-first padded input xt (C, N, Hp, Wp); with ``bias`` the block's last
    row is ones, so that a product with the kernel and the bias stacked adds the bias, and the kernel
    gradient's product yields the bias gradient too. The blocks are column ranges of ``into`` (the whole
    (rows, N*OH*OW) matrix) when given, else of one reused buffer.

    Why transposed: for a thin input the channels-last gather copies runs of KW*C floats (9 for a 3x3 RGB
    kernel) one by one, while here each row of the block is a copy of (samples, OH, OW) windows of one
    channel, whose inner runs are OW floats long; BLAS takes the block's transpose as it is."""
    c, n = xt.shape[:2]
    k = kh * kw * c
    rows = k + bool(bias)
    step = _block(xp, n, oh * ow * rows * xt.dtype.itemsize)
    buf = xp.empty((rows, step * oh * ow), dtype=xt.dtype) if into is None else into
    sc, sn, sh_, sw_ = xt.strides
    (dh, dw), (th, tw) = dilation, stride
    for s0 in range(0, n, step):
        s1 = min(s0 + step, n)
        m = (s1 - s0) * oh * ow
        block = buf[:, :m] if into is None else into[:, s0 * oh * ow:s1 * oh * ow]
        view = xp.lib.stride_tricks.as_strided(xt[:, s0:], shape=(kh, kw, c, s1 - s0, oh, ow),
                                               strides=(sh_ * dh, sw_ * dw, sc, sn, sh_ * th, sw_ * tw))
        block[:k].reshape(kh, kw, c, s1 - s0, oh, ow)[...] = view
        if bias:
            block[k] = 1
        yield s0, s1, block


def _thin_col2im(xp, g2, w2, kshape, canvas, oh, ow, stride, dilation):
    """col2im(g2 @ w2^T) for a thin result (C < _THIN_CHANNELS channels), CHANNELS-FIRST: a zero (C, N, Hp, Wp)
    canvas (``canvas`` = (N, Hp, Wp)) receives, for each kernel offset (i, j), the (C, N, OH, OW) slab of
    column gradients at its strided window. g2: (N*OH*OW, O) rows; w2: (KH*KW*C, O), rows in (i, j, c)
    order; kshape = (KH, KW, C). Per block of samples one product w2 @ g2_block^T, (K, rows) transposed, so
    each slab's inner runs are OW long (the channels-last col2im adds runs of C floats after KH*KW products
    of C columns each). Conv2D's input gradient and Conv2DTranspose's forward are both this."""
    kh, kw, c = kshape
    n, hp, wp = canvas
    k = kh * kw * c
    (sh, sw), (dh, dw) = stride, dilation
    dtype = np.result_type(g2.dtype, w2.dtype)
    out = xp.zeros((c, n, hp, wp), dtype=dtype)
    step = _block(xp, n, oh * ow * k * dtype.itemsize)

    def part(lo, hi):   # samples lo:hi (lamina's threads: _split_samples)
        buf = xp.empty(k * min(step, hi - lo) * oh * ow, dtype=dtype)
        for s0 in range(lo, hi, step):
            s1 = min(s0 + step, hi)
            m = (s1 - s0) * oh * ow
            d = mm(xp, w2, g2[s0 * oh * ow:s1 * oh * ow].T, out=buf[:k * m].reshape(k, m))
            d6 = d.reshape(kh, kw, c, s1 - s0, oh, ow)
            for i in range(kh):
                for j in range(kw):
                    out[:, s0:s1, i * dh:i * dh + sh * (oh - 1) + 1:sh,
                        j * dw:j * dw + sw * (ow - 1) + 1:sw] += d6[i, j]
    _split_samples(xp, part, n, n * oh * ow * k * w2.shape[1], align=step)
    return out


def _gemm_col2im(xp, g2, kernels, shape, oh, ow, stride, dilation, window=None):
    """col2im fused with the GEMM that makes the columns: for each kernel offset (i, j), the
    (N*OH*OW, C) product g2 @ kernels[i, j] is added at its strided window of a zero array of ``shape``.

    Equal to col2im(g2 @ W2^T) but each offset's product is contiguous (cheaper to add than the
    strided slices of one big column matrix) and the (N*OH*OW, KH*KW*C) buffer is never made.
    ``window`` ((top, left), (H, W)): only that window of the result (a view, or with the compiled gather only
    its positions computed: no array of ``shape``, no crop).
    """
    kh, kw = kernels.shape[:2]
    n, c = shape[0], shape[3]
    (top, left), (h, w) = window if window is not None else ((0, 0), shape[1:3])
    # The compiled gather sums runs of C values a kernel offset at a time after one product of KH*KW*C columns:
    # at stride 1 with few channels each way (C*O under ~300) those runs are short and the offsets' own products
    # with their strided additions are faster (3x3, 32 samples of 32 x 32, the col2im alone, best of three
    # interleaved: C=8 O=8 3.95 against 2.18 ms, C=8 O=16 4.46 / 2.83, C=16 O=16 6.08 / 5.35, C=12 O=24 5.72 /
    # 5.46; but C=16 O=32 7.27 / 9.26, C=24 O=24 8.42 / 10.86, and at stride 2 the gather was ahead from C=8 O=16)
    if xp is not np:   # on a GPU: one product of every offset's columns, then one gathering launch
        done = _device_col2im(xp, g2, kernels, shape, oh, ow, stride, dilation, window)
        if done is not None:
            return done
    few = max(stride) == 1 and c * g2.shape[1] < 300
    gather = _kernels.col2im_gather(g2) if xp is np and kernels.dtype == g2.dtype and not few else None
    if gather is not None:
        w2 = np.ascontiguousarray(kernels.transpose(2, 0, 1, 3)).reshape(kernels.shape[2], kh * kw * c)
        return _gathered_col2im(g2, w2, gather, (n, h, w, c), (kh, kw), oh, ow, stride, dilation, (top, left))
    out = xp.zeros(shape, dtype=g2.dtype)
    buf = xp.empty((g2.shape[0], c), dtype=g2.dtype)
    for i in range(kh):
        for j in range(kw):
            mm(xp, g2, kernels[i, j], out=buf)
            _window(out, i, j, oh, ow, stride, dilation)[...] += buf.reshape(n, oh, ow, c)
    return out if window is None else out[:, top:top + h, left:left + w]


# On a GPU: the largest column matrix (N*OH*OW, KH*KW*C) a convolution keeps for its kernel gradient, and the
# largest column-gradient matrix col2im makes (bytes); larger ones are rebuilt / take the per-offset products.
_DEVICE_COLS_BYTES = 2 ** 30


def _device_col2im(xp, g2, kernels, shape, oh, ow, stride, dilation, window):
    """_gemm_col2im on a GPU: dcols = g2 W2^T in one product (W2 the (KH*KW*C, O) kernel), then
    cuda_kernels.col2im sums each input position's columns in one launch (the per-offset code makes 2 KH*KW
    launches and a zeroed canvas); None where that kernel does not run or the columns would be too large."""
    kh, kw, o, c = kernels.shape
    if g2.shape[0] * kh * kw * c * g2.dtype.itemsize > _DEVICE_COLS_BYTES:
        return None
    w2 = kernels.transpose(0, 1, 3, 2).reshape(kh * kw * c, o)
    dcols = mm(xp, g2, w2.T)
    if window is None:
        window = ((0, 0), shape[1:3])
    return _cuda_kernels.col2im(xp.ascontiguousarray(dcols), shape, oh, ow, (kh, kw), stride, dilation, window)


def _gathered_col2im(g2, w2, gather, shape, kernel_size, oh, ow, stride, dilation, corner=(0, 0)):
    """_gemm_col2im with the compiled gather (kernels.col2im_gather): per block of samples one product
    g2_block @ w2, (rows, KH*KW*C) columns still in cache when the gather sums them into the block's input
    gradient, written once. One product of KH*KW*C columns instead of KH*KW of C (thin when C is small),
    and no strided read-modify-write passes over the padded gradient. Measured (quiet, 3x3 'valid', 60
    interleaved calls, one / two threads): (64,13,13,64) -> (64,15,15,32) 6.4 -> 4.8 / 5.6 -> 4.7 ms,
    (32,32,32,32) -> (32,34,34,16) 9.1 -> 6.3 / 7.7 -> 7.4 ms, (16,16,16,64) -> (16,18,18,64) 4.3 -> 3.0 /
    3.9 -> 2.8 ms."""
    kh, kw = kernel_size
    n, c = shape[0], shape[3]
    per = oh * ow
    out = np.empty(shape, dtype=g2.dtype)
    step = _block(np, n, per * w2.shape[1] * g2.dtype.itemsize)

    def part(lo, hi):   # samples lo:hi (lamina's threads: _split_samples)
        buf = np.empty((min(step, hi - lo) * per, w2.shape[1]), dtype=g2.dtype)
        for s0 in range(lo, hi, step):
            s1 = min(s0 + step, hi)
            cols = mm(np, g2[s0 * per:s1 * per], w2, out=buf[:(s1 - s0) * per])
            gather(cols.reshape(s1 - s0, oh, ow, kh, kw, c), out[s0:s1], stride[0], stride[1], dilation[0],
                   dilation[1], *corner)
    _split_samples(np, part, n, n * per * w2.size, align=step)
    return out


# A stride-1 convolution with at most _PLANES_CHANNELS channels each way, C * O at most _PLANES_PRODUCT, and at least
# _PLANES_POSITIONS output positions a sample takes the compiled planes kernels (kernels.conv_planes); its input
# gradient too where that convolution (O channels to C) qualifies. Split over lamina's threads by samples from
# _SPLIT_PLANES products. Measured (Zen 2, 3x3 'same', 32 samples, forward + backward with the input gradient,
# against im2col's path with its blocks on one thread; 2 threads): 32 x 32 8 -> 8 2.7 against 8.7 ms (one im2col
# block loop on BLAS's two threads), 16 -> 8 4.0 / 17.0; with im2col's blocks shared over lamina's threads
# (_split_samples): 16 x 16 32 -> 16 4.05 against 5.45, 16 -> 32 4.83 / 4.88, 32 x 32 16 -> 32 12.4 / 13.9,
# 32 -> 16 12.8 / 13.8, (64, 30, 30, 3) -> 32 9.2 / 11.8; but 32 -> 32 22.2 against 19.4 (C * O = 1024), where
# one thread of the planes is also behind BLAS's (37.9 against 29.1 ms; at 512, even: 16 -> 32 20.3 / 18.3,
# 32 -> 16 18.9 / 19.5). bench cnn's first layer (3 -> 32, no input gradient): its step 29.4 -> 28.4 ms.
_PLANES_CHANNELS = 32
_PLANES_PRODUCT = 512
_PLANES_POSITIONS = 256
_SPLIT_PLANES = 1 << 20


def _planes_kernels(x, w, b, out_hw, stride):
    """The compiled kernels for the planes convolution of x (N, H, W, C) by w (KH, KW, C, O) to out_hw, or None."""
    c, o = w.shape[2:]
    if (stride != (1, 1) or max(c, o) > _PLANES_CHANNELS or c * o > _PLANES_PRODUCT
            or out_hw[0] * out_hw[1] < _PLANES_POSITIONS
            or w.dtype != x.dtype or (b is not None and b.dtype != x.dtype)):
        return None
    return _kernels.conv_planes(x)


def _planes_geometry(kernel_hw, out_hw, dilation):
    """(Hp, Wp): the padded input's planes that an OH x OW output reads at stride 1."""
    (kh, kw), (oh, ow), (dh, dw) = kernel_hw, out_hw, dilation
    return oh + (kh - 1) * dh, ow + (kw - 1) * dw


def _planes(count, size, dtype):
    """Scratch planes (count, >= size): each row an odd number of 64-byte lines long. Rows a multiple of 4 KB apart
    share the L1 cache's sets, and the packing's stores (one per plane for each input position) evicted each other:
    (64, 30, 30, 32) -> 1 3x3 took 8.0 ms with 32 x 32 planes, 0.94 with these."""
    per = 64 // np.dtype(dtype).itemsize
    lines = -(-size // per)
    return np.empty((count, (lines | 1) * per), dtype=dtype)


def _planes_conv(k, x, w, b, out_hw, corner, dilation, relu, y=None, c0=0, o0=0, mask=None):
    """conv2d of x (N, H, W, C) by w (KH, KW, C, O) at stride 1, x's (0, 0) at ``corner`` = (top, left) of the
    padded input, to (N, OH, OW, O) with the bias b (or none) and the ReLU where ``relu``: kernel_loops.conv_planes,
    samples shared over lamina's threads (each part its own scratch planes). A group of a grouped convolution:
    w's C channels from channel c0 of x, written to channels o0:o0 + O of ``y`` (N, OH, OW, any). With ``mask``
    (x's shape), of x * (mask > 0): a fused ReLU's input gradient from dy and the layer's output."""
    n, c, o = x.shape[0], w.shape[2], w.shape[3]
    (oh, ow), (pt, pl), (dh, dw) = out_hw, corner, dilation
    hp, wp = _planes_geometry(w.shape[:2], out_hw, dilation)
    w = np.ascontiguousarray(w)
    b = np.zeros(o, x.dtype) if b is None else np.ascontiguousarray(b)
    y = np.empty((n, oh, ow, o), dtype=x.dtype) if y is None else y

    def part(lo, hi):
        xs, acc = _planes(c, hp * wp, x.dtype), _planes(o, oh * wp, x.dtype)
        k.conv_planes(x, w, b, y, xs, acc, lo, hi, pt, pl, dh, dw, relu, c0, o0, _none(x) if mask is None else mask)
    _threads.split_rows(part, n, n * oh * ow * o * w.shape[0] * w.shape[1] * c, _SPLIT_PLANES)
    return y


def _planes_grad_weight(k, x, gy, kshape, corner, dilation, c0=0, o0=0, mask=None, bias=False):
    """The planes convolution's kernel gradient (KH, KW, C, O): kernel_loops.conv_planes_grad_weight's per-sample
    sums (samples shared over lamina's threads), added in sample order (the same on any number of threads). A
    group's: x's channels c0:c0 + C, gy's o0:o0 + O. With ``mask`` (gy's shape) of gy * (mask > 0) (a fused
    ReLU's). Returns (gw, the bias gradient from the same pass where ``bias``, else None)."""
    n, (c, o) = x.shape[0], kshape[2:]
    oh, ow = gy.shape[1:3]
    (pt, pl), (dh, dw) = corner, dilation
    hp, wp = _planes_geometry(kshape[:2], (oh, ow), dilation)
    parts = np.empty((n,) + tuple(kshape), dtype=x.dtype)
    bparts = np.empty((n, o) if bias else (0, 0), dtype=x.dtype)

    def part(lo, hi):
        xs, gs = _planes(c, hp * wp, x.dtype), _planes(o, oh * wp, x.dtype)
        k.conv_planes_grad_weight(x, gy, parts, xs, gs, lo, hi, pt, pl, dh, dw, c0, o0,
                                  _none(gy) if mask is None else mask, bparts)
    _threads.split_rows(part, n, parts.size * oh * ow, _SPLIT_PLANES)
    return parts.sum(axis=0), (bparts.sum(axis=0) if bias else None)


def _none(x):
    """An empty array of x's rank and dtype: a kernel's "no mask"."""
    return np.empty((0,) * x.ndim, x.dtype)


# Blocks of samples whose products come to this many multiply-adds or more are shared over lamina's threads, each
# thread its own blocks with BLAS on one thread (threads.split_products).
_SPLIT_BLOCKS = 1 << 22


def _split_samples(xp, body, n, work, align):
    """body(lo, hi) over samples 0..n of a convolution's blocks (each an im2col copy and its product), ``align``
    samples a block: threads.split_products for NumPy (each thread whole blocks: the same products as one thread's,
    as BLAS may round a product of other rows otherwise), once for a device."""
    if xp is np:
        _threads.split_products(body, n, work, _SPLIT_BLOCKS, align)
    else:
        body(0, n)


def _crop_hw(x, pads, h, w):
    (t, _), (l, _) = pads
    if x.shape[1] == h and x.shape[2] == w:
        return x
    return x[:, t:t + h, l:l + w, :]


# ----------------------------------------------------------------------------- convolution
class Conv2D(Op):
    """y = im2col(pad(x)) @ W.reshape(KH*KW*C, O) + b. Backward: dW = cols^T dy, db = sum dy,
    dx = crop(col2im(dy W^T)).

    Memory: backward needs the columns only for dW. When the im2col matrix is no larger than the input
    (1x1 kernels, stride >= kernel) or than _KEEP_COLS_BYTES it is kept; otherwise (3x3: 9x the input)
    only the input is kept (a reference: the graph holds it anyway) and the columns are rebuilt block by
    block in backward. Nothing
    is kept for dW when the kernel needs no gradient, nor the kernel for dx when the input needs none."""

    half_via_float32 = True  # float16 through float32 BLAS (tensor.Op)
    activation = None  # or 'relu', fused (conv2d's argument)

    def forward(self, x, w, b):
        xp = self.xp
        n, h, wd, c = x.shape
        kh, kw, _, o = w.shape
        (pt, pb), (pl, pr) = self.pads
        oh = (h + pt + pb - (kh - 1) * self.dilation[0] - 1) // self.stride[0] + 1
        ow = (wd + pl + pr - (kw - 1) * self.dilation[1] - 1) // self.stride[1] + 1
        k = kh * kw * c
        self.meta = (x.shape, (h + pt + pb, wd + pl + pr), oh, ow)
        self.kernel_shape = w.shape
        self.thin = None
        self.planes = _planes_kernels(x, w, b, (oh, ow), self.stride) if xp is np else None
        if self.planes is not None:   # few channels each way at stride 1: no im2col (see kernel_loops.conv_planes)
            relu = self.activation == "relu"
            y = _planes_conv(self.planes, x, w, b, (oh, ow), (pt, pl), self.dilation, relu)
            self.saved = (None, x if self.needs_grad[1] else None, w if self.needs_grad[0] else None,
                          y if relu else None)
            return y
        if c < _THIN_CHANNELS and xp is np:
            y, cols, keep_cols = self._thin_forward(x, w, b, oh, ow)
        else:
            y, cols, keep_cols = self._wide_forward(x, w.reshape(k, o), b, oh, ow)
        y = y.reshape(n, oh, ow, o)
        # the output for the fused ReLU's mask (a reference: the graph holds it anyway)
        self.saved = (cols, x if self.needs_grad[1] and not keep_cols else None,
                      w if self.needs_grad[0] else None, y if self.activation == "relu" else None)
        return y

    def _wide_forward(self, x, w2, b, oh, ow):
        """(y rows, the kept columns or None, whether they are kept) in the channels-last layout."""
        xp = self.xp
        n, k, o = x.shape[0], w2.shape[0], w2.shape[1]
        limit = _KEEP_COLS_BYTES if xp is np else _DEVICE_COLS_BYTES   # (a GPU's memory: no rebuild in backward)
        keep_cols = self.needs_grad[1] and (n * oh * ow * k <= x.size or n * oh * ow * k * x.dtype.itemsize <= limit)
        cols = None
        kh, kw = self.kernel_shape[:2]
        if keep_cols and n * oh * ow * k <= x.size:
            cols = _im2col(xp, _pad_hw(xp, x, self.pads, 0), kh, kw, oh, ow, self.stride, self.dilation)
            y = mm(xp, cols, w2)
            self._finish(y, b)
            return y, cols, keep_cols
        # block by block (each block's copy still in cache for its product), into one kept matrix when it is
        # small enough, else into a reused block buffer
        y = xp.empty((n * oh * ow, o), dtype=np.result_type(x.dtype, w2.dtype))
        if keep_cols:
            cols = xp.empty((n * oh * ow, k), dtype=x.dtype)

        def part(lo, hi):   # samples lo:hi, block by block
            into = None if cols is None else cols[lo * oh * ow:hi * oh * ow]
            for s0, s1, cc in self._blocks(x[lo:hi], kh, kw, oh, ow, into):
                yb = mm(xp, cc, w2, out=y[(lo + s0) * oh * ow:(lo + s1) * oh * ow])
                self._finish(yb, b)  # while the block is still in cache
        _split_samples(xp, part, n, n * oh * ow * k * o, align=_block(xp, n, oh * ow * k * x.dtype.itemsize))
        return y, cols, keep_cols

    def _thin_forward(self, x, w, b, oh, ow):
        """(y rows, the kept columns or None, whether they are kept) for thin inputs (see _thin_blocks): the
        columns transposed, the bias as their row of ones, kept whole for the kernel gradient when small
        enough, else the input is kept and backward rebuilds the blocks from it."""
        xp = self.xp
        n, c = x.shape[0], x.shape[3]
        kh, kw, _, o = w.shape
        k = kh * kw * c
        rows = k + (b is not None)
        xt = _channels_first(xp, x, self.pads)
        w2 = w.reshape(k, o)
        if b is not None:
            w2 = xp.concatenate([w2, b.reshape(1, o).astype(w2.dtype, copy=False)])
        keep = self.needs_grad[1] and rows * n * oh * ow * x.dtype.itemsize <= _KEEP_COLS_BYTES
        cols = xp.empty((rows, n * oh * ow), dtype=x.dtype) if keep else None
        y = xp.empty((n * oh * ow, o), dtype=np.result_type(x.dtype, w.dtype))

        def part(lo, hi):   # samples lo:hi (lamina's threads: _split_samples)
            into = None if cols is None else cols[:, lo * oh * ow:hi * oh * ow]
            for s0, s1, ct in _thin_blocks(xp, xt[:, lo:hi], kh, kw, oh, ow, self.stride, self.dilation,
                                           b is not None, into):
                yb = mm(xp, ct.T, w2, out=y[(lo + s0) * oh * ow:(lo + s1) * oh * ow])
                if self.activation == "relu":
                    relu_into(xp, yb, yb)  # while the block is in cache
        _split_samples(xp, part, n, n * oh * ow * rows * o, align=_block(xp, n, oh * ow * rows * x.dtype.itemsize))
        self.thin = b is not None  # not None: thin layout; True: the columns carry the bias row
        return y, cols, keep

    def _thin_kernel_grad(self, cols, x, g2):
        """(dW, db or None) of the thin layout: one product of the transposed columns with dy, whose last row
        is the bias gradient when the columns carry the row of ones; the columns are rebuilt from the input x
        block by block when they were not kept."""
        xp = self.xp
        kh, kw, c, o = self.kernel_shape
        _, _, oh, ow = self.meta
        k = kh * kw * c
        if cols is not None:
            gwb = cols @ g2
        else:   # each block's product kept, added in block order (as _rebuilt_kernel_grad's)
            n, rows = x.shape[0], k + self.thin
            step = _block(xp, n, oh * ow * rows * x.dtype.itemsize)   # (_thin_blocks' blocks)
            parts = xp.empty((-(-n // step), rows, o), dtype=np.result_type(x.dtype, g2.dtype))
            xt = _channels_first(xp, x, self.pads)

            def part(lo, hi):
                for s0, s1, ct in _thin_blocks(xp, xt[:, lo:hi], kh, kw, oh, ow, self.stride, self.dilation,
                                               self.thin):
                    mm(xp, ct, g2[(lo + s0) * oh * ow:(lo + s1) * oh * ow], out=parts[(lo + s0) // step])
            _split_samples(xp, part, n, n * oh * ow * rows * o, align=step)
            gwb = parts.sum(axis=0)
        return gwb[:k].reshape(self.kernel_shape), (gwb[k] if self.thin else None)

    def _thin_input_grad(self, g2, w, xshape):
        """dx in the thin layout (_thin_col2im over dy's rows, then one transposing copy back to channels-last,
        input-sized and cheap for C < _THIN_CHANNELS). The channels-last col2im would make KH*KW products of
        only C output columns and add runs of C floats. Measured (2 threads): (64,32,32,3) 3x3 -> 32 'valid'
        2.45 -> 1.53 ms, (16,64,64,3) 4x4 stride 2 -> 64 4.04 -> 1.15 ms."""
        n, h, wd, c = xshape
        _, (hp, wp), oh, ow = self.meta
        gt = _thin_col2im(self.xp, g2, w.reshape(-1, w.shape[3]), w.shape[:3], (n, hp, wp), oh, ow,
                          self.stride, self.dilation)
        (pt, _), (pl, _) = self.pads
        return self.xp.ascontiguousarray(gt[:, :, pt:pt + h, pl:pl + wd].transpose(1, 2, 3, 0))

    def _finish(self, y, b):
        """Bias, then the fused activation (the Conv2D layer's ReLU), in place on rows of the output."""
        if self.activation == "relu" and b is not None and _kernels.bias_relu(y, b):   # one pass where compiled
            return
        if b is not None:
            y += b
        if self.activation == "relu":
            relu_into(self.xp, y, y)

    def _blocks(self, x, kh, kw, oh, ow, into=None):
        return _im2col_blocks(self.xp, x, self.pads, kh, kw, oh, ow, self.stride, self.dilation, into)

    def backward(self, gy):
        xp = self.xp
        cols, x, w, out = self.saved
        xshape, pshape, oh, ow = self.meta
        gb = None
        (pt, _), (pl, _) = self.pads
        gx = gw = None
        if self.planes is not None:
            gy = np.ascontiguousarray(gy)
            kh, kw = self.kernel_shape[:2]
            wf = w[::-1, ::-1].transpose(0, 1, 3, 2) if self.needs_grad[0] else None
            kx = _planes_kernels(gy, wf, None, xshape[1:3], (1, 1)) if self.needs_grad[0] else None
            if out is not None and self.needs_grad[1] and (kx is not None or not self.needs_grad[0]):
                # the fused ReLU's mask rides in the kernels' packing of dy, and its bias gradient in the kernel
                # gradient's pass (relu_bias_grad's pass over dy and its masked copy skipped)
                gw, gb = _planes_grad_weight(self.planes, x, gy, self.kernel_shape, (pt, pl), self.dilation, mask=out,
                                             bias=self.needs_grad[2])
                mask, out = out, None
            else:
                mask = None
        if out is not None:   # the fused ReLU's backward, as the ReLU op's (the thin layout makes its own db)
            gy, gb = relu_bias_grad(self.xp, gy, out, self.needs_grad[2] and self.thin is None)
        n, o = gy.shape[0], gy.shape[-1]
        g2 = gy.reshape(-1, o)
        if self.planes is not None:
            if self.needs_grad[1] and gw is None:
                gw = _planes_grad_weight(self.planes, x, gy, self.kernel_shape, (pt, pl), self.dilation)[0]
            if kx is not None:   # at stride 1 the input gradient is dy's convolution by the turned kernel
                dh, dw = self.dilation
                gx = _planes_conv(kx, gy, wf, None, xshape[1:3], ((kh - 1) * dh - pt, (kw - 1) * dw - pl),
                                  self.dilation, False, mask=mask)
        elif self.needs_grad[1]:
            kh, kw, c, _ = self.kernel_shape
            if self.thin is not None:
                gw, gb = self._thin_kernel_grad(cols, x, g2)
            elif cols is not None:
                gw = mm_tn(xp, cols, g2).reshape(self.kernel_shape)
            else:
                gw = self._rebuilt_kernel_grad(x, g2)
        if self.needs_grad[2] and gb is None:
            gb = sum_rows(xp, g2)
        if self.needs_grad[0] and gx is None:
            if self.thin is not None:
                gx = self._thin_input_grad(g2, w, xshape)
            else:
                gx = self._dx_as_conv(gy, w, xshape) if self.stride == (1, 1) and xshape[3] >= 16 else None
            if gx is None:
                # dx = col2im(dy W2^T), one (M, O) @ (O, C) product per kernel offset
                gx = _gemm_col2im(xp, g2, w.transpose(0, 1, 3, 2), (n,) + pshape + (xshape[3],), oh, ow,
                                  self.stride, self.dilation, ((pt, pl), xshape[1:3]))
        return gx, gw, gb

    def _rebuilt_kernel_grad(self, x, g2):
        """dW = cols^T dy with the columns rebuilt from x block by block: each block's product kept, the blocks
        shared over lamina's threads (_split_samples, on block boundaries), then added in block order (the sum of
        the one-thread loop, gw += block product, whatever the split)."""
        xp = self.xp
        kh, kw, c, o = self.kernel_shape
        _, _, oh, ow = self.meta
        n, k = x.shape[0], kh * kw * c
        step = _block(xp, n, oh * ow * k * x.dtype.itemsize)   # (_im2col_blocks' blocks)
        parts = xp.empty((-(-n // step), k, o), dtype=np.result_type(x.dtype, g2.dtype))

        def part(lo, hi):   # samples lo:hi, from a block's first sample
            for s0, s1, cc in self._blocks(x[lo:hi], kh, kw, oh, ow):
                mm(xp, cc.T, g2[(lo + s0) * oh * ow:(lo + s1) * oh * ow], out=parts[(lo + s0) // step])
        _split_samples(xp, part, n, n * oh * ow * k * o, align=step)
        return parts.sum(axis=0).reshape(self.kernel_shape)

    def _dx_as_conv(self, gy, w, xshape):
        """At stride 1 the input gradient is itself a convolution: dy, padded by (k-1)*d less the forward's
        padding before and the rest after, correlated with the kernel turned 180 degrees and transposed
        ((KH, KW, O, C)). Run as the forward runs (im2col blocks in cache, one GEMM of K = KH*KW*O each), it
        replaces KH*KW thin (M, O) @ (O, C) products and as many strided window additions (col2im). Measured
        (interleaved, 2 threads): 0.57-0.94x col2im's time for C >= 16 input channels (1x1 to 5x5 kernels,
        C, O 16-256; e.g. (64,32,32,32) -> 32, 3x3 'same' 8.7 against 14.5 ms), but 1.2-1.9x for C = 3 or 8,
        whose (M, KH*KW*O) @ (KH*KW*O, C) product is too thin: those keep col2im. None when a padding would
        be negative, or when the input has over 15% more positions than the output ('valid' padding of a small
        image: (64,15,15,32) -> 64 3x3 took 1.35x col2im's time, (64,6,6,64) 1.86x, as the convolution of dy
        runs over every input position)."""
        xp = self.xp
        kh, kw, c, o = w.shape
        n, h, wd = xshape[:3]
        oh, ow = gy.shape[1:3]
        if h * wd > 1.15 * oh * ow:
            return None
        (pt, _), (pl, _) = self.pads
        dh, dw = self.dilation
        pads = (((kh - 1) * dh - pt, h + pt - oh), ((kw - 1) * dw - pl, wd + pl - ow))
        if min(min(p) for p in pads) < 0:
            return None
        wf = xp.ascontiguousarray(w[::-1, ::-1].transpose(0, 1, 3, 2)).reshape(kh * kw * o, c)
        gx = xp.empty((n * h * wd, c), dtype=np.result_type(gy.dtype, w.dtype))
        if o < _THIN_CHANNELS and xp is np:
            # dy is thin (a last layer's RGB or one-channel output): its columns transposed, as a thin
            # input's in forward (_thin_blocks)
            blocks = ((s0, s1, ct.T) for s0, s1, ct in _thin_blocks(xp, _channels_first(xp, gy, pads), kh, kw, h,
                                                                    wd, (1, 1), self.dilation, False))
            for s0, s1, cc in blocks:
                mm(xp, cc, wf, out=gx[s0 * h * wd:s1 * h * wd])
            return gx.reshape(n, h, wd, c)

        def part(lo, hi):   # samples lo:hi
            for s0, s1, cc in _im2col_blocks(xp, gy[lo:hi], pads, kh, kw, h, wd, (1, 1), self.dilation):
                mm(xp, cc, wf, out=gx[(lo + s0) * h * wd:(lo + s1) * h * wd])
        _split_samples(xp, part, n, n * h * wd * kh * kw * o * c,
                       align=_block(xp, n, h * wd * kh * kw * o * gy.dtype.itemsize))
        return gx.reshape(n, h, wd, c)


class Conv2DTranspose(Op):
    """The adjoint of Conv2D as a forward op: y = crop(col2im(x @ W2^T)) + b, W2 = W.reshape(KH*KW*O, C).
    Backward: dcols = im2col(pad(dy)); dx = dcols @ W2; dW = dcols^T x; db = sum dy.
    Thin outputs (O < _THIN_CHANNELS, an RGB generator's last layer) take the transposed layout: the forward's
    col2im as _thin_col2im, the backward's columns as _thin_blocks. Measured (2 threads, forward + backward):
    (16,32,32,64) 4x4 stride 2 -> 3 6.29 -> 3.97 ms; (16,64,64,32) 3x3 -> 3 8.54 -> 6.18 ms; (64,14,14,64) 4x4
    stride 2 -> 1 1.70 -> 1.00 ms."""

    half_via_float32 = True  # float16 through float32 BLAS (tensor.Op)

    def forward(self, x, w, b):
        xp = self.xp
        n, h, wd, c = x.shape
        kh, kw, o, _ = w.shape
        sh, sw = self.stride
        dh, dw = self.dilation
        full = ((h - 1) * sh + (kh - 1) * dh + 1, (wd - 1) * sw + (kw - 1) * dw + 1)
        (bh, oh), (bw, ow) = self.window
        hh, ww = min(oh, full[0] - bh), min(ow, full[1] - bw)
        # thin outputs (an RGB generator's last layer): the slabs of _thin_col2im, channels-first
        self.thin = o < _THIN_CHANNELS and xp is np
        if self.thin:
            yt = _thin_col2im(xp, x.reshape(-1, c), w.reshape(kh * kw * o, c), (kh, kw, o), (n,) + full, h, wd,
                              self.stride, self.dilation)
            y = xp.zeros((n, oh, ow, o), dtype=yt.dtype)
            y[:, :hh, :ww, :] = yt[:, :, bh:bh + hh, bw:bw + ww].transpose(1, 2, 3, 0)
        else:
            # col2im(x W2^T): each input pixel's x @ W[i, j]^T lands at (h*sh + i*dh, w*sw + j*dw)
            # the output window [before, before + out) of the full result, zeros where it runs past the end
            yw = _gemm_col2im(xp, x.reshape(-1, c), w.transpose(0, 1, 3, 2), (n, full[0], full[1], o),
                              h, wd, self.stride, self.dilation, ((bh, bw), (max(hh, 0), max(ww, 0))))
            if min(hh, ww) <= 0:   # (a window wholly past the result: zeros only)
                y = xp.zeros((n, oh, ow, o), dtype=yw.dtype)
            elif (hh, ww) == (oh, ow):
                y = xp.ascontiguousarray(yw)     # (the compiled gather's window is its own array already)
            else:
                y = xp.zeros((n, oh, ow, o), dtype=yw.dtype)
                y[:, :hh, :ww, :] = yw
        if b is not None:
            y += b
        self.meta = (x.shape, full, w.shape)
        # the input only for dW, the kernel only for dx
        self.saved = (x if self.needs_grad[1] else None, w if self.needs_grad[0] else None)
        return y

    def backward(self, gy):
        xp = self.xp
        x, w = self.saved
        xshape, full, wshape = self.meta
        n, h, wd, c = xshape
        kh, kw, o, _ = wshape
        (bh, oh), (bw, ow) = self.window
        gx = gw = gb = None
        if self.needs_grad[0] or self.needs_grad[1]:
            hh, ww = min(oh, full[0] - bh), min(ow, full[1] - bw)
            if self.needs_grad[0]:
                w2 = w.reshape(kh * kw * o, c)
                gx = xp.empty((n * h * wd, c), dtype=np.result_type(gy.dtype, w.dtype))
            x2 = x.reshape(-1, c) if self.needs_grad[1] else None
            if self.thin:  # the gradient's columns transposed, from a channels-first canvas (_thin_blocks)
                gfull = xp.zeros((o, n, full[0], full[1]), dtype=gy.dtype)
                gfull[:, :, bh:bh + hh, bw:bw + ww] = gy[:, :hh, :ww, :].transpose(3, 0, 1, 2)
                if x2 is not None:
                    gw = xp.zeros((kh * kw * o, c), dtype=np.result_type(gy.dtype, x.dtype))
                for s0, s1, ct in _thin_blocks(xp, gfull, kh, kw, h, wd, self.stride, self.dilation, False):
                    rows = slice(s0 * h * wd, s1 * h * wd)
                    if gx is not None:
                        mm(xp, ct.T, w2, out=gx[rows])
                    if gw is not None:
                        gw += ct @ x2[rows]
            else:
                # im2col of the gradient placed on the full canvas (zeros around it), a block of samples at a time:
                # never the (N*H*W, KH*KW*O) matrix, nor the canvas itself: the gradient's window is the canvas
                # padded by (bh, bw) before and the rest after (cut first where the window runs past the canvas;
                # the compiled im2col writes the padding's zeros itself). The blocks shared over lamina's threads,
                # each block's kernel-gradient product kept and added in block order (as Conv2D's)
                g = gy if (hh, ww) == (oh, ow) else xp.ascontiguousarray(gy[:, :hh, :ww, :])
                pads = ((bh, full[0] - bh - hh), (bw, full[1] - bw - ww))
                k = kh * kw * o
                step = _block(xp, n, h * wd * k * g.dtype.itemsize)   # (_im2col_blocks' blocks)
                parts = None if x2 is None else xp.empty((-(-n // step), k, c), np.result_type(gy.dtype, x.dtype))

                def part(lo, hi):   # samples lo:hi, from a block's first sample
                    for s0, s1, gc in _im2col_blocks(xp, g[lo:hi], pads, kh, kw, h, wd, self.stride, self.dilation):
                        rows = slice((lo + s0) * h * wd, (lo + s1) * h * wd)
                        if gx is not None:
                            mm(xp, gc, w2, out=gx[rows])
                        if parts is not None:
                            mm(xp, gc.T, x2[rows], out=parts[(lo + s0) // step])
                _split_samples(xp, part, n, n * h * wd * k * c * (2 if gx is not None and x2 is not None else 1),
                               align=step)
                gw = None if parts is None else parts.sum(axis=0)
            gx = None if gx is None else gx.reshape(xshape)
            gw = None if gw is None else gw.reshape(wshape)
        if self.needs_grad[2]:
            gb = sum_rows(xp, gy.reshape(-1, o))
        return gx, gw, gb


def _check_rank(x, rank, op, what="input"):
    if x.ndim != rank:
        raise ValueError(f"{op}: the {what} must have rank {rank}, "
                         f"got shape {tuple(x.shape)}.")


def _conv_args(op, x, kernel, rank, strides, padding, dilation_rate, groups, allowed=_PADDINGS):
    if groups != 1:
        raise ValueError(f"{op}: only groups=1 is supported. Received: groups={groups!r}")
    _check_rank(x, rank + 2, op)
    _check_rank(kernel, rank + 2, op, "kernel")
    return (_tuple(strides, rank, "strides", op), _padding_name(padding, op, allowed),
            _tuple(dilation_rate, rank, "dilation_rate", op))


def conv2d(x, kernel, bias=None, strides=1, padding="valid", dilation_rate=1, groups=1, activation=None):
    """2-D convolution (cross-correlation, as in Keras), channels-last.

    Args:
        x: (N, H, W, C). kernel: (KH, KW, C, O). bias: (O,) or None.
        strides, dilation_rate: int or (sh, sw). padding: 'valid' or 'same' (Keras's asymmetric rule).
        activation: None or 'relu' (lamina's own): ReLU applied inside the op, to each block of output
            rows right after its product and bias while it is in cache, instead of one more pass over
            the whole output (the Conv2D/Conv1D layers pass their ReLU here).
    Returns: (N, OH, OW, O); OH = floor((H + pad - (KH-1)*dh - 1) / sh) + 1.
    Forward: y[n,p,q,o] = b[o] + sum_{i,j,c} xpad[n, p*sh + i*dh, q*sw + j*dw, c] * W[i,j,c,o],
    as one GEMM of the im2col matrix with the reshaped kernel.
    Backward: dW = cols^T dy; dx = col2im(dy W^T) (one strided add per kernel offset); db = sum dy.

    >>> import numpy as np
    >>> conv2d(np.ones((1, 4, 4, 1), 'float32'), np.ones((3, 3, 1, 2), 'float32')).shape
    (1, 2, 2, 2)
    """
    x, kernel = as_tensor(x), as_tensor(kernel)
    s, p, d = _conv_args("conv2d", x, kernel, 2, strides, padding, dilation_rate, groups)
    if kernel.shape[2] != x.shape[3]:
        raise ValueError(f"conv2d: the kernel expects {kernel.shape[2]} input channels, but the input "
                         f"has {x.shape[3]} (input shape {x.shape}, kernel shape {kernel.shape}).")
    pads = tuple(_pads(p, x.shape[1 + a], kernel.shape[a], s[a], d[a]) for a in range(2))
    for a in range(2):
        if x.shape[1 + a] + sum(pads[a]) < (kernel.shape[a] - 1) * d[a] + 1:
            raise ValueError(f"conv2d: the input {x.shape} is smaller than the dilated kernel "
                             f"{kernel.shape[:2]} (dilation {d}) along spatial axis {a}.")
    return Conv2D.apply(x, kernel, bias, stride=s, dilation=d, pads=pads,
                        activation=fused_activation(activation, "conv2d"))


def conv1d(x, kernel, bias=None, strides=1, padding="valid", dilation_rate=1, groups=1, activation=None):
    """1-D convolution, channels-last: x (N, L, C), kernel (K, C, O) -> (N, OL, O).

    padding: 'valid', 'same' or 'causal' (left padding (K-1)*d, so y[t] sees x[<= t] only).
    activation: None or 'relu', fused as in conv2d.
    Computed as conv2d on (N, 1, L, C); forward and backward as there.
    """
    x, kernel = as_tensor(x), as_tensor(kernel)
    s, p, d = _conv_args("conv1d", x, kernel, 1, strides, padding, dilation_rate, groups,
                         allowed=("valid", "same", "causal"))
    if kernel.shape[1] != x.shape[2]:
        raise ValueError(f"conv1d: the kernel expects {kernel.shape[1]} input channels, but the input "
                         f"has {x.shape[2]} (input shape {x.shape}, kernel shape {kernel.shape}).")
    pads = ((0, 0), _pads(p, x.shape[1], kernel.shape[0], s[0], d[0]))
    if x.shape[1] + sum(pads[1]) < (kernel.shape[0] - 1) * d[0] + 1:
        raise ValueError(f"conv1d: the input {x.shape} is shorter than the dilated kernel "
                         f"({kernel.shape[0]}, dilation {d[0]}).")
    y = Conv2D.apply(reshape(x, (x.shape[0], 1) + x.shape[1:]), reshape(kernel, (1,) + kernel.shape), bias,
                     stride=(1, s[0]), dilation=(1, d[0]), pads=pads,
                     activation=fused_activation(activation, "conv1d"))
    return reshape(y, (y.shape[0],) + y.shape[2:])


def _transpose_window(size, k, s, d, padding, output_padding):
    """(crop offset, output length) of a transposed conv along one axis (Keras / TF semantics)."""
    keff = (k - 1) * d + 1
    if padding == "valid":
        before = 0
    else:
        pad_len = s + keff - 2 if output_padding is None else keff + keff % 2 - 2 + output_padding
        before = keff - 1 - min(pad_len // 2 + pad_len % 2, keff - 1)
    return before, conv_transpose_output_length(size, k, padding, output_padding, s, d)


def conv2d_transpose(x, kernel, bias=None, strides=1, padding="valid", output_padding=None, dilation_rate=1):
    """2-D transposed convolution (the gradient of conv2d w.r.t. its input, used to upsample).

    Args:
        x: (N, H, W, C). kernel: (KH, KW, O, C) (Keras's Conv2DTranspose layout). bias: (O,) or None.
        strides, dilation_rate: int or pair. padding: 'valid' or 'same'. output_padding: None, int or
        pair, each < stride: extra rows/columns at the end, as in Keras.
    Returns: (N, OH, OW, O), OH as ``conv_transpose_output_length``.
    Forward: every input pixel adds x[n,h,w,:] @ W[i,j,:,:]^T at (h*sh + i*dh, w*sw + j*dw) of a full
    canvas ((H-1)*sh + keff rows), which is then cropped as Keras does; plus the bias.
    Backward: dx = im2col(dy) @ W2, dW = im2col(dy)^T x (a plain convolution of dy), db = sum dy.
    """
    x, kernel = as_tensor(x), as_tensor(kernel)
    op = "conv2d_transpose"
    s, p, d = _conv_args(op, x, kernel, 2, strides, padding, dilation_rate, 1)
    if kernel.shape[3] != x.shape[3]:
        raise ValueError(f"{op}: the kernel (KH, KW, out, in) expects {kernel.shape[3]} input channels, but "
                         f"the input has {x.shape[3]} (input shape {x.shape}, kernel shape {kernel.shape}).")
    op_pad = None if output_padding is None else _output_padding(output_padding, 2, s, op)
    window = tuple(_transpose_window(x.shape[1 + a], kernel.shape[a], s[a], d[a], p,
                                     None if op_pad is None else op_pad[a]) for a in range(2))
    return Conv2DTranspose.apply(x, kernel, bias, stride=s, dilation=d, window=window)


def _output_padding(value, n, strides, op):
    if isinstance(value, (int, np.integer)):
        value = (int(value),) * n
    value = tuple(int(v) for v in value)
    if len(value) != n or any(v < 0 or v >= s for v, s in zip(value, strides)):
        raise ValueError(f"{op}: output_padding must be non-negative and smaller than the stride "
                         f"along each axis. Received: output_padding={value}, strides={strides}")
    return value


def conv1d_transpose(x, kernel, bias=None, strides=1, padding="valid", output_padding=None, dilation_rate=1):
    """1-D transposed convolution: x (N, L, C), kernel (K, O, C) -> (N, OL, O). As conv2d_transpose
    on (N, 1, L, C)."""
    x, kernel = as_tensor(x), as_tensor(kernel)
    op = "conv1d_transpose"
    s, p, d = _conv_args(op, x, kernel, 1, strides, padding, dilation_rate, 1)
    if kernel.shape[2] != x.shape[2]:
        raise ValueError(f"{op}: the kernel (K, out, in) expects {kernel.shape[2]} input channels, but "
                         f"the input has {x.shape[2]} (input shape {x.shape}, kernel shape {kernel.shape}).")
    op_pad = None if output_padding is None else _output_padding(output_padding, 1, s, op)[0]
    window = ((0, 1), _transpose_window(x.shape[1], kernel.shape[0], s[0], d[0], p, op_pad))
    y = Conv2DTranspose.apply(reshape(x, (x.shape[0], 1) + x.shape[1:]), reshape(kernel, (1,) + kernel.shape),
                              bias, stride=(1, s[0]), dilation=(1, d[0]), window=window)
    return reshape(y, (y.shape[0],) + y.shape[2:])


# ----------------------------------------------------------------------------- pooling
class MaxPool2D(Op):
    """y = max over each window (padding is -inf, so never chosen). One np.maximum per window offset.
    Backward: the gradient goes to ONE maximum per window (the first in row-major window order, as
    PyTorch); no per-pixel scatter. Forward notes, per output, which window offset held that maximum
    (one uint8 per output, written where an offset beats the maximum so far, so the first one stays);
    backward then writes each offset's share, dy where the note names it, straight into its strided view
    of dx: one compare and one multiply per offset, over output-sized arrays.

    Where the compiled kernels run (kernels.max_pool2d: NumPy float32/float64 C-contiguous input of at least
    kernels.MIN_ELEMENTS values, numba installed, not LAMINA_KERNELS=numpy) each direction is one pass
    instead, with no padded copy, giving the same y, note and dx bit for bit; elsewhere (CuPy, small or
    strided input such as a channels-first layer's transposed view) the NumPy code below. Either backward
    reads either forward's note. MaxPooling1D, ops.max_pool1d and ops.max_pool in 1-D and 2-D come here;
    3-D pooling is nn_kernels.MaxPoolND."""

    half_via_float32 = True  # float16 in float32 (tensor.Op): NumPy's float16 comparisons have no SIMD loops

    def forward(self, x):
        xp = self.xp
        (ph, pw), (sh, sw) = self.pool, self.stride
        done = _cuda_kernels.kernels_for(xp).max_pool2d(x, self.pool, self.stride, self.pads, self.needs_grad[0])
        if done is not None:   # compiled: one pass, no padded copy (kernels.py; on a GPU one launch)
            y, self.saved = done
            (t, b), (l, r) = self.pads
            self.meta = (x.shape, (x.shape[0], x.shape[1] + t + b, x.shape[2] + l + r, x.shape[3]), y.shape[1],
                         y.shape[2])
            return y
        xp_ = _pad_hw(xp, x, self.pads, -xp.inf)
        oh = (xp_.shape[1] - ph) // sh + 1
        ow = (xp_.shape[2] - pw) // sw + 1
        y = xp.empty((x.shape[0], oh, ow, x.shape[3]), dtype=xp_.dtype)
        kind = np.uint8 if ph * pw <= 256 else np.int32
        which = xp.zeros(y.shape, dtype=kind) if self.needs_grad[0] else None

        def rows(lo, hi):  # samples lo:hi
            xs, ys = xp_[lo:hi], y[lo:hi]
            ys[...] = _window(xs, 0, 0, oh, ow, self.stride)
            # offsets are numbered in row-major window order, and an offset is noted only where it beats
            # the maximum so far: k * (v > y) and an elementwise maximum do that (k exceeds every earlier
            # note) several times faster than a masked assignment
            ws = which[lo:hi] if which is not None else None
            above = xp.empty(ys.shape, dtype=bool) if ws is not None else None
            note = xp.empty(ys.shape, dtype=kind) if ws is not None else None
            for k in range(1, ph * pw):
                v = _window(xs, k // pw, k % pw, oh, ow, self.stride)
                if ws is not None:
                    xp.greater(v, ys, out=above)
                    xp.multiply(above, kind(k), out=note)
                    xp.maximum(ws, note, out=ws)
                xp.maximum(ys, v, out=ys)
        split_pass(xp, rows, x.shape[0], x.size)  # by samples, over lamina's threads when large
        self.meta = (x.shape, xp_.shape, oh, ow)
        self.saved = which
        return y

    def backward(self, gy):
        xp = self.xp
        which = self.saved
        xshape, pshape, oh, ow = self.meta
        (ph, pw), (sh, sw) = self.pool, self.stride
        done = _cuda_kernels.kernels_for(xp).max_pool2d_grad(gy, which, xshape, self.pool, self.stride, self.pads)
        if done is not None:   # compiled, whichever code noted `which` (the same note either way)
            return done
        disjoint = sh >= ph and sw >= pw
        covered = disjoint and pshape[1] == oh * ph and pshape[2] == ow * pw
        g = (xp.empty if covered else xp.zeros)(pshape, dtype=gy.dtype)

        def rows(lo, hi):
            ws, gys, gs = which[lo:hi], gy[lo:hi], g[lo:hi]
            chosen = xp.empty(ws.shape, dtype=bool)
            for k in range(ph * pw):
                xp.equal(ws, k, out=chosen)
                gw = _window(gs, k // pw, k % pw, oh, ow, self.stride)
                if disjoint:
                    xp.multiply(gys, chosen, out=gw)
                else:
                    gw += gys * chosen
        split_pass(xp, rows, gy.shape[0], g.size)
        return _crop_hw(g, self.pads, xshape[1], xshape[2])


class AvgPool2D(Op):
    """y = mean of the real (non-padded) elements of each window, as Keras's 'same' pooling.
    Backward: each element of a window gets dy / count."""

    half_via_float32 = True  # float16 in float32 (tensor.Op): NumPy's float16 comparisons have no SIMD loops

    def forward(self, x):
        xp = self.xp
        xp_ = _pad_hw(xp, x, self.pads, 0)
        (ph, pw), (sh, sw) = self.pool, self.stride
        oh = (xp_.shape[1] - ph) // sh + 1
        ow = (xp_.shape[2] - pw) // sw + 1
        y = None
        for i in range(ph):
            for j in range(pw):
                v = _window(xp_, i, j, oh, ow, self.stride)
                if y is None:
                    y = v.copy()
                else:
                    y += v
        if any(sum(self.pads, ())):
            # count of real elements per window: the same pooling applied to a padded mask of ones
            ones = xp.zeros((1,) + xp_.shape[1:3] + (1,), dtype=x.dtype)
            (t, _), (l, _) = self.pads
            ones[:, t:t + x.shape[1], l:l + x.shape[2], :] = 1
            count = sum(_window(ones, i, j, oh, ow, self.stride) for i in range(ph) for j in range(pw))
        else:
            count = xp.asarray(ph * pw, dtype=x.dtype)
        y /= count
        self.meta = (x.shape, xp_.shape, oh, ow, count)
        return y

    def backward(self, gy):
        xshape, pshape, oh, ow, count = self.meta
        (ph, pw) = self.pool
        g = self.xp.zeros(pshape, dtype=gy.dtype)
        gs = gy / count
        for i in range(ph):
            for j in range(pw):
                _window(g, i, j, oh, ow, self.stride)[...] += gs
        return _crop_hw(g, self.pads, xshape[1], xshape[2])


def _pool_args(op, x, rank, pool_size, strides, padding):
    x = as_tensor(x)
    _check_rank(x, rank + 2, op)
    pool = _tuple(pool_size, rank, "pool_size", op)
    stride = pool if strides is None else _tuple(strides, rank, "strides", op)
    p = _padding_name(padding, op)
    pads = tuple(_pads(p, x.shape[1 + a], pool[a], stride[a], 1) for a in range(rank))
    for a in range(rank):
        if x.shape[1 + a] + sum(pads[a]) < pool[a]:
            raise ValueError(f"{op}: the input {x.shape} is smaller than the pool {pool} along spatial axis {a}.")
    return x, pool, stride, pads


def max_pool2d(x, pool_size=2, strides=None, padding="valid"):
    """2-D max pooling, channels-last: (N, H, W, C) -> (N, OH, OW, C).

    strides default to pool_size. 'valid': OH = floor((H - ph) / sh) + 1; 'same': ceil(H / sh), padded
    with -inf by Keras's rule. Backward: dy to one maximum per window (first in row-major order).
    """
    x, pool, stride, pads = _pool_args("max_pool2d", x, 2, pool_size, strides, padding)
    return MaxPool2D.apply(x, pool=pool, stride=stride, pads=pads)


def avg_pool2d(x, pool_size=2, strides=None, padding="valid"):
    """2-D average pooling, channels-last. With 'same', each window is averaged over its real
    (non-padded) elements only, as Keras. Backward: dy / count to every element of the window."""
    x, pool, stride, pads = _pool_args("avg_pool2d", x, 2, pool_size, strides, padding)
    return AvgPool2D.apply(x, pool=pool, stride=stride, pads=pads)


def _pool1d(cls, op, x, pool_size, strides, padding):
    x, pool, stride, pads = _pool_args(op, x, 1, pool_size, strides, padding)
    y = cls.apply(reshape(x, (x.shape[0], 1) + x.shape[1:]), pool=(1,) + pool, stride=(1,) + stride,
                  pads=((0, 0),) + pads)
    return reshape(y, (y.shape[0],) + y.shape[2:])


def max_pool1d(x, pool_size=2, strides=None, padding="valid"):
    """1-D max pooling: (N, L, C) -> (N, OL, C); rules as max_pool2d."""
    return _pool1d(MaxPool2D, "max_pool1d", x, pool_size, strides, padding)


def avg_pool1d(x, pool_size=2, strides=None, padding="valid"):
    """1-D average pooling: (N, L, C) -> (N, OL, C); rules as avg_pool2d."""
    return _pool1d(AvgPool2D, "avg_pool1d", x, pool_size, strides, padding)


# ----------------------------------------------------------------------------- resampling
class UpsampleNearest2D(Op):
    """Each pixel repeated (sh, sw) times: a broadcast view reshaped. Backward sums each block."""

    def forward(self, x):
        n, h, w, c = x.shape
        sh, sw = self.size
        return self.xp.broadcast_to(x[:, :, None, :, None, :], (n, h, sh, w, sw, c)).reshape(n, h * sh, w * sw, c)

    def backward(self, gy):
        n, oh, ow, c = gy.shape
        sh, sw = self.size
        return gy.reshape(n, oh // sh, sh, ow // sw, sw, c).sum(axis=(2, 4))


def _linear_matrix(n_in, scale):
    """(n_in*scale, n_in) matrix of half-pixel linear interpolation (source coordinate
    (o + 0.5) / scale - 0.5, clamped to the edges): TF / Keras 3 'bilinear' and PyTorch's
    align_corners=False for integer upscaling."""
    n_out = n_in * scale
    src = np.maximum((np.arange(n_out) + 0.5) / scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = src - i0
    a = np.zeros((n_out, n_in))
    np.add.at(a, (np.arange(n_out), i0), 1.0 - frac)  # tiny host-side matrix, built once per call
    np.add.at(a, (np.arange(n_out), i1), frac)
    return a


class UpsampleBilinear2D(Op):
    """y = A_h x A_w^T per channel, with A the linear interpolation matrices: two batched GEMMs.
    Backward: dx = A_h^T dy A_w (the transposed matrices)."""

    def forward(self, x):
        xp = self.xp
        n, h, w, c = x.shape
        ah = xp.asarray(_linear_matrix(h, self.size[0]), dtype=x.dtype)
        aw = xp.asarray(_linear_matrix(w, self.size[1]), dtype=x.dtype)
        t = xp.matmul(ah, x.reshape(n, h, w * c))                        # (N, OH, W*C)
        oh, ow = ah.shape[0], aw.shape[0]
        y = xp.matmul(aw, t.reshape(n * oh, w, c)).reshape(n, oh, ow, c)
        self.saved = (ah, aw)
        self.shape_in = x.shape
        return y

    def backward(self, gy):
        ah, aw = self.saved
        n, h, w, c = self.shape_in
        oh, ow = ah.shape[0], aw.shape[0]
        t = self.xp.matmul(aw.T, gy.reshape(n * oh, ow, c)).reshape(n, oh, w * c)
        return self.xp.matmul(ah.T, t).reshape(self.shape_in)


_INTERPOLATIONS = ("nearest", "bilinear")


def upsampling2d(x, size=2, interpolation="nearest"):
    """Upscale (N, H, W, C) to (N, H*sh, W*sw, C) by integer factors.

    'nearest' repeats pixels (backward: sum over each block); 'bilinear' interpolates with half-pixel
    centres and edge clamping, as Keras 3's UpSampling2D (= torch interpolate, align_corners=False).
    """
    x = as_tensor(x)
    _check_rank(x, 4, "upsampling2d")
    size = _tuple(size, 2, "size", "upsampling2d")
    if interpolation == "nearest":
        return UpsampleNearest2D.apply(x, size=size)
    if interpolation == "bilinear":
        return UpsampleBilinear2D.apply(x, size=size)
    raise ValueError(f"upsampling2d: unknown interpolation {interpolation!r}. Valid values: "
                     f"{', '.join(repr(i) for i in _INTERPOLATIONS)}.")


def upsampling1d(x, size=2):
    """Repeat each step of (N, L, C) ``size`` times: (N, L*size, C). Backward sums the repeats."""
    x = as_tensor(x)
    _check_rank(x, 3, "upsampling1d")
    return repeat(x, _tuple(size, 1, "size", "upsampling1d")[0], axis=1)


# ----------------------------------------------------------------------------- padding and cropping
def _pairs(value, n, what, op):
    """int -> ((v, v),)*n; (a, b) -> per-axis symmetric (n == 2) or (before, after) (n == 1); nested pairs."""
    try:
        if isinstance(value, (int, np.integer)):
            out = ((int(value), int(value)),) * n
        elif n == 1 and len(value) == 2 and all(isinstance(v, (int, np.integer)) for v in value):
            out = ((int(value[0]), int(value[1])),)
        elif len(value) == n and all(isinstance(v, (int, np.integer)) for v in value):
            out = tuple((int(v), int(v)) for v in value)
        elif len(value) == n:
            out = tuple((int(a), int(b)) for a, b in value)
        else:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"{op}: {what} must be an int, a tuple of {n} ints or a tuple of {n} "
                         f"(before, after) pairs. Received: {what}={value!r}") from None
    if any(v < 0 for pair in out for v in pair):
        raise ValueError(f"{op}: {what} must be non-negative. Received: {what}={value!r}")
    return out


def zero_padding2d(x, padding=1):
    """Zeros around the image: (N, H, W, C) -> (N, H+t+b, W+l+r, C). padding: int, (h, w) or
    ((t, b), (l, r)). Backward: the inner slice of the gradient."""
    x = as_tensor(x)
    _check_rank(x, 4, "zero_padding2d")
    (t, b), (l, r) = _pairs(padding, 2, "padding", "zero_padding2d")
    return pad(x, [(0, 0), (t, b), (l, r), (0, 0)])


def zero_padding1d(x, padding=1):
    """Zeros at both ends of the steps: (N, L, C) -> (N, L+a+b, C). padding: int or (a, b)."""
    x = as_tensor(x)
    _check_rank(x, 3, "zero_padding1d")
    ((a, b),) = _pairs(padding, 1, "padding", "zero_padding1d")
    return pad(x, [(0, 0), (a, b), (0, 0)])


def cropping2d(x, cropping=((0, 0), (0, 0))):
    """Cut rows and columns off the borders: (N, H, W, C) -> (N, H-t-b, W-l-r, C).
    Backward: the gradient placed back in a zero array."""
    x = as_tensor(x)
    _check_rank(x, 4, "cropping2d")
    (t, b), (l, r) = _pairs(cropping, 2, "cropping", "cropping2d")
    if t + b >= x.shape[1] or l + r >= x.shape[2]:
        raise ValueError(f"cropping2d: cropping ((top, bottom), (left, right)) = {((t, b), (l, r))} leaves "
                         f"nothing of the input of shape {x.shape}.")
    return getitem(x, (slice(None), slice(t, x.shape[1] - b), slice(l, x.shape[2] - r)))


def cropping1d(x, cropping=(1, 1)):
    """Cut steps off both ends: (N, L, C) -> (N, L-a-b, C)."""
    x = as_tensor(x)
    _check_rank(x, 3, "cropping1d")
    ((a, b),) = _pairs(cropping, 1, "cropping", "cropping1d")
    if a + b >= x.shape[1]:
        raise ValueError(f"cropping1d: cropping {(a, b)} leaves nothing of the input of shape {x.shape}.")
    return getitem(x, (slice(None), slice(a, x.shape[1] - b)))
