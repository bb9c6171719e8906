"""Rematerialisation (gradient checkpointing): ``keras.remat`` and ``keras.RematScope``.

A training step keeps every op's saved arrays (a layer's inputs, masks, normalised values...) from the
forward pass until backward uses them. ``remat(f)`` trades that memory for time: ``f`` runs as usual, but the
graph it recorded is dropped at once, and one node stands in for it, holding only f's inputs and outputs.
When backward reaches that node it runs ``f`` again (with the same random draws), back-propagates through
the fresh graph to f's inputs and the weights it used, and frees it. Values and gradients are those of ``f``
without remat; the peak memory of a deep stack falls to about one block's activations plus the blocks'
inputs.

What a rerun repeats exactly: the arguments (the same arrays), the weights, and the random draws of
lamina's global streams and of the random generators the layers called inside ``f`` own (dropout masks,
noise). What it does not repeat: a layer's ``add_loss`` (not added a second time) and variable updates
(a BatchNormalization's moving statistics are updated once, by the first run). A random generator held
elsewhere (a closure's own ``np.random.Generator``) is not replayed; neither is a tensor that ``f`` reads
from an enclosing graph without taking it as an argument: then ``f``'s graph is kept as it is (no remat).

``RematScope(mode=...)``, as Keras: layers created inside it rematerialise their calls: ``"full"`` every
layer, ``"larger_than"`` those whose output has more than ``output_size_threshold`` values,
``"activations"`` only the activation of layers that have one, ``"list_of_layers"`` the layers named in
``layer_names``, ``None`` none.
"""
import threading
from collections import namedtuple

import numpy as np

from . import backend
from . import tensor as _tensor
from . import tree as _tree
from .tensor import Op, Tensor, Variable, enable_grad, is_grad_enabled

__all__ = ["RematScope", "RematMode", "get_current_remat_mode", "remat", "rematerialized", "is_recomputing"]

RematMode = namedtuple("RematMode", ["mode", "output_size_threshold", "layer_names"])
_MODES = ("full", "activations", "larger_than", "list_of_layers", None)
_local = threading.local()


class RematScope:
    """Layers created inside this context rematerialise their calls (see the module docstring)."""

    def __init__(self, mode="full", output_size_threshold=1024, layer_names=None):
        if mode not in _MODES:
            raise ValueError(f"Invalid mode '{mode}'. Supported modes are: 'full', 'activations', 'larger_than', "
                             "'list_of_layers', or  None.")
        self.mode = mode
        self.output_size_threshold = output_size_threshold
        self.layer_names = list(layer_names or [])
        self._pop_on_exit = False

    def __enter__(self):
        _scopes().append(self)
        self._pop_on_exit = True
        return self

    def __exit__(self, *exc):
        if self._pop_on_exit:
            _scopes().pop()
            self._pop_on_exit = False


def _scopes():
    if not hasattr(_local, "scopes"):
        _local.scopes = []
    return _local.scopes


def get_current_remat_mode():
    """The innermost RematScope's settings as a RematMode, or None outside any scope."""
    stack = _scopes()
    if not stack:
        return None
    s = stack[-1]
    return RematMode(s.mode, s.output_size_threshold, s.layer_names)


def is_recomputing():
    """True while backward reruns a rematerialised function (layers then add no losses and their variable
    updates are undone)."""
    return getattr(_local, "recomputing", False)


# ----------------------------------------------------------------------------- recording
class _Record:
    """What one run of f touched: the ops it recorded, the variables it assigned (their values before),
    and the random generators it could draw from (their states before)."""

    def __init__(self):
        self.ops = []
        self.assigned = {}     # id -> (variable, its array before the first assignment)
        self.generators = {}   # id -> (generator, its state before f)
        for stream in backend.STREAMS:
            self.note_generator(backend.rng(stream))

    def note_generator(self, gen):
        if id(gen) not in self.generators:
            self.generators[id(gen)] = (gen, gen.bit_generator.state)

    def note_layer(self, layer):
        """Generators a layer owns (its seed's np.random.Generator, a SeedGenerator's), before it draws."""
        for value in vars(layer).values():
            if isinstance(value, np.random.Generator):
                self.note_generator(value)
            else:
                gen = getattr(value, "_rng", None)
                if isinstance(gen, np.random.Generator) and type(value).__name__ == "SeedGenerator":
                    self.note_generator(gen)


