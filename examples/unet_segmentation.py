"""A U-Net that labels every pixel of synthetic images as background, circle, square or triangle.

    python examples/unet_segmentation.py   # mean IoU ~0.8 on held-out images in about 30 s;
                                           # writes unet_segmentation.png when matplotlib is installed
"""
import os

import numpy as np

import lamina as keras
from lamina import layers
from lamina.datasets.synthetic import load_shapes

FAST = os.environ.get("LAMINA_EXAMPLE_FAST") == "1"

keras.utils.set_random_seed(0)
size = 16 if FAST else 32
(x_train, y_train), (x_test, y_test) = load_shapes(num_train=64 if FAST else 1200, num_test=16 if FAST else 300,
                                                   size=size)
print(f"images {x_train.shape}, masks {y_train.shape} (0 background, 1 circle, 2 square, 3 triangle)")


def conv_block(x, filters):
    x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
    return layers.Conv2D(filters, 3, padding="same", activation="relu")(x)


inputs = keras.Input(shape=(size, size, 1))
c1 = conv_block(inputs, 8)                                    # size x size
c2 = conv_block(layers.MaxPooling2D(2)(c1), 16)               # size / 2
bottom = conv_block(layers.MaxPooling2D(2)(c2), 32)           # size / 4
u2 = layers.Conv2DTranspose(16, 2, strides=2, padding="same")(bottom)
c3 = conv_block(layers.Concatenate()([u2, c2]), 16)           # skip connection: encoder features of this size
u1 = layers.Conv2DTranspose(8, 2, strides=2, padding="same")(c3)
c4 = conv_block(layers.Concatenate()([u1, c1]), 8)
outputs = layers.Conv2D(4, 1, activation="softmax")(c4)      # per-pixel class probabilities
model = keras.Model(inputs, outputs, name="unet")

model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
model.fit(x_train, y_train, batch_size=32, epochs=1 if FAST else 10, validation_data=(x_test, y_test), verbose=2)

pred = model.predict(x_test, verbose=0).argmax(axis=-1)
iou = keras.metrics.MeanIoU(num_classes=4)
iou.update_state(y_test, pred)
background = keras.metrics.MeanIoU(num_classes=4)
background.update_state(y_test, np.zeros_like(y_test))
print(f"U-Net on held-out images: pixel accuracy {np.mean(pred == y_test):.4f}, mean IoU {float(iou.result()):.4f} "
      f"(predicting all background: {np.mean(y_test == 0):.4f}, {float(background.result()):.4f})")

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
except ImportError:
    plt = None
if plt is not None:
    fig, axes = plt.subplots(3, 5, figsize=(9, 5.6))
    for i in range(5):
        for row, img in enumerate((x_test[i, ..., 0], y_test[i], pred[i])):
            axes[row, i].imshow(img, cmap="gray" if row == 0 else "viridis", vmin=0, vmax=1 if row == 0 else 3)
            axes[row, i].axis("off")
    axes[0, 0].set_title("input / true mask / predicted", loc="left")
    fig.savefig("unet_segmentation.png", dpi=80)
    print("saved unet_segmentation.png")
