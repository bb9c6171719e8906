"""Model files: save/load round trips (Sequential, functional, registered subclassed), optimizer state,
weights files, refusals (Lambda, unknown classes) and crash safety."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import zipfile

import numpy as np
import pytest

import lamina as keras
from lamina.io import ModelFileError
from lamina.models import load_model, load_weights, save_model, save_weights


def data(n=24, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 5)).astype("float32"), rng.integers(0, 3, n)


def sequential():
    return keras.Sequential([keras.Input((5,)), keras.layers.Dense(7, activation="relu"),
                             keras.layers.Dense(3, activation="softmax")])


def functional():
    inp = keras.Input((5,), name="features")
    a = keras.layers.Dense(6, activation="tanh")(inp)
    if hasattr(keras.layers, "Concatenate"):   # a real two-branch graph once merging layers exist
        merged = keras.layers.Concatenate()([a, keras.layers.Dense(4, activation="relu")(inp)])
    else:
        merged = keras.layers.Dense(4, activation="relu")(a)
    out = keras.layers.Dense(3, activation="softmax")(merged)
    return keras.Model(inp, out)


@keras.utils.register_keras_serializable(package="tests")
class TwoTower(keras.Model):
    def __init__(self, hidden=6, **kwargs):
        super().__init__(**kwargs)
        self.hidden = hidden
        self.left = keras.layers.Dense(hidden, activation="relu")
        self.head = keras.layers.Dense(3, activation="softmax")

    def call(self, x, training=None):
        return self.head(self.left(x))

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden}


def subclassed():
    m = TwoTower(hidden=6)
    m(np.zeros((1, 5), "float32"))
    return m


BUILDERS = {"sequential": sequential, "functional": functional, "subclassed": subclassed}


def fit(model, x, y, epochs=2, seed=1):
    keras.utils.set_random_seed(seed)
    return model.fit(x, y, batch_size=8, epochs=epochs, shuffle=True, verbose=0).history["loss"]


@pytest.mark.parametrize("kind", list(BUILDERS))
@pytest.mark.parametrize("ext", [".keras", ".lamina"])
def test_round_trip_with_optimizer_state(kind, ext, tmp_path):
    x, y = data()
    model = BUILDERS[kind]()
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    fit(model, x, y)
    path = tmp_path / f"m{ext}"
    model.save(path)
    loaded = load_model(path)
    assert type(loaded) is type(model)
    assert np.array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    assert loaded.optimizer.iterations == model.optimizer.iterations
    assert np.isclose(float(loaded.optimizer.learning_rate), 0.01)
    for a, b in zip(model.optimizer.get_state(), loaded.optimizer.get_state()):
        assert np.array_equal(a, b)
    # Continued training from the file is identical to continuing in memory.
    assert fit(model, x, y, seed=5) == fit(loaded, x, y, seed=5)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_round_trip_uncompiled_and_compile_false(kind, tmp_path):
    x, _ = data()
    model = BUILDERS[kind]()
    save_model(model, tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras")
    assert np.array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))
    assert not loaded.compiled
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.save(tmp_path / "c.keras")
    assert not load_model(tmp_path / "c.keras", compile=False).compiled


def test_file_layout(tmp_path):
    model = sequential()
    model.compile("adam", "sparse_categorical_crossentropy")
    fit(model, *data(), epochs=1)
    model.save(tmp_path / "m.lamina")      # lamina's own format (a .keras name gets Keras's format)
    with zipfile.ZipFile(tmp_path / "m.lamina") as z:
        assert sorted(z.namelist()) == ["config.json", "metadata.json", "model.weights.safetensors"]
        meta = json.loads(z.read("metadata.json"))
        config = json.loads(z.read("config.json"))
        from safetensors.numpy import load
        weights = load(z.read("model.weights.safetensors"))
    assert meta["lamina_version"] == keras.__version__ and meta["format_version"] == 2
    assert config["class_name"] == "Sequential" and config["compile_config"]["optimizer"]["class_name"] == "Adam"
    model_keys = sorted(k for k in weights if k.startswith("model/"))
    assert model_keys[0].startswith("model/00000/") and model_keys[0].endswith("/kernel")
    assert len(model_keys) == 4 and any(k.startswith("optimizer/") for k in weights)


def test_keras_file_layout(tmp_path):
    """A .keras name gets Keras 3's own format: config.json, metadata.json and model.weights.h5."""
    h5py = pytest.importorskip("h5py")
    import io
    model = sequential()
    model.compile("adam", "sparse_categorical_crossentropy")
    fit(model, *data(), epochs=1)
    model.save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as z:
        assert sorted(z.namelist()) == ["config.json", "metadata.json", "model.weights.h5"]
        meta = json.loads(z.read("metadata.json"))
        config = json.loads(z.read("config.json"))
        names = []
        with h5py.File(io.BytesIO(z.read("model.weights.h5")), "r") as f:
            f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    assert meta["keras_version"].startswith("3.")
    assert config["class_name"] == "Sequential" and config["module"] == "keras"
    assert config["compile_config"]["optimizer"]["class_name"] == "Adam"
    assert "layers/dense/vars/0" in names and "layers/dense_1/vars/1" in names
    assert "optimizer/vars/0" in names and "optimizer/vars/1" in names   # iteration, learning rate


