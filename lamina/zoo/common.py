"""What the zoo's recipe modules share: the ``Recipe`` and ``LoopRecipe`` classes, the tables they register in
(``RECIPES``, ``DATASETS``, ``OTHER_DATASETS``), the catalog's own image recipes with their data loading
(``load_dataset``, ``preprocess``), and the helpers of recipes that carry their own training loop (``say``,
``fit_verbose``, ``save_run``, ``recipe_main``).

``lamina.zoo.catalog`` re-exports all of it once every recipe module has registered its recipes; it imports
the recipe modules, so they import this module instead of catalog.
"""
import os
import dataclasses

import numpy as np

from .. import layers, optimizers
from ..models import Model, Sequential

__all__ = ["Recipe", "LoopRecipe", "RECIPES", "DATASETS", "OTHER_DATASETS", "get", "load_dataset", "preprocess",
           "DEFAULT", "small_resnet"]


# ------------------------------------------------------------------------------------------- data
def _digits():
    from ..datasets import digits
    return digits.load_data()


def _mnist():
    from ..datasets import mnist
    return mnist.load_data()


def _fashion_mnist():
    from ..datasets import fashion_mnist
    return fashion_mnist.load_data()


def _cifar10():
    from ..datasets import cifar10
    return cifar10.load_data()


# name -> (raw loader, maximum pixel value, whether images need a channel axis, description)
DATASETS = {
    "digits": (_digits, 16.0, True, "1,797 8x8 handwritten digits, bundled (offline)"),
    "mnist": (_mnist, 255.0, True, "70,000 28x28 handwritten digits (download, 11 MB)"),
    "fashion_mnist": (_fashion_mnist, 255.0, True, "70,000 28x28 clothing images (download, 30 MB)"),
    "cifar10": (_cifar10, 255.0, False, "60,000 32x32 colour images (download, 163 MB)"),
}


# data sets that recipes with their own training loop use (not loadable by `lamina evaluate`): name -> description
OTHER_DATASETS = {}


def preprocess(dataset, x):
    """Raw images of a data set (uint8) -> float32 in [0, 1] with a channel axis (N, H, W, C)."""
    _, scale, add_channel, _ = DATASETS[dataset]
    x = np.asarray(x, dtype=np.float32) / np.float32(scale)
    return x[..., None] if add_channel else x


def load_dataset(dataset):
    """((x_train, y_train), (x_test, y_test)) of a data set, preprocessed: x float32 (N, H, W, C) in [0, 1],
    y int64 class labels (N,)."""
    if dataset not in DATASETS:
        raise ValueError(f"Unknown data set {dataset!r}. Valid: {', '.join(DATASETS)}.")
    (x_train, y_train), (x_test, y_test) = DATASETS[dataset][0]()
    return (preprocess(dataset, x_train), _labels(y_train)), (preprocess(dataset, x_test), _labels(y_test))


def _labels(y):
    """Integer labels, one per sample ((n, 1) -> (n,)); per-pixel labels (segmentation masks) keep their shape."""
    y = np.asarray(y, np.int64)
    return y.reshape(-1) if y.size == len(y) else y


# ---------------------------------------------------------------------------------------- models
def small_resnet(input_shape=(32, 32, 3), num_classes=10, widths=(16, 32, 64), blocks_per_stage=2):
    """A small ResNet (He et al. 2015, the CIFAR variant): a 3x3 stem, then stages of basic residual blocks
    (two 3x3 convolutions with batch normalisation, added to the shortcut), the width doubling and the
    resolution halving from one stage to the next (1x1 projection shortcuts there), global average pooling
    and a softmax classifier."""
    inputs = layers.Input(shape=input_shape)
    x = layers.Conv2D(widths[0], 3, padding="same", use_bias=False)(inputs)
    x = layers.Activation("relu")(layers.BatchNormalization()(x))
    for stage, width in enumerate(widths):
        for block in range(blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            shortcut = x
            if stride != 1 or x.shape[-1] != width:
                shortcut = layers.BatchNormalization()(layers.Conv2D(width, 1, strides=stride, use_bias=False)(x))
            y = layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False)(x)
            y = layers.Activation("relu")(layers.BatchNormalization()(y))
            y = layers.BatchNormalization()(layers.Conv2D(width, 3, padding="same", use_bias=False)(y))
            x = layers.Activation("relu")(layers.Add()([shortcut, y]))
    x = layers.GlobalAveragePooling2D()(x)
    return Model(inputs, layers.Dense(num_classes, activation="softmax")(x), name="small_resnet")


def digits_cnn(input_shape=(8, 8, 1), num_classes=10):
    """The seed-style CNN, sized for 8x8 digits: two 3x3 convolutions ('same'), 2x2 max pooling, dense head."""
    return Sequential([
        layers.Input(shape=input_shape),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        layers.Dense(num_classes, activation="softmax"),
    ], name="digits_cnn")


def digits_mlp(input_shape=(8, 8, 1), num_classes=10):
    """A multilayer perceptron: flatten, one hidden ReLU layer of 128 units, softmax."""
    return Sequential([
        layers.Input(shape=input_shape),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dense(num_classes, activation="softmax"),
    ], name="digits_mlp")


