"""Callbacks: code that fit / evaluate / predict call at fixed points (Keras's hooks and classes).

Hooks, in the order fit calls them: on_train_begin, then per epoch on_epoch_begin, per batch
on_train_batch_begin / on_train_batch_end (``logs`` = running loss and metrics), the validation pass
(on_test_begin, on_test_batch_*, on_test_end), on_epoch_end (``logs`` with the ``val_`` entries), and
finally on_train_end. ``self.model`` is the model being trained (set by ``set_model``); setting
``self.model.stop_training = True`` ends fit after the current batch or epoch.
"""
import csv
import json
import math
import os
import shutil
import sys
import time
import warnings

import numpy as np

from . import backend
from .registry import register


class Callback:
    """Base class: override the hooks you need. ``self.model`` and ``self.params`` are set by fit."""

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        register(cls)

    def __init__(self):
        self.model = None
        self.params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        self.params = params

    def on_train_begin(self, logs=None): pass
    def on_train_end(self, logs=None): pass
    def on_epoch_begin(self, epoch, logs=None): pass
    def on_epoch_end(self, epoch, logs=None): pass
    def on_train_batch_begin(self, batch, logs=None): self.on_batch_begin(batch, logs)
    def on_train_batch_end(self, batch, logs=None): self.on_batch_end(batch, logs)
    def on_batch_begin(self, batch, logs=None): pass
    def on_batch_end(self, batch, logs=None): pass
    def on_test_begin(self, logs=None): pass
    def on_test_end(self, logs=None): pass
    def on_test_batch_begin(self, batch, logs=None): pass
    def on_test_batch_end(self, batch, logs=None): pass
    def on_predict_begin(self, logs=None): pass
    def on_predict_end(self, logs=None): pass
    def on_predict_batch_begin(self, batch, logs=None): pass
    def on_predict_batch_end(self, batch, logs=None): pass


class CallbackList:
    """Several callbacks called in order: the user's, then History, then the progress bar (as Keras)."""

    def __init__(self, callbacks=None, add_history=False, add_progbar=False, model=None, **params):
        self.callbacks = list(callbacks or [])
        if add_history:
            history = next((c for c in self.callbacks if isinstance(c, History)), None) or History()
            if history not in self.callbacks:
                self.callbacks.append(history)  # after the user's: it records what they add to the logs
            if model is not None:
                model.history = history
        if add_progbar and not any(isinstance(c, ProgbarLogger) for c in self.callbacks):
            self.callbacks.append(ProgbarLogger())
        self.params = params
        for c in self.callbacks:
            c.set_params(params)
            if model is not None:
                c.set_model(model)

    def _call(self, hook, *args):
        for c in self.callbacks:
            getattr(c, hook)(*args)

    def on_train_begin(self, logs=None): self._call("on_train_begin", logs or {})
    def on_train_end(self, logs=None): self._call("on_train_end", logs or {})
    def on_epoch_begin(self, epoch, logs=None): self._call("on_epoch_begin", epoch, logs or {})
    def on_epoch_end(self, epoch, logs=None): self._call("on_epoch_end", epoch, logs if logs is not None else {})
    def on_train_batch_begin(self, batch, logs=None): self._call("on_train_batch_begin", batch, logs or {})
    def on_train_batch_end(self, batch, logs=None): self._call("on_train_batch_end", batch, logs or {})
    def on_test_begin(self, logs=None): self._call("on_test_begin", logs or {})
    def on_test_end(self, logs=None): self._call("on_test_end", logs or {})
    def on_test_batch_begin(self, batch, logs=None): self._call("on_test_batch_begin", batch, logs or {})
    def on_test_batch_end(self, batch, logs=None): self._call("on_test_batch_end", batch, logs or {})
    def on_predict_begin(self, logs=None): self._call("on_predict_begin", logs or {})
    def on_predict_end(self, logs=None): self._call("on_predict_end", logs or {})
    def on_predict_batch_begin(self, batch, logs=None): self._call("on_predict_batch_begin", batch, logs or {})
    def on_predict_batch_end(self, batch, logs=None): self._call("on_predict_batch_end", batch, logs or {})


