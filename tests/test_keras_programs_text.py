"""Patterns met running held-out keras.io programs of the second round (nlp, time series, structured data,
recipes, guides; docs/keras_programs.md), each written here as our own small code and checked against real
Keras (KERAS_BACKEND=torch) where Keras runs here."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")

import lamina
from lamina import layers, ops

from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")


def _halves(lib):
    class Halves(lib.layers.Layer):           # two outputs along time, each with its half of the mask
        def call(self, x):
            return lib.ops.split(x, 2, axis=1)

        def compute_mask(self, x, mask=None):
            return None if mask is None else lib.ops.split(mask, 2, axis=1)
    return Halves


def _masked_mean(lib):
    class MaskedMean(lib.layers.Layer):       # a mask consumer: mean over the unmasked steps
        def call(self, x, mask=None):
            assert mask is not None
            w = lib.ops.expand_dims(lib.ops.cast(mask, "float32"), -1)
            return lib.ops.sum(x * w, axis=1) / (lib.ops.sum(w, axis=1) + 1e-3)
    return MaskedMean


SEQ = np.array([[4, 1, 0, 0, 0, 0], [2, 3, 5, 7, 0, 0]], np.int32)


def test_a_layer_with_several_outputs_gives_each_its_mask_like_keras():
    """masking guide: TemporalSplit returns ops.split of x and compute_mask ops.split of the mask."""
    x = np.stack([SEQ, SEQ * 2], -1).astype("float32")
    got = [np.asarray(t._keras_mask) for t in _halves(lamina)()(layers.Masking()(x))]
    want = [np.asarray(t._keras_mask) for t in _halves(keras)()(keras.layers.Masking()(x))]
    assert len(got) == len(want) == 2
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_a_mask_reaches_a_mask_consumer_while_a_functional_model_is_built_like_keras():
    """masking guide: a custom call(inputs, mask=None) that asserts a mask, in a functional model; the
    symbolic output of a mask-passing layer has a bool symbolic mask."""
    def build(lib):
        inp = lib.Input((6,), dtype="int32")
        emb = lib.layers.Embedding(10, 3, mask_zero=True)
        x = emb(inp)
        a, b = _halves(lib)()(x)
        out = lib.layers.Concatenate()([_masked_mean(lib)()(a), _masked_mean(lib)()(b)])
        return lib.Model(inp, out), emb, x, a
    ours, emb, x, a = build(lamina)
    theirs, kemb, kx, ka = build(keras)
    for sym, ksym in ((x, kx), (a, ka)):
        assert sym._keras_mask is not None and ksym._keras_mask is not None
        assert tuple(sym._keras_mask.shape) == tuple(ksym._keras_mask.shape)
        assert str(sym._keras_mask.dtype) == str(ksym._keras_mask.dtype) == "bool"
    emb.set_weights([np.asarray(kemb.get_weights()[0])])
    np.testing.assert_allclose(np.asarray(ours(SEQ)), theirs(SEQ).detach().numpy(), rtol=1e-5, atol=1e-6)
    # an input without a mask: no symbolic mask, as in Keras
    assert lamina.Input((3,))._keras_mask is None and layers.Dense(2)(lamina.Input((3,)))._keras_mask is None


def test_a_symbolic_mask_passed_back_by_hand_is_taken_from_the_input_when_the_graph_runs():
    inp = lamina.Input((None,), dtype="int32")
    x = layers.Embedding(10, 3, mask_zero=True)(inp)
    out = layers.LSTM(2)(x, mask=x._keras_mask)
    model = lamina.Model(inp, out)
    ref = lamina.Model(inp, layers.LSTM(2)(x))
    ref.layers[-1].set_weights(model.layers[-1].get_weights())
    np.testing.assert_allclose(np.asarray(model(SEQ)), np.asarray(ref(SEQ)), rtol=1e-6)


def test_fit_takes_a_torch_dataloader_and_its_list_batches_are_x_y_like_keras():
    """custom train step guide (torch): fit(DataLoader(TensorDataset(x, y))) -- each batch is a list [x, y]."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 3)).astype("float32")
    y = rng.normal(size=(12, 1)).astype("float32")
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                                         batch_size=4, shuffle=False)
    seen = []

    def build(lib):
        class Recording(lib.Model):
            def train_step(self, data):
                seen.append((lib is keras, type(data).__name__, len(data)))
                return super().train_step(data)
        inp = lib.Input((3,))
        model = Recording(inp, lib.layers.Dense(1, kernel_initializer="ones")(inp))
        model.compile(optimizer=lib.optimizers.SGD(0.1), loss="mse")
        return model
    ours, theirs = build(lamina), build(keras)
    h1 = ours.fit(loader, epochs=2, verbose=0).history["loss"]
    h2 = theirs.fit(loader, epochs=2, verbose=0).history["loss"]
    np.testing.assert_allclose(h1, h2, rtol=1e-5)
    np.testing.assert_allclose(ours.get_weights()[0], theirs.get_weights()[0], rtol=1e-5)
    assert {s[1:] for s in seen} == {("list", 2)}                  # a list, as the loader made it, in both
    np.testing.assert_allclose(ours.evaluate(loader, verbose=0), theirs.evaluate(loader, verbose=0), rtol=1e-5)
    # a dataset of x alone: [x] reaches predict as x
    xs = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x)), batch_size=4)
    np.testing.assert_allclose(ours.predict(xs, verbose=0), theirs.predict(xs, verbose=0), rtol=1e-5)


