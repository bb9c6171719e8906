"""Indexing, reordering and contraction kernels behind ``keras.ops.numpy``'s array functions.

Each op keeps forward and backward side by side. Gather-like ops scatter their gradient back with
``xp.add.at`` (indices may repeat, so contributions add); permutations (sort, roll) route it through
the inverse permutation; einsum's backward is itself an einsum per operand.
"""
import string

import numpy as np

from ..tensor import Op
from . import kernels as _kernels

__all__ = []


def flat_index(arrays, dims):
    """The 1-D flat index into axes of sizes ``dims`` of NumPy integer index arrays (broadcast against each other,
    in range, negative entries counted from the end as NumPy's indexing counts them)."""
    parts = np.broadcast_arrays(*[np.where(a < 0, a + n, a) for a, n in zip(arrays, dims)])
    return np.ravel_multi_index(parts, tuple(dims)).reshape(-1)


def add_at_flat(flat, rows, num_rows):
    """A zero (num_rows, W) table with the rows (N, W) added at the 1-D index ``flat`` (in range), in order: the
    scatter of a gradient or of ops.scatter's values. NumPy's add.at over a tuple of index arrays is several times
    slower than over one 1-D index ((32, 64, 16) positions of (32, 64, 128): 0.82 against 0.12 ms), and over rows
    it walks them one by one: rows of several values go through the embedding gradient's compiled scatter where it
    runs, single values through add.at over the flat table (the same additions in the same order either way)."""
    width = rows.shape[1]
    if width > 1:
        table = _kernels.scatter_index_rows(flat, rows, num_rows)
        if table is not None:
            return table
    table = np.zeros((num_rows, width), rows.dtype)
    np.add.at(table.reshape(-1) if width == 1 else table, flat, rows.reshape(-1) if width == 1 else rows)
    return table


def _scatter_along(xp, g_out, idx, axis, n):
    """The adjoint of ``xp.take(x, idx, axis)`` for a 1-D ``idx``: sums g_out's slices into n slots (through the
    embedding gradient's compiled scatter where it runs: np.add.at walks the slices one by one, (32, 32, 128)
    into 64 slots along axis 1 2.2 ms)."""
    moved = xp.moveaxis(g_out, axis, 0)
    if xp is np and moved.dtype.kind == "f":
        table = _kernels.scatter_index_rows(np.asarray(idx), moved.reshape(moved.shape[0], -1), n)
        if table is not None:
            return xp.moveaxis(table.reshape((n,) + moved.shape[1:]), 0, axis)
    g = xp.zeros((n,) + moved.shape[1:], g_out.dtype)
    xp.add.at(g, idx, moved)
    return xp.moveaxis(g, 0, axis)


class Copy(Op):
    """A fresh copy of x; the gradient passes through."""

    def forward(self, x):
        return x.copy()

    def backward(self, gy):
        return gy


class Roll(Op):
    """xp.roll; backward rolls the gradient back by -shift."""

    def forward(self, x):
        return self.xp.roll(x, self.shift, axis=self.axis)

    def backward(self, gy):
        shift = tuple(-s for s in self.shift) if isinstance(self.shift, tuple) else -self.shift
        return self.xp.roll(gy, shift, axis=self.axis)


class RepeatEach(Op):
    """np.repeat with one count per element along ``axis`` (``repeats`` a 1-D int array).
    Backward sums each run of copies back onto its source element."""

    def forward(self, x):
        xp = self.xp
        reps = xp.asarray(self.repeats)
        self.meta = (x.shape[self.axis], xp.repeat(xp.arange(x.shape[self.axis]), reps))
        return xp.repeat(x, reps, axis=self.axis)

    def backward(self, gy):
        n, src = self.meta
        return _scatter_along(self.xp, gy, src, self.axis, n)


