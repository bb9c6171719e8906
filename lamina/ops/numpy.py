"""``keras.ops.numpy``: NumPy's API over lamina Tensors, differentiable where Keras's is.

The functions live in two files by family: ``_np_math.py`` (elementwise math, comparisons, logic,
reductions and statistics, creation) and ``_np_array.py`` (shape manipulation, joining and splitting,
indexing, sorting and searching, products and contractions). Each is a few lines over the
differentiable kernels in the family modules beside them (math.py, manipulation.py, ...).
"""
from ._np_math import *  # noqa: F401,F403
from ._np_math import __all__ as _math_all
from ._np_array import *  # noqa: F401,F403
from ._np_array import __all__ as _array_all

__all__ = sorted(set(_math_all) | set(_array_all))
