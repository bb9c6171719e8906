"""The functions of ``keras.ops`` outside its numpy/nn/linalg/image namespaces: conversion and dtypes,
control flow, segment and scatter ops, top_k, FFT and STFT, special functions.

Control flow runs eagerly, with the semantics of Keras's eager backends: lamina records every op a
loop body runs, so gradients flow through ``cond``, ``while_loop``, ``scan`` ... like through plain code.
"""
import builtins
import functools
import inspect
import math
import re

import numpy as np

from .. import backend
from .. import dtypes as _dt
from .. import tree
from ..tensor import Tensor, Variable, no_grad
from . import math as _m
from . import manipulation as _s
from . import special as _k

__all__ = [
    "associative_scan", "cast", "cdist", "cond", "convert_to_numpy", "convert_to_tensor", "custom_gradient",
    "dtype", "erf", "erfc", "erfinv", "extract_sequences", "fft", "fft2", "fori_loop", "ifft2", "in_top_k",
    "irfft", "is_tensor", "istft", "logdet", "logsumexp", "map", "rearrange", "rfft", "rsqrt",
    "saturate_cast", "scan", "scatter", "scatter_update", "segment_max", "segment_min", "segment_prod",
    "segment_sum", "shape", "slice", "slice_update", "stft", "stop_gradient", "switch", "top_k", "unstack",
    "vectorized_map", "view_as_complex", "view_as_real", "while_loop",
]


# ----------------------------------------------------------------------------- conversion and dtypes
def _np_dtype(name):
    if name == "string":   # Keras's string dtype (strings reach StringLookup, TextVectorization, FeatureSpace)
        return np.dtype(str)
    return np.dtype("float32" if name == "bfloat16" else name)


def convert_to_tensor(x, dtype=None, sparse=None, ragged=None):
    """A lamina Tensor from a Tensor, array, Python number or (nested) list, with Keras's dtypes.

    Python floats become floatx, Python ints int32 (int64 beyond its range), bools bool; arrays keep
    their dtype; a list takes the promoted dtype of its items. A Tensor is returned as it is (with its
    graph), cast when ``dtype`` differs. ``sparse``/``ragged`` are not supported.
    """
    if sparse:
        raise ValueError("`sparse=True` is not supported by lamina.")
    if ragged:
        raise ValueError("`ragged=True` is not supported by lamina.")
    if isinstance(x, Tensor):
        return x if dtype is None else cast(x, dtype)
    if dtype is not None:
        dtype = _dt.standardize_dtype(dtype)
    if dtype == "string" or (dtype is None and _is_text(x)):
        return _text_tensor(x)
    if isinstance(x, (bool, int, float, complex)) and not isinstance(x, np.generic):
        if dtype is None:
            if isinstance(x, bool):
                dtype = "bool"
            elif isinstance(x, int):
                dtype = "int64" if x < -(2 ** 31) or x >= 2 ** 31 else "int32"
            elif isinstance(x, float):
                dtype = backend.floatx()
            else:
                dtype = "complex64"
        return Tensor(backend.to_device(np.asarray(x, _np_dtype(dtype))))
    if isinstance(x, (list, tuple)):
        if any(isinstance(e, Tensor) for e in x):
            return _s.stack([convert_to_tensor(e, dtype) for e in x])
        if dtype is None:
            dtype = _dt.result_type(*[getattr(e, "dtype", type(e)) for e in tree.flatten(list(x))])
        return Tensor(backend.to_device(np.asarray(x, _np_dtype(dtype))))
    if backend.is_cupy_array(x):
        arr = x
    else:
        arr = np.asarray(x)
        if isinstance(x, np.floating) and dtype is None:  # NumPy float scalars are Python floats
            dtype = backend.floatx()
        arr = backend.to_device(arr)
    if dtype is not None and arr.dtype != _np_dtype(dtype):
        arr = arr.astype(_np_dtype(dtype))
    return Tensor(arr)


def _is_text(x):
    """True for str/bytes, a (nested) list of them, or a NumPy array of strings."""
    if isinstance(x, (str, bytes)):
        return True
    if isinstance(x, (list, tuple)):
        items = tree.flatten(list(x))
        return bool(items) and all(isinstance(e, (str, bytes)) for e in items)
    if isinstance(x, np.ndarray):
        if x.dtype.kind in "US":
            return True
        return x.dtype == object and x.size > 0 and all(isinstance(e, (str, bytes)) for e in x.flat)
    return False


