"""Keras 3's dtype names and type-promotion rules, for lamina.ops.

The rules live in lamina.backend, the bottom floor: they fall back on its default float dtype (floatx),
and ``keras.backend.standardize_dtype``/``result_type`` are them. This module gives lamina.ops their
short names. Keras promotes on a lattice (the one JAX documents): a result dtype is the least upper
bound of its operands; Python numbers are "weak" (see lamina.backend).

>>> result_type("int8", "uint8")
'int16'
>>> result_type("int32", float)
'float32'
>>> result_type("float16", 1.5)
'float16'
"""
from .backend import ALLOWED, BOOL, COMPLEX, FLOATS, INTS, result_type, standardize_dtype  # noqa: F401


def is_float(dtype):
    return standardize_dtype(dtype) in FLOATS


def is_int(dtype):
    return standardize_dtype(dtype) in INTS
