"""Patterns met running held-out keras.io programs of the third round (vision, generative, nlp;
docs/keras_programs.md), each written here as our own small code and checked against real Keras
(KERAS_BACKEND=torch) where Keras runs here."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")

import lamina
from lamina import layers, ops

from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")


def _np(t):
    return np.asarray(t) if isinstance(t, (lamina.Tensor, np.ndarray)) else keras.ops.convert_to_numpy(t)


@pytest.mark.parametrize("make", [
    lambda lib: lib.layers.Dense(3, activation="softmax"),
    lambda lib: lib.layers.Conv2D(3, 2, activation="relu"),
    lambda lib: lib.layers.Conv1D(3, 2, activation="sigmoid"),
    lambda lib: lib.layers.SeparableConv2D(3, 2, activation="relu"),
    lambda lib: lib.layers.DepthwiseConv2D(2, activation="relu"),
    lambda lib: lib.layers.Conv2DTranspose(3, 2, activation="tanh"),
    lambda lib: lib.layers.EinsumDense("ab,bc->ac", output_shape=3, activation="relu"),
])
def test_setting_a_layers_activation_to_none_gives_its_linear_output_like_keras(make):
    """grad_cam: `model.layers[-1].activation = None` drops the classifier's softmax before the call."""
    rng = np.random.default_rng(0)
    ours, theirs = make(lamina), make(keras)
    shape = {"Dense": (2, 4), "EinsumDense": (2, 4), "Conv1D": (2, 5, 4)}.get(type(ours).__name__, (2, 5, 5, 4))
    x = rng.standard_normal(shape).astype("float32")
    ours(x), theirs(x)
    ours.set_weights([_np(w) for w in theirs.get_weights()])
    ours.activation = None
    theirs.activation = None
    got, want = _np(ours(x)), _np(theirs(x))
    assert (got < 0).any()                     # no relu, softmax, sigmoid or tanh left
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_a_model_whose_last_activation_is_removed_predicts_logits():
    """The same through a functional model's predict, as in the Grad-CAM program."""
    inp = lamina.Input((4,))
    model = lamina.Model(inp, layers.Dense(3, activation="softmax")(layers.Dense(5)(inp)))
    x = np.random.default_rng(1).standard_normal((6, 4)).astype("float32")
    probs = model.predict(x, verbose=0)
    model.layers[-1].activation = None
    logits = model.predict(x, verbose=0)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    np.testing.assert_allclose(e / e.sum(-1, keepdims=True), probs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("module", ["resnet50", "vgg16", "xception", "densenet"])
def test_preprocess_input_on_a_models_input_is_part_of_the_model_like_keras(module):
    """deeplabv3_plus: `preprocess_input(keras.Input(...))` feeds an application built with input_tensor=; on a
    symbolic tensor (and on a Tensor) preprocessing is made of ops, as Keras's, and gives the same values."""
    x = np.random.default_rng(2).uniform(0, 255, (2, 4, 4, 3)).astype("float32")

    def build(lib):
        inp = lib.Input((4, 4, 3))
        out = getattr(lib.applications, module).preprocess_input(inp)
        return lib.Model(inp, lib.layers.Activation("linear")(out))
    got = np.asarray(build(lamina).predict(x, verbose=0))
    want = build(keras).predict(x, verbose=0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)
    eager = getattr(lamina.applications, module).preprocess_input(ops.convert_to_tensor(x))
    assert isinstance(eager, lamina.Tensor)
    np.testing.assert_allclose(np.asarray(eager), want, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(getattr(lamina.applications, module).preprocess_input(x.copy()), want,
                               rtol=1e-5, atol=1e-4)


def test_a_resnet_built_on_a_preprocessed_input_tensor_trains():
    """The DeepLabV3+ pattern in small: ResNet50(input_tensor=preprocess_input(Input)), an inner layer's output
    and a fit step; the preprocessing is part of the graph (no weights, gradients flow through it)."""
    inp = lamina.Input((32, 32, 3))
    base = lamina.applications.ResNet50(weights=None, include_top=False,
                                        input_tensor=lamina.applications.resnet50.preprocess_input(inp))
    feat = base.get_layer("conv2_block1_out").output
    model = lamina.Model(inp, layers.Dense(2)(layers.GlobalAveragePooling2D()(feat)))
    model.compile("sgd", "mse")
    h = model.fit(np.full((2, 32, 32, 3), 120.0, "float32"), np.zeros((2, 2), "float32"), epochs=1, verbose=0)
    assert np.isfinite(h.history["loss"][0])
    assert len(base.inputs) == 1 and base.inputs[0] is inp


def test_convert_to_tensor_of_strings_feeds_a_string_input_model():
    """pretrained_word_embeddings: `end_to_end_model(keras.ops.convert_to_tensor([["some text"]]))` on a model
    with `Input(shape=(1,), dtype="string")`. lamina holds strings as Keras's TensorFlow backend does (its text
    models take them); Keras's torch backend has no string tensors and refuses with a ValueError."""
    with pytest.raises(ValueError, match="string"):
        keras.ops.convert_to_tensor([["a b"]])
    vec = layers.TextVectorization(output_sequence_length=4)
    vec.adapt(["the cat sat", "the dog ran"])
    inp = lamina.Input((1,), dtype="string")
    model = lamina.Model(inp, vec(inp))
    t = ops.convert_to_tensor([["the dog sat"]])
    assert isinstance(t, lamina.Tensor) and t.shape == (1, 1)
    np.testing.assert_array_equal(np.asarray(model(t)), np.asarray(model(np.array([["the dog sat"]]))))
    for text in ("one", ["a", "b"], np.array(["x", "y"]), [b"raw", b"bytes"]):
        assert ops.convert_to_tensor(text).shape == np.shape(text)
    np.testing.assert_array_equal(np.asarray(ops.convert_to_tensor(["a"], dtype="string")), np.array(["a"], object))
    with pytest.raises(ValueError, match="expects str or bytes"):
        ops.convert_to_tensor([1.0, 2.0], dtype="string")
    np.testing.assert_array_equal(np.asarray(ops.convert_to_tensor([1, 2])), [1, 2])   # numbers unchanged


def _codebook_layer(lib):
    class Codebook(lib.layers.Layer):          # variables made by hand in __init__, not by add_weight
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.codes = lib.Variable(np.linspace(-1, 1, 12).reshape(3, 4).astype("float32"), name="codes")
            self.scale = lib.Variable(np.float32(2.0), trainable=False, name="scale")

        def call(self, x):
            return lib.ops.matmul(x, self.codes) * self.scale
    return Codebook


def test_a_variable_assigned_in_a_layers_init_is_a_weight_like_keras():
    """vq_vae: `self.embeddings = tf.Variable(...)` in a layer's __init__ is a trainable weight of the layer and of
    every model holding it (counted by summary, trained by fit)."""
    def build(lib):
        inp = lib.Input((3,))
        return lib.Model(inp, lib.layers.Dense(2)(_codebook_layer(lib)(name="cb")(inp)))
    ours, theirs = build(lamina), build(keras)
    for attr in ("trainable_weights", "non_trainable_weights", "weights"):
        assert [tuple(w.shape) for w in getattr(ours, attr)] == [tuple(w.shape) for w in getattr(theirs, attr)]
    assert [w.name for w in ours.get_layer("cb").weights] == [w.name for w in theirs.get_layer("cb").weights]
    assert ours.count_params() == theirs.count_params() == 12 + 1 + 10
    ours.set_weights([_np(w) for w in theirs.get_weights()])
    x = np.random.default_rng(3).standard_normal((8, 3)).astype("float32")
    y = np.random.default_rng(4).standard_normal((8, 2)).astype("float32")
    for m in (ours, theirs):
        m.compile(optimizer="sgd", loss="mse")
    ours.fit(x, y, batch_size=8, epochs=1, verbose=0)
    theirs.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    for g, w in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(g, _np(w), rtol=1e-5, atol=1e-6)
    assert not np.allclose(ours.get_layer("cb").get_weights()[0], np.linspace(-1, 1, 12).reshape(3, 4))


def _model_with_build(lib):
    class WithBuild(lib.Model):                # sub-layers and a weight made in build(), not __init__
        def build(self, input_shape):
            self.offset = self.add_weight(shape=(input_shape[-1],), initializer="ones", name="offset")
            self.hidden = lib.layers.Dense(4, activation="relu")
            self.out = lib.layers.Dense(2)
            super().build(input_shape)

        def call(self, x):
            return self.out(self.hidden(x + self.offset))
    return WithBuild


def test_a_subclassed_models_own_build_runs_before_its_first_call_like_keras():
    """perceiver: a keras.Model subclass makes its sub-layers in build(input_shape) and calls super().build();
    fit must run that build before call() (lamina skipped it: 'object has no attribute')."""
    x = np.random.default_rng(5).standard_normal((6, 3)).astype("float32")
    y = np.random.default_rng(6).standard_normal((6, 2)).astype("float32")
    ours, theirs = _model_with_build(lamina)(), _model_with_build(keras)()
    theirs(x)
    ours(x)
    assert [tuple(w.shape) for w in ours.weights] == [tuple(w.shape) for w in theirs.weights]
    ours.set_weights([_np(w) for w in theirs.get_weights()])
    np.testing.assert_allclose(np.asarray(ours(x)), _np(theirs(x)), rtol=1e-5, atol=1e-6)
    fresh = _model_with_build(lamina)()        # first touched by fit, as in the program
    fresh.compile("adam", "mse")
    h = fresh.fit(x, y, epochs=2, batch_size=3, verbose=0)
    assert len(fresh.trainable_weights) == 5 and np.isfinite(h.history["loss"]).all()


def test_a_built_add_layer_broadcasts_a_batch_of_one_like_keras():
    """perceiver: a latent array of batch 1 (`expand_dims(weight, 0)`) meets a data batch in the Add of a functional
    model built on Input shapes; Keras checks batch sizes when the layer is built and broadcasts later calls."""
    def build(lib):
        a, b = lib.Input((3, 2)), lib.Input((3, 2))
        return lib.Model([a, b], lib.layers.Add()([a, lib.layers.Multiply()([a, b])]))
    big = np.random.default_rng(7).standard_normal((4, 3, 2)).astype("float32")
    one = np.random.default_rng(8).standard_normal((1, 3, 2)).astype("float32")
    for args in ([big, one], [one, big]):
        np.testing.assert_allclose(np.asarray(build(lamina)(args)), _np(build(keras)(args)), rtol=1e-6)
    with pytest.raises(ValueError, match="batch"):             # an unbuilt layer checks, as Keras's build does
        layers.Add()([big, one])
    with pytest.raises(ValueError):
        build(lamina)([big, big[:, :2]])                       # other axes still must agree


@pytest.mark.parametrize("initializer", ["zeros", "ones", lambda lib: lib.initializers.Constant(3.0),
                                         lambda lib: np.arange(6, dtype="float32").reshape(2, 3)])
def test_variable_takes_keras_initializer_and_shape_keywords(initializer):
    """vq_vae in Keras 3's form: `keras.Variable(initializer=..., shape=..., trainable=..., name=...)` (Keras 3 has
    no tf.Variable(initial_value=...)); the initializer a name, an Initializer or an array."""
    def make(lib):
        init = initializer(lib) if callable(initializer) else initializer
        return lib.Variable(initializer=init, shape=(2, 3), trainable=False, name="codebook")
    ours, theirs = make(lamina), make(keras)
    np.testing.assert_array_equal(np.asarray(ours), _np(theirs))
    assert ours.shape == tuple(theirs.shape) and ours.trainable is theirs.trainable is False
    assert ours.name == theirs.name == "codebook"
    assert np.dtype(ours.dtype) == np.dtype(keras.backend.standardize_dtype(theirs.dtype))
    with pytest.raises(ValueError, match="shape"):
        lamina.Variable(initializer="zeros")
