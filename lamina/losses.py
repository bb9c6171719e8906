"""Keras loss classes and functions: ``losses.get('sparse_categorical_crossentropy')``.

A loss *function* (``losses.mse(y_true, y_pred)``) returns one value per sample: the per-element loss
reduced over the last axis only. A loss *class* (``losses.MeanSquaredError()``) wraps one of them and
turns it into the scalar that training minimises: it aligns the ranks of target and prediction,
multiplies by ``sample_weight`` (and by the output's mask, if any) and reduces:

- ``'sum_over_batch_size'`` (Keras's default) and ``'mean'``: sum(loss * w) / number of loss values;
- ``'mean_with_sample_weight'``: sum(loss * w) / sum(w);
- ``'sum'``: sum(loss * w);
- ``'none'`` / ``None``: the weighted per-sample values themselves.

The maths (forward and backward, fused softmax + cross-entropy) lives in ``lamina.ops.losses``.
"""
import re

import numpy as np

from . import backend, ops
from .ops import losses as _loss_ops  # the kernels: lamina.ops.NAME is keras.ops's (elementwise) form
from .registry import register, registered_names, get_registered_object
from .tensor import Tensor, as_tensor

_REDUCTIONS = ("sum_over_batch_size", "mean", "mean_with_sample_weight", "sum", "none", None)


def _tensor(x, dtype=None):
    if isinstance(x, Tensor):
        return x
    return Tensor(x if backend.is_cupy_array(x) else np.asarray(x), dtype=dtype)


def align_ranks(y_true, y_pred, sparse=False):
    """Make target and prediction ranks agree as Keras does: a trailing axis of size 1 is dropped from
    the larger one, or added to the smaller one. Sparse targets have one axis fewer than predictions."""
    t_nd, p_nd = y_true.ndim, y_pred.ndim
    if sparse:
        if t_nd == p_nd and t_nd > 1 and y_true.shape[-1] == 1:
            y_true = ops.squeeze(y_true, -1)
        return y_true, y_pred
    if t_nd == p_nd - 1:
        if y_pred.shape[-1] == 1:
            y_pred = ops.squeeze(y_pred, -1)
        else:
            y_true = ops.expand_dims(y_true, -1)
    elif p_nd == t_nd - 1:
        if y_true.shape[-1] == 1:
            y_true = ops.squeeze(y_true, -1)
        else:
            y_pred = ops.expand_dims(y_pred, -1)
    return y_true, y_pred


def _float_target(y_true, y_pred):
    if y_true.dtype != y_pred.dtype:
        return ops.cast(y_true, y_pred.dtype)
    return y_true


# ----- loss functions: per-sample values (reduced over the last axis only)
def mean_squared_error(y_true, y_pred):
    """mean((y_true - y_pred)^2, axis=-1)."""
    y_pred = _tensor(y_pred)
    y_true, y_pred = align_ranks(_tensor(y_true), y_pred)
    return ops.mean_squared_error(_float_target(y_true, y_pred), y_pred)


def mean_absolute_error(y_true, y_pred):
    """mean(|y_true - y_pred|, axis=-1)."""
    y_pred = _tensor(y_pred)
    y_true, y_pred = align_ranks(_tensor(y_true), y_pred)
    return ops.mean_absolute_error(_float_target(y_true, y_pred), y_pred)


def huber(y_true, y_pred, delta=1.0):
    """mean(0.5 e^2 if |e| <= delta else delta (|e| - 0.5 delta), axis=-1), e = y_true - y_pred."""
    y_pred = _tensor(y_pred)
    y_true, y_pred = align_ranks(_tensor(y_true), y_pred)
    return ops.huber(_float_target(y_true, y_pred), y_pred, delta=delta)


def kl_divergence(y_true, y_pred):
    """sum(y_true * log(y_true / y_pred), axis=-1), both clipped to [1e-7, 1]."""
    y_pred = _tensor(y_pred)
    y_true, y_pred = align_ranks(_tensor(y_true), y_pred)
    return ops.kl_divergence(_float_target(y_true, y_pred), y_pred)


