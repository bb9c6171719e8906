"""The `lamina` command, run as a user runs it: a subprocess with a fresh LAMINA_HOME and working folder.

The tests of argument handling, messages and exit statuses call the same entry point in this process instead
(lamina_here: lamina.cli.main with the same LAMINA_HOME, working folder and captured output, argparse's exit
read as the exit status): a subprocess only added Python's and lamina's start (~0.5 s a call, ~35 calls). The
tests about the command as a process stay subprocesses: the default training run, the MLP runs with options
(and their reproducibility from a fresh process), `python -m lamina`, the terminal output and `predict`'s
refusal to allocate what a .npy header claims."""
import contextlib
import io
import json
import os
import pathlib
import subprocess
import sys
import warnings

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


def lamina(*args, cwd, timeout=120):
    env = {**os.environ, "LAMINA_HOME": str(pathlib.Path(cwd) / "home"), "OMP_NUM_THREADS": "1",
           "OPENBLAS_NUM_THREADS": "1", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "lamina.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def lamina_here(*args, cwd):
    """`lamina ARGS` as lamina() runs it, but in this process: lamina.cli.main(ARGS) in the folder cwd with
    LAMINA_HOME=cwd/home, its stdout and stderr captured (and any warning written to stderr, where a process
    prints it), argparse's SystemExit taken as the exit status. A CompletedProcess, as lamina() returns."""
    from lamina import cli
    out, err = io.StringIO(), io.StringIO()
    home, folder = os.environ.get("LAMINA_HOME"), os.getcwd()
    os.environ["LAMINA_HOME"] = str(pathlib.Path(cwd) / "home")
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")     # a plain `python` process's filters: each warning once,
            for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
                warnings.simplefilter("ignore", category)   # but these four not at all
            try:
                status = cli.main([str(a) for a in args])
            except SystemExit as e:             # argparse's exit or sys.exit: what the process would end with
                status = e.code
                if status is not None and not isinstance(status, int):
                    print(status, file=sys.stderr)
                    status = 1
    finally:
        os.chdir(folder)
        if home is None:
            os.environ.pop("LAMINA_HOME", None)
        else:
            os.environ["LAMINA_HOME"] = home
    stderr = err.getvalue() + "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno)
                                      for w in caught)
    return subprocess.CompletedProcess(["lamina", *args], status or 0, out.getvalue(), stderr)


def assert_one_line_error(result, *words):
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lamina: error:"), result.stderr
    for w in words:
        assert w in lines[0]


@pytest.fixture(scope="module")
def trained(workdir):
    """`lamina train` with no arguments: the default CNN on the bundled digits."""
    result = lamina("train", cwd=workdir)
    assert result.returncode == 0, result.stderr
    return workdir / "runs" / "cnn", result


