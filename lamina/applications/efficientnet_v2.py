"""EfficientNetV2B0..B3, S, M, L (Tan & Le 2021): Fused-MBConv blocks (one full 3x3 convolution instead of
expansion + depthwise) in the early stages, MBConv blocks with squeeze-and-excitation after, with Keras's
layer names, arguments and parameter counts.

With ``include_preprocessing=True`` (the default) the input is pixels in [0, 255]: the B variants rescale to
[0, 1] and normalise by the ImageNet mean and std, S/M/L map to [-1, 1]; ``preprocess_input`` passes through.
"""
import math

from .. import layers
from . import _common
from .efficientnet import classifier_top, conv_init, squeeze_excite

__all__ = ["EfficientNetV2B0", "EfficientNetV2B1", "EfficientNetV2B2", "EfficientNetV2B3", "EfficientNetV2S",
           "EfficientNetV2M", "EfficientNetV2L", "preprocess_input", "decode_predictions"]

# Stages: (repeats, filters_in, filters_out, expand_ratio, strides, se_ratio, fused); every kernel is 3x3.
_B = [(1, 32, 16, 1, 1, 0, True), (2, 16, 32, 4, 2, 0, True), (2, 32, 48, 4, 2, 0, True),
      (3, 48, 96, 4, 2, 0.25, False), (5, 96, 112, 6, 1, 0.25, False), (8, 112, 192, 6, 2, 0.25, False)]
_PLANS = {
    "b": _B,
    "s": [(2, 24, 24, 1, 1, 0, True), (4, 24, 48, 4, 2, 0, True), (4, 48, 64, 4, 2, 0, True),
          (6, 64, 128, 4, 2, 0.25, False), (9, 128, 160, 6, 1, 0.25, False), (15, 160, 256, 6, 2, 0.25, False)],
    "m": [(3, 24, 24, 1, 1, 0, True), (5, 24, 48, 4, 2, 0, True), (5, 48, 80, 4, 2, 0, True),
          (7, 80, 160, 4, 2, 0.25, False), (14, 160, 176, 6, 1, 0.25, False), (18, 176, 304, 6, 2, 0.25, False),
          (5, 304, 512, 6, 1, 0.25, False)],
    "l": [(4, 32, 32, 1, 1, 0, True), (7, 32, 64, 4, 2, 0, True), (7, 64, 96, 4, 2, 0, True),
          (10, 96, 192, 4, 2, 0.25, False), (19, 192, 224, 6, 1, 0.25, False), (25, 224, 384, 6, 2, 0.25, False),
          (7, 384, 640, 6, 1, 0.25, False)],
}
_MOMENTUM = 0.9


def _bn(name):
    return layers.BatchNormalization(axis=3, momentum=_MOMENTUM, name=name)


def _block(inputs, fused, f_in, f_out, expand, strides, se_ratio, activation, drop_rate, name):
    """Fused-MBConv (a 3x3 expansion convolution carries the stride) or MBConv (1x1 expansion, 3x3
    depthwise); then optional squeeze-and-excitation, the projection, and the residual with stochastic depth."""
    filters = f_in * expand
    x = inputs
    if expand != 1:
        x = layers.Conv2D(filters, 3 if fused else 1, strides=strides if fused else 1, padding="same",
                          use_bias=False, kernel_initializer=conv_init(), name=f"{name}expand_conv")(x)
        x = layers.Activation(activation, name=f"{name}expand_activation")(_bn(f"{name}expand_bn")(x))
    if not fused:
        x = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False,
                                   depthwise_initializer=conv_init(), name=f"{name}dwconv2")(x)
        x = layers.Activation(activation, name=f"{name}activation")(_bn(f"{name}bn")(x))
    if 0 < se_ratio <= 1:
        x = squeeze_excite(x, f_in, filters, activation, name)
    single = fused and expand == 1          # the projection is the block's only convolution
    x = layers.Conv2D(f_out, 3 if single else 1, strides=strides if single else 1, padding="same",
                      use_bias=False, kernel_initializer=conv_init(), name=f"{name}project_conv")(x)
    x = _bn(f"{name}project_bn")(x)
    if single:
        x = layers.Activation(activation, name=f"{name}project_activation")(x)
    if strides == 1 and f_in == f_out:
        if drop_rate:
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}drop")(x)
        x = layers.add([x, inputs], name=f"{name}add")
    return x


