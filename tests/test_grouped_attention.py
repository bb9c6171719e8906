"""GroupQueryAttention: outputs, scores, input and weight gradients against real Keras 3 (torch backend,
its own autograd) with the same weights, masks included; a float64 numerical gradient check; Keras's
.keras / .weights.h5 files both ways; config and errors."""
import os

import numpy as np
import pytest

import lamina
from lamina import Tensor, grad, layers
from lamina.testing import check_grad

os.environ.setdefault("KERAS_BACKEND", "torch")
from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")
torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True, scope="module")
def _keras_on_torch():   # (a fixture: Keras is imported by the first test, not at collection)
    if keras.backend.backend() != "torch":  # pragma: no cover - another test module imported keras first
        pytest.skip("real Keras runs on its torch backend here")


B, T, S, DIM = 2, 5, 6, 8


def _pair(seed=0, **kw):
    """A Keras layer and a lamina layer with the same (random, non-zero) weights."""
    args = dict(head_dim=3, num_query_heads=4, num_key_value_heads=2)
    args.update(kw)
    dv, dk = args.pop("value_dim", DIM), args.pop("key_dim", None)
    theirs = keras.layers.GroupQueryAttention(**args)
    mine = layers.GroupQueryAttention(**args)
    rng = np.random.default_rng(seed)
    q, v = np.zeros((1, T, DIM), "float32"), np.zeros((1, S, dv), "float32")
    k = None if dk is None else np.zeros((1, S, dk), "float32")
    theirs(q, v, k) if k is not None else theirs(q, v)
    mine(q, v, k) if k is not None else mine(q, v)
    ws = [rng.normal(0, 0.5, tuple(w.shape)).astype("float32") for w in theirs.weights]
    theirs.set_weights(ws)
    mine.set_weights(ws)
    assert [tuple(w.shape) for w in mine.weights] == [tuple(w.shape) for w in theirs.weights]
    assert [w.path.split("/", 1)[1] for w in mine.weights] == [w.path.split("/", 1)[1] for w in theirs.weights]
    return theirs, mine


def _inputs(seed=1, dv=DIM, dk=None):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, T, DIM)).astype("float32")
    v = rng.standard_normal((B, S, dv)).astype("float32")
    k = None if dk is None else rng.standard_normal((B, S, dk)).astype("float32")
    return q, v, k


def _masks(seed=2):
    rng = np.random.default_rng(seed)
    qm = rng.random((B, T)) < 0.8
    vm = rng.random((B, S)) < 0.7
    vm[:, 0] = True
    am = rng.random((B, T, S)) < 0.8
    am[:, :, 0] = True
    return qm, vm, am


def _keras_call(layer, q, v, k, kw, want_grads=False, gy=None):
    tq, tv = (torch.tensor(a, requires_grad=want_grads) for a in (q, v))
    tk = None if k is None else torch.tensor(k, requires_grad=want_grads)
    kw = {n: (torch.tensor(a) if isinstance(a, np.ndarray) else a) for n, a in kw.items()}
    out, scores = layer(tq, tv, tk, return_attention_scores=True, **kw)
    if not want_grads:
        return out.detach().numpy(), scores.detach().numpy()
    (out * torch.tensor(gy[0])).sum().add((scores * torch.tensor(gy[1])).sum()).backward()
    ins = [t.grad.numpy() for t in (tq, tv, tk) if t is not None]
    return ins, [w.value.grad.numpy() for w in layer.weights]


# ------------------------------------------------------------------------------------------ forward
CASES = {
    "gqa": dict(),
    "multi_query": dict(num_key_value_heads=1),
    "as_mha": dict(num_key_value_heads=4),
    "no_bias": dict(use_bias=False),
    "gate": dict(use_gate=True),
    "sliding_window": dict(sliding_window=2),
    "cross_key_value_dims": dict(value_dim=6, key_dim=5, num_query_heads=6, num_key_value_heads=3),
}
MASKS = ["none", "query_value", "attention", "causal", "all"]


def _mask_kwargs(which):
    qm, vm, am = _masks()
    return {"none": {}, "query_value": dict(query_mask=qm, value_mask=vm), "attention": dict(attention_mask=am),
            "causal": dict(use_causal_mask=True),
            "all": dict(query_mask=qm, value_mask=vm, key_mask=vm, attention_mask=am, use_causal_mask=True)}[which]


