"""keras.ops.linalg: values against Keras 3.15 (torch backend) and PyTorch, gradients by central
differences (lamina.testing.check_grad) and against torch autograd, dtypes, keyword calls."""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")

from lamina import Tensor  # noqa: E402
from lamina.ops import linalg as L  # noqa: E402
from lamina.ops.manipulation import swapaxes  # noqa: E402
from lamina.testing import check_grad  # noqa: E402

kops = lazy_module("keras.ops")
RNG = np.random.default_rng(0)
A = RNG.standard_normal((2, 4, 4)).astype("float32")
B = RNG.standard_normal((2, 4, 3)).astype("float32")
SPD = A @ A.transpose(0, 2, 1) + 4 * np.eye(4, dtype="float32")


def _np(t):
    return np.asarray(t.detach().cpu().numpy() if hasattr(t, "detach") else t)


def close(got, want, tol=1e-5):
    want = _np(want)
    np.testing.assert_allclose(np.asarray(got), want, rtol=tol, atol=tol)


def sym(x):
    """Symmetric part: the gradient check then perturbs a symmetric matrix, as the rules assume."""
    return (x + swapaxes(x, -1, -2)) * 0.5


def test_namespace_matches_keras_signatures():
    import inspect
    import json
    sigs = json.load(open(os.path.join(os.path.dirname(__file__), "data", "keras_ops_signatures.json")))["linalg"]
    assert sorted(L.__all__) == sorted(sigs)
    for name, sig in sigs.items():
        assert str(inspect.signature(getattr(L, name))) == sig, name
        assert getattr(L, name).__doc__.strip().splitlines()[0]


# ----------------------------------------------------------------------------- values against Keras
@pytest.mark.parametrize("name,args", [
    ("det", (A,)), ("inv", (A,)), ("solve", (A, B)), ("solve", (A, B[..., 0])), ("cholesky", (SPD,)),
    ("cholesky_inverse", (np.linalg.cholesky(SPD),)), ("pinv", (B,)), ("lstsq", (B[0], B[0, :, :2])),
    ("lstsq", (B[0], B[0, :, 0])), ("matrix_rank", (B,)), ("solve_triangular", (SPD, B)),
    ("solve_triangular", (SPD, B[..., 0])),
])
def test_values_match_keras(name, args):
    got = getattr(L, name)(*args)
    want = getattr(kops, name)(*args)
    assert got.dtype == np.dtype(keras.backend.standardize_dtype(want.dtype))
    close(got.numpy(), want, 2e-5)


def test_keyword_calls_and_options():
    close(L.cholesky(x=SPD, upper=True).numpy(), kops.cholesky(SPD, upper=True))
    close(L.cholesky_inverse(x=np.linalg.cholesky(SPD).transpose(0, 2, 1), upper=True).numpy(),
          kops.cholesky_inverse(np.linalg.cholesky(SPD).transpose(0, 2, 1), upper=True))
    close(L.solve_triangular(a=SPD, b=B, lower=True).numpy(), kops.solve_triangular(SPD, B, lower=True))
    close(L.solve(a=A, b=B).numpy(), kops.solve(A, B))
    close(L.pinv(x=B, rcond=0.5).numpy(), kops.pinv(B, rcond=0.5))
    close(L.lstsq(a=B[0], b=B[0, :, 0], rcond=0.3).numpy(), kops.lstsq(B[0], B[0, :, 0], rcond=0.3))
    low = np.diag([3.0, 1.0, 1e-3]).astype("float32")
    assert int(L.matrix_rank(x=low, tol=0.01)) == int(kops.matrix_rank(low, tol=0.01)) == 2
    assert L.matrix_rank(low).dtype == np.int32


