"""lamina.ops.kernels, the compiled (numba) kernels of LayerNorm and the fused bias + ReLU: the same values
as the NumPy code they stand in for (forward and every gradient, float32 and float64, split over threads or
not), PyTorch's values, numerical gradients, NaN handled as NumPy handles it, and the NumPy code taken
wherever they should not run (small, CuPy-less strided or integer arrays, LAMINA_KERNELS=numpy, no numba)."""
import os
import platform
import subprocess
import sys

import numpy as np
import pytest

import lamina
from lamina import Tensor, grad, layers, ops
from lamina.ops import kernels as K
from lamina.testing import check_grad

numba = pytest.importorskip("numba")   # in the test extra, so CI runs every test here
R = np.random.default_rng(11)


@pytest.fixture
def compiled(monkeypatch):
    """Kernels on for arrays of any size; the mode restored afterwards."""
    monkeypatch.setattr(K, "MIN_ELEMENTS", 0)
    monkeypatch.setitem(K._state, "mode", "auto")
    monkeypatch.setitem(K._state, "pending", 0)
    return monkeypatch


def _force_split(monkeypatch, width=3):
    """Every pass over more than one block of rows split in ``width`` parts; returns the list of the parts'
    counts, one entry per split."""
    from lamina import threads
    monkeypatch.setattr(threads, "split_width", lambda *a: width)
    splits = []
    real = threads.run_split

    def counting(parts):
        splits.append(len(parts))
        return real(parts)
    monkeypatch.setattr(threads, "run_split", counting)
    return splits


def _count_calls(monkeypatch, kernel, record=lambda args: 1):
    """Replace the compiled kernel ``kernel`` by a wrapper that notes record(args) at each call; the list."""
    calls = []
    real = getattr(K._load(), kernel)

    def counting(*args):
        calls.append(record(args))
        return real(*args)
    monkeypatch.setattr(K._load(), kernel, counting)
    return calls


def _force_own_exp(monkeypatch, own=True):
    """The kernels' own exp and tanh everywhere they have one, as on a machine whose NumPy has no SIMD exp (own),
    or NumPy's exp and tanh everywhere (not own)."""
    monkeypatch.setattr(K, "OWN_EXP", own)
    monkeypatch.setattr(K, "NUMPY_SIMD_EXP", not own)


def _both(monkeypatch, fn):
    """fn() with the kernels, then with NumPy's code."""
    monkeypatch.setitem(K._state, "mode", "auto")
    a = fn()
    monkeypatch.setitem(K._state, "mode", "numpy")
    b = fn()
    monkeypatch.setitem(K._state, "mode", "auto")
    return a, b


def _fn_and_grad(fn, x, gy):
    """[fn(x), the gradient of fn at x against gy] as arrays."""
    xt = Tensor(x, requires_grad=True)
    y = fn(xt)
    return [np.asarray(y.data), np.asarray(grad(y, [xt], grad_output=Tensor(gy))[0].data)]


def _grads(layer, x, gy):
    xt = Tensor(x, requires_grad=True)
    y = layer(xt, training=True)
    gs = grad(y, [xt] + list(layer.trainable_weights), grad_output=Tensor(gy))
    return [np.asarray(y.data)] + [np.asarray(g.data) for g in gs]


def _close(a, b, dtype):
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, **tol)


# ----------------------------------------------------------------------------- LayerNorm
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,axis", [((6, 7, 16), -1), ((5, 4, 3, 8), [-2, -1]), ((700, 33), -1)])
@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False), (False, False)])
def test_layer_norm_kernels_equal_numpy(compiled, dtype, shape, axis, center, scale):
    ln = layers.LayerNormalization(axis=axis, center=center, scale=scale, epsilon=1e-5, dtype=dtype.__name__)
    x = (R.standard_normal(shape) * 3 + 1).astype(dtype)
    ln(x)
    for w in ln.trainable_weights:
        w.assign(R.standard_normal(w.shape).astype(dtype))
    gy = R.standard_normal(shape).astype(dtype)
    calls = _count_calls(compiled, "layer_norm_rows")
    got, want = _both(compiled, lambda: _grads(ln, x, gy))
    assert len(calls) >= 1   # the first run did take the kernels
    assert got[0].dtype == want[0].dtype == dtype and len(got) == 2 + scale + center
    _close(got, want, dtype)


def test_layer_norm_kernels_equal_pytorch(compiled):
    torch = pytest.importorskip("torch")
    x = R.standard_normal((64, 32, 128)).astype(np.float32)
    gy = R.standard_normal(x.shape).astype(np.float32)
    ln = layers.LayerNormalization(epsilon=1e-5)
    ln(x)
    g, b = (R.standard_normal(128).astype(np.float32) for _ in range(2))
    ln.gamma.assign(g)
    ln.beta.assign(b)
    y, dx, dg, db = _grads(ln, x, gy)
    tl = torch.nn.LayerNorm(128, eps=1e-5)
    with torch.no_grad():
        tl.weight.copy_(torch.from_numpy(g))
        tl.bias.copy_(torch.from_numpy(b))
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = tl(xt)
    yt.backward(torch.from_numpy(gy))
    np.testing.assert_allclose(y, yt.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(dx, xt.grad.numpy(), atol=1e-5)
    # sums over 2048 rows in float32: compared relative to their size
    np.testing.assert_allclose(dg, tl.weight.grad.numpy(), atol=2e-5 * np.abs(dg).max())
    np.testing.assert_allclose(db, tl.bias.grad.numpy(), atol=2e-5 * np.abs(db).max())


@pytest.mark.parametrize("case", ["layer_norm", "dense", "conv"])
def test_split_over_threads_gives_the_same_bits(compiled, case):
    """Split over 1, 2 or 3 threads, the kernels give the same outputs and gradients bit for bit (parts start on
    blocks of rows, and the column sums add the same blocks in the same order)."""
    x = R.standard_normal((1100, 40) if case != "conv" else (12, 10, 10, 18)).astype(np.float32)
    layer = {"layer_norm": lambda: layers.LayerNormalization(), "dense": lambda: layers.Dense(40, activation="relu"),
             "conv": lambda: layers.Conv2D(20, 3, padding="same", activation="relu")}[case]()
    layer(x)
    for w in layer.trainable_weights:
        w.assign(R.standard_normal(w.shape).astype(np.float32))
    gy = R.standard_normal(layer(x).shape).astype(np.float32)
    results = []
    for width in (1, 2, 3):
        splits = _force_split(compiled, width)
        results.append(_grads(layer, x, gy))
        assert splits.count(width) >= 2 if width > 1 else splits == []   # forward and backward were split
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_layer_norm_kernel_gradients_are_numerically_right(compiled):
    g, b = R.standard_normal(6) + 1, R.standard_normal(6)
    check_grad(lambda x, g, b: ops.layer_norm(x, g, b, axes=-1, epsilon=1e-3), R.standard_normal((4, 5, 6)) * 2, g, b)
    check_grad(lambda x: ops.layer_norm(x, None, None, axes=(-2, -1), epsilon=1e-3), R.standard_normal((3, 4, 5)))


def test_layer_norm_mode_switched_between_forward_and_backward(compiled):
    """A forward pass through the kernels and a backward pass without them (the mode set in between)
    still gives the right gradients: backward rebuilds x-hat from what the kernels kept."""
    x = R.standard_normal((8, 16)).astype(np.float32)
    gy = R.standard_normal(x.shape).astype(np.float32)
    g = Tensor(R.standard_normal(16).astype(np.float32), requires_grad=True)
    xt = Tensor(x, requires_grad=True)
    y = ops.layer_norm(xt, g, None, axes=-1, epsilon=1e-5)
    compiled.setitem(K._state, "mode", "numpy")
    got = grad(y, [xt, g], grad_output=Tensor(gy))
    xt2 = Tensor(x, requires_grad=True)
    want = grad(ops.layer_norm(xt2, g, None, axes=-1, epsilon=1e-5), [xt2, g], grad_output=Tensor(gy))
    _close([a.data for a in got], [b.data for b in want], np.float32)


def test_layer_norm_nan_rows_stay_nan_and_others_are_untouched(compiled):
    x = R.standard_normal((6, 16)).astype(np.float32)
    x[2, 5] = np.nan
    x[4, 0] = np.inf
    with np.errstate(invalid="ignore"):   # inf - inf in NumPy's code
        got, want = _both(compiled, lambda: np.asarray(ops.layer_norm(x, None, None, axes=-1, epsilon=1e-5).data))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got[2]).all() and np.isnan(got[4]).all()
    np.testing.assert_allclose(got[[0, 1, 3, 5]], want[[0, 1, 3, 5]], rtol=2e-5, atol=2e-5)


# ----------------------------------------------------------------------------- bias + ReLU
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(40, 24), (3, 7, 24), (700, 24)])
def test_dense_relu_kernels_equal_numpy(compiled, dtype, shape):
    dense = layers.Dense(24, activation="relu", dtype=dtype.__name__)
    x = R.standard_normal(shape[:-1] + (10,)).astype(dtype)
    dense(x)
    dense.bias.assign(R.standard_normal(24).astype(dtype))
    gy = R.standard_normal(shape).astype(dtype)
    got, want = _both(compiled, lambda: _grads(dense, x, gy))
    assert (got[0] == 0).any() and (got[0] > 0).any()   # both sides of the ReLU are exercised
    _close(got, want, dtype)
    check_grad(dense, x[:4].astype(np.float64))   # the layer's fused path, its kernel and bias too


def test_conv_relu_kernels_equal_numpy(compiled):
    conv = layers.Conv2D(20, 3, activation="relu", padding="same")
    x = R.standard_normal((4, 9, 9, 18)).astype(np.float32)   # 18 channels: not the thin layout
    conv(x)
    conv.bias.assign(R.standard_normal(20).astype(np.float32))
    gy = R.standard_normal((4, 9, 9, 20)).astype(np.float32)
    calls = _count_calls(compiled, "relu_bias_grad_rows", lambda args: args[3])
    got, want = _both(compiled, lambda: _grads(conv, x, gy))
    assert calls == [True]   # the kernel made the bias gradient too
    _close(got, want, np.float32)


def test_relu_kernels_keep_numpy_nan_rules(compiled):
    """Forward: NaN stays NaN (maximum(v, 0)); backward gy * (y > 0): NaN in y passes nothing, NaN in gy
    passes through where y > 0 and, as NaN * 0, elsewhere too."""
    y = np.array([[1.0, -1.0, np.nan, 2.0, 0.0, -np.inf]], np.float32)
    b = np.zeros(6, np.float32)
    fused = y.copy()
    assert K.bias_relu(fused, b)
    plain = np.maximum(y + b, 0)
    np.testing.assert_array_equal(fused, plain)
    gy = np.array([[np.nan, np.nan, 1.0, 2.0, 3.0, 4.0]], np.float32)
    g, db = K.relu_bias_grad(gy, plain, True)
    np.testing.assert_array_equal(g, gy * (plain > 0))
    assert np.isnan(db[0]) and np.isnan(db[1]) and db[2] == 0 and db[3] == 2


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_kernel_in_place_and_into_another_array_give_numpys_bits(compiled, dtype):
    """kernels.relu into another array and in place (its scratch-row loop: the form a Conv2D's or Dense's fused
    ReLU without a bias takes): NumPy's maximum(x, 0) bit for bit, NaN kept, -0 made +0, infinities as they are."""
    x = R.standard_normal((37, 29)).astype(dtype)
    x[0, :5] = [np.nan, -0.0, 0.0, np.inf, -np.inf]
    want = np.maximum(x, np.zeros(29, dtype))
    out = np.empty_like(x)
    assert K.relu(x, out)
    inplace = x.copy()
    assert K.relu(inplace, inplace)
    _bits_equal([out, inplace], [want, want])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_layer_backward_takes_the_kernel_with_numpys_bits(compiled, dtype):
    """A ReLU layer's (and activation='relu' on a layer without bias) forward and backward are the kernels' one
    pass each, with the bits of NumPy's maximum(x, 0) (NaN stays NaN, -0 becomes +0) and gy * (y > 0) (-0 for a
    negative gradient under the mask, NaN rules as above)."""
    x = R.standard_normal((4, 6, 6, 16)).astype(dtype)
    x[0, 0, 0, :4] = [np.nan, 0.0, -0.0, np.inf]
    gy = R.standard_normal(x.shape).astype(dtype)
    gy[0, 0, 0, 4:6] = np.nan
    calls = _count_calls(compiled, "relu_bias_grad_rows", lambda args: args[0].shape)
    forward = _count_calls(compiled, "relu_rows")
    got, want = _both(compiled, lambda: _grads(layers.ReLU(dtype=dtype.__name__), x, gy))
    assert len(calls) == 1 and calls[0][1] in (4096, 1024, 256, 64, 16)   # one call, on wide rows
    assert forward == [1]
    for u, v in zip(got, want):
        assert u.dtype == v.dtype == dtype
        np.testing.assert_array_equal(u.view(np.uint8), v.view(np.uint8))   # the same bits, -0 and NaN
    dense = layers.Dense(16, activation="relu", use_bias=False, dtype=dtype.__name__)
    calls.clear()
    got, want = _both(compiled, lambda: _grads(dense, x[..., :8], gy))
    assert len(calls) == 1
    _close(got, want, dtype)


def test_column_sums_of_many_rows_stay_accurate(compiled):
    """The bias gradient over 2^18 float32 rows (blocks of rows in float32, the blocks in float64) is within
    a few float32 ulps of the float64 sum; a float32 GEMV with ones (the NumPy path's sum_rows) is off by
    1.5e-4 of it here and gy.sum(axis=0) by 2.5e-3."""
    gy = np.full((1 << 18, 4), 0.1, np.float32)
    y = np.ones_like(gy)
    _, db = K.relu_bias_grad(gy, y, True)
    exact = gy.astype(np.float64).sum(axis=0)
    np.testing.assert_allclose(db, exact, rtol=5e-6)


# ----------------------------------------------------------------------------- BatchNormalization
def _bn_all(x, gamma, beta, gy, gm, gv, axis=-1):
    """y, mean, var and the gradients of sum(y gy) + sum(mean gm) + sum(var gv) for x, gamma and beta (the channels
    along ``axis``)."""
    xt = Tensor(x, requires_grad=True)
    params = [Tensor(p, requires_grad=True) for p in (gamma, beta) if p is not None]
    it = iter(params)
    g, b = (next(it) if gamma is not None else None), (next(it) if beta is not None else None)
    y, mean, var = ops.batch_norm_training(xt, g, b, 1e-3, axis)
    loss = ops.sum(y * gy)
    if gm is not None:
        loss = loss + ops.sum(mean * gm) + ops.sum(var * gv)
    grads = grad(loss, [xt] + params)
    return [np.asarray(a.data) for a in (y, mean, var)] + [np.asarray(a.data) for a in grads]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4, 5, 5, 16), (3, 700, 24), (2000, 8), (2003, 8)])   # (rows past four a sum)
