"""MobileNetV3, EfficientNet and EfficientNetV2 as Keras 3.15's keras.applications: parameter counts, layer
counts and layer names (a digest of the whole list) for every builder, the same predictions as real Keras
from the same weights file, a training step at a small size, and weights='imagenet' (the forward pass of every
builder at its smallest input, 32 x 32, is test_applications_forward's)."""
import os

import numpy as np
import pytest

import lamina
from lamina import applications
from lamina.applications import efficientnet, efficientnet_v2, mobilenet_v3
from lamina.testing import check_grad

from repo_scripts import load_script  # tests/repo_scripts.py

gen = load_script("tests/gen_keras_application_figures.py")

# Real Keras 3.15, weights=None, printed by `KERAS_BACKEND=torch python tests/gen_keras_application_figures.py`:
# (count_params(), len(model.layers), model.name, digest of the layer names, first 3 names, last 3 names)
KERAS_FIGURES = {
    ('MobileNetV3Small', ()): (2554968, 164, 'MobileNetV3Small', '775bfb33f6f6bda1', ('input_layer', 'rescaling', 'conv'), ('logits', 'flatten', 'predictions')),
    ('MobileNetV3Large', ()): (5507432, 194, 'MobileNetV3Large', '714073e60b994a34', ('input_layer', 'rescaling', 'conv'), ('logits', 'flatten', 'predictions')),
    ('MobileNetV3Small', (('minimalistic', True),)): (2056848, 110, 'MobileNetV3Small', 'dd992d3350cc3a45', ('input_layer', 'rescaling', 'conv'), ('logits', 'flatten', 'predictions')),
    ('MobileNetV3Large', (('minimalistic', True),)): (3948688, 146, 'MobileNetV3Large', '6f720141aba7129b', ('input_layer', 'rescaling', 'conv'), ('logits', 'flatten', 'predictions')),
    ('MobileNetV3Small', (('alpha', 0.75),)): (2051552, 164, 'MobileNetV3Small', '775bfb33f6f6bda1', ('input_layer', 'rescaling', 'conv'), ('logits', 'flatten', 'predictions')),
    ('MobileNetV3Large', (('alpha', 0.75),)): (4012616, 194, 'MobileNetV3Large', '714073e60b994a34', ('input_layer', 'rescaling', 'conv'), ('logits', 'flatten', 'predictions')),
    ('MobileNetV3Large', (('alpha', 1.25), ('include_top', False), ('pooling', 'avg'))): (4764160, 187, 'MobileNetV3Large', '776905c5c57bdd37', ('input_layer', 'rescaling', 'conv'), ('conv_1_bn', 'activation_19', 'avg_pool')),
    ('MobileNetV3Small', (('dropout_rate', 0.0), ('include_preprocessing', False))): (2554968, 162, 'MobileNetV3Small', 'bb64a1727bb43640', ('input_layer', 'conv', 'conv_bn'), ('logits', 'flatten', 'predictions')),
    ('EfficientNetB0', ()): (5330571, 240, 'efficientnetb0', '7cf19367d2ee1f0e', ('input_layer', 'rescaling', 'normalization'), ('avg_pool', 'top_dropout', 'predictions')),
    ('EfficientNetB1', ()): (7856239, 342, 'efficientnetb1', 'a4fcc4e105f9cfd8', ('input_layer', 'rescaling', 'normalization'), ('avg_pool', 'top_dropout', 'predictions')),
    ('EfficientNetB2', ()): (9177569, 342, 'efficientnetb2', 'a4fcc4e105f9cfd8', ('input_layer', 'rescaling', 'normalization'), ('avg_pool', 'top_dropout', 'predictions')),
    ('EfficientNetB3', ()): (12320535, 387, 'efficientnetb3', '30010b147551463c', ('input_layer', 'rescaling', 'normalization'), ('avg_pool', 'top_dropout', 'predictions')),
    ('EfficientNetB4', ()): (19466823, 477, 'efficientnetb4', '9664c71373dcab1f', ('input_layer', 'rescaling', 'normalization'), ('avg_pool', 'top_dropout', 'predictions')),
    ('EfficientNetB5', ()): (30562527, 579, 'efficientnetb5', '7cf0c46bb53af428', ('input_layer', 'rescaling', 'normalization'), ('avg_pool', 'top_dropout', 'predictions')),
    ('EfficientNetB6', ()): (43265143, 669, 'efficientnetb6', '3301485359902784', ('input_layer', 'rescaling', 'normalization'), ('avg_pool', 'top_dropout', 'predictions')),
    ('EfficientNetB7', ()): (66658687, 816, 'efficientnetb7', '27a71c8071212cc2', ('input_layer', 'rescaling', 'normalization'), ('avg_pool', 'top_dropout', 'predictions')),
    ('EfficientNetV2B0', ()): (7200312, 273, 'efficientnetv2-b0', 'dd7ad1b5eec2e7ff', ('input_layer', 'rescaling', 'normalization'), ('avg_pool', 'top_dropout', 'predictions')),
    ('EfficientNetV2B1', ()): (8212124, 337, 'efficientnetv2-b1', '967d9da578b0e731', ('input_layer', 'rescaling', 'normalization'), ('avg_pool', 'top_dropout', 'predictions')),
    ('EfficientNetV2B2', ()): (10178374, 352, 'efficientnetv2-b2', '6febea67313ef468', ('input_layer', 'rescaling', 'normalization'), ('avg_pool', 'top_dropout', 'predictions')),
    ('EfficientNetV2B3', ()): (14467622, 412, 'efficientnetv2-b3', '84dc391d70a33fad', ('input_layer', 'rescaling', 'normalization'), ('avg_pool', 'top_dropout', 'predictions')),
    ('EfficientNetV2S', ()): (21612360, 516, 'efficientnetv2-s', '4ae37617110890a6', ('input_layer', 'rescaling', 'stem_conv'), ('avg_pool', 'top_dropout', 'predictions')),
    ('EfficientNetV2M', ()): (54431388, 743, 'efficientnetv2-m', 'ccc89a45ead57912', ('input_layer', 'rescaling', 'stem_conv'), ('avg_pool', 'top_dropout', 'predictions')),
    ('EfficientNetV2L', ()): (119027848, 1031, 'efficientnetv2-l', '265bab3010a5b312', ('input_layer', 'rescaling', 'stem_conv'), ('avg_pool', 'top_dropout', 'predictions')),
    ('EfficientNetB0', (('include_top', False), ('pooling', 'max'))): (4049571, 238, 'efficientnetb0', 'd85a0badbabc32b0', ('input_layer', 'rescaling', 'normalization'), ('top_bn', 'top_activation', 'max_pool')),
    ('EfficientNetV2B0', (('include_preprocessing', False), ('include_top', False))): (5919312, 268, 'efficientnetv2-b0', '3ea9b141d616eafa', ('input_layer', 'stem_conv', 'stem_bn'), ('top_conv', 'top_bn', 'top_activation')),
    ('EfficientNetV2S', (('include_preprocessing', False), ('include_top', False))): (20331360, 512, 'efficientnetv2-s', '217bb67d18a9a6ce', ('input_layer', 'stem_conv', 'stem_bn'), ('top_conv', 'top_bn', 'top_activation')),
}


