"""``keras.utils.FeatureSpace``: one object that preprocesses and encodes a table of mixed features.

A FeatureSpace maps each column of a structured data set (a dict of columns) to a preprocessing layer and
an encoding, with Keras 3's API:

- floats as they are (``"float"``), rescaled (``x * scale + offset``), standardised with the adapted mean
  and variance (``(x - mean) / std``), or bucketed into bins of the adapted quantiles;
- integers and strings indexed by an adapted vocabulary (out-of-vocabulary values get the first indices)
  or hashed into a fixed number of bins;
- crosses of features (their preprocessed values hashed together, ``HashedCrossing``);
- each categorical result one-hot encoded (or left as integer ids), then everything concatenated into one
  float32 vector per sample (``output_mode="concat"``) or returned as a dict of encoded features
  (``output_mode="dict"``). Concatenation order: the features by sorted name, then the crosses by sorted
  name (``"a_X_b"``), as Keras.

The work is done by lamina's preprocessing layers (Normalization, Rescaling, Discretization, StringLookup,
IntegerLookup, Hashing, HashedCrossing, CategoryEncoding, Concatenate, Identity), so ``fs(data)``, the
functional graph of ``get_inputs()`` / ``get_encoded_features()`` and a model built on it compute the same
numbers.

Differences from Keras, which builds on tf.data: ``adapt`` takes a dict of arrays (the whole data), or any
iterable of batches that are dicts of arrays (lamina's datasets, generators, lists, and a tf.data.Dataset
when TensorFlow is installed): each batch is converted with ``np.asarray`` and the data read once; a batch
given as ``(x, y)`` is read as its x. ``fs(data)`` returns lamina Tensors and ignores keys that are not
features (Keras fails on them). ``float_discretized`` with
``bin_boundaries`` uses those boundaries (Keras 3.15 passes both ``num_bins`` and ``bin_boundaries`` to
Discretization, which refuses them). ``save("x.keras")`` writes a file that ``lamina.models.load_model``
reads back; files written by Keras's own FeatureSpace (its vocabularies live in the archive's assets) are not
read.
"""
import numbers
import os

import numpy as np

from .. import backend, ops
from ..layers import (CategoryEncoding, Concatenate, Discretization, HashedCrossing, Hashing, Identity, Input,
                      IntegerLookup, Normalization, Rescaling, StringLookup, TextVectorization)
from ..layers.layer import Layer
from ..registry import register
from ..saving import CustomObjectScope, deserialize_keras_object, save_model, serialize_keras_object
from ..tensor import Tensor

__all__ = ["FeatureSpace", "Feature", "Cross"]

PRESETS = ("float", "float_rescaled", "float_normalized", "float_discretized", "integer_categorical",
           "string_categorical", "integer_hashed", "string_hashed")
_KERAS_MODULE = "keras.src.layers.preprocessing.feature_space"


def _deserialize_preprocessor(config):
    """A preprocessing layer from its serialized dict (an adapted Discretization keeps its learnt boundaries:
    Discretization.from_config). Keras's internal identity layer maps to Identity."""
    if not isinstance(config, dict):
        raise ValueError(f"A feature's preprocessor must be a layer or its serialized dict. Received: {config!r}")
    config = dict(config)
    if config.get("class_name") == "TFDIdentity":
        config["class_name"], config["registered_name"] = "Identity", None
    layer = deserialize_keras_object(config)
    if not isinstance(layer, Layer):
        raise ValueError(f"A feature's preprocessor must be a layer. Received: {layer!r}")
    return layer


