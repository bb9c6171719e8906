"""ConvNeXt Tiny/Small/Base/Large/XLarge (Liu et al. 2022): a ResNet modernised after the vision transformers,
with Keras's layer names, arguments and parameter counts (ConvNeXtTiny: 28,589,128).

Each block: 7x7 depthwise convolution, LayerNormalization, pointwise Dense (4x wider), GELU, pointwise Dense
back, a learned per-channel LayerScale, stochastic depth (identity when the rate is 0), plus the block's
input. The input normalisation (ImageNet mean and std, on 0..255 pixels) is inside the model
(include_preprocessing=True), so ``preprocess_input`` is the identity, as Keras's.

The residual sum is an operation, not a layer (Keras writes ``inputs + x``): it runs in the graph and is saved
with the model, but is not listed in ``model.layers``, so the layer list and its count are Keras's.
"""
import numpy as np

from .. import layers, ops
from ..layers.operations import AddOperation  # noqa: F401  (convnext.AddOperation, as before)
from ..layers.layer import Layer
from ..layers.regularization import Dropout
from ..models import Sequential
from . import _common

__all__ = ["ConvNeXtTiny", "ConvNeXtSmall", "ConvNeXtBase", "ConvNeXtLarge", "ConvNeXtXLarge", "LayerScale",
           "StochasticDepth", "preprocess_input", "decode_predictions"]

MODEL_CONFIGS = {   # depths and widths of the four stages, as Keras's
    "tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
    "xlarge": ((3, 3, 27, 3), (256, 512, 1024, 2048)),
}


class LayerScale(Layer):
    """y = x * gamma, gamma a learned (projection_dim,) vector starting at init_values (Touvron et al. 2021).

    Args (Keras's): init_values, projection_dim. Parameters: projection_dim."""

    _keras_module = "keras.src.applications.convnext"

    def __init__(self, init_values, projection_dim, **kwargs):
        super().__init__(**kwargs)
        self.init_values = init_values
        self.projection_dim = int(projection_dim)

    def build(self, input_shape):
        from .. import initializers
        self.gamma = self.add_weight(shape=(self.projection_dim,), name="gamma",
                                     initializer=initializers.Constant(self.init_values), trainable=True)
        self.built = True

    def call(self, inputs):
        return inputs * ops.cast(self.gamma, inputs.dtype)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "init_values": self.init_values, "projection_dim": self.projection_dim}


class StochasticDepth(Dropout):
    """Drops the whole residual branch of a sample with probability drop_path_rate during training (the
    kept ones scaled by 1 / (1 - rate)); the identity at inference. Args (Keras's): drop_path_rate."""

    _keras_module = "keras.src.applications.convnext"

    def __init__(self, drop_path_rate, **kwargs):
        super().__init__(drop_path_rate, **kwargs)
        self.drop_path_rate = self.rate

    def _noise_shape(self, inputs):
        return (inputs.shape[0],) + (1,) * (len(inputs.shape) - 1)

    def get_config(self):
        config = super().get_config()
        for key in ("rate", "noise_shape", "seed"):
            config.pop(key, None)
        return {**config, "drop_path_rate": self.drop_path_rate}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _block(x, projection_dim, drop_path_rate, layer_scale_init_value, name):
    inputs = x
    x = layers.Conv2D(projection_dim, kernel_size=7, padding="same", groups=projection_dim,
                      name=f"{name}_depthwise_conv")(x)
    x = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_layernorm")(x)
    x = layers.Dense(4 * projection_dim, name=f"{name}_pointwise_conv_1")(x)
    x = layers.Activation("gelu", name=f"{name}_gelu")(x)
    x = layers.Dense(projection_dim, name=f"{name}_pointwise_conv_2")(x)
    if layer_scale_init_value is not None:
        x = LayerScale(layer_scale_init_value, projection_dim, name=f"{name}_layer_scale")(x)
    if drop_path_rate:
        x = StochasticDepth(drop_path_rate, name=f"{name}_stochastic_depth")(x)
    else:
        x = layers.Activation("linear", name=f"{name}_identity")(x)
    return AddOperation()(inputs, x)