def binary_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """mean(-(t log p + (1 - t) log(1 - p)), axis); t smoothed towards 0.5 by label_smoothing."""
    y_pred = _tensor(y_pred)
    y_true, y_pred = align_ranks(_tensor(y_true), y_pred)
    return _loss_ops.binary_crossentropy(_float_target(y_true, y_pred), y_pred, from_logits=from_logits,
                                         label_smoothing=label_smoothing, axis=axis)


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """-sum(t * log softmax-normalised p, axis=-1) for one-hot (or soft) targets t."""
    y_pred = _tensor(y_pred)
    y_true = _tensor(y_true)
    if y_true.ndim == y_pred.ndim - 1 or (y_true.ndim == y_pred.ndim and y_true.shape[-1] != y_pred.shape[-1]):
        raise ValueError(_cce_shape_message(y_true.shape, y_pred.shape))
    return _loss_ops.categorical_crossentropy(_float_target(y_true, y_pred), y_pred, from_logits=from_logits,
                                        label_smoothing=label_smoothing, axis=axis)


def sparse_categorical_crossentropy(y_true, y_pred, from_logits=False, ignore_class=None, axis=-1):
    """-log p[label] for integer labels (shape of y_pred without its last axis, or with a trailing 1)."""
    y_pred = _tensor(y_pred)
    y_true, y_pred = align_ranks(_tensor(y_true), y_pred, sparse=True)
    if y_true.ndim != y_pred.ndim - 1:
        raise ValueError(_scce_shape_message(y_true.shape, y_pred.shape))
    return _loss_ops.sparse_categorical_crossentropy(y_true, y_pred, from_logits=from_logits, axis=axis,
                                               ignore_class=ignore_class)


def _cce_shape_message(t_shape, p_shape):
    if len(t_shape) == len(p_shape) - 1 or (len(t_shape) == len(p_shape) and t_shape[-1] == 1):
        return (f"categorical_crossentropy expects one-hot targets of shape {tuple(p_shape)} (like the model "
                f"output), but received targets of shape {tuple(t_shape)}, which look like integer class "
                "labels. Use loss='sparse_categorical_crossentropy' for integer labels, or one-hot encode "
                "them with lamina.utils.to_categorical(y, num_classes).")
    return (f"categorical_crossentropy: the target width {t_shape[-1]} does not match the model output "
            f"width {p_shape[-1]} (targets {tuple(t_shape)}, outputs {tuple(p_shape)}). Give one column per "
            f"class, or change the last layer to {t_shape[-1]} units.")


def _scce_shape_message(t_shape, p_shape):
    if len(t_shape) == len(p_shape):
        return (f"sparse_categorical_crossentropy expects integer class labels of shape {tuple(p_shape[:-1])}, "
                f"but received targets of shape {tuple(t_shape)}, like the model output {tuple(p_shape)}: "
                "they look one-hot encoded. Use loss='categorical_crossentropy' for one-hot targets, or pass "
                "y.argmax(-1).")
    return (f"sparse_categorical_crossentropy: targets of shape {tuple(t_shape)} do not fit model outputs of "
            f"shape {tuple(p_shape)}; expected targets of shape {tuple(p_shape[:-1])}.")


mse = MSE = mean_squared_error
mae = MAE = mean_absolute_error
kld = KLD = kullback_leibler_divergence = kl_divergence
for _fn, _name in ((mean_squared_error, "mean_squared_error"), (mean_absolute_error, "mean_absolute_error"),
                   (huber, "huber"), (kl_divergence, "kl_divergence"), (binary_crossentropy, "binary_crossentropy"),
                   (categorical_crossentropy, "categorical_crossentropy"),
                   (sparse_categorical_crossentropy, "sparse_categorical_crossentropy")):
    _fn._keras_name = _name


