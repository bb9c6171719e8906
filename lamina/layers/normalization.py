"""Normalisation layers: BatchNormalization, LayerNormalization, GroupNormalization, InstanceNormalization.

Each rescales activations to zero mean and unit variance over some axes, then applies a learned
per-feature scale ``gamma`` and offset ``beta``. The math lives in ``lamina.ops.normalization`` (fused ops with
hand-written backward); the layers own the weights and, for batch norm, the moving statistics.
"""
from .. import backend, initializers, ops
from .layer import InputSpec, Layer

__all__ = ["BatchNormalization", "LayerNormalization", "GroupNormalization", "InstanceNormalization"]

# synchronized batch norm: lamina.distribution (a floor above) registers here a function returning the
# reducer of the running data-parallel step, or None (no distribution, one rank, or not inside a step)
_SYNC_REDUCER = None


def set_sync_reducer(source):
    """Register ``source()`` -> reducer or None (see ops.batch_norm_training); None unregisters."""
    global _SYNC_REDUCER
    _SYNC_REDUCER = source


class BatchNormalization(Layer):
    """Normalise each channel with the statistics of the batch (training) or moving averages (inference).

    Args (Keras 3): axis=-1 (the channel axis), momentum=0.99, epsilon=1e-3, center, scale,
    beta/gamma/moving_mean/moving_variance initializers, beta/gamma regularizers and constraints,
    synchronized=False: under a lamina.distribution DataParallel run on several ranks, the training
    statistics are those of the global batch (all ranks' slices) and the backward pass all-reduces the two
    per-channel sums it needs, so N ranks equal one process with the same global batch; without a
    distribution (or on one rank) it changes nothing. Keras 3 builds it on TensorFlow only.
    renorm, renorm_clipping, renorm_momentum: Keras's batch renormalization, accepted off only (renorm=True
    raises NotImplementedError).
    Weights: gamma (C,), beta (C,), moving_mean (C,), moving_variance (C,) (the last two not trainable).
    Parameters: 4 C (2 C trainable). Input and output shape: the same, any rank.
    Forward: training=True: y = (x - mean_B) / sqrt(var_B + epsilon) * gamma + beta with the batch mean
    and biased variance, and moving = moving * momentum + batch * (1 - momentum);
    otherwise the moving statistics are used and nothing is updated. A frozen layer (trainable=False)
    always runs in inference mode, as in Keras 3.
    """

    _cast_integer_inputs = True  # bool/int inputs compute in the layer's float dtype, as Keras

    def __init__(self, axis=-1, momentum=0.99, epsilon=1e-3, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones", moving_mean_initializer="zeros",
                 moving_variance_initializer="ones", beta_regularizer=None, gamma_regularizer=None,
                 beta_constraint=None, gamma_constraint=None, synchronized=False, renorm=False, renorm_clipping=None,
                 renorm_momentum=0.99, **kwargs):
        super().__init__(**kwargs)
        if renorm:
            raise NotImplementedError(f"BatchNormalization '{self.name}': lamina has no batch renormalization "
                                      "(renorm=True); use renorm=False.")
        # (Keras's renorm arguments, kept for its configs; without renorm they change nothing)
        self.renorm, self.renorm_clipping, self.renorm_momentum = False, renorm_clipping, renorm_momentum
        if isinstance(axis, (list, tuple)):
            if len(axis) != 1:
                raise ValueError(f"BatchNormalization '{self.name}': axis must be one int (the channel axis). "
                                 f"Received: axis={axis!r}")
            axis = axis[0]
        self.axis = int(axis)
        self.momentum, self.epsilon = float(momentum), float(epsilon)
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"BatchNormalization '{self.name}': momentum must be in [0, 1]. "
                             f"Received: momentum={momentum!r}")
        self.center, self.scale, self.synchronized = bool(center), bool(scale), bool(synchronized)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self.beta_regularizer, self.gamma_regularizer = beta_regularizer, gamma_regularizer
        self.beta_constraint, self.gamma_constraint = beta_constraint, gamma_constraint
        self.gamma = self.beta = None
        self.supports_masking = True

    def build(self, input_shape):
        rank = len(input_shape)
        if not -rank <= self.axis < rank:
            raise ValueError(f"BatchNormalization '{self.name}': axis={self.axis} is out of range for an input "
                             f"of shape {tuple(input_shape)}.")
        dim = input_shape[self.axis]
        if dim is None:
            raise ValueError(f"BatchNormalization '{self.name}': the channel axis {self.axis} must have a known "
                             f"size. Received input_shape={tuple(input_shape)}")
        shape = (dim,)
        if self.scale:
            self.gamma = self.add_weight(shape=shape, initializer=self.gamma_initializer, name="gamma",
                                         regularizer=self.gamma_regularizer, constraint=self.gamma_constraint)
        if self.center:
            self.beta = self.add_weight(shape=shape, initializer=self.beta_initializer, name="beta",
                                        regularizer=self.beta_regularizer, constraint=self.beta_constraint)
        self.moving_mean = self.add_weight(shape=shape, initializer=self.moving_mean_initializer,
                                           trainable=False, name="moving_mean")
        self.moving_variance = self.add_weight(shape=shape, initializer=self.moving_variance_initializer,
                                               trainable=False, name="moving_variance")
        self.input_spec = InputSpec(ndim=rank, axes={self.axis: dim})
        self.built = True

    def call(self, inputs, training=None, mask=None):
        if mask is not None and len(mask.shape) != len(inputs.shape) - 1:
            raise ValueError(f"BatchNormalization '{self.name}': the mask must have one axis less than the "
                             f"inputs. Received: mask.shape={tuple(mask.shape)}, inputs.shape={inputs.shape}")
        # an empty batch (no entries per channel) has no statistics: like PyTorch, the output is empty and
        # the moving statistics stay as they are (Keras 3.15 turns them into NaN), via the inference path
        empty = inputs.shape[self.axis] > 0 and 0 in inputs.shape
        if training and self.trainable and not empty:
            m = None if mask is None else backend.array_of(mask)
            reducer = _SYNC_REDUCER() if self.synchronized and _SYNC_REDUCER is not None else None
            y, mean, var = ops.batch_norm_training(inputs, self.gamma, self.beta, self.epsilon, self.axis, mask=m,
                                                   reducer=reducer)
            # Keras's rule, with the biased batch variance; the statistics are not trained, so no graph
            mom = self.momentum
            self.moving_mean.assign(self.moving_mean.data * mom + mean.data * (1.0 - mom))
            self.moving_variance.assign(self.moving_variance.data * mom + var.data * (1.0 - mom))
            return y
        # the moving statistics are constants here: pass their arrays so no gradient is computed for them
        return ops.batch_norm(inputs, self.gamma, self.beta, self.moving_mean.data, self.moving_variance.data,
                              self.epsilon, self.axis)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


