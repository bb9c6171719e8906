"""keras.config, keras.backend and keras.tree through ``import lamina as keras``, against Keras 3.15.

keras.tree is compared with Keras's optree implementation (the one Keras runs on every backend but
torch) and, on structures where the two agree, with ``keras.tree`` as the torch backend runs it."""
import collections
import inspect
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

from lazy_modules import lazy_module  # noqa: E402  (tests/lazy_modules.py)
real = lazy_module("keras", skip=False)
import numpy as np  # noqa: E402
import pytest  # noqa: E402
optree_impl = lazy_module("keras.src.tree.optree_impl", skip=False)

import lamina as keras  # noqa: E402

Point = collections.namedtuple("Point", "y x")

STRUCTURES = [
    1, None, "leaf", np.ones(2), [], (), {},
    [1, 2, (3, None)],
    {"b": 1, "a": [2, {"d": 3, "c": (4, 5)}], "c": None},
    (1, [2, [3, [4]]], {"z": (), "y": [None]}),
    Point(1, {"q": 2, "p": [3]}),
    [Point(x=(1, 2), y=None), {"k": Point(3, 4)}],
    collections.OrderedDict([("b", 1), ("a", [2, 3])]),
    {"outer": collections.OrderedDict([("z", 1), ("a", 2)]), "inner": {"b": 3, "a": 4}},
    collections.defaultdict(list, {"b": [1], "a": [2]}),
]


