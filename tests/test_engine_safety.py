"""Engine safety (issue 22): freed graphs, in-place changes, gradient aliasing, graph memory,
boolean-list indexing, non-differentiable casts, the gradient of powers at zero, and graphs where a
tensor is used several times. Reference: PyTorch (torch 2.13), float64."""
import gc
import tracemalloc
import weakref

import numpy as np
import pytest
import torch

import lamina
from lamina import Tensor, Variable, ops
from lamina.tensor import Op


def _t(a):
    return torch.tensor(np.asarray(a, np.float64), requires_grad=True)


# ----- 1. a second backward through a freed graph raises -----------------------------------------

def test_second_backward_through_freed_graph_raises_and_leaves_grads_alone():
    x = Tensor([1.0, 2.0], requires_grad=True)
    h = x * x
    l1 = h.sum()
    l2 = (h * 3).sum()
    l1.backward()
    with pytest.raises(RuntimeError, match="second time.*retain_graph=True"):
        l2.backward()
    np.testing.assert_allclose(x.grad, [2.0, 4.0])   # nothing of l2 leaked in
    assert h.grad is None and not h.is_leaf
    # PyTorch agrees: it raises too
    tx = torch.tensor([1.0, 2.0], requires_grad=True)
    th = tx * tx
    tl1, tl2 = th.sum(), (th * 3).sum()
    tl1.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        tl2.backward()


def test_backward_twice_on_the_same_loss_raises():
    x = Tensor([1.0, 2.0], requires_grad=True)
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph"):
        loss.backward()
    np.testing.assert_allclose(x.grad, [2.0, 4.0])


def test_retain_graph_lets_both_backwards_run_and_accumulate():
    x = Tensor([1.0, 2.0], requires_grad=True)
    h = x * x
    l1, l2 = h.sum(), (h * 3).sum()
    l1.backward(retain_graph=True)
    l2.backward()
    tx = torch.tensor([1.0, 2.0], requires_grad=True)
    th = tx * tx
    th.sum().backward(retain_graph=True)
    (th * 3).sum().backward()
    np.testing.assert_allclose(x.grad, tx.grad.numpy())   # [2, 4] + [6, 12]
    np.testing.assert_allclose(x.grad, [8.0, 16.0])
    assert h.grad is None


def test_functional_grad_frees_the_graph_too():
    x = Tensor([3.0], requires_grad=True)
    y = (x * x).sum()
    (g1,) = lamina.grad(y, [x], retain_graph=True)
    (g2,) = lamina.grad(y, [x])
    np.testing.assert_allclose(g1, [6.0])
    np.testing.assert_allclose(g2, [6.0])
    assert g1 is not g2
    with pytest.raises(RuntimeError, match="retain_graph"):
        lamina.grad(y, [x])
    assert x.grad is None


# ----- 2. in-place changes of saved inputs are detected ------------------------------------------

def test_assign_after_forward_is_detected_naming_op_and_variable():
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    w = Variable(np.ones((3, 4)), name="kernel", dtype="float64")
    y = ops.matmul(x, w)
    v0 = w._version
    w.assign_sub(1.0)
    assert w._version == v0 + 1
    with pytest.raises(RuntimeError, match=r"MatMul.*'kernel'.*modified by an inplace operation"):
        y.sum().backward()


def test_each_assign_method_bumps_the_version():
    w = Variable(np.zeros(3), name="w")
    versions = [w._version]
    for f in (lambda: w.assign(np.ones(3)), lambda: w.assign_add(1.0), lambda: w.assign_sub(1.0)):
        f()
        versions.append(w._version)
    assert versions == sorted(set(versions))   # strictly increasing


def test_optimizer_step_between_forward_and_backward_is_detected():
    w = Variable(np.full((3,), 2.0), name="dense/kernel", dtype="float64")
    x = Tensor(np.arange(3.0))
    loss = (w * x).sum()                          # Multiply saves w's array
    opt = lamina.optimizers.SGD(learning_rate=0.1)
    opt.apply([np.ones(3)], [w])
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


