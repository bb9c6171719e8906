"""Compiled kernels for the hottest element-wise chains (optional: ``pip install 'lamina[fast]'``, numba).

NumPy runs one pass over memory per call: LayerNorm's forward is ~6 passes over its input-sized arrays and
its backward ~8, a Dense layer's bias + ReLU two forward and two backward. Once the arrays outgrow the core's
cache, each pass costs a trip to memory, and on a machine whose single core moves ~20 GB/s that is most of
the time these ops take (a (2048, 128) float32 LayerNorm: ~0.9 ms forward in NumPy on a 2.1 GHz Xeon, of
which ~0.1 ms is reading and writing it once). The kernels here do the same arithmetic row by row, each row
read while it sits in the first-level cache, so each array is read or written once:

- :func:`layer_norm_forward` / :func:`layer_norm_backward`: LayerNormalization over the trailing axes
  (rows of D values); the backward recomputes x-hat from x, the mean and the inverse deviation instead of
  keeping an input-sized x-hat (less memory as well).
- :func:`batch_norm_forward` / :func:`batch_norm_backward`: training BatchNormalization over channels-last
  rows, the per-channel sums in passes of their own and x-hat recomputed from x in backward, as LayerNorm's;
  :func:`batch_norm_channels_forward` / :func:`batch_norm_channels_backward` the same over a channel axis before
  others (channels first), each channel's positions a contiguous run.
- :func:`group_norm_forward` / :func:`group_norm_backward`: GroupNormalization (and InstanceNormalization), each
  sample's passes (statistics, then y; backward the sums, then dx) one after another while it is in cache, the
  sums in float64, samples over threads.
- :func:`bias_relu`: y += bias, then max(y, 0), in place, one pass.
- :func:`relu_bias_grad`: the ReLU mask of the gradient and the bias gradient (its column sums), one pass
  (without the bias, a ReLU layer's or activation's backward: ops.math.relu_grad).
- :func:`lstm_cell_grad` / :func:`gru_cell_grad`: one backward step of the LSTM's (GRU's) gate arithmetic
  (sigmoid and tanh derivatives from the saved activations: no transcendental function, which a compiled
  loop computes slower than NumPy's SIMD code), one call where NumPy makes a dozen per step.
- :func:`lstm_cell`: one forward step of the LSTM's gate arithmetic in float32, with its own vectorised exp and
  tanh (a polynomial each, within 3 ulps): :data:`OWN_EXP` (on every machine: where NumPy has no SIMD exp and
  tanh, without AVX-512, they run at scalar speed there, and with it the passes saved still pay);
  :func:`sigmoid_tanh` the same exp and tanh as an in-place pass (the GRU's and SimpleRNN's gates, the tanh of
  GELU's approximation; its tanh only where NumPy's is scalar: :data:`NUMPY_SIMD_EXP`), and
  :func:`silu` SiLU's sigmoid and product in one pass (EfficientNet's swish); :func:`silu_grad` its gradient
  in one pass on every machine (NumPy's chain: five); :func:`gelu` / :func:`gelu_grad` exact GELU's (erf)
  forward and backward in one pass each with that exp.
- :func:`leaky_relu` / :func:`sigmoid` / :func:`elu` / :func:`softplus` (and tanh through :func:`sigmoid_tanh`):
  the activations' float32 forwards in one pass each with that exp (ELU's and SELU's expm1 a polynomial near 0,
  softplus' log1p Cephes' log polynomial) where OWN_EXP, the far tails as NumPy's formulas give them; LeakyReLU's
  forward and the gradients (:func:`leaky_relu_grad`, :func:`sigmoid_grad`, :func:`elu_grad`) in one pass each on
  every machine, NumPy's chains' bits. activations._chain hands each thread's whole run to them at once.
- :func:`extreme_grad`: the gradient of a maximum or minimum over the middle axis of (B, R, A) (a global max
  pooling over steps or pixels), shared among ties, in two passes over x, samples over threads.
- :func:`diff_loss` / :func:`diff_loss_grad`: the mean squared, mean absolute and Huber losses' row sums of f(p - t)
  and their gradient f'(p - t) times each row's factor, one pass each, the difference never stored.
- :func:`prelu` / :func:`prelu_grad`: PReLU's forward and both gradients (the input's and the slopes', summed over
  the samples) in one pass each, the select's bits, threads taking columns so that each slope's sum is the same.
- :func:`adam_update`: Adam's moments and weight update, one pass over the four arrays instead of twelve
  NumPy passes, with NumPy's float operations (the same weights to the bit); :func:`sgd_momentum_update`,
  :func:`rmsprop_update`, :func:`adagrad_update`, :func:`nadam_update` and :func:`lion_update` the same for
  SGD with momentum, RMSprop, Adagrad, Nadam and Lion.
- :func:`col2im_gather`: a convolution's input gradient from its columns, each input position summed once
  in the NumPy code's order, instead of one strided window addition per kernel offset.
- :func:`im2col`: a padded convolution's column rows, written from the unpadded input with zeros for the
  padding (NumPy: a padded copy of each block, then the strided copy); a copy, so the same values.
- :func:`depthwise`: a depthwise convolution's forward (with its bias), input gradient and weight (and bias)
  gradient straight from the unpadded input, row by row, each offset's products only where its window lies inside
  the input (NumPy: a padded flat copy of the input, and of the output gradient backward, a multiply and an add an
  offset over it); the same output and input gradient as NumPy's code, the weight gradient summed by fixed chunks.
- :func:`conv_planes`: a stride-1 convolution with few channels each way (and its weight gradient) over each
  sample's input packed channels-first into zero-padded planes, each kernel offset one pass over contiguous runs
  (NumPy: an im2col copy of KH * KW times the input and a product with few output columns, far below BLAS's
  rate); the same sums in another order.
- :func:`max_pool2d` / :func:`max_pool2d_grad`: 2-D max pooling (MaxPooling1D/2D, ops.max_pool in 1-D and
  2-D), the maximum and the note of its window offset in one pass over the input (NumPy: one compare, multiply
  and two maxima per window offset, over a padded copy), the gradient in one pass writing each input value
  once (NumPy: a compare and a multiply per offset). Equal to NumPy's code bit for bit, overlapping windows'
  sums included (they add in its order), but for which of two NaNs an addition keeps.
- :func:`softmax_columns`: attention's softmax over the keys of its transposed scores, the column maxima and
  sums each in one pass over a block in cache (NumPy: strided reductions and separate passes), NumPy's exp
  between them (for float32 the own exp where OWN_EXP), and its backward's (dW - row sum) * W in one pass; the
  same values as NumPy's code (within the own exp's roundings where it runs).
- :func:`exp_rows`: exp(x - row maxima) of float32 rows with the kernels' own exp (OWN_EXP), and a
  softmax's row sums and division in the same visit of each row (the softmaxes and the sparse cross-entropy over
  wide rows); :func:`softmax_rows_grad` a softmax's (or log-softmax's) backward over rows, each row visited once,
  on every machine; :func:`shift_rows` a log-softmax's (x - max) - log(sum) in one pass (NumPy's bits).

They are used only where they pay: NumPy arrays (not CuPy), float32 or float64, C-contiguous, at least
:data:`MIN_ELEMENTS` values (smaller arrays stay in cache anyway), and in 'auto' mode only once the process
has passed :data:`WARMUP_ELEMENTS` values through eligible calls (loading numba costs ~0.9 s, which a short
program never wins back). Without numba, or with ``LAMINA_KERNELS=numpy`` in the environment (or
:func:`set_mode`), every caller runs its NumPy code, which computes the same values (tests check both ways;
the sums run in another order, so the last bits may differ). The arithmetic follows the NumPy code's rules:
NaN propagates as there (no ``fastmath`` flags that assume finite values: the kernels that reduce allow only
reassociation and fused multiply-add, so their sums vectorise; the float32 passes with the kernels' own exp
fused multiply-add alone; Adam's, col2im's and max pooling's none, so they repeat the NumPy code's operations
in its order: kernels_aot.FASTMATH_OF). Per-row statistics accumulate in the array's dtype; column sums over
many rows (bias and gamma gradients) in the array's dtype within blocks of _BLOCK rows and in float64
across blocks.

The loops themselves are plain Python in kernel_loops.py. They run compiled one of two ways: from the modules
``lamina kernels`` builds ahead of time for this machine (kernels_aot.py: loaded in milliseconds, no numba or
LLVM in the process, the same values to the bit), or by numba on each kernel's first call for a dtype (with
``LAMINA_KERNELS=numba``, or in 'auto' mode where those modules are not built and cannot be: see
:func:`_deferred`), which caches the machine code on disk (``cache=True``: in ``__pycache__`` beside
kernel_loops.py, or numba's user cache directory when that is read-only; ``NUMBA_CACHE_DIR`` moves it). Both
caches are lamina's and numba's own, like Python's bytecode cache: lamina's model and data files never pass
through them.
"""
import os
import threading

import numpy as np

from .. import threads as _threads
from . import kernel_loops as _loops
from . import kernels_aot as _aot

