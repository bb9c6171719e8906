"""The array backend: which array module (NumPy or CuPy) holds the data, dtypes (the default one, Keras's
names and promotion rules), seeding.

This is the bottom floor of lamina. Every op asks ``get_array_module`` for the module of its inputs,
so one source serves both NumPy and CuPy. CuPy is imported only when the CUDA device is asked for.
"""
import contextlib
import ctypes
import functools
import os
import random as _pyrandom
import re
import sys
import threading

import numpy as np

_FLOATX = "float32"
_EPSILON = 1e-7
_IMAGE_DATA_FORMAT = "channels_last"
BACKEND_NAME = "lamina"  # what keras.backend.backend() answers (see lamina.config.backend)
_DEVICE = None            # resolved lazily from LAMINA_DEVICE on first use
_VALID_DEVICES = ("cpu", "cuda")


MALLOC_MMAP_THRESHOLD = 32 << 20   # bytes: glibc allocations up to this come from the reusable heap
MALLOC_TRIM_THRESHOLD = 256 << 20  # bytes of free heap kept before glibc returns memory to the OS


def _tune_malloc():
    """Keep freed array memory for reuse instead of handing it back to the OS after every op.

    glibc serves allocations above 128 KiB with fresh mmap pages and unmaps them on free, so every
    temporary array of a training step page-faults its memory in again: on virtual machines this made
    a transformer step ~1.5x slower (75 -> 50 ms on the W4 workload, same peak memory). Raising the mmap
    and trim thresholds lets the heap recycle those blocks. Arrays above 32 MiB still use mmap.
    Set LAMINA_MALLOC_TUNING=0 to leave the allocator alone. Returns True when applied.
    """
    if os.environ.get("LAMINA_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (e.g. musl): nothing to tune
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt parameter numbers from <malloc.h>
    return (bool(libc.mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD))
            and bool(libc.mallopt(m_trim_threshold, MALLOC_TRIM_THRESHOLD)))


MALLOC_TUNED = _tune_malloc()


def floatx():
    """The default float dtype name ('float32')."""
    return _FLOATX


def set_floatx(value):
    """Set the default float dtype: 'float16', 'float32' or 'float64' (NumPy has no bfloat16)."""
    global _FLOATX
    name = str(value)
    if name not in ("float16", "float32", "float64"):
        raise ValueError(f"Unknown `floatx` value: {value}. Expected one of 'float16', 'float32', 'float64'"
                         " (lamina has no 'bfloat16').")
    _FLOATX = name


def epsilon():
    """The fuzz factor added to denominators (1e-7), as keras.backend.epsilon()."""
    return _EPSILON


def set_epsilon(value):
    """Set the fuzz factor returned by epsilon()."""
    global _EPSILON
    _EPSILON = value


def image_data_format():
    """The default image layout: 'channels_last' (NHWC) or 'channels_first' (NCHW)."""
    return _IMAGE_DATA_FORMAT


def set_image_data_format(data_format):
    """Set the default image layout: 'channels_last' or 'channels_first'."""
    global _IMAGE_DATA_FORMAT
    value = str(data_format).lower()
    if value not in ("channels_first", "channels_last"):
        raise ValueError("The `data_format` argument must be one of {'channels_first', 'channels_last'}. "
                         f"Received: data_format={data_format}")
    _IMAGE_DATA_FORMAT = value


def backend():
    """The name of the running backend: 'lamina' (see lamina.config.backend for why not 'numpy')."""
    return BACKEND_NAME


def _import_cupy():
    try:
        import cupy  # noqa: F401  (optional extra: lamina[gpu])
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise RuntimeError(
            "The 'cuda' device needs CuPy, which is not installed. "
            "Install it with: pip install 'lamina[gpu]'") from e
    return cupy


def set_device(name):
    """Choose where new arrays live: 'cpu' (NumPy) or 'cuda' (CuPy)."""
    global _DEVICE
    if name not in _VALID_DEVICES:
        raise ValueError(f"Unknown device {name!r}. Valid devices: {', '.join(_VALID_DEVICES)}.")
    if name == "cuda":
        _import_cupy()
    _DEVICE = name


class _NameScopes(threading.local):
    def __init__(self):
        self.stack = []


_NAME_SCOPES = _NameScopes()


def name_scope_stack():
    """This thread's open name scopes, innermost last: the list a layer call pushes its own scope onto and pops
    (Layer.__call__, without a name_scope object's enter and exit on every call)."""
    return _NAME_SCOPES.stack


