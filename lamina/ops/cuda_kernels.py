"""Fused CUDA kernels for the 'cuda' device: the GPU's counterpart of kernels.py.

On a GPU the small element-wise passes of a training step cost their launches, not their arithmetic: CuPy
spends ~10-20 us of host time on each kernel it starts, and a step of an LSTM made some thirty of them per
time step (the first H200 run, bench/README.md: 30 ms for the forward loop of the benchmark's 80 steps). The
kernels here do such a chain in one launch: an LSTM step's gate arithmetic forward and backward, and Adam's
update of one weight. Each function takes the same arguments as its kernels.py namesake and returns None /
False where it does not run (NumPy arrays, CuPy's stand-in in the tests, another dtype, or
``LAMINA_CUDA_KERNELS=0`` in the environment): the caller's generic array code runs then, on either device.

The sources are compiled by CuPy (NVRTC) the first time a kernel is asked for, and cached on disk by CuPy.
The arithmetic is the generic code's, in the same order (sigmoid(z) = 1 / (1 + exp(-z)), tanh, Keras's Adam);
the values differ from NumPy's by the rounding of the device's exp and tanh (tests/test_device.py compares
every one of them with the CPU on a real GPU).
"""
import os
import sys

import numpy as np

from .. import backend
from . import kernels as _cpu_kernels

