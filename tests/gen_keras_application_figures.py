"""Regenerates the KERAS_FIGURES table of tests/test_applications_efficientnet.py from real Keras:

    KERAS_BACKEND=torch python tests/gen_keras_application_figures.py

For each builder and arguments (weights=None): count_params(), the number of layers, the model's name, a
digest of the layer names (sha256 of the names joined by newlines, first 16 hex digits, after
keras.backend.clear_session() so that the automatic names start from zero) and the first and last names.
"""
import hashlib
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

CASES = [("MobileNetV3Small", {}), ("MobileNetV3Large", {}),
         ("MobileNetV3Small", {"minimalistic": True}), ("MobileNetV3Large", {"minimalistic": True}),
         ("MobileNetV3Small", {"alpha": 0.75}), ("MobileNetV3Large", {"alpha": 0.75}),
         ("MobileNetV3Large", {"alpha": 1.25, "include_top": False, "pooling": "avg"}),
         ("MobileNetV3Small", {"include_preprocessing": False, "dropout_rate": 0.0})]
CASES += [(f"EfficientNetB{i}", {}) for i in range(8)]
CASES += [(f"EfficientNetV2{v}", {}) for v in ("B0", "B1", "B2", "B3", "S", "M", "L")]
CASES += [("EfficientNetB0", {"include_top": False, "pooling": "max"}),
          ("EfficientNetV2B0", {"include_preprocessing": False, "include_top": False}),
          ("EfficientNetV2S", {"include_preprocessing": False, "include_top": False})]


def digest(names):
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def figures(builder, kwargs, module):
    """(count_params, number of layers, model name, digest, first 3 names, last 3 names)."""
    model = getattr(module, builder)(weights=None, **kwargs)
    names = [layer.name for layer in model.layers]
    return (model.count_params(), len(names), model.name, digest(names), tuple(names[:3]), tuple(names[-3:]))


if __name__ == "__main__":
    import keras
    print("KERAS_FIGURES = {")
    for builder, kwargs in CASES:
        keras.backend.clear_session()
        print(f"    ({builder!r}, {tuple(sorted(kwargs.items()))!r}): {figures(builder, kwargs, keras.applications)!r},",
              flush=True)
    print("}")
