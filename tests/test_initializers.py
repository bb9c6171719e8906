"""Initializers (statistics vs Keras's formulas, fans, seeding), regularizers (layer.losses by hand), constraints."""
import math

import numpy as np
import pytest

import lamina
from lamina import Tensor, constraints, grad, initializers, layers, regularizers

TRUNC_STD = 0.87962566103423978  # std of a unit normal truncated to [-2, 2]


@pytest.mark.parametrize("shape,fans", [((7,), (7, 7)), ((5, 3), (5, 3)), ((3, 3, 16, 32), (144, 288)),
                                        ((5, 8, 4), (40, 20)), ((2, 3, 3, 4, 6), (72, 108))])
def test_compute_fans_for_dense_and_conv_kernels(shape, fans):
    assert initializers.compute_fans(shape) == fans


# name -> (scale, mode, distribution), Keras's definitions
VARIANCE_SCALING = {
    "glorot_uniform": (1.0, "fan_avg", "uniform"), "glorot_normal": (1.0, "fan_avg", "normal"),
    "he_uniform": (2.0, "fan_in", "uniform"), "he_normal": (2.0, "fan_in", "normal"),
    "lecun_uniform": (1.0, "fan_in", "uniform"), "lecun_normal": (1.0, "fan_in", "normal"),
}


@pytest.mark.parametrize("name", sorted(VARIANCE_SCALING))
@pytest.mark.parametrize("shape", [(300, 200), (3, 3, 48, 64)])
def test_variance_scaling_statistics(name, shape):
    scale, mode, dist = VARIANCE_SCALING[name]
    fan_in, fan_out = initializers.compute_fans(shape)
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
    var = scale / fan
    w = initializers.get(name)(shape).astype(np.float64)
    assert w.shape == shape and initializers.get(name)(shape).dtype == np.float32
    assert abs(w.mean()) < 0.05 * math.sqrt(var)
    assert w.var() == pytest.approx(var, rel=0.04)
    if dist == "uniform":
        limit = math.sqrt(3 * var)   # e.g. glorot: sqrt(6 / (fan_in + fan_out))
        assert np.abs(w).max() <= limit and np.abs(w).max() > 0.99 * limit
    else:  # truncated at two standard deviations of the underlying normal
        bound = 2 * math.sqrt(var) / TRUNC_STD
        assert np.abs(w).max() <= bound * (1 + 1e-6) and np.abs(w).max() > 0.98 * bound


def test_variance_scaling_untruncated_and_fan_out():
    w = initializers.VarianceScaling(scale=3.0, mode="fan_out", distribution="untruncated_normal")((100, 400))
    assert w.var() == pytest.approx(3.0 / 400, rel=0.04)
    assert np.abs(w).max() > 2.5 * math.sqrt(3.0 / 400)   # not truncated
    with pytest.raises(ValueError, match="Valid: fan_in, fan_out, fan_avg"):
        initializers.VarianceScaling(mode="fan_sum")


def test_truncated_random_normal_uniform_constant():
    # initializers return lamina Tensors (as Keras returns backend tensors); the statistics are read in NumPy
    w = np.asarray(initializers.TruncatedNormal(mean=1.0, stddev=0.5)((400, 300)))
    assert np.abs(w - 1.0).max() <= 1.0 + 1e-6
    assert w.mean() == pytest.approx(1.0, abs=0.01)
    assert w.std() == pytest.approx(0.5 * TRUNC_STD, rel=0.02)
    w = np.asarray(initializers.RandomNormal(stddev=0.2)((400, 300)))
    assert w.std() == pytest.approx(0.2, rel=0.02) and abs(w.mean()) < 0.01
    w = np.asarray(initializers.RandomUniform(minval=-1.0, maxval=3.0)((400, 300)))
    assert w.min() >= -1.0 and w.max() < 3.0 and w.mean() == pytest.approx(1.0, abs=0.02)
    w = np.asarray(initializers.get("uniform")((100, 100)))   # Keras's short name: U(-0.05, 0.05)
    assert np.abs(w).max() <= 0.05 and w.std() == pytest.approx(0.1 / math.sqrt(12), rel=0.03)
    np.testing.assert_array_equal(initializers.Constant(2.5)((2, 3)), np.full((2, 3), 2.5, np.float32))
    np.testing.assert_array_equal(initializers.get("zeros")((2,)), [0, 0])
    np.testing.assert_array_equal(initializers.get("ones")((2,)), [1, 1])
    np.testing.assert_array_equal(initializers.Identity(gain=2.0)((2, 3)), 2 * np.eye(2, 3))


