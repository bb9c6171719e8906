"""keras.utils.FeatureSpace. Keras's own FeatureSpace needs TensorFlow (not installed), so the encodings are
checked against Keras's formulas with expectations computed by hand here: standardisation with the adapted
mean and population variance, x * scale + offset, one-hot bins of the adapted quantile boundaries, lookup
indices (OOV first, then the vocabulary by decreasing frequency), hashed bins equal to lamina's Hashing and
HashedCrossing (tested against TensorFlow's hashes in test_hashing.py), Keras's concatenation order (features
by sorted name, then crosses), and the output widths Keras's own tests assert."""
import json

import numpy as np
import pytest

import lamina
import lamina as keras
from lamina.utils import FeatureSpace

# 8 rows; the categorical columns have distinct counts, so the expected vocabularies are easy to write down
TABLE = {
    "n": [1.0, 2.0, 3.0, 6.0, 1.0, 2.0, 3.0, 6.0],          # mean 3, population variance 3.5
    "r": [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5],
    "p": [0.25, -1.0, 4.0, 0.0, 1.0, 2.0, 3.0, 5.0],
    "d": [3.0, 0.0, 7.0, 1.0, 6.0, 2.0, 5.0, 4.0],          # quantile boundaries for 4 bins: [2, 4, 6]
    "c": ["b", "a", "b", "c", "b", "a", "b", "b"],          # b:5, a:2, c:1 -> vocabulary [b, a, c]
    "i": [7, 7, 7, 3, 3, 9, 7, 3],                          # 7:4, 3:3, 9:1 -> vocabulary [7, 3, 9]
    "h": ["x", "yy", "zzz", "x", "w", "yy", "q", "x"],
    "k": [10, 11, 12, 13, 10, 11, 12, 99],
}
N = 8


def make_space(output_mode="concat", **overrides):
    cls = FeatureSpace
    features = {
        "n": "float_normalized",
        "r": cls.float_rescaled(scale=2.0, offset=-1.0),
        "p": "float",
        "d": cls.float_discretized(num_bins=4),
        "c": "string_categorical",
        "i": "integer_categorical",
        "h": cls.string_hashed(num_bins=8),
        "k": cls.integer_hashed(num_bins=6),
    }
    features.update(overrides)
    return FeatureSpace(features, output_mode=output_mode, crosses=[cls.cross(("c", "i"), crossing_dim=16)])


def one_hot(ids, depth):
    return np.eye(depth, dtype=np.float32)[np.asarray(ids)]


def expected_parts():
    """{output name: (8, width) float32} computed from the formulas, not from FeatureSpace."""
    n = np.asarray(TABLE["n"], np.float32)
    d = np.asarray(TABLE["d"])
    c_ids = np.array([{"b": 1, "a": 2, "c": 3}[v] for v in TABLE["c"]])          # index 0 = OOV
    i_ids = np.array([{7: 1, 3: 2, 9: 3}[v] for v in TABLE["i"]])
    h_bins = keras.layers.Hashing(num_bins=8)(np.asarray(TABLE["h"])).numpy().ravel()
    k_bins = keras.layers.Hashing(num_bins=6)(np.asarray(TABLE["k"])).numpy().ravel()
    cross = keras.layers.HashedCrossing(num_bins=16)((c_ids, i_ids)).numpy().ravel()
    return {
        "c": one_hot(c_ids, 4),
        "d": one_hot((d >= 2).astype(int) + (d >= 4) + (d >= 6), 4),
        "h": one_hot(h_bins, 8),
        "i": one_hot(i_ids, 4),
        "k": one_hot(k_bins, 6),
        "n": ((n - 3.0) / np.sqrt(3.5)).reshape(-1, 1),
        "p": np.asarray(TABLE["p"], np.float32).reshape(-1, 1),
        "r": (np.asarray(TABLE["r"], np.float32) * 2.0 - 1.0).reshape(-1, 1),
        "c_X_i": one_hot(cross, 16),
    }


