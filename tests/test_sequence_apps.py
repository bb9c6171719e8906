"""The sequence applications, CI-sized: long memory (LSTM/GRU learn it, an order-free Dense baseline cannot),
the sentiment and charlm recipes end to end, text data sets and downloaders against loopback fixtures."""
import hashlib
import http.server
import io
import tarfile
import threading
import zipfile

import numpy as np
import pytest

import lamina
from lamina.datasets import text as text_data
from lamina.utils import data_utils
from lamina.zoo import catalog
from lamina.zoo import text as zoo_text


class StopAbove(lamina.callbacks.Callback):
    """Stop once validation accuracy passes a threshold (keeps the CI run short without changing the result)."""

    def __init__(self, threshold):
        super().__init__()
        self.threshold = threshold

    def on_epoch_end(self, epoch, logs=None):
        if logs["val_accuracy"] > self.threshold:
            self.model.stop_training = True


# ------------------------------------------------------------------------------------ long memory
def test_longmemory_data_has_no_order_free_signal():
    (x, y), (xt, yt) = zoo_text.longmemory_data(n_train=50, n_test=5, seed=3)
    assert x.shape == (50, 41) and x.dtype == np.int64 and y.shape == (50,)
    assert np.all(x[:, -1] == 9) and np.array_equal(y, x[:, 0] - 1)
    # every sequence holds each symbol exactly 5 times: its bag of tokens says nothing about the label
    counts = np.stack([np.bincount(row[:-1], minlength=9)[1:] for row in x])
    assert np.all(counts == 5)
    (x2, _), _ = zoo_text.longmemory_data(n_train=50, n_test=5, seed=3)
    assert np.array_equal(x, x2)
    with pytest.raises(ValueError, match="multiple of symbols"):
        zoo_text.longmemory_data(lag=41)


@pytest.fixture(scope="module")
def longmemory():
    return zoo_text.longmemory_data(n_train=8000, n_test=500, seed=0)


@pytest.fixture
def one_blas_thread():
    """One BLAS thread for the test, whatever runs it: a product's last bits differ between one and two
    threads (lamina/threads.py), so the thread governor of a plain `pytest` run on two cores puts a training
    run on another trajectory than the one-thread run of `pytest -n 2` (seed 1's LSTM below reached 100% in
    4 epochs on one thread, and stayed at 85-92% for 12 with the governor)."""
    before = lamina.config.get_num_threads()
    lamina.config.set_num_threads(1)
    yield
    lamina.config.set_num_threads(before)
    lamina.config.set_num_threads("auto")


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_recurrent_nets_remember_40_steps(kind, longmemory, one_blas_thread):
    (x, y), (xt, yt) = longmemory
    # at the recipes' learning rate (3e-3) every one of 26 LSTM and 12 GRU seeds tried reached >= 97% in
    # 3-6 epochs on one thread (at 1e-2 about one seed in five stayed on a 42-87% plateau for 12 epochs);
    # eight more LSTM seeds under the governor too, but seed 1 there stayed at 85-92%. Seed 1 is a
    # borderline trajectory: with the compiled LSTM backward step (lamina/ops/kernels.py, whose sums round
    # in another order) its LSTM stays at 0.49-0.53 for 6 epochs, where NumPy's passes leave that plateau in
    # epoch 5; seeds 2, 3 and 4 reach 1.0 by epoch 3-4 either way. The LSTM takes seed 2.
    lamina.utils.set_random_seed(2 if kind == "lstm" else 1)
    recipe = catalog.get("longmemory" if kind == "lstm" else "longmemory-gru")
    model = recipe.compile(recipe.build(input_shape=x.shape[1:], num_classes=8))
    model.fit(x, y, batch_size=32, epochs=12, verbose=0, validation_data=(xt, yt), callbacks=[StopAbove(0.97)])
    _, accuracy = model.evaluate(xt, yt, verbose=0)
    assert accuracy > 0.95


def test_order_free_dense_baseline_stays_at_chance(longmemory):
    (x, y), (xt, yt) = longmemory
    lamina.utils.set_random_seed(0)
    recipe = catalog.get("longmemory-dense")
    model = recipe.compile(recipe.build(input_shape=x.shape[1:], num_classes=8))
    model.fit(x[:4000], y[:4000], batch_size=32, epochs=3, verbose=0)
    _, accuracy = model.evaluate(xt, yt, verbose=0)
    assert accuracy < 0.2            # chance is 1/8; 500 test samples put 0.2 far outside the noise


