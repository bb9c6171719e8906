"""Crashes (issue 15): a process killed with SIGKILL at a random moment while it saves leaves, at the path,
a complete old or new file (never a mix, never a half), its temporary files are removed by the next save,
and a BackupAndRestore run killed mid-fit resumes to exactly the uninterrupted run's weights."""
import glob
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import lamina
from lamina import callbacks, layers as L
from lamina.models import load_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")


def _env():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


SAVER = textwrap.dedent("""
    import sys, numpy as np, lamina
    from lamina import layers as L
    path, ext = sys.argv[1], sys.argv[2]
    m = lamina.Sequential([L.Input((256,)), L.Dense(512), L.Dense(256)])   # ~2 MB of weights: writes take a while
    print("ready", flush=True)
    k = 1
    while True:                       # version k: every weight filled with k
        m.set_weights([np.full(w.shape, k, w.dtype) for w in m.get_weights()])
        m.save(path) if ext != "weights" else m.save_weights(path)
        k += 1
""")


def _version(path, ext):
    """The single value every weight in the file holds (a complete version), or fail."""
    if ext == "weights":
        m = lamina.Sequential([L.Input((256,)), L.Dense(512), L.Dense(256)])
        m.load_weights(path)
    else:
        m = load_model(path)
    values = {float(v) for w in m.get_weights() for v in np.unique(w)}
    assert len(values) == 1, f"a mixed file: weights hold {sorted(values)[:5]}"
    return values.pop()


@pytest.mark.parametrize("ext", [".lamina", ".keras", "weights"])
def test_kill_during_save_leaves_old_or_new_file(tmp_path, ext):
    path = str(tmp_path / ("m.safetensors" if ext == "weights" else f"m{ext}"))
    rng = random.Random(15)
    seen = set()
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", SAVER, path, ext], env=_env(), stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        deadline = time.monotonic() + 20
        while not os.path.exists(path) and time.monotonic() < deadline:   # at least one complete save
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        seen.add(_version(path, ext))    # loads, and holds one complete version
    assert all(v >= 1 for v in seen)
    # the next save cleans up the temporary files the killed saves left (none may be left at all)
    m = lamina.Sequential([L.Input((256,)), L.Dense(512), L.Dense(256)])
    m.save(path) if ext != "weights" else m.save_weights(path)
    assert glob.glob(os.path.join(str(tmp_path), ".*.tmp")) == []


def test_save_never_removes_a_live_writers_temp_file(tmp_path):
    import fcntl
    path = tmp_path / "m.lamina"
    live = tmp_path / ".m.lamina.live1234.tmp"
    dead = tmp_path / ".m.lamina.dead1234.tmp"
    other = tmp_path / ".other.lamina.dead1234.tmp"
    for p in (live, dead, other):
        p.write_bytes(b"partial")
    fd = os.open(live, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)          # a writer still at work holds its lock
    try:
        lamina.Sequential([L.Input((2,)), L.Dense(1)]).save(str(path))
        assert live.exists() and not dead.exists() and other.exists()
    finally:
        os.close(fd)


BACKUP_RUN = textwrap.dedent("""
    import sys, numpy as np, lamina
    sys.path.insert(0, sys.argv[2])
    from test_hostile_crash import _backup_fit
    _backup_fit(sys.argv[1], epochs=int(sys.argv[3]))
""")


def _backup_fit(backup_dir, epochs, epochs_run=None):
    from lamina import layers as L
    lamina.utils.set_random_seed(7)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1200, 16)).astype(np.float32)
    y = rng.integers(0, 4, 1200)
    m = lamina.Sequential([L.Input((16,)), L.Dense(64, activation="relu"), L.Dropout(0.3), L.Dense(4)])
    m.compile("adam", "sparse_categorical_crossentropy")
    cbs = [callbacks.BackupAndRestore(backup_dir)] if backup_dir else []
    if epochs_run is not None:
        cbs.append(callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: epochs_run.append(e)))
    m.fit(x, y, batch_size=8, epochs=epochs, verbose=0, callbacks=cbs)
    return m


def test_backup_and_restore_survives_kill_9(tmp_path):
    epochs = 8
    reference = _backup_fit(None, epochs).get_weights()
    backup = str(tmp_path / "backup")
    rng = random.Random(3)
    path = os.path.join(backup, "backup.safetensors")
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", BACKUP_RUN, backup, os.path.dirname(__file__), str(epochs)],
                                env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while not os.path.exists(path) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(rng.uniform(0.0, 0.1))
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL, proc.stderr.read().decode()[-2000:]   # killed, not finished
        proc.stderr.close()
    assert os.path.exists(path)
    epochs_run = []
    resumed = _backup_fit(backup, epochs, epochs_run).get_weights()   # resumes from whatever the kills left
    assert epochs_run and epochs_run[0] > 0 and epochs_run == list(range(epochs_run[0], epochs))
    for a, b in zip(reference, resumed):
        np.testing.assert_array_equal(a, b)
    assert not os.path.exists(backup)
