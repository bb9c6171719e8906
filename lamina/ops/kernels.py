"""Compiled kernels for the hottest element-wise chains (optional: ``pip install 'lamina[fast]'``, numba).

NumPy runs one pass over memory per call: LayerNorm's forward is ~6 passes over its input-sized arrays and
its backward ~8, a Dense layer's bias + ReLU two forward and two backward. Once the arrays outgrow the core's
cache, each pass costs a trip to memory, and on a machine whose single core moves ~20 GB/s that is most of
the time these ops take (a (2048, 128) float32 LayerNorm: ~0.9 ms forward in NumPy on a 2.1 GHz Xeon, of
which ~0.1 ms is reading and writing it once). The kernels here do the same arithmetic row by row, each row
read while it sits in the first-level cache, so each array is read or written once:

- :func:`layer_norm_forward` / :func:`layer_norm_backward`: LayerNormalization over the trailing axes
  (rows of D values); the backward recomputes x-hat from x, the mean and the inverse deviation instead of
  keeping an input-sized x-hat (less memory as well).
- :func:`bias_relu`: y += bias, then max(y, 0), in place, one pass.
- :func:`relu_bias_grad`: the ReLU mask of the gradient and the bias gradient (its column sums), one pass.
- :func:`lstm_cell_grad` / :func:`gru_cell_grad`: one backward step of the LSTM's (GRU's) gate arithmetic
  (sigmoid and tanh derivatives from the saved activations: no transcendental function, which a compiled
  loop computes slower than NumPy's SIMD code), one call where NumPy makes a dozen per step.
- :func:`adam_update`: Adam's moments and weight update, one pass over the four arrays instead of twelve
  NumPy passes, with NumPy's float operations (the same weights to the bit).
- :func:`col2im_gather`: a convolution's input gradient from its columns, each input position summed once
  in the NumPy code's order, instead of one strided window addition per kernel offset.
- :func:`max_pool2d` / :func:`max_pool2d_grad`: 2-D max pooling (MaxPooling1D/2D, ops.max_pool in 1-D and
  2-D), the maximum and the note of its window offset in one pass over the input (NumPy: one compare, multiply
  and two maxima per window offset, over a padded copy), the gradient in one pass writing each input value
  once (NumPy: a compare and a multiply per offset). Equal to NumPy's code bit for bit, overlapping windows'
  sums included (they add in its order), but for which of two NaNs an addition keeps.
- :func:`softmax_columns`: attention's softmax over the keys of its transposed scores, the column maxima and
  sums each in one pass over a block in cache (NumPy: strided reductions and separate passes), NumPy's exp
  between them, and its backward's (dW - row sum) * W in one pass; the same values as NumPy's code.

They are used only where they pay: NumPy arrays (not CuPy), float32 or float64, C-contiguous, at least
:data:`MIN_ELEMENTS` values (smaller arrays stay in cache anyway), and in 'auto' mode only once the process
has passed :data:`WARMUP_ELEMENTS` values through eligible calls (loading numba costs ~0.9 s, which a short
program never wins back). Without numba, or with ``LAMINA_KERNELS=numpy`` in the environment (or
:func:`set_mode`), every caller runs its NumPy code, which computes the same values (tests check both ways;
the sums run in another order, so the last bits may differ). The arithmetic follows the NumPy code's rules:
NaN propagates as there (no ``fastmath`` flags that assume finite values: the kernels that reduce allow only
reassociation and fused multiply-add, so their sums vectorise; Adam's, col2im's and max pooling's none, so
they repeat the NumPy code's operations in its order). Per-row statistics accumulate in the array's dtype; column sums over
many rows (bias and gamma gradients) in the array's dtype within blocks of _BLOCK rows and in float64
across blocks.

numba compiles each kernel on its first call for a dtype and caches the machine code on disk
(``cache=True``: in ``__pycache__`` beside this file, or numba's user cache directory when that is read-only;
``NUMBA_CACHE_DIR`` moves it). That cache is numba's, like Python's own bytecode cache: lamina's model and
data files never pass through it.
"""
import os

import numpy as np

from .. import threads as _threads

__all__ = ["MIN_ELEMENTS", "mode", "set_mode", "available", "layer_norm_forward", "layer_norm_backward",
           "bias_relu", "relu_bias_grad", "lstm_cell_grad", "gru_cell_grad", "adam_update",
           "col2im_gather", "max_pool2d", "max_pool2d_grad", "softmax_columns",
           "softmax_columns_grad", "scatter_rows"]