@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False), (False, False)])
@pytest.mark.parametrize("stats", [False, True])
def test_batch_norm_kernels_equal_numpy(compiled, dtype, shape, center, scale, stats):
    """Forward (y and the batch statistics) and every gradient, the statistics outputs' gradients included,
    as NumPy's code gives them; the kernels' calls counted, so a silent fallback fails. float32 against the
    float64 values: the kernels' column sums (float32 blocks of rows, float64 across them) are the closer ones
    (over 2000 rows 5e-5 off at worst, NumPy's float32 GEMV sums 2.7e-4), so the two codes differ by more than
    either differs from the exact sums."""
    c = shape[-1]
    x = (R.standard_normal(shape) * 3 + 5).astype(dtype)   # an offset mean: a one-pass variance would lose it
    gamma = R.standard_normal(c).astype(dtype) if scale else None
    beta = R.standard_normal(c).astype(dtype) if center else None
    gy = R.standard_normal(shape).astype(dtype)
    gm, gv = (R.standard_normal(c).astype(dtype), R.standard_normal(c).astype(dtype)) if stats else (None, None)
    calls = _count_calls(compiled, "batch_norm_rows_grad")
    got, want = _both(compiled, lambda: _bn_all(x, gamma, beta, gy, gm, gv))
    assert calls == [1]
    if dtype == np.float64:
        _close(got, want, dtype)
    else:
        exact = _bn_all(*(None if a is None else a.astype(np.float64) for a in (x, gamma, beta, gy, gm, gv)))
        for u, v, e in zip(got, want, exact):
            np.testing.assert_allclose(u, e, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(v, e, rtol=1e-3, atol=1e-3)


def test_batch_norm_kernels_leave_short_rows_to_numpy(compiled):
    """Fewer channels than K.BN_MIN_CHANNELS (an RGB input's 3): NumPy's code, which tiles short rows wider."""
    x = R.standard_normal((4, 9, 9, K.BN_MIN_CHANNELS - 1)).astype(np.float32)
    calls = _count_calls(compiled, "batch_norm_rows")
    got, want = _both(compiled, lambda: _bn_all(x, None, None, np.ones_like(x), None, None))
    assert calls == []
    for u, v in zip(got, want):
        np.testing.assert_array_equal(u, v)


def test_batch_norm_kernels_split_over_threads_give_the_same_bits(compiled):
    x = R.standard_normal((8, 16, 16, 32)).astype(np.float32)
    gy = R.standard_normal(x.shape).astype(np.float32)
    gamma, beta = R.standard_normal(32).astype(np.float32), R.standard_normal(32).astype(np.float32)
    one = _bn_all(x, gamma, beta, gy, None, None)
    splits = _force_split(compiled)
    split = _bn_all(x, gamma, beta, gy, None, None)
    assert len(splits) == 5   # forward: the two sums and y; backward: the sums and dx
    for u, v in zip(one, split):
        np.testing.assert_array_equal(u, v)


def test_batch_norm_layer_with_kernels_matches_pytorch_and_numerical_gradients(compiled):
    torch = pytest.importorskip("torch")
    x = (R.standard_normal((6, 7, 7, 12)) * 2 - 1).astype(np.float32)
    gy = R.standard_normal(x.shape).astype(np.float32)
    bn = layers.BatchNormalization(epsilon=1e-3, momentum=0.9)
    bn(x)
    bn.gamma.assign(R.standard_normal(12).astype(np.float32))
    bn.beta.assign(R.standard_normal(12).astype(np.float32))
    calls = _count_calls(compiled, "batch_norm_rows")
    got = _grads(bn, x, gy)
    assert calls == [1]
    tb = torch.nn.BatchNorm2d(12, eps=1e-3, momentum=0.1)
    with torch.no_grad():
        tb.weight.copy_(torch.from_numpy(np.asarray(bn.gamma.data)))
        tb.bias.copy_(torch.from_numpy(np.asarray(bn.beta.data)))
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
    yt = tb.train()(xt)
    yt.backward(torch.from_numpy(gy.transpose(0, 3, 1, 2).copy()))
    want = [yt.detach().numpy().transpose(0, 2, 3, 1), xt.grad.numpy().transpose(0, 2, 3, 1),
            tb.weight.grad.numpy(), tb.bias.grad.numpy()]
    for u, v in zip(got, want):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-4)
    # the moving statistics followed the batch's (PyTorch keeps the unbiased variance, Keras the biased one)
    n = x.size // 12
    np.testing.assert_allclose(np.asarray(bn.moving_mean.data), tb.running_mean.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(bn.moving_variance.data) - 0.9,
                               (tb.running_var.numpy() - 0.9) * (n - 1) / n, rtol=1e-4, atol=1e-6)
    g64 = ops.convert_to_tensor(gy[:2, :3].astype(np.float64))
    check_grad(lambda v: ops.batch_norm_training(v, None, None, 1e-3, -1)[0] * g64,
               x[:2, :3].astype(np.float64))   # float64 through the kernels (compiled: any size)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_inference_batch_norm_kernel_gives_numpys_bits(compiled, dtype):
    """BatchNormalization with its moving statistics (inference): x * scale + shift in one compiled pass, NumPy's
    two passes' values to the bit; its gradients as before."""
    bn = layers.BatchNormalization(dtype=dtype.__name__)
    x = (R.standard_normal((4, 6, 6, 16)) * 2 + 1).astype(dtype)
    x.reshape(-1)[:3] = (np.nan, np.inf, -0.0)
    bn(x)
    for v in bn.weights:
        v.assign((np.abs(R.standard_normal(v.shape)) + 0.1).astype(dtype))
    calls = _count_calls(compiled, "scale_shift_rows")
    gy = R.standard_normal(x.shape).astype(dtype)

    def run():
        xt = Tensor(x, requires_grad=True)
        y = bn(xt, training=False)
        gs = grad(y, [xt] + list(bn.trainable_weights), grad_output=Tensor(gy))
        return [np.asarray(y.data)] + [np.asarray(g.data) for g in gs]
    got, want = _both(compiled, run)
    assert calls == [1]
    _bits_equal(got, want)


def test_batch_norm_mode_switched_between_forward_and_backward(compiled):
    """Forward through the kernels (x and the mean kept, not x-hat), backward in NumPy's code: the same
    gradients."""
    x = R.standard_normal((5, 6, 6, 8)).astype(np.float32)
    gy = R.standard_normal(x.shape).astype(np.float32)
    want = _both(compiled, lambda: _bn_all(x, None, None, gy, None, None))[0]
    xt = Tensor(x, requires_grad=True)
    y = ops.batch_norm_training(xt, None, None, 1e-3, -1)[0]
    compiled.setitem(K._state, "mode", "numpy")
    got = grad(ops.sum(y * gy), [xt])[0]
    np.testing.assert_allclose(np.asarray(got.data), want[3], rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(4, 16, 5, 5), (3, 24, 700), (300, 8, 9)])
@pytest.mark.parametrize("center,scale", [(True, True), (False, True), (True, False), (False, False)])
@pytest.mark.parametrize("stats", [False, True])
def test_channels_first_batch_norm_kernels_equal_numpy(compiled, dtype, shape, center, scale, stats):
    """A batch norm over axis 1 (channels first) through its kernels (each channel's runs of positions summed in
    float64): y, the statistics and every gradient within rounding of float64's values, as NumPy's code (its
    float32 GEMV sums the further off); float64 the NumPy code's values to rounding. The kernels' calls counted."""
    c = shape[1]
    x = (R.standard_normal(shape) * 3 + 5).astype(dtype)   # an offset mean: a one-pass variance would lose it
    gamma = R.standard_normal(c).astype(dtype) if scale else None
    beta = R.standard_normal(c).astype(dtype) if center else None
    gy = R.standard_normal(shape).astype(dtype)
    gm, gv = (R.standard_normal(c).astype(dtype), R.standard_normal(c).astype(dtype)) if stats else (None, None)
    calls = {k: _count_calls(compiled, k) for k in ("channel_norm_rows", "channel_norm_grad")}
    got, want = _both(compiled, lambda: _bn_all(x, gamma, beta, gy, gm, gv, axis=1))
    assert calls["channel_norm_rows"] == [1] and calls["channel_norm_grad"] == [1]
    if dtype == np.float64:
        _close(got, want, dtype)
    else:
        exact = _bn_all(*(None if a is None else a.astype(np.float64) for a in (x, gamma, beta, gy, gm, gv)), axis=1)
        for u, v, e in zip(got, want, exact):
            np.testing.assert_allclose(u, e, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(v, e, rtol=1e-3, atol=1e-3)


def test_channels_first_batch_norm_kernels_split_short_runs_and_mode_switch(compiled):
    """The samples split over three threads: the same bits as one thread (five split passes); runs shorter than
    BN_MIN_CHANNELS left to NumPy's code; forward through the kernels and backward in NumPy's code (x kept, not
    x-hat): the same gradients."""
    x = R.standard_normal((9, 16, 12, 12)).astype(np.float32)
    gy = R.standard_normal(x.shape).astype(np.float32)
    gamma, beta = R.standard_normal(16).astype(np.float32), R.standard_normal(16).astype(np.float32)
    one = _bn_all(x, gamma, beta, gy, None, None, axis=1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(K, "MIN_ELEMENTS", 0)
        splits = _force_split(mp)
        split = _bn_all(x, gamma, beta, gy, None, None, axis=1)
    assert len(splits) == 5
    _bits_equal(split, one)
    short = R.standard_normal((4, 6, K.BN_MIN_CHANNELS - 1)).astype(np.float32)
    calls = _count_calls(compiled, "channel_norm_rows")
    got, want = _both(compiled, lambda: _bn_all(short, None, None, np.ones_like(short), None, None, axis=1))
    assert calls == []
    _bits_equal(got, want)
    xt = Tensor(x, requires_grad=True)
    y = ops.batch_norm_training(xt, None, None, 1e-3, 1)[0]
    compiled.setitem(K._state, "mode", "numpy")
    got = grad(ops.sum(y * gy), [xt])[0]
    want = _both(compiled, lambda: _bn_all(x, None, None, gy, None, None, axis=1))[0]
    np.testing.assert_allclose(np.asarray(got.data), want[3], rtol=2e-5, atol=2e-5)


# ----------------------------------------------------------------------------- group normalisation
def _gn_all(x, groups, gamma, beta, gy, axis=-1):
    ts = [Tensor(x, requires_grad=True)] + [None if a is None else Tensor(a, requires_grad=True) for a in (gamma, beta)]
    y = ops.group_norm(ts[0], ts[1], ts[2], groups=groups, epsilon=1e-3, axis=axis)
    gs = grad(ops.sum(y * Tensor(gy)), [t for t in ts if t is not None])
    return [np.asarray(y.data)] + [np.asarray(g.data) for g in gs]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,groups,axis,affine", [((3, 5, 6, 16), 4, -1, True), ((4, 300, 32), 8, -1, False),
                                                      ((2, 16, 7, 3), 2, 1, True), ((5, 24), 3, -1, True)])
def test_group_norm_kernels_equal_numpy(compiled, dtype, shape, groups, axis, affine):
    """GroupNorm through its kernels (each sample's passes while it is in cache; channels first too, and more rows
    than a block of the NumPy code's column sums): NumPy's code's output and gradients to rounding, and float64's
    formula; the kernels ran."""
    x = (R.standard_normal(shape) * 3 + 2).astype(dtype)
    c = shape[axis]
    gamma = (R.standard_normal(c) + 1).astype(dtype) if affine else None
    beta = R.standard_normal(c).astype(dtype) if affine else None
    gy = R.standard_normal(shape).astype(dtype)
    calls = _count_calls(compiled, "group_norm_rows", lambda a: a[-1] - a[-2])
    grads = _count_calls(compiled, "group_norm_rows_grad", lambda a: a[-1] - a[-2])
    got, want = _both(compiled, lambda: _gn_all(x, groups, gamma, beta, gy, axis))
    assert sum(calls) == shape[0] and sum(grads) == shape[0]   # (every sample, on however many threads)
    _close(got, want, dtype)
    if dtype == np.float32:
        exact = _gn_all(*(None if a is None else a.astype(np.float64) for a in (x,)), groups,
                        *(None if a is None else a.astype(np.float64) for a in (gamma, beta, gy)), axis=axis)
        for u, e in zip(got, exact):
            np.testing.assert_allclose(u, e, rtol=1e-4, atol=1e-4)


def test_group_norm_kernels_leave_few_channels_to_numpy_and_split_over_threads_the_same(compiled):
    """Fewer channels than K.BN_MIN_CHANNELS stay with NumPy's code; over three threads (samples split) the
    one-thread values to the bit."""
    x = R.standard_normal((4, 9, 9, K.BN_MIN_CHANNELS - 2)).astype(np.float32)
    calls = _count_calls(compiled, "group_norm_rows")
    _gn_all(x, 2, None, None, np.ones_like(x))
    assert calls == []
    x = R.standard_normal((7, 10, 10, 32)).astype(np.float32)
    gy = R.standard_normal(x.shape).astype(np.float32)
    gamma, beta = R.standard_normal(32).astype(np.float32), R.standard_normal(32).astype(np.float32)
    one = _gn_all(x, 8, gamma, beta, gy)
    splits = _force_split(compiled)
    split = _gn_all(x, 8, gamma, beta, gy)
    assert len(splits) == 2   # forward, backward: each sample's passes in one part
    for u, v in zip(one, split):
        np.testing.assert_array_equal(u, v)


