"""Part of lamina.ops.numpy (see numpy.py): shape manipulation, joining and splitting, indexing,
sorting and searching, products and contractions.

Each function takes Keras's arguments, converts its inputs like ``keras.ops.convert_to_tensor``
(Python floats -> floatx, Python ints -> int32, arrays keep their dtype) and calls the differentiable
kernels in manipulation.py, math.py and indexing.py. Integer- and bool-valued results (argsort,
nonzero, searchsorted, ...) are constant Tensors.

One deliberate difference from Keras: Keras narrows the float64 result of matmul, dot, inner, vdot,
tensordot and cross to float32; here float64 operands give a float64 result (so float64 gradient
checks and float64 models keep their precision).
"""
import builtins
import itertools
import re

import numpy as np

from .. import backend
from ..dtypes import result_type as _keras_result_type
from ..tensor import Tensor, autocast_variable
from . import indexing as _ix
from . import manipulation as _man
from . import math as _m

__all__ = [
    "append", "argpartition", "argsort", "array_split", "broadcast_to", "concatenate", "copy", "cross",
    "diag", "diagflat", "diagonal", "digitize", "dot", "dsplit", "dstack", "einsum", "expand_dims", "flip",
    "fliplr", "flipud", "get_item", "hsplit", "hstack", "inner", "isin", "kron", "matmul", "moveaxis",
    "ndim", "nonzero", "outer", "pad", "ravel", "repeat", "reshape", "roll", "rot90", "searchsorted",
    "select", "size", "sort", "split", "squeeze", "stack", "swapaxes", "take", "take_along_axis",
    "tensordot", "tile", "trace", "transpose", "tril", "triu", "unique", "unravel_index", "vdot",
    "vectorize", "view", "vsplit", "vstack", "where",
]


# ----------------------------------------------------------------------------------------- helpers

def _t(x, dtype=None):
    """x as a Tensor, converted like keras.ops.convert_to_tensor."""
    if isinstance(x, Tensor):
        x = autocast_variable(x)
        return x if dtype is None else _m.cast(x, dtype)
    if isinstance(x, (list, tuple)) and any(isinstance(e, Tensor) for e in x):
        return _man.stack([_t(e) for e in x], axis=0) if dtype is None else _m.cast(_t(x), dtype)
    if isinstance(x, (np.ndarray, np.generic)) or backend.is_cupy_array(x):
        return Tensor(x, dtype=dtype)
    a = np.asarray(x)
    if dtype is None:
        if a.dtype == np.float64:
            dtype = backend.floatx()
        elif a.dtype.kind in "iu":
            dtype = "int32"
    return Tensor(a, dtype=dtype)


def _xp(*tensors):
    return backend.get_array_module(*[t.data for t in tensors])


def _axis(a, nd):
    if not -nd <= a < builtins.max(nd, 1):
        raise ValueError(f"axis {a} is out of bounds for a tensor of rank {nd}.")
    return a % nd if nd else 0


def _result(*xs, int8_to=None, narrow=True):
    """Keras's result dtype for an op over xs (tensors or Python numbers), except that float64 operands
    (with no other float dtype among them) keep float64. With narrow=False, 64-bit tensor dtypes are
    kept as torch's promotion keeps them (the ops Keras's torch backend leaves to torch: where,
    concatenate, outer, einsum, ...)."""
    names = [x if isinstance(x, (bool, int, float)) else str(x.dtype) for x in xs]
    strong = [n for n in names if isinstance(n, str)]
    if int8_to and strong and all(n == "int8" for n in names):
        return int8_to
    out = _keras_result_type(*names)
    wide = {"float32": "float64", "int32": "int64", "uint32": "uint64"}
    if out in wide and wide[out] in strong:
        if not narrow or (out == "float32" and all(n == "float64" for n in strong if n.startswith("float"))):
            return wide[out]
    return out


def _same_dtype(xs, dtype=None):
    """Tensors xs cast to one dtype (torch's promotion, as Keras's torch backend, unless given)."""
    dtype = dtype or _result(*xs, narrow=False)
    return [_m.cast(x, dtype) for x in xs]


def _const(t, value):
    """A 0-d constant of t's dtype on t's device."""
    return Tensor(_xp(t).asarray(value, dtype=t.dtype))


# ------------------------------------------------------------------------------- shape manipulation

def reshape(x, newshape):
    """Gives x a new shape with the same data (one entry may be -1)."""
    return _man.reshape(_t(x), newshape)


def transpose(x, axes=None):
    """Permutes the axes of x (reverses them when axes is None). Gradient: the inverse permutation."""
    return _man.transpose(_t(x), axes)


def squeeze(x, axis=None):
    """Removes axes of length 1 (all of them, or those in axis)."""
    return _man.squeeze(_t(x), axis)


