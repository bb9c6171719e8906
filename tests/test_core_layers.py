"""Embedding op and layer, Dense/Activation/Input contract: gradient checks, PyTorch parity, masks, errors."""
import numpy as np
import pytest

import lamina
from lamina import Tensor, grad, layers, ops
from lamina.testing import check_grad, check_layer

R = np.random.default_rng(3)


# ----- the embedding op
@pytest.mark.parametrize("ids_shape,rows,dim", [((5,), 4, 3), ((2, 6), 3, 2), ((2, 2, 3), 7, 1)])
def test_embedding_op_grad_with_repeated_ids(ids_shape, rows, dim):
    ids = R.integers(0, rows, ids_shape)
    ids.reshape(-1)[:2] = 1  # make sure at least one id repeats: its gradients must add up
    check_grad(lambda t: ops.embedding(ids, t), R.standard_normal((rows, dim)))


def test_embedding_op_backward_adds_repeats_and_leaves_unused_rows_zero():
    table = Tensor(np.arange(8.0, dtype=np.float32).reshape(4, 2), requires_grad=True)
    ids = np.array([[2, 0, 2], [2, 1, 1]])
    y = ops.embedding(ids, table)
    np.testing.assert_array_equal(y.numpy(), table.numpy()[ids])
    gy = np.arange(12.0, dtype=np.float32).reshape(2, 3, 2)
    (g,) = grad((y * Tensor(gy)).sum(), [table])
    expected = np.zeros((4, 2), np.float32)
    np.add.at(expected, ids.reshape(-1), gy.reshape(-1, 2))
    np.testing.assert_array_equal(g, expected)
    assert g.dtype == np.float32 and not expected[3].any()


def test_embedding_op_matches_torch():
    torch = pytest.importorskip("torch")
    table = R.standard_normal((10, 4)).astype(np.float32)
    ids = R.integers(0, 10, (3, 7))
    gy = R.standard_normal((3, 7, 4)).astype(np.float32)
    t = Tensor(table, requires_grad=True)
    y = ops.embedding(ids, t)
    (g,) = grad((y * Tensor(gy)).sum(), [t])
    tt = torch.tensor(table, requires_grad=True)
    yt = torch.nn.functional.embedding(torch.tensor(ids), tt)
    (yt * torch.tensor(gy)).sum().backward()
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(g, tt.grad.numpy(), rtol=1e-5, atol=1e-6)


def test_embedding_op_errors_state_the_valid_range():
    table = np.zeros((5, 2), np.float32)
    with pytest.raises(ValueError, match=r"integers.*\[0, 5\).*float32"):
        ops.embedding(np.array([1.0, 2.0], np.float32), table)
    with pytest.raises(ValueError, match=r"\[0, 5\).*from -1 to 5"):
        ops.embedding(np.array([-1, 5]), table)


# ----- the Embedding layer
def test_embedding_layer_contract():
    layer = check_layer(layers.Embedding, {"input_dim": 6, "output_dim": 3}, input_shape=(2, 4), input_dtype="int32",
                        expected_output_shape=(2, 4, 3), expected_num_trainable_weights=1,
                        expected_weight_names=["embeddings"])
    assert layer.embeddings.shape == (6, 3) and layer.count_params() == 18
    # Keras's default "uniform" initializer is U(-0.05, 0.05)
    fresh = layers.Embedding(100, 8)
    fresh.build()
    w = fresh.get_weights()[0]
    assert np.abs(w).max() <= 0.05 and w.std() > 0.02


def test_embedding_layer_matches_torch_forward_and_grad():
    torch = pytest.importorskip("torch")
    layer = layers.Embedding(12, 5)
    ids = R.integers(0, 12, (4, 6)).astype(np.int32)
    layer(ids)
    table = R.standard_normal((12, 5)).astype(np.float32)
    layer.set_weights([table])
    gy = R.standard_normal((4, 6, 5)).astype(np.float32)
    y = layer(ids)
    (g,) = grad((y * Tensor(gy)).sum(), [layer.embeddings])
    emb = torch.nn.Embedding(12, 5)
    with torch.no_grad():
        emb.weight.copy_(torch.tensor(table))
    yt = emb(torch.tensor(ids, dtype=torch.long))
    (yt * torch.tensor(gy)).sum().backward()
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-6)
    np.testing.assert_allclose(g, emb.weight.grad.numpy(), rtol=1e-4, atol=1e-6)
    assert y.dtype == np.float32


def test_embedding_mask_zero_sets_the_output_mask():
    layer = layers.Embedding(5, 2, mask_zero=True)
    ids = np.array([[3, 1, 0, 0], [2, 0, 0, 0]])
    y = layer(ids)
    assert isinstance(y._keras_mask, Tensor) and y._keras_mask.dtype == np.bool_
    np.testing.assert_array_equal(y._keras_mask.numpy(), ids != 0)
    assert layers.Embedding(5, 2)(ids)._keras_mask is None