@pytest.mark.parametrize("name", ["Adam", "RMSprop", "SGD"])
def test_every_optimizer_step_bumps_the_weights_version(name):
    w = Variable(np.ones(3), name="w")
    opt = getattr(lamina.optimizers, name)(learning_rate=0.1)
    v0 = w._version
    opt.apply([np.ones(3)], [w])
    assert w._version > v0


def test_ema_overwrite_and_gradient_accumulation_bump_versions():
    w = Variable(np.ones(3), name="w")
    opt = lamina.optimizers.SGD(learning_rate=0.1, use_ema=True)
    opt.apply([np.ones(3)], [w])
    v0 = w._version
    opt.finalize_variable_values([w])             # copies the moving average into the weight
    assert w._version > v0
    w2 = Variable(np.ones(3), name="w2")
    opt2 = lamina.optimizers.SGD(learning_rate=0.1, gradient_accumulation_steps=2)
    opt2.apply([np.ones(3)], [w2])                # accumulates only: the weight is untouched
    acc = opt2._slots["gradient_accumulator"][0]
    assert acc._version > 0


def test_inplace_change_of_an_input_the_op_did_not_save_is_fine():
    # Add's backward reads only shapes: PyTorch lets this through as well, with the same gradient
    w = Variable(np.ones(3), name="b", dtype="float64")
    x = Tensor(np.arange(3.0), requires_grad=True)
    y = (x + w).sum()
    w.assign_add(5.0)
    y.backward()
    np.testing.assert_allclose(w.grad, np.ones(3))
    np.testing.assert_allclose(x.grad, np.ones(3))


def test_inplace_change_seen_through_a_view_is_detected():
    w = Variable(np.ones((2, 3)), name="table", dtype="float64")
    x = Tensor(np.ones(6), requires_grad=True)
    y = (ops.reshape(w, (6,)) * x).sum()         # Multiply saved a view of w's memory
    w.assign_add(1.0)
    with pytest.raises(RuntimeError, match="Multiply.*modified by an inplace operation"):
        y.backward()


def test_frozen_variable_without_grad_is_watched_too():
    w = Variable(np.ones(3), name="frozen", dtype="float64")
    w.requires_grad = False
    x = Tensor(np.arange(3.0), requires_grad=True)
    y = (x * w).sum()
    w.assign(np.full(3, 2.0))
    with pytest.raises(RuntimeError, match="Multiply: input 1 .*'frozen'.*modified by an inplace operation"):
        y.backward()


class _SortWithIndices(Op):
    def forward(self, x):
        self.order = np.argsort(x)
        return x[self.order], self.order

    def backward(self, gy, gi):
        g = np.zeros_like(gy)
        g[self.order] = gy
        return g


def test_integer_outputs_of_recorded_ops_are_leaves_without_grad():
    x = Tensor(np.array([3.0, 1.0, 2.0]), requires_grad=True)
    i = ops.cast(x * 2, "int64")
    assert i.is_leaf and not i.requires_grad
    values, order = _SortWithIndices.apply(x)      # the old engine raised TypeError here
    assert order.is_leaf and not order.requires_grad and order.dtype.kind == "i"
    (values * Tensor(np.array([1.0, 2.0, 3.0]))).sum().backward()
    np.testing.assert_array_equal(x.grad, [3.0, 1.0, 2.0])


def test_normal_training_loop_is_not_disturbed():
    rng = np.random.default_rng(0)
    w = Variable(rng.standard_normal((3, 1)), name="w", dtype="float64")
    x, t = Tensor(rng.standard_normal((8, 3))), Tensor(rng.standard_normal((8, 1)))
    opt = lamina.optimizers.Adam(learning_rate=0.05)
    losses = []
    for _ in range(20):
        loss = ((ops.matmul(x, w) - t) ** 2).mean()
        (g,) = lamina.grad(loss, [w])
        opt.apply([g], [w])
        losses.append(float(loss))
    assert losses[-1] < losses[0]


# ----- 3. gradients are never shared or read-only ------------------------------------------------

