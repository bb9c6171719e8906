"""RMSprop, Adagrad and Adadelta: per-weight step sizes from running squares of the gradient."""
from ..backend import get_array_module
from ..ops import kernels as _kernels
from .base import Optimizer, fresh, python_numbers


class RMSprop(Optimizer):
    """RMSprop (Hinton, 2012), Keras 3 formula.

    ``v = rho * v + (1 - rho) * g^2``; centered: ``a = rho * a + (1 - rho) * g`` and
    ``denom = v - a^2 + epsilon``, else ``denom = v + epsilon``; ``step = lr * g / sqrt(denom)``; with
    momentum ``mom = momentum * mom + step`` and ``w -= mom``, else ``w -= step``.
    epsilon sits inside the square root (PyTorch adds it outside).

    Args: learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, and the base arguments.
    """

    _keras_slot_groups = (("velocity",), ("momentum",), ("average_gradient",))   # (Optimizer._keras_slot_groups)

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False,
                 weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None, use_ema=False,
                 ema_momentum=0.99, ema_overwrite_frequency=None, loss_scale_factor=None,
                 gradient_accumulation_steps=None, name=None, **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, clipnorm=clipnorm,
                         clipvalue=clipvalue, global_clipnorm=global_clipnorm, use_ema=use_ema,
                         ema_momentum=ema_momentum, ema_overwrite_frequency=ema_overwrite_frequency,
                         loss_scale_factor=loss_scale_factor,
                         gradient_accumulation_steps=gradient_accumulation_steps, name=name, **kwargs)
        self.rho, self.momentum, self.epsilon, self.centered = rho, momentum, epsilon, bool(centered)

    def _active_slots(self):
        return (["velocity"] + (["momentum"] if self.momentum > 0 else [])
                + (["average_gradient"] if self.centered else []))

    def update_step(self, gradient, variable, learning_rate):
        rho = float(self.rho)
        v = self._slot("velocity", variable)
        xp = get_array_module(v)
        mom = self._slot("momentum", variable) if self.momentum > 0 else None
        if (not self.centered and python_numbers(learning_rate, self.epsilon, self.momentum)
                and _kernels.rmsprop_update(variable.data, gradient, v, mom, rho, self.epsilon, learning_rate,
                                            self.momentum)):
            return   # one compiled pass, the same float operations (python_numbers)
        tmp = fresh(xp.multiply(gradient, gradient))
        tmp *= 1.0 - rho
        v *= rho
        v += tmp
        if self.centered:
            a = self._slot("average_gradient", variable)
            a *= rho
            xp.multiply(gradient, 1.0 - rho, out=tmp)
            a += tmp
            xp.multiply(a, a, out=tmp)
            xp.subtract(v, tmp, out=tmp)
            tmp += self.epsilon
        else:
            xp.add(v, self.epsilon, out=tmp)
        xp.sqrt(tmp, out=tmp)
        xp.divide(gradient, tmp, out=tmp)
        tmp *= learning_rate
        if self.momentum > 0:
            mom = self._slot("momentum", variable)
            mom *= self.momentum
            mom += tmp
            variable.data -= mom
        else:
            variable.data -= tmp

    def get_config(self):
        config = super().get_config()
        config.update({"rho": self.rho, "momentum": self.momentum, "epsilon": self.epsilon,
                       "centered": self.centered})
        return config


