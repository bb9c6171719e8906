"""keras.ops.numpy's array functions (lamina/ops/_np_array.py): values, result dtypes and keyword
calls against real Keras 3 (torch backend), NumPy where Keras's torch backend departs from NumPy's
documented behaviour, and gradients by central differences."""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")
kops = lazy_module("keras.ops")

from lamina import Tensor, ops  # noqa: E402
from lamina.ops import _np_array  # noqa: E402
from lamina.testing import check_grad  # noqa: E402

rng = np.random.default_rng(0)
A = rng.standard_normal((3, 4)).astype("float32")
B = rng.standard_normal((4, 5)).astype("float32")
C = rng.standard_normal((2, 3, 4)).astype("float32")
V = rng.standard_normal(4).astype("float32")
W = rng.standard_normal(4).astype("float32")
V3 = rng.standard_normal((2, 3)).astype("float32")
W3 = rng.standard_normal((2, 3)).astype("float32")
SQ = rng.standard_normal((4, 4)).astype("float32")
I = np.array([[2, 0, 1], [1, 1, 3], [0, 2, 2]], np.int32)
IDX = np.array([[0, 2], [3, 1], [-1, 0]])
SEQ = np.array([0.5, 1.0, 2.0, 4.0], np.float32)


def to_np(y):
    if isinstance(y, (tuple, list)):
        return [to_np(e) for e in y]
    if isinstance(y, Tensor):
        return y.numpy()
    return np.asarray(kops.convert_to_numpy(y)) if not isinstance(y, (int, float)) else np.asarray(y)


# (name, args, kwargs): the same call made on lamina.ops and keras.ops; keyword names are Keras's
CASES = [
    ("reshape", (C,), {"newshape": (4, -1)}),
    ("transpose", (C,), {"axes": (2, 0, 1)}),
    ("transpose", (A,), {}),
    ("squeeze", (A[None, :, None],), {"axis": 2}),
    ("squeeze", (A[None, :, None],), {}),
    ("expand_dims", (A,), {"axis": (0, -1)}),
    ("expand_dims", (A,), {"axis": 1}),
    ("moveaxis", (C,), {"source": (0, 1), "destination": (2, 0)}),
    ("moveaxis", (C,), {"source": -1, "destination": 0}),
    ("swapaxes", (C,), {"axis1": 0, "axis2": 2}),
    ("ravel", (C,), {}),
    ("broadcast_to", (V,), {"shape": (3, 4)}),
    ("concatenate", ([A, A * 2],), {"axis": 1}),
    ("concatenate", ([A, I[:, :1]],), {"axis": -1}),
    ("stack", ([A, A * 2],), {"axis": 1}),
    ("hstack", ([A, A],), {}),
    ("hstack", ([V, W],), {}),
    ("vstack", ([V, W],), {}),
    ("vstack", ([A, A],), {}),
    ("dstack", ([A, A],), {}),
    ("dstack", ([V, W],), {}),
    ("split", (C,), {"indices_or_sections": 2, "axis": 2}),
    ("split", (C,), {"indices_or_sections": [1, 3], "axis": -1}),
    ("array_split", (np.arange(7.0, dtype="float32"),), {"indices_or_sections": 3}),
    ("array_split", (C,), {"indices_or_sections": 3, "axis": 2}),
    ("hsplit", (A,), {"indices_or_sections": 2}),
    ("vsplit", (SQ,), {"indices_or_sections": [1]}),
    ("dsplit", (C,), {"indices_or_sections": 2}),
    ("append", (A, A), {}),
    ("append", (A, A), {"axis": 0}),
    ("tile", (A,), {"repeats": (2, 1, 2)}),
    ("tile", (V,), {"repeats": 2}),
    ("repeat", (A,), {"repeats": 2}),
    ("repeat", (A,), {"repeats": 3, "axis": 0}),
    ("repeat", (A,), {"repeats": np.array([1, 0, 2, 3]), "axis": 1}),
    ("pad", (A,), {"pad_width": ((1, 2), (0, 3))}),
    ("pad", (A,), {"pad_width": ((2, 2), (2, 2)), "constant_values": 1.5}),
    ("pad", (A,), {"pad_width": ((2, 1), (3, 2)), "mode": "reflect"}),
    ("pad", (C,), {"pad_width": ((0, 0), (1, 2), (2, 1)), "mode": "circular"}),
    ("roll", (A,), {"shift": 3}),
    ("roll", (A,), {"shift": -1, "axis": 1}),
    ("roll", (C,), {"shift": (1, 2), "axis": (0, 2)}),
    ("flip", (C,), {}),
    ("flip", (C,), {"axis": (0, 2)}),
    ("fliplr", (A,), {}),
    ("flipud", (A,), {}),
    ("rot90", (A,), {}),
    ("rot90", (C,), {"k": 3, "axes": (2, 1)}),
    ("rot90", (A,), {"k": -2}),
    ("take", (A,), {"indices": IDX % 12}),
    ("take", (A,), {"indices": IDX, "axis": 1}),
    ("take", (C,), {"indices": [1, 1, -1], "axis": 2}),
    ("take_along_axis", (A,), {"indices": np.array([[0, 2, 1, 1], [2, 2, -1, 0]]), "axis": 0}),
    ("take_along_axis", (A,), {"indices": np.argsort(A, axis=1), "axis": 1}),
    ("where", (A > 0, A, -A), {}),
    ("where", (A > 0,), {"x1": A, "x2": 0.5}),
    ("where", (A > 0,), {}),
    ("where", (I > 1, I, 0), {}),
    ("select", ([A > 0.5, A < -0.5], [A, A * 3]), {"default": -1.0}),
    ("unique", (np.array([3, 1, 2, 3, 1, 5], np.int32),), {}),
    ("unique", (np.array([3, 1, 2, 3, 1, 5], np.int32),), {"return_inverse": True, "return_counts": True}),
    ("unique", (np.array([3, 1, 2, 3, 1, 5], np.int32),), {"size": 6, "fill_value": 9}),
    ("unique", (np.array([[1, 2], [1, 2], [0, 5]], np.int32),), {"axis": 0}),
    ("searchsorted", (SEQ, np.array([0.1, 1.0, 3.0, 9.0], np.float32)), {}),
    ("searchsorted", (SEQ,), {"values": np.array([0.1, 1.0, 3.0, 9.0], np.float32), "side": "right"}),
    ("digitize", (np.array([0.2, 1.0, 2.5, 7.0], np.float32),), {"bins": SEQ}),
    ("argsort", (A,), {}),
    ("argsort", (A,), {"axis": 0}),
    ("argsort", (np.array([3, 1, 3, 1, 2], np.int32),), {"axis": None}),
    ("sort", (A,), {}),
    ("sort", (C,), {"axis": 1}),
    ("sort", (A,), {"axis": None}),
    ("isin", (I,), {"x2": np.array([1, 3], np.int32)}),
    ("isin", (I, np.array([1, 3], np.int32)), {"invert": True}),
    ("matmul", (A, B), {}),
    ("matmul", (C,), {"x2": B}),
    ("matmul", (V, B), {}),
    ("matmul", (I, I), {}),
    ("dot", (A, B), {}),
    ("dot", (V,), {"x2": W}),
    ("dot", (A, 2.0), {}),
    ("vdot", (V, W), {}),
    ("inner", (A, A), {}),
    ("inner", (C, V), {}),
    ("outer", (V, A[0]), {}),
    ("tensordot", (C, B), {"axes": 1}),
    ("tensordot", (C, A), {"axes": ([1, 2], [0, 1])}),
    ("tensordot", (A, A), {"axes": 2}),
    ("einsum", ("ij,jk->ik", A, B), {}),
    ("einsum", ("bij,jk->bik", C, B), {}),
    ("einsum", ("ii->i", SQ), {}),
    ("einsum", ("...j,j", C, V), {}),
    ("einsum", ("ij,ij->", A, A), {}),
    ("kron", (A[:2, :2], SQ[:2, :3]), {}),
    ("kron", (V, A), {}),
    ("cross", (V3, W3), {}),
    ("cross", (V3.T, W3.T), {"axis": 0}),
    ("trace", (SQ,), {}),
    ("trace", (C,), {"offset": 1, "axis1": 1, "axis2": 2}),
    ("diag", (V,), {}),
    ("diag", (V,), {"k": -2}),
    ("diag", (A,), {"k": 1}),
    ("diagflat", (A[:2, :2],), {"k": 1}),
    ("diagonal", (C,), {"offset": -1, "axis1": 1, "axis2": 2}),
    ("diagonal", (A,), {}),
    ("tril", (A,), {}),
    ("tril", (C,), {"k": -1}),
    ("triu", (A,), {"k": 1}),
    ("unravel_index", (np.array([1, 7, 11], np.int32), (3, 4)), {}),
    ("copy", (A,), {}),
    ("view", (A,), {"dtype": "int32"}),
    ("ndim", (C,), {}),
    ("size", (C,), {}),
]


