"""A variational autoencoder on the bundled digits, with a custom Sampling layer (the reparameterisation
trick) that adds the KL divergence through add_loss.

    python examples/vae_digits.py          # writes vae_samples.png (digits decoded from random latent points)
"""
import os

import numpy as np

import lamina as keras
from lamina import layers, ops

FAST = os.environ.get("LAMINA_EXAMPLE_FAST") == "1"
LATENT = 2


@keras.utils.register_keras_serializable()
class Sampling(layers.Layer):
    """z = z_mean + exp(z_log_var / 2) * epsilon with epsilon ~ N(0, I): the noise is a constant, so the
    gradient reaches z_mean and z_log_var. Adds kl_weight * KL(N(z_mean, exp(z_log_var)) || N(0, I))."""

    def __init__(self, kl_weight=1.0, **kwargs):
        super().__init__(**kwargs)
        self.kl_weight = kl_weight
        self.noise = np.random.default_rng(0)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        kl = -0.5 * ops.mean(ops.sum(1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=1))
        self.add_loss(self.kl_weight * kl)
        epsilon = self.noise.standard_normal(z_mean.shape).astype("float32")
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon

    def compute_output_shape(self, input_shape):
        return input_shape[0]


keras.utils.set_random_seed(0)
(x_train, _), (x_test, _) = keras.datasets.digits.load_data()
x_train = x_train[..., None].astype("float32") / 16.0
x_test = x_test[..., None].astype("float32") / 16.0

image = keras.Input(shape=(8, 8, 1))
h = layers.Dense(64, activation="relu")(layers.Flatten()(image))
h = layers.Dense(64, activation="relu")(h)
z_mean = layers.Dense(LATENT, name="z_mean")(h)
z_log_var = layers.Dense(LATENT, name="z_log_var")(h)
# binary cross-entropy averages over the 64 pixels, so the KL term is divided by 64 too: loss = -ELBO / 64
z = Sampling(kl_weight=1 / 64, name="z")([z_mean, z_log_var])
encoder = keras.Model(image, [z_mean, z_log_var, z], name="encoder")

decoder = keras.Sequential([keras.Input(shape=(LATENT,)), layers.Dense(64, activation="relu"),
                            layers.Dense(64, activation="relu"), layers.Dense(64, activation="sigmoid"),
                            layers.Reshape((8, 8, 1))], name="decoder")
vae = keras.Model(image, decoder(encoder(image)[2]), name="vae")
vae.compile(optimizer=keras.optimizers.Adam(2e-3), loss="binary_crossentropy")
history = vae.fit(x_train, x_train, batch_size=32, epochs=2 if FAST else 80, validation_data=(x_test, x_test),
                  verbose=0).history

mean_codes = encoder.predict(x_test, verbose=0)[0]
mse = float(np.mean((decoder.predict(mean_codes, verbose=0) - x_test) ** 2))
print(f"VAE loss (per pixel, reconstruction + KL / 64): {history['loss'][0]:.4f} in the first epoch, "
      f"{history['loss'][-1]:.4f} in the last; test MSE decoding the mean codes {mse:.4f}")

vae.save("vae_digits.keras")                           # the custom layer is registered, so it loads back
keras.models.load_model("vae_digits.keras")
samples = decoder.predict(np.random.default_rng(1).standard_normal((40, LATENT)).astype("float32"), verbose=0)
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    plt = None
if plt is None:
    print("matplotlib is not installed: no vae_samples.png (pip install 'lamina[plot]' for the picture)")
else:
    fig, axes = plt.subplots(4, 10, figsize=(8, 3.4))
    for ax, img in zip(axes.ravel(), samples):
        ax.imshow(img[..., 0], cmap="gray_r", vmin=0, vmax=1)
        ax.axis("off")
    fig.suptitle("decoded from z ~ N(0, I)")
    fig.savefig("vae_samples.png", dpi=80)
    print("saved vae_samples.png")
