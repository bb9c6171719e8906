"""Issue 22 (engine correctness), numerics: cross-entropy on probabilities with exact 0 / 1, loss axis
arguments, numerically stable sigmoid family, gradient checks at extreme inputs.

References: PyTorch 2.13 (float64 / float32), and Keras 3.15's torch-backend formulas written out with
torch ops and differentiated by torch's autograd (what real Keras does with KERAS_BACKEND=torch):
    categorical:  q = clip(p / sum(p, axis), 1e-7, 1 - 1e-7);  loss = -sum(t * log q, axis)
    sparse:       the same, then nll_loss (pick the label's -log q)
    binary:       pc = clip(p, 1e-7, 1 - 1e-7);  loss = mean(binary_cross_entropy(pc, t), axis)
"""
import warnings

import numpy as np
import pytest

import lamina
from lamina import Tensor, grad, layers, losses, ops
from lamina.testing import check_grad

torch = pytest.importorskip("torch")
F = torch.nn.functional
EPS = 1e-7


# ----------------------------------------------------------------------------- helpers
def _ours(fn, y_pred, gy=None, **kw):
    """Loss values and the gradient w.r.t. y_pred under upstream gradient gy (ones by default)."""
    p = Tensor(y_pred, requires_grad=True)
    out = fn(p, **kw)
    gy = np.ones(out.shape, out.dtype) if gy is None else gy
    (g,) = grad((out * Tensor(gy.astype(out.dtype))).sum(), [p])
    return out.numpy(), np.asarray(g)


def _theirs(fn, y_pred, gy=None):
    p = torch.tensor(y_pred, requires_grad=True)
    out = fn(p)
    gy = torch.ones_like(out) if gy is None else torch.tensor(gy)
    (out * gy).sum().backward()
    return out.detach().numpy(), p.grad.numpy()


def keras_cce(t, p, axis=-1):
    q = torch.clip(p / torch.sum(p, dim=axis, keepdim=True), EPS, 1.0 - EPS)
    return -torch.sum(torch.tensor(t) * torch.log(q), dim=axis)


def keras_scce(labels, p, axis=-1):
    p = p.movedim(axis % p.dim(), 1) if p.dim() > 1 else p
    q = torch.clip(p / torch.sum(p, dim=1, keepdim=True), EPS, 1.0 - EPS)
    return F.nll_loss(torch.log(q), torch.tensor(labels), reduction="none")


def keras_bce(t, p, axis=-1):
    pc = torch.clip(p, EPS, 1.0 - EPS)
    return torch.mean(F.binary_cross_entropy(pc, torch.tensor(t), reduction="none"), dim=axis)


def _assert_finite(*arrays):
    for a in arrays:
        assert np.isfinite(a).all(), f"non-finite values: {a}"


# probabilities with exact zeros and ones, as a saturated softmax gives them in float32
P_EDGE = np.array([[0.0, 1.0, 0.0, 0.0],
                   [0.0, 0.0, 1.0, 0.0],    # the label below (1) has probability exactly 0
                   [0.2, 0.0, 0.5, 0.3],    # a zero where the target is 0
                   [0.25, 0.25, 0.25, 0.25],
                   [1e-9, 0.5, 0.5 - 1e-9, 0.0]], np.float32)
LABELS_EDGE = np.array([1, 1, 2, 3, 0])
T_EDGE = np.eye(4, dtype=np.float32)[LABELS_EDGE]


# ----------------------------------------------------------------------------- finding 1: CE on probabilities
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sparse_ce_probabilities_with_exact_zeros_match_keras(dtype):
    """Finding 1: a label probability of exactly 0 gave 0/0 = NaN in the gradient (the loss was finite)."""
    p = P_EDGE.astype(dtype)
    gy = np.random.default_rng(0).standard_normal(len(p)).astype(dtype)
    v, g = _ours(lambda x: ops.losses.sparse_categorical_crossentropy(LABELS_EDGE, x), p, gy)
    rv, rg = _theirs(lambda x: keras_scce(LABELS_EDGE, x), p, gy)
    _assert_finite(v, g)
    np.testing.assert_allclose(v, rv, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g, rg, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_categorical_ce_probabilities_with_exact_zeros_match_keras(dtype):
    """Finding 1: -t / q at q = 0 gave NaN gradients (0/0 where t = 0, -inf * 0 where clipped)."""
    p = P_EDGE.astype(dtype)
    t = T_EDGE.astype(dtype)
    t[3] = [0.1, 0.2, 0.3, 0.4]  # a soft target row
    gy = np.random.default_rng(1).standard_normal(len(p)).astype(dtype)
    v, g = _ours(lambda x: ops.losses.categorical_crossentropy(t, x), p, gy)
    rv, rg = _theirs(lambda x: keras_cce(t, x), p, gy)
    _assert_finite(v, g)
    np.testing.assert_allclose(v, rv, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g, rg, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binary_ce_probabilities_with_exact_zeros_and_ones_match_keras(dtype):
    p = np.array([[0.0, 1.0, 0.5, 1e-8], [1.0, 0.0, 1 - 1e-8, 0.3]], dtype)
    t = np.array([[0.0, 1.0, 1.0, 0.0], [0.0, 1.0, 0.3, 1.0]], dtype)
    gy = np.random.default_rng(2).standard_normal(2).astype(dtype)
    v, g = _ours(lambda x: ops.losses.binary_crossentropy(t, x), p, gy)
    rv, rg = _theirs(lambda x: keras_bce(t, x), p, gy)
    _assert_finite(v, g)
    np.testing.assert_allclose(v, rv, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(g, rg, rtol=1e-5, atol=1e-6)


def test_ce_probability_gradients_check_at_exact_zeros_and_ones():
    """Gradient checker at the clip boundaries. eps = 1e-9 keeps each central difference on one side of
    the clip (1e-7), where the loss is locally flat in the clipped entries: the exact gradient there is 0."""
    kw = dict(eps=1e-9, atol=1e-5, rtol=1e-4)
    check_grad(lambda p: ops.losses.sparse_categorical_crossentropy(LABELS_EDGE[:4], p), P_EDGE[:4], **kw)
    check_grad(lambda p: ops.losses.categorical_crossentropy(T_EDGE[:4], p), P_EDGE[:4], **kw)
    t = np.array([[0.0, 1.0, 1.0], [0.0, 1.0, 0.3]])
    check_grad(lambda p: ops.losses.binary_crossentropy(t, p), np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.4]]), **kw)


