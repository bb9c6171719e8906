"""Metrics with running state (Keras 3 names, arguments and formulas).

A metric accumulates over batches with ``update_state(y_true, y_pred, sample_weight=None)`` (NumPy
arrays or Tensors), reports with ``result()`` (a Python float, or an array for per-class results) and
starts over with ``reset_state()`` (the training loop resets every metric at each epoch).
The state is kept on the host in float64, so long epochs lose no precision.

String names resolve through ``get``: 'mse', 'mae', 'binary_accuracy', 'categorical_accuracy',
'sparse_categorical_accuracy', 'auc', 'precision', 'recall', ... 'accuracy' is left to the training
loop, which picks binary, categorical or sparse accuracy from the loss and the shapes.
"""
import functools
import warnings

import numpy as np

from . import backend, initializers
from .registry import register, serialize
from .tensor import Tensor, Variable, host_array

_EPS = 1e-7


def _np(x, dtype=None):
    return None if x is None else host_array(x, dtype)


def squeeze_or_expand_to_same_rank(x1, x2, expand_rank_1=True):
    """Make two arrays the same rank when they differ by a trailing axis of size 1 (Keras's rule)."""
    r1, r2 = x1.ndim, x2.ndim
    if r1 == r2 + 1 and x1.shape[-1] == 1:
        if r2 == 1 and expand_rank_1:
            x2 = x2[..., None]
        else:
            x1 = x1[..., 0]
    elif r2 == r1 + 1 and x2.shape[-1] == 1:
        if r1 == 1 and expand_rank_1:
            x1 = x1[..., None]
        else:
            x2 = x2[..., 0]
    return x1, x2


def _broadcast(a, shape, what="sample_weight"):
    """np.broadcast_to with a clear ValueError naming the argument and both shapes (not NumPy's
    'remapped shapes' message)."""
    try:
        return np.broadcast_to(a, shape)
    except ValueError:
        if what == "y_true":
            raise ValueError(f"y_true and y_pred must have the same shape; received y_true of shape "
                             f"{np.shape(a)} and y_pred of shape {tuple(shape)}.") from None
        raise ValueError(f"{what} of shape {np.shape(a)} does not fit the values of shape {tuple(shape)}; "
                         f"expected a scalar, shape {tuple(shape[:1])} or {tuple(shape)}.") from None


def _samplewise(values, sample_weight):
    """Keras's reduce_to_samplewise_values with mean: per-sample values (weighted) and the weights."""
    values = values.astype(np.float64)
    if sample_weight is not None:
        sw = _np(sample_weight, np.float64)
        values, sw = squeeze_or_expand_to_same_rank(values, sw)
        if values.ndim > sw.ndim:
            values = values.mean(axis=tuple(range(sw.ndim, values.ndim)))
        sw = _broadcast(sw, values.shape)
        values = values * sw
        if sw.ndim > 1:
            sw = sw.mean(axis=tuple(range(1, sw.ndim)))
    else:
        sw = None
    if values.ndim > 1:
        values = values.mean(axis=tuple(range(1, values.ndim)))
    return values, sw


def _tensor_result(result):
    """result() giving a Tensor of the metric's dtype, as Keras's metrics give a backend tensor
    (``m.result().numpy()``, ``float(m.result())``); a dict or a Tensor a subclass returns stays as it is."""
    @functools.wraps(result)
    def wrapped(self):
        value = _in_result_dtype(self, result(self))
        return Tensor(value) if isinstance(value, np.ndarray) else value
    wrapped._gives_tensor = True
    return wrapped


def _in_result_dtype(metric, value):
    """A number or array result as an array of the metric's float dtype (an IoU's dtype is its confusion
    matrix's int32: its result is a float); anything else (a dict, a Tensor) as it is."""
    if isinstance(value, (float, int, np.number, np.ndarray)) and not isinstance(value, bool):
        dtype = np.dtype(metric.dtype)
        return np.asarray(value, dtype=dtype if dtype.kind == "f" else backend.floatx())
    return value


def result_value(metric):
    """What ``metric.result()`` holds, as a NumPy array instead of a Tensor where it is one number or array
    (the training loop logs Python floats every step: no Tensor made only to be turned back into a float)."""
    fn = type(metric).result
    raw = getattr(fn, "__wrapped__", None) if getattr(fn, "_gives_tensor", False) else None
    return _in_result_dtype(metric, raw(metric)) if raw is not None else metric.result()


