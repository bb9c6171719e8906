"""lamina.ops.kernels_aot: the compiled kernels built ahead of time. The built modules give numba's in-process
kernels' values to the bit, every call lamina makes reaches them (none falls back), any argument they were not
built for goes to numba instead of reading memory as the wrong type, a program with them built never imports
numba and runs them from its first eligible call, a module built from other loops or for another CPU is never
loaded, a damaged one is reported and replaced by numba's compilation, and ``lamina kernels`` builds and reports."""
import os
import subprocess
import sys

import numpy as np
import pytest

import lamina
from lamina import Tensor, grad, layers, ops
from lamina.ops import kernel_loops, kernels_aot
from lamina.ops import kernels as K

pytest.importorskip("numba")   # in the test extra: builds and compares with numba's in-process kernels
sys.path.insert(0, os.path.dirname(__file__))
import kernel_cases  # noqa: E402  (tests/kernel_cases.py)


@pytest.fixture(scope="module")
def built():
    """The kernels from the built modules (tests/warm_caches.py builds them before an xdist run's workers
    start; a run without it builds them here, ~20 s)."""
    if kernels_aot.module_paths() is None:
        kernels_aot.build()
    loaded = kernels_aot.load(K._fallback)
    assert loaded is not None
    return loaded


@pytest.fixture
def fallbacks(monkeypatch):
    """The calls the guards hand to numba, by kernel, for this test alone."""
    counts = {}
    monkeypatch.setitem(K._state, "fallbacks", counts)
    return counts


def test_the_signatures_cover_every_loop_and_each_kernel_is_in_one_part():
    loops = sorted(n for n, f in vars(kernel_loops).items() if callable(f) and f.__module__ == kernel_loops.__name__)
    assert sorted(kernels_aot.SIGNATURES) == loops
    listed = [n for part in kernels_aot.PARTS for n in part]
    assert sorted(listed) == loops and len(set(listed)) == len(listed)
    assert sorted(kernel_cases.cases(np.float32)) == loops


def test_built_kernels_give_numbas_in_process_values_to_the_bit(built, fallbacks):
    """The same loops with the same options (fastmath where the JIT has it, none where it has none, NaN rules):
    every kernel, every case, every array written compared byte for byte. float32 only: the loops are the same
    for float64, whose built exports tests/test_kernels.py compares with NumPy's code (numba compiling them all
    again in-process would cost a fresh clone's run ~9 s more)."""
    jit = K._jit()
    dtype = np.float32
    ours, theirs = kernel_cases.cases(dtype), kernel_cases.cases(dtype)
    for name in ours:
        for mine, other in zip(ours[name], theirs[name]):
            getattr(built, name)(*mine)
            getattr(jit, name)(*other)
            for i, (p, q) in enumerate(zip(mine, other)):
                if isinstance(p, np.ndarray):
                    assert p.tobytes() == q.tobytes(), f"{name}, argument {i}, {np.dtype(dtype).name}"
    assert fallbacks == {}


def test_the_built_fastmath_kernels_do_reassociate(built):
    """The fastmath options reach the build: a row sum of float32 values in the built LayerNorm rounds as the
    JIT's vectorised sum does, not as a sequential one (the values chosen so that the two differ)."""
    x = np.float32([1e8] + [1.0] * 31 + [-1e8]).reshape(1, -1) * np.float32(1.0)
    seq = np.float32(0)
    for v in x[0]:
        seq = np.float32(seq + v)
    mean, inv, y = np.empty(1, np.float32), np.empty(1, np.float32), np.empty_like(x)
    built.layer_norm_rows(x, x[0], x[0], False, False, np.float32(1e-3), y, mean, inv)
    mean_jit = np.empty(1, np.float32)
    K._jit().layer_norm_rows(x, x[0], x[0], False, False, np.float32(1e-3), y.copy(), mean_jit, inv.copy())
    assert mean[0] == mean_jit[0]
    assert mean[0] != seq / np.float32(x.shape[1])   # reassociated: not the left-to-right sum


