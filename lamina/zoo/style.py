"""Neural style transfer (Gatys, Ecker and Bethge, 2015): optimise an image's pixels so that its CNN
feature maps match a content image and the Gram matrices of its feature maps (which channels fire together,
wherever they are: the texture) match a style image, with a total-variation term for smoothness.

    lamina train style-transfer      # style_transfer.png: content, style, result; losses in run.json

The feature network is a fixed, randomly initialised multi-scale filter bank (four 3x3 convolution stages
with ReLU and pooling): random convolutional features are known to carry enough texture statistics for
style transfer (He, Wang and Hopcroft, 2016), and pretrained ImageNet weights cannot be downloaded here. A
user who has them can pass any feature model (for example ``lamina.applications.VGG19`` with weights placed
in $LAMINA_HOME/models) and its layer names to ``transfer``. The images are synthetic and seeded: the
content is a scene of shapes, the style a pattern of coloured waves.
"""
import os
import time

import numpy as np

from .. import backend, initializers, layers, ops, optimizers
from ..models import Model, Sequential
from ..tensor import Variable, no_grad
from . import common

__all__ = ["gram_matrix", "feature_network", "content_image", "style_image", "transfer", "train_style_transfer",
           "RECIPES"]

SIZE = 96


def gram_matrix(features):
    """(N, H, W, C) feature maps -> (N, C, C) Gram matrices, normalised by the number of positions."""
    n, h, w, c = features.shape
    flat = ops.reshape(features, (n, h * w, c))
    return ops.matmul(ops.transpose(flat, (0, 2, 1)), flat) / float(h * w)


def feature_network(size=SIZE, seed=0, widths=(32, 64, 64, 96)):
    """A fixed random filter bank: conv(3x3)+ReLU stages with 2x2 average pooling between them; returns the
    model and the names of the layers whose outputs are used (one per scale)."""
    init = initializers.HeNormal(seed=seed)
    stack, names = [layers.Input((size, size, 3))], []
    for i, width in enumerate(widths):
        if i:
            stack.append(layers.AveragePooling2D(2, name=f"pool{i}"))
        name = f"conv{i + 1}"
        stack.append(layers.Conv2D(width, 3, padding="same", activation="relu", kernel_initializer=init,
                                   name=name))
        names.append(name)
    net = Sequential(stack, name="random_features")
    net.trainable = False
    return net, names


def content_image(size=SIZE, seed=0):
    """A seeded scene: coloured circles and squares on a gradient sky. float32 (size, size, 3) in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.stack([0.3 + 0.5 * yy, 0.5 + 0.3 * yy, 0.9 - 0.2 * yy], axis=-1)
    for _ in range(4):
        cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.08, 0.18)
        colour = rng.uniform(0.0, 1.0, 3)
        inside = ((yy - cy) ** 2 + (xx - cx) ** 2 < r * r) if rng.random() < 0.5 else \
            ((np.abs(yy - cy) < r) & (np.abs(xx - cx) < r))
        img[inside] = colour
    return img.astype(np.float32)


def style_image(size=SIZE, seed=1):
    """A seeded texture: interfering coloured waves with sharp bands. float32 (size, size, 3) in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    channels = []
    for _ in range(3):
        f1, f2, phase = rng.uniform(2, 5), rng.uniform(2, 5), rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * (f1 * xx + 0.3 * f2 * yy) + phase) * np.cos(2 * np.pi * f2 * yy)
        channels.append(0.5 + 0.5 * np.tanh(3 * wave))
    return np.stack(channels, axis=-1).astype(np.float32)


def _tv(image):
    """Total variation: mean squared difference between neighbouring pixels."""
    dy = image[:, 1:, :, :] - image[:, :-1, :, :]
    dx = image[:, :, 1:, :] - image[:, :, :-1, :]
    return ops.mean(ops.square(dy)) + ops.mean(ops.square(dx))


