"""compile / fit / evaluate / predict: options, data kinds, accuracy on real data, reproducibility, NaN stop."""
import warnings

import numpy as np
import pytest

import lamina
from lamina import layers, models


def _digits():
    """The bundled UCI digits (offline), with lamina's fixed train/test split."""
    (x, y), (xt, yt) = lamina.datasets.digits.load_data()
    flat = lambda a: (a.reshape(len(a), -1) / 16.0).astype(np.float32)
    return (flat(x), y.astype(np.int64)), (flat(xt), yt.astype(np.int64))


def _mlp(n_in=8, n_out=3, **kw):
    return models.Sequential([layers.Dense(16, activation="relu", input_shape=(n_in,)),
                              layers.Dense(n_out, activation="softmax")], **kw)


def _data(n=64, n_in=8, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, n_in)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5)
    return x, y % classes


def test_mlp_on_digits_reaches_96_5_percent_whatever_the_seed():
    (x, y), (xt, yt) = _digits()
    # not a chosen seed: over seeds 0-7 this MLP's test accuracy ranged 0.969-0.978 (360 test digits, so 97%
    # is a line one digit wide; one hidden layer of 128 ranged 0.956-0.972 and passed 97% on one seed only)
    lamina.utils.set_random_seed(0)
    model = models.Sequential([layers.Input(shape=(64,)), layers.Dense(256, activation="relu"),
                               layers.Dense(128, activation="relu"), layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=30, batch_size=32, verbose=0)
    assert history.history["accuracy"][-1] > history.history["accuracy"][0]
    loss, acc = model.evaluate(xt, yt, verbose=0)
    assert acc >= 0.965
    pred = model.predict(xt, verbose=0).argmax(-1)
    assert np.isclose((pred == yt).mean(), acc)


def test_cnn_on_digits_reaches_97_percent():
    (x, y), (xt, yt) = _digits()
    # over seeds 0-7: 0.975-0.989 for seven, 0.947 for seed 6 (measured 2026-12-01)
    lamina.utils.set_random_seed(2)
    model = models.Sequential([layers.Input(shape=(8, 8, 1)),
                               layers.Conv2D(32, 3, activation="relu", padding="same"),
                               layers.MaxPooling2D(2), layers.Flatten(),
                               layers.Dense(64, activation="relu"), layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x.reshape(-1, 8, 8, 1), y, epochs=20, batch_size=32, verbose=0)
    _, acc = model.evaluate(xt.reshape(-1, 8, 8, 1), yt, verbose=0)
    assert acc >= 0.97


def test_fit_is_bit_identical_after_set_random_seed():
    def run():
        lamina.utils.set_random_seed(42)
        model = models.Sequential([layers.Dense(16, activation="relu", input_shape=(8,)), layers.Dropout(0.3),
                                   layers.Dense(3, activation="softmax")])
        model.compile("adam", "sparse_categorical_crossentropy")
        x, y = _data()
        h = model.fit(x, y, epochs=3, batch_size=8, validation_split=0.25, verbose=0)
        return h.history, model.get_weights()
    h1, w1 = run()
    h2, w2 = run()
    assert h1 == h2
    for a, b in zip(w1, w2):
        assert np.array_equal(a, b)


def test_one_update_matches_hand_computed_sgd():
    model = models.Sequential([layers.Dense(2, input_shape=(3,))])
    w0, b0 = [w.copy() for w in model.get_weights()]
    model.compile(optimizer=lamina.optimizers.SGD(learning_rate=0.1), loss="mse")
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    y = np.random.default_rng(1).normal(size=(4, 2)).astype(np.float32)
    loss = model.train_on_batch(x, y)
    err = x @ w0 + b0 - y
    assert np.isclose(loss, (err ** 2).mean(), rtol=1e-5)
    g = 2 * err / err.size
    w, b = model.get_weights()
    np.testing.assert_allclose(w, w0 - 0.1 * x.T @ g, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b, b0 - 0.1 * g.sum(0), rtol=1e-5, atol=1e-6)


def test_regularization_losses_are_added():
    model = models.Sequential([layers.Dense(2, input_shape=(3,), kernel_regularizer=lamina.regularizers.L2(0.5))])
    model.compile("sgd", "mse")
    x, y = np.ones((2, 3), np.float32), np.zeros((2, 2), np.float32)
    loss = model.test_on_batch(x, y)
    w, b = model.get_weights()
    expected = ((x @ w + b) ** 2).mean() + 0.5 * (w ** 2).sum()
    assert np.isclose(loss, expected, rtol=1e-5)


def test_validation_data_and_split_and_history():
    x, y = _data()
    model = _mlp()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    h = model.fit(x, y, epochs=2, batch_size=16, validation_data=(x[:8], y[:8]), verbose=0)
    assert h.epoch == [0, 1] and set(h.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert model.history is h
    val = model.evaluate(x[:8], y[:8], verbose=0, return_dict=True)
    assert np.isclose(val["loss"], h.history["val_loss"][-1], rtol=1e-5)
    h = model.fit(x, y, epochs=1, validation_split=0.25, verbose=0)
    assert "val_loss" in h.history


def test_initial_epoch_and_steps_per_epoch():
    x, y = _data()
    model = _mlp()
    model.compile("adam", "sparse_categorical_crossentropy")
    seen = []
    cb = lamina.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(b))
    h = model.fit(x, y, epochs=3, initial_epoch=1, steps_per_epoch=2, batch_size=8, verbose=0, callbacks=[cb])
    assert h.epoch == [1, 2] and seen == [0, 1, 0, 1]
    assert model.optimizer.iterations == 4


def test_shuffle_false_keeps_order():
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    order = []

    class Spy(models.Model):
        def __init__(self):
            super().__init__()
            self.d = layers.Dense(1)

        def call(self, x):
            order.append(np.asarray(x)[:, 0].copy())
            return self.d(x)
    model = Spy()
    model.compile("sgd", "mse")
    model.fit(x, np.zeros(6, np.float32), batch_size=4, shuffle=False, verbose=0)
    np.testing.assert_array_equal(np.concatenate(order), x[:, 0])
    order.clear()
    lamina.utils.set_random_seed(3)
    model.fit(x, np.zeros(6, np.float32), batch_size=4, shuffle=True, epochs=2, verbose=0)
    assert any(not np.array_equal(np.concatenate(order[i:i + 2]), x[:, 0]) for i in (0, 2))


def test_sample_weight_and_class_weight():
    x, y = _data(n=32)
    model = _mlp()
    model.compile("sgd", "sparse_categorical_crossentropy")
    base = model.evaluate(x, y, verbose=0)
    sw = np.where(y == 0, 2.0, 0.0).astype(np.float32)
    weighted = model.evaluate(x, y, sample_weight=sw, batch_size=32, verbose=0)
    per = lamina.losses.sparse_categorical_crossentropy(y, model.predict(x, verbose=0)).numpy()
    assert np.isclose(weighted, (per * sw).mean(), rtol=1e-5)
    assert np.isclose(base, per.mean(), rtol=1e-5)
    # class_weight {0: 2} is the same as these sample weights
    w0 = model.get_weights()
    model.fit(x, y, class_weight={0: 2.0, 1: 0.0, 2: 0.0}, batch_size=32, shuffle=False, verbose=0)
    w_cw = model.get_weights()
    model.set_weights(w0)
    model.compile(lamina.optimizers.SGD(), "sparse_categorical_crossentropy")
    model.fit(x, y, sample_weight=sw, batch_size=32, shuffle=False, verbose=0)
    for a, b in zip(w_cw, model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)


class _Frame:
    """A table-like array of another library (as a pandas DataFrame: a shape and __array__, dtypes but no dtype)."""

    def __init__(self, a):
        self._a, self.shape = a, a.shape

    def __array__(self, dtype=None, copy=None):
        return self._a if dtype is None else self._a.astype(dtype)

    def __iter__(self):   # (a DataFrame iterates over its column names: never batches)
        return iter(["a", "b"])


def test_array_likes_of_other_libraries_are_arrays_like_keras():
    # Keras's data adapters take anything with __array__ (pandas DataFrames and Series, torch tensors) as arrays;
    # lamina took a DataFrame for an iterable of batches ("y must be None")
    x, y = _data(n=40)
    ref = None
    for make in (lambda a: _Frame(a), lambda a: a):
        lamina.utils.set_random_seed(0)
        model = _mlp()
        model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
        h = model.fit(make(x), make(y), epochs=2, batch_size=8, verbose=0, shuffle=False, validation_split=0.25)
        out = (h.history, model.evaluate(make(x), make(y), verbose=0), model.predict(make(x), verbose=0))
        if ref is None:
            ref = out
        else:
            assert out[0] == ref[0] and out[1] == ref[1]
            np.testing.assert_array_equal(out[2], ref[2])


def test_pandas_frames_and_series_train_like_arrays():
    pd = pytest.importorskip("pandas")
    x, y = _data(n=40)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])], index=np.arange(100, 140))
    labels = pd.Series(y, index=frame.index)
    results = []
    for xs, ys in ((x, y), (frame, labels)):
        lamina.utils.set_random_seed(0)
        model = _mlp()
        model.compile("sgd", "sparse_categorical_crossentropy", metrics=["accuracy"])
        h = model.fit(xs, ys, epochs=2, batch_size=8, verbose=0, validation_data=(xs, ys),
                      sample_weight=None if ys is y else pd.Series(np.ones(40), index=frame.index))
        results.append((h.history, model.predict(xs, verbose=0)))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])
    # a dict of columns into a functional model's named inputs
    inputs = {name: lamina.Input((1,), name=name) for name in ("f0", "f1")}
    model = lamina.Model(inputs, layers.Dense(1)(layers.Concatenate()([inputs["f0"], inputs["f1"]])))
    model.compile("sgd", "mse")
    h = model.fit({"f0": frame["f0"], "f1": frame["f1"]}, labels.astype("float32"), epochs=1, batch_size=10, verbose=0)
    assert len(h.history["loss"]) == 1 and np.isfinite(h.history["loss"][0])


