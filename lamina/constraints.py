"""Constraints projected onto a weight after each optimizer update: MaxNorm, NonNeg, UnitNorm, MinMaxNorm.

A constraint maps an array to an array (no gradient flows through it)."""
from .backend import get_array_module
from .registry import find_in_config, register, serialize_in_module
from .registry import serialize as _serialize

_EPS = 1e-7


def _axis(axis):
    """Keras documents axis=[0, 1, 2] for a conv kernel: NumPy wants a tuple."""
    return tuple(axis) if isinstance(axis, list) else axis


class Constraint:
    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        register(cls)

    def __call__(self, w):
        return w

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class MaxNorm(Constraint):
    """Rescale so that the L2 norm along ``axis`` is at most max_value: w * clip(n, 0, max) / (eps + n).

    axis=0 bounds each column of a Dense kernel (in, units); axis=[0, 1, 2] each filter of a Conv2D kernel."""

    def __init__(self, max_value=2, axis=0):
        self.max_value, self.axis = max_value, axis

    def __call__(self, w):
        xp = get_array_module(w)
        norms = xp.sqrt((w * w).sum(axis=_axis(self.axis), keepdims=True))
        desired = xp.clip(norms, 0, self.max_value)
        return w * (desired / (_EPS + norms))

    def get_config(self):
        return {"max_value": self.max_value, "axis": self.axis}


class NonNeg(Constraint):
    """Negative entries set to zero: w * (w >= 0)."""

    def __call__(self, w):
        return w * (w >= 0)


class UnitNorm(Constraint):
    """Unit L2 norm along ``axis``: w / (eps + ||w||)."""

    def __init__(self, axis=0):
        self.axis = axis

    def __call__(self, w):
        xp = get_array_module(w)
        return w / (_EPS + xp.sqrt((w * w).sum(axis=_axis(self.axis), keepdims=True)))

    def get_config(self):
        return {"axis": self.axis}


class MinMaxNorm(Constraint):
    def __init__(self, min_value=0.0, max_value=1.0, rate=1.0, axis=0):
        self.min_value, self.max_value, self.rate, self.axis = min_value, max_value, rate, axis

    def __call__(self, w):
        xp = get_array_module(w)
        norms = xp.sqrt((w * w).sum(axis=_axis(self.axis), keepdims=True))
        desired = self.rate * xp.clip(norms, self.min_value, self.max_value) + (1 - self.rate) * norms
        return w * (desired / (_EPS + norms))

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value, "rate": self.rate, "axis": self.axis}


max_norm, non_neg, unit_norm, min_max_norm = MaxNorm, NonNeg, UnitNorm, MinMaxNorm
_ALIASES = {"max_norm": MaxNorm, "non_neg": NonNeg, "unit_norm": UnitNorm, "min_max_norm": MinMaxNorm,
            "MaxNorm": MaxNorm, "NonNeg": NonNeg, "UnitNorm": UnitNorm, "MinMaxNorm": MinMaxNorm}


def get(identifier):
    if identifier is None or isinstance(identifier, Constraint) or callable(identifier) and not isinstance(identifier, (str, type)):
        return identifier
    if isinstance(identifier, dict):
        cls = find_in_config(identifier, Constraint, _ALIASES)
        if cls is None:
            raise ValueError(f"Unknown constraint {identifier['class_name']!r}. Valid names: {', '.join(_ALIASES)}.")
        return cls.from_config(identifier.get("config", {}))
    if isinstance(identifier, str):
        cls = _ALIASES.get(identifier)
        if cls is None:
            raise ValueError(f"Unknown constraint {identifier!r}. Valid names: {', '.join(_ALIASES)}.")
        return cls()
    raise ValueError(f"Could not interpret constraint identifier: {identifier!r}")


def serialize(constraint):
    """A constraint as Keras serializes it: ``{'module', 'class_name', 'config', 'registered_name'}`` (a program's
    registered class under its module and 'package>Name'); a plain function by name."""
    if constraint is None:
        return None
    if not isinstance(constraint, Constraint):
        return _serialize(constraint)
    return serialize_in_module(constraint, "keras.constraints")


def deserialize(config, custom_objects=None):
    """A constraint from serialize()'s dict (or a name)."""
    if isinstance(config, dict) and custom_objects and config.get("class_name") in custom_objects:
        return custom_objects[config["class_name"]].from_config(config.get("config", {}))
    return get(config)
