"""Patterns met running held-out keras.io programs of the third round (guides, keras_recipes, structured
data; docs/keras_programs.md), each written here as our own small code and checked against real Keras
(KERAS_BACKEND=torch) where Keras runs here."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")

import lamina
from lamina import layers

from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")


def test_deprecated_output_mode_binary_is_multi_hot_like_keras():
    """structured data from scratch: IntegerLookup / StringLookup(output_mode="binary"), Keras 2's name for
    multi_hot, which Keras 3 still accepts (and CategoryEncoding too); 'tf-idf' likewise for 'tf_idf'."""
    ids = np.array([[0, 2], [3, 3]])
    ours = layers.CategoryEncoding(num_tokens=4, output_mode="binary")
    ref = keras.layers.CategoryEncoding(num_tokens=4, output_mode="binary")
    assert ours.get_config()["output_mode"] == ref.get_config()["output_mode"] == "multi_hot"
    np.testing.assert_array_equal(np.asarray(ours(ids)), np.asarray(ref(ids)))

    # Keras 3.15's lookups need TensorFlow (absent here), so they are checked against their multi_hot twin.
    words = np.array(["b", "c", "a", "b"])
    for cls, vocab, x in ((layers.StringLookup, ["a", "b", "c"], words),
                          (layers.IntegerLookup, [7, 3, 5], np.array([3, 5, 7, 3]))):
        old = cls(vocabulary=vocab, mask_token=None, num_oov_indices=0, output_mode="binary")
        new = cls(vocabulary=vocab, mask_token=None, num_oov_indices=0, output_mode="multi_hot")
        assert old.get_config()["output_mode"] == "multi_hot"
        np.testing.assert_array_equal(np.asarray(old(x)), np.asarray(new(x)))
    tfidf = layers.StringLookup(vocabulary=["a", "b"], idf_weights=[0.5, 2.0], output_mode="tf-idf")
    assert tfidf.output_mode == "tf_idf"
    with pytest.raises(ValueError, match="output_mode"):
        layers.StringLookup(vocabulary=["a"], output_mode="binaryy")
    with pytest.raises(ValueError, match="output_mode"):
        layers.Discretization(bin_boundaries=[0.0], output_mode="binary")   # not an alias there in Keras


def _mixture_nll(lib, k):
    ops = lib.ops

    def mixture_nll(y_true, y_pred):          # (N,) targets against (N, 3k) outputs: the loss splits them
        y = ops.reshape(y_true, (-1, 1))
        mu, log_sig, logits = y_pred[:, :k], y_pred[:, k:2 * k], y_pred[:, 2 * k:]
        z = (y - mu) / ops.exp(log_sig)
        comp = -0.5 * z * z - log_sig + ops.log_softmax(logits, axis=-1)
        return -ops.logsumexp(comp, axis=-1)
    return mixture_nll


def test_a_user_loss_gets_targets_and_outputs_of_different_widths_like_keras():
    """mixture density recipe: compile(loss=fn) where fn reshapes (N,) targets against (N, 3k) outputs.
    lamina's own target/output check refused it; Keras hands a user's loss the arrays as they are."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2)).astype("float32")
    y = rng.normal(size=(64,)).astype("float32")
    k = 3
    results = []
    for lib in (lamina, keras):
        model = lib.Sequential([lib.Input((2,)), lib.layers.Dense(3 * k)])
        w = [rng.normal(size=(2, 3 * k)).astype("float32") * 0.1, np.zeros(3 * k, "float32")] if not results \
            else results[0][1]
        model.set_weights(w)
        model.compile(optimizer=lib.optimizers.SGD(0.1), loss=_mixture_nll(lib, k))
        hist = model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0).history["loss"]
        results.append((hist, w, model.evaluate(x, y, verbose=0)))

    class Nll(lamina.losses.Loss):                # a user's Loss subclass is not checked either
        def call(self, y_true, y_pred):
            return _mixture_nll(lamina, k)(y_true, y_pred)
    model = lamina.Sequential([lamina.Input((2,)), lamina.layers.Dense(3 * k)])
    model.set_weights(results[0][1])
    model.compile(optimizer=lamina.optimizers.SGD(0.1), loss=Nll())
    results.append((model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0).history["loss"],))

    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5)
    np.testing.assert_allclose(results[0][2], results[1][2], rtol=1e-5)
    np.testing.assert_allclose(results[2][0], results[1][0], rtol=1e-5)
    # lamina's own losses still say what is wrong
    model = lamina.Sequential([lamina.Input((2,)), lamina.layers.Dense(3 * k)])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="do not match"):
        model.fit(x, y, epochs=1, verbose=0)


