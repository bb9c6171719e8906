"""Patterns met running held-out keras.io example programs of the vision, generative, audio and rl areas on
lamina (docs/keras_programs.md, second round), each written here as our own small code and checked against
real Keras (KERAS_BACKEND=torch) where Keras runs here."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")

import lamina
from lamina import layers, ops

keras = pytest.importorskip("keras")


def _two_tower_distance(lib, output_shape):
    a, b = lib.Input((4,)), lib.Input((4,))
    dist = lambda v: lib.ops.sqrt(lib.ops.sum(lib.ops.square(v[0] - v[1]), axis=1, keepdims=True))
    out = lib.layers.Lambda(dist, output_shape=output_shape)([a, b])
    return lib.Model([a, b], lib.layers.Dense(1)(out))


def test_lambda_output_shape_on_a_list_of_inputs_adds_the_batch_like_keras():
    """Siamese pattern: Lambda(distance, output_shape=(1,))([tower_1, tower_2]) is (None, 1), not a
    shape built from the first input's whole shape."""
    ours, theirs = _two_tower_distance(lamina, (1,)), _two_tower_distance(keras, (1,))
    assert ours.layers[2].output.shape == tuple(theirs.layers[2].output.shape) == (None, 1)
    x = [np.arange(12, dtype="float32").reshape(3, 4), np.ones((3, 4), "float32")]
    assert ours.predict(x, verbose=0).shape == (3, 1)
    # a structure of shapes: one batch dimension added to each
    a, b = layers.Input((4,)), layers.Input((4,))
    outs = layers.Lambda(lambda v: [v[0][:, :2], v[1]], output_shape=[(2,), (4,)])([a, b])
    ka, kb = keras.Input((4,)), keras.Input((4,))
    kouts = keras.layers.Lambda(lambda v: [v[0][:, :2], v[1]], output_shape=[(2,), (4,)])([ka, kb])
    assert [t.shape for t in outs] == [tuple(t.shape) for t in kouts] == [(None, 2), (None, 4)]
    # a single input, as before
    assert layers.Lambda(lambda v: v * 2, output_shape=(4,))(a).shape == (None, 4)
