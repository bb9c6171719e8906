"""Keras 3.15 layers added for issue 14: forward against real Keras (weights copied in with set_weights),
input and weight gradients by central differences, configs that round-trip, and .keras files both ways."""
import numpy as np
import pytest

import lamina
from lamina import layers
from lamina.testing import check_grad

from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")
R = np.random.default_rng(14)

# (name, kwargs, input shape): built in both libraries with the same arguments
CASES = [
    ("Conv3D", dict(filters=3, kernel_size=2), (2, 4, 5, 4, 2)),
    ("Conv3D", dict(filters=4, kernel_size=(3, 2, 2), strides=2, padding="same", activation="tanh"), (2, 5, 4, 6, 2)),
    ("Conv3D", dict(filters=4, kernel_size=2, groups=2), (1, 3, 4, 4, 4)),
    ("Conv3D", dict(filters=2, kernel_size=2, dilation_rate=2, data_format="channels_first"), (1, 3, 5, 5, 4)),
    ("Conv3DTranspose", dict(filters=2, kernel_size=3, strides=2, padding="same"), (1, 3, 2, 3, 3)),
    ("Conv3DTranspose", dict(filters=2, kernel_size=(2, 3, 2), strides=(2, 1, 2)), (2, 2, 3, 2, 2)),
    ("DepthwiseConv2D", dict(kernel_size=3), (2, 6, 5, 3)),
    ("DepthwiseConv2D", dict(kernel_size=(3, 2), strides=2, padding="same", depth_multiplier=2), (2, 7, 6, 3)),
    ("DepthwiseConv2D", dict(kernel_size=2, dilation_rate=2, data_format="channels_first", use_bias=False),
     (1, 2, 6, 6)),
    ("DepthwiseConv1D", dict(kernel_size=3, depth_multiplier=3, padding="same"), (2, 7, 2)),
    ("SeparableConv2D", dict(filters=4, kernel_size=3, depth_multiplier=2), (2, 6, 6, 3)),
    ("SeparableConv2D", dict(filters=3, kernel_size=2, strides=2, padding="same"), (2, 5, 5, 2)),
    ("SeparableConv1D", dict(filters=4, kernel_size=3, dilation_rate=2, activation="relu"), (2, 9, 3)),
    ("MaxPooling3D", dict(), (2, 4, 4, 6, 2)),
    ("MaxPooling3D", dict(pool_size=(2, 3, 2), strides=1, padding="same"), (1, 3, 4, 4, 2)),
    ("AveragePooling3D", dict(pool_size=2, strides=(1, 2, 2)), (2, 4, 4, 5, 2)),
    ("AveragePooling3D", dict(pool_size=2, data_format="channels_first"), (1, 2, 4, 4, 4)),
    ("GlobalMaxPooling3D", dict(), (2, 3, 4, 2, 3)),
    ("GlobalAveragePooling3D", dict(keepdims=True), (2, 3, 4, 2, 3)),
    ("GlobalAveragePooling3D", dict(data_format="channels_first"), (2, 3, 4, 2, 3)),
    ("AdaptiveAveragePooling1D", dict(output_size=3), (2, 7, 2)),
    ("AdaptiveAveragePooling2D", dict(output_size=(2, 3)), (2, 5, 7, 2)),
    ("AdaptiveMaxPooling2D", dict(output_size=3), (2, 7, 5, 2)),
    ("AdaptiveMaxPooling3D", dict(output_size=(2, 2, 3), data_format="channels_first"), (1, 2, 4, 5, 6)),
    ("AdaptiveAveragePooling3D", dict(output_size=2), (1, 3, 5, 4, 2)),
    ("AdaptiveMaxPooling1D", dict(output_size=4), (2, 9, 3)),
    ("UpSampling3D", dict(), (1, 2, 3, 2, 2)),
    ("UpSampling3D", dict(size=(1, 2, 3), data_format="channels_first"), (1, 2, 2, 3, 2)),
    ("ZeroPadding3D", dict(), (1, 2, 3, 2, 2)),
    ("ZeroPadding3D", dict(padding=((0, 1), (2, 0), (1, 1)), data_format="channels_first"), (1, 2, 2, 3, 2)),
    ("Cropping3D", dict(), (1, 4, 5, 3, 2)),
    ("Cropping3D", dict(cropping=((0, 1), (2, 1), 1)[:2] + ((1, 0),)), (1, 3, 5, 4, 2)),
    ("RMSNormalization", dict(), (3, 4, 6)),
    ("RMSNormalization", dict(axis=(1, 2), epsilon=1e-3), (3, 4, 5)),
    ("UnitNormalization", dict(), (3, 5)),
    ("UnitNormalization", dict(axis=[1, 2]), (2, 3, 4)),
    ("EinsumDense", dict(equation="ab,bc->ac", output_shape=4, bias_axes="c"), (3, 5)),
    ("EinsumDense", dict(equation="abc,cd->abd", output_shape=(None, 6), bias_axes="d", activation="relu"),
     (2, 3, 4)),
    ("EinsumDense", dict(equation="abc,cde->abde", output_shape=(None, 2, 3), bias_axes="de"), (2, 3, 4)),
    ("EinsumDense", dict(equation="...b,bc->...c", output_shape=3, bias_axes="c"), (2, 3, 4, 5)),
    ("EinsumDense", dict(equation="ab...,bc->ac...", output_shape=(3,), bias_axes="c"), (2, 4, 5)),
    ("EinsumDense", dict(equation="abc,bcd->ad", output_shape=(5,)), (2, 3, 4)),
    ("Identity", dict(), (2, 3)),
]
IDS = [f"{n}-{i}" for i, (n, _, _) in enumerate(CASES)]