SOURCE = r"""
template <typename T> __device__ __forceinline__ T sigmoid_(T z) { return T(1) / (T(1) + exp(-z)); }

// Adam (Keras's formula, as optimizers/adam.py):
// m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); w -= alpha m / (sqrt(v) + eps)
template <typename T>
__device__ void adam_(T* w, const T* g, T* m, T* v, T omb1, T omb2, T eps, T alpha, long long n) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        T gi = g[i];
        T mi = m[i] + (gi - m[i]) * omb1;
        T vi = v[i] + (gi * gi - v[i]) * omb2;
        m[i] = mi;
        v[i] = vi;
        w[i] = w[i] - alpha * mi / (sqrt(vi) + eps);
    }
}

extern "C" __global__ void adam_update_f32(float* w, const float* g, float* m, float* v, float omb1, float omb2,
                                           float eps, float alpha, long long n) {
    adam_(w, g, m, v, omb1, omb2, eps, alpha, n);
}

extern "C" __global__ void adam_update_f64(double* w, const double* g, double* m, double* v, double omb1,
                                           double omb2, double eps, double alpha, long long n) {
    adam_(w, g, m, v, omb1, omb2, eps, alpha, n);
}

// One LSTM step forward (ops/recurrent.py's LSTMSeq, gate order i, f, o, g): rec = h_prev U and xw = x_t W
// are (n, 4u) rows, bias (4u); gates (4, n, u) receives the activations, c_out, tc_out = tanh(c), h_out (n, u).
extern "C" __global__ void lstm_cell_f32(const float* rec, const float* xw, const float* bias, int has_bias,
                                         const float* c_prev, float* gates, float* c_out, float* tc_out,
                                         float* h_out, int n, int u) {
    long long nu = (long long)n * u;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < nu;
         idx += (long long)blockDim.x * gridDim.x) {
        long long r = idx / u;
        int j = (int)(idx - r * u);
        float a[4];
        for (int k = 0; k < 4; ++k) {
            long long at = r * 4 * u + (long long)k * u + j;
            float z = has_bias ? (rec[at] + bias[k * u + j]) + xw[at] : rec[at] + xw[at];
            a[k] = k < 3 ? sigmoid_(z) : tanhf(z);
            gates[k * nu + idx] = a[k];
        }
        float c = a[1] * c_prev[idx] + a[0] * a[3];
        float t = tanhf(c);
        c_out[idx] = c;
        tc_out[idx] = t;
        h_out[idx] = a[2] * t;
    }
}

// One LSTM step backward, dh the step's share of the gradient into h, plus gh_t (the sequence output's, rows
// gh_stride apart; has_gh 0: none): d = dc + dh o (1 - tc^2); the pre-activation gradients of i, f, o, g into dz
// (n, 4u: gate blocks of u columns) and d f, the gradient into the previous cell state, into dc_prev.
extern "C" __global__ void lstm_step_grad_f32(const float* dh, const float* gh, long long gh_stride, int has_gh,
                                              const float* dc, const float* gates, const float* tc,
                                              const float* c_prev, float* dz, float* dc_prev, int n, int u) {
    long long nu = (long long)n * u;
    for (long long idx = blockIdx.x * (long long)blockDim.x + threadIdx.x; idx < nu;
         idx += (long long)blockDim.x * gridDim.x) {
        long long r = idx / u;
        int j = (int)(idx - r * u);
        float i = gates[idx], f = gates[nu + idx], o = gates[2 * nu + idx], g = gates[3 * nu + idx];
        float t = tc[idx], h = has_gh ? dh[idx] + gh[r * gh_stride + j] : dh[idx];
        float d = (1.0f - t * t) * o * h + dc[idx];
        float* z = dz + r * 4 * u + j;
        z[0] = d * g * ((1.0f - i) * i);
        z[u] = d * c_prev[idx] * ((1.0f - f) * f);
        z[2 * u] = h * t * ((1.0f - o) * o);
        z[3 * u] = d * i * (1.0f - g * g);
        dc_prev[idx] = d * f;
    }
}

// Softmax of contiguous (R, D) rows, one warp a row (coalesced over any D): e = exp(x - max) / sum, with each
// row's maximum m and sum s of exp(x - max), as activations.row_softmax.
template <typename T>
__device__ void softmax_rows_(const T* x, T* e, T* m, T* s, long long R, int D) {
    long long warp = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / 32;
    long long warps = ((long long)gridDim.x * blockDim.x) / 32;
    int lane = threadIdx.x & 31;
    for (long long r = warp; r < R; r += warps) {
        const T* xr = x + r * D;
        T* er = e + r * D;
        T mx = xr[0];   // (D >= 1)
        for (int k = lane; k < D; k += 32) mx = max(mx, xr[k]);
        for (int o = 16; o > 0; o >>= 1) mx = max(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        T sum = 0;
        for (int k = lane; k < D; k += 32) {
            T v = exp(xr[k] - mx);
            er[k] = v;
            sum += v;
        }
        for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
        for (int k = lane; k < D; k += 32) er[k] = er[k] / sum;
        if (lane == 0) {
            m[r] = mx;
            s[r] = sum;
        }
    }
}

extern "C" __global__ void softmax_rows_f32(const float* x, float* e, float* m, float* s, long long R, int D) {
    softmax_rows_(x, e, m, s, R, D);
}

extern "C" __global__ void softmax_rows_f64(const double* x, double* e, double* m, double* s, long long R,
                                            int D) {
    softmax_rows_(x, e, m, s, R, D);
}

// Attention's transposed scores s (B, K, Q), in place: each column's softmax down its K rows of the scores
// times factor, exp((s - max) factor) / sum, a thread a column (the array code's max, subtract, scale, exp, sum,
// divide); and its gradient d = (d - rowsum) w factor, rowsum (B, 1, Q).
template <typename T>
__device__ void softmax_columns_(T* s, long long B, int K, int Q, T factor) {
    long long n = B * Q;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        long long b = i / Q;
        T* col = s + b * K * Q + (i - b * Q);
        T m = col[0];
        for (int k = 1; k < K; ++k) m = max(m, col[(long long)k * Q]);
        T sum = 0;
        for (int k = 0; k < K; ++k) {
            T v = exp((col[(long long)k * Q] - m) * factor);
            col[(long long)k * Q] = v;
            sum += v;
        }
        for (int k = 0; k < K; ++k) col[(long long)k * Q] = col[(long long)k * Q] / sum;
    }
}

template <typename T>
__device__ void softmax_columns_grad_(T* d, const T* rowsum, const T* w, long long B, int K, int Q, T factor) {
    long long n = B * K * Q;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        long long b = i / ((long long)K * Q);
        d[i] = (d[i] - rowsum[b * Q + i % Q]) * w[i] * factor;
    }
}

extern "C" __global__ void softmax_columns_f32(float* s, long long B, int K, int Q, float factor) {
    softmax_columns_(s, B, K, Q, factor);
}

extern "C" __global__ void softmax_columns_f64(double* s, long long B, int K, int Q, double factor) {
    softmax_columns_(s, B, K, Q, factor);
}

extern "C" __global__ void softmax_columns_grad_f32(float* d, const float* rowsum, const float* w, long long B,
                                                    int K, int Q, float factor) {
    softmax_columns_grad_(d, rowsum, w, B, K, Q, factor);
}

extern "C" __global__ void softmax_columns_grad_f64(double* d, const double* rowsum, const double* w, long long B,
                                                    int K, int Q, double factor) {
    softmax_columns_grad_(d, rowsum, w, B, K, Q, factor);
}

// Sparse cross-entropy from logits, after softmax_rows: loss = log(s) - (x[label] - m) a row, and its
// gradient (softmax - onehot(label)) g a row; labels are checked beforehand (labels_out_of_range).
template <typename T>
__device__ void sce_loss_(const T* x, const long long* lab, const T* m, const T* s, T* loss, long long R, int D) {
    for (long long r = blockIdx.x * (long long)blockDim.x + threadIdx.x; r < R;
         r += (long long)blockDim.x * gridDim.x)
        loss[r] = log(s[r]) - (x[r * D + lab[r]] - m[r]);
}

template <typename T>
__device__ void sce_grad_(const T* soft, const long long* lab, const T* g, T* dx, long long R, int D) {
    long long n = R * D;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        long long r = i / D;
        int k = (int)(i - r * D);
        dx[i] = k == lab[r] ? (soft[i] - T(1)) * g[r] : soft[i] * g[r];
    }
}

extern "C" __global__ void sce_loss_f32(const float* x, const long long* lab, const float* m, const float* s,
                                        float* loss, long long R, int D) {
    sce_loss_(x, lab, m, s, loss, R, D);
}

extern "C" __global__ void sce_loss_f64(const double* x, const long long* lab, const double* m, const double* s,
                                        double* loss, long long R, int D) {
    sce_loss_(x, lab, m, s, loss, R, D);
}

extern "C" __global__ void sce_grad_f32(const float* soft, const long long* lab, const float* g, float* dx,
                                        long long R, int D) {
    sce_grad_(soft, lab, g, dx, R, D);
}

extern "C" __global__ void sce_grad_f64(const double* soft, const long long* lab, const double* g, double* dx,
                                        long long R, int D) {
    sce_grad_(soft, lab, g, dx, R, D);
}

// The embedding's backward: rows of gy (N, D) added into a zeroed (V, D) table at rows ids (N,), repeated ids
// adding (atomically: the order of those additions is the device's).
template <typename T>
__device__ void scatter_rows_(const long long* ids, const T* gy, T* out, long long N, int D) {
    long long n = N * D;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x) {
        long long r = i / D;
        atomicAdd(out + ids[r] * D + (i - r * D), gy[i]);
    }
}

extern "C" __global__ void scatter_rows_f32(const long long* ids, const float* gy, float* out, long long N, int D) {
    scatter_rows_(ids, gy, out, N, D);
}

extern "C" __global__ void scatter_rows_f64(const long long* ids, const double* gy, double* out, long long N,
                                            int D) {
    scatter_rows_(ids, gy, out, N, D);
}

// Element i of a channels-last (N, H, W, C) array: its sample n, row y, column x and channel c (the decoding of
// the pooling and col2im kernels' flat indices).
__device__ __forceinline__ void nhwc_(long long i, int H, int W, int C, long long& n, int& y, int& x, int& c) {
    c = (int)(i % C);
    long long rest = i / C;
    x = (int)(rest % W);
    rest /= W;
    y = (int)(rest % H);
    n = rest / H;
}

// Max pooling of (N, H, W, C) x (padding never chosen): y (N, OH, OW, C) and, with note, which (uint8): the
// window offset (row-major) of each output's first maximum, as MaxPool2D's array code (a NaN wins and stays).
template <typename T>
__device__ void max_pool_(const T* x, T* y, unsigned char* which, int note, long long N, int H, int W, int C,
                          int OH, int OW, int ph, int pw, int sh, int sw, int pt, int pl) {
    long long n_out = N * OH * OW * C;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n_out;
         i += (long long)blockDim.x * gridDim.x) {
        long long n;
        int oy, ox, c;
        nhwc_(i, OH, OW, C, n, oy, ox, c);
        T m = 0;
        int best = 0;
        bool any = false;
        for (int k = 0; k < ph * pw; ++k) {
            int iy = oy * sh + k / pw - pt, ix = ox * sw + k % pw - pl;
            if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;   // padding: -inf, never chosen
            T v = x[((n * H + iy) * W + ix) * C + c];
            if (!any) {
                m = v;
                best = k;
                any = true;
            } else if (v > m) {
                m = v;
                best = k;
            } else if (v != v) {
                m = v;
            }
        }
        y[i] = m;
        if (note) which[i] = (unsigned char)best;
    }
}

// Its input gradient: each input element gathers gy of the windows whose noted maximum it is.
template <typename T>
__device__ void max_pool_grad_(const T* gy, const unsigned char* which, T* dx, long long N, int H, int W, int C,
                               int OH, int OW, int ph, int pw, int sh, int sw, int pt, int pl) {
    long long n_in = N * H * W * C;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n_in;
         i += (long long)blockDim.x * gridDim.x) {
        long long n;
        int py, px, c;
        nhwc_(i, H, W, C, n, py, px, c);
        py += pt;
        px += pl;
        T sum = 0;
        int oy0 = py - ph + 1 > 0 ? (py - ph + 1 + sh - 1) / sh : 0, oy1 = min(py / sh, OH - 1);
        int ox0 = px - pw + 1 > 0 ? (px - pw + 1 + sw - 1) / sw : 0, ox1 = min(px / sw, OW - 1);
        for (int oy = oy0; oy <= oy1; ++oy)
            for (int ox = ox0; ox <= ox1; ++ox) {
                long long o = ((n * OH + oy) * OW + ox) * C + c;
                if (which[o] == (py - oy * sh) * pw + (px - ox * sw)) sum += gy[o];
            }
        dx[i] = sum;
    }
}

extern "C" __global__ void max_pool_f32(const float* x, float* y, unsigned char* which, int note, long long N, int H,
                                        int W, int C, int OH, int OW, int ph, int pw, int sh, int sw, int pt,
                                        int pl) {
    max_pool_(x, y, which, note, N, H, W, C, OH, OW, ph, pw, sh, sw, pt, pl);
}

extern "C" __global__ void max_pool_f64(const double* x, double* y, unsigned char* which, int note, long long N,
                                        int H, int W, int C, int OH, int OW, int ph, int pw, int sh, int sw,
                                        int pt, int pl) {
    max_pool_(x, y, which, note, N, H, W, C, OH, OW, ph, pw, sh, sw, pt, pl);
}

extern "C" __global__ void max_pool_grad_f32(const float* gy, const unsigned char* which, float* dx, long long N,
                                             int H, int W, int C, int OH, int OW, int ph, int pw, int sh, int sw,
                                             int pt, int pl) {
    max_pool_grad_(gy, which, dx, N, H, W, C, OH, OW, ph, pw, sh, sw, pt, pl);
}

extern "C" __global__ void max_pool_grad_f64(const double* gy, const unsigned char* which, double* dx, long long N,
                                             int H, int W, int C, int OH, int OW, int ph, int pw, int sh, int sw,
                                             int pt, int pl) {
    max_pool_grad_(gy, which, dx, N, H, W, C, OH, OW, ph, pw, sh, sw, pt, pl);
}

// col2im as a gather: the input gradient dx (N, H, W, C), a window of the padded input starting at (top, left),
// from the column gradients dcols (N*OH*OW, KH*KW*C) (one GEMM dy W2^T), each element summing the columns that
// read it, kernel offsets in row-major order (the order the array code adds them).
template <typename T>
__device__ void col2im_(const T* dcols, T* dx, long long N, int H, int W, int C, int OH, int OW, int KH, int KW,
                        int sh, int sw, int dh, int dw, int top, int left) {
    long long n_in = N * H * W * C;
    long long K = (long long)KH * KW * C;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n_in;
         i += (long long)blockDim.x * gridDim.x) {
        long long n;
        int py, px, c;
        nhwc_(i, H, W, C, n, py, px, c);
        py += top;
        px += left;
        T sum = 0;
        for (int a = 0; a < KH; ++a) {
            int ty = py - a * dh;
            if (ty < 0 || ty % sh) continue;
            int oy = ty / sh;
            if (oy >= OH) continue;
            for (int b = 0; b < KW; ++b) {
                int tx = px - b * dw;
                if (tx < 0 || tx % sw) continue;
                int ox = tx / sw;
                if (ox >= OW) continue;
                sum += dcols[((n * OH + oy) * OW + ox) * K + (a * KW + b) * C + c];
            }
        }
        dx[i] = sum;
    }
}

extern "C" __global__ void col2im_f32(const float* dcols, float* dx, long long N, int H, int W, int C, int OH,
                                      int OW, int KH, int KW, int sh, int sw, int dh, int dw, int top, int left) {
    col2im_(dcols, dx, N, H, W, C, OH, OW, KH, KW, sh, sw, dh, dw, top, left);
}

extern "C" __global__ void col2im_f64(const double* dcols, double* dx, long long N, int H, int W, int C, int OH,
                                      int OW, int KH, int KW, int sh, int sw, int dh, int dw, int top, int left) {
    col2im_(dcols, dx, N, H, W, C, OH, OW, KH, KW, sh, sw, dh, dw, top, left);
}

// LayerNorm over contiguous (R, D) rows, a warp a row: mean, inv = 1 / sqrt(var + eps), y = (x - mean) inv
// [* gamma] [+ beta] (normalization.py's LayerNorm, as kernel_loops.layer_norm_rows).
template <typename T>
__device__ T warp_sum_(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <typename T>
__device__ void layer_norm_(const T* x, const T* gamma, const T* beta, int has_gamma, int has_beta, T eps, T* y,
                            T* mean, T* inv, long long R, int D) {
    long long warp = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / 32;
    long long warps = ((long long)gridDim.x * blockDim.x) / 32;
    int lane = threadIdx.x & 31;
    T scale = T(1) / T(D);
    for (long long r = warp; r < R; r += warps) {
        const T* xr = x + r * D;
        T s = 0;
        for (int k = lane; k < D; k += 32) s += xr[k];
        T m = warp_sum_(s) * scale;
        T v = 0;
        for (int k = lane; k < D; k += 32) {
            T t = xr[k] - m;
            v += t * t;
        }
        T iv = T(1) / sqrt(warp_sum_(v) * scale + eps);
        T* yr = y + r * D;
        for (int k = lane; k < D; k += 32) {
            T h = (xr[k] - m) * iv;
            if (has_gamma) h = h * gamma[k];
            if (has_beta) h = h + beta[k];
            yr[k] = h;
        }
        if (lane == 0) {
            mean[r] = m;
            inv[r] = iv;
        }
    }
}

// Its backward, a warp a row: dx = inv (g - mean(g) - xhat mean(g xhat)) with g = gy [* gamma] (need_x), and
// p = gy xhat, whose column sums are the gamma gradient (need_p).
template <typename T>
__device__ void layer_norm_grad_(const T* gy, const T* x, const T* mean, const T* inv, const T* gamma,
                                 int has_gamma, int need_x, int need_p, T* dx, T* p, long long R, int D) {
    long long warp = (blockIdx.x * (long long)blockDim.x + threadIdx.x) / 32;
    long long warps = ((long long)gridDim.x * blockDim.x) / 32;
    int lane = threadIdx.x & 31;
    T scale = T(1) / T(D);
    for (long long r = warp; r < R; r += warps) {
        const T* gr = gy + r * D;
        const T* xr = x + r * D;
        T m = mean[r], iv = inv[r];
        if (need_p)
            for (int k = lane; k < D; k += 32) p[r * D + k] = gr[k] * ((xr[k] - m) * iv);
        if (!need_x) continue;
        T m1 = 0, m2 = 0;
        for (int k = lane; k < D; k += 32) {
            T g = has_gamma ? gr[k] * gamma[k] : gr[k];
            m1 += g;
            m2 += g * ((xr[k] - m) * iv);
        }
        m1 = warp_sum_(m1) * scale;
        m2 = warp_sum_(m2) * scale;
        for (int k = lane; k < D; k += 32) {
            T g = has_gamma ? gr[k] * gamma[k] : gr[k];
            dx[r * D + k] = (g - m1 - ((xr[k] - m) * iv) * m2) * iv;
        }
    }
}

extern "C" __global__ void layer_norm_f32(const float* x, const float* gamma, const float* beta, int has_gamma,
                                          int has_beta, float eps, float* y, float* mean, float* inv, long long R,
                                          int D) {
    layer_norm_(x, gamma, beta, has_gamma, has_beta, eps, y, mean, inv, R, D);
}

extern "C" __global__ void layer_norm_f64(const double* x, const double* gamma, const double* beta, int has_gamma,
                                          int has_beta, double eps, double* y, double* mean, double* inv,
                                          long long R, int D) {
    layer_norm_(x, gamma, beta, has_gamma, has_beta, eps, y, mean, inv, R, D);
}

extern "C" __global__ void layer_norm_grad_f32(const float* gy, const float* x, const float* mean, const float* inv,
                                               const float* gamma, int has_gamma, int need_x, int need_p, float* dx,
                                               float* p, long long R, int D) {
    layer_norm_grad_(gy, x, mean, inv, gamma, has_gamma, need_x, need_p, dx, p, R, D);
}

extern "C" __global__ void layer_norm_grad_f64(const double* gy, const double* x, const double* mean,
                                               const double* inv, const double* gamma, int has_gamma, int need_x,
                                               int need_p, double* dx, double* p, long long R, int D) {
    layer_norm_grad_(gy, x, mean, inv, gamma, has_gamma, need_x, need_p, dx, p, R, D);
}

// Sets *bad to 1 where a label is outside [0, K).
extern "C" __global__ void labels_out_of_range(const long long* lab, long long n, long long K, int* bad) {
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)blockDim.x * gridDim.x)
        if (lab[i] < 0 || lab[i] >= K) *bad = 1;
}
"""