def test_decompositions_match_torch():
    q, r = L.qr(B)
    tq, tr = torch.linalg.qr(torch.tensor(B))
    close(q.numpy(), tq)
    close(r.numpy(), tr)
    q, r = L.qr(B, mode="complete")
    assert q.shape == (2, 4, 4) and r.shape == (2, 4, 3)
    close((q.numpy() @ r.numpy()), B)
    w, v = L.eigh(SPD)
    tw, tv = torch.linalg.eigh(torch.tensor(SPD))
    close(w.numpy(), tw, 1e-5 * 20)
    close(np.abs(v.numpy()), np.abs(_np(tv)), 1e-5)     # eigenvectors are defined up to sign
    u, s, vh = L.svd(A)
    tu, ts, tvh = torch.linalg.svd(torch.tensor(A))
    close(s.numpy(), ts)
    close(u.numpy(), tu)
    close(vh.numpy(), tvh)
    for full in (True, False):   # non-square: columns agree with torch's up to sign
        u, s, vh = L.svd(B, full_matrices=full)
        tu, ts, tvh = torch.linalg.svd(torch.tensor(B), full_matrices=full)
        assert u.shape == tuple(tu.shape) and vh.shape == tuple(tvh.shape)
        close(s.numpy(), ts)
        close(np.abs(u.numpy()[..., :3]), np.abs(_np(tu)[..., :3]))
        close(np.abs(vh.numpy()), np.abs(_np(tvh)))
        close((u.numpy()[..., :3] * s.numpy()[..., None, :]) @ vh.numpy()[..., :3, :], B)
    close(L.svd(B, compute_uv=False).numpy(), kops.svd(B, compute_uv=False))
    lu, piv = L.lu_factor(A)
    klu, kpiv = kops.lu_factor(A)
    close(lu.numpy(), klu)
    np.testing.assert_array_equal(piv.numpy(), _np(kpiv))
    assert piv.dtype == np.int32
    lu, piv = L.lu_factor(B)      # non-square, as torch's getrf
    klu, kpiv = kops.lu_factor(B)
    close(lu.numpy(), klu)
    np.testing.assert_array_equal(piv.numpy(), _np(kpiv))
    g = RNG.standard_normal((3, 3)).astype("float32")
    w, v = L.eig(g)
    kw, kv = kops.eig(g)
    assert w.dtype == np.complex64 and v.dtype == np.complex64
    close(w.numpy(), kw)
    close(v.numpy(), kv)


def test_cholesky_rejects_indefinite():
    with pytest.raises(ValueError, match="Cholesky"):
        L.cholesky(-np.eye(3, dtype="float32"))
    with pytest.raises(ValueError, match="square"):
        L.inv(B)
    with pytest.raises(ValueError, match="rank >= 2"):
        L.det(np.ones(3, "float32"))


# ----------------------------------------------------------------------------- norms
X = (np.arange(24, dtype="float32").reshape(2, 3, 4) - 11) / 3


@pytest.mark.parametrize("ord,axis", [
    (None, None), (None, -1), (2, 1), (1, 0), (np.inf, -1), (-np.inf, -1), (0, -1), (3, -1), (-1, -1),
    (0.5, 2), (None, (1, 2)), ("fro", (1, 2)), ("nuc", (1, 2)), (np.inf, (1, 2)), (-np.inf, (2, 1)),
    (1, (1, 2)), (-1, (1, 2)), (2, (1, 2)), (-2, (2, 1)), (2, (0, 2)),
])
@pytest.mark.parametrize("keepdims", [False, True])
def test_norm_matches_keras(ord, axis, keepdims):
    got = L.norm(X, ord=ord, axis=axis, keepdims=keepdims)
    want = kops.norm(X, ord=ord, axis=axis, keepdims=keepdims)
    assert got.shape == tuple(want.shape)
    close(got.numpy(), want, 2e-5)


def test_norm_whole_and_dtypes():
    close(L.norm(X[0], ord=1).numpy(), kops.norm(X[0], ord=1))
    close(L.norm(X[0, 0], ord=np.inf).numpy(), kops.norm(X[0, 0], ord=np.inf))
    for dt in ["int32", "int64", "bool", "float16", "float32", "float64"]:
        x = np.ones((3, 3), dt)
        assert L.norm(x).dtype == np.dtype(keras.backend.standardize_dtype(kops.norm(x).dtype)), dt
    with pytest.raises(ValueError, match="ord"):
        L.norm(X, ord="nuc", axis=-1)
    with pytest.raises(ValueError, match="ord"):
        L.norm(X, ord=3, axis=(1, 2))


@pytest.mark.parametrize("ord,axis", [(None, None), (2, -1), (1, -1), (3, -1), (0.5, -1), (np.inf, -1),
                                      (-np.inf, -1), ("fro", (1, 2)), ("nuc", (1, 2)), (2, (1, 2)),
                                      (-2, (1, 2)), (1, (1, 2)), (np.inf, (1, 2))])
def test_norm_gradients(ord, axis):
    x = RNG.standard_normal((2, 3, 4))
    check_grad(lambda t: L._norm(t, ord, axis, False), x)
    # and torch autograd through keras's torch norm agrees
    x = x.astype("float32")
    tx = torch.tensor(x, requires_grad=True)
    kops.norm(tx, ord=ord, axis=axis).sum().backward()
    xt = Tensor(x, requires_grad=True)
    L.norm(xt, ord=ord, axis=axis).sum().backward()
    close(xt.grad, tx.grad, 1e-5)


