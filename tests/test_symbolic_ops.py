"""keras.ops functions on keras.Input's symbolic tensors build functional models, as in Keras 3: the same
symbolic shapes and dtypes as Keras's, and the same predictions (checked against real Keras, torch backend)."""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")

import lamina  # noqa: E402

X = np.random.default_rng(0).standard_normal((4, 6, 5)).astype("float32")

# name -> f(ops, x): the ops applied to a symbolic (None, 6, 5) input
CASES = {
    "mean_axis": lambda o, x: o.mean(x, axis=1),
    "concatenate": lambda o, x: o.concatenate([x, o.relu(x)], axis=-1),
    "reshape_transpose": lambda o, x: o.transpose(o.reshape(x, (-1, 5, 6)), (0, 2, 1)),
    "expand_squeeze": lambda o, x: o.squeeze(o.expand_dims(x, -1), axis=-1) * 2.0,
    "matmul_two_inputs": lambda o, x: o.matmul(x, o.transpose(x, (0, 2, 1))),
    "softmax_max": lambda o, x: o.max(o.nn.softmax(x, axis=-1), axis=(1, 2)),
    "where_abs": lambda o, x: o.where(x > 0, x, o.abs(x) * 0.5),
    "stack_sum": lambda o, x: o.sum(o.stack([x, -x, x * x], axis=1), axis=1),
    "norm_sqrt": lambda o, x: o.sqrt(o.norm(x, axis=-1) + 1.0),
    "split_first": lambda o, x: o.split(x, 5, axis=-1)[2],
    "cumsum_clip": lambda o, x: o.clip(o.cumsum(x, axis=1), -1.0, 1.0),
    "logsumexp": lambda o, x: o.logsumexp(x, axis=-1),
    # operators on symbolic tensors
    "operators_arith": lambda o, x: (1.0 / (abs(x) + 1.0)) ** 2 - x // 0.5 + x % 0.7,
    "operators_compare": lambda o, x: o.cast(((x > 0) & (x < 1)) | ~(x >= -0.5), "float32"),
    "operators_matmul": lambda o, x: x @ o.ones((5, 2)),
    "indexing": lambda o, x: x[:, 0, 1:4] + x[..., ::2][:, -1, :3],
    "einsum": lambda o, x: o.einsum("bij,bkj->bik", x, x * 0.5),
}


def _model(lib, case):
    x = lib.Input((6, 5))
    y = CASES[case](lib.ops, x)
    return lib.Model(x, y), y


@pytest.mark.parametrize("case", sorted(CASES))
def test_ops_on_symbolic_tensors_match_keras(case):
    ours, y_ours = _model(lamina, case)
    theirs, y_theirs = _model(keras, case)
    assert isinstance(y_ours, lamina.KerasTensor)
    assert tuple(y_ours.shape) == tuple(y_theirs.shape)
    assert str(y_ours.dtype) == str(y_theirs.dtype)
    np.testing.assert_allclose(ours.predict(X, verbose=0), theirs.predict(X, verbose=0), rtol=1e-5, atol=1e-5)


def test_ops_between_layers_train_and_several_outputs():
    inputs = lamina.Input((6, 5))
    h = lamina.layers.Dense(8, activation="relu")(inputs)
    pooled = lamina.ops.mean(h, axis=1)
    values, indices = lamina.ops.top_k(pooled, 3)
    out = lamina.layers.Dense(1)(lamina.ops.concatenate([pooled, values], axis=-1))
    model = lamina.Model(inputs, [out, indices])
    assert tuple(out.shape) == (None, 1) and tuple(indices.shape) == (None, 3)
    first = model.get_weights()
    model.compile(optimizer="sgd", loss=["mse", None])
    model.fit(X, [np.ones((4, 1), "float32"), np.zeros((4, 3), "int64")], epochs=2, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(first, model.get_weights()))
    got_out, got_idx = model.predict(X, verbose=0)
    h_val = np.maximum(X @ model.layers[1].get_weights()[0] + model.layers[1].get_weights()[1], 0).mean(axis=1)
    np.testing.assert_array_equal(got_idx, np.argsort(-h_val, axis=-1, kind="stable")[:, :3])


def test_eager_calls_are_unchanged_and_shape_stays_static():
    x = lamina.Input((6, 5))
    assert lamina.ops.shape(x) == (None, 6, 5)
    np.testing.assert_allclose(lamina.ops.mean(X, axis=1).numpy(), X.mean(axis=1), rtol=1e-6)
    assert lamina.ops.numpy.mean is lamina.ops.mean


