"""``keras.ops.linalg``: linear algebra, differentiable where Keras's is.

All functions take stacks of matrices (..., M, N) and work per matrix. The decompositions and solvers
are the Op classes of ``decompositions.py`` (gradient rules written there); norms, cholesky_inverse and
the rest compose them with the elementwise kernels.

Dtypes: float32 and float64 stay as they are; float16 is computed in float32 and cast back (PyTorch's
CPU kernels refuse half precision, lamina accepts it); integer and bool inputs are computed in floatx
(Keras's torch backend raises for them, except in ``norm``, where int64 gives floatx and other dtypes
``result_type(dtype, float)`` as in Keras).
"""
import numpy as np

from .. import backend
from ..dtypes import result_type, standardize_dtype
from ..tensor import Tensor, as_tensor, enable_grad, grad as _grad
from . import decompositions as _d
from . import manipulation as _s
from . import math as _m

__all__ = ["cholesky", "cholesky_inverse", "det", "eig", "eigh", "inv", "jvp", "lstsq", "lu_factor",
           "matrix_rank", "norm", "pinv", "qr", "solve", "solve_triangular", "svd"]


# ----------------------------------------------------------------------------- helpers
def _float(x):
    """(tensor in a float dtype the kernels accept, dtype the result returns in)."""
    t = as_tensor(x)
    dt = t.dtype
    if dt in (np.float32, np.float64):
        return t, dt
    if dt == np.float16:
        return _m.cast(t, "float32"), dt
    return _m.cast(t, backend.floatx()), np.dtype(backend.floatx())


def _back(y, dtype):
    return y if y.dtype == dtype else _m.cast(y, dtype)


def _assert_2d(*xs):
    for x in xs:
        if x.ndim < 2:
            raise ValueError(f"Expected input to have rank >= 2. Received input with shape {x.shape}.")


def _assert_square(*xs):
    for x in xs:
        if x.shape[-1] != x.shape[-2]:
            raise ValueError(f"Expected a square matrix. Received non-square input with shape {x.shape}")


def _assert_1d(*xs):
    for x in xs:
        if x.ndim < 1:
            raise ValueError(f"Expected input to have rank >= 1. Received scalar input {x}.")


def _assert_a_b_compat(a, b):
    if a.ndim == b.ndim and a.shape[-2] != b.shape[-2]:
        raise ValueError("Incompatible shapes between `a` and `b`. Expected `a.shape[-2] == b.shape[-2]`. "
                         f"Received: a.shape={a.shape}, b.shape={b.shape}")
    if a.ndim == b.ndim - 1 and a.shape[-1] != b.shape[-1]:
        raise ValueError("Incompatible shapes between `a` and `b`. Expected `a.shape[-1] == b.shape[-1]`. "
                         f"Received: a.shape={a.shape}, b.shape={b.shape}")


def _xp(t):
    return backend.get_array_module(t.data)


# ----------------------------------------------------------------------------- solvers and inverses
def solve(a, b):
    """x with a @ x = b for square a (..., M, M); b (..., M) (a batch of vectors) or (..., M, K).

    Gradient: gb = a^-T gx, ga = -gb x^T.
    """
    a, dt = _float(a)
    b, dtb = _float(b)
    _assert_2d(a)
    _assert_square(a)
    _assert_1d(b)
    _assert_a_b_compat(a, b)
    if a.dtype != b.dtype:
        common = np.promote_types(a.dtype, b.dtype)
        a, b = _m.cast(a, common), _m.cast(b, common)
    vector = b.ndim == 1 or (b.ndim == a.ndim - 1 and b.shape == a.shape[:-1])
    if vector:
        x = _s.squeeze(_d.Solve.apply(a, _s.expand_dims(b, -1)), -1)
    else:
        x = _d.Solve.apply(a, b)
    return _back(x, np.promote_types(dt, dtb))


