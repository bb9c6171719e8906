"""The rest of Keras 3.15's initializers, regularizers and constraints namespaces, against real Keras."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")

import lamina  # noqa: E402
from lamina import constraints, initializers, regularizers  # noqa: E402
from lamina.testing import check_grad  # noqa: E402


@pytest.mark.parametrize("kw,shape", [
    ({}, (16, 1, 9)), ({"side": "imag"}, (16, 2, 9)), ({"window": "hamming", "scaling": "spectrum"}, (10, 1, 6)),
    ({"window": None, "scaling": None}, (8, 1, 5)), ({"periodic": True, "window": "blackman"}, (12, 1, 7)),
    ({"window": "bartlett", "side": "imag", "periodic": True}, (9, 3, 4)),
])
def test_stft_initializer_matches_keras(kw, shape):
    ours = initializers.STFT(**kw)(shape)
    ref = keras.ops.convert_to_numpy(keras.initializers.STFT(**kw)(shape))
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6)
    assert ours.dtype == np.float32
    assert initializers.STFT(**kw).get_config() == keras.initializers.STFT(**kw).get_config()


def test_function_style_and_long_names_are_the_classes():
    for name in ["constant", "glorot_normal", "glorot_uniform", "he_normal", "he_uniform", "lecun_normal",
                 "lecun_uniform", "orthogonal", "random_normal", "random_uniform", "truncated_normal",
                 "variance_scaling", "identity", "stft", "IdentityInitializer", "OrthogonalInitializer",
                 "STFTInitializer"]:
        ours, ref = getattr(initializers, name), getattr(keras.initializers, name)
        assert ours.__name__ == ref.__name__, name
        assert type(initializers.get(name)) is ours
    w = initializers.glorot_uniform(seed=3)((4, 5))
    assert w.shape == (4, 5) and np.abs(w).max() <= np.sqrt(6 / 9)


def test_initializer_serialize_round_trip_and_keras_layout():
    for init in (initializers.Orthogonal(gain=2.0, seed=1), initializers.STFT(side="imag"), initializers.Constant(3.0)):
        d = initializers.serialize(init)
        assert d["class_name"] == type(init).__name__ and d["module"] == "keras.initializers"
        again = initializers.deserialize(d)
        assert type(again) is type(init) and again.get_config() == init.get_config()
        assert type(keras.initializers.deserialize(d)).__name__ == type(init).__name__


@pytest.mark.parametrize("kw", [{}, {"factor": 0.1, "mode": "columns"}, {"factor": 0.05, "mode": "rows"}])
def test_orthogonal_regularizer_matches_keras_and_has_gradients(kw):
    w = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    ours = regularizers.OrthogonalRegularizer(**kw)
    ref = keras.regularizers.OrthogonalRegularizer(**kw)
    np.testing.assert_allclose(float(ours(lamina.Tensor(w)).numpy()), float(keras.ops.convert_to_numpy(ref(keras.ops.convert_to_tensor(w)))),
                               rtol=1e-5)
    oc, rc = ours.get_config(), ref.get_config()
    assert set(oc) == set(rc) and oc["mode"] == rc["mode"] and oc["factor"] == pytest.approx(rc["factor"], rel=1e-6)
    check_grad(lambda x: ours(x), w.astype(np.float64))
    assert regularizers.orthogonal_regularizer is regularizers.OrthogonalRegularizer
    again = regularizers.deserialize(regularizers.serialize(ours))
    assert type(again) is type(ours) and again.get_config() == ours.get_config()
    with pytest.raises(ValueError, match="rank 2"):
        ours(lamina.Tensor(w[None]))


def test_regularizer_in_a_layer_and_constraint_serialize():
    layer = lamina.layers.Dense(4, kernel_regularizer="orthogonal_regularizer")
    layer(np.ones((2, 3), np.float32))
    assert len(layer.losses) == 1
    c = constraints.MaxNorm(2.0, axis=1)
    d = constraints.serialize(c)
    assert d["class_name"] == "MaxNorm"
    again = constraints.deserialize(d)
    assert type(again) is constraints.MaxNorm and again.get_config() == c.get_config()
    assert type(keras.constraints.deserialize(d)).__name__ == "MaxNorm"
