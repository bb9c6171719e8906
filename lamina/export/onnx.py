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

from .. import backend

__all__ = ["export_onnx", "EXPORTERS", "OPSET"]

OPSET = 17
EXPORTERS = {}
_MASK_AWARE = set()   # layers whose exporter takes the input masks and sets its outputs' masks itself


def exporter(*class_names, masks=False):
    def register(fn):
        for name in class_names:
            EXPORTERS[name] = fn
            if masks:
                _MASK_AWARE.add(name)
        return fn
    return register


class _Graph:
    """The ONNX graph being written: nodes, initializers and unique names."""

    def __init__(self, onnx_module):
        self.onnx, self.helper = onnx_module, onnx_module.helper
        self.nodes, self.initializers, self._count = [], [], {}
        self.masks = {}   # tensor name -> name of its Keras mask, bool (N, T)

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


def _spread(g, m, x):
    """A (N, T) mask reshaped to (N, T, 1, ...) with x's rank, so that it broadcasts over x's other axes."""
    rank = g.op("Shape", [g.op("Shape", [x])])
    ones = g.op("ConstantOfShape", [g.op("Sub", [rank, g.ints([2])])],
                value=g.helper.make_tensor("one", g.onnx.TensorProto.INT64, [1], [1]))
    return g.op("Reshape", [m, g.op("Concat", [g.op("Shape", [m]), ones], axis=0)])


@exporter("Softmax", masks=True)
def _export_softmax(g, layer, xs, cfg, masks, call_kwargs, kw_tensors):
    axis = cfg.get("axis", -1)
    if isinstance(axis, (list, tuple)):
        if len(axis) != 1:
            raise _unsupported(layer, "takes the softmax over several axes")
        axis = axis[0]
    if kw_tensors:
        raise _unsupported(layer, "is called with an explicit mask= of graph tensors")
    m = masks[0]
    if m is None:
        return [g.op("Softmax", [xs[0]], axis=int(axis))]
    # lamina / Keras: -1e9 added where the (N, T) mask is false (spread over the remaining axes), the output
    # times the mask
    mf = _spread(g, g.op("Cast", [m], to=g.onnx.TensorProto.FLOAT), xs[0])
    penalty = g.op("Mul", [g.op("Sub", [g.const(np.float32(1)), mf]), g.const(np.float32(-1e9))])
    y = g.op("Mul", [g.op("Softmax", [g.op("Add", [xs[0], penalty])], axis=int(axis)), mf])
    g.masks[y] = m
    return [y]


# ------------------------------------------------------------------------------------------ core
@exporter("Dense")
def _export_dense(g, layer, xs, cfg):
    w = layer.get_weights()
    if getattr(layer, "lora_enabled", False):   # the kernel with the low-rank update merged in
        w[0] = np.asarray(layer.effective_kernel().numpy(), np.float32)
    y = g.op("MatMul", [xs[0], g.const(w[0], f"{layer.name}/kernel")])
    if cfg.get("use_bias", True):
        y = g.op("Add", [y, g.const(w[1], f"{layer.name}/bias")])
    return [_activation(g, y, _act_name(layer.activation), layer)]


@exporter("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
          "GaussianDropout", "ActivityRegularization", "RandomFlip", "RandomRotation", "RandomTranslation",
          "RandomZoom", "RandomContrast")
def _export_identity(g, layer, xs, cfg):
    return [g.op("Identity", [xs[0]])]   # inference: these layers pass their input through


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


@exporter("STFTSpectrogram")
def _export_stft(g, layer, xs, cfg):
    """As the layer computes it: every channel alone through a strided Conv with the windowed DFT basis
    (real and imaginary kernels), then the mode's arithmetic, then the layer's output layout."""
    mode = cfg["mode"]
    if mode == "angle":
        raise _unsupported(layer, "uses mode='angle' (ONNX has no two-argument arctangent)")
    if cfg.get("data_format") not in (None, "channels_last"):
        raise _unsupported(layer, "uses data_format='channels_first'")
    shape, out_shape = tuple(layer.input_shape), tuple(layer.output_shape)
    time, channels = shape[1], shape[2]
    if time is None or channels is None:
        raise _unsupported(layer, "has an input of unknown length or channels")
    steps = out_shape[1]
    x = g.op("Reshape", [g.op("Transpose", [xs[0]], perm=[0, 2, 1]), g.ints([-1, 1, time])])  # (B*C, 1, T)
    pad = "SAME_UPPER" if cfg.get("padding", "valid") == "same" else "VALID"

    def transform(kernel, name):   # (frame, 1, bins) -> Conv weight (bins, 1, frame); out (B*C, steps, bins)
        w = g.const(np.transpose(backend.to_numpy(kernel.data), [2, 1, 0]), f"{layer.name}/{name}")
        y = g.op("Conv", [x, w], kernel_shape=[int(kernel.shape[0])], strides=[int(layer._frame_step)],
                 auto_pad=pad)
        return g.op("Transpose", [y], perm=[0, 2, 1])

    re = transform(layer.real_kernel, "real_kernel") if mode != "imag" else None
    im = transform(layer.imag_kernel, "imag_kernel") if mode != "real" else None
    if mode in ("real", "imag"):
        y = re if mode == "real" else im
    elif mode == "stft":
        y = g.op("Concat", [re, im], axis=-1)
    else:
        power = g.op("Add", [g.op("Mul", [re, re]), g.op("Mul", [im, im])])
        if mode == "psd":   # the inner bins counted twice (their mirror images), as the layer does
            inner = g.op("Slice", [power, g.ints([1]), g.ints([-1]), g.ints([2])])
            y = g.op("Add", [power, g.op("Pad", [inner, g.ints([0, 0, 1, 0, 0, 1])], mode="constant")])
        else:
            eps = g.const(np.asarray(backend.epsilon(), np.float32), "epsilon")
            y = g.op("Sqrt", [g.op("Max", [power, eps])])
            if mode == "log":
                y = g.op("Log", [g.op("Max", [y, eps])])
    freq = out_shape[2] if cfg.get("expand_dims") else out_shape[2] // channels
    y = g.op("Reshape", [y, g.ints([-1, channels, steps, freq])])          # (B, C, steps, freq)
    if cfg.get("expand_dims"):
        return [g.op("Transpose", [y], perm=[0, 2, 3, 1])]                  # (B, steps, freq, C)
    y = g.op("Reshape", [g.op("Transpose", [y], perm=[0, 1, 3, 2]), g.ints([-1, channels * freq, steps])])
    return [g.op("Transpose", [y], perm=[0, 2, 1])]                         # (B, steps, C*freq)


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


