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
    loops = sorted(n for n, f in vars(kernel_loops).items()
                   if callable(f) and f.__module__ == kernel_loops.__name__ and n not in kernels_aot.HELPERS)
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



def test_the_built_own_exp_kernels_fuse_multiply_adds(built):
    """The "fused" mode reaches the build: the built exp_rows' exp of float32 values rounds as fused multiply-adds
    do, not as the loop's operations run one at a time in Python (float32 scalars, each rounded), from which it
    differs in the last bit of a few values, never more."""
    x = np.random.default_rng(0).uniform(-80, 80, (1, 4096)).astype(np.float32)
    y = np.empty_like(x)
    built.exp_rows(x, np.zeros(1, np.float32), y, np.empty(0, np.float32), False, np.empty((2, 4096), np.float32))
    one_at_a_time = getattr(kernel_loops._exp_scalar, "py_func", kernel_loops._exp_scalar)
    e = np.array([one_at_a_time(v) for v in x[0]], np.float32)
    ulps = np.abs(y[0].view(np.int32) - e.view(np.int32))
    assert ulps.max() == 1 and 0 < np.count_nonzero(ulps) < 400

def test_every_call_lamina_makes_reaches_the_built_kernels(built, fallbacks, monkeypatch):
    """Each layer and optimizer that has a kernel, forward and backward, float32 and float64, with the kernels
    on for any size: every kernel called, none of its calls handed to numba (so lamina's arguments are the
    ones the modules were built for)."""
    monkeypatch.setattr(K, "MIN_ELEMENTS", 0)
    monkeypatch.setitem(K._state, "mode", "auto")
    monkeypatch.setitem(K._state, "pending", 0)
    monkeypatch.setitem(K._state, "kernels", built)
    monkeypatch.setattr(K, "OWN_EXP", True)
    monkeypatch.setattr(K, "NUMPY_SIMD_EXP", False)   # (the own tanh too, off where NumPy's is AVX-512's)
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
        run(lambda t: ops.softmax(t), x(3, 16))
        run(lambda t: ops.log_softmax(t), x(3, 16))
        run(lambda t: ops.gelu(t, approximate=False), x(3, 16))
        for layer, inp in ((layers.LayerNormalization(dtype=dtype), x(3, 8)),
                           (layers.Dense(4, activation="relu", dtype=dtype), x(3, 5)),
                           (layers.Conv2D(32, 3, dtype=dtype), x(2, 6, 6, 10)),   # (10 x 32: the gathered col2im)
                           (layers.Conv2D(4, 3, padding="same", dtype=dtype), x(2, 6, 6, 10)),
                           (layers.Conv2D(8, 3, padding="same", dtype=dtype), x(2, 16, 16, 4)),   # (the planes)
                           (layers.LSTM(3, dtype=dtype), x(2, 3, 4)),
                           (layers.GRU(3, dtype=dtype), x(2, 3, 4)),
                           (layers.BatchNormalization(dtype=dtype), x(2, 3, 3, 8)),
                           (layers.GroupNormalization(4, dtype=dtype), x(2, 3, 3, 8)),
                           (layers.DepthwiseConv2D(3, padding="same", dtype=dtype), x(2, 5, 5, 4)),
                           (layers.ReLU(dtype=dtype), x(3, 16)),
                           (layers.Activation("silu", dtype=dtype), x(3, 16)),
                           (layers.Activation("sigmoid", dtype=dtype), x(3, 16)),
                           (layers.Activation("softplus", dtype=dtype), x(3, 16)),
                           (layers.ELU(dtype=dtype), x(3, 16)),
                           (layers.Activation("selu", dtype=dtype), x(3, 16)),
                           (layers.LeakyReLU(0.2, dtype=dtype), x(3, 16)),
                           (layers.PReLU(dtype=dtype), x(3, 16)),
                           (layers.GlobalMaxPooling2D(dtype=dtype), x(2, 3, 3, 8)),
                           (layers.BatchNormalization(axis=1, dtype=dtype), x(2, 3, 3, 8))):
            layer(inp)
            run(lambda t, layer=layer: layer(t, training=True), inp, layer.trainable_weights)
        layers.BatchNormalization(dtype=dtype)(x(2, 3, 3, 8))   # inference: the moving statistics' scale and shift
        attention = layers.MultiHeadAttention(num_heads=2, key_dim=3, dtype=dtype)
        run(lambda t: attention(t, t), x(2, 4, 5), [])
        table = layers.Embedding(7, 4, dtype=dtype)
        out = table(np.array([[1, 2, 1]]))
        grad(out, table.trainable_weights, grad_output=Tensor(np.ones(out.shape, dtype)))
        for loss in (ops.mean_squared_error, ops.mean_absolute_error, ops.huber):
            run(lambda t, loss=loss: loss(Tensor(x(3, 16)), t), x(3, 16))
        lamina.optimizers.Adam().apply([x(6)], [lamina.Variable(x(6), dtype=dtype)])
        for opt in (lamina.optimizers.SGD(momentum=0.9), lamina.optimizers.RMSprop(momentum=0.5),
                    lamina.optimizers.RMSprop(), lamina.optimizers.Adagrad(), lamina.optimizers.Nadam(),
                    lamina.optimizers.Lion()):
            opt.apply([x(6)], [lamina.Variable(x(6), dtype=dtype)])
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
                                                ("exact", kernels_aot.SIGNATURES["layer_norm_rows"][1])),
                  lambda: monkeypatch.setattr(kernels_aot.inspect, "getsource", lambda m: "def other(): pass"),
                  lambda: monkeypatch.setitem(kernels_aot.FASTMATH_OF, "fused", frozenset())):
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


