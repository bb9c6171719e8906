"""The Keras 3.15 loss catalog beyond the core losses: each function and class against real Keras (torch
backend) on the same inputs, with sample weights and reductions; configs equal Keras's and round-trip;
gradients through the new losses against central differences."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")

from lamina import losses  # noqa: E402
from lamina.testing import check_grad  # noqa: E402
import lamina  # noqa: E402

rng = np.random.default_rng(3)
B, C = 6, 4
P = rng.uniform(0.05, 1.0, (B, C)).astype(np.float32)
P /= P.sum(-1, keepdims=True)
ONEHOT = np.eye(C, dtype=np.float32)[rng.integers(0, C, B)]
LABELS = rng.integers(0, C, B)
YB = rng.integers(0, 2, (B, C)).astype(np.float32)
PB = rng.uniform(0.05, 0.95, (B, C)).astype(np.float32)
YR = rng.uniform(0.1, 3, (B, C)).astype(np.float32)
PR = rng.uniform(0.1, 3, (B, C)).astype(np.float32)
LOGITS = rng.normal(size=(B, C)).astype(np.float32)
YPM = rng.choice([-1.0, 1.0], (B, C)).astype(np.float32)
EMB = rng.normal(size=(B, 5)).astype(np.float32)
EMB /= np.linalg.norm(EMB, axis=-1, keepdims=True)
EMB_LAB = np.array([0, 1, 0, 2, 1, 0])
SW = np.linspace(0.2, 2.0, B).astype(np.float32)

CASES = [  # (class name, kwargs, y_true, y_pred)
    ("MeanAbsolutePercentageError", {}, YR, PR),
    ("MeanSquaredLogarithmicError", {}, YR, PR),
    ("LogCosh", {}, YR, PR),
    ("Hinge", {}, YPM, LOGITS),
    ("Hinge", {}, YB, LOGITS),
    ("SquaredHinge", {}, YB, LOGITS),
    ("CategoricalHinge", {}, ONEHOT, LOGITS),
    ("Poisson", {}, YR, PR),
    ("BinaryFocalCrossentropy", {}, YB, PB),
    ("BinaryFocalCrossentropy", {"apply_class_balancing": True, "alpha": 0.3, "gamma": 1.5,
                                 "from_logits": True, "label_smoothing": 0.1}, YB, LOGITS),
    ("CategoricalFocalCrossentropy", {}, ONEHOT, P),
    ("CategoricalFocalCrossentropy", {"alpha": 0.5, "gamma": 3.0, "from_logits": True, "label_smoothing": 0.2},
     ONEHOT, LOGITS),
    ("CategoricalGeneralizedCrossEntropy", {"q": 0.7}, LABELS, P),
    ("CosineSimilarity", {}, YR, LOGITS),
    ("CosineSimilarity", {"axis": 0}, YR, LOGITS),
    ("Dice", {}, YB, PB),
    ("Dice", {"axis": 1}, YB, PB),
    ("Tversky", {}, YB, PB),
    ("Tversky", {"alpha": 0.3, "beta": 0.7, "axis": 1}, YB, PB),
    ("Circle", {}, EMB_LAB, EMB),
    ("Circle", {"gamma": 10.0, "margin": 0.25, "remove_diagonal": False}, EMB_LAB, EMB),
]


@pytest.mark.parametrize("name,kw,t,p", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_loss_class_matches_keras(name, kw, t, p):
    for reduction in ("sum_over_batch_size", "sum", "none"):
        ours = getattr(losses, name)(reduction=reduction, **kw)
        ref = getattr(keras.losses, name)(reduction=reduction, **kw)
        np.testing.assert_allclose(ours(t, p).numpy(), keras.ops.convert_to_numpy(ref(t, p)), rtol=2e-5, atol=2e-6)
        if (name not in ("Dice", "Tversky") or kw.get("axis") == 1) and kw.get("axis") != 0:  # per-sample values only
            np.testing.assert_allclose(ours(t, p, sample_weight=SW).numpy(),
                                       keras.ops.convert_to_numpy(ref(t, p, sample_weight=SW)), rtol=2e-5, atol=2e-6)
    ours = getattr(losses, name)(**kw)
    ref = getattr(keras.losses, name)(**kw)
    assert ours.get_config() == ref.get_config()
    again = losses.deserialize(losses.serialize(ours))
    assert type(again) is type(ours) and again.get_config() == ours.get_config()


FUNCS = [
    ("log_cosh", {}, YR, PR), ("hinge", {}, YB, LOGITS), ("squared_hinge", {}, YPM, LOGITS),
    ("categorical_hinge", {}, ONEHOT, LOGITS), ("mean_absolute_percentage_error", {}, YR, PR),
    ("mean_squared_logarithmic_error", {}, YR, PR), ("poisson", {}, YR, PR),
    ("binary_focal_crossentropy", {"gamma": 2.5}, YB, PB), ("categorical_focal_crossentropy", {}, ONEHOT, P),
    ("categorical_generalized_cross_entropy", {"q": 0.4}, LABELS, P), ("cosine_similarity", {}, YR, PR),
    ("dice", {}, YB, PB), ("tversky", {"alpha": 0.2, "beta": 0.8}, YB, PB),
    ("circle", {"gamma": 20}, EMB_LAB, EMB),
]


@pytest.mark.parametrize("name,kw,t,p", FUNCS, ids=[f[0] for f in FUNCS])
def test_loss_function_matches_keras(name, kw, t, p):
    ours = getattr(losses, name)(t, p, **kw).numpy()
    ref = keras.ops.convert_to_numpy(getattr(keras.losses, name)(keras.ops.convert_to_tensor(t),
                                                                  keras.ops.convert_to_tensor(p), **kw))
    np.testing.assert_allclose(ours, ref, rtol=2e-5, atol=2e-6)
    assert losses.get(name) is getattr(losses, name)


def test_ctc_matches_keras_and_string_lookup():
    labels = np.array([[1, 2, 2, 0], [3, 1, 0, 0], [2, 0, 0, 0]], dtype=np.int32)
    logits = rng.normal(size=(3, 7, 4)).astype(np.float32)
    ref = keras.ops.convert_to_numpy(keras.losses.CTC(reduction="none")(labels, logits))
    np.testing.assert_allclose(losses.CTC(reduction="none")(labels, logits).numpy(), ref, rtol=1e-4)
    np.testing.assert_allclose(losses.ctc(labels, logits).numpy(), ref, rtol=1e-4)
    assert losses.CTC().get_config() == keras.losses.CTC().get_config()
    with pytest.raises(ValueError, match="max_length"):
        losses.ctc(labels[0], logits)


@pytest.mark.parametrize("name,kw,t,p", [
    ("BinaryFocalCrossentropy", {"apply_class_balancing": True}, YB, PB),
    ("CategoricalFocalCrossentropy", {"from_logits": True}, ONEHOT, LOGITS),
    ("CosineSimilarity", {}, YR, PR), ("Dice", {}, YB, PB), ("Tversky", {"alpha": 0.3}, YB, PB),
    ("Circle", {"gamma": 4.0}, EMB_LAB, EMB), ("CategoricalGeneralizedCrossEntropy", {}, LABELS, P),
    ("LogCosh", {}, YR, PR), ("Poisson", {}, YR, PR),
])
def test_new_losses_gradients(name, kw, t, p):
    loss = getattr(losses, name)(dtype="float64", **kw)   # (a loss object computes in floatx unless told, as Keras's)
    check_grad(lambda x: loss(t.astype(np.float64) if t.dtype.kind == "f" else t, x), p.astype(np.float64))


def test_compile_by_name_and_fit_with_focal_loss():
    model = lamina.Sequential([lamina.layers.Input((C,)), lamina.layers.Dense(C, activation="sigmoid")])
    model.compile(optimizer="sgd", loss="binary_focal_crossentropy")
    h = model.fit(PB, YB, epochs=2, verbose=0)
    assert np.isfinite(h.history["loss"]).all()


def test_new_catalog_objects_survive_a_model_file(tmp_path):
    model = lamina.Sequential([lamina.layers.Input((3,)), lamina.layers.Dense(
        2, kernel_initializer=lamina.initializers.Orthogonal(seed=1),
        kernel_regularizer=lamina.regularizers.OrthogonalRegularizer(0.1))])
    model.compile(optimizer=lamina.optimizers.Lion(1e-3), loss=losses.Tversky(alpha=0.3),
                  metrics=[lamina.metrics.R2Score(), lamina.metrics.PrecisionAtRecall(0.5)])
    x = rng.random((8, 3)).astype(np.float32)
    y = (rng.random((8, 2)) > 0.5).astype(np.float32)
    model.fit(x, y, epochs=1, verbose=0)
    model.save(str(tmp_path / "m.keras"))
    again = lamina.models.load_model(str(tmp_path / "m.keras"))
    assert type(again.optimizer).__name__ == "Lion"
    assert isinstance(again.loss, losses.Tversky) and again.loss.get_config() == model.loss.get_config()
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
    np.testing.assert_allclose(again.evaluate(x, y, verbose=0), model.evaluate(x, y, verbose=0), rtol=1e-5)
