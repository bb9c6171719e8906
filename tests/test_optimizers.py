"""Optimizers and schedules: PyTorch's optimizers on the same gradients where the formulas agree,
NumPy references of Keras 3's formulas where they differ; clipping, weight decay, state round trip."""
import math

import numpy as np
import pytest

import lamina
from lamina import optimizers
from lamina.optimizers import schedules

SHAPES = [(3, 4), (5,)]
STEPS = 6


def make_grads(seed=1, steps=STEPS, scale=1.0):
    r = np.random.default_rng(seed)
    return [[(r.standard_normal(s) * scale).astype(np.float32) for s in SHAPES] for _ in range(steps)]


def make_vars(seed=2):
    r = np.random.default_rng(seed)
    return [lamina.Variable(r.standard_normal(s).astype(np.float32), name=f"w{i}") for i, s in enumerate(SHAPES)]


def run_ours(opt, grads, variables=None):
    variables = variables or make_vars()
    for gs in grads:
        opt.apply_gradients(zip(gs, variables))
    return variables


# ---------------------------------------------------------------- PyTorch parity
def run_torch(make_opt, grads):
    torch = pytest.importorskip("torch")
    params = [torch.nn.Parameter(torch.tensor(v.data.copy())) for v in make_vars()]
    opt = make_opt(params)
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad = torch.tensor(g)
        opt.step()
    return [p.detach().numpy() for p in params]


def torch_cases():
    torch = pytest.importorskip("torch")
    o = torch.optim
    # eps made tiny on both sides where Keras and PyTorch add it in different places
    return {
        "sgd": (lambda: optimizers.SGD(0.1), lambda p: o.SGD(p, lr=0.1)),
        "sgd_momentum": (lambda: optimizers.SGD(0.1, momentum=0.9), lambda p: o.SGD(p, lr=0.1, momentum=0.9)),
        "sgd_nesterov": (lambda: optimizers.SGD(0.05, momentum=0.8, nesterov=True),
                         lambda p: o.SGD(p, lr=0.05, momentum=0.8, nesterov=True)),
        "adam": (lambda: optimizers.Adam(0.01, epsilon=1e-12), lambda p: o.Adam(p, lr=0.01, eps=1e-12)),
        "adam_amsgrad": (lambda: optimizers.Adam(0.01, epsilon=1e-12, amsgrad=True),
                         lambda p: o.Adam(p, lr=0.01, eps=1e-12, amsgrad=True)),
        "adamw": (lambda: optimizers.AdamW(0.01, weight_decay=0.1, epsilon=1e-12),
                  lambda p: o.AdamW(p, lr=0.01, weight_decay=0.1, eps=1e-12)),
        "rmsprop": (lambda: optimizers.RMSprop(0.01, epsilon=1e-14), lambda p: o.RMSprop(p, lr=0.01, alpha=0.9, eps=1e-14)),
        "rmsprop_momentum_centered": (
            lambda: optimizers.RMSprop(0.01, momentum=0.5, centered=True, epsilon=1e-14),
            lambda p: o.RMSprop(p, lr=0.01, alpha=0.9, momentum=0.5, centered=True, eps=1e-14)),
        "adagrad": (lambda: optimizers.Adagrad(0.1, initial_accumulator_value=0.1, epsilon=1e-14),
                    lambda p: o.Adagrad(p, lr=0.1, initial_accumulator_value=0.1, eps=1e-14)),
        "adadelta": (lambda: optimizers.Adadelta(1.0, rho=0.9, epsilon=1e-6),
                     lambda p: o.Adadelta(p, lr=1.0, rho=0.9, eps=1e-6)),
        "adamax": (lambda: optimizers.Adamax(0.01, epsilon=1e-12), lambda p: o.Adamax(p, lr=0.01, eps=1e-12)),
    }


@pytest.mark.parametrize("case", ["sgd", "sgd_momentum", "sgd_nesterov", "adam", "adam_amsgrad", "adamw", "rmsprop",
                                  "rmsprop_momentum_centered", "adagrad", "adadelta", "adamax"])
