"""Keyword spotting (issue 18, item 4): the synthetic keywords, a tiny run of `lamina train speech` that must
beat the majority baseline by far, the FFT resampler, and the Speech Commands reader on a small WAV tree and
tar.gz written here (parsing, the archive's split lists, refusals: a wrong SHA-256, a wrong WAV format)."""
import hashlib
import io
import json
import tarfile
import wave

import numpy as np
import pytest

from lamina.datasets import keywords, speech_commands
from lamina.utils import data_utils
from lamina.zoo import catalog, speech


# ------------------------------------------------------------------------------------ synthetic set
def test_keywords_are_seeded_balanced_and_bounded():
    x, y = keywords.keywords(40, seed=3)
    x2, y2 = keywords.keywords(40, seed=3)
    assert x.shape == (40, 8000) and x.dtype == np.float32 and y.dtype == np.int64
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert np.bincount(y, minlength=10).tolist() == [4] * 10
    assert np.abs(x).max() <= 1.0 and np.all(x.std(axis=1) > 0.01)
    (xa, _), (xb, _) = keywords.load_data(10, 10, seed=0)
    assert not np.allclose(xa, xb)                 # the test split is drawn from its own seed


def test_keyword_classes_differ_where_a_spectrogram_sees_them():
    """'whistle-up' rises and 'whistle-down' falls: their dominant frequency moves in opposite directions;
    'ee' (F2 near 2.3 kHz) puts more of its energy at 1.8-2.6 kHz than at 0.6-1.1 kHz, 'oo' (F2 near 0.87 kHz)
    the reverse: the cues the model must learn."""
    x, y = keywords.keywords(60, seed=1)
    spec = np.abs(np.fft.rfft(x.reshape(60, 25, 320), axis=-1)) ** 2      # 25 frames of 40 ms, 25 Hz bins
    peak = spec.argmax(-1) * 25.0                                          # Hz of the strongest bin per frame
    loud = spec.sum(-1) > 0.3 * spec.sum(-1).max(-1, keepdims=True)        # frames inside the word

    def slope(i):
        t = np.nonzero(loud[i])[0]
        return np.polyfit(t, peak[i, t], 1)[0]
    up = [slope(i) for i in np.nonzero(y == keywords.CLASSES.index("whistle-up"))[0]]
    down = [slope(i) for i in np.nonzero(y == keywords.CLASSES.index("whistle-down"))[0]]
    assert min(up) > 0 > max(down)
    ratio = np.log10((spec[..., 24:44].sum(-1) * loud).sum(-1) / (spec[..., 72:104].sum(-1) * loud).sum(-1))
    assert ratio[y == keywords.CLASSES.index("ee")].max() < 0 < ratio[y == keywords.CLASSES.index("oo")].min()


def test_keywords_reject_a_negative_count():
    with pytest.raises(ValueError, match="n must be"):
        keywords.keywords(-1)


# ------------------------------------------------------------------------------------------- recipe
def test_recipes_are_in_the_catalog():
    assert catalog.get("speech").dataset == "keywords" and catalog.get("speech-commands").dataset == "speech_commands"
    assert {"keywords", "speech_commands"} <= set(catalog.OTHER_DATASETS)
    model = speech.keyword_spotter()
    assert model.output_shape == (None, 10)
    assert model.get_layer("spectrogram").trainable is False


def test_tiny_speech_run_beats_the_majority_baseline(tmp_path):
    run = speech.train_speech(epochs=4, num_train=300, num_test=100, out=str(tmp_path / "run"), verbose=0, plot=True)
    assert run["majority_baseline"] == pytest.approx(0.1)         # ten balanced classes
    assert run["test_accuracy"] >= 0.6, run                      # far above 10% (the full run gets ~99%)
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["test_accuracy"] == run["test_accuracy"] and saved["words"] == list(keywords.CLASSES)
    assert (tmp_path / "run" / "model.lamina").exists()
    pytest.importorskip("matplotlib")
    assert (tmp_path / "run" / "keywords.png").stat().st_size > 10_000