def test_embedding_mask_reaches_a_downstream_layer():
    emb = layers.Embedding(5, 4, mask_zero=True)
    soft = layers.Softmax(axis=1)
    x = emb(np.array([[1, 2, 0]]))
    seen = {}

    class Probe(layers.Layer):
        def call(self, inputs, mask=None):
            seen["mask"] = mask
            return inputs

        def compute_output_shape(self, input_shape):
            return input_shape
    Probe()(soft(x))
    np.testing.assert_array_equal(seen["mask"].numpy(), [[True, True, False]])


def test_embedding_symbolic_output_is_float32():
    inp = lamina.Input(shape=(7,), dtype="int32")
    out = layers.Embedding(20, 3)(inp)
    assert out.shape == (None, 7, 3) and out.dtype == np.float32


def test_embedding_accepts_whole_number_floats_and_input_length():
    layer = layers.Embedding(4, 2, input_length=3)  # Keras 2 argument: accepted, ignored
    a = layer(np.array([[1, 3, 0]])).numpy()
    b = layer(np.array([[1.0, 3.0, 0.0]], np.float32)).numpy()
    np.testing.assert_array_equal(a, b)
    assert "input_length" not in layer.get_config()


def test_embedding_weights_argument_and_config():
    table = R.standard_normal((4, 2)).astype(np.float32)
    layer = layers.Embedding(4, 2, weights=[table])
    np.testing.assert_array_equal(layer.get_weights()[0], table)
    config = layer.get_config()
    assert config["input_dim"] == 4 and config["output_dim"] == 2 and "weights" not in config
    clone = layers.Embedding.from_config(config)
    assert clone.get_config() == {**config, "name": clone.name}


def test_embedding_lora_trains_only_the_low_rank_factors():
    layer = layers.Embedding(6, 4, lora_rank=2)
    ids = np.array([[1, 2, 5]])
    before = layer(ids).numpy()
    assert [w.name for w in layer.weights] == ["embeddings", "lora_embeddings_a", "lora_embeddings_b"]
    assert [w.name for w in layer.trainable_weights] == ["lora_embeddings_a", "lora_embeddings_b"]
    np.testing.assert_array_equal(before, layer.get_weights()[0][ids])  # B starts at zero
    layer.lora_embeddings_b.assign(np.ones((2, 4), np.float32))
    table, a, b = layer.get_weights()
    np.testing.assert_allclose(layer(ids).numpy(), (table + a @ b * (2 / 2))[ids], rtol=1e-6)


def test_embedding_regularizer_penalty():
    layer = layers.Embedding(3, 2, embeddings_regularizer=lamina.regularizers.L2(0.1))
    layer(np.array([0]))
    w = layer.get_weights()[0]
    (penalty,) = layer.losses
    assert float(penalty.item()) == pytest.approx(0.1 * float((w.astype(np.float64) ** 2).sum()), rel=1e-5)


