"""Convolution layers: layer contract, PyTorch parity with converted weights, Keras shape rules, the seed CNN."""
import numpy as np
import pytest

import lamina
from lamina import Tensor, grad, layers
from lamina.testing import check_grad, check_layer

R = np.random.default_rng(5)


# ----------------------------------------------------------------------------- contract
@pytest.mark.parametrize("cls,kwargs,in_shape,out_shape,kshape", [
    (layers.Conv2D, dict(filters=4, kernel_size=3), (2, 7, 6, 3), (2, 5, 4, 4), (3, 3, 3, 4)),
    (layers.Conv2D, dict(filters=4, kernel_size=(3, 2), strides=2, padding="same"), (2, 7, 6, 3), (2, 4, 3, 4),
     (3, 2, 3, 4)),
    (layers.Conv2D, dict(filters=2, kernel_size=3, dilation_rate=2, activation="tanh"), (1, 7, 8, 2), (1, 3, 4, 2),
     (3, 3, 2, 2)),
    (layers.Conv1D, dict(filters=3, kernel_size=3, padding="causal"), (2, 6, 2), (2, 6, 3), (3, 2, 3)),
    (layers.Conv1D, dict(filters=3, kernel_size=2, strides=2), (2, 7, 2), (2, 3, 3), (2, 2, 3)),
    (layers.Conv2DTranspose, dict(filters=3, kernel_size=3, strides=2, padding="same"), (2, 3, 4, 2), (2, 6, 8, 3),
     (3, 3, 3, 2)),
    (layers.Conv2DTranspose, dict(filters=3, kernel_size=3, strides=2), (1, 3, 4, 2), (1, 7, 9, 3), (3, 3, 3, 2)),
    (layers.Conv2DTranspose, dict(filters=3, kernel_size=3, strides=2, output_padding=1), (1, 3, 4, 2),
     (1, 8, 10, 3), (3, 3, 3, 2)),
    (layers.Conv1DTranspose, dict(filters=2, kernel_size=4, strides=3), (2, 3, 2), (2, 10, 2), (4, 2, 2)),
])
def test_conv_layer_contract(cls, kwargs, in_shape, out_shape, kshape):
    layer = check_layer(cls, kwargs, in_shape, out_shape, expected_num_trainable_weights=2,
                        expected_num_non_trainable_weights=0, expected_weight_names=["kernel", "bias"])
    assert layer.kernel.shape == kshape and layer.bias.shape == (kwargs["filters"],)
    assert layer.count_params() == int(np.prod(kshape)) + kwargs["filters"]


def test_conv_without_bias_has_one_weight():
    check_layer(layers.Conv2D, dict(filters=2, kernel_size=2, use_bias=False), (1, 4, 4, 3), (1, 3, 3, 2),
                expected_num_trainable_weights=1, expected_weight_names=["kernel"])


@pytest.mark.parametrize("cls,kwargs,shape", [
    (layers.Conv2D, dict(filters=3, kernel_size=(2, 3), strides=(1, 2), padding="same"), (2, 5, 6, 2)),
    (layers.Conv1D, dict(filters=2, kernel_size=3, padding="causal", dilation_rate=2), (2, 7, 3)),
    (layers.Conv2DTranspose, dict(filters=2, kernel_size=3, strides=2, padding="same"), (1, 3, 3, 2)),
    (layers.Conv1DTranspose, dict(filters=2, kernel_size=3, strides=2), (2, 3, 2)),
])
def test_conv_layer_gradients(cls, kwargs, shape):
    layer = cls(**kwargs)
    check_grad(layer, R.standard_normal(shape))


def test_conv_defaults_and_initializers_as_keras():
    layer = layers.Conv2D(8, 3)
    layer.build((None, 10, 10, 4))
    assert layer.strides == (1, 1) and layer.padding == "valid" and layer.dilation_rate == (1, 1)
    assert layer.data_format == "channels_last" and layer.use_bias
    np.testing.assert_array_equal(layer.bias.numpy(), 0)
    limit = np.sqrt(6 / (9 * 4 + 9 * 8))  # glorot_uniform: fan_in = kh*kw*in, fan_out = kh*kw*filters
    assert np.abs(layer.kernel.numpy()).max() <= limit and np.abs(layer.kernel.numpy()).max() > 0.8 * limit


