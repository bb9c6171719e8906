"""``keras.utils`` with Keras 3's names: data sets from arrays and directories, PyDataset, image files,
plot_model, serialisation helpers, set_random_seed, to_categorical, pad_sequences, Progbar, FeatureSpace
(structured-data preprocessing), ``bounding_boxes`` (box formats, IoU, anchor deltas), ...

The image augmentation layers do not move
'bounding_boxes' entries of their dict inputs yet (they say so).
"""
from ..backend import set_random_seed  # noqa: F401
from ..data.py_dataset import PyDataset, Sequence  # noqa: F401
from ..saving import (CustomObjectScope, custom_object_scope, deserialize_keras_object,  # noqa: F401
                      get_custom_objects, get_registered_name, get_registered_object,
                      register_keras_serializable, serialize_keras_object)
from . import bounding_boxes, legacy  # noqa: F401
from .data_utils import *  # noqa: F401,F403
from .dataset_utils import (audio_dataset_from_directory, image_dataset_from_directory,  # noqa: F401
                            pack_x_y_sample_weight, text_dataset_from_directory, timeseries_dataset_from_array)
from .feature_space import FeatureSpace  # noqa: F401
from .general import *  # noqa: F401,F403
from .image_utils import array_to_img, img_to_array, load_img, save_img  # noqa: F401
from .model_visualization import model_to_dot, plot_model  # noqa: F401
from .progbar import Progbar  # noqa: F401
from ..data.packing import pack_x_y_sample_weight, unpack_x_y_sample_weight  # noqa: F401
