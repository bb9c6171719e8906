"""Activations: gradient checks and parity with PyTorch's functional forms."""
import numpy as np
import pytest

from lamina import activations
from lamina.ops import activations as ops  # the kernels (lamina.ops.gelu is keras.ops.gelu, approximate)
from lamina.testing import check_grad

torch = pytest.importorskip("torch")
F = torch.nn.functional
R = np.random.default_rng(2)


def x_away_from_kinks(*shape):
    x = R.uniform(-4, 4, shape)
    for k in (0.0, -3.0, 3.0, 6.0):
        x[np.abs(x - k) < 0.05] += 0.2
    return x


CASES = {
    "relu": (ops.relu, F.relu), "relu6": (ops.relu6, F.relu6), "elu": (ops.elu, F.elu), "selu": (ops.selu, F.selu),
    "leaky_relu": (ops.leaky_relu, lambda t: F.leaky_relu(t, 0.2)),
    "gelu": (ops.gelu, F.gelu), "gelu_tanh": (lambda x: ops.gelu(x, approximate=True), lambda t: F.gelu(t, approximate="tanh")),
    "sigmoid": (ops.sigmoid, torch.sigmoid), "hard_sigmoid": (ops.hard_sigmoid, F.hardsigmoid),
    "hard_silu": (ops.hard_silu, F.hardswish),
    "tanh": (ops.tanh, torch.tanh), "softplus": (ops.softplus, F.softplus), "softsign": (ops.softsign, F.softsign),
    "silu": (ops.silu, F.silu), "softmax": (ops.softmax, lambda t: F.softmax(t, -1)),
    "log_softmax": (ops.log_softmax, lambda t: F.log_softmax(t, -1)), "exponential": (ops.exponential, torch.exp),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_activation_grad(name):
    check_grad(CASES[name][0], x_away_from_kinks(3, 7))


@pytest.mark.parametrize("name", sorted(CASES))
def test_activation_matches_torch(name):
    ours, ref = CASES[name]
    x = x_away_from_kinks(4, 9).astype(np.float32)
    gy = R.standard_normal(x.shape).astype(np.float32)
    from lamina import Tensor, grad
    t = Tensor(x, requires_grad=True)
    y = ours(t)
    (g,) = grad((y * Tensor(gy)).sum(), [t])
    tt = torch.tensor(x, requires_grad=True)
    yt = ref(tt)
    (yt * torch.tensor(gy)).sum().backward()
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(g, tt.grad.numpy(), rtol=1e-4, atol=1e-5)


def test_softmax_is_stable_for_large_logits():
    y = ops.softmax(np.array([[1000.0, 0.0, -1000.0]], np.float32)).numpy()
    assert np.isfinite(y).all() and y[0, 0] == pytest.approx(1.0)
    s = ops.sigmoid(np.array([-1000.0, 1000.0], np.float32)).numpy()
    assert np.isfinite(s).all()


def test_unknown_activation_lists_valid_names():
    with pytest.raises(ValueError, match="Valid names: .*relu"):
        activations.get("rleu")


# ------------------------------------------------------- the rest of keras.activations (names from keras.ops.nn)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import lamina  # noqa: E402

MORE = {  # name: (lamina call, torch reference)
    "celu": (lambda x: activations.celu(x, alpha=0.7), lambda t: F.celu(t, alpha=0.7)),
    "glu": (lambda x: activations.glu(x), lambda t: F.glu(t, dim=-1)),
    "hard_shrink": (lambda x: activations.hard_shrink(x, 0.3), lambda t: F.hardshrink(t, 0.3)),
    "hard_swish": (activations.hard_swish, F.hardswish),
    "hard_tanh": (activations.hard_tanh, F.hardtanh),
    "log_sigmoid": (activations.log_sigmoid, F.logsigmoid),
    "mish": (activations.mish, F.mish),
    "soft_shrink": (lambda x: activations.soft_shrink(x, 0.4), lambda t: F.softshrink(t, 0.4)),
    "tanh_shrink": (activations.tanh_shrink, F.tanhshrink),
    "threshold": (lambda x: activations.threshold(x, 0.2, -1.0), lambda t: F.threshold(t, 0.2, -1.0)),
    "squareplus": (lambda x: activations.squareplus(x, b=4), lambda t: (t + torch.sqrt(t * t + 4)) / 2),
    "sparse_plus": (activations.sparse_plus,
                    lambda t: torch.where(t <= -1, 0.0, torch.where(t >= 1, t, (t + 1) ** 2 / 4))),
}


@pytest.mark.parametrize("name", sorted(MORE))
def test_more_activations_match_torch_and_serialise(name):
    fn, ref = MORE[name]
    x = x_away_from_kinks(4, 6).astype(np.float32)
    t = torch.tensor(x, requires_grad=True)
    expected = ref(t)
    np.testing.assert_allclose(np.asarray(fn(x)), expected.detach().numpy(), rtol=1e-5, atol=1e-6)
    check_grad(lambda v: fn(v), x.astype(np.float64))
    plain = getattr(activations, name)
    assert activations.get(name) is plain and activations.deserialize(activations.serialize(plain)) is plain


def test_sparsemax_projects_onto_the_simplex():
    x = np.array([[0.1, 1.2, 0.3, -2.0], [3.0, 0.0, 0.0, 0.0]], np.float32)
    y = np.asarray(activations.sparsemax(x))
    np.testing.assert_allclose(y.sum(axis=1), 1.0, rtol=1e-6)
    assert (y >= 0).all() and y[1, 0] == 1.0 and (y[0, 3] == 0)
    # the Euclidean projection: for the support S, y_i = x_i - tau with tau = (sum_S x - 1) / |S|
    support = y[0] > 0
    tau = (x[0, support].sum() - 1) / support.sum()
    np.testing.assert_allclose(y[0, support], x[0, support] - tau, rtol=1e-5)


def test_a_dense_layer_takes_the_new_names_and_round_trips(tmp_path):
    model = lamina.Sequential([lamina.Input((6,)), lamina.layers.Dense(4, activation="mish"),
                               lamina.layers.Dense(2, activation="log_sigmoid")])
    x = np.random.default_rng(1).normal(size=(3, 6)).astype(np.float32)
    model.save(str(tmp_path / "m.keras"))
    again = lamina.models.load_model(str(tmp_path / "m.keras"))
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
