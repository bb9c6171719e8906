"""Attention: gradient checks of the fused op, parity of MultiHeadAttention with PyTorch (converted
weights), Attention/AdditiveAttention against NumPy references of Keras's formulas, positional layers."""
import numpy as np
import pytest

import lamina
from lamina import Tensor, grad, layers, ops
from lamina.ops.attention import scaled_dot_product_attention as sdpa
from lamina.testing import check_grad, check_layer

R = np.random.default_rng(3)


def _mask(shape, p=0.7, seed=0):
    m = np.random.default_rng(seed).random(shape) < p
    m[..., 0] = True  # at least one key per row unless a test wants a fully masked row
    return m


# ---------------------------------------------------------------- fused op: gradient checks
OP_CASES = {
    "plain": dict(q=(2, 3, 4, 5), k=(2, 3, 4, 5), v=(2, 3, 4, 5)),
    "cross_tq_ne_tk_dv_ne_d": dict(q=(2, 2, 3, 4), k=(2, 2, 5, 4), v=(2, 2, 5, 6)),
    "padding_mask": dict(q=(2, 2, 4, 3), k=(2, 2, 5, 3), v=(2, 2, 5, 3), mask=(2, 1, 1, 5)),
    "full_mask": dict(q=(2, 3, 4), k=(2, 5, 4), v=(2, 5, 2), mask=(2, 3, 5)),
    "causal": dict(q=(2, 2, 4, 3), k=(2, 2, 4, 3), v=(2, 2, 4, 5), causal=True),
    "causal_and_padding": dict(q=(2, 5, 3), k=(2, 5, 3), v=(2, 5, 3), mask=(2, 1, 5), causal=True),
    "fully_masked_row": dict(q=(2, 4, 3), k=(2, 5, 3), v=(2, 5, 2), mask=(2, 4, 5), dead_row=True),
    "broadcast_kv": dict(q=(2, 3, 4, 3), k=(1, 3, 5, 3), v=(1, 3, 5, 2)),
}


def _case_inputs(c):
    q, k, v = (R.standard_normal(c[n]) for n in ("q", "k", "v"))
    mask = None
    if "mask" in c:
        mask = _mask(c["mask"])
        if c.get("dead_row"):
            mask[0, 1, :] = False
    return q, k, v, mask


@pytest.mark.parametrize("name", sorted(OP_CASES))
def test_sdpa_grad(name):
    c = OP_CASES[name]
    q, k, v, mask = _case_inputs(c)
    check_grad(lambda a, b, d: sdpa(a, b, d, mask=mask, is_causal=c.get("causal", False)), q, k, v, name=name)


def test_sdpa_grad_with_returned_weights_and_scale():
    q, k, v = R.standard_normal((2, 3, 4)), R.standard_normal((2, 5, 4)), R.standard_normal((2, 5, 3))
    mask = _mask((2, 3, 5))

    def fn(a, b, d):
        o, w = sdpa(a, b, d, mask=mask, scale=0.7, return_weights=True)
        return ops.concatenate([o, w], axis=-1)   # both outputs feed the loss
    check_grad(fn, q, k, v)


def test_sdpa_grad_with_dropout():
    q, k, v = R.standard_normal((2, 3, 4)), R.standard_normal((2, 5, 4)), R.standard_normal((2, 5, 3))
    # a fresh Generator with one seed per call: every evaluation draws the same dropout mask
    check_grad(lambda a, b, d: sdpa(a, b, d, dropout_rate=0.4, training=True, rng=np.random.default_rng(5)), q, k, v)


def test_sdpa_fully_masked_row_is_zero_not_nan():
    q, k, v = (R.standard_normal((1, 3, 4)).astype(np.float32) for _ in range(3))
    mask = np.ones((1, 3, 3), bool)
    mask[0, 1] = False
    o, w = sdpa(q, k, v, mask=mask, return_weights=True)
    assert np.isfinite(o.numpy()).all()
    np.testing.assert_array_equal(o.numpy()[0, 1], 0)
    np.testing.assert_array_equal(w.numpy()[0, 1], 0)
    np.testing.assert_allclose(w.numpy()[0, [0, 2]].sum(-1), 1, rtol=1e-6)


