"""Utilities with Keras's names: set_random_seed, to_categorical, pad_sequences, ..."""
from ..backend import set_random_seed  # noqa: F401
from ..registry import register_keras_serializable  # noqa: F401
from .data_utils import *  # noqa: F401,F403
from .progbar import Progbar  # noqa: F401
from .packing import pack_x_y_sample_weight, unpack_x_y_sample_weight  # noqa: F401
