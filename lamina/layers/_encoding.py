"""Integer ids -> one_hot, multi_hot or count vectors: the output encoding the category layers share
(CategoryEncoding, Discretization, the lookups in preprocessing_extra.py, Hashing and HashedCrossing in
hashing.py), in a module of its own so that those two modules need not import each other for it."""
import numpy as np

from .. import backend


def _xp_of(a):
    return backend.get_array_module(a) if not isinstance(a, (list, tuple)) else np


def _encode(ids, depth, mode, dtype, weights=None):
    """Integer ids (..., T) -> one_hot (..., T, depth) or multi_hot/count over the last axis (..., depth)."""
    xp = _xp_of(ids)
    ids = xp.asarray(ids)
    if mode == "one_hot":
        if ids.ndim > 1 and ids.shape[-1] == 1:
            ids = ids[..., 0]
        return (ids[..., None] == xp.arange(depth)).astype(dtype)
    if ids.ndim == 0:
        ids = ids[None]
    hot = ids[..., None] == xp.arange(depth)            # (..., T, depth)
    if mode == "multi_hot":
        return hot.any(axis=-2).astype(dtype)
    w = hot.astype(dtype)
    if weights is not None:
        w = w * xp.asarray(weights, dtype)[..., None]
    return w.sum(axis=-2)
