"""Numerical gradient checks for the math and shape ops."""
import numpy as np
import pytest

from lamina import Tensor, grad, ops
from lamina.testing import check_grad

R = np.random.default_rng(1)


def r(*shape, lo=None):
    a = R.standard_normal(shape)
    return np.abs(a) + 0.5 if lo == "pos" else a


# the kernels (lamina.ops.math): keras.ops's maximum/minimum/var narrow float64 to float32 as Keras does
BINARY = [ops.add, ops.subtract, ops.multiply, ops.divide, ops.math.maximum, ops.math.minimum]


@pytest.mark.parametrize("fn", BINARY, ids=lambda f: f.__name__)
@pytest.mark.parametrize("sa,sb", [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1), (1, 5)), ((), (2, 2))])
def test_binary_broadcast(fn, sa, sb):
    b = r(*sb, lo="pos") if fn is ops.divide else r(*sb)
    check_grad(fn, r(*sa), b)


@pytest.mark.parametrize("fn,pos", [(ops.exp, False), (ops.log, True), (ops.sqrt, True), (ops.square, False),
                                    (ops.abs, False), (ops.negative, False)], ids=lambda v: getattr(v, "__name__", ""))
def test_unary(fn, pos):
    check_grad(fn, r(3, 5, lo="pos" if pos else None))


def test_power():
    check_grad(lambda x: ops.power(x, 3), r(4, 3))
    check_grad(lambda x: ops.power(x, 0.5), r(4, 3, lo="pos"))
    check_grad(ops.power, r(3, lo="pos"), r(3))


def test_clip_where():
    x = R.uniform(-2, 2, (6, 5))
    x[np.abs(np.abs(x) - 1) < 0.05] = 0.3  # away from the kinks
    check_grad(lambda t: ops.clip(t, -1.0, 1.0), x)
    cond = R.random((6, 5)) > 0.5
    check_grad(lambda a, b: ops.where(cond, a, b), r(6, 5), r(5))


@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((2, 3, 4), (2, 4, 5)),
                                   ((4,), (4, 3)), ((3, 4), (4,)), ((2, 1, 3, 4), (5, 4, 2))])
def test_matmul(sa, sb):
    check_grad(ops.matmul, r(*sa), r(*sb))


def test_linear():
    check_grad(ops.linear, r(2, 3, 4), r(4, 5), r(5))
    check_grad(lambda x, w: ops.linear(x, w), r(3, 4), r(4, 2))
    # one input feature, one unit: the products with an inner dimension of 1 (outer products, ops.math.mm)
    check_grad(ops.linear, r(5, 1), r(1, 3), r(3))
    check_grad(ops.linear, r(2, 5, 4), r(4, 1), r(1))


@pytest.mark.parametrize("sa,sb", [((7, 1), (1, 5)), ((2, 7, 1), (2, 1, 5)), ((2, 7, 1), (1, 5)), ((1, 1), (1, 1))])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_mm_with_an_inner_dimension_of_one_equals_matmul(sa, sb, dtype):
    """ops.math.mm takes an inner dimension of 1 away from np.matmul (its own loop, ~10x slower than BLAS):
    the same numbers, with and without ``out`` (contiguous or not), F-ordered operands included; the other
    shapes are np.matmul's."""
    from lamina.ops.math import mm
    a, b = r(*sa).astype(dtype), r(*sb).astype(dtype)
    want = np.matmul(a, b)
    for a_ in (a, np.asfortranarray(a)):
        np.testing.assert_array_equal(mm(np, a_, b), want)
        out = np.empty_like(want)
        assert mm(np, a_, b, out=out) is out
        np.testing.assert_array_equal(out, want)
        strided = np.empty(want.shape[:-1] + (2 * want.shape[-1],), dtype)[..., ::2]
        mm(np, a_, b, out=strided)
        np.testing.assert_array_equal(strided, want)
    check_grad(ops.matmul, r(*sa), r(*sb))


