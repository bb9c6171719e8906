"""``keras.distillation``: knowledge distillation, a small student model trained to match a large teacher's outputs
(or inner features) as well as the labels, with Keras 3.15's names, arguments and numbers.

    distiller = Distiller(teacher, student, LogitsDistillation(temperature=3.0, loss=keras.losses.KLDivergence()),
                          student_loss_weight=0.5)
    distiller.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    distiller.fit(x, y)                       # trains the student; the teacher is frozen
    distiller.student.predict(x)

The loss of a step is ``w * student_loss + (1 - w) * sum_i weight_i * distillation_loss_i`` (w the
``student_loss_weight``); fit logs it as 'loss' and 'total_loss', and its two parts as 'student_loss' and
'distillation_loss'. ``LogitsDistillation`` compares the teacher's and the student's final outputs, both divided by
the ``temperature``: a ``KLDivergence`` loss object compares their softmaxes and is scaled by temperature**2 (Hinton
et al.); any other loss, the ``"kl_divergence"`` name included (a function, as Keras resolves it), takes the scaled
outputs as they are. ``FeatureDistillation`` compares two layers' outputs (``teacher_layer_name`` /
``student_layer_name``, Functional or Sequential models), or the final outputs without names.
"""
from . import losses as losses_mod
from . import metrics as metrics_mod
from . import ops, tree
from .models import Model, Sequential
from .registry import register
from .saving import deserialize_keras_object, serialize_keras_object

__all__ = ["DistillationLoss", "FeatureDistillation", "LogitsDistillation", "Distiller"]


def _loss_function(item):
    """A loss as Keras's distillation takes it: None, a name (what losses.get gives for it), or the object."""
    if item is None:
        return None
    if isinstance(item, str):
        fn = losses_mod.get(item)
        if fn is None:
            raise ValueError(f"Unknown loss function: '{item}'.")
        return fn
    return item


def _losses(spec, what):
    resolved = tree.map_structure(_loss_function, spec)
    if all(fn is None for fn in tree.flatten(resolved)):
        raise ValueError(what)
    return resolved


def _sum(values):
    flat = [ops.convert_to_tensor(v, "float32") for v in tree.flatten(values)]
    return ops.sum(ops.stack(flat)) if len(flat) > 1 else ops.sum(flat[0])


class DistillationLoss:
    """Base of the distillation losses: ``compute_loss(teacher_outputs, student_outputs)`` gives a scalar;
    ``validate_outputs`` and ``validate_model_compatibility`` check what it will get."""

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        raise NotImplementedError("Subclasses must implement compute_loss")

    def validate_outputs(self, teacher_outputs, student_outputs):
        tree.assert_same_structure(teacher_outputs, student_outputs)

    def validate_model_compatibility(self, teacher, student):
        pass


def _has_graph(model):
    return getattr(model, "inputs", None) is not None


class FeatureDistillation(DistillationLoss):
    """The mean of ``loss`` (default mean squared error) between a teacher layer's output and a student layer's, or
    between the final outputs when no layer is named."""

    def __init__(self, loss="mse", teacher_layer_name=None, student_layer_name=None):
        self.teacher_layer_name = teacher_layer_name
        self.student_layer_name = student_layer_name
        self.loss = _losses(loss, "The `loss` argument in `FeatureDistillation` must contain at least one non-`None` "
                                  "value.")

    def validate_model_compatibility(self, teacher, student):
        if self.teacher_layer_name is not None or self.student_layer_name is not None:
            missing = [name for name, m in (("teacher", teacher), ("student", student)) if not _has_graph(m)]
            if missing:
                raise ValueError(f"FeatureDistillation with specific layer names requires Functional or Sequential "
                                 f"models. The {' and '.join(missing)} model(s) appear to be subclassed (no symbolic "
                                 "inputs/outputs). Either use Functional/Sequential models, or use FeatureDistillation "
                                 "without layer names (to distill final outputs only), or use LogitsDistillation "
                                 "instead.")
        for who, model, name in (("teacher", teacher, self.teacher_layer_name),
                                 ("student", student, self.student_layer_name)):
            if name is not None:
                try:
                    model.get_layer(name=name)
                except ValueError as e:
                    raise ValueError(f"In {who} model: {e}") from None

    def validate_outputs(self, teacher_outputs, student_outputs):
        super().validate_outputs(teacher_outputs, student_outputs)
        try:
            tree.assert_same_structure(self.loss, teacher_outputs)
        except ValueError as e:
            raise ValueError(f"Loss structure mismatch. Error: {e}") from None

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        def one(fn, t, s):
            return 0.0 if fn is None else ops.mean(fn(t, s))
        return _sum(tree.map_structure(one, self.loss, teacher_outputs, student_outputs))

    def get_config(self):
        return {"loss": serialize_keras_object(self.loss), "teacher_layer_name": self.teacher_layer_name,
                "student_layer_name": self.student_layer_name}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["loss"] = losses_mod.deserialize(config["loss"])
        return cls(**config)


