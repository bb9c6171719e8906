"""The functional graph: ``keras.Function`` and, on it, the functional model.

``Function(inputs, outputs)`` walks back from the outputs through the recorded calls (each KerasTensor
knows the layer or operation call, a ``Node``, that made it), keeps the calls in an order where every call comes
after the calls it reads from, and runs them in that order on real data, or on KerasTensors to infer the outputs'
shapes. ``Model(inputs, outputs)`` is a Functional: a Model (weights, compile, fit, saving) that is also a
Function over the same graph, as in Keras. Several inputs and outputs (lists or dicts), layers shared between
calls, and models used as layers all work, as in Keras.
"""
import numpy as np

from .. import ops
from .. import tree as _tree
from ..backend import current_path, get_array_module, snake_case, unique_name
from ..layers.core import InputLayer
from ..layers.layer import KerasTensor, Layer, Node, _is_spec, _nest_flatten, _nest_map
from ..layers.operations import Operation
from ..registry import serialize
from ..tensor import Tensor, no_grad
from .model import Model, deserialize_layer


def _producer(t):
    layer, node_index, _ = t._history
    return layer._inbound_nodes[node_index]


def _spec_to_tensor(spec):
    """KerasTensors (no history) from what compute_output_spec returns: (shape, dtype) or a nest of them."""
    if _is_spec(spec):
        return KerasTensor(spec[0], spec[1])
    if isinstance(spec, KerasTensor):
        return spec
    if isinstance(spec, dict):
        return {k: _spec_to_tensor(v) for k, v in spec.items()}
    return [_spec_to_tensor(s) for s in spec]


def _tensor_to_spec(t):
    if isinstance(t, KerasTensor):
        return (t.shape, t.dtype.name)
    if isinstance(t, dict):
        return {k: _tensor_to_spec(v) for k, v in t.items()}
    return [_tensor_to_spec(v) for v in t]


def _nonfinite(t):
    if not isinstance(t, Tensor) or not np.issubdtype(t.dtype, np.floating):
        return False
    return not bool(get_array_module(t.data).isfinite(t.data).all())


def _adjust_rank(value, kt):
    """A trailing axis of size 1 added or dropped to match the Input's rank, as Keras does."""
    if not isinstance(value, Tensor) or value.ndim == kt.ndim:
        return value
    if value.ndim == kt.ndim - 1 and kt.shape[-1] == 1:
        return ops.expand_dims(value, -1)
    if value.ndim == kt.ndim + 1 and value.shape[-1] == 1:
        return ops.squeeze(value, -1)
    return value


def _keras_layer_order(flat_in, flat_out):
    """The model's layers in Keras's order (its ``map_graph``), which ``model.layers``, ``get_weights()`` and
    the ``layers/<class>_<k>`` paths of weight files follow: by depth (the longest path to an output), deepest
    first; within a depth, in the order a depth-first walk from the outputs first reached them."""
    input_ids = {id(t) for t in flat_in}
    finished, index, post = set(), {}, []       # post: nodes, inputs before the calls that read them
    for out in flat_out:
        stack = [(out, None)]
        while stack:
            t, node = stack.pop()
            if node is not None:                # every parent done: the node itself
                finished.add(id(node))
                post.append(node)
                continue
            if t._history is None:
                continue
            node = _producer(t)
            if id(node) in finished:
                continue
            if id(t) in input_ids and not isinstance(node.layer, InputLayer):
                finished.add(id(node))          # a model input made by a layer outside this model
                continue
            index.setdefault(id(node.layer), (len(index), node.layer))
            stack.append((None, node))
            if not isinstance(node.layer, InputLayer):
                stack.extend((p, None) for p in reversed(node.input_tensors))
    in_graph = {id(n) for n in post}
    node_depth, layer_depth = {}, {}
    for node in reversed(post):
        depth = max(node_depth.setdefault(id(node), 0), layer_depth.get(id(node.layer), 0))
        layer_depth[id(node.layer)] = node_depth[id(node)] = depth
        for parent in node.parent_nodes:
            if id(parent) in in_graph:
                node_depth[id(parent)] = max(depth + 1, node_depth.get(id(parent), 0))
    for t in flat_in:                           # inputs no output depends on (Input layers only)
        if (t._history is not None and isinstance(t._history[0], InputLayer)
                and id(t._history[0]) not in layer_depth):
            layer_depth[id(t._history[0])] = 0
            index[id(t._history[0])] = (-1, t._history[0])
    return [layer for _, (_, layer) in sorted(((-layer_depth[k], v) for k, v in index.items()),
                                              key=lambda e: (e[0], e[1][0]))]