@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_outputs_and_scores_match_keras(case, mask):
    kw = dict(CASES[case])
    theirs, mine = _pair(**kw)
    q, v, k = _inputs(dv=kw.get("value_dim", DIM), dk=kw.get("key_dim"))
    mk = _mask_kwargs(mask)
    want_out, want_scores = _keras_call(theirs, q, v, k, mk)
    out, scores = mine(q, v, k, return_attention_scores=True, **mk)
    assert out.shape == (B, T, DIM) and scores.shape == (B, mine.num_query_heads, T, S)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.numpy(), want_out, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scores.numpy(), want_scores, rtol=1e-5, atol=1e-6)
    # without the scores Keras takes its fused dot_product_attention path: the same numbers
    tk = None if k is None else torch.tensor(k)
    fused = theirs(torch.tensor(q), torch.tensor(v), tk,
                   **{n: (torch.tensor(a) if isinstance(a, np.ndarray) else a) for n, a in mk.items()})
    np.testing.assert_allclose(mine(q, v, k, **mk).numpy(), fused.detach().numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls", ["GroupQueryAttention", "MultiHeadAttention"])
def test_fully_masked_query_row_as_keras(cls):
    """Keras 3.15 gives a query row with no key uniform weights on its fused path (no scores, no dropout)
    and zero weights through its masked Softmax (scores asked for, or dropout > 0 even in inference)."""
    q, v, _ = _inputs()
    am = np.ones((B, T, S), bool)
    am[0, 2] = False
    for dropout in (0.0, 0.3):
        if cls == "GroupQueryAttention":
            theirs, mine = _pair(dropout=dropout)
        else:
            theirs = keras.layers.MultiHeadAttention(2, 3, dropout=dropout)
            mine = layers.MultiHeadAttention(2, 3, dropout=dropout)
            theirs(q, v)
            mine(q, v)
            ws = [np.random.default_rng(0).normal(0, 0.5, w.shape).astype("float32") for w in theirs.get_weights()]
            theirs.set_weights(ws)
            mine.set_weights(ws)
        want_out, want_scores = _keras_call(theirs, q, v, None, dict(attention_mask=am))
        out, scores = mine(q, v, attention_mask=am, return_attention_scores=True)
        np.testing.assert_array_equal(scores.numpy()[0, :, 2], 0)
        np.testing.assert_allclose(scores.numpy(), want_scores, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out.numpy(), want_out, rtol=1e-5, atol=1e-5)
        plain = theirs(torch.tensor(q), torch.tensor(v), attention_mask=torch.tensor(am)).detach().numpy()
        np.testing.assert_allclose(mine(q, v, attention_mask=am).numpy(), plain, rtol=1e-5, atol=1e-5)
        if dropout == 0.0:
            assert not np.allclose(plain[0, 2], want_out[0, 2])   # the two Keras paths really differ there


def test_padding_masks_of_the_inputs_are_used():
    """Embedding(mask_zero=True) masks reach the layer through the inputs, as in Keras."""
    ids = np.array([[3, 4, 5, 0, 0], [1, 2, 0, 0, 0]])
    emb_k = keras.layers.Embedding(7, DIM, mask_zero=True)
    emb_m = layers.Embedding(7, DIM, mask_zero=True)
    emb_k.build((None, 5))
    emb_m.build((None, 5))
    emb_m.set_weights(emb_k.get_weights())
    theirs, mine = _pair()
    xk, xm = emb_k(torch.tensor(ids)), emb_m(ids)
    want, want_s = theirs(xk, xk, return_attention_scores=True)
    got, got_s = mine(xm, xm, return_attention_scores=True)
    np.testing.assert_allclose(got_s.numpy(), want_s.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got.numpy(), want.detach().numpy(), rtol=1e-5, atol=1e-5)
    assert got_s.numpy()[1, :, 0, 2:].max() == 0   # padded keys get no weight


# ---------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("case", ["gqa", "multi_query", "gate", "cross_key_value_dims"])
def test_input_and_weight_gradients_match_keras_autograd(case):
    kw = dict(CASES[case])
    theirs, mine = _pair(**kw)
    q, v, k = _inputs(dv=kw.get("value_dim", DIM), dk=kw.get("key_dim"))
    mk = _mask_kwargs("all")
    rng = np.random.default_rng(7)
    gy = (rng.standard_normal((B, T, DIM)).astype("float32"),
          rng.standard_normal((B, mine.num_query_heads, T, S)).astype("float32"))
    want_in, want_w = _keras_call(theirs, q, v, k, mk, want_grads=True, gy=gy)
    ts = [Tensor(a, requires_grad=True) for a in (q, v, k) if a is not None]
    out, scores = mine(*ts if k is not None else ts + [None], return_attention_scores=True, **mk)
    loss = (out * Tensor(gy[0])).sum() + (scores * Tensor(gy[1])).sum()
    gs = grad(loss, ts + list(mine.weights))
    for g, w in zip(gs, want_in + want_w):
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kw", [dict(), dict(use_gate=True, sliding_window=3), dict(num_key_value_heads=1)])
def test_numerical_gradient_check(kw):
    kw = dict(kw)
    lamina.utils.set_random_seed(0)
    layer = layers.GroupQueryAttention(head_dim=2, num_query_heads=4,
                                       num_key_value_heads=kw.pop("num_key_value_heads", 2),
                                       bias_initializer="random_normal", **kw)
    rng = np.random.default_rng(4)
    q, v = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 4, 4))
    am = rng.random((2, 3, 4)) < 0.8
    am[..., 0] = True
    layer(q.astype("float32"), v.astype("float32"))
    check_grad(lambda a, b: layer(a, b, attention_mask=am, use_causal_mask=True), q, v,
               params=layer.trainable_weights, name="GroupQueryAttention")


