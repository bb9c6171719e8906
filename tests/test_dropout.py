"""Dropout and noise: mask statistics, scaling, identity at inference, seeded reproducibility, layers."""
import numpy as np
import pytest

import lamina
from lamina import Tensor, grad, layers, ops
from lamina.testing import check_grad, check_layer


def test_dropout_mask_statistics_and_scaling():
    x = np.ones((200, 100), np.float32)
    y = ops.dropout(x, 0.3).numpy()
    assert y.dtype == np.float32
    kept = y != 0
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_allclose(y[kept], 1 / 0.7, rtol=1e-6)  # inverted scaling
    assert abs(y.mean() - 1.0) < 0.03                          # expectation preserved


def test_dropout_backward_uses_the_same_mask():
    x = Tensor(np.random.default_rng(0).standard_normal((20, 10)).astype(np.float32), requires_grad=True)
    y = ops.dropout(x, 0.5)
    (g,) = grad(y.sum(), [x])
    np.testing.assert_allclose(g, (y.numpy() != 0) * 2.0)


def test_dropout_grad_check():
    lamina.utils.set_random_seed(1)
    x = np.random.default_rng(1).standard_normal((4, 5))
    # the mask is drawn per call: fix it by reseeding before every call
    def f(x):
        lamina.utils.set_random_seed(7)
        return ops.dropout(x, 0.4)
    check_grad(f, x)

    def g(x):
        lamina.utils.set_random_seed(7)
        return ops.gaussian_dropout(x, 0.4)
    check_grad(g, x)

    def h(x):
        lamina.utils.set_random_seed(7)
        return ops.gaussian_noise(x, 0.5)
    check_grad(h, x)


def test_noise_shape_shares_the_decision():
    x = np.ones((6, 5, 4), np.float32)
    y = ops.dropout(x, 0.5, noise_shape=(None, 1, 4)).numpy()
    assert (y == y[:, :1, :]).all()  # same mask along axis 1
    with pytest.raises(ValueError, match="noise_shape"):
        ops.dropout(x, 0.5, noise_shape=(6, 2, 4))


def test_identity_at_inference_and_rate_zero():
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    for layer in (layers.Dropout(0.5), layers.GaussianNoise(0.3), layers.GaussianDropout(0.4),
                  layers.SpatialDropout1D(0.5)):
        inp = x[:, :, None] if isinstance(layer, layers.SpatialDropout1D) else x
        np.testing.assert_array_equal(layer(inp).numpy(), inp)
        np.testing.assert_array_equal(layer(inp, training=False).numpy(), inp)
    np.testing.assert_array_equal(ops.dropout(x, 0.0).numpy(), x)
    np.testing.assert_array_equal(ops.dropout(x, 0.5, training=False).numpy(), x)


def test_seeded_reproducibility():
    x = np.ones((10, 10), np.float32)
    lamina.utils.set_random_seed(42)
    a = layers.Dropout(0.5)(x, training=True).numpy()
    b = ops.gaussian_noise(x, 0.1).numpy()
    lamina.utils.set_random_seed(42)
    np.testing.assert_array_equal(layers.Dropout(0.5)(x, training=True).numpy(), a)
    np.testing.assert_array_equal(ops.gaussian_noise(x, 0.1).numpy(), b)
    # a layer seed gives its own repeatable stream, whatever the global one does
    c = layers.Dropout(0.5, seed=3)(x, training=True).numpy()
    lamina.utils.set_random_seed(99)
    np.testing.assert_array_equal(layers.Dropout(0.5, seed=3)(x, training=True).numpy(), c)
    assert not np.array_equal(a, c)


def test_spatial_dropout_drops_whole_channels():
    x = np.ones((8, 5, 5, 6), np.float32)
    y = layers.SpatialDropout2D(0.5)(x, training=True).numpy()
    per_channel = y.reshape(8, 25, 6)
    assert (per_channel == per_channel[:, :1, :]).all()
    assert 0 < (per_channel[:, 0, :] == 0).mean() < 1
    y1 = layers.SpatialDropout1D(0.5)(np.ones((8, 7, 6), np.float32), training=True).numpy()
    assert (y1 == y1[:, :1, :]).all()
    yf = layers.SpatialDropout2D(0.5, data_format="channels_first")(x, training=True).numpy()
    assert (yf.reshape(8, 5, 30) == yf.reshape(8, 5, 30)[:, :, :1]).all()


