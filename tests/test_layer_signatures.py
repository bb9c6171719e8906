"""Every layer class keras.layers exports takes its arguments as Keras 3.15's does (the names, which are
required, the order of the leading positional ones, the defaults), and InputSpec behaves as Keras's."""
import inspect
import json
import os
import pathlib

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")

import lamina  # noqa: E402
from lamina import layers as L  # noqa: E402

# lamina is more permissive on purpose: a default where Keras requires the argument (no Keras program notices)
_DEFAULTED = {"pool_size": {"AveragePooling1D", "AveragePooling2D", "AveragePooling3D", "AvgPool1D", "AvgPool2D",
                            "AvgPool3D"}}


def _params(cls):
    sig = inspect.signature(cls.__init__)
    named = {n: p for n, p in sig.parameters.items()
             if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    return named, any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values())


def _differences(name):
    k_named, _ = _params(getattr(keras.layers, name))
    l_named, l_kwargs = _params(getattr(L, name))
    out = []
    for n, p in k_named.items():
        if n not in l_named:
            if not l_kwargs:
                out.append(f"{n} missing")
            continue
        q = l_named[n]
        if (p.default is p.empty) != (q.default is q.empty):
            if name not in _DEFAULTED.get(n, ()):
                out.append(f"{n}: required in Keras {p.default is p.empty}, lamina default {q.default!r}")
        elif p.default is not p.empty and isinstance(p.default, (int, float, str, bool, tuple, type(None))):
            if p.default != q.default:
                out.append(f"{n}: default {q.default!r}, Keras's {p.default!r}")
    # the leading positional arguments, in Keras's order (Dense(64, 'relu'), Conv2D(32, 3, 2, 'same'))
    k_pos = [n for n, p in k_named.items() if p.kind == p.POSITIONAL_OR_KEYWORD][:4]
    l_pos = [n for n, p in l_named.items() if p.kind == p.POSITIONAL_OR_KEYWORD][:len(k_pos)]
    if k_pos != l_pos:
        out.append(f"positional order {l_pos}, Keras's {k_pos}")
    return out


# The layer classes of both: Keras's names from its catalog (tests/data/keras_catalog_names.json, written from the
# installed Keras by tools/keras_catalog.py), so that collecting the module does not import Keras (conftest.py
# runs the modules that use it on one xdist worker); the first test checks them against the installed Keras.
_CATALOG = json.loads((pathlib.Path(__file__).parent / "data" / "keras_catalog_names.json").read_text())
_LAYER_NAMES = sorted(n for n in _CATALOG["layers"] if hasattr(L, n) and inspect.isclass(getattr(L, n)))


def test_most_layer_classes_are_compared():
    assert len(_LAYER_NAMES) > 150
    assert _LAYER_NAMES == sorted(n for n in dir(keras.layers) if inspect.isclass(getattr(keras.layers, n))
                                  and hasattr(L, n) and inspect.isclass(getattr(L, n)))


@pytest.mark.parametrize("name", _LAYER_NAMES)
def test_layer_arguments_match_keras(name):
    assert _differences(name) == []


def test_spatial_dropout_takes_name_positionally():
    assert L.SpatialDropout1D(0.5, 1, "drop1").name == "drop1"
    assert L.SpatialDropout2D(0.5, None, 1, "drop2").name == "drop2"
    assert L.SpatialDropout3D(0.5, None, 1, "drop3").name == "drop3"


@pytest.mark.parametrize("kw", [dict(ndim=3), dict(shape=(None, 28, 28, 1)), dict(min_ndim=2, axes={-1: 8}),
                                dict(dtype="float32", max_ndim=4), dict(ndim=2, axes={"1": 4}, optional=True), {}])
def test_input_spec_config_and_repr_match_keras(kw):
    ours, theirs = lamina.InputSpec(**kw), keras.InputSpec(**kw)
    assert repr(ours) == repr(theirs)
    config = ours.get_config()
    want = theirs.get_config()
    want["shape"] = None if want["shape"] is None else tuple(want["shape"])
    assert config == want
    again = lamina.InputSpec.from_config(config)
    assert again.get_config() == config


