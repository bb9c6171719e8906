"""Issue 22, engine correctness of the layer base: activity regularizers (applied by Layer.__call__, per
sample, every call of a shared layer counted), the `training` default of call(), frozen layers asking
for no weight gradient, and separate random streams.

Expected values follow Keras 3.15's formulas (checked by running real Keras with KERAS_BACKEND=torch):
an activity penalty is ``regularizer(output) / batch_size`` for each output of each call, and the losses
are cleared at the start of the outermost layer call only.
"""
import numpy as np
import pytest

import lamina
from lamina import layers, models, ops, regularizers
from lamina.tensor import Tensor

RNG = np.random.default_rng(0)


def _l2_penalty(factor, *outputs):
    return sum(factor * float(np.sum(np.asarray(o, np.float64) ** 2)) / o.shape[0] for o in outputs)


def _np(t):
    return t.numpy() if hasattr(t, "numpy") else np.asarray(t)


# ----- finding 1: activity_regularizer
@pytest.mark.parametrize("make,shape", [
    (lambda r: layers.Dense(3, activity_regularizer=r), (4, 5)),
    (lambda r: layers.Conv2D(2, 3, activity_regularizer=r), (2, 5, 5, 1)),
    (lambda r: layers.SimpleRNN(3, activity_regularizer=r), (2, 4, 3)),
    (lambda r: layers.LSTM(3, activity_regularizer=r), (2, 4, 3)),
    (lambda r: layers.GRU(3, activity_regularizer=r), (2, 4, 3)),
    (lambda r: layers.LSTM(3, return_sequences=True, return_state=True, activity_regularizer=r), (2, 4, 3)),
    (lambda r: layers.Flatten(activity_regularizer=r), (3, 2, 2)),
    (lambda r: layers.Activation("tanh", activity_regularizer=r), (3, 4)),
])
def test_activity_regularizer_applied_to_every_output_divided_by_batch(make, shape):
    layer = make(regularizers.L2(0.1))
    x = RNG.standard_normal(shape).astype(np.float32)
    out = layer(x)
    outs = out if isinstance(out, (list, tuple)) else [out]
    assert len(layer.losses) == len(outs)
    got = sum(float(_np(l)) for l in layer.losses)
    assert got == pytest.approx(_l2_penalty(0.1, *[_np(o) for o in outs]), rel=1e-5)


def test_activity_regularizer_of_attention_layers():
    q = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    v = RNG.standard_normal((2, 5, 4)).astype(np.float32)
    mha = layers.MultiHeadAttention(2, 3, activity_regularizer="l2")
    out, scores = mha(q, v, return_attention_scores=True)
    assert len(mha.losses) == 2  # both outputs, as Keras's tree.flatten(outputs)
    assert sum(float(_np(l)) for l in mha.losses) == pytest.approx(
        _l2_penalty(0.01, _np(out), _np(scores)), rel=1e-5)
    att = layers.Attention(activity_regularizer=regularizers.L1(0.5))
    out = att([q, v])
    (loss,) = att.losses
    assert float(_np(loss)) == pytest.approx(0.5 * np.abs(_np(out)).sum() / 2, rel=1e-5)


def test_conv_activity_penalty_counted_once_and_divided_by_batch():
    conv = layers.Conv2D(2, 3, activity_regularizer=regularizers.L1(0.2))
    x = RNG.standard_normal((3, 6, 6, 1)).astype(np.float32)
    y = conv(x)
    (loss,) = conv.losses
    assert float(_np(loss)) == pytest.approx(0.2 * np.abs(_np(y)).sum() / 3, rel=1e-5)


def test_every_layer_accepts_activity_regularizer_and_keeps_it_in_config():
    layer = layers.Flatten(activity_regularizer="l1")
    assert isinstance(layer.activity_regularizer, regularizers.L1)
    again = layers.Flatten.from_config(layer.get_config())
    assert isinstance(again.activity_regularizer, regularizers.L1)
    dense = layers.Dense(2, activity_regularizer=regularizers.L2(0.3))
    again = layers.Dense.from_config(dense.get_config())
    assert again.activity_regularizer.l2 == pytest.approx(0.3)


def test_shared_layer_penalties_of_both_calls_count_and_reach_the_training_loss():
    lamina.utils.set_random_seed(0)
    shared = layers.Dense(4, activity_regularizer=regularizers.L2(0.05), kernel_initializer="orthogonal")
    inp = layers.Input((4,))
    h1 = shared(inp)
    h2 = shared(h1)
    model = models.Model(inp, layers.Dense(1)(h2))
    x = RNG.standard_normal((6, 4)).astype(np.float32)
    y = RNG.standard_normal((6, 1)).astype(np.float32)
    pred = model(x)
    assert len(model.losses) == 2
    k, b = (_np(w) for w in shared.weights)
    a1 = x @ k + b
    a2 = a1 @ k + b
    want_pen = _l2_penalty(0.05, a1, a2)
    assert sum(float(_np(l)) for l in model.losses) == pytest.approx(want_pen, rel=1e-5)
    model(x)
    assert len(model.losses) == 2  # the next outermost call starts afresh
    model.compile(optimizer=lamina.optimizers.SGD(learning_rate=0.0), loss="mse")
    mse = float(np.mean((_np(pred) - y) ** 2))
    got = model.train_on_batch(x, y)
    assert got == pytest.approx(mse + want_pen, rel=1e-5)
    assert model.evaluate(x, y, verbose=0) == pytest.approx(mse + want_pen, rel=1e-5)


