"""How a batch travels to ``train_step`` / ``test_step`` / ``predict_step``, with Keras's helper names.

A batch is ``x`` alone when there are no targets, ``(x, y)`` with targets, ``(x, y, sample_weight)`` only
when sample weights are given. An ``x`` that is itself a list or tuple (several inputs) is wrapped in a
1-tuple, ``(x,)``, so that unpacking never mistakes its second input for the targets.
"""

__all__ = ["pack_x_y_sample_weight", "unpack_x_y_sample_weight"]


def pack_x_y_sample_weight(x, y=None, sample_weight=None):
    """The batch structure ``Model.fit`` hands to ``train_step``: ``x``, ``(x,)``, ``(x, y)`` or
    ``(x, y, sample_weight)``, as ``keras.utils.pack_x_y_sample_weight``."""
    if y is None:
        return (x,) if isinstance(x, (list, tuple)) else x
    if sample_weight is None:
        return (x, y)
    return (x, y, sample_weight)


def unpack_x_y_sample_weight(data):
    """``(x, y, sample_weight)`` from a batch, None for what it lacks, as
    ``keras.utils.unpack_x_y_sample_weight``: a list counts as a tuple; anything else is ``x`` alone."""
    if isinstance(data, list):
        data = tuple(data)
    if not isinstance(data, tuple):
        return data, None, None
    if len(data) == 1:
        return data[0], None, None
    if len(data) == 2:
        return data[0], data[1], None
    if len(data) == 3:
        return data[0], data[1], data[2]
    raise ValueError("Data is expected to be in format `x`, `(x,)`, `(x, y)`, or `(x, y, sample_weight)`, "
                     f"found: {data!r:.200}")
