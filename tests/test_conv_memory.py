"""Issue 22 finding 7: convolution memory. Conv2D (and Conv1D, which runs on it) kept the whole im2col
matrix for backward (9x the input for a 3x3 kernel). Now it keeps the smaller of (input, im2col) and
rebuilds the columns block by block in backward; nothing for the kernel gradient when the kernel needs
none, nothing for the input gradient when the input needs none. Values and gradients against torch."""
import tracemalloc

import numpy as np
import pytest

from lamina import Tensor, grad, ops
from lamina.ops import convolution as conv_mod
from lamina.testing import check_grad

torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.fixture(params=["one block", "block per sample"])
def blocks(request, monkeypatch):
    """Run each test with the default block size and with one sample per block (several blocks)."""
    if request.param == "block per sample":
        monkeypatch.setattr(conv_mod, "_BLOCK_BYTES_CPU", 1)
    return request.param


CASES = [  # (input shape, kernel shape, strides, padding, dilation)
    ((3, 7, 6, 4), (3, 3, 4, 5), 1, "valid", 1),
    ((3, 7, 6, 4), (3, 3, 4, 5), 2, "same", 1),
    ((2, 9, 8, 3), (3, 2, 3, 4), 1, "same", 2),
    ((3, 5, 5, 4), (1, 1, 4, 6), 1, "valid", 1),   # 1x1: the columns are the input, they are kept
    ((3, 6, 6, 2), (2, 2, 2, 3), 2, "valid", 1),   # stride = kernel: columns as large as the input
    # >= 16 input channels at stride 1: the input gradient is computed as a convolution of dy (_dx_as_conv)
    ((2, 7, 6, 16), (3, 3, 16, 5), 1, "same", 1),
    ((2, 6, 7, 16), (2, 4, 16, 3), 1, "same", 1),   # even kernel: 'same' pads more after than before
    ((2, 9, 8, 16), (3, 2, 16, 4), 1, "same", 2),
    ((2, 5, 5, 16), (1, 1, 16, 4), 1, "valid", 1),
    # ... with dy of >= _THIN_CHANNELS channels (above, dy is thin: its columns are built transposed)
    ((2, 7, 6, 16), (3, 3, 16, 9), 1, "same", 1),
    ((2, 5, 5, 16), (1, 1, 16, 8), 1, "valid", 1),
]


def _torch_conv(x, k, b, s, padding, d):
    """Keras's padding rule applied explicitly, then torch's conv2d (NCHW)."""
    pads = [conv_mod._pads(padding, x.shape[1 + a], k.shape[a], s, d) for a in range(2)]
    xt = F.pad(x.permute(0, 3, 1, 2), (pads[1][0], pads[1][1], pads[0][0], pads[0][1]))
    return F.conv2d(xt, k.permute(3, 2, 0, 1), b, stride=s, dilation=d).permute(0, 2, 3, 1)


@pytest.mark.parametrize("xs,ks,s,padding,d", CASES)
def test_conv2d_matches_torch_values_and_gradients(blocks, xs, ks, s, padding, d):
    rng = np.random.default_rng(0)
    x, k, b = rng.standard_normal(xs), rng.standard_normal(ks), rng.standard_normal(ks[-1])
    ts = [Tensor(a, requires_grad=True) for a in (x, k, b)]
    y = ops.conv2d(*ts, strides=s, padding=padding, dilation_rate=d)
    gy = rng.standard_normal(y.shape)
    gs = grad((y * Tensor(gy)).sum(), ts)
    tt = [torch.tensor(a, requires_grad=True) for a in (x, k, b)]
    ty = _torch_conv(*tt, s, padding, d)
    (ty * torch.tensor(gy)).sum().backward()
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-10, atol=1e-10)
    for g, t in zip(gs, tt):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("xs,ks,s,padding,d", CASES[:3])
def test_conv2d_gradient_check_with_blocks(blocks, xs, ks, s, padding, d):
    rng = np.random.default_rng(1)
    check_grad(lambda x, k: ops.conv2d(x, k, strides=s, padding=padding, dilation_rate=d),
               rng.standard_normal(xs), rng.standard_normal(ks))