def test_sdpa_fully_masked_row_uniform_as_keras():
    q, k, v = (R.standard_normal((1, 3, 4)) for _ in range(3))
    mask = np.ones((1, 3, 3), bool)
    mask[0, 1] = False
    mask[0, 2, 0] = False
    o, w = sdpa(q.astype(np.float32), k.astype(np.float32), v.astype(np.float32), mask=mask, return_weights=True,
                empty_rows="uniform")
    np.testing.assert_allclose(w.numpy()[0, 1], 1 / 3, rtol=1e-6)           # where(mask, s, -1e9) -> uniform
    np.testing.assert_allclose(o.numpy()[0, 1], v[0].mean(0), rtol=1e-5)
    assert w.numpy()[0, 2, 0] == 0 and w.numpy()[0, 2].sum() == pytest.approx(1, rel=1e-6)
    # the uniform row's weights are constants: no gradient reaches its query, the values get 1/3 each
    check_grad(lambda a, b, d: sdpa(a, b, d, mask=mask, empty_rows="uniform"), q, k, v)
    with pytest.raises(ValueError, match="empty_rows"):
        sdpa(q, k, v, empty_rows="nan")


def test_sdpa_is_stable_for_large_scores_and_keeps_float32():
    q = np.full((1, 2, 4), 300.0, np.float32)
    o = sdpa(q, q, q, scale=1.0)
    assert o.dtype == np.float32 and np.isfinite(o.numpy()).all()


def test_sdpa_dropout_only_in_training():
    q = R.standard_normal((2, 6, 4)).astype(np.float32)
    a = sdpa(q, q, q, dropout_rate=0.5, training=False).numpy()
    b = sdpa(q, q, q).numpy()
    np.testing.assert_array_equal(a, b)
    c = sdpa(q, q, q, dropout_rate=0.5, training=True).numpy()
    assert not np.allclose(a, c)


@pytest.mark.parametrize("bad", ["d", "tk", "mask", "rate"])
def test_sdpa_errors(bad):
    q, k, v = np.zeros((2, 3, 4), "f4"), np.zeros((2, 5, 4), "f4"), np.zeros((2, 5, 6), "f4")
    kw = {}
    if bad == "d":
        k = np.zeros((2, 5, 3), "f4")
    elif bad == "tk":
        v = np.zeros((2, 4, 6), "f4")
    elif bad == "mask":
        kw["mask"] = np.ones((2, 3, 4), bool)
    else:
        kw["dropout_rate"] = 1.0
    with pytest.raises(ValueError, match="scaled_dot_product_attention"):
        sdpa(q, k, v, **kw)


# ---------------------------------------------------------------- fused op: parity with PyTorch
torch = pytest.importorskip("torch")
F = torch.nn.functional


def _grads_lamina(fn, arrays, gy):
    ts = [Tensor(a, requires_grad=True) for a in arrays]
    y = fn(*ts)
    gs = grad((y * Tensor(gy)).sum(), ts)
    return y.numpy(), gs


def _grads_torch(fn, arrays, gy):
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    y = fn(*ts)
    (y * torch.tensor(gy)).sum().backward()
    return y.detach().numpy(), [t.grad.numpy() for t in ts]


def _close(a, b, rtol=1e-4, atol=1e-5, what=""):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol, err_msg=what)


@pytest.mark.parametrize("causal,masked,scale", [(False, False, None), (True, False, None), (False, True, 0.3),
                                                 (True, True, None), (False, True, -0.6), (True, False, 0.0)])
def test_sdpa_matches_torch(causal, masked, scale):
    """Against PyTorch, output and gradients; a positive scale is folded into the softmax, a negative or zero one
    multiplies Q (ops/attention.py)."""
    q = R.standard_normal((2, 3, 5, 4)).astype(np.float32)
    k = R.standard_normal((2, 3, 6, 4)).astype(np.float32)
    v = R.standard_normal((2, 3, 6, 7)).astype(np.float32)
    mask = _mask((2, 1, 5, 6)) if masked else None
    gy = R.standard_normal((2, 3, 5, 7)).astype(np.float32)
    ours = _grads_lamina(lambda a, b, c: sdpa(a, b, c, mask=mask, is_causal=causal, scale=scale), (q, k, v), gy)
    tm = None if mask is None else torch.tensor(mask)
    if causal and tm is not None:   # torch refuses is_causal with an explicit mask: merge them
        tm = tm & torch.ones(5, 6, dtype=torch.bool).tril()
    ref = _grads_torch(lambda a, b, c: F.scaled_dot_product_attention(
        a, b, c, attn_mask=tm, is_causal=causal and tm is None, scale=scale), (q, k, v), gy)
    _close(ours[0], ref[0], what="output")
    for g, r, n in zip(ours[1], ref[1], "qkv"):
        _close(g, r, what=f"d{n}")


