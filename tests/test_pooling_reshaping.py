"""Pooling and reshaping layers: layer contract, shapes, gradients, PyTorch parity, Keras rules."""
import numpy as np
import pytest

import lamina
from lamina import Tensor, grad, layers
from lamina.testing import check_grad, check_layer

R = np.random.default_rng(11)


def distinct(*shape):
    n = int(np.prod(shape))
    return (R.permutation(n).reshape(shape) * 0.1).astype(np.float64)


# ----------------------------------------------------------------------------- contract and shapes
CONTRACT = [
    (layers.MaxPooling2D, {}, (2, 6, 7, 3), (2, 3, 3, 3)),
    (layers.MaxPooling2D, dict(pool_size=3, strides=2, padding="same"), (2, 6, 7, 3), (2, 3, 4, 3)),
    (layers.AveragePooling2D, dict(pool_size=(2, 3), strides=1), (1, 5, 5, 2), (1, 4, 3, 2)),
    (layers.AveragePooling2D, dict(padding="same"), (1, 5, 5, 2), (1, 3, 3, 2)),
    (layers.MaxPooling1D, {}, (2, 7, 3), (2, 3, 3)),
    (layers.AveragePooling1D, dict(pool_size=3, strides=2, padding="same"), (2, 7, 3), (2, 4, 3)),
    (layers.GlobalAveragePooling2D, {}, (2, 4, 5, 3), (2, 3)),
    (layers.GlobalAveragePooling2D, dict(keepdims=True), (2, 4, 5, 3), (2, 1, 1, 3)),
    (layers.GlobalMaxPooling2D, {}, (2, 4, 5, 3), (2, 3)),
    (layers.GlobalAveragePooling1D, {}, (2, 4, 3), (2, 3)),
    (layers.GlobalMaxPooling1D, dict(keepdims=True), (2, 4, 3), (2, 1, 3)),
    (layers.GlobalMaxPooling1D, dict(data_format="channels_first"), (2, 4, 3), (2, 4)),
    (layers.Flatten, {}, (2, 3, 4, 5), (2, 60)),
    (layers.Reshape, dict(target_shape=(-1, 4)), (2, 3, 4, 2), (2, 6, 4)),
    (layers.Reshape, dict(target_shape=(6, 4)), (2, 24), (2, 6, 4)),
    (layers.Permute, dict(dims=(3, 1, 2)), (2, 3, 4, 5), (2, 5, 3, 4)),
    (layers.RepeatVector, dict(n=3), (2, 4), (2, 3, 4)),
    (layers.UpSampling1D, dict(size=3), (2, 4, 2), (2, 12, 2)),
    (layers.UpSampling2D, {}, (2, 3, 4, 2), (2, 6, 8, 2)),
    (layers.UpSampling2D, dict(size=(3, 2), interpolation="bilinear"), (2, 3, 4, 2), (2, 9, 8, 2)),
    (layers.ZeroPadding1D, dict(padding=(1, 2)), (2, 4, 2), (2, 7, 2)),
    (layers.ZeroPadding2D, {}, (2, 3, 4, 2), (2, 5, 6, 2)),
    (layers.ZeroPadding2D, dict(padding=((1, 2), (0, 3))), (2, 3, 4, 2), (2, 6, 7, 2)),
    (layers.ZeroPadding2D, dict(padding=(2, 1), data_format="channels_first"), (2, 3, 4, 2), (2, 3, 8, 4)),
    (layers.Cropping1D, {}, (2, 5, 2), (2, 3, 2)),
    (layers.Cropping2D, dict(cropping=((1, 0), (1, 2))), (2, 4, 5, 2), (2, 3, 2, 2)),
    (layers.Cropping2D, dict(cropping=1, data_format="channels_first"), (2, 3, 4, 5), (2, 3, 2, 3)),
]


@pytest.mark.parametrize("cls,kwargs,in_shape,out_shape", CONTRACT)
def test_layer_contract(cls, kwargs, in_shape, out_shape):
    layer = check_layer(cls, kwargs, in_shape, out_shape, expected_num_trainable_weights=0,
                        expected_num_non_trainable_weights=0, expected_weight_names=[], check_bad_shape=False)
    # symbolic call: shape from compute_output_shape with an unknown batch size
    y = layer(lamina.Input(in_shape[1:]))
    assert y.shape == (None,) + tuple(out_shape[1:])


