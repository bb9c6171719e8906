"""MobileNet (Howard et al. 2017): depthwise separable convolutions (a 3x3 depthwise filter per channel, then
a 1x1 pointwise convolution mixing channels), with Keras's layer names, arguments and parameter counts."""
from .. import layers
from . import _common

__all__ = ["MobileNet", "preprocess_input", "decode_predictions"]


def _conv_block(x, filters, alpha, strides):
    x = layers.Conv2D(int(filters * alpha), (3, 3), padding="same", use_bias=False, strides=strides,
                      name="conv1")(x)
    x = layers.BatchNormalization(axis=-1, name="conv1_bn")(x)
    return layers.ReLU(6.0, name="conv1_relu")(x)


def _depthwise_block(x, filters, alpha, depth_multiplier, strides=(1, 1), block_id=1):
    """Depthwise 3x3 -> BN -> ReLU6 -> pointwise 1x1 -> BN -> ReLU6 (padding the bottom/right before a
    strided depthwise convolution, as Keras does)."""
    if strides != (1, 1):
        x = layers.ZeroPadding2D(((0, 1), (0, 1)), name=f"conv_pad_{block_id}")(x)
    x = layers.DepthwiseConv2D((3, 3), padding="same" if strides == (1, 1) else "valid",
                               depth_multiplier=depth_multiplier, strides=strides, use_bias=False,
                               name=f"conv_dw_{block_id}")(x)
    x = layers.ReLU(6.0, name=f"conv_dw_{block_id}_relu")(layers.BatchNormalization(
        axis=-1, name=f"conv_dw_{block_id}_bn")(x))
    x = layers.Conv2D(int(filters * alpha), (1, 1), padding="same", use_bias=False, strides=(1, 1),
                      name=f"conv_pw_{block_id}")(x)
    x = layers.BatchNormalization(axis=-1, name=f"conv_pw_{block_id}_bn")(x)
    return layers.ReLU(6.0, name=f"conv_pw_{block_id}_relu")(x)


_PLAN = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1), (512, 1),
         (512, 1), (1024, 2), (1024, 1)]


@_common.builder
def MobileNet(input_shape=None, alpha=1.0, depth_multiplier=1, dropout=1e-3, include_top=True,
              weights="imagenet", input_tensor=None, pooling=None, classes=1000, classifier_activation="softmax",
              name=None):
    """MobileNet: a 3x3 stem and 13 depthwise separable blocks (4,253,864 parameters at alpha=1)."""
    size = 224 if input_shape is None else (input_shape[0] or 224)
    name = name or f"mobilenet_{alpha:0.2f}_{size}"
    _common.check_classes(weights, include_top, classes, name)
    inputs = _common.image_input(input_tensor, input_shape, 224, 32, include_top, weights, name)
    x = _conv_block(inputs, 32, alpha, strides=(2, 2))
    for block_id, (filters, stride) in enumerate(_PLAN, start=1):
        x = _depthwise_block(x, filters, alpha, depth_multiplier, strides=(stride, stride), block_id=block_id)
    if include_top:
        x = layers.GlobalAveragePooling2D(keepdims=True)(x)
        x = layers.Dropout(dropout, name="dropout")(x)
        x = layers.Conv2D(classes, (1, 1), padding="same", name="conv_preds")(x)
        x = layers.Reshape((classes,), name="reshape_2")(x)
        x = layers.Activation(activation=classifier_activation, name="predictions")(x)
    else:
        x = _common.classifier_head(x, False, pooling, classes, classifier_activation,
                                    pool_names=("global_average_pooling2d", "global_max_pooling2d"))
    weights_name = f"mobilenet_{alpha:0.2f}_{size}"
    return _common.build(inputs, x, name, weights, "MobileNet", weights_name)


def preprocess_input(x, data_format=None):
    """Keras's 'tf' preprocessing for MobileNet: pixels scaled to [-1, 1]."""
    return _common.preprocess(x, data_format, mode="tf")


def decode_predictions(preds, top=5):
    """Top classes of ImageNet predictions: [[(class_id, name, score), ...], ...]."""
    return _common.decode_imagenet(preds, top)
