"""`.keras` files written by real Keras 3.15 (torch backend), kept in tests/fixtures/keras/ with the script that
made them (tests/fixtures/make_keras_fixtures.py): each of the ten models of issue 16's outside check, trained a
few steps by Keras, loads in lamina with Keras unavailable and predicts Keras's stored outputs to 1e-4; its
Adam state comes along; and each exports to ONNX and runs the same in onnxruntime at two batch sizes."""
import os
import sys

import numpy as np
import pytest

import lamina

HERE = os.path.join(os.path.dirname(__file__), "fixtures", "keras")
NAMES = sorted(f[:-len(".keras")] for f in os.listdir(HERE) if f.endswith(".keras"))


def test_all_ten_fixtures_are_there():
    assert NAMES == sorted(["activations", "bidirectional", "cnn", "conv1d", "lstm", "masked_gru", "mlp",
                            "transformer", "two_in_two_out", "unet"])


def _stored(name):
    with np.load(os.path.join(HERE, f"{name}.npz"), allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    xs = [arrays[k] for k in sorted(k for k in arrays if k.startswith("x"))]
    ys = [arrays[k] for k in sorted(k for k in arrays if k.startswith("y"))]
    return xs, ys, int(arrays["steps"])


def _load_without_keras(name, monkeypatch):
    monkeypatch.setitem(sys.modules, "keras", None)     # `import keras` fails from here on
    return lamina.models.load_model(os.path.join(HERE, f"{name}.keras"))


@pytest.mark.parametrize("name", NAMES)
def test_keras_fixture_predicts_kerass_outputs(name, monkeypatch):
    xs, ys, steps = _stored(name)
    model = _load_without_keras(name, monkeypatch)
    got = model.predict(xs if len(xs) > 1 else xs[0], verbose=0)
    got = got if isinstance(got, list) else [got]
    assert len(got) == len(ys)
    for g, y in zip(got, ys):
        np.testing.assert_allclose(g, y, atol=1e-4, rtol=1e-4)
    assert model.compiled and type(model.optimizer).__name__ == "Adam"
    assert int(np.asarray(model.optimizer.iterations.numpy())) == steps > 0


@pytest.mark.parametrize("name", NAMES)
def test_keras_fixture_exports_to_onnx(name, monkeypatch, tmp_path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    xs, ys, _ = _stored(name)
    model = _load_without_keras(name, monkeypatch)
    path = model.export(str(tmp_path / "m.onnx"), format="onnx", verbose=False)
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    for batch in (1, 3):
        got = session.run(None, dict(zip(names, [x[:batch] for x in xs])))
        for g, y in zip(got, ys):
            np.testing.assert_allclose(g, y[:batch], atol=1e-4, rtol=1e-4)
