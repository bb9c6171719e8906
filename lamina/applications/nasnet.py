"""NASNet-A Mobile and Large (Zoph et al. 2018): cells found by architecture search (separable convolutions,
poolings and identities summed in pairs, concatenated), with Keras's layer names, arguments and parameter
counts (NASNetMobile 5,326,716; NASNetLarge 88,949,818). Most layers are unnamed in Keras too (activation_<k>,
zero_padding2d_<k>, ...), so the names match Keras's in a fresh session (after clear_session())."""
from .. import layers
from . import _common
from .mobilenet_v2 import _correct_pad

__all__ = ["NASNetMobile", "NASNetLarge", "preprocess_input", "decode_predictions"]


def _bn(name=None):
    return layers.BatchNormalization(axis=-1, momentum=0.9997, epsilon=1e-3, name=name)


def _conv1x1(x, filters, name):
    return layers.Conv2D(filters, (1, 1), padding="same", use_bias=False, name=name,
                         kernel_initializer="he_normal")(x)


def _separable_block(x, filters, kernel_size=(3, 3), strides=(1, 1), block_id=None):
    """ReLU, separable convolution (stride-2 ones after Keras's explicit padding), BN, ReLU, separable, BN."""
    x = layers.Activation("relu")(x)
    if strides == (2, 2):
        x = layers.ZeroPadding2D(padding=_correct_pad(x, kernel_size[0]), name=f"separable_conv_1_pad_{block_id}")(x)
    x = layers.SeparableConv2D(filters, kernel_size, strides=strides, name=f"separable_conv_1_{block_id}",
                               padding="valid" if strides == (2, 2) else "same", use_bias=False)(x)
    x = _bn(f"separable_conv_1_bn_{block_id}")(x)
    x = layers.Activation("relu")(x)
    x = layers.SeparableConv2D(filters, kernel_size, name=f"separable_conv_2_{block_id}", padding="same",
                               use_bias=False)(x)
    return _bn(f"separable_conv_2_bn_{block_id}")(x)


