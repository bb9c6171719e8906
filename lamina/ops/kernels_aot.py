"""The compiled kernels built ahead of time: extension modules that later processes load without numba.

numba compiling on a kernel's first call (kernels.py) loads numba and LLVM into the process even when every
kernel comes from its disk cache: ~0.9 s of CPU and ~125 MB of resident memory (LLVM's code pages, the CPU
target's registries, the JIT), more than a model's whole working set on the benchmark's workloads. Built once
ahead of time (:func:`build`, ``lamina kernels``), the same loops (kernel_loops.py, compiled with the same numba
options) are two small extension modules: importing them costs milliseconds and a few MB, with neither numba nor
LLVM at run time. Where numba is installed and they are not built, the first long program (past 'auto' mode's
warm-up, which then keeps to NumPy's code rather than load numba) or the first that compiles the kernels in-process
(``LAMINA_KERNELS=numba``) builds them at its exit (see "the automatic build" below).

The modules are compiled for this machine's CPU (the JIT's choice too) by numba's ``pycc`` (the only
ahead-of-time compiler numba has; marked for replacement since numba 0.57, still in 0.68): numba and a C
compiler are needed to build them, not to load them. Each file name carries a digest of what it was built from
(the loops' source, the signatures and options below, NumPy's version, the CPU features NumPy detects), so a
module built from other loops or for another CPU is never loaded: kernels.py compiles in-process instead, as
without them.

Exported functions check nothing (an array of another dtype or rank reads memory as if it were the declared
one), so every call goes through a guard that checks each argument's type, dtype, rank and contiguity against
the signature, and hands any other call to numba's in-process compilation (which specialises on whatever it
gets) rather than to the exported code.

The built files live in ``__pycache__`` beside this module, or in ``$LAMINA_HOME/kernels`` (``~/.lamina``) when
that is read-only: written by lamina's own build, like Python's bytecode beside the sources; no model or data
file ever passes through it.
"""
import atexit
import contextlib
import hashlib
import importlib.machinery
import importlib.util
import inspect
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

from . import kernel_loops

__all__ = ["SIGNATURES", "PARTS", "build", "load", "module_paths", "module_name"]

