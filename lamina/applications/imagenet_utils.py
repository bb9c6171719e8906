"""``keras.applications.imagenet_utils``: the ImageNet preprocessing of any of Keras's modes and the decoding of
(N, 1000) predictions, for the models that have none of their own (see _common.py)."""
from . import _common

__all__ = ["preprocess_input", "decode_predictions"]


def preprocess_input(x, data_format=None, mode="caffe"):
    """ImageNet preprocessing: 'caffe' (RGB -> BGR, minus the per-channel ImageNet mean), 'torch' (to [0, 1], minus
    the mean, over the standard deviation) or 'tf' (to [-1, 1])."""
    if mode not in ("caffe", "tf", "torch"):
        raise ValueError(f"Expected mode to be one of `caffe`, `tf` or `torch`. Received: mode={mode}")
    return _common.preprocess(x, data_format, mode=mode)


def decode_predictions(preds, top=5):
    """Top classes of ImageNet predictions: [[(class_id, name, score), ...], ...] (the class index file is read
    from $LAMINA_HOME/models, see _common.decode_imagenet)."""
    return _common.decode_imagenet(preds, top)
