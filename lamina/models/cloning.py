"""``keras.models.clone_model`` and ``model_from_json``.

clone_model rebuilds a Sequential or functional model with new layers: by default each layer is remade
from its config (``layer.__class__.from_config(layer.get_config())``), so the clone has the same
architecture and freshly initialised weights. ``clone_function(layer)`` chooses the new layer (return the
layer itself to share it, or a changed copy); ``call_function(layer, *args, **kwargs)`` replaces the call
of each layer while the functional graph is replayed; ``input_tensors`` builds the clone on given symbolic
tensors; ``recursive=True`` clones nested Sequential and functional models layer by layer. A layer used
several times is cloned once, so sharing survives. A compiled model's clone is compiled the same way.
Other (subclassed) models are rebuilt from their config, as Keras does.
"""
import json

from ..layers.core import Input, InputLayer
from ..layers.layer import KerasTensor, _nest_flatten, _nest_map
from ..registry import get_registered_object
from .functional import Functional
from .model import Model
from .sequential import Sequential

__all__ = ["clone_model", "model_from_json"]


def _default_clone(layer):
    return layer.__class__.from_config(layer.get_config())


def _wrap(clone_function, call_function, recursive, cache):
    clone_function = clone_function or _default_clone

    def wrapped(layer):
        if id(layer) in cache:
            return cache[id(layer)]
        if recursive and isinstance(layer, Sequential):
            new = clone_model(layer, clone_function=clone_function, recursive=True, cache=cache)
        elif recursive and isinstance(layer, Functional):
            new = clone_model(layer, clone_function=clone_function, call_function=call_function,
                              recursive=True, cache=cache)
        else:
            new = clone_function(layer)
        cache[id(layer)] = new
        return new
    return wrapped


def _copy_compile(model, new):
    if getattr(model, "compiled", False) and model.get_compile_config() is not None:
        new.compile_from_config(model.get_compile_config())
    return new


def _clone_sequential(model, clone_function, input_tensors):
    new_layers = [clone_function(layer) for layer in model.layers]
    ref = model._input_layer
    if input_tensors is not None:
        if isinstance(input_tensors, (list, tuple)):
            if len(input_tensors) != 1:
                raise ValueError("Argument `input_tensors` must contain a single tensor.")
            input_tensors = input_tensors[0]
        if not isinstance(input_tensors, KerasTensor):
            raise ValueError(f"Argument `input_tensors` must be a KerasTensor. Received invalid value: "
                             f"input_tensors={input_tensors}")
        history = input_tensors._history
        if history is not None and isinstance(history[0], InputLayer):
            new_layers = [input_tensors] + new_layers
        else:
            new_layers = [Input(batch_shape=input_tensors.shape, dtype=input_tensors.dtype,
                                name=ref.name if ref is not None else None)] + new_layers
    elif ref is not None:
        new_layers = [Input(batch_shape=ref.batch_shape, dtype=ref._input_dtype, name=ref.name)] + new_layers
    new = Sequential(new_layers, name=model.name, trainable=model.trainable)
    return _copy_compile(model, new)


def _same_structure(a, b):
    if isinstance(a, dict) or isinstance(b, dict):
        return isinstance(a, dict) and isinstance(b, dict) and set(a) == set(b) and all(
            _same_structure(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b)
                and all(_same_structure(x, y) for x, y in zip(a, b)))
    return True