def _pair(name, kwargs, shape):
    mine = getattr(layers, name)(**kwargs)
    theirs = getattr(keras.layers, name)(**kwargs)
    x = R.standard_normal(shape).astype(np.float32)
    mine(x)
    theirs.build(shape)
    return mine, theirs, x


@pytest.mark.parametrize("name,kwargs,shape", CASES, ids=IDS)
def test_forward_matches_keras(name, kwargs, shape):
    mine, theirs, x = _pair(name, kwargs, shape)
    assert [w.shape for w in mine.get_weights()] == [tuple(w.shape) for w in theirs.get_weights()]
    assert [w.name for w in mine.weights] == [w.name for w in theirs.weights]
    for w in mine.weights:  # away from the ones/zeros initial values so every weight matters
        w.assign(R.standard_normal(w.shape).astype(np.float32) * 0.5 + 0.1)
    theirs.set_weights(mine.get_weights())
    want = keras.ops.convert_to_numpy(theirs(x))
    got = mine(x).numpy()
    assert got.shape == want.shape
    # the static shape is the real output's (Keras 3.15's EinsumDense.compute_output_shape keeps None where
    # output_shape has None, and orders left-elided axes backwards, so its real output is the reference)
    assert tuple(mine.compute_output_shape(shape)) == got.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,kwargs,shape", CASES, ids=IDS)
def test_gradients(name, kwargs, shape):
    if name == "Identity":
        check_grad(layers.Identity(), R.standard_normal(shape))
        return
    layer = getattr(layers, name)(**kwargs)
    x = R.standard_normal(shape)
    if name.startswith(("MaxPooling", "GlobalMax", "AdaptiveMax")):
        x = R.permutation(np.linspace(-3, 3, int(np.prod(shape)))).reshape(shape)  # distinct: no ties
    check_grad(layer, x, atol=1e-5)


@pytest.mark.parametrize("name,kwargs,shape", CASES, ids=IDS)
def test_config_round_trip_with_keras(name, kwargs, shape):
    mine = getattr(layers, name)(**kwargs)
    config = mine.get_config()
    again = type(mine).from_config(config)
    assert again.get_config() == config
    theirs = getattr(keras.layers, name)(**kwargs).get_config()
    for key in kwargs:  # every argument given is stored under Keras's key
        assert key in config and key in theirs


@pytest.mark.parametrize("axis", [2, -3, (1, 2)])
def test_rms_normalization_refuses_an_axis_the_input_lacks(axis):
    """Keras raises for an axis beyond the rank; RMSNormalization once took it modulo the rank (axis=2 of a 2-D
    input normalised axis 0)."""
    with pytest.raises(ValueError, match="out of range for an input of rank 2"):
        layers.RMSNormalization(axis=axis)(np.ones((2, 3), np.float32))


def test_alpha_dropout_keeps_selu_statistics_and_is_identity_at_inference():
    layer = layers.AlphaDropout(0.2, seed=3)
    x = R.standard_normal((400, 500)).astype(np.float32)
    np.testing.assert_array_equal(layer(x, training=False).numpy(), x)
    y = layer(x, training=True).numpy()
    alpha_p = -1.6732632423543772848170429916717 * 1.0507009873554804934193349852946
    a = ((1 - 0.2) * (1 + 0.2 * alpha_p ** 2)) ** -0.5
    b = -a * alpha_p * 0.2
    dropped = np.isclose(y, a * alpha_p + b)
    np.testing.assert_allclose(y[~dropped], a * x[~dropped] + b, rtol=1e-5, atol=1e-6)
    assert abs(dropped.mean() - 0.2) < 0.01
    assert abs(y.mean()) < 0.01 and abs(y.std() - 1) < 0.01   # the point of alpha dropout
    cfg = keras.layers.AlphaDropout(0.2, seed=3).get_config()
    assert {k: cfg[k] for k in ("rate", "noise_shape", "seed")} == \
        {k: layer.get_config()[k] for k in ("rate", "noise_shape", "seed")}


def _model(lib):
    L = lib.layers
    inp = lib.Input((6, 6, 3))
    x = L.SeparableConv2D(4, 3, depth_multiplier=2, padding="same")(inp)
    x = L.DepthwiseConv2D(3, activation="relu")(x)
    x = L.Reshape((4, 4, 4, 1))(x)
    x = L.Conv3D(3, 2, padding="same")(x)
    x = L.Conv3DTranspose(2, 2, strides=2)(x)
    x = L.MaxPooling3D(2)(x)
    x = L.ZeroPadding3D(1)(x)
    x = L.Cropping3D(1)(x)
    x = L.UpSampling3D(1)(x)
    x = L.GlobalAveragePooling3D()(x)
    x = L.RMSNormalization()(x)
    x = L.EinsumDense("ab,bc->ac", 5, bias_axes="c")(x)
    x = L.UnitNormalization()(x)
    x = L.Identity()(x)
    return lib.Model(inp, x)


def test_keras_file_with_new_layers_both_ways(tmp_path):
    x = R.standard_normal((2, 6, 6, 3)).astype(np.float32)
    mine = _model(lamina)
    for w in mine.weights:
        w.assign(R.standard_normal(w.shape).astype(np.float32) * 0.5)
    mine.save(tmp_path / "m.keras")
    theirs = keras.models.load_model(tmp_path / "m.keras", compile=False)
    want = mine.predict(x, verbose=0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(theirs(x)), want, rtol=1e-5, atol=1e-5)
    theirs.save(tmp_path / "k.keras")
    back = lamina.models.load_model(tmp_path / "k.keras", compile=False)
    np.testing.assert_allclose(back.predict(x, verbose=0), want, rtol=1e-5, atol=1e-5)
