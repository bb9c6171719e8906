"""One call of every compiled kernel (lamina/ops/kernel_loops.py) per dtype, with small arrays in the layouts and
dtypes lamina's callers pass, NaN and infinities among the values: for comparing the ahead-of-time built kernels
with numba's in-process ones (tests/test_kernels_aot.py), and for filling numba's cache with exactly those
signatures before the workers start (tests/warm_caches.py)."""
import numpy as np


def cases(dtype, seed=0):
    """{kernel name: [argument tuple, ...]} for float dtype ``dtype``; arrays fresh on every call."""
    rng = np.random.default_rng(seed)
    t = np.dtype(dtype).type

    def a(*shape, low=None):
        x = rng.standard_normal(shape).astype(dtype)
        if low is not None:
            x = np.abs(x) % 1 + low
        return x

    def odd(x):   # a NaN and both infinities in the first values
        flat = x.reshape(-1)
        flat[:3] = (np.nan, np.inf, -np.inf)
        return x
    n, d = 300, 24     # more than one block of 256 rows (the column sums' blocks)
    blocks = -(-n // 256)
    ln = [(a(n, d), a(d), a(d), g, b, t(1e-3), a(n, d), a(n), a(n)) for g, b in ((True, True), (False, False))]
    ln.append((odd(a(n, d)), a(d), a(d), True, False, t(1e-5), a(n, d), a(n), a(n)))
    lng = [(a(n, d), a(n, d), a(n), a(n, low=0.5), a(d), g, nx, npar, a(n, d), np.zeros((blocks, 2, d), dtype))
           for g, nx, npar in ((True, True, True), (False, True, False), (True, False, True))]
    same = np.array([1, 3, 4, 8, 1, 3, 4, 1, 3, 3, 1, 1, 1, 1, 1, 1, 0, 1, 1])
    strided = np.array([1, 5, 5, 8, 1, 2, 2, 1, 3, 3, 1, 2, 2, 1, 1, 1, 0, 0, 0])
    out = {
        "layer_norm_rows": ln,
        "layer_norm_rows_grad": lng,
        "bias_relu_rows": [(odd(a(n, d)), a(d))],
        "relu_rows": [(odd(a(n, d)), a(n, d)), (lambda v: (v, v))(odd(a(n, d)))],   # into another array; in place
        "silu_grad_rows": [(odd(a(n, d)), a(n, d, low=0.0), a(n, d), a(n, d))],
        "leaky_relu_rows": [(odd(a(n, d)), t(0.2), a(n, d)), (odd(a(n, d)), t(np.inf), a(n, d))],
        "leaky_relu_grad_rows": [(odd(a(n, d)), odd(a(n, d)), t(0.3), a(n, d))],
        "extreme_grad_rows": [(odd(a(4, 9, d)), a(4, d), odd(a(4, d)), a(4, 9, d), a(d))],
        "channel_sums_rows": [(odd(a(4, 5, d)), a(5), sq, a(4, 5)) for sq in (False, True)],
        "channel_norm_rows": [(odd(a(4, 5, d)), a(5), a(5, low=0.5), a(5), a(5), g, b, a(4, 5, d))
                              for g, b in ((True, True), (True, False), (False, True), (False, False))],
        "channel_norm_grad_sums": [(odd(a(4, 5, d)), a(4, 5, d), a(5), a(5, low=0.5), a(4, 2, 5))],
        "channel_norm_grad": [(odd(a(4, 5, d)), a(4, 5, d), a(5), a(5, low=0.5), a(5), a(5), a(5), a(4, 5, d))],
        "diff_loss_rows": [(a(n, d), odd(a(n, d)), kind, t(0.7), a(n)) for kind in (0, 1, 2)],
        "diff_loss_grad_rows": [(a(n, d), odd(a(n, d)), kind, t(0.7), f, a(n, d))
                                for kind in (0, 1, 2) for f in (a(1), a(n))],
        "prelu_rows": [(odd(a(n, d)), a(d), a(n, d), 0, d), (odd(a(n, d)), a(d), a(n, d), 5, 19)],
        "prelu_grad_rows": [(odd(a(n, d)), odd(a(n, d)), a(d), a(n, d), np.zeros(d, dtype), lo, hi, gx, ga)
                            for lo, hi, gx, ga in ((0, d, True, True), (3, 17, True, False), (0, 9, False, True))],
        "sigmoid_grad_rows": [(a(n, d, low=0.0), odd(a(n, d)), a(n, d))],
        "elu_grad_rows": [(odd(a(n, d)), a(n, d), odd(a(n, d)), t(1.6732632), t(1.050701), a(n, d))],
        "softmax_rows_grad": [(a(n, d, low=0.0), odd(a(n, d)), lg, a(n, d)) for lg in (False, True)],
        "relu_bias_grad_rows": [(odd(a(n, d)), a(n, d), a(n, d), nb, np.zeros((blocks, d), dtype))
                                for nb in (True, False)],
        "lstm_cell_grad": [(a(5, 6), a(5, 6), a(4, 5, 6, low=0.0), a(5, 6, low=-0.5), a(5, 6), a(5, 24), a(5, 6))],
        "gru_cell_grad": [(a(5, 6), a(2, 5, 6, low=0.0), a(5, 6, low=-0.5), a(5, 6), a(5, 6), a(5, 18), a(5, 18),
                           a(5, 6))],
        "adam_update": [(a(70), a(70), a(70), a(70, low=0.0), t(0.1), t(0.001), t(1e-7), t(0.01))],
        "sgd_momentum_update": [(a(70), odd(a(70)), a(70), t(0.01), t(0.9), nv) for nv in (False, True)],
        "rmsprop_update": [(a(70), odd(a(70)), a(70, low=0.0), a(70), t(0.9), t(0.1), t(1e-7), t(0.01), t(0.5), mo)
                           for mo in (False, True)],
        "adagrad_update": [(a(70), odd(a(70)), a(70, low=0.0), t(1e-7), t(0.01))],
        "nadam_update": [(a(70), odd(a(70)), a(70), a(70, low=0.0), t(0.1), t(0.001), t(1.2), t(1e-7), t(0.5), t(0.3),
                          t(0.01))],
        "lion_update": [(a(70), odd(a(70)), a(70), t(0.9), t(0.1), t(0.99), t(0.01), t(1e-4))],
        # (S, OH, OW, KH, KW, C) -> (S, Hp, Wp, C): stride 1 and 2, dilation 1 and 2; a window from (1, 2)
        "col2im_gather": [(a(2, 4, 4, 3, 3, 5), a(2, 6, 6, 5), 1, 1, 1, 1, 0, 0),
                          (a(2, 3, 3, 3, 3, 5), a(2, 9, 9, 5), 2, 2, 2, 2, 0, 0),
                          (a(2, 4, 4, 3, 3, 5), a(2, 4, 3, 5), 1, 1, 1, 1, 1, 2)],
        # x (N, H, W, C), pool, stride, top/left padding, y, note (uint8; int32 for 17 x 17 windows), note?
        "max_pool_rows": [(odd(a(2, 6, 6, 3)), 2, 2, 2, 2, 0, 0, a(2, 3, 3, 3), np.zeros((2, 3, 3, 3), np.uint8), True),
                          (a(2, 6, 6, 3), 3, 3, 2, 2, 1, 1, a(2, 3, 3, 3), np.zeros((2, 3, 3, 3), np.uint8), False),
                          (a(1, 17, 17, 2), 17, 17, 1, 1, 0, 0, a(1, 1, 1, 2), np.zeros((1, 1, 1, 2), np.int32), True)],
        "max_pool_rows_grad": [(a(2, 3, 3, 3), rng.integers(0, 4, (2, 3, 3, 3)).astype(np.uint8), 2, 2, 2, 2, 0, 0,
                                a(2, 6, 6, 3), False, False),
                               (a(2, 3, 3, 3), rng.integers(0, 9, (2, 3, 3, 3)).astype(np.uint8), 3, 3, 2, 2, 1, 1,
                                a(2, 6, 6, 3), True, True),
                               (a(1, 1, 1, 2), rng.integers(0, 289, (1, 1, 1, 2)).astype(np.int32), 17, 17, 1, 1, 0,
                                0, a(1, 17, 17, 2), True, False)],
        "column_max_subtract": [(odd(a(3, 7, 5)), t(1.0)), (a(3, 7, 5), t(0.17677669))],
        "column_sum_divide": [(a(3, 7, 5, low=0.1),)],
        "column_softmax_grad": [(a(3, 7, 5), a(3, 1, 5), a(3, 7, 5, low=0.0), t(1.0)),
                                (a(3, 7, 5), a(3, 1, 5), a(3, 7, 5, low=0.0), t(0.17677669))],
        "scatter_rows": [(rng.integers(0, 9, 40), a(40, 6), a(9, 6))],
        # batch norm over (rows, channels): the column sums (plain, then squared about a center), y, backward
        "column_sums_rows": [(odd(a(n, d)), a(d), sq, np.zeros((blocks, d), dtype)) for sq in (False, True)],
        "batch_norm_rows": [(odd(a(n, d)), a(d), a(d, low=0.5), a(d), a(d), g, b, a(n, d))
                            for g, b in ((True, True), (False, False))],
        "scale_shift_rows": [(odd(a(n, d)), a(d), a(d), a(n, d))],
        "shift_rows": [(odd(a(n, d)), a(n), a(n), a(n, d))],
        "batch_norm_rows_grad_sums": [(odd(a(n, d)), a(n, d), a(d), a(d, low=0.5), np.zeros((blocks, 2, d), dtype))],
        "batch_norm_rows_grad": [(odd(a(n, d)), a(n, d), a(d), a(d, low=0.5), a(d), a(d), a(d), a(n, d))],
        # a depthwise convolution straight from its input (N, D, H, W, C) = (2, 1, 3, 4, 8): 3x3 'same' with a bias,
        # and (2, 1, 5, 5, 8) 3x3 stride 2 'valid' without; the weight gradient by chunks of 2 rows, with the bias
        "depthwise_direct": [(odd(a(192)), a(9, 32), a(32), a(192), same, 0, 6),
                             (a(400), a(9, 16), a(0), a(64), strided, 0, 4)],
        "depthwise_direct_grad_input": [(odd(a(192)), a(9, 32), a(192), same, 0, 6),
                                        (a(64), a(9, 16), a(400), strided, 0, 10)],
        "depthwise_direct_grad_weight": [(odd(a(192)), a(192), a(10, 32), a(3, 10, 8), same, 2, 0, 3),
                                         (a(400), a(64), a(9, 16), a(2, 9, 8), strided, 2, 0, 2)],
        # im2col rows of samples 1:3 of (3, 5, 6, 4): 3x3, stride 1 with padding 1; stride 2, dilation 2, none
        "im2col_rows": [(odd(a(3, 5, 6, 4)), a(60, 36), 1, 3, 5, 6, 3, 3, 1, 1, 1, 1, 1, 1),
                        (a(3, 5, 6, 4), a(2, 36), 1, 3, 1, 1, 3, 3, 2, 2, 2, 2, 0, 0)],
        # the planes convolution of (3, 5, 6, 4) -> (3, 5, 6, 3) 3x3 'same' (planes 7 x 8), samples 1:3, with the
        # ReLU and without; its weight gradient 2x3 'valid' -> 6 channels (four, then two), the first sample holding
        # infinities (its sums row by row); and a group's: input channels 4:6, output channels 3:6 (6:9 of dy)
        "conv_planes": [(odd(a(3, 5, 6, 4)), a(3, 3, 4, 3), a(3), a(3, 5, 6, 3), a(4, 64), a(3, 48), 1, 3, 1, 1, 1,
                         1, relu, 0, 0, a(0, 0, 0, 0)) for relu in (True, False)]
        + [(a(3, 5, 6, 6), a(3, 3, 2, 3), a(3), a(3, 5, 6, 9), a(2, 64), a(3, 48), 0, 3, 1, 1, 1, 1, False, 4, 3,
            a(0, 0, 0, 0)),
           (a(3, 5, 6, 4), a(3, 3, 4, 3), a(3), a(3, 5, 6, 3), a(4, 64), a(3, 48), 0, 3, 1, 1, 1, 1, False, 0, 0,
            odd(a(3, 5, 6, 4)))],   # (a fused ReLU's input gradient: the input masked)
        "conv_planes_grad_weight": [(odd(a(3, 5, 6, 4)), a(3, 4, 4, 6), a(3, 2, 3, 4, 6), a(4, 48), a(6, 48), 0, 3,
                                     0, 0, 1, 1, 0, 0, a(0, 0, 0, 0), a(0, 0)),
                                    (a(3, 5, 6, 6), a(3, 4, 4, 9), a(3, 2, 3, 2, 3), a(2, 48), a(3, 48), 0, 3, 0, 0, 1,
                                     1, 4, 6, a(0, 0, 0, 0), a(0, 0)),
                                    (a(3, 5, 6, 4), odd(a(3, 4, 4, 6)), a(3, 2, 3, 4, 6), a(4, 48), a(6, 48), 0, 3,
                                     0, 0, 1, 1, 0, 0, odd(a(3, 4, 4, 6)), a(3, 6))],   # (masked, with the bias's)
        # GroupNorm of samples 1:3 of (3, 20, 8) in 4 groups, with gamma and beta and without; its backward, with dx
        # and without (the sums only)
        "group_norm_rows": [(odd(a(3, 20, 8)), a(8), a(8), gb, gb, t(1e-3), 4, a(3, 8), a(3, 8), a(3, 20, 8), 1, 3)
                            for gb in (True, False)],
        "group_norm_rows_grad": [(odd(a(3, 20, 8)), a(3, 20, 8), a(3, 8), a(3, 8, low=0.5), a(8), g, 4, nx,
                                  a(3, 2, 8), a(3, 20, 8), 0, 3) for g, nx in ((True, True), (False, False))],
    }
    if np.dtype(dtype) == np.float32:   # float32 only: an LSTM step forward (5 rows, 6 units, with and without
        # bias); sigmoid and tanh in place
        out.update(lstm_cell=[(odd(a(5, 24) * 30), a(5, 24), a(24), hb, a(5, 6), a(4, 5, 6), a(5, 6), a(5, 6), a(5, 6))
                              for hb in (True, False)],
                   sigmoid_tanh_rows=[(odd(a(5, 24) * 30), th) for th in (False, True)],
                   silu_rows=[(odd(a(5, 24) * 30), a(5, 24), a(5, 24))],
                   sigmoid_rows=[(odd(a(5, 24) * 60), a(5, 24), g, a(5, 24)) for g in (False, True)],
                   elu_rows=[(odd(a(5, 24) * 30), t(1.5), t(sc), a(5, 24), a(5, 24), kp, a(1, 24))
                             for sc, kp in ((1.0, False), (1.050701, True))],
                   softplus_rows=[(odd(a(5, 24) * 60), a(5, 24))],
                   gelu_rows=[(odd(a(5, 24) * 30), a(5, 24), a(5, 24))],
                   gelu_grad_rows=[(odd(a(5, 24) * 30), a(5, 24, low=0.0), a(5, 24), a(5, 24))],
                   exp_rows=[(odd(a(5, 24) * 40), a(0), a(5, 24), a(0), False, a(1, 24)),
                             (odd(a(5, 24) * 40), a(5), a(5, 24), a(0), False, a(2, 24)),
                             (odd(a(5, 21) * 40), a(5), a(5, 21), a(5), True, a(2, 21))])
    return out
