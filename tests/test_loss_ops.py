"""Per-sample loss ops: gradient checks, PyTorch parity (value and gradient), Keras's clipping, stability."""
import numpy as np
import pytest

from lamina import Tensor, grad
from lamina.ops import losses as ops  # the kernels (lamina.ops.NAME is keras.ops's elementwise form)
from lamina.testing import check_grad

R = np.random.default_rng(5)
torch = pytest.importorskip("torch")
F = torch.nn.functional


def ours(fn, y_true, y_pred, **kw):
    """Per-sample loss and its gradient w.r.t. y_pred under a random upstream gradient."""
    p = Tensor(y_pred, requires_grad=True)
    out = fn(y_true, p, **kw)
    gy = R.standard_normal(out.shape).astype(np.float32)
    (g,) = grad((out * Tensor(gy)).sum(), [p])
    return out.numpy(), g, gy


def theirs(fn, y_pred, gy, *args, **kw):
    p = torch.tensor(y_pred, requires_grad=True)
    out = fn(p, *args, **kw)
    (out * torch.tensor(gy)).sum().backward()
    return out.detach().numpy(), p.grad.numpy()


def assert_close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- gradient checks
LABELS = R.integers(0, 5, (4, 3))


@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("axis", [-1, 1])
def test_sparse_ce_grad(from_logits, axis):
    shape = (4, 5, 3) if axis == 1 else (4, 3, 5)
    pred = R.standard_normal(shape) if from_logits else R.uniform(0.1, 1.0, shape)
    check_grad(lambda p: ops.sparse_categorical_crossentropy(LABELS, p, from_logits, axis), pred)


@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("ls", [0.0, 0.2])
def test_categorical_ce_grad(from_logits, ls):
    t = R.dirichlet(np.ones(5), (6,))
    pred = R.standard_normal((6, 5)) if from_logits else R.uniform(0.1, 1.0, (6, 5))
    check_grad(lambda t, p: ops.categorical_crossentropy(t, p, from_logits, ls), t, pred)


@pytest.mark.parametrize("from_logits", [True, False])
@pytest.mark.parametrize("ls", [0.0, 0.1])
def test_binary_ce_grad(from_logits, ls):
    t = R.uniform(0, 1, (4, 3))
    pred = R.standard_normal((4, 3)) * 3 if from_logits else R.uniform(0.05, 0.95, (4, 3))
    check_grad(lambda t, p: ops.binary_crossentropy(t, p, from_logits, ls), t, pred)


def _away_from_kinks(shape, delta=1.0):
    d = R.uniform(-3, 3, shape)
    for k in (0.0, delta, -delta):
        d[np.abs(d - k) < 0.05] += 0.2
    return d


@pytest.mark.parametrize("name", ["mean_squared_error", "mean_absolute_error", "huber", "log_cosh",
                                  "mean_squared_logarithmic_error", "mean_absolute_percentage_error"])
@pytest.mark.parametrize("shapes", [((4, 3), (4, 3)), ((5,), (5,)), ((4, 1), (4,)), ((4, 3), (1, 3))])
def test_regression_grad(name, shapes):
    st, sp = shapes
    t = R.uniform(0.5, 2.0, st)
    # away from the kinks of |d| (0) and Huber (|d| = 1): d in +-[0.1, 0.6]
    d = R.uniform(0.1, 0.6, sp) * R.choice([-1.0, 1.0], sp)
    p = np.broadcast_to(t.reshape(-1)[:1], sp) + 1.0 + d if st != sp else t + d
    check_grad(getattr(ops, name), t, p)


def test_kl_hinge_poisson_grad():
    # its own generator (the module's R is shared with whatever ran before on this worker), and
    # probabilities kept away from 0, where t / p is huge and central differences are no reference
    R = np.random.default_rng(81)
    t = 0.8 * R.dirichlet(np.ones(4), (5,)) + 0.05
    check_grad(ops.kl_divergence, t, 0.8 * R.dirichlet(np.ones(4), (5,)) + 0.05)
    labels = R.integers(0, 2, (5, 4)).astype(np.float64)
    p = R.uniform(-2, 2, (5, 4))
    p[np.abs(1 - np.abs(p)) < 0.1] = 0.3  # away from the hinge's kink at t p = 1
    check_grad(lambda p: ops.hinge(labels, p), p)
    check_grad(lambda p: ops.squared_hinge(labels, p), p)
    check_grad(lambda p: ops.categorical_hinge(np.eye(4)[[0, 1, 2, 3, 0]], p), p)
    check_grad(ops.poisson, t, R.uniform(0.5, 2, (5, 4)))


