"""File formats: model files (zip of JSON config + safetensors weights), weights files, atomic writes.

This package knows nothing of models: lamina/models/saving.py turns a model into a config and named
arrays and back. Nothing here unpickles or executes anything read from a file.
"""
from .formats import *  # noqa: F401,F403
from .formats import __all__  # noqa: F401