def _sorted_dicts(struct):
    """struct with every dict's keys in sorted order (the order Keras's tree gives a Function's outputs)."""
    if isinstance(struct, dict):
        return {k: _sorted_dicts(struct[k]) for k in sorted(struct)}
    if isinstance(struct, (list, tuple)):
        return type(struct)(_sorted_dicts(v) for v in struct)
    return struct


def _shapes_as(struct, shapes):
    """KerasTensors of these shapes in the structure of struct (a nest of KerasTensors, whose dtypes they take)."""
    if isinstance(struct, KerasTensor):
        return KerasTensor(tuple(shapes), struct.dtype)
    if isinstance(struct, dict):
        return {k: _shapes_as(v, shapes[k]) for k, v in struct.items()}
    return type(struct)(_shapes_as(v, s) for v, s in zip(struct, shapes))


class Function(Operation):
    """A callable graph of layer and ``keras.ops`` calls between symbolic tensors (``keras.Function``).

    ``Function(inputs, outputs)``: inputs and outputs are KerasTensors (``keras.Input``, ``keras.KerasTensor``,
    or tensors made from them), or nests of them (lists, tuples, dicts). Calling the function on arrays or
    Tensors in the inputs' structure runs the calls between them and returns the outputs in their structure;
    called on KerasTensors it is a node of a larger graph. Unlike a functional Model it has no weights of its
    own, no training and no saving. ``operations`` lists the layers and operations of the graph (inputs' layers
    included) in Keras's order; ``inputs`` and ``outputs`` are flat lists; ``compute_output_spec`` gives the
    outputs' KerasTensors for inputs of other shapes.

    >>> import numpy as np, lamina as keras
    >>> a, b = keras.KerasTensor((None, 3)), keras.KerasTensor((None, 3))
    >>> fn = keras.Function([a, b], {"sum": a + b, "prod": keras.ops.multiply(a, b)})
    >>> out = fn([np.ones((2, 3)), np.full((2, 3), 2.0)])
    >>> out["sum"].numpy()[0], out["prod"].numpy()[0]
    (array([3., 3., 3.], dtype=float32), array([2., 2., 2.], dtype=float32))
    """

    _graph_kind = "Function"   # (the word error messages use: a Functional says "Model")

    def __init__(self, inputs, outputs, name=None):
        super().__init__(name=name)
        self._init_graph(inputs, _sorted_dicts(outputs))

    @property
    def operations(self):
        """The layers and operations of the graph (the inputs' InputLayers among them), in Keras's order."""
        return list(self._layers)

    @property
    def inputs(self):
        """The symbolic inputs, as a flat list."""
        return list(self._flat_inputs)

    @property
    def outputs(self):
        """The symbolic outputs, as a flat list."""
        return list(self._flat_outputs)

    def _init_graph(self, inputs, outputs):
        flat_in, flat_out = _nest_flatten(inputs), _nest_flatten(outputs)
        for what, flat in (("inputs", flat_in), ("outputs", flat_out)):
            if not flat:
                raise ValueError(f"`{what}` argument cannot be empty. Received:\ninputs={inputs}\noutputs={outputs}")
            bad = [t for t in flat if not isinstance(t, KerasTensor)]
            if bad:
                raise ValueError(f"{self._graph_kind} {what} must be symbolic tensors (from lamina.Input and layer "
                                 f"calls on them). Received: {bad[0]!r}")
        self._inputs_struct, self._outputs_struct = inputs, outputs
        self._flat_inputs, self._flat_outputs = flat_in, flat_out
        input_ids = {id(t) for t in flat_in}
        order, state = [], {}
        for out in flat_out:
            if id(out) in input_ids:
                continue
            if out._history is None:
                raise ValueError(f"Output {out} of the {self._graph_kind.lower()} is not connected to its inputs: "
                                 "it was made by no layer or operation call.")
            stack = [(_producer(out), False)]
            while stack:
                node, expanded = stack.pop()
                if expanded:
                    if state.get(id(node)) != 2:
                        state[id(node)] = 2
                        order.append(node)
                    continue
                if id(node) in state:
                    continue
                state[id(node)] = 1
                stack.append((node, True))
                for t in reversed(node.input_tensors):
                    if id(t) in input_ids:
                        continue
                    if t._history is None or isinstance(t._history[0], InputLayer):
                        raise ValueError(
                            f"Graph disconnected: cannot obtain the value of tensor {t} at layer "
                            f"'{node.layer.name}': it comes from an Input that is not among the "
                            f"{self._graph_kind.lower()}'s inputs ({[x.name for x in flat_in]}).")
                    parent = _producer(t)
                    if id(parent) not in state:
                        stack.append((parent, False))
        self._nodes = order
        self._layers = _keras_layer_order(flat_in, flat_out)
        self._model_inputs, self._model_outputs = inputs, outputs
        if isinstance(outputs, dict):
            self.output_names = sorted(outputs)
        else:
            self.output_names = [t._history[0].name if t._history else t.name for t in flat_out]
        self.input_names = [t.name for t in flat_in]
        self.built = True

    # ----- running the graph
    def _flatten_inputs(self, inputs):
        """The values in the order of the flat inputs: a Function takes exactly its inputs' structure, of the
        ranks and known sizes of its inputs (Keras's checks)."""
        try:
            _tree.assert_same_structure(inputs, self._inputs_struct)
        except (ValueError, TypeError):
            raise ValueError(f"{type(self).__name__} was called with an invalid input structure. Expected input "
                             f"structure: {self._inputs_struct}\nReceived input structure: {inputs}") from None
        flat = _nest_flatten(inputs)
        for x, ref in zip(flat, self._flat_inputs):
            shape = tuple(np.shape(x)) if not hasattr(x, "shape") else tuple(x.shape)
            if len(shape) != len(ref.shape) or any(a is not None and b is not None and a != b
                                                   for a, b in zip(shape, ref.shape)):
                raise ValueError(f"{type(self).__name__} was passed incompatible inputs. For input '{ref.name}', "
                                 f"expected shape {ref.shape}, but received instead a tensor with shape {shape}.")
        return flat

    def _run_graph(self, inputs, probe=None):
        flat = self._flatten_inputs(inputs)
        values = {}
        for i, (kt, v) in enumerate(zip(self._flat_inputs, flat)):
            v = _adjust_rank(v, kt)
            shape = getattr(v, "shape", None)
            if shape is not None:
                if len(shape) != kt.ndim or any(a is not None and a != b for a, b in zip(kt.shape, shape)):
                    kind = self._graph_kind.lower()
                    raise ValueError(f"Input {i} of {kind} '{self.name}' is incompatible with the {kind}: "
                                     f"expected shape={kt.shape}, found shape={tuple(shape)}")
            values[id(kt)] = v

        def look(t):
            return values[id(t)] if isinstance(t, KerasTensor) else t
        for node in self._nodes:
            args = _nest_map(look, node.call_args)
            kwargs = _nest_map(look, node.call_kwargs)
            out = node.layer(*args, **kwargs)
            flat_out = _nest_flatten(out)
            for kt, o in zip(node.output_tensors, flat_out):
                values[id(kt)] = o
            if probe is not None and any(_nonfinite(o) for o in flat_out):
                return node.layer
        if probe is not None:
            return None
        return _nest_map(look, self._outputs_struct)

    def call(self, inputs):
        """The outputs for these input values (in the inputs' structure), in the outputs' structure."""
        return self._run_graph(inputs)

    def _graph_spec(self, flat):
        """The outputs' KerasTensors (in the outputs' structure) for inputs of these shapes and dtypes (flat),
        from each call's compute_output_spec along the graph."""
        values = {id(kt): KerasTensor(v.shape, v.dtype) for kt, v in zip(self._flat_inputs, flat)}

        def look(t):
            return values[id(t)] if isinstance(t, KerasTensor) else t
        for node in self._nodes:
            args = _nest_map(look, node.call_args)
            kw = _nest_map(look, node.call_kwargs)
            outs = _nest_flatten(_spec_to_tensor(node.layer.compute_output_spec(*args, **kw)))
            for kt, o in zip(node.output_tensors, outs):
                values[id(kt)] = o
        return _nest_map(look, self._outputs_struct)

    def compute_output_spec(self, inputs):
        """KerasTensors (shape and dtype) of the outputs, in their structure, for KerasTensor inputs."""
        flat = self._flatten_inputs(inputs)
        if all(tuple(x.shape) == ref.shape for x, ref in zip(flat, self._flat_inputs)):
            return _nest_map(lambda t: KerasTensor(t.shape, t.dtype), self._outputs_struct)
        return self._graph_spec(flat)

    def compute_output_shape(self, input_shape):
        """The outputs' shapes, in their structure, for inputs of these shapes (in the inputs' structure)."""
        return _nest_map(lambda t: t.shape, self.compute_output_spec(_shapes_as(self._inputs_struct, input_shape)))

    def symbolic_call(self, inputs):
        """Called on KerasTensors: a node of the graph being built, which runs this function."""
        return _FunctionNode(self)(inputs)

    def __repr__(self):
        return f"<Function name={self.name}>"


