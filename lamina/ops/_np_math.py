"""Part of lamina.ops.numpy (see numpy.py): elementwise math, comparisons, logic, bitwise ops,
reductions (plain and NaN-skipping), statistics, and array creation, with keras.ops's names,
parameters, defaults and result dtypes (those of Keras 3.15 on its torch backend).

Inputs may be Tensors, NumPy/CuPy arrays, Python numbers or lists; they convert like
``keras.ops.convert_to_tensor`` (Python floats -> floatx, Python ints -> int32, arrays keep their
dtype). Float results are differentiable wherever Keras's are; integer and bool results are constants.
"""
import builtins

import numpy as np

from .. import backend, dtypes
from ..tensor import Tensor
from . import activations as _act
from . import elementwise as _e
from . import manipulation as _s
from . import math as _m

__all__ = [
    # arithmetic
    "add", "subtract", "multiply", "divide", "true_divide", "divide_no_nan", "floor_divide", "negative",
    "power", "mod", "fmod", "abs", "absolute", "fabs", "sign", "square", "sqrt", "cbrt", "reciprocal",
    "maximum", "minimum", "fmax", "fmin", "clip", "round", "floor", "ceil", "trunc",
    # exponentials, logs, trigonometry
    "exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "logaddexp", "logaddexp2",
    "sin", "cos", "tan", "arcsin", "arccos", "arctan", "arctan2", "sinh", "cosh", "tanh", "arcsinh",
    "arccosh", "arctanh", "hypot", "deg2rad", "rad2deg", "sinc", "i0", "heaviside", "ldexp",
    "nextafter", "gcd", "lcm",
    # complex parts
    "real", "imag", "conj", "conjugate", "angle", "isreal",
    # comparisons and logic
    "equal", "not_equal", "less", "less_equal", "greater", "greater_equal", "isclose", "allclose",
    "isnan", "isinf", "isfinite", "isneginf", "isposinf", "signbit", "logical_and", "logical_or",
    "logical_xor", "logical_not", "nan_to_num",
    # bitwise
    "bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_not", "bitwise_invert", "bitwise_left_shift",
    "bitwise_right_shift", "left_shift", "right_shift",
    # reductions
    "sum", "mean", "max", "min", "amax", "amin", "prod", "std", "var", "all", "any", "argmax", "argmin",
    "count_nonzero", "ptp", "cumsum", "cumprod", "median", "quantile", "percentile", "average",
    "nansum", "nanmean", "nanmax", "nanmin", "nanprod", "nanstd", "nanvar", "nanargmax", "nanargmin",
    "nancumsum", "nancumprod", "nanmedian", "nanquantile", "nanpercentile",
    # statistics and calculus
    "bincount", "histogram", "corrcoef", "correlate", "diff", "trapezoid", "slogdet",
    # creation
    "arange", "array", "ones", "zeros", "full", "empty", "ones_like", "zeros_like", "full_like",
    "empty_like", "eye", "identity", "tri", "linspace", "logspace", "geomspace", "meshgrid", "vander",
    "bartlett", "blackman", "hamming", "hanning", "kaiser",
]

_KIND_RANK = {"b": 0, "u": 1, "i": 1, "f": 2, "c": 3}


# ============================================================================ conversion and dtypes

def _data(x):
    return x.data if isinstance(x, Tensor) else x


def _is_num(x):
    """A Python number: weakly typed in Keras's promotion."""
    return isinstance(x, (bool, int, float, complex)) and not isinstance(x, np.generic)


def _xp(*xs):
    arrays = [_data(x) for x in xs if isinstance(x, Tensor) or backend.is_cupy_array(x)]
    return backend.get_array_module(*arrays) if arrays else backend.device_module()


def convert(x, dtype=None):
    """x as a Tensor, by keras.ops.convert_to_tensor's rules; cast (differentiably) when dtype is given."""
    if isinstance(x, Tensor):
        return x if dtype is None or x.dtype == np.dtype(dtype) else _m.cast(x, dtype)
    if isinstance(x, float) and isinstance(x, np.generic) and dtype is None:
        arr = np.asarray(x, dtype=backend.floatx())  # np.float64 is a Python float: floatx, as in Keras
    elif isinstance(x, (np.ndarray, np.generic)) or backend.is_cupy_array(x):
        arr = x
    else:
        arr = np.asarray(x)
        if dtype is None and arr.dtype == np.int64:
            arr = arr.astype(np.int32)
        elif dtype is None and arr.dtype == np.float64:
            arr = arr.astype(backend.floatx())
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    if not backend.is_cupy_array(arr):  # host data goes to the current device, as Keras's does
        xp = backend.device_module()
        if xp is not np:
            arr = xp.asarray(arr)
    return Tensor(arr)


def _name(x):
    """Keras's dtype name of a value (Python numbers give their type, which result_type treats as weak)."""
    if _is_num(x):
        return x
    if hasattr(x, "dtype"):
        return dtypes.standardize_dtype(x.dtype)
    return dtypes.standardize_dtype(convert(x).dtype)


def _const(a):
    """A result with no gradient."""
    return Tensor(a)


def _kind_top(names):
    """Promote dtype names the way torch does within one priority level: the highest kind wins, and
    names of that kind promote like NumPy's."""
    top = builtins.max(_KIND_RANK[np.dtype(d).kind] for d in names)
    same = [d for d in names if _KIND_RANK[np.dtype(d).kind] == top]
    out = same[0]
    for d in same[1:]:
        out = np.promote_types(out, d).name
    return out


def _torch_dtype(*xs):
    """Result dtype of torch's own promotion, which Keras's add/subtract/multiply/divide/power/mod use.
    Arrays with dimensions rank first, then 0-d arrays and Python numbers (which Keras makes int32 or
    floatx 0-d tensors): a lower rank only counts when its kind is higher. Within a rank the highest
    kind wins and same-kind dtypes promote like NumPy's."""
    if builtins.all(_is_num(x) for x in xs):
        return dtypes.result_type(*xs)
    dims, zeros_ = [], []
    for x in xs:
        if _is_num(x):
            zeros_.append("bool" if isinstance(x, bool) else "int32" if isinstance(x, int) else
                          backend.floatx() if isinstance(x, float) else "complex64")
            continue
        a = _data(x) if hasattr(_data(x), "dtype") and not isinstance(x, np.generic) else _data(convert(x))
        (dims if a.ndim > 0 else zeros_).append(dtypes.standardize_dtype(a.dtype))
    out = _kind_top(dims) if dims else None
    if zeros_:
        z = _kind_top(zeros_)
        if out is None or _KIND_RANK[np.dtype(z).kind] > _KIND_RANK[np.dtype(out).kind]:
            out = z
    return out


def _float_dtype(x):
    """Floats keep their dtype; bool and integers compute in floatx."""
    if isinstance(x, Tensor) and x.dtype.kind == "f":
        return x.dtype.name
    d = _name(x)
    return d if dtypes.is_float(d) or d in dtypes.COMPLEX else backend.floatx()


def _strong(x):
    """Keras's dtype name of x once converted to a tensor (a Python float is then a floatx tensor)."""
    return dtypes.standardize_dtype(convert(x).dtype) if _is_num(x) else _name(x)


def _rf_dtype(*xs, weak=False):
    """Keras's ``result_type(..., float)`` over the converted inputs (Python numbers weak only when
    ``weak``): integers -> floatx, and 64-bit floats narrow to float32."""
    return dtypes.result_type(*[_name(x) if weak else _strong(x) for x in xs], float)


def _f64_dtype(x):
    """torch's own float promotion: int64 -> float64, other integers and bool -> floatx."""
    d = _name(x)
    return "float64" if d == "int64" else _float_dtype(x)