class Cross:
    """A cross of features: their preprocessed values hashed together into ``crossing_dim`` bins
    (``HashedCrossing``), encoded as one-hot vectors or left as integer bins (``output_mode="int"``).
    Made by ``FeatureSpace.cross``; its name (the key of its output) is the feature names joined by "_X_"."""

    _keras_module = _KERAS_MODULE

    def __init__(self, feature_names, crossing_dim, output_mode="one_hot"):
        if output_mode not in ("int", "one_hot"):
            raise ValueError("Invalid value for argument `output_mode`. Expected one of {'int', 'one_hot'}. "
                             f"Received: output_mode={output_mode!r}")
        self.feature_names = tuple(feature_names)
        self.crossing_dim = crossing_dim
        self.output_mode = output_mode

    @property
    def name(self):
        return "_X_".join(self.feature_names)

    def get_config(self):
        return {"feature_names": self.feature_names, "crossing_dim": self.crossing_dim,
                "output_mode": self.output_mode}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)

    def __repr__(self):
        return f"<Cross {self.name}, crossing_dim={self.crossing_dim}, output_mode={self.output_mode!r}>"


class Feature:
    """One feature of a FeatureSpace: the dtype of its raw input ("float32", "int32" or "string", the dtype
    of its ``get_inputs()`` Input), the layer that preprocesses it, and how the layer's result is encoded:
    ``"one_hot"`` (integer ids to one-hot vectors), ``"int"`` (the ids as they are) or ``"float"`` (the
    layer's float output as it is). Made by ``FeatureSpace.feature`` and the preset classmethods."""

    _keras_module = _KERAS_MODULE

    def __init__(self, dtype, preprocessor, output_mode):
        if output_mode not in ("int", "one_hot", "float"):
            raise ValueError("Invalid value for argument `output_mode`. Expected one of {'int', 'one_hot', "
                             f"'float'}}. Received: output_mode={output_mode!r}")
        if isinstance(preprocessor, dict):
            preprocessor = _deserialize_preprocessor(preprocessor)
        self.dtype = dtype
        self.preprocessor = preprocessor
        self.output_mode = output_mode

    def get_config(self):
        return {"dtype": self.dtype, "preprocessor": serialize_keras_object(self.preprocessor),
                "output_mode": self.output_mode}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(**config)

    def __repr__(self):
        return (f"<Feature dtype={self.dtype}, preprocessor={type(self.preprocessor).__name__} "
                f"'{getattr(self.preprocessor, 'name', '')}', output_mode={self.output_mode!r}>")


register(Cross)
register(Feature)


def _host(value):
    """A NumPy array of value (a lamina Tensor, a CuPy array, or anything np.asarray takes: lists, scalars,
    tf or torch tensors)."""
    if isinstance(value, Tensor):
        value = value.data
    if backend.is_cupy_array(value):
        return backend.to_numpy(value)
    return np.asarray(value)


def _column(value):
    """A column as adapt() feeds it to a layer: scalars and vectors become (n, 1); higher ranks stay."""
    a = _host(value)
    return a.reshape(-1, 1) if a.ndim < 2 else a


def _is_integer_dtype(dtype):
    return np.dtype(dtype).kind in "iu"


