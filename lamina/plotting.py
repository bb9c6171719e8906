"""Small matplotlib helpers, written to PNG files: attention heat maps, training curves, and pictures for
learners: a convolution's filters, the feature maps an input makes through a model, activation histograms,
and the loss surface around the trained weights along two random directions.

matplotlib is optional (``pip install 'lamina[plot]'``) and imported only inside these functions, so
``import lamina`` never needs it. Figures are drawn with the non-interactive Agg backend and closed
after saving, so the helpers work on servers without a display.
"""
import os

import numpy as np

from . import backend

__all__ = ["plot_attention", "plot_history", "plot_filters", "plot_feature_maps", "plot_activation_histograms",
           "loss_surface", "plot_loss_surface"]


def _pyplot(headless=True):
    """matplotlib.pyplot, on the Agg backend where ``headless`` (pictures written to files); else in whatever
    backend is in use (keras.visualization's galleries, shown where there is a display)."""
    try:
        import matplotlib
    except ImportError:
        raise ImportError("lamina's plots need matplotlib, which is not installed. "
                          "Install it with: pip install 'lamina[plot]'") from None
    if headless:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save_figure(fig, path, close=False, **kwargs):
    """fig.savefig to ``path`` atomically (lamina.io.formats.atomic_write): a crash or a full disk midway
    leaves the previous picture, never half a file. The format comes from the extension (png without one,
    'jpg' read as jpeg); keyword arguments go to savefig. ``close``: close the pyplot figure afterwards,
    also when saving failed (an open figure would stay in pyplot's list)."""
    from .io.formats import atomic_write
    ext = os.path.splitext(os.fspath(path))[1][1:].lower() or "png"
    kwargs.setdefault("format", "jpeg" if ext == "jpg" else ext)
    try:
        atomic_write(path, lambda f: fig.savefig(f, **kwargs))
    finally:
        if close:   # (the figure exists: closing it needs no backend chosen)
            _pyplot(headless=False).close(fig)
    return path


def plot_attention(weights, x_labels, y_labels, path, title=None, cmap="viridis", dpi=120):
    """Draw an attention weight matrix as a heat map and save it as a PNG.

    Args:
        weights: (Tq, Tk) array: row i holds how much query position i attends to each key position
            (one head, or an average over heads). A (heads, Tq, Tk) array draws one panel per head.
        x_labels: Tk labels for the key positions (columns), e.g. the source characters.
        y_labels: Tq labels for the query positions (rows), e.g. the generated characters.
        path: the PNG file to write.
        title: optional figure title; cmap: a matplotlib colour map name; dpi: resolution.
    Returns the path. Raises ValueError when the label counts do not match the weights' shape.
    """
    w = backend.to_numpy(backend.array_of(weights)).astype(np.float64)  # NumPy, CuPy or a Tensor
    if w.ndim == 2:
        w = w[None]
    if w.ndim != 3:
        raise ValueError(f"plot_attention: weights must have shape (queries, keys) or (heads, queries, keys). "
                         f"Received shape {np.shape(weights)}")
    x_labels, y_labels = [str(s) for s in x_labels], [str(s) for s in y_labels]
    if len(x_labels) != w.shape[2] or len(y_labels) != w.shape[1]:
        raise ValueError(f"plot_attention: {w.shape[1]} query rows and {w.shape[2]} key columns need as many "
                         f"labels. Received {len(y_labels)} y_labels and {len(x_labels)} x_labels")
    plt = _pyplot()
    heads, tq, tk = w.shape
    cell = 0.32                                  # inches per cell: labels stay legible at any size
    width = heads * (tk * cell + 1.2) + 0.6
    if title:                                    # room for the title over narrow maps
        width = max(width, 0.11 * len(title) + 1.0)
    fig, axes = plt.subplots(1, heads, figsize=(width, tq * cell + 1.6), squeeze=False)
    for h, ax in enumerate(axes[0]):
        im = ax.imshow(w[h], cmap=cmap, vmin=0.0, vmax=max(float(w[h].max()), 1e-12), aspect="equal")
        ax.set_xticks(range(tk))
        ax.set_xticklabels([s if s.strip() else "\u2423" for s in x_labels], fontsize=9)
        ax.set_yticks(range(tq))
        ax.set_yticklabels([s if s.strip() else "\u2423" for s in y_labels], fontsize=9)
        ax.tick_params(length=0)
        ax.set_xlabel("attended (keys)")
        if h == 0:
            ax.set_ylabel("output (queries)")
        if heads > 1:
            ax.set_title(f"head {h}", fontsize=10)
        fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    save_figure(fig, path, dpi=dpi, close=True)
    return path


