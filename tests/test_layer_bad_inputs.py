"""Layers on bad or unusual inputs: integer and bool features, empty batches, a feature size that changes
after build, a wrong rank. Each case either computes what Keras computes or raises a ValueError/TypeError
that names the layer (found by a sweep of every layer against Keras 3)."""
import numpy as np
import pytest

import lamina
from lamina import layers

B = 2

# layers that compute in float: (class name, constructor kwargs, input shape)
FLOAT_COMPUTE = [
    ("Conv1D", dict(filters=2, kernel_size=3), (B, 6, 3)),
    ("Conv2D", dict(filters=2, kernel_size=3), (B, 6, 6, 3)),
    ("Conv3D", dict(filters=2, kernel_size=3), (B, 4, 4, 4, 3)),
    ("Conv1DTranspose", dict(filters=2, kernel_size=3), (B, 6, 3)),
    ("Conv2DTranspose", dict(filters=2, kernel_size=3), (B, 6, 6, 3)),
    ("DepthwiseConv2D", dict(kernel_size=3), (B, 6, 6, 3)),
    ("SeparableConv2D", dict(filters=2, kernel_size=3), (B, 6, 6, 3)),
    ("AveragePooling1D", dict(pool_size=2), (B, 6, 3)),
    ("AveragePooling2D", dict(pool_size=2), (B, 6, 6, 3)),
    ("AveragePooling3D", dict(pool_size=2), (B, 4, 4, 4, 3)),
    ("EinsumDense", dict(equation="ab,bc->ac", output_shape=3, bias_axes="c"), (B, 4)),
    ("ConvLSTM1D", dict(filters=2, kernel_size=3), (B, 3, 6, 3)),
    ("MultiHeadAttention", dict(num_heads=2, key_dim=2), (B, 3, 4)),
    ("GroupQueryAttention", dict(head_dim=2, num_query_heads=2, num_key_value_heads=1), (B, 3, 4)),
]


def _call(layer, name, x):
    if name in ("MultiHeadAttention", "GroupQueryAttention"):
        return layer(x, x)
    return layer(x)


@pytest.mark.parametrize("dtype", ["int32", "bool"])
@pytest.mark.parametrize("name,kwargs,shape", FLOAT_COMPUTE, ids=[c[0] for c in FLOAT_COMPUTE])
def test_integer_and_bool_inputs_compute_in_the_layer_float_dtype(name, kwargs, shape, dtype):
    # Numpy promotes int32 with a float32 kernel to float64 (or fails: 'Cannot cast ufunc divide output');
    # the layer computes in its own float dtype, as Dense does.
    lamina.utils.set_random_seed(0)
    x = np.random.default_rng(0).integers(-3, 4, size=shape)
    x = (x > 0) if dtype == "bool" else x.astype(dtype)
    layer = getattr(layers, name)(**kwargs)
    y = _call(layer, name, x)
    assert y.dtype == np.float32, f"{name}: {y.dtype}"
    expected = _call(layer, name, x.astype("float32"))
    np.testing.assert_allclose(np.asarray(y.numpy()), np.asarray(expected.numpy()), rtol=1e-6, atol=1e-6)


GLOBAL_MAX = [("GlobalMaxPooling1D", (0, 6, 3)), ("GlobalMaxPooling2D", (0, 6, 6, 3)),
              ("GlobalMaxPooling3D", (0, 4, 4, 4, 3))]


@pytest.mark.parametrize("name,shape", GLOBAL_MAX, ids=[c[0] for c in GLOBAL_MAX])
def test_global_max_pooling_of_an_empty_batch(name, shape):
    # the max runs over the spatial axes, which are not empty: (0, ..., C) -> (0, C), as every other pooling
    # layer (NumPy said 'zero-size array to reduction operation')
    y = getattr(layers, name)()(np.zeros(shape, "float32"))
    assert tuple(y.shape) == (0, 3)
    y = getattr(layers, name)(keepdims=True)(np.zeros(shape, "float32"))
    assert tuple(y.shape) == (0,) + (1,) * (len(shape) - 2) + (3,)