# numba's options for every kernel, compiled in-process (kernels._define) and ahead of time (_compile) alike:
# NumPy's error model (x / 0 is inf, not an exception) and the GIL released during the call (lamina splits rows
# over its threads). Then each kernel's fastmath flags by its mode (SIGNATURES' first element, FASTMATH_OF):
# "exact" none (the NumPy code's operations in its order and rounding: Adam, col2im, max pooling); "fast"
# reassociation and fused multiply-add (their sums vectorise; no flag that assumes finite values); "fused" fused
# multiply-add alone, for the float32 passes with the kernels' own exp (_exp_into: its rounding to an integer
# and two-part reduction survive contraction, which reassociation would undo; a product-add rounded once is
# within the exp's ~1 ulp): on the 2-core Zen 2, (1024, 1024) float32 on one thread, GELU's forward and backward
# passes 1.98 + 1.53 -> 1.52 + 1.15 ms, SiLU's forward 1.32 -> 0.98, the exp alone 0.89 -> 0.69
OPTIONS = {"error_model": "numpy", "nogil": True}
FASTMATH = frozenset({"reassoc", "contract"})
FASTMATH_OF = {"exact": False, "fast": FASTMATH, "fused": frozenset({"contract"})}
# Each kernel's arguments: "T<n>" an n-dimensional C-contiguous array of the kernel's float dtype (float32 or
# float64: one export each), "T" a scalar of that dtype, "b" a bool, "i" an int64 scalar, "I1" a 1-D
# C-contiguous int64 array, "W4" a 4-D C-contiguous uint8 or int32 array (max pooling's note of the window
# offset: one export each). With its compilation mode (FASTMATH_OF's key) first, and, as a third element where a
# kernel is exported for fewer float dtypes, those dtypes' tags (the own exp's kernels are float32's alone).
SIGNATURES = {
    "layer_norm_rows": ("fast", ("T2", "T1", "T1", "b", "b", "T", "T2", "T1", "T1")),
    "layer_norm_rows_grad": ("fast", ("T2", "T2", "T1", "T1", "T1", "b", "b", "b", "T2", "T3")),
    "bias_relu_rows": ("fast", ("T2", "T1")),
    "relu_rows": ("exact", ("T2", "T2")),
    "relu_bias_grad_rows": ("fast", ("T2", "T2", "T2", "b", "T2")),
    "lstm_cell_grad": ("fast", ("T2", "T2", "T3", "T2", "T2", "T2", "T2")),
    "gru_cell_grad": ("fast", ("T2", "T3", "T2", "T2", "T2", "T2", "T2", "T2")),
    "adam_update": ("exact", ("T1", "T1", "T1", "T1", "T", "T", "T", "T")),
    "col2im_gather": ("exact", ("T6", "T4", "i", "i", "i", "i", "i", "i")),
    "max_pool_rows": ("exact", ("T4", "i", "i", "i", "i", "i", "i", "T4", "W4", "b")),
    "max_pool_rows_grad": ("exact", ("T4", "W4", "i", "i", "i", "i", "i", "i", "T4", "b", "b")),
    "column_max_subtract": ("exact", ("T3", "T")),
    "column_sum_divide": ("exact", ("T3",)),
    "column_softmax_grad": ("exact", ("T3", "T3", "T3", "T")),
    "scatter_rows": ("exact", ("I1", "T2", "T2")),
    "column_sums_rows": ("fast", ("T2", "T1", "b", "T2")),
    "batch_norm_rows": ("fast", ("T2", "T1", "T1", "T1", "T1", "b", "b", "T2")),
    "scale_shift_rows": ("exact", ("T2", "T1", "T1", "T2")),
    "shift_rows": ("exact", ("T2", "T1", "T1", "T2")),
    "batch_norm_rows_grad_sums": ("fast", ("T2", "T2", "T1", "T1", "T3")),
    "batch_norm_rows_grad": ("fast", ("T2", "T2", "T1", "T1", "T1", "T1", "T1", "T2")),
    "depthwise_direct": ("exact", ("T1", "T2", "T1", "T1", "I1", "i", "i")),
    "depthwise_direct_grad_input": ("exact", ("T1", "T2", "T1", "I1", "i", "i")),
    "depthwise_direct_grad_weight": ("exact", ("T1", "T1", "T2", "T3", "I1", "i", "i", "i")),
    "im2col_rows": ("exact", ("T4", "T2") + ("i",) * 12),
    "lstm_cell": ("fused", ("T2", "T2", "T1", "b", "T2", "T3", "T2", "T2", "T2"), ("f4",)),
    "sigmoid_tanh_rows": ("fused", ("T2", "b"), ("f4",)),
    "silu_rows": ("fused", ("T2", "T2", "T2"), ("f4",)),
    "exp_rows": ("fused", ("T2", "T1", "T2", "T1", "b", "T2"), ("f4",)),
    "softmax_rows_grad": ("fast", ("T2", "T2", "b", "T2")),
    "silu_grad_rows": ("exact", ("T2", "T2", "T2", "T2")),
    "gelu_rows": ("fused", ("T2", "T2", "T2"), ("f4",)),
    "gelu_grad_rows": ("fused", ("T2", "T2", "T2", "T2"), ("f4",)),
    "conv_planes": ("fast", ("T4", "T4", "T1", "T4", "T2", "T2") + ("i",) * 6 + ("b", "i", "i", "T4")),
    "conv_planes_grad_weight": ("fast", ("T4", "T4", "T5", "T2", "T2") + ("i",) * 8 + ("T4", "T2")),
    "group_norm_rows": ("exact", ("T3", "T1", "T1", "b", "b", "T", "i", "T2", "T2", "T3", "i", "i")),
    "group_norm_rows_grad": ("exact", ("T3", "T3", "T2", "T2", "T1", "b", "i", "b", "T3", "T3", "i", "i")),
    "leaky_relu_rows": ("exact", ("T2", "T", "T2")),
    "leaky_relu_grad_rows": ("exact", ("T2", "T2", "T", "T2")),
    "prelu_rows": ("exact", ("T2", "T1", "T2", "i", "i")),
    "prelu_grad_rows": ("exact", ("T2", "T2", "T1", "T2", "T1", "i", "i", "b", "b")),
    "extreme_grad_rows": ("exact", ("T3", "T2", "T2", "T3", "T1")),
    "channel_sums_rows": ("fast", ("T3", "T1", "b", "T2")),
    "diff_loss_rows": ("fast", ("T2", "T2", "i", "T", "T1")),
    "diff_loss_grad_rows": ("exact", ("T2", "T2", "i", "T", "T1", "T2")),
    "channel_norm_rows": ("exact", ("T3", "T1", "T1", "T1", "T1", "b", "b", "T3")),
    "channel_norm_grad_sums": ("fast", ("T3", "T3", "T1", "T1", "T3")),
    "channel_norm_grad": ("fast", ("T3", "T3", "T1", "T1", "T1", "T1", "T1", "T3")),
    "sigmoid_rows": ("fused", ("T2", "T2", "b", "T2"), ("f4",)),
    "sigmoid_grad_rows": ("exact", ("T2", "T2", "T2")),
    "elu_rows": ("fused", ("T2", "T", "T", "T2", "T2", "b", "T2"), ("f4",)),
    "elu_grad_rows": ("exact", ("T2", "T2", "T2", "T", "T", "T2")),
    "softplus_rows": ("fused", ("T2", "T2"), ("f4",)),
    "sgd_momentum_update": ("exact", ("T1", "T1", "T1", "T", "T", "b")),
    "rmsprop_update": ("exact", ("T1", "T1", "T1", "T1", "T", "T", "T", "T", "T", "b")),
    "adagrad_update": ("exact", ("T1", "T1", "T1", "T", "T")),
    "nadam_update": ("exact", ("T1", "T1", "T1", "T1") + ("T",) * 7),
    "lion_update": ("exact", ("T1", "T1", "T1") + ("T",) * 5),
}
# The kernels in two modules of about equal build time, built side by side on two cores (seconds of one core on
# the 2-core Intel VM, float32 and float64 together; the kernels added later, batch norm's, the depthwise
# convolution's, im2col's and the ReLU's, unmarked: the two parts built one at a time on the AMD VM, 10.8 and 12.1 s)
PARTS = (("max_pool_rows", "layer_norm_rows", "layer_norm_rows_grad", "column_softmax_grad",      # 4.9, 1.9, 1.6, .8
          "scatter_rows", "column_sums_rows", "batch_norm_rows_grad_sums", "depthwise_direct_grad_input",
          "im2col_rows", "scale_shift_rows", "lstm_cell", "silu_rows", "exp_rows", "gelu_rows", "conv_planes",
          "group_norm_rows", "elu_rows", "sigmoid_grad_rows", "leaky_relu_grad_rows", "rmsprop_update",
          "nadam_update", "prelu_grad_rows", "channel_sums_rows",
          "channel_norm_grad", "diff_loss_rows", "shift_rows"),
         ("max_pool_rows_grad", "col2im_gather", "bias_relu_rows", "relu_bias_grad_rows",           # 3.7, 1.8, .4, .8
          "lstm_cell_grad", "gru_cell_grad", "adam_update", "column_max_subtract",                  # .9, .8, .5, .8
          "column_sum_divide", "batch_norm_rows", "batch_norm_rows_grad", "depthwise_direct", "relu_rows",
          "depthwise_direct_grad_weight", "sigmoid_tanh_rows", "silu_grad_rows", "softmax_rows_grad", "gelu_grad_rows",
          "conv_planes_grad_weight", "group_norm_rows_grad", "softplus_rows", "sigmoid_rows", "elu_grad_rows",
          "leaky_relu_rows", "sgd_momentum_update", "adagrad_update", "lion_update", "prelu_rows",
          "extreme_grad_rows", "channel_norm_rows", "channel_norm_grad_sums",
          "diff_loss_grad_rows"))