__all__ = ["MIN_ELEMENTS", "mode", "set_mode", "available", "in_use", "layer_norm_forward", "layer_norm_backward",
           "batch_norm_forward", "batch_norm_backward", "scale_shift", "bias_relu", "relu", "relu_bias_grad",
           "lstm_cell", "sigmoid_tanh", "lstm_cell_grad", "gru_cell_grad", "adam_update", "col2im_gather",
           "depthwise", "conv_planes", "im2col", "max_pool2d", "max_pool2d_grad", "softmax_columns",
           "softmax_columns_grad", "scatter_rows", "silu", "silu_grad", "exp_rows", "softmax_rows_grad", "gelu",
           "gelu_grad", "leaky_relu", "leaky_relu_grad", "sigmoid", "sigmoid_grad", "elu", "elu_grad", "softplus",
           "sgd_momentum_update", "rmsprop_update", "adagrad_update", "nadam_update",
           "lion_update", "prelu", "prelu_grad", "extreme_grad",
           "batch_norm_channels_forward", "batch_norm_channels_backward", "diff_loss", "diff_loss_grad"]

# Smaller arrays keep to NumPy (a (64, 512) float32 array, 128 KB, already stays in cache).
MIN_ELEMENTS = 1 << 15
# Adam's update takes the kernel at any size: its NumPy code is ten ufunc calls, whose cost at small sizes is
# per call (a 128-value update: 14.6 us against the compiled call's 10.1).
ADAM_MIN_ELEMENTS = 1
# The softmax rows (exp_rows with find_max and sums: Softmax, the cross-entropies from logits) from fewer values
# than the other kernels: NumPy's code there is five or six calls (maxima, subtract, exp, row sums, divide). Zen 4,
# one process alternating both, best of 8, op forward + backward: (64, 64) softmax 0.95, sparse CE 0.91; (128, 100)
# 0.88 / 0.89; (256, 64) 0.88 / 0.83; but (32, 10) to (32, 64) 0.98-1.07 (the calls' own cost).
SOFTMAX_MIN_ELEMENTS = 1 << 12
# The optimizers' one-pass updates (SGD's, RMSprop's, Adagrad's, Nadam's, Lion's) split a weight over lamina's
# threads from this many values (SGD with momentum over the 2.4 M weights of 6 arrays, 2 threads on the 2-core
# Zen 2: 2.06 -> 1.46 ms a step, PyTorch's foreach 1.6-1.7; NumPy's four passes 4.48)
UPDATE_SPLIT_ELEMENTS = 1 << 19
# Rows are split over lamina's threads from this many values (a fused pass costs a third of NumPy's, so
# the hand-off to another thread pays later than for NumPy's passes).
SPLIT_ELEMENTS = 1 << 21
# ... and exp_rows' (a softmax's, a cross-entropy's) from this many: ~1 ns a value of exp on the 2-core Zen 2, as
# PyTorch's. Forward + backward there, split at 2^21 against here: (512, 1000) float32 from logits,
# CategoricalCrossentropy 1.74 -> 1.60 ms (PyTorch 0.7), SparseCategoricalCrossentropy 1.13 -> 0.96; a softmax over
# (32, 4, 64, 64) 1.11 -> 0.91; split from 2^17, (16, 8, 32, 32) lost 0.34 -> 0.36
EXP_SPLIT_ELEMENTS = 1 << 18
# ... and layer normalisation's from this many: its rows cost more than a pass's (three passes a row each way).
# Forward + backward on a 2-core Zen 2, split at 2^17 against 2^21, 10 alternating rounds: (64, 80, 128) 0.82x,
# (32, 128, 256) 0.77x, (8, 196, 768) 0.73x, but (32, 64, 128) (262 K values) 1.05x and (16, 64, 128) 1.26x;
# at 2^19, in a slower phase of the host: 0.94x, 0.90x, 0.93x, and (32, 64, 128) 0.98x (not split).
LN_SPLIT_ELEMENTS = 1 << 19
# ... and the training batch norm's passes from this many (five splits a step, each ~50 us of hand-off: forward +
# backward on the 2-core Zen 2, split at 2^21 against here, 3 rounds: (2048, 512) float32 1.63 -> 1.22 ms, (32, 32,
# 32, 32) 1.97 -> 1.42, (64, 16, 16, 48) 1.41 -> 1.24; but split at 2^19, (1024, 512) 0.71 -> 1.02, (32, 16, 16,
# 64) 0.79 -> 1.00, and at 2^17 (512, 512) 0.47 -> 0.88)
BN_SPLIT_ELEMENTS = 3 << 18
# Max pooling splits its samples over lamina's threads from this many input values, as NumPy's pooling code
# does (on 2 threads, with the other core partly busy: (32, 32, 32, 32) float32 forward and backward 1.59 ->
# 1.23 ms split; below, split at 2^17 values, (64, 13, 13, 64) 0.69 -> 0.99 and (16, 32, 32, 32) 0.89 -> 1.15).
POOL_SPLIT_ELEMENTS = 1 << 20
# Batch norm's kernels take rows (channels) of at least this many values: shorter rows run a compiled loop
# slower than NumPy's code on rows it tiles wider (forward + backward, (64, 32, 32, C) float32: C = 4 0.87 ms
# NumPy against 1.86 compiled, C = 8 2.26 against 2.24, C = 16 4.30 against 2.13, C = 32 9.6 against 2.6).
BN_MIN_CHANNELS = 8
# exp_rows takes narrow rows through its exp a group at a time, about this many values (a scratch row of it)
EXP_GROUP = 2048
# Column sums over many rows: blocks of this many rows (kernel_loops.BLOCK)
_BLOCK = _loops.BLOCK
# In 'auto' mode a process runs NumPy's code until its eligible calls have passed this many values, then the
# kernels (where they are not built: NumPy's code on, and the modules built at the program's exit, _deferred).
# The first call compiled in-process imports numba and LLVM (~0.9 s of CPU, ~125 MB), which the kernels' saving
# (~1-3 ns a value: a (2048, 128) float32 LayerNorm forward and backward save ~1.4 ms) wins back only after
# some 10^8-10^9 values: a short program (an evaluation, a few epochs of a small model, a docs snippet) never
# pays it, a long training run switches after its first seconds. The count is deterministic: the same program
# switches at the same call on every run. set_mode('numba') (or LAMINA_KERNELS=numba) starts at once, and so
# does 'auto' where the kernels are built ahead of time (``lamina kernels``: their import costs milliseconds).
WARMUP_ELEMENTS = 1 << 29
# A program that defers to the build at its exit (_deferred: past the warm-up, the modules not built) builds them
# in its own course once its eligible calls have passed this many values more (a few minutes of the benchmark's
# workloads: mlp ~230 s, cnn ~100, lstm ~300, transformer ~200 on the 2-core AMD VM), and runs them from there: a
# run that has gone on that long likely goes on as long again, which wins back the build's ~10-20 s pause, and its
# exit then has nothing left to build. A count, not a clock: the same program switches at the same call every
# run (and its NumPy and compiled sums, which round differently, at the same place).
LATE_ELEMENTS = 1 << 35
_MODES = ("auto", "numba", "numpy")
# kernels: the object _load gives (False: none); jit: numba's in-process kernels; pending: values 'auto' still
# waits for; fallbacks: calls the built module's guards handed to numba, by kernel
# deferred: whether 'auto' mode waits for the modules built at this program's exit (_deferred)
# late: values a deferring program still runs before building the modules itself (None: not counting)
_state = {"mode": None, "kernels": None, "jit": None, "pending": None, "fallbacks": {}, "deferred": None,
          "late": None}
_LATE_LOCK = threading.Lock()


def set_mode(value):
    """'auto' (default: numba when installed), 'numba' (the same, but an error now if it is missing) or
    'numpy' (never the compiled kernels)."""
    value = "auto" if value is None else str(value).strip().lower()
    if value not in _MODES:
        raise ValueError(f"The kernel mode must be one of {', '.join(_MODES)}. Received: {value!r}")
    if value == "numba" and _load() is None:
        raise ImportError("numba is not installed: pip install 'lamina[fast]' (or numba) for the compiled kernels.")
    _state["mode"] = value


def mode():
    """The mode in force: set_mode's, else the ``LAMINA_KERNELS`` environment variable's, else 'auto'."""
    if _state["mode"] is None:
        env = os.environ.get("LAMINA_KERNELS", "").strip().lower() or "auto"
        _state["mode"] = env if env in _MODES else "auto"
    return _state["mode"]


def available():
    """Whether the compiled kernels run (numba importable and the mode allows it)."""
    return mode() != "numpy" and _load() is not None


def in_use():
    """Which compiled kernels this process has run: 'built' (the modules built ahead of time), 'numba'
    (numba's in-process compilation) or None (none yet: NumPy's code, still warming up, or past the warm-up with the
    modules to be built at this program's exit: see _deferred)."""
    k = _state["kernels"]
    return None if not k else "built" if isinstance(k, _aot._Loaded) else "numba"


def _load():
    """The kernels: the module built ahead of time where there is one for this machine (kernels_aot.py: no
    numba loaded), else numba's in-process compilation, else None (numba not installed)."""
    if _state["kernels"] is None:
        aot = None
        try:
            aot = _aot.load(_fallback)
        except (ImportError, OSError) as e:   # a module that does not load (another NumPy ABI, a damaged file)
            import warnings
            warnings.warn(f"lamina's built kernels did not load ({e}); compiling them in this process instead "
                          "('lamina kernels' rebuilds them)", RuntimeWarning, stacklevel=3)
        _state["kernels"] = aot or _jit() or False
        if aot is None and _state["kernels"]:   # numba compiles here: the modules get built for later programs
            _aot.schedule_build()
    return _state["kernels"] or None


