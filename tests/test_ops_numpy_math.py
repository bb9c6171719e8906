"""keras.ops.numpy's math half (lamina/ops/_np_math.py) against real Keras 3.15 on its torch backend:
signatures, values, result dtypes and gradients (torch autograd through keras.ops); the new kernels
(lamina/ops/elementwise.py) by float64 central differences."""
import inspect
import json
import os
import warnings

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import lamina  # noqa: E402
from lamina import Tensor  # noqa: E402
from lamina.ops import elementwise as E  # noqa: E402
from lamina.ops import numpy as lnp  # noqa: E402
from lamina.testing import check_grad  # noqa: E402

from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")
torch = pytest.importorskip("torch")
kops = lazy_module("keras.ops")


@pytest.fixture(autouse=True, scope="module")
def _keras_on_torch():   # (a fixture: Keras is imported by the first test, not at collection)
    if keras.backend.backend() != "torch":  # pragma: no cover - the reference is Keras on torch
        pytest.skip("these tests compare against Keras's torch backend")


HERE = os.path.dirname(__file__)
NAMES = """abs absolute add all allclose amax amin angle any arange arccos arccosh arcsin arcsinh arctan
arctan2 arctanh argmax argmin array average bartlett bincount bitwise_and bitwise_invert bitwise_left_shift
bitwise_not bitwise_or bitwise_right_shift bitwise_xor blackman cbrt ceil clip conj conjugate corrcoef
correlate cos cosh count_nonzero cumprod cumsum deg2rad diff divide divide_no_nan empty empty_like equal
exp exp2 expm1 eye fabs floor floor_divide fmax fmin fmod full full_like gcd geomspace greater greater_equal
hamming hanning heaviside histogram hypot i0 identity imag isclose isfinite isinf isnan isneginf isposinf
isreal kaiser lcm ldexp left_shift less less_equal linspace log log10 log1p log2 logaddexp logaddexp2
logical_and logical_not logical_or logical_xor logspace max maximum mean median meshgrid min minimum mod
multiply nan_to_num nanargmax nanargmin nancumprod nancumsum nanmax nanmean nanmedian nanmin nanpercentile
nanprod nanquantile nanstd nansum nanvar negative nextafter not_equal ones ones_like percentile power prod
ptp quantile rad2deg real reciprocal right_shift round sign signbit sin sinc sinh slogdet sqrt square std
subtract sum tan tanh trapezoid tri true_divide trunc vander var zeros zeros_like""".split()

R = np.random.default_rng(7)


def _np(y):
    return y.numpy() if isinstance(y, Tensor) else np.asarray(y)


def _kdtype(y):
    return keras.backend.standardize_dtype(y.dtype)


def _keras(name, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(kops, name)(*args, **kwargs)


def _same(ours, ref, name, rtol=1e-5, atol=1e-6):
    if isinstance(ref, (tuple, list)):
        assert isinstance(ours, (tuple, list)) and len(ours) == len(ref), name
        for o, r in zip(ours, ref):
            _same(o, r, name, rtol, atol)
        return
    assert isinstance(ours, Tensor), f"{name}: got {type(ours)}"
    rn = np.asarray(kops.convert_to_numpy(ref))
    assert str(ours.dtype) == _kdtype(ref), f"{name}: dtype {ours.dtype} != Keras {_kdtype(ref)}"
    on = _np(ours)
    assert on.shape == rn.shape, f"{name}: shape {on.shape} != Keras {rn.shape}"
    if name.startswith("empty"):  # unspecified values
        return
    if rn.dtype.kind in "fc":
        np.testing.assert_allclose(on, rn, rtol=rtol, atol=atol, equal_nan=True, err_msg=name)
    else:
        np.testing.assert_array_equal(on, rn, err_msg=name)


# ---------------------------------------------------------------------------- names and signatures

def test_every_name_exists_with_keras_signature():
    sigs = json.load(open(os.path.join(HERE, "data", "keras_ops_signatures.json")))["numpy"]
    for name in NAMES:
        fn = getattr(lnp, name)
        assert str(inspect.signature(fn)) == sigs[name], name
        assert fn.__doc__ and fn.__doc__.strip().splitlines()[0], f"{name} has no one-line docstring"
        assert getattr(lamina.ops, name) is fn, f"lamina.ops.{name} is not the Keras function"
    assert set(NAMES) <= set(lnp.__all__)


# ---------------------------------------------------------------------------- dtypes, op by op

DTYPES = ["bool", "int8", "uint8", "int32", "int64", "float16", "float32", "float64"]

UNARY = """abs absolute angle arccos arccosh arcsin arcsinh arctan arctanh argmax argmin array average
bitwise_invert bitwise_not cbrt ceil conj conjugate cos cosh count_nonzero cumprod cumsum deg2rad diff
empty_like exp exp2 expm1 fabs floor i0 isfinite isinf isnan isneginf isposinf isreal log log10 log1p log2
logical_not max mean median min nan_to_num nanargmax nanargmin nancumprod nancumsum nanmax nanmean
nanmedian nanmin nanprod nanstd nansum nanvar negative ones_like prod ptp rad2deg real reciprocal round
sign signbit sin sinc sinh sqrt square std sum tan tanh trapezoid trunc vander var zeros_like all any amax
amin""".split()
BINARY = """add arctan2 bitwise_and bitwise_left_shift bitwise_or bitwise_right_shift bitwise_xor divide
divide_no_nan equal floor_divide fmax fmin fmod gcd greater greater_equal heaviside hypot lcm left_shift less
less_equal logaddexp logaddexp2 logical_and logical_or logical_xor maximum minimum mod multiply nextafter
not_equal power right_shift subtract true_divide isclose allclose""".split()


def _sample(dt, shape=(2, 3)):
    if dt == "bool":
        return R.random(shape) > 0.5
    if dt in ("uint8",):
        return R.integers(1, 5, shape).astype(dt)
    if "int" in dt:
        return R.integers(1, 5, shape).astype(dt)
    return (R.random(shape) * 0.8 + 0.1).astype(dt)


def _check_like_keras(name, args, kwargs=None, rtol=1e-5, atol=1e-6):
    kwargs = kwargs or {}
    try:
        ref = _keras(name, *args, **kwargs)
    except Exception:  # Keras (torch) does not support this input; nothing to match
        return False
    ours = getattr(lnp, name)(*args, **kwargs)
    _same(ours, ref, f"{name}{tuple(getattr(a, 'dtype', a) for a in args)}", rtol, atol)
    return True


@pytest.mark.parametrize("name", UNARY)
def test_unary_dtypes_and_values(name):
    checked = 0
    for dt in DTYPES:
        x = _sample(dt, (3, 4) if name == "vander" else (2, 3))
        if name == "vander":
            x = x[0]
        tol = 3e-3 if dt == "float16" else 1e-5
        checked += _check_like_keras(name, (x,), rtol=tol, atol=tol)
    assert checked >= 3, f"{name}: Keras accepted fewer than 3 dtypes"


@pytest.mark.parametrize("name", BINARY)
def test_binary_dtypes_and_values(name):
    checked = 0
    for dt in DTYPES:
        a, b = _sample(dt), _sample(dt, (3,))
        tol = 3e-3 if dt == "float16" else 1e-5
        checked += _check_like_keras(name, (a, b), rtol=tol, atol=tol)
    assert checked >= 3, f"{name}: Keras accepted fewer than 3 dtypes"


SPECIAL = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, 1e30, -1.0, 1.0, 0.5, -2.5, 3.7], "float32")


