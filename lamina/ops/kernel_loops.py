"""The loops of lamina's compiled kernels, as plain Python (kernels.py says what each is for and where it runs).

numba compiles these functions, either on their first call in a process (``numba.njit``, cached on disk) or ahead
of time into an extension module (kernels_aot.py) that later processes load without numba or LLVM. Each reads
its arrays once, row by row, in the order the NumPy code of the op it replaces computes them.

Only NumPy is imported here: no module of lamina, so that the ahead-of-time build compiles this file alone.
"""
import numpy as np

# Column sums over many rows add each block of this many rows in the array's dtype (SIMD-wide), then the
# blocks' sums in float64 (so a float32 sum over 65536 rows loses little more than one over 256).
BLOCK = 256


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


def layer_norm_rows_grad(gy, x, mean, inv, gamma, has_gamma, need_x, need_params, dx, blocks):
    # dx = inv * (g - mean(g) - xhat * mean(g * xhat)) with g = gy * gamma; blocks[b, 0] += gy * xhat and
    # blocks[b, 1] += gy over the rows of block b (zeroed by the caller): the gamma and beta gradients, added in the
    # same visit of the row as dx's sums where both are wanted (a read of gy and x and xhat's arithmetic less: a
    # (5120, 128) float32 backward 0.26 -> 0.23 ms on one Zen 4 thread, (8192, 64) 0.27 -> 0.19, (1568, 768) 0.53 ->
    # 0.35; the same bits)
    rows, d = gy.shape
    zero, one = gy.dtype.type(0), gy.dtype.type(1)
    scale = one / gy.dtype.type(d)
    for i in range(rows):
        m = mean[i]
        r = inv[i]
        if need_x:
            m1 = zero
            m2 = zero
            if need_params:
                sg = blocks[i // BLOCK, 0]
                sb = blocks[i // BLOCK, 1]
                for j in range(d):
                    gv = gy[i, j]
                    xh = (x[i, j] - m) * r
                    g = gv * gamma[j] if has_gamma else gv
                    m1 += g
                    m2 += g * xh
                    sg[j] += gv * xh
                    sb[j] += gv
            else:
                for j in range(d):
                    g = gy[i, j] * gamma[j] if has_gamma else gy[i, j]
                    m1 += g
                    m2 += g * ((x[i, j] - m) * r)
            m1 *= scale
            m2 *= scale
            for j in range(d):
                g = gy[i, j] * gamma[j] if has_gamma else gy[i, j]
                dx[i, j] = (g - m1 - (x[i, j] - m) * r * m2) * r
        elif need_params:
            sg = blocks[i // BLOCK, 0]
            sb = blocks[i // BLOCK, 1]
            for j in range(d):
                sg[j] += gy[i, j] * ((x[i, j] - m) * r)
                sb[j] += gy[i, j]


def bias_relu_rows(y, b):
    rows, d = y.shape
    zero = y.dtype.type(0)
    for i in range(rows):
        for j in range(d):
            v = y[i, j] + b[j]
            y[i, j] = zero if v < zero else v   # NaN stays NaN, as maximum(v, 0)


def relu_rows(x, y):
    # y = max(x, 0) as NumPy's maximum against zeros gives it: NaN stays NaN, -0 becomes +0 (y may be x). In place,
    # each row goes through a scratch row: written back directly, the loop would store a value only where it
    # changes (x <= 0), a conditional store that runs without SIMD and mispredicts on mixed signs ((64, 4096)
    # float32 in place: 170 against 60 us); out of place the direct loop is the faster (41 against 60)
    rows, d = x.shape
    zero = x.dtype.type(0)
    if x.ctypes.data == y.ctypes.data:
        t = np.empty(d, x.dtype)
        for i in range(rows):
            xr = x[i]
            for j in range(d):
                v = xr[j]
                t[j] = v if (v > zero or v != v) else zero
            for j in range(d):
                xr[j] = t[j]
        return
    for i in range(rows):
        xr = x[i]
        yr = y[i]
        for j in range(d):
            v = xr[j]
            yr[j] = v if (v > zero or v != v) else zero


def relu_bias_grad_rows(gy, y, g, need_b, blocks):
    # g = gy * (y > 0): NaN in gy stays NaN (NaN * 0), NaN in y passes nothing; blocks[b] += g over the
    # rows of block b (zeroed by the caller): the bias gradient
    rows, d = gy.shape
    zero, one = gy.dtype.type(0), gy.dtype.type(1)
    for i in range(rows):
        if need_b:
            sb = blocks[i // BLOCK]
            for j in range(d):
                v = gy[i, j] * (one if y[i, j] > zero else zero)
                g[i, j] = v
                sb[j] += v
        else:
            for j in range(d):
                g[i, j] = gy[i, j] * (one if y[i, j] > zero else zero)


def column_sums_rows(x, center, squared, blocks):
    # blocks[b] += x over the rows of block b, or (x - center)^2 where squared (zeroed by the caller): a batch
    # norm's per-channel sums, the mean's and then the variance's. Four rows an update of a block's sums (their
    # stores, one a value, were the time at few channels: (65536, 32) float32 0.24 -> 0.19 ms, the squares' 0.31
    # -> 0.19, on one Zen 4 thread); each block's rows in the same order on any number of threads
    rows, d = x.shape
    for b0 in range(0, rows, BLOCK):
        sb = blocks[b0 // BLOCK]
        b1 = min(rows, b0 + BLOCK)
        b4 = b1 - (b1 - b0) % 4
        for i in range(b0, b4, 4):
            x0 = x[i]
            x1 = x[i + 1]
            x2 = x[i + 2]
            x3 = x[i + 3]
            if squared:
                for j in range(d):
                    c = center[j]
                    t0 = x0[j] - c
                    t1 = x1[j] - c
                    t2 = x2[j] - c
                    t3 = x3[j] - c
                    sb[j] += (t0 * t0 + t1 * t1) + (t2 * t2 + t3 * t3)
            else:
                for j in range(d):
                    sb[j] += (x0[j] + x1[j]) + (x2[j] + x3[j])
        for i in range(b4, b1):
            if squared:
                for j in range(d):
                    t = x[i, j] - center[j]
                    sb[j] += t * t
            else:
                for j in range(d):
                    sb[j] += x[i, j]


def scale_shift_rows(x, scale, shift, y):
    # y = x * scale + shift per column (a batch norm with given statistics), the product rounded before the sum
    # as NumPy's two passes round it
    rows, d = x.shape
    for i in range(rows):
        xr = x[i]
        yr = y[i]
        for j in range(d):
            yr[j] = xr[j] * scale[j] + shift[j]


def shift_rows(x, m, ls, y):
    # y = (x - m) - ls per row (a log-softmax from its row maxima and the logs of its sums), the two subtractions
    # rounded one after the other as NumPy's two broadcast passes round them
    rows, d = x.shape
    for i in range(rows):
        xr = x[i]
        yr = y[i]
        mi = m[i]
        li = ls[i]
        for j in range(d):
            yr[j] = (xr[j] - mi) - li


def batch_norm_rows(x, mean, inv, gamma, beta, has_gamma, has_beta, y):
    # y = (x - mean) * inv (* gamma) (+ beta), per channel (column), in the NumPy code's order
    rows, d = x.shape
    for i in range(rows):
        for j in range(d):
            h = (x[i, j] - mean[j]) * inv[j]
            if has_gamma:
                h = h * gamma[j]
            if has_beta:
                h = h + beta[j]
            y[i, j] = h


def batch_norm_rows_grad_sums(gy, x, mean, inv, blocks):
    # blocks[b, 0] += gy and blocks[b, 1] += gy * xhat over the rows of block b (zeroed by the caller), with
    # xhat = (x - mean) * inv recomputed: beta's and gamma's gradients and the input gradient's two sums. Four rows
    # an update of the sums, as column_sums_rows ((65536, 32) float32: 0.73-0.86 -> 0.54 ms on one Zen 4 thread)
    rows, d = gy.shape
    for b0 in range(0, rows, BLOCK):
        sb = blocks[b0 // BLOCK, 0]
        sg = blocks[b0 // BLOCK, 1]
        b1 = min(rows, b0 + BLOCK)
        b4 = b1 - (b1 - b0) % 4
        for i in range(b0, b4, 4):
            g0 = gy[i]
            g1 = gy[i + 1]
            g2 = gy[i + 2]
            g3 = gy[i + 3]
            x0 = x[i]
            x1 = x[i + 1]
            x2 = x[i + 2]
            x3 = x[i + 3]
            for j in range(d):
                m = mean[j]
                v = inv[j]
                sb[j] += (g0[j] + g1[j]) + (g2[j] + g3[j])
                sg[j] += ((g0[j] * ((x0[j] - m) * v) + g1[j] * ((x1[j] - m) * v))
                          + (g2[j] * ((x2[j] - m) * v) + g3[j] * ((x3[j] - m) * v)))
        for i in range(b4, b1):
            for j in range(d):
                g = gy[i, j]
                sb[j] += g
                sg[j] += g * ((x[i, j] - mean[j]) * inv[j])


def batch_norm_rows_grad(gy, x, mean, inv, a, b, c, dx):
    # dx = gy * a + (xhat * c + b), per channel a, b, c (the NumPy code's three-term rule, folded)
    rows, d = gy.shape
    for i in range(rows):
        for j in range(d):
            dx[i, j] = gy[i, j] * a[j] + ((x[i, j] - mean[j]) * inv[j] * c[j] + b[j])


def channel_sums_rows(x, center, squared, out):
    # A batch norm over a channel axis before others, x (B, C, A) (channels first: each channel's positions one
    # contiguous run): out[b, c] = the sum over a of x[b, c, a], or with ``squared`` of (x[b, c, a] - center[c])^2
    # (the variance's pass: no cancellation), each run summed in float64, stored in x's dtype (the caller adds the
    # B rows in float64, in order: the same sums on any number of threads)
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            xr = x[b, c]
            t = 0.0
            if squared:
                m = center[c]
                for a in range(xr.shape[0]):
                    d = np.float64(xr[a] - m)
                    t += d * d
            else:
                for a in range(xr.shape[0]):
                    t += xr[a]
            out[b, c] = t


def channel_norm_rows(x, mean, inv, gamma, beta, has_gamma, has_beta, y):
    # y = (x - mean) * inv (* gamma) (+ beta) over x (B, C, A), per channel c (batch_norm_rows' rule and order)
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            xr, yr = x[b, c], y[b, c]
            m, v = mean[c], inv[c]
            if has_gamma and has_beta:
                g, e = gamma[c], beta[c]
                for a in range(xr.shape[0]):
                    yr[a] = (xr[a] - m) * v * g + e
            elif has_gamma:
                g = gamma[c]
                for a in range(xr.shape[0]):
                    yr[a] = (xr[a] - m) * v * g
            elif has_beta:
                e = beta[c]
                for a in range(xr.shape[0]):
                    yr[a] = (xr[a] - m) * v + e
            else:
                for a in range(xr.shape[0]):
                    yr[a] = (xr[a] - m) * v


def channel_norm_grad_sums(gy, x, mean, inv, out):
    # out[b, 0, c] and out[b, 1, c]: the sums over a of gy and of gy * xhat, xhat = (x - mean) * inv recomputed,
    # over (B, C, A) arrays (channel_sums_rows' runs, in float64): beta's and gamma's gradients, dx's two sums
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            gr, xr = gy[b, c], x[b, c]
            m, v = mean[c], inv[c]
            t0 = 0.0
            t1 = 0.0
            for a in range(xr.shape[0]):
                g = gr[a]
                t0 += g
                t1 += np.float64(g * ((xr[a] - m) * v))
            out[b, 0, c] = t0
            out[b, 1, c] = t1


def channel_norm_grad(gy, x, mean, inv, ca, cb, cc, dx):
    # dx = gy * ca + (xhat * cc + cb) over (B, C, A) arrays, per channel (batch_norm_rows_grad's folded rule)
    for b in range(x.shape[0]):
        for c in range(x.shape[1]):
            gr, xr, dr = gy[b, c], x[b, c], dx[b, c]
            m, v, fa, fb, fc = mean[c], inv[c], ca[c], cb[c], cc[c]
            for a in range(xr.shape[0]):
                dr[a] = gr[a] * fa + ((xr[a] - m) * v * fc + fb)


def group_norm_rows(x, gamma, beta, has_gamma, has_beta, eps, groups, mean, inv, y, lo, hi):
    # GroupNorm of the samples lo:hi of x (N, S, C), C a multiple of groups, each sample's two passes one after the
    # other while it is in cache. First each channel's sums of d = x - k and d^2 in float64, k the channel's value
    # in the sample's first position (shifted sums: k lies within the channel's values, so s2 - s1^2 / S cancels
    # no more than the two-pass variance does); the group's mean and squared deviations combined from its
    # channels' (Chan's pairwise rule: each channel's own, plus S (its mean - the group's)^2), inv = 1 / sqrt(var
    # + eps); mean and inv (N, C) each channel's group's values in x's dtype. Then y = (x - mean) a + b with
    # a = inv gamma and b = beta per channel, one pass
    s, c = x.shape[1], x.shape[2]
    cg = c // groups
    count = s * cg
    k = np.empty(c, x.dtype)
    s1 = np.empty(c, np.float64)
    s2 = np.empty(c, np.float64)
    m = np.empty(c, x.dtype)
    a = np.empty(c, x.dtype)
    b = np.zeros(c, x.dtype)
    for n in range(lo, hi):
        xn, yn = x[n], y[n]
        for j in range(c):
            k[j] = xn[0, j]
            s1[j] = 0.0
            s2[j] = 0.0
        s4 = s - s % 4
        for i in range(0, s4, 4):   # four rows an update of the sums (their stores, not the additions, were the time)
            x0 = xn[i]
            x1 = xn[i + 1]
            x2 = xn[i + 2]
            x3 = xn[i + 3]
            for j in range(c):
                kj = k[j]
                d0 = np.float64(x0[j] - kj)
                d1 = np.float64(x1[j] - kj)
                d2 = np.float64(x2[j] - kj)
                d3 = np.float64(x3[j] - kj)
                s1[j] += (d0 + d1) + (d2 + d3)
                s2[j] += (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3)
        for i in range(s4, s):
            xr = xn[i]
            for j in range(c):
                d = np.float64(xr[j] - k[j])
                s1[j] += d
                s2[j] += d * d
        for g in range(groups):
            t = 0.0
            for j in range(g * cg, (g + 1) * cg):
                t += k[j] * s + s1[j]
            mg = t / count
            q = 0.0
            for j in range(g * cg, (g + 1) * cg):
                mj = s1[j] / s                 # the channel's mean - k
                e = (k[j] + mj) - mg
                q += (s2[j] - s1[j] * mj) + s * e * e
            v = 1.0 / np.sqrt(max(q, 0.0) / count + eps)
            for j in range(g * cg, (g + 1) * cg):
                mean[n, j] = mg
                inv[n, j] = v
        for j in range(c):
            m[j] = mean[n, j]
            a[j] = inv[n, j] * gamma[j] if has_gamma else inv[n, j]
            if has_beta:
                b[j] = beta[j]
        for i in range(s):
            xr, yr = xn[i], yn[i]
            for j in range(c):
                yr[j] = (xr[j] - m[j]) * a[j] + b[j]


def group_norm_rows_grad(gy, x, mean, inv, gamma, has_gamma, groups, need_x, sums, dx, lo, hi):
    # group_norm_rows' backward for the samples lo:hi, each sample's two passes while it is in cache: sums[n, 0] and
    # sums[n, 1] the per-channel sums of gy and of gy * xhat (xhat = (x - mean) * inv: the sum of gy (x - mean) in
    # float64, times inv once; stored in gy's dtype: beta's and gamma's gradients once added over the samples);
    # then, where need_x, dx = inv (g - mean(g) - xhat mean(g xhat)) with g = gy gamma and the means over the
    # sample's group, as gy a + ((x - mean) c + b) per channel
    s, c = gy.shape[1], gy.shape[2]
    cg = c // groups
    count = s * cg
    sb = np.empty(c, np.float64)
    sg = np.empty(c, np.float64)
    m = np.empty(c, gy.dtype)
    a = np.empty(c, gy.dtype)
    b = np.empty(c, gy.dtype)
    cc = np.empty(c, gy.dtype)
    for n in range(lo, hi):
        gn, xn = gy[n], x[n]
        for j in range(c):
            sb[j] = 0.0
            sg[j] = 0.0
            m[j] = mean[n, j]
        s4 = s - s % 4
        for i in range(0, s4, 4):   # four rows an update of the sums, as the forward's
            g0 = gn[i]
            g1 = gn[i + 1]
            g2 = gn[i + 2]
            g3 = gn[i + 3]
            x0 = xn[i]
            x1 = xn[i + 1]
            x2 = xn[i + 2]
            x3 = xn[i + 3]
            for j in range(c):
                mj = m[j]
                sb[j] += (np.float64(g0[j]) + np.float64(g1[j])) + (np.float64(g2[j]) + np.float64(g3[j]))
                sg[j] += ((np.float64(g0[j] * (x0[j] - mj)) + np.float64(g1[j] * (x1[j] - mj)))
                          + (np.float64(g2[j] * (x2[j] - mj)) + np.float64(g3[j] * (x3[j] - mj))))
        for i in range(s4, s):
            gr, xr = gn[i], xn[i]
            for j in range(c):
                g = gr[j]
                sb[j] += g
                sg[j] += g * (xr[j] - m[j])
        for j in range(c):
            sg[j] *= inv[n, j]
            sums[n, 0, j] = sb[j]
            sums[n, 1, j] = sg[j]
        if not need_x:
            continue
        for grp in range(groups):
            tb = 0.0
            tg = 0.0
            for j in range(grp * cg, (grp + 1) * cg):
                w = gamma[j] if has_gamma else 1.0
                tb += sb[j] * w
                tg += sg[j] * w
            for j in range(grp * cg, (grp + 1) * cg):
                v = inv[n, j]
                a[j] = v * gamma[j] if has_gamma else v
                b[j] = -v * (tb / count)
                cc[j] = -v * v * (tg / count)
        dn = dx[n]
        for i in range(s):
            gr, xr, dr = gn[i], xn[i], dn[i]
            for j in range(c):
                dr[j] = gr[j] * a[j] + ((xr[j] - m[j]) * cc[j] + b[j])


def _span(off, s, n_in, n_out):
    # the outputs j in [j0, j1) of an axis whose input position j s + off lies inside the input's n_in (a helper,
    # kernels_aot.HELPERS: the depthwise kernels below)
    j0 = max(0, (s - 1 - off) // s)
    j1 = min(n_out, (n_in - 1 - off) // s + 1)
    return j0, max(j0, j1)


def depthwise_direct(x, wt, bt, y, geo, lo, hi):
    # a depthwise convolution (ops.nn_kernels.DepthwiseConvND) on the unpadded channels-last input x, as
    # (N, D, H, W, C) flat, over output rows lo:hi (a row: one (n, od, oh), its OW * C outputs). geo: the input's
    # D, H, W, C, the output's OD, OH, OW, the kernel's KD, KH, KW, then the strides, dilations and padding before,
    # each (d, h, w). Each row starts at zero and adds each kernel offset's products where its window lies inside
    # the input (the padding's zeros are skipped, not multiplied), offsets in row-major order as NumPy's code; then
    # the bias (bt, the bias tiled along the row, or empty). wt: each offset's weights tiled along a row, width
    # OW * C. Along the last axis at stride 1 an offset's products are one contiguous run.
    h_, w_, c = geo[1], geo[2], geo[3]
    od_, oh_, ow_ = geo[4], geo[5], geo[6]
    kh, kw = geo[8], geo[9]
    sw, dw, pw = geo[12], geo[15], geo[18]
    width = ow_ * c
    zero = y.dtype.type(0)
    for r in range(lo, hi):
        yr = y[r * width:(r + 1) * width]
        for m in range(width):
            yr[m] = zero
        n, od, oh = r // (oh_ * od_), (r // oh_) % od_, r % oh_
        for a in range(geo[7]):
            i0 = od * geo[10] + a * geo[13] - geo[16]
            if i0 < 0 or i0 >= geo[0]:
                continue
            for b in range(kh):
                i1 = oh * geo[11] + b * geo[14] - geo[17]
                if i1 < 0 or i1 >= h_:
                    continue
                base = ((n * geo[0] + i0) * h_ + i1) * w_ * c
                for e in range(kw):
                    off = e * dw - pw
                    j0, j1 = _span(off, sw, w_, ow_)
                    wk = wt[(a * kh + b) * kw + e]
                    if sw == 1:
                        xs = x[base + (j0 + off) * c:base + (j1 + off) * c]
                        ys = yr[j0 * c:j1 * c]
                        ws = wk[j0 * c:j1 * c]
                        for m in range(ys.shape[0]):
                            ys[m] += xs[m] * ws[m]
                    else:
                        for j in range(j0, j1):
                            xs = x[base + (j * sw + off) * c:base + (j * sw + off + 1) * c]
                            ys = yr[j * c:(j + 1) * c]
                            for m in range(c):
                                ys[m] += xs[m] * wk[m]
        for m in range(bt.shape[0]):
            yr[m] += bt[m]


def depthwise_direct_grad_input(gy, wt, gx, geo, lo, hi):
    # depthwise_direct's input gradient over input rows lo:hi (a row: one (n, id, ih), its W * C entries): each
    # starts at zero and gathers gy times the weights from every offset whose output lies inside gy (geo, wt
    # as there), offsets in row-major order
    h_, w_, c = geo[1], geo[2], geo[3]
    od_, oh_, ow_ = geo[4], geo[5], geo[6]
    kh, kw = geo[8], geo[9]
    sd, sh, sw, dw, pw = geo[10], geo[11], geo[12], geo[15], geo[18]
    width = w_ * c
    zero = gx.dtype.type(0)
    for r in range(lo, hi):
        gr = gx[r * width:(r + 1) * width]
        for m in range(width):
            gr[m] = zero
        n, i0, i1 = r // (h_ * geo[0]), (r // h_) % geo[0], r % h_
        for a in range(geo[7]):
            t0 = i0 + geo[16] - a * geo[13]
            if t0 < 0 or t0 % sd != 0 or t0 // sd >= od_:
                continue
            for b in range(kh):
                t1 = i1 + geo[17] - b * geo[14]
                if t1 < 0 or t1 % sh != 0 or t1 // sh >= oh_:
                    continue
                base = ((n * od_ + t0 // sd) * oh_ + t1 // sh) * ow_ * c
                for e in range(kw):
                    off = e * dw - pw
                    j0, j1 = _span(off, sw, w_, ow_)
                    wk = wt[(a * kh + b) * kw + e]
                    if sw == 1:
                        gs = gy[base + j0 * c:base + j1 * c]
                        xs = gr[(j0 + off) * c:(j1 + off) * c]
                        ws = wk[j0 * c:j1 * c]
                        for m in range(xs.shape[0]):
                            xs[m] += gs[m] * ws[m]
                    else:
                        for j in range(j0, j1):
                            gs = gy[base + j * c:base + (j + 1) * c]
                            xs = gr[(j * sw + off) * c:(j * sw + off + 1) * c]
                            for m in range(c):
                                xs[m] += gs[m] * wk[m]


def depthwise_direct_grad_weight(x, gy, acc, parts, geo, rows, lo, hi):
    # depthwise_direct's weight gradient (geo as there) by chunks lo:hi of ``rows`` output rows: parts[q, k] =
    # the sum over chunk q's outputs of gy times x in offset k's window, accumulated along the rows in acc (K, OW C)
    # then over the positions in order; where acc has a row K, the bias's gradient (gy's sum) too. Chunks of a
    # fixed size, added in order by the caller: the same numbers however the chunks are shared over threads.
    h_, w_, c = geo[1], geo[2], geo[3]
    od_, oh_, ow_ = geo[4], geo[5], geo[6]
    kh, kw = geo[8], geo[9]
    sw, dw, pw = geo[12], geo[15], geo[18]
    width = ow_ * c
    nk = geo[7] * kh * kw
    total = gy.shape[0] // width
    zero = acc.dtype.type(0)
    for q in range(lo, hi):
        for k in range(acc.shape[0]):
            ak = acc[k]
            for m in range(width):
                ak[m] = zero
        for r in range(q * rows, min(total, (q + 1) * rows)):
            g = gy[r * width:(r + 1) * width]
            if acc.shape[0] > nk:
                ab = acc[nk]
                for m in range(width):
                    ab[m] += g[m]
            n, od, oh = r // (oh_ * od_), (r // oh_) % od_, r % oh_
            for a in range(geo[7]):
                i0 = od * geo[10] + a * geo[13] - geo[16]
                if i0 < 0 or i0 >= geo[0]:
                    continue
                for b in range(kh):
                    i1 = oh * geo[11] + b * geo[14] - geo[17]
                    if i1 < 0 or i1 >= h_:
                        continue
                    base = ((n * geo[0] + i0) * h_ + i1) * w_ * c
                    for e in range(kw):
                        off = e * dw - pw
                        j0, j1 = _span(off, sw, w_, ow_)
                        ak = acc[(a * kh + b) * kw + e]
                        if sw == 1:
                            xs = x[base + (j0 + off) * c:base + (j1 + off) * c]
                            gs = g[j0 * c:j1 * c]
                            ks = ak[j0 * c:j1 * c]
                            for m in range(ks.shape[0]):
                                ks[m] += xs[m] * gs[m]
                        else:
                            for j in range(j0, j1):
                                xs = x[base + (j * sw + off) * c:base + (j * sw + off + 1) * c]
                                gs = g[j * c:(j + 1) * c]
                                ks = ak[j * c:(j + 1) * c]
                                for m in range(c):
                                    ks[m] += xs[m] * gs[m]
        for k in range(acc.shape[0]):
            ak = acc[k]
            pk = parts[q, k]
            for m in range(c):
                pk[m] = ak[m]
            for j in range(1, ow_):
                for m in range(c):
                    pk[m] += ak[j * c + m]


def im2col_rows(x, cols, s0, s1, oh, ow, kh, kw, sh, sw, dh, dw, pt, pl):
    # the im2col rows of samples s0:s1 of the (N, H, W, C) input x under (pt, pl) zero padding: row
    # ((s - s0) oh + i) ow + j, columns ((a kw + b) C + c) = x[s, i sh + a dh - pt, j sw + b dw - pl, c], or 0
    # outside the input (ops.convolution._im2col_blocks' values, without the padded copy)
    n, h, w, c = x.shape
    xf = x.reshape(n * h * w * c)
    zero = cols.dtype.type(0)
    r = 0
    for s in range(s0, s1):
        for i in range(oh):
            for j in range(ow):
                row = cols[r]
                for a in range(kh):
                    y = i * sh + a * dh - pt
                    for b in range(kw):
                        v = j * sw + b * dw - pl
                        dst = row[(a * kw + b) * c:(a * kw + b + 1) * c]
                        if 0 <= y < h and 0 <= v < w:
                            o = ((s * h + y) * w + v) * c
                            src = xf[o:o + c]
                            for q in range(c):
                                dst[q] = src[q]
                        else:
                            for q in range(c):
                                dst[q] = zero
                r += 1


# A stride-1 convolution with few channels each way (ops.convolution.Conv2D's planes path) as "wide" planes: each
# sample's input channels-first and zero-padded, (C, Hp * Wp), Hp = OH + (KH - 1) dh and Wp = OW + (KW - 1) dw, and
# each output channel a plane over the same wide rows (OH rows of Wp positions, the last (KW - 1) dw of each unused).
# In those coordinates kernel offset (i, j) reads the input plane shifted by i dh Wp + j dw, so every term is one
# pass over contiguous runs (a loop the compiler vectorises), where im2col would copy the input KH * KW times into
# columns for a product whose few output columns BLAS runs far below its rate. Sums of products in another order
# than the im2col product's: compiled with FASTMATH.
def _pack_planes(x, n, c0, planes, pt, pl, hp, wp, mask):
    # planes (c, >= hp * wp) <- channels c0:c0 + c of sample n of the channels-last x (N, H, W, C) channels-first, its
    # row r and column q at (r + pt) wp + q + pl, zeros around it (x's rows and columns outside the hp x wp plane left
    # out); where mask (x's shape, else empty) is given, x * (mask > 0) instead, relu_bias_grad_rows' rule (a fused
    # ReLU's backward: mask its output). Returns whether every value written is finite (v - v is 0, NaN for an
    # infinity or NaN) (a helper, kernels_aot.HELPERS)
    h, w, c = x.shape[1], x.shape[2], planes.shape[0]
    zero, one = planes.dtype.type(0), planes.dtype.type(1)
    masked = mask.size > 0
    for cc in range(c):
        plane = planes[cc]
        for k in range(hp * wp):
            plane[k] = zero
    check = zero
    for r in range(max(0, -pt), min(h, hp - pt)):
        xr = x[n, r]
        base = (r + pt) * wp + pl
        for q in range(max(0, -pl), min(w, wp - pl)):
            xq = xr[q, c0:c0 + c]
            if masked:
                mq = mask[n, r, q, c0:c0 + c]
                for cc in range(c):
                    v = xq[cc] * (one if mq[cc] > zero else zero)
                    planes[cc, base + q] = v
                    check += v - v
            else:
                for cc in range(c):
                    v = xq[cc]
                    planes[cc, base + q] = v
                    check += v - v
    return check == zero


def conv_planes(x, w, b, y, xs, acc, lo, hi, pt, pl, dh, dw, relu, c0, o0, mask):
    # y[n, p, q, o0 + m] = b[m] + sum over (i, j, c) of x[n, p + i dh - pt, q + j dw - pl, c0 + c] w[i, j, c, m]
    # (zeros outside x), then max(., 0) where relu, for the samples lo:hi: w's C input channels from channel c0 of x,
    # its O outputs to y's channels from o0 (a group of a grouped convolution; 0 and 0 with all channels). Scratch:
    # xs (C, Hp * Wp) the packed input, acc (O, OH * Wp) the output planes. Output channels two at a time and a
    # kernel row's offsets three at a time share each pass's loads. With ``mask`` (x's shape, else empty) the input
    # is x * (mask > 0): a fused ReLU's input gradient, dy masked by the layer's output, with no pass of its own.
    c = w.shape[2]
    kh, kw, o = w.shape[0], w.shape[1], w.shape[3]
    oh, ow = y.shape[1], y.shape[2]
    hp = oh + (kh - 1) * dh
    wp = ow + (kw - 1) * dw
    span = (oh - 1) * wp + ow
    zero = acc.dtype.type(0)
    for n in range(lo, hi):
        _pack_planes(x, n, c0, xs[:c], pt, pl, hp, wp, mask)
        for m in range(0, o, 2):
            two = m + 1 < o
            a0 = acc[m, :span]
            a1 = acc[m + 1 if two else m, :span]
            for k in range(span):
                a0[k] = zero
                a1[k] = zero
            for cc in range(c):
                plane = xs[cc]
                for i in range(kh):
                    row = i * dh * wp
                    for j in range(0, kw - 2, 3):
                        s = row + j * dw
                        x0 = plane[s:s + span]
                        x1 = plane[s + dw:s + dw + span]
                        x2 = plane[s + 2 * dw:s + 2 * dw + span]
                        u0, u1, u2 = w[i, j, cc, m], w[i, j + 1, cc, m], w[i, j + 2, cc, m]
                        if two:
                            v0, v1, v2 = w[i, j, cc, m + 1], w[i, j + 1, cc, m + 1], w[i, j + 2, cc, m + 1]
                            for k in range(span):
                                e0, e1, e2 = x0[k], x1[k], x2[k]
                                a0[k] += u0 * e0 + u1 * e1 + u2 * e2
                                a1[k] += v0 * e0 + v1 * e1 + v2 * e2
                        else:
                            for k in range(span):
                                a0[k] += u0 * x0[k] + u1 * x1[k] + u2 * x2[k]
                    for j in range(kw - kw % 3, kw):
                        s = row + j * dw
                        x0 = plane[s:s + span]
                        u0 = w[i, j, cc, m]
                        if two:
                            v0 = w[i, j, cc, m + 1]
                            for k in range(span):
                                e0 = x0[k]
                                a0[k] += u0 * e0
                                a1[k] += v0 * e0
                        else:
                            for k in range(span):
                                a0[k] += u0 * x0[k]
        for p in range(oh):
            yr = y[n, p]
            for q in range(ow):
                ys = yr[q, o0:o0 + o]
                k = p * wp + q
                for m in range(o):
                    v = acc[m, k] + b[m]
                    ys[m] = zero if relu and v < zero else v   # NaN stays NaN, as bias_relu_rows


def conv_planes_grad_weight(x, gy, gw, xs, gs, lo, hi, pt, pl, dh, dw, c0, o0, mask, gb):
    # conv_planes' weight gradient, one partial per sample: gw[n, i, j, c, m] = sum over positions (p, q) of
    # x[n, p + i dh - pt, q + j dw - pl, c0 + c] gy[n, p, q, o0 + m] for the samples lo:hi (the caller adds the partials
    # in sample order: the same sums on any number of threads). Scratch: xs as conv_planes', gs (O, OH * Wp) gy's sample
    # packed into the wide rows, zeros at their unused positions, so that each weight's sum is one dot product of
    # contiguous runs; four output channels at a time share the input's loads. Where the sample's input holds an
    # infinity or NaN, the unused positions' zeros would pair with input values (0 * inf: NaN in a weight whose
    # windows never read it), and the sums run over each output row's positions instead (OW long: slower). With
    # ``mask`` (gy's shape, else empty) gy * (mask > 0) instead (a fused ReLU's), and with gb (N, O) (else empty) each
    # sample's sums of that over its positions too: the bias gradient's partials. Three kernel columns by four output
    # channels at a time: 12 sums sharing seven loads a position (one thread, (64, 32, 32, 3) -> 32 3x3: 4.0 -> 3.1 ms,
    # of which ~1.9 the packing; (32, 32, 32, 8) -> 8: 0.99 -> 0.82)
    c = gw.shape[3]
    kh, kw, o = gw.shape[1], gw.shape[2], gw.shape[4]
    oh, ow = gy.shape[1], gy.shape[2]
    hp = oh + (kh - 1) * dh
    wp = ow + (kw - 1) * dw
    zero = gw.dtype.type(0)
    j3 = kw - kw % 3   # the kernel columns taken three at a time; the rest one at a time
    for n in range(lo, hi):
        finite = _pack_planes(x, n, c0, xs[:c], pt, pl, hp, wp, x[:0])
        _pack_planes(gy, n, o0, gs[:o], 0, 0, oh, wp, mask)
        if gb.size > 0:
            for m in range(o):
                g0 = gs[m, :oh * wp]
                t0 = zero
                for k in range(oh * wp):
                    t0 += g0[k]
                gb[n, m] = t0
        run = (oh - 1) * wp + ow if finite else ow   # each sum: one run, or OH runs of OW
        rows = 1 if finite else oh
        for cc in range(c):
            plane = xs[cc]
            for i in range(kh):
                for j in range(0, j3, 3):
                    s = i * dh * wp + j * dw
                    ga, gb1, gc = gw[n, i, j, cc], gw[n, i, j + 1, cc], gw[n, i, j + 2, cc]
                    for m in range(0, o - 3, 4):
                        a0 = a1 = a2 = a3 = zero
                        b0 = b1 = b2 = b3 = zero
                        e0 = e1 = e2 = e3 = zero
                        for p in range(rows):
                            r = s + p * wp
                            q = p * wp
                            xa = plane[r:r + run]
                            xb = plane[r + dw:r + dw + run]
                            xc = plane[r + 2 * dw:r + 2 * dw + run]
                            g0, g1 = gs[m, q:q + run], gs[m + 1, q:q + run]
                            g2, g3 = gs[m + 2, q:q + run], gs[m + 3, q:q + run]
                            for k in range(run):
                                u0 = g0[k]
                                u1 = g1[k]
                                u2 = g2[k]
                                u3 = g3[k]
                                va = xa[k]
                                vb = xb[k]
                                vc = xc[k]
                                a0 += va * u0
                                a1 += va * u1
                                a2 += va * u2
                                a3 += va * u3
                                b0 += vb * u0
                                b1 += vb * u1
                                b2 += vb * u2
                                b3 += vb * u3
                                e0 += vc * u0
                                e1 += vc * u1
                                e2 += vc * u2
                                e3 += vc * u3
                        ga[m], ga[m + 1], ga[m + 2], ga[m + 3] = a0, a1, a2, a3
                        gb1[m], gb1[m + 1], gb1[m + 2], gb1[m + 3] = b0, b1, b2, b3
                        gc[m], gc[m + 1], gc[m + 2], gc[m + 3] = e0, e1, e2, e3
                    for jj in range(j, j + 3):
                        _grad_weight_sums(plane, gs, gw[n, i, jj, cc], i * dh * wp + jj * dw, wp, run, rows,
                                          o - o % 4, o, zero)
                for j in range(j3, kw):
                    s = i * dh * wp + j * dw
                    g = gw[n, i, j, cc]
                    for m in range(0, o - 3, 4):
                        t0 = t1 = t2 = t3 = zero
                        for p in range(rows):
                            r = p * wp
                            xv = plane[s + r:s + r + run]
                            g0, g1 = gs[m, r:r + run], gs[m + 1, r:r + run]
                            g2, g3 = gs[m + 2, r:r + run], gs[m + 3, r:r + run]
                            for k in range(run):
                                e = xv[k]
                                t0 += e * g0[k]
                                t1 += e * g1[k]
                                t2 += e * g2[k]
                                t3 += e * g3[k]
                        g[m], g[m + 1], g[m + 2], g[m + 3] = t0, t1, t2, t3
                    _grad_weight_sums(plane, gs, g, s, wp, run, rows, o - o % 4, o, zero)


def _grad_weight_sums(plane, gs, g, s, wp, run, rows, m0, m1, zero):
    # g[m] = the dot product of the input plane's runs from s with gy's plane m, for m in m0:m1 (one at a time:
    # conv_planes_grad_weight's output channels past the fours)
    for m in range(m0, m1):
        t0 = zero
        for p in range(rows):
            r = p * wp
            xv = plane[s + r:s + r + run]
            g0 = gs[m, r:r + run]
            for k in range(run):
                t0 += xv[k] * g0[k]
        g[m] = t0


def _exp_scalar(x):
    # exp(x) of a float32 (a helper of the float32 kernels below: kernels_aot.HELPERS, compiled with them; inlined in
    # its callers' loops, which vectorise). exp(x) = 2^m p(r), m = round(x / ln 2) (by adding and subtracting 1.5 *
    # 2^23), r = x - m ln 2 in two parts (Cody and Waite), p Cephes' expf polynomial (~1 ulp); 2^m from its bits (an
    # exact scaling: p * 2^m rounds only below the normal range, and a caller's addition fused with it gives the same
    # value). x is clamped to [-87.34, 88.72]: overflow becomes inf and underflow 2^-126, which change neither
    # 1 / (1 + e) nor tanh; NaN passes the clamps (negated comparisons) and stays NaN. Fused multiply-adds at most
    # ("fused" kernels): reassociation would undo the rounding and the two-part reduction.
    lo = np.float32(-87.33654)
    hi = np.float32(88.72283)
    big = np.float32(12582912.0)
    one = np.float32(1)
    x = x if not (x < lo) else lo
    x = x if not (x > hi) else hi
    m = (x * np.float32(1.44269504088896341) + big) - big
    q = x - m * np.float32(0.693359375) - m * np.float32(-2.12194440e-4)
    p = (((((np.float32(1.9875691500e-4) * q + np.float32(1.3981999507e-3)) * q
           + np.float32(8.3334519073e-3)) * q + np.float32(4.1665795894e-2)) * q
         + np.float32(1.6666665459e-1)) * q + np.float32(5.0000001201e-1)) * (q * q) + q + one
    return p * np.int32((np.int32(m) + np.int32(127)) << np.int32(23)).view(np.float32)


def _exp_into(a, e):
    # e = exp(a) for float32 rows (_exp_scalar's values; a helper as it). One loop: on a Zen 4 EPYC (AVX-512) the
    # exp and its scaling in two loops over the rows (2^m through an int32 scratch row) stored twice as much, and a
    # sigmoid of 1 M float32 took 0.51 ms against 0.44 (0.36 with the sigmoid's own arithmetic in the same loop)
    for j in range(a.shape[0]):
        e[j] = _exp_scalar(a[j])


def _tanh_scalar(v):
    # tanh(v) of a float32 (a helper as _exp_scalar, inlined in its callers' loops: in place too): sign(v) (1 - 2 /
    # (exp(2|v|) + 1)), and for |v| < 0.625, where that cancels, Cephes' tanhf polynomial (as v times one more:
    # tanh(-0) stays -0)
    one = np.float32(1)
    two = np.float32(2)
    t = one - two / (_exp_scalar(two * abs(v)) + one)
    t = t if v >= 0 else -t
    v2 = v * v
    s = v * (((((np.float32(-5.70498872745e-3) * v2 + np.float32(2.06390887954e-2)) * v2
                - np.float32(5.37397155531e-2)) * v2 + np.float32(1.33314422036e-1)) * v2
              - np.float32(3.33332819422e-1)) * v2 + one)
    return s if abs(v) < np.float32(0.625) else t


def lstm_cell(rec, xw, bias, has_bias, c_prev, gates, c_out, tc_out, h_out):
    # FLOAT32 ONLY (exported for float32 alone): one LSTM step forward. rec = h_prev U and xw = x_t W, rows
    # (N, 4u) in gate order i, f, o, g; writes the gate activations into gates (4, N, u), c, tanh(c) and h.
    # exp and tanh are _exp_scalar's and _tanh_scalar's, vectorised (NumPy's float32 exp and tanh run at scalar speed
    # without AVX-512): sigmoid(z) = 1 / (1 + exp(-z)), each gate's in the loop that sums it.
    n, u4 = rec.shape
    u = u4 // 4
    one = np.float32(1)
    for r in range(n):
        for k in range(4):
            rr = rec[r, k * u:(k + 1) * u]
            xr = xw[r, k * u:(k + 1) * u]
            g = gates[k, r]
            if has_bias:   # NumPy's order: (h U + b) + x W
                br = bias[k * u:(k + 1) * u]
                for j in range(u):
                    g[j] = (rr[j] + br[j]) + xr[j]
            else:
                for j in range(u):
                    g[j] = rr[j] + xr[j]
            if k < 3:   # the gates' activations in place, the exp in this loop (_exp_into)
                for j in range(u):
                    g[j] = one / (one + _exp_scalar(-g[j]))
            else:
                for j in range(u):
                    g[j] = _tanh_scalar(g[j])
        gi = gates[0, r]
        gf = gates[1, r]
        gg = gates[3, r]
        cp = c_prev[r]
        co = c_out[r]
        tc = tc_out[r]
        go = gates[2, r]
        h = h_out[r]
        for j in range(u):
            c = gf[j] * cp[j] + gi[j] * gg[j]   # NumPy's order: f c_prev, then + i g
            co[j] = c
            t = _tanh_scalar(c)
            tc[j] = t
            h[j] = go[j] * t


def sigmoid_tanh_rows(x, tanh):
    # FLOAT32 ONLY: x (rows, width) in place: sigmoid(x) = 1 / (1 + exp(-x)), or with ``tanh`` tanh(x), with
    # lstm_cell's exp and tanh (_exp_scalar, _tanh_scalar)
    rows, width = x.shape
    one = np.float32(1)
    for r in range(rows):
        xr = x[r]
        if tanh:
            for j in range(width):
                xr[j] = _tanh_scalar(xr[j])
        else:   # (the exp in this loop: _exp_into)
            for j in range(width):
                xr[j] = one / (one + _exp_scalar(-xr[j]))


def exp_rows(x, shift, y, sums, find_max, scratch):
    # FLOAT32 ONLY: y = exp(x - shift[r]) row by row (y may be x; shift (rows,) or empty for none: a softmax's row
    # maxima subtracted in the same pass) with lstm_cell's exp (_exp_into), which clamps below at -87.34 (2^-126)
    # and overflows from 88.03 (its 2^128 before the polynomial brings it down): a row holding arguments outside
    # [-87.33, 88] (a softmax's far or masked logits) has those redone, 0 below -104 and in float64 between, so
    # that subnormal results, exp(-inf) = 0 and the top of the range are NumPy's. ``find_max``: each row's maximum
    # found here and written into shift first (NaN skipped: it makes a softmax's whole row NaN anyway). Where
    # ``sums`` (rows,) is given (else empty), each row's sum is written there and the row divided by it while in
    # cache (a softmax). The maximum and the sum run as eight interleaved partial results, combined pairwise, which
    # vectorise without reassociation (the own exp's kernels are compiled "fused", no more: FASTMATH's
    # reassociation in the caller would reach the helper, numba compiling it once for all its callers). scratch:
    # a row (1, n) of at least ``width`` values; rows go through the exp a group at a time, as many as the scratch
    # holds (a call a row: (8192, 64) took 1.0 ms, 0.45 of it the calls)
    rows, width = x.shape
    lo = np.float32(-87.33654)
    hi = np.float32(88.0)
    a = scratch[0]
    zero = np.float32(0)
    w8 = width - width % 8
    yf = y.reshape(rows * width)
    group = max(1, a.shape[0] // max(width, 1))
    for r0 in range(0, rows, group):
        r1 = min(rows, r0 + group)
        outside = 0
        for r in range(r0, r1):
            xr = x[r]
            if find_max:
                m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = np.float32(-np.inf)
                for j in range(0, w8, 8):
                    m0 = xr[j] if xr[j] > m0 else m0
                    m1 = xr[j + 1] if xr[j + 1] > m1 else m1
                    m2 = xr[j + 2] if xr[j + 2] > m2 else m2
                    m3 = xr[j + 3] if xr[j + 3] > m3 else m3
                    m4 = xr[j + 4] if xr[j + 4] > m4 else m4
                    m5 = xr[j + 5] if xr[j + 5] > m5 else m5
                    m6 = xr[j + 6] if xr[j + 6] > m6 else m6
                    m7 = xr[j + 7] if xr[j + 7] > m7 else m7
                m0 = max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))
                for j in range(w8, width):
                    m0 = xr[j] if xr[j] > m0 else m0
                shift[r] = m0
            m = shift[r] if shift.shape[0] > 0 else zero   # (x - 0 is x, -0 and NaN included)
            ar = a[(r - r0) * width:(r - r0 + 1) * width]
            for j in range(width):
                v = xr[j] - m
                ar[j] = v
                outside |= (v < lo) | (v > hi)
        start = r0 * width
        n = (r1 - r0) * width
        _exp_into(a[:n], yf[start:start + n])
        if outside:
            for k in range(n):
                v = a[k]
                if v < np.float32(-104.0):   # below float32's smallest subnormal's log: 0 (masked logits)
                    yf[start + k] = np.float32(0)
                elif v < lo or v > hi:
                    yf[start + k] = np.float32(np.exp(np.float64(v)))
        if sums.shape[0] > 0:
            for r in range(r0, r1):
                yr = y[r]
                s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = zero
                for j in range(0, w8, 8):
                    s0 += yr[j]
                    s1 += yr[j + 1]
                    s2 += yr[j + 2]
                    s3 += yr[j + 3]
                    s4 += yr[j + 4]
                    s5 += yr[j + 5]
                    s6 += yr[j + 6]
                    s7 += yr[j + 7]
                s0 = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
                for j in range(w8, width):
                    s0 += yr[j]
                sums[r] = s0
                for j in range(width):
                    yr[j] /= s0


def softmax_rows_grad(y, gy, log, gx):
    # a softmax's backward over rows, gx = gy y - y sum(gy y), or with ``log`` a log-softmax's given its softmax y,
    # gx = gy - y sum(gy) (gx may be gy or y): the row's sum and its use in one visit of the row (NumPy's code: a
    # product or not, a GEMV for the sums, a product and a subtraction over memory)
    rows, width = y.shape
    for r in range(rows):
        yr = y[r]
        gr = gy[r]
        xr = gx[r]
        s = yr.dtype.type(0)
        if log:
            for j in range(width):
                s += gr[j]
            for j in range(width):
                xr[j] = gr[j] - yr[j] * s
        else:
            for j in range(width):
                s += gr[j] * yr[j]
            for j in range(width):
                xr[j] = gr[j] * yr[j] - yr[j] * s


def silu_rows(x, y, s):
    # FLOAT32 ONLY: s = sigmoid(x) (sigmoid_tanh_rows' values) and y = x s, rows of x (rows, width) read once
    rows, width = x.shape
    one = np.float32(1)
    for r in range(rows):
        xr = x[r]
        sr = s[r]
        yr = y[r]
        for j in range(width):   # (the exp in this loop: _exp_into)
            v = one / (one + _exp_scalar(-xr[j]))
            sr[j] = v
            yr[j] = xr[j] * v


def gelu_rows(x, y, cdf):
    # FLOAT32 ONLY: exact GELU, cdf = (1 + erf(x / sqrt 2)) / 2 and y = x cdf, rows of x read once: erf by
    # Abramowitz & Stegun 7.1.26 in the operations and order of activations._erf_into, with _exp_scalar's exp of
    # -(x / sqrt 2)^2 (clamped at 2^-126 where NumPy's underflows: 1 - t P(t) e is 1 either way)
    rows, width = x.shape
    one = np.float32(1)
    half = np.float32(0.5)
    root2 = np.float32(1.4142135623730951)
    for r in range(rows):
        xr = x[r]
        cr = cdf[r]
        yr = y[r]
        for j in range(width):   # (the exp in this loop: _exp_into)
            v = xr[j] / root2
            t = one / (abs(v) * np.float32(0.3275911) + one)
            p = t * np.float32(1.061405429)
            p = (p + np.float32(-1.453152027)) * t
            p = (p + np.float32(1.421413741)) * t
            p = (p + np.float32(-0.284496736)) * t
            p = (p + np.float32(0.254829592)) * t
            p = (one - p * _exp_scalar(-v * v)) * np.sign(v)
            c = (p + one) * half
            cr[j] = c
            yr[j] = xr[j] * c


def gelu_grad_rows(x, cdf, gy, gx):
    # FLOAT32 ONLY: exact GELU's gradient gy (cdf + x pdf), pdf = exp(-x^2 / 2) / sqrt(2 pi), in the NumPy chain's
    # operations and order, with _exp_scalar's exp; where it clamps (|x| > 13.2) the exp is redone in float64, so
    # that x pdf is NumPy's there (inf * 0 = NaN at x = +-inf); gx is another array than x, cdf and gy (the tail
    # reads them again)
    rows, width = x.shape
    root2pi = np.float32(2.5066282746310002)
    lo = np.float32(-87.33654)
    for r in range(rows):
        xr = x[r]
        cr = cdf[r]
        gr = gy[r]
        dr = gx[r]
        outside = 0
        for j in range(width):   # (the exp in this loop: _exp_into)
            v = xr[j] * np.float32(-0.5) * xr[j]
            outside |= v < lo
            dr[j] = gr[j] * (_exp_scalar(v) / root2pi * xr[j] + cr[j])
        if outside:
            for j in range(width):
                v = xr[j] * np.float32(-0.5) * xr[j]
                if v < lo:
                    dr[j] = gr[j] * (np.float32(np.exp(np.float64(v))) / root2pi * xr[j] + cr[j])


def silu_grad_rows(x, s, gy, gx):
    # SiLU's gradient gy (s + x s (1 - s)) in one pass, in the NumPy chain's operations and order:
    # x s, times 1 - s, plus s, times gy
    rows, width = x.shape
    one = x.dtype.type(1)
    for r in range(rows):
        xr = x[r]
        sr = s[r]
        gr = gy[r]
        dr = gx[r]
        for j in range(width):
            v = xr[j] * sr[j]
            v = v * (one - sr[j])
            v = v + sr[j]
            dr[j] = v * gr[j]


def leaky_relu_rows(x, alpha, y):
    # y = x where x > 0, else x alpha: the bits of select(x > 0, x, x alpha) for any alpha (NaN stays NaN; x = 0
    # with a non-finite alpha gives NaN there, as the select)
    rows, width = x.shape
    zero = x.dtype.type(0)
    for r in range(rows):
        xr = x[r]
        yr = y[r]
        for j in range(width):
            v = xr[j]
            yr[j] = v if v > zero else v * alpha


def leaky_relu_grad_rows(x, gy, alpha, gx):
    # gx = gy where x > 0, else gy alpha: the bits of select(x > 0, gy, gy alpha)
    rows, width = x.shape
    zero = x.dtype.type(0)
    for r in range(rows):
        xr = x[r]
        gr = gy[r]
        dr = gx[r]
        for j in range(width):
            g = gr[j]
            dr[j] = g if xr[j] > zero else g * alpha


def prelu_rows(x, a, y, lo, hi):
    # y = x where x > 0, else x a[j] (a: one slope per column of x), for the columns lo:hi of every row: the bits of
    # select(x > 0, x, x a). (The loops index slices from 0: an index from lo could be negative to numba, and its
    # wraparound select per element kept the loop from vectorising, 20x slower.)
    zero = x.dtype.type(0)
    ar = a[lo:hi]
    for r in range(x.shape[0]):
        xr = x[r, lo:hi]
        yr = y[r, lo:hi]
        for j in range(hi - lo):
            v = xr[j]
            yr[j] = v if v > zero else v * ar[j]


def prelu_grad_rows(x, gy, a, gx, ga, lo, hi, want_gx, want_ga):
    # PReLU's gradients over the columns lo:hi: gx = gy where x > 0, else gy a[j] (the bits of the select), and
    # ga[j] += gy x where x > 0 is false, row after row (ga zeroed by the caller: each column's sum in row order, the
    # same on any number of threads, each of which takes its own columns)
    zero = x.dtype.type(0)
    n = hi - lo
    ar = a[lo:hi]
    gar = ga[lo:hi]
    for r in range(x.shape[0]):
        xr = x[r, lo:hi]
        gr = gy[r, lo:hi]
        if want_gx and want_ga:
            dr = gx[r, lo:hi]
            for j in range(n):
                v = xr[j]
                g = gr[j]
                pos = v > zero
                dr[j] = g if pos else g * ar[j]
                gar[j] += zero if pos else g * v
        elif want_gx:
            dr = gx[r, lo:hi]
            for j in range(n):
                g = gr[j]
                dr[j] = g if xr[j] > zero else g * ar[j]
        elif want_ga:
            for j in range(n):
                v = xr[j]
                gar[j] += zero if v > zero else gr[j] * v


def extreme_grad_rows(x, y, gy, gx, share):
    # The gradient of y[i, j] = the maximum (or minimum) of x[i, k, j] over k, for x (B, R, A): gy[i, j] shared
    # equally by the k where x[i, k, j] == y[i, j], as ops.math.MaxMin's NumPy code (mask in the float dtype, its
    # count, share = gy / count, gx = mask share: the same bits, NaN where a NaN's count of 0 makes the share
    # infinite). share: scratch of A values. The counts take four rows at a time (whole numbers: exact in any order;
    # a count a row was a store a value: (64, 1024, 32) float32 on one thread 0.63 -> 0.53 ms, the same bits)
    one = x.dtype.type(1)
    zero = x.dtype.type(0)
    r = x.shape[1]
    r4 = r - r % 4
    for i in range(x.shape[0]):
        yi = y[i]
        for j in range(x.shape[2]):
            share[j] = zero
        for k in range(0, r4, 4):
            x0, x1, x2, x3 = x[i, k], x[i, k + 1], x[i, k + 2], x[i, k + 3]
            for j in range(x.shape[2]):
                v = yi[j]
                share[j] += (((one if x0[j] == v else zero) + (one if x1[j] == v else zero))
                             + ((one if x2[j] == v else zero) + (one if x3[j] == v else zero)))
        for k in range(r4, r):
            xk = x[i, k]
            for j in range(x.shape[2]):
                share[j] += one if xk[j] == yi[j] else zero
        gi = gy[i]
        for j in range(x.shape[2]):
            share[j] = gi[j] / share[j]
        for k in range(x.shape[1]):
            xk = x[i, k]
            dk = gx[i, k]
            for j in range(x.shape[2]):
                dk[j] = (one if xk[j] == yi[j] else zero) * share[j]


def diff_loss_rows(t, p, kind, delta, out):
    # out[r] = the sum over j of f(d), d = p[r, j] - t[r, j]: kind 0 d^2 (mean squared error), 1 |d| (mean absolute
    # error), 2 Huber's q (|d| - q / 2) with q = min(|d|, delta) (ops.losses.Huber's one formula); NaN stays NaN
    zero = p.dtype.type(0)
    half = p.dtype.type(0.5)
    for r in range(p.shape[0]):
        tr, pr = t[r], p[r]
        s = zero
        if kind == 0:
            for j in range(p.shape[1]):
                d = pr[j] - tr[j]
                s += d * d
        elif kind == 1:
            for j in range(p.shape[1]):
                s += abs(pr[j] - tr[j])
        else:
            for j in range(p.shape[1]):
                a = abs(pr[j] - tr[j])
                q = delta if a >= delta else a   # (NaN: a, as NumPy's clip keeps it)
                s += q * (a - half * q)
        out[r] = s


def diff_loss_grad_rows(t, p, kind, delta, s, gp):
    # gp[r, j] = f'(d) s[r] (s of one value: that value for every row), d = p[r, j] - t[r, j]: kind 0 d (2 s) (the
    # caller's s already doubled: d s), 1 sign(d) s, 2 clip(d, -delta, delta) s: ops.losses' NumPy products' bits
    # (sign(NaN) and the clip of NaN NaN)
    zero = p.dtype.type(0)
    one = p.dtype.type(1)
    scalar = s.shape[0] == 1
    for r in range(p.shape[0]):
        tr, pr, gr = t[r], p[r], gp[r]
        f = s[0] if scalar else s[r]
        if kind == 0:
            for j in range(p.shape[1]):
                gr[j] = (pr[j] - tr[j]) * f
        elif kind == 1:
            for j in range(p.shape[1]):
                d = pr[j] - tr[j]
                gr[j] = (one if d > zero else (-one if d < zero else (zero if d == zero else d))) * f   # (NaN kept)
        else:
            for j in range(p.shape[1]):
                d = pr[j] - tr[j]
                gr[j] = (delta if d > delta else (-delta if d < -delta else d)) * f


def _sigmoid_row(x, out):
    # out = sigmoid(x) = 1 / (1 + exp(-x)) for a float32 row (a helper as _exp_scalar: sigmoid_tanh_rows' values),
    # in one loop with the exp, but where exp(-x) overflows or is clamped (x < -88.03: sigmoid subnormal or 0) redone
    # in float64 from -87, so that the tail is NumPy's stable formula's (subnormal values and exact zeros), not 0 or
    # the clamp's 2.9e-39; out is another array than x (the tail reads x again)
    one = np.float32(1)
    hi = np.float32(87.0)
    outside = False
    for j in range(x.shape[0]):
        v = -x[j]
        outside |= v > hi
        out[j] = one / (one + _exp_scalar(v))
    if outside:
        for j in range(x.shape[0]):
            v = -x[j]
            if v > hi:
                out[j] = np.float32(1.0 / (1.0 + np.exp(np.float64(v))))


def sigmoid_rows(x, gy, use_gy, y):
    # FLOAT32 ONLY: y = sigmoid(x) (_sigmoid_row), or with ``use_gy`` sigmoid(x) gy (softplus' gradient), rows of x
    # read once
    rows, width = x.shape
    for r in range(rows):
        yr = y[r]
        _sigmoid_row(x[r], yr)
        if use_gy:
            gr = gy[r]
            for j in range(width):
                yr[j] = yr[j] * gr[j]


def sigmoid_grad_rows(y, gy, gx):
    # the sigmoid's gradient from its output, in the NumPy chain's operations and order: gy y, times 1 - y
    rows, width = y.shape
    one = y.dtype.type(1)
    for r in range(rows):
        yr = y[r]
        gr = gy[r]
        dr = gx[r]
        for j in range(width):
            dr[j] = (gr[j] * yr[j]) * (one - yr[j])


def elu_rows(x, alpha, scale, y, neg, keep, scratch):
    # FLOAT32 ONLY: ELU (scale 1) and SELU: neg = alpha expm1(min(x, 0)) and y = (neg + max(x, -0.0)) scale, the
    # NumPy chain's operations (activations.ELU) but for expm1: on [-0.5, 0] its Taylor polynomial to x^8 (a
    # truncation under 0.3 ulp), below that _exp_scalar's exp minus 1 (no cancellation there: exp <= 0.61). NaN
    # stays NaN (min and max keep it), ELU(-0.0) is +0.0 as there. ``keep``: neg written (SELU's backward reads it);
    # scratch: a row of at least ``width`` values
    rows, width = x.shape
    zero = np.float32(0)
    one = np.float32(1)
    arg = scratch[0]
    for r in range(rows):
        xr = x[r]
        yr = y[r]
        nr = neg[r]
        for j in range(width):   # (the exp in this loop: _exp_into)
            v = xr[j]
            m = v if (v < zero or v != v) else zero   # NumPy's minimum(x, 0): NaN kept, min(-0.0, 0) is +0
            p = np.float32(1.9841270e-4) + m * np.float32(2.4801587e-5)
            p = np.float32(4.1666668e-2) + m * (np.float32(8.3333338e-3) + m * (np.float32(1.3888889e-3) + m * p))
            p = m * (one + m * (np.float32(0.5) + m * (np.float32(1.6666667e-1) + m * p)))
            arg[j] = (p if m > np.float32(-0.5) else _exp_scalar(m) - one) * alpha
        if keep:   # (a loop of its own: a conditional store in the loop above kept it from SIMD, 3x slower)
            for j in range(width):
                nr[j] = arg[j]
        for j in range(width):
            v = xr[j]
            yr[j] = (arg[j] + (v if not (v < zero) else np.float32(-0.0))) * scale


def elu_grad_rows(sel, neg, gy, alpha, scale, gx):
    # ELU's and SELU's gradient: gy scale where sel > 0, else gy (neg + alpha) scale, the NumPy chains' operations
    # (sel = neg = y for ELU, whose scale 1 changes no bit; sel = x and its neg for SELU)
    rows, width = sel.shape
    zero = sel.dtype.type(0)
    for r in range(rows):
        sr = sel[r]
        nr = neg[r]
        gr = gy[r]
        dr = gx[r]
        for j in range(width):
            g = gr[j]
            dr[j] = (g if sr[j] > zero else g * (nr[j] + alpha)) * scale


def softplus_rows(x, y):
    # FLOAT32 ONLY: softplus max(x, 0) + log1p(exp(-|x|)), the NumPy chain's formula, with _exp_into's exp and
    # log1p(t) = log(u) + (t - (u - 1)) / u, u = 1 + t (the rounding of u corrected to first order), log(u) for u in
    # [1, 2] by Cephes' logf polynomial. Where exp(-|x|) passes _exp_scalar's lower clamp (|x| > 87.3, a subnormal
    # or zero t) the row's values there are redone in float64 (NumPy's: exp(-inf) = 0). NaN stays NaN. y is another
    # array than x (the redo reads x again)
    rows, width = x.shape
    zero = np.float32(0)
    one = np.float32(1)
    half = np.float32(0.5)
    lo = np.float32(-87.33654)
    for r in range(rows):
        xr = x[r]
        yr = y[r]
        outside = False
        for j in range(width):   # (the exp in this loop: _exp_into)
            a = -abs(xr[j])
            outside |= a < lo
            t = _exp_scalar(a)
            u = one + t
            big = u > np.float32(1.41421356)
            k = one if big else zero
            w = u * half if big else u
            z = w - one
            z2 = z * z
            lg = ((((((((np.float32(7.0376836292e-2) * z - np.float32(1.1514610310e-1)) * z
                        + np.float32(1.1676998740e-1)) * z - np.float32(1.2420140846e-1)) * z
                      + np.float32(1.4249322787e-1)) * z - np.float32(1.6668057665e-1)) * z
                    + np.float32(2.0000714765e-1)) * z - np.float32(2.4999993993e-1)) * z
                  + np.float32(3.3333331174e-1)) * z * z2
            lg = lg + k * np.float32(-2.12194440e-4)
            lg = lg - half * z2
            lg = z + lg
            lg = lg + k * np.float32(0.693359375)
            lg = lg + (t - (u - one)) / u
            v = xr[j]
            yr[j] = (v if not (v < zero) else zero) + lg
        if outside:
            for j in range(width):
                a = -abs(xr[j])
                if a < lo:
                    v = xr[j]
                    yr[j] = np.float32((v if not (v < zero) else zero) + np.log1p(np.exp(np.float64(a))))


# The two backward steps below run each row as a few loops over row views, each reading and writing few arrays:
# one loop over all of them (the LSTM's reads seven rows and writes five) ran without SIMD, as LLVM gives up on
# proving that many pairs of arrays apart. Each value's arithmetic is one expression as before (the same bits).
def lstm_cell_grad(dh, dc, gates, tc, c_prev, dz, dc_prev):
    # one LSTM step backward (sigmoid gates i, f, o; tanh candidate g and cell output; a mask is the
    # caller's: it passes the step's share of dh and dc):
    # d(act c) = dc + dh o (1 - tc^2); the pre-activation gradients of i, f, o, g into dz (N, 4u, gate
    # blocks of u columns) and the gradient into the previous cell state into dc_prev
    n, u = dh.shape
    one = dh.dtype.type(1)
    d = np.empty(u, dh.dtype)
    for r in range(n):
        ir, fr, orow, gr = gates[0, r], gates[1, r], gates[2, r], gates[3, r]
        tr, dhr, dcr, cpr, zr = tc[r], dh[r], dc[r], c_prev[r], dz[r]
        for j in range(u):
            t = tr[j]
            d[j] = (one - t * t) * orow[j] * dhr[j] + dcr[j]
        for j in range(u):
            i = ir[j]
            zr[j] = d[j] * gr[j] * ((one - i) * i)
        for j in range(u):
            f = fr[j]
            zr[u + j] = d[j] * cpr[j] * ((one - f) * f)
        for j in range(u):
            o = orow[j]
            zr[2 * u + j] = dhr[j] * tr[j] * ((one - o) * o)
        for j in range(u):
            g = gr[j]
            zr[3 * u + j] = d[j] * ir[j] * (one - g * g)
        pr = dc_prev[r]
        for j in range(u):
            pr[j] = d[j] * fr[j]


def gru_cell_grad(dh, zr, hh, h_prev, rh, dx, dr, dprev):
    # one GRU step backward (reset_after, sigmoid z and r, tanh candidate; a mask is the caller's: it
    # passes the step's share of dh): the pre-activation
    # gradients of z, r and the candidate into dx (N, 3u), those of h U + b' into dr, and dh z into dprev
    n, u = dh.shape
    one = dh.dtype.type(1)
    da = np.empty(u, dh.dtype)
    for i in range(n):
        zrow, rrow, cr, dhr, hpr, rhr = zr[0, i], zr[1, i], hh[i], dh[i], h_prev[i], rh[i]
        xr, rr, pr = dx[i], dr[i], dprev[i]
        for j in range(u):
            c = cr[j]
            da[j] = (one - zrow[j]) * dhr[j] * (one - c * c)
        for j in range(u):
            z = zrow[j]
            v = (hpr[j] - cr[j]) * dhr[j] * ((one - z) * z)
            xr[j] = v
            rr[j] = v
        for j in range(u):
            r = rrow[j]
            v = da[j] * rhr[j] * ((one - r) * r)
            xr[u + j] = v
            rr[u + j] = v
        for j in range(u):
            xr[2 * u + j] = da[j]
            rr[2 * u + j] = da[j] * rrow[j]
        for j in range(u):
            pr[j] = dhr[j] * zrow[j]


# Adam's update is element-wise with no reduction: compiled without fastmath, so the float operations
# are those of the NumPy code (optimizers/adam.py, _adam_block), in its order and rounding: no fused
# multiply-add, the scalars already in the arrays' dtype. The same weights to the bit either way.
def adam_update(w, g, m, v, c1, c2, eps, alpha):
    for i in range(w.size):
        gi = g[i]
        mi = m[i] + (gi - m[i]) * c1
        vi = v[i] + (gi * gi - v[i]) * c2
        m[i] = mi
        v[i] = vi
        w[i] -= mi / (np.sqrt(vi) + eps) * alpha


def sgd_momentum_update(w, g, m, lr, mu, nesterov):
    # SGD with momentum in place, one pass, the NumPy code's operations (optimizers.SGD): step = lr g,
    # m = m mu - step, w += m; nesterov: w = (w - step) + mu m
    for i in range(w.size):
        s = lr * g[i]
        mi = m[i] * mu - s
        m[i] = mi
        if nesterov:
            w[i] = (w[i] - s) + mu * mi
        else:
            w[i] += mi


def rmsprop_update(w, g, v, mom, rho, keep, eps, lr, mu, use_mom):
    # RMSprop (not centred) in place, one pass, the NumPy code's operations (optimizers.RMSprop): v = v rho +
    # g^2 (1 - rho) (``keep``), t = g / sqrt(v + eps) lr; with momentum mom = mom mu + t, w -= mom; else w -= t
    for i in range(w.size):
        gi = g[i]
        vi = v[i] * rho + (gi * gi) * keep
        v[i] = vi
        t = gi / np.sqrt(vi + eps) * lr
        if use_mom:
            mi = mom[i] * mu + t
            mom[i] = mi
            w[i] -= mi
        else:
            w[i] -= t


def adagrad_update(w, g, acc, eps, lr):
    # Adagrad in place, one pass, the NumPy code's operations (optimizers.Adagrad): acc += g^2,
    # w -= g / sqrt(acc + eps) lr
    for i in range(w.size):
        gi = g[i]
        a = acc[i] + gi * gi
        acc[i] = a
        w[i] -= gi / np.sqrt(a + eps) * lr


def nadam_update(w, g, m, v, c1, c2, vs, eps, a, b, lr):
    # Nadam in place, one pass, the NumPy code's operations (optimizers.Nadam): Adam's moments (as adam_update),
    # d = sqrt(v vs) + eps, w -= (m a + b g) / d lr
    for i in range(w.size):
        gi = g[i]
        mi = m[i] + (gi - m[i]) * c1
        vi = v[i] + (gi * gi - v[i]) * c2
        m[i] = mi
        v[i] = vi
        w[i] -= (mi * a + b * gi) / (np.sqrt(vi * vs) + eps) * lr


def lion_update(w, g, m, b1, c1, b2, c2, lr):
    # Lion in place, one pass, the NumPy code's operations (optimizers.Lion): u = m b1 + g (1 - b1) (``c1``),
    # w -= lr sign(u) (NumPy's sign: NaN stays NaN, zeros +0), m = m b2 + g (1 - b2) (``c2``)
    one = w.dtype.type(1)
    zero = w.dtype.type(0)
    for i in range(w.size):
        gi = g[i]
        u = m[i] * b1 + gi * c1
        s = one if u > zero else (-one if u < zero else (zero if u == zero else u))
        w[i] -= lr * s
        m[i] = m[i] * b2 + gi * c2


# col2im as a gather: each padded input position sums, in kernel-offset order, the column entries that
# reached it (the NumPy code adds one strided window per offset to a zero array: the same additions in
# the same order for every position), and is written once. No fastmath (the order). The columns come from
# one wider product than the NumPy code's per-offset ones, which BLAS may round differently in the last bit.
def col2im_gather(cols, out, sh, sw, dh, dw, pt, pl):
    # cols (S, OH, OW, KH, KW, C) -> out (S, H, W, C): the window of the padded canvas from (pt, pl) (a convolution's
    # unpadded input gradient, or a transposed convolution's output window), each position the sum over the offsets
    # that reach it
    samples, oh, ow, kh, kw, c = cols.shape
    hp, wp = out.shape[1], out.shape[2]
    zero = out.dtype.type(0)
    for s in range(samples):
        for py in range(hp):
            cy = py + pt
            for px in range(wp):
                cx = px + pl
                o = out[s, py, px]
                for q in range(c):
                    o[q] = zero
                if sh == 1 and dh == 1:   # the offsets that reach this row: a range, no test per offset
                    i_lo, i_hi = max(0, cy - oh + 1), min(kh, cy + 1)
                else:
                    i_lo, i_hi = 0, kh
                if sw == 1 and dw == 1:
                    j_lo, j_hi = max(0, cx - ow + 1), min(kw, cx + 1)
                else:
                    j_lo, j_hi = 0, kw
                for i in range(i_lo, i_hi):
                    y = cy - i * dh
                    if y < 0 or y % sh != 0 or y // sh >= oh:
                        continue
                    y //= sh
                    for j in range(j_lo, j_hi):
                        x = cx - j * dw
                        if x < 0 or x % sw != 0 or x // sw >= ow:
                            continue
                        src = cols[s, y, x // sw, i, j]
                        for q in range(c):
                            o[q] += src[q]


# Max pooling compares and selects only: no fastmath at all, so that the compiled code keeps the NumPy
# code's every rule (NaN, the sign of a zero, the order of the overlapping windows' additions).


def _window(o, s, p, k, n):
    # output o's window along one axis of a pooling: (its first input position o s - p, and the window offsets
    # [k0, k1) that fall inside the input's n positions) (a helper, kernels_aot.HELPERS)
    i0 = o * s - p
    return i0, max(0, -i0), min(k, n - i0)


def _max_pool_plain(x, ph, pw, sh, sw, pt, pl, y):
    # max_pool_rows without the note (a helper: kernels_aot.HELPERS), the same chain of maxima. The running maximum
    # moves between two scratch rows, one offset to the next (read one, write the other): updated in place, "keep
    # the old value or take the new" compiles to masked stores, slow on AMD's cores ((16, 56, 56, 64) 3x3 stride
    # 2: 2.4 -> 0.75 ms on Zen 2). (With the note, max_pool_rows' in-place chain measured the faster: 0.56 against
    # 0.89 ms at (64, 32, 32, 32) 2x2.)
    n, h, w, c = x.shape
    oh, ow = y.shape[1], y.shape[2]
    acc = np.empty(c, x.dtype)
    nxt = np.empty(c, x.dtype)
    low = x.dtype.type(-np.inf)
    for s in range(n):
        for oi in range(oh):
            i0, ki0, ki1 = _window(oi, sh, pt, ph, h)
            for oj in range(ow):
                j0, kj0, kj1 = _window(oj, sw, pl, pw, w)
                first = ki0 * pw + kj0
                if first == 0:
                    xr = x[s, i0, j0]
                    for ch in range(c):
                        acc[ch] = xr[ch]
                else:
                    first = -1
                    for ch in range(c):
                        acc[ch] = low
                for ki in range(ki0, ki1):
                    for kj in range(kj0, kj1):
                        if ki * pw + kj == first:
                            continue
                        xr = x[s, i0 + ki, j0 + kj]
                        for ch in range(c):
                            v = xr[ch]
                            m = acc[ch]
                            nxt[ch] = m if (m > v or m != m) else v
                        acc, nxt = nxt, acc
                ym = y[s, oi, oj]
                for ch in range(c):
                    ym[ch] = acc[ch]


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
    if not note:
        _max_pool_plain(x, ph, pw, sh, sw, pt, pl, y)
        return
    n, h, w, c = x.shape
    oh, ow = y.shape[1], y.shape[2]
    nb = np.empty(c, np.int32)   # the note of one output (int32: as wide as float32's lanes)
    low = x.dtype.type(-np.inf)
    for s in range(n):
        for oi in range(oh):
            i0, ki0, ki1 = _window(oi, sh, pt, ph, h)
            for oj in range(ow):
                j0, kj0, kj1 = _window(oj, sw, pl, pw, w)
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


def max_pool_rows_grad(gy, which, ph, pw, sh, sw, pt, pl, dx, fill, overlap):
    # dx (N, H, W, C): each window's offset k gets gy * (note == k) (so NaN and inf in gy spread over
    # the window as NaN * 0, and -0.0 stays -0.0, as the NumPy code's multiply); disjoint windows assign,
    # overlapping ones add, each position's terms in the NumPy code's order (offset by offset: k rises as
    # the output falls, so the outputs are walked backwards). fill: zero each sample first (positions no
    # window covers, and the sums' start). Disjoint windows (one term a position: any order) write dx row by
    # row, forwards: walked window by window, backwards, dx's rows were written two at a time in falling
    # addresses, and with gy and dx out of cache (inside a training step) a (64, 30, 30, 32) 2x2 gradient took
    # 1.12 ms against 0.36 so (0.43 against 0.32 in cache), on one Zen 4 thread
    n, h, w, c = dx.shape
    oh, ow = gy.shape[1], gy.shape[2]
    zero, one = dx.dtype.type(0), dx.dtype.type(1)
    for s in range(n):
        if fill:
            for i in range(h):
                for j in range(w):
                    for ch in range(c):
                        dx[s, i, j, ch] = zero
        if not overlap:
            for oi in range(oh):
                i0 = oi * sh - pt
                ki0, ki1 = max(0, -i0), min(ph, h - i0)
                for ki in range(ki0, ki1):
                    dr = dx[s, i0 + ki]
                    for oj in range(ow):
                        j0 = oj * sw - pl
                        kj0, kj1 = max(0, -j0), min(pw, w - j0)
                        g = gy[s, oi, oj]
                        wh = which[s, oi, oj]
                        for kj in range(kj0, kj1):
                            k = which.dtype.type(ki * pw + kj)
                            d = dr[j0 + kj]
                            for ch in range(c):
                                d[ch] = g[ch] * (one if wh[ch] == k else zero)
            continue
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
                        for ch in range(c):
                            dx[s, i, j, ch] += gy[s, oi, oj, ch] * (one if which[s, oi, oj, ch] == k else zero)


# Softmax down the columns of (B, K, Q) blocks (attention's transposed scores: over the keys K for each query
# q), the two reductions of NumPy's code without its strided reduction passes: per block the column maxima,
# subtracted in the same pass over the block (in cache), then (after NumPy's SIMD exp) the column sums and
# the division. The same operations in NumPy's order (each column's sum runs down k, as NumPy's reduction
# over a non-contiguous axis adds row after row), so the same values, NaN and infinities included. No
# fastmath: the loops over q vectorise as they are. ``f``: a positive factor the differences are multiplied by
# after the subtraction (attention's scale, folded in: softmax(f s) = exp(f (s - max s)) / sum), 1 for none.
def column_max_subtract(s, f):
    # The loops take rows of s as views: indexed s[b, i, q], the loops over q did not vectorise (the max, 6x
    # slower at (128, 64, 64)). The running maxima move between two rows, one row of s to the next: updated in
    # place, "keep the maximum or take the value" compiles to masked stores, slow on AMD's cores
    blocks, rows, cols = s.shape
    m = np.empty(cols, s.dtype)
    m2 = np.empty(cols, s.dtype)
    for b in range(blocks):
        sb = s[b]
        for q in range(cols):
            m[q] = sb[0, q]
        for i in range(1, rows):
            sr = sb[i]
            for q in range(cols):
                v = sr[q]
                w = m[q]
                m2[q] = v if v > w else w   # (a NaN in the column makes its sum, so all its weights, NaN either way)
            m, m2 = m2, m
        for i in range(rows):
            sr = sb[i]
            for q in range(cols):
                sr[q] = (sr[q] - m[q]) * f


def column_sum_divide(s):
    blocks, rows, cols = s.shape
    a = np.empty(cols, s.dtype)
    zero = s.dtype.type(0)
    for b in range(blocks):
        sb = s[b]
        for q in range(cols):
            a[q] = zero
        for i in range(rows):
            sr = sb[i]
            for q in range(cols):
                a[q] += sr[q]
        for i in range(rows):
            sr = sb[i]
            for q in range(cols):
                sr[q] /= a[q]


def column_softmax_grad(d, rowsum, w, f):
    # d = (d - rowsum) * w * f in one pass (rowsum: one value per column of each block; f: the folded scale, or
    # 1), NumPy's three operations
    blocks, rows, cols = d.shape
    for b in range(blocks):
        rs = rowsum[b, 0]
        for i in range(rows):
            dr = d[b, i]
            wr = w[b, i]
            for q in range(cols):
                dr[q] = (dr[q] - rs[q]) * wr[q] * f


# The embedding table's gradient: each row of gy added to its id's row in position order (an id's first
# row assigned, so the table is written once: rows nobody looked up are zeroed here), instead of sorting
# the ids and gathering gy through the order. The NumPy code (ops/embedding.py) adds an id's first three
# rows in the same order, so the tables are the same bits unless an id comes four or more times (NumPy's
# add.reduceat sums the rest in an order of its own: a difference in rounding only).
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