def test_matches_torch(case):
    ours, theirs = torch_cases()[case]
    grads = make_grads()
    got = run_ours(ours(), grads)
    want = run_torch(theirs, grads)
    for v, w in zip(got, want):
        assert v.data.dtype == np.float32
        np.testing.assert_allclose(v.data, w, rtol=2e-5, atol=2e-6, err_msg=case)


# ---------------------------------------------------------------- NumPy references of Keras's formulas
def ref_run(update, state_init, grads, lr):
    ws = [v.data.astype(np.float64) for v in make_vars()]
    states = [state_init(w) for w in ws]
    for t, gs in enumerate(grads):
        for w, g, st in zip(ws, gs, states):
            update(w, g.astype(np.float64), st, lr, t)
    return ws


def ref_adam(eps, amsgrad=False):
    def update(w, g, st, lr, t):
        st["m"] += (g - st["m"]) * 0.1
        st["v"] += (g * g - st["v"]) * 0.001
        v = st["v"]
        if amsgrad:
            st["vh"] = np.maximum(st["vh"], v)
            v = st["vh"]
        alpha = lr * math.sqrt(1 - 0.999 ** (t + 1)) / (1 - 0.9 ** (t + 1))
        w -= alpha * st["m"] / (np.sqrt(v) + eps)
    return update, lambda w: {"m": np.zeros_like(w), "v": np.zeros_like(w), "vh": np.zeros_like(w)}


def ref_rmsprop(eps, rho=0.9):
    def update(w, g, st, lr, t):
        st["v"] = rho * st["v"] + (1 - rho) * g * g
        w -= lr * g / np.sqrt(st["v"] + eps)
    return update, lambda w: {"v": np.zeros_like(w)}


def ref_adagrad(eps, init=0.1):
    def update(w, g, st, lr, t):
        st["a"] += g * g
        w -= lr * g / np.sqrt(st["a"] + eps)
    return update, lambda w: {"a": np.full_like(w, init)}


def ref_adamax(eps):
    def update(w, g, st, lr, t):
        st["m"] += (g - st["m"]) * 0.1
        st["u"] = np.maximum(0.999 * st["u"], np.abs(g))
        w -= lr * st["m"] / ((1 - 0.9 ** (t + 1)) * (st["u"] + eps))
    return update, lambda w: {"m": np.zeros_like(w), "u": np.zeros_like(w)}


def ref_nadam(eps):
    def u(t):
        return 0.9 * (1 - 0.5 * 0.96 ** t)

    def update(w, g, st, lr, t):
        step = t + 1
        p_t = np.prod([u(k) for k in range(1, step + 1)])
        p_t1 = p_t * u(step + 1)
        st["m"] += (g - st["m"]) * 0.1
        st["v"] += (g * g - st["v"]) * 0.001
        m_hat = u(step + 1) * st["m"] / (1 - p_t1) + (1 - u(step)) * g / (1 - p_t)
        v_hat = st["v"] / (1 - 0.999 ** step)
        w -= lr * m_hat / (np.sqrt(v_hat) + eps)
    return update, lambda w: {"m": np.zeros_like(w), "v": np.zeros_like(w)}


@pytest.mark.parametrize("name,make,ref,lr", [
    # epsilon large enough that its placement matters: these differ from PyTorch
    ("adam", lambda: optimizers.Adam(0.01, epsilon=0.1), ref_adam(0.1), 0.01),
    ("adam_amsgrad", lambda: optimizers.Adam(0.01, epsilon=0.1, amsgrad=True), ref_adam(0.1, True), 0.01),
    ("rmsprop", lambda: optimizers.RMSprop(0.01, epsilon=0.1), ref_rmsprop(0.1), 0.01),
    ("adagrad", lambda: optimizers.Adagrad(0.1, epsilon=0.1), ref_adagrad(0.1), 0.1),
    ("adamax", lambda: optimizers.Adamax(0.01, epsilon=0.1), ref_adamax(0.1), 0.01),
    ("nadam", lambda: optimizers.Nadam(0.01), ref_nadam(1e-7), 0.01),
    ("nadam_eps", lambda: optimizers.Nadam(0.01, epsilon=0.1), ref_nadam(0.1), 0.01),
])
def test_matches_keras_formula(name, make, ref, lr):
    grads = make_grads()
    got = run_ours(make(), grads)
    want = ref_run(ref[0], ref[1], grads, lr)
    for v, w in zip(got, want):
        assert v.data.dtype == np.float32
        np.testing.assert_allclose(v.data, w, rtol=1e-5, atol=1e-6, err_msg=name)


