"""Datasets from arrays and directories, with Keras's names and arguments: ``timeseries_dataset_from_array``,
``image_dataset_from_directory``, ``text_dataset_from_directory``, ``audio_dataset_from_directory``, and
``pack_x_y_sample_weight``.

Difference from Keras: lamina has no tf.data, so these return a ``lamina.utils.PyDataset`` whose items
are batches of NumPy arrays: ``ds[i]`` / ``for x, y in ds`` give ``(x, y)`` (or ``x`` without labels or
targets), ``len(ds)`` is the number of batches, and ``model.fit(ds)``, ``evaluate(ds)`` and ``predict(ds)``
take it directly. Files are read batch by batch when the batch is asked for (images decoded with Pillow,
WAV files with the standard library), so a directory larger than memory works. The datasets keep
Keras's attributes ``class_names`` and ``file_paths``, and the tf.data methods Keras examples use most:
``map``, ``take``, ``cardinality`` (the number of batches), and ``prefetch`` / ``cache`` (no-ops). Keras's ``format`` argument ('tf' or 'grain') is
accepted and ignored.

File order, labels, shuffling (NumPy's ``RandomState(seed)`` over the sorted file list) and the
validation split are those of Keras, so the same directory, seed and split give the same files in each
subset. Keras also reshuffles within a buffer when iterating; lamina instead reshuffles the whole
order after each epoch (seeded), so batch contents differ from Keras's after the first shuffle.
"""
import os
import wave

import numpy as np

from .. import backend
from ..data.packing import pack_x_y_sample_weight  # noqa: F401  (one definition, in data/)
from ..data.py_dataset import PyDataset

__all__ = ["timeseries_dataset_from_array", "image_dataset_from_directory", "text_dataset_from_directory",
           "audio_dataset_from_directory", "pack_x_y_sample_weight"]

IMAGE_FORMATS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")


class _DatasetMethods:
    """The tf.data methods Keras examples call on these datasets most: ``map(fn)`` (fn gets a batch's parts as
    arguments, as tf.data's map), ``take(n)`` (the first n batches), ``cardinality()`` (the number of batches), and ``prefetch`` / ``cache`` (no-ops
    returning the dataset: batches are read on demand)."""

    def map(self, fn, num_parallel_calls=None, deterministic=None, name=None):
        return _Mapped(self, fn)

    def take(self, count):
        return _Taken(self, count)

    def cardinality(self):
        """The number of batches, as tf.data's ``cardinality()`` (an int here, a scalar tensor there)."""
        return len(self)

    def prefetch(self, buffer_size=None, name=None):
        return self

    def cache(self, filename="", name=None):
        return self


class _Derived(_DatasetMethods, PyDataset):
    def __init__(self, parent):
        super().__init__()
        self.parent = parent
        self.class_names = getattr(parent, "class_names", None)
        self.file_paths = getattr(parent, "file_paths", None)

    def __len__(self):
        return len(self.parent)

    def on_epoch_begin(self):
        self.parent.on_epoch_begin()

    def on_epoch_end(self):
        self.parent.on_epoch_end()


class _Mapped(_Derived):
    def __init__(self, parent, fn):
        super().__init__(parent)
        self.fn = fn

    def __getitem__(self, index):
        batch = self.parent[index]
        return self.fn(*batch) if isinstance(batch, tuple) else self.fn(batch)


class _Taken(_Derived):
    def __init__(self, parent, count):
        super().__init__(parent)
        self.count = len(parent) if count is None or count < 0 else min(int(count), len(parent))

    def __len__(self):
        return self.count

    def __getitem__(self, index):
        if index < 0:
            index += self.count
        if not 0 <= index < self.count:
            raise IndexError(f"batch index {index} out of range for a dataset of {self.count} batches")
        return self.parent[index]


