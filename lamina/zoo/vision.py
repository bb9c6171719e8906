"""Vision recipes: U-Net segmentation, a dense autoencoder, a variational autoencoder and a GAN.

Each one is registered in the model catalog (``lamina.zoo.catalog``) as a recipe with its own training
loop (``recipe.train(epochs=None, batch_size=None, out=None, seed=0, verbose=2)``), which prints what the
model achieved against a trivial baseline and saves model.lamina, run.json, history.json and PNG figures
(with matplotlib) into ``out``:

- ``unet``: a small U-Net (functional: Conv2D, MaxPooling2D, Conv2DTranspose, Concatenate skips, softmax)
  segments the synthetic shapes of ``lamina.datasets.synthetic`` (background, circle, square, triangle);
  pixel accuracy and mean IoU on held-out images, against the all-background predictor.
- ``autoencoder``: a dense autoencoder squeezes the bundled 8x8 digits through a 10-number code;
  reconstruction error on the test digits, against PCA with the same number of components.
- ``vae``: a variational autoencoder with a 2-D latent space: the encoder gives a mean and a log-variance,
  the registered ``Sampling`` layer draws z with the reparameterisation trick and adds the KL term with
  ``add_loss``; samples decoded from random latent points.
- ``gan``: the seed's Dense generator and discriminator, sized for the 8x8 digits, trained with a custom
  loop (``lamina.grad`` + ``optimizer.apply_gradients``, as in docs/gan.md); a digits classifier judges the
  generated digits.

``python -m lamina.zoo.vision NAME [--epochs N] [--out DIR] [--seed S]`` trains one of them.
"""
import os
import time

import numpy as np

from .. import backend, layers, metrics, ops, optimizers
from ..datasets import synthetic
from ..plotting import save_figure
from ..models import Model, Sequential
from ..tensor import Tensor, grad, no_grad
from . import common

__all__ = ["Sampling", "reparameterize", "kl_divergence", "unet", "dense_autoencoder", "vae_encoder",
           "vae_decoder", "vae", "gan_generator", "gan_discriminator", "segmentation_scores", "pca_reconstruction",
           "frechet_distance",
           "train_unet", "train_autoencoder", "train_vae", "train_gan", "VisionRecipe", "RECIPES"]


def _params(*models):
    return int(sum(int(np.prod(w.shape)) for m in models for w in m.weights))