def test_defaults_are_keras():
    assert optimizers.SGD().learning_rate == 0.01
    a = optimizers.Adam()
    assert (a.learning_rate, a.beta_1, a.beta_2, a.epsilon, a.amsgrad) == (0.001, 0.9, 0.999, 1e-7, False)
    assert optimizers.AdamW().weight_decay == 0.004
    r = optimizers.RMSprop()
    assert (r.learning_rate, r.rho, r.momentum, r.epsilon, r.centered) == (0.001, 0.9, 0.0, 1e-7, False)
    g = optimizers.Adagrad()
    assert (g.learning_rate, g.initial_accumulator_value, g.epsilon) == (0.001, 0.1, 1e-7)
    d = optimizers.Adadelta()
    assert (d.learning_rate, d.rho, d.epsilon) == (0.001, 0.95, 1e-7)


# ---------------------------------------------------------------- clipping, weight decay, constraints
def sgd_step(grads, **kw):
    variables = make_vars()
    before = [v.data.copy() for v in variables]
    optimizers.SGD(1.0, **kw).apply_gradients(zip(grads, variables))
    return [b - v.data for b, v in zip(before, variables)]  # the applied gradient (lr = 1)


def test_clipnorm_clips_each_gradient():
    gs = [g * 3 for g in make_grads(steps=1)[0]]
    applied = sgd_step(gs, clipnorm=1.0)
    for a, g in zip(applied, gs):
        n = np.linalg.norm(g)
        np.testing.assert_allclose(a, g * min(1.0, 1.0 / n), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(a), 1.0, rtol=1e-5)
    small = [g * 1e-3 for g in gs]
    for a, g in zip(sgd_step(small, clipnorm=1.0), small):
        np.testing.assert_allclose(a, g, rtol=1e-4, atol=1e-7)


def test_global_clipnorm():
    gs = make_grads(steps=1)[0]
    norm = math.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in gs))
    applied = sgd_step(gs, global_clipnorm=0.5)
    for a, g in zip(applied, gs):
        np.testing.assert_allclose(a, g * 0.5 / norm, rtol=1e-5, atol=1e-6)


def test_clipvalue():
    gs = make_grads(steps=1)[0]
    for a, g in zip(sgd_step(gs, clipvalue=0.3), gs):
        np.testing.assert_allclose(a, np.clip(g, -0.3, 0.3), rtol=1e-5, atol=1e-6)


def test_only_one_clip_argument():
    with pytest.raises(ValueError, match="only one of"):
        optimizers.SGD(clipnorm=1.0, clipvalue=1.0)


def test_weight_decay_is_decoupled_and_first():
    gs = make_grads(steps=1)[0]
    variables = make_vars()
    w0 = [v.data.astype(np.float64) for v in variables]
    optimizers.SGD(0.1, weight_decay=0.5).apply_gradients(zip(gs, variables))
    for v, w, g in zip(variables, w0, gs):
        np.testing.assert_allclose(v.data, w - 0.1 * 0.5 * w - 0.1 * g, rtol=1e-5, atol=1e-6)


def test_exclude_from_weight_decay():
    variables = make_vars()
    w0 = [v.data.copy() for v in variables]
    opt = optimizers.SGD(0.1, weight_decay=0.5)
    opt.exclude_from_weight_decay(var_names=["w1"])
    opt.apply_gradients(zip([np.zeros(s, np.float32) for s in SHAPES], variables))
    assert not np.allclose(variables[0].data, w0[0])
    np.testing.assert_array_equal(variables[1].data, w0[1])


def test_constraint_applied_after_update():
    v = lamina.Variable(np.array([1.0, -2.0, 3.0], np.float32), constraint=lamina.constraints.NonNeg())
    optimizers.SGD(1.0).apply_gradients([(np.array([0.0, 0.0, 4.0], np.float32), v)])
    np.testing.assert_array_equal(v.data, [1.0, 0.0, 0.0])