# kernel_loops' helpers: plain functions some kernels call (numba compiles no call to a plain Python function, and
# kernel_loops imports no numba), each with the compilation mode of its callers (all of one mode: a test checks).
# Each is compiled so and put in kernel_loops' namespace before any kernel that calls it compiles, in-process
# (kernels._define) and ahead of time (_compile): compile_helpers. (The depthwise kernels' shared walk over a row's
# windows stays written out in each: as helpers, called or inlined by numba, the layer ran ~10% slower at 32
# channels.)
HELPERS = {"_exp_scalar": "fused", "_exp_into": "fused", "_tanh_scalar": "fused", "_sigmoid_row": "fused",
           "_span": "exact", "_window": "exact", "_max_pool_plain": "exact", "_pack_planes": "fast",
           "_grad_weight_sums": "fast"}


def compile_helpers(njit_of):
    """Replace each of HELPERS in kernel_loops by its compiled version ``njit_of[mode](function)`` (njit_of: numba's
    njit decorator for each compilation mode; once a process: a helper already compiled stays)."""
    for name, mode in HELPERS.items():
        f = getattr(kernel_loops, name)
        if not hasattr(f, "py_func"):   # (a numba dispatcher keeps the Python function there)
            setattr(kernel_loops, name, njit_of[mode](f))