def test_custom_objects_for_unregistered_layer(tmp_path):
    class Scale(keras.layers.Layer):   # registered by class name automatically, found via custom_objects too
        def __init__(self, factor=2.0, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

        def call(self, x):
            return x * self.factor

        def compute_output_shape(self, s):
            return s
    model = keras.Sequential([keras.Input((5,)), Scale(3.0), keras.layers.Dense(2)])
    model.save(tmp_path / "m.keras")
    loaded = load_model(tmp_path / "m.keras", custom_objects={"Scale": Scale})
    x, _ = data()
    assert np.array_equal(model.predict(x, verbose=0), loaded.predict(x, verbose=0))


def test_a_programs_class_named_as_one_of_laminas_leaves_laminas_files_loadable(tmp_path):
    """keras.io's text classifier defines its own TokenAndPositionEmbedding. Defining it must not make lamina's
    class of that name unreachable: a model file with lamina's layer still loads as lamina's (it built the
    program's class, which refused the file's config), and the program's own model loads with custom_objects,
    as a custom class does in Keras."""
    from lamina.registry import get_registered_object
    ids = np.random.default_rng(0).integers(0, 50, (3, 8))
    ours = keras.Sequential([keras.Input((8,), dtype="int32"),
                             keras.layers.TokenAndPositionEmbedding(50, 8, 4), keras.layers.Dense(2)])
    ours.save(tmp_path / "ours.keras")

    class TokenAndPositionEmbedding(keras.layers.Layer):   # the program's, as keras.io writes it
        def __init__(self, maxlen, vocab_size, embed_dim, **kwargs):
            super().__init__(**kwargs)
            self.token_emb = keras.layers.Embedding(input_dim=vocab_size, output_dim=embed_dim)
            self.pos_emb = keras.layers.Embedding(input_dim=maxlen, output_dim=embed_dim)

        def call(self, x):
            return self.token_emb(x) + self.pos_emb(keras.ops.arange(0, keras.ops.shape(x)[-1], 1))
    assert get_registered_object("TokenAndPositionEmbedding") is keras.layers.TokenAndPositionEmbedding
    loaded = load_model(tmp_path / "ours.keras")
    assert type(loaded.layers[0]) is keras.layers.TokenAndPositionEmbedding
    assert np.array_equal(ours.predict(ids, verbose=0), loaded.predict(ids, verbose=0))
    theirs = keras.Sequential([keras.Input((8,), dtype="int32"), TokenAndPositionEmbedding(8, 50, 4)])
    theirs.save(tmp_path / "theirs.keras")
    back = load_model(tmp_path / "theirs.keras", custom_objects={"TokenAndPositionEmbedding": TokenAndPositionEmbedding})
    assert type(back.layers[0]) is TokenAndPositionEmbedding
    assert np.array_equal(theirs.predict(ids, verbose=0), back.predict(ids, verbose=0))


def test_lambda_refused_before_writing(tmp_path):
    model = keras.Sequential([keras.Input((5,)), keras.layers.Lambda(lambda t: t * 2), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="Lambda.*cannot be serialised"):
        model.save(tmp_path / "m.keras")
    assert not os.listdir(tmp_path)


def tamper_config(path, fn):
    with zipfile.ZipFile(path) as z:
        members = {n: z.read(n) for n in z.namelist()}
    config = json.loads(members["config.json"])
    fn(config)
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w") as z:
        for n, b in members.items():
            z.writestr(n, b)


def test_unknown_classes_refused(tmp_path):
    path = tmp_path / "m.keras"
    sequential().save(path)
    tamper_config(path, lambda c: c.update(class_name="os.system"))
    with pytest.raises(ModelFileError, match="'os.system' is not in lamina's registry"):
        load_model(path)
    sequential().save(path)
    tamper_config(path, lambda c: c["config"]["layers"][1].update(class_name="subprocess.Popen"))
    with pytest.raises(ModelFileError, match=r"m.keras.*subprocess.Popen"):
        load_model(path)
    sequential().save(path)
    tamper_config(path, lambda c: c.update(class_name="Adam"))   # registered, but not a model
    with pytest.raises(ModelFileError, match="is not a model class"):
        load_model(path)


def test_weight_count_and_shape_mismatch(tmp_path):
    path = tmp_path / "m.keras"
    sequential().save(path)
    tamper_config(path, lambda c: c["config"]["layers"][1]["config"].update(units=9))
    with pytest.raises(ModelFileError, match="shape"):
        load_model(path)


def test_save_weights_load_weights(tmp_path):
    x, _ = data()
    a, b = functional(), functional()
    path = tmp_path / "w.weights.safetensors"
    save_weights(a, path)
    a2 = a.predict(x, verbose=0)
    assert not np.array_equal(a2, b.predict(x, verbose=0))
    b.load_weights(path)
    assert np.array_equal(a2, b.predict(x, verbose=0))
    # Weights can also be taken from a whole model file.
    c = functional()
    a.save(tmp_path / "m.keras")
    load_weights(c, tmp_path / "m.keras")
    assert np.array_equal(a2, c.predict(x, verbose=0))
    with pytest.raises(ModelFileError, match="weight arrays"):
        sequential().load_weights(path)


def test_overwrite_false(tmp_path):
    model = sequential()
    model.save(tmp_path / "m.keras")
    with pytest.raises(FileExistsError):
        save_model(model, tmp_path / "m.keras", overwrite=False)


def test_corrupt_file_names_the_file(tmp_path):
    path = tmp_path / "broken.keras"
    sequential().save(path)
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(ModelFileError, match="broken.keras"):
        load_model(path)
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.keras")


SAVER = textwrap.dedent("""
    import sys, numpy as np, lamina as keras
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(512), keras.layers.Dense(512)])
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        model.layers[-1].bias.assign(np.full(512, i, "float32"))
        model.save(sys.argv[1])
""")


def test_sigkill_while_saving_model(tmp_path):
    path = tmp_path / "m.keras"
    sequential().save(path)
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    model = load_model(path)   # the old file or a complete new one, never half of one
    bias = model.layers[-1].get_weights()[-1]
    assert bias.shape in ((3,), (512,)) and np.all(bias == bias[0])
    assert [p.name for p in tmp_path.iterdir()] == ["m.keras"] or all(
        p.name == "m.keras" or p.name.startswith(".m.keras.") for p in tmp_path.iterdir())


def test_a_subclassed_models_own_from_config_without_custom_objects_loads(tmp_path):
    # Keras's pattern: from_config(cls, config) rebuilding a nested model; lamina called it with custom_objects=
    @keras.saving.register_keras_serializable(package="test_saving")
    class Scaled(keras.Model):
        def __init__(self, inner, k=2.0, **kw):
            super().__init__(**kw)
            self.inner, self.k = inner, k

        def call(self, x):
            return self.inner(x) * self.k

        def get_config(self):
            return {**super().get_config(), "inner": keras.saving.serialize_keras_object(self.inner), "k": self.k}

        @classmethod
        def from_config(cls, config):
            config = dict(config)
            config["inner"] = keras.saving.deserialize_keras_object(config["inner"])
            return cls(**config)

    model = Scaled(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), k=3.0)
    x = np.ones((2, 3), np.float32)
    want = model(x).numpy()
    model.save(tmp_path / "s.keras")
    loaded = keras.models.load_model(tmp_path / "s.keras")
    assert type(loaded).__name__ == "Scaled" and loaded.k == 3.0
    np.testing.assert_allclose(loaded(x).numpy(), want, rtol=1e-6)
