"""Keras 3's dtype names and type-promotion rules, for lamina.ops and lamina.backend.

Keras promotes dtypes on a lattice (the one JAX documents): a result dtype is the least upper bound
of its operands. Python numbers are "weak": ``int32_array + 1`` stays int32 and ``float16_array + 1.5``
stays float16, while a weak float meeting an integer becomes ``floatx``. Outside the TensorFlow
backend Keras then narrows a 64-bit *promoted* result to 32 bits (an op whose operands all share one
dtype keeps it: that case is decided by each op, not here).

>>> result_type("int8", "uint8")
'int16'
>>> result_type("int32", float)
'float32'
>>> result_type("float16", 1.5)
'float16'
"""
import functools

import numpy as np

from . import backend

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
    """A dtype's Keras name ('float32', 'int32', ...). None means floatx; Python ``int`` is int32,
    ``float`` float32; NumPy, CuPy and torch dtypes give their names. Anything else raises ValueError."""
    if dtype is None:
        return backend.floatx()
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
        return backend.floatx(), False
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
    precision = backend.floatx()[-2:]
    if node == _WEAK_INT:
        return "int32"
    if node == _WEAK_FLOAT:
        return "float" + precision
    return node


def result_type(*dtypes):
    """The dtype Keras gives an operation on these dtypes (or values). Python ``int``/``float`` and
    Python numbers are weak. No argument: floatx."""
    if not dtypes:
        return backend.floatx()
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


def is_float(dtype):
    return standardize_dtype(dtype) in FLOATS


def is_int(dtype):
    return standardize_dtype(dtype) in INTS
