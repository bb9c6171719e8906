"""keras.ops.nn in lamina: values and gradients against real Keras 3 (torch backend), numerical
gradient checks in float64, keyword calls by Keras's parameter names, result dtypes."""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import inspect  # noqa: E402
import json  # noqa: E402
import pathlib  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")
K = lazy_module("keras.ops")

from lamina import ops  # noqa: E402
from lamina.ops import nn as N  # noqa: E402
from lamina.tensor import Tensor, grad  # noqa: E402
from lamina.testing import check_grad  # noqa: E402

SIGS = json.loads((pathlib.Path(__file__).parent / "data" / "keras_ops_signatures.json").read_text())["nn"]


def _np(t):
    if isinstance(t, torch.Tensor):
        return t.detach().cpu().numpy()
    return np.asarray(t.numpy() if isinstance(t, Tensor) else t)


def both(name, args, kwargs=None, diff=(), seed=0, atol=1e-5, rtol=1e-5, out_index=None):
    """Run keras.ops.NAME and lamina.ops.nn.NAME on the same arguments; compare the outputs and the
    gradients (for the argument positions in ``diff``) against a random upstream gradient."""
    kwargs = kwargs or {}
    rng = np.random.default_rng(seed)
    targs = [torch.tensor(a, requires_grad=i in diff) if i in diff else a for i, a in enumerate(args)]
    ky = getattr(K, name)(*targs, **kwargs)
    largs = [Tensor(a, requires_grad=True) if i in diff else a for i, a in enumerate(args)]
    ly = getattr(N, name)(*largs, **kwargs)
    if out_index is not None:
        ky, ly = ky[out_index], ly[out_index]
    kv, lv = _np(ky), _np(ly)
    assert lv.shape == kv.shape, (name, lv.shape, kv.shape)
    assert str(lv.dtype) == str(kv.dtype).replace("torch.", ""), (name, lv.dtype, kv.dtype)
    np.testing.assert_allclose(lv, kv, atol=atol, rtol=rtol, err_msg=name)
    if diff:
        gy = rng.standard_normal(kv.shape).astype(kv.dtype)
        (ky * torch.tensor(gy)).sum().backward()
        lg = grad((ly * Tensor(gy)).sum(), [largs[i] for i in diff])
        for i, g in zip(diff, lg):
            kg = targs[i].grad
            kg = np.zeros(args[i].shape, args[i].dtype) if kg is None else _np(kg)
            g = np.zeros(args[i].shape, args[i].dtype) if g is None else _np(g)
            np.testing.assert_allclose(g, kg, atol=atol * 10, rtol=rtol * 10, err_msg=f"{name} grad of arg {i}")
    return lv


def away_from(x, points, gap=0.06):
    """x nudged so that no entry is within gap of a kink (finite differences are not valid there)."""
    for p in points:
        x = np.where(np.abs(x - p) < gap, x + 2 * gap, x)
    return x


# ----------------------------------------------------------------------------- the namespace
def test_every_keras_nn_function_exists_with_keras_signature():
    for name, sig in SIGS.items():
        fn = getattr(N, name)
        assert str(inspect.signature(fn)) == sig, name
        assert getattr(ops, name) is fn, f"lamina.ops.{name} is not the Keras function"
        assert fn.__doc__ and fn.__doc__.strip().splitlines()[0], name
    assert sorted(N.__all__) == sorted(SIGS)


# ----------------------------------------------------------------------------- activations
KINKS = (0.0, 0.5, -0.5, 1.0, -1.0, 3.0, -3.0, 0.3, 0.4, -0.4, 6.0)
ACTS = [
    ("relu", {}), ("relu6", {}), ("sigmoid", {}), ("sparse_sigmoid", {}), ("softplus", {}), ("softsign", {}),
    ("soft_shrink", {"threshold": 0.5}), ("sparse_plus", {}), ("silu", {}), ("swish", {}),
    ("squareplus", {"b": 3}), ("log_sigmoid", {}), ("leaky_relu", {"negative_slope": 0.1}), ("hard_sigmoid", {}),
    ("hard_silu", {}), ("hard_swish", {}), ("elu", {"alpha": 0.7}), ("selu", {}), ("gelu", {}),
    ("gelu", {"approximate": False}), ("celu", {"alpha": 0.8}), ("glu", {"axis": -1}), ("glu", {"axis": 0}),
    ("tanh_shrink", {}), ("hard_tanh", {}), ("hard_shrink", {"threshold": 0.4}),
    ("threshold", {"threshold": 0.3, "default_value": -2.0}), ("softmax", {}), ("softmax", {"axis": 0}),
    ("softmax", {"axis": (0, 1)}), ("softmax", {"axis": None}), ("log_softmax", {"axis": 1}),
    ("log_softmax", {"axis": None}),
]


def _act_input(seed=1, shape=(4, 3, 6)):
    x = np.random.default_rng(seed).uniform(-4, 8, shape)
    return away_from(x, KINKS).astype(np.float32)


@pytest.mark.parametrize("name,kw", ACTS, ids=[f"{n}-{k}" for n, k in ACTS])
def test_activation_value_and_gradient_match_keras(name, kw):
    x = _act_input()
    both(name, [x], kw, diff=(0,))
    fn = getattr(N, name)
    check_grad(lambda t: fn(t, **kw), x[:2, :2], name=name)


@pytest.mark.parametrize("name,kw", ACTS, ids=[f"{n}-{k}" for n, k in ACTS])
def test_activation_keyword_call(name, kw):
    x = _act_input(2)
    want = getattr(N, name)(x, **kw).numpy()
    got = getattr(N, name)(x=x, **kw).numpy()
    np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(got, _np(getattr(K, name)(x=x, **kw)), atol=1e-5, rtol=1e-5)


UNARY = sorted({n for n, _ in ACTS if n not in ("glu",)} | {"sparsemax"})


def _sparsemax_ref(x, axis):
    """Martins & Astudillo (2016): tau = (sum of the k largest - 1) / k, k the support size."""
    z = -np.sort(-x, axis=axis)
    cs = np.cumsum(z, axis=axis)
    r = np.arange(1, x.shape[axis] + 1).reshape([-1 if a == axis % x.ndim else 1 for a in range(x.ndim)])
    k = (z - (cs - 1) / r > 0).sum(axis=axis, keepdims=True)
    tau = (np.take_along_axis(cs, k - 1, axis=axis) - 1) / k
    return np.maximum(x - tau, 0)


@pytest.mark.parametrize("axis", [-1, 0])
def test_sparsemax_is_the_simplex_projection(axis):
    """Keras 3.15's sparsemax sums the cumulative sums over the support (so it is wrong whenever the
    support has two or more entries, e.g. its own docstring example); lamina follows the definition."""
    x = np.random.default_rng(8).standard_normal((3, 5, 4)).astype(np.float32)
    y = N.sparsemax(x, axis=axis).numpy()
    np.testing.assert_allclose(y, _sparsemax_ref(x.astype(np.float64), axis), atol=1e-6)
    np.testing.assert_allclose(y.sum(axis=axis), 1.0, atol=1e-6)
    np.testing.assert_allclose(N.sparsemax(x=np.array([-0.5, 0, 1, 0.5], np.float32)).numpy(), [0, 0, 0.75, 0.25])
    check_grad(lambda t: N.sparsemax(t, axis=axis), x[:2, :3])
    # where the support is one entry, Keras agrees
    one = np.array([[5.0, 0.0, 1.0], [0.1, 9.0, 0.2]], np.float32)
    both("sparsemax", [one], diff=(0,))


