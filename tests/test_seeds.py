"""The Keras snippets of the seed documents (shared/seeds/001 and 003) run with only the import changed.

Each test below is the seed's code with ``tensorflow.keras`` replaced by ``lamina``; the data is small and
random so that the whole file stays fast. Parameter totals are Keras's (computed by hand from the layer
formulas, e.g. Conv2D: kh * kw * in * filters + filters).
"""
import numpy as np

import lamina as keras
from lamina import layers, models

tf = type("tf", (), {"keras": keras})  # lets the seed's ``tf.keras.layers...`` lines run unchanged


def _totals(model):
    lines = []
    model.summary(print_fn=lines.append)
    return lines


def test_003_cifar10_cnn_summary_and_fit():
    # 003: create_cnn_model(), verbatim apart from the import
    def create_cnn_model():
        model = models.Sequential()
        model.add(layers.Conv2D(32, (3, 3), activation='relu', input_shape=(32, 32, 3)))
        model.add(layers.MaxPooling2D((2, 2)))
        model.add(layers.Conv2D(64, (3, 3), activation='relu'))
        model.add(layers.MaxPooling2D((2, 2)))
        model.add(layers.Conv2D(64, (3, 3), activation='relu'))
        model.add(layers.Flatten())
        model.add(layers.Dense(64, activation='relu'))
        model.add(layers.Dense(10, activation='softmax'))
        return model

    model = create_cnn_model()
    assert model.count_params() == 122_570
    lines = _totals(model)
    assert " Total params: 122,570 (478.79 KB)" in lines
    assert " Trainable params: 122,570 (478.79 KB)" in lines
    assert model.output_shape == (None, 10)
    assert [l.output.shape for l in model.layers[:2]] == [(None, 30, 30, 32), (None, 15, 15, 32)]
    model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
    rng = np.random.default_rng(0)
    x = rng.random((8, 32, 32, 3), dtype=np.float32)
    y = rng.integers(0, 10, 8)
    history = model.fit(x, y, epochs=1, batch_size=4, verbose=0)
    assert set(history.history) == {"loss", "accuracy"}
    assert np.isfinite(history.history["loss"][0])


def test_001_cnn_28x28():
    model = tf.keras.Sequential([
        tf.keras.layers.Conv2D(32, (3, 3), activation='relu', input_shape=(28, 28, 1)),
        tf.keras.layers.MaxPooling2D((2, 2)),
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(64, activation='relu'),
        tf.keras.layers.Dense(10, activation='softmax')
    ])
    # 320 + 13*13*32*64 + 64 + 650
    assert model.count_params() == 320 + 5408 * 64 + 64 + 650
    out = model.predict(np.zeros((2, 28, 28, 1), np.float32), verbose=0)
    assert out.shape == (2, 10)
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)


def _gan_models():
    generator = tf.keras.Sequential([
        tf.keras.layers.Dense(256, activation='relu', input_shape=(100,)),
        tf.keras.layers.BatchNormalization(),
        tf.keras.layers.Dense(512, activation='relu'),
        tf.keras.layers.BatchNormalization(),
        tf.keras.layers.Dense(784, activation='tanh'),
        tf.keras.layers.Reshape((28, 28, 1))
    ])
    discriminator = tf.keras.Sequential([
        tf.keras.layers.Flatten(input_shape=(28, 28, 1)),
        tf.keras.layers.Dense(512, activation='relu'),
        tf.keras.layers.Dense(256, activation='relu'),
        tf.keras.layers.Dense(1, activation='sigmoid')
    ])
    return generator, discriminator


def test_001_gan_generator_and_discriminator():
    generator, discriminator = _gan_models()
    # Keras: Dense 100->256 (25,856), BN 4*256 (1,024: moving mean and variance non-trainable), Dense 256->512 (131,584),
    # BN 4*512 (2,048), Dense 512->784 (402,192)
    assert generator.count_params() == 25_856 + 1_024 + 131_584 + 2_048 + 402_192
    assert len(generator.non_trainable_weights) == 4
    lines = _totals(generator)
    assert " Non-trainable params: 1,536 (6.00 KB)" in lines
    assert discriminator.count_params() == 784 * 512 + 512 + 512 * 256 + 256 + 257
    noise = np.random.default_rng(0).normal(size=(4, 100)).astype(np.float32)
    images = generator.predict(noise, verbose=0)
    assert images.shape == (4, 28, 28, 1)
    assert discriminator.predict(images, verbose=0).shape == (4, 1)


