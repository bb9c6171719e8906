"""Testing helpers for ops and layers, public so that users can check their own.

``check_grad`` compares back-propagated gradients with central differences in float64, against a
random upstream gradient (a plain ``.sum()`` would hide errors that cancel). ``check_layer`` runs
the contract every layer keeps: build, output shape, weight names and order, config round trip,
a training step that lowers a loss, and a clear error for a bad input shape.
"""
import numpy as np

from .tensor import Tensor, Variable, grad, no_grad


def _scalar(fn, xs, gy):
    with no_grad():
        y = fn(*xs)
    return float(np.sum(np.asarray(y.data if isinstance(y, Tensor) else y, np.float64) * gy))


def check_grad(fn, *inputs, params=None, seed=0, eps=1e-6, atol=1e-6, rtol=1e-4, max_elements=256,
               name=None):
    """Check the gradients of ``fn(*inputs)`` for every float input (and every tensor in ``params``,
    e.g. a layer's weights; a Layer given as fn checks its trainable weights too).

    Inputs are copied to float64; integer inputs are passed through as constants. Inputs with more than
    ``max_elements`` entries are checked along three random directions instead of entry by entry.
    Raises AssertionError naming the op, the input, the worst index and both values.
    """
    from .layers.layer import Layer, no_autocast
    rng = np.random.default_rng(seed)
    label = name or getattr(fn, "name", None) or getattr(fn, "__name__", type(fn).__name__)
    xs = []
    for x in inputs:
        a = np.asarray(x.data if isinstance(x, Tensor) else x)
        if np.issubdtype(a.dtype, np.floating):
            xs.append(Tensor(a.astype(np.float64), requires_grad=True))
        else:
            xs.append(Tensor(a))
    if params is None:
        params = fn.trainable_weights if isinstance(fn, Layer) and fn.built else []
    params = list(params)
    saved = [(p, p.data) for p in params]
    if isinstance(fn, Layer) and not fn.built:
        with no_autocast():
            fn(*xs)  # build, then cast the new weights too
        params = fn.trainable_weights
        saved = [(p, p.data) for p in params]
    # every weight of a layer goes to float64 for the check (moving statistics too), not only the checked ones
    extra = [w for w in (fn.weights if isinstance(fn, Layer) else []) if all(w is not p for p in params)]
    saved += [(w, w.data) for w in extra if np.issubdtype(w.dtype, np.floating)]
    try:
        for p, _ in saved:
            p.data = p.data.astype(np.float64)
        with no_autocast():
            y = fn(*xs)
            gy = rng.standard_normal(y.shape)
            targets = [x for x in xs if x.requires_grad] + params
            labels = [f"input {i}" for i, x in enumerate(xs) if x.requires_grad] + \
                     [f"weight '{getattr(p, 'name', i)}'" for i, p in enumerate(params)]
            loss = (y * Tensor(gy)).sum()
            analytic = grad(loss, targets) if loss.requires_grad else [None] * len(targets)
            for t, g, lab in zip(targets, analytic, labels):
                g = np.zeros(t.shape) if g is None else np.asarray(g, np.float64)
                _compare(fn, xs, gy, t, g, lab, label, rng, eps, atol, rtol, max_elements)
    finally:
        for p, data in saved:
            p.data = data


def _compare(fn, xs, gy, t, g, lab, label, rng, eps, atol, rtol, max_elements):
    base = t.data.copy()
    if t.size <= max_elements:
        num = np.zeros(t.shape)
        for i in range(t.size):   # index the array itself: reshape(-1) of a strided input would be a copy
            at = np.unravel_index(i, t.shape)
            old = t.data[at]
            t.data[at] = old + eps
            fp = _scalar(fn, xs, gy)
            t.data[at] = old - eps
            fm = _scalar(fn, xs, gy)
            t.data[at] = old
            num[at] = (fp - fm) / (2 * eps)
        err = np.abs(num - g) - (atol + rtol * np.abs(num))
        err = np.where(np.isfinite(g), err, np.inf)  # NaN compares False with everything: fail it explicitly
        if (err > 0).any():
            worst = np.unravel_index(int(np.argmax(err)), t.shape)
            raise AssertionError(f"check_grad({label}): gradient of {lab} is wrong at index {worst}: "
                                 f"backward gave {g[worst]:.8g}, central differences give {num[worst]:.8g} "
                                 f"(max abs error {np.max(np.abs(num - g)):.3g})")
    else:
        for k in range(3):
            d = rng.standard_normal(t.shape)
            t.data[...] = base + eps * d
            fp = _scalar(fn, xs, gy)
            t.data[...] = base - eps * d
            fm = _scalar(fn, xs, gy)
            t.data[...] = base
            num = (fp - fm) / (2 * eps)
            ana = float(np.sum(g * d))
            if not abs(num - ana) <= atol * np.sqrt(t.size) + rtol * abs(num) * 10:  # (NaN fails too)
                raise AssertionError(f"check_grad({label}): directional derivative of {lab} along random "
                                     f"direction {k} is wrong: backward gives {ana:.8g}, central differences "
                                     f"give {num:.8g}")


