"""Sequential, functional and subclassed models: structure, shared and nested layers, config round trips,
saving, summary, and the trainable-at-compile rule (the classic GAN recipe)."""
import warnings

import numpy as np
import pytest

import lamina
from lamina import layers, models


def test_sequential_add_pop_lazy_build_and_introspection():
    model = models.Sequential(name="seq")
    model.add(layers.Dense(4, activation="relu"))
    model.add(layers.Dense(2))
    assert not model.built
    out = model(np.ones((3, 5), np.float32))
    assert out.shape == (3, 2) and model.built and model.input_shape == (None, 5)
    assert model.get_layer(index=0).kernel.shape == (5, 4)
    assert model.layers[1].output.shape == (None, 2)
    popped = model.pop()
    assert popped.units == 2 and model.output_shape == (None, 4) and len(model.weights) == 2
    with pytest.raises(ValueError, match="unique names"):
        model.add(layers.Dense(3, name=model.layers[0].name))
    with pytest.raises(ValueError, match="No such layer"):
        model.get_layer("nope")
    with pytest.raises(ValueError, match="Only instances"):
        model.add("dense")


def test_sequential_with_leading_input_and_weights_api():
    model = models.Sequential([layers.Input(shape=(3,)), layers.Dense(2)])
    assert model.built and model.count_params() == 8 and len(model.layers) == 1
    w = [np.ones((3, 2), np.float32), np.zeros(2, np.float32)]
    model.set_weights(w)
    np.testing.assert_array_equal(model.predict(np.ones((1, 3)), verbose=0), [[3.0, 3.0]])
    layer = f"{model.name}/{model.layers[0].name}"   # Keras's paths: the Sequential's scope, then the layer's
    assert [v.path for v in model.weights] == [f"{layer}/kernel", f"{layer}/bias"]


def test_functional_shared_layers_and_nested_models():
    shared = layers.Dense(3, name="shared")
    a, b = lamina.Input(shape=(4,), name="a"), lamina.Input(shape=(4,), name="b")
    merged = shared(a) + shared(b)
    inner = lamina.Model(a, shared(a), name="inner")  # reuses the shared layer's first call
    model = lamina.Model(inputs={"a": a, "b": b}, outputs=merged, name="outer")
    x1, x2 = np.ones((2, 4), np.float32), 2 * np.ones((2, 4), np.float32)
    expected = shared(x1).numpy() + shared(x2).numpy()
    np.testing.assert_allclose(model({"a": x1, "b": x2}).numpy(), expected, rtol=1e-6)
    assert len(model.weights) == 2  # one shared Dense
    # a model used as a layer of another model
    c = lamina.Input(shape=(4,))
    wrapper = lamina.Model(c, layers.Dense(1)(inner(c)))
    assert wrapper.output_shape == (None, 1) and len(wrapper.weights) == 4
    np.testing.assert_allclose(wrapper.predict(x1, verbose=0).shape, (2, 1))
    assert wrapper.layers[1] is inner


def test_functional_errors():
    a = lamina.Input(shape=(4,))
    b = lamina.Input(shape=(4,))
    out = layers.Dense(2)(a + b)
    with pytest.raises(ValueError, match="Graph disconnected"):
        lamina.Model(a, out)
    model = lamina.Model([a, b], out)
    with pytest.raises(ValueError, match="expects 2 input"):
        model(np.ones((1, 4)))
    with pytest.raises(ValueError, match="expected shape"):
        model([np.ones((1, 5)), np.ones((1, 5))])


def test_subclassed_model_trains_and_summarises():
    class MLP(models.Model):
        def __init__(self, units=8, **kwargs):
            super().__init__(**kwargs)
            self.hidden = layers.Dense(units, activation="relu")
            self.out = layers.Dense(2)

        def call(self, x, training=None):
            return self.out(self.hidden(x))

    model = MLP()
    model.compile("adam", "mse")
    x = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    h = model.fit(x, x[:, :2], epochs=3, verbose=0)
    assert h.history["loss"][-1] < h.history["loss"][0]
    assert model.count_params() == 3 * 8 + 8 + 8 * 2 + 2
    lines = []
    model.summary(print_fn=lines.append)
    assert any("hidden" in l or "dense" in l for l in lines)
    # as Keras: the total counts the trained Adam's variables too (2 slots per weight + iteration + learning rate)
    assert any(l.startswith(" Total params: 152 (") for l in lines) and " Trainable params: 50 (200.00 B)" in lines
    assert any(l.startswith(" Optimizer params: 102 (") for l in lines)
    built = MLP(units=4)
    built.build((None, 3))
    assert built.count_params() == 3 * 4 + 4 + 4 * 2 + 2


