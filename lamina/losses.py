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
    if t_nd == 0 and p_nd == 0 and not sparse:
        # one value each: a length-1 last axis, whose mean over that axis is the value, as Keras computes it
        return ops.expand_dims(y_true, -1), ops.expand_dims(y_pred, -1)
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
    _check_broadcast(y_true.shape, y_pred.shape)
    return y_true, y_pred


def _check_broadcast(t_shape, p_shape):
    """A clear ValueError naming both shapes when targets and predictions cannot meet elementwise,
    instead of NumPy's 'operands could not be broadcast' from deep inside a kernel."""
    try:
        np.broadcast_shapes(tuple(t_shape), tuple(p_shape))
    except ValueError:
        raise ValueError(f"y_true and y_pred must have the same shape (or shapes that broadcast); received "
                         f"y_true of shape {tuple(t_shape)} and y_pred of shape {tuple(p_shape)}.") from None


def _same_shape(y_true, y_pred):
    """Keras's binary cross-entropies refuse targets and outputs of different shapes (after the rank
    alignment) rather than broadcasting them into a bigger, meaningless array."""
    if tuple(y_true.shape) != tuple(y_pred.shape):
        raise ValueError("Arguments `target` and `output` must have the same shape. Received: "
                         f"target.shape={tuple(y_true.shape)}, output.shape={tuple(y_pred.shape)}")


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
    _same_shape(y_true, y_pred)
    return _loss_ops.binary_crossentropy(_float_target(y_true, y_pred), y_pred, from_logits=from_logits,
                                         label_smoothing=label_smoothing, axis=axis)


def categorical_crossentropy(y_true, y_pred, from_logits=False, label_smoothing=0.0, axis=-1):
    """-sum(t * log softmax-normalised p, axis=-1) for one-hot (or soft) targets t."""
    y_pred = _tensor(y_pred)
    y_true = _tensor(y_true)
    if y_pred.ndim == 0 or y_true.ndim == 0:
        raise ValueError(f"categorical_crossentropy expects one-hot targets and predictions with a class axis; "
                         f"received targets of shape {tuple(y_true.shape)} and outputs of shape "
                         f"{tuple(y_pred.shape)}.")
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



def _wrap_regression(kernel, doc):
    def fn(y_true, y_pred):
        y_pred = _tensor(y_pred)
        y_true, y_pred = align_ranks(_tensor(y_true), y_pred)
        return kernel(_float_target(y_true, y_pred), y_pred)
    fn.__doc__ = doc
    fn.__name__ = fn.__qualname__ = kernel.__name__   # a metric made of it is named after it, as in Keras
    return fn


log_cosh = _wrap_regression(_loss_ops.log_cosh, "mean(log(cosh(y_pred - y_true)), axis=-1).")
hinge = _wrap_regression(_loss_ops.hinge, "mean(max(1 - t p, 0), axis=-1); 0/1 labels become -1/1.")
squared_hinge = _wrap_regression(_loss_ops.squared_hinge, "mean(max(1 - t p, 0)^2, axis=-1); 0/1 labels become -1/1.")
categorical_hinge = _wrap_regression(_loss_ops.categorical_hinge, "max(0, 1 + max((1 - t) p) - sum(t p)) (one-hot t).")
mean_absolute_percentage_error = _wrap_regression(_loss_ops.mean_absolute_percentage_error,
                                                  "100 * mean(|t - p| / max(|t|, 1e-7), axis=-1).")
mean_squared_logarithmic_error = _wrap_regression(_loss_ops.mean_squared_logarithmic_error,
                                                  "mean((log(max(p, eps) + 1) - log(max(t, eps) + 1))^2, axis=-1).")
poisson = _wrap_regression(_loss_ops.poisson, "mean(p - t log(p + 1e-7), axis=-1).")