@pytest.mark.parametrize("name", """abs sign square sqrt cbrt reciprocal exp exp2 expm1 log log2 log10 log1p sin cos
tan arcsin arccos arctan sinh cosh tanh arcsinh arccosh arctanh floor ceil trunc round fabs negative sinc i0
deg2rad rad2deg isnan isinf isfinite isneginf isposinf signbit nan_to_num real conj angle""".split())
def test_special_values_like_keras(name):
    """NaN, infinities, signed zeros, tiny and huge values give what Keras gives."""
    with np.errstate(all="ignore"):
        _same(getattr(lnp, name)(SPECIAL), _keras(name, SPECIAL), name, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", """add subtract multiply divide power maximum minimum fmax fmin mod fmod arctan2
hypot logaddexp logaddexp2 divide_no_nan floor_divide heaviside equal less greater_equal isclose""".split())
def test_special_pairs_like_keras(name):
    """Every pair of special values (NaN, infinities, signed zeros, ...) gives what Keras gives."""
    sv = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -1.5, 2.0], "float32")
    a, b = np.meshgrid(sv, sv)
    with np.errstate(all="ignore"):
        _same(getattr(lnp, name)(a, b), _keras(name, a, b), name, rtol=1e-5, atol=1e-6)


MIXED = [("int32", "int64"), ("int8", "uint8"), ("float32", "float64"), ("float16", "float32"),
         ("int32", "float32"), ("int64", "float16"), ("bool", "int32"), ("bool", "float32"),
         ("int32", 2), ("int8", 3), ("int32", 1.5), ("float16", 2.5), ("float64", 2), ("bool", 2),
         ("float32", 0.5), ("float16", np.float64(2.0)), ("int8", np.int64(3)), ("int32", np.float64(1.5)),
         ("bool", np.array(True)), ("float16", np.array(3.0, "float64"))]


@pytest.mark.parametrize("name", ["add", "subtract", "multiply", "divide", "power", "maximum", "minimum",
                                  "mod", "fmod", "arctan2", "hypot", "logaddexp", "divide_no_nan",
                                  "floor_divide", "fmax", "fmin", "equal", "less", "heaviside", "bitwise_and",
                                  "bitwise_or", "left_shift", "right_shift", "gcd", "lcm", "logaddexp2", "nextafter",
                                  "true_divide", "logical_and", "isclose", "greater_equal", "not_equal"])
def test_mixed_dtype_promotion(name):
    for d1, d2 in MIXED:
        a = _sample(d1)
        b = _sample(d2) if isinstance(d2, str) else d2
        _check_like_keras(name, (a, b), rtol=2e-3, atol=2e-3)
        _check_like_keras(name, (b, a), rtol=2e-3, atol=2e-3)


# ---------------------------------------------------------------------------- values, case by case

X34 = R.standard_normal((3, 4)).astype("float32")
XNAN = np.array([[1.0, np.nan, 3.0, -2.0], [np.nan, np.nan, np.nan, np.nan], [0.5, 4.0, np.inf, 2.0]],
                "float32")
I34 = R.integers(-5, 6, (3, 4)).astype("int32")

CASES = [
    ("sum", (X34,), dict(axis=1, keepdims=True)), ("sum", (X34,), dict(axis=(0, 1))),
    ("sum", (I34,), dict(axis=0)), ("sum", (I34.astype("uint32"),), {}), ("sum", (I34.astype("int16"),), {}), ("mean", (X34,), dict(axis=-1)), ("mean", (I34,), {}),
    ("max", (X34,), dict(axis=0, keepdims=True)), ("max", (X34,), dict(initial=0.5)),
    ("max", (X34.astype("float64"),), dict(axis=1, initial=0.5)), ("min", (I34.astype("int64"),), dict(initial=0)),
    ("min", (I34,), dict(axis=1, initial=-1)), ("max", (np.zeros((0,), "float32"),), dict(initial=5.0)),
    ("amax", (X34,), dict(axis=1)), ("amin", (X34,), dict(axis=(0, 1), keepdims=True)),
    ("argmax", (X34,), dict(axis=1)), ("argmax", (X34,), dict(keepdims=True)),
    ("argmin", (X34,), dict(axis=0, keepdims=True)), ("argmin", (I34,), {}),
    ("std", (X34,), dict(axis=0)), ("var", (X34,), dict(axis=1, keepdims=True)),
    ("prod", (X34,), dict(axis=1)), ("prod", (I34,), dict(dtype="float32")),
    ("cumsum", (X34,), dict(axis=1)), ("cumsum", (X34,), {}), ("cumsum", (I34,), dict(axis=0, dtype="float64")),
    ("cumprod", (X34,), dict(axis=0)), ("all", (I34,), dict(axis=1)), ("any", (X34 > 1,), dict(keepdims=True)),
    ("count_nonzero", (I34,), {}), ("count_nonzero", (I34,), dict(axis=(0, 1))),
    ("ptp", (X34,), dict(axis=1, keepdims=True)),
    ("median", (X34,), dict(axis=1)), ("median", (X34,), dict(axis=0, keepdims=True)), ("median", (X34,), {}),
    ("quantile", (X34, 0.3), dict(axis=1)), ("quantile", (X34, [0.1, 0.9]), dict(axis=0, keepdims=True)),
    ("quantile", (X34, np.array([0.25, 0.5, 1.0])), {}),
    ("quantile", (X34, 0.4), dict(axis=1, method="lower")), ("quantile", (X34, 0.4), dict(axis=1, method="higher")),
    ("quantile", (X34, 0.4), dict(axis=1, method="midpoint")), ("quantile", (X34, 0.4), dict(axis=1, method="nearest")),
    ("percentile", (X34, 35.0), dict(axis=(0, 1))), ("percentile", (I34, [10, 50, 90]), dict(axis=1)),
    ("nansum", (XNAN,), dict(axis=1)), ("nanmean", (XNAN[[0, 2]],), dict(axis=1)),
    ("nanmax", (XNAN,), dict(axis=1)), ("nanmin", (XNAN,), dict(axis=0, keepdims=True)),
    ("nanprod", (XNAN,), dict(axis=1)), ("nanvar", (XNAN[[0]],), dict(axis=1)), ("nanstd", (XNAN[[0]],), {}),
    ("nanargmax", (XNAN,), dict(axis=1)), ("nanargmin", (XNAN,), dict(axis=1)),
    ("nancumsum", (XNAN[:2],), dict(axis=1)), ("nancumprod", (XNAN,), dict(axis=0)),
    ("nanmedian", (XNAN,), dict(axis=1)), ("nanquantile", (XNAN, [0.2, 0.7]), dict(axis=1)),
    ("nanpercentile", (XNAN, 60), dict(axis=1, keepdims=True)),
    ("average", (X34,), dict(axis=1, weights=np.array([1.0, 2.0, 0.5, 3.0], "float32"))),
    ("average", (X34,), {}),
    ("clip", (X34, -0.5, 0.5), {}), ("clip", (I34, 1.5, 2.5), {}), ("clip", (I34, -1, 2), {}),
    ("clip", (np.array([True, False]), 0, 1), {}),
    ("round", (X34 * 10, 1), {}), ("round", (I34 * 17, -1), {}), ("round", (np.array([0.5, 1.5, 2.5, -0.5]),), {}),
    ("nan_to_num", (XNAN,), dict(nan=1.0, posinf=7.0)), ("nan_to_num", (np.array([np.inf, -np.inf, np.nan]),), {}),
    ("divide_no_nan", (X34, np.where(X34 > 0, X34, 0)), {}),
    ("isclose", (np.array([1.0, np.nan, 2.0]), np.array([1.0 + 1e-9, np.nan, 2.1])), dict(equal_nan=True)),
    ("allclose", (X34, X34 + 1e-3), dict(atol=1e-2)), ("allclose", (X34, X34 + 1e-3), {}),
    ("mod", (X34, 0.7), {}), ("fmod", (X34, -0.7), {}), ("mod", (I34, 3), {}), ("fmod", (I34, 3), {}),
    ("floor_divide", (I34, 3), {}), ("floor_divide", (X34, 0.3), {}),
    ("power", (np.abs(X34), 0.5), {}), ("power", (I34, 2), {}), ("power", (X34, I34.astype("float32")), {}),
    ("heaviside", (np.array([-1.0, 0.0, 2.0]), 0.5), {}), ("ldexp", (X34, I34), {}),
    ("ldexp", (X34.astype("float64"), I34), {}),
    ("gcd", (np.array([12, 18, -4]), np.array([8, 27, 6])), {}), ("lcm", (np.array([4, 6, 5]), np.array([6, 4, 7])), {}),
    ("nextafter", (X34, np.zeros_like(X34)), {}), ("signbit", (np.array([-0.0, 0.0, -1.0, 2.0]),), {}),
    ("left_shift", (np.array([1, 2, 3]), 2), {}), ("right_shift", (np.array([-16, 32, 7]), 2), {}),
    ("bitwise_xor", (np.array([True, False]), np.array([True, True])), {}),
    ("logical_and", (I34, X34 > 0), {}), ("logical_xor", (I34, 1), {}), ("equal", (I34, 2), {}),
    ("greater", (X34, 0.0), {}), ("less_equal", (2, I34), {}),
    ("isnan", (XNAN,), {}), ("isinf", (XNAN,), {}), ("isfinite", (XNAN,), {}),
    ("isposinf", (np.array([np.inf, -np.inf, 1.0]),), {}), ("isneginf", (np.array([np.inf, -np.inf, 1.0]),), {}),
    ("angle", (np.array([-1.0, 2.0, 0.0]),), {}), ("angle", (np.array([1 + 2j, -1 - 1j]),), {}),
    ("real", (np.array([1 + 2j, 3 - 1j]),), {}), ("imag", (np.array([1 + 2j, 3 - 1j]),), {}),
    ("conj", (np.array([1 + 2j, 3 - 1j]),), {}), ("isreal", (np.array([1 + 0j, 3 - 1j]),), {}),
    ("exp", (np.array([1 + 2j, -1j]),), {}), ("sqrt", (np.array([1 + 2j, -1j]),), {}),
    ("abs", (np.array([3 + 4j, -1j]),), {}), ("multiply", (np.array([1 + 2j]), np.array([2 - 1j])), {}),
    ("sinc", (np.array([0.0, 0.5, -1.5], "float32"),), {}), ("i0", (np.array([0.0, 0.5, -3.0, 20.0], "float32"),), {}),
    ("i0", (np.array([0.0, 0.5, -3.0, 20.0]),), {}),
    ("cbrt", (np.array([-8.0, 27.0, 2.0], "float32"),), {}),
    ("bincount", (np.array([0, 1, 1, 3, 3, 3]),), dict(minlength=6)),
    ("bincount", (np.array([0, 1, 1, 3]),), dict(weights=np.array([0.5, 1.0, 2.0, 3.0], "float32"))),
    ("bincount", (np.array([0, 1, 1, 3]),), dict(weights=np.array([5, 1, 2, 3]))),
    ("histogram", (np.array([0.0, 1.0, 1.0, 3.0, 2.5], "float32"),), dict(bins=3)),
    ("histogram", (np.array([0.0, 1.0, 1.0, 3.0, 2.5], "float32"),), dict(bins=4, range=(0.0, 2.0))),
    ("corrcoef", (X34,), {}), ("corrcoef", (X34[0],), {}),
    ("correlate", (np.array([1.0, 2, 3, 4], "float32"), np.array([0.0, 1, 0.5], "float32")), dict(mode="full")),
    ("correlate", (np.array([1.0, 2, 3, 4], "float32"), np.array([0.0, 1, 0.5], "float32")), dict(mode="same")),
    ("correlate", (np.array([1.0, 2, 3, 4], "float32"), np.array([0.0, 1, 0.5], "float32")), {}),
    ("correlate", (np.array([1, 2, 3, 4]), np.array([0, 1, 5])), {}),
    ("diff", (X34,), dict(n=2, axis=1)), ("diff", (I34,), dict(axis=0)),
    ("trapezoid", (X34,), {}), ("trapezoid", (X34,), dict(dx=0.5, axis=0)),
    ("trapezoid", (X34,), dict(x=np.array([0.0, 1.0, 3.0, 3.5], "float32"))),
    ("slogdet", (np.array([[2.0, 1.0], [1.0, -3.0]], "float32"),), {}),
    ("arange", (5,), {}), ("arange", (0.5, 3), {}), ("arange", (1, 9, 2), {}), ("arange", (1, 2, 0.25), {}),
    ("arange", (6,), dict(dtype="float64")), ("arange", (np.int64(4),), {}),
    ("array", ([1, 2],), {}), ("array", ([1.0, 2.0],), {}), ("array", ([1, 2],), dict(dtype="float64")),
    ("ones", ((2, 3),), {}), ("ones", (3,), dict(dtype="int32")), ("zeros", ((2,),), {}),
    ("full", ((2, 2), 3), {}), ("full", ((2, 2), np.array([1, 2])), {}), ("full", ((2,), 7), dict(dtype="int32")),
    ("ones_like", (I34,), {}), ("zeros_like", (X34,), dict(dtype="int32")), ("full_like", (I34, 2.5), {}),
    ("full_like", (X34, 2), dict(dtype="float64")),
    ("eye", (3,), {}), ("eye", (3, 4), dict(k=1)), ("eye", (3,), dict(M=2, k=-1, dtype="int32")),
    ("identity", (4,), {}), ("tri", (3,), {}), ("tri", (3, 5), dict(k=1)),
    ("linspace", (0, 1, 5), {}), ("linspace", (0, 10, 5), dict(dtype="int32")),
    ("linspace", (2.0, 3.0), dict(num=4, endpoint=False)),
    ("logspace", (0, 2, 3), {}), ("logspace", (0, 3, 4), dict(base=2, endpoint=False)),
    ("geomspace", (1, 100, 3), {}), ("geomspace", (1, 16, 4), dict(endpoint=False)),
    ("meshgrid", (np.arange(3.0), np.arange(2.0)), {}), ("meshgrid", (np.arange(3.0), np.arange(2.0)), dict(indexing="ij")),
    ("meshgrid", (np.arange(3.0), np.arange(2.0), np.arange(4.0)), {}),
    ("vander", (np.array([1.0, 2.0, 3.0], "float32"),), {}), ("vander", (np.array([1, 2, 3]),), dict(N=2)),
    ("vander", (np.array([1.0, 2.0, 3.0], "float32"),), dict(N=4, increasing=True)),
    ("bartlett", (5,), {}), ("blackman", (6,), {}), ("hamming", (5,), {}), ("hanning", (7,), {}),
    ("kaiser", (5, 14.0), {}), ("kaiser", (4,), dict(beta=2.0)),
    ("deg2rad", (X34,), {}), ("rad2deg", (X34,), {}),
]


@pytest.mark.parametrize("name,args,kwargs", CASES, ids=[c[0] for c in CASES])
def test_values_like_keras(name, args, kwargs):
    ref = _keras(name, *args, **kwargs)
    ours = getattr(lnp, name)(*args, **kwargs)
    _same(ours, ref, name, rtol=2e-5, atol=2e-5)


X345 = R.standard_normal((3, 4, 5)).astype("float32")
X345N = X345.copy()
X345N[0, 1, 2] = X345N[2, 0, 0] = X345N[1, 3, 4] = np.nan
AXES = [None, 0, -1, (0, 2), (1, 2, 0)]


@pytest.mark.parametrize("name", ["sum", "mean", "max", "min", "amax", "amin", "prod", "std", "var", "all", "any",
                                  "ptp", "median", "nansum", "nanmean", "nanmax", "nanmin", "nanprod", "nanstd",
                                  "nanvar", "nanmedian"])
def test_reductions_over_axes_like_keras(name):
    x = X345N if name.startswith("nan") else X345
    for axis in AXES:
        for keepdims in (False, True):
            kw = dict(axis=axis, keepdims=keepdims)
            ours = getattr(lnp, name)(x, **kw)
            if axis is None and keepdims:
                # NumPy's (and Keras's other backends') shape; Keras's torch backend drops the kept axes
                # of some reductions here, so the values are compared without them
                assert ours.shape == (1, 1, 1), name
                ours, kw = ours.reshape(()), dict(axis=None)
            _same(ours, _keras(name, x, **kw), f"{name}{kw}", rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("name", ["argmax", "argmin", "nanargmax", "nanargmin", "cumsum", "cumprod", "nancumsum",
                                  "count_nonzero"])
def test_axis_functions_like_keras(name):
    x = X345N if name.startswith("nan") else X345
    for axis in (None, 0, 1, -1):
        kws = [dict(axis=axis)] + ([dict(axis=axis, keepdims=True)] if "arg" in name else [])
        for kw in kws:
            ours = getattr(lnp, name)(x, **kw)
            if name == "count_nonzero":  # Keras's torch backend transposes the result: NumPy is the reference
                np.testing.assert_array_equal(ours.numpy(), np.count_nonzero(x, axis=axis))
                assert ours.dtype == np.int32
                continue
            _same(ours, _keras(name, x, **kw), f"{name}{kw}", rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("method", ["linear", "lower", "higher", "midpoint", "nearest"])
def test_quantiles_over_axes_like_keras(method):
    for axis in AXES:
        for keepdims in (False, True):
            for q in (0.37, [0.0, 0.5, 1.0]):
                kw = dict(axis=axis, keepdims=keepdims, method=method)
                _same(lnp.quantile(X345, q, **kw), _keras("quantile", X345, q, **kw), f"quantile{kw}")
                _same(lnp.nanpercentile(X345N, np.asarray(q) * 100, **kw),
                      _keras("nanpercentile", X345N, np.asarray(q) * 100, **kw), f"nanpercentile{kw}")


def test_quantiles_of_no_values_are_nan_as_numpys():
    """Over an empty axis median, nanmedian and quantile give NaN in NumPy's shapes (Keras's torch backend raises
    there; its NumPy backend gives NaN) and an empty gradient; they once failed with an IndexError. corrcoef of one
    0-d observation is NaN as in NumPy and Keras, and tril/triu of a 1-D array raise a clear error, as Keras's."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # NumPy's "Mean of empty slice"
        for shape in [(0, 3), (0,), (4, 0), (2, 0, 3)]:
            x = np.zeros(shape, np.float32)
            for kw in [{}, {"axis": 0}, {"axis": -1}, {"axis": 0, "keepdims": True}, {"keepdims": True}]:
                for name in ("median", "nanmedian"):
                    ours, ref = getattr(lnp, name)(x, **kw).numpy(), getattr(np, name)(x, **kw)
                    assert ours.dtype == np.float32 and ours.shape == np.shape(ref), (name, shape, kw)
                    np.testing.assert_array_equal(ours, ref)
        assert lnp.quantile(np.zeros((3, 0)), [0.1, 0.5], axis=1).shape == (2, 3)
    t = Tensor(np.zeros((4, 0), np.float32), requires_grad=True)
    (g,) = lamina.grad(lnp.sum(lnp.median(t, axis=1)), [t])
    assert g.shape == (4, 0)
    assert np.isnan(lnp.corrcoef(np.float32(1.5)).numpy()) and lnp.corrcoef(np.float32(1.5)).shape == ()
    for fn in (lnp.tril, lnp.triu):
        with pytest.raises(ValueError, match="at least 2"):
            fn(np.zeros(3))


