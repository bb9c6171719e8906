"""Weight penalties added to the loss: L1, L2, L1L2 (Keras 3 names and defaults).

A regularizer is called on a weight and returns a scalar Tensor; the penalties of a layer's weights
are in ``layer.losses`` and the training loop adds them to the loss."""
import math
import numbers

from . import ops
from .registry import find_in_config, register, serialize_in_module
from .registry import serialize as _serialize


def _factor(name, value):
    """A penalty factor: a finite, non-negative number (as Keras validates it)."""
    if value is None:
        return 0.0
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ValueError(f"Invalid value for argument {name}: expected a non-negative float. Received: {name}={value!r}")
    return float(value)


class Regularizer:
    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        register(cls)

    def __call__(self, x):  # pragma: no cover - abstract
        return 0.0

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class L1L2(Regularizer):
    """l1 * sum(|w|) + l2 * sum(w^2)."""

    def __init__(self, l1=0.0, l2=0.0):
        self.l1, self.l2 = _factor("l1", l1), _factor("l2", l2)

    def __call__(self, x):
        out = None
        if self.l1:
            out = ops.sum(ops.abs(x)) * self.l1
        if self.l2:
            p = ops.sum(ops.square(x)) * self.l2
            out = p if out is None else out + p
        return out if out is not None else ops.sum(x) * 0.0

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


class L1(L1L2):
    def __init__(self, l1=0.01):
        super().__init__(l1=l1)

    def get_config(self):
        return {"l1": self.l1}


class L2(L1L2):
    def __init__(self, l2=0.01):
        super().__init__(l2=l2)

    def get_config(self):
        return {"l2": self.l2}


class OrthogonalRegularizer(Regularizer):
    """Pushes the rows (mode='rows') or columns (mode='columns') of a 2-D weight towards orthogonality:
    factor * 0.5 * sum(|off-diagonal cosines|) / number of pairs, on L2-normalised rows / columns."""

    def __init__(self, factor=0.01, mode="rows"):
        if mode not in ("rows", "columns"):
            raise ValueError(f"Invalid value for argument `mode`. Expected one of {{'rows', 'columns'}}. "
                             f"Received: mode={mode}")
        self.factor, self.mode = _factor("factor", factor), mode

    def __call__(self, x):
        if len(x.shape) != 2:
            raise ValueError(f"Inputs to OrthogonalRegularizer must have rank 2. Received: inputs.shape={tuple(x.shape)}")
        import numpy as np
        if self.mode == "rows":
            x = ops.normalize(x, axis=1)
            product = ops.matmul(x, ops.transpose(x))
            size = x.shape[0]
        else:
            x = ops.normalize(x, axis=0)
            product = ops.matmul(ops.transpose(x), x)
            size = x.shape[1]
        off = product * (1.0 - np.eye(size, dtype=np.dtype(product.dtype)))
        pairs = size * (size - 1.0) / 2.0
        return self.factor * 0.5 * ops.sum(ops.abs(off)) / pairs

    def get_config(self):
        return {"factor": self.factor, "mode": self.mode}


# Keras 3 exports the classes under the lower-case names too (so l1_l2() defaults to no penalty,
# unlike Keras 2's l1_l2 function with 0.01 each).
l1, l2, l1_l2, orthogonal_regularizer = L1, L2, L1L2, OrthogonalRegularizer
_ALIASES = {"l1": L1, "l2": L2, "l1_l2": L1L2, "l1l2": L1L2, "L1": L1, "L2": L2, "L1L2": L1L2,
            "orthogonal_regularizer": OrthogonalRegularizer, "OrthogonalRegularizer": OrthogonalRegularizer}


def get(identifier):
    """A regularizer from a name ('l1', 'l2', 'l1_l2'), a config dict, an instance or a callable."""
    if identifier is None or isinstance(identifier, Regularizer) or callable(identifier) and not isinstance(identifier, (str, type)):
        return identifier
    if isinstance(identifier, dict):
        cls = find_in_config(identifier, Regularizer, _ALIASES)
        if cls is None:
            raise ValueError(f"Unknown regularizer {identifier['class_name']!r}. Valid names: {', '.join(_ALIASES)}.")
        return cls.from_config(identifier.get("config", {}))
    if isinstance(identifier, str):
        cls = _ALIASES.get(identifier)
        if cls is None:
            raise ValueError(f"Unknown regularizer {identifier!r}. Valid names: {', '.join(_ALIASES)}.")
        return cls()
    raise ValueError(f"Could not interpret regularizer identifier: {identifier!r}")


def serialize(regularizer):
    """A regularizer as Keras serializes it: ``{'module', 'class_name', 'config', 'registered_name'}`` (a program's
    registered class under its module and 'package>Name'); a plain function by name."""
    if regularizer is None:
        return None
    if not isinstance(regularizer, Regularizer):
        return _serialize(regularizer)
    return serialize_in_module(regularizer, "keras.regularizers")


def deserialize(config, custom_objects=None):
    """A regularizer from serialize()'s dict (or a name)."""
    if isinstance(config, dict) and custom_objects and config.get("class_name") in custom_objects:
        return custom_objects[config["class_name"]].from_config(config.get("config", {}))
    return get(config)
