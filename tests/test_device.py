"""The device path: every op, layer and model run on the 'cuda' array module and compared with the CPU.

Each test takes the ``device_xp`` fixture (conftest.py), which runs it twice: on real CuPy where CuPy and
an NVIDIA GPU are present (skipped otherwise, as in CI), and on ``fake_cupy``, a CPU stand-in that keeps
CuPy's device boundary (mixing a device array with a NumPy array raises TypeError). The fake run proves
the plumbing (nothing falls back to NumPy, results come back to the host); the CuPy run proves the numbers.
"""
import numpy as np
import pytest

import lamina
from lamina import backend, ops
from lamina.tensor import Tensor

RTOL, ATOL = 2e-4, 2e-5   # float32 on a GPU vs the CPU (different summation orders)


def _f(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _run(fn, arrays, xp, seed=0):
    """fn on Tensors made of arrays (moved to xp); returns the output and each float input's gradient as NumPy,
    after checking that every one of them was on the device."""
    tensors = [Tensor(backend.to_device(a, xp), requires_grad=a.dtype.kind == "f") for a in arrays]
    y = fn(*tensors)
    gy = backend.to_device(np.random.default_rng(seed + 1).standard_normal(y.shape).astype(y.dtype), xp)
    y.backward(gy)
    out = [y.data] + [t.grad for t in tensors if t.requires_grad]
    for a in out:
        assert backend.get_array_module(a) is xp, f"{type(a)} is not a device array"
    return [backend.to_numpy(a) for a in out]


def _ids(rng, n, *shape):
    return rng.integers(0, n, size=shape).astype(np.int64)


OPS = {
    "add_broadcast": (lambda a, b: a + b, lambda r: [_f(r, 3, 4), _f(r, 4)]),
    "mul_div_pow": (lambda a, b: (a * b) / (ops.abs(b) + 1.0) ** 1.5, lambda r: [_f(r, 3, 4), _f(r, 3, 4)]),
    "matmul": (ops.matmul, lambda r: [_f(r, 2, 3, 4), _f(r, 4, 5)]),
    "linear": (ops.linear, lambda r: [_f(r, 2, 3, 4), _f(r, 4, 5), _f(r, 5)]),
    "exp_log_sqrt": (lambda x: ops.log(ops.exp(x) + 1.0) + ops.sqrt(ops.square(x) + 1.0), lambda r: [_f(r, 5, 3)]),
    "clip_max_min_where": (lambda a, b: ops.where(a > b, ops.clip(a, -0.5, 0.5), ops.maximum(a, b) - ops.minimum(a, b)),
                           lambda r: [_f(r, 4, 4), _f(r, 4, 4)]),
    "reductions": (lambda x: ops.sum(x, axis=1, keepdims=True) + ops.mean(x, axis=1, keepdims=True) + ops.max(x, axis=1, keepdims=True)
                   + ops.min(x, axis=1, keepdims=True) + ops.var(x, axis=1, keepdims=True) + ops.std(x, axis=1, keepdims=True),
                   lambda r: [_f(r, 3, 6)]),
    "shape_ops": (lambda x: ops.concatenate([
        ops.transpose(ops.reshape(x, (3, 2, 4)), (1, 0, 2)),
        ops.repeat(ops.reshape(ops.stack(ops.split(ops.pad(x, ((0, 0), (1, 1))), 2, axis=1), axis=0), (2, 3, 6))[:, :, :2], 2, axis=2),
    ], axis=2), lambda r: [_f(r, 6, 4)]),
    "integer_index": (lambda x: x[np.array([0, 2, 2]), 1:], lambda r: [_f(r, 4, 5)]),
    "tile_expand_squeeze": (lambda x: ops.squeeze(ops.expand_dims(ops.tile(x, (2, 1)), 0), 0), lambda r: [_f(r, 3, 4)]),
    "softmax_logsoftmax": (lambda x: ops.softmax(x) * ops.log_softmax(x, axis=0), lambda r: [_f(r, 4, 6)]),
    "activations": (lambda x: ops.relu(x) + ops.relu6(x * 4) + ops.leaky_relu(x) + ops.elu(x) + ops.selu(x) + ops.gelu(x)
                    + ops.gelu(x, approximate=True) + ops.sigmoid(x) + ops.hard_sigmoid(x) + ops.tanh(x) + ops.softplus(x)
                    + ops.softsign(x) + ops.silu(x), lambda r: [_f(r, 5, 7)]),
    "conv2d_same_strided": (lambda x, w, b: ops.conv2d(x, w, b, strides=2, padding="same"),
                            lambda r: [_f(r, 2, 7, 7, 3), _f(r, 3, 3, 3, 4), _f(r, 4)]),
    # channels-last layouts with 16 input channels: the input gradient through col2im (one fused launch on a GPU)
    "conv2d_wide_valid": (lambda x, w, b: ops.conv2d(x, w, b),
                          lambda r: [_f(r, 2, 9, 9, 16), _f(r, 3, 3, 16, 8), _f(r, 8)]),
    "conv2d_wide_strided_dilated": (lambda x, w: ops.conv2d(x, w, strides=(2, 1), padding="same", dilation_rate=(1, 2)),
                                    lambda r: [_f(r, 2, 9, 8, 16), _f(r, 3, 2, 16, 5)]),
    "max_pool_overlapping_same": (lambda x: ops.max_pool2d(x, 3, strides=2, padding="same"),
                                  lambda r: [_f(r, 2, 7, 8, 5)]),
    "conv2d_dilated": (lambda x, w: ops.conv2d(x, w, dilation_rate=2), lambda r: [_f(r, 2, 8, 8, 2), _f(r, 3, 3, 2, 3)]),
    "conv1d_causal": (lambda x, w: ops.conv1d(x, w, padding="causal"), lambda r: [_f(r, 2, 9, 3), _f(r, 3, 3, 4)]),
    "conv2d_transpose": (lambda x, w, b: ops.conv2d_transpose(x, w, b, strides=2, padding="same"),
                         lambda r: [_f(r, 2, 4, 4, 3), _f(r, 3, 3, 5, 3), _f(r, 5)]),
    "pooling": (lambda x: ops.max_pool2d(x, 2) .sum() + ops.avg_pool2d(x, 3, strides=2, padding="same").sum()
                + ops.max_pool1d(x[:, 0], 2).sum() + ops.avg_pool1d(x[:, 0], 2).sum(), lambda r: [_f(r, 2, 6, 6, 3)]),
    "upsampling_padding_cropping": (lambda x: ops.cropping2d(ops.zero_padding2d(ops.upsampling2d(x, 2, "bilinear"), 1), ((1, 2), (1, 2)))
                                    + 0 * ops.upsampling2d(x, 2)[:, :9, :9], lambda r: [_f(r, 2, 5, 5, 2)]),
    "resize": (lambda x: ops.resize(x, (7, 3)), lambda r: [_f(r, 2, 5, 4, 2)]),
    "batch_norm_training": (lambda x, g, b: ops.batch_norm_training(x, g, b)[0], lambda r: [_f(r, 8, 3), _f(r, 3), _f(r, 3)]),
    "batch_norm_inference": (lambda x, g, b, m, v: ops.batch_norm(x, g, b, m, ops.abs(v) + 0.5),
                             lambda r: [_f(r, 8, 3), _f(r, 3), _f(r, 3), _f(r, 3), _f(r, 3)]),
    "layer_norm_rms": (lambda x, g, b: ops.layer_norm(x, g, b) + ops.layer_norm(x, g, rms_scaling=True),
                       lambda r: [_f(r, 4, 6), _f(r, 6), _f(r, 6)]),
    # rows wider than a warp (the fused GPU LayerNorm visits a row 32 columns at a time), with and without the affine
    "layer_norm_wide": (lambda x, g, b: ops.layer_norm(x, g, b, epsilon=1e-5) * 2 + ops.layer_norm(x, None, b)
                        + ops.layer_norm(x * 3, g) + ops.layer_norm(x, axes=(1, 2)).sum(axis=1, keepdims=True),
                        lambda r: [_f(r, 5, 3, 70), _f(r, 70), _f(r, 70)]),
    "group_norm": (lambda x, g, b: ops.group_norm(x, g, b, groups=2), lambda r: [_f(r, 2, 3, 3, 4), _f(r, 4), _f(r, 4)]),
    "embedding": (lambda ids, table: ops.embedding(ids, table), lambda r: [_ids(r, 6, 3, 5), _f(r, 6, 4)]),
    "simple_rnn": (lambda x, k, u, b: ops.simple_rnn(x, k, u, b)[0], lambda r: [_f(r, 2, 5, 3), _f(r, 3, 4), _f(r, 4, 4), _f(r, 4)]),
    "lstm_masked_backwards": (lambda x, k, u, b: ops.lstm(x, k, u, b, mask=np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool),
                                                          go_backwards=True)[0],
                              lambda r: [_f(r, 2, 5, 3), _f(r, 3, 16), _f(r, 4, 16), _f(r, 16)]),
    "gru_reset_after": (lambda x, k, u, b: ops.gru(x, k, u, b)[0], lambda r: [_f(r, 2, 5, 3), _f(r, 3, 12), _f(r, 4, 12), _f(r, 2, 12)]),
    "gru_reset_before": (lambda x, k, u, b: ops.gru(x, k, u, b, reset_after=False)[0],
                         lambda r: [_f(r, 2, 5, 3), _f(r, 3, 12), _f(r, 4, 12), _f(r, 12)]),
    "attention_causal": (lambda q, k, v: ops.scaled_dot_product_attention(q, k, v, is_causal=True),
                         lambda r: [_f(r, 2, 2, 5, 4), _f(r, 2, 2, 5, 4), _f(r, 2, 2, 5, 3)]),
    # more keys than a block's threads cover in one go, unmasked: the fused GPU column softmax and its gradient
    "attention_wide": (lambda q, k, v: ops.scaled_dot_product_attention(q, k, v) * 2,
                       lambda r: [_f(r, 2, 3, 40, 8), _f(r, 2, 3, 37, 8), _f(r, 2, 3, 37, 6)]),
    "attention_padding_mask": (lambda q, k, v: ops.scaled_dot_product_attention(
        q, k, v, mask=np.array([[[[1, 1, 1, 0]]], [[[1, 1, 0, 0]]]], bool)),
        lambda r: [_f(r, 2, 1, 3, 4), _f(r, 2, 1, 4, 4), _f(r, 2, 1, 4, 4)]),
    "sparse_ce_logits": (lambda y, p: ops.sparse_categorical_crossentropy(y, p, from_logits=True),
                         lambda r: [_ids(r, 5, 6), _f(r, 6, 5)]),
    # rows wider than a warp (the fused GPU softmax visits a row 32 columns at a time), 3-d labels
    "sparse_ce_logits_wide": (lambda y, p: ops.sparse_categorical_crossentropy(y, p, from_logits=True),
                              lambda r: [_ids(r, 77, 3, 4), _f(r, 3, 4, 77) * 4]),
    # float64 through the fused GPU kernels' double variants
    "float64_fused": (lambda y, x, img: ops.sparse_categorical_crossentropy(y, ops.softmax(x) * 3 + ops.layer_norm(x),
                                                                           from_logits=True)
                      + ops.sum(ops.max_pool2d(img, 2), axis=(1, 2, 3)),
                      lambda r: [_ids(r, 9, 4), r.standard_normal((4, 9)), r.standard_normal((4, 4, 6, 3))]),
    "softmax_wide": (lambda x: ops.softmax(x * 3) * ops.softmax(x, axis=0), lambda r: [_f(r, 9, 70)]),
    "categorical_ce_probs": (lambda y, p: ops.losses.categorical_crossentropy(ops.softmax(y), ops.softmax(p), label_smoothing=0.1),
                             lambda r: [_f(r, 6, 5), _f(r, 6, 5)]),
    "binary_ce_logits": (lambda y, p: ops.binary_crossentropy(ops.sigmoid(y), p, from_logits=True), lambda r: [_f(r, 6, 1), _f(r, 6, 1)]),
    "regression_losses": (lambda y, p: ops.mean_squared_error(y, p) + ops.mean_absolute_error(y, p) + ops.huber(y, p)
                          + ops.log_cosh(y, p) + ops.kl_divergence(ops.softmax(y), ops.softmax(p)),
                          lambda r: [_f(r, 6, 3), _f(r, 6, 3)]),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_op_on_device_matches_cpu(name, device_xp):
    fn, make = OPS[name]
    arrays = make(np.random.default_rng(0))
    expected = _run(fn, arrays, np)
    got = _run(fn, arrays, device_xp)
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL, err_msg=f"{name}: {'output' if i == 0 else f'gradient {i}'}")


