"""``keras.ops.linalg``: linear algebra, differentiable where Keras's is."""
__all__ = []
