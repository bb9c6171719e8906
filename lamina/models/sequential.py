"""Sequential: a plain stack of layers, each feeding the next.

The input shape comes from ``input_shape=`` on the first layer, a leading ``lamina.Input`` / InputLayer,
or, lazily, from the first data the model sees. Once it is known the stack is traced symbolically, so
every layer has its weights, ``layer.output`` and an output shape for ``summary()``.
"""
from ..backend import snake_case, unique_name
from ..layers.core import InputLayer
from ..layers.layer import KerasTensor, Layer, _is_spec, _nest_flatten
from ..tensor import no_grad
from .functional import _nonfinite, _spec_to_tensor, _tensor_to_spec
from .model import Model, deserialize_layer


class Sequential(Model):
    """``Sequential([layers.Dense(64, activation='relu', input_shape=(784,)), layers.Dense(10)])``
    or ``model = Sequential(); model.add(...)``."""

    def __init__(self, layers=None, trainable=True, name=None, **kwargs):
        # a subclass of Sequential is named after its class, as Keras names layers
        default = "sequential" if type(self) is Sequential else snake_case(type(self).__name__)
        Layer.__init__(self, name=name or unique_name(default), trainable=trainable, **kwargs)
        self._init_model_state()
        object.__setattr__(self, "_input_layer", None)
        self._layer_outputs = {}
        for layer in layers or []:
            self.add(layer, rebuild=False)
        self._maybe_rebuild()

    def add(self, layer, rebuild=True):
        """Append a layer (or set the input with a leading ``lamina.Input``)."""
        if isinstance(layer, KerasTensor):
            if layer._history is None or not isinstance(layer._history[0], InputLayer):
                raise ValueError("Sequential.add: only an Input tensor (lamina.Input) can be added as a tensor; "
                                 f"received {layer}.")
            layer = layer._history[0]
        if not isinstance(layer, Layer):
            raise ValueError(f"Only instances of lamina.layers.Layer can be added to a Sequential model. "
                             f"Received: {layer!r} (of type {type(layer).__name__})")
        if isinstance(layer, InputLayer):
            if self._layers or self._input_layer is not None:
                raise ValueError(f"Sequential model '{self.name}': an InputLayer can only be added first, "
                                 "and only once.")
            object.__setattr__(self, "_input_layer", layer)
        else:
            if any(l.name == layer.name for l in self._layers):
                raise ValueError(f"All layers added to a Sequential model should have unique names. Name "
                                 f"'{layer.name}' is already the name of a layer in this model. Update the "
                                 "`name` argument to pass a unique name.")
            if not self._layers and self._input_layer is None:
                shape = getattr(layer, "_batch_input_shape", None)
                if shape is None and isinstance(layer, Model) and layer.inputs is not None:
                    flat = _nest_flatten(layer.inputs)
                    shape = flat[0].shape if len(flat) == 1 else None
                if shape is not None:
                    object.__setattr__(self, "_input_layer", InputLayer(batch_shape=shape))
            self._layers.append(layer)
        self.built = False
        if rebuild:
            self._maybe_rebuild()

    def pop(self, rebuild=True):
        """Remove and return the last layer."""
        if not self._layers:
            raise TypeError(f"There are no layers in the Sequential model '{self.name}' to pop.")
        layer = self._layers.pop()
        self._layer_outputs.pop(id(layer), None)
        self.built = False
        if rebuild:
            self._maybe_rebuild()
        return layer

    def _maybe_rebuild(self):
        if self._input_layer is not None and self._layers:
            self.build(self._input_layer.batch_shape)

    @property
    def layers(self):
        return list(self._layers)

    def build(self, input_shape=None):
        """Trace the stack on a symbolic input of input_shape (batch axis included, may be None)."""
        if input_shape is None:
            raise ValueError(f"Sequential model '{self.name}' cannot be built without an input shape: add an "
                             "Input, give input_shape to the first layer, or call the model on data.")
        input_shape = tuple(input_shape)
        if self._input_layer is None or tuple(self._input_layer.batch_shape) != input_shape:
            object.__setattr__(self, "_input_layer", InputLayer(batch_shape=input_shape))
        x = self._input_layer.output_tensor
        self._model_inputs = x
        outputs = {}
        for layer in self._layers:
            x = layer(x)
            outputs[id(layer)] = x
        self._layer_outputs = outputs
        self._model_outputs = x
        self.output_names = [self._layers[-1].name] if self._layers else []
        self.built = True

    def _maybe_build(self, shapes):
        if self.built:
            return
        if not isinstance(shapes, tuple):
            # a nest of inputs (an augmentation pipeline's {"images", "bounding_boxes", ...}): no graph to trace
            # from one input shape, so the layers run one after another on whatever each returns, as Keras's
            # Sequential does when its input is not a single tensor
            return
        self.build((None,) + tuple(shapes[1:]))

    def call(self, inputs, training=None, mask=None):
        x = inputs
        for layer in self._layers:
            x = layer(x)
        return x

    def _first_nonfinite_layer(self, x):
        with no_grad():
            x = self._convert_input(x)
            for layer in self._layers:
                x = layer(x, training=True)
                if any(_nonfinite(o) for o in _nest_flatten(x)):
                    return layer
        return None

    def compute_output_spec(self, inputs, training=None, mask=None, **kwargs):
        x = KerasTensor(inputs.shape, inputs.dtype)
        for layer in self._layers:
            spec = layer.compute_output_spec(x)
            x = _spec_to_tensor(spec) if (_is_spec(spec) or isinstance(spec, (list, dict))) else spec
        return _tensor_to_spec(x)

    def compute_output_shape(self, input_shape):
        return self.compute_output_spec(KerasTensor(tuple(input_shape)))[0]

    # ----- config
    def get_config(self):
        layers = []
        if self._input_layer is not None:
            layers.append({"class_name": "InputLayer", "config": self._input_layer.get_config()})
        for layer in self._layers:
            layers.append({"class_name": getattr(type(layer), "_registered_name", type(layer).__name__),
                           "config": layer.get_config()})
        config = {"name": self.name, "trainable": self.trainable, "dtype": self._dtype_config(), "layers": layers}
        if self.built and self._input_layer is not None:
            config["build_input_shape"] = list(self._input_layer.batch_shape)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        model = cls(name=config.get("name"), trainable=config.get("trainable", True))
        for entry in config.get("layers", []):
            model.add(deserialize_layer(entry, custom_objects), rebuild=False)
        shape = config.get("build_input_shape")
        if shape is not None and model._input_layer is None:
            object.__setattr__(model, "_input_layer", InputLayer(batch_shape=tuple(shape)))
        model._maybe_rebuild()
        return model


__all__ = ["Sequential"]
