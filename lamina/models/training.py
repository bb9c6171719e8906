"""The training loops behind Model.fit / evaluate / predict, the data they accept, and the compiled
losses and metrics.

Data: NumPy arrays (or lists / dicts of them for several inputs or outputs), Python generators and other
iterables of ``(x, y)`` or ``(x, y, sample_weight)`` batches, and Keras ``PyDataset``-like objects
(``__len__`` + ``__getitem__`` returning batches). Arrays are shuffled each epoch with lamina's seeded
generator, so ``lamina.utils.set_random_seed(n)`` makes two runs identical.

A batch whose loss is not finite stops fit() before any weight is touched: a warning names the epoch and
batch and, for Sequential and functional models, the first layer whose output was not finite. So does a
finite loss whose gradients are not (the warning names the layer nearest the output whose weight gradient
is NaN or inf). An update that overflows a weight shows at the next batch as a non-finite loss, whose
warning lists the weights that are not finite.
(Keras does not stop by default; its TerminateOnNaN callback stops on a NaN loss.)
"""
import math
import warnings

import numpy as np

from .. import backend, callbacks as callbacks_mod, losses as losses_mod, metrics as metrics_mod, threads as _threads
from ..data.py_dataset import PyDataset, PyDatasetAdapter
from ..distribution import _runtime as _dist
from ..layers.layer import _nest_flatten, _nest_map
from ..tensor import Tensor
from ..data.packing import pack_x_y_sample_weight, unpack_x_y_sample_weight  # noqa: F401  (Keras's batch forms)


class NonFiniteLoss(Exception):
    """Raised inside train_step when the loss is NaN or inf (before any update)."""

    def __init__(self, value):
        super().__init__(value)
        self.value = value


class NonFiniteUpdate(Exception):
    """Raised inside train_step, before the update, when gradients hold NaN or inf although the loss was
    finite. ``variables``: the weights with such gradients, in model order; ``layer``: the owner of the
    last of them (the one nearest the output, where a NaN made in the backward pass first appears)."""

    def __init__(self, model, variables):
        self.variables = list(variables)
        owners = [_owner(model, v) for v in self.variables]
        self.layer = owners[-1]

        def describe(v, layer):
            return (f"'{v.name}' of layer '{layer.name}' ({type(layer).__name__})" if layer is not None
                    else f"'{v.path}'")
        text = (f"the gradient of the weight {describe(self.variables[-1], owners[-1])} is not finite (NaN or "
                "inf), although the loss was finite")
        if len(self.variables) > 1:
            text += (" (so are the gradients of " + ", ".join(describe(v, l) for v, l in
                                                                zip(self.variables[:-1], owners[:-1])) + ")")
        text += (". The weights were not updated with this batch: they are those of the last good step. An op "
                 "with an infinite slope where it was used (e.g. sqrt at 0) in or after that layer, or an "
                 "overflow in the backward pass, is the usual cause.")
        super().__init__(text)


def _owner(model, variable):
    """The innermost layer of model that owns variable, or None."""
    for layer in model._sublayers():
        if any(w is variable for w in layer._own_weights):
            return layer
    return None


def nonfinite_indices(arrays):
    """Indices of the float arrays (or Tensors) holding NaN or inf; [] when all are finite. One isfinite
    reduction per array; on CuPy the results come back in a single device-to-host copy."""
    arrays = [a.data if isinstance(a, Tensor) else a for a in arrays]
    present = [(i, a) for i, a in enumerate(arrays) if a is not None and a.dtype.kind == "f"]
    if not present:
        return []
    xp = backend.get_array_module(present[0][1])
    if xp is np:
        return [i for i, a in present if not _all_finite(a)]
    ok = backend.to_numpy(xp.stack([xp.isfinite(a).all() for _, a in present]))
    return [] if ok.all() else [i for (i, _), good in zip(present, ok) if not good]


_DOT_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _all_finite(a):
    """Whether every value of the NumPy float array ``a`` is finite. Its sum of squares (one BLAS pass, no mask
    array: a (2560000,) float32 gradient 0.44 -> 0.23 ms, (100352,) 14 -> 9 us) is finite exactly when every value
    is (NaN and inf reach it; squares are never negative, so no inf cancels), unless finite values overflow it
    (|x| > ~1e19 in float32): a non-finite sum takes the exact check."""
    if a.dtype in _DOT_FLOATS and a.flags.c_contiguous and a.size:
        flat = a.reshape(-1)
        if np.isfinite(np.dot(flat, flat)):
            return True
    return bool(np.isfinite(a).all())


# ----- batches
def _to_array(a):
    if isinstance(a, Tensor):
        return a.data
    if isinstance(a, np.ndarray) or backend.is_cupy_array(a):
        return a
    return np.asarray(a)


def _is_structure_of_arrays(x):
    """A list/tuple of arrays (several inputs), as opposed to a (nested) Python list of numbers."""
    return bool(x) and all(isinstance(v, (np.ndarray, Tensor, dict)) or backend.is_cupy_array(v)
                           or _is_foreign_array(v) for v in x)


