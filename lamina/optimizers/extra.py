"""Lion, Lamb, Ftrl, Adafactor and LossScaleOptimizer with Keras 3's arguments and update formulas."""
import math

from .. import backend
from ..ops import kernels as _kernels
from ..registry import serialize
from .base import Optimizer, _array, deserialize, get, python_numbers

_BASE = dict(weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None, use_ema=False,
             ema_momentum=0.99, ema_overwrite_frequency=None, loss_scale_factor=None,
             gradient_accumulation_steps=None)


def _xp(a):
    return backend.get_array_module(a)


def _base_kwargs(local):
    return {k: local[k] for k in _BASE}


class Lion(Optimizer):
    """Lion (Chen et al. 2023), Keras 3 formula::

        w -= lr * sign(beta_1 m + (1 - beta_1) g)
        m = beta_2 m + (1 - beta_2) g

    Args: learning_rate=0.001, beta_1=0.9, beta_2=0.99, and the base arguments."""

    _keras_slot_groups = (("momentum",),)   # (Optimizer._keras_slot_groups)
    _slot_names = ("momentum",)

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.99, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, use_ema=False, ema_momentum=0.99,
                 ema_overwrite_frequency=None, loss_scale_factor=None, gradient_accumulation_steps=None,
                 name=None, **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **_base_kwargs(locals()), **kwargs)
        if beta_1 <= 0 or beta_1 > 1:
            raise ValueError("Argument `beta_1` must be in the [0, 1] range. Otherwise, the optimizer degenerates "
                             f"to SignSGD. Received: beta_1={beta_1}.")
        self.beta_1, self.beta_2 = beta_1, beta_2

    def update_step(self, gradient, variable, learning_rate):
        m = self._slot("momentum", variable)
        xp = _xp(m)
        b1, b2 = float(self.beta_1), float(self.beta_2)
        if python_numbers(learning_rate) and _kernels.lion_update(variable.data, gradient, m, b1, b2, learning_rate):
            return   # one compiled pass, the same float operations (python_numbers)
        variable.data -= learning_rate * xp.sign(m * b1 + gradient * (1.0 - b1))
        m *= b2
        m += gradient * (1.0 - b2)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2}


class Lamb(Optimizer):
    """LAMB (You et al. 2020): the Adam direction rescaled per weight by ||w|| / ||update||::

        m += (g - m)(1 - beta_1);  v += (g^2 - v)(1 - beta_2)
        u = (m / (1 - beta_1^t)) / (sqrt(v / (1 - beta_2^t)) + epsilon)
        w -= lr * r * u,  r = ||w|| / ||u|| (1 when either norm is 0)

    Args: learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, and the base arguments."""

    _keras_slot_groups = (("momentum", "velocity"),)   # (Optimizer._keras_slot_groups)
    _slot_names = ("momentum", "velocity")

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, use_ema=False, ema_momentum=0.99,
                 ema_overwrite_frequency=None, loss_scale_factor=None, gradient_accumulation_steps=None,
                 name=None, **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **_base_kwargs(locals()), **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def update_step(self, gradient, variable, learning_rate):
        m, v = self._slot("momentum", variable), self._slot("velocity", variable)
        xp = _xp(m)
        b1, b2 = float(self.beta_1), float(self.beta_2)
        t = self.iterations + 1
        m += (gradient - m) * (1.0 - b1)
        v += (gradient * gradient - v) * (1.0 - b2)
        update = (m / (1.0 - b1 ** t)) / (xp.sqrt(v / (1.0 - b2 ** t)) + self.epsilon)
        w_norm = float(xp.sqrt((variable.data.astype(xp.float64) ** 2).sum()))
        u_norm = float(xp.sqrt((update.astype(xp.float64) ** 2).sum()))
        ratio = w_norm / u_norm if w_norm > 0 and u_norm > 0 else 1.0
        variable.data -= (ratio * learning_rate) * update

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


