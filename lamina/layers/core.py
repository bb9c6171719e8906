"""Core layers: Input, Dense, Activation, Lambda, Embedding.

The input layer only declares the shape of the data; a hidden or output Dense layer connects every
input to every unit (y = activation(x W + b)); the output layer's activation fits the task
(softmax for classes, linear for regression).
"""
import numpy as np

from .. import activations, initializers, ops
from ..ops.activations import relu as _relu
from ..ops.math import Linear as _Linear
from ..tensor import Tensor
from .layer import InputSpec, KerasTensor, Lambda, Layer, Node, unique_name  # noqa: F401  (Lambda: re-exported)


class InputLayer(Layer):
    """The entry of a functional model: holds the shape (without the batch axis) of the data fed in."""

    def __init__(self, shape=None, batch_size=None, dtype=None, sparse=None, batch_shape=None, name=None,
                 input_tensor=None, ragged=None, optional=False, **kwargs):
        kwargs.pop("input_shape", None)
        for arg, value in (("ragged", ragged), ("optional", optional)):
            if value:   # (Keras's ragged inputs need TensorFlow; optional ones may be fed None)
                raise NotImplementedError(f"InputLayer: lamina has no {arg} inputs; {arg} must be False. "
                                          f"Received: {arg}={value!r}")
        if "batch_input_shape" in kwargs:
            batch_shape = kwargs.pop("batch_input_shape")
        super().__init__(name=name or unique_name("input_layer"),
                         dtype=None if dtype in ("string", "str") else dtype, **kwargs)
        self.sparse, self.ragged, self.optional = bool(sparse), False, False
        if batch_shape is None:
            if shape is None:
                raise ValueError("InputLayer needs a shape, e.g. InputLayer(shape=(28, 28, 1)).")
            if isinstance(shape, int):
                shape = (shape,)
            batch_shape = (batch_size,) + tuple(shape)
        self.batch_shape = tuple(None if d is None else int(d) for d in batch_shape)
        # Keras's "string" inputs (text models starting with TextVectorization) are NumPy object arrays
        self._input_dtype = np.dtype(object if dtype in ("string", "str") else (dtype or "float32"))
        self.built = True
        tensor = KerasTensor(self.batch_shape, self._input_dtype, name=self.name, history=(self, 0, 0))
        self._inbound_nodes.append(Node(self, (), {}, tensor))
        self.output_tensor = tensor

    def call(self, inputs):
        return inputs

    def get_config(self):
        return {"batch_shape": self.batch_shape, "dtype": self._input_dtype.name, "sparse": self.sparse,
                "ragged": self.ragged, "name": self.name, "optional": self.optional}


def Input(shape=None, batch_size=None, dtype=None, sparse=None, batch_shape=None, name=None, tensor=None,
          ragged=None, optional=False):
    """A symbolic input tensor for the functional API: ``x = Input(shape=(32, 32, 3))``."""
    layer = InputLayer(shape=shape, batch_size=batch_size, dtype=dtype, sparse=sparse, batch_shape=batch_shape,
                       name=name, ragged=ragged, optional=optional)
    return layer.output_tensor


def _check_lora_rank(layer, rank):
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 1):
        raise ValueError(f"{type(layer).__name__} '{layer.name}': lora_rank must be a positive int or None. "
                         f"Received: lora_rank={rank!r}")


def _check_quantization_config(layer, quantization_config):
    if quantization_config is not None:
        raise NotImplementedError(f"{type(layer).__name__} '{layer.name}': lamina has no quantized layers; "
                                  f"quantization_config must be None. Received: {quantization_config!r}")


def lora_config(layer, config):
    """config with Keras's LoRA keys: lora_rank and lora_alpha (the rank when not given) only while LoRA is on
    (a rank given to the constructor, or enable_lora), as Keras writes them."""
    config.pop("lora_rank", None)
    config.pop("lora_alpha", None)
    if layer.lora_rank:
        config["lora_rank"] = layer.lora_rank
        config["lora_alpha"] = layer.lora_rank if layer.lora_alpha is None else layer.lora_alpha
    return config