def test_dropout_on_device_draws_the_cpu_mask(device_xp):
    x = np.ones((4, 50), np.float32)
    backend.set_random_seed(3)
    cpu = _run(lambda t: ops.dropout(t, 0.5), [x], np)
    backend.set_random_seed(3)
    dev = _run(lambda t: ops.dropout(t, 0.5), [x], device_xp)
    for g, e in zip(dev, cpu):
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL)


L = lamina.layers


def _tokens(rng, *shape):
    ids = rng.integers(1, 12, size=shape)
    ids[0, -3:] = 0  # padding, for the mask_zero cases
    return ids.astype(np.int64)


class _two_input:
    """A layer (or list of layers) called by a custom function, as one callable with .weights for _layer_run."""

    def __init__(self, make, call):
        self.make, self.call = make, call

    def __call__(self):
        made, call = self.make(), self.call

        class Wrapped:
            layers = made if isinstance(made, list) else [made]

            def __call__(self, x, training=False):
                return call(made, x)

            @property
            def weights(self):
                return [w for layer in self.layers for w in layer.weights]

            @property
            def trainable_weights(self):
                return [w for layer in self.layers for w in layer.trainable_weights]

            @property
            def losses(self):
                return [l for layer in self.layers for l in layer.losses]
        return Wrapped()