# ----------------------------------------------------------------------------- PyTorch parity
@pytest.mark.parametrize("trailing_one", [False, True])
def test_sparse_ce_from_logits_matches_torch_cross_entropy(trailing_one):
    x = (R.standard_normal((6, 7)) * 3).astype(np.float32)
    y = R.integers(0, 7, 6)
    out, g, gy = ours(ops.sparse_categorical_crossentropy, y[:, None] if trailing_one else y, x, from_logits=True)
    ref, gref = theirs(F.cross_entropy, x, gy, torch.tensor(y), reduction="none")
    assert_close(out, ref)
    assert_close(g, gref)


def test_sparse_ce_from_probabilities_matches_nll_of_log():
    p = R.dirichlet(np.ones(5), 8).astype(np.float32) * 0.9 + 0.02
    p /= p.sum(-1, keepdims=True)
    y = R.integers(0, 5, 8)
    out, g, gy = ours(ops.sparse_categorical_crossentropy, y, p)
    # probabilities inside [eps, 1 - eps] and summing to 1: Keras's loss is nll(log p); torch
    # differentiates the renormalisation too, so compare against a normalised input
    ref, gref = theirs(lambda t, y: F.nll_loss(torch.log(t / t.sum(-1, keepdim=True)), y, reduction="none"),
                       p, gy, torch.tensor(y))
    assert_close(out, ref)
    assert_close(g, gref)


def test_sparse_ce_sequence_and_ignore_class():
    x = R.standard_normal((2, 4, 5)).astype(np.float32)
    y = R.integers(0, 5, (2, 4))
    y[0, 1] = y[1, 3] = -1
    out, g, gy = ours(ops.sparse_categorical_crossentropy, y, x, from_logits=True, ignore_class=-1)
    ref, gref = theirs(lambda t, y: F.cross_entropy(t.permute(0, 2, 1), y, ignore_index=-1, reduction="none"),
                       x, gy, torch.tensor(y))
    assert_close(out, ref)
    assert_close(g, gref)
    res = ops.sparse_categorical_crossentropy(y, x, from_logits=True, ignore_class=-1)
    np.testing.assert_array_equal(res._keras_mask.numpy(), y != -1)


def test_categorical_ce_matches_torch_with_soft_labels_and_smoothing():
    x = (R.standard_normal((6, 4)) * 2).astype(np.float32)
    t = R.dirichlet(np.ones(4), 6).astype(np.float32)
    out, g, gy = ours(ops.categorical_crossentropy, t, x, from_logits=True, label_smoothing=0.1)
    ref, gref = theirs(F.cross_entropy, x, gy, torch.tensor(t), label_smoothing=0.1, reduction="none")
    assert_close(out, ref)
    assert_close(g, gref)
    # from probabilities (already normalised, away from the clip): -sum(t log p)
    p = R.dirichlet(np.ones(4) * 3, 6).astype(np.float32)
    out, g, gy = ours(ops.categorical_crossentropy, t, p)
    ref, gref = theirs(lambda q, t: -(t * torch.log(q / q.sum(-1, keepdim=True))).sum(-1), p, gy, torch.tensor(t))
    assert_close(out, ref)
    assert_close(g, gref)


@pytest.mark.parametrize("from_logits", [True, False])
def test_binary_ce_matches_torch(from_logits):
    t = R.integers(0, 2, (5, 3)).astype(np.float32)
    if from_logits:
        x = (R.standard_normal((5, 3)) * 4).astype(np.float32)
        out, g, gy = ours(ops.binary_crossentropy, t, x, from_logits=True)
        ref, gref = theirs(lambda p, t: F.binary_cross_entropy_with_logits(p, t, reduction="none").mean(-1),
                           x, gy, torch.tensor(t))
    else:
        p = R.uniform(0.01, 0.99, (5, 3)).astype(np.float32)
        out, g, gy = ours(ops.binary_crossentropy, t, p)
        ref, gref = theirs(lambda q, t: F.binary_cross_entropy(q, t, reduction="none").mean(-1), p, gy, torch.tensor(t))
    assert_close(out, ref)
    assert_close(g, gref)