# Smaller arrays keep to NumPy (a (64, 512) float32 array, 128 KB, already stays in cache).
MIN_ELEMENTS = 1 << 15
# Adam's update takes the kernel at any size: its NumPy code is ten ufunc calls, whose cost at small sizes is
# per call (a 128-value update: 14.6 us against the compiled call's 10.1).
ADAM_MIN_ELEMENTS = 1
# Rows are split over lamina's threads from this many values (a fused pass costs a third of NumPy's, so
# the hand-off to another thread pays later than for NumPy's passes).
SPLIT_ELEMENTS = 1 << 21
# Max pooling splits its samples over lamina's threads from this many input values, as NumPy's pooling code
# does (on 2 threads, with the other core partly busy: (32, 32, 32, 32) float32 forward and backward 1.59 ->
# 1.23 ms split; below, split at 2^17 values, (64, 13, 13, 64) 0.69 -> 0.99 and (16, 32, 32, 32) 0.89 -> 1.15).
POOL_SPLIT_ELEMENTS = 1 << 20
# Column sums over many rows add each block of this many rows in the array's dtype (SIMD-wide), then the
# blocks' sums in float64 (so a float32 sum over 65536 rows loses little more than one over 256).
_BLOCK = 256
# In 'auto' mode a process runs NumPy's code until its eligible calls have passed this many values, then the
# kernels. The first compiled call imports numba and LLVM (~0.9 s of CPU, ~125 MB), which the kernels' saving
# (~1-3 ns a value: a (2048, 128) float32 LayerNorm forward and backward save ~1.4 ms) wins back only after
# some 10^8-10^9 values: a short program (an evaluation, a few epochs of a small model, a docs snippet) never
# pays it, a long training run switches after its first seconds. The count is deterministic: the same program
# switches at the same call on every run. set_mode('numba') (or LAMINA_KERNELS=numba) starts at once.
WARMUP_ELEMENTS = 1 << 29
_MODES = ("auto", "numba", "numpy")
_state = {"mode": None, "kernels": None, "pending": None}   # pending: values 'auto' still waits for


def set_mode(value):
    """'auto' (default: numba when installed), 'numba' (the same, but an error now if it is missing) or
    'numpy' (never the compiled kernels)."""
    value = "auto" if value is None else str(value).strip().lower()
    if value not in _MODES:
        raise ValueError(f"The kernel mode must be one of {', '.join(_MODES)}. Received: {value!r}")
    if value == "numba" and _load() is None:
        raise ImportError("numba is not installed: pip install 'lamina[fast]' (or numba) for the compiled kernels.")
    _state["mode"] = value


def mode():
    """The mode in force: set_mode's, else the ``LAMINA_KERNELS`` environment variable's, else 'auto'."""
    if _state["mode"] is None:
        env = os.environ.get("LAMINA_KERNELS", "").strip().lower() or "auto"
        _state["mode"] = env if env in _MODES else "auto"
    return _state["mode"]


def available():
    """Whether the compiled kernels run (numba importable and the mode allows it)."""
    return mode() != "numpy" and _load() is not None


def _load():
    if _state["kernels"] is None:
        try:
            import numba
        except ImportError:
            _state["kernels"] = False
        else:
            _state["kernels"] = _define(numba)
    return _state["kernels"] or None


def _eligible(*arrays, size=None, least=None):
    """The kernels if they should run on these arrays (the first one decides the size, unless ``size`` says
    how many values the call writes; at least ``least`` values, default MIN_ELEMENTS), else None."""
    first = arrays[0]
    size = first.size if size is None else size
    if (type(first) is not np.ndarray or size < max(MIN_ELEMENTS if least is None else least, 1)
            or first.dtype not in (np.float32, np.float64)):
        return None
    for a in arrays:
        if a is not None and (type(a) is not np.ndarray or a.dtype != first.dtype or not a.flags.c_contiguous):
            return None
    m = mode()
    if m == "numpy":
        return None
    if m == "auto":
        pending = WARMUP_ELEMENTS if _state["pending"] is None else _state["pending"]
        if pending > 0:   # still warming up: NumPy's code (see WARMUP_ELEMENTS)
            _state["pending"] = pending - size
            return None
    return _load()


class _Kernels:
    pass


