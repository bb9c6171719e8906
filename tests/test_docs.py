"""Every Python code block in README.md and docs/ runs, as a reader would paste it.

The blocks of one page run in order in one fresh interpreter (a page builds on its earlier blocks, like a
notebook), in an empty working folder, with LAMINA_EXAMPLE_FAST=1 and matplotlib's file-only backend.
Pages that load MNIST, Fashion-MNIST or CIFAR-10 get small random arrays of the real shapes and dtypes
in place of the download (this machine and CI have no network), and pages that use the 'cuda' device run
on tests/fake_cupy.py where no GPU is present; everything else runs as written.
"""
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = sorted([ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("docs/*/*.md")])
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)

_PRELUDE = '''
import numpy as _np
import lamina.datasets as _ds
def _fake(shape_train, shape_test, label_shape, classes=10):
    def load_data(*args, **kwargs):
        rng = _np.random.default_rng(0)
        return ((rng.integers(0, 256, shape_train, dtype=_np.uint8),
                 rng.integers(0, classes, (shape_train[0],) + label_shape, dtype=_np.uint8)),
                (rng.integers(0, 256, shape_test, dtype=_np.uint8),
                 rng.integers(0, classes, (shape_test[0],) + label_shape, dtype=_np.uint8)))
    return load_data
_ds.mnist.load_data = _fake((64, 28, 28), (32, 28, 28), ())
_ds.fashion_mnist.load_data = _fake((64, 28, 28), (32, 28, 28), ())
_ds.cifar10.load_data = _fake((64, 32, 32, 3), (32, 32, 32, 3), (1,))
'''


_FAKE_CUPY = f'''
import sys
try:
    import cupy
    cupy.cuda.runtime.getDeviceCount()
except Exception:          # no GPU here: the page runs on tests/fake_cupy.py, the CPU stand-in for CuPy
    sys.path.insert(0, {str(ROOT / "tests")!r})
    import fake_cupy
    sys.modules["cupy"] = fake_cupy.make_module()
'''


def blocks(page):
    return _BLOCK.findall(page.read_text(encoding="utf-8"))


def test_pages_have_no_placeholders():
    """Snippets are code a reader can paste: no '...' standing for arguments."""
    bad = [(p.relative_to(ROOT), b) for p in PAGES for b in blocks(p) if re.search(r"\(\s*\.\.\.\s*\)|, \.\.\.\)", b)]
    assert not bad, bad


@pytest.mark.parametrize("page", [p for p in PAGES if blocks(p)], ids=lambda p: str(p.relative_to(ROOT)))
def test_page_snippets_run(page, tmp_path):
    prelude = _PRELUDE + (_FAKE_CUPY if "cuda" in page.read_text(encoding="utf-8") else "")
    code = prelude + "\n".join(f"# --- block {i + 1}\n{b}" for i, b in enumerate(blocks(page)))
    env = {**os.environ, "LAMINA_EXAMPLE_FAST": "1", "MPLBACKEND": "Agg", "LAMINA_HOME": str(tmp_path / "home"),
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"{page.name}:\n{result.stderr[-3000:]}"
