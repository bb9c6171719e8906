"""Keras 3's ``.keras`` format, both ways: lamina models to files real Keras loads, and Keras's files to
lamina models.

Config: lamina's ``get_config`` already uses Keras's class and argument names; writing adds Keras's
envelope (``module``, ``registered_name``, ``build_config``) and reading removes it, turns Keras's dtype
policies into dtype names, and refuses, with a message naming the layer and argument, any argument that
asks for something lamina does not have (an argument lamina lacks is dropped only when its value is the
"off" value: None, False, 0 or an empty list).

Weights: ``model.weights.h5`` holds each layer's variables under a path Keras derives from the object
tree: ``layers/<snake_case class name>[_<k>]/vars/<i>`` in each model (the k-th layer of the same class
gets the suffix), recurrent layers under ``.../cell/vars``, Bidirectional under ``forward_layer/`` and
``backward_layer/``, TimeDistributed under ``layer/``, MultiHeadAttention under ``query_dense/``,
``key_dense/``, ``value_dense/`` and ``output_dense/``, nested models under their own ``layers/``. A
subclassed model, and a custom layer of the user's with sub-layers, are walked attribute by attribute as
Keras's saving_lib walks them (``<attribute>/vars``, a list's layers under ``<attribute>/<snake name>[_k]``,
the model's ``layers`` list in its name order, a layer met twice saved once). The same walk over a lamina
model gives the same paths, so weights are matched by path, and each shape is checked before anything is
assigned; files lamina wrote before it walked attributes load by their old layout.
"""
import functools
import inspect
import os
import tempfile

import numpy as np

from ..layers.core import lora_merged
from ..layers.operations import OPERATION_CLASSES
from .. import backend
from ..io import ModelFileError
from ..io.limits import weight_budget
from ..io.keras_archive import extract_assets, has_assets, read_keras_archive, write_keras_archive
from ..registry import get_registered_object, objects_in_scope, serialize
from .serialization import build_config, class_name, rebuild

__all__ = ["save_keras", "load_keras", "weight_paths", "to_keras_config", "from_keras_config"]

KERAS_VERSION = "3.15.1"


# ---------------------------------------------------------------------------------- weight paths
def _container_layers(model):
    """The layers Keras walks in a model: a Sequential's without its InputLayer, a functional model's all."""
    from ..layers.core import InputLayer
    layers = list(model.layers)
    if getattr(model, "_nodes", None) is None:
        layers = [layer for layer in layers if not isinstance(layer, InputLayer)]
    return layers


