"""ONNX export: a lamina model as an ONNX inference graph (``model.export(path, format="onnx")``).

The graph is built layer by layer: each supported layer class has a small function here that writes the
ONNX nodes computing the layer's inference forward pass, with its weights as initializers in the layout
ONNX wants (Conv weights as (out, in, kh, kw), LSTM gates reordered from Keras's i, f, c, o to ONNX's
i, o, f, c, ...). lamina works channels-last, ONNX's Conv and pooling channels-first: those layers are
wrapped in Transposes. The batch axis is dynamic ("batch"); other axes keep the sizes the model was built
with. A layer without an exporter, or with an option that ONNX cannot express here, raises a
``NotImplementedError`` naming it: nothing is silently approximated.

Needs the ``onnx`` package (``pip install 'lamina[onnx]'``); onnxruntime is used by the tests to check the
file against lamina's own predict.
"""
import numpy as np

__all__ = ["export_onnx", "EXPORTERS", "OPSET"]

OPSET = 17
EXPORTERS = {}


def exporter(*class_names):
    def register(fn):
        for name in class_names:
            EXPORTERS[name] = fn
        return fn
    return register


class _Graph:
    """The ONNX graph being written: nodes, initializers and unique names."""

    def __init__(self, onnx_module):
        self.onnx, self.helper = onnx_module, onnx_module.helper
        self.nodes, self.initializers, self._count = [], [], {}

    def name(self, base):
        """A fresh tensor name; the "~" prefix keeps them apart from the graph's input and output names."""
        n = self._count.get(base, 0)
        self._count[base] = n + 1
        return f"~{base}_{n}" if n else f"~{base}"

    def const(self, array, base="const"):
        array = np.asarray(array)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        name = self.name(base)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def ints(self, values, base="shape"):
        return self.const(np.asarray(values, np.int64), base)

    def op(self, op_type, inputs, outputs=1, **attrs):
        names = [self.name(op_type.lower()) for _ in range(outputs)]
        self.nodes.append(self.helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names


def _unsupported(layer, why):
    return NotImplementedError(f"ONNX export: layer '{layer.name}' ({type(layer).__name__}) {why}.")


# ------------------------------------------------------------------------------------- activations
def _activation(g, x, name, layer):
    """Nodes applying the Keras activation `name` to x."""
    if name in (None, "linear"):
        return x
    simple = {"relu": "Relu", "sigmoid": "Sigmoid", "tanh": "Tanh", "softplus": "Softplus",
              "softsign": "Softsign", "exponential": "Exp"}
    if name in simple:
        return g.op(simple[name], [x])
    if name == "softmax":
        return g.op("Softmax", [x], axis=-1)
    if name == "log_softmax":
        return g.op("LogSoftmax", [x], axis=-1)
    if name == "elu":
        return g.op("Elu", [x], alpha=1.0)
    if name == "selu":
        return g.op("Selu", [x], alpha=1.6732632423543772, gamma=1.0507009873554805)
    if name == "leaky_relu":
        return g.op("LeakyRelu", [x], alpha=0.2)
    if name == "relu6":
        return g.op("Clip", [x, g.const(np.float32(0)), g.const(np.float32(6))])
    if name == "hard_sigmoid":
        return g.op("HardSigmoid", [x], alpha=1 / 6, beta=0.5)
    if name in ("hard_silu", "hard_swish"):
        return g.op("Mul", [x, g.op("HardSigmoid", [x], alpha=1 / 6, beta=0.5)])
    if name in ("silu", "swish"):
        return g.op("Mul", [x, g.op("Sigmoid", [x])])
    if name == "gelu":  # exact: x / 2 * (1 + erf(x / sqrt(2)))
        erf = g.op("Erf", [g.op("Div", [x, g.const(np.float32(np.sqrt(2.0)))])])
        return g.op("Mul", [g.op("Mul", [x, g.const(np.float32(0.5))]), g.op("Add", [erf, g.const(np.float32(1))])])
    raise _unsupported(layer, f"uses the activation {name!r}, which has no ONNX export here")


def _act_name(fn):
    from ..activations import serialize
    return serialize(fn)


@exporter("Activation")
def _export_activation(g, layer, xs, cfg):
    return [_activation(g, xs[0], _act_name(layer.activation), layer)]


@exporter("ReLU")
def _export_relu(g, layer, xs, cfg):
    if cfg.get("negative_slope") or cfg.get("threshold"):
        raise _unsupported(layer, "has negative_slope/threshold")
    y = g.op("Relu", [xs[0]])
    if cfg.get("max_value") is not None:
        y = g.op("Min", [y, g.const(np.float32(cfg["max_value"]))])
    return [y]


@exporter("LeakyReLU")
def _export_leaky(g, layer, xs, cfg):
    return [g.op("LeakyRelu", [xs[0]], alpha=float(cfg.get("negative_slope", 0.3)))]


@exporter("ELU")
def _export_elu(g, layer, xs, cfg):
    return [g.op("Elu", [xs[0]], alpha=float(cfg.get("alpha", 1.0)))]


@exporter("Softmax")
def _export_softmax(g, layer, xs, cfg):
    axis = cfg.get("axis", -1)
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise _unsupported(layer, "takes the softmax over several axes")
        axis = axis[0]
    if len(xs) > 1:
        raise _unsupported(layer, "is called with a mask")
    return [g.op("Softmax", [xs[0]], axis=int(axis))]


# ------------------------------------------------------------------------------------------ core
@exporter("Dense")
def _export_dense(g, layer, xs, cfg):
    w = layer.get_weights()
    y = g.op("MatMul", [xs[0], g.const(w[0], f"{layer.name}/kernel")])
    if cfg.get("use_bias", True):
        y = g.op("Add", [y, g.const(w[1], f"{layer.name}/bias")])
    return [_activation(g, y, _act_name(layer.activation), layer)]


@exporter("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
          "GaussianDropout", "ActivityRegularization", "RandomFlip", "RandomRotation", "RandomTranslation",
          "RandomZoom", "RandomContrast")
def _export_identity(g, layer, xs, cfg):
    return [g.op("Identity", [xs[0]])]   # inference: these layers pass their input through


@exporter("Embedding")
def _export_embedding(g, layer, xs, cfg):
    ids = g.op("Cast", [xs[0]], to=g.onnx.TensorProto.INT64)
    return [g.op("Gather", [g.const(layer.get_weights()[0], f"{layer.name}/embeddings"), ids], axis=0)]


@exporter("Rescaling")
def _export_rescaling(g, layer, xs, cfg):
    x = g.op("Cast", [xs[0]], to=g.onnx.TensorProto.FLOAT)
    y = g.op("Mul", [x, g.const(np.asarray(cfg["scale"], np.float32))])
    return [g.op("Add", [y, g.const(np.asarray(cfg.get("offset", 0.0), np.float32))])]


@exporter("Normalization")
def _export_normalization(g, layer, xs, cfg):
    mean, var = (np.asarray(t.numpy(), np.float32) for t in layer._stats())   # broadcastable to the input
    std = np.maximum(np.sqrt(var), 1e-7).astype(np.float32)
    if cfg.get("invert"):
        return [g.op("Add", [g.op("Mul", [xs[0], g.const(std)]), g.const(mean)])]
    return [g.op("Div", [g.op("Sub", [xs[0], g.const(mean)]), g.const(std)])]


# ----------------------------------------------------------------------------------- reshaping
@exporter("Flatten")
def _export_flatten(g, layer, xs, cfg):
    return [g.op("Reshape", [xs[0], g.ints([0, -1])])]


@exporter("Reshape")
def _export_reshape(g, layer, xs, cfg):
    return [g.op("Reshape", [xs[0], g.ints([0] + list(cfg["target_shape"]))])]


@exporter("Permute")
def _export_permute(g, layer, xs, cfg):
    return [g.op("Transpose", [xs[0]], perm=[0] + [int(d) for d in cfg["dims"]])]


@exporter("RepeatVector")
def _export_repeat(g, layer, xs, cfg):
    y = g.op("Unsqueeze", [xs[0], g.ints([1])])
    return [g.op("Tile", [y, g.ints([1, int(cfg["n"]), 1])])]


def _pairs(value, n):
    if isinstance(value, int):
        return [(value, value)] * n if n > 1 else [(value, value)]
    value = list(value)
    if all(isinstance(v, int) for v in value):
        return [(v, v) for v in value] if len(value) == n else [tuple(value)]
    return [tuple(v) for v in value]


@exporter("ZeroPadding1D", "ZeroPadding2D")
def _export_zeropad(g, layer, xs, cfg):
    n = 1 if type(layer).__name__.endswith("1D") else 2
    pads = _pairs(cfg["padding"], n)
    begins, ends = [0] + [p[0] for p in pads] + [0], [0] + [p[1] for p in pads] + [0]
    return [g.op("Pad", [xs[0], g.ints(begins + ends)], mode="constant")]


@exporter("Cropping1D", "Cropping2D")
def _export_crop(g, layer, xs, cfg):
    n = 1 if type(layer).__name__.endswith("1D") else 2
    crops = _pairs(cfg["cropping"], n)
    starts = [c[0] for c in crops]
    ends = [-c[1] if c[1] else np.iinfo(np.int64).max for c in crops]
    return [g.op("Slice", [xs[0], g.ints(starts), g.ints(ends), g.ints(list(range(1, n + 1)))])]


@exporter("UpSampling1D", "UpSampling2D")
def _export_upsampling(g, layer, xs, cfg):
    if type(layer).__name__ == "UpSampling1D":
        scales = [1.0, float(cfg["size"]), 1.0]
        mode = "nearest"
    else:
        size = cfg["size"] if isinstance(cfg["size"], (list, tuple)) else (cfg["size"],) * 2
        scales = [1.0, float(size[0]), float(size[1]), 1.0]
        mode = cfg.get("interpolation", "nearest")
        if mode not in ("nearest", "bilinear"):
            raise _unsupported(layer, f"uses interpolation={mode!r}")
    if mode == "nearest":
        return [g.op("Resize", [xs[0], "", g.const(np.asarray(scales, np.float32))], mode="nearest",
                     nearest_mode="floor", coordinate_transformation_mode="asymmetric")]
    return [g.op("Resize", [xs[0], "", g.const(np.asarray(scales, np.float32))], mode="linear",
                 coordinate_transformation_mode="half_pixel")]


# --------------------------------------------------------------------------------- convolution
def _channels_first(g, x, rank):
    return g.op("Transpose", [x], perm=[0, rank + 1] + list(range(1, rank + 1)))


def _channels_last(g, x, rank):
    return g.op("Transpose", [x], perm=[0] + list(range(2, rank + 2)) + [1])


def _tuple(v, n):
    return [int(v)] * n if isinstance(v, int) else [int(a) for a in v]


@exporter("Conv1D", "Conv2D", "Conv1DTranspose", "Conv2DTranspose")
def _export_conv(g, layer, xs, cfg):
    rank = 1 if "1D" in type(layer).__name__ else 2
    transpose = "Transpose" in type(layer).__name__
    if cfg.get("data_format") not in (None, "channels_last"):
        raise _unsupported(layer, "uses data_format='channels_first'")
    w = layer.get_weights()
    kernel = w[0]                                   # (k..., in, out) or, transposed, (k..., out, in)
    k = list(kernel.shape[:rank])
    # (k..., a, b) -> (b, a, k...): Conv's (out, in, k...) and ConvTranspose's (in, out, k...) alike
    wname = g.const(np.transpose(kernel, [rank + 1, rank] + list(range(rank))), f"{layer.name}/kernel")
    strides = _tuple(cfg.get("strides", 1), rank)
    dilations = _tuple(cfg.get("dilation_rate", 1), rank)
    padding = cfg.get("padding", "valid")
    x = _channels_first(g, xs[0], rank)
    inputs = [x, wname] + ([g.const(w[1], f"{layer.name}/bias")] if cfg.get("use_bias", True) else [])
    attrs = dict(kernel_shape=k, strides=strides, dilations=dilations)
    if not transpose:
        attrs["group"] = int(cfg.get("groups", 1))
        if padding == "causal":
            attrs["pads"] = [(k[0] - 1) * dilations[0], 0]
        elif padding == "same" and any(d > 1 for d in dilations):  # stride 1 (Keras allows no other here)
            total = [(kk - 1) * d for kk, d in zip(k, dilations)]
            attrs["pads"] = [t // 2 for t in total] + [t - t // 2 for t in total]
        else:
            attrs["auto_pad"] = "SAME_UPPER" if padding == "same" else "VALID"
        y = g.op("Conv", inputs, **attrs)
    else:
        if cfg.get("output_padding") is not None:
            raise _unsupported(layer, "sets output_padding")
        if padding == "same":  # output = input * stride; Keras puts the extra padding at the end
            total = [max(kk + (kk - 1) * (d - 1) - s, 0) for kk, s, d in zip(k, strides, dilations)]
            attrs["pads"] = [t // 2 for t in total] + [t - t // 2 for t in total]
        else:
            attrs["pads"] = [0] * (2 * rank)
        y = g.op("ConvTranspose", inputs, **attrs)
    y = _channels_last(g, y, rank)
    return [_activation(g, y, _act_name(layer.activation), layer)]


@exporter("MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D")
def _export_pool(g, layer, xs, cfg):
    rank = 1 if "1D" in type(layer).__name__ else 2
    if cfg.get("data_format") not in (None, "channels_last"):
        raise _unsupported(layer, "uses data_format='channels_first'")
    pool = _tuple(cfg["pool_size"], rank)
    strides = _tuple(cfg.get("strides") or cfg["pool_size"], rank)
    auto_pad = "SAME_UPPER" if cfg.get("padding", "valid") == "same" else "VALID"
    op = "MaxPool" if type(layer).__name__.startswith("Max") else "AveragePool"
    y = g.op(op, [_channels_first(g, xs[0], rank)], kernel_shape=pool, strides=strides, auto_pad=auto_pad)
    return [_channels_last(g, y, rank)]


@exporter("GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D")
def _export_global_pool(g, layer, xs, cfg):
    rank = 1 if "1D" in type(layer).__name__ else 2
    if cfg.get("data_format") not in (None, "channels_last"):
        raise _unsupported(layer, "uses data_format='channels_first'")
    op = "ReduceMean" if "Average" in type(layer).__name__ else "ReduceMax"
    return [g.op(op, [xs[0]], axes=list(range(1, rank + 1)), keepdims=int(bool(cfg.get("keepdims", False))))]


# ------------------------------------------------------------------------------- normalisation
@exporter("BatchNormalization")
def _export_batchnorm(g, layer, xs, cfg):
    weights = {w.name.split("/")[-1]: np.asarray(w.numpy(), np.float64) for w in layer.weights}
    mean, var = weights["moving_mean"], weights["moving_variance"]
    gamma = weights.get("gamma", np.ones_like(mean))
    beta = weights.get("beta", np.zeros_like(mean))
    scale = gamma / np.sqrt(var + float(cfg.get("epsilon", 1e-3)))
    shift = beta - mean * scale
    axis = cfg.get("axis", -1)
    axis = axis[0] if isinstance(axis, (list, tuple)) else axis
    rank = layer.input_spec.ndim if layer.input_spec is not None else None
    shape = [-1]                                   # statistics along the last axis broadcast as they are
    if axis != -1 and (rank is None or axis % rank != rank - 1):
        if rank is None:
            raise _unsupported(layer, f"normalises axis {axis} of an input of unknown rank")
        shape = [-1] + [1] * (rank - 1 - axis % rank)
    y = g.op("Mul", [xs[0], g.const(scale.reshape(shape).astype(np.float32), f"{layer.name}/scale")])
    return [g.op("Add", [y, g.const(shift.reshape(shape).astype(np.float32), f"{layer.name}/shift")])]


@exporter("LayerNormalization")
def _export_layernorm(g, layer, xs, cfg):
    axis = cfg.get("axis", -1)
    if isinstance(axis, (list, tuple)):
        if list(axis) != [-1]:
            raise _unsupported(layer, f"normalises over axes {axis}")
    elif axis != -1:
        raise _unsupported(layer, f"normalises over axis {axis}")
    if cfg.get("rms_scaling"):
        raise _unsupported(layer, "uses rms_scaling")
    w = {v.name.split("/")[-1]: v.numpy() for v in layer.weights}
    dim = next(iter(w.values())).shape[-1] if w else None
    if dim is None:
        raise _unsupported(layer, "has neither scale nor center")
    gamma = w.get("gamma", np.ones(dim, np.float32))
    beta = w.get("beta", np.zeros(dim, np.float32))
    return [g.op("LayerNormalization", [xs[0], g.const(gamma, f"{layer.name}/gamma"),
                                        g.const(beta, f"{layer.name}/beta")],
                 axis=-1, epsilon=float(cfg.get("epsilon", 1e-3)))]


# ------------------------------------------------------------------------------------ merging
@exporter("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
def _export_merge(g, layer, xs, cfg):
    kind = type(layer).__name__
    if kind == "Subtract":
        return [g.op("Sub", [xs[0], xs[1]])]
    op = {"Add": "Sum", "Average": "Mean", "Maximum": "Max", "Minimum": "Min", "Multiply": "Mul"}[kind]
    if op == "Mul":
        y = xs[0]
        for x in xs[1:]:
            y = g.op("Mul", [y, x])
        return [y]
    return [g.op(op, list(xs))]


@exporter("Concatenate")
def _export_concat(g, layer, xs, cfg):
    return [g.op("Concat", list(xs), axis=int(cfg.get("axis", -1)))]


# ---------------------------------------------------------------------------------- recurrent
def _rnn_kind(layer):
    return type(layer).__name__


_GATE_ACTS = {"sigmoid": "Sigmoid", "tanh": "Tanh", "relu": "Relu", "hard_sigmoid": "HardSigmoid"}


def _rnn_weights(layer):
    """(W, R, B) for ONNX's RNN/GRU/LSTM (one direction), from the layer's Keras weights."""
    kind = _rnn_kind(layer)
    cfg = layer.get_config()
    w = layer.get_weights()
    kernel, recurrent = w[0], w[1]
    bias = w[2] if cfg.get("use_bias", True) else None
    units = recurrent.shape[0]
    if kind == "LSTM":   # Keras i, f, c, o -> ONNX i, o, f, c
        order = lambda a: np.concatenate([a[..., 0:units], a[..., 3 * units:], a[..., units:2 * units],  # noqa: E731
                                          a[..., 2 * units:3 * units]], axis=-1)
        kernel, recurrent = order(kernel), order(recurrent)
        b = np.concatenate([order(bias) if bias is not None else np.zeros(4 * units, np.float32),
                            np.zeros(4 * units, np.float32)])
    elif kind == "GRU":  # both z, r, h
        if bias is None:
            b = np.zeros(6 * units, np.float32)
        elif bias.ndim == 2:
            b = np.concatenate([bias[0], bias[1]])
        else:
            b = np.concatenate([bias, np.zeros_like(bias)])
    else:
        b = np.concatenate([bias if bias is not None else np.zeros(units, np.float32), np.zeros(units, np.float32)])
    return kernel.T, recurrent.T, b, units


def _rnn_node(g, layer, x_time_major, direction, parts):
    """The ONNX recurrent node for layer (parts: one (W, R, B) per direction)."""
    kind = _rnn_kind(layer)
    cfg = layer.get_config()
    W = g.const(np.stack([p[0] for p in parts]).astype(np.float32), f"{layer.name}/W")
    R = g.const(np.stack([p[1] for p in parts]).astype(np.float32), f"{layer.name}/R")
    B = g.const(np.stack([p[2] for p in parts]).astype(np.float32), f"{layer.name}/B")
    units = parts[0][3]
    act = cfg.get("activation", "tanh")
    rec = cfg.get("recurrent_activation", "sigmoid")
    for a in (act, rec) if kind != "SimpleRNN" else (act,):
        if a not in _GATE_ACTS:
            raise _unsupported(layer, f"uses the activation {a!r} inside the cell")
    n_dir = len(parts)
    if kind == "LSTM":
        acts = [_GATE_ACTS[rec], _GATE_ACTS[act], _GATE_ACTS[act]] * n_dir
        outs = g.op("LSTM", [x_time_major, W, R, B], outputs=3, hidden_size=units, direction=direction,
                    activations=acts)
    elif kind == "GRU":   # Keras's reset_after is ONNX's linear_before_reset
        outs = g.op("GRU", [x_time_major, W, R, B], outputs=2, hidden_size=units, direction=direction,
                    activations=[_GATE_ACTS[rec], _GATE_ACTS[act]] * n_dir,
                    linear_before_reset=int(bool(cfg.get("reset_after", True))))
    else:
        outs = g.op("RNN", [x_time_major, W, R, B], outputs=2, hidden_size=units, direction=direction,
                    activations=[_GATE_ACTS[act]] * n_dir)
    return outs[0], outs[1], units   # Y (T, dirs, N, units), Y_h (dirs, N, units)


def _check_rnn(layer, xs):
    cfg = layer.get_config()
    if len(xs) > 1:
        raise _unsupported(layer, "is called with a mask or initial state (ONNX export of masked recurrent "
                                  "layers is not supported: padding would be read as data)")
    if cfg.get("stateful") or cfg.get("return_state"):
        raise _unsupported(layer, "is stateful or returns its state")
    if cfg.get("go_backwards"):
        raise _unsupported(layer, "runs backwards outside Bidirectional")
    return cfg


@exporter("SimpleRNN", "LSTM", "GRU")
def _export_rnn(g, layer, xs, cfg):
    _check_rnn(layer, xs)
    x = g.op("Transpose", [xs[0]], perm=[1, 0, 2])
    W, R, B, units = _rnn_weights(layer)
    y, y_h, _ = _rnn_node(g, layer, x, "forward", [(W, R, B, units)])
    if cfg.get("return_sequences"):
        y = g.op("Squeeze", [y, g.ints([1])])
        return [g.op("Transpose", [y], perm=[1, 0, 2])]
    return [g.op("Squeeze", [y_h, g.ints([0])])]


@exporter("Bidirectional")
def _export_bidirectional(g, layer, xs, cfg):
    fwd, bwd = layer.forward_layer, layer.backward_layer
    if _rnn_kind(fwd) != _rnn_kind(bwd) or _rnn_kind(fwd) not in ("SimpleRNN", "LSTM", "GRU"):
        raise _unsupported(layer, "wraps layers ONNX cannot run as one bidirectional recurrent node")
    _check_rnn(fwd, xs)
    x = g.op("Transpose", [xs[0]], perm=[1, 0, 2])
    f, b = _rnn_weights(fwd), _rnn_weights(bwd)
    y, y_h, units = _rnn_node(g, fwd, x, "bidirectional", [f, b])
    mode = cfg.get("merge_mode", "concat")
    if fwd.get_config().get("return_sequences"):
        y = g.op("Transpose", [y], perm=[2, 0, 1, 3])            # (N, T, 2, units)
        if mode == "concat":
            return [g.op("Reshape", [y, g.ints([0, 0, 2 * units])])]
        parts = g.op("Split", [y, g.ints([1, 1])], outputs=2, axis=2)
        parts = [g.op("Squeeze", [p, g.ints([2])]) for p in parts]
    else:
        y_h = g.op("Transpose", [y_h], perm=[1, 0, 2])          # (N, 2, units)
        if mode == "concat":
            return [g.op("Reshape", [y_h, g.ints([0, 2 * units])])]
        parts = g.op("Split", [y_h, g.ints([1, 1])], outputs=2, axis=1)
        parts = [g.op("Squeeze", [p, g.ints([1])]) for p in parts]
    if mode == "sum":
        return [g.op("Add", parts)]
    if mode == "mul":
        return [g.op("Mul", parts)]
    if mode == "ave":
        return [g.op("Mul", [g.op("Add", parts), g.const(np.float32(0.5))])]
    raise _unsupported(layer, f"uses merge_mode={mode!r}")


# ---------------------------------------------------------------------------------- attention
def _project(g, x, kernel, bias, name):
    """x (N, T, dim) @ kernel (dim, heads, size) + bias -> (N, heads, T, size)."""
    dim, heads, size = kernel.shape
    y = g.op("MatMul", [x, g.const(kernel.reshape(dim, heads * size), f"{name}/kernel")])
    if bias is not None:
        y = g.op("Add", [y, g.const(bias.reshape(heads * size), f"{name}/bias")])
    y = g.op("Reshape", [y, g.ints([0, 0, heads, size])])
    return g.op("Transpose", [y], perm=[0, 2, 1, 3])


@exporter("MultiHeadAttention")
def _export_mha(g, layer, xs, cfg, call_kwargs=None):
    call_kwargs = call_kwargs or {}
    if call_kwargs.get("attention_mask") is not None or call_kwargs.get("return_attention_scores"):
        raise _unsupported(layer, "is called with attention_mask or return_attention_scores")
    query, value = xs[0], xs[1] if len(xs) > 1 else xs[0]
    key = xs[2] if len(xs) > 2 else value
    ws = layer.get_weights()   # Keras's order: query, key, value, output; each kernel then bias
    use_bias = cfg.get("use_bias", True)
    step = 2 if use_bias else 1
    qk, kk, vk, ok = ws[0], ws[step], ws[2 * step], ws[3 * step]
    qb, kb, vb, ob = (ws[1], ws[3], ws[5], ws[7]) if use_bias else (None,) * 4
    q = _project(g, query, qk, qb, f"{layer.name}/query")
    k = _project(g, key, kk, kb, f"{layer.name}/key")
    v = _project(g, value, vk, vb, f"{layer.name}/value")
    key_dim = qk.shape[-1]
    scores = g.op("MatMul", [g.op("Mul", [q, g.const(np.float32(1.0 / np.sqrt(key_dim)))]),
                             g.op("Transpose", [k], perm=[0, 1, 3, 2])])
    if call_kwargs.get("use_causal_mask"):
        tq = g.op("Gather", [g.op("Shape", [query]), g.ints([1])], axis=0)
        tk = g.op("Gather", [g.op("Shape", [key]), g.ints([1])], axis=0)
        ones = g.op("ConstantOfShape", [g.op("Concat", [tq, tk], axis=0)],
                    value=g.helper.make_tensor("one", g.onnx.TensorProto.FLOAT, [1], [1.0]))
        allowed = g.op("Trilu", [ones], upper=0)
        penalty = g.op("Mul", [g.op("Sub", [allowed, g.const(np.float32(1))]), g.const(np.float32(1e9))])
        scores = g.op("Add", [scores, penalty])
    weights = g.op("Softmax", [scores], axis=-1)
    out = g.op("MatMul", [weights, v])                         # (N, heads, T, value_dim)
    out = g.op("Transpose", [out], perm=[0, 2, 1, 3])
    heads, vdim = ok.shape[0], ok.shape[1]
    out = g.op("Reshape", [out, g.ints([0, 0, heads * vdim])])
    y = g.op("MatMul", [out, g.const(ok.reshape(heads * vdim, -1), f"{layer.name}/output/kernel")])
    if ob is not None:
        y = g.op("Add", [y, g.const(ob, f"{layer.name}/output/bias")])
    return [y]


# ------------------------------------------------------------------------------------ the walk
# layers whose output values do not depend on a mask they receive (the mask only travels through them)
_MASK_BLIND = {"Dense", "Activation", "ReLU", "LeakyReLU", "ELU", "Dropout", "SpatialDropout1D", "GaussianNoise",
               "GaussianDropout", "LayerNormalization", "BatchNormalization", "Rescaling", "ActivityRegularization",
               "Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate"}


def _makes_mask(layer):
    kind = type(layer).__name__
    return kind == "Masking" or (kind in ("Embedding", "TokenAndPositionEmbedding") and
                                 bool(getattr(layer, "mask_zero", False)))


def _export_layer(g, layer, xs, call_kwargs=None, masked=False):
    from ..models.model import Model
    if masked and type(layer).__name__ not in _MASK_BLIND:
        raise _unsupported(layer, "receives a mask (from Embedding(mask_zero=True) or Masking), which the ONNX "
                                  "graph cannot apply: exporting it would read the padding as data")
    if isinstance(layer, Model):
        return _export_model_body(g, layer, xs)
    fn = EXPORTERS.get(type(layer).__name__)
    if fn is None:
        raise NotImplementedError(f"ONNX export: layer '{layer.name}' ({type(layer).__name__}) has no ONNX "
                                  f"exporter. Supported: {', '.join(sorted(EXPORTERS))}.")
    cfg = layer.get_config()
    if fn is _export_mha:
        return fn(g, layer, xs, cfg, call_kwargs)
    if call_kwargs and call_kwargs.get("mask") is not None:
        raise _unsupported(layer, "is called with a mask")
    return fn(g, layer, xs, cfg)


def _export_model_body(g, model, inputs):
    """Nodes of model applied to the ONNX tensors `inputs` (a list, in the model's flat input order)."""
    from ..layers.core import InputLayer
    from ..layers.layer import KerasTensor, _nest_flatten
    nodes = getattr(model, "_nodes", None)
    if nodes is None:  # Sequential
        x, masked = inputs, False
        for layer in model.layers:
            if isinstance(layer, InputLayer):
                continue
            x = _export_layer(g, layer, x, masked=masked)
            masked = masked or _makes_mask(layer)
        return x
    names = {id(kt): name for kt, name in zip(model._flat_inputs, inputs)}
    masked_names = set()
    for node in nodes:
        xs = [names[id(t)] for t in node.input_tensors]
        masked = any(x in masked_names for x in xs)
        kwargs = {k: v for k, v in (node.call_kwargs or {}).items() if not isinstance(v, KerasTensor)}
        if any(isinstance(v, KerasTensor) for v in _nest_flatten(node.call_kwargs or {})) and \
                type(node.layer).__name__ == "MultiHeadAttention":
            kwargs["attention_mask"] = True   # a symbolic mask: refused by the exporter
        outs = _export_layer(g, node.layer, xs, kwargs, masked=masked)
        for kt, name in zip(node.output_tensors, outs):
            names[id(kt)] = name
            if masked or _makes_mask(node.layer):
                masked_names.add(name)
    return [names[id(kt)] for kt in model._flat_outputs]


def _onnx_type(dtype, onnx):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return onnx.TensorProto.FLOAT
    if dtype.kind in "iu":
        return onnx.TensorProto.INT64 if dtype.itemsize == 8 else onnx.TensorProto.INT32
    raise NotImplementedError(f"ONNX export: inputs of dtype {dtype} are not supported")


def export_onnx(model, filepath, opset=OPSET):
    """Write model's inference graph to filepath as ONNX. Returns the path.

    The batch axis is dynamic; input and output names are the model's (its Input names and output layer
    names). Raises NotImplementedError naming the first layer that cannot be exported."""
    try:
        import onnx
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install 'lamina[onnx]'") from None
    from ..io import atomic_write
    if not getattr(model, "built", False):
        raise ValueError(f"Model '{model.name}' is not built yet: call it on data (or build it) before exporting.")
    g = _Graph(onnx)
    flat_inputs = getattr(model, "_flat_inputs", None)
    if flat_inputs is None:  # Sequential: its one input
        specs = [(model.input.name, model.input.shape, model.input.dtype)]
    else:
        specs = [(t.name, t.shape, t.dtype) for t in flat_inputs]
    in_names, graph_inputs = [], []
    for name, shape, dtype in specs:
        dims = ["batch"] + [d if d is not None else f"{name}_dim{i + 1}" for i, d in enumerate(shape[1:])]
        in_names.append(name)
        graph_inputs.append(onnx.helper.make_tensor_value_info(name, _onnx_type(dtype, onnx), dims))
    outs = _export_model_body(g, model, list(in_names))
    out_names = list(getattr(model, "output_names", None) or ["output"])
    if len(out_names) != len(outs):
        out_names = [f"output_{i}" for i in range(len(outs))]
    from ..layers.layer import _nest_flatten
    out_specs = _nest_flatten(model.outputs if getattr(model, "_flat_outputs", None) is None else model._flat_outputs)
    graph_outputs = []
    for name, produced, kt in zip(out_names, outs, out_specs):
        g.nodes.append(onnx.helper.make_node("Identity", [produced], [name]))
        dims = ["batch"] + [d if d is not None else f"{name}_dim{i + 1}" for i, d in enumerate(kt.shape[1:])]
        graph_outputs.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, dims))
    graph = onnx.helper.make_graph(g.nodes, model.name, graph_inputs, graph_outputs, g.initializers)
    proto = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", opset)],
                                   producer_name="lamina")
    proto.ir_version = min(proto.ir_version, 9)
    onnx.checker.check_model(proto)
    atomic_write(str(filepath), proto.SerializeToString())
    return str(filepath)
