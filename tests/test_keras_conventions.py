"""Keras's training conventions, checked by running the same program on lamina and on real Keras 3
(KERAS_BACKEND=torch) and by recomputing the numbers independently.

The programs follow Keras's guide "Customizing what happens in fit()" (its PyTorch version), the keras.io
GAN and VAE examples (TensorFlow's GradientTape form, which runs on lamina.GradientTape), and
Keras's documentation of train_step's ``data``, ``compute_loss`` and ``compute_metrics``. Only the import
differs between the two runs (``torch.no_grad`` is ``lamina.no_grad``). Random draws inside the steps
come from a NumPy generator so that both runs see the same numbers.
"""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
import lamina  # noqa: E402


@pytest.fixture(scope="module")
def keras():
    k = pytest.importorskip("keras")
    if k.backend.backend() != "torch":
        pytest.skip("the reference runs need KERAS_BACKEND=torch")
    return k


def _no_grad(K):
    if K is lamina:
        return lamina.no_grad
    import torch
    return torch.no_grad


def _history(h):
    return {k: np.asarray(v, np.float64) for k, v in h.history.items()}


def _set_weights(model, seed):
    rng = np.random.default_rng(seed)
    model.set_weights([(0.5 * rng.standard_normal(w.shape)).astype("float32") for w in model.get_weights()])


# ------------------------------------------------------------------------------------------ 1. data
def _describe(d):
    if isinstance(d, (tuple, list)):
        return type(d).__name__ + "(" + ", ".join(_describe(v) for v in d) + ")"
    if isinstance(d, dict):
        return "dict(" + ", ".join(f"{k}={_describe(v)}" for k, v in sorted(d.items())) + ")"
    return "None" if d is None else "T" + str(tuple(d.shape))


def _data_forms(K):
    """What train_step / test_step / predict_step receive for each way of calling fit/evaluate/predict."""
    seen = []

    class Spy(K.Model):
        def __init__(self):
            super().__init__()
            self.d = K.layers.Dense(1)

        def call(self, x):
            return self.d(x)

        def train_step(self, data):
            seen.append("train " + _describe(data))
            return {}

        def test_step(self, data):
            seen.append("test " + _describe(data))
            return {}

        def predict_step(self, data):
            seen.append("predict " + _describe(data))
            x = data[0] if isinstance(data, tuple) else data
            x = x[0] if isinstance(x, list) else x["a"] if isinstance(x, dict) else x
            return x

    m = Spy()
    m.compile("sgd")
    x, y = np.ones((4, 3), "float32"), np.ones((4, 1), "float32")
    sw = np.ones((4,), "float32")
    calls = {
        "fit(x)": lambda: m.fit(x, batch_size=4, verbose=0),
        "fit(x, y)": lambda: m.fit(x, y, batch_size=4, verbose=0),
        "fit(x, y, sample_weight)": lambda: m.fit(x, y, sample_weight=sw, batch_size=4, verbose=0),
        "fit(x, y, class_weight)": lambda: m.fit(x, np.zeros((4,), "int32"), class_weight={0: 2.0}, batch_size=4,
                                                 verbose=0),
        "fit([x, x])": lambda: m.fit([x, x], batch_size=4, verbose=0),
        "fit([x, x], y)": lambda: m.fit([x, x], y, batch_size=4, verbose=0),
        "fit({a: x})": lambda: m.fit({"a": x}, batch_size=4, verbose=0),
        "fit({a: x}, y)": lambda: m.fit({"a": x}, y, batch_size=4, verbose=0),
        "fit(x, [y, y])": lambda: m.fit(x, [y, y], batch_size=4, verbose=0),
        "validation_data=(x, y)": lambda: m.fit(x, y, validation_data=(x, y), batch_size=4, verbose=0),
        "validation_data=(x, y, sw)": lambda: m.fit(x, y, validation_data=(x, y, sw), batch_size=4, verbose=0),
        "evaluate(x)": lambda: m.evaluate(x, batch_size=4, verbose=0),
        "evaluate(x, y)": lambda: m.evaluate(x, y, batch_size=4, verbose=0),
        "evaluate(x, y, sample_weight)": lambda: m.evaluate(x, y, sample_weight=sw, batch_size=4, verbose=0),
        "predict(x)": lambda: m.predict(x, batch_size=4, verbose=0),
        "predict([x, x])": lambda: m.predict([x, x], batch_size=4, verbose=0),
        "predict({a: x})": lambda: m.predict({"a": x}, batch_size=4, verbose=0),
        "train_on_batch(x)": lambda: m.train_on_batch(x),
        "train_on_batch(x, y)": lambda: m.train_on_batch(x, y),
        "test_on_batch(x, y)": lambda: m.test_on_batch(x, y),
        "predict_on_batch(x)": lambda: m.predict_on_batch(x),
    }
    out = {}
    for name, call in calls.items():
        seen.clear()
        call()
        out[name] = list(seen)
    return out


def test_train_step_data_is_what_keras_passes(keras):
    mine, theirs = _data_forms(lamina), _data_forms(keras)
    assert mine == theirs
    # the documented forms, spelled out
    assert mine["fit(x)"] == ["train T(4, 3)"]
    assert mine["fit(x, y)"] == ["train tuple(T(4, 3), T(4, 1))"]
    assert mine["fit(x, y, sample_weight)"] == ["train tuple(T(4, 3), T(4, 1), T(4,))"]