def weight_paths(obj, prefix="", walk=None, legacy=False):
    """[(group path, [Variables])] for obj (a model or a layer) in Keras's h5 layout. walk, if given, collects
    every layer reached with its inner path ([(inner path, layer)] in walk.layers); legacy gives the layout lamina
    wrote before it followed Keras's attribute walk (every sub-layer of a subclassed model under layers/, a
    custom layer's sub-layers' weights in its own vars), for reading older files."""
    from .model import Model
    walk = _Walk(legacy) if walk is None else walk
    walk.visited.add(id(obj))
    walk.layers.append((prefix[:-1], obj))
    kind = type(obj).__name__
    if not walk.legacy and _walked_by_attribute(obj):
        return _attribute_paths(obj, prefix, walk)
    if isinstance(obj, Model):
        out, seen = [(prefix + "vars", [])], {}
        for layer in _container_layers(obj):
            base = backend.snake_case(type(layer).__name__)
            k = seen.get(base, 0)
            seen[base] = k + 1
            if id(layer) not in walk.visited or walk.legacy:
                out += weight_paths(layer, f"{prefix}layers/{base}{'_' + str(k) if k else ''}/", walk)
        return out
    if kind == "SpectralNormalization":  # Keras tracks the wrapped kernel and vector_u on the wrapper too
        return [(prefix + "vars", [obj.kernel, obj.vector_u])] + weight_paths(obj.layer, prefix + "layer/", walk)
    if kind == "Wrapper":
        return [(prefix + "vars", [])] + weight_paths(obj.layer, prefix + "layer/", walk)
    if kind == "StackedRNNCells":  # Keras: .../cell/cells/<snake cell name>[_k]/vars
        out, seen = [(prefix + "vars", [])], {}
        for c in obj.cells:
            base = backend.snake_case(type(c).__name__)
            k = seen.get(base, 0)
            seen[base] = k + 1
            out += weight_paths(c, f"{prefix}cells/{base}{'_' + str(k) if k else ''}/", walk)
        return out
    if kind in ("ConvLSTM1D", "ConvLSTM2D", "ConvLSTM3D"):
        return [(prefix + "vars", []), (prefix + "cell/vars", list(obj.weights))]
    if kind in ("SimpleRNN", "LSTM", "GRU", "RNN"):
        cell = getattr(obj, "cell", None)
        if kind == "RNN" and cell is not None:
            return weight_paths(cell, prefix + "cell/", walk)
        return [(prefix + "cell/vars", list(obj.weights))]
    if kind == "Bidirectional":
        return weight_paths(obj.forward_layer, prefix + "forward_layer/", walk) + \
            weight_paths(obj.backward_layer, prefix + "backward_layer/", walk)
    if kind == "TimeDistributed":
        return [(prefix + "vars", [])] + weight_paths(obj.layer, prefix + "layer/", walk)
    if kind == "MultiHeadAttention":
        ws = list(obj.weights)
        step = 2 if obj.get_config().get("use_bias", True) else 1
        names = ("query_dense", "key_dense", "value_dense", "output_dense")
        return [(prefix + "vars", [])] + [(f"{prefix}{n}/vars", ws[i * step:(i + 1) * step])
                                          for i, n in enumerate(names)]
    if kind == "GroupedQueryAttention":  # Keras tracks its sublayers by their private attribute names
        subs = [("_query_dense", obj.query_kernel, obj.query_bias), ("_key_dense", obj.key_kernel, obj.key_bias),
                ("_gate_dense", obj.gate_kernel, obj.gate_bias), ("_value_dense", obj.value_kernel, obj.value_bias),
                ("_output_dense", obj.output_kernel, obj.output_bias)]
        return [(prefix + "vars", []), (prefix + "_softmax/vars", []), (prefix + "_dropout_layer/vars", [])] + \
            [(f"{prefix}{n}/vars", [w for w in (k, b) if w is not None]) for n, k, b in subs if k is not None]
    if getattr(obj, "lora_enabled", False):   # Keras writes the merged weight in the frozen one's place, no factors
        frozen, a, b = obj._lora
        return [(prefix + "vars", [_MergedLora(obj) if w is frozen else w for w in obj.weights
                                   if w is not a and w is not b])]
    return [(prefix + "vars", list(obj.weights))]


class _Walk:
    """One walk over a model's object tree: the layers reached so far (Keras saves a layer once, at the first
    path it meets it on) and each layer's inner path."""

    def __init__(self, legacy=False):
        self.legacy = legacy
        self.visited = set()
        self.layers = []


def _walked_by_attribute(obj):
    """Keras walks a subclassed model, and a layer of the user's own with sub-layers, attribute by attribute
    (its saving_lib's _walk_saveable); lamina's built-in layers keep their own paths above (Keras's for the
    same built-in layers)."""
    from ..layers.layer import Layer
    from .model import Model
    from .sequential import Sequential
    if isinstance(obj, Model):
        return not isinstance(obj, Sequential) and getattr(obj, "_nodes", None) is None
    module = type(obj).__module__ or ""
    return (isinstance(obj, Layer) and bool(obj.__dict__.get("_layers"))
            and (not module.startswith("lamina.") or module.startswith("lamina.zoo")))


@functools.lru_cache(maxsize=None)
def _base_attributes(is_model):
    """The attribute names lamina's own Layer (or Model) machinery gives an object, built and called: Keras skips
    its base Layer's attributes, and an attribute the user's class sets is walked in both libraries."""
    from ..layers.layer import Layer
    from .model import Model

    class _Plain(Model if is_model else Layer):
        def call(self, x):
            return x
    ref = _Plain()
    ref(np.zeros((1, 1), "float32"))
    return frozenset(dir(ref)) | frozenset(dir(Model if is_model else Layer))


