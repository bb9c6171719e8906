"""StackedRNNCells and ConvLSTM1D/2D/3D (issue 14): forward against real Keras with the same weights,
gradients by central differences, return_state structure, configs, .keras files both ways."""
import numpy as np
import pytest

import lamina
from lamina import layers
from lamina.testing import check_grad

from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")
R = np.random.default_rng(41)


def _copy_random(mine, theirs, scale=0.4):
    for w in mine.weights:
        w.assign(R.standard_normal(w.shape).astype(np.float32) * scale)
    theirs.set_weights(mine.get_weights())


def _np(t):
    return keras.ops.convert_to_numpy(t)


@pytest.mark.parametrize("name,kwargs,shape", [
    ("ConvLSTM2D", dict(filters=3, kernel_size=3), (2, 4, 6, 5, 2)),
    ("ConvLSTM2D", dict(filters=2, kernel_size=(3, 2), strides=2, padding="same", return_sequences=True),
     (2, 3, 6, 5, 2)),
    ("ConvLSTM2D", dict(filters=2, kernel_size=2, dilation_rate=2, data_format="channels_first",
                        go_backwards=True, return_sequences=True), (1, 3, 2, 6, 6)),
    ("ConvLSTM1D", dict(filters=4, kernel_size=3, padding="same", activation="relu",
                        recurrent_activation="hard_sigmoid"), (2, 5, 7, 3)),
    ("ConvLSTM3D", dict(filters=2, kernel_size=2, return_sequences=True), (1, 3, 3, 4, 3, 2)),
])
def test_conv_lstm_matches_keras(name, kwargs, shape):
    mine = getattr(layers, name)(**kwargs)
    theirs = getattr(keras.layers, name)(**kwargs)
    x = R.standard_normal(shape).astype(np.float32)
    mine(x)
    theirs(x)
    assert [w.name for w in mine.weights] == ["kernel", "recurrent_kernel", "bias"]
    assert [w.shape for w in mine.get_weights()] == [tuple(w.shape) for w in theirs.get_weights()]
    _copy_random(mine, theirs)
    want = _np(theirs(x))
    got = mine(x).numpy()
    assert got.shape == want.shape == tuple(mine.compute_output_shape(shape))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    cfg, kcfg = mine.get_config(), theirs.get_config()
    for key in ("filters", "kernel_size", "strides", "padding", "data_format", "dilation_rate", "return_sequences",
                "go_backwards", "unit_forget_bias", "dropout", "recurrent_dropout"):
        assert cfg[key] == kcfg[key], key
    again = type(mine).from_config(cfg)
    assert again.get_config() == cfg


def test_conv_lstm_return_state_mask_and_initial_state_match_keras():
    kwargs = dict(filters=2, kernel_size=3, padding="same", return_state=True, return_sequences=True)
    mine, theirs = layers.ConvLSTM2D(**kwargs), keras.layers.ConvLSTM2D(**kwargs)
    x = R.standard_normal((2, 4, 5, 5, 3)).astype(np.float32)
    h0 = R.standard_normal((2, 5, 5, 2)).astype(np.float32)
    c0 = R.standard_normal((2, 5, 5, 2)).astype(np.float32)
    mask = np.array([[1, 1, 0, 1], [1, 0, 0, 0]], bool)
    mine(x), theirs(x)
    _copy_random(mine, theirs)
    want = [_np(t) for t in theirs(x, initial_state=[h0, c0], mask=mask)]
    got = [t.numpy() for t in mine(x, initial_state=[h0, c0], mask=mask)]
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_conv_lstm_bias_starts_with_open_forget_gate():
    layer = layers.ConvLSTM2D(3, 2)
    layer(np.zeros((1, 2, 4, 4, 2), np.float32))
    np.testing.assert_array_equal(layer.cell.bias.numpy(), np.r_[np.zeros(3), np.ones(3), np.zeros(6)])


@pytest.mark.parametrize("name,kwargs,shape", [
    ("ConvLSTM2D", dict(filters=2, kernel_size=2, return_sequences=True), (1, 3, 3, 3, 2)),
    ("ConvLSTM1D", dict(filters=2, kernel_size=2, strides=2, data_format="channels_first"), (2, 3, 2, 5)),
])
def test_conv_lstm_gradients(name, kwargs, shape):
    check_grad(getattr(layers, name)(**kwargs), R.standard_normal(shape), atol=1e-5)


def test_conv_lstm_dropout_only_in_training():
    layer = layers.ConvLSTM2D(2, 2, dropout=0.5, recurrent_dropout=0.5, seed=1)
    x = R.standard_normal((2, 3, 4, 4, 2)).astype(np.float32)
    a, b = layer(x).numpy(), layer(x).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(layer(x, training=True).numpy(), a)


def _stack(lib):
    return lib.layers.StackedRNNCells([lib.layers.LSTMCell(4), lib.layers.GRUCell(3), lib.layers.SimpleRNNCell(2)])