def test_conv1d_and_only_kernel_or_only_input_gradients(blocks):
    rng = np.random.default_rng(2)
    x, k = rng.standard_normal((3, 11, 4)), rng.standard_normal((3, 4, 5))
    check_grad(lambda x, k: ops.conv1d(x, k, padding="causal", dilation_rate=2), x, k)
    # kernel only (a first layer: the input needs no gradient) and input only (a frozen kernel)
    kt = Tensor(k[None], requires_grad=True)
    (gk,) = grad((ops.conv2d(Tensor(x[:, None]), kt) ** 2).sum(), [kt])
    xt = Tensor(x[:, None], requires_grad=True)
    (gx,) = grad((ops.conv2d(xt, Tensor(k[None])) ** 2).sum(), [xt])
    tx, tk = torch.tensor(x[:, None], requires_grad=True), torch.tensor(k[None], requires_grad=True)
    (_torch_conv(tx, tk, None, 1, "valid", 1) ** 2).sum().backward()
    np.testing.assert_allclose(gk, tk.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-10)


def _saved_bytes(t):
    return sum(a.nbytes for a in t._op.saved if a is not None)


def test_conv2d_saves_no_im2col_matrix_for_3x3(monkeypatch):
    monkeypatch.setattr(conv_mod, "_KEEP_COLS_BYTES", 0)  # as for any matrix over the budget
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 16, 16, 8)).astype(np.float32)
    k = rng.standard_normal((3, 3, 8, 8)).astype(np.float32)
    cols_bytes = 4 * 16 * 16 * 9 * 8 * 4
    both = ops.conv2d(Tensor(x, requires_grad=True), Tensor(k, requires_grad=True), padding="same")
    assert _saved_bytes(both) <= x.nbytes + k.nbytes < cols_bytes / 4
    # the kernel needs no gradient: nothing for dW (the input itself is not kept)
    only_x = ops.conv2d(Tensor(x, requires_grad=True), Tensor(k), padding="same")
    assert all(a is not x for a in only_x._op.saved if a is not None)
    assert _saved_bytes(only_x) == k.nbytes
    # the input needs no gradient (a first layer): the kernel is not kept for dx
    only_k = ops.conv2d(Tensor(x), Tensor(k, requires_grad=True), padding="same")
    assert _saved_bytes(only_k) == x.nbytes and all(a is not k for a in only_k._op.saved if a is not None)
    # 1x1: the columns are no larger than the input, so they are kept (no rebuild in backward)
    one = ops.conv2d(Tensor(x), Tensor(k[1:2, 1:2], requires_grad=True))
    assert _saved_bytes(one) == x.nbytes


def test_conv2d_memory_held_for_backward_and_peak(monkeypatch):
    """tracemalloc (NumPy reports its buffers to it): what a forward call leaves allocated for backward,
    and the peak of forward + backward, against the im2col matrix's size, when it is over the budget."""
    monkeypatch.setattr(conv_mod, "_KEEP_COLS_BYTES", 2 ** 23)
    rng = np.random.default_rng(4)
    x = Tensor(rng.standard_normal((16, 32, 32, 16)).astype(np.float32), requires_grad=True)
    k = Tensor(rng.standard_normal((3, 3, 16, 16)).astype(np.float32), requires_grad=True)
    cols_bytes = 16 * 32 * 32 * 9 * 16 * 4  # 9.4 MB; the input is 1 MB, the output 1 MB
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        y = ops.conv2d(x, k, padding="same")
        held = tracemalloc.get_traced_memory()[0] - base - y.data.nbytes
        tracemalloc.reset_peak()
        gx, gk = grad(y.sum(), [x, k])
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert held < cols_bytes / 8, held
    assert peak < cols_bytes * 3 / 4, peak  # (it held the columns before: peak > cols_bytes)
    assert gx.shape == x.shape and gk.shape == k.shape