def test_every_call_lamina_makes_reaches_the_built_kernels(built, fallbacks, monkeypatch):
    """Each layer and optimizer that has a kernel, forward and backward, float32 and float64, with the kernels
    on for any size: every kernel called, none of its calls handed to numba (so lamina's arguments are the
    ones the modules were built for)."""
    monkeypatch.setattr(K, "MIN_ELEMENTS", 0)
    monkeypatch.setitem(K._state, "mode", "auto")
    monkeypatch.setitem(K._state, "pending", 0)
    monkeypatch.setitem(K._state, "kernels", built)
    called = set()
    for name in kernels_aot.SIGNATURES:
        real = getattr(built, name)
        monkeypatch.setattr(built, name, lambda *a, _n=name, _r=real: (called.add(_n), _r(*a))[1])
    rng = np.random.default_rng(0)
    for dtype in ("float32", "float64"):
        def x(*shape):
            return rng.standard_normal(shape).astype(dtype)

        def run(fn, inp, weights=()):
            xt = Tensor(inp, requires_grad=True)
            y = fn(xt)
            grad(y, [xt] + list(weights), grad_output=Tensor(np.ones(y.shape, dtype)))
        run(lambda t: ops.max_pool2d(t, 2, 2, "valid"), x(2, 4, 4, 3))
        run(lambda t: ops.max_pool2d(t, 17, 1, "valid"), x(1, 17, 17, 2))
        for layer, inp in ((layers.LayerNormalization(dtype=dtype), x(3, 8)),
                           (layers.Dense(4, activation="relu", dtype=dtype), x(3, 5)),
                           (layers.Conv2D(4, 3, dtype=dtype), x(2, 6, 6, 10)),
                           (layers.LSTM(3, dtype=dtype), x(2, 3, 4)),
                           (layers.GRU(3, dtype=dtype), x(2, 3, 4))):
            layer(inp)
            run(layer, inp, layer.trainable_weights)
        attention = layers.MultiHeadAttention(num_heads=2, key_dim=3, dtype=dtype)
        run(lambda t: attention(t, t), x(2, 4, 5), [])
        table = layers.Embedding(7, 4, dtype=dtype)
        out = table(np.array([[1, 2, 1]]))
        grad(out, table.trainable_weights, grad_output=Tensor(np.ones(out.shape, dtype)))
        lamina.optimizers.Adam().apply([x(6)], [lamina.Variable(x(6), dtype=dtype)])
    assert called == set(kernels_aot.SIGNATURES)
    assert fallbacks == {}


def _bad_calls():
    """(kernel, arguments) that no export takes: another dtype beside float32, a strided array, another rank,
    a byte-swapped dtype, a list, None, an integer where a bool is declared, a float where an integer is."""
    f = np.float32
    n, d = 8, 4
    good = (np.ones((n, d), f), np.ones(d, f), np.ones(d, f), True, True, f(1e-3), np.ones((n, d), f),
            np.ones(n, f), np.ones(n, f))
    bad = []
    for i, value in ((0, np.ones((n, d), np.float64)), (6, np.ones((n, 2 * d), f)[:, ::2]), (7, np.ones((n, 1), f)),
                     (1, np.ones(d, ">f4")), (2, [1.0] * d), (1, None), (3, 1)):
        args = list(good)
        args[i] = value
        bad.append(("layer_norm_rows", tuple(args)))
    pool = (np.ones((1, 4, 4, 2), f), 2, 2, 2, 2, 0, 0, np.ones((1, 2, 2, 2), f), np.zeros((1, 2, 2, 2), np.uint8),
            True)
    for i, value in ((8, np.zeros((1, 2, 2, 2), np.int64)), (1, 2.0)):
        args = list(pool)
        args[i] = value
        bad.append(("max_pool_rows", tuple(args)))
    bad.append(("scatter_rows", (np.zeros(3, np.int32), np.ones((3, 2), f), np.ones((4, 2), f))))
    bad.append(("bias_relu_rows", (np.ones((n, d), f),)))   # one argument short
    return bad


