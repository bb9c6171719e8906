"""lamina.ops.core (keras.ops outside numpy/nn/linalg/image) against real Keras 3 (torch backend):
values, gradients (torch autograd through keras.ops against lamina's backward), dtypes, and float64
numerical gradient checks for every differentiable op."""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
K = lazy_module("keras.ops")

import lamina  # noqa: E402
from lamina import ops as L  # noqa: E402
from lamina.testing import check_grad  # noqa: E402

RNG = np.random.default_rng(0)


def _np(x):
    if isinstance(x, lamina.Tensor):
        return x.numpy()
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _leaves(y):
    return list(y) if isinstance(y, (tuple, list)) else [y]


def compare(lfn, kfn, *inputs, grad=True, rtol=1e-5, atol=1e-5):
    """Values of lfn(*lamina tensors) and kfn(*torch tensors) agree; with grad, so do the gradients
    of sum_i <w_i, y_i> (fixed random w) for every float input."""
    lin = [lamina.Tensor(a, requires_grad=grad and a.dtype.kind == "f") if isinstance(a, np.ndarray) else a
           for a in inputs]
    kin = [torch.tensor(a, requires_grad=grad and a.dtype.kind == "f") if isinstance(a, np.ndarray) else a
           for a in inputs]
    ly, ky = _leaves(lfn(*lin)), _leaves(kfn(*kin))
    assert len(ly) == len(ky)
    for a, b in zip(ly, ky):
        np.testing.assert_allclose(_np(a), _np(b), rtol=rtol, atol=atol)
        assert _np(a).dtype == _np(b).dtype, (_np(a).dtype, _np(b).dtype)
    if not grad:
        return
    ws = [RNG.standard_normal(_np(b).shape) for b in ky]
    lsum = sum((a * lamina.Tensor(w.astype(_np(a).dtype))).sum() for a, w in zip(ly, ws) if _np(a).dtype.kind == "f")
    ksum = sum((b * torch.tensor(w.astype(_np(b).dtype))).sum() for b, w in zip(ky, ws) if _np(b).dtype.kind == "f")
    lsum.backward()
    ksum.backward()
    for a, b in zip(lin, kin):
        if isinstance(a, lamina.Tensor) and a.requires_grad:
            kg = np.zeros(a.shape) if b.grad is None else b.grad.numpy()
            lg = np.zeros(a.shape) if a.grad is None else a.grad
            np.testing.assert_allclose(lg, kg, rtol=rtol * 10, atol=atol * 10)


def f32(*shape, lo=-1.0, hi=1.0):
    return RNG.uniform(lo, hi, shape).astype(np.float32)


# ----------------------------------------------------------------------------- conversion and dtypes
@pytest.mark.parametrize("value", [1, 1.5, True, 2 ** 40, [1, 2], [1.0, 2], [True, False], [[1, 2], [3, 4.5]],
                                   np.arange(3), np.ones(2, np.float64), np.ones(2, np.float16),
                                   np.ones(2, np.uint8), np.float64(2.0), np.int64(3), [np.float64(1.0)]])
def test_convert_to_tensor_dtypes_match_keras(value):
    a, b = L.convert_to_tensor(value), K.convert_to_tensor(value)
    assert L.dtype(a) == K.dtype(b)
    np.testing.assert_array_equal(L.convert_to_numpy(a), K.convert_to_numpy(b))
    for dt in ("float32", "int32", "float64"):
        if dt == "int32" and isinstance(value, int) and value == 2 ** 40:
            continue
        assert L.dtype(L.convert_to_tensor(value, dtype=dt)) == dt