def test_conv2d_keeps_columns_within_the_budget_with_the_same_gradients(blocks, monkeypatch):
    """Columns up to _KEEP_COLS_BYTES are kept from forward (no rebuild in backward); over it they are
    rebuilt. Both give the same numbers (up to float32 rounding: with several blocks, the rebuilt path sums
    the kernel gradient block by block)."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((4, 9, 8, 3)).astype(np.float32)
    k = rng.standard_normal((3, 3, 3, 5)).astype(np.float32)
    cols_bytes = 4 * 9 * 8 * 27 * 4
    results = []
    for budget in (cols_bytes, cols_bytes - 1):
        monkeypatch.setattr(conv_mod, "_KEEP_COLS_BYTES", budget)
        xt, kt = Tensor(x, requires_grad=True), Tensor(k, requires_grad=True)
        y = ops.conv2d(xt, kt, padding="same")
        assert _saved_bytes(y) == (cols_bytes + k.nbytes if budget == cols_bytes else x.nbytes + k.nbytes)
        results.append([y.numpy()] + list(grad((y * y).sum(), [xt, kt])))
    for kept, rebuilt in zip(*results):
        np.testing.assert_allclose(kept, rebuilt, rtol=1e-5, atol=1e-4)


THIN_CASES = [c for c in CASES if c[0][3] < conv_mod._THIN_CHANNELS]


@pytest.mark.parametrize("budget", [2 ** 24, 0])   # columns kept from forward / rebuilt in backward
@pytest.mark.parametrize("xs,ks,s,padding,d", THIN_CASES)
def test_thin_inputs_take_the_transposed_columns_with_the_same_numbers(blocks, budget, monkeypatch,
                                                                      xs, ks, s, padding, d):
    """Inputs of fewer than _THIN_CHANNELS channels (an RGB first layer) build the columns transposed from a
    channels-first copy, the bias riding in the product as a row of ones: values, the three gradients and
    the fused ReLU equal the channels-last path's, whether the columns are kept or rebuilt, in one block
    or several; only the columns (with their row of ones) or the input are kept."""
    monkeypatch.setattr(conv_mod, "_KEEP_COLS_BYTES", budget)
    rng = np.random.default_rng(8)
    x, k, b = rng.standard_normal(xs), rng.standard_normal(ks), rng.standard_normal(ks[-1]) - 0.5
    results = []
    for thin in (conv_mod._THIN_CHANNELS, 0):
        monkeypatch.setattr(conv_mod, "_THIN_CHANNELS", thin)
        ts = [Tensor(a, requires_grad=True) for a in (x, k, b)]
        y = ops.conv2d(*ts, strides=s, padding=padding, dilation_rate=d, activation="relu")
        assert (y._op.thin is not None) == bool(thin)
        if thin:
            oh, ow = y.shape[1:3]
            rows = ks[0] * ks[1] * ks[2] + 1
            kept = rows * xs[0] * oh * ow * 8 if budget else x.nbytes
            # columns or input; the kernel for dx; the output for the ReLU
            assert _saved_bytes(y) == kept + k.nbytes + y.data.nbytes
        gy = np.random.default_rng(9).standard_normal(y.shape)
        results.append([y.numpy()] + list(grad((y * Tensor(gy)).sum(), ts)))
    assert (results[0][0] == 0).mean() > 0.2
    for a, b_ in zip(*results):
        np.testing.assert_allclose(a, b_, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("xs,ks,s,padding,outpad,d", [
    ((3, 4, 5, 6), (3, 3, 3, 6), 1, "valid", None, 1),
    ((2, 5, 4, 6), (4, 4, 1, 6), 2, "same", None, 1),
    ((2, 3, 4, 5), (3, 2, 2, 5), (2, 3), "valid", (1, 2), 1),
    ((2, 4, 4, 5), (3, 3, 3, 5), 1, "same", None, 2),
])
def test_thin_transposed_conv_outputs_take_the_transposed_layout_with_the_same_numbers(blocks, monkeypatch, xs, ks,
                                                                                      s, padding, outpad, d):
    """conv2d_transpose with fewer than _THIN_CHANNELS output channels (a generator's RGB layer) computes its
    forward col2im and its backward's columns channels-first; values and the three gradients equal the
    channels-last path's, in one block or several."""
    rng = np.random.default_rng(10)
    x, k, b = rng.standard_normal(xs), rng.standard_normal(ks), rng.standard_normal(ks[2])
    results = []
    for thin in (conv_mod._THIN_CHANNELS, 0):
        monkeypatch.setattr(conv_mod, "_THIN_CHANNELS", thin)
        ts = [Tensor(a, requires_grad=True) for a in (x, k, b)]
        y = ops.conv2d_transpose(*ts, strides=s, padding=padding, output_padding=outpad, dilation_rate=d)
        assert y._op.thin == bool(thin)
        gy = np.random.default_rng(11).standard_normal(y.shape)
        results.append([y.numpy()] + list(grad((y * Tensor(gy)).sum(), ts)))
    for a, b_ in zip(*results):
        np.testing.assert_allclose(a, b_, rtol=1e-12, atol=1e-12)


def test_thin_one_by_one_convolutions_of_one_channel():
    """The thin layout's products with an inner dimension of 1 (a 1x1 kernel on one channel, no bias; a 1x1
    transposed convolution to one channel): values against the outer product they are, gradients checked."""
    rng = np.random.default_rng(12)
    x, k = rng.standard_normal((2, 4, 3, 1)), rng.standard_normal((1, 1, 1, 5))
    np.testing.assert_allclose(ops.conv2d(Tensor(x), Tensor(k)).numpy(), x * k[0, 0, 0], rtol=1e-12)
    check_grad(lambda x, k: ops.conv2d(x, k), x, k)
    xt, kt = rng.standard_normal((2, 4, 3, 5)), rng.standard_normal((1, 1, 1, 5))
    np.testing.assert_allclose(ops.conv2d_transpose(Tensor(xt), Tensor(kt)).numpy(),
                               (xt @ kt[0, 0, 0])[..., None], rtol=1e-12)
    check_grad(lambda x, k: ops.conv2d_transpose(x, k), xt, kt)


@pytest.mark.parametrize("strides,padding", [(1, "valid"), (2, "same"), (2, "valid")])
def test_conv_transpose_gradients_with_blocks(blocks, strides, padding):
    """The transposed convolutions rebuild the gradient's columns block by block too."""
    rng = np.random.default_rng(5)
    check_grad(lambda x, k, b: ops.conv2d_transpose(x, k, b, strides=strides, padding=padding),
               rng.standard_normal((3, 4, 5, 2)), rng.standard_normal((3, 3, 4, 2)), rng.standard_normal(4))
    check_grad(lambda x, k: ops.conv1d_transpose(x, k, strides=strides, padding=padding),
               rng.standard_normal((3, 6, 2)), rng.standard_normal((3, 3, 2)))
    # only what each gradient needs is kept
    x = rng.standard_normal((3, 4, 5, 2)).astype(np.float32)
    k = rng.standard_normal((3, 3, 4, 2)).astype(np.float32)
    only_k = ops.conv2d_transpose(Tensor(x), Tensor(k, requires_grad=True), strides=strides, padding=padding)
    assert _saved_bytes(only_k) == x.nbytes
    only_x = ops.conv2d_transpose(Tensor(x, requires_grad=True), Tensor(k), strides=strides, padding=padding)
    assert _saved_bytes(only_x) == k.nbytes


@pytest.mark.parametrize("transpose", [False, True])
def test_conv_blocks_on_device_match_cpu(device_xp, monkeypatch, transpose):
    """The block loop on the device array module (one sample per block), against the CPU."""
    from lamina import backend
    monkeypatch.setattr(conv_mod, "_BLOCK_BYTES_DEVICE", 1)
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 6, 5, 4)).astype(np.float32)
    k = rng.standard_normal((3, 3, 4, 5) if not transpose else (3, 3, 5, 4)).astype(np.float32)
    gy_seed = np.random.default_rng(7)
    fn = (lambda a, b: ops.conv2d_transpose(a, b, strides=2, padding="same")) if transpose else \
        (lambda a, b: ops.conv2d(a, b, strides=2, padding="same"))
    results = []
    for xp in (np, device_xp):
        ts = [Tensor(backend.to_device(a, xp), requires_grad=True) for a in (x, k)]
        y = fn(*ts)
        gy = gy_seed.standard_normal(y.shape).astype(np.float32) if not results else results[0][-1]
        y.backward(backend.to_device(gy, xp))
        out = [y.data, ts[0].grad, ts[1].grad]
        assert all(backend.get_array_module(a) is xp for a in out)
        results.append([backend.to_numpy(a) for a in out] + [gy])
    for a, b in zip(results[0][:3], results[1][:3]):
        np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-5)


