"""The Optimizer base: learning rate (float, schedule or callable), clipping, decoupled weight decay,
per-weight state in creation order, EMA of the weights, gradient accumulation, and exact state export.

An update works on the raw arrays (``variable.data``) in place, with the array module of the data
(NumPy or CuPy) and in the variable's dtype, so float32 weights stay float32. The order of one step
follows Keras 3: drop None gradients, unscale (loss_scale_factor), clip (clipnorm, global_clipnorm or
clipvalue), decay the weights (``w -= lr * weight_decay * w``), run each optimizer's ``update_step``,
project with the variable's constraint, update the EMA, count the step.
"""
import warnings

import numpy as np

from .. import backend
from .. import threads as _threads
from ..registry import get_registered_object, register, serialize, subclasses
from ..scopes import StatelessScope
from ..tensor import Tensor, Variable
from . import schedules as _schedules


class _Step(int):
    """The step counter: an int that also answers ``.numpy()`` as a Keras variable does."""

    def numpy(self):
        return np.int64(self)


class _LearningRate(float):
    """The current learning rate: a float that also answers ``.numpy()`` and ``.assign(x)`` (Keras code
    calls both on ``optimizer.learning_rate``)."""

    def __new__(cls, value, optimizer=None):
        obj = super().__new__(cls, value)
        obj._optimizer = optimizer
        return obj

    def numpy(self):
        return np.float32(self)

    def assign(self, value):
        self._optimizer.learning_rate = value


def _array(g):
    """The raw array of a gradient (Tensor or array)."""
    return g.data if isinstance(g, Tensor) else g


def fresh(x):
    """A ufunc's new result as an array an update may write into (``out=``): for 0-d operands (a scalar weight,
    e.g. Attention's ``scale``) NumPy returns a scalar instead, which ``out=`` refuses."""
    return np.asarray(x) if isinstance(x, np.generic) else x


def python_numbers(*values):
    """Whether every value is a Python float or int: NumPy then computes an update's float32 arithmetic in float32
    (weak scalars), which the compiled one-pass updates (ops.kernels) repeat to the bit; a NumPy float64 scalar
    would make NumPy's code compute in float64."""
    return all(type(v) in (float, int) for v in values)


# the base class's own slots (use_ema's average, gradient_accumulation_steps' accumulator): first in Keras's order
_KERAS_BASE_SLOTS = ("average", "gradient_accumulator")