def plot_history(history, path, keys=None, dpi=100, val_label="validation"):
    """Training curves (one panel per metric, training and validation together) saved as a PNG.

    Args:
        history: a dict of lists as ``model.fit(...).history`` gives (or a History object).
        path: the PNG file to write.
        keys: metric names to draw (default: every key without a ``val_`` prefix); names missing from
            history are left out.
        val_label: the legend's name for the ``val_`` curves.
    Returns the path.
    """
    history = getattr(history, "history", history)
    keys = [k for k in keys if k in history] if keys else [k for k in history if not k.startswith("val_")]
    keys = [k for k in keys if len(history[k])]
    if not keys:
        raise ValueError("plot_history: the history has no epoch to draw (an empty history, or none of the "
                         f"keys asked for). Received keys: {sorted(history)}")
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator
    fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.8), squeeze=False)
    for ax, key in zip(axes[0], keys):
        epochs = range(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], label="train")
        if "val_" + key in history:
            ax.plot(epochs, history["val_" + key], label=val_label)
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # epochs are whole numbers
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_figure(fig, path, dpi=dpi, close=True)
    return path


def _grid(n):
    cols = int(np.ceil(np.sqrt(n)))
    return int(np.ceil(n / cols)), cols


def plot_filters(layer, path, max_filters=64, dpi=100):
    """A convolution's filters as small images (one per output channel; input channels averaged), saved as
    a PNG. Returns the path."""
    kernel = backend.to_numpy(layer.kernel.data) if hasattr(layer, "kernel") else None
    if kernel is None or kernel.ndim not in (3, 4):
        raise ValueError(f"plot_filters: layer '{getattr(layer, 'name', layer)}' has no 1-D or 2-D convolution "
                         "kernel.")
    if kernel.ndim == 3:                                   # Conv1D: (k, in, out) -> a (1, k) image per filter
        kernel = kernel[None]
    images = kernel.mean(axis=2)                           # (kh, kw, out)
    n = min(images.shape[-1], max_filters)
    rows, cols = _grid(n)
    plt = _pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.2 * rows), squeeze=False)
    lim = float(np.abs(images[..., :n]).max()) or 1.0
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i < n:
            ax.imshow(images[..., i], cmap="RdBu_r", vmin=-lim, vmax=lim)
    fig.suptitle(f"{layer.name}: {n} filters (red +, blue -)")
    save_figure(fig, path, dpi=dpi, close=True)
    return path


def _feature_model(model, layer_names):
    """A model from model's inputs to the outputs of the named layers (the registry gives the class, so this
    side module imports nothing from the models floor)."""
    from .registry import get_registered_object
    functional = get_registered_object("Functional")
    outputs = [model.get_layer(name).output for name in layer_names]
    return functional(inputs=model.inputs, outputs=outputs if len(outputs) > 1 else outputs[0])


def plot_feature_maps(model, x, path, layer_names=None, max_maps=16, dpi=100):
    """The feature maps one input makes in each chosen layer (default: every layer with a 4-D output), one
    row per layer, saved as a PNG. x: one sample (with or without its batch axis). Returns the path."""
    x = np.asarray(x)
    if x.ndim == len(model.input_shape) - 1:
        x = x[None]
    if layer_names is None:
        layer_names = [layer.name for layer in model.layers
                       if type(layer).__name__ != "InputLayer" and len(layer.output.shape) == 4]
    if not layer_names:
        raise ValueError("plot_feature_maps: the model has no layer with image-shaped (4-D) outputs.")
    maps = _feature_model(model, layer_names).predict(x[:1], verbose=0)
    maps = maps if isinstance(maps, list) else [maps]
    plt = _pyplot()
    fig, axes = plt.subplots(len(maps), max_maps, figsize=(1.0 * max_maps, 1.1 * len(maps)), squeeze=False)
    for row, (name, m) in zip(axes, zip(layer_names, maps)):
        m = np.asarray(m)[0]
        for i, ax in enumerate(row):
            ax.axis("off")
            if m.ndim == 3 and i < m.shape[-1]:
                ax.imshow(m[..., i], cmap="viridis")
        row[0].set_title(name, fontsize=8, loc="left")
    fig.tight_layout()
    save_figure(fig, path, dpi=dpi, close=True)
    return path