def test_keyword_calls():
    x = X34
    _same(lnp.clip(x=x, x_min=-0.1, x_max=0.2), kops.clip(x=x, x_min=-0.1, x_max=0.2), "clip")
    _same(lnp.power(x1=np.abs(x), x2=1.5), kops.power(x1=np.abs(x), x2=1.5), "power")
    _same(lnp.sum(x=x, axis=0, keepdims=True), kops.sum(x=x, axis=0, keepdims=True), "sum")
    _same(lnp.arange(start=1, stop=4, step=1, dtype="float32"), kops.arange(start=1, stop=4, step=1, dtype="float32"), "arange")
    _same(lnp.diff(a=x, n=1, axis=0), kops.diff(a=x, n=1, axis=0), "diff")
    _same(lnp.trapezoid(y=x, dx=2.0, axis=0), kops.trapezoid(y=x, dx=2.0, axis=0), "trapezoid")
    _same(lnp.eye(N=2, M=3, k=1), kops.eye(N=2, M=3, k=1), "eye")
    _same(lnp.bitwise_and(x=I34, y=3), kops.bitwise_and(x=I34, y=3), "bitwise_and")


def test_tensor_inputs_and_results():
    t = Tensor(X34)
    y = lnp.add(t, 1)
    assert isinstance(y, Tensor) and y.dtype == np.float32
    assert isinstance(lnp.equal(t, t), Tensor) and lnp.equal(t, t).numpy().all()
    assert not lnp.argmax(Tensor(X34, requires_grad=True)).requires_grad


