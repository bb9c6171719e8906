"""A CPU stand-in for CuPy that keeps CuPy's device boundary, so device plumbing is testable without a GPU.

It is NOT a GPU test: the numbers are NumPy's. What it checks is that lamina keeps every array of a
model on one device and treats device arrays as CuPy demands:

* its arrays wrap a NumPy array but are not ``numpy.ndarray`` instances (neither are CuPy's), and their
  type lives in a module named ``cupy`` (what ``lamina.backend.is_cupy_array`` looks at);
* like CuPy, implicit conversion to NumPy raises TypeError (``numpy.asarray(a)``, ``numpy.array(a)``):
  results come back only through ``.get()`` / ``cupy.asnumpy``;
* like CuPy, a ufunc or array function that mixes them with a NumPy array (even 0-d) raises TypeError,
  and so does assigning a NumPy array into one (CuPy allows ``a[:] = b`` only) or indexing ``ufunc.at``
  with host index arrays;
* NumPy functions and ufuncs applied to them dispatch to the device (``__array_function__`` and
  ``__array_ufunc__``), as they do for CuPy; reductions give 0-d arrays, not scalars.

What it cannot see: NumPy functions CuPy lacks (a separate test checks names against real CuPy), and
anything about speed or float differences on a GPU.
"""
import types

import numpy as np
from numpy.lib.mixins import NDArrayOperatorsMixin

__all__ = ["make_module", "ndarray"]


def _is_host(a):
    return isinstance(a, np.ndarray)


def _check(objs, what):
    for a in objs:
        if isinstance(a, (list, tuple)):
            _check(a, what)
        elif _is_host(a):
            raise TypeError(f"fake cupy: {what} mixes a device array with a NumPy array of shape {a.shape} "
                            "(CuPy raises here: move it with cupy.asarray first)")


def _unwrap(x):
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, (list, tuple)) and not hasattr(x, "_fields"):
        return type(x)(_unwrap(v) for v in x)
    if isinstance(x, dict):
        return {k: _unwrap(v) for k, v in x.items()}
    return x


def _wrap(x):
    if isinstance(x, np.ndarray):
        return ndarray(x)
    if isinstance(x, np.generic):
        return ndarray(np.asarray(x))
    if isinstance(x, (list, tuple)) and not hasattr(x, "_fields"):
        return type(x)(_wrap(v) for v in x)
    return x


class ndarray(NDArrayOperatorsMixin):
    """A 'device' array: NumPy memory inside, CuPy's rules at the boundary."""

    __slots__ = ("_a",)

    def __init__(self, a):
        object.__setattr__(self, "_a", a)

    # --- the boundary
    def __array__(self, dtype=None, copy=None):
        raise TypeError("fake cupy: implicit conversion to a NumPy array is not allowed "
                        "(CuPy raises here: use .get() or cupy.asnumpy)")

    def get(self, stream=None, order="C", out=None):
        host = np.array(self._a, copy=True, order=order)
        if out is not None:
            out[...] = host
            return out
        return host

    def __array_ufunc__(self, ufunc, method, *inputs, out=None, **kwargs):
        _check(inputs, f"numpy.{ufunc.__name__}")
        if out is not None:
            _check(out, f"numpy.{ufunc.__name__}(out=...)")
            kwargs["out"] = tuple(_unwrap(o) for o in out)
        result = getattr(ufunc, method)(*_unwrap(inputs), **kwargs)
        if method == "at":
            return None
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types_, args, kwargs):
        _check(args, f"numpy.{func.__name__}")
        _check(list(kwargs.values()), f"numpy.{func.__name__}")
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    # --- indexing
    def __getitem__(self, key):
        return _wrap(self._a[_unwrap(key)])

    def __setitem__(self, key, value):
        if _is_host(value) and not (key == slice(None) and value.shape == self._a.shape):
            raise TypeError(f"fake cupy: assigning a NumPy array of shape {value.shape} into a device array "
                            "(CuPy raises here: move it with cupy.asarray first)")
        self._a[_unwrap(key)] = _unwrap(value)

    # --- everything else an ndarray has: delegated, results kept on the device
    def __getattr__(self, name):
        if name.startswith("__"):  # no __array_interface__ / buffer: NumPy must not see through it
            raise AttributeError(name)
        attr = getattr(self._a, name)
        if callable(attr):
            return lambda *args, **kwargs: _wrap(attr(*_unwrap(args), **_unwrap(kwargs)))
        return _wrap(attr)

    @property
    def data(self):
        """CuPy's own: the array's device memory (a MemoryPointer), not an array: code that unwraps Tensors with
        getattr(x, "data", x) gets this from a CuPy array."""
        return _MemoryPointer()

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (ndarray(np.asarray(v)) for v in self._a)

    def __bool__(self):
        return bool(self._a)

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    def __index__(self):
        return self._a.__index__()

    def __repr__(self):
        return "fake_cupy." + repr(self._a)


