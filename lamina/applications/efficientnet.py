"""EfficientNetB0..B7 (Tan & Le 2019): MBConv blocks (1x1 expansion, depthwise convolution,
squeeze-and-excitation, linear 1x1 projection, stochastic depth on the residual) scaled in width, depth and
resolution, with Keras's layer names, arguments and parameter counts.

The input is pixels in [0, 255]: the model rescales to [0, 1] and normalises itself (a ``Normalization``
layer whose ImageNet statistics come with the weights), so ``preprocess_input`` passes its input through.
"""
import math

from .. import activations, initializers, layers
from . import _common
from .mobilenet_v2 import _correct_pad

__all__ = ["EfficientNetB0", "EfficientNetB1", "EfficientNetB2", "EfficientNetB3", "EfficientNetB4",
           "EfficientNetB5", "EfficientNetB6", "EfficientNetB7", "preprocess_input", "decode_predictions"]


def conv_init():
    """He-style initialisation over the fan-out, truncated normal (the paper's convolution initialiser)."""
    return initializers.VarianceScaling(scale=2.0, mode="fan_out", distribution="truncated_normal")


def dense_init():
    return initializers.VarianceScaling(scale=1.0 / 3.0, mode="fan_out", distribution="uniform")


# (kernel_size, repeats, filters_in, filters_out, expand_ratio, strides) of the seven stages of B0; every
# block has squeeze-and-excitation at ratio 0.25 and an identity skip when the shape allows.
_STAGES = [(3, 1, 32, 16, 1, 1), (3, 2, 16, 24, 6, 2), (5, 2, 24, 40, 6, 2), (3, 3, 40, 80, 6, 2),
           (5, 3, 80, 112, 6, 1), (5, 4, 112, 192, 6, 2), (3, 1, 192, 320, 6, 1)]
_IMAGENET_STD = (0.229, 0.224, 0.225)


def squeeze_excite(x, filters_in, filters, activation, name):
    """Channel gating: global average -> 1x1 reduce (activation) -> 1x1 expand (sigmoid) -> multiply."""
    se = layers.GlobalAveragePooling2D(name=f"{name}se_squeeze")(x)
    se = layers.Reshape((1, 1, filters), name=f"{name}se_reshape")(se)
    se = layers.Conv2D(max(1, int(filters_in * 0.25)), 1, padding="same", activation=activation,
                       kernel_initializer=conv_init(), name=f"{name}se_reduce")(se)
    se = layers.Conv2D(filters, 1, padding="same", activation="sigmoid", kernel_initializer=conv_init(),
                       name=f"{name}se_expand")(se)
    return layers.multiply([x, se], name=f"{name}se_excite")


def _block(inputs, activation, drop_rate, name, filters_in, filters_out, kernel_size, strides, expand_ratio):
    filters = filters_in * expand_ratio
    x = inputs
    if expand_ratio != 1:
        x = layers.Conv2D(filters, 1, padding="same", use_bias=False, kernel_initializer=conv_init(),
                          name=f"{name}expand_conv")(x)
        x = layers.BatchNormalization(axis=3, name=f"{name}expand_bn")(x)
        x = layers.Activation(activation, name=f"{name}expand_activation")(x)
    if strides == 2:
        x = layers.ZeroPadding2D(padding=_correct_pad(x, kernel_size), name=f"{name}dwconv_pad")(x)
    x = layers.DepthwiseConv2D(kernel_size, strides=strides, padding="valid" if strides == 2 else "same",
                               use_bias=False, depthwise_initializer=conv_init(), name=f"{name}dwconv")(x)
    x = layers.BatchNormalization(axis=3, name=f"{name}bn")(x)
    x = layers.Activation(activation, name=f"{name}activation")(x)
    x = squeeze_excite(x, filters_in, filters, activation, name)
    x = layers.Conv2D(filters_out, 1, padding="same", use_bias=False, kernel_initializer=conv_init(),
                      name=f"{name}project_conv")(x)
    x = layers.BatchNormalization(axis=3, name=f"{name}project_bn")(x)
    if strides == 1 and filters_in == filters_out:
        if drop_rate > 0:    # stochastic depth: the whole residual branch of a sample is dropped
            x = layers.Dropout(drop_rate, noise_shape=(None, 1, 1, 1), name=f"{name}drop")(x)
        x = layers.add([x, inputs], name=f"{name}add")
    return x