def _is_foreign_array(v):
    """Another library's array (a torch or jax tensor, a pandas DataFrame or Series, ...): it has a shape and NumPy's
    __array__, as Keras's data adapters take any such array (a DataFrame has dtypes, not one dtype)."""
    return hasattr(v, "__array__") and hasattr(v, "shape") and not isinstance(v, (list, tuple, dict, str))


def _is_torch_loader(data):
    """A torch.utils.data.DataLoader (duck-typed by its module; torch is never imported here)."""
    return type(data).__module__.startswith("torch.utils.data")


def to_batch(x):
    """Arrays from a batch structure: lists and dicts of arrays stay structures; a list of numbers becomes one array."""
    if x is None:
        return None
    if isinstance(x, dict):
        return {k: to_batch(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)) and _is_structure_of_arrays(x):
        return [to_batch(v) for v in x]
    return _to_array(x)


def batch_size_of(x):
    flat = _nest_flatten(x)
    return int(flat[0].shape[0]) if flat and hasattr(flat[0], "shape") and len(flat[0].shape) else 1


def to_numpy_structure(y):
    return _nest_map(lambda t: backend.to_numpy(t.data if isinstance(t, Tensor) else t), y)


def apply_class_weight(y, sample_weight, class_weight):
    """Per-sample weights class_weight[label] (integer or one-hot targets), times sample_weight."""
    if not class_weight:
        return sample_weight
    flat = _nest_flatten(y)
    if len(flat) != 1:
        raise ValueError("class_weight is only supported for models with a single output; "
                         "pass sample_weight for each output instead.")
    labels = np.asarray(backend.to_numpy(_to_array(flat[0])))
    if labels.ndim >= 2 and labels.shape[-1] > 1:
        labels = labels.argmax(-1)
    elif labels.ndim >= 2:
        labels = labels[..., 0]
    labels = np.rint(labels).astype(np.int64)
    table = np.ones(max(max(class_weight) + 1, labels.max() + 1 if labels.size else 1), np.float32)
    for k, v in class_weight.items():
        table[int(k)] = v
    weights = table[labels]
    if sample_weight is not None:
        weights = weights * np.asarray(backend.to_numpy(_to_array(sample_weight)), np.float32)
    return weights


class ArrayData:
    """Batches of in-memory arrays, reshuffled each epoch (rng of lamina.backend)."""

    def __init__(self, x, y=None, sample_weight=None, batch_size=32, shuffle=True, steps=None):
        self.x, self.y, self.sample_weight = x, y, sample_weight
        sizes = [int(a.shape[0]) for a in _nest_flatten((x, y, sample_weight)) if a is not None]
        if len(set(sizes)) > 1:
            def lens(s):
                return [int(a.shape[0]) for a in _nest_flatten(s) if a is not None]
            raise ValueError(f"Data cardinality is ambiguous: make sure all arrays contain the same number of "
                             f"samples. x sizes: {lens(x)}, y sizes: {lens(y)}, sample_weight sizes: "
                             f"{lens(sample_weight)}.")
        self.n = sizes[0] if sizes else 0
        self.batch_size = int(batch_size or 32)
        self.shuffle = shuffle
        self.steps = steps

    @property
    def steps_per_epoch(self):
        return self.steps or int(math.ceil(self.n / self.batch_size))

    def __iter__(self):
        n, bs = self.n, self.batch_size
        order = backend.rng("shuffle").permutation(n) if self.shuffle and self.shuffle != "none" else None
        n_batches = int(math.ceil(n / bs))
        for step in range(self.steps_per_epoch):
            b = step % n_batches
            if order is None:
                idx = slice(b * bs, min(n, (b + 1) * bs))
            else:
                idx = order[b * bs:(b + 1) * bs]
            take = lambda a: None if a is None else a[idx]  # noqa: E731
            # Keras's forms: x, (x, y), or (x, y, sample_weight) only when there are sample weights
            yield pack_x_y_sample_weight(_nest_map(take, self.x),
                                         _nest_map(take, self.y) if self.y is not None else None,
                                         _nest_map(take, self.sample_weight) if self.sample_weight is not None
                                         else None)


class IterableData:
    """Batches from a generator, an iterable, or a PyDataset-like object (``__len__`` + ``__getitem__``)."""

    def __init__(self, data, steps=None):
        self.data, self.steps = data, steps
        self.indexable = (hasattr(data, "__getitem__") and hasattr(data, "__len__")
                          and not isinstance(data, (list, tuple)))
        self.is_iterator = not self.indexable and iter(data) is data
        # a torch DataLoader's batches are lists ([x, y]); Keras hands such a list to train_step as it
        # came, and its unpacking reads a list as a tuple: x, y (elsewhere a list batch is x alone)
        self.list_is_tuple = _is_torch_loader(data)
        self._it = iter(data) if self.is_iterator else None
        self.exhausted = False

    @property
    def steps_per_epoch(self):
        if self.steps:
            return self.steps
        if self.indexable or isinstance(self.data, (list, tuple)):
            return len(self.data)
        try:
            return len(self.data)
        except TypeError:
            return None

    def __iter__(self):
        if self.indexable:
            source = (self.data[i] for i in range(len(self.data)))
        elif self.is_iterator:
            source = self._it
        else:
            source = iter(self.data)
        for step, batch in enumerate(source):
            # a tuple batch goes to train_step as it came; anything else is x alone (a list of arrays: (x,))
            if isinstance(batch, tuple):
                yield tuple(to_batch(b) for b in batch)
            elif self.list_is_tuple and isinstance(batch, list):
                yield [to_batch(b) for b in batch]
            else:
                yield pack_x_y_sample_weight(to_batch(batch))
            if self.steps and step + 1 >= self.steps:
                break
        else:
            if self.is_iterator:
                self.exhausted = True
        if self.indexable and hasattr(self.data, "on_epoch_end"):
            self.data.on_epoch_end()


