"""Optimizers (SGD, Adam, ...) and learning-rate schedules, with Keras 3 names and defaults."""
from . import schedules  # noqa: F401
