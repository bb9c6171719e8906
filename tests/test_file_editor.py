"""keras.saving.KerasFileEditor: lamina's reads the files Keras writes into the same tree of weights as Keras's
own editor, compares them with a model, and its edits saved as .weights.h5 load in Keras and in lamina."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")
import lamina  # noqa: E402
from lamina.io import ModelFileError  # noqa: E402
from lamina.saving import KerasFileEditor  # noqa: E402


def _flat(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, prefix + k + "/"))
        else:
            out[prefix + k] = np.asarray(v)
    return out


def _keras_file(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.BatchNormalization(),
                              keras.layers.Dense(2)])
    model.compile("adam", "mse")
    model.fit(np.random.default_rng(0).random((8, 4)), np.random.default_rng(1).random((8, 2)), epochs=1,
              verbose=0)
    model.save(tmp_path / "k.keras")
    return model, tmp_path / "k.keras"


def test_the_tree_is_keras_editors_and_summary_shows_it(tmp_path, capsys):
    model, path = _keras_file(tmp_path)
    theirs = keras.saving.KerasFileEditor(str(path))
    mine = KerasFileEditor(path)
    want, got = _flat(theirs.weights_dict), _flat(mine.weights_dict)
    assert list(got) == list(want)   # same objects, weights and order
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    assert mine.config["class_name"] == "Sequential" and mine.metadata["keras_version"].startswith("3.")
    capsys.readouterr()
    mine.summary()
    out = capsys.readouterr().out
    assert "Weights structure" in out and "dense_1" in out and "0: shape=(4, 3), dtype=float32" in out
    # a .weights.h5 file (Keras's save_weights keeps the optimizer's variables too) gives the same tree,
    # without config or metadata
    model.save_weights(tmp_path / "k.weights.h5")
    alone = KerasFileEditor(tmp_path / "k.weights.h5")
    assert alone.config is None and alone.metadata is None and list(_flat(alone.weights_dict)) == list(want)


def test_compare_counts_each_weight_once(tmp_path, capsys):
    """Keras 3.15's compare counts nested objects' errors and matches more than once (50 matches for this
    model's 22 weights); lamina's counts each weight once."""
    _, path = _keras_file(tmp_path)
    editor = KerasFileEditor(path)
    same = lamina.models.load_model(path)
    assert editor.compare(same) == {"status": "success", "error_count": 0, "match_count": 22}
    other = lamina.Sequential([lamina.Input((4,)), lamina.layers.Dense(5), lamina.layers.Dense(2)])
    capsys.readouterr()
    result = editor.compare(other)
    out = capsys.readouterr().out
    # dense kernel and bias, dense_1 kernel: other shapes; batch_normalization and optimizer: not in the model
    assert result == {"status": "error", "error_count": 5, "match_count": 1}
    assert "Weight shape mismatch for /layers/dense/0" in out and "In reference model: shape=(4, 5)" in out
    assert "Object /layers/batch_normalization present in saved file, missing from reference model" in out


def test_edited_weights_load_in_keras_and_lamina(tmp_path):
    """The editor's use case: a layer removed from the architecture, another renamed and one added."""
    old, path = _keras_file(tmp_path)
    editor = KerasFileEditor(path)
    editor.delete_object("batch_normalization")
    editor.delete_object("optimizer")
    rng = np.random.default_rng(2)
    extra = {"0": rng.standard_normal((2, 3)).astype(np.float32), "1": np.zeros(3, np.float32)}
    editor.add_object("layers/dense_2", extra)
    editor.add_weights("dense_2", {"1": np.ones(3, np.float32)})   # replaces the bias
    editor.save(tmp_path / "edited.weights.h5")

    def build(lib):
        return lib.Sequential([lib.Input((4,)), lib.layers.Dense(3), lib.layers.Dense(2), lib.layers.Dense(3)])
    x = rng.random((5, 4)).astype(np.float32)
    kernel, bias = (np.asarray(keras.ops.convert_to_numpy(w)) for w in old.layers[0].weights)
    k1, b1 = (np.asarray(keras.ops.convert_to_numpy(w)) for w in old.layers[2].weights)
    want = ((x @ kernel + bias) @ k1 + b1) @ extra["0"] + 1.0
    theirs = build(keras)
    theirs.load_weights(tmp_path / "edited.weights.h5")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(theirs(x)), want, rtol=1e-5, atol=1e-5)
    mine = build(lamina)
    mine.load_weights(tmp_path / "edited.weights.h5")
    np.testing.assert_allclose(mine.predict(x, verbose=0), want, rtol=1e-5, atol=1e-5)

    # renaming keeps the object's place; deleting a weight leaves the others under their names
    editor.rename_object("layers/dense_2", "head")
    assert list(editor.weights_dict["layers"]) == ["dense", "dense_1", "head"]
    editor.delete_weight("head", "1")
    assert list(editor.weights_dict["layers"]["head"]) == ["0"]
    editor.save(tmp_path / "renamed.weights.h5")
    assert list(_flat(KerasFileEditor(tmp_path / "renamed.weights.h5").weights_dict)) == [
        "layers/dense/0", "layers/dense/1", "layers/dense_1/0", "layers/dense_1/1", "layers/head/0"]


def test_objects_with_sub_objects_are_kept_whole(tmp_path):
    """A MultiHeadAttention's weights live in its sub-layers (its own vars group is empty): Keras's editor
    drops it from the tree; lamina's keeps it, so read-and-save loses nothing."""
    inp = lamina.Input((5, 8))
    out = lamina.layers.MultiHeadAttention(num_heads=2, key_dim=4)(inp, inp)
    model = lamina.Model(inp, out)
    model.save(tmp_path / "mha.keras")
    editor = KerasFileEditor(tmp_path / "mha.keras")
    mha = editor.weights_dict["layers"]["multi_head_attention"]
    assert set(mha) == {"query_dense", "key_dense", "value_dense", "output_dense"}
    editor.save(tmp_path / "mha.weights.h5")
    again = lamina.Model.from_config(model.get_config())
    again.load_weights(tmp_path / "mha.weights.h5")
    x = np.random.default_rng(3).random((2, 5, 8)).astype(np.float32)
    np.testing.assert_array_equal(again.predict(x, verbose=0), model.predict(x, verbose=0))


def test_mistakes_are_clear_errors(tmp_path):
    _, path = _keras_file(tmp_path)
    with pytest.raises(ValueError, match="expected a `.keras` `.weights.h5` extension"):
        KerasFileEditor(tmp_path / "k.zip")
    (tmp_path / "bad.weights.h5").write_bytes(b"not an hdf5 file at all")
    with pytest.raises(ModelFileError, match="not an HDF5 file"):
        KerasFileEditor(tmp_path / "bad.weights.h5")
    editor = KerasFileEditor(path)
    with pytest.raises(ValueError, match="occurs more than once"):
        editor.delete_object("0")
    with pytest.raises(ValueError, match="does not appear in the model"):
        editor.delete_object("conv2d")
    with pytest.raises(ValueError, match="Path 'layers/conv2d' not found"):
        editor.rename_object("layers/conv2d", "x")
    with pytest.raises(ValueError, match="should be a leaf name"):
        editor.rename_object("dense", "layers/x")
    with pytest.raises(ValueError, match="should be a dict"):
        editor.add_object("layers/new", [np.zeros(3)])
    with pytest.raises(ValueError, match="Weight 7 not found in object dense"):
        editor.delete_weight("dense", "7")
    with pytest.raises(ValueError, match="expected a `.weights.h5` extension"):
        editor.save(tmp_path / "out.keras")
    assert not (tmp_path / "out.keras").exists()