@pytest.mark.parametrize("loss", ["sparse_categorical_crossentropy", "categorical_crossentropy"])
def test_softmax_dense_on_unscaled_pixels_trains_without_nan(loss):
    """Finding 1, end to end: Dense(10, 'softmax') on 0..255 pixels saturates the softmax (exact 0 and 1 in
    float32); the weights went NaN after the first batch."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (256, 64)).astype(np.float32)
    y = rng.integers(0, 10, 256)
    target = y if loss.startswith("sparse") else np.eye(10, dtype=np.float32)[y]
    model = lamina.models.Sequential([layers.Input((64,)), layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss=loss)
    with np.errstate(divide="raise", invalid="raise"):
        p = model(x[:32]).numpy()
    assert (p == 0).any() and (p == 1).any()  # the softmax really is saturated
    hist = model.fit(x, target, epochs=2, batch_size=32, verbose=0)
    assert len(hist.history["loss"]) == 2 and np.isfinite(hist.history["loss"]).all()
    for w in model.weights:
        assert np.isfinite(w.numpy()).all(), w.name


# ----------------------------------------------------------------------------- finding 2: axis arguments
def test_binary_crossentropy_honours_axis():
    rng = np.random.default_rng(3)
    t = (rng.random((2, 3, 4)) > 0.5).astype(np.float32)
    p = rng.random((2, 3, 4)).astype(np.float32)
    want = keras_bce(t, torch.tensor(p), axis=1).numpy()
    got = losses.binary_crossentropy(t, p, axis=1).numpy()
    assert got.shape == (2, 4)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    cls = losses.BinaryCrossentropy(axis=1, reduction=None)(t, p).numpy()
    np.testing.assert_allclose(cls, want, rtol=1e-5)
    np.testing.assert_allclose(losses.BinaryCrossentropy(axis=1)(t, p).numpy(), want.mean(), rtol=1e-5)


def test_categorical_and_sparse_crossentropy_honour_axis():
    rng = np.random.default_rng(4)
    p = rng.random((2, 3, 4)).astype(np.float32)
    lab = rng.integers(0, 3, (2, 4))
    t = np.moveaxis(np.eye(3, dtype=np.float32)[lab], -1, 1)
    want = keras_cce(t, torch.tensor(p), axis=1).numpy()
    np.testing.assert_allclose(losses.categorical_crossentropy(t, p, axis=1).numpy(), want, rtol=1e-5)
    np.testing.assert_allclose(losses.CategoricalCrossentropy(axis=1, reduction=None)(t, p).numpy(), want,
                               rtol=1e-5)
    want_s = keras_scce(lab, torch.tensor(p), axis=1).numpy()
    np.testing.assert_allclose(want_s, want, rtol=1e-5)
    np.testing.assert_allclose(losses.sparse_categorical_crossentropy(lab, p, axis=1).numpy(), want_s, rtol=1e-5)
    scce = losses.SparseCategoricalCrossentropy(axis=1, reduction=None)
    np.testing.assert_allclose(scce(lab, p).numpy(), want_s, rtol=1e-5)
    # Keras's signature order (from_logits, ignore_class, reduction, axis, ...) and config
    assert losses.SparseCategoricalCrossentropy(False, None, "sum", 1).get_config()["axis"] == 1
    assert "axis" not in losses.SparseCategoricalCrossentropy().get_config()  # as Keras 3.15's
    again = losses.SparseCategoricalCrossentropy.from_config(scce.get_config())
    np.testing.assert_allclose(again(lab, p).numpy(), want_s, rtol=1e-5)


# ----------------------------------------------------------------------------- finding 4: stable sigmoid family
X_WIDE = np.concatenate([np.linspace(-100, 100, 401), [-20.0, -50.0, -15.0, -10.0, -30.0, -80.0, 0.0]])


def _rel_err(a, b, tiny):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.max(np.abs(a - b) / np.maximum(np.abs(b), tiny))


# (ours, torch reference); softplus's reference is NumPy's exact logaddexp (torch's softplus switches to
# the identity above x = 20, a 1e-9-relative approximation), with gradient sigmoid(x)
ACTS = {
    "sigmoid": (ops.sigmoid, torch.sigmoid),
    "log_sigmoid": (ops.log_sigmoid, F.logsigmoid),
    "silu": (ops.silu, F.silu),
    "softplus": (ops.softplus, None),
}


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-13), (np.float32, 2e-6)])
@pytest.mark.parametrize("name", sorted(ACTS))
def test_sigmoid_family_relative_error_over_wide_range(name, dtype, rtol):
    """Finding 4: 0.5 (tanh(x/2) + 1) lost relative precision for x < 0 (2.6e-2 at -15, exactly 0 from -20
    in float64); the values and gradients must be relatively exact on [-100, 100]."""
    fn, ref = ACTS[name]
    x = X_WIDE.astype(dtype)
    v, g = _ours(fn, x)
    # the reference is torch in float64 (for float32 too: torch's float32 kernels flush subnormal results
    # to 0); where the true value is below float32's smallest normal only absolute accuracy is possible
    if ref is None:
        rv = np.logaddexp(0.0, X_WIDE)
        rg = torch.sigmoid(torch.tensor(X_WIDE)).numpy()
    else:
        rv, rg = _theirs(ref, X_WIDE)
    # (x sigmoid(x) inherits the subnormal precision of sigmoid near x = -87: a margin above tiny)
    tiny = np.finfo(dtype).tiny * 2 ** 10
    assert v.dtype == dtype and g.dtype == dtype
    # float32 silu where sigmoid(x) is subnormal (x < -87.3): where NumPy's exp is scalar (no AVX-512) silu takes
    # the compiled sigmoid (kernels.sigmoid_tanh), 0 there as PyTorch's float32 sigmoid (F.silu(-90.) is -0.0):
    # silu and its gradient, at most |x| 2^-126 ~ 1e-36, are then checked absolutely
    sub = X_WIDE < -87.3 if (name == "silu" and dtype == np.float32) else np.zeros(X_WIDE.shape, bool)
    assert (np.abs(v[sub] - rv[sub]) <= 100 * np.finfo(dtype).tiny).all(), (name, "value, sigmoid subnormal")
    assert (np.abs(g[sub] - rg[sub]) <= 100 * np.finfo(dtype).tiny).all(), (name, "gradient, sigmoid subnormal")
    assert _rel_err(v[~sub], rv[~sub], tiny) < rtol, (name, "value")
    # for x > 0 the derivative of a value near 1 (y (1 - y), as torch's backward) is only absolutely exact
    neg = (X_WIDE <= 0) & ~sub
    assert _rel_err(g[neg], rg[neg], tiny) < rtol * 10, (name, "gradient")
    # (silu's s + x s (1 - s) multiplies that error by x)
    bound = 4 * np.finfo(dtype).eps * (1.0 + np.abs(X_WIDE[~neg]))
    assert (np.abs(g[~neg] - rg[~neg]) < bound).all(), (name, "gradient, x > 0")
    if dtype == np.float32:  # and no worse than torch's own float32 kernel where that one is normal
        tv, tg = _theirs(ref or F.softplus, x)
        normal = (np.abs(tv) >= tiny) & (np.abs(X_WIDE) < 20)  # (torch's softplus is x itself above 20)
        assert _rel_err(v[normal], tv[normal], tiny) < rtol * 2, (name, "value vs torch float32")


def test_sigmoid_family_gradient_check_at_extreme_inputs():
    neg = np.array([-80.0, -50.0, -30.0, -20.0, -5.0, -1.0])
    pos = np.array([0.0, 1e-3, 1.0, 5.0, 20.0, 30.0, 80.0])
    for fn in (ops.sigmoid, ops.log_sigmoid, ops.softplus, ops.silu):
        # relative tolerance only: at x = -80 the derivatives are ~1e-35 and must be right relatively
        # (one point per check, so that the central differences of a tiny value are not lost in a sum)
        for v in neg:
            check_grad(fn, np.array([v]), atol=0.0, rtol=1e-5, eps=1e-6, name=f"{fn.__name__} at {v}")
        # for x >= 20 sigmoid's central differences see changes of 1e-15 in a value of 1: absolute tolerance
        check_grad(fn, pos, atol=1e-9, rtol=1e-5, eps=1e-6, name=fn.__name__)


def test_sigmoid_keeps_nan_and_infinities():
    x = np.array([np.nan, np.inf, -np.inf], np.float32)
    for fn, want in ((ops.sigmoid, [np.nan, 1.0, 0.0]), (ops.silu, [np.nan, np.inf, np.nan]),
                     (ops.log_sigmoid, [np.nan, 0.0, -np.inf])):
        with np.errstate(invalid="ignore"):  # silu(-inf) = -inf * 0 = NaN, as torch's
            got = fn(Tensor(x)).numpy()
        np.testing.assert_array_equal(got, np.array(want, np.float32), err_msg=fn.__name__)


@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_lstm_gates_relatively_exact_when_saturated(dtype, rtol):
    """Finding 4, fused LSTM gates: with gate pre-activations near -30 the input, forget and output gates
    are ~1e-13; the tanh form made them exactly 0 (float64), so h was 0 and their gradients vanished."""
    rng = np.random.default_rng(7)
    N, T, D, u = 3, 4, 5, 6
    x = rng.standard_normal((N, T, D)).astype(dtype)
    kernel = (0.3 * rng.standard_normal((D, 4 * u))).astype(dtype)
    rec = (0.3 * rng.standard_normal((u, 4 * u))).astype(dtype)
    bias = np.concatenate([np.full(u, -30.0), np.full(u, -25.0), np.zeros(u), np.full(u, -28.0)]).astype(dtype)
    gy = rng.standard_normal((N, T, u)).astype(dtype)

    xs = [Tensor(a, requires_grad=True) for a in (x, kernel, rec, bias)]
    seq, _, _ = ops.lstm(*xs)
    grads = grad((seq * Tensor(gy)).sum(), xs)

    m = torch.nn.LSTM(D, u, batch_first=True).to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():
        m.weight_ih_l0.copy_(torch.tensor(kernel.T))
        m.weight_hh_l0.copy_(torch.tensor(rec.T))
        m.bias_ih_l0.copy_(torch.tensor(bias))
        m.bias_hh_l0.zero_()
    tx = torch.tensor(x, requires_grad=True)
    tseq, _ = m(tx)
    (tseq * torch.tensor(gy)).sum().backward()
    assert np.abs(tseq.detach().numpy()).max() < 1e-9  # the gates really are saturated
    np.testing.assert_allclose(seq.numpy(), tseq.detach().numpy(), rtol=rtol, atol=0)
    np.testing.assert_allclose(grads[0], tx.grad.numpy(), rtol=rtol * 10, atol=0)
    np.testing.assert_allclose(grads[3], m.bias_ih_l0.grad.numpy(), rtol=rtol * 10, atol=0)


def test_ce_logits_gradient_check_at_large_logits():
    """from_logits stays exact at +-30 and +-80 (float64; the gradient is softmax - onehot)."""
    x = np.array([[80.0, -80.0, 0.0, 30.0], [-30.0, -80.0, 80.0, 79.0], [30.0, 30.0, -30.0, -30.0]])
    lab = np.array([1, 2, 0])
    check_grad(lambda p: ops.losses.sparse_categorical_crossentropy(lab, p, from_logits=True), x)
    check_grad(lambda p: ops.losses.categorical_crossentropy(np.eye(4)[lab], p, from_logits=True), x)
    t = np.array([[1.0, 0.0, 0.5, 0.0], [0.0, 1.0, 1.0, 0.2], [1.0, 1.0, 0.0, 0.0]])
    check_grad(lambda p: ops.losses.binary_crossentropy(t, p, from_logits=True), x)
    # and against torch at those logits
    v, g = _ours(lambda p: ops.losses.binary_crossentropy(t, p, from_logits=True), x)
    rv, rg = _theirs(lambda p: F.binary_cross_entropy_with_logits(p, torch.tensor(t), reduction="none").mean(-1), x)
    # (exp(-30) = 9.3576e-14 is the exact loss of the last row; torch's value is 0.6% off there)
    np.testing.assert_allclose(v, rv, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(g, rg, rtol=1e-9, atol=1e-300)




# ----------------------------------------------------------------------------- finding 3: half-precision statistics
X300 = np.array([[0.0, 300.0, 600.0, 900.0]])


def _torch_layer_norm(x, eps=1e-3):
    return F.layer_norm(torch.tensor(x, dtype=torch.float64), x.shape[-1:], eps=eps).numpy()


def test_layer_norm_float16_computes_statistics_in_float32():
    """Finding 3: x = [0, 300, 600, 900] in float16 squared to inf (float16's max is 65504): var = inf and
    the output was zeros. Keras computes in float32 and returns the input's dtype."""
    x16 = X300.astype(np.float16)
    y = ops.layer_norm(Tensor(x16))
    assert y.dtype == np.float16
    np.testing.assert_allclose(y.numpy().astype(np.float64), _torch_layer_norm(X300), rtol=1e-3)
    # the layer with a float16 dtype (float16 weights and compute dtype)
    layer = layers.LayerNormalization(dtype="float16")
    out = layer(x16)
    assert out.dtype == np.float16
    np.testing.assert_allclose(out.numpy().astype(np.float64), _torch_layer_norm(X300), rtol=1e-3)
    # group norm shares the rule
    g = ops.group_norm(Tensor(x16.reshape(1, 1, 4)), groups=1)
    assert g.dtype == np.float16
    np.testing.assert_allclose(g.numpy().reshape(1, 4).astype(np.float64), _torch_layer_norm(X300), rtol=1e-3)


def test_layer_norm_float16_gradients_against_float32():
    """float16 forward and backward against the float32 computation, with a float16 tolerance."""
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((4, 8)) * 200 + 100).astype(np.float32)
    gamma = rng.standard_normal(8).astype(np.float32)
    beta = rng.standard_normal(8).astype(np.float32)
    gy = rng.standard_normal((4, 8)).astype(np.float32)
    res = {}
    for dt in (np.float32, np.float16):
        ts = [Tensor(a.astype(dt), requires_grad=True) for a in (x, gamma, beta)]
        y = ops.layer_norm(*ts)
        gs = grad((y * Tensor(gy.astype(dt))).sum(), ts)
        assert y.dtype == dt and all(np.asarray(g).dtype == dt for g in gs)
        res[dt] = [y.numpy()] + [np.asarray(g) for g in gs]
    for a16, a32 in zip(res[np.float16], res[np.float32]):
        assert np.isfinite(a16).all()
        np.testing.assert_allclose(a16.astype(np.float32), a32, rtol=2e-2, atol=2e-2 * np.abs(a32).max())


