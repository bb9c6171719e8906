"""Issue 22: the training loop under an expert's eye. Non-finite gradients and weights stop fit (finding
4); validation_split / validation sample weights / shuffled sample weights / last partial batch /
callbacks in max mode / save-load round trips (finding 6: each test kills a bug a mutation test planted
and the earlier suite let survive)."""
import math
import warnings

import numpy as np
import pytest

import lamina
from lamina import callbacks as cb, layers, models, ops

RNG = np.random.default_rng(0)


# ----- finding 4: NaN gradients and weights
def _sqrt_model():
    # the output is sqrt(|x . 0|) = 0: a finite loss whose gradient is 0 * inf = NaN
    return models.Sequential([layers.Input((3,)), layers.Dense(2, name="pre"),
                              layers.Dense(1, kernel_initializer="zeros", name="zero_dense"),
                              layers.Lambda(lambda t: ops.sqrt(ops.abs(t)), name="sqrt_at_zero")])


@pytest.mark.filterwarnings("ignore:invalid value encountered", "ignore:divide by zero")
def test_nan_gradient_with_finite_loss_stops_fit_before_the_update_naming_the_layer():
    lamina.utils.set_random_seed(0)
    model = _sqrt_model()
    model.compile(optimizer="sgd", loss="mse")
    x, y = RNG.standard_normal((8, 3)).astype(np.float32), np.ones((8, 1), np.float32)
    before = model.get_weights()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, batch_size=4, epochs=2, verbose=0)
    msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning) and "stopped" in str(w.message)]
    assert len(msgs) == 1 and "of layer 'zero_dense' (Dense) is not finite" in msgs[0], msgs
    assert "epoch 1, batch 0" in msgs[0] and "'pre'" in msgs[0]  # the earlier layer's NaN is listed too
    assert model.stop_training
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)  # nothing NaN slipped into the weights
    with pytest.raises(FloatingPointError, match="zero_dense"):
        model.train_on_batch(x, y)


@pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value encountered")
def test_update_that_overflows_the_weights_stops_fit_at_the_next_batch_naming_the_weights():
    model = models.Sequential([layers.Input((2,)), layers.Dense(1, name="blows_up")])
    model.compile(optimizer=lamina.optimizers.SGD(learning_rate=1e37), loss="mse")
    x, y = np.full((4, 2), 100.0, np.float32), np.full((4, 1), 1e4, np.float32)
    with pytest.warns(RuntimeWarning, match="weights are not finite: sequential/blows_up/kernel") as rec:
        h = model.fit(x, y, batch_size=4, epochs=3, verbose=0)
    assert model.stop_training and len(h.history["loss"]) == 1
    assert "epoch 2, batch 0" in str(rec[-1].message)



@pytest.mark.filterwarnings("ignore:overflow encountered")
def test_nonfinite_indices_finds_nan_and_inf_and_only_them():
    """The gradients' check (a sum of squares first, the exact check where that is not finite): NaN, +inf and -inf
    found at any position in float16/32/64, C-ordered or not; huge finite values, whose squares overflow, and
    subnormal ones are not flagged."""
    from lamina.models.training import nonfinite_indices
    for dtype in (np.float16, np.float32, np.float64):
        big = np.finfo(dtype).max
        clean = [np.ones((5, 7), dtype), np.full(9, big, dtype), np.full(3, np.finfo(dtype).smallest_subnormal, dtype),
                 np.ones((6, 4), dtype).T, np.zeros(0, dtype), np.arange(5)]
        assert nonfinite_indices(clean) == []
        for bad in (np.nan, np.inf, -np.inf):
            for pos in (0, 17, 34):
                a = np.ones((5, 7), dtype)
                a.reshape(-1)[pos] = bad
                assert nonfinite_indices([np.ones(3, dtype), a, np.full(4, big, dtype)]) == [1]
                assert nonfinite_indices([np.ascontiguousarray(a.T).T]) == [0]

