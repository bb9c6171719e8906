"""keras.StatelessScope (with Layer.stateless_call and Optimizer.stateless_apply built on it), keras.SymbolicScope,
keras.Function and keras.dtype_policies.DTypePolicyMap: against real Keras 3.15 (torch backend) where they give
numbers, and lamina's own behaviour (variables left as they were, gradients, errors) otherwise."""
import json
import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")

import lamina  # noqa: E402
from lamina import layers, ops  # noqa: E402
from lamina.dtype_policies import DTypePolicy, DTypePolicyMap  # noqa: E402
from lamina.scopes import get_stateless_scope, in_stateless_scope, in_symbolic_scope  # noqa: E402

from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
keras = lazy_module("keras")
torch = pytest.importorskip("torch")

R = np.random.default_rng(5)


def _np(t):
    return keras.ops.convert_to_numpy(t)


def _torch(arrays):
    return [keras.ops.convert_to_tensor(np.array(a)) for a in arrays]


# ----------------------------------------------------------------------------------------------- StatelessScope
@pytest.mark.parametrize("lib", ["lamina", "keras"])
def test_stateless_scope_reads_the_mapping_and_records_assignments(lib):
    k = lamina if lib == "lamina" else keras
    read = (lambda t: np.asarray(t.numpy())) if lib == "lamina" else _np
    v1, v2, out = (k.Variable(np.zeros(2, "float32")) for _ in range(3))
    with k.StatelessScope(state_mapping=[(v1, np.ones(2)), (v2, np.full(2, 3.0))]) as scope:
        out.assign(v1 + v2)
        out.assign_add(np.ones(2))
        inside = read(out + 0.0)
    np.testing.assert_array_equal(inside, [5.0, 5.0])
    for v in (v1, v2, out):   # every variable holds what it held before
        np.testing.assert_array_equal(read(v + 0.0), [0.0, 0.0])
    np.testing.assert_array_equal(read(scope.get_current_value(out)), [5.0, 5.0])
    np.testing.assert_array_equal(read(scope.get_current_value(v2)), [3.0, 3.0])
    assert scope.get_current_value(k.Variable(np.zeros(2))) is None


def test_stateless_scope_refuses_what_keras_refuses():
    for k in (lamina, keras):
        v = k.Variable(np.zeros(2, "float32"))
        with pytest.raises(ValueError, match="all keys in argument `mapping` must be Variable"):
            k.StatelessScope(state_mapping=[("not a variable", np.ones(2))])
        with pytest.raises(ValueError, match="must be tensors with a shape that matches"):
            k.StatelessScope(state_mapping=[(v, np.ones(3))])


def test_inside_every_read_sees_the_value_and_the_variable_comes_back_whole():
    v = lamina.Variable(np.arange(3.0))
    w = lamina.Tensor(np.ones(3, "float32"), requires_grad=True)
    y = (v * w).sum()            # a graph recorded before the scope: it still goes back after it
    own = v.data
    assert not in_stateless_scope() and get_stateless_scope() is None
    with lamina.StatelessScope([(v, [7.0, 8.0, 9.0])]) as scope:
        assert in_stateless_scope() and get_stateless_scope() is scope
        np.testing.assert_array_equal(v.numpy(), [7, 8, 9])
        np.testing.assert_array_equal(np.asarray(v), [7, 8, 9])
        np.testing.assert_array_equal(v.value.numpy(), [7, 8, 9])
        np.testing.assert_array_equal(ops.matmul(v, np.eye(3, dtype="float32")).numpy(), [7, 8, 9])
        v.assign_sub(np.ones(3))
        np.testing.assert_array_equal(v.numpy(), [6, 7, 8])
        with pytest.raises(ValueError, match="shape"):
            v.assign(np.ones(4))
    assert v.data is own and not in_stateless_scope()
    np.testing.assert_array_equal(v.numpy(), [0, 1, 2])
    y.backward()
    np.testing.assert_array_equal(w.grad, [0, 1, 2])
    np.testing.assert_array_equal(scope.get_current_value(v).numpy(), [6, 7, 8])