def _enable_lora(layer, frozen, prefix, rank, lora_alpha, a_initializer, b_initializer, regularizer, constraint,
                 what_constraint):
    """Keras's enable_lora: freeze ``frozen`` (shape (..., k, cols)) and add factors A (..., k, rank) and
    B (rank, cols) named <prefix>_a/_b (B from zero); returns (A, B). ``layer._lora`` keeps (frozen, A, B)
    for lora_merged and for the .keras writer, which stores the merged weight in the frozen one's place, as
    Keras does. A constraint on the frozen weight is refused, as Keras refuses it (it could not hold for
    the merged one)."""
    what = f"{type(layer).__name__} '{layer.name}'"
    if constraint is not None:
        raise ValueError(f"{what}: LoRA is incompatible with {what_constraint} constraints; remove the "
                         f"`{what_constraint}_constraint` argument to enable LoRA.")
    if not layer.built:
        raise ValueError(f"{what}: build the layer before enable_lora().")
    if layer.lora_enabled:
        raise ValueError(f"{what}: LoRA is already enabled.")
    _check_lora_rank(layer, rank)
    *rows, cols = frozen.shape
    a = layer.add_weight(shape=tuple(rows) + (rank,), initializer=a_initializer, regularizer=regularizer,
                         name=f"{prefix}_a")
    b = layer.add_weight(shape=(rank, cols), initializer=b_initializer, regularizer=regularizer, name=f"{prefix}_b")
    frozen.trainable = False
    layer._sync_requires_grad()  # the frozen weight asks for no gradient
    layer.lora_enabled = True
    layer.lora_rank = rank
    layer.lora_alpha = lora_alpha if lora_alpha is not None else rank
    layer._lora = (frozen, a, b)
    return a, b


def lora_merged(layer):
    """A LoRA-enabled layer's frozen weight plus its update (lora_alpha / rank) * A @ B (A's leading axes,
    an EinsumDense kernel's, broadcast)."""
    frozen, a, b = layer._lora
    return frozen + ops.matmul(a, b) * (layer.lora_alpha / layer.lora_rank)


class LoraKernel:
    """What Dense and EinsumDense share for LoRA on their ``kernel`` (..., k, n): ``enable_lora`` (Keras's
    names: lora_kernel_a (..., k, rank), lora_kernel_b (rank, n)), the kernel the layer computes with, and
    Keras's weight order. The layer sets lora_enabled = False and calls enable_lora from build."""

    def enable_lora(self, rank, lora_alpha=None, a_initializer="he_uniform", b_initializer="zeros"):
        """Freeze the kernel and learn a rank-``rank`` update A @ B, B starting at zero (so the layer computes
        what it did); the bias stays trainable. As Keras's enable_lora."""
        self.lora_kernel_a, self.lora_kernel_b = _enable_lora(
            self, self.kernel, "lora_kernel", rank, lora_alpha, a_initializer, b_initializer,
            self.kernel_regularizer, self.kernel_constraint, "kernel")

    def effective_kernel(self):
        """The kernel the layer computes with: the kernel, plus the scaled LoRA update when enabled."""
        return lora_merged(self) if self.lora_enabled else self.kernel

    @property
    def weights(self):
        # Keras keeps creation order here (the frozen kernel and the bias first, then the LoRA factors).
        return self._tracked_own()

    def get_config(self):
        return lora_config(self, super().get_config())