def test_keras_ops_max_over_nonempty_axes_of_an_empty_array():
    from lamina import ops
    assert tuple(ops.max(np.zeros((0, 4), "float32"), axis=1).shape) == (0,)
    assert tuple(ops.min(np.zeros((0, 4), "int32"), axis=-1).shape) == (0,)
    with pytest.raises(ValueError, match="zero-size array"):   # an empty reduced axis has no max
        ops.max(np.zeros((0, 4), "float32"), axis=0)


NOISE = [("Dropout", dict(rate=0.3)), ("SpatialDropout1D", dict(rate=0.3)), ("GaussianNoise", dict(stddev=0.5)),
         ("GaussianDropout", dict(rate=0.3)), ("AlphaDropout", dict(rate=0.3))]


@pytest.mark.parametrize("dtype", ["int32", "bool"])
@pytest.mark.parametrize("name,kwargs", NOISE, ids=[c[0] for c in NOISE])
def test_noise_layers_in_training_turn_integer_inputs_into_floats(name, kwargs, dtype):
    # The kept values of Dropout are scaled by 1/(1-rate) and the noise layers add or multiply real noise:
    # on int/bool inputs the result was cast back to the input's dtype (Dropout kept 3 as 3, GaussianNoise
    # changed nothing). In training they now compute in float32, as Keras; at inference they pass through.
    x = np.full((4, 6, 1), 3, "int32") if dtype == "int32" else np.ones((4, 6, 1), bool)
    layer = getattr(layers, name)(seed=1, **kwargs)
    y = layer(x, training=True)
    assert y.dtype == np.float32
    if name in ("Dropout", "SpatialDropout1D"):
        kept = np.asarray(y.numpy())[np.asarray(y.numpy()) != 0]
        np.testing.assert_allclose(kept, x.astype("float32").max() / 0.7, rtol=1e-6)
    else:
        assert not np.allclose(np.asarray(y.numpy()), x.astype("float32"))
    assert layer(x).dtype == x.dtype  # inference: the input as it is


def _raises_naming_layer(layer, *args):
    with pytest.raises(ValueError) as info:
        layer(*args)
    assert layer.name in str(info.value), str(info.value)
    return str(info.value)


def _rand(*shape):
    return np.random.default_rng(0).standard_normal(shape).astype("float32")


CHANGED_FEATURES = [
    ("RMSNormalization", {}, (B, 4), (B, 5)),
    ("EinsumDense", dict(equation="ab,bc->ac", output_shape=3), (B, 4), (B, 5)),
    ("EinsumDense", dict(equation="...b,bc->...c", output_shape=3), (B, 3, 4), (B, 3, 5)),
    ("EinsumDense", dict(equation="abc,cd->abd", output_shape=(None, 3)), (B, 3, 4), (B, 3, 5)),
]


@pytest.mark.parametrize("name,kwargs,first,second", CHANGED_FEATURES, ids=[c[0] for c in CHANGED_FEATURES])
def test_a_feature_size_that_changes_after_build_is_refused_naming_the_layer(name, kwargs, first, second):
    # NumPy said 'operands could not be broadcast together' / 'Size of label ... does not match'
    layer = getattr(layers, name)(**kwargs)
    layer(_rand(*first))
    msg = _raises_naming_layer(layer, _rand(*second))
    assert "expected axis" in msg and str(second) in msg


def test_additive_attention_refuses_a_feature_size_that_changes_after_build():
    layer = layers.AdditiveAttention()
    layer([_rand(B, 3, 4), _rand(B, 3, 4)])
    msg = _raises_naming_layer(layer, [_rand(B, 3, 5), _rand(B, 3, 5)])
    assert "expected axis -1" in msg