def test_leaves_get_their_own_writable_gradients():
    a = Tensor([1.0, 2.0], requires_grad=True)
    b = Tensor([3.0, 4.0], requires_grad=True)
    (a + b).sum().backward()                     # Add passes one array to both; Sum's is read-only
    assert a.grad is not b.grad
    assert not np.shares_memory(a.grad, b.grad)
    a.grad *= 0.5                                # writable
    np.testing.assert_allclose(a.grad, [0.5, 0.5])
    np.testing.assert_allclose(b.grad, [1.0, 1.0])


def test_the_callers_upstream_gradient_is_never_handed_back():
    a = Tensor([1.0, 2.0], requires_grad=True)
    b = Tensor([3.0, 4.0], requires_grad=True)
    g = np.array([1.0, 1.0], np.float32)
    (a + b).backward(g)
    assert not np.shares_memory(a.grad, g) and not np.shares_memory(b.grad, g)
    a.grad[...] = 7
    np.testing.assert_array_equal(g, [1.0, 1.0])
    ga, gb = lamina.grad(a + b, [a, b], grad_output=g)
    assert not np.shares_memory(ga, gb) and not np.shares_memory(ga, g)


def test_grad_of_broadcast_and_reshaped_leaves_are_writable():
    a = Tensor(np.ones((2, 3)), requires_grad=True)
    c = Tensor(np.ones(3), requires_grad=True)
    (ops.reshape(a, (6,)).sum() + (c * 2).sum()).backward()
    for g in (a.grad, c.grad):
        assert g.flags.writeable
        g += 1


class _Fresh(Op):
    """Identity whose backward returns a fresh array (or a view of a fresh temporary); the address
    of the memory goes to `made`."""

    made = []

    def forward(self, x):
        return x.copy()

    def backward(self, gy):
        tmp = gy.copy()
        _Fresh.made.append(tmp.ctypes.data)
        return tmp.reshape(-1)[::-1][::-1].reshape(gy.shape) if self.view else tmp


@pytest.mark.parametrize("view", [False, True])
def test_common_path_does_not_copy_gradients(view):
    x = Tensor(np.ones((2, 3)), requires_grad=True)
    _Fresh.made.clear()
    _Fresh.apply(x, view=view).sum().backward()
    # the op's own new array (or a view of a temporary nobody else holds) is delivered as it is
    assert x.grad.ctypes.data == _Fresh.made[-1]
    assert (x.grad.base is not None) == view


def test_variable_copies_the_callers_array_and_tensor_shares_it():
    arr = np.ones(3, np.float32)
    v = Variable(arr, name="v")
    assert not np.shares_memory(v.data, arr)
    lamina.optimizers.SGD(learning_rate=0.5).apply([np.ones(3, np.float32)], [v])
    np.testing.assert_array_equal(arr, [1.0, 1.0, 1.0])       # the caller's initial values survive
    np.testing.assert_allclose(v.data, [0.5, 0.5, 0.5])
    v2 = Variable(Tensor(arr))
    assert not np.shares_memory(v2.data, arr)
    t = Tensor(arr)                                            # documented: like torch.from_numpy
    assert t.data is arr


# ----- 4. the graph holds no intermediate arrays --------------------------------------------------

