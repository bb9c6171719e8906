"""Tensor, the recorded graph, and reverse-mode automatic differentiation.

A Tensor wraps one array (NumPy or CuPy) in ``.data``. Every differentiable function is an ``Op``
subclass with ``forward`` (arrays in, array(s) out) and ``backward`` (upstream gradient(s) in, one
gradient or None per input out). ``Op.apply`` runs ``forward`` and, when any input requires a
gradient and recording is on, links the output to the op so that ``backward()`` can walk back.

The graph holds only what backward needs. A recorded op keeps, per input that wants a gradient, an
edge: the producing op and output index for an intermediate tensor, the tensor itself for a leaf
(leaves are alive anyway), plus the input's shape and dtype. It never holds an intermediate
Tensor or its array, except what the op itself put in ``self.saved``; so the forward arrays of a
chain of ``Add`` and ``Reshape`` die as soon as the caller drops them.

Backward sorts the graph once, iteratively (no recursion, so a chain of 100,000 ops is fine), runs
each op's backward once and accumulates gradients over repeated uses. Then, unless
``retain_graph=True``, it frees the graph: each op drops ``saved`` and its edges and is marked freed,
and a second backward through it raises (as PyTorch does) instead of silently treating the
intermediates as leaves. Every leaf gets its own writable ``.grad`` array.

Version counter: every in-place change lamina makes to a tensor (``Variable.assign*``, optimizer
updates) bumps ``tensor._version``. An op records the versions of its leaf inputs when it is
recorded; if one changed by backward time and the op saved an array sharing its memory, backward
raises instead of using the new values. Direct writes into ``.data`` are not tracked: code that
changes a tensor in place outside these calls bumps its version itself (``t._bump_version()``).

Gradients are first-order only: backward works on arrays and records nothing.
"""
import contextlib
import sys
import threading
import weakref

import numpy as np

from . import backend

_state = threading.local()


def is_grad_enabled():
    return getattr(_state, "grad_enabled", True)


def _recorder():
    """The running rematerialisation's record (lamina/rematerialization.py), or None: it collects the ops recorded and
    the variables assigned meanwhile."""
    return getattr(_state, "recorder", None)


def _set_recorder(rec):
    _state.recorder = rec


def _note_assign(variable):
    rec = getattr(_state, "recorder", None)
    if rec is not None and id(variable) not in rec.assigned:
        rec.assigned[id(variable)] = (variable, variable.data.copy())


@contextlib.contextmanager
def no_grad():
    """Context manager: ops inside record no graph (inference, updates)."""
    prev = is_grad_enabled()
    _state.grad_enabled = False
    try:
        yield
    finally:
        _state.grad_enabled = prev


@contextlib.contextmanager
def enable_grad():
    prev = is_grad_enabled()
    _state.grad_enabled = True
    try:
        yield
    finally:
        _state.grad_enabled = prev


def _is_float(dtype):
    return np.issubdtype(dtype, np.floating)


def _as_array(data, dtype=None, xp=None):
    """An array (NumPy or CuPy) from data; Python floats and lists become floatx, on xp's device
    (default: the current device)."""
    if isinstance(data, Tensor):
        data = data.data
    if isinstance(data, np.ndarray) or backend.is_cupy_array(data):
        return data if dtype is None or data.dtype == dtype else data.astype(dtype)
    if isinstance(data, np.generic):
        arr = np.asarray(data)
    else:
        arr = np.asarray(data)
        if dtype is None and arr.dtype == np.float64:
            dtype = backend.floatx()
    if dtype is not None:
        arr = arr.astype(dtype)
    xp = xp or backend.device_module()
    return arr if xp is np else xp.asarray(arr)