@exporter("GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalMaxPooling1D", "GlobalMaxPooling2D",
          masks=True)
def _export_global_pool(g, layer, xs, cfg, masks, call_kwargs, kw_tensors):
    kind = type(layer).__name__
    rank = 1 if "1D" in kind else 2
    if cfg.get("data_format") not in (None, "channels_last"):
        raise _unsupported(layer, "uses data_format='channels_first'")
    keepdims = int(bool(cfg.get("keepdims", False)))
    if kw_tensors:
        raise _unsupported(layer, "is called with an explicit mask= of graph tensors")
    if kind == "GlobalAveragePooling1D" and masks[0] is not None:   # the mean over the unmasked steps
        mf = g.op("Unsqueeze", [g.op("Cast", [masks[0]], to=g.onnx.TensorProto.FLOAT), g.ints([2])])
        total = g.op("ReduceSum", [g.op("Mul", [xs[0], mf]), g.ints([1])], keepdims=keepdims)
        return [g.op("Div", [total, g.op("ReduceSum", [mf, g.ints([1])], keepdims=keepdims)])]
    op = "ReduceMean" if "Average" in kind else "ReduceMax"
    y = g.op(op, [xs[0]], axes=list(range(1, rank + 1)), keepdims=keepdims)
    if masks[0] is not None and getattr(layer, "supports_masking", False) and kind != "GlobalAveragePooling1D":
        g.masks[y] = masks[0]
    return [y]


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
    """ONNX's LayerNormalization normalises from `axis` to the last axis: Keras's axis -1, or a list of axes
    that runs to the end (such as [1, 2, 3] of a 4-D input)."""
    axis = cfg.get("axis", -1)
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    shape = tuple(layer.input_shape) if getattr(layer, "input_shape", None) is not None else None
    rank = len(shape) if shape is not None else None
    if axes == [-1]:
        first = -1
    elif rank is not None and sorted(a % rank for a in axes) == list(range(min(a % rank for a in axes), rank)):
        first = min(a % rank for a in axes)
    else:
        raise _unsupported(layer, f"normalises over axes {axis} (ONNX normalises a run of axes up to the last)")
    if cfg.get("rms_scaling"):
        raise _unsupported(layer, "uses rms_scaling")
    w = {v.name.split("/")[-1]: v.numpy() for v in layer.weights}
    norm_shape = next(iter(w.values())).shape if w else (None if shape is None else shape[first:])
    if norm_shape is None or any(d is None for d in norm_shape):
        raise _unsupported(layer, "normalises axes of unknown size")
    gamma = w.get("gamma", np.ones(norm_shape, np.float32))
    beta = w.get("beta", np.zeros(norm_shape, np.float32))
    return [g.op("LayerNormalization", [xs[0], g.const(gamma, f"{layer.name}/gamma"),
                                        g.const(beta, f"{layer.name}/beta")],
                 axis=first, epsilon=float(cfg.get("epsilon", 1e-3)))]


# ------------------------------------------------------------------------------------ merging
def _merge_masks(g, masks, how):
    """The output mask of a merge: AND (OR) of the inputs' masks that exist, as lamina's Merge layers."""
    present = [m for m in masks if m is not None]
    if not present:
        return None
    out = present[0]
    for m in present[1:]:
        out = g.op("And" if how == "and" else "Or", [out, m])
    return out


@exporter("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", masks=True)
def _export_merge(g, layer, xs, cfg, masks, call_kwargs, kw_tensors):
    kind = type(layer).__name__
    if kw_tensors:
        raise _unsupported(layer, "is called with an explicit mask= of graph tensors")
    every = all(m is not None for m in masks)
    if kind == "Subtract":
        y = g.op("Sub", [xs[0], xs[1]])
    elif kind in ("Add", "Average"):   # the values ignore the masks
        y = g.op({"Add": "Sum", "Average": "Mean"}[kind], list(xs))
    elif kind == "Multiply":           # lamina: a masked entry counts as 1; 0 where every input is masked
        y, union = None, None
        for x, m in zip(xs, masks):
            if m is not None:
                ms = _spread(g, m, x)
                x = g.op("Where", [ms, x, g.const(np.float32(1))])
                if every:
                    union = ms if union is None else g.op("Or", [union, ms])
            y = x if y is None else g.op("Mul", [y, x])
        if union is not None:
            y = g.op("Where", [union, y, g.const(np.float32(0))])
    else:                              # Maximum / Minimum: masked entries cannot win
        op = "Max" if kind == "Maximum" else "Min"
        y = xs[0]
        y_mask = None if masks[0] is None else _spread(g, masks[0], xs[0])
        for x, m in zip(xs[1:], masks[1:]):
            ms = None if m is None else _spread(g, m, x)
            if ms is not None:
                x = g.op("Where", [ms, x, y])
            if y_mask is not None:
                y = g.op("Where", [y_mask, y, x])
            y_mask = None if ms is None or y_mask is None else g.op("Or", [y_mask, ms])
            y = g.op(op, [y, x])
    # the output mask: OR when every input has one for Multiply/Maximum/Minimum, else AND of those present
    m = _merge_masks(g, masks, "or" if kind in ("Multiply", "Maximum", "Minimum") and every else "and")
    if m is not None:
        g.masks[y] = m
    return [y]


