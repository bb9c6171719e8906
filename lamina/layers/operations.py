"""Keras's symbolic operations as nodes of a functional graph.

Keras code may call ``keras.ops`` functions on symbolic tensors while building a functional model
(``mask = ops.not_equal(tokens, 0)``, ``y = ops.softmax(x, axis=-1)``); Keras then records each call as an
operation node, saved in ``.keras`` files under ``keras.src.ops.numpy`` (or ``.nn``, ``.math``, ``.core``)
with the op's class name (NotEqual, Softmax, ...) and its arguments (axis=...). lamina reads such a node as
one of the classes here: a layer without weights that calls the lamina.ops function of the same name with
those arguments, is saved back under Keras's module and class name, and, like Keras's operations, is kept
out of ``model.layers``. The table of them (keras_operations_table.py) is generated from Keras by
tools/keras_operations.py.
"""
import inspect

from .. import backend, ops
from .. import rematerialization as _remat
from ..backend import snake_case, unique_name
from .keras_operations_table import KERAS_OPERATIONS
from .layer import KerasTensor, Lambda, Layer

# Keras's class name -> the keras.ops (numpy namespace) function it records, for the operations whose
# config holds nothing but a name (the first ones lamina read; kept for the tests and callers that use it)
NUMPY_OPERATIONS = {k: f for k, (m, f, args) in KERAS_OPERATIONS.items() if m == "numpy" and not args}


class _Operation(Layer):
    """A Keras operation node: calls lamina.ops.<_function>(*inputs, **arguments), where the arguments are
    the ones Keras keeps in the node's config (axis=, keepdims=, ...)."""
    _operation = True
    _keras_module = "keras.src.ops.numpy"
    _function = None
    _arguments = ()

    def __init__(self, name=None, **kwargs):
        arguments = {k: kwargs.pop(k) for k in self._arguments if k in kwargs}
        super().__init__(name=name or unique_name(self._function), **kwargs)
        self._call_arguments = arguments

    @classmethod
    def from_config(cls, config):
        unknown = set(config) - set(cls._arguments) - {"name", "trainable", "dtype"}
        if unknown:
            raise ValueError(f"Keras operation {cls._keras_class_name}: unknown arguments {sorted(unknown)} "
                             f"(it takes {list(cls._arguments)}).")
        return cls(**config)

    def get_config(self):
        return {"name": self.name, **self._call_arguments}   # as Keras writes an operation's config

    def call(self, *args):
        return getattr(ops, self._function)(*args, **self._call_arguments)


OPERATION_CLASSES = {}
for _keras_name, (_module, _function, _arguments) in KERAS_OPERATIONS.items():
    _cls = type(f"{_keras_name}Operation", (_Operation,), {
        "_function": _function, "_arguments": _arguments, "_keras_class_name": _keras_name,
        "_keras_module": f"keras.src.ops.{_module}", "__module__": __name__,
        "__doc__": f"``keras.ops.{_function}`` recorded as a node of a functional graph (Keras's {_keras_name})."})
    OPERATION_CLASSES[_keras_name] = _cls
    globals()[_cls.__name__] = _cls


def _get_item_call(self, x, key):
    # Keras's GetItem: a key read back from a file is a list (JSON has no tuples), and means the tuple
    return ops.get_item(x, tuple(key) if isinstance(key, list) else key)


OPERATION_CLASSES["GetItem"].call = _get_item_call


def _einsum_call(self, *operands):
    # Keras's Einsum keeps the subscripts in its config and takes the operands as its inputs
    return ops.einsum(self._call_arguments["subscripts"], *operands)


OPERATION_CLASSES["Einsum"].call = _einsum_call
_CONFIG_FIRST = {"Einsum"}   # operations whose config arguments come before their inputs in the function

# keras.ops function name -> its operation class (the function's own, where several classes record it), and
# the names Keras records under another function's class (found by calling each keras.ops function on a
# symbolic tensor)
_BY_FUNCTION = {}
for _cls in OPERATION_CLASSES.values():
    if _BY_FUNCTION.get(_cls._function) is None or _cls._keras_class_name.lower() == _cls._function.replace("_", ""):
        _BY_FUNCTION[_cls._function] = _cls
for _alias, _keras_name in {"abs": "Absolute", "conj": "Conjugate", "hard_swish": "HardSilu",
                            "swish": "Silu"}.items():
    _BY_FUNCTION[_alias] = OPERATION_CLASSES[_keras_name]