def _text_tensor(x):
    """Strings as lamina holds Keras's string tensors (the inputs of text models): a NumPy object array
    in a Tensor, as ``Input(dtype="string")`` and TextVectorization take them."""
    if not _is_text(x):
        raise ValueError(f"convert_to_tensor(dtype='string') expects str or bytes values (or nested lists or "
                         f"arrays of them). Received: {type(x).__name__}")
    return Tensor(np.asarray(np.asarray(x), dtype=object))


_t = convert_to_tensor


def convert_to_numpy(x):
    """A NumPy array (copied from the GPU when needed)."""
    if isinstance(x, (list, tuple)):
        return np.array([convert_to_numpy(e) for e in x])
    if isinstance(x, Tensor):
        return x.numpy()
    return backend.to_numpy(x)


def is_tensor(x):
    """True for a lamina Tensor (a Variable too), False for arrays and Python values."""
    return isinstance(x, Tensor)


def shape(x):
    """The static shape as a tuple of ints."""
    if isinstance(x, Tensor) or hasattr(x, "shape"):
        return tuple(None if n is None else int(n) for n in x.shape)  # None: a symbolic tensor's unknown size
    return tuple(_t(x).shape)


def dtype(x):
    """The Keras dtype name of x ('float32', 'int32', ...)."""
    if hasattr(x, "dtype") and not isinstance(x, np.generic):
        return _dt.standardize_dtype(x.dtype)
    return _dt.standardize_dtype(_t(x).dtype)


def cast(x, dtype):
    """x in another dtype; float -> float keeps the gradient (cast back), other casts are constants."""
    name = _dt.standardize_dtype(dtype)
    x = x if isinstance(x, Tensor) else _t(x)
    target = _np_dtype(name)
    if x.dtype == target:
        return x
    if x.dtype.kind == "f" and target.kind == "f":
        return _m.cast(x, target)
    return Tensor(x.data.astype(target))


def _dtype_range(name):
    if name == "bool":
        return 0, 1
    if name in _dt.INTS:
        info = np.iinfo(name)
    else:
        info = np.finfo(_np_dtype(name))
    return info.min, info.max


def saturate_cast(x, dtype):
    """Cast with values clipped to the target dtype's range first (no wrap-around, no inf).

    The limits are nudged inside the range where the input dtype cannot hold them exactly.
    """
    x = _t(x)
    name = _dt.standardize_dtype(dtype)
    in_name = _dt.standardize_dtype(x.dtype)
    in_min, in_max = _dtype_range(in_name)
    out_min, out_max = _dtype_range(name)
    in_np = _np_dtype(in_name)
    lo = np.asarray(builtins.max(in_min, out_min)).astype(in_np)
    if lo < out_min:
        lo = np.nextafter(lo, 0, dtype=in_np) if in_np.kind == "f" else lo + 1
    hi = np.asarray(builtins.min(in_max, out_max)).astype(in_np)
    if hi > out_max:
        hi = np.nextafter(hi, 0, dtype=in_np) if in_np.kind == "f" else hi - 1
    if x.dtype.kind == "f":
        x = _m.clip(x, lo.item(), hi.item())
    else:
        xp = backend.get_array_module(x.data)
        x = Tensor(xp.clip(x.data, lo, hi))
    return cast(x, name)


def stop_gradient(variable):
    """The same values cut from the graph: no gradient flows back through it."""
    x = variable if isinstance(variable, Tensor) else _t(variable)
    return Tensor(x.data)


# ----------------------------------------------------------------------------- control flow
def cond(pred, true_fn, false_fn):
    """``true_fn()`` if pred else ``false_fn()`` (pred a bool or a one-element tensor)."""
    return true_fn() if bool(pred) else false_fn()


def switch(index, branches, *operands):
    """``branches[index](*operands)``, index clipped to [0, len(branches) - 1] like Keras."""
    i = int(_t(index).item())
    i = builtins.min(builtins.max(i, 0), len(branches) - 1)
    return branches[i](*operands)


