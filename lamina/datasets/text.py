"""Text corpora for the sequence models: sentiment data (one bundled, two downloadable) and a character corpus.

- ``load_movie_snippets()``: 10,070 real movie-review sentences with human sentiment labels, bundled with
  lamina (offline). From the VADER data set of Hutto & Gilbert (2014), shipped under the MIT licence in
  the vaderSentiment 3.3.2 source distribution; see lamina/data/movie_snippets_NOTICE.txt.
- ``load_sentiment_sentences()``: UCI "Sentiment Labelled Sentences" (Kotzias et al. 2015, CC BY 4.0):
  3,000 sentences from Amazon, IMDb and Yelp reviews, downloaded once (82 KB zip, SHA-256 verified).
- ``load_imdb_reviews()``: the Stanford Large Movie Review data set (Maas et al. 2011), 50,000 full IMDb
  reviews, downloaded once (84 MB tar.gz, SHA-256 verified).
- ``load_pydoc_topics()``: the English help text of CPython's ``pydoc_data.topics`` (about 465,000
  characters), which every CPython installation ships: a real corpus for character-level language models.

Sentiment loaders return ``((x_train, y_train), (x_test, y_test))`` with x a NumPy array of Python strings
(dtype object, ready for ``TextVectorization``) and y int64 labels, 1 positive and 0 negative. Archives
are read in memory: nothing is extracted to disk, and nothing is unpickled.
"""
import os
import re
import tarfile
import zipfile

import numpy as np

from ..utils.data_utils import get_file

__all__ = ["load_movie_snippets", "load_sentiment_sentences", "load_imdb_reviews", "load_pydoc_topics",
           "MOVIE_SNIPPETS_PATH"]

MOVIE_SNIPPETS_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                                   "movie_snippets.npz")

# UCI Machine Learning Repository, data set 331 (CC BY 4.0).
SENTENCES_ORIGINS = ["https://archive.ics.uci.edu/static/public/331/sentiment+labelled+sentences.zip"]
SENTENCES_FILE = "sentiment_labelled_sentences.zip"
SENTENCES_SHA256 = "afc26626d710899948693e1a61405dce197f57ffa719fa1130d346b4cc095343"
SENTENCES_FOLDER = "sentiment labelled sentences/"
SENTENCES_SOURCES = ("amazon_cells", "imdb", "yelp")

IMDB_ORIGINS = ["https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"]
IMDB_FILE = "aclImdb_v1.tar.gz"
IMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"   # 84,125,825 bytes
_IMDB_MEMBER = re.compile(r"^aclImdb/(train|test)/(pos|neg)/[0-9]+_[0-9]+\.txt$")


def _split(texts, labels, test_split, seed):
    """Shuffle once with a fixed seed and cut: the same split on every machine."""
    if not 0.0 < test_split < 1.0:
        raise ValueError(f"test_split must be in (0, 1). Received: test_split={test_split!r}")
    order = np.random.default_rng(seed).permutation(len(texts))
    texts, labels = texts[order], labels[order]
    n_test = int(round(len(texts) * test_split))
    cut = len(texts) - n_test
    return (texts[:cut], labels[:cut]), (texts[cut:], labels[cut:])


def _strings(items):
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def load_movie_snippets(test_split=0.2, return_ratings=False):
    """The bundled movie-review snippets: ((x_train, y_train), (x_test, y_test)).

    Args:
        test_split: fraction held out for testing (the file is stored shuffled; the last part is the test set).
        return_ratings: also return the mean human ratings (-4..+4) as ((x, y, r), (x, y, r)).
    Returns: x object arrays of str (8,056 and 2,014 snippets by default), y int64 (1 positive, 0 negative;
    the two classes are balanced to within 1%).
    """
    if not 0.0 < test_split < 1.0:
        raise ValueError(f"load_movie_snippets: test_split must be in (0, 1). Received: test_split={test_split!r}")
    with np.load(MOVIE_SNIPPETS_PATH, allow_pickle=False) as f:
        text = f["text"].tobytes().decode("utf-8")
        labels = f["label"].astype(np.int64)
        ratings = f["rating"]
    texts = _strings(text.split("\n"))
    if len(texts) != len(labels):
        raise ValueError(f"{MOVIE_SNIPPETS_PATH}: {len(texts)} snippets for {len(labels)} labels; the file is damaged.")
    cut = len(texts) - int(round(len(texts) * test_split))
    train, test = (texts[:cut], labels[:cut], ratings[:cut]), (texts[cut:], labels[cut:], ratings[cut:])
    return (train, test) if return_ratings else (train[:2], test[:2])


