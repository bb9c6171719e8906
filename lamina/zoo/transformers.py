"""Transformer applications: a sequence classifier, a date translator and a character language model.

Each is a recipe for ``lamina train NAME`` (``RECIPES``) and also a set of plain functions you can call:

- ``transformer-classifier``: which month a human-written date names ("03/04/98" is March, "03.04.98"
  is April). Token + position embedding, a TransformerEncoder, masked average pooling, a softmax. The
  recipe also trains a bag-of-embeddings baseline, which cannot see character order and stays far lower.
- ``translate-dates``: an encoder-decoder Transformer (TransformerEncoder + TransformerDecoder with
  cross-attention) trained with teacher forcing to rewrite dates in 19 human formats as ISO 8601;
  ``greedy_decode`` and ``beam_search_decode`` (beam width k, length-normalised scores) generate.
- ``char-transformer``: a decoder-only (GPT-style, causal) character model of the English help text in
  CPython's ``pydoc_data.topics``; ``sample_text`` draws text with a temperature and top-k.

Decoding functions take any model called as ``model([source_ids, target_ids])`` (or ``model(ids)`` for the
character model) that returns logits (B, T, V); they run it on whole padded sequences, relying on the
decoder's causal mask: the logits at position t never depend on the (padding) tokens after t.
"""
import os
import time

import numpy as np

from .. import backend, layers, losses, optimizers
from ..models import Model
from ..tensor import no_grad
from . import common

__all__ = ["CharVocabulary", "TaskRecipe", "RECIPES", "PAD", "START", "END",
           "date_month_classifier", "bag_of_embeddings_classifier", "date_translator", "char_transformer",
           "greedy_decode", "beam_search_decode", "translate", "translation_attention", "sample_text",
           "load_month_data", "load_translation_data", "load_char_data", "unigram_cross_entropy",
           "train_transformer_classifier", "train_translate_dates", "train_char_transformer"]

PAD, START, END = 0, 1, 2            # reserved ids of every vocabulary here (PAD is masked by mask_zero)


# ----------------------------------------------------------------------------------------- text <-> ids
class CharVocabulary:
    """Characters <-> integer ids: id 0 is padding, 1 start, 2 end, then one id per known character.

    Args: chars (the characters to know, in any order; duplicates ignored), unknown (a character that
    replaces characters outside the vocabulary when encoding; None raises a ValueError for them).
    """

    def __init__(self, chars, unknown=None):
        self.chars = sorted(set(chars) | ({unknown} if unknown else set()))
        self.index = {c: i + 3 for i, c in enumerate(self.chars)}
        self.unknown = unknown
        self._table = np.array(["", "", ""] + self.chars, dtype=object)

    def __len__(self):
        return len(self.chars) + 3

    def encode(self, texts, length, start=False, end=False):
        """Strings -> (N, length) int64 ids, right-padded with PAD; start/end add the START/END ids.
        Raises ValueError for a string that does not fit in length."""
        out = np.zeros((len(texts), length), dtype=np.int64)
        for i, text in enumerate(texts):   # string handling: one Python pass per string, no array math
            ids = [self._id(c) for c in text]
            ids = ([START] if start else []) + ids + ([END] if end else [])
            if len(ids) > length:
                raise ValueError(f"CharVocabulary.encode: {text!r} needs {len(ids)} positions, more than "
                                 f"length={length}")
            out[i, :len(ids)] = ids
        return out

    def _id(self, c):
        if c in self.index:
            return self.index[c]
        if self.unknown is None:
            raise ValueError(f"CharVocabulary: character {c!r} is not in the vocabulary "
                             f"({''.join(self.chars)!r})")
        return self.index[self.unknown]

    def decode(self, ids):
        """(N, T) ids -> N strings; stops at the first END, skips PAD and START."""
        ids = np.asarray(ids)
        if ids.ndim == 1:
            ids = ids[None]
        stop = np.where((ids == END).any(axis=1), (ids == END).argmax(axis=1), ids.shape[1])
        keep = np.arange(ids.shape[1])[None, :] < stop[:, None]
        chars = self._table[np.where(keep, ids, PAD)]
        return ["".join(row) for row in chars]