def _attribute_paths(obj, prefix, walk):
    """Keras's walk of obj: its own variables in vars, then each attribute (public names first, each group in
    name order) holding a layer or a list, tuple or dict of them, at <attribute>/ (a container's members at
    <attribute>/<snake class name>[_k]/); a model's layers list comes in name order as "layers"."""
    from ..layers.layer import Layer
    from .model import Model
    out = [(prefix + "vars", obj._own_variables())]
    skip = _base_attributes(isinstance(obj, Model))
    names = [n for n in obj.__dict__ if not n.startswith("__") and n not in skip]
    if isinstance(obj, Model):
        names.append("layers")
    for name in sorted(set(names), key=lambda n: "~" + n if n.startswith("_") else n):
        child = obj.layers if name == "layers" and isinstance(obj, Model) else obj.__dict__[name]
        if isinstance(child, Layer):
            if id(child) not in walk.visited:
                out += weight_paths(child, f"{prefix}{name}/", walk)
        elif isinstance(child, (list, tuple, dict)):
            out += _container_paths(child, f"{prefix}{name}/", walk, set())
    return out


def _container_paths(items, prefix, walk, seen_containers):
    """Keras's _save_container_state: a list's (a dict's values', a tuple's) layers at <snake class name>[_k]/,
    k counting that class in this container; nested containers at container[_k]/."""
    from ..layers.layer import Layer
    if id(items) in seen_containers:
        return []
    seen_containers.add(id(items))
    out, used = [], {}

    def unique(base):
        if base in used:
            used[base] += 1
            return f"{base}_{used[base]}"
        used[base] = 0
        return base
    for item in (items.values() if isinstance(items, dict) else items):
        if isinstance(item, Layer):
            name = unique(backend.snake_case(type(item).__name__))
            if id(item) not in walk.visited:
                out += weight_paths(item, f"{prefix}{name}/", walk)
        elif isinstance(item, (list, tuple, dict)):
            out += _container_paths(item, f"{prefix}{unique('container')}/", walk, seen_containers)
    return out


class _MergedLora:
    """A LoRA-enabled layer's frozen weight as Keras saves and loads it: saved with the low-rank update merged
    in; loaded into the frozen weight with both factors reset to zero (so the layer computes the file's)."""

    def __init__(self, layer):
        self.layer = layer
        frozen = layer._lora[0]
        self.shape, self.dtype = tuple(frozen.shape), frozen.dtype
        self.name, self.path = frozen.name, getattr(frozen, "path", frozen.name)

    @property
    def data(self):
        return lora_merged(self.layer).data

    def assign(self, value):
        frozen, a, b = self.layer._lora
        frozen.assign(value)
        for factor in (a, b):
            factor.assign(np.zeros(factor.shape, dtype=factor.dtype))