@exporter("Concatenate", masks=True)
def _export_concat(g, layer, xs, cfg, masks, call_kwargs, kw_tensors):
    if kw_tensors:
        raise _unsupported(layer, "is called with an explicit mask= of graph tensors")
    y = g.op("Concat", list(xs), axis=int(cfg.get("axis", -1)))
    present = [m for m in masks if m is not None]
    if present:
        if int(cfg.get("axis", -1)) not in (-1, 2) or len(present) < len(masks):
            # along the features an input without a mask makes every step unmasked: the mask would be all true
            if int(cfg.get("axis", -1)) not in (-1, 2):
                raise _unsupported(layer, "concatenates masked inputs along the time axis")
            return [y]
        g.masks[y] = _merge_masks(g, masks, "or")
    return [y]


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


def _rnn_node(g, layer, x_time_major, direction, parts, lens=None):
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
    ins = [x_time_major, W, R, B] + ([lens] if lens is not None else [])
    if kind == "LSTM":
        acts = [_GATE_ACTS[rec], _GATE_ACTS[act], _GATE_ACTS[act]] * n_dir
        outs = g.op("LSTM", ins, outputs=3, hidden_size=units, direction=direction,
                    activations=acts)
    elif kind == "GRU":   # Keras's reset_after is ONNX's linear_before_reset
        outs = g.op("GRU", ins, outputs=2, hidden_size=units, direction=direction,
                    activations=[_GATE_ACTS[rec], _GATE_ACTS[act]] * n_dir,
                    linear_before_reset=int(bool(cfg.get("reset_after", True))))
    else:
        outs = g.op("RNN", ins, outputs=2, hidden_size=units, direction=direction,
                    activations=[_GATE_ACTS[act]] * n_dir)
    return outs[0], outs[1], units   # Y (T, dirs, N, units), Y_h (dirs, N, units)


def _check_rnn(layer, xs, kw_tensors):
    cfg = layer.get_config()
    if len(xs) > 1 or set(kw_tensors) - {"mask"}:
        raise _unsupported(layer, "is called with an initial state")
    if cfg.get("stateful") or cfg.get("return_state"):
        raise _unsupported(layer, "is stateful or returns its state")
    if cfg.get("go_backwards"):
        raise _unsupported(layer, "runs backwards outside Bidirectional")
    return cfg


def _rnn_mask(g, masks, kw_tensors):
    """The (N, T) bool mask a recurrent layer applies: an explicit mask= argument, else its input's."""
    m = kw_tensors.get("mask")
    if isinstance(m, list):
        m = m[0]
    if m is not None:
        return g.op("Cast", [m], to=g.onnx.TensorProto.BOOL)
    return masks[0]


def _compact(g, x, m):
    """Move the unmasked steps of x (N, T, F) to the front, in order (a per-sample permutation).

    ONNX's recurrent nodes skip only the steps at the end (sequence_lens); Keras skips masked steps anywhere,
    carrying the state over them. Running the node on the compacted sequence with sequence_lens = the number
    of unmasked steps processes exactly the steps Keras processes, in the same order, for any mask (for the
    usual right padding the permutation is the identity). Returns (compacted x, cs, lens): cs (N, T) int64
    is the running count of unmasked steps (the state Keras holds after step t is the compacted output at
    cs - 1), lens (N,) int32 the counts (at least 1: a sample with no unmasked step runs one step whose
    outputs are never read)."""
    int64 = g.onnx.TensorProto.INT64
    mi = g.op("Cast", [m], to=int64)
    cs = g.op("CumSum", [mi, g.const(np.int64(1))])
    count = g.op("ReduceSum", [mi, g.ints([1])], keepdims=1)                     # (N, 1)
    one = g.const(np.int64(1))
    t = g.op("Sub", [g.op("CumSum", [g.op("Add", [g.op("Mul", [mi, g.const(np.int64(0))]), one]),
                                     g.const(np.int64(1))]), one])          # (N, T): the step numbers
    # an unmasked step goes to its rank among the unmasked ones, a masked step after all of them
    dest = g.op("Where", [m, g.op("Sub", [cs, one]), g.op("Sub", [g.op("Add", [count, t]), cs])])
    index = g.op("Expand", [g.op("Unsqueeze", [dest, g.ints([2])]), g.op("Shape", [x])])
    xc = g.op("ScatterElements", [x, index, x], axis=1)
    lens = g.op("Cast", [g.op("Max", [g.op("Squeeze", [count, g.ints([1])]), one])], to=g.onnx.TensorProto.INT32)
    return xc, cs, lens


def _uncompact(g, yc, cs, keep):
    """Outputs at the original steps: out[t] = yc[cs[t] - 1] where keep (N, T) is true, else 0."""
    index = g.op("Max", [g.op("Sub", [cs, g.const(np.int64(1))]), g.const(np.int64(0))])
    index = g.op("Expand", [g.op("Unsqueeze", [index, g.ints([2])]), g.op("Shape", [yc])])
    got = g.op("GatherElements", [yc, index], axis=1)
    return g.op("Where", [g.op("Unsqueeze", [keep, g.ints([2])]), got, g.const(np.float32(0))])