def test_generator_batches_reach_train_step_as_yielded():
    seen = []

    class Spy(lamina.Model):
        def __init__(self):
            super().__init__()
            self.d = lamina.layers.Dense(1)

        def call(self, x):
            return self.d(x)

        def train_step(self, data):
            seen.append(_describe(data))
            return {}

    m = Spy()
    m.compile("sgd")
    x, y = np.ones((4, 3), "float32"), np.ones((4, 1), "float32")
    m.fit(((x, y) for _ in range(1)), verbose=0)
    m.fit((x for _ in range(1)), verbose=0)
    m.fit(((x,) for _ in range(1)), verbose=0)
    assert seen == ["tuple(T(4, 3), T(4, 1))", "T(4, 3)", "tuple(T(4, 3))"]


def test_unpack_and_pack_match_keras_utils(keras):
    x, y, sw = np.ones((2, 1)), np.zeros((2, 1)), np.ones(2)
    for data in (x, (x,), (x, y), (x, y, sw), [x, y], {"a": x}, ([x, x],)):
        mine = lamina.utils.unpack_x_y_sample_weight(data)
        theirs = keras.utils.unpack_x_y_sample_weight(data)
        assert len(mine) == 3 and all(a is b for a, b in zip(mine, theirs))
    for args in ((x,), (x, y), (x, y, sw), ([x, x],), ({"a": x}, y)):
        mine, theirs = lamina.utils.pack_x_y_sample_weight(*args), keras.utils.pack_x_y_sample_weight(*args)
        assert type(mine) is type(theirs) and _describe(mine) == _describe(theirs)
    with pytest.raises(ValueError, match="Data is expected to be in format"):
        lamina.utils.unpack_x_y_sample_weight((x, y, sw, sw))


def test_default_train_step_accepts_every_form():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 3)).astype("float32")
    y = rng.standard_normal((8, 1)).astype("float32")
    m = lamina.Sequential([lamina.Input((3,)), lamina.layers.Dense(1)])
    m.compile(lamina.optimizers.SGD(0.1), "mse")
    before = m.get_weights()
    logs = m.train_step((x, y))
    assert set(logs) == {"loss"}
    assert not np.allclose(before[0], m.get_weights()[0])
    m.train_step((x, y, np.ones(8, "float32")))
    m.train_step([x, y])
    with pytest.raises(ValueError, match="no targets"):
        m.train_step(x)


# ------------------------------------------------------------------------------------ 2. compute_loss
def _compute_loss_override(K, with_metrics=True):
    ops = K.ops

    class ScaledMAE(K.Model):
        def __init__(self):
            super().__init__()
            self.d = K.layers.Dense(1)

        def call(self, x):
            return self.d(x)

        def compute_loss(self, x, y, y_pred, sample_weight, training=True):
            return ops.mean(ops.abs(y_pred - y)) * 3.0

    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 3)).astype("float32")
    y = rng.standard_normal((16, 1)).astype("float32")
    m = ScaledMAE()
    m(x)
    _set_weights(m, 1)
    m.compile(K.optimizers.SGD(0.05), "mse", metrics=["mae", "mse"] if with_metrics else None)
    h = m.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False)
    return m, x, y, _history(h), m.evaluate(x, y, batch_size=16, verbose=0)


def test_compute_loss_override_is_logged_with_the_compiled_metrics(keras):
    m, x, y, hist, ev = _compute_loss_override(lamina)
    # evaluate: [loss, mae, mse], each recomputed from predict
    p = m.predict(x, verbose=0)
    expected = [3.0 * np.abs(p - y).mean(), np.abs(p - y).mean(), ((p - y) ** 2).mean()]
    assert isinstance(ev, list) and len(ev) == 3
    np.testing.assert_allclose(ev, expected, rtol=1e-5)
    assert set(hist) == {"loss", "mae", "mse"}
    np.testing.assert_allclose(hist["loss"], 3.0 * hist["mae"], rtol=1e-5)  # one batch per epoch
    assert hist["loss"][-1] < hist["loss"][0]
    assert m.evaluate(x, y, verbose=0, return_dict=True).keys() == {"loss", "mae", "mse"}
    # the same numbers as Keras
    _, _, _, k_hist, k_ev = _compute_loss_override(keras)
    for k in hist:
        np.testing.assert_allclose(hist[k], k_hist[k], rtol=1e-4)
    np.testing.assert_allclose(ev, k_ev, rtol=1e-4)


def test_evaluate_returns_a_float_without_metrics(keras):
    ev = _compute_loss_override(lamina, with_metrics=False)[4]
    k_ev = _compute_loss_override(keras, with_metrics=False)[4]
    assert isinstance(ev, float) and isinstance(k_ev, float)
    np.testing.assert_allclose(ev, k_ev, rtol=1e-4)


def test_compute_loss_docs_example_with_its_own_tracker(keras):
    """keras.Model.compute_loss's docstring: a Mean(name='loss') tracker listed by a metrics override."""
    def run(K):
        ops = K.ops

        class MyModel(K.Model):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.loss_tracker = K.metrics.Mean(name="loss")

            def compute_loss(self, x, y, y_pred, sample_weight, training=True):
                loss = ops.mean((y_pred - y) ** 2) * 2.0
                self.loss_tracker.update_state(loss)
                return loss

            def reset_metrics(self):
                self.loss_tracker.reset_state()

            @property
            def metrics(self):
                return [self.loss_tracker]

        inputs = K.Input(shape=(4,))
        model = MyModel(inputs, K.layers.Dense(1)(inputs))
        _set_weights(model, 2)
        model.compile(K.optimizers.SGD(0.02), loss="mse")
        rng = np.random.default_rng(1)
        x, y = rng.standard_normal((20, 4)).astype("float32"), rng.standard_normal((20, 1)).astype("float32")
        h = model.fit(x, y, batch_size=5, epochs=2, verbose=0, shuffle=False)
        return _history(h), model.loss_tracker.result()

    (mine, tracked), (theirs, k_tracked) = run(lamina), run(keras)
    assert set(mine) == set(theirs) == {"loss"}
    np.testing.assert_allclose(mine["loss"], theirs["loss"], rtol=1e-4)
    np.testing.assert_allclose(float(tracked), float(k_tracked), rtol=1e-4)