# -------------------------------------------------------------------------------------- sentiment
def test_bundled_movie_snippets():
    (x, y), (xt, yt) = text_data.load_movie_snippets()
    assert x.shape == (8056,) and xt.shape == (2014,) and x.dtype == object and y.dtype == np.int64
    assert isinstance(x[0], str) and set(np.unique(y)) == {0, 1} and abs(y.mean() - 0.5) < 0.01
    (_, _, r), _ = text_data.load_movie_snippets(return_ratings=True)
    assert np.all((r > 0) == (y == 1)) and np.all(np.abs(r) >= 0.5)
    assert not set(x) & set(xt)


def test_sentiment_recipe_learns_in_one_epoch(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    from lamina.cli import main
    assert main(["train", "--model", "sentiment", "--epochs", "1", "--quiet", "--no-plot", "--out", "run"]) == 0
    import json
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["dataset"] == "movie_snippets" and run["test_accuracy"] > 0.7     # chance: 0.5
    # the trained ids model + the adapted vectorizer give a model that reads raw sentences
    model = lamina.models.load_model(str(tmp_path / "run" / "model.lamina"))
    reader = zoo_text.sentiment_text_model(model)
    probs = reader.predict(np.array(["A moving, beautifully acted and wonderful film.",
                                     "A dull, boring and painfully stupid mess."], dtype=object), verbose=0)
    assert probs.shape == (2, 2) and probs[0, 1] > 0.5 > probs[1, 1]


# ----------------------------------------------------------------------------------------- charlm
def test_charlm_learns_below_unigram_and_generates(tmp_path):
    (x, y), (xv, yv) = zoo_text.charlm_data()
    assert x.shape[1] == 40 and x.dtype == np.int64 and len(xv) > 5000
    baselines = zoo_text.charlm_baselines()
    assert baselines["unigram"] < baselines["uniform"]
    lamina.utils.set_random_seed(0)
    recipe = catalog.get("charlm")
    model = recipe.compile(recipe.build(input_shape=x.shape[1:], num_classes=int(y.max()) + 1))
    before = model.evaluate(xv[:2000], yv[:2000], batch_size=500, verbose=0)[0]
    # one short epoch: 100 steps leave the validation loss at 2.94-2.99 over seeds 0-7, under the unigram's 3.23
    model.fit(x[:12800], y[:12800], batch_size=128, epochs=1, verbose=0)
    after = model.evaluate(xv[:2000], yv[:2000], batch_size=500, verbose=0)[0]
    assert before > baselines["unigram"] > after
    path = str(tmp_path / "charlm.lamina")
    model.save(path)
    model = lamina.models.load_model(path, compile=False)
    texts = zoo_text.generate(model, "The ", length=30, temperature=[0.5, 1.0], rng=np.random.default_rng(1))
    assert len(texts) == 2 and all(len(t) == 30 and set(t) <= set(zoo_text.CHARS) for t in texts)
    again = zoo_text.generate(model, "The ", length=30, temperature=[0.5, 1.0], rng=np.random.default_rng(1))
    assert again == texts
    # a tiny temperature is (almost) greedy: the argmax of the model at every step
    greedy = zoo_text.generate(model, "The ", length=5, temperature=1e-4)
    context = zoo_text.char_vectorizer()(" " * 36 + "The ").numpy()[None]
    first = int(model.predict_on_batch(context).argmax())
    assert greedy[0] == zoo_text.CHARS[first - 2]
    with pytest.raises(ValueError, match="positive"):
        zoo_text.generate(model, "x", temperature=0)


def test_recipes_are_in_the_catalog(capsys):
    from lamina.cli import main
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("sentiment", "charlm", "longmemory", "longmemory-gru", "longmemory-dense"):
        assert name in catalog.RECIPES and name in out
    for name in ("movie_snippets", "pydoc_chars", "longmemory"):
        assert name in catalog.DATASETS


# ------------------------------------------------------------------------------------ downloaders
class Server:
    """A loopback HTTP server over an in-memory {path: bytes}."""

    def __init__(self, files):
        files = dict(files)
        self.requests = []
        requests = self.requests

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                requests.append(self.path)
                body = files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        # shutdown() waits for serve_forever's next poll: 0.5 s by default, for each test
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def sha(blob):
    return hashlib.sha256(blob).hexdigest()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("LAMINA_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(data_utils.time, "sleep", lambda s: None)
    return tmp_path / "home"


def uci_zip(files):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in files.items():
            z.writestr("sentiment labelled sentences/" + name, text)
        z.writestr("__MACOSX/._readme.txt", b"\x00\x05")
    return buf.getvalue()


UCI_FILES = {
    "amazon_cells_labelled.txt": "Great phone, works well.\t1\nBattery died in a day.\t0\n",
    "imdb_labelled.txt": "A very, very slow-moving film.  \t0\nLoved the acting!\t1\n\n",
    "yelp_labelled.txt": "Wow... Loved this place.\t1\nCrust is not good.\t0\nThe fries were great.\t1\n",
}


def test_uci_sentences_download_checksum_and_parse(home, monkeypatch):
    blob = uci_zip(UCI_FILES)
    with Server({"/uci.zip": blob}) as srv:
        monkeypatch.setattr(text_data, "SENTENCES_ORIGINS", [srv.url + "uci.zip"])
        monkeypatch.setattr(text_data, "SENTENCES_SHA256", sha(blob))
        (x, y), (xt, yt) = text_data.load_sentiment_sentences(test_split=0.25)
        assert len(x) + len(xt) == 7 and len(xt) == 2
        pairs = dict(zip(list(x) + list(xt), list(y) + list(yt)))
        assert pairs["A very, very slow-moving film."] == 0 and pairs["Wow... Loved this place."] == 1
        assert pairs["The fries were great."] == 1 and y.dtype == np.int64
        (x2, _), _ = text_data.load_sentiment_sentences(test_split=0.25)        # cached, same split
        assert list(x2) == list(x) and srv.requests == ["/uci.zip"]
        (xy, _), (xyt, _) = text_data.load_sentiment_sentences(sources="yelp", test_split=0.5)
        assert len(xy) + len(xyt) == 3
    assert (home / "datasets" / "sentiment_labelled_sentences" / text_data.SENTENCES_FILE).exists()
    with pytest.raises(ValueError, match="unknown source"):
        text_data.load_sentiment_sentences(sources="twitter")


def test_checksum_is_enforced(home, monkeypatch):
    blob = uci_zip(UCI_FILES)
    with Server({"/uci.zip": blob}) as srv:
        monkeypatch.setattr(text_data, "SENTENCES_ORIGINS", [srv.url + "uci.zip"])
        monkeypatch.setattr(text_data, "SENTENCES_SHA256", sha(blob + b"x"))
        with pytest.raises(data_utils.DownloadError, match="corrupt: SHA-256"):
            text_data.load_sentiment_sentences()
    folder = home / "datasets" / "sentiment_labelled_sentences"
    assert not any(folder.iterdir())                     # neither the file nor a .part is left behind


def test_foreign_archive_is_refused(home, monkeypatch):
    blob = uci_zip({"amazon_cells_labelled.txt": "fine\t1\n"})
    with Server({"/uci.zip": blob}) as srv:
        monkeypatch.setattr(text_data, "SENTENCES_ORIGINS", [srv.url + "uci.zip"])
        monkeypatch.setattr(text_data, "SENTENCES_SHA256", sha(blob))
        with pytest.raises(ValueError, match="archive lacks"):
            text_data.load_sentiment_sentences()


def test_uci_bad_line_is_reported(home, monkeypatch):
    blob = uci_zip({**UCI_FILES, "yelp_labelled.txt": "no label here\n"})
    with Server({"/uci.zip": blob}) as srv:
        monkeypatch.setattr(text_data, "SENTENCES_ORIGINS", [srv.url + "uci.zip"])
        monkeypatch.setattr(text_data, "SENTENCES_SHA256", sha(blob))
        with pytest.raises(ValueError, match="line 1: expected 'sentence<TAB>0|1'"):
            text_data.load_sentiment_sentences()


def imdb_tar(reviews):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, text in list(reviews.items()) + [("aclImdb/imdb.vocab", "the\nand\n"),
                                                   ("aclImdb/train/unsup/0_0.txt", "unlabelled")]:
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_imdb_reviews_download_and_read(home, monkeypatch):
    reviews = {"aclImdb/train/pos/0_9.txt": "Brilliant.<br /><br />Loved it.", "aclImdb/train/neg/1_2.txt": "Awful.",
               "aclImdb/train/pos/2_8.txt": "Très bien.", "aclImdb/test/neg/0_1.txt": "Dreadful.",
               "aclImdb/test/pos/0_10.txt": "Superb."}
    blob = imdb_tar(reviews)
    with Server({"/aclImdb_v1.tar.gz": blob}) as srv:
        monkeypatch.setattr(text_data, "IMDB_ORIGINS", [srv.url + "aclImdb_v1.tar.gz"])
        monkeypatch.setattr(text_data, "IMDB_SHA256", sha(blob))
        (x, y), (xt, yt) = text_data.load_imdb_reviews()
    train = dict(zip(x, y))
    assert train == {"Brilliant.  Loved it.": 1, "Awful.": 0, "Très bien.": 1}
    assert dict(zip(xt, yt)) == {"Dreadful.": 0, "Superb.": 1}


def test_real_checksums_are_recorded():
    assert text_data.SENTENCES_SHA256 == "afc26626d710899948693e1a61405dce197f57ffa719fa1130d346b4cc095343"
    assert text_data.IMDB_SHA256 == "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"


def test_pydoc_corpus_is_real_english():
    text = text_data.load_pydoc_topics()
    assert len(text) > 100_000 and "statement" in text and text.count(" the ") > 1000