def test_input_spec_refuses_bad_axes_as_keras():
    for kw, error in ((dict(axes={"x": 3}), TypeError), (dict(ndim=2, axes={2: 3}), ValueError),
                      (dict(max_ndim=3, axes={3: 1}), ValueError)):
        with pytest.raises(error):
            keras.InputSpec(**kw)
        with pytest.raises(error):
            lamina.InputSpec(**kw)


def test_optional_input_spec_accepts_none_and_still_checks_a_given_input():
    class Pair(L.Layer):
        def __init__(self):
            super().__init__()
            self.input_spec = [lamina.InputSpec(ndim=2), lamina.InputSpec(ndim=2, optional=True)]

        def call(self, inputs):
            x, extra = inputs
            return x if extra is None else x + extra

    layer = Pair()
    x = np.ones((2, 3), "float32")
    np.testing.assert_array_equal(layer([x, None]).numpy(), x)
    np.testing.assert_array_equal(layer([x, x]).numpy(), 2 * x)
    with pytest.raises(ValueError, match="expected ndim=2"):
        layer([x, np.ones((2, 3, 1), "float32")])


_CONFIG_CASES = [
    ("Conv1D", dict(filters=4, kernel_size=3, strides=2)), ("Conv2D", dict(filters=4, kernel_size=3, strides=2)),
    ("Conv3D", dict(filters=4, kernel_size=3)), ("Conv2DTranspose", dict(filters=4, kernel_size=3, strides=2)),
    ("Conv1DTranspose", dict(filters=4, kernel_size=3)), ("SeparableConv2D", dict(filters=4, kernel_size=3)),
    ("DepthwiseConv2D", dict(kernel_size=3)), ("DepthwiseConv1D", dict(kernel_size=3)),
    ("MaxPooling2D", dict(pool_size=2)), ("AveragePooling2D", dict(pool_size=2, strides=1)),
    ("MaxPooling1D", dict(pool_size=2)), ("AveragePooling3D", dict(pool_size=2)),
    ("ZeroPadding2D", dict(padding=1)), ("ZeroPadding1D", dict(padding=1)), ("Cropping2D", dict(cropping=1)),
    ("Cropping3D", dict(cropping=1)), ("UpSampling2D", dict(size=2)), ("UpSampling1D", dict(size=2)),
    ("Reshape", dict(target_shape=[5, 6])), ("Permute", dict(dims=[2, 1])), ("Dense", dict(units=3)),
]


@pytest.mark.parametrize("name,kwargs", _CONFIG_CASES, ids=[c[0] for c in _CONFIG_CASES])
def test_get_config_reports_standardised_arguments_as_keras(name, kwargs):
    """get_config gives kernel_size=3 as (3, 3), a list as a tuple, the default data format resolved and no
    activation as 'linear', as Keras does (code reads them: `config["kernel_size"] == (5, 5)` in keras.io's
    ConvMixer); and such a config builds the same layer again."""
    theirs = getattr(keras.layers, name)(**kwargs).get_config()
    layer = getattr(L, name)(**kwargs)
    ours = layer.get_config()
    keys = [k for k in ("kernel_size", "strides", "dilation_rate", "pool_size", "size", "cropping", "padding",
                        "target_shape", "dims", "data_format", "activation") if k in theirs]
    assert keys
    for k in keys:
        assert ours[k] == theirs[k] and type(ours[k]) is type(theirs[k]), (k, ours[k], theirs[k])
    again = getattr(L, name).from_config(ours).get_config()
    assert {k: again[k] for k in keys} == {k: ours[k] for k in keys}