def _norm_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axis = (int(axis),)
    out = []
    for a in axis:
        a = int(a)
        if not -ndim <= a < builtins.max(ndim, 1):
            raise ValueError(f"axis {a} is out of bounds for an array of rank {ndim}")
        out.append(a % builtins.max(ndim, 1))
    return tuple(sorted(set(out)))


def _keep(y, shape, axes):
    """Reshape a reduced result so that the reduced axes stay as size 1."""
    return _s.reshape(y, tuple(1 if i in axes else n for i, n in enumerate(shape)))


# ============================================================================ arithmetic

def _float_tensor_and_number(x1, x2):
    """(tensor, number-as-tensor, tensor_first) when one operand is a float Tensor and the other a Python
    int/float: the common case, whose result keeps the tensor's dtype; else None."""
    for t, n, first in ((x1, x2, True), (x2, x1, False)):
        if isinstance(t, Tensor) and t.dtype.kind == "f" and type(n) in (int, float):
            return t, Tensor(backend.get_array_module(t.data).asarray(n, dtype=t.dtype)), first
    return None


def _fast(fn, x1, x2, keep64=True):
    """fn on (x1, x2) when both are float Tensors of one dtype, or a float Tensor and a number; else None."""
    if isinstance(x1, Tensor) and isinstance(x2, Tensor):
        if x1.dtype == x2.dtype and x1.dtype.kind == "f" and (keep64 or x1.dtype != np.float64):
            return fn(x1, x2)
        return None
    pair = _float_tensor_and_number(x1, x2)
    if pair is None or (not keep64 and pair[0].dtype == np.float64):
        return None
    t, n, first = pair
    return fn(t, n) if first else fn(n, t)


def _binary_kernel(fn, x1, x2, dtype):
    return fn(convert(x1, dtype), convert(x2, dtype))


def add(x1, x2):
    """x1 + x2, elementwise with broadcasting."""
    y = _fast(_m.add, x1, x2)
    if y is not None:
        return y
    d = _torch_dtype(x1, x2)
    if not dtypes.is_float(d):
        return _const(_xp(x1, x2).add(_data(convert(x1, d)), _data(convert(x2, d))).astype(d, copy=False))
    return _binary_kernel(_m.add, x1, x2, d)


def subtract(x1, x2):
    """x1 - x2, elementwise with broadcasting."""
    y = _fast(_m.subtract, x1, x2)
    if y is not None:
        return y
    d = _torch_dtype(x1, x2)
    if d == "bool":
        raise TypeError("subtract of two bool tensors is not supported; use logical_xor.")
    if not dtypes.is_float(d):
        return _const(np.subtract(_data(convert(x1, d)), _data(convert(x2, d))).astype(d, copy=False)
                      if _xp(x1, x2) is np else _data(convert(x1, d)) - _data(convert(x2, d)))
    return _binary_kernel(_m.subtract, x1, x2, d)


def multiply(x1, x2):
    """x1 * x2, elementwise with broadcasting."""
    y = _fast(_m.multiply, x1, x2)
    if y is not None:
        return y
    d = _torch_dtype(x1, x2)
    if not dtypes.is_float(d):
        a, b = _data(convert(x1, d)), _data(convert(x2, d))
        return _const((a & b) if d == "bool" else (a * b).astype(d, copy=False))
    return _binary_kernel(_m.multiply, x1, x2, d)


def divide(x1, x2):
    """x1 / x2 (true division); integers divide in floatx."""
    y = _fast(_m.divide, x1, x2)
    if y is not None:
        return y
    d = _torch_dtype(x1, x2)
    if not dtypes.is_float(d):
        d = backend.floatx()
    return _binary_kernel(_m.divide, x1, x2, d)


def true_divide(x1, x2):
    """x1 / x2 (same as divide)."""
    return divide(x1, x2)


def divide_no_nan(x1, x2):
    """x1 / x2, and 0 where x2 == 0 (the gradient is 0 there too)."""
    return _binary_kernel(_e.DivideNoNan.apply, x1, x2, _rf_dtype(x1, x2, weak=True))


def floor_divide(x1, x2):
    """floor(x1 / x2), elementwise; no gradient (it is piecewise constant)."""
    d = dtypes.result_type(_name(x1), _name(x2))
    a, b = _data(convert(x1, d)), _data(convert(x2, d))
    return _const(_xp(x1, x2).floor_divide(a, b).astype(d, copy=False))


def negative(x):
    """-x."""
    x = convert(x)
    return _m.negative(x) if x.dtype.kind == "f" else _const(-x.data)


def power(x1, x2):
    """x1 ** x2, elementwise. Gradients: x2 x1^(x2-1) and x1^x2 log(x1) (0 where x1 <= 0)."""
    d = _torch_dtype(x1, x2)
    if not dtypes.is_float(d):
        a, b = _data(convert(x1, d)), _data(convert(x2, d))
        return _const(_xp(x1, x2).power(a, b).astype(d, copy=False))
    if _is_num(x2) and not isinstance(x2, complex) and isinstance(x1, Tensor) and x1.dtype == np.dtype(d):
        return _m.PowerScalar.apply(x1, p=x2)
    return _m.Power.apply(convert(x1, d), convert(x2, d))


def _mod_like(kernel, ufunc, x1, x2):
    d = _torch_dtype(x1, x2)
    if d == "bool":
        d = "int32"
    if not dtypes.is_float(d):
        a, b = _data(convert(x1, d)), _data(convert(x2, d))
        return _const(getattr(_xp(x1, x2), ufunc)(a, b).astype(d, copy=False))
    return _binary_kernel(kernel.apply, x1, x2, d)


def mod(x1, x2):
    """x1 - floor(x1 / x2) x2 (the sign of x2, like Python's %). Gradients: 1 and -floor(x1 / x2)."""
    return _mod_like(_e.Mod, "mod", x1, x2)


def fmod(x1, x2):
    """x1 - trunc(x1 / x2) x2 (the sign of x1, like C's fmod). Gradients: 1 and -trunc(x1 / x2)."""
    return _mod_like(_e.Fmod, "fmod", x1, x2)


def abs(x):  # noqa: A001 - Keras's name
    """|x|, elementwise; gradient sign(x) (0 at 0)."""
    x = convert(x)
    return _m.abs(x) if x.dtype.kind == "f" else _const(_xp(x).abs(x.data))


def absolute(x):
    """|x| (same as abs)."""
    return abs(x)


def fabs(x):
    """|x| as a float (integers become floatx)."""
    return abs(convert(x, _float_dtype(x)))


def sign(x):
    """sign(x): -1, 0 or 1 (NaN gives 0, as Keras's torch backend); no gradient."""
    x = convert(x)
    if x.dtype == bool:
        return _const(x.data.copy())
    xp = _xp(x)
    out = xp.sign(x.data)
    return _const(xp.where(xp.isnan(out), 0, out).astype(out.dtype, copy=False) if out.dtype.kind == "f" else out)


def square(x):
    """x * x; gradient 2x. bool becomes int32."""
    x = convert(x)
    if x.dtype == bool:
        x = convert(x, "int32")
    return _m.square(x) if x.dtype.kind == "f" else _const(x.data * x.data)


def _unary(kernel, x, dtype):
    return kernel(convert(x, dtype))


def sqrt(x):
    """sqrt(x); gradient 1 / (2 sqrt(x)). Integers compute in floatx."""
    return _unary(_m.sqrt, x, _float_dtype(x))


def cbrt(x):
    """Real cube root; gradient 1 / (3 cbrt(x)^2)."""
    return _unary(_e.Cbrt.apply, x, _f64_dtype(x))


def reciprocal(x):
    """1 / x; gradient -1 / x^2."""
    return _unary(_e.Reciprocal.apply, x, _float_dtype(x))