def binary_focal_crossentropy(y_true, y_pred, apply_class_balancing=False, alpha=0.25, gamma=2.0,
                              from_logits=False, label_smoothing=0.0, axis=-1):
    """mean((1 - p_t)^gamma * bce, axis), p_t = t p + (1 - t)(1 - p); times t alpha + (1 - t)(1 - alpha)
    with apply_class_balancing. Targets smoothed towards 0.5 by label_smoothing."""
    y_pred = _tensor(y_pred)
    y_true, y_pred = align_ranks(_tensor(y_true), y_pred)   # (N,) against (N, 1): per sample, as binary_crossentropy
    _same_shape(y_true, y_pred)
    y_true = _float_target(y_true, y_pred)
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + 0.5 * label_smoothing
    if from_logits:
        y_pred = ops.sigmoid(y_pred)
    p = ops.clip(y_pred, _loss_ops.EPSILON, 1.0 - _loss_ops.EPSILON)
    bce = -(y_true * ops.log(p) + (1.0 - y_true) * ops.log(1.0 - p))
    p_t = y_true * y_pred + (1.0 - y_true) * (1.0 - y_pred)
    focal = ops.power(1.0 - p_t, float(gamma)) * bce
    if apply_class_balancing:
        focal = (y_true * alpha + (1.0 - y_true) * (1.0 - alpha)) * focal
    return ops.mean(focal, axis=axis)


def categorical_focal_crossentropy(y_true, y_pred, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0,
                                   axis=-1):
    """sum(alpha (1 - p)^gamma * -t log p, axis) with p normalised to sum 1 and clipped to [eps, 1 - eps]."""
    if isinstance(axis, bool):
        raise ValueError(f"`axis` must be of type `int`. Received: axis={axis} of type {type(axis)}")
    y_pred = _tensor(y_pred)
    y_true = _float_target(_tensor(y_true), y_pred)
    _check_broadcast(y_true.shape, y_pred.shape)
    if label_smoothing:
        y_true = y_true * (1.0 - label_smoothing) + label_smoothing / y_true.shape[-1]
    if from_logits:
        y_pred = ops.softmax(y_pred, axis=axis)
    out = y_pred / ops.sum(y_pred, axis=axis, keepdims=True)
    out = ops.clip(out, _loss_ops.EPSILON, 1.0 - _loss_ops.EPSILON)
    cce = -y_true * ops.log(out)
    return ops.sum(ops.power(1.0 - out, float(gamma)) * alpha * cce, axis=axis)


def categorical_generalized_cross_entropy(y_true, y_pred, q):
    """(1 - p[label]^q) / q for integer labels: between cross-entropy (q -> 0) and MAE (q = 1)."""
    y_pred = _tensor(y_pred)
    labels = backend.to_numpy(_tensor(y_true).data)
    if labels.ndim == y_pred.ndim and labels.ndim > 1 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    if y_pred.ndim == 0 or labels.shape != tuple(y_pred.shape[:-1]):
        raise ValueError(f"categorical_generalized_cross_entropy expects integer labels of shape "
                         f"{tuple(y_pred.shape[:-1])} for y_pred of shape {tuple(y_pred.shape)}; received y_true "
                         f"of shape {labels.shape}.")
    if labels.size and (not np.isfinite(labels).all() or labels.min() < 0 or labels.max() >= y_pred.shape[-1]):
        raise ValueError(f"categorical_generalized_cross_entropy: labels must be integers in [0, "
                         f"{y_pred.shape[-1]}) for {y_pred.shape[-1]} classes; received labels from "
                         f"{labels.min()} to {labels.max()}.")
    labels = labels.astype(np.int64)
    onehot = np.eye(y_pred.shape[-1], dtype=y_pred.dtype)[labels]
    xp = backend.get_array_module(y_pred.data)
    p = ops.sum(y_pred * Tensor(backend.to_device(onehot, xp) if xp is not np else onehot), axis=-1)
    return (1.0 - ops.power(p, float(q))) / q


def cosine_similarity(y_true, y_pred, axis=-1):
    """-sum(l2_normalize(t) * l2_normalize(p), axis): -1 for parallel vectors, 0 for orthogonal ones."""
    y_pred = _tensor(y_pred)
    y_true, y_pred = align_ranks(_tensor(y_true), y_pred)
    y_true = _float_target(y_true, y_pred)
    return -ops.sum(ops.normalize(y_true, axis=axis) * ops.normalize(y_pred, axis=axis), axis=axis)


