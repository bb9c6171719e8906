"""Adam, AdamW (Adam with decoupled weight decay), Adamax and Nadam: adaptive moment estimation."""
import math

import numpy as np

from ..backend import get_array_module
from ..ops import cuda_kernels as _cuda_kernels
from ..ops import kernels as _kernels
from .base import Optimizer, fresh, python_numbers

_BASE_DOC = "and the base arguments (weight_decay, clipnorm, clipvalue, global_clipnorm, use_ema, ...)"


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2014), Keras 3 formula.

    With step ``t = iterations + 1``::

        m = m + (g - m) * (1 - beta_1)              # running mean of the gradient
        v = v + (g^2 - v) * (1 - beta_2)            # running mean of its square
        alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)
        w -= alpha * m / (sqrt(v) + epsilon)        # amsgrad: v replaced by max(v_hat, v)

    epsilon is added to ``sqrt(v)`` before bias correction of v (PyTorch adds it after), so the two
    agree when epsilon is small against sqrt(v).

    Args: learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, """ + _BASE_DOC + "."

    _keras_slot_groups = (("momentum", "velocity"), ("velocity_hat",))   # (Optimizer._keras_slot_groups)

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False,
                 weight_decay=None, clipnorm=None, clipvalue=None, global_clipnorm=None, use_ema=False,
                 ema_momentum=0.99, ema_overwrite_frequency=None, loss_scale_factor=None,
                 gradient_accumulation_steps=None, name=None, **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, clipnorm=clipnorm,
                         clipvalue=clipvalue, global_clipnorm=global_clipnorm, use_ema=use_ema,
                         ema_momentum=ema_momentum, ema_overwrite_frequency=ema_overwrite_frequency,
                         loss_scale_factor=loss_scale_factor,
                         gradient_accumulation_steps=gradient_accumulation_steps, name=name, **kwargs)
        self.beta_1, self.beta_2, self.epsilon, self.amsgrad = beta_1, beta_2, epsilon, bool(amsgrad)

    def _active_slots(self):
        return ["momentum", "velocity"] + (["velocity_hat"] if self.amsgrad else [])

    def update_step(self, gradient, variable, learning_rate):
        coefficients, scratch = self._coefficients(learning_rate), None  # one scratch array for all blocks
        for block in self._update_blocks(gradient, variable):
            scratch = _adam_block(block, coefficients, scratch)

    def _coefficients(self, learning_rate):
        b1, b2 = float(self.beta_1), float(self.beta_2)
        t = self.iterations + 1
        return b1, b2, self.epsilon, learning_rate * math.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t)

    def _update_blocks(self, gradient, variable, whole=16):
        arrays = [variable.data, gradient, self._slot("momentum", variable), self._slot("velocity", variable)]
        if self.amsgrad:
            arrays.append(self._slot("velocity_hat", variable))
        return _blocks(arrays, whole=whole)

    def _update_parts(self, gradient, variable, learning_rate):
        """The update as independent parts [(elements, fn), ...], one per block of at most _BLOCK elements,
        for Optimizer.apply to spread over threads (the same arithmetic per element as update_step)."""
        coefficients = self._coefficients(learning_rate)
        return [(block[0].size, lambda block=block: _adam_block(block, coefficients))
                for block in self._update_blocks(gradient, variable, whole=1)]

    _parted_update_step = update_step

    def get_config(self):
        config = super().get_config()
        config.update({"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon,
                       "amsgrad": self.amsgrad})
        return config


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019): before each Adam step,
    ``w -= lr * weight_decay * w``. Same as ``torch.optim.AdamW`` up to where epsilon enters.

    Args: learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False,
    """ + _BASE_DOC + "."

    def __init__(self, learning_rate=0.001, weight_decay=0.004, beta_1=0.9, beta_2=0.999, epsilon=1e-7,
                 amsgrad=False, clipnorm=None, clipvalue=None, global_clipnorm=None, use_ema=False,
                 ema_momentum=0.99, ema_overwrite_frequency=None, loss_scale_factor=None,
                 gradient_accumulation_steps=None, name=None, **kwargs):
        super().__init__(learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon,
                         amsgrad=amsgrad, weight_decay=weight_decay, clipnorm=clipnorm, clipvalue=clipvalue,
                         global_clipnorm=global_clipnorm, use_ema=use_ema, ema_momentum=ema_momentum,
                         ema_overwrite_frequency=ema_overwrite_frequency, loss_scale_factor=loss_scale_factor,
                         gradient_accumulation_steps=gradient_accumulation_steps, name=name, **kwargs)
        if self.weight_decay is None:
            raise ValueError("AdamW: argument `weight_decay` must be a float. Received: weight_decay=None")


