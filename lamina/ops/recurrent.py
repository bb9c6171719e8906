"""Fused recurrent sequence ops: SimpleRNN, LSTM and GRU over a whole sequence, with a hand-written
backward pass through time.

Why fused: a recurrent layer run as one small op per gate and per time step spends its time in Python,
not in arithmetic. Here each op walks the time axis once:

* forward: the input projection of ALL time steps is one matrix product, ``x (T*N, D) @ kernel``;
  then each step is one product ``h @ recurrent_kernel`` (all gates at once) plus in-place gate math;
* backward: one reverse loop over time, vectorised over batch and gates; the per-step gate gradients
  are written into one (T, N, G*u) buffer, and after the loop the kernel, recurrent kernel, bias and
  input gradients are each one large matrix product (or sum) over all steps.

Internally everything is time-major (T, N, ...) so that each step reads and writes contiguous blocks.
Masks follow Keras 3: a masked step (mask False) keeps the state unchanged, and its output is the
carried-forward state (``RNN(zero_output_for_mask=True)`` zeroes it afterwards, in the layer).
Gate orders and weight layouts are Keras's: LSTM i, f, c, o; GRU z, r, h.

Activations: 'tanh', 'sigmoid', 'hard_sigmoid', 'relu' and 'linear' are fused (the layers fall back to
a cell loop with autograd for any other activation).
"""
from ..tensor import Op

__all__ = ["simple_rnn", "lstm", "gru", "FUSED_ACTIVATIONS"]

FUSED_ACTIVATIONS = ("tanh", "sigmoid", "hard_sigmoid", "relu", "linear")


def _act_name(act):
    """The fused name of an activation given as a name or as one of lamina's activation functions."""
    if act is None:
        return "linear"
    name = act if isinstance(act, str) else getattr(act, "_keras_name", getattr(act, "__name__", None))
    return name if name in FUSED_ACTIVATIONS else None


def _act_(xp, name, a):
    """Apply activation ``name`` to array ``a`` IN PLACE (a may be a view) and return it."""
    if name == "tanh":
        xp.tanh(a, out=a)
    elif name == "sigmoid":
        # sigmoid(x) = (tanh(x/2) + 1) / 2: one vectorised transcendental, no overflow in exp
        a *= 0.5
        xp.tanh(a, out=a)
        a *= 0.5
        a += 0.5
    elif name == "hard_sigmoid":
        a *= 1.0 / 6.0
        a += 0.5
        xp.clip(a, 0.0, 1.0, out=a)
    elif name == "relu":
        xp.maximum(a, 0.0, out=a)
    elif name != "linear":
        raise ValueError(f"recurrent ops: activation {name!r} is not fused. Fused: {', '.join(FUSED_ACTIVATIONS)}.")
    return a


def _dact(xp, name, y):
    """Derivative of activation ``name`` written with its OUTPUT y (what the forward pass saved)."""
    if name == "tanh":
        return 1.0 - y * y
    if name == "sigmoid":
        return y * (1.0 - y)
    if name == "hard_sigmoid":
        return ((y > 0.0) & (y < 1.0)).astype(y.dtype) * (1.0 / 6.0)
    if name == "relu":
        return (y > 0.0).astype(y.dtype)
    return xp.ones_like(y)


def _prepare(xp, x, kernel, bias, mask, go_backwards):
    """Time-major flattened inputs (T*N, D), the all-steps input projection (T, N, G*u), masks (T, N, 1)."""
    N, T, D = x.shape
    xt = x.transpose(1, 0, 2)
    if go_backwards:
        xt = xt[::-1]
    xs = xp.ascontiguousarray(xt).reshape(T * N, D)
    xw = xs @ kernel  # ONE product for the input part of every gate at every step
    if bias is not None:
        xw += bias
    xw = xw.reshape(T, N, kernel.shape[1])
    mt = mf = None
    if mask is not None:
        mt = mask.astype(bool).T
        if go_backwards:
            mt = mt[::-1]
        mt = xp.ascontiguousarray(mt)[:, :, None]  # (T, N, 1) bool, for exact xp.where in forward
        mf = mt.astype(x.dtype)                    # (T, N, 1) 0/1, for gradients routing in backward
    return xs, xw, mt, mf


