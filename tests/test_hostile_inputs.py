"""Bad input (issue 15): fit / evaluate / predict refuse bad arguments and bad data with a clear ValueError
(Keras's wording where Keras has a message, checked against real Keras 3 below), and the command line turns
every hostile file into one line on stderr with exit status 1."""
import os
import zipfile

import numpy as np
import pytest

import lamina
from lamina import cli, layers as L


def _model(units=3, loss="sparse_categorical_crossentropy", activation="softmax"):
    m = lamina.Sequential([L.Input((4,)), L.Dense(units, activation=activation)])
    m.compile("sgd", loss)
    return m


X = np.random.default_rng(0).random((10, 4)).astype(np.float32)
Y = np.random.default_rng(1).integers(0, 3, 10)


def _labels(value):
    y = Y.astype(np.float32)
    y[0] = value
    return y


BAD_CALLS = [  # (name, call, message pattern)
    ("validation_split=1.5", lambda m: m.fit(X, Y, validation_split=1.5, verbose=0), r"validation_split must be a float in \[0, 1\)"),
    ("validation_split=-0.5", lambda m: m.fit(X, Y, validation_split=-0.5, verbose=0), r"validation_split=-0.5"),
    ("validation_split=1.0", lambda m: m.fit(X, Y, validation_split=1.0, verbose=0), "not sufficient to split"),
    ("validation_freq=0", lambda m: m.fit(X, Y, validation_split=0.2, validation_freq=0, verbose=0),
     "validation_freq must be a positive integer"),
    ("steps_per_epoch=0", lambda m: m.fit(X, Y, steps_per_epoch=0, verbose=0), "steps_per_epoch must be a positive"),
    ("steps_per_epoch=-1", lambda m: m.fit(X, Y, steps_per_epoch=-1, verbose=0), "steps_per_epoch must be a positive"),
    ("initial_epoch=-1", lambda m: m.fit(X, Y, initial_epoch=-1, verbose=0), "initial_epoch must be"),
    ("batch_size=0", lambda m: m.fit(X, Y, batch_size=0, verbose=0), "batch_size must be a positive"),
    ("class_weight={-1: 2}", lambda m: m.fit(X, Y, class_weight={-1: 2.0}, verbose=0), "key -1"),
    ("class_weight={5: 2}", lambda m: m.fit(X, Y, class_weight={0: 1.0, 5: 2.0}, verbose=0), "has key 5.*3 classes"),
    ("class_weight={'a': 2}", lambda m: m.fit(X, Y, class_weight={"a": 2.0}, verbose=0), "key 'a'"),
    ("class_weight={0: nan}", lambda m: m.fit(X, Y, class_weight={0: float("nan")}, verbose=0), "finite"),
    ("NaN label", lambda m: m.fit(X, _labels(np.nan), verbose=0), "1 NaN or inf label"),
    ("inf label", lambda m: m.fit(X, _labels(np.inf), verbose=0), "1 NaN or inf label"),
    ("-inf label", lambda m: m.fit(X, _labels(-np.inf), verbose=0), "1 NaN or inf label"),
    ("label out of range", lambda m: m.fit(X, Y + 5, verbose=0), r"\[0, 3\)"),
    ("string labels", lambda m: m.fit(X, Y.astype(str), verbose=0), "Invalid dtype: <U.* for y"),
    ("numeric strings as x", lambda m: m.fit(X.astype(str), Y, verbose=0), "Invalid dtype: <U.* for x"),
    ("object x", lambda m: m.fit(X.astype(object), Y, verbose=0), "Invalid dtype: object for x"),
    ("list of strings as x", lambda m: m.predict([["1", "2", "3", "4"]], verbose=0), "Invalid dtype"),
    ("NaN sample_weight", lambda m: m.fit(X, Y, sample_weight=np.full(10, np.nan), verbose=0), "sample_weight holds NaN"),
    ("fit on empty arrays", lambda m: m.fit(X[:0], Y[:0], verbose=0), "num_samples=0"),
    ("evaluate on empty arrays", lambda m: m.evaluate(X[:0], Y[:0], verbose=0), "num_samples=0"),
    ("predict on empty arrays", lambda m: m.predict(X[:0], verbose=0), "num_samples=0"),
    ("evaluate steps=0", lambda m: m.evaluate(X, Y, steps=0, verbose=0), "steps must be a positive"),
    ("predict steps=-2", lambda m: m.predict(X, steps=-2, verbose=0), "steps must be a positive"),
    ("mismatched sample counts", lambda m: m.fit(X, Y[:5], verbose=0), "Data cardinality is ambiguous"),
]


