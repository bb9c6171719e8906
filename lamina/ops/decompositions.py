"""Matrix decompositions and solvers with hand-written backward, batched over leading axes.

Every op works on stacks of matrices (..., M, N) with ``xp.linalg`` (NumPy or CuPy) and writes its
gradient in closed form, as PyTorch and JAX define it (real inputs only):

- lu_factor (square): gA = P L^-T (tril(L^T gL, -1) + triu(gU U^T)) U^-T (PyTorch's rule).
- solve / inv: from d(A^-1) = -A^-1 dA A^-1; det: g times the cofactor matrix (by SVD, singular A too).
- cholesky: gA = sym(L^-T Phi(L^T gL) L^-1), Phi = lower triangle with the diagonal halved.
- qr (M >= N, and M < N by splitting A = [X | Y]): gA = (gQ + Q copyltu(M)) R^-T, M = R gR^T - gQ^T Q.
- svd: the Townsend formula; defined for distinct non-zero singular values.
- eigh: gA = V (diag(gw) + skew(V^T gV) / 2 / E) V^T, E_ij = w_j - w_i; distinct eigenvalues.
- pinv / lstsq: the Golub-Pereyra derivative of the pseudo-inverse.
- vector norms (any p, inf, -inf, 0) over one or more axes, zero gradient where the norm is zero.
"""
import numpy as np

from ..tensor import Op
from .math import unbroadcast

__all__ = ["Solve", "Inv", "Det", "Cholesky", "QR", "SVD", "Eigh", "SolveTriangular", "Pinv", "Lstsq",
           "VectorNorm", "LUFactor"]


def _t(a):
    """Transpose of the last two axes."""
    return a.swapaxes(-1, -2)


def _eye_like(xp, n, dtype):
    return xp.eye(n, dtype=dtype)


def _parts(xp, result):
    """The arrays of a multi-output xp.linalg result, as arrays of xp (NumPy's named tuples hold host arrays
    under stand-ins for CuPy; on CuPy and NumPy this is a no-op)."""
    return tuple(xp.asarray(r) for r in result)


def _tri_solve(xp, a, b, lower):
    """Solve a x = b with a triangular (only its lower / upper triangle is read), batched."""
    tri = xp.tril(a) if lower else xp.triu(a)
    return xp.linalg.solve(tri, b)


class Solve(Op):
    """x = A^-1 b for b of shape (..., M, K). Backward: gb = A^-T gx, gA = -gb x^T."""

    def forward(self, a, b):
        x = self.xp.linalg.solve(a, b)
        self.saved = (a, x, a.shape, b.shape)
        return x

    def backward(self, gx):
        a, x, sa, sb = self.saved
        gb = self.xp.linalg.solve(_t(a), gx)
        ga = -gb @ _t(x) if self.needs_grad[0] else None
        return (None if ga is None else unbroadcast(ga, sa),
                unbroadcast(gb, sb) if self.needs_grad[1] else None)


class Inv(Op):
    """Y = A^-1. Backward: gA = -Y^T gY Y^T."""

    def forward(self, a):
        y = self.xp.linalg.inv(a)
        self.saved = (y,)
        return y

    def backward(self, gy):
        (y,) = self.saved
        yt = _t(y)
        return -(yt @ gy @ yt)


class Det(Op):
    """d = det(A). Backward: g times the cofactor matrix, C = det(U) det(V) U diag(prod_{j != i} s_j) V^T from
    A = U S V^T, which is d A^-T for invertible A and stays defined (no division) for singular A."""

    def forward(self, a):
        d = self.xp.linalg.det(a)
        self.saved = (a,)
        return d

    def backward(self, gd):
        xp = self.xp
        (a,) = self.saved
        u, s, vh = _parts(xp, xp.linalg.svd(a))
        n = s.shape[-1]
        ones = xp.ones(s.shape[:-1] + (1,), s.dtype)
        left = xp.cumprod(xp.concatenate([ones, s[..., :-1]], axis=-1), axis=-1)        # prod_{j < i} s_j
        right = xp.flip(xp.cumprod(xp.flip(xp.concatenate([s[..., 1:], ones], axis=-1), axis=-1), axis=-1),
                        axis=-1)                                                        # prod_{j > i} s_j
        sign = xp.linalg.det(u) * xp.linalg.det(vh)
        cof = (u * (left * right)[..., None, :]) @ vh
        return (gd * sign)[..., None, None] * cof if n else xp.zeros_like(a)