def test_array_of_a_tensor_stays_differentiable():
    x = Tensor(X34, requires_grad=True)
    lnp.sum(lnp.array(x, dtype="float32") * 3).backward()
    np.testing.assert_allclose(x.grad, np.full_like(X34, 3))


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        lnp.quantile(X34, 1.5)
    with pytest.raises(ValueError):
        lnp.quantile(X34, 0.5, method="bogus")
    with pytest.raises(TypeError):
        lnp.ldexp(X34, X34)
    with pytest.raises(TypeError):
        lnp.bitwise_and(X34, X34)
    with pytest.raises(ValueError):
        lnp.max(np.zeros((0,), "float32"))


# ---------------------------------------------------------------------------- gradients vs Keras

def _grads_like_keras(name, arrays, kwargs=None, diff_idx=None, rtol=1e-4, atol=1e-5):
    """Value and gradient of sum(fn(*arrays) * gy) w.r.t. the float inputs, lamina vs torch autograd."""
    kwargs = kwargs or {}
    diff_idx = [i for i, a in enumerate(arrays) if isinstance(a, np.ndarray) and a.dtype.kind == "f"] \
        if diff_idx is None else diff_idx
    ts = [torch.tensor(a, requires_grad=True) if i in diff_idx else (torch.tensor(a) if isinstance(a, np.ndarray) else a)
          for i, a in enumerate(arrays)]
    ky = _keras(name, *ts, **kwargs)
    gy = R.standard_normal(tuple(ky.shape)).astype(np.float32)
    (ky * torch.tensor(gy, dtype=ky.dtype)).sum().backward()
    ls = [Tensor(a, requires_grad=True) if i in diff_idx else a for i, a in enumerate(arrays)]
    ly = getattr(lnp, name)(*ls, **kwargs)
    _same(ly, ky.detach(), name, rtol, atol)
    (ly * Tensor(gy.astype(ly.dtype))).sum().backward()
    for i in diff_idx:
        kg = ts[i].grad
        kg = np.zeros(arrays[i].shape) if kg is None else kg.numpy()
        lg = ls[i].grad
        lg = np.zeros(arrays[i].shape) if lg is None else np.asarray(lg)
        np.testing.assert_allclose(lg, kg, rtol=rtol, atol=atol, err_msg=f"{name}: gradient of input {i}")