@pytest.mark.parametrize("case", range(len(_bad_calls())))
def test_arguments_no_export_takes_go_to_numba_not_to_the_built_code(built, monkeypatch, case):
    """The exports check nothing (they would read a float64 array as float32 values, or run past a strided
    view's end): the guard hands such calls to numba's in-process kernel, which compiles for what it gets."""
    name, args = _bad_calls()[case]
    handed = []
    monkeypatch.setattr(K, "_jit", lambda: None)
    guarded = kernels_aot._guard(name, kernels_aot.SIGNATURES[name][1], _refusing_exports(name),
                                 lambda n: (handed.append(n), lambda *a: "numba")[1])
    assert guarded(*args) == "numba" and handed == [name]


def _refusing_exports(name):
    def refuse(*args):
        raise AssertionError("an export was called with arguments it was not built for")
    return {tag: refuse for tag, _ in kernels_aot._variants(kernels_aot.SIGNATURES[name][1])}


def test_without_numba_an_argument_no_export_takes_is_a_clear_error(built, monkeypatch):
    monkeypatch.setattr(K, "_jit", lambda: None)
    with pytest.raises(TypeError, match="layer_norm_rows.*numba"):
        K._fallback("layer_norm_rows")
    with pytest.raises(TypeError, match="bias_relu_rows"):   # one argument short
        built.bias_relu_rows(np.ones((8, 4), np.float32))


def test_an_id_outside_the_table_raises_through_the_built_module(built):
    out = np.zeros((4, 2), np.float32)
    with pytest.raises(IndexError, match="outside the table"):
        built.scatter_rows(np.array([0, 9, 1]), np.ones((3, 2), np.float32), out)


def test_a_module_for_other_loops_or_another_cpu_has_another_name(monkeypatch):
    """The file name's digest covers what the code depends on, so a stale or foreign module is never found."""
    names = {kernels_aot.module_name(0)}
    for patch in (lambda: monkeypatch.setattr(kernels_aot, "_cpu_features", lambda: "SSE2"),
                  lambda: monkeypatch.setattr(np, "__version__", "0.0.0"),
                  lambda: monkeypatch.setitem(kernels_aot.SIGNATURES, "layer_norm_rows",
                                                (True, kernels_aot.SIGNATURES["layer_norm_rows"][1])),
                  lambda: monkeypatch.setattr(kernels_aot.inspect, "getsource", lambda m: "def other(): pass"),
                  lambda: monkeypatch.setattr(kernels_aot, "FASTMATH", frozenset({"reassoc"}))):
        patch()
        names.add(kernels_aot.module_name(0))
        monkeypatch.undo()
    assert len(names) == 6 and kernels_aot.module_name(0) != kernels_aot.module_name(1)


def test_a_damaged_module_is_reported_and_numba_compiles_instead(tmp_path, monkeypatch):
    for part in range(len(kernels_aot.PARTS)):
        name = kernels_aot.module_name(part) + kernels_aot.importlib.machinery.EXTENSION_SUFFIXES[0]
        (tmp_path / name).write_bytes(b"\x7fELF not really a shared object")
    monkeypatch.setattr(kernels_aot, "_directories", lambda: [str(tmp_path)])
    monkeypatch.setitem(K._state, "kernels", None)
    with pytest.warns(RuntimeWarning, match="did not load.*lamina kernels"):
        loaded = K._load()
    assert loaded is K._jit()


