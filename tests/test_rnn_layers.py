"""Recurrent layers: parity with torch.nn.RNN/LSTM/GRU (converted weights; forward, input and weight
gradients), the cell loop vs the fused path, masks, Bidirectional merges, parameter counts, check_layer."""
import numpy as np
import pytest

import lamina
from lamina import Tensor, grad, layers as L
from lamina.testing import check_layer

R = np.random.default_rng(3)
N, T, D, U = 3, 5, 4, 3


def randomize(layer, scale=0.5):
    """Random weights (constant or zero biases would hide gate-order bugs)."""
    layer.set_weights([(R.standard_normal(w.shape) * scale).astype(np.float32) for w in layer.get_weights()])


def lamina_run(layer, x, gy, initial_state=None):
    xt = Tensor(x, requires_grad=True)
    out = layer(xt, initial_state=initial_state)
    seq = out[0] if isinstance(out, list) else out
    params = layer.trainable_weights
    grads = grad((seq * Tensor(gy)).sum(), [xt] + params)
    return seq.numpy(), out, grads[0], grads[1:]


# ---------- torch parity
torch_cases = ["simple_rnn", "lstm", "gru"]


def torch_module(kind, layer):
    torch = pytest.importorskip("torch")
    cell = layer.cell
    k, rk = cell.kernel.numpy(), cell.recurrent_kernel.numpy()
    b = cell.bias.numpy()
    T_ = lambda a: torch.tensor(np.ascontiguousarray(a))
    if kind == "simple_rnn":
        m = torch.nn.RNN(D, U, batch_first=True)
        m.weight_ih_l0.data, m.weight_hh_l0.data = T_(k.T), T_(rk.T)
        m.bias_ih_l0.data, m.bias_hh_l0.data = T_(b), torch.zeros(U)
    elif kind == "lstm":  # gates i, f, c(g), o on both sides
        m = torch.nn.LSTM(D, U, batch_first=True)
        m.weight_ih_l0.data, m.weight_hh_l0.data = T_(k.T), T_(rk.T)
        m.bias_ih_l0.data, m.bias_hh_l0.data = T_(b), torch.zeros(4 * U)
    else:  # Keras z, r, h -> torch r, z, n; bias (2, 3u) -> b_ih, b_hh
        perm = np.r_[U:2 * U, 0:U, 2 * U:3 * U]
        m = torch.nn.GRU(D, U, batch_first=True)
        m.weight_ih_l0.data, m.weight_hh_l0.data = T_(k[:, perm].T), T_(rk[:, perm].T)
        m.bias_ih_l0.data, m.bias_hh_l0.data = T_(b[0, perm]), T_(b[1, perm])
    return m, perm if kind == "gru" else None


def make_layer(kind, **kw):
    cls = {"simple_rnn": L.SimpleRNN, "lstm": L.LSTM, "gru": L.GRU}[kind]
    layer = cls(U, **kw)
    layer(np.zeros((N, T, D), np.float32))
    randomize(layer)
    return layer


@pytest.mark.parametrize("kind", torch_cases)
@pytest.mark.parametrize("with_state", [False, True])
def test_matches_torch_forward_and_backward(kind, with_state):
    torch = pytest.importorskip("torch")
    layer = make_layer(kind, return_sequences=True, return_state=True)
    m, perm = torch_module(kind, layer)
    x = R.standard_normal((N, T, D)).astype(np.float32)
    gy = R.standard_normal((N, T, U)).astype(np.float32)
    states = [R.standard_normal((N, U)).astype(np.float32) for _ in range(2 if kind == "lstm" else 1)]
    seq, out, gx, gw = lamina_run(layer, x, gy, initial_state=states if with_state else None)
    xt = torch.tensor(x, requires_grad=True)
    if with_state:
        st = tuple(torch.tensor(s)[None] for s in states)
        ys, hT = m(xt, st if kind == "lstm" else st[0])
    else:
        ys, hT = m(xt)
    (ys * torch.tensor(gy)).sum().backward()
    np.testing.assert_allclose(seq, ys.detach().numpy(), rtol=1e-4, atol=1e-5)
    h_last = (hT[0] if kind == "lstm" else hT)[0].detach().numpy()
    np.testing.assert_allclose(out[1].numpy(), h_last, rtol=1e-4, atol=1e-5)
    if kind == "lstm":
        np.testing.assert_allclose(out[2].numpy(), hT[1][0].detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    gk, grk, gb = gw
    tk, trk = m.weight_ih_l0.grad.numpy().T, m.weight_hh_l0.grad.numpy().T
    tb = np.stack([m.bias_ih_l0.grad.numpy(), m.bias_hh_l0.grad.numpy()])
    if kind == "gru":
        inv = np.argsort(perm)
        tk, trk, tb = tk[:, inv], trk[:, inv], tb[:, inv]
    else:
        tb = tb[0]  # one Keras bias: its gradient equals torch's b_ih gradient
    for ours, ref in ((gk, tk), (grk, trk), (gb, tb)):
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-5)