def _add_reshape_chain(n, size=1 << 18):
    x = Tensor(np.ones(size, np.float32), requires_grad=True)
    c = Tensor(np.ones(size, np.float32))
    refs = []
    h = x
    for _ in range(n):
        s = h + c
        refs.append(weakref.ref(s.data))
        h = ops.reshape(s, (size // 64, 64)).reshape(-1)
        del s
    return x, h, refs


def test_intermediate_arrays_die_while_the_graph_lives():
    x, h, refs = _add_reshape_chain(40)
    gc.collect()
    alive = [r() is not None for r in refs]
    assert sum(alive) == 1 and alive[-1]          # only the last one (h views it)
    h.sum().backward()
    np.testing.assert_allclose(x.grad, np.ones(x.shape))


def test_live_memory_of_a_chain_does_not_grow_with_its_length():
    size = 1 << 18                                 # 1 MiB per float32 array
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        x, h, _ = _add_reshape_chain(40, size)
        live = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    # x, c and the last sum: about 3 MiB; the old design kept all 40 sums (over 40 MiB)
    assert live < 6 * size * 4


def test_retain_grad_and_grad_of_intermediates_still_work():
    xv = np.array([1.0, -2.0, 3.0])
    x = Tensor(xv, requires_grad=True)
    h = (x * x).retain_grad()
    u = h + 1.0
    y = (u * h).sum() + h.sum()                   # h used three times
    gu, gh, gx = lamina.grad(y, [u, h, x], retain_graph=True)
    y.backward()
    tx = _t(xv)
    th = tx * tx
    th.retain_grad()
    tu = th + 1.0
    tu.retain_grad()
    ty = (tu * th).sum() + th.sum()
    ty.backward()
    np.testing.assert_allclose(gu, tu.grad.numpy())
    np.testing.assert_allclose(gh, th.grad.numpy())
    np.testing.assert_allclose(gx, tx.grad.numpy())
    np.testing.assert_allclose(h.grad, th.grad.numpy())
    np.testing.assert_allclose(x.grad, tx.grad.numpy())
    assert u.grad is None                          # not retained


# ----- 5. boolean lists, non-differentiable casts, powers at zero --------------------------------

def test_list_of_bools_is_a_mask():
    x = Tensor([10.0, 20.0, 30.0], requires_grad=True)
    y = x[[True, False, True]]
    np.testing.assert_array_equal(y.data, np.array([10.0, 20.0, 30.0])[[True, False, True]])
    np.testing.assert_array_equal(y.data, [10.0, 30.0])
    (y * Tensor([1.0, 2.0])).sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0, 0.0, 2.0])
    m = Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    z = m[[False, True], [0, 2]]                   # mask on axis 0 and ints on axis 1 (in a tuple)
    np.testing.assert_array_equal(z.data, np.arange(6.0).reshape(2, 3)[[False, True], [0, 2]])
    assert x[[]].shape == (0,)


@pytest.mark.parametrize("dtype", ["int32", "int64", "bool", "uint8"])
def test_cast_to_int_or_bool_gives_a_tensor_without_gradient(dtype):
    x = Tensor([1.7, -0.2, 0.0, 3.0], requires_grad=True)
    y = ops.cast(x, dtype)
    assert not y.requires_grad and y.is_leaf and y.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(y.data, np.array([1.7, -0.2, 0.0, 3.0], np.float32).astype(dtype))
    assert not x.astype(dtype).requires_grad
    t = torch.tensor([1.7, -0.2, 0.0, 3.0], requires_grad=True)
    assert not t.to(getattr(torch, dtype)).requires_grad


def test_float_to_float_cast_stays_differentiable():
    x = Tensor(np.array([1.0, 2.0], np.float32), requires_grad=True)
    y = ops.cast(x, "float64")
    assert y.requires_grad and y.dtype == np.float64
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad, [2.0, 4.0])


@pytest.mark.parametrize("p", [0, 1, 2, 0.5, -1, 3, 0.0])
def test_power_scalar_gradient_matches_torch_also_at_zero(p):
    xv = np.array([0.0, 1.5, -2.0, 3.0]) if p not in (0.5,) else np.array([0.25, 1.5, 2.0, 3.0])
    if p == -1:
        xv = np.array([0.5, 1.5, -2.0, 3.0])
    x = Tensor(xv, requires_grad=True)
    y = x ** p
    y.sum().backward()
    tx = _t(xv)
    (tx ** p).sum().backward()
    np.testing.assert_allclose(y.data, (tx ** p).detach().numpy())
    np.testing.assert_allclose(x.grad, tx.grad.numpy())
    assert np.isfinite(x.grad).all()


def test_power_gradient_at_zero_base_matches_torch():
    with np.errstate(divide="ignore", invalid="ignore"):
        av = np.array([0.0, 0.0, 0.0, 0.0, 2.0, 0.0, -1.5])
        bv = np.array([0.0, 1.0, 2.0, 0.5, 0.0, -1.0, 2.0])
        a, b = Tensor(av, requires_grad=True), Tensor(bv, requires_grad=True)
        (a ** b).sum().backward()
    ta, tb = _t(av), _t(bv)
    (ta ** tb).sum().backward()
    np.testing.assert_allclose(a.grad, ta.grad.numpy())        # NaN and inf where torch has them
    np.testing.assert_allclose(b.grad, tb.grad.numpy())


