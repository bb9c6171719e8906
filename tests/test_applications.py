"""keras.applications architectures: Keras 3.15's parameter counts, layer counts and names, a forward pass at a
small size, preprocess_input as Keras's, and a clear message for ImageNet weights that are not there."""
import os
import shutil

import numpy as np
import pytest

import lamina
from lamina import applications

# Keras 3.15, weights=None and default arguments: (count_params(), len(model.layers), model.name)
KERAS = {
    "ResNet50": (25636712, 177, "resnet50"),
    "ResNet101": (44707176, 347, "resnet101"),
    "ResNet152": (60419944, 517, "resnet152"),
    "ResNet50V2": (25613800, 192, "resnet50v2"),
    "ResNet101V2": (44675560, 379, "resnet101v2"),
    "ResNet152V2": (60380648, 566, "resnet152v2"),
    "VGG16": (138357544, 23, "vgg16"),
    "VGG19": (143667240, 26, "vgg19"),
    "DenseNet121": (8062504, 429, "densenet121"),
    "DenseNet169": (14307880, 597, "densenet169"),
    "DenseNet201": (20242984, 709, "densenet201"),
    "MobileNet": (4253864, 91, "mobilenet_1.00_224"),
    "MobileNetV2": (3538984, 156, "mobilenetv2_1.00_224"),
}


@pytest.mark.parametrize("name", sorted(KERAS))
@pytest.mark.usefixtures("zero_initial_weights")
def test_parameter_and_layer_counts_equal_keras(name):
    model = getattr(applications, name)(weights=None)
    assert (model.count_params(), len(model.layers), model.name) == KERAS[name]
    assert model.output_shape == (None, 1000)


@pytest.mark.parametrize("name", ["ResNet50", "ResNet50V2", "DenseNet121", "VGG16", "MobileNet",
                                  "MobileNetV2"])
@pytest.mark.usefixtures("zero_initial_weights")
def test_layer_names_and_shapes_equal_real_keras(name, monkeypatch, keras_shapes_only):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    with keras_shapes_only():
        theirs = getattr(keras.applications, name)(weights=None, include_top=False, input_shape=(64, 64, 3))
    mine = getattr(applications, name)(weights=None, include_top=False, input_shape=(64, 64, 3))
    def named(m):   # unnamed helper layers (auto-numbered padding/pooling) aside; the graph order may differ
        return {l.name: (type(l).__name__, [tuple(w.shape) for w in l.weights]) for l in m.layers[1:]
                if not l.name.startswith(("zero_padding2d", "max_pooling2d"))}
    assert named(mine) == named(theirs)


@pytest.mark.parametrize("name", ["ResNet50", "ResNet50V2", "DenseNet121", "MobileNetV2"])
def test_forward_at_a_small_size(name):
    lamina.utils.set_random_seed(0)
    model = getattr(applications, name)(weights=None, include_top=False, input_shape=(32, 32, 3), pooling="avg")
    y = model.predict(np.random.default_rng(0).random((2, 32, 32, 3), dtype=np.float32), verbose=0)
    assert y.shape == (2, model.output_shape[-1]) and np.isfinite(y).all()


def test_small_classifier_trains_one_step():
    model = applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=3)
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    loss = model.train_on_batch(x, np.array([0, 1, 2, 0]))
    assert np.isfinite(loss)


def test_imagenet_weights_missing_says_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMINA_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        applications.DenseNet121()
    msg = str(info.value)
    assert str(tmp_path / "models" / "densenet121.weights.h5") in msg and "weights=None" in msg


@pytest.fixture(scope="module")
def densenet121_file(tmp_path_factory):
    """A randomly initialised DenseNet121's weights and the .weights.h5 file it saved: the ImageNet-weights tests
    below only read them, so the model is built and saved once for both."""
    source = applications.DenseNet121(weights=None)
    path = tmp_path_factory.mktemp("densenet121") / "densenet121.weights.h5"
    source.save_weights(path)
    return source.get_weights(), path


