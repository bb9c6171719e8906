"""Fused recurrent sequence ops: SimpleRNN, LSTM and GRU over a whole sequence, with a hand-written
backward pass through time.

Why fused: a recurrent layer run as one small op per gate and per time step spends its time in Python,
not in arithmetic. Here each op walks the time axis once:

* forward: the input projection of ALL time steps is one matrix product, ``x (T*N, D) @ kernel``;
  then each step is one product ``h @ recurrent_kernel`` (all gates at once) plus in-place gate math;
* backward: one reverse loop over time, vectorised over batch and gates; the per-step gate gradients
  are written into one (T, N, G*u) buffer, and after the loop the kernel, recurrent kernel, bias and
  input gradients are each one large matrix product (or sum) over all steps.

The time loop keeps one core busy with small products and passes. Where BLAS runs two threads and the
inputs are wide (see _overlap), the input projection and the input gradient are cut into chunks of steps
that a second thread computes while the loop runs (lamina.threads.Overlap: the forward's chunks ahead of
the loop, the backward's behind it), and the loop's own products run on one core meanwhile.

Internally everything is time-major (T, N, ...) so that each step reads and writes contiguous blocks.
Masks follow Keras 3: a masked step (mask False) keeps the state unchanged, and its output is the
carried-forward state (``RNN(zero_output_for_mask=True)`` zeroes it afterwards, in the layer).
Gate orders and weight layouts are Keras's: LSTM i, f, c, o; GRU z, r, h.

Activations: 'tanh', 'sigmoid', 'hard_sigmoid', 'relu' and 'linear' are fused (the layers fall back to
a cell loop with autograd for any other activation).
"""
import numpy as np

from . import cuda_kernels as _cuda_kernels
from . import kernels as _kernels
from .. import backend, threads
from ..tensor import Op, Tensor
from .activations import sigmoid_inplace
from .math import mm_tn, relu_into, sum_rows

__all__ = ["simple_rnn", "lstm", "gru", "FUSED_ACTIVATIONS"]

FUSED_ACTIVATIONS = ("tanh", "sigmoid", "hard_sigmoid", "relu", "linear")


def _act_name(act):
    """The fused name of an activation given as a name or as one of lamina's activation functions."""
    if act is None:
        return "linear"
    name = act if isinstance(act, str) else getattr(act, "_keras_name", getattr(act, "__name__", None))
    return name if name in FUSED_ACTIVATIONS else None


def _act_(xp, name, a, src=None):
    """Apply activation ``name`` to array ``a`` IN PLACE (a may be a view) and return it; with ``src``, to
    src, written into a. Sigmoid in place on float32 takes the kernels' own vectorised exp (kernels.sigmoid_tanh),
    tanh too where NumPy's is not vectorised (machines without AVX-512)."""
    if name == "tanh":
        if src is None and _kernels.sigmoid_tanh(a, True):
            return a
        xp.tanh(a if src is None else src, out=a)
        return a
    if src is not None:
        a[...] = src
    if name == "sigmoid":
        if _kernels.sigmoid_tanh(a, False):
            return a
        # relatively exact down to sigmoid's subnormal range, where a gate is 0 in all but name (the form
        # (tanh(x/2) + 1) / 2 would cancel for x < 0)
        sigmoid_inplace(xp, a, subnormals=False)
    elif name == "hard_sigmoid":
        a *= 1.0 / 6.0
        a += 0.5
        xp.clip(a, 0.0, 1.0, out=a)
    elif name == "relu":
        relu_into(xp, a, a)
    elif name != "linear":
        raise ValueError(f"recurrent ops: activation {name!r} is not fused. Fused: {', '.join(FUSED_ACTIVATIONS)}.")
    return a


def _dact_into(xp, name, y, out):
    """Derivative of activation ``name`` written with its OUTPUT y (what the forward pass saved), into
    ``out`` (y's shape; either may be a view). The backward loops take each step's derivatives here, while
    that step's gate block is in cache, rather than in whole-sequence passes over the (N, T, G*u) buffers
    before the loop (LSTM backward 55 -> 32 us a step at (64, 4 x 128); lstm step 47.7 -> 46.8 ms)."""
    if name == "tanh":
        xp.multiply(y, y, out=out)
        xp.subtract(1.0, out, out=out)
    elif name == "sigmoid":
        xp.subtract(1.0, y, out=out)
        out *= y
    elif name == "hard_sigmoid":
        xp.multiply((y > 0.0) & (y < 1.0), 1.0 / 6.0, out=out)
    elif name == "relu":
        xp.greater(y, 0.0, out=out)
    else:
        out[...] = 1.0
    return out


def _start(xp, g, like):
    """The gradient flowing into the last step's state: a copy of ``g`` (the loop adds to it in place), or
    zeros of one step's state when no gradient reached that output (the op sets ``none_grads``)."""
    return xp.zeros(like.shape[:1] + like.shape[2:], like.dtype) if g is None else g.copy()


# Rows (steps x batch) in one chunk of the input projection and input gradient when those run beside the
# time loop (see _Inputs): small enough that the loop soon has its first chunk, large enough to run near
# the GEMM rate (at a batch of 64: 10 steps, the first one 5).
_CHUNK_ROWS = 640