def make_data(x, y=None, sample_weight=None, batch_size=None, shuffle=False, steps=None, class_weight=None):
    if x is None:
        raise ValueError("No data given: pass x (arrays, a generator or an iterable of batches).")
    if _is_array_input(x):
        if batch_size is not None and (not isinstance(batch_size, (int, np.integer)) or batch_size <= 0):
            raise ValueError(f"batch_size must be a positive int. Received: batch_size={batch_size!r}")
        x, y, sample_weight = to_batch(x), to_batch(y), to_batch(sample_weight)
        sample_weight = apply_class_weight(y, sample_weight, class_weight) if class_weight else sample_weight
        return ArrayData(x, y, sample_weight, batch_size or 32, shuffle, steps)
    if y is not None:
        raise ValueError("When x is a generator or an iterable of batches, y must be None: the batches "
                         "already hold (x, y) pairs.")
    if batch_size is not None:
        warnings.warn("batch_size is ignored when x is a generator or an iterable of batches.", stacklevel=4)
    if isinstance(x, PyDataset):  # keras.utils.PyDataset: epoch hooks, batch-order shuffling, worker threads
        weigh = (lambda yb, sw: apply_class_weight(yb, sw, class_weight)) if class_weight else None
        x = PyDatasetAdapter(x, shuffle, weigh)
    return IterableData(x, steps)


def _is_array_input(x):
    if isinstance(x, (np.ndarray, Tensor)) or backend.is_cupy_array(x) or _is_foreign_array(x):
        return True
    if isinstance(x, dict):
        return all(_is_array_input(v) or isinstance(v, (list, float, int)) for v in x.values())
    if isinstance(x, (list, tuple)):
        # a list of (x, y) batches is an iterable of batches; a list of arrays is several inputs
        return not any(isinstance(v, tuple) for v in x)
    return False


def _split(x, split_at):
    return _nest_map(lambda a: None if a is None else (a[:split_at], a[split_at:]), x)


def _validation_split(x, y, sample_weight, validation_split):
    flat = _nest_flatten(x)
    n = int(flat[0].shape[0])
    split_at = int(math.floor(n * (1.0 - validation_split)))
    if split_at == 0 or split_at == n:
        raise ValueError(f"Training data contains {n} samples, which is not sufficient to split it into a "
                         f"validation and training set as specified by `validation_split={validation_split}`. "
                         "Either provide more data, or a different value for the `validation_split` argument.")

    def part(s, i):
        return None if s is None else _nest_map(lambda a: a[:split_at] if i == 0 else a[split_at:], s)
    return ((part(x, 0), part(y, 0), part(sample_weight, 0)), (part(x, 1), part(y, 1), part(sample_weight, 1)))


# ----- compiled losses and metrics
class CompileMetrics:
    """The metrics given to compile(), seen as one entry of ``model.metrics`` named 'compile_metrics' (Keras's
    CompileMetrics): ``update_state(y, y_pred, sample_weight)`` updates each of them (resolving them from the
    first batch's shapes), ``result()`` is a dict {metric name: value}, ``metrics`` lists them."""

    name = "compile_metrics"

    def __init__(self, state):
        self._state = state

    @property
    def metrics(self):
        return self._state.metric_objects()

    def update_state(self, y_true, y_pred, sample_weight=None):
        self._state.update_metrics(y_true, y_pred, sample_weight)

    def result(self):
        return {name: float(metrics_mod.result_value(m)) for name, m in self._state.named_metrics()}

    def reset_state(self):
        for m in self.metrics:
            m.reset_state()

    reset_states = reset_state

    @property
    def variables(self):
        return [v for m in self.metrics for v in m.variables]

    def __repr__(self):
        return f"<CompileMetrics name={self.name}>"


def _loss_object(loss):
    if loss is None:
        return None
    if isinstance(loss, (str, dict)):
        loss = losses_mod.get(loss)
    if isinstance(loss, losses_mod.Loss):
        return loss
    if isinstance(loss, type) and issubclass(loss, losses_mod.Loss):
        return loss()
    if callable(loss):
        return losses_mod.LossFunctionWrapper(loss)
    raise ValueError(f"Could not interpret loss {loss!r}.")


def _loss_kind(loss):
    fn = getattr(loss, "fn", None)
    name = getattr(fn, "_keras_name", None) or getattr(loss, "name", "") or ""
    if "sparse_categorical" in name:
        return "sparse"
    if "categorical_crossentropy" in name:
        return "categorical"
    if "binary" in name:
        return "binary"
    return "other"