@pytest.mark.parametrize("name,ref", [
    ("mean_squared_error", lambda p, t: F.mse_loss(p, t, reduction="none").mean(-1)),
    ("mean_absolute_error", lambda p, t: F.l1_loss(p, t, reduction="none").mean(-1)),
    ("huber", lambda p, t: F.huber_loss(p, t, reduction="none", delta=1.0).mean(-1)),
    ("log_cosh", lambda p, t: torch.log(torch.cosh(p - t)).mean(-1)),
])
def test_regression_losses_match_torch(name, ref):
    t = R.standard_normal((6, 4)).astype(np.float32)
    p = (t + _away_from_kinks((6, 4)) * 0.7).astype(np.float32)
    out, g, gy = ours(getattr(ops, name), t, p)
    r, gr = theirs(ref, p, gy, torch.tensor(t))
    assert_close(out, r)
    assert_close(g, gr)


def test_huber_delta_matches_torch():
    t = R.standard_normal((6, 4)).astype(np.float32)
    p = (t + _away_from_kinks((6, 4), 2.0)).astype(np.float32)
    out, g, gy = ours(ops.huber, t, p, delta=2.0)
    r, gr = theirs(lambda p, t: F.huber_loss(p, t, reduction="none", delta=2.0).mean(-1), p, gy, torch.tensor(t))
    assert_close(out, r)
    assert_close(g, gr)


def test_kl_divergence_matches_torch_kl_div():
    t = R.dirichlet(np.ones(5), 4).astype(np.float32)
    p = R.dirichlet(np.ones(5), 4).astype(np.float32)
    out, g, gy = ours(ops.kl_divergence, t, p)
    r, gr = theirs(lambda q, t: F.kl_div(torch.log(q), t, reduction="none").sum(-1), p, gy, torch.tensor(t))
    assert_close(out, r)
    assert_close(g, gr)


# ----------------------------------------------------------------------------- Keras's rules and stability
def test_probability_losses_clip_like_keras():
    p = np.array([[0.0, 1.0, 0.0]], np.float32)
    # the true class has probability 0: Keras clips to 1e-7, so the loss is -log(1e-7)
    out = ops.sparse_categorical_crossentropy(np.array([0]), p).numpy()
    assert out[0] == pytest.approx(-np.log(np.float32(1e-7)), rel=1e-5)
    out = ops.categorical_crossentropy(np.array([[1.0, 0, 0]]), p).numpy()
    assert out[0] == pytest.approx(-np.log(np.float32(1e-7)), rel=1e-5)
    # unnormalised probabilities are divided by their sum first
    out = ops.sparse_categorical_crossentropy(np.array([1]), np.array([[1.0, 3.0]], np.float32)).numpy()
    assert out[0] == pytest.approx(-np.log(0.75), rel=1e-6)
    out = ops.binary_crossentropy(np.array([[1.0]]), np.array([[0.0]], np.float32)).numpy()
    assert out[0] == pytest.approx(-np.log(np.float32(1e-7)), rel=1e-4)
    kl = ops.kl_divergence(np.array([[0.0, 1.0]]), np.array([[0.5, 0.0]], np.float32)).numpy()
    ref = 1e-7 * np.log(1e-7 / 0.5) + np.log(1 / 1e-7)
    assert kl[0] == pytest.approx(ref, rel=1e-4)


def test_label_smoothing_rules():
    x = np.array([[2.0, 0.0, -1.0]], np.float32)
    t = np.array([[1.0, 0.0, 0.0]], np.float32)
    smooth = t * 0.7 + 0.3 / 3
    a = ops.categorical_crossentropy(t, x, from_logits=True, label_smoothing=0.3).numpy()
    b = ops.categorical_crossentropy(smooth, x, from_logits=True).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-6)
    a = ops.binary_crossentropy(t, x, from_logits=True, label_smoothing=0.3).numpy()
    b = ops.binary_crossentropy(t * 0.7 + 0.15, x, from_logits=True).numpy()
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_hinge_converts_binary_labels():
    p = np.array([[0.3, -0.4]], np.float32)
    a = ops.hinge(np.array([[1.0, 0.0]]), p).numpy()
    b = ops.hinge(np.array([[1.0, -1.0]]), p).numpy()
    np.testing.assert_allclose(a, b)
    np.testing.assert_allclose(a, [(0.7 + 0.6) / 2], rtol=1e-6)