class LayerNormalization(Layer):
    """Normalise each sample over its feature axes (independent of the batch).

    Args (Keras 3): axis=-1 (int or list), epsilon=1e-3, center=True, scale=True, rms_scaling=False,
    beta/gamma initializers, regularizers and constraints.
    Weights: gamma, beta of the input's sizes on ``axis`` (rms_scaling: gamma only).
    Parameters: 2 * prod(sizes on axis). Input and output shape: the same.
    Forward: y = (x - mean) / sqrt(var + epsilon) * gamma + beta, statistics per sample over ``axis``;
    rms_scaling (Keras 3's formula): y = x / sqrt(var + epsilon) * gamma.
    """

    _cast_integer_inputs = True  # bool/int inputs compute in the layer's float dtype, as Keras

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True, rms_scaling=False,
                 beta_initializer="zeros", gamma_initializer="ones", beta_regularizer=None,
                 gamma_regularizer=None, beta_constraint=None, gamma_constraint=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(axis, (list, tuple)):
            self.axis = [int(a) for a in axis]
        elif isinstance(axis, int):
            self.axis = axis
        else:
            raise ValueError(f"LayerNormalization '{self.name}': axis must be an int or a list of ints. "
                             f"Received: axis={axis!r}")
        self.epsilon = float(epsilon)
        self.center, self.scale, self.rms_scaling = bool(center), bool(scale), bool(rms_scaling)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.beta_regularizer, self.gamma_regularizer = beta_regularizer, gamma_regularizer
        self.beta_constraint, self.gamma_constraint = beta_constraint, gamma_constraint
        self.gamma = self.beta = None
        self.supports_masking = True

    def _axes(self, rank):
        axes = self.axis if isinstance(self.axis, list) else [self.axis]
        for a in axes:
            if not -rank <= a < rank:
                raise ValueError(f"LayerNormalization '{self.name}': axis {a} is out of bounds for an input of "
                                 f"rank {rank}. Received: axis={self.axis}")
        return axes

    def build(self, input_shape):
        axes = self._axes(len(input_shape))
        shape = tuple(input_shape[a] for a in axes)
        if any(d is None for d in shape):
            raise ValueError(f"LayerNormalization '{self.name}': the normalised axes {axes} must have known sizes. "
                             f"Received input_shape={tuple(input_shape)}")
        if self.scale or self.rms_scaling:
            self.gamma = self.add_weight(shape=shape, initializer=self.gamma_initializer, name="gamma",
                                         regularizer=self.gamma_regularizer, constraint=self.gamma_constraint)
        if self.center and not self.rms_scaling:
            self.beta = self.add_weight(shape=shape, initializer=self.beta_initializer, name="beta",
                                        regularizer=self.beta_regularizer, constraint=self.beta_constraint)
        self.input_spec = InputSpec(min_ndim=max(-a if a < 0 else a + 1 for a in axes),
                                    axes={a: d for a, d in zip(axes, shape)})
        self.built = True

    def call(self, inputs):
        return ops.layer_norm(inputs, self.gamma, self.beta, self._axes(inputs.ndim), self.epsilon,
                              rms_scaling=self.rms_scaling)

    def compute_output_shape(self, input_shape):
        self._axes(len(input_shape))
        return tuple(input_shape)