def test_none_gradients_skipped_and_tensor_gradients_accepted():
    variables = make_vars()
    w1 = variables[1].data.copy()
    opt = optimizers.Adam(0.1)
    with pytest.warns(UserWarning, match="Gradients do not exist"):
        opt.apply_gradients([(lamina.Tensor(np.ones(SHAPES[0], np.float32)), variables[0]), (None, variables[1])])
    np.testing.assert_array_equal(variables[1].data, w1)
    assert opt.iterations == 1
    with pytest.raises(ValueError, match="No gradients"):
        opt.apply_gradients([(None, variables[0])])


def test_updates_in_place_and_float32():
    variables = make_vars()
    ids = [id(v.data) for v in variables]
    grads = [g.astype(np.float64) for g in make_grads(steps=1)[0]]  # float64 grads must not upcast
    for name in ["sgd", "adam", "rmsprop", "adagrad", "adadelta", "adamax", "nadam", "adamw"]:
        optimizers.get(name).apply_gradients(zip(grads, variables))
    assert [id(v.data) for v in variables] == ids
    assert all(v.data.dtype == np.float32 for v in variables)


@pytest.mark.parametrize("kernels", ["numpy", "auto"])
def test_scalar_weights_update_like_one_element_weights(kernels, monkeypatch):
    """A 0-d weight (Attention's ``scale``) takes the same steps as a weight of shape (1,), in every optimizer
    (LossScaleOptimizer and MultiOptimizer wrap these): NumPy's ufuncs return scalars for 0-d operands, which the
    in-place updates once refused (TypeError under LAMINA_KERNELS=numpy)."""
    from lamina.ops import kernels as K
    monkeypatch.setitem(K._state, "mode", kernels)
    gs = [np.float32(v) for v in (0.5, -1.25, 2.0, 0.0, 0.75)]
    for name in ["sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta", "adamax", "nadam", "lion", "ftrl",
                 "lamb", "adafactor", "muon", "ScheduleFreeAdamW"]:
        scalar, vector = lamina.Variable(np.float32(1.5)), lamina.Variable(np.full((1,), 1.5, np.float32))
        for v in (scalar, vector):
            opt = optimizers.get(name)
            for g in gs:
                opt.apply_gradients([(np.full(v.shape, g, np.float32), v)])
        assert scalar.data.shape == () and scalar.data.dtype == np.float32, name
        assert scalar.data != 1.5, name
        np.testing.assert_array_equal(scalar.data.reshape(1), vector.data, err_msg=name)


def test_step_and_zero_grad_use_dot_grad():
    w = lamina.Variable(np.array([1.0, 2.0], np.float32), name="w")
    loss = (w * w).sum()
    loss.backward()
    opt = optimizers.SGD(0.25)
    opt.step([w])
    np.testing.assert_allclose(w.data, [0.5, 1.0])
    opt.zero_grad([w])
    assert w.grad is None


def test_unknown_variable_raises():
    variables = make_vars()
    opt = optimizers.SGD()
    opt.apply_gradients(zip(make_grads(steps=1)[0], variables))
    other = lamina.Variable(np.zeros(3, np.float32), name="other")
    with pytest.raises(ValueError, match="unknown variable"):
        opt.apply_gradients([(np.zeros(3, np.float32), other)])


# ---------------------------------------------------------------- state, config, learning rate
@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta", "adamax", "nadam"])
def test_state_round_trip_continues_identically(name):
    grads = make_grads(steps=6)
    make = lambda: optimizers.get({"class_name": name, "config": {"learning_rate": 0.01, **(  # noqa: E731
        {"momentum": 0.9} if name in ("sgd", "rmsprop") else {})}})
    a_vars = make_vars()
    a = make()
    run_ours(a, grads, a_vars)
    # interrupted run: 3 steps, export, new optimizer + weights, restore, 3 more steps
    b_vars = make_vars()
    b = make()
    run_ours(b, grads[:3], b_vars)
    state = b.get_state()
    weights = [v.data.copy() for v in b_vars]
    c_vars = [lamina.Variable(w, name=f"w{i}") for i, w in enumerate(weights)]
    c = optimizers.get({"class_name": type(b).__name__, "config": b.get_config()})
    c.build(c_vars)
    c.set_state(state)
    assert c.iterations == 3
    run_ours(c, grads[3:], c_vars)
    for x, y in zip(a_vars, c_vars):
        np.testing.assert_array_equal(x.data, y.data)


