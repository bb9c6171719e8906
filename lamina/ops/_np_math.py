"""Part of lamina.ops.numpy (see numpy.py)."""
__all__ = []
