"""``keras.tree``: nested structures of lists, tuples, namedtuples and dicts, walked as Keras walks them.

Nodes are ``list``, ``tuple``, namedtuples, ``dict`` and ``defaultdict`` (children in sorted key order),
``OrderedDict`` (insertion order) and ``deque``; everything else, ``None`` included, is a leaf. These are
the rules of Keras 3's optree implementation, the one Keras uses on every backend but torch (whose
torch-pytree implementation leaves dicts nested inside other nodes unsorted).

>>> flatten({"b": [1, 2], "a": (3, None)})
[3, None, 1, 2]
>>> pack_sequence_as({"b": [0, 0], "a": 0}, [1, 2, 3])
{'b': [2, 3], 'a': 1}
"""
import collections

__all__ = ["MAP_TO_NONE", "assert_same_paths", "assert_same_structure", "flatten", "flatten_with_path",
           "is_nested", "lists_to_tuples", "map_shape_structure", "map_structure", "map_structure_up_to",
           "pack_sequence_as", "traverse"]


class MAP_TO_NONE:  # noqa: N801 - Keras's name
    """Return this class from a ``traverse`` function to put ``None`` in the result at that place."""


def _is_namedtuple(x):
    return isinstance(x, tuple) and hasattr(type(x), "_fields")


_SEQUENCES = (list, tuple, collections.deque)
_MAPPINGS = (dict, collections.OrderedDict, collections.defaultdict)


def _is_node(x, none_is_leaf=True):
    if x is None:
        return not none_is_leaf
    t = type(x)
    return t in _SEQUENCES or t in _MAPPINGS or _is_namedtuple(x)


def _keys(x):
    """The child keys of a node, in flattening order."""
    if x is None:
        return []
    if isinstance(x, dict):
        if type(x) is collections.OrderedDict:
            return list(x.keys())
        try:
            return sorted(x.keys())
        except TypeError as e:
            raise TypeError(f"The keys of a dict in a structure must be sortable: {e}") from None
    return list(range(len(x)))


def _children(x):
    return [x[k] for k in _keys(x)]


def _rebuild(node, values):
    """A node of node's type (and dict key order) whose children, in flattening order, are values."""
    if node is None:
        return None
    values = list(values)
    t = type(node)
    if isinstance(node, dict):
        keyed = dict(zip(_keys(node), values))
        items = [(k, keyed[k]) for k in node.keys()]  # keep the original key order of the mapping
        if t is collections.defaultdict:
            return collections.defaultdict(node.default_factory, items)
        return t(items)
    if _is_namedtuple(node):
        return t(*values)
    if t is collections.deque:
        return collections.deque(values, maxlen=node.maxlen)
    return t(values)


def is_nested(structure):
    """True when structure is a list, tuple, namedtuple, dict or deque (a node), False for a leaf."""
    return _is_node(structure)


def _flatten(x, out, path=(), none_is_leaf=True, is_leaf=None):
    stack = [(x, path)]
    while stack:
        node, p = stack.pop()
        if (is_leaf is not None and is_leaf(node)) or not _is_node(node, none_is_leaf):
            out.append((p, node))
            continue
        keys = _keys(node)
        for k in reversed(keys):
            stack.append((node[k], p + (k,)))
    return out


def flatten(structure):
    """The leaves of structure, depth first, dict children in sorted key order."""
    return [leaf for _, leaf in _flatten(structure, [])]


def flatten_with_path(structure):
    """[(path, leaf)] for every leaf; a path is the tuple of keys and indices that reaches it."""
    return _flatten(structure, [])


def _count(structure, none_is_leaf=True):
    return len(_flatten(structure, [], none_is_leaf=none_is_leaf))


def pack_sequence_as(structure, flat_sequence):
    """A structure like ``structure`` whose leaves are flat_sequence, in flattening order."""
    flat = list(flat_sequence)
    need = _count(structure)
    if len(flat) != need:
        raise ValueError(f"pack_sequence_as: the structure holds {need} leaves but flat_sequence has "
                         f"{len(flat)} items.")
    it = iter(flat)

    def build(node):
        if not _is_node(node):
            return next(it)
        return _rebuild(node, [build(c) for c in _children(node)])

    return build(structure)


