"""The Model class: a Layer that can be compiled, trained, evaluated, summarised and saved.

Three ways to make one, as in Keras:
- functional: ``Model(inputs, outputs)`` over symbolic ``lamina.Input`` tensors (see functional.py);
- ``Sequential([...])`` (see sequential.py);
- subclassing: ``class M(Model)`` with layers as attributes and a ``call(self, x, training=None)``.

compile() records the optimizer, the losses and metrics, and the ``trainable`` flag of every layer as it
stands at that moment: training steps of this model use those flags, whatever happens to them later,
until compile() is called again (the classic GAN recipe relies on it). fit/evaluate/predict run the loops
in training.py; the step functions (train_step, test_step, predict_step) live here and may be overridden.
"""
import contextlib
import inspect
import json
import warnings
import weakref

import numpy as np

from .. import backend, losses as losses_mod, metrics as metrics_mod, optimizers
from ..layers.layer import KerasTensor, Layer, _nest_flatten
from ..registry import MODEL_FILES, from_config, get_registered_object, serialize
from ..tensor import Tensor, no_grad
from . import summary as summary_mod
from . import training
from ..distribution import _runtime as _dist


def deserialize_layer(config, custom_objects=None):
    """A layer (or a nested model) from ``{'class_name', 'config'}``, found in the registry by name."""
    name = config.get("class_name")
    cls = get_registered_object(name, custom_objects)
    if cls is None:
        raise ValueError(f"Unknown layer class {name!r}. If it is a custom layer, register it with "
                         "lamina.utils.register_keras_serializable or pass it in custom_objects.")
    if isinstance(cls, type) and issubclass(cls, Model):
        return from_config(cls, config.get("config", {}), custom_objects)
    return cls.from_config(config.get("config", {}))


_TAKES_TRAINING = weakref.WeakKeyDictionary()


def _takes_training(method):
    """Whether a compute_loss accepts ``training`` (by name or **kwargs), once per function: inspect.signature
    on every training step was ~6% of a small model's step."""
    fn = getattr(method, "__func__", method)
    try:
        return _TAKES_TRAINING[fn]
    except (KeyError, TypeError):
        params = inspect.signature(method).parameters
        takes = "training" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())
        try:
            _TAKES_TRAINING[fn] = takes
        except TypeError:   # not weak-referenceable (a builtin): asked again next time
            pass
        return takes