# ----- finding 6: validation_split takes the LAST part
def _linear(n_in=3, seed=0):
    lamina.utils.set_random_seed(seed)
    return models.Sequential([layers.Input((n_in,)), layers.Dense(1)])


def test_validation_split_takes_the_last_samples():
    x = RNG.standard_normal((20, 3)).astype(np.float32)
    y = RNG.standard_normal((20, 1)).astype(np.float32)
    model = _linear()
    model.compile(optimizer=lamina.optimizers.SGD(learning_rate=0.0), loss="mse")
    h = model.fit(x, y, batch_size=5, epochs=1, validation_split=0.25, shuffle=False, verbose=0)
    last = model.evaluate(x[15:], y[15:], verbose=0)
    first = model.evaluate(x[:5], y[:5], verbose=0)
    assert h.history["val_loss"][0] == pytest.approx(last, rel=1e-6)
    assert abs(last - first) > 1e-3  # the check can tell the two parts apart
    assert h.history["loss"][0] == pytest.approx(model.evaluate(x[:15], y[:15], verbose=0), rel=1e-6)


def test_validation_sample_weights_of_a_three_tuple_are_used():
    x = RNG.standard_normal((12, 3)).astype(np.float32)
    y = RNG.standard_normal((12, 1)).astype(np.float32)
    vx, vy = RNG.standard_normal((6, 3)).astype(np.float32), RNG.standard_normal((6, 1)).astype(np.float32)
    vsw = np.array([0.0, 3.0, 1.0, 0.5, 0.0, 2.0], np.float32)
    model = _linear()
    model.compile(optimizer=lamina.optimizers.SGD(learning_rate=0.0), loss="mse")
    h = model.fit(x, y, batch_size=6, epochs=1, validation_data=(vx, vy, vsw), verbose=0)
    weighted = model.evaluate(vx, vy, sample_weight=vsw, verbose=0)
    unweighted = model.evaluate(vx, vy, verbose=0)
    assert h.history["val_loss"][0] == pytest.approx(weighted, rel=1e-6)
    assert abs(weighted - unweighted) > 1e-3
    pred = model.predict(vx, verbose=0)
    # Keras's weighted mean: sum(w * per-sample loss) / batch size
    assert weighted == pytest.approx(float(np.sum(vsw * ((pred - vy) ** 2)[:, 0]) / 6), rel=1e-5)


@pytest.mark.parametrize("kind", ["sample_weight", "class_weight"])
def test_weights_are_shuffled_together_with_x_and_y(kind):
    n = 16
    x = RNG.standard_normal((n, 3)).astype(np.float32)
    yc = RNG.integers(0, 2, n)
    extra = {"sample_weight": np.linspace(0.1, 3.0, n).astype(np.float32)} if kind == "sample_weight" \
        else {"class_weight": {0: 0.2, 1: 3.0}}

    def run(shuffle):
        lamina.utils.set_random_seed(0)
        model = models.Sequential([layers.Input((3,)), layers.Dense(2, activation="softmax")])
        model.compile(optimizer=lamina.optimizers.SGD(learning_rate=0.5), loss="sparse_categorical_crossentropy")
        # one full batch per epoch: with SGD, the order inside the batch cannot change the result
        h = model.fit(x, yc, batch_size=n, epochs=3, shuffle=shuffle, verbose=0, **extra)
        return h.history["loss"], model.get_weights()

    (l1, w1), (l2, w2) = run(False), run(True)
    np.testing.assert_allclose(l1, l2, rtol=1e-5)
    for a, b in zip(w1, w2):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_shuffle_actually_mixes_weights_with_their_samples_over_batches():
    # several batches: a run with shuffle=True must still weigh each sample with its own weight. With
    # weights that zero half the samples, every gradient step only sees the kept samples.
    n = 12
    x = RNG.standard_normal((n, 2)).astype(np.float32)
    y = RNG.standard_normal((n, 1)).astype(np.float32)
    sw = np.zeros(n, np.float32)
    sw[:6] = 1.0

    def run(xx, yy, ww):
        lamina.utils.set_random_seed(1)
        model = _linear(2, seed=1)
        model.compile(optimizer=lamina.optimizers.SGD(learning_rate=0.0), loss="mse")
        return model.fit(xx, yy, sample_weight=ww, batch_size=4, epochs=1, shuffle=True, verbose=0)

    # samples with weight 0 carry garbage targets: a mismatched weight would let them into the loss
    y_bad = y.copy()
    y_bad[6:] = 1e3
    assert run(x, y_bad, sw).history["loss"][0] < 1e3 / 4


