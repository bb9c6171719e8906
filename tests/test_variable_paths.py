"""Weight paths as Keras 3.15 makes them (keras.name_scope, and the scope each layer opens around its build, call
and add_weight): ``model/dense/kernel`` for a subclassed model's layer, ``sequential/dense/kernel``,
``bidirectional/forward_lstm/lstm_cell/kernel``. Paths are what ``OptimizerMap`` patterns and Keras code that
indexes weights by path match against."""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
real = lazy_module("keras", skip=False)
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import lamina as keras  # noqa: E402


def _x(*shape):
    return np.ones(shape, "float32")


def _subclassed(k):
    class M(k.Model):
        def __init__(self):
            super().__init__(name="m")
            self.d = k.layers.Dense(2, name="dd")
            self.e = k.layers.Dense(2, name="ee")

        def call(self, x):
            return self.e(self.d(x))
    m = M()
    m(_x(1, 3))
    return m


def _functional(k):
    inp = k.Input((3,))
    return k.Model(inp, k.layers.Dense(2, name="b")(inp), name="fun")


def _nested(k):
    inner = k.Sequential([k.Input((3,)), k.layers.Dense(2, name="c")], name="inner")
    inp = k.Input((3,))
    return k.Model(inp, inner(inp), name="outer")


def _built(layer, *shapes):
    layer(*[_x(*s) for s in shapes])
    return layer


def _scoped(k):
    with k.name_scope("enc"):
        return _built(k.layers.Dense(2, name="d1"), (1, 3))


CASES = {
    "subclassed": _subclassed,
    "sequential": lambda k: k.Sequential([k.Input((3,)), k.layers.Dense(2, name="a")], name="seq"),
    "functional": _functional,
    "nested": _nested,
    "bidirectional": lambda k: _built(k.layers.Bidirectional(k.layers.LSTM(2, name="l"), name="bi"), (1, 2, 3)),
    "time_distributed": lambda k: _built(k.layers.TimeDistributed(k.layers.Dense(2, name="t"), name="td"), (1, 2, 3)),
    "gru": lambda k: _built(k.layers.GRU(2), (1, 2, 3)),
    "conv_lstm": lambda k: _built(k.layers.ConvLSTM2D(2, 3, name="cl"), (1, 2, 5, 5, 1)),
    "attention": lambda k: _built(k.layers.MultiHeadAttention(2, 2, name="mha"), (1, 2, 3), (1, 2, 3)),
    "batch_norm": lambda k: _built(k.layers.BatchNormalization(name="bn"), (2, 3)),
    "name_scope": _scoped,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_weight_paths_equal_keras(case):
    real.backend.clear_session()
    keras.backend.clear_session()
    assert [w.path for w in CASES[case](keras).weights] == [w.path for w in CASES[case](real).weights]


def test_name_scope_nesting_override_and_errors_as_keras():
    for k in (keras, real):
        with k.name_scope("a"):
            with k.name_scope("b", override_parent="x/y"):
                v = k.Variable(1.0, name="v")
            with k.name_scope("a"):      # no caller: a name repeated by hand is kept
                w = k.Variable(1.0, name="w")
        assert (v.path, w.path) == ("x/y/b/v", "a/a/w"), k
        assert k.Variable(1.0, name="u").path == "u"
        with pytest.raises(ValueError, match="cannot contain character `/`"):
            k.name_scope("a/b")


def test_optimizer_map_patterns_see_keras_paths():
    """An OptimizerMap written against Keras's paths (the Sequential's name first) routes the same weights."""
    def routed(k):
        model = k.Sequential([k.Input((3,)), k.layers.Dense(4, name="body"), k.layers.Dense(1, name="head")],
                             name="net")
        slow, fast = k.optimizers.SGD(0.01), k.optimizers.SGD(0.1)
        routes = k.optimizers.OptimizerMap(slow, {"net/head/.*": fast})
        return [(w.path, "fast" if routes[w.path] is fast else "slow") for w in model.weights]
    assert routed(keras) == routed(real) == [("net/body/kernel", "slow"), ("net/body/bias", "slow"),
                                             ("net/head/kernel", "fast"), ("net/head/bias", "fast")]


def test_layer_paths_as_keras():
    """``layer.path``: None until its build ran, then the scopes it was built in and its name."""
    def paths(k):
        d = k.layers.Dense(2)
        before = d.path
        d(_x(1, 3))
        seq = k.Sequential([k.Input((3,)), k.layers.Dense(2, name="a")], name="seq")
        fun = _functional(k)
        sub = _subclassed(k)
        return (before, d.path, [layer.path for layer in seq.layers], seq.path, [layer.path for layer in fun.layers],
                fun.path, sub.d.path)
    real.backend.clear_session()
    keras.backend.clear_session()
    assert paths(keras) == paths(real)