# ----- classes
class Loss:
    """Base of the loss classes: ``__call__(y_true, y_pred, sample_weight=None)`` -> scalar Tensor.

    Subclasses define ``call(y_true, y_pred)`` returning per-sample values (Tensors)."""

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        register(cls)

    def __init__(self, name=None, reduction="sum_over_batch_size", dtype=None):
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: invalid reduction {reduction!r}. Valid values: "
                             "'sum_over_batch_size', 'mean', 'mean_with_sample_weight', 'sum', 'none', None.")
        self.name = name or _snake(type(self).__name__)
        self.reduction = reduction
        self.dtype = dtype

    def call(self, y_true, y_pred):  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, y_true, y_pred, sample_weight=None):
        y_pred = _tensor(y_pred)
        mask = getattr(y_pred, "_keras_mask", None)
        values = self.call(_tensor(y_true), y_pred)
        return reduce_weighted_values(values, sample_weight, mask, self.reduction)

    def get_config(self):
        return {"name": self.name, "reduction": self.reduction}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def reduce_weighted_values(values, sample_weight=None, mask=None, reduction="sum_over_batch_size"):
    """Weight per-sample loss values by sample_weight (broadcast from the batch axis) and by a mask,
    then reduce. With a mask and a mean reduction, the mean runs over unmasked entries only."""
    weights = None
    if sample_weight is not None:
        sw = as_tensor(sample_weight.data if isinstance(sample_weight, Tensor) else np.asarray(sample_weight),
                       dtype=values.dtype)
        while sw.ndim > values.ndim and sw.shape[-1] == 1:
            sw = ops.squeeze(sw, -1)
        while sw.ndim < values.ndim:
            sw = ops.expand_dims(sw, -1)
        weights = sw
    if mask is not None:
        m = as_tensor(mask.data if isinstance(mask, Tensor) else mask, dtype=values.dtype)
        while m.ndim > values.ndim:
            m = ops.squeeze(m, -1)
        if reduction in ("sum_over_batch_size", "mean"):
            # Keras: renormalise so that the mean is over valid entries only.
            valid = float(m.data.sum())
            m = m * (float(np.prod(m.shape)) / valid) if valid > 0 else m
        weights = m if weights is None else weights * m
    if weights is not None:
        values = values * weights
    if reduction is None or reduction == "none" or values.ndim == 0:
        return values
    total = ops.sum(values)
    if reduction == "sum":
        return total
    if reduction == "mean_with_sample_weight" and weights is not None:
        denom = float(np.asarray(weights.numpy() * np.ones(values.shape, values.dtype)).sum())
    else:
        denom = float(values.size)
    return total / denom if denom != 0 else total * 0.0  # divide_no_nan, as Keras


def _snake(name):
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower()


class LossFunctionWrapper(Loss):
    """A Loss from a per-sample function and its keyword arguments."""

    def __init__(self, fn, reduction="sum_over_batch_size", name=None, dtype=None, **kwargs):
        super().__init__(name=name or getattr(fn, "_keras_name", getattr(fn, "__name__", "loss")),
                         reduction=reduction, dtype=dtype)
        self.fn = fn
        self._fn_kwargs = kwargs

    def call(self, y_true, y_pred):
        return self.fn(y_true, y_pred, **self._fn_kwargs)

    def get_config(self):
        return {**super().get_config(), **self._fn_kwargs}


class MeanSquaredError(LossFunctionWrapper):
    """mean((y_true - y_pred)^2) over the last axis, then the reduction."""

    def __init__(self, reduction="sum_over_batch_size", name="mean_squared_error", dtype=None):
        super().__init__(mean_squared_error, reduction=reduction, name=name, dtype=dtype)


class MeanAbsoluteError(LossFunctionWrapper):
    """mean(|y_true - y_pred|) over the last axis, then the reduction."""

    def __init__(self, reduction="sum_over_batch_size", name="mean_absolute_error", dtype=None):
        super().__init__(mean_absolute_error, reduction=reduction, name=name, dtype=dtype)


class Huber(LossFunctionWrapper):
    """Quadratic for |error| <= delta, linear beyond: robust regression."""

    def __init__(self, delta=1.0, reduction="sum_over_batch_size", name="huber_loss", dtype=None):
        super().__init__(huber, reduction=reduction, name=name, dtype=dtype, delta=delta)


class KLDivergence(LossFunctionWrapper):
    """Kullback-Leibler divergence sum(t log(t / p)) over the last axis."""

    def __init__(self, reduction="sum_over_batch_size", name="kl_divergence", dtype=None):
        super().__init__(kl_divergence, reduction=reduction, name=name, dtype=dtype)


class BinaryCrossentropy(LossFunctionWrapper):
    """Binary cross-entropy for probabilities (after a sigmoid) or logits (``from_logits=True``)."""

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1, reduction="sum_over_batch_size",
                 name="binary_crossentropy", dtype=None):
        super().__init__(binary_crossentropy, reduction=reduction, name=name, dtype=dtype,
                         from_logits=from_logits, label_smoothing=label_smoothing, axis=axis)
        self.from_logits = from_logits


class CategoricalCrossentropy(LossFunctionWrapper):
    """Cross-entropy for one-hot targets; probabilities (softmax output) or logits (``from_logits=True``)."""

    def __init__(self, from_logits=False, label_smoothing=0.0, axis=-1, reduction="sum_over_batch_size",
                 name="categorical_crossentropy", dtype=None):
        super().__init__(categorical_crossentropy, reduction=reduction, name=name, dtype=dtype,
                         from_logits=from_logits, label_smoothing=label_smoothing, axis=axis)
        self.from_logits = from_logits