def _logits(model, inputs):
    with no_grad():
        out = model(inputs, training=False)
    return np.asarray(out.numpy(), dtype=np.float64)


def _log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


# ------------------------------------------------------------------------------------------ decoding
def greedy_decode(model, source_ids, max_length, start_id=START, end_id=END, batch_size=512):
    """Generate target ids one position at a time, always taking the most likely next token.

    Args:
        model: called as ``model([source_ids, target_ids])`` -> logits (B, T, V), with a causal decoder.
        source_ids: (N, S) int array.
        max_length: tokens to generate at most; the model's target input length must be >= max_length.
    Returns (N, max_length) int64: generated ids (END included where produced, PAD after it).
    """
    source_ids = np.asarray(source_ids)
    length = _target_length(model, max_length)
    outs = []
    for lo in range(0, len(source_ids), batch_size):
        src = source_ids[lo:lo + batch_size]
        tgt = np.zeros((len(src), length), dtype=np.int64)
        tgt[:, 0] = start_id
        gen = np.zeros((len(src), max_length), dtype=np.int64)
        done = np.zeros(len(src), dtype=bool)
        for t in range(max_length):
            nxt = np.where(done, PAD, _logits(model, [src, tgt])[:, t].argmax(axis=-1))
            gen[:, t] = nxt
            if t + 1 < length:
                tgt[:, t + 1] = nxt
            done |= nxt == end_id
            if done.all():
                break
        outs.append(gen)
    return np.concatenate(outs, axis=0)


def _target_length(model, max_length):
    """The fixed length of a model's target input (its second input), else max_length. Generating
    max_length tokens reads the logits at positions 0..max_length - 1, so it must be >= max_length."""
    shapes = getattr(model, "input_shape", None)
    if isinstance(shapes, (list, tuple)) and len(shapes) == 2 and isinstance(shapes[1], tuple):
        length = shapes[1][1]
        if length is not None:
            if length < max_length:
                raise ValueError(f"decode: max_length={max_length} is longer than the model's target input "
                                 f"length {length}")
            return length
    return max_length


def beam_search_decode(model, source_ids, max_length, beam_width=4, length_penalty=1.0, start_id=START,
                       end_id=END, batch_size=128):
    """Beam search: keep the beam_width best partial outputs at each step, ranked by length-normalised score.

    The score of a hypothesis y_1..y_n is sum_i log p(y_i | y_<i, x) / n ** length_penalty (length_penalty=1:
    the mean log-probability per token, so long outputs are not punished for having more terms; 0: the
    raw sum). A hypothesis that produced END keeps its score and extends only with PAD at no cost. All
    beams of all samples are decoded together as one batch of N * beam_width sequences.

    Args:
        model: called as ``model([source_ids, target_ids])`` -> logits (B, T, V), with a causal decoder.
        source_ids: (N, S) int array. max_length: tokens to generate at most.
        beam_width: k >= 1 (k=1 is greedy decoding). length_penalty: the exponent alpha above.
    Returns (ids, scores): ids (N, max_length) int64 of the best hypothesis, scores (N,) its normalised score.
    """
    if isinstance(beam_width, bool) or not isinstance(beam_width, (int, np.integer)) or beam_width < 1:
        raise ValueError(f"beam_search_decode: beam_width must be an int >= 1. Received: beam_width={beam_width!r}")
    source_ids = np.asarray(source_ids)
    k = int(beam_width)
    all_ids, all_scores = [], []
    for lo in range(0, len(source_ids), batch_size):
        src = source_ids[lo:lo + batch_size]
        n = len(src)
        src_k = np.repeat(src, k, axis=0)                                # (n k, S): beams of a sample together
        length = _target_length(model, max_length)
        tokens = np.zeros((n, k, max(length, max_length + 1)), dtype=np.int64)
        tokens[:, :, 0] = start_id
        score = np.full((n, k), -np.inf)
        score[:, 0] = 0.0                  # all beams start equal: keep one, or the first step fills k copies
        done = np.zeros((n, k), dtype=bool)
        lengths = np.zeros((n, k))
        for t in range(max_length):
            logp = _log_softmax(_logits(model, [src_k, tokens[:, :, :length].reshape(n * k, length)])[:, t])
            vocab = logp.shape[-1]
            logp = logp.reshape(n, k, vocab)
            # finished beams: only PAD may follow, at no cost
            logp = np.where(done[:, :, None], np.where(np.arange(vocab) == PAD, 0.0, -np.inf), logp)
            total = score[:, :, None] + logp                             # (n, k, V) raw sums
            new_len = np.where(done, lengths, t + 1)[:, :, None]
            norm = total / np.power(new_len, length_penalty)
            flat = norm.reshape(n, k * vocab)
            best = np.argsort(-flat, axis=1, kind="stable")[:, :k]      # top k of k*V candidates per sample
            beam, tok = best // vocab, best % vocab
            rows = np.arange(n)[:, None]
            tokens = tokens[rows, beam]
            tokens[:, :, t + 1] = tok
            score = total.reshape(n, k * vocab)[rows, best]
            lengths = new_len[:, :, 0][rows, beam]
            done = done[rows, beam] | (tok == end_id)
            if done.all():
                break
        final = score / np.power(np.maximum(lengths, 1), length_penalty)
        top = final.argmax(axis=1)
        all_ids.append(tokens[np.arange(n), top, 1:max_length + 1])
        all_scores.append(final[np.arange(n), top])
    return np.concatenate(all_ids, axis=0), np.concatenate(all_scores, axis=0)