class Metric:
    """Base of every metric. Subclasses write ``update_state``, ``result`` and ``reset_state``.

    Args: name (defaults to the snake-case class name), dtype (the reported dtype, 'float32').
    Calling the metric, ``metric(y_true, y_pred)``, updates it and returns the result.
    """

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        # prefixed: losses have classes of the same names (MeanSquaredError, ...)
        register(cls, name=f"metrics>{cls.__name__}")
        _CLASSES[cls.__name__] = cls
        if "result" in cls.__dict__ and not getattr(cls.__dict__["result"], "_gives_tensor", False):
            cls.result = _tensor_result(cls.__dict__["result"])

    def __init__(self, name=None, dtype=None):
        self.name = name or _snake(type(self).__name__)
        self.dtype = dtype or backend.floatx()
        # lamina's own metrics keep their state in plain attributes that reset_state() sets: run the
        # reset_state of the nearest lamina class, never a user's override, which (as in Keras, whose
        # Metric.__init__ resets nothing) may read variables its __init__ has yet to create
        for klass in type(self).__mro__:
            if "reset_state" in klass.__dict__ and klass.__module__ == __name__:
                klass.__dict__["reset_state"](self)
                break

    def update_state(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    def result(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def reset_state(self):
        """Zeros in every variable made by add_variable (Keras's default); lamina's metrics override it."""
        for v in self.__dict__.get("_user_variables", ()):
            v.assign(np.zeros(v.shape, dtype=v.dtype))

    def add_variable(self, shape, initializer, dtype=None, aggregation="sum", name=None):
        """A state variable of the metric (not trainable), as Keras's ``Metric.add_variable``: a custom
        metric keeps its counts in these and updates them with ``assign`` / ``assign_add``. ``aggregation``
        says how data-parallel training (lamina.distribution) combines the ranks' updates: 'sum' (the
        default: counts and totals add up over the ranks); anything else ('mean', 'none',
        'only_first_replica') leaves each rank's value as it is."""
        if aggregation not in ("sum", "mean", "none", "only_first_replica"):
            raise ValueError(f"Metric.add_variable: aggregation must be 'sum', 'mean', 'none' or "
                             f"'only_first_replica'. Received: aggregation={aggregation!r}")
        value = initializers.get(initializer)(tuple(shape), dtype=dtype or self.dtype)
        variable = Variable(value, name=name, trainable=False, dtype=dtype or self.dtype)
        variable._metric_aggregation = aggregation
        self.__dict__.setdefault("_user_variables", []).append(variable)
        return variable

    def add_weight(self, shape=(), initializer=None, dtype=None, name=None):
        """Keras's older name for add_variable (zeros by default)."""
        return self.add_variable(shape, initializer or "zeros", dtype=dtype, name=name)

    def reset_states(self):  # Keras 2 name
        self.reset_state()

    def __call__(self, *args, **kwargs):
        self.update_state(*args, **kwargs)
        return self.result()

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @property
    def variables(self):
        return [np.asarray(v) for v in self._state()] + list(self.__dict__.get("_user_variables", ()))

    def _state(self):
        return []

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}>"


_CLASSES = {}


class Sum(Metric):
    """The running sum of the (weighted) values."""

    def reset_state(self):
        self.total = 0.0

    def update_state(self, values, sample_weight=None):
        values = _np(values, np.float64)
        if sample_weight is not None:
            values, sw = squeeze_or_expand_to_same_rank(values, _np(sample_weight, np.float64))
            # weights of shape (N,) weigh whole samples: trailing axes added, as Keras broadcasts them
            if 0 < sw.ndim < values.ndim:
                sw = sw.reshape(sw.shape + (1,) * (values.ndim - sw.ndim))
            try:
                values = values * sw
            except ValueError:
                raise ValueError(f"Sum: sample_weight of shape {np.shape(sample_weight)} does not fit values of shape "
                                 f"{values.shape}; expected a scalar, shape {values.shape[:1]} or "
                                 f"{values.shape}.") from None
        self.total += float(np.sum(values))

    def result(self):
        return self.total

    def _state(self):
        return [self.total]


class Mean(Metric):
    """The running (weighted) mean: total of sample values / total of sample weights.

    Values of rank > 1 are first averaged per sample, as Keras does."""

    def reset_state(self):
        self.total, self.count = 0.0, 0.0

    def update_state(self, values, sample_weight=None):
        if type(values) is float and (sample_weight is None or type(sample_weight) in (int, float)):
            # one number (fit's loss tracker: the batch's loss by its size), the general path's float64
            # arithmetic without its arrays (~20 us a step)
            weight = 1.0 if sample_weight is None else float(sample_weight)
            self.total += values * weight
            self.count += weight
            return
        values, sw = _samplewise(_np(values), sample_weight)
        self.total += float(np.sum(values))
        self.count += float(np.sum(sw)) if sw is not None else (values.shape[0] if values.ndim >= 1 else 1)

    def result(self):
        return self.total / self.count if self.count else 0.0

    def _state(self):
        return [self.total, self.count]


class MeanMetricWrapper(Mean):
    """The running mean of ``fn(y_true, y_pred, **kwargs)`` (per-sample values)."""

    def __init__(self, fn, name=None, dtype=None, **kwargs):
        self._fn, self._fn_kwargs = fn, kwargs
        super().__init__(name=name or getattr(fn, "__name__", None), dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = squeeze_or_expand_to_same_rank(_np(y_true), _np(y_pred))
        if y_true.ndim == 0 and y_pred.ndim == 0:
            # one value each: a length-1 last axis for the per-sample functions, as Keras reads them
            y_true, y_pred = y_true[None], y_pred[None]
        if y_true.ndim == y_pred.ndim and self._fn not in _NOT_ELEMENTWISE:
            try:
                np.broadcast_shapes(y_true.shape, y_pred.shape)
            except ValueError:
                raise ValueError(f"{type(self).__name__}: y_true and y_pred must have the same shape; received "
                                 f"y_true of shape {y_true.shape} and y_pred of shape {y_pred.shape}.") from None
        super().update_state(self._fn(y_true, y_pred, **self._fn_kwargs), sample_weight)

    def get_config(self):
        config = super().get_config()
        config.update(self._fn_kwargs)
        if type(self) is MeanMetricWrapper:
            config["fn"] = getattr(self._fn, "__name__", str(self._fn))
        return config

    @classmethod
    def from_config(cls, config):
        if cls is MeanMetricWrapper and isinstance(config.get("fn"), str):
            config = dict(config)
            config["fn"] = _FUNCTIONS[config["fn"]]
        return cls(**config)


# ---------------------------------------------------------------- per-sample functions (NumPy)
def accuracy(y_true, y_pred):
    """Exact match per sample (mean over the last axis)."""
    y_true, y_pred = squeeze_or_expand_to_same_rank(_np(y_true), _np(y_pred))
    return np.mean(y_true == y_pred, axis=-1)


def binary_accuracy(y_true, y_pred, threshold=0.5):
    """Share of entries where (y_pred > threshold) equals y_true, per sample."""
    y_true, y_pred = squeeze_or_expand_to_same_rank(_np(y_true), _np(y_pred))
    return np.mean((y_pred > threshold).astype(y_true.dtype) == y_true, axis=-1)


def categorical_accuracy(y_true, y_pred):
    """1 where argmax(y_pred) equals argmax(y_true) (one-hot targets), per sample."""
    t, p = np.argmax(_np(y_true), axis=-1), np.argmax(_np(y_pred), axis=-1)
    try:   # argmaxes that broadcast are compared, as Keras; what cannot meet is refused
        np.broadcast_shapes(t.shape, p.shape)
    except ValueError:
        raise ValueError(f"categorical_accuracy: y_true (one-hot) and y_pred must hold the same samples; received "
                         f"y_true of shape {np.shape(y_true)} and y_pred of shape {np.shape(y_pred)}.")
    return (t == p).astype(np.float64)


def sparse_categorical_accuracy(y_true, y_pred):
    """1 where argmax(y_pred) equals the integer label, per sample (labels of shape (N,) or (N, 1))."""
    y_true, y_pred = _np(y_true), _np(y_pred)
    if y_true.ndim == y_pred.ndim and y_true.shape[-1] == 1:
        y_true = y_true[..., 0]
    try:   # broadcasting labels against the argmax is allowed, as Keras; what cannot meet is refused
        np.broadcast_shapes(y_true.shape, y_pred.shape[:-1])
        ok = y_pred.ndim > 0
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"sparse_categorical_accuracy: y_true must hold one label per sample, shape "
                         f"{y_pred.shape[:-1]} for y_pred of shape {y_pred.shape}; received y_true of shape "
                         f"{y_true.shape}.")
    return (np.argmax(y_pred, axis=-1) == y_true.astype(np.int64)).astype(np.float64)


def _sparse_labels(y_true, y_pred, name):
    """Integer labels of shape y_pred.shape[:-1] (a trailing axis of 1 dropped), checked: a clear
    ValueError for labels of the wrong shape or not finite, as Keras refuses them, instead of an
    IndexError from the gather."""
    t, p = _np(y_true), _np(y_pred)
    if p.ndim == 0:
        raise ValueError(f"{name}: y_pred must have a class axis; received y_pred of shape {p.shape}.")
    if t.ndim == p.ndim and t.shape[-1] == 1:
        t = t[..., 0]
    if t.shape != p.shape[:-1]:
        raise ValueError(f"{name}: y_true must hold one integer label per sample, shape {p.shape[:-1]} "
                         f"(or {p.shape[:-1] + (1,)}) for y_pred of shape {p.shape}; received y_true of "
                         f"shape {t.shape}.")
    if t.dtype.kind == "f" and not np.isfinite(t).all():
        raise ValueError(f"{name}: y_true must hold integer class labels; received NaN or inf.")
    return t.astype(np.int64), p


def _in_top_k(target, scores, k):
    # the label counts as found when fewer than k scores beat it (ties count in, as in_top_k);
    # a label outside [0, classes) is never found (no wrap-around for negatives)
    inside = (target >= 0) & (target < scores.shape[-1])
    own = np.take_along_axis(scores, np.where(inside, target, 0)[..., None].astype(np.int64), axis=-1)
    return (((scores > own).sum(axis=-1) < k) & inside).astype(np.float64)


def top_k_categorical_accuracy(y_true, y_pred, k=5):
    """1 where the true class (one-hot) is among the k highest scores."""
    t, p = _np(y_true), _np(y_pred)
    if t.ndim == 0 or p.ndim == 0 or t.shape[:-1] != p.shape[:-1]:
        raise ValueError(f"top_k_categorical_accuracy: y_true (one-hot) and y_pred must have the same shape "
                         f"(samples, classes); received y_true of shape {t.shape} and y_pred of shape {p.shape}.")
    return _in_top_k(np.argmax(t, axis=-1), p, k)


def sparse_top_k_categorical_accuracy(y_true, y_pred, k=5):
    """1 where the integer label is among the k highest scores."""
    y_true, y_pred = _sparse_labels(y_true, y_pred, "sparse_top_k_categorical_accuracy")
    return _in_top_k(y_true, y_pred, k)


def mean_squared_error(y_true, y_pred):
    d = _np(y_pred, np.float64) - _np(y_true, np.float64)
    return np.mean(d * d, axis=-1)


def mean_absolute_error(y_true, y_pred):
    return np.mean(np.abs(_np(y_pred, np.float64) - _np(y_true, np.float64)), axis=-1)


def mean_absolute_percentage_error(y_true, y_pred):
    t, p = _np(y_true, np.float64), _np(y_pred, np.float64)
    return 100.0 * np.mean(np.abs((t - p) / np.maximum(np.abs(t), _EPS)), axis=-1)


def mean_squared_logarithmic_error(y_true, y_pred):
    t, p = _np(y_true, np.float64), _np(y_pred, np.float64)
    d = np.log(np.maximum(p, _EPS) + 1.0) - np.log(np.maximum(t, _EPS) + 1.0)
    return np.mean(d * d, axis=-1)


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0):
    t, p = _np(y_true, np.float64), _np(y_pred, np.float64)
    t = t * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        return np.mean(np.maximum(p, 0) - p * t + np.log1p(np.exp(-np.abs(p))), axis=-1)
    p = np.clip(p, _EPS, 1.0 - _EPS)
    return np.mean(-(t * np.log(p) + (1.0 - t) * np.log(1.0 - p)), axis=-1)