class Cholesky(Op):
    """L with A = L L^T (lower), or U = L^T with A = U^T U (upper). Reads A's lower triangle.

    Backward (PyTorch's rule): gA = sym(L^-T Phi(L^T gL) L^-1), Phi(X) = tril(X) with its diagonal halved,
    sym(X) = (X + X^T) / 2.
    """

    def forward(self, a):
        xp = self.xp
        lo = xp.linalg.cholesky(a)
        if xp.isnan(lo).any():
            raise np.linalg.LinAlgError("Matrix is not positive definite")
        self.saved = (lo,)
        return _t(lo) if self.upper else lo

    def backward(self, g):
        xp = self.xp
        (lo,) = self.saved
        gl = _t(g) if self.upper else g
        n = lo.shape[-1]
        linv = _tri_solve(xp, lo, xp.broadcast_to(_eye_like(xp, n, lo.dtype), lo.shape), True)
        phi = xp.tril(_t(lo) @ gl)
        idx = xp.arange(n)
        phi[..., idx, idx] *= 0.5
        ga = _t(linv) @ phi @ linv
        return 0.5 * (ga + _t(ga))


class QR(Op):
    """A = Q R, mode 'reduced' or 'complete'.

    Backward for M >= N (reduced, or complete with M == N): gA = (gQ + Q copyltu(Mx)) R^-T with
    Mx = R gR^T - gQ^T Q; for M < N, A = [X | Y] with X square: gY = Q gR[:, M:],
    gX = the square rule with gQ + Y gR[:, M:]^T and gR[:, :M]. Complete mode with M > N has no gradient.
    """

    def forward(self, a):
        xp = self.xp
        q, r = _parts(xp, xp.linalg.qr(a, mode=self.mode))
        self.saved = (q, r)
        return q, r

    def _square_rule(self, q, r, gq, gr):
        xp = self.xp
        m = r @ _t(gr) - _t(gq) @ q
        lo = xp.tril(m, -1)
        n = m.shape[-1]
        idx = xp.arange(n)
        sym = lo + _t(lo)
        sym[..., idx, idx] = m[..., idx, idx]
        b = gq + q @ sym
        # gA = b R^-T  <=>  gA^T = R^-1 b^T  (R upper triangular)
        return _t(_tri_solve(xp, r, _t(b), False))

    def backward(self, gq, gr):
        q, r = self.saved
        m, n = q.shape[-2], r.shape[-1]
        k = r.shape[-2]
        if self.mode == "complete" and m > n:
            raise NotImplementedError("qr: the gradient of mode='complete' is not defined when M > N "
                                      "(Q's extra columns are not unique); use mode='reduced'.")
        if m >= n:
            return self._square_rule(q, r, gq, gr)
        x_r, y_r = r[..., :, :k], r[..., :, k:]
        gx_r, gy_r = gr[..., :, :k], gr[..., :, k:]
        y = q @ y_r
        gy = q @ gy_r
        gx = self._square_rule(q, x_r, gq + y @ _t(gy_r), gx_r)
        return self.xp.concatenate([gx, gy], axis=-1)