class LogitsDistillation(DistillationLoss):
    """The teacher's and the student's final outputs (logits) compared at a ``temperature`` (see the module's
    docstring for what each kind of ``loss`` does with them)."""

    def __init__(self, temperature=3.0, loss="kl_divergence"):
        self.temperature = temperature
        self.loss = _losses(loss, "At least one loss must be non-`None`.")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise ValueError(f"temperature must be a number, got {type(temperature)}")
        if temperature <= 0.0:
            raise ValueError("temperature must be positive.")

    def compute_loss(self, teacher_outputs, student_outputs, **kwargs):
        t = self.temperature

        def one(fn, teacher, student):
            if fn is None:
                return 0.0
            teacher, student = ops.divide(teacher, t), ops.divide(student, t)
            if isinstance(fn, losses_mod.KLDivergence):   # (probabilities, and the temperature's square)
                return ops.mean(fn(ops.softmax(teacher, axis=-1), ops.softmax(student, axis=-1))) * (t ** 2)
            return ops.mean(fn(teacher, student))
        return _sum(tree.map_structure(one, self.loss, teacher_outputs, student_outputs))

    def get_config(self):
        return {"temperature": self.temperature, "loss": serialize_keras_object(self.loss)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["loss"] = losses_mod.deserialize(config["loss"])
        return cls(**config)


for _cls in (DistillationLoss, FeatureDistillation, LogitsDistillation):
    register(_cls)


def _check_shapes(a, b, context):
    a, b = tuple(a), tuple(b)
    if len(a) != len(b):
        raise ValueError(f"Teacher and student {context} shapes have different dimensions. Teacher: {a}, Student: "
                         f"{b}.")
    if any(x is not None and y is not None and x != y for x, y in zip(a, b)):
        raise ValueError(f"Teacher and student {context} shapes are incompatible. Teacher: {a}, Student: {b}. All "
                         "dimensions must match.")


class Distiller(Model):
    """A model training ``student`` on its labels and on ``teacher`` (frozen) through ``distillation_losses`` (one
    or a list, weighted by ``distillation_loss_weights``); ``student_loss_weight`` in [0, 1] shares the loss between
    the labels and the teacher. Its call is the student's."""

    def __init__(self, teacher, student, distillation_losses, distillation_loss_weights=None, student_loss_weight=0.5,
                 name="distiller", **kwargs):
        super().__init__(name=name, **kwargs)
        for who, m in (("Teacher", teacher), ("Student", student)):
            if not isinstance(m, Model):
                raise ValueError(f"{who} must be a keras.Model, got {type(m)}")
        if _has_graph(teacher) and _has_graph(student):
            tree.map_structure(lambda a, b: _check_shapes(a.shape, b.shape, "input"), teacher.inputs, student.inputs)
            tree.map_structure(lambda a, b: _check_shapes(a.shape, b.shape, "output"), teacher.outputs,
                               student.outputs)
            for what, a, b in (("input", teacher.inputs, student.inputs), ("output", teacher.outputs,
                                                                           student.outputs)):
                tree.map_structure(lambda p, q, what=what: self._same_dtype(p.dtype, q.dtype, what), a, b)
        self.teacher, self.student = teacher, student
        if isinstance(student_loss_weight, bool) or not isinstance(student_loss_weight, (int, float)):
            raise ValueError(f"student_loss_weight must be a number, got {type(student_loss_weight)}")
        if not 0.0 <= student_loss_weight <= 1.0:
            raise ValueError(f"student_loss_weight must be between 0.0 and 1.0, got {student_loss_weight}")
        self.student_loss_weight = student_loss_weight
        if distillation_losses is None:
            raise ValueError("'distillation_losses' cannot be `None`. Provide a distillation loss (e.g., "
                             "LogitsDistillation or FeatureDistillation) or a list of distillation losses.")
        if not isinstance(distillation_losses, (list, tuple)):
            distillation_losses, distillation_loss_weights = [distillation_losses], [1.0]
        elif distillation_loss_weights is None:
            distillation_loss_weights = [1.0] * len(distillation_losses)
        elif len(distillation_loss_weights) != len(distillation_losses):
            raise ValueError(f"Number of distillation_loss_weights ({len(distillation_loss_weights)}) must match "
                             f"number of distillation_losses ({len(distillation_losses)})")
        self.distillation_losses = list(distillation_losses)
        self.distillation_loss_weights = list(distillation_loss_weights)
        for loss in self.distillation_losses:
            loss.validate_model_compatibility(teacher, student)
        self._teacher_features = self._extractor(teacher, "teacher_layer_name")
        self._student_features = self._extractor(student, "student_layer_name")
        teacher.trainable = False
        self.student_loss_tracker = metrics_mod.Mean(name="student_loss")
        self.distillation_loss_tracker = metrics_mod.Mean(name="distillation_loss")
        self.total_loss_tracker = metrics_mod.Mean(name="total_loss")

    @staticmethod
    def _same_dtype(a, b, context):
        if a != b:
            raise ValueError(f"Teacher and student {context} dtypes must match. Teacher: {a}, Student: {b}.")

    def _extractor(self, model, attribute):
        """A model giving {"final_output": the model's output, each named layer: its output}, or None when no
        distillation loss names a layer of this model."""
        names = []
        for loss in self.distillation_losses:
            name = getattr(loss, attribute, None)
            if name and name not in names:
                names.append(name)
        if not names:
            return None
        if not _has_graph(model):
            raise ValueError(f"Cannot create feature extractor for {model.name}. The model has no symbolic inputs "
                             "attribute.")
        final = model.layers[-1].output if isinstance(model, Sequential) else model.output
        outputs = {"final_output": final, **{n: model.get_layer(name=n).output for n in names}}
        return Model(inputs=model.inputs, outputs=outputs, name=f"{model.name}_multi_feature_extractor")

    def compile(self, optimizer="adam", loss=None, metrics=None, **kwargs):
        """The optimizer and the student's loss on the labels (required), and metrics of the student's outputs."""
        if loss is None:
            raise ValueError("'loss' cannot be `None`.")
        if metrics is not None and not isinstance(metrics, (list, tuple)):
            raise ValueError(f"metrics must be a list or tuple, got {type(metrics)}")
        self._student_loss = tree.map_structure(_loss_function, loss)
        self._student_loss_for_serialization = loss
        super().compile(optimizer=optimizer, loss=None, metrics=metrics, **kwargs)

    def call(self, inputs, training=None, **kwargs):
        return self.student(inputs, training=training, **kwargs)

    def _features(self, loss, features, teacher):
        name = getattr(loss, "teacher_layer_name" if teacher else "student_layer_name", None) or "final_output"
        if name not in features:
            raise ValueError(f"Layer '{name}' not found in extracted features. Available: {list(features)}")
        return features[name]

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if y_pred is None:
            y_pred = self(x, training=training)
        student_loss = 0.0
        if self.student_loss_weight > 0.0 and y is not None:
            values = tree.flatten(tree.map_structure(lambda fn, t, p: fn(t, p), self._student_loss, y, y_pred))
            student_loss = ops.sum(ops.stack(values)) if len(values) > 1 else values[0]
            if len(getattr(student_loss, "shape", ())) > 0:
                student_loss = ops.mean(student_loss)
        distillation_loss = 0.0
        if self.student_loss_weight < 1.0:
            teacher = (self._teacher_features(x, training=False) if self._teacher_features is not None
                       else {"final_output": self.teacher(x, training=False)})
            student = (self._student_features(x, training=True) if self._student_features is not None
                       else {"final_output": y_pred})
            for loss, weight in zip(self.distillation_losses, self.distillation_loss_weights):
                if getattr(loss, "teacher_layer_name", None) is not None:
                    t_out = self._features(loss, teacher, True)
                    s_out = self._features(loss, student, False)
                else:
                    t_out, s_out = teacher["final_output"], y_pred
                loss.validate_outputs(t_out, s_out)
                value = loss.compute_loss(t_out, s_out)
                if len(getattr(value, "shape", ())) > 0:
                    raise ValueError(f"Distillation loss {type(loss).__name__} returned a non-scalar loss with shape "
                                     f"{value.shape}. The compute_loss method must return a scalar tensor.")
                distillation_loss = ops.add(distillation_loss, ops.multiply(weight, value))
        w = self.student_loss_weight
        total = ops.add(ops.multiply(w, student_loss), ops.multiply(1.0 - w, distillation_loss))
        self.student_loss_tracker.update_state(student_loss)
        self.distillation_loss_tracker.update_state(distillation_loss)
        self.total_loss_tracker.update_state(total)
        return total

    def get_config(self):
        config = super().get_config()
        config.update({"teacher": serialize_keras_object(self.teacher), "student": serialize_keras_object(self.student),
                       "distillation_losses": [serialize_keras_object(d) for d in self.distillation_losses],
                       "distillation_loss_weights": self.distillation_loss_weights,
                       "student_loss_weight": self.student_loss_weight})
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in ("teacher", "student"):
            config[key] = deserialize_keras_object(config[key])
        config["distillation_losses"] = [deserialize_keras_object(d) for d in config["distillation_losses"]]
        return cls(**config)
