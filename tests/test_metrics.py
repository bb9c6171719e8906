"""Metrics against NumPy and scikit-learn references, with sample weights, several batches and reset."""
import numpy as np
import pytest

import lamina
from lamina import metrics
from lazy_modules import lazy_module  # tests/lazy_modules.py

R = np.random.default_rng(3)
sk = lazy_module("sklearn.metrics")


def batches(metric, y_true, y_pred, sample_weight=None, n=3):
    """Feed in n batches (as Tensors for the predictions, to cover both input kinds)."""
    idx = np.array_split(np.arange(len(y_true)), n)
    for i in idx:
        sw = None if sample_weight is None else sample_weight[i]
        metric.update_state(y_true[i], lamina.Tensor(y_pred[i]), sample_weight=sw)
    return metric.result()


def probs(n, c):
    p = R.random((n, c)) + 0.01
    return (p / p.sum(1, keepdims=True)).astype(np.float32)


def test_sparse_categorical_accuracy_weighted():
    y = R.integers(0, 4, 30)
    p = probs(30, 4)
    w = R.random(30)
    hit = (p.argmax(1) == y).astype(float)
    m = metrics.SparseCategoricalAccuracy()
    assert batches(m, y, p) == pytest.approx(hit.mean())
    m.reset_state()
    assert m.result() == 0.0
    assert batches(m, y[:, None], p, w) == pytest.approx((hit * w).sum() / w.sum())


def test_categorical_and_binary_accuracy():
    y = R.integers(0, 5, 40)
    p = probs(40, 5)
    onehot = np.eye(5, dtype=np.float32)[y]
    assert batches(metrics.CategoricalAccuracy(), onehot, p) == pytest.approx((p.argmax(1) == y).mean())
    yb = R.integers(0, 2, (40, 3)).astype(np.float32)
    pb = R.random((40, 3)).astype(np.float32)
    for thr in (0.5, 0.7):
        want = ((pb > thr) == yb).mean(axis=1).mean()
        assert batches(metrics.BinaryAccuracy(threshold=thr), yb, pb) == pytest.approx(want)
    # (N,) labels with (N, 1) predictions: squeezed to the same rank as Keras does
    assert metrics.BinaryAccuracy()(yb[:, 0], pb[:, :1]) == pytest.approx(((pb[:, 0] > 0.5) == yb[:, 0]).mean())
    assert metrics.Accuracy()(np.array([1, 2, 3]), np.array([1, 2, 4])) == pytest.approx(2 / 3)


def test_top_k():
    y = R.integers(0, 6, 50)
    p = probs(50, 6)
    for k in (1, 2, 3):
        want = np.mean([y[i] in np.argsort(-p[i])[:k] for i in range(50)])
        assert batches(metrics.SparseTopKCategoricalAccuracy(k=k), y, p) == pytest.approx(want)
        assert batches(metrics.TopKCategoricalAccuracy(k=k), np.eye(6)[y], p) == pytest.approx(want)
        assert want == pytest.approx(sk.top_k_accuracy_score(y, p, k=k, labels=range(6)))


def test_regression_metrics_weighted():
    t = R.standard_normal((20, 3))
    p = R.standard_normal((20, 3))
    w = R.random(20)
    mse = ((p - t) ** 2).mean(1)
    mae = np.abs(p - t).mean(1)
    assert batches(metrics.MeanSquaredError(), t, p, w) == pytest.approx((mse * w).sum() / w.sum())
    assert batches(metrics.MeanAbsoluteError(), t, p, w) == pytest.approx((mae * w).sum() / w.sum())
    assert batches(metrics.RootMeanSquaredError(), t, p, w) == pytest.approx(np.sqrt((mse * w).sum() / w.sum()))
    assert batches(metrics.MeanSquaredError(), t, p) == pytest.approx(sk.mean_squared_error(t, p))
    assert batches(metrics.MeanAbsoluteError(), t, p) == pytest.approx(sk.mean_absolute_error(t, p))


def test_mean_and_sum():
    m = metrics.Mean()
    m.update_state([1.0, 2.0, 3.0])
    m.update_state(np.array([[4.0, 6.0]]), sample_weight=[2.0])     # per-sample mean 5, weight 2
    assert m.result() == pytest.approx((1 + 2 + 3 + 2 * 5) / 5)
    s = metrics.Sum()
    s.update_state([1.0, 2.0], sample_weight=[3.0, 0.5])
    assert s.result() == pytest.approx(4.0)