class Ftrl(Optimizer):
    """FTRL-Proximal (McMahan et al. 2013) with Keras 3's arguments and update (n: accumulator, z: linear)::

        n' = n + g^2;  z += g + 2 l2_shrinkage w - (n'^-p - n^-p) / lr * w     (p = learning_rate_power)
        w = (clip(z, -l1, l1) - z) / (n'^-p / lr + 2 (l2 + beta / (2 lr)))

    Args: learning_rate=0.001, learning_rate_power=-0.5, initial_accumulator_value=0.1,
    l1_regularization_strength=0, l2_regularization_strength=0, l2_shrinkage_regularization_strength=0,
    beta=0, and the base arguments."""

    _keras_slot_groups = (("accumulator", "linear"),)   # (Optimizer._keras_slot_groups)
    _slot_names = ("accumulator", "linear")

    def __init__(self, learning_rate=0.001, learning_rate_power=-0.5, initial_accumulator_value=0.1,
                 l1_regularization_strength=0.0, l2_regularization_strength=0.0,
                 l2_shrinkage_regularization_strength=0.0, beta=0.0, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, use_ema=False, ema_momentum=0.99,
                 ema_overwrite_frequency=None, loss_scale_factor=None, gradient_accumulation_steps=None,
                 name=None, **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **_base_kwargs(locals()), **kwargs)
        for arg, value in (("initial_accumulator_value", initial_accumulator_value),
                           ("l1_regularization_strength", l1_regularization_strength),
                           ("l2_regularization_strength", l2_regularization_strength),
                           ("l2_shrinkage_regularization_strength", l2_shrinkage_regularization_strength)):
            if value < 0.0:
                raise ValueError(f"`{arg}` needs to be positive or zero. Received: {arg}={value}.")
        if learning_rate_power > 0.0:
            raise ValueError("`learning_rate_power` needs to be negative or zero. Received: "
                             f"learning_rate_power={learning_rate_power}.")
        self.learning_rate_power = learning_rate_power
        self.initial_accumulator_value = initial_accumulator_value
        self.l1_regularization_strength = l1_regularization_strength
        self.l2_regularization_strength = l2_regularization_strength
        self.l2_shrinkage_regularization_strength = l2_shrinkage_regularization_strength
        self.beta = beta
        self._slot_initial = {"accumulator": float(initial_accumulator_value)}

    def update_step(self, gradient, variable, learning_rate):
        accum, linear = self._slot("accumulator", variable), self._slot("linear", variable)
        xp = _xp(accum)
        p = -float(self.learning_rate_power)
        l1 = float(self.l1_regularization_strength)
        l2 = float(self.l2_regularization_strength) + self.beta / (2.0 * learning_rate)
        w = variable.data
        new_accum = accum + gradient * gradient
        linear += gradient + 2.0 * self.l2_shrinkage_regularization_strength * w \
            - (new_accum ** p - accum ** p) / learning_rate * w
        quadratic = new_accum ** p / learning_rate + 2.0 * l2
        variable.data[...] = (xp.clip(linear, -l1, l1) - linear) / quadratic
        accum[...] = new_accum

    def get_config(self):
        return {**super().get_config(), "learning_rate_power": self.learning_rate_power,
                "initial_accumulator_value": self.initial_accumulator_value,
                "l1_regularization_strength": self.l1_regularization_strength,
                "l2_regularization_strength": self.l2_regularization_strength,
                "l2_shrinkage_regularization_strength": self.l2_shrinkage_regularization_strength,
                "beta": self.beta}