class _FunctionNode(Layer):
    """A Function called on symbolic tensors, as a node of another graph: an operation (kept out of
    ``model.layers``, as Keras's Function is no layer) running the function, in memory only."""
    _operation = True

    def __init__(self, function):
        super().__init__(name=function.name)
        self.function = function

    def call(self, inputs):
        return self.function.call(inputs)

    def compute_output_spec(self, inputs, **kwargs):
        return _tensor_to_spec(self.function.compute_output_spec(inputs))

    def get_config(self):
        raise ValueError(f"This model calls keras.Function '{self.function.name}' on symbolic tensors: such a node "
                         "runs in memory but cannot be saved. Build the model from the function's own layers and "
                         "operations to save it.")


class Functional(Model, Function):
    """``Model(inputs, outputs, name=None)`` over symbolic tensors: a Model that is also a ``Function`` of its
    graph (as Keras's). Build it through ``lamina.Model``."""

    _graph_kind = "Model"

    def __init__(self, inputs, outputs, name=None, trainable=True, **kwargs):
        # named as Keras names it: 'functional' for Model(inputs, outputs), a subclass after its class
        # (class MnistModel(Model) calling super().__init__(inputs, outputs) -> 'mnist_model')
        default = "functional" if type(self) is Functional else snake_case(type(self).__name__)
        Layer.__init__(self, name=name or unique_name(default), trainable=trainable, **kwargs)
        self._init_model_state()
        if isinstance(inputs, tuple):
            inputs = list(inputs)
        if isinstance(outputs, tuple):
            outputs = list(outputs)
        if isinstance(outputs, dict):   # (Keras 3.15 returns a dict of outputs in the order of its keys)
            outputs = {k: outputs[k] for k in sorted(outputs)}
        self._init_graph(inputs, outputs)
        with self._name_scope():   # built here, as Keras's (its layers were built when called)
            self._path = current_path()

    # ----- running the graph (a Model takes its inputs more freely than a Function: a list for a dict of
    # inputs, a dict by input names, a trailing axis of size 1 added or dropped)
    def _flatten_inputs(self, inputs):
        struct = self._inputs_struct
        if isinstance(struct, dict):
            if not isinstance(inputs, dict):
                if isinstance(inputs, (list, tuple)) and len(inputs) == len(struct):
                    return list(inputs)
                raise ValueError(f"Model '{self.name}' expects a dict of inputs with keys {sorted(struct)}.")
            missing = [k for k in struct if k not in inputs]
            if missing:
                raise ValueError(f"Model '{self.name}': missing inputs {missing}; expected keys {sorted(struct)}.")
            return [inputs[k] for k in sorted(struct)]
        n = len(self._flat_inputs)
        if isinstance(inputs, dict):
            try:
                return [inputs[name] for name in self.input_names]
            except KeyError:
                raise ValueError(f"Model '{self.name}': inputs given as a dict need the keys {self.input_names}; "
                                 f"received {sorted(inputs)}.") from None
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != n:
                raise ValueError(f"Model '{self.name}' expects {n} input(s) ({self.input_names}), "
                                 f"but it received {len(inputs)} input tensors.")
            return list(inputs)
        if n != 1:
            raise ValueError(f"Model '{self.name}' expects {n} inputs ({self.input_names}), but it received "
                             "a single tensor. Pass a list or a dict.")
        return [inputs]

    def _check_input_spec(self, inputs):
        pass  # checked in call(), after Keras's rank adjustment

    def call(self, inputs, training=None, mask=None):
        return self._run_graph(inputs)

    def _first_nonfinite_layer(self, x):
        with no_grad():
            return self._run_graph(_nest_map(lambda a: self._convert_input(a), x), probe=True)

    # ----- symbolic use (a model called on symbolic tensors, as a layer of another model)
    def compute_output_spec(self, inputs, training=None, mask=None, **kwargs):
        return _tensor_to_spec(self._graph_spec(self._flatten_inputs(inputs)))

    def _symbolic_call(self, *args, **kwargs):
        spec = self.compute_output_spec(*args, **kwargs)
        node_index = len(self._inbound_nodes)
        counter = iter(range(10 ** 6))

        def make(s):
            if _is_spec(s):
                return KerasTensor(s[0], s[1], name=self.name, history=(self, node_index, next(counter)))
            if isinstance(s, dict):
                return {k: make(v) for k, v in s.items()}
            return [make(v) for v in s]
        outputs = make(spec)
        self._inbound_nodes.append(Node(self, args, kwargs, outputs))
        return outputs

    def compute_output_shape(self, input_shape):
        spec = self.compute_output_spec(_nest_map_shape(input_shape))
        return _nest_spec_shapes(spec)

    # ----- config
    def _node_index_map(self):
        """(layer, original node index) -> index among this model's calls of that layer."""
        mapping, counts = {}, {}
        own = {id(n) for n in self._nodes}
        for layer in self._layers:
            for i, node in enumerate(layer._inbound_nodes):
                if id(node) in own or isinstance(layer, InputLayer):
                    mapping[(id(layer), i)] = counts.get(id(layer), 0)
                    counts[id(layer)] = counts.get(id(layer), 0) + 1
        return mapping

    def get_config(self):
        mapping = self._node_index_map()

        def tensor_config(t):
            layer, ni, ti = t._history
            return {"class_name": "__keras_tensor__",
                    "config": {"shape": list(t.shape), "dtype": t.dtype.name,
                               "keras_history": [layer.name, mapping[(id(layer), ni)], ti]}}

        def arg_config(v):
            if isinstance(v, KerasTensor):
                return tensor_config(v)
            if isinstance(v, slice):       # an index's parts (GetItem's key), as Keras writes them
                return {"class_name": "__slice__", "config": {"start": arg_config(v.start), "stop": arg_config(v.stop),
                                                              "step": arg_config(v.step)}}
            if v is Ellipsis:
                return {"class_name": "__ellipsis__", "config": {}}
            if isinstance(v, (list, tuple)):
                return [arg_config(x) for x in v]
            if isinstance(v, dict):
                return {k: arg_config(x) for k, x in v.items()}
            return serialize(v)

        own = {id(n) for n in self._nodes}
        layer_configs = []
        for layer in self._layers:
            entry = serialize(layer)
            entry["name"] = layer.name
            entry["inbound_nodes"] = [{"args": arg_config(list(node.call_args)), "kwargs": arg_config(node.call_kwargs)}
                                      for node in layer._inbound_nodes if id(node) in own]
            layer_configs.append(entry)

        def ref(t):
            layer, ni, ti = t._history
            return [layer.name, mapping[(id(layer), ni)], ti]
        return {"name": self.name, "trainable": self.trainable, "layers": layer_configs,
                "input_layers": _nest_map(ref, self._inputs_struct),
                "output_layers": _nest_map(ref, self._outputs_struct)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        layers, pending, produced = {}, {}, {}
        order = []
        for entry in config["layers"]:
            layer = deserialize_layer(entry, custom_objects)
            name = entry.get("name", layer.name)
            layers[name] = layer
            order.append(name)
            if isinstance(layer, InputLayer):
                produced[(name, 0)] = layer.output_tensor
            pending[name] = list(entry.get("inbound_nodes", []))

        def is_ref(v):
            return isinstance(v, dict) and v.get("class_name") == "__keras_tensor__"

        def refs(v):
            if is_ref(v):
                return [v]
            if isinstance(v, list):
                return [r for x in v for r in refs(x)]
            if isinstance(v, dict):
                return [r for x in v.values() for r in refs(x)]
            return []

        def resolve(v):
            if is_ref(v):
                lname, ni, ti = v["config"]["keras_history"]
                return _nest_flatten(produced[(lname, ni)])[ti]
            if isinstance(v, dict) and v.get("class_name") == "__slice__" and isinstance(v.get("config"), dict):
                part = {k: resolve(v["config"].get(k)) for k in ("start", "stop", "step")}
                if not all(p is None or isinstance(p, int) for p in part.values()):
                    raise ValueError(f"a slice in a node's arguments must have integer bounds, got {part}")
                return slice(part["start"], part["stop"], part["step"])
            if isinstance(v, dict) and v.get("class_name") == "__ellipsis__":
                return Ellipsis
            if isinstance(v, list):
                return [resolve(x) for x in v]
            if isinstance(v, dict):
                return {k: resolve(x) for k, x in v.items()}
            return v

        done_nodes = {name: (1 if isinstance(layers[name], InputLayer) else 0) for name in order}
        progress = True
        while progress and any(pending.values()):
            progress = False
            for name in order:
                while pending[name]:
                    node = pending[name][0]
                    needed = refs(node.get("args", [])) + refs(node.get("kwargs", {}))
                    if not all(tuple(r["config"]["keras_history"][:2]) in produced for r in needed):
                        break
                    args, kwargs = resolve(node.get("args", [])), resolve(node.get("kwargs", {}))
                    out = layers[name](*args, **kwargs)
                    produced[(name, done_nodes[name])] = out
                    done_nodes[name] += 1
                    pending[name].pop(0)
                    progress = True
        if any(pending.values()):
            stuck = [n for n, p in pending.items() if p]
            raise ValueError(f"Could not rebuild the functional model: the calls of layers {stuck} read tensors "
                             "that are never produced (a corrupt or incomplete config).")

        def out_ref(r):
            if isinstance(r, list) and len(r) == 3 and isinstance(r[0], str):
                return _nest_flatten(produced[(r[0], r[1])])[r[2]]
            if isinstance(r, dict):
                return {k: out_ref(v) for k, v in r.items()}
            return [out_ref(v) for v in r]
        inputs, outputs = out_ref(config["input_layers"]), out_ref(config["output_layers"])
        return cls(inputs, outputs, name=config.get("name"), trainable=config.get("trainable", True))


def _nest_map_shape(shape):
    if isinstance(shape, dict):
        return {k: _nest_map_shape(v) for k, v in shape.items()}
    if isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], (list, tuple, dict)):
        return [_nest_map_shape(s) for s in shape]
    return KerasTensor(tuple(shape))


def _nest_spec_shapes(spec):
    if _is_spec(spec):
        return spec[0]
    if isinstance(spec, dict):
        return {k: _nest_spec_shapes(v) for k, v in spec.items()}
    return [_nest_spec_shapes(s) for s in spec]


__all__ = ["Function", "Functional"]