# ---------- the cell loop (user cells, other activations) equals the fused path
@pytest.mark.parametrize("kind,kw", [("simple_rnn", {}), ("lstm", {}), ("gru", {}), ("gru", {"reset_after": False})])
@pytest.mark.parametrize("go_backwards", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_generic_rnn_loop_matches_fused(kind, kw, go_backwards, masked):
    layer = make_layer(kind, return_sequences=True, go_backwards=go_backwards, **kw)
    cell_cls = type(layer.cell)
    generic = L.RNN(cell_cls(U, **kw), return_sequences=True, go_backwards=go_backwards)
    generic(np.zeros((N, T, D), np.float32))
    generic.set_weights(layer.get_weights())
    generic.cell._fused = None  # force the per-step loop through the cell
    x = R.standard_normal((N, T, D)).astype(np.float32)
    gy = R.standard_normal((N, T, U)).astype(np.float32)
    mask = R.random((N, T)) > 0.3 if masked else None
    outs = []
    for lay in (layer, generic):
        xt = Tensor(x, requires_grad=True)
        y = lay(xt, mask=mask)
        g = grad((y * Tensor(gy)).sum(), [xt] + lay.trainable_weights)
        outs.append((y.numpy(), g))
    np.testing.assert_allclose(outs[0][0], outs[1][0], rtol=1e-5, atol=1e-6)
    for a, b in zip(outs[0][1], outs[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_other_activation_runs_the_loop_and_learns():
    layer = L.LSTM(U, activation="gelu", return_sequences=True)
    y = layer(R.standard_normal((N, T, D)).astype(np.float32))
    assert y.shape == (N, T, U)


# ---------- masks: Keras's rule, written out in NumPy
def keras_masked_reference(layer, x, mask, zero_output):
    """Step the cell in NumPy-land (layer.cell.call on constants), apply Keras 3's mask rule."""
    cell = layer.cell
    h = np.zeros((x.shape[0], U), np.float32)
    c = np.zeros_like(h)
    outs = []
    for t in range(x.shape[1]):
        out, new = cell.call(Tensor(x[:, t]), [Tensor(h), Tensor(c)] if isinstance(cell, L.LSTMCell) else [Tensor(h)])
        m = mask[:, t, None]
        hn = new[0].numpy()
        outs.append(np.where(m, hn, 0.0 if zero_output else h))
        h = np.where(m, hn, h)
        if isinstance(cell, L.LSTMCell):
            c = np.where(m, new[1].numpy(), c)
    return np.stack(outs, 1), h


@pytest.mark.parametrize("kind", torch_cases)
@pytest.mark.parametrize("zero_output", [False, True])
def test_mask_follows_keras(kind, zero_output):
    layer = make_layer(kind, return_sequences=True, return_state=True, zero_output_for_mask=zero_output)
    x = R.standard_normal((N, T, D)).astype(np.float32)
    mask = np.ones((N, T), bool)
    mask[0, 3:] = False      # padded at the end: the last output is the last real step's
    mask[1, :2] = False      # padded at the start
    out = layer(x, mask=mask)
    ref_seq, ref_h = keras_masked_reference(layer, x, mask, zero_output)
    np.testing.assert_allclose(out[0].numpy(), ref_seq, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[1].numpy(), ref_h, rtol=1e-5, atol=1e-6)


def test_masking_layer_masks_padded_steps():
    x = R.standard_normal((2, 4, 3)).astype(np.float32)
    x[0, 2:] = 0.0
    masking = L.Masking(0.0)
    y = masking(x)
    np.testing.assert_array_equal(y._keras_mask.numpy(), [[True, True, False, False], [True] * 4])
    lstm = make_layer("lstm")
    lstm_x = np.concatenate([x, np.zeros((2, 4, D - 3), np.float32)], -1)
    lstm_x[0, 2:] = 0.0
    y = lstm(masking(lstm_x))
    np.testing.assert_allclose(y.numpy()[0], lstm(lstm_x[:1, :2]).numpy()[0], rtol=1e-5, atol=1e-6)


# ---------- go_backwards, Bidirectional
def test_go_backwards_equals_reversed_input():
    fwd = make_layer("gru", return_sequences=True)
    bwd = L.GRU(U, return_sequences=True, go_backwards=True)
    bwd(np.zeros((N, T, D), np.float32))
    bwd.set_weights(fwd.get_weights())
    x = R.standard_normal((N, T, D)).astype(np.float32)
    np.testing.assert_allclose(bwd(x).numpy(), fwd(x[:, ::-1]).numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_bidirectional_merges_two_runs(merge_mode, return_sequences):
    bi = L.Bidirectional(L.LSTM(U, return_sequences=return_sequences), merge_mode=merge_mode)
    x = R.standard_normal((N, T, D)).astype(np.float32)
    y = bi(x)
    randomize(bi)
    y = bi(x)
    f, b = bi.forward_layer, bi.backward_layer
    assert b.go_backwards and not f.go_backwards and len(bi.get_weights()) == 6
    yf = f(x).numpy()
    yb = b(x).numpy()
    if return_sequences:
        yb = yb[:, ::-1]
    want = {"concat": lambda: np.concatenate([yf, yb], -1), "sum": lambda: yf + yb, "mul": lambda: yf * yb,
            "ave": lambda: (yf + yb) / 2, None: lambda: None}[merge_mode]()
    if merge_mode is None:
        np.testing.assert_allclose(y[0].numpy(), yf, rtol=1e-6)
        np.testing.assert_allclose(y[1].numpy(), yb, rtol=1e-6)
    else:
        np.testing.assert_allclose(y.numpy(), want, rtol=1e-6, atol=1e-7)
        assert tuple(bi.compute_output_shape((N, T, D))) == y.shape


def test_bidirectional_return_state_and_masked_zero_outputs():
    bi = L.Bidirectional(L.GRU(U, return_sequences=True, return_state=True))
    x = R.standard_normal((N, T, D)).astype(np.float32)
    mask = np.ones((N, T), bool)
    mask[0, -2:] = False
    out = bi(x, mask=mask)
    assert len(out) == 3 and out[0].shape == (N, T, 2 * U) and out[1].shape == (N, U)
    np.testing.assert_array_equal(out[0].numpy()[0, -2:], 0.0)  # Keras: zeros where masked, both halves


# ---------- stateful, dropout, TimeDistributed
def test_stateful_carries_and_resets():
    layer = L.SimpleRNN(U, stateful=True)
    x = R.standard_normal((N, T, D)).astype(np.float32)
    a = layer(x).numpy()
    b = layer(x).numpy()
    assert not np.allclose(a, b)
    layer.reset_states()
    np.testing.assert_allclose(layer(x).numpy(), a, rtol=1e-6)


@pytest.mark.parametrize("kind", torch_cases)
def test_dropout_only_in_training(kind):
    layer = make_layer(kind, dropout=0.5, recurrent_dropout=0.3)
    x = R.standard_normal((N, T, D)).astype(np.float32)
    ref = make_layer(kind)
    ref.set_weights(layer.get_weights())
    np.testing.assert_allclose(layer(x).numpy(), ref(x).numpy(), rtol=1e-6)
    assert not np.allclose(layer(x, training=True).numpy(), ref(x).numpy())


def test_time_distributed_dense():
    td = L.TimeDistributed(L.Dense(2))
    x = R.standard_normal((N, T, D)).astype(np.float32)
    y = td(x)
    assert y.shape == (N, T, 2) and td.compute_output_shape((None, T, D)) == (None, T, 2)
    np.testing.assert_allclose(y.numpy(), td.layer(x.reshape(-1, D)).numpy().reshape(N, T, 2), rtol=1e-6)


# ---------- counts (equal to Keras's) and the seed snippets
def test_parameter_counts_equal_keras():
    x = np.zeros((1, 2, 256), np.float32)
    for layer, n in [(L.SimpleRNN(128), 49_280), (L.LSTM(128), 197_120), (L.GRU(128), 148_224),
                     (L.GRU(128, reset_after=False), 147_840), (L.Bidirectional(L.LSTM(128)), 394_240)]:
        layer(x)
        assert layer.count_params() == n, type(layer).__name__
    lstm = L.LSTM(4)
    lstm(np.zeros((1, 2, 3), np.float32))
    np.testing.assert_array_equal(lstm.cell.bias.numpy(), np.r_[np.zeros(4), np.ones(4), np.zeros(8)])
    assert [w.path for w in lstm.weights][0].endswith("lstm_cell/kernel")


@pytest.mark.parametrize("rnn,n_rnn", [(lambda: L.SimpleRNN(128), 49_280), (lambda: L.LSTM(128), 197_120)])
def test_seed_snippets(rnn, n_rnn):
    """Sequential([Embedding(10000, 256), SimpleRNN/LSTM(128), Dense(10, 'softmax')]), layer by layer
    when Sequential is not available."""
    ids = R.integers(0, 10000, (2, 7))
    keras = lamina
    stack = [keras.layers.Embedding(10000, 256), rnn(), keras.layers.Dense(10, activation="softmax")] \
        if hasattr(keras.layers, "Embedding") else None
    if stack is None:
        pytest.skip("Embedding not landed yet")
    y = ids
    for layer in stack:
        y = layer(y)
    assert y.shape == (2, 10)
    np.testing.assert_allclose(y.numpy().sum(-1), 1.0, rtol=1e-5)
    assert [l.count_params() for l in stack] == [2_560_000, n_rnn, 1290]


# ---------- the layer contract
@pytest.mark.parametrize("cls,kw,out_shape,n", [
    (L.SimpleRNN, {"units": 3}, (2, 3), 3), (L.LSTM, {"units": 3, "return_sequences": True}, (2, 4, 3), 3),
    (L.GRU, {"units": 3}, (2, 3), 3), (L.GRU, {"units": 3, "reset_after": False, "go_backwards": True}, (2, 3), 3),
])
def test_check_layer(cls, kw, out_shape, n):
    check_layer(cls, kw, input_shape=(2, 4, 5), expected_output_shape=out_shape,
                expected_num_trainable_weights=n, expected_weight_names=["kernel", "recurrent_kernel", "bias"])


def test_check_layer_wrappers():
    check_layer(L.Bidirectional, {"layer": L.SimpleRNN(2)}, input_shape=(2, 4, 5), expected_output_shape=(2, 4),
                expected_num_trainable_weights=6)
    check_layer(L.TimeDistributed, {"layer": L.Dense(3)}, input_shape=(2, 4, 5), expected_output_shape=(2, 4, 3),
                expected_num_trainable_weights=2)
    check_layer(L.RNN, {"cell": L.GRUCell(2), "return_sequences": True}, input_shape=(2, 4, 5),
                expected_output_shape=(2, 4, 2), expected_num_trainable_weights=3)
    check_layer(L.Masking, {"mask_value": 0.0}, input_shape=(2, 4, 5), expected_output_shape=(2, 4, 5),
                expected_num_trainable_weights=0)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="units must be a positive int"):
        L.LSTM(0)
    with pytest.raises(ValueError, match="dropout"):
        L.GRU(2, dropout=1.5)
    with pytest.raises(ValueError, match="merge_mode"):
        L.Bidirectional(L.LSTM(2), merge_mode="max")
    layer = L.LSTM(2)
    with pytest.raises(ValueError, match="initial state"):
        layer(np.zeros((2, 3, 4), np.float32), initial_state=[np.zeros((2, 2), np.float32)])