# ----- 6. tensors used several times, checked against PyTorch ------------------------------------

def test_diamond_graph_and_reuse_match_torch():
    rng = np.random.default_rng(1)
    xv, wv = rng.standard_normal((4, 3)), rng.standard_normal((3, 3))
    x, w = Tensor(xv, requires_grad=True), Tensor(wv, requires_grad=True)
    h = ops.matmul(x, w)                  # h feeds two branches that meet again (diamond)
    left, right = ops.exp(h * 0.1), h * h
    y = (left * right + ops.matmul(h, w)).sum() + (h ** 2).mean()
    y.backward()
    tx, tw = _t(xv), _t(wv)
    th = tx @ tw
    ty = (torch.exp(th * 0.1) * (th * th) + th @ tw).sum() + (th ** 2).mean()
    ty.backward()
    np.testing.assert_allclose(float(y), ty.item(), rtol=1e-10)
    np.testing.assert_allclose(x.grad, tx.grad.numpy(), rtol=1e-10)
    np.testing.assert_allclose(w.grad, tw.grad.numpy(), rtol=1e-10)


def test_one_tensor_split_into_outputs_that_are_reused_matches_torch():
    xv = np.arange(1.0, 7.0)
    x = Tensor(xv, requires_grad=True)
    h = x * x
    a, b, c = ops.split(h, 3)             # multi-output op: a is used twice, c never
    y = (a * b).sum() + (a * 3).sum() + (h * b.sum()).sum()
    y.backward()
    tx = _t(xv)
    th = tx * tx
    ta, tb, tc = torch.split(th, 2)
    ty = (ta * tb).sum() + (ta * 3).sum() + (th * tb.sum()).sum()
    ty.backward()
    np.testing.assert_allclose(x.grad, tx.grad.numpy())


def test_same_leaf_as_both_operands_and_across_two_backwards():
    xv = np.array([0.5, -1.0])
    x = Tensor(xv, requires_grad=True)
    (x * x + x / x - x).sum().backward()
    (ops.maximum(x, x * 2)).sum().backward()      # a second graph accumulates into .grad
    tx = _t(xv)
    (tx * tx + tx / tx - tx).sum().backward()
    torch.maximum(tx, tx * 2).sum().backward()
    np.testing.assert_allclose(x.grad, tx.grad.numpy())


def test_apply_input_rules_hold_for_tensors_constants_and_float16():
    """Op.apply scans plain Tensor inputs in one loop and sends anything else (numbers, arrays) through its general
    path; both keep the same rules. A float16 product runs through float32 (NumPy has no float16 BLAS) also when
    a float64 constant joined it: the constant takes the tensor's dtype first."""
    from lamina.ops.math import Add, MatMul
    half = Tensor(np.ones((1, 4096), np.float16), requires_grad=True)
    column = Tensor(half.data.T, requires_grad=True)
    for out in (MatMul.apply(half, np.ones((4096, 1))), MatMul.apply(np.ones((1, 4096)), column)):
        assert out.dtype == np.float16 and float(out.data.ravel()[0]) == 4096.0 and out._op._half
    with pytest.raises(ValueError, match="different dtypes"):   # two float tensors: no silent upcast
        Add.apply(Tensor(np.ones(3, np.float32)), Tensor(np.ones(3, np.float64)))
    x = Tensor(np.arange(3.0, dtype=np.float32), requires_grad=True)
    y = Add.apply(x, np.full(3, 2.0))   # a float64 array: a constant, of x's float dtype
    assert y.dtype == np.float32 and y.requires_grad and y.data.tolist() == [2.0, 3.0, 4.0]
    assert not Add.apply(Tensor(np.ones(2)), Tensor(np.ones(2))).requires_grad
    (g,) = lamina.grad(ops.sum(y * y), [x])
    assert g.data.tolist() == [4.0, 6.0, 8.0]