@pytest.mark.parametrize("name", UNARY)
def test_activation_dtypes_match_keras(name):
    """float16/32/64 keep their dtype; integers give float32 except relu/relu6/hard_tanh (integers), as
    Keras (where its torch backend has no integer kernel and raises, lamina gives float32)."""
    kw = {"threshold": 0.3, "default_value": 0.0} if name == "threshold" else {}
    for dt in ("int32", "int64", "bool", "float16", "float32", "float64"):
        x = np.array([[-2, 0, 1, 3]]).astype(dt)
        y = getattr(N, name)(x, **kw)
        try:
            want = keras.backend.standardize_dtype(getattr(K, name)(x, **kw).dtype)
        except Exception:  # noqa: BLE001 - torch lacks the integer kernel
            want = None
        if want is not None and dt != "bool":
            assert str(y.dtype) == want, (name, dt, y.dtype, want)
        elif dt.startswith("float"):
            assert str(y.dtype) == dt
        elif name in ("relu", "relu6", "hard_tanh", "threshold") and dt != "bool":
            assert str(y.dtype) == dt
        else:
            assert str(y.dtype) in ("float32", dt), (name, dt, y.dtype)
        if dt == "float16":
            ref = _np(getattr(K, name)(x.astype("float32"), **kw))
            np.testing.assert_allclose(y.numpy().astype(np.float32), ref, atol=1e-2, rtol=1e-2)


def test_gelu_default_is_approximate_and_flat_name_is_keras():
    x = np.linspace(-3, 3, 13).astype(np.float32)
    np.testing.assert_allclose(ops.gelu(x).numpy(), _np(torch.nn.functional.gelu(torch.tensor(x), approximate="tanh")),
                               atol=1e-6)
    assert ops.gelu is N.gelu


def test_activations_extreme_inputs_are_finite():
    x = np.array([-1e4, -50.0, 0.0, 50.0, 1e4], np.float32)
    for name in ("log_sigmoid", "softplus", "sigmoid", "silu", "celu", "squareplus", "sparse_plus", "tanh_shrink"):
        y = getattr(N, name)(x).numpy()
        assert np.all(np.isfinite(y)), name
        if name == "squareplus":   # (Keras's direct sum cancels to 0 at -1e4; lamina keeps the true 1e-4, see below)
            continue
        np.testing.assert_allclose(y, _np(getattr(K, name)(x)), rtol=1e-5, atol=1e-5, err_msg=name)
    s = N.sparsemax(np.array([[1e4, 0.0, -1e4]], np.float32)).numpy()
    np.testing.assert_allclose(s, [[1.0, 0.0, 0.0]])


def test_squareplus_keeps_its_digits_for_negative_inputs_and_shrinks_keep_nan():
    # (x + sqrt(x^2 + b)) / 2 at x = -88 subtracts two near-equal numbers: the float32 result lost 4 digits
    x = np.array([-1e30, -88.0, -3.0, -0.1, 0.0, 2.0, 1e30], np.float32)
    want = np.array([b / (np.sqrt(v * v + b) - v) / 2 if v < 0 else (v + np.sqrt(v * v + b)) / 2
                     for v, b in zip(x.astype(np.float64), [4.0] * len(x))])
    np.testing.assert_allclose(N.squareplus(x, b=4).numpy(), want, rtol=2e-7)
    check_grad(lambda t: ops.sum(N.squareplus(t, b=4)), np.array([-60.0, -5.0, -0.5, 0.3, 4.0]))
    v = Tensor(np.array([-88.0], np.float64), requires_grad=True)
    (g,) = grad(ops.sum(N.squareplus(v, b=4)), [v])
    s = np.sqrt(88.0 ** 2 + 4)
    np.testing.assert_allclose(g, [(1 - 88.0 / s) / 2], rtol=1e-9)
    nan = np.array([np.nan, 0.1, -2.0], np.float32)
    assert np.isnan(N.hard_shrink(nan, 0.5).numpy()[0]) and np.isnan(N.soft_shrink(nan, 0.5).numpy()[0])
    np.testing.assert_allclose(N.soft_shrink(nan, 0.5).numpy()[1:], [0.0, -1.5])
    np.testing.assert_allclose(N.hard_shrink(nan, 0.5).numpy()[1:], [0.0, -2.0])


# ----------------------------------------------------------------------------- encodings and statistics
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_one_hot_matches_keras(axis):
    x = np.array([[1, 3, 0], [2, -1, 3]], np.int32)
    both("one_hot", [x, 4], {"axis": axis})
    y = N.one_hot(x=x, num_classes=4, axis=axis, dtype="int32")
    np.testing.assert_array_equal(y.numpy(), _np(K.one_hot(x, 4, axis=axis, dtype="int32")))
    assert str(y.dtype) == "int32"


def test_multi_hot_matches_keras():
    x = np.array([[0, 4, 4], [1, 2, 0]], np.int32)
    both("multi_hot", [x, 5])
    both("multi_hot", [np.array([0, 3], np.int32), 5])
    y = N.multi_hot(inputs=x, num_tokens=5, dtype="int32")
    np.testing.assert_array_equal(y.numpy(), [[1, 0, 0, 0, 1], [1, 1, 1, 0, 0]])
    with pytest.raises(ValueError, match="num_classes"):
        N.multi_hot(x)


@pytest.mark.parametrize("axes,keepdims", [((0,), False), ([0, 2], True), (-1, False)])
def test_moments_match_keras(axes, keepdims):
    x = np.random.default_rng(3).standard_normal((4, 3, 5)).astype(np.float32)
    for i in (0, 1):
        both("moments", [x, axes], {"keepdims": keepdims}, diff=(0,), out_index=i)
    check_grad(lambda t: N.moments(t, axes, keepdims)[1], x[:2, :2, :3])
    m, v = N.moments(x=x, axes=axes, keepdims=keepdims)
    np.testing.assert_allclose(v.numpy(), np.var(x, axis=tuple(np.atleast_1d(axes)), keepdims=keepdims), rtol=1e-5)


def test_moments_dtypes():
    x16 = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float16) * 100
    m, v = N.moments(x16, [0])
    km, kv = K.moments(x16, [0])
    assert m.dtype == np.float16 and v.dtype == np.float16
    np.testing.assert_allclose(v.numpy().astype(np.float32), _np(kv).astype(np.float32), rtol=1e-3)
    m, v = N.moments(np.arange(6, dtype=np.int32).reshape(2, 3), 0)
    assert m.dtype == np.float32
    np.testing.assert_allclose(m.numpy(), [1.5, 2.5, 3.5])


def test_batch_normalization_matches_keras():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 4, 5)).astype(np.float32)
    mean, var = rng.standard_normal(4).astype(np.float32), rng.uniform(0.5, 2, 4).astype(np.float32)
    off, sc = rng.standard_normal(4).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    both("batch_normalization", [x, mean, var, 1, off, sc], {"epsilon": 1e-2}, diff=(0, 1, 2, 4, 5))
    both("batch_normalization", [x[:, 0], mean[:1].repeat(5), var[:1].repeat(5), -1], diff=(0,))
    y = N.batch_normalization(x=x, mean=mean, variance=var, axis=1, offset=off, scale=sc, epsilon=1e-2)
    np.testing.assert_allclose(y.numpy(), _np(K.batch_normalization(x, mean, var, 1, off, sc, 1e-2)), atol=1e-5)
    check_grad(lambda a, m, v, o, s: N.batch_normalization(a, m, v, 1, o, s), x[:2], mean, var, off, sc)


def test_layer_normalization_inner_axis():
    """axis=1 of a rank-3 input (Keras 3.15's torch backend fails here: it hands torch a normalized_shape
    that is not trailing), checked against the formula."""
    x = np.random.default_rng(5).standard_normal((2, 3, 4)).astype(np.float32)
    g = np.random.default_rng(6).standard_normal(3).astype(np.float32)
    m, v = x.mean(1, keepdims=True), x.var(1, keepdims=True)
    np.testing.assert_allclose(N.layer_normalization(x, g, axis=1, epsilon=1e-3).numpy(),
                               (x - m) / np.sqrt(v + 1e-3) * g[:, None], atol=1e-5)
    check_grad(lambda a, gg: N.layer_normalization(a, gg, axis=1), x, g)