NAMES = ("adam_update_f32", "adam_update_f64", "lstm_cell_f32", "lstm_step_grad_f32",
         "softmax_rows_f32", "softmax_columns_f32", "softmax_columns_f64", "softmax_columns_grad_f32",
         "softmax_columns_grad_f64",
         "softmax_rows_f64", "sce_loss_f32", "sce_loss_f64", "sce_grad_f32", "sce_grad_f64", "scatter_rows_f32",
         "scatter_rows_f64", "max_pool_f32", "max_pool_f64", "max_pool_grad_f32", "max_pool_grad_f64", "col2im_f32",
         "col2im_f64", "layer_norm_f32", "layer_norm_f64", "layer_norm_grad_f32", "layer_norm_grad_f64",
         "labels_out_of_range")
_BLOCK = 256
_module = {}


def kernels_for(xp):
    """The fused kernels for arrays of the module ``xp``: kernels.py's compiled loops for NumPy's, this module's for
    CuPy's. Both have the same functions with the same arguments, each saying None / False where it does not run
    (the caller's generic array code runs then)."""
    return _cpu_kernels if xp is np else sys.modules[__name__]


def enabled():
    """Whether the fused kernels may run: not where ``LAMINA_CUDA_KERNELS=0`` (the generic CuPy code then: for
    comparing the two on a GPU)."""
    return os.environ.get("LAMINA_CUDA_KERNELS", "1").strip().lower() not in ("0", "false", "no", "off")


