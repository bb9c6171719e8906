"""`.keras` files both ways with real Keras 3 (torch backend): models built, trained a few steps and saved by
Keras load in lamina and predict the same; lamina re-saves them and Keras loads those and predicts the same;
and models made in lamina load in Keras."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
import lamina  # noqa: E402


from keras_models import BUILDERS, _inputs, _targets  # noqa: E402  (tests/keras_models.py)
from keras_models import bidirectional  # noqa: E402


def _predict(model, x):
    out = model.predict(x, verbose=0)
    return [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else [np.asarray(out)]


def _same(a, b):
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_keras_file_loads_in_lamina_and_back(name, tmp_path):
    keras.utils.set_random_seed(0)
    model = BUILDERS[name](keras)
    x = _inputs(name, 8)
    model.compile("adam", "mse")
    model.fit(x, _targets(keras, model, x), epochs=1, verbose=0)   # a few steps: weights and BN stats move
    model.save(tmp_path / "k.keras")
    want = _predict(model, _inputs(name, 3, seed=1))

    mine = lamina.models.load_model(tmp_path / "k.keras")
    _same(_predict(mine, _inputs(name, 3, seed=1)), want)
    assert mine.compiled and type(mine.optimizer).__name__ == "Adam"

    mine.save(tmp_path / "l.keras")
    again = keras.models.load_model(tmp_path / "l.keras")
    _same(_predict(again, _inputs(name, 3, seed=1)), want)


@pytest.mark.parametrize("name", ["mlp", "cnn", "unet", "bidirectional", "transformer", "two_in_two_out"])
def test_lamina_model_loads_in_keras(name, tmp_path):
    lamina.utils.set_random_seed(0)
    model = BUILDERS[name](lamina)
    x = _inputs(name, 4)
    model.predict(x, verbose=0)
    model.save(tmp_path / "m.keras")
    theirs = keras.models.load_model(tmp_path / "m.keras", compile=False)
    _same(_predict(theirs, x), _predict(model, x))


def test_weights_h5_both_ways(tmp_path):
    keras.utils.set_random_seed(1)
    theirs = bidirectional(keras)
    x = _inputs("bidirectional", 3)
    theirs.save_weights(tmp_path / "k.weights.h5")
    mine = bidirectional(lamina)
    mine.load_weights(tmp_path / "k.weights.h5")
    _same(_predict(mine, x), _predict(theirs, x))
    mine.save_weights(tmp_path / "l.weights.h5")
    fresh = bidirectional(keras)
    fresh.load_weights(tmp_path / "l.weights.h5")
    _same(_predict(fresh, x), _predict(theirs, x))


def test_keras_argument_lamina_lacks_is_refused_by_name(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization(renorm=True)])
    model.save(tmp_path / "r.keras")
    with pytest.raises(lamina.io.ModelFileError, match="batch_normalization.*renorm=True"):
        lamina.models.load_model(tmp_path / "r.keras")


def test_npz_weights_variant_is_refused_without_unpickling(tmp_path):
    import zipfile
    with zipfile.ZipFile(tmp_path / "p.keras", "w") as z:
        z.writestr("config.json", "{}")
        z.writestr("model.weights.npz", b"\x80\x04not really")
    with pytest.raises(lamina.io.ModelFileError, match="pickled"):
        lamina.models.load_model(tmp_path / "p.keras")