@_common.builder
def _efficientnet(width, depth, default_size, dropout_rate, name, include_top, weights, input_tensor,
                  input_shape, pooling, classes, classifier_activation, keras_name, drop_connect_rate=0.2,
                  activation="swish"):
    _common.check_classes(weights, include_top, classes, name)
    inputs = _common.image_input(input_tensor, input_shape, default_size, 32, include_top, weights, name)

    def round_filters(filters, divisor=8):
        filters *= width
        new = max(divisor, int(filters + divisor / 2) // divisor * divisor)
        return int(new + divisor if new < 0.9 * filters else new)

    def round_repeats(repeats):
        return int(math.ceil(depth * repeats))

    x = layers.Rescaling(1.0 / 255.0)(inputs)
    x = layers.Normalization(axis=3)(x)
    if weights == "imagenet":     # Keras's ImageNet files hold the std in the variance slot: one more scaling
        x = layers.Rescaling([1.0 / math.sqrt(s) for s in _IMAGENET_STD])(x)
    x = layers.ZeroPadding2D(padding=_correct_pad(x, 3), name="stem_conv_pad")(x)
    x = layers.Conv2D(round_filters(32), 3, strides=2, padding="valid", use_bias=False,
                      kernel_initializer=conv_init(), name="stem_conv")(x)
    x = layers.BatchNormalization(axis=3, name="stem_bn")(x)
    x = layers.Activation(activation, name="stem_activation")(x)
    total = float(sum(round_repeats(stage[1]) for stage in _STAGES))
    b = 0
    for i, (kernel, repeats, f_in, f_out, expand, strides) in enumerate(_STAGES):
        f_in, f_out = round_filters(f_in), round_filters(f_out)
        for j in range(round_repeats(repeats)):
            x = _block(x, activation, drop_connect_rate * b / total, f"block{i + 1}{chr(j + 97)}_",
                       f_in if j == 0 else f_out, f_out, kernel, strides if j == 0 else 1, expand)
            b += 1
    x = layers.Conv2D(round_filters(1280), 1, padding="same", use_bias=False, kernel_initializer=conv_init(),
                      name="top_conv")(x)
    x = layers.BatchNormalization(axis=3, name="top_bn")(x)
    x = layers.Activation(activation, name="top_activation")(x)
    x = classifier_top(x, include_top, pooling, dropout_rate, classes, classifier_activation, weights)
    return _common.build(inputs, x, name, weights, keras_name, keras_name.lower())


def validate_activation(classifier_activation, weights):
    """As Keras: with any weights file (ImageNet or a path), the classifier must be softmax or linear."""
    if weights is not None and activations.get(classifier_activation) not in (activations.get("softmax"),
                                                                             activations.get(None)):
        raise ValueError("Only `None` and `softmax` activations are allowed for the `classifier_activation` "
                         "argument when using pretrained weights, with `include_top=True`; Received: "
                         f"classifier_activation={classifier_activation!r}")


def classifier_top(x, include_top, pooling, dropout_rate, classes, classifier_activation, weights):
    """Global average pooling, dropout and the classifier (or the feature-extraction pooling)."""
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout_rate > 0:
            x = layers.Dropout(dropout_rate, name="top_dropout")(x)
        validate_activation(classifier_activation, weights)
        return layers.Dense(classes, activation=classifier_activation, kernel_initializer=dense_init(),
                            name="predictions")(x)
    return _common.classifier_head(x, False, pooling, classes, classifier_activation)


def _builder(width, depth, default_size, dropout_rate, keras_name):
    default_name = keras_name.lower()

    def build(include_top=True, weights="imagenet", input_tensor=None, input_shape=None, pooling=None,
              classes=1000, classifier_activation="softmax", name=default_name):
        return _efficientnet(width, depth, default_size, dropout_rate, name, include_top, weights, input_tensor,
                             input_shape, pooling, classes, classifier_activation, keras_name)
    build.__name__ = build.__qualname__ = keras_name
    build.__doc__ = (f"{keras_name}: width x{width}, depth x{depth}, default input {default_size}x{default_size}, "
                     f"dropout {dropout_rate} before the classifier.\n\n    Args (Keras's): include_top, weights "
                     "(None, 'imagenet': a file placed in $LAMINA_HOME/models, or a path), input_tensor, "
                     "input_shape, pooling (None, 'avg', 'max' when include_top=False), classes, "
                     "classifier_activation, name. Inputs are pixels in [0, 255].")
    return build


EfficientNetB0 = _builder(1.0, 1.0, 224, 0.2, "EfficientNetB0")
EfficientNetB1 = _builder(1.0, 1.1, 240, 0.2, "EfficientNetB1")
EfficientNetB2 = _builder(1.1, 1.2, 260, 0.3, "EfficientNetB2")
EfficientNetB3 = _builder(1.2, 1.4, 300, 0.3, "EfficientNetB3")
EfficientNetB4 = _builder(1.4, 1.8, 380, 0.4, "EfficientNetB4")
EfficientNetB5 = _builder(1.6, 2.2, 456, 0.4, "EfficientNetB5")
EfficientNetB6 = _builder(1.8, 2.6, 528, 0.5, "EfficientNetB6")
EfficientNetB7 = _builder(2.0, 3.1, 600, 0.5, "EfficientNetB7")


def preprocess_input(x, data_format=None):
    """A pass-through, as Keras's: EfficientNet models rescale and normalise [0, 255] pixels themselves."""
    return x


def decode_predictions(preds, top=5):
    """Top classes of ImageNet predictions: [[(class_id, name, score), ...], ...]."""
    return _common.decode_imagenet(preds, top)
