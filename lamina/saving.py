"""``keras.saving``: model files, the registry of serialisable objects, and object (de)serialisation.

``save_model`` / ``load_model`` write and read one zip (JSON config + safetensors weights, never pickle);
``register_keras_serializable`` makes a custom class or function loadable by name ('package>Name'),
``get_custom_objects`` is the dict of such user objects, ``custom_object_scope`` adds names for the
duration of a ``with`` block, and ``serialize_keras_object`` / ``deserialize_keras_object`` turn one
object (layer, loss, metric, optimizer, initializer, function, NumPy array, nest of them) into Keras 3's
JSON-able dict and back. The dicts are Keras's: a dict written by real Keras deserialises in lamina for
every class lamina has, and the other way round.
"""
import numpy as np

from . import registry
from .models.file_editor import KerasFileEditor  # noqa: F401
from .models.saving import load_model, load_weights, save_model, save_weights  # noqa: F401
from .registry import get_registered_object as _lookup, register_keras_serializable  # noqa: F401

__all__ = ["load_model", "save_model", "load_weights", "save_weights", "register_keras_serializable", "KerasFileEditor",
           "get_registered_object", "get_registered_name", "get_custom_objects", "custom_object_scope",
           "CustomObjectScope", "serialize_keras_object", "deserialize_keras_object"]


def get_registered_object(name, custom_objects=None, module_objects=None):
    """The object registered as ``name`` (scope, user registrations, ``custom_objects``, ``module_objects``,
    then lamina's own classes), or None."""
    found = _lookup(name, custom_objects)
    if found is None and module_objects and name in module_objects:
        return module_objects[name]
    return found


def get_registered_name(obj):
    """The name obj is serialised under: 'package>Name' when registered with register_keras_serializable,
    else its ``__name__``."""
    name = getattr(obj, "_registered_name", None)
    if name is not None and registry._CUSTOM_OBJECTS.get(name) is obj:
        return name
    return obj.__name__


def get_custom_objects():
    """The global dict of user objects by name; assign into it to register (``get_custom_objects()['f'] = f``)."""
    return registry._CUSTOM_OBJECTS


class CustomObjectScope:
    """``with CustomObjectScope({'name': obj}):`` makes those names resolvable when deserialising (load_model,
    from_config, deserialize_keras_object). As in Keras, an inner scope replaces the outer one's dict until
    it exits."""

    def __init__(self, custom_objects):
        self.custom_objects = dict(custom_objects or {})
        self.backup = None

    def __enter__(self):
        self.backup = dict(registry._SCOPE)
        registry._SCOPE.clear()
        registry._SCOPE.update(self.custom_objects)
        return self

    def __exit__(self, *exc):
        registry._SCOPE.clear()
        registry._SCOPE.update(self.backup)
        return False


custom_object_scope = CustomObjectScope


# ---------------------------------------------------------------------------------- objects <-> dicts
def serialize_keras_object(obj):
    """Keras 3's JSON-able dict for obj: ``{'module', 'class_name', 'config', 'registered_name'}`` for objects
    with ``get_config``; functions as ``{'class_name': 'function', 'config': name}``; NumPy arrays as
    ``{'class_name': '__numpy__', ...}``; None, numbers and strings as themselves; lists/tuples/dicts element
    by element."""
    from .models.keras_format import _keras_object
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.ndarray):
        return {"class_name": "__numpy__", "config": {"value": obj.tolist(), "dtype": obj.dtype.name}}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, (list, tuple)):
        return type(obj)(serialize_keras_object(o) for o in obj)
    if isinstance(obj, dict):
        return {k: serialize_keras_object(v) for k, v in obj.items()}
    if isinstance(obj, type):
        raise TypeError(f"serialize_keras_object: cannot serialize the class {obj.__name__}; pass an instance.")
    if hasattr(obj, "get_config"):
        out = _keras_object(registry.serialize(obj))
        registered = getattr(type(obj), "_registered_name", None)
        if registered in registry._CUSTOM_OBJECTS:  # Keras: the class's own name, and 'package>Name' beside it
            out["class_name"], out["registered_name"] = type(obj).__name__, registered
        else:
            out["registered_name"] = None
        return out
    if callable(obj) and hasattr(obj, "__name__"):
        name = getattr(obj, "_registered_name", None) or getattr(obj, "_keras_name", None) or obj.__name__
        return {"module": "builtins", "class_name": "function", "config": name, "registered_name": "function"}
    raise TypeError(f"serialize_keras_object: cannot serialize {obj!r} of type {type(obj).__name__}.")


def _function(name, custom_objects):
    found = get_registered_object(name, custom_objects)
    if found is not None:
        return found
    from . import activations, losses, metrics
    for module in (activations, losses, metrics):
        try:
            fn = module.get(name)
        except (ValueError, TypeError, KeyError):
            continue
        if callable(fn) and not isinstance(fn, type):
            return fn
    raise ValueError(f"Unknown function {name!r}: register it with register_keras_serializable or pass it in "
                     "custom_objects.")


def deserialize_keras_object(config, custom_objects=None, safe_mode=True, **kwargs):
    """The object described by config (what ``serialize_keras_object`` or real Keras wrote).

    Classes are found by name only (registered_name, then class_name) in the custom-object scope,
    ``get_custom_objects()``, ``custom_objects`` and lamina's registry: nothing in the config is executed,
    so ``safe_mode`` has nothing to refuse and is accepted for compatibility. A plain string is returned as
    it is (Keras does the same); lists and dicts without 'class_name' are deserialised element by element.
    """
    from .models.keras_format import from_keras_config
    if config is None or isinstance(config, (bool, int, float, str)):
        return config
    if isinstance(config, (list, tuple)):
        return type(config)(deserialize_keras_object(c, custom_objects, safe_mode) for c in config)
    if not isinstance(config, dict):
        raise TypeError(f"deserialize_keras_object: cannot deserialize {config!r} of type "
                        f"{type(config).__name__}.")
    if "class_name" not in config:
        return {k: deserialize_keras_object(v, custom_objects, safe_mode) for k, v in config.items()}
    class_name = config["class_name"]
    inner = config.get("config")
    if class_name == "__numpy__":
        return np.asarray(inner["value"], dtype=inner.get("dtype"))
    if class_name == "__tuple__":
        return tuple(deserialize_keras_object(v, custom_objects, safe_mode) for v in inner["value"])
    if class_name == "function":
        return _function(inner, custom_objects)
    registered = config.get("registered_name")
    cls = None
    if isinstance(registered, str) and registered not in ("function", class_name):
        cls = get_registered_object(registered, custom_objects)
    if cls is None:
        cls = get_registered_object(class_name, custom_objects)
    if cls is None:
        raise ValueError(f"Could not locate class {class_name!r}. Make sure custom classes are decorated with "
                         "`@keras.saving.register_keras_serializable()` or passed in custom_objects. "
                         f"Full object config: {config}")
    if not isinstance(inner, dict):
        raise ValueError(f"deserialize_keras_object: the config of {class_name!r} must be a dict; received {inner!r}")
    clean = from_keras_config({"class_name": class_name, "config": inner}, "<config>", class_name)["config"]
    with CustomObjectScope({**registry._SCOPE, **(custom_objects or {})}):
        return registry.from_config(cls, clean, custom_objects)
