"""What every ``keras.applications`` builder shares: the input, the classifier head, the weights argument,
and ``preprocess_input`` / ``decode_predictions``.

Pretrained weights cannot be downloaded here. ``weights="imagenet"`` loads a file the user placed in
``$LAMINA_HOME/models/`` (a ``.keras`` model or a ``.weights.h5`` weights file in Keras 3's layout, saved by
Keras from the same architecture); without one it stops with a message saying where to put it.
``weights=None`` gives a randomly initialised model, ``weights="path"`` loads that file.
"""
import functools
import inspect
import json
import os
import sys

import numpy as np

from .. import layers, ops
from ..backend import is_keras_tensor
from ..tensor import Tensor
from ..io.limits import weight_budget
from ..models import Model
from ..utils.data_utils import lamina_home
from ..utils.general import get_source_inputs

__all__ = ["builder", "image_input", "classifier_head", "load_weights", "preprocess", "decode_imagenet"]


def builder(fn):
    """An architecture's builder (a function with a ``weights`` argument). When the weights come from a file
    (``weights="imagenet"`` or a path) its layers start at zeros, as a model loaded from a file does, instead of
    random draws the file's values then replace (ConvNeXtXLarge: 350 M draws, ~3 s; a missing ImageNet file
    was only reported after them). Loading matches every weight of the model, so a file that leaves one out
    still fails, and ``weights=None`` draws exactly as before."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def build(*args, **kwargs):
        weights = signature.bind(*args, **kwargs).arguments.get("weights", signature.parameters["weights"].default)
        if weights is None:
            return fn(*args, **kwargs)
        with weight_budget(sys.maxsize, str(weights)):   # no bound: the architecture is the code's, not a file's
            return fn(*args, **kwargs)
    return build


def image_input(input_tensor, input_shape, default_size, min_size, include_top, weights, name):
    """The model's Input, checking the shape as Keras does (3 channels, at least min_size)."""
    if weights not in (None, "imagenet") and not (isinstance(weights, str) and os.path.exists(weights)):
        raise ValueError(f"{name}: the `weights` argument should be None (random initialisation), 'imagenet' or "
                         f"the path to a weights file. Received: weights={weights!r}")
    if input_shape is None:
        input_shape = (default_size, default_size, 3) if include_top or weights == "imagenet" else (None, None, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(f"{name}: input_shape must be (height, width, channels). Received: {input_shape}")
    if include_top and weights == "imagenet" and input_shape != (default_size, default_size, 3):
        raise ValueError(f"{name}: with include_top=True and ImageNet weights the input must be "
                         f"({default_size}, {default_size}, 3). Received: {input_shape}")
    for d in input_shape[:2]:
        if d is not None and d < min_size:
            raise ValueError(f"{name}: input height and width must be at least {min_size}. Received: {input_shape}")
    if input_tensor is not None:
        return input_tensor
    return layers.Input(shape=input_shape)


def classifier_head(x, include_top, pooling, classes, classifier_activation, pool_names=("avg_pool", "max_pool")):
    if include_top:
        x = layers.GlobalAveragePooling2D(name=pool_names[0])(x)
        return layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    if pooling == "avg":
        return layers.GlobalAveragePooling2D(name=pool_names[0])(x)
    if pooling == "max":
        return layers.GlobalMaxPooling2D(name=pool_names[1])(x)
    if pooling is not None:
        raise ValueError(f"pooling must be None, 'avg' or 'max'. Received: pooling={pooling!r}")
    return x


def check_classes(weights, include_top, classes, name):
    if weights == "imagenet" and include_top and classes != 1000:
        raise ValueError(f"{name}: with weights='imagenet' and include_top=True, classes must be 1000. "
                         f"Received: classes={classes}")


def build(inputs, outputs, name, weights, keras_name, weights_name=None):
    """The model; with weights='imagenet', loaded from ``$LAMINA_HOME/models/<weights_name>.weights.h5`` (or
    ``.keras``), weights_name defaulting to the architecture's lower-case name (never the model's name=).
    An ``input_tensor`` computed from an Input (``preprocess_input(Input(...))``) makes that Input the model's,
    as Keras takes the tensor's source inputs, so the steps before the tensor are part of the model."""
    if is_keras_tensor(inputs):
        sources = get_source_inputs(inputs)
        inputs = sources[0] if len(sources) == 1 else sources
    model = Model(inputs, outputs, name=name)
    if weights == "imagenet":
        folder = os.path.join(lamina_home(), "models")
        stem = weights_name or keras_name.lower()
        candidates = [os.path.join(folder, f"{stem}{ext}") for ext in (".weights.h5", ".keras")]
        found = next((c for c in candidates if os.path.isfile(c)), None)
        if found is None:
            raise FileNotFoundError(
                f"{name}: ImageNet weights are not downloaded by lamina. Save them from Keras (keras.applications."
                f"{keras_name}(weights='imagenet').save_weights(...)) and place the file at {candidates[0]} (or a "
                f"whole model at {candidates[1]}); or pass weights=None for random initialisation.")
        load_weights(model, found)
    elif weights is not None:
        load_weights(model, weights)
    return model


def load_weights(model, path):
    if path.endswith(".keras"):
        from ..models import load_model
        source = load_model(path, compile=False)
        model.set_weights(source.get_weights())
    else:
        model.load_weights(path)


def preprocess(x, data_format=None, mode="caffe"):
    """ImageNet preprocessing as Keras's modes: 'caffe' (RGB -> BGR, minus the per-channel ImageNet mean),
    'torch' (to [0, 1], minus mean, over std), 'tf' (to [-1, 1]). A Tensor or a symbolic tensor (a model's
    Input) gives a Tensor or a symbolic tensor, by ops, as Keras; anything else a new NumPy array."""
    if isinstance(x, Tensor) or is_keras_tensor(x):
        return _preprocess_tensor(x, data_format, mode)
    x = np.asarray(x)
    x = x.astype("float32") if not np.issubdtype(x.dtype, np.floating) else x.copy()
    if data_format not in (None, "channels_last"):
        raise ValueError(f"Only data_format='channels_last' is supported. Received: {data_format!r}")
    if mode == "tf":
        return x / 127.5 - 1.0
    if mode == "torch":
        x = x / 255.0
        return ((x - np.array([0.485, 0.456, 0.406], x.dtype)) / np.array([0.229, 0.224, 0.225], x.dtype))
    x = x[..., ::-1]
    return x - np.array([103.939, 116.779, 123.68], x.dtype)


def _preprocess_tensor(x, data_format, mode):
    if data_format not in (None, "channels_last"):
        raise ValueError(f"Only data_format='channels_last' is supported. Received: {data_format!r}")
    if not np.issubdtype(np.dtype(x.dtype), np.floating):
        x = ops.cast(x, "float32")
    if mode == "tf":
        return x / 127.5 - 1.0
    if mode == "torch":
        return (x / 255.0 - np.array([0.485, 0.456, 0.406], "float32")) / np.array([0.229, 0.224, 0.225], "float32")
    return ops.flip(x, axis=-1) - np.array([103.939, 116.779, 123.68], "float32")


def decode_imagenet(preds, top=5):
    """[[(class_id, class_name, score), ...] per sample] from (N, 1000) ImageNet scores. Needs Keras's
    ``imagenet_class_index.json`` placed in ``$LAMINA_HOME/models/`` (lamina does not download it)."""
    preds = np.asarray(preds)
    if preds.ndim != 2 or preds.shape[1] != 1000:
        raise ValueError("decode_predictions expects a batch of predictions (i.e. a 2D array of shape "
                         f"(samples, 1000)). Received array with shape: {preds.shape}")
    path = os.path.join(lamina_home(), "models", "imagenet_class_index.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"decode_predictions needs the ImageNet class index: place Keras's "
                                f"imagenet_class_index.json at {path}")
    if os.path.getsize(path) > 1 << 20:
        raise ValueError(f"{path}: larger than a class index can be (1 MiB)")
    with open(path, encoding="utf-8") as f:
        index = json.load(f)
    out = []
    for row in preds:
        best = np.argsort(row)[::-1][:top]
        out.append([(*index[str(int(i))], float(row[i])) for i in best])
    return out
