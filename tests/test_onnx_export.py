"""model.export(path, format="onnx"): every exportable layer, run by onnxruntime, matches lamina's predict
to 1e-4 at two batch sizes; layers that cannot be exported raise an error naming them."""
import importlib.util

import numpy as np
import pytest

import lamina
from lamina import layers

# onnx and onnxruntime are imported by the tests that run (~1.5 s): an xdist worker that only collects this
# module does not pay for them
pytestmark = pytest.mark.skipif(not (importlib.util.find_spec("onnx") and importlib.util.find_spec("onnxruntime")),
                                reason="needs onnx and onnxruntime (pip install 'lamina[onnx]')")


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
    import onnxruntime as ort
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
    import onnx
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


@pytest.mark.parametrize("kind", ["dot", "dot_scaled", "concat", "additive"])
@pytest.mark.parametrize("masked", [False, True])
def test_attention_and_additive_attention(kind, masked, tmp_path):
    """Attention (dot, with a learned scale, concat) and AdditiveAttention, with causal masking on the dot
    variants and, when masked, the Embedding padding masks of query and value."""
    q_ids, v_ids = lamina.Input((5,), dtype="int64"), lamina.Input((7,), dtype="int64")
    q = layers.Embedding(10, 4, mask_zero=masked)(q_ids)
    v = layers.Embedding(10, 4, mask_zero=masked)(v_ids)
    if kind == "additive":
        att = layers.AdditiveAttention()
    else:
        att = layers.Attention(use_scale=kind != "dot", score_mode="concat" if kind == "concat" else "dot")
    out = att([q, v, layers.Dense(4)(v)], use_causal_mask=kind == "dot_scaled")
    _check(lamina.Model([q_ids, v_ids], layers.Dense(3)(out)), [padded_ids(10, 5), padded_ids(10, 7)], tmp_path)


def test_multi_head_attention_with_padding_and_attention_masks(tmp_path):
    """MHA picks up the query's and value's padding masks and ANDs an attention_mask given as a graph input;
    rows with nothing to attend get uniform weights, as in lamina."""
    ids, other = lamina.Input((6,), dtype="int64"), lamina.Input((4,), dtype="int64")
    allowed = lamina.Input((6, 4), dtype="bool", name="allowed")
    x = layers.Embedding(10, 8, mask_zero=True)(ids)
    y = layers.Embedding(10, 5, mask_zero=True)(other)
    att = layers.MultiHeadAttention(num_heads=2, key_dim=3)(x, y, attention_mask=allowed)
    causal = layers.MultiHeadAttention(num_heads=2, key_dim=4)(att, att, use_causal_mask=True)
    model = lamina.Model([ids, other, allowed], causal)
    mask = lambda n: np.random.default_rng(n + 7).random((n, 6, 4)) > 0.3  # noqa: E731
    _check(model, [padded_ids(10, 6), padded_ids(10, 4), mask], tmp_path)


@pytest.mark.parametrize("normalize_first", [False, True])
@pytest.mark.parametrize("mask_zero", [False, True])
def test_transformer_encoder_decoder_and_embeddings(normalize_first, mask_zero, tmp_path):
    src, tgt = lamina.Input((7,), dtype="int32"), lamina.Input((5,), dtype="int32")
    x = layers.TokenAndPositionEmbedding(12, 7, 8, mask_zero=mask_zero)(src)
    x = layers.TransformerEncoder(16, 2, normalize_first=normalize_first, activation="gelu")(x)
    y = layers.TokenAndPositionEmbedding(12, 5, 8, mask_zero=mask_zero)(tgt)
    y = layers.TransformerDecoder(16, 2, normalize_first=normalize_first)(y, x)
    y = layers.TransformerDecoder(8, 4, normalize_first=normalize_first)(y)          # decoder-only block
    z = layers.Embedding(12, 8)(tgt)
    z = layers.Add()([z, layers.PositionEmbedding(9)(z, start_index=3)])
    out = layers.Dense(12)(layers.Concatenate()([y, z]))
    int32 = lambda make: lambda n: make(n).astype("int32")  # noqa: E731
    _check(lamina.Model([src, tgt], out), [int32(padded_ids(12, 7)), int32(padded_ids(12, 5))], tmp_path)