@pytest.mark.parametrize("shape", [(64, 32), (32, 64), (3, 3, 4, 8), (16, 16)])
def test_orthogonal(shape):
    w = initializers.Orthogonal(gain=1.5)(shape).astype(np.float64)
    flat = w.reshape(-1, shape[-1])
    rows, cols = flat.shape
    gram = flat.T @ flat if rows >= cols else flat @ flat.T
    np.testing.assert_allclose(gram, 1.5 ** 2 * np.eye(min(rows, cols)), atol=1e-5)
    with pytest.raises(ValueError, match="rank >= 2"):
        initializers.Orthogonal()((5,))


def test_seeded_reproducibility():
    def build():
        layer = layers.Dense(4, kernel_initializer="glorot_normal", bias_initializer="random_normal")
        layer.build((None, 6))
        emb = layers.Embedding(5, 3)
        emb.build()
        return layer.get_weights() + emb.get_weights()
    lamina.utils.set_random_seed(123)
    first = build()
    lamina.utils.set_random_seed(123)
    second = build()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    lamina.utils.set_random_seed(124)
    assert not np.array_equal(build()[0], first[0])
    # an initializer with its own seed gives the same values every call, as Keras's do
    init = initializers.HeNormal(seed=7)
    np.testing.assert_array_equal(init((3, 4)), init((3, 4)))
    assert not np.array_equal(initializers.HeNormal(seed=8)((3, 4)), init((3, 4)))


