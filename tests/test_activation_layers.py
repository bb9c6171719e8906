"""Activation layers: contract, forward and gradients against PyTorch or Keras's formula, masks, argument errors."""
import numpy as np
import pytest

from lamina import Tensor, grad, layers
from lamina.testing import check_grad, check_layer

R = np.random.default_rng(7)


def away_from_kinks(shape, kinks=(0.0,)):
    x = R.uniform(-3, 3, shape)
    for k in kinks:
        x[np.abs(x - k) < 0.05] += 0.2
    return x


def _forward_and_grad(layer, x, gy, *weights):
    t = Tensor(x, requires_grad=True)
    y = layer(t)
    gs = grad((y * Tensor(gy)).sum(), [t, *weights])
    return y.numpy(), gs


def _keras_relu(x, max_value, negative_slope, threshold):
    """Keras 3's relu written out: min(x, max_value) above the threshold, slope * (x - threshold) below."""
    pos = np.where(x > threshold, x, 0.0)
    if max_value is not None:
        pos = np.clip(pos, 0.0, max_value)
    return pos - negative_slope * np.maximum(threshold - x, 0.0)


@pytest.mark.parametrize("kwargs", [{}, {"max_value": 1.5}, {"negative_slope": 0.1}, {"threshold": 0.5},
                                    {"max_value": 2.0, "negative_slope": 0.2, "threshold": 0.5}])
def test_relu_matches_keras_formula(kwargs):
    full = {"max_value": None, "negative_slope": 0.0, "threshold": 0.0, **kwargs}
    x = away_from_kinks((4, 6), kinks=(0.0, 0.5, 1.5, 2.0)).astype(np.float32)
    y = layers.ReLU(**kwargs)(x).numpy()
    np.testing.assert_allclose(y, _keras_relu(x.astype(np.float64), **full), rtol=1e-6, atol=1e-7)
    check_grad(layers.ReLU(**kwargs), x.astype(np.float64))


@pytest.mark.parametrize("cls,kwargs,torch_fn", [
    (layers.ReLU, {"max_value": 6.0}, lambda F, t: F.relu6(t)),
    (layers.LeakyReLU, {}, lambda F, t: F.leaky_relu(t, 0.3)),
    (layers.LeakyReLU, {"negative_slope": 0.05}, lambda F, t: F.leaky_relu(t, 0.05)),
    (layers.ELU, {}, lambda F, t: F.elu(t)),
    (layers.ELU, {"alpha": 0.5}, lambda F, t: F.elu(t, 0.5)),
    (layers.Softmax, {}, lambda F, t: F.softmax(t, -1)),
    (layers.Softmax, {"axis": 1}, lambda F, t: F.softmax(t, 1)),
])
def test_activation_layers_match_torch(cls, kwargs, torch_fn):
    torch = pytest.importorskip("torch")
    x = away_from_kinks((3, 4, 5), kinks=(0.0, 6.0)).astype(np.float32)
    gy = R.standard_normal(x.shape).astype(np.float32)
    y, (gx,) = _forward_and_grad(cls(**kwargs), x, gy)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch_fn(torch.nn.functional, xt)
    (yt * torch.tensor(gy)).sum().backward()
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_leaky_relu_defaults_and_keras2_alpha():
    assert layers.LeakyReLU().negative_slope == 0.3      # Keras 3 layer default (the op's is 0.2)
    layer = layers.LeakyReLU(alpha=0.1)
    assert layer.negative_slope == 0.1 and layer.get_config()["negative_slope"] == 0.1
    assert "alpha" not in layer.get_config()
    np.testing.assert_allclose(layer(np.array([-2.0, 3.0], np.float32)).numpy(), [-0.2, 3.0], rtol=1e-6)


@pytest.mark.parametrize("shape,shared_axes", [((2, 3, 4), None), ((2, 3, 4), [1]), ((2, 5, 4, 3), [1, 2]),
                                                ((2, 5, 4, 3), 3)])