@pytest.mark.parametrize("thresholds", [None, 0.3, [0.2, 0.5, 0.8]])
def test_precision_recall_vs_sklearn(thresholds):
    y = R.integers(0, 2, 60)
    p = R.random(60)
    w = R.random(60)
    P = metrics.Precision(thresholds=thresholds)
    Rc = metrics.Recall(thresholds=thresholds)
    got_p, got_r = batches(P, y, p, w), batches(Rc, y, p, w)
    ths = [0.5] if thresholds is None else np.atleast_1d(thresholds)
    want_p = [sk.precision_score(y, p > t, sample_weight=w) for t in ths]
    want_r = [sk.recall_score(y, p > t, sample_weight=w) for t in ths]
    # result() is a float32 tensor, as Keras's: 0-d for one threshold, one value per threshold for a list
    np.testing.assert_allclose(np.atleast_1d(got_p), want_p, rtol=1e-6)
    np.testing.assert_allclose(np.atleast_1d(got_r), want_r, rtol=1e-6)
    assert np.ndim(got_p) == (1 if isinstance(thresholds, list) else 0) and got_p.dtype == np.float32


def test_precision_class_id_and_top_k():
    y = np.eye(4)[R.integers(0, 4, 30)]
    p = probs(30, 4)
    got = metrics.Precision(class_id=2)(y, p)
    assert got == pytest.approx(sk.precision_score(y[:, 2], p[:, 2] > 0.5, zero_division=0))
    # top_k=1: the argmax is the prediction
    got = metrics.Precision(top_k=1)(y, p)
    pred = np.eye(4)[p.argmax(1)]
    assert got == pytest.approx((pred * y).sum() / pred.sum())
    got = metrics.Recall(top_k=2)(y, p)
    top2 = np.argsort(-p, axis=1)[:, :2]
    assert got == pytest.approx(np.mean([y[i].argmax() in top2[i] for i in range(30)]))


def keras_auc_reference(y, p, w, T=200, curve="ROC"):
    """Slow NumPy reference: counts by a loop over thresholds, then Keras's summation."""
    ths = np.array([-1e-7] + [(i + 1) / (T - 1) for i in range(T - 2)] + [1 + 1e-7])
    tp = np.array([(w * (y == 1) * (p > t)).sum() for t in ths])
    fp = np.array([(w * (y == 0) * (p > t)).sum() for t in ths])
    fn = np.array([(w * (y == 1) * (p <= t)).sum() for t in ths])
    tn = np.array([(w * (y == 0) * (p <= t)).sum() for t in ths])
    div = lambda a, b: np.where(b > 0, a / np.where(b > 0, b, 1), 0.0)  # noqa: E731
    if curve == "ROC":
        x, yy = div(fp, fp + tn), div(tp, tp + fn)
        return float(((x[:-1] - x[1:]) * (yy[:-1] + yy[1:]) / 2).sum())
    dtp = tp[:-1] - tp[1:]
    pp = tp + fp
    dp = pp[:-1] - pp[1:]
    slope = div(dtp, np.maximum(dp, 0))
    icpt = tp[1:] - slope * pp[1:]
    ratio = np.where((pp[:-1] > 0) & (pp[1:] > 0), div(pp[:-1], np.maximum(pp[1:], 0)), 1.0)
    return float(div(slope * (dtp + icpt * np.log(ratio)), np.maximum(tp[1:] + fn[1:], 0)).sum())


@pytest.mark.parametrize("curve", ["ROC", "PR"])
def test_auc_vs_keras_reference(curve):
    y = R.integers(0, 2, 80)
    p = R.random(80)
    w = R.random(80)
    got = batches(metrics.AUC(curve=curve), y, p, w)
    assert got == pytest.approx(keras_auc_reference(y, p, w, curve=curve), rel=1e-9)


def test_auc_roc_equals_sklearn_on_grid_scores():
    # scores between threshold grid points: the 200-bucket approximation is exact there
    T = 200
    y = R.integers(0, 2, 100)
    p = (R.integers(0, T - 1, 100) + 0.5) / (T - 1)
    w = R.random(100)
    assert batches(metrics.AUC(), y, p, w) == pytest.approx(sk.roc_auc_score(y, p, sample_weight=w), rel=1e-9)


def test_auc_multi_label_and_reset():
    y = R.integers(0, 2, (50, 3))
    p = (R.integers(0, 199, (50, 3)) + 0.5) / 199
    m = metrics.AUC(multi_label=True)
    got = batches(m, y, p)
    assert got == pytest.approx(np.mean([sk.roc_auc_score(y[:, j], p[:, j]) for j in range(3)]))
    m.reset_state()
    assert m.result() == 0.0