class FeatureSpace(Layer):
    """Preprocesses and encodes structured data (a dict of feature columns), as ``keras.utils.FeatureSpace``.

    Args:
        features: dict mapping each feature name to a preset name (one of ``"float"``, ``"float_rescaled"``,
            ``"float_normalized"``, ``"float_discretized"``, ``"integer_categorical"``,
            ``"string_categorical"``, ``"integer_hashed"``, ``"string_hashed"``, with default arguments) or
            to a feature made by the classmethods below.
        output_mode: ``"concat"`` (one float32 vector per sample) or ``"dict"`` (a dict of encoded
            features, one key per feature and per cross).
        crosses: list of tuples of feature names (hashed into ``crossing_dim`` bins and one-hot encoded), or
            of ``FeatureSpace.cross(...)``.
        crossing_dim: bins of the crosses given as tuples (32).
        hashing_dim: bins of the ``"integer_hashed"`` and ``"string_hashed"`` presets (32).
        num_discretization_bins: bins of the ``"float_discretized"`` preset (32).

    Features (classmethods): ``float(name=None)``, ``float_rescaled(scale=1.0, offset=0.0, name=None)``,
    ``float_normalized(name=None)``, ``float_discretized(num_bins, bin_boundaries=None, output_mode="one_hot",
    name=None)``, ``integer_categorical(max_tokens=None, num_oov_indices=1, output_mode="one_hot", name=None)``,
    ``string_categorical(...)`` (same arguments), ``integer_hashed(num_bins, output_mode="one_hot", name=None)``,
    ``string_hashed(...)``, ``feature(dtype, preprocessor, output_mode)`` (any preprocessing layer),
    ``cross(feature_names, crossing_dim, output_mode="one_hot")``.

    Use: ``fs.adapt(data)`` (a dict of columns, or an iterable of dict batches), then ``fs(data)`` on a
    dict of columns (a batch, or one sample of scalars, which gives unbatched outputs), or build a model on
    ``fs.get_inputs()`` and ``fs.get_encoded_features()``. The layers are in ``fs.preprocessors[name]`` and
    ``fs.crossers[cross_name]``. ``fs.save("x.keras")`` and ``lamina.models.load_model`` save and restore it.
    """

    _file_root = True   # saved as the root object of a .keras file, as Keras's FeatureSpace (models/serialization.py)

    # ------------------------------------------------------------------------- feature constructors
    @classmethod
    def cross(cls, feature_names, crossing_dim, output_mode="one_hot"):
        return Cross(feature_names, crossing_dim, output_mode=output_mode)

    @classmethod
    def feature(cls, dtype, preprocessor, output_mode):
        return Feature(dtype, preprocessor, output_mode)

    @classmethod
    def float(cls, name=None):
        name = name or backend.unique_name("float")
        return Feature("float32", Identity(name=f"{name}_preprocessor"), "float")

    @classmethod
    def float_rescaled(cls, scale=1.0, offset=0.0, name=None):
        name = name or backend.unique_name("float_rescaled")
        return Feature("float32", Rescaling(scale=scale, offset=offset, name=f"{name}_preprocessor"), "float")

    @classmethod
    def float_normalized(cls, name=None):
        name = name or backend.unique_name("float_normalized")
        return Feature("float32", Normalization(axis=-1, name=f"{name}_preprocessor"), "float")

    @classmethod
    def float_discretized(cls, num_bins, bin_boundaries=None, output_mode="one_hot", name=None):
        name = name or backend.unique_name("float_discretized")
        if bin_boundaries is not None:   # fixed bins (Discretization takes boundaries or num_bins, not both)
            layer = Discretization(bin_boundaries=bin_boundaries, name=f"{name}_preprocessor")
        else:
            layer = Discretization(num_bins=num_bins, name=f"{name}_preprocessor")
        return Feature("float32", layer, output_mode)

    @classmethod
    def integer_categorical(cls, max_tokens=None, num_oov_indices=1, output_mode="one_hot", name=None):
        name = name or backend.unique_name("integer_categorical")
        layer = IntegerLookup(max_tokens=max_tokens, num_oov_indices=num_oov_indices, name=f"{name}_preprocessor")
        return Feature("int32", layer, output_mode)

    @classmethod
    def string_categorical(cls, max_tokens=None, num_oov_indices=1, output_mode="one_hot", name=None):
        name = name or backend.unique_name("string_categorical")
        layer = StringLookup(max_tokens=max_tokens, num_oov_indices=num_oov_indices, name=f"{name}_preprocessor")
        return Feature("string", layer, output_mode)

    @classmethod
    def string_hashed(cls, num_bins, output_mode="one_hot", name=None):
        name = name or backend.unique_name("string_hashed")
        return Feature("string", Hashing(num_bins=num_bins, name=f"{name}_preprocessor"), output_mode)

    @classmethod
    def integer_hashed(cls, num_bins, output_mode="one_hot", name=None):
        name = name or backend.unique_name("integer_hashed")
        return Feature("int32", Hashing(num_bins=num_bins, name=f"{name}_preprocessor"), output_mode)

    # ------------------------------------------------------------------------------------ construction
    def __init__(self, features, output_mode="concat", crosses=None, crossing_dim=32, hashing_dim=32,
                 num_discretization_bins=32, name=None):
        super().__init__(name=name)
        if not features:
            raise ValueError("The `features` argument cannot be None or empty.")
        if not isinstance(features, dict):
            raise ValueError("The `features` argument must be a dict mapping feature names to feature types. "
                             f"Received: features of type {type(features).__name__}")
        if output_mode not in ("dict", "concat"):
            raise ValueError("Invalid value for argument `output_mode`. Expected one of {'dict', 'concat'}. "
                             f"Received: output_mode={output_mode!r}")
        self.output_mode = output_mode
        self.crossing_dim = crossing_dim
        self.hashing_dim = hashing_dim
        self.num_discretization_bins = num_discretization_bins
        self.features = {key: self._standardize_feature(key, value) for key, value in features.items()}
        self.crosses = [self._standardize_cross(c) for c in (crosses or [])]
        self.crosses_by_name = {c.name: c for c in self.crosses}
        self.preprocessors = {key: f.preprocessor for key, f in self.features.items()}
        self.crossers = {c.name: HashedCrossing(c.crossing_dim, name=c.name) for c in self.crosses}
        self.inputs = {key: Input(shape=(1,), dtype=f.dtype, name=key) for key, f in self.features.items()}
        # the preprocessors are the sub-layers whose weights (Normalization's statistics) are this object's,
        # in sorted name order, the order a saved file lists them in
        for key in sorted(self.features):
            layer = self.preprocessors[key]
            if isinstance(layer, Layer) and not any(layer is seen for seen in self._layers):
                self._layers.append(layer)
        self.one_hot_encoders = {}
        object.__setattr__(self, "concat", None)   # not a tracked sub-layer: it has no state to save
        self.encoded_features = None
        self._is_adapted = False
        self._sublayers_built = False
        self._adapted_shapes = {}

    def _standardize_feature(self, key, feature):
        if isinstance(feature, Feature):
            return feature
        if isinstance(feature, dict):
            feature = deserialize_keras_object(feature)
            if not isinstance(feature, Feature):
                raise ValueError(f"Feature '{key}': a serialized feature must describe a Feature. "
                                 f"Received: {feature!r}")
            return feature
        if isinstance(feature, str) and feature in PRESETS:
            if feature == "float_discretized":
                return self.float_discretized(num_bins=self.num_discretization_bins, name=key)
            if feature in ("integer_hashed", "string_hashed"):
                return getattr(self, feature)(self.hashing_dim, name=key)
            return getattr(self, feature)(name=key)
        raise ValueError(f"Invalid feature type: {feature!r} (feature '{key}'). Expected one of {list(PRESETS)}, "
                         "or a feature made by FeatureSpace.float(), .float_rescaled(), .float_normalized(), "
                         ".float_discretized(), .integer_categorical(), .string_categorical(), "
                         ".integer_hashed(), .string_hashed() or .feature().")

    def _standardize_cross(self, cross):
        if isinstance(cross, dict):
            cross = deserialize_keras_object(cross)
        if not isinstance(cross, Cross):
            if isinstance(cross, str) or not hasattr(cross, "__iter__"):
                raise ValueError("Each entry of `crosses` must be a tuple of feature names or a "
                                 f"FeatureSpace.cross(...). Received: {cross!r}")
            if not self.crossing_dim:
                raise ValueError("When specifying `crosses`, the argument `crossing_dim` (dimensionality of the "
                                 "crossing space) should be specified as well.")
            cross = Cross(cross, crossing_dim=self.crossing_dim)
        unknown = [key for key in cross.feature_names if key not in self.features]
        if unknown:
            raise ValueError("All features referenced in the `crosses` argument should be present in the "
                             f"`features` dict. Received unknown features: {unknown} in cross "
                             f"{cross.feature_names}; features: {sorted(self.features)}")
        return cross

    # ----------------------------------------------------------------------------------------- adapt
    def _list_adaptable_preprocessors(self):
        """The features whose layer learns from data: not a Normalization given mean and variance, not a
        TextVectorization given a vocabulary, not a Discretization given its boundaries (Keras's rules, the
        last because Discretization cannot adapt without num_bins)."""
        names = []
        for key in self.features:
            layer = self.preprocessors[key]
            if isinstance(layer, Normalization) and layer.input_mean is not None:
                continue
            if isinstance(layer, TextVectorization) and getattr(layer, "_has_input_vocabulary", False):
                continue
            if isinstance(layer, Discretization) and layer.num_bins is None:
                continue
            if hasattr(layer, "adapt"):
                names.append(key)
        return names

    def _adapt_columns(self, dataset, names):
        """{name: array} of the given features over the whole data set, read once."""
        if isinstance(dataset, dict):
            batches = [dataset]
        elif (isinstance(dataset, (str, bytes, np.ndarray, Tensor, numbers.Number)) or backend.is_cupy_array(dataset)
              or not hasattr(dataset, "__iter__")):
            raise ValueError("`adapt()` can only be called on a dict of arrays/lists, or on a data set (any "
                             "iterable) whose batches are dicts of arrays, such as a lamina PyDataset or a "
                             f"tf.data.Dataset. Received instead: {type(dataset).__name__}")
        else:
            batches = dataset
        if not names:   # nothing learns from data: the data set is not read
            return {}
        chunks = {key: [] for key in names}
        for i, batch in enumerate(batches):
            if isinstance(batch, tuple) and batch and isinstance(batch[0], dict):
                batch = batch[0]   # (x, y) or (x, y, sample_weight): the features are x
            if not isinstance(batch, dict):
                raise ValueError("`adapt()` expects every batch of the data set to be a dict mapping feature names "
                                 f"to arrays. Received a batch (number {i}) of type {type(batch).__name__}")
            for key in names:
                if key not in batch:
                    raise ValueError(f"`adapt()`: feature '{key}' is missing from the data. Received keys: "
                                     f"{sorted(batch)}")
                chunks[key].append(_column(batch[key]))
        columns = {}
        for key, parts in chunks.items():
            if not parts:
                raise ValueError("`adapt()` received an empty data set.")
            if len({p.shape[1:] for p in parts}) > 1:
                raise ValueError(f"`adapt()`: the batches of feature '{key}' have different shapes "
                                 f"{sorted({p.shape for p in parts})}.")
            columns[key] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        return columns

    def adapt(self, dataset):
        """Fit each feature's preprocessing layer (Normalization's mean and variance, Discretization's
        quantile boundaries, the lookups' vocabularies) on its column of ``dataset``: a dict of arrays (the
        whole data), or an iterable of batches that are dicts of arrays (lamina datasets, generators,
        tf.data.Dataset). Scalars and vectors are columns of shape (n, 1), as the functional inputs."""
        names = self._list_adaptable_preprocessors()
        columns = self._adapt_columns(dataset, names)
        for key in names:
            self.preprocessors[key].adapt(columns[key])
            self._adapted_shapes[key] = [None] + [int(d) for d in columns[key].shape[1:]]
        self._is_adapted = True
        self._build_encoders()
        self.built = True
        self._sublayers_built = True

    # ------------------------------------------------------------------------- functional building
    def _check_if_adapted(self):
        if not self._is_adapted:
            if self._list_adaptable_preprocessors():
                raise ValueError("You need to call `.adapt(dataset)` on the FeatureSpace before you can start "
                                 "using it.")
            self._is_adapted = True

    def _check_if_built(self):
        if not self._sublayers_built:
            self._check_if_adapted()
            self._build_encoders()
            self._sublayers_built = True
            self.built = True

    def get_inputs(self):
        """The dict of symbolic inputs (``Input(shape=(1,), dtype=feature dtype, name=feature name)``)."""
        self._check_if_built()
        return self.inputs

    def get_encoded_features(self):
        """The encoded features of ``get_inputs()``: one symbolic (batch, width) tensor in concat mode, a
        dict of them in dict mode; ``Model(fs.get_inputs(), layer(fs.get_encoded_features()))`` then takes
        raw feature columns."""
        self._check_if_adapted()
        if self.encoded_features is None:
            self._build_encoders()
        return self.encoded_features

    def _output_names(self):
        return sorted(self.features) + sorted(self.crosses_by_name)

    def _cardinality(self, key, layer):
        """The number of ids a categorical preprocessor or crosser produces, which one-hot vectors span."""
        if isinstance(layer, (IntegerLookup, StringLookup)):
            return layer.vocabulary_size()
        if isinstance(layer, CategoryEncoding):
            return layer.num_tokens
        if isinstance(layer, Discretization):
            return len(layer.bin_boundaries) + 1 if layer.bin_boundaries is not None else layer.num_bins
        if isinstance(layer, (Hashing, HashedCrossing)):
            return layer.num_bins
        raise ValueError(f"Feature '{key}' has `output_mode='one_hot'`. However it isn't a standard feature and "
                         "the dimensionality of its output space is not known, thus it cannot be one-hot encoded. "
                         "Try using `output_mode='int'`.")

    def _build_encoders(self):
        """The symbolic graph of ``self.inputs``, making the one-hot encoders (sized from the adapted layers) and
        the concatenation on the way; it checks the dtypes: one-hot features must give integer ids, and
        concatenated ones floats. Eager calls then reuse the same layers."""
        self.one_hot_encoders = {}
        object.__setattr__(self, "concat", Concatenate(axis=-1) if self.output_mode == "concat" else None)
        self.encoded_features = self._encode(self.inputs, build=True)

    def _encode(self, inputs, build=False):
        """Preprocess, cross and merge inputs: a dict of symbolic inputs or of (batch, 1) arrays."""
        pre = {key: self.preprocessors[key](inputs[key]) for key in self.features}
        crossed = {c.name: self.crossers[c.name]([pre[k] for k in c.feature_names]) for c in self.crosses}
        outputs = {}
        for key in self._output_names():
            value = pre[key] if key in pre else crossed[key]
            spec = self.features[key] if key in pre else self.crosses_by_name[key]
            if spec.output_mode == "one_hot":
                if not _is_integer_dtype(value.dtype):
                    raise ValueError(f"Feature '{key}' has `output_mode='one_hot'`. Thus its preprocessor should "
                                     f"return an integer dtype. Instead it returns a {np.dtype(value.dtype)} dtype.")
                if build:
                    layer = self.preprocessors[key] if key in pre else self.crossers[key]
                    self.one_hot_encoders[key] = CategoryEncoding(num_tokens=self._cardinality(key, layer),
                                                                  output_mode="multi_hot")
                value = self.one_hot_encoders[key](value)
            if self.output_mode == "concat" and np.dtype(value.dtype).kind != "f":
                raise ValueError(f"Cannot concatenate features because feature '{key}' has not been encoded (it "
                                 f"has dtype {np.dtype(value.dtype)}). Consider using `output_mode='dict'`.")
            outputs[key] = value
        if self.output_mode == "concat":
            return self.concat([outputs[key] for key in self._output_names()])
        return outputs

    # ------------------------------------------------------------------------------------------ call
    def _convert(self, key, value):
        """One raw column as a NumPy array: numbers in the feature's declared dtype family (float features
        in float32, as their Input; float values of integer features truncated to int64)."""
        a = _host(value)
        dtype = str(self.features[key].dtype)
        if dtype.startswith("float") and a.dtype.kind in "biuf":
            a = a.astype(dtype)
        elif dtype.startswith("int") and a.dtype.kind in "bf":
            a = a.astype(np.int64)
        return a

    def __call__(self, data):
        """Encode a dict of feature columns (arrays, lists, tensors; a batch of shape (n,) or (n, 1), or one
        sample of scalars): the (n, width) float32 Tensor in concat mode, a dict of Tensors in dict mode;
        one sample gives (width,) (and (k,) per feature). Keys that are not features (a label column) are
        ignored."""
        self._check_if_built()
        if not isinstance(data, dict):
            raise ValueError(f"A FeatureSpace can only be called with a dict. Received: data={data!r} "
                             f"(of type {type(data).__name__})")
        missing = [key for key in self.features if key not in data]
        if missing:
            raise ValueError(f"FeatureSpace '{self.name}' was called without the features {missing}. Received "
                             f"keys: {sorted(data)}")
        arrays, single = {}, False
        for key in self.features:
            a = self._convert(key, data[key])
            if a.ndim == 0:
                a, single = a.reshape(1, 1), True
            elif a.ndim == 1:
                a = a.reshape(-1, 1)
            arrays[key] = a
        out = self._encode(arrays)
        if single:
            if self.output_mode == "concat":
                if out.shape[0] != 1:
                    raise ValueError(f"Expected rebatched data to have batch size 1. Received: shape={out.shape}")
                out = ops.squeeze(out, axis=0)
            else:
                out = {k: ops.squeeze(v, axis=0) if v.ndim == 2 and v.shape[0] == 1 else v for k, v in out.items()}
        return out

    # ----------------------------------------------------------------------------------------- config
    def get_config(self):
        return {"name": self.name, "features": serialize_keras_object(self.features),
                "output_mode": self.output_mode, "crosses": serialize_keras_object(self.crosses),
                "crossing_dim": self.crossing_dim, "hashing_dim": self.hashing_dim,
                "num_discretization_bins": self.num_discretization_bins}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        """A FeatureSpace from ``get_config()``: the lookups' vocabularies and Discretization's boundaries
        come back with it, Normalization's statistics (weights) do not, so it is not adapted yet (as in
        Keras); ``build_from_config`` and ``set_weights`` restore the rest, as loading a file does."""
        with CustomObjectScope(custom_objects or {}):
            return cls(**config)

    def get_build_config(self):
        """{feature name: {"input_shape": shape}}: the shape each preprocessor was adapted on ((None, 1) for
        the usual columns), which ``build_from_config`` builds it with (creating Normalization's weights)."""
        return {key: {"input_shape": list(self._adapted_shapes.get(key, [None, 1]))} for key in self.features}

    def build_from_config(self, config):
        """Build each preprocessor for its recorded input shape and count the FeatureSpace as adapted (its
        learnt state then comes from the config and the weights, as when loading a file)."""
        for key, build in (config or {}).items():
            if key not in self.features:
                raise ValueError(f"build_config names feature '{key}', which this FeatureSpace does not have "
                                 f"(features: {sorted(self.features)}).")
            shape = (build or {}).get("input_shape") or [None, 1]
            if not isinstance(shape, (list, tuple)) or not all(d is None or (isinstance(d, int) and d >= 0)
                                                               for d in shape):
                raise ValueError(f"build_config of feature '{key}': invalid input_shape {shape!r}.")
            layer = self.preprocessors[key]
            if not layer.built:
                layer.build(tuple(shape))
                layer.built = True
            self._adapted_shapes[key] = list(shape)
        self._is_adapted = True
        self.built = True

    def save(self, filepath):
        """Write this FeatureSpace to a ``.keras`` file; ``lamina.models.load_model`` reads it back."""
        filepath = os.fspath(filepath)
        if not filepath.endswith(".keras"):
            raise ValueError("Invalid `filepath` argument: expected a `.keras` extension. "
                             f"Received: filepath={filepath}")
        self._check_if_built()
        return save_model(self, filepath)
