"""Google Speech Commands v0.02 (Warden, 2018): 105,829 one-second WAV clips of 35 spoken words by 2,618
speakers, 16 kHz, 16-bit mono, CC BY 4.0. Downloaded once (2,428,923,189 bytes) from the URL TensorFlow's
audio-recognition tutorial uses, checked against its SHA-256 and cached under ``$LAMINA_HOME/datasets``.

    (x_train, y_train), (x_test, y_test) = lamina.datasets.speech_commands.load_data()

x: int16 (N, 16000), clips shorter than a second padded with zeros at the end; y: int64 indices into
``words`` (default the ten command words ``WORDS``). The split is the archive's own: clips listed in
testing_list.txt are the test set, those in validation_list.txt the validation set (returned as a third
pair with ``validation=True``, otherwise left out), the rest the training set. The lists keep each speaker in
one split.

The archive is read in memory, member by member (nothing is extracted to disk); WAV files are decoded with
the standard library's ``wave`` module, and anything that is not a 16-bit mono WAV at 16 kHz is refused with
its name. ``load_folder(root)`` reads an archive a user extracted by hand, with the same rules. No pickle.
"""
import io
import os
import re
import tarfile
import wave

import numpy as np

from ..utils.data_utils import _sha256, get_file

__all__ = ["URL", "FILENAME", "SHA256", "SIZE", "WORDS", "ALL_WORDS", "SAMPLING_RATE", "load_data", "load_archive",
           "load_folder", "read_wav"]

URL = "https://storage.googleapis.com/download.tensorflow.org/data/speech_commands_v0.02.tar.gz"
ORIGINS = [URL, "http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz"]
FILENAME = "speech_commands_v0.02.tar.gz"
# published by torchaudio (datasets/speechcommands.py) and TensorFlow Datasets (speech_commands/checksums.tsv)
SHA256 = "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58"
SIZE = 2_428_923_189
SAMPLING_RATE = 16000
WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
ALL_WORDS = WORDS + ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "bed", "bird",
                     "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow", "backward", "forward",
                     "follow", "learn", "visual")
_CLIP = re.compile(r"^([a-z]+)/([A-Za-z0-9_\-]+\.wav)$")


def read_wav(data, name="<bytes>", length=SAMPLING_RATE):
    """The samples of a 16-bit mono WAV at 16 kHz (bytes or a file path) as int16 (length,): shorter clips are
    padded with zeros, longer ones cut. ValueError naming the file for anything else."""
    try:
        with wave.open(io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data, "rb") as w:
            channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as e:
        raise ValueError(f"{name}: not a readable WAV file ({e}).") from None
    if (channels, width, rate) != (1, 2, SAMPLING_RATE):
        raise ValueError(f"{name}: expected 16-bit mono WAV at {SAMPLING_RATE} Hz; found {channels} channel(s), "
                         f"{8 * width}-bit, {rate} Hz.")
    samples = np.frombuffer(frames[:2 * length], dtype="<i2")
    out = np.zeros(length, np.int16)
    out[:len(samples)] = samples
    return out


def _lists(read_text):
    def entries(name):
        text = read_text(name)
        return set() if text is None else {line.strip() for line in text.splitlines() if line.strip()}
    return entries("testing_list.txt"), entries("validation_list.txt")


def _split(clips, words, testing, validation, validation_wanted):
    """clips: [(relative path 'word/file.wav', int16 samples)] -> the pairs of the splits."""
    index = {w: i for i, w in enumerate(words)}
    parts = {"train": ([], []), "validation": ([], []), "test": ([], [])}
    for rel, samples in clips:   # one entry per file; the arrays are stacked once below
        part = "test" if rel in testing else "validation" if rel in validation else "train"
        parts[part][0].append(samples)
        parts[part][1].append(index[rel.split("/")[0]])

    def stack(part):
        xs, ys = parts[part]
        x = np.stack(xs) if xs else np.zeros((0, SAMPLING_RATE), np.int16)
        return x, np.asarray(ys, np.int64)

    out = (stack("train"), stack("test"))
    return out + (stack("validation"),) if validation_wanted else out


