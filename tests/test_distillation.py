"""keras.distillation (lamina/distillation.py): the losses recomputed by hand, a Distiller trained side by side with
real Keras 3.15 (torch backend) from the same weights, the refusals, and a round trip through a .keras file."""
import os
import warnings

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
import lamina  # noqa: E402
from lamina import layers  # noqa: E402

from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")

D = lamina.distillation
T = np.array([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], "float32")
S = np.array([[0.2, 1.0, 1.5], [0.5, 0.5, 0.5]], "float32")


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_losses_by_hand():
    t = 2.0
    p, q = _softmax(T / t), _softmax(S / t)
    kl = np.mean(np.sum(p * np.log(p / q), -1)) * t ** 2            # softmaxes, scaled by T^2
    np.testing.assert_allclose(float(D.LogitsDistillation(t, loss=lamina.losses.KLDivergence()).compute_loss(T, S)),
                               kl, rtol=1e-5)
    np.testing.assert_allclose(float(D.LogitsDistillation(t, loss="mse").compute_loss(T, S)),
                               np.mean((T / t - S / t) ** 2), rtol=1e-6)
    # the name "kl_divergence" is the function, applied to the scaled outputs themselves (clipped to [eps, 1])
    a, b = np.clip(T / t, 1e-7, 1), np.clip(S / t, 1e-7, 1)
    np.testing.assert_allclose(float(D.LogitsDistillation(t).compute_loss(T, S)),
                               np.mean(np.sum(a * np.log(a / b), -1)), rtol=1e-5)
    np.testing.assert_allclose(float(D.FeatureDistillation().compute_loss(T, S)), np.mean((T - S) ** 2), rtol=1e-6)
    two = D.FeatureDistillation(loss=["mse", None])
    np.testing.assert_allclose(float(two.compute_loss([T, T], [S, T + 5])), np.mean((T - S) ** 2), rtol=1e-6)


def test_losses_as_keras():
    for make in (lambda K: K.distillation.LogitsDistillation(),
                 lambda K: K.distillation.LogitsDistillation(temperature=1.5, loss=K.losses.KLDivergence()),
                 lambda K: K.distillation.LogitsDistillation(temperature=4, loss="categorical_crossentropy"),
                 lambda K: K.distillation.FeatureDistillation(loss="mae")):
        mine, theirs = make(lamina), make(keras)
        np.testing.assert_allclose(float(mine.compute_loss(T, S)), float(theirs.compute_loss(T, S)), rtol=1e-5)
        assert mine.get_config() == theirs.get_config()
        again = type(mine).from_config(mine.get_config())
        np.testing.assert_allclose(float(again.compute_loss(T, S)), float(mine.compute_loss(T, S)), rtol=1e-6)


def _models(K):
    def mlp(name, scale):
        i = K.Input((4,))
        h = K.layers.Dense(8, activation="relu", name=f"{name}_hidden",
                           kernel_initializer=K.initializers.Constant(0.1 * scale))(i)
        return K.Model(i, K.layers.Dense(3, name=f"{name}_out",
                                         kernel_initializer=K.initializers.Constant(0.2 * scale))(h), name=name)
    return mlp("t", 1.0), mlp("s", -0.25)


def _distiller(K):
    teacher, student = _models(K)
    d = K.distillation.Distiller(
        teacher, student, [K.distillation.LogitsDistillation(temperature=2.0, loss=K.losses.KLDivergence()),
                           K.distillation.FeatureDistillation(loss="mse", teacher_layer_name="t_hidden",
                                                              student_layer_name="s_hidden")],
        distillation_loss_weights=[1.0, 0.5], student_loss_weight=0.3)
    d.compile(optimizer=K.optimizers.SGD(0.05), loss=K.losses.SparseCategoricalCrossentropy(from_logits=True),
              metrics=["accuracy"])
    return d


def test_distiller_trains_as_keras():
    r = np.random.default_rng(0)
    x, y = r.standard_normal((16, 4)).astype("float32"), r.integers(0, 3, 16)
    results = []
    for K in (lamina, keras):
        d = _distiller(K)
        h = d.fit(x, y, epochs=2, batch_size=8, verbose=0, shuffle=False)
        results.append((h.history, d.evaluate(x, y, verbose=0), [m.name for m in d.metrics], d.teacher.trainable,
                        len(d.trainable_weights), np.asarray(K.ops.convert_to_numpy(d.predict(x, verbose=0)))))
    (h1, e1, m1, t1, n1, p1), (h2, e2, m2, t2, n2, p2) = results
    assert list(h1) == list(h2) == ["accuracy", "distillation_loss", "loss", "student_loss", "total_loss"]
    for k in h1:
        np.testing.assert_allclose(h1[k], h2[k], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(e1, e2, rtol=1e-4, atol=1e-6)
    assert m1 == m2 and t1 is t2 is False and n1 == n2 == 4
    np.testing.assert_allclose(p1, p2, rtol=1e-4, atol=1e-6)
    # the total is its parts: 0.3 student + 0.7 distillation
    np.testing.assert_allclose(h1["total_loss"], 0.3 * np.array(h1["student_loss"]) +
                               0.7 * np.array(h1["distillation_loss"]), rtol=1e-5)


def test_refusals():
    teacher, student = _models(lamina)
    other = lamina.Sequential([lamina.Input((5,)), layers.Dense(3)])
    for make, match in ((lambda: D.Distiller(teacher, student, None), "cannot be `None`"),
                        (lambda: D.Distiller(teacher, student, [D.LogitsDistillation()], [1, 2]), "must match"),
                        (lambda: D.Distiller(teacher, student, D.LogitsDistillation(), student_loss_weight=1.5),
                         "between 0.0 and 1.0"),
                        (lambda: D.Distiller(teacher, other, D.LogitsDistillation()), "incompatible"),
                        (lambda: D.Distiller(teacher, student, D.FeatureDistillation(teacher_layer_name="no")),
                         "In teacher model"),
                        (lambda: D.LogitsDistillation(temperature=0), "positive"),
                        (lambda: D.LogitsDistillation(loss=None), "non-`None`"),
                        (lambda: D.Distiller(teacher, student, D.LogitsDistillation()).compile("sgd"), "'loss'")):
        with pytest.raises(ValueError, match=match):
            make()


def test_distiller_survives_a_model_file(tmp_path):
    d = _distiller(lamina)
    x = np.random.default_rng(1).standard_normal((8, 4)).astype("float32")
    d.fit(x, np.arange(8) % 3, verbose=0)
    d.save(tmp_path / "d.keras")
    with warnings.catch_warnings(record=True) as caught:   # its own compile() is not replayed (as Keras)
        warnings.simplefilter("always")
        loaded = lamina.models.load_model(tmp_path / "d.keras")
    assert any("compile()" in str(w.message) for w in caught)
    assert type(loaded) is D.Distiller and loaded.distillation_loss_weights == [1.0, 0.5]
    assert isinstance(loaded.distillation_losses[0].loss, lamina.losses.KLDivergence)
    assert loaded.distillation_losses[1].teacher_layer_name == "t_hidden" and not loaded.teacher.trainable
    np.testing.assert_allclose(loaded.predict(x, verbose=0), d.predict(x, verbose=0), rtol=1e-6)
