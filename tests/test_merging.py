"""Merge layers: forward and gradients against NumPy, Keras broadcasting, masks, shape errors, contract."""
import numpy as np
import pytest

import lamina
from lamina import Tensor, grad, layers
from lamina.testing import check_grad

R = np.random.default_rng(5)

# name -> (layer class, NumPy forward, NumPy gradients given inputs and gy)
ELEMENTWISE = {
    "Add": (layers.Add, lambda xs: sum(xs), lambda xs, gy: [gy for _ in xs]),
    "Subtract": (layers.Subtract, lambda xs: xs[0] - xs[1], lambda xs, gy: [gy, -gy]),
    "Multiply": (layers.Multiply, lambda xs: np.prod(xs, axis=0),
                 lambda xs, gy: [gy * np.prod([x for j, x in enumerate(xs) if j != i], axis=0) for i in range(len(xs))]),
    "Average": (layers.Average, lambda xs: sum(xs) / len(xs), lambda xs, gy: [gy / len(xs) for _ in xs]),
    "Maximum": (layers.Maximum, lambda xs: np.max(xs, axis=0),
                lambda xs, gy: [gy * (np.argmax(xs, axis=0) == i) for i in range(len(xs))]),
    "Minimum": (layers.Minimum, lambda xs: np.min(xs, axis=0),
                lambda xs, gy: [gy * (np.argmin(xs, axis=0) == i) for i in range(len(xs))]),
}


def _run(layer, xs, gy):
    ts = [Tensor(x, requires_grad=True) for x in xs]
    y = layer(ts)
    gs = grad((y * Tensor(gy)).sum(), ts)
    return y, gs


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
@pytest.mark.parametrize("n", [2, 3])
def test_elementwise_merge_matches_numpy(name, n):
    cls, fwd, bwd = ELEMENTWISE[name]
    if name == "Subtract" and n == 3:
        pytest.skip("Subtract takes exactly two inputs")
    xs = [R.standard_normal((3, 4, 2)).astype(np.float32) for _ in range(n)]
    gy = R.standard_normal((3, 4, 2)).astype(np.float32)
    y, gs = _run(cls(), xs, gy)
    assert y.dtype == np.float32 and y.shape == (3, 4, 2)
    np.testing.assert_allclose(y.numpy(), fwd(xs), rtol=1e-5, atol=1e-6)
    for g, ref in zip(gs, bwd(xs, gy)):
        np.testing.assert_allclose(g, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(ELEMENTWISE))
def test_elementwise_merge_grad(name):
    cls = ELEMENTWISE[name][0]
    layer = cls()
    check_grad(lambda a, b: layer([a, b]), R.standard_normal((2, 3)), R.standard_normal((2, 3)))


def test_broadcasting_follows_keras_batch_axis_first():
    a = R.standard_normal((2, 3, 4)).astype(np.float32)
    b = R.standard_normal((2, 4)).astype(np.float32)   # lower rank: axes inserted after the batch axis
    c = R.standard_normal((2, 1, 4)).astype(np.float32)
    y, (ga, gb) = _run(layers.Add(), [a, b], np.ones((2, 3, 4), np.float32))
    np.testing.assert_allclose(y.numpy(), a + b[:, None, :], rtol=1e-6)
    np.testing.assert_allclose(gb, np.full((2, 4), 3.0), rtol=1e-6)
    np.testing.assert_allclose(layers.Multiply()([a, c]).numpy(), a * c, rtol=1e-6)
    assert layers.Add().compute_output_shape([(None, 3, 4), (None, 4)]) == (None, 3, 4)
    assert layers.Maximum().compute_output_shape([(None, 3, 1), (None, 1, 5)]) == (None, 3, 5)


@pytest.mark.parametrize("shapes", [[(2, 3), (2, 4)], [(2, 3, 4), (2, 5, 4)]])
def test_mismatched_shapes_raise_naming_the_layer(shapes):
    layer = layers.Add(name="my_add")
    with pytest.raises(ValueError, match=r"my_add.*incompatible shapes.*" + str(shapes[1][1])):
        layer([np.zeros(s, np.float32) for s in shapes])
    with pytest.raises(ValueError, match="my_add"):
        layers.Add(name="my_add")([lamina.Input(shape=s[1:]) for s in shapes])


def test_merge_argument_errors():
    x = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError, match="exactly 2 inputs"):
        layers.Subtract()([x, x, x])
    with pytest.raises(ValueError, match="list of inputs"):
        layers.Add()(x)
    with pytest.raises(ValueError, match="different batch sizes"):
        layers.Add()([x, np.zeros((3, 3), np.float32)])
    layer = layers.Add()
    layer([x, x])
    with pytest.raises(ValueError, match="incompatible"):   # checked on every call, not only when built
        layer([x, np.zeros((2, 4), np.float32)])