def _finish_dx(xp, dxw, kernel, N, T, D, go_backwards):
    """Input gradient from all gate gradients at once: one (T*N, G*u) @ (G*u, D) product."""
    dxs = (dxw @ kernel.T).reshape(T, N, D)
    if go_backwards:
        dxs = dxs[::-1]
    return xp.ascontiguousarray(dxs.transpose(1, 0, 2))


def _check(opname, x, kernel, recurrent_kernel, gates, bias_shapes, bias, states, mask):
    if x.ndim != 3:
        raise ValueError(f"{opname}: inputs must be 3-D (batch, timesteps, features). Received shape {tuple(x.shape)}")
    N, T, D = x.shape
    u = recurrent_kernel.shape[0]
    if kernel.shape != (D, gates * u):
        raise ValueError(f"{opname}: kernel must have shape {(D, gates * u)} for inputs of {D} features and "
                         f"{u} units. Received {tuple(kernel.shape)}")
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


class SimpleRNNSeq(Op):
    """h_t = act(x_t W + b + h_{t-1} U) over the whole sequence."""

    def forward(self, x, kernel, recurrent_kernel, bias, h0, mask):
        xp = self.xp
        _check("simple_rnn", x, kernel, recurrent_kernel, 1, [(recurrent_kernel.shape[0],)], bias, [h0], mask)
        N, T, D = x.shape
        u = recurrent_kernel.shape[0]
        xs, xw, mt, mf = _prepare(xp, x, kernel, bias, mask, self.go_backwards)
        act = self.activation
        h = xp.zeros((N, u), x.dtype) if h0 is None else h0
        Hn = xp.empty((T, N, u), x.dtype)  # new (unmasked) states: what the derivative reads
        H = Hn if mask is None else xp.empty((T, N, u), x.dtype)  # carried states = outputs
        for t in range(T):
            a = xp.matmul(h, recurrent_kernel, out=Hn[t])
            a += xw[t]
            _act_(xp, act, a)
            h = a if mask is None else xp.where(mt[t], a, h)
            if mask is not None:
                H[t] = h
        self.saved = (xs, kernel, recurrent_kernel, h0, mf, Hn, H)
        self.shape = (N, T, D, u)
        return xp.ascontiguousarray(H.transpose(1, 0, 2)), h.copy()

    def backward(self, gH, gh):
        xp = self.xp
        xs, kernel, recurrent_kernel, h0, mf, Hn, H = self.saved
        N, T, D, u = self.shape
        gHt = gH.transpose(1, 0, 2)
        dZ = _dact(xp, self.activation, Hn)  # (T, N, u) derivative, becomes the pre-activation gradient
        rkT = xp.ascontiguousarray(recurrent_kernel.T)
        dh = gh.copy()
        for t in range(T - 1, -1, -1):
            dh += gHt[t]
            if mf is None:
                dZ[t] *= dh
                dh = dZ[t] @ rkT
            else:
                dn = dh * mf[t]   # gradient into the new state; the rest flows to the carried one
                keep = dh - dn
                dZ[t] *= dn
                dh = dZ[t] @ rkT
                dh += keep
        return _weight_grads(self, xp, dZ, xs, kernel, H, h0, dh, N, T, D, u, dZ)


