"""A GAN on the bundled 8x8 digits: the seed's Dense generator and discriminator, trained with a custom loop
(keras.grad + optimizer.apply_gradients, see docs/gan.md), judged by a digits classifier.

    python examples/gan_digits.py          # about 15 s; writes gan_digits.png when matplotlib is installed
"""
import os

import numpy as np

import lamina as keras
from lamina import layers

FAST = os.environ.get("LAMINA_EXAMPLE_FAST") == "1"
LATENT, BATCH = 32, 64

keras.utils.set_random_seed(0)
(x_train, y_train), _ = keras.datasets.digits.load_data()
digits = x_train[..., None].astype("float32") / 16.0          # [0, 1]
images = digits * 2 - 1                                       # [-1, 1], the range of tanh

generator = keras.Sequential([
    keras.Input(shape=(LATENT,)),
    layers.Dense(128, activation="relu"), layers.BatchNormalization(),
    layers.Dense(256, activation="relu"), layers.BatchNormalization(),
    layers.Dense(64, activation="tanh"), layers.Reshape((8, 8, 1)),
])
discriminator = keras.Sequential([
    keras.Input(shape=(8, 8, 1)), layers.Flatten(),
    layers.Dense(256, activation="relu"), layers.Dense(128, activation="relu"),
    layers.Dense(1, activation="sigmoid"),
])
bce = keras.losses.BinaryCrossentropy()
g_opt = keras.optimizers.Adam(5e-4, beta_1=0.5)
d_opt = keras.optimizers.Adam(5e-4, beta_1=0.5)
ones, zeros = np.ones((BATCH, 1), "float32"), np.zeros((BATCH, 1), "float32")
rng = np.random.default_rng(0)

steps = 20 if FAST else 3000
for step in range(1, steps + 1):
    real = images[rng.integers(0, len(images), BATCH)]
    noise = rng.standard_normal((BATCH, LATENT)).astype("float32")
    with keras.no_grad():
        fake = generator(noise, training=True)
    p_real, p_fake = discriminator(real, training=True), discriminator(fake, training=True)
    d_loss = bce(ones, p_real) + bce(zeros, p_fake)
    d_opt.apply_gradients(zip(keras.grad(d_loss, discriminator.trainable_weights), discriminator.trainable_weights))
    g_loss = bce(ones, discriminator(generator(noise, training=True), training=True))
    g_opt.apply_gradients(zip(keras.grad(g_loss, generator.trainable_weights), generator.trainable_weights))
    if step % (steps // 5) == 0:
        accuracy = (np.mean(p_real.numpy() > 0.5) + np.mean(p_fake.numpy() < 0.5)) / 2
        print(f"step {step}: d_loss {float(d_loss) / 2:.3f} g_loss {float(g_loss):.3f} "
              f"discriminator accuracy {accuracy:.2f}")

# a judge: a classifier trained on the real digits; is it sure what the generated ones are, and of how many kinds?
judge = keras.Sequential([keras.Input(shape=(8, 8, 1)), layers.Flatten(), layers.Dense(128, activation="relu"),
                          layers.Dense(10, activation="softmax")])
judge.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
judge.fit(digits, y_train, epochs=2 if FAST else 30, verbose=0)
generated = (generator.predict(rng.standard_normal((500, LATENT)).astype("float32"), verbose=0) + 1) / 2
p = judge.predict(generated, verbose=0)
kinds = np.bincount(p.argmax(axis=1), minlength=10) / len(p)
print(f"GAN after {steps} steps: the judge's mean confidence on 500 generated digits {p.max(axis=1).mean():.3f} "
      f"(on real ones {judge.predict(digits, verbose=0).max(axis=1).mean():.3f}); "
      f"{int((kinds > 0.03).sum())} of 10 classes each hold over 3% of them")

generator.save("gan_generator.keras")
try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    plt = None
if plt is not None:
    fig, axes = plt.subplots(4, 10, figsize=(8, 3.4))
    for ax, img in zip(axes.ravel(), generated):
        ax.imshow(img[..., 0], cmap="gray_r", vmin=0, vmax=1)
        ax.axis("off")
    fig.savefig("gan_digits.png", dpi=80)
    print("saved gan_digits.png")
