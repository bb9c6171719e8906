"""Random tensors with Keras 3's ``keras.random`` names: normal, uniform, truncated_normal, randint, dropout,
shuffle, and SeedGenerator.

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


__all__ = ["SeedGenerator", "normal", "uniform", "truncated_normal", "randint", "shuffle", "dropout"]
