"""Small ``keras.utils`` helpers: Config, get_source_inputs, is_keras_tensor, standardize_dtype,
clear_session, and the interactive-logging switch."""
import difflib
import json

from ..backend import clear_session as _clear_session
from ..dtypes import standardize_dtype  # noqa: F401
from ..layers.layer import KerasTensor

__all__ = ["Config", "get_source_inputs", "is_keras_tensor", "standardize_dtype", "clear_session",
           "is_interactive_logging_enabled", "enable_interactive_logging", "disable_interactive_logging"]

_INTERACTIVE = {"enabled": True}


def is_interactive_logging_enabled():
    """Whether progress bars and messages are printed to stdout (True by default)."""
    return _INTERACTIVE["enabled"]


def enable_interactive_logging():
    """Print progress bars and messages to stdout (the default)."""
    _INTERACTIVE["enabled"] = True


def disable_interactive_logging():
    """Send progress bars and messages to Python's ``logging`` (logger 'lamina') instead of stdout."""
    _INTERACTIVE["enabled"] = False


def clear_session(free_memory=True):
    """Reset lamina's global state (generated layer names, the default RNG), as ``keras.utils.clear_session``.
    ``free_memory`` is accepted for compatibility: NumPy memory is freed by Python's reference counting."""
    _clear_session()


def is_keras_tensor(x):
    """True for a symbolic tensor (``lamina.Input`` and layer calls on it)."""
    return isinstance(x, KerasTensor)


def get_source_inputs(tensor):
    """The Input tensors that ``tensor`` is computed from (a list; [tensor] for an Input itself)."""
    from ..layers.core import InputLayer
    if not hasattr(tensor, "_history"):
        return [tensor]
    if tensor._history is None:
        return [tensor]
    out, seen, stack = [], set(), [tensor]
    while stack:
        t = stack.pop()
        history = t._history
        if history is None or isinstance(history[0], InputLayer):
            if id(t) not in seen:
                seen.add(id(t))
                out.append(t)
            continue
        layer, node_index, _ = history
        stack.extend(reversed(layer._inbound_nodes[node_index].input_tensors))
    return out


class Config:
    """A dict with attribute access (``config.lr = 1e-3``; ``config.lr``), freezable, and JSON-able, as
    ``keras.utils.Config``."""

    def __init__(self, **kwargs):
        object.__setattr__(self, "_config", dict(kwargs))
        object.__setattr__(self, "_frozen", False)

    @property
    def frozen(self):
        return self._frozen

    def freeze(self):
        object.__setattr__(self, "_frozen", True)

    def unfreeze(self):
        object.__setattr__(self, "_frozen", False)

    def _raise_if_frozen(self):
        if self._frozen:
            raise ValueError("Cannot mutate attribute(s) because the config is frozen.")

    def as_dict(self):
        return dict(self._config)

    def to_json(self):
        return json.dumps(self._config)

    def keys(self):
        return self._config.keys()

    def values(self):
        return self._config.values()

    def items(self):
        return self._config.items()

    def pop(self, *args):
        self._raise_if_frozen()
        return self._config.pop(*args)

    def update(self, *args, **kwargs):
        self._raise_if_frozen()
        return self._config.update(*args, **kwargs)

    def get(self, keyname, value=None):
        return self._config.get(keyname, value)

    def __setattr__(self, name, value):
        if hasattr(type(self), name):
            return object.__setattr__(self, name, value)
        self._raise_if_frozen()
        self._config[name] = value

    def __getattr__(self, name):
        config = object.__getattribute__(self, "_config")
        if name in config:
            return config[name]
        msg = f"Unknown attribute: '{name}'."
        close = difflib.get_close_matches(name, list(config), n=1, cutoff=0.7)
        if close:
            msg += f" Did you mean '{close[0]}'?"
        raise AttributeError(msg)

    def __setitem__(self, key, item):
        self._raise_if_frozen()
        self._config[key] = item

    def __getitem__(self, key):
        return self._config[key]

    def __delitem__(self, key):
        self._raise_if_frozen()
        del self._config[key]

    def __contains__(self, item):
        return item in self._config

    def __iter__(self):
        return iter(sorted(self._config))

    def __len__(self):
        return len(self._config)

    def __repr__(self):
        return f"<Config {self._config}>"
