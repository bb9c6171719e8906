"""Fused recurrent ops: gradient checks and a slow NumPy reference of Keras's step formulas
(masks, go_backwards, initial states, every fused activation)."""
import numpy as np
import pytest

from lamina import Tensor, grad, ops
from lamina.testing import check_grad

R = np.random.default_rng(5)

ACT = {
    "tanh": np.tanh,
    "sigmoid": lambda a: 1.0 / (1.0 + np.exp(-a)),
    "hard_sigmoid": lambda a: np.clip(a / 6.0 + 0.5, 0.0, 1.0),
    "relu": lambda a: np.maximum(a, 0.0),
    "linear": lambda a: a,
}


def reference(kind, x, W, U, b, states, mask, go_backwards, act="tanh", ract="sigmoid", reset_after=True):
    """Keras's cell formulas, one time step at a time, in float64 NumPy (Keras 3 masking rule: a masked
    step keeps the states, and its output is the carried state)."""
    f, g = ACT[act], ACT[ract]
    N, T, _ = x.shape
    u = U.shape[0]
    h = np.zeros((N, u)) if states is None else states[0]
    c = np.zeros((N, u)) if (states is None or len(states) < 2) else states[1]
    outs = []
    for t in (range(T - 1, -1, -1) if go_backwards else range(T)):
        xt = x[:, t]
        if kind == "simple_rnn":
            hn, cn = f(xt @ W + (0 if b is None else b) + h @ U), c
        elif kind == "lstm":
            zz = xt @ W + h @ U + (0 if b is None else b)
            i, ff, gg, o = g(zz[:, :u]), g(zz[:, u:2 * u]), f(zz[:, 2 * u:3 * u]), g(zz[:, 3 * u:])
            cn = ff * c + i * gg
            hn = o * f(cn)
        else:
            bi = 0 if b is None else (b[0] if reset_after else b)
            br = 0 if (b is None or not reset_after) else b[1]
            xw = xt @ W + bi
            if reset_after:
                rec = h @ U + br
                z, r = g(xw[:, :u] + rec[:, :u]), g(xw[:, u:2 * u] + rec[:, u:2 * u])
                hh = f(xw[:, 2 * u:] + r * rec[:, 2 * u:])
            else:
                z = g(xw[:, :u] + h @ U[:, :u])
                r = g(xw[:, u:2 * u] + h @ U[:, u:2 * u])
                hh = f(xw[:, 2 * u:] + (r * h) @ U[:, 2 * u:])
            hn, cn = z * h + (1 - z) * hh, c
        m = np.ones((N, 1), bool) if mask is None else mask[:, t, None]
        h, c = np.where(m, hn, h), np.where(m, cn, c)
        outs.append(h)
    return np.stack(outs, 1), h, c


GATES = {"simple_rnn": 1, "lstm": 4, "gru": 3}


def make(kind, N, T, D, u, use_bias=True, reset_after=True, scale=0.5):
    x = R.standard_normal((N, T, D))
    W = R.standard_normal((D, GATES[kind] * u)) * scale
    U = R.standard_normal((u, GATES[kind] * u)) * scale
    if not use_bias:
        b = None
    elif kind == "gru" and reset_after:
        b = R.standard_normal((2, 3 * u)) * scale
    else:
        b = R.standard_normal((GATES[kind] * u,)) * scale
    return x, W, U, b


def run(kind, x, W, U, b, states=None, mask=None, go_backwards=False, act="tanh", ract="sigmoid", reset_after=True):
    if kind == "simple_rnn":
        return ops.simple_rnn(x, W, U, b, initial_state=None if states is None else states[0], mask=mask,
                              go_backwards=go_backwards, activation=act)
    if kind == "lstm":
        return ops.lstm(x, W, U, b, initial_state=states, mask=mask, go_backwards=go_backwards,
                        activation=act, recurrent_activation=ract)
    return ops.gru(x, W, U, b, initial_state=None if states is None else states[0], mask=mask,
                   go_backwards=go_backwards, activation=act, recurrent_activation=ract, reset_after=reset_after)


def random_mask(N, T):
    mask = R.random((N, T)) > 0.35
    mask[0, :2] = False          # a sample that starts masked (keeps its initial state)
    mask[1, -2:] = False         # one whose last steps are masked
    return mask


VARIANTS = [
    ("simple_rnn", True), ("lstm", True), ("gru", True), ("gru", False),
]


