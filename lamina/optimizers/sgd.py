"""Stochastic gradient descent, with optional (Nesterov) momentum."""
from ..ops import kernels as _kernels
from .base import Optimizer, python_numbers


class SGD(Optimizer):
    """Gradient descent with momentum (Keras 3 formula).

    Without momentum: ``w -= lr * g``. With momentum ``mu`` the velocity ``m`` (zeros at first) follows
    ``m = mu * m - lr * g`` and ``w += m``; with ``nesterov=True``, ``w += mu * m - lr * g`` (the step
    looks ahead along the updated velocity). Equal to ``torch.optim.SGD`` with the same lr and momentum.

    Args: learning_rate=0.01, momentum=0.0 (in [0, 1]), nesterov=False, and the base arguments.
    """

    _keras_slot_groups = (("momentum",),)   # (Optimizer._keras_slot_groups)

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, use_ema=False, ema_momentum=0.99,
                 ema_overwrite_frequency=None, loss_scale_factor=None, gradient_accumulation_steps=None,
                 name=None, **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, clipnorm=clipnorm,
                         clipvalue=clipvalue, global_clipnorm=global_clipnorm, use_ema=use_ema,
                         ema_momentum=ema_momentum, ema_overwrite_frequency=ema_overwrite_frequency,
                         loss_scale_factor=loss_scale_factor,
                         gradient_accumulation_steps=gradient_accumulation_steps, name=name, **kwargs)
        if not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0:
            raise ValueError(f"SGD: `momentum` must be a float between [0, 1]. Received: momentum={momentum!r}")
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def _active_slots(self):
        return ["momentum"] if self.momentum != 0 else []

    def update_step(self, gradient, variable, learning_rate):
        w = variable.data
        if self.momentum == 0:
            w -= learning_rate * gradient
            return
        m = self._slot("momentum", variable)
        if python_numbers(learning_rate) and _kernels.sgd_momentum_update(w, gradient, m, learning_rate, self.momentum,
                                                                           self.nesterov):
            return   # one compiled pass, the same float operations (python_numbers)
        step = learning_rate * gradient            # the one temporary
        m *= self.momentum
        m -= step
        if self.nesterov:
            w -= step
            step = self.momentum * m
            w += step
        else:
            w += m

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "nesterov": self.nesterov})
        return config