# ---------------------------------------------------------------------------------- get_config as Keras writes it
# Each case builds the same layer in Keras and in lamina from its module (keras.layers / keras.initializers ...).
_KERAS_CONFIG_CASES = {
    "Dense": lambda k: k.layers.Dense(3),
    "Dense_regularized": lambda k: k.layers.Dense(3, kernel_regularizer="l2", bias_constraint="non_neg",
                                                  activity_regularizer="l1", kernel_initializer="he_normal"),
    "Dense_objects": lambda k: k.layers.Dense(3, kernel_initializer=k.initializers.RandomNormal(stddev=0.1, seed=3),
                                              bias_initializer=k.initializers.Constant(0.5),
                                              kernel_regularizer=k.regularizers.L1L2(l1=0.1, l2=0.2),
                                              kernel_constraint=k.constraints.MaxNorm(3.0)),
    "Dense_lora": lambda k: k.layers.Dense(3, lora_rank=2),
    "Dense_lora_alpha": lambda k: k.layers.Dense(3, lora_rank=2, lora_alpha=8.0),
    "Dense_mixed": lambda k: k.layers.Dense(3, dtype="mixed_float16"),
    "Embedding": lambda k: k.layers.Embedding(10, 3),
    "Embedding_mask_lora": lambda k: k.layers.Embedding(10, 3, mask_zero=True, lora_rank=2),
    "EinsumDense": lambda k: k.layers.EinsumDense("ab,bc->ac", 3),
    "EinsumDense_bias": lambda k: k.layers.EinsumDense("abc,cd->abd", (5, 4), bias_axes="d", lora_rank=2),
    "Conv1D": lambda k: k.layers.Conv1D(2, 3),
    "Conv2D": lambda k: k.layers.Conv2D(2, 3, kernel_initializer="lecun_uniform", bias_regularizer="l2"),
    "Conv2DTranspose": lambda k: k.layers.Conv2DTranspose(2, 3),
    "Conv3D": lambda k: k.layers.Conv3D(2, 3),
    "SeparableConv2D": lambda k: k.layers.SeparableConv2D(2, 3, pointwise_constraint="unit_norm"),
    "DepthwiseConv2D": lambda k: k.layers.DepthwiseConv2D(3),
    "MaxPooling2D": lambda k: k.layers.MaxPooling2D(),
    "AveragePooling1D": lambda k: k.layers.AveragePooling1D(2),
    "GlobalAveragePooling2D": lambda k: k.layers.GlobalAveragePooling2D(),
    "GlobalMaxPooling1D": lambda k: k.layers.GlobalMaxPooling1D(),
    "BatchNormalization": lambda k: k.layers.BatchNormalization(gamma_constraint="non_neg"),
    "LayerNormalization": lambda k: k.layers.LayerNormalization(),
    "GroupNormalization": lambda k: k.layers.GroupNormalization(),
    "UnitNormalization": lambda k: k.layers.UnitNormalization(),
    "Dropout": lambda k: k.layers.Dropout(0.5),
    "GaussianNoise": lambda k: k.layers.GaussianNoise(0.1),
    "AlphaDropout": lambda k: k.layers.AlphaDropout(0.1),
    "ActivityRegularization": lambda k: k.layers.ActivityRegularization(),
    "SimpleRNN": lambda k: k.layers.SimpleRNN(3),
    "LSTM": lambda k: k.layers.LSTM(3, recurrent_regularizer="l2", return_sequences=True),
    "GRU": lambda k: k.layers.GRU(3),
    "ConvLSTM2D": lambda k: k.layers.ConvLSTM2D(2, 3),
    "MultiHeadAttention": lambda k: k.layers.MultiHeadAttention(2, 4),
    "MultiHeadAttention_value_dim": lambda k: k.layers.MultiHeadAttention(2, 4, value_dim=6, dropout=0.1),
    "Attention": lambda k: k.layers.Attention(),
    "Flatten": lambda k: k.layers.Flatten(),
    "Reshape": lambda k: k.layers.Reshape((2, 3)),
    "Permute": lambda k: k.layers.Permute((2, 1)),
    "RepeatVector": lambda k: k.layers.RepeatVector(3),
    "UpSampling2D": lambda k: k.layers.UpSampling2D(),
    "ZeroPadding2D": lambda k: k.layers.ZeroPadding2D(),
    "Cropping2D": lambda k: k.layers.Cropping2D(),
    "Concatenate": lambda k: k.layers.Concatenate(),
    "Add": lambda k: k.layers.Add(),
    "Dot": lambda k: k.layers.Dot(1),
    "Activation": lambda k: k.layers.Activation("relu"),
    "ReLU": lambda k: k.layers.ReLU(),
    "LeakyReLU": lambda k: k.layers.LeakyReLU(),
    "PReLU": lambda k: k.layers.PReLU(alpha_regularizer="l2"),
    "ELU": lambda k: k.layers.ELU(),
    "Softmax": lambda k: k.layers.Softmax(),
    "Masking": lambda k: k.layers.Masking(),
    "Identity": lambda k: k.layers.Identity(),
    "Rescaling": lambda k: k.layers.Rescaling(1 / 255.0),
    "Normalization": lambda k: k.layers.Normalization(),
    "Normalization_axes": lambda k: k.layers.Normalization(axis=(1, 2)),
    "Resizing": lambda k: k.layers.Resizing(4, 4),
    "CenterCrop": lambda k: k.layers.CenterCrop(4, 4),
    "RandomFlip": lambda k: k.layers.RandomFlip(seed=1),
    "RandomRotation": lambda k: k.layers.RandomRotation(0.1, seed=1),
    "RandomZoom": lambda k: k.layers.RandomZoom(0.1, seed=1),
    "RandomContrast": lambda k: k.layers.RandomContrast(0.1, seed=1),
    "RandomCrop": lambda k: k.layers.RandomCrop(4, 4, seed=1),
    "CategoryEncoding": lambda k: k.layers.CategoryEncoding(4),
    "InputLayer": lambda k: k.layers.InputLayer(shape=(3,)),
    "TimeDistributed": lambda k: k.layers.TimeDistributed(k.layers.Dense(2)),
    "Bidirectional": lambda k: k.layers.Bidirectional(k.layers.LSTM(3)),
}

