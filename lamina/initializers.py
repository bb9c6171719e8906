"""Weight initializers with Keras 3's names and defaults.

An initializer is called with a shape (and dtype) and returns a lamina Tensor (Keras returns a backend
tensor, so ``float(init(shape=(1, 1)))`` and ``ops`` calls on the result work as in Keras), its values a
host NumPy array drawn from lamina's seeded generator (``lamina.utils.set_random_seed``); ``add_weight``
moves them to the device. Each subclass's ``__call__`` is wrapped so that a NumPy array it returns comes
back as a Tensor; one that already returns a tensor is left as it is.
Fans follow Keras: for a kernel (..., in, out) the receptive field is the product of the leading axes.
"""
import functools
import math

import numpy as np

from . import backend, threads
from . import tensor as _tensor
from .registry import find_in_config, register, registered_names, serialize_in_module
from .registry import serialize as _serialize


def compute_fans(shape, input_axes=None, output_axes=None):
    """(fan_in, fan_out) of a weight shape: the products of the sizes on input_axes and output_axes when both are
    given (an EinsumDense kernel), else as for a kernel (..., in, out)."""
    shape = tuple(shape)
    if input_axes is not None and output_axes is not None:
        return int(np.prod([shape[a] for a in input_axes])), int(np.prod([shape[a] for a in output_axes]))
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[:-2]))
    return shape[-2] * receptive, shape[-1] * receptive


def _returns_tensor(call):
    """``call`` with a NumPy result handed back as a lamina Tensor (Keras initializers return tensors)."""
    @functools.wraps(call)
    def wrapped(self, *args, **kwargs):
        out = call(self, *args, **kwargs)
        if isinstance(out, np.ndarray):
            from .tensor import Tensor  # the tensor floor, imported here to keep this side module light
            return Tensor(out)
        return out
    wrapped._returns_tensor = True
    return wrapped


class Initializer:
    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        call = cls.__dict__.get("__call__")
        if call is not None and not getattr(call, "_returns_tensor", False):
            cls.__call__ = _returns_tensor(call)
        register(cls)

    def __call__(self, shape, dtype=None):  # pragma: no cover - abstract
        raise NotImplementedError

    def _rng(self):
        if getattr(self, "seed", None) is not None:
            # A seeded initializer gives the same values each call, as Keras's stateless ones do.
            return np.random.default_rng(self.seed)
        return backend.rng("init")

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _dt(dtype):
    return np.dtype(dtype or backend.floatx())


class Zeros(Initializer):
    def __call__(self, shape, dtype=None):
        return np.zeros(shape, _dt(dtype))


class Ones(Initializer):
    def __call__(self, shape, dtype=None):
        return np.ones(shape, _dt(dtype))


class Constant(Initializer):
    def __init__(self, value=0.0):
        self.value = value

    def __call__(self, shape, dtype=None):
        return np.full(shape, self.value, _dt(dtype))

    def get_config(self):
        return {"value": self.value}


class RandomNormal(Initializer):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean, self.stddev, self.seed = mean, stddev, seed

    def __call__(self, shape, dtype=None):
        rng = self._rng()
        return _draw(shape, _dt(dtype), _normal(rng, self.mean, self.stddev))

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class RandomUniform(Initializer):
    def __init__(self, minval=-0.05, maxval=0.05, seed=None):
        self.minval, self.maxval, self.seed = minval, maxval, seed

    def __call__(self, shape, dtype=None):
        rng = self._rng()
        return _draw(shape, _dt(dtype), _uniform(rng, self.minval, self.maxval))

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, "seed": self.seed}