@pytest.mark.parametrize("fn", [ops.sum, ops.mean, ops.math.var, ops.max, ops.min], ids=lambda f: f.__name__)
@pytest.mark.parametrize("axis,keepdims", [(None, False), (0, False), (1, True), ((0, 2), False), (-1, True)])
def test_reductions(fn, axis, keepdims):
    check_grad(lambda x: fn(x, axis=axis, keepdims=keepdims), r(3, 4, 5))


def test_max_ties_share_gradient():
    from lamina import Tensor
    x = Tensor(np.array([1.0, 3.0, 3.0]), requires_grad=True)
    ops.max(x).backward()
    np.testing.assert_allclose(x.grad, [0, 0.5, 0.5])


def test_shape_ops():
    check_grad(lambda x: ops.reshape(x, (6, 4)), r(2, 3, 4))
    check_grad(lambda x: ops.transpose(x, (2, 0, 1)), r(2, 3, 4))
    check_grad(lambda x: x[1:, ::2], r(4, 5))
    check_grad(lambda x: x[np.array([0, 2, 2, 1])], r(3, 4))           # repeated integer index adds
    check_grad(lambda x: x[:, np.array([1, 1, 0])], r(3, 4))
    check_grad(lambda a, b: ops.concatenate([a, b], axis=1), r(2, 3), r(2, 5))
    check_grad(lambda a, b: ops.stack([a, b], axis=1), r(2, 3), r(2, 3))
    check_grad(lambda x: ops.pad(x, [(1, 2), (0, 1)]), r(3, 2))
    check_grad(lambda x: ops.split(x, [1, 3], axis=1)[2] * 2 + ops.split(x, [1, 3], axis=1)[0], r(2, 5))
    check_grad(lambda x: ops.broadcast_to(x, (4, 3, 2)), r(3, 1))
    check_grad(lambda x: ops.tile(x, (2, 3)), r(2, 2))
    check_grad(lambda x: ops.repeat(x, 3, axis=1), r(2, 2, 3))
    check_grad(lambda x: ops.expand_dims(ops.squeeze(x, 1), 0), r(3, 1, 2))


def test_check_grad_catches_a_wrong_backward():
    from lamina.tensor import Op

    class WrongSquare(Op):
        def forward(self, x):
            self.saved = (x,)
            return x * x

        def backward(self, gy):
            return gy * self.saved[0]  # missing factor 2

    with pytest.raises(AssertionError, match="WrongSquare|index"):
        check_grad(lambda x: WrongSquare.apply(x), r(3), name="WrongSquare")


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_select_is_where_to_the_bit(dtype):
    """ops.math.select (np.where without its per-element branch, through integer masks) picks exactly the
    words np.where picks: NaN payloads, infinities and -0.0 included; other cases fall back to np.where."""
    from lamina.ops.math import select
    rng = np.random.default_rng(3)
    a = rng.standard_normal(1000).astype(dtype)
    b = rng.standard_normal(1000).astype(dtype)
    a[:4] = [np.nan, np.inf, -np.inf, -0.0]
    b[4:8] = [np.nan, np.inf, -np.inf, -0.0]
    cond = rng.random(1000) > 0.5
    want = np.where(cond, a, b)
    got = select(np, cond, a, b)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_array_equal(got.view(f"u{a.itemsize}"), want.view(f"u{a.itemsize}"))
    # strided operands, 0-d, and the fallbacks (broadcasting, a scalar, integers) agree with np.where too
    np.testing.assert_array_equal(select(np, cond[::2], a[::2], b[::2]), np.where(cond[::2], a[::2], b[::2]))
    np.testing.assert_array_equal(select(np, np.array(True), a[5:6].reshape(()), b[5:6].reshape(())), a[5])
    np.testing.assert_array_equal(select(np, cond.reshape(10, 100), a.reshape(10, 100), b[:100]),
                                  np.where(cond.reshape(10, 100), a.reshape(10, 100), b[:100]))
    np.testing.assert_array_equal(select(np, cond, a, 0), np.where(cond, a, 0))
    ai = (a[8:] * 10).astype(int)
    np.testing.assert_array_equal(select(np, cond[8:], ai, -ai), np.where(cond[8:], ai, -ai))