def test_concatenate_matches_numpy_and_splits_the_gradient():
    a = R.standard_normal((2, 3, 4)).astype(np.float32)
    b = R.standard_normal((2, 5, 4)).astype(np.float32)
    gy = R.standard_normal((2, 8, 4)).astype(np.float32)
    y, (ga, gb) = _run(layers.Concatenate(axis=1), [a, b], gy)
    np.testing.assert_array_equal(y.numpy(), np.concatenate([a, b], axis=1))
    np.testing.assert_array_equal(ga, gy[:, :3])
    np.testing.assert_array_equal(gb, gy[:, 3:])
    layer = layers.Concatenate()
    check_grad(lambda p, q: layer([p, q]), R.standard_normal((2, 3)), R.standard_normal((2, 2)))
    assert layers.Concatenate(axis=1).compute_output_shape([(None, 3, 4), (None, 5, 4)]) == (None, 8, 4)
    assert layers.Concatenate().compute_output_shape([(None, None), (None, 2)]) == (None, None)
    with pytest.raises(ValueError, match=r"matching shapes except for the concatenation axis"):
        layers.Concatenate(axis=1)([a, np.zeros((2, 5, 3), np.float32)])


def _dot_reference(x1, x2, a1, a2, normalize):
    if normalize:
        x1 = x1 / np.maximum(np.linalg.norm(x1, axis=a1, keepdims=True), 1e-7)
        x2 = x2 / np.maximum(np.linalg.norm(x2, axis=a2, keepdims=True), 1e-7)
    out = np.stack([np.tensordot(x1[i], x2[i], axes=(a1 - 1, a2 - 1)) for i in range(x1.shape[0])])
    return out.reshape(-1, 1) if out.ndim == 1 else out


@pytest.mark.parametrize("s1,s2,axes", [((3, 4), (3, 4), -1), ((3, 5, 4), (3, 6, 4), 2), ((3, 4, 5), (3, 4, 6), 1),
                                        ((3, 5, 4), (3, 4, 6), (2, 1)), ((3, 2, 5, 4), (3, 4, 2), (-1, 1))])
@pytest.mark.parametrize("normalize", [False, True])
def test_dot_matches_numpy(s1, s2, axes, normalize):
    x1 = R.standard_normal(s1)
    x2 = R.standard_normal(s2)
    layer = layers.Dot(axes=axes, normalize=normalize)
    y = layer([x1.astype(np.float32), x2.astype(np.float32)])
    pair = [axes, axes] if isinstance(axes, int) else list(axes)
    a1, a2 = pair[0] % len(s1), pair[1] % len(s2)
    ref = _dot_reference(x1, x2, a1, a2, normalize)
    np.testing.assert_allclose(y.numpy(), ref, rtol=1e-4, atol=1e-5)
    assert tuple(y.shape) == layer.compute_output_shape([s1, s2])
    check_grad(lambda p, q: layer([p, q]), x1, x2)


def test_dot_cosine_similarity_and_errors():
    a = R.standard_normal((4, 3)).astype(np.float32)
    y = layers.dot([a, 2 * a], axes=1, normalize=True).numpy()
    np.testing.assert_allclose(y, np.ones((4, 1)), rtol=1e-5)
    with pytest.raises(ValueError, match=r"axis values 3 .* != 5"):
        layers.Dot(axes=1)([a, np.zeros((4, 5), np.float32)])
    with pytest.raises(ValueError, match="non-batch axis"):
        layers.Dot(axes=0)([a, a])
    with pytest.raises(ValueError, match="two integers"):
        layers.Dot(axes=(1, 2, 3))
    with pytest.raises(ValueError, match="list of 2 inputs"):
        layers.Dot(axes=1)([a, a, a])


