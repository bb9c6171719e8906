"""Property tests (issue 22, item 7): broadcasting, indexing and result dtypes on random cases,
against PyTorch and NumPy. Few examples each, so the file runs in seconds."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes

import lamina
from lamina import Tensor, ops

SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow])

BINARY = {
    "add": (ops.add, torch.add),
    "subtract": (ops.subtract, torch.sub),
    "multiply": (ops.multiply, torch.mul),
    "divide": (ops.divide, torch.div),
    "maximum": (ops.math.maximum, torch.maximum),  # the kernel: keras.ops.maximum narrows float64 as Keras does
    "power": (ops.power, torch.pow),
}


@SETTINGS
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=4),
       op=st.sampled_from(sorted(BINARY)), seed=st.integers(0, 2 ** 16))
def test_broadcasting_binary_ops_match_torch(shapes, op, seed):
    (sa, sb), out_shape = shapes.input_shapes, shapes.result_shape
    rng = np.random.default_rng(seed)
    av, bv = rng.standard_normal(sa), rng.standard_normal(sb)
    if op in ("divide", "power"):
        av = np.abs(av) + 0.5 if op == "power" else av
        bv = np.abs(bv) + 0.5
    gy = rng.standard_normal(out_shape)
    ours, theirs = BINARY[op]
    a, b = Tensor(av, requires_grad=True), Tensor(bv, requires_grad=True)
    y = ours(a, b)
    (y * Tensor(gy)).sum().backward()
    ta, tb = torch.tensor(av, requires_grad=True), torch.tensor(bv, requires_grad=True)
    ty = theirs(ta, tb)
    (ty * torch.tensor(gy)).sum().backward()
    assert y.shape == tuple(ty.shape)
    np.testing.assert_allclose(y.data, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(a.grad, ta.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b.grad, tb.grad.numpy(), rtol=1e-10, atol=1e-12)


# ----- indexing -------------------------------------------------------------------------------

@st.composite
def shape_and_index(draw):
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=1, max_size=3)))
    items, axis, used_ellipsis = [], 0, False
    n_items = draw(st.integers(1, len(shape) + 1))
    for _ in range(n_items):
        kinds = ["int", "slice", "ints", "bools", "none"] + ([] if used_ellipsis else ["ellipsis"])
        kind = draw(st.sampled_from(kinds))
        if kind == "none":
            items.append(None)
            continue
        if kind == "ellipsis":
            items.append(Ellipsis)
            used_ellipsis = True
            axis = len(shape) - draw(st.integers(0, len(shape) - axis))  # what follows indexes the last axes
            continue
        if axis >= len(shape):
            break
        n = shape[axis]
        if kind == "int":
            items.append(draw(st.integers(-n, n - 1)))
        elif kind == "slice":
            start = draw(st.one_of(st.none(), st.integers(-n - 1, n)))
            stop = draw(st.one_of(st.none(), st.integers(-n - 1, n)))
            step = draw(st.one_of(st.none(), st.sampled_from([1, 2, 3, -1, -2])))
            items.append(slice(start, stop, step))
        elif kind == "ints":
            items.append(draw(st.lists(st.integers(-n, n - 1), min_size=1, max_size=4)))
        else:
            items.append(draw(st.lists(st.booleans(), min_size=n, max_size=n)))
        axis += 1
    as_tuple = draw(st.booleans()) or len(items) != 1
    return shape, (tuple(items) if as_tuple else items[0])


def _numpy_index(idx):
    """The same index with lists as NumPy arrays (NumPy reads lists in a tuple the same way)."""
    if isinstance(idx, tuple):
        return tuple(np.asarray(i) if isinstance(i, list) else i for i in idx)
    return np.asarray(idx) if isinstance(idx, list) else idx


@settings(SETTINGS, max_examples=80)
@given(case=shape_and_index(), seed=st.integers(0, 2 ** 16))
@example(case=((3,), [True, False, True]), seed=0)
@example(case=((2, 4), (slice(None, None, -2), [True, False, False, True])), seed=1)
@example(case=((3, 2, 4), (Ellipsis, None, slice(3, 0, -2))), seed=2)
@example(case=((4, 3), ([0, -1, 0], slice(None, None, 2))), seed=3)
@example(case=((4, 3), (-1, [2, 2, 0], None)), seed=4)
def test_indexing_values_and_gradients_match_numpy(case, seed):
    shape, idx = case
    rng = np.random.default_rng(seed)
    xv = rng.standard_normal(shape)
    try:
        expected = xv[_numpy_index(idx)]
    except IndexError:
        with pytest.raises(IndexError):
            Tensor(xv, requires_grad=True)[idx]
        return
    x = Tensor(xv, requires_grad=True)
    y = x[idx]
    np.testing.assert_array_equal(y.data, expected)
    gy = rng.standard_normal(expected.shape)
    (y * Tensor(gy)).sum().backward()
    # reference: which entries of x each output entry reads, by indexing the entry numbers
    picked = np.arange(xv.size).reshape(shape)[_numpy_index(idx)]
    ref = np.bincount(np.ravel(picked), weights=np.ravel(gy), minlength=xv.size).reshape(shape)
    np.testing.assert_allclose(x.grad, ref, rtol=1e-12, atol=1e-12)


@settings(SETTINGS, max_examples=60)
@given(case=shape_and_index())
@example(case=((3,), [True, False, True]))
@example(case=((2, 3), (slice(None), [False, True, True])))
def test_indexing_matches_torch_where_torch_indexes_alike(case):
    """Torch takes no negative steps and differs from NumPy when ints and index arrays mix; compare on
    the indices where both define the same result (one advanced index at most, steps >= 1)."""
    shape, idx = case
    items = idx if isinstance(idx, tuple) else (idx,)
    assume(all(not (isinstance(i, slice) and i.step is not None and i.step < 0) for i in items))
    assume(sum(isinstance(i, list) for i in items) <= 1)
    # with an index array present NumPy counts ints as advanced indices too (they move the result's
    # axes to the front when a slice or None stands between); torch keeps ints basic. lamina is NumPy's.
    assume(not (any(isinstance(i, list) for i in items) and any(type(i) is int for i in items)))
    xv = np.arange(float(np.prod(shape))).reshape(shape)
    try:
        expected = xv[_numpy_index(idx)]
    except IndexError:
        return
    tx = torch.tensor(xv, requires_grad=True)
    tidx = tuple(torch.tensor(i) if isinstance(i, list) else i for i in items)
    ty = tx[tidx if isinstance(idx, tuple) else tidx[0]]
    x = Tensor(xv, requires_grad=True)
    y = x[idx]
    np.testing.assert_array_equal(y.data, ty.detach().numpy())
    np.testing.assert_array_equal(y.data, expected)
    y.sum().backward()
    ty.sum().backward()
    np.testing.assert_array_equal(x.grad, tx.grad.numpy())


# ----- result dtypes ------------------------------------------------------------------------------

DTYPES = {"float16": torch.float16, "float32": torch.float32, "float64": torch.float64}
OPS = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b,
    "r-": lambda a, b: b - a, "r/": lambda a, b: b / a, "**": lambda a, b: a ** b,
}


@settings(max_examples=60, deadline=None, derandomize=True)
@given(dtype=st.sampled_from(sorted(DTYPES)), op=st.sampled_from(sorted(OPS)),
       other=st.sampled_from(["tensor", "int", "float"]))
def test_arithmetic_result_dtypes_match_torch(dtype, op, other):
    av = np.array([1.5, 2.0, 0.75])
    fn = OPS[op]
    a = Tensor(av.astype(dtype), requires_grad=True)
    ta = torch.tensor(av, dtype=DTYPES[dtype], requires_grad=True)
    if other == "tensor":
        b, tb = Tensor(np.array([2.0, 0.5, 1.25], dtype)), torch.tensor([2.0, 0.5, 1.25], dtype=DTYPES[dtype])
    else:
        b = tb = 2 if other == "int" else 0.5
    y, ty = fn(a, b), fn(ta, tb)
    assert str(y.dtype) == str(ty.dtype).replace("torch.", "")
    assert y.dtype == np.dtype(dtype)
    y.sum().backward()
    assert a.grad.dtype == np.dtype(dtype)
    ty.sum().backward()
    tol = {"float16": 2e-3, "float32": 1e-6, "float64": 1e-12}[dtype]
    np.testing.assert_allclose(y.data.astype(np.float64), ty.detach().double().numpy(), rtol=tol)
    np.testing.assert_allclose(a.grad.astype(np.float64), ta.grad.double().numpy(), rtol=4 * tol)


def test_mixed_float_dtypes_are_an_error_not_an_upcast():
    a = Tensor(np.ones(2, np.float16))
    b = Tensor(np.ones(2, np.float32))
    with pytest.raises(ValueError, match="different dtypes"):
        a + b
    assert lamina.ops.cast(a, "float32").dtype == np.float32
