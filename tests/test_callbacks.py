"""Callbacks: hooks order, History, EarlyStopping, ModelCheckpoint, ReduceLROnPlateau, LearningRateScheduler,
CSVLogger, TerminateOnNaN, LambdaCallback, BackupAndRestore (resume == uninterrupted run)."""
import csv
import os

import numpy as np
import pytest

import lamina
from lamina import callbacks, layers, models


def _setup(seed=0, lr=0.01, optimizer="adam"):
    lamina.utils.set_random_seed(seed)
    model = models.Sequential([layers.Dense(8, activation="relu", input_shape=(4,)), layers.Dropout(0.2),
                               layers.Dense(1)])
    opt = lamina.optimizers.get({"class_name": optimizer, "config": {"learning_rate": lr}})
    model.compile(optimizer=opt, loss="mse")
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(32, 4)).astype(np.float32)
    y = x.sum(1, keepdims=True)
    return model, x, y


class Recorder(callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.calls = []

    def __getattribute__(self, name):
        if name.startswith("on_"):
            calls = object.__getattribute__(self, "calls")
            return lambda *a: calls.append(name)
        return object.__getattribute__(self, name)


def test_hook_order():
    model, x, y = _setup()
    rec = Recorder()
    model.fit(x, y, batch_size=16, epochs=1, validation_data=(x, y), verbose=0, callbacks=[rec])
    assert rec.calls == ["on_train_begin", "on_epoch_begin", "on_train_batch_begin", "on_train_batch_end",
                         "on_train_batch_begin", "on_train_batch_end", "on_test_begin", "on_test_batch_begin",
                         "on_test_batch_end", "on_test_batch_begin", "on_test_batch_end", "on_test_end",
                         "on_epoch_end", "on_train_end"]
    assert rec.model is model and rec.params["epochs"] == 1 and rec.params["steps"] == 2


def test_early_stopping_restores_best_weights():
    model, x, y = _setup()
    losses = iter([5.0, 3.0, 4.0, 4.5, 1.0, 0.5])
    snapshots = []

    class Fake(callbacks.Callback):  # feeds EarlyStopping a scripted val_loss and records the weights
        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = next(losses)
            snapshots.append(self.model.get_weights())
    stop = callbacks.EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    h = model.fit(x, y, epochs=6, verbose=0, callbacks=[Fake(), stop])
    assert h.epoch == [0, 1, 2, 3] and stop.stopped_epoch == 3 and stop.best_epoch == 1
    for a, b in zip(model.get_weights(), snapshots[1]):
        np.testing.assert_array_equal(a, b)


def test_early_stopping_mode_min_delta_and_start_from_epoch():
    assert callbacks.EarlyStopping(monitor="val_accuracy").mode == "max"
    model, x, y = _setup()
    stop = callbacks.EarlyStopping(monitor="loss", min_delta=1e9, patience=1, start_from_epoch=2)
    h = model.fit(x, y, epochs=10, verbose=0, callbacks=[stop])
    assert h.epoch == [0, 1, 2, 3]  # epochs 0-1 not counted, then no improvement >= 1e9
    with pytest.raises(ValueError, match="mode"):
        callbacks.EarlyStopping(mode="up")


def test_model_checkpoint_best_only_and_weights(tmp_path):
    model, x, y = _setup()
    scripted = iter([3.0, 2.0, 2.5, 1.0])

    class Fake(callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_loss"] = next(scripted)
    path = str(tmp_path / "ckpt-{epoch:02d}-{val_loss:.1f}.keras")
    ckpt = callbacks.ModelCheckpoint(path, monitor="val_loss", save_best_only=True)
    model.fit(x, y, epochs=4, verbose=0, callbacks=[Fake(), ckpt])
    assert sorted(os.listdir(tmp_path)) == ["ckpt-01-3.0.keras", "ckpt-02-2.0.keras", "ckpt-04-1.0.keras"]
    loaded = models.load_model(tmp_path / "ckpt-04-1.0.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    wpath = tmp_path / "w.weights.h5"
    model.fit(x, y, epochs=1, verbose=0, callbacks=[callbacks.ModelCheckpoint(wpath, save_weights_only=True)])
    other, _, _ = _setup(seed=5)
    other.load_weights(wpath)
    np.testing.assert_allclose(other.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def test_reduce_lr_on_plateau_and_scheduler():
    model, x, y = _setup(lr=0.1, optimizer="sgd")
    flat = callbacks.LambdaCallback(on_epoch_end=lambda e, logs: logs.update(val_loss=1.0))
    reduce = callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2, cooldown=1, min_lr=0.02)
    h = model.fit(x, y, epochs=8, verbose=0, callbacks=[flat, reduce])
    # Keras's rule (the log shows the rate before that epoch's change): epoch 0 sets best; waits 1, 2 ->
    # 0.05 with cooldown 1; epoch 3 ends the cooldown and waits (1); 4 -> 0.025; 5 waits; 6 -> min_lr 0.02
    assert np.allclose(h.history["learning_rate"], [0.1, 0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.02])
    assert float(model.optimizer.learning_rate) == pytest.approx(0.02)
    model, x, y = _setup(lr=0.1, optimizer="sgd")
    sched = callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.1 if epoch else lr)
    h = model.fit(x, y, epochs=3, verbose=0, callbacks=[sched])
    assert np.allclose(h.history["learning_rate"], [0.1, 0.01, 0.001])


def test_csv_logger(tmp_path):
    model, x, y = _setup()
    path = tmp_path / "log.csv"
    model.fit(x, y, epochs=2, verbose=0, validation_data=(x, y), callbacks=[callbacks.CSVLogger(path)])
    model.fit(x, y, epochs=1, verbose=0, validation_data=(x, y), callbacks=[callbacks.CSVLogger(path, append=True)])
    rows = list(csv.reader(open(path)))
    assert rows[0] == ["epoch", "loss", "val_loss"] and len(rows) == 4
    assert [r[0] for r in rows[1:]] == ["0", "1", "0"]


def test_terminate_on_nan_and_lambda():
    model, x, y = _setup()
    stops = []
    term = callbacks.TerminateOnNaN()
    term.set_model(model)
    term.on_train_batch_end(3, {"loss": float("nan")})
    assert model.stop_training
    model.stop_training = False
    cb = callbacks.LambdaCallback(on_train_begin=lambda logs: stops.append("begin"),
                                  on_epoch_end=lambda e, logs: stops.append(e))
    model.fit(x, y, epochs=2, verbose=0, callbacks=[cb])
    assert stops == ["begin", 0, 1]
    with pytest.raises(ValueError, match="unknown hook"):
        callbacks.LambdaCallback(on_nothing=print)


def test_backup_and_restore_resumes_exactly(tmp_path):
    def fit(epochs, cbs):
        model, x, y = _setup(seed=3)
        try:
            model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, callbacks=cbs)
        except RuntimeError:
            pass
        return model

    reference = fit(5, [])

    class Crash(callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 3:
                raise RuntimeError("power cut")
    backup = str(tmp_path / "backup")
    fit(5, [callbacks.BackupAndRestore(backup), Crash()])
    assert os.listdir(backup) == ["backup.safetensors"]   # one file, written in one atomic write
    epochs_run = []
    resumed = fit(5, [callbacks.BackupAndRestore(backup),
                      callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: epochs_run.append(e))])
    assert epochs_run == [3, 4]
    for a, b in zip(reference.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert resumed.optimizer.iterations == reference.optimizer.iterations
    assert not os.path.exists(backup)  # deleted once the fit completed


def test_backup_and_restore_with_a_learning_rate_schedule(tmp_path):
    import lamina
    from lamina import layers
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((32, 4)).astype("float32"), rng.integers(0, 2, 32)
    lamina.utils.set_random_seed(0)
    m = lamina.Sequential([layers.Input((4,)), layers.Dense(2)])
    sched = lamina.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    m.compile(lamina.optimizers.SGD(sched), "sparse_categorical_crossentropy")
    cb = lamina.callbacks.BackupAndRestore(str(tmp_path / "bk"), delete_checkpoint=False)
    m.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[cb])
    m2 = lamina.Sequential([layers.Input((4,)), layers.Dense(2)])
    m2.compile(lamina.optimizers.SGD(sched), "sparse_categorical_crossentropy")
    m2.fit(x, y, epochs=2, batch_size=8, verbose=0,
           callbacks=[lamina.callbacks.BackupAndRestore(str(tmp_path / "bk"))])  # resumes; must not raise
    assert m2.optimizer.iterations == 8


def test_early_stopping_messages_come_in_keras_order(capsys):
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    model = lamina.Sequential([lamina.Input((4,)), lamina.layers.Dense(1)])
    model.compile(lamina.optimizers.SGD(0.0), "mse")   # nothing improves: stops after patience
    model.fit(x, x[:, :1] * 0, epochs=4, verbose=2, validation_data=(x, x[:, :1] * 0),
              callbacks=[lamina.callbacks.EarlyStopping(patience=1, restore_best_weights=True, verbose=1)])
    lines = capsys.readouterr().out.splitlines()
    # as Keras 3.15 prints it: each epoch's line, then the stop, then the restore
    assert [l.split(" - ")[0] if l.startswith("1/1") else l for l in lines] == [
        "Epoch 1/4", "1/1", "Epoch 2/4", "1/1", "Epoch 2: early stopping",
        "Restoring model weights from the end of the best epoch: 1."]
    assert lines[1].startswith("1/1 - 0s - ")              # whole seconds, as Keras