def _named_models(lib):
    class ImageClassifier(lib.Model):          # functional subclassing: the graph is built in __init__
        def __init__(self, **kwargs):
            inputs = lib.Input((4,))
            super().__init__(inputs=inputs, outputs=lib.layers.Dense(2)(inputs), **kwargs)

    class TwoDense(lib.Sequential):
        pass

    lib.backend.clear_session()
    x = lib.Input((4,))
    return [ImageClassifier().name, ImageClassifier().name, lib.Model(x, lib.layers.Dense(1)(x)).name,
            TwoDense([lib.layers.Dense(2)]).name, lib.Sequential().name, ImageClassifier(name="mine").name]


def test_a_functional_subclass_is_named_after_its_class_like_keras():
    """packaging recipe: class MnistModel(keras.Model) whose __init__ calls super().__init__(inputs, outputs)
    is 'mnist_model' in Keras's summary; lamina called it 'functional_1' (and numbered the next plain
    functional model after it)."""
    assert _named_models(lamina) == _named_models(keras) == [
        "image_classifier", "image_classifier_1", "functional", "two_dense", "sequential", "mine"]


def _scaled_dense(lib):
    class ScaledDense(lib.layers.Dense):       # a weight made by hand, not by add_weight
        def __init__(self, units, **kwargs):
            super().__init__(units, **kwargs)
            self.scale = lib.Variable(np.full((units,), 0.5, "float32"), name="scale")

        def call(self, inputs):
            return super().call(inputs) * self.scale
    return ScaledDense