class SVD(Op):
    """A = U diag(S) V^T. Outputs (U, S, Vh) with compute_uv, else S only.

    Backward (Townsend; distinct, non-zero singular values), F_ij = 1 / (s_j^2 - s_i^2), F_ii = 0:
    gA = U [ (F o (U^T gU - gU^T U)) S + diag(gS) + S (F o (V^T gV - gV^T V)) ] V^T
         + (I - U U^T) gU S^-1 V^T + U S^-1 gV^T (I - V V^T).
    With full_matrices and M != N, only S may carry a gradient (the extra columns are not unique).
    """

    def forward(self, a):
        xp = self.xp
        need_uv = self.compute_uv or any(self.needs_grad)
        if not need_uv:
            return xp.linalg.svd(a, compute_uv=False)
        u, s, vh = _parts(xp, xp.linalg.svd(a, full_matrices=self.full_matrices))
        k = s.shape[-1]
        self.saved = (u[..., :, :k], s, vh[..., :k, :], a.shape)
        return (u, s, vh) if self.compute_uv else s

    def backward(self, *grads):
        xp = self.xp
        u, s, vh, shape = self.saved
        m, n = shape[-2], shape[-1]
        k = s.shape[-1]
        if not self.compute_uv:
            return (u * grads[0][..., None, :]) @ vh
        gu, gs, gvh = grads
        if self.full_matrices and m != n:
            if xp.any(gu != 0) or xp.any(gvh != 0):
                raise NotImplementedError("svd: gradients through U or Vh need full_matrices=False when the "
                                          "matrix is not square (their extra columns are not unique).")
            return (u * gs[..., None, :]) @ vh
        v, gv = _t(vh), _t(gvh)
        s2 = s * s
        f = s2[..., None, :] - s2[..., :, None]
        eye = xp.eye(k, dtype=bool)
        f = xp.where(eye, 0.0, 1.0 / xp.where(eye, 1.0, f)).astype(s.dtype)
        utgu = _t(u) @ gu
        vtgv = _t(v) @ gv
        core = (f * (utgu - _t(utgu))) * s[..., None, :] + s[..., :, None] * (f * (vtgv - _t(vtgv)))
        idx = xp.arange(k)
        core[..., idx, idx] += gs
        ga = u @ core @ vh
        if m > k:
            ga = ga + ((gu - u @ utgu) / s[..., None, :]) @ vh
        if n > k:
            ga = ga + (u / s[..., None, :]) @ _t(gv - v @ vtgv)
        return ga


class Eigh(Op):
    """Eigen-decomposition of a symmetric matrix (reads the lower triangle): w ascending, A = V diag(w) V^T.

    Backward (PyTorch's rule; distinct eigenvalues): gA = V (diag(gw) + skew(V^T gV) / 2 / E) V^T,
    E_ij = w_j - w_i, skew(X) = X - X^T.
    """

    def forward(self, a):
        w, v = _parts(self.xp, self.xp.linalg.eigh(a))
        self.saved = (w, v)
        return w, v

    def backward(self, gw, gv):
        xp = self.xp
        w, v = self.saved
        n = w.shape[-1]
        e = w[..., None, :] - w[..., :, None]
        idx = xp.arange(n)
        e[..., idx, idx] = 1.0
        vtgv = _t(v) @ gv
        core = (vtgv - _t(vtgv)) * 0.5 / e
        core[..., idx, idx] = gw
        return v @ core @ _t(v)


class SolveTriangular(Op):
    """x = A^-1 b with A lower (lower=True) or upper triangular; only that triangle of A is read.

    Backward: gb = A^-T gx (triangular, the other triangle), gA = tri(-gb x^T).
    """

    def forward(self, a, b):
        x = _tri_solve(self.xp, a, b, self.lower)
        self.saved = (a, x, a.shape, b.shape)
        return x

    def backward(self, gx):
        xp = self.xp
        a, x, sa, sb = self.saved
        gb = _tri_solve(xp, _t(a), gx, not self.lower)
        ga = None
        if self.needs_grad[0]:
            full = -gb @ _t(x)
            ga = unbroadcast(xp.tril(full) if self.lower else xp.triu(full), sa)
        return ga, unbroadcast(gb, sb) if self.needs_grad[1] else None