def test_default_train_reaches_97_percent(trained):
    out, result = trained
    run = json.loads((out / "run.json").read_text())
    assert run["model"] == "cnn" and run["dataset"] == "digits"
    assert run["test_accuracy"] >= 0.97
    assert "Test accuracy: " in result.stdout and "Epoch 1/" in result.stdout
    printed = float(result.stdout.split("Test accuracy: ")[1].split()[0])
    assert abs(printed - run["test_accuracy"]) < 1e-4
    assert (out / "model.lamina").exists()
    history = json.loads((out / "history.json").read_text())
    assert len(history["loss"]) == run["epochs"] and history["loss"][-1] < history["loss"][0]
    try:
        import matplotlib  # noqa: F401
        assert (out / "history.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    except ImportError:
        assert not (out / "history.png").exists() and "matplotlib" in result.stdout


# --no-plot: history.png (matplotlib's import and drawing, ~0.7 s) is the default run's to check
MLP_OPTIONS = ("--model", "mlp", "--epochs", "2", "--batch-size", "64", "--seed", "3", "--quiet", "--no-plot")


@pytest.fixture(scope="module")
def mlp_run(workdir):
    """`lamina train` with its options given: the MLP, 2 epochs, batch 64, seed 3, into ./mlp_run."""
    result = lamina("train", *MLP_OPTIONS, "--out", "mlp_run", cwd=workdir)
    assert result.returncode == 0, result.stderr
    return workdir / "mlp_run", result


def test_train_options(mlp_run):
    out, result = mlp_run
    run = json.loads((out / "run.json").read_text())
    assert (run["model"], run["epochs"], run["batch_size"], run["seed"]) == ("mlp", 2, 64, 3)
    assert "Epoch" not in result.stdout
    assert not (out / "history.png").exists() and "history.png" not in result.stdout     # --no-plot


def test_train_is_reproducible_with_seed(mlp_run, workdir):
    out, _ = mlp_run
    again = lamina("train", *MLP_OPTIONS, "--out", "mlp_again", cwd=workdir)   # the same command a second time
    assert again.returncode == 0, again.stderr
    ra, rb = (json.loads((d / "run.json").read_text()) for d in (out, workdir / "mlp_again"))
    assert ra["test_loss"] == rb["test_loss"]


def test_evaluate(trained, workdir):
    out, _ = trained
    result = lamina_here("evaluate", str(out / "model.lamina"), cwd=workdir)
    assert result.returncode == 0, result.stderr
    run = json.loads((out / "run.json").read_text())
    assert f"accuracy {run['test_accuracy']:.4f}" in result.stdout
    # A model file moved away from its run.json needs --data.
    moved = workdir / "moved.keras"
    moved.write_bytes((out / "model.lamina").read_bytes())
    assert_one_line_error(lamina_here("evaluate", str(moved), cwd=workdir), "--data")
    assert lamina_here("evaluate", str(moved), "--data", "digits", cwd=workdir).returncode == 0


def test_predict(trained, workdir):
    out, _ = trained
    import lamina as lm
    _, (x_test, y_test) = lm.datasets.digits.load_data()
    np.save(workdir / "raw.npy", x_test[:12])                                   # raw uint8 (n, 8, 8)
    np.save(workdir / "scaled.npy", (x_test[:12] / 16.0).astype("float32")[..., None])
    result = lamina_here("predict", str(out / "model.lamina"), "raw.npy", "--output", "p.npy", cwd=workdir)
    assert result.returncode == 0, result.stderr
    probs = np.load(workdir / "p.npy", allow_pickle=False)
    assert probs.shape == (12, 10) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert (probs.argmax(1) == y_test[:12]).mean() >= 0.9
    assert "0: class " in result.stdout and "... 2 more" in result.stdout
    result = lamina_here("predict", str(out / "model.lamina"), "scaled.npy", "--output", "q.npy", cwd=workdir)
    assert result.returncode == 0 and np.allclose(np.load(workdir / "q.npy"), probs, atol=1e-6)


def test_summary_and_models(trained, workdir):
    out, _ = trained
    result = lamina_here("summary", str(out / "model.lamina"), cwd=workdir)
    assert result.returncode == 0 and "Conv2D" in result.stdout and "Total params" in result.stdout
    result = lamina_here("models", cwd=workdir)
    assert result.returncode == 0 and "cnn" in result.stdout and "mlp" in result.stdout and "(default)" in result.stdout


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["predict"], ["summary"], ["models"]])
def test_help_everywhere(command, workdir):
    result = lamina_here(*command, "--help", cwd=workdir)
    assert result.returncode == 0 and "usage: lamina" in result.stdout


@pytest.mark.parametrize("args", [[], ["bogus"], ["train", "--model", "nope"], ["train", "--epochs", "0"],
                                  ["train", "--batch-size", "x"], ["predict", "only-one.keras"], ["evaluate"]])
def test_usage_errors_exit_2(args, workdir):
    result = lamina_here(*args, cwd=workdir)
    assert result.returncode == 2 and "usage:" in result.stderr and "Traceback" not in result.stderr


