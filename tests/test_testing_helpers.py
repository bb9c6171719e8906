"""lamina.testing itself: the numerical gradient checker must see strided inputs."""
import numpy as np
import pytest

from lamina import ops
from lamina.testing import check_grad


def test_check_grad_on_a_transposed_input():
    x = np.arange(12, dtype=np.float64).reshape(3, 4).T / 7.0    # F-ordered: reshape(-1) would copy
    check_grad(lambda t: ops.math.multiply(t, t), x)


def test_check_grad_still_catches_a_wrong_gradient_on_a_strided_input():
    from lamina.tensor import Op

    class Wrong(Op):
        def forward(self, x):
            return x * x

        def backward(self, gy):
            return gy    # should be 2 x gy

    x = np.arange(1, 7, dtype=np.float64).reshape(2, 3).T
    with pytest.raises(AssertionError, match="wrong"):
        check_grad(lambda t: Wrong.apply(t), x)