def _pyplot():
    """matplotlib.pyplot on the Agg backend, or None when matplotlib is not installed (figures are optional)."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _digits01():
    """The bundled digits as float32 (N, 8, 8, 1) in [0, 1], with their labels: (x, y), (x_test, y_test)."""
    return common.load_dataset("digits")


# ------------------------------------------------------------------------------------------- U-Net
def unet(input_shape=(32, 32, 1), num_classes=len(synthetic.SHAPE_CLASSES), filters=8, depth=2):
    """A small U-Net: ``depth`` stages of two 3x3 ReLU convolutions and 2x2 max pooling (filters doubling),
    a bottleneck, then as many stages of 2x2 stride-2 Conv2DTranspose upsampling whose output is concatenated
    with the encoder's feature map of the same size (the skip connection) and refined by two convolutions;
    a 1x1 convolution with softmax gives per-pixel class probabilities.

    Input (N, H, W, C) with H and W divisible by 2 ** depth; output (N, H, W, num_classes).
    """
    inputs = layers.Input(shape=input_shape, name="image")
    x, skips = inputs, []
    for level in range(depth):
        f = filters * 2 ** level
        x = layers.Conv2D(f, 3, padding="same", activation="relu", name=f"down{level}_conv1")(x)
        x = layers.Conv2D(f, 3, padding="same", activation="relu", name=f"down{level}_conv2")(x)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"down{level}_pool")(x)
    f = filters * 2 ** depth
    x = layers.Conv2D(f, 3, padding="same", activation="relu", name="bottleneck_conv1")(x)
    x = layers.Conv2D(f, 3, padding="same", activation="relu", name="bottleneck_conv2")(x)
    for level in reversed(range(depth)):
        f = filters * 2 ** level
        x = layers.Conv2DTranspose(f, 2, strides=2, padding="same", name=f"up{level}_transpose")(x)
        x = layers.Concatenate(name=f"up{level}_skip")([x, skips[level]])
        x = layers.Conv2D(f, 3, padding="same", activation="relu", name=f"up{level}_conv1")(x)
        x = layers.Conv2D(f, 3, padding="same", activation="relu", name=f"up{level}_conv2")(x)
    outputs = layers.Conv2D(num_classes, 1, activation="softmax", name="classes")(x)
    return Model(inputs, outputs, name="unet")


def segmentation_scores(y_true, y_pred, num_classes):
    """Pixel accuracy, mean IoU (over classes that occur in y_true or y_pred, as Keras's MeanIoU) and the IoU
    of each class, from integer masks of the same shape."""
    t, p = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    cm = np.bincount(t * num_classes + p, minlength=num_classes ** 2).reshape(num_classes, num_classes)
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - tp
    iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    return {"pixel_accuracy": float(tp.sum() / cm.sum()), "mean_iou": float(np.nanmean(iou)),
            "iou_per_class": [None if np.isnan(v) else float(v) for v in iou]}


def _plot_segmentation(x, y_true, y_pred, path, n=6):
    plt = _pyplot()
    if plt is None:
        return None
    from matplotlib.colors import ListedColormap
    cmap = ListedColormap(["#202020", "#e8553a", "#3a8ee8", "#f2c53d"])
    n = min(n, len(x))
    fig, axes = plt.subplots(3, n, figsize=(1.9 * n, 6.2), squeeze=False)
    for i in range(n):
        for row, (img, kw) in enumerate(((x[i, ..., 0], {"cmap": "gray", "vmin": 0, "vmax": 1}),
                                         (y_true[i], {"cmap": cmap, "vmin": 0, "vmax": 3}),
                                         (y_pred[i], {"cmap": cmap, "vmin": 0, "vmax": 3}))):
            axes[row, i].imshow(img, interpolation="nearest", **kw)
            axes[row, i].set_xticks([])
            axes[row, i].set_yticks([])
    for row, label in enumerate(("input", "true mask", "predicted")):
        axes[row, 0].set_ylabel(label)
    fig.suptitle("U-Net on held-out shapes: red circle, blue square, yellow triangle")
    fig.tight_layout()
    save_figure(fig, path, dpi=90, close=True)
    return path


def train_unet(epochs=None, batch_size=None, out=None, seed=0, verbose=2, num_train=2000, num_test=400, size=32,
               filters=8, depth=2, plot=True):
    """Train the U-Net on the synthetic shapes; report pixel accuracy and mean IoU on held-out images."""
    r = RECIPES["unet"]
    epochs, batch_size = epochs or r.epochs, batch_size or r.batch_size
    out = out or os.path.join("runs", r.name)
    backend.set_random_seed(seed)
    (x, y), (xt, yt) = synthetic.load_shapes(num_train, num_test, size=size, seed=seed)
    k = len(synthetic.SHAPE_CLASSES)
    model = unet(x.shape[1:], k, filters=filters, depth=depth)
    model.compile(optimizer=optimizers.Adam(r.learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    common.say(verbose, f"Training '{r.name}' ({r.description}): {len(x)} training and {len(xt)} held-out {size}x{size} "
                  f"images, {epochs} epochs, batch size {batch_size}, seed {seed}.")
    start = time.perf_counter()
    history = model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=common.fit_verbose(verbose),
                        validation_data=(xt, yt)).history
    seconds = time.perf_counter() - start
    pred = model.predict(xt, batch_size=128, verbose=0).argmax(-1)
    scores = segmentation_scores(yt, pred, k)
    iou = metrics.MeanIoU(num_classes=k)          # Keras's metric agrees with segmentation_scores
    iou.update_state(yt, pred)
    baseline = segmentation_scores(yt, np.zeros_like(yt), k)
    run = {"model": r.name, "dataset": r.dataset, "epochs": epochs, "batch_size": batch_size, "seed": seed,
           "num_train": len(x), "num_test": len(xt), "size": size, "filters": filters, "depth": depth,
           "test_pixel_accuracy": scores["pixel_accuracy"], "test_mean_iou": float(iou.result()),
           "test_iou_per_class": dict(zip(synthetic.SHAPE_CLASSES, scores["iou_per_class"])),
           "baseline_all_background": {"pixel_accuracy": baseline["pixel_accuracy"],
                                       "mean_iou": baseline["mean_iou"]},
           "train_seconds": round(seconds, 2), "params": _params(model)}
    common.say(verbose, f"Held-out pixel accuracy {scores['pixel_accuracy']:.4f}, mean IoU {run['test_mean_iou']:.4f} "
                  f"(all-background baseline: {baseline['pixel_accuracy']:.4f}, {baseline['mean_iou']:.4f}); "
                  f"{seconds:.1f} s of training.")
    common.say(verbose, "  IoU per class: " + ", ".join(f"{c} {v:.3f}" for c, v in run["test_iou_per_class"].items()))
    common.save_run(out, {"model.lamina": model}, history, run, verbose, plot)
    if plot and _plot_segmentation(xt, yt, pred, os.path.join(out, "segmentation.png")):
        common.say(verbose, f"Saved {os.path.join(out, 'segmentation.png')}")
    return run


# ------------------------------------------------------------------------------------- autoencoder
def dense_autoencoder(input_shape=(8, 8, 1), code_size=10, hidden=64):
    """Flatten -> Dense(hidden, relu) -> Dense(code_size) (the code, linear) -> Dense(hidden, relu) ->
    Dense(pixels, sigmoid) -> Reshape back to the image. Returns (autoencoder, encoder, decoder), sharing
    layers: encoder image -> code, decoder code -> image."""
    pixels = int(np.prod(input_shape))
    encoder = Sequential([layers.Input(shape=input_shape), layers.Flatten(),
                          layers.Dense(hidden, activation="relu"), layers.Dense(code_size, name="code")],
                         name="encoder")
    decoder = Sequential([layers.Input(shape=(code_size,)), layers.Dense(hidden, activation="relu"),
                          layers.Dense(pixels, activation="sigmoid"), layers.Reshape(input_shape)],
                         name="decoder")
    image = layers.Input(shape=input_shape, name="image")
    autoencoder = Model(image, decoder(encoder(image)), name="autoencoder")
    return autoencoder, encoder, decoder


def pca_reconstruction(x_train, x_test, components):
    """Reconstruct x_test from its projection on the first ``components`` principal components of x_train:
    the best linear autoencoder of that code size, the baseline a nonlinear one should beat."""
    a = x_train.reshape(len(x_train), -1).astype(np.float64)
    mean = a.mean(axis=0)
    _, _, vt = np.linalg.svd(a - mean, full_matrices=False)
    v = vt[:components]
    b = x_test.reshape(len(x_test), -1) - mean
    return ((b @ v.T) @ v + mean).reshape(x_test.shape).astype(np.float32)


def _plot_pairs(x, recon, path, title, n=10):
    plt = _pyplot()
    if plt is None:
        return None
    n = min(n, len(x))
    fig, axes = plt.subplots(2, n, figsize=(1.1 * n, 2.6), squeeze=False)
    for i in range(n):
        for row, img in enumerate((x[i], recon[i])):
            axes[row, i].imshow(img[..., 0], cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
            axes[row, i].axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=90, close=True)
    return path


def train_autoencoder(epochs=None, batch_size=None, out=None, seed=0, verbose=2, code_size=10, plot=True):
    """Train the dense autoencoder on the bundled digits; report the test reconstruction error (MSE per
    pixel) against PCA with the same code size and against predicting the mean image."""
    r = RECIPES["autoencoder"]
    epochs, batch_size = epochs or r.epochs, batch_size or r.batch_size
    out = out or os.path.join("runs", r.name)
    backend.set_random_seed(seed)
    (x, _), (xt, _) = _digits01()
    model, encoder, decoder = dense_autoencoder(x.shape[1:], code_size)
    model.compile(optimizer=optimizers.Adam(r.learning_rate), loss="mse")
    common.say(verbose, f"Training '{r.name}' ({r.description}): {len(x)} training and {len(xt)} test digits, "
                  f"{epochs} epochs, batch size {batch_size}, seed {seed}.")
    start = time.perf_counter()
    history = model.fit(x, x, batch_size=batch_size, epochs=epochs, verbose=common.fit_verbose(verbose),
                        validation_data=(xt, xt)).history
    seconds = time.perf_counter() - start
    recon = model.predict(xt, verbose=0)
    mse = float(np.mean((recon - xt) ** 2))
    pca = float(np.mean((pca_reconstruction(x, xt, code_size) - xt) ** 2))
    mean_image = float(np.mean((x.mean(axis=0) - xt) ** 2))
    run = {"model": r.name, "dataset": r.dataset, "epochs": epochs, "batch_size": batch_size, "seed": seed,
           "code_size": code_size, "test_mse": mse, "pca_test_mse": pca, "mean_image_test_mse": mean_image,
           "first_epoch_val_mse": float(history["val_loss"][0]), "train_seconds": round(seconds, 2),
           "params": _params(model)}
    common.say(verbose, f"Test reconstruction MSE {mse:.4f} per pixel (PCA with {code_size} components {pca:.4f}, "
                  f"the mean image {mean_image:.4f}); {seconds:.1f} s of training.")
    common.save_run(out, {"model.lamina": model}, history, run, verbose, plot)
    if plot and _plot_pairs(xt, recon, os.path.join(out, "reconstructions.png"),
                            f"test digits (top) and their reconstructions from a {code_size}-number code"):
        common.say(verbose, f"Saved {os.path.join(out, 'reconstructions.png')}")
    return run


# --------------------------------------------------------------------------------------------- VAE
def reparameterize(z_mean, z_log_var, epsilon):
    """The reparameterisation trick: z = mean + exp(log_var / 2) * epsilon, epsilon ~ N(0, 1) given.

    Shapes (N, D) all three. Backward: dz/dmean = 1, dz/dlog_var = exp(log_var / 2) * epsilon / 2, so the
    gradient flows to the encoder through a sample whose randomness sits in the constant epsilon.
    """
    return z_mean + ops.exp(z_log_var * 0.5) * epsilon


def kl_divergence(z_mean, z_log_var):
    """KL(N(mean, exp(log_var)) || N(0, 1)) summed over the latent axis, averaged over the batch:
    -1/2 * mean_n sum_d (1 + log_var - mean^2 - exp(log_var)). A scalar Tensor."""
    terms = z_log_var + 1.0 - ops.square(z_mean) - ops.exp(z_log_var)
    return ops.mean(ops.sum(terms, axis=-1)) * -0.5


class Sampling(layers.Layer):
    """Draw z ~ N(z_mean, exp(z_log_var)) with the reparameterisation trick, and add the KL term.

    Args:
        kl_weight: the KL divergence to N(0, 1) (``kl_divergence``) times this factor is added with
            ``add_loss`` at each call, so ``fit`` minimises reconstruction + kl_weight * KL (0: no term).
        seed: seed of this layer's own generator (default: lamina's global seeded one).
    Input: [z_mean, z_log_var], both (N, D). Output: z (N, D), a fresh sample at every call (training or
    not, as in Keras's VAE example; use z_mean for a deterministic code).
    Forward: z = z_mean + exp(z_log_var / 2) * eps, eps ~ N(0, 1). Backward: see ``reparameterize``.
    """

    def __init__(self, kl_weight=1.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(kl_weight, (int, float)) or isinstance(kl_weight, bool) or kl_weight < 0:
            raise ValueError(f"Sampling '{self.name}': kl_weight must be a number >= 0. "
                             f"Received: kl_weight={kl_weight!r}")
        self.kl_weight, self.seed = float(kl_weight), seed
        self._rng = None if seed is None else np.random.default_rng(seed)

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ValueError(f"Sampling '{self.name}' expects a list [z_mean, z_log_var]. Received: {inputs!r}")
        z_mean, z_log_var = inputs
        if tuple(z_mean.shape) != tuple(z_log_var.shape):
            raise ValueError(f"Sampling '{self.name}': z_mean and z_log_var must have the same shape. Received: "
                             f"{tuple(z_mean.shape)} and {tuple(z_log_var.shape)}")
        gen = self._rng if self._rng is not None else backend.rng()
        eps = gen.standard_normal(tuple(z_mean.shape), dtype=np.float32).astype(z_mean.dtype, copy=False)
        xp = backend.get_array_module(z_mean.data)
        eps = Tensor(eps if xp is np else backend.to_device(eps, xp))
        if self.kl_weight:
            self.add_loss(kl_divergence(z_mean, z_log_var) * self.kl_weight)
        return reparameterize(z_mean, z_log_var, eps)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])


def vae_encoder(input_shape=(8, 8, 1), latent_dim=2, hidden=64, kl_weight=1.0):
    """image -> [z_mean, z_log_var, z]: Flatten, Dense(hidden, relu) x 2, two Dense(latent_dim) heads and the
    Sampling layer (which adds kl_weight * KL through add_loss)."""
    image = layers.Input(shape=input_shape, name="image")
    h = layers.Flatten()(image)
    h = layers.Dense(hidden, activation="relu")(h)
    h = layers.Dense(hidden, activation="relu")(h)
    z_mean = layers.Dense(latent_dim, name="z_mean")(h)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(h)
    z = Sampling(kl_weight=kl_weight, name="z")([z_mean, z_log_var])
    return Model(image, [z_mean, z_log_var, z], name="encoder")


def vae_decoder(output_shape=(8, 8, 1), latent_dim=2, hidden=64):
    """z -> image: Dense(hidden, relu) x 2, Dense(pixels, sigmoid), Reshape."""
    return Sequential([layers.Input(shape=(latent_dim,)), layers.Dense(hidden, activation="relu"),
                       layers.Dense(hidden, activation="relu"),
                       layers.Dense(int(np.prod(output_shape)), activation="sigmoid"),
                       layers.Reshape(output_shape)], name="decoder")


def vae(input_shape=(8, 8, 1), latent_dim=2, hidden=64, kl_weight=None):
    """(vae, encoder, decoder). The VAE maps an image to the decoding of its sampled code; compiled with a
    per-pixel binary cross-entropy, its loss is the negative ELBO per pixel when kl_weight = 1 / pixels
    (the default), because the reconstruction term is then averaged over pixels, not summed."""
    pixels = int(np.prod(input_shape))
    kl_weight = 1.0 / pixels if kl_weight is None else kl_weight
    encoder = vae_encoder(input_shape, latent_dim, hidden, kl_weight)
    decoder = vae_decoder(input_shape, latent_dim, hidden)
    image = layers.Input(shape=input_shape, name="image")
    _, _, z = encoder(image)
    return Model(image, decoder(z), name="vae"), encoder, decoder


def _plot_grid(images, path, title, rows, cols, cmap="gray_r", vmin=0.0, vmax=1.0):
    plt = _pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(rows, cols, figsize=(0.75 * cols, 0.75 * rows + 0.5), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        if i < len(images):
            ax.imshow(images[i][..., 0], cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=90, close=True)
    return path


def train_vae(epochs=None, batch_size=None, out=None, seed=0, verbose=2, latent_dim=2, plot=True):
    """Train the VAE on the bundled digits; report reconstruction error (decoding z_mean), KL and the
    negative ELBO on the test digits, and save samples decoded from random latent points."""
    r = RECIPES["vae"]
    epochs, batch_size = epochs or r.epochs, batch_size or r.batch_size
    out = out or os.path.join("runs", r.name)
    backend.set_random_seed(seed)
    (x, _), (xt, yt) = _digits01()
    model, encoder, decoder = vae(x.shape[1:], latent_dim)
    model.compile(optimizer=optimizers.Adam(r.learning_rate), loss="binary_crossentropy")
    common.say(verbose, f"Training '{r.name}' ({r.description}): {len(x)} training and {len(xt)} test digits, "
                  f"{epochs} epochs, batch size {batch_size}, seed {seed}.")
    start = time.perf_counter()
    history = model.fit(x, x, batch_size=batch_size, epochs=epochs, verbose=common.fit_verbose(verbose),
                        validation_data=(xt, xt)).history
    seconds = time.perf_counter() - start
    with no_grad():
        z_mean, z_log_var, _ = encoder(xt)
        kl = float(kl_divergence(z_mean, z_log_var).numpy())
        recon = decoder(z_mean).numpy()
    mse = float(np.mean((recon - xt) ** 2))
    pixels = int(np.prod(x.shape[1:]))
    p = np.clip(recon, 1e-7, 1 - 1e-7)
    bce_sum = float(-np.mean(np.sum(xt * np.log(p) + (1 - xt) * np.log(1 - p), axis=(1, 2, 3))))
    run = {"model": r.name, "dataset": r.dataset, "epochs": epochs, "batch_size": batch_size, "seed": seed,
           "latent_dim": latent_dim, "test_mse_from_mean_code": mse,
           "pca_test_mse": float(np.mean((pca_reconstruction(x, xt, latent_dim) - xt) ** 2)),
           "test_kl": kl, "test_negative_elbo_per_image": bce_sum + kl,
           "first_epoch_loss": float(history["loss"][0]), "last_epoch_loss": float(history["loss"][-1]),
           "final_val_loss_per_pixel": float(history["val_loss"][-1]), "pixels": pixels,
           "train_seconds": round(seconds, 2), "params": _params(model)}
    common.say(verbose, f"Test reconstruction MSE {mse:.4f} per pixel from the mean code (PCA with {latent_dim} "
                  f"components {run['pca_test_mse']:.4f}); KL {kl:.3f} nats; negative ELBO "
                  f"{run['test_negative_elbo_per_image']:.2f} nats per image; {seconds:.1f} s of training.")
    common.save_run(out, {"model.lamina": model, "encoder.lamina": encoder, "decoder.lamina": decoder}, history, run,
              verbose, plot)
    if plot:
        rng = np.random.default_rng(seed)
        samples = decoder.predict(rng.standard_normal((64, latent_dim)).astype(np.float32), verbose=0)
        if _plot_grid(samples, os.path.join(out, "samples.png"),
                      "VAE: digits decoded from random latent points z ~ N(0, I)", 8, 8):
            common.say(verbose, f"Saved {os.path.join(out, 'samples.png')}")
        if latent_dim == 2:
            _plot_latent(decoder, z_mean.numpy(), yt, os.path.join(out, "latent.png"))
            common.say(verbose, f"Saved {os.path.join(out, 'latent.png')}")
    return run


def _plot_latent(decoder, z, labels, path, n=10, span=2.5):
    """Left: the test digits' mean codes coloured by class; right: decodings of an n x n grid of latent points
    over [-span, span]^2 (the prior's bulk), tiled into one image."""
    plt = _pyplot()
    if plt is None:
        return None
    g = np.linspace(-span, span, n, dtype=np.float32)
    zz = np.stack(np.meshgrid(g, g[::-1]), axis=-1).reshape(-1, 2)       # rows from top (high z1) to bottom
    imgs = np.pad(decoder.predict(zz, verbose=0)[..., 0], ((0, 0), (1, 1), (1, 1)))   # a white frame per cell
    h, w = imgs.shape[1:]
    tiled = imgs.reshape(n, n, h, w).transpose(0, 2, 1, 3).reshape(n * h, n * w)
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4.6))
    sc = a.scatter(z[:, 0], z[:, 1], c=labels, cmap="tab10", s=9)
    a.set_xlabel("z[0]")
    a.set_ylabel("z[1]")
    a.set_title("mean codes of the test digits")
    fig.colorbar(sc, ax=a, ticks=range(10))
    b.imshow(tiled, cmap="gray_r", vmin=0, vmax=1, extent=(-span, span, -span, span))
    b.set_title("decoded latent grid")
    b.set_xlabel("z[0]")
    fig.tight_layout()
    save_figure(fig, path, dpi=90, close=True)
    return path