def test_model_metrics_list_is_keras_s(keras):
    def names(K):
        i = K.Input((3,))
        m = K.Model(i, [K.layers.Dense(1, name="a")(i), K.layers.Dense(2, name="b")(i)])
        m.compile("sgd", ["mse", "mse"], metrics=[["mae"], ["mae"]])
        before = [x.name for x in m.metrics]
        x = np.ones((4, 3), "float32")
        h = m.fit(x, [np.ones((4, 1), "float32"), np.ones((4, 2), "float32")], verbose=0)
        one = K.Sequential([K.Input((3,)), K.layers.Dense(1)])
        one.compile("sgd", "mse")
        return before, [x.name for x in m.metrics], sorted(h.history), [x.name for x in one.metrics]

    assert names(lamina) == names(keras)


def test_model_without_compiled_loss_trains_on_added_losses(keras):
    def run(K):
        class Penalised(K.layers.Layer):
            def call(self, x):
                self.add_loss(K.ops.mean(x ** 2))
                return x

        inputs = K.Input((3,))
        model = K.Model(inputs, Penalised()(K.layers.Dense(3)(inputs)))
        _set_weights(model, 4)
        model.compile(K.optimizers.SGD(0.1))
        x = np.random.default_rng(2).standard_normal((8, 3)).astype("float32")
        return _history(model.fit(x, batch_size=8, epochs=3, verbose=0))["loss"]

    mine = run(lamina)
    np.testing.assert_allclose(mine, run(keras), rtol=1e-4)
    assert mine[-1] < mine[0]


# ------------------------------------------------------------------- 3. the guide's PyTorch-style steps
def _guide(K, pattern):
    no_grad = _no_grad(K)
    rng = np.random.default_rng(0)
    x = rng.random((64, 8)).astype("float32")
    y = x @ rng.random((8, 1)).astype("float32")
    sw = rng.random((64,)).astype("float32")

    def update(model, loss):
        model.zero_grad()
        loss.backward()
        trainable_weights = [v for v in model.trainable_weights]
        gradients = [v.value.grad for v in trainable_weights]
        with no_grad():
            model.optimizer.apply(gradients, trainable_weights)

    class Simple(K.Model):
        def train_step(self, data):
            x, y = data
            y_pred = self(x, training=True)
            self.zero_grad()
            loss = self.compute_loss(y=y, y_pred=y_pred)
            loss.backward()
            trainable_weights = [v for v in self.trainable_weights]
            gradients = [v.value.grad for v in trainable_weights]
            with no_grad():
                self.optimizer.apply(gradients, trainable_weights)
            for metric in self.metrics:
                if metric.name == "loss":
                    metric.update_state(loss)
                else:
                    metric.update_state(y, y_pred)
            return {m.name: m.result() for m in self.metrics}

    class LowLevel(K.Model):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.loss_tracker = K.metrics.Mean(name="loss")
            self.mae_metric = K.metrics.MeanAbsoluteError(name="mae")
            self.loss_fn = K.losses.MeanSquaredError()

        def train_step(self, data):
            x, y = data
            y_pred = self(x, training=True)
            loss = self.loss_fn(y, y_pred)
            update(self, loss)
            self.loss_tracker.update_state(loss)
            self.mae_metric.update_state(y, y_pred)
            return {"loss": self.loss_tracker.result(), "mae": self.mae_metric.result()}

        @property
        def metrics(self):
            return [self.loss_tracker, self.mae_metric]

    class Weighted(K.Model):
        def train_step(self, data):
            if len(data) == 3:
                x, y, sample_weight = data
            else:
                sample_weight = None
                x, y = data
            y_pred = self(x, training=True)
            loss = self.compute_loss(y=y, y_pred=y_pred, sample_weight=sample_weight)
            update(self, loss)
            for metric in self.metrics:
                if metric.name == "loss":
                    metric.update_state(loss)
                else:
                    metric.update_state(y, y_pred, sample_weight=sample_weight)
            return {m.name: m.result() for m in self.metrics}

    class Evaluating(K.Model):
        def test_step(self, data):
            x, y = data
            y_pred = self(x, training=False)
            loss = self.compute_loss(y=y, y_pred=y_pred)
            for metric in self.metrics:
                if metric.name == "loss":
                    metric.update_state(loss)
                else:
                    metric.update_state(y, y_pred)
            return {m.name: m.result() for m in self.metrics}

    cls = {"simple": Simple, "low_level": LowLevel, "weighted": Weighted, "evaluating": Evaluating}[pattern]
    inputs = K.Input(shape=(8,))
    model = cls(inputs, K.layers.Dense(1)(inputs))  # a subclass built like a functional model, as the guide
    _set_weights(model, 3)
    if pattern == "low_level":
        model.compile(optimizer=K.optimizers.SGD(0.05))
    else:
        model.compile(optimizer=K.optimizers.SGD(0.05), loss="mse", metrics=["mae"])
    if pattern == "evaluating":
        return model.evaluate(x, y, batch_size=16, verbose=0)
    h = model.fit(x, y, sample_weight=sw if pattern == "weighted" else None, epochs=3, batch_size=16,
                  shuffle=False, verbose=0)
    return _history(h)