@pytest.mark.parametrize("axis", [-1, (1, 2)])
def test_layer_normalization_matches_keras(axis):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    shape = tuple(x.shape[a] for a in np.atleast_1d(axis))
    g, b = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float32)
    both("layer_normalization", [x, g, b], {"axis": axis}, diff=(0, 1, 2))
    both("layer_normalization", [x], {"axis": axis, "epsilon": 0.1}, diff=(0,))
    check_grad(lambda a, gg, bb: N.layer_normalization(a, gg, bb, axis=axis), x, g, b)
    with pytest.warns(UserWarning):
        want = _np(K.layer_normalization(x, g, axis=axis, rms_scaling=True))
    np.testing.assert_allclose(N.layer_normalization(x, g, axis=axis, rms_scaling=True).numpy(), want, atol=1e-5)
    y16 = N.layer_normalization(x.astype(np.float16), axis=axis)
    assert y16.dtype == np.float16


@pytest.mark.parametrize("axis", [-1, (0, 2)])
def test_rms_normalization_matches_keras(axis):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 3, 4)).astype(np.float32)
    s = rng.standard_normal(4 if axis == -1 else (1, 1, 4)).astype(np.float32)
    if axis == -1:
        both("rms_normalization", [x, s], {"axis": axis}, diff=(0, 1))
    both("rms_normalization", [x], {"axis": axis, "epsilon": 0.01}, diff=(0,))
    np.testing.assert_allclose(N.rms_normalization(x=x, scale=s, axis=axis).numpy(),
                               x / np.sqrt(np.mean(x * x, axis=axis, keepdims=True) + 1e-7) * s, rtol=1e-5)
    check_grad(lambda a, ss: N.rms_normalization(a, ss, axis=axis), x, s)


@pytest.mark.parametrize("order,axis", [(2, -1), (1, 0), (3, -1), (2, (0, 1))])
def test_normalize_matches_keras(order, axis):
    x = np.random.default_rng(7).standard_normal((3, 4)).astype(np.float32)
    if not (order != 2 and isinstance(axis, tuple)):
        both("normalize", [x], {"axis": axis, "order": order}, diff=(0,))
    check_grad(lambda t: N.normalize(t, axis=axis, order=order), x)
    z = N.normalize(x=np.zeros((2, 3), np.float32), axis=-1, order=order, epsilon=1e-3).numpy()
    np.testing.assert_array_equal(z, 0.0)
    with pytest.raises(ValueError, match="order"):
        N.normalize(x, order=0)


# ----------------------------------------------------------------------------- cross-entropies
@pytest.mark.parametrize("from_logits", [False, True])
def test_binary_crossentropy_is_elementwise_as_keras(from_logits):
    rng = np.random.default_rng(9)
    t = rng.uniform(0, 1, (3, 4)).astype(np.float32)
    p = (rng.standard_normal((3, 4)) if from_logits else rng.uniform(0.05, 0.95, (3, 4))).astype(np.float32)
    y = both("binary_crossentropy", [t, p], {"from_logits": from_logits}, diff=(0, 1))
    assert y.shape == (3, 4)
    y2 = N.binary_crossentropy(target=t, output=p, from_logits=from_logits)
    np.testing.assert_array_equal(y2.numpy(), y)
    check_grad(lambda a, b: N.binary_crossentropy(a, b, from_logits), t, p)
    with pytest.raises(ValueError, match="same shape"):
        N.binary_crossentropy(t, p[:, :1])


@pytest.mark.parametrize("from_logits,axis", [(False, -1), (True, -1), (True, 0), (False, 1)])
def test_categorical_crossentropy_matches_keras(from_logits, axis):
    rng = np.random.default_rng(10)
    t = rng.dirichlet(np.ones(4), (3,)).astype(np.float32)
    if axis == 0:
        t = t.T.copy()
    p = rng.standard_normal(t.shape).astype(np.float32)
    if not from_logits:
        p = np.exp(p) / np.exp(p).sum(axis=axis, keepdims=True)
    both("categorical_crossentropy", [t, p], {"from_logits": from_logits, "axis": axis}, diff=(0, 1))
    got = N.categorical_crossentropy(target=t, output=p, from_logits=from_logits, axis=axis)
    assert got.shape == tuple(n for i, n in enumerate(p.shape) if i != axis % 2)
    check_grad(lambda a, b: N.categorical_crossentropy(a, b, from_logits, axis), t, p)


@pytest.mark.parametrize("from_logits,axis", [(False, -1), (True, -1), (True, 1)])
def test_sparse_categorical_crossentropy_matches_keras(from_logits, axis):
    rng = np.random.default_rng(11)
    p = rng.standard_normal((3, 4, 5)).astype(np.float32)
    if not from_logits:
        p = np.exp(p) / np.exp(p).sum(axis=axis, keepdims=True)
    lab_shape = tuple(n for i, n in enumerate(p.shape) if i != axis % 3)
    t = rng.integers(0, p.shape[axis], lab_shape).astype(np.int32)
    both("sparse_categorical_crossentropy", [t, p], {"from_logits": from_logits, "axis": axis}, diff=(1,))
    got = N.sparse_categorical_crossentropy(target=np.expand_dims(t, axis), output=p, from_logits=from_logits,
                                            axis=axis)
    np.testing.assert_allclose(got.numpy(), _np(K.sparse_categorical_crossentropy(t, p, from_logits, axis)),
                               atol=1e-5)
    check_grad(lambda b: N.sparse_categorical_crossentropy(t[:2], b, from_logits, axis), p[:2])


def test_crossentropy_dtypes():
    for dt in ("float16", "float64"):
        p = np.array([[0.2, 0.8]], dt)
        t = np.array([[0.0, 1.0]], dt)
        for name, args in (("binary_crossentropy", (t, p)), ("categorical_crossentropy", (t, p)),
                           ("sparse_categorical_crossentropy", (np.array([1]), p))):
            got = getattr(N, name)(*args)
            want = getattr(K, name)(*args)
            assert str(got.dtype) == keras.backend.standardize_dtype(want.dtype), (name, dt)
            np.testing.assert_allclose(got.numpy().astype(np.float64), _np(want).astype(np.float64), rtol=4e-3)