def test_norm_gradient_zero_at_zero():
    x = Tensor(np.zeros((2, 3)), requires_grad=True)
    L.norm(x, axis=-1).sum().backward()
    np.testing.assert_array_equal(x.grad, 0)


# ----------------------------------------------------------------------------- gradients
A64, B64, SPD64 = A.astype("float64"), B.astype("float64"), SPD.astype("float64")
BT64 = np.ascontiguousarray(B64.swapaxes(1, 2))


@pytest.mark.parametrize("label,fn,args", [
    ("solve", lambda a, b: L.solve(a, b), (A64, B64)),
    ("solve_vec", lambda a, b: L.solve(a, b), (A64, B64[..., 0])),
    ("inv", L.inv, (A64,)),
    ("det", L.det, (A64,)),
    ("lu_factor", lambda x: L.lu_factor(x)[0], (A64,)),
    ("cholesky", lambda x: L.cholesky(sym(x)), (SPD64,)),
    ("cholesky_upper", lambda x: L.cholesky(sym(x), upper=True), (SPD64,)),
    ("cholesky_inverse", L.cholesky_inverse, (np.linalg.cholesky(SPD64),)),
    ("qr_q", lambda x: L.qr(x)[0], (B64,)),
    ("qr_r", lambda x: L.qr(x)[1], (B64,)),
    ("qr_wide_q", lambda x: L.qr(x)[0], (BT64,)),
    ("qr_wide_r", lambda x: L.qr(x)[1], (BT64,)),
    ("svd_u", lambda x: L.svd(x, full_matrices=False)[0], (B64,)),
    ("svd_s", lambda x: L.svd(x, full_matrices=False)[1], (B64,)),
    ("svd_vh", lambda x: L.svd(x, full_matrices=False)[2], (B64,)),
    ("svd_wide_u", lambda x: L.svd(x, full_matrices=False)[0], (BT64,)),
    ("svd_wide_vh", lambda x: L.svd(x, full_matrices=False)[2], (BT64,)),
    ("svd_square_full", lambda x: L.svd(x)[0], (A64,)),
    ("svdvals", lambda x: L.svd(x, compute_uv=False), (B64,)),
    ("eigh_w", lambda x: L.eigh(sym(x))[0], (SPD64,)),
    ("eigh_v", lambda x: L.eigh(sym(x))[1], (SPD64,)),
    ("solve_triangular_lower", lambda a, b: L.solve_triangular(a, b, lower=True), (SPD64, B64)),
    ("solve_triangular_upper", lambda a, b: L.solve_triangular(a, b), (SPD64, B64[..., 0])),
    ("pinv_tall", L.pinv, (B64,)),
    ("pinv_wide", L.pinv, (BT64,)),
    ("lstsq", lambda a, b: L.lstsq(a, b), (B64[0], B64[1, :, :2])),
    ("lstsq_under", lambda a, b: L.lstsq(a, b), (BT64[0], BT64[1, :, 0])),
])
def test_gradients_numerical(label, fn, args):
    check_grad(fn, *args, name=label)


def test_gradients_match_torch_autograd():
    """The rules agree with torch's autograd, not only with finite differences."""
    cases = [
        (lambda m: L.cholesky(m), lambda m: torch.linalg.cholesky(m), SPD64),
        (lambda m: L.eigh(m)[1], lambda m: torch.linalg.eigh(m)[1], SPD64),
        (lambda m: L.qr(m)[0], lambda m: torch.linalg.qr(m)[0], B64),
        (lambda m: L.svd(m)[0], lambda m: torch.linalg.svd(m)[0], A64),
        (L.pinv, torch.linalg.pinv, B64),
        (L.det, torch.linalg.det, A64),
        (lambda m: L.lu_factor(m)[0], lambda m: torch.linalg.lu_factor(m)[0], A64),
    ]
    for ours, theirs, x in cases:
        gy = RNG.standard_normal(_np(theirs(torch.tensor(x))).shape)
        tx = torch.tensor(x, requires_grad=True)
        (theirs(tx) * torch.tensor(gy)).sum().backward()
        xt = Tensor(x, requires_grad=True)
        (ours(xt) * Tensor(gy)).sum().backward()
        close(xt.grad, tx.grad, 1e-7)