def _ids():
    return [f"{i}-{c[0]}" for i, c in enumerate(CASES)]


@pytest.mark.parametrize("name,args,kwargs", CASES, ids=_ids())
def test_value_and_dtype_match_keras(name, args, kwargs):
    got = getattr(ops, name)(*args, **kwargs)
    want = getattr(kops, name)(*args, **kwargs)
    g, w = to_np(got), to_np(want)
    if isinstance(w, list):
        assert isinstance(g, list) and len(g) == len(w), name
    else:
        g, w = [g], [w]
    for gi, wi in zip(g, w):
        assert gi.shape == wi.shape, (name, gi.shape, wi.shape)
        assert str(gi.dtype) == str(wi.dtype), (name, gi.dtype, wi.dtype)
        np.testing.assert_allclose(gi.astype(np.float64), wi.astype(np.float64), rtol=1e-5, atol=1e-5,
                                   err_msg=name)


def test_every_name_is_public_with_keras_signature():
    import inspect
    import json
    from pathlib import Path
    sigs = json.loads((Path(__file__).parent / "data" / "keras_ops_signatures.json").read_text())["numpy"]
    for name in _np_array.__all__:
        # the public name is the function itself behind the check for symbolic tensors (lamina/ops/__init__.py)
        assert callable(getattr(ops, name)) and getattr(ops, name).__wrapped__ is getattr(_np_array, name), name
        assert getattr(ops.numpy, name) is getattr(ops, name)
        assert str(inspect.signature(getattr(_np_array, name))) == sigs[name], name
        assert (getattr(_np_array, name).__doc__ or "").strip(), name
    assert len(_np_array.__all__) == 61


# ------------------------------------------------------------------------------------- dtype tables

DTYPES = ["bool", "int8", "int32", "int64", "float16", "float32", "float64"]


def _x(dt, shape=(3, 3)):
    return (np.arange(int(np.prod(shape))).reshape(shape) % 3).astype(dt)


