"""Arrays to batches: shuffling and batching."""
from .pipeline import *  # noqa: F401,F403
