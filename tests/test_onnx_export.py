"""model.export(path, format="onnx"): every exportable layer, run by onnxruntime, matches lamina's predict
to 1e-4 at two batch sizes; layers that cannot be exported raise an error naming them."""
import numpy as np
import pytest

import lamina
from lamina import layers

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _randomise(model, rng):
    """Non-trivial weights everywhere (biases and normalisation statistics too)."""
    for layer in model.layers:
        ws = layer.get_weights()
        new = []
        for w in layer.weights:
            a = w.numpy()
            name = w.name.split("/")[-1]
            if name in ("moving_variance", "variance"):
                new.append(rng.uniform(0.5, 2.0, a.shape).astype(a.dtype))
            elif a.dtype.kind == "f":
                new.append((rng.normal(size=a.shape) * 0.3).astype(a.dtype))
            else:
                new.append(a)
        if ws:
            layer.set_weights(new)


def _check(model, inputs, tmp_path, atol=1e-4, randomise=True):
    if randomise:
        _randomise(model, np.random.default_rng(0))
    path = model.export(str(tmp_path / "m.onnx"), format="onnx", verbose=False)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    for batch in (1, 3):
        feed = [x(batch) for x in inputs]
        want = model.predict(feed if len(feed) > 1 else feed[0], verbose=0)
        want = want if isinstance(want, list) else [want]
        got = session.run(None, dict(zip(names, feed)))
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, atol=atol, rtol=1e-4)


def floats(*shape):
    return lambda n: np.random.default_rng(n).normal(size=(n,) + shape).astype("float32")


def ints(high, *shape):
    return lambda n: np.random.default_rng(n).integers(0, high, (n,) + shape).astype("int64")


SEQUENTIAL_CASES = {
    "dense_activations": ((6,), [layers.Dense(8, activation=a) for a in
                                 ("relu", "sigmoid", "tanh", "elu", "selu", "softplus", "softsign", "gelu",
                                  "silu", "leaky_relu", "relu6", "hard_sigmoid", "hard_silu", "linear")]
                          + [layers.Dense(4, activation="softmax")]),
    "activation_layers": ((6,), [layers.Dense(8), layers.ReLU(max_value=1.0), layers.LeakyReLU(0.1),
                                 layers.ELU(0.5), layers.Activation("log_softmax"), layers.Softmax()]),
    "conv2d": ((9, 9, 2), [layers.Conv2D(4, 3, padding="same", activation="relu"),
                           layers.Conv2D(3, (3, 2), strides=2, padding="valid"),
                           layers.Conv2D(2, 2, dilation_rate=2, padding="same")]),
    "conv2d_transpose": ((5, 5, 2), [layers.Conv2DTranspose(3, 3, strides=2, padding="same"),
                                     layers.Conv2DTranspose(2, 3, strides=2, padding="valid")]),
    "conv1d": ((11, 3), [layers.Conv1D(4, 3, padding="causal"), layers.Conv1D(4, 3, strides=2, padding="same"),
                         layers.Conv1DTranspose(2, 3, strides=2, padding="same")]),
    "pooling": ((8, 8, 3), [layers.MaxPooling2D(2), layers.AveragePooling2D(2, padding="same"),
                            layers.GlobalAveragePooling2D()]),
    "pooling_keepdims": ((8, 8, 3), [layers.MaxPooling2D(3, strides=2, padding="same"),
                                     layers.GlobalMaxPooling2D(keepdims=True), layers.Flatten()]),
    "pooling1d": ((10, 3), [layers.MaxPooling1D(2), layers.AveragePooling1D(2), layers.GlobalMaxPooling1D()]),
    "reshaping": ((4, 6), [layers.Reshape((6, 4)), layers.Permute((2, 1)), layers.Flatten(),
                           layers.RepeatVector(3)]),
    "padding_cropping": ((6, 6, 2), [layers.ZeroPadding2D(((1, 2), (0, 1))), layers.Cropping2D(((2, 1), (1, 0))),
                                     layers.UpSampling2D(2), layers.UpSampling2D(2, interpolation="bilinear")]),
    "padding_cropping1d": ((7, 2), [layers.ZeroPadding1D(2), layers.Cropping1D((1, 2)), layers.UpSampling1D(3)]),
    "normalisation": ((5, 4), [layers.BatchNormalization(), layers.LayerNormalization(),
                               layers.Dense(3), layers.BatchNormalization(axis=1)]),
    "regularisation_is_identity": ((6,), [layers.Dropout(0.5), layers.GaussianNoise(1.0), layers.Dense(3),
                                          layers.GaussianDropout(0.3)]),
    "preprocessing": ((6,), [layers.Rescaling(0.5, offset=-1.0), layers.Dense(3)]),
    "simple_rnn": ((7, 3), [layers.SimpleRNN(5, return_sequences=True), layers.SimpleRNN(4)]),
    "lstm": ((7, 3), [layers.LSTM(5, return_sequences=True), layers.LSTM(4)]),
    "gru": ((7, 3), [layers.GRU(5, return_sequences=True), layers.GRU(4, reset_after=False)]),
    "bidirectional": ((7, 3), [layers.Bidirectional(layers.LSTM(4, return_sequences=True)),
                               layers.Bidirectional(layers.GRU(3), merge_mode="sum")]),
    "bidirectional_rnn_ave": ((6, 2), [layers.Bidirectional(layers.SimpleRNN(3), merge_mode="ave")]),
}


@pytest.mark.parametrize("case", sorted(SEQUENTIAL_CASES))
def test_sequential_layers_round_trip(case, tmp_path):
    shape, stack = SEQUENTIAL_CASES[case]
    model = lamina.Sequential([layers.Input(shape)] + stack)
    _check(model, [floats(*shape)], tmp_path)