def _round_filters(filters, width, divisor=8):
    return int(max(divisor, int(filters * width + divisor / 2) // divisor * divisor))


@_common.builder
def _efficientnet_v2(variant, width, depth, default_size, name, include_top, weights, input_tensor, input_shape,
                     pooling, classes, classifier_activation, include_preprocessing, keras_name,
                     dropout_rate=0.2, drop_connect_rate=0.2, activation="swish"):
    plan = _PLANS[variant]
    _common.check_classes(weights, include_top, classes, name)
    inputs = _common.image_input(input_tensor, input_shape, default_size, 32, include_top, weights, name)
    x = inputs
    if include_preprocessing:
        if variant == "b":
            x = layers.Rescaling(scale=1.0 / 255)(x)
            x = layers.Normalization(mean=[0.485, 0.456, 0.406], variance=[0.229 ** 2, 0.224 ** 2, 0.225 ** 2],
                                     axis=3)(x)
        else:
            x = layers.Rescaling(scale=1.0 / 128.0, offset=-1)(x)
    x = layers.Conv2D(_round_filters(plan[0][1], width), 3, strides=2, padding="same", use_bias=False,
                      kernel_initializer=conv_init(), name="stem_conv")(x)
    x = layers.Activation(activation, name="stem_activation")(_bn("stem_bn")(x))
    total = float(sum(stage[0] for stage in plan))          # Keras counts the unscaled repeats here
    b = 0
    for i, (repeats, f_in, f_out, expand, strides, se_ratio, fused) in enumerate(plan):
        f_in, f_out = _round_filters(f_in, width), _round_filters(f_out, width)
        for j in range(int(math.ceil(depth * repeats))):
            x = _block(x, fused, f_in if j == 0 else f_out, f_out, expand, strides if j == 0 else 1, se_ratio,
                       activation, drop_connect_rate * b / total, f"block{i + 1}{chr(j + 97)}_")
            b += 1
    x = layers.Conv2D(_round_filters(1280, width), 1, padding="same", use_bias=False,
                      kernel_initializer=conv_init(), name="top_conv")(x)
    x = layers.Activation(activation, name="top_activation")(_bn("top_bn")(x))
    x = classifier_top(x, include_top, pooling, dropout_rate, classes, classifier_activation, weights)
    return _common.build(inputs, x, name, weights, keras_name, f"efficientnetv2-{keras_name[14:].lower()}")


def _builder(variant, width, depth, default_size, keras_name):
    default_name = f"efficientnetv2-{keras_name[14:].lower()}"

    def build(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
              classes=1000, classifier_activation="softmax", include_preprocessing=True, name=default_name):
        return _efficientnet_v2(variant, width, depth, default_size, name, include_top, weights, input_tensor,
                                input_shape, pooling, classes, classifier_activation, include_preprocessing,
                                keras_name)
    build.__name__ = build.__qualname__ = keras_name
    build.__doc__ = (f"{keras_name}: default input {default_size}x{default_size}.\n\n    Args (Keras's): "
                     "include_top, weights (None, 'imagenet': a file placed in $LAMINA_HOME/models, or a path), "
                     "input_tensor, input_shape, pooling (None, 'avg', 'max' when include_top=False), classes, "
                     "classifier_activation, include_preprocessing (the model takes [0, 255] pixels), name.")
    return build


EfficientNetV2B0 = _builder("b", 1.0, 1.0, 224, "EfficientNetV2B0")
EfficientNetV2B1 = _builder("b", 1.0, 1.1, 240, "EfficientNetV2B1")
EfficientNetV2B2 = _builder("b", 1.1, 1.2, 260, "EfficientNetV2B2")
EfficientNetV2B3 = _builder("b", 1.2, 1.4, 300, "EfficientNetV2B3")
EfficientNetV2S = _builder("s", 1.0, 1.0, 384, "EfficientNetV2S")
EfficientNetV2M = _builder("m", 1.0, 1.0, 480, "EfficientNetV2M")
EfficientNetV2L = _builder("l", 1.0, 1.0, 480, "EfficientNetV2L")


def preprocess_input(x, data_format=None):
    """A pass-through, as Keras's: the models preprocess [0, 255] pixels themselves (include_preprocessing)."""
    return x


def decode_predictions(preds, top=5):
    """Top classes of ImageNet predictions: [[(class_id, name, score), ...], ...]."""
    return _common.decode_imagenet(preds, top)