def test_conversion_helpers():
    x = lamina.Tensor(np.ones((2, 3), np.float32), requires_grad=True)
    assert L.convert_to_tensor(x) is x
    assert L.is_tensor(x) and not L.is_tensor(np.ones(2)) and not L.is_tensor(1.0)
    assert L.shape(x) == (2, 3) and all(type(n) is int for n in L.shape(x))
    assert L.shape(np.ones((4, 1))) == (4, 1)
    sym = lamina.Input((None, 3))
    assert L.shape(sym) == (None, None, 3) and L.dtype(sym) == "float32"
    assert L.dtype(x) == "float32" and L.dtype(np.ones(2, "int64")) == "int64"
    assert isinstance(L.convert_to_numpy(x), np.ndarray)
    np.testing.assert_array_equal(L.convert_to_numpy([np.ones(2), np.zeros(2)]), [[1, 1], [0, 0]])
    with pytest.raises(ValueError):
        L.convert_to_tensor([1], sparse=True)
    # a list of tensors is stacked and keeps the graph
    y = L.convert_to_tensor([x, x * 2])
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 3 * np.ones((2, 3)))


@pytest.mark.parametrize("src", ["int32", "int64", "bool", "float16", "float32", "float64"])
@pytest.mark.parametrize("dst", ["int32", "uint8", "bool", "float16", "float32", "float64"])
def test_cast_matches_keras(src, dst):
    x = np.array([-3.7, 0.0, 1.2, 250.9]).astype(src)
    a, b = L.cast(x, dst), K.cast(K.convert_to_tensor(x), dst)
    assert L.dtype(a) == K.dtype(b) == dst
    if not (src in ("float16", "float32", "float64") and dst == "uint8"):  # negative float -> uint8 is UB
        np.testing.assert_array_equal(L.convert_to_numpy(a), K.convert_to_numpy(b))


def test_cast_gradient_and_constant():
    compare(lambda x: L.cast(x, "float64") * 2, lambda x: K.cast(x, "float64") * 2, f32(3))
    x = lamina.Tensor(np.array([1.5, -2.5], np.float32), requires_grad=True)
    y = L.cast(x, "int32")
    assert y.dtype == np.int32 and not y.requires_grad


@pytest.mark.parametrize("src,dst", [("float32", "uint8"), ("float32", "int8"), ("float64", "float16"),
                                     ("int32", "int8"), ("int32", "uint8"), ("float32", "int32")])
def test_saturate_cast_matches_keras(src, dst):
    x = np.array([-1e10, -300, -5, 0, 7, 300, 1e10]).astype(src)
    if src == "float64":
        x = np.array([-1e40, -7e4, 3.5, 7e4, 1e40, np.inf], src)
    a, b = L.saturate_cast(x, dst), K.saturate_cast(K.convert_to_tensor(x), dst)
    assert L.dtype(a) == K.dtype(b)
    np.testing.assert_array_equal(L.convert_to_numpy(a), K.convert_to_numpy(b))


def test_stop_gradient():
    x = lamina.Tensor(np.ones(3, np.float32), requires_grad=True)
    y = (x * L.stop_gradient(x * 3)).sum()
    y.backward()
    np.testing.assert_allclose(x.grad, 3 * np.ones(3))
    assert not L.stop_gradient(x).requires_grad


# ----------------------------------------------------------------------------- control flow
def test_cond_and_switch():
    assert L.cond(L.convert_to_tensor(True), lambda: 1, lambda: 2) == 1
    assert L.cond(np.array(False), lambda: 1, lambda: 2) == 2
    for i in (-3, 0, 1, 7):  # index clipped like Keras
        a = L.switch(i, [lambda x: x + 1, lambda x: x * 10], np.ones(2, np.float32))
        b = K.switch(i, [lambda x: x + 1, lambda x: x * 10], K.ones(2))
        np.testing.assert_allclose(_np(a), _np(b))
    compare(lambda x: L.switch(1, [L.exp, L.sin if hasattr(L, "sin") else L.square], x),
            lambda x: K.switch(1, [K.exp, K.sin if hasattr(L, "sin") else K.square], x), f32(4))