# Draws are made in float64 (the numbers each seed has always given) and cast into the weight's dtype a block
# at a time: a large weight otherwise passed through float64 temporaries of twice its size, whose page faults
# were most of a large model's build (ConvNeXtXLarge, 350 M weights: 2.5 -> 1.2-1.7 s). The generator's stream
# is consumed in the same order, so the values are the same to the bit. Each block is drawn into one reused
# float64 buffer, and uniform and normal draws are NumPy's standard draws scaled and shifted in two passes:
# Generator.uniform and .normal compute low + (high - low) * u and loc + scale * z value by value through a
# per-value call (5.9 and 21.5 ns a value here, against 3.0 and 18.6 for the standard draws into a buffer),
# the same two roundings in the same order, so the same bits (checked on 10^7 values for several bounds).
_DRAW_BLOCK = 1 << 16


def _draw(shape, dtype, fill):
    """An array of ``shape`` and ``dtype`` filled in order: ``fill(buf)`` writes len(buf) float64 draws into
    buf, a reused block of at most _DRAW_BLOCK values, which is then cast into place."""
    out = np.empty(shape, dtype)
    flat = out.reshape(-1)
    buf = np.empty(min(_DRAW_BLOCK, flat.size))
    for s in range(0, flat.size, _DRAW_BLOCK):
        b = buf[:min(_DRAW_BLOCK, flat.size - s)]
        fill(b)
        flat[s:s + b.size] = b
    return out


def _shifted(draw, standard, a, b, shift_scale):
    """A _draw fill giving the values of ``draw(a, b, n)`` (Generator.uniform or .normal): the ``standard``
    draws (Generator.random or .standard_normal) into the buffer, times the scale, plus the shift, where
    ``shift_scale(a, b)`` gives (shift, scale) for scalar a and b (see above)."""
    if np.ndim(a) or np.ndim(b):          # (array bounds: NumPy's broadcasting, value by value)
        return lambda buf: buf.__setitem__(Ellipsis, draw(a, b, buf.size))
    draw(a, b, 0)                         # NumPy's own checks of the arguments; draws nothing
    shift, scale = shift_scale(float(a), float(b))

    def fill(buf):
        standard(out=buf)
        buf *= scale
        buf += shift
    return fill


def _uniform(rng, low, high):
    """rng.uniform(low, high): low + (high - low) * u."""
    return _shifted(rng.uniform, rng.random, low, high, lambda lo, hi: (lo, hi - lo))


def _normal(rng, loc, scale):
    """rng.normal(loc, scale): loc + scale * z."""
    return _shifted(rng.normal, rng.standard_normal, loc, scale, lambda m, s: (m, s))


def _truncated_normal(rng, shape, stddev, dtype, mean=None):
    """(mean +) Normal(0, stddev) redrawn outside two standard deviations, in ``dtype``: every value outside
    is redrawn, in index order, all at once, until none is (vectorised resampling, drawn and cast a block at a
    time as _draw)."""
    def scaled(z):
        z *= stddev
        if mean is not None:
            z += mean
        return z

    out = np.empty(shape, dtype)
    flat = out.reshape(-1)
    outside = []
    buf = np.empty(min(_DRAW_BLOCK, flat.size))
    for s in range(0, flat.size, _DRAW_BLOCK):
        z = rng.standard_normal(out=buf[:min(_DRAW_BLOCK, flat.size - s)])
        outside.append(np.flatnonzero(np.abs(z) > 2.0) + s)
        flat[s:s + z.size] = scaled(z)
    redo = np.concatenate(outside) if outside else np.zeros(0, np.intp)
    while redo.size:
        z = rng.standard_normal(redo.size)
        far = np.abs(z) > 2.0
        flat[redo] = scaled(z)
        redo = redo[far]
    return out


class TruncatedNormal(Initializer):
    def __init__(self, mean=0.0, stddev=0.05, seed=None):
        self.mean, self.stddev, self.seed = mean, stddev, seed

    def __call__(self, shape, dtype=None):
        return _truncated_normal(self._rng(), shape, self.stddev, _dt(dtype), mean=self.mean)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, "seed": self.seed}