def test_group_norm_mode_switched_between_forward_and_backward(compiled):
    """Forward through the kernels (x and the mean kept, not x-hat), backward in NumPy's code: the same
    gradients."""
    x = R.standard_normal((3, 6, 6, 16)).astype(np.float32)
    gy = R.standard_normal(x.shape).astype(np.float32)
    want = _both(compiled, lambda: _gn_all(x, 4, None, None, gy))[0]
    xt = Tensor(x, requires_grad=True)
    y = ops.group_norm(xt, None, None, groups=4)
    compiled.setitem(K._state, "mode", "numpy")
    got = grad(ops.sum(y * gy), [xt])[0]
    np.testing.assert_allclose(np.asarray(got.data), want[1], rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("offset,outlier", [(1e8, 0.0), (3.0, 1e4)])
def test_group_norm_kernels_keep_the_variance_of_far_off_or_outlying_values(compiled, offset, outlier):
    """The forward kernel's one pass of shifted sums (each channel's first value subtracted, the channels combined
    by Chan's rule): float64 values 1e8 from zero with unit spread (plain sums of x and x^2 cancel to nothing
    there), and a first position 1e4 spreads off the rest, give NumPy's two-pass code's output and gradient."""
    x = R.standard_normal((3, 40, 16)) + offset
    x[:, 0, ::3] += outlier
    gy = R.standard_normal(x.shape)
    calls = _count_calls(compiled, "group_norm_rows", lambda a: a[-1] - a[-2])
    got, want = _both(compiled, lambda: _gn_all(x, 4, None, None, gy))
    assert sum(calls) == 3
    for u, v in zip(got, want):
        np.testing.assert_allclose(u, v, rtol=1e-7, atol=1e-7)


# ----------------------------------------------------------------------------- depthwise convolution
# (input shape, ops.nn.depthwise_conv_bias arguments, multiplier, bias?): 1-D to 3-D, strides, dilation, a depth
# multiplier, 'same' and 'valid'
_DEPTHWISE = [((2, 9, 9, 16), dict(padding="same"), (3, 3), 1, True),
              ((3, 11, 10, 8), dict(strides=2, padding="same"), (3, 3), 1, True),
              ((2, 12, 12, 6), dict(padding="valid", dilation_rate=2), (5, 5), 1, False),
              ((2, 8, 8, 4), dict(padding="same"), (3, 3), 2, True),
              ((2, 14, 14, 24), dict(strides=(2, 1), padding="valid"), (3, 5), 1, True),
              ((3, 17, 12), dict(strides=3, padding="same"), (4,), 1, True),
              ((2, 5, 6, 7, 8), dict(padding="same", dilation_rate=(1, 2, 1)), (3, 2, 3), 1, True)]


def _bits_equal(got, want):
    for u, v in zip(got, want):
        assert u.dtype == v.dtype and u.shape == v.shape
        np.testing.assert_array_equal(u.view(np.uint8), v.view(np.uint8))


def _depthwise_grads(x, w, b, gy, **kw):
    """y, dx, dw (and db) of ops.nn.depthwise_conv_bias."""
    ts = [Tensor(a, requires_grad=True) for a in (x, w) + (() if b is None else (b,))]
    y = ops.nn.depthwise_conv_bias(*ts[:2], ts[2] if b is not None else None, **kw)
    return [np.asarray(y.data)] + [np.asarray(g.data) for g in grad(y, ts, grad_output=Tensor(gy))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,kw,kernel,m,bias", _DEPTHWISE)
def test_depthwise_kernels_equal_numpys_code(compiled, dtype, shape, kw, kernel, m, bias):
    """Output, input, weight and bias gradients of a depthwise convolution with its bias (1-D to 3-D, strides,
    dilation, a depth multiplier, 'same' and 'valid'): the compiled direct passes give NumPy's code's output and
    input gradient to the bit (the same products added in the same order), the weight and bias gradients (sums
    in another order) to rounding; and each of the three kernels ran."""
    x = R.standard_normal(shape).astype(dtype)
    x.reshape(-1)[:3] = (np.nan, np.inf, -0.0)
    c = shape[-1]
    w = R.standard_normal(kernel + (c, m)).astype(dtype)
    b = R.standard_normal(c * m).astype(dtype) if bias else None
    gy = R.standard_normal(ops.depthwise_conv(x, w, **kw).shape).astype(dtype)
    names = ("depthwise_direct", "depthwise_direct_grad_input", "depthwise_direct_grad_weight")
    calls = {n: _count_calls(compiled, n) for n in names}
    got, want = _both(compiled, lambda: _depthwise_grads(x, w, b, gy, **kw))
    assert all(calls[n] for n in names)
    assert len(got) == 3 + bias
    _bits_equal(got[:2], want[:2])
    _close(got[2:], want[2:], dtype)


@pytest.mark.parametrize("mode", ["auto", "numpy"])
@pytest.mark.parametrize("padding,strides", [("valid", 1), ("same", 1), ("same", 2)])
def test_depthwise_weight_gradient_stays_finite_where_no_window_reads_an_infinity(compiled, mode, padding, strides):
    """An inf in the input reaches only the weights whose windows read it, as in PyTorch. (The flat passes also
    paired grid positions outside the output, whose gradient is 0, with input values that offset never reads:
    0 * inf made NaN of finite weight gradients; NumPy's code now redoes such a gradient window by window.)"""
    torch = pytest.importorskip("torch")
    compiled.setitem(K._state, "mode", mode)
    x = R.standard_normal((2, 7, 7, 3)).astype(np.float32)
    x[0, 2, 6, 0] = np.inf          # the last column: offsets of the first kernel column (valid) never read it
    x[1, 0, 3, 1] = -np.inf
    w = R.standard_normal((3, 3, 3, 1)).astype(np.float32)
    gy = np.ones(ops.depthwise_conv(x, w, strides=strides, padding=padding).shape, np.float32)
    _, _, dw = _depthwise_grads(x, w, None, gy, strides=strides, padding=padding)
    tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    tw = torch.from_numpy(np.ascontiguousarray(w.transpose(2, 3, 0, 1))).requires_grad_(True)
    pad = 1 if padding == "same" else 0
    if padding == "same" and strides == 2:   # TensorFlow's 'same' at stride 2 on 7: one row and column each side
        pad = 1
    ty = torch.nn.functional.conv2d(tx, tw, stride=strides, padding=pad, groups=3)
    ty.backward(torch.from_numpy(np.ascontiguousarray(gy.transpose(0, 3, 1, 2))))
    want = tw.grad.numpy().transpose(2, 3, 0, 1)
    assert np.isfinite(want).any() and not np.isfinite(want).all()
    np.testing.assert_array_equal(np.isfinite(dw), np.isfinite(want))
    np.testing.assert_allclose(dw, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape,strides", [((8, 20, 20, 32), 1), ((1, 9, 9, 4), 1), ((1, 7, 9, 4), 2)])
def test_depthwise_kernels_split_over_threads_give_the_same_bits(compiled, shape, strides):
    """Forward and backward over 3 threads: the one-thread values to the bit, also where the weight gradient has
    fewer chunks than threads (a small image: one chunk, nine input rows) or the rows are fewer."""
    layer = layers.DepthwiseConv2D(3, strides=strides, padding="same")
    x = R.standard_normal(shape).astype(np.float32)
    gy = R.standard_normal(layer(x).shape).astype(np.float32)
    one = _grads(layer, x, gy)
    splits = _force_split(compiled)
    from lamina.ops import nn_kernels
    compiled.setattr(nn_kernels, "_SPLIT_DEPTHWISE", 1)
    compiled.setattr(nn_kernels, "_SPLIT_DEPTHWISE_BACKWARD", 1)
    split = _grads(layer, x, gy)
    assert len(splits) == 2   # forward, and backward's shares of both gradients
    _bits_equal(one, split)


def test_depthwise_conv_bias_refuses_a_bias_of_the_wrong_length(compiled):
    """The bias is written along each output row by the compiled kernel: one of another length is an error, named,
    before anything runs."""
    x = R.standard_normal((2, 6, 6, 4)).astype(np.float32)
    w = R.standard_normal((3, 3, 4, 2)).astype(np.float32)
    for bad in (np.ones(4, np.float32), np.ones(16, np.float32), np.ones((8, 1), np.float32)):
        with pytest.raises(ValueError, match="bias must have shape \\(8,\\)"):
            ops.nn.depthwise_conv_bias(x, w, bad, padding="same")
    assert ops.nn.depthwise_conv_bias(x, w, np.ones(8, np.float32), padding="same").shape == (2, 6, 6, 8)


def test_depthwise_kernel_gradients_are_numerically_right(compiled):
    for layer, shape in ((layers.DepthwiseConv2D(3, strides=2, padding="same", dtype="float64"), (2, 7, 7, 3)),
                         (layers.DepthwiseConv1D(4, strides=3, padding="same", dtype="float64"), (2, 11, 3)),
                         (layers.DepthwiseConv2D((2, 3), dilation_rate=2, depth_multiplier=2, dtype="float64"),
                          (2, 6, 7, 2))):
        calls = _count_calls(compiled, "depthwise_direct_grad_weight")
        check_grad(layer, R.standard_normal(shape))
        assert calls


# ----------------------------------------------------------------------------- col2im
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel,strides,dilation,padding", [
    (3, 1, 1, "valid"), (3, 2, 1, "same"), ((2, 3), (1, 3), 1, "valid"), (3, 1, 2, "same"), (5, 2, 1, "same")])
def test_col2im_kernel_equals_numpy(compiled, dtype, kernel, strides, dilation, padding):
    """Conv2D's input gradient (col2im: 10 input channels, neither the thin layout nor the stride-1 'dx as a
    convolution'; 32 filters, enough for the gather at stride 1 too) and Conv2DTranspose's forward through the
    compiled gather equal NumPy's code, every weight gradient too. The gather adds in NumPy's order; the columns
    come from one wider product, which BLAS may round differently in the last bit (so not bit for bit)."""
    calls = _count_calls(compiled, "col2im_gather")
    conv = layers.Conv2D(32, kernel, strides=strides, dilation_rate=dilation, padding=padding, dtype=dtype.__name__)
    x = R.standard_normal((3, 11, 13, 10)).astype(dtype)
    gy = R.standard_normal(conv(x).shape).astype(dtype)
    got, want = _both(compiled, lambda: _grads(conv, x, gy))
    _close(got, want, dtype)
    assert len(calls) == 1
    if dilation == 1:
        up = layers.Conv2DTranspose(32, kernel, strides=strides, padding=padding, dtype=dtype.__name__)
        x = R.standard_normal((3, 6, 7, 10)).astype(dtype)
        gy = R.standard_normal(up(x).shape).astype(dtype)
        got, want = _both(compiled, lambda: _grads(up, x, gy))
        _close(got, want, dtype)
        assert len(calls) == 3   # and the transposed convolution's forward, built and run once compiled
    if dtype == np.float64:
        check_grad(conv, x[:2, :8, :9])   # numerically, through the gather


@pytest.mark.parametrize("strides,filters,gathered", [(1, 12, False), (1, 32, True), (2, 12, True)])
def test_col2im_takes_the_gather_where_it_is_faster(compiled, strides, filters, gathered):
    """The input gradient's col2im at stride 1 with few channels each way (10 x 12: its runs too short for the
    compiled gather) keeps the offsets' own products; with more filters, or at stride 2, it takes the gather.
    The same values either way."""
    calls = _count_calls(compiled, "col2im_gather")
    conv = layers.Conv2D(filters, 3, strides=strides, padding="same")
    x = R.standard_normal((3, 11, 13, 10)).astype(np.float32)
    gy = R.standard_normal(conv(x).shape).astype(np.float32)
    got, want = _both(compiled, lambda: _grads(conv, x, gy))
    _close(got, want, np.float32)
    assert len(calls) == int(gathered)


@pytest.mark.parametrize("kernel,strides,padding,output_padding", [
    (3, 2, "same", None), (3, 2, "same", 1), (3, (2, 3), "valid", (1, 2)), (4, 2, "same", None), (2, 3, "valid", 2)])
def test_conv_transpose_window_and_gradient_columns_equal_numpy(compiled, kernel, strides, padding, output_padding):
    """Conv2DTranspose's output window gathered straight from its columns (no full canvas and no crop) and, in
    backward, the gradient's columns written by the compiled im2col from the gradient itself (the canvas's zeros
    around it as padding, no canvas): the same output and gradients as NumPy's code, windows that run past the
    canvas (output_padding) included."""
    gathers = _count_calls(compiled, "col2im_gather")
    columns = _count_calls(compiled, "im2col_rows")
    up = layers.Conv2DTranspose(12, kernel, strides=strides, padding=padding, output_padding=output_padding)
    x = R.standard_normal((3, 6, 7, 10)).astype(np.float32)
    gy = R.standard_normal(up(x).shape).astype(np.float32)
    got, want = _both(compiled, lambda: _grads(up, x, gy))
    _close(got, want, np.float32)
    assert gathers and (columns or padding == "valid")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel,strides,dilation,padding,channels", [
    (3, 1, 1, "same", 16), (3, 2, 1, "same", 10), ((2, 3), (1, 3), 1, "same", 10), (3, 1, 2, "same", 16),
    (5, 2, 1, "same", 10)])
def test_im2col_kernel_gives_numpys_columns(compiled, dtype, kernel, strides, dilation, padding, channels):
    """Conv2D's columns (forward, the kernel gradient's rebuilt blocks and, at stride 1 with 16 channels, the input
    gradient as a convolution of dy) written by the compiled im2col from the unpadded input: the same columns as
    NumPy's padded and strided copies, so the same outputs and kernel gradients to the bit (the products are the
    same calls on the same operands). ('valid' keeps NumPy's copy, as fast there.) The input gradient is bitwise
    only where it is a convolution of dy (stride 1, 16 channels); elsewhere it is col2im's, whose compiled gather
    takes one (rows, KH*KW*C) product where NumPy's code takes KH*KW of C columns: OpenBLAS's Haswell/Zen kernels
    round those differently (seen on a Zen 2 EPYC; SkylakeX's gave the same bits)."""
    from lamina.ops import convolution
    compiled.setattr(convolution, "_KEEP_COLS_BYTES", 0)   # the kernel gradient rebuilds its columns too
    calls = _count_calls(compiled, "im2col_rows")
    conv = layers.Conv2D(12, kernel, strides=strides, dilation_rate=dilation, padding=padding, dtype=dtype.__name__)
    x = R.standard_normal((3, 11, 13, channels)).astype(dtype)
    x.reshape(-1)[:3] = (np.nan, np.inf, -0.0)
    gy = R.standard_normal(conv(x).shape).astype(dtype)
    got, want = _both(compiled, lambda: _grads(conv, x, gy))
    if strides == 1 and channels >= 16:
        _bits_equal(got, want)
    else:
        _bits_equal(got[:1] + got[2:], want[:1] + want[2:])
        _close(got[1:2], want[1:2], dtype)
    assert len(calls) >= 2   # forward and the kernel gradient's blocks at least


# ----------------------------------------------------------------------------- the planes convolution
_PLANES = [   # (input shape, filters, Conv2D keywords): 256 output positions or more a sample, <= 32 channels each way
    ((3, 16, 17, 8), 8, dict(kernel_size=3, padding="same", activation="relu")),
    ((2, 18, 19, 5), 7, dict(kernel_size=3)),                                    # 'valid', odd channel counts
    ((2, 18, 20, 16), 3, dict(kernel_size=5, padding="same", dilation_rate=2, use_bias=False)),
    ((2, 16, 24, 3), 16, dict(kernel_size=(2, 4), padding="same", activation="relu")),   # asymmetric 'same'
    ((2, 16, 16, 12), 13, dict(kernel_size=1)),
    ((2, 23, 21, 1), 9, dict(kernel_size=(3, 5), padding="same", dilation_rate=(2, 1))),
    ((2, 16, 16, 32), 8, dict(kernel_size=3, padding="same")),                   # 32 planes (their rows' spacing)
]


def _planes_calls(monkeypatch):
    """{kernel: [(first, end sample) of each call]} for the two planes kernels."""
    return {"conv_planes": _count_calls(monkeypatch, "conv_planes", lambda a: a[6:8]),
            "conv_planes_grad_weight": _count_calls(monkeypatch, "conv_planes_grad_weight", lambda a: a[5:7])}


def _samples(calls):
    return sum(hi - lo for lo, hi in calls)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,filters,kw", _PLANES)
def test_planes_convolution_equals_numpys_code(compiled, dtype, shape, filters, kw):
    """A stride-1 convolution with few channels each way through the compiled planes (forward with its bias and
    ReLU, the input gradient as dy's convolution by the turned kernel, the weight gradient's per-sample sums):
    NumPy's code's output and gradients (im2col and BLAS: the same sums in another order), infinities and a NaN in
    the input included, and each kernel ran."""
    calls = _planes_calls(compiled)
    conv = layers.Conv2D(filters, dtype=dtype.__name__, **kw)
    x = R.standard_normal(shape).astype(dtype)
    x.reshape(-1)[:3] = (np.nan, np.inf, -0.0)
    x[-1, 5, 3, 0] = -np.inf
    gy = R.standard_normal(conv(x).shape).astype(dtype)
    got, want = _both(compiled, lambda: _grads(conv, x, gy))
    n = shape[0]   # the forward to size gy, the forward and the input gradient; the weight gradient
    assert _samples(calls["conv_planes"]) == 3 * n and _samples(calls["conv_planes_grad_weight"]) == n
    assert len(got) == 3 + conv.use_bias
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for u, v in zip(got, want):
        np.testing.assert_array_equal(np.isnan(u), np.isnan(v))
        np.testing.assert_array_equal(np.isinf(u), np.isinf(v))
        scale = np.abs(np.where(np.isfinite(v), v, 1)).max()   # (sums of up to 400 terms in another order)
        np.testing.assert_allclose(u, v, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layer,shape", [
    (lambda d: layers.Conv2D(12, 3, padding="same", groups=4, dtype=d), (3, 16, 17, 8)),
    (lambda d: layers.Conv2D(9, (3, 2), dilation_rate=(1, 2), groups=3, activation="relu", dtype=d), (2, 18, 20, 6)),
    (lambda d: layers.Conv1D(16, 5, padding="same", groups=2, dtype=d), (2, 300, 8))])
def test_grouped_planes_convolution_equals_numpys_code(compiled, dtype, layer, shape):
    """A grouped convolution whose groups qualify runs each group through the planes kernels straight from the
    input's channels into the output's (no per-group copies): NumPy's code's output and gradients (its groups
    through im2col), and each group's forward, input and kernel gradient ran there."""
    calls = _planes_calls(compiled)
    conv = layer(dtype.__name__)
    x = R.standard_normal(shape).astype(dtype)
    groups = conv.groups
    gy = R.standard_normal(conv(x).shape).astype(dtype)
    got, want = _both(compiled, lambda: _grads(conv, x, gy))
    n = shape[0]
    assert _samples(calls["conv_planes"]) == 3 * groups * n and _samples(calls["conv_planes_grad_weight"]) == groups * n
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for u, v in zip(got, want):
        np.testing.assert_allclose(u, v, rtol=tol, atol=tol * np.abs(v).max())


def test_planes_weight_gradient_stays_finite_where_no_window_reads_an_infinity(compiled):
    """An infinite input value reaches only the weights whose windows read it, as in PyTorch: in the planes' wide
    rows the positions past each output row pair a zero of dy with input values the offset never reads (0 * inf),
    so such a sample's sums run row by row."""
    torch = pytest.importorskip("torch")
    calls = _planes_calls(compiled)
    x = R.standard_normal((2, 18, 18, 3)).astype(np.float32)
    x[0, 4, 17, 0] = np.inf       # the last column: the first kernel column's offsets ('valid') never read it
    x[1, 0, 7, 2] = -np.inf       # the first row: only the first kernel row's offsets read it
    w = R.standard_normal((3, 3, 3, 4)).astype(np.float32)
    xt, wt = Tensor(x), Tensor(w, requires_grad=True)
    y = ops.conv2d(xt, wt)
    gy = R.standard_normal(y.shape).astype(np.float32)
    (dw,) = grad(y, [wt], grad_output=Tensor(gy))
    assert calls["conv_planes_grad_weight"]
    tx = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    tw = torch.from_numpy(np.ascontiguousarray(w.transpose(3, 2, 0, 1))).requires_grad_(True)
    torch.nn.functional.conv2d(tx, tw).backward(torch.from_numpy(np.ascontiguousarray(gy.transpose(0, 3, 1, 2))))
    want = tw.grad.numpy().transpose(2, 3, 1, 0)
    assert np.isfinite(want).any() and not np.isfinite(want).all()
    np.testing.assert_array_equal(np.isfinite(dw), np.isfinite(want))
    np.testing.assert_allclose(np.where(np.isfinite(want), dw, 0), np.where(np.isfinite(want), want, 0), rtol=1e-4,
                               atol=1e-4)


def test_planes_split_over_threads_give_the_same_bits(compiled):
    """Forward, input and weight gradients over 3 threads (shares of the samples): the one-thread values to the bit
    (the weight gradient's per-sample sums added in sample order either way)."""
    from lamina.ops import convolution
    conv = layers.Conv2D(8, 3, padding="same", activation="relu")
    x = R.standard_normal((7, 16, 16, 8)).astype(np.float32)
    gy = R.standard_normal((7, 16, 16, 8)).astype(np.float32)
    conv(x)
    one = _grads(conv, x, gy)
    _force_split(compiled)
    compiled.setattr(convolution, "_SPLIT_PLANES", 1)
    calls = _planes_calls(compiled)
    split = _grads(conv, x, gy)
    assert len(calls["conv_planes"]) == 6 and len(calls["conv_planes_grad_weight"]) == 3   # (forward and dx: 3 each)
    assert _samples(calls["conv_planes"]) == 14 and _samples(calls["conv_planes_grad_weight"]) == 7
    _bits_equal(one, split)


@pytest.mark.parametrize("shape,filters,kw,planes", [
    ((2, 16, 16, 8), 8, dict(kernel_size=3, padding="same"), True),
    ((2, 15, 16, 8), 8, dict(kernel_size=3, padding="same"), False),           # 240 positions: im2col's products
    ((2, 16, 16, 8), 8, dict(kernel_size=3, strides=2, padding="same"), False),
    ((2, 16, 16, 16), 32, dict(kernel_size=3, padding="same"), True),          # C * O = 512
    ((2, 16, 16, 32), 32, dict(kernel_size=3, padding="same"), False),         # 32 x 32 channels: BLAS's
    ((2, 16, 16, 4), 64, dict(kernel_size=3, padding="same"), False),
    ((2, 16, 16, 3), 32, dict(kernel_size=3, padding="same"), True)])          # (an RGB input's first layer)
def test_planes_run_where_they_are_faster(compiled, shape, filters, kw, planes):
    """The planes at stride 1 with at most 32 channels each way, C * O <= 512 and 256 output positions or more a
    sample; other convolutions keep im2col and BLAS."""
    calls = _planes_calls(compiled)
    conv = layers.Conv2D(filters, **kw)
    x = R.standard_normal(shape).astype(np.float32)
    _grads(conv, x, R.standard_normal(conv(x).shape).astype(np.float32))
    assert bool(calls["conv_planes"]) == planes and bool(calls["conv_planes_grad_weight"]) == planes


def test_planes_gradients_are_numerically_right(compiled):
    calls = _planes_calls(compiled)
    for conv, shape in ((layers.Conv2D(3, 3, padding="same", activation="relu", dtype="float64"), (2, 16, 16, 2)),
                        (layers.Conv2D(2, (2, 3), dilation_rate=(1, 2), dtype="float64"), (1, 17, 20, 3))):
        check_grad(conv, R.standard_normal(shape))
    assert calls["conv_planes"] and calls["conv_planes_grad_weight"]


