"""A small convolutional network on the bundled 8x8 digits, saved to a model file and loaded back.

    python examples/cnn_digits.py          # ~98% test accuracy in under a minute
"""
import os

import numpy as np

import lamina as keras
from lamina import layers

FAST = os.environ.get("LAMINA_EXAMPLE_FAST") == "1"

keras.utils.set_random_seed(0)
(x_train, y_train), (x_test, y_test) = keras.datasets.digits.load_data()
x_train = x_train[..., None].astype("float32") / 16.0                 # (N, 8, 8, 1): channels last
x_test = x_test[..., None].astype("float32") / 16.0
if FAST:
    x_train, y_train = x_train[:256], y_train[:256]

model = keras.Sequential([
    keras.Input(shape=(8, 8, 1)),
    layers.Conv2D(32, (3, 3), padding="same", activation="relu"),
    layers.Conv2D(32, (3, 3), padding="same", activation="relu"),
    layers.MaxPooling2D((2, 2)),
    layers.Flatten(),
    layers.Dense(64, activation="relu"),
    layers.Dense(10, activation="softmax"),
])
model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x_train, y_train, batch_size=32, epochs=1 if FAST else 15, validation_data=(x_test, y_test), verbose=2)
loss, accuracy = model.evaluate(x_test, y_test, verbose=0)

model.save("cnn_digits.keras")                                        # one zip: JSON config + safetensors
restored = keras.models.load_model("cnn_digits.keras")
same = np.allclose(restored.predict(x_test, verbose=0), model.predict(x_test, verbose=0), atol=1e-6)
print(f"CNN test accuracy: {accuracy:.4f} (loss {loss:.4f}); saved to cnn_digits.keras, reloaded model agrees: {same}")