def test_001_classifier_64x64x3_compile_fit():
    model = models.Sequential([
        layers.Conv2D(32, (3, 3), activation='relu', input_shape=(64, 64, 3)),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation='relu'),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(128, (3, 3), activation='relu'),
        layers.MaxPooling2D((2, 2)),
        layers.Flatten(),
        layers.Dense(128, activation='relu'),
        layers.Dense(10, activation='softmax')
    ])
    # 896 + 18,496 + 73,856 + (6*6*128)*128 + 128 + 1,290
    assert model.count_params() == 896 + 18_496 + 73_856 + 4608 * 128 + 128 + 1_290
    model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
    rng = np.random.default_rng(1)
    train_images = rng.random((6, 64, 64, 3), dtype=np.float32)
    train_labels = rng.integers(0, 10, 6)
    val_images, val_labels = train_images[:2], train_labels[:2]
    history = model.fit(train_images, train_labels, epochs=2, validation_data=(val_images, val_labels), verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history.history["val_loss"]) == 2


def test_001_unet_functional():
    # The seed's U-Net at 256x256; only the shapes and counts are checked (no forward at that size).
    def unet_model():
        input = layers.Input(shape=(256, 256, 3))
        conv1 = layers.Conv2D(64, 3, activation='relu', padding='same')(input)
        pool1 = layers.MaxPooling2D(pool_size=(2, 2))(conv1)
        up2 = layers.Conv2D(64, 2, activation='relu', padding='same')(layers.UpSampling2D(size=(2, 2))(pool1))
        output = layers.Conv2D(1, 1, activation='sigmoid')(up2)
        model = models.Model(inputs=input, outputs=output)
        return model

    model = unet_model()
    assert model.output_shape == (None, 256, 256, 1)
    assert model.count_params() == 1_792 + 16_448 + 65
    assert [type(l).__name__ for l in model.layers] == ["InputLayer", "Conv2D", "MaxPooling2D", "UpSampling2D",
                                                       "Conv2D", "Conv2D"]
    # the same graph on small images runs and trains
    small = keras.Model.from_config(_resized(model.get_config(), 16))
    small.compile(optimizer='adam', loss='binary_crossentropy')
    x = np.random.default_rng(0).random((2, 16, 16, 3), dtype=np.float32)
    y = (x[..., :1] > 0.5).astype(np.float32)
    loss = small.train_on_batch(x, y)
    assert np.isfinite(loss)
    assert small.predict(x, verbose=0).shape == (2, 16, 16, 1)


def _resized(config, size):
    for layer in config["layers"]:
        if layer["class_name"] == "InputLayer":
            layer["config"]["batch_shape"] = [None, size, size, 3]
    return config


def test_001_simple_rnn_and_lstm_text_classifiers():
    # 001 sections 3.2 and 3.3, verbatim apart from the import; Keras builds them on first data
    rnn = tf.keras.Sequential([
        tf.keras.layers.Embedding(input_dim=10000, output_dim=256),
        tf.keras.layers.SimpleRNN(128),
        tf.keras.layers.Dense(10, activation='softmax')
    ])
    lstm = tf.keras.Sequential([
        tf.keras.layers.Embedding(input_dim=10000, output_dim=256),
        tf.keras.layers.LSTM(128),
        tf.keras.layers.Dense(10, activation='softmax')
    ])
    rng = np.random.default_rng(0)
    x = rng.integers(1, 10000, (8, 12))
    y = rng.integers(0, 10, 8)
    for model, recurrent in ((rnn, 49_280), (lstm, 197_120)):
        model.compile(optimizer='adam', loss='sparse_categorical_crossentropy', metrics=['accuracy'])
        history = model.fit(x, y, epochs=3, verbose=0)
        assert history.history["loss"][-1] < history.history["loss"][0]
        assert model.predict(x, verbose=0).shape == (8, 10)
        # Keras's counts: Embedding 10000*256, the recurrent layer, Dense 128*10 + 10
        assert [layer.count_params() for layer in model.layers] == [2_560_000, recurrent, 1_290]