def while_loop(cond, body, loop_vars, maximum_iterations=None):
    """Repeat ``loop_vars = body(*loop_vars)`` while ``cond(*loop_vars)`` (and fewer than
    maximum_iterations times). A single loop variable may be given bare; its leaves become tensors."""
    is_tuple = isinstance(loop_vars, (tuple, list))
    state = tuple(loop_vars) if is_tuple else (loop_vars,)
    state = tree.map_structure(_t, state)
    it = 0
    while bool(cond(*state)) and (maximum_iterations is None or it < maximum_iterations):
        state = body(*state)
        state = tuple(state) if isinstance(state, (tuple, list)) else (state,)
        it += 1
    return state if is_tuple else state[0]


def fori_loop(lower, upper, body_fun, init_val):
    """``val = body_fun(i, val)`` for i in range(lower, upper); i is a Python int."""
    val = init_val
    for i in range(int(lower), int(upper)):
        val = body_fun(i, val)
    return val


def _leaf_len(x):
    return shape(x)[0]


def scan(f, init, xs=None, length=None, reverse=False, unroll=1):
    """``carry, y = f(carry, x)`` over the leading axis of xs (a nested structure, or ``length`` steps
    of x=None); returns the last carry and the ys stacked (reversed scan: last element first,
    results in input order). ``unroll`` is accepted and ignored (lamina runs eagerly)."""
    if not callable(f):
        raise TypeError(f"`f` should be a callable. Received: f={f}")
    if not isinstance(unroll, bool) and (not isinstance(unroll, int) or unroll < 1):
        raise ValueError(f"`unroll` must be an positive integer or boolean. Received: unroll={unroll}")
    if xs is None and length is None:
        raise ValueError("Got no `xs` to scan over and `length` not provided.")
    xs_flat = [] if xs is None else [_t(e) for e in tree.flatten(xs)]
    n = int(length) if length is not None else _leaf_len(xs_flat[0])
    init_flat = [_t(e) for e in tree.flatten(init)]
    carry = tree.pack_sequence_as(init, init_flat) if tree.is_nested(init) else init_flat[0]
    ys = []
    order = range(n - 1, -1, -1) if reverse else range(n)
    for i in order:
        piece = [e[i] for e in xs_flat]
        x = (tree.pack_sequence_as(xs, piece) if tree.is_nested(xs) else piece[0]) if piece else None
        carry, y = f(carry, x)
        ys.append(y if y is not None else [Tensor(backend.get_array_module(e.data).zeros_like(e.data))
                                           for e in init_flat])
    if reverse:
        ys = ys[::-1]
    if not ys:
        return carry, None
    stacked = tree.map_structure(lambda *leaves: _s.stack([_t(v) for v in leaves]), *ys)
    return carry, stacked


def map(f, xs):  # noqa: A001 - Keras's name
    """``f`` applied to each slice of xs (a nested structure) along its leading axis, results stacked."""
    _, ys = scan(lambda carry, x: (carry, f(x)), (), xs)
    return ys


def vectorized_map(function, elements):
    """``function`` applied to each slice of elements along the leading axis, results stacked.

    lamina has no vmap: the slices run one after the other (same results, same gradients)."""
    return map(function, elements)


def _take(x, start, stop, axis):
    idx = [builtins.slice(None)] * x.ndim
    idx[axis] = builtins.slice(start, stop)
    return x[tuple(idx)]