def test_the_gradient_reaches_the_values_given():
    dense = layers.Dense(3)
    x = R.normal(size=(4, 5)).astype("float32")
    dense(x)
    values = [lamina.Tensor(R.normal(size=v.shape).astype("float32"), requires_grad=True) for v in dense.weights]
    with lamina.StatelessScope(list(zip(dense.weights, values))):
        loss = (dense(x) ** 2).sum()
    loss.backward()
    assert all(v.grad is None for v in dense.weights)
    for var, val in zip(dense.weights, values):   # the same gradient as a stateful call with those weights
        var.assign(val.data)
    (dense(x) ** 2).sum().backward()
    for var, val in zip(dense.weights, values):
        np.testing.assert_allclose(val.grad, var.grad, rtol=1e-6)


def test_in_place_updates_variables_made_inside_and_nested_scopes():
    v = lamina.Variable(np.ones(2))
    opt = lamina.optimizers.SGD(0.5)
    opt.build([v])
    with lamina.StatelessScope([(v, np.full(2, 4.0))]) as outer:
        opt.apply([np.ones(2)])          # an optimizer writes the variable's array in place
        np.testing.assert_array_equal(outer.get_current_value(v).numpy(), [3.5, 3.5])
        made = lamina.Variable(np.zeros(2))
        made.assign(np.full(2, 9.0))     # new state: assigned directly
        with lamina.StatelessScope([(v, np.zeros(2))]) as inner:
            v.assign_add(np.ones(2))
            np.testing.assert_array_equal(v.numpy(), [1, 1])
        np.testing.assert_array_equal(inner.get_current_value(v).numpy(), [1, 1])
        np.testing.assert_array_equal(v.numpy(), [3.5, 3.5])   # the outer scope's value again
    np.testing.assert_array_equal(v.numpy(), [1, 1])
    np.testing.assert_array_equal(outer.get_current_value(v).numpy(), [3.5, 3.5])
    np.testing.assert_array_equal(made.numpy(), [9, 9])


def _loss_layer(k):
    class AddsLoss(k.layers.Layer):
        def call(self, x):
            self.add_loss(k.ops.sum(x))
            return x
    return AddsLoss()


@pytest.mark.parametrize("collect", [True, False])
def test_collect_losses_as_keras(collect):
    seen = {}
    for name, k in (("lamina", lamina), ("keras", keras)):
        layer = _loss_layer(k)
        with k.StatelessScope(collect_losses=collect) as scope:
            layer(np.ones((2, 3), "float32"))
            inside = [float(k.ops.convert_to_numpy(x)) for x in layer.losses]
        seen[name] = ([float(k.ops.convert_to_numpy(x)) for x in scope.losses], inside, len(layer.losses))
    assert seen["lamina"] == seen["keras"] == (([6.0], [6.0], 0) if collect else ([], [], 0))


# ----------------------------------------------------------------------------------------------- stateless_call
def _bn_model(k):
    return k.Sequential([k.Input((5,)), k.layers.Dense(4, kernel_regularizer="l2"), k.layers.BatchNormalization(),
                         k.layers.Dense(3, activity_regularizer="l2")])