# ---------------------------------------------------------------- MultiHeadAttention
def _torch_mha_reference(mha, tq, tv, tk, mask, params):
    """Keras's MultiHeadAttention written with torch ops and the layer's (converted) weights."""
    qk, qb, kk, kb, vk, vb, ok, ob = params
    h, kd, vd = mha.num_heads, mha.key_dim, mha.value_dim

    def proj(x, w, b):                         # (B, T, in) @ (in, h*d) -> (B, h, T, d)
        d = w.shape[-1]
        y = x @ w.reshape(w.shape[0], h * d) + b.reshape(h * d)
        return y.reshape(x.shape[0], x.shape[1], h, d).transpose(1, 2)
    q, k, v = proj(tq, qk, qb), proj(tk, kk, kb), proj(tv, vk, vb)
    # Keras's masked softmax: where(mask, scores, -1e9), so a row with no key gets uniform weights
    s = (q @ k.transpose(-1, -2)) / np.sqrt(kd)
    if mask is not None:
        s = torch.where(torch.tensor(mask)[:, None], s, torch.tensor(-1e9))
    o = torch.softmax(s, dim=-1) @ v
    o = o.transpose(1, 2).reshape(tq.shape[0], tq.shape[1], h * vd)
    return o @ ok.reshape(h * vd, -1) + ob


MHA_CASES = {
    "self": dict(heads=2, key_dim=3, tq=5, tv=5, dim=6),
    "self_padding_masks": dict(heads=2, key_dim=3, tq=5, tv=5, dim=6, keras_mask=True),
    "causal": dict(heads=3, key_dim=2, tq=5, tv=5, dim=4, causal=True),
    "cross_diff_lengths_dims": dict(heads=2, key_dim=3, value_dim=5, tq=4, tv=6, dim=6, vdim=5, kdim=7,
                                    keras_mask=True, attention_mask=True),
    "value_dim_and_output_shape": dict(heads=2, key_dim=4, value_dim=3, tq=3, tv=4, dim=5, output_shape=7),
}


def _mha_inputs(c):
    b = 2
    dim, vdim, kdim = c["dim"], c.get("vdim", c["dim"]), c.get("kdim", c.get("vdim", c["dim"]))
    q = R.standard_normal((b, c["tq"], dim)).astype(np.float32)
    cross = "vdim" in c or c["tq"] != c["tv"]
    v = R.standard_normal((b, c["tv"], vdim)).astype(np.float32) if cross else q
    k = R.standard_normal((b, c["tv"], kdim)).astype(np.float32) if "kdim" in c else None
    return q, v, k


