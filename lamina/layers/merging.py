"""Merge layers: combine a list of tensors into one (Add, Subtract, Multiply, Average, Maximum, Minimum,
Concatenate, Dot), and their functional forms (``add([a, b])``, ``concatenate([a, b])``, ...).

They join the branches of a functional model: a residual connection adds a block's input to its output,
a two-tower model concatenates two feature vectors, a siamese network takes the dot product of two
embeddings. None of them has weights.

Elementwise layers broadcast as Keras does: the batch axes must agree, the other axes are aligned from
the right and a size-1 axis stretches (an input of lower rank gets size-1 axes inserted after the batch
axis). Masks: the output mask is the logical AND of the input masks (Add, Subtract, Average); Multiply,
Maximum and Minimum follow Keras 3: a masked entry does not take part (it acts as 1 for Multiply, and
is skipped by Maximum / Minimum), and when every input has a mask the output mask is their OR;
Concatenate concatenates the masks; Dot returns none.
"""
import numpy as np

from .. import ops
from ..backend import get_array_module
from ..tensor import Tensor
from .layer import Layer

__all__ = ["Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum", "Concatenate", "Dot",
           "add", "subtract", "multiply", "average", "maximum", "minimum", "concatenate", "dot"]


def _is_shape_list(input_shape):
    return isinstance(input_shape, (list, tuple)) and len(input_shape) > 0 and \
        all(s is None or isinstance(s, (list, tuple)) for s in input_shape)


def _mask_data(m):
    return m.data if isinstance(m, Tensor) else m


def _combine_masks(masks, how):
    """AND / OR of the masks that are not None (None when all are None); bool Tensors broadcast."""
    present = [_mask_data(m) for m in masks if m is not None]
    if not present:
        return None
    xp = get_array_module(*present)
    out = present[0].astype(bool)
    for m in present[1:]:
        out = (xp.logical_and if how == "and" else xp.logical_or)(out, m)
    return Tensor(out)


def _mask_like(mask, x):
    """A mask over the leading axes of x (Keras's (N, T) for (N, T, D)) as an array that broadcasts to x."""
    m = _mask_data(mask)
    return m.reshape(m.shape + (1,) * (x.ndim - m.ndim)) if m.ndim < x.ndim else m


def _const(x, value):
    """A 0-d Tensor of value in x's dtype, on x's device (keeps float32 float32)."""
    xp = get_array_module(x.data)
    return Tensor(xp.asarray(value, dtype=x.dtype))


class Merge(Layer):
    """Base of the elementwise merge layers: shape checks, Keras broadcasting, mask combination."""

    _min_inputs = 1

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    # ----- shapes
    def _check_inputs(self, input_shape):
        what = type(self).__name__
        if not _is_shape_list(input_shape):
            raise ValueError(f"{what} layer '{self.name}' should be called on a list of inputs. "
                             f"Received: input_shape={input_shape} (not a list of shapes)")
        if len(input_shape) < self._min_inputs:
            raise ValueError(f"{what} layer '{self.name}' should be called on a list of at least "
                             f"{self._min_inputs} inputs. Received: {len(input_shape)} input(s)")
        ranks = {len(s) for s in input_shape if s is not None}
        if 0 in ranks and ranks != {0}:   # (the batch axis is read below; scalars only merge with scalars, as Keras)
            raise ValueError(f"{what} layer '{self.name}': every input needs a batch axis (rank >= 1). "
                             f"Received: input_shape={[None if s is None else tuple(s) for s in input_shape]}")

    def _elementwise_shape(self, shape1, shape2, all_shapes):
        """Broadcast of two shapes without their batch axis (aligned from the right), or ValueError."""
        if shape1 is None or shape2 is None:
            return None
        if len(shape1) < len(shape2):
            shape1, shape2 = shape2, shape1
        out = list(shape1[:len(shape1) - len(shape2)])
        for i, j in zip(shape1[len(shape1) - len(shape2):], shape2):
            if i is None or j is None:
                out.append(None)
            elif i == 1 or j == 1 or i == j:
                out.append(j if i == 1 else i)
            else:
                raise ValueError(f"{type(self).__name__} layer '{self.name}': inputs have incompatible shapes. "
                                 f"Expected shapes that are equal or broadcastable (after the batch axis), "
                                 f"received shapes {[tuple(s) for s in all_shapes]}")
        return tuple(out)

    def compute_output_shape(self, input_shape):
        self._check_inputs(input_shape)
        shapes = [None if s is None else tuple(s) for s in input_shape]
        if all(s == () for s in shapes):
            return ()
        out = None if shapes[0] is None else shapes[0][1:]
        for s in shapes[1:]:
            out = self._elementwise_shape(out, None if s is None else s[1:], shapes)
        batch = {s[0] for s in shapes if s is not None} - {None}
        if len(batch) > 1:
            raise ValueError(f"{type(self).__name__} layer '{self.name}': cannot merge tensors with different batch "
                             f"sizes. Received shapes {shapes}")
        if out is None:
            return None
        return ((batch.pop() if batch else None),) + tuple(out)

    def build(self, input_shape):
        self.compute_output_shape(input_shape)  # validates
        self.built = True

    # ----- forward
    def call(self, inputs, mask=None):
        inputs = list(inputs)
        # later calls are checked after the batch axis only: once built, a batch of 1 broadcasts against the
        # others as in Keras (whose batch check runs in build), e.g. a learned array expanded to batch 1
        self.compute_output_shape([(None,) + tuple(x.shape[1:]) for x in inputs])
        rank = max(x.ndim for x in inputs)
        # Keras inserts the missing axes right after the batch axis (not in front of it)
        inputs = [ops.reshape(x, (x.shape[0],) + (1,) * (rank - x.ndim) + tuple(x.shape[1:])) if x.ndim < rank else x
                  for x in inputs]
        masks = list(mask) if isinstance(mask, (list, tuple)) else [None] * len(inputs)
        return self._merge_function(inputs, masks)

    def _merge_function(self, inputs, masks):  # pragma: no cover - abstract
        raise NotImplementedError

    def compute_mask(self, inputs, mask=None):
        if mask is None:
            return None
        if not isinstance(mask, (list, tuple)):
            raise ValueError(f"{type(self).__name__} layer '{self.name}': mask should be a list (one per input). "
                             f"Received: mask={mask}")
        return _combine_masks(mask, "and")