def njit_of_modes(numba, **options):
    """numba.njit with OPTIONS (and ``options``) for each compilation mode, with FASTMATH_OF's flags."""
    return {mode: numba.njit(fastmath=set(flags) if flags else False, **options, **OPTIONS)
            for mode, flags in FASTMATH_OF.items()}


_FLOATS = {"f4": np.dtype(np.float32), "f8": np.dtype(np.float64)}
_NOTES = {"u1": np.dtype(np.uint8), "i4": np.dtype(np.int32)}


def _floats(name):
    """The float dtypes' tags kernel ``name`` is exported for (SIGNATURES' third element; all of _FLOATS without
    one)."""
    entry = SIGNATURES[name]
    return entry[2] if len(entry) > 2 else tuple(_FLOATS)


def _variants(spec, floats=tuple(_FLOATS)):
    """(export suffix, {token letter: dtype}) for each dtype combination a signature is exported for (of the
    float dtypes ``floats``)."""
    notes = _NOTES if any(tok.startswith("W") for tok in spec) else {None: None}
    for f, fdt in _FLOATS.items():
        if f not in floats:
            continue
        for w, wdt in notes.items():
            yield (f if w is None else f"{f}_{w}"), {"T": fdt, "W": wdt, "I": np.dtype(np.int64)}


def _numba_type(tok, dtypes):
    """The numba signature text of one argument token."""
    if tok == "b":
        return "b1"
    if tok == "i":
        return "i8"
    code = {np.dtype(np.float32): "f4", np.dtype(np.float64): "f8", np.dtype(np.uint8): "u1",
            np.dtype(np.int32): "i4", np.dtype(np.int64): "i8"}[dtypes[tok[0]]]
    if tok == "T":
        return code
    ndim = int(tok[1:])
    return f"{code}[{', '.join([':'] * (ndim - 1) + ['::1'])}]"


def _cpu_features():
    """The CPU features NumPy detected at import (its own dispatch uses them), as one sorted text."""
    return ",".join(sorted(k for k, v in numpy_cpu_features().items() if v))


def numpy_cpu_features():
    """{feature: detected} as NumPy detected them at import, the features its own SIMD dispatch chooses by."""
    core = getattr(np, "_core", None) or np.core
    return getattr(core._multiarray_umath, "__cpu_features__", {})