# ------------------------------------------------------------------------------------------ the models
def date_month_classifier(vocabulary_size, sequence_length=32, embed_dim=32, num_heads=2, intermediate_dim=64,
                          num_classes=12, num_layers=1):
    """Transformer classifier: TokenAndPositionEmbedding (mask_zero) -> pre-norm TransformerEncoder x num_layers ->
    GlobalAveragePooling1D over the non-padding positions -> Dense softmax. Input (B, sequence_length) ids."""
    inp = layers.Input(shape=(sequence_length,), dtype="int32", name="tokens")
    x = layers.TokenAndPositionEmbedding(vocabulary_size, sequence_length, embed_dim, mask_zero=True,
                                         name="embedding")(inp)
    for i in range(num_layers):
        x = layers.TransformerEncoder(intermediate_dim, num_heads, normalize_first=True, name=f"encoder_{i}")(x)
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    out = layers.Dense(num_classes, activation="softmax", name="classes")(x)
    return Model(inp, out, name="transformer_classifier")


def bag_of_embeddings_classifier(vocabulary_size, sequence_length=32, embed_dim=32, num_classes=12):
    """The order-blind baseline: Embedding (mask_zero) -> GlobalAveragePooling1D -> Dense softmax."""
    inp = layers.Input(shape=(sequence_length,), dtype="int32", name="tokens")
    x = layers.Embedding(vocabulary_size, embed_dim, mask_zero=True, name="embedding")(inp)
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    out = layers.Dense(num_classes, activation="softmax", name="classes")(x)
    return Model(inp, out, name="bag_of_embeddings")


def date_translator(source_vocabulary_size, target_vocabulary_size, source_length=32, target_length=11,
                    embed_dim=64, num_heads=4, intermediate_dim=128, num_layers=1, dropout=0.0):
    """Encoder-decoder Transformer: inputs [source ids (B, S), target ids shifted right (B, T)] -> logits (B, T, V).

    Source: TokenAndPositionEmbedding (mask_zero, so padding is never attended) -> TransformerEncoder x
    num_layers. Target: TokenAndPositionEmbedding -> TransformerDecoder x num_layers (causal
    self-attention, cross-attention to the encoder output) -> Dense logits.
    """
    src = layers.Input(shape=(source_length,), dtype="int32", name="source")
    tgt = layers.Input(shape=(target_length,), dtype="int32", name="target")
    x = layers.TokenAndPositionEmbedding(source_vocabulary_size, source_length, embed_dim, mask_zero=True,
                                         name="source_embedding")(src)
    for i in range(num_layers):
        x = layers.TransformerEncoder(intermediate_dim, num_heads, dropout=dropout, name=f"encoder_{i}")(x)
    y = layers.TokenAndPositionEmbedding(target_vocabulary_size, target_length, embed_dim, mask_zero=True,
                                         name="target_embedding")(tgt)
    for i in range(num_layers):
        y = layers.TransformerDecoder(intermediate_dim, num_heads, dropout=dropout, name=f"decoder_{i}")(y, x)
    out = layers.Dense(target_vocabulary_size, name="logits")(y)
    return Model([src, tgt], out, name="date_translator")