def check_layer(layer_cls, init_kwargs=None, input_shape=None, expected_output_shape=None,
                expected_num_trainable_weights=None, expected_num_non_trainable_weights=None,
                expected_weight_names=None, input_dtype="float32", input_data=None, seed=0,
                check_training=True, check_bad_shape=True):
    """Run the layer contract; returns the built layer for further checks."""
    from .layers.layer import Layer
    init_kwargs = dict(init_kwargs or {})
    rng = np.random.default_rng(seed)
    if input_data is None:
        if np.issubdtype(np.dtype(input_dtype), np.integer):
            input_data = rng.integers(0, 5, input_shape).astype(input_dtype)
        else:
            input_data = rng.standard_normal(input_shape).astype(input_dtype)
    layer = layer_cls(**init_kwargs)
    assert isinstance(layer, Layer), f"{layer_cls} is not a Layer"
    y = layer(input_data)
    name = layer_cls.__name__
    if expected_output_shape is not None:
        assert tuple(y.shape) == tuple(expected_output_shape), \
            f"{name}: output shape {tuple(y.shape)}, expected {tuple(expected_output_shape)}"
        spec_shape = layer.compute_output_shape(tuple(input_data.shape))
        assert tuple(spec_shape) == tuple(expected_output_shape), \
            f"{name}: compute_output_shape gave {tuple(spec_shape)}, expected {tuple(expected_output_shape)}"
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights, \
            f"{name}: {len(layer.trainable_weights)} trainable weights, expected {expected_num_trainable_weights}"
    if expected_num_non_trainable_weights is not None:
        assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights, \
            f"{name}: {len(layer.non_trainable_weights)} non-trainable weights, expected {expected_num_non_trainable_weights}"
    if expected_weight_names is not None:
        got = [w.name for w in layer.weights]
        assert got == list(expected_weight_names), f"{name}: weights {got}, expected {list(expected_weight_names)}"
    # config round trip: same config, and the same output once the weights are copied
    config = layer.get_config()
    clone = layer_cls.from_config(config)
    clone_config = clone.get_config()
    for k in config:
        if k != "name":
            assert config[k] == clone_config.get(k), f"{name}: config key {k!r} changed in the round trip"
    clone(input_data)
    clone.set_weights(layer.get_weights())
    y1 = np.asarray(layer(input_data, training=False).data)  # inference: no random augmentation or dropout
    y2 = np.asarray(clone(input_data, training=False).data)
    np.testing.assert_allclose(y1, y2, rtol=1e-6, atol=1e-6, err_msg=f"{name}: from_config + set_weights differs")
    if check_training and layer.trainable_weights:
        target = Tensor(rng.standard_normal(y1.shape).astype(y1.dtype))
        params = layer.trainable_weights

        def loss_fn():
            out = layer(input_data, training=True)
            return ((out - target) * (out - target)).mean()
        loss = loss_fn()
        grads = grad(loss, params)
        with no_grad():
            for p, g in zip(params, grads):
                if g is not None:
                    p.data = p.data - 1e-2 * g / (np.abs(g).max() + 1e-12)
        assert float(loss_fn().item()) < float(loss.item()), f"{name}: one gradient step did not lower the loss"
    if check_bad_shape and input_shape is not None and len(input_shape) >= 2 and layer.input_spec is not None:
        bad = np.zeros(tuple(input_shape[:-1]) + (input_shape[-1] + 1,), input_dtype)
        try:
            layer(bad)
        except ValueError as e:
            assert layer.name in str(e), f"{name}: the shape error does not name the layer: {e}"
        else:
            raise AssertionError(f"{name}: calling the built layer on shape {bad.shape} did not raise ValueError")
    return layer


__all__ = ["check_grad", "check_layer", "Variable"]