def associative_scan(f, elems, reverse=False, axis=0):
    """Inclusive scan with an associative ``f`` along ``axis``: out[i] = f(out[i-1], elems[i]).

    Runs in ceil(log2 n) calls of f on whole slices (Hillis-Steele), so f must work elementwise on
    batched inputs, as Keras requires. elems may be a nested structure of same-length tensors."""
    if not callable(f):
        raise TypeError(f"`f` should be a callable. Received: f={f}")
    flat = [_t(e) for e in tree.flatten(elems)]
    n = shape(flat[0])[axis]
    if any(shape(e)[axis] != n for e in flat[1:]):
        raise ValueError("Array inputs to associative_scan must have the same first dimension. "
                         f"(saw: {[e.shape for e in flat]})")
    ax = [axis % e.ndim for e in flat]
    if reverse:
        flat = [_flip(e, a) for e, a in zip(flat, ax)]
    d = 1
    while d < n:
        a = tree.pack_sequence_as(elems, [_take(e, 0, n - d, k) for e, k in zip(flat, ax)])
        b = tree.pack_sequence_as(elems, [_take(e, d, n, k) for e, k in zip(flat, ax)])
        c = [_t(v) for v in tree.flatten(f(a, b))]
        flat = [_s.concatenate([_take(e, 0, d, k), v], axis=k) for e, v, k in zip(flat, c, ax)]
        d *= 2
    if reverse:
        flat = [_flip(e, a) for e, a in zip(flat, ax)]
    return tree.pack_sequence_as(elems, flat)


def _flip(x, axis):
    idx = [builtins.slice(None)] * x.ndim
    idx[axis] = builtins.slice(None, None, -1)
    return x[tuple(idx)]


def custom_gradient(f):
    """Decorator: ``f(*args)`` returns ``(output, grad_fn)`` and backward uses ``grad_fn``.

    ``grad_fn`` is called the way Keras's torch backend calls it, ``grad_fn(*args, upstream=g)``, when
    it takes ``*args`` and an ``upstream`` keyword (Keras's documented form
    ``def grad(*args, upstream=None)``); otherwise as on JAX/TensorFlow, ``grad_fn(g)``. It returns
    one gradient per positional argument (a single one may be bare). f runs without recording, so
    only grad_fn decides the gradient. The output is one tensor.
    """
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        args = tuple(a if isinstance(a, Tensor) or not _is_array_like(a) else _t(a) for a in args)
        with no_grad():
            out, grad_fn = f(*args, **kwargs)
        out = _t(out)
        positions = [i for i, a in enumerate(args) if isinstance(a, Tensor)]
        tensors = [args[i] for i in positions]
        torch_style = _takes_upstream_keyword(grad_fn)
        consts = tuple(Tensor(a.data) if isinstance(a, Tensor) else a for a in args)

        def grad_call(gy):
            with no_grad():
                up = Tensor(gy)
                grads = grad_fn(*consts, upstream=up) if torch_style else grad_fn(up)
            if not isinstance(grads, (tuple, list)):
                grads = (grads,)
            grads = list(grads) + [None] * (len(args) - len(grads))
            result = []
            for i, t in zip(positions, tensors):
                g = grads[i]
                if g is None:
                    result.append(None)
                    continue
                g = g.data if isinstance(g, Tensor) else backend.get_array_module(gy).asarray(g)
                result.append(unbroadcast_to(g, t.shape))
            return result

        if not tensors:
            return out
        return _k.CustomGradient.apply(*tensors, output=out.data, grad_call=grad_call)

    return wrapper


def _is_array_like(a):
    return isinstance(a, np.ndarray) or backend.is_cupy_array(a)


def unbroadcast_to(g, shape_):
    g = g if tuple(g.shape) == tuple(shape_) else _m.unbroadcast(g, shape_)
    return g


def _takes_upstream_keyword(fn):
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    kinds = {p.kind for p in params}
    has_var = inspect.Parameter.VAR_POSITIONAL in kinds
    has_kw = any(p.name == "upstream" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) for p in params) \
        or inspect.Parameter.VAR_KEYWORD in kinds
    return has_var and has_kw


# ----------------------------------------------------------------------------- segments, scatter, slices
def _segment(kind, data, segment_ids, num_segments):
    data = _t(data)
    ids = _t(segment_ids)
    if num_segments is None:
        num_segments = int(ids.data.max()) + 1 if ids.size else 0
    if ids.ndim != 1 or ids.shape[0] != data.shape[0]:
        raise ValueError(f"segment_ids must be 1-D with one id per row of data: got {ids.shape} "
                         f"for data of shape {data.shape}.")
    ids = backend.to_device(ids.data, backend.get_array_module(data.data))  # the ids follow the data's device
    return _k.SegmentReduce.apply(data, Tensor(ids), num_segments=int(num_segments), kind=kind)