# ----------------------------------------------------------------------------- convolution and pooling
def _r(seed, *shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


CONVS = [  # (input shape channels-last, kernel shape, kwargs)
    ((2, 9, 3), (3, 3, 4), {}),
    ((2, 9, 3), (3, 3, 4), {"strides": 2, "padding": "same"}),
    ((2, 10, 3), (3, 3, 2), {"dilation_rate": 2, "padding": "same"}),
    ((2, 7, 6, 3), (3, 2, 3, 4), {"strides": (2, 1), "padding": "same"}),
    ((1, 8, 7, 2), (3, 3, 2, 3), {"dilation_rate": (2, 1)}),
    ((2, 6, 5, 4), (3, 3, 2, 6), {"padding": "same"}),                         # grouped: 2 groups
    ((1, 5, 6, 4, 2), (2, 3, 2, 2, 3), {}),                                     # 3-D
    ((1, 6, 5, 5, 2), (3, 3, 2, 2, 3), {"strides": 2, "padding": "same"}),
    ((1, 7, 5, 4, 4), (3, 2, 2, 2, 4), {"dilation_rate": (2, 1, 1), "padding": "same"}),  # 3-D grouped
]


@pytest.mark.parametrize("xs,ws,kw", CONVS)
def test_conv_matches_keras(xs, ws, kw):
    x, w = _r(1, *xs), _r(2, *ws) * 0.5
    both("conv", [x, w], kw, diff=(0, 1), atol=1e-4)
    xc = np.moveaxis(x, -1, 1).copy()
    both("conv", [xc, w], dict(kw, data_format="channels_first"), atol=1e-4)
    small = tuple(min(n, 5) for n in xs[:-1]) + xs[-1:]
    xs_ = x[tuple(slice(0, n) for n in small)][:1]
    check_grad(lambda a, b: N.conv(a, b, **kw), xs_, w, max_elements=64)


def test_conv_keywords_and_errors():
    x, w = _r(1, 2, 6, 6, 3), _r(2, 3, 3, 3, 2)
    y = N.conv(inputs=x, kernel=w, strides=1, padding="valid", data_format="channels_last", dilation_rate=1)
    np.testing.assert_allclose(y.numpy(), _np(K.conv(x, w)), atol=1e-4)
    with pytest.raises(ValueError, match="multiple"):
        N.conv(x, _r(2, 3, 3, 2, 2))
    with pytest.raises(ValueError, match="padding"):
        N.conv(x, w, padding="full")


DEPTHWISE = [
    ((2, 9, 3), (3, 3, 2), {}),
    ((2, 7, 6, 3), (3, 3, 3, 2), {"strides": 2, "padding": "same"}),
    ((1, 8, 7, 2), (2, 3, 2, 1), {"dilation_rate": 2}),
    ((1, 5, 5, 4, 2), (2, 2, 3, 2, 2), {"padding": "same"}),
    # multiplier 1, stride 1: the flat path (padded input as one flat array, blocks of rows)
    ((2, 9, 3), (3, 3, 1), {"padding": "same"}),
    ((3, 6, 5, 3), (3, 3, 3, 1), {"padding": "same"}),
    ((2, 7, 6, 5), (3, 2, 5, 1), {"dilation_rate": (2, 1)}),
    ((1, 4, 5, 3, 2), (2, 3, 2, 2, 1), {}),
]


@pytest.mark.parametrize("xs,ws,kw", DEPTHWISE)
def test_depthwise_and_separable_conv_match_keras(xs, ws, kw):
    x, w = _r(3, *xs), _r(4, *ws)
    both("depthwise_conv", [x, w], kw, diff=(0, 1), atol=1e-4)
    pw = _r(5, *((1,) * (len(xs) - 2) + (ws[-2] * ws[-1], 3)))
    both("separable_conv", [x, w, pw], kw, diff=(0, 1, 2), atol=1e-4)
    both("depthwise_conv", [np.moveaxis(x, -1, 1).copy(), w], dict(kw, data_format="channels_first"), atol=1e-4)
    check_grad(lambda a, b, c: N.separable_conv(a, b, c, **kw), x[:1], w, pw, max_elements=64)
    y = N.depthwise_conv(inputs=x, kernel=w, strides=1, padding="valid", data_format=None, dilation_rate=1)
    np.testing.assert_allclose(y.numpy(), _np(K.depthwise_conv(x, w)), atol=1e-4)


@pytest.mark.parametrize("m,strides,dilation,padding", [(1, 1, 1, "same"), (3, 1, 1, "same"), (1, 2, 1, "same"),
                                                      (2, 2, 1, "valid"), (1, (3, 2), (1, 2), "same"),
                                                      (1, 2, 2, "valid")])
def test_depthwise_conv_over_several_flat_blocks_matches_torch(m, strides, dilation, padding):
    """An input larger than one block of the flat path (so the blocks' seams and the flat tail are crossed):
    output and both gradients against torch's grouped convolution, in float64. A multiplier M > 1 runs the
    flat path over the input's channels repeated M times (output channel c*M + k reads channel c); a stride
    over the input's stride phases laid side by side (offsets into other phases)."""
    from lamina.ops.convolution import _pads
    rng = np.random.default_rng(11)
    x, w = rng.standard_normal((3, 61, 57, 8)), rng.standard_normal((3, 3, 8, m))
    xt, wt = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
    y = N.depthwise_conv(xt, wt, strides=strides, padding=padding, dilation_rate=dilation)
    assert y._op.flat
    gy = rng.standard_normal(y.shape)
    gx, gw = grad((y * Tensor(gy)).sum(), [xt, wt])
    s2 = (strides,) * 2 if isinstance(strides, int) else strides
    d2 = (dilation,) * 2 if isinstance(dilation, int) else dilation
    pads = [_pads(padding, x.shape[1 + a], 3, s2[a], d2[a]) for a in range(2)]
    tx = torch.tensor(np.moveaxis(x, -1, 1).copy(), requires_grad=True)
    # torch: out channel o of group o // M; lamina: out channel c*M + k is w[..., c, k]
    tw = torch.tensor(np.transpose(w.reshape(3, 3, 8 * m), (2, 0, 1))[:, None].copy(), requires_grad=True)
    txp = torch.nn.functional.pad(tx, (pads[1][0], pads[1][1], pads[0][0], pads[0][1]))
    ty = torch.nn.functional.conv2d(txp, tw, stride=s2, dilation=d2, groups=8)
    (ty * torch.tensor(np.moveaxis(gy, -1, 1).copy())).sum().backward()
    np.testing.assert_allclose(np.asarray(y.numpy()), np.moveaxis(ty.detach().numpy(), 1, -1), atol=1e-12)
    np.testing.assert_allclose(np.asarray(gx), np.moveaxis(tx.grad.numpy(), 1, -1), atol=1e-12)
    np.testing.assert_allclose(np.asarray(gw).reshape(3, 3, 8 * m), np.transpose(tw.grad.numpy()[:, 0], (1, 2, 0)),
                               atol=1e-10)


@pytest.mark.parametrize("c", [1000, 8200])
def test_depthwise_conv_with_many_channels_matches_torch(c):
    """Wide inputs (MobileNetV2 reaches 960 channels): the flat rows hold a whole number of positions, one when
    C exceeds _FLAT_ROW entries."""
    rng = np.random.default_rng(12)
    x, w = rng.standard_normal((2, 5, 4, c)), rng.standard_normal((3, 3, c, 1))
    xt, wt = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
    y = N.depthwise_conv(xt, wt, padding="same")
    gy = rng.standard_normal(y.shape)
    gx, gw = grad((y * Tensor(gy)).sum(), [xt, wt])
    tx = torch.tensor(np.moveaxis(x, -1, 1).copy(), requires_grad=True)
    tw = torch.tensor(np.transpose(w[..., 0], (2, 0, 1))[:, None].copy(), requires_grad=True)
    ty = torch.nn.functional.conv2d(tx, tw, padding=1, groups=c)
    (ty * torch.tensor(np.moveaxis(gy, -1, 1).copy())).sum().backward()
    np.testing.assert_allclose(np.asarray(y.numpy()), np.moveaxis(ty.detach().numpy(), 1, -1), atol=1e-12)
    np.testing.assert_allclose(np.asarray(gx), np.moveaxis(tx.grad.numpy(), 1, -1), atol=1e-12)
    np.testing.assert_allclose(np.asarray(gw)[..., 0], np.transpose(tw.grad.numpy()[:, 0], (1, 2, 0)), atol=1e-10)


CONV_T = [
    ((2, 5, 3), (3, 4, 3), {}),
    ((2, 5, 3), (3, 4, 3), {"strides": 2, "padding": "same"}),
    ((2, 5, 3), (4, 2, 3), {"strides": 3, "padding": "valid", "output_padding": 1}),
    ((2, 4, 3, 3), (3, 3, 2, 3), {"strides": 2, "padding": "same"}),
    ((1, 4, 4, 2), (3, 2, 3, 2), {"strides": (2, 1), "dilation_rate": 1, "output_padding": (1, 0)}),
    ((1, 3, 4, 3, 2), (3, 2, 2, 3, 2), {}),
    ((1, 3, 4, 3, 2), (3, 3, 2, 2, 2), {"strides": 2, "padding": "same"}),
    ((1, 3, 3, 2, 2), (2, 3, 3, 2, 2), {"strides": (2, 2, 1), "padding": "valid", "output_padding": (1, 0, 0)}),
]


@pytest.mark.parametrize("xs,ws,kw", CONV_T)
def test_conv_transpose_matches_keras(xs, ws, kw):
    x, w = _r(6, *xs), _r(7, *ws)
    both("conv_transpose", [x, w], kw, diff=(0, 1), atol=1e-4)
    both("conv_transpose", [np.moveaxis(x, -1, 1).copy(), w], dict(kw, data_format="channels_first"), atol=1e-4)
    check_grad(lambda a, b: N.conv_transpose(a, b, **kw), x[:1], w, max_elements=64)


POOLS = [
    ((2, 9, 3), 2, None, "valid"), ((2, 9, 3), 3, 2, "same"), ((2, 7, 6, 3), 2, None, "valid"),
    ((2, 7, 6, 3), (3, 2), (2, 1), "same"), ((1, 5, 6, 4, 2), 2, None, "valid"),
    ((1, 5, 6, 7, 2), (3, 2, 3), (2, 2, 1), "same"), ((1, 5, 5, 5, 2), 3, 1, "same"),
]


@pytest.mark.parametrize("xs,pool,strides,padding", POOLS)
def test_max_pool_matches_keras(xs, pool, strides, padding):
    x = _r(8, *xs)
    both("max_pool", [x, pool, strides, padding], diff=(0,))
    both("max_pool", [np.moveaxis(x, -1, 1).copy(), pool], {"strides": strides, "padding": padding,
                                                            "data_format": "channels_first"})
    check_grad(lambda a: N.max_pool(a, pool, strides, padding), x[:1], max_elements=64)
    y = N.max_pool(inputs=x, pool_size=pool, strides=strides, padding=padding, data_format="channels_last")
    np.testing.assert_allclose(y.numpy(), _np(K.max_pool(x, pool, strides, padding)))


@pytest.mark.parametrize("xs,pool,strides,padding", POOLS)
def test_average_pool(xs, pool, strides, padding):
    """Against Keras where 'same' pads symmetrically (Keras's torch backend then excludes the padding
    as TensorFlow does); everywhere against a NumPy mean over each window's real entries (TensorFlow's
    rule; with asymmetric 'same' padding Keras 3.15's torch backend averages edge-replicated values)."""
    x = _r(9, *xs)
    d = x.ndim - 2
    pool_t = (pool,) * d if isinstance(pool, int) else pool
    st = pool_t if strides is None else ((strides,) * d if isinstance(strides, int) else strides)
    from lamina.ops.convolution import _pads
    pads = [_pads(padding, x.shape[1 + a], pool_t[a], st[a], 1) for a in range(d)]
    if all(a == b for a, b in pads):
        both("average_pool", [x, pool, strides, padding], diff=(0,))
    xp_ = np.pad(x, [(0, 0)] + pads + [(0, 0)], constant_values=np.nan)
    out = [(xp_.shape[1 + a] - pool_t[a]) // st[a] + 1 for a in range(d)]
    want = np.empty((x.shape[0],) + tuple(out) + (x.shape[-1],), np.float32)
    for o in np.ndindex(*out):
        win = xp_[(slice(None),) + tuple(slice(o[a] * st[a], o[a] * st[a] + pool_t[a]) for a in range(d))]
        want[(slice(None),) + o] = np.nanmean(win.reshape(x.shape[0], -1, x.shape[-1]), axis=1)
    np.testing.assert_allclose(N.average_pool(x, pool, strides, padding).numpy(), want, atol=1e-5)
    check_grad(lambda a: N.average_pool(a, pool, strides, padding), x[:1], max_elements=64)


@pytest.mark.parametrize("xs,out", [((2, 10, 3), 4), ((2, 7, 9, 3), (3, 4)), ((2, 8, 6, 3), 5),
                                    ((1, 5, 7, 6, 2), (2, 3, 4))])
def test_adaptive_pools_match_keras(xs, out):
    x = _r(10, *xs)
    for name in ("adaptive_average_pool", "adaptive_max_pool"):
        both(name, [x, out], diff=(0,))
        both(name, [np.moveaxis(x, -1, 1).copy(), out], {"data_format": "channels_first"}, diff=(0,))
        fn = getattr(N, name)
        check_grad(lambda a: fn(a, out), x[:1], max_elements=64)
        y = fn(inputs=x, output_size=out, data_format="channels_last")
        np.testing.assert_allclose(y.numpy(), _np(getattr(K, name)(x, out)), atol=1e-5)


# ----------------------------------------------------------------------------- attention
ATTN = [
    ({}, None), ({"is_causal": True}, None), ({"scale": 0.3}, None), ({}, "mask"), ({"is_causal": True}, "mask"),
    ({}, "bias"), ({"is_causal": True}, "bias"),
]


@pytest.mark.parametrize("kw,extra", ATTN)
def test_dot_product_attention_matches_keras(kw, extra):
    B, Tq, Tk, H, D = 2, 4, 5, 3, 6
    q, k, v = _r(11, B, Tq, H, D), _r(12, B, Tk, H, D), _r(13, B, Tk, H, D)
    kw = dict(kw)
    if extra == "mask":
        m = np.random.default_rng(0).uniform(size=(B, H, Tq, Tk)) > 0.3
        m[..., 0] = True
        kw["mask"] = m
    if extra == "bias":
        kw["bias"] = _r(14, B, H, Tq, Tk)
    both("dot_product_attention", [q, k, v], kw, diff=(0, 1, 2), atol=1e-5)
    _attention_grad_check(q[:1], k[:1], v[:1], kw)


def _attention_grad_check(q, k, v, kw):
    """Keras's dot_product_attention gives float32 even for float64 inputs (its result_type narrows), so the
    float64 gradient check runs its dtype-keeping body."""
    kw = dict(kw)
    args = [kw.pop(n, None) for n in ("bias", "mask", "scale", "is_causal")]
    if args[0] is not None:
        args[0] = args[0][:1].astype(np.float64)
    if args[1] is not None:
        args[1] = args[1][:1]
    check_grad(lambda a, b, c: N._attention(a, b, c, *args[:3], bool(args[3])), q, k, v, max_elements=32)


def test_dot_product_attention_row_with_no_allowed_key():
    """Such a row averages all values, as Keras (its large-negative fill). Its output does not depend on
    the scores, so lamina gives their queries / keys no gradient from it (as Keras's JAX backend, whose
    where() cuts it; the torch backend back-propagates softmax's Jacobian through the fill)."""
    q, k, v = _r(11, 1, 3, 2, 4), _r(12, 1, 5, 2, 4), _r(13, 1, 5, 2, 4)
    m = np.ones((1, 2, 3, 5), bool)
    m[0, 1, 2] = False
    both("dot_product_attention", [q, k, v], {"mask": m})  # values only: torch's CPU SDPA backward gives such a
    # row weight 1 per key (its log-sum-exp of the fill loses the log(Tk)), not the 1/Tk of its forward
    y = N.dot_product_attention(q, k, v, mask=m).numpy()
    np.testing.assert_allclose(y[0, 2, 1], v[0, :, 1].mean(0), rtol=1e-5)
    _attention_grad_check(q, k, v, {"mask": m})


def test_dot_product_attention_grouped_heads_and_keywords():
    q, k, v = _r(15, 2, 4, 4, 3), _r(16, 2, 5, 2, 3), _r(17, 2, 5, 2, 3)
    both("dot_product_attention", [q, k, v], {}, diff=(0, 1, 2))
    y = N.dot_product_attention(query=q, key=k, value=v, bias=None, mask=None, scale=None, is_causal=False,
                                flash_attention=None, attn_logits_soft_cap=None)
    np.testing.assert_allclose(y.numpy(), _np(K.dot_product_attention(q, k, v)), atol=1e-5)
    with pytest.raises(ValueError, match="4D"):
        N.dot_product_attention(q[0], k[0], v[0])
    with pytest.raises(ValueError, match="Only one"):
        N.dot_product_attention(q, k, v, bias=np.zeros((1,), np.float32), mask=np.ones((1,), bool))


# ----------------------------------------------------------------------------- CTC
def _ctc_case(seed=0, B=3, T=8, C=5, U=3):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((B, T, C)).astype(np.float32)
    target = rng.integers(1, C, (B, U)).astype(np.int32)
    target[1, 1] = target[1, 0]               # a repeated label needs a blank between
    tl = np.array([U, 2, 1], np.int32)[:B]
    ol = np.array([T, T - 2, 3], np.int32)[:B]
    return target, logits, tl, ol


def test_ctc_loss_matches_keras():
    target, logits, tl, ol = _ctc_case()
    both("ctc_loss", [target, logits, tl, ol], diff=(1,), atol=1e-4)
    check_grad(lambda o: N._ctc_loss(target, o, tl, ol, 0), logits, max_elements=64)  # float64 (the public one
    assert N.ctc_loss(target, logits.astype(np.float64), tl, ol).dtype == np.float32  # gives float32, as Keras)
    y = N.ctc_loss(target=target, output=logits, target_length=tl, output_length=ol, mask_index=0)
    np.testing.assert_allclose(y.numpy(), _np(K.ctc_loss(target, logits, tl, ol)), rtol=1e-5)
    # another blank index
    t2 = np.where(target == 4, 1, target)
    both("ctc_loss", [t2, logits, tl, ol], {"mask_index": 4}, diff=(1,), atol=1e-4)


def test_ctc_loss_length_errors_and_softmax_warning():
    target, logits, tl, ol = _ctc_case()
    with pytest.raises(ValueError, match="output lengths"):
        N.ctc_loss(target, logits, tl, ol + 1)
    with pytest.raises(ValueError, match="one length per sample"):
        N.ctc_loss(target, logits, tl[:2], ol)
    with pytest.warns(UserWarning, match="size 1"):
        N.softmax(np.ones((3, 1), np.float32))


def test_ctc_loss_impossible_alignment_is_inf():
    target = np.array([[1, 1, 1]], np.int32)         # needs 5 frames, gets 3
    logits = _r(3, 1, 3, 4)
    y = N.ctc_loss(target, logits, np.array([3]), np.array([3]))
    assert np.isinf(y.numpy()).all()
    assert np.isinf(_np(K.ctc_loss(target, logits, np.array([3]), np.array([3])))).all()


@pytest.mark.parametrize("merge_repeated,mask_index", [(True, 0), (False, 0), (True, 3)])
def test_ctc_decode_greedy_matches_keras(merge_repeated, mask_index):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 7, 4)).astype(np.float32)
    x[0, 1] = x[0, 0]                                      # a repeat
    lens = np.array([7, 5, 2], np.int32)
    kp, ks = K.ctc_decode(x, lens, strategy="greedy", merge_repeated=merge_repeated, mask_index=mask_index)
    lp, ls = N.ctc_decode(inputs=x, sequence_lengths=lens, strategy="greedy", merge_repeated=merge_repeated,
                          mask_index=mask_index)
    np.testing.assert_array_equal(lp.numpy(), _np(kp))
    np.testing.assert_allclose(ls.numpy(), _np(ks), rtol=1e-6)
    assert lp.dtype == np.int32


