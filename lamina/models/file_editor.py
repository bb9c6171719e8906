"""``keras.saving.KerasFileEditor``: look inside a ``.keras`` or ``.weights.h5`` file, edit its weights, and
write them out again as ``.weights.h5``, e.g. to adapt an old weights file to a model whose layers changed.

The file is read with the same checks as ``load_model`` (lamina/io/keras_archive.py: member and size
limits, no links to other files, numbers only, never unpickled). Its weights become a tree of dicts: one
dict per object (a layer, the optimizer, a sub-layer), whose arrays are keyed by their names in the file
("0", "1", ...) and whose sub-objects are keyed by their path component, as in Keras::

    {"layers": {"dense": {"0": kernel, "1": bias}, "dense_1": {...}}, "optimizer": {"0": ..., ...}}

Keras's own editor drops an object whose ``vars`` group is empty while it has sub-objects (a
MultiHeadAttention's query/key/value/output layers vanish from its tree, and from a file it saves); here
such an object keeps its sub-objects, so a file read and saved again holds every weight it held.
"""
import os

import numpy as np

from ..io import ModelFileError, atomic_write
from ..io.formats import MAX_WEIGHTS_BYTES, _read_bounded
from ..io.keras_archive import read_keras_archive, read_weights_h5, write_weights_h5
from .keras_format import keras_weight_groups

__all__ = ["KerasFileEditor"]


def _tree(flat, filepath):
    """{"a/b/vars/0": array} -> {"a": {"b": {"0": array}}}: each "vars" group's arrays go to its object."""
    root = {}
    for path, array in flat.items():
        parts = [p for p in path.split("/") if p != "vars"]
        node = root
        for name in parts[:-1]:
            child = node.setdefault(name, {})
            if not isinstance(child, dict):
                raise ModelFileError(filepath, f"the weights file uses {name!r} both as an array and as a group.")
            node = child
        node[parts[-1]] = array
    return root


def _groups(tree, prefix=""):
    """The inverse of _tree: [(group path, {name: array})] with each object's arrays under <path>/vars (the
    names kept: an edited object may hold "0" and "2" only)."""
    arrays = {k: v for k, v in tree.items() if not isinstance(v, dict)}
    out = [(prefix + "vars", arrays)] if arrays else []
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out += _groups(v, f"{prefix}{k}/")
    return out


def _leaf(name, what):
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"Argument `{what}` should be a leaf name, not a full path name. Received: {what}={name!r}")


