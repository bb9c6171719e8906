"""``keras.preprocessing``: image and sequence helpers and the dataset builders, at Keras 3's paths.

``lamina.preprocessing.image`` (array_to_img, img_to_array, load_img, save_img, smart_resize),
``lamina.preprocessing.sequence`` (pad_sequences); the ``*_dataset_from_*`` functions return lamina
PyDatasets of NumPy batches where Keras returns tf.data datasets (see lamina.utils.dataset_utils).
"""
from ..utils.dataset_utils import (image_dataset_from_directory, text_dataset_from_directory,  # noqa: F401
                                   timeseries_dataset_from_array)
from . import image, sequence  # noqa: F401

__all__ = ["image", "sequence", "image_dataset_from_directory", "text_dataset_from_directory",
           "timeseries_dataset_from_array"]