@pytest.mark.parametrize("cls,kwargs,in_shape", [(c, k, i) for c, k, i, _ in CONTRACT])
def test_layer_gradients(cls, kwargs, in_shape):
    check_grad(cls(**kwargs), distinct(*in_shape))


def test_input_rank_is_checked():
    for layer, shape in [(layers.MaxPooling2D(name="mp"), (2, 4, 4)), (layers.RepeatVector(2, name="mp"), (2, 3, 4)),
                         (layers.Cropping2D(name="mp"), (2, 4, 4)), (layers.Permute((2, 1), name="mp"), (2, 2, 2, 2))]:
        with pytest.raises(ValueError, match="mp.*ndim"):
            layer(np.zeros(shape, np.float32))


def test_argument_errors():
    with pytest.raises(ValueError, match="pool_size"):
        layers.MaxPooling2D(pool_size=(2, 0))
    with pytest.raises(ValueError, match="'valid', 'same'"):
        layers.AveragePooling1D(padding="causal")
    with pytest.raises(ValueError, match="permutation"):
        layers.Permute((1, 3))
    with pytest.raises(ValueError, match="at most one -1"):
        layers.Reshape((-1, -1))
    with pytest.raises(ValueError, match="cannot reshape"):
        layers.Reshape((5,))(np.zeros((2, 6), np.float32))
    with pytest.raises(ValueError, match="'nearest', 'bilinear'"):
        layers.UpSampling2D(interpolation="bicubic")
    with pytest.raises(ValueError, match="non-negative"):
        layers.ZeroPadding2D(padding=-1)
    with pytest.raises(ValueError, match="leaves nothing"):
        layers.Cropping2D(cropping=2).compute_output_shape((None, 4, 4, 1))


def test_flatten_channels_first_orders_features_channels_last():
    x = R.standard_normal((2, 3, 4, 5)).astype(np.float32)
    y = layers.Flatten(data_format="channels_first")(x).numpy()
    np.testing.assert_array_equal(y, x.transpose(0, 2, 3, 1).reshape(2, -1))
    assert layers.Flatten().compute_output_shape((None, None, 3)) == (None, None)


def test_pooling_channels_first():
    x = distinct(2, 3, 6, 5)
    y = layers.MaxPooling2D(data_format="channels_first")(x).numpy()
    ref = layers.MaxPooling2D()(x.transpose(0, 2, 3, 1)).numpy().transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(y, ref)
    assert y.shape == (2, 3, 3, 2)


def test_global_average_pooling1d_mask_leaves_out_masked_steps():
    x = R.standard_normal((2, 4, 3)).astype(np.float32)
    mask = np.array([[True, True, False, False], [True, True, True, True]])
    y = layers.GlobalAveragePooling1D()(x, mask=mask).numpy()
    np.testing.assert_allclose(y[0], x[0, :2].mean(0), rtol=1e-6)
    np.testing.assert_allclose(y[1], x[1].mean(0), rtol=1e-6)


def test_avg_pool_same_divides_by_real_elements():
    x = np.ones((1, 5, 5, 1), np.float32)
    y = layers.AveragePooling2D(pool_size=3, strides=2, padding="same")(x).numpy()
    np.testing.assert_allclose(y, 1.0)   # counting the padding would give values below 1 at the borders


def test_global_max_pool_keepdims_channels_first():
    x = R.standard_normal((2, 3, 4, 5)).astype(np.float32)
    y = layers.GlobalMaxPooling2D(data_format="channels_first", keepdims=True)(x)
    np.testing.assert_allclose(y.numpy(), x.max(axis=(2, 3), keepdims=True))


# ----------------------------------------------------------------------------- PyTorch parity
torch = pytest.importorskip("torch")
F = torch.nn.functional


def _both(layer, x, torch_fn):
    t = Tensor(x, requires_grad=True)
    y = layer(t)
    gy = R.standard_normal(y.shape).astype(np.float32)
    (gx,) = grad((y * Tensor(gy)).sum(), [t])
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    yt = torch_fn(xt)
    (yt * torch.tensor(gy.transpose(0, 3, 1, 2).copy())).sum().backward()
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(gx, xt.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-5, atol=1e-6)


