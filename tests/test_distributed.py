"""Data-parallel training over MPI (lamina.distribution): a 2-rank run under ``mpirun -n 2`` must give the
same weights, History, evaluate results and predictions as one process with the same global batch.

This file is also the program the ranks run: ``python tests/test_distributed.py OUT_DIR MODE``. The
pytest side launches it with mpirun (from the Open MPI wheel, or one on PATH) and runs the same cases in
its own process without a distribution, then compares. Skipped only when no mpirun can be found.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import lamina  # noqa: E402
from lamina import layers  # noqa: E402

CASES = ("mlp", "cnn", "lstm", "transformer")
BUCKET_CASES = ("mlp", "lstm", "cnn_syncbn")
# (name, bucket_mb, overlap): buckets of 105 bytes (several per step) overlapped or blocking; one buffer
BUCKET_SETTINGS = (("overlap", 0.0001, True), ("blocking", 0.0001, False), ("fused", None, True))


# ----------------------------------------------------------------------------- the cases (both sides)
class _PositiveCount(lamina.metrics.Metric):
    """A user's metric written as Keras's guides write one: its state in an add_variable variable, which
    the ranks' updates must add up in (the mlp case's History and evaluate compare it)."""

    def __init__(self, name="positive_count", **kwargs):
        super().__init__(name=name, **kwargs)
        self.count = self.add_variable((), "zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.count.assign_add(lamina.ops.sum(lamina.ops.cast(y_pred[:, 0] > 0.3, "float32")))

    def result(self):
        return self.count


def _case(name):
    """(model, x, y, sample_weight, fit kwargs) for a case; the same on every rank and in the reference."""
    lamina.backend.clear_session(free_memory=False)   # the same layer names in every process
    lamina.utils.set_random_seed(7)
    rng = np.random.default_rng(1)
    if name == "mlp":
        x = rng.normal(size=(45, 6)).astype("float32")
        y = rng.integers(0, 3, 45)
        sw = rng.uniform(0.2, 2.0, 45).astype("float32")   # sample weights make the gradients uneven
        model = lamina.Sequential([lamina.Input((6,)), layers.Dense(8, activation="relu"),
                                   layers.Dense(3, activation="softmax")])
        model.compile(optimizer=lamina.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy", _PositiveCount()], weighted_metrics=["accuracy"])
        return model, x, y, sw, dict(batch_size=10, epochs=3)   # 45 = 4 x 10 + a ragged 5
    if name == "cnn":
        x = rng.normal(size=(21, 6, 6, 1)).astype("float32")
        y = rng.integers(0, 2, 21)
        model = lamina.Sequential([lamina.Input((6, 6, 1)), layers.Conv2D(3, 3, activation="relu"),
                                   layers.Dropout(0.3), layers.Flatten(), layers.Dense(2, activation="softmax")])
        model.compile(optimizer=lamina.optimizers.SGD(0.1, momentum=0.9), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        return model, x, y, None, dict(batch_size=8, epochs=2)  # 21 = 8 + 8 + 5
    if name in ("cnn_syncbn", "cnn_localbn"):   # BatchNormalization after a convolution and after a Dense
        sync = name == "cnn_syncbn"
        x = (rng.normal(size=(21, 6, 6, 2)) * 2.0 + 1.5).astype("float32")
        y = rng.integers(0, 3, 21)
        model = lamina.Sequential([lamina.Input((6, 6, 2)), layers.Conv2D(4, 3),
                                   layers.BatchNormalization(synchronized=sync, momentum=0.8),
                                   layers.Activation("relu"), layers.Flatten(), layers.Dense(5),
                                   layers.BatchNormalization(synchronized=sync, momentum=0.8),
                                   layers.Activation("relu"), layers.Dense(3, activation="softmax")])
        model.compile(optimizer=lamina.optimizers.SGD(0.1, momentum=0.9), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        return model, x, y, None, dict(batch_size=8, epochs=2)  # 21 = 8 + 8 + 5
    if name == "lstm":
        x = rng.normal(size=(13, 5, 3)).astype("float32")
        y = rng.normal(size=(13, 2)).astype("float32")
        model = lamina.Sequential([lamina.Input((5, 3)), layers.LSTM(4, dropout=0.2, recurrent_dropout=0.2),
                                   layers.Dense(2)])
        model.compile(optimizer=lamina.optimizers.RMSprop(0.01), loss="mse", metrics=["mae"])
        return model, x, y, None, dict(batch_size=4, epochs=2)  # 13 = 3 x 4 + 1: one rank gets nothing
    if name == "transformer":
        x = rng.normal(size=(12, 4, 8)).astype("float32")
        y = rng.integers(0, 2, 12)
        inp = lamina.Input((4, 8))
        h = layers.MultiHeadAttention(num_heads=2, key_dim=4, dropout=0.2)(inp, inp)
        h = layers.LayerNormalization()(layers.Add()([inp, layers.Dropout(0.1)(h)]))
        f = layers.Dense(8)(layers.Dense(16, activation="relu")(h))
        h = layers.LayerNormalization()(layers.Add()([h, f]))
        out = layers.Dense(2, activation="softmax")(layers.GlobalAveragePooling1D()(h))
        model = lamina.Model(inp, out)
        model.compile(optimizer=lamina.optimizers.AdamW(0.005), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"])
        return model, x, y, None, dict(batch_size=5, epochs=2)  # 12 = 5 + 5 + 2
    raise ValueError(name)


def run_case(name):
    """Train, evaluate and predict one case; returns the arrays to compare."""
    model, x, y, sw, kw = _case(name)
    history = model.fit(x, y, sample_weight=sw, validation_data=(x[:7], y[:7]), verbose=0, **kw).history
    ev = model.evaluate(x, y, batch_size=3, verbose=0, return_dict=True)
    pred = model.predict(x, batch_size=4, verbose=0)
    out = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    out.update({f"h_{k}": np.asarray(v, np.float64) for k, v in history.items()})
    out.update({f"e_{k}": np.asarray(v, np.float64) for k, v in ev.items()})
    out["predict"] = pred
    out["names"] = np.array([w.path for w in model.weights])
    return out


def _zero_gradient(path):
    """The key projection's bias of attention: softmax over the keys is unchanged by adding the same
    number to every score, so its gradient is exactly zero and its value is accumulated rounding noise
    (about 1e-5 here, amplified by Adam's normalisation), which differs with the summation order."""
    return "key" in path and path.endswith("bias")


# ----------------------------------------------------------------------------- the rank side
# The modes that end well run one after another in one job: starting mpirun and the ranks took ~1.9 s of
# wall (~1.1 s of CPU) a job, and they were five jobs. Each mode sets its own state (seeds, layer names, the
# distribution) and puts back what it patches; only callbacks prints (its test counts its lines); fake-cupy,
# which moves the ranks to the device, comes last.
TOGETHER = ("cases", "syncbn", "buckets", "callbacks", "fake-cupy")


def _worker(out_dir, mode):
    from lamina import distribution
    distribution.initialize()
    for part in (TOGETHER if mode == "together" else (mode,)):
        distribution.set_distribution(distribution.DataParallel())
        _run_mode(out_dir, part, distribution.process_index())


def _run_mode(out_dir, mode, rank):
    from lamina import distribution
    if mode == "cases":
        for name in CASES:
            np.savez(os.path.join(out_dir, f"{name}_rank{rank}.npz"), **run_case(name))
    elif mode == "syncbn":
        for name in ("cnn_syncbn", "cnn_localbn"):
            np.savez(os.path.join(out_dir, f"{name}_rank{rank}.npz"), **run_case(name))
    elif mode == "buckets":   # tiny buckets (105 bytes): several per step, overlapped or not
        from lamina.distribution import _runtime
        launches, real = [], _runtime._BucketedReduce._launch

        def spy(self, k):   # records each bucket's all-reduce: (non-blocking?, bucket index)
            launches.append((self.nonblocking, k))
            return real(self, k)
        _runtime._BucketedReduce._launch = spy
        try:
            for setting, mb, overlap in BUCKET_SETTINGS:
                distribution.set_distribution(distribution.DataParallel(bucket_mb=mb, overlap=overlap))
                for name in BUCKET_CASES:
                    del launches[:]
                    out = run_case(name)
                    out["launches"] = np.array(launches, np.int64).reshape(-1, 2)
                    np.savez(os.path.join(out_dir, f"{name}_{setting}_rank{rank}.npz"), **out)
        finally:
            _runtime._BucketedReduce._launch = real
    elif mode == "fake-cupy":   # the 'cuda' device on tests/fake_cupy.py: gradients staged through the host
        sys.path.insert(0, HERE)
        import fake_cupy
        sys.modules["cupy"] = fake_cupy.make_module()
        lamina.backend.set_device("cuda")
        from lamina.distribution import _runtime
        real, seen = _runtime.gradients, []

        def spy(loss, variables):   # records that the weights and their summed gradients are device arrays
            out = real(loss, variables)
            seen.append(all(lamina.backend.is_cupy_array(g.data if isinstance(g, lamina.Tensor) else g)
                            for g in list(variables) + out))
            return out
        _runtime.gradients = spy
        result = run_case("cnn")
        np.savez(os.path.join(out_dir, f"cupy_rank{rank}.npz"), on_device=np.array(bool(seen) and all(seen)),
                 **result)
    elif mode == "callbacks":
        from lamina.registry import MODEL_FILES   # where Model.save finds lamina.models.saving.save_model
        real = MODEL_FILES["save_model"]

        def counting(*args, **kwargs):  # records which rank wrote a model file
            with open(os.path.join(out_dir, f"saves_rank{rank}.txt"), "a") as f:
                f.write("save\n")
            return real(*args, **kwargs)
        MODEL_FILES["save_model"] = counting
        model, x, y, sw, kw = _case("mlp")
        cbs = [lamina.callbacks.CSVLogger(os.path.join(out_dir, "log.csv"), append=True),
               lamina.callbacks.ModelCheckpoint(os.path.join(out_dir, "ckpt.keras")),
               lamina.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=10.0, verbose=1)]
        try:
            history = model.fit(x, y, batch_size=10, epochs=4, verbose=1, callbacks=cbs)
        finally:
            MODEL_FILES["save_model"] = real
        with open(os.path.join(out_dir, f"epochs_rank{rank}.json"), "w") as f:
            json.dump(len(history.history["loss"]), f)
    elif mode == "backup":   # killed after epoch 2 of 4, once BackupAndRestore has written its backup
        model, x, y, sw, kw = _case("mlp")

        def kill(epoch, logs):
            if epoch == 1 and rank == 0:
                raise KeyboardInterrupt("killed after epoch 2")
        model.fit(x, y, sample_weight=sw, batch_size=10, epochs=4, verbose=0,
                  callbacks=[lamina.callbacks.BackupAndRestore(os.path.join(out_dir, "backup")),
                             lamina.callbacks.LambdaCallback(on_epoch_end=kill)])
    elif mode == "fail":
        model, x, y, sw, kw = _case("mlp")

        def boom(epoch, logs):
            if rank == 1 and epoch == 1:
                raise RuntimeError("boom on purpose in rank 1")
        model.fit(x, y, batch_size=10, epochs=50, verbose=0,
                  callbacks=[lamina.callbacks.LambdaCallback(on_epoch_end=boom)])


