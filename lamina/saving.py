"""``keras.saving``: model files and the registry of serialisable classes.

``save_model`` / ``load_model`` write and read one zip (JSON config + safetensors weights, never pickle);
``register_keras_serializable`` makes a custom class loadable by name, and ``get_registered_object`` finds it.
"""
from .models.saving import load_model, load_weights, save_model, save_weights  # noqa: F401
from .registry import get_registered_object, register_keras_serializable  # noqa: F401

__all__ = ["load_model", "save_model", "load_weights", "save_weights", "register_keras_serializable",
           "get_registered_object"]