def test_det_gradient_at_singular_matrices():
    """The cofactor form needs no inverse: rank n-1 gives the (non-zero, rank-one) cofactor matrix, rank n-2
    zero; checked by central differences, and against torch where its det is not exactly 0 (torch returns a
    zero gradient when the LU pivots give det == 0 exactly, which central differences contradict)."""
    for rank_loss in (1, 2):
        m = A64.copy()
        m[:, :, 4 - rank_loss:] = m[:, :, :rank_loss] * 2.0
        check_grad(L.det, m, name=f"det_rank_minus_{rank_loss}")
        t = Tensor(m, requires_grad=True)
        L.det(t).sum().backward()
        assert np.abs(t.grad).max() > 0.1 if rank_loss == 1 else np.abs(t.grad).max() < 1e-10
        tm = torch.tensor(m, requires_grad=True)
        d = torch.linalg.det(tm)
        d.sum().backward()
        exact_zero = _np(d) == 0
        close(t.grad[~exact_zero], _np(tm.grad)[~exact_zero], 1e-10)


def test_lu_factor_gradient_square_only():
    with pytest.raises(NotImplementedError, match="square"):
        L.lu_factor(Tensor(B64, requires_grad=True))[0].sum().backward()


def test_svd_full_matrices_non_square_only_s_differentiable():
    x = Tensor(B64, requires_grad=True)
    L.svd(x)[1].sum().backward()
    close(x.grad, np.einsum("...ik,...kj->...ij", *[np.linalg.svd(B64, full_matrices=False)[i] for i in (0, 2)]))
    with pytest.raises(NotImplementedError, match="full_matrices=False"):
        L.svd(Tensor(B64, requires_grad=True))[0].sum().backward()


# ----------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("dt", ["float32", "float64"])
def test_float_dtypes_kept(dt):
    a = A.astype(dt)
    for name in ("det", "inv", "pinv"):
        got = getattr(L, name)(a)
        assert got.dtype == np.dtype(keras.backend.standardize_dtype(getattr(kops, name)(a).dtype))
    assert L.eigh(SPD.astype(dt))[0].dtype == dt
    assert L.qr(a)[0].dtype == dt


def test_other_dtypes_computed_in_float():
    """Keras's torch backend raises for these; lamina computes ints in floatx and float16 in float32."""
    assert L.inv(np.eye(2, dtype="int32")).dtype == np.float32
    h = L.det(A.astype("float16"))
    assert h.dtype == np.float16
    close(h.numpy().astype("float32"), np.linalg.det(A.astype("float16").astype("float32")), 2e-2)


# ----------------------------------------------------------------------------- jvp
def test_jvp_matches_keras():
    a1, a2 = np.float32(0.1), np.float32(0.2)
    from lamina.ops import math as M
    p, t = L.jvp(M.exp, (a1,), (a2,))
    kp, kt = kops.jvp(kops.exp, (torch.tensor(a1),), (torch.tensor(a2),))
    close(p.numpy(), kp)
    close(t.numpy(), kt)
    x = RNG.standard_normal((3, 2)).astype("float32")
    v = RNG.standard_normal((3, 2)).astype("float32")
    w = RNG.standard_normal((2, 4)).astype("float32")
    dw = RNG.standard_normal((2, 4)).astype("float32")

    def f(x, w):
        return M.sum(M.exp(M.matmul(x, w)) * 0.5, 0), M.matmul(x, w)

    (p1, p2), (t1, t2) = L.jvp(f, (x, w), (v, dw))

    def kf(x, w):
        return kops.sum(kops.exp(kops.matmul(x, w)) * 0.5, 0), kops.matmul(x, w)

    (k1, k2), (kt1, kt2) = kops.jvp(kf, (torch.tensor(x), torch.tensor(w)), (torch.tensor(v), torch.tensor(dw)))
    close(p1.numpy(), k1)
    close(t1.numpy(), kt1, 2e-5)
    close(t2.numpy(), kt2, 2e-5)
    # has_aux returns the auxiliary value untouched
    p, t, aux = L.jvp(lambda x: (M.sum(x * x), "aux"), (x,), (v,), has_aux=True)
    assert aux == "aux"
    close(t.numpy(), 2 * np.sum(x * v), 1e-5)


def test_jvp_keyword_and_errors():
    from lamina.ops import math as M
    p, t = L.jvp(fun=M.exp, primals=(np.float32(1.0),), tangents=(np.float32(2.0),))
    assert t.shape == () and abs(float(t) - 2 * np.e) < 1e-5
    # nested primals and a dict output keep their structure
    (out, tan) = L.jvp(lambda d: {"s": M.sum(d[0] * d[1]), "p": d[0] * 3.0},
                       ([np.ones(2, "float32"), np.full(2, 2.0, "float32")],),
                       ([np.array([1.0, 0.0], "float32"), np.array([0.0, 1.0], "float32")],))
    assert set(out) == {"s", "p"} and abs(float(tan["s"]) - 3.0) < 1e-6
    np.testing.assert_allclose(tan["p"].numpy(), [3.0, 0.0])
    with pytest.raises(ValueError):
        L.jvp(M.exp, (np.ones(2, "float32"),), (np.ones(3, "float32"),))


