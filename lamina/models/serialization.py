"""Model configs to and from the registry, shared by lamina's own format and Keras's (saving.py,
keras_format.py): the class name a model is saved under, its build_config, and rebuilding a model from a
config without running anything from the file.

The root object of a file is a Model, or an object whose class sets ``_file_root = True`` (Keras saves a
FeatureSpace, a Layer, as a file's root too): such a class writes its own build_config
(``get_build_config()``) and rebuilds its state from it (``build_from_config``), as in Keras."""
from ..io import ModelFileError
from ..registry import from_config, get_registered_object, objects_in_scope
from .model import Model

__all__ = ["class_name", "build_config", "rebuild"]


def class_name(model):
    return getattr(type(model), "_registered_name", type(model).__name__)


def _is_file_root(cls):
    return isinstance(cls, type) and bool(getattr(cls, "_file_root", False))


def build_config(model):
    if _is_file_root(type(model)):
        return model.get_build_config()
    shape = getattr(model, "_called_shapes", None) or getattr(model, "_batch_input_shape", None)
    if shape is None:
        return None

    def plain(s):
        if isinstance(s, dict):
            return {k: plain(v) for k, v in s.items()}
        if isinstance(s, (list, tuple)) and s and isinstance(s[0], (list, tuple, dict)):
            return [plain(v) for v in s]
        return [None if d is None else int(d) for d in s]
    return {"input_shape": plain(shape)}


def rebuild(config, custom_objects, path):
    name = config.get("class_name")
    if not isinstance(name, str):
        raise ModelFileError(path, "config.json has no model class_name.")
    cls = get_registered_object(name, custom_objects)
    if cls is None or not (isinstance(cls, type) and issubclass(cls, Model) or _is_file_root(cls)):
        what = "is not a model class" if cls is not None else "is not in lamina's registry nor in custom_objects"
        raise ModelFileError(path, f"the model class {name!r} {what}. A custom model must be registered with "
                                   "lamina.utils.register_keras_serializable() or passed in custom_objects.")
    model_config = config.get("config")
    if not isinstance(model_config, dict):
        raise ModelFileError(path, "config.json has no model config object.")
    try:
        with objects_in_scope(custom_objects):
            model = from_config(cls, model_config, custom_objects)
    except ModelFileError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
        raise ModelFileError(path, f"cannot rebuild the model from its config: {e}") from e
    build = config.get("build_config") or {}
    if _is_file_root(cls):
        try:
            model.build_from_config(build)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise ModelFileError(path, f"cannot build {name} '{model.name}' from its build_config: {e}") from e
        return model
    if not model.built or (not model.weights and build.get("input_shape") is not None):
        shape = build.get("input_shape")
        if shape is None:
            raise ModelFileError(path, f"model '{model.name}' has no build_config input_shape to create its "
                                       "weights from.")
        try:
            model.build(tuple(shape) if shape and not isinstance(shape[0], (list, dict)) else shape)
        except ModelFileError:
            raise
        except (ValueError, TypeError) as e:
            raise ModelFileError(path, f"cannot build the model for input shape {shape}: {e}") from e
    return model