def _last_step(g, y):
    return g.op("Squeeze", [g.op("Slice", [y, g.ints([-1]), g.ints([np.iinfo(np.int64).max]), g.ints([1])]),
                            g.ints([1])])


def _masked_rnn(g, layer, x, m, direction, parts):
    """Keras's masked recurrence: one (N, T, units) sequence per direction (batch-major, original step order)
    and one (N, units) last output per direction. Forward: the output at step t is the state after the
    unmasked steps <= t (the carried state at masked steps, 0 before the first one). Backward: the state
    after the unmasked steps >= t, processed from the end."""
    xc, cs, lens = _compact(g, x, m)
    y, _, units = _rnn_node(g, layer, g.op("Transpose", [xc], perm=[1, 0, 2]), direction, parts, lens)
    y = g.op("Transpose", [y], perm=[1, 2, 0, 3])                    # (dirs, N, T, units), compacted steps
    started = g.op("Greater", [cs, g.const(np.int64(0))])
    seqs, lasts = [], []
    for d in range(len(parts)):
        yd = g.op("Squeeze", [g.op("Slice", [y, g.ints([d]), g.ints([d + 1]), g.ints([0])]), g.ints([0])])
        seqs.append((yd, cs, started))
        if d == 0:   # forward: the state after the last unmasked step
            lasts.append(_last_step(g, _uncompact(g, yd, cs, started)))
        else:        # backward: the state after processing every unmasked step, i.e. compacted step 0
            first = g.op("Squeeze", [g.op("Slice", [yd, g.ints([0]), g.ints([1]), g.ints([1])]), g.ints([1])])
            any_step = g.op("Greater", [_last_step(g, g.op("Unsqueeze", [cs, g.ints([2])])), g.const(np.int64(0))])
            lasts.append(g.op("Where", [any_step, first, g.const(np.float32(0))]))
    return seqs, lasts


@exporter("SimpleRNN", "LSTM", "GRU", masks=True)
def _export_rnn(g, layer, xs, cfg, masks, call_kwargs, kw_tensors):
    _check_rnn(layer, xs, kw_tensors)
    m = _rnn_mask(g, masks, kw_tensors)
    W, R, B, units = _rnn_weights(layer)
    if m is None:
        x = g.op("Transpose", [xs[0]], perm=[1, 0, 2])
        y, y_h, _ = _rnn_node(g, layer, x, "forward", [(W, R, B, units)])
        if cfg.get("return_sequences"):
            y = g.op("Squeeze", [y, g.ints([1])])
            return [g.op("Transpose", [y], perm=[1, 0, 2])]
        return [g.op("Squeeze", [y_h, g.ints([0])])]
    seqs, lasts = _masked_rnn(g, layer, xs[0], m, "forward", [(W, R, B, units)])
    if not cfg.get("return_sequences"):
        return [lasts[0]]
    yd, cs, started = seqs[0]
    keep = m if getattr(layer, "zero_output_for_mask", False) else started
    out = _uncompact(g, yd, cs, keep)
    g.masks[out] = m
    return [out]


def _merge_pair(g, layer, a, b, mode):
    if mode == "concat":
        return g.op("Concat", [a, b], axis=-1)
    if mode == "sum":
        return g.op("Add", [a, b])
    if mode == "mul":
        return g.op("Mul", [a, b])
    if mode == "ave":
        return g.op("Mul", [g.op("Add", [a, b]), g.const(np.float32(0.5))])
    raise _unsupported(layer, f"uses merge_mode={mode!r}")


@exporter("Bidirectional", masks=True)
def _export_bidirectional(g, layer, xs, cfg, masks, call_kwargs, kw_tensors):
    fwd, bwd = layer.forward_layer, layer.backward_layer
    if _rnn_kind(fwd) != _rnn_kind(bwd) or _rnn_kind(fwd) not in ("SimpleRNN", "LSTM", "GRU"):
        raise _unsupported(layer, "wraps layers ONNX cannot run as one bidirectional recurrent node")
    _check_rnn(fwd, xs, kw_tensors)
    mode = cfg.get("merge_mode", "concat")
    if mode is None:
        raise _unsupported(layer, "uses merge_mode=None (two outputs)")
    m = _rnn_mask(g, masks, kw_tensors)
    f, b = _rnn_weights(fwd), _rnn_weights(bwd)
    sequences = fwd.get_config().get("return_sequences")
    if m is not None:
        seqs, lasts = _masked_rnn(g, fwd, xs[0], m, "bidirectional", [f, b])
        if not sequences:
            return [_merge_pair(g, layer, lasts[0], lasts[1], mode)]
        # Bidirectional sets zero_output_for_mask on both layers: masked steps output zeros
        parts = [_uncompact(g, yd, cs, m) for yd, cs, _ in seqs]
        out = _merge_pair(g, layer, parts[0], parts[1], mode)
        g.masks[out] = m
        return [out]
    x = g.op("Transpose", [xs[0]], perm=[1, 0, 2])
    y, y_h, units = _rnn_node(g, fwd, x, "bidirectional", [f, b])
    if sequences:
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
    return [_merge_pair(g, layer, parts[0], parts[1], mode)]


# ---------------------------------------------------------------------------------- attention
_MOST_NEGATIVE = np.finfo(np.float32).min