def test_a_variable_set_as_a_layer_attribute_is_a_weight_like_keras():
    """customizing-saving guide: self.stored_variables = Variable(...) in a Dense subclass's __init__ is one
    of the layer's weights in Keras (listed first, trained, counted); lamina ignored it."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 3)).astype("float32")
    y = rng.normal(size=(16, 2)).astype("float32")
    out = []
    for lib in (lamina, keras):
        layer = _scaled_dense(lib)(2)
        model = lib.Sequential([lib.Input((3,)), layer])
        model.set_weights([np.full((2,), 0.5, "float32"), np.eye(3, 2, dtype="float32"), np.zeros(2, "float32")])
        model.compile(optimizer=lib.optimizers.SGD(0.1), loss="mse")
        model.fit(x, y, batch_size=16, epochs=2, verbose=0)
        out.append(([w.name for w in layer.weights], [w.name for w in layer.trainable_weights],
                    model.count_params(), [np.asarray(w) for w in model.get_weights()]))
    assert out[0][:3] == out[1][:3] == (["scale", "kernel", "bias"], ["scale", "kernel", "bias"], 10)
    for a, b in zip(out[0][3], out[1][3]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    frozen = lamina.Variable(np.zeros(2, "float32"), trainable=False)
    layer = _scaled_dense(lamina)(2)
    layer.offset = frozen                        # a non-trainable one goes with the non-trainable weights
    assert layer.non_trainable_weights == [frozen] and len(layer.weights) == 2


def test_convert_to_tensor_keeps_strings_for_string_inputs():
    """FeatureSpace advanced example: inference on {name: keras.ops.convert_to_tensor([value])} where some
    values are strings. Keras (TF backend, as the example sets) makes string tensors; lamina raised
    TypeError "data type 'string' not understood". Keras's torch backend has no strings (it raises), so the
    reference here is the dtype Keras names for str, and the same model fed NumPy string arrays."""
    assert lamina.dtypes.result_type(str) == keras.backend.standardize_dtype(str) == "string"
    t = lamina.ops.convert_to_tensor(["blue-collar", "admin."])
    assert np.asarray(t).tolist() == ["blue-collar", "admin."]
    assert np.asarray(lamina.ops.convert_to_tensor("x")).tolist() == "x"
    assert np.asarray(lamina.ops.convert_to_tensor(np.array(["ab"]), dtype="string")).tolist() == ["ab"]

    job = lamina.Input((1,), dtype="string", name="job")
    ids = layers.StringLookup(vocabulary=["admin.", "blue-collar"], output_mode="one_hot")(job)
    model = lamina.Model({"job": job}, layers.Dense(1, kernel_initializer="ones")(ids))
    from_ops = model.predict({"job": lamina.ops.convert_to_tensor([["blue-collar"]])}, verbose=0)
    from_numpy = model.predict({"job": np.array([["blue-collar"]])}, verbose=0)
    np.testing.assert_array_equal(from_ops, from_numpy)
    # bytes are strings too (TensorFlow's string tensors hold bytes); a number is no string
    assert np.asarray(lamina.ops.convert_to_tensor([b"raw bytes"])).tolist() == [b"raw bytes"]
    with pytest.raises(ValueError, match="str or bytes"):
        lamina.ops.convert_to_tensor([1.5], dtype="string")


def _forest(lib):
    class Forest(lib.Model):                   # sub-layers added to a list and a dict after assignment
        def __init__(self):
            super().__init__()
            self.trees = []
            for _ in range(3):
                self.trees.append(lib.layers.Dense(2))
            self.heads = {}
            self.heads["extra"] = lib.layers.Dense(2)

        def call(self, x):
            out = self.heads["extra"](x)
            for tree in self.trees:
                out = out + tree(x)
            return out
    return Forest


def test_layers_added_to_a_list_or_dict_attribute_later_are_tracked_like_keras():
    """neural decision forest example: self.ensemble = [] then self.ensemble.append(NeuralDecisionTree(...)).
    lamina tracked a list only when assigned full of layers, so the trees' weights were neither trained nor
    counted (2,132 parameters instead of the forest's); Keras tracks the list and dicts as they change."""
    x = np.random.default_rng(2).normal(size=(8, 4)).astype("float32")
    y = np.zeros((8, 2), "float32")
    out = []
    for lib in (lamina, keras):
        model = _forest(lib)()
        model(x)
        model.compile(optimizer=lib.optimizers.SGD(0.1), loss="mse")
        before = [np.asarray(w).copy() for w in model.trainable_weights]
        model.fit(x, y, epochs=1, batch_size=8, verbose=0)
        moved = [not np.allclose(a, np.asarray(w)) for a, w in zip(before, model.trainable_weights)]
        out.append((len(model.layers), len(model.trainable_weights), model.count_params(), all(moved), model))
    assert out[0][:4] == out[1][:4] == (4, 8, 40, True)
    ours = out[0][4]
    assert isinstance(ours.trees, list) and isinstance(ours.heads, dict)   # still a list and a dict to the user
    assert ours.trees[0] is ours.layers[0] and ours.heads["extra"] is ours.layers[3]
    import copy
    twin = copy.deepcopy(ours)                 # the tracking containers survive a deep copy
    twin.trees.append(lamina.layers.Dense(2))
    assert len(twin.layers) == 5 and len(ours.layers) == 4 and twin.trees[0] is twin.layers[0]


def _variables_in_containers(lib):
    class Scaled(lib.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.scales = [lib.Variable(np.full((3,), 2.0, "float32"), name="s0"),
                           lib.Variable(np.zeros((3,), "float32"), trainable=False, name="count")]
            self.shifts = {"b": lib.Variable(np.zeros((3,), "float32"), name="b")}
            self.pair = (lib.Variable(np.ones((3,), "float32"), name="p"),)

        def call(self, x):
            return x * self.scales[0] * self.pair[0] + self.shifts["b"] + self.scales[1]
    return Scaled


@pytest.mark.filterwarnings("ignore:Gradients do not exist")   # the late variable is not used by call()
def test_variables_in_list_tuple_and_dict_attributes_are_weights_like_keras(tmp_path):
    """Keras tracks Variables put in a layer's lists, tuples and dicts (and added to them later) as the layer's
    weights; lamina tracked only a Variable assigned to an attribute by itself, so these were neither trained,
    counted nor saved."""
    x = np.random.default_rng(3).normal(size=(8, 3)).astype("float32")
    y = np.ones((8, 3), "float32")
    out = []
    for lib in (lamina, keras):
        layer = _variables_in_containers(lib)()
        layer.scales.append(lib.Variable(np.ones((2,), "float32"), name="late"))   # added after construction
        shapes = [(tuple(w.shape), w.trainable) for w in layer.weights]
        model = lib.Sequential([lib.Input((3,)), layer])
        model.compile(optimizer=lib.optimizers.SGD(0.1), loss="mse")
        model.fit(x, y, epochs=1, batch_size=8, verbose=0)
        out.append((shapes, model.count_params(), [np.asarray(w).copy() for w in layer.weights]))
    assert out[0][0] == out[1][0] and len(out[0][0]) == 5
    assert out[0][1] == out[1][1] == 14
    for ours, theirs in zip(out[0][2], out[1][2]):            # trained the same (one SGD step from the same start)
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
    assert not np.allclose(out[0][2][0], 2.0)                 # and the list's first scale did move
    path = tmp_path / "m.weights.h5"
    model.save_weights(path)                                   # Keras's file, read back into lamina's twin
    twin = lamina.Sequential([lamina.Input((3,)), _variables_in_containers(lamina)()])
    twin.layers[0].scales.append(lamina.Variable(np.ones((2,), "float32"), name="late"))
    twin.load_weights(path)
    for ours, theirs in zip(twin.layers[0].weights, out[1][2]):
        np.testing.assert_array_equal(np.asarray(ours), theirs)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "SimpleRNN"])