# ----- Dense, Activation, Input
def test_dense_contract_and_torch_parity():
    torch = pytest.importorskip("torch")
    layer = check_layer(layers.Dense, {"units": 3}, input_shape=(4, 5), expected_output_shape=(4, 3),
                        expected_num_trainable_weights=2, expected_weight_names=["kernel", "bias"])
    assert layer.count_params() == 5 * 3 + 3
    kernel = R.standard_normal((5, 3)).astype(np.float32)
    bias = R.standard_normal(3).astype(np.float32)
    layer.set_weights([kernel, bias])
    x = R.standard_normal((4, 5)).astype(np.float32)
    gy = R.standard_normal((4, 3)).astype(np.float32)
    xt = Tensor(x, requires_grad=True)
    y = layer(xt)
    gx, gk, gb = grad((y * Tensor(gy)).sum(), [xt, layer.kernel, layer.bias])
    lin = torch.nn.Linear(5, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(kernel.T))
        lin.bias.copy_(torch.tensor(bias))
    xtt = torch.tensor(x, requires_grad=True)
    yt = lin(xtt)
    (yt * torch.tensor(gy)).sum().backward()
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gx, xtt.grad.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gk, lin.weight.grad.numpy().T, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(gb, lin.bias.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_dense_on_integer_input_stays_float32():
    assert layers.Dense(2)(np.array([[1, 2, 3]])).dtype == np.float32


def test_activation_layer_contract():
    check_layer(layers.Activation, {"activation": "tanh"}, input_shape=(2, 3), expected_output_shape=(2, 3),
                expected_num_trainable_weights=0)


def test_functional_concatenate_of_two_dense_branches():
    x = lamina.Input(shape=(4,))
    y = layers.Concatenate()([layers.Dense(3)(x), layers.Dense(2)(x)])
    assert isinstance(y, layers.KerasTensor) and y.shape == (None, 5)


def test_dense_lora_freezes_the_kernel_and_trains_the_factors():
    """Dense(lora_rank=r, lora_alpha=a): y = x (W + a/r A B) + b, W frozen, B starting at zero (Keras's
    enable_lora); lamina had accepted lora_rank and ignored it."""
    rng = np.random.default_rng(0)
    layer = layers.Dense(4, lora_rank=2, lora_alpha=6)
    x = rng.standard_normal((5, 3)).astype(np.float32)
    y0 = layer(x).numpy()
    assert [w.name for w in layer.weights] == ["kernel", "bias", "lora_kernel_a", "lora_kernel_b"]
    assert [w.name for w in layer.trainable_weights] == ["bias", "lora_kernel_a", "lora_kernel_b"]
    np.testing.assert_allclose(y0, x @ layer.kernel.numpy() + layer.bias.numpy(), rtol=1e-6, atol=1e-6)
    layer.lora_kernel_b.assign(rng.standard_normal((2, 4)).astype(np.float32))
    a, b, k = (w.numpy().copy() for w in (layer.lora_kernel_a, layer.lora_kernel_b, layer.kernel))
    np.testing.assert_allclose(layer(x).numpy(), x @ (k + 3.0 * a @ b) + layer.bias.numpy(), rtol=1e-5, atol=1e-5)
    model = lamina.Sequential([lamina.Input((3,)), layer])
    model.compile("sgd", "mse")
    model.fit(x, rng.standard_normal((5, 4)).astype(np.float32), epochs=2, verbose=0)
    np.testing.assert_array_equal(layer.kernel.numpy(), k)            # frozen
    assert not np.array_equal(layer.lora_kernel_a.numpy(), a)          # trained
    with pytest.raises(ValueError, match="lora_rank must be a positive int"):
        layers.Dense(4, lora_rank=0)
    with pytest.raises(ValueError, match="already enabled"):
        layer.enable_lora(2)


def test_enable_lora_refuses_a_bad_rank():
    for layer in (layers.Dense(3), layers.Embedding(5, 3), layers.EinsumDense("ab,bc->ac", 3)):
        layer.build((None, 4))
        with pytest.raises(ValueError, match="lora_rank must be a positive int"):
            layer.enable_lora(0)
    with pytest.raises(ValueError, match="lora_rank must be a positive int"):
        layers.Embedding(5, 3, lora_rank=-1)
    with pytest.raises(ValueError, match="lora_rank must be a positive int"):
        layers.EinsumDense("ab,bc->ac", 3, lora_rank=1.5)


@pytest.mark.parametrize("make", [lambda: layers.Dense(3, kernel_constraint="non_neg", lora_rank=2),
                                  lambda: layers.Embedding(5, 3, embeddings_constraint="non_neg", lora_rank=2),
                                  lambda: layers.EinsumDense("ab,bc->ac", 3, kernel_constraint="non_neg",
                                                             lora_rank=2)])
def test_lora_refuses_a_constrained_weight(make):
    """As Keras: a constraint on the frozen weight could not hold for the merged one, so enable_lora refuses."""
    with pytest.raises(ValueError, match="LoRA is incompatible with (kernel|embeddings) constraints"):
        make().build((None, 4))


def test_einsum_dense_lora_freezes_the_kernel_and_trains_the_factors():
    """EinsumDense(lora_rank=r, lora_alpha=a) with a 3-D kernel (4, 2, 3): kernel + a/r * A @ B with A
    (4, 2, r) broadcast against B (r, 3), the kernel frozen, B from zero; lamina used to refuse lora_rank."""
    rng = np.random.default_rng(1)
    layer = layers.EinsumDense("ab,bhc->ahc", (2, 3), bias_axes="c", lora_rank=2, lora_alpha=4.0)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    y0 = layer(x).numpy()
    assert [w.name for w in layer.weights] == ["kernel", "bias", "lora_kernel_a", "lora_kernel_b"]
    assert [w.name for w in layer.trainable_weights] == ["bias", "lora_kernel_a", "lora_kernel_b"]
    assert layer.lora_kernel_a.shape == (4, 2, 2) and layer.lora_kernel_b.shape == (2, 3)
    k = layer.kernel.numpy().copy()
    np.testing.assert_allclose(y0, np.einsum("ab,bhc->ahc", x, k) + layer.bias.numpy(), rtol=1e-5, atol=1e-5)
    layer.lora_kernel_b.assign(rng.standard_normal((2, 3)).astype(np.float32))
    a, b = layer.lora_kernel_a.numpy().copy(), layer.lora_kernel_b.numpy().copy()
    want = np.einsum("ab,bhc->ahc", x, k + 2.0 * np.einsum("bhr,rc->bhc", a, b)) + layer.bias.numpy()
    np.testing.assert_allclose(layer(x).numpy(), want, rtol=1e-5, atol=1e-5)
    model = lamina.Sequential([lamina.Input((4,)), layer])
    model.compile("sgd", "mse")
    model.fit(x, rng.standard_normal((5, 2, 3)).astype(np.float32), epochs=2, verbose=0)
    np.testing.assert_array_equal(layer.kernel.numpy(), k)            # frozen
    assert not np.array_equal(layer.lora_kernel_a.numpy(), a)          # trained
    assert layers.EinsumDense.from_config(layer.get_config()).lora_rank == 2
