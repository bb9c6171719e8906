"""Differentiable functions, one family per file, re-exported flat: ``lamina.ops.conv2d`` etc."""
from .math import *  # noqa: F401,F403
from .manipulation import *  # noqa: F401,F403
from .activations import *  # noqa: F401,F403
from .image import *  # noqa: F401,F403
from .losses import *  # noqa: F401,F403
from .convolution import *  # noqa: F401,F403
from .normalization import *  # noqa: F401,F403
from .random import *  # noqa: F401,F403
from .recurrent import *  # noqa: F401,F403
from .attention import *  # noqa: F401,F403
from .embedding import *  # noqa: F401,F403