class Adagrad(Optimizer):
    """Adagrad (Duchi et al., 2011), Keras 3 formula: the step shrinks with the sum of all squared
    gradients seen. ``acc += g^2`` (acc starts at initial_accumulator_value),
    ``w -= lr * g / sqrt(acc + epsilon)`` (PyTorch: ``/ (sqrt(acc) + eps)``).

    Args: learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, and the base arguments.
    """

    _keras_slot_groups = (("accumulator",),)   # (Optimizer._keras_slot_groups)

    def __init__(self, learning_rate=0.001, initial_accumulator_value=0.1, epsilon=1e-7, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, use_ema=False, ema_momentum=0.99,
                 ema_overwrite_frequency=None, loss_scale_factor=None, gradient_accumulation_steps=None,
                 name=None, **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, clipnorm=clipnorm,
                         clipvalue=clipvalue, global_clipnorm=global_clipnorm, use_ema=use_ema,
                         ema_momentum=ema_momentum, ema_overwrite_frequency=ema_overwrite_frequency,
                         loss_scale_factor=loss_scale_factor,
                         gradient_accumulation_steps=gradient_accumulation_steps, name=name, **kwargs)
        self.initial_accumulator_value, self.epsilon = initial_accumulator_value, epsilon
        self._slot_initial = {"accumulator": float(initial_accumulator_value)}

    _slot_names = ("accumulator",)

    def update_step(self, gradient, variable, learning_rate):
        acc = self._slot("accumulator", variable)
        xp = get_array_module(acc)
        if python_numbers(learning_rate, self.epsilon) and _kernels.adagrad_update(variable.data, gradient, acc,
                                                                                   self.epsilon, learning_rate):
            return   # one compiled pass, the same float operations
        tmp = fresh(xp.multiply(gradient, gradient))
        acc += tmp
        xp.add(acc, self.epsilon, out=tmp)
        xp.sqrt(tmp, out=tmp)
        xp.divide(gradient, tmp, out=tmp)
        tmp *= learning_rate
        variable.data -= tmp

    def get_config(self):
        config = super().get_config()
        config.update({"initial_accumulator_value": self.initial_accumulator_value, "epsilon": self.epsilon})
        return config


class Adadelta(Optimizer):
    """Adadelta (Zeiler, 2012), Keras 3 formula (the same as PyTorch's)::

        acc_g = rho * acc_g + (1 - rho) * g^2
        delta = -sqrt(acc_d + epsilon) / sqrt(acc_g + epsilon) * g
        acc_d = rho * acc_d + (1 - rho) * delta^2
        w += lr * delta

    Args: learning_rate=0.001, rho=0.95, epsilon=1e-7, and the base arguments.
    """

    _keras_slot_groups = (("accumulated_grad", "accumulated_delta_var"),)   # (Optimizer._keras_slot_groups)

    def __init__(self, learning_rate=0.001, rho=0.95, epsilon=1e-7, weight_decay=None, clipnorm=None,
                 clipvalue=None, global_clipnorm=None, use_ema=False, ema_momentum=0.99,
                 ema_overwrite_frequency=None, loss_scale_factor=None, gradient_accumulation_steps=None,
                 name=None, **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, clipnorm=clipnorm,
                         clipvalue=clipvalue, global_clipnorm=global_clipnorm, use_ema=use_ema,
                         ema_momentum=ema_momentum, ema_overwrite_frequency=ema_overwrite_frequency,
                         loss_scale_factor=loss_scale_factor,
                         gradient_accumulation_steps=gradient_accumulation_steps, name=name, **kwargs)
        self.rho, self.epsilon = rho, epsilon

    _slot_names = ("accumulated_grad", "accumulated_delta_var")

    def update_step(self, gradient, variable, learning_rate):
        rho = float(self.rho)
        acc_g = self._slot("accumulated_grad", variable)
        acc_d = self._slot("accumulated_delta_var", variable)
        xp = get_array_module(acc_g)
        tmp = fresh(xp.multiply(gradient, gradient))
        tmp *= 1.0 - rho
        acc_g *= rho
        acc_g += tmp
        delta = fresh(xp.add(acc_d, self.epsilon))
        xp.sqrt(delta, out=delta)
        xp.add(acc_g, self.epsilon, out=tmp)
        xp.sqrt(tmp, out=tmp)
        delta /= tmp
        delta *= gradient                     # delta holds -delta_var (the step before the sign)
        xp.multiply(delta, delta, out=tmp)
        tmp *= 1.0 - rho
        acc_d *= rho
        acc_d += tmp
        delta *= learning_rate
        variable.data -= delta

    def get_config(self):
        config = super().get_config()
        config.update({"rho": self.rho, "epsilon": self.epsilon})
        return config