def _log_probs(p, from_logits):
    if from_logits:
        p = p - p.max(axis=-1, keepdims=True)
        return p - np.log(np.exp(p).sum(axis=-1, keepdims=True))
    p = p / p.sum(axis=-1, keepdims=True)
    return np.log(np.clip(p, _EPS, 1.0 - _EPS))


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    t, p = _np(y_true, np.float64), _np(y_pred, np.float64)
    if axis not in (-1, p.ndim - 1):
        t, p = np.moveaxis(t, axis, -1), np.moveaxis(p, axis, -1)
    if label_smoothing:
        t = t * (1.0 - label_smoothing) + label_smoothing / t.shape[-1]
    return -np.sum(t * _log_probs(p, from_logits), axis=-1)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, ignore_class=None, axis=-1):
    p = _np(y_pred, np.float64)
    if p.ndim and axis not in (-1, p.ndim - 1):
        p = np.moveaxis(p, axis, -1)
    t, p = _sparse_labels(y_true, p, "sparse_categorical_crossentropy")
    bad = (t < 0) | (t >= p.shape[-1])
    if ignore_class is not None:
        bad &= t != ignore_class
    if bad.any():
        raise ValueError(f"sparse_categorical_crossentropy: labels must be in [0, {p.shape[-1]}) for "
                         f"{p.shape[-1]} classes; received labels from {t.min()} to {t.max()}.")
    if ignore_class is None:
        return -np.take_along_axis(_log_probs(p, from_logits), t[..., None], axis=-1)[..., 0]
    ignored = t == ignore_class
    values = -np.take_along_axis(_log_probs(p, from_logits), np.where(ignored, 0, t)[..., None], axis=-1)[..., 0]
    return np.where(ignored, 0.0, values)  # Keras: 0 for ignored labels, still counted in the metric's mean


def hinge(y_true, y_pred):
    t, p = _np(y_true, np.float64), _np(y_pred, np.float64)
    t = np.where(t == 0, -1.0, t)   # 0/1 labels become -1/1
    return np.mean(np.maximum(1.0 - t * p, 0.0), axis=-1)


def cosine_similarity(y_true, y_pred, axis=-1):
    t, p = _np(y_true, np.float64), _np(y_pred, np.float64)
    t = t / np.sqrt(np.maximum((t * t).sum(axis=axis, keepdims=True), 1e-12))
    p = p / np.sqrt(np.maximum((p * p).sum(axis=axis, keepdims=True), 1e-12))
    return (t * p).sum(axis=axis)


def log_cosh(y_true, y_pred):
    x = _np(y_pred, np.float64) - _np(y_true, np.float64)
    return np.mean(x + np.log1p(np.exp(-2.0 * x)) - np.log(2.0), axis=-1)


def _via_loss(name):
    """A per-sample metric function computed by the loss function of the same name (float64 NumPy out)."""
    def fn(y_true, y_pred, **kwargs):
        from . import losses as _losses
        t = _np(y_true)
        p = _np(y_pred, np.float64)
        return _np(getattr(_losses, name)(t if t.dtype.kind in "iub" else t.astype(np.float64), p, **kwargs))
    fn.__name__ = name
    fn.__doc__ = f"Per-sample {name}, as the loss function of that name."
    return fn


kl_divergence = _via_loss("kl_divergence")
poisson = _via_loss("poisson")
squared_hinge = _via_loss("squared_hinge")
categorical_hinge = _via_loss("categorical_hinge")
huber = _via_loss("huber")
binary_focal_crossentropy = _via_loss("binary_focal_crossentropy")
categorical_focal_crossentropy = _via_loss("categorical_focal_crossentropy")


def pearson_correlation(y_true, y_pred, axis=-1):
    """mean over axis of the standardised products: Pearson's r along axis (per sample)."""
    t, p = squeeze_or_expand_to_same_rank(_np(y_true, np.float64), _np(y_pred, np.float64))
    t = t - t.mean(axis=axis, keepdims=True)
    p = p - p.mean(axis=axis, keepdims=True)
    t = t / t.std(axis=axis, keepdims=True)
    p = p / p.std(axis=axis, keepdims=True)
    return np.mean(t * p, axis=axis)


def concordance_correlation(y_true, y_pred, axis=-1):
    """Lin's concordance correlation along axis, with Keras's formula (its covariance term centres
    y_true on the mean of y_pred)."""
    t, p = squeeze_or_expand_to_same_rank(_np(y_true, np.float64), _np(y_pred, np.float64))
    tm, pm = t.mean(axis=axis, keepdims=True), p.mean(axis=axis, keepdims=True)
    tv, pv = (t - tm).var(axis=axis, keepdims=True), (p - pm).var(axis=axis, keepdims=True)
    covar = (t - pm) * (p - pm)
    return np.mean(2 * covar / (tv + pv + (tm - pm) ** 2 + _EPS), axis=axis)


_FUNCTIONS = {f.__name__: f for f in (
    accuracy, binary_accuracy, categorical_accuracy, sparse_categorical_accuracy, top_k_categorical_accuracy,
    sparse_top_k_categorical_accuracy, mean_squared_error, mean_absolute_error, mean_absolute_percentage_error,
    mean_squared_logarithmic_error, binary_crossentropy, categorical_crossentropy,
    sparse_categorical_crossentropy, hinge, cosine_similarity, log_cosh, kl_divergence, poisson, squared_hinge,
    categorical_hinge, huber, binary_focal_crossentropy, categorical_focal_crossentropy, pearson_correlation,
    concordance_correlation)}


# ---------------------------------------------------------------- mean-wrapped metric classes
# per-sample functions that compare an argmax or a label with the scores: y_true and y_pred need not have
# the same shape, so MeanMetricWrapper's shape check leaves them to their own checks
_NOT_ELEMENTWISE = (categorical_accuracy, sparse_categorical_accuracy, top_k_categorical_accuracy,
                    sparse_top_k_categorical_accuracy, sparse_categorical_crossentropy)


def _wrapper(fn, default_name, doc, order=None, **defaults):
    """__init__ taking Keras's positional order: (name, dtype, *options) unless ``order`` says otherwise
    (TopKCategoricalAccuracy: k first), so that ``BinaryAccuracy("acc")`` names the metric "acc"."""
    order = list(order) if order is not None else ["name", "dtype", *defaults]

    def __init__(self, *args, **kwargs):
        if len(args) > len(order):
            raise TypeError(f"{type(self).__name__}() takes at most {len(order)} positional arguments "
                            f"({', '.join(order)}); received {len(args)}.")
        for key, value in zip(order, args):
            if key in kwargs:
                raise TypeError(f"{type(self).__name__}() got multiple values for argument {key!r}")
            kwargs[key] = value
        values = dict(defaults)
        name, dtype = kwargs.pop("name", default_name), kwargs.pop("dtype", None)
        unknown = set(kwargs) - set(defaults)
        if unknown:
            raise TypeError(f"{type(self).__name__}() got unexpected keyword arguments {sorted(unknown)}")
        values.update(kwargs)
        MeanMetricWrapper.__init__(self, fn, name=name, dtype=dtype, **values)

    __init__.__doc__ = doc
    return __init__


class Accuracy(MeanMetricWrapper):
    """How often predictions equal labels exactly."""
    __init__ = _wrapper(accuracy, "accuracy", "Accuracy(name='accuracy', dtype=None)")


class BinaryAccuracy(MeanMetricWrapper):
    """How often (y_pred > threshold) matches the binary labels."""
    __init__ = _wrapper(binary_accuracy, "binary_accuracy", "BinaryAccuracy(name, dtype, threshold=0.5)",
                        threshold=0.5)


class CategoricalAccuracy(MeanMetricWrapper):
    """How often argmax of the prediction matches argmax of the one-hot label."""
    __init__ = _wrapper(categorical_accuracy, "categorical_accuracy", "CategoricalAccuracy(name, dtype)")


class SparseCategoricalAccuracy(MeanMetricWrapper):
    """How often argmax of the prediction matches the integer label."""
    __init__ = _wrapper(sparse_categorical_accuracy, "sparse_categorical_accuracy",
                        "SparseCategoricalAccuracy(name, dtype)")


class TopKCategoricalAccuracy(MeanMetricWrapper):
    """How often the one-hot target is among the k highest predictions."""
    __init__ = _wrapper(top_k_categorical_accuracy, "top_k_categorical_accuracy",
                        "TopKCategoricalAccuracy(k=5, name, dtype)", order=("k", "name", "dtype"), k=5)


class SparseTopKCategoricalAccuracy(MeanMetricWrapper):
    """How often the integer target is among the k highest predictions."""
    __init__ = _wrapper(sparse_top_k_categorical_accuracy, "sparse_top_k_categorical_accuracy",
                        "SparseTopKCategoricalAccuracy(k=5, name, dtype)", order=("k", "name", "dtype"), k=5)


class MeanSquaredError(MeanMetricWrapper):
    """Mean of (y_pred - y_true)^2."""
    __init__ = _wrapper(mean_squared_error, "mean_squared_error", "MeanSquaredError(name, dtype)")