def solve_triangular(a, b, lower=False):
    """x with a @ x = b for triangular a (only the lower (lower=True) or upper triangle is read).

    b: (..., M) or (..., M, K). Gradient: gb = a^-T gx; ga = the same triangle of -gb x^T.
    """
    a, dt = _float(a)
    b, dtb = _float(b)
    _assert_2d(a)
    _assert_square(a)
    _assert_1d(b)
    _assert_a_b_compat(a, b)
    if a.dtype != b.dtype:
        common = np.promote_types(a.dtype, b.dtype)
        a, b = _m.cast(a, common), _m.cast(b, common)
    if b.ndim == a.ndim - 1:
        x = _s.squeeze(_d.SolveTriangular.apply(a, _s.expand_dims(b, -1), lower=bool(lower)), -1)
    else:
        x = _d.SolveTriangular.apply(a, b, lower=bool(lower))
    return _back(x, np.promote_types(dt, dtb))


def inv(x):
    """Inverse of square matrices (..., M, M). Gradient: gx = -y^T gy y^T, y = x^-1."""
    x, dt = _float(x)
    _assert_2d(x)
    _assert_square(x)
    return _back(_d.Inv.apply(x), dt)


def det(x):
    """Determinant of square matrices (..., M, M) -> (...). Gradient: g det(x) x^-T."""
    x, dt = _float(x)
    _assert_2d(x)
    _assert_square(x)
    return _back(_d.Det.apply(x), dt)


def pinv(x, rcond=None):
    """Moore-Penrose pseudo-inverse (..., N, M) by SVD; singular values <= rcond * largest are dropped
    (default rcond: max(M, N) * eps). Gradient: the Golub-Pereyra formula (constant rank)."""
    x, dt = _float(x)
    _assert_2d(x)
    return _back(_d.Pinv.apply(x, rcond=None if rcond is None else float(rcond)), dt)


def lstsq(a, b, rcond=None):
    """Minimum-norm least-squares solution x of a @ x ~= b; a (M, N), b (M,) or (M, K) -> (N,) or (N, K).

    Computed as pinv(a, rcond) @ b (rcond: relative cutoff of small singular values, default
    max(M, N) * eps). Gradient: gb = pinv(a)^T gx; ga from the pseudo-inverse's derivative.
    """
    a, dt = _float(a)
    b, dtb = _float(b)
    if a.ndim != 2:
        raise ValueError(f"Expected a to have rank 2. Received a.shape={a.shape}")
    if b.ndim not in (1, 2):
        raise ValueError(f"Expected b to have rank 1 or 2. Received b.shape={b.shape}")
    if b.shape[0] != a.shape[0]:
        raise ValueError(f"Expected b.shape[0] to be equal to a.shape[0]. Received: a.shape={a.shape}, "
                         f"b.shape={b.shape}")
    if a.dtype != b.dtype:
        common = np.promote_types(a.dtype, b.dtype)
        a, b = _m.cast(a, common), _m.cast(b, common)
    rc = None if rcond is None else float(rcond)
    if b.ndim == 1:
        x = _s.squeeze(_d.Lstsq.apply(a, _s.expand_dims(b, -1), rcond=rc), -1)
    else:
        x = _d.Lstsq.apply(a, b, rcond=rc)
    return _back(x, dt)


# ----------------------------------------------------------------------------- decompositions
def cholesky(x, upper=False):
    """Cholesky factor of symmetric positive-definite x: lower L (x = L L^T), or upper U (x = U^T U).

    Reads x's lower triangle. Gradient (PyTorch's): sym(L^-T Phi(L^T gL) L^-1), Phi = tril with the
    diagonal halved. Raises ValueError when x is not positive definite.
    """
    x, dt = _float(x)
    _assert_2d(x)
    _assert_square(x)
    try:
        y = _d.Cholesky.apply(x, upper=bool(upper))
    except np.linalg.LinAlgError as e:
        raise ValueError(f"Cholesky decomposition failed: {e}") from None
    return _back(y, dt)