def maximum(x1, x2):
    """Elementwise maximum (NaN propagates); a tie sends half the gradient to each side."""
    y = _fast(_m.maximum, x1, x2, keep64=False)
    if y is not None:
        return y
    d = dtypes.result_type(_name(x1), _name(x2))
    if not dtypes.is_float(d):
        return _const(_xp(x1, x2).maximum(_data(convert(x1, d)), _data(convert(x2, d))))
    return _binary_kernel(_m.maximum, x1, x2, d)


def minimum(x1, x2):
    """Elementwise minimum (NaN propagates); a tie sends half the gradient to each side."""
    y = _fast(_m.minimum, x1, x2, keep64=False)
    if y is not None:
        return y
    d = dtypes.result_type(_name(x1), _name(x2))
    if not dtypes.is_float(d):
        return _const(_xp(x1, x2).minimum(_data(convert(x1, d)), _data(convert(x2, d))))
    return _binary_kernel(_m.minimum, x1, x2, d)


def fmax(x1, x2):
    """Elementwise maximum ignoring NaN (NaN only where both are NaN)."""
    d = dtypes.result_type(_name(x1), _name(x2))
    if not dtypes.is_float(d):
        return _const(_xp(x1, x2).fmax(_data(convert(x1, d)), _data(convert(x2, d))))
    return _binary_kernel(_e.FMax.apply, x1, x2, d)


def fmin(x1, x2):
    """Elementwise minimum ignoring NaN (NaN only where both are NaN)."""
    d = dtypes.result_type(_name(x1), _name(x2))
    if not dtypes.is_float(d):
        return _const(_xp(x1, x2).fmin(_data(convert(x1, d)), _data(convert(x2, d))))
    return _binary_kernel(_e.FMin.apply, x1, x2, d)


def clip(x, x_min, x_max):
    """min(max(x, x_min), x_max). The gradient passes where x_min <= x <= x_max; bool becomes int32."""
    d = _torch_dtype(*[v for v in (x, x_min, x_max) if v is not None])
    if d == "bool":
        d = "int32"
    x = convert(x, d)
    lo = None if x_min is None else (x_min if _is_num(x_min) else convert(x_min, d))
    hi = None if x_max is None else (x_max if _is_num(x_max) else convert(x_max, d))
    if x.dtype.kind != "f":
        return _const(_xp(x).clip(x.data, _data(lo), _data(hi)).astype(d, copy=False))
    if not isinstance(lo, Tensor) and not isinstance(hi, Tensor):
        return _m.clip(x, lo, hi)
    y = x if lo is None else _m.maximum(x, lo)
    return y if hi is None else _m.minimum(y, hi)


def round(x, decimals=0):  # noqa: A001 - Keras's name
    """Round half to even, to `decimals` places (negative: tens, hundreds...); no gradient."""
    x = convert(x)
    if x.dtype == bool:
        raise TypeError("round does not support bool inputs.")
    xp = _xp(x)
    if x.dtype.kind == "f":
        return _const(xp.round(x.data, decimals))
    return _const(xp.round(x.data.astype(backend.floatx()), decimals).astype(x.dtype))


def _rounding(name, x):
    d = _rf_dtype(x)
    return _const(getattr(_xp(x), name)(_data(convert(x)).astype(d)))


def floor(x):
    """Largest integer <= x, as a float; no gradient."""
    return _rounding("floor", x)


def ceil(x):
    """Smallest integer >= x, as a float; no gradient."""
    return _rounding("ceil", x)


def trunc(x):
    """x rounded toward zero; integers unchanged; no gradient."""
    x = convert(x)
    return _const(x.data.copy() if x.dtype.kind != "f" else _xp(x).trunc(x.data))


# ============================================================================ exp, log, trigonometry

def exp(x):
    """e^x; gradient e^x."""
    return _unary(_m.exp, x, _float_dtype(x))


def exp2(x):
    """2^x; gradient 2^x ln 2."""
    return _unary(_e.Exp2.apply, x, _float_dtype(x))


def expm1(x):
    """e^x - 1, accurate near 0; gradient e^x."""
    return _unary(_e.Expm1.apply, x, _float_dtype(x))


def log(x):
    """Natural logarithm; gradient 1 / x."""
    return _unary(_m.log, x, _float_dtype(x))


def log2(x):
    """Base-2 logarithm; gradient 1 / (x ln 2)."""
    return _unary(_e.Log2.apply, x, _float_dtype(x))


def log10(x):
    """Base-10 logarithm; gradient 1 / (x ln 10)."""
    return _unary(_e.Log10.apply, x, _float_dtype(x))


def log1p(x):
    """log(1 + x), accurate near 0; gradient 1 / (1 + x)."""
    return _unary(_e.Log1p.apply, x, _float_dtype(x))


def logaddexp(x1, x2):
    """log(e^x1 + e^x2) without overflow; gradients sigmoid(x1 - x2) and sigmoid(x2 - x1)."""
    return _binary_kernel(_e.LogAddExp.apply, x1, x2, _rf_dtype(x1, x2))


def logaddexp2(x1, x2):
    """log2(2^x1 + 2^x2) without overflow."""
    return _binary_kernel(_e.LogAddExp2.apply, x1, x2, _rf_dtype(x1, x2))


def sin(x):
    """sin x; gradient cos x."""
    return _unary(_e.Sin.apply, x, _float_dtype(x))


def cos(x):
    """cos x; gradient -sin x."""
    return _unary(_e.Cos.apply, x, _float_dtype(x))


def tan(x):
    """tan x; gradient 1 + tan^2 x."""
    return _unary(_e.Tan.apply, x, _float_dtype(x))


def arcsin(x):
    """Inverse sine; gradient 1 / sqrt(1 - x^2)."""
    return _unary(_e.Arcsin.apply, x, _float_dtype(x))


def arccos(x):
    """Inverse cosine; gradient -1 / sqrt(1 - x^2)."""
    return _unary(_e.Arccos.apply, x, _float_dtype(x))


def arctan(x):
    """Inverse tangent; gradient 1 / (1 + x^2)."""
    return _unary(_e.Arctan.apply, x, _float_dtype(x))


def arctan2(x1, x2):
    """Angle of the point (x2, x1) in (-pi, pi]; gradients x2 / r^2 and -x1 / r^2."""
    return _binary_kernel(_e.Arctan2.apply, x1, x2, _rf_dtype(x1, x2))


def sinh(x):
    """Hyperbolic sine; gradient cosh x."""
    return _unary(_e.Sinh.apply, x, _float_dtype(x))


def cosh(x):
    """Hyperbolic cosine; gradient sinh x."""
    return _unary(_e.Cosh.apply, x, _float_dtype(x))


def tanh(x):
    """Hyperbolic tangent; gradient 1 - tanh^2 x."""
    return _unary(_act.tanh, x, _float_dtype(x))


def arcsinh(x):
    """Inverse hyperbolic sine; gradient 1 / sqrt(x^2 + 1)."""
    return _unary(_e.Arcsinh.apply, x, _float_dtype(x))


def arccosh(x):
    """Inverse hyperbolic cosine; gradient 1 / sqrt(x^2 - 1)."""
    return _unary(_e.Arccosh.apply, x, _float_dtype(x))


def arctanh(x):
    """Inverse hyperbolic tangent; gradient 1 / (1 - x^2)."""
    return _unary(_e.Arctanh.apply, x, _float_dtype(x))


def hypot(x1, x2):
    """sqrt(x1^2 + x2^2) without overflow; gradients x1 / h and x2 / h."""
    d = dtypes.result_type(_strong(x1), _strong(x2))
    d = "float64" if d == "int64" else d if dtypes.is_float(d) else backend.floatx()
    return _binary_kernel(_e.Hypot.apply, x1, x2, d)


def deg2rad(x):
    """Degrees to radians: x pi / 180."""
    x = convert(x, _f64_dtype(x))
    return _m.multiply(x, Tensor(_xp(x).asarray(np.pi / 180, dtype=x.dtype)))