# ----------------------------------------------------------------------------- the pytest side
def _mpirun():
    """mpirun from the Open MPI wheel (beside this Python), else one on PATH, else None."""
    from lamina.distribution import launcher
    return launcher.find_mpirun()


def _launch(out_dir, mode, n=2, timeout=120):
    from lamina.distribution import launcher
    cmd = launcher.mpirun_command(n) + [sys.executable, os.path.abspath(__file__), str(out_dir), mode]
    env = launcher.child_environment()
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _require_mpi():
    import pytest
    if _mpirun() is None:
        pytest.skip("no mpirun found (pip install 'lamina[mpi]' brings Open MPI's)")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.skip("mpi4py is not installed (pip install 'lamina[mpi]')")


@pytest.fixture(scope="module")
def together(tmp_path_factory):
    """(folder, result) of one 2-rank job running the TOGETHER modes, each writing its own files."""
    _require_mpi()
    out = tmp_path_factory.mktemp("together")
    return out, _launch(out, "together", timeout=480)


def test_two_ranks_equal_one_process(together):
    tmp_path, r = together
    assert r.returncode == 0, r.stdout + r.stderr
    for name in CASES:
        ref = run_case(name)
        ranks = [np.load(tmp_path / f"{name}_rank{k}.npz") for k in range(2)]
        for got in ranks:
            assert sorted(got.files) == sorted(ref), name
            np.testing.assert_array_equal(got["names"], ref["names"])
            for key in ref:
                if key == "names":
                    continue
                if key.startswith("w") and _zero_gradient(str(ref["names"][int(key[1:])])):
                    assert np.abs(got[key]).max() < 1e-4 and np.abs(ref[key]).max() < 1e-4
                    continue
                np.testing.assert_allclose(got[key], ref[key], rtol=2e-4, atol=2e-5, err_msg=f"{name}: {key}")
        for key in ref:  # the ranks agree with each other exactly: every rank applied the same update
            if key.startswith("w"):
                np.testing.assert_array_equal(ranks[0][key], ranks[1][key], err_msg=f"{name}: {key}")