class _Batches(_DatasetMethods, PyDataset):
    """Batches of samples 0..n-1 in an order (shuffled after each epoch when asked); ``_load(idx)`` makes
    the x of the samples idx (a NumPy index array)."""

    def __init__(self, n, labels=None, batch_size=32, shuffle=False, seed=None, order=None):
        super().__init__()
        self.n, self.labels = int(n), labels
        self.batch_size = None if batch_size is None else int(batch_size)
        self.shuffle = shuffle
        self._rng = np.random.default_rng(seed)
        self._order = np.arange(self.n) if order is None else np.asarray(order)

    def __len__(self):
        return self.n if self.batch_size is None else -(-self.n // self.batch_size)

    def __getitem__(self, index):
        count = len(self)
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError(f"batch index {index} out of range for a dataset of {count} batches")
        if self.batch_size is None:
            idx = self._order[index:index + 1]
        else:
            idx = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        x = self._load(idx)
        if self.batch_size is None:
            x = x[0] if not isinstance(x, list) else x[0]
        if self.labels is None:
            return x
        y = self.labels[idx]
        return x, (y[0] if self.batch_size is None else y)

    def on_epoch_end(self):
        if self.shuffle:
            self._order = self._rng.permutation(self.n)


# ------------------------------------------------------------------------------------------ time series
class _Windows(_Batches):
    def __init__(self, data, targets, starts, sequence_length, sampling_rate, batch_size, shuffle, seed):
        self.data, self.targets, self.starts = data, targets, starts
        self.offsets = np.arange(sequence_length) * sampling_rate
        super().__init__(len(starts), None, batch_size, shuffle, seed)

    def __getitem__(self, index):
        count = len(self)
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError(f"batch index {index} out of range for a dataset of {count} batches")
        if self.batch_size is None:
            pos = self.starts[self._order[index]]
            x = self.data[pos + self.offsets]
            return x if self.targets is None else (x, self.targets[pos])
        pos = self.starts[self._order[index * self.batch_size:(index + 1) * self.batch_size]]
        x = self.data[pos[:, None] + self.offsets]
        return x if self.targets is None else (x, self.targets[pos])


def timeseries_dataset_from_array(data, targets, sequence_length, sequence_stride=1, sampling_rate=1,
                                  batch_size=128, shuffle=False, seed=None, start_index=None, end_index=None,
                                  format="tf"):
    """Sliding windows over a series, as ``keras.utils.timeseries_dataset_from_array``.

    Window i starts at ``start_index + i * sequence_stride`` and holds ``sequence_length`` steps taken
    every ``sampling_rate`` rows of ``data``; its target is ``targets[start_index + i * sequence_stride]``
    (the target of the window's first step: shift targets yourself to predict the future). Windows must
    end before ``end_index``. Returns a PyDataset of ``(windows, targets)`` batches (``windows`` alone when
    targets is None), windows shaped (batch, sequence_length) + data.shape[1:].
    """
    if format not in ("tf", "grain"):
        raise ValueError(f'`format` should be either "tf" or "grain". Received: format={format}')
    data = np.asarray(data)
    n = len(data)
    if start_index:
        if start_index < 0:
            raise ValueError(f"`start_index` must be 0 or greater. Received: start_index={start_index}")
        if start_index >= n:
            raise ValueError(f"`start_index` must be lower than the length of the data. Received: "
                             f"start_index={start_index}, for data of length {n}")
    if end_index:
        if start_index and end_index <= start_index:
            raise ValueError(f"`end_index` must be higher than `start_index`. Received: start_index={start_index}, "
                             f"and end_index={end_index} ")
        if end_index >= n:
            raise ValueError(f"`end_index` must be lower than the length of the data. Received: "
                             f"end_index={end_index}, for data of length {n}")
        if end_index <= 0:
            raise ValueError(f"`end_index` must be higher than 0. Received: end_index={end_index}")
    for what, value in (("sampling_rate", sampling_rate), ("sequence_stride", sequence_stride)):
        if value <= 0:
            raise ValueError(f"`{what}` must be higher than 0. Received: {what}={value}")
        if value >= n:
            raise ValueError(f"`{what}` must be lower than the length of the data. Received: {what}={value}, "
                             f"for data of length {n}")
    start_index = start_index or 0
    end_index = n if end_index is None else end_index
    num_seqs = end_index - start_index - (sequence_length - 1) * sampling_rate
    if targets is not None:
        targets = np.asarray(targets)
        num_seqs = min(num_seqs, len(targets))
    starts = np.arange(0, max(num_seqs, 0), sequence_stride, dtype=np.int64)
    order = None
    if shuffle:
        if seed is None:
            seed = int(backend.rng("shuffle").integers(1_000_000))
        order = np.arange(len(starts))
        np.random.RandomState(seed).shuffle(order)
    ds = _Windows(data[start_index:end_index], None if targets is None else targets[start_index:end_index],
                  starts, sequence_length, sampling_rate, batch_size, shuffle, seed)
    if order is not None:
        ds._order = order
    return ds


# ------------------------------------------------------------------------------------------- directories
def _walk_files(directory, follow_links, formats):
    """(root, file name) of the files under directory ending in one of formats, in Keras's sorted order."""
    for root, _, files in sorted(os.walk(directory, followlinks=follow_links), key=lambda t: t[0]):
        for name in sorted(files):
            if name.lower().endswith(formats):
                yield root, name


def index_directory(directory, labels, formats, class_names=None, shuffle=True, seed=None, follow_links=False,
                    verbose=True):
    """(file_paths, labels or None, class_names) as Keras indexes a directory: one class per sub-directory
    (sorted, or in the order of class_names) with labels='inferred', else every file under directory in
    sorted order. Shuffled with ``np.random.RandomState(seed)`` when shuffle."""
    if not os.path.isdir(directory):
        raise ValueError(f"The `directory` argument should be a directory; received {directory!r}.")
    if labels == "inferred":
        subdirs = [d for d in sorted(os.listdir(directory))
                   if os.path.isdir(os.path.join(directory, d)) and not d.startswith(".")]
        if class_names is not None:
            if not set(class_names).issubset(subdirs):
                raise ValueError(f"The `class_names` passed did not match the names of the subdirectories of the "
                                 f"target directory. Expected: {subdirs} (or a subset of it), but received: "
                                 f"class_names={class_names}")
            subdirs = list(class_names)
    else:
        if class_names is not None:
            raise ValueError("When `labels=None` (no labels), argument `class_names` cannot be specified."
                             if labels is None else
                             "When argument `labels` is specified, argument `class_names` cannot be specified "
                             "(the `class_names` will be the sorted list of labels).")
        subdirs = [""]
    paths, found = [], []
    for k, sub in enumerate(subdirs):
        for root, name in _walk_files(os.path.join(directory, sub), follow_links, formats):
            paths.append(os.path.join(root, name))
            found.append(k)
    if labels == "inferred":
        labels, names = np.asarray(found, dtype=np.int32), list(subdirs)
    elif labels is None:
        names = None
    else:
        if len(labels) != len(paths):
            raise ValueError(f"Expected the lengths of `labels` to match the number of files in the target "
                             f"directory. len(labels) is {len(labels)} while we found {len(paths)} files in "
                             f"directory {directory}.")
        names = [str(v) for v in sorted(set(labels))]
        labels = np.asarray(labels)
    if verbose:
        print(f"Found {len(paths)} files." if labels is None else
              f"Found {len(paths)} files belonging to {len(names)} classes.")
    if shuffle:
        if seed is None:
            seed = int(backend.rng("shuffle").integers(1_000_000))
        perm = np.arange(len(paths))
        np.random.RandomState(seed).shuffle(perm)
        paths = [paths[i] for i in perm]
        if labels is not None:
            labels = labels[perm]
    return paths, labels, names


def _check_split(validation_split, subset, shuffle, seed):
    if subset not in (None, "training", "validation", "both"):
        raise ValueError(f'`subset` must be either "training", "validation" or "both", received: {subset}')
    if validation_split and not 0 < validation_split < 1:
        raise ValueError(f"`validation_split` must be between 0 and 1, received: {validation_split}")
    if (validation_split or subset) and not (validation_split and subset):
        raise ValueError("If `subset` is set, `validation_split` must be set, and inversely.")
    if validation_split and shuffle and seed is None:
        raise ValueError("If using `validation_split` and shuffling the data, you must provide a `seed` "
                         "argument, to make sure that there is no overlap between the training and "
                         "validation subset.")


def _subset(paths, labels, validation_split, subset, verbose=True):
    if not validation_split:
        return paths, labels
    n_val = int(validation_split * len(paths))
    if subset == "training":
        if verbose:
            print(f"Using {len(paths) - n_val} files for training.")
        cut = slice(None, len(paths) - n_val)
    else:
        if verbose:
            print(f"Using {n_val} files for validation.")
        cut = slice(len(paths) - n_val, None)
    return paths[cut], None if labels is None else labels[cut]


def _encode_labels(labels, label_mode, num_classes):
    if labels is None or label_mode is None:
        return None
    if label_mode == "int":
        return np.asarray(labels, dtype=np.int32)
    if label_mode == "binary":
        return np.asarray(labels, dtype=np.float32)[:, None]
    one_hot = np.zeros((len(labels), num_classes), dtype=np.float32)
    one_hot[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)] = 1.0
    return one_hot