@pytest.mark.parametrize("name", sorted(MHA_CASES))
def test_mha_matches_torch_reference(name):
    c = MHA_CASES[name]
    mha = layers.MultiHeadAttention(c["heads"], c["key_dim"], value_dim=c.get("value_dim"),
                                    output_shape=c.get("output_shape"))
    q, v, k = _mha_inputs(c)
    self_attn = v is q
    mha(q, v, k)
    rng = np.random.default_rng(7)   # random biases too (zeros would hide bias-layout bugs)
    mha.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.5 for w in mha.weights])
    params = [w.numpy() for w in mha.weights]
    b, tq, tv = q.shape[0], c["tq"], c["tv"]
    qmask = vmask = amask = None
    if c.get("keras_mask"):
        qmask = np.ones((b, tq), bool)
        qmask[1, -1:] = False
        vmask = np.ones((b, tv), bool)
        vmask[0, -2:] = False
        if self_attn:
            vmask = qmask
    if c.get("attention_mask"):
        amask = _mask((b, tq, tv), seed=3)
    # the full mask Keras builds: query[:, :, None] & value[:, None, :] & attention & causal
    full = np.ones((b, tq, tv), bool)
    if qmask is not None:
        full &= qmask[:, :, None] & vmask[:, None, :]
    if amask is not None:
        full &= amask
    if c.get("causal"):
        full &= np.tril(np.ones((tq, tv), bool))
    live = full.any(-1)                       # rows with at least one key (the rest: uniform, as Keras)
    out_dim = c.get("output_shape") or c["dim"]
    gy = R.standard_normal((b, tq, out_dim)).astype(np.float32)

    inputs = [q] if self_attn else [q, v] + ([k] if k is not None else [])
    ts = [Tensor(a, requires_grad=True) for a in inputs]
    if qmask is not None:
        ts[0]._keras_mask = Tensor(qmask)
        (ts[0] if self_attn else ts[1])._keras_mask = Tensor(qmask if self_attn else vmask)
    call_v = ts[0] if self_attn else ts[1]
    call_k = ts[2] if len(ts) > 2 else None
    y = mha(ts[0], call_v, call_k, attention_mask=amask, use_causal_mask=c.get("causal", False))
    if qmask is not None:
        np.testing.assert_array_equal(y._keras_mask.numpy(), qmask)
    gs = grad((y * Tensor(gy)).sum(), ts + list(mha.trainable_weights))

    if c.get("keras_mask"):
        assert not live.all()  # the case has rows with no key to attend: they are compared below too
    tts = [torch.tensor(a, requires_grad=True) for a in inputs]
    tp = [torch.tensor(p, requires_grad=True) for p in params]
    tv_ = tts[0] if self_attn else tts[1]
    tk_ = tts[2] if len(tts) > 2 else tv_
    yt = _torch_mha_reference(mha, tts[0], tv_, tk_, full, tp)
    (yt * torch.tensor(gy)).sum().backward()
    _close(y.numpy(), yt.detach().numpy(), what="output")
    names = [f"input {i}" for i in range(len(ts))] + [w.path for w in mha.trainable_weights]
    for g, t, n in zip(gs, tts + tp, names):
        _close(g, t.grad.numpy(), rtol=2e-4, atol=2e-5, what=n)