class name_scope:
    """Keras's name scope: variables made inside it have its path as the prefix of theirs
    (``with keras.name_scope("enc"): ...`` -> ``enc/dense/kernel``). Layers open one with their own name (the
    caller) around build, call and add_weight, which makes Keras's weight paths: ``model/dense/kernel`` for a
    subclassed model's layer, ``lstm/lstm_cell/kernel``. A scope entered again by the same caller with the same
    name right inside itself is not repeated (deduplicate); ``override_parent`` replaces the path above it."""

    def __init__(self, name, caller=None, deduplicate=True, override_parent=None):
        if not isinstance(name, str) or "/" in name:
            raise ValueError(f"Argument `name` must be a string and cannot contain character `/`. Received: "
                             f"name={name}")
        self.name, self.caller, self.deduplicate, self.override_parent = name, caller, deduplicate, override_parent
        self._pushed = False

    def __enter__(self):
        stack = _NAME_SCOPES.stack
        if (self.deduplicate and stack and self.caller is not None and stack[-1].caller is self.caller
                and stack[-1].name == self.name):
            return self
        stack.append(self)
        self._pushed = True
        return self

    def __exit__(self, *exc):
        if self._pushed:
            _NAME_SCOPES.stack.pop()
            self._pushed = False


def current_path():
    """The path of the name scopes open in this thread ('' outside any)."""
    parts = []
    for scope in _NAME_SCOPES.stack:
        if scope.override_parent is not None:
            parts = [p for p in scope.override_parent.split("/") if p]
        parts.append(scope.name)
    return "/".join(parts)


@contextlib.contextmanager
def device(device_name):
    """``with keras.device("cuda"):``: arrays made in the block live on that device (Keras's device scope);
    Keras's names are accepted ("cpu", "cpu:0", "gpu:0", "cuda:0": lamina has one device of each kind)."""
    kind = str(device_name).split(":")[0].strip().lower()
    kind = "cuda" if kind == "gpu" else kind
    if kind not in _VALID_DEVICES:
        raise ValueError(f"Unknown device {device_name!r}. Valid devices: 'cpu', 'gpu' or 'cuda' (with an "
                         "optional ':0').")
    previous = get_device()
    set_device(kind)
    try:
        yield
    finally:
        set_device(previous)


def module_for(device):
    """numpy for 'cpu', cupy for 'cuda' (a clear error when CuPy is missing or the name is unknown)."""
    if device not in _VALID_DEVICES:
        raise ValueError(f"Unknown device {device!r}. Valid devices: {', '.join(_VALID_DEVICES)}.")
    return _import_cupy() if device == "cuda" else np


def get_device():
    global _DEVICE
    if _DEVICE is None:
        name = os.environ.get("LAMINA_DEVICE", "cpu").strip().lower() or "cpu"
        try:
            set_device(name)
        except (RuntimeError, ValueError) as e:
            raise type(e)(f"{e} (The device was asked for by the environment variable LAMINA_DEVICE={name!r}; "
                          "unset it to use the CPU.)") from None
    return _DEVICE


def device_module():
    """The array module of the current device (numpy or cupy)."""
    return _import_cupy() if get_device() == "cuda" else np


def is_cupy_array(a):
    return type(a).__module__.startswith("cupy")


def array_of(a):
    """The array behind a Tensor or Variable (its .data), or ``a`` itself: a NumPy or CuPy array as it is (a CuPy
    array's own .data is its device memory pointer, not an array), anything else unchanged."""
    if isinstance(a, np.ndarray) or is_cupy_array(a):
        return a
    return getattr(a, "data", a)


def get_array_module(*arrays):
    """numpy, or cupy if any of the arrays is a CuPy array (CuPy is never imported otherwise)."""
    for a in arrays:
        if type(a) is np.ndarray:   # the common case first: every op asks of each of its inputs
            continue
        if not isinstance(a, np.ndarray) and not is_cupy_array(a):
            a = getattr(a, "data", a)  # a Tensor's array (array_of's rule, inline: every op's inputs come here)
        if is_cupy_array(a):
            import cupy
            return cupy
    return np


def to_numpy(a):
    """A NumPy array from a NumPy or CuPy array (or anything array-like)."""
    if type(a) is np.ndarray:
        return a
    if is_cupy_array(a):
        return a.get()
    return np.asarray(a)


def to_device(a, xp=None):
    """Move an array to the current device (or to the module xp)."""
    xp = xp or device_module()
    if xp is np:
        return to_numpy(a)
    return xp.asarray(a)


_NAME_UIDS = {}
_SNAKE_1, _SNAKE_2 = re.compile(r"(.)([A-Z][a-z]+)"), re.compile(r"([a-z])([A-Z])")


def snake_case(name):
    """Keras's to_snake_case, the stem of automatic names: 'Conv2DTranspose' -> 'conv2d_transpose', 'RMSprop' ->
    'rm_sprop', 'AdamW' -> 'adam_w' (layers, models, optimizers, and the paths of Keras's weight files)."""
    return _SNAKE_2.sub(r"\1_\2", _SNAKE_1.sub(r"\1_\2", name)).lower()