P34 = np.abs(X34) + 0.2
U34 = np.tanh(X34) * 0.9
G = [
    ("sin", (X34,)), ("cos", (X34,)), ("tan", (U34,)), ("arcsin", (U34,)), ("arccos", (U34,)), ("arctan", (X34,)),
    ("sinh", (X34,)), ("cosh", (X34,)), ("tanh", (X34,)), ("arcsinh", (X34,)), ("arccosh", (P34 + 1,)),
    ("arctanh", (U34,)), ("exp", (X34,)), ("exp2", (X34,)), ("expm1", (X34,)), ("log", (P34,)), ("log2", (P34,)),
    ("log10", (P34,)), ("log1p", (P34,)), ("sqrt", (P34,)), ("cbrt", (X34,)), ("reciprocal", (P34,)),
    ("square", (X34,)), ("abs", (X34,)), ("fabs", (X34,)), ("negative", (X34,)), ("sinc", (X34,)),
    ("i0", (X34 * 3,)), ("deg2rad", (X34,)), ("rad2deg", (X34,)),
    ("add", (X34, X34[0])), ("subtract", (X34, X34[:, :1])), ("multiply", (X34, X34[0])),
    ("divide", (X34, P34)), ("true_divide", (X34, P34[0])), ("power", (P34, X34)), ("power", (X34, 3)),
    ("maximum", (X34, X34[0])), ("minimum", (X34, U34)), ("fmax", (XNAN, XNAN[::-1].copy())), ("fmin", (X34, U34)),
    ("arctan2", (X34, U34)), ("hypot", (X34, U34)), ("logaddexp", (X34, U34)), ("logaddexp2", (X34, U34)),
    ("mod", (X34, P34[0] + 0.5)), ("fmod", (X34, P34 + 0.5)), ("divide_no_nan", (X34, np.where(U34 > 0, U34, 0))),
    ("clip", (X34, -0.5, 0.5)), ("nan_to_num", (XNAN,)), ("ldexp", (X34, np.abs(I34))),
    ("sum", (X34,), dict(axis=1)), ("mean", (X34,), dict(axis=0, keepdims=True)), ("max", (X34,), dict(axis=1)),
    ("min", (X34,), {}), ("amax", (X34,), dict(axis=0)), ("std", (X34,), dict(axis=1)), ("var", (X34,), {}),
    ("prod", (X34,), dict(axis=1)), ("prod", (np.array([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]], "float32"),), dict(axis=1)),
    ("cumsum", (X34,), dict(axis=1)), ("cumprod", (X34,), dict(axis=1)),
    ("cumprod", (np.array([[1.5, 0.0, 2.0, 3.0], [2.0, 0.5, 0.0, 0.0]], "float32"),), dict(axis=1)),
    ("ptp", (X34,), dict(axis=0)), ("median", (X34,), dict(axis=1)), ("median", (X34,), {}),
    ("quantile", (X34, [0.2, 0.5]), dict(axis=0)), ("percentile", (X34, 70.0), dict(axis=1, method="midpoint")),
    ("nansum", (XNAN,), dict(axis=1)), ("nanmean", (XNAN[[0, 2]],), dict(axis=1)), ("nanmax", (XNAN[[0, 2]],), dict(axis=1)),
    ("nanvar", (XNAN[[0]],), dict(axis=1)), ("nanstd", (XNAN[[0]],), dict(axis=1)), ("nanprod", (XNAN[[0]],), dict(axis=1)),
    ("nancumsum", (XNAN[[0]],), dict(axis=1)), ("nanmedian", (XNAN[[0]],), dict(axis=1)),
    ("average", (X34,), dict(axis=1, weights=np.array([1.0, 2.0, 0.5, 3.0], "float32"))),
    ("corrcoef", (X34,)), ("diff", (X34,), dict(n=2)), ("trapezoid", (X34,), dict(x=np.array([0, 1, 3, 3.5], "float32"))),
    ("correlate", (X34[0], X34[1, :3]), dict(mode="full")), ("correlate", (X34[0], X34[1, :3]), dict(mode="same")),
    ("meshgrid", (X34[0], X34[1, :3])), ("slogdet", (X34[:, :3],)),
    ("amin", (X34,), dict(axis=1, keepdims=True)), ("nanmin", (XNAN[[0, 2]],), dict(axis=1)),
    ("nancumprod", (XNAN[[0]],), dict(axis=1)), ("nanquantile", (XNAN[[0, 2]], [0.3, 0.8]), dict(axis=1)),
    ("nanpercentile", (XNAN[[0]], 40.0), dict(axis=1, method="nearest")),
    ("quantile", (X34, 0.6), dict(axis=1, method="lower")), ("quantile", (X34, 0.6), dict(method="higher")),
    ("average", (X34,), dict(axis=0)), ("trapezoid", (X34,), dict(dx=0.3, axis=0)), ("correlate", (X34[0], X34[1, :2])),
    ("max", (X34,), dict(axis=1, initial=0.2)), ("cumsum", (X34,), {}), ("prod", (X34,), {}),
    ("logaddexp", (X34, 0.5)), ("power", (P34, 2.5)), ("subtract", (1.0, X34)), ("divide", (2, P34)),
]