def _clone_functional(model, clone_function, call_function, input_tensors):
    reference = model._inputs_struct
    if input_tensors is not None:
        if not all(isinstance(t, KerasTensor) for t in _nest_flatten(input_tensors)):
            raise ValueError(f"All entries in `input_tensors` must be KerasTensors. Received invalid values: "
                             f"inputs_tensors={input_tensors}")
        if isinstance(reference, list) and len(reference) == 1 and isinstance(input_tensors, KerasTensor):
            input_tensors = [input_tensors]
        elif isinstance(reference, KerasTensor) and isinstance(input_tensors, (list, tuple)) \
                and len(input_tensors) == 1:
            input_tensors = input_tensors[0]
        if not _same_structure(input_tensors, reference):
            raise ValueError(f"`input_tensors` must have the same structure as model.input\nReference structure: "
                             f"{reference}\nReceived structure: {input_tensors}")
    else:
        input_tensors = _nest_map(lambda t: Input(batch_shape=t.shape, dtype=t.dtype, name=t.name), reference)
    values = {id(old): new for old, new in zip(model._flat_inputs, _nest_flatten(input_tensors))}

    def look(t):
        return values[id(t)] if isinstance(t, KerasTensor) else t
    for node in model._nodes:
        layer = clone_function(node.layer)
        args, kwargs = _nest_map(look, node.call_args), _nest_map(look, node.call_kwargs)
        out = call_function(layer, *args, **kwargs) if call_function is not None else layer(*args, **kwargs)
        for old, new in zip(node.output_tensors, _nest_flatten(out)):
            values[id(old)] = new
    outputs = _nest_map(look, model._outputs_struct)
    new = Functional(input_tensors, outputs, name=model.name, trainable=model.trainable)
    return _copy_compile(model, new)


def clone_model(model, input_tensors=None, clone_function=None, call_function=None, recursive=False, **kwargs):
    """A new model with the architecture of ``model`` and new weights, as ``keras.models.clone_model``.

    Args:
        model: a Sequential or functional model (other models are rebuilt from their config).
        input_tensors: symbolic tensors (same structure as ``model.input``) to build the clone on.
        clone_function: ``layer -> new layer`` applied to every non-input layer (default: from its config).
        call_function: ``(layer, *args, **kwargs) -> outputs`` replacing each layer call (functional only).
        recursive: clone nested Sequential/functional models layer by layer with clone_function.
    """
    cache = kwargs.pop("cache", None)
    if kwargs:
        raise ValueError(f"Unexpected keyword argument(s): {tuple(kwargs.keys())}")
    cache = {} if cache is None else cache
    if isinstance(model, Sequential):
        if call_function is not None:
            raise ValueError("`call_function` argument is not supported with Sequential models: their layers are "
                             "not called at model-construction time. Use `call_function` with functional models.")
        fn = _wrap(clone_function, None, recursive, cache)
        if not callable(fn):
            raise ValueError(f"Expected `clone_function` argument to be a callable. Received: {clone_function}")
        return _clone_sequential(model, fn, input_tensors)
    if isinstance(model, Functional):
        if clone_function is not None and not callable(clone_function):
            raise ValueError(f"Expected `clone_function` argument to be a callable. Received: {clone_function}")
        return _clone_functional(model, _wrap(clone_function, call_function, recursive, cache), call_function,
                                 input_tensors)
    if not isinstance(model, Model):
        raise ValueError(f"Expected `model` argument to be a `Model` instance. Received: model={model}")
    if clone_function or input_tensors:
        raise ValueError(f"Arguments `clone_function` and `input_tensors` are only supported for Sequential models "
                         f"or Functional models. Received model of type '{type(model).__name__}', with "
                         f"clone_function={clone_function} and input_tensors={input_tensors}")
    if call_function is not None:
        raise ValueError(f"Argument `call_function` is only supported for Functional models. Received model of "
                         f"type '{type(model).__name__}'.")
    return type(model).from_config(model.get_config())


def model_from_json(json_string, custom_objects=None):
    """A model (new weights) from the JSON of ``model.to_json()`` (lamina's or Keras's)."""
    from ..saving import deserialize_keras_object
    config = json.loads(json_string)
    if not isinstance(config, dict) or "class_name" not in config:
        raise ValueError("model_from_json: the JSON must describe one model: {'class_name': ..., 'config': ...}.")
    model = deserialize_keras_object(config, custom_objects=custom_objects)
    if not isinstance(model, Model):
        cls = get_registered_object(config["class_name"], custom_objects)
        raise ValueError(f"model_from_json: {config['class_name']!r} ({cls}) is not a model class.")
    return model