class MeanAbsoluteError(MeanMetricWrapper):
    """Mean of |y_pred - y_true|."""
    __init__ = _wrapper(mean_absolute_error, "mean_absolute_error", "MeanAbsoluteError(name, dtype)")


class MeanAbsolutePercentageError(MeanMetricWrapper):
    """100 * mean of |y_true - y_pred| / |y_true|."""
    __init__ = _wrapper(mean_absolute_percentage_error, "mean_absolute_percentage_error",
                        "MeanAbsolutePercentageError(name, dtype)")


class MeanSquaredLogarithmicError(MeanMetricWrapper):
    """Mean of (log(1 + y_pred) - log(1 + y_true))^2."""
    __init__ = _wrapper(mean_squared_logarithmic_error, "mean_squared_logarithmic_error",
                        "MeanSquaredLogarithmicError(name, dtype)")


class BinaryCrossentropy(MeanMetricWrapper):
    """Running binary cross-entropy (from_logits, label_smoothing)."""
    __init__ = _wrapper(binary_crossentropy, "binary_crossentropy",
                        "BinaryCrossentropy(name, dtype, from_logits=False, label_smoothing=0)",
                        from_logits=False, label_smoothing=0.0)


class CategoricalCrossentropy(MeanMetricWrapper):
    """Running categorical cross-entropy over one-hot targets."""
    __init__ = _wrapper(categorical_crossentropy, "categorical_crossentropy",
                        "CategoricalCrossentropy(name, dtype, from_logits=False, label_smoothing=0, axis=-1)",
                        from_logits=False, label_smoothing=0, axis=-1)


class SparseCategoricalCrossentropy(MeanMetricWrapper):
    """Running categorical cross-entropy over integer targets."""
    __init__ = _wrapper(sparse_categorical_crossentropy, "sparse_categorical_crossentropy",
                        "SparseCategoricalCrossentropy(name, dtype, from_logits=False, ignore_class=None, axis=-1)",
                        from_logits=False, ignore_class=None, axis=-1)

    def update_state(self, y_true, y_pred, sample_weight=None):
        # Keras: ignored labels give 0; with sample weights they also get weight 0 (the mask is applied to
        # the weights only), without they count as zeros in the mean
        ignore = self._fn_kwargs.get("ignore_class")
        if ignore is not None and sample_weight is not None:
            t = _np(y_true)
            t = t[..., 0] if t.ndim == _np(y_pred).ndim and t.shape[-1] == 1 else t
            sw = _np(sample_weight, np.float64)
            sw = sw.reshape(sw.shape + (1,) * (t.ndim - sw.ndim))
            sample_weight = np.broadcast_to(sw, t.shape) * (t != ignore)
        MeanMetricWrapper.update_state(self, y_true, y_pred, sample_weight)



class Hinge(MeanMetricWrapper):
    """Mean of max(1 - y_true * y_pred, 0) with 0/1 labels mapped to -1/1."""
    __init__ = _wrapper(hinge, "hinge", "Hinge(name, dtype)")


class CosineSimilarity(MeanMetricWrapper):
    """Mean cosine similarity between y_true and y_pred along axis."""
    __init__ = _wrapper(cosine_similarity, "cosine_similarity", "CosineSimilarity(name, dtype, axis=-1)", axis=-1)

    def get_config(self):
        config = super().get_config()
        if config.get("axis") == -1:  # Keras 3.15's config has no axis key; a non-default one is kept
            del config["axis"]
        return config


class LogCoshError(MeanMetricWrapper):
    """Mean of log(cosh(y_pred - y_true))."""
    __init__ = _wrapper(log_cosh, "logcosh", "LogCoshError(name, dtype)")


class KLDivergence(MeanMetricWrapper):
    """Mean of sum(t log(t / p)) over the last axis."""
    __init__ = _wrapper(kl_divergence, "kl_divergence", "KLDivergence(name, dtype)")


class Poisson(MeanMetricWrapper):
    """Mean of p - t log(p + eps)."""
    __init__ = _wrapper(poisson, "poisson", "Poisson(name, dtype)")


class SquaredHinge(MeanMetricWrapper):
    """Mean of max(1 - t p, 0)^2 with 0/1 labels mapped to -1/1."""
    __init__ = _wrapper(squared_hinge, "squared_hinge", "SquaredHinge(name, dtype)")


class CategoricalHinge(MeanMetricWrapper):
    """Mean of max(0, 1 + max((1 - t) p) - sum(t p)) for one-hot targets."""
    __init__ = _wrapper(categorical_hinge, "categorical_hinge", "CategoricalHinge(name, dtype)")


class PearsonCorrelation(MeanMetricWrapper):
    """Mean over samples of Pearson's correlation along axis."""
    __init__ = _wrapper(pearson_correlation, "pearson_correlation", "PearsonCorrelation(name, dtype, axis=-1)",
                        axis=-1)


class ConcordanceCorrelation(MeanMetricWrapper):
    """Mean over samples of Lin's concordance correlation along axis."""
    __init__ = _wrapper(concordance_correlation, "concordance_correlation",
                        "ConcordanceCorrelation(name, dtype, axis=-1)", axis=-1)


class R2Score(Metric):
    """Coefficient of determination 1 - SS_res / SS_tot per output column, from running weighted sums.

    Args: class_aggregation ('uniform_average', 'variance_weighted_average' or None for one score per
    column), num_regressors (> 0: the adjusted R^2 with n = number of target entries seen), name, dtype."""

    def __init__(self, class_aggregation="uniform_average", num_regressors=0, name="r2_score", dtype=None):
        if class_aggregation not in (None, "uniform_average", "variance_weighted_average"):
            raise ValueError("Invalid value for argument `class_aggregation`. Expected one of "
                             "(None, 'uniform_average', 'variance_weighted_average'). "
                             f"Received: class_aggregation={class_aggregation}")
        if num_regressors < 0:
            raise ValueError("Invalid value for argument `num_regressors`. Expected a value >= 0. "
                             f"Received: num_regressors={num_regressors}")
        self.class_aggregation, self.num_regressors = class_aggregation, num_regressors
        super().__init__(name=name, dtype=dtype)

    def reset_state(self):
        self.sum = self.squared_sum = self.total_mse = self.count = None
        self.num_samples = 0

    def _state(self):
        return [v for v in (self.sum, self.squared_sum, self.total_mse, self.count) if v is not None] + \
            [self.num_samples]

    def update_state(self, y_true, y_pred, sample_weight=None):
        t, p = squeeze_or_expand_to_same_rank(_np(y_true, np.float64), _np(y_pred, np.float64))
        if t.ndim == 1:
            t, p = t[:, None], p[:, None]
        if t.ndim != 2:
            raise ValueError(f"R2Score expects 2D inputs (batch_size, output_dim); received y_true.shape={t.shape}")
        if t.shape != p.shape:
            raise ValueError(f"R2Score: y_true and y_pred must have the same shape; received y_true of shape "
                             f"{t.shape} and y_pred of shape {p.shape}.")
        w = np.ones(1) if sample_weight is None else _np(sample_weight, np.float64)
        if w.ndim == 1:
            w = w[:, None]
        w = _broadcast(w, t.shape)
        if self.sum is None:
            self.sum, self.squared_sum, self.total_mse, self.count = (np.zeros(t.shape[1]) for _ in range(4))
        self.sum = self.sum + (t * w).sum(0)
        self.squared_sum = self.squared_sum + (t * t * w).sum(0)
        self.total_mse = self.total_mse + ((t - p) ** 2 * w).sum(0)
        self.count = self.count + w.sum(0)
        self.num_samples += t.size

    def result(self):
        if self.sum is None:
            return 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = self.sum / self.count
            total = self.squared_sum - self.sum * mean
            raw = 1.0 - self.total_mse / total
        raw = np.where(np.isinf(raw), 0.0, raw)
        if self.class_aggregation == "uniform_average":
            r2 = raw.mean()
        elif self.class_aggregation == "variance_weighted_average":
            r2 = (total * raw).sum() / total.sum()
        else:
            r2 = raw
        n, k = self.num_samples, self.num_regressors
        if k and k > n - 1:
            warnings.warn("More independent predictors than datapoints in adjusted R2 score. "
                          "Falling back to standard R2 score.", stacklevel=2)
        elif k and k == n - 1:
            warnings.warn("Division by zero in Adjusted R2 score. Falling back to standard R2 score.", stacklevel=2)
        elif k:
            r2 = 1.0 - (1.0 - r2) * (n - 1.0) / (n - k - 1.0)
        return float(r2) if np.ndim(r2) == 0 else r2

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "class_aggregation": self.class_aggregation,
                "num_regressors": self.num_regressors}


