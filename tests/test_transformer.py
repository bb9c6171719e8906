"""Transformer blocks: layer contract, parity with torch.nn.TransformerEncoderLayer/DecoderLayer
(converted weights, post- and pre-norm, padding and causal masks, cross-attention), causality,
gradient flow, and use inside Sequential and functional models."""
import numpy as np
import pytest

import lamina
from lamina import Tensor, grad, layers
from lamina.testing import check_grad, check_layer

R = np.random.default_rng(11)


def _randomize(layer, seed=0):
    rng = np.random.default_rng(seed)
    layer.set_weights([(rng.standard_normal(w.shape) * 0.4 + (1.0 if w.name == "gamma" else 0.0)).astype(np.float32)
                       for w in layer.weights])


@pytest.mark.parametrize("normalize_first", [False, True])
def test_encoder_layer_contract(normalize_first):
    layer = check_layer(layers.TransformerEncoder, {"intermediate_dim": 12, "num_heads": 2,
                                                    "normalize_first": normalize_first},
                        input_shape=(2, 4, 8), expected_output_shape=(2, 4, 8), expected_num_trainable_weights=16,
                        expected_num_non_trainable_weights=0)
    assert layer.count_params() == 4 * 8 * 8 + 4 * 8 + 4 * 8 + 2 * 8 * 12 + 12 + 8


def test_encoder_parameter_count_of_the_benchmark_block():
    enc = layers.TransformerEncoder(intermediate_dim=512, num_heads=4)
    enc(np.zeros((1, 3, 128), np.float32))
    assert enc.count_params() == 198272


def test_decoder_layer_contract():
    check_layer(layers.TransformerDecoder, {"intermediate_dim": 12, "num_heads": 2}, input_shape=(2, 4, 8),
                expected_output_shape=(2, 4, 8), expected_num_trainable_weights=16)


torch = pytest.importorskip("torch")


def _mha_to_torch(mha, ref, dim_q, dim_kv):
    qk, qb, kk, kb, vk, vb, ok, ob = mha.get_weights()
    with torch.no_grad():
        if dim_q == dim_kv:
            ref.in_proj_weight.copy_(torch.tensor(np.concatenate([w.reshape(w.shape[0], -1).T for w in (qk, kk, vk)])))
        else:
            ref.q_proj_weight.copy_(torch.tensor(qk.reshape(dim_q, -1).T))
            ref.k_proj_weight.copy_(torch.tensor(kk.reshape(dim_kv, -1).T))
            ref.v_proj_weight.copy_(torch.tensor(vk.reshape(dim_kv, -1).T))
        ref.in_proj_bias.copy_(torch.tensor(np.concatenate([qb.ravel(), kb.ravel(), vb.ravel()])))
        ref.out_proj.weight.copy_(torch.tensor(ok.reshape(-1, ok.shape[-1]).T))
        ref.out_proj.bias.copy_(torch.tensor(ob))


def _dense_to_torch(dense, lin):
    k, b = dense.get_weights()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(k.T))
        lin.bias.copy_(torch.tensor(b))


def _norm_to_torch(ln, norm):
    g, b = ln.get_weights()
    with torch.no_grad():
        norm.weight.copy_(torch.tensor(g))
        norm.bias.copy_(torch.tensor(b))


def _close(a, b, what, rtol=2e-4, atol=2e-5):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol, err_msg=what)