class GroupNormalization(Layer):
    """Normalise each sample within groups of channels (batch-size independent; good for small batches).

    Args (Keras 3): groups=32 (-1: one group per channel), axis=-1 (channel axis), epsilon=1e-3, center,
    scale, beta/gamma initializers, regularizers and constraints.
    Weights: gamma (C,), beta (C,). Parameters: 2 C. Input and output shape: the same.
    Forward: channels split into ``groups`` groups of C / groups; y = (x - mean_g) / sqrt(var_g + epsilon)
    * gamma + beta, statistics per sample and group over the group's channels and all positions.
    """

    _cast_integer_inputs = True  # bool/int inputs compute in the layer's float dtype, as Keras

    def __init__(self, groups=32, axis=-1, epsilon=1e-3, center=True, scale=True, beta_initializer="zeros",
                 gamma_initializer="ones", beta_regularizer=None, gamma_regularizer=None, beta_constraint=None,
                 gamma_constraint=None, **kwargs):
        super().__init__(**kwargs)
        self.groups, self.axis, self.epsilon = int(groups), int(axis), float(epsilon)
        if self.groups == 0 or self.groups < -1:
            raise ValueError(f"{type(self).__name__} '{self.name}': groups must be a positive int or -1 "
                             f"(one group per channel). Received: groups={groups!r}")
        self.center, self.scale = bool(center), bool(scale)
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.beta_regularizer, self.gamma_regularizer = beta_regularizer, gamma_regularizer
        self.beta_constraint, self.gamma_constraint = beta_constraint, gamma_constraint
        self.gamma = self.beta = None
        self.supports_masking = True

    def build(self, input_shape):
        rank = len(input_shape)
        if not -rank <= self.axis < rank:
            raise ValueError(f"{type(self).__name__} '{self.name}': axis={self.axis} is out of range for an "
                             f"input of shape {tuple(input_shape)}.")
        dim = input_shape[self.axis]
        if dim is None:
            raise ValueError(f"{type(self).__name__} '{self.name}': axis {self.axis} of the input must have a "
                             f"known size. Received input_shape={tuple(input_shape)}")
        if self.groups == -1:
            self.groups = dim
        if self.groups > dim:
            raise ValueError(f"{type(self).__name__} '{self.name}': the number of groups ({self.groups}) cannot "
                             f"be more than the number of channels ({dim}).")
        if dim % self.groups:
            raise ValueError(f"{type(self).__name__} '{self.name}': the number of channels ({dim}) must be a "
                             f"multiple of the number of groups ({self.groups}).")
        if self.scale:
            self.gamma = self.add_weight(shape=(dim,), initializer=self.gamma_initializer, name="gamma",
                                         regularizer=self.gamma_regularizer, constraint=self.gamma_constraint)
        if self.center:
            self.beta = self.add_weight(shape=(dim,), initializer=self.beta_initializer, name="beta",
                                        regularizer=self.beta_regularizer, constraint=self.beta_constraint)
        self.input_spec = InputSpec(ndim=rank, axes={self.axis: dim})
        self.built = True

    def call(self, inputs):
        return ops.group_norm(inputs, self.gamma, self.beta, self.groups, self.epsilon, self.axis)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


class InstanceNormalization(GroupNormalization):
    """Group normalisation with one group per channel: each sample's channel is normalised over its own
    spatial positions (style transfer, image generation).

    Args: axis=-1, epsilon=1e-3, center, scale, beta/gamma initializers, regularizers, constraints.
    Weights: gamma (C,), beta (C,). Parameters: 2 C. Input and output shape: the same.
    Forward: y = (x - mean_{n,c}) / sqrt(var_{n,c} + epsilon) * gamma + beta.
    """

    def __init__(self, axis=-1, epsilon=1e-3, center=True, scale=True, beta_initializer="zeros",
                 gamma_initializer="ones", beta_regularizer=None, gamma_regularizer=None, beta_constraint=None,
                 gamma_constraint=None, **kwargs):
        super().__init__(groups=-1, axis=axis, epsilon=epsilon, center=center, scale=scale,
                         beta_initializer=beta_initializer, gamma_initializer=gamma_initializer,
                         beta_regularizer=beta_regularizer, gamma_regularizer=gamma_regularizer,
                         beta_constraint=beta_constraint, gamma_constraint=gamma_constraint, **kwargs)
