"""Inception-ResNet v2 (Szegedy et al. 2016): inception branches whose 1x1-projected sum is added, scaled, to
the block's input; with Keras's layer names, arguments and parameter counts (55,873,736 with the classifier)."""
from .. import layers
from ..layers.layer import Layer
from . import _common
from .xception import head

__all__ = ["InceptionResNetV2", "CustomScaleLayer", "preprocess_input", "decode_predictions"]


class CustomScaleLayer(Layer):
    """[x, r] -> x + scale * r: the scaled residual sum of an Inception-ResNet block (Keras's layer)."""

    _keras_module = "keras.src.applications.inception_resnet_v2"

    def __init__(self, scale, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale

    def call(self, inputs):
        return inputs[0] + inputs[1] * self.scale

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        return {**super().get_config(), "scale": self.scale}


def conv2d_bn(x, filters, kernel_size, strides=1, padding="same", activation="relu", use_bias=False, name=None):
    """Convolution, batch norm without scale when there is no bias, activation: Keras's block, named name,
    name_bn, name_ac when name is given."""
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding=padding, use_bias=use_bias, name=name)(x)
    if not use_bias:
        x = layers.BatchNormalization(axis=-1, scale=False, name=None if name is None else f"{name}_bn")(x)
    if activation is not None:
        x = layers.Activation(activation, name=None if name is None else f"{name}_ac")(x)
    return x


def inception_resnet_block(x, scale, block_type, block_idx, activation="relu"):
    """x + scale * conv1x1(concat(branches)), then the activation; block35 (35x35), block17, block8."""
    if block_type == "block35":
        branches = [conv2d_bn(x, 32, 1), conv2d_bn(conv2d_bn(x, 32, 1), 32, 3),
                    conv2d_bn(conv2d_bn(conv2d_bn(x, 32, 1), 48, 3), 64, 3)]
    elif block_type == "block17":
        branches = [conv2d_bn(x, 192, 1), conv2d_bn(conv2d_bn(conv2d_bn(x, 128, 1), 160, [1, 7]), 192, [7, 1])]
    elif block_type == "block8":
        branches = [conv2d_bn(x, 192, 1), conv2d_bn(conv2d_bn(conv2d_bn(x, 192, 1), 224, [1, 3]), 256, [3, 1])]
    else:
        raise ValueError(f'Unknown Inception-ResNet block type. Expects "block35", "block17" or "block8", but '
                         f"got: {block_type}")
    name = f"{block_type}_{block_idx}"
    mixed = layers.Concatenate(axis=-1, name=f"{name}_mixed")(branches)
    up = conv2d_bn(mixed, x.shape[-1], 1, activation=None, use_bias=True, name=f"{name}_conv")
    x = CustomScaleLayer(scale)([x, up])
    if activation is not None:
        x = layers.Activation(activation, name=f"{name}_ac")(x)
    return x


@_common.builder
def InceptionResNetV2(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
                      classes=1000, classifier_activation="softmax", name="inception_resnet_v2"):
    """Inception-ResNet v2: a stem, 10 block35, a reduction, 20 block17, a reduction, 10 block8 and a 1536
    1x1 convolution.

    Args (Keras's): include_top, weights (None, 'imagenet': a file placed in $LAMINA_HOME/models, or a path),
    input_tensor, input_shape (default (299, 299, 3); at least 75x75), pooling (None, 'avg', 'max' when
    include_top=False), classes, classifier_activation, name."""
    _common.check_classes(weights, include_top, classes, name)
    inputs = _common.image_input(input_tensor, input_shape, 299, 75, include_top, weights, name)
    x = conv2d_bn(inputs, 32, 3, strides=2, padding="valid")
    x = conv2d_bn(x, 32, 3, padding="valid")
    x = conv2d_bn(x, 64, 3)
    x = layers.MaxPooling2D(3, strides=2)(x)
    x = conv2d_bn(x, 80, 1, padding="valid")
    x = conv2d_bn(x, 192, 3, padding="valid")
    x = layers.MaxPooling2D(3, strides=2)(x)
    b0 = conv2d_bn(x, 96, 1)
    b1 = conv2d_bn(conv2d_bn(x, 48, 1), 64, 5)
    b2 = conv2d_bn(conv2d_bn(conv2d_bn(x, 64, 1), 96, 3), 96, 3)
    pool = conv2d_bn(layers.AveragePooling2D(3, strides=1, padding="same")(x), 64, 1)
    x = layers.Concatenate(axis=-1, name="mixed_5b")([b0, b1, b2, pool])
    for i in range(1, 11):
        x = inception_resnet_block(x, scale=0.17, block_type="block35", block_idx=i)
    b0 = conv2d_bn(x, 384, 3, strides=2, padding="valid")
    b1 = conv2d_bn(conv2d_bn(conv2d_bn(x, 256, 1), 256, 3), 384, 3, strides=2, padding="valid")
    pool = layers.MaxPooling2D(3, strides=2, padding="valid")(x)
    x = layers.Concatenate(axis=-1, name="mixed_6a")([b0, b1, pool])
    for i in range(1, 21):
        x = inception_resnet_block(x, scale=0.1, block_type="block17", block_idx=i)
    b0 = conv2d_bn(conv2d_bn(x, 256, 1), 384, 3, strides=2, padding="valid")
    b1 = conv2d_bn(conv2d_bn(x, 256, 1), 288, 3, strides=2, padding="valid")
    b2 = conv2d_bn(conv2d_bn(conv2d_bn(x, 256, 1), 288, 3), 320, 3, strides=2, padding="valid")
    pool = layers.MaxPooling2D(3, strides=2, padding="valid")(x)
    x = layers.Concatenate(axis=-1, name="mixed_7a")([b0, b1, b2, pool])
    for i in range(1, 10):
        x = inception_resnet_block(x, scale=0.2, block_type="block8", block_idx=i)
    x = inception_resnet_block(x, scale=1.0, activation=None, block_type="block8", block_idx=10)
    x = conv2d_bn(x, 1536, 1, name="conv_7b")
    x = head(x, include_top, pooling, classes, classifier_activation)
    return _common.build(inputs, x, name, weights, "InceptionResNetV2", "inception_resnet_v2")


def preprocess_input(x, data_format=None):
    """Keras's 'tf' preprocessing for InceptionResNetV2: pixels scaled to [-1, 1]."""
    return _common.preprocess(x, data_format, mode="tf")


def decode_predictions(preds, top=5):
    """Top classes of ImageNet predictions: [[(class_id, name, score), ...], ...]."""
    return _common.decode_imagenet(preds, top)
