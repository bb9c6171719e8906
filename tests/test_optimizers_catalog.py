"""Lion, Lamb, Ftrl, Adafactor and LossScaleOptimizer against real Keras 3.15 (torch backend): the same
starting weights and gradients for several steps give the same weights (to 1e-6); configs equal Keras's."""
import os
import re

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")

import lamina  # noqa: E402
from lamina import optimizers  # noqa: E402

SHAPES = [(3, 4), (5,), (2, 3, 4)]
STEPS = 7


def _grads(seed=1, scale=1.0):
    r = np.random.default_rng(seed)
    return [[(r.standard_normal(s) * scale).astype(np.float32) for s in SHAPES] for _ in range(STEPS)]


def _init(seed=2):
    r = np.random.default_rng(seed)
    return [r.standard_normal(s).astype(np.float32) for s in SHAPES]


def _run_both(name, kw, grads):
    ours_vars = [lamina.Variable(w.copy(), name=f"w{i}") for i, w in enumerate(_init())]
    ref_vars = [keras.Variable(w.copy(), name=f"w{i}") for i, w in enumerate(_init())]
    ours, ref = getattr(optimizers, name)(**kw), getattr(keras.optimizers, name)(**kw)
    for gs in grads:
        ours.apply_gradients(zip([g.copy() for g in gs], ours_vars))
        ref.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in gs], ref_vars))
    return ours, ref, ours_vars, ref_vars


CASES = [
    ("Lion", {}), ("Lion", {"learning_rate": 0.01, "beta_1": 0.8, "beta_2": 0.95}),
    ("Lamb", {}), ("Lamb", {"learning_rate": 0.01, "beta_1": 0.8, "epsilon": 1e-5}),
    ("Ftrl", {"learning_rate": 0.1}),
    ("Ftrl", {"learning_rate": 0.05, "learning_rate_power": -0.7, "initial_accumulator_value": 0.3,
              "l1_regularization_strength": 0.01, "l2_regularization_strength": 0.02,
              "l2_shrinkage_regularization_strength": 0.01, "beta": 0.1}),
    ("Adafactor", {}), ("Adafactor", {"learning_rate": 0.05, "relative_step": False, "clip_threshold": 0.5}),
    ("Lion", {"weight_decay": 0.1, "clipnorm": 1.0}),
]


@pytest.mark.parametrize("name,kw", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_optimizer_matches_keras(name, kw):
    ours, ref, ov, rv = _run_both(name, kw, _grads())
    for a, b in zip(ov, rv):
        np.testing.assert_allclose(a.numpy(), keras.ops.convert_to_numpy(b), rtol=1e-6, atol=1e-6)
    oc, rc = ours.get_config(), ref.get_config()
    assert set(oc) == set(rc)
    for k in oc:
        if k == "name":
            continue
        assert oc[k] == pytest.approx(rc[k], rel=1e-6) if isinstance(rc[k], float) else oc[k] == rc[k], k
    again = optimizers.deserialize({"class_name": name, "config": oc})
    assert type(again) is type(ours) and again.get_config() == oc
    assert type(optimizers.get(name.lower())) is type(ours)


def test_loss_scale_optimizer_matches_keras_including_skipped_steps():
    grads = _grads(scale=8.0)
    grads[2][1][0] = np.inf  # a step with a non-finite gradient: skipped, scale halved
    kw = {"initial_scale": 8.0, "dynamic_growth_steps": 2}
    ov = [lamina.Variable(w.copy(), name=f"w{i}") for i, w in enumerate(_init())]
    rv = [keras.Variable(w.copy(), name=f"w{i}") for i, w in enumerate(_init())]
    ours = optimizers.LossScaleOptimizer(optimizers.Adam(0.01), **kw)
    ref = keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(0.01), **kw)
    for gs in grads:
        ours.apply_gradients(zip([g.copy() for g in gs], ov))
        ref.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in gs], rv))
        assert ours.dynamic_scale == pytest.approx(float(keras.ops.convert_to_numpy(ref.dynamic_scale)))
    for a, b in zip(ov, rv):
        np.testing.assert_allclose(a.numpy(), keras.ops.convert_to_numpy(b), rtol=1e-6, atol=1e-6)
    assert ours.iterations == int(keras.ops.convert_to_numpy(ref.iterations))
    assert float(ours.scale_loss(2.0)) == 2.0 * ours.dynamic_scale
    config = ours.get_config()
    assert config["initial_scale"] == 8.0 and config["dynamic_growth_steps"] == 2
    again = optimizers.deserialize({"class_name": "LossScaleOptimizer", "config": config})
    assert isinstance(again.inner_optimizer, optimizers.Adam) and again.dynamic_scale == 8.0


