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


# ---------------------------------------------------------------- symbolic tensors (the functional API)
# keras.ops functions called on keras.Input's symbolic tensors build the model's graph, as in Keras 3:
# ``y = ops.mean(x, axis=1)`` between layers becomes a node of the functional model. The public functions
# of these namespaces check their arguments (and the items of list or tuple arguments) for symbolic
# tensors and hand such calls to the layers floor (backend._SYMBOLIC_OP, set by lamina.layers), which makes
# the node; other calls go straight through. lamina's own code calls the kernels of the family modules.
def _install_symbolic_dispatch():
    import functools
    import sys
    import types

    from .. import backend

    untouched = {"shape", "dtype", "is_tensor", "convert_to_numpy", "convert_to_tensor", "result_type",
                 "custom_gradient", "name_scope", "device_scope"}

    import numpy as _np
    from ..tensor import Tensor, Variable

    # arguments that are never symbolic nor hold a symbolic tensor, by exact type: asked first (every call of a
    # public op asks of each argument; holds_keras_tensor's isinstance checks cost ~0.5 us an argument)
    plain = frozenset({Tensor, Variable, _np.ndarray, float, int, bool, str, type(None)})

    def symbolic(args, kwargs):   # (loops: this module's any, all, ... are lamina.ops functions)
        for a in args:
            if type(a) not in plain and backend.holds_keras_tensor(a):
                return True
        for a in kwargs.values():
            if type(a) not in plain and backend.holds_keras_tensor(a):
                return True
        return False

    def wrap(fn):
        @functools.wraps(fn)
        def op(*args, **kwargs):
            if backend._KERAS_TENSOR_TYPES and symbolic(args, kwargs):
                return backend._SYMBOLIC_OP(fn, args, kwargs)
            return fn(*args, **kwargs)
        return op

    here = sys.modules[__name__]
    wrapped = {}
    for module in (here, numpy, nn, linalg, core, image):
        names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
        for name in names:
            fn = getattr(module, name, None)
            if (name in untouched or not isinstance(fn, types.FunctionType)
                    or not fn.__module__.startswith(__name__)):
                continue
            if id(fn) not in wrapped:
                wrapped[id(fn)] = (fn, wrap(fn))
            setattr(module, name, wrapped[id(fn)][1])


_install_symbolic_dispatch()