DTYPE_OPS = {
    "reshape": lambda m, a: m.reshape(a, (9,)),
    "concatenate": lambda m, a: m.concatenate([a, a]),
    "pad": lambda m, a: m.pad(a, 1),
    "repeat": lambda m, a: m.repeat(a, 2),
    "roll": lambda m, a: m.roll(a, 1),
    "take": lambda m, a: m.take(a, [0, 2]),
    "sort": lambda m, a: m.sort(a),
    "argsort": lambda m, a: m.argsort(a),
    "argpartition": lambda m, a: m.argpartition(a, 1),
    "trace": lambda m, a: m.trace(a),
    "diagonal": lambda m, a: m.diagonal(a),
    "tril": lambda m, a: m.tril(a),
    "kron": lambda m, a: m.kron(a, a),
    "outer": lambda m, a: m.outer(a, a),
    "matmul": lambda m, a: m.matmul(a, a),
    "dot": lambda m, a: m.dot(a, a),
    "inner": lambda m, a: m.inner(a, a),
    "tensordot": lambda m, a: m.tensordot(a, a, 1),
    "einsum": lambda m, a: m.einsum("ij,jk->ik", a, a),
    "nonzero": lambda m, a: m.nonzero(a)[0],
    "where1": lambda m, a: m.where(a),
    "where3": lambda m, a: m.where(a, a, 0),
    "select": lambda m, a: m.select([a], [a]),
    "digitize": lambda m, a: m.digitize(a, [1, 2]),
    "isin": lambda m, a: m.isin(a, a),
    "unique": lambda m, a: m.unique(a),
    "copy": lambda m, a: m.copy(a),
    "rot90": lambda m, a: m.rot90(a),
    "cross": lambda m, a: m.cross(a, a),
}
# Keras narrows a float64 product to float32; lamina keeps float64 (see _np_array's docstring)
KEEPS_FLOAT64 = {"matmul", "dot", "inner", "tensordot", "cross"}


@pytest.mark.parametrize("op", sorted(DTYPE_OPS))
def test_result_dtypes_match_keras(op):
    f = DTYPE_OPS[op]
    for dt in DTYPES:
        try:
            want = str(to_np(f(kops, _x(dt))).dtype)
        except Exception:  # Keras's torch backend has no kernel for this dtype: nothing to match
            continue
        got = str(to_np(f(ops, _x(dt))).dtype)
        if op in KEEPS_FLOAT64 and dt == "float64":
            want = "float64"
        assert got == want, (op, dt, got, want)


def test_mixed_dtypes_promote_like_keras():
    pairs = [("int32", "float16"), ("int8", "int32"), ("bool", "int32"), ("float16", "float32"), ("int8", "int8")]
    for d1, d2 in pairs:
        a, b = _x(d1), _x(d2)
        for name in ("matmul", "concatenate", "tensordot", "outer", "einsum", "where"):
            call = {"concatenate": lambda m: m.concatenate([a, b]),
                    "einsum": lambda m: m.einsum("ij,jk", a, b),
                    "where": lambda m: m.where(a > 0, a, b)}.get(name, lambda m: getattr(m, name)(a, b))
            got = call(ops)
            try:
                want = call(kops)
            except RuntimeError:  # no torch kernel for this pair
                continue
            assert str(to_np(got).dtype) == str(to_np(want).dtype), (name, d1, d2)


def test_python_inputs_convert_like_keras():
    assert ops.reshape([1, 2, 3, 4], (2, 2)).dtype == np.int32
    assert ops.reshape([1.0, 2.0], (2, 1)).dtype == np.float32
    assert ops.where([True, False], 1, 2.5).dtype == kops.convert_to_numpy(kops.where([True, False], 1, 2.5)).dtype
    assert ops.ndim([[1, 2]]) == 2 and int(ops.size(np.zeros((2, 3)))) == 6


# ---------------------------------------------------------------- where Keras's torch backend departs