def test_sinusoidal_positions_and_a_nested_model_receiving_a_mask(tmp_path):
    """A nested Sequential gets the Embedding's mask through the outer graph, as in lamina's own call."""
    ids = lamina.Input((9,), dtype="int64")
    x = layers.Embedding(10, 6, mask_zero=True)(ids)
    x = layers.Add()([x, layers.SinusoidalPositionEncoding(max_wavelength=50)(x)])
    inner = lamina.Sequential([layers.Input((9, 6)), layers.Dense(6), layers.GRU(4, return_sequences=True),
                               layers.LSTM(3)])
    _check(lamina.Model(ids, inner(x)), [padded_ids(10, 9, holes=True)], tmp_path)


def test_transformer_explicit_padding_mask_input(tmp_path):
    x, pad = lamina.Input((6, 8)), lamina.Input((6,), dtype="bool")
    y = layers.TransformerEncoder(12, 2)(x, padding_mask=pad)
    y = layers.TransformerDecoder(12, 2)(y, decoder_padding_mask=pad, use_causal_mask=False)
    keep = lambda n: np.arange(6)[None, :] < (np.arange(n)[:, None] * 2 + 3)  # noqa: E731
    _check(lamina.Model([x, pad], y), [floats(6, 8), keep], tmp_path)


def test_unexportable_layer_is_named(tmp_path):
    model = lamina.Sequential([layers.Input((6,)), layers.Dense(3), layers.Lambda(lambda t: t * 2, name="twice")])
    with pytest.raises(NotImplementedError, match="'twice' \\(Lambda\\)"):
        model.export(str(tmp_path / "m.onnx"), format="onnx")
    assert not (tmp_path / "m.onnx").exists()