@pytest.mark.parametrize("case", ["sparse", "categorical", "binary"])
def test_huge_logits_give_finite_loss_and_gradient(case):
    x = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 3.0]], np.float32)
    if case == "sparse":
        out, g, _ = ours(ops.sparse_categorical_crossentropy, np.array([1, 1]), x, from_logits=True)
        np.testing.assert_allclose(out, [2e4, 0.0], rtol=1e-6)
    elif case == "categorical":
        out, g, _ = ours(ops.categorical_crossentropy, np.eye(3, dtype=np.float32)[[1, 1]], x, from_logits=True)
        np.testing.assert_allclose(out, [2e4, 0.0], rtol=1e-6)
    else:
        out, g, _ = ours(ops.binary_crossentropy, np.array([[1, 0, 1], [1, 1, 0]], np.float32), x, from_logits=True)
        np.testing.assert_allclose(out, [np.log(2) / 3, (1e4 + 0 + 3.0485873) / 3], rtol=1e-5)
    assert np.isfinite(out).all() and np.isfinite(g).all()


def test_log_cosh_is_finite_for_huge_errors():
    out, g, _ = ours(ops.log_cosh, np.zeros((1, 2), np.float32), np.array([[1e4, -1e4]], np.float32))
    np.testing.assert_allclose(out, [1e4 - np.log(2)], rtol=1e-6)
    assert np.isfinite(g).all()


def test_losses_keep_float32_and_reduce_only_the_last_axis():
    x = R.standard_normal((3, 4, 5)).astype(np.float32)
    y = R.integers(0, 5, (3, 4))
    for out in (ops.sparse_categorical_crossentropy(y, x, from_logits=True),
                ops.categorical_crossentropy(np.eye(5, dtype=np.float32)[y], x, from_logits=True),
                ops.binary_crossentropy(x > 0, x, from_logits=True),
                ops.mean_squared_error(x, x * 2), ops.mean_absolute_error(x, x), ops.huber(x, x),
                ops.kl_divergence(x, x), ops.log_cosh(x, x)):
        assert out.shape == (3, 4) and out.dtype == np.float32


def test_bad_labels_raise_clear_errors():
    x = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        ops.sparse_categorical_crossentropy(np.array([0, 1, 3, 2]), x)
    with pytest.raises(ValueError, match="one integer label per sample"):
        ops.sparse_categorical_crossentropy(np.zeros((4, 3)), x)
    with pytest.raises(ValueError, match="same shape"):
        ops.categorical_crossentropy(np.zeros((4, 2)), x)


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("axis,ignore", [(-1, None), (1, None), (-1, 3)])
def test_sparse_crossentropy_picks_the_label_as_the_one_hot_formula(from_logits, axis, ignore):
    """Sparse categorical cross-entropy reads the label's entry instead of summing a one-hot product over the
    classes: from probabilities the loss and gradient are the one-hot formula's values to the bit (the gradient
    (1 - onehot / qc) (inrange / total) g, in that order); from logits, to float32's rounding (its softmax sums
    run as a GEMV)."""
    rng = np.random.default_rng(7)
    x = rng.random((6, 5, 9)).astype(np.float32) + (0.0 if from_logits else 1e-3)
    if from_logits:
        x = (x - 0.5) * 8
    lab = rng.integers(0, 5 if axis == 1 else 9, (6, 9) if axis == 1 else (6, 5))
    g = rng.standard_normal(lab.shape).astype(np.float32)
    xt = Tensor(x, requires_grad=True)
    loss = ops.sparse_categorical_crossentropy(lab, xt, from_logits=from_logits, axis=axis, ignore_class=ignore)
    (gx,) = grad(loss, [xt], grad_output=Tensor(g))
    # the one-hot formula (the code this replaced), in NumPy
    p = np.moveaxis(x, axis, -1)
    valid = np.ones(lab.shape, np.float32) if ignore is None else (lab != ignore).astype(np.float32)
    lab0 = np.where(valid > 0, lab, 0)
    onehot = np.arange(p.shape[-1]) == lab0[..., None]
    gg = (g * valid)[..., None]
    if from_logits:
        z = p - p.max(axis=-1, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=-1, keepdims=True)
        want = (np.log(s) - (z * onehot).sum(axis=-1, keepdims=True))[..., 0] * valid
        want_g = (e / s - onehot) * gg
        np.testing.assert_allclose(np.asarray(loss.data), want, rtol=2e-6, atol=2e-6)
        np.testing.assert_allclose(np.asarray(gx.data), np.moveaxis(want_g, -1, axis), rtol=2e-5, atol=2e-6)
        return
    total = p.sum(axis=-1, keepdims=True)
    q = (p * onehot).sum(axis=-1, keepdims=True) / total
    qc = np.clip(q, 1e-7, 1.0 - 1e-7)
    inrange = ((q >= 1e-7) & (q <= 1.0 - 1e-7)).astype(np.float32)
    want = -np.log(qc)[..., 0] * valid
    want_g = (1.0 - onehot / qc) * (inrange / total) * gg
    np.testing.assert_array_equal(np.asarray(loss.data), want)
    np.testing.assert_array_equal(np.asarray(gx.data), np.moveaxis(want_g, -1, axis))