def _is_lamina_loss(loss):
    """True for lamina's own losses; False for a user's loss function or Loss subclass, which may reshape or
    split its arguments itself (a mixture-density loss takes (N,) targets against (N, 3k) outputs)."""
    owner = getattr(loss, "fn", None) or type(loss)
    return (getattr(owner, "__module__", None) or "").split(".")[0] == "lamina"


def resolve_metric(identifier, y_true, y_pred, loss=None):
    """A Metric for identifier; 'accuracy'/'acc' (and 'crossentropy'/'ce') chosen from the output and
    target shapes as Keras does: width 1 -> binary, integer labels -> sparse, else categorical."""
    if isinstance(identifier, str) and identifier in ("accuracy", "acc", "crossentropy", "ce"):
        p_shape, t_shape = tuple(y_pred.shape), tuple(np.shape(y_true))
        kind = _loss_kind(loss) if loss is not None else "other"
        if kind == "binary" or (p_shape and p_shape[-1] == 1):
            base = "binary"
        elif kind == "sparse" or len(t_shape) < len(p_shape) or (t_shape and t_shape[-1] == 1):
            base = "sparse_categorical"
        else:
            base = "categorical"
        suffix = "accuracy" if identifier in ("accuracy", "acc") else "crossentropy"
        return metrics_mod.get(f"{base}_{suffix}")
    return metrics_mod.get(identifier)


def _metric_name(identifier, metric):
    if isinstance(identifier, str):
        return identifier
    return getattr(metric, "name", None) or getattr(identifier, "__name__", "metric")


def _per_output(value, names, what, allow_single=True):
    """value (one item, a list, or a dict keyed by output name) as one entry per output."""
    n = len(names)
    if isinstance(value, dict):
        unknown = set(value) - set(names)
        if unknown:
            raise ValueError(f"{what} has keys {sorted(unknown)} that are not output names of the model. "
                             f"Valid output names: {names}.")
        return [value.get(k) for k in names]
    if isinstance(value, (list, tuple)) and what != "metrics":
        if len(value) != n:
            raise ValueError(f"{what} has {len(value)} entries but the model has {n} outputs ({names}).")
        return list(value)
    return [value] * n


