"""keras.random and keras.saving as Keras 3 code uses them, through ``import lamina as keras``."""
import numpy as np
import pytest

import lamina as keras


def test_random_seeded_and_statistics():
    a = keras.random.normal((2000,), mean=1.0, stddev=2.0, seed=3).numpy()
    b = keras.random.normal((2000,), mean=1.0, stddev=2.0, seed=3).numpy()
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32 and abs(a.mean() - 1.0) < 0.15 and abs(a.std() - 2.0) < 0.15
    u = keras.random.uniform((1000,), minval=-1, maxval=3, seed=keras.random.SeedGenerator(0)).numpy()
    assert u.min() >= -1 and u.max() < 3
    t = keras.random.truncated_normal((5000,), stddev=1.0, seed=1).numpy()
    assert np.abs(t).max() <= 2.0
    r = keras.random.randint((100,), 3, 7, seed=2).numpy()
    assert set(np.unique(r)) <= {3, 4, 5, 6}
    keras.utils.set_random_seed(5)
    x = keras.random.normal((3,)).numpy()
    keras.utils.set_random_seed(5)
    np.testing.assert_array_equal(x, keras.random.normal((3,)).numpy())
    with pytest.raises(ValueError, match="seed"):
        keras.random.normal((2,), seed="x")


def test_random_dropout_scales_kept_entries():
    y = keras.random.dropout(np.ones((100, 100), np.float32), 0.25, seed=0).numpy()
    kept = y[y != 0]
    np.testing.assert_allclose(kept, 1 / 0.75, rtol=1e-6)
    assert 0.2 < (y == 0).mean() < 0.3


def test_saving_namespace_round_trip(tmp_path):
    @keras.saving.register_keras_serializable(package="test_ns")
    class Double(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

        def compute_output_shape(self, s):
            return s

    model = keras.Sequential([keras.Input((3,)), Double(), keras.layers.Dense(2)])
    x = np.ones((1, 3), np.float32)
    path = str(tmp_path / "m.keras")
    keras.saving.save_model(model, path)
    again = keras.saving.load_model(path)
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    assert keras.saving.get_registered_object("test_ns>Double") is Double


def test_random_gamma_beta_binomial_categorical_statistics():
    g = keras.random.gamma((20000,), alpha=3.0, seed=1).numpy()
    assert g.dtype == np.float32 and abs(g.mean() - 3.0) < 0.1 and abs(g.var() - 3.0) < 0.2
    b = keras.random.beta((20000,), alpha=2.0, beta=5.0, seed=2).numpy()
    assert (b > 0).all() and (b < 1).all() and abs(b.mean() - 2 / 7) < 0.01
    n = keras.random.binomial((20000,), counts=10, probabilities=0.3, seed=3).numpy()
    assert n.dtype == np.float32 and set(np.unique(n)) <= set(range(11)) and abs(n.mean() - 3.0) < 0.05
    logits = np.log(np.array([[0.1, 0.6, 0.3], [0.8, 0.1, 0.1]], np.float32))
    c = keras.random.categorical(logits, 20000, seed=4).numpy()
    assert c.shape == (2, 20000) and c.dtype == np.int32
    for row, p in zip(c, np.exp(logits)):
        np.testing.assert_allclose(np.bincount(row, minlength=3) / 20000, p, atol=0.015)
    again = keras.random.categorical(logits, 20000, seed=4).numpy()
    np.testing.assert_array_equal(c, again)
    with pytest.raises(ValueError, match="2-D"):
        keras.random.categorical(np.zeros(3), 2)
