"""Schedule-Free AdamW (Defazio et al., 2024) with Keras 3.15's arguments and update rule."""
from .. import backend
from .base import Optimizer
from .extra import _base_kwargs

__all__ = ["ScheduleFreeAdamW"]


class ScheduleFreeAdamW(Optimizer):
    """Schedule-Free AdamW: no learning-rate schedule; the weights are an interpolation between the
    sequence z the Adam steps move and the running average x of it, as in Keras 3.15.

    The optimizer keeps z (slot 'momentum', started at the weights) and v (slot 'velocity'); the weight
    itself holds y, and x is recovered from y and z. With t the step (from 1) and lr warmed up linearly
    over ``warmup_steps`` (lr min(t / warmup_steps, 1))::

        v += (g^2 - v)(1 - beta_2)
        z_new = z - lr g / (sqrt(v / (1 - beta_2^t)) + epsilon)
        x = (y - (1 - beta_1) z) / beta_1                 (the average before this step, from the old z)
        x_new = (1 - 1/t) x + (1/t) z_new
        y = (1 - beta_1) z_new + beta_1 x_new

    Weight decay (``weight_decay``) is applied to y before the step, as Keras's base optimizer does.
    Keras 3.15 keeps the weights at y in training and evaluation alike (it has no train/eval switch to
    the average x), and so does lamina.
    Difference from Keras on its torch backend: there ``momentum.value`` read before the in-place
    ``assign_sub`` aliases the updated z, so x is computed from z_new; lamina uses the old z, which is
    Defazio et al.'s rule and what Keras computes on its JAX and TensorFlow backends.

    Args: learning_rate=0.0025, beta_1=0.9, beta_2=0.999, epsilon=1e-8, warmup_steps=0, and the base
    arguments.
    """

    _keras_slot_groups = (("momentum", "velocity"),)   # (Optimizer._keras_slot_groups)
    _slot_names = ("momentum", "velocity")

    def __init__(self, learning_rate=0.0025, beta_1=0.9, beta_2=0.999, epsilon=1e-8, warmup_steps=0,
                 weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None, use_ema=False,
                 ema_momentum=0.99, ema_overwrite_frequency=None, loss_scale_factor=None,
                 gradient_accumulation_steps=None, name=None, **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **_base_kwargs(locals()), **kwargs)
        self.beta_1, self.beta_2, self.epsilon, self.warmup_steps = beta_1, beta_2, epsilon, warmup_steps

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        for z, v in zip(self._slots["momentum"], self._trainable_variables):
            z.data[...] = v.data        # z starts at the weights

    def update_step(self, gradient, variable, learning_rate):
        z, vel = self._slot("momentum", variable), self._slot("velocity", variable)
        xp = backend.get_array_module(z)
        t = self.iterations + 1
        b1, b2 = float(self.beta_1), float(self.beta_2)
        lr = learning_rate
        if self.warmup_steps > 0:
            lr = lr * min(t / self.warmup_steps, 1.0)
        z_old = z.copy()
        vel += (gradient * gradient - vel) * (1.0 - b2)
        z -= (lr * gradient) / (xp.sqrt(vel / (1.0 - b2 ** t)) + self.epsilon)
        weight = 1.0 / t
        x_old = (variable.data - (1.0 - b1) * z_old) / b1
        x_new = (1.0 - weight) * x_old + weight * z
        variable.data[...] = (1.0 - b1) * z + b1 * x_new

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                "warmup_steps": self.warmup_steps}
