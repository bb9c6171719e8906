"""MobileNetV3Small and MobileNetV3Large (Howard et al. 2019): inverted residual blocks with optional
squeeze-and-excitation gated by a hard sigmoid, hard-swish activations and 5x5 depthwise kernels (none of
these in the ``minimalistic`` variants), with Keras's layer names, arguments and parameter counts.

The input is pixels in [0, 255] (``include_preprocessing=True`` rescales to [-1, 1] inside the model), so
``preprocess_input`` passes its input through, as Keras's.
"""
import warnings

from .. import layers
from ..layers.operations import AddOperation, MultiplyOperation
from . import _common
from .efficientnet import validate_activation
from .mobilenet_v2 import _correct_pad, _make_divisible as _depth

__all__ = ["MobileNetV3Small", "MobileNetV3Large", "preprocess_input", "decode_predictions"]


def _hard_sigmoid(x):
    """relu6(x + 3) / 6, the squeeze-and-excitation gate, built as Keras builds it: a ReLU(6.0) layer between
    two operations (``+ 3`` and ``* (1/6)``) that are graph nodes but not layers, so the layer names, counts
    and .keras files are Keras's."""
    x = layers.ReLU(6.0)(AddOperation()(x, 3.0))
    return MultiplyOperation()(x, 1.0 / 6.0)


def _relu(x):
    return layers.ReLU()(x)


def _hard_swish(x):
    return layers.Activation("hard_swish")(x)


def _bn(name):
    return layers.BatchNormalization(axis=-1, epsilon=1e-3, momentum=0.999, name=name)


def _se_block(inputs, filters, se_ratio, prefix):
    x = layers.GlobalAveragePooling2D(keepdims=True, name=f"{prefix}squeeze_excite_avg_pool")(inputs)
    x = layers.Conv2D(_depth(filters * se_ratio), kernel_size=1, padding="same",
                      name=f"{prefix}squeeze_excite_conv")(x)
    x = layers.ReLU(name=f"{prefix}squeeze_excite_relu")(x)
    x = layers.Conv2D(filters, kernel_size=1, padding="same", name=f"{prefix}squeeze_excite_conv_1")(x)
    x = _hard_sigmoid(x)
    return layers.Multiply(name=f"{prefix}squeeze_excite_mul")([inputs, x])


def _inverted_res_block(x, expansion, filters, kernel_size, stride, se_ratio, activation, block_id):
    """1x1 expansion (not in block 0), depthwise kernel_size convolution, optional squeeze-and-excitation,
    linear 1x1 projection, and the residual when stride 1 keeps the width."""
    shortcut, infilters = x, x.shape[-1]
    prefix = "expanded_conv_"
    if block_id:
        prefix = f"expanded_conv_{block_id}_"
        x = layers.Conv2D(_depth(infilters * expansion), kernel_size=1, padding="same", use_bias=False,
                          name=f"{prefix}expand")(x)
        x = activation(_bn(f"{prefix}expand_bn")(x))
    if stride == 2:
        x = layers.ZeroPadding2D(padding=_correct_pad(x, kernel_size), name=f"{prefix}depthwise_pad")(x)
    x = layers.DepthwiseConv2D(kernel_size, strides=stride, padding="same" if stride == 1 else "valid",
                               use_bias=False, name=f"{prefix}depthwise")(x)
    x = activation(_bn(f"{prefix}depthwise_bn")(x))
    if se_ratio:
        x = _se_block(x, _depth(infilters * expansion), se_ratio, prefix)
    x = layers.Conv2D(filters, kernel_size=1, padding="same", use_bias=False, name=f"{prefix}project")(x)
    x = _bn(f"{prefix}project_bn")(x)
    if stride == 1 and infilters == filters:
        x = layers.Add(name=f"{prefix}add")([shortcut, x])
    return x


# (expansion, filters, kernel ('k': 5 or 3 by variant, else 3), stride, squeeze-excite, activation ('a': by
# variant, 'r': ReLU)) of each block.
_SMALL = [(1, 16, 3, 2, True, "r"), (72 / 16, 24, 3, 2, False, "r"), (88 / 24, 24, 3, 1, False, "r"),
          (4, 40, "k", 2, True, "a"), (6, 40, "k", 1, True, "a"), (6, 40, "k", 1, True, "a"),
          (3, 48, "k", 1, True, "a"), (3, 48, "k", 1, True, "a"), (6, 96, "k", 2, True, "a"),
          (6, 96, "k", 1, True, "a"), (6, 96, "k", 1, True, "a")]
_LARGE = [(1, 16, 3, 1, False, "r"), (4, 24, 3, 2, False, "r"), (3, 24, 3, 1, False, "r"),
          (3, 40, "k", 2, True, "r"), (3, 40, "k", 1, True, "r"), (3, 40, "k", 1, True, "r"),
          (6, 80, 3, 2, False, "a"), (2.5, 80, 3, 1, False, "a"), (2.3, 80, 3, 1, False, "a"),
          (2.3, 80, 3, 1, False, "a"), (6, 112, 3, 1, True, "a"), (6, 112, 3, 1, True, "a"),
          (6, 160, "k", 2, True, "a"), (6, 160, "k", 1, True, "a"), (6, 160, "k", 1, True, "a")]