def char_transformer(vocabulary_size, sequence_length=128, embed_dim=128, num_heads=4, intermediate_dim=256,
                     num_layers=2, dropout=0.0):
    """Decoder-only character model: ids (B, T) -> next-character logits (B, T, V). Token + position
    embedding, num_layers pre-norm TransformerDecoder blocks without cross-attention (causal self-attention),
    a final LayerNormalization and a Dense projection to the vocabulary."""
    inp = layers.Input(shape=(sequence_length,), dtype="int32", name="tokens")
    x = layers.TokenAndPositionEmbedding(vocabulary_size, sequence_length, embed_dim, name="embedding")(inp)
    for i in range(num_layers):
        x = layers.TransformerDecoder(intermediate_dim, num_heads, dropout=dropout, normalize_first=True,
                                      name=f"decoder_{i}")(x)
    x = layers.LayerNormalization(name="final_norm")(x)
    out = layers.Dense(vocabulary_size, name="logits")(x)
    return Model(inp, out, name="char_transformer")


# --------------------------------------------------------------------------------------------- data
DATE_LENGTH = 32                      # longest human date is 29 characters ("Wednesday, September 30, 2049")
ISO_LENGTH = 11                       # START + 10 characters (decoder input) / 10 characters + END (target)


def _date_vocabularies():
    """Every character the date formats can write (in any case) -> source ids; digits and '-' -> target ids."""
    import string
    return CharVocabulary(string.ascii_letters + string.digits + " ,./-'"), CharVocabulary("0123456789-")


def load_month_data(num_train=20000, num_test=2000, seed=0):
    """((x_train, y_train), (x_test, y_test), vocabulary): human dates as (N, 32) ids, months 0..11."""
    from ..datasets import dates
    source, _ = _date_vocabularies()
    (xs, ys), (xt, yt) = dates.load_data(num_train, num_test, seed=seed)
    month = lambda iso: np.array([int(s[5:7]) - 1 for s in iso], dtype=np.int64)   # noqa: E731
    return ((source.encode(xs, DATE_LENGTH), month(ys)), (source.encode(xt, DATE_LENGTH), month(yt)), source)


def load_translation_data(num_train=20000, num_test=1000, seed=0):
    """Dates for the translator, as ids: a dict with source (N, 32), target_in ([START] + ISO, (N, 11)),
    target_out (ISO + [END], (N, 11)) for 'train' and 'test', the raw strings, and both vocabularies."""
    from ..datasets import dates
    source, target = _date_vocabularies()
    (xs, ys), (xt, yt) = dates.load_data(num_train, num_test, seed=seed)
    data = {"source_vocabulary": source, "target_vocabulary": target}
    for split, x, y in (("train", xs, ys), ("test", xt, yt)):
        data[split] = {"text": x, "iso": y, "source": source.encode(x, DATE_LENGTH),
                       "target_in": target.encode(y, ISO_LENGTH, start=True),
                       "target_out": target.encode(y, ISO_LENGTH, end=True)}
    return data


