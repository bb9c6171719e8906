"""Keras's two state scopes: ``keras.StatelessScope`` and ``keras.SymbolicScope``.

StatelessScope: inside it, a variable it maps reads as the value given for it, an assignment to a variable is
recorded in the scope instead of made (``scope.get_current_value(variable)`` gives it), and, with
``collect_losses``, the losses layers add go to ``scope.losses``. On closing, every variable holds what it held
before. ``Layer.stateless_call`` and ``Optimizer.stateless_apply`` are built on it, as in Keras.

How a lamina variable reads the scope's value: a Variable is a Tensor whose array is ``.data``, and everything
reads that array (ops, fused kernels, optimizers writing in place, ``numpy()``). So while the scope is open each
variable it maps holds a private copy of the value as its ``.data`` (its own array is kept aside and put back at
the end), and whatever lamina does to the variable inside reads and writes that copy. On top of it, the ops of
the thread that opened the scope take the value given for a mapped variable in its place (tensor.Op.apply, the
one place every op goes through; no cost while no scope is open), so the gradient of a result reaches the
tensors given as values, as in Keras on its torch backend; after an in-place change (an optimizer step) the ops
read the variable's current copy. ``assign``, ``assign_add`` and ``assign_sub`` hand the new value to the scope,
which swaps it in the same way (tensor.Variable).

Differences from Keras: the arrays are swapped for the whole process while the scope is open (the scope itself
is per thread, as Keras's), so another thread reading a mapped variable meanwhile reads the scope's value;
variables made inside the scope are made with their values and assigned directly (Keras defers their
initialization and refuses a variable made from a concrete value there); inside a nested scope, a variable
only the outer one maps reads as its value in the outer scope (Keras reads the variable's own value).

SymbolicScope marks the symbolic stage: lamina enters it (with a StatelessScope) while a layer's call() runs on
placeholder data to infer the shape of its output on symbolic inputs (Layer.compute_output_spec), as Keras
enters it around its symbolic evaluation; ``in_symbolic_scope()`` says whether one is open.
"""
import threading

import numpy as np

from . import backend
from .tensor import Tensor, Variable, _as_array, cast, set_stateless_scope, stateless_scope

__all__ = ["StatelessScope", "SymbolicScope", "in_stateless_scope", "get_stateless_scope", "in_symbolic_scope",
           "get_symbolic_scope"]