@_common.builder
def ConvNeXt(depths, projection_dims, drop_path_rate=0.0, layer_scale_init_value=1e-6, default_size=224,
             name="convnext", include_preprocessing=True, include_top=True, weights=None, input_tensor=None,
             input_shape=None, pooling=None, classes=1000, classifier_activation="softmax", weights_name=None):
    """Any ConvNeXt (Keras's keras.src.applications.convnext.ConvNeXt): depths and projection_dims of the
    four stages; drop_path_rate rises linearly from 0 over the blocks."""
    keras_name = {v: k for k, v in _BUILDERS.items()}.get(weights_name, "ConvNeXt")
    _common.check_classes(weights, include_top, classes, name)
    if weights == "imagenet":
        expected = MODEL_CONFIGS.get((weights_name or "").split("convnext_")[-1])
        if expected is None or (tuple(depths), tuple(projection_dims)) != expected:
            raise ValueError(f"{name}: ImageNet weights need the architecture of {weights_name}: depths "
                             f"{expected and expected[0]}, projection_dims {expected and expected[1]}. Received "
                             f"depths={list(depths)}, projection_dims={list(projection_dims)}")
    inputs = _common.image_input(input_tensor, input_shape, default_size, 32, include_top, weights, name)
    x = inputs
    if include_preprocessing and x.shape[-1] == 3:
        x = layers.Normalization(mean=[0.485 * 255, 0.456 * 255, 0.406 * 255],
                                 variance=[(0.229 * 255) ** 2, (0.224 * 255) ** 2, (0.225 * 255) ** 2],
                                 name=f"{name}_prestem_normalization")(x)
    downsample = [Sequential([layers.Conv2D(projection_dims[0], kernel_size=4, strides=4, name=f"{name}_stem_conv"),
                              layers.LayerNormalization(epsilon=1e-6, name=f"{name}_stem_layernorm")],
                             name=f"{name}_stem")]
    for i in range(3):
        downsample.append(Sequential(
            [layers.LayerNormalization(epsilon=1e-6, name=f"{name}_downsampling_layernorm_{i}"),
             layers.Conv2D(projection_dims[i + 1], kernel_size=2, strides=2, name=f"{name}_downsampling_conv_{i}")],
            name=f"{name}_downsampling_block_{i}"))
    rates = [float(r) for r in np.linspace(0.0, drop_path_rate, sum(depths))]
    cur = 0
    for i in range(4):
        x = downsample[i](x)
        for j in range(depths[i]):
            x = _block(x, projection_dims[i], rates[cur + j], layer_scale_init_value, f"{name}_stage_{i}_block_{j}")
        cur += depths[i]
    if include_top:
        x = layers.GlobalAveragePooling2D(name=f"{name}_head_gap")(x)
        x = layers.LayerNormalization(epsilon=1e-6, name=f"{name}_head_layernorm")(x)
        x = layers.Dense(classes, activation=classifier_activation, name=f"{name}_head_dense")(x)
    else:
        if pooling == "avg":
            x = layers.GlobalAveragePooling2D()(x)
        elif pooling == "max":
            x = layers.GlobalMaxPooling2D()(x)
        elif pooling is not None:
            raise ValueError(f"pooling must be None, 'avg' or 'max'. Received: pooling={pooling!r}")
        x = layers.LayerNormalization(epsilon=1e-6)(x)
    return _common.build(inputs, x, name, weights, keras_name, weights_name)


def _builder(size, keras_name):
    default_name = f"convnext_{size}"

    def build(include_top=True, include_preprocessing=True, weights="imagenet", input_tensor=None,
              input_shape=None, pooling=None, classes=1000, classifier_activation="softmax", name=default_name):
        depths, dims = MODEL_CONFIGS[size]
        return ConvNeXt(depths, dims, drop_path_rate=0.0, layer_scale_init_value=1e-6, default_size=224,
                        name=name, include_preprocessing=include_preprocessing, include_top=include_top,
                        weights=weights, input_tensor=input_tensor, input_shape=input_shape, pooling=pooling,
                        classes=classes, classifier_activation=classifier_activation, weights_name=default_name)
    build.__name__ = build.__qualname__ = keras_name
    build.__doc__ = f"""{keras_name}: stages of depths {list(MODEL_CONFIGS[size][0])} and widths {list(MODEL_CONFIGS[size][1])}.

    Args (Keras's): include_top, include_preprocessing (the ImageNet normalisation inside the model; input
    pixels in 0..255), weights (None, 'imagenet': a file placed in $LAMINA_HOME/models, or a path),
    input_tensor, input_shape (default (224, 224, 3); at least 32x32), pooling (None, 'avg', 'max' when
    include_top=False), classes, classifier_activation, name."""
    return build


_BUILDERS = {"ConvNeXtTiny": "convnext_tiny", "ConvNeXtSmall": "convnext_small", "ConvNeXtBase": "convnext_base",
             "ConvNeXtLarge": "convnext_large", "ConvNeXtXLarge": "convnext_xlarge"}
ConvNeXtTiny = _builder("tiny", "ConvNeXtTiny")
ConvNeXtSmall = _builder("small", "ConvNeXtSmall")
ConvNeXtBase = _builder("base", "ConvNeXtBase")
ConvNeXtLarge = _builder("large", "ConvNeXtLarge")
ConvNeXtXLarge = _builder("xlarge", "ConvNeXtXLarge")


def preprocess_input(x, data_format=None):
    """The identity, as Keras's: ConvNeXt normalises its input inside the model (include_preprocessing)."""
    return x


def decode_predictions(preds, top=5):
    """Top classes of ImageNet predictions: [[(class_id, name, score), ...], ...]."""
    return _common.decode_imagenet(preds, top)