def load_char_data(sequence_length=128, validation_split=0.1, text=None):
    """The pydoc help text cut into (N, sequence_length + 1) id windows (stride sequence_length // 2) for
    training and (M, sequence_length + 1) non-overlapping windows from the last validation_split of the text.
    Returns (train_windows, validation_windows, vocabulary, validation_text)."""
    if text is None:
        from ..datasets.text import load_pydoc_topics
        text = load_pydoc_topics()
    vocab = CharVocabulary(text)
    cut = int(len(text) * (1.0 - validation_split))
    ids = vocab.encode([text], len(text))[0]

    def windows(a, stride):
        starts = np.arange(0, len(a) - sequence_length - 1, stride)
        return a[starts[:, None] + np.arange(sequence_length + 1)[None, :]]
    return (windows(ids[:cut], max(1, sequence_length // 2)), windows(ids[cut:], sequence_length), vocab,
            text[cut:])


def unigram_cross_entropy(train_ids, test_ids, vocabulary_size):
    """Cross-entropy (nats per character) of test ids under the training set's character frequencies
    (add-one smoothed): what a model that ignores context achieves."""
    counts = np.bincount(np.asarray(train_ids).ravel(), minlength=vocabulary_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[np.asarray(test_ids).ravel()].mean())


# ------------------------------------------------------------------------------------------ using them
def translate(model, texts, beam_width=1, length_penalty=1.0):
    """Human-written dates -> ISO strings with a trained date_translator (greedy when beam_width=1)."""
    source, target = _date_vocabularies()
    ids = source.encode(texts, DATE_LENGTH)
    if beam_width == 1:
        out = greedy_decode(model, ids, ISO_LENGTH)
    else:
        out, _ = beam_search_decode(model, ids, ISO_LENGTH, beam_width=beam_width, length_penalty=length_penalty)
    return target.decode(out)


def translation_attention(model, text, layer=-1):
    """Cross-attention weights of a date_translator for one input: (output characters, input characters,
    weights (heads, len(output) + 1, len(text))) - rows are the decoder steps that wrote each output
    character and then END."""
    source, target = _date_vocabularies()
    out = translate(model, [text])[0]
    src = source.encode([text], DATE_LENGTH)
    # the decoder reads START + the output so far; an output that filled every step (no END: an undertrained
    # model) has no row for END
    tgt = target.encode([out[:ISO_LENGTH - 1]], ISO_LENGTH, start=True)
    labels = list(out) + (["<end>"] if len(out) < ISO_LENGTH else [])
    decoders = [ly for ly in model.layers if ly.name.startswith("decoder_")]
    encoders = [ly for ly in model.layers if ly.name.startswith("encoder_")]
    with no_grad():
        x = model.get_layer("source_embedding")(src)
        for enc in encoders:
            x = enc(x)
        y = model.get_layer("target_embedding")(tgt)
        for i, dec in enumerate(decoders):
            res = dec(y, x, return_attention_scores=True)
            y = res[0]
            if i == (layer % len(decoders)):
                cross = res[2].numpy()[0]
    return labels, list(text), cross[:, :len(labels), :len(text)]


def sample_text(model, vocabulary, prompt, length=200, temperature=1.0, top_k=None, num_samples=1, seed=0):
    """Continue prompt by sampling a decoder-only character model one character at a time.

    At each step the next-character logits z (at the last prompt position) become
    p = softmax(z / temperature) over the top_k most likely characters only (all when top_k is None).
    Low temperature -> safer, repetitive text; high -> more varied, more mistakes. Context is the last
    sequence_length characters (the model's input length). num_samples continuations are drawn together.
    Returns a list of num_samples strings (prompt not included).
    """
    if temperature <= 0:
        raise ValueError(f"sample_text: temperature must be > 0. Received: temperature={temperature!r}")
    if top_k is not None and (not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"sample_text: top_k must be None or an int >= 1. Received: top_k={top_k!r}")
    rng = np.random.default_rng(seed)
    return _sample_rows(model, vocabulary, prompt, length, [temperature] * num_samples, [top_k] * num_samples,
                        lambda: rng.random((num_samples, 1)))


def _sample_rows(model, vocabulary, prompt, length, temperatures, top_ks, draw):
    """sample_text's loop for rows that each have their own temperature and top_k (one model call a step for
    all of them); ``draw()``: the rows' uniform numbers of a step, (rows, 1)."""
    window = model.input_shape[1]
    rows = len(temperatures)
    temperature = np.array(temperatures, dtype=np.float64)[:, None]
    ids = np.repeat(vocabulary.encode([prompt], len(prompt))[0][None], rows, axis=0)
    out = []
    for _ in range(length):
        ctx = ids[:, -window:]
        n = ctx.shape[1]
        x = np.zeros((rows, window), dtype=np.int64)
        x[:, :n] = ctx                      # causal: the padding after position n - 1 does not change its logits
        z = _logits(model, x)[:, n - 1] / temperature
        z[:, :3] = -np.inf                  # never sample PAD, START or END
        for i, top_k in enumerate(top_ks):
            if top_k is not None and top_k < z.shape[1]:
                kth = np.sort(z[i])[-top_k]
                z[i] = np.where(z[i] < kth, -np.inf, z[i])
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        # one uniform draw per sample through the cumulative distribution: vectorised categorical sampling
        nxt = (p.cumsum(axis=1) < draw()).sum(axis=1)
        nxt = np.minimum(nxt, z.shape[1] - 1)
        ids = np.concatenate([ids, nxt[:, None]], axis=1)
        out.append(nxt)
    return vocabulary.decode(np.stack(out, axis=1))


# --------------------------------------------------------------------------------------------- recipes

def train_transformer_classifier(epochs=None, batch_size=None, out=None, seed=0, verbose=2,
                                 num_train=20000, num_test=2000, baseline=True, plot=True):
    """Train the month classifier (and the bag-of-embeddings baseline); returns the run summary dict."""
    r = RECIPES["transformer-classifier"]
    epochs, batch_size = epochs or r.epochs, batch_size or r.batch_size
    out = out or os.path.join("runs", r.name)
    backend.set_random_seed(seed)
    (x, y), (xt, yt), vocab = load_month_data(num_train, num_test, seed=seed)
    model = r.build(len(vocab))
    model.compile(optimizer=optimizers.Adam(r.learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    common.say(verbose, f"Training '{r.name}' ({r.description}): {len(x)} training and {len(xt)} test dates, "
                  f"{epochs} epochs, batch size {batch_size}, seed {seed}.")
    start = time.perf_counter()
    history = model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=common.fit_verbose(verbose),
                        validation_data=(xt, yt)).history
    seconds = time.perf_counter() - start
    loss, acc = model.evaluate(xt, yt, batch_size=256, verbose=0)
    # dates written with digits only ("03/04/98", "1998-4-3"): the month is known from the order alone
    numeric = np.array([not any(c.isalpha() for c in s) for s in vocab.decode(xt)])
    on_numeric = lambda m: float((m.predict(xt[numeric], verbose=0).argmax(-1) == yt[numeric]).mean())  # noqa: E731
    run = {"model": r.name, "dataset": r.dataset, "epochs": epochs, "batch_size": batch_size, "seed": seed,
           "test_accuracy": float(acc), "test_loss": float(loss), "test_accuracy_numeric_formats": on_numeric(model),
           "numeric_share": float(numeric.mean()), "train_seconds": round(seconds, 2),
           "params": int(sum(int(np.prod(w.shape)) for w in model.weights))}
    common.say(verbose, f"Test accuracy: {acc:.4f} (loss {loss:.4f}; {run['test_accuracy_numeric_formats']:.4f} on "
                  f"all-digit dates) after {seconds:.1f} s of training.")
    if baseline:
        backend.set_random_seed(seed)
        base = bag_of_embeddings_classifier(len(vocab))
        base.compile(optimizer=optimizers.Adam(r.learning_rate), loss="sparse_categorical_crossentropy",
                     metrics=["accuracy"])
        base.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0)
        run["baseline_test_accuracy"] = float(base.evaluate(xt, yt, batch_size=256, verbose=0)[1])
        run["baseline_test_accuracy_numeric_formats"] = on_numeric(base)
        common.say(verbose, f"Bag-of-embeddings baseline (no order): test accuracy {run['baseline_test_accuracy']:.4f} "
                      f"({run['baseline_test_accuracy_numeric_formats']:.4f} on all-digit dates).")
    common.save_run(out, {"model.lamina": model}, history, run, verbose, plot)
    return run


def train_translate_dates(epochs=None, batch_size=None, out=None, seed=0, verbose=2, num_train=20000,
                          num_test=1000, beam_width=4, model_kwargs=None, plot=True, learning_rate=None):
    """Train the date translator; report exact match (greedy and beam search) on held-out dates."""
    r = RECIPES["translate-dates"]
    epochs, batch_size = epochs or r.epochs, batch_size or r.batch_size
    out = out or os.path.join("runs", r.name)
    backend.set_random_seed(seed)
    data = load_translation_data(num_train, num_test, seed=seed)
    sv, tv = data["source_vocabulary"], data["target_vocabulary"]
    model = r.build(len(sv), len(tv), **(model_kwargs or {}))
    model.compile(optimizer=optimizers.Adam(learning_rate or r.learning_rate),
                  loss=losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=PAD),
                  metrics=["accuracy"])
    tr, te = data["train"], data["test"]
    common.say(verbose, f"Training '{r.name}' ({r.description}): {len(tr['source'])} training and {len(te['source'])} "
                  f"held-out dates, {epochs} epochs, batch size {batch_size}, seed {seed}.")
    start = time.perf_counter()
    history = model.fit([tr["source"], tr["target_in"]], tr["target_out"], batch_size=batch_size, epochs=epochs,
                        verbose=common.fit_verbose(verbose),
                        validation_data=([te["source"], te["target_in"]], te["target_out"])).history
    seconds = time.perf_counter() - start
    greedy = tv.decode(greedy_decode(model, te["source"], ISO_LENGTH))
    beam_ids, _ = beam_search_decode(model, te["source"], ISO_LENGTH, beam_width=beam_width)
    beam = tv.decode(beam_ids)
    iso = list(te["iso"])
    exact = lambda pred: float(np.mean([p == t for p, t in zip(pred, iso)]))   # noqa: E731
    chars = float(np.mean([sum(a == b for a, b in zip(p.ljust(10), t)) / 10 for p, t in zip(greedy, iso)]))
    run = {"model": r.name, "dataset": r.dataset, "epochs": epochs, "batch_size": batch_size, "seed": seed,
           "num_train": len(tr["source"]), "num_test": len(iso), "exact_match_greedy": exact(greedy),
           "exact_match_beam": exact(beam), "beam_width": beam_width, "char_accuracy_greedy": chars,
           "train_seconds": round(seconds, 2), "params": int(sum(int(np.prod(w.shape)) for w in model.weights)),
           "samples": [[str(s), g, b] for s, g, b in zip(te["text"][:12], greedy[:12], beam[:12])],
           "errors": [[str(s), t, g] for s, t, g in zip(te["text"], iso, greedy) if g != t][:20]}
    common.say(verbose, f"Held-out exact match: greedy {run['exact_match_greedy']:.4f}, beam search (k={beam_width}) "
                  f"{run['exact_match_beam']:.4f}; character accuracy {chars:.4f}; {seconds:.1f} s of training.")
    for s, g, _ in run["samples"][:6]:
        common.say(verbose, f"  {s!r:>32} -> {g}")
    common.save_run(out, {"model.lamina": model}, history, run, verbose, plot)
    if plot:
        try:
            from ..plotting import plot_attention
            ys, xs, w = translation_attention(model, "Tuesday, March 3, 1998")
            path = plot_attention(w.mean(axis=0), xs, ys, os.path.join(out, "attention.png"),
                                  title="cross-attention (mean over heads)")
            common.say(verbose, f"Saved {path}")
        except ImportError:
            pass
    return run


def train_char_transformer(epochs=None, batch_size=None, out=None, seed=0, verbose=2, sequence_length=128,
                           model_kwargs=None, text=None, max_train_windows=None, plot=True):
    """Train the character model on the pydoc help text; report validation loss vs the unigram baseline."""
    r = RECIPES["char-transformer"]
    epochs, batch_size = epochs or r.epochs, batch_size or r.batch_size
    out = out or os.path.join("runs", r.name)
    backend.set_random_seed(seed)
    train, val, vocab, _ = load_char_data(sequence_length, text=text)
    if max_train_windows is not None:
        train = train[:max_train_windows]
    model = r.build(len(vocab), sequence_length, **(model_kwargs or {}))
    model.compile(optimizer=optimizers.Adam(r.learning_rate),
                  loss=losses.SparseCategoricalCrossentropy(from_logits=True))
    common.say(verbose, f"Training '{r.name}' ({r.description}): {len(train)} training and {len(val)} validation "
                  f"windows of {sequence_length} characters, {epochs} epochs, batch size {batch_size}, seed {seed}.")
    start = time.perf_counter()
    history = model.fit(train[:, :-1], train[:, 1:], batch_size=batch_size, epochs=epochs,
                        verbose=common.fit_verbose(verbose), validation_data=(val[:, :-1], val[:, 1:])).history
    seconds = time.perf_counter() - start
    val_loss = float(model.evaluate(val[:, :-1], val[:, 1:], batch_size=64, verbose=0))
    unigram = unigram_cross_entropy(train[:, 1:], val[:, 1:], len(vocab))
    # three samples, each as sample_text(..., temperature=t, top_k=k, seed=seed) gives it, drawn side by side
    # (one model call a character for the three)
    settings = ((0.5, None), (0.8, 10), (1.0, None))
    rngs = [np.random.default_rng(seed) for _ in settings]
    texts = _sample_rows(model, vocab, "The ", 240, [t for t, _ in settings], [k for _, k in settings],
                         lambda: np.array([[g.random()] for g in rngs]))
    samples = {f"temperature {t}, top_k {k}": text for (t, k), text in zip(settings, texts)}
    run = {"model": r.name, "dataset": r.dataset, "epochs": epochs, "batch_size": batch_size, "seed": seed,
           "sequence_length": sequence_length, "train_windows": len(train), "validation_windows": len(val),
           "validation_loss": val_loss, "validation_bits_per_char": val_loss / np.log(2),
           "unigram_loss": unigram, "unigram_bits_per_char": unigram / np.log(2), "train_seconds": round(seconds, 2),
           "params": int(sum(int(np.prod(w.shape)) for w in model.weights)), "samples": samples}
    common.say(verbose, f"Validation loss {val_loss:.3f} nats/char ({val_loss / np.log(2):.2f} bits) vs the unigram "
                  f"baseline {unigram:.3f} ({unigram / np.log(2):.2f} bits); {seconds:.1f} s of training.")
    for name, s in samples.items():
        common.say(verbose, f"--- {name}:\nThe {s}")
    common.save_run(out, {"model.lamina": model}, history, run, verbose, plot)
    return run


TaskRecipe = common.LoopRecipe   # (kept under its old name)


def _month_dataset():
    (x, y), (xt, yt), _ = load_month_data()
    return (x, y), (xt, yt)


RECIPES = {r.name: r for r in [
    TaskRecipe("transformer-classifier", date_month_classifier, "dates_month", 6, 64, 2e-3,
               "Transformer: the month of a date in 19 formats (~100%; order-blind baseline ~75%)",
               train_transformer_classifier),
    TaskRecipe("translate-dates", date_translator, "dates", 10, 64, 1e-3,
               "encoder-decoder Transformer: human dates -> ISO 8601 (99.6% exact match), greedy + beam search",
               train_translate_dates),
    TaskRecipe("char-transformer", char_transformer, "pydoc_topics", 5, 32, 2e-3,
               "decoder-only character Transformer on CPython's pydoc help text, with sampling",
               train_char_transformer),
]}

# ids pass the catalog's float32 conversion exactly and Embedding casts them back, so `lamina evaluate` and
# `lamina predict` work on the classifier's model file
common.DATASETS.setdefault("dates_month", (_month_dataset, 1.0, False,
                                            "the month of 22,000 human-written dates as character ids (seeded)"))
common.RECIPES.update({k: v for k, v in RECIPES.items() if k not in common.RECIPES})
common.OTHER_DATASETS.setdefault("dates", "human-written dates in 19 formats paired with ISO 8601 (seeded)")
common.OTHER_DATASETS.setdefault("pydoc_topics", "CPython's pydoc topic help text as characters (offline)")


def main(argv=None):
    """``python -m lamina.zoo.transformers NAME [--epochs N] [--batch-size B] [--out DIR] [--seed S]``."""
    return common.recipe_main("python -m lamina.zoo.transformers", __doc__.splitlines()[0], RECIPES, argv)


if __name__ == "__main__":
    raise SystemExit(main())