def padded_ids(high, length, holes=False):
    """Token ids right-padded with 0 (Embedding(mask_zero=True)'s padding): 3 real tokens in the first row, none
    in the second, all in the third; with holes, some 0s also sit between real tokens (not right padding)."""
    def make(n):
        rng = np.random.default_rng(n)
        ids = rng.integers(1, high, (n, length))
        lengths = np.array([3, 0, length, 5])[np.arange(n) % 4]
        ids[np.arange(length)[None, :] >= lengths[:, None]] = 0
        if holes:
            ids[:, 1] = 0
            ids[:, length // 2] = 0
        return ids.astype("int64")
    return make


MASKED_RNN_CASES = {
    "simple_rnn_sequences": lambda: [layers.SimpleRNN(4, return_sequences=True), layers.SimpleRNN(3)],
    "lstm_sequences": lambda: [layers.LSTM(4, return_sequences=True), layers.Dense(2)],
    "lstm_last": lambda: [layers.LSTM(4)],
    "lstm_zero_output": lambda: [layers.LSTM(4, return_sequences=True, zero_output_for_mask=True)],
    "gru_sequences": lambda: [layers.GRU(4, return_sequences=True), layers.GRU(3, reset_after=False)],
    "bidirectional_lstm_concat": lambda: [layers.Bidirectional(layers.LSTM(3, return_sequences=True)),
                                          layers.Bidirectional(layers.GRU(2), merge_mode="sum")],
    "bidirectional_rnn_ave": lambda: [layers.Bidirectional(layers.SimpleRNN(3, return_sequences=True),
                                                           merge_mode="ave"), layers.GlobalAveragePooling1D()],
    "bidirectional_last_mul": lambda: [layers.Bidirectional(layers.LSTM(3), merge_mode="mul")],
}


@pytest.mark.parametrize("holes", [False, True])
@pytest.mark.parametrize("case", sorted(MASKED_RNN_CASES))
def test_masked_recurrent_layers_match_keras_semantics(case, holes, tmp_path):
    """Embedding(mask_zero=True) before recurrent layers: the masked steps are skipped (the state is carried
    over them, sequence outputs there repeat the last state, or are 0 inside Bidirectional), for right padding,
    all-padding rows and padding in the middle alike; lamina's own masked predict (checked against Keras in
    test_rnn_layers) is the reference."""
    model = lamina.Sequential([layers.Input((7,), dtype="int64"), layers.Embedding(10, 3, mask_zero=True)]
                              + MASKED_RNN_CASES[case]())
    _check(model, [padded_ids(10, 7, holes)], tmp_path)


def test_masking_layer_before_lstm(tmp_path):
    def inputs(n):
        x = floats(6, 3)(n)
        x[:, 4:] = 0.0
        x[0, 1] = 0.0
        return x
    model = lamina.Sequential([layers.Input((6, 3)), layers.Masking(0.0), layers.LSTM(4, return_sequences=True),
                               layers.GRU(2)])
    _check(model, [inputs], tmp_path)


def test_mask_consumers_through_merges_and_softmax(tmp_path):
    ids = lamina.Input((6,), dtype="int64")
    e = layers.Embedding(12, 4, mask_zero=True)(ids)
    a = layers.Dense(4)(e)                                  # Dense passes the mask on
    s = layers.Add()([a, e])                                # AND of the masks
    p = layers.Softmax()(layers.Dense(4)(s))                # masked softmax: zeros at padding
    seq = layers.LSTM(3, return_sequences=True)(layers.Concatenate()([p, s]))
    out = layers.GlobalAveragePooling1D()(seq)              # the mean over the unmasked steps
    _check(lamina.Model(ids, out), [padded_ids(12, 6)], tmp_path)


@pytest.mark.parametrize("kind", ["Multiply", "Maximum", "Minimum"])
def test_masked_merges_that_read_the_masks(kind, tmp_path):
    """Multiply counts masked entries as 1 (0 where every input is masked), Maximum/Minimum never let a masked
    entry win; one input masked, two masked with different masks, and the merged mask feeding an LSTM."""
    a, b = lamina.Input((6,), dtype="int64"), lamina.Input((6,), dtype="int64")
    ea, eb = layers.Embedding(10, 4, mask_zero=True)(a), layers.Embedding(10, 4, mask_zero=True)(b)
    plain = layers.Dense(4)(layers.Embedding(10, 4)(a))
    merge = getattr(layers, kind)
    both = merge()([ea, eb])                     # every input masked: OR of the masks
    one = merge()([plain, eb])                   # only the second
    out = layers.LSTM(3)(both)
    model = lamina.Model([a, b], [out, one, both])
    shifted = lambda n: np.roll(padded_ids(10, 6)(n), 1, axis=0)  # noqa: E731  (other lengths per row)
    _check(model, [padded_ids(10, 6), shifted], tmp_path)


def test_masks_ONNX_cannot_follow_are_refused_by_name(tmp_path):
    inp = lamina.Input((5,), dtype="int64")
    e = layers.Embedding(10, 4, mask_zero=True)(inp)
    out = layers.Concatenate(axis=1, name="joined")([e, e])
    with pytest.raises(NotImplementedError, match="'joined' \\(Concatenate\\).*mask"):
        lamina.Model(inp, out).export(str(tmp_path / "m.onnx"), format="onnx")
    x = lamina.Input((4, 6))
    out = layers.SinusoidalPositionEncoding(name="shifted")(x, start_index=2)
    with pytest.raises(NotImplementedError, match="'shifted' \\(SinusoidalPositionEncoding\\).*start_index=2"):
        lamina.Model(x, out).export(str(tmp_path / "m.onnx"), format="onnx")
    out = layers.MultiHeadAttention(2, 3, name="mha")(x, x, return_attention_scores=True)
    with pytest.raises(NotImplementedError, match="'mha' \\(MultiHeadAttention\\).*return_attention_scores"):
        lamina.Model(x, out).export(str(tmp_path / "m.onnx"), format="onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_unknown_format_lists_the_valid_ones(tmp_path):
    model = lamina.Sequential([layers.Input((2,)), layers.Dense(1)])
    with pytest.raises(ValueError, match="onnx"):
        model.export(str(tmp_path / "m.x"), format="tflite")


IMAGE_SHAPES = {"digits": (8, 8, 1), "mnist": (28, 28, 1), "fashion_mnist": (28, 28, 1), "cifar10": (32, 32, 3)}
TEXT_BUILD = {"transformer-classifier": dict(vocabulary_size=20),
              "translate-dates": dict(source_vocabulary_size=20, target_vocabulary_size=15),
              "char-transformer": dict(vocabulary_size=20, sequence_length=16, embed_dim=32, intermediate_dim=32)}
REFUSED = {"vae": "'z' \\(Sampling\\)"}   # draws a fresh random sample at every predict


def _zoo_names():
    from lamina.zoo import catalog
    return sorted(catalog.RECIPES)


@pytest.mark.parametrize("name", _zoo_names())
def test_zoo_models_export_or_name_what_stops_them(name, tmp_path):
    """Every zoo model, with the recipe's own initial weights, exports and onnxruntime matches lamina's predict
    at batch sizes 1 and 3; text models get right-padded ids, so the padding masks are exercised."""
    from lamina.zoo import catalog
    recipe = catalog.RECIPES[name]
    if recipe.dataset in IMAGE_SHAPES:
        model = recipe.build(input_shape=IMAGE_SHAPES[recipe.dataset], num_classes=10)
    else:
        model = recipe.build(**TEXT_BUILD.get(name, {}))
    if name in REFUSED:
        with pytest.raises(NotImplementedError, match=REFUSED[name]):
            model.export(str(tmp_path / "m.onnx"), format="onnx", verbose=False)
        return
    specs = getattr(model, "_flat_inputs", None) or [model.input]
    inputs = [(lambda make, dtype: lambda n: make(n).astype(dtype))(padded_ids(10, t.shape[1]), t.dtype)
              if t.dtype.kind in "iu" else floats(*t.shape[1:]) for t in specs]
    _check(model, inputs, tmp_path, randomise=False)


@pytest.mark.parametrize("mode", ["real", "imag", "magnitude", "log", "psd", "stft"])
@pytest.mark.parametrize("padding,expand_dims,channels", [("valid", False, 1), ("same", True, 2),
                                                          ("valid", True, 3), ("same", False, 2)])
def test_stft_spectrogram(mode, padding, expand_dims, channels, tmp_path):
    inp = layers.Input((300, channels))
    out = layers.STFTSpectrogram(mode=mode, frame_length=40, frame_step=16, fft_length=64, padding=padding,
                                 expand_dims=expand_dims)(inp)
    model = lamina.Model(inp, out)
    _check(model, [floats(300, channels)], tmp_path, atol=2e-4, randomise=False)


def test_stft_spectrogram_angle_is_refused_by_name(tmp_path):
    inp = layers.Input((100, 1))
    model = lamina.Model(inp, layers.STFTSpectrogram(mode="angle", frame_length=32, frame_step=16)(inp))
    with pytest.raises(NotImplementedError, match="mode='angle'"):
        model.export(str(tmp_path / "m.onnx"), format="onnx", verbose=False)


@pytest.mark.parametrize("axis,center,scale", [([1, 2, 3], False, False), ([2, 3], True, True), (-1, True, False)])
def test_layer_normalization_over_trailing_axes(axis, center, scale, tmp_path):
    inp = layers.Input((5, 6, 3))
    model = lamina.Model(inp, layers.LayerNormalization(axis=axis, center=center, scale=scale)(inp))
    _check(model, [floats(5, 6, 3)], tmp_path)


def test_layer_normalization_over_axes_not_running_to_the_end_is_refused(tmp_path):
    inp = layers.Input((5, 6, 3))
    model = lamina.Model(inp, layers.LayerNormalization(axis=[1, 2])(inp))
    with pytest.raises(NotImplementedError, match="run of axes"):
        model.export(str(tmp_path / "m.onnx"), format="onnx", verbose=False)


def test_dense_with_lora_exports_the_merged_kernel(tmp_path):
    model = lamina.Sequential([lamina.Input((5,)), layers.Dense(4, lora_rank=2, activation="relu"), layers.Dense(3)])
    _check(model, [floats(5)], tmp_path)   # randomised: the LoRA factors are non-zero