@pytest.mark.parametrize("normalize_first", [False, True])
@pytest.mark.parametrize("how_masked", [None, "padding_mask", "keras_mask"])
def test_encoder_matches_torch(normalize_first, how_masked):
    b, t, d, f, h = 2, 5, 8, 12, 2
    enc = layers.TransformerEncoder(f, h, normalize_first=normalize_first)
    x = R.standard_normal((b, t, d)).astype(np.float32)
    enc(x)
    _randomize(enc)
    ref = torch.nn.TransformerEncoderLayer(d, h, dim_feedforward=f, dropout=0.0, batch_first=True,
                                           layer_norm_eps=1e-5, norm_first=normalize_first)
    _mha_to_torch(enc._self_attention_layer, ref.self_attn, d, d)
    _dense_to_torch(enc._feedforward_intermediate_dense, ref.linear1)
    _dense_to_torch(enc._feedforward_output_dense, ref.linear2)
    _norm_to_torch(enc._self_attention_layer_norm, ref.norm1)
    _norm_to_torch(enc._feedforward_layer_norm, ref.norm2)
    pad = np.ones((b, t), bool)
    pad[1, -2:] = False
    # with the Keras mask on the inputs, padded query rows attend nowhere (zeros); torch still fills them
    live = pad if how_masked == "keras_mask" else np.ones((b, t), bool)
    gy = R.standard_normal((b, t, d)).astype(np.float32) * live[..., None]
    xt = Tensor(x, requires_grad=True)
    kw = {}
    if how_masked == "padding_mask":
        kw["padding_mask"] = pad
    elif how_masked == "keras_mask":
        xt._keras_mask = Tensor(pad)
    y = enc(xt, **kw)
    gs = grad((y * Tensor(gy)).sum(), [xt] + enc.trainable_weights)
    xtt = torch.tensor(x, requires_grad=True)
    ref.train()  # no fast path: the plain math
    yt = ref(xtt, src_key_padding_mask=None if how_masked is None else torch.tensor(~pad))
    (yt * torch.tensor(gy)).sum().backward()
    _close(y.numpy()[live], yt.detach().numpy()[live], "output")
    _close(gs[0], xtt.grad.numpy(), "dx")
    mha = enc._self_attention_layer
    _close(gs[1 + 7], ref.self_attn.out_proj.bias.grad.numpy(), "d output bias")
    _close(gs[1 + 1].reshape(-1), ref.self_attn.in_proj_bias.grad.numpy()[:d], "d query bias")
    names = [w.path for w in enc.trainable_weights]
    i = names.index(f"{enc.name}/feedforward_intermediate_dense/kernel")   # Keras's paths: the sublayers' scopes
    _close(gs[1 + i], ref.linear1.weight.grad.numpy().T, "d W1")
    i = names.index(f"{enc.name}/self_attention_layer_norm/gamma")
    _close(gs[1 + i], ref.norm1.weight.grad.numpy(), "d gamma1")
    assert mha.num_heads == h


@pytest.mark.parametrize("normalize_first", [False, True])
def test_decoder_with_cross_attention_matches_torch(normalize_first):
    b, t, s, d, f, h = 2, 4, 6, 8, 12, 2
    dec = layers.TransformerDecoder(f, h, normalize_first=normalize_first)
    x = R.standard_normal((b, t, d)).astype(np.float32)
    mem = R.standard_normal((b, s, d)).astype(np.float32)
    dec(x, mem)
    _randomize(dec, 1)
    ref = torch.nn.TransformerDecoderLayer(d, h, dim_feedforward=f, dropout=0.0, batch_first=True,
                                           layer_norm_eps=1e-5, norm_first=normalize_first)
    _mha_to_torch(dec._self_attention_layer, ref.self_attn, d, d)
    _mha_to_torch(dec._cross_attention_layer, ref.multihead_attn, d, d)
    _dense_to_torch(dec._feedforward_intermediate_dense, ref.linear1)
    _dense_to_torch(dec._feedforward_output_dense, ref.linear2)
    _norm_to_torch(dec._self_attention_layer_norm, ref.norm1)
    _norm_to_torch(dec._cross_attention_layer_norm, ref.norm2)
    _norm_to_torch(dec._feedforward_layer_norm, ref.norm3)
    enc_pad = np.ones((b, s), bool)
    enc_pad[0, -3:] = False
    gy = R.standard_normal((b, t, d)).astype(np.float32)
    xt, mt = Tensor(x, requires_grad=True), Tensor(mem, requires_grad=True)
    y = dec(xt, mt, encoder_padding_mask=enc_pad)
    gx, gm = grad((y * Tensor(gy)).sum(), [xt, mt])
    xtt, mtt = torch.tensor(x, requires_grad=True), torch.tensor(mem, requires_grad=True)
    ref.train()
    causal = ~torch.ones(t, t, dtype=torch.bool).tril()
    yt = ref(xtt, mtt, tgt_mask=causal, memory_key_padding_mask=torch.tensor(~enc_pad))
    (yt * torch.tensor(gy)).sum().backward()
    _close(y.numpy(), yt.detach().numpy(), "output")
    _close(gx, xtt.grad.numpy(), "d decoder input")
    _close(gm, mtt.grad.numpy(), "d encoder output")