# ----------------------------------------------------------------------------- device path
DEVICE_CASES = {
    "solve_inv_det": (lambda a, b: L.solve(a, b) + L.inv(a) @ b + L.det(a)[:, None, None], (A, B)),
    "cholesky_eigh": (lambda s: L.cholesky(sym(s)) + L.eigh(sym(s))[1] * 0 + L.eigh(sym(s))[0][:, None, :], (SPD,)),
    "qr_svd": (lambda b: L.qr(b)[0] * 2 + (L.svd(b, full_matrices=False)[1])[:, None, :], (B,)),
    "triangular_pinv": (lambda s, b: L.solve_triangular(s, b, lower=True) + L.pinv(swapaxes(b, -1, -2)), (SPD, B)),
    "norms": (lambda b: L.norm(b, axis=-1)[..., None] + L.norm(b, "nuc", (1, 2))[:, None, None]
              + L.norm(b, np.inf, (1, 2))[:, None, None] + L.norm(b, 3, 1)[:, None, :], (B,)),
    "lstsq": (lambda a, b: L.lstsq(a, b), (B[0], B[1, :, :2])),
}


@pytest.mark.parametrize("case", sorted(DEVICE_CASES))
def test_device_path_matches_cpu(case, device_xp):
    """Forward and backward on the 'cuda' array module (fake CuPy in CI) equal the CPU's."""
    from lamina import backend
    fn, arrays = DEVICE_CASES[case]
    outs = []
    for xp in (np, device_xp):
        ts = [Tensor(backend.to_device(a, xp), requires_grad=True) for a in arrays]
        y = fn(*ts)
        gy = backend.to_device(np.random.default_rng(1).standard_normal(y.shape).astype(y.dtype), xp)
        y.backward(gy)
        res = [y.data] + [t.grad for t in ts]
        assert all(backend.get_array_module(r) is xp for r in res)
        outs.append([backend.to_numpy(r) for r in res])
    for cpu, dev in zip(*outs):
        np.testing.assert_allclose(dev, cpu, rtol=2e-4, atol=2e-5)
    if case == "qr_svd":
        lu, piv = L.lu_factor(Tensor(backend.to_device(A, device_xp)))
        np.testing.assert_allclose(backend.to_numpy(lu.data), L.lu_factor(A)[0].numpy(), rtol=1e-5, atol=1e-6)
        assert int(L.matrix_rank(Tensor(backend.to_device(A[0], device_xp)))) == 4


LINALG_DTYPE_CASES = {
    "cholesky": lambda m, a: m.cholesky(a @ np.swapaxes(a, -1, -2) + 4 * np.eye(4, dtype=a.dtype)),
    "cholesky_inverse": lambda m, a: m.cholesky_inverse(np.tril(a) + 5 * np.eye(4, dtype=a.dtype)),
    "det": lambda m, a: m.det(a),
    "eig": lambda m, a: m.eig(a)[0],
    "eigh": lambda m, a: m.eigh(a + np.swapaxes(a, -1, -2))[0],   # vectors: up to sign (tested above)
    "inv": lambda m, a: m.inv(a),
    "lstsq": lambda m, a: m.lstsq(a[0], a[1]),
    "lu_factor": lambda m, a: m.lu_factor(a)[0],
    "lu_pivots": lambda m, a: m.lu_factor(a)[1],
    "matrix_rank": lambda m, a: m.matrix_rank(a),
    "norm": lambda m, a: m.norm(a, axis=(1, 2)),
    "pinv": lambda m, a: m.pinv(a),
    "qr": lambda m, a: m.qr(a)[1],
    "solve": lambda m, a: m.solve(a, a[..., 0]),
    "solve_triangular": lambda m, a: m.solve_triangular(a + 5 * np.eye(4, dtype=a.dtype), a),
    "svd": lambda m, a: m.svd(a)[1],
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(LINALG_DTYPE_CASES))
def test_result_dtypes_match_keras(name, dtype):
    a = A.astype(dtype)
    want = LINALG_DTYPE_CASES[name](kops, a)
    got = LINALG_DTYPE_CASES[name](L, a)
    assert got.dtype == np.dtype(keras.backend.standardize_dtype(want.dtype))
    close(got.numpy(), want, 1e-10 if got.dtype == np.float64 else 2e-5)   # norm: float64 -> float32, as Keras
