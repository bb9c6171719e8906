"""The on-disk caches an xdist run's workers read, filled once before the controller starts them (conftest.py).

On a fresh clone every worker filled them itself, the same work in each, at the same time:
- pytest's assertion-rewritten test modules (tests/__pycache__/*-pytest-*.pyc): each worker collects every
  module, ~9 s of CPU on the 2-core Intel VM;
- numba's machine code of lamina's compiled kernels (lamina/ops/kernels.py, cached beside it): ~10 s of CPU in
  a worker that meets them all; and two processes adding signatures of one kernel to its cache index at once
  can lose one of them, or leave one's entry naming the other's code.
Here ``parts`` processes (one a worker, so one a core) fill them side by side, each kernel's signatures in one
process only, compiled through the layers and optimizer that call them in the suite (so the signatures are
theirs), and lamina's own bytecode, which the workers and the programs the tests start read. A warm checkout
costs a look at the files: the rewritten modules are there, and a stamp beside the kernels' cache says it was
filled for this kernels.py (its time and size: numba's own test of freshness), numba, Python and cache folder.

Run as ``python tests/warm_caches.py PART PARTS KERNELS [MODULE ...]`` (KERNELS: 1 to compile them): part PART
of the work (every PARTS-th module of the list, ordered by size; group PART of the kernels), printing the
kernels' cache index files, one a line.
"""
import importlib.util
import os
import subprocess
import sys

# Two groups of about equal compile time (seconds on the 2-core VM, float32 and float64 together): ~9 each.
# A kernel's signatures are all compiled in one process (numba keeps one index file per kernel). Every kernel
# of lamina/ops/kernels.py is in one group (tests/test_kernels.py checks).
GROUPS = (("max_pool_rows", "layer_norm_rows", "layer_norm_rows_grad", "column_softmax_grad",  # 4.9, 1.9, 1.6, .8
           "scatter_rows"),                                                                      # .5
          ("max_pool_rows_grad", "col2im_gather", "bias_relu_rows", "relu_bias_grad_rows",       # 3.7, 1.8, .4, .8
           "lstm_cell_grad", "gru_cell_grad", "adam_update", "column_max_subtract",              # .9, .8, .5, .8
           "column_sum_divide"))                                                                 # .8


def _compile_kernels(names):
    """Call the kernels ``names`` the way lamina's layers and optimizer do, for float32 and float64, and no other
    kernel; yield the paths of their cache indexes."""
    import numpy as np
    import lamina
    from lamina import Tensor, grad, layers, ops
    from lamina.ops import kernels as K
    K.MIN_ELEMENTS = 0          # tiny arrays do: the compiled code depends on the types only
    rng = np.random.default_rng(0)

    def run(fn, x, forward, backward):
        """fn(x) and its gradient, the kernels on in each pass only if its kernel (forward / backward) is ours
        (attention's forward runs two: column_max_subtract and column_sum_divide, in one group)."""
        K.set_mode("numba" if forward in names else "numpy")
        xt = Tensor(x, requires_grad=True)
        y = fn(xt)
        K.set_mode("numba" if backward in names else "numpy")
        grad(y, [xt] + list(getattr(fn, "trainable_weights", [])), grad_output=Tensor(np.ones(y.shape, x.dtype)))

    for dtype in ("float32", "float64"):
        def x(*shape):
            return rng.standard_normal(shape).astype(dtype)
        pool = ("max_pool_rows", "max_pool_rows_grad")
        run(lambda t: ops.max_pool2d(t, 2, 2, "valid"), x(2, 4, 4, 3), *pool)     # a uint8 note
        run(lambda t: ops.max_pool2d(t, 17, 1, "valid"), x(1, 17, 17, 2), *pool)  # 289 offsets: an int32 note
        run(layers.LayerNormalization(dtype=dtype), x(3, 8), "layer_norm_rows", "layer_norm_rows_grad")
        run(layers.Dense(4, activation="relu", dtype=dtype), x(3, 5), "bias_relu_rows", "relu_bias_grad_rows")
        run(layers.Conv2D(4, 3, dtype=dtype), x(2, 6, 6, 10), None, "col2im_gather")
        run(layers.LSTM(3, dtype=dtype), x(2, 2, 4), None, "lstm_cell_grad")
        run(layers.GRU(3, dtype=dtype), x(2, 2, 4), None, "gru_cell_grad")
        attention = layers.MultiHeadAttention(num_heads=2, key_dim=3, dtype=dtype)   # softmax over the keys
        run(lambda t: attention(t, t), x(2, 4, 5), "column_max_subtract", "column_softmax_grad")
        K.set_mode("numba" if "adam_update" in names else "numpy")
        lamina.optimizers.Adam().apply([x(6)], [lamina.Variable(x(6), dtype=dtype)])
        K.set_mode("numba" if "scatter_rows" in names else "numpy")    # the embedding table's gradient
        table = layers.Embedding(7, 4, dtype=dtype)
        out = table(np.array([[1, 2, 1]]))
        grad(out, table.trainable_weights, grad_output=Tensor(np.ones(out.shape, dtype)))
    kernels = K._load()
    for group in GROUPS:
        for name in group:
            if bool(getattr(kernels, name).signatures) != (name in names):
                raise RuntimeError(f"warm_caches: the kernel {name} was {'not ' * (name in names)}compiled")
    for name in names:   # numba's index of the kernel's cached signatures
        yield getattr(kernels, name)._cache._cache_file._index_path


