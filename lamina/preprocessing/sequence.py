"""``keras.preprocessing.sequence``: padding sequences to one length."""
from ..utils.data_utils import pad_sequences  # noqa: F401

__all__ = ["pad_sequences"]