@pytest.mark.parametrize("beam_width,top_paths", [(4, 1), (3, 2), (10, 3)])
def test_ctc_decode_beam_search_matches_keras(beam_width, top_paths):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((2, 6, 4)) * 2).astype(np.float32)
    lens = np.array([6, 4], np.int32)
    kp, ks = K.ctc_decode(x, lens, strategy="beam_search", beam_width=beam_width, top_paths=top_paths)
    lp, ls = N.ctc_decode(x, lens, strategy="beam_search", beam_width=beam_width, top_paths=top_paths)
    np.testing.assert_array_equal(lp.numpy(), _np(kp))
    np.testing.assert_allclose(ls.numpy(), _np(ks), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="strategy"):
        N.ctc_decode(x, lens, strategy="best")


# ----------------------------------------------------------------------------- the rest
def test_psnr_matches_keras():
    a, b = np.random.default_rng(1).uniform(0, 1, (2, 4, 4, 3)).astype(np.float32), _r(2, 2, 4, 4, 3) * 0.1
    b = a + b
    both("psnr", [a, b, 1.0], diff=(0, 1))
    np.testing.assert_allclose(N.psnr(x1=a, x2=b, max_val=255.0).numpy(), _np(K.psnr(a, b, 255.0)), rtol=1e-5)
    check_grad(lambda u, w: N.psnr(u, w, 2.0), a[:1, :2], b[:1, :2])