def test_pooling_layers_match_torch():
    x = R.standard_normal((2, 7, 6, 3)).astype(np.float32)
    _both(layers.MaxPooling2D(), x, lambda t: F.max_pool2d(t, 2))
    _both(layers.MaxPooling2D(3, strides=1), x, lambda t: F.max_pool2d(t, 3, 1))
    _both(layers.AveragePooling2D((3, 2), strides=(2, 1)), x, lambda t: F.avg_pool2d(t, (3, 2), (2, 1)))
    _both(layers.GlobalAveragePooling2D(keepdims=True), x, lambda t: t.mean(dim=(2, 3), keepdim=True))
    _both(layers.GlobalMaxPooling2D(keepdims=True), x, lambda t: t.amax(dim=(2, 3), keepdim=True))
    # 'same' max pooling at stride 2: Keras pads (0, 1) on 7 rows; torch only pads symmetrically,
    # so the padding is written out here with -inf
    _both(layers.MaxPooling2D(3, 2, padding="same"), x,
          lambda t: F.max_pool2d(F.pad(t, (0, 1, 1, 1), value=-np.inf), 3, 2))


def test_resampling_layers_match_torch():
    x = R.standard_normal((2, 3, 4, 2)).astype(np.float32)
    _both(layers.UpSampling2D((2, 3)), x, lambda t: F.interpolate(t, scale_factor=(2, 3), mode="nearest"))
    _both(layers.UpSampling2D(2, interpolation="bilinear"), x,
          lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False))
    _both(layers.ZeroPadding2D(((1, 2), (3, 0))), x, lambda t: F.pad(t, (3, 0, 1, 2)))
    _both(layers.Cropping2D(((1, 0), (1, 2))), x, lambda t: t[:, :, 1:, 1:2])


# ----------------------------------------------------------------------------- a batch of no samples
EMPTY_BATCH = [
    (layers.Flatten, {}, (0, 2, 3)), (layers.GroupNormalization, dict(groups=2), (0, 4, 4, 4)),
    (layers.MaxPooling3D, {}, (0, 4, 4, 4, 1)), (layers.Dense, dict(units=4), (0, 3)),
    (layers.Conv2D, dict(filters=4, kernel_size=3, padding="same"), (0, 8, 8, 2)),
    (layers.MaxPooling2D, {}, (0, 8, 8, 2)), (layers.AveragePooling3D, {}, (0, 4, 4, 4, 1)),
    (layers.BatchNormalization, {}, (0, 5)), (layers.LayerNormalization, {}, (0, 5)),
    (layers.LSTM, dict(units=3), (0, 4, 2)), (layers.GlobalAveragePooling2D, {}, (0, 8, 8, 2)),
    (layers.Conv2DTranspose, dict(filters=4, kernel_size=3, strides=2), (0, 4, 4, 2)),
]


@pytest.mark.parametrize("cls,kwargs,shape", EMPTY_BATCH, ids=[c.__name__ for c, _, _ in EMPTY_BATCH])
def test_a_batch_of_no_samples_goes_through_forward_and_backward(cls, kwargs, shape):
    """A batch of 0 samples (an empty selection, a filtered batch) gives the layer's output shape with 0 samples
    and empty gradients, as Keras and PyTorch do; Flatten, GroupNormalization and MaxPooling3D once reshaped it
    with a -1, which NumPy cannot infer from 0 values."""
    layer = cls(**kwargs)
    x = Tensor(np.zeros(shape, np.float32), requires_grad=True)
    y = layer(x, training=True)
    assert tuple(y.shape) == tuple(layer.compute_output_shape(shape))
    gx, *gw = grad(lamina.ops.sum(y), [x] + list(layer.trainable_weights))
    assert gx.shape == shape
    for g, w in zip(gw, layer.trainable_weights):
        assert g.shape == w.shape and np.all(np.asarray(g.data) == 0)