class Add(Merge):
    """Elementwise sum of a list of inputs (a residual connection: ``add([x, block(x)])``).

    Input: a list of tensors of the same (or broadcastable) shape. Output: that shape.
    Forward: y = x_1 + ... + x_n. Backward: dy flows unchanged to every input (summed over broadcast axes).
    """

    def _merge_function(self, inputs, masks):
        out = inputs[0]
        for x in inputs[1:]:
            out = ops.add(out, x)
        return out


class Subtract(Merge):
    """Elementwise difference of exactly two inputs: y = x_1 - x_2. Backward: dy and -dy."""

    _min_inputs = 2

    def _check_inputs(self, input_shape):
        super()._check_inputs(input_shape)
        if len(input_shape) != 2:
            raise ValueError(f"Subtract layer '{self.name}' should be called on exactly 2 inputs. "
                             f"Received: {len(input_shape)} inputs with shapes {list(input_shape)}")

    def _merge_function(self, inputs, masks):
        return ops.subtract(inputs[0], inputs[1])


class Average(Merge):
    """Elementwise mean of a list of inputs: y = (x_1 + ... + x_n) / n. Backward: dy / n to each."""

    def _merge_function(self, inputs, masks):
        out = inputs[0]
        for x in inputs[1:]:
            out = ops.add(out, x)
        return ops.divide(out, _const(out, len(inputs)))


class _OrMaskMerge(Merge):
    """Keras 3's rule for Multiply / Maximum / Minimum: when every input has a mask, the output mask is the OR."""

    def compute_mask(self, inputs, mask=None):
        if isinstance(mask, (list, tuple)) and mask and all(m is not None for m in mask):
            return _combine_masks(mask, "or")
        return super().compute_mask(inputs, mask)


class Multiply(_OrMaskMerge):
    """Elementwise product of a list of inputs (gating: ``multiply([x, sigmoid_gate])``).

    Forward: y = x_1 * ... * x_n; a masked entry counts as 1, and where every input is masked y = 0.
    Backward: dx_i = dy * prod_{j != i} x_j.
    """

    def _merge_function(self, inputs, masks):
        out, union = None, None
        every = all(m is not None for m in masks)
        for x, m in zip(inputs, masks):
            if m is not None:
                m = _mask_like(m, x)
                x = ops.where(m, x, _const(x, 1))
                if every:
                    union = m if union is None else get_array_module(m).logical_or(union, m)
            out = x if out is None else ops.multiply(out, x)
        if union is not None:
            out = ops.where(union, out, _const(out, 0))
        return out


class _ExtremumMerge(_OrMaskMerge):
    _op = None

    def _merge_function(self, inputs, masks):
        fn = type(self)._op
        out, out_mask = inputs[0], None if masks[0] is None else _mask_like(masks[0], inputs[0])
        for x, m in zip(inputs[1:], masks[1:]):
            m = None if m is None else _mask_like(m, x)
            if m is not None:  # a masked entry of x takes the running value: it cannot win
                x = ops.where(m, x, out)
            if out_mask is not None:  # a masked running value takes x's
                out = ops.where(out_mask, out, x)
            out_mask = None if m is None or out_mask is None else get_array_module(m).logical_or(out_mask, m)
            out = fn(out, x)
        return out