def test_polar_matches_keras():
    r, th = np.abs(_r(1, 2, 3)), _r(2, 2, 3)
    got = N.polar(abs_=r, angle=th)
    want = _np(K.polar(r, th))
    assert got.dtype == want.dtype == np.complex64
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-6)
    assert N.polar(r.astype(np.float64), th.astype(np.float64)).dtype == np.complex128


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_depth_and_space_rearrangements_match_keras(data_format):
    x = _r(3, 2, 4, 6, 8) if data_format == "channels_last" else _r(3, 2, 8, 4, 6)
    both("depth_to_space", [x, 2], {"data_format": data_format}, diff=(0,))
    both("space_to_depth", [x, 2], {"data_format": data_format}, diff=(0,))
    y = N.space_to_depth(N.depth_to_space(x=x, block_size=2, data_format=data_format), block_size=2,
                         data_format=data_format)
    np.testing.assert_array_equal(y.numpy(), x)
    check_grad(lambda a: N.depth_to_space(a, 2, data_format), x[:1])


@pytest.mark.parametrize("kw", [{}, {"dilation": 2, "padding": 1, "stride": 2}, {"stride": (1, 2), "padding": (2, 0)}])
def test_unfold_and_fold_match_keras(kw):
    x = _r(4, 2, 3, 7, 8)
    cols = both("unfold", [x, (2, 3)], kw, diff=(0,))
    both("fold", [cols, (7, 8), (2, 3)], kw, diff=(0,))
    check_grad(lambda a: N.unfold(a, (2, 3), **kw), x[:1, :2], max_elements=64)
    check_grad(lambda c: N.fold(c, (7, 8), (2, 3), **kw), cols[:1, :6], max_elements=64)
    y = N.fold(x=cols, output_size=(7, 8), kernel_size=(2, 3), dilation=kw.get("dilation", 1),
               padding=kw.get("padding", 0), stride=kw.get("stride", 1))
    np.testing.assert_allclose(y.numpy(), _np(K.fold(torch.tensor(cols), (7, 8), (2, 3), **kw)), atol=1e-5)


