"""lamina's fused CUDA kernels (lamina/ops/cuda_kernels.py) modelled in NumPy, for running the GPU code path on
CuPy's CPU stand-in (tests/fake_cupy.py) in CI, where there is no GPU.

``install(monkeypatch, module)`` makes cuda_kernels treat the stand-in's arrays as CuPy's and launch these models
in place of the compiled kernels. Every launch is first checked against the kernel's CUDA signature, parsed from
cuda_kernels.SOURCE: the number of arguments, each pointer's element type against the array passed (or a raw
np.uint64 address, as the LSTM loops pass), each scalar's NumPy type against its C type. Then the model reads and
writes the arguments' memory through their addresses, as the kernel does on the device. So the wrappers' argument
lists, dtypes, shapes and addresses and the ops' dispatch to them are checked on every device test; the kernels'
own arithmetic is checked against the CPU on a real GPU (tests/test_device.py's 'cupy' runs).
"""
import ctypes
import re

import numpy as np

from lamina.ops import cuda_kernels

import fake_cupy

_C_TYPES = {"float": ctypes.c_float, "double": ctypes.c_double, "long long": ctypes.c_longlong, "int": ctypes.c_int,
            "unsigned char": ctypes.c_ubyte}
_SCALARS = {"float": np.float32, "double": np.float64, "long long": np.int64, "int": np.int32}


def signatures(source=None):
    """{kernel name: [(parameter name, C base type, is a pointer)]} of the source's extern "C" kernels."""
    out = {}
    for name, params in re.findall(r'extern "C" __global__ void (\w+)\(([^)]*)\)', source or cuda_kernels.SOURCE):
        rows = []
        for p in " ".join(params.split()).split(","):
            m = re.fullmatch(r"(?:const )?(float|double|long long|int|unsigned char)\s*(\*?)\s*(\w+)", p.strip())
            assert m, f"{name}: unparsed parameter {p!r}"
            rows.append((m.group(3), m.group(1), bool(m.group(2))))
        out[name] = rows
    return out


class Ptr:
    """A device pointer argument: its address and element type."""

    def __init__(self, addr, ctype):
        self.addr, self.ctype = addr, ctype

    def a(self, count, shape=None):
        """``count`` elements from the address, as a writable NumPy array (optionally reshaped)."""
        v = np.ctypeslib.as_array((self.ctype * int(count)).from_address(self.addr)) if count else \
            np.zeros(0, np.dtype(self.ctype))
        return v if shape is None else v.reshape(shape)


def _address(a):
    return a._a.ctypes.data if isinstance(a, fake_cupy.ndarray) else int(a)


def _arguments(name, args, sigs):
    """The launch's arguments by parameter name (pointers as Ptr, scalars as Python numbers), after checking them
    against the kernel's signature."""
    params = sigs[name]
    assert len(args) == len(params), f"{name}: {len(args)} arguments for {len(params)} parameters"
    out = {}
    for (pname, ctype, pointer), arg in zip(params, args):
        if pointer:
            if isinstance(arg, fake_cupy.ndarray):
                assert arg.dtype == np.dtype(_C_TYPES[ctype]), f"{name}.{pname}: a {arg.dtype} array for {ctype}*"
            else:
                assert type(arg) is np.uint64, f"{name}.{pname}: {type(arg).__name__} for a {ctype}* (an array or a "\
                    "np.uint64 address)"
            out[pname] = Ptr(_address(arg), _C_TYPES[ctype])
        else:
            assert type(arg) is _SCALARS[ctype], f"{name}.{pname}: {type(arg).__name__} for a {ctype}"
            out[pname] = arg.item()
    return out


# ----- the models, one per kernel family (the f32 and f64 variants share one), parameters named as in the source

def adam_update(w, g, m, v, omb1, omb2, eps, alpha, n):
    W, G, M, V = (p.a(n) for p in (w, g, m, v))
    mi = M + (G - M) * omb1
    vi = V + (G * G - V) * omb2
    M[...], V[...] = mi, vi
    W[...] = W - alpha * mi / (np.sqrt(vi) + eps)


def softmax_rows(x, e, m, s, R, D):
    X = x.a(R * D, (R, D))
    mx = X.max(axis=1)
    ev = np.exp(X - mx[:, None])
    su = ev.sum(axis=1)
    e.a(R * D, (R, D))[...] = ev / su[:, None]
    m.a(R)[...], s.a(R)[...] = mx, su


def softmax_columns(s, B, K, Q, factor):
    S = s.a(B * K * Q, (B, K, Q))
    ev = np.exp((S - S.max(axis=1, keepdims=True)) * factor)
    S[...] = ev / ev.sum(axis=1, keepdims=True)


def softmax_columns_grad(d, rowsum, w, B, K, Q, factor):
    G = d.a(B * K * Q, (B, K, Q))
    G[...] = (G - rowsum.a(B * Q, (B, 1, Q))) * w.a(B * K * Q, (B, K, Q)) * factor