def test_user_errors_exit_1(trained, workdir):
    out, _ = trained
    model = str(out / "model.lamina")
    assert_one_line_error(lamina_here("summary", "missing.keras", cwd=workdir), "missing.keras", "no such file")
    assert_one_line_error(lamina_here("evaluate", "missing.keras", cwd=workdir), "missing.keras")
    corrupt = workdir / "corrupt.keras"
    corrupt.write_bytes((out / "model.lamina").read_bytes()[:300])
    assert_one_line_error(lamina_here("summary", str(corrupt), cwd=workdir), "corrupt.keras")
    (workdir / "text.keras").write_text("hello")
    assert_one_line_error(lamina_here("summary", "text.keras", cwd=workdir), "not a lamina model file")
    assert_one_line_error(lamina_here("predict", model, "nothere.npy", cwd=workdir), "nothere.npy")
    (workdir / "bad.npy").write_bytes(b"not numpy")
    assert_one_line_error(lamina_here("predict", model, "bad.npy", cwd=workdir), "bad.npy")
    np.save(workdir / "wrong.npy", np.zeros((2, 5, 5, 1), "float32"))
    assert_one_line_error(lamina_here("predict", model, "wrong.npy", cwd=workdir), "wrong.npy")
    np.save(workdir / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert_one_line_error(lamina_here("predict", model, "objects.npy", cwd=workdir), "objects.npy")


def test_offline_download_error_is_one_line(workdir, monkeypatch):
    # mnist is not cached in this fresh LAMINA_HOME; point it at a closed local port (and skip the retries' waits).
    import socket

    import lamina.utils.data_utils as du
    from lamina.datasets import mnist
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    monkeypatch.setattr(mnist, "ORIGINS", [f"http://127.0.0.1:{port}/"])
    monkeypatch.setattr(du.time, "sleep", lambda seconds: None)
    result = lamina_here("train", "--model", "mnist-cnn", "--epochs", "1", cwd=workdir)
    assert_one_line_error(result, "offline", str(workdir / "home" / "datasets" / "mnist"))


def test_train_takes_the_model_name_as_a_positional_argument(tmp_path):
    r = lamina_here("train", "longmemory-dense", "--epochs", "1", "--quiet", "--no-plot", "--out", str(tmp_path / "o"),
               cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o" / "model.lamina").exists()
    r = lamina_here("train", "cnn", "--model", "mlp", cwd=tmp_path)
    assert r.returncode == 2 and "two models" in r.stderr


def test_evaluate_refuses_models_that_measure_themselves(tmp_path):
    out = tmp_path / "ae"
    r = lamina_here("train", "autoencoder", "--epochs", "1", "--quiet", "--no-plot", "--out", str(out), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.glob("*.png")) == []          # its own loop's figures follow --no-plot too
    r = lamina_here("evaluate", str(out / "model.lamina"), cwd=tmp_path)
    assert r.returncode == 1 and "own metrics" in r.stderr and "Traceback" not in r.stderr


# --------------------------------------------------------------------------- docs and catalog in step
def _table_rows(text, header):
    """The first column's `names` of the markdown table that starts with header."""
    lines = text[text.index(header):].splitlines()[2:]
    rows = []
    for line in lines:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_docs_cli_tables_match_the_catalog():
    from lamina.zoo import catalog
    text = (ROOT / "docs" / "cli.md").read_text()
    models = _table_rows(text, "| model | data set | epochs | what it is |")
    documented = {r[0].split("`")[1]: (r[1], int(r[2]), r[3]) for r in models}
    # registration order depends on which zoo module a process imports first: compare by name
    assert set(documented) == set(catalog.RECIPES), "docs/cli.md's model table is out of date"
    for name, recipe in catalog.RECIPES.items():
        assert documented[name] == (recipe.dataset, recipe.epochs, recipe.description), name
    datasets = [r[0].strip("`") for r in _table_rows(text, "| data set | what it is |")]
    used = {r.dataset for r in catalog.RECIPES.values()}
    assert set(datasets) == set(catalog.DATASETS) | set(catalog.OTHER_DATASETS)
    assert used <= set(datasets), f"data sets without a description: {used - set(datasets)}"


def test_models_lists_every_data_set_a_recipe_uses(workdir):
    result = lamina_here("models", cwd=workdir)
    assert result.returncode == 0
    listed = {line.split()[0] for line in result.stdout.split("Data sets:")[1].strip().splitlines()}
    from lamina.zoo import catalog
    assert {r.dataset for r in catalog.RECIPES.values()} <= listed


def test_python_dash_m_lamina_is_the_cli(workdir):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, "-m", "lamina", "--version"], cwd=workdir, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("lamina ")


def test_catalog_name_stands_for_its_latest_run(trained, workdir):
    result = lamina_here("summary", "cnn", cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "runs/cnn/model.lamina" in result.stderr and "Total params" in result.stdout
    result = lamina_here("evaluate", "mlp", cwd=workdir)  # a catalog name never trained here
    assert_one_line_error(result, "lamina train mlp")


def test_seed_must_be_a_non_negative_integer(workdir):
    result = lamina_here("train", "--seed", "-5", "--epochs", "1", cwd=workdir)
    assert result.returncode == 2 and "--seed" in result.stderr and "-5" in result.stderr


def test_predict_output_path_problems_are_one_line(trained, workdir):
    out, _ = trained
    np.save(workdir / "few.npy", np.zeros((2, 8, 8), np.float32))
    model = str(out / "model.lamina")
    assert_one_line_error(lamina_here("predict", model, "few.npy", "--output", str(workdir), cwd=workdir),
                          "--output", "is a folder")
    assert_one_line_error(lamina_here("predict", model, "few.npy", "--output", "no/such/dir/p.npy", cwd=workdir),
                          "no/such/dir/p.npy", "does not exist")


def test_npy_header_claiming_huge_array_fails_before_allocating(trained, workdir):
    out, _ = trained
    with open(workdir / "huge.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False, "shape": (2 ** 33,)})
        f.write(b"\0" * 16)
    result = lamina("predict", str(out / "model.lamina"), "huge.npy", cwd=workdir)
    assert_one_line_error(result, "huge.npy", "truncated or corrupt")


@pytest.mark.parametrize("columns", [80, 120, 0])
def test_train_progress_in_a_terminal_shows_every_metric(columns, tmp_path):
    import ptyscreen
    env = {**os.environ, "LAMINA_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # the MLP: its progress and metric lines are the CNN's, and it trains in a fraction of the time
    status, lines = ptyscreen.run([sys.executable, "-m", "lamina", "train", "mlp", "--epochs", "2", "--out", "run",
                                   "--no-plot"], columns, env=env, cwd=tmp_path)
    assert status == 0, "\n".join(lines)
    if columns:  # progress and metric lines fit (other messages may wrap, as text does)
        assert all(len(line) < columns for line in lines if "/step" in line or "loss: " in line), lines
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    text = "\n".join(lines)
    blocks = text.split("Epoch 2/2")
    assert len(blocks) == 2
    for epoch, block in enumerate(blocks):
        for key, values in history.items():
            assert f"{key}: {values[epoch]:.4f}" in block, (key, epoch, block)


@pytest.mark.parametrize("columns", [60, 80])
def test_summary_fits_the_terminal(columns, tmp_path):
    import ptyscreen
    script = ("import lamina; from lamina.zoo import catalog; "
              "catalog.digits_cnn().summary(); "
              "i = lamina.Input((8,)); a = lamina.layers.Dense(4, name='a_long_layer_name_here')(i); "
              "b = lamina.layers.Dense(4)(i); lamina.Model(i, lamina.layers.Add()([a, b])).summary()")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    status, lines = ptyscreen.run([sys.executable, "-c", script], columns, env=env)
    assert status == 0, "\n".join(lines)
    assert [line for line in lines if len(line) >= columns] == []
    text = "\n".join(lines)
    assert "Total params: 43,050" in text and "Total params: 72" in text and "a_long_layer" in text


def test_export_onnx_from_the_command_line(trained, workdir):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    out, _ = trained
    result = lamina_here("export", "cnn", "--output", "cnn.onnx", cwd=workdir)
    assert result.returncode == 0, result.stderr
    session = ort.InferenceSession(str(workdir / "cnn.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
    import lamina as lam
    want = lam.models.load_model(str(out / "model.lamina")).predict(x, verbose=0)
    np.testing.assert_allclose(session.run(None, {session.get_inputs()[0].name: x})[0], want, atol=1e-5)


def test_train_that_stops_in_its_first_epoch_saves_and_draws_nothing(tmp_path, monkeypatch, capsys):
    """fit() leaves an empty history when the first epoch's loss is not finite: the run still measures and saves
    the model it has, and says there is no curve to draw (plot_history refuses an empty history)."""
    from lamina import cli
    from lamina.models import model as model_mod

    class Stopped:
        history = {}
    monkeypatch.setattr(model_mod.Model, "fit", lambda self, *args, **kwargs: Stopped())
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "mlp", "--epochs", "1", "--quiet", "--out", "run"]) == 0
    printed = capsys.readouterr().out
    assert "No epoch finished" in printed and "Test accuracy: " in printed
    assert (tmp_path / "run" / "model.lamina").exists() and not (tmp_path / "run" / "history.png").exists()
