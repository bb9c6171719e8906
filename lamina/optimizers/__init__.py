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
from ..registry import serialize  # noqa: F401
from .base import deserialize, get  # noqa: F401  (in base.py, so that extra.py can use them too)


__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "Adamax", "Nadam", "RMSprop", "Adagrad", "Adadelta", "Lion", "Lamb", "Ftrl", "Adafactor",
           "LossScaleOptimizer", "MultiOptimizer", "OptimizerMap", "Muon", "ScheduleFreeAdamW",
           "get", "serialize", "deserialize", "schedules"]