def test_majority_baseline():
    assert speech.majority_baseline([0, 1, 1, 2], [1, 1, 0, 2, 2]) == pytest.approx(0.4)


def test_resample_keeps_a_tone_and_drops_what_the_lower_rate_cannot_hold():
    t = np.arange(16000) / 16000.0
    low, high = np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 5000 * t)   # 5 kHz > 4 kHz (8 kHz Nyquist)
    out = speech.resample(np.stack([low, high + low]), 16000, 8000, chunk=1)
    t8 = np.arange(8000) / 8000.0
    assert out.shape == (2, 8000) and out.dtype == np.float32
    np.testing.assert_allclose(out[0], np.sin(2 * np.pi * 440 * t8), atol=1e-4)
    np.testing.assert_allclose(out[1], out[0], atol=1e-4)


# ------------------------------------------------------------------------------ Speech Commands reader
def _wav_bytes(samples, rate=16000, width=2, channels=1):
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(np.asarray(samples, "<i2").tobytes() if width == 2 else bytes(len(samples) * width * channels))
    return buf.getvalue()


def _tree(rng):
    """{relative path: bytes} laid out like the archive: two speakers per word, one clip shorter than a
    second, a word outside the ten, background noise, and the two split lists."""
    files, clips = {}, {}
    for word in ("yes", "no", "up", "cat"):
        for speaker in ("a1b2c3d4", "ffee0011"):
            n = 12000 if (word, speaker) == ("no", "ffee0011") else 16000
            samples = rng.integers(-3000, 3000, n).astype(np.int16)
            rel = f"{word}/{speaker}_nohash_0.wav"
            files[rel], clips[rel] = _wav_bytes(samples), samples
    files["_background_noise_/white_noise.wav"] = _wav_bytes(rng.integers(-10, 10, 48000))
    files["testing_list.txt"] = b"yes/ffee0011_nohash_0.wav\nno/ffee0011_nohash_0.wav\n"
    files["validation_list.txt"] = b"up/ffee0011_nohash_0.wav\n"
    files["LICENSE"] = b"CC BY 4.0\n"
    return files, clips


def _tar(files, prefix="./"):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for rel, data in files.items():
            info = tarfile.TarInfo(prefix + rel)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _check_split(parts, clips):
    (x, y), (xt, yt), (xv, yv) = parts
    assert x.dtype == np.int16 and x.shape == (3, 16000) and y.tolist() == [0, 1, 2]
    assert xt.shape == (2, 16000) and sorted(yt.tolist()) == [0, 1]
    assert xv.shape == (1, 16000) and yv.tolist() == [2]
    assert np.array_equal(x[0], clips["yes/a1b2c3d4_nohash_0.wav"])
    short = xt[yt.tolist().index(1)]                     # the 0.75 s clip, padded with zeros at the end
    assert np.array_equal(short[:12000], clips["no/ffee0011_nohash_0.wav"]) and not short[12000:].any()


def test_reads_the_archive_and_its_split_lists(tmp_path):
    files, clips = _tree(np.random.default_rng(0))
    path = tmp_path / "speech_commands_v0.02.tar.gz"
    path.write_bytes(_tar(files))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    parts = speech_commands.load_archive(str(path), words=("yes", "no", "up"), validation=True, sha256=sha)
    _check_split(parts, clips)
    (x, y), (xt, yt) = speech_commands.load_archive(str(path), words=("cat",), sha256=sha)
    assert x.shape == (2, 16000) and y.tolist() == [0, 0] and len(xt) == 0
    (x, y), (xt, _) = speech_commands.load_archive(str(path), words=("yes", "no", "up"), max_per_word=1, sha256=sha)
    assert y.tolist() == [0, 1, 2] and len(xt) == 0       # the first clip of each word (speaker a1b2c3d4)


def test_reads_an_extracted_folder(tmp_path):
    files, clips = _tree(np.random.default_rng(1))
    for rel, data in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(data)
    _check_split(speech_commands.load_folder(str(tmp_path), words=("yes", "no", "up"), validation=True), clips)