@pytest.mark.parametrize("name", ["Attention", "AdditiveAttention"])
def test_attention_refuses_different_batch_sizes_or_key_value_lengths_naming_the_layer(name):
    msg = _raises_naming_layer(getattr(layers, name)(), [_rand(2, 3, 4), _rand(3, 3, 4)])
    assert "batch size" in msg
    msg = _raises_naming_layer(getattr(layers, name)(), [_rand(2, 3, 4), _rand(2, 3, 4), _rand(2, 5, 4)])
    assert "same length" in msg


@pytest.mark.parametrize("name", ["Attention", "AdditiveAttention", "RMSNormalization"])
def test_attention_and_rms_normalization_compute_integer_inputs_in_float(name):
    x = np.arange(24).reshape(2, 3, 4) % 3
    layer = getattr(layers, name)()
    y = layer([x, x]) if "Attention" in name else layer(x)
    assert y.dtype == np.float32


@pytest.mark.parametrize("shape", [(4,), (2, 4, 2)])
def test_einsum_dense_refuses_an_input_of_the_wrong_rank_naming_the_layer(shape):
    # rank 1: an IndexError from the shape inference ('list index out of range'); rank 3: NumPy's einsum message
    msg = _raises_naming_layer(layers.EinsumDense("ab,bc->ac", output_shape=3), _rand(*shape))
    assert "rank 2" in msg and str(shape) in msg


SPEC_BEFORE_BUILD = [
    ("Dense", dict(units=3), "min_ndim=2"),
    ("Conv1D", dict(filters=2, kernel_size=3), "ndim=3"),
    ("Conv2D", dict(filters=2, kernel_size=3), "ndim=4"),
    ("Conv2DTranspose", dict(filters=2, kernel_size=3), "ndim=4"),
    ("Conv3D", dict(filters=2, kernel_size=3), "ndim=5"),
    ("DepthwiseConv2D", dict(kernel_size=3), "ndim=4"),
    ("SeparableConv2D", dict(filters=2, kernel_size=3), "ndim=4"),
    ("ConvLSTM2D", dict(filters=2, kernel_size=3), "ndim=5"),
    ("Reshape", dict(target_shape=(2, 2)), "min_ndim=1"),
]


@pytest.mark.parametrize("name,kwargs,expected", SPEC_BEFORE_BUILD, ids=[c[0] for c in SPEC_BEFORE_BUILD])
def test_a_0d_input_is_checked_against_the_input_spec_before_build(name, kwargs, expected):
    # build read input_shape[-1] of () first: IndexError 'tuple index out of range'. Keras checks the spec
    # set in __init__ before building, and so does Layer.__call__ now.
    layer = getattr(layers, name)(**kwargs)
    msg = _raises_naming_layer(layer, np.float32(1.0))
    assert f"expected {expected}, found ndim=0" in msg
    assert not layer.built


@pytest.mark.parametrize("name,expected", [("Add", 3.0), ("Multiply", 2.0), ("Maximum", 2.0), ("Average", 1.5),
                                           ("Subtract", -1.0)])
def test_merge_layers_merge_0d_inputs_as_keras_and_refuse_0d_beside_batched(name, expected):
    # reading the batch axis of () was an IndexError; Keras merges two scalars into a scalar
    y = getattr(layers, name)()([np.float32(1.0), np.float32(2.0)])
    assert tuple(y.shape) == () and float(y.numpy()) == expected
    msg = _raises_naming_layer(getattr(layers, name)(), [np.float32(1.0), _rand(2, 3)])
    assert "batch axis" in msg


@pytest.mark.parametrize("name", ["Attention", "AdditiveAttention"])
def test_attention_refuses_inputs_without_length_and_feature_axes(name):
    msg = _raises_naming_layer(getattr(layers, name)(), [_rand(4), _rand(4)])
    assert "expected min_ndim=2, found ndim=1" in msg


NONE_INPUT = ["Dense", "Conv2D", "ELU", "Softmax", "Dropout", "SpatialDropout1D", "UnitNormalization", "Flatten",
              "Identity", "Embedding", "LSTM"]