class VarianceScaling(Initializer):
    """Draws with variance scale / fan (fan_in, fan_out or their average), as Keras."""

    _MODES = ("fan_in", "fan_out", "fan_avg")
    _DISTS = ("truncated_normal", "untruncated_normal", "uniform")

    def __init__(self, scale=1.0, mode="fan_in", distribution="truncated_normal", seed=None, input_axes=None,
                 output_axes=None):
        if mode not in self._MODES:
            raise ValueError(f"Invalid mode {mode!r}. Valid: {', '.join(self._MODES)}.")
        if distribution == "normal":
            distribution = "truncated_normal"
        if distribution not in self._DISTS:
            raise ValueError(f"Invalid distribution {distribution!r}. Valid: {', '.join(self._DISTS)}.")
        if scale <= 0:
            raise ValueError(f"scale must be positive. Received: scale={scale}")
        self.scale, self.mode, self.distribution, self.seed = scale, mode, distribution, seed
        # the axes whose sizes make the fans (Keras's; None: a kernel's (..., in, out) layout)
        self.input_axes, self.output_axes = input_axes, output_axes

    def __call__(self, shape, dtype=None):
        fan_in, fan_out = compute_fans(shape, self.input_axes, self.output_axes)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        scale = self.scale / max(1.0, fan)
        rng, dtype = self._rng(), _dt(dtype)
        if self.distribution == "truncated_normal":
            stddev = math.sqrt(scale) / 0.87962566103423978  # std of a unit normal truncated at 2
            return _truncated_normal(rng, shape, stddev, dtype)
        if self.distribution == "untruncated_normal":
            return _draw(shape, dtype, _normal(rng, 0.0, math.sqrt(scale)))
        limit = math.sqrt(3.0 * scale)
        return _draw(shape, dtype, _uniform(rng, -limit, limit))

    def get_config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution, "seed": self.seed,
                "input_axes": self.input_axes, "output_axes": self.output_axes}


def _fixed(name, scale, mode, distribution):
    def __init__(self, seed=None, input_axes=None, output_axes=None):
        VarianceScaling.__init__(self, scale, mode, distribution, seed, input_axes, output_axes)

    def get_config(self):
        return {"seed": self.seed, "input_axes": self.input_axes, "output_axes": self.output_axes}

    cls = type(name, (VarianceScaling,), {"__init__": __init__, "get_config": get_config,
                                          "__doc__": f"VarianceScaling(scale={scale}, mode={mode!r}, "
                                                     f"distribution={distribution!r})."})
    return cls


GlorotUniform = _fixed("GlorotUniform", 1.0, "fan_avg", "uniform")
GlorotNormal = _fixed("GlorotNormal", 1.0, "fan_avg", "truncated_normal")
HeUniform = _fixed("HeUniform", 2.0, "fan_in", "uniform")
HeNormal = _fixed("HeNormal", 2.0, "fan_in", "truncated_normal")
LecunUniform = _fixed("LecunUniform", 1.0, "fan_in", "uniform")
LecunNormal = _fixed("LecunNormal", 1.0, "fan_in", "truncated_normal")


class Orthogonal(Initializer):
    """A (scaled) orthogonal matrix from the QR decomposition of a normal draw, as Keras."""

    def __init__(self, gain=1.0, seed=None):
        self.gain, self.seed = gain, seed

    def __call__(self, shape, dtype=None):
        if len(shape) < 2:
            raise ValueError(f"Orthogonal initializer needs a shape of rank >= 2. Received: shape={shape}")
        rows = int(np.prod(shape[:-1]))
        cols = shape[-1]
        flat = self._rng().standard_normal((max(rows, cols), min(rows, cols)))
        with threads.one_thread():   # (faster here, and no collapse when another process holds a core)
            q, r = np.linalg.qr(flat)
        q *= np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return (self.gain * q.reshape(shape)).astype(_dt(dtype))

    def get_config(self):
        return {"gain": self.gain, "seed": self.seed}


