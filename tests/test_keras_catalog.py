"""Issue 14's bar, counted name by name against Keras 3.15's public catalog (tests/data/keras_catalog_names.json,
written from the installed Keras by tools/keras_catalog.py): at least 90% of each counted namespace, every name
left out on purpose is really absent and says why, and docs/keras_coverage.md is current."""
import functools
import pathlib

import pytest

from repo_scripts import load_script  # tests/repo_scripts.py
from lazy_modules import lazy_module  # tests/lazy_modules.py

# lamina.wrappers, one of the namespaces counted, imports scikit-learn: named here so that conftest.py sends
# this module to the worker that runs the reference libraries' modules
sklearn = lazy_module("sklearn")

ROOT = pathlib.Path(__file__).resolve().parents[1]


TOOL = load_script("tools/keras_catalog.py")


@functools.cache
def _coverage():
    # (at the first test, not at collection: lamina.wrappers, one of the namespaces, imports scikit-learn)
    return TOOL.coverage()[0]


@pytest.mark.parametrize("namespace", TOOL.COUNTED)
def test_at_least_ninety_percent_of_each_namespace(namespace):
    have, missing = _coverage()[namespace]
    total = len(have) + len(missing)
    assert total > 0
    assert len(have) / total >= TOOL.BAR, f"keras.{namespace}: {len(have)}/{total}; missing {missing}"


def test_names_left_out_on_purpose_are_absent():
    for ns, reasons in TOOL.LEFT_OUT.items():
        for name in reasons:
            assert name in _coverage()[ns][1], f"keras.{ns}.{name} exists now: drop it from LEFT_OUT"


def test_coverage_page_is_current():
    assert (ROOT / "docs" / "keras_coverage.md").read_text() == TOOL.render(), \
        "docs/keras_coverage.md is out of date: run python tools/keras_catalog.py"
