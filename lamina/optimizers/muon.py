"""Muon (Jordan et al., 2024; Liu et al., 2025) with Keras 3.15's arguments and update rules."""
import math
import re

from .. import backend
from .base import Optimizer
from .extra import _base_kwargs

__all__ = ["Muon"]


class Muon(Optimizer):
    """Muon: momentum SGD whose step for a weight matrix is orthogonalised by a Newton-Schulz iteration;
    every other weight takes an AdamW step, as in Keras 3.15.

    A weight takes the AdamW step when it is not 2-D, when ``exclude_embeddings`` and its path contains
    'embedding', or when a pattern of ``exclude_layers`` matches its path (``re.search``); the others the
    Muon step::

        Muon:  m = momentum m + g;  d = g + momentum m (nesterov) or m
               O = NS5(d)   (Newton-Schulz: X = d / (||d||_F + 1e-7), on the wide orientation, then
                             ns_steps times A = X X^T, X = a X + (b A + c A A) X with a, b, c = muon_a, _b, _c)
               w -= lr O sqrt(max(rows, cols)) rms_rate          (without the factor when rms_rate is None)
        AdamW: m += (g - m)(1 - adam_beta_1);  v += (g^2 - v)(1 - adam_beta_2)
               w -= lr adam_lr_ratio sqrt(1 - beta_2^t) / (1 - beta_1^t) m / (sqrt(v) + epsilon)

    Weight decay before the step: ``w -= lr wd w`` with wd = adam_weight_decay for AdamW weights and
    weight_decay for Muon weights (skipped when None or excluded by ``exclude_from_weight_decay``).

    Args: learning_rate=0.001, adam_beta_1=0.9, adam_beta_2=0.999, adam_weight_decay=0.004, epsilon=1e-7,
    weight_decay=0.004, exclude_layers=None, exclude_embeddings=True, muon_a=3.4445, muon_b=-4.7750,
    muon_c=2.0315, adam_lr_ratio=1, momentum=0.95, ns_steps=5, nesterov=True, rms_rate=0.2, and the base
    arguments. State: momentum for every weight, velocity (used by the AdamW weights only).
    """
    _slot_names = ("momentum", "velocity")

    def __init__(self, learning_rate=0.001, adam_beta_1=0.9, adam_beta_2=0.999, adam_weight_decay=0.004,
                 epsilon=1e-7, weight_decay=0.004, clipnorm=None, clipvalue=None, global_clipnorm=None,
                 use_ema=False, ema_momentum=0.99, ema_overwrite_frequency=None, loss_scale_factor=None,
                 gradient_accumulation_steps=None, name=None, exclude_layers=None, exclude_embeddings=True,
                 muon_a=3.4445, muon_b=-4.7750, muon_c=2.0315, adam_lr_ratio=1, momentum=0.95, ns_steps=5,
                 nesterov=True, rms_rate=0.2, **kwargs):
        super().__init__(learning_rate=learning_rate, name=name, **_base_kwargs(locals()), **kwargs)
        if isinstance(ns_steps, bool) or not isinstance(ns_steps, int) or ns_steps < 0:
            raise ValueError(f"Muon: ns_steps must be a non-negative int. Received: ns_steps={ns_steps!r}")
        self.adam_beta_1, self.adam_beta_2, self.epsilon = adam_beta_1, adam_beta_2, epsilon
        self.muon_a, self.muon_b, self.muon_c = muon_a, muon_b, muon_c
        self.adam_lr_ratio, self.momentum, self.ns_steps = adam_lr_ratio, momentum, ns_steps
        self.nesterov, self.exclude_embeddings = nesterov, exclude_embeddings
        self.exclude_layers = list(exclude_layers or [])
        self.adam_weight_decay, self.rms_rate = adam_weight_decay, rms_rate

    def _should_use_adamw(self, variable):
        if len(variable.shape) != 2:
            return True
        path = getattr(variable, "path", None) or variable.name or ""
        if self.exclude_embeddings and "embedding" in path.lower():
            return True
        return any(re.search(k, path) for k in self.exclude_layers)

    def _keras_slot_order(self):
        """Keras's order of the state in its files: each weight's momentum, then its velocity when it
        takes the AdamW step (Keras creates no velocity for the others)."""
        order = []
        for i, v in enumerate(self._trainable_variables):
            order.append(("momentum", i))
            if self._should_use_adamw(v):
                order.append(("velocity", i))
        return order

    def _apply_weight_decay(self, variables, lr):
        for v in variables:
            if not self._use_weight_decay(v):
                continue
            wd = self.adam_weight_decay if self._should_use_adamw(v) else self.weight_decay
            if wd is None:
                continue
            v.data -= v.data * float(wd) * lr

    def update_step(self, gradient, variable, learning_rate):
        m = self._slot("momentum", variable)
        if self._should_use_adamw(variable):
            self._adamw_step(gradient, variable, learning_rate * self.adam_lr_ratio, m,
                             self._slot("velocity", variable))
            return
        mu = float(self.momentum)
        m += gradient + m * (mu - 1.0)
        d = gradient + mu * m if self.nesterov else m
        update = learning_rate * self.zeropower_via_newtonschulz5(d, self.ns_steps)
        if self.rms_rate is not None:
            update = update * math.sqrt(max(update.shape[0], update.shape[1])) * self.rms_rate
        variable.data -= update.astype(variable.data.dtype, copy=False)

    def _adamw_step(self, g, variable, lr, m, v):
        xp = backend.get_array_module(m)
        t = self.iterations + 1
        b1, b2 = float(self.adam_beta_1), float(self.adam_beta_2)
        alpha = lr * math.sqrt(1.0 - b2 ** t) / (1.0 - b1 ** t)
        m += (g - m) * (1.0 - b1)
        v += (g * g - v) * (1.0 - b2)
        variable.data -= (m * alpha) / (xp.sqrt(v) + self.epsilon)

    def zeropower_via_newtonschulz5(self, x, steps):
        """An approximate orthogonalisation U S' V^T of x = U S V^T (S' near 1) by ``steps`` quintic
        Newton-Schulz iterations, on the last two axes (Keras's zeropower_via_newtonschulz5)."""
        xp = backend.get_array_module(x)
        if x.ndim < 2:
            raise ValueError(f"Muon: expected gradient or momentum to have at least 2 dimensions. "
                             f"Received: shape={tuple(x.shape)}")
        a, b, c = self.muon_a, self.muon_b, self.muon_c
        tall = x.shape[-2] > x.shape[-1]
        if tall:
            x = xp.swapaxes(x, -1, -2)
        x = x / (xp.sqrt((x * x).sum(axis=(-2, -1), keepdims=True)) + x.dtype.type(1e-7))
        for _ in range(int(steps)):
            gram = x @ xp.swapaxes(x, -1, -2)
            x = a * x + (b * gram + (c * gram) @ gram) @ x
        return xp.swapaxes(x, -1, -2) if tall else x

    def get_config(self):
        return {**super().get_config(), "adam_beta_1": self.adam_beta_1, "adam_beta_2": self.adam_beta_2,
                "epsilon": self.epsilon, "exclude_layers": self.exclude_layers, "muon_a": self.muon_a,
                "muon_b": self.muon_b, "muon_c": self.muon_c, "adam_lr_ratio": self.adam_lr_ratio,
                "momentum": self.momentum, "ns_steps": self.ns_steps, "nesterov": self.nesterov,
                "exclude_embeddings": self.exclude_embeddings, "adam_weight_decay": self.adam_weight_decay,
                "rms_rate": self.rms_rate}


