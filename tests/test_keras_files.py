"""`.keras` files both ways with real Keras 3 (torch backend): models built, trained a few steps and saved by
Keras load in lamina and predict the same; lamina re-saves them and Keras loads those and predicts the same;
and models made in lamina load in Keras."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")
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


OPTIMIZERS = {"SGD": dict(momentum=0.9, nesterov=True), "SGD_plain": dict(), "RMSprop": dict(momentum=0.5),
              "RMSprop_centered": dict(centered=True), "Adam": dict(), "Adam_amsgrad": dict(amsgrad=True),
              "AdamW": dict(weight_decay=0.05), "Adadelta": dict(learning_rate=0.5), "Adagrad": dict(),
              "Adamax": dict(), "Nadam": dict(), "Ftrl": dict(l1_regularization_strength=0.01,
                                                             l2_regularization_strength=0.02),
              "Lion": dict(), "Lamb": dict(), "Adafactor": dict(learning_rate=0.05),
              "Adam_ema": dict(use_ema=True, ema_momentum=0.5),
              "Adam_accumulating": dict(gradient_accumulation_steps=2),
              "LossScaleOptimizer": dict(initial_scale=64.0, dynamic_growth_steps=2),
              "RMSprop_loss_scale_factor": dict(loss_scale_factor=8.0),
              "Adam_schedule": dict(learning_rate={"class_name": "ExponentialDecay", "config": dict(
                  initial_learning_rate=0.01, decay_steps=1, decay_rate=0.5)})}


def _opt_model(K, name, kwargs):
    model = K.Sequential([K.Input((4,)), K.layers.Dense(5, activation="tanh"), K.layers.Dense(2)])
    if name == "LossScaleOptimizer":
        optimizer = K.optimizers.LossScaleOptimizer(K.optimizers.SGD(momentum=0.9), **kwargs)
    else:
        kwargs = dict(kwargs)
        if isinstance(kwargs.get("learning_rate"), dict):
            kwargs["learning_rate"] = K.optimizers.schedules.deserialize(kwargs["learning_rate"])
        optimizer = getattr(K.optimizers, name.split("_")[0])(**kwargs)
    model.compile(optimizer, "mse")
    return model


def _batches():
    rng = np.random.default_rng(3)
    return [(rng.normal(size=(6, 4)).astype("float32"), rng.normal(size=(6, 2)).astype("float32"))
            for _ in range(4)]


def _train(model, batches):
    for x, y in batches:
        model.train_on_batch(x, y)


def _weights(model):
    return [np.asarray(w) for w in model.get_weights()]


@pytest.mark.parametrize("direction", ["keras_to_lamina", "lamina_to_keras"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_state_in_kerass_variable_order(name, direction, tmp_path):
    """One side trains 3 steps and saves; the other loads the file; both then take the same fourth step and
    agree on every weight to 1e-5 (a slot in the wrong place, or one left out, changes that step; with
    gradient accumulation over 2 steps the fourth step applies the gradient accumulated at the third)."""
    batches = _batches()
    writer, reader = (keras, lamina) if direction == "keras_to_lamina" else (lamina, keras)
    writer.utils.set_random_seed(0)
    first = _opt_model(writer, name, OPTIMIZERS[name])
    _train(first, batches[:3])
    first.save(tmp_path / "m.keras")
    second = reader.models.load_model(tmp_path / "m.keras")
    assert type(second.optimizer).__name__ == name.split("_")[0]
    assert int(np.asarray(second.optimizer.iterations)) == int(np.asarray(first.optimizer.iterations)) > 0
    if name == "LossScaleOptimizer":
        assert float(np.asarray(second.optimizer.dynamic_scale)) == float(np.asarray(first.optimizer.dynamic_scale))
    _train(first, batches[3:])
    _train(second, batches[3:])
    for a, b in zip(_weights(first), _weights(second)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_optimizer_state_matters_to_the_third_step(tmp_path):
    """The check above has teeth: a fresh optimizer (the state dropped) takes a different third step."""
    batches = _batches()
    keras.utils.set_random_seed(0)
    first = _opt_model(keras, "Adam", {})
    _train(first, batches[:2])
    first.save(tmp_path / "m.keras")
    second = lamina.models.load_model(tmp_path / "m.keras", compile=False)
    second.compile(lamina.optimizers.Adam(), "mse")
    _train(first, batches[2:])
    _train(second, batches[2:])
    assert max(np.abs(a - b).max() for a, b in zip(_weights(first), _weights(second))) > 1e-4


@pytest.mark.parametrize("kind", ["Dense", "Embedding", "EinsumDense"])
def test_lora_moves_both_ways_with_the_update_merged(kind, tmp_path):
    """Keras saves a LoRA layer's frozen weight (Dense and EinsumDense kernel, Embedding table) with the
    low-rank update merged in and resets the factors when loading; lamina does the same, so each library's
    file predicts the same in the other."""
    rng = np.random.default_rng(0)
    if kind == "Dense":
        x = rng.standard_normal((6, 5)).astype(np.float32)
        first = [keras.Input((5,)), keras.layers.Dense(4, lora_rank=2, activation="relu")]
        factor = "lora_kernel_b"
    elif kind == "EinsumDense":   # a 3-D kernel (5, 2, 4): A (5, 2, rank) broadcasts against B (rank, 4)
        x = rng.standard_normal((6, 5)).astype(np.float32)
        first = [keras.Input((5,)), keras.layers.EinsumDense("ab,bhc->ahc", (2, 4), bias_axes="c", lora_rank=2,
                                                            lora_alpha=3.0), keras.layers.Flatten()]
        factor = "lora_kernel_b"
    else:
        x = rng.integers(0, 10, (4, 6)).astype(np.int32)
        first = [keras.Input((6,), dtype="int32"), keras.layers.Embedding(10, 4, lora_rank=2),
                 keras.layers.GlobalAveragePooling1D()]
        factor = "lora_embeddings_b"
    theirs = keras.Sequential(first + [keras.layers.Dense(3)])
    getattr(theirs.layers[0], factor).assign(rng.standard_normal((2, 4)).astype(np.float32))
    want = keras.ops.convert_to_numpy(theirs.predict(x, verbose=0))
    theirs.save(tmp_path / "k.keras")
    mine = lamina.models.load_model(tmp_path / "k.keras")
    np.testing.assert_allclose(mine.predict(x, verbose=0), want, rtol=1e-5, atol=1e-5)
    assert mine.layers[0].lora_enabled and not getattr(mine.layers[0], factor).numpy().any()

    getattr(mine.layers[0], factor).assign(rng.standard_normal((2, 4)).astype(np.float32))
    want = mine.predict(x, verbose=0)
    mine.save(tmp_path / "l.keras")
    back = keras.models.load_model(tmp_path / "l.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(back.predict(x, verbose=0)), want, rtol=1e-5, atol=1e-5)