def _whole_draw(kind, seed, shape, dtype, a, b):
    """The numbers of one whole float64 draw, as the initializers made them before they drew block by block."""
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.uniform(a, b, shape).astype(dtype)
    if kind == "normal":
        return rng.normal(a, b, shape).astype(dtype)
    z = rng.standard_normal(shape)  # truncated: everything outside [-2, 2] redrawn at once, until none is
    outside = np.abs(z) > 2.0
    while outside.any():
        z[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(z) > 2.0
    return (a + z * b).astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
@pytest.mark.parametrize("shape", [(3 * 2 ** 16 + 5, 2), (7,), (), (0, 4)])
def test_block_by_block_draws_equal_one_whole_draw(shape, dtype):
    """The initializers draw and cast a block of _DRAW_BLOCK values at a time (a large weight no longer
    passes through float64 temporaries of twice its size); the values are those of one whole draw, to the
    bit, so every seed keeps giving the weights it gave."""
    cases = [(initializers.RandomUniform(-1.0, 2.0, seed=1), "uniform", -1.0, 2.0),
             (initializers.RandomNormal(0.5, 2.0, seed=2), "normal", 0.5, 2.0),
             (initializers.TruncatedNormal(0.3, 0.2, seed=3), "truncated", 0.3, 0.2)]
    fan_in = shape[-2] if len(shape) >= 2 else (shape[0] if shape else 1)
    fan_in = max(1.0, fan_in)
    cases += [(initializers.HeUniform(seed=4), "uniform", -math.sqrt(6.0 / fan_in), math.sqrt(6.0 / fan_in)),
              (initializers.HeNormal(seed=5), "truncated", 0.0, math.sqrt(2.0 / fan_in) / TRUNC_STD),
              (initializers.VarianceScaling(2.0, "fan_in", "untruncated_normal", seed=6), "normal", 0.0,
               math.sqrt(2.0 / fan_in))]
    assert initializers._DRAW_BLOCK < 3 * 2 ** 16  # the first shape spans several blocks
    for init, kind, a, b in cases:
        got = np.asarray(init(shape, dtype))
        want = _whole_draw(kind, init.seed, shape, dtype, a, b)
        assert got.dtype == np.dtype(dtype) and got.shape == shape
        np.testing.assert_array_equal(got, want, err_msg=type(init).__name__)


def test_bounds_numpy_refuses_are_refused_before_drawing():
    """Uniform and normal draws are NumPy's standard draws scaled and shifted (initializers._uniform /
    _normal); NumPy's own checks of the bounds still apply."""
    with pytest.raises(OverflowError):
        initializers.RandomUniform(-np.inf, 1.0)((3,))
    with pytest.raises(ValueError, match="scale"):
        initializers.RandomNormal(0.0, -1.0)((3,))
    lo, hi = np.array([-1.0, 0.0, 2.0]), np.array([1.0, 1.0, 5.0])    # array bounds: NumPy's broadcasting
    got = np.asarray(initializers.RandomUniform(lo, hi, seed=9)((3,), "float64"))
    np.testing.assert_array_equal(got, np.random.default_rng(9).uniform(lo, hi, 3))


def test_weights_are_the_initializers_draw_and_never_a_callers_array():
    """add_weight keeps the draw of lamina's own initializers as it is (no second copy of a large model's
    weights), while an array handed in by the caller, through a plain callable or an Initializer subclass
    of its own, is copied: updating the weight never writes into it."""
    held = np.ones((2, 3), np.float32)

    class Held(initializers.Initializer):
        def __call__(self, shape, dtype=None):
            return held

    layer = layers.Dense(3)
    for init in (lambda shape, dtype=None: held, Held()):
        w = layer.add_weight(shape=(2, 3), initializer=init)
        w.assign_add(np.ones((2, 3), np.float32))
        np.testing.assert_array_equal(held, 1.0)
        np.testing.assert_array_equal(w.numpy(), 2.0)
    w = layer.add_weight(shape=(2, 3), initializer=initializers.Constant(5.0))
    w.assign_add(np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(w.numpy(), 6.0)


def test_initializer_get_forms_and_round_trip():
    assert isinstance(initializers.get("GlorotUniform"), initializers.GlorotUniform)
    assert isinstance(initializers.get("Zeros"), initializers.Zeros)
    init = initializers.get({"class_name": "RandomNormal", "config": {"mean": 1.0, "stddev": 2.0, "seed": None}})
    assert (init.mean, init.stddev) == (1.0, 2.0)
    assert initializers.get(initializers.Ones) is not None
    with pytest.raises(ValueError, match="Unknown initializer 'glorot'. Valid names: .*glorot_uniform"):
        initializers.get("glorot")


# ----- regularizers
def test_layer_losses_hold_the_penalties_computed_by_hand():
    layer = layers.Dense(3, kernel_regularizer=regularizers.L1(0.01), bias_regularizer="l2",
                         bias_initializer="random_normal")
    layer(np.zeros((2, 4), np.float32))
    k, b = (w.astype(np.float64) for w in layer.get_weights())
    losses = layer.losses
    assert len(losses) == 2
    assert float(losses[0].item()) == pytest.approx(0.01 * np.abs(k).sum(), rel=1e-5)
    assert float(losses[1].item()) == pytest.approx(0.01 * (b ** 2).sum(), rel=1e-5)
    both = layers.Dense(2, kernel_regularizer=regularizers.L1L2(l1=0.1, l2=0.2))
    both.build((None, 3))
    (w,) = [x.astype(np.float64) for x in both.get_weights()[:1]]
    (penalty,) = both.losses
    assert float(penalty.item()) == pytest.approx(0.1 * np.abs(w).sum() + 0.2 * (w ** 2).sum(), rel=1e-5)
    # the penalties are differentiable: d(l2 * sum w^2)/dw = 2 l2 w
    (g,) = grad(penalty, [both.kernel])
    np.testing.assert_allclose(g, 0.1 * np.sign(w) + 0.4 * w, rtol=1e-5)


def test_regularizer_defaults_names_and_errors():
    assert regularizers.get("l1").l1 == 0.01 and regularizers.get("l2").l2 == 0.01
    assert regularizers.l1_l2().get_config() == {"l1": 0.0, "l2": 0.0}   # Keras 3: the class, no penalty
    r = regularizers.get({"class_name": "L1L2", "config": {"l1": 0.3, "l2": 0.0}})
    assert r.get_config() == {"l1": 0.3, "l2": 0.0}
    assert float(r(Tensor(np.array([-1.0, 2.0], np.float32))).item()) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="non-negative"):
        regularizers.L2(-0.1)
    with pytest.raises(ValueError, match="Unknown regularizer 'l3'. Valid names: l1, l2, l1_l2"):
        regularizers.get("l3")


def test_non_trainable_weights_add_no_penalty():
    layer = layers.Dense(2, kernel_regularizer="l2")
    layer.build((None, 2))
    layer.kernel.trainable = False
    assert layer.losses == []


# ----- constraints (applied by optimizers after each update; tested here as objects)
def test_max_norm():
    w = np.array([[3.0, 0.3], [4.0, 0.4]], np.float32)      # column norms 5 and 0.5
    out = constraints.MaxNorm(max_value=2.0)(w)
    assert out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=0), [2.0, 0.5], rtol=1e-5)
    np.testing.assert_allclose(out[:, 0] / np.linalg.norm(out[:, 0]), [0.6, 0.8], rtol=1e-5)  # direction kept
    np.testing.assert_allclose(out[:, 1], w[:, 1], rtol=1e-5)
    kernel = np.random.default_rng(0).standard_normal((3, 3, 4, 5)).astype(np.float32) * 3
    out = constraints.MaxNorm(1.0, axis=[0, 1, 2])(kernel)   # a conv kernel: one norm per filter
    assert np.sqrt((out ** 2).sum(axis=(0, 1, 2))).max() <= 1.0 + 1e-5