def unique_name(prefix):
    """prefix, prefix_1, prefix_2, ... (automatic layer and model names)."""
    n = _NAME_UIDS.get(prefix, 0)
    _NAME_UIDS[prefix] = n + 1
    return prefix if n == 0 else f"{prefix}_{n}"


def get_uid(prefix=""):
    """1, 2, 3, ... for successive calls with one prefix; shares the counter of automatic names, so
    after one 'dense' layer get_uid('dense') is 2, as in Keras."""
    n = _NAME_UIDS.get(prefix, 0) + 1
    _NAME_UIDS[prefix] = n
    return n


def clear_session(free_memory=True):
    """Reset automatic names (dense, dense_1, ...), as keras.backend.clear_session(); with free_memory,
    also run the garbage collector (and free CuPy's memory pool if CuPy is loaded)."""
    _NAME_UIDS.clear()
    if free_memory:
        import gc
        gc.collect()
        cupy = sys.modules.get("cupy")
        if cupy is not None:
            cupy.get_default_memory_pool().free_all_blocks()


# ----- dtypes: Keras 3's names and type-promotion rules (lamina.dtypes re-exports them for lamina.ops)
# Keras promotes dtypes on a lattice (the one JAX documents): a result dtype is the least upper bound of its
# operands. Python numbers are "weak": int32_array + 1 stays int32 and float16_array + 1.5 stays float16,
# while a weak float meeting an integer becomes floatx. Outside the TensorFlow backend Keras then narrows a
# 64-bit *promoted* result to 32 bits (an op whose operands all share one dtype keeps it: that case is
# decided by each op, not here). They live here, not in lamina.dtypes, because they fall back on floatx
# and keras.backend exposes them: the bottom floor cannot import a module that imports it.
BOOL = ("bool",)
INTS = ("uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64")
FLOATS = ("bfloat16", "float16", "float32", "float64")
COMPLEX = ("complex64", "complex128")
ALLOWED = BOOL + INTS + FLOATS + COMPLEX + ("string",)

# weak (Python-number) kinds, as nodes of the lattice; Python complex is a strong complex64 in Keras
_WEAK_INT, _WEAK_FLOAT = "int", "float"

# each node -> the nodes directly above it
_ABOVE = {
    "bool": (_WEAK_INT,),
    _WEAK_INT: ("uint8", "int8"),
    "uint8": ("uint16", "int16"),
    "uint16": ("uint32", "int32"),
    "uint32": ("uint64", "int64"),
    "uint64": (_WEAK_FLOAT,),
    "int8": ("int16",),
    "int16": ("int32",),
    "int32": ("int64",),
    "int64": (_WEAK_FLOAT,),
    _WEAK_FLOAT: ("bfloat16", "float16"),
    "bfloat16": ("float32",),
    "float16": ("float32",),
    "float32": ("float64", "complex64"),
    "float64": ("complex128",),
    "complex64": ("complex128",),
    "complex128": (),
}

_NARROW = {"int64": "int32", "uint64": "uint32", "float64": "float32", "complex128": "complex64"}


