import functools
import os
import re
import sys
import warnings

# Bytecode even where the environment says not to write it (PYTHONDONTWRITEBYTECODE, set on the machines this
# project is developed and tested on): the suite starts ~150 Python processes (CLI runs, docs snippets,
# examples, MPI ranks), and without cached bytecode each one compiles lamina's source afresh (0.5 s of a 0.8 s
# import on a 2-core Intel VM), and every xdist worker rewrites every test module. The test session writes it
# where Python does by default (__pycache__ beside the sources, ignored by git), so the processes the tests
# start read it from there. (A PYTHONPYCACHEPREFIX folder would hide the pip-installed packages' own bytecode
# from those processes, which cannot write it.) Measured there: the suite 6m44 -> 4m35.
if sys.flags.dont_write_bytecode and not sys.pycache_prefix:
    sys.dont_write_bytecode = False

# Two xdist workers on two cores, each with a full BLAS thread team, oversubscribe the machine many times
# over (a 12-minute suite instead of one). Each worker, and every process a test starts, gets one thread.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn in the test extra
        pass

# Real Keras is the reference in many modules, and without a backend named it tries TensorFlow (not installed):
# name torch once here, before any module imports keras, so no module is skipped for want of it whatever
# order the modules run in (several set it themselves too, for running them on their own).
os.environ.setdefault("KERAS_BACKEND", "torch")
# Tests (and the programs they start) never start the compiled kernels' automatic build at exit
# (kernels_aot.schedule_build): several simulate unbuilt modules; tests/test_kernels_aot.py tests the build.
os.environ["LAMINA_KERNELS_AUTOBUILD"] = "0"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import lamina  # noqa: E402
from lamina.ops import kernels as _kernels  # noqa: E402

# The compiled kernels (numba, in the test extra) from the first eligible call, whatever ran before in this
# worker: in 'auto' mode a process first runs NumPy's code for kernels.WARMUP_ELEMENTS values, and a worker's
# running count would make each test's rounding depend on the tests that ran before it in that worker.
_kernels._state["pending"] = 0

sys.path.insert(0, __import__("os").path.dirname(__file__))
import fake_cupy  # noqa: E402  (tests/fake_cupy.py)
import warm_caches  # noqa: E402  (tests/warm_caches.py)


def pytest_sessionstart(session):
    """In an xdist run's controller, before its workers start (xdist starts them in its own, trylast, hook): the
    on-disk caches every worker would fill on a fresh clone (rewritten test modules, numba's kernels) filled once,
    one process a worker (tests/warm_caches.py)."""
    config = session.config
    if not os.environ.get("PYTEST_XDIST_WORKER") and config.pluginmanager.hasplugin("dsession"):
        warm_caches.fill(config, config.option.numprocesses or 1)


# The modules that take longest (seconds of one worker on the 2-core VM). With --dist loadfile, xdist hands out one
# module at a time, those with the most tests first, so these few-but-slow ones came last (test_resnet_recipe's
# 2 tests, 11 s; test_rl's 2, 7 s) and one worker finished them alone while the other waited. Handed out first,
# the many quick modules after them even out the end. Only the order matters: a module missing here or a stale
# figure costs balance, never a result (each module still runs whole, in order, on one worker).
SLOW_MODULES = {"test_docs.py": 36, "test_applications_forward.py": 30, "test_applications_xic.py": 22,
                "test_sequence_apps.py": 20, "test_applications_efficientnet.py": 15, "test_transformer_apps.py": 14,
                "test_hostile_files.py": 14, "test_cli.py": 12, "test_resnet_recipe.py": 10, "test_detection.py": 10,
                "test_distributed.py": 10, "test_fit.py": 9, "test_hostile_crash.py": 8, "test_vision_apps.py": 8,
                "test_speech.py": 8, "test_examples.py": 7, "test_keras_files.py": 7, "test_bench_smoke.py": 7,
                "test_applications.py": 7, "test_audio_layers.py": 7, "test_kernels.py": 6, "test_rl.py": 5,
                "test_layers_extra.py": 5, "test_tensor.py": 5}