def _parse_sentences(blob, name):
    """(texts, labels) from a UCI file: one 'sentence<TAB>label' per line, label 0 or 1."""
    texts, labels = [], []
    for number, line in enumerate(blob.decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        sentence, sep, label = line.rpartition("\t")
        label = label.strip()
        if not sep or label not in ("0", "1"):
            raise ValueError(f"{name}, line {number}: expected 'sentence<TAB>0|1'. Received {line[:80]!r}")
        texts.append(sentence.strip())
        labels.append(int(label))
    return texts, labels


def load_sentiment_sentences(sources=SENTENCES_SOURCES, test_split=0.2, seed=113):
    """UCI Sentiment Labelled Sentences (downloaded once, SHA-256 checked): ((x_train, y_train), (x_test, y_test)).

    Args:
        sources: which of 'amazon_cells', 'imdb', 'yelp' (1,000 sentences each, 500 per class) to use.
        test_split: fraction held out for testing, after one shuffle with ``seed``.
    """
    sources = (sources,) if isinstance(sources, str) else tuple(sources)
    unknown = [s for s in sources if s not in SENTENCES_SOURCES]
    if unknown or not sources:
        raise ValueError(f"load_sentiment_sentences: unknown source(s) {unknown or sources!r}. Valid: "
                         f"{', '.join(SENTENCES_SOURCES)}.")
    path = get_file(SENTENCES_FILE, SENTENCES_ORIGINS, file_hash=SENTENCES_SHA256,
                    cache_subdir=os.path.join("datasets", "sentiment_labelled_sentences"))
    wanted = {SENTENCES_FOLDER + f"{s}_labelled.txt": s for s in sources}
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            missing = [n for n in wanted if n not in names]
            if missing:
                raise ValueError(f"{path}: archive lacks {', '.join(missing)}; not the UCI Sentiment Labelled "
                                 "Sentences zip.")
            blobs = {n: z.read(n) for n in wanted}          # read in memory: member paths never touch the disk
    except zipfile.BadZipFile as e:
        raise ValueError(f"{path}: not a readable zip archive ({e}).") from e
    texts, labels = [], []
    for name in wanted:
        t, y = _parse_sentences(blobs[name], f"{path}:{name}")
        texts += t
        labels += y
    return _split(_strings(texts), np.asarray(labels, np.int64), test_split, seed)


def load_imdb_reviews(clean_html=True, seed=113):
    """The Stanford Large Movie Review data set (downloaded once, 84 MB, SHA-256 checked).

    Returns ((x_train, y_train), (x_test, y_test)): 25,000 + 25,000 full reviews as str (the published
    train/test split, each shuffled with ``seed``), y int64 1 positive / 0 negative. clean_html replaces the
    ``<br />`` line breaks of the raw files by spaces. The unlabelled 'unsup' reviews are skipped.
    """
    path = get_file(IMDB_FILE, IMDB_ORIGINS, file_hash=IMDB_SHA256, cache_subdir=os.path.join("datasets", "aclImdb"))
    found = {"train": [], "test": []}
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for member in tar:                             # one streaming pass; nothing is extracted to disk
                m = _IMDB_MEMBER.match(member.name)
                if m is None or not member.isfile():
                    continue
                text = tar.extractfile(member).read().decode("utf-8", errors="replace")
                if clean_html:
                    text = text.replace("<br />", " ")
                found[m.group(1)].append((member.name, text, int(m.group(2) == "pos")))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable .tar.gz archive ({e}).") from e
    out = []
    for split in ("train", "test"):
        rows = sorted(found[split])                        # archive order is not part of the format
        if not rows or len({r[2] for r in rows}) < 2:
            raise ValueError(f"{path}: no positive and negative reviews under aclImdb/{split}/; not the aclImdb "
                             "archive.")
        texts, labels = _strings([r[1] for r in rows]), np.array([r[2] for r in rows], np.int64)
        order = np.random.default_rng(seed).permutation(len(rows))
        out.append((texts[order], labels[order]))
    return tuple(out)


def load_pydoc_topics():
    """The help topics of CPython's pydoc (``pydoc_data.topics``), sorted by topic name, joined by blank lines.

    Real English technical prose (with code samples), present in every CPython installation, so it is
    available offline; its exact text depends on the Python version.
    """
    from pydoc_data import topics
    return "\n\n".join(topics.topics[k].strip("\n") for k in sorted(topics.topics))

