"""Regenerates the KERAS table of tests/test_applications_xic.py from real Keras (not a test):

    KERAS_BACKEND=torch python tests/keras_app_figures_xic.py

Each builder runs with weights=None and default arguments after clear_session(), as in a fresh process, and
prints (count_params(), len(model.layers), model.name, first layer name, last layer name, the first 16 hex
digits of the SHA-256 of the layer names joined by newlines). test_applications_xic.py hashes lamina's names
the same way (names_digest)."""
import hashlib
import os
import sys

NAMES = ["Xception", "InceptionV3", "InceptionResNetV2", "ConvNeXtTiny", "ConvNeXtSmall", "ConvNeXtBase", "ConvNeXtLarge",
         "ConvNeXtXLarge"]


def names_digest(model):
    names = [layer.name for layer in model.layers]
    return names[0], names[-1], hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def main():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras
    for name in sys.argv[1:] or NAMES:
        keras.backend.clear_session()
        model = getattr(keras.applications, name)(weights=None)
        print(f'    "{name}": {(model.count_params(), len(model.layers), model.name, *names_digest(model))!r},')
        del model


if __name__ == "__main__":
    main()
