"""GradientTape: TensorFlow's way of asking for gradients, on lamina's reverse-mode engine.

lamina records a graph for every op whose inputs want a gradient (weights do; see tensor.py), so the
tape has little to record itself: inside ``with GradientTape() as tape:`` recording is on (even under
``no_grad``), ``tape.watch(t)`` makes a constant tensor want a gradient until the block ends, and
``tape.gradient(target, sources)`` runs ``lamina.grad`` from the target back to the sources. A
TensorFlow-style custom loop ports by changing the import::

    with lamina.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, model.trainable_weights)
    optimizer.apply_gradients(zip(grads, model.trainable_weights))

Differences from TensorFlow: gradients are first order. A tape inside a tape does not give second
derivatives: the inner tape's gradients are values, and an outer tape asked to differentiate through one
(a WGAN-GP gradient penalty, a Hessian-vector product) raises a RuntimeError instead of leaving that term
out without a word (``ops.stop_gradient`` on the inner gradient says "treat it as a constant"). A weight of a
frozen layer gets None (TensorFlow does not watch it either); there is no ``jacobian``.
"""
import contextlib

import numpy as np

from . import backend
from .tensor import Op, Tensor, _toposort, enable_grad, grad, is_grad_enabled, no_grad

__all__ = ["GradientTape"]

_RECORDING = []   # the tapes inside their `with` block, outermost first


def _flatten(x):
    if isinstance(x, (list, tuple)):
        return [v for item in x for v in _flatten(item)]
    if isinstance(x, dict):
        return [v for k in sorted(x) for v in _flatten(x[k])]
    return [x]


def _pack_like(structure, flat):
    """flat (in _flatten's order) arranged as structure."""
    it = iter(flat)

    def build(x):
        if isinstance(x, (list, tuple)):
            return type(x)(build(v) for v in x)
        if isinstance(x, dict):
            values = {k: build(x[k]) for k in sorted(x)}
            return {k: values[k] for k in x}
        return next(it)
    return build(structure)


class _InnerGradient(Op):
    """An inner tape's gradient as seen by an outer tape: the value (param ``value``) with edges to the
    weights and watched tensors it was computed from, so that differentiating through it fails loudly
    (lamina has no second derivatives) instead of treating it as a constant without a word."""

    def forward(self, *leaves):
        return self.value

    def backward(self, gy):
        raise RuntimeError(
            "GradientTape: the target depends on a gradient computed by another GradientTape inside this one "
            "(a gradient penalty, a Hessian-vector product). lamina computes first-order gradients only and "
            "cannot differentiate a gradient. To use the inner gradient as a constant, wrap it in "
            "ops.stop_gradient(...).")


def _leaves(targets):
    """The tensors that want a gradient (weights, watched inputs) the targets' graphs start from."""
    seen, out = set(), []
    for t in targets:
        if isinstance(t, Tensor) and t._op is not None and not t._op._freed:
            for op in _toposort(t._op):
                for e in op._edges:
                    if e is not None and e[2] is not None and id(e[2]) not in seen:
                        seen.add(id(e[2]))
                        out.append(e[2])
    return out


