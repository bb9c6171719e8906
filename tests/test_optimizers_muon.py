"""Muon and ScheduleFreeAdamW against real Keras 3.15 (torch backend): the same starting weights and
gradients for several steps give the same weights (to 1e-5); configs equal Keras's; .keras round trip."""
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")
torch = pytest.importorskip("torch")

import lamina  # noqa: E402
from lamina import optimizers  # noqa: E402

# 2-D weights take Muon's step (wide, tall, square), the others AdamW's; the names steer the exclusions
SPECS = [("dense/kernel", (3, 5)), ("dense_1/kernel", (6, 4)), ("out/kernel", (4, 4)), ("dense/bias", (5,)),
         ("embedding/embeddings", (7, 3)), ("conv/kernel", (2, 3, 4))]
STEPS = 6


def _grads(seed=1, scale=1.0):
    r = np.random.default_rng(seed)
    return [[(r.standard_normal(s) * scale).astype(np.float32) for _, s in SPECS] for _ in range(STEPS)]


def _init(seed=2):
    r = np.random.default_rng(seed)
    return [r.standard_normal(s).astype(np.float32) for _, s in SPECS]


def _run_both(name, kw, grads):
    ours_vars = [lamina.Variable(w.copy(), name=n) for (n, _), w in zip(SPECS, _init())]
    ref_vars = []
    for (n, _), w in zip(SPECS, _init()):
        scope, leaf = n.split("/")
        with keras.name_scope(scope):
            ref_vars.append(keras.Variable(w.copy(), name=leaf))
    for v, (n, _) in zip(ours_vars, SPECS):
        v.path = n
    assert [v.path for v in ref_vars] == [n for n, _ in SPECS]
    ours, ref = getattr(optimizers, name)(**kw), getattr(keras.optimizers, name)(**kw)
    for gs in grads:
        ours.apply_gradients(zip([g.copy() for g in gs], ours_vars))
        ref.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in gs], ref_vars))
    return ours, ref, ours_vars, ref_vars


@pytest.fixture
def functional_torch_assign(monkeypatch):
    """Keras's torch Variable assigns in place (tensor.copy_), so ScheduleFreeAdamW's ``momentum.value``,
    read before ``assign_sub``, sees the new value there; on JAX and TensorFlow a read is a snapshot.
    Assigning a fresh tensor instead makes the torch backend compute what the other backends compute."""
    from keras.src.backend.torch import core

    def assign(self, value):
        with torch.no_grad():
            self._value = torch.nn.Parameter(torch.as_tensor(value, dtype=self._value.dtype).clone(),
                                             requires_grad=self._value.requires_grad)
    monkeypatch.setattr(core.Variable, "_direct_assign", assign)


def _compare(ours, ref, ov, rv, name, tol=1e-5):
    for (n, _), a, b in zip(SPECS, ov, rv):
        np.testing.assert_allclose(a.numpy(), keras.ops.convert_to_numpy(b), rtol=tol, atol=tol, err_msg=n)
    oc, rc = ours.get_config(), ref.get_config()
    assert set(oc) == set(rc)
    for k in oc:
        if k == "name":   # Keras numbers its instances (muon_3)
            continue
        assert oc[k] == pytest.approx(rc[k], rel=1e-6) if isinstance(rc[k], float) else oc[k] == rc[k], k
    again = optimizers.deserialize({"class_name": name, "config": oc})
    assert type(again) is type(ours) and again.get_config() == oc
    assert type(optimizers.get(name.lower())) is type(ours)


MUON_CASES = [
    {},
    {"learning_rate": 0.02, "exclude_layers": ["out"], "rms_rate": None, "nesterov": False},
    {"learning_rate": 0.01, "momentum": 0.9, "ns_steps": 3, "adam_lr_ratio": 0.5, "exclude_embeddings": False,
     "weight_decay": 0.1, "adam_weight_decay": None, "epsilon": 1e-5},
    {"learning_rate": 0.01, "muon_a": 2.0, "muon_b": -1.5, "muon_c": 0.5, "clipnorm": 1.0},
]


@pytest.mark.parametrize("kw", MUON_CASES, ids=range(len(MUON_CASES)))
def test_muon_matches_keras(kw):
    ours, ref, ov, rv = _run_both("Muon", kw, _grads())
    _compare(ours, ref, ov, rv, "Muon")
    # which weights took which step: velocity moves only for the AdamW weights
    adamw = [ours._should_use_adamw(v) for v in ov]
    assert adamw == [ref._should_use_adamw(v) for v in rv]
    assert any(adamw) and not all(adamw)