ndarray.__module__ = "cupy"


class _UfuncProxy:
    """``cupy.add`` and friends: call, reduce, at, ... with device results."""

    def __init__(self, uf):
        self._uf = uf
        self.__name__ = uf.__name__

    def _device_call(self, fn, args, kwargs):
        out = kwargs.get("out")
        res = fn(*args, **kwargs)
        if out is not None:
            return out
        return None if res is None else _wrap(res)

    def __call__(self, *args, **kwargs):
        if not any(isinstance(a, ndarray) for a in list(args) + list(kwargs.values())):
            return _wrap(self._uf(*args, **kwargs))  # Python scalars only: a 0-d device array, as CuPy
        return self._device_call(self._uf, args, kwargs)

    def __getattr__(self, name):
        attr = getattr(self._uf, name)
        if name in ("reduce", "accumulate", "reduceat", "outer", "at"):
            return lambda *a, **k: self._device_call(attr, a, k)
        return attr


class _MemoryPointer:
    """What a CuPy array's .data is: a pointer into device memory, with no array methods."""


# Keyword arguments NumPy's function takes and CuPy 14's does not (CuPy raises TypeError).
_NARROWER = {"einsum": {"out"}}


def _function(fn, name):
    def device_fn(*args, **kwargs):
        refused = sorted(_NARROWER.get(name, set()) & set(kwargs))
        if refused:
            raise TypeError(f"fake cupy: cupy.{name} does not take {refused} (CuPy: 'Did not understand the "
                            f"following kwargs: {refused}')")
        if name not in _HOST_ARGS_OK:
            _check(args, f"cupy.{name}")
        return _wrap(fn(*_unwrap(args), **_unwrap(kwargs)))
    device_fn.__name__ = name
    return device_fn


# cupy.asarray / cupy.array take host data: that is how data moves to the device.
_HOST_ARGS_OK = {"asarray", "array", "ascontiguousarray", "asanyarray", "zeros", "ones", "empty", "full",
                 "arange", "eye", "identity", "linspace", "zeros_like", "ones_like", "empty_like", "full_like",
                 "tril", "triu", "meshgrid"}


def _namespace(np_mod, name):
    mod = types.ModuleType(name)
    mod.__file__ = __file__

    def getattr_(attr):
        value = getattr(np_mod, attr)
        if attr == "ndarray":
            return ndarray
        if isinstance(value, np.ufunc):
            return _UfuncProxy(value)
        if isinstance(value, types.ModuleType):
            return _namespace(value, f"{name}.{attr}")
        if callable(value) and not isinstance(value, type):
            return _function(value, attr)
        return value  # dtypes, constants, newaxis, finfo, ...
    mod.__getattr__ = getattr_
    return mod


def make_module():
    """A fresh module object to install as ``sys.modules['cupy']``."""
    mod = _namespace(np, "cupy")
    mod.ndarray = ndarray
    mod.asnumpy = lambda a, stream=None, order="C", out=None: (
        a.get(order=order, out=out) if isinstance(a, ndarray) else np.asarray(a, order=order))
    mod.get_array_module = lambda *arrays: mod if any(isinstance(a, ndarray) for a in arrays) else np
    mod.is_fake = True
    mod.__version__ = "0.0-fake"
    return mod