def _chunks(T, N, go_backwards, overlap):
    """The steps cut into consecutive chunks [s, e) (in time order) and the order the time loop reaches them:
    one chunk of every step without a second core, else chunks of about _CHUNK_ROWS rows, the one the loop
    reaches first half as long (the loop waits for it)."""
    if not overlap:
        return [(0, T)], [0]
    L = max(1, round(_CHUNK_ROWS / max(N, 1)))
    cuts = [0, min(T, max(1, L // 2))]
    while cuts[-1] < T:
        cuts.append(min(T, cuts[-1] + L))
    if go_backwards:
        cuts = [T - c for c in reversed(cuts)]
    chunks = list(zip(cuts, cuts[1:]))
    order = list(range(len(chunks)))
    return chunks, order[::-1] if go_backwards else order


def _overlap(xp, N, T, D, u):
    """Whether the input projection and input gradient may run on a second core beside the time loop
    (threads.Overlap, which also checks that a second core is free): on the CPU, for sequences of at least
    two chunks, with inputs at least twice as wide as the units, N*T*D*u >= 2^24, and steps of at least 4096
    states (NumPy keeps the GIL through passes of up to 500 elements, and the second thread needs it between
    chunks). The loop's own products run on one core meanwhile, ~1.8x slower at (64, 128) x (128, 512);
    measured against that (fwd + bwd, LSTM / GRU / SimpleRNN): (N, T, D, u) = (64, 80, 256, 128) 0.85-0.95,
    while (32, 50, 128, 256), (128, 30, 64, 64) and (8, 200, 16, 32) ran 1.1-1.6x slower."""
    return None if (xp is np and T > 1 and D >= 2 * u and N * u >= 4096 and N * T >= 2 * _CHUNK_ROWS and
                    N * T * D * u >= 1 << 24) else False


class _Inputs:
    """The input projection x_t W (+ b) of every step into time-major rows, and the time-major rows x2 of x
    (kept for the backward products).

    Use as a ``with`` block around the time loop, calling ``ready(t)`` at each step. With a second core
    (threads.Overlap) the projection is cut into chunks of steps (_chunks): the loop computes the first
    and a second thread the others while the loop runs (the loop computes any it reaches first); else it
    is one product, computed when the loop starts. xw (N, T, G*u) is the projection, a view of time-major
    memory."""

    def __init__(self, xp, x, kernel, bias, go_backwards, units):
        N, T, D = x.shape
        self.xp, self.x, self.kernel, self.bias, self.N, self.T = xp, x, kernel, bias, N, T
        self.x2 = xp.empty((T * N, D), x.dtype)
        self.xw2 = xp.empty((T * N, kernel.shape[1]), np.result_type(x.dtype, kernel.dtype))
        self.xw = self.xw2.reshape(T, N, kernel.shape[1]).transpose(1, 0, 2)  # (widths spelt out: N may be 0)
        self.overlap = threads.Overlap(self.run, _overlap(xp, N, T, D, units))
        self.chunks, self.order = _chunks(T, N, go_backwards, self.overlap.active)
        # chunk k by the step where the forward loop enters it, which is also where the backward loop (the
        # reverse order) leaves it
        self.starts = {self.chunks[k][1] - 1 if go_backwards else self.chunks[k][0]: k for k in self.order}

    def run(self, k):
        s, e = self.chunks[k]
        rows = slice(s * self.N, e * self.N)
        self.x2[rows].reshape(e - s, self.N, self.x2.shape[1])[...] = self.x[:, s:e].transpose(1, 0, 2)
        out = self.xp.matmul(self.x2[rows], self.kernel, out=self.xw2[rows])
        if self.bias is not None:
            out += self.bias

    def __enter__(self):
        self.overlap.__enter__()
        for k in self.order:
            self.overlap.post(k)
        return self

    def __exit__(self, *exc):
        try:
            return self.overlap.__exit__(*exc)
        finally:  # the op keeps this object for backward, which needs x2, not x or the projection
            self.x = self.xw = self.xw2 = None

    def ready(self, t):
        k = self.starts.get(t)
        if k is not None:
            self.overlap.need(k)


def _buffer(xp, N, T, k, dtype):
    """An (N, T, k) array laid out time-major in memory: [:, t] is one contiguous (N, k) block (element-wise
    passes over a step's gates ran ~20-40% faster there than over the strided rows of a batch-major one)."""
    return xp.empty((T, N, k), dtype).transpose(1, 0, 2)


def _carried(xp, N, T, u, dtype, h0, go_backwards):
    """The carried states of a sequence as two (N, T, u) views of one time-major (T + 1, N, u) buffer that
    holds the initial state too: ``H[:, t]``, the state step t leaves, and ``Hp[:, t]``, the one it reads,
    which is H shifted by one step in processing order. No step copies the state it reads (as a separate
    buffer of read states did: ~3 us a step at (64, 128)), and the rows of Hp stay one contiguous block
    for the recurrent kernel's gradient."""
    buf = xp.empty((T + 1, N, u), dtype)
    buf[T if go_backwards else 0] = 0 if h0 is None else h0
    H, Hp = (buf[:T], buf[1:]) if go_backwards else (buf[1:], buf[:T])
    return H.transpose(1, 0, 2), Hp.transpose(1, 0, 2)


def _rows(a):
    """The (T*N, k) rows, in (t, n) order, of an (N, T, k) array backed by time-major memory (a view)."""
    return a.transpose(1, 0, 2).reshape(-1, a.shape[2])


def _sequence_out(xp, H, go_backwards):
    """Keras returns the outputs in processing order: reversed in time when go_backwards."""
    return xp.ascontiguousarray(H[:, ::-1]) if go_backwards else H


def _check(opname, x, kernel, recurrent_kernel, gates, bias_shapes, bias, states, mask):
    if x.ndim != 3:
        raise ValueError(f"{opname}: inputs must be 3-D (batch, timesteps, features). Received shape {tuple(x.shape)}")
    N, T, D = x.shape
    u = recurrent_kernel.shape[0]
    if kernel.shape != (D, gates * u) or recurrent_kernel.shape != (u, gates * u):
        raise ValueError(f"{opname}: kernel must have shape {(D, gates * u)} and recurrent_kernel {(u, gates * u)} "
                         f"for inputs of {D} features and {u} units. Received {tuple(kernel.shape)} and "
                         f"{tuple(recurrent_kernel.shape)}")
    if bias is not None and tuple(bias.shape) not in bias_shapes:
        raise ValueError(f"{opname}: bias must have shape {' or '.join(map(str, bias_shapes))}. "
                         f"Received {tuple(bias.shape)}")
    for s in states:
        if s is not None and tuple(s.shape) != (N, u):
            raise ValueError(f"{opname}: initial states must have shape {(N, u)}. Received {tuple(s.shape)}")
    if mask is not None and tuple(mask.shape) != (N, T):
        raise ValueError(f"{opname}: mask must have shape (batch, timesteps) = {(N, T)}. Received {tuple(mask.shape)}")
    if T == 0:
        raise ValueError(f"{opname}: the sequence must have at least one time step. Received shape {tuple(x.shape)}")


def _masks(xp, x, mask, go_backwards):
    """Masks (N, T, 1) as bools (for the forward's exact where) and as 0/1 (routing gradients backward), and
    the order of the steps."""
    mt = mf = None
    if mask is not None:
        mt = mask.astype(bool)[:, :, None]
        mf = mt.astype(x.dtype)
    T = x.shape[1]
    return mt, mf, (range(T - 1, -1, -1) if go_backwards else range(T))


class _Grads:
    """Gradients of x, kernel, recurrent kernel and bias from the backward loop's per-step gradients, as
    products over the time-major rows of every step.

    dZ (N, T, G*u): gradients of the input projections; ``pairs``: (A, B) of (T*N, k) rows (_rows) whose
    products A^T B, side by side, make the recurrent kernel's gradient (e.g. the rows of Hp and dZ: the state
    each step read, and the gradient of its recurrent product). Use as a ``with`` block around the backward
    loop, calling ``done(t)`` after each step: with a second core (as in _Inputs) the input gradient of each
    chunk of steps the loop has finished is computed on it meanwhile; the kernels' gradients (sums over
    every step) are one product each after the loop, on every core."""

    def __init__(self, op, xp, inputs, dZ, pairs):
        self.op, self.xp, self.inputs, self.N = op, xp, inputs, inputs.N
        self.dz2 = _rows(dZ)
        self.pairs = pairs
        self.gx2 = xp.empty(inputs.x2.shape, self.dz2.dtype) if op.needs_grad[0] else None
        self.kT = inputs.kernel.T
        self.overlap = threads.Overlap(self.run, None if inputs.overlap.active and self.gx2 is not None else False)

    def run(self, k):
        if self.gx2 is not None:
            s, e = self.inputs.chunks[k]
            rows = slice(s * self.N, e * self.N)
            self.xp.matmul(self.dz2[rows], self.kT, out=self.gx2[rows])

    def __enter__(self):
        self.overlap.__enter__()
        return self

    def __exit__(self, kind, error, tb):
        if kind is None:
            try:
                self.overlap.finish()
            except BaseException as e:
                self.overlap.__exit__(type(e), e, e.__traceback__)
                raise
        return self.overlap.__exit__(kind, error, tb)

    def done(self, t):
        k = self.inputs.starts.get(t)  # the backward loop has finished chunk k
        if k is not None:
            self.overlap.post(k)

    def result(self):
        """(gx (N, T, D) or None, kernel gradient or None, recurrent kernel gradient or None, bias gradient
        (the column sums of dZ) or None), the kernels' after the ``with`` block."""
        xp, N, need = self.xp, self.N, self.op.needs_grad
        gx = None if self.gx2 is None else self.gx2.reshape(self.inputs.T, N, self.gx2.shape[1]).transpose(1, 0, 2)
        gk = mm_tn(xp, self.inputs.x2, self.dz2) if need[1] else None
        grk = None
        if need[2]:
            grk = [mm_tn(xp, a, b) for a, b in self.pairs]
            grk = grk[0] if len(grk) == 1 else xp.concatenate(grk, axis=1)
        gb = sum_rows(xp, self.dz2) if need[3] else None
        return gx, gk, grk, gb


class SimpleRNNSeq(Op):
    """h_t = act(x_t W + b + h_{t-1} U) over the whole sequence."""

    half_via_float32 = True  # float16 through float32 BLAS (tensor.Op)
    none_grads = True  # the sequence output often gets no gradient (return_sequences=False)

    def forward(self, x, kernel, recurrent_kernel, bias, h0, mask):
        xp = self.xp
        _check("simple_rnn", x, kernel, recurrent_kernel, 1, [(recurrent_kernel.shape[0],)], bias, [h0], mask)
        N, T, D = x.shape
        u = recurrent_kernel.shape[0]
        inputs = _Inputs(xp, x, kernel, bias, self.go_backwards, u)
        mt, mf, steps = _masks(xp, x, mask, self.go_backwards)
        xw, act = inputs.xw, self.activation
        H, Hp = _carried(xp, N, T, u, x.dtype, h0, self.go_backwards)  # carried states = outputs; read states
        Hn = H if mask is None else _buffer(xp, N, T, u, x.dtype)  # new (unmasked) states: what act' reads
        h = Hp[:, steps[0]]
        with inputs:
            for t in steps:
                inputs.ready(t)
                a = xp.matmul(h, recurrent_kernel, out=Hn[:, t])
                a += xw[:, t]
                _act_(xp, act, a)
                if mask is not None:
                    H[:, t] = xp.where(mt[:, t], a, h)
                h = H[:, t]
        self.saved = (inputs, recurrent_kernel, mf, Hn, Hp, steps)
        return _sequence_out(xp, H, self.go_backwards), h.copy()

    def backward(self, gH, gh):
        xp = self.xp
        inputs, recurrent_kernel, mf, Hn, Hp, steps = self.saved
        if self.go_backwards and gH is not None:
            gH = gH[:, ::-1]
        dZ = _buffer(xp, *Hn.shape, Hn.dtype)  # each step's derivative, then its pre-activation gradient
        rkT = xp.ascontiguousarray(recurrent_kernel.T)
        dh = _start(xp, gh, Hn)
        grads = _Grads(self, xp, inputs, dZ, [(_rows(Hp), _rows(dZ))])
        with grads:
            for t in reversed(steps):
                if gH is not None:
                    dh += gH[:, t]
                dz = _dact_into(xp, self.activation, Hn[:, t], dZ[:, t])
                if mf is None:
                    dz *= dh
                    dh = dz @ rkT
                else:
                    dn = dh * mf[:, t]   # gradient into the new state; the rest flows to the carried one
                    dh -= dn
                    dz *= dn
                    dh += dz @ rkT
                grads.done(t)
        gx, gk, grk, gb = grads.result()
        return gx, gk, grk, gb, (dh if self.needs_grad[4] else None), None


def _swap_last_gates(xp, a, u):
    """Columns (..., 4u) in gate order i, f, c, o <-> i, f, o, c (the swap is its own inverse)."""
    return xp.concatenate([a[..., :2 * u], a[..., 3 * u:], a[..., 2 * u:3 * u]], axis=-1)


class LSTMSeq(Op):
    """Keras LSTM (gates i, f, c, o) over the whole sequence.

    Inside the op the gates are ordered i, f, o, c (the weights' columns swapped on the way in, their
    gradients' on the way out), and each step's gate activations are stored gate-major, (4, N, u): every
    gate is then one contiguous (N, u) block and the three gates of the recurrent activation one contiguous
    (3, N, u) block. NumPy runs an element-wise pass over contiguous operands in one inner loop, while one
    over the column slices of an (N, 4u) block builds a strided iteration (~3-5 us more per pass at
    (64, 128)), and a step makes some twenty such passes. The one recurrent product per step stays (N, 4u)
    (four per-gate products cost more than they save); adding the input part writes it gate-major, and the
    backward loop writes each step's pre-activation gradients back as an (N, 4u) row block of dZ, in the
    layout of the after-the-loop products."""

    half_via_float32 = True  # float16 through float32 BLAS (tensor.Op)
    none_grads = True  # the sequence output often gets no gradient (return_sequences=False)

    def forward(self, x, kernel, recurrent_kernel, bias, h0, c0, mask):
        xp = self.xp
        u = recurrent_kernel.shape[0]
        _check("lstm", x, kernel, recurrent_kernel, 4, [(4 * u,)], bias, [h0, c0], mask)
        N, T, D = x.shape
        kernel, recurrent_kernel = _swap_last_gates(xp, kernel, u), _swap_last_gates(xp, recurrent_kernel, u)
        bias = None if bias is None else _swap_last_gates(xp, bias, u)
        # the bias is added to each step's recurrent product (a pass over (N, 4u) in cache) rather than to
        # the projection (one more pass over (T*N, 4u) in memory: ~0.3 ms slower in all at (64, 80, 256)
        # -> 128 units, also when the second thread makes that pass)
        inputs = _Inputs(xp, x, kernel, None, self.go_backwards, u)
        mt, mf, steps = _masks(xp, x, mask, self.go_backwards)
        xw4 = inputs.xw2.reshape(T, N, 4, u).transpose(0, 2, 1, 3)  # (T, 4, N, u) view
        rec = xp.empty((N, 4 * u), np.result_type(x.dtype, recurrent_kernel.dtype))  # one step's h U
        rec4 = rec.reshape(N, 4, u).transpose(1, 0, 2)
        ract, act = self.recurrent_activation, self.activation
        Gs = xp.empty((T, 4, N, u), x.dtype)    # gate activations i, f, o, g, gate-major per step
        H, Hp = _carried(xp, N, T, u, x.dtype, h0, self.go_backwards)  # carried h (= outputs); h each step read
        C, Cp = _carried(xp, N, T, u, x.dtype, c0, self.go_backwards)  # carried c; c each step read
        TC = _buffer(xp, N, T, u, x.dtype)      # act(new c)
        ig = xp.empty((N, u), x.dtype)
        h, c = Hp[:, steps[0]], Cp[:, steps[0]]
        # the step's gate arithmetic as one compiled call where it runs (kernels.py: float32, Keras's default
        # activations, every operand of that dtype, NumPy's exp and tanh not vectorised on this machine)
        fits = act == "tanh" and ract == "sigmoid" and rec.dtype == x.dtype and (bias is None or bias.dtype == x.dtype)
        cell = _cuda_kernels.kernels_for(xp).lstm_cell(Gs) if fits else None
        if cell is not None:
            b = bias if bias is not None else xp.empty(4 * u, x.dtype)   # (not read without a bias)
        with inputs:
            # on a GPU, without a mask: the whole loop in cuda_kernels (raw addresses, no view or array call a step)
            fast = cell is not None and mt is None and xp is not np and T > 0
            if fast:
                for t in steps:
                    inputs.ready(t)
                fast = _cuda_kernels.lstm_forward_loop(inputs.xw2, recurrent_kernel, bias, Gs, H, Hp, C, Cp, TC, steps)
                if fast:
                    h, c = H[:, steps[-1]], C[:, steps[-1]]
            for t in (() if fast else steps):
                inputs.ready(t)
                xp.matmul(h, recurrent_kernel, out=rec)  # one product for all four gates
                if cell is not None:
                    cn, hn = C[:, t], H[:, t]
                    cell(rec, inputs.xw2[t * N:(t + 1) * N], b, bias is not None, c, Gs[t], cn, TC[:, t], hn)
                else:
                    if bias is not None:
                        rec += bias
                    z = xp.add(rec4, xw4[t], out=Gs[t])      # + the input part, laid out gate-major
                    _act_(xp, ract, z[:3])
                    _act_(xp, act, z[3])
                    i, f, o, g = z
                    cn = xp.multiply(f, c, out=C[:, t])
                    cn += xp.multiply(i, g, out=ig)
                    tc = _act_(xp, act, TC[:, t], cn)
                    hn = xp.multiply(o, tc, out=H[:, t])
                if mt is not None:
                    cn[...] = xp.where(mt[:, t], cn, c)
                    hn[...] = xp.where(mt[:, t], hn, h)
                h, c = hn, cn
        self.saved = (inputs, recurrent_kernel, mf, Gs, Hp, Cp, TC, steps)
        return _sequence_out(xp, H, self.go_backwards), h.copy(), c.copy()

    def backward(self, gH, gh, gc):
        xp = self.xp
        inputs, recurrent_kernel, mf, Gs, Hp, Cp, TC, steps = self.saved
        N, T, u = Hp.shape
        dtype = inputs.x2.dtype
        ract, act = self.recurrent_activation, self.activation
        if self.go_backwards and gH is not None:
            gH = gH[:, ::-1]
        dZ = _buffer(xp, N, T, 4 * u, dtype)  # pre-activation gradients of every gate at every step
        dA = xp.empty((4, N, u), dtype)       # one step's: gate-major, then written into dZ
        D = xp.empty((4, N, u), dtype)        # one step's gate derivatives
        dtc = xp.empty((N, u), dtype)         # one step's gradient into the new cell state
        rkT = xp.ascontiguousarray(recurrent_kernel.T)
        dh = _start(xp, gh, Hp)
        dc = _start(xp, gc, Hp)
        grads = _Grads(self, xp, inputs, dZ, [(_rows(Hp), _rows(dZ))])
        # the step's gate arithmetic as one compiled call where it can run (kernels.py): Keras's default
        # activations, one dtype throughout (dh and dc stay contiguous arrays of it every step)
        fits = act == "tanh" and ract == "sigmoid" and dh.dtype == dc.dtype == rkT.dtype == dtype
        cell = _cuda_kernels.kernels_for(xp).lstm_cell_grad(Gs) if fits else None
        dc_next = xp.empty((N, u), dtype) if cell is not None else None
        if cell is not None and mf is not None:
            dhn, dcn = xp.empty((N, u), dtype), xp.empty((N, u), dtype)
        with grads:
            fast = None   # on a GPU, without a mask: the whole loop in cuda_kernels (as the forward's)
            if cell is not None and mf is None and xp is not np:
                fast = _cuda_kernels.lstm_backward_loop(dh, dc, gH, rkT, Gs, TC, Cp, dZ, steps[::-1], grads.done)
            if fast is not None:
                dh, dc = fast
            for t in (() if fast is not None else reversed(steps)):
                if gH is not None:
                    dh += gH[:, t]
                if cell is not None:
                    dz = dZ[:, t]
                    if mf is None:
                        cell(dh, dc, Gs[t], TC[:, t], Cp[:, t], dz, dc_next)
                        dh = dz @ rkT
                        dc, dc_next = dc_next, dc
                    else:  # the step's rows go through the cell, the masked rows' gradients to the carried state
                        m = mf[:, t]
                        xp.multiply(dh, m, out=dhn)
                        dh -= dhn
                        xp.multiply(dc, m, out=dcn)
                        dc -= dcn
                        cell(dhn, dcn, Gs[t], TC[:, t], Cp[:, t], dz, dc_next)
                        dh += dz @ rkT
                        dc += dc_next
                    grads.done(t)
                    continue
                g_t = Gs[t]
                i, f, o, g = g_t
                tc = TC[:, t]
                if mf is not None:
                    m = mf[:, t]
                    dhn = dh * m
                    dh -= dhn      # what stays flows to the carried state
                    dcn = dc * m
                    dc -= dcn
                else:
                    dhn, dcn = dh, dc
                _dact_into(xp, act, tc, dtc)  # dcn + dhn o act'(c_t)
                dtc *= o
                dtc *= dhn
                dtc += dcn
                dcn = dtc
                xp.multiply(dcn, g, out=dA[0])
                xp.multiply(dcn, Cp[:, t], out=dA[1])
                xp.multiply(dhn, tc, out=dA[2])
                xp.multiply(dcn, i, out=dA[3])
                _dact_into(xp, ract, g_t[:3], D[:3])
                _dact_into(xp, act, g, D[3])
                dz = dZ[:, t]  # (N, 4u): this step's row block of the after-the-loop products
                xp.multiply(dA, D, out=dz.reshape(N, 4, u).transpose(1, 0, 2))
                if mf is None:
                    dh = dz @ rkT
                    dc = dcn * f
                else:
                    dh += dz @ rkT
                    dc += dcn * f
                grads.done(t)
        gx, gk, grk, gb = grads.result()
        gk, grk, gb = (None if a is None else _swap_last_gates(xp, a, u) for a in (gk, grk, gb))
        return (gx, gk, grk, gb, dh if self.needs_grad[4] else None, dc if self.needs_grad[5] else None, None)


class GRUSeq(Op):
    """Keras GRU (gates z, r, h) over the whole sequence; reset_after True (PyTorch's form) or False.

    As in the LSTM op, each step's z and r are stored gate-major, (2, N, u), so that the element-wise
    passes over them run on contiguous blocks; the recurrent product stays one GEMM per step, and the
    backward loop writes each step's gradients back as (N, 3u) row blocks of dX (and dR) for the
    after-the-loop products."""

    half_via_float32 = True  # float16 through float32 BLAS (tensor.Op)
    none_grads = True  # the sequence output often gets no gradient (return_sequences=False)

    def forward(self, x, kernel, recurrent_kernel, bias, h0, mask):
        xp = self.xp
        u = recurrent_kernel.shape[0]
        ra = self.reset_after
        _check("gru", x, kernel, recurrent_kernel, 3, [(2, 3 * u)] if ra else [(3 * u,)], bias, [h0], mask)
        N, T, D = x.shape
        b_in = None if bias is None else (bias[0] if ra else bias)
        b_rec = None if (bias is None or not ra) else bias[1]
        inputs = _Inputs(xp, x, kernel, b_in, self.go_backwards, u)
        mt, mf, steps = _masks(xp, x, mask, self.go_backwards)
        xw3 = inputs.xw2.reshape(T, N, 3, u).transpose(0, 2, 1, 3)  # (T, 3, N, u) view
        ract, act = self.recurrent_activation, self.activation
        ZR = xp.empty((T, 2, N, u), x.dtype)    # z and r, gate-major per step
        HH = _buffer(xp, N, T, u, x.dtype)      # candidate state
        RH = _buffer(xp, N, T, u, x.dtype)      # reset_after: h U_h + b'_h (before the reset); else r * h_{t-1}
        H, Hp = _carried(xp, N, T, u, x.dtype, h0, self.go_backwards)  # carried states = outputs; read states
        h = Hp[:, steps[0]]
        dt = np.result_type(x.dtype, recurrent_kernel.dtype)
        if ra:
            rec = xp.empty((N, 3 * u), dt)      # one step's h U (+ b')
            rec3 = rec.reshape(N, 3, u).transpose(1, 0, 2)
        else:
            uzr = xp.ascontiguousarray(recurrent_kernel[:, :2 * u])
            uh = xp.ascontiguousarray(recurrent_kernel[:, 2 * u:])
            rec = xp.empty((N, 2 * u), dt)      # one step's h U_zr
            rec3 = rec.reshape(N, 2, u).transpose(1, 0, 2)
        with inputs:
            for t in steps:
                inputs.ready(t)
                zr = ZR[t]
                hh = HH[:, t]
                xp.matmul(h, recurrent_kernel if ra else uzr, out=rec)  # one product for the gates
                if ra and b_rec is not None:
                    rec += b_rec
                xp.add(rec3[:2], xw3[t, :2], out=zr)
                _act_(xp, ract, zr)
                if ra:
                    rh = RH[:, t]
                    rh[...] = rec3[2]
                    xp.multiply(zr[1], rh, out=hh)
                else:
                    xp.multiply(zr[1], h, out=RH[:, t])
                    xp.matmul(RH[:, t], uh, out=hh)
                hh += xw3[t, 2]
                _act_(xp, act, hh)
                hn = H[:, t]
                xp.subtract(h, hh, out=hn)  # h_t = z h_{t-1} + (1 - z) hh = hh + z (h_{t-1} - hh)
                hn *= zr[0]
                hn += hh
                if mt is not None:
                    hn[...] = xp.where(mt[:, t], hn, h)
                h = hn
        self.saved = (inputs, recurrent_kernel, mf, ZR, HH, RH, Hp, steps)
        return _sequence_out(xp, H, self.go_backwards), h.copy()

    def backward(self, gH, gh):
        xp = self.xp
        inputs, recurrent_kernel, mf, ZR, HH, RH, Hp, steps = self.saved
        dtype = inputs.x2.dtype
        N, T, u = Hp.shape
        ra = self.reset_after
        if self.go_backwards and gH is not None:
            gH = gH[:, ::-1]
        dzr = xp.empty((2, N, u), dtype)   # one step's gradients of z's and r's pre-activations
        dzr_t = xp.empty((2, N, u), dtype)  # and their activation's derivatives
        dah = xp.empty((N, u), dtype)      # of the candidate's pre-activation
        dhh_t = xp.empty((N, u), dtype)
        dX = _buffer(xp, N, T, 3 * u, dtype)          # gradient of the input projections
        dR = _buffer(xp, N, T, 3 * u, dtype) if ra else None  # of h U + b' (reset_after)
        rkT = xp.ascontiguousarray(recurrent_kernel.T)
        uzrT = xp.ascontiguousarray(recurrent_kernel[:, :2 * u].T)
        uhT = xp.ascontiguousarray(recurrent_kernel[:, 2 * u:].T)
        dh = _start(xp, gh, Hp)
        if ra:
            pairs = [(_rows(Hp), _rows(dR))]
        else:  # the candidate's recurrent product reads r * h_{t-1}, saved at every step
            dX2 = _rows(dX)
            pairs = [(_rows(Hp), dX2[:, :2 * u]), (_rows(RH), dX2[:, 2 * u:])]
        grads = _Grads(self, xp, inputs, dX, pairs)
        # the step's gate arithmetic as one compiled call where it can run (kernels.py): reset_after with
        # Keras's default activations, one dtype throughout (dh stays a contiguous array of it)
        cell = (_kernels.gru_cell_grad(ZR) if (ra and self.activation == "tanh"
                                               and self.recurrent_activation == "sigmoid"
                                               and dh.dtype == rkT.dtype == dtype) else None)
        dprev = xp.empty((N, u), dtype) if cell is not None else None
        dn = xp.empty((N, u), dtype) if cell is not None and mf is not None else None
        with grads:
            for t in reversed(steps):
                if gH is not None:
                    dh += gH[:, t]
                if cell is not None:
                    dr = dR[:, t]
                    if mf is None:
                        cell(dh, ZR[t], HH[:, t], Hp[:, t], RH[:, t], dX[:, t], dr, dprev)
                        dh = dr @ rkT
                    else:  # the step's rows go through the cell, the masked rows' gradient to the carried state
                        xp.multiply(dh, mf[:, t], out=dn)
                        dh -= dn
                        cell(dn, ZR[t], HH[:, t], Hp[:, t], RH[:, t], dX[:, t], dr, dprev)
                        dh += dr @ rkT
                    dh += dprev
                    grads.done(t)
                    continue
                h_prev = Hp[:, t]
                zr = ZR[t]
                z, r, hh = zr[0], zr[1], HH[:, t]
                if mf is not None:
                    dn = dh * mf[:, t]
                    dh -= dn        # what stays flows to the carried state
                else:
                    dn = dh
                xp.subtract(1.0, z, out=dah)
                dah *= dn
                dah *= _dact_into(xp, self.activation, hh, dhh_t)  # gradient of the candidate's pre-activation
                xp.subtract(h_prev, hh, out=dzr[0])
                dzr[0] *= dn
                dprev = dn * z
                if ra:
                    xp.multiply(dah, RH[:, t], out=dzr[1])
                else:
                    drh = dah @ uhT                 # gradient of r * h_{t-1}
                    xp.multiply(drh, h_prev, out=dzr[1])
                dzr *= _dact_into(xp, self.recurrent_activation, zr, dzr_t)
                dx = dX[:, t]
                dx3 = dx.reshape(N, 3, u).transpose(1, 0, 2)
                dx3[:2] = dzr
                dx3[2] = dah
                if ra:
                    dr = dR[:, t]
                    dr3 = dr.reshape(N, 3, u).transpose(1, 0, 2)
                    dr3[:2] = dzr
                    xp.multiply(dah, r, out=dr3[2])
                    rec = dr @ rkT
                else:
                    rec = dx[:, :2 * u] @ uzrT
                    rec += drh * r
                rec += dprev
                if mf is not None:
                    dh += rec
                else:
                    dh = rec
                grads.done(t)
        gx, gk, grk, gb = grads.result()
        if ra and gb is not None:
            gb = xp.stack([gb, sum_rows(xp, _rows(dR))])
        return gx, gk, grk, gb, (dh if self.needs_grad[4] else None), None


def _names(opname, activation, recurrent_activation=None):
    out = []
    for a in (activation, recurrent_activation):
        n = _act_name(a)
        if n is None:
            raise ValueError(f"{opname}: activation {a!r} has no fused form. Fused activations: "
                             f"{', '.join(FUSED_ACTIVATIONS)} (the layers use a cell loop for others).")
        out.append(n)
    return out


def _state(s, i=0):
    if s is None:
        return None
    if isinstance(s, (list, tuple)):
        return s[i] if i < len(s) else None
    return s if i == 0 else None


def _mask_on(mask, x):
    """A (N, T) mask on x's device: masks are constants, so a host mask for a device sequence is moved."""
    if mask is None:
        return None
    return backend.to_device(mask.data if isinstance(mask, Tensor) else mask, backend.get_array_module(x))


def simple_rnn(x, kernel, recurrent_kernel, bias=None, initial_state=None, mask=None, go_backwards=False,
               activation="tanh"):
    """Fully-connected recurrence over a sequence (Keras SimpleRNN).

    Args: x (N, T, D); kernel (D, u); recurrent_kernel (u, u); bias (u,) or None; initial_state
    (N, u) or None (zeros); mask (N, T) bool or None; go_backwards: read the sequence from the end.
    Forward: h_t = act(x_t W + b + h_{t-1} U); masked steps keep h_{t-1}.
    Backward: da_t = (dh_t) act'(a_t); dh_{t-1} = da_t U^T (+ dh_t where masked);
    dW = sum_t x_t^T da_t, dU = sum_t h_{t-1}^T da_t, db = sum_t da_t (one product each, after the loop).
    Returns (sequence (N, T, u) of the states in processing order, last state (N, u)).
    """
    (act, _) = _names("simple_rnn", activation, "linear")
    return SimpleRNNSeq.apply(x, kernel, recurrent_kernel, bias, _state(initial_state), _mask_on(mask, x),
                              go_backwards=bool(go_backwards), activation=act)


def lstm(x, kernel, recurrent_kernel, bias=None, initial_state=None, mask=None, go_backwards=False,
         activation="tanh", recurrent_activation="sigmoid"):
    """Long short-term memory over a sequence (Keras LSTM; gates i, f, c, o).

    Args: x (N, T, D); kernel (D, 4u); recurrent_kernel (u, 4u); bias (4u,) or None;
    initial_state (h0, c0) each (N, u), or None; mask (N, T) bool; go_backwards.
    Forward: [i, f, g, o] = [ract, ract, act, ract](x_t W + h_{t-1} U + b);
    c_t = f c_{t-1} + i g; h_t = o act(c_t); masked steps keep (h, c).
    Backward: dc_t += dh_t o act'(c_t); di = dc g, df = dc c_{t-1}, dg = dc i, do = dh act(c_t), each times
    its activation's derivative; dh_{t-1} = dz U^T, dc_{t-1} = dc_t f.
    Returns (sequence (N, T, u), h_T (N, u), c_T (N, u)).
    """
    act, ract = _names("lstm", activation, recurrent_activation)
    return LSTMSeq.apply(x, kernel, recurrent_kernel, bias, _state(initial_state, 0), _state(initial_state, 1),
                         _mask_on(mask, x), go_backwards=bool(go_backwards), activation=act, recurrent_activation=ract)


def gru(x, kernel, recurrent_kernel, bias=None, initial_state=None, mask=None, go_backwards=False,
        activation="tanh", recurrent_activation="sigmoid", reset_after=True):
    """Gated recurrent unit over a sequence (Keras GRU; gates z, r, h).

    Args: x (N, T, D); kernel (D, 3u); recurrent_kernel (u, 3u); bias (2, 3u) (input and recurrent rows)
    when reset_after, else (3u,); initial_state (N, u); mask (N, T) bool; go_backwards.
    Forward: z, r = ract(x W_zr + b_zr + h U_zr [+ b'_zr]);
    reset_after: hh = act(x W_h + b_h + r (h U_h + b'_h))   (PyTorch's formulation)
    else:        hh = act(x W_h + b_h + (r h) U_h);
    h_t = z h_{t-1} + (1 - z) hh; masked steps keep h.
    Backward: dhh = dh (1 - z), dz = dh (h_{t-1} - hh), dh_{t-1} = dh z + (recurrent products)^T, each
    gate gradient times its activation's derivative; weights after the loop in few products.
    Returns (sequence (N, T, u), h_T (N, u)).
    """
    act, ract = _names("gru", activation, recurrent_activation)
    return GRUSeq.apply(x, kernel, recurrent_kernel, bias, _state(initial_state), _mask_on(mask, x),
                        go_backwards=bool(go_backwards), activation=act, recurrent_activation=ract,
                        reset_after=bool(reset_after))
