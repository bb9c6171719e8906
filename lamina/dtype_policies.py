"""``keras.dtype_policies``: the dtype policies (what a layer computes in, what its variables are) by name,
object or serialized config, with Keras 3.15's names. The policies themselves live in lamina.config;
lamina has no quantized policies (Keras's QuantizedDTypePolicy family and DTypePolicyMap)."""
from .config import DTypePolicy, FloatDTypePolicy, dtype_policy

__all__ = ["DTypePolicy", "FloatDTypePolicy", "get", "serialize", "deserialize"]

_CLASSES = {"DTypePolicy": DTypePolicy, "FloatDTypePolicy": FloatDTypePolicy}


def serialize(dtype_policy):
    """A policy as Keras writes it in a model's config."""
    return {"module": "keras", "class_name": type(dtype_policy).__name__, "config": dtype_policy.get_config(),
            "registered_name": None}


def deserialize(config, custom_objects=None):
    """The policy of a serialized config (Keras's ``{'class_name': ..., 'config': {'name': ...}}``)."""
    if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
        raise ValueError(f"Cannot deserialize a dtype policy from {config!r}: expected a dict with 'class_name' "
                         "and 'config'.")
    name = config.get("class_name")
    if name not in _CLASSES:
        raise ValueError(f"Unknown dtype policy class {name!r}. lamina knows {', '.join(_CLASSES)} (no quantized "
                         "policies).")
    return DTypePolicy(**config["config"])


def get(identifier):
    """A policy from its name, serialized config or itself; None gives the global policy."""
    if identifier is None:
        return dtype_policy()
    if isinstance(identifier, DTypePolicy):
        return identifier
    if isinstance(identifier, dict):
        return deserialize(identifier)
    if isinstance(identifier, str):
        return DTypePolicy(identifier)
    raise ValueError("Cannot interpret `dtype` argument. Expected a string or an instance of DTypePolicy. "
                     f"Received: dtype={identifier}")