def cholesky_inverse(x, upper=False):
    """Inverse of A from its Cholesky factor x: (x x^T)^-1 for lower x, (x^T x)^-1 for upper x.

    Differentiable through matmul and inv.
    """
    x, dt = _float(x)
    _assert_2d(x)
    _assert_square(x)
    xt = _s.swapaxes(x, -1, -2)
    a = _m.matmul(xt, x) if upper else _m.matmul(x, xt)
    try:
        return _back(_d.Inv.apply(a), dt)
    except np.linalg.LinAlgError as e:
        raise ValueError(f"Cholesky inverse failed: {e}") from None


def qr(x, mode="reduced"):
    """QR decomposition x = Q R: mode 'reduced' gives Q (..., M, K), R (..., K, N), K = min(M, N);
    'complete' gives Q (..., M, M), R (..., M, N).

    Gradient for M >= N (and M < N by splitting x = [X | Y]); not for 'complete' with M > N.
    """
    if mode not in {"reduced", "complete"}:
        raise ValueError("`mode` argument value not supported. Expected one of {'reduced', 'complete'}. "
                         f"Received: mode={mode}")
    x, dt = _float(x)
    _assert_2d(x)
    q, r = _d.QR.apply(x, mode=mode)
    return _back(q, dt), _back(r, dt)


def svd(x, full_matrices=True, compute_uv=True):
    """Singular value decomposition x = U diag(S) Vh; returns (U, S, Vh), or S alone when compute_uv=False.

    Gradient (distinct non-zero singular values): the Townsend formula; through U / Vh only with
    full_matrices=False or square x.
    """
    x, dt = _float(x)
    _assert_2d(x)
    out = _d.SVD.apply(x, full_matrices=bool(full_matrices), compute_uv=bool(compute_uv))
    if compute_uv:
        return tuple(_back(o, dt) for o in out)
    return _back(out, dt)


def eigh(x):
    """Eigenvalues (ascending) and eigenvectors of symmetric x (lower triangle read): (w, V), x = V diag(w) V^T.

    Gradient (distinct eigenvalues): V (diag(gw) + skew(V^T gV) / 2 / E) V^T, E_ij = w_j - w_i.
    """
    x, dt = _float(x)
    _assert_2d(x)
    _assert_square(x)
    w, v = _d.Eigh.apply(x)
    return _back(w, dt), _back(v, dt)


def eig(x):
    """Eigenvalues and right eigenvectors of a general square matrix, as complex tensors (complex64 for
    float32 input, complex128 for float64). Not differentiable (lamina's autograd is real-valued)."""
    x, _ = _float(x)
    _assert_2d(x)
    _assert_square(x)
    host = backend.to_numpy(x.data)
    w, v = np.linalg.eig(host)
    ctype = np.complex128 if x.dtype == np.float64 else np.complex64
    xp = _xp(x)
    return Tensor(xp.asarray(w.astype(ctype))), Tensor(xp.asarray(v.astype(ctype)))


def lu_factor(x):
    """LU decomposition with partial pivoting, packed as LAPACK's getrf: (LU, pivots), L unit-lower below
    the diagonal and U on and above it; pivots (..., min(M, N)) int32, 0-based: row i was swapped with
    row pivots[i] at step i.

    Gradient of LU for square x (PyTorch's rule): P L^-T (tril(L^T gL, -1) + triu(gU U^T)) U^-T.
    """
    x, dt = _float(x)
    _assert_2d(x)
    lu, piv = _d.LUFactor.apply(x)
    return _back(lu, dt), Tensor(piv.data.astype(np.int32))   # the op's outputs are float, pivots int32


def matrix_rank(x, tol=None):
    """Number of singular values above tol (absolute), or, when tol is None, above
    max(M, N) * eps * largest singular value; int32 of shape (...)."""
    x, _ = _float(x)
    _assert_2d(x)
    xp = _xp(x)
    s = xp.linalg.svd(x.data, compute_uv=False)
    if tol is None:
        m, n = x.shape[-2:]
        cut = max(m, n) * np.finfo(x.dtype).eps * (s.max(axis=-1, keepdims=True) if s.shape[-1] else s)
    else:
        cut = float(tol)
    return Tensor((s > cut).sum(axis=-1).astype(np.int32))