def _weight_grads(op, xp, dZ, xs, kernel, H, h0, dh, N, T, D, u, dR):
    """Gradients of x, kernel, recurrent kernel, bias, h0 (+ None for the mask) after the time loop.
    dZ (T, N, G*u): gradients of the input projections; dR (T, N, G*u): of the recurrent products."""
    G = dZ.shape[2]
    dxw = dZ.reshape(T * N, G)
    gx = _finish_dx(xp, dxw, kernel, N, T, D, op.go_backwards) if op.needs_grad[0] else None
    gk = xs.T @ dxw if op.needs_grad[1] else None
    grk = None
    if op.needs_grad[2]:
        # h_{t-1} for t >= 1 is H[t-1]: one product over steps 1..T-1, plus the first step's h0 term
        grk = H[:-1].reshape((T - 1) * N, u).T @ dR[1:].reshape((T - 1) * N, G)
        if h0 is not None:
            grk += h0.T @ dR[0]
    gb = dxw.sum(axis=0) if op.needs_grad[3] else None
    gh0 = dh if (len(op.needs_grad) > 4 and op.needs_grad[4]) else None
    return gx, gk, grk, gb, gh0, None


class LSTMSeq(Op):
    """Keras LSTM (gates i, f, c, o) over the whole sequence."""

    def forward(self, x, kernel, recurrent_kernel, bias, h0, c0, mask):
        xp = self.xp
        u = recurrent_kernel.shape[0]
        _check("lstm", x, kernel, recurrent_kernel, 4, [(4 * u,)], bias, [h0, c0], mask)
        N, T, D = x.shape
        xs, xw, mt, mf = _prepare(xp, x, kernel, bias, mask, self.go_backwards)
        ract, act = self.recurrent_activation, self.activation
        h = xp.zeros((N, u), x.dtype) if h0 is None else h0
        c = xp.zeros((N, u), x.dtype) if c0 is None else c0
        Gs = xp.empty((T, N, 4 * u), x.dtype)  # gate activations i, f, g, o
        H = xp.empty((T, N, u), x.dtype)       # carried h (= outputs)
        C = xp.empty((T, N, u), x.dtype)       # carried c
        TC = xp.empty((T, N, u), x.dtype)      # act(new c)
        for t in range(T):
            z = xp.matmul(h, recurrent_kernel, out=Gs[t])  # one product for all four gates
            z += xw[t]
            _act_(xp, ract, z[:, :2 * u])
            _act_(xp, act, z[:, 2 * u:3 * u])
            _act_(xp, ract, z[:, 3 * u:])
            i, f, g, o = z[:, :u], z[:, u:2 * u], z[:, 2 * u:3 * u], z[:, 3 * u:]
            cn = f * c
            cn += i * g
            tc = TC[t]
            tc[...] = cn
            _act_(xp, act, tc)
            hn = o * tc
            if mt is not None:
                cn = xp.where(mt[t], cn, c)
                hn = xp.where(mt[t], hn, h)
            C[t] = cn
            H[t] = hn
            h, c = hn, cn
        self.saved = (xs, kernel, recurrent_kernel, h0, c0, mf, Gs, H, C, TC)
        self.shape = (N, T, D, u)
        return xp.ascontiguousarray(H.transpose(1, 0, 2)), h.copy(), c.copy()

    def backward(self, gH, gh, gc):
        xp = self.xp
        xs, kernel, recurrent_kernel, h0, c0, mf, Gs, H, C, TC = self.saved
        N, T, D, u = self.shape
        ract, act = self.recurrent_activation, self.activation
        gHt = gH.transpose(1, 0, 2)
        # derivatives of every gate at every step, from the saved activations: few large ops
        dG = xp.empty_like(Gs)
        dG[:, :, :2 * u] = _dact(xp, ract, Gs[:, :, :2 * u])
        dG[:, :, 2 * u:3 * u] = _dact(xp, act, Gs[:, :, 2 * u:3 * u])
        dG[:, :, 3 * u:] = _dact(xp, ract, Gs[:, :, 3 * u:])
        dTC = _dact(xp, act, TC)
        rkT = xp.ascontiguousarray(recurrent_kernel.T)
        zeros = xp.zeros((N, u), xs.dtype)
        dZ = dG  # overwritten step by step with the pre-activation gate gradients
        dh = gh.copy()
        dc = gc.copy()
        for t in range(T - 1, -1, -1):
            dh += gHt[t]
            g_t = Gs[t]
            i, f, g, o = g_t[:, :u], g_t[:, u:2 * u], g_t[:, 2 * u:3 * u], g_t[:, 3 * u:]
            c_prev = C[t - 1] if t > 0 else (c0 if c0 is not None else zeros)
            if mf is not None:
                m = mf[t]
                dhn = dh * m
                keep_h = dh - dhn
                dcn = dc * m
                keep_c = dc - dcn
            else:
                dhn, dcn = dh, dc
            dcn = dcn + dhn * o * dTC[t]
            dA = dZ[t]
            dA[:, :u] *= dcn * g
            dA[:, u:2 * u] *= dcn * c_prev
            dA[:, 2 * u:3 * u] *= dcn * i
            dA[:, 3 * u:] *= dhn * TC[t]
            dh = dA @ rkT
            dc = dcn * f
            if mf is not None:
                dh += keep_h
                dc += keep_c
        gx, gk, grk, gb, gh0, _ = _weight_grads(self, xp, dZ, xs, kernel, H, h0, dh, N, T, D, u, dZ)
        gc0 = dc if self.needs_grad[5] else None
        return gx, gk, grk, gb, gh0, gc0, None