def plot_activation_histograms(model, x, path, layer_names=None, bins=50, dpi=100):
    """Histograms of each chosen layer's outputs on the batch x (default: every layer but the input) - how
    saturated or dead the units are. Returns the path."""
    if layer_names is None:
        layer_names = [layer.name for layer in model.layers if type(layer).__name__ != "InputLayer"]
    outs = _feature_model(model, layer_names).predict(np.asarray(x), verbose=0)
    outs = outs if isinstance(outs, list) else [outs]
    plt = _pyplot()
    rows, cols = _grid(len(outs))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax in axes.ravel()[len(outs):]:
        ax.axis("off")
    for ax, name, out in zip(axes.ravel(), layer_names, outs):
        values = np.asarray(out, np.float64).ravel()
        ax.hist(values, bins=bins, color="tab:blue")
        ax.set_title(f"{name} (zeros: {np.mean(values == 0):.0%})", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=dpi, close=True)
    return path


def loss_surface(model, x, y, steps=21, span=1.0, seed=0, batch_size=256):
    """Loss of a compiled model on (x, y) over a plane through its weights: w + a d1 + b d2 for a, b in
    [-span, span], with two random directions scaled per filter to the weights' norms (Li et al., 2018).
    Returns (alphas, betas, losses of shape (steps, steps)); losses[steps // 2, steps // 2] is the loss at
    the weights themselves. The weights are put back afterwards."""
    rng = np.random.default_rng(seed)
    weights = model.trainable_weights
    start = [backend.to_numpy(w.data).copy() for w in weights]

    def direction():
        out = []
        for w in start:
            d = rng.standard_normal(w.shape).astype(w.dtype)
            if w.ndim <= 1:
                d[...] = 0                                # biases and norm scales stay (as the paper does)
            else:
                axes = tuple(range(w.ndim - 1))           # per output unit / filter
                norm = lambda a: np.sqrt(np.sum(np.square(a), axis=axes, keepdims=True))  # noqa: E731
                d *= norm(w) / (norm(d) + 1e-10)
            out.append(d)
        return out
    d1, d2 = direction(), direction()
    alphas = betas = np.linspace(-span, span, steps)
    losses = np.zeros((steps, steps))
    try:
        for i, a in enumerate(alphas):
            for j, b in enumerate(betas):
                for w, w0, u, v in zip(weights, start, d1, d2):
                    w.assign(w0 + a * u + b * v)
                result = model.evaluate(x, y, batch_size=batch_size, verbose=0)
                losses[i, j] = result[0] if isinstance(result, (list, tuple)) else result
    finally:
        for w, w0 in zip(weights, start):
            w.assign(w0)
    return alphas, betas, losses


def plot_loss_surface(model, x, y, path, steps=21, span=1.0, seed=0, dpi=100):
    """``loss_surface`` drawn as filled contours (log scale) with the trained weights at the centre."""
    alphas, betas, losses = loss_surface(model, x, y, steps=steps, span=span, seed=seed)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 4.2))
    cs = ax.contourf(betas, alphas, np.log10(np.maximum(losses, 1e-12)), levels=30, cmap="viridis")
    fig.colorbar(cs, ax=ax, label="log10 loss")
    ax.plot([0], [0], "w*", markersize=12)
    ax.set_xlabel("direction 2")
    ax.set_ylabel("direction 1")
    ax.set_title("loss around the trained weights")
    fig.tight_layout()
    save_figure(fig, path, dpi=dpi, close=True)
    return path

