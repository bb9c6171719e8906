"""File formats: model files (zip of JSON config + safetensors weights), weights files, atomic writes, and the
checks every file lamina reads goes through (lamina.io.limits).

This package knows nothing of models: lamina/models/saving.py turns a model into a config and named
arrays and back. Nothing here unpickles or executes anything read from a file. Every problem with a file
raises ``ModelFileError`` (a ValueError) naming the file; see docs/security.md.
"""
from .formats import *  # noqa: F401,F403
from .formats import __all__ as _formats_all
from .limits import open_regular, weight_budget  # noqa: F401

__all__ = list(_formats_all) + ["open_regular", "weight_budget"]
