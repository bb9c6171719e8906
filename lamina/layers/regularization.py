"""Regularisation layers: Dropout, SpatialDropout1D/2D/3D, GaussianNoise, GaussianDropout, ActivityRegularization.

They fight overfitting by making training harder in ways that do not exist at inference: noise and
dropped units are drawn only when ``training=True``; at inference these layers pass the input through.
Randomness comes from lamina's seeded Generator (or the layer's own when ``seed`` is given).
"""
import numpy as np

from .. import ops
from .layer import InputSpec, Layer

__all__ = ["Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
           "GaussianDropout", "ActivityRegularization"]


def _check_rate(layer, rate, what="rate"):
    if isinstance(rate, bool) or not isinstance(rate, (int, float, np.integer, np.floating)) or not 0 <= rate < 1:
        raise ValueError(f"{type(layer).__name__} '{layer.name}': {what} must be a float in [0, 1). "
                         f"Received: {what}={rate!r}")
    return float(rate)


class _RandomLayer(Layer):
    """Shared seed handling: with a seed the layer owns a Generator, else lamina's global one is used."""

    def _init_seed(self, seed):
        self.seed = seed
        self._rng = None if seed is None else np.random.default_rng(int(seed))
        self.supports_masking = True

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)


class Dropout(_RandomLayer):
    """Randomly zero a fraction ``rate`` of the inputs during training, scaling the rest by 1/(1-rate).

    Dropout keeps units from co-adapting (relying on particular partners), which reduces overfitting;
    the scaling keeps the expected activation, so inference is the identity.
    Args (Keras 3): rate in [0, 1), noise_shape (broadcast mask shape, None entries take the input's size),
    seed. Parameters: 0. Output shape: the input's.
    Forward: training: y = x * keep / (1 - rate); inference: y = x.
    """

    def __init__(self, rate, noise_shape=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = _check_rate(self, rate)
        self.noise_shape = None if noise_shape is None else tuple(noise_shape)
        self._init_seed(seed)

    def _noise_shape(self, inputs):
        return self.noise_shape

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        inputs = self._cast_integers(inputs)  # (kept bool/int values scaled by 1/(1-rate) are no longer whole)
        return ops.dropout(inputs, self.rate, noise_shape=self._noise_shape(inputs), training=True, rng=self._rng)


class SpatialDropout1D(Dropout):
    """Dropout of whole channels of (N, steps, C) inputs: the same channels are zeroed at every step.
    Adjacent steps are strongly correlated, so dropping single entries regularises little.
    Args: rate, seed. Forward: mask of shape (N, 1, C)."""

    def __init__(self, rate, seed=None, name=None, dtype=None, **kwargs):
        super().__init__(rate, seed=seed, name=name, dtype=dtype, **kwargs)
        self.input_spec = InputSpec(ndim=3)

    def _noise_shape(self, inputs):
        return (inputs.shape[0], 1, inputs.shape[2])


class SpatialDropout2D(Dropout):
    """Dropout of whole feature maps of images: mask (N, 1, 1, C) (channels_last) or (N, C, 1, 1).
    Args: rate, data_format=None ('channels_last'), seed."""

    def __init__(self, rate, data_format=None, seed=None, name=None, dtype=None, **kwargs):
        super().__init__(rate, seed=seed, name=name, dtype=dtype, **kwargs)
        self.data_format = _data_format(self, data_format)
        self.input_spec = InputSpec(ndim=4)

    def _noise_shape(self, inputs):
        s = inputs.shape
        return (s[0], 1, 1, s[3]) if self.data_format == "channels_last" else (s[0], s[1], 1, 1)


class SpatialDropout3D(Dropout):
    """Dropout of whole 3-D feature maps: mask (N, 1, 1, 1, C) (channels_last) or (N, C, 1, 1, 1)."""

    def __init__(self, rate, data_format=None, seed=None, name=None, dtype=None, **kwargs):
        super().__init__(rate, seed=seed, name=name, dtype=dtype, **kwargs)
        self.data_format = _data_format(self, data_format)
        self.input_spec = InputSpec(ndim=5)

    def _noise_shape(self, inputs):
        s = inputs.shape
        return (s[0], 1, 1, 1, s[4]) if self.data_format == "channels_last" else (s[0], s[1], 1, 1, 1)


def _data_format(layer, value):
    value = "channels_last" if value is None else str(value).lower()
    if value not in ("channels_last", "channels_first"):
        raise ValueError(f"{type(layer).__name__} '{layer.name}': data_format must be 'channels_last' or "
                         f"'channels_first'. Received: data_format={value!r}")
    return value


class GaussianNoise(_RandomLayer):
    """Add zero-centred Gaussian noise during training (regularisation; augmentation of real inputs).
    Args (Keras 3): stddev in [0, 1], seed. Forward: training: y = x + Normal(0, stddev^2); else y = x."""

    def __init__(self, stddev, seed=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(stddev, bool) or not isinstance(stddev, (int, float, np.integer, np.floating)) \
                or not 0 <= stddev <= 1:
            raise ValueError(f"GaussianNoise '{self.name}': stddev must be a float in [0, 1]. "
                             f"Received: stddev={stddev!r}")
        self.stddev = float(stddev)
        self._init_seed(seed)

    def call(self, inputs, training=None):
        if not training or self.stddev == 0:
            return inputs
        inputs = self._cast_integers(inputs)  # noise on bool/int values is float, as Keras
        return ops.gaussian_noise(inputs, self.stddev, training=True, rng=self._rng)


class GaussianDropout(_RandomLayer):
    """Multiply by Gaussian noise centred on 1 with standard deviation sqrt(rate / (1 - rate)) during
    training: dropout's variance without zeros. Args (Keras 3): rate in [0, 1), seed."""

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = _check_rate(self, rate)
        self._init_seed(seed)

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        inputs = self._cast_integers(inputs)  # noise on bool/int values is float, as Keras
        return ops.gaussian_dropout(inputs, self.rate, training=True, rng=self._rng)


class ActivityRegularization(Layer):
    """Identity whose activity regularizer adds (l1 * sum(|x|) + l2 * sum(x^2)) / batch_size of its input to
    ``layer.losses`` (each call, as Keras 3), pushing activations towards small or sparse values.
    Args (Keras 3): l1=0.0, l2=0.0."""

    def __init__(self, l1=0.0, l2=0.0, **kwargs):
        if float(l1) < 0 or float(l2) < 0:
            raise ValueError(f"ActivityRegularization '{kwargs.get('name') or 'activity_regularization'}': l1 and "
                             f"l2 must be >= 0. Received: l1={l1!r}, l2={l2!r}")
        kwargs.pop("activity_regularizer", None)
        from .. import regularizers
        super().__init__(activity_regularizer=regularizers.L1L2(l1=float(l1), l2=float(l2))
                         if (l1 or l2) else None, **kwargs)
        self.l1, self.l2 = float(l1), float(l2)
        self.supports_masking = True

    def call(self, inputs):
        return inputs

    def get_config(self):
        config = super().get_config()
        config.pop("activity_regularizer", None)
        return config

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)