class RootMeanSquaredError(Mean):
    """sqrt of the running (weighted) mean of (y_pred - y_true)^2."""

    def __init__(self, name="root_mean_squared_error", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = squeeze_or_expand_to_same_rank(_np(y_true, np.float64), _np(y_pred, np.float64))
        try:
            np.broadcast_shapes(y_true.shape, y_pred.shape)
        except ValueError:
            raise ValueError(f"{type(self).__name__}: y_true and y_pred must have the same shape; received y_true "
                             f"of shape {y_true.shape} and y_pred of shape {y_pred.shape}.") from None
        super().update_state((y_pred - y_true) ** 2, sample_weight)

    def result(self):
        return float(np.sqrt(super().result()))


# ---------------------------------------------------------------- confusion-matrix metrics
def _prepare_confusion(y_true, y_pred, sample_weight, class_id, top_k):
    """Flattened labels (bool), scores and weights, after class_id / top_k selection as Keras does."""
    y_true, y_pred = _np(y_true, np.float64), _np(y_pred, np.float64)
    y_true, y_pred = squeeze_or_expand_to_same_rank(y_true, y_pred)
    if y_true.shape != y_pred.shape:
        try:
            y_true = np.broadcast_to(y_true, y_pred.shape)
        except ValueError:
            raise ValueError(f"y_true and y_pred must have the same shape; received y_true of shape "
                             f"{y_true.shape} and y_pred of shape {y_pred.shape}.") from None
    sw = None
    if sample_weight is not None:
        sw = _np(sample_weight, np.float64)
        sw, _ = squeeze_or_expand_to_same_rank(sw, y_pred)
        if sw.ndim < y_pred.ndim:
            sw = sw.reshape(sw.shape + (1,) * (y_pred.ndim - sw.ndim))
        try:
            sw = np.broadcast_to(sw, y_pred.shape)
        except ValueError:
            raise ValueError(f"sample_weight of shape {np.shape(sample_weight)} does not fit y_pred of shape "
                             f"{y_pred.shape}; expected a scalar, shape {y_pred.shape[:1]} or "
                             f"{y_pred.shape}.") from None
    if top_k is not None:
        # keep the k highest scores per row; the others can never exceed a threshold
        kth = -np.sort(-y_pred, axis=-1)[..., top_k - 1:top_k]
        y_pred = np.where(y_pred >= kth, y_pred, -np.inf)
    if class_id is not None:
        y_true, y_pred = y_true[..., class_id], y_pred[..., class_id]
        sw = None if sw is None else sw[..., class_id]
    y_true = y_true.reshape(-1) != 0
    y_pred = y_pred.reshape(-1)
    sw = np.ones_like(y_pred) if sw is None else sw.reshape(-1)
    return y_true, y_pred, sw


def _thresholds_list(thresholds, default):
    if thresholds is None:
        return [default], True
    if isinstance(thresholds, (list, tuple, np.ndarray)):
        return [float(t) for t in thresholds], False
    return [float(thresholds)], True


class _ConfusionMetric(Metric):
    """Counts of true/false positives/negatives at each threshold (prediction > threshold)."""

    def _counts(self, y_true, y_pred, sample_weight, class_id=None, top_k=None):
        t, p, w = _prepare_confusion(y_true, y_pred, sample_weight, class_id, top_k)
        above = p[None, :] > np.asarray(self._thresholds)[:, None]     # (T, N)
        pos, neg = w * t, w * ~t
        tp = above @ pos
        fp = above @ neg
        return tp, fp, pos.sum() - tp, neg.sum() - fp

    def _state(self):
        return [getattr(self, k) for k in ("true_positives", "false_positives", "false_negatives", "true_negatives")
                if hasattr(self, k)]

    def _out(self, values):
        return float(values[0]) if self._single else values


def _div(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.where(b != 0, a / np.where(b != 0, b, 1.0), 0.0)


class Precision(_ConfusionMetric):
    """true positives / (true positives + false positives), at each of ``thresholds`` (default 0.5).

    Args: thresholds (float or list; a list gives a list of results), top_k (only the k highest scores
    of each row count as predicted), class_id (only this column), name, dtype.
    """

    def __init__(self, thresholds=None, top_k=None, class_id=None, name=None, dtype=None):
        self.init_thresholds, self.top_k, self.class_id = thresholds, top_k, class_id
        default = -np.inf if top_k is not None else 0.5  # with top_k, every kept score counts
        self._thresholds, self._single = _thresholds_list(thresholds, default)
        super().__init__(name=name, dtype=dtype)

    def reset_state(self):
        n = len(self._thresholds)
        self.true_positives, self.false_positives = np.zeros(n), np.zeros(n)

    def update_state(self, y_true, y_pred, sample_weight=None):
        tp, fp, _, _ = self._counts(y_true, y_pred, sample_weight, self.class_id, self.top_k)
        self.true_positives += tp
        self.false_positives += fp

    def result(self):
        return self._out(_div(self.true_positives, self.true_positives + self.false_positives))

    def get_config(self):
        config = super().get_config()
        config.update({"thresholds": self.init_thresholds, "top_k": self.top_k, "class_id": self.class_id})
        return config


class Recall(_ConfusionMetric):
    """true positives / (true positives + false negatives), at each of ``thresholds`` (default 0.5).

    Args: thresholds, top_k, class_id, name, dtype (as Precision).
    """

    def __init__(self, thresholds=None, top_k=None, class_id=None, name=None, dtype=None):
        self.init_thresholds, self.top_k, self.class_id = thresholds, top_k, class_id
        default = -np.inf if top_k is not None else 0.5
        self._thresholds, self._single = _thresholds_list(thresholds, default)
        super().__init__(name=name, dtype=dtype)

    def reset_state(self):
        n = len(self._thresholds)
        self.true_positives, self.false_negatives = np.zeros(n), np.zeros(n)

    def update_state(self, y_true, y_pred, sample_weight=None):
        tp, _, fn, _ = self._counts(y_true, y_pred, sample_weight, self.class_id, self.top_k)
        self.true_positives += tp
        self.false_negatives += fn

    def result(self):
        return self._out(_div(self.true_positives, self.true_positives + self.false_negatives))

    def get_config(self):
        config = super().get_config()
        config.update({"thresholds": self.init_thresholds, "top_k": self.top_k, "class_id": self.class_id})
        return config


class _SimpleCount(_ConfusionMetric):
    _which = 0

    def __init__(self, thresholds=None, name=None, dtype=None):
        self.init_thresholds = thresholds
        self._thresholds, self._single = _thresholds_list(thresholds, 0.5)
        super().__init__(name=name, dtype=dtype)

    def reset_state(self):
        self.accumulator = np.zeros(len(self._thresholds))

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.accumulator += self._counts(y_true, y_pred, sample_weight)[self._which]

    def result(self):
        return self._out(self.accumulator)

    def get_config(self):
        config = super().get_config()
        config["thresholds"] = self.init_thresholds
        return config


class TruePositives(_SimpleCount):
    """Weighted count of predictions above threshold whose label is positive."""
    _which = 0


class FalsePositives(_SimpleCount):
    _which = 1


class FalseNegatives(_SimpleCount):
    _which = 2


class TrueNegatives(_SimpleCount):
    _which = 3


class AUC(Metric):
    """Area under the ROC or precision-recall curve, from confusion counts at num_thresholds thresholds.

    Thresholds are ``[-1e-7, 1/(n-1), 2/(n-1), ..., 1 + 1e-7]`` (Keras's). ROC: the trapezoid rule over
    (false positive rate, recall); PR with 'interpolation': the Davis & Goadrich interpolation Keras uses.
    summation_method 'minoring' / 'majoring' take the lower / upper Riemann sums.

    Args: num_thresholds=200, curve='ROC' | 'PR', summation_method='interpolation', name, dtype,
    thresholds (explicit list inside (0, 1)), multi_label=False (one AUC per label column, then their
    mean, weighted by label_weights), num_labels, label_weights, from_logits=False.
    """

    def __init__(self, num_thresholds=200, curve="ROC", summation_method="interpolation", name=None, dtype=None,
                 thresholds=None, multi_label=False, num_labels=None, label_weights=None, from_logits=False):
        curve, summation_method = str(curve).upper(), str(summation_method).lower()
        if curve not in ("ROC", "PR"):
            raise ValueError(f"AUC: invalid curve {curve!r}. Valid: 'ROC', 'PR'.")
        if summation_method not in ("interpolation", "minoring", "majoring"):
            raise ValueError(f"AUC: invalid summation_method {summation_method!r}. "
                             "Valid: 'interpolation', 'minoring', 'majoring'.")
        if thresholds is not None:
            inner = sorted(float(t) for t in thresholds)
            num_thresholds = len(inner) + 2
        else:
            if num_thresholds <= 1:
                raise ValueError(f"AUC: num_thresholds must be > 1. Received: {num_thresholds}")
            inner = [(i + 1) / (num_thresholds - 1) for i in range(num_thresholds - 2)]
        self.num_thresholds, self.curve, self.summation_method = num_thresholds, curve, summation_method
        self._init_from_thresholds = thresholds is not None
        self._thresholds = np.array([0.0 - _EPS] + inner + [1.0 + _EPS])
        self.multi_label, self.num_labels, self.from_logits = bool(multi_label), num_labels, from_logits
        self.label_weights = None if label_weights is None else np.asarray(label_weights, np.float64)
        super().__init__(name=name, dtype=dtype)

    @property
    def thresholds(self):
        return list(self._thresholds)

    def reset_state(self):
        shape = (self.num_thresholds, self.num_labels) if self.multi_label and self.num_labels else (self.num_thresholds,)
        if self.multi_label and not self.num_labels:
            shape = None  # built on the first update, once the number of labels is known
        for k in ("true_positives", "false_positives", "true_negatives", "false_negatives"):
            setattr(self, k, None if shape is None else np.zeros(shape))

    def _state(self):
        return [self.true_positives, self.true_negatives, self.false_positives, self.false_negatives]

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = _np(y_true, np.float64), _np(y_pred, np.float64)
        y_true, y_pred = squeeze_or_expand_to_same_rank(y_true, y_pred)
        if self.from_logits:
            y_pred = 1.0 / (1.0 + np.exp(-y_pred))
        y_true = _broadcast(y_true, y_pred.shape, "y_true")
        if sample_weight is None:
            sw = np.ones(y_pred.shape)
        else:
            sw = _np(sample_weight, np.float64)
            sw, _ = squeeze_or_expand_to_same_rank(sw, y_pred)
            if sw.ndim < y_pred.ndim:
                sw = sw.reshape(sw.shape + (1,) * (y_pred.ndim - sw.ndim))
            sw = _broadcast(sw, y_pred.shape)
        if self.multi_label:
            L = y_pred.shape[-1]
            t, p, w = (a.reshape(-1, L) for a in (y_true, y_pred, sw))
            if self.true_positives is None:
                self.num_labels = L
                self.reset_state()
            for k, v in zip(("true_positives", "false_positives", "false_negatives", "true_negatives"),
                            self._bucket_counts(t, p, w)):
                setattr(self, k, getattr(self, k) + v)
        else:
            counts = self._bucket_counts(y_true.reshape(-1, 1), y_pred.reshape(-1, 1), sw.reshape(-1, 1))
            for k, v in zip(("true_positives", "false_positives", "false_negatives", "true_negatives"), counts):
                setattr(self, k, getattr(self, k) + v[:, 0])

    def _bucket_counts(self, t, p, w):
        """Counts at every threshold in O(N + T) per label: bucket each score by how many thresholds lie
        strictly below it, then sum the buckets from the top (score > threshold_j iff bucket > j)."""
        T = self.num_thresholds
        pos = (t > 0) * w
        neg = (t <= 0) * w
        bucket = np.searchsorted(self._thresholds, p.reshape(-1), side="left").reshape(p.shape)  # 0..T
        L = p.shape[1]
        flat = (bucket + (T + 1) * np.arange(L)[None, :]).reshape(-1)
        hist_pos = np.bincount(flat, weights=pos.reshape(-1), minlength=(T + 1) * L).reshape(L, T + 1)
        hist_neg = np.bincount(flat, weights=neg.reshape(-1), minlength=(T + 1) * L).reshape(L, T + 1)
        # tp[j] = sum over buckets b > j
        tp = np.cumsum(hist_pos[:, ::-1], axis=1)[:, ::-1][:, 1:].T   # (T, L)
        fp = np.cumsum(hist_neg[:, ::-1], axis=1)[:, ::-1][:, 1:].T
        fn = pos.sum(axis=0)[None, :] - tp
        tn = neg.sum(axis=0)[None, :] - fp
        return tp, fp, fn, tn

    def _interpolate_pr_auc(self, tp, fp, fn):
        dtp = tp[:-1] - tp[1:]
        p = tp + fp
        dp = p[:-1] - p[1:]
        slope = _div(dtp, np.maximum(dp, 0))
        intercept = tp[1:] - slope * p[1:]
        both = (p[:-1] > 0) & (p[1:] > 0)
        ratio = np.where(both, _div(p[:-1], np.maximum(p[1:], 0)), 1.0)
        with np.errstate(divide="ignore", invalid="ignore"):
            logr = np.log(np.where(ratio > 0, ratio, 1.0))
        inc = _div(slope * (dtp + intercept * logr), np.maximum(tp[1:] + fn[1:], 0))
        return inc.sum(axis=0)

    def result(self):
        if self.true_positives is None:
            return 0.0
        tp, fp, fn, tn = self.true_positives, self.false_positives, self.false_negatives, self.true_negatives
        if self.curve == "PR" and self.summation_method == "interpolation":
            per = self._interpolate_pr_auc(tp, fp, fn)
        else:
            recall = _div(tp, tp + fn)
            if self.curve == "ROC":
                x, y = _div(fp, fp + tn), recall
            else:
                x, y = recall, _div(tp, tp + fp)
            if self.summation_method == "interpolation":
                h = (y[:-1] + y[1:]) / 2.0
            elif self.summation_method == "minoring":
                h = np.minimum(y[:-1], y[1:])
            else:
                h = np.maximum(y[:-1], y[1:])
            per = ((x[:-1] - x[1:]) * h).sum(axis=0)
        if self.multi_label:
            if self.label_weights is None:
                return float(np.mean(per))
            return float(np.sum(per * self.label_weights) / np.sum(self.label_weights))
        return float(per)

    def get_config(self):
        config = super().get_config()
        config.update({"num_thresholds": self.num_thresholds, "curve": self.curve,
                       "summation_method": self.summation_method, "multi_label": self.multi_label,
                       "num_labels": self.num_labels, "from_logits": self.from_logits,
                       "label_weights": None if self.label_weights is None else self.label_weights.tolist()})
        if self._init_from_thresholds:
            config["thresholds"] = [float(t) for t in self._thresholds[1:-1]]
        return config


class FBetaScore(Metric):
    """F-beta score per class over (batch, classes) predictions, Keras's formula.

    Predictions are binarised at ``threshold`` (None: the highest score of each row counts as 1).
    ``f = (1 + beta^2) * P * R / (beta^2 * P + R)`` per class; average None (per-class array), 'micro'
    (global counts), 'macro' (plain mean), 'weighted' (mean weighted by the support).
    """

    def __init__(self, average=None, beta=1.0, threshold=None, name="fbeta_score", dtype=None):
        if average not in (None, "micro", "macro", "weighted"):
            raise ValueError(f"{type(self).__name__}: invalid average {average!r}. "
                             "Valid: None, 'micro', 'macro', 'weighted'.")
        if not isinstance(beta, (int, float)) or beta <= 0:
            raise ValueError(f"{type(self).__name__}: beta must be a float > 0. Received: beta={beta!r}")
        if threshold is not None and not 0.0 < threshold <= 1.0:
            raise ValueError(f"{type(self).__name__}: threshold must be in (0, 1]. Received: {threshold!r}")
        self.average, self.beta, self.threshold = average, float(beta), threshold
        super().__init__(name=name, dtype=dtype)

    def reset_state(self):
        # once built (the class count known), reset keeps one zero per class, as Keras's variables do, so
        # result() after reset_state() has the same shape as before
        built = getattr(self, "true_positives", None)
        if built is None:
            self.true_positives = self.false_positives = self.false_negatives = self.intermediate_weights = None
        else:
            self.true_positives, self.false_positives, self.false_negatives, self.intermediate_weights = (
                np.zeros_like(built) for _ in range(4))

    def _state(self):
        return [self.true_positives, self.false_positives, self.false_negatives, self.intermediate_weights]

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = _np(y_true, np.float64), _np(y_pred, np.float64)
        if y_pred.ndim != 2 or y_true.shape != y_pred.shape:
            raise ValueError(f"{type(self).__name__} expects y_true and y_pred of the same shape (batch, classes). "
                             f"Received: y_true {y_true.shape}, y_pred {y_pred.shape}.")
        if self.threshold is None:
            top = y_pred.max(axis=-1, keepdims=True)
            pred = ((y_pred >= top) & (np.abs(y_pred) > 1e-9)).astype(np.float64)
        else:
            pred = (y_pred > self.threshold).astype(np.float64)
        w = np.ones((y_true.shape[0], 1)) if sample_weight is None else _np(sample_weight, np.float64).reshape(-1, 1)
        if w.shape[0] not in (1, y_true.shape[0]):
            raise ValueError(f"{type(self).__name__}: sample_weight must hold one weight per sample "
                             f"({y_true.shape[0]}); received sample_weight of shape {np.shape(sample_weight)}.")
        tp = (pred * y_true * w).sum(axis=0)
        fp = (pred * (1.0 - y_true) * w).sum(axis=0)
        fn = ((1.0 - pred) * y_true * w).sum(axis=0)
        iw = (y_true * w).sum(axis=0)
        if self.true_positives is None:
            self.true_positives, self.false_positives, self.false_negatives, self.intermediate_weights = tp, fp, fn, iw
        else:
            self.true_positives = self.true_positives + tp
            self.false_positives = self.false_positives + fp
            self.false_negatives = self.false_negatives + fn
            self.intermediate_weights = self.intermediate_weights + iw

    def result(self):
        if self.true_positives is None:
            return 0.0
        tp, fp, fn = self.true_positives, self.false_positives, self.false_negatives
        if self.average == "micro":
            tp, fp, fn = tp.sum(), fp.sum(), fn.sum()
        precision = tp / (tp + fp + _EPS)
        recall = tp / (tp + fn + _EPS)
        b2 = self.beta ** 2
        f = (1.0 + b2) * (precision * recall) / (b2 * precision + recall + _EPS)
        if self.average == "weighted":
            weights = self.intermediate_weights / (self.intermediate_weights.sum() + _EPS)
            return float(np.sum(f * weights))
        if self.average is not None:
            return float(np.mean(f))
        return f

    def get_config(self):
        config = super().get_config()
        config.update({"average": self.average, "beta": self.beta, "threshold": self.threshold})
        return config


class F1Score(FBetaScore):
    """F1 score (FBetaScore with beta=1). Args: average=None, threshold=None, name='f1_score', dtype."""

    def __init__(self, average=None, threshold=None, name="f1_score", dtype=None):
        super().__init__(average=average, beta=1.0, threshold=threshold, name=name, dtype=dtype)

    def get_config(self):
        config = super().get_config()
        del config["beta"]
        return config


class MeanIoU(Metric):
    """Mean intersection-over-union over classes, from a running (num_classes, num_classes) confusion matrix.

    IoU_c = TP_c / (TP_c + FP_c + FN_c); the mean is over classes that appear (non-zero denominator).
    Args: num_classes, name, dtype, ignore_class (label to skip), sparse_y_true=True, sparse_y_pred=True
    (False: take the argmax over axis), axis=-1.
    """

    def __init__(self, num_classes, name=None, dtype=None, ignore_class=None, sparse_y_true=True,
                 sparse_y_pred=True, axis=-1):
        self.num_classes, self.ignore_class = int(num_classes), ignore_class
        self.sparse_y_true, self.sparse_y_pred, self.axis = sparse_y_true, sparse_y_pred, axis
        super().__init__(name=name, dtype=dtype)

    def reset_state(self):
        self.total_cm = np.zeros((self.num_classes, self.num_classes))

    def _state(self):
        return [self.total_cm]

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = _np(y_true), _np(y_pred)
        if not self.sparse_y_true:
            y_true = np.argmax(y_true, axis=self.axis)
        if not self.sparse_y_pred:
            y_pred = np.argmax(y_pred, axis=self.axis)
        t = y_true.reshape(-1).astype(np.int64)
        p = y_pred.reshape(-1).astype(np.int64)
        if t.size != p.size:
            raise ValueError(f"{type(self).__name__}: y_true and y_pred must hold one label each per sample; "
                             f"received y_true of shape {y_true.shape} and y_pred of shape {y_pred.shape}"
                             f"{'' if self.sparse_y_true and self.sparse_y_pred else ' (after the argmax)'}.")
        w = np.ones(t.shape)
        if sample_weight is not None:
            # flattened like the labels, as Keras does: (N,), (N, 1) and a scalar all fit (N,) labels
            w = _np(sample_weight, np.float64).reshape(-1)
            if w.size == 1:
                w = np.broadcast_to(w, t.shape)
            elif w.size != t.size:
                raise ValueError(f"{type(self).__name__}: sample_weight must have one weight per label "
                                 f"({t.size}); received sample_weight of shape {np.shape(sample_weight)} for "
                                 f"y_true of shape {y_true.shape}.")
        keep = (t >= 0) & (t < self.num_classes) & (p >= 0) & (p < self.num_classes)
        if self.ignore_class is not None:
            keep &= t != self.ignore_class
        n = self.num_classes
        self.total_cm += np.bincount(t[keep] * n + p[keep], weights=w[keep], minlength=n * n).reshape(n, n)

    def result(self):
        cm = self.total_cm
        tp = np.diag(cm)
        denom = cm.sum(axis=0) + cm.sum(axis=1) - tp
        valid = np.count_nonzero(denom)
        iou = _div(tp, denom)
        return float(iou.sum() / valid) if valid else 0.0

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "ignore_class": self.ignore_class,
                       "sparse_y_true": self.sparse_y_true, "sparse_y_pred": self.sparse_y_pred,
                       "axis": self.axis})
        return config