class History(Callback):
    """Records the epoch logs: ``history.history['loss']``, ``history.epoch``, ``history.params``."""

    def __init__(self):
        super().__init__()
        self.history = {}
        self.epoch = []

    def on_train_begin(self, logs=None):
        self.epoch = []

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items():
            self.history.setdefault(k, []).append(v)


class ProgbarLogger(Callback):
    """Keras-style progress: verbose=1 draws a live bar per epoch that fits the terminal's width (the
    metrics are never cut: lamina.utils.Progbar) and prints one plain line per epoch when the output is
    not a terminal or reports no width (logs, CI); verbose=2 prints one line per epoch."""

    def __init__(self, count_mode="steps", stream=None):
        super().__init__()
        self.stream = stream
        self.bar = None

    def _out(self):
        return self.stream or sys.stdout

    def on_epoch_begin(self, epoch, logs=None):
        from .utils.progbar import Progbar
        if self.params.get("mode", "train") == "train" and self.params.get("epochs", 1) > 1:   # (as Keras 3.15)
            print(f"Epoch {epoch + 1}/{self.params.get('epochs', 1)}", file=self._out(), flush=True)
        self._seen = 0
        self.bar = Progbar(self.params.get("steps"), verbose=1 if self.params.get("verbose", 1) == 1 else 2,
                           stream=self._out())

    def _show(self, logs, finalize):
        logs = logs or {}
        self.bar.stateful_metrics.update(logs)   # fit's logs are running means already: shown as given
        self.bar.update(self._seen, list(logs.items()), finalize=finalize)

    def on_train_batch_end(self, batch, logs=None):
        self._seen = batch + 1
        if self.bar is not None:
            self._show(logs, finalize=False)

    def on_epoch_end(self, epoch, logs=None):
        self._finish(logs or {})

    def _finish(self, logs):
        if self.bar is not None:
            self._show(logs, finalize=True)   # the epoch's logs, val_ metrics included
            self.bar = None

    def on_test_begin(self, logs=None):
        if self.params.get("mode") == "test":
            self.on_epoch_begin(0)

    def on_test_batch_end(self, batch, logs=None):
        if self.params.get("mode") == "test":
            self.on_train_batch_end(batch, logs)

    def on_test_end(self, logs=None):
        if self.params.get("mode") == "test":
            self._finish(logs or {})

    def on_predict_begin(self, logs=None):
        self.on_epoch_begin(0)

    def on_predict_batch_end(self, batch, logs=None):
        self.on_train_batch_end(batch, {})

    def on_predict_end(self, logs=None):
        self._finish({})


def _mode_for(monitor, mode, who):
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{who}: mode must be 'auto', 'min' or 'max'. Received: mode={mode!r}")
    if mode == "auto":
        name = monitor.lower()
        maximise = any(k in name for k in ("acc", "auc", "precision", "recall", "f1", "iou"))
        return "max" if maximise and "loss" not in name else "min"
    return mode