def _copying(built):
    """kernels_aot._compile replaced by a copy of the module ``built`` loaded (tests/warm_caches.py or the fixture
    built it), checking that it was asked for the part's kernels."""
    def compile(name, kernel_names, out_dir, verbose):
        part = int(name[len("_lamina_kernels")])
        assert list(kernel_names) == list(kernels_aot.PARTS[part])
        path = os.path.join(out_dir, os.path.basename(built.paths[part]))
        with open(built.paths[part], "rb") as src, open(path, "wb") as dst:   # (not shutil's copy, which a test
            dst.write(src.read())                                               # makes fail halfway)
        return path
    return compile


def test_build_writes_whole_modules_under_their_digest_names(built, monkeypatch, tmp_path):
    """build() into a folder: each part compiled (here: the compile replaced by a copy of the real module; the
    real build, its two parts in processes side by side, runs in tests/warm_caches.py before the workers start
    and in the ``built`` fixture otherwise), staged and renamed to the name load() looks for, nothing else left
    behind; a folder that cannot be written is an error that names it, and a copy that fails halfway leaves no
    file behind."""
    real = dict(enumerate(built.paths))
    monkeypatch.setattr(kernels_aot, "_compile", _copying(built))
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


# ------------------------------------------------------------------ the automatic build
def test_numbas_compilation_in_a_program_schedules_the_build_for_its_exit(built, monkeypatch):
    """Where the modules are not built and numba compiles in-process, _load has them built when the program ends
    (schedule_build); where they are built it loads them and schedules nothing."""
    scheduled = []
    monkeypatch.setattr(kernels_aot, "schedule_build", lambda: scheduled.append(1))
    monkeypatch.setitem(K._state, "kernels", None)
    assert K._load() is not None and scheduled == []          # built: loaded, nothing to build
    monkeypatch.setattr(kernels_aot, "module_paths", lambda: None)
    monkeypatch.setitem(K._state, "kernels", None)
    assert K._load() is K._jit() and scheduled == [1]


def test_the_build_is_scheduled_once_for_the_programs_exit(monkeypatch):
    registered = []
    monkeypatch.setattr(kernels_aot.atexit, "register", lambda fn, *args: registered.append(fn))
    monkeypatch.setitem(kernels_aot._autobuild, "scheduled", False)
    monkeypatch.setenv(kernels_aot.AUTOBUILD_ENV, "0")
    assert kernels_aot.schedule_build() is False and registered == []
    monkeypatch.setenv(kernels_aot.AUTOBUILD_ENV, "1")
    assert kernels_aot.schedule_build() is True and registered == [kernels_aot._build_at_exit]
    assert kernels_aot.schedule_build() is False and len(registered) == 1     # once per program


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_program_that_compiled_in_process_waits_at_exit_for_the_build(built, tmp_path):
    """The wiring, in a program of its own: numba compiling in-process (the modules hidden) schedules the build,
    which starts when the program's code is done (here a stand-in process that writes a file after 0.5 s) and is
    waited for; with LAMINA_KERNELS_AUTOBUILD=0 nothing starts."""
    done = tmp_path / "built"
    stand_in = f"import time; time.sleep(0.5); open({str(done)!r}, 'w').close()"
    code = ("import subprocess, sys, numpy as np\n"
            "from lamina.ops import kernels, kernels_aot\n"
            "kernels_aot.module_paths = lambda: None\n"
            f"kernels_aot._launch = lambda: subprocess.Popen([sys.executable, '-c', {stand_in!r}],\n"
            "    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
            "x = np.ones((512, 64), np.float32)\n"
            "kernels.bias_relu(x, np.ones(64, np.float32))\n"
            "print(kernels.in_use())\n")
    for setting, expect in (("0", False), ("1", True)):
        env = dict(os.environ, LAMINA_KERNELS="numba", **{kernels_aot.AUTOBUILD_ENV: setting})
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split() == ["numba"] and done.exists() == expect


