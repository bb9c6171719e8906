"""``keras.ops.nn``: activations, convolution and pooling, normalisation, losses and attention as functions.

Each function takes Keras's arguments (names, order, defaults) and returns a lamina Tensor,
differentiable wherever Keras's is. They are thin: the arithmetic lives in the kernel modules
(activations.py, losses.py, convolution.py, normalization.py, attention.py) and, for what those lack
(new activations, 3-D and grouped/depthwise convolution, 3-D pooling, adaptive pooling, unfold/fold,
CTC), in nn_kernels.py.

Inputs convert as ``keras.ops.convert_to_tensor`` does (Python floats -> floatx, Python ints -> int32,
NumPy arrays keep their dtype). Activations of integer or bool inputs give floatx (relu, relu6 and
hard_tanh and threshold keep integers, as in Keras), where Keras's torch backend raises for lack of an integer kernel.
Images are channels-last unless ``data_format="channels_first"``.
"""
import warnings

import numpy as np

from .. import backend
from ..dtypes import result_type, standardize_dtype
from ..tensor import Tensor
from . import activations as _act
from . import attention as _attn
from . import convolution as _conv
from . import losses as _loss
from . import manipulation as _s
from . import math as _m
from . import normalization as _norm
from . import nn_kernels as _k

__all__ = [
    "adaptive_average_pool", "adaptive_max_pool", "average_pool", "batch_normalization", "binary_crossentropy",
    "categorical_crossentropy", "celu", "conv", "conv_transpose", "ctc_decode", "ctc_loss", "depth_to_space",
    "depthwise_conv", "dot_product_attention", "elu", "fold", "gelu", "glu", "hard_shrink", "hard_sigmoid",
    "hard_silu", "hard_swish", "hard_tanh", "layer_normalization", "leaky_relu", "log_sigmoid", "log_softmax",
    "max_pool", "moments", "multi_hot", "normalize", "one_hot", "polar", "psnr", "relu", "relu6",
    "rms_normalization", "selu", "separable_conv", "sigmoid", "silu", "soft_shrink", "softmax", "softplus",
    "softsign", "space_to_depth", "sparse_categorical_crossentropy", "sparse_plus", "sparse_sigmoid",
    "sparsemax", "squareplus", "swish", "tanh_shrink", "threshold", "unfold",
]

_EPSILON = 1e-7  # keras.backend.epsilon()


# ----------------------------------------------------------------------------- conversion helpers
def _tensor(x, dtype=None):
    """x as a Tensor, converted as keras.ops.convert_to_tensor (Python int -> int32, float -> floatx)."""
    if isinstance(x, Tensor):
        t = x
    elif isinstance(x, (bool, np.bool_)):
        t = Tensor(np.asarray(x))
    elif isinstance(x, int):
        t = Tensor(np.asarray(x, np.int32))
    elif isinstance(x, float):
        t = Tensor(np.asarray(x, backend.floatx()))
    elif isinstance(x, np.ndarray) or backend.is_cupy_array(x):
        t = Tensor(x)
    else:
        a = np.asarray(x)
        if a.dtype == np.float64 and not isinstance(x, np.generic):
            a = a.astype(backend.floatx())
        elif a.dtype == np.int64 and not isinstance(x, np.generic):
            a = a.astype(np.int32)
        t = Tensor(a)
    if dtype is not None and standardize_dtype(t.dtype) != standardize_dtype(dtype):
        t = _m.cast(t, standardize_dtype(dtype))
    return t


def _is_float(t):
    return t.dtype.kind == "f" or t.dtype.name == "bfloat16"   # ml_dtypes' bfloat16 has kind 'V'


def _float(x):
    """x as a float Tensor: floats keep their dtype, integers and bools become floatx."""
    t = _tensor(x)
    return t if _is_float(t) else Tensor(t.data.astype(backend.floatx()))


def _int_out(fn, *inputs):
    """Integer inputs (all of them): Keras's torch backend computes in their integer dtype. Here the result is
    computed in float64 and cast back (truncating, as torch's cast); not differentiable. None otherwise."""
    ts = [_tensor(x) for x in inputs]
    if not all(t.dtype.kind in "iu" for t in ts):
        return None
    y = fn(*(Tensor(t.data.astype(np.float64)) for t in ts))
    return Tensor(y.data.astype(ts[0].dtype))


def _like(x, ref):
    """x as a Tensor of ref's float dtype (a Tensor that needs a gradient is cast differentiably)."""
    t = _tensor(x)
    return t if t.dtype == ref.dtype else _m.cast(t, ref.dtype)


def _xp(t):
    return backend.get_array_module(t.data)


def _ints(x, like):
    """An integer array on like's device (labels, lengths)."""
    a = x.data if isinstance(x, Tensor) else x
    xp = _xp(like)
    a = a if backend.is_cupy_array(a) else np.asarray(a)
    if xp is not np and not backend.is_cupy_array(a):
        a = backend.to_device(a, xp)
    return a.astype(np.int64, copy=False)


def _axis(axis, ndim, op):
    if not -ndim <= axis < max(ndim, 1):
        raise ValueError(f"{op}: axis {axis} is out of range for an input of rank {ndim}.")
    return axis % max(ndim, 1)


# ----------------------------------------------------------------------------- activations
def relu(x):
    """Rectified linear unit: max(x, 0). Integers stay integers. Backward: gy where x > 0."""
    x = _tensor(x)
    if not _is_float(x):
        return Tensor(_xp(x).maximum(x.data, 0).astype(x.dtype))
    return _act.relu(x)


def relu6(x):
    """min(max(x, 0), 6). Integers stay integers. Backward: gy inside (0, 6)."""
    x = _tensor(x)
    if not _is_float(x):
        return Tensor(_xp(x).clip(x.data, 0, 6).astype(x.dtype))
    return _act.relu6(x)


def sigmoid(x):
    """Logistic sigmoid 1 / (1 + e^-x). Backward: gy y (1 - y)."""
    return _act.sigmoid(_float(x))


def sparse_sigmoid(x):
    """0 for x <= -1, (x + 1) / 2 for -1 < x < 1, 1 for x >= 1. Backward: gy / 2 inside (-1, 1)."""
    return _k.SparseSigmoid.apply(_float(x))


def softplus(x):
    """log(1 + e^x), computed without overflow. Backward: gy sigmoid(x)."""
    return _act.softplus(_float(x))


def softsign(x):
    """x / (1 + |x|). Backward: gy / (1 + |x|)^2."""
    return _act.softsign(_float(x))


def soft_shrink(x, threshold=0.5):
    """x - threshold for x > threshold, x + threshold for x < -threshold, else 0."""
    return _k.SoftShrink.apply(_float(x), threshold=float(threshold))