def test_last_partial_batch_is_kept():
    x = RNG.standard_normal((10, 3)).astype(np.float32)
    y = RNG.standard_normal((10, 1)).astype(np.float32)
    sizes = []

    class Count(cb.Callback):
        def on_train_batch_end(self, batch, logs=None):
            sizes.append(batch)

    model = _linear()
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, y, batch_size=4, epochs=2, verbose=0, callbacks=[Count()])
    assert sizes == [0, 1, 2, 0, 1, 2]  # ceil(10 / 4) = 3 steps per epoch
    seen = []
    orig = model.train_step

    def spy(data):
        seen.append(len(data[0]))
        return orig(data)

    model.train_step = spy
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=True)
    assert sorted(seen) == [2, 4, 4]


# ----- finding 6: callbacks in max mode with min_delta and baseline (Keras 3.15 semantics:
# improvement in max mode is ``current - min_delta > best``; an improving epoch never stops training and
# resets the wait only once it beats the baseline; restore_best_weights puts the best weights back at the
# end of training, stopped early or not)
class _FakeModel:
    def __init__(self, lr=1.0):
        self.stop_training = False
        self.w = [np.zeros(1)]
        self.optimizer = type("Opt", (), {"learning_rate": lr})()
        self.saved = []

    def get_weights(self):
        return [a.copy() for a in self.w]

    def set_weights(self, w):
        self.w = [a.copy() for a in w]

    def save(self, path):
        self.saved.append(path)

    save_weights = save


def _feed(callback, values, monitor="val_acc"):
    model = _FakeModel()
    callback.set_model(model)
    callback.on_train_begin()
    last = None
    for epoch, v in enumerate(values):
        callback.on_epoch_begin(epoch)
        model.w = [np.array([float(epoch)])]  # the weights "of" each epoch
        callback.on_epoch_end(epoch, {monitor: v})
        last = epoch
        if model.stop_training:
            break
    callback.on_train_end()
    return model, last


@pytest.mark.parametrize("values,kwargs,stopped,best", [
    # min_delta 0.02: +0.05 improves, +0.01 does not -> stops at the first patience-exceeding epoch
    ([0.5, 0.55, 0.56, 0.57, 0.571, 0.6], dict(min_delta=0.02, patience=1), 2, 0.55),
    ([0.5, 0.55, 0.56, 0.57, 0.571, 0.6], dict(min_delta=0.02, patience=2), 3, 0.55),
    # min_delta given negative: its sign is ignored, as Keras's abs()
    ([0.5, 0.55, 0.56, 0.57, 0.571, 0.6], dict(min_delta=-0.02, patience=1), 2, 0.55),
    # improving epochs below the baseline do not stop training even with patience 0 ...
    ([0.5, 0.6, 0.7, 0.72, 0.71, 0.7], dict(baseline=0.75, patience=0), 4, 0.72),
    # ... but they do not reset the wait either: the first non-improving epoch stops it
    ([0.5, 0.6, 0.7, 0.72, 0.71, 0.7, 0.69], dict(baseline=0.75, patience=2), 4, 0.72),
    # min_delta and baseline together: 0.51 - 0.01 is not above 0.5
    ([0.5, 0.51, 0.515, 0.52], dict(min_delta=0.01, baseline=0.505, patience=1), 1, 0.5),
    # above the baseline: plain patience
    ([0.8, 0.9, 0.85, 0.86, 0.87], dict(baseline=0.75, patience=2), 3, 0.9),
])
def test_early_stopping_max_mode_min_delta_baseline(values, kwargs, stopped, best):
    es = cb.EarlyStopping(monitor="val_acc", mode="max", **kwargs)
    model, last = _feed(es, values)
    assert es.stopped_epoch == stopped and last == stopped and model.stop_training
    assert es.best == pytest.approx(best)


