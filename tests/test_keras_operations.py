"""Keras's symbolic operations in functional graphs (``ops.not_equal(tokens, 0)``, ``ops.multiply(x, 2.0)``,
...): a .keras file of Keras holding them loads in lamina and predicts Keras's outputs, and lamina's re-save
loads back into Keras (lamina/layers/operations.py)."""
import numpy as np
import pytest

import lamina


@pytest.fixture
def keras(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    return pytest.importorskip("keras")


def test_operation_nodes_move_both_ways(keras, tmp_path):
    keras.utils.set_random_seed(0)
    tokens = keras.Input((6,), dtype="int32")
    mask = keras.ops.not_equal(tokens, 0)                       # a NotEqual node with a constant argument
    x = keras.layers.Embedding(30, 8)(tokens)
    x = keras.layers.MultiHeadAttention(2, 4)(x, x, value_mask=mask)
    x = keras.ops.multiply(keras.ops.subtract(x, 0.5), 2.0)     # Subtract and Multiply nodes
    x = keras.ops.maximum(x, keras.ops.negative(x))             # Maximum of a Negative: |x|
    model = keras.Model(tokens, keras.ops.sqrt(keras.ops.add(keras.ops.square(x), 1.0)))
    data = np.array([[3, 7, 1, 0, 0, 0], [5, 2, 9, 4, 8, 0], [1, 0, 0, 0, 0, 0]], np.int32)
    want = keras.ops.convert_to_numpy(model.predict(data, verbose=0))
    model.save(tmp_path / "k.keras")

    mine = lamina.models.load_model(tmp_path / "k.keras")
    np.testing.assert_allclose(mine.predict(data, verbose=0), want, rtol=1e-5, atol=1e-6)
    assert [type(l).__name__ for l in mine.layers] == ["InputLayer", "Embedding", "MultiHeadAttention"]

    mine.save(tmp_path / "l.keras")
    back = keras.models.load_model(tmp_path / "l.keras")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(back.predict(data, verbose=0)), want, rtol=1e-5,
                               atol=1e-6)
    again = lamina.models.load_model(tmp_path / "l.keras")
    np.testing.assert_allclose(again.predict(data, verbose=0), want, rtol=1e-5, atol=1e-6)


def test_each_operation_calls_the_lamina_op_of_its_name():
    from lamina.layers import operations
    a = np.array([[1.5, -2.0, 4.0]], np.float32)
    b = np.array([[1.5, 3.0, 2.0]], np.float32)
    first = ["Add", "NotEqual", "Equal", "Greater", "GreaterEqual", "Less", "LessEqual", "Subtract", "Multiply",
             "Divide", "TrueDivide", "Maximum", "Minimum", "Power", "LogicalAnd", "LogicalOr", "LogicalNot",
             "Negative", "Absolute", "Exp", "Log", "Sqrt", "Square", "Tanh"]
    for keras_name in first:
        function = operations.NUMPY_OPERATIONS[keras_name]
        layer = operations.OPERATION_CLASSES[keras_name]()
        unary = function in ("negative", "absolute", "exp", "log", "sqrt", "square", "tanh", "logical_not")
        args = (np.abs(a),) if unary else (a, b)
        got = np.asarray(layer(*args))
        expected = np.asarray(getattr(np, function)(*args))
        np.testing.assert_allclose(got, expected, rtol=1e-6, err_msg=keras_name)
        assert layer.get_config() == {"name": layer.name} and layer._keras_class_name == keras_name


def test_operations_with_arguments_from_every_keras_ops_module(keras, tmp_path):
    """nn (Relu, Softmax(axis), Gelu(approximate), LogSoftmax), numpy (Mean(axis, keepdims), Max(initial),
    Transpose(axes), Reshape(newshape), Clip, Concatenate), math (Logsumexp) and core (Cast(dtype)) nodes:
    Keras's file predicts Keras's outputs in lamina, and lamina's re-save loads back into Keras."""
    ops = keras.ops
    keras.utils.set_random_seed(1)
    x = keras.Input((4, 3))
    h = keras.layers.Dense(5)(x)
    d = ops.mean(ops.relu(h), axis=1)
    f = ops.sum(ops.sigmoid(h), axis=1, keepdims=False)
    m = ops.max(ops.softmax(h, axis=-1), axis=1)
    n = ops.transpose(ops.gelu(h), (0, 2, 1))
    o = ops.reshape(ops.silu(h), (-1, 20))
    p = ops.clip(ops.log_softmax(h), -1.0, 1.0)
    q = ops.concatenate([d, f, m, ops.logsumexp(h, axis=1)], axis=-1)
    r = ops.cast(ops.greater(h, 0.0), "float32")
    model = keras.Model(x, [q, n, o, p, r])
    data = np.random.default_rng(0).standard_normal((2, 4, 3)).astype("float32")
    want = [keras.ops.convert_to_numpy(w) for w in model.predict(data, verbose=0)]
    model.save(tmp_path / "k.keras")

    mine = lamina.models.load_model(tmp_path / "k.keras")
    for got, w in zip(mine.predict(data, verbose=0), want):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)
    assert [type(layer).__name__ for layer in mine.layers] == ["InputLayer", "Dense"]
    mine.save(tmp_path / "l.keras")
    back = keras.models.load_model(tmp_path / "l.keras")
    for got, w in zip(back.predict(data, verbose=0), want):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(got), w, rtol=1e-5, atol=1e-6)


def test_an_operation_with_an_argument_lamina_does_not_know_is_refused(keras, tmp_path):
    from lamina.layers import operations
    with pytest.raises(ValueError, match="unknown arguments"):
        operations.OPERATION_CLASSES["Softmax"].from_config({"name": "s", "axis": -1, "bogus": 1})


def test_the_operations_table_is_current(keras):
    """lamina/layers/keras_operations_table.py holds what tools/keras_operations.py finds in this Keras."""
    from lamina.layers.keras_operations_table import KERAS_OPERATIONS
    from repo_scripts import load_script
    tool = load_script("tools/keras_operations.py")
    assert tool.supported(tool.keras_operations()) == KERAS_OPERATIONS
    assert len(KERAS_OPERATIONS) >= 290
