"""Xception (Chollet 2017): depthwise separable convolutions with residual connections throughout, with
Keras's layer names, arguments and parameter counts (22,910,480 with the classifier)."""
from .. import layers
from . import _common

__all__ = ["Xception", "preprocess_input", "decode_predictions"]


def _bn(name=None):
    return layers.BatchNormalization(axis=-1, name=name)


def _sep(x, filters, name):
    return layers.SeparableConv2D(filters, (3, 3), padding="same", use_bias=False, name=name)(x)


def _projection(x, filters):
    """The strided 1x1 convolution (and its batch norm) on the shortcut of a down-sampling block; unnamed,
    as Keras leaves them (conv2d, batch_normalization, ...)."""
    x = layers.Conv2D(filters, (1, 1), strides=(2, 2), padding="same", use_bias=False)(x)
    return _bn()(x)


def _entry_block(x, filters, block, first_relu=True):
    """Two separable convolutions and a stride-2 max pool, added to the projected input."""
    residual = _projection(x, filters[1])
    if first_relu:
        x = layers.Activation("relu", name=f"block{block}_sepconv1_act")(x)
    x = _bn(f"block{block}_sepconv1_bn")(_sep(x, filters[0], f"block{block}_sepconv1"))
    x = layers.Activation("relu", name=f"block{block}_sepconv2_act")(x)
    x = _bn(f"block{block}_sepconv2_bn")(_sep(x, filters[1], f"block{block}_sepconv2"))
    x = layers.MaxPooling2D((3, 3), strides=(2, 2), padding="same", name=f"block{block}_pool")(x)
    return layers.Add()([x, residual])


def _middle_block(x, block):
    """Three ReLU-separable-BN steps at 728 channels around an identity shortcut."""
    residual = x
    for i in (1, 2, 3):
        x = layers.Activation("relu", name=f"block{block}_sepconv{i}_act")(x)
        x = _bn(f"block{block}_sepconv{i}_bn")(_sep(x, 728, f"block{block}_sepconv{i}"))
    return layers.Add()([x, residual])


def head(x, include_top, pooling, classes, classifier_activation):
    """Keras's head for Xception and InceptionV3: 'avg_pool' + 'predictions', or an unnamed global pooling."""
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        return layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    if pooling == "avg":
        return layers.GlobalAveragePooling2D()(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D()(x)
    if pooling is not None:
        raise ValueError(f"pooling must be None, 'avg' or 'max'. Received: pooling={pooling!r}")
    return x


@_common.builder
def Xception(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
             classes=1000, classifier_activation="softmax", name="xception"):
    """Xception: entry flow (two convolutions, three down-sampling separable blocks), middle flow (eight
    728-channel residual blocks), exit flow (down-sampling block, separable 1536 and 2048).

    Args (Keras's): include_top, weights (None, 'imagenet': a file placed in $LAMINA_HOME/models, or a path),
    input_tensor, input_shape (default (299, 299, 3); at least 71x71), pooling (None, 'avg', 'max' when
    include_top=False), classes, classifier_activation, name."""
    _common.check_classes(weights, include_top, classes, name)
    inputs = _common.image_input(input_tensor, input_shape, 299, 71, include_top, weights, name)
    x = layers.Conv2D(32, (3, 3), strides=(2, 2), use_bias=False, name="block1_conv1")(inputs)
    x = layers.Activation("relu", name="block1_conv1_act")(_bn("block1_conv1_bn")(x))
    x = layers.Conv2D(64, (3, 3), use_bias=False, name="block1_conv2")(x)
    x = layers.Activation("relu", name="block1_conv2_act")(_bn("block1_conv2_bn")(x))
    x = _entry_block(x, (128, 128), 2, first_relu=False)
    x = _entry_block(x, (256, 256), 3)
    x = _entry_block(x, (728, 728), 4)
    for block in range(5, 13):
        x = _middle_block(x, block)
    x = _entry_block(x, (728, 1024), 13)
    x = layers.Activation("relu", name="block14_sepconv1_act")(
        _bn("block14_sepconv1_bn")(_sep(x, 1536, "block14_sepconv1")))
    x = layers.Activation("relu", name="block14_sepconv2_act")(
        _bn("block14_sepconv2_bn")(_sep(x, 2048, "block14_sepconv2")))
    x = head(x, include_top, pooling, classes, classifier_activation)
    return _common.build(inputs, x, name, weights, "Xception")


def preprocess_input(x, data_format=None):
    """Keras's 'tf' preprocessing for Xception: pixels scaled to [-1, 1]."""
    return _common.preprocess(x, data_format, mode="tf")


def decode_predictions(preds, top=5):
    """Top classes of ImageNet predictions: [[(class_id, name, score), ...], ...]."""
    return _common.decode_imagenet(preds, top)