def test_stateful_recurrent_states_are_not_weights_like_keras(kind):
    """A stateful RNN keeps its states in a list of Variables; Keras makes them outside its attribute tracking,
    so they are neither counted nor saved, and lamina (which now tracks Variables in lists) must do the same."""
    x = np.ones((2, 5, 3), "float32")
    paths = []
    for lib in (lamina, keras):
        # named: an unnamed layer's name counts the layers of its kind made before it in the process, which
        # differs between the two libraries with the tests that ran first
        model = lib.Sequential([lib.Input((5, 3), batch_size=2), getattr(lib.layers, kind)(4, stateful=True,
                                                                                          name="rnn")])
        model(x)
        assert len(model.layers[0].states) >= 1
        paths.append([w.path.split("/", 1)[1] for w in model.weights])   # (the models' own names differ)
    assert paths[0] == paths[1] and not any("state" in p for p in paths[0])


def test_private_containers_filled_by_user_code_are_tracked_like_keras():
    """self._blocks = [] then self._blocks.append(Dense(...)) in a user's layer: Keras tracks '_'-named containers
    too; lamina tracked only public ones, so these layers were neither trained nor counted (lamina's own
    '_'-named containers, set by its own code, stay plain)."""
    x = np.random.default_rng(4).normal(size=(8, 3)).astype("float32")
    out = []
    for lib in (lamina, keras):
        class Stack(lib.layers.Layer):
            def __init__(self):
                super().__init__()
                self._blocks = []
                for _ in range(2):
                    self._blocks.append(lib.layers.Dense(3))
                self._scales = {"s": lib.Variable(np.ones(3, "float32"))}

            def call(self, h):
                for block in self._blocks:
                    h = block(h)
                return h * self._scales["s"]
        model = lib.Sequential([lib.Input((3,)), Stack()])
        model.compile(optimizer=lib.optimizers.SGD(0.1), loss="mse")
        before = [np.asarray(w).copy() for w in model.trainable_weights]
        model.fit(x, np.ones((8, 3), "float32"), epochs=1, batch_size=8, verbose=0)
        moved = all(not np.allclose(a, np.asarray(w)) for a, w in zip(before, model.trainable_weights))
        out.append((len(model.trainable_weights), model.count_params(), moved))
    assert out[0] == out[1] == (5, 27, True)
    assert type(lamina.layers.Dense(2).__dict__["_own_weights"]) is list   # lamina's own stay plain lists