@pytest.mark.parametrize("name", ["MeanSquaredError", "MeanAbsoluteError", "Huber", "BinaryCrossentropy"])
@pytest.mark.parametrize("weighted", [False, True])
def test_batch_losses_and_gradients_against_float64_formulas(name, weighted):
    """The losses as a model computes them (a batch's mean, or sample weights: each row's own factor in backward,
    where an unweighted mean's rows share one), forward and gradient against float64 formulas: MSE and MAE, Huber
    at |d| = delta exactly too, the binary cross-entropy from logits up to +-100 (its softplus and sigmoid through
    the activations' compiled passes where they run)."""
    import lamina
    rng = np.random.default_rng(8)
    n, d = 300, 40
    t = (rng.integers(0, 2, (n, d)) if name == "BinaryCrossentropy" else rng.standard_normal((n, d))).astype(np.float32)
    p = (rng.standard_normal((n, d)) * 3).astype(np.float32)
    if name == "Huber":
        p[0, :4] = t[0, :4] + np.float32([1.0, -1.0, 0.0, 0.5])
    if name == "BinaryCrossentropy":
        p[1, :4] = [100.0, -100.0, 30.0, -30.0]
    sw = rng.uniform(0.1, 2.0, n).astype(np.float32) if weighted else None
    loss = (lamina.losses.BinaryCrossentropy(from_logits=True) if name == "BinaryCrossentropy"
            else getattr(lamina.losses, name)())
    pt = Tensor(p, requires_grad=True)
    value = loss(t, pt, sample_weight=sw)
    (g,) = grad(value, [pt])
    t64, p64 = t.astype(np.float64), p.astype(np.float64)
    e = p64 - t64
    if name == "MeanSquaredError":
        per, dper = e * e, 2 * e
    elif name == "MeanAbsoluteError":
        per, dper = np.abs(e), np.sign(e)
    elif name == "Huber":
        per = np.where(np.abs(e) <= 1, 0.5 * e * e, np.abs(e) - 0.5)
        dper = np.clip(e, -1, 1)
    else:
        per = np.logaddexp(0, p64) - p64 * t64
        dper = 1 / (1 + np.exp(-p64)) - t64
    w = np.ones(n) if sw is None else sw.astype(np.float64)
    want = (per.mean(-1) * w).sum() / n
    want_g = dper / d * w[:, None] / n
    np.testing.assert_allclose(float(value.numpy()), want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(g.data), want_g, rtol=2e-5, atol=1e-9)


@pytest.mark.parametrize("labels", ["one_hot", "soft", "unnormalised", "smoothed"])
@pytest.mark.parametrize("weighted", [False, True])
def test_categorical_crossentropy_from_logits_against_float64(labels, weighted):
    """The categorical cross-entropy from logits over a batch: one-hot labels (softmax - t, the sum(t) scale left
    out), soft ones, labels not summing to 1 (the general rule softmax sum(t) - t) and smoothed ones, with a batch
    mean or sample weights: loss and gradient against float64's log-softmax formulas."""
    import lamina
    rng = np.random.default_rng(9)
    n, k = 200, 30
    x = (rng.standard_normal((n, k)) * 3).astype(np.float32)
    if labels == "one_hot":
        t = np.eye(k, dtype=np.float32)[rng.integers(0, k, n)]
    else:
        t = rng.dirichlet(np.ones(k), n).astype(np.float32) * (1.7 if labels == "unnormalised" else 1.0)
    ls = 0.1 if labels == "smoothed" else 0.0
    sw = rng.uniform(0.1, 2.0, n).astype(np.float32) if weighted else None
    xt = Tensor(x, requires_grad=True)
    value = lamina.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=ls)(t, xt, sample_weight=sw)
    (g,) = grad(value, [xt])
    t64 = t.astype(np.float64) * (1 - ls) + ls / k
    z = x.astype(np.float64) - x.max(-1, keepdims=True)
    logq = z - np.log(np.exp(z).sum(-1, keepdims=True))
    w = np.ones(n) if sw is None else sw.astype(np.float64)
    want = (-(t64 * logq).sum(-1) * w).sum() / n
    want_g = (np.exp(logq) * t64.sum(-1, keepdims=True) - t64) * w[:, None] / n
    np.testing.assert_allclose(float(value.numpy()), want, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(g.data), want_g, rtol=1e-4, atol=1e-8)
