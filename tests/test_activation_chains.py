"""The element-wise activations as in-cache chains (ops/activations.py's _chain): values and gradients on arrays of
several blocks, a partial last one and special values, against

* the whole-array formulas they replaced, to the bit (same operations in the same order; NaN where NaN);
* a float64 reference of the Keras formula (rtol 1e-6 for float32, plus a few ulps of 1 absolute where the
  formula cancels, as 1 - tanh(x)^2 does);
* themselves on 2 and 3 threads, to the bit;

and the inputs the chains leave to the whole-array code (half precision, 0-d, a gy of another dtype).
"""
import numpy as np
import pytest

import lamina
from lamina import threads
from lamina.ops import activations as A
from lamina.ops import kernels
from lamina.ops import nn_kernels as K

# the special values make NaN on purpose (inf * 0 in gradients, inf / inf in softsign), as they did before
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")


@pytest.fixture(autouse=True)
def _numpys_exp(monkeypatch):
    """The compiled passes with the kernels' own exp (where NumPy's is scalar) compute another formula: off here,
    and held to float64's in tests/test_kernels.py; the exact compiled passes, where the kernels run, are held to
    these chains' bits here too."""
    monkeypatch.setattr(kernels, "OWN_EXP", False)


ALPHA, SCALE = A._SELU_ALPHA, A._SELU_SCALE
SPECIAL = [0.0, -0.0, 1e-40, -1e-40, 3.0, -3.0, 20.0, -20.0, 100.0, -100.0, np.inf, -np.inf, np.nan,
           1e-45, -1e-45, 2.9999, -2.9999, 1e-300, -1e-300]
N = 3 * A._CHAIN_BLOCK + 1234  # three full blocks and a partial one