class Tensor:
    """An array with an optional gradient and a link to the op that made it.

    ``Tensor(array)`` wraps a NumPy (or CuPy) array without copying it when its dtype already fits,
    as ``torch.from_numpy`` / ``torch.as_tensor`` do: writes to the array show in the tensor and the
    other way round (ops make new arrays, so this only matters for code that writes into ``.data``).
    Python numbers and lists are always copied into a new array. ``Variable`` (a weight updated in
    place) always copies what it is given.

    >>> import lamina
    >>> x = lamina.Tensor([1.0, 2.0, 3.0], requires_grad=True)
    >>> (x * x).sum().backward()
    >>> x.grad
    array([2., 4., 6.], dtype=float32)
    """

    __array_priority__ = 1000  # ndarray (op) Tensor defers to Tensor's reflected operator
    __hash__ = object.__hash__  # __eq__ is elementwise, identity stays the hash

    _version = 0           # bumped by every in-place change lamina makes to .data (_bump_version)
    _base = None           # output of a view op: the leaf whose memory it may view (version checks)
    _retain_grad = False

    def __init__(self, data, requires_grad=False, dtype=None, name=None):
        self.data = _as_array(data, dtype)
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"Only float tensors can require gradients, got dtype {self.data.dtype}.")
        self.requires_grad = bool(requires_grad)
        self.grad = None
        self.name = name
        self._op = None          # the Op that produced this tensor (None for leaves)
        self._out_index = 0

    def _bump_version(self):
        """Record an in-place change of ``.data``: graphs that saved the old values refuse to backward."""
        self._version += 1

    # ----- basic properties
    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return int(self.data.size)

    @property
    def is_leaf(self):
        return self._op is None

    @property
    def T(self):
        return transpose(self)

    def __len__(self):
        return self.data.shape[0]

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def numpy(self):
        """The data as a NumPy array (copied from the GPU if needed)."""
        return backend.to_numpy(self.data)

    def __array__(self, dtype=None, copy=None):
        """NumPy's protocol: a copy only when the dtype differs or ``copy=True`` asks for one (``copy=False``
        refuses a conversion that would need one)."""
        a = self.numpy()
        if dtype is not None and a.dtype != np.dtype(dtype):
            if copy is False:
                raise ValueError(f"Unable to avoid a copy converting a {a.dtype} Tensor to {np.dtype(dtype)} "
                                 "with copy=False.")
            return a.astype(dtype)
        return a.copy() if copy else a

    def item(self):
        return self.numpy().item()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        return bool(self.item())

    def __repr__(self):
        body = np.array2string(self.numpy(), separator=", ", prefix="Tensor(")
        extra = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor({body}, dtype={self.dtype}{extra})"

    def detach(self):
        """The same data, cut from the graph."""
        return Tensor(self.data)

    def retain_grad(self):
        """Keep .grad on this non-leaf tensor after backward()."""
        self._retain_grad = True
        op = self._op
        if op is not None:  # the op holds no reference to its outputs otherwise
            if op._retained is None:
                op._retained = {}
            op._retained[self._out_index] = weakref.ref(self)
        return self

    def astype(self, dtype):
        return cast(self, dtype)

    def zero_grad(self):
        self.grad = None

    def backward(self, grad=None, retain_graph=False):
        """Back-propagate from this tensor, accumulating into ``.grad`` of every leaf that requires it
        (and of non-leaves that called ``retain_grad()``). Each gets its own writable array.

        The graph is freed afterwards; a second backward through any part of it raises RuntimeError
        unless the first one passed ``retain_graph=True``. Raises RuntimeError if a weight the graph
        saved was changed in place (``assign``, an optimizer step) after the forward pass."""
        if not self.requires_grad:
            raise RuntimeError("backward() called on a tensor that does not require grad "
                               "(was it computed under no_grad(), or from inputs without requires_grad?)")
        if grad is None:
            if self.size != 1:
                raise RuntimeError(f"backward() without a gradient needs a scalar tensor; this one has shape {self.shape}. "
                                   "Reduce it (e.g. .sum() or .mean()) or pass grad=.")
            xp = backend.get_array_module(self.data)
            grad = xp.ones_like(self.data)
        else:
            grad = _as_array(grad, self.dtype)
        _backprop(self, grad, retain_graph, accumulate=True)

    # ----- operators (the ops themselves live in lamina.ops)
    def _other(self, other):
        if isinstance(other, Tensor):
            return other
        if isinstance(other, (int, float, bool)) and _is_float(self.dtype):
            xp = backend.get_array_module(self.data)
            return Tensor(xp.asarray(other, dtype=self.dtype))
        if (type(other) is int and self.dtype.kind in "iu"
                and np.iinfo(self.dtype).min <= other <= np.iinfo(self.dtype).max):
            # a Python int is weak, as in Keras: int32 tensor + 1 stays int32
            return Tensor(backend.get_array_module(self.data).asarray(other, dtype=self.dtype))
        return other  # an array or list: a constant, cast to this tensor's float dtype by Op.apply

    def __add__(self, o): return _m.add(self, self._other(o))
    def __radd__(self, o): return _m.add(self._other(o), self)
    def __sub__(self, o): return _m.subtract(self, self._other(o))
    def __rsub__(self, o): return _m.subtract(self._other(o), self)
    def __mul__(self, o): return _m.multiply(self, self._other(o))
    def __rmul__(self, o): return _m.multiply(self._other(o), self)
    def __truediv__(self, o): return _m.divide(self, self._other(o))
    def __rtruediv__(self, o): return _m.divide(self._other(o), self)
    def __neg__(self): return _m.negative(self)
    def __pos__(self): return self
    def __abs__(self): return _m.abs(self)
    def __matmul__(self, o): return _m.matmul(self, self._other(o))
    def __rmatmul__(self, o): return _m.matmul(self._other(o), self)
    def __getitem__(self, idx): return _s.getitem(self, idx)

    def __pow__(self, o):
        if isinstance(o, (int, float)):
            return _m.power(self, o)
        return _m.power(self, self._other(o))

    def __rpow__(self, o):
        return _m.power(self._other(o), self)

    # comparisons carry no gradient
    def _cmp(self, o, fn):
        o = o.data if isinstance(o, Tensor) else o
        return Tensor(fn(self.data, o))

    def __lt__(self, o): return self._cmp(o, lambda a, b: a < b)
    def __le__(self, o): return self._cmp(o, lambda a, b: a <= b)
    def __gt__(self, o): return self._cmp(o, lambda a, b: a > b)
    def __ge__(self, o): return self._cmp(o, lambda a, b: a >= b)
    def __eq__(self, o): return self._cmp(o, lambda a, b: a == b)
    def __ne__(self, o): return self._cmp(o, lambda a, b: a != b)

    # ----- methods mirroring NumPy / torch
    def sum(self, axis=None, keepdims=False): return _m.sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return _m.mean(self, axis, keepdims)
    def max(self, axis=None, keepdims=False): return _m.max(self, axis, keepdims)
    def min(self, axis=None, keepdims=False): return _m.min(self, axis, keepdims)
    def var(self, axis=None, keepdims=False): return _m.var(self, axis, keepdims)
    def exp(self): return _m.exp(self)
    def log(self): return _m.log(self)
    def sqrt(self): return _m.sqrt(self)
    def clip(self, lo, hi): return _m.clip(self, lo, hi)
    def argmax(self, axis=None): return Tensor(self.data.argmax(axis=axis))
    def argmin(self, axis=None): return Tensor(self.data.argmin(axis=axis))
    def squeeze(self, axis=None): return _s.squeeze(self, axis)
    def flatten(self): return _s.reshape(self, (-1,))

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return _s.reshape(self, shape)

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return _s.transpose(self, axes or None)