def _project(g, x, kernel, bias, name):
    """x (N, T, dim) @ kernel (dim, heads, size) + bias -> (N, heads, T, size)."""
    dim, heads, size = kernel.shape
    y = g.op("MatMul", [x, g.const(kernel.reshape(dim, heads * size), f"{name}/kernel")])
    if bias is not None:
        y = g.op("Add", [y, g.const(bias.reshape(heads * size), f"{name}/bias")])
    y = g.op("Reshape", [y, g.ints([0, 0, heads, size])])
    return g.op("Transpose", [y], perm=[0, 2, 1, 3])


def _and(g, a, b):
    return b if a is None else (a if b is None else g.op("And", [a, b]))


def _causal(g, query, key):
    """Bool (1, Tq, Tk), true where query i may attend key j <= i (aligned at the top left, as Keras)."""
    tq = g.op("Shape", [query], start=1, end=2)
    tk = g.op("Shape", [key], start=1, end=2)
    ones = g.op("ConstantOfShape", [g.op("Concat", [tq, tk], axis=0)],
                value=g.helper.make_tensor("one", g.onnx.TensorProto.FLOAT, [1], [1.0]))
    tri = g.op("Cast", [g.op("Trilu", [ones], upper=0)], to=g.onnx.TensorProto.BOOL)
    return g.op("Unsqueeze", [tri, g.ints([0])])


def _as_bool(g, m):
    return None if m is None else g.op("Cast", [m], to=g.onnx.TensorProto.BOOL)


def _mha(g, layer, query, value, key=None, query_mask=None, value_mask=None, key_mask=None, attention_mask=None,
         causal=False):
    """Nodes of MultiHeadAttention (rank-3 inputs) with Keras's masks: the AND of query_mask (N, T),
    value_mask / key_mask (N, S), attention_mask (N, T, S) or (T, S) and the causal mask; a query row with
    no allowed key gets uniform weights (the masked scores all equal the most negative float, as lamina)."""
    cfg = layer.get_config()
    key = value if key is None else key
    ws = layer.get_weights()   # Keras's order: query, key, value, output; each kernel then bias
    use_bias = cfg.get("use_bias", True)
    step = 2 if use_bias else 1
    qk, kk, vk, ok = ws[0], ws[step], ws[2 * step], ws[3 * step]
    qb, kb, vb, ob = (ws[1], ws[3], ws[5], ws[7]) if use_bias else (None,) * 4
    if ok.ndim != 3:
        raise _unsupported(layer, "has a multi-axis output_shape")
    q = _project(g, query, qk, qb, f"{layer.name}/query")
    k = _project(g, key, kk, kb, f"{layer.name}/key")
    v = _project(g, value, vk, vb, f"{layer.name}/value")
    key_dim = qk.shape[-1]
    scores = g.op("MatMul", [g.op("Mul", [q, g.const(np.float32(1.0 / np.sqrt(key_dim)))]),
                             g.op("Transpose", [k], perm=[0, 1, 3, 2])])
    allowed = None
    if query_mask is not None:
        allowed = g.op("Unsqueeze", [_as_bool(g, query_mask), g.ints([2])])
    for m in (value_mask, key_mask):
        if m is not None:
            allowed = _and(g, allowed, g.op("Unsqueeze", [_as_bool(g, m), g.ints([1])]))
    if causal:
        allowed = _and(g, allowed, _causal(g, query, key))
    allowed = _and(g, allowed, attention_mask)
    if allowed is not None:
        allowed = g.op("Unsqueeze", [allowed, g.ints([1])])        # one mask for every head
        scores = g.op("Where", [allowed, scores, g.const(np.float32(_MOST_NEGATIVE))])
    weights = g.op("Softmax", [scores], axis=-1)
    out = g.op("MatMul", [weights, v])                         # (N, heads, T, value_dim)
    out = g.op("Transpose", [out], perm=[0, 2, 1, 3])
    heads, vdim = ok.shape[0], ok.shape[1]
    out = g.op("Reshape", [out, g.ints([0, 0, heads * vdim])])
    y = g.op("MatMul", [out, g.const(ok.reshape(heads * vdim, -1), f"{layer.name}/output/kernel")])
    if ob is not None:
        y = g.op("Add", [y, g.const(ob, f"{layer.name}/output/bias")])
    return y


@exporter("MultiHeadAttention", masks=True)
def _export_mha(g, layer, xs, cfg, masks, call_kwargs, kw_tensors):
    if call_kwargs.get("return_attention_scores"):
        raise _unsupported(layer, "is called with return_attention_scores")
    if any(len(t.shape) != 3 for node in layer._inbound_nodes for t in node.input_tensors[:len(xs)]):
        raise _unsupported(layer, "attends over the positions of inputs of rank above 3")
    if set(kw_tensors) - {"query_mask", "value_mask", "key_mask", "attention_mask"}:
        raise _unsupported(layer, f"is called with tensors for {sorted(kw_tensors)}")
    query, value = xs[0], xs[1] if len(xs) > 1 else xs[0]
    key = xs[2] if len(xs) > 2 else None
    key_is_value = key is None or key == value
    mask_of = lambda i: masks[i] if i < len(masks) else None  # noqa: E731
    qm = kw_tensors.get("query_mask", mask_of(0))
    vm = kw_tensors.get("value_mask", mask_of(1) if len(xs) > 1 else mask_of(0))
    km = kw_tensors.get("key_mask", None if key_is_value else mask_of(2))
    y = _mha(g, layer, query, value, None if key_is_value else key, qm, vm, km,
             _as_bool(g, kw_tensors.get("attention_mask")), bool(call_kwargs.get("use_causal_mask")))
    if masks and masks[0] is not None:
        g.masks[y] = masks[0]      # the query's mask travels on (Keras)
    return [y]