def _closure():
    up = {}
    for node in _ABOVE:
        seen, todo = {node}, [node]
        while todo:
            for nxt in _ABOVE[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        up[node] = frozenset(seen)
    return up


_UPPER = _closure()


def standardize_dtype(dtype):
    """A dtype's Keras name ('float32', 'int32', ...), as keras.backend.standardize_dtype. None means floatx;
    Python ``int`` is int32, ``float`` float32; NumPy, CuPy and torch dtypes give their names. Anything else
    raises ValueError."""
    if dtype is None:
        return floatx()
    if dtype is bool:
        return "bool"
    if dtype is int or (isinstance(dtype, str) and dtype == "int"):
        return "int32"
    if dtype is float:
        return "float32"
    if dtype is complex:
        return "complex64"
    if dtype is str:
        return "string"
    name = getattr(dtype, "name", None)
    if name is None and isinstance(dtype, type):
        name = getattr(dtype, "__name__", None)
        if issubclass(dtype, np.generic):
            name = np.dtype(dtype).name
    if name is None:
        name = str(dtype)
    if "torch." in name:
        name = name.split(".")[-1]
    if name not in ALLOWED:
        raise ValueError(f"Invalid dtype: {dtype!r}. Expected one of {', '.join(ALLOWED)}.")
    return name


def _node(x):
    """(lattice node, is_weak) of a dtype-like or a value."""
    if x is None:
        return floatx(), False
    if isinstance(x, bool):
        return "bool", False
    if isinstance(x, int) or x is int:
        return _WEAK_INT, True
    if isinstance(x, float) or x is float:
        return _WEAK_FLOAT, True
    if isinstance(x, complex):
        return "complex64", False
    if hasattr(x, "dtype") and not isinstance(x, (type, np.dtype)):
        return standardize_dtype(x.dtype), False
    return standardize_dtype(x), False


@functools.lru_cache(1024)
def _join(nodes):
    common = frozenset.intersection(*(_UPPER[n] for n in nodes))
    # the least element of the common upper bounds: the one every other one is above
    for cand in common:
        if all(other in _UPPER[cand] for other in common):
            return cand
    raise ValueError(f"No common dtype for {sorted(nodes)}")  # pragma: no cover - lattice is complete


def _resolve_weak(node):
    precision = floatx()[-2:]
    if node == _WEAK_INT:
        return "int32"
    if node == _WEAK_FLOAT:
        return "float" + precision
    return node


def result_type(*dtypes):
    """The dtype Keras gives an operation on these dtypes (or values). Python ``int``/``float`` and
    Python numbers are weak. No argument: floatx."""
    if not dtypes:
        return floatx()
    nodes, weak = zip(*(_node(d) for d in dtypes))
    if len(nodes) == 1:
        out, out_weak = nodes[0], weak[0]
    elif len(set(nodes)) == 1 and not all(weak):
        out, out_weak = nodes[0], False
    elif all(weak):
        out, out_weak = _join(frozenset(nodes)), True
    else:
        out = _join(frozenset(n for n, w in zip(nodes, weak)))
        out_weak = out in (_WEAK_INT, _WEAK_FLOAT)
    if out_weak and out != "bool":
        out = _resolve_weak(out)
    return _NARROW.get(out, out)


def is_float_dtype(dtype):
    """True for float16/bfloat16/float32/float64 (any spelling standardize_dtype accepts)."""
    return standardize_dtype(dtype) in FLOATS


def is_int_dtype(dtype):
    """True for the signed and unsigned integer dtypes."""
    return standardize_dtype(dtype) in INTS


# The symbolic tensor class of the functional API, for is_keras_tensor. KerasTensor is defined floors above
# (lamina.layers.layer), which puts it in this slot when it loads; until then nothing can be one.
_KERAS_TENSOR_TYPES = ()
# fn(op, args, kwargs) -> the symbolic result of a public op called on symbolic tensors (set by lamina.layers,
# which makes the functional node; lamina.ops dispatches to it)
_SYMBOLIC_OP = None


def is_keras_tensor(x):
    """True for a symbolic tensor of the functional API (what keras.Input returns)."""
    return isinstance(x, _KERAS_TENSOR_TYPES)


def holds_keras_tensor(x):
    """True for a symbolic tensor, or a list or tuple with one among its items (an op's argument that makes
    its call symbolic: ``ops.concatenate([a, b])``)."""
    return isinstance(x, _KERAS_TENSOR_TYPES) or (
        isinstance(x, (list, tuple)) and any(isinstance(v, _KERAS_TENSOR_TYPES) for v in x))


# Separate random streams, so that one kind of draw never shifts another: adding an unseeded Dropout to a
# model leaves its weight initialisation and the order fit() visits the data unchanged. "noise" (dropout,
# noise and augmentation layers, lamina.random without a seed) is the stream rng() gives by default.
STREAMS = ("noise", "init", "shuffle")
_STREAMS = {name: np.random.default_rng() for name in STREAMS}
_RNG = _STREAMS["noise"]


def _stream_seed(seed, name):
    # the noise stream keeps the generator of the plain seed; the others get their own entropy
    return seed if name == "noise" else [seed, STREAMS.index(name)]


def set_random_seed(seed):
    """Seed every random stream lamina uses (weight initialisation, dropout/noise/augmentation, shuffling),
    and Python's and NumPy's global generators."""
    global _RNG
    seed = int(seed)
    for name in STREAMS:
        _STREAMS[name] = np.random.default_rng(_stream_seed(seed, name))
    _RNG = _STREAMS["noise"]
    _pyrandom.seed(seed)
    np.random.seed(seed % (2 ** 32))


def rng(stream="noise"):
    """One of lamina's random Generators (NumPy): 'noise' (dropout, noise, augmentation; the default),
    'init' (weight initialisers) or 'shuffle' (the order of the data). Draws happen on the host and move
    to the device."""
    try:
        return _STREAMS[stream]
    except KeyError:
        raise ValueError(f"Unknown random stream {stream!r}. Valid streams: {', '.join(STREAMS)}.") from None


def get_rng_state():
    """The state of every stream (a JSON-serialisable dict)."""
    return {name: gen.bit_generator.state for name, gen in _STREAMS.items()}


def set_rng_state(state):
    """Restore get_rng_state()'s result (an older single-generator state sets the noise stream)."""
    if "bit_generator" in state:
        state = {"noise": state}
    for name, value in state.items():
        rng(name).bit_generator.state = value