@pytest.mark.parametrize("pattern", ["simple", "low_level", "weighted", "evaluating"])
def test_guide_pytorch_style_steps_run_unchanged(keras, pattern):
    mine, theirs = _guide(lamina, pattern), _guide(keras, pattern)
    if pattern == "evaluating":
        np.testing.assert_allclose(mine, theirs, rtol=1e-5)
        return
    assert set(mine) == set(theirs) == {"loss", "mae"}
    for k in mine:
        np.testing.assert_allclose(mine[k], theirs[k], rtol=1e-4)
    assert mine["loss"][-1] < mine["loss"][0] / 4


def test_zero_grad_clears_what_backward_accumulated():
    m = lamina.Sequential([lamina.Input((2,)), lamina.layers.Dense(2), lamina.layers.Dense(1)])
    x = np.ones((3, 2), "float32")
    m(x).sum().backward()
    first = [w.value.grad.copy() for w in m.trainable_weights]
    m(x).sum().backward()  # accumulates, as torch
    for g, w in zip(first, m.trainable_weights):
        np.testing.assert_allclose(w.grad, 2 * g, rtol=1e-6)
    m.zero_grad()
    assert all(w.grad is None for w in m.weights)


# ------------------------------------------------------------------------------ GAN and VAE, three ways
POINTS = (np.random.default_rng(5).standard_normal((128, 2)) * 0.3 + np.array([2.0, -1.0])).astype("float32")


def _gan(K, style, epochs=30):
    """keras.io's GAN (Dense generator and discriminator, on 2-D points). style: 'torch' (the guide's
    PyTorch form) or 'tape' (its TensorFlow form, on lamina.GradientTape)."""
    no_grad = _no_grad(K)
    latent_dim = 3

    class GAN(K.Model):
        def __init__(self, discriminator, generator):
            super().__init__()
            self.discriminator = discriminator
            self.generator = generator
            self.d_loss_tracker = K.metrics.Mean(name="d_loss")
            self.g_loss_tracker = K.metrics.Mean(name="g_loss")
            self.noise = np.random.default_rng(7)

        @property
        def metrics(self):
            return [self.d_loss_tracker, self.g_loss_tracker]

        def call(self, points):  # Keras builds the model through it before fit
            return self.discriminator(points)

        def compile(self, d_optimizer, g_optimizer, loss_fn):
            super().compile()
            self.d_optimizer = d_optimizer
            self.g_optimizer = g_optimizer
            self.loss_fn = loss_fn

        def _latent(self, n):
            return self.noise.standard_normal((n, latent_dim)).astype("float32")

        def train_step(self, real_points):
            if isinstance(real_points, tuple):
                real_points = real_points[0]
            batch_size = real_points.shape[0]
            generated = self.generator(self._latent(batch_size))
            combined = K.ops.concatenate([generated, real_points], axis=0)
            labels = np.concatenate([np.ones((batch_size, 1)), np.zeros((batch_size, 1))]).astype("float32")
            misleading_labels = np.zeros((batch_size, 1), "float32")
            d_weights, g_weights = self.discriminator.trainable_weights, self.generator.trainable_weights
            if style == "torch":
                self.zero_grad()
                d_loss = self.loss_fn(labels, self.discriminator(combined))
                d_loss.backward()
                grads = [v.value.grad for v in d_weights]
                with no_grad():
                    self.d_optimizer.apply(grads, d_weights)
                self.zero_grad()
                g_loss = self.loss_fn(misleading_labels, self.discriminator(self.generator(self._latent(batch_size))))
                g_loss.backward()
                grads = [v.value.grad for v in g_weights]
                with no_grad():
                    self.g_optimizer.apply(grads, g_weights)
            else:
                with K.GradientTape() as tape:
                    d_loss = self.loss_fn(labels, self.discriminator(combined))
                grads = tape.gradient(d_loss, d_weights)
                self.d_optimizer.apply_gradients(zip(grads, d_weights))
                with K.GradientTape() as tape:
                    g_loss = self.loss_fn(misleading_labels,
                                          self.discriminator(self.generator(self._latent(batch_size))))
                grads = tape.gradient(g_loss, g_weights)
                self.g_optimizer.apply_gradients(zip(grads, g_weights))
            self.d_loss_tracker.update_state(d_loss)
            self.g_loss_tracker.update_state(g_loss)
            return {"d_loss": self.d_loss_tracker.result(), "g_loss": self.g_loss_tracker.result()}

    discriminator = K.Sequential([K.Input((2,)), K.layers.Dense(16, activation="relu"), K.layers.Dense(1)])
    generator = K.Sequential([K.Input((latent_dim,)), K.layers.Dense(16, activation="relu"), K.layers.Dense(2)])
    _set_weights(discriminator, 10)
    _set_weights(generator, 11)
    gan = GAN(discriminator, generator)
    gan.compile(d_optimizer=K.optimizers.Adam(0.01), g_optimizer=K.optimizers.Adam(0.01),
                loss_fn=K.losses.BinaryCrossentropy(from_logits=True))
    start = generator.predict(np.random.default_rng(8).standard_normal((256, latent_dim)).astype("float32"),
                              verbose=0)
    h = gan.fit(POINTS, batch_size=32, epochs=epochs, shuffle=False, verbose=0)
    end = generator.predict(np.random.default_rng(8).standard_normal((256, latent_dim)).astype("float32"),
                            verbose=0)
    return _history(h), start, end


