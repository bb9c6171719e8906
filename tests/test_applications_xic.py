"""Xception, InceptionV3, InceptionResNetV2, ConvNeXt and NASNet (keras.applications): Keras 3.15's parameter
counts, layer counts and exact layer names (in Keras's order), the smallest input size enforced (the forward pass
at it is test_applications_forward's), the same predictions as real Keras from a weights file Keras saved,
preprocess_input, ImageNet weights placed by the user; and what they needed: Conv2D/Conv1D groups, LayerScale,
StochasticDepth, the residual sum as a graph operation, Keras's layer order in functional models."""
import os

import numpy as np
import pytest

import lamina
from lamina import applications, layers
from lamina.applications import convnext
from lamina.testing import check_grad

from keras_app_figures_xic import keras_builder, names_digest

# Keras 3.15, weights=None and default arguments, after clear_session(); regenerate with
# `KERAS_BACKEND=torch python tests/keras_app_figures_xic.py`:
# (count_params(), len(model.layers), model.name, first layer name, last layer name, digest of all names)
KERAS = {
    "Xception": (22910480, 134, 'xception', 'input_layer', 'predictions', 'a65ec06ca9bedd25'),
    "InceptionV3": (23851784, 313, 'inception_v3', 'input_layer', 'predictions', '21d32daafca798d9'),
    "InceptionResNetV2": (55873736, 782, 'inception_resnet_v2', 'input_layer', 'predictions', '45e8663620a51f78'),
    "ConvNeXtTiny": (28589128, 135, 'convnext_tiny', 'input_layer', 'convnext_tiny_head_dense', 'a20b4ada36fdc8d9'),
    "ConvNeXtSmall": (50223688, 261, 'convnext_small', 'input_layer', 'convnext_small_head_dense',
                      'dfd1f42dd0d10c15'),
    "ConvNeXtBase": (88591464, 261, 'convnext_base', 'input_layer', 'convnext_base_head_dense', 'a37bfac5c69a84dc'),
    "ConvNeXtLarge": (197767336, 261, 'convnext_large', 'input_layer', 'convnext_large_head_dense',
                      '1aa56b6c023a9d98'),
    "ConvNeXtXLarge": (350196968, 261, 'convnext_xlarge', 'input_layer', 'convnext_xlarge_head_dense',
                       '6913f5c410f2b3fe'),
    "NASNetMobile": (5326716, 771, 'nasnet_mobile', 'input_layer', 'predictions', '726ef9113a330e0a'),
    "NASNetLarge": (88949818, 1041, 'nasnet_large', 'input_layer', 'predictions', '430d5cc571d5d878'),
}