@pytest.mark.parametrize("case", G, ids=[c[0] for c in G])
def test_gradients_like_keras(case):
    name, arrays = case[0], case[1]
    kwargs = case[2] if len(case) > 2 else {}
    if name in ("meshgrid", "slogdet"):  # several outputs: check each through a weighted sum
        ts = [torch.tensor(a, requires_grad=True) for a in arrays]
        ls = [Tensor(a, requires_grad=True) for a in arrays]
        kout, lout = _keras(name, *ts), getattr(lnp, name)(*ls)
        gys = [R.standard_normal(tuple(k.shape)).astype(np.float32) for k in kout]
        if name == "slogdet":
            gys[0] = gys[0] * 0  # sign has no gradient
        sum(((k * torch.tensor(g)).sum() for k, g in zip(kout, gys))).backward()
        total = None
        for lo, ko, g in zip(lout, kout, gys):
            _same(lo, ko.detach(), name, 1e-5, 1e-5)
            term = (lo * Tensor(g)).sum()
            total = term if total is None else total + term
        total.backward()
        for t, lt in zip(ts, ls):
            np.testing.assert_allclose(np.asarray(lt.grad), t.grad.numpy(), rtol=1e-4, atol=1e-5)
        return
    _grads_like_keras(name, arrays, kwargs)