def test_get_state_layout():
    variables = make_vars()
    opt = optimizers.Adam()
    run_ours(opt, make_grads(steps=2), variables)
    state = opt.get_state()
    assert int(state[0]) == 2 and len(state) == 1 + 2 * len(variables)
    assert [s.shape for s in state[1:]] == [v.shape for v in variables] * 2
    with pytest.raises(ValueError, match="expected 5 arrays"):
        opt.set_state(state[:-1])


def test_get_resolves_names_and_rejects_unknown():
    assert isinstance(optimizers.get("Adam"), optimizers.Adam)
    assert isinstance(optimizers.get("RMSprop"), optimizers.RMSprop)
    opt = optimizers.SGD()
    assert optimizers.get(opt) is opt
    with pytest.raises(ValueError, match="Valid names: sgd, adam"):
        optimizers.get("adamm")
    # the names are lamina's classes, whatever a user's custom-object scope calls "Adam" (get() looks them up
    # among Optimizer's subclasses, not in the registry the scope shadows)
    import lamina

    class MyAdam(optimizers.Adam):
        pass
    with lamina.saving.custom_object_scope({"Adam": MyAdam}):
        assert type(optimizers.get("adam")) is optimizers.Adam
        assert type(optimizers.deserialize({"class_name": "Adam", "config": {}})) is optimizers.Adam
    assert type(optimizers.get("schedulefreeadamw")) is optimizers.ScheduleFreeAdamW


def test_config_round_trip_with_schedule():
    sched = schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    opt = optimizers.SGD(sched, momentum=0.9, nesterov=True, clipnorm=2.0)
    clone = optimizers.SGD.from_config(opt.get_config())
    assert clone.get_config() == opt.get_config()
    assert isinstance(clone._learning_rate, schedules.ExponentialDecay)


def test_learning_rate_schedule_drives_updates():
    sched = schedules.PiecewiseConstantDecay([1], [1.0, 0.1])
    w = lamina.Variable(np.zeros(1, np.float32))
    opt = optimizers.SGD(sched)
    for _ in range(3):
        opt.apply_gradients([(np.ones(1, np.float32), w)])
    np.testing.assert_allclose(w.data, [-(1.0 + 1.0 + 0.1)], rtol=1e-6)   # steps 0, 1 at 1.0, step 2 at 0.1
    with pytest.raises(TypeError, match="not settable"):
        opt.learning_rate = 0.5


def test_learning_rate_settable():
    opt = optimizers.Adam(0.01)
    opt.learning_rate = 0.5
    assert opt.learning_rate == 0.5 and float(opt.learning_rate.numpy()) == 0.5
    opt.learning_rate.assign(0.25)
    assert opt.get_config()["learning_rate"] == 0.25


def test_gradient_accumulation_applies_the_mean():
    grads = make_grads(steps=4)
    a_vars, b_vars = make_vars(), make_vars()
    run_ours(optimizers.SGD(0.1, gradient_accumulation_steps=2), grads, a_vars)
    merged = [[(g1 + g2) / 2 for g1, g2 in zip(grads[i], grads[i + 1])] for i in (0, 2)]
    run_ours(optimizers.SGD(0.1), merged, b_vars)
    for x, y in zip(a_vars, b_vars):
        np.testing.assert_allclose(x.data, y.data, rtol=1e-6, atol=1e-7)