def _check_labels(labels, label_mode):
    if labels not in ("inferred", None) and not isinstance(labels, (list, tuple, np.ndarray)):
        raise ValueError("`labels` argument should be a list/tuple of integer labels, of the same size as the "
                         "number of files in the target directory. If you wish to infer the labels from the "
                         "subdirectory names in the target directory, pass `labels='inferred'`. If you wish "
                         "to get a dataset that only contains files (no labels), pass `labels=None`.")
    if label_mode not in ("int", "categorical", "binary", None):
        raise ValueError('`label_mode` argument must be one of "int", "categorical", "binary", or None. '
                         f"Received: label_mode={label_mode}")
    return None if labels is None else label_mode


def _from_directory(make, directory, labels, label_mode, class_names, formats, shuffle, seed,
                    validation_split, subset, follow_links, verbose):
    """Index, split and wrap: make(paths, encoded_labels, class_names, seed) -> dataset (one, or two for
    subset='both')."""
    label_mode = _check_labels(labels, label_mode)
    _check_split(validation_split, subset, shuffle, seed)
    if seed is None:
        seed = int(backend.rng("shuffle").integers(1_000_000))
    paths, found, names = index_directory(directory, labels, formats, class_names, shuffle, seed, follow_links,
                                          verbose)
    if label_mode == "binary" and names is not None and len(names) != 2:
        raise ValueError(f'When passing `label_mode="binary"`, there must be exactly 2 class_names. Received: '
                         f"class_names={names}")
    if not paths:
        raise ValueError(f"No files found in directory {directory}. Allowed formats: {formats}")

    def build(which):
        p, l = _subset(paths, found, validation_split, which, verbose)
        if not p:
            raise ValueError(f"No files found in the {which} subset of directory {directory}.")
        return make(p, _encode_labels(l, label_mode, len(names) if names else 0), names, seed)
    if subset == "both":
        return build("training"), build("validation")
    return build(subset)