class _AtConstraint(_ConfusionMetric):
    """Base of PrecisionAtRecall and its siblings: confusion counts at num_thresholds evenly spaced
    thresholds in [0, 1]; the result is the best dependent rate among thresholds meeting the constraint."""
    _value_key = "value"

    def __init__(self, value, num_thresholds=200, class_id=None, name=None, dtype=None):
        if not 0 <= value <= 1:
            raise ValueError(f"Argument `{self._value_key}` must be in the range [0, 1]. "
                             f"Received: {self._value_key}={value}")
        if num_thresholds <= 0:
            raise ValueError(f"Argument `num_thresholds` must be an integer > 0. Received: num_thresholds={num_thresholds}")
        self.value, self.num_thresholds, self.class_id = value, num_thresholds, class_id
        if num_thresholds == 1:
            self.thresholds = [0.5]
        else:
            self.thresholds = [0.0] + [(i + 1) / (num_thresholds - 1) for i in range(num_thresholds - 2)] + [1.0]
        self._thresholds, self._single = self.thresholds, False
        super().__init__(name=name, dtype=dtype)

    def reset_state(self):
        n = len(self.thresholds)
        self.true_positives, self.false_positives = np.zeros(n), np.zeros(n)
        self.false_negatives, self.true_negatives = np.zeros(n), np.zeros(n)

    def update_state(self, y_true, y_pred, sample_weight=None):
        tp, fp, fn, tn = self._counts(y_true, y_pred, sample_weight, self.class_id)
        self.true_positives += tp
        self.false_positives += fp
        self.false_negatives += fn
        self.true_negatives += tn

    def _rates(self):
        tp, fp, fn, tn = self.true_positives, self.false_positives, self.false_negatives, self.true_negatives
        return {"recall": _div(tp, tp + fn), "precision": _div(tp, tp + fp), "specificity": _div(tn, tn + fp)}

    def _best(self, constrained, dependent):
        feasible = constrained >= self.value
        return float(np.max(np.where(feasible, dependent, 0.0), initial=0.0))

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, self._value_key: self.value,
                "num_thresholds": self.num_thresholds, "class_id": self.class_id}