def test_stateless_call_matches_keras_and_changes_nothing():
    km, lm = _bn_model(keras), _bn_model(lamina)
    lm.set_weights([np.asarray(w) for w in km.get_weights()])
    x = R.normal(size=(8, 5)).astype("float32")
    tv = [R.normal(size=v.shape).astype("float32") for v in lm.trainable_variables]
    ntv = [R.uniform(0.5, 1.5, size=v.shape).astype("float32") for v in lm.non_trainable_variables]
    before = lm.get_weights()
    ky, kn, kl = km.stateless_call(tv, ntv, x, training=True, return_losses=True)
    ly, ln, ll = lm.stateless_call(tv, ntv, x, training=True, return_losses=True)
    for a, b in zip(before, lm.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(ly.numpy(), _np(ky), rtol=1e-5, atol=1e-5)
    for a, b, given in zip(ln, kn, ntv):   # the moving statistics, updated
        np.testing.assert_allclose(a.numpy(), _np(b), rtol=1e-6, atol=1e-7)
        assert not np.allclose(a.numpy(), given)
    # (Keras lists the added losses before the weights' penalties; lamina layer by layer)
    np.testing.assert_allclose(sorted(float(v) for v in ll), sorted(float(_np(v)) for v in kl), rtol=1e-5)
    # the same as a call with those weights assigned
    for v, a in zip(lm.trainable_variables + lm.non_trainable_variables, tv + ntv):
        v.assign(a)
    np.testing.assert_array_equal(lm(x, training=True).numpy(), ly.numpy())
    for v, a in zip(lm.non_trainable_variables, ln):
        np.testing.assert_array_equal(v.numpy(), a.numpy())
    _, same = lm.stateless_call(tv, ntv, x)   # inference: the values given come back
    for a, given in zip(same, ntv):
        np.testing.assert_array_equal(a.numpy(), given)


def test_stateless_call_refuses_as_keras():
    for k in (lamina, keras):
        dense = k.layers.Dense(2)
        with pytest.raises(ValueError, match="must be built"):
            dense.stateless_call([], [], np.ones((1, 3), "float32"))
        dense(np.ones((1, 3), "float32"))
        with pytest.raises(ValueError, match="`trainable_variables` must be a list of tensors"):
            dense.stateless_call([np.ones((3, 2), "float32")], [], np.ones((1, 3), "float32"))
        with pytest.raises(ValueError, match="`non_trainable_variables` must be a list of tensors"):
            dense.stateless_call([w.numpy() if k is lamina else _np(w.value) for w in dense.trainable_variables],
                                 [np.ones(2)], np.ones((1, 3), "float32"))


# ----------------------------------------------------------------------------------------------- stateless_apply
def test_stateless_apply_matches_keras_over_two_steps():
    shapes = [(5, 4), (4,), (4, 3)]
    kvars = [keras.Variable(R.normal(size=s).astype("float32")) for s in shapes]
    lvars = [lamina.Variable(_np(v.value)) for v in kvars]
    ko, lo = keras.optimizers.Adam(0.01), lamina.optimizers.Adam(0.01)
    ko.build(kvars)
    lo.build(lvars)
    tv = [R.normal(size=s).astype("float32") for s in shapes]
    ov = [_np(v.value) for v in ko.variables]
    grads = [[R.normal(size=s).astype("float32") for s in shapes] for _ in range(2)]
    kt, kov = ko.stateless_apply(_torch(ov), _torch(grads[0]), _torch(tv))
    kt, kov = ko.stateless_apply(kov, _torch(grads[1]), kt)
    lt, lov = lo.stateless_apply(ov, grads[0], tv)
    lt, lov = lo.stateless_apply(lov, grads[1], lt)
    for a, b in zip(lt, kt):
        np.testing.assert_allclose(a.numpy(), _np(b), rtol=1e-5, atol=1e-6)
    assert len(lov) == len(kov) == 2 + 2 * len(shapes)
    for a, b in zip(lov, kov):   # the step counter (2), the learning rate, then Keras's order of the slots
        np.testing.assert_allclose(np.asarray(a.numpy(), "float64"), _np(b), rtol=1e-5, atol=1e-7)
    assert lo.iterations == 0 and all(np.all(s.numpy() == 0) for s in lo.variables[2:])
    for v, k in zip(lvars, kvars):
        np.testing.assert_array_equal(v.numpy(), _np(k.value))


@pytest.mark.parametrize("make", [lambda: lamina.optimizers.Nadam(0.02),
                                  lambda: lamina.optimizers.SGD(0.1, momentum=0.9, nesterov=True)])
def test_stateless_apply_equals_apply(make):
    variables = [lamina.Variable(R.normal(size=s)) for s in [(3, 2), (2,)]]
    grads = [[R.normal(size=v.shape).astype("float32") for v in variables] for _ in range(3)]
    stateless, stateful = make(), make()
    stateless.build(variables)
    values = [v.numpy().copy() for v in variables]
    state = [v.numpy() for v in stateless.variables]
    for g in grads:
        values, state = stateless.stateless_apply(state, g, values)
    stateful.apply(grads[0], variables)
    for g in grads[1:]:
        stateful.apply(g)
    for v, a in zip(variables, values):
        np.testing.assert_allclose(v.numpy(), a.numpy(), rtol=1e-6, atol=1e-7)
    assert int(state[0].numpy()) == stateful.iterations == 3 and stateless.iterations == 0


def test_stateless_apply_refuses_as_keras():
    for k in (lamina, keras):
        var = k.Variable(np.ones(2, "float32"))
        opt = k.optimizers.SGD(0.1)
        with pytest.raises(ValueError, match="must be built"):
            opt.stateless_apply([], [np.ones(2)], [np.ones(2)])
        opt.build([var])
        with pytest.raises(ValueError, match="`optimizer_variables` must be a list of tensors"):
            opt.stateless_apply([np.ones(2)], [np.ones(2)], [np.ones(2)])
        with pytest.raises(ValueError, match="corresponding 1:1 to the trainable variables"):
            opt.stateless_apply([np.asarray(0), np.asarray(0.1)], [np.ones(2)], [np.ones(2), np.ones(2)])


def test_wrapping_optimizers_say_they_have_no_stateless_apply():
    var = lamina.Variable(np.ones(2))
    for opt in (lamina.optimizers.LossScaleOptimizer(lamina.optimizers.SGD(0.1)),
                lamina.optimizers.MultiOptimizer(lamina.optimizers.OptimizerMap(lamina.optimizers.SGD(0.1)))):
        opt.build([var])
        with pytest.raises(NotImplementedError, match="outside `optimizer.variables`"):
            opt.stateless_apply([v.numpy() for v in opt.variables], [np.ones(2)], [np.ones(2)])
    np.testing.assert_array_equal(var.numpy(), [1, 1])


# ----------------------------------------------------------------------------------------------- SymbolicScope
def test_symbolic_scope_flag():
    assert not in_symbolic_scope()
    with lamina.SymbolicScope() as scope:
        assert in_symbolic_scope()
        with lamina.SymbolicScope():
            assert in_symbolic_scope()
        assert in_symbolic_scope() and scope is not None
    assert not in_symbolic_scope()


def _probe_layer(k, flags):
    from keras.src.backend.common.symbolic_scope import in_symbolic_scope as keras_symbolic
    symbolic = in_symbolic_scope if k is lamina else keras_symbolic

    class Probe(k.layers.Layer):   # no compute_output_shape: its output shape comes from running call()
        def build(self, shape):
            self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False)

        def call(self, x):
            flags.append(symbolic())
            self.calls.assign_add(1.0)
            return x * 2.0
    return Probe()


