"""The LSTM's GPU time loops (cuda_kernels.lstm_forward_loop / lstm_backward_loop) without a GPU.

Those loops hand cuBLAS and the cell kernels raw device addresses, leading dimensions and strides computed from
the op's time-major buffers. Here they run over NumPy memory: the stand-in for CuPy (tests/fake_cupy.py) holds
the arrays, an address is the NumPy buffer's, and Python models of SGEMM and of the two CUDA kernels read and
write through those addresses as the device would. The LSTM op's results (outputs, last states, every
gradient) must then equal the CPU's: that checks the address arithmetic, the column-major SGEMM arguments, the
step order (forward, go_backwards) and the handling of the sequence output's gradient. The kernels' own
arithmetic is checked against the CPU on a real GPU (tests/test_device.py).
"""
import ctypes

import numpy as np
import pytest

from lamina import backend, ops
from lamina.ops import cuda_kernels
from lamina.tensor import Tensor

import fake_cupy


def _mem(addr, count):
    """count float32 values at a host address, as a writable NumPy array (no copy)."""
    return np.ctypeslib.as_array((ctypes.c_float * count).from_address(int(addr)))


def _addr(a):
    return a._a.ctypes.data if isinstance(a, fake_cupy.ndarray) else int(a)


def _sgemm(handle, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc):
    """cublasSgemm, column-major, no transposes: C (m, n) = alpha A (m, k) B (k, n) + beta C."""
    assert (transa, transb) == (0, 0) and lda >= m and ldb >= k and ldc >= m
    a = _mem(A, (k - 1) * lda + m)
    b = _mem(B, (n - 1) * ldb + k)
    c = _mem(C, (n - 1) * ldc + m)
    col = lambda v, rows, cols, ld: np.lib.stride_tricks.as_strided(v, (rows, cols), (4, 4 * ld))  # noqa: E731
    out = col(c, m, n, ldc)
    out[...] = _mem(alpha, 1)[0] * (col(a, m, k, lda) @ col(b, k, n, ldb)) + _mem(beta, 1)[0] * out


def _lstm_cell(grid, block, args):
    rec, xw, b, has_bias, cp, g, c, tc, h, n, u = args
    n, u = int(n), int(u)
    z = _mem(_addr(rec), n * 4 * u).reshape(n, 4 * u)
    if has_bias:
        z = z + _mem(_addr(b), 4 * u)
    z = (z + _mem(_addr(xw), n * 4 * u).reshape(n, 4 * u)).reshape(n, 4, u).transpose(1, 0, 2)
    gates = _mem(_addr(g), 4 * n * u).reshape(4, n, u)
    gates[:3] = 1 / (1 + np.exp(-z[:3]))
    gates[3] = np.tanh(z[3])
    cell = _mem(_addr(c), n * u).reshape(n, u)
    cell[...] = gates[1] * _mem(_addr(cp), n * u).reshape(n, u) + gates[0] * gates[3]
    t = _mem(_addr(tc), n * u).reshape(n, u)
    t[...] = np.tanh(cell)
    _mem(_addr(h), n * u).reshape(n, u)[...] = gates[2] * t


def _lstm_step_grad(grid, block, args):
    dh, gh, gh_stride, has_gh, dc, g, tc, cp, dz, dc_prev, n, u = args
    n, u = int(n), int(u)
    h = _mem(_addr(dh), n * u).reshape(n, u).copy()
    if has_gh:
        h += np.lib.stride_tricks.as_strided(_mem(_addr(gh), (n - 1) * int(gh_stride) + u), (n, u),
                                             (4 * int(gh_stride), 4))
    i, f, o, gg = _mem(_addr(g), 4 * n * u).reshape(4, n, u)
    t = _mem(_addr(tc), n * u).reshape(n, u)
    d = (1 - t * t) * o * h + _mem(_addr(dc), n * u).reshape(n, u)
    z = _mem(_addr(dz), n * 4 * u).reshape(n, 4, u)
    z[:, 0] = d * gg * ((1 - i) * i)
    z[:, 1] = d * _mem(_addr(cp), n * u).reshape(n, u) * ((1 - f) * f)
    z[:, 2] = h * t * ((1 - o) * o)
    z[:, 3] = d * i * (1 - gg * gg)
    _mem(_addr(dc_prev), n * u).reshape(n, u)[...] = d * f


