"""Random tensors with Keras 3's ``keras.random`` names: normal, uniform, truncated_normal, randint, dropout,
shuffle, beta, binomial, categorical, gamma, and SeedGenerator.

Without a seed the draws come from lamina's global generator (``lamina.utils.set_random_seed``); an int seed
gives the same values every call; a SeedGenerator gives a reproducible stream.
"""
import numpy as np

from . import backend
from .ops.random import dropout as _dropout
from .tensor import Tensor


class SeedGenerator:
    """A reproducible stream of random draws: ``keras.random.normal(shape, seed=SeedGenerator(42))``."""

    def __init__(self, seed=None):
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    def generator(self):
        return self._rng

    def get_config(self):
        return {"seed": self.seed}


def _rng(seed):
    if seed is None:
        return backend.rng()
    if isinstance(seed, SeedGenerator):
        return seed.generator()
    if isinstance(seed, (int, np.integer)):
        return np.random.default_rng(int(seed))
    raise ValueError(f"seed must be None, an int or a SeedGenerator. Received: seed={seed!r}")


def _out(a, dtype):
    return Tensor(backend.to_device(np.asarray(a, dtype or backend.floatx())))


def normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    return _out(_rng(seed).normal(mean, stddev, shape), dtype)


def uniform(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
    return _out(_rng(seed).uniform(minval, maxval, shape), dtype)


def truncated_normal(shape, mean=0.0, stddev=1.0, dtype=None, seed=None):
    """Normal draws redrawn when more than two standard deviations from the mean, as Keras."""
    rng = _rng(seed)
    out = rng.standard_normal(shape)
    bad = np.abs(out) > 2.0
    while bad.any():
        out[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(out) > 2.0
    return _out(mean + stddev * out, dtype)


def randint(shape, minval, maxval, dtype="int32", seed=None):
    """Integers in [minval, maxval)."""
    return _out(_rng(seed).integers(minval, maxval, shape), dtype)


def shuffle(x, axis=0, seed=None):
    a = np.asarray(x.numpy() if isinstance(x, Tensor) else x)
    perm = _rng(seed).permutation(a.shape[axis])
    return _out(np.take(a, perm, axis=axis), a.dtype)


def dropout(inputs, rate, noise_shape=None, seed=None):
    """Inverted dropout (always active): zero each entry with probability rate, scale the rest by 1/(1-rate)."""
    return _dropout(inputs, rate, noise_shape=noise_shape, training=True, rng=_rng(seed))


def _value(v):
    """A NumPy array of a Tensor, a NumPy/CuPy array or a Python number (the distributions draw on the host)."""
    return backend.to_numpy(v.data if isinstance(v, Tensor) else v)


def gamma(shape, alpha, dtype=None, seed=None):
    """Gamma(alpha, scale 1) draws."""
    return _out(_rng(seed).gamma(_value(alpha), 1.0, shape), dtype)


def beta(shape, alpha, beta, dtype=None, seed=None):
    """Beta(alpha, beta) draws (alpha, beta broadcast against shape)."""
    return _out(_rng(seed).beta(_value(alpha), _value(beta), shape), dtype)


def binomial(shape, counts, probabilities, dtype=None, seed=None):
    """Binomial(counts, probabilities) draws, as floats by default like Keras."""
    return _out(_rng(seed).binomial(_value(counts).astype(np.int64), _value(probabilities), shape), dtype)


def categorical(logits, num_samples, dtype="int32", seed=None):
    """For each row of logits (batch, classes), num_samples class indices drawn from softmax(logits)."""
    z = _value(logits).astype(np.float64)
    if z.ndim != 2:
        raise ValueError(f"`logits` should be a 2-D tensor (batch_size, num_classes). Received: shape={z.shape}")
    p = np.exp(z - z.max(axis=1, keepdims=True))
    cdf = np.cumsum(p / p.sum(axis=1, keepdims=True), axis=1)
    u = _rng(seed).random((z.shape[0], int(num_samples)))
    idx = (u[:, :, None] >= cdf[:, None, :-1]).sum(axis=2)  # inverse CDF, vectorised over rows and draws
    return _out(idx, dtype)


__all__ = ["SeedGenerator", "normal", "uniform", "truncated_normal", "randint", "shuffle", "dropout", "gamma",
           "beta", "binomial", "categorical"]
