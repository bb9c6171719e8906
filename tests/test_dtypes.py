"""lamina.dtypes.result_type against Keras 3's promotion table (every pair of dtypes, and Python numbers)."""
import itertools

import numpy as np
import pytest

from lamina import dtypes

NAMES = ["bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64",
         "bfloat16", "float16", "float32", "float64"]

# Keras 3.15 (torch backend): keras.backend.result_type(row, column), written out as the lattice gives
# it; the test below also compares with real Keras when it is installed.
_TABLE = """
bool     bool u8  u16 u32 u32 i8  i16 i32 i32 bf16 f16 f32 f32
uint8    u8   u8  u16 u32 u32 i16 i16 i32 i32 bf16 f16 f32 f32
uint16   u16  u16 u16 u32 u32 i32 i32 i32 i32 bf16 f16 f32 f32
uint32   u32  u32 u32 u32 u32 i32 i32 i32 i32 bf16 f16 f32 f32
uint64   u32  u32 u32 u32 u32 f32 f32 f32 f32 bf16 f16 f32 f32
int8     i8   i16 i32 i32 f32 i8  i16 i32 i32 bf16 f16 f32 f32
int16    i16  i16 i32 i32 f32 i16 i16 i32 i32 bf16 f16 f32 f32
int32    i32  i32 i32 i32 f32 i32 i32 i32 i32 bf16 f16 f32 f32
int64    i32  i32 i32 i32 f32 i32 i32 i32 i32 bf16 f16 f32 f32
bfloat16 bf16 bf16 bf16 bf16 bf16 bf16 bf16 bf16 bf16 bf16 f32 f32 f32
float16  f16  f16 f16 f16 f16 f16 f16 f16 f16 f32 f16 f32 f32
float32  f32  f32 f32 f32 f32 f32 f32 f32 f32 f32 f32 f32 f32
float64  f32  f32 f32 f32 f32 f32 f32 f32 f32 f32 f32 f32 f32
"""


_SHORT = {"bool": "bool", "bf16": "bfloat16", "f16": "float16", "f32": "float32", "f64": "float64",
          **{f"u{n}": f"uint{n}" for n in (8, 16, 32, 64)}, **{f"i{n}": f"int{n}" for n in (8, 16, 32, 64)}}


def _long(short):
    return _SHORT[short]


def _expected():
    rows = {}
    for line in _TABLE.strip().splitlines():
        name, *cells = line.split()
        rows[name] = [_long(c) for c in cells]
    return rows


@pytest.mark.parametrize("a", NAMES)
def test_pairs_match_keras_table(a):
    exp = _expected()[a]
    assert [dtypes.result_type(a, b) for b in NAMES] == exp


@pytest.mark.parametrize("a", NAMES)
def test_python_numbers_are_weak(a):
    # an int keeps an integer or float dtype (bool becomes int32); a float keeps a float dtype, else floatx
    exp_int = "int32" if a == "bool" else {"int64": "int32", "uint64": "uint32", "float64": "float32"}.get(a, a)
    exp_float = a if a in ("bfloat16", "float16", "float32") else "float32"
    assert dtypes.result_type(a, int) == exp_int
    assert dtypes.result_type(a, 3) == exp_int
    assert dtypes.result_type(a, float) == exp_float
    assert dtypes.result_type(a, 2.5) == exp_float


def test_single_and_empty():
    assert dtypes.result_type() == "float32"
    assert dtypes.result_type(int) == "int32"
    assert dtypes.result_type(float) == "float32"
    assert dtypes.result_type(bool) == "bool"
    assert dtypes.result_type(int, float) == "float32"
    assert dtypes.result_type(np.zeros(2, "int8"), 1) == "int8"


def test_standardize_dtype():
    assert dtypes.standardize_dtype(None) == "float32"
    assert dtypes.standardize_dtype(np.float16) == "float16"
    assert dtypes.standardize_dtype(np.dtype("int64")) == "int64"
    assert dtypes.standardize_dtype(int) == "int32"
    assert dtypes.standardize_dtype("bool") == "bool"
    with pytest.raises(ValueError, match="Invalid dtype"):
        dtypes.standardize_dtype("float")


def test_agrees_with_real_keras(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    kb = keras.backend
    for a, b in itertools.product(NAMES + [int, float], repeat=2):
        assert dtypes.result_type(a, b) == kb.result_type(a, b), (a, b)
