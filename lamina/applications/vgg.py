"""VGG16 and VGG19 (Simonyan and Zisserman 2014) with Keras's layer names and parameter counts."""
from .. import layers
from . import _common

__all__ = ["VGG16", "VGG19", "preprocess_input", "decode_predictions"]


@_common.builder
def _vgg(keras_name, convs, include_top, weights, input_tensor, input_shape, pooling, classes,
         classifier_activation, name):
    _common.check_classes(weights, include_top, classes, name)
    inputs = _common.image_input(input_tensor, input_shape, 224, 32, include_top, weights, name)
    x = inputs
    for block, (filters, n) in enumerate(zip((64, 128, 256, 512, 512), convs), start=1):
        for i in range(1, n + 1):
            x = layers.Conv2D(filters, (3, 3), activation="relu", padding="same", name=f"block{block}_conv{i}")(x)
        x = layers.MaxPooling2D((2, 2), strides=(2, 2), name=f"block{block}_pool")(x)
    if include_top:
        x = layers.Flatten(name="flatten")(x)
        x = layers.Dense(4096, activation="relu", name="fc1")(x)
        x = layers.Dense(4096, activation="relu", name="fc2")(x)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    else:
        x = _common.classifier_head(x, False, pooling, classes, classifier_activation,
                                    pool_names=("global_average_pooling2d", "global_max_pooling2d"))
    return _common.build(inputs, x, name, weights, keras_name)


def VGG16(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None, classes=1000,
          classifier_activation="softmax", name="vgg16"):
    """VGG16: 13 3x3 convolutions in 5 blocks, then two 4096-unit layers (138,357,544 parameters)."""
    return _vgg("VGG16", (2, 2, 3, 3, 3), include_top, weights, input_tensor, input_shape,
                pooling, classes, classifier_activation, name)


def VGG19(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None, classes=1000,
          classifier_activation="softmax", name="vgg19"):
    """VGG19: 16 3x3 convolutions in 5 blocks, then two 4096-unit layers (143,667,240 parameters)."""
    return _vgg("VGG19", (2, 2, 4, 4, 4), include_top, weights, input_tensor, input_shape,
                pooling, classes, classifier_activation, name)


def preprocess_input(x, data_format=None):
    """Keras's 'caffe' preprocessing: RGB -> BGR, minus the ImageNet channel means."""
    return _common.preprocess(x, data_format, mode="caffe")


def decode_predictions(preds, top=5):
    """Top classes of ImageNet predictions: [[(class_id, name, score), ...], ...]."""
    return _common.decode_imagenet(preds, top)
