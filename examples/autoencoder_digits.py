"""A dense autoencoder squeezes each 8x8 digit through a 10-number code and rebuilds it.

    python examples/autoencoder_digits.py  # test reconstruction error vs predicting the average digit
"""
import os

import numpy as np

import lamina as keras
from lamina import layers

FAST = os.environ.get("LAMINA_EXAMPLE_FAST") == "1"

keras.utils.set_random_seed(0)
(x_train, _), (x_test, _) = keras.datasets.digits.load_data()
x_train = x_train[..., None].astype("float32") / 16.0
x_test = x_test[..., None].astype("float32") / 16.0

encoder = keras.Sequential([keras.Input(shape=(8, 8, 1)), layers.Flatten(), layers.Dense(64, activation="relu"),
                            layers.Dense(10)], name="encoder")
decoder = keras.Sequential([keras.Input(shape=(10,)), layers.Dense(64, activation="relu"),
                            layers.Dense(64, activation="sigmoid"), layers.Reshape((8, 8, 1))], name="decoder")
autoencoder = keras.Sequential([encoder, decoder], name="autoencoder")
autoencoder.compile(optimizer=keras.optimizers.Adam(2e-3), loss="mse")
history = autoencoder.fit(x_train, x_train, batch_size=32, epochs=2 if FAST else 60,
                          validation_data=(x_test, x_test), verbose=0)

codes = encoder.predict(x_test, verbose=0)                   # (360, 10): the compressed digits
mse = float(np.mean((decoder.predict(codes, verbose=0) - x_test) ** 2))
average = float(np.mean((x_train.mean(axis=0) - x_test) ** 2))
print(f"autoencoder: test reconstruction MSE {history.history['val_loss'][0]:.4f} after the first epoch, "
      f"{mse:.4f} after the last (the average digit: {average:.4f}); codes {codes.shape}")