class Adafactor(Optimizer):
    """Adafactor (Shazeer & Stern 2018), Keras 3 formula: second moments factored over the last two axes
    (row and column means) for weights of rank >= 2, a full second moment otherwise; relative step size
    min(lr, 1/sqrt(t)) scaled by max(epsilon_2, rms(w)); the update clipped to rms <= clip_threshold.

    Args: learning_rate=0.001, beta_2_decay=-0.8, epsilon_1=1e-30, epsilon_2=1e-3, clip_threshold=1.0,
    relative_step=True, and the base arguments."""

    _keras_slot_groups = (("r", "c", "velocity"),)   # (Optimizer._keras_slot_groups)
    _slot_names = ("r", "c", "velocity")

    def __init__(self, learning_rate=0.001, beta_2_decay=-0.8, epsilon_1=1e-30, epsilon_2=1e-3, clip_threshold=1.0,
                 relative_step=True, weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None,
                 use_ema=False, ema_momentum=0.99, ema_overwrite_frequency=None, loss_scale_factor=None,
                 gradient_accumulation_steps=None, name=None, **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **_base_kwargs(locals()), **kwargs)
        self.beta_2_decay, self.epsilon_1, self.epsilon_2 = beta_2_decay, epsilon_1, epsilon_2
        self.clip_threshold, self.relative_step = clip_threshold, relative_step

    def _make_slot(self, variable, slot, init):
        out = super()._make_slot(variable, slot, init)
        shape = tuple(variable.data.shape)
        if slot in ("r", "c"):
            if len(shape) < 2:
                shape = ()
            else:
                shape = shape[:-1] if slot == "r" else shape[:-2] + shape[-1:]
            out.data = _xp(out.data).zeros(shape, dtype=variable.data.dtype)
        return out

    def update_step(self, gradient, variable, learning_rate):
        xp = _xp(gradient)
        t = self.iterations + 1
        lr = learning_rate
        if not callable(self._learning_rate) and self.relative_step:
            lr = min(lr, 1.0 / math.sqrt(t))
        rho = min(lr, 1.0 / math.sqrt(t))
        w = variable.data
        alpha = max(self.epsilon_2, float(xp.sqrt(xp.mean(w.astype(xp.float64) ** 2)))) * rho
        g2 = gradient * gradient + self.epsilon_1
        beta = 1.0 - t ** self.beta_2_decay
        v = self._slot("velocity", variable)
        if w.ndim >= 2:
            r, c = self._slot("r", variable), self._slot("c", variable)
            r[...] = beta * r + (1.0 - beta) * g2.mean(axis=-1)
            c[...] = beta * c + (1.0 - beta) * g2.mean(axis=-2)
            v[...] = (r / r.mean(axis=-1, keepdims=True))[..., None] * c[..., None, :]
        else:
            v[...] = beta * v + (1.0 - beta) * g2
        u = gradient / xp.sqrt(v)
        rms_u = float(xp.sqrt(xp.mean(u.astype(xp.float64) ** 2)))
        u = u / max(1.0, rms_u / self.clip_threshold)
        variable.data -= (alpha * u).astype(w.dtype)

    def get_config(self):
        return {**super().get_config(), "beta_2_decay": self.beta_2_decay, "epsilon_1": self.epsilon_1,
                "epsilon_2": self.epsilon_2, "clip_threshold": self.clip_threshold,
                "relative_step": self.relative_step}


# (Keras keeps this state in the optimizer's variables; lamina keeps it outside them, where a stateless step could
# neither take it from its arguments nor return it)
_NO_STATELESS = ("{name}.stateless_apply is not available in lamina: {state} live outside `optimizer.variables`, so a "
                 "step could not leave them as they are. Use apply(), or stateless_apply on a plain optimizer.")


