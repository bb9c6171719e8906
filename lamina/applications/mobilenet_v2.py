"""MobileNetV2 (Sandler et al. 2018): inverted residual blocks (1x1 expansion, 3x3 depthwise, linear 1x1
projection, a residual connection when the shape allows) with Keras's layer names, arguments and counts."""
from .. import layers
from . import _common

__all__ = ["MobileNetV2", "preprocess_input", "decode_predictions"]


def _make_divisible(v, divisor=8):
    """v rounded to a multiple of divisor, never more than 10% below v (the paper's channel rule)."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def _correct_pad(x, kernel=3):
    """The padding a stride-2 'same' convolution needs on each side, Keras's (bottom/right-heavy) way."""
    h, w = x.shape[1], x.shape[2]
    adjust = (1, 1) if h is None else (1 - h % 2, 1 - w % 2)
    c = kernel // 2
    return ((c - adjust[0], c), (c - adjust[1], c))


def _bn(name):
    return layers.BatchNormalization(axis=-1, epsilon=1e-3, momentum=0.999, name=name)


def _inverted_res_block(inputs, expansion, stride, alpha, filters, block_id):
    in_channels = inputs.shape[-1]
    pointwise = _make_divisible(int(filters * alpha), 8)
    x, prefix = inputs, f"block_{block_id}_"
    if block_id:
        x = layers.Conv2D(expansion * in_channels, kernel_size=1, padding="same", use_bias=False,
                          name=f"{prefix}expand")(x)
        x = layers.ReLU(6.0, name=f"{prefix}expand_relu")(_bn(f"{prefix}expand_BN")(x))
    else:
        prefix = "expanded_conv_"
    if stride == 2:
        x = layers.ZeroPadding2D(padding=_correct_pad(x, 3), name=f"{prefix}pad")(x)
    x = layers.DepthwiseConv2D(kernel_size=3, strides=stride, use_bias=False,
                               padding="same" if stride == 1 else "valid", name=f"{prefix}depthwise")(x)
    x = layers.ReLU(6.0, name=f"{prefix}depthwise_relu")(_bn(f"{prefix}depthwise_BN")(x))
    x = layers.Conv2D(pointwise, kernel_size=1, padding="same", use_bias=False, name=f"{prefix}project")(x)
    x = _bn(f"{prefix}project_BN")(x)          # linear bottleneck: no activation
    if in_channels == pointwise and stride == 1:
        return layers.Add(name=f"{prefix}add")([inputs, x])
    return x


# (filters, stride, expansion) of blocks 0..16
_PLAN = [(16, 1, 1), (24, 2, 6), (24, 1, 6), (32, 2, 6), (32, 1, 6), (32, 1, 6), (64, 2, 6), (64, 1, 6),
         (64, 1, 6), (64, 1, 6), (96, 1, 6), (96, 1, 6), (96, 1, 6), (160, 2, 6), (160, 1, 6), (160, 1, 6),
         (320, 1, 6)]


@_common.builder
def MobileNetV2(input_shape=None, alpha=1.0, include_top=True, weights="imagenet", input_tensor=None,
                pooling=None, classes=1000, classifier_activation="softmax", name=None):
    """MobileNetV2: a 3x3 stem, 17 inverted residual blocks and a 1280-channel 1x1 convolution
    (3,538,984 parameters at alpha=1)."""
    size = 224 if input_shape is None else (input_shape[0] or 224)
    name = name or f"mobilenetv2_{alpha:0.2f}_{size}"
    _common.check_classes(weights, include_top, classes, name)
    inputs = _common.image_input(input_tensor, input_shape, 224, 32, include_top, weights, name)
    x = layers.Conv2D(_make_divisible(32 * alpha, 8), kernel_size=3, strides=(2, 2), padding="same",
                      use_bias=False, name="Conv1")(inputs)
    x = layers.ReLU(6.0, name="Conv1_relu")(_bn("bn_Conv1")(x))
    for block_id, (filters, stride, expansion) in enumerate(_PLAN):
        x = _inverted_res_block(x, expansion=expansion, stride=stride, alpha=alpha, filters=filters,
                                block_id=block_id)
    last = _make_divisible(1280 * alpha, 8) if alpha > 1.0 else 1280
    x = layers.Conv2D(last, kernel_size=1, use_bias=False, name="Conv_1")(x)
    x = layers.ReLU(6.0, name="out_relu")(layers.BatchNormalization(axis=-1, epsilon=1e-3, momentum=0.999,
                                                                      name="Conv_1_bn")(x))
    x = _common.classifier_head(x, include_top, pooling, classes, classifier_activation,
                                pool_names=("global_average_pooling2d", "global_max_pooling2d"))
    return _common.build(inputs, x, name, weights, "MobileNetV2", f"mobilenet_v2_{alpha:0.2f}_{size}")


def preprocess_input(x, data_format=None):
    """Keras's 'tf' preprocessing for MobileNetV2: pixels scaled to [-1, 1]."""
    return _common.preprocess(x, data_format, mode="tf")


def decode_predictions(preds, top=5):
    """Top classes of ImageNet predictions: [[(class_id, name, score), ...], ...]."""
    return _common.decode_imagenet(preds, top)
