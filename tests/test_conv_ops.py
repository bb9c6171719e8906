"""Convolution, pooling and resampling ops: gradient checks, slow NumPy references of Keras's rules,
and parity with PyTorch."""
import math

import numpy as np
import pytest

from lamina import Tensor, grad, ops
from lamina.testing import check_grad

R = np.random.default_rng(3)


def rand(*shape):
    return R.standard_normal(shape)


def distinct(*shape):
    """Values far apart from each other, so that max pooling has no near-ties (finite differences)."""
    n = int(np.prod(shape))
    return (R.permutation(n).reshape(shape) * 0.1 + R.uniform(-0.01, 0.01, shape)).astype(np.float64)


# ----------------------------------------------------------------------------- slow references
def keras_same_pads(n, k, s, d=1):
    """Keras / TF 'same': total padding, floor half before, the rest after."""
    keff = (k - 1) * d + 1
    out = math.ceil(n / s)
    total = max((out - 1) * s + keff - n, 0)
    return total // 2, total - total // 2


def ref_conv2d(x, w, b, strides, padding, dilation):
    """Direct loops over output pixels and kernel taps (slow; tests only)."""
    n, h, wd, c = x.shape
    kh, kw, _, o = w.shape
    (sh, sw), (dh, dw) = strides, dilation
    if padding == "same":
        pt, pb = keras_same_pads(h, kh, sh, dh)
        pl, pr = keras_same_pads(wd, kw, sw, dw)
    else:
        pt = pb = pl = pr = 0
    xp = np.zeros((n, h + pt + pb, wd + pl + pr, c), x.dtype)
    xp[:, pt:pt + h, pl:pl + wd] = x
    oh = (xp.shape[1] - (kh - 1) * dh - 1) // sh + 1
    ow = (xp.shape[2] - (kw - 1) * dw - 1) // sw + 1
    y = np.zeros((n, oh, ow, o))
    for p in range(oh):
        for q in range(ow):
            for i in range(kh):
                for j in range(kw):
                    y[:, p, q] += xp[:, p * sh + i * dh, q * sw + j * dw] @ w[i, j]
    return y + (0 if b is None else b)


def ref_pool2d(x, pool, strides, padding, mode):
    """Keras pooling by direct loops; 'same' averages over the real elements only."""
    n, h, w, c = x.shape
    if padding == "same":
        pt, pb = keras_same_pads(h, pool[0], strides[0])
        pl, pr = keras_same_pads(w, pool[1], strides[1])
    else:
        pt = pb = pl = pr = 0
    oh = (h + pt + pb - pool[0]) // strides[0] + 1
    ow = (w + pl + pr - pool[1]) // strides[1] + 1
    y = np.zeros((n, oh, ow, c))
    for p in range(oh):
        for q in range(ow):
            r0, c0 = p * strides[0] - pt, q * strides[1] - pl
            win = x[:, max(r0, 0):r0 + pool[0], max(c0, 0):c0 + pool[1]]
            y[:, p, q] = win.max(axis=(1, 2)) if mode == "max" else win.mean(axis=(1, 2))
    return y


# ----------------------------------------------------------------------------- conv2d
CONV2D_CASES = [
    # x shape, kernel (kh, kw), strides, padding, dilation
    ((2, 5, 6, 3), (3, 3), (1, 1), "valid", (1, 1)),
    ((2, 5, 6, 3), (3, 3), (1, 1), "same", (1, 1)),
    ((1, 7, 6, 2), (3, 2), (2, 2), "same", (1, 1)),
    ((1, 6, 7, 2), (2, 3), (2, 3), "valid", (1, 1)),
    ((1, 7, 7, 2), (3, 3), (1, 1), "same", (2, 2)),
    ((1, 8, 7, 2), (2, 3), (1, 1), "valid", (3, 2)),
    ((2, 4, 5, 1), (1, 1), (2, 2), "same", (1, 1)),
    ((1, 5, 5, 2), (5, 5), (1, 1), "valid", (1, 1)),
    ((1, 9, 8, 2), (3, 3), (3, 2), "same", (1, 1)),
]


