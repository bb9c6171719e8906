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
    with pytest.raises(ValueError, match=r"shape \(2, 3\)"):
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
LOSSES_0D = ["BinaryCrossentropy", "BinaryFocalCrossentropy", "Hinge", "SquaredHinge", "MeanAbsolutePercentageError", "MeanSquaredLogarithmicError",
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


# ----- sample weights: (N,) and (N, 1) accepted as Keras does; a wrong shape a clear ValueError
def test_sum_sample_weight_per_sample_matches_keras():
    keras = _keras()
    sw = np.arange(4.0, dtype="float32")
    m, k = metrics.Sum(), keras.metrics.Sum()
    m.update_state(Y_REG, sample_weight=sw)
    k.update_state(Y_REG, sample_weight=sw)
    np.testing.assert_allclose(float(m.result()), float(k.result()), rtol=1e-5)


def test_mean_iou_sample_weight_n1_matches_keras():
    keras = _keras()
    t, p, sw = np.array([0, 1, 2, 1]), np.array([0, 1, 1, 1]), np.ones((4, 1), "float32")
    m, k = metrics.MeanIoU(num_classes=3), keras.metrics.MeanIoU(num_classes=3)
    m.update_state(t, p, sample_weight=sw)
    k.update_state(t, p, sample_weight=sw)
    np.testing.assert_allclose(float(m.result()), float(k.result()), rtol=1e-5)


BAD_SW = [
    ("Sum", lambda m: m.update_state(Y_REG, sample_weight=np.ones(5))),
    ("Mean", lambda m: m.update_state(Y_REG, sample_weight=np.ones(5))),
    ("MeanIoU", lambda m: m.update_state(np.array([0, 1, 2, 1]), np.array([0, 1, 1, 1]), sample_weight=np.ones(5))),
    ("Precision", lambda m: m.update_state(Y_REG > 0, PROBS, sample_weight=np.ones(5))),
    ("AUC", lambda m: m.update_state(Y_REG > 0, PROBS, sample_weight=np.ones(5))),
    ("F1Score", lambda m: m.update_state(np.eye(3)[[0, 1, 2, 1]], PROBS, sample_weight=np.ones(5))),
    ("R2Score", lambda m: m.update_state(Y_REG, Y_REG, sample_weight=np.ones(5))),
    ("MeanSquaredError", lambda m: m.update_state(Y_REG, Y_REG, sample_weight=np.ones(5))),
]


@pytest.mark.parametrize("name,update", BAD_SW, ids=[b[0] for b in BAD_SW])
def test_metric_wrong_sample_weight_shape_says_so(name, update):
    kwargs = {"num_classes": 3} if name == "MeanIoU" else {}
    with pytest.raises(ValueError, match=r"sample_weight.*\(5"):
        update(getattr(metrics, name)(**kwargs))


@pytest.mark.parametrize("name", ["MeanSquaredError", "BinaryCrossentropy", "Huber", "SparseCategoricalCrossentropy"])
def test_loss_wrong_sample_weight_shape_says_so(name):
    y_true = np.array([0, 1, 2, 1]) if name.startswith("Sparse") else (Y_REG > 0).astype("float32")
    y_pred = PROBS
    with pytest.raises(ValueError, match=r"sample_weight of shape \(5,\)"):
        getattr(losses, name)()(y_true, y_pred, sample_weight=np.ones(5, "float32"))


# ----- mismatched y_true / y_pred shapes: a ValueError naming both shapes, not NumPy's broadcast message
MISMATCH = [(Y_REG[:2], Y_REG), (Y_REG, np.concatenate([Y_REG, Y_REG], -1))]


@pytest.mark.parametrize("name", ["MeanSquaredError", "MeanAbsoluteError", "Huber", "Hinge", "KLDivergence",
                                  "CosineSimilarity", "BinaryCrossentropy"])
@pytest.mark.parametrize("pair", [0, 1], ids=["batch", "width"])
def test_loss_mismatched_shapes_name_both(name, pair):
    t, p = MISMATCH[pair]
    with pytest.raises(ValueError, match=r"y_true of shape .* and y_pred of shape"):
        getattr(losses, name)()(np.abs(t) / 4, np.clip(np.abs(p) / 4, 0.01, 0.99))


@pytest.mark.parametrize("name", ["Accuracy", "BinaryAccuracy", "MeanSquaredError", "MeanAbsoluteError",
                                  "R2Score", "RootMeanSquaredError", "Precision", "Recall", "AUC"])
@pytest.mark.parametrize("pair", [0, 1], ids=["batch", "width"])
def test_metric_mismatched_shapes_name_both(name, pair):
    t, p = MISMATCH[pair]
    with pytest.raises(ValueError, match=r"y_true.*shape.*y_pred.*shape|same shape"):
        getattr(metrics, name)().update_state((t > 0).astype("float32"), np.clip(np.abs(p) / 4, 0, 1))


@pytest.mark.parametrize("name", ["MeanIoU", "SparseCategoricalAccuracy"])
def test_label_metric_mismatched_batch_raises_valueerror(name):
    m = metrics.MeanIoU(num_classes=3) if name == "MeanIoU" else metrics.SparseCategoricalAccuracy()
    y_pred = np.array([0, 1, 1, 1]) if name == "MeanIoU" else PROBS
    with pytest.raises(ValueError, match=r"y_true of shape \(2,\)"):
        m.update_state(np.array([0, 1]), y_pred)


# ----- F1Score: reset keeps one score per class, as Keras's variables do
def test_f1_score_reset_keeps_per_class_shape():
    m = metrics.F1Score()
    m.update_state(np.eye(3, dtype="float32")[[0, 1, 2, 1]], PROBS)
    m.reset_state()
    result = np.asarray(m.result())
    assert result.shape == (3,) and not result.any()


# ----- categorical_generalized_cross_entropy: integer labels checked, as the other sparse losses
@pytest.mark.parametrize("labels", [[0, 1, 3, 1], [0, 1, -1, 1], [0.0, 1.0, np.nan, 1.0], [[0, 1, 2], [1, 2, 0]]],
                         ids=["too_high", "negative", "nan", "wrong_shape"])
def test_categorical_generalized_cross_entropy_bad_labels(labels):
    with pytest.raises(ValueError, match="categorical_generalized_cross_entropy"):
        losses.CategoricalGeneralizedCrossEntropy()(np.asarray(labels), PROBS)


def test_categorical_generalized_cross_entropy_matches_keras():
    keras = _keras()
    labels = np.array([0, 1, 2, 1])
    got = float(losses.CategoricalGeneralizedCrossEntropy()(labels, PROBS))
    assert got == pytest.approx(float(keras.losses.CategoricalGeneralizedCrossEntropy()(labels, PROBS)), rel=1e-5)


def test_squeeze_axis_out_of_bounds_raises_valueerror():
    with pytest.raises(ValueError, match="out of bounds"):
        lamina.ops.squeeze(np.float32(1.0), -1)


# ----- what Keras accepts with differing shapes stays accepted: argmax/label metrics and broadcasting
ACCEPTED = [
    ("SparseCategoricalAccuracy", np.array([0, 1, 2, 1]), PROBS[0]),              # one score row, four labels
    ("CategoricalAccuracy", np.eye(3, dtype="float32")[[0, 1, 2, 1]], np.concatenate([PROBS, PROBS], -1)),
    ("RootMeanSquaredError", Y_REG, Y_REG[..., None, None]),
]


@pytest.mark.parametrize("name,y_true,y_pred", ACCEPTED, ids=[a[0] for a in ACCEPTED])
def test_metric_broadcasting_inputs_match_keras(name, y_true, y_pred):
    keras = _keras()
    m, k = getattr(metrics, name)(), getattr(keras.metrics, name)()
    m.update_state(y_true, y_pred)
    k.update_state(y_true, y_pred)
    np.testing.assert_allclose(float(m.result()), float(k.result()), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["BinaryCrossentropy", "BinaryFocalCrossentropy"])
def test_binary_crossentropies_refuse_shapes_keras_refuses(name):
    # (4, 3) against (4, 3, 1, 1) broadcast silently to (4, 3, 4, 3); Keras refuses it with this message
    y_true, y_pred = (Y_REG > 0).astype("float32"), PROBS[..., None, None]
    with pytest.raises(ValueError, match="`target` and `output` must have the same shape"):
        getattr(losses, name)()(y_true, y_pred)


@pytest.mark.parametrize("name", ["Dice", "Tversky", "CategoricalFocalCrossentropy"])
@pytest.mark.parametrize("pair", [0, 1], ids=["batch", "width"])
def test_more_losses_mismatched_shapes_name_both(name, pair):
    t, p = MISMATCH[pair]
    with pytest.raises(ValueError, match=r"y_true of shape .* and y_pred of shape"):
        getattr(losses, name)()((t > 0).astype("float32"), np.clip(np.abs(p) / 4, 0.01, 0.99))


def test_categorical_accuracy_mismatched_batch_names_both():
    with pytest.raises(ValueError, match="categorical_accuracy"):
        metrics.CategoricalAccuracy().update_state(np.eye(3, dtype="float32")[[0, 1]], PROBS)