def test_conv_errors_name_the_layer():
    with pytest.raises(ValueError, match="groups must be a positive int dividing filters"):
        layers.Conv2D(4, 3, groups=3)
    with pytest.raises(ValueError, match="filters"):
        layers.Conv2D(0, 3)
    with pytest.raises(ValueError, match="'valid', 'same', 'causal'"):
        layers.Conv1D(2, 3, padding="full")
    with pytest.raises(ValueError, match="'valid', 'same'"):
        layers.Conv2D(2, 3, padding="causal")
    with pytest.raises(ValueError, match="dilation_rate > 1"):
        layers.Conv2D(2, 3, strides=2, dilation_rate=2)
    with pytest.raises(ValueError, match="data_format"):
        layers.Conv2D(2, 3, data_format="NHWC")
    with pytest.raises(ValueError, match="output_padding"):
        layers.Conv2DTranspose(2, 3, strides=2, output_padding=2)
    layer = layers.Conv2D(2, 3, name="conv_x")
    layer(np.zeros((1, 5, 5, 3), np.float32))
    with pytest.raises(ValueError, match="conv_x.*axis -1.*3"):
        layer(np.zeros((1, 5, 5, 4), np.float32))
    with pytest.raises(ValueError, match="conv_x.*ndim=4"):
        layer(np.zeros((5, 5, 3), np.float32))


def test_conv2d_channels_first_equals_transposed_channels_last():
    x = R.standard_normal((2, 3, 6, 5)).astype(np.float32)   # (N, C, H, W)
    cf = layers.Conv2D(4, 3, strides=2, padding="same", data_format="channels_first")
    cl = layers.Conv2D(4, 3, strides=2, padding="same")
    y1 = cf(x)
    cl.build((None, 6, 5, 3))
    cl.set_weights(cf.get_weights())
    y2 = cl(x.transpose(0, 2, 3, 1)).numpy().transpose(0, 3, 1, 2)
    np.testing.assert_allclose(y1.numpy(), y2, rtol=1e-5, atol=1e-6)
    assert y1.shape == (2, 4, 3, 3) and cf.compute_output_shape((None, 3, 6, 5)) == (None, 4, 3, 3)


def test_symbolic_shapes_with_unknown_sizes():
    x = lamina.Input((None, None, 3))
    y = layers.Conv2D(4, 3, strides=2, padding="same")(x)
    assert y.shape == (None, None, None, 4)
    assert layers.Conv2DTranspose(2, 3, strides=2).compute_output_shape((None, 5, None, 3)) == (None, 11, None, 2)