def test_numpy_semantics_where_keras_torch_differs():
    # nonzero: NumPy's tuple, one int32 index tensor per axis (Keras's torch backend stacks them)
    nz = ops.nonzero(I)
    assert isinstance(nz, tuple) and all(t.dtype == np.int32 for t in nz)
    np.testing.assert_array_equal(np.stack([t.numpy() for t in nz]), to_np(kops.nonzero(I)))
    # an int pad_width pads every axis (Keras's torch backend pads only the last)
    np.testing.assert_array_equal(ops.pad(A, 2, constant_values=1.5).numpy(), np.pad(A, 2, constant_values=1.5))
    # take with axis=None counts negative indices from the end of the flattened tensor
    np.testing.assert_array_equal(ops.take(A, IDX).numpy(), np.take(A, IDX))
    # dot of N-D operands: NumPy's (sum over x1's last axis and x2's second-to-last), as JAX/TF give
    x, y = rng.standard_normal((2, 3, 4)), rng.standard_normal((5, 4, 2))
    np.testing.assert_allclose(ops.dot(x, y).numpy(), np.dot(x, y), rtol=1e-12)
    # pad "symmetric" is NumPy's (edge repeated), and the modes Keras's torch backend lacks
    for mode in ("symmetric", "edge", "wrap", "reflect", "maximum", "mean", "minimum", "median", "linear_ramp"):
        np.testing.assert_allclose(ops.pad(A, ((2, 3), (4, 1)), mode=mode).numpy(),
                                   np.pad(A, ((2, 3), (4, 1)), mode=mode), rtol=1e-6, atol=1e-6, err_msg=mode)
        np.testing.assert_array_equal(ops.pad(I, ((1, 2), (0, 3)), mode=mode).numpy(),
                                      np.pad(I, ((1, 2), (0, 3)), mode=mode), err_msg=mode)
        np.testing.assert_allclose(ops.pad(C[:, :, :3], ((1, 0), (2, 2), (0, 1)), mode=mode).numpy(),
                                   np.pad(C[:, :, :3], ((1, 0), (2, 2), (0, 1)), mode=mode), rtol=1e-6, atol=1e-6)
    # cross with axisa/axisb/axisc and 2-vectors
    a, b = rng.standard_normal((3, 5)), rng.standard_normal((5, 3))
    np.testing.assert_allclose(ops.cross(a, b, axisa=0, axisb=1, axisc=0).numpy(),
                               np.cross(a, b, axisa=0, axisb=1, axisc=0), rtol=1e-12)
    a2, b2 = rng.standard_normal((4, 2)), rng.standard_normal((4, 2))
    np.testing.assert_allclose(ops.cross(a2, b2).numpy(), np.cross(a2, b2), rtol=1e-12)
    np.testing.assert_allclose(ops.cross(a2, np.ones((4, 3))).numpy(), np.cross(a2, np.ones((4, 3))), rtol=1e-12)
    np.testing.assert_allclose(ops.cross(np.ones((4, 3)), a2).numpy(), np.cross(np.ones((4, 3)), a2), rtol=1e-12)
    # vdot flattens N-D operands
    np.testing.assert_allclose(float(ops.vdot(x, x)), np.vdot(x, x), rtol=1e-12)
    # argpartition: the kth element in place, smaller before, larger after
    x = rng.standard_normal((4, 9))
    p = ops.argpartition(x, 3, axis=1).numpy()
    part = np.take_along_axis(x, p, axis=1)
    np.testing.assert_array_equal(part[:, 3], np.sort(x, axis=1)[:, 3])
    assert (part[:, :3] <= part[:, 3:4]).all() and (part[:, 4:] >= part[:, 3:4]).all()
    assert sorted(p[0].tolist()) == list(range(9))
    # unique with return_index; get_item with masks and slices
    u, idx = ops.unique(np.array([4, 1, 4, 2, 1]), return_index=True)
    np.testing.assert_array_equal(idx.numpy(), [1, 3, 0])
    np.testing.assert_array_equal(ops.get_item(A, A > 0).numpy(), A[A > 0])
    np.testing.assert_array_equal(ops.get_item(C, (slice(None), 1, [0, 2])).numpy(), C[:, 1, [0, 2]])
    np.testing.assert_array_equal(ops.get_item(x=A, key=(Ellipsis, 2)).numpy(), A[..., 2])


def test_vectorize_elementwise_and_with_signature():
    f = ops.vectorize(lambda a, b: a * 2 + b)
    np.testing.assert_allclose(f(A, V).numpy(), A * 2 + V, rtol=1e-6)
    rowdot = ops.vectorize(lambda a, b: ops.sum(a * b), signature="(n),(n)->()")
    np.testing.assert_allclose(rowdot(C, V).numpy(), np.einsum("bij,j->bi", C, V), rtol=1e-5)
    want = kops.vectorize(lambda a, b: kops.sum(a * b), signature="(n),(n)->()")(C, V)
    np.testing.assert_allclose(rowdot(C, V).numpy(), to_np(want), rtol=1e-5)
    check_grad(lambda a, b: rowdot(a, b), C[0].astype(np.float64), V.astype(np.float64))


def test_errors():
    with pytest.raises(ValueError, match="constant_values"):
        ops.pad(A, 1, mode="reflect", constant_values=1)
    with pytest.raises(ValueError, match="1-D"):
        ops.searchsorted(A, V)
    with pytest.raises(ValueError):
        ops.split(np.arange(5), 2)
    with pytest.raises(ValueError):
        ops.squeeze(A, axis=0)
    with pytest.raises(ValueError, match="2 dimensions"):
        ops.rot90(V)
    with pytest.raises(ValueError):
        ops.where(A > 0, A)


# ------------------------------------------------------------------------------------------ gradients

def f64(*xs):
    return [np.ascontiguousarray(x, np.float64) for x in xs]


