"""SpectralNormalization, Wrapper, Pipeline, ReversibleEmbedding, layers.serialize/deserialize (issue 14):
against real Keras with copied weights, gradients by central differences, .keras files both ways."""
import numpy as np
import pytest

import lamina
from lamina import layers
from lamina.testing import check_grad

from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")
R = np.random.default_rng(3)


def _np(t):
    return keras.ops.convert_to_numpy(t)


def _by_name(layer):
    return {w.path.split("/")[-1] if hasattr(w, "path") else w.name: w for w in layer.weights}


@pytest.mark.parametrize("inner,shape,iters", [
    (lambda L: L.Dense(3), (4, 5), 1),
    (lambda L: L.Conv2D(4, 3), (2, 6, 6, 2), 3),
    (lambda L: L.Embedding(10, 4), (3, 2), 2),
])
def test_spectral_normalization_matches_keras(inner, shape, iters):
    mine = layers.SpectralNormalization(inner(layers), power_iterations=iters)
    theirs = keras.layers.SpectralNormalization(inner(keras.layers), power_iterations=iters)
    # float ids for the Embedding: Keras casts the wrapper's output to the input's dtype
    x = R.integers(0, 10, shape).astype(np.float32) if shape == (3, 2) else R.standard_normal(shape).astype(np.float32)
    mine(x), theirs(x)
    mw = {w.name: w for w in mine.weights}
    for w in theirs.weights:
        name = w.path.split("/")[-1]
        value = R.standard_normal(tuple(w.shape)).astype(np.float32)
        mw[name].assign(value)
        w.assign(value)
    for training in (False, True, True):
        got, want = mine(x, training=training).numpy(), _np(theirs(x, training=training))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    for w in theirs.weights:
        np.testing.assert_allclose(mw[w.path.split("/")[-1]].numpy(), _np(w), rtol=1e-5, atol=1e-6)
    assert mine.vector_u.trainable is False and len(mine.trainable_weights) == len(theirs.trainable_weights)
    top = np.linalg.svd(mine.kernel.numpy().reshape(-1, mine.kernel.shape[-1]), compute_uv=False)[0]
    assert top < 1.5   # a few power iterations bring the largest singular value near 1


def test_spectral_normalization_gradients_reach_the_wrapped_kernel():
    layer = layers.SpectralNormalization(layers.Dense(3, activation="tanh"))
    layer(np.zeros((2, 4), np.float32))
    check_grad(layer, R.standard_normal((2, 4)))


def test_reversible_embedding_matches_keras():
    for kwargs in (dict(), dict(tie_weights=False, logit_soft_cap=2.0)):
        mine, theirs = layers.ReversibleEmbedding(10, 4, **kwargs), keras.layers.ReversibleEmbedding(10, 4, **kwargs)
        ids = R.integers(0, 10, (2, 3))
        mine(ids), theirs(ids)
        assert [w.name for w in mine.weights] == [w.path.split("/")[-1] for w in theirs.weights]
        theirs.set_weights([w.numpy() for w in mine.weights])
        np.testing.assert_allclose(mine(ids).numpy(), _np(theirs(ids)), rtol=1e-6)
        h = R.standard_normal((2, 3, 4)).astype(np.float32)
        np.testing.assert_allclose(mine(h, reverse=True).numpy(), _np(theirs(h, reverse=True)), rtol=1e-5, atol=1e-6)
        check_grad(lambda t: mine(t, reverse=True), R.standard_normal((2, 4)), params=mine.trainable_weights)


def test_pipeline_and_serialize():
    pipe = layers.Pipeline([layers.Rescaling(1 / 255), layers.RandomBrightness((0.1, 0.1), value_range=(0, 1))])
    x = R.uniform(0, 200, (2, 4, 4, 3)).astype(np.float32)
    np.testing.assert_allclose(pipe(x).numpy(), np.clip(x / 255 + 0.1, 0, 1), rtol=1e-6)
    theirs = keras.layers.Pipeline([keras.layers.Rescaling(1 / 255),
                                    keras.layers.RandomBrightness((0.1, 0.1), value_range=(0, 1))])
    np.testing.assert_allclose(pipe(x).numpy(), _np(theirs(x)), rtol=1e-6)
    again = layers.Pipeline.from_config(pipe.get_config())
    assert [type(l).__name__ for l in again.layers] == ["Rescaling", "RandomBrightness"]
    d = layers.serialize(layers.Dense(3, activation="relu"))
    assert d["class_name"] == "Dense" and d["config"]["units"] == 3
    assert layers.deserialize(d).get_config()["units"] == 3
    assert keras.layers.deserialize(keras.layers.serialize(keras.layers.Dense(3)))  # same names in Keras


def test_keras_file_with_spectral_norm_and_wrapper_both_ways(tmp_path):
    def build(lib):
        inp = lib.Input((6,))
        h = lib.layers.SpectralNormalization(lib.layers.Dense(5, activation="relu"))(inp)
        ids = lib.Input((3,), dtype="int32")
        e = lib.layers.ReversibleEmbedding(7, 5)(ids)
        return lib.Model([inp, ids], [h, lib.layers.Flatten()(e)])
    mine = build(lamina)
    for w in mine.weights:
        w.assign(R.standard_normal(w.shape).astype(np.float32))
    xs = [R.standard_normal((2, 6)).astype(np.float32), R.integers(0, 7, (2, 3)).astype(np.int32)]
    want = mine.predict(xs, verbose=0)
    mine.save(tmp_path / "m.keras")
    theirs = keras.models.load_model(tmp_path / "m.keras", compile=False)
    for g, w in zip(theirs(xs), want):
        np.testing.assert_allclose(_np(g), w, rtol=1e-5, atol=1e-5)
    sn = [l for l in theirs.layers if type(l).__name__ == "SpectralNormalization"][0]
    sn_mine = [l for l in mine.layers if type(l).__name__ == "SpectralNormalization"][0]
    np.testing.assert_allclose(_np(sn.vector_u), sn_mine.vector_u.numpy())
    theirs.save(tmp_path / "k.keras")
    back = lamina.models.load_model(tmp_path / "k.keras", compile=False)
    for g, w in zip(back.predict(xs, verbose=0), want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