# Real Keras and scikit-learn, the references many modules compare with, are imported by the first test that uses
# them, not when the module is collected (tests/lazy_modules.py): every worker collects every module, and Keras
# with its torch backend (scikit-learn among what it imports) was ~5 s of each worker's ~10 s of collection CPU on
# the 2-core VM, torch aside. The modules that use them all go to one worker, gw0, and the rest to the others,
# so those never import them; each worker takes from the other's share only when its own is empty. A module uses
# them when its source imports keras or sklearn (an import, importorskip or lazy_module). A module that imports
# them at its top, or out of sight, costs that import on another worker, never a result: a warning says so
# (pytest_collection_finish, pytest_runtest_teardown below).
REFERENCE_LIBRARIES = ("keras", "sklearn")
_REFERENCE_IMPORT = re.compile(r"""^[ \t]*(?:import (?:keras|sklearn)\b|from (?:keras|sklearn)[. ]"""
                               r"""|.*\b(?:importorskip|lazy_module)\(\s*["'](?:keras|sklearn)\b)""", re.M)


@functools.lru_cache(maxsize=None)
def uses_reference_libraries(path):
    try:
        with open(path, encoding="utf-8") as f:
            return _REFERENCE_IMPORT.search(f.read()) is not None
    except OSError:
        return False


