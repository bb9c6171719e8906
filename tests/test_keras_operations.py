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
    for keras_name, function in operations.NUMPY_OPERATIONS.items():
        layer = operations.OPERATION_CLASSES[keras_name]()
        unary = function in ("negative", "absolute", "exp", "log", "sqrt", "square", "tanh", "logical_not")
        args = (np.abs(a),) if unary else (a, b)
        got = np.asarray(layer(*args))
        expected = np.asarray(getattr(np, function)(*args))
        np.testing.assert_allclose(got, expected, rtol=1e-6, err_msg=keras_name)
        assert layer.get_config() == {"name": layer.name} and layer._keras_class_name == keras_name