def test_synchronized_batch_norm_on_two_ranks_equals_one_process(together):
    """BatchNormalization(synchronized=True) under mpirun -n 2 (a CNN, a ragged last batch of 5 split 2/3):
    weights, moving statistics, History, evaluate and predict of one process with the same global batch.
    The same model with per-rank statistics (synchronized=False) does not match: its moving statistics
    come from half batches, which shows the comparison can tell."""
    tmp_path, r = together
    assert r.returncode == 0, r.stdout + r.stderr
    ref = run_case("cnn_syncbn")
    ranks = [np.load(tmp_path / f"cnn_syncbn_rank{k}.npz") for k in range(2)]
    moving = [i for i, n in enumerate(ref["names"]) if "moving" in str(n)]
    assert len(moving) == 4
    for got in ranks:
        assert sorted(got.files) == sorted(ref)
        for key in ref:
            if key != "names":
                np.testing.assert_allclose(got[key], ref[key], rtol=2e-4, atol=2e-5, err_msg=key)
    for key in ref:
        if key.startswith("w"):
            np.testing.assert_array_equal(ranks[0][key], ranks[1][key], err_msg=key)
    local = np.load(tmp_path / "cnn_localbn_rank0.npz")
    assert not all(np.allclose(local[f"w{i}"], ref[f"w{i}"], rtol=2e-4, atol=2e-5) for i in moving)