def test_gaussian_layers_statistics():
    x = np.ones((300, 100), np.float32)
    n = layers.GaussianNoise(0.5)(x, training=True).numpy() - 1
    assert abs(n.mean()) < 0.01 and abs(n.std() - 0.5) < 0.01
    m = layers.GaussianDropout(0.2)(x, training=True).numpy()
    assert abs(m.mean() - 1) < 0.01 and abs(m.std() - np.sqrt(0.2 / 0.8)) < 0.01


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, "0.5", None])
def test_bad_rate_raises_clear_error(bad):
    with pytest.raises(ValueError, match=r"rate must be a float in \[0, 1\)"):
        layers.Dropout(bad, name="drop")
    with pytest.raises(ValueError, match="rate"):
        ops.dropout(np.ones(3, np.float32), bad)
    with pytest.raises(ValueError, match="GaussianDropout"):
        layers.GaussianDropout(bad)


def test_gaussian_noise_bad_stddev():
    with pytest.raises(ValueError, match="stddev"):
        layers.GaussianNoise(-1.0)


def test_activity_regularization_adds_loss():
    x = Tensor(np.array([[1.0, -2.0], [3.0, 0.5]], np.float32), requires_grad=True)
    layer = layers.ActivityRegularization(l1=0.1, l2=0.01)
    y = layer(x)
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    (loss,) = layer.losses
    # Keras 3.15 divides an activity penalty by the batch size (here 2); checked against real Keras
    assert float(loss.item()) == pytest.approx((0.1 * 6.5 + 0.01 * 14.25) / 2, rel=1e-6)
    (g,) = grad(loss, [x])
    np.testing.assert_allclose(g, (0.1 * np.sign(x.numpy()) + 0.02 * x.numpy()) / 2, rtol=1e-6)
    layer(x)
    assert len(layer.losses) == 1  # losses of the last call only


@pytest.mark.parametrize("cls,kwargs,shape", [
    (layers.Dropout, {"rate": 0.5, "noise_shape": (None, 1)}, (4, 5)),
    (layers.SpatialDropout1D, {"rate": 0.3}, (2, 4, 3)),
    (layers.SpatialDropout2D, {"rate": 0.3}, (2, 3, 3, 4)),
    (layers.SpatialDropout3D, {"rate": 0.3}, (2, 2, 2, 2, 3)),
    (layers.GaussianNoise, {"stddev": 0.2, "seed": 1}, (4, 5)),
    (layers.GaussianDropout, {"rate": 0.2}, (4, 5)),
    (layers.ActivityRegularization, {"l1": 0.01}, (4, 5)),
])
def test_check_layer_regularization(cls, kwargs, shape):
    layer = check_layer(cls, kwargs, shape, shape, 0, 0, [], check_bad_shape=False)
    assert layer.count_params() == 0
    assert layer(lamina.Input(shape[1:])).shape == (None,) + shape[1:]


def test_spatial_dropout_rank_error_names_layer():
    with pytest.raises(ValueError, match="sd"):
        layers.SpatialDropout2D(0.5, name="sd")(np.ones((2, 3, 4), np.float32))


@pytest.mark.parametrize("shape,mshape", [((8, 5, 5, 6), (8, 1, 1, 6)), ((4, 7, 3), (4, 1, 3)),
                                          ((3, 4, 6, 2, 5), (3, 1, 1, 1, 5)), ((2, 6, 4, 4), (2, 6, 1, 1)),
                                          ((5, 9, 1100), (5, 1, 1100))])
def test_a_mask_shared_along_middle_axes_multiplies_exactly(shape, mshape):
    """A SpatialDropout mask (N, 1, ..., 1, C) is tiled along the channels for NumPy's inner loop: the products are
    a * m's to the bit, forward and backward, whatever the shapes (channels first: the plain broadcast)."""
    from lamina.ops.random import MultiplyNoise
    rng = np.random.default_rng(2)
    a = rng.standard_normal(shape).astype(np.float32)
    m = (rng.random(mshape) > 0.4).astype(np.float32) * np.float32(1 / 0.6)
    gy = rng.standard_normal(shape).astype(np.float32)
    t = Tensor(a, requires_grad=True)
    y = MultiplyNoise.apply(t, noise=m)
    (g,) = grad(y, [t], grad_output=Tensor(gy))
    np.testing.assert_array_equal(np.asarray(y.data), a * m)
    np.testing.assert_array_equal(np.asarray(g.data), gy * m)