def test_mha_matches_torch_nn_multihead_attention():
    b, t, dim, h = 2, 5, 8, 2
    mha = layers.MultiHeadAttention(h, dim // h)
    x = R.standard_normal((b, t, dim)).astype(np.float32)
    mha(x, x)
    rng = np.random.default_rng(1)
    mha.set_weights([rng.standard_normal(w.shape).astype(np.float32) * 0.5 for w in mha.weights])
    qk, qb, kk, kb, vk, vb, ok, ob = mha.get_weights()
    ref = torch.nn.MultiheadAttention(dim, h, batch_first=True)
    with torch.no_grad():   # converter: Keras (in, heads, d) kernels -> torch (heads*d, in) rows
        ref.in_proj_weight.copy_(torch.tensor(np.concatenate([w.reshape(dim, dim).T for w in (qk, kk, vk)])))
        ref.in_proj_bias.copy_(torch.tensor(np.concatenate([qb.ravel(), kb.ravel(), vb.ravel()])))
        ref.out_proj.weight.copy_(torch.tensor(ok.reshape(dim, dim).T))
        ref.out_proj.bias.copy_(torch.tensor(ob))
    pad = np.ones((b, t), bool)
    pad[1, -2:] = False
    gy = R.standard_normal((b, t, dim)).astype(np.float32)
    xt = Tensor(x, requires_grad=True)
    y = mha(xt, xt, value_mask=pad, use_causal_mask=True)
    (gx,) = grad((y * Tensor(gy)).sum(), [xt])
    xtt = torch.tensor(x, requires_grad=True)
    causal = ~torch.ones(t, t, dtype=torch.bool).tril()          # torch: True = blocked
    yt, _ = ref(xtt, xtt, xtt, key_padding_mask=torch.tensor(~pad), attn_mask=causal, need_weights=False)
    (yt * torch.tensor(gy)).sum().backward()
    _close(y.numpy(), yt.detach().numpy(), what="output")
    _close(gx, xtt.grad.numpy(), what="dx")


def test_mha_parameter_count_and_layout():
    mha = layers.MultiHeadAttention(num_heads=4, key_dim=32)
    x = np.zeros((1, 3, 128), np.float32)
    mha(x, x)
    assert mha.count_params() == 66048
    assert [w.shape for w in mha.weights] == [(128, 4, 32), (4, 32)] * 3 + [(4, 32, 128), (128,)]
    assert [w.path.split("/", 1)[1] for w in mha.weights] == [
        "query/kernel", "query/bias", "key/kernel", "key/bias", "value/kernel", "value/bias",
        "attention_output/kernel", "attention_output/bias"]
    m2 = layers.MultiHeadAttention(2, 16, value_dim=8, use_bias=False)
    q, v = np.zeros((1, 3, 10), "f4"), np.zeros((1, 4, 6), "f4")
    m2(q, v)
    assert m2.count_params() == 10 * 32 + 6 * 32 + 6 * 16 + 16 * 10


def test_mha_scores_dropout_config_and_errors():
    mha = layers.MultiHeadAttention(2, 3, dropout=0.5, seed=1, name="att")
    q, v = R.standard_normal((2, 4, 6)).astype("f4"), R.standard_normal((2, 5, 6)).astype("f4")
    y, s = mha(q, v, return_attention_scores=True, use_causal_mask=True)
    assert y.shape == (2, 4, 6) and s.shape == (2, 2, 4, 5)
    np.testing.assert_allclose(s.numpy().sum(-1), 1, rtol=1e-5)
    assert (s.numpy()[..., 0, 1:] == 0).all()
    y1 = mha(q, v).numpy()
    np.testing.assert_array_equal(y1, mha(query=q, value=v, training=False).numpy())
    assert not np.allclose(y1, mha(q, v, training=True).numpy())
    clone = layers.MultiHeadAttention.from_config(mha.get_config())
    clone(q, v)
    clone.set_weights(mha.get_weights())
    np.testing.assert_allclose(clone(q, v).numpy(), y1, rtol=1e-6)
    with pytest.raises(ValueError, match="att"):
        mha(np.zeros((2, 4, 7), "f4"), v)
    same = layers.MultiHeadAttention(2, 3, attention_axes=(1,))   # what Keras writes for (batch, time, features)
    same(q, v)
    with pytest.raises(ValueError, match="attention_axes"):
        x4 = np.zeros((2, 3, 4, 5), "f4")
        layers.MultiHeadAttention(2, 3, attention_axes=(2,))(x4, x4)
    with pytest.raises(ValueError, match="num_heads"):
        layers.MultiHeadAttention(0, 3)
    with pytest.raises(ValueError, match="needs a value"):
        layers.MultiHeadAttention(2, 3)(q)


def test_mha_symbolic_and_higher_rank():
    inp = lamina.layers.Input(shape=(7, 8))
    mha = layers.MultiHeadAttention(2, 4)
    out = mha(inp, inp)
    assert out.shape == (None, 7, 8)
    m4 = layers.MultiHeadAttention(2, 4)
    x = R.standard_normal((2, 3, 2, 8)).astype("f4")
    y, s = m4(x, x, return_attention_scores=True)
    assert y.shape == (2, 3, 2, 8) and s.shape == (2, 2, 3, 2, 3, 2)
    flat = x.reshape(2, 6, 8)
    m3 = layers.MultiHeadAttention(2, 4)
    m3(flat, flat)
    m3.set_weights(m4.get_weights())
    np.testing.assert_allclose(m3(flat, flat).numpy().reshape(y.shape), y.numpy(), rtol=1e-5, atol=1e-6)


def test_mha_weight_gradients_check_grad():
    mha = layers.MultiHeadAttention(2, 2, value_dim=3)
    q, v = R.standard_normal((2, 3, 4)), R.standard_normal((2, 4, 5))
    mask = _mask((2, 3, 4))
    mha(q.astype("f4"), v.astype("f4"))
    check_grad(lambda a, b: mha(a, b, attention_mask=mask), q, v, params=mha.trainable_weights, name="mha")


def test_project_heads_grad_with_a_missing_bias_and_an_unused_output():
    from lamina.ops.attention import project_heads
    x = R.standard_normal((2, 3, 4))
    wq, wk, wv = R.standard_normal((4, 2, 3)), R.standard_normal((4, 2, 3)), R.standard_normal((4, 2, 5))
    bq, bv = R.standard_normal((2, 3)), R.standard_normal((2, 5))

    def fn(a, q_kernel, k_kernel, v_kernel, q_bias, v_bias):
        q, _, v = project_heads(a, (q_kernel, k_kernel, v_kernel), (q_bias, None, v_bias))
        return ops.sum(q * q) + ops.sum(ops.sin(v))            # the key projection gets no gradient
    check_grad(fn, x, wq, wk, wv, bq, bv, name="project_heads")
    q, k, v = project_heads(x, (wq, wk, wv), (bq, None, bv))
    np.testing.assert_allclose(k.numpy(), np.einsum("ntd,dhk->nhtk", x, wk), rtol=1e-12)
    np.testing.assert_allclose(v.numpy(), np.einsum("ntd,dhk->nhtk", x, wv) + bv[:, None], rtol=1e-12)


def test_mha_self_attention_runs_one_projection_product_with_the_same_results():
    """Self-attention (query is value, no key) projects its input once through the three kernels side by side;
    the results equal three separate projections (another tensor with the same values as value)."""
    from lamina.ops import attention as att
    x = lamina.Variable(R.standard_normal((2, 5, 8)).astype(np.float32))
    mha = layers.MultiHeadAttention(2, 4, value_dim=3)
    mha(x, x)                           # built
    calls = []
    forward = att.ProjectHeads.forward
    att.ProjectHeads.forward = lambda self, *a: calls.append(1) or forward(self, *a)
    try:
        fused = mha(x, x)
        g_fused = grad(ops.sum(fused * fused), [x] + mha.trainable_weights)
        assert len(calls) == 1
        apart = mha(x, ops.add(x, 0.0))
        g_apart = grad(ops.sum(apart * apart), [x] + mha.trainable_weights)
        assert len(calls) == 1
    finally:
        att.ProjectHeads.forward = forward
    np.testing.assert_array_equal(fused.numpy(), apart.numpy())
    for a, b in zip(g_fused, g_apart):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- Attention / AdditiveAttention
def _softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _keras_attention_reference(q, v, k, q_mask, v_mask, causal, mode, scale, concat_w, additive_scale=None):
    """Keras 3's Attention/AdditiveAttention formulas, slowly, in NumPy."""
    if mode == "dot":
        s = q @ np.swapaxes(k, -1, -2)
        if scale is not None:
            s = s * scale
    elif mode == "concat":
        z = q[:, :, None, :] + k[:, None, :, :]
        s = concat_w * np.tanh(z * scale if scale is not None else z).sum(-1)
    else:  # additive
        z = np.tanh(q[:, :, None, :] + k[:, None, :, :])
        s = (z * additive_scale if additive_scale is not None else z).sum(-1)
    m = None
    if v_mask is not None:
        m = v_mask[:, None, :]
    if causal:
        c = np.tril(np.ones((q.shape[1], k.shape[1]), bool))[None]
        m = c if m is None else m & c
    if m is not None:
        s = s - 1e9 * (~m)
    w = _softmax(s)
    out = w @ v
    if q_mask is not None:
        out = out * q_mask[..., None]
    return out, w


@pytest.mark.parametrize("cls,mode,use_scale", [("Attention", "dot", False), ("Attention", "dot", True),
                                                ("Attention", "concat", False), ("Attention", "concat", True),
                                                ("AdditiveAttention", None, True), ("AdditiveAttention", None, False)])
@pytest.mark.parametrize("masks,causal,with_key", [(False, False, False), (True, False, True), (True, True, False)])
def test_attention_matches_keras_formula(cls, mode, use_scale, masks, causal, with_key):
    kw = {"use_scale": use_scale} if cls == "AdditiveAttention" else {"use_scale": use_scale, "score_mode": mode}
    layer = getattr(layers, cls)(**kw)
    b, tq, tv, d = 2, 4, 5, 3
    q = R.standard_normal((b, tq, d)).astype(np.float32)
    v = R.standard_normal((b, tv, 6 if with_key else d)).astype(np.float32)
    k = R.standard_normal((b, tv, d)).astype(np.float32) if with_key else None
    inputs = [q, v] + ([k] if with_key else [])
    layer(inputs)
    weights = [np.asarray(R.uniform(0.5, 1.5, w.shape), np.float32) for w in layer.weights]
    if weights:
        layer.set_weights(weights)
    q_mask = v_mask = None
    mask = None
    if masks:
        q_mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], bool)
        v_mask = np.array([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]], bool)
        mask = [q_mask, v_mask] + ([None] if with_key else [])
    out, w = layer(inputs, mask=mask, use_causal_mask=causal, return_attention_scores=True)
    wd = {x.name: x.numpy() for x in layer.weights}
    if cls == "AdditiveAttention":
        ref = _keras_attention_reference(q, v, k if with_key else v, q_mask, v_mask, causal, "additive", None, None,
                                         wd.get("scale"))
    else:
        ref = _keras_attention_reference(q, v, k if with_key else v, q_mask, v_mask, causal, mode, wd.get("scale"),
                                         wd.get("concat_score_weight"))
    _close(out.numpy(), ref[0], what="output")
    _close(w.numpy(), ref[1], what="weights")
    # gradients of inputs and weights, float64 central differences
    ins = [x.astype(np.float64) for x in inputs]
    check_grad(lambda *xs: layer(list(xs), mask=mask, use_causal_mask=causal), *ins,
               params=layer.trainable_weights, name=cls)