def test_build_writes_whole_modules_under_their_digest_names(built, monkeypatch, tmp_path):
    """build() into a folder: each part compiled (here: the compile replaced by a copy of the real module; the
    real build, its two parts in processes side by side, runs in tests/warm_caches.py before the workers start
    and in the ``built`` fixture otherwise), staged and renamed to the name load() looks for, nothing else left
    behind; a folder that cannot be written is an error that names it, and a copy that fails halfway leaves no
    file behind."""
    real = dict(zip(range(len(kernels_aot.PARTS)), kernels_aot.module_paths()))

    def fake_compile(name, kernel_names, out_dir, verbose):
        part = int(name[len("_lamina_kernels")])
        assert list(kernel_names) == list(kernels_aot.PARTS[part])
        path = os.path.join(out_dir, os.path.basename(real[part]))
        with open(real[part], "rb") as src, open(path, "wb") as dst:
            dst.write(src.read())
        return path
    monkeypatch.setattr(kernels_aot, "_compile", fake_compile)
    paths = [p for part in (0, 1) for p in kernels_aot.build(str(tmp_path), parts=[part])]
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in real.values())
    assert [os.path.basename(p) for p in paths] == [os.path.basename(real[i]) for i in (0, 1)]
    monkeypatch.setattr(kernels_aot, "_directories", lambda: [str(tmp_path)])
    assert kernels_aot.module_paths() == paths
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(OSError, match="no writable folder"):
        kernels_aot.build(str(blocked / "sub"))
    half = tmp_path / "half"

    def copy_halfway(src, dst):   # a full disk in the middle of the copy
        with open(dst, "wb") as f:
            f.write(b"\x7fELF")
        raise OSError("No space left on device")
    monkeypatch.setattr(kernels_aot.shutil, "copyfile", copy_halfway)
    with pytest.raises(OSError, match="No space left"):
        kernels_aot.build(str(half), parts=[0])
    assert os.listdir(half) == []   # nothing half-written left where load() looks


_PROGRAM = (
    "import sys, numpy as np\n"
    "if sys.argv[1] == 'hide': sys.modules['numba'] = None\n"
    "import lamina\n"
    "from lamina import layers\n"
    "from lamina.ops import kernels\n"
    "if sys.argv[1] == 'unbuilt': kernels._aot.module_paths = lambda: None\n"
    "lamina.utils.set_random_seed(0)\n"
    "x = np.random.default_rng(0).standard_normal((4096, 64)).astype(np.float32)\n"
    "m = lamina.Sequential([layers.Dense(64, activation='relu'), layers.LayerNormalization()])\n"
    "y = m(x)\n"
    "print('numba' in sys.modules and sys.modules['numba'] is not None, type(kernels._load()).__name__,\n"
    "      kernels._state['pending'], float(np.abs(np.asarray(y.data)).sum()))\n")


def test_with_the_modules_built_a_program_runs_them_at_once_and_never_imports_numba(built):
    """'auto' mode with built modules: no warm-up (their import costs milliseconds), no numba even where it is
    installed, the same values as NumPy's code; without them, the same program warms up on NumPy's code."""
    env = dict(os.environ, LAMINA_KERNELS="auto")

    def run(how):
        out = subprocess.run([sys.executable, "-c", _PROGRAM, how], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()
    for how in ("keep", "hide"):
        numba_loaded, kind, pending, total = run(how)
        assert (numba_loaded, kind, pending) == ("False", "_Loaded", "0")
    numba_loaded, kind, pending, plain = run("unbuilt")
    assert numba_loaded == "False" and int(pending) > 0   # still warming up: NumPy's code ran
    np.testing.assert_allclose(float(total), float(plain), rtol=1e-5)


def test_lamina_kernels_reports_and_builds(built, monkeypatch, capsys):
    from lamina import cli
    assert cli.main(["kernels", "--status"]) == 0
    out = capsys.readouterr().out
    assert "numba: installed" in out and all(p in out for p in kernels_aot.module_paths())
    monkeypatch.setattr(kernels_aot, "build", lambda directory=None: ["/somewhere/one.so", "/somewhere/two.so"])
    assert cli.main(["kernels"]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == ["/somewhere/one.so", "/somewhere/two.so"]

    def failing(directory=None):
        raise RuntimeError("gcc: command not found")
    monkeypatch.setattr(kernels_aot, "build", failing)
    assert cli.main(["kernels"]) == 1
    assert "C compiler" in capsys.readouterr().err
    monkeypatch.setattr(kernels_aot, "module_paths", lambda: None)
    assert cli.main(["kernels", "--status"]) == 0
    assert "built for this machine: no (lamina kernels builds them)" in capsys.readouterr().out