def test_stacked_cells_match_keras_with_nested_states():
    mine = layers.RNN(_stack(lamina), return_sequences=True, return_state=True)
    theirs = keras.layers.RNN(_stack(keras), return_sequences=True, return_state=True)
    x = R.standard_normal((3, 5, 6)).astype(np.float32)
    mine(x), theirs(x)
    assert [w.shape for w in mine.get_weights()] == [tuple(w.shape) for w in theirs.get_weights()]
    _copy_random(mine, theirs)
    got, want = mine(x), theirs(x)
    # the output, then one entry per cell (the LSTM's [h, c]); Keras wraps single states in a list too
    assert len(got) == len(want) == 4 and isinstance(got[1], list) and len(got[1]) == 2
    flat_got = [got[0]] + got[1] + got[2:]
    flat_want = [want[0]] + list(want[1]) + [w[0] if isinstance(w, (list, tuple)) else w for w in want[2:]]
    for g, w in zip(flat_got, flat_want):
        np.testing.assert_allclose(g.numpy(), _np(w), rtol=1e-5, atol=1e-5)
    # a list of cells is a StackedRNNCells, as Keras
    again = layers.RNN([layers.LSTMCell(4), layers.GRUCell(3)])
    assert type(again.cell).__name__ == "StackedRNNCells"
    # initial states given per cell
    init = [[np.ones((3, 4), np.float32), np.zeros((3, 4), np.float32)], np.ones((3, 3), np.float32),
            np.zeros((3, 2), np.float32)]
    np.testing.assert_allclose(mine(x, initial_state=init)[0].numpy(), _np(theirs(x, initial_state=init)[0]),
                               rtol=1e-5, atol=1e-5)


def test_stacked_cells_gradients_and_config():
    layer = layers.RNN(layers.StackedRNNCells([layers.SimpleRNNCell(3), layers.GRUCell(2)]))
    layer(np.zeros((2, 3, 4), np.float32))  # built in float32; check_grad runs the weights in float64
    # initial states given (float64 like the input): their gradients are checked too
    check_grad(lambda x, h1, h2: layer(x, initial_state=[h1, h2]), R.standard_normal((2, 3, 4)),
               R.standard_normal((2, 3)), R.standard_normal((2, 2)), params=layer.trainable_weights, atol=1e-5)
    cfg = layer.get_config()
    again = layers.RNN.from_config(cfg)
    assert [type(c).__name__ for c in again.cell.cells] == ["SimpleRNNCell", "GRUCell"]
    assert again.get_config() == cfg


def _model(lib):
    L = lib.layers
    a = lib.Input((3, 6, 6, 2))
    b = lib.Input((4, 5))
    y = L.ConvLSTM2D(3, 3, padding="same", return_sequences=True)(a)
    y = L.ConvLSTM2D(2, 2)(y)
    y = L.Flatten()(y)
    z = L.RNN(L.StackedRNNCells([L.LSTMCell(4), L.LSTMCell(3), L.GRUCell(2)]))(b)
    z2 = L.ConvLSTM1D(2, 2)(L.Reshape((4, 5, 1))(b))
    return lib.Model([a, b], [y, z, L.Flatten()(z2)])


def test_keras_file_with_conv_lstm_and_stacked_cells_both_ways(tmp_path):
    xs = [R.standard_normal((2, 3, 6, 6, 2)).astype(np.float32), R.standard_normal((2, 4, 5)).astype(np.float32)]
    mine = _model(lamina)
    for w in mine.weights:
        w.assign(R.standard_normal(w.shape).astype(np.float32) * 0.4)
    want = [np.asarray(o) for o in mine.predict(xs, verbose=0)]
    mine.save(tmp_path / "m.keras")
    theirs = keras.models.load_model(tmp_path / "m.keras", compile=False)
    for g, w in zip(theirs(xs), want):
        np.testing.assert_allclose(_np(g), w, rtol=1e-5, atol=1e-5)
    theirs.save(tmp_path / "k.keras")
    back = lamina.models.load_model(tmp_path / "k.keras", compile=False)
    for g, w in zip(back.predict(xs, verbose=0), want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_unit_forget_bias_opens_the_forget_gate_of_lstm_and_conv_lstm():
    import lamina
    lstm = lamina.layers.LSTM(3, bias_initializer="ones")
    lstm.build((None, 4, 2))
    np.testing.assert_array_equal(lstm.cell.bias.numpy(), np.ones(12))        # ones everywhere either way
    lstm = lamina.layers.LSTM(3)
    lstm.build((None, 4, 2))
    np.testing.assert_array_equal(lstm.cell.bias.numpy(), np.r_[np.zeros(3), np.ones(3), np.zeros(6)])
    conv = lamina.layers.ConvLSTM1D(2, 3)
    conv.build((None, 4, 5, 1))
    np.testing.assert_array_equal(conv.cell.bias.numpy(), np.r_[np.zeros(2), np.ones(2), np.zeros(4)])
    off = lamina.layers.ConvLSTM1D(2, 3, unit_forget_bias=False)
    off.build((None, 4, 5, 1))
    np.testing.assert_array_equal(off.cell.bias.numpy(), np.zeros(8))