ORDER = ["c", "d", "h", "i", "k", "n", "p", "r", "c_X_i"]   # sorted features, then sorted crosses (Keras)


def test_presets_encode_as_keras_formulas_and_concat_in_keras_order():
    fs = make_space()
    fs.adapt(TABLE)
    out = fs(TABLE)
    assert isinstance(out, lamina.Tensor) and out.dtype == np.float32
    parts = expected_parts()
    want = np.concatenate([parts[k] for k in ORDER], axis=1)
    assert out.shape == (N, 4 + 4 + 8 + 4 + 6 + 1 + 1 + 1 + 16)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-6, atol=1e-6)
    # the adapted state behind the encodings
    np.testing.assert_allclose(fs.preprocessors["n"].adapt_mean.numpy(), [3.0])
    np.testing.assert_allclose(fs.preprocessors["n"].adapt_variance.numpy(), [3.5])
    assert fs.preprocessors["d"].bin_boundaries == [2.0, 4.0, 6.0]
    assert fs.preprocessors["c"].get_vocabulary() == ["[UNK]", "b", "a", "c"]
    assert fs.preprocessors["i"].get_vocabulary() == [-1, 7, 3, 9]
    assert isinstance(fs.crossers["c_X_i"], keras.layers.HashedCrossing)


def test_unknown_values_go_to_the_oov_index_and_values_outside_the_bins_to_the_end_bins():
    fs = make_space(output_mode="dict")
    fs.adapt(TABLE)
    row = {key: np.asarray(values[:2]) for key, values in TABLE.items()}
    row["c"] = np.array(["never seen", "a"])
    row["i"] = np.array([12345, 3])
    row["d"] = np.array([-100.0, 100.0])
    out = fs(row)
    np.testing.assert_array_equal(out["c"].numpy(), one_hot([0, 2], 4))
    np.testing.assert_array_equal(out["i"].numpy(), one_hot([0, 2], 4))
    np.testing.assert_array_equal(out["d"].numpy(), one_hot([0, 3], 4))


def test_dict_mode_gives_each_encoded_feature_and_int_modes_give_ids():
    fs = make_space(output_mode="dict")
    fs.adapt(TABLE)
    out = fs(TABLE)
    parts = expected_parts()
    assert list(out) == ORDER
    for key in ORDER:
        np.testing.assert_allclose(out[key].numpy(), parts[key], rtol=1e-6, atol=1e-6, err_msg=key)
    cls = FeatureSpace
    fs = FeatureSpace({"c": cls.string_categorical(output_mode="int"), "i": cls.integer_categorical(output_mode="int"),
                       "d": cls.float_discretized(num_bins=4, output_mode="int"),
                       "h": cls.string_hashed(num_bins=8, output_mode="int")},
                      crosses=[cls.cross(("c", "i"), crossing_dim=16, output_mode="int")], output_mode="dict")
    fs.adapt(TABLE)
    out = fs(TABLE)
    assert {k: v.dtype.kind for k, v in out.items()} == {"c": "i", "d": "i", "h": "i", "i": "i", "c_X_i": "i"}
    assert all(v.shape == (N, 1) for v in out.values())
    assert out["c"].numpy().ravel().tolist() == [{"b": 1, "a": 2, "c": 3}[v] for v in TABLE["c"]]
    assert out["i"].numpy().ravel().tolist() == [{7: 1, 3: 2, 9: 3}[v] for v in TABLE["i"]]
    assert out["d"].numpy().ravel().tolist() == [1, 0, 3, 0, 3, 1, 2, 2]
    np.testing.assert_array_equal(out["h"].numpy(), keras.layers.Hashing(num_bins=8)(np.asarray(TABLE["h"])).numpy()
                                  .reshape(-1, 1))
    np.testing.assert_array_equal(out["c_X_i"].numpy().ravel(), parts["c_X_i"].argmax(axis=1))


