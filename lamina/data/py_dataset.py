"""``keras.utils.PyDataset`` (alias ``Sequence``) and the adapter that feeds one to fit/evaluate/predict.

A PyDataset gives batches by index: ``__getitem__(i)`` returns ``x``, ``(x,)``, ``(x, y)`` or
``(x, y, sample_weight)`` (a list is read as that tuple, a dict as ``x``), and ``__len__`` (or the
``num_batches`` property; None for an endless dataset) says how many there are. fit() calls
``on_epoch_begin()`` / ``on_epoch_end()`` around each epoch and, with ``shuffle=True`` (fit's default),
visits the batches of a finite dataset in a new random order each epoch, as Keras does.

``workers`` > 1 loads batches ahead in that many threads (at most ``max_queue_size`` waiting), in order.
``use_multiprocessing=True`` is accepted but threads are used: processes would need the dataset pickled,
and lamina never pickles. Loading that releases the GIL (file reads, image decoding, NumPy) overlaps
with training; pure-Python batch code does not.
"""
import itertools
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from .. import backend

__all__ = ["PyDataset", "Sequence", "PyDatasetAdapter"]


class PyDataset:
    """Base class for datasets that give batches by index. Subclasses define ``__getitem__`` and ``__len__``
    (or ``num_batches``), and call ``super().__init__(**kwargs)`` so that ``workers``,
    ``use_multiprocessing`` and ``max_queue_size`` reach this class."""

    def __init__(self, workers=1, use_multiprocessing=False, max_queue_size=10):
        self._workers = workers
        self._use_multiprocessing = use_multiprocessing
        self._max_queue_size = max_queue_size

    def _warn_if_super_not_called(self):
        missing = False
        for attr, default in (("_workers", 1), ("_use_multiprocessing", False), ("_max_queue_size", 10)):
            if not hasattr(self, attr):
                setattr(self, attr, default)
                missing = True
        if missing:
            warnings.warn("Your `PyDataset` class should call `super().__init__(**kwargs)` in its constructor. "
                          "`**kwargs` can include `workers`, `use_multiprocessing`, `max_queue_size`. Do not pass "
                          "these arguments to `fit()`, as they will be ignored.", stacklevel=3)

    @property
    def workers(self):
        self._warn_if_super_not_called()
        return self._workers

    @workers.setter
    def workers(self, value):
        self._workers = value

    @property
    def use_multiprocessing(self):
        self._warn_if_super_not_called()
        return self._use_multiprocessing

    @use_multiprocessing.setter
    def use_multiprocessing(self, value):
        self._use_multiprocessing = value

    @property
    def max_queue_size(self):
        self._warn_if_super_not_called()
        return self._max_queue_size

    @max_queue_size.setter
    def max_queue_size(self, value):
        self._max_queue_size = value

    def __getitem__(self, index):
        raise NotImplementedError

    @property
    def num_batches(self):
        """The number of batches, or None for an endless dataset (default: ``len(self)``)."""
        if hasattr(self, "__len__"):
            return len(self)
        raise NotImplementedError("You need to implement the `num_batches` property:\n\n"
                                  "@property\ndef num_batches(self):\n  return ...")

    def __iter__(self):
        try:
            n = self.num_batches
        except NotImplementedError:
            n = None
        for index in (range(n) if n is not None else itertools.count()):
            yield self[index]

    def on_epoch_begin(self):
        """Called at the start of every epoch."""

    def on_epoch_end(self):
        """Called at the end of every epoch."""


Sequence = PyDataset


def standardize_batch(batch):
    """A PyDataset batch as a tuple (x,), (x, y) or (x, y, sample_weight)."""
    if isinstance(batch, dict):
        return (batch,)
    if isinstance(batch, list):
        batch = tuple(batch)
    if not isinstance(batch, tuple):
        return (batch,)
    if len(batch) not in (1, 2, 3):
        raise ValueError("PyDataset.__getitem__() must return a tuple or a dict. If a tuple, it must be ordered "
                         "either (input,) or (inputs, targets) or (inputs, targets, sample_weights). "
                         f"Received: {str(batch)[:100]}... of type {type(batch)}")
    return batch


class PyDatasetAdapter:
    """Iterates a PyDataset once per epoch: on_epoch_begin, the batches (shuffled order when asked, loaded
    ahead by ``workers`` threads), on_epoch_end. ``class_weight_fn(y, sample_weight)`` adds class weights."""

    def __init__(self, dataset, shuffle=False, class_weight_fn=None):
        self.dataset = dataset
        self.shuffle = bool(shuffle)
        self.class_weight_fn = class_weight_fn

    def __len__(self):
        n = self.dataset.num_batches
        if n is None:
            raise TypeError("an endless PyDataset has no length")
        return int(n)

    def _standardize(self, batch):
        if not isinstance(batch, (tuple, list, dict)):
            # x alone goes to train_step as it came, as Keras passes a dataset's lone tensor (keras.io's DCGAN
            # does ops.concatenate([generated, real_images]) on it); there is no y to weigh
            return batch
        batch = standardize_batch(batch)
        if self.class_weight_fn is not None:
            if len(batch) == 3:
                raise ValueError("You cannot specify `class_weight` and `sample_weight` at the same time.")
            if len(batch) == 2:
                batch = batch + (self.class_weight_fn(batch[1], None),)
        return batch

    def _indices(self):
        n = self.dataset.num_batches
        if n is None:
            return itertools.count()
        if self.shuffle:
            return iter(backend.rng("shuffle").permutation(int(n)).tolist())
        return iter(range(int(n)))

    def __iter__(self):
        ds = self.dataset
        ds.on_epoch_begin()
        workers = int(getattr(ds, "_workers", 1) or 1)
        try:
            if workers <= 1:
                for i in self._indices():
                    yield self._standardize(ds[i])
                return
            ahead = max(int(getattr(ds, "_max_queue_size", 10) or 1), workers)
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="lamina-pydataset") as pool:
                indices, pending = self._indices(), deque()
                try:
                    for i in itertools.islice(indices, ahead):
                        pending.append(pool.submit(ds.__getitem__, i))
                    while pending:
                        batch = pending.popleft().result()
                        for i in itertools.islice(indices, 1):
                            pending.append(pool.submit(ds.__getitem__, i))
                        yield self._standardize(batch)
                finally:
                    for f in pending:
                        f.cancel()
        finally:
            ds.on_epoch_end()