def sce_loss(x, lab, m, s, loss, R, D):
    X, L = x.a(R * D, (R, D)), lab.a(R)
    loss.a(R)[...] = np.log(s.a(R)) - (X[np.arange(R), L] - m.a(R))


def sce_grad(soft, lab, g, dx, R, D):
    S, L, G = soft.a(R * D, (R, D)), lab.a(R), g.a(R)
    out = dx.a(R * D, (R, D))
    out[...] = S * G[:, None]
    rows = np.arange(R)
    out[rows, L] = (S[rows, L] - 1) * G


def labels_out_of_range(lab, n, K, bad):
    L = lab.a(n)
    if ((L < 0) | (L >= K)).any():
        bad.a(1)[0] = 1


def scatter_rows(ids, gy, out, N, D):
    idx = ids.a(N)
    rows = int(idx.max()) + 1 if N else 0   # (the table has at least these rows: the ids were checked)
    np.add.at(out.a(rows * D, (rows, D)), idx, gy.a(N * D, (N, D)))


def _pool_offsets(k, pw, OH, OW, sh, sw, pt, pl, H, W):
    iy = np.arange(OH) * sh + k // pw - pt
    ix = np.arange(OW) * sw + k % pw - pl
    valid = ((iy >= 0) & (iy < H))[:, None] & ((ix >= 0) & (ix < W))[None, :]
    return np.clip(iy, 0, H - 1), np.clip(ix, 0, W - 1), valid[None, :, :, None]


def max_pool(x, y, which, note, N, H, W, C, OH, OW, ph, pw, sh, sw, pt, pl):
    X = x.a(N * H * W * C, (N, H, W, C))
    m = np.zeros((N, OH, OW, C), X.dtype)
    best = np.zeros(m.shape, np.uint8)
    seen = np.zeros(m.shape, bool)
    for k in range(ph * pw):
        iy, ix, valid = _pool_offsets(k, pw, OH, OW, sh, sw, pt, pl, H, W)
        v = X[:, iy][:, :, ix]
        first = valid & ~seen
        later = valid & seen
        up = later & (v > m)
        nan = later & ~up & np.isnan(v)
        m = np.where(first | up | nan, v, m)
        best = np.where(first | up, np.uint8(k), best)
        seen |= valid
    y.a(m.size, m.shape)[...] = m
    if note:
        which.a(best.size, best.shape)[...] = best


