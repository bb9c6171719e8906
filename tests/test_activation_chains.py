"""The element-wise activations as in-cache chains (ops/activations.py's _chain)."""
import numpy as np
import pytest

import lamina
from lamina.ops import activations as A

SPECIAL = [0.0, -0.0, 1e-40, -1e-40, 3.0, -3.0, 20.0, -20.0, 100.0, -100.0, np.inf, -np.inf, np.nan,
           1e-45, -1e-45, 2.9999, -2.9999, 1e-300, -1e-300]
N = 3 * A._CHAIN_BLOCK + 1234  # three full blocks and a partial one


def _x(dtype, n=N, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * 4).astype(dtype)
    with np.errstate(over="ignore", under="ignore"):
        specials = np.array(SPECIAL).astype(dtype)
    # spread through every block, the partial last one and its very end included
    at = np.concatenate([rng.choice(n, min(n // 2, 40 * len(SPECIAL)), replace=False),
                         np.arange(n - len(SPECIAL), n)])
    x[at] = np.resize(specials, len(at))
    return x


def _gy(x, seed=1):
    g = np.random.default_rng(seed).standard_normal(x.size).astype(x.dtype)
    g[:len(SPECIAL)] = [0.0, -0.0, np.inf, -np.inf, np.nan] + [1.0] * (len(SPECIAL) - 5)
    return g.reshape(x.shape)


def assert_bits(got, want):
    """The same values to the bit (-0.0 apart from 0.0), NaN where NaN (any payload)."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype and got.shape == want.shape
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan)
    word = {2: np.int16, 4: np.int32, 8: np.int64}[got.dtype.itemsize]
    bad = np.flatnonzero(got[~nan].view(word) != want[~nan].view(word))
    assert bad.size == 0, f"{bad.size} differ, e.g. {got[~nan][bad[:5]]} against {want[~nan][bad[:5]]}"


CHAINED = {"gelu": lambda t: lamina.ops.gelu(t, approximate=False),
           "gelu_tanh": lambda t: lamina.ops.gelu(t, approximate=True), "silu": lamina.ops.silu}


@pytest.mark.parametrize("name", list(CHAINED))
def test_chain_of_a_transposed_input(name):
    """A non-C-ordered input (a transposed view): the values of its C-ordered copy. _chain writes its outputs
    through flat views, which for an output laid out as the input (empty_like) were copies: the values were lost."""
    x = _x(np.float32).reshape(-1, 2).T  # F-ordered, (2, N / 2)
    gy = _gy(np.ascontiguousarray(x))
    got = []
    for a in (x, np.ascontiguousarray(x)):
        t = lamina.Tensor(a, requires_grad=True)
        y = CHAINED[name](t)
        (g,) = lamina.grad(lamina.ops.sum(y * gy), [t])
        got.append((np.asarray(y), np.asarray(g)))
    assert_bits(got[0][0], got[1][0])
    assert_bits(got[0][1], got[1][1])