def host_array(x, dtype=None):
    """A NumPy array of x: a Tensor's data, a NumPy or CuPy array (copied from the device), or anything np.asarray
    takes (lists, numbers, other libraries' tensors); converted to ``dtype`` when given and different."""
    a = backend.to_numpy(x.data if isinstance(x, Tensor) else x)
    return a if dtype is None or a.dtype == dtype else a.astype(dtype)


def as_tensor(x, dtype=None):
    """x itself if it is a Tensor (cast if dtype is given; a variable read in an autocast scope comes in the
    scope's dtype), else a constant Tensor."""
    if isinstance(x, Tensor):
        x = autocast_variable(x)
        return x if dtype is None or x.dtype == dtype else cast(x, dtype)
    return Tensor(x, dtype=dtype)


class Op:
    """Base of every differentiable function.

    Subclasses write ``forward(*arrays) -> array | tuple`` and ``backward(*grads) -> grad | tuple``.
    Keyword parameters given to ``apply`` become attributes; ``self.xp`` is the array module of the
    inputs; ``self.needs_grad[i]`` says whether input i wants a gradient (skip work when it does not);
    ``self.saved`` holds only what backward reads (the engine frees it after backward, and checks the
    arrays in it against in-place changes of the inputs, so keep input arrays there and nowhere else).
    A view op (its output may share the input's memory) sets ``is_view = True``.
    """

    same_float_dtype = False  # binary arithmetic: float inputs must share one dtype (see apply)
    is_view = False           # the outputs may be views of input 0's array
    none_grads = False        # backward takes None for an output no gradient reached (else: zeros of its shape)
    saved = None
    # graph bookkeeping, set by apply when the op is recorded (see _backprop)
    _edges = None             # per input: None, or (parent_op, out_index, leaf, shape, dtype)
    _watch = ()               # (input index, leaf tensor, its version when recorded)
    _retained = None          # out_index -> weakref of an output that asked for retain_grad()
    _freed = False

    keeps_variables = False   # the op reads variables as they are, also in an autocast scope (Cast itself)
    # float16 arrays in float32 on the CPU, forward and backward, the results cast back to float16: NumPy has
    # no BLAS and no SIMD loops for float16 (a float16 product ran ~200x, an addition ~20x slower), and its
    # float16 arithmetic goes through float32 element by element anyway (the products now accumulate in
    # float32, as on a GPU). Set on the products (matmul, dense, convolutions, recurrent, attention).
    half_via_float32 = False
    _half = False

    def __init__(self, **params):
        self.__dict__.update(params)

    @classmethod
    def apply(cls, *inputs, **params):
        # Every op of every forward pass goes through here (a small model's training step makes hundreds of
        # calls, a gradient check hundreds of thousands): the common case (Tensor inputs on the CPU, one
        # ndarray output) takes no generator, set or constructor it does not need.
        if _READS.active:   # (an autocast or a stateless scope is open in this thread: one test when none is)
            inputs = _read_variables(cls, inputs)
        if cls.__init__ is _OP_INIT:   # (a constructor call and its frame cost ~0.5 us)
            op = _new_op(cls)
            if params:
                op.__dict__.update(params)
        else:
            op = cls(**params)
        # One scan of the usual inputs (Tensors holding NumPy arrays, or None): their arrays, whether each needs a
        # gradient, and whether their float dtypes differ or all are float16 (the dtype rules below)
        arrays, needs = [], []
        first = None       # the first float dtype
        mixed = False      # float dtypes differ
        tensors = inputs
        for x in inputs:
            if x is None:
                arrays.append(None)
                needs.append(False)
                continue
            if not isinstance(x, Tensor) or type(x.data) is not np.ndarray:
                tensors, arrays, xp = _general_inputs(cls, inputs)
                present = [a for a in arrays if a is not None]
                needs = [t is not None and t.requires_grad for t in tensors]
                mixed = len(present) > 1 and _mixed_floats(present)
                first = next((a.dtype for a in present if a.dtype.kind == "f"), None)
                break
            a = x.data
            arrays.append(a)
            needs.append(x.requires_grad)
            d = a.dtype
            if d.kind == "f":
                if first is None:
                    first = d
                elif d != first:
                    mixed = True
        else:
            xp = np
        op.xp = xp
        if mixed and cls.same_float_dtype:
            arrays = _unify_float_dtypes(cls, inputs, arrays)
        op.needs_grad = needs = tuple(needs)
        record = (True in needs) and getattr(_state, "grad_enabled", True)
        if (cls.half_via_float32 and xp is np
                and (_all_half(arrays) if mixed else first == _FLOAT16)):   # (one float dtype: all float16 if it is)
            op._half = True
            arrays = [a.astype(np.float32) if a is not None and a.dtype == np.float16 else a for a in arrays]
            out = op.forward(*arrays)
            out = (tuple(_half(o) for o in out) if isinstance(out, tuple) else _half(out))
        else:
            out = op.forward(*arrays)
        # NumPy reductions return scalars (np.generic): they stay on the op's device as 0-d arrays;
        # integer and bool outputs (argmax, masks) never require a gradient
        if type(out) is np.ndarray:   # (the usual: one array)
            outs = (_wrap(out, record and out.dtype.kind == "f"),)
        else:
            outs = []
            for o in (out if isinstance(out, tuple) else (out,)):
                if type(o) is np.ndarray:
                    outs.append(_wrap(o, record and o.dtype.kind == "f"))
                    continue
                if isinstance(o, np.generic):
                    o = _as_array(o, xp=xp)
                outs.append(Tensor(o, requires_grad=record and o.dtype.kind == "f"))
        if record:
            edges, watch = [], []
            for i, t in enumerate(tensors):
                if not needs[i]:     # a constant; a Variable (frozen weight) is still watched
                    edges.append(None)
                    src = None if t is None else t if isinstance(t, Variable) else t._base
                    if src is not None:
                        watch.append((i, src, src._version))
                elif t._op is None:  # a leaf: kept itself (it is alive anyway), its version watched
                    a = t.data
                    edges.append((None, 0, t, a.shape, a.dtype))
                    watch.append((i, t, t._version))
                else:                # an intermediate: only the op that made it, never its array
                    a = t.data
                    edges.append((t._op, t._out_index, None, a.shape, a.dtype))
                    if t._base is not None:
                        watch.append((i, t._base, t._base._version))
            op._edges = tuple(edges)
            if watch:
                op._watch = tuple(watch)
            rec = getattr(_state, "recorder", None)
            if rec is not None:
                rec.ops.append(op)
            op.out_meta = tuple([(o.data.shape, o.data.dtype) for o in outs])
            for i, o in enumerate(outs):
                if o.requires_grad:  # an integer output stays a leaf without gradient
                    o._op, o._out_index = op, i
            if cls.is_view:
                src = tensors[0]
                src = src if src._op is None else src._base
                if src is not None:
                    for o in outs:
                        o._base = src
        else:
            op.saved = None
        return tuple(outs) if isinstance(out, tuple) else outs[0]

    def forward(self, *xs):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, *gys):  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} has no backward")


