"""Loss classes and functions against NumPy references of Keras's formulas; reductions, weights, get()."""
import numpy as np
import pytest

import lamina
from lamina import losses

EPS = 1e-7
rng = np.random.default_rng(0)
P = rng.random((6, 4)).astype(np.float32) + 0.05
P /= P.sum(-1, keepdims=True)
LOGITS = rng.normal(size=(6, 4)).astype(np.float32)
LABELS = rng.integers(0, 4, 6)
ONEHOT = np.eye(4, dtype=np.float32)[LABELS]
YR = rng.normal(size=(6, 3)).astype(np.float32)
PR = rng.normal(size=(6, 3)).astype(np.float32)
YB = rng.integers(0, 2, (6, 1)).astype(np.float32)
PB = rng.uniform(0.05, 0.95, (6, 1)).astype(np.float32)


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def _huber(t, p, d=1.0):
    e = np.abs(t - p)
    return np.where(e <= d, 0.5 * e ** 2, d * (e - 0.5 * d)).mean(-1)


CASES = [
    (losses.SparseCategoricalCrossentropy(), LABELS, P, -np.log(np.clip(P[np.arange(6), LABELS], EPS, 1 - EPS))),
    (losses.SparseCategoricalCrossentropy(from_logits=True), LABELS, LOGITS,
     -_log_softmax(LOGITS)[np.arange(6), LABELS]),
    (losses.CategoricalCrossentropy(), ONEHOT, P, -(ONEHOT * np.log(np.clip(P, EPS, 1 - EPS))).sum(-1)),
    (losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1), ONEHOT, LOGITS,
     -((ONEHOT * 0.9 + 0.1 / 4) * _log_softmax(LOGITS)).sum(-1)),
    (losses.BinaryCrossentropy(), YB, PB, -(YB * np.log(PB) + (1 - YB) * np.log(1 - PB)).mean(-1)),
    (losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.2), YB, LOGITS[:, :1],
     (lambda t, z: (np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))).mean(-1))(YB * 0.8 + 0.1, LOGITS[:, :1])),
    (losses.MeanSquaredError(), YR, PR, ((YR - PR) ** 2).mean(-1)),
    (losses.MeanAbsoluteError(), YR, PR, np.abs(YR - PR).mean(-1)),
    (losses.Huber(delta=0.5), YR, PR, _huber(YR, PR, 0.5)),
    (losses.KLDivergence(), ONEHOT * 0.7 + 0.075, P,
     (lambda t, p: (t * np.log(t / p)).sum(-1))(ONEHOT * 0.7 + 0.075, np.clip(P, EPS, 1))),
]


@pytest.mark.parametrize("loss,y_true,y_pred,per_sample", CASES, ids=lambda c: getattr(c, "name", ""))
def test_loss_classes_match_numpy(loss, y_true, y_pred, per_sample):
    np.testing.assert_allclose(loss(y_true, y_pred).numpy(), per_sample.mean(), rtol=1e-5)
    sw = np.linspace(0.0, 2.0, 6).astype(np.float32)
    np.testing.assert_allclose(loss(y_true, y_pred, sample_weight=sw).numpy(), (per_sample * sw).mean(), rtol=1e-5)
    loss.reduction = "sum"
    np.testing.assert_allclose(loss(y_true, y_pred, sample_weight=sw).numpy(), (per_sample * sw).sum(), rtol=1e-5)
    loss.reduction = "none"
    np.testing.assert_allclose(loss(y_true, y_pred).numpy(), per_sample, rtol=1e-5)
    loss.reduction = "mean_with_sample_weight"
    np.testing.assert_allclose(loss(y_true, y_pred, sample_weight=sw).numpy(),
                               (per_sample * sw).sum() / sw.sum(), rtol=1e-5)
    loss.reduction = "sum_over_batch_size"


def test_function_aliases_and_get():
    per = losses.mse(YR, PR).numpy()
    np.testing.assert_allclose(per, ((YR - PR) ** 2).mean(-1), rtol=1e-6)
    assert losses.get("mse") is losses.mean_squared_error
    assert losses.get("MAE") is losses.mean_absolute_error
    assert isinstance(losses.get("BinaryCrossentropy"), losses.BinaryCrossentropy)
    obj = losses.get({"class_name": "Huber", "config": {"delta": 2.0}})
    assert isinstance(obj, losses.Huber) and obj.get_config()["delta"] == 2.0
    with pytest.raises(ValueError, match="Valid names: .*mean_squared_error"):
        losses.get("nope")
    with pytest.raises(ValueError, match="reduction"):
        losses.MeanSquaredError(reduction="average")