def test_non_neg_unit_norm_min_max_norm():
    w = np.array([[-1.0, 2.0], [0.5, -3.0]], np.float32)
    np.testing.assert_array_equal(constraints.NonNeg()(w), [[0.0, 2.0], [0.5, 0.0]])
    out = constraints.UnitNorm(axis=1)(w)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), [1.0, 1.0], rtol=1e-5)
    np.testing.assert_allclose(out[0], w[0] / np.linalg.norm(w[0]), rtol=1e-5)
    out = constraints.MinMaxNorm(min_value=1.0, max_value=2.0)(np.array([[0.1, 3.0], [0.0, 4.0]], np.float32))
    np.testing.assert_allclose(np.linalg.norm(out, axis=0), [1.0, 2.0], rtol=1e-4)


def test_constraints_are_attached_to_weights_and_named():
    layer = layers.Dense(2, kernel_constraint="non_neg", bias_constraint=constraints.MaxNorm(1.0))
    layer.build((None, 3))
    assert isinstance(layer.kernel.constraint, constraints.NonNeg)
    assert isinstance(layer.bias.constraint, constraints.MaxNorm)
    assert isinstance(constraints.get("unit_norm"), constraints.UnitNorm)
    c = constraints.get({"class_name": "MaxNorm", "config": {"max_value": 3, "axis": 1}})
    assert c.get_config() == {"max_value": 3, "axis": 1}
    with pytest.raises(ValueError, match="Unknown constraint 'nonneg'. Valid names: max_norm, non_neg"):
        constraints.get("nonneg")