class _FileBatches(_Batches):
    def __init__(self, paths, labels, class_names, loader, batch_size, shuffle, seed):
        self.file_paths, self.class_names, self._loader = list(paths), class_names, loader
        super().__init__(len(paths), labels, batch_size, shuffle, seed)

    def _load(self, idx):
        return self._loader([self.file_paths[i] for i in idx])


def image_dataset_from_directory(directory, labels="inferred", label_mode="int", class_names=None, color_mode="rgb",
                                 batch_size=32, image_size=(256, 256), shuffle=True, seed=None, validation_split=None,
                                 subset=None, interpolation="bilinear", follow_links=False,
                                 crop_to_aspect_ratio=False, pad_to_aspect_ratio=False, data_format=None,
                                 format="tf", verbose=True):
    """A PyDataset of ``(images, labels)`` batches from ``directory/<class>/*.{png,jpg,jpeg,bmp,gif}``,
    as ``keras.utils.image_dataset_from_directory`` (Pillow required).

    Images are float32 arrays (batch, height, width, channels) with values 0-255, resized to image_size with
    ``lamina.ops.image.resize`` (after a centre crop with crop_to_aspect_ratio, or zero padding with
    pad_to_aspect_ratio); channels 1, 3 or 4 for color_mode 'grayscale', 'rgb', 'rgba'. Labels: int32
    indices (label_mode='int'), one-hot float32 ('categorical'), float32 (n, 1) ('binary', two classes),
    or none (labels=None or label_mode=None: batches are images only). subset='both' returns
    (training, validation).
    """
    from .image_utils import _pil, smart_resize
    channels = {"grayscale": 1, "rgb": 3, "rgba": 4}.get(color_mode)
    if channels is None:
        raise ValueError(f'`color_mode` must be one of {{"rgb", "rgba", "grayscale"}}. Received: '
                         f"color_mode={color_mode}")
    if crop_to_aspect_ratio and pad_to_aspect_ratio:
        raise ValueError("Only one of `crop_to_aspect_ratio` and `pad_to_aspect_ratio` can be set to `True`.")
    if format not in ("tf", "grain"):
        raise ValueError(f'`format` should be either "tf" or "grain". Received: format={format}')
    data_format = data_format or "channels_last"
    height, width = int(image_size[0]), int(image_size[1])
    Image = _pil()
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]

    def load_one(path):
        with Image.open(path) as img:
            arr = np.asarray(img.convert(mode), dtype=np.float32)
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if crop_to_aspect_ratio:
            return smart_resize(arr, (height, width), interpolation=interpolation)
        if pad_to_aspect_ratio:
            h, w = arr.shape[:2]
            ph, pw = max(h, int(round(w * height / width))), max(w, int(round(h * width / height)))
            top, left = (ph - h) // 2, (pw - w) // 2
            padded = np.zeros((ph, pw, channels), np.float32)
            padded[top:top + h, left:left + w] = arr
            arr = padded
        from .. import ops
        return backend.to_numpy(ops.image.resize(arr, (height, width), interpolation=interpolation).data)

    def loader(paths):
        batch = np.stack([load_one(p) for p in paths])
        return np.transpose(batch, (0, 3, 1, 2)) if data_format == "channels_first" else batch

    def make(paths, labels_, names, seed_):
        return _FileBatches(paths, labels_, names, loader, batch_size, shuffle, seed_)
    return _from_directory(make, directory, labels, label_mode, class_names, IMAGE_FORMATS, shuffle, seed,
                           validation_split, subset, follow_links, verbose)


