"""Arrays to batches: the shuffling and batching the training loop uses.

Data is a NumPy array, or a list/tuple/dict of arrays (multi-input or multi-output models) that share
their first (sample) axis. A batch is the same structure indexed by one slice of sample indices, so a
batch is built with one fancy-indexing copy per array: no Python loop over samples.
There is no prefetching thread: slicing in-memory arrays costs far less than a training step, so it
would add complexity without measured gain.
"""
import numpy as np

from .. import backend

__all__ = ["batches", "num_samples", "num_batches", "take", "shuffled_indices"]


def _flat(data):
    if data is None:
        return []
    if isinstance(data, dict):
        return [data[k] for k in data]
    if isinstance(data, (list, tuple)):
        out = []
        for d in data:
            out.extend(_flat(d))
        return out
    return [data]


def num_samples(*datas):
    """The common length of the first axis of every array in the given structures (ValueError if they differ)."""
    lengths = {}
    for data in datas:
        for a in _flat(data):
            n = len(a) if not hasattr(a, "shape") else (a.shape[0] if a.shape else None)
            if n is None:
                raise ValueError(f"Data arrays need a sample axis; received a scalar of type {type(a).__name__}.")
            lengths.setdefault(int(n), []).append(tuple(getattr(a, "shape", (n,))))
    if len(lengths) > 1:
        detail = "; ".join(f"{n} samples in arrays shaped {shapes}" for n, shapes in lengths.items())
        raise ValueError(f"All data arrays must have the same number of samples. Received: {detail}.")
    if not lengths:
        raise ValueError("No data arrays were given.")
    return next(iter(lengths))


def take(data, index):
    """data (an array or a list/tuple/dict of them; None stays None) at the sample indices ``index``."""
    if data is None:
        return None
    if isinstance(data, dict):
        return {k: take(v, index) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(take(v, index) for v in data)
    if isinstance(index, slice):
        return data[index]
    return np.asarray(data)[index] if not hasattr(data, "shape") else data[index]


def num_batches(n, batch_size, drop_remainder=False):
    """How many batches ``batches`` yields for n samples."""
    return n // batch_size if drop_remainder else -(-n // batch_size)


def shuffled_indices(n, seed=None):
    """A permutation of range(n): from np.random.default_rng(seed), or lamina's seeded RNG when seed is None."""
    gen = np.random.default_rng(seed) if seed is not None else backend.rng("shuffle")
    return gen.permutation(n)


def batches(x, y=None, batch_size=32, shuffle=False, seed=None, sample_weight=None, drop_remainder=False):
    """Yield mini-batches of (x, y) - or (x, y, sample_weight) when sample_weight is given.

    Args:
        x: array, or list/tuple/dict of arrays (multi-input models).
        y: targets with the same structure rules, or None (then each batch's y is None).
        batch_size: samples per batch; the last batch is smaller unless ``drop_remainder``.
        shuffle: visit samples in a random order (a fresh permutation every call).
        seed: seed of that permutation; None uses lamina's RNG (``lamina.utils.set_random_seed``).
        sample_weight: optional (n,) weights batched alongside.
    Without shuffling, each batch is a view of the arrays (no copy).

    >>> [xb.tolist() for xb, _ in batches(np.arange(5), batch_size=2)]
    [[0, 1], [2, 3], [4]]
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
        raise ValueError(f"batches: batch_size must be a positive int. Received: batch_size={batch_size!r}")
    n = num_samples(x, y, sample_weight)
    order = shuffled_indices(n, seed) if shuffle else None
    for b in range(num_batches(n, batch_size, drop_remainder)):
        lo, hi = b * batch_size, min((b + 1) * batch_size, n)
        idx = slice(lo, hi) if order is None else order[lo:hi]
        xb, yb = take(x, idx), take(y, idx)
        if sample_weight is None:
            yield xb, yb
        else:
            yield xb, yb, take(sample_weight, idx)