@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_float16_layer_matches_float32(training):
    """BatchNormalization(dtype='float16') on large values: statistics in float32, output float16."""
    x = np.array([[0.0], [300.0], [600.0], [900.0]])
    layers_ = {dt: layers.BatchNormalization(dtype=dt, momentum=0.5) for dt in ("float32", "float16")}
    outs = {}
    for dt, bn in layers_.items():
        if not training:
            bn.build((None, 1))
            bn.moving_mean.assign(np.array([450.0]))
            bn.moving_variance.assign(np.array([60000.0]))  # (a float16 variable holds up to 65504)
        outs[dt] = bn(x.astype(dt), training=training)
    assert outs["float16"].dtype == np.float16
    np.testing.assert_allclose(outs["float16"].numpy().astype(np.float32), outs["float32"].numpy(), rtol=2e-3,
                               atol=2e-3)
    if training:  # the moving variance 0.5 + 0.5 * 112500 overflows nothing (float16 max 65504 -> inf before)
        np.testing.assert_allclose(layers_["float16"].moving_mean.numpy().astype(np.float32),
                                   layers_["float32"].moving_mean.numpy(), rtol=1e-3)
        mv16 = layers_["float16"].moving_variance.numpy()
        assert np.isfinite(mv16).all()
        np.testing.assert_allclose(mv16.astype(np.float32), layers_["float32"].moving_variance.numpy(), rtol=1e-3)