class KerasFileEditor:
    """Inspect, edit and re-save the weights of a ``.keras`` or ``.weights.h5`` file (Keras 3's API).

    ``summary()`` prints the tree of objects and weights; ``compare(model)`` lists where the file and a model
    disagree (missing objects or weights, other shapes); ``rename_object``, ``delete_object``, ``add_object``,
    ``delete_weight`` and ``add_weights`` edit the tree (objects named by a unique name, or a path such as
    ``"layers/dense_1"``); ``save("x.weights.h5")`` writes it, for ``model.load_weights``.
    Attributes: ``weights_dict`` (the tree), ``config`` and ``metadata`` (of a .keras file, else None).
    """

    def __init__(self, filepath):
        self.filepath = os.fspath(filepath)
        self.config = self.metadata = None
        if self.filepath.endswith(".keras"):
            self.config, self.metadata, flat = read_keras_archive(self.filepath)
        elif self.filepath.endswith(".weights.h5"):
            flat = read_weights_h5(self.filepath, _read_bounded(self.filepath, MAX_WEIGHTS_BYTES))
        else:
            raise ValueError("Invalid filename: expected a `.keras` `.weights.h5` extension. "
                             f"Received: filepath={self.filepath}")
        self.weights_dict = _tree(flat, self.filepath)
        print(f"Keras model file '{self.filepath}'")
        if self.metadata:
            print(f"Saved with Keras {self.metadata.get('keras_version', '?')} - date: "
                  f"{self.metadata.get('date_saved', '?')}")

    # ----- looking
    def summary(self):
        """Print the tree of objects and weights (name: shape, dtype)."""
        print("Weights structure")
        lines = []
        _draw(self.weights_dict, "  ", lines, first=True)
        print("\n".join(lines))

    def weights_summary(self):
        """The same as summary() (Keras's name for it in notebooks)."""
        self.summary()

    def compare(self, reference_model):
        """Compare the file with a model: every object and weight of either missing from the other, and every
        weight whose shape differs, is printed. Returns {'status': 'success' or 'error', 'error_count',
        'match_count'}."""
        print("Running comparison")
        # shapes only: zero-size views standing for the model's arrays
        ref = _tree({f"{group}/{i}": np.broadcast_to(np.zeros((), np.asarray(a).dtype), np.shape(a))
                     for group, arrays in keras_weight_groups(reference_model)   # a dict: a layer's own keys
                     for i, a in (arrays.items() if isinstance(arrays, dict) else enumerate(arrays))},
                    "reference model")
        checked = set()
        errors, matches = _compare(self.weights_dict, ref, "", "saved file", "reference model", checked)
        more, _ = _compare(ref, self.weights_dict, "", "reference model", "saved file", checked)
        errors += more
        print("─────────────────────")
        if errors == 0:
            print("Comparison successful: saved file is compatible with the reference model")
            print(f"    Found {matches} matching weight{'' if matches == 1 else 's'}")
        else:
            print(f"Found {errors} error{'' if errors == 1 else 's'}: saved file is not compatible with the "
                  "reference model")
        return {"status": "success" if errors == 0 else "error", "error_count": errors, "match_count": matches}

    # ----- editing
    def _find(self, object_name):
        """(parent dict, key) of the object named by a path ("layers/dense") or a name unique in the tree."""
        if not isinstance(object_name, str) or not object_name:
            raise ValueError(f"An object name or path is expected. Received: {object_name!r}")
        if "/" in object_name:
            *parents, last = object_name.split("/")
            node = self.weights_dict
            for name in parents:
                node = node.get(name) if isinstance(node, dict) else None
                if not isinstance(node, dict):
                    raise ValueError(f"Path '{object_name}' not found in model.")
            if last not in node:
                raise ValueError(f"Path '{object_name}' not found in model.")
            return node, last
        found = []

        def walk(node):
            for k, v in node.items():
                if k == object_name:
                    found.append((node, k))
                if isinstance(v, dict):
                    walk(v)
        walk(self.weights_dict)
        if len(found) > 1:
            raise ValueError(f"Name '{object_name}' occurs more than once in the model; try passing a complete path")
        if not found:
            raise ValueError(f"Source name '{object_name}' does not appear in the model. Use "
                             "`editor.summary()` to list all objects.")
        return found[0]

    def rename_object(self, object_name, new_name):
        """Rename an object (e.g. ``"dense_2"`` or ``"layers/dense_2"``) to ``new_name`` (a leaf name)."""
        _leaf(new_name, "target_name")
        parent, key = self._find(object_name)
        if new_name in parent and new_name != key:
            raise ValueError(f"'{new_name}' already exists beside '{object_name}'.")
        # keep the object's place among its siblings (the order summary() and save() follow)
        items = [(new_name if k == key else k, v) for k, v in parent.items()]
        parent.clear()
        parent.update(items)

    def delete_object(self, object_name):
        """Remove an object (e.g. a layer) and all its weights."""
        parent, key = self._find(object_name)
        del parent[key]

    def add_object(self, object_path, weights):
        """Add an object at ``object_path`` (e.g. ``"layers/dense_2"``) holding ``weights``, a dict of weight
        name -> array (e.g. ``{"0": kernel, "1": bias}``)."""
        weights = _checked_weights(weights)
        if not isinstance(object_path, str) or not object_path:
            raise ValueError(f"An object path is expected. Received: {object_path!r}")
        *parents, last = object_path.split("/")
        node = self.weights_dict
        for name in parents:
            node = node.get(name)
            if not isinstance(node, dict):
                raise ValueError(f"Path '{'/'.join(parents)}' not found in model.")
        node[last] = weights

    def delete_weight(self, object_name, weight_name):
        """Remove one weight (e.g. ``"1"``) from an object."""
        parent, key = self._find(object_name)
        obj = parent[key]
        if not isinstance(obj, dict) or weight_name not in obj or isinstance(obj[weight_name], dict):
            found = [k for k, v in obj.items() if not isinstance(v, dict)] if isinstance(obj, dict) else []
            raise ValueError(f"Weight {weight_name} not found in object {object_name}. Weights found: {found}")
        del obj[weight_name]

    def add_weights(self, object_name, weights):
        """Add (or replace) weights of an existing object: a dict of weight name -> array."""
        weights = _checked_weights(weights)
        parent, key = self._find(object_name)
        if not isinstance(parent[key], dict):
            raise ValueError(f"'{object_name}' is a weight, not an object.")
        parent[key].update(weights)

    # ----- writing
    def save(self, filepath):
        """Write the (edited) weights to ``filepath``, which must end in ``.weights.h5`` (atomically: a crash
        leaves any earlier file whole)."""
        filepath = os.fspath(filepath)
        if not filepath.endswith(".weights.h5"):
            raise ValueError("Invalid `filepath` argument: expected a `.weights.h5` extension. "
                             f"Received: filepath={filepath}")
        atomic_write(filepath, write_weights_h5(_groups(self.weights_dict)))
        return filepath

    def resave_weights(self, filepath):
        """The same as save(filepath)."""
        return self.save(filepath)