@exporter("Attention", "AdditiveAttention", masks=True)
def _export_attention(g, layer, xs, cfg, masks, call_kwargs, kw_tensors):
    if call_kwargs.get("return_attention_scores"):
        raise _unsupported(layer, "is called with return_attention_scores")
    if kw_tensors:
        raise _unsupported(layer, "is called with an explicit mask= of graph tensors")
    kind = type(layer).__name__
    q, v = xs[0], xs[1]
    k = xs[2] if len(xs) > 2 else v
    q_mask, v_mask = (masks + [None, None])[:2]
    weights = {w.name.split("/")[-1]: w.numpy() for w in layer.weights}
    scale = weights.get("scale")
    allowed = None
    if v_mask is not None:
        allowed = g.op("Unsqueeze", [v_mask, g.ints([1])])                  # (N, 1, Tv)
    if call_kwargs.get("use_causal_mask"):
        allowed = _and(g, allowed, _causal(g, q, k))
    if kind == "Attention" and cfg.get("score_mode", "dot") == "dot":
        qs = q if scale is None else g.op("Mul", [q, g.const(np.float32(scale))])
        scores = g.op("MatMul", [qs, g.op("Transpose", [k], perm=[0, 2, 1])])
        if allowed is not None:   # lamina's fused attention: most negative float, uniform empty rows
            scores = g.op("Where", [allowed, scores, g.const(np.float32(_MOST_NEGATIVE))])
    else:
        z = g.op("Add", [g.op("Unsqueeze", [q, g.ints([2])]), g.op("Unsqueeze", [k, g.ints([1])])])  # (N,Tq,Tv,d)
        if kind == "AdditiveAttention":
            z = g.op("Tanh", [z])
            if scale is not None:
                z = g.op("Mul", [z, g.const(scale.astype(np.float32), f"{layer.name}/scale")])
            scores = g.op("ReduceSum", [z, g.ints([-1])], keepdims=0)
        else:   # concat: c * sum(tanh(scale * (q + k)))
            if scale is not None:
                z = g.op("Mul", [z, g.const(np.float32(scale))])
            scores = g.op("ReduceSum", [g.op("Tanh", [z]), g.ints([-1])], keepdims=0)
            scores = g.op("Mul", [scores, g.const(np.float32(weights["concat_score_weight"]))])
        if allowed is not None:   # Keras: masked scores minus 1e9
            penalty = g.op("Mul", [g.op("Cast", [g.op("Not", [allowed])], to=g.onnx.TensorProto.FLOAT),
                                   g.const(np.float32(1e9))])
            scores = g.op("Sub", [scores, penalty])
    out = g.op("MatMul", [g.op("Softmax", [scores], axis=-1), v])
    if q_mask is not None:
        out = g.op("Mul", [out, g.op("Unsqueeze", [g.op("Cast", [q_mask], to=g.onnx.TensorProto.FLOAT),
                                                   g.ints([2])])])
        g.masks[out] = q_mask
    return [out]


# -------------------------------------------------------------------------------- transformers
def _sub(g, layer, x):
    """A sublayer of a composite layer (LayerNormalization, Dense) on x."""
    return EXPORTERS[type(layer).__name__](g, layer, [x], layer.get_config())[0]


def _padding_and_attention(g, seq_mask, padding_mask, attention_mask):
    """keras_hub's merge: the (N, 1, T) padding mask (given, else the sequence's mask) AND attention_mask."""
    pad = padding_mask if padding_mask is not None else seq_mask
    mask = None if pad is None else g.op("Unsqueeze", [_as_bool(g, pad), g.ints([1])])
    return _and(g, mask, _as_bool(g, attention_mask))


def _transformer_ffn(g, layer, x):
    residual = x
    if layer.normalize_first:
        x = _sub(g, layer._feedforward_layer_norm, x)
    x = _sub(g, layer._feedforward_output_dense, _sub(g, layer._feedforward_intermediate_dense, x))
    x = g.op("Add", [x, residual])
    if not layer.normalize_first:
        x = _sub(g, layer._feedforward_layer_norm, x)
    return x


def _transformer_attention_block(g, layer, mha, norm, x, x_mask, value, value_mask, mask, causal=False):
    """Residual attention sublayer: pre-norm x + MHA(LN(x)), or post-norm LN(x + MHA(x)). The query keeps
    x's Keras mask through the pre-norm (LayerNormalization passes masks on), so MHA ANDs it in as lamina."""
    residual = x
    if layer.normalize_first:
        x = _sub(g, norm, x)
        if value is None:
            value = x
    elif value is None:
        value = x
    y = _mha(g, mha, x, value, None, x_mask, value_mask, None, mask, causal)
    y = g.op("Add", [y, residual])
    if not layer.normalize_first:
        y = _sub(g, norm, y)
    return y


@exporter("TransformerEncoder", masks=True)
def _export_encoder(g, layer, xs, cfg, masks, call_kwargs, kw_tensors):
    if call_kwargs.get("return_attention_scores"):
        raise _unsupported(layer, "is called with return_attention_scores")
    if set(kw_tensors) - {"padding_mask", "attention_mask"}:
        raise _unsupported(layer, f"is called with tensors for {sorted(kw_tensors)}")
    x, x_mask = xs[0], masks[0]
    mask = _padding_and_attention(g, x_mask, kw_tensors.get("padding_mask"), kw_tensors.get("attention_mask"))
    y = _transformer_attention_block(g, layer, layer._self_attention_layer, layer._self_attention_layer_norm,
                                     x, x_mask, None, x_mask, mask)
    y = _transformer_ffn(g, layer, y)
    if x_mask is not None:
        g.masks[y] = x_mask
    return [y]