def _merge_chain(ls, x):
    permute, repeat, flatten, reshape, concat, dot, multiply, maximum = ls
    b = reshape(flatten(permute(x)))                    # (2, 3, 4) again, by another route
    d = dot([concat([x, b]), concat([b, x])])           # (2, 3, 3)
    e = maximum([multiply([d, x[:, :, :3]]), x[:, :, 1:4]])
    return repeat(flatten(e))                           # (2, 2, 9)


def _sinusoidal_decoder():
    inputs = lamina.Input((6, 3))
    h = L.Dense(8)(inputs)
    h = L.Add()([h, L.SinusoidalPositionEncoding()(h)])
    return lamina.Model(inputs, L.TransformerDecoder(16, 2)(h))


LAYERS = {
    "Dense": (lambda: L.Dense(5, activation="gelu"), lambda r: _f(r, 4, 3, 6)),
    "Conv2D": (lambda: L.Conv2D(4, 3, strides=2, padding="same", activation="relu"), lambda r: _f(r, 2, 7, 7, 3)),
    "Conv1D": (lambda: L.Conv1D(4, 3, padding="causal", dilation_rate=2), lambda r: _f(r, 2, 9, 3)),
    "Conv2DTranspose": (lambda: L.Conv2DTranspose(3, 3, strides=2, padding="same"), lambda r: _f(r, 2, 4, 4, 2)),
    "pooling_stack": (lambda: lamina.Sequential([L.MaxPooling2D(2), L.AveragePooling2D(2, padding="same"),
                                                 L.GlobalAveragePooling2D()]), lambda r: _f(r, 2, 8, 8, 3)),
    "resampling_stack": (lambda: lamina.Sequential([L.UpSampling2D(2, interpolation="bilinear"), L.ZeroPadding2D(1),
                                                    L.Cropping2D(((1, 0), (0, 1))), L.Resizing(5, 6), L.Rescaling(0.5, 0.1)]),
                         lambda r: _f(r, 2, 4, 4, 2)),
    "BatchNormalization": (lambda: L.BatchNormalization(), lambda r: _f(r, 8, 5)),
    "LayerNormalization": (lambda: L.LayerNormalization(), lambda r: _f(r, 4, 3, 6)),
    "GroupNormalization": (lambda: L.GroupNormalization(groups=2), lambda r: _f(r, 2, 3, 3, 4)),
    "Dropout": (lambda: L.Dropout(0.3), lambda r: _f(r, 6, 10)),
    "SpatialDropout2D": (lambda: L.SpatialDropout2D(0.3), lambda r: _f(r, 2, 4, 4, 6)),
    "Embedding_LSTM_masked": (lambda: lamina.Sequential([L.Embedding(12, 4, mask_zero=True), L.LSTM(5)]),
                              lambda r: _tokens(r, 3, 7)),
    "SimpleRNN_sequences": (lambda: L.SimpleRNN(4, return_sequences=True, go_backwards=True), lambda r: _f(r, 2, 5, 3)),
    "GRU_reset_before": (lambda: L.GRU(4, reset_after=False), lambda r: _f(r, 2, 5, 3)),
    "Bidirectional_GRU": (lambda: L.Bidirectional(L.GRU(3, return_sequences=True), merge_mode="ave"),
                          lambda r: _f(r, 2, 5, 3)),
    "LSTM_recurrent_dropout": (lambda: L.LSTM(4, dropout=0.2, recurrent_dropout=0.2), lambda r: _f(r, 2, 5, 3)),
    # the whole-sequence op with Keras's activations (the fused GPU step kernels), sequences and a last state
    "LSTM_sequences": (lambda: L.LSTM(6, return_sequences=True), lambda r: _f(r, 3, 7, 4)),
    "LSTM_backwards_no_bias": (lambda: L.LSTM(5, go_backwards=True, use_bias=False), lambda r: _f(r, 2, 6, 3)),
    "RNN_of_cell": (lambda: L.RNN(L.GRUCell(3)), lambda r: _f(r, 2, 4, 3)),
    "TimeDistributed_Dense": (lambda: L.TimeDistributed(L.Dense(3)), lambda r: _f(r, 2, 4, 5)),
    "TokenAndPosition_Encoder": (lambda: lamina.Sequential([L.TokenAndPositionEmbedding(12, 7, 8, mask_zero=True),
                                                            L.TransformerEncoder(16, 2)]), lambda r: _tokens(r, 3, 7)),
    "Sinusoidal_Decoder_causal": (_sinusoidal_decoder, lambda r: _f(r, 2, 6, 3)),
    "PReLU_LeakyReLU_Softmax": (lambda: lamina.Sequential([L.PReLU(), L.LeakyReLU(), L.Softmax()]),
                                lambda r: _f(r, 3, 5)),
    "Normalization_adapted": (lambda: L.Normalization(mean=[0.5, -1.0, 2.0], variance=[1.0, 4.0, 0.25]),
                              lambda r: _f(r, 5, 3)),
    "Attention_concat_causal": (_two_input(lambda: L.Attention(score_mode="concat", use_scale=True),
                                           lambda layer, x: layer([x, x[:, ::-1]], use_causal_mask=True)),
                                lambda r: _f(r, 2, 5, 4)),
    "AdditiveAttention": (_two_input(lambda: L.AdditiveAttention(), lambda layer, x: layer([x, x * 0.5])),
                          lambda r: _f(r, 2, 4, 3)),
    "MultiHeadAttention_scores": (_two_input(lambda: L.MultiHeadAttention(2, 3, value_dim=4),
                                             lambda layer, x: layer(x, x[:, :4], use_causal_mask=True)),
                                  lambda r: _f(r, 2, 5, 6)),
    "Conv1DTranspose_Cropping1D_UpSampling1D": (lambda: lamina.Sequential([
        L.Conv1DTranspose(3, 3, strides=2), L.Cropping1D((1, 2)), L.UpSampling1D(2), L.ZeroPadding1D(1),
        L.GlobalMaxPooling1D()]), lambda r: _f(r, 2, 6, 2)),
    "reshaping_and_merging": (_two_input(lambda: [L.Permute((2, 1)), L.RepeatVector(2), L.Flatten(), L.Reshape((3, 4)),
                                                  L.Concatenate(), L.Dot(axes=2), L.Multiply(), L.Maximum()],
                                         _merge_chain), lambda r: _f(r, 2, 3, 4)),
    "Masking_GlobalAveragePooling1D": (lambda: lamina.Sequential([L.Masking(0.0), L.GlobalAveragePooling1D()]),
                                       lambda r: _f(r, 2, 5, 3) * (np.arange(5) < 3)[None, :, None]),
    "InstanceNormalization_GlobalMaxPooling2D": (lambda: lamina.Sequential([L.InstanceNormalization(),
                                                                           L.GlobalMaxPooling2D()]),
                                                 lambda r: _f(r, 2, 4, 4, 3)),
    "regularized_constrained_Dense": (lambda: L.Dense(4, kernel_regularizer="l2", bias_regularizer="l1",
                                                      activity_regularizer="l2", kernel_constraint="max_norm"),
                                      lambda r: _f(r, 3, 5)),
    "augmentation": (lambda: lamina.Sequential([L.RandomFlip(), L.RandomRotation(0.2), L.RandomTranslation(0.1, 0.1),
                                                L.RandomZoom(0.2), L.RandomContrast(0.3), L.CenterCrop(4, 4)]),
                     lambda r: _f(r, 2, 6, 6, 3)),
    "noise_and_spatial_dropout": (lambda: lamina.Sequential([L.GaussianNoise(0.3), L.GaussianDropout(0.2),
                                                             L.SpatialDropout1D(0.3)]), lambda r: _f(r, 3, 4, 5)),
}