def test_embedding_and_lstm_text_model(tmp_path):
    model = lamina.Sequential([layers.Input((9,), dtype="int64"), layers.Embedding(20, 6), layers.LSTM(5),
                               layers.Dense(2, activation="softmax")])
    _check(model, [ints(20, 9)], tmp_path)


def test_normalization_layer_with_adapted_statistics(tmp_path):
    norm = layers.Normalization()
    norm.adapt(np.random.default_rng(1).normal(3.0, 2.0, (50, 4)).astype("float32"))
    model = lamina.Sequential([layers.Input((4,)), norm, layers.Dense(2)])
    _check(model, [floats(4)], tmp_path)


def test_functional_multi_input_multi_output_with_merges(tmp_path):
    a, b = lamina.Input((6,), name="left"), lamina.Input((6,), name="right")
    shared = layers.Dense(5, activation="tanh")
    x, y = shared(a), shared(b)
    merged = [layers.Add()([x, y]), layers.Subtract()([x, y]), layers.Multiply()([x, y]),
              layers.Average()([x, y]), layers.Maximum()([x, y]), layers.Minimum()([x, y])]
    out1 = layers.Dense(3, name="first")(layers.Concatenate()(merged))
    out2 = layers.Dense(2, activation="sigmoid", name="second")(x)
    model = lamina.Model([a, b], [out1, out2])
    _check(model, [floats(6), floats(6)], tmp_path)
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert [i.name for i in proto.graph.input] == ["left", "right"]
    assert [o.name for o in proto.graph.output] == ["first", "second"]
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def test_unet_like_functional_with_nested_sequential(tmp_path):
    inp = lamina.Input((8, 8, 1))
    down = layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    pooled = layers.MaxPooling2D(2)(down)
    block = lamina.Sequential([layers.Input((4, 4, 4)), layers.Conv2D(8, 3, padding="same", activation="relu")])
    up = layers.Conv2DTranspose(4, 2, strides=2, padding="same")(block(pooled))
    out = layers.Conv2D(3, 1, activation="softmax")(layers.Concatenate()([down, up]))
    _check(lamina.Model(inp, out), [floats(8, 8, 1)], tmp_path)


@pytest.mark.parametrize("causal", [False, True])
def test_multi_head_attention_transformer_block(causal, tmp_path):
    inp = lamina.Input((6, 8))
    att = layers.MultiHeadAttention(num_heads=2, key_dim=4, value_dim=3)(inp, inp, use_causal_mask=causal)
    x = layers.LayerNormalization()(layers.Add()([inp, att]))
    out = layers.Dense(8, activation="relu")(x)
    _check(lamina.Model(inp, out), [floats(6, 8)], tmp_path)


def test_cross_attention_three_inputs(tmp_path):
    q, v, k = lamina.Input((4, 8)), lamina.Input((6, 5)), lamina.Input((6, 7))
    out = layers.MultiHeadAttention(num_heads=3, key_dim=2, use_bias=False)(q, v, key=k)
    _check(lamina.Model([q, v, k], out), [floats(4, 8), floats(6, 5), floats(6, 7)], tmp_path)


def test_unexportable_layer_is_named(tmp_path):
    model = lamina.Sequential([layers.Input((6,)), layers.Dense(3), layers.Lambda(lambda t: t * 2, name="twice")])
    with pytest.raises(NotImplementedError, match="'twice' \\(Lambda\\)"):
        model.export(str(tmp_path / "m.onnx"), format="onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_masked_rnn_is_refused_not_approximated(tmp_path):
    model = lamina.Sequential([layers.Input((5,), dtype="int64"), layers.Embedding(10, 4, mask_zero=True),
                               layers.LSTM(3)])
    model.predict(np.ones((1, 5), "int64"), verbose=0)
    with pytest.raises(NotImplementedError, match="mask"):
        model.export(str(tmp_path / "m.onnx"), format="onnx")


def test_unknown_format_lists_the_valid_ones(tmp_path):
    model = lamina.Sequential([layers.Input((2,)), layers.Dense(1)])
    with pytest.raises(ValueError, match="onnx"):
        model.export(str(tmp_path / "m.x"), format="tflite")


IMAGE_SHAPES = {"digits": (8, 8, 1), "mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
REFUSED = {"sentiment": "mask", "vae": "Sampling"}   # masked Bidirectional LSTM; a random sampling layer


@pytest.mark.parametrize("name", ["cnn", "mlp", "mnist-cnn", "cifar10-cnn", "charlm", "longmemory",
                                  "longmemory-gru", "longmemory-dense", "unet", "autoencoder", "gan", "sentiment",
                                  "vae"])
def test_zoo_models_export_or_name_what_stops_them(name, tmp_path):
    from lamina.zoo import catalog
    recipe = catalog.RECIPES[name]
    if recipe.dataset in IMAGE_SHAPES:
        model = recipe.build(input_shape=IMAGE_SHAPES[recipe.dataset], num_classes=10)
    else:
        model = recipe.build()
    if name in REFUSED:
        with pytest.raises(NotImplementedError, match=REFUSED[name]):
            model.export(str(tmp_path / "m.onnx"), format="onnx", verbose=False)
        return
    shape = model.input_shape[1:]
    if model.input.dtype.kind in "iu":
        inputs = [ints(10, *shape)]
    else:
        inputs = [floats(*shape)]
    _check(model, inputs, tmp_path, randomise=False)   # the recipe's own initial weights