class CompileState:
    """What compile() recorded: losses per output, their weights, metrics; running means of the logs."""

    def __init__(self, model, loss, metrics, weighted_metrics, loss_weights):
        self.model = model
        self.loss_spec, self.metrics_spec, self.weighted_spec = loss, metrics, weighted_metrics
        self.loss_weights_spec = loss_weights
        self.built = False
        for spec in _nest_flatten(loss if isinstance(loss, (list, tuple, dict)) else [loss]):
            if isinstance(spec, str):
                losses_mod.get(spec)  # an unknown name fails here, at compile(), listing the valid ones
        # the running mean of the total loss (train_step/test_step update it with compute_loss's value), and
        # one per output for several outputs (the compiled loss updates those when it computes them)
        self.loss_tracker = metrics_mod.Mean(name="loss")
        self.output_trackers = []
        self.tracked_outputs = []   # the output index of each of output_trackers
        self.metric_entries = []
        self.metrics_built = False
        self.compile_metrics = CompileMetrics(self) if (metrics or weighted_metrics) else None

    # resolution happens at the first batch, when output and target shapes are known
    def _output_names(self, n):
        names = getattr(self.model, "output_names", None)
        if names and len(names) == n:
            return list(names)
        return [f"output_{i}" if n > 1 else "output" for i in range(n)]

    def build(self, y_true_flat, y_pred_flat):
        n = len(y_pred_flat)
        self.names = self._output_names(n)
        if self.loss_spec is None:
            raise ValueError(f"Model '{self.model.name}' was compiled without a loss: pass loss= to compile() "
                             "(e.g. 'sparse_categorical_crossentropy' or 'mse'), or override compute_loss.")
        loss_list = self.loss_spec if isinstance(self.loss_spec, (list, tuple, dict)) else [self.loss_spec] * n
        self.losses = [_loss_object(l) for l in _per_output(loss_list, self.names, "loss")] \
            if isinstance(loss_list, dict) or len(loss_list) == n else None
        if self.losses is None:
            raise ValueError(f"compile(loss=...) got {len(loss_list)} losses but model '{self.model.name}' has "
                             f"{n} outputs ({self.names}).")
        weights = self.loss_weights_spec
        self.loss_weights = [1.0 if w is None else float(w) for w in _per_output(weights, self.names, "loss_weights")] \
            if weights is not None else [1.0] * n
        # one loss tracker per output that has a loss (several outputs), in the order compile() named the losses:
        # a dict's key order, else the outputs' (Keras 3.15: evaluate() lists them in this order after the loss)
        order = ([self.names.index(k) for k in self.loss_spec if k in self.names]
                 if isinstance(self.loss_spec, dict) else range(n))
        self.tracked_outputs = [i for i in order if self.losses[i] is not None] if n > 1 else []
        self.output_trackers = [metrics_mod.Mean(name=f"{self.names[i]}_loss") for i in self.tracked_outputs]
        self.built = True
        if not self.metrics_built:
            self.build_metrics(y_true_flat, y_pred_flat)

    def _losses_for_resolution(self, n):
        """The loss of each output, to choose the kind of 'accuracy': the built ones, else those the
        compile() spec names (None where it names none)."""
        if self.built:
            return self.losses
        try:
            spec = self.loss_spec if isinstance(self.loss_spec, (list, tuple, dict)) else [self.loss_spec] * n
            return [_loss_object(l) for l in _per_output(spec, self._output_names(n), "loss")]
        except ValueError:
            return [None] * n

    def build_metrics(self, y_true_flat, y_pred_flat):
        """Resolve the compiled metrics from the first batch (names, 'accuracy' from the shapes)."""
        n = len(y_pred_flat)
        names = self._output_names(n)
        losses = self._losses_for_resolution(n)
        self.metric_entries = []
        for spec, weighted in ((self.metrics_spec, False), (self.weighted_spec, True)):
            if not spec:
                continue
            if isinstance(spec, dict):
                per = _per_output(spec, self.names, "metrics")
            elif isinstance(spec, (list, tuple)) and n > 1 and len(spec) == n and all(
                    isinstance(s, (list, tuple)) or s is None for s in spec):
                per = list(spec)
            else:
                per = [spec] * n
            for i, ms in enumerate(per):
                if ms is None:
                    continue
                for ident in (ms if isinstance(ms, (list, tuple)) else [ms]):
                    if y_true_flat[i] is None:
                        continue
                    m = resolve_metric(ident, y_true_flat[i], y_pred_flat[i], losses[i])
                    name = _metric_name(ident, m)
                    if weighted and not isinstance(ident, str):
                        name = "weighted_" + name
                    if n > 1:
                        name = f"{names[i]}_{name}"
                    self.metric_entries.append((name, m, i, weighted))
        self.metrics_built = True

    def metric_objects(self):
        return [m for _, m, _, _ in self.metric_entries]

    def named_metrics(self):
        return [(name, m) for name, m, _, _ in self.metric_entries]

    def _flat_targets(self, y, n):
        if y is None:
            return [None] * n
        if isinstance(y, dict):
            names = self._output_names(n)
            missing = [k for k in names if k not in y]
            if missing:
                raise ValueError(f"Targets given as a dict must have one entry per output {names}; missing {missing}.")
            return [y[k] for k in names]
        if isinstance(y, (list, tuple)) and n > 1:
            if len(y) != n:
                raise ValueError(f"Model '{self.model.name}' has {n} outputs but {len(y)} targets were given.")
            return list(y)
        if n > 1:
            raise ValueError(f"Model '{self.model.name}' has {n} outputs: give the targets as a list of {n} "
                             "arrays or a dict keyed by output name.")
        return [y]

    def _check(self, loss, yt, yp):
        """Catch target/output mismatches with a message saying what to use instead. Only lamina's own losses
        are checked: Keras hands a user's loss function the targets and outputs as they are."""
        if not _is_lamina_loss(loss):
            return
        kind = _loss_kind(loss)
        t_shape, p_shape = tuple(np.shape(yt)), tuple(yp.shape)
        if kind == "sparse":
            labels = backend.to_numpy(yt)
            classes = p_shape[-1]
            if labels.size and np.issubdtype(labels.dtype, np.floating) and not np.all(np.isfinite(labels)):
                bad = int(np.count_nonzero(~np.isfinite(labels)))
                raise ValueError(f"sparse_categorical_crossentropy: labels must be integers in [0, {classes}); "
                                 f"received {bad} NaN or inf label(s).")
            if labels.size and np.issubdtype(labels.dtype, np.number) and (labels.max() >= classes or labels.min() < 0):
                raise ValueError(f"sparse_categorical_crossentropy: labels must be integers in [0, {classes}) "
                                 f"for a model output of width {classes}; received labels in "
                                 f"[{labels.min()}, {labels.max()}]. Widen the last layer to "
                                 f"{int(labels.max()) + 1} units or fix the labels.")
            return
        if kind == "categorical":
            return  # the loss function raises its own message
        if kind == "binary":
            # Keras: target and output must have the same shape (a missing trailing 1 is added first)
            t_cmp = t_shape + (1,) if len(t_shape) == len(p_shape) - 1 and p_shape[-1] == 1 else t_shape
            if len(t_cmp) == len(p_shape) and all(a == b or a is None or b is None
                                                  for a, b in zip(t_cmp[1:], p_shape[1:])):
                return
            hint = (" For integer class labels use loss='sparse_categorical_crossentropy' with a softmax output."
                    if len(t_shape) == len(p_shape) - 1 else "")
            raise ValueError(f"Arguments `target` and `output` must have the same shape. Received: "
                             f"target.shape={t_shape}, output.shape={p_shape}.{hint}")
        # element-wise losses: the target's width must match the output's
        if len(t_shape) == len(p_shape) - 1 and p_shape[-1] not in (1, None):
            hint = (" For integer class labels use loss='sparse_categorical_crossentropy' with a softmax output."
                    if kind == "binary" or np.issubdtype(np.asarray(yt).dtype, np.integer) else "")
            raise ValueError(f"{loss.name}: targets of shape {t_shape} do not match model outputs of shape "
                             f"{p_shape}.{hint}")
        if len(t_shape) == len(p_shape) and t_shape[-1] not in (1, p_shape[-1]) and p_shape[-1] not in (1, None):
            raise ValueError(f"{loss.name}: the target width {t_shape[-1]} does not match the model output width "
                             f"{p_shape[-1]} (targets {t_shape}, outputs {p_shape}).")

    def compute_loss(self, y, y_pred, sample_weight=None):
        """The compiled losses (weighted) plus the model's added and regularisation losses; updates the
        per-output loss trackers. Compiled without a loss, the model's own losses alone (add_loss), as Keras."""
        y_pred_flat = _nest_flatten(y_pred)
        n = len(y_pred_flat)
        if self.loss_spec is None and self.model.losses:
            total = None
            for extra in self.model.losses:
                total = extra if total is None else total + extra
            return total
        y_true_flat = self._flat_targets(y, n)
        first = not self.built
        if first:
            self.build(y_true_flat, y_pred_flat)
        sw_flat = self._flat_targets(sample_weight, n) if isinstance(sample_weight, (dict, list, tuple)) and n > 1 \
            else [sample_weight] * n
        total, per = None, []
        for i, (loss, yt, yp) in enumerate(zip(self.losses, y_true_flat, y_pred_flat)):
            if loss is None or yt is None:
                per.append(None)
                continue
            if first:
                self._check(loss, yt, yp)
            value = loss(yt if isinstance(yt, Tensor) else Tensor(_to_array(yt)), yp, sample_weight=sw_flat[i])
            per.append(value)
            value = value * self.loss_weights[i] if self.loss_weights[i] != 1.0 else value
            total = value if total is None else total + value
        if total is None:
            raise ValueError(f"Model '{self.model.name}': no targets were given, so there is no loss to compute. "
                             "Pass y to fit()/evaluate() or yield (x, y) batches.")
        for reg in self.model.losses:
            total = total + reg
        batch = batch_size_of(y_pred_flat[0])
        for i, tracker in zip(self.tracked_outputs, self.output_trackers):
            if per[i] is not None:
                tracker.update_state(float(per[i].numpy()), sample_weight=batch)
        return total

    def update_metrics(self, y, y_pred, sample_weight=None):
        """Update the compiled metrics with one batch (building them at the first)."""
        if not (self.metrics_spec or self.weighted_spec):
            return
        y_pred_flat = [backend.to_numpy(p.data if isinstance(p, Tensor) else p) for p in _nest_flatten(y_pred)]
        y_true_flat = [None if t is None else backend.to_numpy(_to_array(t))
                       for t in self._flat_targets(y, len(y_pred_flat))]
        if not self.metrics_built:
            self.build_metrics(y_true_flat, y_pred_flat)
        sw = None if sample_weight is None else sample_weight
        for name, m, i, weighted in self.metric_entries:
            if y_true_flat[i] is None:
                continue
            w = None
            if weighted and sw is not None:
                w = backend.to_numpy(_to_array(sw[i] if isinstance(sw, (list, tuple)) else sw))
            m.update_state(y_true_flat[i], y_pred_flat[i], sample_weight=w)

    def trackers(self):
        """What this state adds to ``model.metrics``, in Keras's order: the loss, the compiled metrics (one
        entry), the per-output losses."""
        out = [self.loss_tracker]
        if self.compile_metrics is not None:
            out.append(self.compile_metrics)
        return out + list(self.output_trackers)


