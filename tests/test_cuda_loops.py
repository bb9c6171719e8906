"""The LSTM's GPU time loops (cuda_kernels.lstm_forward_loop / lstm_backward_loop) without a GPU.

Those loops hand cuBLAS and the cell kernels raw device addresses, leading dimensions and strides computed from
the op's time-major buffers. Here they run over NumPy memory: the stand-in for CuPy (tests/fake_cupy.py) holds
the arrays, an address is the NumPy buffer's, and the NumPy models of SGEMM and of the CUDA kernels
(tests/cuda_models.py) read and write through those addresses as the device would. The LSTM op's results
(outputs, last states, every gradient) must then equal the CPU's: that checks the address arithmetic, the
column-major SGEMM arguments, the step order (forward, go_backwards) and the handling of the sequence output's
gradient. The kernels' own arithmetic is checked against the CPU on a real GPU (tests/test_device.py).
"""
import sys

import numpy as np
import pytest

from lamina import backend, ops
from lamina.ops import cuda_kernels
from lamina.tensor import Tensor

import cuda_models
import fake_cupy


@pytest.fixture
def loops_on_host_memory(monkeypatch):
    """lamina's 'cuda' device on the stand-in, with cuda_kernels' launches and SGEMM calls running on the NumPy
    models of tests/cuda_models.py; yields the list of kernel names launched."""
    module = fake_cupy.make_module()
    monkeypatch.setitem(sys.modules, "cupy", module)
    launched = cuda_models.install(monkeypatch, module)
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
