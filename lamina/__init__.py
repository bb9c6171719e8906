"""lamina: a deep-learning library written from scratch on NumPy (and CuPy), with Keras's API.

``import lamina as keras`` serves Keras 3 code for everything lamina implements.
"""
from ._version import __version__  # noqa: F401

from . import backend, config, tree
from .backend import set_device, get_device, floatx
from .tensor import Tensor, Variable, no_grad, enable_grad, grad, is_grad_enabled
from .gradient_tape import GradientTape
from . import ops
from . import activations, initializers, regularizers, constraints
from . import layers
from .layers import Input, Layer
from . import losses, metrics, optimizers, callbacks
from . import models
from .models import *  # noqa: F401,F403  (Sequential, Model, load_model)
from . import utils, datasets, data, random, saving, preprocessing
from . import testing
from . import export  # noqa: F401  (registers model.export formats)
from . import applications  # noqa: F401,E402
from . import distribution  # noqa: F401  (keras.distribution: data-parallel training over MPI)
from . import dtype_policies, mixed_precision  # noqa: F401
from . import distillation  # noqa: F401  (keras.distillation: a student trained on a teacher's outputs)
from . import visualization  # noqa: F401  (keras.visualization: image galleries, boxes and masks drawn in)
# Keras 3's top-level names for the base classes and policies that Keras code subclasses or checks against
from .backend import device, name_scope  # noqa: F401  (``with keras.device("cpu"):``, keras.name_scope)
from .config import DTypePolicy, FloatDTypePolicy  # noqa: F401
from .initializers import Initializer  # noqa: F401
from .layers import InputSpec  # noqa: F401
from .layers.layer import KerasTensor  # noqa: F401
from .layers.operations import Operation  # noqa: F401  (keras.Operation: a custom stateless op's base)
from .losses import Loss  # noqa: F401
from .metrics import Metric  # noqa: F401
from .optimizers import Optimizer  # noqa: F401
from .regularizers import Regularizer  # noqa: F401
from .rematerialization import RematScope, remat  # noqa: F401  (keras.RematScope, keras.remat: gradient checkpointing)
from .scopes import StatelessScope, SymbolicScope  # noqa: F401  (keras.StatelessScope, keras.SymbolicScope)
from .models.functional import Function  # noqa: F401  (keras.Function: a callable graph of ops)


def version():
    """lamina's version (``keras.version()``)."""
    return __version__


def __getattr__(name):
    # keras.wrappers (scikit-learn's estimators around a model): loaded on first use, so that ``import lamina``
    # does not import scikit-learn
    if name == "wrappers":
        import importlib
        return importlib.import_module(__name__ + ".wrappers")   # (``from . import`` would ask this hook again)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