def rad2deg(x):
    """Radians to degrees: x 180 / pi."""
    x = convert(x, _f64_dtype(x))
    return _m.multiply(x, Tensor(_xp(x).asarray(180 / np.pi, dtype=x.dtype)))


def sinc(x):
    """sin(pi x) / (pi x), 1 at 0 (the normalised sinc)."""
    return _unary(_e.Sinc.apply, x, _float_dtype(x))


def i0(x):
    """Modified Bessel function of the first kind, order 0; gradient I1(x)."""
    return _unary(_e.I0.apply, x, _f64_dtype(x))


def heaviside(x1, x2):
    """Step function: 0 where x1 < 0 (or NaN), x2 where x1 == 0, 1 where x1 > 0; no gradient."""
    d = dtypes.result_type(_strong(x1), _strong(x2))
    d = "float64" if d == "int64" else d if (dtypes.is_float(d) or d == "bool") else backend.floatx()
    a, b = _data(convert(x1, d)), _data(convert(x2, d))
    xp = _xp(x1, x2)
    if d == "bool":
        return _const(xp.where(a, True, b) & xp.ones_like(a | b))
    one, zero = xp.ones((), dtype=d), xp.zeros((), dtype=d)
    # NaN in x1 gives 0, as Keras's torch backend (NumPy gives NaN)
    return _const(xp.where(a > 0, one, xp.where(a == 0, b, zero)).astype(d, copy=False))


def ldexp(x1, x2):
    """x1 * 2^x2 with an integer exponent x2; gradient 2^x2 for x1."""
    d2 = _name(x2)
    if _is_num(x2) and not isinstance(x2, int) or (not _is_num(x2) and not dtypes.is_int(d2)):
        raise TypeError(f"ldexp exponent must be an integer type. Received: x2 dtype={d2}")
    d = _rf_dtype(x1, x2)
    x1 = convert(x1, d)
    scale = _xp(x1).ldexp(_xp(x1).ones((), d), _data(convert(x2))).astype(d, copy=False)
    return _m.multiply(x1, Tensor(scale))


def nextafter(x1, x2):
    """The next representable float after x1 toward x2; no gradient."""
    d = _rf_dtype(x1, x2)
    return _const(_xp(x1, x2).nextafter(_data(convert(x1, d)), _data(convert(x2, d))))


def _int_binary(name, x1, x2):
    d = _torch_dtype(x1, x2)
    a, b = _data(convert(x1, d)), _data(convert(x2, d))
    if a.dtype.kind not in "iub":
        raise TypeError(f"{name} expects integer inputs, got {a.dtype}.")
    return _const(getattr(_xp(x1, x2), name)(a, b).astype(d, copy=False))


def gcd(x1, x2):
    """Greatest common divisor of integers, elementwise."""
    return _int_binary("gcd", x1, x2)


def lcm(x1, x2):
    """Least common multiple of integers, elementwise."""
    return _int_binary("lcm", x1, x2)


# ============================================================================ complex parts

def real(x):
    """Real part (a real input is returned unchanged)."""
    x = convert(x)
    return x if x.dtype.kind != "c" else _const(x.data.real.copy())


def imag(x):
    """Imaginary part (zeros for a real input)."""
    x = convert(x)
    return _const(x.data.imag.copy() if x.dtype.kind == "c" else _xp(x).zeros_like(x.data))


def conj(x):
    """Complex conjugate (a real input is returned unchanged)."""
    x = convert(x)
    return x if x.dtype.kind != "c" else _const(x.data.conj())


def conjugate(x):
    """Complex conjugate (same as conj)."""
    return conj(x)


def angle(x):
    """Argument of a complex number (pi for negative reals, 0 otherwise for real inputs)."""
    x = convert(x)
    if x.dtype.kind == "c":
        return _const(_xp(x).angle(x.data))
    d = _float_dtype(x)
    xp = _xp(x)
    xf = x.data.astype(d)
    # pi for negative reals, 0 otherwise (also for -0.0, as Keras's torch backend); NaN stays NaN
    zero_or_nan = xp.where(xp.isnan(xf), xf, xp.zeros((), dtype=d))
    return _const(xp.where(xf < 0, xp.asarray(np.pi, dtype=d), zero_or_nan).astype(d, copy=False))


def isreal(x):
    """True where the imaginary part is 0 (everywhere for a real input)."""
    x = convert(x)
    return _const(_xp(x).isreal(x.data))


# ============================================================================ comparisons and logic

def _compare(name, x1, x2):
    a, b = _data(convert(x1)) if not _is_num(x1) else x1, _data(convert(x2)) if not _is_num(x2) else x2
    return _const(getattr(_xp(x1, x2), name)(a, b))


def equal(x1, x2):
    """x1 == x2, elementwise (bool)."""
    return _compare("equal", x1, x2)


def not_equal(x1, x2):
    """x1 != x2, elementwise (bool)."""
    return _compare("not_equal", x1, x2)


def less(x1, x2):
    """x1 < x2, elementwise (bool)."""
    return _compare("less", x1, x2)


def less_equal(x1, x2):
    """x1 <= x2, elementwise (bool)."""
    return _compare("less_equal", x1, x2)


def greater(x1, x2):
    """x1 > x2, elementwise (bool)."""
    return _compare("greater", x1, x2)


def greater_equal(x1, x2):
    """x1 >= x2, elementwise (bool)."""
    return _compare("greater_equal", x1, x2)


def logical_and(x1, x2):
    """x1 and x2, elementwise, nonzero being True (bool)."""
    return _compare("logical_and", x1, x2)


def logical_or(x1, x2):
    """x1 or x2, elementwise (bool)."""
    return _compare("logical_or", x1, x2)


def logical_xor(x1, x2):
    """x1 xor x2, elementwise (bool)."""
    return _compare("logical_xor", x1, x2)


def logical_not(x):
    """not x, elementwise (bool)."""
    return _const(_xp(x).logical_not(_data(convert(x))))


def isclose(x1, x2, rtol=1e-05, atol=1e-08, equal_nan=False):
    """|x1 - x2| <= atol + rtol |x2|, elementwise (bool); NaNs equal when equal_nan."""
    d = dtypes.result_type(_name(x1), _name(x2))
    a, b = _data(convert(x1, d)), _data(convert(x2, d))
    return _const(_xp(x1, x2).isclose(a, b, rtol=rtol, atol=atol, equal_nan=equal_nan))


def allclose(x1, x2, rtol=1e-05, atol=1e-08, equal_nan=False):
    """Whether isclose holds everywhere (a bool scalar)."""
    return _const(isclose(x1, x2, rtol, atol, equal_nan).data.all())


def _test(name, x):
    x = convert(x)
    xp = _xp(x)
    if x.dtype.kind not in "fc":
        fill = name == "isfinite"
        return _const(xp.full(x.shape, fill, dtype=bool))
    return _const(getattr(xp, name)(x.data))


def isnan(x):
    """True where x is NaN."""
    return _test("isnan", x)


def isinf(x):
    """True where x is +inf or -inf."""
    return _test("isinf", x)


def isfinite(x):
    """True where x is neither NaN nor infinite."""
    return _test("isfinite", x)


def isneginf(x):
    """True where x is -inf."""
    return _test("isneginf", x)


def isposinf(x):
    """True where x is +inf."""
    return _test("isposinf", x)


def signbit(x):
    """True where the sign bit is set (negative numbers and -0.0)."""
    x = convert(x)
    if x.dtype == bool:
        return _const(_xp(x).zeros(x.shape, dtype=bool))
    return _const(_xp(x).signbit(x.data))


def nan_to_num(x, nan=0.0, posinf=None, neginf=None):
    """NaN -> nan, +inf -> posinf (default: the dtype's max), -inf -> neginf (default: its min).
    The gradient passes where x was finite."""
    x = convert(x)
    if x.dtype.kind != "f":
        return x
    xp = _xp(x)
    info = np.finfo(x.dtype)
    pos = info.max if posinf is None else posinf
    neg = info.min if neginf is None else neginf
    fill = xp.where(xp.isnan(x.data), nan, xp.where(x.data > 0, pos, neg)).astype(x.dtype)
    return _m.where(xp.isfinite(x.data), x, Tensor(fill))


