"""Embedding lookup: a table row per integer id, and the gradient scattered back into the table.

A vocabulary of V tokens is a table of V rows of D numbers; the embedding of a sequence of ids is the
rows picked out by those ids. The backward pass is the mirror image: every row of the table receives
the sum of the upstream gradients of the positions that looked it up (a token seen three times in a
batch gets three contributions), and rows nobody looked up get zero.

Forward:  y[..., :] = table[ids[...], :]                      ids (...), table (V, D) -> y (..., D)
Backward: dtable[v] = sum over positions p with ids[p] == v of gy[p]     (no gradient for the ids)
"""
import numpy as np

from ..tensor import Op
from . import cuda_kernels as _cuda_kernels

__all__ = ["embedding"]


def _check_ids(ids, num_rows, who):
    """Integer ids within [0, num_rows): anything else is a caller's mistake worth a clear message."""
    if ids.dtype.kind not in "iu":
        raise ValueError(f"{who}: ids must be integers (token indices in [0, {num_rows})); received an array "
                         f"of dtype {ids.dtype}. Cast it first, e.g. ids.astype('int32').")
    # (on a GPU one launch and one read of a flag, the extremes only for the message)
    bad = None if type(ids) is np.ndarray else _cuda_kernels.labels_out_of_range(ids, num_rows)
    if ids.size and bad is not False:
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= num_rows:
            raise ValueError(f"{who}: ids must be in [0, {num_rows}) (the table has {num_rows} rows); "
                             f"received ids from {lo} to {hi}.")


_RANK_PASSES = 2  # duplicates handled by direct row adds before the segmented sum takes the rest


def _scatter_rows(xp, ids, gy, num_rows):
    """Sum the rows of gy (N, D) into a zero (num_rows, D) table at rows ids (N,), repeated ids adding.

    Sort the ids (stable), so that equal ids form runs, and number each row within its run (its rank).
    Rows of rank 0 hold distinct ids: one fancy-index assignment places them all. Rows of rank k = 1, 2
    also hold distinct ids among themselves: one fancy-index addition each. Whatever remains (ids seen
    more than 3 times, e.g. a padding token) is summed per run by add.reduceat and added once.
    Why: reduceat over every run cost ~8 ms for ids (64, 80) into a (10000, 256) float32 table, one
    core, most runs being one row long; this path measured ~2 ms there (and ~0.5 against ~3.2 ms for
    ids (32, 64) into (5000, 128)). The additions follow the sorted order, as reduceat did.
    CuPy has no reduceat, and its add.at is a native scatter-add kernel, so it takes that path. Where the
    compiled kernels run (kernels.py), one pass in this order gives the same table.
    """
    done = _cuda_kernels.kernels_for(xp).scatter_rows(ids, gy, num_rows)
    if done is not None:
        return done
    out = xp.zeros((num_rows, gy.shape[-1]), gy.dtype)
    n = ids.shape[0]
    if n == 0:
        return out
    if not hasattr(xp.add, "reduceat"):  # pragma: no cover - CuPy
        xp.add.at(out, ids, gy)
        return out
    order = xp.argsort(ids, kind="stable")
    sids = ids[order]  # (gy's rows are gathered through order by each pass: no sorted copy of all of gy)
    new_run = xp.empty(sids.shape, bool)  # start of each run of equal ids in the sorted order
    new_run[0] = True
    xp.not_equal(sids[1:], sids[:-1], out=new_run[1:])
    starts = xp.flatnonzero(new_run)
    out[sids[starts]] = gy[order[starts]]
    if starts.shape[0] == n:  # every id distinct
        return out
    rank = xp.arange(n) - starts[xp.cumsum(new_run) - 1]
    top = int(rank.max())
    for k in range(1, min(top, _RANK_PASSES) + 1):  # a loop over repeat counts, not over rows
        sel = xp.flatnonzero(rank == k)
        out[sids[sel]] += gy[order[sel]]
    if top > _RANK_PASSES:
        tail = rank > _RANK_PASSES
        tids, tg = sids[tail], gy[order[tail]]
        tnew = xp.empty(tids.shape, bool)
        tnew[0] = True
        xp.not_equal(tids[1:], tids[:-1], out=tnew[1:])
        tstarts = xp.flatnonzero(tnew)
        out[tids[tstarts]] += xp.add.reduceat(tg, tstarts, axis=0)
    return out


class Embedding(Op):
    """table[ids]; backward scatters gy into a zero table (repeated ids add up)."""

    def forward(self, ids, table):
        if table.ndim != 2:
            raise ValueError(f"embedding: table must be 2-D (rows, features); received shape {tuple(table.shape)}.")
        _check_ids(ids, table.shape[0], "embedding")
        self.saved = (ids,)
        self.num_rows = table.shape[0]
        return self.xp.take(table, ids, axis=0)

    def backward(self, gy):
        if not self.needs_grad[1]:
            return None, None
        (ids,) = self.saved
        d = gy.shape[-1]
        if gy.ndim > 2 and not gy.flags.c_contiguous:
            # a gradient laid out with its leading axes in another order (a recurrent op's time-major input
            # gradient): pair the ids in that same order instead of copying gy into the ids' order
            order = sorted(range(gy.ndim - 1), key=lambda a: -gy.strides[a])
            view = gy.transpose(order + [gy.ndim - 1])
            if view.flags.c_contiguous:
                return None, _scatter_rows(self.xp, ids.transpose(order).reshape(-1), view.reshape(-1, d),
                                           self.num_rows)
        return None, _scatter_rows(self.xp, ids.reshape(-1), gy.reshape(-1, d), self.num_rows)


def embedding(ids, table):
    """Look up rows of ``table`` by integer ``ids``.

    Args:
        ids: integer array or Tensor of any shape (...), every value in [0, V).
        table: (V, D) Tensor (the layer's ``embeddings``).
    Returns: (..., D) Tensor, ``table[ids]``, in the table's dtype.
    Backward: the table's gradient is a zero (V, D) table with each gy[p] added to row ids[p]
    (a segmented sum over the sorted ids, no Python loop); the ids get none.
    Raises ValueError for float ids or ids outside [0, V), giving the valid range.

    >>> import numpy as np
    >>> embedding(np.array([[1, 0]]), np.arange(6.0).reshape(3, 2)).numpy()
    array([[[2., 3.],
            [0., 1.]]])
    """
    return Embedding.apply(ids, table)
