"""Regenerates the KERAS table of tests/test_applications_xic.py from real Keras (not a test):

    KERAS_BACKEND=torch python tests/keras_app_figures_xic.py

Each builder runs with weights=None and default arguments after clear_session(), as in a fresh process, and
prints (count_params(), len(model.layers), model.name, first layer name, last layer name, the first 16 hex
digits of the SHA-256 of the layer names joined by newlines). test_applications_xic.py hashes lamina's names
the same way (names_digest).

keras.applications.NASNetMobile refuses the torch backend (a known Keras issue with running it); its
architecture function, keras.src.applications.nasnet.NASNet, builds it with NASNetMobile's arguments."""
import hashlib
import os
import sys

NAMES = ["Xception", "InceptionV3", "InceptionResNetV2", "ConvNeXtTiny", "ConvNeXtSmall", "ConvNeXtBase", "ConvNeXtLarge",
         "ConvNeXtXLarge", "NASNetMobile", "NASNetLarge"]


def names_digest(model):
    names = [layer.name for layer in model.layers]
    return names[0], names[-1], hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def keras_builder(keras, name):
    if name == "NASNetMobile" and keras.backend.backend() == "torch":
        from keras.src.applications import nasnet
        def build(input_shape=None, include_top=True, **kw):
            if not include_top and input_shape is None:
                input_shape = (224, 224, 3)
            return nasnet.NASNet(input_shape, penultimate_filters=1056, num_blocks=4, stem_block_filters=32,
                                 skip_reduction=False, filter_multiplier=2, include_top=include_top,
                                 default_size=224, name="nasnet_mobile", **kw)
        return build
    return getattr(keras.applications, name)


def main():
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras
    for name in sys.argv[1:] or NAMES:
        keras.backend.clear_session()
        model = keras_builder(keras, name)(weights=None)
        print(f'    "{name}": {(model.count_params(), len(model.layers), model.name, *names_digest(model))!r},')
        del model


if __name__ == "__main__":
    main()