# ----------------------------------------------------------------------------- norms
_MATRIX_ORDS = (None, "fro", "nuc", np.inf, -np.inf, 1, -1, 2, -2)


def _reinsert(y, axes, ndim, keepdims):
    if not keepdims:
        return y
    shape = list(y.shape)
    for a in sorted(axes):
        shape.insert(a, 1)
    return _s.reshape(y, tuple(shape))


def _matrix_norm(x, ord, axes, keepdims):
    r, c = axes
    if ord in (None, "fro"):
        return _d.VectorNorm.apply(x, ord=2, axes=(r, c), keepdims=keepdims)
    if ord in ("nuc", 2, -2):
        rest = [i for i in range(x.ndim) if i not in (r, c)]
        xt = _s.transpose(x, tuple(rest) + (r, c))
        s = _d.SVD.apply(xt, full_matrices=False, compute_uv=False)
        y = _m.sum(s, -1) if ord == "nuc" else (_m.max(s, -1) if ord == 2 else _m.min(s, -1))
        return _reinsert(y, (r, c), x.ndim, keepdims)
    # 1 / -1: max / min over columns of the column sums of |x|; inf / -inf: the same over rows
    inner, outer = (r, c) if ord in (1, -1) else (c, r)
    sums = _m.sum(_m.abs(x), inner, keepdims=True)
    y = (_m.max if ord in (1, np.inf) else _m.min)(sums, outer, keepdims=True)
    return y if keepdims else _s.squeeze(y, (r, c))


def norm(x, ord=None, axis=None, keepdims=False):
    """Vector norm (one axis: ord None/2, inf, -inf, 0, any p) or matrix norm (two axes: None/'fro', 'nuc',
    inf, -inf, 1, -1, 2, -2); axis=None: 2-norm of the flattened x when ord is None, else x must be 1-D or 2-D.

    Gradient: vector p-norms sign(x)|x|^(p-1)/n^(p-1) (zero at n = 0), inf-norms to the extreme entries,
    spectral / nuclear norms through the SVD.
    """
    x = as_tensor(x)
    dt = standardize_dtype(x.dtype)
    out_dt = backend.floatx() if dt == "int64" else result_type(dt, float)
    x = _m.cast(x, out_dt) if dt != out_dt else x
    return _norm(x, ord, axis, keepdims)