_NONE_KW = {"Dense": dict(units=2), "Conv2D": dict(filters=2, kernel_size=3), "Dropout": dict(rate=0.5),
            "SpatialDropout1D": dict(rate=0.5), "Embedding": dict(input_dim=5, output_dim=2), "LSTM": dict(units=2)}


@pytest.mark.parametrize("name", NONE_INPUT)
def test_none_as_the_input_is_refused_with_keras_words(name):
    # ELU(None) gave a NaN scalar, SpatialDropout1D(None) returned None, others an AttributeError. Keras 3.15
    # (checked by the sweep; importing it here would cost seconds): Flatten()(None) -> "Inputs to a layer should
    # be tensors. Got 'None' (of type <class 'NoneType'>) as input for layer 'flatten'."
    layer = getattr(layers, name)(**_NONE_KW.get(name, {}))
    msg = _raises_naming_layer(layer, None)
    assert msg.startswith("Inputs to a layer should be tensors. Got 'None'")


def test_none_stays_allowed_where_call_gives_the_input_a_default():
    class Constant(layers.Layer):
        def call(self, inputs=None):
            return lamina.ops.ones((1, 2))

    assert tuple(Constant()(None).shape) == (1, 2)



@pytest.mark.parametrize("name,kwargs", [("MultiHeadAttention", dict(num_heads=2, key_dim=2)),
                                         ("GroupQueryAttention", dict(head_dim=2, num_query_heads=2,
                                                                      num_key_value_heads=1))],
                         ids=["MultiHeadAttention", "GroupQueryAttention"])
@pytest.mark.parametrize("tq,tk", [(0, 0), (0, 3), (3, 0)])
def test_attention_over_empty_sequences(name, kwargs, tq, tk):
    # no keys: NumPy's 'zero-size array to reduction operation maximum' in the softmax. Keras gives the empty
    # query's (B, 0, dim) and, for queries with no keys, zero weights: the output projection's bias (zeros)
    layer = getattr(layers, name)(**kwargs)
    q = lamina.Tensor(_rand(B, tq, 4), requires_grad=True)
    v = lamina.Tensor(_rand(B, tk, 4), requires_grad=True)
    y = layer(q, v)
    assert tuple(y.shape) == (B, tq, 4)
    np.testing.assert_array_equal(np.asarray(y.numpy()), 0.0)
    y.sum().backward()
    assert q.grad.shape == q.shape and v.grad.shape == v.shape


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name,shape,out", [("AdaptiveAveragePooling1D", (1, 7, 2), 3),
                                            ("AdaptiveAveragePooling2D", (1, 7, 6, 2), (3, 2))],
                         ids=["1D", "2D"])
def test_adaptive_average_pooling_keeps_nan_and_inf_in_their_window(name, shape, out, bad):
    # the pooling was a matmul with an averaging matrix: 0 * inf = NaN spread one bad value to every window
    x = np.ones(shape, "float32")
    at = (0, 3) + (0,) * (len(shape) - 3) + (0,)  # step 3 of 7 lies in the middle window [2, 5) only
    x[at] = bad
    y = np.asarray(getattr(layers, name)(out)(x).numpy())
    hit = (0, 1) + (0,) * (len(shape) - 3) + (0,)
    np.testing.assert_array_equal(y[hit], bad)
    rest = np.ones(y.shape, bool)
    rest[hit] = False
    np.testing.assert_array_equal(y[rest], 1.0)


@pytest.mark.parametrize("name,shape", [("Cropping1D", (2, 2, 3)), ("Cropping2D", (2, 2, 6, 3)),
                                        ("Cropping3D", (2, 2, 6, 6, 3)), ("Cropping3D", (2, 6, 6, 1, 3))],
                         ids=["1D", "2D", "3D-depth", "3D-width"])
