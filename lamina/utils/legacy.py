"""``keras.utils.legacy``: the object (de)serialisation names Keras keeps there for old code; in lamina they
are the same functions as ``lamina.saving``'s (there is no older format to read)."""
from ..saving import deserialize_keras_object, serialize_keras_object  # noqa: F401

__all__ = ["serialize_keras_object", "deserialize_keras_object"]
