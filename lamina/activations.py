"""Activation functions by name: ``activations.get('relu')``, as Keras's ``keras.activations``."""
import inspect

from . import ops, registry
from .ops.activations import (elu, exponential, gelu, hard_sigmoid, hard_silu, leaky_relu, log_softmax,  # noqa: F401
                              relu, relu6, selu, sigmoid, silu, softmax, softplus, softsign, swish, tanh)
from .ops.nn import (celu, glu, hard_shrink, hard_tanh, log_sigmoid, soft_shrink, sparse_plus,  # noqa: F401
                     sparse_sigmoid, sparsemax, squareplus, tanh_shrink, threshold)

hard_swish = hard_silu


def mish(x):
    """x tanh(softplus(x)) (Misra, 2019): smooth, non-monotonic, unbounded above, as Keras's mish."""
    return ops.multiply(x, ops.tanh(ops.softplus(x)))


def linear(x):
    """Identity: the output layer of a regression model is linear."""
    return x


_ACTIVATIONS = {
    "linear": linear, "relu": relu, "relu6": relu6, "leaky_relu": leaky_relu, "elu": elu, "selu": selu,
    "gelu": gelu, "sigmoid": sigmoid, "hard_sigmoid": hard_sigmoid, "hard_silu": hard_silu,
    "hard_swish": hard_silu, "tanh": tanh, "softplus": softplus, "softsign": softsign, "silu": silu,
    "swish": swish, "softmax": softmax, "log_softmax": log_softmax, "exponential": exponential,
    "celu": celu, "glu": glu, "hard_shrink": hard_shrink, "hard_tanh": hard_tanh, "log_sigmoid": log_sigmoid,
    "mish": mish, "soft_shrink": soft_shrink, "sparse_plus": sparse_plus, "sparse_sigmoid": sparse_sigmoid,
    "sparsemax": sparsemax, "squareplus": squareplus, "tanh_shrink": tanh_shrink, "threshold": threshold,
}
for _name, _fn in _ACTIVATIONS.items():
    if not hasattr(_fn, "_keras_name"):
        try:
            _fn._keras_name = _name
        except AttributeError:  # pragma: no cover
            pass
swish._keras_name = "silu"
hard_silu._keras_name = "hard_silu"


def _name_of(identifier):
    """The name inside a serialised {'class_name', 'config': {'name'}} dict, or inside Keras's dict for a
    function, {'class_name': 'function', 'config': 'package>name'}; anything else as it is."""
    if isinstance(identifier, dict):
        inner = identifier.get("config", {})
        if identifier.get("class_name") == "function" and isinstance(inner, str):
            return inner
        return inner.get("name", identifier.get("class_name")) if isinstance(inner, dict) else inner
    return identifier


def _custom(name):
    """A user function registered under name (register_keras_serializable, get_custom_objects, the
    custom_object_scope, load_model's custom_objects), or None; classes are not activations."""
    found = registry.get_registered_object(name)
    return found if callable(found) and not isinstance(found, type) else None


def get(identifier):
    """A callable activation from a name, a callable, a {'class_name', 'config'} dict, or None (linear)."""
    if identifier is None:
        return linear
    identifier = _name_of(identifier)
    if isinstance(identifier, str):
        fn = _ACTIVATIONS.get(identifier) or _custom(identifier)
        if fn is None:
            raise ValueError(f"Unknown activation {identifier!r}. Valid names: {', '.join(sorted(_ACTIVATIONS))}.")
        return fn
    if callable(identifier):
        return identifier
    raise ValueError(f"Could not interpret activation identifier: {identifier!r}")


def serialize(fn):
    """A built-in activation's name; a user's function as Keras writes it, {'module': 'builtins',
    'class_name': 'function', 'config': its registered name ('package>name') or its name,
    'registered_name': 'function'}, which get() and Keras both read back."""
    name = getattr(fn, "_keras_name", None)
    if name in _ACTIVATIONS:
        return name
    if inspect.isfunction(fn):
        return {"module": "builtins", "class_name": "function",
                "config": getattr(fn, "_registered_name", fn.__name__), "registered_name": "function"}
    return getattr(fn, "__name__", None)


def deserialize(config, custom_objects=None):
    """The activation a name or a serialised {'class_name', 'config'} dict stands for (custom_objects first)."""
    name = _name_of(config)
    if custom_objects and isinstance(name, str) and name in custom_objects:
        return custom_objects[name]
    if not isinstance(name, str):
        raise ValueError(f"Could not interpret serialized activation: {config!r}")
    return get(name)


__all__ = sorted(_ACTIVATIONS) + ["get", "serialize", "deserialize"]
_ = ops
