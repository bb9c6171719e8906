"""Inception v3 (Szegedy et al. 2015): factorised inception modules (5x5 as two 3x3, 7x7 as 1x7 and 7x1,
expanded 3x1/1x3 branches at the top), with Keras's layer names, arguments and parameter counts
(23,851,784 with the classifier). As in Keras, the convolutions and batch norms are unnamed (conv2d_<k>,
batch_normalization_<k>, activation_<k>); the concatenations are mixed0 ... mixed10."""
from .. import layers
from . import _common
from .xception import head

__all__ = ["InceptionV3", "preprocess_input", "decode_predictions"]


def conv2d_bn(x, filters, num_row, num_col, padding="same", strides=(1, 1), name=None):
    """Convolution without bias, batch norm without scale (a ReLU follows), ReLU: Keras's building block."""
    x = layers.Conv2D(filters, (num_row, num_col), strides=strides, padding=padding, use_bias=False,
                      name=None if name is None else f"{name}_conv")(x)
    x = layers.BatchNormalization(axis=-1, scale=False, name=None if name is None else f"{name}_bn")(x)
    return layers.Activation("relu", name=name)(x)


def _avg_branch(x, filters):
    x = layers.AveragePooling2D((3, 3), strides=(1, 1), padding="same")(x)
    return conv2d_bn(x, filters, 1, 1)


def _block_35(x, pool_filters, name):
    """35x35 module: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | avg pool-1x1."""
    b1 = conv2d_bn(x, 64, 1, 1)
    b5 = conv2d_bn(conv2d_bn(x, 48, 1, 1), 64, 5, 5)
    b3 = conv2d_bn(conv2d_bn(conv2d_bn(x, 64, 1, 1), 96, 3, 3), 96, 3, 3)
    return layers.Concatenate(axis=-1, name=name)([b1, b5, b3, _avg_branch(x, pool_filters)])


def _block_17(x, mid, name):
    """17x17 module: 1x1 | 1x1-1x7-7x1 | 1x1-7x1-1x7-7x1-1x7 | avg pool-1x1, mid channels inside."""
    b1 = conv2d_bn(x, 192, 1, 1)
    b7 = conv2d_bn(conv2d_bn(conv2d_bn(x, mid, 1, 1), mid, 1, 7), 192, 7, 1)
    d = conv2d_bn(x, mid, 1, 1)
    for rows, cols in ((7, 1), (1, 7), (7, 1)):
        d = conv2d_bn(d, mid, rows, cols)
    d = conv2d_bn(d, 192, 1, 7)
    return layers.Concatenate(axis=-1, name=name)([b1, b7, d, _avg_branch(x, 192)])


def _block_8(x, i):
    """8x8 module: 1x1 | 1x1-(1x3, 3x1) | 1x1-3x3-(1x3, 3x1) | avg pool-1x1."""
    b1 = conv2d_bn(x, 320, 1, 1)
    b3 = conv2d_bn(x, 384, 1, 1)
    b3 = layers.Concatenate(axis=-1, name=f"mixed9_{i}")([conv2d_bn(b3, 384, 1, 3), conv2d_bn(b3, 384, 3, 1)])
    d = conv2d_bn(conv2d_bn(x, 448, 1, 1), 384, 3, 3)
    d = layers.Concatenate(axis=-1)([conv2d_bn(d, 384, 1, 3), conv2d_bn(d, 384, 3, 1)])
    return layers.Concatenate(axis=-1, name=f"mixed{9 + i}")([b1, b3, d, _avg_branch(x, 192)])


@_common.builder
def InceptionV3(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
                classes=1000, classifier_activation="softmax", name="inception_v3"):
    """Inception v3: a five-convolution stem, three 35x35 modules, a reduction, four 17x17 modules, a
    reduction and two 8x8 modules.

    Args (Keras's): include_top, weights (None, 'imagenet': a file placed in $LAMINA_HOME/models, or a path),
    input_tensor, input_shape (default (299, 299, 3); at least 75x75), pooling (None, 'avg', 'max' when
    include_top=False), classes, classifier_activation, name."""
    _common.check_classes(weights, include_top, classes, name)
    inputs = _common.image_input(input_tensor, input_shape, 299, 75, include_top, weights, name)
    x = conv2d_bn(inputs, 32, 3, 3, strides=(2, 2), padding="valid")
    x = conv2d_bn(x, 32, 3, 3, padding="valid")
    x = conv2d_bn(x, 64, 3, 3)
    x = layers.MaxPooling2D((3, 3), strides=(2, 2))(x)
    x = conv2d_bn(x, 80, 1, 1, padding="valid")
    x = conv2d_bn(x, 192, 3, 3, padding="valid")
    x = layers.MaxPooling2D((3, 3), strides=(2, 2))(x)
    for i, pool_filters in enumerate((32, 64, 64)):
        x = _block_35(x, pool_filters, f"mixed{i}")
    # reduction to 17x17
    b3 = conv2d_bn(x, 384, 3, 3, strides=(2, 2), padding="valid")
    d = conv2d_bn(conv2d_bn(x, 64, 1, 1), 96, 3, 3)
    d = conv2d_bn(d, 96, 3, 3, strides=(2, 2), padding="valid")
    x = layers.Concatenate(axis=-1, name="mixed3")([b3, d, layers.MaxPooling2D((3, 3), strides=(2, 2))(x)])
    for i, mid in enumerate((128, 160, 160, 192)):
        x = _block_17(x, mid, f"mixed{4 + i}")
    # reduction to 8x8
    b3 = conv2d_bn(conv2d_bn(x, 192, 1, 1), 320, 3, 3, strides=(2, 2), padding="valid")
    b7 = conv2d_bn(conv2d_bn(conv2d_bn(x, 192, 1, 1), 192, 1, 7), 192, 7, 1)
    b7 = conv2d_bn(b7, 192, 3, 3, strides=(2, 2), padding="valid")
    x = layers.Concatenate(axis=-1, name="mixed8")([b3, b7, layers.MaxPooling2D((3, 3), strides=(2, 2))(x)])
    for i in range(2):
        x = _block_8(x, i)
    x = head(x, include_top, pooling, classes, classifier_activation)
    return _common.build(inputs, x, name, weights, "InceptionV3", "inception_v3")


def preprocess_input(x, data_format=None):
    """Keras's 'tf' preprocessing for InceptionV3: pixels scaled to [-1, 1]."""
    return _common.preprocess(x, data_format, mode="tf")


def decode_predictions(preds, top=5):
    """Top classes of ImageNet predictions: [[(class_id, name, score), ...], ...]."""
    return _common.decode_imagenet(preds, top)
