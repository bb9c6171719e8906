"""The on-disk caches an xdist run's workers read, filled once before the controller starts them (conftest.py).

On a fresh clone every worker filled them itself, the same work in each, at the same time:
- pytest's assertion-rewritten test modules (tests/__pycache__/*-pytest-*.pyc): each worker collects every
  module, ~9 s of CPU on the 2-core Intel VM;
- lamina's compiled kernels built ahead of time (lamina/ops/kernels_aot.py, ``lamina kernels``: ~30 s of CPU,
  two processes side by side), which every test and every program the tests start then loads without numba;
- numba's in-process compilation of the same kernels for tests/kernel_cases.py's float32 calls (cached beside
  kernels.py), which tests/test_kernels_aot.py compares the built modules with; two processes adding
  signatures of one kernel to its cache index at once can lose one of them, or leave one's entry naming the
  other's code.
Here ``parts`` processes (one a worker, so one a core) fill them side by side, each kernel's signatures in one
process only, and lamina's own bytecode, which the workers and the programs the tests start read, while the
controller builds the modules. A warm checkout costs a look at the files: the rewritten modules are there, the
built modules' names match this machine and these loops, and a stamp beside the kernels' cache says it was
filled for this kernel_loops.py (its time and size: numba's own test of freshness), numba, Python and cache
folder.

Run as ``python tests/warm_caches.py PART PARTS KERNELS [MODULE ...]`` (KERNELS: 1 to compile them): part PART
of the work (every PARTS-th module of the list, ordered by size; part PART of the kernels), printing the
kernels' cache index files, one a line.
"""
import importlib.util
import os
import subprocess
import sys

def _compile_kernels(part):
    """numba's in-process compilation of the kernels of part ``part`` of kernels_aot.PARTS, for the float32 calls
    of tests/kernel_cases.py (what tests/test_kernels_aot.py compares the built modules with; every other test
    runs the built modules); yield the paths of their cache indexes."""
    import numpy as np
    import kernel_cases
    from lamina.ops import kernels as K
    from lamina.ops import kernels_aot
    jit = K._jit()
    cases = kernel_cases.cases(np.float32)
    for name in kernels_aot.PARTS[part]:
        for args in cases[name]:
            getattr(jit, name)(*args)
        yield getattr(jit, name)._cache._cache_file._index_path


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
    import lamina.ops.kernel_loops as loops
    import lamina.ops.kernels as K
    from importlib.metadata import version
    st = os.stat(loops.__file__)
    key = (f"{version('numba')} {sys.version.split()[0]} {st.st_mtime!r} {st.st_size} "
           f"{os.environ.get('NUMBA_CACHE_DIR', '')}\n")
    return os.path.join(os.path.dirname(K.__file__), "__pycache__", "kernels.numba-cache-filled"), key


def _built():
    from lamina.ops import kernels_aot
    return kernels_aot.module_paths() is not None


def _kernels_cached():
    if importlib.util.find_spec("numba") is None:
        return True   # nothing to compile: the kernels' callers run NumPy's code
    if not _built():
        return False
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
    # (none where LAMINA_KERNELS=numpy switches them off: the GPU run, bench/gpu_run.sh, on a fresh machine)
    kernels = not _kernels_cached() and os.environ.get("LAMINA_KERNELS", "").strip().lower() != "numpy"
    if not modules and not kernels:
        return
    from lamina.ops import kernels_aot
    parts = max(1, min(parts, len(kernels_aot.PARTS)))
    modules.sort(key=os.path.getsize, reverse=True)   # dealt out in turn: parts of about equal size
    root = os.path.dirname(os.path.dirname(os.path.abspath(__import__("lamina").__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    procs = [subprocess.Popen([sys.executable, __file__, str(i), str(parts), str(int(kernels)), *modules], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for i in range(parts)]
    if kernels and not _built():
        try:
            kernels_aot.build()
        except Exception:   # (no C compiler: tests/test_kernels_aot.py says so; the others run numba's kernels)
            pass
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
        from lamina.ops import kernels_aot
        for kernel_part in range(part, len(kernels_aot.PARTS), parts):
            for index in _compile_kernels(kernel_part):
                print(index)