def test_gan_pytorch_style_and_gradient_tape_style(keras):
    mine, start, end = _gan(lamina, "torch")
    taped, _, taped_end = _gan(lamina, "tape")
    theirs, _, k_end = _gan(keras, "torch")
    assert set(mine) == {"d_loss", "g_loss"} and all(np.isfinite(v).all() for v in mine.values())
    for k in mine:  # the same steps three ways
        np.testing.assert_allclose(mine[k], theirs[k], rtol=2e-3, atol=1e-4)
        np.testing.assert_allclose(taped[k], mine[k], rtol=1e-5)
    np.testing.assert_allclose(end, k_end, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(taped_end, end, rtol=1e-5, atol=1e-6)
    # the generator moved its points towards the real ones
    target = POINTS.mean(0)
    assert np.linalg.norm(end.mean(0) - target) < 0.5 * np.linalg.norm(start.mean(0) - target)


BITS = np.clip(np.random.default_rng(6).choice([0.1, 0.9], size=(2, 8))[np.random.default_rng(6).integers(0, 2, 96)]
               + 0.05 * np.random.default_rng(9).standard_normal((96, 8)), 0.0, 1.0).astype("float32")


def _vae(K, style, epochs=10):
    """keras.io's VAE (dense encoder and decoder on 8-feature vectors), trained by a custom train_step."""
    no_grad = _no_grad(K)
    ops = K.ops
    latent = 2

    class VAE(K.Model):
        def __init__(self, encoder, decoder, **kwargs):
            super().__init__(**kwargs)
            self.encoder = encoder
            self.decoder = decoder
            self.total_loss_tracker = K.metrics.Mean(name="total_loss")
            self.reconstruction_loss_tracker = K.metrics.Mean(name="reconstruction_loss")
            self.kl_loss_tracker = K.metrics.Mean(name="kl_loss")
            self.noise = np.random.default_rng(12)

        @property
        def metrics(self):
            return [self.total_loss_tracker, self.reconstruction_loss_tracker, self.kl_loss_tracker]

        def call(self, data):  # Keras builds the model through it before fit
            return self.decoder(self.encoder(data)[:, :latent])

        def vae_losses(self, data):
            h = self.encoder(data)
            z_mean, z_log_var = h[:, :latent], h[:, latent:]
            epsilon = self.noise.standard_normal((data.shape[0], latent)).astype("float32")
            z = z_mean + ops.multiply(ops.exp(0.5 * z_log_var), epsilon)
            reconstruction = self.decoder(z)
            reconstruction_loss = ops.mean(K.losses.binary_crossentropy(data, reconstruction)) * 8.0
            kl_loss = -0.5 * (1 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var))
            kl_loss = ops.mean(ops.sum(kl_loss, axis=1))
            return reconstruction_loss + kl_loss, reconstruction_loss, kl_loss

        def train_step(self, data):
            if style == "torch":
                self.zero_grad()
                total_loss, reconstruction_loss, kl_loss = self.vae_losses(data)
                total_loss.backward()
                weights = [v for v in self.trainable_weights]
                with no_grad():
                    self.optimizer.apply([v.value.grad for v in weights], weights)
            else:
                with K.GradientTape() as tape:
                    total_loss, reconstruction_loss, kl_loss = self.vae_losses(data)
                grads = tape.gradient(total_loss, self.trainable_weights)
                self.optimizer.apply_gradients(zip(grads, self.trainable_weights))
            self.total_loss_tracker.update_state(total_loss)
            self.reconstruction_loss_tracker.update_state(reconstruction_loss)
            self.kl_loss_tracker.update_state(kl_loss)
            return {"loss": self.total_loss_tracker.result(),
                    "reconstruction_loss": self.reconstruction_loss_tracker.result(),
                    "kl_loss": self.kl_loss_tracker.result()}

    encoder = K.Sequential([K.Input((8,)), K.layers.Dense(16, activation="relu"), K.layers.Dense(2 * latent)])
    decoder = K.Sequential([K.Input((latent,)), K.layers.Dense(16, activation="relu"),
                            K.layers.Dense(8, activation="sigmoid")])
    _set_weights(encoder, 13)
    _set_weights(decoder, 14)
    vae = VAE(encoder, decoder)
    vae.compile(optimizer=K.optimizers.Adam(0.01))
    return _history(vae.fit(BITS, epochs=epochs, batch_size=16, shuffle=False, verbose=0))


def test_vae_pytorch_style_and_gradient_tape_style(keras):
    mine, taped, theirs = _vae(lamina, "torch"), _vae(lamina, "tape"), _vae(keras, "torch")
    assert set(mine) == {"loss", "reconstruction_loss", "kl_loss"}
    for k in mine:
        np.testing.assert_allclose(mine[k], theirs[k], rtol=2e-3, atol=1e-4)
        np.testing.assert_allclose(taped[k], mine[k], rtol=1e-5)
    np.testing.assert_allclose(mine["loss"], mine["reconstruction_loss"] + mine["kl_loss"], rtol=1e-5)
    assert mine["loss"][-1] < 0.7 * mine["loss"][0]


