"""Errors that help (issue 2, item 5): wrong shapes name the layer, the expected and the received shape;
unknown names list the valid ones; an op given the wrong kind of array says what it needs."""
import numpy as np
import pytest

import lamina
from lamina import activations, constraints, initializers, layers, ops, regularizers


def test_dense_called_on_a_shape_that_does_not_fit_its_kernel():
    layer = layers.Dense(3, name="classifier")
    layer(np.zeros((2, 4), np.float32))                      # built for 4 features
    with pytest.raises(ValueError) as info:
        layer(np.zeros((2, 5), np.float32))
    msg = str(info.value)
    assert "classifier" in msg                               # the layer
    assert "value 4" in msg and "(None, 4)" in msg           # what it expected
    assert "(2, 5)" in msg                                   # what it received


def test_dense_symbolic_shape_mismatch_and_too_low_rank():
    layer = layers.Dense(3, name="head")
    layer(lamina.Input(shape=(4,)))
    with pytest.raises(ValueError, match=r"'head'.*value 4.*\(None, 6\)"):
        layer(lamina.Input(shape=(6,)))
    with pytest.raises(ValueError, match=r"'head'.*min_ndim=2.*ndim=1.*\(4,\)"):
        layer(np.zeros((4,), np.float32))


def test_embedding_with_float_or_out_of_range_ids():
    layer = layers.Embedding(10, 4, name="tokens")
    with pytest.raises(ValueError) as info:
        layer(np.array([[0.5, 2.0]], np.float32))
    msg = str(info.value)
    assert "tokens" in msg and "integer token ids in [0, 10)" in msg and "float32" in msg and "(1, 2)" in msg
    with pytest.raises(ValueError, match=r"'tokens'.*\[0, 10\).*from 3 to 12"):
        layer(np.array([[3, 12]]))
    with pytest.raises(ValueError, match=r"'tokens'.*from -1 to 1"):
        layer(np.array([[-1, 1]]))


def test_set_weights_with_the_wrong_shape_names_layer_and_shapes():
    layer = layers.Embedding(5, 2, name="emb")
    layer.build()
    with pytest.raises(ValueError, match=r"'emb'.*'embeddings'.*\(5, 2\).*\(5, 3\)"):
        layer.set_weights([np.zeros((5, 3), np.float32)])


def test_merge_layers_name_the_mismatched_shapes():
    with pytest.raises(ValueError, match=r"'joined'.*\(2, 3\), \(2, 4\)"):
        layers.Add(name="joined")([np.zeros((2, 3), np.float32), np.zeros((2, 4), np.float32)])
    with pytest.raises(ValueError, match=r"'cat'.*matching shapes except for the concatenation axis"):
        layers.Concatenate(axis=-1, name="cat")([np.zeros((2, 3, 1), np.float32), np.zeros((2, 4, 1), np.float32)])


@pytest.mark.parametrize("get,kind,bad,valid", [
    (activations.get, "activation", "rleu", "relu"),
    (initializers.get, "initializer", "glorot", "glorot_uniform"),
    (regularizers.get, "regularizer", "l3", "l1_l2"),
    (constraints.get, "constraint", "positive", "non_neg"),
])
def test_unknown_names_list_the_valid_ones(get, kind, bad, valid):
    with pytest.raises(ValueError) as info:
        get(bad)
    msg = str(info.value)
    assert f"Unknown {kind} '{bad}'" in msg and "Valid names:" in msg and valid in msg


def test_unknown_names_through_layer_arguments():
    with pytest.raises(ValueError, match="Unknown activation 'softmaxx'. Valid names: .*softmax"):
        layers.Dense(2, activation="softmaxx")
    with pytest.raises(ValueError, match="Unknown initializer 'he'. Valid names: .*he_normal"):
        layers.Embedding(3, 2, embeddings_initializer="he")
    layer = layers.Dense(2, kernel_regularizer="l4")
    with pytest.raises(ValueError, match="Unknown regularizer 'l4'. Valid names"):
        layer.build((None, 2))


def test_unknown_padding_lists_the_valid_values():
    if not hasattr(layers, "Conv2D"):
        pytest.skip("Conv2D not available")
    with pytest.raises(ValueError, match=r"unknown padding 'full'.*'valid'.*'same'"):
        layers.Conv2D(3, 3, padding="full")


def test_op_that_needs_integer_ids_explains_the_dtype():
    table = np.zeros((6, 2), np.float32)
    with pytest.raises(ValueError, match=r"embedding: ids must be integers.*\[0, 6\).*dtype float64.*astype"):
        ops.embedding(np.array([1.0, 2.0]), table)
    with pytest.raises(ValueError, match=r"embedding: table must be 2-D.*\(6,\)"):
        ops.embedding(np.array([1]), np.zeros(6, np.float32))


def test_bad_layer_arguments_say_what_was_received():
    with pytest.raises(ValueError, match=r"Dense '.*': units must be a positive int. Received: units=0"):
        layers.Dense(0)
    with pytest.raises(ValueError, match=r"Embedding '.*': input_dim must be a positive int. Received: input_dim=-3"):
        layers.Embedding(-3, 2)
    with pytest.raises(ValueError, match="axes should contain two integers"):
        layers.Dot(axes=(1, "a"))
