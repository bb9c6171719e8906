"""The repository's scripts (tools/*.py, tests/gen_*.py) imported as modules by their path: they are not in a
package, and several tests check what they generate against the installed libraries."""
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_script(relative):
    """The script at ``relative`` (to the repository root) as a fresh module named after its file."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
