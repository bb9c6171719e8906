"""Arrays to batches: shuffling and batching; PyDataset (keras.utils.PyDataset) and its adapter."""
from .pipeline import *  # noqa: F401,F403
from .py_dataset import PyDataset, PyDatasetAdapter, Sequence  # noqa: F401
