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

# The public Keras namespaces. They come last so that, where a kernel above shares a Keras name, the
# flat ``lamina.ops.NAME`` is Keras's function (same arguments); lamina's own code imports kernels
# from their family modules.
from .numpy import *  # noqa: F401,F403,E402
from .nn import *  # noqa: F401,F403,E402
from .linalg import *  # noqa: F401,F403,E402
from .core import *  # noqa: F401,F403,E402
from . import numpy, nn, linalg, image, core  # noqa: F401,E402