def test_attention_output_mask_and_shapes():
    layer = layers.Attention()
    q, v = Tensor(np.ones((2, 3, 4), "f4")), Tensor(np.ones((2, 5, 4), "f4"))
    q._keras_mask = Tensor(np.array([[1, 1, 0], [1, 1, 1]], bool))
    y = layer([q, v])
    assert y.shape == (2, 3, 4)
    np.testing.assert_array_equal(y._keras_mask.numpy(), q._keras_mask.numpy())
    np.testing.assert_array_equal(y.numpy()[0, 2], 0)
    assert layer.compute_output_shape([(2, 3, 4), (2, 5, 7)]) == (2, 3, 7)
    with pytest.raises(ValueError, match="score_mode"):
        layers.Attention(score_mode="dott")
    with pytest.raises(ValueError, match="list"):
        layer(q)


def test_additive_attention_weights_and_config():
    layer = layers.AdditiveAttention()
    layer([np.zeros((1, 2, 3), "f4"), np.zeros((1, 4, 3), "f4")])
    assert [w.name for w in layer.weights] == ["scale"] and layer.weights[0].shape == (3,)
    clone = layers.AdditiveAttention.from_config(layer.get_config())
    assert clone.use_scale and clone.get_config()["dropout"] == 0.0
    att = layers.Attention(use_scale=True, score_mode="concat")
    att([np.zeros((1, 2, 3), "f4"), np.zeros((1, 4, 3), "f4")])
    assert [w.name for w in att.weights] == ["scale", "concat_score_weight"]