@pytest.mark.parametrize("alpha", [0.2, 0.0, -0.5, 1.0, 3.0, float("nan")])
def test_leaky_relu_forward_equals_where_for_any_slope(alpha):
    """LeakyReLU's forward as max(x, alpha x) (min for alpha > 1) gives np.where's values, NaN and -0.0 too."""
    x = np.array([-2.0, -0.0, 0.0, 1.5, np.nan, -np.inf, np.inf], dtype=np.float32)
    got = ops.leaky_relu(x, negative_slope=alpha).numpy()
    with np.errstate(invalid="ignore"):
        want = np.where(x > 0, x, x * np.float32(alpha))
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("shape", [(300, 128), (100, 96), (70, 3), (65, 512), (65, 1000), (10, 128), (200, 1)])
def test_row_max_and_row_sums_equal_numpys_reductions(shape):
    """ops.math.row_max (halving by elementwise maxima, then a reduction across the transposed remainder) gives
    NumPy's row maxima exactly, NaN and -inf rows included; sum_rows of the transpose (a GEMV) its row sums to
    rounding."""
    from lamina.ops.math import row_max, sum_rows
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape).astype(np.float32)
    x[0] = -np.inf
    x[1, 0] = np.nan
    np.testing.assert_array_equal(row_max(np, x), x.max(axis=1))
    y = np.abs(x[2:])
    np.testing.assert_allclose(sum_rows(np, y.T), y.sum(axis=1), rtol=1e-5)


@pytest.mark.parametrize("fn", [ops.sigmoid, ops.softplus, ops.log_sigmoid, ops.silu, ops.gelu, ops.hard_silu, ops.elu,
                                ops.leaky_relu, ops.relu6, ops.selu], ids=lambda f: f.__name__)
def test_activations_of_a_scalar_equal_those_of_an_array(fn):
    """A 0-d input (a NumPy scalar or 0-d array) goes through the same formulas as any array."""
    for v in (np.float32(2.0), np.float32(-1.5), np.array(0.75)):
        np.testing.assert_allclose(fn(v).numpy(), fn(np.array([v])).numpy()[0], rtol=1e-6)


@pytest.mark.parametrize("shape,axis", [((4, 5, 6, 7), (1, 2)), ((3, 9, 4), 1), ((3, 9, 4), (0, 1)), ((2, 1, 1, 3), (1, 2)),
                                        ((2, 7, 5), -1), ((5, 4), None)])
def test_max_min_over_a_run_of_axes_equal_numpy_with_shared_gradients(shape, axis):
    """max/min over consecutive middle axes (global max pooling) halve the run with elementwise passes
    (ops.math.run_extreme): NumPy's values exactly (NaN propagating), ties sharing the gradient."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(np.float32)
    x.reshape(-1)[3] = x.reshape(-1)[4]
    for fn, ref in ((ops.max, np.max), (ops.min, np.min)):
        xt = Tensor(x, requires_grad=True)
        y = fn(xt, axis=axis)
        (g,) = grad(ops.sum(y * y), [xt])
        np.testing.assert_array_equal(y.numpy(), ref(x, axis=axis))
        yk = ref(x, axis=axis, keepdims=True)
        tie = x == yk
        np.testing.assert_allclose(g, tie * (2 * yk / tie.sum(axis=axis, keepdims=True)), rtol=1e-6)
    xn = x.copy()
    xn.reshape(-1)[0] = np.nan
    np.testing.assert_array_equal(ops.max(xn, axis=axis).numpy(), np.max(xn, axis=axis))


# ----------------------------------------------------------------------------- mm_tn: weight gradients in chunks
from lamina import layers, threads, utils  # noqa: E402
from lamina.ops import math as M  # noqa: E402


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k,m,n", [(9000, 7, 5), (3 * 4096, 32, 32), (8191, 4, 4), (9000, 300, 300)])
def test_mm_tn_is_the_transposed_product(dtype, k, m, n):
    """a.T @ b in fixed chunks of rows added in order (where K spans two chunks or more and the product is small):
    within rounding of a float64 product, and the same bits on one thread and on three."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((k, m)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
    got = M.mm_tn(np, a, b)
    assert got.shape == (m, n) and got.dtype == dtype
    np.testing.assert_allclose(got, a.T.astype(np.float64) @ b, rtol=1e-4 if dtype == np.float32 else 1e-11,
                               atol=1e-3 if dtype == np.float32 else 1e-10)
    chunked = k >= 2 * M._TN_CHUNK and m * n <= M._TN_MAX_OUT
    with pytest.MonkeyPatch.context() as mp:
        widths = []
        real = threads.split_products
        mp.setattr(threads, "split_width", lambda *args: 3)
        mp.setattr(threads, "split_products", lambda body, *args, **kw: (widths.append(1), real(body, *args, **kw)))
        three = M.mm_tn(np, a, b)
    assert bool(widths) == chunked
    np.testing.assert_array_equal(three, got)