def test_keyword_calls_by_keras_names():
    """Every argument by its Keras name gives the positional call's result (the functions not covered above)."""
    x4, w = _r(1, 1, 5, 5, 2), _r(2, 3, 3, 2, 2)
    cases = [
        (N.conv_transpose, (x4, w, 2, "same", None, "channels_last", 1),
         dict(inputs=x4, kernel=w, strides=2, padding="same", output_padding=None, data_format="channels_last",
              dilation_rate=1)),
        (N.average_pool, (x4, 2, 1, "same", None),
         dict(inputs=x4, pool_size=2, strides=1, padding="same", data_format=None)),
        (N.separable_conv, (x4, w[..., :1], _r(3, 1, 1, 2, 3), 1, "valid", None, 1),
         dict(inputs=x4, depthwise_kernel=w[..., :1], pointwise_kernel=_r(3, 1, 1, 2, 3), strides=1, padding="valid",
              data_format=None, dilation_rate=1)),
        (N.layer_normalization, (x4, None, None, -1, 1e-3), dict(x=x4, gamma=None, beta=None, axis=-1, epsilon=1e-3)),
        (N.unfold, (np.moveaxis(x4, -1, 1), 2, 1, 1, 2),
         dict(x=np.moveaxis(x4, -1, 1), kernel_size=2, dilation=1, padding=1, stride=2)),
        (N.sparse_categorical_crossentropy, (np.array([1, 0]), x4[0, 0, :2], True, -1),
         dict(target=np.array([1, 0]), output=x4[0, 0, :2], from_logits=True, axis=-1)),
        (N.ctc_decode, (_r(4, 2, 5, 3), np.array([5, 3]), "beam_search", 3, 2, True, 0),
         dict(inputs=_r(4, 2, 5, 3), sequence_lengths=np.array([5, 3]), strategy="beam_search", beam_width=3,
              top_paths=2, merge_repeated=True, mask_index=0)),
    ]
    for fn, args, kwargs in cases:
        a, b = fn(*args), fn(**kwargs)
        for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            np.testing.assert_array_equal(u.numpy(), v.numpy(), err_msg=fn.__name__)


# ----------------------------------------------------------------------------- device
def _ids(rng, hi, *shape):
    return rng.integers(0, hi, shape).astype(np.int32)


def _f(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


DEVICE = {  # name: (fn of Tensors, make arrays); float arrays get gradients
    "activations": (lambda x: sum(getattr(N, n)(x, **kw).sum() for n, kw in ACTS) + N.sparsemax(x).sum(),
                    lambda r: [_f(r, 4, 6)]),
    "int_activations": (lambda x: N.relu(x) + N.hard_tanh(x) + N.relu6(x) + N.threshold(x, 1, 7),
                        lambda r: [_ids(r, 9, 5)]),
    "one_multi_hot": (lambda i: N.one_hot(i, 5, axis=0).sum() + N.multi_hot(i, 9).sum(), lambda r: [_ids(r, 9, 3, 4)]),
    "statistics": (lambda x, g: N.moments(x, [0, 1])[1].sum() + N.layer_normalization(x, g).sum()
                   + N.rms_normalization(x, g).sum() + N.normalize(x, order=3).sum()
                   + N.batch_normalization(x, g, g * g + 1, -1, g, g).sum(), lambda r: [_f(r, 2, 3, 4), _f(r, 4)]),
    "crossentropies": (lambda t, p, i: N.binary_crossentropy(N.sigmoid(t), p, True).sum()
                       + N.categorical_crossentropy(N.softmax(t), N.softmax(p)).sum()
                       + N.sparse_categorical_crossentropy(i, p, True).sum(), lambda r: [_f(r, 3, 5), _f(r, 3, 5),
                                                                                      _ids(r, 5, 3)]),
    "conv": (lambda x, w, d, p: N.conv(x, w, 2, "same").sum() + N.conv(x, w[..., :1, :], padding="same").sum()
             + N.separable_conv(x, d, p).sum() + N.conv_transpose(x, w, 2, "same").sum(),
             lambda r: [_f(r, 1, 4, 5, 3, 2), _f(r, 2, 2, 2, 2, 2), _f(r, 2, 2, 2, 2, 2), _f(r, 1, 1, 1, 4, 3)]),
    "pool": (lambda x: N.max_pool(x, 2, 1, "same").sum() + N.average_pool(x, 2, 1, "same").sum()
             + N.adaptive_max_pool(x, 2).sum() + N.adaptive_average_pool(x, (3, 2, 2)).sum(),
             lambda r: [_f(r, 1, 5, 4, 3, 2)]),
    "attention": (lambda q, k, v, b: N.dot_product_attention(q, k, v, mask=np.tril(np.ones((3, 4), bool))).sum()
                  + N.dot_product_attention(q, k, v, bias=b, is_causal=True).sum(),
                  lambda r: [_f(r, 2, 3, 2, 4), _f(r, 2, 4, 2, 4), _f(r, 2, 4, 2, 4), _f(r, 2, 2, 3, 4)]),
    "ctc_loss": (lambda t, o: N.ctc_loss(t, o, np.array([2, 1]), np.array([6, 4])).sum(),
                 lambda r: [_ids(r, 3, 2, 2) + 1, _f(r, 2, 6, 5)]),
    "rest": (lambda a, b, c: N.psnr(a, b, 2.0) + N.depth_to_space(N.space_to_depth(a, 2), 2).sum()
             + N.fold(N.unfold(c, 2, padding=1), (4, 5), 2, padding=1).sum(),
             lambda r: [_f(r, 1, 4, 4, 4), _f(r, 1, 4, 4, 4), _f(r, 1, 2, 4, 5)]),
}


def _on(fn, arrays, xp):
    from lamina import backend
    ts = [Tensor(backend.to_device(a, xp), requires_grad=a.dtype.kind == "f") for a in arrays]
    y = fn(*ts)
    out = [y.data]
    if y.requires_grad:
        y.backward()
        out += [t.grad for t in ts if t.requires_grad]
    for a in out:
        assert backend.get_array_module(a) is xp
    return [backend.to_numpy(a) for a in out]


@pytest.mark.parametrize("name", sorted(DEVICE))
def test_nn_on_device_matches_cpu(name, device_xp):
    fn, make = DEVICE[name]
    arrays = make(np.random.default_rng(0))
    want = _on(fn, arrays, np)
    got = _on(fn, arrays, device_xp)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-4, err_msg=name)


def test_depthwise_conv_on_device_allocates_in_proportion_to_its_input(device_xp):
    """On a device the flat depthwise path runs the whole input as one block: a (1, 4, 5, 3, 2) input once
    took a fixed 2^26-entry block (~2 GB of zeros and tiled weights). NumPy arrays behind the stand-in show
    in tracemalloc; real CuPy memory does not, so there only the values are checked."""
    import tracemalloc
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 4, 5, 3, 2), np.float32), rng.standard_normal((2, 2, 2, 2, 3), np.float32)
    want = _on(lambda a, b: N.depthwise_conv(a, b, 1, "same").sum(), [x, w], np)
    tracemalloc.start()
    try:
        got = _on(lambda a, b: N.depthwise_conv(a, b, 1, "same").sum(), [x, w], device_xp)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    for g, v in zip(got, want):
        np.testing.assert_allclose(g, v, rtol=1e-5, atol=1e-5)
    if getattr(device_xp, "is_fake", False):
        assert peak < 4 << 20, peak


def test_nn_decoders_and_polar_on_device(device_xp):
    from lamina import backend
    x = np.random.default_rng(1).standard_normal((2, 6, 4)).astype(np.float32)
    lens = np.array([6, 3], np.int32)
    for strategy in ("greedy", "beam_search"):
        cpu = N.ctc_decode(x, lens, strategy=strategy, beam_width=3, top_paths=2)
        dev = N.ctc_decode(backend.to_device(x, device_xp), backend.to_device(lens, device_xp), strategy=strategy,
                           beam_width=3, top_paths=2)
        for c, d in zip(cpu, dev):
            assert backend.get_array_module(d.data) is device_xp
            np.testing.assert_allclose(backend.to_numpy(d.data), c.numpy(), rtol=1e-5)
    p = N.polar(backend.to_device(x, device_xp), backend.to_device(x, device_xp))
    np.testing.assert_allclose(backend.to_numpy(p.data), N.polar(x, x).numpy(), rtol=1e-6)