def _layer_run(name, x, xp, device):
    make, _ = LAYERS[name]
    backend.set_device(device)
    backend.set_random_seed(0)   # same weights and same dropout draws on both devices
    layer = make()
    t = Tensor(backend.to_device(x, xp), requires_grad=x.dtype.kind == "f")
    y = layer(t, training=True)
    gy = backend.to_device(np.random.default_rng(1).standard_normal(y.shape).astype(y.dtype), xp)
    penalties = list(layer.losses)  # regularisers and activity penalties, computed on the device too
    total = (y * Tensor(gy)).sum()
    for p in penalties:
        total = total + p
    total.backward()
    assert t.grad is not None or not t.requires_grad
    arrays = [y.data] + [p.data for p in penalties] + ([t.grad] if t.requires_grad else []) + [w.data for w in layer.weights] + \
             [w.grad for w in layer.trainable_weights if w.grad is not None]
    for a in arrays:
        assert backend.get_array_module(a) is xp, f"{name}: a {type(a).__name__} is not on the {device} device"
    return [backend.to_numpy(a) for a in arrays]


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_on_device_matches_cpu(name, device_xp):
    x = LAYERS[name][1](np.random.default_rng(0))
    expected = _layer_run(name, x, np, "cpu")
    got = _layer_run(name, x, device_xp, "cuda")
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        np.testing.assert_allclose(g, e, rtol=RTOL, atol=ATOL, err_msg=f"{name}: array {i} (output, input "
                                   "gradient, weights incl. moving statistics, weight gradients)")


