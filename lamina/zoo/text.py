"""Sequence recipes: a sentiment classifier, a character-level language model, and a long-memory task.

Each one is registered in the model catalog (``lamina.zoo.catalog``), so ``lamina train --model NAME``
trains it, with the data set loaders below:

- ``sentiment``: Embedding(mask_zero=True) + Bidirectional(LSTM) on the bundled movie-review snippets
  (real sentences with human sentiment labels; ``lamina.datasets.text.load_movie_snippets``), words mapped
  to ids by a TextVectorization adapted on the training sentences.
- ``charlm``: a GRU that reads 40 characters of CPython's pydoc help text and predicts the next one; its
  validation loss (nats per character) is compared with the unigram baseline by ``charlm_baselines``, and
  ``generate`` writes new text with temperature sampling.
- ``longmemory``, ``longmemory-gru``, ``longmemory-dense``: the label is the token seen 40 steps before the
  question mark; LSTM and GRU learn it, an order-free Dense baseline cannot (see ``longmemory_data``).

``python -m lamina.zoo.text generate runs/charlm/model.lamina`` prints samples from a trained charlm.
"""
import numpy as np

from .. import layers, optimizers
from ..datasets import text as text_data
from ..models import Sequential
from . import common

__all__ = ["sentiment_vectorizer", "sentiment_data", "sentiment_model", "sentiment_text_model", "CHARS",
           "char_vectorizer", "charlm_data", "charlm_model", "charlm_baselines", "generate", "longmemory_data",
           "longmemory_model", "SequenceRecipe", "RECIPES"]

# ------------------------------------------------------------------------------------- sentiment
SENTIMENT_MAX_TOKENS = 8000      # ids 0 (padding) and 1 (unknown word) included
SENTIMENT_LENGTH = 40            # words per snippet after padding/cutting at the end (99% are shorter)


def sentiment_vectorizer(train_texts=None):
    """The TextVectorization of the sentiment recipe, adapted on the training snippets (default: the bundled
    training split)."""
    if train_texts is None:
        (train_texts, _), _ = text_data.load_movie_snippets()
    vectorizer = layers.TextVectorization(max_tokens=SENTIMENT_MAX_TOKENS, output_sequence_length=SENTIMENT_LENGTH,
                                          name="text_vectorization")
    vectorizer.adapt(train_texts)
    return vectorizer


def sentiment_data():
    """((x_train, y_train), (x_test, y_test)) of the bundled snippets as int64 word ids (N, 40), padded with 0."""
    (x_train, y_train), (x_test, y_test) = text_data.load_movie_snippets()
    vectorizer = sentiment_vectorizer(x_train)
    return (vectorizer(x_train).numpy(), y_train), (vectorizer(x_test).numpy(), y_test)


def sentiment_model(input_shape=(SENTIMENT_LENGTH,), num_classes=2):
    """Embedding (padding masked) -> Bidirectional LSTM -> dropout -> softmax over the classes."""
    return Sequential([
        layers.Input(shape=input_shape, dtype="int64"),
        layers.Embedding(SENTIMENT_MAX_TOKENS, 32, mask_zero=True),
        layers.Bidirectional(layers.LSTM(32)),
        layers.Dropout(0.5),
        layers.Dense(num_classes, activation="softmax"),
    ], name="sentiment_bilstm")


def sentiment_text_model(model, vectorizer=None):
    """A model that takes raw strings: the vectorizer (whose vocabulary is saved in the model file) followed
    by the layers of a trained sentiment model."""
    vectorizer = vectorizer if vectorizer is not None else sentiment_vectorizer()
    return Sequential([vectorizer] + [layer for layer in model.layers], name="sentiment_text")


# ------------------------------------------------------------------------------------------ charlm
# A fixed character set, so the ids do not depend on the Python version whose help text is the corpus:
# newline and the 95 printable ASCII characters; anything else (a few accented letters) becomes '[UNK]'.
CHARS = "\n" + "".join(chr(c) for c in range(32, 127))
CHARLM_WINDOW = 40


def char_vectorizer():
    """Characters -> ids over CHARS (id 0 padding, 1 unknown, then CHARS in order); no standardisation."""
    return layers.TextVectorization(standardize=None, split="character", vocabulary=list(CHARS),
                                    name="char_vectorization")


def _corpus_ids():
    text = text_data.load_pydoc_topics()
    return char_vectorizer()(text).numpy(), text


def charlm_data(window=CHARLM_WINDOW, step=5, validation_fraction=0.1):
    """Next-character examples from the pydoc help text: x (N, window) ids, y (N,) the id that follows.

    The first 90% of the text gives the training windows, the last 10% (never seen in training) the
    validation windows; one window starts every ``step`` characters.
    """
    ids, _ = _corpus_ids()
    cut = int(len(ids) * (1.0 - validation_fraction))

    def windows(part, stride):
        views = np.lib.stride_tricks.sliding_window_view(part, window + 1)[::stride]
        return np.ascontiguousarray(views[:, :window]), views[:, window].copy()
    return windows(ids[:cut], step), windows(ids[cut:], step)


