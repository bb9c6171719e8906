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