def sparse_plus(x):
    """0 for x <= -1, (x + 1)^2 / 4 for -1 < x < 1, x for x >= 1. Backward: gy (x + 1) / 2 inside."""
    return _k.SparsePlus.apply(_float(x))


def silu(x):
    """x sigmoid(x) (swish). Backward: gy (s + x s (1 - s))."""
    return _act.silu(_float(x))


def swish(x):
    """x sigmoid(x): the same function as silu."""
    return silu(x)


def squareplus(x, b=4):
    """(x + sqrt(x^2 + b)) / 2, a smooth relu. Backward: gy (1 + x / sqrt(x^2 + b)) / 2."""
    return _k.Squareplus.apply(_float(x), b=float(b.item() if isinstance(b, Tensor) else b))


def log_sigmoid(x):
    """log(sigmoid(x)) = -softplus(-x), without overflow. Backward: gy sigmoid(-x)."""
    return _k.LogSigmoid.apply(_float(x))


def leaky_relu(x, negative_slope=0.2):
    """x for x > 0, negative_slope x otherwise."""
    return _act.leaky_relu(_float(x), negative_slope=float(negative_slope))


def hard_sigmoid(x):
    """relu6(x + 3) / 6. Backward: gy / 6 inside (-3, 3)."""
    return _act.hard_sigmoid(_float(x))


def hard_silu(x):
    """x relu6(x + 3) / 6 (hard swish)."""
    return _act.hard_silu(_float(x))


def hard_swish(x):
    """x relu6(x + 3) / 6: the same function as hard_silu."""
    return hard_silu(x)


def elu(x, alpha=1.0):
    """x for x > 0, alpha (e^x - 1) otherwise."""
    return _act.elu(_float(x), alpha=float(alpha))


def selu(x):
    """scale * elu(x, alpha) with the self-normalising constants (1.0507..., 1.6732...)."""
    return _act.selu(_float(x))


def gelu(x, approximate=True):
    """x Phi(x), by default with the tanh approximation (Keras's ops.gelu default approximate=True)."""
    return _act.gelu(_float(x), approximate=bool(approximate))


def celu(x, alpha=1.0):
    """max(x, 0) + min(0, alpha (e^(x / alpha) - 1)). Backward: gy for x > 0, gy e^(x / alpha) otherwise."""
    return _k.CELU.apply(_float(x), alpha=float(alpha))