def _weight_grads(make, x, chunk, monkeypatch):
    monkeypatch.setattr(M, "_TN_CHUNK", chunk)
    layer = make()
    call = (lambda t: layer(t, t)) if isinstance(layer, layers.MultiHeadAttention) else layer
    call(x)
    xt = Tensor(x, requires_grad=True)
    y = call(xt)
    gy = np.random.default_rng(3).standard_normal(y.shape).astype(np.float32)
    return [np.asarray(g) for g in grad(y, list(layer.trainable_weights), grad_output=Tensor(gy))]


@pytest.mark.parametrize("make,shape", [
    (lambda: layers.Dense(6, activation="relu"), (40, 7, 9)),
    (lambda: layers.Dense(6, use_bias=False), (300, 9)),
    (lambda: layers.Conv2D(5, 1), (4, 8, 8, 16)),
    (lambda: layers.MultiHeadAttention(2, 4), (20, 10, 6)),
    (lambda: layers.LSTM(4), (30, 5, 3)),
    (lambda: layers.GRU(4, reset_after=False), (30, 5, 3)),
])
def test_weight_gradients_through_mm_tn(make, shape, monkeypatch):
    """The layers whose weight gradient is a long sum over rows (Dense, a 1x1 convolution's kept columns, the
    attention projections' and the recurrent kernels' products): chunks of 16 rows (forced) give the one-product
    values within rounding, seeded alike."""
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    utils.set_random_seed(7)
    whole = _weight_grads(make, x, 1 << 30, monkeypatch)
    utils.set_random_seed(7)
    chunked = _weight_grads(make, x, 16, monkeypatch)
    for u, v in zip(chunked, whole):
        np.testing.assert_allclose(u, v, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("gshape,shape", [((6, 5, 4, 8), (8,)), ((6, 5, 4, 8), (1, 1, 8)), ((6, 5, 4, 8), (4, 8)),
                                          ((6, 5, 4, 8), (1, 4, 1)), ((6, 5, 4, 8), (5, 1, 8)), ((300, 7), (7,)),
                                          ((6, 5, 4, 8), (1, 5, 4, 8)), ((0, 3), (3,)), ((6, 5), ())])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_unbroadcast_sums_what_broadcasting_stretched(gshape, shape, dtype):
    """The gradient summed back to its operand's shape: leading axes as a product with ones (float arrays), any
    other pattern by NumPy's sum; the sums within rounding of float64's, the shape and dtype kept."""
    g = (np.random.default_rng(0).standard_normal(gshape) * 10).astype(dtype)
    want = g.astype(np.float64).sum(axis=tuple(range(len(gshape) - len(shape))), keepdims=False)
    want = want.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1), keepdims=True).reshape(shape)
    for arr in (g, np.asfortranarray(g)):
        got = M.unbroadcast(arr, shape)
        assert got.shape == shape and got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("m,o", [(262147, 8), (65536, 32), (4099, 100), (40000, 3), (64, 10), (9000, 600)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sum_rows_of_narrow_rows(m, o, dtype):
    """Column sums (bias gradients): narrow rows of a large matrix k at a time (the GEMV over (M / k, k O), the k
    partial sums then added, the rows past a multiple of k on their own): within rounding of float64's sums."""
    g = np.random.default_rng(0).standard_normal((m, o)).astype(dtype)
    got = M.sum_rows(np, g)
    assert got.shape == (o,) and got.dtype == dtype
    np.testing.assert_allclose(got, g.astype(np.float64).sum(axis=0), rtol=1e-5, atol=2e-3 if dtype == np.float32
                               else 1e-9)


@pytest.mark.parametrize("ashape,bshape", [((300, 40, 8), (8,)), ((8,), (300, 40, 8)), ((20, 9, 9, 16), (1, 1, 16)),
                                           ((5000, 7), (1, 7)), ((3, 4), (4,))])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_of_a_bias_vector(ashape, bshape, dtype):
    """A bias over the last axis added to a large array (either operand) through rows_op's tiled rows: NumPy's sums
    to the bit (one addition an element, the operands in either order), and the gradients of both operands."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(ashape).astype(dtype), rng.standard_normal(bshape).astype(dtype)
    at, bt = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
    y = ops.add(at, bt)
    np.testing.assert_array_equal(np.asarray(y.data), a + b)
    gy = rng.standard_normal(y.shape).astype(dtype)
    ga, gb = grad(y, [at, bt], grad_output=Tensor(gy))
    for g, shape in ((ga, ashape), (gb, bshape)):
        lead = len(gy.shape) - len(shape)
        want = gy.astype(np.float64).sum(axis=tuple(range(lead)) + tuple(
            i + lead for i, n in enumerate(shape) if n == 1 and gy.shape[i + lead] != 1), keepdims=False)
        np.testing.assert_allclose(np.asarray(g.data).reshape(-1), want.reshape(-1), rtol=1e-5, atol=1e-3)


def test_divide_and_arctan2_slopes_where_squares_underflow():
    # b^2 and a^2 + b^2 underflow to 0 in float32 below ~1e-19: the slopes were NaN or infinite where they are finite
    a = Tensor(np.array([0.0, 1e-30, 3e-20], np.float32), requires_grad=True)
    b = Tensor(np.array([1e-30, 1e-30, 1e-20], np.float32), requires_grad=True)
    ga, gb = grad(ops.sum(a / b), [a, b])
    np.testing.assert_allclose(gb, [0.0, -1e30, -3e20], rtol=1e-6)
    np.testing.assert_allclose(ga, 1 / b.numpy(), rtol=1e-6)
    x = Tensor(np.array([0.0, 0.0, 1e-30, 3.0], np.float32), requires_grad=True)
    y = Tensor(np.array([0.0, 1e-30, 1e-30, 4.0], np.float32), requires_grad=True)
    gx, gy = grad(ops.sum(ops.arctan2(x, y)), [x, y])
    np.testing.assert_allclose(gx, [0.0, 1e30, 5e29, 4 / 25], rtol=1e-6)    # 0 at the origin (undefined; torch's)
    np.testing.assert_allclose(gy, [0.0, 0.0, -5e29, -3 / 25], rtol=1e-6)


def test_std_of_constant_and_extreme_rows():
    # sqrt(var): its slope (x - mean) / (n std) was 0 / 0 (NaN) for a constant row, and the value inf where the
    # variance passes float32's range; both as torch gives them now
    x = Tensor(np.array([[2.0, 2.0, 2.0, 2.0], [1e-30, 0, 0, 0], [1e20, 1e20, 0, 0], [1.0, 2.0, 3.0, 4.0]],
                        np.float32), requires_grad=True)
    s = ops.std(x, axis=1)
    np.testing.assert_allclose(s.numpy(), [0.0, np.sqrt(3) / 4 * 1e-30, 5e19, np.sqrt(1.25)], rtol=1e-6)
    (g,) = grad(ops.sum(s), [x])
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g[0], 0.0)
    np.testing.assert_allclose(g[1], np.array([0.75, -0.25, -0.25, -0.25]) / np.sqrt(3), rtol=1e-5)
    np.testing.assert_allclose(g[3], (np.arange(1, 5) - 2.5) / (4 * np.sqrt(1.25)), rtol=1e-5)
    check_grad(lambda t: ops.std(t, axis=(0, 2), keepdims=True), np.random.default_rng(0).normal(size=(2, 3, 4)))