def _pinv(xp, a, rtol):
    """Pseudo-inverse by SVD: singular values <= rtol * largest count as zero (rtol default max(M, N) eps)."""
    m, n = a.shape[-2], a.shape[-1]
    if rtol is None:
        rtol = max(m, n) * np.finfo(a.dtype).eps
    u, s, vh = _parts(xp, xp.linalg.svd(a, full_matrices=False))
    cut = rtol * s.max(axis=-1, keepdims=True) if s.shape[-1] else s
    keep = s > cut
    s_inv = xp.where(keep, 1.0 / xp.where(keep, s, 1.0), 0.0).astype(a.dtype)
    return (_t(vh) * s_inv[..., None, :]) @ _t(u)


def _pinv_backward(xp, a, p, g):
    """Gradient of A for the gradient g of P = pinv(A) (constant rank):
    gA = -P^T g P^T + (I - A P) g^T P P^T + P^T P g^T (I - P A)."""
    m, n = a.shape[-2], a.shape[-1]
    pt, gt = _t(p), _t(g)
    ga = -(pt @ g @ pt)
    ga = ga + (xp.eye(m, dtype=a.dtype) - a @ p) @ gt @ p @ pt
    ga = ga + pt @ p @ gt @ (xp.eye(n, dtype=a.dtype) - p @ a)
    return ga


class Pinv(Op):
    """Moore-Penrose pseudo-inverse (..., N, M) by SVD with relative cutoff rcond.

    Backward: the Golub-Pereyra derivative (constant rank), see _pinv_backward.
    """

    def forward(self, a):
        p = _pinv(self.xp, a, self.rcond)
        self.saved = (a, p)
        return p

    def backward(self, g):
        a, p = self.saved
        return _pinv_backward(self.xp, a, p, g)


class Lstsq(Op):
    """Least-squares x = argmin ||A x - b||_2 (minimum norm), A (M, N), b (M, K). x = pinv(A) b.

    Backward: gb = P^T gx; gA from the pseudo-inverse's derivative with gP = gx b^T.
    """

    def forward(self, a, b):
        p = _pinv(self.xp, a, self.rcond)
        self.saved = (a, b, p)
        return p @ b

    def backward(self, gx):
        xp = self.xp
        a, b, p = self.saved
        ga = _pinv_backward(xp, a, p, gx @ _t(b)) if self.needs_grad[0] else None
        gb = _t(p) @ gx if self.needs_grad[1] else None
        return ga, gb


class VectorNorm(Op):
    """||x||_p over ``axes`` (a tuple): p = inf / -inf (max / min |x|), 0 (count of non-zeros), else
    (sum |x|^p)^(1/p).

    Backward: p-norm: g sign(x) |x|^(p-1) / n^(p-1) (0 where n = 0); inf / -inf: g sign(x) shared equally
    by the entries that reach the extremum; 0: no gradient.
    """

    def forward(self, x):
        xp = self.xp
        p, axes = self.ord, self.axes
        ax = xp.abs(x)
        if p == np.inf:
            n = ax.max(axis=axes, keepdims=True)
        elif p == -np.inf:
            n = ax.min(axis=axes, keepdims=True)
        elif p == 0:
            n = (x != 0).sum(axis=axes, keepdims=True).astype(x.dtype)
        elif p == 1:
            n = ax.sum(axis=axes, keepdims=True)
        elif p == 2:
            n = xp.sqrt((x * x).sum(axis=axes, keepdims=True))
        else:
            with np.errstate(divide="ignore"):   # p < 0 with a zero entry: the norm is 0, as in torch
                n = ((ax ** p).sum(axis=axes, keepdims=True)) ** (1.0 / p)
        self.saved = (x, n)
        if self.keepdims:
            return n
        return n.reshape([s for i, s in enumerate(n.shape) if i not in axes])

    def backward(self, g):
        xp = self.xp
        x, n = self.saved
        p, axes = self.ord, self.axes
        g = g.reshape(n.shape)
        if p == 0:
            return xp.zeros_like(x)
        sgn = xp.sign(x)
        if p in (np.inf, -np.inf):
            mask = (xp.abs(x) == n)
            return (sgn * mask * (g / mask.sum(axis=axes, keepdims=True))).astype(x.dtype)
        if p == 1:
            return (sgn * g).astype(x.dtype)
        safe = xp.where(n == 0, 1.0, n)
        if p == 2:
            out = x * (g / safe)
        else:
            out = sgn * xp.abs(x) ** (p - 1) * (g / safe ** (p - 1))
        return xp.where(n == 0, 0.0, out).astype(x.dtype)