def _x(dtype, n=N, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * 4).astype(dtype)
    with np.errstate(over="ignore", under="ignore"):
        specials = np.array(SPECIAL).astype(dtype)
    # spread through every block, the partial last one and its very end included
    at = np.concatenate([rng.choice(n, min(n // 2, 40 * len(SPECIAL)), replace=False),
                         np.arange(n - len(SPECIAL), n)])
    x[at] = np.resize(specials, len(at))
    return x


def _gy(x, seed=1):
    g = np.random.default_rng(seed).standard_normal(x.size).astype(x.dtype)
    g[:len(SPECIAL)] = [0.0, -0.0, np.inf, -np.inf, np.nan] + [1.0] * (len(SPECIAL) - 5)
    return g.reshape(x.shape)


def _sigmoid(x):  # ops.activations.stable_sigmoid's whole-array formula
    e = np.exp(-np.abs(x))
    return np.fmax(e, x >= 0) / (1.0 + e)


def _elu(alpha):
    def old(x, gy):
        neg = alpha * np.expm1(np.minimum(x, 0))
        return np.where(x > 0, x, neg), np.where(x > 0, gy, gy * (neg + alpha))

    def ref(x):
        e = np.exp(np.minimum(x, 0))
        return np.where(x > 0, x, alpha * (e - 1)), np.where(x > 0, 1.0, alpha * e)
    return old, ref


def _selu_old(x, gy):
    neg = ALPHA * np.expm1(np.minimum(x, 0))
    return SCALE * np.where(x > 0, x, neg), SCALE * np.where(x > 0, gy, gy * (neg + ALPHA))


def _leaky(alpha):
    def old(x, gy):
        xa = x * alpha
        y = (np.maximum if alpha <= 1 else np.minimum)(x, xa) if alpha else np.where(x > 0, x, xa)
        return y, np.where(x > 0, gy, gy * alpha)

    def ref(x):
        return np.where(x > 0, x, alpha * x), np.where(x > 0, 1.0, alpha)
    return old, ref


def _hard_old(x, gy, silu):
    hs = np.clip(x / 6.0 + 0.5, 0.0, 1.0)
    inside = (x > -3.0) & (x < 3.0)
    if silu:
        return x * hs, gy * (hs + x * inside / 6.0)
    return hs, gy * inside / 6.0


def _hard_ref(x, silu):
    hs = np.minimum(np.maximum(x + 3, 0), 6) / 6
    inside = (x > -3) & (x < 3)
    if silu:  # x hs + x [inside] / 6: inf * 0 is NaN at +-inf, as lamina's gradient there (left as it was)
        with np.errstate(invalid="ignore"):
            return x * hs, hs + x * inside / 6
    return hs, inside / 6


def _softplus_ref(x):
    return np.logaddexp(0, x), np.exp(-np.logaddexp(0, -x))


# name: (op class, params, the whole-array code the chain replaced (x, gy) -> (y, gx),
#        float64 reference x -> (y, dy/dx), absolute tolerance in ulps of 1 where the formula cancels)
CASES = {
    "sigmoid": (A.Sigmoid, {}, lambda x, gy: (lambda y: (y, gy * y * (1.0 - y)))(_sigmoid(x)),
                lambda x: (lambda s: (s, s * (1 - s)))(np.exp(-np.logaddexp(0, -x))), 2),
    "tanh": (A.Tanh, {}, lambda x, gy: (lambda y: (y, gy * (1.0 - y * y)))(np.tanh(x)),
             lambda x: (np.tanh(x), 1 / np.cosh(np.minimum(np.abs(x), 700)) ** 2), 4),
    "hard_sigmoid": (A.HardSigmoid, {}, lambda x, gy: _hard_old(x, gy, False), lambda x: _hard_ref(x, False), 2),
    "hard_silu": (A.HardSiLU, {}, lambda x, gy: _hard_old(x, gy, True), lambda x: _hard_ref(x, True), 4),
    "softplus": (A.Softplus, {}, lambda x, gy: (np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x))), gy * _sigmoid(x)),
                 _softplus_ref, 0),
    "log_sigmoid": (A.LogSigmoid, {},
                    lambda x, gy: (np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x))), gy * _sigmoid(-x)),
                    lambda x: (-np.logaddexp(0, -x), np.exp(-np.logaddexp(0, x))), 0),
    # ops.log_sigmoid (keras.activations.log_sigmoid): the derivative as 0.5 (1 - tanh(x / 2)), which
    # cancels for large x (0 from x = 20 in float32: left as it was)
    "nn.log_sigmoid": (K.LogSigmoid, {},
                       lambda x, gy: (np.minimum(x, 0) - np.log1p(np.exp(-np.abs(x))),
                                      gy * (0.5 * (1.0 - np.tanh(0.5 * x)))),
                       lambda x: (-np.logaddexp(0, -x), np.exp(-np.logaddexp(0, x))), 2),
    "softsign": (A.Softsign, {}, lambda x, gy: (x / (1.0 + np.abs(x)), gy / ((1.0 + np.abs(x)) * (1.0 + np.abs(x)))),
                 lambda x: (x / (1 + np.abs(x)), 1 / (1 + np.abs(x)) ** 2), 0),
    "elu": (A.ELU, {"alpha": 1.0}, *_elu(1.0), 2),
    "elu_0.3": (A.ELU, {"alpha": 0.3}, *_elu(0.3), 2),
    "elu_2.5": (A.ELU, {"alpha": 2.5}, *_elu(2.5), 4),
    "elu_-0.5": (A.ELU, {"alpha": -0.5}, *_elu(-0.5), 2),  # forward: the select
    "selu": (A.SELU, {}, _selu_old,
             lambda x: tuple(SCALE * v for v in _elu(ALPHA)[1](x)), 4),
    "leaky_relu": (A.LeakyReLU, {"alpha": 0.2}, *_leaky(0.2), 0),
    "leaky_relu_0.01": (A.LeakyReLU, {"alpha": 0.01}, *_leaky(0.01), 0),
    "leaky_relu_3": (A.LeakyReLU, {"alpha": 3.0}, *_leaky(3.0), 0),
    "leaky_relu_-0.5": (A.LeakyReLU, {"alpha": -0.5}, *_leaky(-0.5), 0),
    "leaky_relu_0": (A.LeakyReLU, {"alpha": 0.0}, *_leaky(0.0), 0),  # forward: the select
}
DTYPES = [np.float32, np.float64]


def _run(name, x, gy):
    cls, params, *_ = CASES[name]
    op = cls(**params)
    op.xp = np
    y = op.forward(x)
    return y, op.backward(gy)


