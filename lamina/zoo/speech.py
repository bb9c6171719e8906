"""Keyword spotting: which word is in a one-second clip of sound.

    lamina train speech             # synthetic spoken-like keywords (offline): accuracy and keywords.png
    lamina train speech-commands    # Google Speech Commands v0.02, ten words (downloads 2.4 GB once)

The model hears the waveform (8 kHz, 8000 samples) through a fixed ``STFTSpectrogram`` front end (log
magnitude of 32 ms frames every 16 ms: a 61 x 129 time-frequency picture, ``trainable=False``), halves the
frequency axis by averaging, normalises each clip's picture (LayerNormalization) and classifies it with a
small CNN: three 3x3 convolutions with max pooling, global max pooling over time and frequency (a word may start
anywhere in the clip), and a softmax. The run reports test accuracy against the majority baseline (always
answering the most frequent training class) and draws test spectrograms with the predicted and true words.
Speech Commands clips (16 kHz) are resampled to 8 kHz first (an FFT resampler: the band above 4 kHz is
dropped, which keeps most of speech's energy).
"""
import os
import time

import numpy as np

from .. import backend, layers
from ..datasets import keywords as keyword_data
from ..datasets import speech_commands
from ..models import Model
from . import common

__all__ = ["keyword_spotter", "resample", "majority_baseline", "train_speech", "train_speech_commands", "RECIPES"]

RATE = keyword_data.SAMPLING_RATE     # 8 kHz, both recipes
FRAME, STEP = 256, 128                # 32 ms frames every 16 ms at 8 kHz


def keyword_spotter(input_shape=(RATE, 1), num_classes=len(keyword_data.CLASSES), filters=(16, 32, 32)):
    """Waveform (samples, 1) -> class probabilities: STFTSpectrogram (log, fixed) -> average pooling over
    frequency -> LayerNormalization over the picture -> [Conv2D 3x3 + ReLU -> MaxPooling2D 2] x 2 ->
    Conv2D 3x3 + ReLU -> GlobalMaxPooling2D -> Dense softmax."""
    inputs = layers.Input(shape=input_shape)
    x = layers.STFTSpectrogram(mode="log", frame_length=FRAME, frame_step=STEP, expand_dims=True, trainable=False,
                               name="spectrogram")(inputs)
    x = layers.AveragePooling2D((1, 2))(x)
    # each clip's picture scaled to zero mean and unit variance: loudness drops out, and unlike batch
    # statistics nothing lags behind at inference
    x = layers.LayerNormalization(axis=[1, 2, 3], center=False, scale=False)(x)
    for i, f in enumerate(filters):
        x = layers.Conv2D(f, 3, padding="same", activation="relu")(x)
        if i < len(filters) - 1:
            x = layers.MaxPooling2D(2)(x)
    x = layers.GlobalMaxPooling2D()(x)
    return Model(inputs, layers.Dense(num_classes, activation="softmax")(x), name="keyword_spotter")


