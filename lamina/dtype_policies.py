"""``keras.dtype_policies``: the dtype policies (what a layer computes in, what its variables are) by name,
object or serialized config, with Keras 3.15's names, and ``DTypePolicyMap``, which gives each layer the policy
of its path. The plain policies themselves live in lamina.config; lamina has no quantized policies (Keras's
QuantizedDTypePolicy family)."""
import re
from collections.abc import MutableMapping

from .config import DTypePolicy, FloatDTypePolicy, dtype_policy

__all__ = ["DTypePolicy", "FloatDTypePolicy", "DTypePolicyMap", "get", "serialize", "deserialize"]


class DTypePolicyMap(DTypePolicy, MutableMapping):
    """Layer paths -> DTypePolicy, itself usable as a layer's ``dtype`` (``keras.dtype_policies.DTypePolicyMap``).

    A layer given a map (``Dense(8, dtype=policy_map)``, or a block that passes its own ``dtype_policy`` on to
    the layers it makes) computes and keeps its variables in the policy of its path (``layer.path``, known from
    its build on): the policy stored under that exact path, else under the one key that matches the path in full
    as a regular expression (``"encoder/.*"``; two matching keys are a ValueError), else the map's default.
    ``layer.dtype_policy`` is the map itself; setting it on a built layer sets the policy of its path in the map.

    Args:
        default_policy: the policy of the paths no key matches (a name, a DTypePolicy or a serialized one); None:
            the global policy when the map is made (``keras.config.dtype_policy()``).
        policy_map: a dict of path (or pattern) -> policy (names and serialized policies are read as policies).

    >>> from lamina import dtype_policies
    >>> m = dtype_policies.DTypePolicyMap("float32", {"block/dense": "float16", "head/.*": "float64"})
    >>> m["block/dense"].name, m["head/out"].name, m["block/other"].name, m.name
    ('float16', 'float64', 'float32', 'map_float32')
    """

    def __init__(self, default_policy=None, policy_map=None):
        if isinstance(default_policy, DTypePolicyMap):
            raise ValueError("`default_policy` cannot be a `DTypePolicyMap`.")
        if policy_map is not None and not isinstance(policy_map, dict):
            raise TypeError(f"If specified, `policy_map` must be a dict. Received: policy_map={policy_map} of type "
                            f"{type(policy_map)}")
        self._default_policy_arg = default_policy
        self._default_policy = get(default_policy)
        self._policy_map = {}
        for key, policy in (policy_map or {}).items():
            self[key] = policy

    @property
    def name(self):
        return f"map_{self.default_policy.name}"

    @property
    def default_policy(self):
        """The policy of the paths no key matches."""
        return self._default_policy

    @property
    def variable_dtype(self):
        return self.default_policy.variable_dtype

    @property
    def compute_dtype(self):
        return self.default_policy.compute_dtype

    @property
    def quantization_mode(self):
        return self.default_policy.quantization_mode

    def __getitem__(self, key):
        """The policy of a path: its own key, else the one key that matches it in full as a regular expression,
        else the default policy."""
        if key in self._policy_map:
            return self._policy_map[key]
        found = [pattern for pattern in self._policy_map if re.fullmatch(pattern, key)]
        if len(found) > 1:
            raise ValueError(f"Path '{key}' matches multiple dtype policy specification keys: {found}. Each path may "
                             "match at most one key of the DTypePolicyMap.")
        return self._policy_map[found[0]] if found else self.default_policy

    def __setitem__(self, key, policy):
        if key in self._policy_map:
            raise ValueError(f"{key} already exist in the DTypePolicyMap with value {self._policy_map[key]}. A key "
                             "can be set once (delete it first to change it).")
        try:
            policy = get(policy)
        except Exception:
            raise ValueError("Cannot interpret the assigned value by `keras.dtype_policies.get`. "
                             f"Received: {policy} of type {type(policy)}") from None
        self._policy_map[key] = policy

    def __delitem__(self, key):
        del self._policy_map[key]

    def __contains__(self, key):
        return key in self._policy_map

    def __len__(self):
        return len(self._policy_map)

    def __iter__(self):
        return iter(self._policy_map)

    def __eq__(self, other):
        return (isinstance(other, DTypePolicyMap) and self.default_policy == other.default_policy
                and self._policy_map == other._policy_map)

    __hash__ = object.__hash__

    def get_config(self):
        default = self._default_policy_arg
        if isinstance(default, DTypePolicy):
            default = serialize(default)
        return {"default_policy": default, "policy_map": {k: serialize(v) for k, v in self._policy_map.items()}}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        config["policy_map"] = {k: get(v) for k, v in (config.get("policy_map") or {}).items()}
        return cls(**config)

    def __repr__(self):
        mapping = [(k, v.name) for k, v in self._policy_map.items()]
        return f"<DTypePolicyMap at {hex(id(self))} default_policy={self.default_policy.name}, mapping={mapping}>"


_CLASSES = {"DTypePolicy": DTypePolicy, "FloatDTypePolicy": FloatDTypePolicy, "DTypePolicyMap": DTypePolicyMap}


def serialize(dtype_policy):
    """A policy as Keras writes it in a model's config."""
    module = "keras.dtype_policies" if isinstance(dtype_policy, DTypePolicyMap) else "keras"
    return {"module": module, "class_name": type(dtype_policy).__name__, "config": dtype_policy.get_config(),
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
    if name == "DTypePolicyMap":
        return DTypePolicyMap.from_config(config["config"], custom_objects)
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
