"""TextVectorization against vocabularies and ids worked out by hand, Keras's rules, config and model files."""
import numpy as np
import pytest

import lamina
from lamina import layers
from lamina.layers import TextVectorization
from lamina.models import load_model, save_model


def ids(layer, data):
    return layer(data).numpy().tolist()


# ------------------------------------------------------------------------------- vocabulary ranking
def test_adapt_ranks_by_count_then_token_descending():
    layer = TextVectorization()
    layer.adapt(["b a c a", "d b a", "c"])
    # counts: a 3, b 2, c 2, d 1; the b/c tie goes to the higher token first (Keras: lexsort reversed)
    assert layer.get_vocabulary() == ["", "[UNK]", "a", "c", "b", "d"]
    assert layer.get_vocabulary(include_special_tokens=False) == ["a", "c", "b", "d"]
    assert layer.vocabulary_size() == 6


def test_max_tokens_keeps_the_most_frequent_including_specials():
    layer = TextVectorization(max_tokens=4)
    layer.adapt(["x y y z z z", "w"])
    assert layer.get_vocabulary() == ["", "[UNK]", "z", "y"]
    assert ids(layer, ["x y z w"]) == [[1, 3, 2, 1]]


def test_adapt_accepts_column_arrays_and_batches():
    a = TextVectorization()
    a.adapt(np.array([["one two"], ["two"]]))
    b = TextVectorization()
    b.adapt(iter([["one two"], np.array(["two"])]))
    assert a.get_vocabulary() == b.get_vocabulary() == ["", "[UNK]", "two", "one"]
    c = TextVectorization()
    c.adapt(iter([["a"], ["b b"], ["c c c"]]), steps=2)        # only the first two batches
    assert c.get_vocabulary() == ["", "[UNK]", "b", "a"]


# ------------------------------------------------------------------------------ standardise, split
@pytest.mark.parametrize("standardize,expected", [
    ("lower_and_strip_punctuation", ["hello", "world", "its", "3pm", "Émile"]),
    ("lower", ["hello,", "world!", "it's", "3p.m.", "Émile"]),          # ASCII letters only, as tf.strings.lower
    ("strip_punctuation", ["Hello", "WORLD", "Its", "3pM", "Émile"]),
    (None, ["Hello,", "WORLD!", "It's", "3p.M.", "Émile"]),
])
def test_standardize_modes(standardize, expected):
    layer = TextVectorization(standardize=standardize)
    text = "Hello,  WORLD!\tIt's 3p.M. \n Émile"
    layer.adapt([text])
    assert sorted(layer.get_vocabulary(include_special_tokens=False)) == sorted(expected)
    vocab = layer.get_vocabulary()
    assert [vocab[i] for i in ids(layer, [text])[0]] == expected


def test_all_32_ascii_punctuation_marks_are_stripped():
    layer = TextVectorization(vocabulary=["ab"])
    assert ids(layer, ["a!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~b"]) == [[2]]


def test_callable_standardize_and_split():
    layer = TextVectorization(standardize=lambda s: s.replace("-", " "), split=lambda s: s.split(" "))
    layer.adapt(["a-b b"])
    assert layer.get_vocabulary() == ["", "[UNK]", "b", "a"]
    with pytest.raises(ValueError, match="cannot be saved"):
        layer.get_config()


def test_character_split_keeps_spaces():
    layer = TextVectorization(split="character", standardize=None)
    layer.adapt(["aab b"])
    assert layer.get_vocabulary() == ["", "[UNK]", "b", "a", " "]
    assert ids(layer, ["ab z", "b"]) == [[3, 2, 4, 1], [2, 0, 0, 0]]


def test_split_none_treats_each_string_as_one_token():
    layer = TextVectorization(split=None, standardize="lower")
    layer.adapt(["New York", "Paris", "new york"])
    assert layer.get_vocabulary() == ["", "[UNK]", "new york", "paris"]
    assert ids(layer, ["NEW YORK", "Rome"]) == [2, 1]
    assert layer("paris").numpy().tolist() == 3


def test_ngrams_all_widths_in_order():
    layer = TextVectorization(ngrams=2)
    layer.adapt(["a b c"])
    # each token and bigram once: ranked by token, descending
    assert layer.get_vocabulary(include_special_tokens=False) == ["c", "b c", "b", "a b", "a"]
    v = layer.get_vocabulary()
    assert [v[i] for i in ids(layer, ["a b c"])[0]] == ["a", "b", "c", "a b", "b c"]
    tri = TextVectorization(ngrams=(3,), vocabulary=["a b c"])
    assert ids(tri, ["a b c d", "a b"]) == [[2, 1], [0, 0]]