def test_single_sample_of_scalars_gives_unbatched_outputs():
    fs = make_space()
    fs.adapt(TABLE)
    batch = fs(TABLE).numpy()
    for row in (0, 5):
        sample = {key: values[row] for key, values in TABLE.items()}   # Python scalars
        out = fs(sample)
        assert out.shape == (batch.shape[1],)
        np.testing.assert_allclose(out.numpy(), batch[row], rtol=1e-6, atol=1e-6)
    fs = make_space(output_mode="dict")
    fs.adapt(TABLE)
    out = fs({key: values[3] for key, values in TABLE.items()})
    assert {k: v.shape for k, v in out.items()} == {"c": (4,), "d": (4,), "h": (8,), "i": (4,), "k": (6,), "n": (1,),
                                                    "p": (1,), "r": (1,), "c_X_i": (16,)}
    # inputs of shape (n, 1) and lamina tensors give the same as vectors
    fs = make_space()
    fs.adapt(TABLE)
    columns = {key: np.asarray(values).reshape(-1, 1) for key, values in TABLE.items()}
    columns["n"] = keras.ops.convert_to_tensor(np.asarray(TABLE["n"]))
    np.testing.assert_allclose(fs(columns).numpy(), batch, rtol=1e-6, atol=1e-6)


class Rows(lamina.utils.PyDataset):
    """The table in batches of 3 rows, labelled ((x, y) batches, as model.fit takes them)."""

    def __len__(self):
        return 3

    def __getitem__(self, index):
        rows = slice(3 * index, 3 * index + 3)
        return {key: np.asarray(values[rows]) for key, values in TABLE.items()}, np.zeros(3)


def test_adapt_on_batches_or_samples_equals_adapt_on_the_whole_dict():
    whole = make_space()
    whole.adapt(TABLE)
    want = whole(TABLE).numpy()

    def generator():
        for start in range(0, N, 3):
            yield {key: values[start:start + 3] for key, values in TABLE.items()}

    samples = [{key: values[i] for key, values in TABLE.items()} for i in range(N)]   # unbatched scalars
    for data in (generator(), samples, Rows()):
        fs = make_space()
        fs.adapt(data)
        np.testing.assert_allclose(fs(TABLE).numpy(), want, rtol=1e-6, atol=1e-6)
        assert fs.preprocessors["c"].get_vocabulary() == whole.preprocessors["c"].get_vocabulary()
        assert fs.preprocessors["d"].bin_boundaries == whole.preprocessors["d"].bin_boundaries


def test_output_widths_of_keras_own_tests():
    """The widths Keras's feature_space_test.py asserts for its data: 10 rows, vocabularies of 10 values."""
    data = {"float_1": [i / 10 for i in range(10)], "float_2": [i / 10 for i in range(10)],
            "float_3": [i / 10 for i in range(10)], "int_1": list(range(10)), "int_2": list(range(10)),
            "int_3": list(range(10)), "string_1": [str(i) for i in range(10)], "string_2": [str(i) for i in range(10)]}
    presets = {"float_1": "float", "float_2": "float_normalized", "float_3": "float_discretized",
               "string_1": "string_categorical", "string_2": "string_hashed", "int_1": "integer_categorical",
               "int_2": "integer_hashed", "int_3": "integer_categorical"}
    fs = FeatureSpace(presets, crosses=[("float_3", "string_1"), ("string_2", "int_2")])
    fs.adapt(data)
    assert fs({k: v[0] for k, v in data.items()}).shape == (195,)
    assert fs(data).shape == (10, 195)
    no_strings = {k: v for k, v in presets.items() if not k.startswith("string")}
    fs = FeatureSpace(no_strings, crosses=[("int_1", "int_2"), ("int_2", "int_3")])
    fs.adapt(data)
    assert fs(data).shape == (10, 152)
    cls = FeatureSpace
    fs = FeatureSpace({"float_1": cls.float(), "float_2": cls.float_normalized(),
                       "float_3": cls.float_discretized(num_bins=3),
                       "string_1": cls.string_categorical(max_tokens=5), "string_2": cls.string_hashed(num_bins=32),
                       "int_1": cls.integer_categorical(max_tokens=5, num_oov_indices=2),
                       "int_2": cls.integer_hashed(num_bins=32), "int_3": cls.integer_categorical(max_tokens=5)},
                      crosses=[cls.cross(("float_3", "string_1"), crossing_dim=32),
                               cls.cross(("string_2", "int_2"), crossing_dim=32)])
    fs.adapt(data)
    assert fs({k: v[0] for k, v in data.items()}).shape == (148,)