def test_batch_norm_ops_float16():
    x16 = X300.T.astype(np.float16)  # (4, 1): one channel
    y, mean, var = ops.batch_norm_training(Tensor(x16), None, None)
    assert y.dtype == np.float16
    np.testing.assert_allclose(var.numpy(), [112500.0], rtol=1e-6)  # not inf: computed in float32
    want = F.batch_norm(torch.tensor(X300.T), None, None, training=True, eps=1e-3).numpy()
    np.testing.assert_allclose(y.numpy().astype(np.float64), want, rtol=1e-3, atol=1e-3)
    y2 = ops.batch_norm(Tensor(x16), None, None, np.array([450.0], np.float16), np.array([60000.0], np.float16))
    assert y2.dtype == np.float16 and np.isfinite(y2.numpy()).all()


def test_softmax_float16_in_float32():
    x = np.array([[0.0, 10.0, 20.0, -20.0]])
    for fn, ref in ((ops.softmax, torch.softmax), (ops.log_softmax, torch.log_softmax)):
        t = Tensor(x.astype(np.float16), requires_grad=True)
        y = fn(t)
        assert y.dtype == np.float16
        gy = np.array([[1.0, -2.0, 0.5, 3.0]])
        (g,) = grad((y * Tensor(gy.astype(np.float16))).sum(), [t])
        assert np.asarray(g).dtype == np.float16
        rv, rg = _theirs(lambda p: ref(p, -1), x, gy)
        np.testing.assert_allclose(y.numpy().astype(np.float64), rv, rtol=1e-3, atol=1e-4)
        np.testing.assert_allclose(np.asarray(g).astype(np.float64), rg, rtol=1e-3, atol=1e-3)