def segment_sum(data, segment_ids, num_segments=None, sorted=False):  # noqa: A002
    """Sum of the rows of data that share a segment id; out-of-range ids are dropped."""
    return _segment("sum", data, segment_ids, num_segments)


def segment_max(data, segment_ids, num_segments=None, sorted=False):  # noqa: A002
    """Max of the rows of data per segment id (-inf for an empty segment); ties share the gradient."""
    return _segment("max", data, segment_ids, num_segments)


def segment_min(data, segment_ids, num_segments=None, sorted=False):  # noqa: A002
    """Min of the rows of data per segment id (+inf for an empty segment); ties share the gradient."""
    return _segment("min", data, segment_ids, num_segments)


def segment_prod(data, segment_ids, num_segments=None, sorted=False):  # noqa: A002
    """Product of the rows of data per segment id (1 for an empty segment)."""
    return _segment("prod", data, segment_ids, num_segments)


def _int_array(x):
    a = x.data if isinstance(x, Tensor) else x
    if backend.is_cupy_array(a):
        return a.astype(np.int64)
    return np.asarray(a, dtype=np.int64)


def scatter(indices, values, shape):
    """zeros(shape) with ``values`` added at ``indices`` (N, k) (duplicates add up).

    Backward: the values get the gradient gathered at their indices."""
    idx = _int_array(indices)
    return _k.Scatter.apply(_t(values), indices=idx, shape=tuple(int(n) for n in shape))


def scatter_update(inputs, indices, updates, reduction=None):
    """inputs with the entries (or slices) at indices (N, k) set to updates; with ``reduction`` 'add',
    'max', 'min' or 'mul' they are combined instead. Backward: replaced entries give inputs no gradient."""
    x = _t(inputs)
    u = cast(_t(updates), _dt.standardize_dtype(x.dtype))
    return _k.ScatterUpdate.apply(x, u, indices=_int_array(indices), reduction=reduction)


def _ints(v):
    if isinstance(v, Tensor):
        v = v.numpy()
    return [int(i) for i in np.asarray(v).reshape(-1)]


def slice(inputs, start_indices, shape):  # noqa: A001 - Keras's name
    """The block of inputs that starts at start_indices and has the given shape."""
    x = _t(inputs)
    idx = tuple(builtins.slice(s, s + n) for s, n in zip(_ints(start_indices), _ints(shape)))
    return x[idx]


def slice_update(inputs, start_indices, updates):
    """inputs with the block at start_indices replaced by updates (differentiable in both)."""
    x = _t(inputs)
    u = cast(_t(updates), _dt.standardize_dtype(x.dtype))
    return _k.SliceUpdate.apply(x, u, starts=tuple(_ints(start_indices)))


def unstack(x, num=None, axis=0):
    """The slices of x along axis, as a list of tensors."""
    x = _t(x)
    axis = _m.axis_index(axis, x.ndim)
    n = x.shape[axis]
    if num is not None and num != n:
        raise ValueError(f"unstack: num={num} but axis {axis} has {n} entries.")
    lead = (builtins.slice(None),) * axis
    return [x[lead + (i,)] for i in range(n)]


def top_k(x, k, sorted=True):  # noqa: A002
    """(values, indices) of the k largest entries along the last axis, largest first.

    Values are differentiable (the gradient returns to the chosen positions); indices are int64, as
    on Keras's torch backend. Results are always sorted."""
    x = _t(x)
    k = int(k)
    if x.ndim == 0:
        raise ValueError("top_k: the input must have at least one axis (its last is searched); received a 0-d value.")
    if not 0 <= k <= x.shape[-1]:
        raise ValueError(f"top_k: k={k} is out of range for a last axis of {x.shape[-1]}.")
    sink = {}
    values = _k.TopK.apply(x, k=k, sink=sink)
    return values, Tensor(sink["indices"])


def in_top_k(targets, predictions, k):
    """Whether each target's prediction is among the k largest of its row (ties count as in)."""
    p = _t(predictions).data
    xp = backend.get_array_module(p)
    t = xp.asarray(_int_array(targets))
    k = int(k)
    if k <= 0:
        return Tensor(xp.zeros(p.shape[0], bool))
    kth = -xp.partition(-p, builtins.min(k, p.shape[-1]) - 1, axis=-1)[:, builtins.min(k, p.shape[-1]) - 1]
    target_vals = xp.take_along_axis(p, t[:, None], axis=-1)[:, 0]
    return Tensor(target_vals >= kth)