def resample(x, rate_in, rate_out, chunk=1024):
    """Waveforms (N, T) at rate_in -> float32 (N, T * rate_out // rate_in) at rate_out by cutting (or
    zero-padding) the spectrum: an ideal low-pass at the lower Nyquist frequency. Chunks bound the memory."""
    x = np.asarray(x)
    n_out = x.shape[1] * rate_out // rate_in
    out = np.empty((len(x), n_out), np.float32)
    for lo in range(0, len(x), chunk):   # chunks of clips, each one vectorised FFT
        spec = np.fft.rfft(x[lo:lo + chunk].astype(np.float64), axis=1)
        out[lo:lo + chunk] = np.fft.irfft(spec[:, :n_out // 2 + 1], n=n_out, axis=1) * (n_out / x.shape[1])
    return out


def majority_baseline(y_train, y_test):
    """Test accuracy of always answering the most frequent training class."""
    return float(np.mean(np.asarray(y_test) == np.bincount(np.asarray(y_train)).argmax()))


def _plot(x, y_true, y_pred, names, path, n=10):
    try:
        from ..plotting import _pyplot, save_figure
        plt = _pyplot()
    except ImportError:
        return False
    spec = layers.STFTSpectrogram(mode="log", frame_length=FRAME, frame_step=STEP)(x[:n, :, None]).numpy()
    rows = 2 if n > 5 else 1
    fig, axes = plt.subplots(rows, (n + rows - 1) // rows, figsize=(2.4 * ((n + rows - 1) // rows), 2.6 * rows),
                             squeeze=False)
    for ax, s, t, p in zip(axes.ravel(), spec, y_true[:n], y_pred[:n]):
        ax.imshow(s.T, origin="lower", aspect="auto", cmap="magma", extent=(0, x.shape[1] / RATE, 0, RATE / 2000))
        ok = t == p
        ax.set_title(f"{names[p]}" + ("" if ok else f" (is {names[t]})"), color="black" if ok else "red",
                     fontsize=9)
        ax.set_xlabel("s", fontsize=7)
        ax.set_ylabel("kHz", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    fig.suptitle("test clips: log spectrograms titled with the predicted word (red: wrong, with the true word)")
    fig.tight_layout()
    save_figure(fig, path, dpi=72, close=True)
    return True


def _train(r, data, names, epochs, batch_size, out, seed, verbose, plot, detail):
    (x, y), (xt, yt) = data
    epochs, batch_size = epochs or r.epochs, batch_size or r.batch_size
    out = out or os.path.join("runs", r.name)
    backend.set_random_seed(seed)
    model = keyword_spotter((x.shape[1], 1), len(names))
    r.compile(model)
    baseline = majority_baseline(y, yt)
    common.say(verbose, f"Training '{r.name}' ({r.description}): {len(x)} training and {len(xt)} test clips "
                         f"of {len(names)} words, {epochs} epochs, batch size {batch_size}, seed {seed}.")
    start = time.perf_counter()
    history = model.fit(x[..., None], y, batch_size=batch_size, epochs=epochs, verbose=common.fit_verbose(verbose),
                        validation_data=(xt[..., None], yt)).history
    seconds = time.perf_counter() - start
    pred = np.argmax(model.predict(xt[..., None], batch_size=256, verbose=0), axis=-1)
    accuracy = float(np.mean(pred == yt))
    per_class = {names[c]: float(np.mean(pred[yt == c] == c)) for c in range(len(names)) if np.any(yt == c)}
    run = {"model": r.name, "dataset": r.dataset, "epochs": epochs, "batch_size": batch_size, "seed": seed,
           "test_accuracy": accuracy, "majority_baseline": baseline, "test_accuracy_per_word": per_class,
           "words": list(names), "train_seconds": round(seconds, 2), "params": int(model.count_params()), **detail}
    common.say(verbose, f"Test accuracy {accuracy:.1%} against the majority baseline {baseline:.1%} "
                         f"({len(xt)} test clips); {seconds:.1f} s of training.")
    worst = [kv for kv in sorted(per_class.items(), key=lambda kv: kv[1])[:3] if kv[1] < 1.0]
    if worst:
        common.say(verbose, "Hardest words: " + ", ".join(f"{k} {v:.0%}" for k, v in worst))
    common.save_run(out, {"model.lamina": model}, history, run, verbose, plot)
    path = os.path.join(out, "keywords.png")
    if plot and _plot(xt, yt, pred, names, path):
        common.say(verbose, f"Saved {path}")
    return run


def train_speech(epochs=None, batch_size=None, out=None, seed=0, verbose=2, num_train=2000, num_test=500, plot=True):
    """Train the keyword spotter on the synthetic keywords and report test accuracy against the majority
    baseline."""
    r = RECIPES["speech"]
    data = keyword_data.load_data(num_train, num_test, seed=seed)
    return _train(r, data, keyword_data.CLASSES, epochs, batch_size, out, seed, verbose, plot,
                  {"num_train": num_train, "num_test": num_test, "sampling_rate": RATE})


def train_speech_commands(epochs=None, batch_size=None, out=None, seed=0, verbose=2, max_per_word=None, plot=True,
                          archive=None):
    """Train the keyword spotter on Speech Commands v0.02's ten command words (the archive's own train/test
    split), resampled to 8 kHz. archive: a path to speech_commands_v0.02.tar.gz (SHA-256 checked) or to its
    extracted folder; default: download it into the cache."""
    r = RECIPES["speech-commands"]
    if archive is None:
        (x, y), (xt, yt) = speech_commands.load_data(max_per_word=max_per_word)
    elif os.path.isdir(archive):
        (x, y), (xt, yt) = speech_commands.load_folder(archive, max_per_word=max_per_word)
    else:
        (x, y), (xt, yt) = speech_commands.load_archive(archive, max_per_word=max_per_word)
    scale = 1.0 / 32768.0
    data = ((resample(x, speech_commands.SAMPLING_RATE, RATE) * scale, y),
            (resample(xt, speech_commands.SAMPLING_RATE, RATE) * scale, yt))
    del x, xt
    return _train(r, data, speech_commands.WORDS, epochs, batch_size, out, seed, verbose, plot,
                  {"num_train": len(y), "num_test": len(yt), "sampling_rate": RATE})


RECIPES = {r.name: r for r in [
    common.LoopRecipe("speech", keyword_spotter, "keywords", 10, 32, 2e-3,
                       "keyword spotting: STFTSpectrogram + small CNN on synthetic spoken-like words (keywords PNG)",
                       train_speech),
    common.LoopRecipe("speech-commands", keyword_spotter, "speech_commands", 15, 64, 2e-3,
                       "the same keyword spotter on Google Speech Commands' ten words (downloads 2.4 GB)",
                       train_speech_commands),
]}

common.OTHER_DATASETS.setdefault("keywords", "10 classes of synthetic one-second spoken-like words at 8 kHz: "
                                              "vowels, glides, a fricative, whistles, beeps (seeded)")
common.OTHER_DATASETS.setdefault("speech_commands", "Google Speech Commands v0.02: 1-second 16 kHz WAV clips "
                                                     "of 35 words (download, 2.4 GB, SHA-256 checked)")
common.RECIPES.update({k: v for k, v in RECIPES.items() if k not in common.RECIPES})


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(common.recipe_main("python -m lamina.zoo.speech", "Keyword-spotting recipes.", RECIPES))