def test_custom_preprocessors_and_fixed_statistics_need_no_adapt():
    cls = FeatureSpace
    text = ["the cat", "a dog", "the dog", "cat"]
    vocab_layer = keras.layers.TextVectorization(vocabulary=["the", "cat", "dog"], output_mode="int",
                                                 output_sequence_length=3)
    fs = FeatureSpace({"k": "integer_hashed",
                       "t": cls.feature(dtype="string", preprocessor=vocab_layer, output_mode="int"),
                       "f": cls.feature(dtype="float32", preprocessor=keras.layers.Normalization(mean=12.0, variance=5.0),
                                        output_mode="float"),
                       "b": cls.float_discretized(num_bins=None, bin_boundaries=[0.0, 10.0])},
                      output_mode="dict")
    data = {"k": [1, 2, 3, 4], "t": text, "f": [-1.0, 0.0, 12.0, 20.0], "b": [-5.0, 0.0, 5.0, 50.0]}
    out = fs(data)   # nothing to adapt
    np.testing.assert_allclose(out["f"].numpy().ravel(), (np.array(data["f"]) - 12.0) / np.sqrt(5.0), rtol=1e-6)
    assert out["k"].shape == (4, 32) and out["t"].shape == (4, 3)
    np.testing.assert_array_equal(out["b"].numpy(), one_hot([0, 1, 1, 2], 3))
    # a TF-IDF TextVectorization feature (Keras's example): adapted, concatenated as floats
    fs = FeatureSpace({"text": cls.feature(preprocessor=keras.layers.TextVectorization(output_mode="tf_idf"),
                                           dtype="string", output_mode="float")})
    fs.adapt({"text": ["1st string", "2nd string", "3rd string"]})
    assert fs({"text": ["1st string", "2nd string", "3rd string"]}).shape == (3, 5)


def test_config_round_trip_gives_the_same_outputs():
    fs = make_space()
    fs.adapt(TABLE)
    want = fs(TABLE).numpy()
    config = json.loads(json.dumps(fs.get_config()))   # JSON-able
    assert config["output_mode"] == "concat" and set(config["features"]) == set(TABLE)
    copy = FeatureSpace.from_config(config)
    # Normalization's mean and variance are weights, not config: the copy is not adapted yet (as in Keras)
    with pytest.raises(ValueError, match="You need to call `.adapt"):
        copy(TABLE)
    copy.build_from_config(json.loads(json.dumps(fs.get_build_config())))
    copy.set_weights(fs.get_weights())
    np.testing.assert_allclose(copy(TABLE).numpy(), want, rtol=1e-6, atol=1e-6)
    # or adapted again on the same data
    again = FeatureSpace.from_config(config)
    again.adapt(TABLE)
    np.testing.assert_allclose(again(TABLE).numpy(), want, rtol=1e-6, atol=1e-6)
    # the config's Discretization keeps its learnt boundaries, the lookups their vocabularies
    assert copy.preprocessors["d"].bin_boundaries == [2.0, 4.0, 6.0]
    assert copy.preprocessors["c"].get_vocabulary() == ["[UNK]", "b", "a", "c"]


