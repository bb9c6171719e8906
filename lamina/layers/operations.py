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
from .. import ops
from ..backend import unique_name
from .keras_operations_table import KERAS_OPERATIONS
from .layer import Layer

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

__all__ = []   # not public names of keras.layers: they come from reading Keras files