@exporter("TransformerDecoder", masks=True)
def _export_decoder(g, layer, xs, cfg, masks, call_kwargs, kw_tensors):
    if call_kwargs.get("return_attention_scores"):
        raise _unsupported(layer, "is called with return_attention_scores")
    allowed_kw = {"decoder_padding_mask", "decoder_attention_mask", "encoder_padding_mask", "encoder_attention_mask"}
    if set(kw_tensors) - allowed_kw:
        raise _unsupported(layer, f"is called with tensors for {sorted(kw_tensors)}")
    x, x_mask = xs[0], masks[0]
    enc, enc_mask = (xs[1], masks[1]) if len(xs) > 1 else (None, None)
    if (enc is not None) != (layer._cross_attention_layer is not None):
        raise _unsupported(layer, "is called differently from how it was built (with/without encoder_sequence)")
    mask = _padding_and_attention(g, x_mask, kw_tensors.get("decoder_padding_mask"),
                                  kw_tensors.get("decoder_attention_mask"))
    causal = call_kwargs.get("use_causal_mask", True)
    y = _transformer_attention_block(g, layer, layer._self_attention_layer, layer._self_attention_layer_norm,
                                     x, x_mask, None, x_mask, mask, causal=bool(causal))
    if enc is not None:
        cmask = _padding_and_attention(g, enc_mask, kw_tensors.get("encoder_padding_mask"),
                                       kw_tensors.get("encoder_attention_mask"))
        # the residual sum has no Keras mask: the cross-attention query is unmasked
        y = _transformer_attention_block(g, layer, layer._cross_attention_layer, layer._cross_attention_layer_norm,
                                         y, None, enc, enc_mask, cmask)
    y = _transformer_ffn(g, layer, y)
    if x_mask is not None:
        g.masks[y] = x_mask
    return [y]


def _position_table(g, layer, table, x, start):
    """Rows start .. start + T of a (L, dim) table, T = x's axis 1 (x: ids (N, T) or vectors (N, T, dim))."""
    steps = g.op("Shape", [x], start=1, end=2)
    return g.op("Slice", [g.const(table, f"{layer.name}/positions"), g.ints([start]),
                          g.op("Add", [steps, g.ints([start])]), g.ints([0])])