# Keys lamina writes and Keras does not, each for a reason; every other key and value is Keras's.
_OURS_ONLY = {
    # Keras's CategoryEncoding takes sparse but leaves it out of its config; lamina's keeps it (its from_config
    # and Keras's both take it)
    "CategoryEncoding": {"sparse"},
}


def _same(ours, theirs, where):
    """ours == theirs, recursively, a tuple where Keras has a tuple; differences listed as 'path: ours != theirs'.
    Names are not compared (each library numbers its layers: dense, dense_1, ...). A nested layer (Bidirectional's,
    TimeDistributed's) is {'class_name', 'config'} in lamina's get_config: lamina's .keras writer adds Keras's
    envelope around it (module, registered_name, build_config), so those three keys are not required there."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        if theirs.get("module") == "keras.layers" and "module" not in ours:
            theirs = {k: v for k, v in theirs.items() if k not in ("module", "registered_name", "build_config")}
        out = [f"{where}.{k}: missing" for k in theirs if k not in ours]
        out += [f"{where}.{k}: extra" for k in ours if k not in theirs]
        for k in theirs:
            if k in ours and k != "name":
                out += _same(ours[k], theirs[k], f"{where}.{k}")
        return out
    if isinstance(theirs, (list, tuple)) and type(ours) is type(theirs) and len(ours) == len(theirs):
        return [d for i, (a, b) in enumerate(zip(ours, theirs)) for d in _same(a, b, f"{where}[{i}]")]
    if isinstance(theirs, float) and isinstance(ours, float) and np.isclose(ours, theirs):
        return []
    return [] if type(ours) is type(theirs) and ours == theirs else [f"{where}: {ours!r} != {theirs!r}"]


@pytest.mark.parametrize("case", sorted(_KERAS_CONFIG_CASES))
def test_get_config_is_keras_and_builds_the_same_layer_again(case):
    """get_config gives Keras 3.15's keys and values: initializers, regularizers and constraints as their
    serialized dicts, the dtype policy serialized, Keras's keys (value_dim resolved, Normalization's axis a
    tuple, zero_output_for_mask, renorm..., LoRA keys only when on); Keras's config and lamina's build an equal
    layer in lamina."""
    make = _KERAS_CONFIG_CASES[case]
    theirs, layer = make(keras).get_config(), make(lamina)
    ours = layer.get_config()
    name = case.split("_")[0]
    extra = _OURS_ONLY.get(name, set())
    assert extra <= set(ours)
    assert _same({k: v for k, v in ours.items() if k not in extra}, theirs, name) == []
    cls = type(layer)
    assert cls.from_config(ours).get_config() == ours
    again = cls.from_config(theirs).get_config()
    assert _same({k: v for k, v in again.items() if k not in extra}, theirs, name) == []
    assert _same(again, ours, name) == []


def test_a_config_of_laminas_old_string_form_builds_the_same_layer():
    """Files and code written before get_config gave Keras's form hold names ('glorot_uniform', 'l2', 'non_neg',
    'float32'): from_config still reads them, and the layer is the one the new form describes."""
    old = {"name": "d", "trainable": True, "dtype": "mixed_float16", "units": 3, "activation": "relu",
           "use_bias": True, "kernel_initializer": "glorot_uniform", "bias_initializer": "zeros",
           "kernel_regularizer": "l2", "bias_regularizer": None, "activity_regularizer": None,
           "kernel_constraint": None, "bias_constraint": "non_neg", "lora_rank": None, "lora_alpha": None}
    layer = L.Dense.from_config(old)
    assert layer.compute_dtype == "float16" and layer.variable_dtype == "float32"
    new = L.Dense(3, activation="relu", kernel_regularizer="l2", bias_constraint="non_neg", dtype="mixed_float16",
                  name="d").get_config()
    assert layer.get_config() == new
    assert new["kernel_regularizer"] == {"module": "keras.regularizers", "class_name": "L2", "config": {"l2": 0.01},
                                         "registered_name": None}
    lstm = L.LSTM.from_config({"units": 2, "dtype": "float32", "recurrent_initializer": "orthogonal",
                               "use_cudnn": "auto", "seed": None})
    assert lstm.get_config()["recurrent_initializer"]["class_name"] == "Orthogonal"
    assert "use_cudnn" not in lstm.get_config()


def test_a_registered_custom_initializer_is_written_as_keras_writes_it():
    @lamina.saving.register_keras_serializable(package="CfgTest")
    class HalfOnes(lamina.initializers.Initializer):
        def __init__(self, scale=0.5):
            self.scale = scale

        def __call__(self, shape, dtype=None):
            return np.full(shape, self.scale, dtype or "float32")

        def get_config(self):
            return {"scale": self.scale}

    config = L.Dense(2, kernel_initializer=HalfOnes(0.25)).get_config()
    assert config["kernel_initializer"] == {"module": __name__, "class_name": "HalfOnes", "config": {"scale": 0.25},
                                            "registered_name": "CfgTest>HalfOnes"}
    again = L.Dense.from_config(config)
    assert isinstance(again.kernel_initializer, HalfOnes) and again.kernel_initializer.scale == 0.25
    np.testing.assert_array_equal(np.asarray(again(np.ones((1, 3), "float32"))), np.full((1, 2), 0.75))


def test_keras_arguments_lamina_does_not_implement_are_accepted_off_only():
    assert L.BatchNormalization(renorm=False, renorm_clipping=None, renorm_momentum=0.9).get_config()[
        "renorm_momentum"] == 0.9
    with pytest.raises(NotImplementedError, match="renormalization"):
        L.BatchNormalization(renorm=True)
    with pytest.raises(NotImplementedError, match="sliding_window"):
        L.MultiHeadAttention(2, 4, sliding_window=3)
    with pytest.raises(NotImplementedError, match="quantization_config"):
        L.Dense(2, quantization_config={"mode": "int8"})
    with pytest.raises(NotImplementedError, match="ragged"):
        L.InputLayer(shape=(3,), ragged=True)
    assert L.Resizing(4, 4, antialias=True).get_config()["antialias"] is True