def dice(y_true, y_pred, axis=None):
    """1 - 2 sum(t p) / (sum(t) + sum(p) + eps), summed over axis (None: everything)."""
    y_pred = _tensor(y_pred)
    y_true = _float_target(_tensor(y_true), y_pred)
    _check_broadcast(y_true.shape, y_pred.shape)
    inter = ops.sum(y_true * y_pred, axis=axis)
    return 1.0 - 2.0 * inter / (ops.sum(y_true, axis=axis) + ops.sum(y_pred, axis=axis) + _loss_ops.EPSILON)


def tversky(y_true, y_pred, alpha=0.5, beta=0.5, axis=None):
    """1 - TP / (TP + alpha FP + beta FN + eps) with Keras's sums: TP = sum(t p), FP = sum((1 - p) t),
    FN = sum(p (1 - t)) over axis (None: everything)."""
    y_pred = _tensor(y_pred)
    y_true = _float_target(_tensor(y_true), y_pred)
    _check_broadcast(y_true.shape, y_pred.shape)
    inter = ops.sum(y_true * y_pred, axis=axis)
    fp = ops.sum((1.0 - y_pred) * y_true, axis=axis)
    fn = ops.sum(y_pred * (1.0 - y_true), axis=axis)
    return 1.0 - inter / (inter + fp * alpha + fn * beta + _loss_ops.EPSILON)


def _masked_logsumexp(x, mask):
    """logsumexp over axis 1 of the entries where mask holds; a row with none gives a very negative value
    (Keras: -inf), which the softplus after it turns into 0."""
    xp = backend.get_array_module(x.data)
    m = xp.where(mask, x.data, -xp.inf).max(axis=1, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0.0).astype(x.dtype)
    e = ops.exp(x - Tensor(m)) * Tensor(mask.astype(x.dtype))
    s = ops.sum(e, axis=1)
    tiny = float(np.finfo(np.dtype(x.dtype)).tiny)  # keeps log finite on a row with no entries
    shift = Tensor(m[:, 0] + xp.where(mask.any(axis=1), 0.0, -1e30).astype(x.dtype))
    return ops.log(s + tiny) + shift


def circle(y_true, y_pred, ref_labels=None, ref_embeddings=None, remove_diagonal=True, gamma=80, margin=0.4):
    """Circle loss (Sun et al. 2020) for L2-normalised embeddings y_pred (B, D) and integer labels y_true (B,):
    softplus(logsumexp over positives of -gamma a_p (margin - d) + logsumexp over negatives of
    gamma a_n (1 - margin - d)), d the pairwise cosine distances to ref_embeddings (default y_pred)."""
    y_pred = _tensor(y_pred)
    labels = backend.to_numpy(_tensor(y_true).data).astype(np.int32).reshape(-1, 1)
    ref = y_pred if ref_embeddings is None else _tensor(ref_embeddings)
    ref_l = labels if ref_labels is None else backend.to_numpy(_tensor(ref_labels).data).astype(np.int32).reshape(-1, 1)
    dist = ops.relu(1.0 - ops.matmul(y_pred, ops.transpose(ref)))  # relu keeps the input's float dtype
    pos = labels == ref_l.T
    neg = ~pos
    if remove_diagonal:
        pos = pos & ~np.eye(labels.size, ref_l.size, dtype=bool)
    xp = backend.get_array_module(y_pred.data)
    if xp is not np:
        pos, neg = backend.to_device(pos, xp), backend.to_device(neg, xp)
    posf, negf = Tensor(pos.astype(dist.dtype)), Tensor(neg.astype(dist.dtype))
    pos_w = ops.relu((margin + dist) * posf)
    neg_w = ops.relu((1.0 + margin - dist) * negf)
    p_loss = _masked_logsumexp(-1.0 * gamma * pos_w * (margin - dist), pos)
    n_loss = _masked_logsumexp(gamma * neg_w * ((1.0 - margin) - dist), neg)
    return ops.softplus(p_loss + n_loss)