def assert_bits(got, want):
    """The same values to the bit (-0.0 apart from 0.0), NaN where NaN (any payload)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    word = {2: np.int16, 4: np.int32, 8: np.int64}[got.dtype.itemsize]
    bad = np.flatnonzero(got[~nan].view(word) != want[~nan].view(word))
    assert bad.size == 0, f"{bad.size} differ, e.g. {got[~nan][bad[:5]]} against {want[~nan][bad[:5]]}"


def assert_close(got, ref, x, rtol, atol):
    """|got - ref| <= rtol |ref| + atol (+ a few of the dtype's smallest subnormals); NaN and infinities where
    the float64 reference has them."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    inf = np.isinf(ref)
    np.testing.assert_array_equal(got[inf], ref[inf])
    ok = ~np.isnan(ref) & ~inf
    err = np.abs(got[ok] - ref[ok])
    atol = np.broadcast_to(atol, ref.shape)[ok]
    lim = rtol * np.abs(ref[ok]) + atol + 4 * np.finfo(x.dtype).smallest_subnormal
    worst = np.argmax(err - lim)
    assert np.all(err <= lim), f"x={x[ok][worst]!r}: {got[ok][worst]!r} against {ref[ok][worst]!r}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CASES))
def test_chain_is_the_whole_array_formula_to_the_bit(name, dtype):
    x, gy = _x(dtype), _gy(_x(dtype))
    y, gx = _run(name, x, gy)
    with np.errstate(all="ignore"):
        want_y, want_gx = CASES[name][2](x, gy)
    assert_bits(y, want_y.astype(dtype))
    assert_bits(gx, want_gx.astype(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", list(CASES))
def test_chain_against_the_float64_formula(name, dtype):
    """Through lamina.grad, as a model sees them: value and gy * dy/dx against float64 references."""
    x = _x(dtype)
    gy = np.random.default_rng(1).standard_normal(x.shape).astype(dtype)
    cls, params, _, ref, ulps = CASES[name]
    t = lamina.Tensor(x, requires_grad=True)
    y = cls.apply(t, **params)
    (g,) = lamina.grad(lamina.ops.sum(y * gy), [t])
    with np.errstate(all="ignore"):
        ry, rd = ref(x.astype(np.float64))
    eps = np.finfo(dtype).eps
    rtol = 1e-6 if dtype == np.float32 else 1e-13
    assert_close(y, ry, x, rtol, ulps * eps)
    assert_close(g, gy * rd, x, rtol, ulps * eps * np.abs(gy))


@pytest.mark.parametrize("name", list(CASES))
def test_chain_split_over_threads_is_the_same(name, monkeypatch):
    """Split over 2 and 3 threads (each a run of whole blocks): the one-thread values and gradients, bit for bit."""
    x = _x(np.float32)
    gy = _gy(x)
    cls, params, *_ = CASES[name]
    got = []
    for width in (1, 2, 3):
        monkeypatch.setattr(threads, "split_width", lambda *a, width=width: width)
        t = lamina.Tensor(x, requires_grad=True)
        y = cls.apply(t, **params)
        (g,) = lamina.grad(lamina.ops.sum(y * gy), [t])
        got.append((np.asarray(y), np.asarray(g)))
    for y, g in got[1:]:
        assert_bits(y, got[0][0])
        assert_bits(g, got[0][1])


CHAINED = {**{k: (lambda c, p: (lambda t: c.apply(t, **p)))(v[0], v[1]) for k, v in CASES.items()},
           "gelu": lambda t: lamina.ops.gelu(t, approximate=False),
           "gelu_tanh": lambda t: lamina.ops.gelu(t, approximate=True), "silu": lamina.ops.silu}


@pytest.mark.parametrize("name", list(CHAINED))
def test_chain_of_a_transposed_input(name):
    """A non-C-ordered input (a transposed view): the values of its C-ordered copy. _chain writes its outputs
    through flat views, which for an output laid out as the input (empty_like) were copies: the values were lost."""
    x = _x(np.float32).reshape(-1, 2).T  # F-ordered, (2, N / 2)
    gy = _gy(np.ascontiguousarray(x))
    got = []
    for a in (x, np.ascontiguousarray(x)):
        t = lamina.Tensor(a, requires_grad=True)
        y = CHAINED[name](t)
        (g,) = lamina.grad(lamina.ops.sum(y * gy), [t])
        got.append((np.asarray(y), np.asarray(g)))
    assert_bits(got[0][0], got[1][0])
    assert_bits(got[0][1], got[1][1])


@pytest.mark.parametrize("name", list(CASES))
def test_small_broadcast_gradient(name):
    """A block-sized array and a gy broadcast from a scalar (what sum's backward gives): as the formula."""
    x = _x(np.float32, n=1000)
    gy = np.broadcast_to(np.float32(0.75), x.shape)
    y, gx = _run(name, x, gy)
    with np.errstate(all="ignore"):
        want_y, want_gx = CASES[name][2](x, np.ascontiguousarray(gy))
    assert_bits(y, want_y.astype(np.float32))
    assert_bits(gx, want_gx.astype(np.float32))


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("case", ["float16", "0-d", "gy float64"])
def test_inputs_left_to_the_whole_array_code(name, case):
    """Half precision, 0-d inputs and a gy of another dtype take the whole-array code: its dtypes and values."""
    if case == "float16":
        x = _x(np.float16, n=300)
        gy = _gy(x)
    elif case == "0-d":
        x, gy = np.array(-1.5, np.float32), np.array(0.5, np.float32)
    else:
        x = _x(np.float32, n=300)
        gy = _gy(x).astype(np.float64)
    y, gx = _run(name, x, gy)
    with np.errstate(all="ignore"):
        want_y, want_gx = CASES[name][2](x, gy)
    assert y.dtype == x.dtype and gx.dtype == np.result_type(x, gy)
    assert_bits(y, np.asarray(want_y).astype(x.dtype))
    assert_bits(gx, np.asarray(want_gx).astype(gx.dtype))


def test_a_float64_alpha_keeps_the_whole_array_code():
    """A NumPy float64 alpha makes a float32 x's results float64 (NumPy's promotion), as before the chains."""
    x = _x(np.float32, n=300)
    for cls in (A.ELU, A.LeakyReLU):
        op = cls(alpha=np.float64(0.3))
        op.xp = np
        assert op.forward(x).dtype == np.float64