# ----- whole models: fit / evaluate / predict, model.to, model files across devices

def _mlp():
    return lamina.Sequential([lamina.Input((6,)), L.Dense(16, activation="relu"), L.Dropout(0.2), L.Dense(3, activation="softmax")])


def _cnn():
    return lamina.Sequential([lamina.Input((8, 8, 1)), L.Conv2D(4, 3, padding="same", activation="relu"),
                              L.BatchNormalization(), L.MaxPooling2D(2), L.Flatten(), L.Dense(3, activation="softmax")])


def _text():
    return lamina.Sequential([lamina.Input((7,), dtype="int64"), L.Embedding(12, 6, mask_zero=True),
                              L.Bidirectional(L.LSTM(5)), L.Dense(3, activation="softmax")])


def _transformer():
    inputs = lamina.Input((7,), dtype="int64")
    h = L.TokenAndPositionEmbedding(12, 7, 8, mask_zero=True)(inputs)
    h = L.TransformerEncoder(16, 2, dropout=0.1)(h)
    outputs = L.Dense(3, activation="softmax")(L.GlobalAveragePooling1D()(h))
    return lamina.Model(inputs, outputs)


MODELS = {"mlp": (_mlp, lambda r: _f(r, 40, 6)), "cnn": (_cnn, lambda r: _f(r, 40, 8, 8, 1)),
          "lstm_text": (_text, lambda r: _tokens(r, 40, 7)), "transformer": (_transformer, lambda r: _tokens(r, 40, 7))}


def _train(name, device, epochs=2):
    backend.set_device(device)
    backend.set_random_seed(0)
    make, data = MODELS[name]
    rng = np.random.default_rng(0)
    x, y = data(rng), rng.integers(0, 3, 40)
    model = make()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=16, epochs=epochs, validation_split=0.25, verbose=0)
    return model, x, y, history.history


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fit_evaluate_predict_on_device_match_cpu(name, device_xp):
    cpu_model, x, y, cpu_hist = _train(name, "cpu")
    cpu_pred, cpu_eval = cpu_model.predict(x, verbose=0), cpu_model.evaluate(x, y, verbose=0, return_dict=True)
    model, _, _, hist = _train(name, "cuda")
    assert all(backend.get_array_module(w.data) is device_xp for w in model.weights)
    assert all(backend.get_array_module(v.data) is device_xp for v in model.optimizer.variables[2:])
    pred = model.predict(x, verbose=0)
    assert type(pred) is np.ndarray  # results come back to the host
    np.testing.assert_allclose(pred, cpu_pred, rtol=1e-3, atol=1e-5)
    for key in cpu_hist:
        np.testing.assert_allclose(hist[key], cpu_hist[key], rtol=1e-3, atol=1e-5, err_msg=key)
    got = model.evaluate(x, y, verbose=0, return_dict=True)
    for key in cpu_eval:
        assert got[key] == pytest.approx(cpu_eval[key], rel=1e-3, abs=1e-5)


def test_model_to_moves_weights_and_optimizer_state_midway(device_xp):
    """One epoch on the CPU, then model.to('cuda') and a second epoch there, gives what two CPU epochs give."""
    def first_epoch_then(move):
        model, x, y, _ = _train("cnn", "cpu", epochs=1)
        if move:
            assert model.to("cuda") is model
            assert all(backend.get_array_module(v.data) is device_xp
                       for v in model.weights + model.optimizer.variables[2:])
        backend.set_random_seed(1)
        model.fit(x, y, batch_size=16, epochs=2, initial_epoch=1, validation_split=0.25, verbose=0)
        return model, x
    reference, x = first_epoch_then(move=False)
    model, _ = first_epoch_then(move=True)
    for w, r in zip(model.weights, reference.weights):
        np.testing.assert_allclose(backend.to_numpy(w.data), r.numpy(), rtol=1e-3, atol=1e-5, err_msg=w.path)
    model.to("cpu")
    assert all(type(v.data) is np.ndarray for v in model.weights + model.optimizer.variables[2:])
    np.testing.assert_allclose(model.predict(x, verbose=0), reference.predict(x, verbose=0), rtol=1e-3, atol=1e-5)


