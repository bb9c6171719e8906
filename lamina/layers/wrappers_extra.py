"""Wrapper, SpectralNormalization, Pipeline, ReversibleEmbedding and keras.layers.serialize/deserialize.

SpectralNormalization (Miyato et al. 2018) keeps a wrapped layer's kernel at spectral norm ~1, which tames
GAN discriminators: during training each call runs power_iterations steps of the power method on the kernel
reshaped to (-1, out), v = normalize(u W^T), u = normalize(v W), sigma = v W u^T, and assigns W / sigma to
the kernel and u to ``vector_u`` (a non-trainable weight) before running the layer, as Keras does.
"""
import numpy as np

from .. import backend, initializers, ops
from ..registry import serialize as _serialize
from ..tensor import Tensor
from .core import Embedding
from .layer import InputSpec, Layer
from .rnn import _deserialize

__all__ = ["Wrapper", "SpectralNormalization", "Pipeline", "ReversibleEmbedding", "serialize", "deserialize"]


def serialize(layer):
    """A layer's {'class_name', 'config'} dict (keras.layers.serialize)."""
    return _serialize(layer)


def deserialize(config, custom_objects=None):
    """The layer described by a serialize() dict (keras.layers.deserialize)."""
    if custom_objects:
        from ..registry import get_registered_object
        cls = get_registered_object(config["class_name"], custom_objects)
        if cls is not None:
            return cls.from_config(dict(config.get("config", {})))
    return _deserialize(config)


class Wrapper(Layer):
    """Base of layers that wrap another layer (``self.layer``): built with the wrapper, saved inside it."""

    def __init__(self, layer, **kwargs):
        if isinstance(layer, dict):
            layer = _deserialize(layer)
        if not isinstance(layer, Layer):
            raise ValueError(f"{type(self).__name__}: `layer` must be a Layer instance. Received: layer={layer!r}")
        super().__init__(**kwargs)
        self.layer = layer

    def build(self, input_shape=None):
        if not self.layer.built:
            self.layer.build(input_shape)
            self.layer.built = True
        self.built = True

    def call(self, inputs, *args, **kwargs):
        return self.layer(inputs, *args, **kwargs)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("layer"), dict):
            config["layer"] = _deserialize(config["layer"])
        return cls(**config)


class SpectralNormalization(Wrapper):
    """Spectral normalisation of a wrapped layer's ``kernel`` (or ``embeddings``), updated in training calls.

    Weights: the wrapped layer's, plus vector_u (1, out) ~ TruncatedNormal(0.02), not trainable.
    """

    def __init__(self, layer, power_iterations=1, **kwargs):
        super().__init__(layer, **kwargs)
        if not isinstance(power_iterations, (int, np.integer)) or power_iterations <= 0:
            raise ValueError(f"SpectralNormalization '{self.name}': power_iterations must be a positive int. "
                             f"Received: power_iterations={power_iterations!r}")
        self.power_iterations = int(power_iterations)
        # the wrapped layer's rank check before build (its build, called directly, would meet a 0-d input first)
        self.input_spec = layer.input_spec if isinstance(layer.input_spec, InputSpec) else InputSpec(min_ndim=1)

    def build(self, input_shape):
        super().build(input_shape)
        self.input_spec = InputSpec(min_ndim=1, axes={-1: input_shape[-1]})
        kernel = getattr(self.layer, "kernel", None)
        if kernel is None:
            kernel = getattr(self.layer, "embeddings", None)
        if kernel is None:
            raise ValueError(f"{type(self.layer).__name__} object has no attribute 'kernel' nor 'embeddings'")
        self._kernel = kernel
        self.vector_u = self.add_weight(shape=(1, kernel.shape[-1]),
                                        initializer=initializers.TruncatedNormal(stddev=0.02),
                                        trainable=False, name="vector_u")

    @property
    def kernel(self):
        return self._kernel

    def normalized_weights(self):
        """(new vector_u, the kernel divided by its estimated largest singular value), as arrays."""
        xp = backend.get_array_module(self._kernel.data)
        k = self._kernel.data
        w = k.reshape(-1, k.shape[-1]).astype(np.float64)
        u = self.vector_u.data.astype(np.float64)
        eps = 1e-12
        for _ in range(self.power_iterations):
            v = u @ w.T
            v = v / xp.maximum(xp.sqrt((v * v).sum()), eps)
            u = v @ w
            u = u / xp.maximum(xp.sqrt((u * u).sum()), eps)
        sigma = (v @ w @ u.T)[0, 0]
        return u.astype(self.vector_u.dtype), (k / sigma).astype(k.dtype)

    def call(self, inputs, training=False):
        if training and bool((self._kernel.data != 0).any()):
            u, k = self.normalized_weights()
            self.vector_u.assign(u)
            self._kernel.assign(k)
        y = self.layer(inputs)
        return y if y.dtype == inputs.dtype or not np.issubdtype(inputs.dtype, np.floating) else \
            ops.cast(y, inputs.dtype)