def _define(numba):
    """Compile-on-first-call definitions (kept in a function so that importing this module never imports
    numba)."""
    jit = numba.njit(cache=True, nogil=True, error_model="numpy", fastmath={"reassoc", "contract"})
    # no fastmath at all: the NumPy code's operations in its order and rounding (Adam, col2im, max pooling)
    exact = numba.njit(cache=True, nogil=True, error_model="numpy")
    k = _Kernels()

    @jit
    def layer_norm_rows(x, gamma, beta, has_gamma, has_beta, eps, y, mean, inv):
        rows, d = x.shape
        zero, one = x.dtype.type(0), x.dtype.type(1)
        scale = one / x.dtype.type(d)
        for i in range(rows):
            s = zero
            for j in range(d):
                s += x[i, j]
            m = s * scale
            v = zero
            for j in range(d):
                t = x[i, j] - m
                v += t * t
            r = one / np.sqrt(v * scale + eps)
            mean[i] = m
            inv[i] = r
            for j in range(d):
                h = (x[i, j] - m) * r
                if has_gamma:
                    h = h * gamma[j]
                if has_beta:
                    h = h + beta[j]
                y[i, j] = h
    k.layer_norm_rows = layer_norm_rows

    @jit
    def layer_norm_rows_grad(gy, x, mean, inv, gamma, has_gamma, need_x, need_params, dx, blocks):
        # dx = inv * (g - mean(g) - xhat * mean(g * xhat)) with g = gy * gamma; blocks[b, 0] += gy * xhat and
        # blocks[b, 1] += gy over the rows of block b (zeroed by the caller): the gamma and beta gradients
        rows, d = gy.shape
        zero, one = gy.dtype.type(0), gy.dtype.type(1)
        scale = one / gy.dtype.type(d)
        for i in range(rows):
            m = mean[i]
            r = inv[i]
            if need_x:
                m1 = zero
                m2 = zero
                for j in range(d):
                    g = gy[i, j] * gamma[j] if has_gamma else gy[i, j]
                    m1 += g
                    m2 += g * ((x[i, j] - m) * r)
                m1 *= scale
                m2 *= scale
                for j in range(d):
                    g = gy[i, j] * gamma[j] if has_gamma else gy[i, j]
                    dx[i, j] = (g - m1 - (x[i, j] - m) * r * m2) * r
            if need_params:
                sg = blocks[i // _BLOCK, 0]
                sb = blocks[i // _BLOCK, 1]
                for j in range(d):
                    sg[j] += gy[i, j] * ((x[i, j] - m) * r)
                    sb[j] += gy[i, j]
    k.layer_norm_rows_grad = layer_norm_rows_grad

    @jit
    def bias_relu_rows(y, b):
        rows, d = y.shape
        zero = y.dtype.type(0)
        for i in range(rows):
            for j in range(d):
                v = y[i, j] + b[j]
                y[i, j] = zero if v < zero else v   # NaN stays NaN, as maximum(v, 0)
    k.bias_relu_rows = bias_relu_rows

    @jit
    def relu_bias_grad_rows(gy, y, g, need_b, blocks):
        # g = gy * (y > 0): NaN in gy stays NaN (NaN * 0), NaN in y passes nothing; blocks[b] += g over the
        # rows of block b (zeroed by the caller): the bias gradient
        rows, d = gy.shape
        zero, one = gy.dtype.type(0), gy.dtype.type(1)
        for i in range(rows):
            if need_b:
                sb = blocks[i // _BLOCK]
                for j in range(d):
                    v = gy[i, j] * (one if y[i, j] > zero else zero)
                    g[i, j] = v
                    sb[j] += v
            else:
                for j in range(d):
                    g[i, j] = gy[i, j] * (one if y[i, j] > zero else zero)
    k.relu_bias_grad_rows = relu_bias_grad_rows

    @jit
    def lstm_cell_grad(dh, dc, gates, tc, c_prev, dz, dc_prev):
        # one LSTM step backward (sigmoid gates i, f, o; tanh candidate g and cell output; a mask is the
        # caller's: it passes the step's share of dh and dc):
        # d(act c) = dc + dh o (1 - tc^2); the pre-activation gradients of i, f, o, g into dz (N, 4u, gate
        # blocks of u columns) and the gradient into the previous cell state into dc_prev
        n, u = dh.shape
        one = dh.dtype.type(1)
        for r in range(n):
            for j in range(u):
                i = gates[0, r, j]
                f = gates[1, r, j]
                o = gates[2, r, j]
                g = gates[3, r, j]
                t = tc[r, j]
                d = (one - t * t) * o * dh[r, j] + dc[r, j]
                dz[r, j] = d * g * ((one - i) * i)
                dz[r, u + j] = d * c_prev[r, j] * ((one - f) * f)
                dz[r, 2 * u + j] = dh[r, j] * t * ((one - o) * o)
                dz[r, 3 * u + j] = d * i * (one - g * g)
                dc_prev[r, j] = d * f
    k.lstm_cell_grad = lstm_cell_grad

    @jit
    def gru_cell_grad(dh, zr, hh, h_prev, rh, dx, dr, dprev):
        # one GRU step backward (reset_after, sigmoid z and r, tanh candidate; a mask is the caller's: it
        # passes the step's share of dh): the pre-activation
        # gradients of z, r and the candidate into dx (N, 3u), those of h U + b' into dr, and dh z into dprev
        n, u = dh.shape
        one = dh.dtype.type(1)
        for i in range(n):
            for j in range(u):
                z = zr[0, i, j]
                r = zr[1, i, j]
                c = hh[i, j]
                d = dh[i, j]
                da = (one - z) * d * (one - c * c)
                dz = (h_prev[i, j] - c) * d * ((one - z) * z)
                dgr = da * rh[i, j] * ((one - r) * r)
                dx[i, j] = dz
                dx[i, u + j] = dgr
                dx[i, 2 * u + j] = da
                dr[i, j] = dz
                dr[i, u + j] = dgr
                dr[i, 2 * u + j] = da * r
                dprev[i, j] = d * z
    k.gru_cell_grad = gru_cell_grad

    # Adam's update is element-wise with no reduction: compiled without fastmath, so the float operations
    # are those of the NumPy code (optimizers/adam.py, _adam_block), in its order and rounding: no fused
    # multiply-add, the scalars already in the arrays' dtype. The same weights to the bit either way.
    @exact
    def adam_update(w, g, m, v, c1, c2, eps, alpha):
        for i in range(w.size):
            gi = g[i]
            mi = m[i] + (gi - m[i]) * c1
            vi = v[i] + (gi * gi - v[i]) * c2
            m[i] = mi
            v[i] = vi
            w[i] -= mi / (np.sqrt(vi) + eps) * alpha
    k.adam_update = adam_update

    # col2im as a gather: each padded input position sums, in kernel-offset order, the column entries that
    # reached it (the NumPy code adds one strided window per offset to a zero array: the same additions in
    # the same order for every position), and is written once. No fastmath (the order). The columns come from
    # one wider product than the NumPy code's per-offset ones, which BLAS may round differently in the last bit.
    @exact
    def col2im_gather(cols, out, sh, sw, dh, dw):
        # cols (S, OH, OW, KH, KW, C) -> out (S, Hp, Wp, C)
        samples, oh, ow, kh, kw, c = cols.shape
        hp, wp = out.shape[1], out.shape[2]
        zero = out.dtype.type(0)
        for s in range(samples):
            for py in range(hp):
                for px in range(wp):
                    o = out[s, py, px]
                    for q in range(c):
                        o[q] = zero
                    if sh == 1 and dh == 1:   # the offsets that reach this row: a range, no test per offset
                        i_lo, i_hi = max(0, py - oh + 1), min(kh, py + 1)
                    else:
                        i_lo, i_hi = 0, kh
                    if sw == 1 and dw == 1:
                        j_lo, j_hi = max(0, px - ow + 1), min(kw, px + 1)
                    else:
                        j_lo, j_hi = 0, kw
                    for i in range(i_lo, i_hi):
                        y = py - i * dh
                        if y < 0 or y % sh != 0 or y // sh >= oh:
                            continue
                        y //= sh
                        for j in range(j_lo, j_hi):
                            x = px - j * dw
                            if x < 0 or x % sw != 0 or x // sw >= ow:
                                continue
                            src = cols[s, y, x // sw, i, j]
                            for q in range(c):
                                o[q] += src[q]
    k.col2im_gather = col2im_gather

    # Max pooling compares and selects only: no fastmath at all, so that the compiled code keeps the NumPy
    # code's every rule (NaN, the sign of a zero, the order of the overlapping windows' additions).

    @exact
    def max_pool_rows(x, ph, pw, sh, sw, pt, pl, y, which, note):
        # y (N, OH, OW, C) = the maximum over each window of x (N, H, W, C), window (oi, oj) starting at row
        # oi*sh - pt and column oj*sw - pl. Per output, the NumPy code's chain: y = the window's first value,
        # then for the offsets k = 1, 2, ... in row-major window order the note becomes k where v > y, and
        # y = maximum(y, v). So the note is the FIRST offset holding the maximum, a NaN wins the maximum (the
        # first NaN, as np.maximum) but is never noted (v > y is False), and on equal values y takes the later
        # one (np.maximum(a, b) is b when a == b: -0.0 against 0.0). Positions outside x are the NumPy code's
        # -inf padding: a window starting there begins at y = -inf, note 0, and each real value then goes
        # through the chain (noted unless it is -inf or NaN; maximum(-inf, v) is v); padding later in a window
        # changes nothing, so it is skipped (no padded copy of x).
        n, h, w, c = x.shape
        oh, ow = y.shape[1], y.shape[2]
        nb = np.empty(c, np.int32)   # the note of one output (int32: as wide as float32's lanes)
        low = x.dtype.type(-np.inf)
        for s in range(n):
            for oi in range(oh):
                i0 = oi * sh - pt
                ki0, ki1 = max(0, -i0), min(ph, h - i0)
                for oj in range(ow):
                    j0 = oj * sw - pl
                    kj0, kj1 = max(0, -j0), min(pw, w - j0)
                    ym = y[s, oi, oj]
                    first = ki0 * pw + kj0
                    if first == 0:   # the window's first value, note 0
                        xr = x[s, i0, j0]
                        for ch in range(c):
                            ym[ch] = xr[ch]
                            nb[ch] = 0
                    else:            # padding first: -inf, note 0, and the first real value goes through the chain
                        first = -1
                        for ch in range(c):
                            ym[ch] = low
                            nb[ch] = 0
                    for ki in range(ki0, ki1):
                        for kj in range(kj0, kj1):
                            kk = ki * pw + kj
                            if kk == first:
                                continue
                            xr = x[s, i0 + ki, j0 + kj]
                            if note:
                                k = np.int32(kk)
                                for ch in range(c):
                                    v = xr[ch]
                                    m = ym[ch]
                                    nb[ch] = k if v > m else nb[ch]
                                    ym[ch] = m if (m > v or m != m) else v
                            else:
                                for ch in range(c):
                                    v = xr[ch]
                                    m = ym[ch]
                                    ym[ch] = m if (m > v or m != m) else v
                    if note:
                        wm = which[s, oi, oj]
                        for ch in range(c):
                            wm[ch] = nb[ch]
    k.max_pool_rows = max_pool_rows

    @exact
    def max_pool_rows_grad(gy, which, ph, pw, sh, sw, pt, pl, dx, fill, overlap):
        # dx (N, H, W, C): each window's offset k gets gy * (note == k) (so NaN and inf in gy spread over
        # the window as NaN * 0, and -0.0 stays -0.0, as the NumPy code's multiply); disjoint windows assign,
        # overlapping ones add, each position's terms in the NumPy code's order (offset by offset: k rises as
        # the output falls, so the outputs are walked backwards). fill: zero each sample first (positions no
        # window covers, and the sums' start)
        n, h, w, c = dx.shape
        oh, ow = gy.shape[1], gy.shape[2]
        zero, one = dx.dtype.type(0), dx.dtype.type(1)
        for s in range(n):
            if fill:
                for i in range(h):
                    for j in range(w):
                        for ch in range(c):
                            dx[s, i, j, ch] = zero
            for oi in range(oh - 1, -1, -1):
                i0 = oi * sh - pt
                ki0, ki1 = max(0, -i0), min(ph, h - i0)
                for oj in range(ow - 1, -1, -1):
                    j0 = oj * sw - pl
                    kj0, kj1 = max(0, -j0), min(pw, w - j0)
                    for ki in range(ki0, ki1):
                        for kj in range(kj0, kj1):
                            k = which.dtype.type(ki * pw + kj)
                            i, j = i0 + ki, j0 + kj
                            if overlap:
                                for ch in range(c):
                                    dx[s, i, j, ch] += gy[s, oi, oj, ch] * (one if which[s, oi, oj, ch] == k else zero)
                            else:
                                for ch in range(c):
                                    dx[s, i, j, ch] = gy[s, oi, oj, ch] * (one if which[s, oi, oj, ch] == k else zero)
    k.max_pool_rows_grad = max_pool_rows_grad

    # Softmax down the columns of (B, K, Q) blocks (attention's transposed scores: over the keys K for each query
    # q), the two reductions of NumPy's code without its strided reduction passes: per block the column maxima,
    # subtracted in the same pass over the block (in cache), then (after NumPy's SIMD exp) the column sums and
    # the division. The same operations in NumPy's order (each column's sum runs down k, as NumPy's reduction
    # over a non-contiguous axis adds row after row), so the same values, NaN and infinities included. No
    # fastmath: the loops over q vectorise as they are.
    @exact
    def column_max_subtract(s):
        blocks, rows, cols = s.shape
        m = np.empty(cols, s.dtype)
        for b in range(blocks):
            for q in range(cols):
                m[q] = s[b, 0, q]
            for i in range(1, rows):
                for q in range(cols):
                    v = s[b, i, q]
                    if v > m[q]:   # (a NaN in the column makes its sum, so all its weights, NaN either way)
                        m[q] = v
            for i in range(rows):
                for q in range(cols):
                    s[b, i, q] -= m[q]
    k.column_max_subtract = column_max_subtract

    @exact
    def column_sum_divide(s):
        blocks, rows, cols = s.shape
        a = np.empty(cols, s.dtype)
        zero = s.dtype.type(0)
        for b in range(blocks):
            for q in range(cols):
                a[q] = zero
            for i in range(rows):
                for q in range(cols):
                    a[q] += s[b, i, q]
            for i in range(rows):
                for q in range(cols):
                    s[b, i, q] /= a[q]
    k.column_sum_divide = column_sum_divide

    @exact
    def column_softmax_grad(d, rowsum, w):
        # d = (d - rowsum) * w in one pass (rowsum: one value per column of each block), NumPy's two operations
        blocks, rows, cols = d.shape
        for b in range(blocks):
            for i in range(rows):
                for q in range(cols):
                    d[b, i, q] = (d[b, i, q] - rowsum[b, 0, q]) * w[b, i, q]
    k.column_softmax_grad = column_softmax_grad

    # The embedding table's gradient: each row of gy added to its id's row in position order (an id's first
    # row assigned, so the table is written once: rows nobody looked up are zeroed here), instead of sorting
    # the ids and gathering gy through the order. The NumPy code (ops/embedding.py) adds an id's first three
    # rows in the same order, so the tables are the same bits unless an id comes four or more times (NumPy's
    # add.reduceat sums the rest in an order of its own: a difference in rounding only).
    @exact
    def scatter_rows(ids, gy, out):
        n, d = gy.shape
        rows = out.shape[0]
        seen = np.zeros(rows, np.bool_)
        for i in range(n):
            r = ids[i]
            if r < 0 or r >= rows:
                raise IndexError("embedding: an id is outside the table (changed since the forward pass?)")
            seen[r] = True
        zero = out.dtype.type(0)
        for r in range(rows):
            if not seen[r]:
                for j in range(d):
                    out[r, j] = zero
            seen[r] = False   # from here: whether the row has had its first assignment
        for i in range(n):
            r = ids[i]
            if seen[r]:
                for j in range(d):
                    out[r, j] += gy[i, j]
            else:
                seen[r] = True
                for j in range(d):
                    out[r, j] = gy[i, j]
    k.scatter_rows = scatter_rows
    return k


def _split(body, rows, elements):
    """body(lo, hi) over rows 0..rows, split over lamina's threads for large arrays, every part starting on a
    block of _BLOCK rows (so that each block's column sums are the same whichever thread makes them)."""
    width = min(-(-rows // _BLOCK), _threads.split_width(elements, SPLIT_ELEMENTS)) if rows > _BLOCK else 1
    if width < 2:
        body(0, rows)
    else:
        _threads.run_split([lambda r=r: body(*r) for r in _threads.ranges(rows, width, align=_BLOCK)])


def _blocks(rows, shape, dtype):
    """Zeroed per-block column sums: one row (of ``shape``) for each block of _BLOCK rows."""
    return np.zeros((-(-rows // _BLOCK),) + shape, dtype)


def _column_sums(blocks):
    """The blocks' sums added in float64 (the same order on any number of threads), in their dtype."""
    return blocks.sum(axis=0, dtype=np.float64).astype(blocks.dtype, copy=False)


def layer_norm_forward(x2, gamma, beta, epsilon):
    """LayerNorm of the rows of a (R, D) array: (y, mean, inv) with mean and inv (R,), or None where the
    kernels do not run (the caller's NumPy code does then). gamma and beta: (D,) or None."""
    k = _eligible(x2, gamma, beta)
    if k is None:
        return None
    rows, d = x2.shape
    y = np.empty_like(x2)
    mean = np.empty(rows, x2.dtype)
    inv = np.empty(rows, x2.dtype)
    dummy = x2[0]
    eps = x2.dtype.type(epsilon)
    g = dummy if gamma is None else gamma
    b = dummy if beta is None else beta

    def body(lo, hi):
        k.layer_norm_rows(x2[lo:hi], g, b, gamma is not None, beta is not None, eps, y[lo:hi], mean[lo:hi],
                          inv[lo:hi])
    _split(body, rows, x2.size)
    return y, mean, inv


def layer_norm_backward(gy2, x2, mean, inv, gamma, need_x, need_params):
    """(dx, dgamma, dbeta) of :func:`layer_norm_forward` for the gradient gy2 (R, D); dx is None unless
    need_x, dgamma and dbeta None unless need_params (dgamma None as well without gamma). None where the
    kernels do not run."""
    k = _eligible(gy2, x2, gamma)
    if k is None:
        return None
    rows, d = gy2.shape
    dx = np.empty_like(gy2) if need_x else gy2[:1]
    g = gy2[0] if gamma is None else gamma
    blocks = _blocks(rows, (2, d), gy2.dtype) if need_params else _blocks(1, (2, 1), gy2.dtype)

    def body(lo, hi):
        k.layer_norm_rows_grad(gy2[lo:hi], x2[lo:hi], mean[lo:hi], inv[lo:hi], g, gamma is not None, need_x,
                               need_params, dx[lo:hi] if need_x else dx, blocks[lo // _BLOCK:] if need_params else blocks)
    _split(body, rows, gy2.size)
    dgamma = dbeta = None
    if need_params:
        dgamma, dbeta = _column_sums(blocks)
        dgamma = dgamma if gamma is not None else None
    return (dx if need_x else None), dgamma, dbeta


def bias_relu(y2, b):
    """y2 += b, then max(y2, 0), in place on a (R, D) array with b (D,): True if done here, False where the
    kernels do not run (the caller's NumPy code does then)."""
    k = _eligible(y2, b)
    if k is None:
        return False
    _split(lambda lo, hi: k.bias_relu_rows(y2[lo:hi], b), y2.shape[0], y2.size)
    return True


def relu_bias_grad(gy2, y2, need_b):
    """(gy2 * (y2 > 0), its column sums or None) for (R, D) arrays, one pass; None where the kernels do not
    run."""
    k = _eligible(gy2, y2)
    if k is None or gy2.shape != y2.shape:
        return None
    rows, d = gy2.shape
    g = np.empty_like(gy2)
    blocks = _blocks(rows if need_b else 1, (d if need_b else 1,), gy2.dtype)
    _split(lambda lo, hi: k.relu_bias_grad_rows(gy2[lo:hi], y2[lo:hi], g[lo:hi], need_b,
                                                blocks[lo // _BLOCK:] if need_b else blocks), rows, gy2.size)
    return g, (_column_sums(blocks) if need_b else None)


def lstm_cell_grad(gates):
    """The compiled backward step of an LSTM with sigmoid gates and tanh activations, for the sequence's gate
    activations ``gates`` (T, 4, N, u) (their size and dtype decide, as for the other kernels); None where the
    kernels do not run (the caller's NumPy passes do then). Called as
    ``f(dh, dc, gates[t], tanh_c_t, c_prev, dz_t, dc_prev)`` on contiguous (N, u) / (N, 4u) arrays: it replaces
    the step's dozen NumPy passes over (N, u) blocks (each mostly call overhead at the usual sizes)."""
    k = _eligible(gates)
    return None if k is None else k.lstm_cell_grad


def adam_update(w, g, m, v, b1, b2, eps, alpha):
    """Adam's update of equally shaped arrays in place, one pass: m += (g - m)(1 - b1), v += (g^2 - v)(1 - b2),
    w -= alpha m / (sqrt(v) + eps), with the same float operations as the NumPy code (no AMSGrad): True if
    done here, False where the kernels do not run (the caller's NumPy code does then)."""
    # at any size (ADAM_MIN_ELEMENTS): the transformer benchmark's 36 weights, 31 of them small, 1.50 -> 1.06 ms
    k = _eligible(w, g, m, v, least=ADAM_MIN_ELEMENTS)
    if k is None or not (w.shape == g.shape == m.shape == v.shape):
        return False
    t = w.dtype.type
    k.adam_update(w.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), t(1.0 - b1), t(1.0 - b2), t(eps),
                  t(alpha))
    return True


def col2im_gather(g2):
    """The compiled col2im for a convolution's input gradient g2 (rows, O) @ W2 (O, KH*KW*C) (g2's size and
    dtype decide, as for the other kernels; the caller makes W2 contiguous, in g2's dtype), or None where the
    kernels do not run. Called as
    ``f(cols, out, sh, sw, dh, dw)`` with a block's columns (S, OH, OW, KH, KW, C) and its padded input
    gradient (S, Hp, Wp, C), which it writes whole (no zeroed array needed)."""
    k = _eligible(g2)
    return None if k is None else k.col2im_gather


def gru_cell_grad(gates):
    """As :func:`lstm_cell_grad`, for a GRU with reset_after, sigmoid gates and a tanh candidate (``gates``:
    the sequence's z and r, (T, 2, N, u)): called as ``f(dh, zr[t], candidate_t, h_prev, rh_t, dx_t, dr_t,
    dprev)``."""
    k = _eligible(gates)
    return None if k is None else k.gru_cell_grad


def softmax_columns(s):
    """In place, the softmax of each column of ``s`` (..., K, Q) down its K rows (attention's transposed scores):
    True if done here (NumPy's exp between two compiled passes), False where the kernels do not run (the caller's
    NumPy code does then: max, subtract, exp, sum, divide, the same values)."""
    k = _eligible(s)
    if k is None or s.ndim < 2:   # (an empty array never runs here: _eligible wants values)
        return False
    s3 = s.reshape((-1,) + s.shape[-2:])
    k.column_max_subtract(s3)
    np.exp(s3, out=s3)
    k.column_sum_divide(s3)
    return True


def softmax_columns_grad(d, rowsum, w):
    """In place, ``d = (d - rowsum) * w`` for the softmax's column weights w (..., K, Q) and one rowsum per column
    (..., 1, Q), in one pass: True if done here, False where the kernels do not run (the caller's NumPy code does
    then, with the same values)."""
    k = _eligible(d, rowsum, w)
    if k is None or d.ndim < 2 or d.shape != w.shape or rowsum.shape != d.shape[:-2] + (1, d.shape[-1]):
        return False
    k.column_softmax_grad(d.reshape((-1,) + d.shape[-2:]), rowsum.reshape((-1, 1, d.shape[-1])),
                          w.reshape((-1,) + w.shape[-2:]))
    return True


def scatter_rows(ids, gy, num_rows):
    """The (num_rows, D) table with each row of gy (N, D) added to row ids[i] (ids (N,) in [0, num_rows)) in
    position order, in one compiled pass; None where the kernels do not run."""
    k = _eligible(gy)
    if k is None or gy.ndim != 2 or ids.ndim != 1 or ids.shape[0] != gy.shape[0] or ids.dtype.kind not in "iu":
        return None
    if ids.dtype != np.int64 or not ids.flags.c_contiguous:
        ids = np.ascontiguousarray(ids, np.int64)
    out = np.empty((num_rows, gy.shape[1]), gy.dtype)
    k.scatter_rows(ids, gy, out)
    return out


def _pool_geometry(shape, pool, stride, pads):
    (ph, pw), (sh, sw), ((pt, pb), (pl, pr)) = pool, stride, pads
    oh = (shape[1] + pt + pb - ph) // sh + 1
    ow = (shape[2] + pl + pr - pw) // sw + 1
    return oh, ow


def max_pool2d(x, pool, stride, pads, note):
    """Max pooling of a (N, H, W, C) array (pads: ((top, bottom), (left, right)), -inf): (y, which) with y
    (N, OH, OW, C) and which the window offset (row-major) of each output's first maximum, uint8 (int32 for
    windows over 256 values; None unless ``note``), as ops.convolution.MaxPool2D's NumPy code gives bit for
    bit; None where the kernels do not run."""
    k = _eligible(x)
    if k is None or x.ndim != 4:
        return None
    (ph, pw), (sh, sw), ((pt, _), (pl, _)) = pool, stride, pads
    oh, ow = _pool_geometry(x.shape, pool, stride, pads)
    y = np.empty((x.shape[0], oh, ow, x.shape[3]), x.dtype)
    which = np.empty(y.shape, np.uint8 if ph * pw <= 256 else np.int32) if note else np.empty((1, 1, 1, 1), np.uint8)

    def body(lo, hi):
        k.max_pool_rows(x[lo:hi], ph, pw, sh, sw, pt, pl, y[lo:hi], which[lo:hi] if note else which, note)
    _threads.split_rows(body, x.shape[0], x.size, POOL_SPLIT_ELEMENTS)
    return y, (which if note else None)


def max_pool2d_grad(gy, which, xshape, pool, stride, pads):
    """The input gradient (N, H, W, C) of :func:`max_pool2d` for gy (N, OH, OW, C) and its note ``which``:
    the NumPy code's values bit for bit (overlapping windows add in its order); None where the kernels do not
    run."""
    k = _eligible(gy, size=int(np.prod(xshape)))   # the input's size, as the forward pass's
    if (k is None or gy.ndim != 4 or type(which) is not np.ndarray or which.shape != gy.shape
            or not which.flags.c_contiguous):
        return None
    (ph, pw), (sh, sw), ((pt, _), (pl, _)) = pool, stride, pads
    overlap = sh < ph or sw < pw
    # every position in exactly one window: no padding, disjoint windows tiling the input
    tiled = pt == pl == 0 and sh == ph and sw == pw and xshape[1] == gy.shape[1] * ph and xshape[2] == gy.shape[2] * pw
    dx = np.empty(xshape, gy.dtype)

    def body(lo, hi):
        k.max_pool_rows_grad(gy[lo:hi], which[lo:hi], ph, pw, sh, sw, pt, pl, dx[lo:hi], not tiled, overlap)
    _threads.split_rows(body, gy.shape[0], dx.size, POOL_SPLIT_ELEMENTS)
    return dx