def test_a_long_program_in_auto_mode_keeps_numba_out_and_has_the_modules_built_at_exit(tmp_path):
    """'auto' mode past its warm-up, the modules not built and a build able to come: the program keeps to NumPy's
    code (numba never imported: ~125 MB and a compilation stall saved) and the build starts when it ends (here a
    stand-in process that writes a file); where an earlier automatic build failed (its note in the folder), no
    build can come, and numba compiles in-process as before."""
    folder, done = tmp_path / "kernels", tmp_path / "built"
    folder.mkdir()
    stand_in = f"open({str(done)!r}, 'w').close()"
    code = ("import subprocess, sys, numpy as np\n"
            "from lamina.ops import kernels, kernels_aot\n"
            f"kernels_aot._directories = lambda: [{str(folder)!r}]\n"
            "if sys.argv[1] == 'failed':\n"
            "    open(kernels_aot._note(kernels_aot._directories()[0], 'failed'), 'w').write('gcc: not found')\n"
            f"kernels_aot._launch = lambda: subprocess.Popen([sys.executable, '-c', {stand_in!r}])\n"
            "kernels.WARMUP_ELEMENTS = 2 * 512 * 64\n"
            "x = np.random.default_rng(0).standard_normal((512, 64)).astype(np.float32)\n"
            "ys = [x.copy() for _ in range(4)]\n"
            "ran = [kernels.bias_relu(y, np.ones(64, np.float32)) for y in ys]\n"
            "assert all(np.array_equal(y, np.maximum(x + 1, 0)) for y, r in zip(ys, ran) if r)\n"
            "print(ran[-1], kernels.in_use(), 'numba' in sys.modules)\n")
    env = dict(os.environ, LAMINA_KERNELS="auto", **{kernels_aot.AUTOBUILD_ENV: "1"})
    out = subprocess.run([sys.executable, "-c", code, "fresh"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "None", "False"] and done.exists()
    done.unlink()
    out = subprocess.run([sys.executable, "-c", code, "failed"], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "numba", "True"]


def test_a_deferring_program_that_runs_long_builds_the_modules_in_its_course_and_runs_them(built, monkeypatch,
                                                                                          fallbacks):
    """Past LATE_ELEMENTS more values, a program that deferred to the build at its exit (kernels._deferred) builds
    the modules then (kernels_aot.build_now) and takes them from that call on, numba never loaded; once only, and
    where the build does not come, NumPy's code to the end."""
    real_paths = kernels_aot.module_paths
    monkeypatch.setattr(kernels_aot, "module_paths", lambda: None)
    monkeypatch.setattr(kernels_aot, "build_expected", lambda: True)
    monkeypatch.setattr(kernels_aot, "schedule_build", lambda: True)
    builds = []

    def build_now(ok):
        builds.append(ok)
        if ok:
            monkeypatch.setattr(kernels_aot, "module_paths", real_paths)
        return ok
    big = np.random.default_rng(0).standard_normal((512, 64)).astype(np.float32)
    bias = np.ones(64, np.float32)
    monkeypatch.setattr(K, "LATE_ELEMENTS", 2 * big.size + 1)
    monkeypatch.setitem(K._state, "mode", "auto")
    for ok, expect in ((False, [False] * 6), (True, [False, False, True, True, True, True])):
        monkeypatch.setattr(kernels_aot, "build_now", lambda ok=ok: build_now(ok))
        for key, value in (("kernels", None), ("pending", 0), ("deferred", None), ("late", None)):
            monkeypatch.setitem(K._state, key, value)
        ys = [big.copy() for _ in range(6)]
        ran = [bool(K.bias_relu(y, bias)) for y in ys]
        assert ran == expect and builds[-1] is ok and len(builds) == 1 + ok
        assert K.in_use() == ("built" if ok else None)
        for y, r in zip(ys, ran):
            if r:
                np.testing.assert_array_equal(y, np.maximum(big + bias, 0))
    assert fallbacks == {}


def test_a_long_program_builds_the_modules_in_its_course_then_runs_them_and_builds_nothing_at_exit(built, tmp_path):
    """The wiring, in a program of its own ('auto' mode, the modules not built, the warm-up and LATE_ELEMENTS
    lowered): the build starts in the program's course (a stand-in process that logs a line and leaves the
    modules "built"), the program waits for it, takes the built modules from that call on without importing
    numba, and at its exit finds nothing to build."""
    log = tmp_path / "builds.log"
    stand_in = f"open({str(log)!r}, 'a').write('built\\n')"
    code = ("import os, subprocess, sys, numpy as np\n"
            "from lamina.ops import kernels, kernels_aot\n"
            "real = kernels_aot.module_paths\n"
            f"kernels_aot.module_paths = lambda: real() if os.path.exists({str(log)!r}) else None\n"
            "kernels_aot._launch = lambda now=False: (None if kernels_aot.module_paths() is not None else\n"
            f"    subprocess.Popen([sys.executable, '-c', {stand_in!r}]))\n"
            "kernels.WARMUP_ELEMENTS = kernels.LATE_ELEMENTS = 2 * 512 * 64\n"
            "x = np.random.default_rng(0).standard_normal((512, 64)).astype(np.float32)\n"
            "ran = [kernels.bias_relu(x.copy(), np.ones(64, np.float32)) for _ in range(6)]\n"
            "print(ran.index(True), all(ran[ran.index(True):]), kernels.in_use(), 'numba' in sys.modules)\n")
    env = dict(os.environ, LAMINA_KERNELS="auto", **{kernels_aot.AUTOBUILD_ENV: "1"})
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["3", "True", "built", "False"]
    assert log.read_text() == "built\n"      # once, in the program's course; nothing at its exit


def test_build_now_waits_for_another_programs_build(monkeypatch):
    """build_now where another program holds the build's lock (another rank of an MPI job reaching the same call):
    no build of its own, it waits until that build is done and then reports the modules built; where the other
    build ends without them (it failed), it reports none."""
    polls = []
    monkeypatch.setattr(kernels_aot, "_launch", lambda now=False: None)
    monkeypatch.setattr(kernels_aot.time, "sleep", lambda s: polls.append(s))
    for succeeds in (True, False):
        polls.clear()
        monkeypatch.setattr(kernels_aot, "build_status",
                            lambda: ("running", 1) if len(polls) < 3 else (None, None))
        monkeypatch.setattr(kernels_aot, "module_paths",
                            lambda: ["a.so", "b.so"] if succeeds and len(polls) >= 3 else None)
        assert kernels_aot.build_now() is succeeds and len(polls) == 3


def test_at_exit_the_build_starts_in_its_own_session_and_says_so(monkeypatch, tmp_path, capsys):
    """_launch (at exit): one process of its own session (a Ctrl-C meant for the program does not reach it), no
    inherited descriptors, with a line on stderr; none where LAMINA_KERNELS_AUTOBUILD=0, where a live process holds
    the lock, where an earlier automatic build failed, or where the modules are built; a lock left by a dead
    process does not stop it."""
    dead = _dead_pid()
    monkeypatch.setattr(kernels_aot, "_directories", lambda: [str(tmp_path)])
    monkeypatch.setenv(kernels_aot.AUTOBUILD_ENV, "1")
    launched = []

    class FakePopen:
        def __init__(self, args, **kwargs):
            launched.append((args, kwargs))
    monkeypatch.setattr(kernels_aot.subprocess, "Popen", FakePopen)
    assert isinstance(kernels_aot._launch(), FakePopen)
    (args, kwargs), = launched
    assert args[0] == sys.executable and "kernels_aot._build_process()" in args[-1]
    assert kwargs["start_new_session"] and kwargs["close_fds"] and kwargs["stdin"] == subprocess.DEVNULL
    assert "building its compiled kernels for this machine, once" in capsys.readouterr().err
    assert isinstance(kernels_aot._launch(now=True), FakePopen)   # in a long program's course (build_now)
    assert capsys.readouterr().err.startswith("lamina: building its compiled kernels")   # (not a terminal)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert isinstance(kernels_aot._launch(now=True), FakePopen)
    err = capsys.readouterr().err
    assert err.startswith("\nlamina: building") and "this long run goes on with them" in err   # below a progress bar
    launched[-2:] = []
    monkeypatch.setenv(kernels_aot.AUTOBUILD_ENV, "0")
    assert kernels_aot._launch() is None
    monkeypatch.setenv(kernels_aot.AUTOBUILD_ENV, "1")
    lock = tmp_path / os.path.basename(kernels_aot._note(str(tmp_path), "building"))
    lock.write_text(str(os.getpid()))                       # a live process is building them
    assert kernels_aot._launch() is None and kernels_aot.build_status() == ("running", os.getpid())
    lock.write_text(str(dead))                              # its process died: stale
    assert kernels_aot.build_status() == (None, None) and kernels_aot._launch() is not None and len(launched) == 2
    lock.unlink()
    (tmp_path / os.path.basename(kernels_aot._note(str(tmp_path), "failed"))).write_text("RuntimeError: no gcc")
    assert kernels_aot._launch() is None and kernels_aot.build_status() == ("failed", "RuntimeError: no gcc")
    monkeypatch.setattr(kernels_aot, "module_paths", lambda: ["built.so"])
    assert kernels_aot._launch() is None and len(launched) == 2


def test_the_program_waits_for_the_build_and_a_ctrl_c_stops_it():
    """_wait: the build is waited for; a Ctrl-C during the wait ends the build's whole process group instead."""
    short = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"], start_new_session=True)
    kernels_aot._wait(short)
    assert short.returncode == 0
    long = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)

    class Interrupted:   # the wait interrupted by a Ctrl-C
        pid = long.pid

        def wait(self):
            raise KeyboardInterrupt
    kernels_aot._wait(Interrupted())
    assert long.wait(timeout=10) == -kernels_aot.signal.SIGTERM
    # in the middle of a program (build_now), the Ctrl-C then stops the program too, as it would have without it
    long = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    Interrupted.pid = long.pid
    with pytest.raises(KeyboardInterrupt):
        kernels_aot._wait(Interrupted(), reraise=True)
    assert long.wait(timeout=10) == -kernels_aot.signal.SIGTERM