def test_functional_summary_has_connections_and_keras_totals():
    inp = lamina.Input(shape=(8,))
    a, b = layers.Dense(4, name="a")(inp), layers.Dense(4, name="b")(inp)
    model = lamina.Model(inp, layers.Dense(1, name="out")(a * b), name="two_branch")
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert 'Model: "two_branch"' in text and "Connected to" in text and "a[0][0]" in text
    assert " Total params: 77 (308.00 B)" in lines


def test_summary_expand_nested_and_trainable_marks_as_keras():
    # Keras 3.15: expand_nested lists a nested model's layers under it, each prefixed '   └ ' per level, with
    # its own output shape and '-' for connections; show_trainable marks Y / N, and '-' for a layer with no weights
    a, b = lamina.Input((3,), name="a"), lamina.Input((3,), name="b")
    shared = layers.Dense(4, name="shared")
    inner = lamina.Model([a, b], layers.Add(name="add")([shared(a), shared(b)]), name="inner")
    deep = models.Sequential([lamina.Input((4,)), layers.Dense(2, name="d2", trainable=False)], name="deep")
    x1, x2 = lamina.Input((3,), name="x1"), lamina.Input((3,), name="x2")
    outer = lamina.Model([x1, x2], layers.Dense(1, name="out")(deep(inner([x1, x2]))), name="outer")
    lines = []
    outer.summary(print_fn=lines.append, expand_nested=True, show_trainable=True, line_length=120)
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in lines if line.startswith("│")]
    rows = [r for r in rows if r[0]]   # (not the connections' continuation lines)
    assert [r[0] for r in rows] == ["x1 (InputLayer)", "x2 (InputLayer)", "inner (Functional)", "└ a (InputLayer)",
                                    "└ b (InputLayer)", "└ shared (Dense)", "└ add (Add)", "deep (Sequential)",
                                    "└ d2 (Dense)", "out (Dense)"]
    shared_row = [line for line in lines if "└ shared" in line][0]
    assert shared_row.split("│")[1].startswith("    └ shared")   # the cell's space, then 3 for the level
    by_name = {r[0]: r for r in rows}
    assert by_name["└ shared (Dense)"][1:] == ["(None, 4)", "16", "-", "Y"]
    assert by_name["└ d2 (Dense)"][1:] == ["(None, 2)", "10", "-", "N"]
    assert by_name["x1 (InputLayer)"][-1] == "-" and by_name["inner (Functional)"][-1] == "Y"
    assert by_name["deep (Sequential)"][-1] == "Y"   # (the model's own flag, as Keras's, whatever its layers')
    plain = []
    outer.summary(print_fn=plain.append)
    assert not any("│    └ " in line for line in plain) and not any("Trainable ┃" in line for line in plain)


def test_config_round_trips_give_the_same_outputs():
    seq = models.Sequential([layers.Dense(4, activation="relu", input_shape=(3,)), layers.Dense(2)])
    copy = models.Sequential.from_config(seq.get_config())
    copy.set_weights(seq.get_weights())
    x = np.random.default_rng(0).normal(size=(2, 3)).astype(np.float32)
    np.testing.assert_allclose(copy.predict(x, verbose=0), seq.predict(x, verbose=0), rtol=1e-6)
    a, b = lamina.Input(shape=(3,), name="a"), lamina.Input(shape=(3,), name="b")
    shared = layers.Dense(2)
    out = layers.Dense(1)(shared(b))
    fn = lamina.Model([a, b], [out, shared(a)])
    clone = lamina.Model.from_config(fn.get_config())
    clone.set_weights(fn.get_weights())
    for p, q in zip(clone.predict([x, x + 1], verbose=0), fn.predict([x, x + 1], verbose=0)):
        np.testing.assert_allclose(p, q, rtol=1e-6)
    assert [l.name for l in clone.layers] == [l.name for l in fn.layers]