# ---------------------------------------------------------------- positional embeddings
def test_position_embedding_layer():
    layer = check_layer(layers.PositionEmbedding, {"sequence_length": 6}, input_shape=(2, 4, 3),
                        expected_output_shape=(2, 4, 3), expected_num_trainable_weights=1,
                        expected_weight_names=["embeddings"])
    e = layer.weights[0].numpy()
    y = layer(np.zeros((2, 3, 3), "f4"), start_index=2).numpy()
    np.testing.assert_array_equal(y[1], e[2:5])
    with pytest.raises(ValueError, match="sequence_length"):
        layer(np.zeros((1, 7, 3), "f4"))
    check_grad(lambda x: layer(x) * x, R.standard_normal((2, 4, 3)), params=layer.trainable_weights)


def test_sinusoidal_position_encoding_formula():
    layer = layers.SinusoidalPositionEncoding(max_wavelength=100)
    y = layer(np.zeros((2, 5, 6), "f4"), start_index=1).numpy()
    assert y.shape == (2, 5, 6) and y.dtype == np.float32
    p = 3 + 1           # row 3 is position 4; features 4 (even: sine) and 5 (odd: cosine) share frequency 2
    f = 100.0 ** (-4 / 6)
    np.testing.assert_allclose(y[0, 3, 4], np.sin(p * f), rtol=1e-6)
    np.testing.assert_allclose(y[1, 3, 5], np.cos(p * f), rtol=1e-6)
    np.testing.assert_allclose(y[0, :, 0], np.sin(np.arange(1, 6)), rtol=1e-6, atol=1e-7)
    assert layer.weights == []