def transfer(content, style, steps=200, content_weight=1.0, style_weight=50.0, tv_weight=1.0, learning_rate=0.02,
             feature_model=None, content_layer=None, style_layers=None, seed=0, callback=None):
    """Optimise the pixels (starting from the content image) and return (image, history) where history has
    'content', 'style', 'tv' and 'total' per step. feature_model / content_layer / style_layers default to
    the random filter bank (content from its third stage, style from all four)."""
    content = np.asarray(content, np.float32)[None]
    style = np.asarray(style, np.float32)[None]
    if feature_model is None:
        feature_model, names = feature_network(content.shape[1], seed=seed)
        content_layer, style_layers = content_layer or names[2], style_layers or names
    chosen = [content_layer] + list(style_layers)
    features = Model(feature_model.inputs, [feature_model.get_layer(n).output for n in chosen])
    features.trainable = False
    with no_grad():
        content_target = features(content)[0]
        style_targets = [gram_matrix(f) for f in features(style)[1:]]
    image = Variable(content.copy(), name="image")
    optimizer = optimizers.Adam(learning_rate)
    history = {"content": [], "style": [], "tv": [], "total": []}
    for step in range(steps):
        outs = features(image)
        c_loss = ops.mean(ops.square(outs[0] - content_target))
        s_loss = sum(ops.mean(ops.square(gram_matrix(f) - g)) for f, g in zip(outs[1:], style_targets))
        t_loss = _tv(image)
        total = content_weight * c_loss + style_weight * s_loss + tv_weight * t_loss
        total.backward()
        optimizer.apply_gradients([(image.grad, image)])
        image.grad = None
        with no_grad():
            image.assign(np.clip(image.numpy(), 0.0, 1.0))
        for key, value in (("content", c_loss), ("style", s_loss), ("tv", t_loss), ("total", total)):
            history[key].append(float(value))
        if callback is not None:
            callback(step, history)
    return image.numpy()[0], history


def _plot(content, style, result, path):
    try:
        from ..plotting import _pyplot, save_figure
        plt = _pyplot()
    except ImportError:
        return False
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.3))
    for ax, img, title in zip(axes, (content, style, result), ("content", "style", "content in that style")):
        ax.imshow(np.clip(img, 0, 1))
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, dpi=90, close=True)
    return True


def train_style_transfer(epochs=None, batch_size=None, out=None, seed=0, verbose=2, plot=True):
    """Run the optimisation (`epochs` counts tens of steps) and save the picture and the loss curves."""
    r = RECIPES["style-transfer"]
    steps = 10 * (epochs or r.epochs)
    out = out or os.path.join("runs", r.name)
    backend.set_random_seed(seed)
    content, style = content_image(seed=seed), style_image(seed=seed + 1)
    common.say(verbose, f"Training '{r.name}' ({r.description}): {steps} Adam steps on the pixels of a "
                         f"{SIZE}x{SIZE} image, seed {seed}.")

    def report(step, history):
        if verbose >= 2 and (step + 1) % 50 == 0:
            print(f"step {step + 1}: content {history['content'][-1]:.4f}, style {history['style'][-1]:.5f}, "
                  f"total variation {history['tv'][-1]:.4f}", flush=True)
    start = time.perf_counter()
    result, history = transfer(content, style, steps=steps, learning_rate=r.learning_rate, seed=seed,
                               callback=report)
    seconds = time.perf_counter() - start
    run = {"model": r.name, "dataset": r.dataset, "steps": steps, "seed": seed,
           "style_loss_first": history["style"][0], "style_loss_last": history["style"][-1],
           "content_loss_last": history["content"][-1], "train_seconds": round(seconds, 2)}
    common.say(verbose, f"Style loss {history['style'][0]:.5f} -> {history['style'][-1]:.5f}, content loss 0 -> "
                         f"{history['content'][-1]:.4f}; {seconds:.1f} s.")
    os.makedirs(out, exist_ok=True)
    np.save(os.path.join(out, "result.npy"), result, allow_pickle=False)
    common.save_run(out, {}, history, run, verbose, plot)
    if plot and _plot(content, style, result, os.path.join(out, "style_transfer.png")):
        common.say(verbose, f"Saved {os.path.join(out, 'style_transfer.png')}")
    return run


RECIPES = {r.name: r for r in [
    common.LoopRecipe("style-transfer", lambda input_shape=(SIZE, SIZE, 3), num_classes=None: feature_network()[0],
                       "style_pair", 30, 1, 0.02,
                       "Gatys-style transfer on a random multi-scale filter bank (content + style -> picture)",
                       train_style_transfer),
]}

common.OTHER_DATASETS.setdefault("style_pair", "a seeded synthetic scene (content) and wave texture (style)")
common.RECIPES.update({k: v for k, v in RECIPES.items() if k not in common.RECIPES})
