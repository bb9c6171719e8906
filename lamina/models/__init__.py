"""Models: Sequential, the functional Model over symbolic Inputs, subclassed Models, training, saving."""
from .model import *  # noqa: F401,F403
from .sequential import *  # noqa: F401,F403
from .functional import *  # noqa: F401,F403
from .saving import *  # noqa: F401,F403
from .cloning import clone_model, model_from_json  # noqa: F401

__all__ = ["Model", "Sequential", "Functional", "load_model", "save_model", "load_weights", "save_weights",
           "clone_model", "model_from_json"]