# ----------------------------------------------------------------------------- math
def _float_input(x):
    x = _t(x)
    if x.dtype.kind != "f":
        x = cast(x, _dt.result_type(_dt.standardize_dtype(x.dtype), float))
    return x


def logsumexp(x, axis=None, keepdims=False):
    """log(sum(exp(x), axis)), computed stably; gradient softmax(x)."""
    return _k.LogSumExp.apply(_float_input(x), axis=axis, keepdims=keepdims)


def rsqrt(x):
    """1 / sqrt(x); gradient -x^(-3/2) / 2."""
    return _k.Rsqrt.apply(_float_input(x))


def erf(x):
    """The error function 2/sqrt(pi) int_0^x exp(-t^2) dt; gradient 2/sqrt(pi) exp(-x^2)."""
    return _k.Erf.apply(_float_input(x))


def erfc(x):
    """The complementary error function 1 - erf(x), accurate in the tail."""
    return _k.Erfc.apply(_float_input(x))


def erfinv(x):
    """The inverse error function on (-1, 1) (+-inf at +-1, nan outside); gradient sqrt(pi)/2 exp(erfinv(x)^2)."""
    return _k.Erfinv.apply(_float_input(x))


def logdet(x):
    """log(det(x)) of square matrices (batched); nan for a negative determinant; gradient inv(x)^T."""
    return _k.LogDet.apply(_float_input(x))


def cdist(x, y):
    """Euclidean distances between the rows of x (..., n, d) and y (..., m, d): (..., n, m)."""
    x, y = _float_input(x), _float_input(y)
    if x.ndim < 2 or y.ndim < 2:
        raise ValueError("`cdist` inputs must have rank >= 2")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError("Last dimension of inputs to `cdist` must match")
    dt = x.dtype if x.dtype == y.dtype else _dt.result_type(x.dtype, y.dtype)
    return _k.CDist.apply(cast(x, dt), cast(y, dt))


def extract_sequences(x, sequence_length, sequence_stride):
    """Frames of the last axis: (..., T) -> (..., 1 + (T - length) // stride, length)."""
    x = _t(x)
    n = 1 + (x.shape[-1] - sequence_length) // sequence_stride
    xp = backend.get_array_module(x.data)
    idx = xp.arange(builtins.max(n, 0))[:, None] * sequence_stride + xp.arange(sequence_length)[None, :]
    return _s.getitem(x, (Ellipsis, idx))


_GROUP = re.compile(r"\([^)]*\)|\S+")


def _parse_side(side):
    groups = []
    for tok in _GROUP.findall(side.strip()):
        names = tok[1:-1].split() if tok.startswith("(") else [tok]
        groups.append(names)
    return groups


def rearrange(tensor, pattern, **axes_lengths):
    """Axes rearranged einops-style: ``"b (h w) c -> b h w c"``, ``"a b c -> c (a b)"``.

    Names are axes; parentheses group axes into one (split on the left, merged on the right); sizes
    that a split cannot infer come as keyword arguments (``h=4``)."""
    x = _t(tensor)
    if "->" not in pattern:
        raise ValueError(f"rearrange: the pattern needs '->', got {pattern!r}.")
    left, right = (_parse_side(s) for s in pattern.split("->"))
    if len(left) != x.ndim:
        raise ValueError(f"rearrange: the pattern's left side has {len(left)} axes, the tensor {x.ndim}.")
    sizes = dict(axes_lengths)
    for group, dim in zip(left, x.shape):
        unknown = [a for a in group if a not in sizes]
        known = math.prod(sizes[a] for a in group if a in sizes)
        if len(unknown) > 1:
            raise ValueError(f"rearrange: cannot infer the sizes of {unknown} in {group}; give them as keywords.")
        if unknown:
            sizes[unknown[0]] = dim // known
        if math.prod(sizes[a] for a in group) != dim:
            raise ValueError(f"rearrange: axes {group} of sizes {[sizes[a] for a in group]} do not make {dim}.")
    flat_left = [a for g in left for a in g]
    flat_right = [a for g in right for a in g]
    if sorted(flat_left) != sorted(flat_right):
        raise ValueError(f"rearrange: both sides must name the same axes: {flat_left} against {flat_right}.")
    y = _s.reshape(x, [sizes[a] for a in flat_left])
    perm = [flat_left.index(a) for a in flat_right]
    if perm != list(range(len(perm))):
        y = _s.transpose(y, perm)
    return _s.reshape(y, [math.prod(sizes[a] for a in g) for g in right])


