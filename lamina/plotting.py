"""Small matplotlib helpers: attention heat maps and training curves, written to PNG files.

matplotlib is optional (``pip install 'lamina[plot]'``) and imported only inside these functions, so
``import lamina`` never needs it. Figures are drawn with the non-interactive Agg backend and closed
after saving, so the helpers work on servers without a display.
"""
import numpy as np

from . import backend

__all__ = ["plot_attention", "plot_history"]


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ImportError("lamina.plotting needs matplotlib, which is not installed. "
                          "Install it with: pip install 'lamina[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


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
    w = backend.to_numpy(getattr(weights, "data", weights)).astype(np.float64)  # NumPy, CuPy or a Tensor
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
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
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
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