def text_dataset_from_directory(directory, labels="inferred", label_mode="int", class_names=None, batch_size=32,
                                max_length=None, shuffle=True, seed=None, validation_split=None, subset=None,
                                follow_links=False, format="tf", verbose=True):
    """A PyDataset of ``(texts, labels)`` batches from ``directory/<class>/*.txt``, as
    ``keras.utils.text_dataset_from_directory``. Texts are a NumPy object array of Python ``str`` (Keras
    gives tf.string bytes), decoded as UTF-8 and cut to max_length characters; TextVectorization takes
    them as they are. Labels as in image_dataset_from_directory."""
    if format not in ("tf", "grain"):
        raise ValueError(f'`format` should be either "tf" or "grain". Received: format={format}')

    def loader(paths):
        out = np.empty(len(paths), dtype=object)
        for i, p in enumerate(paths):
            with open(p, encoding="utf-8", errors="replace") as f:
                text = f.read()
            out[i] = text if max_length is None else text[:max_length]
        return out

    def make(paths, labels_, names, seed_):
        return _FileBatches(paths, labels_, names, loader, batch_size, shuffle, seed_)
    return _from_directory(make, directory, labels, label_mode, class_names, (".txt",), shuffle, seed,
                           validation_split, subset, follow_links, verbose)


def read_wav(path):
    """(samples, channels) float32 in [-1, 1) and the sampling rate of a PCM WAV file (8, 16, 24 or 32 bit),
    scaled as tf.audio.decode_wav scales (by 2**(bits-1), 8-bit data centred on 128)."""
    with wave.open(str(path), "rb") as w:
        channels, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
        raw = w.readframes(w.getnframes())
    if width == 1:
        data = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width in (2, 4):
        data = np.frombuffer(raw, "<i2" if width == 2 else "<i4").astype(np.float32) / float(2 ** (8 * width - 1))
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        value = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        value = np.where(value >= 2 ** 23, value - 2 ** 24, value)
        data = value.astype(np.float32) / float(2 ** 23)
    else:
        raise ValueError(f"{path}: unsupported WAV sample width of {width} bytes.")
    return data.reshape(-1, channels), rate


def audio_dataset_from_directory(directory, labels="inferred", label_mode="int", class_names=None, batch_size=32,
                                 sampling_rate=None, output_sequence_length=None, ragged=False, shuffle=True,
                                 seed=None, validation_split=None, subset=None, follow_links=False, verbose=True):
    """A PyDataset of ``(audio, labels)`` batches from ``directory/<class>/*.wav``, as
    ``keras.utils.audio_dataset_from_directory``. Audio is float32 (batch, samples, channels) in [-1, 1),
    cut or zero-padded to output_sequence_length, else zero-padded to the longest clip of the batch;
    ``ragged=True`` gives a list of (samples, channels) arrays instead. ``sampling_rate``, when given,
    must equal each file's rate (lamina does not resample: a ValueError names the file)."""
    if ragged and output_sequence_length is not None:
        raise ValueError("Cannot set both `ragged` and `output_sequence_length`")
    if sampling_rate is not None and (not isinstance(sampling_rate, int) or sampling_rate <= 0):
        raise ValueError(f"`sampling_rate` should be a positive integer. Received: sampling_rate={sampling_rate}")

    def load_one(path):
        audio, rate = read_wav(path)
        if sampling_rate is not None and rate != sampling_rate:
            raise ValueError(f"{path} is sampled at {rate} Hz, not sampling_rate={sampling_rate}; lamina does "
                             "not resample audio.")
        if output_sequence_length is not None:
            audio = audio[:output_sequence_length]
        return audio

    def loader(paths):
        clips = [load_one(p) for p in paths]
        if ragged:
            return clips
        length = output_sequence_length or max(len(c) for c in clips)
        out = np.zeros((len(clips), length, max(c.shape[1] for c in clips)), np.float32)
        for i, c in enumerate(clips):
            out[i, :len(c), :c.shape[1]] = c
        return out

    def make(paths, labels_, names, seed_):
        return _FileBatches(paths, labels_, names, loader, batch_size, shuffle, seed_)
    return _from_directory(make, directory, labels, label_mode, class_names, (".wav",), shuffle, seed,
                           validation_split, subset, follow_links, verbose)