# ----------------------------------------------------------------------------- FFT and STFT
def _complex_pair(x):
    if not isinstance(x, (tuple, list)) or len(x) != 2:
        raise ValueError("Input `x` should be a tuple of two tensors - real and imaginary. "
                         f"Received: x={x}")
    re_, im = _t(x[0]), _t(x[1])
    if re_.shape != im.shape:
        raise ValueError("Both the real and imaginary parts should have the same shape. "
                         f"Received: x[0].shape = {re_.shape}, x[1].shape = {im.shape}")
    if re_.dtype.kind != "f" or im.dtype.kind != "f":
        raise ValueError(f"At least one tensor in input `x` is not of type float. Received: x={x}.")
    if re_.dtype != im.dtype:
        dt = _dt.result_type(re_.dtype, im.dtype)
        re_, im = cast(re_, dt), cast(im, dt)
    return re_, im


def fft(x):
    """Discrete Fourier transform along the last axis of (real, imag); returns (real, imag)."""
    return _k.ComplexFFT.apply(*_complex_pair(x), kind="fft")


def fft2(x):
    """2-D discrete Fourier transform over the last two axes of (real, imag); returns (real, imag)."""
    return _k.ComplexFFT.apply(*_complex_pair(x), kind="fft2")


def ifft2(x):
    """Inverse 2-D discrete Fourier transform over the last two axes of (real, imag)."""
    return _k.ComplexFFT.apply(*_complex_pair(x), kind="ifft2")


def rfft(x, fft_length=None):
    """Fourier transform of a real signal along the last axis: (real, imag) of fft_length//2 + 1 bins."""
    x = _t(x)
    if x.dtype.kind != "f":
        x = cast(x, backend.floatx())
    return _k.RFFT.apply(x, fft_length=fft_length)


def irfft(x, fft_length=None):
    """Inverse of rfft: a real signal of fft_length (default 2 * (bins - 1)) from (real, imag)."""
    return _k.IRFFT.apply(*_complex_pair(x), fft_length=fft_length)


def _window(window, length, dt, xp):
    """The window as a Tensor on xp (the signal's array module)."""
    if window is None:
        return None
    if isinstance(window, str):
        if window not in ("hann", "hamming"):
            raise ValueError('If a string is passed to `window`, it must be one of `"hann"`, `"hamming"`. '
                             f"Received: window={window}")
        n = np.arange(length)
        a = 0.5 if window == "hann" else 0.54
        w = a - (1 - a) * np.cos(2 * np.pi * n / length)   # periodic window, as scipy's get_window
        return Tensor(backend.to_device(w.astype(dt), xp))
    w = _t(window)
    w = cast(Tensor(backend.to_device(w.data, xp)), dt)
    if w.ndim != 1 or w.shape[0] != length:
        raise ValueError(f"The shape of `window` must be equal to [sequence_length]. Received: window shape={w.shape}")
    return w


def _pad_window(win, fft_length, dt):
    """A window of sequence_length centred in fft_length zeros."""
    n = win.shape[0]
    left = (fft_length - n) // 2
    if left == 0 and n == fft_length:
        return win
    return _s.pad(win, [(left, fft_length - n - left)])


