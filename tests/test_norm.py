"""Normalisation ops and layers: gradient checks, PyTorch parity, Keras's moving-statistics rule."""
import numpy as np
import pytest

import lamina
from lamina import Tensor, grad, layers, ops
from lamina.testing import check_grad, check_layer

R = np.random.default_rng(3)


def _loss_grads(y, gy, targets):
    return grad((y * Tensor(gy)).sum(), targets)


# ----------------------------------------------------------------------------- op gradients
@pytest.mark.parametrize("shape,axis", [((5, 4), -1), ((3, 4, 2, 3), -1), ((3, 4, 2), 1)])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_inference_grad(shape, axis, affine):
    C = shape[axis]
    g = R.standard_normal(C) + 1.5 if affine else None
    b = R.standard_normal(C) if affine else None
    args = [R.standard_normal(shape)] + ([g, b] if affine else []) + [R.standard_normal(C), R.uniform(0.5, 2, C)]
    if affine:
        check_grad(lambda x, g, b, m, v: ops.batch_norm(x, g, b, m, v, 1e-3, axis), *args)
    else:
        check_grad(lambda x, m, v: ops.batch_norm(x, None, None, m, v, 1e-3, axis), *args)


@pytest.mark.parametrize("shape,axis", [((6, 3), -1), ((3, 4, 2, 3), -1), ((3, 4, 5), 1)])
def test_batch_norm_training_grad_flows_through_batch_statistics(shape, axis):
    C = shape[axis]

    def f(x, g, b):
        y, mean, var = ops.batch_norm_training(x, g, b, 1e-3, axis)
        # use the statistics outputs too, so their backward is checked
        return y * 1.0 + (mean * var).sum() * 0.3
    check_grad(f, R.standard_normal(shape) * 2 + 1, R.standard_normal(C) + 1, R.standard_normal(C))


@pytest.mark.parametrize("axis", [-1, 1])
def test_batch_norm_training_grad_through_the_statistics_alone(axis):
    """Only the mean and variance reach the loss: the output's gradient is None (channels last: the row path)."""
    check_grad(lambda x: (ops.batch_norm_training(x, None, None, 1e-3, axis)[1] * 2.0
                          + ops.batch_norm_training(x, None, None, 1e-3, axis)[2]),
               R.standard_normal((4, 3, 5)) * 2 + 1)