@pytest.mark.parametrize("xshape,k,strides,padding,dilation", CONV2D_CASES)
def test_conv2d_grad(xshape, k, strides, padding, dilation):
    w = rand(k[0], k[1], xshape[-1], 3)
    check_grad(lambda x, w, b: ops.conv2d(x, w, b, strides, padding, dilation), rand(*xshape), w, rand(3))


@pytest.mark.parametrize("xshape,k,strides,padding,dilation", CONV2D_CASES)
def test_conv2d_matches_slow_keras_reference(xshape, k, strides, padding, dilation):
    x, w, b = rand(*xshape), rand(k[0], k[1], xshape[-1], 4), rand(4)
    y = ops.conv2d(x, w, b, strides=strides, padding=padding, dilation_rate=dilation).numpy()
    np.testing.assert_allclose(y, ref_conv2d(x, w, b, strides, padding, dilation), rtol=1e-10, atol=1e-10)


def test_conv2d_same_stride2_is_asymmetric_like_keras():
    # 6 rows, k=3, s=2: Keras pads 0 on top and 1 at the bottom (PyTorch's padding=1 would pad both).
    x = rand(1, 6, 6, 1)
    w = rand(3, 3, 1, 1)
    y = ops.conv2d(x, w, strides=2, padding="same").numpy()
    assert y.shape == (1, 3, 3, 1)
    xp = np.pad(x[0, :, :, 0], ((0, 1), (0, 1)))
    expected = sum(xp[i:i + 5:2, j:j + 5:2] * w[i, j, 0, 0] for i in range(3) for j in range(3))
    np.testing.assert_allclose(y[0, :, :, 0], expected, rtol=1e-10)


def test_conv2d_float32_stays_float32_and_skips_input_grad():
    x = Tensor(rand(2, 5, 5, 3).astype(np.float32))          # no grad wanted (a first layer)
    w = Tensor(rand(3, 3, 3, 4).astype(np.float32), requires_grad=True)
    y = ops.conv2d(x, w, padding="same")
    assert y.dtype == np.float32
    gx, gw = grad(y.sum(), [x, w])
    assert gx is None and gw.dtype == np.float32


def test_conv2d_errors_are_clear():
    x, w = rand(1, 5, 5, 3), rand(3, 3, 3, 2)
    with pytest.raises(ValueError, match="groups=1"):
        ops.conv2d(x, w, groups=2)
    with pytest.raises(ValueError, match="'valid', 'same'"):
        ops.conv2d(x, w, padding="full")
    with pytest.raises(ValueError, match="expects 3 input channels, but the input has 4"):
        ops.conv2d(rand(1, 5, 5, 4), w)
    with pytest.raises(ValueError, match="smaller than the dilated kernel"):
        ops.conv2d(rand(1, 2, 5, 3), w)


# ----------------------------------------------------------------------------- conv1d
@pytest.mark.parametrize("padding", ["valid", "same", "causal"])
@pytest.mark.parametrize("strides,dilation", [(1, 1), (2, 1), (1, 2), (3, 1)])
def test_conv1d_grad_and_reference(padding, strides, dilation):
    x, w, b = rand(2, 9, 3), rand(3, 3, 2), rand(2)
    check_grad(lambda x, w, b: ops.conv1d(x, w, b, strides, padding, dilation), x, w, b)
    y = ops.conv1d(x, w, b, strides=strides, padding=padding, dilation_rate=dilation).numpy()
    if padding == "causal":   # left padding (k-1)*d, then a valid convolution
        xc = np.concatenate([np.zeros((2, 2 * dilation, 3)), x], axis=1)
        ref = ref_conv2d(xc[:, None], w[None], b, (1, strides), "valid", (1, dilation))[:, 0]
    else:
        ref = ref_conv2d(x[:, None], w[None], b, (1, strides), padding, (1, dilation))[:, 0]
    np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-10)