def test_save_and_load_model_and_weights(tmp_path):
    model = models.Sequential([layers.Dense(4, activation="relu", input_shape=(3,)), layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    model.fit(x, x[:, :2], verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    assert loaded.compiled and loaded.get_compile_config()["loss"] == "mse"
    loaded.fit(x, x[:, :2], verbose=0)  # continues training
    model.save_weights(tmp_path / "w.weights.h5")
    other = models.Sequential([layers.Dense(4, activation="relu", input_shape=(3,)), layers.Dense(2)])
    other.load_weights(tmp_path / "w.weights.h5")
    np.testing.assert_allclose(other.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def _gan(batch_norm=True):
    lamina.utils.set_random_seed(0)
    generator = models.Sequential([layers.Dense(8, activation="relu", input_shape=(4,))]
                                  + ([layers.BatchNormalization()] if batch_norm else [])
                                  + [layers.Dense(6, activation="tanh")])
    discriminator = models.Sequential([layers.Dense(8, activation="relu", input_shape=(6,))]
                                      + ([layers.BatchNormalization()] if batch_norm else [])
                                      + [layers.Dense(1, activation="sigmoid")])
    return generator, discriminator


def test_gan_recipe_trainable_flag_as_at_compile():
    generator, discriminator = _gan()
    discriminator.compile(optimizer="adam", loss="binary_crossentropy")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        discriminator.trainable = False
    assert any("takes effect" in str(w.message) for w in caught)
    combined = models.Sequential([generator, discriminator])
    combined.compile(optimizer="adam", loss="binary_crossentropy")
    assert combined.input_shape == (None, 4) and combined.output_shape == (None, 1)
    rng = np.random.default_rng(0)
    noise, real = rng.normal(size=(8, 4)).astype(np.float32), rng.normal(size=(8, 6)).astype(np.float32)

    d_before, g_before = discriminator.get_weights(), generator.get_weights()
    combined.train_on_batch(noise, np.ones((8, 1), np.float32))
    for a, b in zip(d_before, discriminator.get_weights()):
        assert np.array_equal(a, b)  # frozen in the combined model, moving statistics included
    assert any(not np.array_equal(a, b) for a, b in zip(g_before, generator.get_weights()))

    d_before = discriminator.get_weights()
    discriminator.train_on_batch(real, np.ones((8, 1), np.float32))
    changed = [not np.array_equal(a, b) for a, b in zip(d_before, discriminator.get_weights())]
    assert all(changed)  # kernels, biases, gamma/beta and the moving statistics all moved
    assert discriminator.trainable is False  # the user's flag is left as they set it


@pytest.mark.filterwarnings("ignore:Model .* `trainable` was changed")
def test_toggling_trainable_before_each_update_gives_the_same_result():
    def run(toggle):
        generator, discriminator = _gan(batch_norm=False)
        discriminator.compile(optimizer="sgd", loss="binary_crossentropy")
        discriminator.trainable = False
        combined = models.Sequential([generator, discriminator])
        combined.compile(optimizer="sgd", loss="binary_crossentropy")
        rng = np.random.default_rng(1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(3):
                if toggle:
                    discriminator.trainable = True
                discriminator.train_on_batch(rng.normal(size=(4, 6)).astype(np.float32), np.ones((4, 1)))
                if toggle:
                    discriminator.trainable = False
                combined.train_on_batch(rng.normal(size=(4, 4)).astype(np.float32), np.ones((4, 1)))
        return generator.get_weights() + discriminator.get_weights()
    for a, b in zip(run(False), run(True)):
        np.testing.assert_array_equal(a, b)


def test_frozen_layer_is_not_updated_after_recompile():
    model = models.Sequential([layers.Dense(3, input_shape=(2,)), layers.Dense(1)])
    model.layers[0].trainable = False
    model.compile("sgd", "mse")
    assert len(model.trainable_weights) == 2 and len(model.non_trainable_weights) == 2
    w0 = model.layers[0].get_weights()
    model.fit(np.ones((4, 2)), np.ones((4, 1)), verbose=0)
    for a, b in zip(w0, model.layers[0].get_weights()):
        assert np.array_equal(a, b)


def test_low_level_loop_with_grad_and_apply_gradients():
    model = models.Sequential([layers.Dense(1, input_shape=(2,))])
    opt = lamina.optimizers.SGD(learning_rate=0.01)
    x = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    y = np.array([[1.0], [0.0]], np.float32)
    first = None
    for _ in range(20):
        pred = model(x, training=True)
        loss = lamina.losses.MeanSquaredError()(y, pred)
        grads = lamina.grad(loss, model.trainable_weights)
        opt.apply_gradients(zip(grads, model.trainable_weights))
        first = first if first is not None else float(loss)
    assert float(loss) < first
    # backward() + step() style
    pred = model(x, training=True)
    loss = lamina.losses.MeanSquaredError()(y, pred)
    loss.backward()
    opt.step(model.trainable_weights)
    assert all(w.grad is not None for w in model.trainable_weights)


def test_docs_gan_example_runs():
    """docs/gan.md's three blocks in this process, with what they make checked (test_docs only runs pages)."""
    import pathlib
    import re
    text = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "gan.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 3
    scope = {}
    for block in blocks:
        exec(compile(block, "docs/gan.md", "exec"), scope)  # noqa: S102 - our own documentation
    assert scope["samples"].shape == (16, 28, 28, 1) and np.isfinite(float(scope["g_loss"]))


def test_inputs_and_outputs_are_flat_lists_as_in_keras():
    a, b = lamina.Input((3,), name="a"), lamina.Input((3,), name="b")
    added = lamina.layers.Add()([a, b])
    model = lamina.Model({"a": a, "b": b}, added)
    assert isinstance(model.inputs, list) and [t.name for t in model.inputs] == ["a", "b"]
    assert isinstance(model.outputs, list) and len(model.outputs) == 1
    assert model.output is added and isinstance(model.input, dict)
    single = lamina.Sequential([lamina.Input((3,)), lamina.layers.Dense(2)])
    assert isinstance(single.inputs, list) and single.inputs[0] is single.input
