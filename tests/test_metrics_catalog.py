"""The Keras 3.15 metric catalog beyond the core metrics, against real Keras (torch backend): the same
batches (with sample weights) give the same results; configs equal Keras's and round-trip; Keras's
positional order (name first) for the mean-wrapped metrics."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")

from lamina import metrics  # noqa: E402

rng = np.random.default_rng(5)
B, C = 16, 4
P = rng.uniform(0.02, 1.0, (B, C)).astype(np.float32)
P /= P.sum(-1, keepdims=True)
ONEHOT = np.eye(C, dtype=np.float32)[rng.integers(0, C, B)]
YB = rng.integers(0, 2, (B, 1)).astype(np.float32)
SB = rng.uniform(0.001, 0.999, (B, 1)).astype(np.float32)
YR = rng.normal(size=(B, 3)).astype(np.float32)
PR = (YR + rng.normal(scale=0.7, size=(B, 3))).astype(np.float32)
YPOS = rng.uniform(0.1, 3, (B, C)).astype(np.float32)
LOGITS = rng.normal(size=(B, C)).astype(np.float32)
SEG_T = rng.integers(0, 3, (B, 5))
SEG_P = np.where(rng.random((B, 5)) < 0.6, SEG_T, rng.integers(0, 3, (B, 5)))
SW = rng.uniform(0.1, 2.0, B).astype(np.float32)

CASES = [
    ("KLDivergence", {}, ONEHOT * 0.8 + 0.05, P),
    ("Poisson", {}, YPOS, P + 0.1),
    ("SquaredHinge", {}, YB, SB * 2 - 1),
    ("CategoricalHinge", {}, ONEHOT, LOGITS),
    ("PearsonCorrelation", {}, YR, PR),
    ("ConcordanceCorrelation", {}, YR, PR),
    ("PearsonCorrelation", {"axis": 0}, YR, PR),
    ("R2Score", {}, YR, PR),
    ("R2Score", {"class_aggregation": "variance_weighted_average"}, YR, PR),
    ("R2Score", {"class_aggregation": None}, YR, PR),
    ("R2Score", {"num_regressors": 2}, YR, PR),
    ("SensitivityAtSpecificity", {"specificity": 0.6}, YB, SB),
    ("SpecificityAtSensitivity", {"sensitivity": 0.4, "num_thresholds": 50}, YB, SB),
    ("PrecisionAtRecall", {"recall": 0.5}, YB, SB),
    ("RecallAtPrecision", {"precision": 0.6, "num_thresholds": 30}, YB, SB),
    ("PrecisionAtRecall", {"recall": 0.5, "class_id": 2}, ONEHOT, P),
    ("IoU", {"num_classes": 3, "target_class_ids": [0, 2]}, SEG_T, SEG_P),
    ("BinaryIoU", {}, YB, SB),
    ("BinaryIoU", {"target_class_ids": [1], "threshold": 0.3}, YB, SB),
    ("OneHotIoU", {"num_classes": C, "target_class_ids": [1, 3]}, ONEHOT, P),
    ("OneHotMeanIoU", {"num_classes": C}, ONEHOT, P),
    ("CategoricalCrossentropy", {"axis": 0}, ONEHOT, P),
    ("SparseCategoricalCrossentropy", {"ignore_class": 1}, ONEHOT.argmax(-1), P),
]


def _k(x):
    return np.asarray(keras.ops.convert_to_numpy(x), np.float64)


@pytest.mark.parametrize("name,kw,t,p", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_metric_matches_keras(name, kw, t, p):
    ours, ref = getattr(metrics, name)(**kw), getattr(keras.metrics, name)(**kw)
    weighted = name not in ("IoU", "OneHotIoU", "OneHotMeanIoU", "BinaryIoU")  # Keras casts their weights to int;
    weighted = weighted and kw.get("axis", -1) != 0   # axis=0 reduces over the batch: no per-sample weights
    half = len(t) // 2
    for sl in (slice(0, half), slice(half, None)):  # two updates: the state accumulates
        sw = SW[sl] if weighted else None
        ours.update_state(t[sl], p[sl], sample_weight=sw)
        ref.update_state(t[sl], p[sl], sample_weight=sw)
    np.testing.assert_allclose(np.asarray(ours.result(), np.float64), _k(ref.result()), rtol=2e-5, atol=2e-6)
    # Keras makes default names unique per session (precision_at_recall_1); the rest must be equal
    assert {k: v for k, v in ours.get_config().items() if k != "name"} == \
        {k: v for k, v in ref.get_config().items() if k != "name"}
    again = metrics.deserialize(metrics.serialize(ours))
    assert type(again) is type(ours) and again.get_config() == ours.get_config()
    ours.reset_state()
    ours.update_state(t, p)
    ref.reset_state()
    ref.update_state(t, p)
    np.testing.assert_allclose(np.asarray(ours.result(), np.float64), _k(ref.result()), rtol=2e-5, atol=2e-6)


@pytest.mark.parametrize("name", ["kl_divergence", "poisson", "squared_hinge", "categorical_hinge", "huber",
                                  "binary_focal_crossentropy", "categorical_focal_crossentropy",
                                  "pearson_correlation", "concordance_correlation"])
def test_metric_functions_match_keras(name):
    t, p = (ONEHOT, P) if "categorical" in name or name == "kl_divergence" else (YPOS, P + 0.1)
    if name == "binary_focal_crossentropy":
        t = (YPOS > 1).astype(np.float32)
    ref = _k(getattr(keras.metrics, name)(keras.ops.convert_to_tensor(t), keras.ops.convert_to_tensor(p)))
    np.testing.assert_allclose(getattr(metrics, name)(t, p), ref, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["BinaryAccuracy", "SparseCategoricalAccuracy", "CategoricalAccuracy", "Accuracy",
                                  "MeanSquaredError", "BinaryCrossentropy", "CategoricalCrossentropy",
                                  "CosineSimilarity", "KLDivergence", "PearsonCorrelation"])
def test_first_positional_argument_is_the_name(name):
    m = getattr(metrics, name)("acc")
    assert m.name == "acc" and m.get_config() == getattr(keras.metrics, name)("acc").get_config()


def test_binary_accuracy_threshold_is_keyword_and_top_k_takes_k_first():
    m = metrics.BinaryAccuracy("acc", None, 0.7)
    assert m.get_config()["threshold"] == 0.7
    m = metrics.TopKCategoricalAccuracy(2, "top2")
    assert m.get_config() == keras.metrics.TopKCategoricalAccuracy(2, "top2").get_config()
    with pytest.raises(TypeError):
        metrics.BinaryAccuracy("acc", None, 0.5, 1)


def test_new_metrics_by_name_in_compile():
    import lamina
    model = lamina.Sequential([lamina.layers.Input((3,)), lamina.layers.Dense(3)])
    model.compile(optimizer="sgd", loss="mse", metrics=[metrics.R2Score(), "pearson_correlation"])
    h = model.fit(YR, PR, epochs=1, verbose=0)
    assert "r2_score" in h.history and "pearson_correlation" in h.history


def test_get_finds_every_name_keras_get_finds():
    """metrics.get and losses.get resolve each identifier in Keras's own lookup tables to the same kind of object
    ('accuracy' -> Accuracy, 'mean', 'log_cosh_error', 'binary_io_u', 'bce' ...); once only a hand list was known.
    (The base class 'Metric' is left out: an abstract metric is no use.)"""
    from keras.src.losses import ALL_OBJECTS_DICT as KERAS_LOSSES
    from keras.src.metrics import ALL_OBJECTS_DICT as KERAS_METRICS

    import lamina
    checked = 0
    for name in sorted(KERAS_METRICS):
        if name.lower() == "metric":
            continue
        try:
            theirs = type(keras.metrics.get(name)).__name__
        except (TypeError, ValueError):   # a class that needs arguments (IoU(num_classes, ...)): Keras fails too
            with pytest.raises((TypeError, ValueError)):
                metrics.get(name)
            continue
        assert type(metrics.get(name)).__name__ == theirs, name
        checked += 1
    assert checked > 60
    for name in sorted(KERAS_LOSSES):
        if name in ("Loss", "loss", "LossFunctionWrapper", "loss_function_wrapper"):
            continue
        theirs, ours = keras.losses.get(name), lamina.losses.get(name)
        assert getattr(ours, "__name__", type(ours).__name__) == getattr(theirs, "__name__", type(theirs).__name__), name


@pytest.mark.parametrize("module", ["activations", "initializers", "regularizers", "constraints"])
def test_other_lookups_find_every_name_keras_finds(module):
    """activations/initializers/regularizers/constraints.get resolve each name in Keras's table to the same kind of
    object ('one', 'zero' and 'l1l2' were missing). Base classes are left out; lamina's Constant() takes a
    default value where Keras's needs one."""
    import importlib

    import lamina
    table = importlib.import_module(f"keras.src.{module}").ALL_OBJECTS_DICT
    for name in sorted(table):
        if name.lower() in ("initializer", "regularizer", "constraint", "constant"):
            continue
        theirs, ours = getattr(keras, module).get(name), getattr(lamina, module).get(name)
        assert getattr(ours, "__name__", type(ours).__name__) == getattr(theirs, "__name__", type(theirs).__name__), name
