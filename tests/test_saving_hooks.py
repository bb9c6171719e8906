"""Keras 3's per-layer saving hooks in `.keras` files: a custom layer's save_own_variables / load_own_variables
(its own keys in model.weights.h5, under layers/<name>/vars) and save_assets / load_assets (its files under
assets/layers/<name>/ in the zip) work in lamina and travel both ways with real Keras 3; an archive whose
members could land outside the extraction folder is refused."""
import os
import zipfile

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
import lamina  # noqa: E402
from lamina.io import ModelFileError  # noqa: E402


def _classes(lib):
    """The same two custom layers, written once for either library (lamina or keras) and registered in it."""
    register = lib.saving.register_keras_serializable(package="hooks_test")

    class Scaled(lib.layers.Layer):
        """A weight plus a Python counter, saved under keys of its own ("kernel", "calls")."""

        def __init__(self, units=3, **kwargs):
            super().__init__(**kwargs)
            self.units, self.calls = units, 0

        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1], self.units), initializer="random_normal",
                                          name="kernel")

        def call(self, x):
            return lib.ops.matmul(x, self.kernel) * (1.0 + self.calls)

        def get_config(self):
            return {**super().get_config(), "units": self.units}

        def save_own_variables(self, store):
            store["kernel"] = np.asarray(self.kernel.numpy() if hasattr(self.kernel, "numpy") else self.kernel)
            store["calls"] = np.asarray(self.calls, np.int64)

        def load_own_variables(self, store):
            self.kernel.assign(np.array(store["kernel"]))
            self.calls = int(np.array(store["calls"]))

    class Lookup(lib.layers.Layer):
        """No weights; its vocabulary travels as assets/.../vocabulary.txt."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.vocabulary = []

        def call(self, x):
            return x * float(len(self.vocabulary))

        def save_assets(self, dir_path):
            with open(os.path.join(dir_path, "vocabulary.txt"), "w") as f:
                f.write("\n".join(self.vocabulary))

        def load_assets(self, dir_path):
            with open(os.path.join(dir_path, "vocabulary.txt")) as f:
                self.vocabulary = f.read().split("\n")

    return register(Scaled), register(Lookup)


def _scaled_model(lib, calls=2):
    Scaled, _ = _classes(lib)
    model = lib.Sequential([lib.Input((4,)), Scaled(3)])
    model.layers[-1].calls = calls
    return model


def _lookup_model(lib, vocab=("the", "cat", "sat")):
    _, Lookup = _classes(lib)
    model = lib.Sequential([lib.Input((4,)), Lookup()])
    model.layers[-1].vocabulary = list(vocab)
    return model


X = np.arange(8, dtype="float32").reshape(2, 4) / 8


def _state(model):
    layer = model.layers[-1]
    return np.asarray(layer.kernel.numpy() if hasattr(layer.kernel, "numpy") else layer.kernel), layer.calls


def _keras():
    keras = pytest.importorskip("keras")
    _classes(lamina)   # lamina's twins of the classes, registered under the same names
    return keras


def _loads_the_same(loader, saved, path, calls, rtol):
    """loader(path) gives saved's own variables, its call count and its predictions; the loaded model."""
    back = loader(path)
    np.testing.assert_allclose(_state(back)[0], _state(saved)[0])
    assert back.layers[-1].calls == calls
    np.testing.assert_allclose(back.predict(X, verbose=0), saved.predict(X, verbose=0), rtol=rtol)
    return back


# ------------------------------------------------------------------------------ save_own_variables
def test_own_variables_round_trip_in_lamina(tmp_path):
    model = _scaled_model(lamina, calls=2)
    model.save(tmp_path / "m.keras")
    _loads_the_same(lamina.models.load_model, model, tmp_path / "m.keras", 2, 1e-6)


def test_own_variables_keys_in_keras_layout(tmp_path):
    import h5py
    _scaled_model(lamina).save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        z.extract("model.weights.h5", tmp_path)
    with h5py.File(tmp_path / "model.weights.h5", "r") as f:
        assert sorted(f["layers/scaled/vars"].keys()) == ["calls", "kernel"]


def test_own_variables_keras_to_lamina_and_back(tmp_path):
    keras = _keras()
    theirs = _scaled_model(keras, calls=3)
    theirs.save(tmp_path / "k.keras")
    mine = _loads_the_same(lamina.models.load_model, theirs, tmp_path / "k.keras", 3, 1e-5)
    mine.layers[-1].calls = 5
    mine.save(tmp_path / "l.keras")
    again = keras.models.load_model(tmp_path / "l.keras")
    assert again.layers[-1].calls == 5
    np.testing.assert_allclose(_state(again)[0], _state(mine)[0])


