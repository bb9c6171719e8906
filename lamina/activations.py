"""Activation functions by name: ``activations.get('relu')``, as Keras's ``keras.activations``."""
from . import ops
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
    """The name inside a serialised {'class_name', 'config': {'name'}} dict; anything else as it is."""
    if isinstance(identifier, dict):
        return identifier.get("config", {}).get("name", identifier.get("class_name"))
    return identifier


def get(identifier):
    """A callable activation from a name, a callable, a {'class_name', 'config'} dict, or None (linear)."""
    if identifier is None:
        return linear
    identifier = _name_of(identifier)
    if isinstance(identifier, str):
        fn = _ACTIVATIONS.get(identifier)
        if fn is None:
            raise ValueError(f"Unknown activation {identifier!r}. Valid names: {', '.join(sorted(_ACTIVATIONS))}.")
        return fn
    if callable(identifier):
        return identifier
    raise ValueError(f"Could not interpret activation identifier: {identifier!r}")


def serialize(fn):
    return getattr(fn, "_keras_name", getattr(fn, "__name__", None))


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
