"""keras.remat and keras.RematScope (lamina/rematerialization.py): the same values and gradients as without, the first run's
graph really dropped and rerun in backward, random draws replayed, variable updates and added losses not
repeated, and RematScope's modes choosing the layers Keras's choose."""
import gc
import weakref

import numpy as np
import pytest

import lamina
from lamina import Tensor, grad, layers, ops
from lamina.testing import check_grad

R = np.random.default_rng(21)


def _grads(fn, x, params):
    xt = Tensor(x, requires_grad=True)
    y = fn(xt)
    gs = grad((y * y).sum(), [xt] + list(params))
    return [np.asarray(y.data)] + [np.asarray(g.data) for g in gs]


def test_remat_gives_the_same_values_and_reruns_in_backward():
    w = lamina.Variable(R.standard_normal((6, 5)))
    calls = []

    def block(x):
        calls.append(1)
        h = ops.tanh(ops.matmul(x, w))
        return ops.sigmoid(h) * h + ops.exp(-h * h)
    x = R.standard_normal((4, 6))
    want = _grads(block, x, [w])
    assert len(calls) == 1
    got = _grads(lamina.remat(block), x, [w])
    assert len(calls) == 3   # forward, then the rerun in backward
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    check_grad(lambda x, v: lamina.remat(lambda a: ops.tanh(ops.matmul(a, v)) * a[:, :5])(x), x, R.standard_normal((6, 5)))


def test_the_first_run_s_graph_is_not_kept():
    """The intermediate ops (and the arrays they saved) die after the forward pass; only inputs and
    outputs stay. Without remat the graph keeps them until backward."""
    w = lamina.Variable(R.standard_normal((50, 50)))
    seen = []

    def block(x):
        h = ops.relu(ops.matmul(x, w))
        seen.append(weakref.ref(h._op))
        return ops.matmul(h, w)
    x = Tensor(R.standard_normal((8, 50)), requires_grad=True)
    y_plain = block(x)
    y_remat = lamina.remat(block)(x)
    gc.collect()
    assert seen[0]() is not None      # plain: the graph holds the ReLU's op
    assert seen[1]() is None          # remat: gone
    g_plain, = grad(y_plain.sum(), [x])
    g_remat, = grad(y_remat.sum(), [x])
    np.testing.assert_array_equal(g_plain.data, g_remat.data)


def test_random_draws_are_replayed_and_updates_are_not_repeated():
    """Dropout (the global stream and a seeded layer's own generator) draws the same masks in the rerun;
    BatchNormalization's moving statistics move once; an activity regulariser's loss is added once."""
    x = R.standard_normal((16, 12)).astype(np.float32)

    def build():
        lamina.utils.set_random_seed(3)
        return lamina.Sequential([
            layers.Dense(24, activation="relu", activity_regularizer="l2"), layers.Dropout(0.4),
            layers.Dropout(0.3, seed=7), layers.BatchNormalization(), layers.Dense(3)])
    plain = build()
    plain(x)
    with lamina.RematScope(mode="full"):
        rematted = build()
    rematted(x)
    rematted.set_weights(plain.get_weights())
    results = []
    for m in (plain, rematted):
        lamina.utils.set_random_seed(11)
        xt = Tensor(x, requires_grad=True)
        y = m(xt, training=True)
        loss = (y * y).sum() + sum(m.losses)
        gs = grad(loss, [xt] + m.trainable_weights)
        results.append([y.numpy()] + [np.asarray(g.data) for g in gs] + [w.numpy() for w in m.non_trainable_weights]
                       + [len(m.losses)])
    assert results[1][-1] == results[0][-1] == 1
    for a, b in zip(*results):
        # (float32 rounding: the activity loss reaches the first layer by its own path, added in another order)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    mean = rematted.layers[3].moving_mean.numpy()
    assert not np.allclose(mean, 0)   # it moved (once: equal to the plain model's above)


class _Counting(layers.Layer):
    def __init__(self, units, **kw):
        super().__init__(**kw)
        self.dense = layers.Dense(units, activation=self._act)
        self.calls = 0
        self.act_calls = 0

    def _act(self, x):
        self.act_calls += 1
        return ops.relu(x)

    def call(self, x):
        self.calls += 1
        return self.dense(x)


@pytest.mark.parametrize("scope,expected", [
    (None, [1, 1]),
    (dict(mode="full"), [2, 2]),
    (dict(mode=None), [1, 1]),
    (dict(mode="list_of_layers", layer_names=["b"]), [1, 2]),
    (dict(mode="larger_than", output_size_threshold=4 * 10), [2, 1]),   # a: 4 x 16 values, b: 4 x 8
])
def test_remat_scope_modes_pick_the_layers_keras_picks(scope, expected):
    x = R.standard_normal((4, 6)).astype(np.float32)

    def make():
        return _Counting(16, name="a"), _Counting(8, name="b")
    if scope is None:
        a, b = make()
    else:
        with lamina.RematScope(**scope):
            a, b = make()
    a(x)
    b(a(x))
    a.calls = b.calls = 0
    xt = Tensor(x, requires_grad=True)
    y = b(a(xt))
    grad(y.sum(), [xt] + a.trainable_weights + b.trainable_weights)
    assert [a.calls, b.calls] == expected