def mnist_cnn(input_shape=(28, 28, 1), num_classes=10):
    """The classic Keras MNIST convnet: two conv + pool stages, dropout, softmax."""
    return Sequential([
        layers.Input(shape=input_shape),
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dropout(0.5),
        layers.Dense(num_classes, activation="softmax"),
    ], name="mnist_cnn")


def cifar10_cnn(input_shape=(32, 32, 3), num_classes=10):
    """A small VGG-style convnet for CIFAR-10."""
    return Sequential([
        layers.Input(shape=input_shape),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(128, 3, padding="same", activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dropout(0.3),
        layers.Dense(128, activation="relu"),
        layers.Dense(num_classes, activation="softmax"),
    ], name="cifar10_cnn")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How to train one model: build() -> an uncompiled model; dataset: a DATASETS name."""
    name: str
    build: object
    dataset: str
    epochs: int
    batch_size: int
    learning_rate: float
    description: str

    def compile(self, model):
        model.compile(optimizer=optimizers.Adam(learning_rate=self.learning_rate),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model


@dataclasses.dataclass(frozen=True)
class LoopRecipe(Recipe):
    """A catalog recipe with its own data and training loop: ``train(epochs=None, batch_size=None, out=None,
    seed=0, verbose=2)`` (verbose: 0 silent, 1 results only, 2 also one line per epoch) trains, prints the
    results, saves the model files, run.json, history.json and PNG figures into out and returns the run
    summary (a dict). ``lamina train NAME`` calls it: the plain catalog loop (fit a classifier, report
    accuracy) cannot train, decode or sample these."""
    train: object = None


RECIPES = {r.name: r for r in [
    Recipe("cnn", digits_cnn, "digits", 15, 32, 2e-3, "small CNN on the bundled 8x8 digits (~98%)"),
    Recipe("mlp", digits_mlp, "digits", 30, 32, 2e-3, "MLP on the bundled 8x8 digits (~97%)"),
    Recipe("mnist-cnn", mnist_cnn, "mnist", 5, 128, 1e-3, "Keras's MNIST convnet (downloads MNIST; ~99%)"),
    Recipe("fashion-cnn", mnist_cnn, "fashion_mnist", 5, 128, 1e-3,
           "the same convnet on Fashion-MNIST (downloads it; ~90%)"),
    Recipe("cifar10-cnn", cifar10_cnn, "cifar10", 10, 64, 1e-3, "VGG-style CNN on CIFAR-10 (downloads it; ~70%)"),
    Recipe("resnet", small_resnet, "digits", 15, 32, 2e-3, "small ResNet (residual blocks, batch norm) on the "
                                                           "bundled digits (~98%)"),
    Recipe("cifar10-resnet", small_resnet, "cifar10", 15, 64, 1e-3, "small ResNet-14 on CIFAR-10 (downloads it)"),
]}
DEFAULT = "cnn"


def get(name):
    """The recipe called name (ValueError listing the valid names otherwise)."""
    if name not in RECIPES:
        raise ValueError(f"Unknown model {name!r}. Valid models: {', '.join(RECIPES)}.")
    return RECIPES[name]


# ---------------------------------------------------------------- helpers for recipes with their own loop
def say(verbose, *args):
    """Print a result line unless verbose is 0 (recipes: 0 silent, 1 results only, 2 results + epochs)."""
    if verbose:
        print(*args, flush=True)


def fit_verbose(verbose):
    """The fit() verbosity for a recipe's verbose level: one line per epoch at 2, silent otherwise."""
    return 2 if verbose >= 2 else 0


def save_run(out, models, history, run, verbose, plot=True):
    """Each model as out/NAME (models: {file name: model}), history.json, run.json and, with matplotlib and
    ``plot``, history.png; every file written atomically. (A recipe's plot=False writes no picture at all.)"""
    import json
    from ..io import atomic_write
    os.makedirs(out, exist_ok=True)
    for file_name, model in models.items():
        path = os.path.join(out, file_name)
        model.save(path)
        say(verbose, f"Saved {path}")
    history = {k: [float(v) for v in vals] for k, vals in history.items()}
    for name, obj in (("history.json", history), ("run.json", run)):
        atomic_write(os.path.join(out, name), (json.dumps(obj, indent=2) + "\n").encode("utf-8"))
    if not history or not plot:
        return
    try:
        from ..plotting import plot_history
        path = plot_history(history, os.path.join(out, "history.png"))
        say(verbose, f"Saved {path}")
    except ImportError:
        say(verbose, "(Install matplotlib, e.g. pip install 'lamina[plot]', for PNG figures.)")


def recipe_main(prog, description, recipes, argv=None):
    """``python -m PROG NAME [--epochs N] [--batch-size B] [--out DIR] [--seed S] [--quiet] [--no-plot]`` for a
    module of recipes that carry their own training loop (--no-plot: no pictures, as for ``lamina train``)."""
    import argparse
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("name", choices=list(recipes))
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--no-plot", action="store_true")
    a = p.parse_args(argv)
    recipes[a.name].train(epochs=a.epochs, batch_size=a.batch_size, out=a.out, seed=a.seed,
                          verbose=1 if a.quiet else 2, plot=not a.no_plot)
    return 0
