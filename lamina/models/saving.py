"""Models to files and back: ``save_model`` / ``load_model`` (whole models), ``save_weights`` / ``load_weights``.

A model file (any extension: '.keras' and '.lamina' are both fine) is the zip written by ``lamina.io``:
- config.json: ``{"class_name", "config", "compile_config", "build_config"}`` of the model;
- model.weights.safetensors: every weight under ``model/<index>/<layer>/<weight>`` (index = position in
  ``model.weights``, which is how they are matched on load; the rest of the key is for people reading the
  file), and the optimizer's exact state under ``optimizer/<index>``;
- metadata.json: lamina version, date, format version.
Loading looks classes up only in lamina's registry and in ``custom_objects``; nothing from the file is
executed. That is why Lambda layers (arbitrary code) cannot be saved: use a registered Layer subclass.
"""
import os

import numpy as np

from .. import backend, io
from .._version import __version__
from ..io import ModelFileError
from ..io.limits import open_regular, weight_budget
from ..registry import MODEL_FILES, serialize
from ..io.keras_archive import is_keras_archive
from .keras_format import load_keras, load_weights_from_archive, load_weights_h5, save_keras, save_weights_h5
from .serialization import build_config as _build_config, class_name as _class_name, rebuild as _rebuild

__all__ = ["save_model", "load_model", "save_weights", "load_weights"]

MODEL_PREFIX, OPTIMIZER_PREFIX = "model/", "optimizer/"


def _weight_arrays(model):
    return {f"{MODEL_PREFIX}{i:05d}/{getattr(w, 'path', None) or w.name}": backend.to_numpy(w.data)
            for i, w in enumerate(model.weights)}


def _indexed(weights, prefix, path):
    """The arrays whose keys start with prefix, in index order (the number right after the prefix)."""
    items = []
    for key, value in weights.items():
        if key.startswith(prefix):
            index = key[len(prefix):].split("/", 1)[0]
            # ASCII digits only: str.isdigit() also accepts superscripts, which int() refuses
            if not (0 < len(index) <= 9 and index.isascii() and index.isdigit()):
                raise ModelFileError(path, f"weight key {key!r} has no index after {prefix!r}.")
            items.append((int(index), key, value))
    items.sort()
    if [i for i, _, _ in items] != list(range(len(items))):
        raise ModelFileError(path, f"the {prefix.rstrip('/')} arrays are not numbered 0..{len(items) - 1}.")
    return [v for _, _, v in items]


def save_model(model, filepath, overwrite=True, zipped=True):
    """Write model (architecture, weights, compile config and optimizer state) to one file, atomically.

    Args: model: a built Sequential, functional or registered subclassed Model; filepath: any extension;
    overwrite: if False and the file exists, raise FileExistsError.
    Raises ValueError when the model cannot be described without code (a Lambda layer, an unregistered
    custom class) - before anything is written.
    """
    filepath = os.fspath(filepath)
    if not zipped:
        raise ValueError("save_model: lamina writes only zipped model files (zipped=True).")
    if not overwrite and os.path.exists(filepath):
        raise FileExistsError(f"{filepath} exists; pass overwrite=True to replace it.")
    if filepath.endswith(".keras"):   # Keras 3's own format, which real Keras loads
        return save_keras(model, filepath)
    if not model.built:
        raise ValueError(f"Model '{model.name}' is not built yet: call it on data or build() it before "
                         "saving, so that its weights exist.")
    try:
        model_config = model.get_config()
    except (ValueError, NotImplementedError, TypeError) as e:
        raise ValueError(f"Cannot save model '{model.name}': {e}") from e
    config = {"class_name": _class_name(model), "config": model_config,
              "compile_config": None, "build_config": _build_config(model)}
    weights = _weight_arrays(model)
    optimizer = getattr(model, "optimizer", None)
    if getattr(model, "compiled", False) and model.get_compile_config() is not None:
        compile_config = dict(model.get_compile_config())
        if optimizer is not None:
            compile_config["optimizer"] = serialize(optimizer)   # the live settings, not just 'adam'
        config["compile_config"] = compile_config
        if optimizer is not None and getattr(optimizer, "built", False):
            for i, a in enumerate(optimizer.get_state()):
                weights[f"{OPTIMIZER_PREFIX}{i:05d}"] = backend.to_numpy(a)
    try:
        io.write_model_file(filepath, config, weights, lamina_version=__version__)
    except ValueError as e:  # NaN in a config, an unserialisable value
        raise ValueError(f"Cannot save model '{model.name}' to {filepath}: {e}") from e
    return filepath


def check_dtype(path, variable, array, exact):
    """The file's dtype must be the weight's (exact: a model file rebuilt from its own config) or at least of
    the same kind (float data for a float weight: load_weights into a model of another precision)."""
    want, got = np.dtype(variable.dtype), np.dtype(array.dtype)
    same = want == got if exact else (want.kind == got.kind or {want.kind, got.kind} <= set("iu"))
    if not same:
        raise ModelFileError(path, f"weight '{getattr(variable, 'path', variable.name)}' is {want} but the file "
                                   f"declares {got} data for it (a header that does not match the model).")


def _assign(model, arrays, path, exact_dtype=False):
    params = model.weights
    if len(arrays) != len(params):
        raise ModelFileError(path, f"the file holds {len(arrays)} weight arrays but model '{model.name}' has "
                                   f"{len(params)} weights.")
    for p, a in zip(params, arrays):
        if tuple(a.shape) != tuple(p.shape):
            raise ModelFileError(path, f"weight '{getattr(p, 'path', p.name)}' has shape {tuple(p.shape)} but "
                                       f"the file holds shape {tuple(a.shape)}.")
        check_dtype(path, p, a, exact_dtype)
    for p, a in zip(params, arrays):
        p.assign(np.asarray(a, dtype=p.dtype))