GRADS = [
    ("reshape", lambda x: ops.reshape(x, (4, -1)), f64(C)),
    ("transpose", lambda x: ops.transpose(x, (1, 2, 0)), f64(C)),
    ("squeeze", lambda x: ops.squeeze(x, 0), f64(A[None])),
    ("expand_dims", lambda x: ops.expand_dims(x, (0, 2)), f64(A)),
    ("moveaxis", lambda x: ops.moveaxis(x, 0, -1), f64(C)),
    ("swapaxes", lambda x: ops.swapaxes(x, 0, 1), f64(A)),
    ("ravel", ops.ravel, f64(A)),
    ("broadcast_to", lambda x: ops.broadcast_to(x, (2, 3, 4)), f64(V)),
    ("concatenate", lambda a, b: ops.concatenate([a, b], axis=1), f64(A, A[:, :2])),
    ("stack", lambda a, b: ops.stack([a, b], axis=2), f64(A, A)),
    ("hstack", lambda a, b: ops.hstack([a, b]), f64(V, W)),
    ("vstack", lambda a, b: ops.vstack([a, b]), f64(V, W)),
    ("dstack", lambda a, b: ops.dstack([a, b]), f64(A, A)),
    ("split", lambda x: ops.split(x, [1, 3], axis=1)[1] * 2, f64(A)),
    ("array_split", lambda x: ops.array_split(x, 3, axis=1)[0], f64(A)),
    ("hsplit", lambda x: ops.hsplit(x, 2)[1], f64(A)),
    ("vsplit", lambda x: ops.vsplit(x, 2)[1], f64(SQ)),
    ("dsplit", lambda x: ops.dsplit(x, 2)[0], f64(C)),
    ("append", lambda a, b: ops.append(a, b), f64(A, V)),
    ("tile", lambda x: ops.tile(x, (2, 1, 3)), f64(A)),
    ("repeat", lambda x: ops.repeat(x, 2), f64(A)),
    ("repeat_each", lambda x: ops.repeat(x, [2, 0, 1, 3], axis=1), f64(A)),
    ("pad", lambda x: ops.pad(x, ((1, 0), (2, 1)), constant_values=3.0), f64(A)),
    ("pad_reflect", lambda x: ops.pad(x, ((2, 2), (3, 1)), mode="reflect"), f64(A)),
    ("pad_symmetric", lambda x: ops.pad(x, ((4, 1), (0, 5)), mode="symmetric"), f64(A)),
    ("pad_edge", lambda x: ops.pad(x, 2, mode="edge"), f64(A)),
    ("pad_wrap", lambda x: ops.pad(x, ((1, 5), (2, 0)), mode="wrap"), f64(A)),
    ("pad_maximum", lambda x: ops.pad(x, ((1, 2), (2, 1)), mode="maximum"), f64(A)),
    ("pad_minimum", lambda x: ops.pad(x, ((0, 2), (1, 0)), mode="minimum"), f64(A)),
    ("pad_mean", lambda x: ops.pad(x, ((2, 1), (1, 3)), mode="mean"), f64(A)),
    ("pad_median", lambda x: ops.pad(x, ((1, 1), (2, 1)), mode="median"), f64(A)),
    ("pad_median_odd", lambda x: ops.pad(x, ((0, 0), (2, 1)), mode="median"), f64(A[:, :3])),
    ("pad_linear_ramp", lambda x: ops.pad(x, ((3, 2), (1, 2)), mode="linear_ramp"), f64(A)),
    ("roll", lambda x: ops.roll(x, (1, -2), axis=(0, 1)), f64(A)),
    ("roll_flat", lambda x: ops.roll(x, 5), f64(A)),
    ("flip", lambda x: ops.flip(x, 1), f64(C)),
    ("fliplr", ops.fliplr, f64(A)),
    ("flipud", ops.flipud, f64(A)),
    ("rot90", lambda x: ops.rot90(x, 3, axes=(1, 2)), f64(C)),
    ("take", lambda x: ops.take(x, [[0, 2], [2, 2]], axis=1), f64(A)),
    ("take_flat", lambda x: ops.take(x, [0, 5, 5, -1]), f64(A)),
    ("take_along_axis", lambda x: ops.take_along_axis(x, np.array([[0, 3, 3], [1, 1, 2], [2, 0, 0]]), axis=1),
     f64(A)),
    ("take_along_axis_bcast", lambda x: ops.take_along_axis(x, np.array([[0], [1], [1]]), axis=1), f64(A)),
    ("get_item", lambda x: ops.get_item(x, (slice(1, None), [0, 0, 3])), f64(A)),
    ("where", lambda a, b: ops.where(A > 0, a, b), f64(A, V)),
    ("select", lambda a, b: ops.select([A > 0.5, A < 0], [a, b], default=1.0), f64(A, A * 2)),
    ("sort", lambda x: ops.sort(x, axis=0), f64(A)),
    ("sort_flat", lambda x: ops.sort(x, axis=None), f64(A)),
    ("matmul", ops.matmul, f64(C, B)),
    ("matmul_vec", ops.matmul, f64(V, B)),
    ("dot", ops.dot, f64(A, B)),
    ("dot_nd", ops.dot, f64(C, rng.standard_normal((2, 4, 3)))),
    ("vdot", ops.vdot, f64(A, A * 2)),
    ("inner", ops.inner, f64(C, A)),
    ("outer", ops.outer, f64(V, W)),
    ("tensordot", lambda a, b: ops.tensordot(a, b, axes=([0, 2], [1, 0])), f64(C, rng.standard_normal((4, 2, 5)))),
    ("einsum", lambda a, b: ops.einsum("bij,jk->bki", a, b), f64(C, B)),
    ("einsum_diag", lambda a: ops.einsum("ii->i", a), f64(SQ)),
    ("einsum_trace_sum", lambda a, b: ops.einsum("ii,jk->k", a, b), f64(SQ, B)),
    ("einsum_ellipsis_bcast", lambda a, b: ops.einsum("...ij,...jk", a, b), f64(C[:1], rng.standard_normal((3, 4, 2)))),
    ("einsum_three", lambda a, b, c: ops.einsum("ij,jk,kl->il", a, b, c), f64(A, B, rng.standard_normal((5, 2)))),
    ("einsum_bcast_both", lambda a, b: ops.einsum("...i,...i->...", a, b),
     f64(rng.standard_normal((1, 3, 4)), rng.standard_normal((2, 1, 4)))),
    ("einsum_transpose_sumout", lambda a: ops.einsum("ijk->ki", a), f64(C)),
    ("einsum_implicit_outer", lambda a, b: ops.einsum("i,j", a, b), f64(V, W)),
    ("einsum_repeated_twice", lambda a: ops.einsum("iij->j", a), f64(rng.standard_normal((3, 3, 2)))),
    ("kron", ops.kron, f64(A[:2, :3], SQ[:2, :2])),
    ("cross", ops.cross, f64(V3, W3)),
    ("cross_axes", lambda a, b: ops.cross(a, b, axisa=0, axisb=0, axisc=0), f64(V3.T, W3.T)),
    ("trace", lambda x: ops.trace(x, offset=1, axis1=2, axis2=1), f64(C)),
    ("diag", lambda x: ops.diag(x, k=1), f64(V)),
    ("diag_2d", lambda x: ops.diag(x, k=-1), f64(A)),
    ("diagflat", lambda x: ops.diagflat(x, -2), f64(A[:2, :2])),
    ("diagonal", lambda x: ops.diagonal(x, 1, 0, 2), f64(C)),
    ("tril", lambda x: ops.tril(x, -1), f64(C)),
    ("triu", ops.triu, f64(A)),
    ("copy", ops.copy, f64(A)),
    ("view", ops.view, f64(A)),
]