def test_a_cropping_that_leaves_nothing_is_refused_naming_the_layer(name, shape):
    # Cropping3D returned an empty (2, 0, 4, 4, 3) array; Keras and Cropping1D/2D refuse
    msg = _raises_naming_layer(getattr(layers, name)(1), _rand(*shape))
    assert "leaves nothing" in msg


OP_ERRORS = [
    ("Conv2D", dict(filters=2, kernel_size=3), (2, 1, 1, 3), "smaller than the dilated kernel"),
    ("Conv1D", dict(filters=2, kernel_size=3), (2, 1, 3), "shorter than the dilated kernel"),
    ("MaxPooling2D", dict(pool_size=2), (2, 1, 1, 3), "smaller than the pool"),
    ("GlobalMaxPooling2D", {}, (2, 0, 6, 3), "zero-size array"),
    ("AdaptiveMaxPooling1D", dict(output_size=2), (2, 0, 3), "empty"),
    ("LSTM", dict(units=2), (2, 0, 3), "at least one time step"),
]


@pytest.mark.parametrize("name,kwargs,shape,words", OP_ERRORS, ids=[c[0] for c in OP_ERRORS])
def test_an_error_from_an_op_inside_a_layer_names_the_layer(name, kwargs, shape, words):
    # the op's message named the op ('conv2d: the input ...'), not the layer, where Keras says
    # 'Exception encountered when calling Conv2D.call()'
    layer = getattr(layers, name)(**kwargs, name=f"my_{name.lower()}")
    with pytest.raises(ValueError, match=words) as info:
        layer(np.zeros(shape, "float32"))
    assert str(info.value).startswith(f"{name} 'my_{name.lower()}': ")


def test_only_the_innermost_layer_names_itself():
    inner = layers.Conv2D(2, 3, name="inner_conv")
    model = lamina.Sequential([layers.Input((4, 4, 3)), inner])
    with pytest.raises(ValueError) as info:
        model(np.zeros((2, 1, 1, 3), "float32"))
    msg = str(info.value)
    assert "'inner_conv'" in msg and "sequential" not in msg.lower()
    with pytest.raises(ValueError) as info:   # a message that names the layer already is left as it is
        layers.Dense(3, name="d")(np.zeros((3,), "float32"))
    assert str(info.value).startswith("Input 0 of layer 'd' is incompatible")


def test_an_error_whose_message_numpy_builds_from_attributes_is_named_too():
    # NumPy's AxisError keeps its message in attributes, so the layer's name goes into a new ValueError
    # (AxisError is a ValueError) raised from it
    with pytest.raises(ValueError, match="^Softmax 'sm': axis 3 is out of bounds") as info:
        layers.Softmax(axis=3, name="sm")(np.zeros((2, 3), "float32"))
    assert isinstance(info.value.__cause__, np.exceptions.AxisError)


NON_NUMERIC = [("Dense", dict(units=2), 2), ("LayerNormalization", {}, 2), ("BatchNormalization", {}, 2),
               ("Conv1D", dict(filters=2, kernel_size=1), 3), ("LSTM", dict(units=2), 3), ("ELU", {}, 2),
               ("ReLU", {}, 2), ("Softmax", {}, 2), ("Activation", dict(activation="tanh"), 2)]


@pytest.mark.parametrize("kind", ["object", "str"])
@pytest.mark.parametrize("name,kwargs,rank", NON_NUMERIC, ids=[c[0] for c in NON_NUMERIC])
def test_layers_that_compute_in_float_refuse_object_and_string_inputs(name, kwargs, rank, kind):
    # an object array's None became NaN silently (Dense gave [nan, nan]); Keras: 'Invalid dtype: object'
    x = np.array([[1, None, 2]], dtype=object) if kind == "object" else np.array([["a", "b", "c"]])
    x = x.reshape(x.shape + (1,) * (rank - 2))
    msg = _raises_naming_layer(getattr(layers, name)(**kwargs), x)
    assert "Invalid dtype" in msg


