"""Losses and metrics on bad or unusual input: a clear ValueError, or Keras's value; never an
IndexError, an AxisError, a ZeroDivisionError or a silently wrong number."""
import os

import numpy as np
import pytest

import lamina
from lamina import losses, metrics

os.environ.setdefault("KERAS_BACKEND", "torch")

RNG = np.random.default_rng(0)
PROBS = RNG.dirichlet(np.ones(3), 4).astype("float32")
Y_REG = RNG.normal(size=(4, 3)).astype("float32")


def _keras():
    return pytest.importorskip("keras")


# ----- sparse labels given to the metrics: a clear ValueError, not an IndexError from the gather
@pytest.mark.parametrize("labels", [[0, 1, 3, 2], [0, 1, 2, -1], [0.0, 1.0, np.nan, 2.0], [0, 1]],
                         ids=["too_high", "negative", "nan", "too_few"])
def test_sparse_categorical_crossentropy_metric_bad_labels_raise_valueerror(labels):
    m = metrics.SparseCategoricalCrossentropy()
    with pytest.raises(ValueError, match="sparse_categorical_crossentropy"):
        m.update_state(np.asarray(labels), PROBS)


@pytest.mark.parametrize("labels", [[0.0, 1.0, np.nan, 2.0], [0, 1]], ids=["nan", "too_few"])
def test_sparse_top_k_metric_bad_labels_raise_valueerror(labels):
    m = metrics.SparseTopKCategoricalAccuracy(k=2)
    with pytest.raises(ValueError, match="sparse_top_k_categorical_accuracy"):
        m.update_state(np.asarray(labels), PROBS)


@pytest.mark.parametrize("label", [-1, 3])
def test_sparse_top_k_label_out_of_range_is_never_found(label):
    # a negative label must not wrap around to the last class
    scores = np.array([[0.1, 0.2, 0.7]], "float32")
    m = metrics.SparseTopKCategoricalAccuracy(k=1)
    m.update_state(np.array([label]), scores)
    assert float(m.result()) == 0.0


def test_top_k_metric_mismatched_batch_raises_valueerror():
    m = metrics.TopKCategoricalAccuracy(k=2)
    with pytest.raises(ValueError, match="top_k_categorical_accuracy"):
        m.update_state(np.eye(3, dtype="float32")[[0, 1]], PROBS)


# ----- integer predictions: float targets are not truncated to the predictions' int dtype
@pytest.mark.parametrize("name", ["MeanSquaredError", "MeanAbsoluteError", "Huber", "LogCosh", "CosineSimilarity"])
def test_loss_int_predictions_match_keras(name):
    keras = _keras()
    y_pred = (Y_REG > 0.5).astype("int64")
    got = float(getattr(losses, name)()(Y_REG, y_pred))
    want = float(getattr(keras.losses, name)()(Y_REG, y_pred))
    assert got == pytest.approx(want, rel=1e-5, abs=1e-6)


# ----- 0-d inputs: one value each, as Keras reads them
LOSSES_0D = ["Hinge", "SquaredHinge", "MeanAbsolutePercentageError", "MeanSquaredLogarithmicError",
             "Poisson", "CategoricalHinge"]
METRICS_0D = ["Accuracy", "BinaryAccuracy", "MeanAbsoluteError", "Hinge", "LogCoshError", "BinaryCrossentropy"]


@pytest.mark.parametrize("name", LOSSES_0D)
def test_loss_0d_inputs_match_keras(name):
    keras = _keras()
    t, p = np.float32(1.0), np.float32(0.3)
    got = np.asarray(getattr(losses, name)()(t, p).numpy())
    want = np.asarray(getattr(keras.losses, name)()(t, p))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", METRICS_0D)
def test_metric_0d_inputs_match_keras(name):
    keras = _keras()
    t, p = np.float32(1.0), np.float32(0.3)
    m, k = getattr(metrics, name)(), getattr(keras.metrics, name)()
    m.update_state(t, p)
    k.update_state(t, p)
    np.testing.assert_allclose(float(m.result()), float(k.result()), rtol=1e-5, atol=1e-6)


def test_categorical_crossentropy_0d_raises_valueerror():
    with pytest.raises(ValueError, match="categorical_crossentropy"):
        losses.CategoricalCrossentropy()(np.float32(1.0), np.float32(0.3))
