"""`.keras` files both ways with real Keras 3 (torch backend): models built, trained a few steps and saved by
Keras load in lamina and predict the same; lamina re-saves them and Keras loads those and predicts the same;
and models made in lamina load in Keras."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
import lamina  # noqa: E402


def mlp(K):
    return K.Sequential([K.Input((6,)), K.layers.Dense(8, activation="relu"), K.layers.BatchNormalization(),
                         K.layers.Dropout(0.2), K.layers.Dense(3, activation="softmax")])


def cnn(K):
    return K.Sequential([K.Input((10, 10, 2)), K.layers.Conv2D(4, 3, activation="relu", padding="same"),
                         K.layers.MaxPooling2D(2), K.layers.Conv2D(6, 3, strides=2), K.layers.Flatten(),
                         K.layers.Dense(3, activation="softmax")])


def unet(K):
    inp = K.Input((8, 8, 1))
    d = K.layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    p = K.layers.MaxPooling2D(2)(d)
    b = K.layers.Conv2D(8, 3, padding="same", activation="relu")(p)
    u = K.layers.Conv2DTranspose(4, 2, strides=2, padding="same")(b)
    out = K.layers.Conv2D(2, 1, activation="softmax")(K.layers.Concatenate()([d, u]))
    return K.Model(inp, out)


def lstm(K):
    return K.Sequential([K.Input((7, 3)), K.layers.LSTM(5, return_sequences=True), K.layers.LSTM(4),
                         K.layers.Dense(2)])


def masked_gru(K):
    return K.Sequential([K.Input((9,), dtype="int32"), K.layers.Embedding(12, 4, mask_zero=True),
                         K.layers.GRU(5), K.layers.Dense(2, activation="softmax")])


def bidirectional(K):
    return K.Sequential([K.Input((7, 3)), K.layers.Bidirectional(K.layers.LSTM(4, return_sequences=True)),
                         K.layers.SimpleRNN(3), K.layers.Dense(2)])


def transformer(K):
    inp = K.Input((6, 8))
    att = K.layers.MultiHeadAttention(num_heads=2, key_dim=4)(inp, inp)
    x = K.layers.LayerNormalization()(K.layers.Add()([inp, att]))
    ff = K.layers.Dense(8)(K.layers.Dense(16, activation="relu")(x))
    x = K.layers.LayerNormalization()(K.layers.Add()([x, ff]))
    return K.Model(inp, K.layers.Dense(2)(K.layers.GlobalAveragePooling1D()(x)))


def conv1d(K):
    return K.Sequential([K.Input((12, 3)), K.layers.Conv1D(5, 3, activation="relu"), K.layers.GlobalMaxPooling1D(),
                         K.layers.Dense(2)])


def two_in_two_out(K):
    a, b = K.Input((5,), name="a"), K.Input((4,), name="b")
    x = K.layers.Concatenate()([K.layers.Dense(6, activation="tanh")(a), K.layers.Dense(6, activation="tanh")(b)])
    return K.Model([a, b], [K.layers.Dense(3, activation="softmax", name="cls")(x), K.layers.Dense(1, name="reg")(x)])


def activations(K):
    return K.Sequential([K.Input((6,))] + [K.layers.Dense(4, activation=a) for a in
                                           ("elu", "selu", "gelu", "silu", "softplus", "softsign", "tanh",
                                            "sigmoid", "hard_sigmoid", "relu6", "leaky_relu")]
                        + [K.layers.Dense(2)])


def _inputs(name, n, seed=0):
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.normal(size=(n,) + s).astype("float32")  # noqa: E731
    return {"mlp": f(6), "cnn": f(10, 10, 2), "unet": f(8, 8, 1), "lstm": f(7, 3),
            "masked_gru": np.concatenate([rng.integers(1, 12, (n, 6)), np.zeros((n, 3), int)], 1).astype("int32"),
            "bidirectional": f(7, 3), "transformer": f(6, 8), "conv1d": f(12, 3),
            "two_in_two_out": [f(5), f(4)], "activations": f(6)}[name]


def _targets(K, model, x):
    out = model(x)
    outs = out if isinstance(out, (list, tuple)) else [out]
    ys = [np.zeros(tuple(o.shape), "float32") for o in outs]
    return ys if len(ys) > 1 else ys[0]


BUILDERS = {f.__name__: f for f in (mlp, cnn, unet, lstm, masked_gru, bidirectional, transformer, conv1d,
                                    two_in_two_out, activations)}


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