def test_planes_scratch_rows_are_an_odd_number_of_cache_lines_apart():
    """Planes 4 KB apart fall in the same sets of the L1 cache, and the packing writes one value to each plane in
    turn: the scratch rows are padded to an odd number of 64-byte lines (32 x 32 planes: 17 lines, not 16)."""
    from lamina.ops.convolution import _planes
    for size, dtype in ((1024, np.float32), (1000, np.float32), (512, np.float64), (7, np.float64), (34 * 34, "f4")):
        p = _planes(5, size, dtype)
        assert p.shape[1] >= size and p.strides[0] % 64 == 0 and (p.strides[0] // 64) % 2 == 1


# ----------------------------------------------------------------------------- Adam
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["Adam", "AdamW"])
@pytest.mark.parametrize("split", [False, True])
def test_adam_kernel_gives_numpys_weights_to_the_bit(compiled, dtype, name, split):
    """Five steps on a small weight, a 2-D one and one of over 16 blocks (the blocked path), with NaN and inf
    in a gradient, split over threads or not: the kernel's weights and moments equal NumPy's code's bit for
    bit (the same float operations), and it ran for every variable."""
    from lamina import threads
    if split:
        compiled.setattr(threads, "split_width", lambda *a: 3)
    shapes = [(300,), (64, 96), (17 * 65536 + 5,)]
    grads = [[R.standard_normal(s).astype(dtype) for s in shapes] for _ in range(5)]
    grads[2][0][3] = np.nan
    grads[3][1][0, 1] = np.inf
    start = [R.standard_normal(s).astype(dtype) for s in shapes]

    def run():
        vs = [lamina.Variable(w, dtype=w.dtype) for w in start]   # (float64 too: Variable defaults to floatx)
        opt = getattr(lamina.optimizers, name)(learning_rate=0.01)
        for gs in grads:
            opt.apply([g.copy() for g in gs], vs)
        return [np.asarray(v.data) for v in vs] + [np.asarray(s.data) for s in opt.variables[2:]]
    calls = _count_calls(compiled, "adam_update")
    fused, plain = _both(compiled, run)
    assert len(calls) >= 5 * len(shapes)
    for a, b in zip(fused, plain):
        np.testing.assert_array_equal(a, b)


_ONE_PASS_UPDATES = [   # (optimizer, the kernel that must run)
    (lambda: lamina.optimizers.SGD(0.05, momentum=0.9), "sgd_momentum_update"),
    (lambda: lamina.optimizers.SGD(0.05, momentum=0.8, nesterov=True), "sgd_momentum_update"),
    (lambda: lamina.optimizers.RMSprop(0.01), "rmsprop_update"),
    (lambda: lamina.optimizers.RMSprop(0.01, momentum=0.5, rho=0.8), "rmsprop_update"),
    (lambda: lamina.optimizers.Adagrad(0.1), "adagrad_update"),
    (lambda: lamina.optimizers.Nadam(0.01), "nadam_update"),
    (lambda: lamina.optimizers.Lion(0.01), "lion_update")]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("make,kernel", _ONE_PASS_UPDATES)
@pytest.mark.parametrize("split", [False, True])
def test_one_pass_optimizer_updates_give_numpys_weights_to_the_bit(compiled, dtype, make, kernel, split):
    """SGD with momentum (and Nesterov's), RMSprop (with momentum too), Adagrad, Nadam and Lion: five steps on a
    scalar, a small weight, a 2-D one and one over the threads' split, NaN and inf in a gradient and zeros (Lion's
    sign), split over three threads or not: each kernel's weights and slots equal NumPy's code's bit for bit (the
    same float operations), and it ran for every variable at every step."""
    from lamina import threads
    if split:
        compiled.setattr(threads, "split_width", lambda *a: 3)
    shapes = [(), (300,), (64, 96), (K.UPDATE_SPLIT_ELEMENTS + 4099,)]
    grads = [[R.standard_normal(s).astype(dtype) for s in shapes] for _ in range(5)]
    grads[2][1][3] = np.nan
    grads[3][2][0, 1] = np.inf
    grads[0][3][:50] = 0.0
    start = [R.standard_normal(s).astype(dtype) for s in shapes]

    def run():
        vs = [lamina.Variable(w, dtype=w.dtype) for w in start]
        opt = make()
        for gs in grads:
            opt.apply([g.copy() for g in gs], vs)
        return [np.asarray(v.data) for v in vs] + [np.asarray(s.data) for s in opt.variables[2:]]
    calls = _count_calls(compiled, kernel)
    fused, plain = _both(compiled, run)
    assert len(calls) >= 5 * len(shapes)
    assert len(fused) > len(shapes)   # (the slots compared too)
    for a, b in zip(fused, plain):
        np.testing.assert_array_equal(a, b)


def test_one_pass_updates_stand_aside_for_numpy_scalars_and_centred_rmsprop(compiled):
    """A NumPy-scalar epsilon (NumPy's code then computes in float64) and the centred RMSprop (a running average the
    kernel does not keep) run NumPy's code. (The learning rate is a Python float whatever it was given as.)"""
    names = ("rmsprop_update", "adagrad_update", "nadam_update")
    calls = [_count_calls(compiled, n) for n in names]
    eps = np.float64(1e-7)
    for opt in (lamina.optimizers.RMSprop(centered=True), lamina.optimizers.RMSprop(epsilon=eps),
                lamina.optimizers.Adagrad(epsilon=eps), lamina.optimizers.Nadam(epsilon=eps)):
        v = lamina.Variable(np.ones((50, 50), np.float32))
        opt.apply([np.full((50, 50), 0.5, np.float32)], [v])
        assert np.isfinite(np.asarray(v.data)).all() and (np.asarray(v.data) != 1).all()
    assert calls == [[], [], []]


def test_adam_kernel_stands_aside_for_amsgrad_and_odd_coefficients(compiled):
    """AMSGrad (a running maximum the kernel does not keep) and a NumPy-scalar epsilon (whose float64 sum NumPy
    rounds differently) run NumPy's code."""
    calls = _count_calls(compiled, "adam_update")
    for opt in (lamina.optimizers.Adam(amsgrad=True), lamina.optimizers.Adam(epsilon=np.float64(1e-7))):
        v = lamina.Variable(np.ones((50, 50), np.float32))
        opt.apply([np.full((50, 50), 0.5, np.float32)], [v])
        assert np.isfinite(np.asarray(v.data)).all()
    assert calls == []


def test_adam_kernel_takes_small_variables_too(monkeypatch):
    """Adam's kernel runs below MIN_ELEMENTS (a bias, a scalar: its NumPy code there is ten ufunc calls that
    cost more than one compiled call), with the same weights to the bit."""
    monkeypatch.setitem(K._state, "mode", "auto")
    monkeypatch.setitem(K._state, "pending", 0)
    shapes = [(), (3,), (10, 7)]
    start = [R.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [R.standard_normal(s).astype(np.float32) for s in shapes]

    def run():
        vs = [lamina.Variable(w.copy()) for w in start]
        opt = lamina.optimizers.Adam(learning_rate=0.01)
        for _ in range(3):
            opt.apply([g.copy() for g in grads], vs)
        return [np.asarray(v.data) for v in vs]
    calls = _count_calls(monkeypatch, "adam_update", record=lambda args: args[0].size)
    fused, plain = _both(monkeypatch, run)
    assert sorted(set(calls)) == [1, 3, 70] and len(calls) == 9
    for a, b in zip(fused, plain):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- when they run
def test_kernels_stand_aside_where_they_should_not_run(monkeypatch):
    monkeypatch.setitem(K._state, "mode", "auto")
    monkeypatch.setattr(K, "MIN_ELEMENTS", 0)
    assert K.layer_norm_forward(np.ones((0, 8), np.float32), None, None, 1e-3) is None   # empty
    monkeypatch.setattr(K, "MIN_ELEMENTS", 1 << 15)
    big = np.ones((K.MIN_ELEMENTS // 64, 64), np.float32)
    assert K.layer_norm_forward(big, None, None, 1e-3) is not None
    small = np.ones((4, 8), np.float32)
    assert K.layer_norm_forward(small, None, None, 1e-3) is None            # stays in cache anyway
    assert K.layer_norm_forward(big[:, ::2], None, None, 1e-3) is None      # strided
    assert K.layer_norm_forward(big.astype(np.float16), None, None, 1e-3) is None
    assert not K.bias_relu(big.astype(np.int32), np.ones(64, np.int32))    # integers
    assert not K.bias_relu(big, np.ones(64, np.float64))                  # mixed dtypes
    monkeypatch.setitem(K._state, "mode", "numpy")
    assert K.layer_norm_forward(big, None, None, 1e-3) is None and not K.available()


def test_mode_is_validated_and_read_from_the_environment(monkeypatch):
    monkeypatch.setitem(K._state, "mode", None)
    with pytest.raises(ValueError, match="auto, numba, numpy"):
        K.set_mode("fast")
    K.set_mode("NumPy")
    assert K.mode() == "numpy"
    monkeypatch.setitem(K._state, "mode", None)
    monkeypatch.setenv("LAMINA_KERNELS", "numpy")
    assert K.mode() == "numpy" and not K.available()
    monkeypatch.setitem(K._state, "mode", None)
    monkeypatch.setenv("LAMINA_KERNELS", "")
    assert K.mode() == "auto" and K.available()
    monkeypatch.setattr(K, "_load", lambda: None)
    with pytest.raises(ImportError, match="lamina\\[fast\\]"):
        K.set_mode("numba")


def test_small_and_short_programs_never_import_numba_and_missing_numba_falls_back():
    """Without built modules (kernels_aot.py; tests/test_kernels_aot.py has the programs with them): importing
    lamina and training on small arrays does not import numba (~0.9 s with its first kernel), nor does a short
    program on large ones (the warm-up: WARMUP_ELEMENTS values through NumPy's code first, here lowered to 3
    calls' worth); a longer one does, at the same call every run, where no build at its exit can come (the suite
    sets LAMINA_KERNELS_AUTOBUILD=0; tests/test_kernels_aot.py has the program that defers to that build); with
    numba made unimportable, large arrays take NumPy's code and give the same values."""
    code = (
        "import sys, numpy as np\n"
        "if sys.argv[1] == 'hide': sys.modules['numba'] = None\n"
        "import lamina\n"
        "from lamina import layers\n"
        "lamina.utils.set_random_seed(0)\n"
        "from lamina.ops import kernels\n"
        "kernels._aot.module_paths = lambda: None\n"
        "n, calls = int(sys.argv[2]), int(sys.argv[3])\n"
        "kernels.WARMUP_ELEMENTS = 3 * n * 64\n"
        "x = np.random.default_rng(0).standard_normal((n, 64)).astype(np.float32)\n"
        "m = lamina.Sequential([layers.Dense(64, activation='relu'), layers.LayerNormalization()])\n"
        "for _ in range(calls):\n"
        "    y = m(x)\n"
        "print('numba' in sys.modules and sys.modules['numba'] is not None, float(np.abs(np.asarray(y.data)).sum()))\n")
    env = dict(os.environ, LAMINA_KERNELS="auto")

    def run(*args):
        out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()
    assert run("keep", "8", "3")[0] == "False"
    assert run("keep", "4096", "1")[0] == "False"      # 2 eligible calls (bias + ReLU, LayerNorm): warming up
    with_numba, without = run("keep", "4096", "3"), run("hide", "4096", "3")
    assert with_numba[0] == "True" and without[0] == "False"
    np.testing.assert_allclose(float(with_numba[1]), float(without[1]), rtol=1e-5)


def test_auto_mode_warms_up_on_numpy_then_runs_the_kernels(monkeypatch):
    """Without built modules, 'auto' runs NumPy's code until WARMUP_ELEMENTS values have passed through eligible
    calls; then, where a build at the program's exit can come, it keeps to NumPy's code and schedules that build
    (numba never loaded: kernels._deferred), and where none can (here: kernels_aot.build_expected says so, as
    with LAMINA_KERNELS_AUTOBUILD=0, numba missing or a failed build), numba's in-process kernels; 'numba'
    starts at once."""
    monkeypatch.setattr(K._aot, "module_paths", lambda: None)
    big = R.standard_normal((512, 64)).astype(np.float32)
    bias = np.ones(64, np.float32)
    monkeypatch.setattr(K, "WARMUP_ELEMENTS", 2 * big.size + 1)
    monkeypatch.setitem(K._state, "mode", "auto")
    monkeypatch.setitem(K._state, "kernels", None)
    scheduled = []
    monkeypatch.setattr(K._aot, "schedule_build", lambda: scheduled.append(1) or True)
    for can_build, last in ((True, False), (False, True)):
        monkeypatch.setattr(K._aot, "build_expected", lambda: can_build)
        monkeypatch.setitem(K._state, "pending", None)
        monkeypatch.setitem(K._state, "deferred", None)
        scheduled.clear()
        ran = [bool(K.bias_relu(big.copy(), bias)) for _ in range(5)]
        assert ran == [False, False, False, last, last]
        # deferred: decided once, the build scheduled; in-process: _load schedules it, as it always has
        assert scheduled == [1] and K._state["deferred"] is can_build
        assert (K.in_use() == "numba") is last
    monkeypatch.setitem(K._state, "pending", None)
    K.set_mode("numba")
    assert K.bias_relu(big.copy(), bias)
    monkeypatch.setitem(K._state, "mode", "auto")


# ----------------------------------------------------------------------------- the LSTM's backward step
# padded sequences (trailing steps masked), a masked step inside one, a sequence with every step masked
_MASK = np.ones((5, 7), bool)
_MASK[0, 4:] = _MASK[1, 2] = _MASK[2, :] = False

def _cell_kernel_equals_numpy(compiled, make, kernel, dtype, kwargs):
    """A recurrent layer forward and backward (outputs and every gradient) with the compiled backward step
    (one call per step) and with NumPy's passes: equal to the dtype's rounding. kwargs: the layer's, and
    masked=True for padded, inner-masked and all-masked sequences (_MASK). Returns the kernel's call list."""
    calls = _count_calls(compiled, kernel)
    kwargs = dict(kwargs)
    mask = _MASK if kwargs.pop("masked", False) else None
    layer = make(6, dtype=dtype.__name__, **kwargs)
    x = R.standard_normal((5, 7, 4)).astype(dtype)

    def first(out):   # the sequence or last output, without the states of return_state
        return out[0] if isinstance(out, (list, tuple)) else out
    gy = R.standard_normal(first(layer(x, mask=mask)).shape).astype(dtype)

    def run():
        xt = Tensor(x, requires_grad=True)
        y = first(layer(xt, training=True, mask=mask))
        gs = grad(y, [xt] + list(layer.trainable_weights), grad_output=Tensor(gy))
        return [np.asarray(y.data)] + [np.asarray(g.data) for g in gs]
    got, want = _both(compiled, run)
    assert len(calls) == 7   # one per step, the NumPy run none
    _close(got, want, dtype)
    calls.clear()
    return calls


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", [dict(), dict(return_sequences=True), dict(go_backwards=True, return_state=True),
                                    dict(return_sequences=True, masked=True), dict(go_backwards=True, masked=True)])
def test_lstm_backward_step_kernel_equals_numpy(compiled, dtype, kwargs):
    _cell_kernel_equals_numpy(compiled, layers.LSTM, "lstm_cell_grad", dtype, kwargs)


@pytest.mark.parametrize("kwargs", [dict(), dict(return_sequences=True), dict(go_backwards=True, return_state=True),
                                    dict(return_sequences=True, masked=True), dict(go_backwards=True, masked=True),
                                    dict(use_bias=False)])
def test_lstm_forward_step_kernel_equals_numpy(compiled, kwargs):
    """The compiled forward step (float32: the gate arithmetic, exp and tanh in one call a step) against NumPy's
    passes: outputs and every gradient to float32's rounding (its exp and tanh are not NumPy's), one call a step,
    also where NumPy's exp is AVX-512's and the step stays NumPy's by default."""
    compiled.setattr(K, "OWN_EXP", True)
    calls = _count_calls(compiled, "lstm_cell")
    _cell_kernel_equals_numpy(compiled, layers.LSTM, "lstm_cell_grad", np.float32, kwargs)
    assert len(calls) == 14   # 7 steps, twice (the call that shapes dy, the compiled run); the NumPy run none


def test_lstm_forward_step_kernel_stands_aside(compiled):
    """NumPy's passes run for float64, for other activations, and where NumPy's exp is vectorised
    (OWN_EXP off)."""
    calls = _count_calls(compiled, "lstm_cell")
    x = R.standard_normal((3, 5, 4))
    compiled.setattr(K, "OWN_EXP", True)
    for layer, inp in ((layers.LSTM(4, dtype="float64"), x), (layers.LSTM(4, activation="relu"), x.astype("float32")),
                       (layers.LSTM(4, recurrent_activation="hard_sigmoid"), x.astype("float32"))):
        layer(inp)
    compiled.setattr(K, "OWN_EXP", False)
    layers.LSTM(4)(x.astype("float32"))
    assert calls == []


def test_lstm_forward_step_kernel_exp_and_tanh_to_a_few_ulps(compiled):
    """The kernel's own exp, sigmoid and tanh over float32's whole range (and sigmoid_tanh_rows', the same
    values), against float64 references: within 3 ulps of the rounded value wherever the result is a normal number
    (0 or subnormal where it would be subnormal), NaN stays NaN, infinities give the limits, tanh keeps the sign of
    zero."""
    k = K._load()
    zs = np.concatenate([np.linspace(-100, 100, 4001), np.geomspace(1e-30, 20, 2000), -np.geomspace(1e-30, 20, 2000),
                         [0.0, -0.0, np.inf, -np.inf, np.nan, 88.0, 89.0, -87.0, -88.0, 0.625, -0.625, 0.6249999]])
    zs = zs.astype(np.float32)
    u = 8
    n = -(-zs.size // u)
    z = np.zeros(n * u, np.float32)
    z[:zs.size] = zs
    z = z.reshape(n, u)
    rec = np.concatenate([z, z, z, z], axis=1)      # every gate sees every value
    xw = np.full_like(rec, -0.0)   # z + -0.0 is z, -0.0 included
    c_prev = np.zeros((n, u), np.float32)
    gates, c, tc, h = np.empty((4, n, u), np.float32), np.empty((n, u), np.float32), np.empty((n, u), np.float32), \
        np.empty((n, u), np.float32)
    k.lstm_cell(rec, xw, rec[0], False, c_prev, gates, c, tc, h)
    z64 = z.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        sig = 1 / (1 + np.exp(-z64))
        th = np.tanh(z64)
        for got, want in ((gates[0], sig), (gates[2], sig), (gates[3], th)):
            nan = np.isnan(want)
            assert np.array_equal(np.isnan(got), nan)
            normal = ~nan & (np.abs(want) >= np.finfo(np.float32).tiny)
            ulp = np.spacing(np.abs(want[normal]).astype(np.float32)).astype(np.float64)
            assert np.max(np.abs(got[normal] - want[normal]) / ulp) <= 3
            assert np.all(np.abs(got[~nan & ~normal]) < np.finfo(np.float32).tiny)   # 0 or subnormal
    assert np.signbit(gates[3][z == 0]).tolist() == np.signbit(z[z == 0]).tolist()
    # the in-place pass (kernels.sigmoid_tanh) computes the same values as the step's gates
    for tanh, want in ((False, gates[0]), (True, gates[3])):
        y = z.copy()
        k.sigmoid_tanh_rows(y, tanh)
        np.testing.assert_array_equal(y, want)
    # c = f * 0 + i * g; tanh(c) and h = o tanh(c) from the kernel's own gates
    want_c = gates[1] * c_prev + gates[0] * gates[3]
    np.testing.assert_array_equal(c, want_c)
    with np.errstate(invalid="ignore"):
        th_c = np.tanh(want_c.astype(np.float64))
    fin = ~np.isnan(th_c)
    assert np.max(np.abs(tc[fin] - th_c[fin]) / np.spacing(np.abs(th_c[fin]).astype(np.float32))) <= 3
    np.testing.assert_array_equal(h, gates[2] * tc)


@pytest.mark.parametrize("make", [layers.GRU, layers.SimpleRNN])
@pytest.mark.parametrize("kwargs", [dict(), dict(return_sequences=True, masked=True), dict(go_backwards=True)])
def test_recurrent_gates_take_the_kernels_sigmoid_and_tanh(compiled, make, kwargs):
    """The GRU's and SimpleRNN's float32 gates through kernels.sigmoid_tanh (where NumPy's exp is not SIMD, and
    here forced): outputs and gradients as NumPy's passes give them, to float32's rounding; one call per step
    and activation; float64 and a strided view keep NumPy's passes."""
    _force_own_exp(compiled)
    calls = _count_calls(compiled, "sigmoid_tanh_rows", lambda args: bool(args[1]))
    x = R.standard_normal((5, 7, 4)).astype(np.float32)
    mask = _MASK if kwargs.pop("masked", False) else None
    layer = make(6, **kwargs)
    out = layer(x, mask=mask)
    gy = R.standard_normal(out.shape).astype(np.float32)

    def run():
        xt = Tensor(x, requires_grad=True)
        y = layer(xt, training=True, mask=mask)
        gs = grad(y, [xt] + list(layer.trainable_weights), grad_output=Tensor(gy))
        return [np.asarray(y.data)] + [np.asarray(g.data) for g in gs]
    calls.clear()
    got, want = _both(compiled, run)
    _close(got, want, np.float32)
    per_step = [False, True] if make is layers.GRU else [True]   # GRU: z and r, then the candidate's tanh
    assert calls == per_step * 7
    calls.clear()
    make(6, dtype="float64")(x.astype(np.float64))
    a = R.standard_normal((4, 6)).astype(np.float32)
    assert not K.sigmoid_tanh(a[:, ::2], True) and calls == []


def _gelu_tanh64(x):
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


@pytest.mark.parametrize("kernel,fn,tanh,want", [
    ("silu_rows", ops.silu, False, lambda x: x / (1.0 + np.exp(-x))),
    ("sigmoid_tanh_rows", lambda t: ops.gelu(t, approximate=True), True, _gelu_tanh64)])
def test_activations_take_the_kernels_exp_where_numpys_is_scalar(compiled, kernel, fn, tanh, want):
    """SiLU's float32 forward (EfficientNet's swish: 16% of its training step on a Zen 2 VM, mostly NumPy's
    scalar exp) through kernels.silu, and the tanh of GELU's tanh approximation through kernels.sigmoid_tanh,
    block by block (here forced: OWN_EXP): within a few ulps of float64's formula wherever the result is normal
    (GELU's: a few ulps of 1 times x where its formula cancels), gradients as NumPy's passes give them (to the
    same cancellation); SiLU's one pass takes the whole array (rows of 1024 and the short rest), the approximate
    GELU's tanh every block of its chain, the last short one too; float64 keeps NumPy's passes."""
    _force_own_exp(compiled)
    from lamina.ops import activations
    compiled.setattr(activations, "_CHAIN_BLOCK", 1024)
    calls = _count_calls(compiled, kernel, lambda args: (args[0].size, kernel != "silu_rows" and bool(args[1])))
    grads = _count_calls(compiled, "silu_grad_rows", lambda args: args[0].size)
    x = np.concatenate([np.linspace(-87, 88, 3001), R.standard_normal(2000) * 4]).astype(np.float32)
    x[:3] = (np.nan, np.inf, -np.inf)
    gy = R.standard_normal(x.shape).astype(np.float32)
    (y, g), (y_np, g_np) = _both(compiled, lambda: _fn_and_grad(fn, x, gy))
    assert [n for n, _ in calls] == ([1024] * 4 if tanh else [4096]) + [905]
    assert {t for _, t in calls} == {tanh}
    assert sum(grads) == (x.size if kernel == "silu_rows" else 0)
    with np.errstate(over="ignore", invalid="ignore"):
        ref = want(x.astype(np.float64))
    fin = np.isfinite(ref) & (np.abs(ref) >= np.finfo(np.float32).tiny)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_np))
    # (GELU's 1 + tanh(z) cancels for x < 0, in NumPy's passes too: there a few ulps of 1, times x)
    lim = 4 * np.spacing(np.abs(ref[fin]).astype(np.float32)) + (4 * np.finfo(np.float32).eps * np.abs(x[fin])
                                                                  if tanh else 0)
    assert np.all(np.abs(y[fin] - ref[fin]) <= lim)
    ok = np.isfinite(g_np)
    # (GELU's gradient reads tanh through 1 + t and 1 - t^2: a few ulps of 1 there, times up to |x|^3)
    lim = 1e-5 * np.abs(g_np[ok]) + 1e-6 + (8 * np.finfo(np.float32).eps * (1 + np.abs(x[ok]) ** 3) * np.abs(gy[ok])
                                             if tanh else 0)
    assert np.all(np.abs(g[ok] - g_np[ok]) <= lim)
    calls.clear()
    grads.clear()
    x64 = Tensor(x.astype(np.float64), requires_grad=True)
    y64 = fn(x64)
    grad(y64, [x64], grad_output=Tensor(gy.astype(np.float64)))
    assert calls == [] and sum(grads) == (x.size if kernel == "silu_rows" else 0)   # (the gradient's: any float)


