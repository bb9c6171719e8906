"""ResNet50/101/152 (He et al. 2015) and ResNet50V2/101V2/152V2 (pre-activation, He et al. 2016), with
Keras's layer names, arguments and parameter counts."""
from .. import layers
from . import _common

__all__ = ["ResNet50", "ResNet101", "ResNet152", "ResNet50V2", "ResNet101V2", "ResNet152V2",
           "preprocess_input", "decode_predictions"]

_EPS = 1.001e-5


def _bn(name):
    return layers.BatchNormalization(axis=-1, epsilon=_EPS, name=name)


def _block_v1(x, filters, stride=1, conv_shortcut=True, name=None):
    """Bottleneck: 1x1 (stride) -> 3x3 -> 1x1 (4 x filters), added to the shortcut, then ReLU."""
    if conv_shortcut:
        shortcut = layers.Conv2D(4 * filters, 1, strides=stride, name=f"{name}_0_conv")(x)
        shortcut = _bn(f"{name}_0_bn")(shortcut)
    else:
        shortcut = x
    x = layers.Conv2D(filters, 1, strides=stride, name=f"{name}_1_conv")(x)
    x = layers.Activation("relu", name=f"{name}_1_relu")(_bn(f"{name}_1_bn")(x))
    x = layers.Conv2D(filters, 3, padding="same", name=f"{name}_2_conv")(x)
    x = layers.Activation("relu", name=f"{name}_2_relu")(_bn(f"{name}_2_bn")(x))
    x = _bn(f"{name}_3_bn")(layers.Conv2D(4 * filters, 1, name=f"{name}_3_conv")(x))
    return layers.Activation("relu", name=f"{name}_out")(layers.Add(name=f"{name}_add")([shortcut, x]))


def _stack_v1(x, filters, blocks, stride1=2, name=None):
    x = _block_v1(x, filters, stride=stride1, name=f"{name}_block1")
    for i in range(2, blocks + 1):
        x = _block_v1(x, filters, conv_shortcut=False, name=f"{name}_block{i}")
    return x


def _block_v2(x, filters, stride=1, conv_shortcut=False, name=None):
    """Pre-activation bottleneck: BN-ReLU first; the stride sits on the 3x3 convolution of the last block."""
    preact = layers.Activation("relu", name=f"{name}_preact_relu")(_bn(f"{name}_preact_bn")(x))
    if conv_shortcut:
        shortcut = layers.Conv2D(4 * filters, 1, strides=stride, name=f"{name}_0_conv")(preact)
    else:
        shortcut = layers.MaxPooling2D(1, strides=stride)(x) if stride > 1 else x
    x = layers.Conv2D(filters, 1, strides=1, use_bias=False, name=f"{name}_1_conv")(preact)
    x = layers.Activation("relu", name=f"{name}_1_relu")(_bn(f"{name}_1_bn")(x))
    x = layers.ZeroPadding2D(padding=((1, 1), (1, 1)), name=f"{name}_2_pad")(x)
    x = layers.Conv2D(filters, 3, strides=stride, use_bias=False, name=f"{name}_2_conv")(x)
    x = layers.Activation("relu", name=f"{name}_2_relu")(_bn(f"{name}_2_bn")(x))
    x = layers.Conv2D(4 * filters, 1, name=f"{name}_3_conv")(x)
    return layers.Add(name=f"{name}_out")([shortcut, x])


def _stack_v2(x, filters, blocks, stride1=2, name=None):
    x = _block_v2(x, filters, conv_shortcut=True, name=f"{name}_block1")
    for i in range(2, blocks):
        x = _block_v2(x, filters, name=f"{name}_block{i}")
    return _block_v2(x, filters, stride=stride1, name=f"{name}_block{blocks}")


@_common.builder
def _resnet(depths, v2, include_top, weights, input_tensor, input_shape, pooling, classes, classifier_activation,
            name, keras_name):
    _common.check_classes(weights, include_top, classes, name)
    inputs = _common.image_input(input_tensor, input_shape, 224, 32, include_top, weights, name)
    x = layers.ZeroPadding2D(padding=((3, 3), (3, 3)), name="conv1_pad")(inputs)
    x = layers.Conv2D(64, 7, strides=2, use_bias=True, name="conv1_conv")(x)
    if not v2:
        x = layers.Activation("relu", name="conv1_relu")(_bn("conv1_bn")(x))
    x = layers.ZeroPadding2D(padding=((1, 1), (1, 1)), name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)
    for stage, (filters, blocks) in enumerate(zip((64, 128, 256, 512), depths)):
        stride = (1 if stage == 0 else 2) if not v2 else (1 if stage == 3 else 2)
        stack = _stack_v2 if v2 else _stack_v1
        x = stack(x, filters, blocks, stride1=stride, name=f"conv{stage + 2}")
    if v2:
        x = layers.Activation("relu", name="post_relu")(_bn("post_bn")(x))
    x = _common.classifier_head(x, include_top, pooling, classes, classifier_activation)
    return _common.build(inputs, x, name, weights, keras_name)


def _builder(depths, v2, keras_name, doc):
    default_name = keras_name.lower()

    def build(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
              classes=1000, classifier_activation="softmax", name=default_name):
        return _resnet(depths, v2, include_top, weights, input_tensor, input_shape, pooling, classes,
                       classifier_activation, name, keras_name)
    build.__doc__ = doc
    return build


_ARGS = """

    Args (Keras's): include_top (the 1000-way classifier), weights (None, 'imagenet': a file placed in
    $LAMINA_HOME/models, or a path), input_tensor, input_shape (default (224, 224, 3)), pooling (None, 'avg',
    'max' when include_top=False), classes, classifier_activation, name."""
ResNet50 = _builder((3, 4, 6, 3), False, "ResNet50", "ResNet50: 50 layers, bottleneck blocks (3, 4, 6, 3)." + _ARGS)
ResNet101 = _builder((3, 4, 23, 3), False, "ResNet101", "ResNet101: bottleneck blocks (3, 4, 23, 3)." + _ARGS)
ResNet152 = _builder((3, 8, 36, 3), False, "ResNet152", "ResNet152: bottleneck blocks (3, 8, 36, 3)." + _ARGS)
ResNet50V2 = _builder((3, 4, 6, 3), True, "ResNet50V2", "ResNet50V2: pre-activation blocks (3, 4, 6, 3)." + _ARGS)
ResNet101V2 = _builder((3, 4, 23, 3), True, "ResNet101V2", "ResNet101V2: pre-activation (3, 4, 23, 3)." + _ARGS)
ResNet152V2 = _builder((3, 8, 36, 3), True, "ResNet152V2", "ResNet152V2: pre-activation (3, 8, 36, 3)." + _ARGS)


def preprocess_input(x, data_format=None):
    """Keras's 'caffe' preprocessing for ResNet (V1): RGB -> BGR, minus the ImageNet channel means."""
    return _common.preprocess(x, data_format, mode="caffe")


def decode_predictions(preds, top=5):
    """Top classes of ImageNet predictions: [[(class_id, name, score), ...], ...]."""
    return _common.decode_imagenet(preds, top)