def test_ema_finalize():
    variables = make_vars()
    w0 = [v.data.astype(np.float64) for v in variables]
    grads = make_grads(steps=3)
    opt = optimizers.SGD(0.1, use_ema=True, ema_momentum=0.5)
    ws, avg = [w.copy() for w in w0], None
    for gs in grads:
        ws = [w - 0.1 * g for w, g in zip(ws, gs)]
        avg = ws if avg is None else [0.5 * a + 0.5 * w for a, w in zip(avg, ws)]
    run_ours(opt, grads, variables)
    opt.finalize_variable_values(variables)
    for v, a in zip(variables, avg):
        np.testing.assert_allclose(v.data, a, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- schedules vs closed forms
@pytest.mark.parametrize("step", [0, 1, 7, 10, 25, 100])
def test_schedules_closed_forms(step):
    assert schedules.ExponentialDecay(0.1, 10, 0.5)(step) == pytest.approx(0.1 * 0.5 ** (step / 10))
    assert schedules.ExponentialDecay(0.1, 10, 0.5, staircase=True)(step) == pytest.approx(0.1 * 0.5 ** (step // 10))
    assert schedules.InverseTimeDecay(0.1, 10, 0.5)(step) == pytest.approx(0.1 / (1 + 0.5 * step / 10))
    s = min(step, 20)
    assert schedules.PolynomialDecay(0.1, 20, 0.01, power=2.0)(step) == pytest.approx(
        0.09 * (1 - s / 20) ** 2 + 0.01)
    c = min(step, 20)
    assert schedules.CosineDecay(0.1, 20, alpha=0.1)(step) == pytest.approx(
        0.1 * (0.9 * 0.5 * (1 + math.cos(math.pi * c / 20)) + 0.1))
    pw = schedules.PiecewiseConstantDecay([5, 10], [1.0, 0.5, 0.1])(step)
    assert pw == (1.0 if step <= 5 else 0.5 if step <= 10 else 0.1)


def test_cosine_decay_warmup():
    sched = schedules.CosineDecay(0.0, decay_steps=10, warmup_target=1.0, warmup_steps=4)
    assert [sched(s) for s in (0, 2, 4)] == pytest.approx([0.0, 0.5, 1.0])
    assert sched(9) == pytest.approx(0.5 * (1 + math.cos(math.pi * 5 / 10)))
    assert sched(14) == pytest.approx(0.0, abs=1e-12) and sched(100) == pytest.approx(0.0, abs=1e-12)


def test_schedule_config_round_trip():
    for s in [schedules.ExponentialDecay(0.1, 10, 0.5, staircase=True), schedules.PiecewiseConstantDecay([3], [1.0, 0.1]),
              schedules.InverseTimeDecay(0.1, 5, 0.2), schedules.PolynomialDecay(0.1, 20, cycle=True),
              schedules.CosineDecay(0.1, 100, warmup_target=0.2, warmup_steps=10),
              schedules.CosineDecayRestarts(0.1, 10)]:
        clone = schedules.deserialize(lamina.registry.serialize(s))
        assert clone.get_config() == s.get_config()
        assert clone(13) == s(13)


@pytest.mark.parametrize("cls,kw", [(optimizers.Adam, {}), (optimizers.Adam, {"amsgrad": True}),
                                    (optimizers.AdamW, {"weight_decay": 0.01})])
def test_adam_blocked_update_equals_whole_array_update(cls, kw, monkeypatch):
    """Large variables (over 16 blocks) are updated in cache-sized blocks: the same numbers, bit for bit, as
    one pass per operation over the whole arrays; the last block is a partial one. (Blocks of 1000 here.)"""
    from lamina.optimizers import adam
    rng = np.random.default_rng(3)
    w0 = rng.standard_normal((20 * 1000 + 5,)).astype(np.float32).reshape(-1, 1)
    grads = [rng.standard_normal(w0.shape).astype(np.float32) for _ in range(3)]
    seen = []
    real_blocks = adam._blocks

    def counting(arrays, size, whole=16):
        blocks = list(real_blocks(arrays, size, whole))
        seen.append(len(blocks))
        return blocks
    monkeypatch.setattr(adam, "_blocks", counting)
    results = []
    for block in (1000, 10 * w0.size):
        monkeypatch.setattr(counting, "__defaults__", (block, 16))
        var = lamina.Variable(w0.copy())
        opt = cls(learning_rate=0.01, **kw)
        for g in grads:
            opt.apply([g], [var])
        results.append(np.asarray(var.numpy()))
    assert seen == [21] * 3 + [1] * 3   # 20 full blocks and a partial one, then the whole arrays
    assert not np.array_equal(results[0], w0)
    np.testing.assert_array_equal(results[0], results[1])