def test_muon_newton_schulz_orthogonalises():
    """With Keras's coefficients the iteration pushes the singular values into about [0.7, 1.2]."""
    opt = optimizers.Muon()
    g = np.random.default_rng(0).standard_normal((8, 20)).astype(np.float32)
    s = np.linalg.svd(opt.zeropower_via_newtonschulz5(g, 5), compute_uv=False)
    assert 0.6 < s.min() and s.max() < 1.25
    tall = opt.zeropower_via_newtonschulz5(g.T, 5)
    np.testing.assert_allclose(tall, opt.zeropower_via_newtonschulz5(g, 5).T, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        opt.zeropower_via_newtonschulz5(g[0], 5)


SF_CASES = [
    {},
    {"learning_rate": 0.01, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-6, "warmup_steps": 4},
    {"learning_rate": 0.05, "weight_decay": 0.01, "global_clipnorm": 2.0},
]


@pytest.mark.parametrize("kw", SF_CASES, ids=range(len(SF_CASES)))
def test_schedule_free_adamw_matches_keras(kw, functional_torch_assign):
    ours, ref, ov, rv = _run_both("ScheduleFreeAdamW", kw, _grads())
    _compare(ours, ref, ov, rv, "ScheduleFreeAdamW")
    # the z sequence ('momentum') too
    for a, b in zip(ours._slots["momentum"], ref._momentums):
        np.testing.assert_allclose(a.data, keras.ops.convert_to_numpy(b), rtol=1e-5, atol=1e-5)


def test_schedule_free_adamw_rule_in_float64():
    """The documented rule, written out in float64 NumPy, for two weights over several steps."""
    b1, b2, eps, lr, warm = 0.9, 0.999, 1e-8, 0.05, 3
    w0 = np.random.default_rng(5).standard_normal((2, 3))
    grads = np.random.default_rng(6).standard_normal((5, 2, 3))
    var = lamina.Variable(w0.copy(), dtype="float64")
    opt = optimizers.ScheduleFreeAdamW(learning_rate=lr, warmup_steps=warm)
    y, z, v = w0.copy(), w0.copy(), np.zeros_like(w0)
    for t, g in enumerate(grads, 1):
        opt.apply_gradients([(g, var)])
        a = lr * min(t / warm, 1.0)
        v = v + (g * g - v) * (1 - b2)
        z_new = z - a * g / (np.sqrt(v / (1 - b2 ** t)) + eps)
        x = (y - (1 - b1) * z) / b1
        y = (1 - b1) * z_new + b1 * ((1 - 1 / t) * x + z_new / t)
        z = z_new
        np.testing.assert_allclose(var.numpy(), y, rtol=1e-12)


def test_training_and_keras_file_round_trip(tmp_path):
    lamina.utils.set_random_seed(0)
    x = np.random.default_rng(0).standard_normal((32, 6)).astype(np.float32)
    y = x @ np.random.default_rng(1).standard_normal((6, 1)).astype(np.float32)
    for opt in (optimizers.Muon(learning_rate=0.02, exclude_layers=["out"]), optimizers.ScheduleFreeAdamW(0.01)):
        model = lamina.Sequential([lamina.Input((6,)), lamina.layers.Dense(8, activation="tanh"),
                                   lamina.layers.Dense(1, name="out")])
        model.compile(opt, "mse")
        first = model.evaluate(x, y, verbose=0)
        model.fit(x, y, epochs=15, batch_size=8, verbose=0)
        assert model.evaluate(x, y, verbose=0) < 0.5 * first
        model.save(tmp_path / "m.keras")
        back = lamina.models.load_model(tmp_path / "m.keras")
        assert type(back.optimizer) is type(opt) and back.optimizer.get_config() == opt.get_config()
        np.testing.assert_allclose(back.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)
        theirs = keras.models.load_model(tmp_path / "m.keras")
        assert type(theirs.optimizer).__name__ == type(opt).__name__
        np.testing.assert_allclose(np.asarray(theirs.predict(x, verbose=0)), model.predict(x, verbose=0),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["Muon", "ScheduleFreeAdamW"])
def test_optimizer_state_in_keras_files_both_ways(name, tmp_path, functional_torch_assign):
    """Keras trains, saves; lamina loads the optimizer state and its next step equals Keras's next step;
    and the same from lamina to Keras."""
    x = np.random.default_rng(0).standard_normal((16, 3)).astype(np.float32)
    y = np.random.default_rng(1).standard_normal((16, 2)).astype(np.float32)

    def build(K):
        m = K.Sequential([K.Input((3,)), K.layers.Dense(4, activation="tanh"), K.layers.Dense(2)])
        m.compile(getattr(K.optimizers, name)(learning_rate=0.01), "mse")
        return m
    keras.utils.set_random_seed(0)
    theirs = build(keras)
    for _ in range(3):
        theirs.train_on_batch(x, y)
    theirs.save(tmp_path / "k.keras")
    mine = lamina.models.load_model(tmp_path / "k.keras")
    assert mine.optimizer.iterations == 3
    theirs.train_on_batch(x, y)
    mine.train_on_batch(x, y)
    for a, b in zip(mine.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

    mine.train_on_batch(x, y)
    mine.save(tmp_path / "l.keras")
    again = keras.models.load_model(tmp_path / "l.keras")
    assert int(keras.ops.convert_to_numpy(again.optimizer.iterations)) == 5
    again.train_on_batch(x, y)
    mine.train_on_batch(x, y)
    for a, b in zip(mine.get_weights(), again.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["Muon", "ScheduleFreeAdamW"])
def test_steps_on_device_match_cpu(name, device_xp):
    def run(xp):
        ws = [lamina.Variable(lamina.backend.to_device(w, xp), name=n) for (n, _), w in zip(SPECS, _init())]
        for w, (n, _) in zip(ws, SPECS):
            w.path = n
        opt = getattr(optimizers, name)(learning_rate=0.01)
        for gs in _grads():
            opt.apply_gradients(zip([lamina.backend.to_device(g, xp) for g in gs], ws))
        for w in ws:
            assert lamina.backend.get_array_module(w.data) is xp
        return [lamina.backend.to_numpy(w.data) for w in ws]
    for a, b in zip(run(device_xp), run(np)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