def test_activity_penalty_gradient_reaches_the_kernel():
    dense = layers.Dense(3, activity_regularizer=regularizers.L2(0.1))
    x = RNG.standard_normal((4, 2)).astype(np.float32)
    y = dense(x)
    (pen,) = dense.losses
    pen.backward()
    # d/dK 0.1 * sum((xK + b)^2) / 4 = 0.2 / 4 * x^T y
    np.testing.assert_allclose(dense.kernel.grad, 0.05 * x.T @ _np(y), rtol=1e-5, atol=1e-7)


# ----- finding 2: call()'s default for `training`
class _Recorder(layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = []

    def call(self, x, training=True):
        self.seen.append(training)
        return x


def test_training_default_of_call_signature_used_when_nobody_gives_one():
    rec = _Recorder()
    x = np.ones((2, 3), np.float32)
    rec(x)
    assert rec.seen == [True]
    rec(x, training=False)
    assert rec.seen[-1] is False

    class Outer(models.Model):
        def __init__(self):
            super().__init__()
            self.rec = _Recorder()

        def call(self, x):
            return self.rec(x)

    outer = Outer()
    outer(x)
    assert outer.rec.seen[-1] is True        # no outer value: the inner default
    outer(x, training=False)
    assert outer.rec.seen[-1] is False       # the outer call's value wins over the default


def test_training_default_inside_predict_and_fit():
    rec = _Recorder()
    inp = layers.Input((3,))
    model = models.Model(inp, layers.Dense(1)(rec(inp)))
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((4, 3), np.float32), np.zeros((4, 1), np.float32)
    rec.seen.clear()
    model.predict(x, verbose=0)
    assert rec.seen and all(v is False for v in rec.seen)
    rec.seen.clear()
    model.fit(x, y, epochs=1, verbose=0)
    assert rec.seen and all(v is True for v in rec.seen)
    rec.seen.clear()
    model.evaluate(x, y, verbose=0)
    assert rec.seen and all(v is False for v in rec.seen)
    rec.seen.clear()
    model(x)
    assert rec.seen == [True]


# ----- finding 3: frozen layers ask for no weight gradient
def _finetune_model():
    base = models.Sequential([layers.Conv2D(4, 3, activation="relu"), layers.Conv2D(4, 3, activation="relu")],
                             name="base")
    inp = layers.Input((8, 8, 1))
    h = layers.Flatten()(base(inp))
    return base, models.Model(inp, layers.Dense(2)(h))


def test_frozen_base_gets_no_gradient_and_its_ops_do_not_record():
    lamina.utils.set_random_seed(0)
    base, model = _finetune_model()
    base.trainable = False
    assert all(not w.requires_grad for w in base.weights)
    model.compile(optimizer="sgd", loss="mse")
    x = RNG.standard_normal((4, 8, 8, 1)).astype(np.float32)
    y = RNG.standard_normal((4, 2)).astype(np.float32)
    before = [w.copy() for w in base.get_weights()]
    model.fit(x, y, epochs=2, verbose=0)
    for a, b in zip(before, base.get_weights()):
        np.testing.assert_array_equal(a, b)
    # eagerly: the base's output is not part of any graph, so no base op kept anything for backward
    feats = base(x, training=True)
    assert not feats.requires_grad and feats._op is None
    loss = ops.mean(model(x, training=True) ** 2)
    loss.backward()
    assert all(w.grad is None for w in base.weights)
    assert all(w.grad is not None for w in model.layers[-1].weights)
    base.trainable = True  # the current flag decides eagerly
    assert all(w.requires_grad for w in base.trainable_weights)
    ops.mean(model(x, training=True) ** 2).backward()
    assert all(w.grad is not None for w in base.weights)


def test_gan_recipe_flags_at_compile_decide_requires_grad_during_the_step():
    lamina.utils.set_random_seed(0)
    disc = models.Sequential([layers.Input((3,)), layers.Dense(4), layers.Dense(1)], name="disc")
    disc.compile(optimizer="sgd", loss="mse")
    disc.trainable = False
    gen = models.Sequential([layers.Input((2,)), layers.Dense(3)], name="gen")
    z = layers.Input((2,))
    combined = models.Model(z, disc(gen(z)))
    combined.compile(optimizer="sgd", loss="mse")
    seen = {}

    class Spy(lamina.callbacks.Callback):
        pass

    # during the discriminator's own step its weights ask for a gradient (compiled trainable) ...
    orig = disc.optimizer.apply_gradients

    def spy(pairs):
        pairs = list(pairs)
        seen["disc"] = [v.requires_grad for _, v in pairs]
        return orig(pairs)

    disc.optimizer.apply_gradients = spy
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d_before = disc.get_weights()
        disc.train_on_batch(np.ones((4, 3), np.float32), np.ones((4, 1), np.float32))
    assert seen["disc"] and all(seen["disc"])
    assert any(not np.array_equal(a, b) for a, b in zip(d_before, disc.get_weights()))
    # ... and is frozen again afterwards; inside the combined model's step it asks for none
    assert all(not w.requires_grad for w in disc.weights)
    d_before = disc.get_weights()
    g_before = gen.get_weights()
    combined.train_on_batch(np.ones((4, 2), np.float32), np.ones((4, 1), np.float32))
    for a, b in zip(d_before, disc.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(g_before, gen.get_weights()))
    assert all(not w.requires_grad for w in disc.weights)


def test_layer_built_frozen_and_non_trainable_weights_ask_no_gradient():
    d = layers.Dense(2, trainable=False)
    d(np.ones((1, 3), np.float32))
    assert not d.kernel.requires_grad and not d.bias.requires_grad
    bn = layers.BatchNormalization()
    bn(np.ones((2, 3), np.float32))
    by_name = {w.name: w for w in bn.weights}
    assert by_name["gamma"].requires_grad and not by_name["moving_mean"].requires_grad


def test_compiled_frozen_model_unfrozen_later_still_trains_frozen():
    lamina.utils.set_random_seed(0)
    base, model = _finetune_model()
    base.trainable = False
    model.compile(optimizer="sgd", loss="mse")
    base.trainable = True  # after compile: takes effect at the next compile()
    x = RNG.standard_normal((4, 8, 8, 1)).astype(np.float32)
    y = RNG.standard_normal((4, 2)).astype(np.float32)
    before = base.get_weights()
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.train_on_batch(x, y)
    for a, b in zip(before, base.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert all(w.requires_grad for w in base.weights)  # the current flag is back after the step


# ----- finding 5: separate random streams
class _OrderSpy(models.Model):
    """x[:, 0] holds the sample index; train_step records the order the batches come in."""

    def __init__(self, dropout):
        super().__init__()
        self.hidden = layers.Dense(8)
        self.drop = layers.Dropout(0.5) if dropout else None
        self.out = layers.Dense(1)
        self.order = []

    def call(self, x, training=None):
        h = self.hidden(x)
        if self.drop is not None:
            h = self.drop(h, training=training)
        return self.out(h)

    def train_step(self, data):
        self.order.extend(int(i) for i in data[0][:, 0])
        return super().train_step(data)


def _spy_run(dropout):
    lamina.utils.set_random_seed(7)
    model = _OrderSpy(dropout)
    x = np.concatenate([np.arange(40, dtype=np.float32)[:, None], RNG.standard_normal((40, 3)).astype(np.float32)], 1)
    y = np.zeros((40, 1), np.float32)
    model.compile(optimizer=lamina.optimizers.SGD(learning_rate=0.0), loss="mse")  # order only
    model.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=True)
    return model


def test_data_order_of_fit_does_not_depend_on_dropout_draws():
    with_drop, without = _spy_run(True), _spy_run(False)
    assert len(with_drop.order) == 120
    assert with_drop.order == without.order
    assert with_drop.order[:40] != list(range(40))  # it did shuffle
    # initialisation is the same too: dropout draws come from their own stream
    for a, b in zip(with_drop.hidden.get_weights() + with_drop.out.get_weights(),
                    without.hidden.get_weights() + without.out.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_initialisation_does_not_depend_on_dropout_draws():
    def kernel(draw_dropout_first):
        lamina.utils.set_random_seed(3)
        if draw_dropout_first:
            layers.Dropout(0.5)(np.ones((16, 16), np.float32), training=True)
        d = layers.Dense(4)
        d(np.ones((1, 5), np.float32))
        return d.get_weights()[0]
    np.testing.assert_array_equal(kernel(True), kernel(False))


def test_each_stream_is_reproducible_from_set_random_seed():
    def draws():
        lamina.utils.set_random_seed(11)
        return (lamina.backend.rng("init").random(3), lamina.backend.rng("noise").random(3),
                lamina.backend.rng("shuffle").random(3))
    first, second = draws(), draws()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[1], first[2])
    with pytest.raises(ValueError, match="stream"):
        lamina.backend.rng("weights")
    state = lamina.backend.get_rng_state()
    a = lamina.backend.rng("shuffle").permutation(10)
    lamina.backend.set_rng_state(state)
    np.testing.assert_array_equal(a, lamina.backend.rng("shuffle").permutation(10))


def test_embedding_lora_table_asks_no_gradient():
    emb = layers.Embedding(10, 4, lora_rank=2)
    emb(np.array([[1, 2]]))
    by_name = {w.name: w for w in emb.weights}
    assert not by_name["embeddings"].requires_grad
    assert by_name["lora_embeddings_a"].requires_grad and by_name["lora_embeddings_b"].requires_grad