# ============================================================================ bitwise

def _bitwise(name, x, y):
    d = _torch_dtype(x, y)
    if "shift" in name and isinstance(y, int) and _name(x) == "bool":
        d = "int64"  # torch: a bool tensor shifted by a Python int is int64
    a, b = _data(convert(x, d)), _data(convert(y, d))
    if a.dtype.kind not in "iub" or (a.dtype == bool and "shift" in name):
        raise TypeError(f"{name} expects integer inputs, got {a.dtype}.")
    return _const(getattr(_xp(x, y), name)(a, b).astype(d, copy=False))


def bitwise_and(x, y):
    """x & y on integers and bools."""
    return _bitwise("bitwise_and", x, y)


def bitwise_or(x, y):
    """x | y on integers and bools."""
    return _bitwise("bitwise_or", x, y)


def bitwise_xor(x, y):
    """x ^ y on integers and bools."""
    return _bitwise("bitwise_xor", x, y)


def bitwise_invert(x):
    """~x on integers and bools."""
    x = convert(x)
    if x.dtype.kind not in "iub":
        raise TypeError(f"bitwise_invert expects integer inputs, got {x.dtype}.")
    return _const(_xp(x).invert(x.data))


def bitwise_not(x):
    """~x (same as bitwise_invert)."""
    return bitwise_invert(x)


def bitwise_left_shift(x, y):
    """x << y on integers."""
    return _bitwise("left_shift", x, y)


def left_shift(x, y):
    """x << y (same as bitwise_left_shift)."""
    return bitwise_left_shift(x, y)


def bitwise_right_shift(x, y):
    """x >> y on integers (arithmetic shift for signed types)."""
    return _bitwise("right_shift", x, y)


def right_shift(x, y):
    """x >> y (same as bitwise_right_shift)."""
    return bitwise_right_shift(x, y)


# ============================================================================ reductions

def _sum_dtype(d):
    """Keras's sum dtype: floats, int64 and uint64 keep theirs; bool and narrower integers sum in int32."""
    if d == "uint32":
        return "int64"
    return d if d in ("int64", "uint64") or dtypes.is_float(d) else "int32"