def load_model(filepath, custom_objects=None, compile=True, safe_mode=True):
    """Rebuild a model saved by ``save_model`` (or ``model.save``) and restore its weights exactly.

    Args:
        filepath: the model file.
        custom_objects: {name: class} for custom layers/models not registered with
            ``lamina.utils.register_keras_serializable``.
        compile: also restore the compile config (optimizer, losses, metrics) and the optimizer's state,
            so training continues exactly where it stopped.
        safe_mode: accepted for Keras compatibility; lamina is always safe (it never runs code from a file).
    Raises: FileNotFoundError; ``lamina.io.ModelFileError`` (a ValueError) naming the file and the problem
    for anything truncated, corrupt, foreign or naming unknown classes.
    """
    filepath = os.fspath(filepath)
    try:
        return _load_model(filepath, custom_objects, compile)
    except (ModelFileError, FileNotFoundError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as e:   # anything else a hostile file provokes still names the file, in one line
        raise ModelFileError(filepath, f"cannot be loaded ({type(e).__name__}: {e}).") from e


def _load_model(filepath, custom_objects, compile):
    if is_keras_archive(filepath):   # told apart by content, not by name
        return load_keras(filepath, custom_objects=custom_objects, compile=compile)
    config, blob, metadata = io.read_model_parts(filepath)
    wpath = f"{filepath} ({io.formats.WEIGHTS_NAME})"
    weights = io.formats._decode_weights(wpath, blob, require_checksums=metadata.get("format_version", 1) >= 2)[0]
    stored = sum(a.nbytes for k, a in weights.items() if k.startswith(MODEL_PREFIX))
    with weight_budget(stored, filepath):   # the config may not ask for more weight memory than the file holds
        model = _rebuild(config, custom_objects, filepath)
    _assign(model, _indexed(weights, MODEL_PREFIX, filepath), filepath, exact_dtype=True)
    compile_config = config.get("compile_config")
    if compile and compile_config:
        if not isinstance(compile_config, dict):
            raise ModelFileError(filepath, "compile_config is not an object.")
        try:
            model.compile_from_config(compile_config)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise ModelFileError(filepath, f"cannot restore the compile config: {e}") from e
        state = _indexed(weights, OPTIMIZER_PREFIX, filepath)
        if state and model.optimizer is not None:
            flags = getattr(model, "_compiled_flags", None)
            try:
                if flags is not None:
                    with flags():
                        model.optimizer.build(model.trainable_weights)
                else:
                    model.optimizer.build(model.trainable_weights)
                model.optimizer.set_state(state)
            except ValueError as e:
                raise ModelFileError(filepath, f"cannot restore the optimizer state: {e}") from e
    return model


def _is_hdf5(path):
    with open_regular(path, "weights file") as f:   # FileNotFoundError / ModelFileError for anything else
        return f.read(8) == b"\x89HDF\r\n\x1a\n"


def save_weights(model, filepath, overwrite=True):
    """Write the model's weights (only) to a safetensors file, atomically. Keys as in model files."""
    filepath = os.fspath(filepath)
    if not overwrite and os.path.exists(filepath):
        raise FileExistsError(f"{filepath} exists; pass overwrite=True to replace it.")
    if not model.built:
        raise ValueError(f"Model '{model.name}' is not built yet: it has no weights to save.")
    if filepath.endswith(".h5"):   # Keras's .weights.h5 layout
        return save_weights_h5(model, filepath)
    io.write_weights_file(filepath, _weight_arrays(model),
                          {"format": "lamina.weights", "lamina_version": __version__})
    return filepath


def load_weights(model, filepath, skip_mismatch=False):
    """Load weights saved by ``save_weights`` (or the weights inside a model file) into a built model.

    Weights are matched by position; shapes must agree (``skip_mismatch=True`` leaves mismatched ones as
    they are instead of raising)."""
    filepath = os.fspath(filepath)
    if not model.built:
        raise ValueError(f"Model '{model.name}' is not built yet: build it (call it on data) before "
                         "load_weights, so that its weights exist.")
    try:
        return _load_weights(model, filepath, skip_mismatch)
    except (ModelFileError, FileNotFoundError, MemoryError, KeyboardInterrupt):
        raise
    except Exception as e:
        raise ModelFileError(filepath, f"cannot be loaded ({type(e).__name__}: {e}).") from e


def _load_weights(model, filepath, skip_mismatch):
    if is_keras_archive(filepath):
        return load_weights_from_archive(model, filepath)
    if _is_hdf5(filepath):
        if skip_mismatch:
            raise ValueError("load_weights: skip_mismatch is not supported for .weights.h5 files.")
        return load_weights_h5(model, filepath)
    arrays = _indexed(io.read_weights_any(filepath), MODEL_PREFIX, filepath)
    if skip_mismatch:
        for p, a in zip(model.weights, arrays):
            if tuple(a.shape) == tuple(p.shape) and np.dtype(a.dtype).kind == np.dtype(p.dtype).kind:
                p.assign(np.asarray(a, dtype=p.dtype))
        return
    _assign(model, arrays, filepath)


# Model.save / save_weights / load_weights find these here (Model's module cannot import this one back)
MODEL_FILES.update(save_model=save_model, save_weights=save_weights, load_weights=load_weights)