class PadIndexed(Op):
    """np.pad in an index-copying mode (edge, reflect, symmetric, wrap), axis by axis.

    Each axis's padded positions read source positions ``np.pad(arange(n), (lo, hi), mode)``; backward
    scatter-adds the gradient through those same maps, last axis first."""

    def forward(self, x):
        xp = self.xp
        self.maps = []
        for ax, (lo, hi) in enumerate(self.pad_width):
            if lo == 0 and hi == 0:
                continue
            n = x.shape[ax]
            src = np.pad(np.arange(n), (lo, hi), mode=self.mode)
            src = src if xp is np else xp.asarray(src)
            self.maps.append((ax, n, src))
            x = xp.take(x, src, axis=ax)
        return x

    def backward(self, gy):
        for ax, n, src in reversed(self.maps):
            gy = _scatter_along(self.xp, gy, src, ax, n)
        return gy


class TakeAlongAxis(Op):
    """np.take_along_axis (x and indices broadcast against each other except along ``axis``).
    Backward: xp.add.at into the gathered positions."""

    def forward(self, x, idx):
        xp = self.xp
        y = xp.take_along_axis(x, idx, axis=self.axis)
        self.saved = (x.shape, idx)
        self.out_shape = y.shape
        return y

    def backward(self, gy):
        xp = self.xp
        shape, idx = self.saved
        nd = len(shape)
        ax = self.axis % nd
        full = []
        for d in range(nd):
            view = [1] * nd
            view[d] = self.out_shape[d]
            if d == ax:
                full.append(xp.broadcast_to(idx, self.out_shape))
            elif shape[d] == 1:
                full.append(xp.zeros(view, dtype=np.intp))
            else:
                full.append(xp.arange(self.out_shape[d]).reshape(view))
        index = tuple(xp.broadcast_to(f, self.out_shape) for f in full)
        if xp is np:   # one flat index into the flat gradient (add_at_flat)
            rows = np.broadcast_to(gy, self.out_shape).reshape(-1, 1)
            return add_at_flat(flat_index(index, shape), rows, int(np.prod(shape))).reshape(shape), None
        g = xp.zeros(shape, gy.dtype)
        xp.add.at(g, index, gy)
        return g, None


class Sort(Op):
    """Ascending stable sort along ``axis``; the gradient goes back through the inverse permutation."""

    def forward(self, x):
        xp = self.xp
        order = xp.argsort(x, axis=self.axis, kind="stable") if xp is np else xp.argsort(x, axis=self.axis)
        self.saved = (order,)
        return xp.take_along_axis(x, order, axis=self.axis)

    def backward(self, gy):
        xp = self.xp
        (order,) = self.saved
        inverse = xp.argsort(order, axis=self.axis)
        return xp.take_along_axis(gy, inverse, axis=self.axis)


class DiagEmbed(Op):
    """A 1-D x placed on the k-th diagonal of a square matrix (np.diag of a vector)."""

    def forward(self, x):
        xp = self.xp
        n, k = x.shape[0], self.k
        m = n + abs(k)
        self.rc = (xp.arange(n) + max(-k, 0), xp.arange(n) + max(k, 0))
        out = xp.zeros((m, m), x.dtype)
        out[self.rc] = x
        return out

    def backward(self, gy):
        return gy[self.rc]


def _expand_einsum(subscripts, shapes):
    """Explicit einsum subscripts: ellipses replaced by letters, the output spelled out.
    Returns (input subscripts, output subscript, an iterator of unused letters)."""
    s = subscripts.replace(" ", "")
    ins, out = s.split("->") if "->" in s else (s, None)
    ins = ins.split(",")
    if len(ins) != len(shapes):
        raise ValueError(f"einsum: {len(ins)} operand subscripts in {subscripts!r}, got {len(shapes)} operands.")
    used = {c for c in s if c.isalpha()}
    free = iter([c for c in string.ascii_letters if c not in used])
    ell_nd = max([len(sh) - (len(sub) - 3) for sub, sh in zip(ins, shapes) if "..." in sub], default=0)
    ell = "".join(next(free) for _ in range(ell_nd))
    full = []
    for sub, sh in zip(ins, shapes):
        if "..." in sub:
            k = len(sh) - (len(sub) - 3)
            sub = sub.replace("...", ell[ell_nd - k:])
        if len(sub) != len(sh):
            raise ValueError(f"einsum: subscript {sub!r} does not match an operand of shape {tuple(sh)}.")
        full.append(sub)
    if out is None:
        letters = "".join(full)
        out = ell + "".join(sorted(c for c in set(letters) if letters.count(c) == 1 and c not in ell))
    else:
        out = out.replace("...", ell)
    return full, out, free