def _general_inputs(cls, inputs):
    """Op.apply's inputs beyond the usual (Tensors holding NumPy arrays): Python numbers, lists and arrays as
    constant Tensors made on the device of the array inputs, and CuPy arrays, checked to be on one device. Returns
    (tensors, arrays, xp)."""
    tensors = inputs
    if not all(x is None or isinstance(x, Tensor) for x in inputs):
        # Python numbers and lists are constants made on the device of the op's array inputs
        given = [x.data if isinstance(x, Tensor) else x for x in inputs
                 if isinstance(x, (Tensor, np.ndarray)) or backend.is_cupy_array(x)]
        home = backend.get_array_module(*given) if given else None
        tensors = [None if x is None else x if isinstance(x, Tensor) else Tensor(_as_array(x, xp=home))
                   for x in inputs]
    arrays = [None if t is None else t.data for t in tensors]
    present = [a for a in arrays if a is not None]
    xp = backend.get_array_module(*present)
    if xp is not np:
        if any(a.ndim > 0 and not backend.is_cupy_array(a) for a in present):
            where = ", ".join(f"input {i}: {'cuda' if backend.is_cupy_array(a) else 'cpu'} {tuple(a.shape)}"
                              for i, a in enumerate(arrays) if a is not None)
            raise ValueError(f"{cls.__name__}: inputs are on different devices ({where}). Move them to one "
                             "device first (lamina.backend.to_device, or model.to(...)).")
        # host 0-d constants (np.asarray(0.5)) join the device too
        arrays = [a if a is None or backend.is_cupy_array(a) else xp.asarray(a) for a in arrays]
    return tensors, arrays, xp


def _mixed_floats(arrays):
    """Whether the arrays hold floats of more than one dtype."""
    first = None
    for a in arrays:
        d = a.dtype
        if d.kind == "f":
            if first is None:
                first = d
            elif d != first:
                return True
    return False