def charlm_model(input_shape=(CHARLM_WINDOW,), num_classes=len(CHARS) + 2):
    """Embedding -> GRU(128) -> softmax over the characters (the last step's state predicts the next one)."""
    num_classes = max(int(num_classes), len(CHARS) + 2)
    return Sequential([
        layers.Input(shape=input_shape, dtype="int64"),
        layers.Embedding(len(CHARS) + 2, 32),
        layers.GRU(128),
        layers.Dense(num_classes, activation="softmax"),
    ], name="charlm_gru")


def charlm_baselines():
    """Cross-entropy (nats per character) on the validation characters of the two trivial models:
    'uniform' (every character equally likely) and 'unigram' (training-set character frequencies, add-one
    smoothed). A language model must do well below the unigram baseline."""
    (_, y_train), (_, y_val) = charlm_data()
    n = len(CHARS) + 2
    counts = np.bincount(y_train, minlength=n).astype(np.float64) + 1.0
    p = counts / counts.sum()
    return {"uniform": float(np.log(n - 1)), "unigram": float(-np.log(p[y_val]).mean())}


def generate(model, seed_text, length=300, temperature=0.5, rng=None, window=None):
    """Continue seed_text by sampling one character at a time from the model's softmax.

    temperature rescales the log-probabilities before sampling (p ** (1 / T), renormalised): low values pick
    the likeliest characters (safe, repetitive), 1.0 samples the model's own distribution, higher ones are
    wilder. A list of temperatures gives one continuation each, computed together as one batch.
    Returns the continuation (without the seed), or a list of them.
    """
    temperatures = [temperature] if np.isscalar(temperature) else list(temperature)
    if any(t <= 0 for t in temperatures):
        raise ValueError(f"generate: temperatures must be positive. Received {temperatures}")
    window = window or model.input_shape[1] or CHARLM_WINDOW
    rng = rng if rng is not None else np.random.default_rng(0)
    seed_ids = char_vectorizer()(seed_text).numpy()
    ids = np.tile(seed_ids, (len(temperatures), 1))
    inv_t = 1.0 / np.asarray(temperatures, np.float64)[:, None]
    for _ in range(length):
        context = ids[:, -window:]
        if context.shape[1] < window:   # a short seed: pad on the left with spaces
            context = np.concatenate([np.full((len(ids), window - context.shape[1]), CHARS.index(" ") + 2),
                                      context], axis=1)
        probs = np.asarray(model.predict_on_batch(context), np.float64)
        logits = np.log(np.maximum(probs, 1e-12)) * inv_t
        logits[:, :2] = -np.inf         # never emit padding or '[UNK]'
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        # one categorical draw per row: the first index whose cumulative probability passes a uniform draw
        nxt = (p.cumsum(axis=1) < rng.random((len(p), 1))).sum(axis=1)
        ids = np.concatenate([ids, np.minimum(nxt, p.shape[1] - 1)[:, None]], axis=1)
    texts = ["".join(CHARS[i - 2] for i in row[len(seed_ids):]) for row in ids]
    return texts[0] if np.isscalar(temperature) else texts


# -------------------------------------------------------------------------------------- longmemory
LONGMEMORY_SYMBOLS, LONGMEMORY_LAG = 8, 40