def pythonify_logs(logs):
    """Logs as a flat dict of Python floats in the order of their names (as Keras 3, whose logs, history and
    progress bars read 'accuracy', 'loss', 'val_accuracy', ...): nested dicts (a CompileMetrics result) are merged
    in, Tensors and NumPy scalars become floats; values that are not numbers stay as they are."""
    out = {}
    _flat_logs(logs, out)
    return sorted_logs(out)


def _flat_logs(logs, out):
    for key, value in (logs or {}).items():
        if isinstance(value, dict):
            _flat_logs(value, out)
            continue
        try:
            value = float(value.numpy() if isinstance(value, Tensor) else value)
        except (TypeError, ValueError):
            pass
        out[key] = value


def sorted_logs(logs):
    """A new dict of ``logs``' entries in the order of their names."""
    return {k: logs[k] for k in sorted(logs, key=str)}


# ----- non-finite losses
def _nonfinite(t):
    a = t.data if isinstance(t, Tensor) else t
    if not hasattr(a, "dtype") or not np.issubdtype(a.dtype, np.floating):
        return False
    xp = backend.get_array_module(a)
    return not bool(xp.isfinite(a).all())


def nonfinite_message(model, x, value, where):
    lines = [f"Training stopped: the loss became {value} at {where}. The weights were not updated with this "
             "batch: they are those of the last good step (and the last checkpoint was left as it was)."]
    if any(_nonfinite(_to_array(a)) for a in _nest_flatten(x)):
        lines.append("The input batch itself contains NaN or inf values: clean the data.")
    else:
        bad = [w.path for w in model.weights if _nonfinite(w)]
        if bad:
            lines.append(f"These weights are not finite: {', '.join(bad[:5])}.")
        probe = getattr(model, "_first_nonfinite_layer", None)
        layer = probe(to_batch(x)) if probe is not None else None
        if layer is not None:
            lines.append(f"The first layer whose output is not finite is '{layer.name}' ({type(layer).__name__}).")
        elif probe is not None:
            lines.append("Every layer output is finite: the loss itself overflowed (check the targets and "
                         "the loss, e.g. from_logits).")
    lines.append("Try a lower learning rate, normalised inputs, or gradient clipping (clipnorm=1.0).")
    return " ".join(lines)