def _cupy_of(*arrays):
    """CuPy, where every array is a real CuPy array of one dtype and the kernels are on; else None."""
    if not enabled() or not all(backend.is_cupy_array(a) for a in arrays):
        return None
    xp = backend.get_array_module(arrays[0])
    if not hasattr(xp, "RawModule"):   # the tests' CPU stand-in for CuPy
        return None
    return xp


def _kernel(xp, name):
    k = _module.get(name)
    if k is None:
        if "module" not in _module:
            _module["module"] = xp.RawModule(code=SOURCE)
        k = _module[name] = _module["module"].get_function(name)
    return k


def _grid(n):
    """(blocks, threads) for a grid-stride loop over n items, a thread each."""
    return (max(1, min((n + _BLOCK - 1) // _BLOCK, 65535 * 32)),), (_BLOCK,)


def _warp_grid(rows):
    """(blocks, threads) for a loop over rows, a warp (32 threads) each."""
    return _grid(rows * 32)


def _contiguous(*arrays):
    return all(a.flags.c_contiguous for a in arrays)


def adam_update(w, g, m, v, b1, b2, eps, alpha):
    """kernels.adam_update on the GPU: Adam's update of equally shaped contiguous float32 / float64 arrays in
    place, one launch. True if done, False where it does not run."""
    xp = _cupy_of(w, g, m, v)
    if (xp is None or w.dtype not in (np.float32, np.float64) or not (w.dtype == g.dtype == m.dtype == v.dtype)
            or not (w.shape == g.shape == m.shape == v.shape) or not _contiguous(w, g, m, v) or w.size == 0):
        return False
    t = w.dtype.type
    name = "adam_update_f32" if w.dtype == np.float32 else "adam_update_f64"
    _kernel(xp, name)(*_grid(w.size), (w, g, m, v, t(1.0 - b1), t(1.0 - b2), t(eps), t(alpha), np.int64(w.size)))
    return True


def lstm_cell(gates):
    """kernels.lstm_cell on the GPU, for the sequence's float32 gate buffer (T, 4, N, u): a function called as
    ``f(rec, xw_t, bias, has_bias, c_prev, gates[t], c_t, tanh_c_t, h_t)`` on contiguous arrays; None where it
    does not run."""
    xp = _cupy_of(gates)
    if xp is None or gates.dtype != np.float32 or gates.size == 0:
        return None
    kernel = _kernel(xp, "lstm_cell_f32")

    def cell(rec, xw, bias, has_bias, c_prev, g, c_out, tc_out, h_out):
        n, u = c_out.shape
        arrays = (rec, xw, bias, c_prev, g, c_out, tc_out, h_out)
        if any(a.dtype != np.float32 for a in arrays) or not _contiguous(*arrays):
            raise ValueError("lstm_cell: every operand must be a contiguous float32 array")
        kernel(*_grid(n * u), (rec, xw, bias, np.int32(bool(has_bias)), c_prev, g, c_out, tc_out, h_out,
                               np.int32(n), np.int32(u)))
    return cell


def lstm_cell_grad(gates):
    """kernels.lstm_cell_grad on the GPU: called as ``f(dh, dc, gates[t], tanh_c_t, c_prev, dz_t, dc_prev)`` on
    contiguous float32 arrays; None where it does not run."""
    xp = _cupy_of(gates)
    if xp is None or gates.dtype != np.float32 or gates.size == 0:
        return None
    kernel = _kernel(xp, "lstm_step_grad_f32")
    no_gh = (np.int64(0), np.int32(0))   # (no sequence gradient: the caller added its share to dh)

    def cell(dh, dc, g, tc, c_prev, dz, dc_prev):
        n, u = dh.shape
        arrays = (dh, dc, g, tc, c_prev, dz, dc_prev)
        if any(a.dtype != np.float32 for a in arrays) or not _contiguous(*arrays):
            raise ValueError("lstm_cell_grad: every operand must be a contiguous float32 array")
        kernel(*_grid(n * u), (dh, dh, *no_gh, dc, g, tc, c_prev, dz, dc_prev, np.int32(n), np.int32(u)))
    return cell


def _suffix(dtype):
    return {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}.get(np.dtype(dtype))


def row_softmax(rows):
    """activations.row_softmax on the GPU: (softmax, maxima, sums) of C-contiguous float32 / float64 (R, D)
    rows in one launch (a warp a row), or None where it does not run."""
    xp = _cupy_of(rows)
    if xp is None or rows.ndim != 2 or _suffix(rows.dtype) is None or rows.size == 0 or not _contiguous(rows):
        return None
    R, D = rows.shape
    e = xp.empty_like(rows)
    m, sums = xp.empty((2, R), rows.dtype)
    _kernel(xp, "softmax_rows_" + _suffix(rows.dtype))(*_warp_grid(R), (rows, e, m, sums, np.int64(R), np.int32(D)))
    return e, m, sums


def softmax_columns(s, factor=1.0):
    """kernels.softmax_columns on the GPU: in place, the softmax of each column of a contiguous (..., K, Q) float
    array down its K rows, of the scores times ``factor``; one launch. True if done, False where it does not
    run."""
    xp = _cupy_of(s)
    if xp is None or s.ndim < 2 or _suffix(s.dtype) is None or not _contiguous(s) or s.size == 0:
        return False
    K, Q = s.shape[-2:]
    B = s.size // (K * Q)
    _kernel(xp, "softmax_columns_" + _suffix(s.dtype))(*_grid(B * Q), (s, np.int64(B), np.int32(K), np.int32(Q),
                                                                       s.dtype.type(factor)))
    return True


def softmax_columns_grad(d, rowsum, w, factor=1.0):
    """kernels.softmax_columns_grad on the GPU: in place d = (d - rowsum) w factor for contiguous d and w
    (..., K, Q) and rowsum (..., 1, Q), one launch. True if done, False where it does not run."""
    xp = _cupy_of(d, rowsum, w)
    if (xp is None or d.ndim < 2 or _suffix(d.dtype) is None or not (d.dtype == rowsum.dtype == w.dtype)
            or d.shape != w.shape or rowsum.shape != d.shape[:-2] + (1, d.shape[-1])
            or not _contiguous(d, rowsum, w) or d.size == 0):
        return False
    K, Q = d.shape[-2:]
    _kernel(xp, "softmax_columns_grad_" + _suffix(d.dtype))(*_grid(d.size), (
        d, rowsum, w, np.int64(d.size // (K * Q)), np.int32(K), np.int32(Q), d.dtype.type(factor)))
    return True


def labels_out_of_range(labels, classes):
    """Whether any of the integer ``labels`` (a CuPy array) lies outside [0, classes): one launch and one read of
    a flag (min and max were two reductions and two reads); None where the kernels do not run."""
    xp = _cupy_of(labels)
    if xp is None or labels.dtype.kind not in "iu":
        return None
    labels = xp.ascontiguousarray(labels.astype(np.int64, copy=False))
    bad = xp.zeros(1, np.int32)
    if labels.size:
        _kernel(xp, "labels_out_of_range")(*_grid(labels.size), (labels, np.int64(labels.size), np.int64(classes),
                                                                 bad))
    return bool(int(bad.get()[0]))


def sce_loss(x2, labels, m, sums):
    """log(sums) - (x2[r, labels[r]] - m) a row of contiguous (R, D) logits (after row_softmax), labels int64
    (R,) already checked: one launch; None where it does not run."""
    xp = _cupy_of(x2, labels, m, sums)
    if (xp is None or _suffix(x2.dtype) is None or labels.dtype != np.int64 or not (x2.dtype == m.dtype == sums.dtype)
            or not _contiguous(x2, labels, m, sums) or x2.size == 0):
        return None
    R, D = x2.shape
    loss = xp.empty(R, x2.dtype)
    _kernel(xp, "sce_loss_" + _suffix(x2.dtype))(*_grid(R), (x2, labels, m, sums, loss, np.int64(R), np.int32(D)))
    return loss


def sce_grad(soft, labels, g):
    """(soft - onehot(labels)) g of a contiguous (R, D) softmax, int64 labels (R,) and row weights g (R,), one
    launch; None where it does not run."""
    xp = _cupy_of(soft, labels, g)
    if (xp is None or _suffix(soft.dtype) is None or labels.dtype != np.int64 or g.dtype != soft.dtype
            or not _contiguous(soft, labels, g) or soft.size == 0):
        return None
    R, D = soft.shape
    dx = xp.empty_like(soft)
    _kernel(xp, "sce_grad_" + _suffix(soft.dtype))(*_grid(R * D), (soft, labels, g, dx, np.int64(R), np.int32(D)))
    return dx


def scatter_rows(ids, gy, num_rows):
    """embedding._scatter_rows on the GPU: a zero (num_rows, D) table with each row of gy (N, D) added at row
    ids[r] (integer ids already checked), one launch of atomic additions; None where it does not run."""
    xp = _cupy_of(ids, gy)
    if xp is None or _suffix(gy.dtype) is None or ids.dtype.kind not in "iu" or gy.ndim != 2:
        return None
    ids = xp.ascontiguousarray(ids.astype(np.int64, copy=False))
    gy = xp.ascontiguousarray(gy)
    N, D = gy.shape
    out = xp.zeros((num_rows, D), gy.dtype)
    if gy.size:
        _kernel(xp, "scatter_rows_" + _suffix(gy.dtype))(*_grid(N * D), (ids, gy, out, np.int64(N), np.int32(D)))
    return out


def _geometry(*ints):
    return tuple(np.int32(v) for v in ints)


def max_pool2d(x, pool, stride, pads, note):
    """kernels.max_pool2d on the GPU: (y, which) of a contiguous (N, H, W, C) float array, which the uint8 window
    offset of each output's first maximum (None unless ``note``), one launch; None where it does not run
    (windows of over 256 values among them)."""
    xp = _cupy_of(x)
    (ph, pw), (sh, sw), ((pt, pb), (pl, pr)) = pool, stride, pads
    if xp is None or x.ndim != 4 or _suffix(x.dtype) is None or ph * pw > 256 or not _contiguous(x):
        return None
    n, h, w, c = x.shape
    oh, ow = (h + pt + pb - ph) // sh + 1, (w + pl + pr - pw) // sw + 1
    y = xp.empty((n, oh, ow, c), x.dtype)
    which = xp.empty(y.shape, np.uint8) if note else xp.empty(1, np.uint8)
    if y.size:
        geometry = _geometry(h, w, c, oh, ow, ph, pw, sh, sw, pt, pl)
        _kernel(xp, "max_pool_" + _suffix(x.dtype))(*_grid(y.size), (x, y, which, np.int32(bool(note)), np.int64(n),
                                                                     *geometry))
    return y, (which if note else None)


def max_pool2d_grad(gy, which, xshape, pool, stride, pads):
    """kernels.max_pool2d_grad on the GPU: the (N, H, W, C) input gradient from gy and max_pool2d's note, one
    launch (a gather: no atomics, no zeroed canvas); None where it does not run."""
    xp = _cupy_of(gy)
    if (xp is None or gy.ndim != 4 or _suffix(gy.dtype) is None or not backend.is_cupy_array(which)
            or which.dtype != np.uint8 or which.shape != gy.shape or not _contiguous(which)):
        return None
    (ph, pw), (sh, sw), ((pt, _), (pl, _)) = pool, stride, pads
    gy = xp.ascontiguousarray(gy)
    n, h, w, c = xshape
    dx = xp.empty(tuple(xshape), gy.dtype)
    if dx.size:
        _kernel(xp, "max_pool_grad_" + _suffix(gy.dtype))(
            *_grid(dx.size), (gy, which, dx, np.int64(n), *_geometry(h, w, c, gy.shape[1], gy.shape[2], ph, pw, sh, sw,
                                                                     pt, pl)))
    return dx


def col2im(dcols, shape, oh, ow, kernel_size, stride, dilation, window):
    """The window ((top, left), (H, W)) of col2im(dcols) on the GPU: dcols (N*OH*OW, KH*KW*C) contiguous column
    gradients (rows in (n, oy, ox) order, columns in (i, j, c) order), ``shape`` the padded input's (N, Hp, Wp,
    C); a new (N, H, W, C) array, one launch. None where it does not run."""
    xp = _cupy_of(dcols)
    if xp is None or dcols.ndim != 2 or _suffix(dcols.dtype) is None or not _contiguous(dcols):
        return None
    (top, left), (h, w) = window
    n, c = shape[0], shape[3]
    (kh, kw), (sh, sw), (dh, dw) = kernel_size, stride, dilation
    dx = xp.empty((n, h, w, c), dcols.dtype)
    if dx.size:
        _kernel(xp, "col2im_" + _suffix(dcols.dtype))(
            *_grid(dx.size), (dcols, dx, np.int64(n), *_geometry(h, w, c, oh, ow, kh, kw, sh, sw, dh, dw, top, left)))
    return dx




def layer_norm_forward(x2, gamma, beta, epsilon):
    """kernels.layer_norm_forward on the GPU: (y, mean, inv) of contiguous (R, D) rows, gamma and beta (D,) or
    None, one launch (a warp a row); None where it does not run."""
    xp = _cupy_of(x2, *(v for v in (gamma, beta) if v is not None))
    if (xp is None or x2.ndim != 2 or _suffix(x2.dtype) is None or x2.size == 0
            or any(v is not None and (v.dtype != x2.dtype or v.shape != x2.shape[1:]) for v in (gamma, beta))):
        return None
    x2 = xp.ascontiguousarray(x2)
    R, D = x2.shape
    y = xp.empty_like(x2)
    mean, inv = xp.empty((2, R), x2.dtype)
    g = x2 if gamma is None else xp.ascontiguousarray(gamma)   # (not read when absent)
    b = x2 if beta is None else xp.ascontiguousarray(beta)
    _kernel(xp, "layer_norm_" + _suffix(x2.dtype))(*_warp_grid(R), (
        x2, g, b, np.int32(gamma is not None), np.int32(beta is not None), x2.dtype.type(epsilon), y, mean, inv,
        np.int64(R), np.int32(D)))
    return y, mean, inv


def layer_norm_backward(gy2, x2, mean, inv, gamma, need_x, need_params):
    """kernels.layer_norm_backward on the GPU: (dx, dgamma, dbeta) from one launch (a warp a row) and the two
    column sums; None where it does not run."""
    xp = _cupy_of(gy2, x2, mean, inv, *(() if gamma is None else (gamma,)))
    if (xp is None or gy2.ndim != 2 or _suffix(gy2.dtype) is None or gy2.size == 0 or gy2.shape != x2.shape
            or not (gy2.dtype == x2.dtype == mean.dtype == inv.dtype)
            or (gamma is not None and gamma.dtype != gy2.dtype)
            or not _contiguous(x2, mean, inv)):
        return None
    gy2 = xp.ascontiguousarray(gy2)
    R, D = gy2.shape
    dx = xp.empty_like(gy2) if need_x else gy2
    p = xp.empty_like(gy2) if need_params and gamma is not None else gy2
    g = gy2 if gamma is None else xp.ascontiguousarray(gamma)
    if need_x or p is not gy2:
        _kernel(xp, "layer_norm_grad_" + _suffix(gy2.dtype))(*_warp_grid(R), (
            gy2, x2, mean, inv, g, np.int32(gamma is not None), np.int32(bool(need_x)), np.int32(p is not gy2), dx, p,
            np.int64(R), np.int32(D)))
    ones = xp.ones(R, gy2.dtype) if need_params else None   # column sums as GEMVs (ops.math.sum_rows's way)
    dgamma = ones @ p if p is not gy2 else None
    dbeta = ones @ gy2 if need_params else None
    return (dx if need_x else None), dgamma, dbeta


# The LSTM's time loops on a GPU without a view or an array call per step: each step is one cuBLAS SGEMM and
# one launch of the cell kernel, both given raw device addresses (a step of the per-step cell path made some
# six CuPy views, a CuPy matmul and a launch: ~75 us of host time, the whole of an H200 step's time).

def _addr(a):
    """A CuPy array's device address (its first element's, for a view)."""
    return a.data.ptr


def _time_major(a, n, width):
    """Whether an (N, T, width) view lies time-major in memory: a[:, t] one contiguous (N, width) block."""
    isz = a.dtype.itemsize
    return a.ndim == 3 and a.shape[0] == n and a.shape[2] == width and a.strides[0] == width * isz \
        and abs(a.strides[1]) == n * width * isz and a.strides[2] == isz


def _sgemm(xp):
    """(cuBLAS handle, sgemm, the host scalars 1 and 0 and their addresses); sgemm runs column-major, so the
    row-major product C (m, n) = A (m, k) @ B (k, n) is sgemm(handle, 0, 0, n, m, k, 1, B, n, A, k, 0, C, n)."""
    from cupy_backends.cuda.libs import cublas
    handle = xp.cuda.device.get_cublas_handle()
    scalars = np.array([1.0, 0.0], np.float32)
    host = getattr(cublas, "CUBLAS_POINTER_MODE_HOST", 0)   # (scalars read from host memory: cuBLAS's default)
    if cublas.getPointerMode(handle) != host:
        cublas.setPointerMode(handle, host)
    one, zero = scalars.ctypes.data, scalars.ctypes.data + 4
    return handle, cublas.sgemm, scalars, one, zero


def lstm_forward_loop(xw2, recurrent_kernel, bias, gates, H, Hp, C, Cp, TC, steps):
    """The LSTM forward time loop (LSTMSeq, no mask) on a GPU: for each step t of ``steps``, rec = Hp[:, t] U
    (SGEMM) and the cell kernel writing gates[t], C[:, t], TC[:, t], H[:, t] from rec, the input rows xw2[t]
    and the bias; float32, the op's time-major buffers. True if done, False where it does not run."""
    xp = _cupy_of(xw2, recurrent_kernel, gates, H, Hp, C, Cp, TC, *(() if bias is None else (bias,)))
    if xp is None or gates.dtype != np.float32 or gates.ndim != 4:
        return False
    T, _, N, u = gates.shape
    arrays = (xw2, recurrent_kernel, gates) + (() if bias is None else (bias,))
    if (any(a.dtype != np.float32 for a in arrays + (H, Hp, C, Cp, TC)) or not _contiguous(*arrays)
            or xw2.shape != (T * N, 4 * u) or recurrent_kernel.shape != (u, 4 * u)
            or not all(_time_major(a, N, u) for a in (H, Hp, C, Cp, TC)) or N * u == 0):
        return False
    handle, sgemm, scalars, one, zero = _sgemm(xp)
    kernel = _kernel(xp, "lstm_cell_f32")
    grid, block = _grid(N * u)
    rec = xp.empty((N, 4 * u), np.float32)
    ptr = np.uint64
    rk, rec_p, xw0 = _addr(recurrent_kernel), _addr(rec), _addr(xw2)
    b = ptr(_addr(bias) if bias is not None else rec_p)
    has_bias, n32, u32 = np.int32(bias is not None), np.int32(N), np.int32(u)
    row_block, gate_block = N * 4 * u * 4, gates.strides[0]
    (h0, hs), (hp0, hps), (c0, cs), (cp0, cps), (tc0, tcs) = ((_addr(a), a.strides[1]) for a in (H, Hp, C, Cp, TC))
    g0 = _addr(gates)
    for t in steps:
        sgemm(handle, 0, 0, 4 * u, N, u, one, rk, 4 * u, hp0 + t * hps, u, zero, rec_p, 4 * u)
        kernel(grid, block, (ptr(rec_p), ptr(xw0 + t * row_block), b, has_bias, ptr(cp0 + t * cps),
                             ptr(g0 + t * gate_block), ptr(c0 + t * cs), ptr(tc0 + t * tcs), ptr(h0 + t * hs),
                             n32, u32))
    del scalars   # (alive until here: cuBLAS read the scalars through their host addresses)
    return True


def lstm_backward_loop(dh, dc, gH, rkT, gates, TC, Cp, dZ, steps, done):
    """The LSTM backward time loop (LSTMSeq, no mask) on a GPU: for each step t of ``steps`` (in backward order),
    the cell's gradient kernel (with gH[:, t] added to dh, when the sequence output has a gradient) writing dZ[:, t]
    and the cell-state gradient, then dh = dZ[:, t] rkT (SGEMM), then ``done(t)``. dh and dc (N, u) hold the last
    step's state gradients and are overwritten; returns (dh, dc) after the first step, or None where it does not
    run (nothing written then)."""
    xp = _cupy_of(dh, dc, rkT, gates, TC, Cp, dZ, *(() if gH is None else (gH,)))
    if xp is None or gates.dtype != np.float32 or gates.ndim != 4:
        return None
    T, _, N, u = gates.shape
    if (any(a.dtype != np.float32 for a in (dh, dc, rkT, gates, TC, Cp, dZ))
            or not _contiguous(dh, dc, rkT, gates) or dh.shape != (N, u) or dc.shape != (N, u)
            or rkT.shape != (4 * u, u) or not all(_time_major(a, N, u) for a in (TC, Cp))
            or not _time_major(dZ, N, 4 * u) or N * u == 0
            or (gH is not None and (gH.dtype != np.float32 or gH.shape != (N, T, u) or gH.strides[2] != 4
                                    or gH.strides[0] <= 0 or gH.strides[0] % 4))):
        return None
    handle, sgemm, scalars, one, zero = _sgemm(xp)
    kernel = _kernel(xp, "lstm_step_grad_f32")
    grid, block = _grid(N * u)
    dc_next = xp.empty_like(dc)
    ptr = np.uint64
    dh_p, rk = _addr(dh), _addr(rkT)
    n32, u32 = np.int32(N), np.int32(u)
    has_gh = np.int32(gH is not None)
    gh0, ghs = (_addr(gH), gH.strides[1]) if gH is not None else (dh_p, 0)
    gh_stride = np.int64(gH.strides[0] // 4 if gH is not None else 0)
    (tc0, tcs), (cp0, cps), (z0, zs) = ((_addr(a), a.strides[1]) for a in (TC, Cp, dZ))
    g0, gate_block = _addr(gates), gates.strides[0]
    cur, nxt = dc, dc_next
    for t in steps:
        z = z0 + t * zs
        kernel(grid, block, (ptr(dh_p), ptr(gh0 + t * ghs), gh_stride, has_gh, ptr(_addr(cur)),
                             ptr(g0 + t * gate_block), ptr(tc0 + t * tcs), ptr(cp0 + t * cps), ptr(z), ptr(_addr(nxt)),
                             n32, u32))
        sgemm(handle, 0, 0, u, N, 4 * u, one, rk, u, z, 4 * u, zero, dh_p, u)
        cur, nxt = nxt, cur
        done(t)
    del scalars
    return dh, cur