class SensitivityAtSpecificity(_AtConstraint):
    """The best sensitivity (recall) among thresholds whose specificity is >= ``specificity``."""
    _value_key = "specificity"

    def __init__(self, specificity, num_thresholds=200, class_id=None, name=None, dtype=None):
        super().__init__(specificity, num_thresholds, class_id, name, dtype)

    def result(self):
        r = self._rates()
        return self._best(r["specificity"], r["recall"])


class SpecificityAtSensitivity(_AtConstraint):
    """The best specificity among thresholds whose sensitivity (recall) is >= ``sensitivity``."""
    _value_key = "sensitivity"

    def __init__(self, sensitivity, num_thresholds=200, class_id=None, name=None, dtype=None):
        super().__init__(sensitivity, num_thresholds, class_id, name, dtype)

    def result(self):
        r = self._rates()
        return self._best(r["recall"], r["specificity"])


class PrecisionAtRecall(_AtConstraint):
    """The best precision among thresholds whose recall is >= ``recall``."""
    _value_key = "recall"

    def __init__(self, recall, num_thresholds=200, class_id=None, name=None, dtype=None):
        super().__init__(recall, num_thresholds, class_id, name, dtype)

    def result(self):
        r = self._rates()
        return self._best(r["recall"], r["precision"])


class RecallAtPrecision(_AtConstraint):
    """The best recall among thresholds whose precision is >= ``precision``."""
    _value_key = "precision"

    def __init__(self, precision, num_thresholds=200, class_id=None, name=None, dtype=None):
        super().__init__(precision, num_thresholds, class_id, name, dtype)

    def result(self):
        r = self._rates()
        return self._best(r["precision"], r["recall"])