def test_dropout_only_in_training_and_seeded():
    layer = layers.GroupQueryAttention(4, 4, 2, dropout=0.5, seed=3)
    q, v, _ = _inputs()
    a, b = layer(q, v).numpy(), layer(q, v, training=False).numpy()
    np.testing.assert_array_equal(a, b)
    c = layer(q, v, training=True).numpy()
    assert not np.allclose(a, c)


# ------------------------------------------------------------------------------------- files, config
def _keras_model(K, **kw):
    inp = K.Input((T, DIM))
    att = K.layers.GroupQueryAttention(head_dim=3, num_query_heads=4, num_key_value_heads=2, **kw)(
        inp, inp, use_causal_mask=True)
    return K.Model(inp, K.layers.Dense(2)(K.layers.GlobalAveragePooling1D()(K.layers.Add()([inp, att]))))


@pytest.mark.parametrize("kw", [dict(), dict(use_gate=True, use_bias=False, sliding_window=3)])
def test_keras_file_both_ways(tmp_path, kw):
    keras.utils.set_random_seed(0)
    theirs = _keras_model(keras, **kw)
    x = _inputs(seed=5)[0]
    # random biases too (Keras starts them at zero)
    theirs.set_weights([np.random.default_rng(1).normal(0, 0.3, w.shape).astype("float32")
                        for w in theirs.get_weights()])
    theirs.save(tmp_path / "k.keras")
    want = np.asarray(theirs.predict(x, verbose=0))
    mine = lamina.models.load_model(tmp_path / "k.keras")
    gqa = [la for la in mine.layers if isinstance(la, layers.GroupQueryAttention)][0]
    assert gqa.use_gate == kw.get("use_gate", False) and gqa.sliding_window == kw.get("sliding_window")
    np.testing.assert_allclose(np.asarray(mine.predict(x, verbose=0)), want, rtol=1e-4, atol=1e-5)
    mine.save(tmp_path / "l.keras")
    again = keras.models.load_model(tmp_path / "l.keras")
    np.testing.assert_allclose(np.asarray(again.predict(x, verbose=0)), want, rtol=1e-4, atol=1e-5)
    # weights-only files
    theirs.save_weights(tmp_path / "k.weights.h5")
    fresh = _keras_model(lamina, **kw)
    fresh.load_weights(tmp_path / "k.weights.h5")
    np.testing.assert_allclose(np.asarray(fresh.predict(x, verbose=0)), want, rtol=1e-4, atol=1e-5)


def test_lamina_model_round_trip(tmp_path):
    lamina.utils.set_random_seed(0)
    model = _keras_model(lamina, dropout=0.1)
    x = _inputs(seed=5)[0]
    want = model.predict(x, verbose=0)
    model.save(tmp_path / "m.keras")
    back = lamina.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(back.predict(x, verbose=0), want, rtol=1e-6)
    theirs = keras.models.load_model(tmp_path / "m.keras", compile=False)
    np.testing.assert_allclose(np.asarray(theirs.predict(x, verbose=0)), want, rtol=1e-4, atol=1e-5)