class Maximum(_ExtremumMerge):
    """Elementwise maximum of a list of inputs. Backward: dy goes to the input that is largest
    (split evenly on exact ties); masked entries are skipped."""

    _op = staticmethod(ops.math.maximum)


class Minimum(_ExtremumMerge):
    """Elementwise minimum of a list of inputs. Backward: dy goes to the smallest input (ties split)."""

    _op = staticmethod(ops.math.minimum)


class Concatenate(Layer):
    """Joins a list of inputs along ``axis`` (default the last: feature vectors side by side).

    Input: tensors whose shapes agree except on ``axis``. Output: the same shape with
    ``sum(shape_i[axis])`` on ``axis``. Backward: dy is split back into the pieces.
    Mask: each input's mask (all True where absent) is spread over the input's shape, the masks are
    concatenated on ``axis`` and reduced with any() over the last axis, as Keras does.
    """

    def __init__(self, axis=-1, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
            raise ValueError(f"Concatenate '{self.name}': axis must be an int. Received: axis={axis!r}")
        self.axis = int(axis)
        self.supports_masking = True

    def _check(self, input_shape):
        if not _is_shape_list(input_shape) or len(input_shape) < 1:
            raise ValueError(f"Concatenate layer '{self.name}' should be called on a list of at least 1 input. "
                             f"Received: input_shape={input_shape}")
        shapes = [tuple(s) for s in input_shape if s is not None]
        if not shapes:
            return
        msg = (f"Concatenate layer '{self.name}' requires inputs with matching shapes except for the "
               f"concatenation axis {self.axis}. Received: input_shape={shapes}")
        ranks = {len(s) for s in shapes}
        if len(ranks) != 1:
            raise ValueError(msg)
        rank = ranks.pop()
        if not -rank <= self.axis < rank:
            raise ValueError(f"Concatenate layer '{self.name}': axis={self.axis} is out of range for inputs of "
                             f"rank {rank}. Received: input_shape={shapes}")
        axis = self.axis % rank
        for a in range(rank):
            if a != axis and len({s[a] for s in shapes if s[a] is not None}) > 1:
                raise ValueError(msg)

    def build(self, input_shape):
        self._check(input_shape)
        self.built = True

    def call(self, inputs):
        inputs = list(inputs)
        self._check([tuple(x.shape) for x in inputs])
        return ops.concatenate(inputs, axis=self.axis)

    def compute_output_shape(self, input_shape):
        self._check(input_shape)
        shapes = [tuple(s) for s in input_shape]
        axis = self.axis % len(shapes[0])
        out = []
        for a in range(len(shapes[0])):
            dims = [s[a] for s in shapes]
            if a == axis:
                out.append(None if any(d is None for d in dims) else int(sum(dims)))
            else:
                known = [d for d in dims if d is not None]
                out.append(known[0] if known else None)
        return tuple(out)

    def compute_mask(self, inputs, mask=None):
        if mask is None or not isinstance(mask, (list, tuple)) or all(m is None for m in mask):
            return None
        pieces = []
        for x, m in zip(inputs, mask):
            xp = get_array_module(x.data)
            if m is None:
                pieces.append(xp.ones(x.shape, bool))
            else:
                pieces.append(xp.broadcast_to(_mask_like(m, x), x.shape))
        xp = get_array_module(*pieces)
        return Tensor(xp.concatenate(pieces, axis=self.axis).any(axis=-1))


class Dot(Layer):
    """Dot product of two inputs along the given axes, per sample (a batched dot product).

    Args:
        axes: int, or a pair (axis in x1, axis in x2); never the batch axis 0.
        normalize: L2-normalise both inputs along those axes first, so the result is the cosine similarity.
    Input: [x1, x2] with equal sizes on the contracted axes. Output: x1's shape without its contracted
    axis, followed by x2's shape without its batch and contracted axes; (batch, 1) when nothing is left.
    Forward: y[b, i, j] = sum_k x1[b, i, k] x2[b, k, j] (axes moved into place, one batched matmul).
    Backward: the matmul's dx1 = dy x2^T, dx2 = x1^T dy, moved back.
    """

    def __init__(self, axes, normalize=False, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(axes, (int, np.integer)):
            if not isinstance(axes, (list, tuple)):
                raise ValueError(f"Dot '{self.name}': axes should be an int or a list of two ints. "
                                 f"Received: axes={axes!r}")
            if len(axes) != 2 or not all(isinstance(a, (int, np.integer)) for a in axes):
                raise ValueError(f"Dot '{self.name}': axes should contain two integers. Received: axes={axes!r}")
            axes = [int(a) for a in axes]
        else:
            axes = int(axes)
        self.axes = axes
        self.normalize = bool(normalize)
        self.supports_masking = True

    def _axes(self, shape1, shape2):
        pair = [self.axes, self.axes] if isinstance(self.axes, int) else list(self.axes)
        out = []
        for a, shape in zip(pair, (shape1, shape2)):
            if not -len(shape) <= a < len(shape) or a % len(shape) == 0:
                raise ValueError(f"Dot layer '{self.name}': axes={self.axes} must name a non-batch axis of each "
                                 f"input (1..rank-1). Received shapes {tuple(shape1)} and {tuple(shape2)}")
            out.append(a % len(shape))
        return out

    def _check(self, input_shape):
        if not _is_shape_list(input_shape) or len(input_shape) != 2:
            raise ValueError(f"Dot layer '{self.name}' should be called on a list of 2 inputs. "
                             f"Received: input_shape={input_shape}")
        s1, s2 = (tuple(s) for s in input_shape)
        a1, a2 = self._axes(s1, s2)
        if s1[a1] is not None and s2[a2] is not None and s1[a1] != s2[a2]:
            raise ValueError(f"Dot layer '{self.name}': incompatible input shapes: axis values {s1[a1]} (at axis "
                             f"{a1}) != {s2[a2]} (at axis {a2}). Full input shapes: {s1}, {s2}")
        if s1[0] is not None and s2[0] is not None and s1[0] != s2[0]:
            raise ValueError(f"Dot layer '{self.name}': the batch sizes differ. Received shapes {s1} and {s2}")
        return a1, a2

    def build(self, input_shape):
        self._check(input_shape)
        self.built = True

    def _l2_normalize(self, x, axis):
        # x / max(||x||, 1e-7), Keras's normalize (x * min(rsqrt(sum x^2), 1 / epsilon))
        ss = ops.sum(ops.square(x), axis=axis, keepdims=True)
        return ops.divide(x, ops.sqrt(ops.math.maximum(ss, _const(ss, 1e-14))))

    def call(self, inputs):
        x1, x2 = inputs
        a1, a2 = self._check([tuple(x1.shape), tuple(x2.shape)])
        if self.normalize:
            x1, x2 = self._l2_normalize(x1, a1), self._l2_normalize(x2, a2)
        rest1 = [i for i in range(1, x1.ndim) if i != a1]
        rest2 = [i for i in range(1, x2.ndim) if i != a2]
        n, k = x1.shape[0], x1.shape[a1]
        m = int(np.prod([x1.shape[i] for i in rest1], dtype=np.int64))
        p = int(np.prod([x2.shape[i] for i in rest2], dtype=np.int64))
        left = ops.reshape(ops.transpose(x1, [0] + rest1 + [a1]), (n, m, k))
        right = ops.reshape(ops.transpose(x2, [0, a2] + rest2), (n, k, p))
        out_shape = (n,) + tuple(x1.shape[i] for i in rest1) + tuple(x2.shape[i] for i in rest2)
        if len(out_shape) == 1:
            out_shape += (1,)
        return ops.reshape(ops.matmul(left, right), out_shape)

    def compute_output_shape(self, input_shape):
        a1, a2 = self._check(input_shape)
        s1, s2 = list(input_shape[0]), list(input_shape[1])
        s1.pop(a1)
        s2.pop(a2)
        s2.pop(0)
        out = s1 + s2
        if len(out) == 1:
            out += [1]
        return tuple(out)

    def compute_mask(self, inputs, mask=None):
        return None


def add(inputs, **kwargs):
    """Functional form of :class:`Add`: ``add([x1, x2])``."""
    return Add(**kwargs)(inputs)


def subtract(inputs, **kwargs):
    """Functional form of :class:`Subtract`."""
    return Subtract(**kwargs)(inputs)


def multiply(inputs, **kwargs):
    """Functional form of :class:`Multiply`."""
    return Multiply(**kwargs)(inputs)


def average(inputs, **kwargs):
    """Functional form of :class:`Average`."""
    return Average(**kwargs)(inputs)


def maximum(inputs, **kwargs):
    """Functional form of :class:`Maximum`."""
    return Maximum(**kwargs)(inputs)


def minimum(inputs, **kwargs):
    """Functional form of :class:`Minimum`."""
    return Minimum(**kwargs)(inputs)


def concatenate(inputs, axis=-1, **kwargs):
    """Functional form of :class:`Concatenate`: ``concatenate([x1, x2], axis=-1)``."""
    return Concatenate(axis=axis, **kwargs)(inputs)


def dot(inputs, axes=-1, normalize=False, **kwargs):
    """Functional form of :class:`Dot`: ``dot([x1, x2], axes=-1)``."""
    return Dot(axes=axes, normalize=normalize, **kwargs)(inputs)