def test_early_stopping_restores_best_weights_at_the_end_even_without_stopping():
    es = cb.EarlyStopping(monitor="val_acc", mode="max", patience=5, restore_best_weights=True)
    model, last = _feed(es, [0.5, 0.9, 0.7, 0.6])
    assert last == 3 and not model.stop_training
    assert model.w[0][0] == 1.0  # epoch 1's weights
    es = cb.EarlyStopping(monitor="val_acc", mode="max", min_delta=0.005, patience=2, restore_best_weights=True)
    model, last = _feed(es, [0.5, 0.8, 0.7, 0.72, 0.81, 0.7, 0.6])
    assert last == 3 and model.w[0][0] == 1.0


def test_early_stopping_auto_mode_maximises_accuracy():
    es = cb.EarlyStopping(monitor="val_accuracy", patience=1)
    _, last = _feed(es, [0.5, 0.6, 0.55, 0.7], monitor="val_accuracy")
    assert last == 2


def test_reduce_lr_on_plateau_max_mode_min_delta_cooldown():
    # Keras: improvement = current - min_delta > best; a cut starts `cooldown` epochs, each first counting
    # down and resetting the wait; an epoch counts towards patience once the count is back at 0
    rl = cb.ReduceLROnPlateau(monitor="val_acc", mode="max", factor=0.5, patience=2, min_delta=0.05, cooldown=2,
                              min_lr=0.1)
    model = _FakeModel(lr=1.0)
    rl.set_model(model)
    rl.on_train_begin()
    lrs = []
    for epoch, v in enumerate([0.5, 0.58, 0.6, 0.62, 0.66, 0.67, 0.68, 0.69, 0.7, 0.8, 0.81, 0.82, 0, 0, 0, 0]):
        rl.on_epoch_end(epoch, {"val_acc": v})
        lrs.append(model.optimizer.learning_rate)
    # .5 best; .58 (+.08) improves; .6, .62 (+.02, +.04) do not -> cut at 3 (cooldown 2); at 4 the count
    # goes to 1 and .66 improves (.66 - .05 > .58); at 5 it reaches 0 and .67 counts (wait 1); .68 -> cut
    # at 6; 7: count 1, not counted; 8: count 0, .7 counts (wait 1); .8 improves; .81, .82 -> cut at 11;
    # 12 not counted, 13 wait 1, 14 -> cut to max(0.0625, min_lr) = 0.1; 15 cooldown
    assert lrs == [1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.25, 0.125, 0.125, 0.125, 0.1, 0.1]
    for _ in range(4):
        rl.on_epoch_end(16, {"val_acc": 0.0})
    assert model.optimizer.learning_rate == 0.1  # never below min_lr, and a rate at min_lr is left alone


def test_model_checkpoint_max_mode_with_initial_threshold(tmp_path):
    ck = cb.ModelCheckpoint(str(tmp_path / "m{epoch}.keras"), monitor="val_acc", mode="max", save_best_only=True,
                            initial_value_threshold=0.6)
    model, _ = _feed(ck, [0.5, 0.6, 0.61, 0.55, 0.61, 0.7, float("nan")])
    # strictly better than the best so far, starting from the threshold 0.6
    assert [p.rsplit("/", 1)[-1] for p in model.saved] == ["m3.keras", "m6.keras"]
    ck = cb.ModelCheckpoint(str(tmp_path / "n{epoch}.keras"), monitor="val_loss", save_best_only=True)
    model, _ = _feed(ck, [0.5, 0.6, 0.4, 0.4], monitor="val_loss")
    assert [p.rsplit("/", 1)[-1] for p in model.saved] == ["n1.keras", "n3.keras"]