def _eq(a, b):
    """Structural equality that also compares types (list vs tuple) and arrays by value."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    if isinstance(a, dict):
        return list(a.keys()) == list(b.keys()) and all(_eq(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_eq(x, y) for x, y in zip(a, b))
    return a == b


def _plus(x):
    return None if x is None else (x + 1 if isinstance(x, (int, np.ndarray)) else x)


# ----------------------------------------------------------------------------- namespaces
@pytest.mark.parametrize("ns", ["config", "backend", "tree"])
def test_every_public_name_of_keras_exists_with_its_parameters(ns):
    ours, theirs = getattr(keras, ns), getattr(real, ns)
    for name in sorted(n for n in dir(theirs) if not n.startswith("_")):
        assert hasattr(ours, name), f"keras.{ns}.{name} is missing"
        a, b = getattr(ours, name), getattr(theirs, name)
        if inspect.isfunction(b):
            pa, pb = inspect.signature(a).parameters, inspect.signature(b).parameters
            assert list(pa) == list(pb), (name, list(pa), list(pb))
            assert [p.default for p in pa.values()] == [p.default for p in pb.values()], name


# ----------------------------------------------------------------------------- config / backend
def test_backend_name_and_defaults():
    assert keras.config.backend() == keras.backend.backend() == "lamina"
    keras.config.set_backend("lamina")
    with pytest.raises(ValueError):
        keras.config.set_backend("jax")
    assert keras.config.floatx() == keras.backend.floatx() == real.config.floatx() == "float32"
    assert keras.config.epsilon() == keras.backend.epsilon() == real.config.epsilon()
    assert keras.config.image_data_format() == real.config.image_data_format() == "channels_last"
    for name in ("is_traceback_filtering_enabled", "is_interactive_logging_enabled", "is_flash_attention_enabled",
                 "is_nnx_enabled", "max_epochs", "max_steps_per_epoch"):
        assert getattr(keras.config, name)() == getattr(real.config, name)(), name


def test_setters_round_trip_and_validate():
    try:
        keras.config.set_floatx("float64")
        assert keras.backend.floatx() == "float64"
        assert keras.ops.convert_to_tensor(1.5).dtype == np.float64
        with pytest.raises(ValueError, match="floatx"):
            keras.config.set_floatx("int32")
        keras.config.set_epsilon(1e-4)
        assert keras.backend.epsilon() == 1e-4
        keras.backend.set_image_data_format("channels_first")
        assert keras.config.image_data_format() == "channels_first"
        with pytest.raises(ValueError, match="data_format"):
            keras.config.set_image_data_format("nhwc")
        for on, off, get in (("enable_traceback_filtering", "disable_traceback_filtering", "is_traceback_filtering_enabled"),
                             ("enable_interactive_logging", "disable_interactive_logging", "is_interactive_logging_enabled"),
                             ("enable_flash_attention", "disable_flash_attention", "is_flash_attention_enabled")):
            getattr(keras.config, off)()
            assert getattr(keras.config, get)() is False
            getattr(keras.config, on)()
            assert getattr(keras.config, get)() is True
        keras.config.set_max_epochs(3)
        keras.config.set_max_steps_per_epoch(5)
        assert (keras.config.max_epochs(), keras.config.max_steps_per_epoch()) == (3, 5)
        keras.config.enable_unsafe_deserialization()
    finally:
        keras.config.set_floatx("float32")
        keras.config.set_epsilon(1e-7)
        keras.config.set_image_data_format("channels_last")
        keras.config.set_max_epochs(None)
        keras.config.set_max_steps_per_epoch(None)
        keras.config.enable_traceback_filtering()
        keras.config.enable_interactive_logging()
        keras.config._STATE["flash_attention"] = None
        keras.config._STATE["unsafe_deserialization"] = False


def test_dtype_policy_like_keras():
    try:
        for name in ("float32", "mixed_float16", "mixed_bfloat16", "float16"):
            keras.config.set_dtype_policy(name)
            real.config.set_dtype_policy(name)
            a, b = keras.config.dtype_policy(), real.config.dtype_policy()
            assert (a.name, a.compute_dtype, a.variable_dtype) == (b.name, b.compute_dtype, b.variable_dtype)
            assert repr(a) == repr(b)
        assert keras.config.floatx() == "float32"  # a policy does not change floatx
        with pytest.raises(ValueError):
            keras.config.set_dtype_policy("int7")
        with pytest.raises(ValueError):
            keras.config.set_dtype_policy(3)
    finally:
        keras.config._STATE["dtype_policy"] = None
        real.config.set_dtype_policy("float32")
    assert keras.config.dtype_policy().name == "float32"


def test_backend_functions_match_keras():
    for d in ("float16", "bfloat16", "float64", "int8", "uint32", "bool", np.float32, np.dtype("int64"), int, float):
        assert keras.backend.standardize_dtype(d) == real.backend.standardize_dtype(d)
        assert keras.backend.is_float_dtype(d) == real.backend.is_float_dtype(d), d
        assert keras.backend.is_int_dtype(d) == real.backend.is_int_dtype(d), d
    for args in (("int8", "uint8"), ("int32", "float16"), ("float32", "float64"), ("bool", "int32"), ("int32", float), ("uint8", int)):
        assert keras.backend.result_type(*args) == real.backend.result_type(*args), args
    assert keras.backend.is_keras_tensor(keras.Input((2,)))
    assert not keras.backend.is_keras_tensor(keras.ops.ones((2,)) if hasattr(keras.ops, "ones") else keras.Tensor([1.0]))
    keras.backend.clear_session()
    assert keras.backend.get_uid("thing") == 1 and keras.backend.get_uid("thing") == 2
    keras.layers.Dense(2)
    assert keras.backend.get_uid("dense") == 2  # shares the automatic-name counter, as in Keras
    keras.backend.clear_session(free_memory=False)
    assert keras.layers.Dense(2).name == "dense"


# ----------------------------------------------------------------------------- tree
@pytest.mark.parametrize("s", STRUCTURES, ids=range(len(STRUCTURES)))
def test_tree_matches_keras_optree(s):
    t = keras.tree
    flat = t.flatten(s)
    assert _eq(flat, optree_impl.flatten(s))
    assert _eq(t.flatten_with_path(s), optree_impl.flatten_with_path(s))
    assert t.is_nested(s) == optree_impl.is_nested(s)
    assert _eq(t.pack_sequence_as(s, flat), optree_impl.pack_sequence_as(s, flat))
    assert _eq(t.map_structure(_plus, s), optree_impl.map_structure(_plus, s))
    assert _eq(t.map_structure(lambda a, b: (a, b), s, s), optree_impl.map_structure(lambda a, b: (a, b), s, s))
    assert _eq(t.map_structure(_plus, s, none_is_leaf=False), optree_impl.map_structure(_plus, s, none_is_leaf=False))
    assert _eq(t.lists_to_tuples(s), optree_impl.lists_to_tuples(s))
    assert _eq(t.traverse(lambda x: None, s), optree_impl.traverse(lambda x: None, s))
    seen_ours, seen_theirs = [], []
    t.traverse(lambda x: seen_ours.append(repr(x)), s, top_down=False)
    optree_impl.traverse(lambda x: seen_theirs.append(repr(x)), s, top_down=False)
    assert seen_ours == seen_theirs
    t.assert_same_structure(s, optree_impl.map_structure(lambda x: 0, s))
    t.assert_same_paths(s, s)


def test_tree_matches_keras_torch_on_plain_structures():
    s = {"b": [1, (2, None)], "a": (3, [4, 5]), "c": ()}
    assert real.tree.flatten(s) == keras.tree.flatten(s) == [3, 4, 5, 1, 2, None]
    assert real.tree.flatten_with_path(s) == keras.tree.flatten_with_path(s)
    # torch's pytree rebuilds dicts in sorted key order, optree (and lamina) in the original order: compare
    # without key order there
    assert real.tree.pack_sequence_as(s, list(range(6))) == keras.tree.pack_sequence_as(s, list(range(6)))
    assert real.tree.map_structure(_plus, s) == keras.tree.map_structure(_plus, s)


def test_tree_traverse_top_down_and_map_to_none():
    s = [1, (2, 3), {"a": [4]}]
    for fn in (lambda x: 0 if isinstance(x, tuple) else None,
               lambda x: keras.tree.MAP_TO_NONE if x == 2 else None,
               lambda x: [9] if isinstance(x, dict) else None):
        fn_real = (lambda f: lambda x: real.tree.MAP_TO_NONE if f(x) is keras.tree.MAP_TO_NONE else f(x))(fn)
        for top_down in (True, False):
            assert _eq(keras.tree.traverse(fn, s, top_down=top_down), optree_impl.traverse(fn_real, s, top_down=top_down))


def test_tree_errors_and_up_to():
    t = keras.tree
    for a, b in (([1, (2,)], [3, [4]]), ([1, 2], [3]), ({"a": 1}, {"b": 1}), ([1], [[1]])):
        with pytest.raises(ValueError):
            optree_impl.assert_same_structure(a, b)
        with pytest.raises(ValueError):
            t.assert_same_structure(a, b)
    with pytest.raises(ValueError):
        t.assert_same_paths({"a": 1}, {"a": [2]})
    t.assert_same_paths([1, 2], (3, 4))  # paths only: list and tuple agree
    with pytest.raises(ValueError):
        t.pack_sequence_as([1, 2], [1])
    up = t.map_structure_up_to({"a": 0, "b": 0}, lambda a, b: (a, b), {"a": [1], "b": 2}, {"a": 3, "b": 4})
    assert up == optree_impl.map_structure_up_to({"a": 0, "b": 0}, lambda a, b: (a, b), {"a": [1], "b": 2},
                                                 {"a": 3, "b": 4})
    shapes = {"a": (2, 3), "b": [None, 4], "c": [(1,), (5, 6)]}
    assert t.map_shape_structure(len, shapes) == optree_impl.map_shape_structure(len, shapes)
    with pytest.raises(TypeError):
        t.flatten({"b": 1, 2: 3})