@pytest.mark.parametrize("name,fn,inputs", GRADS, ids=[g[0] for g in GRADS])
def test_gradients(name, fn, inputs):
    check_grad(fn, *inputs, name=name)


def test_gradients_match_torch_through_keras():
    import torch
    # sort's and take_along_axis's scatter against torch autograd through keras.ops
    for name, call in [("sort", lambda m, x: m.sort(x, axis=0)),
                       ("take_along_axis", lambda m, x: m.take_along_axis(x, np.array([[0, 0, 3]]), axis=1)),
                       ("einsum", lambda m, x: m.einsum("ij,kj->ik", x, x)),
                       ("pad", lambda m, x: m.pad(x, ((1, 2), (2, 1)), mode="reflect"))]:
        x = A.astype(np.float64)
        gy = rng.standard_normal(to_np(call(np, x) if name != "take_along_axis" else call(kops, x)).shape)
        tx = torch.tensor(x, requires_grad=True)
        (call(kops, tx) * torch.tensor(gy)).sum().backward()
        lx = Tensor(x, requires_grad=True)
        (call(ops, lx) * Tensor(gy)).sum().backward()
        np.testing.assert_allclose(lx.grad, tx.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


def test_layers_keep_the_kernel_calling_conventions():
    # positional calls lamina's own modules make must keep their meaning under the Keras names
    x = Tensor(A)
    np.testing.assert_array_equal(ops.pad(x, ((0, 1), (1, 0)), constant_values=2.0).numpy(),
                                  np.pad(A, ((0, 1), (1, 0)), constant_values=2.0))
    np.testing.assert_array_equal(ops.repeat(x, 2, axis=1).numpy(), np.repeat(A, 2, axis=1))
    np.testing.assert_array_equal(ops.stack([x, x], axis=1).numpy(), np.stack([A, A], 1))
    assert ops.reshape(x, (4, 3)).shape == (4, 3) and ops.squeeze(x[None], 0).shape == (3, 4)
    m = Tensor(A > 0)
    np.testing.assert_array_equal(ops.where(m, x, 0.0).numpy(), np.where(A > 0, A, 0))
    y = ops.matmul(x, Tensor(B))
    assert y.dtype == np.float32


# ------------------------------------------------------------------------------------------ device

DEVICE_FNS = {
    "gather": lambda x: ops.take(x, np.array([2, 0, 2]), axis=1) + ops.take_along_axis(x, np.array([[1, 1, 0]]), 1)
    + ops.get_item(x, (slice(None), [0, 0, 1])),
    "sort_roll_flip": lambda x: ops.sort(x, axis=0) + ops.roll(x, 1) + ops.flip(x) + ops.rot90(ops.rot90(x, 2)),
    "pad_repeat": lambda x: ops.pad(x, ((1, 1), (2, 0)), mode="reflect")[:3, :3] + ops.pad(x, 1)[1:4, :3]
    + ops.repeat(x, [1, 2, 0], axis=1)[:, :3] + ops.pad(x, 1, mode="median")[:3, 2:] + ops.pad(x, 1, mode="mean")[2:, :3]
    + ops.pad(x, 2, mode="linear_ramp")[:3, 1:4] + ops.pad(x, 1, mode="maximum")[1:4, :3],
    "products": lambda x: ops.einsum("ij,kj->ik", x, x) + ops.tensordot(x, x, ([1], [1])) + ops.dot(x, ops.transpose(x))
    + ops.inner(x, x) + ops.matmul(x, ops.moveaxis(x, 0, 1)) + ops.outer(x[0], x[1]),
    "kron_cross": lambda x: ops.kron(x[:1, :2], x[1:2, :1]) + ops.cross(x, x[::-1])[:1, :2],
    "triangles_diagonals": lambda x: ops.tril(x) + ops.triu(x, 1) + ops.diag(ops.diagonal(x)) + ops.trace(x)
    + ops.diagflat(x[0]) + ops.copy(x),
    "where_select_joins": lambda x: ops.where(x > 0, x, x * 2) + ops.select([x > 0.5], [x], 1.0)
    + ops.vstack([x[:1], x[1:]]) + ops.hstack(ops.hsplit(x, 3)) + ops.append(x[:2], x[2:], axis=0),
}


@pytest.mark.parametrize("name", sorted(DEVICE_FNS))
def test_device_path_matches_cpu(name, device_xp):
    from lamina import backend
    fn = DEVICE_FNS[name]
    x = rng.standard_normal((3, 3)).astype(np.float32)
    results = []
    for xp in (np, device_xp):
        t = Tensor(backend.to_device(x, xp), requires_grad=True)
        y = fn(t)
        y.backward(backend.to_device(np.ones(y.shape, np.float32), xp))
        assert backend.get_array_module(y.data) is xp and backend.get_array_module(t.grad) is xp
        results.append((backend.to_numpy(y.data), backend.to_numpy(t.grad)))
    for a, b in zip(*results):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5, err_msg=name)
    # the integer-valued functions give device tensors too
    d = Tensor(backend.to_device(x, device_xp))
    for out in (ops.argsort(d), ops.nonzero(d > 0)[0], ops.unique(d), ops.searchsorted(ops.sort(d[0]), d[1]),
                ops.digitize(d, ops.sort(d[0])), ops.isin(d, d[0]), ops.where(d > 0), ops.argpartition(d, 1),
                ops.size(d)):
        assert backend.get_array_module(out.data) is device_xp