class Optimizer:
    """Base of every optimizer (Keras 3 arguments and defaults).

    Args:
        learning_rate: float, a ``schedules.LearningRateSchedule`` (evaluated at ``iterations``), or a
            callable with no argument.
        weight_decay: float or None. Decoupled decay ``w -= lr * weight_decay * w`` before each update.
        clipnorm: clip each gradient to this L2 norm. global_clipnorm: clip all gradients together so
            that their joint norm is at most this. clipvalue: clip each entry to [-clipvalue, clipvalue].
            At most one of the three.
        use_ema, ema_momentum, ema_overwrite_frequency: keep an exponential moving average of the
            weights (``finalize_variable_values`` copies it into them).
        loss_scale_factor: gradients are divided by it first (``scale_loss`` multiplies the loss).
        gradient_accumulation_steps: apply the mean gradient of this many calls, once.
        name: the optimizer's name.

    Subclasses list their per-weight slots in ``_slot_names`` (created in that order, each for every
    weight in order) and write ``update_step(gradient, variable, learning_rate)`` on arrays.
    """

    _slot_names = ()
    _slot_initial = {}   # slot name -> constant initial value (default 0)
    # Keras 3.15's order of its optimizer variables after [iteration, learning_rate] (in ``variables`` and in .keras
    # files): groups of slot names, within a group the slots interleaved per weight (a_momentum, a_velocity,
    # b_momentum, ...), the groups one after another, the base's own slots (_KERAS_BASE_SLOTS) first; None where
    # lamina does not know Keras's order for the optimizer
    _keras_slot_groups = None

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        register(cls)

    def __init__(self, learning_rate, weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None,
                 use_ema=False, ema_momentum=0.99, ema_overwrite_frequency=None, loss_scale_factor=None,
                 gradient_accumulation_steps=None, name=None, **kwargs):
        if kwargs.pop("decay", None) is not None:
            warnings.warn("Argument `decay` is no longer supported and will be ignored.")
        if "lr" in kwargs:
            raise ValueError(f"{type(self).__name__}: `lr` is not an argument; use `learning_rate=` (Keras 3).")
        if kwargs:
            raise ValueError(f"{type(self).__name__}: argument(s) not recognized: {sorted(kwargs)}")
        given = [k for k, v in (("clipnorm", clipnorm), ("clipvalue", clipvalue),
                                ("global_clipnorm", global_clipnorm)) if v is not None]
        if len(given) > 1:
            raise ValueError(f"{type(self).__name__}: only one of `clipnorm`, `clipvalue` and `global_clipnorm` "
                             f"can be set. Received: clipnorm={clipnorm}, clipvalue={clipvalue}, "
                             f"global_clipnorm={global_clipnorm}")
        if gradient_accumulation_steps is not None and not (int(gradient_accumulation_steps) >= 2):
            raise ValueError(f"{type(self).__name__}: `gradient_accumulation_steps` must be an integer >= 2. "
                             f"Received: gradient_accumulation_steps={gradient_accumulation_steps}")
        if use_ema and not 0.0 <= ema_momentum <= 1.0:
            raise ValueError(f"{type(self).__name__}: `ema_momentum` must be in [0, 1]. Received: {ema_momentum}")
        self.name = name or backend.unique_name(backend.snake_case(type(self).__name__))
        self.weight_decay = weight_decay
        self.clipnorm = clipnorm
        self.clipvalue = clipvalue
        self.global_clipnorm = global_clipnorm
        self.use_ema = bool(use_ema)
        self.ema_momentum = ema_momentum
        self.ema_overwrite_frequency = ema_overwrite_frequency
        self.loss_scale_factor = loss_scale_factor
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self._set_lr(learning_rate)
        self._iterations = 0
        self.built = False
        self._trainable_variables = []
        self._index = {}            # id(variable) -> position in _trainable_variables
        self._slots = {}            # slot name -> list of Variables, one per weight, in order
        self._exclude_ids, self._exclude_names = set(), ()
        self._warned_missing = False

    # ----- learning rate
    def _set_lr(self, value):
        if isinstance(value, dict):
            value = _schedules.deserialize(value)
        if isinstance(value, _schedules.LearningRateSchedule) or callable(value):
            self._learning_rate = value
            return
        try:
            self._learning_rate = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{type(self).__name__}: `learning_rate` should be a float, a LearningRateSchedule "
                             f"or a callable. Received: learning_rate={value!r}") from None

    @property
    def learning_rate(self):
        """The learning rate used by the next step (a schedule is evaluated at ``iterations``)."""
        return _LearningRate(self._current_lr(), self)

    @learning_rate.setter
    def learning_rate(self, value):
        if isinstance(self._learning_rate, _schedules.LearningRateSchedule) and not (
                isinstance(value, _schedules.LearningRateSchedule) or callable(value)):
            raise TypeError("This optimizer was created with a `LearningRateSchedule` object as its "
                            "`learning_rate` constructor argument, hence its learning rate is not settable. "
                            "If you need the learning rate to be settable, you should instantiate the "
                            "optimizer with a float `learning_rate` argument.")
        self._set_lr(value)

    def _current_lr(self):
        lr = self._learning_rate
        if isinstance(lr, _schedules.LearningRateSchedule):
            return float(lr(self._iterations))
        if callable(lr):
            return float(lr())
        return lr

    @property
    def iterations(self):
        """Number of updates applied (calls // gradient_accumulation_steps when accumulating)."""
        n = self._iterations
        if self.gradient_accumulation_steps:
            n //= int(self.gradient_accumulation_steps)
        return _Step(n)

    @iterations.setter
    def iterations(self, value):
        self._iterations = int(value)

    # ----- state
    def build(self, variables):
        """Create the per-weight state for variables (in order). Does nothing once built."""
        if self.built:
            return
        variables = list(variables)
        self._trainable_variables = variables
        self._index = {id(v): i for i, v in enumerate(variables)}
        names = []
        if self.use_ema:
            names.append("average")
        if self.gradient_accumulation_steps:
            names.append("gradient_accumulator")
        names.extend(self._active_slots())
        for slot in names:
            init = self._slot_initial.get(slot, 0.0)
            self._slots[slot] = [self._make_slot(v, slot, init) for v in variables]
        if self.use_ema:  # the average starts at the weights themselves
            for a, v in zip(self._slots["average"], variables):
                a.data[...] = v.data
        self.built = True

    def _active_slots(self):
        return list(self._slot_names)

    def _make_slot(self, variable, slot, init):
        xp = backend.get_array_module(variable.data)
        data = xp.full(variable.data.shape, init, dtype=variable.data.dtype)
        path = (getattr(variable, "path", None) or variable.name or "variable").replace("/", "_")
        with self._scope():
            return Variable(data, name=f"{path}_{slot}", trainable=False, dtype=variable.data.dtype)

    def _scope(self):
        """The optimizer's name scope: its variables' paths are 'adam/iteration', 'adam/dense_kernel_momentum', as
        Keras's (MultiOptimizer routes by path, so the prefix is the optimizer's own name)."""
        return backend.name_scope(self.name, caller=self)

    def _slot(self, name, variable):
        return self._slots[name][self._index[id(variable)]].data

    @property
    def variables(self):
        """The optimizer's state as Variables: the step counter, the learning rate (when it is a float),
        then every slot for every weight. The first two are snapshots; use ``learning_rate`` /
        ``iterations`` to change them."""
        with self._scope():
            out = [Variable(np.asarray(self._iterations, np.int64), name="iteration", trainable=False, dtype="int64")]
            if isinstance(self._learning_rate, float):
                out.append(Variable(np.asarray(self._learning_rate, np.float32), name="learning_rate",
                                    trainable=False))
        order = self._keras_slot_order() if self.built else None
        if order is None:
            for slots in self._slots.values():
                out.extend(slots)
        else:   # (Keras's order: each weight's slots together)
            out.extend(self._slots[name][i] for name, i in order)
        return out

    def _keras_slot_order(self):
        """[(slot name, weight index)] in Keras's variable order, or None where lamina does not know it (no
        ``_keras_slot_groups``, or a slot they do not name)."""
        if self._keras_slot_groups is None:
            return None
        layout = [(name,) for name in _KERAS_BASE_SLOTS] + list(self._keras_slot_groups)
        active = list(self._slots)
        if set(active) - {name for group in layout for name in group}:
            return None
        n = len(self._trainable_variables)
        order = []
        for group in layout:
            names = [name for name in group if name in active]
            order += [(name, i) for i in range(n) for name in names]
        return order

    def get_state(self):
        """The exact state as a list of arrays: the step counter (int64), then each slot (in
        ``_slot_names`` order) for each weight in order. ``set_state`` restores it exactly."""
        state = [np.asarray(self._iterations, np.int64)]
        for slots in self._slots.values():
            state.extend(s.data.copy() for s in slots)
        return state

    def set_state(self, state):
        """Restore what ``get_state`` returned (the optimizer must be built on the same weights)."""
        state = list(state)
        expected = 1 + sum(len(s) for s in self._slots.values())
        if len(state) != expected:
            hint = "" if self.built else " It is not built yet: call optimizer.build(model.trainable_weights) first."
            raise ValueError(f"{type(self).__name__}.set_state: expected {expected} arrays (the step counter and "
                             f"{expected - 1} slot arrays), received {len(state)}.{hint}")
        self._iterations = int(np.asarray(backend.to_numpy(state[0])))
        k = 1
        for slots in self._slots.values():
            for s in slots:
                value = state[k]
                if tuple(np.shape(value)) != s.shape:
                    raise ValueError(f"{type(self).__name__}.set_state: slot '{s.name}' has shape {s.shape}, "
                                     f"received shape {tuple(np.shape(value))}.")
                s.assign(value)
                k += 1
        self._restore_extra()

    def _restore_extra(self):
        """Hook: recompute state derived from the step counter (Nadam's momentum product)."""

    # Keras names for the same thing
    def get_weights(self):
        return self.get_state()

    def set_weights(self, weights):
        self.set_state(weights)

    def exclude_from_weight_decay(self, var_list=None, var_names=None):
        """Skip weight decay for these variables, or for variables whose name contains any of var_names."""
        if self.built:
            raise ValueError("`exclude_from_weight_decay()` can only be configured before the optimizer is built.")
        self._exclude_ids = {id(v) for v in (var_list or [])}
        self._exclude_names = tuple(var_names or ())

    def _use_weight_decay(self, variable):
        if id(variable) in self._exclude_ids:
            return False
        name = variable.name or ""
        return not any(n in name for n in self._exclude_names)

    # ----- applying gradients
    def apply_gradients(self, grads_and_vars):
        """Apply ``[(gradient, variable), ...]`` (e.g. ``zip(grads, model.trainable_weights)``)."""
        pairs = list(grads_and_vars)
        if not pairs:
            return self.iterations
        grads, variables = zip(*pairs)
        self.apply(grads, variables)
        return self.iterations

    def apply(self, grads, trainable_variables=None):
        """Apply gradients (arrays, Tensors or None, in the order of the variables) to the variables."""
        grads = list(grads)
        if not grads:
            return
        if trainable_variables is None:
            if not self.built:
                raise ValueError("When passing `grads` without `variables`, the optimizer must already be built "
                                 "on a list of variables. Call `optimizer.build(trainable_variables)` first.")
            variables = self._trainable_variables
            if len(grads) != len(variables):
                raise ValueError(f"{type(self).__name__}: received {len(grads)} gradients for the "
                                 f"{len(variables)} variables the optimizer was built with.")
        else:
            variables = list(trainable_variables)
            if len(grads) != len(variables):
                raise ValueError(f"{type(self).__name__}: received {len(grads)} gradients for {len(variables)} "
                                 "variables.")
            if not self.built:
                self.build(variables)
            unknown = [v for v in variables if id(v) not in self._index]
            if unknown:
                raise ValueError(f"{type(self).__name__}: unknown variable(s) "
                                 f"{[getattr(v, 'path', v.name) for v in unknown]}. This optimizer can only be "
                                 "called for the variables it was built with; create a new optimizer for a new "
                                 "set of variables.")
        kept_g, kept_v, missing = [], [], []
        for g, v in zip(grads, variables):
            if g is None:
                missing.append(getattr(v, "path", v.name))
                continue
            g = _array(g)
            if g.dtype != v.data.dtype:  # no float64 upcast of float32 weights
                g = g.astype(v.data.dtype)
            if tuple(g.shape) != tuple(v.data.shape):
                raise ValueError(f"{type(self).__name__}: gradient of shape {tuple(g.shape)} for variable "
                                 f"'{getattr(v, 'path', v.name)}' of shape {tuple(v.data.shape)}.")
            kept_g.append(g)
            kept_v.append(v)
        if not kept_g:
            raise ValueError("No gradients provided for any variable.")
        if missing and not self._warned_missing:
            self._warned_missing = True
            warnings.warn(f"Gradients do not exist for variables {missing} when minimizing the loss. "
                          "If using `model.compile()`, did you forget to provide a `loss` argument?")
        if self.loss_scale_factor is not None:
            kept_g = [g / self.loss_scale_factor for g in kept_g]
        if self.gradient_accumulation_steps:
            steps = int(self.gradient_accumulation_steps)
            accs = [self._slot("gradient_accumulator", v) for v in kept_v]
            if (self._iterations + 1) % steps != 0:
                for acc, g in zip(accs, kept_g):
                    acc += g
                _bump(self._slot_variables(kept_v, ("gradient_accumulator",)))
                self._iterations += 1
                return
            kept_g = [(g + acc) / steps for g, acc in zip(kept_g, accs)]
            for acc in accs:
                acc[...] = 0
        kept_g = self._clip_gradients(kept_g)
        lr = self._current_lr()
        self._apply_weight_decay(kept_v, lr)
        self._before_update()
        self._update_all(kept_g, kept_v, lr)
        for v in kept_v:
            if getattr(v, "constraint", None) is not None:
                v.data[...] = _array(v.constraint(v.data))
        if self.use_ema:
            self._update_ema()
        # the weights and their slots changed in place: graphs recorded before refuse to backward
        _bump(kept_v)
        _bump(self._slot_variables(kept_v, self._slots))
        self._iterations += 1

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        """One step on given values, changing neither the weights nor the optimizer (Keras's ``stateless_apply``).

        ``optimizer_variables`` holds one value per ``optimizer.variables`` (the step counter, the learning rate
        when it is a number, the slots), ``trainable_variables`` one per variable the optimizer was built on,
        ``grads`` their gradients. Returns ``(trainable_variables, optimizer_variables)`` after the step, as
        Tensors (the values given for what the step leaves unchanged)."""
        if not self.built:
            raise ValueError(f"To call `stateless_apply`, {type(self).__name__} must be built (i.e. its variables "
                             "must have been created). You can build it via `optimizer.build(trainable_variables)`.")
        own = self.variables
        if len(optimizer_variables) != len(own):
            raise ValueError(f"Argument `optimizer_variables` must be a list of tensors corresponding 1:1 to "
                             f"{type(self).__name__}().variables. Received list with length "
                             f"{len(optimizer_variables)}, but expected {len(own)} variables.")
        if len(trainable_variables) != len(self._trainable_variables):
            raise ValueError("Argument `trainable_variables` must be a list of tensors corresponding 1:1 to the "
                             "trainable variables list that the optimizer was built with. Received "
                             f"len(trainable_variables) == {len(trainable_variables)} whereas the optimizer was "
                             f"built with {len(self._trainable_variables)} variables.")
        mapping = list(zip(self._trainable_variables, trainable_variables)) + list(zip(own, optimizer_variables))
        # the step counter and a number learning rate are Python numbers here, not variables: set from the values
        # given for their variables (own[0], own[1]) for the step, then put back, with every other number the step
        # changes (Nadam's momentum product, recomputed from the counter)
        numbers = {k: v for k, v in self.__dict__.items() if type(v) in (int, float, bool)}
        try:
            with StatelessScope(mapping) as scope:
                self._iterations = int(own[0].numpy())
                if isinstance(self._learning_rate, float):
                    self._learning_rate = float(own[1].numpy())
                self._restore_extra()
                self.apply(grads)
                own[0].assign(self._iterations)
        finally:
            self.__dict__.update(numbers)
        return ([scope.get_current_value(v) for v in self._trainable_variables],
                [scope.get_current_value(v) for v in own])

    def _update_all(self, grads, variables, lr):
        """update_step for every variable, or, for an optimizer whose update splits into independent
        element-wise parts (``_update_parts``, Adam's blocks) and a step large enough, those parts spread
        over lamina's threads (threads.split_width): the same arithmetic per weight, on every core."""
        parted = getattr(type(self), "_parted_update_step", None)
        if parted is not None and parted is type(self).update_step and all(
                backend.get_array_module(v.data) is np for v in variables):
            width = _threads.split_width(sum(v.data.size for v in variables))
            if width > 1:
                parts = [p for g, v in zip(grads, variables) for p in self._update_parts(g, v, lr)]
                _threads.run_split(_balanced(parts, width))
                return
        for g, v in zip(grads, variables):
            self.update_step(g, v, lr)

    def _slot_variables(self, variables, names):
        return [self._slots[n][self._index[id(v)]] for n in names if n in self._slots
                for v in variables if id(v) in self._index]

    def _before_update(self):
        """Hook run once per step before the per-weight updates (Nadam updates its momentum product)."""

    def update_step(self, gradient, variable, learning_rate):  # pragma: no cover - abstract
        raise NotImplementedError

    def _clip_gradients(self, grads):
        if self.clipnorm and self.clipnorm > 0:
            c = float(self.clipnorm)
            out = []
            for g in grads:
                xp = backend.get_array_module(g)
                norm = float(xp.sqrt(xp.sum(g * g, dtype=g.dtype)))
                # g * c / max(norm, c): unchanged when the norm is below c
                out.append(g * (c / max(norm, c)) if norm > c else g)
            return out
        if self.global_clipnorm and self.global_clipnorm > 0:
            c = float(self.global_clipnorm)
            sq = 0.0
            for g in grads:
                xp = backend.get_array_module(g)
                sq += float(xp.sum(g * g, dtype=g.dtype))
            norm = sq ** 0.5
            scale = c * min(1.0 / norm if norm > 0 else np.inf, 1.0 / c)
            if not np.isfinite(norm):  # an inf/nan norm makes every gradient nan, as in Keras
                scale = float("nan")
            return grads if scale == 1.0 else [g * scale for g in grads]
        if self.clipvalue and self.clipvalue > 0:
            c = float(self.clipvalue)
            return [backend.get_array_module(g).clip(g, -c, c) for g in grads]
        return grads

    def _apply_weight_decay(self, variables, lr):
        if not self.weight_decay:
            return
        factor = 1.0 - lr * float(self.weight_decay)
        for v in variables:
            if self._use_weight_decay(v):
                v.data *= factor

    def _update_ema(self):
        m = self.ema_momentum if self.iterations != 0 else 0.0
        for v, a in zip(self._trainable_variables, self._slots["average"]):
            a.data *= m
            a.data += (1.0 - m) * v.data
        freq = self.ema_overwrite_frequency
        if freq and (self.iterations + 1) % int(freq) == 0:
            self.finalize_variable_values(self._trainable_variables)

    def finalize_variable_values(self, var_list):
        """With use_ema, copy the moving averages into the weights (fit calls it after the last epoch)."""
        if self.use_ema:
            for v in var_list:
                v.data[...] = self._slot("average", v)
            _bump(var_list)

    def scale_loss(self, loss):
        return loss * self.loss_scale_factor if self.loss_scale_factor is not None else loss

    # ----- torch-style convenience
    def step(self, variables):
        """Apply each variable's ``.grad`` (filled by ``loss.backward()``); variables without one are skipped."""
        variables = list(variables)
        self.apply([v.grad for v in variables], variables)

    @staticmethod
    def zero_grad(variables):
        """Clear ``.grad`` of each variable (call before the next ``backward()``)."""
        for v in variables:
            v.grad = None

    # ----- config
    def get_config(self):
        lr = self._learning_rate
        if isinstance(lr, _schedules.LearningRateSchedule):
            lr = serialize(lr)
        elif callable(lr):
            lr = float(lr())
        return {"name": self.name, "learning_rate": lr, "weight_decay": self.weight_decay,
                "clipnorm": self.clipnorm, "global_clipnorm": self.global_clipnorm, "clipvalue": self.clipvalue,
                "use_ema": self.use_ema, "ema_momentum": self.ema_momentum,
                "ema_overwrite_frequency": self.ema_overwrite_frequency,
                "loss_scale_factor": self.loss_scale_factor,
                "gradient_accumulation_steps": self.gradient_accumulation_steps}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        if isinstance(config.get("learning_rate"), dict):
            config["learning_rate"] = _schedules.deserialize(config["learning_rate"], custom_objects)
        return cls(**config)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name} learning_rate={self._current_lr():.6g}>"