class Dense(LoraKernel, Layer):
    """Fully connected layer: ``activation(inputs @ kernel + bias)`` over the last axis.

    Args: units, activation, use_bias, kernel/bias initializer, regularizer and constraint;
    lora_rank, lora_alpha: freeze the kernel and train a low-rank update ``(lora_alpha / rank) * A @ B``
    (A (in, rank), B (rank, units) starting at zero), as Keras's ``enable_lora``.
    Input shape (..., in) -> output shape (..., units). Parameters: in * units + units.
    Backward: dx = dy W^T, dW = x^T dy, db = sum(dy).
    A ``.keras`` file holds the kernel with the LoRA update merged in, as Keras writes it.
    """

    def __init__(self, units, activation=None, use_bias=True, kernel_initializer="glorot_uniform",
                 bias_initializer="zeros", kernel_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, bias_constraint=None, lora_rank=None,
                 lora_alpha=None, quantization_config=None, **kwargs):
        super().__init__(**kwargs)
        _check_quantization_config(self, quantization_config)
        if not isinstance(units, (int, np.integer)) or isinstance(units, bool) or units <= 0:
            raise ValueError(f"Dense '{self.name}': units must be a positive int. Received: units={units!r}")
        self.units = int(units)
        self.activation = activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer, self.bias_regularizer = kernel_regularizer, bias_regularizer
        self.kernel_constraint, self.bias_constraint = kernel_constraint, bias_constraint
        self.activity_regularizer = activity_regularizer
        self.input_spec = InputSpec(min_ndim=2)
        self.supports_masking = True
        _check_lora_rank(self, lora_rank)
        self.lora_rank, self.lora_alpha = lora_rank, lora_alpha
        self.lora_enabled = False

    def build(self, input_shape):
        in_dim = input_shape[-1]
        if in_dim is None:
            raise ValueError(f"Dense '{self.name}': the last axis of the input must be known. "
                             f"Received input_shape={tuple(input_shape)}")
        self.kernel = self.add_weight(shape=(in_dim, self.units), initializer=self.kernel_initializer,
                                      regularizer=self.kernel_regularizer, constraint=self.kernel_constraint,
                                      name="kernel")
        self.bias = self.add_weight(shape=(self.units,), initializer=self.bias_initializer,
                                    regularizer=self.bias_regularizer, constraint=self.bias_constraint,
                                    name="bias") if self.use_bias else None
        self.input_spec = InputSpec(min_ndim=2, axes={-1: in_dim})
        self.built = True
        if self.lora_rank:
            self.enable_lora(self.lora_rank, self.lora_alpha)

    def call(self, inputs):
        if inputs.dtype.kind not in "fc":  # integer or bool features: compute in the layer's float dtype
            self._refuse_non_numeric(inputs)
            inputs = ops.cast(inputs, self.compute_dtype)
        kernel = self.effective_kernel()
        relu = "relu" if self.activation is _relu else None   # (a ReLU is fused into the op)
        if type(inputs) is Tensor:   # the op itself: ops.linear's symbolic-argument test is for other callers (~0.7 us)
            y = _Linear.apply(inputs, kernel, self.bias, activation=relu)
        else:
            y = ops.linear(inputs, kernel, self.bias, activation=relu)
        return y if relu or self.activation is None else self.activation(y)  # (None once set by hand, as Keras)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        if config.get("activity_regularizer") is None:   # (Keras's Dense writes it only when set)
            config.pop("activity_regularizer", None)
        return config