@pytest.mark.parametrize("kind,reset_after", VARIANTS)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("with_state", [False, True])
def test_forward_matches_keras_formulas(kind, reset_after, masked, go_backwards, with_state):
    N, T, D, u = 3, 5, 4, 3
    x, W, U, b = make(kind, N, T, D, u, reset_after=reset_after)
    states = [R.standard_normal((N, u)) for _ in range(2 if kind == "lstm" else 1)] if with_state else None
    mask = random_mask(N, T) if masked else None
    outs = run(kind, x, W, U, b, states, mask, go_backwards, reset_after=reset_after)
    seq, h, c = reference(kind, x, W, U, b, states, mask, go_backwards, reset_after=reset_after)
    np.testing.assert_allclose(outs[0].numpy(), seq, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(outs[1].numpy(), h, rtol=1e-10, atol=1e-12)
    if kind == "lstm":
        np.testing.assert_allclose(outs[2].numpy(), c, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["simple_rnn", "lstm", "gru"])
@pytest.mark.parametrize("act,ract", [("relu", "hard_sigmoid"), ("linear", "sigmoid"), ("tanh", "tanh")])
def test_other_activations_match_formulas(kind, act, ract):
    x, W, U, b = make(kind, 2, 4, 3, 3, scale=0.3)
    outs = run(kind, x, W, U, b, act=act, ract=ract)
    seq, h, _ = reference(kind, x, W, U, b, None, None, False, act=act, ract=ract)
    np.testing.assert_allclose(outs[0].numpy(), seq, rtol=1e-10, atol=1e-12)


def _fn(kind, n_out, states, mask, go_backwards, reset_after, act="tanh", ract="sigmoid", use_bias=True):
    """A function of (x, W, U, b, states...) returning all outputs joined, for check_grad."""
    def f(x, W, U, *rest):
        b = rest[0] if use_bias else None
        st = list(rest[1:] if use_bias else rest) or None
        outs = run(kind, x, W, U, b, st, mask, go_backwards, act, ract, reset_after)
        parts = [outs[0].reshape(-1)] + [o.reshape(-1) for o in outs[1:n_out]]
        return ops.concatenate(parts, axis=0)
    f.__name__ = kind
    return f


@pytest.mark.parametrize("kind,reset_after", VARIANTS)
@pytest.mark.parametrize("masked,go_backwards,with_state", [
    (False, False, False), (True, False, True), (False, True, True), (True, True, False)])
def test_check_grad(kind, reset_after, masked, go_backwards, with_state):
    N, T, D, u = 2, 4, 3, 2
    x, W, U, b = make(kind, N, T, D, u, reset_after=reset_after)
    n_states = 2 if kind == "lstm" else 1
    states = [R.standard_normal((N, u)) for _ in range(n_states)] if with_state else []
    mask = random_mask(N, T) if masked else None
    check_grad(_fn(kind, 1 + n_states, states or None, mask, go_backwards, reset_after), x, W, U, b, *states)


@pytest.mark.parametrize("kind", ["simple_rnn", "lstm", "gru"])
@pytest.mark.parametrize("act,ract", [("relu", "hard_sigmoid"), ("linear", "tanh")])
def test_check_grad_other_activations(kind, act, ract):
    x, W, U, b = make(kind, 2, 3, 2, 2, scale=0.4)
    check_grad(_fn(kind, 2, None, None, False, True, act, ract), x, W, U, b)


@pytest.mark.parametrize("kind,reset_after", VARIANTS)
def test_check_grad_no_bias(kind, reset_after):
    x, W, U, _ = make(kind, 2, 3, 2, 2, reset_after=reset_after)
    check_grad(_fn(kind, 2, None, None, False, reset_after, use_bias=False), x, W, U)


def test_float32_stays_float32_and_unused_outputs():
    x, W, U, b = (a.astype(np.float32) for a in make("lstm", 2, 3, 4, 3))
    xt = Tensor(x, requires_grad=True)
    seq, h, c = ops.lstm(xt, W, U, b)
    assert seq.dtype == np.float32 and h.dtype == np.float32 and c.dtype == np.float32
    (gx,) = grad(h.sum(), [xt])   # only the last state used: the other outputs get zero gradients
    assert gx.dtype == np.float32 and gx.shape == x.shape
    np.testing.assert_allclose(seq.numpy()[:, -1], h.numpy())


def test_bad_shapes_raise_clear_errors():
    x, W, U, b = make("lstm", 2, 3, 4, 3)
    with pytest.raises(ValueError, match="lstm: kernel must have shape"):
        ops.lstm(x, W[:, :-1], U, b)
    with pytest.raises(ValueError, match="lstm: mask must have shape"):
        ops.lstm(x, W, U, b, mask=np.ones((2, 4), bool))
    with pytest.raises(ValueError, match="3-D"):
        ops.lstm(x[0], W, U, b)
    with pytest.raises(ValueError, match="no fused form"):
        ops.gru(*make("gru", 2, 3, 4, 3), activation="gelu")


@pytest.mark.parametrize("kind", ["simple_rnn", "lstm", "gru"])
def test_embedding_table_gradient_through_a_recurrent_op(kind):
    """The recurrent ops hand back their input gradient laid out time-major (a transposed view); the
    embedding's backward pairs ids with rows in that layout. With repeated ids, the table's gradient must
    equal the input gradient scattered by np.add.at."""
    ids = R.integers(0, 7, (4, 6))
    table = R.standard_normal((7, 5))
    g = {"simple_rnn": 1, "lstm": 4, "gru": 3}[kind]
    W, U = Tensor(R.standard_normal((5, g * 3)) * 0.5), Tensor(R.standard_normal((3, g * 3)) * 0.5)
    fn = {"simple_rnn": ops.simple_rnn, "lstm": ops.lstm, "gru": ops.gru}[kind]
    gout = Tensor(R.standard_normal((4, 6, 3)))
    tt = Tensor(table, requires_grad=True)
    (gtable,) = grad((fn(ops.embedding(ids, tt), W, U)[0] * gout).sum(), [tt])
    xt = Tensor(table[ids], requires_grad=True)
    (gx,) = grad((fn(xt, W, U)[0] * gout).sum(), [xt])
    want = np.zeros_like(table)
    np.add.at(want, ids.reshape(-1), np.asarray(gx).reshape(-1, 5))
    np.testing.assert_allclose(gtable, want, rtol=1e-10, atol=1e-12)


def test_embedding_backward_pairs_ids_with_a_transposed_gradient():
    from lamina.ops.embedding import Embedding
    ids = R.integers(0, 5, (3, 4))
    op = Embedding()
    op.xp, op.needs_grad = np, (False, True)
    op.forward(ids, R.standard_normal((5, 2)))
    gy = R.standard_normal((4, 3, 2)).transpose(1, 0, 2)   # (3, 4, 2) backed by time-major memory
    assert not gy.flags.c_contiguous
    _, got = op.backward(gy)
    want = np.zeros((5, 2))
    np.add.at(want, ids.reshape(-1), gy.reshape(-1, 2))
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("kind", ["simple_rnn", "lstm", "gru"])
@pytest.mark.parametrize("masked,backwards", [(False, False), (True, True)])
def test_unused_outputs_get_no_zero_gradient_arrays(kind, masked, backwards):
    """The fused ops take None for an output no gradient reached (Op.none_grads): the sequence output of
    return_sequences=False, the cell state. Gradients are those of the same loss with explicit zeros."""
    rng = np.random.default_rng(4)
    N, T, D, u = 3, 6, 4, 5
    G = {"simple_rnn": 1, "lstm": 4, "gru": 3}[kind]
    arrays = [rng.standard_normal((N, T, D)), 0.5 * rng.standard_normal((D, G * u)),
              0.5 * rng.standard_normal((u, G * u)),
              rng.standard_normal((2, G * u)) if kind == "gru" else rng.standard_normal(G * u)]
    mask = rng.random((N, T)) > 0.3 if masked else None
    w = Tensor(rng.standard_normal((N, u)))
    grads = []
    for explicit_zeros in (False, True):
        xs = [Tensor(a, requires_grad=True) for a in arrays]
        out = getattr(ops, kind)(*xs, mask=mask, go_backwards=backwards)
        loss = (out[1] * w).sum()
        if explicit_zeros:
            loss = loss + sum((o * 0.0).sum() for o in out[:1] + out[2:])
        grads.append(grad(loss, xs))
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def _overlap_on(monkeypatch):
    """The recurrent ops' input projection and input gradient on a second thread (threads.Overlap active)
    at test sizes: chunks of two steps (the one the loop reaches first: one), every loop step slowed a
    little so that the second thread gets chunks to do. Returns the (task, chunk, thread name) of every run."""
    import threading
    import time
    from lamina import threads
    from lamina.ops import recurrent
    monkeypatch.setattr(recurrent, "_CHUNK_ROWS", 6)
    monkeypatch.setattr(recurrent, "_overlap", lambda *a: None)
    monkeypatch.setattr(threads, "overlap_ok", lambda: True)
    real_act = recurrent._act_
    helped = threading.Event()   # the second thread has run a task
    waited = []

    def slow_act(*a, **k):
        # The loop's first step waits (at most 10 s, once) for the second thread to take a task: a sleep
        # alone left it to the scheduler whether a busy machine ever ran that thread in time.
        if not waited:
            waited.append(helped.wait(10.0))
        time.sleep(0.0005)
        return real_act(*a, **k)
    monkeypatch.setattr(recurrent, "_act_", slow_act)
    seen = []
    for cls in (recurrent._Inputs, recurrent._Grads):
        def run(self, k, real=cls.run, name=cls.__name__):
            thread = threading.current_thread().name
            seen.append((name, k, thread))
            try:
                return real(self, k)
            finally:
                if thread.startswith("lamina-split"):
                    helped.set()
        monkeypatch.setattr(cls, "run", run)
    return seen


@pytest.mark.parametrize("kind,reset_after", VARIANTS)
@pytest.mark.parametrize("masked,go_backwards,with_state", [(False, False, False), (True, True, True)])
def test_products_beside_the_time_loop_are_the_same(kind, reset_after, masked, go_backwards, with_state,
                                                    monkeypatch):
    """With the input projection and input gradient computed by chunks on a second thread while the time
    loop runs (lamina.threads.Overlap), outputs and every gradient equal the one-thread op's (to rounding:
    the products are cut differently); every chunk runs once, some on the second thread; BLAS's thread
    count is back afterwards."""
    from lamina import threads
    N, T, D, u = 3, 9, 4, 2
    x, W, U, b = make(kind, N, T, D, u, reset_after=reset_after)
    n_states = 2 if kind == "lstm" else 1
    states = [R.standard_normal((N, u)) for _ in range(n_states)] if with_state else None
    mask = random_mask(N, T) if masked else None
    weights = [Tensor(a, requires_grad=True) for a in (x, W, U, b)]
    gys = None

    def outputs_and_grads():
        nonlocal gys
        outs = run(kind, *weights, states, mask, go_backwards, reset_after=reset_after)
        if gys is None:
            gys = [R.standard_normal(o.shape) for o in outs]
        loss = ops.sum(ops.stack([ops.sum(o * g) for o, g in zip(outs, gys)]))
        return [np.asarray(o) for o in outs] + [np.asarray(g) for g in grad(loss, weights)]

    want = outputs_and_grads()
    before = threads.get_num_threads()
    seen = _overlap_on(monkeypatch)
    got = outputs_and_grads()
    for a, b_ in zip(got, want):
        np.testing.assert_allclose(a, b_, rtol=1e-10, atol=1e-12)
    from lamina.ops.recurrent import _chunks
    chunks = len(_chunks(T, N, go_backwards, True)[0])
    assert chunks == 5
    for task in ("_Inputs", "_Grads"):
        assert sorted(k for name, k, _ in seen if name == task) == list(range(chunks))
    assert any(t.startswith("lamina-split") for _, _, t in seen)
    assert threads.get_num_threads() == before and not threads._split["busy"]


def test_chunks_cover_the_steps_and_the_first_reached_is_short():
    from lamina.ops.recurrent import _chunks
    assert _chunks(7, 64, False, False) == ([(0, 7)], [0])
    for T, N, back in [(80, 64, False), (80, 64, True), (9, 3, True), (1, 5, False), (23, 1000, False)]:
        chunks, order = _chunks(T, N, back, True)
        assert [t for s, e in chunks for t in range(s, e)] == list(range(T))
        assert sorted(order) == list(range(len(chunks)))
        assert order == (sorted(order, reverse=True) if back else sorted(order))
        first, rest = chunks[order[0]], [chunks[k] for k in order[1:]]
        assert all(first[1] - first[0] <= e - s for s, e in rest[:-1])
    assert _chunks(80, 64, False, True)[0][:3] == [(0, 5), (5, 15), (15, 25)]


@pytest.mark.parametrize("kind,reset_after", VARIANTS)
def test_an_empty_batch_gives_empty_outputs_and_zero_kernel_gradients(kind, reset_after):
    x, W, U, b = make(kind, 0, 5, 3, 2, reset_after=reset_after)
    weights = [Tensor(a, requires_grad=True) for a in (x, W, U, b)]
    outs = run(kind, *weights, reset_after=reset_after)
    assert outs[0].shape == (0, 5, 2) and all(o.shape == (0, 2) for o in outs[1:])
    gx, gW, gU, gb = grad(ops.sum(outs[0]), weights)
    assert gx.shape == (0, 5, 3)
    for g, w in zip((gW, gU, gb), (W, U, b)):
        assert g.shape == w.shape and not np.asarray(g).any()
