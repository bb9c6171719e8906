"""Mixed precision as Keras 3.15 has it (keras.mixed_precision, keras.dtype_policies, layers' dtype policies),
checked against real Keras (torch backend): which dtypes layers compute in and keep their variables in, the
policies' names and configs, the LossScaleOptimizer that compile adds, files both ways; and lamina's own
float16 path (products in float32 through BLAS, results rounded to float16) against float32 arithmetic."""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
real = lazy_module("keras", skip=False)
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import lamina  # noqa: E402
import lamina as keras  # noqa: E402  (the import line Keras code changes)
from lamina import layers, ops  # noqa: E402


@pytest.fixture
def mixed():
    """The global policy 'mixed_float16' in both libraries for the test, float32 after it."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    real.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")
        real.mixed_precision.set_global_policy("float32")


def _name(dtype):
    return str(dtype).replace("torch.", "")


# ----------------------------------------------------------------------------- names and policies
def test_policy_namespaces_have_keras_names_and_signatures():
    import inspect
    for ns in ("mixed_precision", "dtype_policies"):
        ours, theirs = getattr(keras, ns), getattr(real, ns)
        for name in ("DTypePolicy", "dtype_policy", "global_policy", "set_dtype_policy", "set_global_policy",
                     "LossScaleOptimizer", "Policy") if ns == "mixed_precision" else ("DTypePolicy",
                                                                                      "FloatDTypePolicy", "get",
                                                                                      "serialize", "deserialize"):
            a, b = getattr(ours, name), getattr(theirs, name)
            if inspect.isfunction(b):
                assert list(inspect.signature(a).parameters) == list(inspect.signature(b).parameters), name
    assert keras.mixed_precision.Policy is keras.mixed_precision.DTypePolicy is keras.DTypePolicy
    for name in ("Loss", "Metric", "Optimizer", "Initializer", "Regularizer", "InputSpec", "KerasTensor"):
        assert isinstance(getattr(keras, name), type), name
    assert keras.Loss is lamina.losses.Loss and keras.Optimizer is lamina.optimizers.Optimizer
    assert keras.version() == lamina.__version__


@pytest.mark.parametrize("name", ["float32", "float16", "float64", "int32", "mixed_float16", "mixed_bfloat16",
                                  "bfloat16"])
def test_policy_properties_and_config_as_keras(name):
    ours, theirs = keras.DTypePolicy(name), real.DTypePolicy(name)
    assert (ours.name, ours.compute_dtype, ours.variable_dtype, ours.quantization_mode) == \
           (theirs.name, theirs.compute_dtype, theirs.variable_dtype, theirs.quantization_mode)
    assert keras.dtype_policies.serialize(ours) == real.dtype_policies.serialize(theirs)
    assert keras.dtype_policies.deserialize(real.dtype_policies.serialize(theirs)) == ours
    assert repr(ours) == repr(theirs)


def test_policy_lookup_and_errors_as_keras():
    for ident in (None, "float16", {"class_name": "DTypePolicy", "config": {"name": "mixed_float16"}},
                  keras.DTypePolicy("float64")):
        theirs = real.dtype_policies.get(real.DTypePolicy("float64") if isinstance(ident, keras.DTypePolicy)
                                         else ident)
        assert keras.dtype_policies.get(ident).name == theirs.name
    with pytest.raises(ValueError, match="Cannot interpret"):
        keras.dtype_policies.get(3)
    with pytest.raises(ValueError, match="mixed precision DTypePolicy"):
        keras.DTypePolicy("int7")
    with pytest.raises(ValueError):
        keras.dtype_policies.deserialize({"class_name": "QuantizedDTypePolicy", "config": {"name": "int8"}})


def test_global_policy_round_trip():
    try:
        keras.mixed_precision.set_global_policy("mixed_float16")
        assert keras.mixed_precision.global_policy() == keras.config.dtype_policy() == keras.DTypePolicy("mixed_float16")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert keras.mixed_precision.global_policy().name == "float32"


# ----------------------------------------------------------------------------- layers under a policy
CASES = {
    "dense": (lambda L: L.Dense(4), (2, 3)),
    "dense_relu": (lambda L: L.Dense(4, activation="relu"), (2, 3)),
    "conv2d": (lambda L: L.Conv2D(3, 3), (1, 6, 6, 2)),
    "conv1d": (lambda L: L.Conv1D(3, 3), (2, 7, 4)),
    "depthwise": (lambda L: L.DepthwiseConv2D(3), (1, 6, 6, 2)),
    "transposed": (lambda L: L.Conv2DTranspose(2, 3, strides=2), (1, 4, 4, 3)),
    "lstm": (lambda L: L.LSTM(3), (2, 5, 4)),
    "gru": (lambda L: L.GRU(3, return_sequences=True), (2, 5, 4)),
    "simple_rnn": (lambda L: L.SimpleRNN(3), (2, 5, 4)),
    "batch_norm": (lambda L: L.BatchNormalization(), (4, 3)),
    "layer_norm": (lambda L: L.LayerNormalization(), (2, 4)),
    "max_pool": (lambda L: L.MaxPooling2D(), (1, 4, 4, 2)),
    "global_avg_pool": (lambda L: L.GlobalAveragePooling2D(), (1, 4, 4, 2)),
    "softmax": (lambda L: L.Softmax(), (2, 3)),
    "float32_output": (lambda L: L.Activation("softmax", dtype="float32"), (2, 3)),
    "embedding": (lambda L: L.Embedding(10, 4), "ids"),
    "category_encoding": (lambda L: L.CategoryEncoding(4, output_mode="one_hot"), "ids"),
    "upsampling": (lambda L: L.UpSampling2D(), (1, 4, 4, 2)),
    "separable": (lambda L: L.SeparableConv2D(3, 3), (1, 6, 6, 2)),
    "group_norm": (lambda L: L.GroupNormalization(2), (2, 4, 4, 4)),
    "bidirectional": (lambda L: L.Bidirectional(L.LSTM(3)), (2, 5, 4)),
    "conv_lstm": (lambda L: L.ConvLSTM2D(2, 3), (1, 3, 5, 5, 2)),
    "prelu": (lambda L: L.PReLU(), (2, 3)),
    "rescaling": (lambda L: L.Rescaling(1 / 255.0), (2, 3)),
    "einsum_dense": (lambda L: L.EinsumDense("ab,bc->ac", output_shape=4, bias_axes="c"), (2, 3)),
    "attention": (lambda L: L.MultiHeadAttention(2, 4), "attention"),
}


def _describe(layer, shape, rng):
    if shape == "ids":
        y = layer(np.array([[1, 2, 3]]))
    elif shape == "attention":
        x = rng.standard_normal((2, 3, 8)).astype("float32")
        y = layer(x, x)
    else:
        y = layer(rng.standard_normal(shape).astype("float32"))
    return (_name(y.dtype), layer.dtype, layer.compute_dtype, layer.variable_dtype, layer.dtype_policy.name,
            sorted({_name(w.dtype) for w in layer.weights}))


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_dtypes_under_mixed_float16_equal_keras(case, mixed):
    make, shape = CASES[case]
    theirs = _describe(make(real.layers), shape, np.random.default_rng(0))
    ours = _describe(make(layers), shape, np.random.default_rng(0))
    assert ours == theirs


def test_a_mixed_layer_equals_its_float32_twin_to_float16_rounding_and_its_gradient_reaches_float32_weights():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((8, 16)).astype("float32")
    plain = layers.Dense(5, activation="tanh")
    half = layers.Dense(5, activation="tanh", dtype="mixed_float16")
    plain(x), half(x)
    half.set_weights(plain.get_weights())
    with lamina.GradientTape() as tape:
        y = half(x)
        loss = ops.sum(ops.cast(y, "float32") ** 2)
    g_half = tape.gradient(loss, half.trainable_weights)
    with lamina.GradientTape() as tape:
        y32 = plain(x)
        loss32 = ops.sum(y32 ** 2)
    g_plain = tape.gradient(loss32, plain.trainable_weights)
    assert y.dtype == np.float16 and y32.dtype == np.float32
    np.testing.assert_allclose(np.asarray(y, np.float32), np.asarray(y32), atol=2e-3, rtol=2e-3)
    for a, b in zip(g_half, g_plain):
        assert a.dtype == np.float32          # the variables stay float32, so do their gradients
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-2, atol=2e-2)


def test_the_policy_can_be_set_on_a_layer_as_in_keras():
    for k in (keras, real):
        fresh, built = k.layers.Dense(2), k.layers.Dense(2)
        built(np.ones((1, 3), "float32"))
        fresh.dtype_policy = built.dtype_policy = "mixed_float16"
        for layer in (fresh, built):
            y = layer(np.ones((1, 3), "float32"))
            assert (_name(y.dtype), layer.compute_dtype, layer.dtype, _name(layer.kernel.dtype)) == \
                   ("float16", "float16", "float32", "float32"), k


def test_bfloat16_policies_are_refused_with_a_reason():
    for dtype in ("bfloat16", "mixed_bfloat16", keras.DTypePolicy("mixed_bfloat16")):
        with pytest.raises(ValueError, match="bfloat16"):
            layers.Dense(2, dtype=dtype)


def test_a_layers_config_carries_its_policy():
    layer = layers.Dense(3, dtype="mixed_float16")
    assert layer.get_config()["dtype"] == {"module": "keras", "class_name": "DTypePolicy",
                                           "config": {"name": "mixed_float16"}, "registered_name": None}
    assert layers.Dense.from_config({**layer.get_config(), "dtype": "mixed_float16"}).compute_dtype == "float16"
    assert layers.Dense.from_config(layer.get_config()).dtype_policy.name == "mixed_float16"
    assert layers.Dense(3, dtype={"class_name": "DTypePolicy", "config": {"name": "mixed_float16"}}).compute_dtype \
        == "float16"


# ----------------------------------------------------------------------------- training and files
def test_compile_wraps_the_optimizer_in_loss_scaling_as_keras(mixed):
    def build(k):
        m = k.Sequential([k.Input((3,)), k.layers.Dense(4), k.layers.Dense(2, dtype="float32")])
        return m
    for auto in (True, False):
        ours, theirs = build(keras), build(real)
        ours.compile("adam", "mse", auto_scale_loss=auto)
        theirs.compile("adam", "mse", auto_scale_loss=auto)
        assert type(ours.optimizer).__name__ == type(theirs.optimizer).__name__
        assert ours.dtype_policy.name == theirs.dtype_policy.name == "mixed_float16"
    keras.mixed_precision.set_global_policy("float32")   # a model made under float32 keeps its optimizer
    plain = keras.Sequential([keras.Input((3,)), layers.Dense(2)])
    plain.compile("adam", "mse")
    assert type(plain.optimizer).__name__ == "Adam"


def test_a_mixed_model_learns_and_its_losses_are_float32(mixed):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 8)).astype("float32")
    y = (x[:, :2].sum(1) > 0).astype("int64")
    model = keras.Sequential([keras.Input((8,)), layers.Dense(32, activation="relu"), layers.Dense(2),
                              layers.Activation("softmax", dtype="float32")])
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"])
    assert isinstance(model.optimizer, keras.mixed_precision.LossScaleOptimizer)
    hist = model.fit(x, y, epochs=8, batch_size=32, verbose=0)
    assert hist.history["loss"][-1] < 0.5 * hist.history["loss"][0]
    assert hist.history["accuracy"][-1] > 0.9
    assert all(w.dtype == np.float32 for w in model.weights)
    loss = keras.losses.MeanSquaredError()(np.ones((2, 2), "float16"), np.zeros((2, 2), "float16"))
    assert loss.dtype == np.float32 and float(loss) == 1.0


def test_keras_files_with_a_mixed_policy_load_both_ways(tmp_path, mixed):
    x = np.random.default_rng(0).standard_normal((4, 6)).astype("float32")
    theirs = real.Sequential([real.Input((6,)), real.layers.Dense(8, activation="relu"),
                              real.layers.Dense(3, activation="softmax", dtype="float32")])
    theirs.save(tmp_path / "k.keras")
    ours = lamina.models.load_model(tmp_path / "k.keras")
    assert [layer.dtype_policy.name for layer in ours.layers] == ["mixed_float16", "float32"]
    np.testing.assert_allclose(np.asarray(ours.predict(x, verbose=0)),
                               np.asarray(theirs.predict(x, verbose=0)), atol=1e-3)
    ours.save(tmp_path / "l.keras")
    back = real.models.load_model(tmp_path / "l.keras")
    assert [layer.dtype_policy.name for layer in back.layers] == ["mixed_float16", "float32"]
    np.testing.assert_allclose(np.asarray(back.predict(x, verbose=0)), np.asarray(ours.predict(x, verbose=0)),
                               atol=1e-3)


# ----------------------------------------------------------------------------- lamina's float16 path
def test_float16_products_accumulate_in_float32_and_round_once():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((64, 300)).astype(np.float16)
    b = rng.standard_normal((300, 40)).astype(np.float16)
    want = (a.astype(np.float32) @ b.astype(np.float32)).astype(np.float16)
    got = ops.matmul(a, b)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(np.asarray(got), want)
    x = rng.standard_normal((2, 9, 9, 3)).astype(np.float16)
    w = rng.standard_normal((3, 3, 3, 4)).astype(np.float16)
    ref = ops.conv(x.astype(np.float32), w.astype(np.float32))
    out = ops.conv(x, w)
    assert out.dtype == np.float16
    np.testing.assert_array_equal(np.asarray(out), np.asarray(ref).astype(np.float16))


def test_float16_gradients_flow_through_float32_products():
    rng = np.random.default_rng(3)
    a = lamina.Variable(rng.standard_normal((5, 7)), dtype="float16")
    b = lamina.Variable(rng.standard_normal((7, 3)), dtype="float16")
    with lamina.GradientTape() as tape:
        loss = ops.sum(ops.cast(ops.matmul(a, b), "float32"))
    ga, gb = tape.gradient(loss, [a, b])
    assert ga.dtype == gb.dtype == np.float16
    ones = np.ones((5, 3), np.float32)
    np.testing.assert_array_equal(np.asarray(ga), (ones @ np.asarray(b, np.float32).T).astype(np.float16))
    np.testing.assert_array_equal(np.asarray(gb), (np.asarray(a, np.float32).T @ ones).astype(np.float16))


def test_device_scope_sets_and_restores_the_device():
    assert keras.backend.get_device() == "cpu"
    with keras.device("cpu:0"):
        assert keras.backend.get_device() == "cpu"
    with pytest.raises(ValueError, match="Unknown device"):
        with keras.device("tpu:0"):
            pass
    assert keras.backend.get_device() == "cpu"


def _half(rng, *shape):
    return lamina.Variable(rng.standard_normal(shape) * 0.3, dtype="float16")


def _conv_case(rng):
    x, w = _half(rng, 2, 5, 5, 3), _half(rng, 3, 3, 3, 4)
    return ops.conv(x, w), [x, w]


def _lstm_case(rng):
    x, k, r = _half(rng, 2, 6, 3), _half(rng, 3, 8), _half(rng, 2, 8)
    return ops.lstm(x, k, r, None)[1], [x, k, r]


@pytest.mark.parametrize("case", [_conv_case, _lstm_case], ids=["conv", "lstm"])
def test_float16_ops_compute_on_float32_arrays(case, monkeypatch):
    """NumPy's float16 products have no BLAS (~200x slower): the op's own code sees float32 arrays, its
    outputs and gradients are float16."""
    from lamina.tensor import Op
    seen = []
    apply = Op.apply.__func__

    def spy(cls, *inputs, **params):
        forward = cls.forward

        def recording(self, *arrays):
            seen.append((cls.__name__, [a.dtype for a in arrays if a is not None]))
            return forward(self, *arrays)
        if cls.half_via_float32:
            monkeypatch.setattr(cls, "forward", recording)
        return apply(cls, *inputs, **params)
    monkeypatch.setattr(Op, "apply", classmethod(spy))
    with lamina.GradientTape() as tape:
        out, variables = case(np.random.default_rng(4))
        loss = ops.sum(ops.cast(out, "float32"))
    grads = tape.gradient(loss, variables)
    assert out.dtype == np.float16 and all(g.dtype == np.float16 for g in grads)
    assert seen and all(d == np.float32 for _, dtypes in seen for d in dtypes if d.kind == "f"), seen


def test_the_autocast_scope_belongs_to_the_thread_that_entered_it():
    """A mixed layer's call() casts weights in its own thread only (Keras keeps the scope per thread): a
    float32 layer used meanwhile from another thread (a data pipeline's) reads its float32 weights as they are."""
    import threading
    plain = layers.Dense(2)
    plain(np.ones((1, 3), "float32"))
    seen = []

    class Probe(layers.Layer):
        def call(self, x):
            worker = threading.Thread(target=lambda: seen.append(ops.matmul(np.ones((1, 3), "float32"),
                                                                            plain.kernel).dtype))
            worker.start()
            worker.join()
            seen.append(ops.matmul(ops.cast(np.ones((1, 3)), "float16"), plain.kernel).dtype)
            return x
    Probe(dtype="mixed_float16")(np.ones((1, 3), "float32"))
    assert seen == [np.float32, np.float16]



def test_mixed_training_steps_follow_keras(mixed):
    """Five SGD steps of a mixed_float16 model from the same weights: Keras's losses and weights, to float16
    rounding (Keras on torch rounds some float16 intermediates in other places)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 6)).astype("float32")
    y = rng.integers(0, 3, 32)

    def build(k):
        m = k.Sequential([k.Input((6,)), k.layers.Dense(16, activation="relu"), k.layers.Dense(3),
                          k.layers.Activation("softmax", dtype="float32")])
        m.compile(k.optimizers.SGD(0.1, momentum=0.9), "sparse_categorical_crossentropy")
        return m
    theirs, ours = build(real), build(keras)
    ours.set_weights([np.asarray(w) for w in theirs.get_weights()])
    for _ in range(5):
        np.testing.assert_allclose(ours.train_on_batch(x, y), theirs.train_on_batch(x, y), rtol=1e-4)
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-4)
    assert ours.optimizer.dynamic_scale == float(np.asarray(theirs.optimizer.dynamic_scale))
