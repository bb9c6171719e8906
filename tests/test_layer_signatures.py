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
