"""keras.wrappers: scikit-learn estimators around a model (lamina/wrappers.py), on their own, inside scikit-learn's
tools, and against real Keras 3.15 (torch backend) on the same deterministic program."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
import lamina  # noqa: E402
from lamina import layers  # noqa: E402

from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py: imported by the first test using them)
sk_base = lazy_module("sklearn.base")
sk_exceptions = lazy_module("sklearn.exceptions")
sk_linear = lazy_module("sklearn.linear_model")
sk_metrics = lazy_module("sklearn.metrics")
sk_selection = lazy_module("sklearn.model_selection")
sk_pipeline = lazy_module("sklearn.pipeline")

FIT = {"epochs": 3, "batch_size": 8, "verbose": 0, "shuffle": False}


def _data(n=48, features=4, classes=3, seed=0):
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, features)).astype(np.float32)
    y = np.argmax(x[:, :classes] + 0.3 * r.standard_normal((n, classes)), axis=1)
    return x, y


def _classifier(K, seen=None):
    def build(X, y, hidden=6):
        if seen is not None:
            seen.append(np.asarray(y))
        m = K.Sequential([K.Input((X.shape[1],)),
                          K.layers.Dense(hidden, activation="tanh", kernel_initializer=K.initializers.Constant(0.1)),
                          K.layers.Dense(y.shape[1], activation="softmax",
                                         kernel_initializer=K.initializers.Identity() if hidden == y.shape[1] else
                                         K.initializers.Constant(-0.05))])
        m.compile(K.optimizers.SGD(0.1), "categorical_crossentropy")
        return m
    return build


def _regressor(K):
    def build(X, y):
        m = K.Sequential([K.Input((X.shape[1],)), K.layers.Dense(1, kernel_initializer="zeros")])
        m.compile(K.optimizers.SGD(0.05), "mse")
        return m
    return build


def test_classifier_encodes_labels_one_hot_and_predicts_them_back():
    x, y = _data()
    names = np.array(["cat", "dog", "eel"])[y]          # any labels: strings here
    seen = []
    clf = lamina.wrappers.SKLearnClassifier(_classifier(lamina, seen), fit_kwargs=FIT).fit(x, names)
    assert list(clf.classes_) == ["cat", "dog", "eel"] and clf.n_features_in_ == 4
    np.testing.assert_array_equal(seen[0], np.eye(3)[y])   # one column per class, in classes_' order
    out = clf.decision_function(x)
    np.testing.assert_allclose(out, clf.model_.predict(x, verbose=0), rtol=1e-6)
    pred = clf.predict(x)
    np.testing.assert_array_equal(pred, clf.classes_[out.argmax(1)])
    assert clf.score(x, names) == np.mean(pred == names)
    assert clf.epoch_ == 3 and len(clf.history_.history["loss"]) == 3
    assert clf.history_.history["loss"][-1] < clf.history_.history["loss"][0]


def test_classifier_in_cross_validation_grid_search_and_clone():
    x, y = _data(n=60)
    clf = lamina.wrappers.SKLearnClassifier(_classifier(lamina), model_kwargs={"hidden": 4}, fit_kwargs=FIT)
    scores = sk_selection.cross_val_score(clf, x, y, cv=3)
    assert scores.shape == (3,) and np.all((0 <= scores) & (scores <= 1))
    copy = sk_base.clone(clf)
    assert copy.get_params()["model_kwargs"] == {"hidden": 4} and copy.get_params()["fit_kwargs"] == FIT
    assert not hasattr(copy, "model_")
    search = sk_selection.GridSearchCV(clf, {"model_kwargs": [{"hidden": 3}, {"hidden": 8}]}, cv=2).fit(x, y)
    assert search.best_params_["model_kwargs"]["hidden"] in (3, 8) and search.predict(x[:5]).shape == (5,)


def test_a_model_instance_is_cloned_per_fit_unless_warm_start():
    x, y = _data()
    model = _classifier(lamina)(x, np.eye(3)[y])
    before = [w.copy() for w in model.get_weights()]
    clf = lamina.wrappers.SKLearnClassifier(model, fit_kwargs=FIT).fit(x, y)
    assert clf.model_ is not model and clf.model_.compiled
    for a, b in zip(model.get_weights(), before):   # the given model itself is untouched
        np.testing.assert_array_equal(a, b)
    first = clf.model_
    clf.fit(x, y)
    assert clf.model_ is not first                  # a fresh clone each fit
    warm = lamina.wrappers.SKLearnClassifier(model, warm_start=True, fit_kwargs=FIT).fit(x, y)
    fitted = warm.model_
    w1 = [w.copy() for w in fitted.get_weights()]
    warm.fit(x, y)
    assert warm.model_ is fitted and not np.allclose(fitted.get_weights()[0], w1[0])   # trained on


def test_regressor_and_transformer():
    r = np.random.default_rng(1)
    x = r.standard_normal((40, 3)).astype(np.float32)
    y = x @ np.array([1.0, -2.0, 0.5], np.float32) + 0.1
    reg = lamina.wrappers.SKLearnRegressor(_regressor(lamina), fit_kwargs={**FIT, "epochs": 30}).fit(x, y)
    pred = reg.predict(x)
    assert pred.shape == (40,)                          # a 1-D target gives 1-D predictions
    np.testing.assert_allclose(reg.score(x, y), sk_metrics.r2_score(y, pred), rtol=1e-6)
    assert reg.score(x, y) > 0.9
    y2 = np.stack([y, -y], 1)
    assert lamina.wrappers.SKLearnRegressor(lambda X, y: _two(X), fit_kwargs=FIT).fit(x, y2) \
        .predict(x).shape == (40, 2)
    x_c, y_c = _data(n=40)

    def embed(X, y):
        m = lamina.Sequential([lamina.Input((X.shape[1],)), layers.Dense(5, activation="relu")])
        m.compile("sgd", "mse")
        return m
    trs = lamina.wrappers.SKLearnTransformer(embed, fit_kwargs=FIT)
    out = trs.fit(x_c, y_c).transform(x_c)
    np.testing.assert_allclose(out, trs.model_.predict(x_c, verbose=0), rtol=1e-6)
    assert out.shape == (40, 5)
    pipe = sk_pipeline.make_pipeline(lamina.wrappers.SKLearnTransformer(embed, fit_kwargs=FIT),
                                     sk_linear.LogisticRegression()).fit(x_c, y_c)
    assert pipe.predict(x_c).shape == (40,)


def _two(X):
    m = lamina.Sequential([lamina.Input((X.shape[1],)), layers.Dense(2)])
    m.compile("sgd", "mse")
    return m


def test_errors_say_what_is_wrong():
    x, y = _data()
    with pytest.raises(ValueError, match="binary and multiclass"):
        lamina.wrappers.SKLearnClassifier(_classifier(lamina)).fit(x, x[:, 0])
    with pytest.raises(ValueError, match="only one class"):
        lamina.wrappers.SKLearnClassifier(_classifier(lamina)).fit(x, np.zeros(len(x), int))
    with pytest.raises(sk_exceptions.NotFittedError):
        lamina.wrappers.SKLearnClassifier(_classifier(lamina)).predict(x)

    def uncompiled(X, y):
        return lamina.Sequential([lamina.Input((X.shape[1],)), layers.Dense(3)])
    with pytest.raises(RuntimeError, match="compiled"):
        lamina.wrappers.SKLearnClassifier(uncompiled).fit(x, y)

    def narrow(X, y):
        m = lamina.Sequential([lamina.Input((X.shape[1],)), layers.Dense(2)])
        m.compile("sgd", "mse")
        return m
    clf = lamina.wrappers.SKLearnClassifier(narrow, fit_kwargs=FIT)
    with pytest.raises(ValueError):   # 3 classes, 2 outputs: fit's loss refuses the widths, or predict does
        clf.fit(x, y).predict(x)
    fitted = lamina.wrappers.SKLearnClassifier(_classifier(lamina), fit_kwargs=FIT).fit(x, y)
    with pytest.raises(ValueError, match="features"):
        fitted.predict(x[:, :3])


def test_same_program_as_keras():
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":   # pragma: no cover - the reference is Keras on torch
        pytest.skip("the reference runs need KERAS_BACKEND=torch")
    x, y = _data()
    mine = lamina.wrappers.SKLearnClassifier(_classifier(lamina), model_kwargs={"hidden": 3}, fit_kwargs=FIT)
    theirs = keras.wrappers.SKLearnClassifier(_classifier(keras), model_kwargs={"hidden": 3}, fit_kwargs=FIT)
    mine.fit(x, y)
    theirs.fit(x, y)
    np.testing.assert_array_equal(mine.classes_, theirs.classes_)
    np.testing.assert_allclose(mine.decision_function(x), np.asarray(theirs.decision_function(x)), rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_array_equal(mine.predict(x), theirs.predict(x))
    xr = x[:, :3]
    yr = xr @ np.array([1.0, -2.0, 0.5], np.float32)
    a = lamina.wrappers.SKLearnRegressor(_regressor(lamina), fit_kwargs=FIT).fit(xr, yr)
    b = keras.wrappers.SKLearnRegressor(_regressor(keras), fit_kwargs=FIT).fit(xr, yr)
    np.testing.assert_allclose(a.predict(xr), np.asarray(b.predict(xr)), rtol=1e-4, atol=1e-6)
    assert a.predict(xr).shape == np.asarray(b.predict(xr)).shape
