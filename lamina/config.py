"""``keras.config``: global settings (default float dtype, epsilon, image layout, dtype policy, logging
and debugging switches), with Keras 3.15's names.

``backend()`` answers ``"lamina"``. Keras code tests the backend name to pick backend-specific code:
``"numpy"`` would send it down Keras's NumPy-backend branches, which assume tensors ARE ``np.ndarray``
and that there is no autograd (Keras skips or refuses training there), both false for lamina; a
``"tensorflow"``/``"jax"``/``"torch"`` answer would make it call those libraries on lamina tensors. With
``"lamina"`` such code takes its backend-neutral path, which is written with ``keras.ops`` and works.
"""
import numpy as _np

from . import backend as _backend
from .backend import epsilon, floatx, image_data_format, set_epsilon, set_floatx, set_image_data_format  # noqa: F401
from .threads import get_num_threads, set_num_threads  # noqa: F401  (lamina's own: BLAS threads, lamina/threads.py)

__all__ = [
    "backend", "disable_flash_attention", "disable_interactive_logging", "disable_traceback_filtering",
    "dtype_policy", "enable_flash_attention", "enable_interactive_logging", "enable_traceback_filtering",
    "enable_unsafe_deserialization", "epsilon", "floatx", "image_data_format", "is_flash_attention_enabled",
    "is_interactive_logging_enabled", "is_nnx_enabled", "is_traceback_filtering_enabled", "max_epochs",
    "max_steps_per_epoch", "set_backend", "set_dtype_policy", "set_epsilon", "set_floatx",
    "set_image_data_format", "set_max_epochs", "set_max_steps_per_epoch", "DTypePolicy", "FloatDTypePolicy",
    "get_num_threads", "set_num_threads",
]

_STATE = {
    "traceback_filtering": True,
    "interactive_logging": True,
    "flash_attention": None,      # None: let each layer decide, as Keras
    "unsafe_deserialization": False,
    "max_epochs": None,
    "max_steps_per_epoch": None,
    "dtype_policy": None,         # None: the float policy of floatx()
}


def backend():
    """The backend name Keras code can test: 'lamina' (see the module docstring for why)."""
    return _backend.backend()


def set_backend(backend):
    """Keras reloads itself on another backend here; lamina is its own backend, so only 'lamina' is
    accepted (a no-op) and any other name raises ValueError."""
    if backend != _backend.BACKEND_NAME:
        raise ValueError(f"lamina runs on its own NumPy/CuPy backend and cannot switch to {backend!r}; "
                         "use real Keras for that backend.")


# ----------------------------------------------------------------------------- switches
def enable_traceback_filtering():
    """Turn traceback filtering on (a setting kept for Keras code; lamina's tracebacks are not filtered)."""
    _STATE["traceback_filtering"] = True


def disable_traceback_filtering():
    """Turn traceback filtering off."""
    _STATE["traceback_filtering"] = False


def is_traceback_filtering_enabled():
    """Whether traceback filtering is on (default True)."""
    return _STATE["traceback_filtering"]


def enable_interactive_logging():
    """Log progress interactively (progress bars), the default."""
    _STATE["interactive_logging"] = True


def disable_interactive_logging():
    """Turn interactive logging off."""
    _STATE["interactive_logging"] = False


def is_interactive_logging_enabled():
    """Whether interactive logging is on (default True)."""
    return _STATE["interactive_logging"]


def enable_flash_attention():
    """Ask attention layers for flash attention (lamina computes attention the same way either way)."""
    _STATE["flash_attention"] = True


def disable_flash_attention():
    """Forbid flash attention."""
    _STATE["flash_attention"] = False


def is_flash_attention_enabled():
    """True/False when set, None by default (each layer decides), as in Keras."""
    return _STATE["flash_attention"]


def is_nnx_enabled():
    """Flax NNX integration (JAX only): always False in lamina."""
    return False


def enable_unsafe_deserialization():
    """Allow loading models that hold Python code (lambdas). lamina never runs code from a file, so this
    only records the setting."""
    _STATE["unsafe_deserialization"] = True


def set_max_epochs(max_epochs):
    """A cap on the epochs of every fit() (None: no cap), for quick runs of long scripts."""
    _STATE["max_epochs"] = None if max_epochs is None else int(max_epochs)


def max_epochs():
    """The cap on fit() epochs (None when unset)."""
    return _STATE["max_epochs"]


def set_max_steps_per_epoch(max_steps_per_epoch):
    """A cap on the steps of every epoch (None: no cap)."""
    _STATE["max_steps_per_epoch"] = None if max_steps_per_epoch is None else int(max_steps_per_epoch)


def max_steps_per_epoch():
    """The cap on steps per epoch (None when unset)."""
    return _STATE["max_steps_per_epoch"]


# ----------------------------------------------------------------------------- dtype policy
class DTypePolicy:
    """A dtype policy: the dtype a layer computes in and the dtype of its variables (Keras's DTypePolicy).

    A dtype name ('float32', 'float16', 'int32', ...) is a plain policy: both dtypes are that one.
    'mixed_float16' / 'mixed_bfloat16' compute in 16 bits and keep float32 variables: a layer with such a
    policy casts its floating inputs and, while its call() runs, every float32 weight it reads to the compute
    dtype (the gradients reach the float32 weights), and its outputs come out in 16 bits. NumPy has no
    bfloat16, so a layer refuses the bfloat16 policies (the names are still valid here, as in Keras, for
    files and configs). None: the plain policy of floatx().
    """

    _MIXED = ("mixed_float16", "mixed_bfloat16")

    def __init__(self, name=None):
        name = floatx() if name is None else name
        if not isinstance(name, str):
            raise TypeError(f"'name' must be a string, such as 'mixed_float16'. Received: name={name} "
                            f"(of type {type(name)})")
        if name not in self._MIXED and name != "bfloat16":
            try:
                name = _np.dtype(name).name
            except TypeError:
                raise ValueError(f"Cannot convert '{name}' to a mixed precision DTypePolicy. Valid policies: a "
                                 f"dtype name (float16, float32, float64, bfloat16, int32, ...) or "
                                 f"{', '.join(self._MIXED)}.") from None
        self._name = name

    @property
    def name(self):
        return self._name

    @property
    def compute_dtype(self):
        return self._name.replace("mixed_", "")

    @property
    def variable_dtype(self):
        return "float32" if self._name in self._MIXED else self._name

    @property
    def quantization_mode(self):
        """None: lamina has no quantized policies."""
        return None

    def get_config(self):
        return {"name": self._name}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return isinstance(other, DTypePolicy) and other.name == self.name

    __hash__ = object.__hash__

    def __repr__(self):
        return f'<DTypePolicy "{self._name}">'


class FloatDTypePolicy(DTypePolicy):
    """Keras's older name for a float DTypePolicy (kept for code and files that use it)."""


def set_dtype_policy(policy):
    """Set the global dtype policy: a DTypePolicy or its name ('mixed_float16', 'float32', ...)."""
    if not isinstance(policy, DTypePolicy):
        if not isinstance(policy, str):
            raise ValueError(f"Invalid `policy` argument. Expected the string name of a policy or a "
                             f"DTypePolicy instance. Received: policy={policy} (of type {type(policy)})")
        policy = DTypePolicy(policy)
    _STATE["dtype_policy"] = policy


def dtype_policy():
    """The global dtype policy (by default the plain policy of floatx())."""
    policy = _STATE["dtype_policy"]
    return policy if policy is not None else DTypePolicy(floatx())