@pytest.mark.parametrize("average", [None, "micro", "macro", "weighted"])
def test_f1_vs_sklearn(average):
    y = R.integers(0, 4, 60)
    onehot = np.eye(4)[y]
    p = probs(60, 4)
    got = batches(metrics.F1Score(average=average), onehot, p)
    want = sk.f1_score(y, p.argmax(1), average=average, labels=range(4), zero_division=0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_f1_threshold_multilabel():
    y = R.integers(0, 2, (40, 3)).astype(float)
    p = R.random((40, 3))
    got = metrics.F1Score(average="macro", threshold=0.4)(y, p)
    assert got == pytest.approx(sk.f1_score(y, p > 0.4, average="macro", zero_division=0), rel=1e-5)


def test_mean_iou_vs_reference():
    t = R.integers(0, 3, (4, 5, 5))
    p = R.integers(0, 3, (4, 5, 5))
    m = metrics.MeanIoU(num_classes=3)
    got = batches(m, t, p, n=2)
    ious = [((t == c) & (p == c)).sum() / ((t == c) | (p == c)).sum() for c in range(3)]
    assert got == pytest.approx(np.mean(ious))
    assert got == pytest.approx(sk.jaccard_score(t.ravel(), p.ravel(), average="macro"))
    probs_pred = np.eye(3)[p] * 0.9 + 0.01
    assert metrics.MeanIoU(3, sparse_y_pred=False)(t, probs_pred) == pytest.approx(np.mean(ious))


def test_get_names_and_errors():
    assert isinstance(metrics.get("mse"), metrics.MeanSquaredError)
    assert isinstance(metrics.get("auc"), metrics.AUC)
    assert isinstance(metrics.get("sparse_categorical_accuracy"), metrics.SparseCategoricalAccuracy)
    assert isinstance(metrics.get("Precision"), metrics.Precision)
    assert metrics.get("mae").name == "mean_absolute_error"
    with pytest.raises(ValueError, match="Valid names"):
        metrics.get("acuracy")
    with pytest.raises(ValueError, match="chosen from the loss"):
        metrics.get("acc")
    assert isinstance(metrics.get("accuracy"), metrics.Accuracy)   # as Keras's get (compile chooses its own)
    fn = metrics.get(lambda t, p: np.abs(t - p).max(axis=-1))
    assert fn(np.zeros((2, 2)), np.array([[1.0, 3.0], [2.0, 0.0]])) == pytest.approx(2.5)


@pytest.mark.parametrize("m", [metrics.BinaryAccuracy(threshold=0.3), metrics.TopKCategoricalAccuracy(k=2),
                               metrics.Precision(thresholds=[0.1, 0.5], class_id=1), metrics.AUC(curve="PR"),
                               metrics.F1Score(average="macro", threshold=0.5), metrics.MeanIoU(4, ignore_class=0)])
def test_config_round_trip(m):
    clone = metrics.deserialize(lamina.registry.serialize(m))
    assert type(clone) is type(m) and clone.get_config() == m.get_config()


def test_metric_add_variable_checks_its_aggregation():
    """Keras's aggregations are accepted (data-parallel training sums 'sum' variables over the ranks,
    tests/test_distributed.py); anything else is refused with the valid names."""
    m = lamina.metrics.Mean()
    for agg in ("sum", "mean", "none", "only_first_replica"):
        assert m.add_variable((2,), "zeros", aggregation=agg)._metric_aggregation == agg
    with pytest.raises(ValueError, match="aggregation must be"):
        m.add_variable((2,), "zeros", aggregation="max")


def test_the_training_loop_reads_results_without_making_tensors():
    """result() gives a Tensor, as Keras (tests/test_keras_programs_text.py); the loop logs Python floats every
    step, so it takes the value result() computes (metrics.result_value) with no Tensor made on the way:
    the same number, and a user's override that returns a Tensor or a dict is taken as it is."""
    m = metrics.Mean()
    m.update_state([1.0, 2.0, 4.0])
    assert isinstance(m.result(), lamina.Tensor)
    assert not isinstance(metrics.result_value(m), lamina.Tensor)
    assert float(metrics.result_value(m)) == float(m.result())   # the same float32 number

    class Both(metrics.Metric):
        def update_state(self, *args):
            pass

        def result(self):
            return {"a": 1.0, "b": lamina.Tensor(np.float32(2.0))}
    assert metrics.result_value(Both()) == Both().result()


def test_mean_of_python_numbers_matches_the_array_path_to_the_bit():
    """Mean.update_state of one Python float (fit's loss tracker, weighted by the batch size) keeps the same total
    and count as the same number given as an array, with and without a weight, over many updates."""
    rng = np.random.default_rng(0)
    fast, slow = metrics.Mean(), metrics.Mean()
    for i in range(200):
        v = float(rng.standard_normal() * 10.0 ** rng.integers(-3, 4))
        w = [None, int(rng.integers(1, 100)), float(rng.random())][i % 3]
        fast.update_state(v, sample_weight=w)
        slow.update_state(np.array([v]), sample_weight=None if w is None else np.array([w]))
    assert (fast.total, fast.count) == (slow.total, slow.count)
    assert float(fast.result()) == float(slow.result())