def module_name(part):
    """The extension module of part ``part`` (of PARTS): its name carries a digest of everything its code
    depends on."""
    h = hashlib.sha256()
    for text in (inspect.getsource(kernel_loops), repr([(n, SIGNATURES[n]) for n in PARTS[part]]),
                 repr((sorted(OPTIONS.items()), sorted((k, sorted(v or ())) for k, v in FASTMATH_OF.items()),
                       sorted(HELPERS.items()))),
                 np.__version__, platform.machine(),
                 _cpu_features(), sys.implementation.cache_tag or ""):
        h.update(text.encode())
        h.update(b"\0")
    return f"_lamina_kernels{part}_{h.hexdigest()[:20]}"


def _directories():
    """Where the modules may be: beside this file, then lamina's home folder."""
    from ..utils.data_utils import lamina_home
    return [os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__"),
            os.path.join(lamina_home(), "kernels")]


def module_paths():
    """The built modules' paths (one a part) if every part is built for this machine and these loops, else
    None."""
    paths = []
    for part in range(len(PARTS)):
        name = module_name(part) + importlib.machinery.EXTENSION_SUFFIXES[0]
        found = [os.path.join(d, name) for d in _directories() if os.path.isfile(os.path.join(d, name))]
        if not found:
            return None
        paths.append(found[0])
    return paths


def load(fallback):
    """The kernels from the built modules, as an object with one attribute per kernel (kernels.py's names),
    or None if they are not built. ``fallback(name)`` gives the in-process compiled kernel for a call whose
    arguments the exports do not take."""
    paths = module_paths()
    if paths is None:
        return None
    kernels = _Loaded()
    kernels.paths = paths
    for part, path in enumerate(paths):
        name = os.path.basename(path).split(".")[0]
        loader = importlib.machinery.ExtensionFileLoader(name, path)
        module = importlib.util.module_from_spec(importlib.util.spec_from_file_location(name, path, loader=loader))
        loader.exec_module(module)
        for kname in PARTS[part]:
            spec = SIGNATURES[kname][1]
            exports = {tag: getattr(module, f"{kname}__{tag}") for tag, _ in _variants(spec, _floats(kname))}
            setattr(kernels, kname, _guard(kname, spec, exports, fallback))
    return kernels


class _Loaded:
    pass


def _guard(name, spec, exports, fallback):
    """The kernel as a function that checks every argument against the signature (type, dtype, rank and
    C-contiguity of each array; the type of each scalar) and calls the export for its dtypes; any other call goes
    to ``fallback(name)``. A call with nine arguments takes ~3.7 us here (the bare export ~0.6, numba's own
    dispatch ~1.4)."""
    first = next(i for i, tok in enumerate(spec) if tok[0] == "T" and len(tok) > 1)
    note = next((i for i, tok in enumerate(spec) if tok[0] == "W"), first)   # (no note: the float dtype again)
    # (index, rank, whose dtype: 0 the first array's, 1 the note's, 2 int64) of each array; (index, types) of
    # each scalar
    arrays = tuple((i, int(tok[1:]), "TWI".index(tok[0])) for i, tok in enumerate(spec) if len(tok) > 1)
    scalars = tuple((i, _BOOLS if tok == "b" else _INTS if tok == "i" else _NUMBERS)
                    for i, tok in enumerate(spec) if len(tok) == 1)
    table = {(dtypes["T"], dtypes["W"] if note != first else dtypes["T"]): exports[tag]
             for tag, dtypes in _variants(spec, _floats(name))}
    n, ndarray, int64 = len(spec), np.ndarray, np.dtype(np.int64)

    def call(*args):
        if len(args) == n:
            d = getattr(args[first], "dtype", None)
            w = getattr(args[note], "dtype", None)
            fn = table.get((d, w))
            if fn is not None:
                kinds = (d, w, int64)
                for i, ndim, kind in arrays:
                    a = args[i]
                    # dtypes by identity (NumPy's native float32, float64, ... are one object each: an equal
                    # dtype that is another object only costs a trip to numba)
                    if type(a) is not ndarray or a.dtype is not kinds[kind] or a.ndim != ndim:
                        break
                    if not a.flags.c_contiguous:
                        break
                else:
                    for i, types in scalars:
                        if type(args[i]) not in types:
                            break
                    else:
                        return fn(*args)
        return fallback(name)(*args)
    call.__name__ = call.__qualname__ = name
    return call