def test_while_and_fori_loops_match_keras():
    a = L.while_loop(lambda i: i < 3, lambda i: i + 1, 0)
    b = K.while_loop(lambda i: i < 3, lambda i: i + 1, 0)
    assert int(a) == int(b) == 3 and L.dtype(a) == K.dtype(b) == "int32"  # a Python int stays weak
    a = L.while_loop(lambda i, j: i < 5, lambda i, j: (i + 1, j * 2), [0, 1.0], maximum_iterations=3)
    b = K.while_loop(lambda i, j: i < 5, lambda i, j: (i + 1, j * 2), [0, 1.0], maximum_iterations=3)
    assert isinstance(a, tuple) and [float(v) for v in a] == [float(v) for v in b] == [3.0, 8.0]
    assert L.fori_loop(0, 4, lambda i, v: v + i, 0) == K.fori_loop(0, 4, lambda i, v: v + i, 0) == 6
    # gradients flow through the recorded body: d/dx of x * 1.5^3
    compare(lambda x: L.while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, v * 1.5), (0, x))[1],
            lambda x: K.while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, v * 1.5), (0, x))[1], f32(3))
    compare(lambda x: L.fori_loop(1, 4, lambda i, v: v * v + i, x),
            lambda x: K.fori_loop(1, 4, lambda i, v: v * v + i, x), f32(3))


def test_scan_matches_keras():
    def step(ops):
        return lambda c, x: (c * 0.5 + x, ops.exp(c) * x)

    for reverse in (False, True):
        compare(lambda i, xs: L.scan(step(L), i, xs, reverse=reverse),
                lambda i, xs: K.scan(step(K), i, xs, reverse=reverse), f32(2), f32(5, 2))
    # nested carry and xs, length without xs
    a = L.scan(lambda c, x: ({"s": c["s"] + x[0], "p": c["p"] * x[1]}, x[0] - x[1]),
               {"s": np.float32(0), "p": np.float32(1)}, (np.arange(4.0, dtype=np.float32), np.full(4, 2, np.float32)))
    b = K.scan(lambda c, x: ({"s": c["s"] + x[0], "p": c["p"] * x[1]}, x[0] - x[1]),
               {"s": np.float32(0), "p": np.float32(1)}, (np.arange(4.0, dtype=np.float32), np.full(4, 2, np.float32)))
    for k in ("s", "p"):
        np.testing.assert_allclose(_np(a[0][k]), _np(b[0][k]))
    np.testing.assert_allclose(_np(a[1]), _np(b[1]))
    carry, ys = L.scan(lambda c, _: (c + 1, c), 0, length=3)
    assert int(carry) == 3 and list(_np(ys)) == [0, 1, 2]
    with pytest.raises(ValueError, match="length"):
        L.scan(lambda c, x: (c, x), 0)
    check_grad(lambda i, xs: L.scan(step(L), i, xs)[1], f32(2), f32(4, 2), name="scan")


def test_map_and_vectorized_map():
    compare(lambda x: L.map(lambda r: L.logsumexp(r) * r, x), lambda x: K.map(lambda r: K.logsumexp(r) * r, x), f32(3, 4))
    compare(lambda x: L.vectorized_map(lambda r: L.logsumexp(r) * r, x),
            lambda x: K.vectorized_map(lambda r: K.logsumexp(r) * r, x), f32(3, 4))
    out = L.map(lambda d: d["a"] + d["b"], {"a": np.ones((2, 3), np.float32), "b": np.ones((2, 3), np.float32)})
    np.testing.assert_allclose(_np(out), 2 * np.ones((2, 3)))


@pytest.mark.parametrize("n", [1, 2, 5, 8, 13])
@pytest.mark.parametrize("reverse", [False, True])
def test_associative_scan_matches_keras(n, reverse):
    compare(lambda x: L.associative_scan(lambda a, b: a + b, x, reverse=reverse, axis=1),
            lambda x: K.associative_scan(lambda a, b: a + b, x, reverse=reverse, axis=1), f32(2, n))

    # a non-commutative associative operator: composing affine maps v -> a v + b
    def compose(ops):
        return lambda p, q: (p[0] * q[0], q[0] * p[1] + q[1])

    compare(lambda a, b: L.associative_scan(compose(L), (a, b), reverse=reverse),
            lambda a, b: K.associative_scan(compose(K), (a, b), reverse=reverse), f32(n, 2), f32(n, 2))
    if n in (5, 8):
        check_grad(lambda a, b: L.associative_scan(compose(L), (a, b), reverse=reverse)[1], f32(n, 2), f32(n, 2),
                   name="associative_scan")