def test_integer_inputs_keep_keras_dtypes():
    """Keras's torch backend runs conv / depthwise_conv / max_pool on integers and casts the normalisations
    back to the input dtype; the rest give float32 (where Keras's torch backend raises, lamina gives that)."""
    x = (np.arange(100).reshape(1, 5, 5, 4) % 7).astype(np.int32)
    w = (np.arange(72).reshape(3, 3, 4, 2) % 5 - 2).astype(np.int32)
    cases = [("conv", (x, w, 2, "same")), ("depthwise_conv", (x, w[..., :1])), ("max_pool", (x, 2)),
             ("layer_normalization", (x * 3,)), ("rms_normalization", (x * 3,)), ("normalize", (x,)),
             ("one_hot", (x[0, 0], 7)), ("depth_to_space", (x, 2)), ("space_to_depth", (x[:, :4, :4], 2)),
             ("ctc_decode", (x[0, :2].astype(np.float32), np.array([5, 3])))]
    for name, args in cases:
        got, want = getattr(N, name)(*args), getattr(K, name)(*args)
        got, want = (got[0], want[0]) if isinstance(got, tuple) else (got, want)
        assert str(got.dtype) == keras.backend.standardize_dtype(want.dtype), name
        np.testing.assert_allclose(got.numpy(), _np(want), atol=1e-6, err_msg=name)
    for name in ("average_pool", "adaptive_average_pool", "adaptive_max_pool"):
        assert getattr(N, name)(x, 2).dtype == np.float32
    assert N.moments(x, 0)[0].dtype == np.float32


def test_conv_and_pool_argument_sweep_matches_keras():
    """Values for every combination of kernel size, stride, dilation, padding (and output_padding) in 1-D,
    2-D and 3-D that Keras accepts (Keras refuses strides > 1 with dilation > 1)."""
    import itertools
    rng = np.random.default_rng(0)
    count = 0
    for d in (1, 2, 3):
        for k, s, dil, pad in itertools.product((1, 2, 3), (1, 2, 3), (1, 2), ("valid", "same")):
            if s > 1 and dil > 1:
                continue
            x = rng.standard_normal((1,) + (6,) * d + (2,)).astype(np.float32)
            w = rng.standard_normal((k,) * d + (2, 3)).astype(np.float32)
            for name, ww in (("conv", w), ("depthwise_conv", w[..., :1])):
                want = _np(getattr(K, name)(x, ww, s, pad, dilation_rate=dil))
                got = getattr(N, name)(x, ww, s, pad, dilation_rate=dil).numpy()
                np.testing.assert_allclose(got, want, atol=1e-4, err_msg=f"{name} {d}-D k={k} s={s} d={dil} {pad}")
                count += 1
            for op in (None, 0, 1):
                if k == 1 or (op is not None and op >= s):
                    continue
                wt = rng.standard_normal((k,) * d + (3, 2)).astype(np.float32)
                xt = x[(slice(None),) + (slice(0, 4),) * d]
                want = _np(K.conv_transpose(xt, wt, s, pad, op, dilation_rate=dil))
                got = N.conv_transpose(xt, wt, s, pad, op, dilation_rate=dil).numpy()
                np.testing.assert_allclose(got, want, atol=1e-4,
                                           err_msg=f"conv_transpose {d}-D k={k} s={s} d={dil} {pad} op={op}")
                count += 1
        for p, s, pad in itertools.product((1, 2, 3), (1, 2, 3), ("valid", "same")):
            x = rng.standard_normal((1,) + (7,) * d + (2,)).astype(np.float32)
            for name in ("max_pool", "average_pool"):
                np.testing.assert_allclose(getattr(N, name)(x, p, s, pad).numpy(), _np(getattr(K, name)(x, p, s, pad)),
                                           atol=1e-5, err_msg=f"{name} {d}-D p={p} s={s} {pad}")
                count += 1
    assert count > 350


def test_attention_broadcasting_and_ctc_empty_target_match_keras():
    q, k, v = _r(1, 2, 3, 4, 5), _r(2, 2, 6, 1, 5), _r(3, 2, 6, 1, 5)        # one key/value head for four queries
    both("dot_product_attention", [q, k, v], {"mask": np.tril(np.ones((3, 6), bool))}, diff=(0, 1, 2))
    both("dot_product_attention", [q, k, v], {"bias": _r(4, 1, 1, 3, 6)}, diff=(0, 1, 2))
    t, o = np.array([[1, 2], [3, 0]], np.int32), _r(5, 2, 5, 4)
    both("ctc_loss", [t, o, np.array([2, 0]), np.array([5, 4])], diff=(1,), atol=1e-4)


@pytest.mark.parametrize("shape,axis", [((3, 0), -1), ((0, 4), -1), ((3, 0), 0), ((2, 0, 3), 1)])
def test_softmaxes_of_empty_arrays_are_empty_as_in_keras(shape, axis):
    """softmax, log_softmax and sparsemax of an array with no values (an empty axis included): an empty result of
    the input's shape, as Keras's (torch's) softmax gives, and an empty gradient; they once raised ("zero-size
    array to reduction operation maximum")."""
    x = np.zeros(shape, np.float32)
    for name in ("softmax", "log_softmax", "sparsemax"):
        t = Tensor(x, requires_grad=True)
        y = getattr(ops, name)(t, axis=axis)
        (g,) = grad(ops.sum(y), [t])
        assert y.shape == shape and g.shape == shape, name
        if name != "sparsemax":
            assert tuple(_np(getattr(K, name)(x, axis=axis)).shape) == shape


def test_axes_out_of_range_and_0d_inputs_raise_clear_errors():
    """moments over an axis the input lacks raises instead of wrapping it onto another axis (axes=[2] of a 2-D
    array once reduced axis 0); top_k of a 0-d value says why."""
    x = np.arange(6.0).reshape(2, 3)
    with pytest.raises(ValueError, match="axis 2 is out of range for an input of rank 2"):
        ops.moments(x, axes=[2])
    with pytest.raises(ValueError, match="rank 0"):
        ops.moments(np.float32(1.0), axes=[0])
    with pytest.raises(ValueError, match="at least one axis"):
        ops.top_k(np.float32(1.0), 1)
    mean, var = ops.moments(x, axes=[-1])
    np.testing.assert_allclose(_np(mean), [1.0, 4.0])
    np.testing.assert_allclose(_np(var), [2 / 3, 2 / 3])


def test_normalize_of_a_zero_vector_has_a_finite_slope():
    # 1 / max(norm, eps) capped after the reciprocal sent the zero vector's backward through 1 / sqrt(0): NaN
    x = Tensor(np.array([[0.0, 0.0, 0.0], [3.0, 4.0, 0.0]], np.float32), requires_grad=True)
    y = N.normalize(x, axis=-1)
    np.testing.assert_allclose(y.numpy(), [[0, 0, 0], [0.6, 0.8, 0]], atol=1e-7)
    (g,) = grad(ops.sum(y * np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]], np.float32)), [x])
    np.testing.assert_allclose(g[0], [0.0, 1e7, 0.0], rtol=1e-6)     # 1 / epsilon (torch's F.normalize: 1 / its eps)
    np.testing.assert_allclose(g[1], [-0.6 * 0.8 / 5, (1 - 0.8 ** 2) / 5, 0.0], rtol=1e-5, atol=1e-7)
    check_grad(lambda t: N.normalize(t, axis=1), np.random.default_rng(0).normal(size=(3, 4)))