class LossScaleOptimizer(Optimizer):
    """Dynamic loss scaling around an inner optimizer (Keras 3): ``scale_loss`` multiplies the loss by
    ``dynamic_scale``; ``apply`` unscales the gradients and applies them when all are finite (doubling the
    scale after ``dynamic_growth_steps`` such steps), or skips the step and halves the scale when not.

    Args: inner_optimizer, initial_scale=2**15, dynamic_growth_steps=2000, name."""

    def __init__(self, inner_optimizer, initial_scale=2.0 ** 15, dynamic_growth_steps=2000, name=None, **kwargs):
        if not isinstance(inner_optimizer, Optimizer):
            inner_optimizer = get(inner_optimizer)
        if kwargs.pop("loss_scale_factor", None) is not None:
            raise ValueError("LossScaleOptimizer does not support specifying a `loss_scale_factor`.")
        super().__init__(learning_rate=0.0, name=name or "loss_scale_optimizer", **kwargs)
        self.inner_optimizer = inner_optimizer
        self.initial_scale = float(initial_scale)
        self.dynamic_growth_steps = int(dynamic_growth_steps)
        self.dynamic_scale = float(initial_scale)
        self.step_counter = 0

    @property
    def learning_rate(self):
        return self.inner_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value):
        self.inner_optimizer.learning_rate = value

    @property
    def iterations(self):
        return self.inner_optimizer.iterations

    @iterations.setter
    def iterations(self, value):
        self.inner_optimizer.iterations = value

    @property
    def variables(self):
        return self.inner_optimizer.variables

    def build(self, variables):
        self.inner_optimizer.build(variables)
        self.built = True

    def scale_loss(self, loss):
        return loss * self.dynamic_scale

    def apply(self, grads, trainable_variables=None):
        grads = list(grads)
        arrays = [None if g is None else _array(g) for g in grads]
        finite = all(bool(_xp(a).isfinite(a).all()) for a in arrays if a is not None)
        if finite:
            unscaled = [None if a is None else a / self.dynamic_scale for a in arrays]
            self.inner_optimizer.apply(unscaled, trainable_variables)
            self.step_counter += 1
            if self.step_counter >= self.dynamic_growth_steps:
                self.step_counter = 0
                self.dynamic_scale *= 2.0
        else:
            if trainable_variables is not None and not self.inner_optimizer.built:
                self.inner_optimizer.build(list(trainable_variables))
            self.step_counter = 0
            self.dynamic_scale /= 2.0

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        raise NotImplementedError(_NO_STATELESS.format(name=type(self).__name__,
                                                       state="the dynamic loss scale and its step counter"))

    def get_state(self):
        return self.inner_optimizer.get_state()

    def set_state(self, state):
        self.inner_optimizer.set_state(state)

    def get_config(self):
        return {"name": self.name, "inner_optimizer": serialize(self.inner_optimizer),
                "initial_scale": self.initial_scale, "dynamic_growth_steps": self.dynamic_growth_steps}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        inner = config.pop("inner_optimizer")
        if isinstance(inner, dict):
            inner = deserialize(inner, custom_objects)
        return cls(inner, **config)


class OptimizerMap:
    """Which optimizer trains which variable: ``optimizer_map`` maps variable paths or regular expressions
    (matched in full against ``variable.path``) to optimizers; any other variable goes to
    ``default_optimizer``. Calling the map on a variable returns its optimizer."""

    def __init__(self, default_optimizer, optimizer_map=None):
        if not isinstance(default_optimizer, Optimizer):
            raise TypeError(f"default_optimizer must be a Keras Optimizer instance. Received: {default_optimizer}")
        if optimizer_map is not None and not isinstance(optimizer_map, dict):
            raise TypeError(f"optimizer_map must be a dictionary. Received: {optimizer_map}")
        self.default_optimizer = default_optimizer
        self._optimizer_map = {}
        for key, opt in (optimizer_map or {}).items():
            self[key] = opt

    def __getitem__(self, key):
        import re
        if key in self._optimizer_map:
            return self._optimizer_map[key]
        matches = [p for p in self._optimizer_map if re.fullmatch(p, key)]
        if len(matches) > 1:
            raise ValueError(f"Multiple optimizers assigned to variable {key}.")
        return self._optimizer_map[matches[0]] if matches else self.default_optimizer

    def __setitem__(self, key, optimizer):
        if key in self._optimizer_map:
            raise ValueError(f"'{key}' already exists in the OptimizerMap with value {self._optimizer_map[key]}. "
                             "Please make sure to not use duplicated keys.")
        if not isinstance(key, str):
            raise ValueError(f"key must be a string. Received: {key}")
        if not isinstance(optimizer, Optimizer):
            raise ValueError(f"optimizer must be a Keras Optimizer instance. Received: {optimizer}")
        if isinstance(optimizer, (LossScaleOptimizer, MultiOptimizer)):
            raise ValueError(f"optimizer cannot be {type(optimizer).__name__}.")
        self._optimizer_map[key] = optimizer

    def __delitem__(self, key):
        del self._optimizer_map[key]

    def __len__(self):
        return len(self._optimizer_map)

    def __iter__(self):
        return iter(self._optimizer_map)

    def values(self):
        return self._optimizer_map.values()

    def __call__(self, variable):
        return self[getattr(variable, "path", None) or variable.name]

    def get_config(self):
        return {"default_optimizer": serialize(self.default_optimizer),
                "optimizer_map": {k: serialize(v) for k, v in self._optimizer_map.items()}}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        return cls(deserialize(config["default_optimizer"], custom_objects),
                   {k: deserialize(v, custom_objects) for k, v in (config.get("optimizer_map") or {}).items()})