def sum(x, axis=None, keepdims=False):  # noqa: A001 - Keras's name
    """Sum over axis (None: all); gradient 1 for each entry. bool and small integers sum in int32."""
    x = convert(x)
    axes = _norm_axes(axis, x.ndim)
    if x.dtype.kind == "f":
        return _m.sum(x, axis=axes, keepdims=keepdims)
    d = _sum_dtype(dtypes.standardize_dtype(x.dtype))
    if x.dtype.kind != "f":
        return _const(x.data.sum(axis=axes, keepdims=keepdims, dtype=d))
    return _m.sum(x, axis=axes, keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    """Arithmetic mean over axis; integers average in floatx."""
    if not (isinstance(x, Tensor) and x.dtype.kind == "f"):
        x = convert(x, _float_dtype(x))
    return _m.mean(x, axis=_norm_axes(axis, x.ndim), keepdims=keepdims)


def _maxmin(x, axis, keepdims, initial, is_max):
    x = convert(x)
    axes = _norm_axes(axis, x.ndim)
    xp = _xp(x)
    # only an empty reduced axis has no max (an empty batch reduced over its other axes gives an empty result)
    if builtins.any(x.shape[a] == 0 for a in axes):
        if initial is None:
            raise ValueError("zero-size array to reduction operation max/min which has no identity; "
                             "give `initial`.")
        shape = tuple(1 if i in axes else n for i, n in enumerate(x.shape)) if keepdims else \
            tuple(n for i, n in enumerate(x.shape) if i not in axes)
        return _const(xp.full(shape, initial, dtype=x.dtype))
    if x.dtype.kind == "f":
        y = _m.MaxMin.apply(x, axis=axes, keepdims=keepdims, is_max=is_max)
    else:
        y = _const((x.data.max if is_max else x.data.min)(axis=axes, keepdims=keepdims))
    if initial is not None:
        init = convert(initial, y.dtype) if not _is_num(initial) else Tensor(xp.asarray(initial, dtype=y.dtype))
        if y.dtype.kind == "f":
            y = (_m.maximum if is_max else _m.minimum)(y, init)
        else:
            y = _const((xp.maximum if is_max else xp.minimum)(y.data, init.data))
    return y


def max(x, axis=None, keepdims=False, initial=None):  # noqa: A001 - Keras's name
    """Maximum over axis, at least `initial`; ties share the gradient equally."""
    return _maxmin(x, axis, keepdims, initial, True)


def min(x, axis=None, keepdims=False, initial=None):  # noqa: A001 - Keras's name
    """Minimum over axis, at most `initial`; ties share the gradient equally."""
    return _maxmin(x, axis, keepdims, initial, False)


def amax(x, axis=None, keepdims=False):
    """Maximum over axis (same as max)."""
    return max(x, axis, keepdims)


def amin(x, axis=None, keepdims=False):
    """Minimum over axis (same as min)."""
    return min(x, axis, keepdims)


def _prod_dtype(d):
    if dtypes.is_float(d):
        return dtypes.result_type(d)
    return "int64" if d == "uint64" else "int32"


def prod(x, axis=None, keepdims=False, dtype=None):
    """Product over axis; the gradient of each entry is the product of the others (exact with zeros)."""
    x = convert(x)
    d = dtypes.standardize_dtype(dtype) if dtype is not None else _prod_dtype(dtypes.standardize_dtype(x.dtype))
    axes = _norm_axes(axis, x.ndim)
    if not dtypes.is_float(d):
        return _const(x.data.prod(axis=axes, keepdims=keepdims, dtype=d))
    return _e.Prod.apply(convert(x, d), axes=axes, keepdims=keepdims)


def var(x, axis=None, keepdims=False):
    """Population variance (ddof 0) over axis; gradient 2 (x - mean) / n."""
    x = convert(x, _rf_dtype(x))
    return _m.var(x, axis=_norm_axes(axis, x.ndim), keepdims=keepdims)


def std(x, axis=None, keepdims=False):
    """Population standard deviation (ddof 0): sqrt(var)."""
    x = convert(x, _float_dtype(x))
    return _m.std(x, axis=_norm_axes(axis, x.ndim), keepdims=keepdims)


def all(x, axis=None, keepdims=False):  # noqa: A001 - Keras's name
    """Whether every entry along axis is nonzero (bool)."""
    x = convert(x)
    return _const(x.data.astype(bool).all(axis=_norm_axes(axis, x.ndim), keepdims=keepdims))


def any(x, axis=None, keepdims=False):  # noqa: A001 - Keras's name
    """Whether some entry along axis is nonzero (bool)."""
    x = convert(x)
    return _const(x.data.astype(bool).any(axis=_norm_axes(axis, x.ndim), keepdims=keepdims))


def _arg(x, axis, keepdims, is_max):
    x = convert(x)
    a = x.data.astype(np.uint8) if x.dtype == bool else x.data
    fn = a.argmax if is_max else a.argmin
    if axis is None:
        out = fn()
        if keepdims:
            out = out.reshape((1,) * x.ndim)
    else:
        out = fn(axis=int(axis), keepdims=keepdims)
    return _const(_xp(x).asarray(out).astype(np.int32))


def argmax(x, axis=None, keepdims=False):
    """Index of the largest entry along axis (None: of the flattened array), int32."""
    return _arg(x, axis, keepdims, True)


def argmin(x, axis=None, keepdims=False):
    """Index of the smallest entry along axis (None: of the flattened array), int32."""
    return _arg(x, axis, keepdims, False)


def count_nonzero(x, axis=None):
    """Number of nonzero entries along axis (int32)."""
    x = convert(x)
    return _const((x.data != 0).sum(axis=_norm_axes(axis, x.ndim)).astype(np.int32))


def ptp(x, axis=None, keepdims=False):
    """Peak to peak: max - min over axis."""
    x = convert(x)
    if x.dtype == bool:
        raise TypeError("ptp does not support bool inputs.")
    return subtract(max(x, axis, keepdims), min(x, axis, keepdims))


def _scan(kernel, ufunc, x, axis, dtype):
    x = convert(x)
    if dtype is not None:
        d = dtypes.result_type(dtypes.standardize_dtype(dtype))
    else:
        d = dtypes.standardize_dtype(x.dtype)
        d = "int32" if d == "bool" else dtypes.result_type(d)
    x = convert(x, d)
    if axis is None:
        x = _s.reshape(x, (-1,))
        axis = 0
    axis = _m.axis_index(axis, x.ndim)
    if x.dtype.kind != "f":
        return _const(getattr(_xp(x), ufunc)(x.data, axis=axis).astype(d, copy=False))
    return kernel.apply(x, axis=axis)


def cumsum(x, axis=None, dtype=None):
    """Running sum along axis (None: of the flattened array); gradient: reversed running sum."""
    return _scan(_e.Cumsum, "cumsum", x, axis, dtype)


def cumprod(x, axis=None, dtype=None):
    """Running product along axis (None: of the flattened array)."""
    return _scan(_e.Cumprod, "cumprod", x, axis, dtype)


def _quantile(x, q, axis, method, keepdims, ignore_nan):
    x = convert(x)
    x = convert(x, _rf_dtype(x))
    qa = np.asarray(backend.to_numpy(_data(q)), dtype=np.float64)
    if qa.ndim > 1:
        raise ValueError(f"q must be a scalar or 1-D, got shape {qa.shape}")
    if np.any((qa < 0) | (qa > 1)):
        raise ValueError("Quantiles must be in the range [0, 1].")
    if x.ndim == 0:
        x = _s.reshape(x, (1,))
    axes = _norm_axes(axis, x.ndim)
    return _e.Quantile.apply(x, q=qa.reshape(-1), scalar_q=qa.ndim == 0, axes=axes, method=method,
                             keepdims=keepdims, ignore_nan=ignore_nan)


def quantile(x, q, axis=None, method="linear", keepdims=False):
    """q-th quantiles (q in [0, 1], scalar or 1-D) over axis; methods as NumPy's (linear, lower, higher,
    midpoint, nearest). The gradient goes to the order statistics read, with their weights."""
    return _quantile(x, q, axis, method, keepdims, False)


def percentile(x, q, axis=None, method="linear", keepdims=False):
    """q-th percentiles (q in [0, 100]): quantile(x, q / 100)."""
    return _quantile(x, np.asarray(backend.to_numpy(_data(q)), np.float64) / 100, axis, method, keepdims, False)


def median(x, axis=None, keepdims=False):
    """Median over axis: the 0.5 quantile (the mean of the two middle values for even counts)."""
    return _quantile(x, 0.5, axis, "linear", keepdims, False)


def nanquantile(x, q, axis=None, method="linear", keepdims=False):
    """quantile, skipping NaNs (NaN where a slice is all NaN)."""
    return _quantile(x, q, axis, method, keepdims, True)


def nanpercentile(x, q, axis=None, method="linear", keepdims=False):
    """percentile, skipping NaNs."""
    return _quantile(x, np.asarray(backend.to_numpy(_data(q)), np.float64) / 100, axis, method, keepdims, True)


def nanmedian(x, axis=None, keepdims=False):
    """median, skipping NaNs."""
    return _quantile(x, 0.5, axis, "linear", keepdims, True)


def average(x, axis=None, weights=None):
    """Weighted mean sum(x w) / sum(w) over axis (weights 1-D along axis, or x's shape)."""
    if weights is None:
        return mean(convert(x, _rf_dtype(x)), axis)
    d = _rf_dtype(x, weights)
    x, w = convert(x, d), convert(weights, d)
    if axis is not None and w.ndim == 1 and x.ndim > 1:
        ax = int(axis) % x.ndim
        w = _s.reshape(w, tuple(-1 if i == ax else 1 for i in range(x.ndim)))
    axes = _norm_axes(axis, x.ndim)
    wb = _m.multiply(w, Tensor(_xp(x).ones(x.shape, dtype=d)))
    return _m.divide(_m.sum(_m.multiply(x, w), axis=axes), _m.sum(wb, axis=axes))


def _nan_fill(x, value):
    xp = _xp(x)
    return _m.where(Tensor(xp.isnan(x.data)), Tensor(xp.asarray(value, dtype=x.dtype)), x)


def nansum(x, axis=None, keepdims=False):
    """Sum over axis treating NaN as 0."""
    x = convert(x)
    return sum(_nan_fill(x, 0) if x.dtype.kind == "f" else x, axis, keepdims)


def _nan_count(x, axes, keepdims, dtype):
    return (~_xp(x).isnan(x.data)).sum(axis=axes, keepdims=keepdims).astype(dtype)


def nanmean(x, axis=None, keepdims=False):
    """Mean over axis of the non-NaN entries (NaN for an all-NaN slice)."""
    x = convert(x, _rf_dtype(x))
    axes = _norm_axes(axis, x.ndim)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _m.divide(_m.sum(_nan_fill(x, 0), axis=axes, keepdims=keepdims),
                         Tensor(_nan_count(x, axes, keepdims, x.dtype)))


def nanvar(x, axis=None, keepdims=False):
    """Population variance over axis of the non-NaN entries."""
    x = convert(x, _rf_dtype(x))
    axes = _norm_axes(axis, x.ndim)
    mu = nanmean(x, axes, keepdims=True)
    # the deviations, 0 where x is NaN (not where x - mu is: an infinite entry gives inf - inf, and the variance NaN,
    # as NumPy's nanvar; filling that NaN too gave inf)
    dev = _m.subtract(_m.where(Tensor(_xp(x).isnan(x.data)), mu, x), mu)
    with np.errstate(invalid="ignore", divide="ignore"):
        return _m.divide(_m.sum(_m.square(dev), axis=axes, keepdims=keepdims),
                         Tensor(_nan_count(x, axes, keepdims, x.dtype)))


def nanstd(x, axis=None, keepdims=False):
    """Population standard deviation over axis of the non-NaN entries."""
    return _m.sqrt(nanvar(x, axis, keepdims))


def _nan_maxmin(x, axis, keepdims, is_max):
    x = convert(x)
    if x.dtype.kind != "f":
        return _maxmin(x, axis, keepdims, None, is_max)
    xp = _xp(x)
    axes = _norm_axes(axis, x.ndim)
    y = _maxmin(_nan_fill(x, -np.inf if is_max else np.inf), axes, keepdims, None, is_max)
    all_nan = xp.isnan(x.data).all(axis=axes, keepdims=keepdims)
    return _m.where(Tensor(all_nan), Tensor(xp.asarray(np.nan, dtype=x.dtype)), y)


def nanmax(x, axis=None, keepdims=False):
    """Maximum over axis ignoring NaN (NaN for an all-NaN slice)."""
    return _nan_maxmin(x, axis, keepdims, True)


def nanmin(x, axis=None, keepdims=False):
    """Minimum over axis ignoring NaN (NaN for an all-NaN slice)."""
    return _nan_maxmin(x, axis, keepdims, False)


def nanprod(x, axis=None, keepdims=False):
    """Product over axis treating NaN as 1."""
    x = convert(x)
    return prod(_nan_fill(x, 1) if x.dtype.kind == "f" else x, axis, keepdims)


def _nan_arg(x, axis, keepdims, is_max):
    x = convert(x)
    if x.dtype.kind != "f":
        return _arg(x, axis, keepdims, is_max)
    xp = _xp(x)
    nan = xp.isnan(x.data)
    filled = xp.where(nan, -np.inf if is_max else np.inf, x.data)
    out = _arg(Tensor(filled), axis, keepdims, is_max).data
    if axis is None:
        all_nan = nan.all()
    else:
        all_nan = nan.all(axis=int(axis), keepdims=keepdims)
    return _const(xp.where(all_nan, -1, out).astype(np.int32))


def nanargmax(x, axis=None, keepdims=False):
    """argmax ignoring NaN (-1 for an all-NaN slice)."""
    return _nan_arg(x, axis, keepdims, True)


def nanargmin(x, axis=None, keepdims=False):
    """argmin ignoring NaN (-1 for an all-NaN slice)."""
    return _nan_arg(x, axis, keepdims, False)


def nancumsum(x, axis=None, dtype=None):
    """Running sum treating NaN as 0."""
    x = convert(x)
    return cumsum(_nan_fill(x, 0) if x.dtype.kind == "f" else x, axis, dtype)


def nancumprod(x, axis=None, dtype=None):
    """Running product treating NaN as 1."""
    x = convert(x)
    return cumprod(_nan_fill(x, 1) if x.dtype.kind == "f" else x, axis, dtype)


# ============================================================================ statistics, calculus

def bincount(x, weights=None, minlength=0, sparse=False):
    """Count of each value 0..max(x) in a 1-D (or, row by row, 2-D) int array; sums weights instead
    when given. Gradient to the weights: the gradient at each x's bin."""
    if sparse:
        raise ValueError("bincount with sparse=True is not supported.")
    x = convert(x)
    if x.dtype.kind not in "iu":
        raise TypeError(f"bincount expects integer inputs, got {x.dtype}.")
    xp = _xp(x)
    if x.ndim not in (1, 2):
        raise ValueError(f"bincount expects a 1-D or 2-D input, got rank {x.ndim}.")
    if x.size and int(x.data.min()) < 0:
        raise ValueError("bincount expects non-negative inputs.")
    length = builtins.max(int(minlength), int(x.data.max()) + 1 if x.size else 0)
    onehot = (x.data[..., None] == xp.arange(length))          # (..., n, length)
    if weights is None:
        return _const(onehot.sum(axis=-2).astype(np.int32))
    w = convert(weights)
    d = dtypes.standardize_dtype(w.dtype)
    d = backend.floatx() if dtypes.is_float(d) else "int32"
    w = convert(w, d)
    if w.dtype.kind != "f":
        return _const((onehot * w.data[..., None]).sum(axis=-2).astype(d))
    oh = Tensor(onehot.astype(d))
    return _m.sum(_m.multiply(oh, _s.reshape(w, w.shape + (1,))), axis=(x.ndim - 1,))


def histogram(x, bins=10, range=None):  # noqa: A002 - Keras's name
    """(counts, bin edges) of a 1-D float array over `bins` equal bins spanning range (default:
    [min, max]); the last bin includes its right edge."""
    x = convert(x)
    if x.ndim != 1:
        raise ValueError(f"histogram expects a 1-D input, got rank {x.ndim}.")
    if not isinstance(bins, (int, np.integer)) or bins < 1:
        raise ValueError(f"bins must be a positive integer, got {bins!r}.")
    xp = _xp(x)
    counts, edges = xp.histogram(x.data, bins=int(bins), range=range)
    d = x.dtype if x.dtype.kind == "f" else np.dtype(backend.floatx())
    return _const(counts.astype(d)), _const(edges.astype(d))


def corrcoef(x):
    """Pearson correlation coefficients of the rows of x (variables in rows, observations in columns)."""
    x = convert(x, _f64_dtype(x))
    if x.ndim < 2:   # one variable (a 0-d array: one observation, NaN as in NumPy)
        x = _s.reshape(x, (1, -1))
    xc = _m.subtract(x, _m.mean(x, axis=(1,), keepdims=True))
    cov = _m.matmul(xc, _s.transpose(xc))
    sd = _m.sqrt(_s.reshape(_m.sum(_m.square(xc), axis=(1,)), (-1, 1)))
    out = _m.divide(_m.divide(cov, sd), _s.transpose(sd))
    return _m.clip(out, -1.0, 1.0) if out.shape != (1, 1) else _s.reshape(out, ())


def correlate(x1, x2, mode="valid"):
    """Cross-correlation of two 1-D arrays: out[k] = sum_n x1[n + k] x2[n], in 'valid', 'same' or
    'full' mode (as numpy.correlate)."""
    d = _rf_dtype(x1, x2)
    a, v = convert(x1, d), convert(x2, d)
    if a.ndim != 1 or v.ndim != 1:
        raise ValueError("correlate expects two 1-D arrays.")
    n, m = a.shape[0], v.shape[0]
    if mode == "valid":
        lo_pad = hi_pad = 0 if n >= m else None
        if n < m:  # NumPy swaps the operands and reverses the result
            return _s.getitem(correlate(v, a, mode), slice(None, None, -1))
    elif mode == "full":
        lo_pad = hi_pad = m - 1
    elif mode == "same":
        lo_pad = m // 2
        hi_pad = m - 1 - lo_pad
        if n < m:
            return _s.getitem(correlate(v, a, mode), slice(None, None, -1))
    else:
        raise ValueError(f"Invalid mode: {mode!r}. Expected 'valid', 'same' or 'full'.")
    ap = _s.pad(a, [(lo_pad, hi_pad)]) if lo_pad or hi_pad else a
    out_len = ap.shape[0] - m + 1
    idx = np.arange(out_len)[:, None] + np.arange(m)[None, :]
    windows = _s.getitem(ap, idx)                      # (out_len, m)
    return _m.matmul(windows, v)


def diff(a, n=1, axis=-1):
    """n-th forward difference along axis: a[1:] - a[:-1], n times."""
    x = convert(a)
    ax = _m.axis_index(axis, x.ndim)
    for _ in range(int(n)):
        hi = tuple(slice(1, None) if i == ax else slice(None) for i in range(x.ndim))
        lo = tuple(slice(None, -1) if i == ax else slice(None) for i in range(x.ndim))
        if x.dtype == bool:
            x = _const(x.data[hi] != x.data[lo])
        elif x.dtype.kind == "f":
            x = _m.subtract(_s.getitem(x, hi), _s.getitem(x, lo))
        else:
            x = _const(x.data[hi] - x.data[lo])
    return x


def trapezoid(y, x=None, dx=1.0, axis=-1):
    """Integral of y along axis by the trapezoidal rule, at sample points x (or spacing dx)."""
    y = convert(y, _float_dtype(y))
    ax = _m.axis_index(axis, y.ndim)
    hi = tuple(slice(1, None) if i == ax else slice(None) for i in range(y.ndim))
    lo = tuple(slice(None, -1) if i == ax else slice(None) for i in range(y.ndim))
    mids = _m.add(_s.getitem(y, hi), _s.getitem(y, lo))
    if x is None:
        step = convert(dx, y.dtype) if not _is_num(dx) else Tensor(_xp(y).asarray(dx, dtype=y.dtype))
    else:
        xt = convert(x, y.dtype)
        if xt.ndim == 1:
            step = diff(xt)
            step = _s.reshape(step, tuple(-1 if i == ax else 1 for i in range(y.ndim)))
        else:
            step = diff(xt, axis=ax)
    half = Tensor(_xp(y).asarray(0.5, dtype=y.dtype))
    return _m.multiply(_m.sum(_m.multiply(mids, step), axis=(ax,)), half)


def slogdet(x):
    """(sign, log |det x|) of square matrices; the gradient of the log is inv(x)^T."""
    x = convert(x, _float_dtype(x))
    return _e.SlogDet.apply(x)


# ============================================================================ creation

def _creation_dtype(dtype, default=None):
    return dtypes.standardize_dtype(dtype if dtype is not None else default)


def _shape(shape):
    if isinstance(shape, (int, np.integer)):
        return (int(shape),)
    return tuple(int(_data(n)) for n in shape)


def arange(start, stop=None, step=None, dtype=None):
    """Evenly spaced values in [start, stop) by step; int32 for integer arguments, else floatx."""
    if stop is None:
        start, stop = 0, start
    if step is None:
        step = 1
    vals = [_data(v) for v in (start, stop, step)]
    if dtype is None:
        kinds = [np.asarray(v).dtype.kind for v in vals]
        dtype = backend.floatx() if "f" in kinds else "int32"
    dtype = dtypes.standardize_dtype(dtype)
    vals = [np.asarray(backend.to_numpy(v)).item() for v in vals]
    return _const(backend.device_module().arange(*vals, dtype=dtype))


def array(x, dtype=None):
    """A tensor from x (convert_to_tensor with an optional dtype); a Tensor stays in the graph."""
    return convert(x, None if dtype is None else dtypes.standardize_dtype(dtype))


def ones(shape, dtype=None):
    """A tensor of ones (floatx by default)."""
    return _const(backend.device_module().ones(_shape(shape), dtype=_creation_dtype(dtype)))


def zeros(shape, dtype=None):
    """A tensor of zeros (floatx by default)."""
    return _const(backend.device_module().zeros(_shape(shape), dtype=_creation_dtype(dtype)))


def empty(shape, dtype=None):
    """A tensor of the given shape with unspecified values (lamina fills zeros)."""
    return zeros(shape, dtype)


def full(shape, fill_value, dtype=None):
    """A tensor filled with fill_value (floatx by default; an array fill_value broadcasts)."""
    xp = backend.device_module()
    d = _creation_dtype(dtype)
    return _const(xp.broadcast_to(xp.asarray(_data(fill_value), dtype=d), _shape(shape)).copy())


def _like(x, dtype):
    x = convert(x)
    return x, dtypes.standardize_dtype(dtype) if dtype is not None else x.dtype


def ones_like(x, dtype=None):
    """Ones with x's shape (and dtype unless given)."""
    x, d = _like(x, dtype)
    return _const(_xp(x).ones(x.shape, dtype=d))


def zeros_like(x, dtype=None):
    """Zeros with x's shape (and dtype unless given)."""
    x, d = _like(x, dtype)
    return _const(_xp(x).zeros(x.shape, dtype=d))


def empty_like(x, dtype=None):
    """An array with x's shape and dtype (lamina fills zeros)."""
    return zeros_like(x, dtype)


def full_like(x, fill_value, dtype=None):
    """fill_value with x's shape (and dtype unless given)."""
    x, d = _like(x, dtype)
    xp = _xp(x)
    return _const(xp.broadcast_to(xp.asarray(_data(fill_value)).astype(d), x.shape).copy())


def eye(N, M=None, k=0, dtype=None):
    """N x M matrix with ones on the k-th diagonal (floatx by default)."""
    return _const(backend.device_module().eye(int(N), None if M is None else int(M), int(k),
                                              dtype=_creation_dtype(dtype)))


def identity(n, dtype=None):
    """n x n identity matrix (floatx by default)."""
    return eye(n, dtype=dtype)


def tri(N, M=None, k=0, dtype=None):
    """N x M matrix with ones at and below the k-th diagonal (floatx by default)."""
    return _const(backend.device_module().tri(int(N), None if M is None else int(M), int(k),
                                              dtype=_creation_dtype(dtype)))


def _space_dtype(dtype, *ends):
    if dtype is not None:
        return dtypes.standardize_dtype(dtype)
    return _rf_dtype(*[e for e in ends])


def _host(v):
    """A value as a float64 NumPy array (these small tables are made on the host, then moved)."""
    return np.asarray(backend.to_numpy(_data(v)) if hasattr(_data(v), "dtype") else _data(v), dtype=np.float64)


def _made(a):
    """A host-made array on the current device, as a constant Tensor."""
    xp = backend.device_module()
    return _const(a if xp is np else xp.asarray(a))


def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0):
    """num evenly spaced values from start to stop (inclusive unless endpoint=False); with retstep,
    (values, step)."""
    d = _space_dtype(dtype, start, stop)
    out, step = np.linspace(_host(start), _host(stop), int(num), endpoint=endpoint, retstep=True, axis=axis)
    if dtypes.is_int(d):
        out = np.floor(out)
    out = _made(out.astype(d))
    if retstep:
        return out, _made(np.asarray(step).astype(d if dtypes.is_float(d) else backend.floatx()))
    return out