def _norm(x, ord, axis, keepdims):
    """norm without the dtype rule (float64 stays float64), for the kernels and the gradient checks."""
    x = as_tensor(x)
    if isinstance(ord, str) and ord not in ("fro", "nuc"):
        raise ValueError(f"Invalid `ord` argument. Expected one of {{'fro', 'nuc'}} when using string. "
                         f"Received: ord={ord}")
    if axis is None:
        if ord is None:
            return _d.VectorNorm.apply(x, ord=2, axes=tuple(range(x.ndim)), keepdims=bool(keepdims))
        if x.ndim not in (1, 2):
            raise ValueError(f"norm: with ord={ord!r} and axis=None the input must be 1-D or 2-D, "
                             f"got shape {x.shape}.")
        axis = tuple(range(x.ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    axes = tuple(_m.axis_index(a, x.ndim) for a in axes)
    if len(axes) == 1:
        if isinstance(ord, str):
            raise ValueError(f"Invalid `ord` argument for vector norm. Received: ord={ord}")
        p = 2.0 if ord is None else float(ord)
        return _d.VectorNorm.apply(x, ord=p, axes=axes, keepdims=bool(keepdims))
    if len(axes) == 2:
        if axes[0] == axes[1]:
            raise ValueError(f"norm: the two axes must differ, got axis={axis}.")
        if ord not in _MATRIX_ORDS:
            raise ValueError(f"Invalid `ord` argument for matrix norm. Received: ord={ord}")
        return _matrix_norm(x, ord, axes, bool(keepdims))
    raise ValueError(f"norm: axis must name one or two axes, got axis={axis}.")


# ----------------------------------------------------------------------------- forward mode
def _flatten(tree):
    if isinstance(tree, (list, tuple)):
        return [leaf for item in tree for leaf in _flatten(item)]
    if isinstance(tree, dict):
        return [leaf for k in sorted(tree) for leaf in _flatten(tree[k])]
    return [tree]


def _rebuild(tree, leaves):
    if isinstance(tree, (list, tuple)):
        items = [_rebuild(item, leaves) for item in tree]
        return type(tree)(items) if isinstance(tree, list) else tuple(items)
    if isinstance(tree, dict):
        return {k: _rebuild(tree[k], leaves) for k in sorted(tree)}
    return leaves.pop(0)


def jvp(fun, primals, tangents, has_aux=False):
    """Jacobian-vector product: (fun(*primals), J(primals) @ tangents), plus aux when has_aux.

    lamina is reverse-mode only, so the product is exact but computed row by row: one backward pass per
    output element (J[i, :] . t, reusing one recorded forward). Cost grows with the output size; meant
    for small outputs (scalars, short vectors), as in tests and Hessian-vector checks of few outputs.
    """
    if not isinstance(primals, (list, tuple)) or not isinstance(tangents, (list, tuple)):
        raise TypeError("jvp: primals and tangents must be tuples or lists of arguments.")
    if len(primals) != len(tangents):
        raise ValueError(f"jvp: got {len(primals)} primals and {len(tangents)} tangents.")
    p_leaves = _flatten(list(primals))
    t_leaves = _flatten(list(tangents))
    if len(p_leaves) != len(t_leaves):
        raise ValueError("jvp: tangents must have the same structure as primals.")
    inputs = []
    for p, t in zip(p_leaves, t_leaves):
        pt = as_tensor(p)
        if np.issubdtype(pt.dtype, np.floating):
            pt = Tensor(pt.data, requires_grad=True)
        tt = as_tensor(t)
        if tt.shape != pt.shape:
            raise ValueError(f"jvp: a tangent has shape {tt.shape}, its primal {pt.shape}.")
        inputs.append((pt, tt))
    args = _rebuild(list(primals), [pt for pt, _ in inputs])
    with enable_grad():
        out = fun(*args)
    aux = None
    if has_aux:
        out, aux = out
    targets = [pt for pt, _ in inputs if pt.requires_grad]
    tans = [tt for pt, tt in inputs if pt.requires_grad]
    outs = _flatten(out)
    tangent_leaves = []
    for y in outs:
        y = as_tensor(y)
        xp = _xp(y)
        if not (np.issubdtype(y.dtype, np.floating) and y.requires_grad):
            tangent_leaves.append(Tensor(xp.zeros(y.shape, y.dtype if np.issubdtype(y.dtype, np.floating)
                                                 else np.float32)))
            continue
        res = xp.zeros(y.size, dtype=np.float64)
        for i in range(y.size):
            seed = xp.zeros(y.size, y.dtype)
            seed[i] = 1
            gs = _grad(y, targets, grad_output=seed.reshape(y.shape), retain_graph=True)
            res[i] = sum(float((g * tt.data).sum()) for g, tt in zip(gs, tans) if g is not None)
        tangent_leaves.append(Tensor(res.reshape(y.shape).astype(y.dtype)))
    primal_out = _rebuild(out if isinstance(out, (list, tuple, dict)) else [out],
                          [Tensor(as_tensor(y).data) for y in outs])
    tangent_out = _rebuild(out if isinstance(out, (list, tuple, dict)) else [out], tangent_leaves)
    if not isinstance(out, (list, tuple, dict)):
        primal_out, tangent_out = primal_out[0], tangent_out[0]
    return (primal_out, tangent_out, aux) if has_aux else (primal_out, tangent_out)