def _wrap(array, requires_grad):
    """Tensor(array, requires_grad=...) for an ndarray an op made (nothing to convert or check)."""
    t = _new_tensor(Tensor)
    t.data, t.requires_grad, t.grad, t.name, t._op, t._out_index = array, requires_grad, None, None, None, 0
    return t


_new_tensor = object.__new__
_new_op = object.__new__
_OP_INIT = Op.__init__


def _all_half(arrays):
    """Whether the float arrays among ``arrays`` are all float16 (and there is one). (A loop that stops at the first
    other float: asked by every product's apply, where a list and all() of a generator cost ~1.7 us.)"""
    found = False
    for a in arrays:
        if a is not None:
            d = a.dtype
            if d.kind == "f":
                if d != _FLOAT16:
                    return False
                found = True
    return found


_FLOAT16 = np.dtype(np.float16)


def _half(o):
    """An output of a half_via_float32 op back in float16."""
    return o.astype(np.float16) if isinstance(o, np.ndarray) and o.dtype == np.float32 else o


class _VariableReads(threading.local):
    """What the ops of this thread read a variable as, set by two scopes (per thread, as Keras's):

    - ``dtype``, Keras's autocast scope: while a layer with a mixed dtype policy ('mixed_float16') runs its call(),
      the ops it calls read its float variables in the compute dtype, through a differentiable cast, so the
      gradient reaches the float32 variable (lamina.layers.Layer sets and restores it; None: no scope);
    - ``stateless``, the open ``StatelessScope`` (lamina.scopes): a variable it maps reads as its value there.

    ``active`` is True while either is set: the one thing Op.apply asks of every op."""
    dtype = None
    stateless = None
    active = False


_READS = _VariableReads()


def autocast_dtype():
    """The compute dtype of the autocast scope of this thread, or None."""
    return _READS.dtype


def set_autocast_dtype(dtype):
    """Enter (a dtype) or leave (None) an autocast scope in this thread; returns the previous one."""
    previous, _READS.dtype = _READS.dtype, dtype
    _READS.active = dtype is not None or _READS.stateless is not None
    return previous


def stateless_scope():
    """The StatelessScope open in this thread (lamina.scopes), or None."""
    return _READS.stateless


def set_stateless_scope(scope):
    """Make scope (a lamina.scopes.StatelessScope, or None) the open one of this thread; returns the previous one."""
    previous, _READS.stateless = _READS.stateless, scope
    _READS.active = scope is not None or _READS.dtype is not None
    return previous


def _read_variables(cls, inputs):
    """An op's inputs as the open scopes read them: float variables cast to the autocast dtype (not for the ops
    that keep variables as they are: Cast itself), then each variable the StatelessScope maps replaced by its
    value there (a cast's own input included, as that cast goes through here too), so that the gradient reaches
    that value, as the value a Keras variable reads in the scope."""
    dtype = _READS.dtype
    if dtype is not None and not cls.keeps_variables:
        inputs = _autocast(inputs, dtype)
    scope = _READS.stateless
    if scope is not None:
        for x in inputs:
            if isinstance(x, Variable):
                return tuple(scope._read(v) if isinstance(v, Variable) else v for v in inputs)
    return inputs


def _autocast(inputs, dtype):
    if not any(_casts(x, dtype) for x in inputs):
        return inputs
    return tuple(cast(x, dtype) if _casts(x, dtype) else x for x in inputs)


def _casts(x, dtype):
    return isinstance(x, Variable) and x.autocast and x.data.dtype.kind == "f" and x.data.dtype != dtype


def autocast_variable(x):
    """x, or in an autocast scope a float variable of x's read in the scope's dtype (a differentiable cast):
    where the ops convert their arguments, so that a function deciding dtypes before its op sees the variable
    as the scope's dtype, as Keras's variables read inside a mixed layer's call()."""
    dtype = _READS.dtype
    return cast(x, dtype) if dtype is not None and _casts(x, dtype) else x


def _unify_float_dtypes(cls, inputs, arrays):
    """Float tensors of different dtypes are an error (no silent float64 upcast); plain arrays and
    numbers given as constants take the tensors' dtype."""
    tensor_dtypes = {x.dtype for x in inputs if isinstance(x, Tensor) and x.dtype.kind == "f"}
    if len(tensor_dtypes) > 1:
        got = ", ".join(f"input {i}: {x.dtype}" for i, x in enumerate(inputs) if isinstance(x, Tensor))
        raise ValueError(f"{cls.__name__}: float inputs have different dtypes ({got}). Cast one first, "
                         "e.g. lamina.ops.cast(x, 'float32').")
    if not tensor_dtypes:
        return arrays
    target = tensor_dtypes.pop()
    return [a if a is None or isinstance(x, Tensor) or a.dtype.kind != "f" else a.astype(target)
            for x, a in zip(inputs, arrays)]


_FREED_MESSAGE = (
    "Trying to backward through the graph a second time: {op} (and the graph before it) was freed by an "
    "earlier backward() or lamina.grad(), which drops the arrays the ops saved. Pass retain_graph=True to "
    "the first call if you need to go back through the same graph again, or compute the forward again.")