# ----------------------------------------------------------------------------- the seed CNN
def test_seed_cnn_shapes_and_params():
    stack = [layers.Conv2D(32, (3, 3), activation="relu", input_shape=(32, 32, 3)), layers.MaxPooling2D((2, 2)),
             layers.Conv2D(64, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
             layers.Conv2D(64, (3, 3), activation="relu"), layers.Flatten(),
             layers.Dense(64, activation="relu"), layers.Dense(10)]
    expected = [(2, 30, 30, 32), (2, 15, 15, 32), (2, 13, 13, 64), (2, 6, 6, 64), (2, 4, 4, 64), (2, 1024),
                (2, 64), (2, 10)]
    params = [896, 0, 18496, 0, 36928, 0, 65600, 650]
    x = R.random((2, 32, 32, 3)).astype(np.float32)
    for layer, shape, n in zip(stack, expected, params):
        x = layer(x)
        assert x.shape == shape and x.dtype == np.float32
        assert layer.count_params() == n
    assert sum(layer.count_params() for layer in stack) == 122570
    # and it trains: gradients reach every weight
    weights = [w for layer in stack for w in layer.trainable_weights]
    grads = grad((x * x).mean(), weights)
    assert all(g is not None and g.shape == w.shape and g.dtype == np.float32 for g, w in zip(grads, weights))


# ----------------------------------------------------------------------------- PyTorch parity
torch = pytest.importorskip("torch")
F = torch.nn.functional


def keras_same_pads(n, k, s, d=1):
    keff = (k - 1) * d + 1
    total = max((-(-n // s) - 1) * s + keff - n, 0)
    return total // 2, total - total // 2


def _ours(layer, x):
    t = Tensor(x, requires_grad=True)
    y = layer(t)
    gy = R.standard_normal(y.shape).astype(np.float32)
    gs = grad((y * Tensor(gy)).sum(), [t, layer.kernel, layer.bias])
    return y.numpy(), gy, gs


@pytest.mark.parametrize("kwargs", [
    dict(filters=4, kernel_size=3),
    dict(filters=5, kernel_size=(3, 2), strides=2, padding="same", activation="relu"),
    dict(filters=3, kernel_size=3, padding="same", dilation_rate=2),
    dict(filters=3, kernel_size=(2, 4), strides=(1, 3)),
])
def test_conv2d_layer_matches_torch(kwargs):
    layer = layers.Conv2D(bias_initializer="glorot_uniform", **kwargs)
    x = R.standard_normal((2, 7, 8, 3)).astype(np.float32)
    y, gy, (gx, gw, gb) = _ours(layer, x)
    k, b = layer.get_weights()
    s, d = layer.strides, layer.dilation_rate
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    wt = torch.tensor(k.transpose(3, 2, 0, 1).copy(), requires_grad=True)    # (kh,kw,in,out) -> (out,in,kh,kw)
    bt = torch.tensor(b, requires_grad=True)
    xpad = xt
    if layer.padding == "same":
        (t_, b_), (l_, r_) = [keras_same_pads(x.shape[1 + a], layer.kernel_size[a], s[a], d[a]) for a in range(2)]
        xpad = F.pad(xt, (l_, r_, t_, b_))
    yt = F.conv2d(xpad, wt, bt, s, 0, d)
    if kwargs.get("activation") == "relu":
        yt = F.relu(yt)
    (yt * torch.tensor(gy.transpose(0, 3, 1, 2).copy())).sum().backward()
    np.testing.assert_allclose(y, yt.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gx, xt.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gw, wt.grad.numpy().transpose(2, 3, 1, 0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gb, bt.grad.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("padding,strides,dilation", [("valid", 1, 1), ("causal", 1, 2), ("same", 2, 1)])
def test_conv1d_layer_matches_torch(padding, strides, dilation):
    layer = layers.Conv1D(4, 3, strides=strides, padding=padding, dilation_rate=dilation,
                          bias_initializer="glorot_uniform")
    x = R.standard_normal((2, 9, 3)).astype(np.float32)
    y, gy, (gx, gw, gb) = _ours(layer, x)
    k, b = layer.get_weights()
    xt = torch.tensor(x.transpose(0, 2, 1).copy(), requires_grad=True)
    wt = torch.tensor(k.transpose(2, 1, 0).copy(), requires_grad=True)      # (k,in,out) -> (out,in,k)
    bt = torch.tensor(b, requires_grad=True)
    pads = {"valid": (0, 0), "causal": (2 * dilation, 0), "same": keras_same_pads(9, 3, strides, dilation)}[padding]
    yt = F.conv1d(F.pad(xt, pads), wt, bt, strides, 0, dilation)
    (yt * torch.tensor(gy.transpose(0, 2, 1).copy())).sum().backward()
    np.testing.assert_allclose(y, yt.detach().numpy().transpose(0, 2, 1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gx, xt.grad.numpy().transpose(0, 2, 1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gw, wt.grad.numpy().transpose(2, 1, 0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gb, bt.grad.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kwargs,crop", [
    (dict(filters=3, kernel_size=3, strides=2, padding="same"), ((0, 1), (0, 1))),   # Keras crops 0 before, 1 after
    (dict(filters=3, kernel_size=4, strides=2, padding="same"), ((1, 1), (1, 1))),
    (dict(filters=2, kernel_size=3, strides=1, padding="same"), ((1, 1), (1, 1))),
    (dict(filters=2, kernel_size=(3, 4), strides=(2, 3)), ((0, 0), (0, 0))),
])
def test_conv2d_transpose_layer_matches_torch(kwargs, crop):
    layer = layers.Conv2DTranspose(bias_initializer="glorot_uniform", **kwargs)
    x = R.standard_normal((2, 4, 3, 2)).astype(np.float32)
    y, gy, (gx, gw, gb) = _ours(layer, x)
    k, b = layer.get_weights()
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    wt = torch.tensor(k.transpose(3, 2, 0, 1).copy(), requires_grad=True)    # (kh,kw,out,in) -> (in,out,kh,kw)
    bt = torch.tensor(b, requires_grad=True)
    full = F.conv_transpose2d(xt, wt, bt, layer.strides)
    (t_, b_), (l_, r_) = crop
    yt = full[:, :, t_:full.shape[2] - b_, l_:full.shape[3] - r_]
    (yt * torch.tensor(gy.transpose(0, 3, 1, 2).copy())).sum().backward()
    np.testing.assert_allclose(y, yt.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gx, xt.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gw, wt.grad.numpy().transpose(2, 3, 1, 0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gb, bt.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_conv1d_transpose_layer_matches_torch():
    layer = layers.Conv1DTranspose(3, 3, strides=2, bias_initializer="glorot_uniform")
    x = R.standard_normal((2, 5, 2)).astype(np.float32)
    y, gy, (gx, gw, gb) = _ours(layer, x)
    k, b = layer.get_weights()
    xt = torch.tensor(x.transpose(0, 2, 1).copy(), requires_grad=True)
    wt = torch.tensor(k.transpose(2, 1, 0).copy(), requires_grad=True)      # (k,out,in) -> (in,out,k)
    bt = torch.tensor(b, requires_grad=True)
    yt = F.conv_transpose1d(xt, wt, bt, 2)     # 'valid': the full canvas, 5*2 + 1 = 11 steps
    (yt * torch.tensor(gy.transpose(0, 2, 1).copy())).sum().backward()
    np.testing.assert_allclose(y, yt.detach().numpy().transpose(0, 2, 1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gx, xt.grad.numpy().transpose(0, 2, 1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gw, wt.grad.numpy().transpose(2, 1, 0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gb, bt.grad.numpy(), rtol=1e-4, atol=1e-4)