def _jit():
    """numba's in-process kernels (compiled on first call, cached on disk), or None without numba."""
    if _state["jit"] is None:
        try:
            import numba
        except ImportError:
            _state["jit"] = False
        else:
            _state["jit"] = _define(numba)
    return _state["jit"] or None


def _fallback(name):
    """The in-process kernel ``name``, for a call whose arguments the built module's exports do not take (see
    kernels_aot._guard; counted in _state["fallbacks"], which the tests keep at zero for lamina's own calls)."""
    _state["fallbacks"][name] = _state["fallbacks"].get(name, 0) + 1
    k = _jit()
    if k is None:
        raise TypeError(f"the compiled kernel {name} was called with arguments its built module does not take, "
                        "and numba, which would compile them, is not installed")
    return getattr(k, name)


def _warmup_pending():
    """Values 'auto' mode still runs through NumPy's code: none where a built module is there to load (its
    import costs milliseconds, not numba's ~0.9 s: see WARMUP_ELEMENTS)."""
    if _state["pending"] is None:
        try:
            built = _aot.module_paths() is not None
        except OSError:   # (the loops' source unreadable: no digest to find a module by)
            built = False
        _state["pending"] = 0 if built else WARMUP_ELEMENTS
    return _state["pending"]


def _eligible(*arrays, size=None, least=None):
    """The kernels if they should run on these arrays (the first one decides the size, unless ``size`` says
    how many values the call writes; at least ``least`` values, default MIN_ELEMENTS), else None."""
    first = arrays[0]
    size = first.size if size is None else size
    if (type(first) is not np.ndarray or size < max(MIN_ELEMENTS if least is None else least, 1)
            or first.dtype not in (np.float32, np.float64)):
        return None
    for a in arrays:
        if a is not None and (type(a) is not np.ndarray or a.dtype != first.dtype or not a.flags.c_contiguous):
            return None
    m = mode()
    if m == "numpy":
        return None
    if m == "auto":
        pending = _warmup_pending()
        if pending > 0:   # still warming up: NumPy's code (see WARMUP_ELEMENTS)
            _state["pending"] = pending - size
            return None
        if _state["kernels"] is None and _deferred() and not _built_now(size):   # NumPy's code till they are built
            return None
    return _load()


def _deferred():
    """'auto' mode past its warm-up where the modules are not built: whether this program keeps to NumPy's code and
    has them built when it ends (kernels_aot.schedule_build), rather than loading numba to compile in-process. numba
    and LLVM would double a model's resident memory (~125 MB, a fixed cost: the benchmark's workloads go from
    0.2-0.3x PyTorch's peak to 0.5-0.7x) and stall the run for their first compilation (~0.4-3 s), for kernels
    that save ~0-20% of a step; the next program loads the built modules in milliseconds, and a program that goes
    on past LATE_ELEMENTS builds them itself (_built_now). Where no build can come (numba missing,
    LAMINA_KERNELS_AUTOBUILD=0, an earlier automatic build failed, no folder to write to), numba compiles
    in-process as before. Decided once a process; ``LAMINA_KERNELS=numba`` compiles in-process at once."""
    if _state["deferred"] is None:
        try:
            defer = _aot.module_paths() is None and _aot.build_expected()
        except OSError:   # (the loops' source unreadable: no digest to find a module by)
            defer = False
        if defer:   # (build_expected saw the automatic build allowed: scheduled now, or by an earlier call)
            _aot.schedule_build()
        _state["deferred"] = bool(defer)
        _state["late"] = LATE_ELEMENTS if _state["deferred"] else None
    return _state["deferred"]


def _built_now(size):
    """For a deferring program (_deferred): counts the values of its eligible calls and, once they pass
    LATE_ELEMENTS, builds the modules then and there (kernels_aot.build_now: the ~10-20 s its exit would have
    spent, with a line on stderr) and returns True where they are built, so that the rest of the run takes them;
    False before that point, and after it where the build did not come (NumPy's code to the end). The count is
    kept under a lock (attention's parts call the kernels from lamina's threads); the build starts once, in the
    thread whose call passes the line, while any other goes on with NumPy's code."""
    with _LATE_LOCK:
        late = _state["late"]
        if late is None:
            return False
        late -= size
        _state["late"] = late if late > 0 else None   # None: once
    if late > 0 or not _aot.build_now():
        return False
    _state["deferred"] = False   # _load finds the built modules
    return True


def _define(numba):
    """The kernels compiled on their first call (kept in a function so that importing this module never imports
    numba): kernel_loops' functions under numba.njit with kernels_aot's OPTIONS and each kernel's fastmath flags
    (kernels_aot.FASTMATH_OF of its mode in SIGNATURES)."""
    jits = _aot.njit_of_modes(numba, cache=True)
    _aot.compile_helpers(jits)   # (before any kernel that calls one compiles)
    k = _Jitted()
    for name, (mode, *_) in _aot.SIGNATURES.items():
        setattr(k, name, jits[mode](getattr(_loops, name)))
    return k


class _Jitted:
    pass