# --------------------------------------------------------------------------------------------- GAN
def gan_generator(latent_dim=32, output_shape=(8, 8, 1)):
    """The seed's generator sized for 8x8 digits: Dense(128, relu), BatchNormalization, Dense(256, relu),
    BatchNormalization, Dense(pixels, tanh), Reshape. Noise (N, latent_dim) -> images (N, 8, 8, 1) in [-1, 1]."""
    return Sequential([layers.Input(shape=(latent_dim,)),
                       layers.Dense(128, activation="relu"), layers.BatchNormalization(),
                       layers.Dense(256, activation="relu"), layers.BatchNormalization(),
                       layers.Dense(int(np.prod(output_shape)), activation="tanh"),
                       layers.Reshape(output_shape)], name="generator")


def gan_discriminator(input_shape=(8, 8, 1)):
    """The seed's discriminator sized for 8x8 digits: Flatten, Dense(256, relu), Dense(128, relu),
    Dense(1, sigmoid): the probability that an image is real."""
    return Sequential([layers.Input(shape=input_shape), layers.Flatten(),
                       layers.Dense(256, activation="relu"), layers.Dense(128, activation="relu"),
                       layers.Dense(1, activation="sigmoid")], name="discriminator")


def _judge(x, y, xt, yt, seed, epochs=30):
    """A digits classifier (the catalog's MLP) trained on the real training digits: the judge of the GAN."""
    backend.set_random_seed(seed + 1)
    clf = common.digits_mlp(x.shape[1:], 10)
    clf.compile(optimizer=optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    clf.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
    return clf, float(clf.evaluate(xt, yt, verbose=0)[1])


def _judge_scores(clf, images01):
    """Mean top-class probability, share of samples with one above 0.9, and the share of each class."""
    p = clf.predict(images01, batch_size=256, verbose=0)
    top = p.max(axis=1)
    share = np.bincount(p.argmax(axis=1), minlength=p.shape[1]) / len(p)
    return {"mean_confidence": float(top.mean()), "confident_share": float((top > 0.9).mean()),
            "class_share": [round(float(s), 4) for s in share],
            "classes_over_3_percent": int((share > 0.03).sum())}


def _judge_features(clf, images01):
    """The judge's hidden ReLU layer (the MLP's first Dense) on images: (N, 128) float64."""
    dense = [layer for layer in clf.layers if isinstance(layer, layers.Dense)][0]
    kernel, bias = (np.asarray(w, np.float64) for w in dense.get_weights())
    return np.maximum(images01.reshape(len(images01), -1) @ kernel + bias, 0.0)


def frechet_distance(a, b):
    """Frechet distance between Gaussians fitted to two feature sets (rows are samples), as in FID:
    |mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)). The trace of the matrix square root is the sum of
    the square roots of the eigenvalues of S_a^(1/2) S_b S_a^(1/2) (symmetric, so eigh suffices)."""
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s_a)
    root_a = (v * np.sqrt(np.maximum(w, 0.0))) @ v.T
    cross = np.linalg.eigvalsh(root_a @ s_b @ root_a)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.sqrt(np.maximum(cross, 0)).sum())