_BOOLS = (bool, np.bool_)
_INTS = (int, np.int64, np.int32, np.int16, np.int8, np.uint64, np.uint32, np.uint16, np.uint8)
_NUMBERS = (float, int, np.float32, np.float64, np.int64, np.int32)


def build(directory=None, parts=None, verbose=False):
    """Compile the kernels ahead of time into this machine's modules (numba and a C compiler needed) and return
    their paths. ``directory``: where to write them (default: the first writable of ``__pycache__`` beside this
    file and ``$LAMINA_HOME/kernels``); ``parts``: which of PARTS (default all: more than one are built in
    processes side by side, one a core). Each is written to a temporary name first and renamed, so that a process
    never loads a half-written module and two builds at once leave one whole file."""
    if importlib.util.find_spec("numba") is None:
        raise ImportError("building the kernels needs numba: pip install 'lamina[fast]'")
    parts = list(range(len(PARTS))) if parts is None else list(parts)
    target = _target(directory)
    if len(parts) == 1 or (os.cpu_count() or 1) == 1:
        paths = [_build_part(part, target, verbose) for part in parts]
    else:
        import concurrent.futures
        import multiprocessing
        with concurrent.futures.ProcessPoolExecutor(min(len(parts), os.cpu_count()),
                                                    mp_context=multiprocessing.get_context("spawn")) as pool:
            paths = list(pool.map(_build_part, parts, [target] * len(parts), [verbose] * len(parts)))
    if module_paths() is not None:   # built for this machine: an earlier automatic build's failure is history
        for d in _directories():
            with contextlib.suppress(OSError):
                os.remove(_note(d, "failed"))
    return paths


def _target(directory=None):
    """The folder the modules are written to: ``directory``, else the first writable of _directories()."""
    targets = [directory] if directory is not None else _directories()
    for d in targets:
        try:
            os.makedirs(d, exist_ok=True)
        except OSError:
            continue
        if os.access(d, os.W_OK):
            return d
    raise OSError(f"no writable folder for the compiled kernels among: {', '.join(targets)}")


# ------------------------------------------------------------------ the automatic build
# A program that passes 'auto' mode's warm-up (kernels._deferred: it keeps to NumPy's code meanwhile) or reaches
# numba's in-process compilation (kernels._load: LAMINA_KERNELS=numba, or 'auto' where no build can come) while
# the modules are not built builds them when it ends (a deferring one that runs on past kernels.LATE_ELEMENTS: in
# its course, build_now, and runs them from there), once for the machine, so that later programs load the modules
# in milliseconds instead of numba and LLVM (~125 MB and ~1 s each). At exit or with the program waiting for it,
# never beside the program's work: a build running beside a training run slowed its steps 1.1-8x on the 2-core VM
# (at idle priority too: OpenBLAS's waiting threads yield their core to it), and one left running after the program
# would slow whatever runs next (the next measurement of a benchmark above all). The build is a process of its
# own session (a Ctrl-C meant for the program does not reach it; one during the wait stops it). One build at a
# time per folder (a lock file naming its process); one that fails leaves a note with its error and is not
# retried automatically (``lamina kernels`` shows the compiler's own messages, and clears the note when it
# succeeds). LAMINA_KERNELS_AUTOBUILD=0 turns it off.
AUTOBUILD_ENV = "LAMINA_KERNELS_AUTOBUILD"
_STALE_LOCK_SECONDS = 3600     # a lock older than this is a build that died without removing it
_autobuild = {"scheduled": False}