@pytest.mark.parametrize("builder, kwargs", sorted(KERAS_FIGURES), ids=lambda v: str(v))
@pytest.mark.usefixtures("zero_initial_weights")
def test_counts_and_layer_names_equal_keras(builder, kwargs):
    # automatic names (re_lu_3, activation_7, ...) count from zero, as there (names only: a collection of the
    # garbage with Keras loaded costs ~0.3 s and makes no name)
    lamina.backend.clear_session(free_memory=False)
    assert gen.figures(builder, dict(kwargs), applications) == KERAS_FIGURES[(builder, kwargs)]


def test_every_case_of_the_generator_is_tabulated():
    assert {(b, tuple(sorted(k.items()))) for b, k in gen.CASES} == set(KERAS_FIGURES)


def _keras(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    return pytest.importorskip("keras")


@pytest.mark.parametrize("builder, kwargs", [
    ("EfficientNetB0", {"include_top": False}), ("EfficientNetV2B1", {"include_top": False}),
    ("EfficientNetV2S", {"include_top": False, "include_preprocessing": False}),
    ("MobileNetV3Large", {"minimalistic": True}), ("MobileNetV3Small", {"alpha": 0.75, "pooling": "max",
                                                                        "include_top": False})])
@pytest.mark.usefixtures("zero_initial_weights")
def test_layer_names_and_weight_shapes_equal_live_keras(builder, kwargs, monkeypatch, keras_shapes_only):
    keras = _keras(monkeypatch)
    keras.backend.clear_session(free_memory=False)       # automatic names from zero on both sides
    with keras_shapes_only():
        theirs = getattr(keras.applications, builder)(weights=None, input_shape=(64, 64, 3), **kwargs)
    lamina.backend.clear_session(free_memory=False)
    mine = getattr(applications, builder)(weights=None, input_shape=(64, 64, 3), **kwargs)

    def described(model):
        return [(layer.name, [tuple(w.shape) for w in layer.weights]) for layer in model.layers]
    assert described(mine) == described(theirs)
    assert mine.output_shape == tuple(theirs.output_shape)


@pytest.mark.parametrize("builder", ["EfficientNetB0", "MobileNetV3Small", "EfficientNetV2B0"])
@pytest.mark.usefixtures("zero_initial_weights")   # lamina's values all come from the file (zeros if one did not)
def test_keras_weights_file_gives_keras_predictions(builder, tmp_path, monkeypatch):
    """Real Keras's model (random weights, non-trivial batch-norm and input statistics) saved with
    save_weights and loaded into lamina's: every weight lands in its layer, the predictions agree."""
    keras = _keras(monkeypatch)
    keras.utils.set_random_seed(0)
    kwargs = dict(weights=None, input_shape=(64, 64, 3), classifier_activation=None)
    theirs = getattr(keras.applications, builder)(**kwargs)
    rng = np.random.default_rng(0)
    for layer in theirs.layers:
        names = [w.path.split("/")[-1] for w in layer.weights]
        ws = layer.get_weights()
        if "moving_variance" in names:
            ws[names.index("moving_variance")] = rng.uniform(0.5, 1.5, ws[0].shape).astype("float32")
            ws[names.index("moving_mean")] = rng.normal(0, 0.1, ws[0].shape).astype("float32")
            layer.set_weights(ws)
        elif names[:2] == ["mean", "variance"]:        # EfficientNet's input Normalization
            ws[0], ws[1] = np.float32([0.47, 0.45, 0.39]), np.float32([0.05, 0.06, 0.07])
            layer.set_weights(ws)
    theirs.save_weights(tmp_path / "k.weights.h5")
    mine = getattr(applications, builder)(**kwargs)
    mine.load_weights(tmp_path / "k.weights.h5")
    x = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    expected = np.asarray(theirs.predict(x, verbose=0))
    assert np.abs(expected).max() > 1e-2                      # not a vacuous comparison of zeros
    np.testing.assert_allclose(mine.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-5)


def test_one_training_step_with_stochastic_depth():
    """Training runs the residual Dropout(noise_shape=(None, 1, 1, 1)) layers and moves the weights."""
    lamina.utils.set_random_seed(0)
    model = applications.EfficientNetB0(weights=None, input_shape=(32, 32, 3), classes=3)
    drops = [layer for layer in model.layers if layer.name.endswith("_drop")]
    assert drops and all(d.noise_shape == (None, 1, 1, 1) for d in drops)
    model.compile("sgd", "sparse_categorical_crossentropy")
    before = model.get_layer("predictions").get_weights()[0].copy()
    loss = model.train_on_batch(np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype("float32"),
                                np.array([0, 1, 2, 0]))
    assert np.isfinite(loss)
    assert not np.allclose(model.get_layer("predictions").get_weights()[0], before)


def test_hard_sigmoid_gate_is_relu6_shifted_and_differentiable():
    from lamina.applications.mobilenet_v3 import _hard_sigmoid
    x = np.random.default_rng(1).uniform(-5, 5, (3, 2, 2, 4))
    x[np.abs(np.abs(x) - 3) < 0.05] = 0.5                              # away from the kinks at -3 and 3
    inp = lamina.Input((2, 2, 4))
    gate = lamina.Model(inp, _hard_sigmoid(inp))
    assert [type(l).__name__ for l in gate.layers] == ["InputLayer", "ReLU"]   # the + and * are operations
    np.testing.assert_allclose(gate(x.astype("float32")).numpy(), np.clip(x + 3, 0, 6) / 6, rtol=1e-6, atol=1e-7)
    check_grad(gate, x)


@pytest.mark.parametrize("builder", ["MobileNetV3Small", "EfficientNetV2B0"])
def test_keras_file_round_trip(builder, tmp_path):
    """The hard-sigmoid gate and the constant-statistics Normalization survive model.save / load_model."""
    model = getattr(applications, builder)(weights=None, input_shape=(32, 32, 3), include_top=False, pooling="avg")
    model.save(tmp_path / "m.keras")
    loaded = lamina.models.load_model(tmp_path / "m.keras")
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("builder, stem", [("EfficientNetB0", "efficientnetb0"),
                                           ("EfficientNetV2S", "efficientnetv2-s"),
                                           ("MobileNetV3Small", "mobilenet_v3_small_1.00"),
                                           ("MobileNetV3Large", "mobilenet_v3_large_1.00")])
@pytest.mark.filterwarnings("ignore:`input_shape` is undefined")    # MobileNetV3's (None, None) input, as Keras
def test_imagenet_weights_missing_says_where_to_put_them(builder, stem, tmp_path, monkeypatch):
    monkeypatch.setenv("LAMINA_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        getattr(applications, builder)(name="renamed")
    msg = str(info.value)
    assert str(tmp_path / "models" / f"{stem}.weights.h5") in msg and "weights=None" in msg
    assert f"keras.applications.{builder}(weights='imagenet')" in msg


def test_imagenet_weights_placed_by_the_user_are_loaded(tmp_path, monkeypatch):
    """EfficientNet with ImageNet weights has Keras's extra input Rescaling (rescaling_1) after the
    Normalization; the placed weights file is read into it."""
    monkeypatch.setenv("LAMINA_HOME", str(tmp_path))
    source = applications.EfficientNetB0(weights=None)
    source.get_layer("normalization").set_weights([np.float32([0.485, 0.456, 0.406]),
                                                   np.float32([0.229, 0.224, 0.225]), np.int32(0)])
    os.makedirs(tmp_path / "models")
    source.save_weights(tmp_path / "models" / "efficientnetb0.weights.h5")
    lamina.backend.clear_session(free_memory=False)
    loaded = applications.EfficientNetB0()
    assert [layer.name for layer in loaded.layers[:5]] == ["input_layer", "rescaling", "normalization",
                                                           "rescaling_1", "stem_conv_pad"]
    for a, b in zip(loaded.get_weights(), source.get_weights()):
        np.testing.assert_array_equal(a, b)
    # the three input layers give the ImageNet standardisation (x / 255 - mean) / std
    x = np.random.default_rng(0).uniform(0, 255, (1, 224, 224, 3)).astype("float32")
    head = lamina.Model(loaded.input, loaded.get_layer("rescaling_1").output)
    np.testing.assert_allclose(head.predict(x, verbose=0),
                               (x / 255 - np.float32([0.485, 0.456, 0.406])) / np.float32([0.229, 0.224, 0.225]),
                               rtol=1e-5, atol=1e-5)


def test_preprocess_and_decode_at_keras_module_paths(monkeypatch, tmp_path):
    keras = _keras(monkeypatch)
    monkeypatch.setenv("LAMINA_HOME", str(tmp_path))
    x = np.random.default_rng(0).uniform(0, 255, (2, 4, 4, 3)).astype("float32")
    for mine, theirs in ((efficientnet, keras.applications.efficientnet),
                         (efficientnet_v2, keras.applications.efficientnet_v2),
                         (mobilenet_v3, keras.applications.mobilenet_v3)):
        np.testing.assert_array_equal(mine.preprocess_input(x), np.asarray(theirs.preprocess_input(x)))
        with pytest.raises(ValueError, match="shape"):
            mine.decode_predictions(np.zeros((2, 10)))
        with pytest.raises(FileNotFoundError, match="imagenet_class_index.json"):
            mine.decode_predictions(np.zeros((2, 1000)))
    assert applications.efficientnet.EfficientNetB3 is applications.EfficientNetB3
    assert applications.efficientnet_v2.EfficientNetV2M is applications.EfficientNetV2M
    assert applications.mobilenet_v3.MobileNetV3Large is applications.MobileNetV3Large


def test_signatures_and_defaults_equal_keras(monkeypatch):
    import inspect
    keras = _keras(monkeypatch)
    for name in [f"EfficientNetB{i}" for i in range(8)] + ["EfficientNetV2B0", "EfficientNetV2B3",
                                                            "EfficientNetV2L", "MobileNetV3Small",
                                                            "MobileNetV3Large"]:
        mine, theirs = (inspect.signature(getattr(m, name)) for m in (applications, keras.applications))
        assert [(p.name, p.default) for p in mine.parameters.values()] == \
               [(p.name, p.default) for p in theirs.parameters.values()], name


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="alpha can be one of"):
        applications.MobileNetV3Small(alpha=0.5)
    with pytest.raises(ValueError, match="alpha can be one of"):
        applications.MobileNetV3Large(alpha=0.75, minimalistic=True)
    with pytest.raises(ValueError, match="classes"):
        applications.EfficientNetV2B0(classes=10)
    with pytest.raises(ValueError, match="at least 32"):
        applications.MobileNetV3Small(weights=None, input_shape=(16, 16, 3))
    with pytest.raises(ValueError, match="at least 32"):
        applications.EfficientNetB0(weights=None, include_top=False, input_shape=(24, 24, 3))
    with pytest.raises(ValueError, match="weights"):
        applications.EfficientNetB1(weights="no_such_file.h5")
    for builder in ("EfficientNetB0", "EfficientNetV2B0", "MobileNetV3Small"):   # Keras's validate_activation
        with pytest.raises(ValueError, match="Only `None` and `softmax`"):
            getattr(applications, builder)(classifier_activation="sigmoid")


def test_mobilenet_v3_keras_files_move_both_ways(monkeypatch, tmp_path):
    """Keras's squeeze-and-excitation gate is ReLU(6) between two graph operations (+ 3, * 1/6): a Keras
    MobileNetV3Small .keras file loads in lamina and lamina's loads in Keras, with equal outputs."""
    keras = _keras(monkeypatch)
    keras.utils.set_random_seed(0)
    theirs = keras.applications.MobileNetV3Small(weights=None, input_shape=(32, 32, 3), classes=5)
    x = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    want = keras.ops.convert_to_numpy(theirs.predict(x, verbose=0))
    theirs.save(tmp_path / "k.keras")
    mine = lamina.models.load_model(tmp_path / "k.keras")
    np.testing.assert_allclose(mine.predict(x, verbose=0), want, rtol=1e-4, atol=1e-6)
    assert [l.name for l in mine.layers] == [l.name for l in theirs.layers]
    mine.save(tmp_path / "l.keras")
    back = keras.models.load_model(tmp_path / "l.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(back.predict(x, verbose=0)), want, rtol=1e-4, atol=1e-6)