class Pipeline(Layer):
    """Applies its layers one after another (Keras's preprocessing Pipeline); augmentation layers in it run
    only in training. ``layers`` keeps them in order."""

    def __init__(self, layers, name=None, **kwargs):
        super().__init__(name=name, **kwargs)
        self._pipeline = [(_deserialize(l) if isinstance(l, dict) else l) for l in layers]

    @property
    def layers(self):
        return list(self._pipeline)

    def call(self, inputs, training=True):
        x = inputs
        for layer in self._pipeline:
            x = layer(x, training=training) if "training" in _call_args(layer) else layer(x)
        return x

    def compute_output_shape(self, input_shape):
        for layer in self._pipeline:
            input_shape = layer.compute_output_shape(input_shape)
        return input_shape

    def get_config(self):
        config = super().get_config()
        config["layers"] = [_serialize(l) for l in self._pipeline]
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["layers"] = [(_deserialize(l) if isinstance(l, dict) else l) for l in config["layers"]]
        return cls(**config)


def _call_args(layer):
    import inspect
    return inspect.signature(layer.call).parameters


class ReversibleEmbedding(Embedding):
    """An Embedding that also maps vectors back to vocabulary logits: ``layer(x, reverse=True)`` gives
    x @ embeddings^T (tie_weights=True) or x @ reverse_embeddings (output_dim, input_dim), optionally
    soft-capped: cap * tanh(logits / cap). Used for tied input/output embeddings of language models."""

    def __init__(self, input_dim, output_dim, tie_weights=True, embeddings_initializer="uniform",
                 embeddings_regularizer=None, embeddings_constraint=None, mask_zero=False, reverse_dtype=None,
                 logit_soft_cap=None, **kwargs):
        super().__init__(input_dim, output_dim, embeddings_initializer=embeddings_initializer,
                         embeddings_regularizer=embeddings_regularizer, embeddings_constraint=embeddings_constraint,
                         mask_zero=mask_zero, **kwargs)
        self.tie_weights = bool(tie_weights)
        self.reverse_dtype = reverse_dtype
        self.logit_soft_cap = logit_soft_cap

    def build(self, input_shape=None):
        if self.built:
            return
        super().build(input_shape)
        if not self.tie_weights:
            self.built = False
            self.reverse_embeddings = self.add_weight(shape=(self.output_dim, self.input_dim),
                                                      initializer=self.embeddings_initializer,
                                                      name="reverse_embeddings")
            self.built = True

    def call(self, inputs, reverse=False):
        if not reverse:
            return super().call(inputs)
        x = inputs if np.issubdtype(inputs.dtype, np.floating) else ops.cast(inputs, self.compute_dtype)
        table = ops.transpose(self.embeddings) if self.tie_weights else self.reverse_embeddings
        if table.dtype != x.dtype:
            table = ops.cast(table, x.dtype)
        if self.reverse_dtype is not None:
            x, table = ops.cast(x, self.reverse_dtype), ops.cast(table, self.reverse_dtype)
        logits = ops.matmul(x, table)
        if self.logit_soft_cap is not None:
            cap = float(self.logit_soft_cap)
            logits = ops.tanh(logits / cap) * cap
        return logits

    def compute_output_shape(self, input_shape, reverse=False):
        if reverse:
            return tuple(input_shape[:-1]) + (self.input_dim,)
        return super().compute_output_shape(input_shape)

    def compute_output_spec(self, inputs, reverse=False):
        shape = self.compute_output_shape(inputs.shape, reverse=reverse)
        return shape, (self.compute_dtype if not reverse else (self.reverse_dtype or self.compute_dtype))