class Model(Layer):
    """A trainable group of layers with compile/fit/evaluate/predict.

    ``Model(inputs, outputs, name=None)`` builds a functional model; a subclass defines ``call``.
    """

    def __new__(cls, *args, **kwargs):
        if cls is Model and (len(args) >= 2 or "inputs" in kwargs or "outputs" in kwargs):
            functional = get_registered_object("Functional")
            return object.__new__(functional)
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        if args or "inputs" in kwargs or "outputs" in kwargs:
            functional = get_registered_object("Functional")
            if len(args) + ("inputs" in kwargs) + ("outputs" in kwargs) >= 2 and not isinstance(self, functional):
                # ``class Custom(Model)`` built as ``Custom(inputs, outputs)``: a functional model with the
                # subclass's overrides (train_step, ...), as in Keras's "customizing fit()" guide
                _make_functional(type(self), functional)
                functional.__init__(self, *args, **kwargs)
                return
            raise TypeError(f"{type(self).__name__}: a subclassed Model takes no inputs/outputs; build a "
                            "functional model with lamina.Model(inputs, outputs) instead.")
        super().__init__(**kwargs)
        self._init_model_state()

    def _init_model_state(self):
        object.__setattr__(self, "optimizer", None)
        self.compiled = False
        self.stop_training = False
        self.history = None
        self._compile_state = None
        self._compile_flags = None
        self._compile_config = None
        self._warned_trainable = False
        self._initial_epoch = None
        self._called_shapes = None

    # ----- structure
    @property
    def layers(self):   # operations in the graph (Keras's symbolic ops, `_operation = True`) are not layers
        return [layer for layer in self._layers if not getattr(layer, "_operation", False)]

    def get_layer(self, name=None, index=None):
        """The layer called name, or at position index of ``model.layers``."""
        if index is not None and name is not None:
            raise ValueError("get_layer: give either name or index, not both.")
        if isinstance(name, int) and index is None:
            name, index = None, name
        layers = self.layers
        if index is not None:
            if not -len(layers) <= index < len(layers):
                raise ValueError(f"get_layer: index {index} is out of range: model '{self.name}' has "
                                 f"{len(layers)} layers.")
            return layers[index]
        if name is not None:
            for layer in layers:
                if layer.name == name:
                    return layer
            raise ValueError(f"No such layer: {name}. Existing layers are: {[l.name for l in layers]}.")
        raise ValueError("get_layer: provide a layer name or index.")

    @property
    def inputs(self):
        """The model's symbolic inputs as a flat list, as Keras gives them (``input`` keeps the structure)."""
        ins = getattr(self, "_model_inputs", None)
        return None if ins is None else _nest_flatten(ins)

    @property
    def outputs(self):
        """The model's symbolic outputs as a flat list (``output`` keeps the structure)."""
        outs = getattr(self, "_model_outputs", None)
        return None if outs is None else _nest_flatten(outs)

    @property
    def input(self):
        ins = getattr(self, "_model_inputs", None)
        if ins is None:
            return Layer.input.fget(self)
        flat = _nest_flatten(ins)
        return flat[0] if len(flat) == 1 and not isinstance(ins, dict) else ins

    @property
    def output(self):
        outs = getattr(self, "_model_outputs", None)
        if outs is None:
            return Layer.output.fget(self)
        flat = _nest_flatten(outs)
        return flat[0] if len(flat) == 1 else outs

    @property
    def input_shape(self):
        i = self.input
        if isinstance(i, KerasTensor):
            return i.shape
        if isinstance(i, dict):
            return {k: t.shape for k, t in i.items()}
        return [t.shape for t in _nest_flatten(i)]

    @property
    def output_shape(self):
        o = self.output
        if isinstance(o, KerasTensor):
            return o.shape
        return [t.shape for t in _nest_flatten(o)]

    def get_weights(self):
        """Copies of the weights as NumPy arrays, in ``model.weights`` order (later updates leave them be)."""
        return [np.array(w.numpy(), copy=True) for w in self.weights]

    def _maybe_build(self, shapes):
        # A subclassed model creates its sub-layers' weights by running call() right after this;
        # the input shape is kept (batch axis as None) so that a saved model can be rebuilt.
        self._called_shapes = _nest_map_shapes(lambda s: (None,) + tuple(s[1:]), shapes)
        if type(self).build is not Model.build:
            # a subclass's own build(input_shape) (making its sub-layers there) runs before the first call, as in
            # Keras; its super().build() then only marks the model built, since the call follows
            object.__setattr__(self, "_in_first_build", True)
            try:
                self.build(shapes)
            finally:
                object.__setattr__(self, "_in_first_build", False)
        self.built = True

    def build(self, input_shape):
        """Create the weights of a subclassed model by running it once on zeros of input_shape
        (None sizes count as 1)."""
        if self.__dict__.get("_in_first_build"):
            self.built = True
            return
        def zeros(shape):
            return np.zeros(tuple(1 if d is None else d for d in shape), backend.floatx())
        is_shape = isinstance(input_shape, (tuple, list)) and all(d is None or isinstance(d, int) for d in input_shape)
        data = zeros(input_shape) if is_shape else _nest_map_shapes(zeros, input_shape)
        self.built = True
        with no_grad():
            self(data, training=False)

    def call(self, inputs, training=None):  # pragma: no cover - subclasses define it
        raise NotImplementedError(f"Model '{self.name}' ({type(self).__name__}) has no call() method: "
                                  "subclass Model and define call(self, inputs, training=None).")

    def summary(self, line_length=None, positions=None, print_fn=None, expand_nested=False,
                show_trainable=False, layer_range=None):
        """Print Keras's table of layers, output shapes, parameter counts (and connections)."""
        summary_mod.print_summary(self, line_length=line_length, positions=positions, print_fn=print_fn,
                                  expand_nested=expand_nested, show_trainable=show_trainable,
                                  layer_range=layer_range)

    # ----- trainable flags as they stood at compile()
    def _on_trainable_change(self):
        if self.compiled and not self._warned_trainable:
            self._warned_trainable = True
            warnings.warn(
                f"Model '{self.name}': `trainable` was changed after compile(). The compiled model keeps the "
                "trainable flags it had at compile() time (so the classic GAN recipe works); the change takes "
                "effect for this model at its next compile() call, and for any model compiled from now on.",
                UserWarning, stacklevel=5)  # past the setter, Layer.__setattr__, Model.__setattr__

    def _snapshot_flags(self):
        return [(layer, layer._trainable) for layer in self._sublayers()]

    @contextlib.contextmanager
    def _compiled_flags(self):
        """Inside, every layer's trainable flag is the one recorded at compile()."""
        if self._compile_flags is None:
            yield
            return
        current = [(layer, layer._trainable) for layer in self._sublayers()]
        if all(layer._trainable == flag for layer, flag in self._compile_flags):
            yield  # nothing changed since compile(): the weights' requires_grad already match the flags
            return
        if not self._warned_trainable:
            self._on_trainable_change()
        try:
            for layer, flag in self._compile_flags:
                object.__setattr__(layer, "_trainable", flag)
            for layer, _ in current:  # weights of layers frozen at compile() ask for no gradient
                layer._sync_requires_grad()
            yield
        finally:
            for layer, flag in current:
                object.__setattr__(layer, "_trainable", flag)
            for layer, _ in current:
                layer._sync_requires_grad()

    # ----- compile
    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None, weighted_metrics=None,
                run_eagerly=False, steps_per_execution=1, jit_compile="auto", auto_scale_loss=True):
        """Configure training: optimizer, loss(es), metrics and loss weights (strings or objects)."""
        self.optimizer = inner = optimizers.get(optimizer)
        if (auto_scale_loss and self.dtype_policy.name == "mixed_float16" and self.optimizer is not None
                and not isinstance(self.optimizer, optimizers.LossScaleOptimizer)):
            # float16 gradients underflow without loss scaling: Keras wraps the optimizer here
            self.optimizer = optimizers.LossScaleOptimizer(self.optimizer, name="loss_scale_optimizer")
        self.loss = loss
        self._compile_state = training.CompileState(self, loss, metrics, weighted_metrics, loss_weights)
        self._compile_config = {"optimizer": optimizer if isinstance(optimizer, str) else serialize(inner),
                                "loss": _serialize_structure(loss, _serialize_loss),
                                "metrics": _serialize_structure(metrics, _serialize_metric),
                                "weighted_metrics": _serialize_structure(weighted_metrics, _serialize_metric),
                                "loss_weights": loss_weights}
        self._compile_flags = self._snapshot_flags()
        self._warned_trainable = False
        self.compiled = True
        self.stop_training = False

    def get_compile_config(self):
        return dict(self._compile_config) if self._compile_config is not None else None

    def compile_from_config(self, config):
        if type(self).compile is not Model.compile:
            # as Keras 3.15: a model whose compile() is its own (other arguments, other state) is not compiled from
            # the file's config, whose arguments are the base class's
            warnings.warn("`compile()` was not called as part of model loading because the model's `compile()` "
                          "method is custom. All subclassed Models that have `compile()` overridden should also "
                          "override `get_compile_config()` and `compile_from_config(config)`. Alternatively, you can "
                          "call `compile()` manually after loading.", stacklevel=2)
            return
        config = dict(config)
        opt = config.get("optimizer", "rmsprop")
        loss = _deserialize_structure(config.get("loss"), _deserialize_loss)
        self.compile(optimizer=optimizers.get(opt), loss=loss, metrics=config.get("metrics"),
                     weighted_metrics=config.get("weighted_metrics"), loss_weights=config.get("loss_weights"))

    def _assert_compiled(self, what):
        if not self.compiled:
            raise ValueError(   # (Keras 3.15 raises a ValueError here)
                f"You must call compile() on model '{self.name}' before {what}().")

    # ----- metrics (Keras's order: loss, compiled metrics, per-output losses, the model's own Metric attributes)
    def __setattr__(self, name, value):
        if isinstance(value, metrics_mod.Metric) or (isinstance(value, (list, tuple)) and value and all(
                isinstance(v, metrics_mod.Metric) for v in value)):
            tracked = self.__dict__.setdefault("_tracked_metrics", [])
            for m in value if isinstance(value, (list, tuple)) else [value]:
                if not any(m is t for t in tracked):
                    tracked.append(m)
        super().__setattr__(name, value)

    @property
    def metrics(self):
        """Every metric fit() resets at each epoch and logs: the loss tracker (name 'loss'), the compiled
        metrics as one entry named 'compile_metrics' (its ``result()`` is a dict), one loss tracker per
        output, then the Metric objects set as attributes of the model (``self.loss_tracker = ...``).
        Subclasses may override it, as in Keras's guide, to list their own trackers."""
        out = self._compile_state.trackers() if self._compile_state is not None else []
        return out + list(self.__dict__.get("_tracked_metrics", []))

    @property
    def metrics_names(self):
        """The names of the logged values: the loss, the compiled metrics (compile_metrics expanded), the
        per-output losses, the model's own metrics."""
        names = []
        for m in self.metrics:
            if isinstance(m, training.CompileMetrics):
                names.extend(n for n, _ in m._state.named_metrics())
            else:
                names.append(m.name)
        return names

    def reset_metrics(self):
        """Reset every metric of ``model.metrics`` (fit does at the start of each epoch)."""
        for m in self.metrics:
            m.reset_state()

    def get_metrics_result(self):
        """{name: value} of every metric in ``model.metrics`` (a dict result, compile_metrics', merged in)."""
        logs = {}
        for m in self.metrics:
            result = metrics_mod.result_value(m)   # (logged as Python numbers: no Tensor made for it)
            if isinstance(result, dict):
                logs.update(result)
            else:
                logs[m.name] = result
        return training.pythonify_logs(logs)

    # ----- steps (override points, as in Keras)
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """Scalar loss Tensor: the compiled losses (weighted) plus the model's added and regularisation
        losses. Override it to train on another loss: fit logs and evaluate returns the value it returns."""
        if self._compile_state is None:
            if not self.losses:
                raise RuntimeError(f"Model '{self.name}' has no loss to compute: call compile(loss=...) first.")
            total = None
            for extra in self.losses:
                total = extra if total is None else total + extra
            return total
        return self._compile_state.compute_loss(y, y_pred, sample_weight)

    def _compute_loss(self, x, y, y_pred, sample_weight, training):
        """compute_loss, also for overrides written before Keras 3.3 (without the training argument)."""
        if _takes_training(self.compute_loss):
            return self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=training)
        return self.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """Update the compiled metrics with one batch; returns ``get_metrics_result()`` (the step's logs)."""
        if self._compile_state is not None and self._compile_state.compile_metrics is not None:
            self._compile_state.compile_metrics.update_state(y, y_pred, sample_weight)
        return self.get_metrics_result()

    def _track_loss(self, loss, x):
        """The running mean of the loss (weighted by batch size), kept by the loss tracker of compile()."""
        if loss is not None and self._compile_state is not None:
            self._compile_state.loss_tracker.update_state(float(_to_float(loss)),
                                                          sample_weight=training.batch_size_of(x))

    def _step_metrics(self, loss, x, y, y_pred, sample_weight):
        """This rank's loss into the loss tracker and its batch into the compiled metrics (summed over the ranks
        by the caller when training data-parallel); returns compute_metrics' logs."""
        self._track_loss(loss, x)
        return self.compute_metrics(x, y, y_pred, sample_weight)

    def train_step(self, data):
        """One update: forward (training=True), ``compute_loss``, lamina.grad, optimizer.apply_gradients.
        ``data`` is x, (x, y) or (x, y, sample_weight), as Keras passes it. Returns the logs."""
        x, y, sample_weight = training.unpack_x_y_sample_weight(data)
        with self._compiled_flags():
            y_pred = self(x, training=True)
            loss = self._compute_loss(x, y, y_pred, sample_weight, True)
            local = _to_float(loss)
            value = _dist.reduce_loss(local)  # data-parallel: the global loss on every rank
            if not np.isfinite(value):
                raise training.NonFiniteLoss(value)
            variables = self.trainable_weights
            if variables and isinstance(loss, Tensor) and loss.requires_grad:
                # Keras: the gradients are of optimizer.scale_loss(loss) (LossScaleOptimizer's dynamic scale,
                # loss_scale_factor); apply_gradients divides them by the same factor
                scaled = self.optimizer.scale_loss(loss) if hasattr(self.optimizer, "scale_loss") else loss
                grads = _dist.gradients(scaled, variables)  # lamina.grad; data-parallel: + the all-reduce
                bad = training.nonfinite_indices(grads)  # before the update: NaN never reaches the weights
                if bad:
                    raise training.NonFiniteUpdate(self, [variables[i] for i in bad])
                self.optimizer.apply_gradients(zip(grads, variables))
        with _dist.reduce_metrics(self._compile_state):  # data-parallel: metric states summed over ranks
            logs = self._step_metrics(local, x, y, y_pred, sample_weight)
        return self.get_metrics_result() if _dist.active() else logs

    def test_step(self, data):
        """Forward (training=False), ``compute_loss`` and the metrics for one batch. Returns the logs."""
        x, y, sample_weight = training.unpack_x_y_sample_weight(data)
        with self._compiled_flags(), no_grad():
            y_pred = self(x, training=False)
            loss = self._compute_loss(x, y, y_pred, sample_weight, False)
        with _dist.reduce_metrics(self._compile_state):
            logs = self._step_metrics(loss, x, y, y_pred, sample_weight)
        return self.get_metrics_result() if _dist.active() else logs

    def predict_step(self, data):
        x, _, _ = training.unpack_x_y_sample_weight(data)
        with no_grad():
            return self(x, training=False)

    def zero_grad(self, set_to_none=True):
        """Clear ``.grad`` of every weight of the model (what ``loss.backward()`` accumulates into), as
        torch's ``Module.zero_grad``: the PyTorch-style custom train_step calls it before each backward."""
        for w in self.weights:
            w.grad = None if set_to_none or w.grad is None else w.grad * 0

    # ----- loops
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None, validation_split=0.0,
            validation_data=None, shuffle=True, class_weight=None, sample_weight=None, initial_epoch=0,
            steps_per_epoch=None, validation_steps=None, validation_batch_size=None, validation_freq=1):
        """Train for a number of epochs; returns a History (``history.history['loss']`` etc.)."""
        self._assert_compiled("fit")
        return training.fit(self, x, y, batch_size=batch_size, epochs=epochs, verbose=verbose, callbacks=callbacks,
                            validation_split=validation_split, validation_data=validation_data, shuffle=shuffle,
                            class_weight=class_weight, sample_weight=sample_weight, initial_epoch=initial_epoch,
                            steps_per_epoch=steps_per_epoch, validation_steps=validation_steps,
                            validation_batch_size=validation_batch_size, validation_freq=validation_freq)

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None,
                 callbacks=None, return_dict=False):
        """Loss and metrics over the data: a scalar (loss only), a list [loss, *metrics], or a dict."""
        self._assert_compiled("evaluate")
        logs = training.evaluate(self, x, y, batch_size=batch_size, verbose=verbose, sample_weight=sample_weight,
                                 steps=steps, callbacks=callbacks)
        return logs if return_dict else self._flatten_logs(logs)

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        """Outputs for x as NumPy arrays, computed in batches without recording a graph."""
        return training.predict(self, x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks)

    def train_on_batch(self, x, y=None, sample_weight=None, class_weight=None, return_dict=False):
        """One update on one batch; returns that batch's loss (and metrics)."""
        self._assert_compiled("train_on_batch")
        self.reset_metrics()
        sample_weight = training.apply_class_weight(y, sample_weight, class_weight)
        try:
            logs = training.pythonify_logs(
                self.train_step((training.to_batch(x), training.to_batch(y), training.to_batch(sample_weight))))
        except training.NonFiniteLoss as e:
            raise FloatingPointError(training.nonfinite_message(self, x, e.value, "train_on_batch")) from None
        except training.NonFiniteUpdate as e:
            raise FloatingPointError(f"train_on_batch: {e}") from None
        return logs if return_dict else self._flatten_logs(logs)

    def test_on_batch(self, x, y=None, sample_weight=None, return_dict=False):
        self._assert_compiled("test_on_batch")
        self.reset_metrics()
        logs = training.pythonify_logs(
            self.test_step((training.to_batch(x), training.to_batch(y), training.to_batch(sample_weight))))
        return logs if return_dict else self._flatten_logs(logs)

    def predict_on_batch(self, x):
        return training.to_numpy_structure(self.predict_step((training.to_batch(x),)))

    def _flatten_logs(self, logs):
        """The logs as Keras's evaluate lists them: loss, the compiled metrics in compile order (one output)
        and the per-output losses, then every other logged value by name (for several outputs, the
        compiled metrics come there, as in Keras); a single value alone."""
        names = []
        for m in self.metrics:
            if isinstance(m, training.CompileMetrics):
                if not m._state.output_trackers:  # one output
                    names.extend(n for n, _ in m._state.named_metrics())
            else:
                names.append(m.name)
        values = [logs[k] for k in names if k in logs]
        values += [logs[k] for k in sorted(logs) if k not in names]
        return values[0] if len(values) == 1 else values

    # ----- weights files and config
    def save(self, filepath, overwrite=True, **kwargs):
        """One zip file: the JSON config and the weights (safetensors); no pickle."""
        if not _dist.is_chief():
            return None  # data-parallel: every rank holds the same model; rank 0 writes it
        return MODEL_FILES["save_model"](self, filepath, overwrite=overwrite, **kwargs)

    def export(self, filepath, format="onnx", verbose=True, **kwargs):
        """Write an inference artifact of the model: ``format="onnx"`` writes an ONNX graph (needs the onnx
        package: pip install 'lamina[onnx]'), with a dynamic batch axis and the model's input/output names."""
        from ..registry import EXPORTERS
        if format not in EXPORTERS:
            raise ValueError(f"Unrecognized format={format!r}. Supported formats: {', '.join(sorted(EXPORTERS))}.")
        path = EXPORTERS[format](self, filepath, **kwargs)
        if verbose:
            print(f"Saved artifact at '{path}'.")
        return path

    def save_weights(self, filepath, overwrite=True):
        if not _dist.is_chief():
            return None  # data-parallel: rank 0 writes
        return MODEL_FILES["save_weights"](self, filepath, overwrite=overwrite)

    def load_weights(self, filepath, skip_mismatch=False, **kwargs):
        return MODEL_FILES["load_weights"](self, filepath, skip_mismatch=skip_mismatch)

    def get_config(self):
        config = Layer.get_config(self)
        config.pop("batch_input_shape", None)
        return config

    @classmethod
    def from_config(cls, config, custom_objects=None):
        if cls is Model:
            functional = get_registered_object("Functional")
            return functional.from_config(config, custom_objects=custom_objects)
        config = dict(config)
        try:
            return cls(**config)
        except TypeError as e:
            raise TypeError(f"Could not rebuild {cls.__name__} from its config: {e}. A subclassed model must "
                            "accept its get_config() keys in __init__ (override get_config/from_config).") from e

    def to_json(self, **kwargs):
        return json.dumps({"class_name": type(self).__name__, "config": self.get_config()}, **kwargs)

    def __repr__(self):
        return f"<{type(self).__name__} name={self.name}, built={self.built}>"