class Activation(Layer):
    """Applies an activation function by name or callable: ``Activation('relu')``."""

    _numeric_inputs = True   # (an object array's None became NaN)

    def __init__(self, activation, **kwargs):
        super().__init__(**kwargs)
        self.activation = activations.get(activation)
        self.supports_masking = True

    def call(self, inputs):
        return self.activation(inputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


class Embedding(Layer):
    """Turns integer token ids into dense vectors: row ``ids[...]`` of a learned (input_dim, output_dim) table.

    A one-hot vector over a vocabulary of V words times a Dense kernel would pick one kernel row; the
    embedding does exactly that without building the one-hot vector.

    Args:
        input_dim: vocabulary size V (largest id + 1). output_dim: D, the length of each vector.
        embeddings_initializer ('uniform': U(-0.05, 0.05)), embeddings_regularizer, embeddings_constraint.
        mask_zero: id 0 is padding: the output's mask (``output._keras_mask``) is ``ids != 0``, read by
            the layers downstream (RNNs, attention, pooling); then id 0 must not be a real token.
        weights: an optional initial table (a (V, D) array or a list holding it).
        lora_rank, lora_alpha: train a low-rank update ``(lora_alpha / rank) * A @ B`` instead of the table.
        input_length: accepted for old Keras code and ignored.
    Input shape (...) of integer ids in [0, V) (whole-number floats are accepted and cast, as Keras does).
    Output shape (..., D), float32. Parameters: V * D.
    Forward: y[..., :] = embeddings[ids[...], :]. Backward: each gy row is added to the table row of its id.
    """

    def __init__(self, input_dim, output_dim, embeddings_initializer="uniform", embeddings_regularizer=None,
                 embeddings_constraint=None, mask_zero=False, weights=None, lora_rank=None, lora_alpha=None,
                 quantization_config=None, **kwargs):
        kwargs.pop("input_length", None)  # Keras 2's argument: shapes come from the data now
        super().__init__(**kwargs)
        _check_quantization_config(self, quantization_config)
        for arg, value in (("input_dim", input_dim), ("output_dim", output_dim)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"Embedding '{self.name}': {arg} must be a positive int. Received: {arg}={value!r}")
        self.input_dim, self.output_dim = int(input_dim), int(output_dim)
        self.embeddings_initializer = initializers.get(embeddings_initializer)
        self.embeddings_regularizer = embeddings_regularizer
        self.embeddings_constraint = embeddings_constraint
        self.mask_zero = bool(mask_zero)
        self.supports_masking = self.mask_zero
        self.autocast = False  # ids must not be cast to float32
        _check_lora_rank(self, lora_rank)
        self.lora_rank, self.lora_alpha = lora_rank, lora_alpha
        self.lora_enabled = False
        if weights is not None:
            self.build()
            if not (isinstance(weights, list) and len(weights) == 1):
                weights = [weights]
            self.set_weights(weights)

    def build(self, input_shape=None):
        if self.built:
            return
        self._embeddings = self.add_weight(shape=(self.input_dim, self.output_dim),
                                           initializer=self.embeddings_initializer,
                                           regularizer=self.embeddings_regularizer,
                                           constraint=self.embeddings_constraint, name="embeddings")
        self.built = True
        if self.lora_rank:
            self.enable_lora(self.lora_rank, self.lora_alpha)

    def enable_lora(self, rank, lora_alpha=None, a_initializer="he_uniform", b_initializer="zeros"):
        """Freeze the table and learn a rank-``rank`` update A (V, r) @ B (r, D), B starting at zero."""
        self.lora_embeddings_a, self.lora_embeddings_b = _enable_lora(
            self, self._embeddings, "lora_embeddings", rank, lora_alpha, a_initializer, b_initializer,
            self.embeddings_regularizer, self.embeddings_constraint, "embeddings")

    @property
    def embeddings(self):
        return lora_merged(self) if self.lora_enabled else self._embeddings

    @property
    def weights(self):
        # Keras keeps creation order here (the frozen table first, then the LoRA factors).
        return self._tracked_own()

    def _ids(self, inputs):
        """Integer ids from the input: whole-number floats are cast (as Keras casts them); others refused."""
        x = inputs.data
        if x.dtype.kind in "iu":
            ids = x
        elif x.dtype.kind in "fb":
            ids = x.astype("int64")
            if x.dtype.kind == "f" and ids.size and bool((ids != x).any()):
                bad = x[ids != x].reshape(-1)[0]
                raise ValueError(f"Embedding '{self.name}': expected integer token ids in [0, {self.input_dim}), "
                                 f"received a {x.dtype} input of shape {tuple(x.shape)} holding non-integer "
                                 f"values such as {float(bad)!r}.")
        else:
            raise ValueError(f"Embedding '{self.name}': expected integer token ids in [0, {self.input_dim}), "
                             f"received an input of dtype {x.dtype} and shape {tuple(x.shape)}.")
        if ids.size:
            lo, hi = int(ids.min()), int(ids.max())
            if lo < 0 or hi >= self.input_dim:
                raise ValueError(f"Embedding '{self.name}': token ids must be in [0, {self.input_dim}) "
                                 f"(input_dim={self.input_dim}); received ids from {lo} to {hi} in an input of "
                                 f"shape {tuple(x.shape)}.")
        return ids

    def call(self, inputs):
        return ops.embedding(self._ids(inputs), self.embeddings)

    def compute_mask(self, inputs, mask=None):
        if not self.mask_zero:
            return None
        data = inputs.data if isinstance(inputs, Tensor) else np.asarray(inputs)
        return Tensor(data != 0)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.output_dim,)

    def _output_dtype(self, inputs):
        return self.compute_dtype  # float vectors, whatever the (integer) dtype of the ids

    def get_config(self):
        config = super().get_config()  # drops "input_dim" (a base-layer argument elsewhere): put it back
        config.pop("weights", None)
        config.pop("input_length", None)
        config.setdefault("activity_regularizer", None)   # (Keras's Embedding writes it always)
        base = {k: config.pop(k) for k in ("name", "trainable", "dtype") if k in config}
        return lora_config(self, {**base, "input_dim": self.input_dim, **config})


__all__ = ["InputLayer", "Input", "Dense", "Activation", "Lambda", "Embedding"]