def test_where_numpys_exp_is_vectorised_fused_passes_keep_the_own_exp_and_lone_tanh_and_exp_passes_numpys(compiled):
    """With AVX-512 (NUMPY_SIMD_EXP, here forced) the passes that fuse the own exp with other work still take it
    (the sigmoid's, SiLU's, exact GELU's, softplus', an LSTM step's, a softmax's rows: the passes they save pay
    there too), while a lone tanh (the tanh activation, GRU's candidate, GELU's approximation) and attention's
    column exp keep NumPy's vectorised ones: their values then NumPy's to the bit."""
    assert K.OWN_EXP   # (on every machine)
    compiled.setattr(K, "OWN_EXP", True)
    compiled.setattr(K, "NUMPY_SIMD_EXP", True)
    calls = _count_calls(compiled, "sigmoid_tanh_rows", lambda args: bool(args[1]))
    fused = {name: _count_calls(compiled, name) for name in ("sigmoid_rows", "silu_rows", "gelu_rows",
                                                               "softplus_rows", "lstm_cell", "exp_rows")}
    x = (R.standard_normal((64, 300)) * 3).astype(np.float32)
    for fn in (ops.sigmoid, ops.silu, lambda t: ops.gelu(t, approximate=False), ops.softplus,
               lambda t: ops.softmax(t, axis=-1),
               lambda t: layers.LSTM(8)(ops.reshape(t, (64, 30, 10)))):
        fn(Tensor(x))
    assert all(len(c) >= 1 for c in fused.values()), {n: len(c) for n, c in fused.items()}
    fused["exp_rows"].clear()
    np.testing.assert_array_equal(np.asarray(ops.tanh(Tensor(x)).data), np.tanh(x))
    y = np.asarray(ops.gelu(Tensor(x), approximate=True).data)
    layers.GRU(6)(x.reshape(64, 30, 10))
    s = x.reshape(4, 16, 300).copy()
    assert K.softmax_columns(s)
    assert calls == [False] * 30   # the GRU's z and r through the kernel, no tanh anywhere
    assert fused["exp_rows"] == []
    z = x * x
    z *= np.float32(np.sqrt(2 / np.pi) * 0.044715)
    z += np.float32(np.sqrt(2 / np.pi))
    z *= x
    np.testing.assert_array_equal(y, (np.tanh(z) + 1) * x * np.float32(0.5))


def test_exact_gelu_takes_the_kernels_where_numpys_exp_is_scalar(compiled):
    """Exact GELU (erf; Keras's gelu activation) forward and backward in one compiled pass each where NumPy's float32
    exp is scalar (here forced), block by block: NumPy's chain's values but for the exp (3 ulps of exp(-x^2 / 2)),
    NaN and the infinities as there; against float64's exact formula within the erf approximation's 1.5e-7; float64
    keeps NumPy's passes."""
    import math
    compiled.setattr(K, "OWN_EXP", True)
    from lamina.ops import activations
    compiled.setattr(activations, "_CHAIN_BLOCK", 1024)
    fwd = _count_calls(compiled, "gelu_rows", lambda args: args[0].size)
    bwd = _count_calls(compiled, "gelu_grad_rows", lambda args: args[0].size)
    rng = np.random.default_rng(5)
    x = np.concatenate([np.linspace(-20, 20, 3001), rng.standard_normal(2000) * 3]).astype(np.float32)
    x[:3] = (np.nan, np.inf, -np.inf)
    gy = rng.standard_normal(x.shape).astype(np.float32)
    (y, g), (y_np, g_np) = _both(compiled, lambda: _fn_and_grad(lambda t: ops.gelu(t, approximate=False), x, gy))
    assert fwd == bwd == [4096, 905]   # (one pass over the whole: its rows of 1024, then the rest)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y_np))
    np.testing.assert_array_equal(np.isnan(g), np.isnan(g_np))
    ok = np.isfinite(y_np)
    np.testing.assert_allclose(y[ok], y_np[ok], rtol=2e-6, atol=1e-7)
    ok = np.isfinite(g_np)
    np.testing.assert_allclose(g[ok], g_np[ok], rtol=2e-6, atol=1e-6)
    assert y[1] == np.inf and np.isnan(y[2])   # inf * 1, and -inf * 0 as NumPy's chain
    x64 = x[3:].astype(np.float64)
    exact = x64 * 0.5 * (1.0 + np.array([math.erf(v / math.sqrt(2.0)) for v in x64]))
    # (the erf approximation's 1.5e-7, halved, and float32's roundings of 1 + erf, which cancels for x < 0: |x| times
    # a few ulps of 1)
    assert np.all(np.abs(y[3:] - exact) <= 4e-7 * np.abs(x64) + 4 * np.spacing(np.abs(exact).astype(np.float32)))
    fwd.clear()
    bwd.clear()
    t64 = Tensor(x.astype(np.float64), requires_grad=True)
    grad(ops.gelu(t64, approximate=False), [t64], grad_output=Tensor(gy.astype(np.float64)))
    assert fwd == [] and bwd == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_silu_gradient_kernel_gives_numpys_bits(compiled, dtype):
    """SiLU's gradient in one compiled pass: NumPy's chain's values to the bit (the same operations in its order),
    given the same sigmoid (NumPy's here: OWN_EXP off), over several blocks and a short last one."""
    compiled.setattr(K, "OWN_EXP", False)
    calls = _count_calls(compiled, "silu_grad_rows")
    x = R.standard_normal(3 * 16384 + 77).astype(dtype) * 5
    x[:4] = (np.nan, np.inf, -np.inf, -0.0)
    gy = R.standard_normal(x.shape).astype(dtype)

    def run():
        xt = Tensor(x, requires_grad=True)
        return np.asarray(grad(ops.silu(xt), [xt], grad_output=Tensor(gy))[0].data)
    got, want = _both(compiled, run)
    assert calls
    nan = np.isnan(want)   # (NaN where NaN, any sign and payload)
    np.testing.assert_array_equal(np.isnan(got), nan)
    _bits_equal([got[~nan]], [want[~nan]])


_EXACT_ACTIVATIONS = [   # (function, the kernels that must run: those whose values are NumPy's chain's to the bit)
    (lambda t: ops.leaky_relu(t, 0.2), ("leaky_relu_rows", "leaky_relu_grad_rows")),
    (lambda t: ops.leaky_relu(t, 1.5), ("leaky_relu_rows", "leaky_relu_grad_rows")),
    (ops.sigmoid, ("sigmoid_grad_rows",)),
    (lambda t: ops.elu(t, 0.7), ("elu_grad_rows",)),
    (ops.selu, ("elu_grad_rows",))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fn,kernels", _EXACT_ACTIVATIONS)
@pytest.mark.parametrize("size", [3 * 16384 + 77, 5 * 65536 + 1000])
def test_exact_activation_kernels_give_numpys_bits(compiled, dtype, fn, kernels, size):
    """LeakyReLU's forward, and the gradients of LeakyReLU, the sigmoid, ELU and SELU, each one compiled pass: NumPy's
    chains' values to the bit (the same operations in the same order; NaN, the infinities and -0.0 among the
    inputs, given the same forward: NumPy's exp here, OWN_EXP off), on a whole array of one chain block and on one
    split over three threads (rows of 1024 values and a short rest in each thread's run)."""
    compiled.setattr(K, "OWN_EXP", False)
    calls = {k: _count_calls(compiled, k, lambda args: args[0].size) for k in kernels}
    if size > 65536:
        _force_split(compiled, 3)
    x = R.standard_normal(size).astype(dtype) * 4
    x[:5] = (np.nan, np.inf, -np.inf, -0.0, 0.0)
    gy = R.standard_normal(x.shape).astype(dtype)
    gy[5:7] = (np.nan, np.inf)
    got, want = _both(compiled, lambda: _fn_and_grad(fn, x, gy))
    for k in kernels:   # (each value once, in runs of whole rows but for the last of each thread's run)
        assert sum(calls[k]) == size, k
        assert all(n % 1024 == 0 for n in calls[k][:-1]) or size > 65536, k
    for u, v in zip(got, want):
        nan = np.isnan(v)   # (NaN where NaN, any sign and payload)
        np.testing.assert_array_equal(np.isnan(u), nan)
        _bits_equal([u[~nan]], [v[~nan]])


def _ulps(got, want):
    """|got - want| in float32 ulps of want (float64 values) where want is a normal float32 number."""
    return np.abs(got.astype(np.float64) - want) / np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)


