"""scikit-learn estimators around a lamina model (``keras.wrappers``): SKLearnClassifier, SKLearnRegressor and
SKLearnTransformer.

Each wraps a compiled model, or a function that builds and compiles one from the training data (called as
``model(X=X, y=y, **model_kwargs)``: the input width from ``X.shape[1]``, the output width from ``y``), in
scikit-learn's estimator interface (``fit``, ``predict``, ``score``, ``transform``), so that it takes its place in
pipelines, grid searches and cross-validation and is copied by ``sklearn.base.clone``. As in Keras 3.15:

- a model given as an instance is copied by ``models.clone_model`` (fresh weights, the same compile settings) at
  every ``fit``; with ``warm_start=True`` a later ``fit`` goes on training the fitted model instead (what Keras
  documents; Keras 3.15 clones anyway);
- the classifier takes binary or multiclass labels and one-hot encodes them in the order of ``classes_`` (the model
  ends in one unit per class and trains on 'categorical_crossentropy'); ``predict`` maps the largest output back to
  its label, ``decision_function`` gives the outputs themselves;
- the regressor and the transformer hand the targets on as they are, a 1-D ``y`` as one column (the regressor's
  predictions come back 1-D then), several columns as they are (which Keras 3.15 documents and refuses);
  ``transform`` is the model's output;
- ``fit_kwargs`` go to ``model.fit``, those given to ``fit`` itself taking precedence; ``history_`` is the History
  ``model.fit`` returns, ``model_`` the fitted model.

scikit-learn is an optional dependency (``pip install scikit-learn``), imported by this module, which lamina
loads on first use of ``lamina.wrappers`` (so ``import lamina`` does not import scikit-learn).
"""
import numpy as np

from .models import Model, clone_model

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, TransformerMixin
except ImportError:   # the classes still exist; building one says what to install
    BaseEstimator = ClassifierMixin = RegressorMixin = TransformerMixin = object
    _SKLEARN = False
else:
    _SKLEARN = True

__all__ = ["SKLearnClassifier", "SKLearnRegressor", "SKLearnTransformer"]


def _validate(estimator, X, y=None, reset=True):
    """scikit-learn's own input checks (finite numbers, 2-D X, matching lengths, a y of one or several columns;
    ``n_features_in_`` set when ``reset``, compared otherwise): X, or (X, y)."""
    try:   # scikit-learn >= 1.6
        from sklearn.utils.validation import validate_data
    except ImportError:   # pragma: no cover - older scikit-learn
        return (estimator._validate_data(X, reset=reset) if y is None
                else estimator._validate_data(X, y, reset=reset, multi_output=True))
    return (validate_data(estimator, X, reset=reset) if y is None
            else validate_data(estimator, X, y, reset=reset, multi_output=True))


class _Wrapper(BaseEstimator):
    """What the three wrappers share: the model's making, fit and predict. Subclasses encode the targets."""

    def __init__(self, model, warm_start=False, model_kwargs=None, fit_kwargs=None):
        if not _SKLEARN:
            raise ImportError(f"{type(self).__name__} needs scikit-learn: pip install scikit-learn")
        self.model = model
        self.warm_start = warm_start
        self.model_kwargs = model_kwargs
        self.fit_kwargs = fit_kwargs

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = True   # (random initial weights, shuffled batches)
        return tags

    @property
    def epoch_(self):
        """How many epochs the last fit trained (0 before any)."""
        history = getattr(self, "history_", None)
        return 0 if history is None else len(history.epoch)

    def _make_model(self, X, y):
        if self.warm_start and hasattr(self, "model_"):
            return self.model_
        if isinstance(self.model, Model):
            model = clone_model(self.model)   # (compiled as the original)
        elif callable(self.model):
            model = self.model(X=X, y=y, **(self.model_kwargs or {}))
        else:
            raise TypeError(f"{type(self).__name__}: model must be a lamina Model or a function building one. "
                            f"Received: {self.model!r}")
        if not isinstance(model, Model):
            raise TypeError(f"{type(self).__name__}: the model function returned {type(model).__name__}, not a "
                            "Model.")
        if not model.compiled or model.optimizer is None or getattr(model, "loss", None) is None:
            raise RuntimeError("Given model needs to be compiled, and have a loss and an optimizer.")
        return model

    def fit(self, X, y, **kwargs):
        """Train a model (made as the class says) on X (n_samples, n_features) and y; kwargs go to ``model.fit``
        over ``fit_kwargs``. Returns the estimator."""
        X, y = _validate(self, X, y, reset=True)
        y = self._encode(y, reset=True)
        model = self._make_model(X, y)
        self.history_ = model.fit(X, y, **{**(self.fit_kwargs or {}), **kwargs})
        self.model_ = model
        return self

    def _outputs(self, X):
        from sklearn.utils.validation import check_is_fitted
        check_is_fitted(self)
        return np.asarray(self.model_.predict(_validate(self, X, reset=False)))

    def predict(self, X):
        """The fitted model's predictions for X, as targets (labels for the classifier)."""
        return self._decode(self._outputs(X))

    def _encode(self, y, reset=False):
        y = np.asarray(y)
        if reset:
            self._y_ndim = y.ndim
        return y.reshape(-1, 1) if y.ndim == 1 else y

    def _decode(self, out):
        return out[:, 0] if self._y_ndim == 1 and out.ndim == 2 and out.shape[1] == 1 else out


class SKLearnClassifier(ClassifierMixin, _Wrapper):
    """A classifier for scikit-learn from a lamina model whose output has one unit per class (see the module's
    docstring). ``classes_`` holds the sorted labels seen by ``fit``."""

    def _encode(self, y, reset=False):
        from sklearn.utils.multiclass import type_of_target
        kind = type_of_target(y)
        if kind not in ("binary", "multiclass"):
            raise ValueError(f"Only binary and multiclass target types are supported. Target type: {kind}")
        y = np.asarray(y).reshape(-1)
        if reset:
            self.classes_ = np.unique(y)
            if len(self.classes_) == 1:
                raise ValueError("Classifier can't train when only one class is present.")
        index = np.searchsorted(self.classes_, y)
        unseen = (index >= len(self.classes_)) | (self.classes_[np.minimum(index, len(self.classes_) - 1)] != y)
        if unseen.any():
            raise ValueError(f"Labels not seen in fit: {sorted(set(y[unseen].tolist()))[:10]}")
        return np.eye(len(self.classes_), dtype=np.float32)[index]

    def _decode(self, out):
        if out.ndim != 2 or out.shape[1] != len(self.classes_):
            raise ValueError(f"{type(self).__name__}: the model gives outputs of shape {out.shape[1:]} for "
                             f"{len(self.classes_)} classes; it must end in one unit per class.")
        return self.classes_[out.argmax(axis=1)]

    def decision_function(self, X):
        """The fitted model's outputs for X (one column per class of ``classes_``)."""
        return self._outputs(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.poor_score = True
        return tags


class SKLearnRegressor(RegressorMixin, _Wrapper):
    """A regressor for scikit-learn from a lamina model (see the module's docstring)."""

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.regressor_tags.poor_score = True
        return tags


class SKLearnTransformer(TransformerMixin, _Wrapper):
    """A scikit-learn transformer whose ``transform`` is a lamina model's output (an embedding, say), trained by
    ``fit`` on (X, y) first (see the module's docstring)."""

    def transform(self, X):
        """The fitted model's outputs for X."""
        return self._outputs(X)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = []
        return tags