@pytest.mark.parametrize("budget", [2 ** 24, 0])   # columns kept from forward / rebuilt in backward
def test_fused_relu_equals_relu_after_the_conv(blocks, budget, monkeypatch):
    """conv2d/conv1d(activation='relu') applies ReLU to each block inside the op: the same values and
    gradients as ops.relu on the op's output (a bias that puts many outputs at or below 0 included)."""
    monkeypatch.setattr(conv_mod, "_KEEP_COLS_BYTES", budget)
    rng = np.random.default_rng(7)
    x, k, b = rng.standard_normal((3, 7, 6, 4)), rng.standard_normal((3, 3, 4, 5)), rng.standard_normal(5) - 1
    gy = rng.standard_normal((3, 7, 6, 5))
    results = []
    for fused in (True, False):
        ts = [Tensor(a, requires_grad=True) for a in (x, k, b)]
        y = (ops.conv2d(*ts, padding="same", activation="relu") if fused
             else ops.relu(ops.conv2d(*ts, padding="same")))
        results.append([y.numpy()] + list(grad((y * Tensor(gy)).sum(), ts)))
    assert (results[0][0] == 0).mean() > 0.3
    for a, b_ in zip(*results):
        np.testing.assert_allclose(a, b_, rtol=1e-12, atol=1e-12)
    check_grad(lambda x, k: ops.conv1d(x, k, padding="causal", activation="relu"),
               rng.standard_normal((2, 6, 3)) + 0.5, rng.standard_normal((2, 3, 4)))
    with pytest.raises(ValueError, match="activation must be None or 'relu'"):
        ops.conv2d(Tensor(x), Tensor(k), activation="tanh")