def test_large_normal_noise_is_drawn_in_parts_the_same_on_any_thread_count(monkeypatch):
    """Normal noise from _NOISE_SPLIT values on is drawn in fixed parts, each from a generator keyed by one seed the
    stream gives: the same values on one thread and on two (and after reseeding), each part standard normal and
    the parts uncorrelated; GaussianDropout's multiplicative noise the same way."""
    from lamina import threads
    from lamina.ops import random as rnd
    shape = (rnd._NOISE_SPLIT // 100 + 3, 100)   # past the split, parts of unequal length
    x = np.zeros(shape, np.float32)
    widths = []
    real = threads.run_split
    monkeypatch.setattr(threads, "run_split", lambda parts: (widths.append(len(parts)), real(parts))[1])
    lamina.utils.set_random_seed(5)
    monkeypatch.setattr(threads, "split_width", lambda *a: 2)
    two = ops.gaussian_noise(x, 1.0).numpy()
    assert widths == [rnd._NOISE_PARTS]
    lamina.utils.set_random_seed(5)
    monkeypatch.setattr(threads, "split_width", lambda *a: 1)
    one = ops.gaussian_noise(x, 1.0).numpy()
    assert widths == [rnd._NOISE_PARTS]   # (one thread: no split)
    np.testing.assert_array_equal(one, two)
    flat = one.reshape(-1)
    half = flat.size // 2
    for part in (flat[:half], flat[half:]):
        assert abs(part.mean()) < 0.01 and abs(part.std() - 1) < 0.01
    assert abs(np.corrcoef(flat[:half - 1], flat[half:2 * half - 1])[0, 1]) < 0.01
    assert not np.array_equal(flat[:1000], flat[half:half + 1000])
    assert not np.array_equal(ops.gaussian_noise(x, 1.0).numpy(), one)   # the stream moved on
    m = ops.gaussian_dropout(np.ones(shape, np.float32), 0.2).numpy()
    assert abs(m.mean() - 1) < 0.01 and abs(m.std() - 0.5) < 0.01


def test_spatial_dropout_products_split_over_threads(monkeypatch):
    """SpatialDropout's products with its channel mask (tiled along the positions), forward and backward, with the
    samples split over three threads: the values of one thread's."""
    from lamina import threads
    x = np.random.default_rng(0).standard_normal((7, 6, 5, 16)).astype(np.float32)
    gy = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)

    def run():
        lamina.utils.set_random_seed(3)
        xt = Tensor(x, requires_grad=True)
        y = layers.SpatialDropout2D(0.4)(xt, training=True)
        return np.asarray(y.data), np.asarray(grad(y, [xt], grad_output=Tensor(gy))[0].data)
    one = run()
    widths = []
    real = threads.run_split
    monkeypatch.setattr(threads, "split_width", lambda *a: 3)
    monkeypatch.setattr(threads, "run_split", lambda parts: (widths.append(len(parts)), real(parts))[1])
    three = run()
    assert widths == [3, 3]
    for u, v in zip(one, three):
        np.testing.assert_array_equal(u, v)
    assert (one[0] == 0).any() and (one[0] != 0).any()


@pytest.mark.parametrize("shape", [(4, 8, 8, 6), (3, 5, 7, 4), (2, 6, 5)])
def test_spatial_dropout_backward_takes_the_forwards_mask(shape):
    """dx = dy * mask, with the channel mask the forward drew (tiled along the channels once, kept for backward's
    product of the same shape): exactly dy times the forward's output for an input of ones."""
    layer = layers.SpatialDropout2D(0.4) if len(shape) == 4 else layers.SpatialDropout1D(0.4)
    x = Tensor(np.ones(shape, np.float32), requires_grad=True)
    y = layer(x, training=True)
    gy = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    (dx,) = grad(y, [x], grad_output=Tensor(gy))
    mask = y.numpy()
    assert 0 < (mask == 0).mean() < 1
    np.testing.assert_array_equal(np.asarray(dx), gy * mask)