@pytest.fixture
def loops_on_host_memory(monkeypatch):
    """lamina's 'cuda' device on the stand-in, with cuda_kernels' LSTM loops running on the models above; yields
    the list of kernel names launched."""
    module = fake_cupy.make_module()
    monkeypatch.setitem(__import__("sys").modules, "cupy", module)
    launched = []
    models = {"lstm_cell_f32": _lstm_cell, "lstm_step_grad_f32": _lstm_step_grad}

    def kernel(xp, name):   # (the per-step cells are asked for too, and must not run: no model for theirs)
        def launch(grid, block, args):
            launched.append(name)
            return models[name](grid, block, args)
        return launch
    monkeypatch.setattr(cuda_kernels, "_cupy_of", lambda *a: module if all(
        isinstance(x, fake_cupy.ndarray) for x in a) else None)
    monkeypatch.setattr(cuda_kernels, "_kernel", kernel)
    monkeypatch.setattr(cuda_kernels, "_addr", _addr)
    scalars = np.array([1.0, 0.0], np.float32)
    monkeypatch.setattr(cuda_kernels, "_sgemm", lambda xp: (None, _sgemm, scalars, scalars.ctypes.data,
                                                            scalars.ctypes.data + 4))
    backend.set_device("cuda")
    try:
        yield launched
    finally:
        backend.set_device("cpu")


def _lstm(xp, arrays, go_backwards, sequences, state):
    x, k, rk, b, h0, c0 = [Tensor(backend.to_device(a, xp), requires_grad=True) if a is not None else None
                           for a in arrays]
    seq, h, c = ops.lstm(x, k, rk, b, initial_state=(h0, c0) if state else None, go_backwards=go_backwards)
    rng = np.random.default_rng(7)
    loss = (h * backend.to_device(rng.standard_normal(h.shape).astype(np.float32), xp)).sum() + (c * 0.5).sum()
    if sequences:
        loss = loss + (seq * backend.to_device(rng.standard_normal(seq.shape).astype(np.float32), xp)).sum()
    loss.backward()
    leaves = [t for t in (x, k, rk, b, h0, c0) if t is not None]
    return [backend.to_numpy(a.data) for a in (seq, h, c)] + [backend.to_numpy(t.grad) for t in leaves]


@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("sequences", [False, True])
@pytest.mark.parametrize("bias_and_state", [False, True])
def test_the_gpu_lstm_loops_address_what_the_cpu_computes(loops_on_host_memory, go_backwards, sequences,
                                                          bias_and_state):
    rng = np.random.default_rng(0)
    n, t, d, u = 3, 5, 4, 6
    f = lambda *s: (rng.standard_normal(s) * 0.5).astype(np.float32)  # noqa: E731
    arrays = [f(n, t, d), f(d, 4 * u), f(u, 4 * u), f(4 * u) if bias_and_state else None,
              f(n, u) if bias_and_state else None, f(n, u) if bias_and_state else None]
    got = _lstm(backend.device_module(), arrays, go_backwards, sequences, bias_and_state)
    # one launch of each kernel a step (the per-step cell of the backward loop would have raised KeyError)
    assert loops_on_host_memory == ["lstm_cell_f32"] * t + ["lstm_step_grad_f32"] * t
    backend.set_device("cpu")
    want = _lstm(np, arrays, go_backwards, sequences, bias_and_state)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_the_loops_stand_aside_without_the_device(loops_on_host_memory):
    """NumPy arrays, or a buffer not laid out time-major: the loops decline (False / None), nothing written."""
    g = np.zeros((2, 4, 3, 5), np.float32)
    assert cuda_kernels.lstm_forward_loop(g, g, None, g, g, g, g, g, g, range(2)) is False
    assert cuda_kernels.lstm_backward_loop(g, g, None, g, g, g, g, g, range(2), None) is None
    xp = backend.device_module()
    gates = xp.zeros((2, 4, 3, 5), np.float32)
    batch_major = xp.zeros((3, 2, 5), np.float32)   # (N, T, u) laid out batch-major: [:, t] is strided
    assert cuda_kernels.lstm_forward_loop(xp.zeros((6, 20), np.float32), xp.zeros((5, 20), np.float32), None, gates,
                                          *[batch_major] * 5, range(2)) is False
    assert loops_on_host_memory == []
