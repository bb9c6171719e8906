"""lamina/ops/cuda_kernels.py: the fused CUDA source compiles and exports every kernel the module launches.

NVRTC compiles CUDA C++ without a GPU, so this runs wherever CuPy's NVRTC binding and the NVRTC library are
installed (``pip install cupy-cuda13x nvidia-cuda-nvrtc``), and is skipped elsewhere (CI, which has no CuPy).
The kernels' values are checked against the CPU on a real GPU by tests/test_device.py.
"""
import re

import numpy as np
import pytest

from lamina.ops import cuda_kernels


def _ptx():
    try:
        from cupy_backends.cuda.libs import nvrtc
        nvrtc.getVersion()
    except Exception as e:  # no CuPy, or no NVRTC library
        pytest.skip(f"NVRTC is not available: {e}")
    prog = nvrtc.createProgram(cuda_kernels.SOURCE, "lamina_kernels.cu", [], [])
    try:
        nvrtc.compileProgram(prog, ["-arch=compute_90"])
    except Exception:
        pytest.fail("the CUDA source does not compile:\n" + nvrtc.getProgramLog(prog))
    ptx = nvrtc.getPTX(prog)
    return ptx.decode() if isinstance(ptx, bytes) else ptx


def _entries(ptx):
    """{kernel name: its PTX body} of the compiled module's entry points."""
    starts = [(m.group(1), m.start()) for m in re.finditer(r"\.entry (\w+)\(", ptx)]
    ends = [at for _, at in starts[1:]] + [len(ptx)]
    return {name: ptx[at:end] for (name, at), end in zip(starts, ends)}


def test_the_source_compiles_with_an_entry_for_every_kernel_launched():
    entries = _entries(_ptx())
    assert set(cuda_kernels.NAMES) <= set(entries), sorted(set(cuda_kernels.NAMES) - set(entries))
    launched = set(re.findall(r'_kernel\(xp, "(\w+)"\)', open(cuda_kernels.__file__).read()))
    launched |= {p + s for p in re.findall(r'_kernel\(xp, "(\w+_)" \+', open(cuda_kernels.__file__).read())
                 for s in ("f32", "f64")}
    assert launched <= set(cuda_kernels.NAMES), sorted(launched - set(cuda_kernels.NAMES))


def test_the_float32_kernels_do_no_float64_arithmetic():
    """exp, tanh, log and sqrt of a float take the float overloads (a double call would halve the throughput
    and round differently from the float32 arithmetic the CPU path does)."""
    for name, body in _entries(_ptx()).items():
        if name.endswith("_f32"):
            assert ".f64" not in body, name


def test_the_kernels_stand_aside_for_numpy_arrays():
    a = np.ones((4, 8), np.float32)
    assert cuda_kernels.row_softmax(a) is None
    assert cuda_kernels.adam_update(a, a, a.copy(), a.copy(), 0.9, 0.999, 1e-7, 1e-3) is False
    assert cuda_kernels.lstm_cell(np.ones((2, 4, 3, 5), np.float32)) is None
    assert cuda_kernels.lstm_cell_grad(np.ones((2, 4, 3, 5), np.float32)) is None
    assert cuda_kernels.labels_out_of_range(np.zeros(3, np.int64), 4) is None
    assert cuda_kernels.sce_loss(a, np.zeros(4, np.int64), a[:, 0].copy(), a[:, 0].copy()) is None
    assert cuda_kernels.sce_grad(a, np.zeros(4, np.int64), a[:, 0].copy()) is None
    assert cuda_kernels.scatter_rows(np.zeros(4, np.int64), a, 3) is None


def test_the_environment_switches_them_off(monkeypatch):
    assert cuda_kernels.enabled()
    for off in ("0", "off", "false"):
        monkeypatch.setenv("LAMINA_CUDA_KERNELS", off)
        assert not cuda_kernels.enabled()


def test_every_kernel_has_a_signature_and_a_numpy_model():
    """tests/cuda_models.py parses each kernel's CUDA signature (to check every launch's arguments on the CPU
    stand-in) and models each kernel in NumPy: both must cover every kernel the module exports."""
    import cuda_models

    sigs = cuda_models.signatures()
    assert set(sigs) == set(cuda_kernels.NAMES)
    for name in sigs:
        assert callable(cuda_models.model_of(name)), name
        params = [p for p, _, _ in sigs[name]]
        model = cuda_models.model_of(name).__code__
        assert list(model.co_varnames[:model.co_argcount]) == params, f"{name}: the model's parameters"