def logspace(start, stop, num=50, endpoint=True, base=10, dtype=None, axis=0):
    """base ** linspace(start, stop, num)."""
    d = _space_dtype(dtype, start, stop)
    return _made(np.logspace(_host(start), _host(stop), int(num), endpoint=endpoint, base=_host(base),
                             axis=axis).astype(d))


def geomspace(start, stop, num=50, endpoint=True, dtype=None, axis=0):
    """num values from start to stop evenly spaced on a log scale."""
    d = _space_dtype(dtype, start, stop)
    return _made(np.geomspace(_host(start), _host(stop), int(num), endpoint=endpoint, axis=axis).astype(d))


def meshgrid(*x, indexing="xy"):
    """Coordinate matrices from 1-D coordinate vectors ('xy': Cartesian, 'ij': matrix indexing);
    differentiable in each vector."""
    if indexing not in ("xy", "ij"):
        raise ValueError(f"indexing must be 'xy' or 'ij', got {indexing!r}")
    ts = [convert(v) for v in x]
    n = len(ts)
    shape = [t.size for t in ts]
    if indexing == "xy" and n >= 2:
        shape[0], shape[1] = shape[1], shape[0]
    out = []
    for i, t in enumerate(ts):
        pos = i
        if indexing == "xy" and n >= 2 and i < 2:
            pos = 1 - i
        view = [1] * n
        view[pos] = -1
        out.append(_s.broadcast_to(_s.reshape(t, tuple(view)), tuple(shape)))
    return out