def test_token_and_position_embedding():
    if not hasattr(layers, "Embedding"):
        pytest.skip("Embedding is not there yet")
    layer = layers.TokenAndPositionEmbedding(vocabulary_size=10, sequence_length=8, embedding_dim=4, mask_zero=True)
    ids = np.array([[3, 4, 0, 0], [1, 2, 3, 5]])
    y = layer(ids)
    assert y.shape == (2, 4, 4)
    tok, pos = layer.get_weights()
    assert tok.shape == (10, 4) and pos.shape == (8, 4)
    np.testing.assert_allclose(y.numpy(), tok[ids] + pos[:4][None], rtol=1e-6)
    np.testing.assert_array_equal(y._keras_mask.numpy(), ids != 0)
    assert layer.count_params() == 10 * 4 + 8 * 4


def test_attention_layer_row_with_no_key_is_uniform_as_keras():
    # Keras's Attention subtracts 1e9 from masked scores before the softmax: a sample whose value mask is
    # all False gets (to float32 rounding) uniform weights, so each output row is the mean of the values
    q = R.standard_normal((2, 3, 4)).astype(np.float32)
    v = R.standard_normal((2, 5, 4)).astype(np.float32)
    vmask = np.ones((2, 5), bool)
    vmask[1] = False
    out, w = layers.Attention()([q, v], mask=[None, vmask], return_attention_scores=True)
    np.testing.assert_allclose(w.numpy()[1], 1 / 5, rtol=1e-6)
    np.testing.assert_allclose(out.numpy()[1], np.broadcast_to(v[1].mean(0), (3, 4)), rtol=1e-5, atol=1e-6)
    scores = q[0] @ v[0].T
    e = np.exp(scores - scores.max(-1, keepdims=True))
    np.testing.assert_allclose(w.numpy()[0], e / e.sum(-1, keepdims=True), rtol=1e-5)


def _mha_grads(extra_use):
    """Gradients of a self-attention layer's weighted output (and, with extra_use, of a term that reads the
    projected queries too) with respect to its input and weights."""
    from lamina.ops.attention import project_heads
    lamina.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    layer = layers.MultiHeadAttention(num_heads=2, key_dim=4)
    x = lamina.Tensor(rng.standard_normal((3, 5, 8)).astype("float32"), requires_grad=True)
    layer(x, x)
    w = lamina.Tensor(rng.standard_normal((3, 5, 8)).astype("float32"))
    out = (layer(x, x) * w).sum()
    if extra_use:   # q feeds attention and a second consumer: its gradient is a sum, not attention's array
        q, k, v = project_heads(x, (layer.query_kernel, layer.key_kernel, layer.value_kernel),
                                (layer.query_bias, layer.key_bias, layer.value_bias))
        out = out + (lamina.ops.scaled_dot_product_attention(q, k, v) * 0.5).sum() + (q * q).sum()
    return [g.numpy() if hasattr(g, "numpy") else g for g in lamina.grad(out, [x] + layer.trainable_weights)]


@pytest.mark.parametrize("extra_use", [False, True])
def test_self_attention_writes_its_gradients_into_the_projection_buffer(monkeypatch, extra_use):
    """Attention on ProjectHeads' three outputs writes dq, dk, dv into the array ProjectHeads' backward
    multiplies (no transposing copies); the gradients are the same bits as with separate arrays, and a
    projection that also feeds something else falls back to adding and copying."""
    from lamina.ops import attention as A
    calls = []
    real = A.ProjectHeads.gradient_views
    monkeypatch.setattr(A.ProjectHeads, "gradient_views", lambda self: calls.append(1) or real(self))
    fast = _mha_grads(extra_use)
    assert len(calls) == (2 if extra_use else 1)
    monkeypatch.setattr(A, "_projection_of", lambda q, k, v: None)
    plain = _mha_grads(extra_use)
    assert len(calls) == (2 if extra_use else 1)   # not asked again
    for a, b in zip(fast, plain):
        np.testing.assert_array_equal(a, b)