def test_decoder_only_is_causal_and_gradients_flow():
    dec = layers.TransformerDecoder(16, 2, normalize_first=True)
    x = R.standard_normal((2, 6, 8)).astype(np.float32)
    y = dec(x).numpy()
    x2 = x.copy()
    x2[:, 4:] += 1.0                               # change the future
    y2 = dec(x2).numpy()
    np.testing.assert_allclose(y[:, :4], y2[:, :4], rtol=1e-5, atol=1e-6)
    assert not np.allclose(y[:, 4:], y2[:, 4:])
    y3 = dec(x2, use_causal_mask=False).numpy()
    assert not np.allclose(y3[:, :4], y2[:, :4])
    out, scores = dec(x, return_attention_scores=True)
    assert scores.shape == (2, 2, 6, 6) and (np.triu(scores.numpy()[0, 0], 1) == 0).all()
    xt = Tensor(x, requires_grad=True)
    gs = grad(dec(xt).sum() * 1.0, [xt] + dec.trainable_weights)
    assert all(g is not None and np.abs(g).sum() > 0 for g in gs[:1] + gs[1:-2])
    with pytest.raises(ValueError, match="cross-attention"):
        dec(x, R.standard_normal((2, 3, 8)).astype(np.float32))


def test_blocks_check_grad_small():
    enc = layers.TransformerEncoder(6, 2, activation="gelu")
    x = R.standard_normal((2, 3, 4))
    enc(x.astype(np.float32))
    pad = np.array([[1, 1, 0], [1, 1, 1]], bool)
    check_grad(lambda a: enc(a, padding_mask=pad), x, params=enc.trainable_weights, name="encoder")
    dec = layers.TransformerDecoder(6, 2)
    m = R.standard_normal((2, 4, 4))
    dec(x.astype(np.float32), m.astype(np.float32))
    check_grad(lambda a, b: dec(a, b), x, m, params=dec.trainable_weights, name="decoder")


def test_encoder_attention_scores_dropout_and_errors():
    enc = layers.TransformerEncoder(8, 2, dropout=0.5, name="enc")
    x = R.standard_normal((2, 4, 6)).astype(np.float32)
    y, s = enc(x, return_attention_scores=True)
    assert y.shape == (2, 4, 6) and s.shape == (2, 2, 4, 4)
    np.testing.assert_array_equal(enc(x).numpy(), enc(x, training=False).numpy())
    assert not np.allclose(enc(x).numpy(), enc(x, training=True).numpy())
    with pytest.raises(ValueError, match="enc"):
        enc(np.zeros((2, 4, 7), np.float32))
    with pytest.raises(ValueError, match="head size"):
        layers.TransformerEncoder(8, 4)(np.zeros((1, 2, 3), np.float32))
    with pytest.raises(ValueError, match="intermediate_dim"):
        layers.TransformerEncoder(0, 2)
    cfg = enc.get_config()
    assert cfg["intermediate_dim"] == 8 and cfg["num_heads"] == 2 and cfg["normalize_first"] is False
    clone = layers.TransformerEncoder.from_config(cfg)
    clone(x)
    clone.set_weights(enc.get_weights())
    np.testing.assert_allclose(clone(x).numpy(), enc(x).numpy(), rtol=1e-6)


def test_blocks_in_functional_and_sequential_models(tmp_path):
    if not hasattr(lamina, "Model") or not hasattr(lamina, "Sequential"):
        pytest.skip("models are not there yet")
    inp = lamina.Input(shape=(5, 8))
    h = layers.TransformerEncoder(16, 2)(inp)
    dec_in = lamina.Input(shape=(4, 8))
    out = layers.TransformerDecoder(16, 2)(dec_in, h)
    assert out.shape == (None, 4, 8)
    model = lamina.Model([inp, dec_in], out)
    a, b = R.standard_normal((2, 5, 8)).astype("f4"), R.standard_normal((2, 4, 8)).astype("f4")
    y = model([a, b]).numpy()
    assert y.shape == (2, 4, 8)
    if hasattr(model, "save"):   # the blocks' configs and weights survive a model file
        path = str(tmp_path / "t.keras")
        model.save(path)
        np.testing.assert_allclose(lamina.models.load_model(path)([a, b]).numpy(), y, rtol=1e-6, atol=1e-6)
    seq = lamina.Sequential([lamina.Input(shape=(5, 8)), layers.TransformerEncoder(16, 2, normalize_first=True),
                             layers.TransformerEncoder(16, 2)])
    assert tuple(seq(a).shape) == (2, 5, 8)
