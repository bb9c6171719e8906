"""DenseNet121/169/201 (Huang et al. 2016) with Keras's layer names and parameter counts."""
from .. import layers
from . import _common

__all__ = ["DenseNet121", "DenseNet169", "DenseNet201", "preprocess_input", "decode_predictions"]

_EPS = 1.001e-5


def _conv_block(x, growth_rate, name):
    """BN-ReLU-1x1 (4 x growth) -> BN-ReLU-3x3 (growth), concatenated to the input."""
    y = layers.BatchNormalization(axis=-1, epsilon=_EPS, name=f"{name}_0_bn")(x)
    y = layers.Activation("relu", name=f"{name}_0_relu")(y)
    y = layers.Conv2D(4 * growth_rate, 1, use_bias=False, name=f"{name}_1_conv")(y)
    y = layers.BatchNormalization(axis=-1, epsilon=_EPS, name=f"{name}_1_bn")(y)
    y = layers.Activation("relu", name=f"{name}_1_relu")(y)
    y = layers.Conv2D(growth_rate, 3, padding="same", use_bias=False, name=f"{name}_2_conv")(y)
    return layers.Concatenate(axis=-1, name=f"{name}_concat")([x, y])


def _transition(x, reduction, name):
    x = layers.BatchNormalization(axis=-1, epsilon=_EPS, name=f"{name}_bn")(x)
    x = layers.Activation("relu", name=f"{name}_relu")(x)
    x = layers.Conv2D(int(x.shape[-1] * reduction), 1, use_bias=False, name=f"{name}_conv")(x)
    return layers.AveragePooling2D(2, strides=2, name=f"{name}_pool")(x)


@_common.builder
def _densenet(keras_name, blocks, include_top, weights, input_tensor, input_shape, pooling, classes,
              classifier_activation, name):
    _common.check_classes(weights, include_top, classes, name)
    inputs = _common.image_input(input_tensor, input_shape, 224, 32, include_top, weights, name)
    x = layers.ZeroPadding2D(padding=((3, 3), (3, 3)))(inputs)
    x = layers.Conv2D(64, 7, strides=2, use_bias=False, name="conv1_conv")(x)
    x = layers.BatchNormalization(axis=-1, epsilon=_EPS, name="conv1_bn")(x)
    x = layers.Activation("relu", name="conv1_relu")(x)
    x = layers.ZeroPadding2D(padding=((1, 1), (1, 1)))(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1")(x)
    for stage, n in enumerate(blocks):
        for i in range(n):
            x = _conv_block(x, 32, name=f"conv{stage + 2}_block{i + 1}")
        if stage < 3:
            x = _transition(x, 0.5, name=f"pool{stage + 2}")
    x = layers.BatchNormalization(axis=-1, epsilon=_EPS, name="bn")(x)
    x = layers.Activation("relu", name="relu")(x)
    x = _common.classifier_head(x, include_top, pooling, classes, classifier_activation)
    return _common.build(inputs, x, name, weights, keras_name)


def DenseNet121(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
                classes=1000, classifier_activation="softmax", name="densenet121"):
    """DenseNet121: dense blocks of (6, 12, 24, 16) conv blocks, growth rate 32."""
    return _densenet("DenseNet121", (6, 12, 24, 16), include_top, weights, input_tensor, input_shape,
                     pooling, classes, classifier_activation, name)


def DenseNet169(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
                classes=1000, classifier_activation="softmax", name="densenet169"):
    """DenseNet169: dense blocks of (6, 12, 32, 32)."""
    return _densenet("DenseNet169", (6, 12, 32, 32), include_top, weights, input_tensor, input_shape,
                     pooling, classes, classifier_activation, name)


def DenseNet201(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
                classes=1000, classifier_activation="softmax", name="densenet201"):
    """DenseNet201: dense blocks of (6, 12, 48, 32)."""
    return _densenet("DenseNet201", (6, 12, 48, 32), include_top, weights, input_tensor, input_shape,
                     pooling, classes, classifier_activation, name)


def preprocess_input(x, data_format=None):
    """Keras's 'torch' preprocessing for DenseNet: to [0, 1], then ImageNet mean and std per channel."""
    return _common.preprocess(x, data_format, mode="torch")


def decode_predictions(preds, top=5):
    """Top classes of ImageNet predictions: [[(class_id, name, score), ...], ...]."""
    return _common.decode_imagenet(preds, top)