def stft(x, sequence_length, sequence_stride, fft_length, window="hann", center=True):
    """Short-time Fourier transform of a real signal (..., T): (real, imag) of shape
    (..., frames, fft_length // 2 + 1). With center, the signal is reflect-padded by fft_length // 2."""
    x = _t(x)
    if _dt.standardize_dtype(x.dtype) not in ("float32", "float64"):
        raise TypeError(f"Invalid input type. Expected `float32` or `float64`. Received: input type={x.dtype}")
    if fft_length < sequence_length:
        raise ValueError("`fft_length` must equal or larger than `sequence_length`. "
                         f"Received: sequence_length={sequence_length}, fft_length={fft_length}")
    win = _window(window, sequence_length, x.dtype, backend.get_array_module(x.data))
    if win is None:
        win = Tensor(backend.get_array_module(x.data).ones(sequence_length, x.dtype))
    win = _pad_window(win, fft_length, x.dtype)
    if center:
        p = fft_length // 2
        t = x.shape[-1]
        if p >= t:
            raise ValueError(f"stft: reflect padding by {p} needs a signal longer than that (got {t}).")
        xp = backend.get_array_module(x.data)
        idx = xp.concatenate([xp.arange(p, 0, -1), xp.arange(t), xp.arange(t - 2, t - 2 - p, -1)])
        x = _s.getitem(x, (Ellipsis, idx))
    frames = extract_sequences(x, fft_length, sequence_stride) * win
    return rfft(frames, fft_length)


def istft(x, sequence_length, sequence_stride, fft_length, length=None, window="hann", center=True):
    """Inverse short-time Fourier transform of (real, imag) frames (..., frames, bins): the signal.

    Frames are windowed, overlap-added and divided by the overlap-added squared window (torch.istft),
    or, when sequence_length < fft_length or not centred, scaled as Keras does (TensorFlow's
    inverse_stft_window_fn)."""
    re_, im = _complex_pair(x)
    dt = re_.dtype
    win = _window(window, sequence_length, dt, backend.get_array_module(re_.data))
    frames = irfft((re_, im), fft_length)
    n_frames = frames.shape[-2]
    expected = fft_length + sequence_stride * (n_frames - 1)
    xp = backend.get_array_module(frames.data)
    if sequence_length == fft_length and center and win is not None:
        y = _k.OverlapAdd.apply(frames * win, stride=sequence_stride)
        with no_grad():
            env = _k.OverlapAdd.apply(Tensor(xp.broadcast_to((win * win).data, (n_frames, fft_length)).copy()),
                                      stride=sequence_stride).data
        start = fft_length // 2
        end = start + length if length is not None else expected - fft_length // 2
        stop = builtins.min(end, expected)
        env = env[start:stop]
        if bool(xp.any(xp.abs(env) < 1e-11)):
            raise ValueError("istft: the window's squared overlap-add has zeros (NOLA fails); no inverse exists.")
        y = y[..., start:stop] / Tensor(env)
        if end > stop:
            y = _s.pad(y, [(0, 0)] * (y.ndim - 1) + [(0, end - stop)])
        return y
    if win is not None:
        wpad = _pad_window(win, fft_length, dt).data
        overlaps = -(-fft_length // sequence_stride)
        sq = xp.concatenate([wpad * wpad, xp.zeros(overlaps * sequence_stride - fft_length, dt)])
        denom = xp.tile(sq.reshape(overlaps, sequence_stride).sum(axis=0, keepdims=True), (overlaps, 1))
        denom = denom.reshape(-1)[:fft_length]
        frames = frames * Tensor(wpad / denom)
    y = _k.OverlapAdd.apply(frames, stride=sequence_stride)
    start = 0 if not center else fft_length // 2
    if length is not None:
        end = start + length
    elif center:
        end = -(fft_length // 2)
    else:
        end = expected
    return y[..., start:end]


def view_as_complex(x):
    """A complex tensor from a real one whose last axis holds (real, imag) (not differentiable)."""
    x = _t(x)
    if x.shape[-1] != 2:
        raise ValueError(f"view_as_complex: the last axis must have size 2, got shape {x.shape}.")
    d = x.data
    z = d[..., 0].astype(np.float32) + 1j * d[..., 1].astype(np.float32)
    return Tensor(z.astype(np.complex64))


def view_as_real(x):
    """A real tensor (..., 2) holding the real and imaginary parts of a complex one (not differentiable)."""
    x = _t(x)
    xp = backend.get_array_module(x.data)
    d = x.data
    if d.dtype.kind != "c":
        raise ValueError(f"view_as_real: expected a complex tensor, got {d.dtype}.")
    return Tensor(xp.stack([d.real, d.imag], axis=-1))