def test_save_and_load_model_round_trip(tmp_path):
    fs = make_space()
    fs.adapt(TABLE)
    want = fs(TABLE).numpy()
    path = tmp_path / "fs.keras"
    fs.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, FeatureSpace)
    np.testing.assert_allclose(loaded(TABLE).numpy(), want, rtol=1e-6, atol=1e-6)
    loaded.save(tmp_path / "again.keras")   # saving a loaded one again gives the same
    twice = keras.saving.load_model(tmp_path / "again.keras")
    np.testing.assert_allclose(twice(TABLE).numpy(), want, rtol=1e-6, atol=1e-6)
    model = keras.Model(twice.get_inputs(), twice.get_encoded_features())
    np.testing.assert_allclose(model.predict(TABLE, verbose=0), want, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="`.keras` extension"):
        fs.save(tmp_path / "fs.h5")
    with pytest.raises(ValueError, match="You need to call `.adapt"):
        make_space().save(tmp_path / "unadapted.keras")


def test_functional_graph_computes_what_the_call_does(tmp_path):
    fs = make_space()
    fs.adapt(TABLE)
    inputs = fs.get_inputs()
    assert set(inputs) == set(TABLE)
    assert inputs["c"].dtype == object and inputs["i"].dtype == np.int32 and inputs["n"].shape == (None, 1)
    encoded = fs.get_encoded_features()
    assert encoded.shape == (None, fs(TABLE).shape[1])
    model = keras.Model(inputs, encoded)
    np.testing.assert_allclose(model.predict(TABLE, verbose=0), fs(TABLE).numpy(), rtol=1e-6, atol=1e-6)
    # the encoded tensor as a model input, fed with fs(x) (Keras's tf.data pattern)
    head = keras.Model(encoded, keras.layers.Dense(2)(encoded))
    assert head.predict(fs(TABLE), verbose=0).shape == (N, 2)
    # a model on the encoded features saves and loads like any model (the adapted Discretization included)
    fs = make_space()
    fs.adapt(TABLE)
    model = keras.Model(fs.get_inputs(), keras.layers.Dense(3)(fs.get_encoded_features()))
    model.save(tmp_path / "model.keras")
    np.testing.assert_allclose(keras.models.load_model(tmp_path / "model.keras").predict(TABLE, verbose=0),
                               model.predict(TABLE, verbose=0), rtol=1e-6, atol=1e-6)
    # keys that are not features (a label) are ignored by the call
    np.testing.assert_array_equal(fs({**TABLE, "label": np.zeros(N)}).numpy(), fs(TABLE).numpy())
    dict_fs = make_space(output_mode="dict")
    dict_fs.adapt(TABLE)
    encoded = dict_fs.get_encoded_features()
    assert isinstance(encoded, dict) and encoded["c_X_i"].shape == (None, 16)


def test_training_a_dense_model_on_encoded_features_beats_the_majority_class():
    rng = np.random.default_rng(0)
    n = 400
    color = rng.choice(["red", "green", "blue"], n)
    size = rng.normal(5.0, 2.0, n)
    doors = rng.choice([2, 4], n)
    score = (color == "red") * 2.0 - (color == "green") * 1.5 + (size - 5.0) / 2.0 + (doors == 4) * 0.5
    y = (score > 0.3).astype("float32")
    table = {"color": color, "size": size, "doors": doors}
    fs = FeatureSpace({"color": "string_categorical", "size": "float_normalized", "doors": "integer_categorical"},
                      crosses=[("color", "doors")], crossing_dim=8)
    fs.adapt(table)
    x = keras.layers.Dense(8, activation="relu")(fs.get_encoded_features())
    model = keras.Model(fs.get_inputs(), keras.layers.Dense(1, activation="sigmoid")(x))
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(table, y, batch_size=32, epochs=20, verbose=0)
    accuracy = float(np.mean((model.predict(table, verbose=0).ravel() > 0.5) == y))
    majority = max(y.mean(), 1 - y.mean())
    assert accuracy > majority + 0.15, (accuracy, majority)
    # the same with the table encoded first and a Sequential model
    seq = keras.Sequential([keras.layers.Dense(1, activation="sigmoid")])
    seq.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy")
    seq.fit(fs(table), y, batch_size=32, epochs=20, verbose=0)
    accuracy = float(np.mean((seq.predict(fs(table), verbose=0).ravel() > 0.5) == y))
    assert accuracy > majority + 0.15, (accuracy, majority)