def test_a_layer_traced_for_its_output_shape_runs_in_the_symbolic_stage_as_in_keras():
    result = {}
    for name, k in (("lamina", lamina), ("keras", keras)):
        flags = []
        probe = _probe_layer(k, flags)
        model = k.Model(inp := k.Input((3,)), probe(inp))
        built = float(k.ops.convert_to_numpy(probe.calls))   # the symbolic stage assigned nothing
        model(np.ones((2, 3), "float32"))
        result[name] = (any(flags[:-1]), flags[-1], built, float(k.ops.convert_to_numpy(probe.calls)))
    assert result["lamina"] == result["keras"] == (True, False, 0.0, 1.0)


# ----------------------------------------------------------------------------------------------- Function
def _function(k, kernel):
    a, b = k.KerasTensor((None, 3)), k.KerasTensor((None, 3))
    h = k.layers.Dense(2, name="proj")(k.ops.add(a, b))
    outputs = (k.ops.sigmoid(h), {"z": k.ops.multiply(a, b), "a": a})
    fn = k.Function([a, b], outputs)
    fn.operations[1].set_weights([kernel, np.zeros(2, "float32")])
    return fn


def test_function_matches_keras():
    kernel = R.normal(size=(3, 2)).astype("float32")
    x1, x2 = R.normal(size=(4, 3)).astype("float32"), R.normal(size=(4, 3)).astype("float32")
    fns = {"lamina": _function(lamina, kernel), "keras": _function(keras, kernel)}
    outs = {name: fn([x1, x2]) for name, fn in fns.items()}
    for name, out in outs.items():
        assert isinstance(out, tuple) and list(out[1]) == ["a", "z"], name   # tuple kept, dict keys sorted
    np.testing.assert_allclose(outs["lamina"][0].numpy(), _np(outs["keras"][0]), rtol=1e-6)
    np.testing.assert_allclose(outs["lamina"][1]["z"].numpy(), _np(outs["keras"][1]["z"]), rtol=1e-6)
    assert outs["lamina"][1]["a"] is x1
    lf, kf = fns["lamina"], fns["keras"]
    assert [type(op).__name__ for op in lf.operations] == ["AddOperation", "Dense", "SigmoidOperation",
                                                           "MultiplyOperation"]
    assert [type(op).__name__ for op in kf.operations] == ["Add", "Dense", "Sigmoid", "Multiply"]
    assert len(lf.inputs) == len(kf.inputs) == 2 and len(lf.outputs) == len(kf.outputs) == 3
    spec = lf.compute_output_spec([lamina.KerasTensor((7, 3)), lamina.KerasTensor((7, 3))])
    kspec = kf.compute_output_spec([keras.KerasTensor((7, 3)), keras.KerasTensor((7, 3))])
    assert spec[0].shape == kspec[0].shape == (7, 2) and spec[1]["z"].shape == kspec[1]["z"].shape == (7, 3)
    assert lf.compute_output_shape([(6, 3), (6, 3)]) == kf.compute_output_shape([(6, 3), (6, 3)]) == \
        ((6, 2), {"a": (6, 3), "z": (6, 3)})
    assert lf.name.startswith("function")


