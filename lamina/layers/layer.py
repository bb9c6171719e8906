"""The Layer base class, InputSpec, and the symbolic KerasTensor used by the functional API.

A layer turns inputs into outputs with weights it owns. ``__call__`` converts the input, builds the
weights once from the input's shape (``build``), checks the input against ``input_spec`` (a clear
ValueError naming the layer, the expected and the received shape), then runs ``call``.
Called on a symbolic ``KerasTensor`` (from ``lamina.Input``) it records a graph node instead.
"""
import contextlib
import functools
import inspect
import sys
import threading

import numpy as np

from .. import backend, constraints, dtype_policies, initializers, regularizers
from .. import tree as _tree
from .. import rematerialization as _remat
from .. import ops as _ops
from ..config import DTypePolicy
from ..dtype_policies import DTypePolicyMap
from ..backend import clear_session, unique_name  # noqa: F401  (re-exported)
from ..backend import _NAME_SCOPES
from ..registry import register, serialize
from ..tensor import Tensor, Variable, autocast_dtype, no_grad, set_autocast_dtype
from ..tensor import _READS, _recorder
from ..scopes import StatelessScope, SymbolicScope
from ..io.limits import charge_weight

_ctx = threading.local()
_BASE_KWARGS = ("name", "trainable", "dtype", "input_shape", "batch_input_shape", "batch_size", "input_dim",
                "autocast", "input_length", "activity_regularizer")


# call_context is entered by a rematerialised layer call and by code that sets the training flag for a block, so
# it is a class: a generator-based context manager (contextlib.contextmanager) costs ~1 us more to enter and leave.
# Layer.__call__'s usual path sets the flag (and its other scopes) by hand
class call_context:
    """The training flag of the layer calls inside the block (None: the enclosing one's)."""

    def __init__(self, training):
        self.training = training

    def __enter__(self):
        self.prev = getattr(_ctx, "training", None)
        if self.training is not None:
            _ctx.training = self.training

    def __exit__(self, *exc):
        _ctx.training = self.prev


def current_training():
    return getattr(_ctx, "training", None)


class _AutocastScope:
    """The autocast scope of this thread set for a block (tensor.set_autocast_dtype; see Layer._autocast_scope)."""

    def __init__(self, dtype):
        self.dtype, self.prev = dtype, None

    def __enter__(self):
        self.prev = set_autocast_dtype(self.dtype)

    def __exit__(self, *exc):
        set_autocast_dtype(self.prev)


_NO_SCOPE = contextlib.nullcontext()


_autocast_state = threading.local()


@contextlib.contextmanager
def no_autocast():
    """Inside, layers keep their inputs' float dtype (used by float64 gradient checks)."""
    prev = getattr(_autocast_state, "off", False)
    _autocast_state.off = True
    try:
        yield
    finally:
        _autocast_state.off = prev


def _nest_flatten(x):
    if isinstance(x, (list, tuple)):
        out = []
        for v in x:
            out.extend(_nest_flatten(v))
        return out
    if isinstance(x, dict):
        out = []
        for k in sorted(x):
            out.extend(_nest_flatten(x[k]))
        return out
    return [x]


def _holds_keras_tensor(x):
    """Whether the nest x (lists, tuples, dicts) holds a KerasTensor: any(isinstance(t, KerasTensor) for t in
    _nest_flatten(x)) without building the flat list (every layer call asks, nearly always of one Tensor)."""
    if isinstance(x, (list, tuple)):
        for v in x:
            if _holds_keras_tensor(v):
                return True
        return False
    if isinstance(x, dict):
        for v in x.values():
            if _holds_keras_tensor(v):
                return True
        return False
    return isinstance(x, KerasTensor)


def _holds_only_numbers(x):
    """Whether the nest of lists and tuples x has Python numbers as its leaves, at least one (a list of NumPy
    scalars or arrays stays a list of inputs: a merge layer's [np.float32(1), np.float32(2)])."""
    if isinstance(x, (list, tuple)):
        return len(x) > 0 and all(_holds_only_numbers(v) for v in x)
    return isinstance(x, (bool, int, float))


def _nest_map(fn, x):
    if isinstance(x, list):
        return [_nest_map(fn, v) for v in x]
    if isinstance(x, tuple):
        return tuple(_nest_map(fn, v) for v in x)
    if isinstance(x, dict):
        return {k: _nest_map(fn, v) for k, v in x.items()}
    return fn(x)