def test_conv_layers_fuse_their_relu_and_match_the_unfused_layer():
    from lamina import layers
    from lamina.ops.activations import relu
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 9, 8, 3)).astype(np.float32)
    fused = layers.Conv2D(4, 3, activation="relu")
    plain = layers.Conv2D(4, 3)
    fused.build(x.shape)
    plain.build(x.shape)
    plain.kernel.assign(fused.kernel.numpy())
    plain.bias.assign(fused.bias.numpy() - 0.5)
    fused.bias.assign(fused.bias.numpy() - 0.5)
    y = fused(Tensor(x))
    assert type(y._op).__name__ == "Conv2D" and y._op.activation == "relu"   # one op, no separate ReLU
    want = relu(plain(Tensor(x)))
    np.testing.assert_array_equal(y.numpy(), want.numpy())
    g_fused = grad(y.sum(), [fused.kernel, fused.bias])
    g_plain = grad(relu(plain(Tensor(x))).sum(), [plain.kernel, plain.bias])
    for a, b in zip(g_fused, g_plain):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # grouped convolutions and other activations keep the separate activation
    assert type(layers.Conv2D(4, 3, activation="tanh")(Tensor(x))._op).__name__ != "Conv2D"


def test_dense_fuses_its_relu_into_the_linear_op():
    """Dense(activation='relu') runs ops.linear(..., activation='relu'): ReLU in place inside the op.
    Values and gradients equal the unfused op followed by ReLU; other activations stay separate."""
    from lamina import layers
    from lamina.ops.activations import relu
    rng = np.random.default_rng(9)
    x, k, b = rng.standard_normal((4, 3, 6)), rng.standard_normal((6, 5)), rng.standard_normal(5) - 0.5
    gy = rng.standard_normal((4, 3, 5))
    results = []
    for fused in (True, False):
        ts = [Tensor(a, requires_grad=True) for a in (x, k, b)]
        y = ops.linear(*ts, activation="relu") if fused else relu(ops.linear(*ts))
        results.append([y.numpy()] + list(grad((y * Tensor(gy)).sum(), ts)))
    assert (results[0][0] == 0).mean() > 0.3
    for a, b_ in zip(*results):
        np.testing.assert_array_equal(a, b_)
    check_grad(lambda x, k: ops.linear(x, k, activation="relu"), x + 0.1, k)
    dense = layers.Dense(5, activation="relu")
    y = dense(Tensor(x.astype(np.float32)))
    assert type(y._op).__name__ == "Linear" and y._op.activation == "relu"
    assert type(layers.Dense(5, activation="tanh")(Tensor(x.astype(np.float32)))._op).__name__ != "Linear"
    with pytest.raises(ValueError, match="activation must be None or 'relu'"):
        ops.linear(Tensor(x), Tensor(k), activation="gelu")


@pytest.mark.parametrize("shape", [(64, 30, 30, 32), (7, 5), (4096,), (3, 1024), (0, 8), ()])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_into_equals_maximum_with_zero(shape, dtype):
    """relu_into (the fused ReLUs' and the ReLU op's kernel) takes contiguous arrays as rows of a cached
    zero row instead of a scalar zero (faster in NumPy): the same values as np.maximum(x, 0), NaN kept and
    -inf to 0, in place or not, contiguous or strided, and the cached zero row is never written."""
    from lamina.ops.math import relu_into
    rng = np.random.default_rng(10)
    x = np.asarray(rng.standard_normal(shape), dtype=dtype)
    if x.size >= 3:
        x.flat[:3] = [np.nan, -np.inf, np.inf]
    want = np.maximum(x, dtype(0))
    out = np.empty_like(x)
    assert relu_into(np, x, out) is out
    np.testing.assert_array_equal(out, want)
    inplace = x.copy()
    relu_into(np, inplace, inplace)
    np.testing.assert_array_equal(inplace, want)
    if x.ndim == 2 and x.size:
        strided = np.empty((x.shape[1], x.shape[0]), dtype=dtype)
        relu_into(np, x.T, strided)
        np.testing.assert_array_equal(strided, want.T)
    from lamina.ops import math as math_mod
    assert all(not z.any() and not z.flags.writeable for z in math_mod._ZERO_ROWS.values())
    np.testing.assert_array_equal(ops.relu(Tensor(x)).numpy(), want)