def test_gradient_buckets_on_two_ranks_equal_one_process(together):
    """DataParallel(bucket_mb=0.0001): the gradients go in buckets of at most 105 bytes, so every step
    all-reduces several; overlapped with the backward pass (non-blocking, started as buckets complete;
    with synchronized batch norm's own collectives in between) and not, and with one fused buffer
    (bucket_mb=None), the result is the single-process one (MLP with sample weights, LSTM with an empty
    slice, CNN with synchronized batch norm). The default (25 MB, overlapped) runs in the other tests."""
    tmp_path, r = together
    assert r.returncode == 0, r.stdout + r.stderr
    for name in BUCKET_CASES:
        ref = run_case(name)
        for setting, mb, overlap in BUCKET_SETTINGS:
            for k in range(2):
                got = np.load(tmp_path / f"{name}_{setting}_rank{k}.npz")
                launches = got["launches"]
                assert len(launches) and (launches[:, 0] == (setting == "overlap")).all()
                per_step = launches[:, 1].max() + 1
                assert per_step >= 3 if mb else per_step == 1, (name, setting, per_step)
                for key in ref:
                    if key != "names":
                        np.testing.assert_allclose(got[key], ref[key], rtol=2e-4, atol=2e-5,
                                                   err_msg=f"{name} {setting}: {key}")


def test_grad_announces_each_gradient_once_it_is_complete():
    """lamina.grad(on_ready=...): each input's gradient is announced exactly once, equal to the one
    returned, and a leaf's as soon as the last op using it has run, before the sweep reaches the ops
    below it (what lets a bucket's all-reduce start during the backward pass)."""
    from lamina.tensor import Op, Tensor, grad

    log = []

    class Mark(Op):   # identity that logs when the sweep passes it
        def forward(self, x):
            return x.copy()

        def backward(self, gy):
            log.append(("backward", self.tag))
            return gy

    rng = np.random.default_rng(0)
    x = Tensor(rng.normal(size=(4, 3)))
    w1, w2, unused = (Tensor(rng.normal(size=s), requires_grad=True) for s in ((3, 5), (5, 2), (2,)))
    h = Mark.apply(lamina.ops.tanh(x @ w1), tag="h")
    y = (h @ w2) * 0.5 + (w1 * w1).sum() * 0.1   # w1 used twice: complete only after both uses
    loss = (y * y).sum()
    ready = {}

    def on_ready(i, g):
        assert i not in ready
        ready[i] = g
        log.append(("ready", i))
    grads = grad(loss, [w1, w2, unused, h], on_ready=on_ready)
    ref = grad(((Mark.apply(lamina.ops.tanh(x @ w1), tag="r") @ w2) * 0.5 + (w1 * w1).sum() * 0.1).__pow__(2).sum(),
               [w1, w2, unused])
    assert sorted(ready) == [0, 1, 2, 3]
    for i in range(3):
        assert ready[i] is grads[i] or (ready[i] is None and grads[i] is None)
    assert grads[2] is None
    np.testing.assert_allclose(grads[0], ref[0], rtol=1e-12)
    np.testing.assert_allclose(grads[1], ref[1], rtol=1e-12)
    order = [e for e in log if e != ("backward", "r")]
    # w2 is complete before the sweep goes below h; w1 only after it
    assert order.index(("ready", 1)) < order.index(("backward", "h")) < order.index(("ready", 0))


