"""STFTSpectrogram (issue 18, item 4): shapes, config and numbers against real Keras 3.15 for every mode,
padding, window, scaling, data format and expand_dims on random multi-channel signals; gradients with
respect to the signal (and the kernels) by central differences; a model with it round-trips through
model.save / load_model; and the layer runs on the 'cuda' device stand-in."""
import os
import warnings

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import lamina  # noqa: E402
from lamina import layers  # noqa: E402
from lamina.testing import check_grad  # noqa: E402

from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")
R = np.random.default_rng(18)
MODES = ("real", "imag", "magnitude", "log", "angle", "psd", "stft")


def _keras(kwargs, x):
    return keras.ops.convert_to_numpy(keras.layers.STFTSpectrogram(**kwargs)(x))


def _compare(kwargs, x):
    layer = layers.STFTSpectrogram(**kwargs)
    got = layer(x).numpy()
    want = _keras(kwargs, x)
    assert got.shape == want.shape == tuple(layer.compute_output_shape(x.shape))
    if kwargs.get("mode", "log") == "angle":  # angles compare on the circle (pi and -pi are one angle)
        err = np.abs(np.angle(np.exp(1j * (got.astype(np.float64) - want))))
        assert err.max() < 1e-3, err.max()
    else:
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    return got


def test_defaults_match_keras_signature_and_config():
    import inspect
    ours = inspect.signature(layers.STFTSpectrogram)
    theirs = inspect.signature(keras.layers.STFTSpectrogram)
    assert [(p.name, p.default) for p in ours.parameters.values()] == \
        [(p.name, p.default) for p in theirs.parameters.values()]
    cfg, kcfg = layers.STFTSpectrogram().get_config(), keras.layers.STFTSpectrogram().get_config()
    for key in ("mode", "frame_length", "frame_step", "fft_length", "window", "periodic", "scaling", "padding",
                "data_format", "expand_dims"):
        assert cfg[key] == kcfg[key], key


def test_default_layer_matches_keras_on_a_stereo_signal():
    x = R.standard_normal((2, 1500, 2)).astype(np.float32)
    y = _compare({}, x)
    assert y.shape == (2, 10, 2 * 129)
    layer = layers.STFTSpectrogram()
    layer(x)
    assert [w.name for w in layer.weights] == ["real_kernel", "imag_kernel"]
    assert [tuple(w.shape) for w in layer.weights] == [(256, 1, 129)] * 2


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("padding", ["valid", "same"])
@pytest.mark.parametrize("data_format,expand_dims", [("channels_last", False), ("channels_last", True),
                                                     ("channels_first", False), ("channels_first", True)])
def test_every_mode_padding_and_layout_matches_keras(mode, padding, data_format, expand_dims):
    x = R.standard_normal((2, 301, 3)).astype(np.float32)
    if data_format == "channels_first":
        x = np.ascontiguousarray(x.transpose(0, 2, 1))
    _compare(dict(mode=mode, frame_length=60, frame_step=25, fft_length=64, padding=padding,
                  data_format=data_format, expand_dims=expand_dims), x)


@pytest.mark.parametrize("window,periodic,scaling", [
    ("hann", True, "density"), ("hamming", False, "spectrum"), ("hamming", True, None), ("blackman", False, "density"),
    (None, False, "density"), ("array", False, "spectrum"),
])
@pytest.mark.parametrize("mode", ["magnitude", "stft", "psd"])
def test_windows_and_scalings_match_keras(window, periodic, scaling, mode):
    if window == "array":
        window = list(np.random.default_rng(3).uniform(0.2, 1.0, 50))
    x = R.standard_normal((3, 400, 1)).astype(np.float32)
    _compare(dict(mode=mode, frame_length=50, frame_step=50, fft_length=128, window=window, periodic=periodic,
                  scaling=scaling, padding="same"), x)


def test_odd_fft_length_and_default_step_match_keras():
    x = R.standard_normal((1, 700, 2)).astype(np.float32)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _compare(dict(mode="log", frame_length=90, fft_length=101), x)
    assert any("power of two" in str(w.message) for w in caught)