def test_custom_gradient_uses_the_users_gradient():
    # Keras's documented form, called as on the torch backend: grad(*args, upstream=...)
    @L.custom_gradient
    def log1pexp(x):
        e = L.exp(x)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            return upstream * (1.0 - 1.0 / (1 + e))
        return L.log(1 + e), grad

    x = lamina.Tensor(np.array([0.0, 1.0, 100.0], np.float32), requires_grad=True)
    log1pexp(x).sum().backward()
    np.testing.assert_allclose(x.grad, 1 / (1 + np.exp(-np.array([0.0, 1.0, 100.0]))), rtol=1e-6)

    # a gradient that is NOT the true one proves backward calls the user's function (both conventions)
    @L.custom_gradient
    def twice(x, y):
        return x * y, lambda upstream: (upstream * 10.0, upstream * 0.0 + 7.0)

    @L.custom_gradient
    def twice_torch_style(x, y):
        def grad(*args, upstream):
            assert len(args) == 2
            return upstream * 10.0, upstream * 0.0 + 7.0
        return x * y, grad

    for fn in (twice, twice_torch_style):
        a = lamina.Tensor(np.ones(2, np.float32), requires_grad=True)
        b = lamina.Tensor(np.full(2, 3.0, np.float32), requires_grad=True)
        out = fn(a, b)
        np.testing.assert_allclose(out.numpy(), [3.0, 3.0])
        (out * 2).sum().backward()
        np.testing.assert_allclose(a.grad, [20.0, 20.0])
        np.testing.assert_allclose(b.grad, [7.0, 7.0])


def test_custom_gradient_keras_reference_example():
    """Keras's docstring example gives the same gradient in lamina and in Keras (torch)."""
    def make(ops):
        @ops.custom_gradient
        def f(x):
            e = ops.exp(x)

            def grad(*args, upstream=None):
                if upstream is None:
                    (upstream,) = args
                return ops.multiply(upstream, 1.0 - 1.0 / ops.add(1.0, e))
            return ops.log(1 + e), grad
        return f

    compare(make(L), make(K), f32(5, lo=-3, hi=3))


# ----------------------------------------------------------------------------- segments, scatter, slices
@pytest.mark.parametrize("kind", ["sum", "max", "min", "prod"])
def test_segment_ops_match_keras(kind):
    data = f32(6, 3, lo=0.5, hi=2.0)
    data[3] = data[1]  # a tie in segment 1 (max/min share the gradient)
    ids = np.array([0, 1, 1, 1, 3, 3])
    lf, kf = getattr(L, "segment_" + kind), getattr(K, "segment_" + kind)
    compare(lambda d: lf(d, ids), lambda d: kf(d, torch.tensor(ids)), data)
    compare(lambda d: lf(d, ids, num_segments=3), lambda d: kf(d, torch.tensor(ids), num_segments=3), data)
    compare(lambda d: lf(d, ids - 1, num_segments=6), lambda d: kf(d, torch.tensor(ids - 1), num_segments=6), data)
    pos = RNG.uniform(0.5, 2, (7, 2)) * RNG.choice([-1, 1], (7, 2))
    check_grad(lambda d: lf(d, np.array([0, 0, 2, 2, 2, 1, 0]), num_segments=3), pos, name="segment_" + kind)
    if kind == "sum":
        a = L.segment_sum(np.array([1, 2, 3], np.int32), np.array([0, 0, 1]))
        assert a.dtype == np.int32 and list(a.numpy()) == [3, 3]


def test_segment_prod_gradient_with_zeros():
    d = np.array([2.0, 0.0, 3.0, 0.0, 0.0, 5.0, 4.0])
    ids = np.array([0, 0, 0, 1, 1, 1, 2])
    x = lamina.Tensor(d, requires_grad=True)
    L.segment_prod(x, ids).sum().backward()
    t = torch.tensor(d, requires_grad=True)
    torch.ones(3, dtype=torch.float64).scatter_reduce(0, torch.tensor(ids), t, "prod").sum().backward()
    np.testing.assert_allclose(x.grad, t.grad.numpy())