def pytest_xdist_make_scheduler(config, log):
    """--dist loadfile, the slowest modules first (SLOW_MODULES), those using Keras or scikit-learn on gw0."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling
    if not callable(getattr(LoadFileScheduling, "_assign_work_unit", None)):
        return None   # (a pytest-xdist whose scheduler works otherwise: its own order)

    class SlowFirst(LoadFileScheduling):
        def _assign_work_unit(self, node):
            queue = getattr(self, "workqueue", None)
            if queue and hasattr(queue, "move_to_end"):
                on_gw0 = getattr(node, "workerinput", {}).get("workerid") == "gw0"
                own = [scope for scope in queue
                       if uses_reference_libraries(str(config.rootpath / scope)) == on_gw0] or queue
                slowest = max(own, key=lambda scope: SLOW_MODULES.get(os.path.basename(scope), 0))
                queue.move_to_end(slowest, last=False)   # the first of the slowest (else xdist's next)
            super()._assign_work_unit(node)
    return SlowFirst(config, log)


_reference_imported = []   # set once: the test after which Keras or scikit-learn was first seen (None: collection)


def pytest_collection_finish(session):
    """A module that imports Keras or scikit-learn when collected, not through tests/lazy_modules.py, makes every
    worker import it again: said in a warning."""
    loaded = [name for name in REFERENCE_LIBRARIES if name in sys.modules]
    if loaded:
        _reference_imported.append(None)
        warnings.warn(f"collecting the tests imported {' and '.join(loaded)} (in every xdist worker): a module "
                      "imports it at its top rather than with tests/lazy_modules.py's lazy_module", stacklevel=1)


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item):
    """In a worker, when Keras or scikit-learn is first found imported: a warning if the module that imported
    it is not one that the scheduler sends to gw0 (uses_reference_libraries)."""
    if _reference_imported or not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    loaded = [name for name in REFERENCE_LIBRARIES if name in sys.modules]
    if loaded:
        _reference_imported.append(item.nodeid)
        if not uses_reference_libraries(str(item.path)):
            warnings.warn(f"{item.path.name} imports {' and '.join(loaded)} where tests/conftest.py does not see it: "
                          "it runs on the worker without them and imports them there", stacklevel=1)


@pytest.fixture(autouse=True)
def _seed():
    lamina.backend.set_random_seed(0)
    lamina.layers.clear_session(free_memory=False)  # names only: a full gc.collect per test costs ~0.4 s
    yield


# A full garbage collection walks every object Python tracks, and importing Keras (with torch) adds ~450 000
# of them: each automatic full collection after that took 0.3-0.7 s, about twenty of them in the application
# tests alone. Once a test has imported a large library, the next test starts by freezing what is alive
# (modules, their caches; a module fixture's values if one is open) out of the collector's sight for the rest
# of the process: reference counting frees frozen objects as before, only frozen cycles stay.
_modules_at_freeze = [len(sys.modules)]


@pytest.fixture(autouse=True)
def _freeze_large_imports():
    if len(sys.modules) > _modules_at_freeze[0] + 300:
        import gc
        gc.collect()
        gc.freeze()
        _modules_at_freeze[0] = len(sys.modules)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _real_cupy_or_skip():
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed (pip install 'lamina[gpu]')")
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # no driver, no device
        pytest.skip(f"CuPy is installed but no CUDA device is usable: {e}")
    if count < 1:
        pytest.skip("CuPy is installed but no CUDA device is visible")
    return cupy


@pytest.fixture(params=["fake-cupy", "fake-cupy-kernels", "cupy"])
def device_xp(request, monkeypatch):
    """The array module of the 'cuda' device, with lamina's current device set to it for the test.

    'cupy' is the real thing (skipped without CuPy and a GPU); 'fake-cupy' is tests/fake_cupy.py, a CPU
    stand-in that raises where CuPy would on arrays left on the host, on which the fused CUDA kernels stand aside;
    'fake-cupy-kernels' the same stand-in with those kernels launched as NumPy models (tests/cuda_models.py: each
    launch checked against the kernel's CUDA signature), the GPU's code path. The device goes back to 'cpu'
    after."""
    if request.param == "cupy":
        module = _real_cupy_or_skip()
    else:
        module = fake_cupy.make_module()
        monkeypatch.setitem(sys.modules, "cupy", module)
        if request.param == "fake-cupy-kernels":
            import cuda_models  # (tests/cuda_models.py)
            module.kernel_launches = cuda_models.install(monkeypatch, module)
    lamina.backend.set_device("cuda")
    try:
        yield module
    finally:
        lamina.backend.set_device("cpu")


@pytest.fixture
def zero_initial_weights():
    """New weights built as zeros instead of random draws, as when a model file is loaded (the file's values
    replace them; lamina.io.limits.weight_budget). For tests of a model's structure (names, shapes, counts):
    drawing the initial values of large applications (ConvNeXtXLarge: 350 M) was about half their time."""
    from lamina.io.limits import weight_budget
    with weight_budget(1 << 60, "a structure-only test"):
        yield


@pytest.fixture
def keras_shapes_only():
    """A context in which real Keras builds variables with shapes but no values (its StatelessScope with
    initialize_variables=False), for tests that compare a Keras model's structure (names, shapes, counts)
    with lamina's: zero_initial_weights's counterpart on Keras's side. Keras's random initial values (on
    torch its truncated normal draws four candidates per weight) were two thirds of building EfficientNetV2S.
    Keras keeps a list of the variables left without values, to fill them when a later eager StatelessScope
    closes; it is emptied on the way out, so no other test pays for them."""
    import contextlib

    @contextlib.contextmanager
    def scope():
        import keras
        from keras.src.backend.common import global_state
        try:
            with keras.StatelessScope(initialize_variables=False):
                yield
        finally:
            global_state.set_global_attribute("uninitialized_variables", [])
    return scope


@pytest.fixture
def keras_brightness_without_aliasing(monkeypatch):
    """Keras 3.15's RandomBrightness.transform_images adds in place (``images += delta``): on the torch backend it
    changes the caller's tensor, so inside RandAugment (which runs every layer at every op and keeps the chosen one
    with a where) each op also adds the brightness delta to the images the other layers see. TensorFlow and JAX make
    a new array there, the intended behaviour and lamina's; comparisons with Keras use that (tests of the
    augmentation layers against Keras)."""
    from keras.src.layers.preprocessing.image_preprocessing.random_brightness import RandomBrightness

    def transform_images(self, images, transformation, training=True):
        if training:
            images = images + self.backend.cast(transformation["rgb_delta"], images.dtype)
            return self.backend.numpy.clip(images, self.value_range[0], self.value_range[1])
        return images
    monkeypatch.setattr(RandomBrightness, "transform_images", transform_images)