# ----------------------------------------------------------------------------- 3-D pooling through depth slices
_POOL3D = [((2, 2, 2), None, "valid", (2, 6, 8, 8, 3)), ((3, 3, 3), (1, 1, 1), "same", (2, 5, 6, 7, 2)),
           ((2, 3, 2), (1, 2, 2), "valid", (1, 5, 7, 6, 3)), ((3, 2, 2), (2, 2, 2), "same", (2, 7, 5, 5, 2)),
           ((1, 2, 2), None, "valid", (2, 3, 4, 4, 2)), ((4, 1, 1), (3, 1, 1), "same", (1, 8, 3, 3, 2)),
           ((2, 2, 2), (1, 1, 1), "same", (1, 5, 4, 4, 2)), ((4, 3, 2), (1, 2, 1), "same", (2, 6, 5, 4, 2))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("pool,strides,padding,shape", _POOL3D)
def test_3d_pooling_through_depth_slices_equals_the_general_way(monkeypatch, dtype, pool, strides, padding, shape):
    """MaxPooling3D / AveragePooling3D as the 2-D pooling of each depth slice and a pass over the depth offsets
    (nn_kernels.MaxPoolND / AvgPoolND._by_depth): the general window way's output and gradient, max's to the bit with
    ties (dy to the first maximum in row-major window order, depth first) and NaN among the inputs, average's to
    rounding; NaN where the general way has it; overlapping windows, 'same' padding on every axis and odd sizes.
    (Which offset's gradient a NaN window routes dy to follows MaxPooling2D's own rule, not the general way's.)"""
    from lamina import ops
    from lamina.ops import nn_kernels
    x = np.round(R.standard_normal(shape) * 2).astype(dtype)   # (many ties)
    gy_shape = ops.max_pool(x, pool, strides, padding).shape
    gy = R.standard_normal(gy_shape).astype(dtype)
    nan = x.copy()
    nan.reshape(-1)[7] = np.nan
    for fn in (ops.max_pool, ops.average_pool):
        got = []
        for depth in (True, False):
            monkeypatch.setattr(nn_kernels.MaxPoolND, "by_depth", depth)
            monkeypatch.setattr(nn_kernels.AvgPoolND, "by_depth", depth)
            t = Tensor(x, requires_grad=True)
            y = fn(t, pool, strides, padding)
            (g,) = grad(y, [t], grad_output=Tensor(gy))
            got.append((np.asarray(y.data), np.asarray(g.data)))
            got.append(np.isnan(np.asarray(fn(Tensor(nan), pool, strides, padding).data)))
        (y, g), nan_y, (y0, g0), nan_y0 = got
        np.testing.assert_array_equal(nan_y, nan_y0)   # a NaN input is NaN in every output window holding it
        assert nan_y.any()
        if fn is ops.max_pool:   # (overlapping windows add their shares in another order: to rounding there)
            np.testing.assert_array_equal(y, y0)
            if all(s >= p for s, p in zip(strides or pool, pool)):
                np.testing.assert_array_equal(g, g0)
            np.testing.assert_allclose(g, g0, rtol=1e-6, atol=1e-6)
        else:
            tol = 1e-5 if dtype == np.float32 else 1e-12
            np.testing.assert_allclose(y, y0, rtol=tol, atol=tol)
            np.testing.assert_allclose(g, g0, rtol=tol, atol=tol)


@pytest.mark.parametrize("pool,strides", [((2, 2, 2), None), ((3, 3, 3), (2, 2, 2)), ((2, 3, 2), (1, 2, 1))])
def test_3d_pooling_matches_torch_with_ties(pool, strides):
    """Against PyTorch's max_pool3d / avg_pool3d ('valid'): outputs, and gradients routed to the first maximum where
    values tie (rounded inputs)."""
    torch = pytest.importorskip("torch")
    from lamina import ops
    x = np.round(R.standard_normal((2, 7, 8, 9, 3)) * 1.5).astype(np.float32)
    xt = torch.tensor(np.moveaxis(x, -1, 1).copy(), requires_grad=True)
    for fn, tfn in ((ops.max_pool, torch.nn.functional.max_pool3d), (ops.average_pool, torch.nn.functional.avg_pool3d)):
        t = Tensor(x, requires_grad=True)
        y = fn(t, pool, strides, "valid")
        gy = R.standard_normal(y.shape).astype(np.float32)
        (g,) = grad(y, [t], grad_output=Tensor(gy))
        xt.grad = None
        yt = tfn(xt, pool, strides or pool)
        yt.backward(torch.tensor(np.moveaxis(gy, -1, 1).copy()))
        np.testing.assert_allclose(np.asarray(y.data), np.moveaxis(yt.detach().numpy(), 1, -1), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(np.asarray(g.data), np.moveaxis(xt.grad.numpy(), 1, -1), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape,pad_width,value", [((40, 33, 30, 8), [(0, 0), (2, 3), (0, 1), (0, 0)], 0.0),
                                                   ((90, 3000), [(0, 0), (5, 7)], 2.5),
                                                   ((30, 20, 20, 40), [(0, 0), (1, 1), (1, 1), (2, 0)], -1.0)])
@pytest.mark.parametrize("width", [1, 3])
def test_large_padding_of_the_samples_is_numpys(shape, pad_width, value, width, monkeypatch):
    """Constant padding that leaves the batch axis alone, on an input large enough to split its samples over threads
    (forced: one and three): np.pad's array to the bit, the gradient its inner slice."""
    from lamina import threads
    from lamina.ops import manipulation
    monkeypatch.setattr(threads, "split_width", lambda *a: width)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    assert x.size >= manipulation._PAD_SPLIT
    xt = lamina.Tensor(x, requires_grad=True)
    y = lamina.ops.pad(xt, pad_width, constant_values=value)
    np.testing.assert_array_equal(np.asarray(y.data), np.pad(x, pad_width, constant_values=value))
    gy = np.random.default_rng(1).standard_normal(y.shape).astype(np.float32)
    g = lamina.grad(y, [xt], grad_output=lamina.Tensor(gy))[0]
    np.testing.assert_array_equal(np.asarray(g.data), gy[tuple(slice(lo, n - hi) for n, (lo, hi) in
                                                                zip(gy.shape, pad_width))])


@pytest.mark.parametrize("axes,keepdims", [((1, 2), False), ((1, 2), True), ((2, 1), False), ((3,), False),
                                           (None, False)])
def test_a_large_means_gradient_is_an_array_of_its_own_with_the_same_values(axes, keepdims):
    """A global average pooling's gradient (a mean over a run of axes of a large input) is a C-contiguous, writable
    array of its own (the op below it then takes its compiled kernels; a leaf gets it without a copy), with the
    broadcast's values; unsorted axes keep the broadcast. Through a ReLU below it: as PyTorch's."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 64, 64, 8)).astype(np.float32)   # 2^17 values: past ops.math.MEAN_FILL_MIN
    gy_shape = np.mean(x, axis=axes, keepdims=keepdims).shape
    gy = rng.standard_normal(gy_shape).astype(np.float32)
    xt = Tensor(x, requires_grad=True)
    y = lamina.ops.mean(lamina.ops.relu(xt), axis=axes, keepdims=keepdims)
    (gx,) = grad(y, [xt], grad_output=Tensor(gy))
    tx = torch.tensor(x, requires_grad=True)
    dims = tuple(range(4)) if axes is None else axes
    torch.relu(tx).mean(dim=dims, keepdim=keepdims).backward(torch.tensor(gy))
    np.testing.assert_allclose(np.asarray(gx), tx.grad.numpy(), rtol=1e-6, atol=1e-9)
    (gm,) = grad(lamina.ops.mean(xt, axis=axes, keepdims=keepdims), [xt], grad_output=Tensor(gy))
    gm = np.asarray(gm)
    from lamina.ops.math import Mean
    direct = Mean.apply(xt, axis=axes, keepdims=keepdims)._op.backward(gy)   # (before any copy of a leaf's)
    assert (direct.flags.c_contiguous and direct.flags.writeable) == (axes != (2, 1))
    np.testing.assert_array_equal(direct, gm)
    kept = gy if keepdims else np.expand_dims(gy, tuple(range(4)) if axes is None else axes)
    np.testing.assert_array_equal(gm, np.broadcast_to(kept, x.shape) / np.float32(x.size // gy.size))