def test_config_names_and_weights_follow_keras():
    mine = layers.GroupQueryAttention(head_dim=3, num_query_heads=4, num_key_value_heads=2, use_gate=True)
    theirs = keras.layers.GroupQueryAttention(head_dim=3, num_query_heads=4, num_key_value_heads=2, use_gate=True)
    assert set(theirs.get_config()) <= set(mine.get_config())
    assert mine.name.startswith("grouped_query_attention")
    x = np.zeros((1, T, DIM), "float32")
    mine(x, x)
    theirs(x, x)
    assert [(w.path.split("/", 1)[1], tuple(w.shape)) for w in mine.weights] == \
        [(w.path.split("/", 1)[1], tuple(w.shape)) for w in theirs.weights]
    again = layers.GroupQueryAttention.from_config(mine.get_config())
    assert again.get_config() == mine.get_config()
    assert lamina.registry.get_registered_object("GroupQueryAttention") is layers.GroupQueryAttention
    assert lamina.registry.serialize(mine)["class_name"] == "GroupQueryAttention"
    assert hasattr(keras.layers, "GroupQueryAttention") and not hasattr(keras.layers, "GroupedQueryAttention")


def test_errors():
    with pytest.raises(ValueError, match="divisible"):
        layers.GroupQueryAttention(4, 6, 4)
    with pytest.raises(ValueError, match="head_dim"):
        layers.GroupQueryAttention(0, 4, 2)
    with pytest.raises(ValueError, match="sliding_window"):
        layers.GroupQueryAttention(4, 4, 2, sliding_window=0)
    with pytest.raises(ValueError, match="flash attention"):
        layers.GroupQueryAttention(4, 4, 2, dropout=0.1, flash_attention=True)
    layer = layers.GroupQueryAttention(4, 4, 2)
    q, v, _ = _inputs()
    with pytest.raises(ValueError, match="needs a value"):
        layer(q)
    layer(q, v)
    with pytest.raises(ValueError, match="grouped_query_attention.*expected"):
        layer(np.zeros((2, 5, 7), "float32"), v)
    with pytest.raises(ValueError, match="flash attention"):
        layers.GroupQueryAttention(4, 4, 2, flash_attention=True)(q, v, return_attention_scores=True)


# ------------------------------------------------------------------------------------------- device
def _device_run(xp, device, q, v, am):
    lamina.backend.set_device(device)
    lamina.backend.set_random_seed(0)             # same weights and dropout draws on both devices
    layer = layers.GroupQueryAttention(3, 4, 2, dropout=0.2, use_gate=True, sliding_window=3, seed=1,
                                       bias_initializer="random_normal")
    tq, tv = (Tensor(lamina.backend.to_device(a, xp), requires_grad=True) for a in (q, v))
    out, scores = layer(tq, tv, attention_mask=lamina.backend.to_device(am, xp), use_causal_mask=True,
                        return_attention_scores=True, training=True)
    ((out * out).sum() + scores.sum()).backward()
    arrays = [out.data, scores.data, tq.grad, tv.grad] + [w.grad for w in layer.weights]
    for a in arrays:
        assert lamina.backend.get_array_module(a) is xp
    return [lamina.backend.to_numpy(a) for a in arrays]


def test_on_device_matches_cpu(device_xp):
    q, v, _ = _inputs()
    am = _masks()[2]
    want = _device_run(np, "cpu", q, v, am)
    got = _device_run(device_xp, "cuda", q, v, am)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=2e-4, atol=2e-5)


def test_functional_model_with_padding_masks_matches_keras():
    """Embedding(mask_zero=True) -> GroupQueryAttention -> masked pooling, the masks carried by the graph."""
    def build(K):
        inp = K.Input((6,), dtype="int32")
        e = K.layers.Embedding(10, 8, mask_zero=True)(inp)
        a = K.layers.GroupQueryAttention(4, 4, 2)(e, e)
        return K.Model(inp, K.layers.Dense(3)(K.layers.GlobalAveragePooling1D()(a)))
    theirs, mine = build(keras), build(lamina)
    ws = [np.random.default_rng(1).normal(0, 0.3, w.shape).astype("float32") for w in theirs.get_weights()]
    theirs.set_weights(ws)
    mine.set_weights(ws)
    x = np.array([[1, 2, 3, 0, 0, 0], [4, 5, 6, 7, 8, 9], [3, 0, 0, 0, 0, 0]])
    np.testing.assert_allclose(mine.predict(x, verbose=0), np.asarray(theirs.predict(x, verbose=0)),
                               rtol=1e-5, atol=1e-5)