@pytest.mark.parametrize("name", ["sigmoid", "elu", "selu", "softplus", "tanh"])
def test_own_exp_activations_are_within_a_few_ulps_over_float32s_range(compiled, name):
    """The sigmoid's, ELU's, SELU's, softplus' and tanh's float32 forwards (and softplus' gradient, sigmoid(x) gy) in
    one compiled pass with the kernels' own exp (and expm1 near 0, log1p, tanh) where NumPy's are scalar (forced):
    within 4 ulps of float64's formula wherever the result is a normal number, subnormal tails as NumPy's stable
    formulas give them (the sigmoid below -88.7, softplus below -87.3: not the exp's clamp), NaN, the infinities
    and the sign of zero as NumPy's chain; float64 keeps NumPy's passes."""
    _force_own_exp(compiled)
    kernel = {"sigmoid": "sigmoid_rows", "elu": "elu_rows", "selu": "elu_rows", "softplus": "softplus_rows",
              "tanh": "sigmoid_tanh_rows"}[name]
    calls = _count_calls(compiled, kernel, lambda args: args[0].size)
    sig = _count_calls(compiled, "sigmoid_rows", lambda args: bool(args[2]))
    fn = {"sigmoid": ops.sigmoid, "elu": lambda t: ops.elu(t, 1.3), "selu": ops.selu, "softplus": ops.softplus,
          "tanh": ops.tanh}[name]
    a, s = 1.6732632423543772, 1.0507009873554805
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        ref = {"sigmoid": lambda v: 1 / (1 + np.exp(-v)),
               "elu": lambda v: np.where(v > 0, v, 1.3 * np.expm1(np.minimum(v, 0))),
               "selu": lambda v: s * np.where(v > 0, v, a * np.expm1(np.minimum(v, 0))),
               "softplus": lambda v: np.maximum(v, 0) + np.log1p(np.exp(-np.abs(v))), "tanh": np.tanh}[name]
    x = np.concatenate([np.linspace(-110, 90, 40001), np.geomspace(1e-30, 30, 4000), -np.geomspace(1e-30, 30, 4000),
                        [0.0, -0.0, np.inf, -np.inf, np.nan, -0.5, -0.49999997, -0.50000006, 88.72, -88.72, -87.34,
                         -103.9, -104.0]]).astype(np.float32)
    gy = R.standard_normal(x.shape).astype(np.float32)
    (y, g), (y_np, g_np) = _both(compiled, lambda: _fn_and_grad(fn, x, gy))
    assert sum(calls) == x.size
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        want = ref(x.astype(np.float64))
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(y), nan)
    normal = ~nan & (np.abs(want) >= np.finfo(np.float32).tiny) & np.isfinite(want)
    assert np.max(_ulps(y[normal], want[normal])) <= 4
    tail = ~nan & ~normal & np.isfinite(want)   # subnormal or zero results: NumPy's chain's, to a subnormal step
    assert np.all(np.abs(y[tail] - y_np[tail]) <= np.finfo(np.float32).smallest_subnormal)
    np.testing.assert_array_equal(y[np.isinf(want)], want[np.isinf(want)])
    zero = (x == 0) & ~nan
    np.testing.assert_array_equal(np.signbit(y[zero]), np.signbit(y_np[zero]))
    # gradients as NumPy's chains give them from these outputs: to a few ulps of the output (the sigmoid's 1 - y
    # reads y's ulps near 1), times gy
    ok = np.isfinite(g_np)
    np.testing.assert_array_equal(np.isnan(g), np.isnan(g_np))
    lim = 8 * np.finfo(np.float32).eps * np.abs(gy[ok]) * (1 + np.abs(y_np[ok])) + 4 * np.spacing(np.abs(g_np[ok]))
    assert np.all(np.abs(g[ok] - g_np[ok]) <= lim)
    assert (True in sig) == (name == "softplus")
    calls.clear()
    x64 = Tensor(x.astype(np.float64), requires_grad=True)
    grad(fn(x64), [x64], grad_output=Tensor(gy.astype(np.float64)))
    assert calls == []


def test_exp_rows_is_within_3_ulps_and_keeps_numpys_special_values(compiled):
    """kernels.exp_rows (the softmaxes' and cross-entropies' exp where NumPy's is scalar; here forced): within
    3 ulps of float64's exp over float32's range, subnormal results within one subnormal step, exp(-inf) = 0,
    inf and NaN as NumPy's; rows without such values and rows with them alike; float64 refused."""
    compiled.setattr(K, "OWN_EXP", True)
    x = np.concatenate([np.linspace(-110, 89, 40000), R.standard_normal(8000) * 30]).astype(np.float32)
    a = x.reshape(-1, 96).copy()
    a[:200] = np.abs(a[:200]) % 80 - 40   # rows with no value outside the polynomial's range
    a[-1, :4] = (np.nan, np.inf, -np.inf, -0.0)
    want = np.exp(a.astype(np.float64))
    got = a.copy()
    assert K.exp_rows(got)
    shift = R.standard_normal(a.shape[0]).astype(np.float32)
    shifted = np.empty_like(a)
    assert K.exp_rows(a, shift, out=shifted)
    with np.errstate(invalid="ignore"):
        want_shifted = np.exp((a - shift[:, None]).astype(np.float64))   # (the subtraction in float32, as the kernel)
    ok = np.isfinite(want_shifted) & (want_shifted >= np.finfo(np.float32).tiny) & (want_shifted < 1e38)
    assert np.max(np.abs(shifted[ok] - want_shifted[ok]) / np.spacing(want_shifted[ok].astype(np.float32))) <= 3
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    big = want > np.finfo(np.float32).max
    assert np.all(got[big] == np.inf)
    fin = np.isfinite(want) & (want >= np.finfo(np.float32).tiny) & ~big
    assert np.max(np.abs(got[fin] - want[fin]) / np.spacing(want[fin].astype(np.float32))) <= 3
    sub = want < np.finfo(np.float32).tiny
    assert np.all(np.abs(got[sub] - want[sub]) <= np.finfo(np.float32).smallest_subnormal)
    assert got[-1, 2] == 0.0 and got[-1, 1] == np.inf and got[-1, 3] == 1.0
    assert not K.exp_rows(a.astype(np.float64))
    # an out= of another shape is refused (the kernel would write its rows past the array's end)
    assert not K.exp_rows(a, out=np.empty((a.shape[0], a.shape[1] - 1), np.float32))
    assert not K.sigmoid_tanh(a, True, out=np.empty((a.shape[0] + 1, a.shape[1]), np.float32))
    assert not K.silu(a, np.empty_like(a), np.empty((a.shape[0], 7), np.float32))


@pytest.mark.parametrize("width", [5, 8, 64, 203, 2100])   # (2100: wider than a group of rows, kernels.EXP_GROUP)
def test_exp_rows_softmax_finds_the_maxima_and_sums_and_divides(compiled, width):
    """kernels.exp_rows with find_max and sums (the softmax's one visit of each row, here forced): the row maxima
    NumPy's wherever a row has no NaN, the sums and the softmax float64's within a few float32 roundings, rows with
    masked (-inf) logits as NumPy's, and rows with NaN, +inf or only -inf all NaN, as NumPy's softmax; split over
    threads the same bits."""
    compiled.setattr(K, "OWN_EXP", True)
    x = (R.standard_normal((300, width)) * 20).astype(np.float32)
    x[1, ::2] = -np.inf
    x[2, 0] = np.nan
    x[3, width // 2] = np.inf
    x[4] = -np.inf
    x[5] = np.float32(-1e30)   # every argument 0 after the maximum: a uniform row
    m, sums, y = np.empty(300, np.float32), np.empty(300, np.float32), np.empty_like(x)
    assert K.exp_rows(x, m, out=y, sums=sums, find_max=True)
    clean = ~np.isnan(x).any(axis=1)
    np.testing.assert_array_equal(m[clean], x[clean].max(axis=1))
    x64 = x.astype(np.float64)
    with np.errstate(invalid="ignore"):
        e = np.exp(x64 - x64.max(axis=1, keepdims=True))
    want_sums, want = e.sum(axis=1), e / e.sum(axis=1, keepdims=True)
    bad = np.zeros(300, bool)
    bad[[2, 3, 4]] = True
    assert np.isnan(y[bad]).all() and np.isnan(want[bad]).all()
    np.testing.assert_allclose(sums[~bad], want_sums[~bad], rtol=2e-6)
    np.testing.assert_allclose(y[~bad], want[~bad], rtol=5e-6, atol=1e-30)
    assert np.all(y[1, ::2] == 0) and np.all(y[5] == np.float32(1) / np.float32(width))
    splits = _force_split(compiled)
    m2, sums2, y2 = np.empty_like(m), np.empty_like(sums), np.empty_like(y)
    assert K.exp_rows(x, m2, out=y2, sums=sums2, find_max=True)
    assert splits
    _bits_equal([m2, sums2, y2], [m, sums, y])
    assert not K.exp_rows(x, None, out=y, sums=sums, find_max=True)   # find_max needs the array to write
    assert not K.exp_rows(x, m, out=y, sums=np.empty(299, np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_rows_grad_kernel_equals_the_formula(compiled, dtype):
    """kernels.softmax_rows_grad: gy y - y sum(gy y) row by row, float64's values within the dtype's rounding (the
    row sums add in another order than NumPy's GEMV), NaN where gy has one; in place into gy as well."""
    y = R.random((300, 37)).astype(dtype)
    y /= y.sum(axis=1, keepdims=True)
    gy = R.standard_normal((300, 37)).astype(dtype)
    gy[7, 3] = np.nan
    out = np.empty_like(gy)
    assert K.softmax_rows_grad(y, gy, out)
    y64, g64 = y.astype(np.float64), gy.astype(np.float64)
    want = g64 * y64 - y64 * (g64 * y64).sum(axis=1, keepdims=True)
    assert np.isnan(out[7]).all()
    ok = np.ones(300, bool)
    ok[7] = False
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(out[ok], want[ok], rtol=tol * 10, atol=tol)
    inplace = gy.copy()
    assert K.softmax_rows_grad(y, inplace, inplace)
    np.testing.assert_array_equal(inplace, out)
    assert not K.softmax_rows_grad(y, gy[:, :36], out[:, :36])   # (strided views: NumPy's code)
    # a log-softmax's, given its softmax: gy - y sum(gy)
    assert K.softmax_rows_grad(y, gy, out, log=True)
    want = g64 - y64 * g64.sum(axis=1, keepdims=True)
    assert np.isnan(out[7]).all()
    np.testing.assert_allclose(out[ok], want[ok], rtol=tol * 10, atol=tol * 10)


@pytest.mark.parametrize("mode", ["auto", "numpy"])
@pytest.mark.parametrize("shape", [(40, 300), (6, 7, 64), (256, 3)])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_op_in_both_modes_matches_torch(compiled, mode, shape, log):
    """ops.softmax and ops.log_softmax over the last axis, forward and backward, with the compiled row kernels
    (forced) and with NumPy's code: PyTorch's values to float32's rounding, masked logits included."""
    torch = pytest.importorskip("torch")
    compiled.setattr(K, "OWN_EXP", True)
    compiled.setitem(K._state, "mode", mode)
    calls = _count_calls(compiled, "softmax_rows_grad", lambda args: args[2]) if mode == "auto" else []
    sums = _count_calls(compiled, "exp_rows", lambda args: args[4]) if mode == "auto" else []
    shifts = _count_calls(compiled, "shift_rows") if mode == "auto" else []
    x = (R.standard_normal(shape) * 4).astype(np.float32)
    x[..., 1::5] = -np.inf
    gy = R.standard_normal(shape).astype(np.float32)
    xt = Tensor(x, requires_grad=True)
    y = (ops.log_softmax if log else ops.softmax)(xt, axis=-1)
    (g,) = grad(y, [xt], grad_output=Tensor(gy))
    tx = torch.from_numpy(x).requires_grad_(True)
    ty = (torch.log_softmax if log else torch.softmax)(tx, -1)
    ty.backward(torch.from_numpy(gy))
    np.testing.assert_allclose(np.asarray(y.data), ty.detach().numpy(), rtol=1e-5, atol=1e-6)
    # (the log-softmax's gy - softmax sum(gy) cancels: float32's rounding of the sum, ~1e-6 at 300 columns)
    np.testing.assert_allclose(np.asarray(g.data), tx.grad.numpy(), rtol=1e-4, atol=1e-5 if log else 1e-6)
    assert calls == ([log] if mode == "auto" else [])
    assert sums[:1] == ([True] if mode == "auto" else [])   # the forward's maxima found by the kernel
    # the log-softmax keeps the forward's softmax for its backward (no exp there) and writes y in one pass
    assert len(sums) == (mode == "auto") and len(shifts) == (mode == "auto" and log)


def test_shift_rows_gives_numpys_two_subtractions_to_the_bit(compiled):
    """kernels.shift_rows (a log-softmax's y = (x - m) - log s): NumPy's two broadcast subtractions' bits, NaN and
    the infinities included, rows split over threads; None for vectors of another length."""
    splits = _force_split(compiled)
    x = (R.standard_normal((3000, 37)) * 50).astype(np.float32)
    x[5, 3], x[7, 1], x[9, 2] = np.nan, np.inf, -np.inf
    m = x.max(axis=1) + R.standard_normal(3000).astype(np.float32)
    ls = np.log(R.random(3000).astype(np.float32) * 30 + 1)
    m[11], ls[12] = np.inf, np.nan
    with np.errstate(invalid="ignore"):
        want = x - m[:, None]
        want -= ls[:, None]
        got = K.shift_rows(x, m, ls)
    np.testing.assert_array_equal(got.view(np.int32), want.view(np.int32))
    assert splits
    assert K.shift_rows(x, m[:-1], ls[:-1]) is None and K.shift_rows(x, m, ls[:-1]) is None


def test_no_helper_is_called_by_kernels_of_both_compilation_modes():
    """numba compiles a helper once, with the flags of the first kernel that calls it: a FASTMATH caller would
    change an exact helper's arithmetic for every other kernel (it did: lstm_cell's gates moved by an ulp once
    exp_rows was compiled with FASTMATH). So a helper's callers are all of one compilation mode (the own exp's
    kernels all "fused"; the planes convolution's packing, a copy, called by its two "fast" kernels alone)."""
    import inspect
    import re
    from lamina.ops import kernel_loops, kernels_aot
    modes = {}
    callers = [(name, mode) for name, (mode, *_) in kernels_aot.SIGNATURES.items()]
    while callers:   # (a helper's own helpers take its mode: _exp_into and _sigmoid_row call _exp_scalar)
        name, mode = callers.pop()
        f = getattr(kernel_loops, name)
        source = inspect.getsource(getattr(f, "py_func", f))
        for h in kernels_aot.HELPERS:
            if h != name and re.search(rf"\b{h}\(", source) and mode not in modes.get(h, ()):
                modes.setdefault(h, set()).add(mode)
                callers.append((h, mode))
    assert {h: m for h, m in modes.items() if len(m) > 1} == {}
    assert modes == {h: {mode} for h, mode in kernels_aot.HELPERS.items()}   # (compiled in their callers' mode)
    assert modes["_exp_into"] == modes["_exp_scalar"] == {"fused"} and modes["_pack_planes"] == {"fast"}


@pytest.mark.parametrize("mode", ["auto", "numpy"])
def test_sparse_crossentropy_from_logits_with_masked_classes_is_finite(compiled, mode):
    """A logit of -inf (a masked class) beside the label's: the loss is finite, as PyTorch's (the one-hot product
    summed gave 0 * -inf = NaN), and the gradient is softmax - onehot; wide rows take the compiled exp where it
    runs (here forced), the same loss and gradient to float32's rounding."""
    torch = pytest.importorskip("torch")
    compiled.setattr(K, "OWN_EXP", True)
    compiled.setitem(K._state, "mode", mode)
    x = R.standard_normal((64, 700)).astype(np.float32) * 3
    x[:, 5::7] = -np.inf
    lab = R.integers(0, 700, 64)
    lab[lab % 7 == 5] += 1
    xt = Tensor(x, requires_grad=True)
    loss = ops.sparse_categorical_crossentropy(lab, xt, from_logits=True)
    (g,) = grad(ops.sum(loss), [xt])
    tx = torch.from_numpy(x).requires_grad_(True)
    tl = torch.nn.functional.cross_entropy(tx, torch.from_numpy(lab), reduction="none")
    tl.sum().backward()
    np.testing.assert_allclose(np.asarray(loss.data), tl.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(g.data), tx.grad.numpy(), rtol=1e-5, atol=1e-6)
    assert np.all(np.asarray(g.data)[:, 5::7] == 0)


@pytest.mark.parametrize("mode", ["auto", "numpy"])
@pytest.mark.parametrize("shape", [(64, 700), (4, 5, 33)])
def test_categorical_crossentropy_from_logits_in_both_modes_matches_torch(compiled, mode, shape):
    """Categorical cross-entropy from logits with soft targets: the softmax's rows in one compiled visit where it
    runs (here forced), kept for the backward; loss and both gradients PyTorch's to float32's rounding."""
    torch = pytest.importorskip("torch")
    compiled.setattr(K, "OWN_EXP", True)
    compiled.setitem(K._state, "mode", mode)
    visits = _count_calls(compiled, "exp_rows", lambda args: args[4]) if mode == "auto" else []
    x = (R.standard_normal(shape) * 5).astype(np.float32)
    t = R.random(shape).astype(np.float32)
    t /= t.sum(axis=-1, keepdims=True)
    xt, tt = Tensor(x, requires_grad=True), Tensor(t, requires_grad=True)
    loss = ops.categorical_crossentropy(tt, xt, from_logits=True)
    gx, gt = grad(ops.sum(loss), [xt, tt])
    tx, ttt = torch.from_numpy(x).requires_grad_(True), torch.from_numpy(t).requires_grad_(True)
    tl = -(ttt * torch.log_softmax(tx, -1)).sum(-1)
    tl.sum().backward()
    np.testing.assert_allclose(np.asarray(loss.data), tl.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(gx.data), tx.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.asarray(gt.data), ttt.grad.numpy(), rtol=1e-5, atol=1e-5)
    assert visits == ([True] if mode == "auto" else [])


def test_lstm_kernel_stands_aside_for_other_activations(compiled):
    calls = _count_calls(compiled, "lstm_cell_grad")
    x = R.standard_normal((3, 5, 4)).astype(np.float32)
    for layer in (layers.LSTM(4, activation="relu"), layers.LSTM(4, recurrent_activation="hard_sigmoid")):
        xt = Tensor(x, requires_grad=True)
        grad(layer(xt, training=True).sum(), [xt])
    assert calls == []


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kwargs", [dict(), dict(return_sequences=True), dict(go_backwards=True),
                                    dict(return_sequences=True, masked=True), dict(go_backwards=True, masked=True)])
def test_gru_backward_step_kernel_equals_numpy(compiled, dtype, kwargs):
    calls = _cell_kernel_equals_numpy(compiled, layers.GRU, "gru_cell_grad", dtype, kwargs)
    x = R.standard_normal((5, 7, 4)).astype(dtype)
    old_style = layers.GRU(6, reset_after=False)   # its candidate reads r * h: NumPy's passes
    xt = Tensor(x.astype(np.float32), requires_grad=True)
    grad(old_style(xt, training=True).sum(), [xt])
    assert calls == []


# ----------------------------------------------------------------------------- max pooling
# (shape, pool_size, strides, padding): windows tiling the input, the last row and column dropped (floor), gaps
# between windows, overlapping windows, 'same' padding (on the bottom and right, or on every side), a
# 1x1 pool, a 17x17 window (289 offsets: an int32 note)
_POOLS = [((3, 8, 8, 5), 2, None, "valid"), ((2, 7, 9, 4), 2, None, "valid"), ((2, 9, 9, 3), 2, 3, "valid"),
          ((3, 9, 8, 6), 3, 2, "valid"), ((2, 7, 6, 4), 3, 2, "same"), ((2, 5, 7, 3), (3, 2), 1, "same"),
          ((2, 6, 7, 2), (2, 3), (1, 2), "same"), ((2, 5, 5, 9), 1, 1, "valid"), ((1, 18, 18, 2), 17, 1, "valid"),
          ((2, 7, 7, 16), 2, None, "same")]


def _awkward(shape, dtype, seed, rare=1.0, ties=True):
    """Values of few kinds (many exact ties, 0.0 beside -0.0; normal ones unless ``ties``) sprinkled with NaN
    of both signs, inf and -inf (``rare`` times as often as by default)."""
    rng = np.random.default_rng(seed)
    x = (rng.integers(-3, 4, shape) / 2 if ties else rng.standard_normal(shape)).astype(dtype)
    u = rng.random(shape) / rare
    x[u < 0.04] = np.nan
    x[(u >= 0.04) & (u < 0.06)] = -np.nan
    x[(u >= 0.06) & (u < 0.12)] = -np.inf
    x[(u >= 0.12) & (u < 0.14)] = np.inf
    x[(u >= 0.14) & (u < 0.24)] = -0.0
    return x


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint32 if a.dtype == np.float32 else np.uint64)


