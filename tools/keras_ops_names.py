"""Writes tests/data/keras_ops_signatures.json: every public function of keras.ops and of its
nn / numpy / linalg / image namespaces with its signature, from the installed Keras (3.15).

    KERAS_BACKEND=torch python tools/keras_ops_names.py
"""
import inspect
import json
import os
import pathlib

os.environ.setdefault("KERAS_BACKEND", "torch")
import keras  # noqa: E402
from keras import ops  # noqa: E402

out = {"keras_version": keras.__version__}
for ns, mod in [("ops", ops), ("nn", ops.nn), ("numpy", ops.numpy), ("linalg", ops.linalg), ("image", ops.image)]:
    names = sorted(n for n in dir(mod) if not n.startswith("_") and callable(getattr(mod, n)))
    out[ns] = {n: str(inspect.signature(getattr(mod, n))) for n in names}
path = pathlib.Path(__file__).resolve().parents[1] / "tests" / "data" / "keras_ops_signatures.json"
path.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
print(f"wrote {path}: " + ", ".join(f"{k} {len(v)}" for k, v in out.items() if isinstance(v, dict)))
