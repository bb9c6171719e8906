"""Weights of subclassed models and of custom layers with sub-layers, in Keras's layout: Keras walks such an
object attribute by attribute (saving_lib's _walk_saveable: public names first, each in name order; a list's,
tuple's or dict's layers under <snake class name>[_k], nested containers under container[_k]; a model's
`layers` list in its place in that order; a layer met twice saved once), so `.weights.h5` and `.keras` files
of the same program must hold the same paths in lamina and Keras and load across. Checked against real Keras."""
import io
import os
import zipfile

import h5py
import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
import lamina  # noqa: E402

from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")

X = np.random.default_rng(0).normal(size=(4, 3)).astype("float32")


def _program(lib):
    """The same subclassed model, written once for either library: sub-layers in plain and private attributes,
    a nested list, a dict, a Sequential, a custom layer with its own weight and sub-layers, one layer whose
    name sorts after `layers`, and one layer held twice."""
    register = lib.saving.register_keras_serializable(package="walk_test")

    @register
    class Block(lib.layers.Layer):
        def __init__(self, units=3, **kwargs):
            super().__init__(**kwargs)
            self.units = units
            self.inner = lib.layers.Dense(units)
            self._hidden = lib.layers.Dense(units, activation="tanh")
            self.scale = self.add_weight(shape=(units,), initializer="ones", name="scale")

        def call(self, x):
            return self._hidden(self.inner(x)) * self.scale

        def get_config(self):
            return {**super().get_config(), "units": self.units}

    @register
    class Net(lib.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.d1 = lib.layers.Dense(4)
            self.blocks = [lib.layers.Dense(3), [lib.layers.Dense(3)], Block(3)]
            self.heads = {"a": lib.layers.Dense(2), "b": lib.layers.Dense(2)}
            self.enc = lib.Sequential([lib.layers.Dense(2)])
            self.norm = lib.layers.LayerNormalization()     # 'norm' > 'layers': saved under layers/
            self.again = self.d1          # the same layer twice: saved once, at the first name ('again' < 'd1')

        def call(self, x):
            x = self.d1(x)
            x = self.blocks[2](self.blocks[1][0](self.blocks[0](x)))
            return self.enc(self.norm(x)) + self.heads["a"](x) * self.heads["b"](x)
    return Net


def _h5_paths(data):
    f = h5py.File(io.BytesIO(data), "r")
    out = []
    f.visit(lambda n: out.append((n, f[n].shape)) if isinstance(f[n], h5py.Dataset) else None)
    return sorted(out)


def _numpy(lib, y):   # (outputs compared across libraries within 1e-4: float rounding; a misplaced weight is O(1))
    return np.asarray(lib.ops.convert_to_numpy(y))


@pytest.fixture(scope="module")
def pair():
    """(lamina model, keras model), built on X, with their weights files' bytes and predictions."""
    out = {}
    for name, lib in (("lamina", lamina), ("keras", keras)):
        lib.utils.set_random_seed(1)
        model = _program(lib)()
        y = _numpy(lib, model(X))
        out[name] = (model, y)
    return out


def test_weights_files_hold_kerass_paths_and_load_across(pair, tmp_path):
    files = {}
    for name, lib in (("lamina", lamina), ("keras", keras)):
        model, _ = pair[name]
        path = tmp_path / f"{name}.weights.h5"
        model.save_weights(path)
        files[name] = path
    ours, theirs = _h5_paths(files["lamina"].read_bytes()), _h5_paths(files["keras"].read_bytes())
    assert ours == theirs
    names = [n for n, _ in ours]
    assert "blocks/block/_hidden/vars/0" in names and "blocks/container/dense/vars/0" in names
    assert "layers/layer_normalization/vars/0" in names and "again/vars/0" in names
    assert not any(n.startswith("d1/") for n in names)
    # across: each library's file into the other's model gives that model the saved one's predictions
    for src, dst, lib in (("keras", "lamina", lamina), ("lamina", "keras", keras)):
        model, _ = pair[dst]
        model.load_weights(files[src])
        np.testing.assert_allclose(_numpy(lib, model(X)), pair[src][1], rtol=1e-4, atol=1e-5)


def test_nested_list_layers_are_tracked_and_trained_like_keras(pair):
    """A list attribute holding a list ([Dense, [Dense], Block]): Keras tracks the inner list's layer too;
    lamina tracked a list only when every item was a layer, so none of these was trained or counted."""
    ours, theirs = pair["lamina"][0], pair["keras"][0]
    # (shapes in order: the paths' automatic names count layers made earlier in the process, per library)
    assert [tuple(w.shape) for w in ours.trainable_weights] == [tuple(w.shape) for w in theirs.trainable_weights]
    assert len(ours.trainable_weights) == 19
    assert ours.count_params() == theirs.count_params()
    assert any(ours.blocks[1][0] is layer for layer in ours.layers)
    fresh = _program(lamina)()
    fresh(X)
    fresh.compile(optimizer="sgd", loss="mse")
    before = [np.array(w) for w in fresh.blocks[1][0].weights]
    fresh.fit(X, np.ones((4, 2), "float32"), epochs=1, verbose=0)
    assert all(not np.allclose(a, np.asarray(w)) for a, w in zip(before, fresh.blocks[1][0].weights))


@pytest.mark.filterwarnings("ignore::UserWarning")   # Keras: the optimizer's variables, built at first fit
def test_keras_files_of_a_registered_subclassed_model_load_across(tmp_path):
    files, preds = {}, {}
    for name, lib in (("lamina", lamina), ("keras", keras)):
        model = _program(lib)()
        model(X)
        model.compile(optimizer="adam", loss="mse")
        model.fit(X, np.ones((4, 2), "float32"), epochs=1, verbose=0)
        preds[name] = _numpy(lib, model(X))
        files[name] = tmp_path / f"{name}.keras"
        model.save(files[name])
    with zipfile.ZipFile(files["lamina"]) as z:
        config = __import__("json").loads(z.read("config.json"))
    assert (config["class_name"], config["registered_name"]) == ("Net", "walk_test>Net")
    for src, lib in (("keras", lamina), ("lamina", keras)):
        loaded = lib.saving.load_model(files[src])
        np.testing.assert_allclose(_numpy(lib, loaded(X)), preds[src], rtol=1e-4, atol=1e-5)


def test_files_lamina_wrote_before_the_walk_still_load(tmp_path):
    """Older lamina files put a subclassed model's layers under layers/<snake>[_k] and a custom layer's sub-layers'
    weights in its own vars: such a file still loads (matched by the old layout when the new one is absent)."""
    from lamina.io.keras_archive import write_weights_h5
    from lamina.models.keras_format import weight_paths
    model = _program(lamina)()
    expected = _numpy(lamina, model(X))
    old = [(p, [np.asarray(v.numpy()) for v in vs]) for p, vs in weight_paths(model, legacy=True)]
    assert [p for p, _ in old] != [p for p, _ in weight_paths(model)]
    path = tmp_path / "old.weights.h5"
    path.write_bytes(write_weights_h5(old))
    twin = _program(lamina)()
    twin(X)
    twin.load_weights(path)
    np.testing.assert_allclose(_numpy(lamina, twin(X)), expected, rtol=1e-6)


def _hooked(lib):
    register = lib.saving.register_keras_serializable(package="walk_hooks")

    @register
    class Counter(lib.layers.Layer):
        """A layer with a Python counter saved through its own hooks, nested inside another custom layer."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.count = 0

        def call(self, x):
            return x * (1.0 + self.count)

        def save_own_variables(self, store):
            store["count"] = np.asarray(self.count, np.int64)

        def load_own_variables(self, store):
            self.count = int(np.array(store["count"]))

    @register
    class Outer(lib.layers.Layer):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.counter = Counter()
            self.proj = lib.layers.Dense(2)

        def call(self, x):
            return self.proj(self.counter(x))

    @register
    class Root(lib.Model):
        """A subclassed model with hooks of its own (Keras calls them on the model too, at the file's root)."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.outer = Outer()
            self.steps = 0

        def call(self, x):
            return self.outer(x)

        def save_own_variables(self, store):
            store["steps"] = np.asarray(self.steps, np.int64)

        def load_own_variables(self, store):
            self.steps = int(np.array(store["steps"]))
    return Root


def test_hooks_of_nested_layers_and_of_the_model_itself_run_both_ways(tmp_path):
    files = {}
    for name, lib in (("lamina", lamina), ("keras", keras)):
        model = _hooked(lib)()
        model(X)
        model.outer.counter.count, model.steps = 7, 11
        files[name] = tmp_path / f"{name}.weights.h5"
        model.save_weights(files[name])
    ours, theirs = _h5_paths(files["lamina"].read_bytes()), _h5_paths(files["keras"].read_bytes())
    # ('layers' sorts before 'outer': the model's layers list reaches the custom layer first)
    assert ours == theirs and ("layers/outer/counter/vars/count", ()) in ours and ("vars/steps", ()) in ours
    for src, lib in (("keras", lamina), ("lamina", keras)):
        model = _hooked(lib)()
        model(X)
        model.load_weights(files[src])
        assert (model.outer.counter.count, model.steps) == (7, 11)


def _text_classifier(lib):
    """keras.io's text classification with a Transformer, as written there: a custom block holding attention, a
    Sequential and normalisation layers, and a custom embedding holding two Embeddings, in a functional model."""
    layers = lib.layers

    class TransformerBlock(layers.Layer):
        def __init__(self, embed_dim, num_heads, ff_dim, rate=0.1):
            super().__init__()
            self.att = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
            self.ffn = lib.Sequential([layers.Dense(ff_dim, activation="relu"), layers.Dense(embed_dim)])
            self.layernorm1 = layers.LayerNormalization(epsilon=1e-6)
            self.layernorm2 = layers.LayerNormalization(epsilon=1e-6)
            self.dropout1, self.dropout2 = layers.Dropout(rate), layers.Dropout(rate)

        def call(self, inputs):
            out1 = self.layernorm1(inputs + self.dropout1(self.att(inputs, inputs)))
            return self.layernorm2(out1 + self.dropout2(self.ffn(out1)))

    class TokenAndPositionEmbedding(layers.Layer):
        def __init__(self, maxlen, vocab_size, embed_dim):
            super().__init__()
            self.token_emb = layers.Embedding(input_dim=vocab_size, output_dim=embed_dim)
            self.pos_emb = layers.Embedding(input_dim=maxlen, output_dim=embed_dim)

        def call(self, x):
            return self.token_emb(x) + self.pos_emb(lib.ops.arange(0, lib.ops.shape(x)[-1], 1))

    inputs = layers.Input(shape=(10,))
    x = TransformerBlock(16, 2, 32)(TokenAndPositionEmbedding(10, 50, 16)(inputs))
    outputs = layers.Dense(2, activation="softmax")(layers.GlobalAveragePooling1D()(x))
    return lib.Model(inputs=inputs, outputs=outputs)


def test_kerasio_transformer_classifier_weights_travel_both_ways(tmp_path):
    ids = np.random.default_rng(0).integers(0, 50, (4, 10))
    models, files, preds = {}, {}, {}
    for name, lib in (("lamina", lamina), ("keras", keras)):
        models[name] = _text_classifier(lib)
        preds[name] = _numpy(lib, models[name](ids))
        files[name] = tmp_path / f"{name}.weights.h5"
        models[name].save_weights(files[name])
    paths = _h5_paths(files["lamina"].read_bytes())
    assert paths == _h5_paths(files["keras"].read_bytes())
    assert ("layers/transformer_block/att/query_dense/vars/0", (16, 2, 16)) in paths
    assert ("layers/transformer_block/ffn/layers/dense/vars/0", (16, 32)) in paths
    for src, dst, lib in (("keras", "lamina", lamina), ("lamina", "keras", keras)):
        models[dst].load_weights(files[src])
        np.testing.assert_allclose(_numpy(lib, models[dst](ids)), preds[src], rtol=1e-4, atol=1e-5)