def _check_same(first, other, where):
    """ValueError unless other is a node of first's type with the same keys (first is a node)."""
    if not _is_node(other) or type(other) is not type(first):
        raise ValueError(f"Structures don't have the same nested structure: at {where or 'the top'}, "
                         f"{type(first).__name__} against {type(other).__name__}.")
    if _keys(first) != _keys(other):
        raise ValueError(f"Structures don't have the same nested structure: at {where or 'the top'}, "
                         f"children {_keys(first)} against {_keys(other)}.")


def map_structure(func, *structures, none_is_leaf=True):
    """func applied to each leaf (to the matching leaves of several structures of the same shape).

    With ``none_is_leaf=False`` a ``None`` is an empty node: func is not called and None stays.
    """
    if not structures:
        raise ValueError("Must provide at least one structure")
    first = structures[0]

    def walk(nodes, where):
        head = nodes[0]
        if not _is_node(head, none_is_leaf):
            if len(nodes) > 1 and any(_is_node(n, none_is_leaf) for n in nodes[1:]):
                raise ValueError(f"Structures don't have the same nested structure (at {where or 'the top'}).")
            return func(*nodes)
        if head is None:
            return None
        for other in nodes[1:]:
            _check_same(head, other, where)
        keys = _keys(head)
        return _rebuild(head, [walk([n[k] for n in nodes], where + (k,)) for k in keys])

    return walk(list(structures), ()) if first is not None or none_is_leaf else None


def map_structure_up_to(shallow_structure, func, *structures):
    """func applied to the parts of structures found at the leaves of shallow_structure (a prefix of
    each); the result has shallow_structure's shape."""
    if not structures:
        raise ValueError("Must provide at least one structure")

    def walk(shallow, nodes, where):
        if not _is_node(shallow):
            return func(*nodes)
        for other in nodes:
            _check_same(shallow, other, where)
        keys = _keys(shallow)
        return _rebuild(shallow, [walk(shallow[k], [n[k] for n in nodes], where + (k,)) for k in keys])

    return walk(shallow_structure, list(structures), ())


def assert_same_structure(a, b, check_types=None):
    """ValueError unless a and b have the same nesting: node types, dict keys and lengths.

    ``check_types`` is accepted for Keras compatibility and ignored (types are always checked).
    """
    map_structure(lambda *_: None, a, b)


def assert_same_paths(a, b):
    """ValueError unless a and b reach their leaves by the same set of paths (node types may differ)."""
    pa = {p for p, _ in flatten_with_path(a)}
    pb = {p for p, _ in flatten_with_path(b)}
    if pa != pb:
        msg = "`a` and `b` don't have the same paths."
        if pa - pb:
            msg += f"\nPaths in `a` missing in `b`:\n{pa - pb}"
        if pb - pa:
            msg += f"\nPaths in `b` missing in `a`:\n{pb - pa}"
        raise ValueError(msg)


def traverse(func, structure, top_down=True):
    """Call func on every node and leaf. Top-down: a non-None result replaces that subtree (and is not
    entered); bottom-up: func sees the node with its children already traversed. Return MAP_TO_NONE
    to put None there."""
    def result(ret, default):
        if ret is None:
            return default
        return None if ret is MAP_TO_NONE else ret

    def children_done(node):
        if not _is_node(node):
            return node
        return _rebuild(node, [walk(c) for c in _children(node)])

    def walk(node):
        if top_down:
            ret = func(node)
            if ret is None:
                return children_done(node)
            return result(ret, None)
        done = children_done(node)
        return result(func(done), done)

    return walk(structure)


def lists_to_tuples(structure):
    """The structure with every list (at any depth) turned into a tuple."""
    return traverse(lambda x: tuple(x) if isinstance(x, list) else None, structure, top_down=False)


def _is_shape(x):
    return isinstance(x, (list, tuple)) and all(isinstance(e, (int, type(None))) for e in x)


def map_shape_structure(func, structure):
    """func applied to each shape (a list or tuple of ints and None) found in structure."""
    def walk(node):
        if _is_shape(node) or not _is_node(node):
            return func(node)
        return _rebuild(node, [walk(c) for c in _children(node)])

    return walk(structure)
