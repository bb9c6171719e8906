"""Learning-rate schedules: the learning rate as a function of the optimizer's step counter.

``Adam(learning_rate=schedules.ExponentialDecay(1e-3, decay_steps=1000, decay_rate=0.9))`` evaluates the
schedule at ``optimizer.iterations`` before every update. Each schedule returns a Python float.
"""
import math

from ..registry import get_registered_object, register, serialize, subclasses


class LearningRateSchedule:
    """Base: subclasses write ``__call__(step) -> float`` and ``get_config()``."""

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        register(cls)

    def __call__(self, step):  # pragma: no cover - abstract
        raise NotImplementedError(f"Learning rate schedule '{type(self).__name__}' must override `__call__(self, step)`.")

    def get_config(self):
        raise NotImplementedError(f"Learning rate schedule '{type(self).__name__}' must override `get_config()`.")

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _step(step):
    return float(step)


class ExponentialDecay(LearningRateSchedule):
    """``initial_learning_rate * decay_rate ^ (step / decay_steps)``; with staircase the exponent is floored."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name="ExponentialDecay"):
        if decay_steps <= 0:
            raise ValueError(f"ExponentialDecay: `decay_steps` must be > 0. Received: decay_steps={decay_steps}")
        self.initial_learning_rate, self.decay_steps, self.decay_rate = initial_learning_rate, decay_steps, decay_rate
        self.staircase, self.name = staircase, name

    def __call__(self, step):
        p = _step(step) / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return float(self.initial_learning_rate * self.decay_rate ** p)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase, "name": self.name}


class PiecewiseConstantDecay(LearningRateSchedule):
    """``values[0]`` while step <= boundaries[0], ``values[i]`` while boundaries[i-1] < step <= boundaries[i],
    ``values[-1]`` after the last boundary. len(values) == len(boundaries) + 1."""

    def __init__(self, boundaries, values, name="PiecewiseConstant"):
        if len(boundaries) != len(values) - 1:
            raise ValueError("PiecewiseConstantDecay: the length of `boundaries` should be 1 less than the length "
                             f"of `values`. Received: boundaries={list(boundaries)} of length {len(boundaries)}, "
                             f"values={list(values)} of length {len(values)}.")
        self.boundaries, self.values, self.name = list(boundaries), list(values), name

    def __call__(self, step):
        s = _step(step)
        for b, v in zip(self.boundaries, self.values):
            if s <= b:
                return float(v)
        return float(self.values[-1])

    def get_config(self):
        return {"boundaries": self.boundaries, "values": self.values, "name": self.name}


class InverseTimeDecay(LearningRateSchedule):
    """``initial_learning_rate / (1 + decay_rate * step / decay_steps)`` (exponent floored with staircase)."""

    def __init__(self, initial_learning_rate, decay_steps, decay_rate, staircase=False, name="InverseTimeDecay"):
        self.initial_learning_rate, self.decay_steps, self.decay_rate = initial_learning_rate, decay_steps, decay_rate
        self.staircase, self.name = staircase, name

    def __call__(self, step):
        p = _step(step) / self.decay_steps
        if self.staircase:
            p = math.floor(p)
        return float(self.initial_learning_rate / (1.0 + self.decay_rate * p))

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "decay_rate": self.decay_rate, "staircase": self.staircase, "name": self.name}


class PolynomialDecay(LearningRateSchedule):
    """``(initial - end) * (1 - step / decay_steps) ^ power + end`` with step capped at decay_steps; with
    cycle, decay_steps grows to the next multiple of itself past step instead."""

    def __init__(self, initial_learning_rate, decay_steps, end_learning_rate=0.0001, power=1.0, cycle=False,
                 name="PolynomialDecay"):
        self.initial_learning_rate, self.decay_steps = initial_learning_rate, decay_steps
        self.end_learning_rate, self.power, self.cycle, self.name = end_learning_rate, power, cycle, name

    def __call__(self, step):
        s, steps = _step(step), float(self.decay_steps)
        if self.cycle:
            steps = steps * (1.0 if s == 0 else math.ceil(s / steps))
        else:
            s = min(s, steps)
        frac = (1.0 - s / steps) ** self.power
        return float((self.initial_learning_rate - self.end_learning_rate) * frac + self.end_learning_rate)

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "end_learning_rate": self.end_learning_rate, "power": self.power, "cycle": self.cycle,
                "name": self.name}


def _cosine(initial, step, decay_steps, alpha):
    done = step / decay_steps
    return initial * ((1.0 - alpha) * 0.5 * (1.0 + math.cos(math.pi * done)) + alpha)


class CosineDecay(LearningRateSchedule):
    """Optional linear warmup, then cosine decay (Loshchilov & Hutter, SGDR).

    Without warmup_target: ``initial * ((1 - alpha) * 0.5 * (1 + cos(pi * min(step, decay_steps) /
    decay_steps)) + alpha)``. With warmup_target: a linear ramp from initial_learning_rate to warmup_target
    over warmup_steps, then the cosine decay from warmup_target over decay_steps.
    """

    def __init__(self, initial_learning_rate, decay_steps, alpha=0.0, name="CosineDecay", warmup_target=None,
                 warmup_steps=0):
        if decay_steps <= 0:
            raise ValueError(f"CosineDecay: `decay_steps` must be > 0. Received: decay_steps={decay_steps}")
        self.initial_learning_rate, self.decay_steps, self.alpha = initial_learning_rate, decay_steps, alpha
        self.name, self.warmup_target, self.warmup_steps = name, warmup_target, warmup_steps

    def __call__(self, step):
        s = _step(step)
        if self.warmup_target is None:
            return float(_cosine(self.initial_learning_rate, min(s, self.decay_steps), self.decay_steps, self.alpha))
        s = min(s, self.decay_steps + self.warmup_steps)
        if s < self.warmup_steps:
            done = s / self.warmup_steps
            return float(self.initial_learning_rate + (self.warmup_target - self.initial_learning_rate) * done)
        return float(_cosine(self.warmup_target, s - self.warmup_steps, self.decay_steps, self.alpha))

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "decay_steps": self.decay_steps,
                "alpha": self.alpha, "name": self.name, "warmup_target": self.warmup_target,
                "warmup_steps": self.warmup_steps}


class CosineDecayRestarts(LearningRateSchedule):
    """Cosine decay with warm restarts (SGDR): periods of first_decay_steps, each t_mul times longer and
    starting m_mul times lower than the one before."""

    def __init__(self, initial_learning_rate, first_decay_steps, t_mul=2.0, m_mul=1.0, alpha=0.0,
                 name="SGDRDecay"):
        self.initial_learning_rate, self.first_decay_steps = initial_learning_rate, first_decay_steps
        self.t_mul, self.m_mul, self.alpha, self.name = t_mul, m_mul, alpha, name

    def __call__(self, step):
        done = _step(step) / self.first_decay_steps
        if self.t_mul == 1.0:
            i = math.floor(done)
            done -= i
        else:
            i = math.floor(math.log(1.0 - done * (1.0 - self.t_mul)) / math.log(self.t_mul))
            sum_r = (1.0 - self.t_mul ** i) / (1.0 - self.t_mul)
            done = (done - sum_r) / self.t_mul ** i
        m_fac = self.m_mul ** i
        cosine = 0.5 * m_fac * (1.0 + math.cos(math.pi * done))
        return float(self.initial_learning_rate * ((1.0 - self.alpha) * cosine + self.alpha))

    def get_config(self):
        return {"initial_learning_rate": self.initial_learning_rate, "first_decay_steps": self.first_decay_steps,
                "t_mul": self.t_mul, "m_mul": self.m_mul, "alpha": self.alpha, "name": self.name}


def deserialize(config, custom_objects=None):
    """A schedule from ``{'class_name': ..., 'config': {...}}``."""
    name = config.get("class_name")
    cls = get_registered_object(name, custom_objects, base=LearningRateSchedule) if name else None
    if cls is None:
        valid = sorted(c.__name__ for c in _all_schedules())
        raise ValueError(f"Unknown learning rate schedule {name!r}. Valid names: {', '.join(valid)}.")
    return cls.from_config(config.get("config", {}))


def _all_schedules():
    return subclasses(LearningRateSchedule)
