"""``keras.ops.nn``: activations, convolution and pooling, normalisation, losses and attention as functions."""
__all__ = []