def test_model_saved_on_device_loads_on_cpu(device_xp, tmp_path):
    model, x, y, _ = _train("lstm_text", "cuda", epochs=1)
    pred = model.predict(x, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    backend.set_device("cpu")
    loaded = lamina.models.load_model(path)
    assert all(type(w.data) is np.ndarray for w in loaded.weights)
    assert all(type(v.data) is np.ndarray for v in loaded.optimizer.variables[2:])
    np.testing.assert_allclose(loaded.predict(x, verbose=0), pred, rtol=1e-4, atol=1e-6)
    # and back: a CPU file onto the device, optimizer state included, training goes on there
    backend.set_device("cuda")
    again = lamina.models.load_model(path)
    assert all(backend.get_array_module(v.data) is device_xp for v in again.weights + again.optimizer.variables[2:])
    np.testing.assert_allclose(again.predict(x, verbose=0), pred, rtol=1e-4, atol=1e-6)
    again.fit(x, y, epochs=1, verbose=0)


def test_stateful_lstm_on_device(device_xp):
    def run(device):
        backend.set_device(device)
        backend.set_random_seed(0)
        layer = L.LSTM(4, stateful=True)
        x = _f(np.random.default_rng(0), 2, 3, 5)
        outs = [backend.to_numpy(layer(x).data), backend.to_numpy(layer(x).data)]
        layer.reset_states()
        outs.append(backend.to_numpy(layer(x).data))
        return outs
    cpu, dev = run("cpu"), run("cuda")
    assert not np.allclose(cpu[0], cpu[1])  # the state carried over
    np.testing.assert_allclose(cpu[2], cpu[0], rtol=1e-6)
    for a, b in zip(dev, cpu):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL)


# ----- without CuPy (CI): nothing changes unless cuda is asked for, and then the error says what to do

def _python(code, **env):
    import os
    import subprocess
    import sys
    full_env = {k: v for k, v in os.environ.items() if k != "LAMINA_DEVICE"}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=120)