def test_activations_mode_recomputes_only_the_activation():
    x = R.standard_normal((4, 6)).astype(np.float32)
    with lamina.RematScope(mode="activations"):
        a = _Counting(16)
    a(x)
    a.calls = a.act_calls = 0
    plain = _Counting(16)
    plain(x)
    plain.dense.set_weights(a.dense.get_weights())
    plain.calls = plain.act_calls = 0
    got = _grads(a, x, a.trainable_weights)
    want = _grads(plain, x, plain.trainable_weights)
    # the Dense layer was created inside the Counting layer's __init__, so within the scope too: its
    # activation is rerun, the outer call (no activation of its own) is not
    assert (a.calls, a.act_calls) == (1, 2) and (plain.calls, plain.act_calls) == (1, 1)
    for u, v in zip(got, want):
        np.testing.assert_array_equal(u, v)


def test_scope_arguments_nesting_and_errors():
    with pytest.raises(ValueError, match="Invalid mode 'fast'"):
        lamina.RematScope(mode="fast")
    assert lamina.remat.__module__ == "lamina.rematerialization"
    from lamina.rematerialization import get_current_remat_mode
    assert get_current_remat_mode() is None
    with lamina.RematScope(mode="full"):
        with lamina.RematScope(mode="larger_than", output_size_threshold=512):
            mode = get_current_remat_mode()
            assert (mode.mode, mode.output_size_threshold, mode.layer_names) == ("larger_than", 512, [])
            inner = layers.Dense(2)
        outer = layers.Dense(2)
    assert inner._remat_mode.mode == "larger_than" and outer._remat_mode.mode == "full"
    assert layers.Dense(2)._remat_mode is None and get_current_remat_mode() is None


def test_a_tensor_read_from_the_enclosing_graph_keeps_the_graph():
    """f reads an intermediate of the enclosing graph that is not one of its arguments: its graph is kept
    (no rerun), and the gradient still reaches what that tensor came from."""
    x = Tensor(R.standard_normal((3, 4)), requires_grad=True)
    outside = ops.exp(x)
    calls = []

    def f(a):
        calls.append(1)
        return a * outside
    y = lamina.remat(f)(x)
    g, = grad(y.sum(), [x])
    assert len(calls) == 1
    np.testing.assert_allclose(g.data, np.exp(x.data) * (1 + x.data))


def test_no_grad_and_nested_remat():
    w = lamina.Variable(R.standard_normal((5, 5)))
    calls = []

    def inner(x):
        calls.append("inner")
        return ops.tanh(ops.matmul(x, w))

    def outer(x):
        calls.append("outer")
        return lamina.remat(inner)(x) * 2.0
    x = R.standard_normal((3, 5))
    with lamina.no_grad():
        lamina.remat(outer)(Tensor(x))
    assert calls == ["outer", "inner"]
    calls.clear()
    got = _grads(lamina.remat(outer), x, [w])
    want = _grads(lambda t: ops.tanh(ops.matmul(t, w)) * 2.0, x, [w])
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    assert calls.count("outer") == 2 and calls.count("inner") >= 2


def test_keras_docstring_example_trains_like_the_plain_layer():
    """Keras's remat example (a custom layer whose call runs remat(self.intermediate_function)), fitted:
    the same weights as the layer without remat after the same epochs."""
    class CustomRematLayer(layers.Layer):
        def __init__(self, use_remat, **kwargs):
            super().__init__(**kwargs)
            self.fn = lamina.remat(self.intermediate_function) if use_remat else self.intermediate_function

        def intermediate_function(self, x):
            for _ in range(2):
                x = x + x * 0.1
            return x

        def call(self, inputs):
            return self.fn(inputs)
    x = R.standard_normal((64, 4)).astype(np.float32)
    y = x.sum(axis=1, keepdims=True)
    weights = []
    for use_remat in (False, True):
        lamina.utils.set_random_seed(0)
        inputs = layers.Input(shape=(4,))
        h = layers.Dense(4, activation="relu")(inputs)
        h = CustomRematLayer(use_remat)(h)
        model = lamina.Model(inputs, layers.Dense(1)(h))
        model.compile(optimizer="sgd", loss="mse")
        model.fit(x, y, epochs=2, batch_size=16, verbose=0, shuffle=False)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_a_deep_stack_holds_less_memory_with_remat():
    """Six blocks of four Dense(128, tanh) on 4096 rows, the blocks rematerialised by name: NumPy's memory
    (tracemalloc) held after the forward pass is a quarter of the plain model's (each block keeps its input
    and output instead of every layer's), the peak of forward + backward about half, and the gradients are
    the same."""
    import tracemalloc
    x = np.random.default_rng(0).standard_normal((4096, 128)).astype(np.float32)

    def run(scope):
        lamina.utils.set_random_seed(0)
        with (lamina.RematScope(mode="list_of_layers", layer_names=[f"blk{i}" for i in range(6)]) if scope
              else lamina.RematScope(mode=None)):
            blocks = [lamina.Sequential([layers.Dense(128, activation="tanh") for _ in range(4)], name=f"blk{i}")
                      for i in range(6)]
        model = lamina.Sequential(blocks)
        model(x[:2])
        tracemalloc.start()
        try:
            y = model(Tensor(x), training=True)
            held = tracemalloc.get_traced_memory()[0]
            gs = grad((y * y).mean(), model.trainable_weights)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        return held, peak, [np.asarray(g.data) for g in gs]
    held0, peak0, g0 = run(False)
    held1, peak1, g1 = run(True)
    assert held1 < 0.3 * held0 and peak1 < 0.65 * peak0, (held0, held1, peak0, peak1)
    for a, b in zip(g0, g1):
        np.testing.assert_array_equal(a, b)