LIST_INPUTS = [("Dense", dict(units=3), (2, 4)), ("Embedding", dict(input_dim=10, output_dim=3), (2, 4)),
               ("Rescaling", dict(scale=0.5), (2, 4)), ("Masking", {}, (2, 3, 4)), ("Dropout", dict(rate=0.5), (2, 4)),
               ("LSTM", dict(units=3), (2, 5, 3)), ("MultiHeadAttention", dict(num_heads=2, key_dim=2), (2, 3, 4))]


@pytest.mark.parametrize("name,kwargs,shape", LIST_INPUTS, ids=[c[0] for c in LIST_INPUTS])
def test_nested_python_lists_of_numbers_are_one_array(name, kwargs, shape):
    # the nest was mapped leaf by leaf: Dropout returned nested lists of 0-d tensors, Embedding, Rescaling,
    # Masking and the attention layers raised AttributeError ('list' object has no attribute ...)
    x = np.random.default_rng(0).integers(0, 10, size=shape)
    x = x if name == "Embedding" else x.astype("float32")
    layer = getattr(layers, name)(**kwargs)
    args = (x.tolist(), x.tolist()) if name == "MultiHeadAttention" else (x.tolist(),)
    y = layer(*args)
    expected = layer(*((x, x) if name == "MultiHeadAttention" else (x,)))
    np.testing.assert_allclose(np.asarray(y.numpy()), np.asarray(expected.numpy()), rtol=1e-6)


def test_spectral_normalization_checks_the_wrapped_layers_rank_before_build():
    # the wrapped Dense's build met the 0-d input first: IndexError 'tuple index out of range'
    msg = _raises_naming_layer(layers.SpectralNormalization(layers.Dense(3)), np.float32(1.0))
    assert "expected min_ndim=2, found ndim=0" in msg
    msg = _raises_naming_layer(layers.SpectralNormalization(layers.Conv2D(2, 3)), _rand(2, 5, 3))
    assert "expected ndim=4, found ndim=3" in msg


@pytest.mark.parametrize("name", ["Resizing", "CenterCrop"])
@pytest.mark.parametrize("shape", [(2, 0, 6, 3), (2, 6, 0, 3)])
def test_resizing_an_image_without_pixels_is_refused_naming_the_layer(name, shape):
    # the interpolation table indexed pixel -1 of an empty axis: IndexError
    msg = _raises_naming_layer(getattr(layers, name)(3, 3), np.zeros(shape, "float32"))
    assert "at least 1 pixel" in msg


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_resizing_keeps_nan_and_inf_to_the_outputs_that_read_them(interpolation, bad):
    # the resize is two GEMMs with interpolation matrices: 0 * inf = NaN made the whole 3x3 output NaN
    x = np.ones((1, 6, 6, 2), "float32")
    x[0, 5, 5, 0] = bad
    y = np.asarray(layers.Resizing(3, 3, interpolation=interpolation)(x).numpy())
    rest = np.ones(y.shape, bool)
    rest[0, 2, 2, 0] = False
    np.testing.assert_array_equal(y[rest], 1.0)
    assert np.isnan(y[0, 2, 2, 0]) if np.isnan(bad) else y[0, 2, 2, 0] == bad


@pytest.mark.parametrize("make", [lambda: layers.Dense(3), lambda: layers.Conv1D(2, 1)])
def test_a_single_input_layer_called_on_a_list_says_so(make):
    """Dense([a, b]): Keras's message (it expects one input, received two), where lamina failed deep in build."""
    x = np.ones((2, 4), np.float32)
    with pytest.raises(ValueError, match=r"expects 1 input\(s\), but it received 2 input tensors"):
        make()([x, x])
    seq = lamina.Sequential([layers.Dense(3)])   # a Sequential runs its layers on a list one after another
    with pytest.raises(ValueError, match=r"expects 1 input\(s\), but it received 2 input tensors"):
        seq([x, x])