class LUFactor(Op):
    """LU with partial pivoting, packed as LAPACK's getrf: (LU, pivots), pivots 0-based int32 (row i was swapped
    with row pivots[i] at step i). The elimination steps are sequential; each is vectorised over the batch.

    Backward (square matrices, PyTorch's rule): with A = P L U, gL = tril(gLU, -1), gU = triu(gLU),
    gA = P L^-T (tril(L^T gL, -1) + triu(gU U^T)) U^-T.
    """

    def forward(self, x):
        xp = self.xp
        batch, (m, n) = x.shape[:-2], x.shape[-2:]
        a = x.reshape((-1, m, n)).copy()
        nb, k = a.shape[0], min(m, n)
        piv = xp.zeros((nb, k), dtype=np.int32)
        perm = xp.broadcast_to(xp.arange(m), (nb, m)).copy()
        bi = xp.arange(nb)
        for j in range(k):
            p = xp.argmax(xp.abs(a[:, j:, j]), axis=-1) + j
            piv[:, j] = p
            row_j, row_p = a[bi, j].copy(), a[bi, p].copy()
            a[bi, j], a[bi, p] = row_p, row_j
            pj, pp = perm[bi, j].copy(), perm[bi, p].copy()
            perm[bi, j], perm[bi, p] = pp, pj
            pivot = a[:, j, j]
            safe = xp.where(pivot == 0, 1.0, pivot).astype(a.dtype)
            col = xp.where((pivot == 0)[:, None], a[:, j + 1:, j], a[:, j + 1:, j] / safe[:, None])
            a[:, j + 1:, j] = col
            a[:, j + 1:, j + 1:] -= col[:, :, None] * a[:, j, None, j + 1:]
        lu = a.reshape(batch + (m, n))
        self.saved = (lu, perm.reshape(batch + (m,)))
        return lu, piv.reshape(batch + (k,)).astype(x.dtype)   # a float output (exact): see lu_factor

    def backward(self, g, _gpiv):
        xp = self.xp
        lu, perm = self.saved
        m, n = lu.shape[-2:]
        if m != n:
            raise NotImplementedError("lu_factor: the gradient is implemented for square matrices only.")
        eye = xp.eye(n, dtype=lu.dtype)
        lo = xp.tril(lu, -1) + eye
        up = xp.triu(lu)
        phi = xp.tril(_t(lo) @ xp.tril(g, -1), -1) + xp.triu(xp.triu(g) @ _t(up))
        inner = _tri_solve(xp, _t(lo), phi, False)                  # L^-T phi
        m_ = _t(_tri_solve(xp, up, _t(inner), False))               # (U^-1 (L^-T phi)^T)^T = L^-T phi U^-T
        ga = xp.zeros_like(m_)
        batch = m_.shape[:-2]
        flat_g, flat_m, flat_p = ga.reshape(-1, n, n), m_.reshape(-1, n, n), perm.reshape(-1, n)
        bi = xp.arange(flat_g.shape[0])[:, None]
        flat_g[bi, flat_p] = flat_m                                 # gA[perm] = L^-T phi U^-T
        return flat_g.reshape(batch + (n, n))