class GradientTape:
    """Record operations for automatic differentiation (``tf.GradientTape``).

    Args:
        persistent: allow several ``gradient()`` calls (the graph is kept until the tape and the tensors
            are dropped); otherwise the first call frees the graph and a second one raises RuntimeError.
        watch_accessed_variables: when True (the default) every trainable weight used inside the block
            can be a source; when False only what ``watch()`` was given gets a gradient (others get None).
    """

    def __init__(self, persistent=False, watch_accessed_variables=True):
        self.persistent = bool(persistent)
        self.watch_accessed_variables = bool(watch_accessed_variables)
        self._watched = []        # tensors given to watch(), in order
        self._restore = []        # tensors whose requires_grad watch() switched on, reset on exit
        self._grad_ctx = None
        self._used = False

    def __enter__(self):
        if self._grad_ctx is not None:
            raise RuntimeError("GradientTape: this tape is already recording (nested `with` of the same tape).")
        self._grad_ctx = enable_grad()
        self._grad_ctx.__enter__()
        _RECORDING.append(self)
        return self

    def __exit__(self, *exc):
        if any(t is self for t in _RECORDING):
            del _RECORDING[next(i for i, t in enumerate(_RECORDING) if t is self)]
        try:
            for t in self._restore:
                t.requires_grad = False
            self._restore = []
        finally:
            ctx, self._grad_ctx = self._grad_ctx, None
            ctx.__exit__(*exc)
        return False

    def watch(self, tensor):
        """Differentiate with respect to these tensors (a tensor or a nest of them) too: constants are
        made to want a gradient until the block ends."""
        for t in _flatten(tensor):
            if not isinstance(t, Tensor):
                raise ValueError(f"GradientTape.watch: expected lamina Tensors (or Variables), received "
                                 f"{type(t).__name__}. Wrap arrays first: t = lamina.Tensor(array).")
            if not np.issubdtype(t.dtype, np.floating):
                continue  # as TensorFlow: integer tensors have no gradient (gradient() gives None)
            if not t.requires_grad:
                if self._grad_ctx is None:
                    raise RuntimeError("GradientTape.watch must be called inside the tape's `with` block.")
                t.requires_grad = True
                self._restore.append(t)
            if not any(t is w for w in self._watched):
                self._watched.append(t)

    def watched_variables(self):
        """The tensors given to ``watch()`` (lamina watches every trainable weight without listing them)."""
        return list(self._watched)

    @contextlib.contextmanager
    def stop_recording(self):
        """Inside, ops record nothing (their results are constants for this tape)."""
        with no_grad():
            yield

    def reset(self):
        """Forget what was watched (and allow gradient() again)."""
        for t in self._restore:
            t.requires_grad = False
        self._restore, self._watched, self._used = [], [], False

    def gradient(self, target, sources, output_gradients=None, unconnected_gradients="none"):
        """Gradients of target (a tensor or a nest of tensors, whose gradients add up) with respect to
        sources (a tensor or a nest), in the structure of sources: a Tensor per source, None where the
        target does not depend on it (zeros with ``unconnected_gradients="zero"``)."""
        if self._used and not self.persistent:
            raise RuntimeError("A non-persistent GradientTape can only be used to compute one set of gradients "
                               "(or jacobians). Use GradientTape(persistent=True) for several.")
        if unconnected_gradients not in ("none", "zero"):
            raise ValueError(f"unconnected_gradients must be 'none' or 'zero'; received {unconnected_gradients!r}")
        self._used = True
        targets = [t for t in _flatten(target) if t is not None]
        flat_sources = _flatten(sources)
        for s in flat_sources:
            if not isinstance(s, Tensor):
                raise ValueError(f"GradientTape.gradient: sources must be Tensors or Variables, received "
                                 f"{type(s).__name__}.")
        outs = [None] * len(targets) if output_gradients is None else _flatten(output_gradients)
        if len(outs) != len(targets):
            raise ValueError(f"GradientTape.gradient: {len(outs)} output_gradients for {len(targets)} targets.")
        # inside another recording tape, the gradients keep edges to what they were computed from (see
        # _InnerGradient): an outer tape that differentiates through them raises instead of dropping the term
        outer = is_grad_enabled() and any(tape is not self for tape in _RECORDING)
        leaves = _leaves(targets) if outer else ()
        total = [None] * len(flat_sources)
        for i, (t, og) in enumerate(zip(targets, outs)):
            if not isinstance(t, Tensor):
                raise ValueError(f"GradientTape.gradient: the target must be a Tensor, received {type(t).__name__}.")
            retain = self.persistent or i < len(targets) - 1
            grads = grad(t, flat_sources, grad_output=None if og is None else
                         (og.data if isinstance(og, Tensor) else og), retain_graph=retain)
            total = [g if acc is None else acc if g is None else acc + g for acc, g in zip(total, grads)]
        if not self.watch_accessed_variables:
            total = [g if any(s is w for w in self._watched) else None for g, s in zip(total, flat_sources)]
        result = []
        for g, s in zip(total, flat_sources):
            if g is None and unconnected_gradients == "zero":
                g = backend.get_array_module(s.data).zeros_like(s.data)
            result.append(None if g is None else _InnerGradient.apply(*leaves, value=g) if leaves else Tensor(g))
        return _pack_like(sources, result) if isinstance(sources, (list, tuple, dict)) else result[0]