def test_rank_alignment_and_gradient():
    # (N,) targets against (N, 1) predictions: Keras aligns the ranks
    t = np.array([0.0, 1.0, 1.0], np.float32)
    p = lamina.Tensor(np.array([[0.2], [0.7], [0.9]], np.float32), requires_grad=True)
    loss = losses.BinaryCrossentropy()(t, p)
    loss.backward()
    ref = -(t * np.log(p.numpy()[:, 0]) + (1 - t) * np.log(1 - p.numpy()[:, 0])).mean()
    assert np.isclose(loss.numpy(), ref, rtol=1e-5)
    expected = (-(t / p.numpy()[:, 0]) + (1 - t) / (1 - p.numpy()[:, 0])) / 3
    np.testing.assert_allclose(np.asarray(p.grad)[:, 0], expected, rtol=1e-4)


def test_focal_crossentropy_aligns_ranks_as_binary_crossentropy():
    """binary_focal_crossentropy takes (N, 1) against (N, 1, 1) targets per sample, as binary_crossentropy does
    (it once broadcast them to (N, N))."""
    r = np.random.default_rng(3)
    yt, yp = r.integers(0, 2, (5, 1)).astype("float32"), r.random((5, 1)).astype("float32")
    a = losses.binary_focal_crossentropy(yt, yp).numpy()
    b = losses.binary_focal_crossentropy(yt[:, :, None], yp).numpy()
    assert a.shape == b.shape == (5,)
    np.testing.assert_allclose(a, b)


def test_wrong_targets_raise_helpful_errors():
    with pytest.raises(ValueError, match="sparse_categorical_crossentropy"):
        losses.CategoricalCrossentropy()(LABELS, P)
    with pytest.raises(ValueError, match="categorical_crossentropy"):
        losses.SparseCategoricalCrossentropy()(ONEHOT, P)


def test_mask_on_predictions_averages_over_valid_entries():
    p = lamina.Tensor(PR)
    p._keras_mask = np.array([True, True, False, True, False, True])
    value = losses.MeanSquaredError()(YR, p).numpy()
    per = ((YR - PR) ** 2).mean(-1)
    assert np.isclose(value, per[p._keras_mask].mean(), rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "mean"])
def test_a_mean_reduction_is_the_sum_over_the_size_to_the_bit(dtype, reduction):
    """The mean reductions (one op where the values are float32 / float64) give Keras's sum(values) / size and
    its gradient, 1 / size everywhere, to the bit, for batches of any length (NumPy's pairwise sums change
    their blocking at 8 and 128 values; a float16 mean would sum in float32, so float16 keeps the sum and the
    division), and a weighted mean still divides by the size, an empty batch 0."""
    from lamina import ops
    for n in (1, 7, 8, 9, 127, 129, 1000):
        values = lamina.Tensor((np.random.default_rng(n).standard_normal(n) * 10).astype(dtype), requires_grad=True)
        got = losses.reduce_weighted_values(values, reduction=reduction)
        want = ops.sum(values) / float(n)
        assert got.dtype == dtype and got.numpy().tobytes() == np.asarray(want.numpy(), dtype).tobytes()
        g = lamina.grad(got, [values])[0]
        assert np.asarray(g).tobytes() == np.asarray(lamina.grad(want, [values])[0]).tobytes()
    w = np.arange(7, dtype=dtype)
    values = lamina.Tensor(np.ones(7, dtype))
    weighted = losses.reduce_weighted_values(values, sample_weight=w, reduction=reduction)
    np.testing.assert_allclose(weighted.numpy(), w.sum() / 7, rtol=1e-3)
    empty = losses.reduce_weighted_values(lamina.Tensor(np.zeros(0, dtype)), reduction=reduction)
    assert float(empty.numpy()) == 0.0


def test_loss_objects_compute_in_floatx_unless_given_a_dtype():
    # Keras 3.15: a loss object converts both inputs to its dtype (floatx by default) before computing, so float64
    # NumPy targets and predictions give a float32 loss; the functional forms keep the inputs' dtype
    t, p = np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([[0.3, 0.7], [0.6, 0.4]])
    for loss in (lamina.losses.MeanSquaredError(), lamina.losses.CategoricalCrossentropy(), lamina.losses.Huber()):
        assert loss.dtype == "float32"
        out = loss(t, p)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out.numpy(), loss.__class__(dtype="float64")(t, p).numpy(), rtol=1e-6)
    assert lamina.losses.MeanSquaredError(dtype="float64")(t, p).dtype == np.float64
    assert lamina.losses.mean_squared_error(t, p).dtype == np.float64
    np.testing.assert_allclose(lamina.losses.MeanSquaredError()(t, p).numpy(), np.mean((t - p) ** 2), rtol=1e-6)
    # integer class targets stay integers (sparse losses index with them)
    sp = lamina.losses.SparseCategoricalCrossentropy()(np.array([1, 0]), p)
    np.testing.assert_allclose(sp.numpy(), -np.mean(np.log([0.7, 0.6])), rtol=1e-6)


def test_deserialize_takes_keras_function_form():
    # Keras 3.15 serializes a loss function as {"class_name": "function", "config": its name, ...}
    form = {"module": "builtins", "class_name": "function", "config": "mean_absolute_error",
            "registered_name": "function"}
    assert lamina.losses.deserialize(form) is lamina.losses.mean_absolute_error