def test_new_optimizers_train_a_model():
    r = np.random.default_rng(0)
    x = r.normal(size=(64, 3)).astype(np.float32)
    y = x @ np.array([[1.0], [-2.0], [0.5]], np.float32)
    for opt in ("lion", "lamb", optimizers.Ftrl(0.5), "adafactor"):
        model = lamina.Sequential([lamina.layers.Input((3,)), lamina.layers.Dense(1)])
        model.compile(optimizer=opt, loss="mse")
        h = model.fit(x, y, epochs=5, batch_size=16, verbose=0)
        assert h.history["loss"][-1] < h.history["loss"][0], opt


def test_multi_optimizer_matches_keras():
    init = _init()
    ov = [lamina.Variable(w.copy(), name=f"w{i}") for i, w in enumerate(init)]
    rv = [keras.Variable(w.copy(), name=f"w{i}") for i, w in enumerate(init)]
    # paths differ between the two libraries: map each side's path of the first weight to Adam
    ours = optimizers.MultiOptimizer(optimizers.OptimizerMap(optimizers.SGD(0.1, momentum=0.5),
                                                             {ov[0].path: optimizers.Adam(0.01)}))
    ref = keras.optimizers.MultiOptimizer(keras.optimizers.OptimizerMap(keras.optimizers.SGD(0.1, momentum=0.5),
                                                                        {rv[0].path: keras.optimizers.Adam(0.01)}))
    for gs in _grads():
        ours.apply_gradients(zip([g.copy() for g in gs], ov))
        ref.apply_gradients(zip([keras.ops.convert_to_tensor(g) for g in gs], rv))
    for a, b in zip(ov, rv):
        np.testing.assert_allclose(a.numpy(), keras.ops.convert_to_numpy(b), rtol=1e-6, atol=1e-6)
    assert ours.iterations == STEPS and len(ours.optimizers) == 2
    with pytest.raises(AttributeError):
        ours.learning_rate
    again = optimizers.MultiOptimizer.from_config(ours.get_config())
    assert isinstance(again._optimizer_map.default_optimizer, optimizers.SGD)
    with pytest.raises(ValueError, match="MultiOptimizer"):
        optimizers.OptimizerMap(optimizers.SGD(), {"x": ours})


@pytest.mark.parametrize("name,kw", [
    ("Adam", {}), ("Adam", {"amsgrad": True}), ("AdamW", {}), ("SGD", {"momentum": 0.9}),
    ("RMSprop", {"momentum": 0.5, "centered": True}), ("Adagrad", {}), ("Adadelta", {}), ("Adamax", {}),
    ("Nadam", {}), ("Lion", {}), ("Lamb", {}), ("Ftrl", {}), ("Adam", {"use_ema": True}),
])
def test_variables_are_in_keras_order(name, kw):
    # Keras 3.15 lists iteration, learning_rate, then each group of slots interleaved per weight (w0's momentum,
    # w0's velocity, w1's momentum, ...): the same values in the same order as the values Keras holds
    ours, ref, _, _ = _run_both(name, kw, _grads()[:3])
    mine = [np.asarray(v.numpy(), np.float64) for v in ours.variables]
    theirs = [np.asarray(keras.ops.convert_to_numpy(v), np.float64) for v in ref.variables]
    if name == "Nadam":   # (Keras's running product of the momentum schedule, last: lamina keeps it apart)
        theirs = theirs[:-1]
    assert [a.shape for a in mine] == [b.shape for b in theirs]
    for a, b in zip(mine, theirs):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD", "RMSprop", "Adagrad", "Adadelta", "Adamax", "Nadam", "Lion",
                                  "Lamb", "Ftrl"])
def test_names_and_variable_paths_are_keras(name):
    """Keras 3.15 names an optimizer after its class (auto_name: 'sgd', 'rm_sprop', 'adam_w', then 'sgd_1' for a
    second one) and makes its variables inside that name's scope ('sgd/iteration', 'sgd/w0_momentum'); lamina
    had fixed names ('SGD', 'rmsprop', 'adamw', the same for every instance) and unprefixed paths."""
    def look(lib):
        first, second = getattr(lib.optimizers, name)(), getattr(lib.optimizers, name)()
        ws = [lib.Variable(np.ones(s, np.float32), name=f"w{i}") for i, s in enumerate(SHAPES)]
        first.build(ws)
        named = getattr(lib.optimizers, name)(name="mine")
        named.build(ws)
        own = [v for v in first.variables if "/" in v.path]   # (Keras's Nadam: its momentum product, unscoped)
        return (re.sub(r"_\d+$", "", first.name), first.name != second.name,
                {v.path.split("/")[0] for v in own} == {first.name}, [v.path.split("/", 1)[1] for v in own],
                {v.path.split("/")[0] for v in named.variables if "/" in v.path})
    ours, theirs = look(lamina), look(keras)
    assert ours == theirs and ours[1] and ours[2] and ours[4] == {"mine"}
