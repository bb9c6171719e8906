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

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import lamina  # noqa: E402
from lamina import layers  # noqa: E402

CASES = ("mlp", "cnn", "lstm", "transformer")


# ----------------------------------------------------------------------------- the cases (both sides)
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
                      metrics=["accuracy"], weighted_metrics=["accuracy"])
        return model, x, y, sw, dict(batch_size=10, epochs=3)   # 45 = 4 x 10 + a ragged 5
    if name == "cnn":
        x = rng.normal(size=(21, 6, 6, 1)).astype("float32")
        y = rng.integers(0, 2, 21)
        model = lamina.Sequential([lamina.Input((6, 6, 1)), layers.Conv2D(3, 3, activation="relu"),
                                   layers.Dropout(0.3), layers.Flatten(), layers.Dense(2, activation="softmax")])
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
def _worker(out_dir, mode):
    from lamina import distribution
    distribution.initialize()
    distribution.set_distribution(distribution.DataParallel())
    rank = distribution.process_index()
    if mode == "cases":
        for name in CASES:
            np.savez(os.path.join(out_dir, f"{name}_rank{rank}.npz"), **run_case(name))
    elif mode == "fake-cupy":   # the 'cuda' device on tests/fake_cupy.py: gradients staged through the host
        sys.path.insert(0, HERE)
        import fake_cupy
        sys.modules["cupy"] = fake_cupy.make_module()
        lamina.backend.set_device("cuda")
        from lamina.distribution import _runtime
        real, seen = _runtime.reduce_gradients, []

        def spy(grads):   # records that the gradients arrive, and leave, as device arrays
            out = real(grads)
            seen.append(all(lamina.backend.is_cupy_array(g.data if isinstance(g, lamina.Tensor) else g)
                            for g in list(grads) + out))
            return out
        _runtime.reduce_gradients = spy
        result = run_case("cnn")
        np.savez(os.path.join(out_dir, f"cupy_rank{rank}.npz"), on_device=np.array(bool(seen) and all(seen)),
                 **result)
    elif mode == "callbacks":
        from lamina.models import saving
        real = saving.save_model

        def counting(*args, **kwargs):  # records which rank wrote a model file
            with open(os.path.join(out_dir, f"saves_rank{rank}.txt"), "a") as f:
                f.write("save\n")
            return real(*args, **kwargs)
        saving.save_model = counting
        model, x, y, sw, kw = _case("mlp")
        cbs = [lamina.callbacks.CSVLogger(os.path.join(out_dir, "log.csv"), append=True),
               lamina.callbacks.ModelCheckpoint(os.path.join(out_dir, "ckpt.keras")),
               lamina.callbacks.EarlyStopping(monitor="loss", patience=0, min_delta=10.0, verbose=1)]
        history = model.fit(x, y, batch_size=10, epochs=4, verbose=1, callbacks=cbs)
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


def test_two_ranks_equal_one_process(tmp_path):
    _require_mpi()
    r = _launch(tmp_path, "cases")
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


def test_two_ranks_on_the_device_stand_in(tmp_path):
    """With device arrays (tests/fake_cupy.py, the CPU stand-in that refuses implicit host conversions as
    CuPy does), the broadcast, the gradient all-reduce and the gathers go through the host and give the
    CPU single-process result."""
    _require_mpi()
    r = _launch(tmp_path, "fake-cupy")
    assert r.returncode == 0, r.stdout + r.stderr
    ref = run_case("cnn")
    for k in range(2):
        got = np.load(tmp_path / f"cupy_rank{k}.npz")
        assert bool(got["on_device"])
        for key in ref:
            if key != "names":
                np.testing.assert_allclose(got[key], ref[key], rtol=2e-4, atol=2e-5, err_msg=key)


def test_callbacks_write_once_and_decide_alike(tmp_path):
    _require_mpi()
    r = _launch(tmp_path, "callbacks")
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
                        "--out", str(tmp_path / "run")], env=env, capture_output=True, text=True, timeout=120,
                       cwd=str(tmp_path))
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
                                        "--quiet", "--out", str(tmp_path / "run")]
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


if __name__ == "__main__":
    _worker(sys.argv[1], sys.argv[2])