def test_function_refuses_what_keras_refuses():
    for k in (lamina, keras):
        a, b = k.KerasTensor((None, 3)), k.KerasTensor((None, 3))
        fn = k.Function([a, b], k.ops.add(a, b))
        with pytest.raises(ValueError, match="invalid input structure"):
            fn((np.ones((1, 3)), np.ones((1, 3))))
        with pytest.raises(ValueError, match="incompatible inputs"):
            fn([np.ones((1, 4)), np.ones((1, 3))])
        with pytest.raises(ValueError, match="incompatible inputs"):
            fn([np.ones((3,)), np.ones((1, 3))])
        with pytest.raises(ValueError, match="`inputs` argument cannot be empty"):
            k.Function([], a)


def test_function_from_an_inner_tensor_and_as_a_node_of_a_model():
    x = lamina.Input((4,), name="x")
    h = layers.Dense(3, name="first")(x)
    y = layers.Dense(2, name="second")(h)
    tail = lamina.Function(h, y)
    assert [op.name for op in tail.operations] == ["second"]    # the layer making h is outside it, as in Keras
    whole = lamina.Function({"x": x}, y)
    assert [op.name for op in whole.operations] == ["x", "first", "second"]
    data = R.normal(size=(5, 4)).astype("float32")
    model = lamina.Model(x, y)
    assert isinstance(model, lamina.Function) and [op.name for op in model.operations] == ["x", "first", "second"]
    np.testing.assert_array_equal(whole({"x": data}).numpy(), model(data).numpy())
    np.testing.assert_array_equal(tail(model.get_layer("first")(data)).numpy(), model(data).numpy())
    inp = lamina.Input((4,))
    outer = lamina.Model(inp, layers.Activation("tanh")(whole({"x": inp})))   # a Function called symbolically
    np.testing.assert_allclose(outer(data).numpy(), np.tanh(model(data).numpy()), rtol=1e-6)


# ----------------------------------------------------------------------------------------------- DTypePolicyMap
def test_policy_map_lookups_and_errors_as_keras():
    for dp in (lamina.dtype_policies, keras.dtype_policies):
        m = dp.DTypePolicyMap(default_policy="float32")
        m["encoder/layer_0/dense"] = "float16"
        m["encoder/.*"] = dp.DTypePolicy("float64")
        m["decoder"] = "float16"
        got = [m[p].name for p in ("encoder/layer_0/dense", "encoder/attention/query", "decoder",
                                   "decoder/attention")]
        assert got == ["float16", "float64", "float16", "float32"]
        assert (m.name, m.compute_dtype, m.variable_dtype, len(m), "decoder" in m, "decoder/x" in m) == \
            ("map_float32", "float32", "float32", 3, True, False)
        assert isinstance(m, dp.DTypePolicy)
        m["encoder/attention/.*"] = "float16"
        with pytest.raises(ValueError, match="matches multiple dtype policy"):
            m["encoder/attention/query"]
        del m["encoder/attention/.*"]
        with pytest.raises(KeyError):
            del m["nothing"]
        with pytest.raises(ValueError, match="already exist in the DTypePolicyMap"):
            m["decoder"] = "float32"
        with pytest.raises(ValueError, match="Cannot interpret the assigned value"):
            m["other"] = 5
        with pytest.raises(ValueError, match="cannot be a `DTypePolicyMap`"):
            dp.DTypePolicyMap(default_policy=m)
        with pytest.raises(TypeError, match="must be a dict"):
            dp.DTypePolicyMap(policy_map=[("a", "float16")])
    assert DTypePolicyMap().default_policy.name == lamina.config.dtype_policy().name