def test_masks_and_for_add_or_for_multiply_and_concatenated():
    emb = layers.Embedding(6, 2, mask_zero=True)
    i1 = np.array([[1, 2, 0], [3, 0, 0]])
    i2 = np.array([[1, 0, 4], [0, 0, 0]])
    e1, e2 = emb(i1), emb(i2)
    m1, m2 = i1 != 0, i2 != 0
    np.testing.assert_array_equal(layers.Add()([e1, e2])._keras_mask.numpy(), m1 & m2)
    np.testing.assert_array_equal(layers.Average()([e1, e2])._keras_mask.numpy(), m1 & m2)
    # Keras 3: Multiply / Maximum / Minimum OR the masks; masked entries do not take part
    prod = layers.Multiply()([e1, e2])
    np.testing.assert_array_equal(prod._keras_mask.numpy(), m1 | m2)
    a, b = e1.numpy(), e2.numpy()
    ref = np.where(m1[..., None], a, 1) * np.where(m2[..., None], b, 1) * (m1 | m2)[..., None]
    np.testing.assert_allclose(prod.numpy(), ref, rtol=1e-6)
    mx = layers.Maximum()([e1, e2])
    k1, k2 = m1[..., None], m2[..., None]
    ref = np.where(k1 & k2, np.maximum(a, b), np.where(k2 & ~k1, b, a))  # a masked entry is skipped
    np.testing.assert_allclose(mx.numpy(), ref, rtol=1e-6)
    np.testing.assert_array_equal(mx._keras_mask.numpy(), m1 | m2)
    # one input without a mask: AND of the masks present
    plain = Tensor(R.standard_normal((2, 3, 2)).astype(np.float32))
    np.testing.assert_array_equal(layers.Add()([e1, plain])._keras_mask.numpy(), m1)
    # Concatenate along time concatenates the masks; along features an unmasked input counts as True
    np.testing.assert_array_equal(layers.Concatenate(axis=1)([e1, e2])._keras_mask.numpy(),
                                  np.concatenate([m1, m2], axis=1))
    np.testing.assert_array_equal(layers.Concatenate()([e1, plain])._keras_mask.numpy(), np.ones((2, 3), bool))
    assert layers.Dot(axes=2)([e1, e2])._keras_mask is None


def _merge_contract(layer, inputs, expected_shape):
    """check_layer's contract for list inputs: shapes, no weights, config round trip, symbolic shape."""
    y = layer(inputs)
    assert tuple(y.shape) == expected_shape
    assert tuple(layer.compute_output_shape([x.shape for x in inputs])) == expected_shape
    assert layer.weights == [] and layer.count_params() == 0
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert {k: v for k, v in clone.get_config().items() if k != "name"} == \
        {k: v for k, v in config.items() if k != "name"}
    np.testing.assert_array_equal(clone(inputs).numpy(), y.numpy())
    sym = [lamina.Input(shape=x.shape[1:]) for x in inputs]
    out = type(layer).from_config({k: v for k, v in config.items() if k != "name"})(sym)
    assert out.shape == (None,) + expected_shape[1:]


@pytest.mark.parametrize("cls,kwargs,shapes,expected", [
    (layers.Add, {}, [(2, 3), (2, 3)], (2, 3)),
    (layers.Subtract, {}, [(2, 3), (2, 3)], (2, 3)),
    (layers.Multiply, {}, [(2, 3, 4), (2, 1, 4)], (2, 3, 4)),
    (layers.Average, {}, [(2, 3), (2, 3), (2, 3)], (2, 3)),
    (layers.Maximum, {}, [(2, 3), (2, 3)], (2, 3)),
    (layers.Minimum, {}, [(2, 3), (2, 3)], (2, 3)),
    (layers.Concatenate, {"axis": 1}, [(2, 3, 4), (2, 2, 4)], (2, 5, 4)),
    (layers.Dot, {"axes": (2, 2)}, [(2, 3, 4), (2, 5, 4)], (2, 3, 5)),
])
def test_merge_layer_contract(cls, kwargs, shapes, expected):
    inputs = [R.standard_normal(s).astype(np.float32) for s in shapes]
    _merge_contract(cls(**kwargs), inputs, expected)


def test_functional_forms():
    a = R.standard_normal((2, 3)).astype(np.float32)
    b = R.standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_allclose(layers.add([a, b]).numpy(), a + b, rtol=1e-6)
    np.testing.assert_allclose(layers.subtract([a, b]).numpy(), a - b, rtol=1e-6)
    np.testing.assert_allclose(layers.multiply([a, b]).numpy(), a * b, rtol=1e-6)
    np.testing.assert_allclose(layers.average([a, b]).numpy(), (a + b) / 2, rtol=1e-6)
    np.testing.assert_allclose(layers.maximum([a, b]).numpy(), np.maximum(a, b), rtol=1e-6)
    np.testing.assert_allclose(layers.minimum([a, b]).numpy(), np.minimum(a, b), rtol=1e-6)
    np.testing.assert_allclose(layers.concatenate([a, b]).numpy(), np.concatenate([a, b], -1), rtol=1e-6)
    np.testing.assert_allclose(layers.dot([a, b], axes=1).numpy(), (a * b).sum(1, keepdims=True), rtol=1e-5)
    x = lamina.Input(shape=(4,))
    y = layers.concatenate([layers.Dense(3)(x), layers.Dense(2)(x)])
    assert y.shape == (None, 5)


def test_residual_model_trains_through_add():
    inp = lamina.Input(shape=(4,))
    h = layers.Dense(4)(inp)
    out = layers.Dense(1)(layers.add([inp, h]))
    model = lamina.Model(inp, out)
    x = R.standard_normal((16, 4)).astype(np.float32)
    y = model(x)
    assert y.shape == (16, 1)
    loss = (y * y).mean()
    grads = grad(loss, model.trainable_weights)
    assert all(g is not None and np.isfinite(g).all() for g in grads)