# Keras 3.15 (KERAS_BACKEND=torch), keras.ops.where(c, x, s) / where(c, s, x) for s in 0.0, 0, 1.5, True
WHERE_KERAS = {
    "float16": ["float16"] * 8, "float32": ["float32"] * 8, "float64": ["float64"] * 8,
    "int8": ["float32", "float32", "int8", "int8", "float32", "float32", "int8", "int8"],
    "int32": ["float32", "float32", "int32", "int32", "float32", "float32", "int32", "int32"],
    "int64": ["float32", "float32", "int64", "int64", "float32", "float32", "int64", "int64"],
    "uint8": ["float32", "float32", "uint8", "uint8", "float32", "float32", "uint8", "uint8"],
    "bool": ["float32", "float32", "int32", "int32", "float32", "float32", "bool", "bool"],
}


@pytest.mark.parametrize("dtype", sorted(WHERE_KERAS))
def test_where_python_scalars_are_weak_types(dtype):
    """Finding 3: where(c, float16_tensor, 0.0) was float32; Python scalars take the tensor's dtype."""
    c = np.array([True, False, True])
    x = Tensor(np.array([1, 0, 1]).astype(dtype))
    got = []
    for s in (0.0, 0, 1.5, True):
        got += [str(ops.where(c, x, s).dtype), str(ops.where(c, s, x).dtype)]
    assert got == WHERE_KERAS[dtype]
    if dtype.startswith("float"):
        np.testing.assert_array_equal(ops.where(c, x, 0.5).numpy(), np.array([1, 0.5, 1], dtype))


def test_where_dtypes_of_scalars_and_mixed_tensors():
    c = np.array([True, False])
    assert ops.where(c, 1.0, 0.0).dtype == np.float32
    assert ops.where(c, 1, 0).dtype == np.int32
    assert ops.where(c, 1, 0.0).dtype == np.float32
    f16 = Tensor(np.ones(2, np.float16))
    assert ops.where(c, f16, Tensor(np.ones(2, np.float32))).dtype == np.float32
    assert ops.where(c, Tensor(np.ones(2, np.int32)), f16).dtype == np.float16
    # gradients still route by the condition, in float16
    t = Tensor(np.array([2.0, 3.0], np.float16), requires_grad=True)
    (g,) = grad(ops.where(c, t, 0.0).sum(), [t])
    assert np.asarray(g).dtype == np.float16
    np.testing.assert_array_equal(g, [1.0, 0.0])


