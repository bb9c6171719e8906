"""The ten models of issue 16's outside check, written once for both APIs: each builder takes the module
(``keras`` or ``lamina``) as K. Used live by test_keras_files.py and by fixtures/make_keras_fixtures.py, which
saves them from real Keras into tests/fixtures/keras/. No Keras import here: test_keras_fixtures.py runs
without Keras installed."""
import numpy as np


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


def _padded_ids(rng, n, length=9, vocab=12):
    """Ids right-padded with 0 to different lengths (1 .. length) per row."""
    ids = rng.integers(1, vocab, (n, length))
    ids[np.arange(length)[None, :] >= (1 + (np.arange(n) * 4) % length)[:, None]] = 0
    return ids.astype("int32")


def _inputs(name, n, seed=0):
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.normal(size=(n,) + s).astype("float32")  # noqa: E731
    return {"mlp": f(6), "cnn": f(10, 10, 2), "unet": f(8, 8, 1), "lstm": f(7, 3),
            "masked_gru": _padded_ids(rng, n),
            "bidirectional": f(7, 3), "transformer": f(6, 8), "conv1d": f(12, 3),
            "two_in_two_out": [f(5), f(4)], "activations": f(6)}[name]


def _targets(K, model, x):
    out = model(x)
    outs = out if isinstance(out, (list, tuple)) else [out]
    ys = [np.zeros(tuple(o.shape), "float32") for o in outs]
    return ys if len(ys) > 1 else ys[0]


BUILDERS = {f.__name__: f for f in (mlp, cnn, unet, lstm, masked_gru, bidirectional, transformer, conv1d,
                                    two_in_two_out, activations)}


