"""Weight penalties added to the loss: L1, L2, L1L2 (Keras 3 names and defaults).

A regularizer is called on a weight and returns a scalar Tensor; the penalties of a layer's weights
are in ``layer.losses`` and the training loop adds them to the loss."""
import math
import numbers

from . import ops
from .registry import register


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


# Keras 3 exports the classes under the lower-case names too (so l1_l2() defaults to no penalty,
# unlike Keras 2's l1_l2 function with 0.01 each).
l1, l2, l1_l2 = L1, L2, L1L2
_ALIASES = {"l1": L1, "l2": L2, "l1_l2": L1L2, "L1": L1, "L2": L2, "L1L2": L1L2}


def get(identifier):
    """A regularizer from a name ('l1', 'l2', 'l1_l2'), a config dict, an instance or a callable."""
    if identifier is None or isinstance(identifier, Regularizer) or callable(identifier) and not isinstance(identifier, (str, type)):
        return identifier
    if isinstance(identifier, dict):
        cls = _ALIASES.get(identifier["class_name"])
        if cls is None:
            raise ValueError(f"Unknown regularizer {identifier['class_name']!r}. Valid names: {', '.join(_ALIASES)}.")
        return cls.from_config(identifier.get("config", {}))
    if isinstance(identifier, str):
        cls = _ALIASES.get(identifier)
        if cls is None:
            raise ValueError(f"Unknown regularizer {identifier!r}. Valid names: {', '.join(_ALIASES)}.")
        return cls()
    raise ValueError(f"Could not interpret regularizer identifier: {identifier!r}")