# ----------------------------------------------------------------------------- findings 5 and 6: batch norm
def test_batch_norm_empty_batch_leaves_moving_statistics():
    """Finding 5: an empty batch in training gave NaN statistics (and NaN moving averages). Like PyTorch:
    an empty output, moving statistics unchanged (Keras 3.15 sets them to NaN)."""
    bn = layers.BatchNormalization()
    bn(np.ones((3, 4), np.float32), training=True)
    mm, mv = bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()
    m = torch.nn.BatchNorm1d(4)
    with np.errstate(all="raise"):
        y = bn(np.zeros((0, 4), np.float32), training=True)
    ty = m(torch.zeros(0, 4))
    assert y.shape == tuple(ty.shape) == (0, 4)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), mm)
    np.testing.assert_array_equal(bn.moving_variance.numpy(), mv)
    # gradients of an empty batch: zeros for gamma and beta, as torch
    x = Tensor(np.zeros((0, 4), np.float32), requires_grad=True)
    out = bn(x, training=True)
    gs = grad(out.sum(), [bn.gamma, bn.beta])
    for g in gs:
        np.testing.assert_array_equal(g, np.zeros(4))
    # the op itself refuses to make statistics of nothing
    with pytest.raises(ValueError, match="no entries"):
        ops.batch_norm_training(Tensor(np.zeros((0, 4), np.float32)), None, None)


def test_batch_norm_inference_backward_uses_the_statistics_it_ran_with():
    """Finding 6: inference saved a reference to moving_mean; a later training call updated it in place
    and changed the first call's gradients (of the variance, through sum(gy * (x - mean)))."""
    rng = np.random.default_rng(9)
    x = rng.standard_normal((6, 3)).astype(np.float32) * 3 + 1
    gy = rng.standard_normal((6, 3)).astype(np.float32)

    def first_call_grads(interleave):
        layers.clear_session()
        bn = layers.BatchNormalization(momentum=0.0)
        bn.build((None, 3))
        bn.moving_mean.assign(np.array([0.5, -1.0, 2.0]))
        bn.moving_variance.assign(np.array([2.0, 0.5, 4.0]))
        xt = Tensor(x, requires_grad=True)
        y = bn(xt, training=False)
        if interleave:  # momentum 0: the moving statistics become this batch's, in place
            bn(x * 10 + 5, training=True)
        return [np.asarray(g) for g in grad((y * Tensor(gy)).sum(), [xt, bn.gamma, bn.beta])]

    fresh, interleaved = first_call_grads(False), first_call_grads(True)
    for a, b in zip(interleaved, fresh):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- finding 8: checker at extremes
X_EXTREME = np.array([-80.0, -30.0, -5.0, -1.0, -1e-3, 1e-3, 0.7, 5.0, 30.0, 80.0])
ACTIVATIONS = {
    "relu": ops.relu, "leaky_relu": ops.leaky_relu, "elu": ops.elu, "selu": ops.selu, "tanh": ops.tanh,
    "gelu": ops.gelu, "gelu_tanh": lambda x: ops.gelu(x, approximate=True), "softsign": ops.softsign,
    "sigmoid": ops.sigmoid, "log_sigmoid": ops.log_sigmoid, "softplus": ops.softplus, "silu": ops.silu,
    "hard_silu": ops.hard_silu, "relu6": ops.relu6,
}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_gradients_at_extreme_inputs(name):
    """Central differences in float64 at +-30 and +-80 (no kinks among the points)."""
    check_grad(ACTIVATIONS[name], X_EXTREME, name=name)


def test_softmax_family_gradients_at_extreme_logits():
    x = np.array([[80.0, -80.0, 0.0, 30.0], [-30.0, -80.0, 80.0, 79.0], [30.0, 30.0, -30.0, -30.0]])
    check_grad(ops.softmax, x)
    check_grad(ops.log_softmax, x)
    check_grad(lambda v: ops.softmax(v, axis=0), x)


def test_normalisation_gradients_at_extreme_inputs():
    """Large common offsets, spreads from 1e-3 to 1e3, and a constant row (variance 0: only epsilon)."""
    rng = np.random.default_rng(10)
    x = np.stack([1e4 + rng.standard_normal(6), 1e3 * rng.standard_normal(6), -80 + 1e-3 * rng.standard_normal(6),
                  np.full(6, 30.0)])
    gamma, beta = rng.standard_normal(6), rng.standard_normal(6)
    check_grad(lambda v, g, b: ops.layer_norm(v, g, b), x, gamma, beta)
    # (rms: row 0 gives outputs ~1e4, so the summed central differences carry ~1e-6 of rounding)
    check_grad(lambda v, g: ops.layer_norm(v, g, rms_scaling=True), x, gamma, atol=1e-5)
    check_grad(lambda v, g, b: ops.group_norm(v.reshape(4, 2, 3), g, b, groups=1), x, gamma[:3], beta[:3])
    check_grad(lambda v, g, b: ops.batch_norm_training(v, g, b)[0], x, gamma, beta)
    check_grad(lambda v, g, b: ops.batch_norm(v, g, b, np.full(6, 1e4), np.full(6, 1e6)), x, gamma, beta)


HALF_FNS = dict(ACTIVATIONS, softmax=ops.softmax, log_softmax=ops.log_softmax,
                layer_norm=lambda x: ops.layer_norm(x), exponential=ops.exponential)


@pytest.mark.parametrize("name", sorted(HALF_FNS))
def test_float16_forward_against_float32(name):
    """float16 in, float16 out, within float16 accuracy of the float32 computation (relative where the
    result is a normal float16, absolute below 6.1e-5, float16's smallest normal)."""
    x = np.concatenate([np.linspace(-10, 10, 81), [-30.0, -15.0, 15.0, 30.0]]).reshape(5, 17)
    if name == "exponential":
        x = np.clip(x, -10, 10)  # e^11 > 65504: float16 overflows there by definition
    fn = HALF_FNS[name]
    with np.errstate(over="ignore"):
        y16 = fn(Tensor(x.astype(np.float16))).numpy()
    y32 = fn(Tensor(x.astype(np.float32))).numpy()
    assert y16.dtype == np.float16
    tiny = np.finfo(np.float16).tiny
    err = np.abs(y16.astype(np.float64) - y32) - 4e-3 * np.abs(y32) - tiny
    assert (err <= 0).all(), (name, x.ravel()[np.argmax(err)], y16.ravel()[np.argmax(err)], y32.ravel()[np.argmax(err)])


