"""Keras's symbolic operations as nodes of a functional graph.

Keras code may call ``keras.ops`` functions on symbolic tensors while building a functional model
(``mask = ops.not_equal(tokens, 0)``, ``y = ops.multiply(x, 2.0)``); Keras then records each call as an
operation node, saved in ``.keras`` files under ``keras.src.ops.numpy`` with the op's class name (NotEqual,
Multiply, ...). lamina reads such a node as one of the classes here: a layer without weights that calls the
lamina.ops function of the same name, is saved back under Keras's module and class name, and, like Keras's
operations, is kept out of ``model.layers``.
"""
from .. import ops
from ..backend import unique_name
from .layer import Layer

# Keras's class name -> the keras.ops (numpy namespace) function it records
NUMPY_OPERATIONS = {
    "Add": "add", "NotEqual": "not_equal", "Equal": "equal", "Greater": "greater", "GreaterEqual": "greater_equal",
    "Less": "less", "LessEqual": "less_equal", "Subtract": "subtract", "Multiply": "multiply",
    "Divide": "divide", "TrueDivide": "true_divide", "Maximum": "maximum", "Minimum": "minimum",
    "Power": "power", "LogicalAnd": "logical_and", "LogicalOr": "logical_or", "LogicalNot": "logical_not",
    "Negative": "negative", "Absolute": "absolute", "Exp": "exp", "Log": "log", "Sqrt": "sqrt",
    "Square": "square", "Tanh": "tanh",
}


class _Operation(Layer):
    _operation = True
    _keras_module = "keras.src.ops.numpy"
    _function = None

    def __init__(self, name=None, **kwargs):
        super().__init__(name=name or unique_name(self._function), **kwargs)

    def get_config(self):
        return {"name": self.name}      # Keras's operations take their name and nothing else

    def call(self, *args):
        return getattr(ops, self._function)(*args)


OPERATION_CLASSES = {}
for _keras_name, _function in NUMPY_OPERATIONS.items():
    _cls = type(f"{_keras_name}Operation", (_Operation,), {
        "_function": _function, "_keras_class_name": _keras_name, "__module__": __name__,
        "__doc__": f"``keras.ops.{_function}`` recorded as a node of a functional graph (Keras's {_keras_name})."})
    OPERATION_CLASSES[_keras_name] = _cls
    globals()[_cls.__name__] = _cls

__all__ = []   # not public names of keras.layers: they come from reading Keras files