def max_pool_grad(gy, which, dx, N, H, W, C, OH, OW, ph, pw, sh, sw, pt, pl):
    G = gy.a(N * OH * OW * C, (N, OH, OW, C))
    note = which.a(N * OH * OW * C, (N, OH, OW, C))
    out = dx.a(N * H * W * C, (N, H, W, C))
    out[...] = 0
    n, oy, ox, c = np.indices(G.shape)
    for k in range(ph * pw):
        sel = note == k
        np.add.at(out, (n[sel], oy[sel] * sh + k // pw - pt, ox[sel] * sw + k % pw - pl, c[sel]), G[sel])


def col2im(dcols, dx, N, H, W, C, OH, OW, KH, KW, sh, sw, dh, dw, top, left):
    cols = dcols.a(N * OH * OW * KH * KW * C, (N, OH, OW, KH, KW, C))
    hc = max(top + H, (OH - 1) * sh + (KH - 1) * dh + 1)
    wc = max(left + W, (OW - 1) * sw + (KW - 1) * dw + 1)
    canvas = np.zeros((N, hc, wc, C), cols.dtype)
    for a in range(KH):
        for b in range(KW):
            canvas[:, a * dh:a * dh + sh * (OH - 1) + 1:sh, b * dw:b * dw + sw * (OW - 1) + 1:sw] += cols[:, :, :, a, b]
    dx.a(N * H * W * C, (N, H, W, C))[...] = canvas[:, top:top + H, left:left + W]


def layer_norm(x, gamma, beta, has_gamma, has_beta, eps, y, mean, inv, R, D):
    X = x.a(R * D, (R, D))
    scale = X.dtype.type(1) / X.dtype.type(D)
    mu = X.sum(axis=1) * scale
    iv = 1 / np.sqrt(((X - mu[:, None]) ** 2).sum(axis=1) * scale + eps)
    h = (X - mu[:, None]) * iv[:, None]
    if has_gamma:
        h = h * gamma.a(D)
    if has_beta:
        h = h + beta.a(D)
    y.a(R * D, (R, D))[...] = h
    mean.a(R)[...], inv.a(R)[...] = mu, iv


def layer_norm_grad(gy, x, mean, inv, gamma, has_gamma, need_x, need_p, dx, p, R, D):
    G, X = gy.a(R * D, (R, D)), x.a(R * D, (R, D))
    mu, iv = mean.a(R)[:, None], inv.a(R)[:, None]
    xhat = (X - mu) * iv
    if need_p:
        p.a(R * D, (R, D))[...] = G * xhat
    if need_x:
        g = G * gamma.a(D) if has_gamma else G
        m1 = g.sum(axis=1, keepdims=True) / D
        m2 = (g * xhat).sum(axis=1, keepdims=True) / D
        dx.a(R * D, (R, D))[...] = (g - m1 - xhat * m2) * iv


def lstm_cell(rec, xw, bias, has_bias, c_prev, gates, c_out, tc_out, h_out, n, u):
    z = rec.a(n * 4 * u, (n, 4 * u))
    if has_bias:
        z = z + bias.a(4 * u)
    z = (z + xw.a(n * 4 * u, (n, 4 * u))).reshape(n, 4, u).transpose(1, 0, 2)
    g = gates.a(4 * n * u, (4, n, u))
    g[:3] = 1 / (1 + np.exp(-z[:3]))
    g[3] = np.tanh(z[3])
    c = c_out.a(n * u, (n, u))
    c[...] = g[1] * c_prev.a(n * u, (n, u)) + g[0] * g[3]
    t = tc_out.a(n * u, (n, u))
    t[...] = np.tanh(c)
    h_out.a(n * u, (n, u))[...] = g[2] * t


def lstm_step_grad(dh, gh, gh_stride, has_gh, dc, gates, tc, c_prev, dz, dc_prev, n, u):
    h = dh.a(n * u, (n, u)).copy()
    if has_gh:
        h += np.lib.stride_tricks.as_strided(gh.a((n - 1) * gh_stride + u), (n, u), (4 * gh_stride, 4))
    i, f, o, g = gates.a(4 * n * u, (4, n, u))
    t = tc.a(n * u, (n, u))
    d = (1 - t * t) * o * h + dc.a(n * u, (n, u))
    z = dz.a(n * 4 * u, (n, 4, u))
    z[:, 0] = d * g * ((1 - i) * i)
    z[:, 1] = d * c_prev.a(n * u, (n, u)) * ((1 - f) * f)
    z[:, 2] = h * t * ((1 - o) * o)
    z[:, 3] = d * i * (1 - g * g)
    dc_prev.a(n * u, (n, u))[...] = d * f


MODELS = {"adam_update": adam_update, "softmax_rows": softmax_rows, "softmax_columns": softmax_columns,
          "softmax_columns_grad": softmax_columns_grad, "sce_loss": sce_loss, "sce_grad": sce_grad,
          "labels_out_of_range": labels_out_of_range, "scatter_rows": scatter_rows, "max_pool": max_pool,
          "max_pool_grad": max_pool_grad, "col2im": col2im, "layer_norm": layer_norm,
          "layer_norm_grad": layer_norm_grad, "lstm_cell": lstm_cell, "lstm_step_grad": lstm_step_grad}


def model_of(name):
    """The model of kernel ``name`` (its _f32 / _f64 suffix dropped)."""
    return MODELS[re.sub(r"_f(32|64)$", "", name)]


def sgemm(handle, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc):
    """cublasSgemm, column-major, no transposes: C (m, n) = alpha A (m, k) B (k, n) + beta C, host scalars."""
    assert (transa, transb) == (0, 0) and lda >= m and ldb >= k and ldc >= m
    f = ctypes.c_float

    def col(addr, rows, cols, ld):
        return np.lib.stride_tricks.as_strided(Ptr(addr, f).a((cols - 1) * ld + rows), (rows, cols), (4, 4 * ld))
    out = col(C, m, n, ldc)
    product = Ptr(alpha, f).a(1)[0] * (col(A, m, k, lda) @ col(B, k, n, ldb))
    beta = Ptr(beta, f).a(1)[0]
    out[...] = product if beta == 0 else product + beta * out   # (beta 0: C is not read, as cuBLAS's)


def install(monkeypatch, module):
    """cuda_kernels on the stand-in ``module`` with the models above; returns the list of kernel names launched
    (each launch checked against its signature)."""
    sigs = signatures()
    launched = []

    def kernel(xp, name):
        assert name in sigs, f"no kernel {name!r} in the CUDA source"

        def launch(grid, block, args):
            assert len(grid) == 1 and len(block) == 1 and grid[0] >= 1 and block[0] >= 1
            launched.append(name)
            model_of(name)(**_arguments(name, args, sigs))
        return launch

    def cupy_of(*arrays):
        ok = cuda_kernels.enabled() and all(isinstance(a, fake_cupy.ndarray) for a in arrays)
        return module if ok else None
    scalars = np.array([1.0, 0.0], np.float32)
    monkeypatch.setattr(cuda_kernels, "_cupy_of", cupy_of)
    monkeypatch.setattr(cuda_kernels, "_kernel", kernel)
    monkeypatch.setattr(cuda_kernels, "_addr", _address)
    monkeypatch.setattr(cuda_kernels, "_sgemm", lambda xp: (None, sgemm, scalars, scalars.ctypes.data,
                                                            scalars.ctypes.data + 4))
    return launched
