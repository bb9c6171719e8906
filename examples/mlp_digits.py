"""A multilayer perceptron on the 8x8 handwritten digits that ship with lamina (offline).

    python examples/mlp_digits.py          # ~97% test accuracy in a few seconds
"""
import os

import lamina as keras
from lamina import layers

FAST = os.environ.get("LAMINA_EXAMPLE_FAST") == "1"     # tiny run for the test suite

keras.utils.set_random_seed(0)
(x_train, y_train), (x_test, y_test) = keras.datasets.digits.load_data()
x_train, x_test = x_train.astype("float32") / 16.0, x_test.astype("float32") / 16.0   # pixels 0..16 -> [0, 1]

model = keras.Sequential([
    keras.Input(shape=(8, 8)),
    layers.Flatten(),
    layers.Dense(128, activation="relu"),
    layers.Dense(10, activation="softmax"),
])
model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.summary()
model.fit(x_train, y_train, batch_size=32, epochs=2 if FAST else 30, validation_split=0.1, verbose=2)
loss, accuracy = model.evaluate(x_test, y_test, verbose=0)
print(f"MLP test accuracy: {accuracy:.4f} (loss {loss:.4f}) on {len(x_test)} held-out digits; chance is 0.10")