# ----- finding 6: save/load round trips, weight by weight
def _bn_model():
    inp = layers.Input((4,))
    h = layers.Dense(4)(inp)
    return models.Model(inp, layers.Dense(2)(layers.BatchNormalization(momentum=0.5)(h)))


def _lstm_model():
    # input width == units: kernel and recurrent_kernel have the same shape, so only values tell them apart
    return models.Sequential([layers.Input((5, 4)), layers.LSTM(4, return_sequences=True), layers.LSTM(4),
                              layers.Dense(2)])


def _gru_model():
    return models.Sequential([layers.Input((5, 3)), layers.GRU(3, return_sequences=True), layers.GRU(3), layers.Dense(2)])


def _mha_model():
    inp = layers.Input((5, 4))
    att = layers.MultiHeadAttention(num_heads=2, key_dim=4, value_dim=3)(inp, inp)
    return models.Model(inp, layers.Dense(2)(layers.Flatten()(att)))


def _nested_model():
    inner = models.Sequential([layers.Dense(4, activation="tanh"), layers.Dense(4)], name="inner")
    inp = layers.Input((4,))
    return models.Model(inp, layers.Dense(2)(layers.Add()([inner(layers.Dense(4)(inp)), inp])))


@pytest.mark.parametrize("make,shape", [(_bn_model, (8, 4)), (_lstm_model, (8, 5, 4)), (_gru_model, (8, 5, 3)),
                                        (_mha_model, (8, 5, 4)), (_nested_model, (8, 4))],
                         ids=["batchnorm", "lstm", "gru", "mha", "nested"])
def test_save_load_round_trip_weight_by_weight(tmp_path, make, shape):
    lamina.utils.set_random_seed(0)
    model = make()
    x = RNG.standard_normal(shape).astype(np.float32)
    y = RNG.standard_normal((shape[0], 2)).astype(np.float32)
    model.compile(optimizer="adam", loss="mse")
    model.fit(x, y, epochs=2, batch_size=4, verbose=0)  # every weight (BN statistics too) moves off its init
    names = [w.path for w in model.weights]
    values = model.get_weights()
    pred = model.predict(x, verbose=0)

    path = tmp_path / "m.keras"
    model.save(path)
    loaded = lamina.models.load_model(path)
    assert [w.path.split("/")[-1] for w in loaded.weights] == [n.split("/")[-1] for n in names]
    got = loaded.get_weights()
    assert len(got) == len(values)
    for name, a, b in zip(names, values, got):
        np.testing.assert_array_equal(a, b, err_msg=name)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), pred)

    # weights only, into a freshly initialised copy of the architecture
    model.save_weights(tmp_path / "w.weights.h5")
    lamina.utils.set_random_seed(1)
    fresh = make()
    fresh(x[:1])
    assert any(not np.array_equal(a, b) for a, b in zip(fresh.get_weights(), values))
    fresh.load_weights(tmp_path / "w.weights.h5")
    for name, a, b in zip(names, values, fresh.get_weights()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    np.testing.assert_array_equal(fresh.predict(x, verbose=0), pred)


def test_lstm_kernel_and_recurrent_kernel_are_not_interchangeable():
    # the round trip above would miss a swap if the two held equal values: they do not, and swapping
    # them changes the output
    lamina.utils.set_random_seed(0)
    model = _lstm_model()
    x = RNG.standard_normal((2, 5, 4)).astype(np.float32)
    pred = model.predict(x, verbose=0)
    lstm = model.layers[0]
    k, rk, b = lstm.get_weights()
    assert k.shape == rk.shape and not np.array_equal(k, rk)
    lstm.set_weights([rk, k, b])
    assert not np.allclose(model.predict(x, verbose=0), pred)