def expand_dims(x, axis):
    """Inserts axes of length 1 at the positions axis (an int or a tuple) of the result."""
    x = _t(x)
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    nd = x.ndim + len(axes)
    axes = sorted(_axis(a, nd) for a in axes)
    shape = list(x.shape)
    for a in axes:
        shape.insert(a, 1)
    return _man.reshape(x, shape)


def moveaxis(x, source, destination):
    """Moves the axes source to the positions destination; the others keep their order."""
    x = _t(x)
    src = [_axis(a, x.ndim) for a in ((source,) if isinstance(source, int) else source)]
    dst = [_axis(a, x.ndim) for a in ((destination,) if isinstance(destination, int) else destination)]
    if len(src) != len(dst):
        raise ValueError(f"moveaxis: source {source} and destination {destination} differ in length.")
    order = [a for a in range(x.ndim) if a not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return _man.transpose(x, order)


def swapaxes(x, axis1, axis2):
    """Exchanges axes axis1 and axis2."""
    return _man.swapaxes(_t(x), axis1, axis2)


def ravel(x):
    """x flattened to 1-D (row-major)."""
    return _man.reshape(_t(x), (-1,))


def broadcast_to(x, shape):
    """x broadcast to shape; gradient: summed over the broadcast axes."""
    return _man.broadcast_to(_t(x), (shape,) if isinstance(shape, int) else shape)


def view(x, dtype=None):
    """The same bytes seen as dtype (like ndarray.view); with dtype None or x's own dtype, x itself
    (differentiable); reinterpreting as another dtype carries no gradient."""
    x = _t(x)
    if dtype is None or np.dtype(dtype) == x.dtype:
        return _man.reshape(x, x.shape)
    return Tensor(x.data.view(np.dtype(dtype)))


def copy(x):
    """A copy of x (the gradient passes through)."""
    return _ix.Copy.apply(_t(x))


def ndim(x):
    """The number of axes of x (a Python int)."""
    return _t(x).ndim


def size(x):
    """The number of elements of x, as a 0-d int64 tensor (as Keras's torch backend gives)."""
    x = _t(x)
    return Tensor(_xp(x).asarray(x.size, dtype="int64"))


# ------------------------------------------------------------------------------ joining, splitting

def concatenate(xs, axis=0):
    """Joins tensors along an existing axis (axis None: flattened first). Dtype: Keras's result type."""
    xs = [_t(x) for x in xs]
    if axis is None:
        xs = [ravel(x) for x in xs]
        axis = 0
    if len({x.dtype for x in xs}) > 1:
        xs = _same_dtype(xs)
    return _man.concatenate(xs, axis=axis)


def stack(x, axis=0):
    """Joins tensors of one shape along a new axis."""
    xs = [_t(e) for e in x]
    if len({e.dtype for e in xs}) > 1:
        xs = _same_dtype(xs)
    return _man.stack(xs, axis=axis)


def _atleast(x, nd):
    shape = x.shape
    if x.ndim >= nd:
        return x
    if nd == 2:
        return reshape(x, (1,) * (2 - x.ndim) + shape)
    # atleast_3d: () -> (1, 1, 1), (n,) -> (1, n, 1), (m, n) -> (m, n, 1)
    new = {0: (1, 1, 1), 1: (1,) + shape + (1,), 2: shape + (1,)}[x.ndim]
    return reshape(x, new)


def hstack(xs):
    """Joins along axis 1 (axis 0 for 1-D tensors)."""
    xs = [_t(x) for x in xs]
    xs = [reshape(x, (1,)) if x.ndim == 0 else x for x in xs]
    return concatenate(xs, axis=0 if xs[0].ndim == 1 else 1)


def vstack(xs):
    """Joins along axis 0, 1-D tensors first becoming rows (1, n)."""
    return concatenate([_atleast(_t(x), 2) for x in xs], axis=0)


def dstack(xs):
    """Joins along axis 2, tensors first raised to 3-D ((n,) -> (1, n, 1), (m, n) -> (m, n, 1))."""
    return concatenate([_atleast(_t(x), 3) for x in xs], axis=2)


def append(x1, x2, axis=None):
    """x2 appended to x1 along axis (both flattened when axis is None)."""
    return concatenate([x1, x2], axis=axis)


def split(x, indices_or_sections, axis=0):
    """Splits x into equal sections (an int) or at the given indices, along axis; a list of tensors."""
    x = _t(x)
    if not isinstance(indices_or_sections, int):
        indices_or_sections = [int(i) for i in np.asarray(indices_or_sections).reshape(-1)]
    elif x.shape[axis] % indices_or_sections:
        raise ValueError(f"split: axis {axis} of length {x.shape[axis]} does not divide into "
                         f"{indices_or_sections} equal sections (array_split allows that).")
    return _man.split(x, indices_or_sections, axis=axis)


def array_split(x, indices_or_sections, axis=0):
    """Like split, but an int number of sections need not divide the axis: the first
    ``len % sections`` pieces get one extra element."""
    x = _t(x)
    if isinstance(indices_or_sections, int):
        n, k = x.shape[axis], indices_or_sections
        if k <= 0:
            raise ValueError(f"array_split: the number of sections must be positive, got {k}.")
        sizes = [n // k + 1] * (n % k) + [n // k] * (k - n % k)
        indices_or_sections = list(np.cumsum(sizes)[:-1])
    return split(x, indices_or_sections, axis=axis)


def hsplit(x, indices_or_sections):
    """split along axis 1 (axis 0 for a 1-D tensor)."""
    x = _t(x)
    return split(x, indices_or_sections, axis=0 if x.ndim == 1 else 1)


def vsplit(x, indices_or_sections):
    """split along axis 0 (x at least 2-D)."""
    x = _t(x)
    if x.ndim < 2:
        raise ValueError("vsplit needs a tensor of rank 2 or more.")
    return split(x, indices_or_sections, axis=0)


def dsplit(x, indices_or_sections):
    """split along axis 2 (x at least 3-D)."""
    x = _t(x)
    if x.ndim < 3:
        raise ValueError("dsplit needs a tensor of rank 3 or more.")
    return split(x, indices_or_sections, axis=2)


def tile(x, repeats):
    """x repeated ``repeats`` times along each axis (np.tile); gradient: the tiles summed."""
    reps = tuple(int(r) for r in np.asarray(repeats).reshape(-1))
    return _man.tile(_t(x), reps)


def repeat(x, repeats, axis=None):
    """Each element repeated ``repeats`` times (an int, or one count per element) along axis
    (x flattened first when axis is None). Gradient: each element's copies summed."""
    x = _t(x)
    if axis is None:
        x, axis = ravel(x), 0
    axis = _axis(axis, x.ndim)
    reps = repeats.data if isinstance(repeats, Tensor) else repeats
    reps = backend.to_numpy(reps) if backend.is_cupy_array(reps) else np.asarray(reps)
    if reps.ndim == 0 or reps.size == 1:
        return _man.repeat(x, int(reps.reshape(-1)[0]), axis)
    if reps.shape != (x.shape[axis],):
        raise ValueError(f"repeat: {reps.size} repeat counts for an axis of length {x.shape[axis]}.")
    return _ix.RepeatEach.apply(x, repeats=reps.astype(np.int64), axis=axis)


_PAD_INDEX_MODES = {"edge": "edge", "reflect": "reflect", "symmetric": "symmetric", "wrap": "wrap",
                    "circular": "wrap"}
_PAD_VALUE_MODES = ("linear_ramp", "maximum", "mean", "median", "minimum")


def _pad_width(pad_width, nd):
    if isinstance(pad_width, int):
        return [(pad_width, pad_width)] * nd
    pw = [tuple(int(v) for v in np.atleast_1d(p)) for p in
          (pad_width if isinstance(pad_width[0], (tuple, list, np.ndarray)) else [pad_width])]
    pw = [(p[0], p[0]) if len(p) == 1 else p for p in pw]
    if len(pw) == 1:
        pw = pw * nd
    if len(pw) != nd:
        raise ValueError(f"`pad_width` must have the same length as `x.shape`. Received: pad_width={pad_width} "
                         f"and x.shape={nd}-D")
    return pw


def _pad_from_values(x, pw, mode):
    """The statistic and ramp pad modes as differentiable compositions, axis after axis as NumPy pads
    (each axis's statistic covers the previous axes' padding too): the border is the max / min /
    mean / median of the axis (broadcast), or a linear ramp from 0 to the edge value."""
    xp = _xp(x)
    for ax, (lo, hi) in enumerate(pw):
        if lo == 0 and hi == 0:
            continue
        n = x.shape[ax]
        if mode == "linear_ramp":
            def edge(i):
                return _man.getitem(x, (slice(None),) * ax + (slice(i, i + 1 if i != -1 else None),))

            def ramp(w):
                shape = [1] * x.ndim
                shape[ax] = len(w)
                return Tensor(xp.asarray(np.asarray(w).reshape(shape), dtype=x.dtype))
            before = _m.multiply(edge(0), ramp(np.arange(lo) / builtins.max(lo, 1)))
            after = _m.multiply(edge(-1), ramp((hi - np.arange(1, hi + 1)) / builtins.max(hi, 1)))
        else:
            if mode == "median":
                srt = sort(x, axis=ax)
                mid = (slice(None),) * ax
                stat = _m.mean(_man.getitem(srt, mid + (slice((n - 1) // 2, n // 2 + 1),)), axis=ax, keepdims=True)
            else:
                reduce = {"maximum": _m.max, "minimum": _m.min, "mean": _m.mean}[mode]
                stat = reduce(x, axis=ax, keepdims=True)
            shape = list(x.shape)
            before = _man.broadcast_to(stat, shape[:ax] + [lo] + shape[ax + 1:])
            after = _man.broadcast_to(stat, shape[:ax] + [hi] + shape[ax + 1:])
        x = _man.concatenate([before, x, after], axis=ax)
    return x


def pad(x, pad_width, mode="constant", constant_values=None):
    """Pads x by pad_width ((before, after) per axis, one pair for all, or an int) in one of NumPy's
    modes: constant; edge, reflect, symmetric, wrap (= circular), whose gradient is scattered back
    through the copied positions; maximum, minimum, mean, median (the axis's statistic) and
    linear_ramp (from 0 to the edge), differentiable through the statistic; empty (zeros here)."""
    x = _t(x)
    if constant_values is not None and mode != "constant":
        raise ValueError("Argument `constant_values` can only be provided when `mode == 'constant'`. "
                         f"Received: mode={mode}")
    pw = _pad_width(pad_width, x.ndim)
    if mode == "constant":
        return _man.pad(x, pw, 0 if constant_values is None else constant_values)
    if mode in _PAD_INDEX_MODES:
        return _ix.PadIndexed.apply(x, pad_width=pw, mode=_PAD_INDEX_MODES[mode])
    if mode == "empty":  # NumPy leaves the border undefined; zeros here
        return _man.pad(x, pw, 0)
    if mode in _PAD_VALUE_MODES:
        if x.dtype.kind != "f":  # integers carry no gradient: NumPy's own rounding
            return Tensor(_xp(x).pad(x.data, pw, mode=mode))
        return _pad_from_values(x, pw, mode)
    raise ValueError(f"pad: unknown mode {mode!r}; expected one of constant, edge, reflect, symmetric, wrap, "
                     "circular, linear_ramp, maximum, mean, median, minimum, empty.")


def roll(x, shift, axis=None):
    """Elements shifted cyclically by shift along axis (over the flattened tensor when axis is None)."""
    x = _t(x)
    if axis is None:
        return reshape(_ix.Roll.apply(ravel(x), shift=int(shift), axis=0), x.shape)
    if isinstance(shift, (tuple, list)):
        shift = tuple(int(s) for s in shift)
    else:
        shift = int(shift)
    axis = tuple(axis) if isinstance(axis, (tuple, list)) else axis
    return _ix.Roll.apply(x, shift=shift, axis=axis)


def flip(x, axis=None):
    """Reverses the order of elements along axis (all axes when None)."""
    x = _t(x)
    axes = range(x.ndim) if axis is None else [axis] if isinstance(axis, int) else axis
    axes = {_axis(a, x.ndim) for a in axes}
    return _man.getitem(x, tuple(slice(None, None, -1) if d in axes else slice(None) for d in range(x.ndim)))


def fliplr(x):
    """Reverses axis 1 (left/right)."""
    return flip(x, 1)


def flipud(x):
    """Reverses axis 0 (up/down)."""
    return flip(x, 0)


def rot90(array, k=1, axes=(0, 1)):
    """Rotates by 90 degrees k times in the plane of axes (from the first axis towards the second)."""
    x = _t(array)
    if x.ndim < 2:
        raise ValueError(f"Input array must have at least 2 dimensions. Received: array.ndim={x.ndim}")
    if len(axes) != 2 or _axis(axes[0], x.ndim) == _axis(axes[1], x.ndim):
        raise ValueError(f"Invalid axes: {axes}. Axes must be a tuple of two different dimensions.")
    a, b = _axis(axes[0], x.ndim), _axis(axes[1], x.ndim)
    k %= 4
    if k == 0:
        return x
    if k == 2:
        return flip(x, (a, b))
    perm = list(range(x.ndim))
    perm[a], perm[b] = perm[b], perm[a]
    if k == 1:
        return _man.transpose(flip(x, b), perm)
    return flip(_man.transpose(x, perm), b)


# ------------------------------------------------------------------------------------------ indexing

def get_item(x, key):
    """x[key] (basic slicing, integer arrays and boolean masks); gradient scattered back."""
    x = _t(x)
    if isinstance(key, Tensor):
        key = key.data
    if isinstance(key, list):
        key = np.asarray(key)
    if hasattr(key, "dtype") and key.dtype == bool:
        key = _xp(x).nonzero(key)
    return _man.getitem(x, key)


def _fill_negative(idx, n):
    """Indices with -n <= i < 0 counted from the end (Keras's "fill" index mode)."""
    xp = backend.get_array_module(idx)
    return xp.where(idx < 0, idx + n, idx)


def take(x, indices, axis=None):
    """Elements of x at indices along axis (of the flattened x when None); gradient scattered back
    with additions where indices repeat."""
    x = _t(x)
    if axis is None:
        x, axis = ravel(x), 0
    axis = _axis(axis, x.ndim)
    idx = _t(indices).data.astype(np.int64, copy=False)
    idx = _fill_negative(backend.to_device(idx, _xp(x)), x.shape[axis])
    return _man.getitem(x, (slice(None),) * axis + (idx,))


def take_along_axis(x, indices, axis=None):
    """x gathered at indices along axis, indices broadcasting against x on the other axes (x
    flattened when axis is None). Gradient: xp.add.at back into the gathered positions."""
    x = _t(x)
    if axis is None:
        x, axis = ravel(x), 0
    axis = _axis(axis, x.ndim)
    idx = _t(indices).data.astype(np.int64, copy=False)
    idx = _fill_negative(backend.to_device(idx, _xp(x)), x.shape[axis])
    return _ix.TakeAlongAxis.apply(x, Tensor(idx), axis=axis)


def where(condition, x1=None, x2=None):
    """Elementwise ``x1 if condition else x2``; with neither x1 nor x2, the indices of the nonzero
    entries stacked as (ndim, count) int64 (as Keras's torch backend). The condition carries no
    gradient."""
    if isinstance(x1, Tensor) and isinstance(x2, Tensor) and x1.dtype == x2.dtype:  # the layers' path
        cond = condition.data if isinstance(condition, Tensor) else condition
        if getattr(cond, "dtype", None) == np.bool_ and \
                backend.get_array_module(cond) is backend.get_array_module(x1.data, x2.data):
            return _m.where(cond, x1, x2)
    c = _t(condition)
    cond = c.data.astype(bool, copy=False)
    if x1 is None and x2 is None:
        xp = _xp(c)
        return Tensor(xp.stack(xp.nonzero(cond), axis=0).astype("int64"))
    if x1 is None or x2 is None:
        raise ValueError("where: give both x1 and x2, or neither.")
    a = x1 if isinstance(x1, (bool, int, float)) else _t(x1)
    b = x2 if isinstance(x2, (bool, int, float)) else _t(x2)
    dtype = _result(a, b, narrow=False) if not (isinstance(a, Tensor) and isinstance(b, Tensor)
                                                  and a.dtype == b.dtype) else a.dtype
    a, b = _t(a, dtype), _t(b, dtype)
    return _m.where(Tensor(backend.to_device(cond, _xp(a, b))), _m.cast(a, dtype), _m.cast(b, dtype))


def select(condlist, choicelist, default=0):
    """For each element, the entry of the first choice whose condition holds (default where none)."""
    if len(condlist) != len(choicelist):
        raise ValueError("select: condlist and choicelist must have the same length.")
    out = default
    for cond, choice in reversed(list(zip(condlist, choicelist))):
        out = where(cond, choice, out)
    return out if isinstance(out, Tensor) else _t(out)


def nonzero(x):
    """The indices of x's nonzero entries, one int32 tensor per axis."""
    x = _t(x)
    return tuple(Tensor(i.astype("int32")) for i in _xp(x).nonzero(x.data))


def unravel_index(indices, shape):
    """Flat indices turned into a tuple of coordinate tensors for shape."""
    idx = _t(indices)
    if idx.dtype.kind not in "iub":
        raise TypeError(f"unravel_index: expected integer indices, got {idx.dtype}.")
    dtype = "int32" if idx.dtype in (np.int64, np.bool_) else idx.dtype
    coords = _xp(idx).unravel_index(idx.data.astype(np.int64), tuple(shape))
    return tuple(Tensor(c.astype(dtype)) for c in coords)


# --------------------------------------------------------------------------- sorting and searching

def sort(x, axis=-1):
    """x sorted ascending along axis (flattened when None); the gradient follows the elements."""
    x = _t(x)
    if axis is None:
        x, axis = ravel(x), 0
    return _ix.Sort.apply(x, axis=_axis(axis, x.ndim))


def argsort(x, axis=-1):
    """The int32 indices that sort x along axis (stable; flattened when None)."""
    x = _t(x)
    if axis is None:
        x, axis = ravel(x), 0
    xp = _xp(x)
    kw = {"kind": "stable"} if xp is np else {}
    return Tensor(xp.argsort(x.data, axis=axis, **kw).astype("int32"))


def argpartition(x, kth, axis=-1):
    """int32 indices that partition x along axis: the element at position kth is the one a full
    sort would put there, smaller ones before it and larger ones after."""
    x = _t(x)
    if axis is None:
        x, axis = ravel(x), 0
    return Tensor(_xp(x).argpartition(x.data, kth, axis=axis).astype("int32"))


def searchsorted(sorted_sequence, values, side="left"):
    """int32 insertion points of values into the 1-D ascending sorted_sequence (side 'left' or 'right')."""
    s, v = _t(sorted_sequence), _t(values)
    if s.ndim != 1:
        raise ValueError("`searchsorted` only supports 1-D sorted sequences. "
                         f"Received: sorted_sequence.shape={s.shape}")
    if side not in ("left", "right"):
        raise ValueError(f"searchsorted: side must be 'left' or 'right', got {side!r}.")
    return Tensor(_xp(s).searchsorted(s.data, v.data, side=side).astype("int32"))


def digitize(x, bins):
    """int32 index of the bin of each element: i with bins[i-1] <= x < bins[i] (ascending bins)."""
    x, b = _t(x), _t(bins)
    data = x.data.astype(np.uint8) if x.dtype == bool else x.data
    return Tensor(_xp(x).digitize(data, b.data).astype("int32"))


def isin(x1, x2, assume_unique=False, invert=False):
    """bool: whether each element of x1 is in x2 (the opposite with invert)."""
    a, b = _t(x1), _t(x2)
    return Tensor(_xp(a).isin(a.data, b.data, assume_unique=assume_unique, invert=invert))


def unique(x, sorted=True, return_index=False, return_inverse=False, return_counts=False, axis=None,
           size=None, fill_value=None):
    """The sorted unique elements of x (of its slices along axis), optionally with the first index of
    each, the inverse map and the counts. With size, the result is cut or padded to that length
    (fill_value, default 0; padded counts 0, padded indices 0). No gradient."""
    x = _t(x)
    xp = _xp(x)
    res = xp.unique(x.data, return_index=True, return_inverse=True, return_counts=True, axis=axis)
    values, index, inverse, counts = res
    if axis is None:
        inverse = inverse.reshape(x.shape)
    dim = 0 if axis is None else _axis(axis, x.ndim)
    if size is not None:
        have = values.shape[dim]
        if have >= size:
            values = xp.take(values, xp.arange(size), axis=dim)
            index, counts = index[:size], counts[:size]
        else:
            fill = 0 if fill_value is None else fill_value
            pw = [(0, 0)] * values.ndim
            pw[dim] = (0, size - have)
            values = xp.pad(values, pw, constant_values=fill)
            index = xp.pad(index, (0, size - have))
            counts = xp.pad(counts, (0, size - have))
    out = [Tensor(values)]
    if return_index:
        out.append(Tensor(index.astype("int64")))
    if return_inverse:
        out.append(Tensor(inverse.astype("int64")))
    if return_counts:
        out.append(Tensor(counts.astype("int64")))
    return out[0] if len(out) == 1 else tuple(out)


# ------------------------------------------------------------------------ products and contractions

def _prep2(x1, x2, int8_to=None, narrow=True):
    """x1 and x2 as tensors of their common dtype (Python numbers weak, as in Keras)."""
    a, b = [x if isinstance(x, (bool, int, float)) else _t(x) for x in (x1, x2)]
    res = _result(a, b, int8_to=int8_to, narrow=narrow)
    return _t(a, res), _t(b, res), res


def matmul(x1, x2):
    """Matrix product with NumPy's batching rules (1-D operands as vectors); int8 @ int8 -> int32.
    Gradients: gy x2^T and x1^T gy, summed over broadcast batch axes."""
    a, b = _t(x1), _t(x2)
    if a.dtype == b.dtype and a.dtype.kind == "f":
        return _m.matmul(a, b)  # the layers' path: no casts
    a, b, res = _prep2(a, b, int8_to="int32")
    if res == "bool":
        return _m.cast(_m.matmul(_m.cast(a, "float32"), _m.cast(b, "float32")), "bool")
    return _m.matmul(a, b)


def tensordot(x1, x2, axes=2):
    """Sum over the axes pairs given by axes (an int n: the last n of x1 with the first n of x2; or
    two lists). Done as one matmul over x1 and x2 transposed and reshaped to matrices."""
    a, b, _ = _prep2(x1, x2)
    if isinstance(axes, int):
        ax_a, ax_b = list(range(a.ndim - axes, a.ndim)), list(range(axes))
    else:
        ax_a, ax_b = axes
        ax_a = [ax_a] if isinstance(ax_a, int) else list(ax_a)
        ax_b = [ax_b] if isinstance(ax_b, int) else list(ax_b)
    ax_a = [_axis(i, a.ndim) for i in ax_a]
    ax_b = [_axis(i, b.ndim) for i in ax_b]
    if len(ax_a) != len(ax_b) or any(a.shape[i] != b.shape[j] for i, j in zip(ax_a, ax_b)):
        raise ValueError(f"tensordot: axes {axes} do not match shapes {a.shape} and {b.shape}.")
    free_a = [i for i in range(a.ndim) if i not in ax_a]
    free_b = [j for j in range(b.ndim) if j not in ax_b]
    k = int(np.prod([a.shape[i] for i in ax_a]))
    out_shape = tuple(a.shape[i] for i in free_a) + tuple(b.shape[j] for j in free_b)
    a2 = _man.reshape(_man.transpose(a, free_a + ax_a), (-1, k))
    b2 = _man.reshape(_man.transpose(b, ax_b + free_b), (k, -1))
    if str(a2.dtype) == "bool":
        y = _m.cast(_m.matmul(_m.cast(a2, "float32"), _m.cast(b2, "float32")), "bool")
    else:
        y = _m.matmul(a2, b2)
    return _man.reshape(y, out_shape)


def dot(x1, x2):
    """NumPy's dot: a product with a scalar, the inner product of vectors, the matrix product of
    matrices, and for N-D operands the sum over x1's last axis and x2's second-to-last."""
    a, b, _ = _prep2(x1, x2)
    if a.ndim == 0 or b.ndim == 0:
        return _m.multiply(a, b)
    if b.ndim <= 2:
        return tensordot(a, b, ([a.ndim - 1], [0]))
    return tensordot(a, b, ([a.ndim - 1], [b.ndim - 2]))


def vdot(x1, x2):
    """The dot product of x1 and x2 flattened."""
    return dot(ravel(x1), ravel(x2))


def inner(x1, x2):
    """Sum of products over the last axes of x1 and x2 (a plain product when either is a scalar)."""
    a, b, _ = _prep2(x1, x2)
    if a.ndim == 0 or b.ndim == 0:
        return _m.multiply(a, b)
    return tensordot(a, b, ([a.ndim - 1], [b.ndim - 1]))


def outer(x1, x2):
    """The outer product of x1 and x2 flattened: out[i, j] = x1[i] * x2[j]."""
    a, b, _ = _prep2(x1, x2, narrow=False)
    return _m.multiply(reshape(a, (-1, 1)), reshape(b, (1, -1)))


def kron(x1, x2):
    """The Kronecker product: blocks x1[i, j, ...] * x2."""
    a, b, _ = _prep2(x1, x2, narrow=False)
    nd = builtins.max(a.ndim, b.ndim)
    sa = (1,) * (nd - a.ndim) + a.shape
    sb = (1,) * (nd - b.ndim) + b.shape
    # a with a 1 after each axis times b with a 1 before each: (a0, b0, a1, b1, ...) then merged
    ea = reshape(a, tuple(itertools.chain.from_iterable((n, 1) for n in sa)))
    eb = reshape(b, tuple(itertools.chain.from_iterable((1, n) for n in sb)))
    return reshape(_m.multiply(ea, eb), tuple(p * q for p, q in zip(sa, sb)))


def cross(x1, x2, axisa=-1, axisb=-1, axisc=-1, axis=None):
    """The cross product of 3-vectors (or 2-vectors, giving the z component) along the given axes,
    broadcasting over the others; axis, when given, sets all three."""
    a, b, res = _prep2(x1, x2)
    if axis is not None:
        axisa = axisb = axisc = axis
    a, b = moveaxis(a, axisa, -1), moveaxis(b, axisb, -1)
    na, nb = a.shape[-1], b.shape[-1]
    if na not in (2, 3) or nb not in (2, 3):
        raise ValueError(f"cross: vectors must have 2 or 3 components, got {na} and {nb}.")

    def comp(v, i, n):
        return _man.getitem(v, (Ellipsis, i)) if i < n else None

    a0, a1, a2 = comp(a, 0, na), comp(a, 1, na), comp(a, 2, na)
    b0, b1, b2 = comp(b, 0, nb), comp(b, 1, nb), comp(b, 2, nb)
    mul = _m.multiply
    z = _m.subtract(mul(a0, b1), mul(a1, b0))
    if na == 2 and nb == 2:
        return z
    x = mul(a1, b2) if a2 is None else (mul(_m.negative(a2), b1) if b2 is None else
                                          _m.subtract(mul(a1, b2), mul(a2, b1)))
    y = mul(_m.negative(a0), b2) if a2 is None else (mul(a2, b0) if b2 is None else
                                                      _m.subtract(mul(a2, b0), mul(a0, b2)))
    out = stack(_man.broadcast_to(c, _broadcast_shape(x, y, z)) for c in (x, y, z))
    return moveaxis(out, 0, axisc)


def _broadcast_shape(*ts):
    return tuple(np.broadcast_shapes(*[t.shape for t in ts]))


def einsum(subscripts, *operands, **kwargs):
    """Einstein summation over the operands (NumPy's subscripts, ellipsis included). All-int8
    operands give int32. Gradient of each operand: an einsum of the output gradient with the others."""
    ts = [_t(o) for o in operands]
    dtype = _result(*ts, int8_to="int32", narrow=False)
    ts = [_m.cast(t, dtype) for t in ts]
    if np.dtype(dtype).kind != "f":
        xp = _xp(*ts)
        ins, out, _ = _ix._expand_einsum(subscripts, [t.shape for t in ts])
        return Tensor(xp.einsum(",".join(ins) + "->" + out, *[t.data for t in ts]).astype(dtype))
    return _ix.Einsum.apply(*ts, subscripts=subscripts)


# ------------------------------------------------------------------------------- diagonals, triangles

def diagonal(x, offset=0, axis1=0, axis2=1):
    """The offset-th diagonal over axes axis1 and axis2, as a last axis after the remaining ones."""
    x = _t(x)
    a1, a2 = _axis(axis1, x.ndim), _axis(axis2, x.ndim)
    if a1 == a2:
        raise ValueError("diagonal: axis1 and axis2 must differ.")
    m = moveaxis(x, (a1, a2), (-2, -1))
    r, c = m.shape[-2], m.shape[-1]
    n = builtins.max(0, builtins.min(r + builtins.min(offset, 0), c - builtins.max(offset, 0)))
    xp = _xp(x)
    rows = xp.arange(n) + builtins.max(-offset, 0)
    cols = xp.arange(n) + builtins.max(offset, 0)
    return _man.getitem(m, (Ellipsis, rows, cols))


def trace(x, offset=0, axis1=0, axis2=1):
    """The sum along the offset-th diagonal (bool and small ints sum in int32)."""
    x = _t(x)
    dtype = "int32" if str(x.dtype) in ("bool", "int8", "int16", "uint8") else x.dtype
    d = diagonal(x, offset, axis1, axis2)
    if d.dtype.kind not in "fc":
        return Tensor(d.data.sum(axis=-1, dtype=dtype))
    return _m.cast(_m.sum(d, axis=-1), dtype)


def diag(x, k=0):
    """For a vector, the square matrix with it on the k-th diagonal; for a matrix, its k-th diagonal."""
    x = _t(x)
    if x.ndim == 1:
        return _ix.DiagEmbed.apply(x, k=int(k))
    if x.ndim == 2:
        return diagonal(x, k)
    raise ValueError(f"diag: expected a 1-D or 2-D tensor, got shape {x.shape}.")


def diagflat(x, k=0):
    """The square matrix with x flattened on its k-th diagonal."""
    return _ix.DiagEmbed.apply(ravel(x), k=int(k))


def _tri_mask(x, k, lower):
    if x.ndim < 2:
        raise ValueError(f"{'tril' if lower else 'triu'} works on the last two axes of an array of at least 2 "
                         f"dimensions; received shape {tuple(x.shape)}.")
    xp = _xp(x)
    r, c = x.shape[-2], x.shape[-1]
    diff = xp.arange(c)[None, :] - xp.arange(r)[:, None]
    return Tensor(diff <= k if lower else diff >= k)


def tril(x, k=0):
    """x with the entries above the k-th diagonal zeroed (over the last two axes)."""
    x = _t(x)
    return _m.where(_tri_mask(x, k, True), x, _const(x, 0))


def triu(x, k=0):
    """x with the entries below the k-th diagonal zeroed (over the last two axes)."""
    x = _t(x)
    return _m.where(_tri_mask(x, k, False), x, _const(x, 0))


# ---------------------------------------------------------------------------------------- vectorize

_DIMS = r"\w+"
_CORE = rf"(?:{_DIMS}(?:,{_DIMS})*)?"
_ARGS = rf"\({_CORE}\)(?:,\({_CORE}\))*"
_SIGNATURE = re.compile(rf"^{_ARGS}->{_ARGS}$")


def _parse_signature(signature):
    sig = signature.replace(" ", "")
    if not _SIGNATURE.match(sig):
        raise ValueError(f"vectorize: not a valid gufunc signature: {signature!r}")
    ins, outs = sig.split("->")
    parse = lambda part: [tuple(re.findall(_DIMS, arg)) for arg in re.findall(rf"\({_CORE}\)", part)]  # noqa: E731
    return parse(ins), parse(outs)


def vectorize(pyfunc, *, excluded=None, signature=None):
    """pyfunc (written for single elements, or for core dimensions given by a gufunc signature such
    as "(n),(n)->()") applied over the broadcast leading axes of its arguments, the results stacked.

    pyfunc runs once per broadcast position (lamina has no vmap); the result is differentiable
    through pyfunc's own ops."""
    excluded = set(excluded or ())
    core_in, core_out = _parse_signature(signature) if signature is not None else (None, None)

    def wrapped(*args, **kwargs):
        pos = [i for i in range(len(args)) if i not in excluded and args[i] is not None]
        tensors = {i: _t(args[i]) for i in pos}
        cores = core_in if core_in is not None else [()] * len(pos)
        if len(cores) != len(pos):
            raise ValueError(f"vectorize: the signature has {len(cores)} inputs, got {len(pos)} arguments.")
        loop_shapes = [tensors[i].shape[:tensors[i].ndim - len(c)] for i, c in zip(pos, cores)]
        batch = tuple(np.broadcast_shapes(*loop_shapes)) if loop_shapes else ()
        bt = {}
        for i, c in zip(pos, cores):
            t = tensors[i]
            bt[i] = _man.broadcast_to(t, batch + t.shape[t.ndim - len(c):]) if t.shape[:t.ndim - len(c)] != batch \
                else t
        results = []
        for where_ in itertools.product(*[range(n) for n in batch]):
            call = list(args)
            for i in pos:
                call[i] = _man.getitem(bt[i], where_) if where_ else bt[i]
            results.append(pyfunc(*call, **kwargs))
        if not batch:
            return results[0]
        if isinstance(results[0], tuple):
            return tuple(reshape(stack([r[k] for r in results]), batch + tuple(_t(results[0][k]).shape))
                         for k in range(len(results[0])))
        return reshape(stack(results), batch + tuple(_t(results[0]).shape))

    return wrapped