def _bump(tensors):
    """Record an in-place change of each tensor's data (see Tensor._bump_version)."""
    for t in tensors:
        t._bump_version()


# The names optimizers.get() accepts, Keras's (case-insensitive; each is a lamina optimizer's class name in
# lower case). The classes are found among Optimizer's subclasses, so this module needs none of the modules
# that define them (extra.py, which uses get, imports this one); not through the registry, where a user's
# custom_object_scope({"Adam": ...}) or a same-named user class would stand in for lamina's.
_GET_NAMES = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta", "adamax", "nadam", "lion", "lamb", "ftrl",
              "adafactor", "lossscaleoptimizer", "muon", "schedulefreeadamw")


def _by_name(name):
    """lamina's optimizer class called ``name`` (any case), if get() accepts that name; else None."""
    name = str(name).lower()
    if name not in _GET_NAMES:
        return None
    for cls in subclasses(Optimizer):
        if cls.__name__.lower() == name and cls.__module__.startswith("lamina.optimizers"):
            return cls
    return None


def get(identifier):
    """An optimizer from a name ('adam', 'SGD', ...), an Optimizer (returned as is) or a config dict."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        cls = _by_name(identifier)
        if cls is None:
            raise ValueError(f"Unknown optimizer {identifier!r}. Valid names: {', '.join(_GET_NAMES)} "
                             "(case-insensitive, class names too).")
        return cls()
    raise ValueError(f"Could not interpret optimizer identifier: {identifier!r}. Pass a name "
                     f"({', '.join(_GET_NAMES)}), an Optimizer instance or a {{'class_name', 'config'}} dict.")


def deserialize(config, custom_objects=None):
    """An optimizer from ``{'class_name': ..., 'config': {...}}``."""
    name = config.get("class_name", "")
    cls = _by_name(name) or get_registered_object(name, custom_objects, base=Optimizer)
    if cls is None:
        raise ValueError(f"Unknown optimizer {name!r}. Valid names: {', '.join(_GET_NAMES)}.")
    return cls.from_config(config.get("config", {}), custom_objects)


def _balanced(parts, width):
    """``width`` callables that each run a contiguous run of ``parts`` [(elements, fn), ...] holding about
    1/width of all the elements."""
    total = sum(n for n, _ in parts)
    groups, done = [[] for _ in range(width)], 0
    for n, fn in parts:
        groups[min(width - 1, done * width // max(total, 1))].append(fn)
        done += n
    return [lambda group=group: [fn() for fn in group] for group in groups if group]