def ctc(y_true, y_pred):
    """CTC loss per sample for padded integer targets (B, U) (0 = blank and padding) and logits (B, T, C)."""
    y_pred = _tensor(y_pred)
    y_true = _tensor(y_true)
    if y_true.ndim != 2:
        raise ValueError("Targets `y_true` are expected to be a tensor of shape `(batch_size, max_length)` in "
                         f"integer format. Received: y_true.shape={tuple(y_true.shape)}")
    if y_pred.ndim != 3:
        raise ValueError("Logits `y_pred` are expected to be a tensor of shape `(batch_size, max_length, "
                         f"num_classes)`. Received: y_pred.shape={tuple(y_pred.shape)}")
    xp = backend.get_array_module(y_true.data)
    label_length = (y_true.data != 0).sum(axis=-1).astype(np.int32)
    input_length = xp.full((y_pred.shape[0],), y_pred.shape[1], dtype=np.int32)
    return ops.ctc_loss(y_true, y_pred, label_length, input_length, mask_index=0)

mse = MSE = mean_squared_error
mae = MAE = mean_absolute_error
mape = MAPE = mean_absolute_percentage_error
msle = MSLE = mean_squared_logarithmic_error
logcosh = log_cosh
kld = KLD = kullback_leibler_divergence = kl_divergence
for _fn, _name in ((mean_squared_error, "mean_squared_error"), (mean_absolute_error, "mean_absolute_error"),
                   (huber, "huber"), (kl_divergence, "kl_divergence"), (binary_crossentropy, "binary_crossentropy"),
                   (categorical_crossentropy, "categorical_crossentropy"),
                   (sparse_categorical_crossentropy, "sparse_categorical_crossentropy"),
                   (log_cosh, "log_cosh"), (hinge, "hinge"), (squared_hinge, "squared_hinge"),
                   (categorical_hinge, "categorical_hinge"),
                   (mean_absolute_percentage_error, "mean_absolute_percentage_error"),
                   (mean_squared_logarithmic_error, "mean_squared_logarithmic_error"), (poisson, "poisson"),
                   (binary_focal_crossentropy, "binary_focal_crossentropy"),
                   (categorical_focal_crossentropy, "categorical_focal_crossentropy"),
                   (categorical_generalized_cross_entropy, "categorical_generalized_cross_entropy"),
                   (cosine_similarity, "cosine_similarity"), (dice, "dice"), (tversky, "tversky"),
                   (circle, "circle"), (ctc, "ctc")):
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
        self._dtype = None if dtype is None else backend.standardize_dtype(dtype)

    @property
    def dtype(self):
        """The dtype the loss computes in: the one given, else floatx (read at each call, as Keras's)."""
        return self._dtype or backend.floatx()

    def call(self, y_true, y_pred):  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, y_true, y_pred, sample_weight=None):
        y_pred, y_true = _tensor(y_pred), _tensor(y_true)
        mask = getattr(y_pred, "_keras_mask", None)
        # computed in the loss's dtype, floatx unless one is given, as Keras's convert_to_tensor(y, dtype=self.dtype):
        # float16 predictions (a 'mixed_float16' model's) and float64 ones alike; integer or bool predictions are
        # cast too (otherwise float targets would be cast down to the predictions' int dtype); integer targets
        # (class indices) stay as they are
        dtype = np.dtype(self.dtype)
        y_pred, y_true = (ops.cast(t, dtype) if t.dtype != dtype and (t.dtype.kind == "f" or t is y_pred) else t
                          for t in (y_pred, y_true))
        values = self.call(y_true, y_pred)
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
        try:
            np.broadcast_shapes(tuple(sw.shape), tuple(values.shape))
        except ValueError:
            raise ValueError(f"sample_weight of shape {np.shape(sample_weight)} does not fit the per-sample loss "
                             f"values of shape {tuple(values.shape)}; expected a scalar, shape "
                             f"{tuple(values.shape[:1])} or {tuple(values.shape)}.") from None
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
    if (reduction in ("sum_over_batch_size", "mean") or (reduction == "mean_with_sample_weight" and weights is None)) \
            and values.size and values.dtype in (np.float32, np.float64):
        return ops.mean(values)   # (one op for sum / size: the same bits, both ways, in float32 and float64)
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



def _simple(fn, default_name, doc):
    def __init__(self, reduction="sum_over_batch_size", name=default_name, dtype=None):
        LossFunctionWrapper.__init__(self, fn, reduction=reduction, name=name, dtype=dtype)
    return {"__init__": __init__, "__doc__": doc}


MeanAbsolutePercentageError = type("MeanAbsolutePercentageError", (LossFunctionWrapper,), _simple(
    mean_absolute_percentage_error, "mean_absolute_percentage_error", "100 * mean(|t - p| / |t|), then the reduction."))