def test_scatter_matches_keras():
    idx = np.array([[0, 1], [2, 0], [0, 1]])
    compare(lambda v: L.scatter(idx, v, (3, 2, 4)), lambda v: K.scatter(torch.tensor(idx), v, (3, 2, 4)), f32(3, 4))
    check_grad(lambda v: L.scatter(idx, v, (3, 2, 4)), f32(3, 4), name="scatter")
    compare(lambda v: L.scatter(indices=np.array([[1], [3]]), values=v, shape=(5,)),
            lambda v: K.scatter(np.array([[1], [3]]), v, (5,)), f32(2))


@pytest.mark.parametrize("reduction", [None, "add", "max", "min", "mul"])
def test_scatter_update_matches_keras(reduction):
    x, u = f32(4, 3, lo=0.5, hi=2), f32(3, 3, lo=0.5, hi=2)
    idx = np.array([[0], [2], [3]])
    # Keras's torch max/min/mul write in place, which torch autograd refuses: values only there
    grad = reduction in (None, "add")
    compare(lambda a, b: L.scatter_update(a, idx, b, reduction=reduction),
            lambda a, b: K.scatter_update(a, torch.tensor(idx), b, reduction=reduction), x, u, grad=grad)
    check_grad(lambda a, b: L.scatter_update(a, idx, b, reduction), x, u, name=f"scatter_update {reduction}")
    # element indices
    idx2 = np.array([[0, 1], [3, 2]])
    compare(lambda a, b: L.scatter_update(a, idx2, b, reduction=reduction),
            lambda a, b: K.scatter_update(a, torch.tensor(idx2), b, reduction=reduction), x, f32(2, lo=0.5, hi=2),
            grad=grad)


def test_slice_and_slice_update_match_keras():
    x = f32(4, 5, 3)
    compare(lambda a: L.slice(a, [1, 2, 0], [2, 3, 3]), lambda a: K.slice(a, [1, 2, 0], [2, 3, 3]), x)
    compare(lambda a: L.slice(a, start_indices=np.array([0, 1, 1]), shape=np.array([4, 1, 2])),
            lambda a: K.slice(a, torch.tensor([0, 1, 1]), torch.tensor([4, 1, 2])), x)
    compare(lambda a, u: L.slice_update(a, [1, 0, 1], u), lambda a, u: K.slice_update(a, [1, 0, 1], u), x, f32(2, 3, 2))
    check_grad(lambda a, u: L.slice_update(a, (2, 1, 0), u), x, f32(2, 2, 3), name="slice_update")


def test_unstack_and_top_k():
    x = f32(3, 4)
    for axis in (0, 1, -1):
        compare(lambda a: L.unstack(a, axis=axis), lambda a: K.unstack(a, axis=axis), x)
    assert len(L.unstack(x, num=3)) == 3
    xs = RNG.permutation(40).reshape(4, 10).astype(np.float32)  # distinct values: one right order
    for k in (1, 3, 10):
        compare(lambda a: L.top_k(a, k), lambda a: K.top_k(a, k), xs)
    compare(lambda a: L.top_k(x=a, k=2, sorted=True), lambda a: K.top_k(a, 2), xs[:, :5])
    check_grad(lambda a: L.top_k(a, 3)[0], RNG.permutation(30).reshape(2, 3, 5) / 7.0, name="top_k")
    t = np.array([0, 3, 9, 5])
    for k in (1, 2, 5):
        np.testing.assert_array_equal(L.in_top_k(t, xs, k).numpy(), _np(K.in_top_k(t, K.convert_to_tensor(xs), k)))
    ties = np.array([[1.0, 2.0, 2.0, 0.0]], np.float32)
    assert L.in_top_k(np.array([2]), ties, 1).numpy()[0] == bool(_np(K.in_top_k(np.array([2]), K.convert_to_tensor(ties), 1))[0])