def test_import_lamina_never_imports_cupy():
    out = _python("import sys, numpy, lamina, lamina.models, lamina.layers\n"
                  "m = lamina.Sequential([lamina.Input((3,)), lamina.layers.Dense(2)])\n"
                  "m.compile('adam', 'mse'); m.fit(numpy.ones((4, 3)), numpy.ones((4, 2)), verbose=0)\n"
                  "print('cupy' in sys.modules)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_asking_for_cuda_without_cupy_is_a_clear_error(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "cupy", None)  # 'import cupy' now fails as on a machine without it
    backend.set_device("cpu")
    with pytest.raises(RuntimeError, match=r"needs CuPy.*pip install 'lamina\[gpu\]'"):
        lamina.set_device("cuda")
    assert lamina.get_device() == "cpu"
    model = _mlp()
    before = [w.numpy().copy() for w in model.weights]
    with pytest.raises(RuntimeError, match="needs CuPy"):
        model.to("cuda")
    with pytest.raises(ValueError, match="Valid devices: cpu, cuda"):
        model.to("gpu")
    assert all(type(w.data) is np.ndarray for w in model.weights)
    for w, b in zip(model.weights, before):
        np.testing.assert_array_equal(w.numpy(), b)
    model.compile("sgd", "sparse_categorical_crossentropy")
    model.fit(_f(np.random.default_rng(0), 8, 6), np.zeros(8, np.int64), verbose=0)  # still trains on the CPU


def test_lamina_device_variable_without_cupy_names_the_variable():
    out = _python("import sys; sys.modules['cupy'] = None\n"
                  "import lamina; print('imported', flush=True)\n"
                  "lamina.Sequential([lamina.Input((3,)), lamina.layers.Dense(2)])", LAMINA_DEVICE="cuda")
    assert out.stdout.startswith("imported")  # importing is fine; the first array asks for the device
    assert out.returncode != 0
    assert "pip install 'lamina[gpu]'" in out.stderr and "LAMINA_DEVICE='cuda'" in out.stderr
    out = _python("import lamina; print(lamina.get_device())", LAMINA_DEVICE="cpu")
    assert out.stdout.strip() == "cpu", out.stderr


def test_cli_trains_on_the_device_and_the_file_loads_on_cpu(device_xp, tmp_path, capsys):
    from lamina.cli import main
    assert main(["train", "--device", "cuda", "--epochs", "1", "--out", str(tmp_path), "--quiet", "--no-plot"]) == 0
    assert "test accuracy" in capsys.readouterr().out.lower()
    backend.set_device("cpu")
    model = lamina.models.load_model(tmp_path / "model.lamina")
    assert all(type(w.data) is np.ndarray for w in model.weights)
    assert main(["evaluate", str(tmp_path / "model.lamina"), "--device", "cuda"]) == 0


def test_cli_device_without_cupy_exits_1(monkeypatch, capsys):
    import sys
    from lamina.cli import main
    monkeypatch.setitem(sys.modules, "cupy", None)
    assert main(["train", "--device", "cuda", "--epochs", "1"]) == 1
    assert "pip install 'lamina[gpu]'" in capsys.readouterr().err


@pytest.mark.parametrize("workload", ["mlp", "cnn", "cnn_infer", "lstm", "transformer"])
def test_bench_workloads_run_on_the_device(workload, device_xp):
    """The GPU benchmark's lamina side (python -m bench --device cuda): batch moved once, the loss goes down."""
    from bench.workloads import lamina_workload
    step, flops = lamina_workload(workload)
    losses = [step() for _ in range(3)]
    assert flops > 0 and all(np.isfinite(losses))
    if workload != "cnn_infer":
        assert losses[-1] < losses[0]


def test_every_array_function_lamina_calls_exists_in_cupy():
    """Static check of the one code path: each ``xp.name`` (and ``xp.ufunc.method``) used in lamina exists in
    CuPy. Needs CuPy importable (no GPU needed: it runs wherever the gpu extra is installed)."""
    import pathlib
    import re
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed (pip install 'lamina[gpu]')")
    root = pathlib.Path(lamina.__file__).parent
    used = set()
    for path in root.rglob("*.py"):
        for m in re.finditer(r"\bxp\.([A-Za-z_]\w*)(?:\.([A-Za-z_]\w*))?", path.read_text()):
            used.add((m.group(1), m.group(2), path.relative_to(root).as_posix()))
    assert len(used) > 40  # the scan found lamina's array calls
    missing = [f"{where}: xp.{a}" + (f".{b}" if b else "") for a, b, where in sorted(used, key=str)
               if not hasattr(cupy, a) or (b and hasattr(getattr(np, a, None), b) and not hasattr(getattr(cupy, a), b))]
    assert not missing, "not in CuPy " + cupy.__version__ + ": " + ", ".join(missing)


OPTIMIZERS = {
    "SGD_nesterov": lambda: lamina.optimizers.SGD(0.1, momentum=0.9, nesterov=True, clipvalue=0.5),
    "Adam": lambda: lamina.optimizers.Adam(0.01),   # (the fused GPU update; AMSGrad takes the generic code)
    "Adam_amsgrad": lambda: lamina.optimizers.Adam(0.01, amsgrad=True, global_clipnorm=1.0),
    "AdamW_ema": lambda: lamina.optimizers.AdamW(0.01, weight_decay=0.1, use_ema=True, clipnorm=0.5),
    "RMSprop_centered": lambda: lamina.optimizers.RMSprop(0.01, momentum=0.5, centered=True),
    "Adagrad": lambda: lamina.optimizers.Adagrad(0.1),
    "Adadelta": lambda: lamina.optimizers.Adadelta(1.0),
    "Adamax": lambda: lamina.optimizers.Adamax(0.01),
    "Nadam": lambda: lamina.optimizers.Nadam(0.01),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_optimizer_updates_on_device_match_cpu(name, device_xp):
    def run(device):
        xp = backend.module_for(device)
        backend.set_device(device)
        rng = np.random.default_rng(0)
        w = [lamina.Variable(backend.to_device(_f(rng, 4, 3), xp)), lamina.Variable(backend.to_device(_f(rng, 3), xp))]
        opt = OPTIMIZERS[name]()
        for step in range(4):
            grads = [backend.to_device(_f(np.random.default_rng(step), *v.shape), xp) for v in w]
            opt.apply_gradients(zip(grads, w))
        state = [v.data for v in w] + [s.data for slots in opt._slots.values() for s in slots]
        assert len(state) > 2 or name == "SGD"
        assert all(backend.get_array_module(a) is xp for a in state)
        return [backend.to_numpy(a) for a in state]
    for got, expected in zip(run("cuda"), run("cpu")):
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL)


def test_callbacks_that_save_and_restore_work_on_device(device_xp, tmp_path):
    backend.set_device("cuda")
    rng = np.random.default_rng(0)
    x, y = _f(rng, 32, 6), rng.integers(0, 3, 32)
    model = _mlp()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    callbacks = [lamina.callbacks.ModelCheckpoint(str(tmp_path / "best.keras"), save_best_only=True),
                 lamina.callbacks.BackupAndRestore(str(tmp_path / "backup")),
                 lamina.callbacks.ReduceLROnPlateau(patience=1), lamina.callbacks.EarlyStopping(patience=5)]
    model.fit(x, y, epochs=3, validation_split=0.25, callbacks=callbacks, verbose=0)
    backend.set_device("cpu")
    best = lamina.models.load_model(tmp_path / "best.keras")
    assert all(type(w.data) is np.ndarray for w in best.weights)
    # a run that crashes after its second epoch, then resumes from the backup onto the device
    class Crash(lamina.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("simulated crash")
    backend.set_device("cuda")
    backup = str(tmp_path / "backup2")
    first = _mlp()
    first.compile("adam", "sparse_categorical_crossentropy")
    with pytest.raises(RuntimeError, match="simulated crash"):
        first.fit(x, y, epochs=4, verbose=0, callbacks=[lamina.callbacks.BackupAndRestore(backup), Crash()])
    again = _mlp()
    again.compile("adam", "sparse_categorical_crossentropy")
    history = again.fit(x, y, epochs=4, verbose=0, callbacks=[lamina.callbacks.BackupAndRestore(backup)])
    assert len(history.history["loss"]) == 2  # epochs 3 and 4 only: the first two came from the backup
    assert all(backend.get_array_module(v.data) is device_xp for v in again.weights + again.optimizer.variables[2:])


def test_set_weights_and_plots_take_device_arrays(device_xp, tmp_path):
    pytest.importorskip("matplotlib")
    backend.set_device("cuda")
    layer = L.MultiHeadAttention(2, 3)
    x = backend.to_device(_f(np.random.default_rng(0), 1, 4, 6))
    _, scores = layer(x, x, return_attention_scores=True)
    assert backend.get_array_module(scores.data) is device_xp
    from lamina.plotting import plot_attention
    plot_attention(scores.data[0], list("abcd"), list("wxyz"), tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 0
    other = L.MultiHeadAttention(2, 3)
    other(x, x)
    other.set_weights([w.data for w in layer.weights])  # device arrays, not NumPy
    for a, b in zip(other.weights, layer.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_loss_objects_take_device_arrays(device_xp):
    backend.set_device("cuda")
    y_true = backend.to_device(np.array([0, 2, 1]))
    y_pred = backend.to_device(np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.3, 0.4, 0.3]], np.float32))
    got = lamina.losses.SparseCategoricalCrossentropy()(y_true, y_pred)
    assert backend.get_array_module(got.data) is device_xp
    expected = -np.log([0.7, 0.8, 0.4]).mean()
    assert float(got) == pytest.approx(expected, rel=1e-5)
    mse = lamina.losses.MeanSquaredError()(y_pred, y_pred * 0.5)
    assert float(mse) == pytest.approx(float(np.mean((backend.to_numpy(y_pred) * 0.5) ** 2)), rel=1e-5)


def test_fit_and_predict_take_device_arrays(device_xp):
    backend.set_device("cuda")
    rng = np.random.default_rng(0)
    x, y = _f(rng, 24, 6), rng.integers(0, 3, 24)
    model = _mlp()
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    xd, yd = backend.to_device(x), backend.to_device(y)
    history = model.fit(xd, yd, batch_size=8, epochs=2, validation_data=(xd, yd), verbose=0)
    assert np.isfinite(history.history["val_loss"]).all()
    pred = model.predict(xd, verbose=0)
    assert type(pred) is np.ndarray
    np.testing.assert_allclose(pred, model.predict(x, verbose=0), rtol=1e-6)
    assert model.evaluate(xd, yd, verbose=0, return_dict=True)["loss"] == pytest.approx(
        model.evaluate(x, y, verbose=0, return_dict=True)["loss"], rel=1e-5)


def test_sparse_ce_refuses_labels_out_of_range_on_device(device_xp):
    logits = Tensor(backend.to_device(_f(np.random.default_rng(0), 4, 3), device_xp), requires_grad=True)
    for bad in ([0, 1, 3, 2], [0, -1, 2, 2]):
        with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
            ops.sparse_categorical_crossentropy(backend.to_device(np.array(bad), device_xp), logits, from_logits=True)
    ops.sparse_categorical_crossentropy(backend.to_device(np.array([0, 1, 2, 2]), device_xp), logits, from_logits=True)


def test_fused_cuda_kernels_run_where_cupy_is_real(device_xp, monkeypatch):
    """On a GPU the LSTM loops, Adam, the softmax, the sparse cross-entropy, the embedding's gradient, max pooling,
    col2im, LayerNorm and attention's softmax launch lamina's fused kernels (their values: the tests above); on
    the stand-in, and with LAMINA_CUDA_KERNELS=0, every one stands aside."""
    from lamina.ops import cuda_kernels

    launched = []
    real_kernel = cuda_kernels._kernel
    monkeypatch.setattr(cuda_kernels, "_kernel", lambda xp, name: launched.append(name) or real_kernel(xp, name))
    rng = np.random.default_rng(0)

    def step():
        model = lamina.Sequential([lamina.Input((5,), dtype="int32"), L.Embedding(10, 3), L.LSTM(4), L.Dense(6)])
        model.compile("adam", lamina.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(rng.integers(0, 10, (8, 5)), rng.integers(0, 6, 8), epochs=1, batch_size=8, verbose=0)
        model = lamina.Sequential([lamina.Input((7, 7, 3)), L.Conv2D(16, 3, activation="relu"), L.MaxPooling2D(2),
                                   L.Conv2D(8, 2), L.Flatten(), L.LayerNormalization(), L.Dense(6)])
        model.compile("adam", lamina.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(_f(rng, 8, 7, 7, 3), rng.integers(0, 6, 8), epochs=1, batch_size=8, verbose=0)
        q = Tensor(backend.to_device(_f(rng, 2, 2, 5, 4), device_xp), requires_grad=True)
        ops.sum(ops.scaled_dot_product_attention(q, q * 2.0, q)).backward()

    step()
    fused = {"lstm_cell_f32", "lstm_step_grad_f32", "adam_update_f32", "softmax_rows_f32", "sce_loss_f32",
             "sce_grad_f32", "labels_out_of_range", "scatter_rows_f32", "max_pool_f32", "max_pool_grad_f32",
             "col2im_f32", "layer_norm_f32", "layer_norm_grad_f32", "softmax_columns_f32",
             "softmax_columns_grad_f32"}
    if getattr(device_xp, "is_fake", False) and not hasattr(device_xp, "kernel_launches"):
        assert launched == []
    else:
        assert fused <= set(launched), sorted(fused - set(launched))
        launched.clear()
        monkeypatch.setenv("LAMINA_CUDA_KERNELS", "0")
        step()
        assert launched == []