def test_the_build_process_builds_under_a_lock_and_notes_a_failure(monkeypatch, tmp_path):
    """_build_process (the build's process): holds the lock (its pid) while it builds and removes it after; a failed
    build leaves a note with the error, which stops later automatic builds and which a successful build removes;
    with the lock held by a live process it builds nothing; a dead one's it takes over."""
    builds = []
    monkeypatch.setattr(kernels_aot, "_directories", lambda: [str(tmp_path)])
    lock = kernels_aot._note(str(tmp_path), "building")
    failed = kernels_aot._note(str(tmp_path), "failed")

    def fake_build(directory=None):
        with open(lock) as f:
            builds.append((directory, int(f.read())))
    monkeypatch.setattr(kernels_aot, "build", fake_build)
    assert kernels_aot._build_process() == 0
    assert builds == [(str(tmp_path), os.getpid())] and os.listdir(tmp_path) == []

    def failing(directory=None):
        raise RuntimeError("gcc: command not found")
    monkeypatch.setattr(kernels_aot, "build", failing)
    assert kernels_aot._build_process() == 1
    assert os.listdir(tmp_path) == [os.path.basename(failed)]
    assert kernels_aot.build_status() == ("failed", "RuntimeError: gcc: command not found")

    monkeypatch.setattr(kernels_aot, "build", fake_build)
    with open(lock, "w") as f:
        f.write(str(os.getpid()))                          # a live build elsewhere
    assert kernels_aot._build_process() == 0 and len(builds) == 1 and os.path.exists(lock)
    with open(lock, "w") as f:
        f.write(str(_dead_pid()))
    assert kernels_aot._build_process() == 0 and len(builds) == 2 and not os.path.exists(lock)