# ----------------------------------------------------------------------------- math
@pytest.mark.parametrize("name,lo,hi", [("rsqrt", 0.2, 3), ("erf", -3, 3), ("erfc", -3, 5), ("erfinv", -0.99, 0.99)])
def test_special_functions_match_keras(name, lo, hi):
    x = f32(50, lo=lo, hi=hi)
    compare(getattr(L, name), getattr(K, name), x, rtol=1e-5, atol=1e-6)
    x64 = RNG.uniform(lo, hi, 40)
    compare(getattr(L, name), getattr(K, name), x64, rtol=1e-12, atol=1e-13)
    check_grad(getattr(L, name), RNG.uniform(lo, hi, 12), name=name)
    for dt in ("int32", "int64", "bool", "float16", "float32", "float64"):
        v = np.array([0, 1, 0]).astype(dt) if name != "rsqrt" else np.array([1, 4, 1]).astype(dt)
        assert L.dtype(getattr(L, name)(v)) == K.dtype(getattr(K, name)(K.convert_to_tensor(v))), dt


def test_special_function_edges():
    np.testing.assert_array_equal(L.erfinv(np.array([-1.0, 1.0, 0.0])).numpy(), [-np.inf, np.inf, 0.0])
    assert np.isnan(L.erfinv(np.array([1.5])).numpy()[0])
    big = np.array([6.0, 10.0, 26.0])
    np.testing.assert_allclose(L.erfc(big).numpy(), _np(K.erfc(torch.tensor(big))), rtol=1e-12)
    np.testing.assert_allclose(L.erf(-big).numpy(), -1.0)


@pytest.mark.parametrize("axis,keepdims", [(None, False), (0, False), (1, True), ((0, 2), False), (-1, True)])
def test_logsumexp_matches_keras(axis, keepdims):
    x = f32(3, 4, 5, lo=-30, hi=30)
    compare(lambda a: L.logsumexp(a, axis=axis, keepdims=keepdims),
            lambda a: K.logsumexp(a, axis=axis, keepdims=keepdims), x, rtol=1e-5, atol=1e-4)
    check_grad(lambda a: L.logsumexp(a, axis, keepdims), RNG.standard_normal((3, 4, 5)), name="logsumexp")
    for dt in ("int32", "bool", "float16", "float64"):
        v = np.array([[0, 1], [1, 0]]).astype(dt)
        assert L.dtype(L.logsumexp(v)) == K.dtype(K.logsumexp(K.convert_to_tensor(v))), dt


def test_logdet_and_cdist_match_keras():
    a = RNG.standard_normal((3, 4, 4))
    spd = a @ np.swapaxes(a, -1, -2) + 4 * np.eye(4)
    compare(L.logdet, K.logdet, spd.astype(np.float32), rtol=1e-4)
    check_grad(L.logdet, spd, name="logdet")
    assert np.isnan(L.logdet(np.array([[0.0, 1.0], [1.0, 0.0]])).numpy())
    compare(L.cdist, K.cdist, f32(5, 3), f32(4, 3))
    compare(L.cdist, K.cdist, f32(2, 5, 3), f32(4, 3))
    compare(L.cdist, K.cdist, f32(2, 1, 5, 3), f32(3, 4, 3))
    check_grad(L.cdist, RNG.standard_normal((2, 4, 3)), RNG.standard_normal((3, 3)), name="cdist")
    assert L.cdist(np.ones((2, 3), np.int32), np.zeros((4, 3), np.int32)).dtype == np.float32


def test_extract_sequences_and_rearrange():
    x = f32(2, 17)
    for length, stride in ((4, 3), (5, 5), (17, 1), (3, 7)):
        compare(lambda a: L.extract_sequences(a, length, stride), lambda a: K.extract_sequences(a, length, stride), x)
    check_grad(lambda a: L.extract_sequences(a, 4, 2), RNG.standard_normal((2, 9)), name="extract_sequences")
    t = f32(2, 6, 4)
    for pattern, kw in (("a b c -> c (a b)", {}), ("a (h w) c -> a h w c", {"h": 2}), ("a b c -> (c a) b", {}),
                        ("a (h w) c -> (w a) c h", {"w": 3}), ("a b c -> a b c", {})):
        compare(lambda v: L.rearrange(v, pattern, **kw), lambda v: K.rearrange(v, pattern, **kw), t)
    check_grad(lambda v: L.rearrange(v, "a (h w) c -> (w a) c h", w=3), RNG.standard_normal((2, 6, 4)), name="rearrange")
    with pytest.raises(ValueError):
        L.rearrange(t, "a b -> b a")