@exporter("SinusoidalPositionEncoding")
def _export_sinusoidal(g, layer, xs, cfg):
    """sin(p f_i) at even features i, cos at odd ones, f_i = max_wavelength^(-2 floor(i/2) / dim), for the
    positions p = start .. start + T - 1 of x (N, T, dim), broadcast to x's shape."""
    dim = None
    for node in layer._inbound_nodes:
        dim = node.input_tensors[0].shape[-1]
    if dim is None:
        raise _unsupported(layer, "has an input with an unknown feature size")
    i = np.arange(dim)
    freq = np.power(1.0 / float(cfg.get("max_wavelength", 10000)), 2 * (i // 2) / dim)
    ones = g.op("ConstantOfShape", [g.op("Shape", [xs[0]], start=1, end=2)],
                value=g.helper.make_tensor("one", g.onnx.TensorProto.FLOAT, [1], [1.0]))
    pos = g.op("Sub", [g.op("CumSum", [ones, g.const(np.int64(0))]), g.const(np.float32(1))])
    angles = g.op("Mul", [g.op("Unsqueeze", [pos, g.ints([1])]), g.const(freq.astype(np.float32))])   # (T, dim)
    table = g.op("Where", [g.const(i % 2 == 0), g.op("Sin", [angles]), g.op("Cos", [angles])])
    return [g.op("Expand", [table, g.op("Shape", [xs[0]])])]


@exporter("PositionEmbedding", masks=True)
def _export_position_embedding(g, layer, xs, cfg, masks, call_kwargs, kw_tensors):
    start = call_kwargs.get("start_index", 0)
    if kw_tensors or not isinstance(start, (int, np.integer)):
        raise _unsupported(layer, "is called with a tensor start_index")
    rows = _position_table(g, layer, layer.get_weights()[0], xs[0], int(start))
    y = g.op("Expand", [rows, g.op("Shape", [xs[0]])])
    if masks[0] is not None:
        g.masks[y] = masks[0]
    return [y]


def _mask_zero(g, ids):
    return g.op("Not", [g.op("Equal", [ids, g.const(np.int64(0))])])


@exporter("Embedding", masks=True)
def _export_embedding(g, layer, xs, cfg, masks, call_kwargs, kw_tensors):
    if getattr(layer, "lora_enabled", False):
        table = np.asarray(layer.embeddings.numpy(), np.float32)
    else:
        table = layer.get_weights()[0]
    ids = g.op("Cast", [xs[0]], to=g.onnx.TensorProto.INT64)
    y = g.op("Gather", [g.const(table, f"{layer.name}/embeddings"), ids], axis=0)
    if cfg.get("mask_zero"):
        g.masks[y] = _mask_zero(g, ids)
    return [y]


@exporter("TokenAndPositionEmbedding", masks=True)
def _export_token_and_position(g, layer, xs, cfg, masks, call_kwargs, kw_tensors):
    start = call_kwargs.get("start_index", 0)
    if kw_tensors or not isinstance(start, (int, np.integer)):
        raise _unsupported(layer, "is called with a tensor start_index")
    ids = g.op("Cast", [xs[0]], to=g.onnx.TensorProto.INT64)
    tokens = g.op("Gather", [g.const(layer.token_embedding.get_weights()[0], f"{layer.name}/token_embeddings"),
                             ids], axis=0)
    y = g.op("Add", [tokens, _position_table(g, layer, layer.position_embedding.get_weights()[0], xs[0],
                                               int(start))])
    if layer.mask_zero:
        g.masks[y] = _mask_zero(g, ids)
    return [y]


@exporter("Masking", masks=True)
def _export_masking(g, layer, xs, cfg, masks, call_kwargs, kw_tensors):
    keep = g.op("Not", [g.op("Equal", [xs[0], g.const(np.float32(cfg.get("mask_value", 0.0)))])])
    keep = g.op("Cast", [g.op("ReduceMax", [g.op("Cast", [keep], to=g.onnx.TensorProto.INT32)], axes=[-1],
                              keepdims=0)], to=g.onnx.TensorProto.BOOL)
    y = g.op("Mul", [xs[0], g.op("Unsqueeze", [g.op("Cast", [keep], to=g.onnx.TensorProto.FLOAT), g.ints([2])])])
    g.masks[y] = keep
    return [y]


# ------------------------------------------------------------------------------------ the walk
def _reads_mask(layer):
    """Whether the layer's output values depend on a mask it receives (its call takes one)."""
    import inspect
    if type(layer).__name__ in ("BatchNormalization",):   # the mask only matters to its training statistics
        return False
    return "mask" in inspect.signature(layer.call).parameters


def _default_output_mask(g, layer, outs, masks, list_input):
    """lamina's rule for layers whose exporter does not set masks: a layer that supports masking and keeps
    Layer.compute_mask passes its one input's mask on; masks of list inputs and other layers' stop."""
    from ..layers.layer import Layer
    present = [m for m in masks if m is not None]
    if not present:
        return
    if type(layer).compute_mask is not Layer.compute_mask and type(layer).__name__ not in _MASK_STOPS:
        raise _unsupported(layer, "receives a mask and computes its own output mask, which the ONNX export "
                                  "cannot follow")
    if len(outs) == 1 and not list_input and getattr(layer, "supports_masking", False) and \
            type(layer).compute_mask is Layer.compute_mask:
        g.masks[outs[0]] = masks[0]


_MASK_STOPS = {"GlobalAveragePooling1D", "Dot"}   # compute_mask returns None


def _export_layer(g, layer, xs, call_kwargs=None, kw_tensors=None, list_input=False):
    from ..models.model import Model
    call_kwargs, kw_tensors = call_kwargs or {}, kw_tensors or {}
    masks = [g.masks.get(x) for x in xs]
    if isinstance(layer, Model):
        if kw_tensors:
            raise _unsupported(layer, f"is called with tensors for {sorted(kw_tensors)}")
        return _export_model_body(g, layer, xs)
    kind = type(layer).__name__
    fn = EXPORTERS.get(kind)
    if fn is None:
        raise NotImplementedError(f"ONNX export: layer '{layer.name}' ({kind}) has no ONNX "
                                  f"exporter. Supported: {', '.join(sorted(EXPORTERS))}.")
    cfg = layer.get_config()
    if kind in _MASK_AWARE:
        return fn(g, layer, xs, cfg, masks=masks, call_kwargs=call_kwargs, kw_tensors=kw_tensors)
    if kw_tensors:
        raise _unsupported(layer, f"is called with tensors for {sorted(kw_tensors)}")
    extra = {k: v for k, v in call_kwargs.items() if k not in ("training", "mask") and v not in (None, False, 0)}
    if extra:
        raise _unsupported(layer, f"is called with {', '.join(f'{k}={v!r}' for k, v in extra.items())}, which its "
                                  "ONNX export does not take")
    if any(m is not None for m in masks) and _reads_mask(layer):
        raise _unsupported(layer, "receives a mask (from Embedding(mask_zero=True) or Masking), which its ONNX "
                                  "export cannot apply: exporting it would read the padding as data")
    outs = fn(g, layer, xs, cfg)
    _default_output_mask(g, layer, outs, masks, list_input)
    return outs


def _export_model_body(g, model, inputs):
    """Nodes of model applied to the ONNX tensors `inputs` (a list, in the model's flat input order)."""
    from ..layers.core import InputLayer
    from ..layers.layer import KerasTensor, _nest_flatten
    nodes = getattr(model, "_nodes", None)
    if nodes is None:  # Sequential
        x = inputs
        for layer in model.layers:
            if isinstance(layer, InputLayer):
                continue
            x = _export_layer(g, layer, x)
        return x
    names = {id(kt): name for kt, name in zip(model._flat_inputs, inputs)}
    for node in nodes:
        xs = [names[id(t)] for t in _nest_flatten(node.call_args) if isinstance(t, KerasTensor)]
        kwargs, kw_tensors = {}, {}
        for k, v in (node.call_kwargs or {}).items():
            flat = [t for t in _nest_flatten(v) if isinstance(t, KerasTensor)]
            if flat:
                named = [names[id(t)] for t in flat]
                kw_tensors[k] = named if isinstance(v, (list, tuple)) else named[0]
            else:
                kwargs[k] = v
        list_input = bool(node.call_args) and isinstance(node.call_args[0], (list, tuple))
        outs = _export_layer(g, node.layer, xs, kwargs, kw_tensors, list_input)
        for kt, name in zip(node.output_tensors, outs):
            names[id(kt)] = name
    return [names[id(kt)] for kt in model._flat_outputs]


def _onnx_type(dtype, onnx):
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return onnx.TensorProto.BOOL
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