# ----------------------------------------------------------------------------- keyword calls, all 61

KEYWORD_CALLS = {
    "append": {"x1": A, "x2": V, "axis": None},
    "argpartition": {"x": V, "kth": 2, "axis": -1},
    "argsort": {"x": A, "axis": 0},
    "array_split": {"x": A, "indices_or_sections": 3, "axis": 1},
    "broadcast_to": {"x": V, "shape": (2, 4)},
    "concatenate": {"xs": [A, A], "axis": 0},
    "copy": {"x": A},
    "cross": {"x1": V3, "x2": W3, "axisa": -1, "axisb": -1, "axisc": -1, "axis": None},
    "diag": {"x": V, "k": 1},
    "diagflat": {"x": A[:2, :2], "k": -1},
    "diagonal": {"x": C, "offset": 1, "axis1": 1, "axis2": 2},
    "digitize": {"x": A, "bins": SEQ},
    "dot": {"x1": A, "x2": B},
    "dsplit": {"x": C, "indices_or_sections": [1]},
    "dstack": {"xs": [A, A]},
    "expand_dims": {"x": A, "axis": -1},
    "flip": {"x": A, "axis": 1},
    "fliplr": {"x": A},
    "flipud": {"x": A},
    "get_item": {"x": A, "key": 1},
    "hsplit": {"x": A, "indices_or_sections": 2},
    "hstack": {"xs": [A, A]},
    "inner": {"x1": A, "x2": A},
    "isin": {"x1": I, "x2": np.array([2], np.int32), "assume_unique": False, "invert": False},
    "kron": {"x1": V, "x2": W},
    "matmul": {"x1": A, "x2": B},
    "moveaxis": {"x": C, "source": 0, "destination": -1},
    "ndim": {"x": C},
    "outer": {"x1": V, "x2": W},
    "pad": {"x": A, "pad_width": ((1, 1), (2, 2)), "mode": "constant", "constant_values": 2.0},
    "ravel": {"x": A},
    "repeat": {"x": A, "repeats": 2, "axis": 0},
    "reshape": {"x": A, "newshape": (2, 6)},
    "roll": {"x": A, "shift": 2, "axis": 0},
    "rot90": {"array": A, "k": 1, "axes": (0, 1)},
    "searchsorted": {"sorted_sequence": SEQ, "values": V, "side": "right"},
    "select": {"condlist": [A > 0], "choicelist": [A], "default": 0.0},
    "size": {"x": A},
    "sort": {"x": A, "axis": 0},
    "split": {"x": A, "indices_or_sections": 2, "axis": 1},
    "squeeze": {"x": A[None], "axis": 0},
    "stack": {"x": [A, A], "axis": -1},
    "swapaxes": {"x": C, "axis1": 0, "axis2": -1},
    "take": {"x": A, "indices": [0, 2], "axis": 1},
    "take_along_axis": {"x": A, "indices": np.array([[0], [2], [1]]), "axis": 1},
    "tensordot": {"x1": A, "x2": B, "axes": 1},
    "tile": {"x": V, "repeats": (2, 2)},
    "trace": {"x": SQ, "offset": -1, "axis1": 0, "axis2": 1},
    "transpose": {"x": C, "axes": (1, 0, 2)},
    "tril": {"x": A, "k": 1},
    "triu": {"x": A, "k": -1},
    "unique": {"x": I, "sorted": True, "return_index": False, "return_inverse": False, "return_counts": True,
               "axis": None, "size": None, "fill_value": None},
    "unravel_index": {"indices": np.array([3, 5], np.int32), "shape": (2, 3)},
    "vdot": {"x1": V, "x2": W},
    "view": {"x": A, "dtype": None},
    "vsplit": {"x": SQ, "indices_or_sections": 2},
    "vstack": {"xs": [V, W]},
    "where": {"condition": A > 0, "x1": A, "x2": -A},
}


def test_every_function_takes_keras_keywords():
    assert set(KEYWORD_CALLS) | {"einsum", "vectorize", "nonzero"} == set(_np_array.__all__)
    for name, kwargs in KEYWORD_CALLS.items():
        g, w = to_np(getattr(ops, name)(**kwargs)), to_np(getattr(kops, name)(**kwargs))
        g, w = (g, w) if isinstance(w, list) else ([g], [w])
        for gi, wi in zip(g, w):
            np.testing.assert_allclose(gi.astype(np.float64), wi.astype(np.float64), rtol=1e-5, atol=1e-6,
                                       err_msg=name)
            assert str(gi.dtype) == str(wi.dtype), name
    np.testing.assert_allclose(ops.einsum("ij,jk->ik", A, B, optimize=True).numpy(), A @ B, rtol=1e-5)
    np.testing.assert_allclose(ops.nonzero(x=I)[1].numpy(), np.nonzero(I)[1])
    f = ops.vectorize(pyfunc=lambda a, s: a * s, excluded={1}, signature=None)
    np.testing.assert_allclose(f(A, 3.0).numpy(), A * 3)


def _float_first(case):
    name, args, kwargs = case
    first = args[0] if args else next(iter(kwargs.values()))
    return isinstance(first, np.ndarray) and first.dtype == np.float32 and name not in (
        "argsort", "argpartition", "searchsorted", "digitize", "view", "ndim", "size", "where", "unique")


GRAD_CASES = [c for c in CASES if _float_first(c)]