XTIE = np.array([[1.0, 3.0, 3.0, -1.0], [0.0, 0.0, 2.0, 2.0], [0.5, 0.5, 0.5, 0.5]], "float32")
TIES = [
    ("max", (XTIE,), dict(axis=1)), ("max", (XTIE,), {}), ("min", (XTIE,), dict(axis=0)), ("amax", (XTIE,), dict(axis=1)),
    ("maximum", (XTIE, XTIE[::-1].copy())), ("minimum", (XTIE, np.float32(0.5) * np.ones(4, "float32"))),
    ("clip", (XTIE, 0.5, 2.0)), ("abs", (XTIE - 0.5,)), ("sqrt", (XTIE + 1,)), ("fmax", (XTIE, XTIE[::-1].copy())),
    ("ptp", (XTIE,), dict(axis=1)), ("cumprod", (XTIE,), dict(axis=1)), ("prod", (XTIE,), dict(axis=0)),
    ("nanmax", (XTIE,), dict(axis=1)), ("hypot", (XTIE, XTIE[::-1].copy())),
]


@pytest.mark.parametrize("case", TIES, ids=[c[0] for c in TIES])
def test_gradients_at_ties_and_kinks_like_keras(case):
    """Ties (max, maximum), clip's edges, zeros in products: the gradient goes where Keras's goes."""
    _grads_like_keras(case[0], case[1], case[2] if len(case) > 2 else {})


# ---------------------------------------------------------------------------- kernels, float64 central differences

def _f64(*shape, lo=None, hi=None):
    a = R.standard_normal(shape)
    if lo is not None:
        a = lo + np.abs(a)
    if hi is not None:
        a = np.tanh(a) * hi
    return a


UNARY_KERNELS = [(E.Sin, None), (E.Cos, None), (E.Tan, 0.9), (E.Arcsin, 0.9), (E.Arccos, 0.9), (E.Arctan, None),
                 (E.Sinh, None), (E.Cosh, None), (E.Arcsinh, None), (E.Arccosh, "gt1"), (E.Arctanh, 0.9),
                 (E.Log1p, "pos"), (E.Expm1, None), (E.Log2, "pos"), (E.Log10, "pos"), (E.Exp2, None),
                 (E.Cbrt, "pos"), (E.Reciprocal, "pos"), (E.Sinc, None), (E.I0, None)]


@pytest.mark.parametrize("kernel,dom", UNARY_KERNELS, ids=[k.__name__ for k, _ in UNARY_KERNELS])
def test_unary_kernel_gradients(kernel, dom):
    x = _f64(3, 4, lo=0.3 if dom == "pos" else 1.2 if dom == "gt1" else None, hi=dom if isinstance(dom, float) else None)
    if kernel is E.I0:
        x = x * 4  # moderate values: central differences of i0 lose digits as it grows like e^x
        x[0, 0], x[0, 1] = 12.0, -11.0
    check_grad(kernel.apply, x, name=kernel.__name__)


def test_i1_asymptotic_branch():
    """Beyond |x| = 30 I0's derivative comes from the asymptotic series: relative check against
    central differences of np.i0 with a step that suits the size of the values."""
    x = np.array([31.0, -40.0, 60.0, 100.0])
    h = 1e-4
    num = (np.i0(x + h) - np.i0(x - h)) / (2 * h)
    np.testing.assert_allclose(E._bessel_i1(np, x), num, rtol=1e-7)


@pytest.mark.parametrize("kernel", [E.Arctan2, E.Hypot, E.LogAddExp, E.LogAddExp2, E.Fmod, E.Mod, E.FMax, E.FMin,
                                    E.DivideNoNan], ids=lambda k: k.__name__)
def test_binary_kernel_gradients(kernel):
    a, b = _f64(3, 4), _f64(4, lo=0.5)
    check_grad(kernel.apply, a, b, name=kernel.__name__)


def test_reduction_and_scan_kernel_gradients():
    x = _f64(3, 4, 2)
    x[0, 1, 0] = 0.0
    x[1, 1:3, 1] = 0.0
    check_grad(lambda t: E.Prod.apply(t, axes=(1,), keepdims=False), x, name="Prod")
    check_grad(lambda t: E.Prod.apply(t, axes=(0, 2), keepdims=True), x, name="Prod")
    check_grad(lambda t: E.Cumsum.apply(t, axis=1), x, name="Cumsum")
    check_grad(lambda t: E.Cumprod.apply(t, axis=1), x, name="Cumprod with zeros")
    check_grad(lambda t: E.Cumprod.apply(t, axis=2), _f64(3, 4, 2), name="Cumprod")
    for method in ("linear", "lower", "higher", "midpoint", "nearest"):
        check_grad(lambda t: E.Quantile.apply(t, q=np.array([0.1, 0.5, 0.8]), scalar_q=False, axes=(1,),
                                              method=method, keepdims=False, ignore_nan=False),
                   _f64(3, 5, 2), name=f"Quantile {method}")
    check_grad(lambda t: E.Quantile.apply(t, q=np.array([0.35]), scalar_q=True, axes=(0, 2), method="linear",
                                          keepdims=True, ignore_nan=False), _f64(3, 2, 4), name="Quantile axes (0, 2)")
    xn = _f64(2, 5)
    xn[0, 1] = np.nan
    check_grad(lambda t: E.Quantile.apply(t, q=np.array([0.3]), scalar_q=True, axes=(1,), method="linear",
                                          keepdims=True, ignore_nan=True), xn[:1], name="nanquantile")
    check_grad(lambda t: E.SlogDet.apply(t)[1], _f64(2, 3, 3) + 3 * np.eye(3), name="SlogDet")


def test_public_float64_gradients():
    """Public functions that keep float64 checked by central differences end to end."""
    check_grad(lambda t: lnp.trapezoid(t, dx=0.5), _f64(3, 4))
    check_grad(lambda t: lnp.corrcoef(t), _f64(3, 5))
    check_grad(lambda t: lnp.diff(t, n=2, axis=0), _f64(4, 3))
    check_grad(lambda t: lnp.nan_to_num(t), _f64(3, 3))
    check_grad(lambda t: lnp.sum(lnp.square(t) * lnp.cbrt(t)), _f64(3, 3))


def test_bincount_weight_gradient():
    """Each weight receives the gradient of the bin its value falls in."""
    x = np.array([0, 2, 2, 1, 3])
    w = Tensor(np.array([0.5, 1.0, 2.0, 3.0, -1.0], "float32"), requires_grad=True)
    gy = R.standard_normal(5).astype("float32")
    (lnp.bincount(x, weights=w, minlength=5) * Tensor(gy)).sum().backward()
    np.testing.assert_allclose(w.grad, gy[x])