def test_synchronized_batch_norm_without_a_distribution_is_plain_batch_norm(tmp_path):
    """In one process (no distribution, or a one-rank DataParallel) synchronized=True computes exactly what
    synchronized=False does; the option round-trips through get_config, model.save/load_model, and a
    Keras 3 .keras file whose config has it."""
    from lamina import distribution
    plain = run_case("cnn_localbn")
    for d in (None, distribution.DataParallel()):
        distribution.set_distribution(d)
        try:
            sync = run_case("cnn_syncbn")
        finally:
            distribution.set_distribution(None)
        for key in plain:
            np.testing.assert_array_equal(sync[key], plain[key], err_msg=key)
    layer = layers.BatchNormalization(synchronized=True)
    assert layer.get_config()["synchronized"] is True
    assert layers.BatchNormalization.from_config(layer.get_config()).synchronized is True
    model, *_ = _case("cnn_syncbn")
    model.save(tmp_path / "m.keras")
    loaded = lamina.models.load_model(tmp_path / "m.keras")
    assert [getattr(la, "synchronized", None) for la in loaded.layers if "batch" in la.name] == [True, True]
    import pytest
    os.environ.setdefault("KERAS_BACKEND", "torch")   # as tests/test_keras_files.py
    keras = pytest.importorskip("keras")
    import zipfile
    km = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization()])
    km.save(tmp_path / "k.keras")   # Keras 3 refuses synchronized=True off TensorFlow: set it in the file
    with zipfile.ZipFile(tmp_path / "k.keras") as z:
        files = {n: z.read(n) for n in z.namelist()}
    cfg = json.loads(files["config.json"])
    bn = [la for la in cfg["config"]["layers"] if la["class_name"] == "BatchNormalization"][0]
    assert bn["config"]["synchronized"] is False
    bn["config"]["synchronized"] = True
    files["config.json"] = json.dumps(cfg).encode()
    with zipfile.ZipFile(tmp_path / "k_sync.keras", "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    loaded = lamina.models.load_model(tmp_path / "k_sync.keras")
    assert loaded.layers[-1].synchronized is True
    x = np.random.default_rng(0).normal(size=(5, 4)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), km.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_two_ranks_on_the_device_stand_in(together):
    """With device arrays (tests/fake_cupy.py, the CPU stand-in that refuses implicit host conversions as
    CuPy does), the broadcast, the gradient all-reduce and the gathers go through the host and give the
    CPU single-process result."""
    tmp_path, r = together
    assert r.returncode == 0, r.stdout + r.stderr
    ref = run_case("cnn")
    for k in range(2):
        got = np.load(tmp_path / f"cupy_rank{k}.npz")
        assert bool(got["on_device"])
        for key in ref:
            if key != "names":
                np.testing.assert_allclose(got[key], ref[key], rtol=2e-4, atol=2e-5, err_msg=key)


def test_callbacks_write_once_and_decide_alike(together):
    tmp_path, r = together
    assert r.returncode == 0, r.stdout + r.stderr
    # EarlyStopping stopped every rank after the same epoch (min_delta=10 never counts as improvement)
    epochs = [json.load(open(tmp_path / f"epochs_rank{k}.json")) for k in range(2)]
    assert epochs == [2, 2]
    rows = open(tmp_path / "log.csv").read().splitlines()
    assert len(rows) == 1 + 2 and rows[0].startswith("epoch"), rows   # one header, one row per epoch
    assert open(tmp_path / "saves_rank0.txt").read().split() == ["save", "save"]
    assert not (tmp_path / "saves_rank1.txt").exists()
    assert (tmp_path / "ckpt.keras").exists()
    assert r.stdout.count("Epoch 1/4") == 1   # only rank 0 prints progress
    assert r.stdout.count("early stopping") == 1   # and the callbacks' messages


def test_resume_after_a_kill_with_another_number_of_ranks(tmp_path):
    """A 2-rank fit killed after epoch 2 resumes in one process and ends with the weights of an
    uninterrupted single-process fit (the backup holds the global state)."""
    _require_mpi()
    r = _launch(tmp_path, "backup")
    assert r.returncode != 0 and "rank 0 of 2 failed" in r.stdout + r.stderr
    assert (tmp_path / "backup" / "backup.safetensors").exists()
    model, x, y, sw, kw = _case("mlp")
    history = model.fit(x, y, sample_weight=sw, batch_size=10, epochs=4, verbose=0,
                        callbacks=[lamina.callbacks.BackupAndRestore(str(tmp_path / "backup"))])
    assert len(history.history["loss"]) == 2   # epochs 3 and 4 only
    ref, x, y, sw, kw = _case("mlp")
    ref.fit(x, y, sample_weight=sw, batch_size=10, epochs=4, verbose=0)
    for a, b in zip(model.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


def test_a_failing_rank_stops_the_job(tmp_path):
    _require_mpi()
    r = _launch(tmp_path, "fail", timeout=90)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "boom on purpose in rank 1" in out
    assert "rank 1 of 2 failed" in out


def test_cli_workers(tmp_path):
    _require_mpi()
    from lamina.distribution import launcher
    env = launcher.child_environment()
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([sys.executable, "-m", "lamina", "train", "mlp", "--epochs", "1", "--workers", "2",
                        "--no-plot", "--out", str(tmp_path / "run")], env=env, capture_output=True, text=True,
                       timeout=120, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("Test accuracy") == 1          # rank 0 reports
    assert "on 2 ranks" in r.stdout
    run = json.load(open(tmp_path / "run" / "run.json"))
    assert run["workers"] == 2 and run["test_accuracy"] > 0.5


def test_cli_under_your_own_mpirun(tmp_path):
    """mpirun -n 2 lamina train NAME: the ranks see the launcher, join and train data-parallel."""
    _require_mpi()
    from lamina.distribution import launcher
    env = launcher.child_environment()
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    cmd = launcher.mpirun_command(2) + [sys.executable, "-m", "lamina", "train", "mlp", "--epochs", "1",
                                        "--quiet", "--no-plot", "--out", str(tmp_path / "run")]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("data-parallel on 2 ranks") == 1 and r.stdout.count("Saved") >= 1
    assert json.load(open(tmp_path / "run" / "run.json"))["workers"] == 2


def test_single_process_api():
    from lamina import distribution
    distribution.initialize()   # a plain process: nothing to join
    assert distribution.process_count() == 1 and distribution.process_index() == 0
    assert distribution.list_devices() == ["cpu:0"]
    d = distribution.DataParallel()
    assert d.devices == ["cpu:0"] and distribution.distribution() is None
    distribution.set_distribution(d)
    try:
        assert distribution.distribution() is d
        ref_out = run_case("mlp")  # a one-rank world: unchanged behaviour
    finally:
        distribution.set_distribution(None)
    plain = run_case("mlp")
    for key in plain:
        np.testing.assert_array_equal(ref_out[key], plain[key])
    import pytest
    with pytest.raises(ValueError):
        distribution.DataParallel(devices=["cpu:0", "cpu:1"])


def test_missing_mpi4py_message(monkeypatch):
    """Under a launcher without mpi4py, initialize() fails with one line saying what to install."""
    import builtins

    import pytest
    from lamina.distribution import _runtime
    real_import = builtins.__import__

    def no_mpi4py(name, *args, **kwargs):
        if name.startswith("mpi4py"):
            raise ImportError("No module named 'mpi4py'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_mpi4py)
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setattr(_runtime, "_COMM", None)
    with pytest.raises(ImportError) as e:
        _runtime.initialize()
    assert str(e.value) == "lamina.distribution needs mpi4py and Open MPI: pip install 'lamina[mpi]'"


def test_cli_workers_without_mpi_says_what_to_install(monkeypatch, capsys):
    from lamina import cli
    from lamina.distribution import launcher
    monkeypatch.setattr(launcher, "find_mpirun", lambda: None)
    for var in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS"):
        monkeypatch.delenv(var, raising=False)
    assert cli.main(["train", "mlp", "--workers", "2"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == "lamina: error: lamina.distribution needs mpi4py and Open MPI: pip install 'lamina[mpi]'"


def test_child_environment_opts_in_only_for_children(monkeypatch):
    from lamina.distribution import launcher
    monkeypatch.delenv("OMPI_ALLOW_RUN_AS_ROOT", raising=False)
    env = launcher.child_environment()
    if os.geteuid() == 0:
        assert env["OMPI_ALLOW_RUN_AS_ROOT"] == "1" and env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] == "1"
    else:
        assert "OMPI_ALLOW_RUN_AS_ROOT" not in env
    assert "OMPI_ALLOW_RUN_AS_ROOT" not in os.environ   # lamina's own process is left alone


# ----------------------------------------------------------------------------- synchronized batch norm (op)
class _ThreadRanks:
    """N threads standing in for N ranks: allgather / allreduce through a barrier (no MPI)."""

    def __init__(self, n):
        import threading
        self.barrier, self.slots = threading.Barrier(n, timeout=30), [None] * n

    def member(self, rank, share):
        group = self

        class Member:
            def allgather(self, vec):
                group.slots[rank] = np.array(vec, np.float64)
                group.barrier.wait()
                out = np.stack(group.slots)
                group.barrier.wait()
                return out

            def allreduce(self, vec):
                return self.allgather(vec).sum(axis=0)
        m = Member()
        m.share = share
        return m


def _sync_bn_case(x, mask, n_ranks, cm, cv, xp=np):
    """The single-process batch norm of the whole batch, and the same split over n_ranks threads with
    synchronized statistics: each thread's loss is the mean over its rows of sum(y * c + y^2 / 2) plus
    terms of the global mean and variance; returns both results as (y, mean, var, dx, dgamma, dbeta)."""
    import threading
    from lamina import ops
    from lamina.tensor import Tensor, grad
    rng = np.random.default_rng(5)
    B, C = x.shape[0], x.shape[-1]
    c = rng.normal(size=x.shape).astype(x.dtype)
    g0 = rng.uniform(0.5, 1.5, C).astype(x.dtype)
    b0 = rng.normal(size=C).astype(x.dtype)

    def run(xs, cs, ms, reducer, n_rows):   # on the device of xp (fake_cupy's stand-in or NumPy)
        dev = xp.asarray
        xt, gt, bt = (Tensor(dev(a), requires_grad=True) for a in (xs, g0, b0))
        y, mean, var = ops.batch_norm_training(xt, gt, bt, 1e-3, -1, mask=None if ms is None else dev(ms),
                                               reducer=reducer)
        loss = (y * Tensor(dev(cs)) + y * y * 0.5).sum() * (1.0 / n_rows) + (mean * Tensor(dev(cm))).sum() \
            + (var * Tensor(dev(cv))).sum()
        host = lamina.backend.to_numpy
        value = float(host(loss.data))
        return [host(y.data), host(mean.data), host(var.data)] + [host(g) for g in grad(loss, [xt, gt, bt])] + [value]

    ref = run(x, c, mask, None, B)
    results = [None] * n_ranks

    def rank(r):
        start, stop = B * r // n_ranks, B * (r + 1) // n_ranks
        sl = slice(start, stop) if stop > start else slice(0, 1)   # an empty slice: a dummy row, share 0
        results[r] = run(x[sl], c[sl], None if mask is None else mask[sl], group.member(r, (stop - start) / B),
                         max(stop - start, 1))
        results[r].append(stop > start)
    group = _ThreadRanks(n_ranks)
    threads = [threading.Thread(target=rank, args=(r,)) for r in range(n_ranks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    B_ranks = [(B * (r + 1) // n_ranks - B * r // n_ranks) / B for r in range(n_ranks)]
    kept = [res for res in results if res[-1]]
    got = [np.concatenate([res[0] for res in kept]), results[0][1], results[0][2],
           # dL/dx = share * (what each rank returns); dgamma, dbeta: the gradient all-reduce's weighted sum
           np.concatenate([res[3] * s for res, s in zip(results, B_ranks) if res[-1]]),
           sum(res[4] * s for res, s in zip(results, B_ranks)), sum(res[5] * s for res, s in zip(results, B_ranks)),
           sum(res[6] * s for res, s in zip(results, B_ranks))]   # the global loss
    for res in results[1:]:   # every rank has the same global statistics
        np.testing.assert_array_equal(res[1], results[0][1])
        np.testing.assert_array_equal(res[2], results[0][2])
    return ref, got


def test_synchronized_batch_norm_op_equals_the_whole_batch():
    """The op's forward and backward, split over 2, 3 and 4 ranks (4 ranks on 3 rows: one empty slice),
    give the whole batch's outputs, statistics and gradients: float64 to 1e-10, and float32 data far
    from zero (mean 300, std 0.5) to float32 rounding (the per-rank mean/M2 combination does not cancel)."""
    rng = np.random.default_rng(0)
    cm, cv = np.array([0.3, -0.2, 0.1], np.float64), np.array([0.5, 0.4, -0.3], np.float64)
    for shape, n in (((6, 4, 3), 2), ((7, 3), 3), ((3, 2, 3), 4)):
        x = rng.normal(size=shape)
        ref, got = _sync_bn_case(x, None, n, cm, cv)
        for name, a, b in zip(("y", "mean", "var", "dx", "dgamma", "dbeta"), got, ref):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"{shape} on {n}: {name}")
    x = (300.0 + 0.5 * rng.normal(size=(8, 5, 3))).astype(np.float32)
    ref, got = _sync_bn_case(x, None, 2, cm.astype(np.float32), cv.astype(np.float32))
    for name, a, b in zip(("y", "mean", "var", "dx", "dgamma", "dbeta"), got, ref):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4, err_msg=f"float32: {name}")


@pytest.mark.parametrize("device_xp", ["fake-cupy"], indirect=True)
def test_synchronized_batch_norm_op_on_the_device_stand_in(device_xp):
    """The same with device arrays (tests/fake_cupy.py, which refuses implicit host conversions as CuPy
    does): the per-channel statistics and sums go through the host, the activations and gradients stay on
    the device, and the split batch still equals the whole batch."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(5, 2, 3))
    mask = (rng.uniform(size=(5, 2)) > 0.3).astype(np.float64)
    cm, cv = np.array([0.3, -0.2, 0.1]), np.array([0.5, 0.4, -0.3])
    for m in (None, mask):
        ref, got = _sync_bn_case(x, m, 2, cm, cv, xp=device_xp)
        for name, a, b in zip(("y", "mean", "var", "dx", "dgamma", "dbeta"), got, ref):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11, err_msg=name)


def test_synchronized_batch_norm_op_numerical_gradient():
    """Central differences (float64) of the global loss sum_r share_r L_r, computed by 3 thread-ranks with
    synchronized statistics, against the gradient the ranks return (times their share): every entry of x,
    with a mask, so the check does not lean on the single-process op."""
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 2, 2))
    mask = (rng.uniform(size=(5, 2)) > 0.25).astype(np.float64)
    cm, cv = np.array([0.3, -0.2]), np.array([0.5, 0.4])
    _, got = _sync_bn_case(x, mask, 3, cm, cv)
    numeric = np.zeros_like(x)
    h = 1e-6
    for idx in np.ndindex(x.shape):
        xp_, xm = x.copy(), x.copy()
        xp_[idx] += h
        xm[idx] -= h
        numeric[idx] = (_sync_bn_case(xp_, mask, 3, cm, cv)[1][6] - _sync_bn_case(xm, mask, 3, cm, cv)[1][6]) / (2 * h)
    np.testing.assert_allclose(got[3], numeric, rtol=1e-5, atol=1e-7)


def test_synchronized_batch_norm_op_with_a_mask():
    """With a mask (masked sequences), the weighted statistics of the whole batch (Keras's rule, weight
    total + 1e-7) and their gradients; one rank's rows are all masked."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6, 4, 3))
    mask = (rng.uniform(size=(6, 4)) > 0.3).astype(np.float64)
    mask[3:5] = 0.0   # rank 1 of 3 keeps nothing
    cm, cv = np.array([0.3, -0.2, 0.1]), np.array([0.5, 0.4, -0.3])
    ref, got = _sync_bn_case(x, mask, 3, cm, cv)
    for name, a, b in zip(("y", "mean", "var", "dx", "dgamma", "dbeta"), got, ref):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11, err_msg=name)


class _RecordingComm:
    """Stands in for a 2-rank COMM_WORLD whose other rank sent the same gradients: the sum is twice the
    buffer. Records the type of every buffer MPI is handed, and the events around it."""
    size, rank = 2, 0

    def __init__(self, events):
        self.events, self.buffers = events, []

    def Allreduce(self, sendbuf, buf, op=None):
        self.buffers.append(type(buf).__module__.split(".")[0])
        self.events.append("allreduce")
        buf *= 2

    def Iallreduce(self, sendbuf, buf, op=None):
        self.Allreduce(sendbuf, buf, op)
        return None


@pytest.mark.parametrize("device_xp", ["fake-cupy"], indirect=True)
@pytest.mark.parametrize("aware", [False, True])
def test_device_gradients_are_host_staged_unless_mpi_is_cuda_aware(device_xp, aware, monkeypatch):
    """The routing of CuPy gradients (on tests/fake_cupy.py, in one process, MPI replaced by a recorder):
    without CUDA-aware MPI every buffer handed to MPI is a host NumPy array and the sums come back as
    device arrays; with it (as MPIX_Query_cuda_support would report), MPI gets the device buffers
    directly, after the stream is synchronised. What a real CUDA-aware transfer does is not tested here."""
    from types import SimpleNamespace

    from lamina.distribution import _runtime
    events = []
    comm = _RecordingComm(events)
    fake_mpi = SimpleNamespace(IN_PLACE=None, SUM=None,
                               Request=SimpleNamespace(Testall=lambda reqs: True, Waitall=lambda reqs: None))
    monkeypatch.setattr(_runtime, "_COMM", comm)
    monkeypatch.setattr(_runtime, "_MPI", fake_mpi)
    monkeypatch.setattr(_runtime, "_CUDA_AWARE", aware)
    if not hasattr(device_xp, "cuda"):
        stream = SimpleNamespace(synchronize=lambda: events.append("synchronize"))
        monkeypatch.setattr(device_xp, "cuda", SimpleNamespace(get_current_stream=lambda: stream), raising=False)
    rng = np.random.default_rng(0)
    host = [rng.normal(size=s).astype("float32") for s in ((3, 4), (4,), (2, 2, 2))]
    for mb in (None, 0.00003):   # one buffer; buckets of 31 bytes (one per gradient)
        dist = _runtime.DataParallel(devices=["gpu:0", "gpu:1"], bucket_mb=mb, overlap=False)
        monkeypatch.setattr(_runtime, "_DISTRIBUTION", dist)
        del events[:], comm.buffers[:]
        out = _runtime.reduce_gradients([device_xp.asarray(h) for h in host] + [None])
        assert out[-1] is None
        assert comm.buffers == (["cupy"] if aware else ["numpy"]) * (1 if mb is None else 3)
        if aware:
            assert events == ["synchronize", "allreduce"] * len(comm.buffers)
        for got, h in zip(out, host):
            assert lamina.backend.is_cupy_array(got)
            np.testing.assert_allclose(lamina.backend.to_numpy(got), h * 2 * 0.5, rtol=1e-6)  # share 1/2


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])