class Identity(Initializer):
    def __init__(self, gain=1.0):
        self.gain = gain

    def __call__(self, shape, dtype=None):
        if len(shape) != 2:
            raise ValueError(f"Identity initializer needs a 2-D shape. Received: shape={shape}")
        return (self.gain * np.eye(*shape)).astype(_dt(dtype))

    def get_config(self):
        return {"gain": self.gain}


def _window(name, n, periodic):
    """A named window of length n (symmetric, or periodic as for an FFT frame): hann, hamming, blackman,
    bartlett, boxcar in NumPy; any other SciPy window name when SciPy is installed."""
    m = n + 1 if periodic and n > 1 else n
    simple = {"hann": np.hanning, "hanning": np.hanning, "hamming": np.hamming, "blackman": np.blackman,
              "bartlett": np.bartlett, "boxcar": np.ones, "rectangular": np.ones, "rect": np.ones}
    if name in simple:
        w = simple[name](m)
        return w[:n] if m != n else w
    try:
        import scipy.signal
    except ImportError:  # pragma: no cover - SciPy is optional
        raise ValueError(f"Unknown window {name!r}: without SciPy the windows are {sorted(simple)}.") from None
    return scipy.signal.get_window(name, n, periodic)


class STFT(Initializer):
    """The real or imaginary part of the (windowed, scaled) DFT basis as a Conv1D kernel for the shape
    (frame_length, input_channels, fft_length), returned with a channel axis of 1 as Keras does: cos / sin(-2 pi t f / (2 (fft_length - 1)))
    times the window, divided by sqrt(sum(window^2)) ('density') or sum(|window|) ('spectrum').

    Args: side='real' | 'imag', window='hann' (a name, an array of length frame_length, or None),
    scaling='density' | 'spectrum' | None, periodic=False."""

    def __init__(self, side="real", window="hann", scaling="density", periodic=False):
        if side not in ("real", "imag"):
            raise ValueError(f"side should be 'real' or 'imag', not {side}")
        if isinstance(window, str):
            _window(window, 1, periodic)  # an unknown name raises here, as Keras
        if scaling is not None and scaling not in ("density", "spectrum"):
            raise ValueError(f"Scaling is invalid, it must be `None`, 'density' or 'spectrum'. Received scaling={scaling}")
        self.side, self.window, self.scaling, self.periodic = side, window, scaling, periodic

    def __call__(self, shape, dtype=None):
        frame_length, _, fft_length = shape
        dt = _dt(dtype)
        freq = np.arange(fft_length, dtype=dt).reshape(1, 1, -1) / dt.type((fft_length - 1) * 2)
        time = np.arange(frame_length, dtype=dt).reshape(-1, 1, 1)
        args = (-2 * time * freq) * dt.type(np.pi)
        kernel = (np.cos(args) if self.side == "real" else np.sin(args)).astype(dt)
        if self.window is not None:
            win = _window(self.window, frame_length, self.periodic) if isinstance(self.window, str) \
                else np.asarray(self.window)
            win = win.astype(dt)
            if win.ndim != 1 or win.shape[-1] != frame_length:
                raise ValueError(f"The shape of `window` must be equal to [frame_length].Received: window shape={win.shape}")
            win = win.reshape(frame_length, 1, 1)
            scale = 1.0
            if self.scaling == "density":
                scale = np.sqrt(np.sum(np.square(win)))
            elif self.scaling == "spectrum":
                scale = np.sum(np.abs(win))
            kernel = kernel * win / scale
        # (frame_length, 1, fft_length), as Keras: it broadcasts over the input channels
        return kernel.astype(dt)

    def get_config(self):
        return {"side": self.side, "window": self.window, "periodic": self.periodic, "scaling": self.scaling}