def test_errors():
    with pytest.raises(ValueError, match="Invalid feature type: 'string_categoricl'"):
        FeatureSpace({"a": "string_categoricl"})
    with pytest.raises(ValueError, match="Invalid feature type"):
        FeatureSpace({"a": keras.layers.Dense(2)})
    with pytest.raises(ValueError, match="cannot be None or empty"):
        FeatureSpace({})
    with pytest.raises(ValueError, match=r"should be present in the `features` dict.*'nope'"):
        FeatureSpace({"a": "integer_categorical", "b": "integer_categorical"}, crosses=[("a", "nope")])
    with pytest.raises(ValueError, match="should be present in the `features` dict"):
        FeatureSpace({"a": "integer_categorical"}, crosses=[FeatureSpace.cross(("a", "nope"), crossing_dim=4)])
    with pytest.raises(ValueError, match="`crossing_dim`"):
        FeatureSpace({"a": "integer_categorical", "b": "integer_categorical"}, crosses=[("a", "b")],
                     crossing_dim=None)
    with pytest.raises(ValueError, match="for argument `output_mode`"):
        FeatureSpace({"a": "integer_categorical"}, output_mode="list")
    with pytest.raises(ValueError, match="for argument `output_mode`"):
        FeatureSpace.integer_categorical(output_mode="multi_hot")
    with pytest.raises(ValueError, match="for argument `output_mode`"):
        FeatureSpace.cross(("a", "b"), crossing_dim=4, output_mode="float")
    fs = FeatureSpace({"a": "integer_categorical", "b": "float_normalized"})
    for use in (lambda: fs({"a": [1], "b": [1.0]}), fs.get_encoded_features, fs.get_inputs):
        with pytest.raises(ValueError, match=r"You need to call `.adapt\(dataset\)`"):
            use()
    for bad in (np.zeros((3, 2)), 5, "a", keras.ops.convert_to_tensor(np.zeros(3))):
        with pytest.raises(ValueError, match="can only be called on a dict of arrays"):
            fs.adapt(bad)
    with pytest.raises(ValueError, match="every batch of the data set to be a dict"):
        fs.adapt([1.0, 2.0])
    with pytest.raises(ValueError, match="feature 'b' is missing"):
        fs.adapt({"a": [1, 2]})
    with pytest.raises(ValueError, match="empty data set"):
        fs.adapt([])
    fs.adapt({"a": [1, 2], "b": [1.0, 2.0]})
    with pytest.raises(ValueError, match="can only be called with a dict"):
        fs([1, 2])
    with pytest.raises(ValueError, match=r"without the features \['b'\]"):
        fs({"a": [1]})
    cls = FeatureSpace
    with pytest.raises(ValueError, match="should return an integer dtype"):
        FeatureSpace({"a": cls.feature("float32", keras.layers.Identity(), "one_hot")}).adapt({"a": [1.0]})
    with pytest.raises(ValueError, match="Cannot concatenate features because feature 'a'"):
        FeatureSpace({"a": cls.integer_categorical(output_mode="int")}).adapt({"a": [1, 2]})
    with pytest.raises(ValueError, match="cannot be one-hot encoded"):
        FeatureSpace({"a": cls.feature("int32", keras.layers.Identity(dtype="int64"), "one_hot")}).adapt({"a": [1]})