class SparseCategoricalCrossentropy(LossFunctionWrapper):
    """Cross-entropy for integer labels; probabilities or logits (``from_logits=True``)."""

    def __init__(self, from_logits=False, ignore_class=None, reduction="sum_over_batch_size", axis=-1,
                 name="sparse_categorical_crossentropy", dtype=None):
        super().__init__(sparse_categorical_crossentropy, reduction=reduction, name=name, dtype=dtype,
                         from_logits=from_logits, ignore_class=ignore_class, axis=axis)
        self.from_logits = from_logits

    def get_config(self):
        # Keras 3.15's config of this class has no axis key; it is written only when it is not the default,
        # so that the default config matches Keras's and a non-default axis survives a round trip
        config = super().get_config()
        if config.get("axis") == -1:
            del config["axis"]
        return config


_ALIASES = {
    "mean_squared_error": MeanSquaredError, "mse": MeanSquaredError, "MSE": MeanSquaredError,
    "mean_absolute_error": MeanAbsoluteError, "mae": MeanAbsoluteError, "MAE": MeanAbsoluteError,
    "huber": Huber, "huber_loss": Huber,
    "kl_divergence": KLDivergence, "kld": KLDivergence, "KLD": KLDivergence,
    "kullback_leibler_divergence": KLDivergence,
    "binary_crossentropy": BinaryCrossentropy, "bce": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy, "cce": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy, "scce": SparseCategoricalCrossentropy,
}
_FUNCTIONS = {
    "mean_squared_error": mean_squared_error, "mse": mean_squared_error, "MSE": mean_squared_error,
    "mean_absolute_error": mean_absolute_error, "mae": mean_absolute_error, "MAE": mean_absolute_error,
    "huber": huber, "kl_divergence": kl_divergence, "kld": kl_divergence, "KLD": kl_divergence,
    "kullback_leibler_divergence": kl_divergence, "binary_crossentropy": binary_crossentropy,
    "categorical_crossentropy": categorical_crossentropy,
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy,
}


def get(identifier):
    """A loss from a name ('mse', 'sparse_categorical_crossentropy', ...; returns the *function*, as
    Keras does), a {'class_name', 'config'} dict (returns an instance), a Loss, a callable, or None."""
    if identifier is None or isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, dict):
        name = identifier.get("class_name")
        config = identifier.get("config", {}) or {}
        cls = _ALIASES.get(name) or get_registered_object(name, base=Loss)
        if cls is None:
            if name in _FUNCTIONS:
                return _FUNCTIONS[name]
            raise ValueError(f"Unknown loss class {name!r}. Valid names: {', '.join(_valid_names())}.")
        return cls.from_config(config)
    if isinstance(identifier, str):
        fn = _FUNCTIONS.get(identifier)
        if fn is not None:
            return fn
        cls = get_registered_object(identifier, base=Loss)
        if cls is not None:
            return cls()
        raise ValueError(f"Unknown loss {identifier!r}. Valid names: {', '.join(_valid_names())}.")
    if callable(identifier):
        return identifier
    raise ValueError(f"Could not interpret loss identifier {identifier!r}: expected a name, a Loss instance, "
                     "a function (y_true, y_pred) or a config dict.")


def _valid_names():
    return sorted(set(_FUNCTIONS) | set(registered_names(Loss)) - {"Loss", "LossFunctionWrapper"})


def serialize(loss):
    if loss is None or isinstance(loss, str):
        return loss
    if isinstance(loss, Loss):
        return {"class_name": type(loss).__name__, "config": loss.get_config()}
    name = getattr(loss, "_keras_name", None)
    if name is not None:
        return name
    raise ValueError(f"Cannot serialize loss {loss!r}: register a Loss subclass instead of a bare function.")


def deserialize(config, custom_objects=None):
    if isinstance(config, dict) and custom_objects and config.get("class_name") in custom_objects:
        return custom_objects[config["class_name"]].from_config(config.get("config", {}))
    if isinstance(config, str) and custom_objects and config in custom_objects:
        return custom_objects[config]
    return get(config)


__all__ = ["Loss", "LossFunctionWrapper", "MeanSquaredError", "MeanAbsoluteError", "Huber", "KLDivergence",
           "BinaryCrossentropy", "CategoricalCrossentropy", "SparseCategoricalCrossentropy",
           "mean_squared_error", "mean_absolute_error", "huber", "kl_divergence", "binary_crossentropy",
           "categorical_crossentropy", "sparse_categorical_crossentropy", "mse", "mae", "MSE", "MAE", "kld",
           "KLD", "kullback_leibler_divergence", "get", "serialize", "deserialize", "reduce_weighted_values",
           "align_ranks"]