MeanSquaredLogarithmicError = type("MeanSquaredLogarithmicError", (LossFunctionWrapper,), _simple(
    mean_squared_logarithmic_error, "mean_squared_logarithmic_error", "mean((log(p + 1) - log(t + 1))^2)."))
LogCosh = type("LogCosh", (LossFunctionWrapper,), _simple(log_cosh, "log_cosh", "mean(log(cosh(p - t)))."))
Hinge = type("Hinge", (LossFunctionWrapper,), _simple(hinge, "hinge", "mean(max(1 - t p, 0)), labels -1/1 or 0/1."))
SquaredHinge = type("SquaredHinge", (LossFunctionWrapper,), _simple(squared_hinge, "squared_hinge",
                                                                    "mean(max(1 - t p, 0)^2)."))
CategoricalHinge = type("CategoricalHinge", (LossFunctionWrapper,), _simple(
    categorical_hinge, "categorical_hinge", "max(0, 1 + max((1 - t) p) - sum(t p)) for one-hot targets."))
Poisson = type("Poisson", (LossFunctionWrapper,), _simple(poisson, "poisson", "mean(p - t log(p + eps))."))
CTC = type("CTC", (LossFunctionWrapper,), _simple(ctc, "ctc", "CTC loss: padded integer targets, logits (B, T, C)."))
for _c in (MeanAbsolutePercentageError, MeanSquaredLogarithmicError, LogCosh, Hinge, SquaredHinge,
           CategoricalHinge, Poisson, CTC):
    _c.__module__ = __name__


class BinaryFocalCrossentropy(LossFunctionWrapper):
    """Binary cross-entropy down-weighting easy examples by (1 - p_t)^gamma (Lin et al. 2017)."""

    def __init__(self, apply_class_balancing=False, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0,
                 axis=-1, reduction="sum_over_batch_size", name="binary_focal_crossentropy", dtype=None):
        super().__init__(binary_focal_crossentropy, reduction=reduction, name=name, dtype=dtype,
                         apply_class_balancing=apply_class_balancing, alpha=alpha, gamma=gamma,
                         from_logits=from_logits, label_smoothing=label_smoothing, axis=axis)
        self.from_logits = from_logits


class CategoricalFocalCrossentropy(LossFunctionWrapper):
    """Categorical cross-entropy weighted by alpha (1 - p)^gamma per class."""

    def __init__(self, alpha=0.25, gamma=2.0, from_logits=False, label_smoothing=0.0, axis=-1,
                 reduction="sum_over_batch_size", name="categorical_focal_crossentropy", dtype=None):
        super().__init__(categorical_focal_crossentropy, reduction=reduction, name=name, dtype=dtype,
                         alpha=alpha, gamma=gamma, from_logits=from_logits, label_smoothing=label_smoothing,
                         axis=axis)
        self.from_logits = from_logits


class CategoricalGeneralizedCrossEntropy(LossFunctionWrapper):
    """Generalized cross-entropy (Zhang & Sabuncu 2018), robust to noisy integer labels; q in (0, 1)."""

    def __init__(self, q=0.5, reduction="sum_over_batch_size", name="categorical_generalized_cross_entropy",
                 dtype=None):
        if not 0 < q < 1:
            raise ValueError("q must be in the interval (0, 1)")
        super().__init__(categorical_generalized_cross_entropy, reduction=reduction, name=name, dtype=dtype, q=q)


class CosineSimilarity(LossFunctionWrapper):
    """-cosine similarity of target and prediction along axis (minimising it aligns them)."""

    def __init__(self, axis=-1, reduction="sum_over_batch_size", name="cosine_similarity", dtype=None):
        super().__init__(cosine_similarity, reduction=reduction, name=name, dtype=dtype, axis=axis)

    def get_config(self):
        return Loss.get_config(self)  # Keras's config has no axis


class Dice(LossFunctionWrapper):
    """1 - Dice coefficient (segmentation overlap)."""

    def __init__(self, reduction="sum_over_batch_size", name="dice", axis=None, dtype=None):
        super().__init__(dice, reduction=reduction, name=name, dtype=dtype, axis=axis)