def _check_words(words):
    words = tuple(words)
    unknown = [w for w in words if w not in ALL_WORDS]
    if unknown or not words or len(set(words)) != len(words):
        raise ValueError(f"speech_commands: words must be distinct names from {', '.join(ALL_WORDS)}. "
                         f"Received: {list(words)}")
    return words


def _wanted(rel, words, max_per_word, counts):
    m = _CLIP.match(rel)
    if not m or m.group(1) not in words:
        return False
    if max_per_word is not None:
        if counts.get(m.group(1), 0) >= max_per_word:
            return False
        counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return True


def load_archive(path, words=WORDS, validation=False, max_per_word=None, sha256=SHA256):
    """Read speech_commands_v0.02.tar.gz at path (see the module's docstring for what comes back). The file's
    SHA-256 must equal ``sha256`` (pass ``sha256=None`` only for an archive you built or checked yourself);
    a mismatch raises ValueError before anything is read. ``max_per_word`` keeps the first N clips of each
    word in the archive's order (less memory: all ten words take 1.2 GB as int16)."""
    words = _check_words(words)
    if sha256 is not None:
        got = _sha256(path)
        if got != sha256.lower():
            raise ValueError(f"{path}: SHA-256 {got} does not match the expected {sha256.lower()}; refusing to read "
                             f"it (a damaged or different file). Delete it and download {URL} again.")
    clips, texts, counts = [], {}, {}
    try:
        with tarfile.open(path, mode="r:gz") as tar:
            for member in tar:
                rel = member.name[2:] if member.name.startswith("./") else member.name
                if not member.isfile():
                    continue
                if rel in ("testing_list.txt", "validation_list.txt"):
                    texts[rel] = tar.extractfile(member).read().decode("utf-8")
                elif _wanted(rel, words, max_per_word, counts):
                    clips.append((rel, read_wav(tar.extractfile(member).read(), f"{path}:{member.name}")))
    except (tarfile.TarError, OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable .tar.gz archive ({e}).") from e
    if not clips:
        raise ValueError(f"{path}: no clips of {', '.join(words)}; not the Speech Commands archive.")
    testing, valid = _lists(texts.get)
    return _split(clips, words, testing, valid, validation)


def load_folder(root, words=WORDS, validation=False, max_per_word=None):
    """The same as load_archive for an archive extracted by hand into the folder root (root/yes/*.wav, ...,
    root/testing_list.txt, root/validation_list.txt)."""
    words = _check_words(words)
    clips, counts = [], {}
    for word in words:
        folder = os.path.join(root, word)
        names = sorted(os.listdir(folder)) if os.path.isdir(folder) else []
        for name in names:
            rel = f"{word}/{name}"
            if _wanted(rel, words, max_per_word, counts):
                clips.append((rel, read_wav(os.path.join(folder, name), os.path.join(folder, name))))
    if not clips:
        raise ValueError(f"{root}: no clips of {', '.join(words)} (expected folders like {root}/yes/*.wav).")

    def read_text(name):
        p = os.path.join(root, name)
        if not os.path.exists(p):
            return None
        with open(p, encoding="utf-8") as f:
            return f.read()

    testing, valid = _lists(read_text)
    return _split(clips, words, testing, valid, validation)


def load_data(words=WORDS, validation=False, max_per_word=None):
    """Download (once, 2.4 GB) and read Speech Commands v0.02: ((x_train, y_train), (x_test, y_test)) and,
    with validation=True, a third pair (x_val, y_val). Offline, place the archive at the path the error names
    (``$LAMINA_HOME/datasets/speech_commands/speech_commands_v0.02.tar.gz``)."""
    path = get_file(FILENAME, ORIGINS, file_hash=SHA256, cache_subdir=os.path.join("datasets", "speech_commands"),
                    timeout=30)   # get_file has checked the SHA-256 (of the cached file, or of the download)
    return load_archive(path, words=words, validation=validation, max_per_word=max_per_word, sha256=None)