def _toposort(root_op):
    """Ops reachable from root_op, each after every op that consumes its outputs (reversed post-order).
    Raises if one of them was freed by an earlier backward."""
    order, visited = [], set()
    stack = [(root_op, False)]
    while stack:
        op, done = stack.pop()
        if done:
            order.append(op)
            continue
        if id(op) in visited:
            continue
        if op._freed:
            raise RuntimeError(_FREED_MESSAGE.format(op=type(op).__name__))
        visited.add(id(op))
        stack.append((op, True))
        for e in op._edges:
            if e is not None and e[0] is not None and id(e[0]) not in visited:
                stack.append((e[0], False))
    order.reverse()
    return order


def _saved_arrays(saved):
    stack = [saved]
    while stack:
        s = stack.pop()
        if isinstance(s, (tuple, list)):
            stack.extend(s)
        elif isinstance(s, np.ndarray) or backend.is_cupy_array(s):
            yield s


def _check_versions(op):
    """Raise if a leaf input changed in place since op was recorded and op saved an array sharing its
    memory (its backward would read the new values). Only runs the memory check on a version change."""
    for i, t, version in op._watch:
        if t._version == version:
            continue
        may_share = getattr(op.xp, "may_share_memory", None)
        for a in _saved_arrays(op.saved):
            if a is t.data or may_share is None or may_share(a, t.data):
                what = getattr(t, "path", None) or t.name
                what = f"'{what}' " if what else ""
                raise RuntimeError(
                    f"{type(op).__name__}: input {i} ({type(t).__name__} {what}of shape {t.shape}) was modified by "
                    f"an inplace operation after the op recorded it (it is at version {t._version}, the graph "
                    f"saved version {version}), so the gradient would use the new values. Run the forward "
                    "again after changing it, or change it (e.g. optimizer.apply) after backward().")


def _owned(g, handed):
    """g, or a copy of it when a user could see it aliased: a view (unless of a temporary nobody else
    holds), read-only (broadcast), or already handed to another tensor or the caller in this backward."""
    if isinstance(g, np.generic):  # a NumPy scalar from a reduction: a fresh 0-d array instead
        g = np.array(g)
    # a view's base seen only by the view itself has refcount 2 here (the view, getrefcount's argument)
    elif (id(g) in handed or (g.base is not None and sys.getrefcount(g.base) > 2)
            or not getattr(g.flags, "writeable", True)):
        g = g.copy()
    handed[id(g)] = g  # keeps g alive, so its id stays unique for this backward
    return g


def _backprop(root, grad, retain_graph=False, accumulate=True, targets=None, on_ready=None):
    """Reverse-mode sweep from root. With accumulate, leaves' .grad get the gradient added; with
    targets (a list of tensors), their gradients are returned (leaves or not) in that order. on_ready(i, g)
    is called once per target, as soon as its gradient g is complete (None: the root does not reach it)."""
    want = {}
    for i, t in enumerate(targets or ()):
        want.setdefault(id(t) if t._op is None else (id(t._op), t._out_index), []).append(i)
    result = [None] * (0 if targets is None else len(targets))
    handed = {id(grad): grad}  # the caller's array is never handed back as someone's .grad

    def give(key, t, g):
        """g is the (full) gradient of t from this root: deliver it where it is wanted."""
        for i in want.get(key, ()):
            result[i] = _owned(g, handed) if result[i] is None else result[i] + g
        if accumulate and t is not None and (t._op is None or t._retain_grad):
            t.grad = _owned(g, handed) if t.grad is None else t.grad + g

    if root._op is None:
        give(id(root), root, grad)
        _announce(on_ready, result, range(len(result)))
        return result
    order = _toposort(root._op)
    ready_after = _ready_after(order, want) if on_ready is not None else {}
    pending = {id(root._op): [None] * len(root._op.out_meta)}  # id(op) -> gradient of each output
    pending[id(root._op)][root._out_index] = grad
    try:
        for pos, op in enumerate(order):
            if pos - 1 in ready_after:   # the previous op was the last to feed these leaves
                _announce(on_ready, result, ready_after.pop(pos - 1))
            gys = pending.pop(id(op), None)
            if gys is None or all(g is None for g in gys):
                if not retain_graph:
                    _free(op)
                continue
            retained = op._retained
            for k, g in enumerate(gys):
                if g is not None and (want or retained):
                    ref = retained.get(k) if retained else None
                    give((id(op), k), ref() if ref is not None else None, g)
            if op._watch:
                _check_versions(op)
            if not op.none_grads:
                xp = op.xp
                gys = [xp.zeros(s, d) if g is None else g for g, (s, d) in zip(gys, op.out_meta)]
            if op._half:  # (its gradients are cast to the inputs' float16 below, as any other dtype)
                gys = [g.astype(np.float32) if g is not None and g.dtype == np.float16 else g for g in gys]
            gxs = op.backward(*gys)
            gys = None  # no longer held here: a view of one returned for a leaf need not be copied
            if not isinstance(gxs, (tuple, list)):
                gxs = (gxs,)
            edges = op._edges
            if len(gxs) != len(edges):
                raise RuntimeError(f"{type(op).__name__}.backward returned {len(gxs)} gradients for {len(edges)} inputs")
            for i, (e, g) in enumerate(zip(edges, gxs)):
                if e is None or g is None:
                    continue
                parent, k, leaf, shape, dtype = e
                if g.shape != shape:
                    raise RuntimeError(f"{type(op).__name__}.backward returned a gradient of shape {tuple(g.shape)} "
                                       f"for input {i} of shape {tuple(shape)}")
                if g.dtype != dtype:
                    g = g.astype(dtype)
                if leaf is not None:
                    give(id(leaf), leaf, g)
                else:
                    slot = pending.get(id(parent))
                    if slot is None:
                        slot = pending[id(parent)] = [None] * len(parent.out_meta)
                    slot[k] = g if slot[k] is None else _sum_into(slot, k, g)
            if not retain_graph:  # free what it saved now: the peak memory of backward stays low
                _free(op)
        if ready_after:   # the leaves the last op fed, and targets that are not leaves or not reached
            _announce(on_ready, result, [i for p in sorted(ready_after) for i in ready_after[p]])
    finally:
        if not retain_graph:  # and the rest (ops no gradient reached, or after an error)
            for op in order:
                _free(op)
    return result


