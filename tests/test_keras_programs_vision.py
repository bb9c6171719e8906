"""Patterns met running held-out keras.io example programs of the vision, generative, audio and rl areas on
lamina (docs/keras_programs.md, second round), each written here as our own small code and checked against
real Keras (KERAS_BACKEND=torch) where Keras runs here."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")

import lamina
from lamina import layers, ops

from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")


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


def _param_lines(lib, capsys):
    model = lib.Sequential([lib.Input((6, 6, 2)), lib.layers.Conv2D(3, 3), lib.layers.BatchNormalization(),
                            lib.layers.Flatten(), lib.layers.Dense(4)])
    lines = {}
    for stage in ("uncompiled", "trained"):
        if stage == "trained":
            model.compile(optimizer="adam", loss="mse")
            model.fit(np.ones((4, 6, 6, 2), "float32"), np.ones((4, 4), "float32"), verbose=0)
        model.summary(print_fn=lambda s, **k: print(s))
        out = capsys.readouterr().out
        lines[stage] = {ln.split(":")[0].strip(): ln.split(":")[1].split("(")[0].strip()
                        for ln in out.splitlines() if "params:" in ln}
    return lines


def test_summary_counts_optimizer_variables_in_the_total_like_keras(capsys):
    """Involution example: keras.io's summary after fit shows Total = trainable + non-trainable + optimizer
    params, the optimizer's iteration and learning rate counted too (26,150 for 13,074 Adam-trained weights)."""
    assert _param_lines(lamina, capsys) == _param_lines(keras, capsys)
    ours = _param_lines(lamina, capsys)["trained"]
    trainable, non_trainable = int(ours["Trainable params"]), int(ours["Non-trainable params"])
    assert int(ours["Optimizer params"]) == 2 * trainable + 2                  # Adam: m, v per weight + 2 scalars
    assert int(ours["Total params"]) == trainable + non_trainable + int(ours["Optimizer params"])