def test_batch_norm_training_rows_equal_the_general_path():
    """Channels last runs on (M, C) rows with tiled per-channel factors; channels first on broadcast axes."""
    x = R.standard_normal((6, 5, 7, 8)) * 3 + 2
    g, b, gy = R.standard_normal(8) + 1, R.standard_normal(8), R.standard_normal((6, 5, 7, 8))
    xt, gt, bt = (Tensor(a, requires_grad=True) for a in (x, g, b))
    y, mean, var = ops.batch_norm_training(xt, gt, bt, 1e-3, -1)
    grads = _loss_grads(y + (mean * var).sum(), gy, [xt, gt, bt])
    xf, gf, bf = (Tensor(a, requires_grad=True) for a in (np.moveaxis(x, -1, 1).copy(), g, b))
    yf, meanf, varf = ops.batch_norm_training(xf, gf, bf, 1e-3, 1)
    gradsf = _loss_grads(yf + (meanf * varf).sum(), np.moveaxis(gy, -1, 1), [xf, gf, bf])
    np.testing.assert_allclose(np.moveaxis(yf.numpy(), 1, -1), y.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(meanf.numpy(), mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(np.moveaxis(np.asarray(gradsf[0]), 1, -1), np.asarray(grads[0]), rtol=1e-9, atol=1e-11)
    for a, c in zip(gradsf[1:], grads[1:]):
        np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-10)


@pytest.mark.parametrize("shape,axis", [((6, 5, 7, 8), 1), ((4, 6, 9), 1), ((3, 4, 2, 3, 5), 1), ((5, 3, 4, 6), 2)])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("strided", [False, True])
def test_batch_norm_training_over_a_channel_axis_before_others_matches_torch(shape, axis, affine, strided):
    """A channel axis that is not the last (channels first), float32: the (before, C, after) view with its GEMV sums
    and the folded backward (a strided input: NumPy's broadcasts over the array as it is), against PyTorch's
    batch_norm with the channels moved to axis 1: output, statistics, and the gradients of x, gamma and beta, with
    the statistics in the loss too."""
    torch = pytest.importorskip("torch")
    C = shape[axis]
    x = (R.standard_normal(shape) * 2 + 0.5).astype(np.float32)
    if strided:
        x = np.repeat(x, 2, axis=0)[::2]
    assert x.flags.c_contiguous != strided
    g = (R.standard_normal(C) + 1).astype(np.float32) if affine else None
    b = R.standard_normal(C).astype(np.float32) if affine else None
    gy = R.standard_normal(shape).astype(np.float32)
    ts = [Tensor(a, requires_grad=True) for a in (x, g, b) if a is not None]
    y, mean, var = ops.batch_norm_training(ts[0], *(ts[1:] if affine else (None, None)), 1e-3, axis)
    grads = _loss_grads(y + (mean * var).sum() * 0.3, gy, ts)
    first = [torch.tensor(np.moveaxis(x, axis, 1).copy(), requires_grad=True)]
    first += [torch.tensor(a, requires_grad=True) for a in (g, b) if a is not None]
    yt = torch.nn.functional.batch_norm(first[0], None, None, *(first[1:] if affine else (None, None)), training=True,
                                        eps=1e-3)
    red = [i for i in range(len(shape)) if i != 1]
    mt, vt = first[0].mean(dim=red), first[0].var(dim=red, unbiased=False)
    ((yt + (mt * vt).sum() * 0.3) * torch.tensor(np.moveaxis(gy, axis, 1).copy())).sum().backward()
    np.testing.assert_allclose(y.numpy(), np.moveaxis(yt.detach().numpy(), 1, axis), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mean.numpy(), mt.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(var.numpy(), vt.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(grads[0]), np.moveaxis(first[0].grad.numpy(), 1, axis), rtol=1e-3, atol=1e-4)
    for got, t in zip(grads[1:], first[1:]):
        np.testing.assert_allclose(np.asarray(got), t.grad.numpy(), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("shape", [(5, 0), (2, 3, 0)])
def test_batch_norm_training_of_no_channels_is_empty(shape):
    """Zero channels: empty output and statistics, and an empty gradient (it divided by zero before)."""
    x = Tensor(np.zeros(shape, np.float32), requires_grad=True)
    y, mean, var = ops.batch_norm_training(x, None, None)
    (gx,) = grad(y.sum() + mean.sum(), [x])
    assert y.shape == shape and mean.shape == var.shape == (0,) and np.asarray(gx).shape == shape


def test_batch_norm_training_masked_grad():
    mask = (R.random((3, 5)) > 0.3).astype(np.float64)
    mask[:, 0] = 1

    def f(x, g, b):
        y, mean, var = ops.batch_norm_training(x, g, b, mask=mask)
        return y + (mean + var).sum()
    check_grad(f, R.standard_normal((3, 5, 4)), R.standard_normal(4) + 1, R.standard_normal(4))


@pytest.mark.parametrize("shape,axes", [((4, 6), -1), ((2, 3, 5), -1), ((2, 3, 4), [1, 2]), ((2, 3, 4), 1)])
def test_layer_norm_grad(shape, axes):
    ax = [axes] if isinstance(axes, int) else axes
    pshape = tuple(shape[a] for a in ax)
    check_grad(lambda x, g, b: ops.layer_norm(x, g, b, axes), R.standard_normal(shape),
               R.standard_normal(pshape) + 1, R.standard_normal(pshape))


def test_layer_norm_one_sided_affine_grad():
    """The row path (trailing axes, contiguous input) with only gamma or only beta."""
    x = R.standard_normal((3, 2, 5))
    check_grad(lambda x, g: ops.layer_norm(x, g, None, -1), x, R.standard_normal(5) + 1)
    check_grad(lambda x, b: ops.layer_norm(x, None, b, -1), x, R.standard_normal(5))


def test_layer_norm_row_path_equals_general_path():
    """A non-contiguous input takes the general (reduce over axes) path: same values and gradients as the
    row path's matrix-vector statistics."""
    xt = R.standard_normal((6, 4, 3)).astype(np.float32)
    g, b = R.standard_normal(6).astype(np.float32) + 1, R.standard_normal(6).astype(np.float32)
    gy = R.standard_normal((3, 4, 6)).astype(np.float32)
    out = []
    for x in (np.ascontiguousarray(xt.transpose(2, 1, 0)), xt.transpose(2, 1, 0)):
        ts = [Tensor(a, requires_grad=True) for a in (x, g, b)]
        y = ops.layer_norm(*ts, axes=-1)
        (y * Tensor(gy)).sum().backward()
        out.append([y.numpy()] + [t.grad for t in ts])
    for a, c in zip(*out):
        np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-5)


def test_layer_norm_rms_scaling_and_no_affine_grad():
    x = R.standard_normal((3, 7)) + 0.5
    check_grad(lambda x, g: ops.layer_norm(x, g, None, -1, rms_scaling=True), x, R.standard_normal(7))
    check_grad(lambda x: ops.layer_norm(x, None, None, -1), x)


@pytest.mark.parametrize("shape,groups,axis", [((2, 3, 3, 6), 3, -1), ((2, 5, 4), 4, -1), ((3, 6), 2, -1),
                                               ((2, 4, 3), 2, 1), ((2, 2, 2, 4), 4, -1)])
def test_group_norm_grad(shape, groups, axis):
    C = shape[axis]
    check_grad(lambda x, g, b: ops.group_norm(x, g, b, groups, 1e-3, axis), R.standard_normal(shape),
               R.standard_normal(C) + 1, R.standard_normal(C))


def test_norm_ops_keep_float32():
    x = R.standard_normal((4, 3)).astype(np.float32)
    g = np.ones(3, np.float32)
    assert ops.batch_norm(x, g, g, g, g).dtype == np.float32
    assert all(t.dtype == np.float32 for t in ops.batch_norm_training(x, g, g))
    assert ops.layer_norm(x, g, g).dtype == np.float32
    assert ops.group_norm(x, g, g, groups=3).dtype == np.float32


def test_group_norm_bad_groups_raises():
    with pytest.raises(ValueError, match="multiple of groups"):
        ops.group_norm(np.zeros((2, 5), np.float32), None, None, groups=2)


# ----------------------------------------------------------------------------- PyTorch parity
torch = pytest.importorskip("torch")
F = torch.nn.functional


def _nhwc_to_nchw(a):
    return np.moveaxis(a, -1, 1)


def _bn_layer(C, x_shape):
    layer = layers.BatchNormalization(momentum=0.9)
    layer.build(x_shape)
    layer.set_weights([R.standard_normal(C) + 1, R.standard_normal(C), R.standard_normal(C),
                       R.uniform(0.5, 2, C)])
    return layer


@pytest.mark.parametrize("x_shape", [(8, 5), (4, 3, 3, 6)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_normalization_matches_torch(x_shape, training):
    C = x_shape[-1]
    layer = _bn_layer(C, x_shape)
    gamma, beta, mm, mv = [w.copy() for w in layer.get_weights()]
    x = (R.standard_normal(x_shape) * 2 + 0.5).astype(np.float32)
    gy = R.standard_normal(x_shape).astype(np.float32)
    xt = Tensor(x, requires_grad=True)
    y = layer(xt, training=training)
    gx, gg, gb = _loss_grads(y, gy, [xt, layer.gamma, layer.beta])

    xt_t = torch.tensor(_nhwc_to_nchw(x), requires_grad=True)
    g_t = torch.tensor(gamma, requires_grad=True)
    b_t = torch.tensor(beta, requires_grad=True)
    yt = F.batch_norm(xt_t, torch.tensor(mm), torch.tensor(mv), g_t, b_t, training=training, momentum=0.1, eps=1e-3)
    (yt * torch.tensor(_nhwc_to_nchw(gy))).sum().backward()
    np.testing.assert_allclose(y.numpy(), np.moveaxis(yt.detach().numpy(), 1, -1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gx, np.moveaxis(xt_t.grad.numpy(), 1, -1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gg, g_t.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gb, b_t.grad.numpy(), rtol=1e-4, atol=1e-4)


def test_batch_normalization_moving_stats_follow_keras_rule():
    x = (R.standard_normal((6, 2, 2, 3)) * 3 + 1).astype(np.float32)
    layer = _bn_layer(3, x.shape)
    mm0, mv0 = layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy()
    layer(x, training=True)
    # Keras: moving = moving * momentum + batch * (1 - momentum), with the BIASED batch variance
    red = (0, 1, 2)
    np.testing.assert_allclose(layer.moving_mean.numpy(), mm0 * 0.9 + x.mean(axis=red) * 0.1, rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), mv0 * 0.9 + x.var(axis=red) * 0.1, rtol=1e-5)
    # inference leaves them alone and uses them
    before = layer.moving_mean.numpy().copy()
    y = layer(x, training=False).numpy()
    np.testing.assert_array_equal(layer.moving_mean.numpy(), before)
    g, b, mm, mv = layer.get_weights()
    np.testing.assert_allclose(y, (x - mm) / np.sqrt(mv + 1e-3) * g + b, rtol=1e-4, atol=1e-5)


def test_frozen_batch_normalization_runs_in_inference_mode():
    x = R.standard_normal((6, 3)).astype(np.float32)
    layer = _bn_layer(3, x.shape)
    layer.trainable = False
    before = [w.copy() for w in layer.get_weights()]
    y_train = layer(x, training=True).numpy()
    y_inf = layer(x, training=False).numpy()
    np.testing.assert_array_equal(y_train, y_inf)
    for a, b in zip(before, layer.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_batch_normalization_masked_statistics_match_keras_formula():
    x = R.standard_normal((3, 5, 4)).astype(np.float32)
    mask = R.random((3, 5)) > 0.4
    mask[:, 0] = True
    layer = layers.BatchNormalization(momentum=0.0)
    t = Tensor(x)
    t._keras_mask = Tensor(mask)
    layer(t, training=True)
    w = mask[..., None].astype(np.float64)
    mean = (w * x).sum((0, 1)) / (w.sum((0, 1)) + 1e-7)
    var = (w * (w * x - mean) ** 2).sum((0, 1)) / (w.sum((0, 1)) + 1e-7)
    np.testing.assert_allclose(layer.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance.numpy(), var, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("x_shape,axis", [((4, 6), -1), ((2, 3, 5), -1), ((2, 3, 4), [1, 2])])
def test_layer_normalization_matches_torch(x_shape, axis):
    layer = layers.LayerNormalization(axis=axis)
    layer.build(x_shape)
    ax = [axis] if isinstance(axis, int) else axis
    pshape = tuple(x_shape[a] for a in ax)
    layer.set_weights([R.standard_normal(pshape) + 1, R.standard_normal(pshape)])
    x = R.standard_normal(x_shape).astype(np.float32)
    gy = R.standard_normal(x_shape).astype(np.float32)
    xt = Tensor(x, requires_grad=True)
    y = layer(xt)
    gx, gg, gb = _loss_grads(y, gy, [xt, layer.gamma, layer.beta])
    # torch normalises over trailing axes, which these cases are
    xt_t = torch.tensor(x, requires_grad=True)
    g_t = torch.tensor(layer.gamma.numpy(), requires_grad=True)
    b_t = torch.tensor(layer.beta.numpy(), requires_grad=True)
    yt = F.layer_norm(xt_t, pshape, g_t, b_t, eps=1e-3)
    (yt * torch.tensor(gy)).sum().backward()
    for a, b in ((y.numpy(), yt.detach()), (gx, xt_t.grad), (gg, g_t.grad), (gb, b_t.grad)):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-4, atol=1e-4)


def test_layer_normalization_rms_scaling_keras_formula():
    x = (R.standard_normal((3, 6)) + 1).astype(np.float32)
    layer = layers.LayerNormalization(rms_scaling=True)
    y = layer(x).numpy()
    assert [w.name for w in layer.weights] == ["gamma"]
    ref = x / np.sqrt(x.var(-1, keepdims=True) + 1e-3)  # Keras 3: variance, no centring
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls,kwargs,groups", [(layers.GroupNormalization, {"groups": 2}, 2),
                                               (layers.GroupNormalization, {"groups": 1}, 1),
                                               (layers.InstanceNormalization, {}, 6)])
def test_group_and_instance_normalization_match_torch(cls, kwargs, groups):
    x_shape = (2, 3, 4, 6)
    layer = cls(**kwargs)
    layer.build(x_shape)
    layer.set_weights([R.standard_normal(6) + 1, R.standard_normal(6)])
    x = R.standard_normal(x_shape).astype(np.float32)
    gy = R.standard_normal(x_shape).astype(np.float32)
    xt = Tensor(x, requires_grad=True)
    y = layer(xt)
    gx, gg, gb = _loss_grads(y, gy, [xt, layer.gamma, layer.beta])
    xt_t = torch.tensor(_nhwc_to_nchw(x), requires_grad=True)
    g_t = torch.tensor(layer.gamma.numpy(), requires_grad=True)
    b_t = torch.tensor(layer.beta.numpy(), requires_grad=True)
    yt = F.group_norm(xt_t, groups, g_t, b_t, eps=1e-3)
    (yt * torch.tensor(_nhwc_to_nchw(gy))).sum().backward()
    np.testing.assert_allclose(y.numpy(), np.moveaxis(yt.detach().numpy(), 1, -1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gx, np.moveaxis(xt_t.grad.numpy(), 1, -1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gg, g_t.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(gb, b_t.grad.numpy(), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- layer contract
def test_check_layer_batch_normalization():
    check_layer(layers.BatchNormalization, {}, (4, 3, 5), (4, 3, 5), 2, 2,
                ["gamma", "beta", "moving_mean", "moving_variance"])
    layer = check_layer(layers.BatchNormalization, {"center": False, "scale": False, "axis": 1}, (4, 3, 5),
                        (4, 3, 5), 0, 2, ["moving_mean", "moving_variance"], check_bad_shape=False)
    assert layer.count_params() == 6


def test_check_layer_layer_normalization():
    layer = check_layer(layers.LayerNormalization, {"axis": [1, 2]}, (2, 3, 4), (2, 3, 4), 2, 0, ["gamma", "beta"],
                        check_bad_shape=True)
    assert layer.gamma.shape == (3, 4)


def test_check_layer_group_and_instance_normalization():
    check_layer(layers.GroupNormalization, {"groups": 2}, (2, 3, 3, 4), (2, 3, 3, 4), 2, 0, ["gamma", "beta"])
    layer = check_layer(layers.InstanceNormalization, {}, (2, 3, 3, 4), (2, 3, 3, 4), 2, 0, ["gamma", "beta"])
    assert layer.groups == 4 and "groups" not in layer.get_config()
    assert layers.GroupNormalization(groups=-1).get_config()["groups"] == -1


def test_group_normalization_errors_name_the_layer():
    with pytest.raises(ValueError, match="gn.*multiple of the number of groups"):
        layers.GroupNormalization(groups=4, name="gn")(np.zeros((2, 6), np.float32))
    with pytest.raises(ValueError, match="cannot be more than"):
        layers.GroupNormalization(groups=8)(np.zeros((2, 6), np.float32))


def test_normalization_layers_pass_masks_and_work_symbolically():
    x = Tensor(R.standard_normal((2, 3, 4)).astype(np.float32))
    x._keras_mask = Tensor(np.array([[1, 1, 0], [1, 0, 0]], bool))
    for layer in (layers.BatchNormalization(), layers.LayerNormalization(), layers.GroupNormalization(groups=2)):
        assert layer(x)._keras_mask is x._keras_mask
        out = layer(lamina.Input((5, 4)))
        assert out.shape == (None, 5, 4)