def note_layer_call(layer):
    """Layer.__call__ reports each call here (a no-op unless a remat'd function is running)."""
    rec = _tensor._recorder()
    if rec is not None:
        rec.note_layer(layer)


class _Recording:
    """Within: Op.apply adds each recorded op to rec.ops, Variable.assign* note the value before (tensor.py)."""

    def __init__(self, rec):
        self.rec = rec

    def __enter__(self):
        self.prev = _tensor._recorder()
        _tensor._set_recorder(self.rec)
        return self.rec

    def __exit__(self, *exc):
        _tensor._set_recorder(self.prev)
        if self.prev is not None:   # a remat inside a remat: the outer rerun must restore these as well
            for k, v in self.rec.assigned.items():
                self.prev.assigned.setdefault(k, v)
            for k, v in self.rec.generators.items():
                self.prev.generators.setdefault(k, v)


# ----------------------------------------------------------------------------- the stand-in node
class _Seed(Op):
    """A scalar root joining several outputs, whose backward hands each its given gradient."""

    def forward(self, *xs):
        return self.xp.zeros((), dtype=np.float32)

    def backward(self, gy):
        return tuple(self.gys)


class Remat(Op):
    """f's outputs, from f's inputs (arguments and weights): backward reruns f and back-propagates."""

    none_grads = False

    def backward(self, *gys):
        f, args, kwargs, arg_leaves, rec = self.saved
        # the arguments as fresh leaves (the rerun's graph ends there, not in the enclosing graph)
        fresh = {}

        def leaf(t):
            if isinstance(t, Tensor) and not isinstance(t, Variable) and id(t) in arg_leaves:
                if id(t) not in fresh:
                    fresh[id(t)] = Tensor(t.data, requires_grad=t.requires_grad)
                    if getattr(t, "_keras_mask", None) is not None:
                        fresh[id(t)]._keras_mask = t._keras_mask
                return fresh[id(t)]
            return t
        args2, kwargs2 = _tree.map_structure(leaf, (args, kwargs))
        now = [(v, v.data.copy()) for v, _ in rec.assigned.values()]
        states = [(g, g.bit_generator.state) for g, _ in rec.generators.values()]
        for v, before in rec.assigned.values():
            v.data[...] = before
        for g, before in rec.generators.values():
            g.bit_generator.state = before
        prev = is_recomputing()
        _local.recomputing = True
        try:
            with enable_grad():
                out = f(*args2, **kwargs2)
        finally:
            _local.recomputing = prev
            for v, after in now:
                v.data[...] = after
            for g, after in states:
                g.bit_generator.state = after
        outs = [o for o in _tree.flatten(out) if isinstance(o, Tensor)]
        picked = [outs[i] for i in self.out_positions]
        live = [(o, g) for o, g in zip(picked, gys) if o.requires_grad]
        targets = [fresh.get(id(t), t) for t in self.inputs_order]
        if not live:
            return tuple(None for _ in targets)
        root = _Seed.apply(*[o for o, _ in live], gys=[g.astype(o.dtype, copy=False) for o, g in live])
        grads = _tensor._backprop(root, self.xp.zeros((), dtype=np.float32), accumulate=False, targets=targets)
        return tuple(grads)