def _symbolic_op(fn, args, kwargs):
    """A keras.ops function called on symbolic tensors (directly or inside a list or tuple argument): a node
    of the functional graph, as Keras records it. Where Keras has an operation class for the function and the
    call binds to it (tensors, and constants, as its inputs; the arguments Keras keeps in the node's config as
    its config) the node is that operation (saved in .keras files under Keras's name, both ways); otherwise an
    in-memory node replaying the call (such a model runs but cannot be saved)."""
    node = _as_operation(fn, args, kwargs)
    if node is not None:
        cls, config, inputs = node
        return cls(**config)(*inputs)
    found = []

    def mark(v):
        if isinstance(v, KerasTensor):
            found.append(v)
            return _Slot(len(found) - 1)
        return v

    def mark_arg(a):
        return type(a)(mark(v) for v in a) if isinstance(a, (list, tuple)) else mark(a)

    margs = [mark_arg(a) for a in args]
    mkwargs = {k: mark_arg(v) for k, v in kwargs.items()}

    def replay(values):
        values = values if isinstance(values, list) else [values]
        fill = lambda v: values[v.index] if isinstance(v, _Slot) else v  # noqa: E731
        put = lambda a: type(a)(fill(v) for v in a) if isinstance(a, (list, tuple)) else fill(a)  # noqa: E731
        return fn(*[put(a) for a in margs], **{k: put(v) for k, v in mkwargs.items()})

    return _OpNode(replay, op_name=fn.__name__, name=unique_name(fn.__name__))(list(found))


def _as_operation(fn, args, kwargs):
    """(operation class, config, inputs) for the call, or None where it does not bind to one."""
    cls = _BY_FUNCTION.get(fn.__name__)
    if cls is None:
        return None
    try:
        signature = inspect.signature(fn)
        bound = signature.bind(*args, **kwargs)
    except (TypeError, ValueError):
        return None
    config, inputs = {}, []
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        if kind == inspect.Parameter.VAR_KEYWORD:
            return None
        if name in cls._arguments:
            if backend.holds_keras_tensor(value):
                return None
            config[name] = value
        else:
            # inputs are passed first, by position: an input after a config argument only where the
            # operation's call takes its config by name
            if config and cls._keras_class_name not in _CONFIG_FIRST:
                return None
            inputs.extend(value) if kind == inspect.Parameter.VAR_POSITIONAL else inputs.append(value)
    return (cls, config, inputs) if inputs else None


class _Slot:
    __slots__ = ("index",)

    def __init__(self, index):
        self.index = index


class _OpNode(Lambda):
    """A keras.ops function called on symbolic tensors, as an in-memory node (see _symbolic_op)."""

    def __init__(self, function, op_name, **kwargs):
        super().__init__(function, **kwargs)
        self.op_name = op_name

    def get_config(self):
        raise ValueError(f"This model calls lamina.ops.{self.op_name} on symbolic tensors (node '{self.name}') in "
                         "a way no Keras operation records: such a node runs in memory but cannot be saved. To "
                         "save the model, do that computation inside a custom Layer subclass registered with "
                         "lamina.utils.register_keras_serializable.")


backend._SYMBOLIC_OP = _symbolic_op


class Operation:
    """keras.Operation: a stateless computation (no weights) written as ``call``; subclass it for a custom op.

    Called on arrays or tensors it runs ``call``; called on symbolic tensors (the functional API) it becomes a
    node of the graph that replays ``call`` on the values (in memory: a model holding one runs, and saving it
    asks for a registered custom Layer, as for any keras.ops call Keras has no operation class for).
    ``compute_output_spec`` may say the output's shape and dtype; by default it is found by running ``call``
    on small dummy data, as a layer's."""

    def __init__(self, name=None):
        self.name = name or unique_name(snake_case(type(self).__name__))
        self._remat_mode = _remat.get_current_remat_mode()   # a RematScope around its creation (Keras)

    def __call__(self, *args, **kwargs):
        if any(backend.holds_keras_tensor(a) for a in list(args) + list(kwargs.values())):
            return self.symbolic_call(*args, **kwargs)
        return _remat.rematerialized(self._remat_mode, self.call)(*args, **kwargs)

    def symbolic_call(self, *args, **kwargs):
        def run(*a, **k):
            return self.call(*a, **k)
        run.__name__ = self.name
        return _symbolic_op(run, args, kwargs)

    def call(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define call().")

    def compute_output_spec(self, *args, **kwargs):
        return self.symbolic_call(*args, **kwargs)

    def get_config(self):
        return {"name": self.name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"<Operation name={self.name}>"


__all__ = []   # not public names of keras.layers: they come from reading Keras files