def test_a_model_called_on_torch_tensors_from_a_dataloader_like_keras():
    """custom training loop guide (torch): logits = model(inputs) on a DataLoader's torch tensors; the loss
    and the metric take the torch targets."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5, 4)).astype("float32")
    y = np.eye(3, dtype="float32")[rng.integers(0, 3, 5)]

    def run(lib):
        inp = lib.Input((4,))
        model = lib.Model(inp, lib.layers.Dense(3, kernel_initializer="ones", bias_initializer="zeros")(inp))
        logits = model(torch.from_numpy(x))
        loss = lib.losses.CategoricalCrossentropy(from_logits=True)(torch.from_numpy(y), logits)
        acc = lib.metrics.CategoricalAccuracy()
        acc.update_state(torch.from_numpy(y), logits)
        return np.asarray(logits.detach()), float(loss.detach()), float(acc.result())
    ours, theirs = run(lamina), run(keras)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-6)
    assert ours[1] == pytest.approx(theirs[1], rel=1e-6) and ours[2] == pytest.approx(theirs[2])
    # a layer alone, and an integer torch tensor into an Embedding
    np.testing.assert_array_equal(np.asarray(layers.Embedding(5, 2, embeddings_initializer="ones")(
        torch.tensor([[1, 2]]))), np.ones((1, 2, 2), np.float32))


def _cube(x):                                    # a user's activation, unregistered
    return x * x * x


def test_a_registered_function_as_activation_saves_and_loads_like_keras(tmp_path):
    """serialization guide: Dense(1, activation=custom_fn) with custom_fn registered under a package; the
    .keras file written by either library loads in both."""
    lamina.saving.get_custom_objects().clear()
    keras.saving.get_custom_objects().clear()

    def halve(x):
        return x * 0.5
    def halve_k(x):
        return x * 0.5
    ours_fn = lamina.saving.register_keras_serializable(package="pkg_text", name="halve")(halve)
    theirs_fn = keras.saving.register_keras_serializable(package="pkg_text", name="halve")(halve_k)

    def build(lib, fn):
        inp = lib.Input((3,))
        return lib.Model(inp, lib.layers.Dense(2, activation=fn, kernel_initializer="ones")(inp))
    ours, theirs = build(lamina, ours_fn), build(keras, theirs_fn)
    want = keras.layers.Dense(2, activation=theirs_fn).get_config()["activation"]
    assert layers.Dense(2, activation=ours_fn).get_config()["activation"] == want
    assert want["config"] == "pkg_text>halve" and want["class_name"] == "function"
    x = np.arange(6, dtype="float32").reshape(2, 3)
    ours.save(tmp_path / "ours.keras")
    theirs.save(tmp_path / "theirs.keras")
    for path in ("ours.keras", "theirs.keras"):
        np.testing.assert_allclose(np.asarray(lamina.models.load_model(tmp_path / path)(x)), np.full((2, 2), [[1.5], [6.]]))
        np.testing.assert_allclose(keras.models.load_model(tmp_path / path)(x).detach().numpy(),
                                   np.full((2, 2), [[1.5], [6.]]))
    lamina.saving.get_custom_objects().clear()
    keras.saving.get_custom_objects().clear()
    # unregistered: written by its name; load_model's custom_objects (and a scope) find it, as in Keras
    assert layers.Dense(2, activation=_cube).get_config()["activation"] == \
        keras.layers.Dense(2, activation=_cube).get_config()["activation"]
    build(lamina, _cube).save(tmp_path / "cube.keras")
    with pytest.raises(ValueError, match="_cube"):
        lamina.models.load_model(tmp_path / "cube.keras")
    got = lamina.models.load_model(tmp_path / "cube.keras", custom_objects={"_cube": _cube})
    np.testing.assert_allclose(np.asarray(got(x)), np.full((2, 2), [[27.], [1728.]]))
    with lamina.saving.custom_object_scope({"_cube": _cube}):
        assert lamina.models.load_model(tmp_path / "cube.keras").layers[-1].activation is _cube
    # built-in activations stay names
    assert layers.Dense(2, activation="relu").get_config()["activation"] == "relu"
    assert lamina.activations.serialize(lamina.activations.gelu) == keras.activations.serialize(keras.activations.gelu)


@pytest.mark.parametrize("name,args,update", [
    ("Mean", {}, ([1.0, 2.0, 4.0],)),
    ("Sum", {}, ([1.0, 2.0],)),
    ("MeanAbsoluteError", {}, ([[0.0], [1.0]], [[0.5], [0.0]])),
    ("CategoricalAccuracy", {}, ([[0, 1], [1, 0]], [[0.2, 0.8], [0.3, 0.7]])),
    ("Precision", {"thresholds": [0.3, 0.6]}, ([1, 0, 1], [0.5, 0.4, 0.9])),
    ("F1Score", {"average": None}, (np.eye(3), np.eye(3)[[0, 2, 1]])),
    ("IoU", {"num_classes": 2, "target_class_ids": [0, 1]}, ([0, 1, 1], [0, 1, 0])),
])
def test_metric_result_is_a_tensor_like_keras(name, args, update):
    """sklearn-metric callback recipe: self.keras_metric.result().numpy().astype(float)."""
    ours, theirs = getattr(lamina.metrics, name)(**args), getattr(keras.metrics, name)(**args)
    upd = [np.asarray(u, dtype="float32") for u in update]
    ours.update_state(*upd)
    theirs.update_state(*upd)
    got, want = ours.result(), theirs.result()
    assert isinstance(got, lamina.Tensor)
    assert got.shape == tuple(want.shape) and str(got.dtype) == str(want.dtype).split(".")[-1] == "float32"
    np.testing.assert_allclose(got.numpy().astype(float), want.cpu().numpy().astype(float), rtol=1e-6)
    if got.ndim == 0:
        assert float(got) == pytest.approx(float(want))
    # a result() a user's metric writes returns what it returns, as in Keras
    class Constant(lamina.metrics.Metric):
        def update_state(self, *a, **k):
            pass

        def result(self):
            return {"a": 1.0}
    assert Constant().result() == {"a": 1.0}


def _count_above(lib):
    class CountAbove(lib.metrics.Metric):      # state in add_variable; reset_state reads it
        def __init__(self, name="count_above", **kwargs):
            super().__init__(name=name, **kwargs)
            self.hits = self.add_variable(shape=(), name="hits", initializer="zeros")
            self.seen = self.add_weight(name="seen", initializer="zeros")

        def update_state(self, y_true, y_pred, sample_weight=None):
            above = lib.ops.cast(lib.ops.greater(y_pred, 0.0), "float32")
            if sample_weight is not None:
                above = above * lib.ops.reshape(lib.ops.cast(sample_weight, "float32"), (-1, 1))
            self.hits.assign_add(lib.ops.sum(above))
            self.seen.assign_add(lib.ops.cast(lib.ops.shape(y_pred)[0], "float32"))

        def result(self):
            return self.hits / self.seen

        def reset_state(self):
            self.hits.assign(0.0)
            self.seen.assign(0.0)
    return CountAbove


def test_a_custom_metric_with_add_variable_and_its_own_reset_state_like_keras():
    """training guide: CategoricalTruePositives makes its state with self.add_variable and resets it in
    its own reset_state (Metric.__init__ must not call it before the variables exist)."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(16, 3)).astype("float32")
    y = rng.normal(size=(16, 1)).astype("float32")
    sw = rng.random(16).astype("float32")

    def run(lib):
        m = _count_above(lib)()
        assert [v.shape for v in m.variables] == [(), ()] or [tuple(v.shape) for v in m.variables] == [(), ()]
        inp = lib.Input((3,))
        model = lib.Model(inp, lib.layers.Dense(1, kernel_initializer="ones")(inp))
        model.compile(optimizer=lib.optimizers.SGD(0.05), loss="mse", metrics=[m])
        hist = model.fit(x, y, sample_weight=sw, batch_size=4, epochs=2, shuffle=False, verbose=0).history
        return hist["count_above"], model.evaluate(x, y, verbose=0, return_dict=True)["count_above"]
    ours, theirs = run(lamina), run(keras)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-6)
    assert ours[1] == pytest.approx(theirs[1], rel=1e-6)
    # Keras's default reset_state zeroes the variables
    m = _count_above(lamina)()
    m.update_state(None, np.ones((2, 1), np.float32))
    assert float(m.result()) == 1.0
    lamina.metrics.Metric.reset_state(m)
    assert float(m.hits) == 0.0 and float(m.seen) == 0.0