# ---------------------------------------------------------------------------------- ids and padding
def test_int_output_pads_and_cuts_at_the_end():
    layer = TextVectorization(vocabulary=["the", "cat", "sat"])
    out = layer(["the cat sat on the mat", "cat", ""])
    assert out.dtype == np.int64
    assert out.numpy().tolist() == [[2, 3, 4, 1, 2, 1], [3, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]]
    fixed = TextVectorization(vocabulary=["the", "cat", "sat"], output_sequence_length=3)
    assert ids(fixed, ["the cat sat on the mat", "cat"]) == [[2, 3, 4], [3, 0, 0]]
    assert ids(fixed, np.array([["sat"], ["the sat"]])) == [[4, 0, 0], [2, 4, 0]]
    assert fixed("cat the").numpy().tolist() == [3, 2, 0]


def test_keras_docstring_example():
    layer = TextVectorization(max_tokens=5000, output_mode="int", output_sequence_length=4)
    layer.adapt(["foo bar", "bar baz", "baz bada boom"])
    assert ids(layer, [["foo qux bar"], ["qux baz"]]) == [[4, 1, 3, 0], [1, 2, 0, 0]]
    given = TextVectorization(vocabulary=["earth", "wind", "and", "fire"], output_sequence_length=4)
    assert given.get_vocabulary() == ["", "[UNK]", "earth", "wind", "and", "fire"]


def test_ids_match_a_slow_reference_on_random_text(rng):
    words = ["w%d" % i for i in range(30)]
    docs = [" ".join(rng.choice(words, rng.integers(0, 12))) for _ in range(50)]
    layer = TextVectorization(max_tokens=12, output_sequence_length=7)
    layer.adapt(docs[:30])
    vocab = layer.get_vocabulary()
    index = {t: i for i, t in enumerate(vocab)}
    expected = np.zeros((20, 7), np.int64)
    for r, d in enumerate(docs[30:]):
        for c, w in enumerate(d.split()[:7]):
            expected[r, c] = index.get(w, 1)
    assert np.array_equal(layer(docs[30:]).numpy(), expected)


# ------------------------------------------------------------------------------------- vector modes
def test_multi_hot_count_and_tf_idf():
    docs = ["a b b", "c", "a"]
    mh = TextVectorization(output_mode="multi_hot")
    mh.adapt(docs)
    assert mh.get_vocabulary() == ["[UNK]", "b", "a", "c"]        # no padding entry outside 'int' mode
    assert mh(["b b z", "c a"]).numpy().tolist() == [[1, 1, 0, 0], [0, 0, 1, 1]]
    count = TextVectorization(output_mode="count", vocabulary=["b", "a", "c"], max_tokens=6, pad_to_max_tokens=True)
    out = count(["b b z", ""]).numpy()
    assert out.dtype == np.float32 and out.tolist() == [[1, 2, 0, 0, 0, 0], [0] * 6]
    tfidf = TextVectorization(output_mode="tf_idf")
    tfidf.adapt(docs)
    # idf = log(1 + documents / (1 + documents holding the token)); '[UNK]' gets the mean idf
    idf = {"b": np.log(1 + 3 / 2), "a": np.log(1 + 3 / 3), "c": np.log(1 + 3 / 2)}
    unk = np.mean(list(idf.values()))
    np.testing.assert_allclose(tfidf(["b b a z"]).numpy(), [[unk, 2 * idf["b"], idf["a"], 0]], rtol=1e-6)


# ------------------------------------------------------------------------------- vocabulary setters
def test_set_vocabulary_round_trip_and_file(tmp_path):
    layer = TextVectorization()
    layer.set_vocabulary(["x", "y"])
    assert layer.get_vocabulary() == ["", "[UNK]", "x", "y"]
    other = TextVectorization()
    other.set_vocabulary(layer.get_vocabulary())         # leading special tokens are accepted
    assert other.get_vocabulary() == layer.get_vocabulary()
    path = tmp_path / "vocab.txt"
    path.write_text("één\ntwee\n", encoding="utf-8")
    from_file = TextVectorization(vocabulary=str(path))
    assert ids(from_file, ["twee één drie"]) == [[3, 2, 1]]


