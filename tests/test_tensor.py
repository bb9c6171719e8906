"""The autograd engine: graph recording, accumulation, no_grad, long chains, errors."""
import time

import numpy as np
import pytest

import lamina
from lamina import Tensor, ops


def test_scalar_backward_and_accumulation():
    x = Tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * x + x          # x used twice: gradients add up
    y.sum().backward()
    np.testing.assert_allclose(x.grad, 2 * np.array([1, 2, 3]) + 1)
    y2 = (x * 3).sum()
    y2.backward()           # a second backward accumulates into .grad, as in torch
    np.testing.assert_allclose(x.grad, 2 * np.array([1, 2, 3]) + 1 + 3)


def test_dtype_stays_float32():
    x = Tensor(np.ones(3, np.float32), requires_grad=True)
    y = (x * 2.5 + 1) / 3 - 0.5
    assert y.dtype == np.float32
    y.sum().backward()
    assert x.grad.dtype == np.float32
    assert Tensor([1.0, 2.0]).dtype == np.float32


def test_broadcast_gradients_reduce_to_operand_shape(rng):
    a = Tensor(rng.standard_normal((4, 1, 3)), requires_grad=True)
    b = Tensor(rng.standard_normal((5, 1)), requires_grad=True)
    (a * b + a - b).sum().backward()
    assert a.grad.shape == a.shape and b.grad.shape == b.shape
    np.testing.assert_allclose(a.grad, np.broadcast_to(b.data.sum(0) + 1, (4, 1, 3)).reshape(4, 1, 3) * 1 +
                               0 * a.data, rtol=1e-6) if False else None
    # numerical reference
    ga = (np.broadcast_to(b.data, (4, 5, 3)) + 1).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(a.grad, ga, rtol=1e-6)
    gb = (np.broadcast_to(a.data, (4, 5, 3)) - 1).sum(axis=(0, 2))[:, None]
    np.testing.assert_allclose(b.grad, gb, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("big,small", [((6, 5, 4, 7), (6, 1, 1, 7)), ((6, 5, 4, 7), (7,)), ((6, 5, 4, 7), (5, 1, 7)),
                                       ((6, 5, 4, 7), (6, 5, 4, 1)), ((6, 5, 4, 7), ()), ((3, 1, 4), (3, 1, 4))])
def test_product_gradient_to_a_broadcast_operand(rng, dtype, big, small):
    """x * s with s broadcast (a squeeze-excite scale, a per-channel scale, a mask): s's gradient, the product's
    sum over the broadcast axes, is NumPy's sum of the product to the bit (an einsum without the x-sized product
    where the last axis is kept; the product and NumPy's pairwise sum where it is summed too), x's gradient gy s."""
    x = rng.standard_normal(big).astype(dtype)
    s = np.asarray(rng.standard_normal(small)).astype(dtype)
    gy = rng.standard_normal(big).astype(dtype)
    xt, st = Tensor(x, requires_grad=True), Tensor(s, requires_grad=True)
    gx, gs = lamina.grad(xt * st, [xt, st], grad_output=Tensor(gy))
    want = (gy * x).sum(axis=tuple(i for i in range(len(big)) if i < len(big) - len(small)
                                   or small[i - len(big) + len(small)] == 1 and big[i] != 1)).reshape(small)
    assert gs.shape == s.shape and gs.dtype == dtype
    bits = [np.asarray(a).reshape(-1).view(np.uint8) for a in (gs, want)]
    np.testing.assert_array_equal(*bits)
    np.testing.assert_array_equal(np.asarray(gx), gy * s)


def test_no_grad_records_nothing():
    x = Tensor([1.0, 2.0], requires_grad=True)
    with lamina.no_grad():
        y = x * 2
    assert not y.requires_grad and y.is_leaf
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()


def test_detach_and_skip_inputs_without_grad():
    x = Tensor([1.0, 2.0], requires_grad=True)
    c = Tensor([5.0, 6.0])
    y = (x.detach() * x + c * x).sum()
    y.backward()
    np.testing.assert_allclose(x.grad, [1 + 5, 2 + 6])
    assert c.grad is None


def test_backward_needs_scalar_or_grad():
    x = Tensor(np.ones((2, 2)), requires_grad=True)
    with pytest.raises(RuntimeError, match="scalar"):
        (x * 2).backward()
    (x * 2).backward(np.ones((2, 2)))
    np.testing.assert_allclose(x.grad, 2 * np.ones((2, 2)))


def test_graph_freed_after_backward():
    x = Tensor([1.0], requires_grad=True)
    y = x * 2
    z = y * 3
    z.backward()
    # freed: the ops dropped what they saved and their edges (the graph can be collected); the
    # intermediates stay non-leaves, and going through them again raises (tests/test_engine_safety.py)
    assert not z.is_leaf and not y.is_leaf
    assert z._op.saved is None and z._op._edges == () and z._op._freed
    with pytest.raises(RuntimeError, match="retain_graph"):
        z.backward()


def _chain(n):
    t = Tensor(np.float32(1.0), requires_grad=True)
    h = t
    for _ in range(n):
        h = h * 1.0
    return t, h


def test_long_chain_no_recursion_and_each_op_once():
    t, h = _chain(20_000)              # 20x Python's recursion limit: a recursive sweep would fail long before
    h.backward()                       # no RecursionError
    assert t.grad == pytest.approx(1.0)
    # linear work without a clock: in a ladder where every node is reached by two paths, each op's backward
    # runs exactly once (a walk that re-visited shared nodes would run them 2^depth times)
    from lamina.ops import math as m
    calls = []
    original = m.Multiply.backward

    def counting(self, gy):
        calls.append(id(self))
        return original(self, gy)
    x = Tensor(np.float64(1.0), requires_grad=True)
    h = x
    for _ in range(2000):
        h = h * h * 0.0 + h            # h is used twice at every level (values stay finite)
    m.Multiply.backward = counting
    try:
        h.backward()
    finally:
        m.Multiply.backward = original
    assert len(calls) == len(set(calls)) == 2 * 2000


def test_branch_gradients_summed_in_place_only_into_arrays_nobody_else_holds(monkeypatch):
    from lamina import tensor
    from lamina.tensor import _sum_into
    monkeypatch.setattr(tensor, "SUM_IN_PLACE_MIN", 0)     # (small arrays here; the rule is the same)
    own, g = np.ones(4), np.full(4, 2.0)
    slot = [own]
    del own
    out = _sum_into(slot, 0, g)
    assert out is slot[0] and list(out) == [3.0] * 4            # summed where it lay: no new array
    held = np.ones(4)
    slot = [held]
    assert _sum_into(slot, 0, g) is not held and list(held) == [1.0] * 4   # someone else holds it
    base = np.ones(8)
    slot = [base[:4]]
    assert _sum_into(slot, 0, g) is not slot[0] and list(base) == [1.0] * 8  # a view: never written through
    slot = [np.ones(8)[2:6]]                                       # the only view of an array nobody holds
    view = slot[0]
    del view
    out = _sum_into(slot, 0, g)
    assert out is slot[0] and list(out) == [3.0] * 4
    slot = [np.ones(4, np.float32)]
    assert _sum_into(slot, 0, g).dtype == np.float64               # another dtype: the ordinary sum


@pytest.mark.parametrize("seed", range(24))
def test_gradients_along_many_shared_paths_equal_torchs(seed, monkeypatch):
    """Random graphs where tensors are reused along several paths, through ops whose gradient arrays are shared
    (Add sends one array to both operands, x + x the same one twice) or views (reshape, slices): the sums
    written in place must never reach an array another path still reads."""
    torch = pytest.importorskip("torch")
    from lamina import tensor
    monkeypatch.setattr(tensor, "SUM_IN_PLACE_MIN", 0)     # every sum eligible, however small
    r = np.random.default_rng(seed)
    xv = r.standard_normal((3, 4))
    x, xt = Tensor(xv, requires_grad=True), torch.tensor(xv, requires_grad=True)
    nodes = [(x, xt)]
    for _ in range(14):
        i, j = r.integers(len(nodes), size=2)
        (a, at), (b, bt) = nodes[i], nodes[j]
        kind = r.integers(7)
        if kind == 0:
            new = (a + b, at + bt)
        elif kind == 1:
            new = (a * b * 0.5, at * bt * 0.5)
        elif kind == 2:
            new = (ops.tanh(a) + a, torch.tanh(at) + at)
        elif kind == 3:
            new = (ops.reshape(ops.reshape(a, (12,)) * 1.5, (3, 4)) - b, (at.reshape(12) * 1.5).reshape(3, 4) - bt)
        elif kind == 4:
            new = (a + a, at + at)
        elif kind == 5:                              # two views of one gradient array, one per operand
            new = (ops.reshape(ops.reshape(a, (12,)) + ops.reshape(b, (12,)), (3, 4)),
                   (at.reshape(12) + bt.reshape(12)).reshape(3, 4))
        else:
            new = (ops.concatenate([a[:, :2] * 2.0, a[:, 2:]], axis=1) + b, torch.cat([at[:, :2] * 2.0, at[:, 2:]], 1) + bt)
        nodes.append(new)
    total, total_t = nodes[-1][0].sum(), nodes[-1][1].sum()
    for k in r.integers(len(nodes), size=3):      # a few inner tensors feed the loss too
        total = total + (nodes[k][0] * nodes[k][0]).sum() * 0.1
        total_t = total_t + (nodes[k][1] * nodes[k][1]).sum() * 0.1
    total.backward()
    total_t.backward()
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_multi_output_op_and_unused_output():
    x = Tensor(np.arange(6.0), requires_grad=True)
    a, b, c = ops.split(x, 3)
    (a * 2 + c).sum().backward()    # b unused: its gradient is zero
    np.testing.assert_allclose(x.grad, [2, 2, 0, 0, 1, 1])


def test_grad_function_does_not_touch_dot_grad():
    x = Tensor([3.0], requires_grad=True)
    (g,) = lamina.grad((x * x).sum(), [x])
    np.testing.assert_allclose(g, [6.0])
    assert x.grad is None


def test_bad_backward_shape_is_named():
    class Bad(lamina.tensor.Op):
        def forward(self, x):
            return x * 2

        def backward(self, gy):
            return gy[:1]

    x = Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(RuntimeError, match="Bad.backward returned a gradient of shape"):
        Bad.apply(x).sum().backward()


def test_comparisons_have_no_grad_and_tensor_helpers():
    x = Tensor([1.0, -2.0, 3.0], requires_grad=True)
    m = x > 0
    assert m.dtype == bool and not m.requires_grad
    assert x.shape == (3,) and x.ndim == 1 and x.size == 3
    np.testing.assert_array_equal(x.numpy(), np.asarray(x))
    assert "requires_grad=True" in repr(x)


def test_variable_assign_checks_shape():
    v = lamina.Variable(np.zeros((2, 3)), name="w")
    v.assign(np.ones((2, 3)))
    assert v.numpy().sum() == 6
    with pytest.raises(ValueError, match="shape"):
        v.assign(np.ones((3, 2)))


def test_mixed_float_dtypes_are_refused_but_constants_follow():
    a = Tensor(np.ones(3, np.float32), requires_grad=True)
    assert (a * np.ones(3)).dtype == np.float32          # a float64 constant takes the tensor's dtype
    assert ops.matmul(a, np.ones((3, 2))).dtype == np.float32
    with pytest.raises(ValueError, match="Add: float inputs have different dtypes .*float32.*float64"):
        ops.math.add(a, Tensor(np.ones(3)))  # the kernel (keras.ops.add promotes, as Keras does)


def test_allocator_tuning_is_reported_and_can_be_turned_off():
    import subprocess
    import sys
    code = "import lamina; print(lamina.backend.MALLOC_TUNED)"
    off = subprocess.run([sys.executable, "-c", code], env={**__import__("os").environ, "LAMINA_MALLOC_TUNING": "0"},
                         capture_output=True, text=True)
    assert off.stdout.strip() == "False"
    on = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert on.stdout.strip() in ("True", "False")  # True on glibc Linux; the call never fails the import


def test_array_protocol_copies_only_when_asked_or_converting():
    """np.asarray(tensor) is the tensor's own array (NumPy's protocol: no copy unless the dtype changes or
    copy=True asks for one; copy=False refuses a conversion), so handing a large weight to NumPy costs
    nothing."""
    t = Tensor(np.arange(6, dtype=np.float32).reshape(2, 3))
    assert np.asarray(t) is t.data and np.asarray(t, dtype=np.float32) is t.data
    c = np.array(t)  # np.array copies by default
    assert c is not t.data and np.array_equal(c, t.data)
    assert np.asarray(t, copy=True) is not t.data
    d = np.asarray(t, dtype=np.float64)
    assert d.dtype == np.float64 and np.array_equal(d, t.data)
    with pytest.raises(ValueError, match="copy=False"):
        np.asarray(t, dtype=np.float64, copy=False)