def longmemory_data(n_train=8000, n_test=1000, symbols=LONGMEMORY_SYMBOLS, lag=LONGMEMORY_LAG, seed=0):
    """The long-memory task: which symbol came 40 steps before the question mark?

    Each sequence holds ``lag`` symbols (ids 1..symbols), every symbol exactly lag / symbols times in a random
    order, then the question mark (id symbols + 1). The label is the first symbol (0-based class), seen
    ``lag`` steps before the question. Because every sequence holds the same multiset of symbols, anything
    that ignores order (a bag of tokens, an average of embeddings) gets exactly chance, 1 / symbols; a model
    that reads one step at a time must carry the first symbol across 40 updates of its state.
    Returns ((x_train, y_train), (x_test, y_test)), x int64 (N, lag + 1), y int64 (N,).
    """
    if lag % symbols:
        raise ValueError(f"longmemory_data: lag ({lag}) must be a multiple of symbols ({symbols}) so that every "
                         "sequence holds each symbol equally often.")
    rng = np.random.default_rng(seed)

    def make(n):
        base = np.repeat(np.arange(1, symbols + 1, dtype=np.int64), lag // symbols)
        x = rng.permuted(np.tile(base, (n, 1)), axis=1)
        question = np.full((n, 1), symbols + 1, np.int64)
        return np.concatenate([x, question], axis=1), x[:, 0] - 1
    return make(n_train), make(n_test)


def longmemory_model(input_shape=(LONGMEMORY_LAG + 1,), num_classes=LONGMEMORY_SYMBOLS, kind="lstm", units=32):
    """Embedding -> LSTM/GRU(units) -> softmax; kind='dense': Embedding -> GlobalAveragePooling1D ->
    Dense(64, relu) -> softmax, the order-free baseline."""
    vocab = LONGMEMORY_SYMBOLS + 2
    body = {"lstm": [layers.LSTM(units)], "gru": [layers.GRU(units)],
            "dense": [layers.GlobalAveragePooling1D(), layers.Dense(64, activation="relu")]}
    if kind not in body:
        raise ValueError(f"longmemory_model: kind must be one of {', '.join(body)}. Received: kind={kind!r}")
    return Sequential([layers.Input(shape=input_shape, dtype="int64"), layers.Embedding(vocab, 8)] + body[kind]
                      + [layers.Dense(num_classes, activation="softmax")], name=f"longmemory_{kind}")


def _longmemory_builder(kind):
    def build(input_shape=(LONGMEMORY_LAG + 1,), num_classes=LONGMEMORY_SYMBOLS):
        return longmemory_model(input_shape, num_classes, kind=kind)
    build.__name__ = f"longmemory_{kind}"
    build.__doc__ = longmemory_model.__doc__
    return build


# ---------------------------------------------------------------------------------- the catalog
class SequenceRecipe(common.Recipe):
    """A catalog recipe whose optimizer clips each gradient's norm (recurrent nets can have rare huge ones)."""

    def compile(self, model):
        model.compile(optimizer=optimizers.Adam(learning_rate=self.learning_rate, clipnorm=1.0),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model


# data set name -> (loader, scale, add a channel axis, description), in the catalog's format; the ids
# pass through its float32 conversion exactly (all are below 2 ** 24) and Embedding casts them back.
DATASETS = {
    "movie_snippets": (sentiment_data, 1.0, False,
                       "10,070 movie-review sentences with human sentiment labels, bundled (offline)"),
    "pydoc_chars": (charlm_data, 1.0, False, "next character of CPython's pydoc help text (offline)"),
    "longmemory": (longmemory_data, 1.0, False, "synthetic: the symbol seen 40 steps earlier (seeded)"),
}

RECIPES = {r.name: r for r in [
    SequenceRecipe("sentiment", sentiment_model, "movie_snippets", 2, 32, 2e-3,
                   "Embedding + bidirectional LSTM sentiment classifier on real movie-review sentences (~80%)"),
    SequenceRecipe("charlm", charlm_model, "pydoc_chars", 3, 128, 3e-3,
                   "character-level GRU language model on CPython's help text (sample with generate())"),
    # learning rate 3e-3: 26 of 26 seeds of the LSTM (12 of 12 of the GRU) reach >= 97% in 3-6 epochs; at
    # 1e-2, 5 of 24 LSTM seeds were still on a plateau (42-87%) after 12 epochs
    SequenceRecipe("longmemory", _longmemory_builder("lstm"), "longmemory", 10, 32, 3e-3,
                   "LSTM recalls the symbol seen 40 steps earlier (~100%; chance 12.5%)"),
    SequenceRecipe("longmemory-gru", _longmemory_builder("gru"), "longmemory", 10, 32, 3e-3,
                   "GRU on the same long-memory task (~100%)"),
    SequenceRecipe("longmemory-dense", _longmemory_builder("dense"), "longmemory", 10, 32, 1e-2,
                   "order-free Dense baseline on the long-memory task (stays at chance, 12.5%)"),
]}

common.DATASETS.update({k: v for k, v in DATASETS.items() if k not in common.DATASETS})
common.RECIPES.update({k: v for k, v in RECIPES.items() if k not in common.RECIPES})


# ------------------------------------------------------------------------------------ command line
def main(argv=None):
    """``python -m lamina.zoo.text generate MODEL [--seed-text TEXT] [--length N] [--temperature T ...]``.
    Training goes through the ``lamina`` command (``lamina train charlm``), where these recipes are listed."""
    import argparse
    import sys
    argv = list(sys.argv[1:] if argv is None else argv)
    from ..models import load_model
    parser = argparse.ArgumentParser(prog="python -m lamina.zoo.text",
                                     description="Sample text from a trained charlm model file.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("generate", help="continue a seed text with temperature sampling")
    p.add_argument("model_file")
    p.add_argument("--seed-text", default="The value of ")
    p.add_argument("--length", type=int, default=300)
    p.add_argument("--temperature", type=float, nargs="+", default=[0.2, 0.5, 1.0])
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    model = load_model(args.model_file, compile=False)
    samples = generate(model, args.seed_text, args.length, args.temperature, rng=np.random.default_rng(args.seed))
    for t, s in zip(args.temperature, samples):
        print(f"--- temperature {t}\n{args.seed_text}{s}\n")
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