class Adamax(Optimizer):
    """Adamax: Adam with the infinity norm in place of the root mean square (Keras 3 formula).

    ``m = m + (g - m) * (1 - beta_1)``, ``u = max(beta_2 * u, |g|)``,
    ``w -= lr * m / ((1 - beta_1^t) * (u + epsilon))`` with ``t = iterations + 1``.
    (PyTorch adds epsilon to |g| inside the max instead.)

    Args: learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, """ + _BASE_DOC + "."

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, use_ema=False, ema_momentum=0.99,
                 ema_overwrite_frequency=None, loss_scale_factor=None, gradient_accumulation_steps=None,
                 name=None, **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, clipnorm=clipnorm,
                         clipvalue=clipvalue, global_clipnorm=global_clipnorm, use_ema=use_ema,
                         ema_momentum=ema_momentum, ema_overwrite_frequency=ema_overwrite_frequency,
                         loss_scale_factor=loss_scale_factor,
                         gradient_accumulation_steps=gradient_accumulation_steps, name=name, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    _slot_names = ("momentum", "norm")
    _keras_slot_groups = (("momentum", "norm"),)

    def update_step(self, gradient, variable, learning_rate):
        b1, b2 = float(self.beta_1), float(self.beta_2)
        t = self.iterations + 1
        m, u = self._slot("momentum", variable), self._slot("norm", variable)
        xp = _xp(m)
        tmp = fresh(xp.subtract(gradient, m))
        tmp *= 1.0 - b1
        m += tmp
        u *= b2
        xp.abs(gradient, out=tmp)
        xp.maximum(u, tmp, out=u)
        xp.add(u, self.epsilon, out=tmp)
        xp.divide(m, tmp, out=tmp)
        tmp *= learning_rate / (1.0 - b1 ** t)
        variable.data -= tmp

    def get_config(self):
        config = super().get_config()
        config.update({"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon})
        return config


class Nadam(Optimizer):
    """Nadam: Adam with Nesterov momentum (Dozat, 2016), Keras 3 formula.

    With ``t = iterations + 1``, ``u_t = beta_1 * (1 - 0.5 * 0.96^t)`` and ``P_t = u_1 * ... * u_t``::

        m = m + (g - m) * (1 - beta_1);  v = v + (g^2 - v) * (1 - beta_2)
        m_hat = u_{t+1} * m / (1 - P_t * u_{t+1}) + (1 - u_t) * g / (1 - P_t)
        v_hat = v / (1 - beta_2^t)
        w -= lr * m_hat / (sqrt(v_hat) + epsilon)

    (Keras 3 decays ``0.96^t``; PyTorch's NAdam uses ``0.96^(0.004 t)``, so they differ.)

    Args: learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, """ + _BASE_DOC + "."

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, weight_decay=None,
                 clipnorm=None, clipvalue=None, global_clipnorm=None, use_ema=False, ema_momentum=0.99,
                 ema_overwrite_frequency=None, loss_scale_factor=None, gradient_accumulation_steps=None,
                 name=None, **kwargs):
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, clipnorm=clipnorm,
                         clipvalue=clipvalue, global_clipnorm=global_clipnorm, use_ema=use_ema,
                         ema_momentum=ema_momentum, ema_overwrite_frequency=ema_overwrite_frequency,
                         loss_scale_factor=loss_scale_factor,
                         gradient_accumulation_steps=gradient_accumulation_steps, name=name, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self._u_product = 1.0

    _slot_names = ("momentum", "velocity")
    _keras_slot_groups = (("momentum", "velocity"),)

    def _u(self, t):
        return float(self.beta_1) * (1.0 - 0.5 * 0.96 ** t)

    def _before_update(self):
        self._u_product *= self._u(self.iterations + 1)

    def _restore_extra(self):
        # the momentum product is a function of the step counter: recompute it
        p = 1.0
        for t in range(1, self.iterations + 1):
            p *= self._u(t)
        self._u_product = p

    def update_step(self, gradient, variable, learning_rate):
        b2 = float(self.beta_2)
        t = self.iterations + 1
        u_t, u_t1 = self._u(t), self._u(t + 1)
        p_t = self._u_product
        p_t1 = p_t * u_t1
        m, v = self._slot("momentum", variable), self._slot("velocity", variable)
        a, b = u_t1 / (1.0 - p_t1), (1.0 - u_t) / (1.0 - p_t)
        if python_numbers(learning_rate, self.epsilon) and _kernels.nadam_update(
                variable.data, gradient, m, v, float(self.beta_1), b2, 1.0 / (1.0 - b2 ** t), self.epsilon, a, b,
                learning_rate):
            return   # one compiled pass, the same float operations (python_numbers)
        _moments(m, v, gradient, float(self.beta_1), b2)
        xp = _xp(m)
        denom = fresh(xp.multiply(v, 1.0 / (1.0 - b2 ** t)))
        xp.sqrt(denom, out=denom)
        denom += self.epsilon
        num = xp.multiply(m, a)
        num += b * gradient
        num /= denom
        num *= learning_rate
        variable.data -= num

    def get_config(self):
        config = super().get_config()
        config.update({"beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon})
        return config


def _xp(a):
    return get_array_module(a)


# Adam's twelve element-wise passes run over blocks of this many elements (256 KB of float32 per array,
# the five arrays of a block stay in L2): over the 2.56 M-weight embedding table of the bench lstm, 3.55 ->
# 3.16 ms an update, the arrays being read from memory once instead of twelve times. Only variables of more
# than 16 blocks (~1 M weights) are split: below that the arrays mostly sit in cache anyway and the extra
# calls cost more than they save (a 200 K-weight kernel: 4 blocks, ~36 us more a step).
_BLOCK = 2 ** 16


def _blocks(arrays, size=_BLOCK, whole=16):
    """Equal flat slices of equally shaped arrays, ``size`` elements each; the arrays whole when they are
    at most ``whole`` blocks, not all C-contiguous with one shape and dtype, or on a device (one kernel per
    pass is better there)."""
    first = arrays[0]
    if (_xp(first) is not np or first.size <= whole * size
            or not all(a.shape == first.shape and a.dtype == first.dtype and a.flags.c_contiguous for a in arrays)):
        yield arrays
        return
    flat = [a.reshape(-1) for a in arrays]
    for s in range(0, first.size, size):
        yield [f[s:s + size] for f in flat]


def _moments(m, v, g, b1, b2, scratch=None):
    """In place: m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2), with one temporary (returned, for reuse;
    ``scratch``, at least m's size, is reused instead of allocating one)."""
    xp = _xp(m)
    tmp = fresh(xp.subtract(g, m)) if scratch is None else xp.subtract(g, m, out=scratch[:m.size].reshape(m.shape))
    tmp *= 1.0 - b1
    m += tmp
    xp.multiply(g, g, out=tmp)
    tmp -= v
    tmp *= 1.0 - b2
    v += tmp
    return tmp


def _adam_block(block, coefficients, scratch=None):
    """Adam's update of one block (w, g, m, v[, v_hat]) in place; returns its scratch array for reuse."""
    w, g, m, v, *v_hat = block
    b1, b2, eps, alpha = coefficients
    xp = _xp(w)
    if not v_hat and all(type(c) is float for c in coefficients) and _cuda_kernels.kernels_for(xp).adam_update(
            w, g, m, v, *coefficients):
        return scratch   # one compiled pass (a launch on a GPU), the same float operations (Python floats here)
    tmp = _moments(m, v, g, b1, b2, scratch)
    if v_hat:
        xp.maximum(v_hat[0], v, out=v_hat[0])
        v = v_hat[0]
    # the moments' scratch array again: no second weight-sized allocation (and its page faults)
    xp.sqrt(v, out=tmp)
    tmp += eps
    xp.divide(m, tmp, out=tmp)
    tmp *= alpha
    w -= tmp
    return tmp