class KerasTensor:
    """A symbolic tensor: a shape (None for unknown sizes), a dtype, and the layer call that made it."""

    def __init__(self, shape, dtype="float32", name=None, history=None, sparse=False):
        self.shape = tuple(None if d is None else int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.name = name
        self._history = history   # (layer, node_index, tensor_index)
        self._keras_mask = None

    @property
    def ndim(self):
        return len(self.shape)

    def __repr__(self):
        return f"<KerasTensor shape={self.shape}, dtype={self.dtype}, name={self.name}>"

    # Operators on symbolic tensors are keras.ops calls, which make operation nodes of the functional graph
    # (as Keras records them, so that such models save), indexing included (GetItem, the key a call argument).
    def __add__(self, o): return _ops.add(self, o)
    def __radd__(self, o): return _ops.add(o, self)
    def __sub__(self, o): return _ops.subtract(self, o)
    def __rsub__(self, o): return _ops.subtract(o, self)
    def __mul__(self, o): return _ops.multiply(self, o)
    def __rmul__(self, o): return _ops.multiply(o, self)
    def __truediv__(self, o): return _ops.true_divide(self, o)
    def __rtruediv__(self, o): return _ops.true_divide(o, self)
    def __floordiv__(self, o): return _ops.floor_divide(self, o)
    def __rfloordiv__(self, o): return _ops.floor_divide(o, self)
    def __mod__(self, o): return _ops.mod(self, o)
    def __rmod__(self, o): return _ops.mod(o, self)
    def __pow__(self, o): return _ops.power(self, o)
    def __rpow__(self, o): return _ops.power(o, self)
    def __matmul__(self, o): return _ops.matmul(self, o)
    def __rmatmul__(self, o): return _ops.matmul(o, self)
    def __gt__(self, o): return _ops.greater(self, o)
    def __ge__(self, o): return _ops.greater_equal(self, o)
    def __lt__(self, o): return _ops.less(self, o)
    def __le__(self, o): return _ops.less_equal(self, o)
    def __and__(self, o): return _ops.logical_and(self, o)
    def __rand__(self, o): return _ops.logical_and(o, self)
    def __or__(self, o): return _ops.logical_or(self, o)
    def __ror__(self, o): return _ops.logical_or(o, self)
    def __xor__(self, o): return _ops.logical_xor(self, o)
    def __rxor__(self, o): return _ops.logical_xor(o, self)
    def __neg__(self): return _ops.negative(self)
    def __pos__(self): return self
    def __abs__(self): return _ops.absolute(self)
    def __invert__(self): return _ops.logical_not(self)
    def __getitem__(self, idx): return _ops.get_item(self, idx)


# lamina.backend.is_keras_tensor answers from this slot (backend is the bottom floor and cannot import this module)
backend._KERAS_TENSOR_TYPES = (KerasTensor,)


class Node:
    """One call of a layer on symbolic inputs: what went in (with non-tensor arguments) and what came out."""

    def __init__(self, layer, call_args, call_kwargs, outputs):
        self.layer = layer
        self.call_args = call_args
        self.call_kwargs = call_kwargs
        self.input_tensors = [t for t in _nest_flatten((call_args, call_kwargs)) if isinstance(t, KerasTensor)]
        self.outputs = outputs
        self.output_tensors = _nest_flatten(outputs)

    @property
    def parent_nodes(self):
        out = []
        for t in self.input_tensors:
            if t._history is not None:
                layer, ni, _ = t._history
                out.append(layer._inbound_nodes[ni])
        return out


def _dtype_name(dtype):
    try:
        return np.dtype(dtype).name
    except TypeError:
        return str(dtype)


class InputSpec:
    """What a layer accepts: rank (ndim / min_ndim / max_ndim), exact shape, fixed sizes on some axes."""

    def __init__(self, dtype=None, shape=None, ndim=None, max_ndim=None, min_ndim=None, axes=None,
                 allow_last_axis_squeeze=False, name=None, optional=False):
        self.dtype = None if dtype is None else _dtype_name(dtype)
        self.shape = tuple(shape) if shape is not None else None
        self.ndim = len(shape) if shape is not None else ndim
        self.max_ndim, self.min_ndim = max_ndim, min_ndim
        try:
            self.axes = {int(k): v for k, v in (axes or {}).items()}
        except (AttributeError, ValueError, TypeError):
            raise TypeError(f"Argument `axes` must be a dict with integer keys. Received: axes={axes}") from None
        top = self.ndim if self.ndim else self.max_ndim
        if self.axes and top is not None and max(self.axes) > top - 1:
            raise ValueError(f"Axis {max(self.axes)} is greater than the maximum allowed value: {top - 1}")
        self.name = name
        self.optional = optional     # an input that may be None (then nothing is checked), as Keras's
        self.allow_last_axis_squeeze = allow_last_axis_squeeze

    def __repr__(self):
        parts = [f"{k}={v}" for k, v in (("dtype", self.dtype), ("shape", self.shape), ("ndim", self.ndim),
                                           ("max_ndim", self.max_ndim), ("min_ndim", self.min_ndim),
                                           ("axes", self.axes)) if v]
        return f"InputSpec({', '.join(parts)})"

    def get_config(self):
        return {"dtype": self.dtype, "shape": self.shape, "ndim": self.ndim, "max_ndim": self.max_ndim,
                "min_ndim": self.min_ndim, "axes": self.axes, "optional": self.optional}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def check(self, layer, i, shape):
        rank = len(shape)
        if (self.ndim is None or rank == self.ndim) and self.shape is None and self.max_ndim is None and (
                self.min_ndim is None or rank >= self.min_ndim):
            # (the usual spec: a rank bound and known axes, as Dense's and the convolutions'; every call checks)
            for axis, value in self.axes.items():
                if value is not None and -rank <= axis < rank and shape[axis] != value:
                    break
            else:
                return
        where = _IncompatibleInput(layer, i)   # (the message's words made only when one is raised)
        if self.ndim is not None and rank != self.ndim:
            raise ValueError(f"{where}: expected ndim={self.ndim}, found ndim={rank}. "
                             f"Full shape received: {tuple(shape)}")
        if self.min_ndim is not None and rank < self.min_ndim:
            raise ValueError(f"{where}: expected min_ndim={self.min_ndim}, found ndim={rank}. "
                             f"Full shape received: {tuple(shape)}")
        if self.max_ndim is not None and rank > self.max_ndim:
            raise ValueError(f"{where}: expected max_ndim={self.max_ndim}, found ndim={rank}. "
                             f"Full shape received: {tuple(shape)}")
        for axis, value in self.axes.items():
            if value is None:
                continue
            got = shape[axis] if -rank <= axis < rank else None
            if got is not None and got != value:
                expected = tuple(value if (a == axis % rank) else None for a in range(rank))
                raise ValueError(f"{where}: expected axis {axis} of input shape to have value {value} "
                                 f"(expected shape {expected}), but received input with shape {tuple(shape)}")
        if self.shape is not None:
            for want, got in zip(self.shape, shape):
                if want is not None and got is not None and want != got:
                    raise ValueError(f"{where}: expected shape={self.shape}, found shape={tuple(shape)}")



class _IncompatibleInput:
    """The start of InputSpec.check's messages, formatted when one is raised (every layer call checks its input)."""

    def __init__(self, layer, i):
        self.layer, self.i = layer, i

    def __format__(self, spec):
        return f"Input {self.i} of layer '{self.layer.name}' is incompatible with the layer"


def _track_layers(owner, items):
    """Make the Layers among items sub-layers of owner (once each, never owner itself), and the Variables among
    them owner's weights, as Keras tracks both in a layer's lists, tuples and dicts. An owner not set up yet (a
    list being rebuilt by copy.deepcopy before its layer) is skipped: its own _layers is copied too."""
    layers = getattr(owner, "__dict__", {}).get("_layers")
    if layers is None:
        return
    for v in items:
        if isinstance(v, Layer):
            if v is not owner and not any(v is l for l in layers):
                layers.append(v)
        elif isinstance(v, Variable):
            owner._track_variable(v)


def _set_by_user_code():
    """True when the attribute being set in Layer.__setattr__ is set by code outside lamina (a user's layer)."""
    caller = sys._getframe(2).f_globals.get("__name__", "")
    return not (caller == "lamina" or caller.startswith("lamina."))


def _nested_members(value, depth=0):
    """The items of a list, tuple or dict (its values) attribute, nested containers' items in their place."""
    out = []
    for v in (value.values() if isinstance(value, dict) else value):
        if isinstance(v, (list, tuple, dict)) and depth < 20:
            out += _nested_members(v, depth + 1)
        else:
            out.append(v)
    return out


class _TrackedList(list):
    """A layer's list attribute: layers added to it later become the layer's sub-layers (Keras's tracking)."""
    __slots__ = ("_owner",)

    def append(self, v):
        super().append(v)
        _track_layers(getattr(self, "_owner", None), (v,))

    def extend(self, values):
        values = list(values)
        super().extend(values)
        _track_layers(getattr(self, "_owner", None), values)

    def insert(self, i, v):
        super().insert(i, v)
        _track_layers(getattr(self, "_owner", None), (v,))

    def __setitem__(self, i, v):
        super().__setitem__(i, v)
        _track_layers(getattr(self, "_owner", None), v if isinstance(i, slice) else (v,))

    def __iadd__(self, values):
        self.extend(values)
        return self


class _TrackedDict(dict):
    """A layer's dict attribute: layers stored in it become the layer's sub-layers (Keras's tracking)."""
    __slots__ = ("_owner",)

    def __setitem__(self, k, v):
        super().__setitem__(k, v)
        _track_layers(getattr(self, "_owner", None), (v,))

    def update(self, *args, **kwargs):
        super().update(*args, **kwargs)
        _track_layers(getattr(self, "_owner", None), self.values())

    def setdefault(self, k, default=None):
        v = super().setdefault(k, default)
        _track_layers(getattr(self, "_owner", None), (v,))
        return v


def _name_the_layer(layer, e):
    """An error raised inside a layer's build or call says which layer, as Keras's 'Exception encountered when
    calling <Layer>.call()': the innermost layer puts its class and name in front of a message that lacks its
    name (an op's 'conv2d: the input ... is smaller than the kernel'); the layers around it leave it alone."""
    if getattr(e, "_lamina_layer", None) is not None:
        return e
    quoted = f"'{layer.name}'"   # (quoted: an op called like the layer, 'conv2d: ...', does not count)
    if quoted in str(e):
        named = e
    else:
        if e.args and isinstance(e.args[0], str):
            e.args = (f"{type(layer).__name__} {quoted}: {e.args[0]}",) + e.args[1:]
        named = e
        if quoted not in str(e):   # a message made from attributes (NumPy's AxisError, UFuncTypeError): a new one
            named = (ValueError if isinstance(e, ValueError) else TypeError)(f"{type(layer).__name__} {quoted}: {e}")
    try:
        named._lamina_layer = layer.name
    except AttributeError:   # (an exception type without a __dict__)
        pass
    return named


def _raise_named(layer, e):
    """Raise e (caught inside the layer's build or call) again, named by _name_the_layer: e itself with its
    traceback, or the new error made from it, chained."""
    named = _name_the_layer(layer, e)
    if named is e:
        raise e
    raise named from e


class Layer:
    """Base of every layer. Subclasses write ``build(input_shape)`` (weights via ``add_weight``),
    ``call(inputs, training=None)`` (composing ops) and ``compute_output_shape``.

    Input casting, as Keras: with ``autocast`` (the default) float inputs are cast to the layer's dtype;
    layers that compute in float whatever they are given (``_cast_integer_inputs = True``: the recurrent
    layers and cells; Dense casts in its call) cast bool and integer inputs to it as well; Embedding
    (autocast off) casts whole-number floats to ids. Other layers pass integers through (Flatten, Dropout)."""

    _cast_integer_inputs = False
    _numeric_inputs = False   # True: object and string inputs are refused (layers that keep int dtypes, ELU, ReLU)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        register(cls)
        init = cls.__dict__.get("__init__")
        if init is not None and not getattr(init, "_captures_config", False):
            cls.__init__ = _capture_config(init)
        build = cls.__dict__.get("build")
        if build is not None and not getattr(build, "_in_name_scope", False):
            cls.build = _build_in_name_scope(build)

    def __init__(self, name=None, trainable=True, dtype=None, input_shape=None, batch_input_shape=None,
                 batch_size=None, input_dim=None, autocast=True, input_length=None, activity_regularizer=None,
                 **kwargs):
        if kwargs:
            raise TypeError(f"{type(self).__name__}.__init__() got unexpected keyword argument(s): "
                            f"{', '.join(sorted(kwargs))}")
        object.__setattr__(self, "_layers", [])
        self._own_weights = []
        self._trainable = trainable
        self.name = name or unique_name(backend.snake_case(type(self).__name__))
        self._set_dtype_policy(dtype)
        self.autocast = autocast
        self.built = False
        self.input_spec = None
        self.supports_masking = getattr(self, "supports_masking", False)
        self._inbound_nodes = []
        self._activity_losses = []
        self.activity_regularizer = activity_regularizer
        self._remat_mode = _remat.get_current_remat_mode()   # a RematScope around the layer's creation (Keras)
        if input_dim is not None and input_shape is None:
            input_shape = (input_dim,)
        if batch_input_shape is not None:
            self._batch_input_shape = tuple(batch_input_shape)
        elif input_shape is not None:
            self._batch_input_shape = (batch_size,) + tuple(input_shape)
        else:
            self._batch_input_shape = None
        if not hasattr(self, "_auto_config"):
            self._auto_config = {}

    # ----- tracking
    def __setattr__(self, name, value):
        # a list or dict attribute is tracked: layers appended or stored in it later are sub-layers too
        # (self.ensemble = [] then self.ensemble.append(Tree()), self.embeddings[name] = Embedding(...)), as
        # Keras tracks them; a '_'-named one only when the user's code sets it (lamina's own are left as they are)
        tracked = False
        if "_layers" in self.__dict__ and (not name.startswith("_") or (
                type(value) in (list, dict, tuple) and not name.startswith("__") and _set_by_user_code())):
            if type(value) is list:
                value = _TrackedList(value)
                value._owner = self
            elif type(value) is dict:
                value = _TrackedDict(value)
                value._owner = self
            if isinstance(value, (list, tuple, dict)):   # nested ones too ([Dense(), [Dense()]]), as Keras
                _track_layers(self, _nested_members(value))
                tracked = True
        # '_layers' itself is skipped: a Functional model assigns its whole layer list there, and tracking each
        # member into the list being replaced was quadratic (a quarter of building NASNetLarge's 1041 layers)
        if name != "_layers" and not name.startswith("__") and "_layers" in self.__dict__:
            if isinstance(value, (Layer, Variable)):
                _track_layers(self, (value,))
            elif (not tracked and isinstance(value, (list, tuple)) and value
                  and all(isinstance(v, Layer) for v in value)):
                _track_layers(self, value)   # a list of layers lamina's own code keeps under a '_' name
        object.__setattr__(self, name, value)

    def _track_variable(self, value):
        """A Variable made by hand (``self.e = keras.Variable(...)``, or one in a list, tuple or dict attribute)
        is one of the layer's weights, as in Keras: trained, counted, saved (add_weight's are tracked already)."""
        if "_own_weights" in self.__dict__ and not any(value is w for w in self._own_weights):
            value.requires_grad = bool(value.requires_grad and self._trainable and value.trainable)
            self._own_weights.append(value)

    def _set_dtype_policy(self, dtype):
        """The layer's dtype policy from its ``dtype`` argument (a dtype or policy name, a DTypePolicy, a
        DTypePolicyMap, a serialized policy, or None: the global policy), as Keras: ``_dtype`` is its variables'
        dtype and ``_compute`` the one it computes in (float16 with float32 variables for 'mixed_float16')."""
        if isinstance(dtype, dict):  # a serialised dtype policy
            if dtype.get("class_name") == "DTypePolicyMap":
                dtype = dtype_policies.deserialize(dtype)
            else:
                dtype = dtype.get("config", {}).get("name")
        if dtype is not None and not isinstance(dtype, (str, DTypePolicy)):
            dtype = np.dtype(dtype).name     # np.float32, np.dtype("int64"), ...
        self._dtype_policy = dtype_policies.get(dtype)  # (None: the global policy)
        self._resolve_dtype_policy()

    def _resolve_dtype_policy(self):
        """``_dtype`` and ``_compute`` from the layer's policy; a DTypePolicyMap gives the policy of the layer's
        path (Keras's lookup: the exact path, else the one key matching it as a regular expression, else the map's
        default), found again when the build sets the path (before, its default)."""
        policy = self._dtype_policy
        if isinstance(policy, DTypePolicyMap):
            path = self.path
            policy = policy[path] if path else policy.default_policy
        if "bfloat16" in policy.name:
            raise ValueError(f"{type(self).__name__}: the dtype policy {policy.name!r} computes in bfloat16, which "
                             "NumPy (lamina's arrays) does not have. Use 'mixed_float16', 'float16' or 'float32'.")
        self._dtype = np.dtype(policy.variable_dtype)
        self._compute = np.dtype(policy.compute_dtype)

    def _autocast_scope(self):
        """Keras's autocast scope for this layer's call(): a mixed layer's ops read its float variables in its
        compute dtype (tensor.Op.apply); a layer inside keeps the scope, sets its own compute dtype, or (autocast
        off, or a non-float compute dtype) clears it."""
        current = autocast_dtype()
        if current is not None:
            if not self.autocast or self._compute.kind != "f":
                return _AutocastScope(None)
            return _AutocastScope(self._compute) if current != self._compute else _NO_SCOPE
        if self._compute != self._dtype and self._compute.kind == "f":
            return _AutocastScope(self._compute)
        return _NO_SCOPE

    def _name_scope(self):
        """This layer's name scope (backend.name_scope, the layer as its caller: not repeated inside itself),
        opened around its build, call and add_weight, as Keras's."""
        return backend.name_scope(self.name, caller=self)

    def _call_scope(self):
        """The name scope that __call__ pushes onto the scope stack itself (the same as _name_scope's, made once
        for the layer's current name: every layer call comes through here)."""
        scope = self.__dict__.get("_call_scope_entry")
        if scope is None or scope.name != self.name:
            scope = backend.name_scope(self.name, caller=self)
            self.__dict__["_call_scope_entry"] = scope
        return scope

    @property
    def path(self):
        """Where the layer was built, as Keras's ``layer.path``: the name scopes open around its build and its own
        name ("model/dense" for a subclassed model's layer); None before its build ran."""
        return getattr(self, "_path", None)

    @property
    def dtype_policy(self):
        """The layer's DTypePolicy (Keras's): its compute and variable dtypes, or the DTypePolicyMap it was given
        (the policy of its path applies). Settable, as in Keras (weights already made keep their dtype); a layer
        with a map and a path sets the policy of its path in that map."""
        return self._dtype_policy

    @dtype_policy.setter
    def dtype_policy(self, value):
        current = self._dtype_policy
        if isinstance(current, DTypePolicyMap) and self.path:
            policy = dtype_policies.get(value)
            if self.path in current:
                del current[self.path]
            current[self.path] = policy
            self._resolve_dtype_policy()
        else:
            self._set_dtype_policy(value)

    def _dtype_config(self):
        """The ``dtype`` entry of get_config, as Keras writes it: the serialized policy (``{'module': 'keras',
        'class_name': 'DTypePolicy', 'config': {'name': 'float32'}, ...}``; a DTypePolicyMap whole)."""
        return dtype_policies.serialize(self._dtype_policy)

    @property
    def dtype(self):
        """The dtype of the layer's variables (Keras's ``layer.dtype``: float32 under 'mixed_float16')."""
        return self._dtype.name

    @property
    def variable_dtype(self):
        return self._dtype.name

    @property
    def compute_dtype(self):
        """The dtype the layer computes in: its inputs are cast to it, and its outputs have it."""
        return self._compute.name

    @property
    def activity_regularizer(self):
        """A regularizer applied to every output of each call (Keras's ``activity_regularizer``): the
        penalty ``regularizer(output) / batch_size`` joins ``layer.losses``, hence the training loss."""
        return self.__dict__.get("_activity_regularizer")

    @activity_regularizer.setter
    def activity_regularizer(self, value):
        from .. import regularizers as _reg  # side floor, loaded lazily to keep import light
        object.__setattr__(self, "_activity_regularizer", _reg.get(value))

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        value = bool(value)
        self._trainable = value
        self._sync_requires_grad()
        for layer in self._layers:
            layer.trainable = value
        self._on_trainable_change()

    def _sync_requires_grad(self):
        """A weight asks for a gradient only while its layer and the weight itself are trainable: the
        ops of a frozen layer then skip its weight gradients and keep nothing only they would need."""
        for w in self._own_weights:
            w.requires_grad = bool(self._trainable and w.trainable and np.issubdtype(w.dtype, np.floating))

    def _on_trainable_change(self):
        """Hook for models: a compiled model warns that the change needs compile() to take effect."""

    # ----- weights
    def add_weight(self, shape=None, initializer=None, dtype=None, trainable=True, autocast=True,
                   regularizer=None, constraint=None, aggregation="none", name=None):
        """Create a weight (a Variable), tracked in creation order. ``add_weight("kernel", shape, init)``
        (name first) is accepted too."""
        if isinstance(shape, str):  # name given first: add_weight("kernel", shape, initializer)
            name, shape, initializer, dtype = shape, initializer, dtype, None
        shape = () if shape is None else tuple(int(d) for d in shape)
        dtype = np.dtype(dtype or self._dtype)
        if initializer is None:
            initializer = "glorot_uniform" if np.issubdtype(dtype, np.floating) else "zeros"
        init = initializers.get(initializer)
        # loading a model file: counted against the file's budget before allocating, and left at zeros (the
        # file's values replace it) instead of drawing random numbers that would be thrown away
        # fresh: an array nobody else holds (zeros, or a draw of one of lamina's own initializers), which the
        # Variable may take without its defensive copy
        fresh = True
        if charge_weight(shape, dtype.itemsize, f"{self.name}/{name}"):
            value = np.zeros(shape, dtype)
        elif isinstance(init, initializers.Initializer):
            value = init(shape, dtype=dtype)
            fresh = type(init).__module__ == initializers.__name__
        else:
            value, fresh = np.asarray(init(shape, dtype=dtype)), False
        from .. import regularizers as _reg, constraints as _con  # side floor, loaded lazily to keep import light
        var = Variable(backend.to_device(np.asarray(value, dtype), self._array_module()), name=name or f"variable_{len(self._own_weights)}",
                       trainable=trainable, dtype=dtype, constraint=_con.get(constraint), regularizer=_reg.get(regularizer),
                       _copy=not fresh)
        with self._name_scope():   # Keras's path: the open scopes, then this layer's
            var.path = f"{backend.current_path()}/{var.name}"
        var.requires_grad = bool(var.requires_grad and self._trainable and trainable)
        if not autocast:
            var.autocast = False
        self._own_weights.append(var)
        return var

    # ----- device
    _device = None  # None: follow lamina's current device (set_device / LAMINA_DEVICE)

    def _array_module(self):
        """The array module this layer makes its weights and input arrays with."""
        return backend.module_for(self._device) if self._device else backend.device_module()

    def _sublayers(self):
        """This layer and every layer inside it, each once."""
        seen, stack, out = set(), [self], []
        while stack:
            layer = stack.pop()
            if id(layer) in seen:
                continue
            seen.add(id(layer))
            out.append(layer)
            stack.extend(reversed(layer._layers))
        return out

    def to(self, device):
        """Move the weights and state of this layer (and of every layer inside it) to 'cpu' or 'cuda', in
        place, and return the layer, as torch's ``Module.to``. For a compiled model the optimizer's state
        moves too. Layers built later make their weights on that device, and NumPy inputs are moved there
        when the layer is called; ``predict`` still returns NumPy arrays. Asking for 'cuda' without CuPy
        raises RuntimeError and moves nothing."""
        xp = backend.module_for(device)
        tensors = []
        for layer in self._sublayers():
            object.__setattr__(layer, "_device", device)
            tensors.extend(layer._own_weights)
            for value in layer.__dict__.values():  # states and constants held as tensors (RNN states, ...)
                if isinstance(value, Tensor):
                    tensors.append(value)
                elif isinstance(value, (list, tuple)):
                    tensors.extend(v for v in value if isinstance(v, Tensor))
        optimizer = self.__dict__.get("optimizer")
        if optimizer is not None and hasattr(optimizer, "_slots"):
            for slots in optimizer._slots.values():
                tensors.extend(slots)
        for t in _unique(tensors):
            t.data = backend.to_device(t.data, xp)
            if t.grad is not None:
                t.grad = backend.to_device(t.grad, xp)
        return self

    def _tracked_own(self):
        return _unique(self._own_weights)

    @property
    def weights(self):
        """Own trainable, then own non-trainable weights, then those of sub-layers (Keras's order)."""
        own = self._tracked_own()
        return _unique([w for w in own if w.trainable] + [w for w in own if not w.trainable],
                       *(layer.weights for layer in self._layers))

    variables = weights

    @property
    def trainable_weights(self):
        if not self.trainable:
            return []
        return _unique([w for w in self._tracked_own() if w.trainable],
                       *(layer.trainable_weights for layer in self._layers))

    trainable_variables = trainable_weights

    @property
    def non_trainable_weights(self):
        if not self.trainable:
            return self.weights
        return _unique([w for w in self._tracked_own() if not w.trainable],
                       *(layer.non_trainable_weights for layer in self._layers))

    non_trainable_variables = non_trainable_weights

    def get_weights(self):
        """Copies of the weight values (later updates do not change them), in Keras's order."""
        return [np.array(w.numpy(), copy=True) for w in self.weights]

    def set_weights(self, weights):
        params = self.weights
        weights = list(weights)
        if len(weights) != len(params):
            raise ValueError(f"Layer '{self.name}' expects {len(params)} weight arrays "
                             f"({', '.join(w.name for w in params) or 'none'}), but received {len(weights)}.")
        weights = [backend.to_numpy(w.data if isinstance(w, Tensor) else w) for w in weights]  # CuPy too
        for p, w in zip(params, weights):
            if tuple(w.shape) != p.shape:
                raise ValueError(f"Layer '{self.name}' weight '{p.name}' has shape {p.shape}, "
                                 f"but the value given has shape {tuple(w.shape)}.")
        for p, w in zip(params, weights):
            p.assign(np.asarray(w, p.dtype))

    # ----- saving hooks (Keras 3's): model.save / load_model call these for every layer
    def _own_variables(self):
        own = self._tracked_own()
        return [w for w in own if w.trainable] + [w for w in own if not w.trainable]

    def save_own_variables(self, store):
        """Write this layer's own variables (not its sub-layers') into store, a dict-like of the layer's entry in
        model.weights.h5, under the keys "0", "1", ... (Keras's order). Override to save other state."""
        for i, v in enumerate(self._own_variables()):
            store[str(i)] = backend.to_numpy(v.data)

    def load_own_variables(self, store):
        """Set this layer's own variables from store (what save_own_variables wrote); ValueError on a mismatch."""
        own = self._own_variables()
        if len(store.keys()) != len(own):
            raise ValueError(f"Layer '{self.name}' expects {len(own)} variables, but the file holds "
                             f"{len(store.keys())} for it.")
        values = [np.asarray(store[str(i)]) for i in range(len(own))]
        for v, a in zip(own, values):
            if tuple(a.shape) != tuple(v.shape):
                raise ValueError(f"Layer '{self.name}' weight '{v.name}' has shape {tuple(v.shape)}, "
                                 f"but the file holds shape {tuple(a.shape)}.")
        for v, a in zip(own, values):
            v.assign(np.asarray(a, v.dtype))

    def save_assets(self, dir_path):
        """Write files (a vocabulary...) into dir_path, a folder of the archive's assets/. Default: nothing."""

    def load_assets(self, dir_path):
        """Read what save_assets wrote, from dir_path (a temporary copy of the layer's assets). Default: nothing."""

    def count_params(self):
        if not self.built and not self.weights:
            raise ValueError(f"You tried to call count_params on layer '{self.name}', but the layer isn't built. "
                             "Build it first by calling it on data or with build(input_shape).")
        return int(sum(int(np.prod(w.shape)) for w in self.weights))

    # ----- losses
    def add_loss(self, loss):
        """Add a loss (a scalar Tensor) to ``layer.losses`` from call(); in a StatelessScope it goes to the scope's
        ``losses`` when the scope collects them, else nowhere (as Keras's)."""
        if _remat.is_recomputing():   # (a rerun in backward: the forward recorded it)
            return
        scope = _READS.stateless
        if scope is not None:
            if scope.collect_losses:
                scope.add_loss(loss)
                scope._loss_layers[id(loss)] = self
            return
        self._activity_losses.append(loss)

    @property
    def losses(self):
        """Losses added (add_loss, activity regularizers) during the last outermost call (in a StatelessScope: those
        the scope collected from this layer), and the regularisation penalties of the trainable weights
        (differentiable; in a StatelessScope, of the weights' values there)."""
        scope = _READS.stateless
        if scope is None:
            out = list(self._activity_losses)
        else:
            out = [x for x in scope.losses if scope._loss_layers.get(id(x)) is self]
        for w in self._tracked_own() if self._trainable else ():
            if w.regularizer is not None and w.trainable:
                out.append(w.regularizer(w))
        for layer in self._layers:
            out.extend(layer.losses)
        return out

    def _clear_losses(self):
        scope = _READS.stateless
        if scope is not None and scope.losses:   # (the losses this layer added to the scope, as Keras's)
            scope.losses[:] = [x for x in scope.losses if scope._loss_layers.get(id(x)) is not self]
        if self._activity_losses:   # (every outermost call comes here: no attribute set when there is nothing)
            self._activity_losses = []
        for layer in self._layers:
            layer._clear_losses()

    # ----- building and calling
    def build(self, input_shape):
        """Create weights from the input shape. The base version creates none."""
        self.built = True

    def call(self, inputs, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError(f"Layer {type(self).__name__} has no call() method.")

    def compute_output_shape(self, input_shape):
        raise NotImplementedError

    def compute_mask(self, inputs, mask=None):
        return mask if self.supports_masking else None

    def _call_params(self):
        cache = type(self).__dict__.get("_call_sig_cache")
        if cache is None:
            params = inspect.signature(self.call).parameters
            default = params["training"].default if "training" in params else None
            default = None if default is inspect.Parameter.empty else default
            cache = (set(params), any(p.kind == p.VAR_KEYWORD for p in params.values()), default)
            type.__setattr__(type(self), "_call_sig_cache", cache)
        return cache

    def _convert_input(self, x):
        if isinstance(x, Tensor):
            t = x
        elif isinstance(x, (np.ndarray, np.generic, list, float, int)) or backend.is_cupy_array(x):
            t = Tensor(backend.to_device(np.asarray(x), self._array_module()) if not backend.is_cupy_array(x) else x)
        elif hasattr(x, "__array__") and hasattr(x, "shape") and hasattr(x, "dtype"):
            # another library's CPU tensor (a torch DataLoader's batch): its values, as Keras converts inputs
            t = Tensor(backend.to_device(np.asarray(x), self._array_module()))
        else:
            return x
        if (self.autocast and t.dtype.kind == "f" and t.dtype != self._compute
                and not getattr(_autocast_state, "off", False)):
            from ..ops.math import cast
            mask = getattr(t, "_keras_mask", None)
            t = cast(t, self._compute)
            t._keras_mask = mask
        return t

    def _cast_integers(self, t):
        """A bool or integer input in the layer's float dtype (layers with ``_cast_integer_inputs``)."""
        self._refuse_non_numeric(t)
        if isinstance(t, Tensor) and self.autocast and t.dtype.kind in "biu":
            from ..ops.math import cast
            mask = getattr(t, "_keras_mask", None)
            t = cast(t, self._compute)
            t._keras_mask = mask
        return t

    def _refuse_non_numeric(self, t):
        """A layer that computes in float given strings or Python objects (an object array's None became NaN)."""
        if not (isinstance(t, Tensor) and t.dtype.kind in "OSUV"):
            return
        raise ValueError(f"{type(self).__name__} '{self.name}': Invalid dtype: {t.dtype}. Expected a numeric input "
                         f"(float, int or bool); received an input of shape {tuple(t.shape)} and dtype {t.dtype}.")

    def _maybe_build(self, shapes):
        if self.built:
            return
        self.build(shapes)
        self.built = True

    def _first_call_arg(self, required=False):
        """The name of call()'s first positional parameter (Keras lets it be passed by keyword), or None;
        with ``required``: whether that parameter has no default (so None cannot be a meant input)."""
        cache = type(self).__dict__.get("_first_arg_cache")
        if cache is None:
            first = next(iter(inspect.signature(self.call).parameters.values()), None)
            positional = first is not None and first.kind in (first.POSITIONAL_ONLY, first.POSITIONAL_OR_KEYWORD)
            cache = (first.name if positional else None, positional and first.default is first.empty)
            type.__setattr__(type(self), "_first_arg_cache", cache)
        return cache[1] if required else cache[0]

    def __call__(self, *args, **kwargs):
        if not args:
            # the inputs given by keyword, as Keras allows: layer(logits=x, targets=y) for call(self, logits, ...)
            first = self._first_call_arg()
            key = first if first in kwargs else "inputs" if "inputs" in kwargs else None
            if key is None:
                raise TypeError(f"Layer '{self.name}' must be called with its inputs as the first argument.")
            args = (kwargs.pop(key),)
        inputs = args[0]
        if inputs is None and self._first_call_arg(required=True):
            # (Keras's words; the ops below would make a NaN scalar, pass None on, or fail on an attribute)
            raise ValueError(f"Inputs to a layer should be tensors. Got 'None' (of type {type(None)}) as input for "
                             f"layer '{self.name}'.")
        if ((len(args) > 1 or type(inputs) is not Tensor) and _holds_keras_tensor(args)) or (
                kwargs and _holds_keras_tensor(kwargs)):   # (one Tensor, the usual input, is no KerasTensor)
            return self._symbolic_call(*args, **kwargs)
        names, var_kw, training_default = self._call_params()
        if isinstance(inputs, (list, tuple)) and _holds_only_numbers(inputs):
            inputs = np.asarray(inputs)   # nested Python numbers are one array (not a list of 0-d inputs)
        # (one Tensor, the usual input, without the nest walks: every layer call comes through here)
        single = type(inputs) is Tensor
        if not single:
            inputs = _nest_map(self._convert_input, inputs)
        elif self.autocast and inputs.data.dtype != self._compute:   # (else _convert_input returns it as it is)
            inputs = self._convert_input(inputs)
        if self._cast_integer_inputs:
            inputs = _nest_map(self._cast_integers, inputs)
        elif self._numeric_inputs:
            for t in ((inputs,) if single else _nest_flatten(inputs)):
                self._refuse_non_numeric(t)
        args = (inputs,) if len(args) == 1 else (inputs,) + tuple(
            _nest_map(self._convert_input, a) if isinstance(a, (np.ndarray, Tensor)) else
            self._convert_input(np.asarray(a)) if isinstance(a, (list, tuple)) and _holds_only_numbers(a) else a
            for a in args[1:])
        # training: given by the caller, else from an outer layer call, else call()'s default (Keras)
        training = kwargs.pop("training", None)
        if training is None:
            training = current_training()
        if training is None:
            training = training_default
        if "training" in names or var_kw:
            kwargs["training"] = bool(training) if training is not None else False
        if ("mask" in names) and kwargs.get("mask") is None:
            masks = [getattr(t, "_keras_mask", None) for t in _nest_flatten(inputs)]
            if any(m is not None for m in masks):
                kwargs["mask"] = masks[0] if not isinstance(inputs, (list, tuple)) else masks
        # The scopes below are this layer's name scope (sublayers built in call() get its path), the outer-call depth
        # (the outermost call clears the losses that add_loss and activity regularizers recorded in the layer and its
        # sub-layers, as Keras: a layer called several times inside one outer call keeps every call's losses), the
        # training flag (call_context's) and the autocast dtype, entered and left by hand: as context managers
        # they were ~3-4 us of every layer call
        stack = _NAME_SCOPES.stack   # (backend.name_scope_stack(), inline)
        top = stack[-1] if stack else None
        pushed = top is None or top.caller is not self or top.name != self.name   # (name_scope's deduplicate)
        try:
            if pushed:
                stack.append(self._call_scope())
            try:
                if not self.built:
                    # the spec set in __init__ first, as Keras: a wrong rank never reaches build (a 0-d input
                    # was an IndexError there); build may set a stricter spec, checked below
                    self._check_input_spec(inputs)
                    compute = self._compute
                    self._maybe_build(_nest_map(lambda t: t.shape if isinstance(t, Tensor) else None, inputs))
                    if self._compute != compute:   # (a DTypePolicyMap's policy for the path the build gave it)
                        inputs = _nest_map(self._convert_input, inputs)
                        args = (inputs,) + args[1:]
                spec = self.input_spec
                if spec is not None:
                    if single and type(spec) is InputSpec:   # (_check_input_spec's usual case, inline)
                        spec.check(self, 0, inputs.data.shape)
                    else:
                        self._check_input_spec(inputs)
                depth = getattr(_ctx, "depth", 0)
                if depth == 0 and not _remat.is_recomputing():   # (a rerun in backward keeps the forward's losses)
                    self._clear_losses()
                _ctx.depth = depth + 1
                try:
                    if getattr(self, "_remat_mode", None) is None:
                        if _recorder() is not None:   # (its own generators, for an enclosing remat's rerun)
                            _remat.note_layer_call(self)
                        outer = getattr(_ctx, "training", None)
                        if training is not None:
                            _ctx.training = training
                        try:
                            # (the usual: no autocast scope open and none to open, _autocast_scope's test inline)
                            scope = (_NO_SCOPE if _READS.dtype is None and self._compute == self._dtype
                                     else self._autocast_scope())
                            if scope is _NO_SCOPE:
                                outputs = self.call(*args, **kwargs)
                            else:
                                with scope:
                                    outputs = self.call(*args, **kwargs)
                        finally:
                            _ctx.training = outer
                    else:
                        outputs = self._rematerialized_call(training, args, kwargs)
                    if self.activity_regularizer is not None:
                        self._add_activity_losses(outputs)
                finally:
                    _ctx.depth = depth
            finally:
                if pushed:
                    stack.pop()
        except (ValueError, TypeError) as e:
            _raise_named(self, e)
        self._set_output_mask(inputs, outputs, kwargs.get("mask"))
        return outputs

    def stateless_call(self, trainable_variables, non_trainable_variables, *args, return_losses=False, **kwargs):
        """Call the layer on ``*args, **kwargs`` with the given weight values, changing none of its state
        (Keras's ``stateless_call``): ``trainable_variables`` and ``non_trainable_variables`` hold one value each
        for ``layer.trainable_variables`` and ``layer.non_trainable_variables``, in their order.

        Returns ``(outputs, non_trainable_variables)``: the latter the values of the non-trainable variables
        after the call (a BatchNormalization's moving statistics updated in training, the others as given), to
        assign back or to pass to the next call; with ``return_losses=True``, ``(outputs, non_trainable_variables,
        losses)``. The gradient of the outputs reaches the values given as Tensors. Randomness (Dropout's) comes
        from lamina's generators, which are not variables, so a random layer draws from them as in a call.

        >>> import numpy as np, lamina
        >>> bn = lamina.layers.BatchNormalization()
        >>> x = np.arange(6, dtype="float32").reshape(3, 2)
        >>> _ = bn(x)
        >>> values = [np.asarray(v) for v in bn.non_trainable_variables]
        >>> y, new = bn.stateless_call(bn.trainable_variables, values, x, training=True)
        >>> new[0].numpy(), bn.moving_mean.numpy()
        (array([0.02, 0.03], dtype=float32), array([0., 0.], dtype=float32))
        """
        if not self.built:
            raise ValueError(f"To call stateless_call, {type(self).__name__} must be built (i.e. its variables must "
                             "have been already created). You can build it by calling it on some data.")
        trainable, non_trainable = self.trainable_variables, self.non_trainable_variables
        for what, given, own in (("trainable_variables", trainable_variables, trainable),
                                 ("non_trainable_variables", non_trainable_variables, non_trainable)):
            if len(given) != len(own):
                raise ValueError(f"Argument `{what}` must be a list of tensors corresponding 1:1 to "
                                 f"{type(self).__name__}().{what}. Received list with length {len(given)}, but "
                                 f"expected {len(own)} variables.")
        mapping = list(zip(trainable, trainable_variables)) + list(zip(non_trainable, non_trainable_variables))
        losses = None
        with StatelessScope(state_mapping=mapping, collect_losses=return_losses) as scope:
            outputs = self(*args, **kwargs)
            if return_losses:
                losses = self.losses
        new_values = [scope.get_current_value(v) for v in non_trainable]
        if return_losses:
            return outputs, new_values, losses
        return outputs, new_values

    def _rematerialized_call(self, training, args, kwargs):
        """call() under the RematScope the layer was created in (Keras's modes): 'full' recomputes the whole
        call in backward, 'larger_than' when the output has more values than the threshold, 'activations'
        only the layer's activation, 'list_of_layers' the whole call of the layers named."""
        mode = self._remat_mode

        def run(*a, **k):
            _remat.note_layer_call(self)   # (its own generators, for the rerun; an enclosing one's too)
            with call_context(training), self._autocast_scope():
                return self.call(*a, **k)
        if mode.mode == "list_of_layers" and self.name in mode.layer_names:
            return _remat.remat(run)(*args, **kwargs)
        if mode.mode == "activations" and getattr(self, "activation", None) is not None:
            original = self.activation
            self.activation = _remat.remat(original)
            try:
                return run(*args, **kwargs)
            finally:
                self.activation = original
        return _remat.rematerialized(mode, run)(*args, **kwargs)

    def _add_activity_losses(self, outputs):
        for out in _nest_flatten(outputs):
            if not isinstance(out, Tensor):
                continue
            penalty = self.activity_regularizer(out)
            if out.ndim > 0:  # per sample, as Keras 3 (an empty batch adds 0, as its divide_no_nan)
                penalty = penalty / float(out.shape[0]) if out.shape[0] else penalty * 0.0
            self.add_loss(penalty)

    def _set_output_mask(self, inputs, outputs, mask):
        if (mask is None and type(inputs) is Tensor and type(outputs) is Tensor
                and getattr(inputs, "_keras_mask", None) is None and type(self).compute_mask is Layer.compute_mask):
            # (the usual call: no mask in, none to compute: what the general path below does then)
            if getattr(outputs, "_keras_mask", None) is None:
                outputs._keras_mask = None
            return
        if mask is None:
            masks = [getattr(t, "_keras_mask", None) for t in _nest_flatten(inputs)]
            mask = None if all(m is None for m in masks) else (masks[0] if len(masks) == 1 else masks)
        out_mask = self.compute_mask(inputs, mask) if (mask is not None or type(self).compute_mask is not Layer.compute_mask) else None
        if isinstance(outputs, Tensor):
            if out_mask is not None and not isinstance(out_mask, list):
                outputs._keras_mask = out_mask
            elif getattr(outputs, "_keras_mask", None) is None:
                outputs._keras_mask = None
        elif isinstance(outputs, (list, tuple, dict)) and out_mask is not None:
            # several outputs (a split): compute_mask's nest gives each output its mask, as Keras pairs the
            # flattened outputs with the flattened masks; an output that has a mask already keeps it
            flat_masks = _nest_flatten(out_mask) if isinstance(out_mask, (list, tuple, dict)) else [out_mask]
            for out, m in zip(_nest_flatten(outputs), flat_masks):
                if isinstance(out, Tensor) and m is not None and getattr(out, "_keras_mask", None) is None:
                    out._keras_mask = m

    def _check_input_spec(self, inputs):
        spec = self.input_spec
        if spec is None:
            return
        if type(inputs) is Tensor and isinstance(spec, InputSpec):   # (the usual call: one Tensor, one spec)
            spec.check(self, 0, inputs.data.shape)
            return
        specs = spec if isinstance(spec, (list, tuple)) else [spec]
        flat = _nest_flatten(inputs)
        if isinstance(spec, InputSpec) and len(flat) > 1:   # (Keras's check: Dense called on [a, b])
            raise ValueError(f'Layer "{self.name}" expects 1 input(s), but it received {len(flat)} input tensors. '
                             f"Received shapes: {[tuple(getattr(x, 'shape', ())) for x in flat]}")
        for i, (spec, x) in enumerate(zip(specs, flat)):
            if spec is not None and hasattr(x, "shape"):   # (an optional spec's None input: nothing to check)
                spec.check(self, i, tuple(x.shape))

    # ----- symbolic (functional API)
    def _symbolic_call(self, *args, **kwargs):
        inputs = args[0]
        # a symbolic mask handed back by hand (mask=x._keras_mask) is no graph tensor: the layer's call
        # takes the mask from its input when the graph runs
        kwargs = {k: None if getattr(v, "_is_symbolic_mask", False) else v for k, v in kwargs.items()}
        shapes = _nest_map(lambda t: t.shape if isinstance(t, KerasTensor) else None, inputs)
        try:
            with self._name_scope():
                if not self.built:
                    self._check_input_spec(inputs)   # (before build, as the eager call)
                    self._maybe_build(shapes)
                self._check_input_spec(inputs)
                out_spec = self.compute_output_spec(*args, **kwargs)
        except (ValueError, TypeError) as e:
            _raise_named(self, e)
        node_index = len(self._inbound_nodes)
        counter = iter(range(10 ** 6))

        def make(spec):
            shape, dtype = spec
            return KerasTensor(shape, dtype, name=self.name, history=(self, node_index, next(counter)))

        outputs = _map_specs(make, out_spec)
        self._inbound_nodes.append(Node(self, args, kwargs, outputs))
        self._set_symbolic_output_mask(inputs, outputs, kwargs.get("mask"))
        return outputs

    def _set_symbolic_output_mask(self, inputs, outputs, mask):
        """The symbolic outputs' ``_keras_mask``, as Keras gives them: a bool KerasTensor of the mask's shape
        where the layer passes on or makes a mask (compute_mask run on dummy inputs of two sizes, the sizes
        that differ are None). A mask is metadata, not a node of the graph: the graph makes it again when it
        runs."""
        in_masks = [getattr(t, "_keras_mask", None) for t in _nest_flatten(inputs)]
        if mask is None and all(m is None for m in in_masks):
            if type(self).compute_mask is Layer.compute_mask:
                return
            # no mask comes in: most layers (merging, pooling) answer None at once, without the dummy inputs'
            # arrays (an Add in a ResNet: two (2, 56, 56, 256) arrays of ones, twice; ~11% of building one)
            try:
                with no_grad():
                    if self.compute_mask(inputs, None) is None:
                        return
            except Exception:   # a compute_mask that needs real arrays: the dummy inputs below
                pass
        found = []
        for fill in (2, 3):
            dummy_in = _nest_map(lambda t: _dummy_tensor(self, t, fill), inputs)
            if mask is not None:
                m = _nest_map(lambda t: _dummy_tensor(self, t, fill), mask)
            else:
                ms = [getattr(t, "_keras_mask", None) for t in _nest_flatten(dummy_in)]
                m = None if all(v is None for v in ms) else (ms[0] if len(ms) == 1 else ms)
            try:
                with no_grad():
                    found.append(self.compute_mask(dummy_in, m))
            except Exception:   # a compute_mask that cannot run on dummy data: no symbolic mask, as before
                return
        first, second = found
        if first is None:
            return
        firsts = _nest_flatten(first) if isinstance(first, (list, tuple, dict)) else [first]
        seconds = _nest_flatten(second) if isinstance(second, (list, tuple, dict)) else [second]
        for out, m1, m2 in zip(_nest_flatten(outputs), firsts, seconds):
            if isinstance(out, KerasTensor) and isinstance(m1, Tensor) and isinstance(m2, Tensor):
                shape = tuple(None if d1 != d2 else d1 for d1, d2 in zip(m1.shape, m2.shape))
                sym = KerasTensor(shape, "bool", name=f"{self.name}_mask")
                sym._is_symbolic_mask = True
                out._keras_mask = sym

    def compute_output_spec(self, *args, **kwargs):
        """(shape, dtype) of the output for symbolic inputs: from compute_output_shape when the layer
        defines it, else by running call() on small dummy data."""
        inputs = args[0]
        if type(self).compute_output_shape is not Layer.compute_output_shape and len(args) == 1:
            shapes = _nest_map(lambda t: t.shape, inputs)
            try:
                out_shape = self.compute_output_shape(shapes)
            except NotImplementedError:
                out_shape = None
            if out_shape is not None:
                dtype = self._output_dtype(inputs)
                if isinstance(out_shape, list) or (isinstance(out_shape, tuple) and out_shape and
                                                   isinstance(out_shape[0], (tuple, list))):
                    return [(tuple(s), dtype) for s in out_shape]
                return (tuple(out_shape), dtype)
        return self._trace_output_spec(*args, **kwargs)

    def _output_dtype(self, inputs):
        return self._compute.name

    def _trace_output_spec(self, *args, **kwargs):
        outs = []
        for fill in (2, 3):
            a = _nest_map(lambda t: _dummy_tensor(self, t, fill), args)
            k = _nest_map(lambda t: _dummy_tensor(self, t, fill), kwargs)
            k.pop("training", None)
            # Keras's symbolic evaluation: in a StatelessScope (add_loss keeps nothing, an assignment changes
            # nothing) and a SymbolicScope
            with no_grad(), StatelessScope(), SymbolicScope():
                outs.append(Layer.__call__(self, *a, training=False, **k))
        first, second = outs

        def spec(o1, o2):
            shape = tuple(None if d1 != d2 else d1 for d1, d2 in zip(o1.shape, o2.shape))
            return (shape, o1.dtype.name)
        if isinstance(first, Tensor):
            return spec(first, second)
        return _nest_map_pair(spec, first, second)

    # ----- introspection
    @property
    def input(self):
        if not self._inbound_nodes:
            raise AttributeError(f"Layer '{self.name}' is not connected: it has no defined input.")
        ins = self._inbound_nodes[0].input_tensors
        return ins[0] if len(ins) == 1 else ins

    @property
    def output(self):
        if not self._inbound_nodes:
            raise AttributeError(f"Layer '{self.name}' has never been called and thus has no defined output.")
        return self._inbound_nodes[0].outputs

    @property
    def input_shape(self):
        i = self.input
        return i.shape if isinstance(i, KerasTensor) else [t.shape for t in i]

    @property
    def output_shape(self):
        o = self.output
        return o.shape if isinstance(o, KerasTensor) else [t.shape for t in _nest_flatten(o)]

    # ----- config
    def get_config(self):
        config = {"name": self.name, "trainable": self.trainable, "dtype": self._dtype_config()}
        if self.activity_regularizer is not None:
            config["activity_regularizer"] = regularizers.serialize(self.activity_regularizer)
        if self._batch_input_shape is not None:
            config["batch_input_shape"] = list(self._batch_input_shape)
        for k, v in self._auto_config.items():
            if k in ("name", "trainable", "dtype", "input_shape", "batch_size", "input_dim", "batch_input_shape"):
                continue
            if k in _STANDARDIZED:   # as Keras reports them: kernel_size=3 -> (3, 3), data_format None -> resolved
                std = self.__dict__.get(k)
                if isinstance(std, tuple) or (k == "data_format" and isinstance(std, str)):
                    config[k] = std
                    continue
            if k == "activation" and v is None:
                v = "linear"    # Keras serialises no activation as 'linear'
            config[k] = _serialize_argument(k, v)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"


# Arguments named ``*_initializer``, ``*_regularizer`` and ``*_constraint`` (kernel_initializer, beta_constraint,
# activity_regularizer, ...) -> the floor that reads them; get_config writes them as that floor serializes them.
_FAMILIES = (("_initializer", initializers), ("_regularizer", regularizers), ("_constraint", constraints))


def _serialize_argument(key, value):
    """A constructor argument as Keras's get_config writes it: an initializer, regularizer or constraint, given as
    a name ('glorot_uniform', 'l2'), a serialized dict or an object, as the dict its floor serializes it to (the
    objects the layer holds, so equal to Keras's); anything else by the registry's serialize."""
    if value is not None:
        for suffix, family in _FAMILIES:
            if key.endswith(suffix):
                try:
                    return family.serialize(family.get(value))
                except (ValueError, TypeError, KeyError):
                    break       # not one of the family's (a layer's own argument of that name): as given
    return serialize(value)


# Constructor arguments a layer standardises (an int for every spatial axis, a list as a tuple, the default data
# format resolved): get_config reports the standardised value, as Keras's does.
_STANDARDIZED = ("kernel_size", "strides", "dilation_rate", "pool_size", "size", "cropping", "padding",
                 "output_padding", "target_shape", "dims", "data_format")


def _unique(*lists):
    """The weights of the lists in order, each once (a weight shared by two layers is listed once)."""
    out, seen = [], set()
    for ws in lists:
        for w in ws:
            if id(w) not in seen:
                seen.add(id(w))
                out.append(w)
    return out


def _dummy_tensor(layer, t, fill):
    """Ones in the place of a KerasTensor (unknown sizes = fill), as Keras's tracing: valid ids for an
    Embedding inside a custom layer, too; with an all-True mask where the KerasTensor has one, so that a
    mask-consuming call() sees a mask while traced, as in Keras."""
    if not isinstance(t, KerasTensor):
        return t
    xp = layer._array_module()
    out = Tensor(xp.ones(tuple(fill if d is None else d for d in t.shape), t.dtype))
    m = getattr(t, "_keras_mask", None)
    if isinstance(m, KerasTensor):
        out._keras_mask = Tensor(xp.ones(tuple(fill if d is None else d for d in m.shape), bool))
    return out


def _map_specs(fn, spec):
    """Apply fn to every (shape, dtype) leaf of a nested output spec."""
    if _is_spec(spec):
        return fn(spec)
    if isinstance(spec, (list, tuple)):
        return type(spec)(_map_specs(fn, s) for s in spec)
    if isinstance(spec, dict):
        return {k: _map_specs(fn, v) for k, v in spec.items()}
    raise TypeError(f"Cannot build symbolic outputs from {spec!r}")


def _is_spec(x):
    return isinstance(x, tuple) and len(x) == 2 and isinstance(x[0], tuple) and isinstance(x[1], str)


def _nest_map_pair(fn, a, b):
    if isinstance(a, (list, tuple)):
        return type(a)(_nest_map_pair(fn, x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return {k: _nest_map_pair(fn, a[k], b[k]) for k in a}
    return fn(a, b)


def _build_in_name_scope(build):
    """Wrap a subclass build so that it runs in the layer's name scope, as Keras's: the weights it makes, and
    those of sublayers it builds (an RNN's cell, a Bidirectional's layers), get Keras's paths."""
    @functools.wraps(build)
    def wrapped(self, *args, **kwargs):
        with self._name_scope():
            self._path = backend.current_path()
            if isinstance(self._dtype_policy, DTypePolicyMap):   # (the policy of the path it now has)
                self._resolve_dtype_policy()
            return build(self, *args, **kwargs)
    wrapped._in_name_scope = True
    return wrapped


# the base build too (a layer without weights of its own): every layer's build sets its path, as Keras's
Layer.build = _build_in_name_scope(Layer.build)


def _capture_config(init):
    """Wrap a subclass __init__ so that the outermost call records its arguments (the layer's config)."""
    sig = inspect.signature(init)
    fast = _config_binder(sig)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        policy = kwargs.get("dtype")
        if isinstance(policy, dict) and policy.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
            # a config's serialized policy (get_config writes Keras's form): its name, as a layer's own code
            # reading its dtype argument expects ('int64', 'mixed_float16', ...)
            kwargs["dtype"] = (policy.get("config") or {}).get("name")
        if "_auto_config" not in self.__dict__:
            config = fast(args, kwargs) if fast is not None else None
            if config is None:
                config = _bound_config(sig, self, args, kwargs)
            object.__setattr__(self, "_auto_config", config)
        init(self, *args, **kwargs)

    __init__._captures_config = True
    return __init__


def _bound_config(sig, self, args, kwargs):
    """The config of a call through inspect's binding (any signature, and the calls that raise)."""
    try:
        bound = sig.bind(self, *args, **kwargs)
        bound.apply_defaults()
        config = {}
        for pname, value in list(bound.arguments.items())[1:]:
            p = sig.parameters[pname]
            if p.kind == p.VAR_KEYWORD:
                config.update(value)
            elif p.kind == p.VAR_POSITIONAL:
                if value:
                    config[pname] = list(value)
            else:
                config[pname] = value
    except TypeError:
        config = {}
    return config


def _config_binder(sig):
    """A function (args, kwargs) -> the config _bound_config gives, for the calls that bind cleanly (else None,
    and the caller binds through inspect). inspect's bind + apply_defaults took ~40 us a layer (Conv2D's 20
    parameters), half of building one; this takes a few. None for signatures it does not cover (positional-
    only parameters). The config is the same dict: every parameter in the signature's order, *args as a list
    when given, **kwargs's items in the order they came."""
    P = inspect.Parameter
    params = list(sig.parameters.values())
    if not params or params[0].kind not in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD):
        return None
    first, params = params[0].name, params[1:]
    if any(p.kind == P.POSITIONAL_ONLY for p in params):
        return None
    positional = [p.name for p in params if p.kind == P.POSITIONAL_OR_KEYWORD]
    named = {p.name for p in params if p.kind in (P.POSITIONAL_OR_KEYWORD, P.KEYWORD_ONLY)}
    var_args = any(p.kind == P.VAR_POSITIONAL for p in params)
    var_kwargs = any(p.kind == P.VAR_KEYWORD for p in params)
    order = [(p.name, p.kind, p.default) for p in params]
    empty, var_pos, var_kw = P.empty, P.VAR_POSITIONAL, P.VAR_KEYWORD
    n_pos = len(positional)

    def bind(args, kwargs):
        if (len(args) > n_pos and not var_args) or first in kwargs:
            return None
        values = dict(zip(positional, args))
        extra = {}
        for k, v in kwargs.items():
            if k in named:
                if k in values:
                    return None                     # given twice: inspect's TypeError
                values[k] = v
            elif var_kwargs:
                extra[k] = v
            else:
                return None                         # unexpected keyword: inspect's TypeError
        config = {}
        for name, kind, default in order:
            if kind is var_pos:
                if len(args) > n_pos:
                    config[name] = list(args[n_pos:])
            elif kind is var_kw:
                config.update(extra)
            elif name in values:
                config[name] = values[name]
            elif default is not empty:
                config[name] = default
            else:
                return None                         # missing: inspect's TypeError
        return config
    return bind


class Lambda(Layer):
    """Wraps a Python function as a layer (here, beside Layer: operators on symbolic tensors make them). In memory only: a model file never stores or runs its code,
    so a model with a Lambda layer cannot be saved (use a registered custom layer instead)."""

    def __init__(self, function, output_shape=None, mask=None, arguments=None, **kwargs):
        super().__init__(**kwargs)
        if not callable(function):
            raise ValueError(f"Lambda '{self.name}': function must be callable. Received: {function!r}")
        self.function = function
        self.arguments = arguments or {}
        self._output_shape = output_shape
        self.supports_masking = mask is not None

    def call(self, inputs):
        return self.function(inputs, **self.arguments)

    def compute_output_shape(self, input_shape):
        if self._output_shape is None:
            raise NotImplementedError
        if callable(self._output_shape):
            return self._output_shape(input_shape)
        # output_shape leaves the batch out; the batch is the first dimension of the first input, also when
        # the inputs are a list (a distance of two towers): Keras's tree.flatten(input_shape)[0]
        batch = _tree.flatten(input_shape)[0]
        return _tree.map_shape_structure(lambda s: (batch,) + tuple(s), self._output_shape)

    def get_config(self):
        raise ValueError(f"Lambda layer '{self.name}' cannot be serialised: lamina never stores or executes "
                         "code from a model file. Replace it with a custom Layer subclass registered with "
                         "lamina.utils.register_keras_serializable.")