def _same_bits(got, want, nan_sign=True):
    """Equal to the bit, -0.0 against 0.0 included. NaN: at the same places; with nan_sign the same NaN too.
    The sign of a zero is compared on x86-64 only, where NumPy's maximum of equal values is its second
    argument (as the kernel's; another machine's SIMD maximum may choose otherwise)."""
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    keep = ~np.isnan(want) if not nan_sign else np.ones(want.shape, bool)
    if platform.machine().lower() not in ("x86_64", "amd64"):
        keep &= want != 0
    np.testing.assert_array_equal(_bits(got)[keep], _bits(want)[keep])


def _pool_run(x, gy, pool, strides, padding, pool_fn=None):
    """(y, the note, dx) of max pooling x with the upstream gradient gy."""
    xt = Tensor(x, requires_grad=True)
    y = (pool_fn or (lambda t: ops.max_pool2d(t, pool, strides, padding)))(xt)
    note = y._op.saved.copy() if pool_fn is None else None
    (dx,) = grad(y, [xt], grad_output=Tensor(gy))
    return np.asarray(y.data), note, np.asarray(dx.data)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,pool,strides,padding", _POOLS)
def test_max_pool_kernels_equal_numpy(compiled, dtype, shape, pool, strides, padding):
    """Forward: the same maximum (NaN, -inf, the sign of a tied zero) and the same note (the first maximum in
    row-major window order, never a NaN) to the bit; backward: the same gradient to the bit, where windows
    overlap too (the kernel adds in NumPy's order; only which of two NaNs an addition keeps may differ)."""
    x = _awkward(shape, dtype, seed=sum(shape), rare=1 / 20 if pool == 17 else 1)   # some 17x17 windows without NaN
    gy = _awkward(ops.max_pool2d(x, pool, strides, padding).shape, dtype, seed=7, ties=False)   # sums that round
    forward, backward = _count_calls(compiled, "max_pool_rows"), _count_calls(compiled, "max_pool_rows_grad")
    with np.errstate(invalid="ignore"):   # inf * 0 in the gradient
        got, want = _both(compiled, lambda: _pool_run(x, gy, pool, strides, padding))
    assert len(forward) == len(backward) == 1   # the first run took the kernels, the second NumPy's code
    assert np.isnan(want[0]).any() and not np.isnan(want[0]).all() and (want[1].any() or pool == 1)
    _same_bits(got[0], want[0])
    assert got[1].dtype == want[1].dtype == (np.int32 if pool == 17 else np.uint8)
    np.testing.assert_array_equal(got[1], want[1])
    _same_bits(got[2], want[2], nan_sign=False)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,pool,strides,padding", _POOLS)
def test_max_pool_kernel_without_the_note_equals_numpy(compiled, dtype, shape, pool, strides, padding):
    """The forward pass alone (no gradient: no note, the maximum carried between two scratch rows): NumPy's
    maximum to the bit, NaN, infinities, padding and the sign of tied zeros included."""
    x = _awkward(shape, dtype, seed=sum(shape) + 1, rare=1 / 20 if pool == 17 else 1)
    forward = _count_calls(compiled, "max_pool_rows", lambda args: args[-1])

    def run():
        with lamina.no_grad():
            return np.asarray(ops.max_pool2d(Tensor(x), pool, strides, padding).data)
    got, want = _both(compiled, run)
    assert forward == [False]   # the kernel ran once, without the note
    assert np.isnan(want).any()
    _same_bits(got, want)


def test_max_pool_kernel_notes_the_first_maximum_and_skips_padding(compiled):
    """One channel by hand: ties go to the first offset, NaN wins the maximum but keeps the note where it was,
    a window starting in the 'same' padding notes its first real value unless that is -inf (then the padding's
    offset 0 stays noted, as in NumPy's code, and its gradient falls outside the input)."""
    x = np.array([[1.0, 1.0, -np.inf, 2.0],
                  [2.0, 2.0, -np.inf, -np.inf],
                  [0.0, np.nan, 3.0, np.nan],
                  [5.0, 3.0, 3.0, 4.0]], np.float32).reshape(1, 4, 4, 1)
    y, note = K.max_pool2d(x, (2, 2), (2, 2), ((0, 0), (0, 0)), True)
    np.testing.assert_array_equal(y[0, :, :, 0], [[2.0, 2.0], [np.nan, np.nan]])
    np.testing.assert_array_equal(note[0, :, :, 0], [[2, 1], [0, 0]])   # after a NaN, nothing is noted
    right = np.ascontiguousarray(x[:, :, 2:])
    y, note = K.max_pool2d(right, (3, 3), (2, 2), ((1, 1), (1, 0)), True)   # padded: (4, 2) -> (2, 1)
    np.testing.assert_array_equal(y[0, :, :, 0], [[2.0], [np.nan]])
    np.testing.assert_array_equal(note[0, :, :, 0], [[5], [4]])
    y, note = K.max_pool2d(np.full((1, 2, 2, 1), -np.inf, np.float32), (2, 2), (1, 1), ((1, 0), (1, 0)), True)
    np.testing.assert_array_equal(note[0, :, :, 0], [[0, 0], [0, 0]])
    dx = K.max_pool2d_grad(np.ones((1, 2, 2, 1), np.float32), note, (1, 2, 2, 1), (2, 2), (1, 1), ((1, 0), (1, 0)))
    np.testing.assert_array_equal(dx[0, :, :, 0], [[1, 0], [0, 0]])   # only the window starting inside


def test_max_pool_note_is_the_same_for_either_code(compiled):
    """The forward pass through the kernels and the backward through NumPy's code (the mode switched in
    between), and the other way round: the same gradient, since both write the same note."""
    x = _awkward((3, 9, 8, 6), np.float32, seed=3)
    gy = R.standard_normal((3, 5, 4, 6)).astype(np.float32)
    want = _pool_run(x, gy, 3, 2, "same")[2]
    for first, then in (("auto", "numpy"), ("numpy", "auto")):
        compiled.setitem(K._state, "mode", first)
        xt = Tensor(x, requires_grad=True)
        y = ops.max_pool2d(xt, 3, 2, "same")
        compiled.setitem(K._state, "mode", then)
        _same_bits(np.asarray(grad(y, [xt], grad_output=Tensor(gy))[0].data), want)


@pytest.mark.parametrize("case", [(2, None, "valid"), (3, 2, "same")])
def test_max_pool_split_over_threads_gives_the_same_bits(compiled, case):
    x = _awkward((7, 10, 9, 5), np.float32, seed=5)
    gy = R.standard_normal(ops.max_pool2d(x, *case).shape).astype(np.float32)
    results = []
    for width in (1, 2, 3):
        splits = _force_split(compiled, width)
        results.append(_pool_run(x, gy, *case))
        assert splits == ([width, width] if width > 1 else [])   # forward and backward
    for other in results[1:]:
        for a, b in zip(results[0], other):
            _same_bits(a, b) if a.dtype.kind == "f" else np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape,pool,strides,padding", [_POOLS[1], _POOLS[3], _POOLS[4], _POOLS[6]])
def test_max_pool_kernel_gradients_are_numerically_right(compiled, shape, pool, strides, padding):
    calls = _count_calls(compiled, "max_pool_rows_grad")
    x = np.random.default_rng(2).permutation(np.prod(shape)).reshape(shape) / 7.0   # distinct: no ties
    check_grad(lambda x: ops.max_pool2d(x, pool, strides, padding), x)
    assert calls


def test_max_pool_1d_and_keras_ops_take_the_kernels(compiled):
    """MaxPooling1D, ops.max_pool1d and ops.max_pool (1-D and 2-D) run MaxPool2D, so the kernels; 3-D
    pooling (nn_kernels.MaxPoolND) runs it over its depth slices, so the kernels too; channels-first input reaches
    MaxPool2D as a strided view (NumPy's code)."""
    calls = _count_calls(compiled, "max_pool_rows")
    x3, x4 = _awkward((3, 11, 4), np.float32, 1), _awkward((3, 8, 9, 4), np.float32, 2)
    runs = [lambda: layers.MaxPooling1D(3, 2, padding="same")(x3), lambda: ops.max_pool(x3, 2),
            lambda: ops.max_pool(x4, 3, 2, "same"), lambda: layers.MaxPooling2D()(x4)]
    for run in runs:
        got, want = _both(compiled, lambda: np.asarray(run().data))
        _same_bits(got, want)
    assert len(calls) == len(runs)
    ops.max_pool(x4[:, :, :, :, None], 2)
    assert len(calls) == len(runs) + 1
    layers.MaxPooling2D(data_format="channels_first")(x4)
    assert len(calls) == len(runs) + 1


def test_max_pool_kernels_stand_aside_where_they_should_not_run(monkeypatch):
    monkeypatch.setitem(K._state, "mode", "auto")
    monkeypatch.setitem(K._state, "pending", 0)
    geometry = ((2, 2), (2, 2), ((0, 0), (0, 0)))
    big = np.ones((8, 32, 32, 16), np.float32)
    assert K.max_pool2d(big, *geometry, True) is not None
    assert K.max_pool2d(big[:4, :16], *geometry, True) is None                          # small
    assert K.max_pool2d(big.transpose(0, 2, 1, 3), *geometry, True) is None              # strided
    assert K.max_pool2d(big.astype(np.float16), *geometry, True) is None                 # (MaxPool2D: float32)
    gy, note = np.ones((8, 16, 16, 16), np.float32), np.zeros((8, 16, 16, 16), np.uint8)
    assert K.max_pool2d_grad(gy, note, big.shape, *geometry) is not None
    assert K.max_pool2d_grad(gy, note[:, ::-1], big.shape, *geometry) is None            # strided note
    assert K.max_pool2d_grad(gy[:4], note[:4], big[:4].shape, *geometry) is not None     # the input's size decides
    monkeypatch.setitem(K._state, "mode", "numpy")
    assert K.max_pool2d(big, *geometry, True) is None