class Tversky(LossFunctionWrapper):
    """1 - Tversky index: Dice with separate weights alpha (false positives) and beta (false negatives)."""

    def __init__(self, alpha=0.5, beta=0.5, reduction="sum_over_batch_size", name="tversky", axis=None, dtype=None):
        super().__init__(tversky, reduction=reduction, name=name, dtype=dtype, alpha=alpha, beta=beta, axis=axis)


class Circle(LossFunctionWrapper):
    """Circle loss for metric learning on L2-normalised embeddings with integer labels; the mean reduction runs
    over the samples whose loss is positive (Keras masks the others)."""

    def __init__(self, gamma=80.0, margin=0.4, remove_diagonal=True, reduction="sum_over_batch_size",
                 name="circle", dtype=None):
        super().__init__(circle, reduction=reduction, name=name, dtype=dtype, gamma=gamma, margin=margin,
                         remove_diagonal=remove_diagonal)

    def __call__(self, y_true, y_pred, sample_weight=None):
        values = self.call(_tensor(y_true), _tensor(y_pred))
        return reduce_weighted_values(values, sample_weight, values.data > 0, self.reduction)


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
    "bce": binary_crossentropy, "BCE": binary_crossentropy,
    "mean_absolute_error": mean_absolute_error, "mae": mean_absolute_error, "MAE": mean_absolute_error,
    "huber": huber, "kl_divergence": kl_divergence, "kld": kl_divergence, "KLD": kl_divergence,
    "kullback_leibler_divergence": kl_divergence, "binary_crossentropy": binary_crossentropy,
    "categorical_crossentropy": categorical_crossentropy,
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy,
    "mean_absolute_percentage_error": mean_absolute_percentage_error, "mape": mean_absolute_percentage_error,
    "MAPE": mean_absolute_percentage_error, "mean_squared_logarithmic_error": mean_squared_logarithmic_error,
    "msle": mean_squared_logarithmic_error, "MSLE": mean_squared_logarithmic_error, "log_cosh": log_cosh,
    "logcosh": log_cosh, "hinge": hinge, "squared_hinge": squared_hinge, "categorical_hinge": categorical_hinge,
    "poisson": poisson, "binary_focal_crossentropy": binary_focal_crossentropy,
    "categorical_focal_crossentropy": categorical_focal_crossentropy,
    "categorical_generalized_cross_entropy": categorical_generalized_cross_entropy,
    "cosine_similarity": cosine_similarity, "dice": dice, "tversky": tversky, "circle": circle, "ctc": ctc,
}

for _c in (MeanSquaredError, MeanAbsoluteError, Huber, KLDivergence, BinaryCrossentropy, CategoricalCrossentropy,
           SparseCategoricalCrossentropy, MeanAbsolutePercentageError, MeanSquaredLogarithmicError, LogCosh, Hinge,
           SquaredHinge, CategoricalHinge, Poisson, CTC, BinaryFocalCrossentropy, CategoricalFocalCrossentropy,
           CategoricalGeneralizedCrossEntropy, CosineSimilarity, Dice, Tversky, Circle):
    _ALIASES[_c.__name__] = _c  # a config's class_name finds the loss even where a metric shares the name


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
    if isinstance(config, dict) and config.get("class_name") == "function" and isinstance(config.get("config"), str):
        config = config["config"]   # Keras's form of a loss function, {"class_name": "function", "config": its name}
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
           "align_ranks", "MeanAbsolutePercentageError", "MeanSquaredLogarithmicError", "LogCosh", "Hinge",
           "SquaredHinge", "CategoricalHinge", "Poisson", "CTC", "BinaryFocalCrossentropy",
           "CategoricalFocalCrossentropy", "CategoricalGeneralizedCrossEntropy", "CosineSimilarity", "Dice",
           "Tversky", "Circle", "log_cosh", "logcosh", "hinge", "squared_hinge", "categorical_hinge",
           "mean_absolute_percentage_error", "mean_squared_logarithmic_error", "mape", "MAPE", "msle", "MSLE",
           "poisson", "binary_focal_crossentropy", "categorical_focal_crossentropy",
           "categorical_generalized_cross_entropy", "cosine_similarity", "dice", "tversky", "circle", "ctc"]