class MultiOptimizer(Optimizer):
    """Delegates each variable to its own optimizer (an OptimizerMap, or a callable variable -> optimizer).
    Each inner optimizer keeps its own state and step count; ``iterations`` counts the MultiOptimizer's
    steps. The learning rate belongs to the inner optimizers."""

    def __init__(self, optimizer_map, loss_scale_factor=None, name=None):
        super().__init__(learning_rate=0.0, loss_scale_factor=loss_scale_factor, name=name or "multi_optimizer")
        self._optimizer_map = optimizer_map
        self._inner = []
        for opt in list(getattr(optimizer_map, "values", lambda: [])()) + \
                [getattr(optimizer_map, "default_optimizer", None)]:
            if opt is not None and all(opt is not o for o in self._inner):
                self._inner.append(opt)

    @property
    def optimizers(self):
        return list(self._inner)

    @property
    def learning_rate(self):
        raise AttributeError("Learning rate cannot be accessed on a MultiOptimizer. Access the learning rate on "
                             "the individual sub-optimizers instead.")

    @learning_rate.setter
    def learning_rate(self, value):
        raise AttributeError("Learning rate cannot be set on a MultiOptimizer. Set the learning rate on the "
                             "individual sub-optimizers instead.")

    def _owner(self, variable):
        opt = self._optimizer_map(variable)
        if not isinstance(opt, Optimizer):
            raise ValueError(f"Optimizer for variable {variable} is not an Optimizer instance.")
        if isinstance(opt, (LossScaleOptimizer, MultiOptimizer)):
            raise ValueError(f"{type(opt).__name__} cannot be used inside an MultiOptimizer.")
        if all(opt is not o for o in self._inner):
            self._inner.append(opt)
        return opt

    def build(self, variables):
        if self.built:
            return
        variables = list(variables)
        self._trainable_variables = variables
        self._index = {id(v): i for i, v in enumerate(variables)}
        self._groups = {id(v): self._owner(v) for v in variables}
        for opt in self._inner:
            mine = [v for v in variables if self._groups[id(v)] is opt]
            if mine:
                opt.build(mine)
        self.built = True

    def apply(self, grads, trainable_variables=None):
        grads = list(grads)
        variables = list(trainable_variables) if trainable_variables is not None else self._trainable_variables
        if not self.built:
            self.build(variables)
        if self.loss_scale_factor is not None:
            grads = [None if g is None else _array(g) / self.loss_scale_factor for g in grads]
        for opt in self._inner:
            pairs = [(g, v) for g, v in zip(grads, variables) if self._groups.get(id(v)) is opt and g is not None]
            if pairs:
                opt.apply([g for g, _ in pairs], [v for _, v in pairs])
        self._iterations += 1

    def stateless_apply(self, optimizer_variables, grads, trainable_variables):
        raise NotImplementedError(_NO_STATELESS.format(name=type(self).__name__,
                                                       state="the state of its inner optimizers"))

    def get_state(self):
        return [s for opt in self._inner for s in opt.get_state()]

    def get_config(self):
        om = self._optimizer_map
        return {"name": self.name, "loss_scale_factor": self.loss_scale_factor,
                "optimizer_map": om.get_config() if isinstance(om, OptimizerMap) else serialize(om)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        om = config.pop("optimizer_map")
        if isinstance(om, dict) and "default_optimizer" in om:
            om = OptimizerMap.from_config(om, custom_objects)
        return cls(om, **config)