def _note(directory, kind):
    """The path of the automatic build's lock ('building') or failure note ('failed') in ``directory``: named
    after every part's module, so that a note about other loops or another CPU is never read."""
    tag = hashlib.sha256("".join(module_name(p) for p in range(len(PARTS))).encode()).hexdigest()[:20]
    return os.path.join(directory, f".lamina-kernels-{tag}.{kind}")


def _lock_holder(lock):
    """The process id of a live build holding ``lock``, else None (no lock, or one left by a dead process)."""
    try:
        with open(lock, encoding="ascii") as f:
            pid = int(f.read(32).strip() or 0)
        age = time.time() - os.stat(lock).st_mtime
    except (OSError, ValueError):
        return None
    if pid <= 0 or age > _STALE_LOCK_SECONDS:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:   # alive, another user's
        pass
    return pid


def build_status():
    """Where the automatic build stands: ('running', pid), ('failed', message) or (None, None)."""
    for d in _directories():
        pid = _lock_holder(_note(d, "building"))
        if pid is not None:
            return "running", pid
        try:
            with open(_note(d, "failed"), encoding="utf-8", errors="replace") as f:
                return "failed", f.read(2000).strip()
        except OSError:
            pass
    return None, None


def _autobuild_allowed():
    return os.environ.get(AUTOBUILD_ENV, "1").strip() != "0" and os.name == "posix"


def schedule_build():
    """Have the modules built when this program ends (see above), once per program, unless
    LAMINA_KERNELS_AUTOBUILD=0 or this is not a POSIX system. Returns whether it was scheduled now."""
    if _autobuild["scheduled"] or not _autobuild_allowed():
        return False
    _autobuild["scheduled"] = True
    atexit.register(_build_at_exit)
    return True


def build_expected():
    """Whether a program ending now could have the modules built (or one is being built): the automatic build
    allowed here, numba installed (found, not imported), no earlier automatic build failed, a folder to write
    them to."""
    if not _autobuild_allowed() or importlib.util.find_spec("numba") is None:
        return False
    try:
        if build_status()[0] == "failed":
            return False
        _target()
    except OSError:
        return False
    return True


def _build_at_exit():
    process = _launch()
    if process is not None:
        _wait(process)


def build_now():
    """The automatic build started now and waited for, in the middle of a long program (kernels._deferred: past
    kernels.LATE_ELEMENTS), which then runs the modules: whether they are built for this machine afterwards. A
    Ctrl-C during the wait stops the build and then the program, as it would have without the build. Where another
    program's build holds the lock (the other ranks of a data-parallel job reach this call together), this one
    waits for that build too, so that they all go on with the modules from the same call."""
    process = _launch(now=True)
    if process is not None:
        _wait(process, reraise=True)
    try:
        while module_paths() is None and build_status()[0] == "running":
            time.sleep(0.2)
        return module_paths() is not None
    except OSError:
        return False


def _launch(now=False):
    """The build's process, started unless the modules are built, one is being built, an earlier automatic build
    failed, or there is no folder to write them to; else None. ``now``: in the middle of the program (build_now),
    not at its exit (what the line on stderr says)."""
    if not _autobuild_allowed():
        return None
    try:
        if module_paths() is not None or build_status()[0] is not None:
            return None
        _target()
    except OSError:
        return None
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", "from lamina.ops import kernels_aot; raise SystemExit(kernels_aot._build_process())"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
            start_new_session=True, close_fds=True)
    except OSError:
        return None
    then = ("this long run goes on with them, and later programs load them at once" if now else
            "later programs load them at once")
    # in a program's course, on a terminal: on a line of its own, not after a progress bar's half-drawn line
    fresh_line = "\n" if now and getattr(sys.stderr, "isatty", lambda: False)() else ""
    print(f"{fresh_line}lamina: building its compiled kernels for this machine, once (~20 s; {then}, without numba; "
          f"Ctrl-C {'stops the build and the program' if now else 'skips it'}, {AUTOBUILD_ENV}=0 turns this off)...",
          file=sys.stderr, flush=True)
    return process