_ALIASES = {
    "zeros": Zeros, "zero": Zeros, "ones": Ones, "one": Ones, "constant": Constant, "random_normal": RandomNormal,
    "random_uniform": RandomUniform, "truncated_normal": TruncatedNormal, "variance_scaling": VarianceScaling,
    "glorot_uniform": GlorotUniform, "glorot_normal": GlorotNormal, "he_uniform": HeUniform,
    "he_normal": HeNormal, "lecun_uniform": LecunUniform, "lecun_normal": LecunNormal,
    "orthogonal": Orthogonal, "identity": Identity, "stft": STFT,
    # Keras's short names (Embedding's default embeddings_initializer is "uniform")
    "uniform": RandomUniform, "normal": RandomNormal,
}
for _name, _cls in _ALIASES.items():
    register(_cls, _name)
    register(_cls)

# Keras 3 exports each class under its snake-case name and a few long names as well
zeros, ones, constant = Zeros, Ones, Constant
random_normal, random_uniform, truncated_normal, variance_scaling = RandomNormal, RandomUniform, TruncatedNormal, \
    VarianceScaling
glorot_uniform, glorot_normal, he_uniform, he_normal = GlorotUniform, GlorotNormal, HeUniform, HeNormal
lecun_uniform, lecun_normal = LecunUniform, LecunNormal
orthogonal = OrthogonalInitializer = Orthogonal
identity = IdentityInitializer = Identity
stft = STFTInitializer = STFT
for _name, _cls in (("OrthogonalInitializer", Orthogonal), ("IdentityInitializer", Identity),
                    ("STFTInitializer", STFT)):
    _ALIASES[_name] = _cls
    register(_cls, _name)
    register(_cls)


_BY_NAME = {**{c.__name__: c for c in _ALIASES.values()}, **_ALIASES}


def serialize(initializer):
    """An initializer as Keras serializes it: ``{'module', 'class_name', 'config', 'registered_name'}`` (a
    program's registered class under its module and 'package>Name'); a plain function by name."""
    if initializer is None:
        return None
    if not isinstance(initializer, Initializer):
        return _serialize(initializer)
    return serialize_in_module(initializer, "keras.initializers")


def deserialize(config, custom_objects=None):
    """An initializer from serialize()'s dict (or a name)."""
    if isinstance(config, dict) and custom_objects and config.get("class_name") in custom_objects:
        return custom_objects[config["class_name"]].from_config(config.get("config", {}))
    return get(config)


def get(identifier):
    """An initializer from a name ('glorot_uniform'), a class name, a config dict, an instance or a callable."""
    if identifier is None:
        return None
    if isinstance(identifier, Initializer) or (callable(identifier) and not isinstance(identifier, (str, type))):
        return identifier
    if isinstance(identifier, type) and issubclass(identifier, Initializer):
        return identifier()
    if isinstance(identifier, dict):
        cls = find_in_config(identifier, Initializer, _BY_NAME)
        if cls is None or not (isinstance(cls, type) and issubclass(cls, Initializer)):
            raise ValueError(f"Unknown initializer {identifier['class_name']!r}. Valid names: {', '.join(_ALIASES)}.")
        return cls.from_config(identifier.get("config", {}))
    if isinstance(identifier, str):
        cls = _ALIASES.get(identifier) or _ALIASES.get(identifier.lower())
        if cls is None:
            cands = {c.__name__: c for c in _ALIASES.values()}
            cls = cands.get(identifier)
        if cls is None:
            raise ValueError(f"Unknown initializer {identifier!r}. Valid names: {', '.join(_ALIASES)}.")
        return cls()
    raise ValueError(f"Could not interpret initializer identifier: {identifier!r}")


__all__ = list(_ALIASES) + [c.__name__ for c in set(_ALIASES.values())] + ["get", "Initializer", "compute_fans",
                                                                            "serialize", "deserialize"]
_ = registered_names


_tensor._GET_INITIALIZER = get  # Variable(initializer='zeros', shape=...) finds initializers by name