class EarlyStopping(Callback):
    """Stop training when ``monitor`` has stopped improving for ``patience`` epochs.

    Args: monitor ('val_loss'), min_delta (smallest change counted as an improvement), patience, verbose,
    mode ('auto' | 'min' | 'max'), baseline, restore_best_weights (put back the best epoch's weights at
    the end), start_from_epoch (epochs to wait before counting)."""

    def __init__(self, monitor="val_loss", min_delta=0, patience=0, verbose=0, mode="auto", baseline=None,
                 restore_best_weights=False, start_from_epoch=0):
        super().__init__()
        self.monitor, self.patience, self.verbose = monitor, patience, verbose
        self.baseline, self.restore_best_weights = baseline, restore_best_weights
        self.start_from_epoch = start_from_epoch
        self.mode = _mode_for(monitor, mode, "EarlyStopping")
        self.min_delta = abs(min_delta) if self.mode == "max" else -abs(min_delta)

    def _better(self, current, reference):
        if reference is None:
            return True
        if self.mode == "max":
            return current - self.min_delta > reference
        return current - self.min_delta < reference

    def on_train_begin(self, logs=None):
        self.wait, self.stopped_epoch = 0, 0
        self.best, self.best_weights, self.best_epoch = None, None, 0

    def on_epoch_end(self, epoch, logs=None):
        current = (logs or {}).get(self.monitor)
        if current is None:
            warnings.warn(f"EarlyStopping: metric '{self.monitor}' is not in the logs "
                          f"(available: {', '.join(logs or {})}).", UserWarning, stacklevel=2)
            return
        if epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:
            self.best_weights, self.best_epoch = self.model.get_weights(), epoch
        self.wait += 1
        if self._better(current, self.best):
            self.best, self.best_epoch = current, epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_weights()
            # an improvement never stops training; it resets the wait only once it also beats the baseline
            if self.baseline is None or self._better(current, self.baseline):
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.stopped_epoch > 0 and self.verbose > 0:
            _say(f"Epoch {self.stopped_epoch + 1}: early stopping")
        # As Keras 3: the best epoch's weights come back at the end of training, stopped early or not.
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose > 0:
                _say(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.set_weights(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model (or only its weights) after each epoch; ``filepath`` may hold ``{epoch}`` and log keys
    (``'ckpt-{epoch:02d}-{val_loss:.2f}.keras'``). With save_best_only, only when ``monitor`` improved.
    Files are written atomically (temporary file, then rename), so a crash never leaves a broken one."""

    def __init__(self, filepath, monitor="val_loss", verbose=0, save_best_only=False, save_weights_only=False,
                 mode="auto", save_freq="epoch", initial_value_threshold=None):
        super().__init__()
        self.filepath, self.monitor, self.verbose = os.fspath(filepath), monitor, verbose
        self.save_best_only, self.save_weights_only = save_best_only, save_weights_only
        self.mode = _mode_for(monitor, mode, "ModelCheckpoint")
        if save_freq != "epoch" and not (isinstance(save_freq, int) and save_freq > 0):
            raise ValueError(f"ModelCheckpoint: save_freq must be 'epoch' or a positive int. Received: {save_freq!r}")
        self.save_freq = save_freq
        self.best = initial_value_threshold
        self._batches = 0
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if isinstance(self.save_freq, int):
            self._batches += 1
            if self._batches % self.save_freq == 0:
                self._save(self._epoch, logs or {}, batch=batch)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq == "epoch":
            self._save(epoch, logs or {})

    def _save(self, epoch, logs, batch=None):
        if not _is_chief():
            return  # data-parallel: only rank 0 writes (and reports) checkpoints
        try:
            path = self.filepath.format(epoch=epoch + 1, batch=batch, **logs)
        except KeyError as e:
            raise KeyError(f"ModelCheckpoint: filepath {self.filepath!r} names {e}, which is not in the logs "
                           f"(available: epoch, batch, {', '.join(logs)}).") from None
        if self.save_best_only:
            current = logs.get(self.monitor)
            if current is None:
                warnings.warn(f"ModelCheckpoint: can save best model only with '{self.monitor}' available, "
                              "skipping.", UserWarning, stacklevel=2)
                return
            if not np.isfinite(current):
                return
            better = self.best is None or (current > self.best if self.mode == "max" else current < self.best)
            if not better:
                if self.verbose > 0:
                    print(f"Epoch {epoch + 1}: {self.monitor} did not improve from {self.best:.5f}")
                return
            if self.verbose > 0:
                prev = "inf" if self.best is None else f"{self.best:.5f}"
                print(f"Epoch {epoch + 1}: {self.monitor} improved from {prev} to {current:.5f}, saving model to {path}")
            self.best = current
        elif self.verbose > 0:
            print(f"Epoch {epoch + 1}: saving model to {path}")
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved for ``patience`` epochs
    (by at least min_delta), then wait ``cooldown`` epochs; never below ``min_lr``."""

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, verbose=0, mode="auto", min_delta=1e-4,
                 cooldown=0, min_lr=0.0, **kwargs):
        super().__init__()
        if factor >= 1.0:
            raise ValueError(f"ReduceLROnPlateau does not support a factor >= 1.0. Received: factor={factor}")
        self.monitor, self.factor, self.patience, self.verbose = monitor, factor, patience, verbose
        self.mode = _mode_for(monitor, mode, "ReduceLROnPlateau")
        self.min_delta, self.cooldown, self.min_lr = min_delta, cooldown, min_lr
        self._reset()

    def _reset(self):
        self.best = -np.inf if self.mode == "max" else np.inf
        self.wait, self.cooldown_counter = 0, 0

    def _better(self, current):
        if self.mode == "max":
            return current > self.best + self.min_delta
        return current < self.best - self.min_delta

    def on_train_begin(self, logs=None):
        self._reset()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        logs["learning_rate"] = float(self.model.optimizer.learning_rate)
        current = logs.get(self.monitor)
        if current is None:
            warnings.warn(f"ReduceLROnPlateau: metric '{self.monitor}' is not in the logs "
                          f"(available: {', '.join(logs)}).", UserWarning, stacklevel=2)
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._better(current):
            self.best, self.wait = current, 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                old = float(self.model.optimizer.learning_rate)
                if old > np.float32(self.min_lr):  # as Keras: a float32 rate at min_lr is not reduced again
                    new = max(old * self.factor, self.min_lr)
                    self.model.optimizer.learning_rate = new
                    if self.verbose > 0:
                        _say(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {new}.")
                    self.cooldown_counter, self.wait = self.cooldown, 0


class LearningRateScheduler(Callback):
    """Set the learning rate at the start of each epoch to ``schedule(epoch, lr)`` (or ``schedule(epoch)``)."""

    def __init__(self, schedule, verbose=0):
        super().__init__()
        self.schedule, self.verbose = schedule, verbose

    def on_epoch_begin(self, epoch, logs=None):
        lr = float(self.model.optimizer.learning_rate)
        try:
            new = self.schedule(epoch, lr)
        except TypeError:  # a one-argument schedule, as Keras 1 allowed
            new = self.schedule(epoch)
        new = float(new)
        if not math.isfinite(new):
            raise ValueError(f"LearningRateScheduler: the schedule returned {new} at epoch {epoch}; "
                             "it must return a finite float.")
        self.model.optimizer.learning_rate = new
        if self.verbose > 0:
            _say(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {new}.")

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = float(self.model.optimizer.learning_rate)


class CSVLogger(Callback):
    """Stream epoch results to a CSV file: an 'epoch' column then the log keys, sorted."""

    def __init__(self, filename, separator=",", append=False):
        super().__init__()
        self.filename, self.sep, self.append = os.fspath(filename), separator, append
        self.keys, self._file, self._writer = None, None, None

    def on_train_begin(self, logs=None):
        if not _is_chief():
            return  # data-parallel: only rank 0 writes the file
        exists = self.append and os.path.exists(self.filename) and os.path.getsize(self.filename) > 0
        self._file = open(self.filename, "a" if self.append else "w", newline="")
        self._header_done = exists
        if exists:
            with open(self.filename, newline="") as f:
                self.keys = next(csv.reader(f, delimiter=self.sep))[1:]

    def on_epoch_end(self, epoch, logs=None):
        if self._file is None:
            return
        logs = logs or {}
        if self.keys is None:
            self.keys = sorted(logs)
        if self._writer is None:
            self._writer = csv.DictWriter(self._file, fieldnames=["epoch"] + self.keys, delimiter=self.sep)
            if not self._header_done:
                self._writer.writeheader()
        row = {"epoch": epoch}
        row.update({k: logs.get(k, "NA") for k in self.keys})
        self._writer.writerow(row)
        self._file.flush()

    def on_train_end(self, logs=None):
        if self._file is not None:
            self._file.close()
        self._file, self._writer, self.keys = None, None, None


class TerminateOnNaN(Callback):
    """Stop training when a batch's loss is NaN or inf (fit already refuses such a batch's update)."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            _say(f"Batch {batch}: Invalid loss, terminating training")
            self.model.stop_training = True


class LambdaCallback(Callback):
    """A callback from functions: on_epoch_begin(epoch, logs), on_epoch_end(epoch, logs),
    on_train_batch_begin/end(batch, logs), on_train_begin(logs), on_train_end(logs), ..."""

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_train_begin=None, on_train_end=None,
                 on_train_batch_begin=None, on_train_batch_end=None, **kwargs):
        super().__init__()
        given = dict(on_epoch_begin=on_epoch_begin, on_epoch_end=on_epoch_end, on_train_begin=on_train_begin,
                     on_train_end=on_train_end, on_train_batch_begin=on_train_batch_begin,
                     on_train_batch_end=on_train_batch_end, **kwargs)
        for hook, fn in given.items():
            if fn is None:
                continue
            if not hasattr(Callback, hook):
                raise ValueError(f"LambdaCallback: unknown hook {hook!r}.")
            setattr(self, hook, fn)


def _is_chief():
    from .distribution import is_chief  # rank 0 of a data-parallel job (always True in a plain process)
    return is_chief()


def _say(*args):
    """print on rank 0 only (every rank of a data-parallel job makes the same decisions)."""
    if _is_chief():
        print(*args)


def _atomic_write(path, write):
    """Write a file through a locked temporary sibling and a rename (lamina.io.atomic_write): readers see the old
    or the new file, and temporary files of killed writers are removed by the next write."""
    from .io import atomic_write
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, write)


class BackupAndRestore(Callback):
    """Resume an interrupted fit exactly where it stopped.

    At the end of every epoch (or every ``save_freq`` batches... only 'epoch' is supported) it writes ONE file,
    ``backup_dir/backup.safetensors``, in one atomic write: the weights, the optimizer state, and (in the
    header's metadata) the epoch, learning rate and lamina's random-generator state, every tensor with its
    checksum (no pickle). A kill at any moment leaves the previous epoch's complete backup or the new one,
    never a mix. When fit starts with a backup present, all of it is restored and training continues with
    the next epoch, giving the same weights as an uninterrupted run. The backup is deleted when fit ends
    normally (delete_checkpoint=True)."""

    FILENAME, META_KEY = "backup.safetensors", "lamina.backup"

    def __init__(self, backup_dir, save_freq="epoch", double_checkpoint=False, delete_checkpoint=True):
        super().__init__()
        if not backup_dir:
            raise ValueError("BackupAndRestore: backup_dir must be a non-empty path.")
        if save_freq != "epoch":
            raise ValueError(f"BackupAndRestore: only save_freq='epoch' is supported. Received: {save_freq!r}")
        self.backup_dir = os.fspath(backup_dir)
        self.save_freq, self.delete_checkpoint = save_freq, delete_checkpoint
        self._path = os.path.join(self.backup_dir, self.FILENAME)
        self._completed = False

    def on_train_begin(self, logs=None):
        from .io import ModelFileError, read_weights_file
        self._completed = False
        if not os.path.exists(self._path):
            return
        arrays, header = read_weights_file(self._path)
        try:
            meta = json.loads(header[self.META_KEY])
            n_w, n_o = int(meta["num_weights"]), int(meta["num_optimizer"])
            weights = [arrays[f"w/{i:05d}"] for i in range(n_w)]
            opt_state = [arrays[f"o/{i:05d}"] for i in range(n_o)]
            epoch, rng_state, lr = int(meta["epoch"]), meta["rng_state"], meta.get("learning_rate")
        except (KeyError, ValueError, TypeError) as e:
            raise ModelFileError(self._path, f"not a complete BackupAndRestore backup ({type(e).__name__}: {e}).") from e
        if n_w != len(self.model.weights) or len(arrays) != n_w + n_o:
            raise ModelFileError(self._path, f"the backup holds {n_w} weights but model '{self.model.name}' has "
                                             f"{len(self.model.weights)}: it belongs to another model.")
        self.model.set_weights(weights)
        opt = self.model.optimizer
        if opt_state:
            if not getattr(opt, "built", True):
                with self.model._compiled_flags():
                    opt.build(self.model.trainable_weights)
            opt.set_state(opt_state)
        if lr is not None:
            opt.learning_rate = lr
        backend.set_rng_state(rng_state)
        self.model._initial_epoch = epoch + 1

    def on_epoch_end(self, epoch, logs=None):
        if not _is_chief():
            return  # data-parallel: every rank holds the same state; rank 0 writes it
        from .io import write_weights_file
        model = self.model
        opt = model.optimizer
        opt_state = opt.get_state() if getattr(opt, "built", True) else []
        arrays = {f"w/{i:05d}": w for i, w in enumerate(model.get_weights())}
        arrays.update({f"o/{i:05d}": np.asarray(backend.to_numpy(s)) for i, s in enumerate(opt_state)})
        # a schedule is recomputed from the restored iteration count; only a plain rate is stored
        scheduled = not isinstance(opt.get_config().get("learning_rate"), (float, int))
        meta = {"epoch": epoch, "num_weights": len(model.weights), "num_optimizer": len(opt_state),
                "learning_rate": None if scheduled else float(opt.learning_rate),
                "rng_state": backend.get_rng_state()}
        os.makedirs(self.backup_dir, exist_ok=True)
        write_weights_file(self._path, arrays, {self.META_KEY: json.dumps(meta)})

    def on_train_end(self, logs=None):
        # Only a fit that ran to its end deletes the backup; an exception never reaches this hook.
        if self.delete_checkpoint and os.path.isdir(self.backup_dir) and not getattr(self.model, "stop_reason", None) \
                and _is_chief():
            shutil.rmtree(self.backup_dir, ignore_errors=True)


__all__ = ["Callback", "CallbackList", "History", "ProgbarLogger", "EarlyStopping", "ModelCheckpoint",
           "ReduceLROnPlateau", "LearningRateScheduler", "CSVLogger", "TerminateOnNaN", "LambdaCallback",
           "BackupAndRestore"]


# ---------------------------------------------------------------- TensorBoard event files
# TensorBoard reads "events.out.tfevents.*" files: TFRecord framing (little-endian uint64 length, masked
# CRC-32C of it, the payload, masked CRC-32C of the payload) around serialized tensorflow.Event protocol
# buffers. Only the few fields needed for scalars are written, encoded here (no TensorFlow, no protobuf
# dependency): Event{1: wall_time double, 2: step int64, 3: file_version string, 5: Summary{1: repeated
# Value{1: tag string, 2: simple_value float}}}.
def _crc32c_table():
    table = np.zeros(256, np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table[i] = c
    return [int(v) for v in table]


_CRC_TABLE = None


def _crc32c(data):
    global _CRC_TABLE
    if _CRC_TABLE is None:
        _CRC_TABLE = _crc32c_table()
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data):
    crc = _crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n):
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field_bytes(num, payload):
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _event(wall_time, step=None, file_version=None, scalars=None):
    import struct
    out = _varint(1 << 3 | 1) + struct.pack("<d", wall_time)
    if step is not None:
        out += _varint(2 << 3 | 0) + _varint(int(step))
    if file_version is not None:
        out += _field_bytes(3, file_version.encode())
    if scalars:
        summary = b"".join(_field_bytes(1, _field_bytes(1, tag.encode()) + _varint(2 << 3 | 5)
                                        + struct.pack("<f", float(value)))
                           for tag, value in scalars.items())
        out += _field_bytes(5, summary)
    return out


class EventFileWriter:
    """Appends scalar summaries to a TensorBoard event file in ``logdir`` (created on first use)."""

    def __init__(self, logdir):
        import socket
        self.logdir = os.fspath(logdir)
        os.makedirs(self.logdir, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.{id(self) % 1000}.v2"
        self.path = os.path.join(self.logdir, name)
        self._f = open(self.path, "ab")
        self._write(_event(time.time(), step=0, file_version="brain.Event:2"))

    def _write(self, payload):
        import struct
        header = struct.pack("<Q", len(payload))
        self._f.write(header + struct.pack("<I", _masked_crc(header)) + payload
                      + struct.pack("<I", _masked_crc(payload)))

    def add_scalars(self, scalars, step):
        values = {k: float(v) for k, v in scalars.items() if _is_number(v)}
        if values:
            self._write(_event(time.time(), step=step, scalars=values))

    def flush(self):
        if not self._f.closed:
            self._f.flush()

    def close(self):
        if not self._f.closed:
            self._f.close()


def _is_number(v):
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return np.ndim(v) == 0


class TensorBoard(Callback):
    """Write the epoch (and optionally batch) losses and metrics to TensorBoard event files, as Keras's
    TensorBoard callback lays them out: ``log_dir/train`` and ``log_dir/validation``, tags ``epoch_loss``,
    ``epoch_<metric>``, ``epoch_learning_rate`` (step = epoch) and, with an integer ``update_freq``,
    ``batch_<name>`` every that many batches (step = global batch). Event files are written by lamina
    itself (TFRecord framing with CRC-32C and hand-encoded Event protos); no TensorFlow or TensorBoard
    install is needed to write them, only to view them (``tensorboard --logdir logs``).

    Args (Keras's): log_dir='logs', histogram_freq=0, write_graph=True, write_images=False,
    write_steps_per_second=False, update_freq='epoch', profile_batch=0, embeddings_freq=0,
    embeddings_metadata=None. Histograms, graphs, images, profiling and embeddings are not written
    (a warning says so when they are requested)."""

    def __init__(self, log_dir="logs", histogram_freq=0, write_graph=True, write_images=False,
                 write_steps_per_second=False, update_freq="epoch", profile_batch=0, embeddings_freq=0,
                 embeddings_metadata=None):
        super().__init__()
        if update_freq != "epoch" and not (isinstance(update_freq, int) and update_freq > 0):
            raise ValueError(f"update_freq must be 'epoch' or a positive int. Received: update_freq={update_freq!r}")
        self.log_dir = os.fspath(log_dir)
        self.histogram_freq, self.write_graph, self.write_images = histogram_freq, write_graph, write_images
        self.write_steps_per_second = write_steps_per_second
        self.update_freq = update_freq
        self.profile_batch, self.embeddings_freq, self.embeddings_metadata = profile_batch, embeddings_freq, \
            embeddings_metadata
        unsupported = [n for n, v in (("histogram_freq", histogram_freq), ("write_images", write_images),
                                      ("profile_batch", profile_batch), ("embeddings_freq", embeddings_freq)) if v]
        if unsupported:
            warnings.warn(f"TensorBoard: {', '.join(unsupported)} are not written by lamina (scalars only).")
        self._writers = {}
        self._global_batch = 0
        self._epoch_start = None
        self._epoch_batches = 0

    def _writer(self, which):
        if which not in self._writers:
            self._writers[which] = EventFileWriter(os.path.join(self.log_dir, which))
        return self._writers[which]

    def on_train_begin(self, logs=None):
        self._global_batch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start, self._epoch_batches = time.time(), 0

    def on_train_batch_end(self, batch, logs=None):
        self._global_batch += 1
        self._epoch_batches += 1
        if self.update_freq != "epoch" and self._global_batch % self.update_freq == 0 and logs:
            self._writer("train").add_scalars({f"batch_{k}": v for k, v in logs.items()}, self._global_batch)

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        train = {f"epoch_{k}": v for k, v in logs.items() if not k.startswith("val_")}
        opt = getattr(self.model, "optimizer", None)
        if "epoch_learning_rate" not in train and opt is not None:
            try:
                train["epoch_learning_rate"] = float(opt.learning_rate)
            except (TypeError, ValueError, AttributeError):  # MultiOptimizer has no single learning rate
                pass
        if self.write_steps_per_second and self._epoch_start is not None:
            elapsed = time.time() - self._epoch_start
            train["epoch_steps_per_second"] = self._epoch_batches / elapsed if elapsed > 0 else 0.0
        self._writer("train").add_scalars(train, epoch)
        val = {f"epoch_{k[4:]}": v for k, v in logs.items() if k.startswith("val_")}
        if val:
            self._writer("validation").add_scalars(val, epoch)
        for w in self._writers.values():
            w.flush()

    def on_train_end(self, logs=None):
        for w in self._writers.values():
            w.close()
        self._writers = {}


class SwapEMAWeights(Callback):
    """Evaluate and predict with the optimizer's exponential moving average of the weights
    (``use_ema=True``): the averages are swapped into the model for the test / predict pass and swapped
    back after. With ``swap_on_epoch=True`` they are also swapped in at the end of each epoch (so that
    later callbacks, such as ModelCheckpoint, see them) and out at the start of the next."""

    def __init__(self, swap_on_epoch=False):
        super().__init__()
        self.swap_on_epoch = swap_on_epoch
        self._ema_in_model = False

    def _check(self):
        opt = getattr(self.model, "optimizer", None)
        if opt is None or not getattr(opt, "use_ema", False):
            raise ValueError("SwapEMAWeights must be used when `use_ema=True` is set on the optimizer. "
                             f"Received: use_ema={getattr(opt, 'use_ema', None)}")
        return opt

    def _swap(self):
        opt = self._check()
        if not opt.built:
            return
        for v, a in zip(opt._trainable_variables, opt._slots["average"]):
            tmp = v.data.copy()
            v.data[...] = a.data
            a.data[...] = tmp
            for t in (v, a):
                if hasattr(t, "_bump_version"):
                    t._bump_version()
        self._ema_in_model = not self._ema_in_model

    def on_train_begin(self, logs=None):
        self._check()

    def on_epoch_begin(self, epoch, logs=None):
        if self.swap_on_epoch and self._ema_in_model:
            self._swap()

    def on_epoch_end(self, epoch, logs=None):
        if self.swap_on_epoch and not self._ema_in_model:
            self._swap()

    def on_test_begin(self, logs=None):
        if not self._ema_in_model:
            self._swap()

    def on_test_end(self, logs=None):
        if self._ema_in_model:
            self._swap()

    def on_predict_begin(self, logs=None):
        self.on_test_begin(logs)

    def on_predict_end(self, logs=None):
        self.on_test_end(logs)


class RemoteMonitor(Callback):
    """POST each epoch's logs to a server: ``root + path`` receives ``{"epoch": epoch, **logs}`` as a JSON
    body (send_as_json=True) or as the form field ``field`` holding that JSON (Keras's default). Uses the
    standard library only; a failed request warns and training goes on.

    Args (Keras's): root='http://localhost:9000', path='/publish/epoch/end/', field='data', headers=None,
    send_as_json=False."""

    def __init__(self, root="http://localhost:9000", path="/publish/epoch/end/", field="data", headers=None,
                 send_as_json=False):
        super().__init__()
        self.root, self.path, self.field = root, path, field
        self.headers, self.send_as_json = headers, send_as_json

    def on_epoch_end(self, epoch, logs=None):
        import urllib.error
        import urllib.parse
        import urllib.request
        send = {"epoch": epoch}
        for k, v in (logs or {}).items():
            send[k] = float(v) if _is_number(v) else v
        headers = dict(self.headers or {})
        if self.send_as_json:
            body = json.dumps(send).encode()
            headers.setdefault("Content-Type", "application/json")
        else:
            body = urllib.parse.urlencode({self.field: json.dumps(send)}).encode()
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        request = urllib.request.Request(self.root + self.path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
        except (urllib.error.URLError, OSError, ValueError) as e:
            warnings.warn(f"Could not reach RemoteMonitor root server at {self.root} ({e}).")


__all__ += ["TensorBoard", "SwapEMAWeights", "EventFileWriter", "RemoteMonitor"]
