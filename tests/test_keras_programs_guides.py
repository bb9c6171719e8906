"""Patterns met running held-out keras.io programs of the third round (guides, keras_recipes, structured
data; docs/keras_programs.md), each written here as our own small code and checked against real Keras
(KERAS_BACKEND=torch) where Keras runs here."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")

import lamina
from lamina import layers

keras = pytest.importorskip("keras")


def test_deprecated_output_mode_binary_is_multi_hot_like_keras():
    """structured data from scratch: IntegerLookup / StringLookup(output_mode="binary"), Keras 2's name for
    multi_hot, which Keras 3 still accepts (and CategoryEncoding too); 'tf-idf' likewise for 'tf_idf'."""
    ids = np.array([[0, 2], [3, 3]])
    ours = layers.CategoryEncoding(num_tokens=4, output_mode="binary")
    ref = keras.layers.CategoryEncoding(num_tokens=4, output_mode="binary")
    assert ours.get_config()["output_mode"] == ref.get_config()["output_mode"] == "multi_hot"
    np.testing.assert_array_equal(np.asarray(ours(ids)), np.asarray(ref(ids)))

    # Keras 3.15's lookups need TensorFlow (absent here), so they are checked against their multi_hot twin.
    words = np.array(["b", "c", "a", "b"])
    for cls, vocab, x in ((layers.StringLookup, ["a", "b", "c"], words),
                          (layers.IntegerLookup, [7, 3, 5], np.array([3, 5, 7, 3]))):
        old = cls(vocabulary=vocab, mask_token=None, num_oov_indices=0, output_mode="binary")
        new = cls(vocabulary=vocab, mask_token=None, num_oov_indices=0, output_mode="multi_hot")
        assert old.get_config()["output_mode"] == "multi_hot"
        np.testing.assert_array_equal(np.asarray(old(x)), np.asarray(new(x)))
    tfidf = layers.StringLookup(vocabulary=["a", "b"], idf_weights=[0.5, 2.0], output_mode="tf-idf")
    assert tfidf.output_mode == "tf_idf"
    with pytest.raises(ValueError, match="output_mode"):
        layers.StringLookup(vocabulary=["a"], output_mode="binaryy")
    with pytest.raises(ValueError, match="output_mode"):
        layers.Discretization(bin_boundaries=[0.0], output_mode="binary")   # not an alias there in Keras