def test_prelu_matches_torch(shape, shared_axes):
    torch = pytest.importorskip("torch")
    layer = layers.PReLU(shared_axes=shared_axes)
    x = away_from_kinks(shape).astype(np.float32)
    layer(x)
    shared = [] if shared_axes is None else ([shared_axes] if isinstance(shared_axes, int) else shared_axes)
    alpha_shape = tuple(1 if i in shared else shape[i] for i in range(1, len(shape)))
    assert layer.alpha.shape == alpha_shape and layer.count_params() == int(np.prod(alpha_shape))
    alpha = R.uniform(0.05, 0.5, alpha_shape).astype(np.float32)
    layer.set_weights([alpha])
    gy = R.standard_normal(shape).astype(np.float32)
    y, (gx, ga) = _forward_and_grad(layer, x, gy, layer.alpha)
    # torch's prelu wants one weight per channel (axis 1); with an alpha of the input's own shape the
    # formula relu(x) - alpha * relu(-x) (Keras's) is the reference for both torch and NumPy.
    xt = torch.tensor(x, requires_grad=True)
    at = torch.tensor(alpha, requires_grad=True)
    yt = torch.relu(xt) - at * torch.relu(-xt)
    (yt * torch.tensor(gy)).sum().backward()
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ga, at.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_prelu_per_channel_matches_torch_prelu():
    torch = pytest.importorskip("torch")
    x = away_from_kinks((2, 4, 4, 3)).astype(np.float32)  # NHWC, one slope per channel
    layer = layers.PReLU(shared_axes=[1, 2])
    layer(x)
    alpha = np.array([0.1, 0.25, 0.4], np.float32)
    layer.set_weights([alpha.reshape(1, 1, 3)])
    gy = R.standard_normal(x.shape).astype(np.float32)
    y, (gx, ga) = _forward_and_grad(layer, x, gy, layer.alpha)
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    at = torch.tensor(alpha, requires_grad=True)
    yt = torch.nn.functional.prelu(xt, at)
    (yt * torch.tensor(gy.transpose(0, 3, 1, 2).copy())).sum().backward()
    np.testing.assert_allclose(y, yt.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gx, xt.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ga.reshape(-1), at.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_prelu_grad_check():
    layer = layers.PReLU(alpha_initializer="random_uniform", shared_axes=[1])
    check_grad(layer, away_from_kinks((2, 3, 4)))


@pytest.mark.parametrize("cls,kwargs,num_weights", [
    (layers.ReLU, {"max_value": 3.0, "negative_slope": 0.1}, 0), (layers.LeakyReLU, {"negative_slope": 0.2}, 0),
    (layers.ELU, {"alpha": 0.7}, 0), (layers.PReLU, {"shared_axes": [1]}, 1), (layers.Softmax, {"axis": -1}, 0),
])
def test_activation_layer_contract(cls, kwargs, num_weights):
    layer = check_layer(cls, kwargs, input_shape=(2, 3, 4), expected_output_shape=(2, 3, 4),
                        expected_num_trainable_weights=num_weights,
                        expected_weight_names=["alpha"] if num_weights else [])
    if cls is layers.PReLU:
        assert layer.alpha.shape == (1, 4)


def test_prelu_default_alpha_is_zero_and_wrong_shape_is_named():
    layer = layers.PReLU(name="act")
    x = np.array([[-1.0, 2.0, -3.0]], np.float32)
    np.testing.assert_array_equal(layer(x).numpy(), [[0.0, 2.0, 0.0]])   # 'Zeros': starts as a ReLU
    with pytest.raises(ValueError, match=r"'act'.*expected axis 1.*value 3.*\(1, 4\)"):
        layer(np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="shared_axes"):
        layers.PReLU(shared_axes=[0])(x)


def test_softmax_mask_gives_masked_positions_zero_probability():
    x = R.standard_normal((2, 5)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 0, 1, 0, 1]], bool)
    y = layers.Softmax()(x, mask=mask).numpy()
    ref = np.exp(np.where(mask, x, -np.inf))
    ref /= ref.sum(-1, keepdims=True)
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-7)
    assert (y[~mask] == 0).all()
    # an entirely masked row: zeros (the output is multiplied by the mask), never NaN
    y = layers.Softmax()(x, mask=np.zeros((2, 5), bool)).numpy()
    assert np.isfinite(y).all() and not y.any()
    # gradient of the masked softmax
    layer = layers.Softmax()
    check_grad(lambda t: layer(t, mask=mask), x.astype(np.float64))


def test_softmax_over_several_axes_and_mask_propagation():
    x = R.standard_normal((2, 3, 4)).astype(np.float32)
    y = layers.Softmax(axis=(1, 2))(x).numpy()
    ref = np.exp(x) / np.exp(x).sum(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(y, ref, rtol=1e-5)
    check_grad(layers.Softmax(axis=(1, 2)), x.astype(np.float64))
    emb = layers.Embedding(4, 3, mask_zero=True)(np.array([[1, 2, 0]]))
    out = layers.ReLU()(emb)
    np.testing.assert_array_equal(out._keras_mask.numpy(), [[True, True, False]])


@pytest.mark.parametrize("cls,kwargs,arg", [(layers.ReLU, {"max_value": -1.0}, "max_value"),
                                            (layers.ReLU, {"negative_slope": -0.1}, "negative_slope"),
                                            (layers.ReLU, {"threshold": -1}, "threshold"),
                                            (layers.LeakyReLU, {"negative_slope": None}, "negative_slope")])
def test_bad_arguments_raise(cls, kwargs, arg):
    with pytest.raises(ValueError, match=f"{arg} must be a non-negative number"):
        cls(**kwargs)
