"""The name registry: every serialisable class (layers, initializers, losses, optimizers, ...)
registers itself here when defined, so that configs and model files can find classes by name
without importing anything from an upper floor, and without ever executing code from a file."""
import contextlib
import inspect

_REGISTRY = {}
# keras.saving.get_custom_objects(): user objects registered by name (register_keras_serializable adds
# 'package>Name' here); _SCOPE holds the dict of the innermost custom_object_scope (lamina.saving).
_CUSTOM_OBJECTS = {}
_SCOPE = {}
# export format name -> function(model, filepath, **kwargs); filled by lamina.export (a higher floor)
EXPORTERS = {}
# "save_model", "save_weights", "load_weights": the model-file functions Model.save/save_weights/load_weights
# call; filled by lamina.models.saving, which imports Model (so Model cannot import it back)
MODEL_FILES = {}


def subclasses(cls):
    """Every class derived from ``cls``, directly or not (depth first; a class reached twice through multiple
    inheritance listed twice)."""
    out, todo = [], list(cls.__subclasses__())
    while todo:
        c = todo.pop()
        out.append(c)
        todo += c.__subclasses__()
    return out


def from_config(cls, config, custom_objects=None):
    """``cls.from_config(config)``, with ``custom_objects=`` where that from_config takes it (lamina's models and a
    few others do): a program's own override written as Keras's ``from_config(cls, config)`` gets the config alone
    (the custom objects are in scope while files load anyway)."""
    fn = cls.from_config
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):   # pragma: no cover - a builtin without a signature
        params = ()
    if any(p.name == "custom_objects" or p.kind is p.VAR_KEYWORD for p in params):
        return fn(config, custom_objects=custom_objects)
    return fn(config)


def register(cls, name=None):
    """Register cls under its class name (and an optional extra name). Returns cls (usable as a decorator).

    Every Layer subclass comes here when defined, a program's own too, so that its model files load without
    custom_objects. A program's class never takes the name of one of lamina's own classes, though (keras.io's
    text classifier defines its own TokenAndPositionEmbedding): lamina's model files name lamina's class, and a
    later load_model in that process would have built the program's for them. The program's class is found by
    custom_objects or register_keras_serializable then, as Keras finds any custom class."""
    key = name or cls.__name__
    held = _REGISTRY.get(key)
    if held is not None and held is not cls and _lamina_own(held) and not _lamina_own(cls):
        return cls
    _REGISTRY[key] = cls
    return cls


def _lamina_own(obj):
    return getattr(obj, "__module__", "").split(".")[0] == "lamina"


def register_keras_serializable(package="Custom", name=None):
    """Decorator registering a user class, as ``keras.saving.register_keras_serializable``."""
    def deco(cls):
        if isinstance(cls, type) and not hasattr(cls, "get_config"):
            raise ValueError("Cannot register a class that does not have a get_config() method.")
        key = name or cls.__name__
        _REGISTRY[f"{package}>{key}"] = cls
        _CUSTOM_OBJECTS[f"{package}>{key}"] = cls
        _REGISTRY.setdefault(key, cls)
        cls._registered_name = f"{package}>{key}"
        return cls
    return deco


@contextlib.contextmanager
def objects_in_scope(custom_objects):
    """custom_objects resolvable by name, on top of the active scope, while the block runs (load_model's
    custom_objects reach the configs nested in the model's, as in Keras)."""
    saved = dict(_SCOPE)
    _SCOPE.update(custom_objects or {})
    try:
        yield
    finally:
        _SCOPE.clear()
        _SCOPE.update(saved)


def get_registered_object(name, custom_objects=None, base=None):
    """The class registered as name, or None: looked up in the active custom_object_scope, the user's
    custom objects (get_custom_objects), custom_objects, then lamina's own classes."""
    for table in (_SCOPE, _CUSTOM_OBJECTS, custom_objects):
        if table and name in table:
            return table[name]
    cls = _REGISTRY.get(name)
    if cls is None and ">" in name:
        cls = _REGISTRY.get(name.split(">", 1)[1])
    if cls is not None and base is not None and not (isinstance(cls, type) and issubclass(cls, base)):
        return None
    return cls


def registered_names(base=None):
    return sorted(k for k, v in _REGISTRY.items()
                  if ">" not in k and (base is None or (isinstance(v, type) and issubclass(v, base))))


def serialize(obj):
    """A JSON-able description of obj: {'class_name', 'config'} for objects with get_config;
    plain values stay as they are (tuples become lists)."""
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, (list, tuple)):
        return [serialize(o) for o in obj]
    if isinstance(obj, dict):
        return {k: serialize(v) for k, v in obj.items()}
    if hasattr(obj, "get_config") and not isinstance(obj, type):
        return {"class_name": getattr(type(obj), "_registered_name", type(obj).__name__),
                "config": serialize(obj.get_config())}
    if callable(obj) and hasattr(obj, "__name__"):
        if (not hasattr(obj, "_keras_name") and inspect.isfunction(obj)
                and not (obj.__module__ or "").startswith("lamina")):
            # a user's function, as Keras writes it: by its registered name ('package>name') or its name
            return {"module": "builtins", "class_name": "function",
                    "config": getattr(obj, "_registered_name", obj.__name__), "registered_name": "function"}
        return getattr(obj, "_keras_name", obj.__name__)
    try:  # NumPy scalars and arrays
        import numpy as np
        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"Cannot serialize {obj!r} of type {type(obj).__name__} into a config.")


def serialize_in_module(obj, module):
    """obj (an initializer, regularizer, constraint, ...) as Keras serializes it: lamina's own classes under
    Keras's public ``module`` with ``registered_name`` None; a program's class under its Python module, with the
    name register_keras_serializable gave it ('package>Name'), else its class name, as ``registered_name``."""
    cls = type(obj)
    if _lamina_own(cls):
        registered = None
    else:
        module, registered = cls.__module__, cls.__dict__.get("_registered_name", cls.__name__)
    return {"module": module, "class_name": cls.__name__, "config": serialize(obj.get_config()),
            "registered_name": registered}


def find_in_config(config, base, aliases):
    """The class a serialized dict names (its registered_name first, as Keras looks it up, then class_name):
    a name in aliases (lamina's own, Keras's spellings), else a class registered by name that derives from base;
    None when nothing fits."""
    for key in ("registered_name", "class_name"):
        name = config.get(key)
        if not isinstance(name, str):
            continue
        cls = aliases.get(name) if key == "class_name" else None
        if cls is None:
            cls = get_registered_object(name, base=base)
        if cls is not None:
            return cls
    return None