class StatelessScope:
    """A scope in which variables read as given values and assignments change nothing (``keras.StatelessScope``).

    Args:
        state_mapping: pairs ``(variable, value)``; inside the scope the variable reads as the value (an array,
            a Tensor, or another Variable; cast to the variable's dtype, on its device; a Tensor of its dtype is
            used as it is, so gradients reach it).
        collect_losses: the losses layers add with ``add_loss`` (activity regularizers included) go to
            ``scope.losses`` (without it they are dropped inside the scope, as in Keras).
        initialize_variables: Keras initializes, on leaving, the variables made inside the scope; lamina's
            variables are made with their values, so there is nothing to do (kept for Keras's signature).

    Inside, ``variable.assign(x)`` (and ``assign_add``, ``assign_sub``, an optimizer's update) records the new
    value: later reads in the scope see it, ``scope.get_current_value(variable)`` returns it, during the scope
    and after; the variable itself is unchanged once the scope closes.

    >>> import numpy as np, lamina
    >>> v = lamina.Variable(np.zeros(2))
    >>> with lamina.StatelessScope([(v, np.ones(2))]) as scope:
    ...     _ = v.assign(v + 1.0)
    ...     inside = v.numpy()
    >>> inside, v.numpy(), scope.get_current_value(v).numpy()
    (array([2., 2.], dtype=float32), array([0., 0.], dtype=float32), array([2., 2.], dtype=float32))
    """

    def __init__(self, state_mapping=None, collect_losses=False, initialize_variables=True):
        self.collect_losses = collect_losses
        self.initialize_variables = initialize_variables
        self.losses = []
        self.state_mapping = {}     # id(variable) -> its value in the scope (a Tensor, or a Variable)
        self._variables = {}        # id(variable) -> the variable, for each key of state_mapping
        self._versions = {}         # id(variable) -> its version when its value here was last set (in-place check)
        self._own = {}              # id(variable) -> (variable, its own array, its version), while the scope is open
        self._created = set()       # ids of the variables made inside the scope: assigned directly
        self._loss_layers = {}      # id(loss) -> the layer that added it (Layer.losses inside the scope)
        self._open = False
        self.original_scope = None
        pairs = list(state_mapping or ())
        keys = {id(k) for k, _ in pairs if isinstance(k, Variable)}
        for k, v in pairs:
            if not isinstance(k, Variable):
                raise ValueError("Invalid reference variable in StatelessScope: all keys in argument `mapping` must "
                                 f"be Variable instances. Received instead: {k!r}")
            if isinstance(v, Variable) and v is not k and id(v) in keys:
                v = Tensor(v.data.copy())   # (a variable this scope maps too: its value now, before the swap)
            value = self._value(k, v)
            if tuple(value.shape) != k.shape:
                raise ValueError("Invalid variable value in StatelessScope: all values in argument `mapping` must be "
                                 f"tensors with a shape that matches the corresponding variable shape. Variable "
                                 f"{k!r} has shape {k.shape}; its value has shape {tuple(value.shape)}.")
            self.state_mapping[id(k)] = value
            self._variables[id(k)] = k

    @staticmethod
    def _value(variable, value):
        """value as the scope keeps it: a Tensor (or Variable) of the variable's dtype on its device."""
        xp = backend.get_array_module(variable.data)
        if isinstance(value, Tensor):
            if backend.get_array_module(value.data) is not xp:
                return Tensor(backend.to_device(value.data, xp), dtype=variable.dtype)
            return value if value.dtype == variable.dtype else cast(value, variable.dtype)
        array = _as_array(value, variable.dtype)
        if backend.get_array_module(array) is not xp:
            array = backend.to_device(array, xp)
        return Tensor(array)

    def __enter__(self):
        for key, variable in self._variables.items():
            self._install(variable, self.state_mapping[key].data.copy())
        self._open = True
        self.original_scope = set_stateless_scope(self)
        return self

    def __exit__(self, *exc):
        set_stateless_scope(self.original_scope)
        self._open = False
        for key, (variable, array, version) in self._own.items():
            # changed in place inside (an optimizer's update), or a variable given as the value (which goes on
            # changing): the scope's copy, which nothing else holds from now on
            if variable._version != self._versions[key] or isinstance(self.state_mapping.get(key), Variable):
                self.state_mapping[key] = Tensor(variable.data)
            variable.data = array
            variable._version = version
        self._own = {}
        return False

    def _install(self, variable, array):
        """The variable holds array (the scope's own) until the scope closes; its own array is put aside."""
        key = id(variable)
        if key not in self._own:
            self._own[key] = (variable, variable.data, variable._version)
        variable.data = array
        self._versions[key] = variable._version

    def _read(self, variable):
        """What variable reads as in the scope: the value given or assigned, or, after an in-place change of the
        scope's copy, or for a variable the scope does not map, the variable itself."""
        key = id(variable)
        value = self.state_mapping.get(key)
        if value is None or variable._version != self._versions.get(key):
            return variable
        return value

    def _assign(self, variable, array, fresh):
        """Record array as the variable's new value (Variable.assign*). False for a variable made inside the scope:
        the caller assigns it directly. ``fresh``: nobody else holds the array (else it is copied)."""
        if id(variable) in self._created:
            return False
        if isinstance(array, np.generic) or not fresh:
            array = backend.get_array_module(array).array(array, copy=True)
        if tuple(array.shape) != variable.shape:
            raise ValueError(f"Cannot assign a value of shape {tuple(array.shape)} to variable "
                             f"'{variable.name}' of shape {variable.shape}.")
        if array.dtype != variable.dtype:
            array = array.astype(variable.dtype)
        self.state_mapping[id(variable)] = Tensor(array)
        self._variables[id(variable)] = variable
        self._install(variable, array)
        return True

    def _note_created(self, variable):
        scope = self
        while scope is not None:
            scope._created.add(id(variable))
            scope = scope.original_scope

    def add_loss(self, loss):
        """Keep a loss a layer added (``collect_losses``)."""
        self.losses.append(loss)

    def add_update(self, update):
        """Record ``(variable, value)`` as the variable's value in the scope (what an assignment does)."""
        variable, value = update
        value = self._value(variable, value)
        self.state_mapping[id(variable)] = value
        self._variables[id(variable)] = variable
        if self._open:
            self._install(variable, value.data.copy())

    def get_current_value(self, variable):
        """The variable's value in the scope (given or assigned, also after the scope closed), or None when the
        scope neither maps nor assigned it."""
        key = id(variable)
        value = self.state_mapping.get(key)
        if value is not None and self._open and variable._version != self._versions.get(key):
            return Tensor(variable.data.copy())   # (its copy changed in place: a snapshot, as later changes go on)
        return value


def in_stateless_scope():
    """Whether a StatelessScope is open in this thread."""
    return stateless_scope() is not None


def get_stateless_scope():
    """The StatelessScope open in this thread, or None."""
    return stateless_scope()


class _SymbolicState(threading.local):
    scope = None


_SYMBOLIC = _SymbolicState()


class SymbolicScope:
    """Marks the symbolic stage: a layer's call() run to infer its output's shape and dtype, not on real data
    (``keras.SymbolicScope``). Code that must behave differently then asks ``in_symbolic_scope()``."""

    def __enter__(self):
        self.original_scope = _SYMBOLIC.scope
        _SYMBOLIC.scope = self
        return self

    def __exit__(self, *exc):
        _SYMBOLIC.scope = self.original_scope
        return False


def in_symbolic_scope():
    """Whether a SymbolicScope is open in this thread."""
    return _SYMBOLIC.scope is not None


def get_symbolic_scope():
    """The SymbolicScope open in this thread, or None."""
    return _SYMBOLIC.scope