@pytest.fixture
def keras(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    return pytest.importorskip("keras")


@pytest.mark.parametrize("name", list(KERAS))
@pytest.mark.usefixtures("zero_initial_weights")
def test_counts_and_layer_names_equal_keras(name):
    lamina.backend.clear_session(free_memory=False)   # automatic names (conv2d_<k>, add_<k>, ...) as in a fresh session
    model = getattr(applications, name)(weights=None)
    got = (model.count_params(), len(model.layers), model.name, *names_digest(model))
    del model
    assert got == KERAS[name]


@pytest.mark.parametrize("name,size", [("Xception", 71), ("InceptionV3", 75), ("InceptionResNetV2", 75),
                                       ("ConvNeXtTiny", 32), ("NASNetMobile", 32)])
def test_below_the_smallest_size_is_refused(name, size):
    # (the forward pass at the smallest size itself: test_applications_forward.py, for every architecture)
    with pytest.raises(ValueError, match=f"at least {size}"):
        getattr(applications, name)(weights=None, include_top=False, input_shape=(size - 1, size, 3))


@pytest.mark.parametrize("name,size", [("Xception", 71), ("ConvNeXtTiny", 32), ("NASNetMobile", 32)])
@pytest.mark.usefixtures("zero_initial_weights")   # lamina's values all come from the file (zeros if one did not)
def test_weights_saved_by_keras_give_keras_predictions(name, size, keras, tmp_path):
    """Keras's save_weights -> lamina's load_weights: the weight files' paths (layers/<class>_<k>/vars/<i>)
    only line up when lamina has Keras's layers, classes and layer order exactly."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    theirs = keras_builder(keras, name)(weights=None, input_shape=(size, size, 3), classifier_activation=None)
    for layer in theirs.layers:                # non-trivial statistics and layer scales
        ws = layer.get_weights()
        if any(w.path.endswith("moving_variance") for w in layer.weights):
            ws[-1] = rng.uniform(0.5, 1.5, ws[-1].shape).astype("float32")
            ws[-2] = rng.normal(0, 0.1, ws[-2].shape).astype("float32")
            layer.set_weights(ws)
        elif type(layer).__name__ == "LayerScale":
            layer.set_weights([rng.uniform(0.5, 1.5, ws[0].shape).astype("float32")])
    theirs.save_weights(tmp_path / "k.weights.h5")
    mine = getattr(applications, name)(weights=None, input_shape=(size, size, 3), classifier_activation=None)
    mine.load_weights(tmp_path / "k.weights.h5")
    x = rng.uniform(0, 255, (2, size, size, 3)).astype("float32")
    x = x if name.startswith("ConvNeXt") else applications.xception.preprocess_input(x)
    np.testing.assert_allclose(mine.predict(x, verbose=0), np.asarray(theirs.predict(x, verbose=0)),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.usefixtures("zero_initial_weights")
def test_include_top_false_and_pooling_as_keras(keras, keras_shapes_only):
    for name, size, poolings in (("Xception", 71, (None, "avg")), ("InceptionV3", 75, ("max",)),
                                 ("ConvNeXtTiny", 32, (None, "avg", "max")), ("NASNetMobile", 32, ("avg",))):
        for pooling in poolings:
            mine = getattr(applications, name)(weights=None, include_top=False, input_shape=(size, size, 3),
                                               pooling=pooling)
            with keras_shapes_only():
                theirs = keras_builder(keras, name)(weights=None, include_top=False, input_shape=(size, size, 3),
                                                    pooling=pooling)
            assert mine.output_shape == tuple(theirs.output_shape)
            assert (mine.count_params(), len(mine.layers)) == (theirs.count_params(), len(theirs.layers))
            assert [type(l).__name__ for l in mine.layers] == [type(l).__name__ for l in theirs.layers]
    with pytest.raises(ValueError, match="pooling"):
        applications.Xception(weights=None, include_top=False, pooling="sum")


def test_convnext_without_preprocessing_and_with_classes():
    model = applications.ConvNeXtTiny(weights=None, include_preprocessing=False, input_shape=(32, 32, 3),
                                      classes=7, classifier_activation=None)
    assert "convnext_tiny_prestem_normalization" not in [l.name for l in model.layers]
    assert model.output_shape == (None, 7)


def test_preprocess_input_matches_keras(keras):
    x = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3)).astype("float32")
    for module in ("xception", "inception_v3", "inception_resnet_v2", "convnext", "nasnet"):
        mine = getattr(applications, module).preprocess_input(x.copy())
        theirs = np.asarray(getattr(keras.applications, module).preprocess_input(x.copy()))
        np.testing.assert_allclose(mine, theirs, rtol=1e-6, atol=1e-5)
        assert callable(getattr(applications, module).decode_predictions)


@pytest.mark.parametrize("name,stem", [("Xception", "xception"), ("InceptionV3", "inception_v3"),
                                       ("InceptionResNetV2", "inception_resnet_v2"), ("ConvNeXtTiny", "convnext_tiny"),
                                       ("NASNetMobile", "nasnet_mobile")])
def test_imagenet_weights_missing_say_where(name, stem, tmp_path, monkeypatch):
    monkeypatch.setenv("LAMINA_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        getattr(applications, name)(include_top=False, input_shape=(75, 75, 3))
    msg = str(info.value)
    assert str(tmp_path / "models" / f"{stem}.weights.h5") in msg and "weights=None" in msg
    assert f"keras.applications.{name}(weights='imagenet')" in msg


def test_imagenet_weights_placed_by_the_user_are_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMINA_HOME", str(tmp_path))
    os.makedirs(tmp_path / "models")
    source = applications.ConvNeXtTiny(weights=None, include_top=False, input_shape=(32, 32, 3))
    source.save_weights(tmp_path / "models" / "convnext_tiny.weights.h5")
    loaded = applications.ConvNeXtTiny(include_top=False, input_shape=(32, 32, 3))
    for a, b in zip(loaded.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="classes"):
        applications.Xception(classes=10)


# ------------------------------------------------------------------------ what the architectures needed
@pytest.mark.parametrize("groups,cin,filters,padding", [(3, 3, 3, "same"), (2, 4, 6, "valid"), (4, 8, 4, "same")])
def test_grouped_conv2d_matches_torch(groups, cin, filters, padding):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    layer = layers.Conv2D(filters, 3, padding=padding, groups=groups)
    x = rng.standard_normal((2, 5, 5, cin)).astype("float32")
    y = layer(x).numpy()
    assert tuple(layer.kernel.shape) == (3, 3, cin // groups, filters)    # Keras's kernel layout
    layer.bias.assign(rng.standard_normal(filters).astype("float32"))
    y = layer(x).numpy()
    w = torch.tensor(np.transpose(layer.kernel.numpy(), (3, 2, 0, 1)))
    ref = torch.nn.functional.conv2d(torch.tensor(x).permute(0, 3, 1, 2), w, torch.tensor(layer.bias.numpy()),
                                     padding=1 if padding == "same" else 0, groups=groups)
    np.testing.assert_allclose(y, ref.permute(0, 2, 3, 1).numpy(), rtol=1e-5, atol=1e-5)
    check_grad(layer, x, atol=1e-5)


@pytest.mark.parametrize("rank,groups,cin,filters,kw", [
    (2, 2, 32, 32, dict(strides=1, padding="same")),                     # 16 channels a group: dx as a convolution
    (2, 4, 32, 16, dict(strides=2, padding="same")),
    (2, 8, 64, 64, dict(strides=1, padding="valid", dilation_rate=2)),
    (1, 4, 32, 8, dict(strides=2, padding="valid")),
    (1, 2, 16, 32, dict(strides=1, padding="same", dilation_rate=3))])
def test_grouped_conv_each_group_as_a_dense_conv_matches_torch(rank, groups, cin, filters, kw):
    """Grouped 1-D and 2-D convolutions run each group through the dense convolution's forward and backward:
    output, input and kernel gradients as PyTorch's, at strides, dilations and both paddings."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    cls = layers.Conv2D if rank == 2 else layers.Conv1D
    layer = cls(filters, 3, groups=groups, **kw)
    shape = (3, 11, 12, cin) if rank == 2 else (3, 17, cin)
    x = rng.standard_normal(shape).astype("float32")
    y = layer(x)
    gy = rng.standard_normal(y.shape).astype("float32")
    xt = lamina.Tensor(x, requires_grad=True)
    gx, gk, gb = lamina.grad(layer(xt), [xt, layer.kernel, layer.bias], grad_output=lamina.Tensor(gy))
    perm = (0, 3, 1, 2) if rank == 2 else (0, 2, 1)
    back = (0, 2, 3, 1) if rank == 2 else (0, 2, 1)
    tx = torch.tensor(np.transpose(x, perm), requires_grad=True)
    tw = torch.tensor(np.transpose(layer.kernel.numpy(), (3, 2, 0, 1) if rank == 2 else (2, 1, 0)), requires_grad=True)
    s, d = kw["strides"], kw.get("dilation_rate", 1)
    if kw["padding"] == "same":   # TensorFlow's rule: the extra row at the end (these shapes: none at stride 1)
        pads = []
        for n in reversed(shape[1:-1]):
            total = max((-(-n // s) - 1) * s + (3 - 1) * d + 1 - n, 0)
            pads += [total // 2, total - total // 2]
        tin = torch.nn.functional.pad(tx, pads)
    else:
        tin = tx
    conv = torch.nn.functional.conv2d if rank == 2 else torch.nn.functional.conv1d
    ty = conv(tin, tw, torch.tensor(layer.bias.numpy()), stride=s, dilation=d, groups=groups)
    ty.backward(torch.tensor(np.transpose(gy, perm)))
    np.testing.assert_allclose(y.numpy(), np.transpose(ty.detach().numpy(), back), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(gx), np.transpose(tx.grad.numpy(), back), rtol=1e-4, atol=1e-4)
    kt = tw.grad.numpy()
    np.testing.assert_allclose(np.asarray(gk), np.transpose(kt, (2, 3, 1, 0) if rank == 2 else (2, 1, 0)),
                               rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(np.asarray(gb), gy.sum(axis=tuple(range(gy.ndim - 1))), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cls,filters,kw,shape", [
    ("Conv2D", 8, dict(padding="same", groups=2), (2, 16, 16, 8)),                  # the planes kernels, per group
    ("Conv2D", 16, dict(padding="same", groups=2, strides=2), (2, 12, 12, 32)),     # each group a dense conv op
    ("Conv2D", 8, dict(padding="same", groups=8), (2, 9, 9, 8)),                    # depthwise
    ("Conv1D", 8, dict(padding="causal", groups=4, dilation_rate=2), (2, 300, 8)),  # planes, 1-D, causal
    ("Conv3D", 4, dict(padding="same"), (2, 5, 6, 6, 3)),                           # one 2-D conv over depth slices
    ("Conv3D", 4, dict(padding="valid", groups=2), (2, 5, 6, 6, 4)),                # per group, 3-D
    ("Conv3D", 36, dict(kernel_size=2, groups=18), (1, 3, 4, 4, 36))])              # the batched general way
@pytest.mark.parametrize("frozen", [False, True])
def test_grouped_and_3d_convolutions_with_bias_and_relu_inside_the_op_match_torch(cls, filters, kw, shape, frozen,
                                                                                  monkeypatch):
    """Grouped and 3-D convolution layers add their bias and take a ReLU inside the convolution op (the planes
    kernels as they write each row, the other ways on the finished output): output and the input, kernel and bias
    gradients as PyTorch's conv + bias + ReLU, on each way the op takes (the compiled kernels on for any size where
    they run: the planes cases then go through them); with a frozen kernel the bias's gradient alone."""
    torch = pytest.importorskip("torch")
    from lamina.ops import kernels, nn_kernels
    monkeypatch.setattr(kernels, "MIN_ELEMENTS", 0)
    monkeypatch.setitem(kernels._state, "pending", 0)
    planes = []
    real = nn_kernels.GroupConvND._planes_backward
    monkeypatch.setattr(nn_kernels.GroupConvND, "_planes_backward", lambda op, gy: planes.append(1) or real(op, gy))
    rng = np.random.default_rng(3)
    kw = dict(kw)
    layer = getattr(layers, cls)(filters, kw.pop("kernel_size", 3), activation="relu", **kw)
    x = rng.standard_normal(shape).astype("float32")
    layer(x)
    layer.bias.assign(rng.standard_normal(filters).astype("float32") * 0.5)
    if frozen:
        layer.kernel.requires_grad = False   # (no kernel gradient made: the op's needs)
    xt = lamina.Tensor(x, requires_grad=True)
    y = layer(xt)
    gy = rng.standard_normal(y.shape).astype("float32")
    wanted = [xt, layer.bias] if frozen else [xt, layer.kernel, layer.bias]
    got = lamina.grad(y, wanted, grad_output=lamina.Tensor(gy))
    rank = len(shape) - 2
    perm, back = (0, rank + 1) + tuple(range(1, rank + 1)), (0,) + tuple(range(2, rank + 2)) + (1,)
    tx = torch.tensor(np.transpose(x, perm), requires_grad=True)
    tw = torch.tensor(np.transpose(layer.kernel.numpy(), (rank + 1, rank) + tuple(range(rank))), requires_grad=True)
    tb = torch.tensor(layer.bias.numpy(), requires_grad=True)
    k, d = layer.kernel_size, layer.dilation_rate
    if layer.padding == "causal":
        tin = torch.nn.functional.pad(tx, (d[0] * (k[0] - 1), 0))
    elif layer.padding == "same":   # stride 1 here, or even sizes at stride 2: TensorFlow's extra row at the end
        pads = []
        for a in reversed(range(rank)):
            n, s = shape[1 + a], layer.strides[a]
            total = max((-(-n // s) - 1) * s + (k[a] - 1) * d[a] + 1 - n, 0)
            pads += [total // 2, total - total // 2]
        tin = torch.nn.functional.pad(tx, pads)
    else:
        tin = tx
    conv = (torch.nn.functional.conv1d, torch.nn.functional.conv2d, torch.nn.functional.conv3d)[rank - 1]
    ty = torch.relu(conv(tin, tw, tb, stride=layer.strides, dilation=d, groups=layer.groups))
    ty.backward(torch.tensor(np.transpose(gy, perm)))
    np.testing.assert_allclose(y.numpy(), np.transpose(ty.detach().numpy(), back), rtol=1e-4, atol=1e-4)
    want = [np.transpose(tx.grad.numpy(), back)]
    if not frozen:
        want.append(np.transpose(tw.grad.numpy(), tuple(range(2, rank + 2)) + (1, 0)))
    want.append(tb.grad.numpy())
    for g, w in zip(got, want):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=1e-3)
    assert bool(planes) == (kernels.available() and kw.get("groups", 1) in (2, 4) and "strides" not in kw
                            and cls != "Conv3D")


def test_conv_bias_refuses_a_wrong_bias_or_activation():
    x, w = np.ones((1, 5, 5, 4), np.float32), np.ones((3, 3, 2, 6), np.float32)
    with pytest.raises(ValueError, match=r"bias must have shape \(6,\)"):
        lamina.ops.nn.conv_bias(x, w, np.ones(4, np.float32))
    for given in (x, x.astype(np.int32)):   # (integers too: they take the NumPy convolution's own way)
        with pytest.raises(ValueError, match="activation must be None or 'relu'"):
            lamina.ops.nn.conv_bias(given, w.astype(given.dtype), None, activation="tanh")
    y = lamina.ops.nn.conv_bias(x, w, np.full(6, -100.0, np.float32), padding="same", activation="relu")
    assert y.shape == (1, 5, 5, 6) and float(np.asarray(y.data).max()) == 0.0   # (2 groups; the ReLU of -100 + 18)


def test_grouped_conv1d_causal_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    layer = layers.Conv1D(4, 3, padding="causal", dilation_rate=2, groups=2)
    x = rng.standard_normal((2, 7, 4)).astype("float32")
    y = layer(x).numpy()
    w = torch.tensor(np.transpose(layer.kernel.numpy(), (2, 1, 0)))
    xt = torch.nn.functional.pad(torch.tensor(x).permute(0, 2, 1), (4, 0))
    ref = torch.nn.functional.conv1d(xt, w, torch.tensor(layer.bias.numpy()), dilation=2, groups=2)
    np.testing.assert_allclose(y, ref.permute(0, 2, 1).numpy(), rtol=1e-5, atol=1e-5)
    check_grad(layer, x, atol=1e-5)


def test_grouped_conv_arguments_as_keras(keras):
    with pytest.raises(ValueError, match="groups"):
        layers.Conv2D(4, 3, groups=3)
    with pytest.raises(ValueError, match="multiple of groups"):
        layers.Conv2D(4, 3, groups=2)(np.zeros((1, 5, 5, 3), "float32"))
    mine, theirs = layers.Conv2D(6, 3, groups=3), keras.layers.Conv2D(6, 3, groups=3)
    mine.build((None, 5, 5, 3))
    theirs.build((None, 5, 5, 3))
    assert mine.count_params() == theirs.count_params() and mine.get_config()["groups"] == 3


def test_layer_scale_and_stochastic_depth():
    x = np.random.default_rng(0).standard_normal((3, 2, 2, 4)).astype("float32")
    scale = convnext.LayerScale(0.5, 4)
    np.testing.assert_allclose(scale(x).numpy(), 0.5 * x)
    assert scale.count_params() == 4 and scale.get_config()["init_values"] == 0.5
    check_grad(scale, x)
    depth = convnext.StochasticDepth(0.5, seed=0)
    np.testing.assert_array_equal(depth(x).numpy(), x)                 # inference: the identity
    ones = np.ones((4000, 2, 2, 3), "float32")
    y = depth(ones, training=True).numpy()
    per_sample = y.reshape(len(y), -1)
    assert set(np.unique(per_sample)) == {0.0, 2.0}                     # whole samples dropped, kept ones / keep
    assert (per_sample == per_sample[:, :1]).all()
    assert abs((per_sample[:, 0] == 0).mean() - 0.5) < 0.05
    assert convnext.StochasticDepth.from_config(depth.get_config()).drop_path_rate == 0.5


def test_custom_scale_layer():
    from lamina.applications.inception_resnet_v2 import CustomScaleLayer
    rng = np.random.default_rng(0)
    x, r = rng.standard_normal((2, 3, 3, 4)), rng.standard_normal((2, 3, 3, 4))
    layer = CustomScaleLayer(0.17)
    np.testing.assert_allclose(layer([x.astype("float32"), r.astype("float32")]).numpy(), x + 0.17 * r, rtol=1e-5, atol=1e-6)
    check_grad(lambda a, b: layer([a, b]), x, r)
    assert CustomScaleLayer.from_config(layer.get_config()).scale == 0.17


def test_a_small_convnext_round_trips_through_a_keras_file(tmp_path):
    """Nested Sequential stem, grouped convolutions, LayerScale, StochasticDepth and the residual operation
    all come back from model.save / load_model, with the same outputs and layer list."""
    lamina.utils.set_random_seed(0)
    model = convnext.ConvNeXt((1, 2, 1, 1), (8, 16, 24, 32), drop_path_rate=0.1, name="tiny_convnext",
                              input_shape=(32, 32, 3), classes=5)
    assert sum(type(l).__name__ == "StochasticDepth" for l in model.layers) == 4     # rates 0, .033, ... > 0
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    model.save(tmp_path / "m.keras")
    loaded = lamina.models.load_model(tmp_path / "m.keras")
    assert [l.name for l in loaded.layers] == [l.name for l in model.layers]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_convnext_keras_files_move_both_ways(keras, tmp_path):
    """A .keras file of Keras's ConvNeXt (its residual sums are Keras operations, its LayerScale lives in
    keras.src.applications.convnext) loads into lamina, and lamina's loads into Keras, with equal outputs."""
    from keras.src.applications import convnext as keras_convnext
    keras.utils.set_random_seed(0)
    theirs = keras_convnext.ConvNeXt([1, 1, 2, 1], [8, 16, 24, 32], drop_path_rate=0.1, name="small_convnext",
                                     input_shape=(32, 32, 3), classes=5)
    for layer in theirs.layers:
        if type(layer).__name__ == "LayerScale":
            layer.set_weights([np.full(layer.weights[0].shape, 0.7, "float32")])
    theirs.save(tmp_path / "k.keras")
    mine = lamina.models.load_model(tmp_path / "k.keras")
    assert [l.name for l in mine.layers] == [l.name for l in theirs.layers]
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(mine.predict(x, verbose=0), np.asarray(theirs.predict(x, verbose=0)),
                               rtol=1e-4, atol=1e-5)
    mine.save(tmp_path / "l.keras")
    back = keras.models.load_model(tmp_path / "l.keras")
    np.testing.assert_allclose(np.asarray(back.predict(x, verbose=0)), mine.predict(x, verbose=0),
                               rtol=1e-4, atol=1e-5)


def test_a_small_convnext_trains():
    """One SGD step moves every trainable weight, the layer scales included (the gradient flows through the
    residual operations and, in training, through StochasticDepth)."""
    lamina.utils.set_random_seed(0)
    model = convnext.ConvNeXt((1, 1, 1, 1), (8, 16, 24, 32), drop_path_rate=0.2, input_shape=(32, 32, 3),
                              classes=3, name="small", layer_scale_init_value=0.5)   # 1e-6: float32 steps vanish
    model.compile("sgd", "sparse_categorical_crossentropy")
    before = [w.numpy().copy() for w in model.trainable_weights]
    x = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    loss = model.train_on_batch(x, np.array([0, 1, 2, 0]))
    assert np.isfinite(loss)
    moved = [not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]
    assert sum(moved) >= len(moved) - 1     # at most one block's branch dropped by StochasticDepth this step
    assert all(m for w, m in zip(model.trainable_weights, moved) if "head" in w.path)


def test_graph_operations_are_not_layers():
    inputs = layers.Input((4,))
    hidden = layers.Dense(4, name="d")(inputs)
    model = lamina.Model(inputs, convnext.AddOperation()(inputs, hidden))
    assert [l.name for l in model.layers] == [inputs._history[0].name, "d"]
    np.testing.assert_allclose(model.predict(np.ones((1, 4), "float32"), verbose=0),
                               1 + model.get_layer("d")(np.ones((1, 4), "float32")).numpy(), rtol=1e-6)


def test_functional_layer_order_is_keras_order(keras):
    """Branches of different lengths: Keras lists layers by depth (longest path to the output), not in
    the order a depth-first walk finishes them."""
    def build(L, Model):
        x = L.Input((6,))
        a = L.Dense(3, name="a1")(x)
        b = L.Dense(3, name="b3")(L.Dense(3, name="b2")(L.Dense(3, name="b1")(x)))
        c = L.Dense(3, name="c2")(L.Dense(3, name="c1")(x))
        y = L.Dense(2, name="out")(L.Concatenate(name="cat")([a, b, c]))
        return Model(x, y)
    mine, theirs = build(layers, lamina.Model), build(keras.layers, keras.Model)
    assert [l.name for l in mine.layers[1:]] == [l.name for l in theirs.layers[1:]]
    assert [w.shape for w in mine.get_weights()] == [tuple(w.shape) for w in theirs.get_weights()]