@pytest.mark.parametrize("name,call,pattern", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_arguments_and_data_raise_clear_value_errors(name, call, pattern):
    m = _model()
    before = [w.copy() for w in m.get_weights()]
    with pytest.raises(ValueError, match=pattern) as info:
        call(m)
    assert type(info.value) is ValueError and "\n" not in str(info.value)
    for a, b in zip(before, m.get_weights()):   # refused before any training step
        np.testing.assert_array_equal(a, b)


def test_good_calls_still_work():
    m = _model()
    m.fit(X, Y, validation_split=0.2, validation_freq=1, class_weight={0: 1.0, 1: 2.0, 2: 0.5}, steps_per_epoch=2,
          verbose=0)
    assert np.isfinite(m.evaluate(X, Y, verbose=0))
    assert m.predict(X, verbose=0).shape == (10, 3)
    b = _model(1, "binary_crossentropy", "sigmoid")
    b.fit(X, (Y > 0).astype(np.float32), verbose=0)               # (N,) targets for an (N, 1) output
    b.fit(X, (Y > 0).astype(np.float32)[:, None], verbose=0)       # (N, 1)
    r = _model(1, "mse", None)
    r.fit(X, np.ones((10, 5), np.float32), verbose=0)              # Keras broadcasts (N, 1) outputs for MSE too


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    return pytest.importorskip("keras")


def test_shape_and_split_messages_match_keras():
    keras = _keras()
    for lib in (keras, lamina):
        m = lib.Sequential([lib.Input((4,)), lib.layers.Dense(1, activation="sigmoid")])
        m.compile("sgd", "binary_crossentropy")
        with pytest.raises(ValueError, match=r"Arguments `target` and `output` must have the same shape\. "
                                             r"Received: target\.shape=.*10, 3.*output\.shape=.*10, 1"):
            m.fit(X, np.ones((10, 3), np.float32), verbose=0)
        with pytest.raises(ValueError, match=r"Training data contains 10 samples, which is not sufficient to split "
                                             r"it into a validation and training set as specified by "
                                             r"`validation_split=1\.0`"):
            m.fit(X, np.ones((10, 1), np.float32), validation_split=1.0, verbose=0)


def test_text_models_still_take_strings():
    tv = L.TextVectorization(vocabulary=["a", "b"], output_mode="count")
    m = lamina.Sequential([L.Input((1,), dtype="string"), tv, L.Dense(2)])
    m.compile("sgd", "mse")
    texts = np.array([["a b"], ["b"]], dtype=object)
    m.fit(texts, np.zeros((2, 2), np.float32), verbose=0)
    assert m.predict(texts, verbose=0).shape == (2, 2)


# ------------------------------------------------------------------------------------------- the CLI
@pytest.fixture
def files(tmp_path):
    m = _model()
    good = tmp_path / "m.lamina"
    m.save(str(good))
    np.save(tmp_path / "x.npy", X)
    with zipfile.ZipFile(good) as z:
        members = {n: z.read(n) for n in z.namelist()}
    huge = tmp_path / "huge.lamina"
    with zipfile.ZipFile(huge, "w") as z:
        for n, b in members.items():
            z.writestr(n, b.replace(b'"units": 3', b'"units": 1000000000') if n == "config.json" else b)
    truncated = tmp_path / "cut.lamina"
    truncated.write_bytes(good.read_bytes()[:700])
    fifo = tmp_path / "pipe.lamina"
    os.mkfifo(fifo)
    (tmp_path / "folder.npy").mkdir()
    return tmp_path


CLI_CASES = [
    (["predict", "/dev/zero", "x.npy"], "/dev/zero: is a character device"),
    (["predict", "pipe.lamina", "x.npy"], "pipe.lamina: is a FIFO"),
    (["predict", "huge.lamina", "x.npy"], "huge.lamina: the config asks for weight"),
    (["predict", "cut.lamina", "x.npy"], "cut.lamina: "),
    (["predict", "m.lamina", "folder.npy"], "folder.npy"),
    (["predict", "m.lamina", "x.npy", "--output", "folder.npy"], "is a folder"),
    (["predict", "m.lamina", "x.npy", "--output", "no/such/dir/out.npy"], "does not exist"),
    (["summary", "pipe.lamina"], "is a FIFO"),
]


@pytest.mark.parametrize("args,message", CLI_CASES, ids=[" ".join(a) for a, _ in CLI_CASES])
def test_cli_hostile_files_are_one_line_errors(args, message, files, capsys, monkeypatch):
    monkeypatch.chdir(files)
    assert cli.main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("lamina: error: ") and message in err and err.count("\n") == 1
    assert "Traceback" not in err and ".tmp" not in err