def _place(path, lamina_home):
    """The weights file where weights='imagenet' looks for it: $LAMINA_HOME/models/<architecture>.weights.h5."""
    os.makedirs(lamina_home / "models")
    shutil.copyfile(path, lamina_home / "models" / path.name)


def test_imagenet_weights_placed_by_the_user_are_loaded(tmp_path, monkeypatch, densenet121_file):
    monkeypatch.setenv("LAMINA_HOME", str(tmp_path))
    weights, path = densenet121_file
    _place(path, tmp_path)
    loaded = applications.DenseNet121()
    assert len(loaded.get_weights()) == len(weights)
    for a, b in zip(loaded.get_weights(), weights):
        np.testing.assert_array_equal(a, b)


def test_preprocess_input_matches_keras(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    x = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3)).astype("float32")
    for mine, theirs in ((applications.resnet50, keras.applications.resnet50),
                         (applications.densenet, keras.applications.densenet),
                         (applications.vgg16, keras.applications.vgg16)):
        np.testing.assert_allclose(mine.preprocess_input(x), np.asarray(theirs.preprocess_input(x.copy())),
                                   rtol=1e-5, atol=1e-4)


def test_imagenet_utils_preprocess_every_mode_as_keras(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    x = np.random.default_rng(1).integers(0, 256, (2, 4, 4, 3)).astype("float32")
    for mode in ("caffe", "tf", "torch"):
        mine = applications.imagenet_utils.preprocess_input(x.copy(), mode=mode)
        theirs = keras.applications.imagenet_utils.preprocess_input(x.copy(), mode=mode)
        np.testing.assert_allclose(mine, np.asarray(theirs), rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="mode"):
        applications.imagenet_utils.preprocess_input(x, mode="caffe2")
    with pytest.raises(ValueError, match="1000"):
        applications.imagenet_utils.decode_predictions(np.zeros((2, 10)))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="weights"):
        applications.VGG16(weights="nonsense")
    with pytest.raises(ValueError, match="classes"):
        applications.ResNet50(weights="imagenet", classes=10)
    with pytest.raises(ValueError, match="at least 32"):
        applications.ResNet50(weights=None, include_top=False, input_shape=(16, 16, 3))


@pytest.mark.parametrize("name", ["MobileNetV2", "ResNet50V2"])
@pytest.mark.usefixtures("zero_initial_weights")   # lamina's values all come from Keras's (zeros if one did not)
def test_same_weights_give_keras_outputs(name, monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    theirs = getattr(keras.applications, name)(weights=None, include_top=False, input_shape=(48, 48, 3),
                                               pooling="avg")
    mine = getattr(applications, name)(weights=None, include_top=False, input_shape=(48, 48, 3), pooling="avg")
    rng = np.random.default_rng(0)
    for layer in theirs.layers:
        ws = layer.get_weights()
        if ws:
            if "moving_variance" in [w.path.split("/")[-1] for w in layer.weights]:
                ws[-1] = rng.uniform(0.5, 1.5, ws[-1].shape).astype("float32")   # non-trivial statistics
                ws[-2] = rng.normal(0, 0.1, ws[-2].shape).astype("float32")
                layer.set_weights(ws)
            mine.get_layer(layer.name).set_weights(ws)
    x = rng.random((2, 48, 48, 3), dtype=np.float32)
    np.testing.assert_allclose(mine.predict(x, verbose=0), np.asarray(theirs.predict(x, verbose=0)),
                               rtol=1e-4, atol=1e-4)


def test_imagenet_weights_are_found_by_architecture_not_by_the_models_name(tmp_path, monkeypatch, densenet121_file):
    monkeypatch.setenv("LAMINA_HOME", str(tmp_path))
    weights, path = densenet121_file
    _place(path, tmp_path)
    renamed = applications.DenseNet121(name="my_densenet")          # weights='imagenet' (the default)
    assert renamed.name == "my_densenet"
    np.testing.assert_array_equal(renamed.get_weights()[0], weights[0])
    with pytest.raises(FileNotFoundError, match=r"keras\.applications\.MobileNetV2\(weights='imagenet'\)"):
        applications.MobileNetV2()