def test_an_archive_with_the_wrong_hash_is_refused_before_reading(tmp_path):
    path = tmp_path / "speech_commands_v0.02.tar.gz"
    path.write_bytes(b"not the archive")                 # default sha256: the real archive's
    with pytest.raises(ValueError, match="does not match the expected af14739e.*refusing"):
        speech_commands.load_archive(str(path))


def test_a_cached_fake_is_not_trusted_and_a_bad_download_is_deleted(tmp_path, monkeypatch):
    """load_data goes through get_file with the published SHA-256: a fake file in the cache is thrown away
    and fetched again; a download with the wrong bytes (a loopback server here) is deleted and reported."""
    from test_datasets import Server
    monkeypatch.setenv("LAMINA_HOME", str(tmp_path))
    folder = tmp_path / "datasets" / "speech_commands"
    folder.mkdir(parents=True)
    (folder / speech_commands.FILENAME).write_bytes(b"fake")
    with Server({"/sc.tar.gz": _tar(_tree(np.random.default_rng(2))[0])}) as srv:
        monkeypatch.setattr(speech_commands, "ORIGINS", [srv.url + "sc.tar.gz"])
        with pytest.raises(data_utils.DownloadError, match="corrupt: SHA-256 .*expected af14739e.*deleted"):
            speech_commands.load_data()
    assert not (folder / speech_commands.FILENAME).exists()
    assert not (folder / (speech_commands.FILENAME + ".part")).exists()


def test_load_data_reads_a_download_that_matches(tmp_path, monkeypatch):
    from test_datasets import Server
    files, clips = _tree(np.random.default_rng(3))
    blob = _tar(files)
    monkeypatch.setenv("LAMINA_HOME", str(tmp_path))
    monkeypatch.setattr(speech_commands, "SHA256", hashlib.sha256(blob).hexdigest())
    with Server({"/sc.tar.gz": blob}) as srv:
        monkeypatch.setattr(speech_commands, "ORIGINS", [srv.url + "sc.tar.gz"])
        parts = speech_commands.load_data(words=("yes", "no", "up"), validation=True)
    _check_split(parts, clips)


def test_speech_commands_recipe_runs_on_an_archive_given_by_path(tmp_path):
    """The plumbing only (random clips cannot be learned): read, resample to 8 kHz, train, report, save."""
    files, _ = _tree(np.random.default_rng(4))
    path = tmp_path / "sc.tar.gz"
    path.write_bytes(_tar(files))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match="does not match"):     # the recipe checks the published hash
        speech.train_speech_commands(epochs=1, archive=str(path), out=str(tmp_path / "run"), verbose=0, plot=False)
    (x, y), (xt, yt) = speech_commands.load_archive(str(path), sha256=sha)
    assert len(x) == 3 and len(xt) == 2                  # yes, no, up: three training clips, two test clips
    folder = tmp_path / "extracted"
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    run = speech.train_speech_commands(epochs=1, archive=str(folder), out=str(tmp_path / "run"), verbose=0,
                                       plot=False)
    assert run["num_train"] == 3 and run["num_test"] == 2 and run["sampling_rate"] == 8000
    assert run["words"] == list(speech_commands.WORDS) and 0.0 <= run["test_accuracy"] <= 1.0
    assert (tmp_path / "run" / "run.json").exists()


@pytest.mark.parametrize("kwargs,message", [
    (dict(rate=8000), "8000 Hz"), (dict(channels=2), "2 channel"), (dict(width=1), "8-bit"),
])
def test_wav_in_another_format_is_refused_with_its_name(kwargs, message):
    with pytest.raises(ValueError, match=f"clip.wav: expected 16-bit mono WAV .*{message}"):
        speech_commands.read_wav(_wav_bytes(np.zeros(100, np.int16), **kwargs), "clip.wav")
    with pytest.raises(ValueError, match="clip.wav: not a readable WAV"):
        speech_commands.read_wav(b"RIFF....WAVEjunk", "clip.wav")


def test_unknown_words_are_refused():
    with pytest.raises(ValueError, match="distinct names"):
        speech_commands.load_folder("/nonexistent", words=("yes", "hello"))
    assert speech_commands.SIZE == 2_428_923_189 and len(speech_commands.ALL_WORDS) == 35