@pytest.mark.parametrize("case", ["mean_axis", "concatenate", "where_abs", "split_first", "logsumexp", "operators_arith",
                                  "operators_compare", "stack_sum", "indexing", "einsum"])
def test_models_with_op_nodes_travel_as_keras_files_both_ways(case, tmp_path):
    ours, _ = _model(lamina, case)
    want = ours.predict(X, verbose=0)
    ours.save(tmp_path / "ours.keras")
    np.testing.assert_allclose(keras.saving.load_model(tmp_path / "ours.keras").predict(X, verbose=0), want,
                               rtol=1e-5, atol=1e-5)
    back = lamina.saving.load_model(tmp_path / "ours.keras")
    np.testing.assert_allclose(back.predict(X, verbose=0), want, rtol=1e-6, atol=1e-6)
    assert not any(getattr(layer, "_operation", False) for layer in back.layers)   # kept out, as Keras
    theirs, _ = _model(keras, case)
    theirs.save(tmp_path / "theirs.keras")
    np.testing.assert_allclose(lamina.saving.load_model(tmp_path / "theirs.keras").predict(X, verbose=0),
                               theirs.predict(X, verbose=0), rtol=1e-5, atol=1e-5)


def test_an_op_call_no_keras_operation_records_runs_but_saving_says_what_to_do(tmp_path):
    x = lamina.Input((6, 5))
    y = lamina.ops.pad(x, [[0, 0], [1, 1], [0, 0]], constant_values=lamina.ops.max(x))   # a symbolic config
    model = lamina.Model(x, y)
    want = np.pad(X, [[0, 0], [1, 1], [0, 0]], constant_values=X.max())
    np.testing.assert_allclose(model.predict(X, verbose=0), want)
    with pytest.raises(ValueError, match=r"calls lamina\.ops\.pad on symbolic tensors .*custom Layer"):
        model.save(tmp_path / "m.keras")
    assert not (tmp_path / "m.keras").exists()


def test_a_slice_in_a_file_must_have_integer_bounds(tmp_path):
    import json
    import zipfile
    x = keras.Input((6, 5))
    keras.Model(x, x[:, 1:3]).save(tmp_path / "ok.keras")
    with zipfile.ZipFile(tmp_path / "ok.keras") as z:
        files = {n: z.read(n) for n in z.namelist()}
    config = files["config.json"].decode().replace('"start": 1', '"start": "1; rm -rf /"')
    assert config != files["config.json"].decode()
    files["config.json"] = config.encode()
    with zipfile.ZipFile(tmp_path / "bad.keras", "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    np.testing.assert_allclose(lamina.saving.load_model(tmp_path / "ok.keras").predict(X, verbose=0), X[:, 1:3])
    with pytest.raises(lamina.io.errors.ModelFileError, match="integer bounds"):
        lamina.saving.load_model(tmp_path / "bad.keras")


def _scaled_softplus_op(base):
    class ScaledSoftplus(base.Operation):
        """A custom stateless op, as Keras code subclasses keras.Operation."""

        def __init__(self, scale, name=None):
            super().__init__(name=name)
            self.scale = scale

        def call(self, x, y=None):
            out = base.ops.softplus(x) * self.scale
            return out if y is None else out + y

        def compute_output_spec(self, x, y=None):
            return base.KerasTensor(x.shape, x.dtype)
    return ScaledSoftplus


def test_custom_operation_eager_and_in_a_functional_model_as_keras():
    """keras.Operation subclassed: called on arrays it runs call(); on symbolic tensors it is a node of the
    model, whose predictions equal Keras's for the same weights; its name is the snake-cased class name."""
    x = np.random.default_rng(3).standard_normal((4, 5)).astype("float32")
    results = []
    for base in (keras, lamina):
        op = _scaled_softplus_op(base)(2.0)
        assert op.name.startswith("scaled_softplus") and isinstance(op, base.Operation)
        eager = np.asarray(op(x, y=x))
        inp = base.Input((5,))
        dense = base.layers.Dense(3)
        out = dense(op(inp))
        assert tuple(out.shape) == (None, 3)
        model = base.Model(inp, out)
        results.append((eager, model, dense))
    (k_eager, k_model, k_dense), (l_eager, l_model, l_dense) = results
    np.testing.assert_allclose(l_eager, k_eager, rtol=1e-6)
    l_dense.set_weights([np.asarray(w) for w in k_dense.get_weights()])
    np.testing.assert_allclose(l_model.predict(x, verbose=0), k_model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    with pytest.raises(NotImplementedError):
        lamina.Operation()(x)