def test_policy_map_serializes_as_keras():
    def make(dp):
        return dp.DTypePolicyMap(default_policy="float32", policy_map={"block/dense": dp.DTypePolicy("float16")})
    mine, theirs = lamina.dtype_policies.serialize(make(lamina.dtype_policies)), \
        keras.dtype_policies.serialize(make(keras.dtype_policies))
    assert json.loads(json.dumps(mine)) == json.loads(json.dumps(theirs))
    for config in (mine, theirs):
        back = lamina.dtype_policies.deserialize(config)
        assert isinstance(back, DTypePolicyMap) and back == make(lamina.dtype_policies)
        assert back["block/dense"] == DTypePolicy("float16")
        assert lamina.dtype_policies.get(config) == back
    mixed = DTypePolicyMap(DTypePolicy("mixed_float16"))
    assert lamina.dtype_policies.deserialize(lamina.dtype_policies.serialize(mixed)).default_policy.name == \
        "mixed_float16"
    assert json.loads(json.dumps(lamina.dtype_policies.serialize(mixed))) == \
        json.loads(json.dumps(keras.dtype_policies.serialize(keras.dtype_policies.DTypePolicyMap(
            keras.dtype_policies.DTypePolicy("mixed_float16")))))


def _block(k, policy_map, kernels):
    class Block(k.layers.Layer):   # a block that hands its policy on, as Keras's own composite layers do
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.first = k.layers.Dense(4, name="dense", dtype=self.dtype_policy)
            self.second = k.layers.Dense(3, name="other", dtype=self.dtype_policy)

        def call(self, x):
            return self.second(self.first(x))
    block = Block(name="block", dtype=policy_map)
    block(np.ones((1, 5), "float32"))
    block.first.set_weights(kernels[:2])
    block.second.set_weights(kernels[2:])
    return block


def test_sublayers_take_the_policy_of_their_path_as_in_keras():
    kernels = [R.normal(size=s).astype("float32") for s in [(5, 4), (4,), (4, 3), (3,)]]
    x = R.normal(size=(2, 5)).astype("float32")
    blocks = {}
    for name, k in (("lamina", lamina), ("keras", keras)):
        dp = k.dtype_policies
        blocks[name] = _block(k, dp.DTypePolicyMap("float32", {"block/dense": dp.DTypePolicy("float16")}), kernels)
    dtypes = {name: [(l.path, l.compute_dtype, l.variable_dtype, str(l.kernel.dtype).replace("torch.", ""))
                     for l in (b.first, b.second)] for name, b in blocks.items()}
    assert dtypes["lamina"] == dtypes["keras"] == [("block/dense", "float16", "float16", "float16"),
                                                   ("block/other", "float32", "float32", "float32")]
    np.testing.assert_allclose(blocks["lamina"](x).numpy(), _np(blocks["keras"](x)), rtol=1e-2, atol=1e-2)
    for b in blocks.values():   # set on a built layer: the policy of its path, in the map
        b.second.dtype_policy = "float16"
    assert blocks["lamina"].second.compute_dtype == blocks["keras"].second.compute_dtype == "float16"
    assert blocks["lamina"].dtype_policy["block/other"].name == "float16"
    assert isinstance(blocks["lamina"].first.dtype_policy, DTypePolicyMap)


def test_a_layer_with_a_policy_map_round_trips_its_config_and_files(tmp_path):
    def make(k):
        dp = k.dtype_policies
        policy = dp.DTypePolicyMap("float32", {"dense": dp.DTypePolicy("float16")})
        x = k.Input((3,))
        return k.Model(x, k.layers.Dense(2, name="other", dtype=policy)(k.layers.Dense(2, name="dense",
                                                                                     dtype=policy)(x)))
    mine, theirs = make(lamina), make(keras)
    assert json.loads(json.dumps(mine.layers[1].get_config()["dtype"])) == \
        json.loads(json.dumps(theirs.layers[1].get_config()["dtype"]))
    again = layers.Dense.from_config(mine.layers[1].get_config())
    assert isinstance(again.dtype_policy, DTypePolicyMap) and again.dtype_policy["dense"].name == "float16"
    assert [l.compute_dtype for l in mine.layers[1:]] == ["float16", "float32"]
    mine.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert [(type(l.dtype_policy).__name__, l.compute_dtype) for l in loaded.layers[1:]] == \
        [("DTypePolicyMap", "float16"), ("DTypePolicyMap", "float32")]
    x = R.normal(size=(2, 3)).astype("float32")
    np.testing.assert_allclose(_np(loaded(x)), mine(x).numpy(), rtol=1e-2, atol=1e-2)