def _split(body, rows, elements, least=None, align=_BLOCK):
    """body(lo, hi) over rows 0..rows, split over lamina's threads for large arrays (from ``least`` values,
    default SPLIT_ELEMENTS), every part starting on a block of ``align`` rows (by default _BLOCK: so that each
    block's column sums are the same whichever thread makes them)."""
    least = SPLIT_ELEMENTS if least is None else least
    width = min(-(-rows // align), _threads.split_width(elements, least)) if rows > align else 1
    if width < 2:
        body(0, rows)
    else:
        _threads.run_split([lambda r=r: body(*r) for r in _threads.ranges(rows, width, align=align)])


def _blocks(rows, shape, dtype):
    """Zeroed per-block column sums: one row (of ``shape``) for each block of _BLOCK rows."""
    return np.zeros((-(-rows // _BLOCK),) + shape, dtype)


def _column_sums(blocks):
    """The blocks' sums added in float64 (the same order on any number of threads), in their dtype."""
    return blocks.sum(axis=0, dtype=np.float64).astype(blocks.dtype, copy=False)


def layer_norm_forward(x2, gamma, beta, epsilon):
    """LayerNorm of the rows of a (R, D) array: (y, mean, inv) with mean and inv (R,), or None where the
    kernels do not run (the caller's NumPy code does then). gamma and beta: (D,) or None."""
    k = _eligible(x2, gamma, beta)
    if k is None:
        return None
    rows, d = x2.shape
    y = np.empty_like(x2)
    mean = np.empty(rows, x2.dtype)
    inv = np.empty(rows, x2.dtype)
    dummy = x2[0]
    eps = x2.dtype.type(epsilon)
    g = dummy if gamma is None else gamma
    b = dummy if beta is None else beta

    def body(lo, hi):
        k.layer_norm_rows(x2[lo:hi], g, b, gamma is not None, beta is not None, eps, y[lo:hi], mean[lo:hi],
                          inv[lo:hi])
    _split(body, rows, x2.size, LN_SPLIT_ELEMENTS)
    return y, mean, inv


def layer_norm_backward(gy2, x2, mean, inv, gamma, need_x, need_params):
    """(dx, dgamma, dbeta) of :func:`layer_norm_forward` for the gradient gy2 (R, D); dx is None unless
    need_x, dgamma and dbeta None unless need_params (dgamma None as well without gamma). None where the
    kernels do not run."""
    k = _eligible(gy2, x2, gamma)
    if k is None:
        return None
    rows, d = gy2.shape
    dx = np.empty_like(gy2) if need_x else gy2[:1]
    g = gy2[0] if gamma is None else gamma
    blocks = _blocks(rows, (2, d), gy2.dtype) if need_params else _blocks(1, (2, 1), gy2.dtype)

    def body(lo, hi):
        k.layer_norm_rows_grad(gy2[lo:hi], x2[lo:hi], mean[lo:hi], inv[lo:hi], g, gamma is not None, need_x,
                               need_params, dx[lo:hi] if need_x else dx, blocks[lo // _BLOCK:] if need_params else blocks)
    _split(body, rows, gy2.size, LN_SPLIT_ELEMENTS)
    dgamma = dbeta = None
    if need_params:
        dgamma, dbeta = _column_sums(blocks)
        dgamma = dgamma if gamma is not None else None
    return (dx if need_x else None), dgamma, dbeta


def _channel_rows_eligible(x2, *vectors):
    """_eligible for batch norm's (M, C) rows and their (C,) vectors: None for rows under BN_MIN_CHANNELS too."""
    return _eligible(x2, *vectors) if x2.ndim == 2 and x2.shape[1] >= BN_MIN_CHANNELS else None


def scale_shift(x2, scale, shift):
    """x2 * scale + shift over the rows of a (M, C) array with (C,) vectors (an inference batch norm), one compiled
    pass with NumPy's two passes' values (the product rounded, then the sum): the new array, or None where the
    kernels do not run or the rows are shorter than BN_MIN_CHANNELS."""
    k = _channel_rows_eligible(x2, scale, shift)
    if k is None:
        return None
    y = np.empty_like(x2)
    _split(lambda lo, hi: k.scale_shift_rows(x2[lo:hi], scale, shift, y[lo:hi]), x2.shape[0], x2.size)
    return y


def shift_rows(x2, m, ls):
    """(x2 - m[:, None]) - ls[:, None] over the rows of a (R, D) array with (R,) vectors (a log-softmax from its
    row maxima and the logs of its sums), one compiled pass with NumPy's two broadcast passes' values (NumPy's
    inner loop is a row: rows of 32 took ~1.4 ms a pass at (65536, 32) on a Zen 4 EPYC): the new array, or None
    where the kernels do not run."""
    k = _eligible(x2, m, ls)
    if k is None or x2.ndim != 2 or not (m.shape == ls.shape == x2.shape[:1]):
        return None
    y = np.empty_like(x2)
    _split(lambda lo, hi: k.shift_rows(x2[lo:hi], m[lo:hi], ls[lo:hi], y[lo:hi]), x2.shape[0], x2.size)
    return y


def batch_norm_forward(x2, gamma, beta, epsilon):
    """Training batch norm over the rows of a (M, C) array (channels last): (y, mean, var, inv), the biased
    batch variance and inv = 1 / sqrt(var + epsilon), each (C,); or None where the kernels do not run (the
    caller's NumPy code does then). Three passes over x (the sums of x, then of (x - mean)^2: no cancellation,
    as the NumPy code's two passes) and one writing y; NumPy's code makes about thirteen. gamma and beta:
    (C,) or None. Rows of fewer than BN_MIN_CHANNELS stay with NumPy's code (which tiles short rows)."""
    k = _channel_rows_eligible(x2, gamma, beta)
    if k is None:
        return None
    rows, c = x2.shape
    dt = x2.dtype.type
    blocks = _blocks(rows, (c,), x2.dtype)
    _split(lambda lo, hi: k.column_sums_rows(x2[lo:hi], x2[0], False, blocks[lo // _BLOCK:]), rows, x2.size,
           BN_SPLIT_ELEMENTS)
    mean = _column_sums(blocks) * dt(1.0 / rows)
    blocks[...] = 0
    _split(lambda lo, hi: k.column_sums_rows(x2[lo:hi], mean, True, blocks[lo // _BLOCK:]), rows, x2.size,
           BN_SPLIT_ELEMENTS)
    var = _column_sums(blocks) * dt(1.0 / rows)
    inv = dt(1.0) / np.sqrt(var + dt(epsilon))
    y = np.empty_like(x2)
    g = mean if gamma is None else gamma
    b = mean if beta is None else beta
    _split(lambda lo, hi: k.batch_norm_rows(x2[lo:hi], mean, inv, g, b, gamma is not None, beta is not None,
                                            y[lo:hi]), rows, x2.size, BN_SPLIT_ELEMENTS)
    return y, mean, var, inv


def _bn_dx_factors(inv, gamma, dbeta, dgamma, gmean, gvar, m):
    """The per-channel factors (a, b, c) of a training batch norm's input gradient dx = a gy + c xhat + b
    (BatchNormTraining._rows_backward's rule) over m values a channel, from the sums dbeta (of gy) and dgamma (of gy
    xhat) and the statistics outputs' gradients gmean and gvar (or None), in inv's dtype."""
    dt = inv.dtype.type
    a = inv if gamma is None else inv * gamma
    b, c = -a * dbeta, -a * dgamma
    if gmean is not None:
        b = b + gmean.astype(inv.dtype, copy=False)
    if gvar is not None:
        c = c + dt(2.0) * gvar.astype(inv.dtype, copy=False) / inv
    return a, b * dt(1.0 / m), c * dt(1.0 / m)


def batch_norm_backward(gy2, x2, mean, inv, gamma, gmean, gvar, need_x):
    """(dx, dgamma, dbeta) of :func:`batch_norm_forward` for the gradient gy2 (M, C) and the statistics
    outputs' gradients gmean and gvar ((C,) or None), dx None unless need_x; dgamma and dbeta come whole (the
    caller drops what it does not need). Two passes over gy2 and x2 (their sums, then dx), NumPy's code about
    eight; None where the kernels do not run."""
    k = _eligible(gy2, x2, mean, inv, gamma) if gy2.shape == x2.shape else None
    if k is None:
        return None
    rows, c = gy2.shape
    blocks = _blocks(rows, (2, c), gy2.dtype)
    _split(lambda lo, hi: k.batch_norm_rows_grad_sums(gy2[lo:hi], x2[lo:hi], mean, inv, blocks[lo // _BLOCK:]),
           rows, gy2.size, BN_SPLIT_ELEMENTS)
    dbeta, dgamma = _column_sums(blocks)
    dx = None
    if need_x:
        a, bv, cv = _bn_dx_factors(inv, gamma, dbeta, dgamma, gmean, gvar, rows)
        dx = np.empty_like(gy2)
        _split(lambda lo, hi: k.batch_norm_rows_grad(gy2[lo:hi], x2[lo:hi], mean, inv, a, bv, cv, dx[lo:hi]),
               rows, gy2.size, BN_SPLIT_ELEMENTS)
    return dx, dgamma, dbeta


def _channels_first_eligible(x3, *vectors):
    """_eligible for a channels-first batch norm's (B, C, A) arrays and (C,) vectors: None for runs of fewer than
    BN_MIN_CHANNELS positions too (short runs leave the loops little to vectorise)."""
    return _eligible(x3, *vectors) if x3.ndim == 3 and x3.shape[2] >= BN_MIN_CHANNELS else None


def batch_norm_channels_forward(x3, gamma, beta, epsilon):
    """Training batch norm over the channel axis of a (B, C, A) array (a channel axis before others: channels first):
    (y, mean, var, inv) as :func:`batch_norm_forward`'s, or None where the kernels do not run. Each channel's positions
    are contiguous runs: kernel_loops.channel_sums_rows sums each run (of x, then of (x - mean)^2) in float64, the B
    runs of a channel added in float64 here, and channel_norm_rows writes y; samples split over threads. NumPy's code
    broadcasts each channel's numbers along its runs, ~2x a plain pass, ten times."""
    k = _channels_first_eligible(x3, gamma, beta)
    if k is None:
        return None
    b, c, a = x3.shape
    dt = x3.dtype.type
    sums = np.empty((b, c), x3.dtype)
    unused = np.zeros(c, x3.dtype)   # (no center for the plain sums)
    _split(lambda lo, hi: k.channel_sums_rows(x3[lo:hi], unused, False, sums[lo:hi]), b, x3.size,
           BN_SPLIT_ELEMENTS, 1)
    mean = (sums.sum(axis=0, dtype=np.float64) / (b * a)).astype(x3.dtype)
    _split(lambda lo, hi: k.channel_sums_rows(x3[lo:hi], mean, True, sums[lo:hi]), b, x3.size, BN_SPLIT_ELEMENTS, 1)
    var = (sums.sum(axis=0, dtype=np.float64) / (b * a)).astype(x3.dtype)
    inv = dt(1.0) / np.sqrt(var + dt(epsilon))
    y = np.empty_like(x3)
    g = mean if gamma is None else gamma
    e = mean if beta is None else beta
    _split(lambda lo, hi: k.channel_norm_rows(x3[lo:hi], mean, inv, g, e, gamma is not None, beta is not None,
                                              y[lo:hi]), b, x3.size, BN_SPLIT_ELEMENTS, 1)
    return y, mean, var, inv


def batch_norm_channels_backward(gy3, x3, mean, inv, gamma, gmean, gvar, need_x):
    """(dx, dgamma, dbeta) of :func:`batch_norm_channels_forward` for gy3 (B, C, A), as :func:`batch_norm_backward`'s
    (dx None unless need_x): the runs' sums of gy and gy xhat (kernel_loops.channel_norm_grad_sums, added over the
    samples in float64), then dx in one pass (channel_norm_grad); None where the kernels do not run."""
    k = _channels_first_eligible(gy3, x3, mean, inv, gamma) if gy3.shape == x3.shape else None
    if k is None:
        return None
    b, c, a = x3.shape
    sums = np.empty((b, 2, c), gy3.dtype)
    _split(lambda lo, hi: k.channel_norm_grad_sums(gy3[lo:hi], x3[lo:hi], mean, inv, sums[lo:hi]), b, x3.size,
           BN_SPLIT_ELEMENTS, 1)
    dbeta, dgamma = sums.sum(axis=0, dtype=np.float64).astype(gy3.dtype)
    dx = None
    if need_x:
        fa, fb, fc = _bn_dx_factors(inv, gamma, dbeta, dgamma, gmean, gvar, b * a)
        dx = np.empty_like(gy3)
        _split(lambda lo, hi: k.channel_norm_grad(gy3[lo:hi], x3[lo:hi], mean, inv, fa, fb, fc, dx[lo:hi]), b,
               x3.size, BN_SPLIT_ELEMENTS, 1)
    return dx, dgamma, dbeta


def group_norm_forward(x3, groups, gamma, beta, epsilon):
    """GroupNorm of a (N, S, C) array (each sample's S positions, channels last, C a multiple of ``groups``):
    (y, mean, inv), mean and inv (N, C) with each channel its group's values; or None where the kernels do not
    run. kernel_loops.group_norm_rows: each sample's two passes (the per-channel sums of x and x^2 shifted by the
    channel's first value, in float64; then y) one after another while the sample is in cache; samples split over
    threads. gamma and beta: (C,) or None. (The batch norm's kernels sample by sample before: each pass over the
    whole batch, out of cache by the next: bench.layers groupnorm, (64, 32, 32, 32) in 8 groups, forward + backward
    5.8 -> 2.7 ms, PyTorch 2.0. Three passes -> two, one thread, forward 1.20 -> 0.98 ms.)"""
    k = _eligible(x3, gamma, beta) if x3.ndim == 3 and x3.shape[2] >= BN_MIN_CHANNELS else None
    if k is None:
        return None
    n, c = x3.shape[0], x3.shape[2]
    mean, inv, y = np.empty((n, c), x3.dtype), np.empty((n, c), x3.dtype), np.empty_like(x3)
    g = mean[0] if gamma is None else gamma
    b = mean[0] if beta is None else beta
    eps = x3.dtype.type(epsilon)
    _split(lambda lo, hi: k.group_norm_rows(x3, g, b, gamma is not None, beta is not None, eps, groups, mean, inv, y,
                                            lo, hi), n, x3.size, LN_SPLIT_ELEMENTS, 1)
    return y, mean, inv


def group_norm_backward(gy3, x3, groups, mean, inv, gamma, need_x):
    """(dx or None, dgamma, dbeta) of :func:`group_norm_forward` for the gradient gy3 (N, S, C):
    kernel_loops.group_norm_rows_grad, each sample's sums of gy and gy x-hat (x-hat recomputed from x, the mean and
    inv) and then its dx while it is in cache; dgamma and dbeta those sums added over the samples (float64). None
    where the kernels do not run."""
    k = _eligible(gy3, x3, gamma) if gy3.shape == x3.shape else None
    if k is None:
        return None
    n, c = gy3.shape[0], gy3.shape[2]
    sums = np.empty((n, 2, c), gy3.dtype)
    dx = np.empty_like(gy3) if need_x else np.empty((0, 0, 0), gy3.dtype)
    g = mean[0] if gamma is None else gamma
    _split(lambda lo, hi: k.group_norm_rows_grad(gy3, x3, mean, inv, g, gamma is not None, groups, need_x, sums, dx,
                                                 lo, hi), n, gy3.size, LN_SPLIT_ELEMENTS, 1)
    per = sums.sum(axis=0, dtype=np.float64)
    return (dx if need_x else None), per[1].astype(gy3.dtype), per[0].astype(gy3.dtype)


def bias_relu(y2, b):
    """y2 += b, then max(y2, 0), in place on a (R, D) array with b (D,): True if done here, False where the
    kernels do not run (the caller's NumPy code does then)."""
    k = _eligible(y2, b)
    if k is None:
        return False
    _split(lambda lo, hi: k.bias_relu_rows(y2[lo:hi], b), y2.shape[0], y2.size)
    return True


def relu(x2, y2):
    """y2 = max(x2, 0) for (R, D) arrays (y2 may be x2), one compiled pass with NumPy's maximum's values (NaN stays
    NaN, -0 becomes +0): True if done here, False where the kernels do not run (the caller's NumPy code does
    then). Rows over lamina's threads only from SPLIT_ELEMENTS (NumPy's split pass, from 2^20, is ~2x a copy on
    the VMs measured: the hand-off)."""
    k = _eligible(x2, y2)
    if k is None or x2.shape != y2.shape:
        return False
    _split(lambda lo, hi: k.relu_rows(x2[lo:hi], y2[lo:hi]), x2.shape[0], x2.size)
    return True


def relu_bias_grad(gy2, y2, need_b):
    """(gy2 * (y2 > 0), its column sums or None) for (R, D) arrays, one pass; None where the kernels do not
    run."""
    k = _eligible(gy2, y2)
    if k is None or gy2.shape != y2.shape:
        return None
    rows, d = gy2.shape
    g = np.empty_like(gy2)
    blocks = _blocks(rows if need_b else 1, (d if need_b else 1,), gy2.dtype)
    _split(lambda lo, hi: k.relu_bias_grad_rows(gy2[lo:hi], y2[lo:hi], g[lo:hi], need_b,
                                                blocks[lo // _BLOCK:] if need_b else blocks), rows, gy2.size)
    return g, (_column_sums(blocks) if need_b else None)


def _numpy_exp_is_simd():
    """Whether this NumPy runs its float32 exp and tanh with AVX-512 (its SIMD versions of both need AVX512F;
    without, each runs at about scalar speed: 1.8 and 3.0 ns a value on a Zen 2 EPYC, against 0.1-0.2 for an
    add)."""
    return bool(_aot.numpy_cpu_features().get("AVX512F"))


# The kernels' own vectorised exp runs in every fused pass (an activation's forward, an LSTM step's gates, a
# softmax's rows): where NumPy's exp and tanh are not vectorised (no AVX-512) it saves their scalar speed as
# well (Zen 2, (64, 128) a step: an LSTM step's gate arithmetic 147 -> 68-78 us; sigmoid over 16384 values
# 45 -> 26 us, tanh 52 -> 33; attention's column softmax of (32, 4, 64, 64) scores on one thread 1.34 -> 0.95
# ms), and where they are (AVX-512) the passes it saves still pay: on a Zen 4 EPYC, a layer's forward + backward
# at (64, 32, 32, 32) float32 with the own exp against NumPy's chains, sigmoid 4.2 -> 1.9-2.4 ms, exact GELU 8.5
# -> 3.6, SiLU 4.7 -> 2.8, softplus 6.2 -> 3.4, SELU 5.0 -> 3.1, ELU 3.6 -> 2.5, softmax 7-10 -> 3.0; the
# LSTM layer (64, 80, 128) 44 -> 38. A single exp or tanh pass with nothing fused (attention's column softmax'
# exp, the tanh activation, GELU's tanh approximation) keeps NumPy's where that is vectorised: there its tanh
# runs faster than the own one (1 M float32 on one thread 0.38 against 0.54 ms, the own one in a single loop) and
# its exp as fast (0.48 / 0.42-0.51).
OWN_EXP = True
NUMPY_SIMD_EXP = _numpy_exp_is_simd()


def lstm_cell(gates):
    """The compiled forward step of an LSTM with sigmoid gates and tanh activations (kernel_loops.lstm_cell:
    the gate arithmetic and exp, tanh in one call), for the sequence's float32 gate buffer ``gates`` (T, 4, N,
    u); None where it does not run (float64, OWN_EXP off). Called as ``f(rec, xw_t,
    bias, has_bias, c_prev, gates[t], c_t, tanh_c_t, h_t)`` on contiguous arrays, rec and xw_t (N, 4u)
    in gate order i, f, o, g (bias (4u,), any values where not has_bias). The values agree with NumPy's passes to a few
    ulps (its exp and tanh round differently), NaN and infinities as there."""
    if not OWN_EXP or gates.dtype != np.float32:
        return None
    k = _eligible(gates)
    return None if k is None else k.lstm_cell


def sigmoid_tanh(a, tanh, out=None):
    """In place, or into ``out`` (a new C-contiguous array of a's shape), sigmoid(a) (1 / (1 + exp(-a))) or with
    ``tanh`` tanh(a), compiled with the kernels' own exp and tanh (kernel_loops.sigmoid_tanh_rows: one call where
    NumPy's sigmoid makes four passes): True if done, False where it does not run (float64, a non-contiguous
    array, OWN_EXP off; tanh where NumPy's is vectorised: NUMPY_SIMD_EXP); within 3 ulps of the exact values,
    NaN and the infinities as NumPy's (sigmoid is 0 or subnormal where it would be subnormal, as PyTorch's)."""
    target = a if out is None else out
    if (not OWN_EXP or tanh and NUMPY_SIMD_EXP or type(target) is not np.ndarray or target.dtype != np.float32
            or target.ndim == 0 or getattr(a, "dtype", None) != np.float32 or target.shape != a.shape):
        return False
    # (exp's arithmetic is what it saves: a step's gates pay from 256 values; an activation's blocks at any size,
    # so that a chain's last short block takes the same path however the blocks fall on threads)
    k = _eligible(target, least=min(MIN_ELEMENTS, 256) if out is None else 1)
    if k is None:   # (also every empty array: _eligible wants values)
        return False
    if out is not None:
        np.copyto(out, a)
    rows = _rows(target)
    k.sigmoid_tanh_rows(rows, bool(tanh))
    return True


def _rows(a):
    """A C-contiguous array as (rows, width): a flat run of a multiple of 1024 values as rows of 1024 (a chain's
    block: the kernels' scratch rows small, in L1), else its last axis as the width."""
    width = 1024 if a.ndim == 1 and a.size % 1024 == 0 else a.shape[-1]
    return a.reshape(-1, width)


def silu(x, y, s):
    """SiLU's forward into the new C-contiguous arrays y and s of x's shape: s = sigmoid(x) with the kernels'
    own exp (sigmoid_tanh's values) and y = x s, one pass (kernel_loops.silu_rows; NumPy: the sigmoid's four
    passes and a product): True if done, False where it does not run (float64, OWN_EXP off). At
    any size (an activation's blocks: the same path however they fall on threads); a strided x is copied first
    (a small whole array: a chain's blocks are contiguous)."""
    return _own_exp_pass("silu_rows", x, y, s)


def gelu(x, y, cdf):
    """Exact GELU's forward into the new C-contiguous arrays y and cdf of x's shape: cdf = (1 + erf(x / sqrt 2)) / 2
    and y = x cdf, one pass with the kernels' own exp (kernel_loops.gelu_rows; NumPy: ~20 passes with its scalar
    exp): True if done, False where it does not run (float64, OWN_EXP off). At any size, as
    :func:`silu`."""
    return _own_exp_pass("gelu_rows", x, y, cdf)


def gelu_grad(x, cdf, gy, gx):
    """Exact GELU's gradient gx = gy (cdf + x pdf) from the forward's cdf, one pass with the kernels' own exp
    (kernel_loops.gelu_grad_rows; the NumPy chain's operations otherwise): True if done, False where it does not
    run (as :func:`gelu`; also a broadcast gy)."""
    return _own_exp_pass("gelu_grad_rows", x, cdf, gy, gx)


def _same_rows(k, *arrays):
    """(k, arrays as (rows, width) views) for arrays of x's shape each (C-contiguous, of one float dtype: _eligible's
    check, which gave k), or (None, None) where the kernels do not run (k None, a 0-d array, another shape)."""
    first = arrays[0]
    if k is None or first.ndim == 0 or any(a.shape != first.shape for a in arrays):
        return None, None
    return k, [_rows(a) for a in arrays]


def _own_exp_pass(name, x, *arrays):
    """kernel ``name`` (an activation's float32 pass with the kernels' own exp: x's rows, then ``arrays``' rows)
    over float32 arrays of x's shape, where OWN_EXP: True if it ran."""
    if (not OWN_EXP or type(x) is not np.ndarray or x.dtype != np.float32
            or getattr(arrays[0], "dtype", None) != np.float32):
        return False
    k = _eligible(*arrays, least=1)
    if k is not None:   # (x copied only where the pass runs: a strided x, a small whole array's)
        k, rows = _same_rows(k, np.ascontiguousarray(x), *arrays)
    if k is None:
        return False
    getattr(k, name)(*rows)
    return True


def exp_rows(a, shift=None, out=None, sums=None, find_max=False, least=None):
    """exp(a - shift[:, None]) of the rows of a C-contiguous float32 (R, D) array (``shift`` (R,) or None),
    in place or into ``out`` (a new C-contiguous array of a's shape), with the kernels' own exp
    (kernel_loops.exp_rows: a softmax's subtraction of its maxima in the same pass), rows split over threads for
    large arrays: True if done, False where it does not run (float64, a non-contiguous array, OWN_EXP
    off). Within 3 ulps of the exact values; NaN, the infinities, subnormal results and exp(-inf) = 0 as
    NumPy's. ``find_max``: the rows' maxima are found in the same visit and written into ``shift`` (a float32
    (R,) array then; a row holding NaN may get another maximum than NumPy's, for a softmax's all-NaN row alike).
    With ``sums`` (a float32 (R,) array) each row's sum is written there and the row divided by it in the same
    visit (a softmax). For the softmaxes and cross-entropies over wide rows (a language model's vocabulary:
    NumPy's scalar exp was most of their time). ``least``: the fewest values it runs for (default MIN_ELEMENTS)."""
    target = a if out is None else out

    def vector(v):
        return type(v) is np.ndarray and v.dtype == np.float32 and v.shape == a.shape[:1] and v.flags.c_contiguous
    if (not OWN_EXP or type(a) is not np.ndarray or a.dtype != np.float32 or a.ndim != 2
            or not a.flags.c_contiguous or getattr(target, "shape", None) != a.shape
            or (shift is not None and not (vector(shift) or not find_max and shift.dtype == np.float32
                                           and shift.shape == a.shape[:1]))
            or (find_max and shift is None) or (sums is not None and not vector(sums))):
        return False
    k = _eligible(target, least=least)
    if k is None:
        return False
    m = np.zeros(0, np.float32) if shift is None else shift if find_max else np.ascontiguousarray(shift)
    s = np.zeros(0, np.float32) if sums is None else sums

    def body(lo, hi):
        k.exp_rows(a[lo:hi], m[lo:hi] if m.size else m, target[lo:hi], s[lo:hi] if s.size else s, bool(find_max),
                   np.empty((1, max(a.shape[1], EXP_GROUP)), np.float32))
    _split(body, a.shape[0], a.size, EXP_SPLIT_ELEMENTS)
    return True


def softmax_rows_grad(y, gy, out, log=False):
    """A softmax's input gradient over the rows of (R, D) arrays, ``out = gy y - y sum(gy y)``, or with ``log`` a
    log-softmax's from its softmax y, ``out = gy - y sum(gy)`` (out may be gy or y), each row visited once
    (kernel_loops.softmax_rows_grad), rows split over threads for large arrays: True if done, False where the
    kernels do not run (the caller's NumPy code does then; the row sums add in another order)."""
    k = _eligible(out, y, gy)
    if k is None or y.ndim != 2 or not (y.shape == gy.shape == out.shape):
        return False

    def body(lo, hi):
        k.softmax_rows_grad(y[lo:hi], gy[lo:hi], bool(log), out[lo:hi])
    _split(body, y.shape[0], y.size)
    return True


def silu_grad(x, s, gy, gx):
    """SiLU's gradient gx = gy (s + x s (1 - s)) in one pass (kernel_loops.silu_grad_rows; NumPy's chain: five),
    the same float operations in the same order: True if done, False where the kernels do not run (also a
    broadcast or strided gy). At any size, as :func:`silu`."""
    k, rows = _same_rows(_eligible(gx, x, s, gy, least=1), x, s, gy, gx)
    if k is None:
        return False
    k.silu_grad_rows(*rows)
    return True


def leaky_relu(x, alpha, y):
    """LeakyReLU's forward y = x where x > 0, else x alpha, into y (x's shape), one pass with the bits of NumPy's
    select (kernel_loops.leaky_relu_rows; NumPy's chain: two passes): True if done, False where the kernels do not
    run. At any size (an activation's chain blocks)."""
    k, rows = _same_rows(_eligible(y, x, least=1), x, y)
    if k is None:
        return False
    k.leaky_relu_rows(rows[0], x.dtype.type(alpha), rows[1])
    return True


def leaky_relu_grad(x, gy, alpha, gx):
    """LeakyReLU's gradient gx = gy where x > 0, else gy alpha, one pass (NumPy's chain: three), the same bits."""
    k, rows = _same_rows(_eligible(gx, x, gy, least=1), x, gy, gx)
    if k is None:
        return False
    k.leaky_relu_grad_rows(rows[0], rows[1], x.dtype.type(alpha), rows[2])
    return True


# extreme_grad takes rows of at least this many values (fewer leave its loops little to vectorise)
EXTREME_WIDTH = 8


def extreme_grad(x3, y2, gy2):
    """The gradient of y2 (B, A), the maximum or minimum of x3 (B, R, A) over its middle axis: gy (B, A) shared
    equally among the positions equal to the extreme, the bits of ops.math.MaxMin's NumPy code (four NumPy passes
    and a product), in two passes over x (kernel_loops.extreme_grad_rows), or None where the kernels do not run."""
    k = _eligible(x3, y2, gy2)
    if (k is None or x3.ndim != 3 or x3.shape[2] < EXTREME_WIDTH or y2.shape != (x3.shape[0], x3.shape[2])
            or gy2.shape != y2.shape):
        return None
    gx = np.empty(x3.shape, x3.dtype)
    _split(lambda lo, hi: k.extreme_grad_rows(x3[lo:hi], y2[lo:hi], gy2[lo:hi], gx[lo:hi],
                                              np.empty(x3.shape[2], x3.dtype)),
           x3.shape[0], x3.size, least=_threads.SPLIT_MIN_ELEMENTS, align=1)
    return gx


def diff_loss(t2, p2, kind, delta):
    """The row sums of f(p - t) over (R, D) arrays of one float dtype (kind 0: d^2, 1: |d|, 2: Huber's with
    ``delta``), one pass (kernel_loops.diff_loss_rows; NumPy's code: the difference, then the passes of f and its
    sums), rows split over threads: (R,) in their dtype, or None where the kernels do not run."""
    k = _eligible(p2, t2)
    if k is None or p2.ndim != 2 or t2.shape != p2.shape:
        return None
    out = np.empty(p2.shape[0], p2.dtype)
    dt = p2.dtype.type
    _split(lambda lo, hi: k.diff_loss_rows(t2[lo:hi], p2[lo:hi], int(kind), dt(delta), out[lo:hi]), p2.shape[0],
           p2.size, least=_threads.SPLIT_MIN_ELEMENTS, align=1)
    return out


def diff_loss_grad(t2, p2, kind, delta, s):
    """f'(p - t) s over (R, D) arrays (kind as :func:`diff_loss`'s; for kind 0 f' is d, s already doubled), s the
    rows' factors (R,) or one value for all (1,), in one pass (kernel_loops.diff_loss_grad_rows), the bits of
    ops.losses' NumPy products: the gradient (R, D), or None where the kernels do not run."""
    k = _eligible(p2, t2, s)
    if k is None or p2.ndim != 2 or t2.shape != p2.shape or s.ndim != 1 or s.shape[0] not in (1, p2.shape[0]):
        return None
    gp = np.empty_like(p2)
    scalar = s.shape[0] == 1
    dt = p2.dtype.type
    _split(lambda lo, hi: k.diff_loss_grad_rows(t2[lo:hi], p2[lo:hi], int(kind), dt(delta), s if scalar else s[lo:hi],
                                                gp[lo:hi]), p2.shape[0], p2.size, least=_threads.SPLIT_MIN_ELEMENTS,
           align=1)
    return gp


# PReLU's column ranges start on whole cache lines of float32 (threads writing one line would share it)
_PRELU_ALIGN = 16


def prelu(x2, a, y2):
    """PReLU's forward y = x where x > 0, else x a over the rows of (R, S) arrays with one slope a (S,) a column,
    one pass with the bits of NumPy's select (kernel_loops.prelu_rows; NumPy: a broadcast product and the select),
    columns split over threads for large arrays: True if done, False where the kernels do not run."""
    k = _eligible(y2, x2, a)
    if k is None or x2.ndim != 2 or y2.shape != x2.shape or a.shape != x2.shape[1:]:
        return False
    _split(lambda lo, hi: k.prelu_rows(x2, a, y2, lo, hi), x2.shape[1], x2.size, least=_threads.SPLIT_MIN_ELEMENTS,
           align=_PRELU_ALIGN)
    return True


def prelu_grad(x2, gy2, a, want_gx, want_ga):
    """PReLU's gradients over (R, S) arrays, slopes a (S,): (gx, ga) with gx = gy where x > 0, else gy a (the
    select's bits; None unless ``want_gx``) and ga (S,) the column sums of gy x where x > 0 is false, in row order
    (None unless ``want_ga``), one pass (kernel_loops.prelu_grad_rows; NumPy: a broadcast product, a select, a
    where, a product and the reduction), or None where the kernels do not run."""
    k = _eligible(gy2, x2, a)
    if k is None or x2.ndim != 2 or gy2.shape != x2.shape or a.shape != x2.shape[1:]:
        return None
    gx = np.empty(x2.shape if want_gx else (x2.shape[0], 0), x2.dtype)
    ga = np.zeros(a.shape if want_ga else (0,), x2.dtype)
    _split(lambda lo, hi: k.prelu_grad_rows(x2, gy2, a, gx, ga, lo, hi, bool(want_gx), bool(want_ga)), x2.shape[1],
           x2.size, least=_threads.SPLIT_MIN_ELEMENTS, align=_PRELU_ALIGN)
    return (gx if want_gx else None), (ga if want_ga else None)


def sigmoid(x, y, gy=None):
    """y = sigmoid(x), or sigmoid(x) gy (softplus' gradient), for float32 arrays of one shape, one pass with the
    kernels' own exp (kernel_loops.sigmoid_rows; NumPy's stable formula: six passes with its scalar exp) where
    OWN_EXP: True if done. Within 3 ulps where the result is normal, the subnormal tail and NaN as NumPy's."""
    arrays = (x, y) if gy is None else (x, gy, y)
    k, rows = _same_rows(_eligible(*arrays, least=1), *arrays) if OWN_EXP and x.dtype == np.float32 else (None, None)
    if k is None:
        return False
    k.sigmoid_rows(rows[0], rows[-2], gy is not None, rows[-1])
    return True


def sigmoid_grad(y, gy, gx):
    """The sigmoid's gradient gx = gy y (1 - y) from its output, one pass (NumPy's chain: three), the same bits."""
    k, rows = _same_rows(_eligible(gx, y, gy, least=1), y, gy, gx)
    if k is None:
        return False
    k.sigmoid_grad_rows(*rows)
    return True


def elu(x, alpha, scale, y, neg=None):
    """ELU's (scale 1) and SELU's float32 forward, neg = alpha expm1(min(x, 0)) (into ``neg`` where given) and
    y = (neg + max(x, -0.0)) scale, one pass with the kernels' own exp and a polynomial expm1 near 0
    (kernel_loops.elu_rows; NumPy's chain: five passes with its scalar expm1) where OWN_EXP: True if done."""
    arrays = (x, y) if neg is None else (x, y, neg)
    k, rows = _same_rows(_eligible(*arrays, least=1), *arrays) if OWN_EXP and x.dtype == np.float32 else (None, None)
    if k is None:
        return False
    t = x.dtype.type
    k.elu_rows(rows[0], t(alpha), t(scale), rows[1], rows[-1], neg is not None,
                     np.empty((1, rows[0].shape[1]), np.float32))
    return True


def elu_grad(sel, neg, gy, alpha, scale, gx):
    """ELU's and SELU's gradient gx = gy scale where sel > 0, else gy (neg + alpha) scale (ELU: sel = neg = y,
    scale 1; SELU: sel = x), one pass (NumPy's chain: four or five), the same bits."""
    k, rows = _same_rows(_eligible(gx, sel, neg, gy, least=1), sel, neg, gy, gx)
    if k is None:
        return False
    t = sel.dtype.type
    k.elu_grad_rows(rows[0], rows[1], rows[2], t(alpha), t(scale), rows[3])
    return True


def softplus(x, y):
    """Softplus' float32 forward max(x, 0) + log1p(exp(-|x|)), one pass with the kernels' own exp and log1p
    (kernel_loops.softplus_rows; NumPy's chain: five passes with its scalar exp and log1p) where OWN_EXP: True if
    done. Within a few ulps; the far tails (|x| > 87.3), NaN and the infinities as NumPy's."""
    return _own_exp_pass("softplus_rows", x, y)


def lstm_cell_grad(gates):
    """The compiled backward step of an LSTM with sigmoid gates and tanh activations, for the sequence's gate
    activations ``gates`` (T, 4, N, u) (their size and dtype decide, as for the other kernels); None where the
    kernels do not run (the caller's NumPy passes do then). Called as
    ``f(dh, dc, gates[t], tanh_c_t, c_prev, dz_t, dc_prev)`` on contiguous (N, u) / (N, 4u) arrays: it replaces
    the step's dozen NumPy passes over (N, u) blocks (each mostly call overhead at the usual sizes)."""
    k = _eligible(gates)
    return None if k is None else k.lstm_cell_grad


def adam_update(w, g, m, v, b1, b2, eps, alpha):
    """Adam's update of equally shaped arrays in place, one pass: m += (g - m)(1 - b1), v += (g^2 - v)(1 - b2),
    w -= alpha m / (sqrt(v) + eps), with the same float operations as the NumPy code (no AMSGrad): True if
    done here, False where the kernels do not run (the caller's NumPy code does then)."""
    # at any size (ADAM_MIN_ELEMENTS): the transformer benchmark's 36 weights, 31 of them small, 1.50 -> 1.06 ms
    k = _eligible(w, g, m, v, least=ADAM_MIN_ELEMENTS)
    if k is None or not (w.shape == g.shape == m.shape == v.shape):
        return False
    t = w.dtype.type
    k.adam_update(w.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), t(1.0 - b1), t(1.0 - b2), t(eps),
                  t(alpha))
    return True


def _one_pass_update(name, arrays, scalars, flags=()):
    """Optimizer kernel ``name`` in place over equally shaped arrays (weights, gradient, slots: their flat views),
    then ``scalars`` in the arrays' dtype and the bool ``flags``, split over lamina's threads from
    UPDATE_SPLIT_ELEMENTS values: True if it ran, False where the kernels do not run."""
    k = _eligible(*arrays, least=ADAM_MIN_ELEMENTS)
    if k is None or any(a.shape != arrays[0].shape for a in arrays):
        return False
    flat = [a.reshape(-1) for a in arrays]
    t = arrays[0].dtype.type
    args = tuple(t(v) for v in scalars) + tuple(bool(f) for f in flags)
    kernel = getattr(k, name)
    size = flat[0].size
    _split(lambda lo, hi: kernel(*(f[lo:hi] for f in flat), *args), size, size, UPDATE_SPLIT_ELEMENTS, 1024)
    return True


def sgd_momentum_update(w, g, m, lr, mu, nesterov):
    """SGD with momentum in place, one pass (NumPy's code: four), its float operations: True if done here."""
    return _one_pass_update("sgd_momentum_update", (w, g, m), (lr, mu), (nesterov,))


def rmsprop_update(w, g, v, mom, rho, eps, lr, mu):
    """RMSprop (not centred; ``mom`` None without momentum) in place, one pass (NumPy's code: eight or ten), its
    float operations: True if done here."""
    return _one_pass_update("rmsprop_update", (w, g, v, w if mom is None else mom), (rho, 1.0 - rho, eps, lr, mu),
                            (mom is not None,))   # (w stands in for the momentum the kernel then leaves alone)


def adagrad_update(w, g, acc, eps, lr):
    """Adagrad in place, one pass (NumPy's code: seven), its float operations: True if done here."""
    return _one_pass_update("adagrad_update", (w, g, acc), (eps, lr))


def nadam_update(w, g, m, v, b1, b2, vs, eps, a, b, lr):
    """Nadam in place, one pass (NumPy's code: fourteen), its float operations: True if done here."""
    return _one_pass_update("nadam_update", (w, g, m, v), (1.0 - b1, 1.0 - b2, vs, eps, a, b, lr))


def lion_update(w, g, m, b1, b2, lr):
    """Lion in place, one pass (NumPy's code: seven), its float operations: True if done here."""
    return _one_pass_update("lion_update", (w, g, m), (b1, 1.0 - b1, b2, 1.0 - b2, lr))


def col2im_gather(g2):
    """The compiled col2im for a convolution's input gradient g2 (rows, O) @ W2 (O, KH*KW*C) (g2's size and
    dtype decide, as for the other kernels; the caller makes W2 contiguous, in g2's dtype), or None where the
    kernels do not run. Called as
    ``f(cols, out, sh, sw, dh, dw, pt, pl)`` with a block's columns (S, OH, OW, KH, KW, C) and the window
    (S, H, W, C) of its padded input gradient from (pt, pl) (the unpadded gradient: no padded array, no crop),
    which it writes whole (no zeroed array needed)."""
    k = _eligible(g2)
    return None if k is None else k.col2im_gather


def depthwise(x):
    """The compiled depthwise-convolution loops (``depthwise_direct``, ``depthwise_direct_grad_input``,
    ``depthwise_direct_grad_weight``: ops.nn_kernels.DepthwiseConvND's direct passes) for the input ``x`` (its
    size and dtype decide, as for the other kernels), or None where the kernels do not run. The output and the
    input gradient are NumPy's code's values (the same products, added in its order; the padding's products,
    zeros there, skipped, so only a zero's sign may differ); the weight gradient's sums run in another order."""
    return _eligible(x)


def conv_planes(x):
    """The compiled planes convolution (``conv_planes``: forward, fused bias and ReLU; ``conv_planes_grad_weight``:
    per-sample weight gradients) for the channels-last input ``x`` (its size and dtype decide, as for the other
    kernels), or None where the kernels do not run (ops.convolution.Conv2D's planes path)."""
    return _eligible(x) if x.ndim == 4 else None


def im2col(x):
    """The compiled im2col (``im2col_rows``: a convolution's column rows of a block of samples, from the
    unpadded channels-last input, zeros where the padding is) for the input ``x`` (its size and dtype decide,
    as for the other kernels), or None where the kernels do not run. Called as
    ``f(x, cols, s0, s1, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl)``; the same values as ops.convolution's
    padded copy and strided copy (a copy: to the bit)."""
    k = _eligible(x) if x.ndim == 4 else None
    return None if k is None else k.im2col_rows


def gru_cell_grad(gates):
    """As :func:`lstm_cell_grad`, for a GRU with reset_after, sigmoid gates and a tanh candidate (``gates``:
    the sequence's z and r, (T, 2, N, u)): called as ``f(dh, zr[t], candidate_t, h_prev, rh_t, dx_t, dr_t,
    dprev)``."""
    k = _eligible(gates)
    return None if k is None else k.gru_cell_grad


def softmax_columns(s, factor=1.0):
    """In place, the softmax of each column of ``s`` (..., K, Q) down its K rows (attention's transposed scores),
    of the scores times ``factor`` (> 0) where given: True if done here (an exp between two compiled passes:
    NumPy's, or where that is scalar (OWN_EXP) for float32 the kernels' own, within 3 ulps of it), False where the
    kernels do not run (the caller's NumPy code does then: max, subtract, times the factor, exp, sum, divide, the
    same values but for the own exp's roundings)."""
    k = _eligible(s)
    if k is None or s.ndim < 2:   # (an empty array never runs here: _eligible wants values)
        return False
    s3 = s.reshape((-1,) + s.shape[-2:])
    k.column_max_subtract(s3, s.dtype.type(factor))
    if OWN_EXP and not NUMPY_SIMD_EXP and s.dtype == np.float32 and s.shape[-1] > 0:
        # the kernels' own exp where NumPy's float32 exp is scalar (no AVX-512), in place a row at a time (this
        # runs inside attention's own split over threads: no split of its own)
        none = np.zeros(0, np.float32)
        rows = s3.reshape(-1, s.shape[-1])
        k.exp_rows(rows, none, rows, none, False, np.empty((1, max(rows.shape[1], EXP_GROUP)), np.float32))
    else:
        np.exp(s3, out=s3)
    k.column_sum_divide(s3)
    return True


def softmax_columns_grad(d, rowsum, w, factor=1.0):
    """In place, ``d = (d - rowsum) * w * factor`` for the softmax's column weights w (..., K, Q) and one rowsum
    per column (..., 1, Q), in one pass (``factor``: softmax_columns', or 1): True if done here, False where the
    kernels do not run (the caller's NumPy code does then, with the same values)."""
    k = _eligible(d, rowsum, w)
    if k is None or d.ndim < 2 or d.shape != w.shape or rowsum.shape != d.shape[:-2] + (1, d.shape[-1]):
        return False
    k.column_softmax_grad(d.reshape((-1,) + d.shape[-2:]), rowsum.reshape((-1, 1, d.shape[-1])),
                          w.reshape((-1,) + w.shape[-2:]), d.dtype.type(factor))
    return True


def scatter_rows(ids, gy, num_rows):
    """The (num_rows, D) table with each row of gy (N, D) added to row ids[i] (ids (N,) in [0, num_rows)) in
    position order, in one compiled pass; None where the kernels do not run."""
    k = _eligible(gy)
    if k is None or gy.ndim != 2 or ids.ndim != 1 or ids.shape[0] != gy.shape[0] or ids.dtype.kind not in "iu":
        return None
    if ids.dtype != np.int64 or not ids.flags.c_contiguous:
        ids = np.ascontiguousarray(ids, np.int64)
    out = np.empty((num_rows, gy.shape[1]), gy.dtype)
    k.scatter_rows(ids, gy, out)
    return out


def scatter_index_rows(ids, rows, num_rows):
    """:func:`scatter_rows` for the gradient of a gather by an integer index (NumPy's: negative ids count from the
    end): the (num_rows, D) table, or None where the kernels do not run, the ids are not 1-D integers, or one lies
    outside [-num_rows, num_rows) (the kernel writes unchecked)."""
    if (not isinstance(ids, np.ndarray) or ids.ndim != 1 or ids.dtype.kind not in "iu" or ids.size == 0
            or not isinstance(rows, np.ndarray) or rows.ndim != 2 or rows.shape[0] != ids.shape[0]):
        return None
    if ids.dtype.kind == "i" and ids.min() < 0:
        ids = np.where(ids < 0, ids + num_rows, ids)
    if ids.min() < 0 or ids.max() >= num_rows:
        return None
    return scatter_rows(ids, np.ascontiguousarray(rows), num_rows)


def _pool_geometry(shape, pool, stride, pads):
    (ph, pw), (sh, sw), ((pt, pb), (pl, pr)) = pool, stride, pads
    oh = (shape[1] + pt + pb - ph) // sh + 1
    ow = (shape[2] + pl + pr - pw) // sw + 1
    return oh, ow


def max_pool2d(x, pool, stride, pads, note):
    """Max pooling of a (N, H, W, C) array (pads: ((top, bottom), (left, right)), -inf): (y, which) with y
    (N, OH, OW, C) and which the window offset (row-major) of each output's first maximum, uint8 (int32 for
    windows over 256 values; None unless ``note``), as ops.convolution.MaxPool2D's NumPy code gives bit for
    bit; None where the kernels do not run."""
    k = _eligible(x)
    if k is None or x.ndim != 4:
        return None
    (ph, pw), (sh, sw), ((pt, _), (pl, _)) = pool, stride, pads
    oh, ow = _pool_geometry(x.shape, pool, stride, pads)
    y = np.empty((x.shape[0], oh, ow, x.shape[3]), x.dtype)
    which = np.empty(y.shape, np.uint8 if ph * pw <= 256 else np.int32) if note else np.empty((1, 1, 1, 1), np.uint8)

    def body(lo, hi):
        k.max_pool_rows(x[lo:hi], ph, pw, sh, sw, pt, pl, y[lo:hi], which[lo:hi] if note else which, note)
    _threads.split_rows(body, x.shape[0], x.size, POOL_SPLIT_ELEMENTS)
    return y, (which if note else None)


def max_pool2d_grad(gy, which, xshape, pool, stride, pads):
    """The input gradient (N, H, W, C) of :func:`max_pool2d` for gy (N, OH, OW, C) and its note ``which``:
    the NumPy code's values bit for bit (overlapping windows add in its order); None where the kernels do not
    run."""
    k = _eligible(gy, size=int(np.prod(xshape)))   # the input's size, as the forward pass's
    if (k is None or gy.ndim != 4 or type(which) is not np.ndarray or which.shape != gy.shape
            or not which.flags.c_contiguous):
        return None
    (ph, pw), (sh, sw), ((pt, _), (pl, _)) = pool, stride, pads
    overlap = sh < ph or sw < pw
    # every position in exactly one window: no padding, disjoint windows tiling the input
    tiled = pt == pl == 0 and sh == ph and sw == pw and xshape[1] == gy.shape[1] * ph and xshape[2] == gy.shape[2] * pw
    dx = np.empty(xshape, gy.dtype)

    def body(lo, hi):
        k.max_pool_rows_grad(gy[lo:hi], which[lo:hi], ph, pw, sh, sw, pt, pl, dx[lo:hi], not tiled, overlap)
    _threads.split_rows(body, gy.shape[0], dx.size, POOL_SPLIT_ELEMENTS)
    return dx