def test_bfloat16_statistics_in_float32():
    """bfloat16 (NumPy-reachable through ml_dtypes, when installed): statistics in float32, output bfloat16.
    bfloat16 has float32's range but 8 bits of mantissa: summing 1000 entries in it loses the mean."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    bf16 = np.dtype(ml_dtypes.bfloat16)
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((2, 1000)) + 100.0).astype(np.float32)
    xb = x.astype(bf16)
    ref = _torch_layer_norm(xb.astype(np.float64))  # the exact normalisation of the bfloat16 values
    y = ops.layer_norm(Tensor(xb))
    assert y.dtype == bf16
    np.testing.assert_allclose(y.numpy().astype(np.float64), ref, rtol=1e-2, atol=2e-2)
    yb, mean, var = ops.batch_norm_training(Tensor(xb.T.copy()), None, None)
    assert yb.dtype == bf16 and mean.dtype == np.float32
    np.testing.assert_allclose(mean.numpy(), xb.astype(np.float64).mean(axis=1), rtol=1e-6)
    s = ops.softmax(Tensor(xb[:, :10]))
    assert s.dtype == bf16
    np.testing.assert_allclose(s.numpy().astype(np.float64),
                               torch.softmax(torch.tensor(xb[:, :10].astype(np.float64)), -1).numpy(), rtol=1e-2)


@pytest.mark.parametrize("name", ["sigmoid", "log_sigmoid", "silu", "softplus", "softmax16", "layer_norm16",
                                  "where16", "scce_probs", "lstm"])
def test_numerics_on_device_match_cpu(device_xp, name):
    """The new code paths (stable sigmoid, float32 statistics of float16, weak scalars, clipped CE
    backward, LSTM gates) on the device array module, against the CPU."""
    from lamina import backend
    rng = np.random.default_rng(12)
    x = np.concatenate([np.linspace(-90, 90, 19), rng.standard_normal(5)]).astype(np.float32).reshape(4, 6)
    fns = {
        "sigmoid": (ops.sigmoid, [x]), "log_sigmoid": (ops.log_sigmoid, [x]), "silu": (ops.silu, [x]),
        "softplus": (ops.softplus, [x]),
        "softmax16": (ops.softmax, [(x / 10).astype(np.float16)]),
        "layer_norm16": (ops.layer_norm, [(x * 10).astype(np.float16)]),
        "where16": (lambda a: ops.where(a > 0, a, 0.5), [x.astype(np.float16)]),
        "scce_probs": (lambda p: ops.losses.sparse_categorical_crossentropy(np.array([1, 1, 2, 3, 0]), p), [P_EDGE]),
        "lstm": (lambda a, k, r: ops.lstm(a, k, r)[0],
                 [x.reshape(2, 3, 4), rng.standard_normal((4, 8)).astype(np.float32) * 10,
                  rng.standard_normal((2, 8)).astype(np.float32)]),
    }
    fn, arrays = fns[name]
    results = []
    for xp in (np, device_xp):
        ts = [Tensor(backend.to_device(a, xp), requires_grad=True) for a in arrays]
        y = fn(*ts)
        y.backward(backend.to_device(np.ones(y.shape, y.dtype), xp))
        out = [y.data] + [t.grad for t in ts]
        assert all(backend.get_array_module(a) is xp for a in out)
        results.append([backend.to_numpy(a).astype(np.float64) for a in out])
    for a, b in zip(*results):
        np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-5)  # (test_device.py's GPU tolerance)


@pytest.mark.parametrize("dtype,low", [(np.float32, -87.0), (np.float64, -700.0)])
def test_gate_sigmoid_relatively_exact_in_the_normal_range(dtype, low):
    """The fused recurrent gates' sigmoid (1 / (1 + exp(-x)), subnormals=False): a few ulps of relative
    error wherever sigmoid(x) is a normal number, 0 below that, no overflow warning, NaN kept."""
    from lamina.ops.activations import sigmoid_inplace
    x = np.concatenate([np.linspace(low, 100.0, 4001), [-30.0, -1e-3, 0.0, 1e-3]]).astype(dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = sigmoid_inplace(np, x.copy(), subnormals=False)
        edge = sigmoid_inplace(np, np.array([np.nan, -np.inf, np.inf, 2 * low - 100.0], dtype), subnormals=False)
    want = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    assert got.dtype == dtype
    assert np.max(np.abs(got - want) / want) < 8 * np.finfo(dtype).eps
    assert np.isnan(edge[0]) and edge[1] == 0.0 and edge[2] == 1.0 and edge[3] == 0.0
    # a strided view (a block of gate columns) is written in place, its neighbours untouched
    block = np.stack([x, x]).T.copy()
    sigmoid_inplace(np, block[:, :1], subnormals=False)
    np.testing.assert_array_equal(block[:, 0], got)
    np.testing.assert_array_equal(block[:, 1], x)


def test_sums_over_a_run_before_kept_axes_take_blas_with_numpys_values():
    """Sums and means over one run of axes before kept ones (a global average pooling's (1, 2), a batch's axis 0) as
    ones @ x (BLAS): within float32's rounding of the float64 sum (no worse than NumPy's own), NaN and the
    infinities propagating as NumPy's, float16 / integers / strided views and a trailing run keeping NumPy's sum;
    and the product really is the path taken."""
    from lamina.ops import math as M
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 30, 20, 16)).astype(np.float32) * 5
    want = x.astype(np.float64).sum(axis=(1, 2))
    got = np.asarray(ops.sum(Tensor(x), axis=(1, 2)).data)
    mine = np.abs(got - want).max()
    assert got.dtype == np.float32 and mine <= 2 * np.abs(x.sum(axis=(1, 2)) - want).max() + 1e-5
    np.testing.assert_allclose(np.asarray(ops.mean(Tensor(x), axis=(1, 2)).data), want / 600, rtol=1e-5, atol=1e-6)
    assert M._sum_run(np, x, [1, 2]) is not None and M._sum_run(np, x, [0]) is not None
    for a, ax in ((x.astype(np.float16), [1, 2]), (x.astype(np.int32), [1, 2]), (x[:, ::2], [1, 2]), (x, [2, 3]),
                  (x, [0, 2]), (x[:0], [0])):
        assert M._sum_run(np, a, ax) is None
    y = x.copy()
    y[1, 3, 4, 5], y[2, 0, 0, 1], y[2, 5, 5, 1], y[3, 1, 1, 2] = np.nan, np.inf, -np.inf, np.inf
    got = np.asarray(ops.sum(Tensor(y), axis=(1, 2)).data)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(y.sum(axis=(1, 2))))
    assert got[3, 2] == np.inf


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("keepdims", [False, True])
def test_global_max_pooling_shares_the_gradient_among_ties(dtype, keepdims):
    """max over a run of axes before kept ones (GlobalMaxPooling2D's): each window's gy shared equally among the
    entries equal to its maximum, in gy's dtype (the counts a product with ones), NaN windows NaN."""
    x = np.round(np.random.default_rng(5).standard_normal((4, 6, 5, 3)) * 1.5).astype(dtype)   # (many ties)
    x[1, 2, 3, 1] = np.nan
    gy = np.random.default_rng(6).standard_normal((4, 1, 1, 3) if keepdims else (4, 3)).astype(dtype)
    t = Tensor(x, requires_grad=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        (g,) = grad(ops.max(t, axis=(1, 2), keepdims=keepdims), [t], grad_output=Tensor(gy))
        top = x == np.max(x, axis=(1, 2), keepdims=True)
        want = top * (gy.reshape(4, 1, 1, 3) / top.sum(axis=(1, 2), keepdims=True))
    g = np.asarray(g.data)
    assert g.dtype == dtype
    np.testing.assert_array_equal(np.isnan(g), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_allclose(g[ok], want[ok], rtol=1e-6 if dtype == np.float32 else 1e-15)
    assert (top.sum(axis=(1, 2)) > 1).any() and np.isnan(g[1, ..., 1]).all() and not np.isnan(g[1, ..., 0]).any()


@pytest.mark.parametrize("shape,axis", [((6, 7, 5, 4), (1, 3)), ((3, 4, 5, 2, 3), (1, 2, 4)), ((5, 6, 3), (2, 0)),
                                        ((4, 5, 3, 2, 2), (0, 3, 4)), ((4, 3, 70), (1, 2)), ((4, 3, 5, 6), (0, 2, 3)),
                                        ((3, 4), None), ((3, 4, 2), (0, 1, 2)),
                                        # one run of axes before kept ones: a product with ones (math._sum_run)
                                        ((6, 7, 5, 4), (1, 2)), ((5, 6, 3), 0), ((4, 3, 5, 6), (0, 1, 2)),
                                        ((3, 4, 5), (1,)), ((3, 1, 5), 1)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions_over_several_axes_with_a_short_last_run(shape, axis, keepdims):
    """sum, mean, var, max and min over axes that end in a short trailing run behind other reduced axes (reduced
    after the others: NumPy's own reduction walks it element by element) or not, a whole array's too: NumPy's values
    and shapes in float32 (within its rounding) and float64, their gradients numerically, max's shared among ties."""
    x = np.random.default_rng(4).standard_normal(shape)
    for dt, tol in ((np.float32, 1e-5), (np.float64, 1e-12)):
        a = x.astype(dt)
        for fn, ref in ((ops.sum, np.sum), (ops.mean, np.mean), (ops.var, np.var), (ops.max, np.max),
                        (ops.min, np.min)):
            got = np.asarray(fn(Tensor(a), axis=axis, keepdims=keepdims).data)
            want = ref(a, axis=axis, keepdims=keepdims)
            assert got.shape == np.shape(want)
            assert got.dtype == dt or fn is ops.var   # (ops.var computes float64 in float32, as Keras's)
            t = tol if got.dtype == dt else 1e-5
            np.testing.assert_allclose(got, want, rtol=t, atol=t)
    from lamina.ops import math as M   # (the ops themselves: ops.var computes float64 in float32)
    for fn in (M.sum, M.mean, M.var, M.max, M.min):
        check_grad(lambda t, fn=fn: fn(t, axis=axis, keepdims=keepdims), x)
    # max's gradient shared among ties, counted over the same axes
    tied = np.round(x * 2) / 2
    t = Tensor(tied, requires_grad=True)
    (g,) = grad(ops.sum(ops.max(t, axis=axis, keepdims=True)), [t])
    top = tied == tied.max(axis=axis, keepdims=True)
    np.testing.assert_allclose(np.asarray(g.data), top / top.sum(axis=axis, keepdims=True), rtol=1e-12)