def test_float64_input_stays_float64_and_matches_float32():
    x = R.standard_normal((2, 300, 1))
    layer = layers.STFTSpectrogram(mode="log", frame_length=64, dtype="float64")
    y = layer(x)
    assert y.dtype == np.float64
    y32 = layers.STFTSpectrogram(mode="log", frame_length=64)(x.astype(np.float32)).numpy()
    np.testing.assert_allclose(y32, y.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_gradients_by_central_differences(mode, data_format):
    layer = layers.STFTSpectrogram(mode=mode, frame_length=16, frame_step=5, padding="same", data_format=data_format,
                                   expand_dims=mode == "log")
    x = np.random.default_rng(1).standard_normal((2, 40, 2))
    if data_format == "channels_first":
        x = x.transpose(0, 2, 1)
    if mode == "angle":
        # the imaginary part of bin 0 is identically 0, so the angle jumps between pi and -pi when that kernel
        # moves: only the gradient with respect to the signal exists everywhere
        layer(x)
        check_grad(layer, x, params=[])
    else:
        check_grad(layer, x)


def test_validation_errors_match_keras():
    for bad in (dict(frame_length=10, frame_step=11), dict(frame_length=10, frame_step=0),
                dict(frame_length=64, fft_length=32), dict(mode="power"), dict(scaling="l2"),
                dict(padding="causal"), dict(window="no-such-window")):
        with pytest.raises(ValueError):
            keras.layers.STFTSpectrogram(**bad)
        with pytest.raises(ValueError):
            layers.STFTSpectrogram(**bad)
    with pytest.raises(TypeError):
        layers.STFTSpectrogram(frame_length=8)(np.ones((1, 32, 1), np.int32))


def test_model_round_trips_through_save_and_load(tmp_path):
    inputs = layers.Input((400, 2))
    x = layers.STFTSpectrogram(mode="log", frame_length=64, frame_step=32, window=list(np.hanning(64)),
                               expand_dims=True)(inputs)
    x = layers.Conv2D(4, 3, activation="relu")(x)
    outputs = layers.Dense(3)(layers.GlobalAveragePooling2D()(x))
    model = lamina.models.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="mse")
    data = R.standard_normal((8, 400, 2)).astype(np.float32)
    model.fit(data, R.standard_normal((8, 3)).astype(np.float32), epochs=1, verbose=0)  # moves the kernels
    path = tmp_path / "stft.keras"
    model.save(path)
    loaded = lamina.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(data, verbose=0), model.predict(data, verbose=0), rtol=1e-6, atol=1e-6)
    cfg = loaded.layers[1].get_config()
    assert cfg["mode"] == "log" and cfg["expand_dims"] is True and len(cfg["window"]) == 64


def test_runs_on_the_device_like_on_cpu(device_xp):
    x = R.standard_normal((2, 200, 2)).astype(np.float32)
    lamina.backend.set_device("cpu")
    want = layers.STFTSpectrogram(mode="magnitude", frame_length=32, padding="same")(x).numpy()
    lamina.backend.set_device("cuda")
    got = layers.STFTSpectrogram(mode="magnitude", frame_length=32, padding="same")(device_xp.asarray(x))
    np.testing.assert_allclose(lamina.backend.to_numpy(got.data), want, rtol=1e-5, atol=1e-5)


def test_keras_files_both_ways(tmp_path):
    """A Keras model with STFTSpectrogram loads in lamina with the same outputs, and lamina's file loads in
    Keras (the kernels travel as real_kernel / imag_kernel)."""
    inputs = keras.Input((300, 2))
    x = keras.layers.STFTSpectrogram(mode="log", frame_length=64, padding="same", expand_dims=True)(inputs)
    x = keras.layers.Conv2D(3, 3)(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
    model.save(tmp_path / "k.keras")
    data = R.standard_normal((2, 300, 2)).astype(np.float32)
    want = keras.ops.convert_to_numpy(model(data))
    ours = lamina.models.load_model(tmp_path / "k.keras")
    np.testing.assert_allclose(ours.predict(data, verbose=0), want, rtol=1e-5, atol=1e-6)
    ours.save(tmp_path / "l.keras")
    back = keras.models.load_model(tmp_path / "l.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(back(data)), want, rtol=1e-5, atol=1e-6)