@_common.builder
def _mobilenet_v3(plan, last_point_ch, model_type, keras_name, input_shape, alpha, minimalistic, include_top,
                  weights, input_tensor, classes, pooling, dropout_rate, classifier_activation,
                  include_preprocessing, name):
    _common.check_classes(weights, include_top, classes, name)
    if input_shape is None and input_tensor is not None:
        input_shape = tuple(input_tensor.shape[1:])
    inputs = _common.image_input(input_tensor, (None, None, 3) if input_shape is None else input_shape, 224, 32,
                                 False, weights, name)
    rows, cols = inputs.shape[1], inputs.shape[2]
    if weights == "imagenet":
        if (alpha not in (0.75, 1.0)) if not minimalistic else alpha != 1.0:
            raise ValueError("If imagenet weights are being loaded, alpha can be one of `0.75`, `1.0` for non "
                             "minimalistic or `1.0` for minimalistic only.")
        if rows != cols or rows != 224:
            warnings.warn("`input_shape` is undefined or non-square, or `rows` is not 224. Weights for input "
                          "shape (224, 224) will be loaded as the default.", stacklevel=3)
    kernel, activation, se_ratio = (3, _relu, None) if minimalistic else (5, _hard_swish, 0.25)
    x = inputs
    if include_preprocessing:
        x = layers.Rescaling(scale=1.0 / 127.5, offset=-1.0)(x)
    x = layers.Conv2D(16, kernel_size=3, strides=(2, 2), padding="same", use_bias=False, name="conv")(x)
    x = activation(_bn("conv_bn")(x))
    for block_id, (expansion, filters, k, stride, se, act) in enumerate(plan):
        x = _inverted_res_block(x, expansion, _depth(filters * alpha), kernel if k == "k" else k, stride,
                                se_ratio if se else None, activation if act == "a" else _relu, block_id)
    last_conv_ch = _depth(x.shape[-1] * 6)
    if alpha > 1.0:
        last_point_ch = _depth(last_point_ch * alpha)
    x = layers.Conv2D(last_conv_ch, kernel_size=1, padding="same", use_bias=False, name="conv_1")(x)
    x = activation(_bn("conv_1_bn")(x))
    if include_top:
        x = layers.GlobalAveragePooling2D(keepdims=True)(x)
        x = activation(layers.Conv2D(last_point_ch, kernel_size=1, padding="same", use_bias=True,
                                     name="conv_2")(x))
        if dropout_rate > 0:
            x = layers.Dropout(dropout_rate)(x)
        x = layers.Conv2D(classes, kernel_size=1, padding="same", name="logits")(x)
        x = layers.Flatten()(x)
        validate_activation(classifier_activation, weights)
        x = layers.Activation(activation=classifier_activation, name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    weights_name = f"mobilenet_v3_{model_type}{'_minimalistic' if minimalistic else ''}_{float(alpha):0.2f}"
    return _common.build(inputs, x, name, weights, keras_name, weights_name)


_ARGS = """

    Args (Keras's): input_shape (default (None, None, 3): any size from 32x32), alpha (width multiplier),
    minimalistic (no squeeze-and-excitation, hard-swish or 5x5 kernels), include_top, weights (None, 'imagenet':
    a file placed in $LAMINA_HOME/models, or a path), input_tensor, classes, pooling (None, 'avg', 'max' when
    include_top=False), dropout_rate (before the logits), classifier_activation, include_preprocessing (the
    model takes [0, 255] pixels), name."""


def MobileNetV3Small(input_shape=None, alpha=1.0, minimalistic=False, include_top=True, weights="imagenet",
                     input_tensor=None, classes=1000, pooling=None, dropout_rate=0.2,
                     classifier_activation="softmax", include_preprocessing=True, name="MobileNetV3Small"):
    return _mobilenet_v3(_SMALL, 1024, "small", "MobileNetV3Small", input_shape, alpha, minimalistic, include_top,
                         weights, input_tensor, classes, pooling, dropout_rate, classifier_activation,
                         include_preprocessing, name)


def MobileNetV3Large(input_shape=None, alpha=1.0, minimalistic=False, include_top=True, weights="imagenet",
                     input_tensor=None, classes=1000, pooling=None, dropout_rate=0.2,
                     classifier_activation="softmax", include_preprocessing=True, name="MobileNetV3Large"):
    return _mobilenet_v3(_LARGE, 1280, "large", "MobileNetV3Large", input_shape, alpha, minimalistic, include_top,
                         weights, input_tensor, classes, pooling, dropout_rate, classifier_activation,
                         include_preprocessing, name)


MobileNetV3Small.__doc__ = ("MobileNetV3Small: 11 inverted residual blocks, a 1024-channel head (2,554,968 "
                            "parameters at alpha=1)." + _ARGS)
MobileNetV3Large.__doc__ = ("MobileNetV3Large: 15 inverted residual blocks, a 1280-channel head (5,507,432 "
                            "parameters at alpha=1)." + _ARGS)


def preprocess_input(x, data_format=None):
    """A pass-through, as Keras's: MobileNetV3 models rescale [0, 255] pixels themselves."""
    return x


def decode_predictions(preds, top=5):
    """Top classes of ImageNet predictions: [[(class_id, name, score), ...], ...]."""
    return _common.decode_imagenet(preds, top)