def _checked_weights(weights):
    if not isinstance(weights, dict):
        raise ValueError("Argument `weights` should be a dict where keys are weight names (usually '0', '1', "
                         f"etc.) and values are NumPy arrays. Received: type(weights)={type(weights)}")
    out = {}
    for name, value in weights.items():
        _leaf(name, "weight name")
        array = np.asarray(value.numpy() if hasattr(value, "numpy") else value)
        if array.dtype.kind not in "biuf":
            raise ValueError(f"Weight {name!r} must be numeric. Received dtype {array.dtype}")
        out[name] = array
    return out


def _draw(tree, prefix, lines, first=False):
    items = list(tree.items())
    for i, (key, value) in enumerate(items):
        last = i == len(items) - 1
        connector = "> " if first and i == 0 else ("└─ " if last else "├─ ")
        if isinstance(value, dict):
            lines.append(f"{prefix}{connector}{key}")
            _draw(value, prefix + ("    " if last else "│   "), lines)
        else:
            lines.append(f"{prefix}{connector}{key}: shape={tuple(value.shape)}, dtype={value.dtype}")


def _compare(target, ref, path, target_name, ref_name, checked):
    """Walk ref: (errors, matches) for what target lacks or shapes differently; paths reported go to checked
    (so that the walk the other way does not report them twice)."""
    errors = matches = 0
    for key, value in ref.items():
        where = f"{path}/{key}"
        if where in checked:
            continue
        if key not in target:
            errors += 1
            checked.add(where)
            kind = "Object" if isinstance(value, dict) else "Weight"
            print(f"...{kind} {where} present in {ref_name}, missing from {target_name}")
            if isinstance(value, dict):
                print(f"    In {ref_name}, {where} contains the following keys: {list(value)}")
        elif isinstance(value, dict) or isinstance(target[key], dict):
            if not (isinstance(value, dict) and isinstance(target[key], dict)):
                errors += 1
                checked.add(where)
                print(f"...{where} is an object in one and a weight in the other")
                continue
            e, m = _compare(target[key], value, where, target_name, ref_name, checked)
            errors, matches = errors + e, matches + m
        elif tuple(target[key].shape) != tuple(value.shape):
            errors += 1
            checked.add(where)
            print(f"...Weight shape mismatch for {where}\n    In {ref_name}: shape={tuple(value.shape)}\n"
                  f"    In {target_name}: shape={tuple(target[key].shape)}")
        else:
            matches += 1
    return errors, matches