def _make_functional(cls, functional):
    """Rebase a Model subclass on Functional (where it named Model as a base), as Keras does for a subclass
    called with inputs and outputs: its methods then override Functional's, and Functional's call runs the graph."""
    if cls is Model or cls is functional or not issubclass(cls, Model) or issubclass(cls, functional):
        return
    for base in cls.__bases__:
        _make_functional(base, functional)
    cls.__bases__ = tuple(functional if base is Model else base for base in cls.__bases__)


def _to_float(value):
    """A Python float from a scalar loss (Tensor, array or number)."""
    if isinstance(value, Tensor):
        value = value.numpy()
    return float(np.asarray(value).reshape(()) if np.ndim(value) == 0 else np.asarray(value).mean())


def _nest_map_shapes(fn, shapes):
    if isinstance(shapes, dict):
        return {k: _nest_map_shapes(fn, v) for k, v in shapes.items()}
    if isinstance(shapes, (list, tuple)) and shapes and isinstance(shapes[0], (list, tuple, dict)):
        return [_nest_map_shapes(fn, s) for s in shapes]
    return fn(shapes)


def _serialize_metric(m):
    if m is None or isinstance(m, str):
        return m
    try:
        return serialize(m)
    except TypeError:
        return getattr(m, "__name__", repr(m))


def _serialize_loss(loss):
    """A loss for the compile config. A plain function (Keras accepts one in compile) is saved by name, as
    Keras saves it; loading the file then finds it in the registry (register_keras_serializable)."""
    try:
        return losses_mod.serialize(loss)
    except ValueError:
        return {"module": getattr(loss, "__module__", None), "class_name": "function",
                "config": getattr(loss, "__name__", "loss"), "registered_name": "function"}


def _deserialize_loss(value):
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value.get("class_name") == "function":
        fn = get_registered_object(str(value.get("config")))
        if fn is None or not callable(fn):
            raise ValueError(f"Could not locate the loss function {value.get('config')!r}: register it with "
                             "lamina.saving.register_keras_serializable() (or pass it in custom_objects).")
        return fn
    return losses_mod.deserialize(value)


def _serialize_structure(value, fn):
    if value is None:
        return None
    if isinstance(value, dict):
        return {k: _serialize_structure(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_serialize_structure(v, fn) for v in value]
    return fn(value)


def _deserialize_structure(value, fn):
    if value is None:
        return None
    if isinstance(value, dict) and "class_name" not in value:
        return {k: _deserialize_structure(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_deserialize_structure(v, fn) for v in value]
    return fn(value)


__all__ = ["Model"]