def vander(x, N=None, increasing=False):
    """Vandermonde matrix: columns x^(N-1), ..., x^0 (reversed when increasing)."""
    x = convert(x)
    if x.ndim != 1:
        raise ValueError(f"vander expects a 1-D input, got rank {x.ndim}.")
    d = dtypes.result_type(dtypes.standardize_dtype(x.dtype))
    x = convert(x, d)
    n = x.shape[0] if N is None else int(N)
    powers = np.arange(n) if increasing else np.arange(n)[::-1]
    xp = _xp(x)
    if x.dtype == bool:
        return _const(xp.where(xp.asarray(powers.copy())[None, :] == 0, True, x.data[:, None]))
    if x.dtype.kind != "f":
        return _const(x.data[:, None] ** xp.asarray(powers.copy(), dtype=x.dtype)[None, :])
    cols = _s.broadcast_to(_s.reshape(x, (-1, 1)), (x.shape[0], n))
    return _m.Power.apply(cols, Tensor(xp.asarray(powers.copy(), dtype=x.dtype)))


def _window(name, x):
    return _made(getattr(np, name)(int(_data(x))).astype(backend.floatx()))


def bartlett(x):
    """Bartlett (triangular) window of length x."""
    return _window("bartlett", x)


def blackman(x):
    """Blackman window of length x."""
    return _window("blackman", x)


def hamming(x):
    """Hamming window of length x."""
    return _window("hamming", x)


def hanning(x):
    """Hann window of length x."""
    return _window("hanning", x)


def kaiser(x, beta):
    """Kaiser window of length x with shape parameter beta."""
    return _made(np.kaiser(int(_data(x)), float(_data(beta))).astype(backend.floatx()))