# below this many elements a fresh sum costs no more than the checks (the allocator reuses small blocks)
SUM_IN_PLACE_MIN = 4096


def _sum_into(slot, k, g):
    """slot[k] + g, the sum written into slot[k]'s own memory when this sweep alone can see it: a writeable NumPy
    array of g's shape and dtype referenced only by the pending list, and which owns its memory or is the only
    view of an array nobody else holds (a view keeps a reference to its base, so another view or holder shows in
    the base's count). A residual connection's gradient (a reshaped product's, say) is summed that way without a
    fresh array and its page faults per block; an array anyone else may read (an op's gy also sent to another
    input, a saved array, a caller's) gets a new sum as before."""
    a = slot[k]
    if (type(a) is np.ndarray and a.size >= SUM_IN_PLACE_MIN and sys.getrefcount(a) <= _SOLE_REFS[0]
            and a.flags.writeable and a.shape == g.shape and a.dtype == g.dtype):
        base = a.base
        if base is None or (type(base) is np.ndarray and base.base is None
                            and sys.getrefcount(base) <= _SOLE_REFS[1]):
            np.add(a, g, out=a)
            return a
    return a + g


def _sole_refs():
    """getrefcount of slot[k]'s array, and of its base when it is the base's only view, inside _sum_into when
    only the list holds the array (measured, not assumed: the counts differ between Python versions)."""
    seen = []

    def probe(slot, k, g):
        a = slot[k]
        seen.append(sys.getrefcount(a))
        base = a.base
        seen.append(sys.getrefcount(base))
    probe([np.zeros(4)[1:]], 0, None)
    return seen


_SOLE_REFS = _sole_refs()


def _ready_after(order, want):
    """position in order -> the target indices whose gradient is complete once that op has run: a leaf's
    after the last op that takes it as an input; other targets (intermediates) at the end (-> len(order))."""
    last = {}
    for pos, op in enumerate(order):
        for e in op._edges:
            if e is not None and e[2] is not None and id(e[2]) in want:
                last[id(e[2])] = pos
    ready = {}
    for key, idx in want.items():
        ready.setdefault(last.get(key, len(order)) if isinstance(key, int) else len(order), []).extend(idx)
    return ready


def _announce(on_ready, result, indices):
    if on_ready is not None:
        for i in indices:
            on_ready(i, result[i])


def _free(op):
    """Drop what backward needs (saved arrays, edges); the op refuses a second pass."""
    op.saved = None
    op._edges = ()
    op._watch = ()
    op._freed = True


def grad(output, inputs, grad_output=None, retain_graph=False, on_ready=None):
    """Gradients of output with respect to each tensor in inputs (leaves or intermediates), without
    touching ``.grad``; None for an input the output does not depend on. Frees the graph unless
    ``retain_graph=True``, like ``backward()``. ``on_ready(i, g)``, if given, is called once per input as
    soon as its gradient is complete, while the sweep goes on (lamina.distribution starts the all-reduce
    of a bucket of gradients there); the array g is the one returned, so it must not be modified."""
    inputs = list(inputs)
    if not output.requires_grad:
        if on_ready is not None:
            for i in range(len(inputs)):
                on_ready(i, None)
        return [None for _ in inputs]
    if grad_output is None:
        xp = backend.get_array_module(output.data)
        grad_output = xp.ones_like(output.data)
    else:
        grad_output = _as_array(grad_output, output.dtype)
    return _backprop(output, grad_output, retain_graph, accumulate=False, targets=inputs, on_ready=on_ready)


# initializers.get, set by lamina.initializers (a floor above): Variable(initializer="zeros", shape=...)
_GET_INITIALIZER = None


