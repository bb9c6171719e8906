"""The seed's first model: one neuron (a perceptron) learns AND and OR but cannot learn XOR, because no
straight line separates XOR's classes; a hidden layer of a few units solves it.

    lamina train perceptron        # prints each task's accuracy and writes decision_boundaries.png

The four inputs are the corners of the unit square; the targets are the truth tables. The single neuron is
``Dense(1, activation="sigmoid")`` on the two inputs (a logistic perceptron, trained by gradient descent);
the MLP adds ``Dense(8, activation="tanh")`` in front of it.
"""
import os
import time

import numpy as np

from .. import backend, layers, optimizers
from ..models import Sequential
from . import common

__all__ = ["truth_table", "perceptron", "mlp", "train_perceptron", "RECIPES"]

TASKS = {"AND": (0, 0, 0, 1), "OR": (0, 1, 1, 1), "XOR": (0, 1, 1, 0)}
CORNERS = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)


def truth_table(task):
    """(inputs (4, 2), targets (4, 1)) of a logic gate: 'AND', 'OR' or 'XOR'."""
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}. Valid: {', '.join(TASKS)}.")
    return CORNERS.copy(), np.array(TASKS[task], np.float32)[:, None]


def perceptron():
    """One neuron: y = sigmoid(w1 x1 + w2 x2 + b), 3 weights."""
    return Sequential([layers.Input((2,)), layers.Dense(1, activation="sigmoid")], name="perceptron")


def mlp(hidden=8):
    """One hidden layer of tanh units before the output neuron."""
    return Sequential([layers.Input((2,)), layers.Dense(hidden, activation="tanh"),
                       layers.Dense(1, activation="sigmoid")], name="mlp")


def _fit(model, task, epochs, learning_rate):
    x, y = truth_table(task)
    model.compile(optimizer=optimizers.SGD(learning_rate), loss="binary_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=4, epochs=epochs, verbose=0, shuffle=False).history
    accuracy = float(np.mean((model.predict(x, verbose=0) > 0.5) == (y > 0.5)))
    return accuracy, history


def _plot(models, path):
    try:
        from ..plotting import _pyplot, save_figure
        plt = _pyplot()
    except ImportError:
        return False
    grid = np.linspace(-0.25, 1.25, 121, dtype=np.float32)
    gx, gy = np.meshgrid(grid, grid)
    points = np.stack([gx.ravel(), gy.ravel()], axis=1)
    fig, axes = plt.subplots(2, 3, figsize=(10, 6.6))
    for row, kind in zip(axes, ("perceptron", "mlp")):
        for ax, task in zip(row, TASKS):
            model, accuracy = models[(kind, task)]
            p = model.predict(points, verbose=0).reshape(gx.shape)
            ax.contourf(gx, gy, p, levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.8)
            ax.contour(gx, gy, p, levels=[0.5], colors="k", linewidths=1.5)
            _, y = truth_table(task)
            ax.scatter(CORNERS[:, 0], CORNERS[:, 1], c=y.ravel(), cmap="RdBu_r", edgecolors="k", s=120, vmin=0,
                       vmax=1)
            ax.set_title(f"{kind}: {task} ({accuracy:.0%} right)")
            ax.set_xticks([0, 1])
            ax.set_yticks([0, 1])
    fig.suptitle("decision boundaries: one neuron draws one straight line; XOR needs two")
    fig.tight_layout()
    save_figure(fig, path, dpi=90, close=True)
    return True


def train_perceptron(epochs=None, batch_size=None, out=None, seed=0, verbose=2, plot=True):
    """Train the perceptron and the MLP on AND, OR and XOR; report each accuracy (4 corners each)."""
    r = RECIPES["perceptron"]
    epochs = epochs or r.epochs
    out = out or os.path.join("runs", r.name)
    backend.set_random_seed(seed)
    common.say(verbose, f"Training '{r.name}' ({r.description}): {epochs} epochs of full-batch gradient descent, "
                         f"seed {seed}.")
    start = time.perf_counter()
    results, models, history = {}, {}, {}
    for kind, build in (("perceptron", perceptron), ("mlp", mlp)):
        for task in TASKS:
            model = build()
            accuracy, h = _fit(model, task, epochs, r.learning_rate)
            results[f"{kind}_{task.lower()}_accuracy"] = accuracy
            models[(kind, task)] = (model, accuracy)
            history[f"{kind}_{task.lower()}_loss"] = h["loss"]
            common.say(verbose, f"{kind:>10} on {task:<3}: {accuracy:.0%} of the truth table right "
                                 f"(final loss {h['loss'][-1]:.3f})")
    seconds = time.perf_counter() - start
    run = {"model": r.name, "dataset": r.dataset, "epochs": epochs, "seed": seed, **results,
           "train_seconds": round(seconds, 2)}
    common.save_run(out, {"perceptron_xor.lamina": models[("perceptron", "XOR")][0],
                           "mlp_xor.lamina": models[("mlp", "XOR")][0]}, {}, run, verbose)
    if plot and _plot(models, os.path.join(out, "decision_boundaries.png")):
        common.say(verbose, f"Saved {os.path.join(out, 'decision_boundaries.png')}")
    return run


RECIPES = {r.name: r for r in [
    common.LoopRecipe("perceptron", lambda input_shape=(2,), num_classes=None: perceptron(), "logic_gates", 2000, 4,
                       1.0, "one neuron learns AND and OR, fails XOR; an MLP solves XOR (decision-boundary PNG)",
                       train_perceptron),
]}

common.OTHER_DATASETS.setdefault("logic_gates", "the truth tables of AND, OR and XOR on the unit square's corners")
common.RECIPES.update({k: v for k, v in RECIPES.items() if k not in common.RECIPES})
