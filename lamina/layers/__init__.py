"""Keras-named layers, by family. ``lamina.layers.Dense``, ``lamina.layers.Conv2D``, ..."""
from .layer import Layer, InputSpec, KerasTensor, clear_session  # noqa: F401
from . import operations as _operations  # noqa: F401  (keras.ops on symbolic tensors make its nodes)
from .core import *  # noqa: F401,F403
from .convolutional import *  # noqa: F401,F403
from .pooling import *  # noqa: F401,F403
from .normalization import *  # noqa: F401,F403
from .regularization import *  # noqa: F401,F403
from .reshaping import *  # noqa: F401,F403
from .merging import *  # noqa: F401,F403
from .activations import *  # noqa: F401,F403
from .rnn import *  # noqa: F401,F403
from .attention import *  # noqa: F401,F403
from .transformer import *  # noqa: F401,F403
from .preprocessing import *  # noqa: F401,F403
from .text import *  # noqa: F401,F403
from .convolutional_extra import *  # noqa: F401,F403
from .convolutional_recurrent import *  # noqa: F401,F403
from .preprocessing_extra import *  # noqa: F401,F403
from .wrappers_extra import *  # noqa: F401,F403
from .augmentation_color import *  # noqa: F401,F403
from .augmentation_geometric import *  # noqa: F401,F403
from .audio import *  # noqa: F401,F403
from .grouped_attention import *  # noqa: F401,F403
from .hashing import *  # noqa: F401,F403