# ------------------------------------------------------------------------------------- configs out
def _keras_object(obj):
    """Keras's envelope around a serialized object dict ({'class_name', 'config'}), recursively."""
    if isinstance(obj, list):
        return [_keras_object(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    out = {k: _keras_object(v) for k, v in obj.items()}
    if "class_name" in obj and "config" in obj and isinstance(obj["config"], dict):
        cls = get_registered_object(obj["class_name"])
        module = "keras.layers"
        if cls is not None:
            mod = cls.__module__
            for floor, name in (("initializers", "keras.initializers"), ("regularizers", "keras.regularizers"),
                                ("constraints", "keras.constraints"),
                                ("optimizers.schedules", "keras.optimizers.schedules"),
                                ("optimizers", "keras.optimizers"),
                                ("losses", "keras.losses"), ("metrics", "keras.metrics"),
                                ("models", "keras.models")):
                if f".{floor}" in mod:
                    module = name
                    break
        keras_module = getattr(cls, "_keras_module", None)   # a class Keras keeps outside keras.layers
        if keras_module is not None:
            module = keras_module
            out["class_name"] = out["registered_name"] = getattr(cls, "_keras_class_name", obj["class_name"])
        if ">" in str(obj["class_name"]) and cls is not None and keras_module is None:
            # a class registered with register_keras_serializable: Keras writes its own class name, the
            # 'package>Name' as registered_name (which Keras looks up first) and the Python module
            out["class_name"], out["registered_name"] = cls.__name__, obj["class_name"]
            out["module"] = cls.__module__
        out.setdefault("module", module)
        out.setdefault("registered_name", None)
    return out


def to_keras_config(model):
    """The config.json dict Keras 3 writes for model (without compile_config)."""
    config = _keras_object({"class_name": class_name(model), "config": model.get_config()})
    if ">" not in str(config.get("registered_name")):   # (a registered class of the user's keeps 'package>Name')
        config["module"] = "keras.src.models.functional" if config["class_name"] == "Functional" else "keras"
        config["registered_name"] = config["class_name"]
    config["build_config"] = build_config(model)
    return config


# -------------------------------------------------------------------------------------- configs in
_OFF = (None, False, 0, [], {}, "")
# Keras arguments lamina lacks whose default is not an "off" value: dropped when they hold that default
_KERAS_DEFAULTS = {"renorm_momentum": 0.99, "pool_mode": "max"}
# Keras's operations (keras.src.ops.*) in functional graphs -> lamina's classes for them
_KERAS_OPERATIONS = {k: cls.__name__ for k, cls in OPERATION_CLASSES.items()}


@functools.lru_cache(maxsize=None)
def _accepted(cls):
    """The argument names cls.__init__ takes (all, when it takes **kwargs beyond the base Layer's). Read once
    per class (inspect.signature of every __init__ in the MRO took ~0.3 ms, for every layer of every file)."""
    names = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                names.add(p.name)
    return frozenset(names)


def from_keras_config(obj, path, where="model"):
    """Keras's serialized object -> lamina's: envelope and dtype policies removed, unknown arguments
    dropped when off and refused otherwise."""
    if isinstance(obj, list):
        return [from_keras_config(v, path, where) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if obj.get("class_name") in ("DTypePolicy", "FloatDTypePolicy") and isinstance(obj.get("config"), dict):
        return obj["config"].get("name", "float32")
    if obj.get("class_name") == "__keras_tensor__":
        return obj
    out = {k: v for k, v in obj.items() if k not in ("module", "registered_name", "shared_object_id")}
    registered = obj.get("registered_name")
    if isinstance(registered, str) and ">" in registered and get_registered_object(registered) is not None:
        out["class_name"] = registered   # Keras's name of a class registered with register_keras_serializable
    if str(obj.get("module", "")).startswith("keras.src.ops.") and obj.get("class_name") in _KERAS_OPERATIONS:
        out["class_name"] = _KERAS_OPERATIONS[obj["class_name"]]   # a symbolic op in a functional graph
    if "class_name" in out and isinstance(out.get("config"), dict):
        cls = get_registered_object(out["class_name"])
        name = out["config"].get("name", out["class_name"])
        inner = {k: from_keras_config(v, path, f"{where} > {name}") for k, v in out["config"].items()}
        # a class with its own from_config reads (and pops) extra keys itself; the others pass the config
        # straight to __init__, so an argument it lacks must be checked here
        own_from_config = cls is not None and ("from_config" in vars(cls) or getattr(cls, "_operation", False))
        if cls is not None and isinstance(cls, type) and not own_from_config:
            allowed = _accepted(cls) | {"name", "trainable", "dtype", "layers", "input_layers", "output_layers",
                                        "build_input_shape"}
            for key in list(inner):
                if key not in allowed:
                    if inner[key] in _OFF or _KERAS_DEFAULTS.get(key, object()) == inner[key]:
                        del inner[key]
                    else:
                        raise ModelFileError(path, f"{where} > {name} ({out['class_name']}): Keras argument "
                                                   f"{key}={inner[key]!r} is not supported by lamina.")
        out["config"] = inner
        return out
    return {k: from_keras_config(v, path, where) for k, v in out.items()}


# -------------------------------------------------------------------------------------- save / load
def save_keras(model, filepath):
    """Write model as a Keras 3 ``.keras`` archive (config.json, metadata.json, model.weights.h5)."""
    filepath = os.fspath(filepath)
    if not model.built:
        raise ValueError(f"Model '{model.name}' is not built yet: call it on data or build() it before saving.")
    try:
        config = to_keras_config(model)
    except (ValueError, NotImplementedError, TypeError) as e:
        raise ValueError(f"Cannot save model '{model.name}': {e}") from e
    optimizer = getattr(model, "optimizer", None)
    if getattr(model, "compiled", False) and model.get_compile_config() is not None:
        compile_config = dict(model.get_compile_config())
        if optimizer is not None:
            compile_config["optimizer"] = serialize(optimizer)
        config["compile_config"] = _keras_object(compile_config)
    write_keras_archive(filepath, config, keras_weight_groups(model), KERAS_VERSION, _saved_assets(model))
    return filepath


# ----------------------------------------------------------------------- the layers' saving hooks
def _overrides(layer, hook):
    """True when layer's class replaces Layer's default hook (the default path keeps the fast, batched one)."""
    from ..layers.layer import Layer
    return getattr(type(layer), hook, None) is not getattr(Layer, hook)


def _walk_model(model):
    """(weight_paths(model), [(inner path, layer)] of every layer the walk reached) from one walk."""
    walk = _Walk()
    return weight_paths(model, "", walk), walk.layers


def _hooked_layers(model, hook, reached=None):
    """[(inner path, layer)] of the layers Keras's walk reaches in model (the model itself, nested models, a
    custom layer's sub-layers) whose class overrides hook; inner path is Keras's ("layers/<snake name>[_k]",
    "<attribute>", ...; "" for the model itself). reached: the layers of a walk already made (_walk_model)."""
    from .model import Model
    if not isinstance(model, Model):   # another file root (a FeatureSpace) keeps its own state
        return []
    reached = _walk_model(model)[1] if reached is None else reached
    return [(inner, layer) for inner, layer in reached if _overrides(layer, hook)]


def _under(inner, rest):
    """The path rest inside a layer's entry (the model's own entry is the file's root)."""
    return f"{inner}/{rest}" if inner else rest


class _SaveStore(dict):
    """The dict a layer's save_own_variables fills: values become NumPy arrays as they are set (Keras's H5Entry
    takes variables, tensors or arrays alike)."""

    def __setitem__(self, key, value):
        data = backend.array_of(value)
        super().__setitem__(str(key), np.asarray(backend.to_numpy(data)))


def _saved_assets(model):
    """[(member name under assets/, bytes)] of what each overriding layer's save_assets writes into a temporary
    folder (Keras: assets/<inner path>/<file>); links and other non-files are refused."""
    out = []
    for inner, layer in _hooked_layers(model, "save_assets"):
        with tempfile.TemporaryDirectory(prefix="lamina-assets-") as tmp:
            layer.save_assets(tmp)
            for root, dirs, files in os.walk(tmp):
                for name in sorted(dirs + files):
                    full = os.path.join(root, name)
                    if os.path.islink(full) or not (os.path.isdir(full) or os.path.isfile(full)):
                        raise ValueError(f"Layer '{layer.name}': save_assets left {full!r}, which is not a plain "
                                         "file or folder.")
                dirs.sort()
                for name in sorted(files):
                    rel = os.path.relpath(os.path.join(root, name), tmp).replace(os.sep, "/")
                    with open(os.path.join(root, name), "rb") as f:
                        out.append((_under(inner, rel), f.read()))
    return out


def _assign_all(model, arrays, path):
    """Set the model's weights from {dataset path: array}: the batched, shape-checked path for every layer but
    those whose class overrides load_own_variables, which then get their entry (a dict) themselves."""
    groups, reached = _walk_model(model)
    hooked = _hooked_layers(model, "load_own_variables", reached)
    _assign_by_path(model, arrays, path, skip={_under(inner, "vars") for inner, _ in hooked}, groups=groups)
    for inner, layer in hooked:
        group = _under(inner, "vars/")
        store = {k[len(group):]: a for k, a in arrays.items() if k.startswith(group) and "/" not in k[len(group):]}
        try:
            layer.load_own_variables(store)
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise ModelFileError(path, f"layer '{layer.name}' could not load its variables from {group}: "
                                       f"{type(e).__name__}: {e}") from e


def _load_hooked_assets(model, path):
    """Call load_assets of each overriding layer with a temporary copy of its assets (Keras: only when the
    archive holds assets; None for a layer that has none)."""
    hooked = _hooked_layers(model, "load_assets")
    if not hooked or not has_assets(path):
        return
    for inner, layer in hooked:
        with tempfile.TemporaryDirectory(prefix="lamina-assets-") as tmp:
            layer.load_assets(tmp if extract_assets(path, inner, tmp) else None)


def layer_groups(model):
    """[(group path, [arrays] or {key: array})]: the layers' entries in model.weights.h5; a layer whose class
    overrides save_own_variables fills its own entry (Keras's layout: layers/<name>/vars/<key>)."""
    paths, reached = _walk_model(model)
    groups = [(p, [backend.to_numpy(v.data) for v in vs]) for p, vs in paths]
    hooked = _hooked_layers(model, "save_own_variables", reached)
    if hooked:
        index = {p: i for i, (p, _) in enumerate(groups)}
        for inner, layer in hooked:
            store = _SaveStore()
            layer.save_own_variables(store)
            group = (_under(inner, "vars"), dict(store))
            if group[0] in index:
                groups[index[group[0]]] = group
            else:
                groups.append(group)
    return groups


def keras_weight_groups(model):
    """[(group path, [arrays])]: what a .keras file of model holds in model.weights.h5 (the layers' weights,
    then the optimizer's variables when it has state lamina can give in Keras's order)."""
    groups = layer_groups(model)
    optimizer = getattr(model, "optimizer", None)
    if getattr(model, "compiled", False) and model.get_compile_config() is not None:
        slots = _keras_optimizer_vars(model, optimizer)
        if slots is not None:
            groups.append(("optimizer/vars", slots))
            if _is_loss_scale(optimizer):   # Keras also keeps the inner optimizer's variables on their own
                groups.append(("optimizer/inner_optimizer/vars", slots[4:]))
    return groups


# Variables Keras keeps after the slots: Nadam's running product of its momentum schedule (a float32 scalar)
_KERAS_TRAILING = {"Nadam": 1}


def _is_loss_scale(optimizer):
    return type(optimizer).__name__ == "LossScaleOptimizer"


def _keras_optimizer_vars(model, optimizer):
    """Keras's optimizer variables (iteration, learning_rate, the slots in Keras's order), or None when lamina
    cannot give them in Keras's order (the file then holds no optimizer state, and training resumes with a
    fresh optimizer, as for a model saved before training). A LossScaleOptimizer has its own iteration and
    learning rate (unused, 0), step_counter and dynamic_scale, then its inner optimizer's variables."""
    if optimizer is not None and _is_loss_scale(optimizer):
        inner = _keras_optimizer_vars(model, optimizer.inner_optimizer)
        if inner is None:
            return None
        return [np.asarray(0, np.int64), np.asarray(0.0, np.float32), np.asarray(optimizer.step_counter, np.int64),
                np.asarray(optimizer.dynamic_scale, np.float32)] + inner
    if optimizer is None or not getattr(optimizer, "built", False):
        return None
    order = optimizer._keras_slot_order()   # (Keras's order, or None: Optimizer._keras_slot_groups)
    if order is None:
        return None
    out = [np.asarray(optimizer._iterations, np.int64)]
    if isinstance(optimizer._learning_rate, float):   # a schedule is no variable (Keras)
        out.append(np.asarray(optimizer._learning_rate, np.float32))
    out += [backend.to_numpy(optimizer._slots[name][i].data) for name, i in order]
    if type(optimizer).__name__ == "Nadam":
        out.append(np.asarray(optimizer._u_product, np.float32))
    return out


def _scalar(path, value, kind, what):
    value = np.asarray(value)
    if value.shape != () or value.dtype.kind not in kind:
        raise ModelFileError(path, f"{what} must be a scalar, found {value.dtype} of shape {value.shape}")
    return value


def _restore_optimizer(model, arrays, path):
    optimizer = model.optimizer
    stored = [arrays[f"optimizer/vars/{i}"] for i in range(len(arrays)) if f"optimizer/vars/{i}" in arrays]
    if not stored or optimizer is None:
        return
    flags = getattr(model, "_compiled_flags", None)
    if flags is not None:
        with flags():
            optimizer.build(model.trainable_weights)
    else:
        optimizer.build(model.trainable_weights)
    if _is_loss_scale(optimizer):
        if len(stored) < 4 or not _restore_state(optimizer.inner_optimizer, stored[4:], path):
            return
        optimizer.step_counter = int(_scalar(path, stored[2], "iu", "LossScaleOptimizer's step_counter"))
        optimizer.dynamic_scale = float(_scalar(path, stored[3], "f", "LossScaleOptimizer's dynamic_scale"))
        return
    _restore_state(optimizer, stored, path)


def _restore_state(optimizer, stored, path):
    """Set optimizer (built) from Keras's variables; False (left fresh) when the layout is not one lamina knows."""
    order = optimizer._keras_slot_order()   # (Keras's order, or None: Optimizer._keras_slot_groups)
    trailing = _KERAS_TRAILING.get(type(optimizer).__name__, 0)
    head = 2 if isinstance(optimizer._learning_rate, float) else 1   # iteration[, learning_rate]
    if order is None or len(stored) != head + len(order) + trailing:
        return False  # a layout lamina does not know: the optimizer starts afresh (as Keras does on a mismatch)
    state = {(name, i): a for (name, i), a in zip(order, stored[head:head + len(order)])}
    try:
        # a slot Keras does not keep (Muon's velocity of a Muon-stepped weight) keeps its value
        optimizer.set_state([stored[0]] + [state.get((name, i), slot.data) for name, slots in optimizer._slots.items()
                                           for i, slot in enumerate(slots)])
    except ValueError as e:
        raise ModelFileError(path, f"cannot restore the optimizer state: {e}") from e
    if type(optimizer).__name__ == "Nadam":
        optimizer._u_product = float(_scalar(path, stored[-1], "f", "Nadam's momentum product"))
    if head == 2 and np.float32(optimizer._learning_rate) != np.float32(stored[1]):
        optimizer.learning_rate = float(stored[1])   # changed during training (ReduceLROnPlateau...)
    return True


def load_keras(filepath, custom_objects=None, compile=True):
    """A lamina model from a Keras 3 ``.keras`` archive (written by Keras or by lamina)."""
    filepath = os.fspath(filepath)
    config, _, arrays = read_keras_archive(filepath)
    with objects_in_scope(custom_objects):   # a class of custom_objects checks its own arguments, not a namesake's
        converted = from_keras_config(config, filepath)
    stored = sum(a.nbytes for k, a in arrays.items() if not k.startswith("optimizer/"))
    with weight_budget(stored, filepath):   # the config may not ask for more weight memory than the file holds
        model = rebuild({"class_name": converted.get("class_name"), "config": converted.get("config"),
                         "build_config": converted.get("build_config")}, custom_objects, filepath)
    _assign_all(model, arrays, filepath)
    _load_hooked_assets(model, filepath)
    compile_config = converted.get("compile_config")
    if compile and compile_config:
        try:
            model.compile_from_config(compile_config)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise ModelFileError(filepath, f"cannot restore the compile config: {e}") from e
        _restore_optimizer(model, arrays, filepath)
    return model


def _all_present(groups, arrays, skip):
    return all(f"{group}/{i}" in arrays for group, variables in groups if group not in skip
               for i in range(len(variables)))


def _assign_by_path(model, arrays, path, skip=(), groups=None):
    groups = weight_paths(model) if groups is None else groups
    if not _all_present(groups, arrays, skip):
        legacy = weight_paths(model, legacy=True)   # a file lamina wrote before it walked attributes as Keras
        if [g for g, _ in legacy] != [g for g, _ in groups] and _all_present(legacy, arrays, skip):
            groups = legacy
    pending = []
    for group, variables in groups:
        if group in skip:   # loaded by the layer's own load_own_variables
            continue
        for i, v in enumerate(variables):
            key = f"{group}/{i}"
            if key not in arrays:
                raise ModelFileError(path, f"the weights file has no {key} for weight '{getattr(v, 'path', v.name)}' "
                                           f"{tuple(v.shape)} (the file does not match the model's layers).")
            a = arrays[key]
            if tuple(a.shape) != tuple(v.shape):
                raise ModelFileError(path, f"{key} has shape {tuple(a.shape)}, but weight "
                                           f"'{getattr(v, 'path', v.name)}' has shape {tuple(v.shape)}.")
            if np.dtype(a.dtype).kind != np.dtype(v.dtype).kind and not {np.dtype(a.dtype).kind,
                                                                            np.dtype(v.dtype).kind} <= set("iub"):
                raise ModelFileError(path, f"{key} holds {a.dtype} data, but weight "
                                           f"'{getattr(v, 'path', v.name)}' is {np.dtype(v.dtype)}.")
            pending.append((v, a))
    for v, a in pending:
        v.assign(np.asarray(a, dtype=v.dtype))


def save_weights_h5(model, filepath):
    """``model.save_weights('x.weights.h5')``: the weights alone, in Keras's h5 layout."""
    from ..io import atomic_write
    from ..io.keras_archive import write_weights_h5
    atomic_write(os.fspath(filepath), write_weights_h5(layer_groups(model)))
    return filepath


def load_weights_from_archive(model, filepath):
    """``load_weights`` given a whole .keras file: the weights only, matched by path."""
    filepath = os.fspath(filepath)
    _, _, arrays = read_keras_archive(filepath)
    _assign_all(model, arrays, filepath)


def load_weights_h5(model, filepath):
    from ..io.keras_archive import read_weights_h5
    from ..io.formats import MAX_WEIGHTS_BYTES, _read_bounded
    filepath = os.fspath(filepath)
    blob = _read_bounded(filepath, MAX_WEIGHTS_BYTES)
    _assign_all(model, read_weights_h5(filepath, blob), filepath)