def train_gan(epochs=None, batch_size=None, out=None, seed=0, verbose=2, latent_dim=32, num_samples=1000,
              judge_epochs=30, plot=True):
    """Train the GAN on the bundled digits with a custom loop; judge the generated digits with a classifier.

    Each step: the discriminator learns real -> 1 and fake -> 0 on a batch of each, then the generator
    learns to make it answer 1 (only the generator's weights move). Images are scaled to [-1, 1] (tanh).
    Reported: the discriminator's per-epoch accuracy on real and fake batches, and a digits classifier's
    confidence on generated samples next to its confidence on real test digits and on uniform noise.
    """
    r = RECIPES["gan"]
    epochs, batch_size = epochs or r.epochs, batch_size or r.batch_size
    out = out or os.path.join("runs", r.name)
    backend.set_random_seed(seed)
    (x, y), (xt, yt) = _digits01()
    real_all = x * 2.0 - 1.0
    generator, discriminator = gan_generator(latent_dim, x.shape[1:]), gan_discriminator(x.shape[1:])
    g_opt = optimizers.Adam(r.learning_rate, beta_1=0.5)
    d_opt = optimizers.Adam(r.learning_rate, beta_1=0.5)
    from ..losses import BinaryCrossentropy
    bce = BinaryCrossentropy()
    ones = np.ones((batch_size, 1), np.float32)
    zeros = np.zeros((batch_size, 1), np.float32)
    rng = np.random.default_rng(seed)
    steps = len(x) // batch_size
    probe = np.random.default_rng(seed + 2).standard_normal((num_samples, latent_dim)).astype(np.float32)
    untrained = generator.predict(probe, verbose=0)
    common.say(verbose, f"Training '{r.name}' ({r.description}): {len(x)} training digits, {epochs} epochs of {steps} "
                  f"steps, batch size {batch_size}, latent size {latent_dim}, seed {seed}.")
    history = {k: [] for k in ("d_loss", "g_loss", "d_accuracy_real", "d_accuracy_fake")}
    start = time.perf_counter()
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        sums = np.zeros(4)
        for s in range(steps):
            real = real_all[order[s * batch_size:(s + 1) * batch_size]]
            noise = rng.standard_normal((batch_size, latent_dim)).astype(np.float32)
            with no_grad():
                fake = generator(noise, training=True)
            p_real = discriminator(real, training=True)
            p_fake = discriminator(fake, training=True)
            d_loss = bce(ones, p_real) + bce(zeros, p_fake)
            d_weights = discriminator.trainable_weights
            d_opt.apply_gradients(zip(grad(d_loss, d_weights), d_weights))
            g_loss = bce(ones, discriminator(generator(noise, training=True), training=True))
            g_weights = generator.trainable_weights
            g_opt.apply_gradients(zip(grad(g_loss, g_weights), g_weights))
            sums += (float(d_loss.numpy()) / 2, float(g_loss.numpy()),
                     float((p_real.numpy() > 0.5).mean()), float((p_fake.numpy() < 0.5).mean()))
        for key, value in zip(history, sums / steps):
            history[key].append(float(value))
        if not np.isfinite(sums).all():
            raise FloatingPointError(f"train_gan: a loss became non-finite in epoch {epoch + 1}; lower the "
                                     "learning rate.")
        if verbose >= 2 and (epoch + 1) % max(1, epochs // 10) == 0:
            common.say(verbose, f"Epoch {epoch + 1}/{epochs} - " + " - ".join(f"{k}: {v[-1]:.4f}"
                                                                    for k, v in history.items()))
    seconds = time.perf_counter() - start

    clf, judge_accuracy = _judge(x, y, xt, yt, seed, judge_epochs)
    generated = (generator.predict(probe, verbose=0) + 1.0) / 2.0
    uniform = rng.uniform(0.0, 1.0, size=(num_samples,) + x.shape[1:]).astype(np.float32)
    scores = {"generated": _judge_scores(clf, generated), "real_test": _judge_scores(clf, xt),
              "uniform_noise": _judge_scores(clf, uniform)}
    # a small FID: the Frechet distance between Gaussians fitted to the judge's hidden features
    features = lambda images: _judge_features(clf, images)                 # noqa: E731
    test_features = features(xt)
    frechet = {"generated": frechet_distance(features(generated), test_features),
               "real_training_digits": frechet_distance(features(x), test_features),
               "untrained_generator": frechet_distance(features((untrained + 1.0) / 2.0), test_features),
               "uniform_noise": frechet_distance(features(uniform), test_features)}
    run = {"model": r.name, "dataset": r.dataset, "epochs": epochs, "batch_size": batch_size, "seed": seed,
           "steps": epochs * steps, "latent_dim": latent_dim, "judge_test_accuracy": judge_accuracy,
           "judge": scores, "frechet_distance_to_test_digits": frechet,
           "discriminator_accuracy_first_last_epoch": {
               "real": [history["d_accuracy_real"][0], history["d_accuracy_real"][-1]],
               "fake": [history["d_accuracy_fake"][0], history["d_accuracy_fake"][-1]]},
           "train_seconds": round(seconds, 2), "params": _params(generator, discriminator)}
    g, t, u = scores["generated"], scores["real_test"], scores["uniform_noise"]
    common.say(verbose, f"{seconds:.1f} s of training. Discriminator accuracy in the last epoch: real "
                  f"{history['d_accuracy_real'][-1]:.3f}, fake {history['d_accuracy_fake'][-1]:.3f}.")
    common.say(verbose, f"Digits classifier (test accuracy {judge_accuracy:.3f}) mean confidence: generated "
                  f"{g['mean_confidence']:.3f}, real test digits {t['mean_confidence']:.3f}, uniform noise "
                  f"{u['mean_confidence']:.3f}; classes given to over 3% of the generated digits: "
                  f"{g['classes_over_3_percent']} of 10.")
    common.say(verbose, "Frechet distance to the test digits in the classifier's hidden features (lower is closer): "
                  + ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in frechet.items()) + ".")
    common.save_run(out, {"model.lamina": generator, "generator.lamina": generator,
                    "discriminator.lamina": discriminator}, history, run, verbose, plot)
    if plot and _plot_grid(generated[:64], os.path.join(out, "samples.png"),
                           "GAN: generated digits (random noise in, one per cell)", 8, 8):
        common.say(verbose, f"Saved {os.path.join(out, 'samples.png')}")
    return run