# ----- argument checks (fit / evaluate / predict), with Keras's wording where Keras has a message
_TEXT_LAYERS = ("TextVectorization", "StringLookup", "Hashing")


def _accepts_text(model):
    """True when the model takes strings in (an Input(dtype='string') or a text layer first)."""
    for layer in getattr(model, "layers", []):
        if type(layer).__name__ in _TEXT_LAYERS or getattr(layer, "_input_dtype", None) == np.dtype(object):
            return True
    return False


def _positive_int(value, name, allow_none=True):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer{' or None' if allow_none else ''}. "
                         f"Received: {name}={value!r}")


def _check_array_data(model, who, x, y=None, sample_weight=None):
    """Refuse what Keras refuses (or should): strings/objects where numbers are needed, empty data,
    non-finite sample weights."""
    if not _is_array_input(x):
        return
    text_ok = _accepts_text(model)
    for what, value, strings_ok in (("x", x, text_ok), ("y", y, False), ("sample_weight", sample_weight, False)):
        if value is None:
            continue
        for a in _nest_flatten(to_batch(value)):
            if a is None or not hasattr(a, "dtype"):
                continue
            kind = np.dtype(a.dtype).kind
            if kind in "OUS" and not strings_ok:
                raise ValueError(f"Invalid dtype: {a.dtype} for {what} in {who}(): it must hold numbers. "
                                 + ("Convert it first (np.asarray(..., 'float32'))." if what != "y" else
                                    "Labels must be numeric (for text labels, map them to integer ids first)."))
            if kind not in "biufOUS" and not strings_ok:
                raise ValueError(f"Invalid dtype: {a.dtype} for {what} in {who}(): it must hold numbers.")
            if len(getattr(a, "shape", ())) and int(a.shape[0]) == 0:
                raise ValueError(f"{who}() received empty data: {what} has shape {tuple(a.shape)} (0 samples). "
                                 "num_samples should be a positive integer value, but got num_samples=0")
            if what == "sample_weight" and kind in "fc" and not bool(np.all(np.isfinite(backend.to_numpy(a)))):
                raise ValueError(f"{who}(): sample_weight holds NaN or inf values.")


def _check_class_weight(model, class_weight):
    if not class_weight:
        return
    if not isinstance(class_weight, dict):
        raise ValueError(f"class_weight must be a dict of class index -> weight. Received: {type(class_weight).__name__}")
    width = None
    outputs = _nest_flatten(getattr(model, "outputs", None))
    shape = getattr(outputs[0], "shape", None) if len(outputs) == 1 else None
    if shape and shape[-1] is not None:
        width = int(shape[-1])
    for k, v in class_weight.items():
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"class_weight keys must be class indices (integers >= 0). Received key {k!r}")
        if width is not None and width > 1 and k >= width:
            raise ValueError(f"class_weight has key {k}, but the model's output has {width} classes "
                             f"(valid keys: 0 to {width - 1}).")
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) or not math.isfinite(v) \
                or v < 0:
            raise ValueError(f"class_weight values must be finite numbers >= 0. Received {k}: {v!r}")


# ----- loops
def _verbose(verbose):
    if not _dist.is_chief():
        return 0  # data-parallel: only rank 0 prints progress
    return 1 if verbose == "auto" else int(verbose)