def _adjust(p, ip, filters, block_id):
    """The previous cell's output p brought to ip's size (two half-width paths, one shifted a pixel) or to
    `filters` channels (a 1x1 projection)."""
    if p is None:
        return ip
    if p.shape[-2] != ip.shape[-2]:
        p = layers.Activation("relu", name=f"adjust_relu_1_{block_id}")(p)
        p1 = layers.AveragePooling2D((1, 1), strides=(2, 2), padding="valid", name=f"adjust_avg_pool_1_{block_id}")(p)
        p1 = _conv1x1(p1, filters // 2, f"adjust_conv_1_{block_id}")
        p2 = layers.ZeroPadding2D(padding=((0, 1), (0, 1)))(p)
        p2 = layers.Cropping2D(cropping=((1, 0), (1, 0)))(p2)
        p2 = layers.AveragePooling2D((1, 1), strides=(2, 2), padding="valid",
                                     name=f"adjust_avg_pool_2_{block_id}")(p2)
        p2 = _conv1x1(p2, filters // 2, f"adjust_conv_2_{block_id}")
        p = layers.Concatenate(axis=-1)([p1, p2])
        return _bn(f"adjust_bn_{block_id}")(p)
    if p.shape[-1] != filters:
        p = layers.Activation("relu")(p)
        p = _conv1x1(p, filters, f"adjust_conv_projection_{block_id}")
        return _bn(f"adjust_bn_{block_id}")(p)
    return p


def _cell_input(ip, p, filters, block_id, kind):
    p = _adjust(p, ip, filters, block_id)
    h = layers.Activation("relu")(ip)
    h = _conv1x1(h, filters, f"{kind}_conv_1_{block_id}")
    return p, _bn(f"{kind}_bn_1_{block_id}")(h)


def _avg3(x, strides, padding, name):
    return layers.AveragePooling2D((3, 3), strides=strides, padding=padding, name=name)(x)


def _normal_cell(ip, p, filters, block_id):
    p, h = _cell_input(ip, p, filters, block_id, "normal")
    sep = _separable_block
    x1 = layers.Add(name=f"normal_add_1_{block_id}")(
        [sep(h, filters, (5, 5), block_id=f"normal_left1_{block_id}"),
         sep(p, filters, block_id=f"normal_right1_{block_id}")])
    x2 = layers.Add(name=f"normal_add_2_{block_id}")(
        [sep(p, filters, (5, 5), block_id=f"normal_left2_{block_id}"),
         sep(p, filters, (3, 3), block_id=f"normal_right2_{block_id}")])
    x3 = layers.Add(name=f"normal_add_3_{block_id}")([_avg3(h, (1, 1), "same", f"normal_left3_{block_id}"), p])
    x4 = layers.Add(name=f"normal_add_4_{block_id}")([_avg3(p, (1, 1), "same", f"normal_left4_{block_id}"),
                                                       _avg3(p, (1, 1), "same", f"normal_right4_{block_id}")])
    x5 = layers.Add(name=f"normal_add_5_{block_id}")([sep(h, filters, block_id=f"normal_left5_{block_id}"), h])
    return layers.Concatenate(axis=-1, name=f"normal_concat_{block_id}")([p, x1, x2, x3, x4, x5]), ip


def _reduction_cell(ip, p, filters, block_id):
    p, h = _cell_input(ip, p, filters, block_id, "reduction")
    h3 = layers.ZeroPadding2D(padding=_correct_pad(h, 3), name=f"reduction_pad_1_{block_id}")(h)
    sep = _separable_block
    x1 = layers.Add(name=f"reduction_add_1_{block_id}")(
        [sep(h, filters, (5, 5), strides=(2, 2), block_id=f"reduction_left1_{block_id}"),
         sep(p, filters, (7, 7), strides=(2, 2), block_id=f"reduction_right1_{block_id}")])
    left = layers.MaxPooling2D((3, 3), strides=(2, 2), padding="valid", name=f"reduction_left2_{block_id}")(h3)
    x2 = layers.Add(name=f"reduction_add_2_{block_id}")(
        [left, sep(p, filters, (7, 7), strides=(2, 2), block_id=f"reduction_right2_{block_id}")])
    left = _avg3(h3, (2, 2), "valid", f"reduction_left3_{block_id}")
    x3 = layers.Add(name=f"reduction_add3_{block_id}")(
        [left, sep(p, filters, (5, 5), strides=(2, 2), block_id=f"reduction_right3_{block_id}")])
    x4 = _avg3(x1, (1, 1), "same", f"reduction_left4_{block_id}")
    x4 = layers.Add()([x2, x4])
    left = sep(x1, filters, (3, 3), block_id=f"reduction_left4_{block_id}")
    right = layers.MaxPooling2D((3, 3), strides=(2, 2), padding="valid", name=f"reduction_right5_{block_id}")(h3)
    x5 = layers.Add(name=f"reduction_add4_{block_id}")([left, right])
    return layers.Concatenate(axis=-1, name=f"reduction_concat_{block_id}")([x2, x3, x4, x5]), ip


@_common.builder
def NASNet(input_shape=None, penultimate_filters=4032, num_blocks=6, stem_block_filters=96, skip_reduction=True,
           filter_multiplier=2, include_top=True, weights="imagenet", input_tensor=None, pooling=None, classes=1000,
           default_size=None, classifier_activation="softmax", name="NASNet"):
    """Any NASNet-A (Keras's keras.src.applications.nasnet.NASNet): a stem, two reduction cells, then three
    groups of num_blocks normal cells separated by reduction cells; widths from penultimate_filters."""
    default_size = default_size or 331
    keras_name = {224: "NASNetMobile", 331: "NASNetLarge"}.get(default_size, "NASNet")
    _common.check_classes(weights, include_top, classes, name)
    if isinstance(input_shape, tuple) and None in input_shape and weights == "imagenet":
        raise ValueError("When specifying the input shape of a NASNet and loading `ImageNet` weights, the "
                         f"input_shape argument must be static (no None entries). Got: `input_shape={input_shape}`.")
    if penultimate_filters % (24 * filter_multiplier ** 2):
        raise ValueError("For NASNet-A models, the `penultimate_filters` must be a multiple of 24 * "
                         f"(`filter_multiplier` ** 2). Current value: {penultimate_filters}")
    inputs = _common.image_input(input_tensor, input_shape, default_size, 32, include_top, weights, name)
    filters = penultimate_filters // 24
    x = layers.Conv2D(stem_block_filters, (3, 3), strides=(2, 2), padding="valid", use_bias=False,
                      name="stem_conv1", kernel_initializer="he_normal")(inputs)
    x = _bn("stem_bn1")(x)
    x, p = _reduction_cell(x, None, filters // filter_multiplier ** 2, "stem_1")
    x, p = _reduction_cell(x, p, filters // filter_multiplier, "stem_2")
    for group, first_id in enumerate((0, num_blocks + 1, 2 * num_blocks + 1)):   # Keras's cell numbering
        width = filters * filter_multiplier ** group
        if group:
            x, p0 = _reduction_cell(x, p, width, f"reduce_{group * num_blocks}")
            p = p if skip_reduction else p0
        for i in range(num_blocks):
            x, p = _normal_cell(x, p, width, f"{first_id + i}")
    x = layers.Activation("relu")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D()(x)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D()(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D()(x)
    elif pooling is not None:
        raise ValueError(f"pooling must be None, 'avg' or 'max'. Received: pooling={pooling!r}")
    return _common.build(inputs, x, name, weights, keras_name, {224: "nasnet_mobile"}.get(default_size, "nasnet_large"))


def NASNetMobile(input_shape=None, include_top=True, weights="imagenet", input_tensor=None, pooling=None,
                 classes=1000, classifier_activation="softmax", name="nasnet_mobile"):
    """NASNet-A Mobile (4 @ 1056): default input (224, 224, 3), at least 32x32.

    Args (Keras's): input_shape, include_top, weights (None, 'imagenet': a file placed in $LAMINA_HOME/models,
    or a path), input_tensor, pooling (None, 'avg', 'max' when include_top=False), classes,
    classifier_activation, name."""
    if not include_top and input_shape is None:
        input_shape = (224, 224, 3)
    return NASNet(input_shape, penultimate_filters=1056, num_blocks=4, stem_block_filters=32, skip_reduction=False,
                  filter_multiplier=2, include_top=include_top, weights=weights, input_tensor=input_tensor,
                  pooling=pooling, classes=classes, default_size=224,
                  classifier_activation=classifier_activation, name=name)


def NASNetLarge(input_shape=None, include_top=True, weights="imagenet", input_tensor=None, pooling=None,
                classes=1000, classifier_activation="softmax", name="nasnet_large"):
    """NASNet-A Large (6 @ 4032): default input (331, 331, 3), at least 32x32.

    Args (Keras's): input_shape, include_top, weights (None, 'imagenet': a file placed in $LAMINA_HOME/models,
    or a path), input_tensor, pooling (None, 'avg', 'max' when include_top=False), classes,
    classifier_activation, name."""
    return NASNet(input_shape, penultimate_filters=4032, num_blocks=6, stem_block_filters=96, skip_reduction=True,
                  filter_multiplier=2, include_top=include_top, weights=weights, input_tensor=input_tensor,
                  pooling=pooling, classes=classes, default_size=331,
                  classifier_activation=classifier_activation, name=name)


def preprocess_input(x, data_format=None):
    """Keras's 'tf' preprocessing for NASNet: pixels scaled to [-1, 1]."""
    return _common.preprocess(x, data_format, mode="tf")


def decode_predictions(preds, top=5):
    """Top classes of ImageNet predictions: [[(class_id, name, score), ...], ...]."""
    return _common.decode_imagenet(preds, top)