@pytest.mark.parametrize("name,args,kwargs", GRAD_CASES, ids=[f"{i}-{c[0]}" for i, c in enumerate(GRAD_CASES)])
def test_gradient_of_first_input_matches_torch_autograd(name, args, kwargs):
    """The gradient reaching the first argument, against torch autograd through keras.ops (float64)."""
    import torch
    x = np.ascontiguousarray(args[0] if args else kwargs[next(iter(kwargs))], np.float64)
    rest = [np.asarray(a, np.float64) if isinstance(a, np.ndarray) and a.dtype == np.float32 else a for a in args[1:]]
    kw = {k: (np.asarray(v, np.float64) if isinstance(v, np.ndarray) and v.dtype == np.float32 else v)
          for k, v in kwargs.items()}

    def run(mod, t):
        y = getattr(mod, name)(t, *rest, **kw) if args else getattr(mod, name)(**{**kw, next(iter(kwargs)): t})
        return list(y) if isinstance(y, (list, tuple)) else [y]

    tx = torch.tensor(x, requires_grad=True)
    ys = run(kops, tx)
    gys = [rng.standard_normal(tuple(y.shape)) for y in ys]
    sum((y * torch.tensor(g)).sum() for y, g in zip(ys, gys)).backward()
    lx = Tensor(x, requires_grad=True)
    sum((y * Tensor(g)).sum() for y, g in zip(run(ops, lx), gys)).backward()
    tol = 1e-5 if name in KEEPS_FLOAT64 | {"vdot"} else 1e-9  # Keras computes these in float32
    np.testing.assert_allclose(lx.grad, tx.grad.numpy(), rtol=tol, atol=tol * 1e-3, err_msg=name)


def test_einsum_results_come_back_contiguous_and_equal():
    """A two-operand einsum whose BLAS route NumPy hands back in a transposed layout (EinsumDense's input gradient,
    'abd,cd->abc') is computed with the operands swapped, which comes back C-contiguous (no strided reads or copy
    later): the same values as np.einsum, and the same bits on the next call (the order remembered)."""
    from lamina import grad
    r = np.random.default_rng(3)
    x = r.standard_normal((4, 6, 8)).astype(np.float32)
    w = r.standard_normal((8, 16)).astype(np.float32)
    gy = r.standard_normal((4, 6, 16)).astype(np.float32)
    got = []
    for _ in range(2):
        xt, wt = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
        y = ops.einsum("abc,cd->abd", xt, wt)
        gx, gw = grad(y, [xt, wt], grad_output=Tensor(gy))
        got.append((np.asarray(y.data), np.asarray(gx.data), np.asarray(gw.data)))
        assert all(a.flags.c_contiguous for a in got[-1])
    np.testing.assert_allclose(got[0][0], np.einsum("abc,cd->abd", x, w), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[0][1], np.einsum("abd,cd->abc", gy, w), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got[0][2], np.einsum("abc,abd->cd", x, gy), rtol=1e-5, atol=1e-5)
    for a, b in zip(*got):
        np.testing.assert_array_equal(a, b)
    for _ in range(2):   # the forward of the gradient's own form: NumPy's order gives strides (24, 4, 96) here
        z = ops.einsum("abd,cd->abc", gy, w)
        assert z.data.flags.c_contiguous
        np.testing.assert_allclose(np.asarray(z.data), np.einsum("abd,cd->abc", gy, w), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_take_along_axis_gradient_adds_repeated_and_negative_positions(axis):
    """take_along_axis's gradient (one flat add.at over the flat gradient): every gathered position gets the sum of
    its gradients, repeated positions adding up and negative ones counting from the end, as np.add.at's."""
    from lamina import grad
    r = np.random.default_rng(5)
    x = r.standard_normal((4, 5, 6)).astype(np.float32)
    shape = list(x.shape)
    shape[axis] = 7
    n = x.shape[axis]
    idx = r.integers(-n, n, shape)
    gy = r.standard_normal(shape).astype(np.float32)
    t = Tensor(x, requires_grad=True)
    (g,) = grad(ops.take_along_axis(t, idx, axis=axis), [t], grad_output=Tensor(gy))
    want = np.zeros_like(x)
    ax = axis % 3
    pos = [np.arange(s).reshape([-1 if d == k else 1 for d in range(3)]) for k, s in enumerate(shape)]
    pos[ax] = idx % n
    np.add.at(want, tuple(np.broadcast_to(p, shape) for p in pos), gy)
    np.testing.assert_allclose(np.asarray(g.data), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape,make", [
    ((64, 18), lambda r: (np.arange(64), r.integers(0, 18, 64))),                      # a DQN's q[arange(n), actions]
    ((20, 30, 5), lambda r: (r.integers(-20, 20, (7, 1)), r.integers(0, 30, (1, 4)))),  # broadcast, negative, rows
    ((40, 8), lambda r: (r.integers(0, 40, 500), r.integers(-8, 8, 500)))])             # many repeats
def test_getitem_with_several_index_arrays_gradient_equals_add_at(shape, make):
    """x[rows, cols] backward through one flat index: np.add.at's values over the tuple of index arrays, to the
    bit (repeats adding in the same order, negative indices counted from the end, broadcast index arrays, trailing
    axes as rows)."""
    from lamina import grad
    r = np.random.default_rng(6)
    x = r.standard_normal(shape).astype(np.float32)
    idx = make(r)
    t = Tensor(x, requires_grad=True)
    y = t[idx]
    gy = r.standard_normal(y.shape).astype(np.float32)
    (g,) = grad(y, [t], grad_output=Tensor(gy))
    want = np.zeros_like(x)
    np.add.at(want, idx, gy)
    np.testing.assert_array_equal(np.asarray(g.data), want)