def test_own_variables_in_weights_h5_both_ways(tmp_path):
    keras = _keras()
    theirs = _scaled_model(keras, calls=4)
    theirs.save_weights(tmp_path / "k.weights.h5")
    mine = _scaled_model(lamina, calls=0)
    mine.load_weights(tmp_path / "k.weights.h5")
    np.testing.assert_allclose(_state(mine)[0], _state(theirs)[0])
    assert mine.layers[-1].calls == 4
    mine.layers[-1].calls = 6
    mine.save_weights(tmp_path / "l.weights.h5")
    again = _scaled_model(keras, calls=0)
    again.load_weights(tmp_path / "l.weights.h5")
    assert again.layers[-1].calls == 6
    np.testing.assert_allclose(_state(again)[0], _state(mine)[0])


def test_hooks_of_a_layer_in_a_nested_model_both_ways(tmp_path):
    keras = _keras()
    Scaled, Lookup = _classes(keras)
    inner = keras.Sequential([keras.Input((4,)), Scaled(3)])
    inner.layers[-1].calls = 7
    outer = keras.Sequential([keras.Input((4,)), inner, Lookup()])
    outer.layers[-1].vocabulary = ["p", "q"]
    outer.save(tmp_path / "k.keras")
    mine = lamina.models.load_model(tmp_path / "k.keras")
    assert mine.layers[0].layers[-1].calls == 7 and mine.layers[-1].vocabulary == ["p", "q"]
    np.testing.assert_allclose(mine.predict(X, verbose=0), outer.predict(X, verbose=0), rtol=1e-5)
    mine.save(tmp_path / "l.keras")
    again = keras.models.load_model(tmp_path / "l.keras")
    assert again.layers[0].layers[-1].calls == 7 and again.layers[-1].vocabulary == ["p", "q"]


def test_default_hooks_match_keras_keys():
    layer = lamina.layers.Dense(2)
    layer.build((None, 3))
    store = {}
    layer.save_own_variables(store)
    assert sorted(store) == ["0", "1"]
    other = lamina.layers.Dense(2)
    other.build((None, 3))
    other.load_own_variables(store)
    np.testing.assert_array_equal(other.get_weights()[0], layer.get_weights()[0])
    with pytest.raises(ValueError):
        other.load_own_variables({"0": store["0"]})


# ------------------------------------------------------------------------------------------ assets
def test_assets_round_trip_in_lamina(tmp_path):
    _lookup_model(lamina).save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        assert "assets/layers/lookup/vocabulary.txt" in z.namelist()
    back = lamina.models.load_model(tmp_path / "m.keras")
    assert back.layers[-1].vocabulary == ["the", "cat", "sat"]


def test_assets_keras_to_lamina_and_back(tmp_path):
    keras = _keras()
    _lookup_model(keras, ("a", "b")).save(tmp_path / "k.keras")
    mine = lamina.models.load_model(tmp_path / "k.keras")
    assert mine.layers[-1].vocabulary == ["a", "b"]
    mine.layers[-1].vocabulary = ["x", "y", "z", "w"]
    mine.save(tmp_path / "l.keras")
    again = keras.models.load_model(tmp_path / "l.keras")
    assert again.layers[-1].vocabulary == ["x", "y", "z", "w"]


# ---------------------------------------------------------------------------------- hostile assets
@pytest.mark.parametrize("bad", ["assets/layers/lookup/../../../evil.txt", "/tmp/evil.txt",
                                 "assets/../evil.txt"])
def test_hostile_asset_path_refused(tmp_path, bad):
    _lookup_model(lamina).save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        members = {n: z.read(n) for n in z.namelist()}
    with zipfile.ZipFile(tmp_path / "bad.keras", "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
        info = zipfile.ZipInfo("x")
        info.filename = bad   # zipfile would clean the name given to ZipInfo(); set it raw, as an attacker can
        z.writestr(info, b"pwned")
    with pytest.raises(ModelFileError):
        lamina.models.load_model(tmp_path / "bad.keras")
    assert not os.path.exists(tmp_path / "evil.txt")


def test_symlink_asset_refused(tmp_path):
    _lookup_model(lamina).save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        members = {n: z.read(n) for n in z.namelist() if not n.startswith("assets/")}
    with zipfile.ZipFile(tmp_path / "bad.keras", "w") as z:
        for n, data in members.items():
            z.writestr(n, data)
        info = zipfile.ZipInfo("assets/layers/lookup/vocabulary.txt")
        info.external_attr = (0o120777 << 16)
        z.writestr(info, b"/etc/passwd")
    with pytest.raises(ModelFileError):
        lamina.models.load_model(tmp_path / "bad.keras")


def test_asset_file_clashing_with_a_folder_refused(tmp_path):
    _lookup_model(lamina).save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras", "a") as z:
        z.writestr("assets/layers/lookup/vocabulary.txt/inner", b"x")
    with pytest.raises(ModelFileError, match="cannot extract member"):
        lamina.models.load_model(tmp_path / "m.keras")