_EINSUM_SWAP = {}   # (subscripts, shape, shape) -> whether the swapped operand order gives a C-contiguous result


def _remember(key, swap):
    if len(_EINSUM_SWAP) > 4096:   # a program with ever new shapes: start over rather than grow
        _EINSUM_SWAP.clear()
    _EINSUM_SWAP[key] = swap


class Einsum(Op):
    """np.einsum over float operands. The gradient of operand i is the einsum of the output gradient
    with the other operands onto operand i's subscripts; a letter repeated in operand i (a diagonal)
    gets an identity matrix, a letter found nowhere else (summed out, or a broadcast size-1 axis) is
    broadcast back."""

    half_via_float32 = True  # float16 through float32 BLAS (tensor.Op)

    def _einsum(self, subs, *arrays):
        if self.xp is not np:
            return self.xp.einsum(subs, *arrays)
        # optimize routes contractions to BLAS: 25x faster for a batched matmul
        if len(arrays) != 2:
            return np.einsum(subs, *arrays, optimize=True)
        # Of two operands, NumPy's BLAS route may hand back the result in a transposed layout, depending on their
        # order ('abd,cd->abc', EinsumDense's input gradient: strides (256, 4, 8192)), which every later pass
        # then reads strided (a contiguous copy of it: 2.1 ms against the 0.8 of the product at (32, 64, 128)).
        # The other order can come out contiguous: the order that does is remembered per subscripts and shapes.
        ins, out = subs.split("->")
        first, second = ins.split(",")
        swapped = f"{second},{first}->{out}"
        key = (subs, arrays[0].shape, arrays[1].shape)
        swap = _EINSUM_SWAP.get(key)
        if swap is not None:
            return np.einsum(swapped, arrays[1], arrays[0], optimize=True) if swap else np.einsum(
                subs, *arrays, optimize=True)
        y = np.einsum(subs, *arrays, optimize=True)
        if y.flags.c_contiguous:
            _remember(key, False)
            return y
        z = np.einsum(swapped, arrays[1], arrays[0], optimize=True)
        _remember(key, bool(z.flags.c_contiguous))
        return z if z.flags.c_contiguous else y

    def forward(self, *xs):
        ins, out, free = _expand_einsum(self.subscripts, [x.shape for x in xs])
        self.plan = (ins, out, list(free))
        self.saved = xs
        return self._einsum(",".join(ins) + "->" + out, *xs)

    def backward(self, gy):
        xp = self.xp
        xs = self.saved
        ins, out, free = self.plan
        free = iter(free)
        sizes = {}
        for sub, x in zip(ins, xs):
            for c, n in zip(sub, x.shape):
                sizes[c] = n if sizes.get(c, 1) == 1 else sizes[c]
        grads = []
        for i, x in enumerate(xs):
            if not self.needs_grad[i]:
                grads.append(None)
                continue
            chars, eyes, seen = [], [], set()
            for c, n in zip(ins[i], x.shape):
                if n == 1 and sizes[c] > 1:      # broadcast axis: sum the gradient over it
                    c = next(free)
                elif c in seen:                  # repeated letter: the diagonal, via an identity
                    c2 = next(free)
                    eyes.append(c + c2)
                    c = c2
                seen.add(c)
                chars.append(c)
            others = [(ins[j], xs[j]) for j in range(len(xs)) if j != i]
            avail = set(out) | set("".join(s for s, _ in others)) | set("".join(eyes))
            target = "".join(c for c in chars if c in avail)
            subs = ",".join([out] + [s for s, _ in others] + eyes) + "->" + target
            eye_arrays = [xp.eye(sizes[e[0]], dtype=gy.dtype) for e in eyes]
            g = self._einsum(subs, gy, *[a for _, a in others], *eye_arrays)
            g = g.reshape([n if c in avail else 1 for c, n in zip(chars, x.shape)])
            grads.append(xp.ascontiguousarray(xp.broadcast_to(g, x.shape)).astype(x.dtype, copy=False))
        return tuple(grads)