def _wait(process, reraise=False):
    """Wait for the build's process; a Ctrl-C stops it instead (its lock, left by a process that is gone, does not
    stop the next program's build), and with ``reraise`` goes on to the program."""
    try:
        process.wait()
    except KeyboardInterrupt:
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGTERM)   # the build and its compiler processes (its own session)
        if reraise:
            raise


def _build_process(directory=None):
    """The automatic build's process (_launch): the lock, the build, and a note with the error where it fails.
    Returns its exit status."""
    target = _target(directory)
    lock = _note(target, "building")
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            break
        except FileExistsError:
            if _lock_holder(lock) is not None:
                return 0            # another process is building them
            with contextlib.suppress(OSError):
                os.remove(lock)     # left by a build that died: take it over
    else:
        return 0
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(str(os.getpid()))
    try:
        build(target)
    except Exception as e:
        with contextlib.suppress(OSError), open(_note(target, "failed"), "w", encoding="utf-8") as f:
            f.write(f"{type(e).__name__}: {e}"[:2000])
        return 1
    finally:
        with contextlib.suppress(OSError):
            os.remove(lock)
    return 0


def _build_part(part, target, verbose=False):
    name = module_name(part)
    final = os.path.join(target, name + importlib.machinery.EXTENSION_SUFFIXES[0])
    with tempfile.TemporaryDirectory(prefix="lamina-kernels-") as tmp:
        built = _compile(name, PARTS[part], tmp, verbose)
        staging = final + f".{os.getpid()}.part"
        try:
            shutil.copyfile(built, staging)
            os.chmod(staging, 0o755)
            os.replace(staging, final)
        except BaseException:   # (a full disk, an interrupt): no half-written file left beside the modules
            if os.path.exists(staging):
                os.remove(staging)
            raise
    return final


def _compile(name, kernel_names, out_dir, verbose):
    """numba's pycc over kernel_loops with the JIT's options (OPTIONS, and each kernel's FASTMATH_OF)."""
    from numba.core.errors import NumbaPendingDeprecationWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumbaPendingDeprecationWarning)
        from numba.pycc import CC
        from numba.pycc import compiler as pycc_compiler
    from numba.core.cpu import FastMathOptions

    import numba
    compile_helpers(njit_of_modes(numba))
    flags_of = {getattr(kernel_loops, k): FASTMATH_OF[mode] for k, (mode, *_) in SIGNATURES.items()}
    original = pycc_compiler.compile_extra

    def compile_extra(typingctx, targetctx, func, args, return_type, flags, locals, **kws):
        # pycc compiles every export with one Flags object and no options: set the JIT's per function
        flags.release_gil = OPTIONS["nogil"]
        flags.error_model = OPTIONS["error_model"]
        fastmath = flags_of.get(func, False)   # (a helper: compile_helpers' flags)
        flags.fastmath = FastMathOptions(set(fastmath) if fastmath else False)
        return original(typingctx, targetctx, func, args, return_type, flags, locals, **kws)

    cc = CC(name)
    cc.output_dir = out_dir
    cc.target_cpu = "host"
    cc.verbose = verbose
    for kname in kernel_names:
        func, spec = getattr(kernel_loops, kname), SIGNATURES[kname][1]
        for tag, dtypes in _variants(spec, _floats(kname)):
            sig = f"void({', '.join(_numba_type(tok, dtypes) for tok in spec)})"
            cc.export(f"{kname}__{tag}", sig)(func)
    pycc_compiler.compile_extra = compile_extra
    try:
        cc.compile()
    finally:
        pycc_compiler.compile_extra = original
    return os.path.join(out_dir, cc.output_file)