class IoU(MeanIoU):
    """Intersection-over-union averaged over ``target_class_ids`` only (Keras's formula:
    TP / (TP + FP + FN + eps), classes with an empty denominator left out of the mean)."""

    def __init__(self, num_classes, target_class_ids, name=None, dtype=None, ignore_class=None, sparse_y_true=True,
                 sparse_y_pred=True, axis=-1):
        if max(target_class_ids) >= num_classes:
            raise ValueError(f"Target class id {max(target_class_ids)} is out of range, which is [0, {num_classes}).")
        self.target_class_ids = list(target_class_ids)
        super().__init__(num_classes, name=name, dtype=dtype or "int32", ignore_class=ignore_class,
                         sparse_y_true=sparse_y_true, sparse_y_pred=sparse_y_pred, axis=axis)

    def result(self):
        cm = self.total_cm
        tp = np.diag(cm)
        denom = (cm.sum(axis=0) + cm.sum(axis=1) - tp)[self.target_class_ids]
        tp = tp[self.target_class_ids]
        valid = denom > 1e-9
        iou = np.where(valid, tp / (denom + _EPS), 0.0)
        return float(iou.sum() / (valid.sum() + _EPS))

    def get_config(self):
        config = super().get_config()
        config["target_class_ids"] = self.target_class_ids
        return config


class BinaryIoU(IoU):
    """IoU for binary labels; predictions >= threshold count as class 1."""

    def __init__(self, target_class_ids=(0, 1), threshold=0.5, name=None, dtype=None):
        self.threshold = threshold
        super().__init__(2, target_class_ids, name=name, dtype=dtype or "int32")

    def update_state(self, y_true, y_pred, sample_weight=None):
        super().update_state(y_true, (_np(y_pred, np.float32) >= self.threshold).astype(np.int64), sample_weight)

    def get_config(self):
        return {"target_class_ids": self.target_class_ids, "threshold": self.threshold, "name": self.name,
                "dtype": self.dtype}


class OneHotIoU(IoU):
    """IoU for one-hot labels (argmax taken over axis); sparse_y_pred=False takes the argmax of y_pred too."""

    def __init__(self, num_classes, target_class_ids, name=None, dtype=None, ignore_class=None, sparse_y_pred=False,
                 axis=-1):
        super().__init__(num_classes, target_class_ids, name=name, dtype=dtype or "int32", ignore_class=ignore_class,
                         sparse_y_true=False, sparse_y_pred=sparse_y_pred, axis=axis)

    def get_config(self):
        config = super().get_config()
        del config["sparse_y_true"]
        return config


class OneHotMeanIoU(MeanIoU):
    """MeanIoU for one-hot labels."""

    def __init__(self, num_classes, name=None, dtype=None, ignore_class=None, sparse_y_pred=False, axis=-1):
        super().__init__(num_classes, name=name, dtype=dtype or "int32", ignore_class=ignore_class, sparse_y_true=False,
                         sparse_y_pred=sparse_y_pred, axis=axis)

    def get_config(self):
        config = super().get_config()
        del config["sparse_y_true"]
        return config


# ---------------------------------------------------------------- lookup
_BY_NAME = {
    "binary_accuracy": BinaryAccuracy, "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "top_k_categorical_accuracy": TopKCategoricalAccuracy,
    "sparse_top_k_categorical_accuracy": SparseTopKCategoricalAccuracy,
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
    "mape": MeanAbsolutePercentageError, "mean_absolute_percentage_error": MeanAbsolutePercentageError,
    "msle": MeanSquaredLogarithmicError, "mean_squared_logarithmic_error": MeanSquaredLogarithmicError,
    "rmse": RootMeanSquaredError, "root_mean_squared_error": RootMeanSquaredError,
    "binary_crossentropy": BinaryCrossentropy, "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "hinge": Hinge, "cosine_similarity": CosineSimilarity, "logcosh": LogCoshError,
    "auc": AUC, "precision": Precision, "recall": Recall, "f1_score": F1Score, "fbeta_score": FBetaScore,
    "true_positives": TruePositives, "false_positives": FalsePositives,
    "true_negatives": TrueNegatives, "false_negatives": FalseNegatives,
    "kl_divergence": KLDivergence, "kld": KLDivergence, "poisson": Poisson, "squared_hinge": SquaredHinge,
    "categorical_hinge": CategoricalHinge, "pearson_correlation": PearsonCorrelation,
    "concordance_correlation": ConcordanceCorrelation, "r2_score": R2Score,
    "bce": BinaryCrossentropy, "BCE": BinaryCrossentropy,
}


def get(identifier):
    """A Metric from a Keras name ('mse', 'auc', 'sparse_categorical_accuracy', ...), a class name, a
    ``{'class_name', 'config'}`` dict, a Metric (returned as is) or a function ``fn(y_true, y_pred)``
    (wrapped in MeanMetricWrapper). Keras's names all resolve (snake-case class names too: 'accuracy' gives
    Accuracy, exact matches, as Keras's get; model.compile chooses binary, categorical or sparse accuracy for
    'accuracy' and 'acc' itself)."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        cls = (_BY_NAME.get(identifier) or _BY_NAME.get(identifier.lower()) or _CLASSES.get(identifier)
               or _snake_names().get(identifier))
        if cls is None or identifier in ("Metric", "MeanMetricWrapper"):
            hint = (" In model.compile 'acc' (like 'accuracy') is chosen from the loss; here use BinaryAccuracy, "
                    "CategoricalAccuracy or SparseCategoricalAccuracy." if identifier.lower() == "acc" else "")
            raise ValueError(f"Unknown metric {identifier!r}. Valid names: {', '.join(sorted(_BY_NAME))} "
                             f"(and the class names).{hint}")
        return cls()
    if isinstance(identifier, type) and issubclass(identifier, Metric):
        return identifier()
    if callable(identifier):
        return MeanMetricWrapper(identifier, name=getattr(identifier, "__name__", None))
    raise ValueError(f"Could not interpret metric identifier: {identifier!r}")


def _snake_names():
    """Every public metric class by its snake-case name, as Keras's get finds them ('accuracy' -> Accuracy (exact
    match; model.compile chooses its own for 'accuracy'), 'mean' -> Mean, 'log_cosh_error', 'binary_io_u')."""
    return {_snake(name): cls for name, cls in _CLASSES.items()
            if not name.startswith("_") and name not in ("Metric", "MeanMetricWrapper")}


def deserialize(config, custom_objects=None):
    name = config.get("class_name")
    cls = (custom_objects or {}).get(name) or _CLASSES.get(name)
    if cls is None:
        raise ValueError(f"Unknown metric class {name!r}. Valid: {', '.join(sorted(_CLASSES))}.")
    return cls.from_config(config.get("config", {}))


def _snake(name):
    out = []
    for i, c in enumerate(name):
        if c.isupper() and i and (not name[i - 1].isupper() or (i + 1 < len(name) and name[i + 1].islower())):
            out.append("_")
        out.append(c.lower())
    return "".join(out)


# Keras's short function aliases
mse, mae, mape, msle = mean_squared_error, mean_absolute_error, mean_absolute_percentage_error, \
    mean_squared_logarithmic_error

__all__ = ["Metric", "Mean", "Sum", "MeanMetricWrapper", "Accuracy", "BinaryAccuracy", "CategoricalAccuracy",
           "SparseCategoricalAccuracy", "TopKCategoricalAccuracy", "SparseTopKCategoricalAccuracy",
           "MeanSquaredError", "MeanAbsoluteError", "MeanAbsolutePercentageError", "MeanSquaredLogarithmicError",
           "RootMeanSquaredError", "BinaryCrossentropy", "CategoricalCrossentropy", "SparseCategoricalCrossentropy",
           "Hinge", "CosineSimilarity", "LogCoshError", "Precision", "Recall", "TruePositives", "FalsePositives",
           "TrueNegatives", "FalseNegatives", "AUC", "FBetaScore", "F1Score", "MeanIoU", "get", "deserialize",
           "KLDivergence", "Poisson", "SquaredHinge", "CategoricalHinge", "PearsonCorrelation",
           "ConcordanceCorrelation", "R2Score", "SensitivityAtSpecificity", "SpecificityAtSensitivity",
           "PrecisionAtRecall", "RecallAtPrecision", "IoU", "BinaryIoU", "OneHotIoU", "OneHotMeanIoU",
           "serialize", "squeeze_or_expand_to_same_rank"] + sorted(_FUNCTIONS) + ["mse", "mae", "mape", "msle"]
