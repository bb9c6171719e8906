"""The Layer base: build once, config capture, weight order and copies, symbolic calls, training context."""
import numpy as np
import pytest

import lamina
from lamina import layers, ops


def test_weights_in_keras_order_and_get_weights_copies():
    bn = layers.BatchNormalization()
    bn(np.ones((2, 3), np.float32))
    assert [w.name for w in bn.weights] == ["gamma", "beta", "moving_mean", "moving_variance"]
    d = layers.Dense(2)
    d(np.ones((1, 3), np.float32))
    w = d.get_weights()
    d.kernel.assign(np.zeros((3, 2)))
    assert np.abs(w[0]).sum() > 0  # the copy did not follow the update


def test_custom_layer_config_captured_from_init():
    class Scale(layers.Layer):
        def __init__(self, factor, offset=1.0, **kwargs):
            super().__init__(**kwargs)
            self.factor, self.offset = factor, offset

        def call(self, x):
            return x * self.factor + self.offset

    s = Scale(3.0, name="s")
    cfg = s.get_config()
    assert cfg["factor"] == 3.0 and cfg["offset"] == 1.0 and cfg["name"] == "s"
    s2 = Scale.from_config(cfg)
    np.testing.assert_allclose(s2(np.ones((1, 2))).numpy(), [[4.0, 4.0]])


def test_symbolic_call_with_several_outputs():
    x = layers.Input((4,))
    a, b = layers.Lambda(lambda t: [t * 2, t[:, :2]])(x)
    assert a.shape == (None, 4) and b.shape == (None, 2)


def test_training_flag_is_inherited_by_inner_calls():
    seen = []

    class Probe(layers.Layer):
        def call(self, x, training=None):
            seen.append(training)
            return x

    class Outer(layers.Layer):
        def __init__(self, **kw):
            super().__init__(**kw)
            self.inner = Probe()

        def call(self, x):
            return self.inner(x)

    o = Outer()
    o(np.ones((1, 2)), training=True)
    o(np.ones((1, 2)))
    assert seen == [True, False]
    assert o.weights == [] and o._layers and o._layers[0] is o.inner


def test_a_failing_call_leaves_no_scope_training_flag_or_call_depth_behind():
    """Layer.__call__ sets its name scope, the training flag, the outer-call depth and the autocast dtype by hand:
    a call that raises restores each of them (the next call's weights get their plain path, its inner layers see
    its own training flag, and its losses are cleared as an outermost call's)."""
    from lamina import backend
    from lamina.layers.layer import current_training
    from lamina.tensor import autocast_dtype

    class Boom(layers.Layer):
        def call(self, x, training=None):
            assert backend.current_path().endswith("boom") and current_training() is True
            raise ValueError("boom")

    class Lossy(layers.Layer):
        def call(self, x):
            self.add_loss(ops.sum(x))
            return x

    boom = Boom(name="boom", dtype="mixed_float16")
    with pytest.raises(ValueError, match="boom"):
        boom(np.ones((1, 2), np.float32), training=True)
    assert backend.name_scope_stack() == [] and current_training() is None and autocast_dtype() is None
    lossy = Lossy()
    lossy(np.ones((1, 2), np.float32))
    lossy(np.full((1, 2), 2.0, np.float32))
    assert len(lossy.losses) == 1 and float(lossy.losses[0]) == 4.0   # (each outermost call clears the last's)
    d = layers.Dense(1, name="after")
    d(np.ones((1, 2), np.float32))
    assert d.kernel.path == "after/kernel"


def test_relu_keeps_nan():
    y = ops.relu(np.array([np.nan, -1.0, 2.0], np.float32)).numpy()
    assert np.isnan(y[0]) and y[1] == 0 and y[2] == 2


def test_unknown_kwarg_is_a_type_error():
    with pytest.raises(TypeError, match="unexpected keyword"):
        layers.Dense(3, kernal_initializer="zeros")


def test_automatic_names_are_keras_snake_case():
    lamina.backend.clear_session()
    assert layers.Conv2D(2, 3).name == "conv2d"
    assert layers.MaxPooling2D().name == "max_pooling2d"
    assert layers.Dense(1).name == "dense" and layers.Dense(1).name == "dense_1"