# ----------------------------------------------------------------------------- FFT and STFT
def test_fft_family_matches_keras():
    re, im = f32(3, 4, 6), f32(3, 4, 6)
    for name in ("fft", "fft2", "ifft2"):
        compare(lambda r, i: getattr(L, name)((r, i)), lambda r, i: getattr(K, name)((r, i)), re, im, rtol=1e-4, atol=1e-5)
        check_grad(lambda r, i: L.concatenate(list(getattr(L, name)((r, i))), axis=-1) if hasattr(L, "concatenate")
                   else getattr(L, name)((r, i))[0], RNG.standard_normal((2, 3, 4)), RNG.standard_normal((2, 3, 4)),
                   name=name)
    for n in (None, 4, 8, 11):
        compare(lambda x: L.rfft(x, n), lambda x: K.rfft(x, n), f32(2, 8), rtol=1e-4, atol=1e-5)
        check_grad(lambda x: L.rfft(x, fft_length=n)[0] * 2 + L.rfft(x, fft_length=n)[1], RNG.standard_normal((2, 7)),
                   name="rfft")
    for m, n in ((5, None), (5, 8), (5, 9), (5, 6), (4, 12)):
        compare(lambda r, i: L.irfft((r, i), n), lambda r, i: K.irfft((r, i), n), f32(2, m), f32(2, m), rtol=1e-4, atol=1e-5)
        check_grad(lambda r, i: L.irfft((r, i), fft_length=n), RNG.standard_normal((2, m)), RNG.standard_normal((2, m)),
                   name="irfft")
    assert L.rfft(np.arange(4))[0].dtype == np.float32
    with pytest.raises(ValueError, match="real and imaginary"):
        L.fft(np.ones(3, np.float32))


@pytest.mark.parametrize("length,stride,nfft,window,center", [
    (8, 4, 8, "hann", True), (8, 3, 16, "hamming", True), (6, 2, 8, None, False), (8, 2, 8, "hann", False)])
def test_stft_istft_match_keras(length, stride, nfft, window, center):
    x = f32(2, 40)
    compare(lambda a: L.stft(a, length, stride, nfft, window=window, center=center),
            lambda a: K.stft(a, length, stride, nfft, window=window, center=center), x, rtol=1e-4, atol=1e-5)
    check_grad(lambda a: L.stft(a, length, stride, nfft, window, center)[1], RNG.standard_normal((1, 30)), name="stft")
    re, im = (_np(v) for v in K.stft(K.convert_to_tensor(x), length, stride, nfft, window=window, center=center))
    for out_len in (None, 36):
        compare(lambda r, i: L.istft((r, i), length, stride, nfft, length=out_len, window=window, center=center),
                lambda r, i: K.istft((r, i), length, stride, nfft, length=out_len, window=window, center=center),
                re, im, rtol=1e-4, atol=1e-4)
    check_grad(lambda r, i: L.istft((r, i), length, stride, nfft, window=window, center=center),
               re[:1].astype(np.float64), im[:1].astype(np.float64), name="istft")


def test_view_as_complex_and_real():
    x = f32(3, 2)
    z = L.view_as_complex(x)
    assert L.dtype(z) == K.dtype(K.view_as_complex(K.convert_to_tensor(x))) == "complex64"
    np.testing.assert_allclose(z.numpy(), x[:, 0] + 1j * x[:, 1])
    back = L.view_as_real(z)
    np.testing.assert_array_equal(back.numpy(), x)
    assert L.dtype(back) == K.dtype(K.view_as_real(K.view_as_complex(K.convert_to_tensor(x))))


