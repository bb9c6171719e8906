"""Reference libraries (real Keras, scikit-learn) imported by the first test that uses them, not when pytest collects
the module.

Every xdist worker collects every test module, so the modules that imported Keras at their top made each worker
pay for Keras 3.15 (~5 s of CPU on the 2-core VM, scikit-learn's ~2 s among it; torch, which other modules import
anyway, aside) although one worker is enough to run them (conftest.py sends them all to gw0): a worker's collection
took ~10 s of CPU, ~5 s without. At a module's top, ``keras = lazy_module("keras")`` stands for the module: reading
one of its attributes imports it, as ``pytest.importorskip`` (where it is not installed the test is skipped, as
its whole module was), and later reads go straight to the module."""
import importlib

import pytest

# Dunder names pytest's collection looks up on a module's globals (``__test__``) find nothing and import nothing;
# these few are the module's own and import it.
_MODULE_DUNDERS = frozenset({"__version__", "__name__", "__file__", "__path__", "__all__"})


class LazyModule:
    """The module ``name``, imported on the first read of one of its attributes."""
    __slots__ = ("_name", "_skip", "_module")

    def __init__(self, name, skip=True):
        self._name, self._skip, self._module = name, skip, None

    def _load(self):
        if self._module is None:
            self._module = pytest.importorskip(self._name) if self._skip else importlib.import_module(self._name)
        return self._module

    def __getattr__(self, attr):   # (only for names the proxy itself lacks: all the module's)
        if attr.startswith("__") and attr.endswith("__") and attr not in _MODULE_DUNDERS and self._module is None:
            raise AttributeError(attr)
        return getattr(self._load(), attr)

    def __dir__(self):
        return dir(self._load())

    def __repr__(self):
        return repr(self._module) if self._module is not None else f"<module {self._name!r}, not imported yet>"


def lazy_module(name, skip=True):
    """``pytest.importorskip(name)`` (``import name`` with ``skip=False``) at the first use of the result."""
    return LazyModule(name, skip)