def test_generator_and_iterable_inputs():
    x, y = _data()
    model = _mlp()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])

    def gen():
        while True:
            for i in range(0, 64, 16):
                yield x[i:i + 16], y[i:i + 16]
    h = model.fit(gen(), steps_per_epoch=4, epochs=2, verbose=0)
    assert len(h.history["loss"]) == 2 and model.optimizer.iterations == 8
    batches = [(x[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
    h = model.fit(batches, epochs=2, validation_data=batches[:1], verbose=0)
    assert model.optimizer.iterations == 16 and "val_loss" in h.history
    assert len(model.predict(x, batch_size=7, verbose=0)) == 64
    assert np.isfinite(model.evaluate(iter(batches), verbose=0)[0])


def test_multi_input_multi_output_lists_and_dicts():
    a_in = lamina.Input(shape=(4,), name="a")
    b_in = lamina.Input(shape=(3,), name="b")
    h = layers.Dense(8, activation="relu")(a_in)
    h2 = layers.Dense(8, activation="relu")(b_in)
    cls = layers.Dense(3, activation="softmax", name="cls")(h + h2)
    reg = layers.Dense(1, name="reg")(h2)
    model = lamina.Model(inputs=[a_in, b_in], outputs=[cls, reg])
    model.compile("adam", loss={"cls": "sparse_categorical_crossentropy", "reg": "mse"},
                  loss_weights={"cls": 1.0, "reg": 0.5}, metrics={"cls": ["accuracy"]})
    rng = np.random.default_rng(0)
    xa, xb = rng.normal(size=(32, 4)).astype(np.float32), rng.normal(size=(32, 3)).astype(np.float32)
    yc, yr = rng.integers(0, 3, 32), rng.normal(size=(32, 1)).astype(np.float32)
    hist = model.fit({"a": xa, "b": xb}, {"cls": yc, "reg": yr}, epochs=2, batch_size=8, verbose=0)
    assert {"loss", "cls_loss", "reg_loss", "cls_accuracy"} <= set(hist.history)
    logs = model.evaluate([xa, xb], [yc, yr], verbose=0, return_dict=True)
    assert np.isclose(logs["loss"], logs["cls_loss"] + 0.5 * logs["reg_loss"], rtol=1e-4)
    out = model.predict([xa, xb], verbose=0)
    assert [o.shape for o in out] == [(32, 3), (32, 1)]


def test_accuracy_resolution_follows_keras():
    from lamina.models.training import resolve_metric
    p = np.zeros((4, 3), np.float32)
    assert type(resolve_metric("accuracy", np.zeros(4), p)).__name__ == "SparseCategoricalAccuracy"
    assert type(resolve_metric("accuracy", np.zeros((4, 3)), p)).__name__ == "CategoricalAccuracy"
    assert type(resolve_metric("acc", np.zeros((4, 1)), np.zeros((4, 1)))).__name__ == "BinaryAccuracy"


def test_loss_shape_errors_say_what_to_use():
    x, y = _data()
    model = _mlp()
    model.compile("adam", "categorical_crossentropy")
    with pytest.raises(ValueError, match="sparse_categorical_crossentropy"):
        model.fit(x, y, verbose=0)
    model.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(ValueError, match="categorical_crossentropy"):
        model.fit(x, np.eye(3)[y], verbose=0)
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        model.fit(x, y + 5, verbose=0)
    model.compile("adam", "categorical_crossentropy")
    with pytest.raises(ValueError, match="width"):
        model.fit(x, np.eye(4)[y], verbose=0)
    model.compile("adam", "mse")
    with pytest.raises(ValueError, match="do not match"):
        model.fit(x, y, verbose=0)


def test_uncompiled_and_bad_arguments():
    model = _mlp()
    for run in (lambda: model.fit(np.zeros((2, 8)), np.zeros(2)), lambda: model.evaluate(np.zeros((2, 8)), np.zeros(2)),
                lambda: model.train_on_batch(np.zeros((2, 8)), np.zeros(2))):
        with pytest.raises(ValueError, match="compile"):   # (Keras's exception type)
            run()
    model.compile("adam", "mse")
    with pytest.raises(ValueError, match="cardinality"):
        model.fit(np.zeros((4, 8)), np.zeros((3, 3)), verbose=0)
    with pytest.raises(ValueError, match="Unknown loss"):
        model.compile("adam", "msee")


@pytest.mark.filterwarnings("ignore:invalid value encountered")
def test_nan_loss_stops_fit_naming_batch_and_layer():
    x, y = _data(n=32)
    model = models.Sequential([layers.Dense(4, input_shape=(8,), name="first"),
                               layers.Lambda(lambda t: lamina.ops.log(t), name="log_of_negative"),
                               layers.Dense(3, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    before = model.get_weights()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h = model.fit(x, y, batch_size=8, epochs=3, verbose=0)
    msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert any("batch 0" in m and "'log_of_negative'" in m for m in msgs), msgs
    assert h.history == {} and model.stop_training
    for a, b in zip(before, model.get_weights()):
        assert np.array_equal(a, b)
    with pytest.raises(FloatingPointError, match="log_of_negative"):
        model.train_on_batch(x[:8], y[:8])


def test_nan_in_input_is_reported():
    x, y = _data(n=16)
    x[3, 0] = np.nan
    model = models.Sequential([layers.Dense(3, activation="softmax", input_shape=(8,))])
    model.compile("sgd", "sparse_categorical_crossentropy")
    with pytest.warns(RuntimeWarning, match="input batch itself"):
        model.fit(x, y, batch_size=16, verbose=0)


def test_verbose_modes_print_one_line_per_epoch_when_not_a_terminal(capsys):
    x, y = _data()
    model = _mlp()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=16, verbose=1, validation_data=(x, y))
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Epoch 1/2" and out[2] == "Epoch 2/2" and len(out) == 4
    assert out[1].startswith("4/4 - ") and "loss: " in out[1] and "val_accuracy: " in out[1]
    model.fit(x, y, epochs=1, verbose=2)
    out = capsys.readouterr().out.splitlines()   # one epoch: no "Epoch 1/1" line (Keras 3.15), the logs by name
    assert len(out) == 1 and out[0].startswith("2/2 - ") and out[0].index("accuracy: ") < out[0].index("loss: ")
    model.fit(x, y, epochs=1, verbose=0)
    model.predict(x, verbose=0)
    assert capsys.readouterr().out == ""


_FIT_SCRIPT = """
import numpy as np, lamina
rng = np.random.default_rng(0)
x = rng.normal(size=(96, 4)).astype('float32'); y = (x[:, 0] > 0).astype('int64')
model = lamina.Sequential([lamina.layers.Input((4,)), lamina.layers.Dense(8, activation='relu'),
                           lamina.layers.Dense(2, activation='softmax')])
model.compile('adam', 'sparse_categorical_crossentropy',
              metrics=['accuracy', lamina.metrics.SparseTopKCategoricalAccuracy(k=1, name='a_rather_long_metric_name')])
h = model.fit(x, y, epochs=2, batch_size=8, verbose=1, validation_data=(x, y))
for k, v in h.history.items():
    print('HISTORY', k, ' '.join(f'{e:.4f}' for e in v))
"""


@pytest.mark.parametrize("columns", [40, 80, 120, 0])
def test_fit_progress_fits_the_terminal_and_shows_every_metric(columns):
    import os
    import pathlib
    import sys
    import ptyscreen
    root = pathlib.Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "OPENBLAS_NUM_THREADS": "1"}
    status, lines = ptyscreen.run([sys.executable, "-c", _FIT_SCRIPT], columns, env=env)
    assert status == 0, "\n".join(lines)
    history = {}
    for line in lines:
        if line.startswith("HISTORY"):
            _, key, *values = line.split()
            history[key] = values
    assert set(history) == {"loss", "accuracy", "a_rather_long_metric_name", "val_loss", "val_accuracy",
                            "val_a_rather_long_metric_name"}
    shown = [line for line in lines if not line.startswith("HISTORY")]
    if columns:
        assert all(len(line) < columns for line in shown), shown
    text = "\n".join(shown)
    epochs = text.split("Epoch 2/2")
    assert len(epochs) == 2 and "Epoch 1/2" in epochs[0]
    for epoch, block in enumerate(epochs):
        for key, values in history.items():
            assert f"{key}: {values[epoch]}" in block, (key, epoch, block)


def test_predict_in_batches_records_no_graph():
    x, _ = _data(n=10)
    model = _mlp()
    out = model.predict(x, batch_size=3, verbose=0)
    assert isinstance(out, np.ndarray) and out.shape == (10, 3)
    np.testing.assert_allclose(out, model(x).numpy(), rtol=1e-6)
    assert not model.predict_step((x, None, None)).requires_grad
    np.testing.assert_allclose(model.predict_on_batch(x), out, rtol=1e-6)


def test_train_on_batch_returns_list_with_metrics():
    x, y = _data(n=16)
    model = _mlp()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    loss, acc = model.train_on_batch(x, y)
    assert 0 <= acc <= 1 and loss > 0
    logs = model.test_on_batch(x, y, return_dict=True)
    assert set(logs) == {"loss", "accuracy"}
    assert model.metrics_names == ["loss", "accuracy"]


def test_progbar_keras_api_averages_and_plain_line():
    import io
    from lamina.utils import Progbar
    out = io.StringIO()
    bar = Progbar(4, stream=out, stateful_metrics=["lr"])
    bar.update(1, [("loss", 1.0), ("lr", 0.1)])
    bar.add(2, [("loss", 4.0), ("lr", 0.2)])            # steps 2 and 3 at 4.0: mean (1 + 4 + 4) / 3 = 3
    assert out.getvalue() == ""                          # not a terminal: nothing until the end
    bar.update(4, [("lr", 0.3)])
    line = out.getvalue()
    assert line.startswith("4/4 - ") and line.endswith("- loss: 3.0000 - lr: 0.3000\n")
    out = io.StringIO()
    lamina_bar = Progbar(2, stream=out)
    lamina_bar.update(2)
    assert not out.getvalue().rstrip().endswith("-")    # no trailing dash without metrics (predict)


def test_compile_accepts_a_plain_loss_function_as_keras_does(tmp_path):
    def halved_mse(y_true, y_pred):
        return lamina.ops.mean(lamina.ops.square(y_true - y_pred), axis=-1) * 0.5
    x, _ = _data()
    model = lamina.Sequential([lamina.layers.Input((x.shape[1],)), lamina.layers.Dense(1)])
    model.compile("sgd", loss=halved_mse)
    y = np.ones((len(x), 1), "float32")
    pred = model.predict(x, verbose=0)
    assert model.evaluate(x, y, verbose=0) == pytest.approx(float(np.mean((y - pred) ** 2) * 0.5), rel=1e-5)
    model.save(tmp_path / "m.lamina")
    with pytest.raises(ValueError, match="halved_mse"):   # not registered: named in the error, as Keras does
        lamina.models.load_model(tmp_path / "m.lamina")
    assert lamina.models.load_model(tmp_path / "m.lamina", compile=False).predict(x, verbose=0).shape == pred.shape


def test_evaluate_and_predict_print_one_line_each(capsys):
    x, y = _data()
    model = _mlp()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.evaluate(x, y, batch_size=16, verbose=1)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("4/4 - ") and "loss: " in out[0] and "accuracy: " in out[0]
    model.predict(x, batch_size=16, verbose=2)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("4/4 - ") and out[0].endswith("/step")
