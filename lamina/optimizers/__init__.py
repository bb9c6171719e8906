"""Optimizers with Keras 3 names, arguments and update formulas, and learning-rate schedules.

``lamina.optimizers.get('adam')`` (or a class name, an instance, or a ``{'class_name', 'config'}`` dict)
returns an optimizer. Every optimizer updates weights in place, keeps per-weight state in the order of
the weights, and exports it (``get_state`` / ``set_state``) for exact checkpoints.
"""
from . import schedules  # noqa: F401
from .base import Optimizer
from .sgd import SGD
from .adam import Adam, AdamW, Adamax, Nadam
from .rmsprop import RMSprop, Adagrad, Adadelta
from .extra import Lion, Lamb, Ftrl, Adafactor, LossScaleOptimizer, MultiOptimizer, OptimizerMap
from .muon import Muon
from .schedule_free import ScheduleFreeAdamW
from ..registry import get_registered_object, serialize

_BY_NAME = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad,
            "adadelta": Adadelta, "adamax": Adamax, "nadam": Nadam, "lion": Lion, "lamb": Lamb, "ftrl": Ftrl,
            "adafactor": Adafactor, "lossscaleoptimizer": LossScaleOptimizer, "muon": Muon,
            "schedulefreeadamw": ScheduleFreeAdamW}


def get(identifier):
    """An optimizer from a name ('adam', 'SGD', ...), an Optimizer (returned as is) or a config dict."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier.lower())
        if cls is None:
            raise ValueError(f"Unknown optimizer {identifier!r}. Valid names: {', '.join(_BY_NAME)} "
                             "(case-insensitive, class names too).")
        return cls()
    raise ValueError(f"Could not interpret optimizer identifier: {identifier!r}. Pass a name "
                     f"({', '.join(_BY_NAME)}), an Optimizer instance or a {{'class_name', 'config'}} dict.")


def deserialize(config, custom_objects=None):
    """An optimizer from ``{'class_name': ..., 'config': {...}}``."""
    name = config.get("class_name", "")
    cls = _BY_NAME.get(str(name).lower()) or get_registered_object(name, custom_objects, base=Optimizer)
    if cls is None:
        raise ValueError(f"Unknown optimizer {name!r}. Valid names: {', '.join(_BY_NAME)}.")
    return cls.from_config(config.get("config", {}), custom_objects)


__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "Adamax", "Nadam", "RMSprop", "Adagrad", "Adadelta", "Lion", "Lamb", "Ftrl", "Adafactor",
           "LossScaleOptimizer", "MultiOptimizer", "OptimizerMap", "Muon", "ScheduleFreeAdamW",
           "get", "serialize", "deserialize", "schedules"]