def test_a_successful_build_clears_an_automatic_builds_failure_note(built, monkeypatch, tmp_path):
    monkeypatch.setattr(kernels_aot, "_compile", _copying(built))
    monkeypatch.setattr(kernels_aot, "_directories", lambda: [str(tmp_path)])
    note = tmp_path / os.path.basename(kernels_aot._note(str(tmp_path), "failed"))
    note.write_text("RuntimeError: no gcc")
    kernels_aot.build(parts=[0])
    assert note.exists()                                  # one part built: not yet built for this machine
    kernels_aot.build(parts=[1])
    assert not note.exists() and kernels_aot.build_status() == (None, None)


def test_lamina_kernels_status_tells_of_the_automatic_build(monkeypatch, capsys):
    from lamina import cli
    monkeypatch.setattr(kernels_aot, "module_paths", lambda: None)
    monkeypatch.setattr(kernels_aot, "build_status", lambda: ("running", 4321))
    assert cli.main(["kernels", "--status"]) == 0
    assert "an automatic build is running (process 4321" in capsys.readouterr().out
    monkeypatch.setattr(kernels_aot, "build_status", lambda: ("failed", "RuntimeError: no gcc"))
    assert cli.main(["kernels", "--status"]) == 0
    assert "the automatic build failed (RuntimeError: no gcc)" in capsys.readouterr().out