def test_flat_namespace_exports_core():
    for name in L.core.__all__:
        assert getattr(L, name) is getattr(L.core, name), name


# ----------------------------------------------------------------------------- device path
def _dev_run(fn, arrays, xp):
    """fn on Tensors moved to xp; output and float-input gradients as NumPy, all checked to be on xp."""
    from lamina import backend
    ts = [lamina.Tensor(backend.to_device(a, xp), requires_grad=a.dtype.kind == "f") for a in arrays]
    y = fn(*ts)
    gy = backend.to_device(np.random.default_rng(1).standard_normal(y.shape).astype(y.dtype), xp)
    y.backward(gy)
    out = [y.data] + [t.grad for t in ts if t.requires_grad]
    for a in out:
        assert backend.get_array_module(a) is xp, f"{type(a)} is not a device array"
    return [backend.to_numpy(a) for a in out]


DEVICE_CASES = {
    "segments": (lambda d: L.segment_max(d, np.array([0, 0, 2, 1]), num_segments=3) + L.segment_sum(d, np.array([0, 0, 2, 1]))
                 + L.segment_prod(d, np.array([0, 0, 2, 1])), lambda: [f32(4, 2, lo=0.5, hi=2)]),
    "scatter_slice": (lambda x, u: L.scatter_update(x, np.array([[0], [2]]), u, "max") + L.slice_update(x, [1, 0], u[:1])
                      + L.scatter(np.array([[1, 1]]), L.slice(x, [0, 0], [1, 1])[0], (4, 3)), lambda: [f32(4, 3), f32(2, 3)]),
    "top_k_logsumexp": (lambda x: L.top_k(x, 2)[0] * L.logsumexp(x, axis=1, keepdims=True)
                        + L.cast(L.in_top_k(np.array([0, 1, 2]), x, 2), "float32")[:, None],
                        lambda: [RNG.permutation(15).reshape(3, 5).astype(np.float32)]),
    "special": (lambda x: L.erf(x) + L.erfc(x) * L.erfinv(x * 0.5) + L.rsqrt(x + 2.0), lambda: [f32(6)]),
    "logdet_cdist": (lambda a, b: L.cdist(a, b) + L.logdet(L.matmul(a, L.transpose(a))),
                     lambda: [f32(3, 4), f32(2, 4)]),
    "fft_stft": (lambda x: L.stft(x, 8, 4, 8)[0].sum(axis=-1) + L.istft(L.stft(x, 8, 4, 8), 8, 4, 8)[..., :5].sum(axis=-1, keepdims=True)
                 + L.fft2((x[:, :4, None] * x[:, None, :4], x[:, :4, None] + x[:, None, :4]))[1].sum(axis=-1)[:, :1]
                 + L.irfft(L.rfft(x, 16), 16)[:, :1], lambda: [f32(2, 24)]),
    "control_flow": (lambda x: L.associative_scan(lambda a, b: a * b, x)
                     + L.scan(lambda c, v: (c + v, c * v), x[0], x)[1] + L.while_loop(lambda i, v: i < 2, lambda i, v: (i + 1, v * x), (0, x))[1]
                     + L.rearrange(x, "(a b) c -> (b a) c", a=2),
                     lambda: [f32(4, 3)]),
}


@pytest.mark.parametrize("name", sorted(DEVICE_CASES))
def test_core_ops_on_device_match_cpu(name, device_xp):
    fn, make = DEVICE_CASES[name]
    arrays = make()
    expected = _dev_run(fn, arrays, np)
    got = _dev_run(fn, arrays, device_xp)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, rtol=2e-4, atol=2e-5, err_msg=name)


def test_product_at_without_multiply_at():
    """The CuPy path of segment_prod / scatter_update(mul): products from sums of logs, signs and zeros."""
    from lamina.ops.special import product_at
    vals = np.array([2.0, -3.0, 0.5, -1.5, 0.0, 4.0, -2.0, -0.25])
    idx = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    expected = np.ones(5)
    np.multiply.at(expected, idx, vals)
    np.testing.assert_allclose(product_at(np, (5,), idx, vals, np.float64), expected, rtol=1e-12)