def test_causal_conv1d_does_not_see_the_future():
    x = rand(1, 8, 2)
    w = rand(3, 2, 1)
    y1 = ops.conv1d(x, w, padding="causal").numpy()
    x2 = x.copy()
    x2[0, 5:] += 10.0
    y2 = ops.conv1d(x2, w, padding="causal").numpy()
    np.testing.assert_allclose(y1[0, :5], y2[0, :5])
    assert y1.shape == (1, 8, 1)


# ----------------------------------------------------------------------------- transposed conv
def ref_conv_transpose_len(n, k, s, padding, output_padding, d=1):
    keff = (k - 1) * d + 1
    if output_padding is None:
        return n * s + max(keff - s, 0) if padding == "valid" else n * s
    return (n - 1) * s + keff - 2 * (0 if padding == "valid" else keff // 2) + output_padding


def ref_conv2d_transpose(x, w, b, strides, padding, output_padding, dilation):
    """TF's definition: the gradient of conv2d (Keras 'same' rule) w.r.t. an input of the output's size."""
    n, h, wd, c = x.shape
    kh, kw, o, _ = w.shape
    out = [ref_conv_transpose_len(x.shape[1 + a], w.shape[a], strides[a], padding,
                                  None if output_padding is None else output_padding[a], dilation[a])
           for a in range(2)]
    pads = [keras_same_pads(out[a], w.shape[a], strides[a], dilation[a]) if padding == "same" else (0, 0)
            for a in range(2)]
    canvas = np.zeros((n, out[0] + sum(pads[0]) + kh * dilation[0] + strides[0],
                       out[1] + sum(pads[1]) + kw * dilation[1] + strides[1], o))
    for p in range(h):
        for q in range(wd):
            for i in range(kh):
                for j in range(kw):
                    r, c_ = p * strides[0] + i * dilation[0], q * strides[1] + j * dilation[1]
                    canvas[:, r, c_] += x[:, p, q] @ w[i, j].T
    y = canvas[:, pads[0][0]:pads[0][0] + out[0], pads[1][0]:pads[1][0] + out[1]]
    return y + (0 if b is None else b)


TRANSPOSE_CASES = [
    ((1, 3, 4, 2), (3, 3), (1, 1), "valid", None, (1, 1)),
    ((1, 3, 4, 2), (3, 3), (1, 1), "same", None, (1, 1)),
    ((2, 3, 3, 2), (3, 3), (2, 2), "same", None, (1, 1)),
    ((1, 3, 3, 2), (3, 2), (2, 2), "valid", None, (1, 1)),
    ((1, 3, 3, 2), (2, 2), (2, 2), "same", None, (1, 1)),
    ((1, 2, 3, 2), (4, 4), (2, 2), "same", None, (1, 1)),
    ((1, 3, 3, 2), (1, 1), (3, 2), "valid", None, (1, 1)),
    ((1, 3, 3, 2), (3, 3), (2, 2), "same", (1, 0), (1, 1)),
    ((1, 3, 3, 2), (3, 3), (2, 3), "valid", (1, 2), (1, 1)),
    ((1, 3, 4, 2), (3, 2), (1, 1), "same", None, (2, 2)),
]


@pytest.mark.parametrize("xshape,k,strides,padding,outpad,dilation", TRANSPOSE_CASES)
def test_conv2d_transpose_grad_and_reference(xshape, k, strides, padding, outpad, dilation):
    x, w, b = rand(*xshape), rand(k[0], k[1], 3, xshape[-1]), rand(3)
    fn = lambda x, w, b: ops.conv2d_transpose(x, w, b, strides, padding, outpad, dilation)  # noqa: E731
    check_grad(fn, x, w, b)
    np.testing.assert_allclose(fn(x, w, b).numpy(), ref_conv2d_transpose(x, w, b, strides, padding, outpad, dilation),
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("padding,strides,outpad", [("valid", 1, None), ("same", 2, None), ("valid", 2, 1),
                                                    ("same", 3, 2)])
def test_conv1d_transpose_grad_and_reference(padding, strides, outpad):
    x, w, b = rand(2, 4, 2), rand(3, 3, 2), rand(3)
    fn = lambda x, w, b: ops.conv1d_transpose(x, w, b, strides, padding, outpad)  # noqa: E731
    check_grad(fn, x, w, b)
    ref = ref_conv2d_transpose(x[:, None], w[None], b, (1, strides), padding,
                               None if outpad is None else (0, outpad), (1, 1))[:, 0]
    np.testing.assert_allclose(fn(x, w, b).numpy(), ref, rtol=1e-10, atol=1e-10)


def test_conv2d_transpose_is_the_adjoint_of_conv2d():
    # <conv2d(x, W), y> == <x, conv2d_transpose(y, W)> for padding 'same', stride 2 (Keras's semantics)
    x, w = rand(1, 6, 6, 2), rand(3, 3, 2, 3)
    y = rand(1, 3, 3, 3)
    lhs = np.sum(ops.conv2d(x, w, strides=2, padding="same").numpy() * y)
    rhs = np.sum(x * ops.conv2d_transpose(y, w, strides=2, padding="same").numpy())
    assert lhs == pytest.approx(rhs, rel=1e-10)


def test_conv2d_transpose_rejects_output_padding_not_below_stride():
    with pytest.raises(ValueError, match="output_padding"):
        ops.conv2d_transpose(rand(1, 3, 3, 2), rand(3, 3, 2, 2), strides=2, output_padding=2)


# ----------------------------------------------------------------------------- pooling
POOL_CASES = [
    ((2, 6, 6, 2), (2, 2), None, "valid"),
    ((1, 7, 5, 2), (2, 2), None, "valid"),       # floor: last row / column dropped
    ((1, 7, 5, 2), (3, 3), (2, 2), "valid"),     # overlapping windows
    ((1, 7, 5, 2), (2, 2), None, "same"),
    ((1, 7, 6, 2), (3, 3), (2, 2), "same"),
    ((1, 5, 5, 1), (3, 2), (1, 1), "same"),
    ((1, 6, 7, 1), (2, 2), (3, 3), "valid"),     # gaps between windows
]


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("xshape,pool,strides,padding", POOL_CASES)
def test_pool2d_grad_and_reference(mode, xshape, pool, strides, padding):
    fn = ops.max_pool2d if mode == "max" else ops.avg_pool2d
    x = distinct(*xshape)
    check_grad(lambda x: fn(x, pool, strides, padding), x)
    ref = ref_pool2d(x, pool, strides or pool, padding, mode)
    np.testing.assert_allclose(fn(x, pool, strides, padding).numpy(), ref, rtol=1e-12)


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("pool,strides,padding", [(2, None, "valid"), (3, 2, "same"), (2, 1, "same"), (3, 1, "valid")])
def test_pool1d_grad_and_reference(mode, pool, strides, padding):
    fn = ops.max_pool1d if mode == "max" else ops.avg_pool1d
    x = distinct(2, 7, 3)
    check_grad(lambda x: fn(x, pool, strides, padding), x)
    ref = ref_pool2d(x[:, None], (1, pool), (1, strides or pool), padding, mode)[:, 0]
    np.testing.assert_allclose(fn(x, pool, strides, padding).numpy(), ref, rtol=1e-12)


def test_pool_errors():
    with pytest.raises(ValueError, match="pool_size"):
        ops.max_pool2d(rand(1, 4, 4, 1), pool_size=0)
    with pytest.raises(ValueError, match="'valid', 'same'"):
        ops.avg_pool2d(rand(1, 4, 4, 1), padding="causal")
    with pytest.raises(ValueError, match="rank 4"):
        ops.max_pool2d(rand(4, 4, 1))


# ----------------------------------------------------------------------------- resampling, padding, cropping
@pytest.mark.parametrize("size", [2, (3, 2), (1, 2)])
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_upsampling2d_grad(size, interpolation):
    check_grad(lambda x: ops.upsampling2d(x, size, interpolation), rand(2, 3, 4, 2))


def test_upsampling2d_nearest_repeats_pixels():
    x = rand(1, 2, 3, 2)
    y = ops.upsampling2d(x, (2, 3)).numpy()
    np.testing.assert_array_equal(y, x.repeat(2, axis=1).repeat(3, axis=2))


def test_upsampling2d_unknown_interpolation_lists_valid():
    with pytest.raises(ValueError, match="'nearest', 'bilinear'"):
        ops.upsampling2d(rand(1, 2, 2, 1), 2, "cubic")


def test_upsampling1d_and_padding_cropping_grads():
    check_grad(lambda x: ops.upsampling1d(x, 3), rand(2, 4, 2))
    check_grad(lambda x: ops.zero_padding2d(x, ((1, 2), (0, 3))), rand(1, 3, 2, 2))
    check_grad(lambda x: ops.zero_padding1d(x, (2, 1)), rand(2, 3, 2))
    check_grad(lambda x: ops.cropping2d(x, ((1, 0), (2, 1))), rand(1, 4, 5, 2))
    check_grad(lambda x: ops.cropping1d(x, (1, 2)), rand(2, 6, 2))
    x = rand(1, 3, 2, 1)
    assert ops.zero_padding2d(x, 1).shape == (1, 5, 4, 1)
    assert ops.zero_padding2d(x, (2, 1)).shape == (1, 7, 4, 1)
    np.testing.assert_array_equal(ops.cropping2d(ops.zero_padding2d(x, ((1, 2), (3, 0))), ((1, 2), (3, 0))).numpy(), x)
    with pytest.raises(ValueError, match="leaves nothing"):
        ops.cropping1d(rand(1, 3, 1), (2, 1))
    with pytest.raises(ValueError, match="non-negative"):
        ops.zero_padding2d(x, -1)


# ----------------------------------------------------------------------------- PyTorch parity
torch = pytest.importorskip("torch")
F = torch.nn.functional


def nchw(a):
    return torch.tensor(np.ascontiguousarray(np.asarray(a).transpose(0, 3, 1, 2)), requires_grad=True)


def nhwc(t):
    return t.detach().numpy().transpose(0, 2, 3, 1)


def run_ours(fn, *arrays):
    ts = [Tensor(a.astype(np.float32), requires_grad=True) for a in arrays]
    y = fn(*ts)
    gy = R.standard_normal(y.shape).astype(np.float32)
    gs = grad((y * Tensor(gy)).sum(), ts)
    return y.numpy(), gy, gs


@pytest.mark.parametrize("xshape,k,strides,padding,dilation", CONV2D_CASES[:6])
def test_conv2d_matches_torch(xshape, k, strides, padding, dilation):
    x, w, b = rand(*xshape), rand(k[0], k[1], xshape[-1], 4), rand(4)
    y, gy, (gx, gw, gb) = run_ours(lambda x, w, b: ops.conv2d(x, w, b, strides, padding, dilation), x, w, b)
    pads = [keras_same_pads(xshape[1 + a], k[a], strides[a], dilation[a]) if padding == "same" else (0, 0)
            for a in range(2)]
    xt = nchw(x.astype(np.float32))
    wt = torch.tensor(w.astype(np.float32).transpose(3, 2, 0, 1), requires_grad=True)   # (O, C, KH, KW)
    bt = torch.tensor(b.astype(np.float32), requires_grad=True)
    yt = F.conv2d(F.pad(xt, (pads[1][0], pads[1][1], pads[0][0], pads[0][1])), wt, bt, strides, 0, dilation)
    (yt * nchw(gy)).sum().backward()
    np.testing.assert_allclose(y, nhwc(yt), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gx, nhwc(xt.grad), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gw, wt.grad.numpy().transpose(2, 3, 1, 0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gb, bt.grad.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("xshape,k,strides,padding,outpad,dilation", TRANSPOSE_CASES)
def test_conv2d_transpose_matches_torch(xshape, k, strides, padding, outpad, dilation):
    x, w, b = rand(*xshape), rand(k[0], k[1], 3, xshape[-1]), rand(3)
    y, gy, (gx, gw, gb) = run_ours(lambda x, w, b: ops.conv2d_transpose(x, w, b, strides, padding, outpad, dilation),
                                   x, w, b)
    xt = nchw(x.astype(np.float32))
    wt = torch.tensor(w.astype(np.float32).transpose(3, 2, 0, 1), requires_grad=True)   # (C_in, O, KH, KW)
    bt = torch.tensor(b.astype(np.float32), requires_grad=True)
    full = F.conv_transpose2d(xt, wt, bt, strides, 0, 0, 1, dilation)   # the uncropped canvas
    out = [ref_conv_transpose_len(xshape[1 + a], k[a], strides[a], padding,
                                  None if outpad is None else outpad[a], dilation[a]) for a in range(2)]
    before = [keras_same_pads(out[a], k[a], strides[a], dilation[a])[0] if padding == "same" else 0
              for a in range(2)]
    extra = [max(before[a] + out[a] - full.shape[2 + a], 0) for a in range(2)]
    yt = F.pad(full, (0, extra[1], 0, extra[0]))        # output_padding past the canvas: bias only
    if any(extra):
        yt = yt + bt[:, None, None] * F.pad(torch.zeros_like(full[:, :1]), (0, extra[1], 0, extra[0]), value=1.0)
    yt = yt[:, :, before[0]:before[0] + out[0], before[1]:before[1] + out[1]]
    (yt * nchw(gy)).sum().backward()
    np.testing.assert_allclose(y, nhwc(yt), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gx, nhwc(xt.grad), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gw, wt.grad.numpy().transpose(2, 3, 1, 0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gb, bt.grad.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("xshape,pool,strides,padding", POOL_CASES)
def test_max_pool2d_matches_torch(xshape, pool, strides, padding):
    x = rand(*xshape)
    y, gy, (gx,) = run_ours(lambda x: ops.max_pool2d(x, pool, strides, padding), x)
    strides = strides or pool
    pads = [keras_same_pads(xshape[1 + a], pool[a], strides[a]) if padding == "same" else (0, 0) for a in range(2)]
    xt = nchw(x.astype(np.float32))
    yt = F.max_pool2d(F.pad(xt, (pads[1][0], pads[1][1], pads[0][0], pads[0][1]), value=-np.inf), pool, strides)
    (yt * nchw(gy)).sum().backward()
    np.testing.assert_allclose(y, nhwc(yt), rtol=1e-6)
    np.testing.assert_allclose(gx, nhwc(xt.grad), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("pool,strides", [((2, 2), (2, 2)), ((3, 3), (1, 1)), ((3, 2), (2, 1))])
def test_max_pool2d_ties_send_the_gradient_to_one_element_like_torch(pool, strides):
    x = np.round(R.uniform(0, 2, (2, 6, 7, 3))).astype(np.float32)     # many exact ties
    y, gy, (gx,) = run_ours(lambda x: ops.max_pool2d(x, pool, strides), x)
    xt = nchw(x)
    yt = F.max_pool2d(xt, pool, strides)
    (yt * nchw(gy)).sum().backward()
    np.testing.assert_allclose(gx, nhwc(xt.grad), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("xshape,pool,strides", [((2, 6, 6, 2), (2, 2), (2, 2)), ((1, 7, 5, 3), (3, 2), (2, 1))])
def test_avg_pool2d_valid_matches_torch(xshape, pool, strides):
    x = rand(*xshape)
    y, gy, (gx,) = run_ours(lambda x: ops.avg_pool2d(x, pool, strides), x)
    xt = nchw(x.astype(np.float32))
    yt = F.avg_pool2d(xt, pool, strides)
    (yt * nchw(gy)).sum().backward()
    np.testing.assert_allclose(y, nhwc(yt), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gx, nhwc(xt.grad), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("size", [2, (3, 2), (4, 4)])
def test_bilinear_upsampling_matches_torch_half_pixel(size):
    x = rand(2, 3, 5, 2)
    y, gy, (gx,) = run_ours(lambda x: ops.upsampling2d(x, size, "bilinear"), x)
    size = (size, size) if isinstance(size, int) else size
    xt = nchw(x.astype(np.float32))
    yt = F.interpolate(xt, scale_factor=size, mode="bilinear", align_corners=False)
    (yt * nchw(gy)).sum().backward()
    np.testing.assert_allclose(y, nhwc(yt), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx, nhwc(xt.grad), rtol=1e-5, atol=1e-5)


def test_bilinear_upsampling_matches_half_pixel_formula():
    # TF / Keras 3: source coordinate (o + 0.5) / s - 0.5, clamped into [0, n - 1], linear weights
    x = rand(1, 4, 1, 1)
    y = ops.upsampling2d(x, (2, 1), "bilinear").numpy()[0, :, 0, 0]
    v = x[0, :, 0, 0]
    expected = []
    for o in range(8):
        src = min(max((o + 0.5) / 2 - 0.5, 0.0), 3.0)
        i0 = int(np.floor(src))
        i1 = min(i0 + 1, 3)
        expected.append(v[i0] * (1 - (src - i0)) + v[i1] * (src - i0))
    np.testing.assert_allclose(y, expected, rtol=1e-12)


def _layer_outputs_and_grads(layer, x, gy):
    """[y, dx, the weights' gradients...] of one training call of ``layer`` on x against gy, as arrays."""
    xt = Tensor(x, requires_grad=True)
    y = layer(xt, training=True)
    return [np.asarray(y)] + [np.asarray(g) for g in grad(y, [xt] + list(layer.trainable_weights),
                                                          grad_output=Tensor(gy))]


def _layer_case(make, shape, kw):
    """A function giving _layer_outputs_and_grads of a fresh make(**kw) on a fixed input and upstream gradient."""
    layer = make(**kw)
    x = R.standard_normal(shape).astype(np.float32)
    gy = R.standard_normal(layer(x).shape).astype(np.float32)
    return lambda: _layer_outputs_and_grads(layer, x, gy)


def _spy(monkeypatch, cls, name):
    """cls's method ``name`` wrapped to note each call; the list of notes."""
    ran, real = [], getattr(cls, name)
    monkeypatch.setattr(cls, name, lambda self, *a: (ran.append(1), real(self, *a))[1])
    return ran


def _close_to(got, want):
    for u, v in zip(got, want):
        np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-5 * np.abs(v).max())


@pytest.mark.parametrize("shape,kw", [
    ((2, 7, 9, 8, 3), dict(filters=4, kernel_size=3, padding="same")),
    ((2, 9, 8, 10, 5), dict(filters=6, kernel_size=(3, 2, 3), strides=(2, 1, 2), padding="same")),
    ((1, 11, 9, 9, 4), dict(filters=3, kernel_size=2, dilation_rate=(2, 1, 2))),
    ((2, 6, 20, 20, 8), dict(filters=8, kernel_size=3, padding="same", activation="relu")),   # (2-D planes inside)
    ((1, 3, 4, 4, 2), dict(filters=2, kernel_size=(4, 1, 1), padding="same"))])
def test_conv3d_through_2d_convolutions_equals_the_general_way(shape, kw, monkeypatch):
    """Conv3D (one group) runs as one 2-D convolution over its depth slices stacked along the channels (strides,
    dilation, 'same' padding in depth included): the output and every gradient of the general way (one product over
    the whole 3-D im2col), which the same layer takes when the depth way is switched off; and the depth way ran."""
    from lamina import layers
    from lamina.ops import nn_kernels
    run = _layer_case(layers.Conv3D, shape, kw)
    ran = _spy(monkeypatch, nn_kernels.GroupConvND, "_depth_forward")
    got = run()
    monkeypatch.setattr(nn_kernels.GroupConvND, "_depth_forward", lambda self, *a: None)
    want = run()
    assert ran
    _close_to(got, want)


@pytest.mark.parametrize("shape,kw", [
    ((2, 7, 9, 8, 8), dict(filters=8, kernel_size=3, padding="same", groups=4)),
    ((2, 9, 8, 10, 6), dict(filters=4, kernel_size=(3, 2, 3), strides=(2, 1, 2), padding="same", groups=2)),
    ((1, 11, 9, 9, 4), dict(filters=6, kernel_size=2, dilation_rate=(2, 1, 2), groups=2, use_bias=False))])
def test_grouped_conv3d_per_group_equals_the_general_way(shape, kw, monkeypatch):
    """Conv3D with a few groups runs each group as a one-group 3-D convolution of its own (through 2-D convolutions
    over the depth slices): the output and every gradient of the general batched way, which the same layer takes
    with the per-group way off (_GROUPS_3D = 1); and the per-group way ran, once per group."""
    from lamina import layers
    from lamina.ops import nn_kernels
    run = _layer_case(layers.Conv3D, shape, kw)
    ran = _spy(monkeypatch, nn_kernels.GroupConvND, "_depth_forward")
    got = run()
    assert len(ran) == kw["groups"]
    monkeypatch.setattr(nn_kernels, "_GROUPS_3D", 1)
    ran.clear()
    want = run()
    assert ran == []
    _close_to(got, want)


@pytest.mark.parametrize("shape,kw", [
    ((2, 4, 5, 6, 6), dict(filters=5, kernel_size=3, strides=2, padding="same")),
    ((1, 3, 4, 4, 4), dict(filters=3, kernel_size=(2, 3, 2), strides=(2, 1, 2))),
    ((2, 5, 4, 3, 3), dict(filters=4, kernel_size=3, strides=(3, 2, 1), padding="same", output_padding=(1, 1, 0))),
    ((1, 4, 3, 5, 2), dict(filters=2, kernel_size=(3, 2, 2), dilation_rate=(2, 1, 1), padding="same")),
    ((2, 3, 6, 6, 8), dict(filters=2, kernel_size=(1, 3, 3), strides=(1, 2, 2), padding="same", use_bias=False))])
def test_conv3d_transpose_through_2d_ones_equals_the_general_way(shape, kw, monkeypatch):
    """Conv3DTranspose as one 2-D transposed convolution per depth offset, each added at its output depths within
    Keras's window (strides, dilation, output_padding, 'same' and 'valid'): the output and every gradient of the
    general way (one 3-D col2im), which the same layer takes with the depth way off."""
    from lamina import layers
    from lamina.ops import nn_kernels
    run = _layer_case(layers.Conv3DTranspose, shape, kw)
    ran = _spy(monkeypatch, nn_kernels.ConvTransposeND, "_depth_forward")
    got = run()
    monkeypatch.setattr(nn_kernels.ConvTransposeND, "by_depth", False)
    want = run()
    assert len(ran) == 1
    _close_to(got, want)


def test_conv3d_through_2d_convolutions_numerical_gradients():
    from lamina import layers
    check_grad(layers.Conv3D(2, (3, 2, 2), strides=(2, 1, 1), padding="same", dtype="float64"),
               R.standard_normal((2, 5, 4, 4, 3)))