def glu(x, axis=-1):
    """Gated linear unit: a * sigmoid(b), where a and b are the two halves of x along axis."""
    x = _float(x)
    ax = _axis(axis, x.ndim, "glu")
    n = x.shape[ax]
    if n % 2:
        raise ValueError(f"glu: axis {axis} must have an even size, got shape {x.shape}.")
    a = _s.getitem(x, (slice(None),) * ax + (slice(0, n // 2),))
    b = _s.getitem(x, (slice(None),) * ax + (slice(n // 2, n),))
    return a * _act.sigmoid(b)


def tanh_shrink(x):
    """x - tanh(x). Backward: gy tanh(x)^2."""
    return _k.TanhShrink.apply(_float(x))


def hard_tanh(x):
    """clip(x, -1, 1). Integers stay integers. Backward: gy inside (-1, 1)."""
    x = _tensor(x)
    if not _is_float(x):
        return Tensor(_xp(x).clip(x.data, -1, 1).astype(x.dtype))
    return _k.HardTanh.apply(x)


def hard_shrink(x, threshold=0.5):
    """x where |x| > threshold, else 0."""
    return _k.HardShrink.apply(_float(x), threshold=float(threshold))


def threshold(x, threshold, default_value):
    """x where x > threshold, else default_value. Integers stay integers. Backward: gy where x > threshold."""
    x = _tensor(x)
    if not _is_float(x):
        return Tensor(_xp(x).where(x.data > threshold, x.data, default_value).astype(x.dtype))
    return _k.Threshold.apply(_float(x), threshold=float(threshold), default_value=float(default_value))


def softmax(x, axis=-1):
    """exp(x) / sum(exp(x)) along axis (an int, a tuple of axes, or None for all).

    Backward: y (gy - sum(gy y))."""
    x = _float(x)
    if isinstance(axis, list):
        axis = tuple(axis)
    if isinstance(axis, (int, np.integer)) and -x.ndim <= axis < x.ndim and x.shape[axis] == 1:
        warnings.warn(f"You are using a softmax over axis {axis} of a tensor of shape {x.shape}. This axis has "
                      "size 1. The softmax operation will always return the value 1, which is likely not what you "
                      "intended. Did you mean to use a sigmoid instead?", stacklevel=2)
    return _act.softmax(x, axis=axis)


def log_softmax(x, axis=-1):
    """x - log(sum(exp(x))) along axis (an int, a tuple of axes, or None for all).

    Backward: gy - softmax(x) sum(gy)."""
    x = _float(x)
    if isinstance(axis, list):
        axis = tuple(axis)
    return _act.log_softmax(x, axis=axis)


def sparsemax(x, axis=-1):
    """Projection onto the probability simplex: max(x - tau, 0) summing to 1 along axis.

    Backward: on the support S, gy - mean_S(gy); 0 off it."""
    x = _float(x)
    return _k.Sparsemax.apply(x, axis=_axis(axis, x.ndim, "sparsemax"))


# ----------------------------------------------------------------------------- spatial helpers
def _data_format(data_format):
    df = "channels_last" if data_format is None else str(data_format).lower()
    if df not in ("channels_last", "channels_first"):
        raise ValueError(f"data_format must be 'channels_last' or 'channels_first'. Received: {data_format!r}")
    return df


def _to_last(x):
    return _s.transpose(x, (0,) + tuple(range(2, x.ndim)) + (1,))


def _to_first(x):
    return _s.transpose(x, (0, x.ndim - 1) + tuple(range(1, x.ndim - 1)))


def _spatial(x, op):
    d = x.ndim - 2
    if d not in (1, 2, 3):
        raise ValueError(f"{op}: inputs must have rank 3, 4 or 5 (1-D, 2-D or 3-D, with batch and channel "
                         f"axes); received shape {x.shape}.")
    return d


def _channels_last(fn, x, data_format, op):
    """Run fn on x moved to channels-last and move the result back."""
    cf = _data_format(data_format) == "channels_first"
    _spatial(x, op)
    y = fn(_to_last(x) if cf else x)
    return _to_first(y) if cf else y


# ----------------------------------------------------------------------------- pooling
def _pool(x, pool_size, strides, padding, op, kernel_1d, kernel_2d, kernel_nd):
    d = x.ndim - 2
    if d == 1:
        return kernel_1d(x, pool_size, strides, padding)
    if d == 2:
        return kernel_2d(x, pool_size, strides, padding)
    x, pool, stride, pads = _conv._pool_args(op, x, 3, pool_size, strides, padding)
    return kernel_nd.apply(x, pool=pool, stride=stride, pads=pads)


def max_pool(inputs, pool_size, strides=None, padding="valid", data_format=None):
    """Max over each pool_size window (1-D, 2-D or 3-D).

    strides default to pool_size; 'same' pads with -inf by TensorFlow's rule. Integers stay integers.
    Backward: gy to the first maximum of each window."""
    y = _int_out(lambda t: max_pool(t, pool_size, strides, padding, data_format), inputs)
    if y is not None:
        return y
    x = _float(inputs)
    return _channels_last(lambda t: _pool(t, pool_size, strides, padding, "max_pool", _conv.max_pool1d,
                                          _conv.max_pool2d, _k.MaxPoolND), x, data_format, "max_pool")


def average_pool(inputs, pool_size, strides=None, padding="valid", data_format=None):
    """Mean over each pool_size window (1-D, 2-D or 3-D), of its real entries only under 'same' padding.

    strides default to pool_size; 'same' pads by TensorFlow's rule and a window averages only its real
    (non-padded) entries, as TensorFlow and JAX do (Keras 3.15's torch backend, with asymmetric padding
    of two or more on a side, averages edge-replicated values instead).
    Backward: gy / count to each entry of the window."""
    x = _float(inputs)
    return _channels_last(lambda t: _pool(t, pool_size, strides, padding, "average_pool", _conv.avg_pool1d,
                                          _conv.avg_pool2d, _k.AvgPoolND), x, data_format, "average_pool")


def _output_size(output_size, d, op):
    if isinstance(output_size, (int, np.integer)):
        return (int(output_size),) * d
    out = tuple(int(v) for v in output_size)
    if len(out) != d or any(v < 1 for v in out):
        raise ValueError(f"{op}: output_size must be a positive int or a tuple of {d} positive ints. "
                         f"Received: output_size={output_size!r}")
    return out


def _along(x, axis, fn):
    """fn applied with ``axis`` moved last, then moved back."""
    perm = tuple(i for i in range(x.ndim) if i != axis) + (axis,)
    inv = tuple(int(i) for i in np.argsort(perm))
    return _s.transpose(fn(_s.transpose(x, perm)), inv)


def adaptive_average_pool(inputs, output_size, data_format=None):
    """Average over torch's adaptive windows [floor(i L / o), ceil((i + 1) L / o)) on each spatial axis.

    Separable: one (L, o) averaging matrix per axis, applied as a matmul (backward: its transpose)."""
    x = _float(inputs)
    # 0 * inf is NaN: with a NaN or inf in the input, the matmul would spread it to every window of its row,
    # so those inputs gather each window instead (a NaN or inf stays in the windows that hold it, as torch's)
    finite = bool(_xp(x).isfinite(x.data).all())

    def run(t):
        d = t.ndim - 2
        for a, o in enumerate(_output_size(output_size, d, "adaptive_average_pool")):
            n = t.shape[1 + a]
            start, end = _k.adaptive_bounds(n, o)
            if not finite:
                t = _along(t, 1 + a, lambda u, start=start, end=end: _window_means(u, start, end))
                continue
            pos = np.arange(n)[:, None]
            mat = ((pos >= start) & (pos < end)) / (end - start).astype(np.float64)
            mat = Tensor(backend.to_device(mat.astype(t.dtype), _xp(t)))
            t = _along(t, 1 + a, lambda u: _m.matmul(u, mat))
        return t
    return _channels_last(run, x, data_format, "adaptive_average_pool")


def _window_means(u, start, end):
    """Means of u's last axis over the windows [start[i], end[i]): (..., L) -> (..., o), each window gathered
    (o, width) and its padding left out by a select, not a product."""
    width = int((end - start).max())
    idx = start[:, None] + np.arange(width)
    inside = idx < end[:, None]
    g = _s.getitem(u, (Ellipsis, np.minimum(idx, u.shape[-1] - 1)))            # (..., o, width)
    g = _m.where(backend.to_device(inside, _xp(u)), g, 0.0)
    return _m.sum(g, axis=-1) / Tensor(backend.to_device((end - start).astype(u.dtype), _xp(u)))


def adaptive_max_pool(inputs, output_size, data_format=None):
    """Max over torch's adaptive windows [floor(i L / o), ceil((i + 1) L / o)) on each spatial axis.

    Separable: one axis at a time. Backward: gy to the first maximum of each window."""
    x = _float(inputs)

    def run(t):
        d = t.ndim - 2
        for a, o in enumerate(_output_size(output_size, d, "adaptive_max_pool")):
            t = _along(t, 1 + a, lambda u, o=o: _k.AdaptiveMaxAxis.apply(u, size=o))
        return t
    return _channels_last(run, x, data_format, "adaptive_max_pool")


# ----------------------------------------------------------------------------- convolution
def _grouped(x, w, groups, strides, padding, dilation_rate, op, bias=None, activation=None):
    d = x.ndim - 2
    s = _conv._tuple(strides, d, "strides", op)
    dil = _conv._tuple(dilation_rate, d, "dilation_rate", op)
    p = _conv._padding_name(padding, op)
    if w.shape[-1] % groups:
        raise ValueError(f"{op}: the kernel's output channels ({w.shape[-1]}) must be a multiple of the "
                         f"number of groups ({groups}).")
    pads = tuple(_conv._pads(p, x.shape[1 + a], w.shape[a], s[a], dil[a]) for a in range(d))
    for a in range(d):
        if x.shape[1 + a] + sum(pads[a]) < (w.shape[a] - 1) * dil[a] + 1:
            raise ValueError(f"{op}: the input {x.shape} is smaller than the dilated kernel {w.shape[:d]} "
                             f"along spatial axis {a}.")
    if groups > 1 and groups == x.shape[-1]:  # depthwise: one input channel per group
        w = _s.reshape(w, w.shape[:d] + (groups, w.shape[-1] // groups))
        y = _k.DepthwiseConvND.apply(x, w, bias, stride=s, dilation=dil, pads=pads)
        return y if activation is None else _act.relu(y)
    return _k.GroupConvND.apply(x, w, bias, groups=groups, stride=s, dilation=dil, pads=pads, activation=activation)


def _conv_last(x, w, strides, padding, dilation_rate, op, bias=None, activation=None):
    d = _spatial(x, op)
    if w.ndim != d + 2:
        raise ValueError(f"{op}: the kernel must have rank {d + 2} for inputs of rank {x.ndim}; "
                         f"received kernel shape {w.shape}.")
    c, cin = x.shape[-1], w.shape[-2]
    if cin < 1 or c % cin:
        raise ValueError(f"{op}: the input channels ({c}) must be a multiple of the kernel's input channels "
                         f"({cin}); input shape {x.shape}, kernel shape {w.shape}.")
    groups = c // cin
    if groups == 1 and d == 2:
        return _conv.conv2d(x, w, bias, strides, padding, dilation_rate, activation=activation)
    if groups == 1 and d == 1:
        return _conv.conv1d(x, w, bias, strides, _conv._padding_name(padding, op), dilation_rate,
                            activation=activation)
    return _grouped(x, w, groups, strides, padding, dilation_rate, op, bias, activation)


def conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
    """N-d convolution (cross-correlation, 1-D to 3-D), kernel (K..., C_in / groups, C_out).

    When C_in is a multiple of the kernel's input channels, the convolution is grouped as in Keras
    (groups = C_in / kernel_in). 'same' pads by TensorFlow's rule (the extra row at the end).
    Integer inputs and kernel give integers, as Keras.
    Backward: dkernel = im2col(x)^T dy; dx = col2im(dy kernel^T)."""
    y = _int_out(lambda a, b: conv(a, b, strides, padding, data_format, dilation_rate), inputs, kernel)
    if y is not None:
        return y
    x = _float(inputs)
    w = _like(kernel, x)
    return _channels_last(lambda t: _conv_last(t, w, strides, padding, dilation_rate, "conv"), x, data_format,
                          "conv")


def conv_bias(inputs, kernel, bias, strides=1, padding="valid", dilation_rate=1, activation=None):
    """:func:`conv` of a channels-last input plus ``bias`` (C_out,) or None, then ``activation`` None or 'relu'
    (lamina's own, for the convolution layers: grouped and 3-D ones among them): inside the op, where its kernels
    add the bias and take the ReLU as each output row is written, instead of two more ops over the output."""
    activation = _m.fused_activation(activation, "conv_bias")
    y = _int_out(lambda a, b: conv(a, b, strides, padding, None, dilation_rate), inputs, kernel)
    if y is not None:
        y = y if bias is None else _m.add(y, bias)
        return y if activation is None else _act.relu(y)
    x = _float(inputs)
    w = _like(kernel, x)
    if bias is not None and tuple(bias.shape) != (w.shape[-1],):
        raise ValueError(f"conv_bias: the bias must have shape ({w.shape[-1]},), one value per output channel; "
                         f"received bias shape {tuple(bias.shape)}.")
    return _conv_last(x, w, strides, padding, dilation_rate, "conv", None if bias is None else _like(bias, x),
                      activation)


def depthwise_conv(inputs, kernel, strides=1, padding="valid", data_format=None, dilation_rate=1):
    """Depthwise convolution: channel c convolved with its own kernel[..., c, :], kernel (K..., C, M).

    The output has C * M channels, c * M + m. Integers give integers.
    Backward: per kernel offset, dkernel = sum of x's window * dy; dx's window += dy kernel."""
    y = _int_out(lambda a, b: depthwise_conv(a, b, strides, padding, data_format, dilation_rate), inputs, kernel)
    if y is not None:
        return y
    return _channels_last(lambda t: depthwise_conv_bias(t, kernel, None, strides, padding, dilation_rate),
                          _float(inputs), data_format, "depthwise_conv")


def depthwise_conv_bias(inputs, kernel, bias, strides=1, padding="valid", dilation_rate=1):
    """:func:`depthwise_conv` of a channels-last input plus ``bias`` (C * M,) or None (lamina's own, for the
    DepthwiseConv layers): the compiled kernels add the bias to each output row while it is in cache and sum its
    gradient in the weight gradient's pass, instead of two more passes over the output."""
    y = _int_out(lambda a, b: depthwise_conv(a, b, strides, padding, None, dilation_rate), inputs, kernel)
    if y is not None:
        return y if bias is None else _m.add(y, bias)
    x = _float(inputs)
    w = _like(kernel, x)
    d = _spatial(x, "depthwise_conv")
    c = x.shape[-1]
    if w.ndim != d + 2 or w.shape[-2] != c:
        raise ValueError(f"depthwise_conv: the kernel must have shape (spatial..., {c}, multiplier) for inputs "
                         f"with {c} channels; received kernel shape {w.shape}.")
    if bias is not None and tuple(bias.shape) != (w.shape[-2] * w.shape[-1],):
        raise ValueError(f"depthwise_conv_bias: the bias must have shape ({w.shape[-2] * w.shape[-1]},), one value "
                         f"per output channel (channels x multiplier); received bias shape {tuple(bias.shape)}.")
    w = _s.reshape(w, w.shape[:-2] + (1, w.shape[-2] * w.shape[-1]))
    return _conv_last(x, w, strides, padding, dilation_rate, "depthwise_conv", None if bias is None else _like(bias, x))


def separable_conv(inputs, depthwise_kernel, pointwise_kernel, strides=1, padding="valid", data_format=None,
                   dilation_rate=1):
    """depthwise_conv with depthwise_kernel, then a 1x1 conv with pointwise_kernel (1..., C*M, C_out)."""
    y = depthwise_conv(inputs, depthwise_kernel, strides, padding, data_format, dilation_rate)
    return conv(y, pointwise_kernel, strides=1, padding="valid", data_format=data_format,
                dilation_rate=dilation_rate)


def _conv_transpose_last(x, w, strides, padding, output_padding, dilation_rate):
    op = "conv_transpose"
    d = _spatial(x, op)
    if w.ndim != d + 2 or w.shape[-1] != x.shape[-1]:
        raise ValueError(f"{op}: the kernel must have shape (spatial..., out_channels, {x.shape[-1]}) for inputs "
                         f"with {x.shape[-1]} channels; received kernel shape {w.shape}.")
    if d == 2:
        return _conv.conv2d_transpose(x, w, None, strides, padding, output_padding, dilation_rate)
    if d == 1:
        return _conv.conv1d_transpose(x, w, None, strides, padding, output_padding, dilation_rate)
    s = _conv._tuple(strides, d, "strides", op)
    dil = _conv._tuple(dilation_rate, d, "dilation_rate", op)
    p = _conv._padding_name(padding, op)
    opad = None if output_padding is None else _conv._output_padding(output_padding, d, s, op)
    window = tuple(_conv._transpose_window(x.shape[1 + a], w.shape[a], s[a], dil[a], p,
                                           None if opad is None else opad[a]) for a in range(d))
    return _k.ConvTransposeND.apply(x, w, stride=s, dilation=dil, window=window)


def conv_transpose(inputs, kernel, strides=1, padding="valid", output_padding=None, data_format=None,
                   dilation_rate=1):
    """N-d transposed convolution (1-D to 3-D), kernel (K..., C_out, C_in), output lengths as Keras.

    The adjoint of conv: each input position adds x @ kernel^T over its window of a canvas, which is
    then cropped. Backward: a plain convolution of dy."""
    x = _float(inputs)
    w = _like(kernel, x)
    return _channels_last(lambda t: _conv_transpose_last(t, w, strides, padding, output_padding, dilation_rate),
                          x, data_format, "conv_transpose")


# ----------------------------------------------------------------------------- encodings
def one_hot(x, num_classes, axis=-1, dtype=None, sparse=False):
    """Integer labels to one-hot vectors of length num_classes on ``axis`` (negative labels: all zeros).

    dtype defaults to floatx. Not differentiable."""
    if sparse:
        raise ValueError("one_hot: sparse=True is not supported (lamina has no sparse tensors).")
    t = _tensor(x)
    xp = _xp(t)
    lab = t.data.astype(np.int64)
    out = (lab[..., None] == xp.arange(int(num_classes))) & (lab[..., None] >= 0)
    out = out.astype(standardize_dtype(dtype) if dtype is not None else backend.floatx())
    if axis != -1:
        out = xp.moveaxis(out, -1, axis)
    return Tensor(out)


def multi_hot(inputs, num_classes=None, axis=-1, dtype=None, sparse=False, **kwargs):
    """Integer labels to multi-hot vectors: the max of their one-hot vectors over each sample's labels.

    The labels are axis 1 of a batch, axis 0 of a single sample. ``num_tokens`` is accepted for num_classes."""
    if num_classes is None and "num_tokens" in kwargs:
        num_classes = kwargs.pop("num_tokens")
    if num_classes is None:
        raise ValueError("multi_hot: argument `num_classes` must be specified.")
    t = _tensor(inputs)
    oh = one_hot(t, num_classes, axis=axis, dtype=dtype, sparse=sparse)
    return Tensor(oh.data.max(axis=1 if t.ndim > 1 else 0))


# ----------------------------------------------------------------------------- losses
def binary_crossentropy(target, output, from_logits=False):
    """Elementwise binary cross-entropy (no reduction), same shapes.

    Probabilities: -(t log(p) + (1 - t) log(1 - p)), p clipped to [1e-7, 1 - 1e-7]. Logits (stable):
    max(x, 0) - x t + log1p(e^-|x|). Backward: (sigmoid(x) - t) from logits."""
    p = _float(output)
    t = _like(target, p)
    if t.shape != p.shape:
        raise ValueError(f"binary_crossentropy: target and output must have the same shape. Received: "
                         f"target.shape={t.shape}, output.shape={p.shape}")
    return _s.reshape(_loss.binary_crossentropy(_s.expand_dims(t, -1), _s.expand_dims(p, -1),
                                                from_logits=bool(from_logits), axis=-1), p.shape)


def categorical_crossentropy(target, output, from_logits=False, axis=-1):
    """-sum(t log(q)) over ``axis``, q = softmax(output) or (probabilities) output / sum(output), clipped.

    Probabilities are clipped to [1e-7, 1 - 1e-7] after the normalisation, as Keras.
    Backward (logits): softmax(x) sum(t) - t."""
    p = _float(output)
    t = _like(target, p)
    if t.shape != p.shape or p.ndim < 1:
        raise ValueError(f"categorical_crossentropy: target and output must have the same shape, of rank >= 1. "
                         f"Received: target.shape={t.shape}, output.shape={p.shape}")
    return _loss.categorical_crossentropy(t, p, from_logits=bool(from_logits), axis=axis)


def sparse_categorical_crossentropy(target, output, from_logits=False, axis=-1):
    """-log(q[label]) with integer labels, one per slice of output along ``axis``.

    target has output's shape without ``axis`` (a size-1 axis there is squeezed); q = softmax(output) or
    the normalised, clipped probabilities. Backward (logits): softmax(x) - onehot(label)."""
    p = _float(output)
    if p.ndim < 1:
        raise ValueError(f"sparse_categorical_crossentropy: output must have rank >= 1; received {p.shape}.")
    ax = _axis(axis, p.ndim, "sparse_categorical_crossentropy")
    lab = _ints(target, p)
    if lab.ndim == p.ndim and lab.shape[ax] == 1:
        lab = lab.reshape(lab.shape[:ax] + lab.shape[ax + 1:])
    return _loss.sparse_categorical_crossentropy(lab, p, from_logits=bool(from_logits), axis=ax)


# ----------------------------------------------------------------------------- statistics and normalisation
def _compute_float(x):
    """x in at least float32 (Keras computes statistics of float16 in float32)."""
    x = _float(x)
    return x if x.dtype.itemsize >= 4 else _m.cast(x, "float32")


def _axes(axes, ndim):
    if axes is None:
        return tuple(range(ndim))
    if isinstance(axes, (int, np.integer)):
        axes = (axes,)
    axes = tuple(int(a) for a in axes)
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for an input of rank {ndim}.")
    return tuple(sorted(a % ndim for a in axes))


def moments(x, axes, keepdims=False, synchronized=False):
    """(mean, variance) over ``axes``; the variance is biased (divides by the count).

    float16 is computed in float32 and cast back; integers give float32."""
    if synchronized:
        raise NotImplementedError("moments: synchronized=True is not supported (lamina runs on one device).")
    t = _tensor(x)
    orig = t.dtype if _is_float(t) else np.dtype(backend.floatx())
    xf = _compute_float(t)
    ax = _axes(axes, xf.ndim)
    mean = _m.mean(xf, axis=ax, keepdims=True)
    d = xf - mean
    var = _m.mean(d * d, axis=ax, keepdims=True)
    if not keepdims:
        mean, var = _s.squeeze(mean, ax), _s.squeeze(var, ax)
    if xf.dtype != orig:
        fmax = float(np.finfo(orig).max)
        mean, var = (_m.cast(_m.clip(v, -fmax, fmax), orig) for v in (mean, var))
    return mean, var


def batch_normalization(x, mean, variance, axis, offset=None, scale=None, epsilon=0.001):
    """(x - mean) / sqrt(variance + epsilon) * scale + offset, the (C,) parameters along ``axis``.

    Backward: to x, mean, variance, offset and scale (one fused op)."""
    x = _float(x)
    conv = [None if v is None else _like(v, x) for v in (scale, offset, mean, variance)]
    return _norm.batch_norm(x, conv[0], conv[1], conv[2], conv[3], epsilon=float(epsilon), axis=int(axis))


def layer_normalization(x, gamma=None, beta=None, axis=-1, epsilon=None, **kwargs):
    """(x - mean) / sqrt(var + epsilon) * gamma + beta, statistics over ``axis`` of each sample.

    ``axis`` is an int or a tuple; epsilon defaults to 1e-7; computed in at least float32 and cast back to
    x's dtype (integers too).
    ``rms_scaling=True`` (deprecated in Keras) gives x / sqrt(var + epsilon) * gamma."""
    rms_scaling = bool(kwargs.pop("rms_scaling", False))
    if kwargs:
        raise TypeError(f"layer_normalization: unexpected arguments {sorted(kwargs)}.")
    t = _tensor(x)
    xf = _compute_float(t)
    g = None if gamma is None else _like(gamma, xf)
    b = None if beta is None else _like(beta, xf)
    axes = _axes(axis, xf.ndim)
    y = _norm.layer_norm(xf, g, b, axes=axes, epsilon=_EPSILON if epsilon is None else float(epsilon),
                         rms_scaling=rms_scaling)
    return y if y.dtype == t.dtype else _m.cast(y, t.dtype)


def rms_normalization(x, scale=None, axis=-1, epsilon=None):
    """x / sqrt(mean(x^2, axis) + epsilon) * scale: RMS normalisation.

    epsilon defaults to 1e-7; computed in at least float32 and cast back to x's dtype (integers too)."""
    t = _tensor(x)
    xf = _compute_float(t)
    if xf.ndim == 0:
        xf = _s.expand_dims(xf, 0)
    ax = _axes(axis, xf.ndim)
    eps = _EPSILON if epsilon is None else float(epsilon)
    y = xf / _m.sqrt(_m.mean(xf * xf, axis=ax, keepdims=True) + eps)
    if scale is not None:
        y = y * _like(scale, xf)
    return y if y.dtype == t.dtype else _m.cast(y, t.dtype)


def normalize(x, axis=-1, order=2, epsilon=None):
    """x / max(norm(x, order, axis), epsilon) (epsilon defaults to 1e-7); order is an int >= 1."""
    if isinstance(order, bool) or not isinstance(order, (int, np.integer)) or order < 1:
        raise ValueError(f"Argument `order` must be an int >= 1. Received: order={order}")
    x = _float(x)
    if x.ndim == 0:
        x = _s.expand_dims(x, 0)
    eps = _EPSILON if epsilon is None else float(epsilon)
    ax = axis if axis is None or isinstance(axis, (int, np.integer)) else tuple(axis)
    if order == 2:
        # 1 / max(norm, epsilon) as 1 / sqrt(max(sum x^2, epsilon^2)): capping 1 / norm after the reciprocal left a zero
        # vector's backward through 1 / sqrt(0) (a zero weight times an infinite slope: NaN); capped before, the zero
        # vector's slope is 1 / epsilon, as torch's F.normalize
        floor = Tensor(_xp(x).asarray(eps * eps, dtype=x.dtype))
        return x * (1.0 / _m.sqrt(_m.maximum(_m.sum(x * x, axis=ax, keepdims=True), floor)))
    if order == 1:
        norm = _m.sum(_m.abs(x), axis=ax, keepdims=True)
    else:
        norm = _m.power(_m.sum(_m.power(_m.abs(x), float(order)), axis=ax, keepdims=True), 1.0 / order)
    return x / _m.maximum(norm, Tensor(_xp(x).asarray(eps, dtype=x.dtype)))


# ----------------------------------------------------------------------------- CTC
def ctc_loss(target, output, target_length, output_length, mask_index=0):
    """CTC negative log-likelihood per sample (B,), from logits (B, T, C) and padded integer targets (B, U).

    ``mask_index`` is the blank class. An impossible alignment gives inf. Computed in float32 (Keras's
    result_type narrows float64 too).

    Backward: softmax(output) - the posterior of each class at each frame (through log_softmax)."""
    out = _float(output)
    dtype = result_type(standardize_dtype(out.dtype), "float32")  # Keras: float32 (float64 narrowed too)
    return _ctc_loss(target, out if out.dtype == dtype else _m.cast(out, dtype), target_length, output_length,
                     mask_index)


def _ctc_loss(target, out, target_length, output_length, mask_index):
    """ctc_loss in out's own float dtype (the float64 path of the gradient checks)."""
    if out.ndim != 3:
        raise ValueError(f"ctc_loss: output must have shape (batch, time, classes); received {out.shape}.")
    lab = _ints(target, out)
    if lab.ndim != 2 or lab.shape[0] != out.shape[0]:
        raise ValueError(f"ctc_loss: target must have shape (batch, max_label_length); received {lab.shape}.")
    tl = _ints(target_length, out).reshape(-1)
    ol = _ints(output_length, out).reshape(-1)
    B, T = out.shape[:2]
    if tl.shape != (B,) or ol.shape != (B,):
        raise ValueError(f"ctc_loss: target_length and output_length must hold one length per sample ({B}); "
                         f"received shapes {tuple(tl.shape)} and {tuple(ol.shape)}.")
    if B and (int(tl.min()) < 0 or int(tl.max()) > lab.shape[1] or int(ol.min()) < 0 or int(ol.max()) > T):
        raise ValueError(f"ctc_loss: target lengths must lie in [0, {lab.shape[1]}] and output lengths in "
                         f"[0, {T}]; received {backend.to_numpy(tl).tolist()} and {backend.to_numpy(ol).tolist()}.")
    xp = _xp(out)
    blank = int(mask_index)
    lab = xp.where(xp.arange(lab.shape[1])[None, :] < tl[:, None], lab, blank)
    lp = _act.log_softmax(out, axis=-1)
    return _k.CTCLoss.apply(lp, labels=lab, target_length=tl, output_length=ol, blank=blank,
                            num_classes=out.shape[-1])


def _ctc_greedy(a, lengths, merge_repeated, mask_index):
    xp = backend.get_array_module(a)
    B, T, C = a.shape
    mask_index = C - 1 if mask_index is None else int(mask_index)
    idx = a.argmax(axis=-1).astype(np.int32)
    scores = a.max(axis=-1)
    past = xp.arange(T)[None, :] >= lengths[:, None]
    idx = xp.where(past, mask_index, idx)
    scores = xp.where(past, 0, scores)
    if merge_repeated:
        rep = xp.zeros((B, T), dtype=bool)
        rep[:, 1:] = idx[:, 1:] == idx[:, :-1]
        idx = xp.where(rep, mask_index, idx)
    invalid = idx == mask_index
    idx = xp.where(invalid, -1, idx).astype(np.int32)
    order = xp.argsort(xp.where(invalid, T, xp.arange(T)[None, :]), axis=-1, kind="stable")
    idx = xp.take_along_axis(idx, order, axis=-1)
    return idx[None], (-scores.sum(axis=1))[:, None]


def _log_merge(xp, inverse, scores, n):
    """log(sum(exp(scores))) within each bucket of ``inverse`` (n buckets)."""
    m = scores.max() if scores.size else 0.0
    m = m if np.isfinite(float(m)) else 0.0
    out = xp.bincount(inverse, weights=xp.exp(scores - m), minlength=n).astype(scores.dtype)
    with np.errstate(divide="ignore"):
        return xp.log(out) + m


def _unique_rows(xp, paths, size, pad):
    """Unique rows of ``paths`` (first occurrence order of a lexicographic sort), padded with rows of
    ``pad`` to ``size``, and the index of each input row among them."""
    uniq, inverse = np.unique(backend.to_numpy(paths), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    if uniq.shape[0] < size:
        uniq = np.concatenate([uniq, np.full((size - uniq.shape[0], paths.shape[1]), pad, uniq.dtype)])
    return xp.asarray(uniq), xp.asarray(inverse)


def _ctc_beam(a, lengths, beam_width, top_paths, mask_index):
    """Keras's CTC beam search (prefix beams with separate blank / non-blank scores, merged in log space),
    one sample at a time, every beam and class of a step at once."""
    xp = backend.get_array_module(a)
    B, T, C = a.shape
    mask_index = C - 1 if mask_index is None else int(mask_index)
    z = a - a.max(axis=-1, keepdims=True)
    lp = z - xp.log(xp.exp(z).sum(axis=-1, keepdims=True))
    lp = lp[:, :, ::-1]                       # Keras's tie-breaking: classes flipped, stable ascending sorts
    mask_index = C - mask_index - 1
    pad = -1
    n_init = min(C, beam_width)
    lens = backend.to_numpy(lengths).tolist()
    all_paths, all_scores = [], []
    for b in range(B):
        x = lp[b]
        paths = xp.full((2 * beam_width, T), pad, dtype=np.int32)
        top = xp.argsort(x[0], kind="stable")[-n_init:]
        paths[:n_init, 0] = xp.where(top == mask_index, pad, top.astype(np.int32))
        scores = xp.full((2 * beam_width,), -xp.inf, dtype=x.dtype)
        scores[:n_init] = x[0, top]
        masked = paths[:, 0] == pad
        for t in range(1, int(lens[b])):
            # extend every beam by every class
            paths = xp.repeat(paths, C, axis=0)
            scores = xp.repeat(scores, C)
            prev_masked = xp.repeat(masked, C)
            tail_at = (paths == pad).argmax(axis=1)
            rows = xp.arange(paths.shape[0])
            tails = xp.where(tail_at == 0, pad, paths[rows, tail_at - 1])
            classes = xp.arange(C, dtype=np.int32)
            classes[mask_index] = pad
            classes = xp.tile(classes, paths.shape[0] // C)
            masked = classes == pad
            classes = xp.where(~prev_masked & (tails == classes), pad, classes)
            paths[rows, tail_at] = classes
            scores = scores + xp.tile(x[t], paths.shape[0] // C)
            # merge equal prefixes, keep the best beam_width (each with a non-blank and a blank track)
            uniq, inverse = _unique_rows(xp, paths, 2 * C * beam_width, pad)
            emit = _log_merge(xp, inverse, xp.where(masked, -xp.inf, scores), uniq.shape[0])
            blank = _log_merge(xp, inverse, xp.where(masked, scores, -xp.inf), uniq.shape[0])
            total = xp.logaddexp(emit, blank)
            keep = xp.argsort(total, kind="stable")[-beam_width:]
            paths = xp.concatenate([uniq[keep], uniq[keep]])
            scores = xp.concatenate([emit[keep], blank[keep]])
            masked = xp.concatenate([xp.zeros(beam_width, bool), xp.ones(beam_width, bool)])
        uniq, inverse = _unique_rows(xp, paths, 2 * C * beam_width, pad)
        merged = _log_merge(xp, inverse, scores, uniq.shape[0])
        best = xp.argsort(merged, kind="stable")[-top_paths:][::-1]
        all_paths.append(uniq[best])
        all_scores.append(merged[best])
    paths = xp.stack(all_paths)
    scores = xp.stack(all_scores)
    paths = xp.where(paths == pad, pad, C - paths - 1).astype(np.int32)
    return paths.transpose(1, 0, 2), scores


def ctc_decode(inputs, sequence_lengths, strategy="greedy", beam_width=100, top_paths=1, merge_repeated=True,
               mask_index=0):
    """Decode CTC outputs (B, T, C) into label sequences; not differentiable.

    'greedy': the best class per frame, repeats merged (merge_repeated) and blanks dropped; score
    -sum(max input per frame). 'beam_search': Keras's prefix beam search over log_softmax(inputs),
    keeping ``beam_width`` prefixes, returning the ``top_paths`` best.
    Returns (paths (top_paths, B, T) int32 padded with -1, scores (B, top_paths))."""
    x = _float(inputs)
    dtype = result_type(standardize_dtype(x.dtype), "float32")
    a = x.data.astype(dtype, copy=False)
    lengths = _ints(sequence_lengths, x).reshape(-1)
    if strategy == "greedy":
        p, s = _ctc_greedy(a, lengths, merge_repeated, mask_index)
    elif strategy == "beam_search":
        p, s = _ctc_beam(a, lengths, int(beam_width), int(top_paths), mask_index)
    else:
        raise ValueError(f"Invalid strategy {strategy}. Supported values are 'greedy' and 'beam_search'.")
    return Tensor(p), Tensor(s)


# ----------------------------------------------------------------------------- attention
def _large_negative(dtype):
    return (65500.0 if np.dtype(dtype) == np.float16 else 3.38953e38) * -0.7


def dot_product_attention(query, key, value, bias=None, mask=None, scale=None, is_causal=False,
                          flash_attention=None, attn_logits_soft_cap=None):
    """softmax(scale q k^T + bias, masked) v over inputs (B, T, heads, H), Keras's layout.

    mask: bool, broadcast to (B, heads, Tq, Tk), True = attend (a row with no allowed key averages all
    values, as Keras's large-negative fill). Fewer key/value heads than query heads are repeated
    (grouped-query attention). Without bias the fused attention kernel runs (five GEMMs backward)."""
    if attn_logits_soft_cap is not None:
        raise ValueError("attn_logits_soft_cap is only supported for JAX on TPU. "
                         "Set attn_logits_soft_cap=None when not using JAX on TPU.")
    if flash_attention:
        raise ValueError("dot_product_attention: flash_attention=True is not supported by lamina (no flash "
                         "attention kernel); use None or False.")
    q, k, v = _float(query), _float(key), _float(value)
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError(f"`dot_product_attention` only supports 4D inputs. Received: query.shape={q.shape}, "
                         f"key.shape={k.shape}, value.shape={v.shape}.")
    if bias is not None and mask is not None:
        raise ValueError("Only one of `bias` and `mask` can be provided. Received both.")
    dtype = result_type(*(standardize_dtype(t.dtype) for t in (q, k, v)))  # float64 narrows to float32, as Keras
    q, k, v = (t if t.dtype == dtype else _m.cast(t, dtype) for t in (q, k, v))
    return _attention(q, k, v, bias, mask, scale, is_causal)


def _attention(q, k, v, bias, mask, scale, is_causal):
    """dot_product_attention on float tensors of one dtype, kept (the float64 path of the gradient checks)."""
    dtype = q.dtype
    q, k, v = (_s.transpose(t, (0, 2, 1, 3)) for t in (q, k, v))           # (B, heads, T, H)
    hq, hk = q.shape[1], k.shape[1]
    if hq > hk > 1:
        k, v = _s.repeat(k, hq // hk, axis=1), _s.repeat(v, hq // hk, axis=1)
    sc = 1.0 / float(np.sqrt(q.shape[-1])) if scale is None else float(scale)
    if bias is None:
        m = None if mask is None else Tensor(_ints(mask, q).astype(bool))
        out = _attn.scaled_dot_product_attention(q, k, v, mask=m, scale=sc, is_causal=bool(is_causal),
                                                 empty_rows="uniform")
    else:
        s = _m.matmul(q * sc, _s.swapaxes(k, -1, -2)) + _like(bias, q)
        if is_causal:
            tri = _attn.causal_mask(s.shape[-2], s.shape[-1], _xp(q))
            s = _m.where(Tensor(tri), s, Tensor(_xp(q).asarray(_large_negative(dtype), dtype=dtype)))
        out = _m.matmul(_act.softmax(s, axis=-1), v)
    return _s.transpose(out, (0, 2, 1, 3))


# ----------------------------------------------------------------------------- the rest
def psnr(x1, x2, max_val):
    """Peak signal-to-noise ratio: 20 log10(max_val) - 10 log10(mean((x1 - x2)^2)), a scalar."""
    a = _float(x1)
    b = _like(x2, a)
    if a.shape != b.shape:
        raise ValueError(f"Input shapes {a.shape} and {b.shape} must match for PSNR calculation. ")
    mv = _like(max_val, a)
    d = a - b
    mse = _m.mean(d * d)
    ln10 = float(np.log(10.0))
    return 20.0 * _m.log(mv) / ln10 - 10.0 * _m.log(mse) / ln10


def polar(abs_, angle):
    """The complex tensor abs_ (cos(angle) + i sin(angle)) (complex64 for float32 inputs).

    Not differentiable: lamina's autograd has no complex numbers."""
    r, th = _float(abs_), _float(angle)
    xp = _xp(r)
    dt = np.result_type(r.dtype, th.dtype)
    cdt = np.complex128 if dt == np.float64 else np.complex64
    out = r.data * xp.cos(th.data) + 1j * (r.data * xp.sin(th.data))
    return Tensor(out.astype(cdt))


def depth_to_space(x, block_size, data_format="channels_last"):
    """(N, H, W, C) -> (N, H b, W b, C / b^2): each pixel's channels become a b x b block (TF order)."""
    x = _tensor(x)
    b = int(block_size)
    if x.ndim != 4:
        raise ValueError(f"depth_to_space: x must have rank 4; received shape {x.shape}.")
    if _data_format(data_format) == "channels_last":
        n, h, w, c = x.shape
        y = _s.reshape(x, (n, h, w, b, b, c // (b * b)))
        y = _s.transpose(y, (0, 1, 3, 2, 4, 5))
        return _s.reshape(y, (n, h * b, w * b, c // (b * b)))
    n, c, h, w = x.shape
    y = _s.reshape(x, (n, c // (b * b), b, b, h, w))
    y = _s.transpose(y, (0, 1, 4, 2, 5, 3))
    return _s.reshape(y, (n, c // (b * b), h * b, w * b))


def space_to_depth(x, block_size, data_format="channels_last"):
    """(N, H, W, C) -> (N, H / b, W / b, C b^2): each b x b block becomes channels (TF order)."""
    x = _tensor(x)
    b = int(block_size)
    if x.ndim != 4:
        raise ValueError(f"space_to_depth: x must have rank 4; received shape {x.shape}.")
    if _data_format(data_format) == "channels_last":
        n, h, w, c = x.shape
        y = _s.reshape(x, (n, h // b, b, w // b, b, c))
        y = _s.transpose(y, (0, 1, 3, 2, 4, 5))
        return _s.reshape(y, (n, h // b, w // b, c * b * b))
    n, c, h, w = x.shape
    y = _s.reshape(x, (n, c, h // b, b, w // b, b))
    y = _s.transpose(y, (0, 1, 3, 5, 2, 4))
    return _s.reshape(y, (n, c * b * b, h // b, w // b))


def _pair(v, what, op):
    if isinstance(v, (int, np.integer)):
        return (int(v), int(v))
    v = tuple(int(a) for a in v)
    if len(v) != 2:
        raise ValueError(f"{op}: {what} must be an int or a pair of ints. Received: {what}={v!r}")
    return v


def unfold(x, kernel_size, dilation=1, padding=0, stride=1):
    """Sliding blocks of a channels-first image (N, C, H, W) as columns (N, C*KH*KW, L) (torch's unfold).

    Backward: fold (the blocks summed back)."""
    x = _float(x)
    if x.ndim != 4:
        raise ValueError(f"unfold: x must have shape (N, C, H, W); received {x.shape}.")
    return _k.Unfold.apply(x, kernel=_pair(kernel_size, "kernel_size", "unfold"),
                           dilation=_pair(dilation, "dilation", "unfold"), padding=_pair(padding, "padding", "unfold"),
                           stride=_pair(stride, "stride", "unfold"))


def fold(x, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """Columns (N, C*KH*KW, L) summed back into a channels-first image (N, C, H, W) (torch's fold).

    Backward: unfold."""
    x = _float(x)
    if x.ndim != 3:
        raise ValueError(f"fold: x must have shape (N, C*KH*KW, L); received {x.shape}.")
    kernel = _pair(kernel_size, "kernel_size", "fold")
    return _k.Fold.apply(x, size=_pair(output_size, "output_size", "fold"), kernel=kernel,
                         dilation=_pair(dilation, "dilation", "fold"), padding=_pair(padding, "padding", "fold"),
                         stride=_pair(stride, "stride", "fold"))