def test_max_pool_layer_trains_the_same_with_and_without_the_kernels(compiled):
    """A CNN's training step (Conv2D + ReLU, MaxPooling2D twice, the first overlapping with 'same' padding,
    Dense): the same loss and weights after it, either way (the other kernels' sums round differently)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((16, 12, 12, 3)).astype(np.float32)
    y = rng.integers(0, 3, 16)
    lamina.utils.set_random_seed(1)
    model = lamina.Sequential([layers.Input((12, 12, 3)), layers.Conv2D(8, 3, activation="relu"),
                               layers.MaxPooling2D(3, 2, padding="same"), layers.Conv2D(8, 3, activation="relu"),
                               layers.MaxPooling2D(), layers.Flatten(), layers.Dense(3)])
    model.compile(optimizer=lamina.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    start = model.get_weights()
    calls = _count_calls(compiled, "max_pool_rows_grad")

    def step():
        model.set_weights(start)
        loss = model.train_on_batch(x, y)
        return [np.asarray(loss)] + model.get_weights()
    got, want = _both(compiled, step)
    assert len(calls) == 2   # both pooling layers' backward, the first run only
    _close(got, want, np.float32)
    assert not np.allclose(got[1], start[0])   # the step did change the weights


# ----------------------------------------------------------------------------- attention's softmax
@pytest.mark.parametrize("factor", [1.0, 0.17677669])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 5, 7), (2, 3, 64, 64), (1, 1, 4), (4, 1, 1)])
@pytest.mark.parametrize("own_exp", [False, True])
def test_column_softmax_kernel_equals_numpy_with_nan_and_inf(compiled, dtype, shape, factor, own_exp):
    """The softmax down the columns (of the scores times a folded scale, where given) equals NumPy's max /
    subtract / multiply / exp / sum / divide bit for bit, NaN, +-inf and the most negative float (attention's
    masked score) included; with the kernels' own exp (float32 where NumPy's exp is scalar: OWN_EXP, here
    forced both ways) within a few float32 roundings of those values, NaN, zeros and ones where NumPy has them."""
    _force_own_exp(compiled, own_exp)
    exps = _count_calls(compiled, "exp_rows")
    x = (R.standard_normal(shape) * 30).astype(dtype)
    if shape[-2] > 2:   # below a column's first row (there a NaN would stay the maximum either way)
        lead = (0,) * (len(shape) - 2)
        x[lead + (2, 1)], x[lead + (1, 2)], x[lead + (2, 3)], x[lead + (1, 0)] = (np.nan, np.inf, -np.inf,
                                                                                   np.finfo(dtype).min)
    ours, theirs = x.copy(), x.copy()
    with np.errstate(all="ignore"):
        assert K.softmax_columns(ours, factor)
        theirs -= theirs.max(axis=-2, keepdims=True)
        theirs *= dtype(factor)
        np.exp(theirs, out=theirs)
        theirs /= theirs.sum(axis=-2, keepdims=True)
    assert len(exps) == (own_exp and dtype == np.float32)
    if not exps:
        np.testing.assert_array_equal(ours, theirs)
        return
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(theirs))
    np.testing.assert_array_equal(ours == 0, theirs == 0)
    np.testing.assert_array_equal(ours == 1, theirs == 1)
    ok = ~np.isnan(theirs)
    # exp within 3 ulps, the column sum and the division a few roundings more: 8 ulps of the value, at least
    # one subnormal step where it is that small
    step = np.maximum(np.spacing(np.abs(theirs[ok])), np.finfo(np.float32).smallest_subnormal)
    assert np.max(np.abs(ours[ok] - theirs[ok]) / step) <= 8


@pytest.mark.parametrize("own_exp", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_attention_takes_the_softmax_kernel_and_gives_numpys_values(compiled, masked, own_exp):
    """Scaled dot-product attention, split over threads or not, masked or not: the same output, weights and
    gradients with the kernel as with NumPy's code, and the kernel ran; with the kernels' own exp (OWN_EXP,
    forced) the same to float32's rounding."""
    _force_own_exp(compiled, own_exp)
    from lamina.ops.attention import scaled_dot_product_attention as sdpa
    q, k, v = (R.standard_normal((4, 2, 9, 5)).astype(np.float32) for _ in range(3))
    mask = R.random((4, 1, 9, 9)) > 0.3 if masked else None

    def run():
        ts = [Tensor(a, requires_grad=True) for a in (q, k, v)]
        out, w = sdpa(*ts, mask=mask, return_weights=True)
        gs = grad(ops.sum(out * out) + ops.sum(w), ts)
        return [np.asarray(out.data), np.asarray(w.data)] + [np.asarray(g.data) for g in gs]
    calls = _count_calls(compiled, "column_max_subtract")
    grad_calls = _count_calls(compiled, "column_softmax_grad")
    _force_split(compiled)
    fused, plain = _both(compiled, run)
    assert calls and grad_calls
    for a, b in zip(fused, plain):
        if own_exp:
            np.testing.assert_allclose(a, b, rtol=2e-6, atol=2e-6)
        else:
            np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- segment_sum
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(300, 5), (200,), (120, 3, 4)])
def test_segment_sum_takes_the_scatter_kernel_and_equals_numpy(compiled, dtype, shape):
    """ops.segment_sum through the embedding gradient's compiled scatter (rows of several values; single values
    through add.at over the flat table): NumPy's code's values (np.add.at) for ids in range, ids out of range
    dropped, empty segments 0, rows of any rank; its gradient as before."""
    data = R.standard_normal(shape).astype(dtype)
    ids = R.integers(-2, 42, shape[0])                     # some out of range on both sides
    calls = _count_calls(compiled, "scatter_rows")

    def run():
        t = Tensor(data, requires_grad=True)
        y = ops.segment_sum(t, ids, num_segments=40)
        (g,) = grad(ops.sum(y * y), [t])
        return [np.asarray(y.data), np.asarray(g.data)]
    got, want = _both(compiled, run)
    assert len(calls) == (1 if len(shape) > 1 else 0)
    assert got[0].shape == (40,) + shape[1:]
    _close(got, want, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("how", ["rows", "take_axis1", "slices_axis2", "negative", "take_axis0_of_1d"])
def test_gather_gradients_take_the_scatter_kernel_and_equal_numpy(compiled, dtype, how):
    """The gradient of a gather by one 1-D integer index (x[ids], x[:, ids], ops.take along an axis; repeated and
    negative ids) through the compiled scatter: NumPy's code's values (np.add.at), the kernel ran."""
    x = R.standard_normal((7, 9, 5) if how != "take_axis0_of_1d" else (40,)).astype(dtype)
    ids = R.integers(0, 7, 12)
    fn = {"rows": lambda t: t[ids],
          "take_axis1": lambda t: ops.take(t, np.array([8, 0, 8, 3, 3, 3, 3, 1]), axis=1),
          "slices_axis2": lambda t: t[:, :, np.array([4, 4, 0])],
          "negative": lambda t: t[np.array([-1, 0, -7, 6, -1])],
          "take_axis0_of_1d": lambda t: ops.take(t, np.array([39, 0, 39, 5]), axis=0)}[how]
    calls = _count_calls(compiled, "scatter_rows")

    def run():
        t = Tensor(x, requires_grad=True)
        y = fn(t)
        (g,) = grad(ops.sum(y * y), [t])
        return [np.asarray(y.data), np.asarray(g.data)]
    got, want = _both(compiled, run)
    assert len(calls) == 1
    _close(got, want, dtype)


@pytest.mark.parametrize("shape,k", [((30, 20, 8), 1), ((10, 12, 6), 2), ((50, 40), 2), ((100,), 1)])
def test_scatter_takes_flat_indices_and_equals_numpys_add_at(compiled, shape, k):
    """ops.scatter through one flat index over the first k axes (rows through the compiled scatter, single values
    through a 1-D add.at): np.add.at's values over the tuple of index arrays, to the bit, negative indices counted
    from the end; an index out of range still NumPy's IndexError; the gradient a gather."""
    n = 300
    idx = np.stack([R.integers(-s, s, n) for s in shape[:k]], -1)
    vals = R.standard_normal((n,) + shape[k:]).astype(np.float32)
    calls = _count_calls(compiled, "scatter_rows")
    got = np.asarray(ops.scatter(idx, vals, shape).data)
    want = np.zeros(shape, np.float32)
    np.add.at(want, tuple(idx[:, j] for j in range(k)), vals)
    np.testing.assert_array_equal(got, want)
    assert len(calls) == (1 if len(shape) > k else 0)
    with pytest.raises(IndexError):
        ops.scatter(np.array([[shape[0]] * k]), np.ones((1,) + shape[k:], np.float32), shape)
    v = Tensor(vals, requires_grad=True)
    gy = R.standard_normal(shape).astype(np.float32)
    (g,) = grad(ops.scatter(idx, v, shape), [v], grad_output=Tensor(gy))
    np.testing.assert_array_equal(np.asarray(g.data), gy[tuple(idx[:, j] for j in range(k))])


# ----------------------------------------------------------------------------- the embedding table's gradient
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("time_major", [False, True])
def test_embedding_scatter_kernel_equals_numpy(compiled, dtype, time_major):
    """The table's gradient from the compiled pass: the NumPy code's bits for ids seen up to three times
    (NaN, -0.0 and inf included), its values to rounding for ids seen more often (add.reduceat sums those in
    another order), zeros where no id looked; also for a gradient laid out time-major (a recurrent layer's)."""
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 40, (6, 9))
    ids[0, :8] = 3                                     # one id eight times: the rounding case
    gy = rng.standard_normal((6, 9, 5)).astype(dtype)
    gy[1, 2, 0], gy[2, 3, 1], gy[3, 4, 2] = np.nan, -0.0, np.inf
    if time_major:   # the same values in memory ordered (time, batch, features)
        gy = np.ascontiguousarray(gy.transpose(1, 0, 2)).transpose(1, 0, 2)
    calls = _count_calls(compiled, "scatter_rows")

    def table_grad():
        layer = layers.Embedding(40, 5, dtype=dtype)
        layer.build(ids.shape)
        out = layer(ids)
        return np.asarray(grad(out, layer.trainable_weights, grad_output=Tensor(gy))[0])
    fast, plain = _both(compiled, table_grad)
    assert len(calls) == 1
    counts = np.bincount(ids.reshape(-1), minlength=40)
    few = counts <= 3
    assert np.array_equal(_bits(fast[few]), _bits(plain[few])) and not fast[counts == 0].any()
    _close([fast], [plain], dtype)
    assert np.signbit(fast[ids[2, 3], 1]) == np.signbit(plain[ids[2, 3], 1])


def test_embedding_scatter_kernel_refuses_ids_outside_the_table(compiled):
    """ids changed in place after the forward pass cannot make the compiled pass write outside the table: it
    raises, as the NumPy code's indexing does."""
    ids = np.array([[1, 2, 3]])
    layer = layers.Embedding(4, 3)
    out = layer(ids)
    ids[0, 1] = 9
    with pytest.raises(IndexError):
        grad(out, layer.trainable_weights, grad_output=Tensor(np.ones(out.shape, "float32")))


def test_the_late_build_starts_once_whatever_the_threads(monkeypatch):
    """A deferring program's count towards LATE_ELEMENTS (kernels._built_now) is called from lamina's threads too
    (attention's parts): many threads passing the line together start one build, and none of them fails."""
    import threading
    import time

    class Yielding(dict):   # every read of the count lets another thread run: the race, made likely
        def __getitem__(self, key):
            if key == "late":
                time.sleep(0)
            return dict.__getitem__(self, key)
    calls, errors = [], []
    monkeypatch.setattr(K._aot, "build_now", lambda: calls.append(1) or False)
    monkeypatch.setattr(K, "_state", Yielding(K._state, late=5000))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)   # threads trade the GIL as often as they can

    def work():
        try:
            for _ in range(400):
                K._built_now(7)
        except Exception as e:   # (without the lock: None -= 7 in a thread that read the count before another ended it)
            errors.append(e)
    try:
        workers = [threading.Thread(target=work) for _ in range(6)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == [] and calls == [1] and K._state["late"] is None


def _prelu_grads(x, alpha, gy, want=(True, True)):
    """y, and the gradients ops.prelu gives of x and alpha (None where not asked for)."""
    xt, at = Tensor(x, requires_grad=want[0]), Tensor(alpha, requires_grad=want[1])
    y = ops.prelu(xt, at)
    asked = [t for t, w in zip((xt, at), want) if w]
    gs = iter(grad(y, asked, grad_output=Tensor(gy)))
    return [np.asarray(y.data)] + [np.asarray(next(gs).data) if w else None for w in want]


def _prelu_case(dtype, alpha_shape, shape=(4, 6, 20, 32)):
    x = R.standard_normal(shape).astype(dtype)
    x.reshape(-1)[:5] = (np.nan, np.inf, -np.inf, -0.0, 0.0)
    gy = R.standard_normal(shape).astype(dtype)
    gy.reshape(-1)[5:8] = (np.nan, np.inf, -np.inf)
    alpha = R.uniform(-0.5, 1.5, alpha_shape).astype(dtype)
    return x, alpha, gy


# alpha's shapes over a (4, 6, 20, 32) input: a slope an entry (Keras's default), one a channel (channels last:
# shared_axes [1, 2], the second axis folded into the rows; channels first: [2, 3]), shared over the second axis
# (folded), a plain (C,) vector
_PRELU_ALPHAS = [(6, 20, 32), (1, 1, 32), (6, 1, 1), (1, 20, 32), (32,)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("alpha_shape", _PRELU_ALPHAS)
def test_prelu_kernels_give_the_selects_bits(compiled, dtype, alpha_shape):
    """PReLU forward and input gradient in one compiled pass each: NumPy's select's values to the bit (NaN, the
    infinities and -0.0 among x and gy); the slopes' gradient (the sums of gy x where x > 0 is false, over the
    samples and the shared axes) within float rounding of a float64 sum, NaN where a NaN or inf * 0 falls in its
    sum, as NumPy's code."""
    calls = {k: _count_calls(compiled, k) for k in ("prelu_rows", "prelu_grad_rows")}
    x, alpha, gy = _prelu_case(dtype, alpha_shape)
    with np.errstate(invalid="ignore"):   # (inf - inf in a slope's sum)
        got, want = _both(compiled, lambda: _prelu_grads(x, alpha, gy))
    assert calls["prelu_rows"] and calls["prelu_grad_rows"]
    for u, v in zip(got[:2], want[:2]):
        nan = np.isnan(v)
        np.testing.assert_array_equal(np.isnan(u), nan)
        _bits_equal([u[~nan]], [v[~nan]])
    with np.errstate(invalid="ignore"):
        terms = np.where(x > 0, 0.0, gy.astype(np.float64) * x)
    ref = terms.reshape((-1,) + alpha.shape).sum(axis=0) if alpha.ndim < 3 else terms.sum(
        axis=(0,) + tuple(i + 1 for i, n in enumerate(alpha_shape) if n == 1)).reshape(alpha_shape)
    assert got[2].shape == want[2].shape == alpha.shape and got[2].dtype == dtype
    np.testing.assert_array_equal(np.isnan(got[2]), np.isnan(want[2]))
    np.testing.assert_allclose(got[2], ref, rtol=2e-5 if dtype == np.float32 else 1e-12, atol=1e-5)
    assert np.isnan(got[2]).any() and not np.isnan(got[2]).all()


@pytest.mark.parametrize("want", [(True, False), (False, True)])
def test_prelu_kernels_split_over_threads_and_one_gradient(compiled, want):
    """The columns split over three threads: the same bits as one thread, the slopes' sums too (each column's sum
    in row order whichever thread takes it); only the gradient asked for is made (a frozen alpha, an input that
    needs none)."""
    x, alpha, gy = _prelu_case(np.float32, (6, 20, 32), shape=(30, 6, 20, 32))
    one = _prelu_grads(x, alpha, gy, want)
    splits = _force_split(compiled, 3)
    three = _prelu_grads(x, alpha, gy, want)
    assert splits and all(n == 3 for n in splits)
    both = _prelu_grads(x, alpha, gy)
    for u, v, w, asked in zip(one, three, both, (True,) + want):
        assert (u is None) == (v is None) == (not asked)
        if asked:
            _bits_equal([u], [v])
            np.testing.assert_array_equal(u.view(np.uint8), w.view(np.uint8))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fn,shape", [(lambda t: ops.max(t, axis=(1, 2)), (6, 7, 9, 16)),
                                      (lambda t: ops.min(t, axis=1, keepdims=True), (5, 40, 24)),
                                      (lambda t: layers.GlobalMaxPooling1D()(t), (30, 50, 16))])
def test_extreme_gradient_kernel_gives_numpys_bits(compiled, dtype, fn, shape):
    """The gradient of a maximum or minimum over a middle run of axes (global max pooling) in two compiled passes:
    NumPy's code's bits, ties sharing gy equally (rounded values repeat within a window), a NaN's window NaN, -0.0
    equal to 0.0, infinite and NaN gy among the values; the same on three threads."""
    calls = _count_calls(compiled, "extreme_grad_rows")
    x = np.round(R.standard_normal(shape) * 2).astype(dtype)   # (many ties)
    flat = x.reshape(-1)
    flat[:4] = (np.nan, np.inf, -np.inf, -0.0)
    gy = R.standard_normal(np.asarray(fn(Tensor(x)).data).shape).astype(dtype)
    gy.reshape(-1)[4:7] = (np.inf, -np.inf, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        got, want = _both(compiled, lambda: _fn_and_grad(fn, x, gy))
        assert calls
        _force_split(compiled, 3)
        split = _fn_and_grad(fn, x, gy)
    for u, v, w in zip(got, want, split):
        nan = np.isnan(v)
        assert nan.any() and not nan.all()
        np.testing.assert_array_equal(np.isnan(u), nan)
        np.testing.assert_array_equal(np.isnan(w), nan)
        _bits_equal([u[~nan]], [v[~nan]])
        _bits_equal([w[~nan]], [v[~nan]])
    assert len(calls) > 1


_DIFF_LOSSES = [(ops.mean_squared_error, "mse"), (ops.mean_absolute_error, "mae"),
                (lambda t, p: ops.huber(t, p, 0.7), "huber")]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fn,name", _DIFF_LOSSES)
@pytest.mark.parametrize("shape,rows_differ", [((300, 17), False), ((5, 6, 40), True)])
def test_diff_loss_kernels_equal_numpy(compiled, dtype, fn, name, shape, rows_differ):
    """Mean squared, mean absolute and Huber losses through one compiled pass each way (the difference never
    stored): the per-row losses within rounding of NumPy's code's (sums in another order), the gradients of both
    inputs its bits (the same products), NaN and inf among the values and |d| at Huber's delta; with one factor for
    all rows (a batch mean) and a factor a row; the same bits on three threads."""
    calls = {k: _count_calls(compiled, k) for k in ("diff_loss_rows", "diff_loss_grad_rows")}
    p = (R.standard_normal(shape) * 2).astype(dtype)
    t = R.standard_normal(shape).astype(dtype)
    p.reshape(-1)[:4] = (np.nan, np.inf, 0.5, -0.0)
    t.reshape(-1)[2:5] = (0.5 - 0.7, 0.0, 1.0)   # d = 0.7 exactly at Huber's delta (float64), d = -0.0
    gy = R.standard_normal(shape[:-1]).astype(dtype) if rows_differ else np.full(shape[:-1], 0.25, dtype)

    def run():
        pt, tt = Tensor(p, requires_grad=True), Tensor(t, requires_grad=True)
        y = fn(tt, pt)
        return [np.asarray(y.data)] + [np.asarray(g.data) for g in grad(y, [pt, tt], grad_output=Tensor(gy))]
    with np.errstate(invalid="ignore"):
        got, want = _both(compiled, run)
        assert calls["diff_loss_rows"] == [1] and calls["diff_loss_grad_rows"] == [1]
        nan = np.isnan(want[0])
        assert nan.any() and not nan.all()
        np.testing.assert_array_equal(np.isnan(got[0]), nan)
        np.testing.assert_allclose(got[0][~nan], want[0][~nan], rtol=1e-6 if dtype == np.float32 else 1e-14)
        for u, v in zip(got[1:], want[1:]):
            np.testing.assert_array_equal(np.isnan(u), np.isnan(v))
            _bits_equal([u[~np.isnan(v)]], [v[~np.isnan(v)]])
        _force_split(compiled, 3)
        split = run()
    for u, v in zip(split, got):
        _bits_equal([u], [v])


def test_the_row_softmax_takes_its_kernel_from_fewer_values_than_the_others(monkeypatch):
    """kernels.SOFTMAX_MIN_ELEMENTS (4096) below MIN_ELEMENTS: a (64, 64) softmax or sparse cross-entropy visits
    its rows in one compiled call at the default thresholds, a classifier's (32, 10) keeps NumPy's code (its calls'
    own cost: no gain there), and the values agree either way."""
    monkeypatch.setitem(K._state, "mode", "auto")
    monkeypatch.setitem(K._state, "pending", 0)
    assert K.SOFTMAX_MIN_ELEMENTS == 1 << 12 < K.MIN_ELEMENTS
    visits = _count_calls(monkeypatch, "exp_rows")
    for shape, compiled in (((64, 64), True), ((32, 10), False), ((40, 100), False), ((41, 100), True)):
        x = R.standard_normal(shape).astype(np.float32)
        del visits[:]
        y = ops.softmax(Tensor(x)).numpy()
        loss = ops.sparse_categorical_crossentropy(R.integers(0, shape[1], shape[0]), Tensor(x), from_logits=True)
        assert len(visits) == 2 * compiled, shape
        e = np.exp(x.astype(np.float64) - x.max(axis=1, keepdims=True))
        np.testing.assert_allclose(y, e / e.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-7)
        assert np.isfinite(loss.numpy()).all()
