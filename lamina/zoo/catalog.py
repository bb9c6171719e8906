"""Ready-made training recipes: a model builder, the data it trains on, and default settings.

``RECIPES[name]`` is a ``Recipe``; ``get(name)`` raises a ValueError listing the valid names.
Data sets are returned preprocessed (float32 in [0, 1], a channel axis for images, integer labels), by
``load_dataset(name)``; ``preprocess(name, x)`` applies the same scaling to raw images, so the command
line can predict on raw arrays as the loaders return them.

The tables and helpers live in lamina/zoo/common.py, which the recipe modules (text, transformers, vision,
...) import to register their recipes; this module re-exports them once it has loaded every recipe module,
so ``RECIPES`` here lists them all.
"""
from .common import (  # noqa: F401  (re-exported: the catalog's public names)
    DATASETS, DEFAULT, OTHER_DATASETS, RECIPES, LoopRecipe, Recipe, cifar10_cnn, digits_cnn, digits_mlp,
    fit_verbose, get, load_dataset, mnist_cnn, preprocess, recipe_main, save_run, say, small_resnet)

__all__ = ["Recipe", "LoopRecipe", "RECIPES", "DATASETS", "OTHER_DATASETS", "get", "load_dataset", "preprocess",
           "DEFAULT", "small_resnet"]

# Each recipe module registers its recipes (and data sets) in common's RECIPES / DATASETS / OTHER_DATASETS
# when it loads; importing them here is what makes this module the full catalog.
from . import text as _text  # noqa: E402,F401  (sentiment, charlm, longmemory)
from . import transformers as _transformers  # noqa: E402,F401  (transformer-classifier, translate-dates, char-transformer)
from . import vision as _vision  # noqa: E402,F401  (unet, autoencoder, vae, gan)
from . import perceptron as _perceptron  # noqa: E402,F401  (perceptron: AND, OR, XOR)
from . import detection as _detection  # noqa: E402,F401  (detection)
from . import rl as _rl  # noqa: E402,F401  (dqn; gymnasium is imported only when it trains)
from . import style as _style  # noqa: E402,F401  (style-transfer)
from . import speech as _speech  # noqa: E402,F401  (speech, speech-commands)