def test_where_numpy_and_keras_differ():
    """Cases where lamina follows NumPy because Keras's torch backend does not do what NumPy does."""
    w = np.abs(X34) + 0.1  # weights of x's shape with axis=None: a scalar (Keras's torch backend: (3,))
    np.testing.assert_allclose(lnp.average(X34, weights=w).numpy(), np.average(X34, weights=w), rtol=1e-5)
    # an infinity stays infinite in nancumsum (Keras's torch backend turns it into the float max)
    np.testing.assert_array_equal(lnp.nancumsum(XNAN, axis=1).numpy(), np.nancumsum(XNAN, axis=1))
    # linspace/logspace/geomspace along another axis (torch.linspace has no axis)
    np.testing.assert_allclose(lnp.linspace(np.array([0.0, 1.0]), np.array([1.0, 3.0]), num=3, axis=1).numpy(),
                               np.linspace([0.0, 1.0], [1.0, 3.0], num=3, axis=1), rtol=1e-6)
    np.testing.assert_allclose(lnp.geomspace(np.array([1.0, 2.0]), 8.0, num=3, axis=1).numpy(),
                               np.geomspace([1.0, 2.0], 8.0, num=3, axis=1), rtol=1e-6)
    # correlate in 'same' mode with the second array longer: NumPy's length max(n, m)
    a, v = np.array([1.0, 2, 3], "float32"), np.array([0.5, 1, -1, 2, 4], "float32")
    for mode in ("valid", "same", "full"):
        np.testing.assert_allclose(lnp.correlate(a, v, mode).numpy(), np.correlate(a, v, mode), rtol=1e-6)
    # nextafter gives the neighbouring float32 (Keras's torch backend steps in float64, then rounds back)
    sv = np.array([0.0, 1.0, -np.inf, 2.0], "float32")
    np.testing.assert_array_equal(lnp.nextafter(sv, np.float32(np.inf) * np.ones(4, "float32")).numpy(),
                                  np.nextafter(sv, np.full(4, np.inf, "float32")))
    # vander is differentiable (Keras's torch vander fails in backward: an in-place write)
    x = Tensor(np.array([1.0, 2.0, 3.0], "float32"), requires_grad=True)
    lnp.sum(lnp.vander(x, N=3)).backward()
    np.testing.assert_allclose(x.grad, 2 * x.numpy() + 1)


# ---------------------------------------------------------------------------- the device path

DEVICE_CASES = {
    "trig": lambda a, b: lnp.sin(a) * lnp.arctan2(a, b) + lnp.logaddexp(a, b) + lnp.hypot(a, b) + lnp.cbrt(a),
    "mods": lambda a, b: lnp.mod(a, lnp.abs(b) + 1) + lnp.fmod(a, 2.0) + lnp.divide_no_nan(a, b) + lnp.fmax(a, b),
    "scans": lambda a: lnp.cumsum(a, axis=1) + lnp.cumprod(a, axis=0) + lnp.prod(a, axis=1, keepdims=True),
    "stats": lambda a: lnp.quantile(a, [0.2, 0.6], axis=1).sum(axis=0) + lnp.median(a, axis=1) + lnp.nanstd(a, axis=1)
    + lnp.nanmax(a, axis=1) + lnp.ptp(a, axis=1) + lnp.average(a, axis=1, weights=np.arange(1.0, 5.0, dtype="float32")),
    "calculus": lambda a: lnp.trapezoid(a) + lnp.diff(a, n=2).sum(axis=1) + lnp.correlate(a[0], a[1], "full")[:3],
    "misc": lambda a: lnp.nan_to_num(a) + lnp.clip(a, -0.5, 0.5) + lnp.i0(a) + lnp.sinc(a) + lnp.ldexp(a, 2)
    + lnp.slogdet(a[:, :3])[1] + lnp.exp2(a) + lnp.expm1(a) + lnp.log1p(lnp.abs(a)),
    "corrcoef": lambda a: lnp.corrcoef(a),
    "creation": lambda a: a * lnp.ones((3, 4)) + lnp.linspace(0, 1, 4) + lnp.hamming(4) + lnp.eye(3, 4)
    + lnp.add(lnp.full_like(a, 2), lnp.arange(4)) + lnp.tri(3, 4) + lnp.geomspace(1, 8, 4) + lnp.kaiser(4, 2.0),
}


DEVICE_CASES["logic"] = lambda a: a + lnp.sum(lnp.logical_xor(lnp.greater(a, 0), lnp.isnan(a))) \
    + lnp.count_nonzero(a > 0) + lnp.bincount(lnp.argmin(a, axis=1), minlength=3).sum() + lnp.signbit(a).sum()


@pytest.mark.parametrize("name", sorted(DEVICE_CASES))
def test_on_device_matches_cpu(name, device_xp):
    """The functions on the 'cuda' array module (fake CuPy here: every array must stay on the device)
    give the CPU's values and gradients."""
    from lamina import backend
    fn = DEVICE_CASES[name]
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal((3, 4)).astype(np.float32) for _ in range(fn.__code__.co_argcount)]

    def run(xp):
        ts = [Tensor(backend.to_device(a, xp), requires_grad=True) for a in arrays]
        y = fn(*ts)
        gy = backend.to_device(np.random.default_rng(4).standard_normal(y.shape).astype(y.dtype), xp)
        y.backward(gy)
        out = [y.data] + [t.grad for t in ts]
        for o in out:
            assert backend.get_array_module(o) is xp, f"{name}: {type(o)} is not on the device"
        return [backend.to_numpy(o) for o in out]

    backend.set_device("cpu")
    expected = run(np)
    backend.set_device("cuda")
    got = run(device_xp)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=2e-4, atol=2e-5, err_msg=name)


def test_nanvar_of_an_infinite_entry_is_nan_as_numpy():
    # the NaN entries count as absent; an infinite one makes inf - inf, and the variance NaN (it was inf)
    x = np.array([[1.0, np.nan, 3.0, np.inf], [1.0, np.nan, 3.0, 5.0]], np.float32)
    with np.errstate(invalid="ignore"):
        np.testing.assert_allclose(lnp.nanvar(x, axis=1).numpy(), np.nanvar(x, axis=1), rtol=1e-6)
        np.testing.assert_allclose(lnp.nanstd(x, axis=1).numpy(), np.nanstd(x, axis=1), rtol=1e-6)