# ---------------------------------------------------------------------------------------- GradientTape
def test_gradient_tape_matches_central_differences():
    rng = np.random.default_rng(0)
    w = lamina.Variable(rng.standard_normal((3, 2)), dtype="float64")
    b = lamina.Variable(rng.standard_normal(2), dtype="float64")
    x = rng.standard_normal((4, 3))

    def loss_of(wv, bv):
        return float(np.sum(np.tanh(x @ wv + bv) ** 2))

    with lamina.GradientTape() as tape:
        loss = (lamina.ops.tanh(lamina.ops.matmul(lamina.Tensor(x), w) + b) ** 2).sum()
    gw, gb = tape.gradient(loss, [w, b])
    eps = 1e-6
    for var, g, other in ((w, gw, "b"), (b, gb, "w")):
        numeric = np.zeros(var.shape)
        for idx in np.ndindex(var.shape):
            plus, minus = var.numpy().copy(), var.numpy().copy()
            plus[idx] += eps
            minus[idx] -= eps
            if other == "b":
                numeric[idx] = (loss_of(plus, b.numpy()) - loss_of(minus, b.numpy())) / (2 * eps)
            else:
                numeric[idx] = (loss_of(w.numpy(), plus) - loss_of(w.numpy(), minus)) / (2 * eps)
        assert isinstance(g, lamina.Tensor)
        np.testing.assert_allclose(g.numpy(), numeric, rtol=1e-6, atol=1e-8)


def test_gradient_tape_watch_persistent_and_structures():
    x = lamina.Tensor(np.array([1.0, 2.0, 3.0], np.float32))
    w = lamina.Variable(np.array([0.5, -1.0, 2.0], np.float32))
    with lamina.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = (x * x * w).sum()
        z = (w * 3.0).sum()
    assert not x.requires_grad  # watch lasts for the block only
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), 2 * x.numpy() * w.numpy())
    both = tape.gradient(y, {"w": w, "rest": [x]})
    np.testing.assert_allclose(both["w"].numpy(), x.numpy() ** 2)
    np.testing.assert_allclose(both["rest"][0].numpy(), 2 * x.numpy() * w.numpy())
    np.testing.assert_allclose(tape.gradient([y, z], w).numpy(), x.numpy() ** 2 + 3.0)  # targets add up
    np.testing.assert_allclose(tape.gradient(y, w, output_gradients=np.float32(2.0)).numpy(), 2 * x.numpy() ** 2)

    with lamina.GradientTape() as once:
        y = (w * w).sum()
    g, none = once.gradient(y, [w, x])
    np.testing.assert_allclose(g.numpy(), 2 * w.numpy())
    assert none is None
    with pytest.raises(RuntimeError, match="non-persistent"):
        once.gradient(y, w)

    with lamina.no_grad():  # the tape records even inside no_grad
        with lamina.GradientTape(watch_accessed_variables=False) as only:
            only.watch(x)
            y = (x * w).sum()
    gx, gw = only.gradient(y, [x, w], unconnected_gradients="zero")
    np.testing.assert_allclose(gx.numpy(), w.numpy())
    np.testing.assert_array_equal(gw.numpy(), np.zeros(3))  # w was not watched
    with pytest.raises(ValueError, match="Tensors"):
        with lamina.GradientTape() as t:
            t.watch(np.ones(3))


def test_a_gradient_penalty_through_nested_tapes_raises_instead_of_dropping_the_term():
    """WGAN-GP's pattern: an inner tape's gradient (of the critic with respect to its input) inside the outer
    tape's loss. TensorFlow differentiates through it (second order); lamina cannot, and used to return the
    outer gradient without the penalty's term, silently. Now the outer gradient raises; stop_gradient on the
    inner gradient (a constant on purpose) and an inner gradient only looked at still work."""
    rng = np.random.default_rng(0)
    critic = lamina.Sequential([lamina.Input((3,)), lamina.layers.Dense(4, activation="tanh"), lamina.layers.Dense(1)])
    x = lamina.Tensor(rng.standard_normal((5, 3)).astype("float32"))
    w = critic.trainable_weights

    def penalty_loss(stop):
        with lamina.GradientTape() as outer:
            with lamina.GradientTape() as inner:
                inner.watch(x)
                score = critic(x)
            g = inner.gradient(score, x)
            g = lamina.ops.stop_gradient(g) if stop else g
            gp = lamina.ops.mean((lamina.ops.sqrt(lamina.ops.sum(g * g, axis=1)) - 1.0) ** 2)
            loss = lamina.ops.mean(critic(x)) + 10.0 * gp     # the critic's cost: its own forward pass
        return outer, loss, g

    outer, loss, g = penalty_loss(stop=False)
    with pytest.raises(RuntimeError, match="cannot differentiate a gradient"):
        outer.gradient(loss, w)
    # the inner gradient's value is the plain first-order gradient
    with lamina.GradientTape() as plain:
        plain.watch(x)
        score = critic(x)
    np.testing.assert_allclose(g.numpy(), plain.gradient(score, x).numpy(), rtol=1e-6)
    # stop_gradient: the penalty is a constant, the outer gradient is that of the mean score
    outer, loss, _ = penalty_loss(stop=True)
    got = outer.gradient(loss, w)
    with lamina.GradientTape() as ref:
        s = lamina.ops.mean(critic(x))
    for a, b in zip(got, ref.gradient(s, w)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6)
    # an inner gradient only logged, never differentiated: the outer tape works as before
    with lamina.GradientTape() as outer:
        with lamina.GradientTape() as inner:
            inner.watch(x)
            score = critic(x)
        norm = float(lamina.ops.sum(inner.gradient(score, x) ** 2))
        loss = lamina.ops.mean(critic(x))
    assert norm > 0 and all(v is not None for v in outer.gradient(loss, w))
    # outside any other tape the gradient is a plain constant, as before
    with lamina.GradientTape() as alone:
        alone.watch(x)
        score = critic(x)
    assert alone.gradient(score, x)._op is None