def _rewritten_pyc(module):
    """Where pytest keeps the assertion-rewritten code of a test module (its private helpers: None without them)."""
    try:
        from pathlib import Path
        from _pytest.assertion import rewrite
        path = Path(module)
        return rewrite.get_cache_dir(path) / (path.name[:-3] + rewrite.PYC_TAIL)
    except (ImportError, AttributeError):
        return None


def _rewrite(modules):
    """Rewrite the test modules' asserts into pytest's cache, as a worker's import would (with the default
    enable_assertion_pass_hook = false, as here) and where it would look."""
    from pathlib import Path
    from _pytest.assertion import rewrite

    class State:   # what _write_pyc reports its failures to
        trace = staticmethod(lambda message: None)
    for module in modules:
        pyc = _rewritten_pyc(module)
        if pyc is not None and rewrite._read_pyc(Path(module), pyc) is None and rewrite.try_makedirs(pyc.parent):
            source_stat, code = rewrite._rewrite_test(Path(module), None)
            rewrite._write_pyc(State, code, source_stat, pyc)


def _stamp():
    """(the kernels' stamp's path, what it holds when their cache was filled for the code and tools of this run)."""
    import lamina.ops.kernels as K
    from importlib.metadata import version
    st = os.stat(K.__file__)
    key = (f"{version('numba')} {sys.version.split()[0]} {st.st_mtime!r} {st.st_size} "
           f"{os.environ.get('NUMBA_CACHE_DIR', '')}\n")
    return os.path.join(os.path.dirname(K.__file__), "__pycache__", "kernels.numba-cache-filled"), key


def _kernels_cached():
    if importlib.util.find_spec("numba") is None:
        return True   # nothing to compile: the kernels' callers run NumPy's code
    path, key = _stamp()
    try:
        with open(path) as f:
            held, *indexes = f.read().splitlines(keepends=True)
    except OSError:
        return False
    return held == key and bool(indexes) and all(os.path.exists(p.rstrip("\n")) for p in indexes)


def fill(config, parts):
    """Fill the caches with ``parts`` processes where they are cold: the test modules' rewritten code if none is
    cached for some module (a fresh clone; a module edited since is rewritten by the workers, as before), the
    kernels if their stamp does not match. A failure only costs time: the workers fill what is left."""
    here = os.path.dirname(os.path.abspath(__file__))
    modules = []
    if config.getoption("assertmode") == "rewrite" and not config.getini("enable_assertion_pass_hook"):
        import fnmatch
        names = [n for n in os.listdir(here) if any(fnmatch.fnmatch(n, p) for p in config.getini("python_files"))]
        # those the run collects: the ones named, or in the folders named, on its command line (or testpaths)
        chosen = [os.path.abspath(os.path.join(config.invocation_params.dir, a.split("::")[0])) for a in config.args]
        modules = [m for m in (os.path.join(here, n) for n in sorted(names))
                   if any(m == c or m.startswith(os.path.join(c, "")) for c in chosen)]
        if all(pyc is None or pyc.exists() for pyc in map(_rewritten_pyc, modules)):
            modules = []
    kernels = not _kernels_cached()
    if not modules and not kernels:
        return
    parts = max(1, min(parts, len(GROUPS)))
    modules.sort(key=os.path.getsize, reverse=True)   # dealt out in turn: parts of about equal size
    root = os.path.dirname(os.path.dirname(os.path.abspath(__import__("lamina").__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    procs = [subprocess.Popen([sys.executable, __file__, str(i), str(parts), str(int(kernels)), *modules], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for i in range(parts)]
    outs = [p.communicate()[0] for p in procs]
    if not kernels or any(p.returncode for p in procs):
        return
    path, key = _stamp()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path + ".tmp", "w") as f:
            f.write(key + "".join(outs))
        os.replace(path + ".tmp", path)
    except OSError:   # a read-only checkout: numba keeps its cache elsewhere then, and each run checks it
        pass


if __name__ == "__main__":
    part, parts, kernels, modules = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4:]
    if part == 0:
        import compileall
        import lamina
        compileall.compile_dir(os.path.dirname(lamina.__file__), quiet=1)
    try:
        _rewrite(modules[part::parts])
    except (ImportError, AttributeError, TypeError):   # another pytest's private helpers: the workers rewrite
        pass
    if kernels:
        for index in _compile_kernels([n for i, group in enumerate(GROUPS) if i % parts == part for n in group]):
            print(index)