@pytest.mark.parametrize("kwargs,match", [
    ({"standardize": "upper"}, "standardize must be one of"),
    ({"split": "comma"}, "split must be one of"),
    ({"output_mode": "one_hot"}, "output_mode must be one of"),
    ({"output_mode": "count", "output_sequence_length": 4}, "output_sequence_length must not be set"),
    ({"max_tokens": 1}, "greater than 1"),
    ({"ngrams": 0}, "ngrams must be"),
    ({"vocabulary": ["a", "a"]}, "repeated tokens"),
    ({"vocabulary": ["a", "[UNK]"]}, "may only come first"),
    ({"vocabulary": ["a", "b", "c"], "max_tokens": 4}, "exceeds max_tokens=4"),
    ({"output_mode": "tf_idf", "vocabulary": ["a"]}, "needs idf_weights"),
])
def test_bad_arguments_raise_clear_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TextVectorization(name="tv", **kwargs)


def test_errors_when_used_wrongly():
    with pytest.raises(ValueError, match="no vocabulary yet"):
        TextVectorization()(["a"])
    with pytest.raises(ValueError, match="cannot adapt a layer created with a fixed vocabulary"):
        TextVectorization(vocabulary=["a"]).adapt(["a"])
    with pytest.raises(ValueError, match=r"shape \(N,\) or \(N, 1\)"):
        TextVectorization(vocabulary=["a"])(np.array([["a", "b"]]))
    with pytest.raises(ValueError, match="expected strings"):
        TextVectorization(vocabulary=["a"])([1, 2])


# --------------------------------------------------------------------------- config and model files
def test_config_round_trip_keeps_the_adapted_vocabulary():
    layer = TextVectorization(max_tokens=10, ngrams=(1, 2), output_sequence_length=5, name="tv")
    layer.adapt(["red fish blue fish", "one fish"])
    config = layer.get_config()
    assert config["vocabulary"] == layer.get_vocabulary(include_special_tokens=False)
    assert config["vocabulary_size"] == layer.vocabulary_size() and config["ngrams"] == [1, 2]
    clone = TextVectorization.from_config(config)
    assert clone.get_vocabulary() == layer.get_vocabulary()
    assert np.array_equal(clone(["one red fish"]).numpy(), layer(["one red fish"]).numpy())
    clone.adapt(["new words"])                          # an adapted vocabulary stays adaptable
    assert clone.get_vocabulary() == ["", "[UNK]", "words", "new words", "new"]
    tfidf = TextVectorization(output_mode="tf_idf")
    tfidf.adapt(["a b", "a"])
    again = TextVectorization.from_config(tfidf.get_config())
    np.testing.assert_allclose(again(["a b c"]).numpy(), tfidf(["a b c"]).numpy())


def test_model_with_text_vectorization_saves_and_loads(tmp_path):
    lamina.utils.set_random_seed(0)
    vectorizer = TextVectorization(max_tokens=20, output_sequence_length=6)
    vectorizer.adapt(["good film", "bad film", "very good", "very bad plot"])
    model = lamina.Sequential([vectorizer, layers.Embedding(20, 4, mask_zero=True), layers.GRU(3),
                               layers.Dense(2, activation="softmax")])
    texts = np.array(["good plot", "very bad film", "unknown words here"], dtype=object)
    before = model(texts).numpy()
    path = tmp_path / "text_model.keras"
    save_model(model, str(path))
    restored = load_model(str(path), compile=False)
    assert restored.layers[0].get_vocabulary() == vectorizer.get_vocabulary()
    np.testing.assert_allclose(restored(texts).numpy(), before, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(restored.predict(texts, verbose=0), before, rtol=1e-6, atol=1e-7)


def test_symbolic_call_gives_int64_ids():
    vectorizer = TextVectorization(vocabulary=["a"], output_sequence_length=7)
    ids_tensor = vectorizer(lamina.layers.KerasTensor((None,), "object"))
    assert ids_tensor.shape == (None, 7) and ids_tensor.dtype == np.int64
    vec = TextVectorization(vocabulary=["a", "b"], output_mode="multi_hot")
    assert vec.compute_output_shape((None,)) == (None, 3)


def test_functional_model_from_string_input():
    import lamina as keras
    inp = keras.Input(shape=(1,), dtype="string")
    tv = keras.layers.TextVectorization(max_tokens=20, output_sequence_length=4)
    tv.adapt(["the cat sat", "the dog ran"])
    out = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(20, 3)(tv(inp))))
    model = keras.Model(inp, out)
    assert model.predict(np.array([["the cat"], ["a dog"]], dtype=object), verbose=0).shape == (2, 2)