# ---------------------------------------------------------------------------------- the catalog
VisionRecipe = common.LoopRecipe   # (kept under its old name)


def _build_autoencoder(input_shape=(8, 8, 1), num_classes=None):
    return dense_autoencoder(input_shape)[0]


def _build_vae(input_shape=(8, 8, 1), num_classes=None):
    return vae(input_shape)[0]


def _build_generator(input_shape=(8, 8, 1), num_classes=None):
    return gan_generator(output_shape=input_shape)


def _build_unet(input_shape=(32, 32, 1), num_classes=len(synthetic.SHAPE_CLASSES)):
    return unet(input_shape, num_classes)


RECIPES = {r.name: r for r in [
    VisionRecipe("unet", _build_unet, "shapes", 12, 32, 3e-3,
                 "U-Net segments synthetic circles/squares/triangles (mean IoU ~0.9; all-background 0.21)",
                 lambda **kw: train_unet(**kw)),
    VisionRecipe("autoencoder", _build_autoencoder, "digits", 60, 32, 2e-3,
                 "dense autoencoder, 10-number code, on the bundled digits (vs PCA)",
                 lambda **kw: train_autoencoder(**kw)),
    VisionRecipe("vae", _build_vae, "digits", 80, 32, 2e-3,
                 "variational autoencoder, 2-D latent space, on the bundled digits (samples PNG)",
                 lambda **kw: train_vae(**kw)),
    VisionRecipe("gan", _build_generator, "digits", 150, 64, 5e-4,
                 "GAN (the seed's Dense generator/discriminator) on the bundled digits (samples PNG)",
                 lambda **kw: train_gan(**kw)),
]}


def _shapes_dataset():
    return synthetic.load_shapes()


common.DATASETS.setdefault("shapes", (_shapes_dataset, 1.0, False,
                                       "2,000 + 400 synthetic 32x32 shape images with per-pixel masks (seeded)"))
common.RECIPES.update({k: v for k, v in RECIPES.items() if k not in common.RECIPES})


def main(argv=None):
    """``python -m lamina.zoo.vision NAME [--epochs N] [--batch-size B] [--out DIR] [--seed S] [--quiet]``."""
    return common.recipe_main("python -m lamina.zoo.vision", __doc__.splitlines()[0], RECIPES, argv)


if __name__ == "__main__":
    raise SystemExit(main())