def fit(model, x, y, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
        validation_data=None, shuffle=True, class_weight=None, sample_weight=None, initial_epoch=0,
        steps_per_epoch=None, validation_steps=None, validation_batch_size=None, validation_freq=1):
    verbose = _verbose(verbose)
    if isinstance(validation_split, bool) or not isinstance(validation_split, (int, float, np.integer, np.floating)) \
            or not 0 <= validation_split <= 1:   # (1.0 gets Keras's "not sufficient to split" message below)
        raise ValueError(f"validation_split must be a float in [0, 1). Received: validation_split={validation_split!r}")
    _positive_int(validation_freq, "validation_freq", allow_none=False)
    _positive_int(steps_per_epoch, "steps_per_epoch")
    _positive_int(validation_steps, "validation_steps")
    if isinstance(initial_epoch, bool) or not isinstance(initial_epoch, (int, np.integer)) or initial_epoch < 0:
        raise ValueError(f"initial_epoch must be an integer >= 0. Received: initial_epoch={initial_epoch!r}")
    _check_class_weight(model, class_weight)
    _check_array_data(model, "fit", x, y, sample_weight)
    val = None
    if validation_split and validation_data is None:
        if not _is_array_input(x):
            raise ValueError("validation_split is only supported for array inputs; pass validation_data for "
                             "generators and iterables.")
        (x, y, sample_weight), val = _validation_split(to_batch(x), to_batch(y), to_batch(sample_weight),
                                                       validation_split)
    elif validation_data is not None:
        val = validation_data if isinstance(validation_data, tuple) else validation_data
    data = make_data(x, y, sample_weight, batch_size, shuffle, steps_per_epoch, class_weight)
    val_data = None
    if val is not None:
        if isinstance(val, tuple):
            vx, vy, vsw = unpack_x_y_sample_weight(val)
            val_data = make_data(vx, vy, vsw, validation_batch_size or batch_size, False, validation_steps)
        else:
            val_data = make_data(val, None, None, None, False, validation_steps)
    cbs = callbacks_mod.CallbackList(callbacks, add_history=True, add_progbar=verbose != 0, model=model,
                                     verbose=verbose, epochs=epochs, steps=data.steps_per_epoch)
    model.stop_training = False
    model.stop_reason = None
    model._initial_epoch = None
    _dist.begin(model)
    cbs.on_train_begin()
    start = model._initial_epoch if model._initial_epoch is not None else initial_epoch
    logs = {}
    gov = _threads.governor()  # chooses the BLAS thread count from measured step times (lamina/threads.py)
    run_step = model.train_step if gov is None else (lambda b: gov.timed(model.train_step, b))
    for epoch in range(start, epochs):
        model.reset_metrics()
        cbs.on_epoch_begin(epoch)
        batch_logs, seen = {}, 0
        for step, batch in enumerate(data):
            cbs.on_train_batch_begin(step)
            try:
                batch_logs = pythonify_logs(run_step(_dist.shard(batch)))
            except (NonFiniteLoss, NonFiniteUpdate) as e:
                where = f"epoch {epoch + 1}, batch {step}"
                msg = (nonfinite_message(model, unpack_x_y_sample_weight(batch)[0], e.value, where) if isinstance(e, NonFiniteLoss)
                       else f"Training stopped at {where}: {e}")
                warnings.warn(msg, RuntimeWarning, stacklevel=3)
                model.stop_training = True
                model.stop_reason = msg
                cbs.on_train_end(logs)
                return model.history
            seen += 1
            cbs.on_train_batch_end(step, batch_logs)
            if model.stop_training:
                break
        if seen == 0:
            warnings.warn("Your input ran out of data; interrupting training. Make sure the generator can "
                          "produce steps_per_epoch * epochs batches.", UserWarning, stacklevel=3)
            break
        logs = dict(batch_logs)
        if val_data is not None and (epoch + 1) % validation_freq == 0:
            val_logs = _evaluate_loop(model, val_data, cbs)
            logs.update({"val_" + k: v for k, v in val_logs.items()})
            logs = sorted_logs(logs)   # (Keras's: the val_ entries among the others by name)
        cbs.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    cbs.on_train_end(logs)
    return model.history


def _evaluate_loop(model, data, cbs):
    model.reset_metrics()
    cbs.on_test_begin()
    logs = {}
    for step, batch in enumerate(data):
        cbs.on_test_batch_begin(step)
        logs = pythonify_logs(model.test_step(_dist.shard(batch)))
        cbs.on_test_batch_end(step, logs)
    logs = pythonify_logs(model.get_metrics_result()) if not logs else logs
    cbs.on_test_end(logs)
    return logs


def evaluate(model, x, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None, callbacks=None):
    verbose = _verbose(verbose)
    _positive_int(steps, "steps")
    _check_array_data(model, "evaluate", x, y, sample_weight)
    data = make_data(x, y, sample_weight, batch_size, False, steps)
    cbs = callbacks_mod.CallbackList(callbacks, add_progbar=verbose != 0, model=model, verbose=verbose,
                                     epochs=1, steps=data.steps_per_epoch, mode="test")
    _dist.begin(model)
    return _evaluate_loop(model, data, cbs)


def predict(model, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
    verbose = _verbose(verbose)
    _positive_int(steps, "steps")
    _check_array_data(model, "predict", x)
    data = make_data(x, None, None, batch_size, False, steps)
    cbs = callbacks_mod.CallbackList(callbacks, add_progbar=verbose != 0, model=model, verbose=verbose,
                                     epochs=1, steps=data.steps_per_epoch, mode="predict")
    _dist.begin(model)
    cbs.on_predict_begin()
    outputs = []
    for step, batch in enumerate(data):
        cbs.on_predict_batch_begin(step)
        out = _dist.gather(to_numpy_structure(model.predict_step(_dist.shard(batch))))
        outputs.append(out)
        cbs.on_predict_batch_end(step, {"outputs": out})
    cbs.on_predict_end()
    if not outputs:
        raise ValueError("predict() received no data.")
    first = outputs[0]
    if isinstance(first, (list, tuple)):
        return [np.concatenate([o[i] for o in outputs]) for i in range(len(first))]
    if isinstance(first, dict):
        return {k: np.concatenate([o[k] for o in outputs]) for k in first}
    return np.concatenate(outputs)