class Variable(Tensor):
    """A model weight: a named leaf Tensor updated in place by optimizers (Keras's Variable).

    The initial value is always copied (as Keras does), so updates never write into the caller's
    array. Every in-place change (``assign``, ``assign_add``, ``assign_sub``, optimizer steps) bumps
    the version counter, so a graph recorded before the change refuses to backward through it.
    """

    autocast = True  # read in a mixed layer's compute dtype inside its call() (see Op.apply); add_weight sets it

    def __init__(self, value=None, name=None, trainable=True, dtype=None, constraint=None, regularizer=None, *,
                 initializer=None, shape=None, autocast=True, aggregation="none", synchronization="auto",
                 _copy=True):
        # (_copy=False: for a fresh array nobody else holds, e.g. add_weight's draw from lamina's own
        # initializers; copying a large model's weights once more cost as much as drawing them)
        # Keras's form: Variable(initializer=..., shape=...), the initializer an array, a name or a callable
        if initializer is not None:
            if value is not None:
                raise ValueError("Variable: pass the initial value or an initializer, not both.")
            if isinstance(initializer, str) or (callable(initializer) and not hasattr(initializer, "shape")):
                if shape is None:
                    raise ValueError(f"Variable: an initializer ({initializer!r}) needs a shape. Received: shape=None")
                init = _GET_INITIALIZER(initializer) if isinstance(initializer, str) else initializer
                value = init(tuple(shape), dtype=dtype or backend.floatx())
                value = value.data if isinstance(value, Tensor) else value
                _copy = False
            else:
                value = initializer
        if value is None:
            raise TypeError("Variable() needs an initial value: Variable(value) or Variable(initializer=..., "
                            "shape=...).")
        if shape is not None and tuple(np.shape(value.data if isinstance(value, Tensor) else value)) != tuple(shape):
            raise ValueError(f"Variable: the initial value has shape {np.shape(value)}, not the shape given, "
                             f"{tuple(shape)}.")
        given = value.data if isinstance(value, Tensor) else value
        super().__init__(value, requires_grad=False, dtype=dtype or backend.floatx(), name=name)
        if self.data is given and _copy:
            self.data = self.data.copy()
        self.requires_grad = _is_float(self.data.dtype)
        self.trainable = trainable
        if not autocast:
            self.autocast = False
        self.constraint = constraint
        self.regularizer = regularizer
        scope = backend.current_path()   # inside keras.name_scope("enc"): enc/<name>
        self.path = f"{scope}/{name}" if scope and name else name
        if _READS.stateless is not None:   # made inside a StatelessScope: new state, which it assigns directly
            _READS.stateless._note_created(self)

    # In a StatelessScope (lamina.scopes) the three assignments below record the new value there instead, and the
    # variable keeps its own once the scope closes (the scope's _assign says False for a variable made inside it)
    def assign(self, value):
        _note_assign(self)
        value = _as_array(value, self.dtype)
        if tuple(value.shape) != self.shape:
            raise ValueError(f"Cannot assign a value of shape {tuple(value.shape)} to variable "
                             f"'{self.name}' of shape {self.shape}.")
        xp = backend.get_array_module(self.data)
        if backend.get_array_module(value) is not xp:
            value = backend.to_device(value, xp)
        scope = _READS.stateless
        if scope is not None and scope._assign(self, value, fresh=False):
            return self
        self.data[...] = value
        self._bump_version()
        return self

    def assign_add(self, value):
        _note_assign(self)
        scope = _READS.stateless
        if scope is not None and scope._assign(self, self.data + _as_array(value, self.dtype), fresh=True):
            return self
        self.data += _as_array(value, self.dtype)
        self._bump_version()
        return self

    def assign_sub(self, value):
        _note_assign(self)
        scope = _READS.stateless
        if scope is not None and scope._assign(self, self.data - _as_array(value, self.dtype), fresh=True):
            return self
        self.data -= _as_array(value, self.dtype)
        self._bump_version()
        return self

    @property
    def value(self):
        """The variable itself, or in a StatelessScope its value there (Keras's ``variable.value``)."""
        scope = _READS.stateless
        return self if scope is None else scope._read(self)

    def __repr__(self):
        return f"<Variable path={self.path} shape={self.shape} dtype={self.dtype}>"


# ----- the ops behind the operator methods
# Tensor's operators and methods (+, *, @, [], .sum(), .reshape(), .T, .astype(), ...) call differentiable
# ops, which live a floor above in lamina.ops.math and lamina.ops.manipulation and are built on Op and
# Tensor from this module. So this module does not import them: each of the two puts itself in its slot
# here when it loads (see its last lines), the way lamina.export fills registry.EXPORTERS. lamina/__init__
# imports lamina.ops just after this module, and lamina.ops loads those two first, so the slots are
# filled before any Tensor operator can run.
_m = None  # lamina.ops.math: add, subtract, multiply, divide, matmul, power, sum, mean, cast, ...
_s = None  # lamina.ops.manipulation: getitem, reshape, transpose, squeeze


def cast(x, dtype):
    """lamina.ops.cast (as_tensor and Tensor.astype use it)."""
    return _m.cast(x, dtype)


def transpose(x, axes=None):
    """lamina.ops.transpose (Tensor.T uses it)."""
    return _s.transpose(x, axes)