def remat(f, when=None):
    """``f`` rematerialised: the same results, its intermediate arrays recomputed in backward instead of
    kept (see the module docstring). ``when(outputs)`` (lamina's, for RematScope's 'larger_than'): keep f's
    graph instead where it answers False."""

    def wrapped(*args, **kwargs):
        if not is_grad_enabled():
            return f(*args, **kwargs)
        rec = _Record()
        with _Recording(rec):
            out = f(*args, **kwargs)
        linked = _stand_in(f, args, kwargs, out, rec) if when is None or when(out) else None
        if linked is None:
            parent = _tensor._recorder()
            if parent is not None:   # f's graph stays: an enclosing remat must see its ops
                parent.ops.extend(rec.ops)
            return out
        return linked

    wrapped.__wrapped__ = f
    wrapped.__name__ = getattr(f, "__name__", "remat")
    return wrapped


def _output_size(out):
    return sum(int(np.prod(t.shape)) for t in _tree.flatten(out) if isinstance(t, Tensor))


def rematerialized(mode, fn):
    """``fn`` as an operation created under RematScope ``mode`` (a RematMode or None) runs it, as Keras's
    Operation: 'full' rematerialised, 'larger_than' rematerialised when its outputs hold more values than the
    threshold, otherwise as it is (Layer adds the modes that look at the layer itself)."""
    if mode is not None and mode.mode == "full":
        return remat(fn)
    if mode is not None and mode.mode == "larger_than":
        return remat(fn, when=lambda out: _output_size(out) > mode.output_size_threshold)
    return fn


def _stand_in(f, args, kwargs, out, rec):
    """f's outputs re-linked to one Remat node, or None when f's graph must stay as it is."""
    made = {id(op) for op in rec.ops}
    if not made:
        return None
    arg_tensors = [t for t in _tree.flatten((args, kwargs)) if isinstance(t, Tensor)]
    arg_keys = {}
    for t in arg_tensors:
        if t.requires_grad:
            arg_keys[id(t) if t._op is None else (id(t._op), t._out_index)] = t
    inputs, seen = [], set()
    for op in rec.ops:
        for e in op._edges:
            if e is None:
                continue
            parent, k, leaf_t = e[0], e[1], e[2]
            if leaf_t is not None:
                key = id(leaf_t)
                t = arg_keys.get(key, leaf_t)
            elif id(parent) in made:
                continue
            else:
                key = (id(parent), k)
                t = arg_keys.get(key)
                if t is None:   # a tensor of an enclosing graph read without being an argument: keep the graph
                    return None
            if key not in seen:
                seen.add(key)
                inputs.append(t)
    tensors = [x for x in _tree.flatten(out) if isinstance(x, Tensor)]
    positions = [i for i, o in enumerate(tensors) if o.requires_grad and o._op is not None and id(o._op) in made]
    if not positions:
        return None
    node = Remat()
    node.xp = backend.get_array_module(*[t.data for t in inputs]) if inputs else np
    node.needs_grad = tuple(True for _ in inputs)
    node._edges = tuple((None, 0, t, t.data.shape, t.data.dtype) if t._op is None
                        else (t._op, t._out_index, None, t.data.shape, t.data.dtype) for t in inputs)
    watch = [(i, t, t._version) for i, t in enumerate(inputs) if t._op is None]
    if watch:
        node._watch = tuple(watch)
    node.inputs_order = inputs
    node.out_positions = positions
    node.saved = (f, args, kwargs, {id(t) for t in arg_tensors}, rec)
    rec.ops = []   # the first run's graph is no longer needed: only the node is kept
    replaced = {}
    for n, i in enumerate(positions):
        o = tensors[i]
        new = Tensor(o.data, requires_grad=True)
        new._op, new._out_index = node, n
        if getattr(o, "_keras_mask", None) is not None:
            new._keras_mask = o._keras_mask
        replaced[id(o)] = new
    node.out_meta = tuple((tensors[i].data.shape, tensors[i].data.dtype) for i in positions)
    parent = _tensor._recorder()
    if parent is not None:   # an enclosing remat sees this node as one of its ops
        parent.ops.append(node)
    return _tree.map_structure(lambda x: replaced.get(id(x), x) if isinstance(x, Tensor) else x, out)