class GRUSeq(Op):
    """Keras GRU (gates z, r, h) over the whole sequence; reset_after True (PyTorch's form) or False."""

    def forward(self, x, kernel, recurrent_kernel, bias, h0, mask):
        xp = self.xp
        u = recurrent_kernel.shape[0]
        ra = self.reset_after
        _check("gru", x, kernel, recurrent_kernel, 3, [(2, 3 * u)] if ra else [(3 * u,)], bias, [h0], mask)
        N, T, D = x.shape
        b_in = None if bias is None else (bias[0] if ra else bias)
        b_rec = None if (bias is None or not ra) else bias[1]
        xs, xw, mt, mf = _prepare(xp, x, kernel, b_in, mask, self.go_backwards)
        ract, act = self.recurrent_activation, self.activation
        h = xp.zeros((N, u), x.dtype) if h0 is None else h0
        ZR = xp.empty((T, N, 2 * u), x.dtype)  # z and r
        HH = xp.empty((T, N, u), x.dtype)      # candidate state
        RH = xp.empty((T, N, u), x.dtype)      # reset_after: h U_h + b_h (pre-reset); else: r * h_{t-1}
        H = xp.empty((T, N, u), x.dtype)
        uzr = recurrent_kernel[:, :2 * u]
        uh = recurrent_kernel[:, 2 * u:]
        for t in range(T):
            if ra:
                rec = h @ recurrent_kernel  # one product for all three gates
                if b_rec is not None:
                    rec += b_rec
                zr = ZR[t]
                xp.add(xw[t, :, :2 * u], rec[:, :2 * u], out=zr)
                _act_(xp, ract, zr)
                RH[t] = rec[:, 2 * u:]
                hh = HH[t]
                xp.multiply(zr[:, u:], RH[t], out=hh)
            else:
                zr = xp.matmul(h, uzr, out=ZR[t])
                zr += xw[t, :, :2 * u]
                _act_(xp, ract, zr)
                xp.multiply(zr[:, u:], h, out=RH[t])
                hh = xp.matmul(RH[t], uh, out=HH[t])
            hh += xw[t, :, 2 * u:]
            _act_(xp, act, hh)
            z = zr[:, :u]
            hn = h - hh     # h_t = z h_{t-1} + (1 - z) hh = hh + z (h_{t-1} - hh)
            hn *= z
            hn += hh
            if mt is not None:
                hn = xp.where(mt[t], hn, h)
            H[t] = hn
            h = hn
        self.saved = (xs, kernel, recurrent_kernel, h0, mf, ZR, HH, RH, H)
        self.shape = (N, T, D, u)
        return xp.ascontiguousarray(H.transpose(1, 0, 2)), h.copy()

    def backward(self, gH, gh):
        xp = self.xp
        xs, kernel, recurrent_kernel, h0, mf, ZR, HH, RH, H = self.saved
        N, T, D, u = self.shape
        ra = self.reset_after
        gHt = gH.transpose(1, 0, 2)
        dZR = _dact(xp, self.recurrent_activation, ZR)  # (T, N, 2u)
        dHH = _dact(xp, self.activation, HH)            # (T, N, u)
        dX = xp.empty((T, N, 3 * u), xs.dtype)          # gradient of the input projections
        dR = xp.empty((T, N, 3 * u), xs.dtype) if ra else None  # of h U + b_rec (reset_after)
        rkT = xp.ascontiguousarray(recurrent_kernel.T)
        uzrT = xp.ascontiguousarray(recurrent_kernel[:, :2 * u].T)
        uhT = xp.ascontiguousarray(recurrent_kernel[:, 2 * u:].T)
        zeros = xp.zeros((N, u), xs.dtype)
        dh = gh.copy()
        for t in range(T - 1, -1, -1):
            dh += gHt[t]
            h_prev = H[t - 1] if t > 0 else (h0 if h0 is not None else zeros)
            zr = ZR[t]
            z, r, hh = zr[:, :u], zr[:, u:], HH[t]
            if mf is not None:
                dn = dh * mf[t]
                keep = dh - dn
            else:
                dn = dh
            dx = dX[t]
            dah = dx[:, 2 * u:]
            xp.multiply(dn, 1.0 - z, out=dah)
            dah *= dHH[t]                       # gradient of the candidate's pre-activation
            dzr = dx[:, :2 * u]
            xp.multiply(dn, h_prev - hh, out=dzr[:, :u])
            dprev = dn * z
            if ra:
                xp.multiply(dah, RH[t], out=dzr[:, u:])
                dzr *= dZR[t]
                dr = dR[t]
                dr[:, :2 * u] = dzr
                xp.multiply(dah, r, out=dr[:, 2 * u:])
                dh = dr @ rkT
            else:
                drh = dah @ uhT                 # gradient of r * h_{t-1}
                xp.multiply(drh, h_prev, out=dzr[:, u:])
                dzr *= dZR[t]
                dh = dzr @ uzrT
                dh += drh * r
            dh += dprev
            if mf is not None:
                dh += keep
        dxw = dX.reshape(T * N, 3 * u)
        gx = _finish_dx(xp, dxw, kernel, N, T, D, self.go_backwards) if self.needs_grad[0] else None
        gk = xs.T @ dxw if self.needs_grad[1] else None
        grk = None
        if self.needs_grad[2]:
            Hp = H[:-1].reshape((T - 1) * N, u).T
            if ra:
                grk = Hp @ dR[1:].reshape((T - 1) * N, 3 * u)
                if h0 is not None:
                    grk += h0.T @ dR[0]
            else:
                grk = xp.empty_like(recurrent_kernel)
                grk[:, :2 * u] = Hp @ dX[1:, :, :2 * u].reshape((T - 1) * N, 2 * u)
                if h0 is not None:
                    grk[:, :2 * u] += h0.T @ dX[0, :, :2 * u]
                # the candidate's recurrent product reads r * h_{t-1}, saved at every step
                grk[:, 2 * u:] = RH.reshape(T * N, u).T @ dX[:, :, 2 * u:].reshape(T * N, u)
        gb = None
        if self.needs_grad[3]:
            gb = dxw.sum(axis=0)
            if ra:
                gb = xp.stack([gb, dR.reshape(T * N, 3 * u).sum(axis=0)])
        gh0 = dh if self.needs_grad[4] else None
        return gx, gk, grk, gb, gh0, None


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
    return SimpleRNNSeq.apply(x, kernel, recurrent_kernel, bias, _state(initial_state), mask,
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
                         mask, go_backwards=bool(go_backwards), activation=act, recurrent_activation=ract)


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
    return GRUSeq.apply(x, kernel, recurrent_kernel, bias, _state(initial_state), mask,
                        go_backwards=bool(go_backwards), activation=act, recurrent_activation=ract,
                        reset_after=bool(reset_after))