def test_tensorflow_style_loop_on_a_model():
    """The TensorFlow custom training loop, import changed: the loss falls and matches fit()."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 4)).astype("float32")
    y = (x @ rng.standard_normal((4, 1))).astype("float32")

    def model():
        m = lamina.Sequential([lamina.Input((4,)), lamina.layers.Dense(8, activation="tanh"), lamina.layers.Dense(1)])
        _set_weights(m, 0)
        return m

    m, loss_fn, opt = model(), lamina.losses.MeanSquaredError(), lamina.optimizers.SGD(0.05)
    losses = []
    for _ in range(20):
        with lamina.GradientTape() as tape:
            loss = loss_fn(y, m(x, training=True))
        grads = tape.gradient(loss, m.trainable_weights)
        opt.apply_gradients(zip(grads, m.trainable_weights))
        losses.append(float(loss))
    ref = model()
    ref.compile(lamina.optimizers.SGD(0.05), "mse")
    h = ref.fit(x, y, batch_size=32, epochs=20, shuffle=False, verbose=0)
    np.testing.assert_allclose(losses, h.history["loss"], rtol=1e-5)
    assert losses[-1] < 0.5 * losses[0]


# ------------------------------------------------------------------------------------------- 5. casting
@pytest.mark.parametrize("make", [lambda K: K.layers.SimpleRNN(3), lambda K: K.layers.LSTM(3),
                                  lambda K: K.layers.GRU(3), lambda K: K.layers.Bidirectional(K.layers.LSTM(2))],
                         ids=["SimpleRNN", "LSTM", "GRU", "Bidirectional"])
@pytest.mark.parametrize("dtype", ["bool", "int32", "int64"])
def test_recurrent_layers_cast_bool_and_int_inputs(keras, make, dtype):
    x = np.random.default_rng(0).integers(0, 2, (2, 5, 4)).astype(dtype)
    layer = make(lamina)
    out = layer(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.numpy(), layer(x.astype("float32")).numpy(), rtol=1e-6)
    # Keras with the same weights
    theirs = make(keras)
    theirs(x.astype("float32"))
    theirs.set_weights(layer.get_weights())
    k_out = theirs(x)
    assert str(k_out.dtype).endswith("float32")
    np.testing.assert_allclose(out.numpy(), keras.ops.convert_to_numpy(k_out), rtol=1e-5, atol=1e-6)


def test_embedding_in_a_custom_layer_on_a_float_input(keras):
    def build(K):
        class TokenAndPosition(K.layers.Layer):
            def __init__(self, maxlen, vocab, dim, **kw):
                super().__init__(**kw)
                self.tok = K.layers.Embedding(vocab, dim)
                self.pos = K.layers.Embedding(maxlen, dim)
                self.positions = np.arange(maxlen)

            def call(self, x):
                return self.tok(x) + self.pos(self.positions)

        inputs = K.Input((6,))  # float32, as keras.Input makes it
        layer = TokenAndPosition(6, 20, 4)
        return K.Model(inputs, layer(inputs)), layer

    ids = np.random.default_rng(1).integers(0, 20, (5, 6)).astype("float32")
    model, layer = build(lamina)
    out = model.predict(ids, verbose=0)
    table, pos = layer.tok.get_weights()[0], layer.pos.get_weights()[0]
    np.testing.assert_allclose(out, table[ids.astype(int)] + pos[None], rtol=1e-6)
    k_model, _ = build(keras)
    k_model.set_weights(model.get_weights())
    np.testing.assert_allclose(out, k_model.predict(ids, verbose=0), rtol=1e-6)


@pytest.mark.parametrize("make,shape", [
    (lambda K: K.layers.LayerNormalization(), (2, 4)),
    (lambda K: K.layers.BatchNormalization(), (2, 4)),
    (lambda K: K.layers.GroupNormalization(2), (2, 4)),
    (lambda K: K.layers.Normalization(mean=0.5, variance=2.0), (2, 4)),
    (lambda K: K.layers.GlobalAveragePooling1D(), (2, 5, 3)),
    (lambda K: K.layers.PReLU(), (2, 4)),
    (lambda K: K.layers.Dense(3), (2, 4)),
], ids=["LayerNormalization", "BatchNormalization", "GroupNormalization", "Normalization",
        "GlobalAveragePooling1D", "PReLU", "Dense"])
@pytest.mark.parametrize("dtype", ["bool", "int32"])
def test_float_layers_compute_integer_inputs_in_float32_as_keras(keras, make, shape, dtype):
    if dtype == "bool" and make(lamina).__class__.__name__ == "PReLU":
        pytest.skip("Keras refuses bool inputs to PReLU (torch has no bool PReLU)")
    x = (np.arange(np.prod(shape)).reshape(shape) % 3).astype(dtype)
    layer = make(lamina)
    out = layer(x)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.numpy(), layer(x.astype("float32")).numpy(), rtol=1e-6)
    theirs = make(keras)
    theirs(x.astype("float32"))
    theirs.set_weights(layer.get_weights())
    k_out = theirs(x)
    assert str(k_out.dtype).endswith("float32")
    if type(layer).__name__ in ("LayerNormalization", "GroupNormalization"):
        # Keras takes these moments in the integer dtype (all outputs 1.0 here); lamina normalises the
        # float values, what Keras gives for the same input as float32
        k_out = theirs(x.astype("float32"))
    np.testing.assert_allclose(out.numpy(), keras.ops.convert_to_numpy(k_out), rtol=1e-5, atol=1e-6)


def test_evaluate_list_order_for_several_outputs_is_keras_s(keras):
    def run(K):
        i = K.Input((3,))
        m = K.Model(i, [K.layers.Dense(1, name="a")(i), K.layers.Dense(2, name="b")(i)])
        m.compile("sgd", ["mse", "mae"], metrics=[["mae"], ["mse"]])
        m.set_weights([np.full(w.shape, 0.1 * (j + 1), "float32") for j, w in enumerate(m.get_weights())])
        x = np.arange(12, dtype="float32").reshape(4, 3) / 10
        ys = [np.ones((4, 1), "float32"), np.zeros((4, 2), "float32")]
        ev, d = m.evaluate(x, ys, verbose=0), m.evaluate(x, ys, verbose=0, return_dict=True)
        return ev, m.train_on_batch(x, ys), d

    (ev, tob, d), (k_ev, k_tob, k_d) = run(lamina), run(keras)
    np.testing.assert_allclose(ev, k_ev, rtol=1e-5)
    np.testing.assert_allclose(tob, k_tob, rtol=1e-5)
    assert d.keys() == k_d.keys()
    # [loss, a_loss, b_loss, a_mae, b_mse], each recomputed
    np.testing.assert_allclose(ev[0], ev[1] + ev[2], rtol=1e-6)
    np.testing.assert_allclose(ev[1:], [d["a_loss"], d["b_loss"], d["a_mae"], d["b_mse"]], rtol=1e-6)


def _several_outputs_logs(K, loss):
    """A 3-output functional model (dict outputs given out of name order) evaluated, trained one batch and fitted
    for an epoch: what Keras 3.15 puts in which order."""
    i = K.Input((3,), name="x")
    h = K.layers.Dense(4, kernel_initializer="ones", name="h")(i)
    outs = {name: K.layers.Dense(1, kernel_initializer=init, name=name)(h)
            for name, init in (("zeta", "ones"), ("mid", "zeros"), ("alpha", "zeros"))}
    m = K.Model(i, outs)
    m.compile("sgd", loss, metrics={"zeta": ["mae"], "alpha": ["mse"]})
    x = np.ones((8, 3), "float32")
    ys = {"zeta": np.ones((8, 1), "float32"), "mid": np.full((8, 1), 2.0, "float32"),
          "alpha": np.full((8, 1), 3.0, "float32")}
    seen = {}

    class Record(K.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.setdefault("batch", list(logs))

        def on_epoch_end(self, epoch, logs=None):
            seen["epoch"] = list(logs)

    ev, d = m.evaluate(x, ys, verbose=0), m.evaluate(x, ys, verbose=0, return_dict=True)
    tob = m.train_on_batch(x, ys, return_dict=True)
    h = m.fit(x, ys, epochs=1, verbose=0, validation_data=(x, ys),
              callbacks=[Record(), K.callbacks.ReduceLROnPlateau(monitor="loss")])
    return dict(ev=ev, d=list(d.items()), tob=list(tob), history=list(h.history), predict=list(m.predict(x, verbose=0)),
                call=list(m(x)), names=list(m.output_names), **seen)


@pytest.mark.parametrize("loss", [
    {"zeta": "mse", "alpha": "mae"},                    # no loss for 'mid'; named out of order
    {"alpha": "mae", "mid": "mse", "zeta": "mse"},
], ids=["two_of_three", "all_sorted"])
def test_logs_and_output_losses_are_in_keras_order(keras, loss):
    # Keras 3.15: one loss tracker per output that has a loss, in the order compile() named them (evaluate's list
    # follows it after the total); every dict of logs (evaluate's, train_on_batch's, the callbacks', the history's)
    # in the order of the names, the val_ entries among the others, then what callbacks add (learning_rate); a
    # dict of outputs in the order of its keys
    ours, theirs = _several_outputs_logs(lamina, loss), _several_outputs_logs(keras, loss)
    np.testing.assert_allclose(ours.pop("ev"), theirs.pop("ev"), rtol=1e-6)
    d, k_d = ours.pop("d"), theirs.pop("d")
    assert [k for k, _ in d] == [k for k, _ in k_d]
    np.testing.assert_allclose([v for _, v in d], [v for _, v in k_d], rtol=1e-6)
    assert ours == theirs


def test_logs_and_output_losses_order_recomputed():
    # the same without Keras: 3 outputs, zeta = 4 * 3 = 12 against 1 (mse 121), alpha = 0 against 3 (mae 3, mse 9)
    r = _several_outputs_logs(lamina, {"zeta": "mse", "alpha": "mae"})
    np.testing.assert_allclose(r["ev"], [124.0, 121.0, 3.0, 9.0, 11.0], rtol=1e-6)   # loss, zeta, alpha, then by name
    assert [k for k, _ in r["d"]] == ["alpha_loss", "alpha_mse", "loss", "zeta_loss", "zeta_mae"]
    assert r["batch"] == r["tob"] == ["alpha_loss", "alpha_mse", "loss", "zeta_loss", "zeta_mae"]
    assert r["epoch"] == ["alpha_loss", "alpha_mse", "loss", "val_alpha_loss", "val_alpha_mse", "val_loss",
                          "val_zeta_loss", "val_zeta_mae", "zeta_loss", "zeta_mae"]
    assert r["history"] == r["epoch"] + ["learning_rate"]   # (added by ReduceLROnPlateau, after Record saw them)
    assert r["predict"] == r["call"] == r["names"] == ["alpha", "mid", "zeta"]
