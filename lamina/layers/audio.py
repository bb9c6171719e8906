"""Audio layers: STFTSpectrogram (Keras 3's short-time Fourier transform layer).

A spectrogram shows how the frequency content of a sound changes over time: the signal is cut into
short overlapping frames, each frame is multiplied by a window (a bell shape that fades its edges) and
Fourier-transformed. Keras computes the transform as a strided 1-D convolution whose kernels are the
windowed cosine (real part) and sine (imaginary part) waves of each frequency bin, so the same layer can
be a fixed preprocessing step (``trainable=False``) or a learnable front end. lamina does the same, on
``ops.conv``, so the output is differentiable with respect to the signal and the two kernels.
(MelSpectrogram lives with the other preprocessing layers in ``preprocessing_extra``.)
"""
import math
import warnings

import numpy as np

from .. import backend, initializers, ops
from ..ops import elementwise as _elementwise
from ..ops import math as _math
from .convolutional import standardize_data_format
from .layer import InputSpec, Layer

__all__ = ["STFTSpectrogram"]

_MODES = ("log", "magnitude", "psd", "real", "imag", "angle", "stft")


class STFTSpectrogram(Layer):
    """Short-time Fourier transform of 1-D signals, Keras 3.15's arguments and numbers.

    Input (batch, time, channels) ('channels_last', the default) or (batch, channels, time). Every channel
    is transformed alone with the same kernels: frames of ``frame_length`` samples every ``frame_step``
    (default frame_length // 2); ``fft_length`` (default the next power of two >= frame_length) sets
    fft_length // 2 + 1 frequency bins. Kernels: real_kernel[t, 0, f] = cos(-2 pi t f / (2 (bins - 1))) w[t] / s
    and imag_kernel with sin, w the window (a name or an array, symmetric unless ``periodic``), s =
    sqrt(sum w^2) ('density'), sum |w| ('spectrum') or 1 (None). Both are trainable weights
    (frame_length, 1, bins); mode 'real' builds only the first, 'imag' only the second.

    mode: 'real' / 'imag' (the two parts), 'magnitude' sqrt(max(re^2 + im^2, eps)), 'log' its log
    (floored at eps), 'psd' the power with the bins other than the first and last doubled (the one-sided
    density), 'angle' atan2(im, re), 'stft' the real parts then the imaginary parts (2 * bins).
    padding 'valid' or 'same' (TensorFlow's rule: extra sample at the end).

    Output, new_time = conv output length: channels_last (batch, new_time, channels * bins) or, with
    ``expand_dims``, (batch, new_time, bins, channels); channels_first (batch, channels * bins, new_time)
    or (batch, channels, new_time, bins). Channel c's bins are the block c * bins .. (c + 1) * bins.
    """

    def __init__(self, mode="log", frame_length=256, frame_step=None, fft_length=None, window="hann",
                 periodic=False, scaling="density", padding="valid", expand_dims=False, data_format=None,
                 **kwargs):
        if frame_step is not None and (frame_step > frame_length or frame_step < 1):
            raise ValueError("`frame_step` should be a positive integer not greater than `frame_length`. "
                             f"Received frame_step={frame_step}, frame_length={frame_length}")
        if fft_length is not None and fft_length < frame_length:
            raise ValueError("`fft_length` should be not less than `frame_length`. "
                             f"Received fft_length={fft_length}, frame_length={frame_length}")
        if fft_length is not None and (fft_length & -fft_length) != fft_length:
            warnings.warn(f"`fft_length` is recommended to be a power of two. Received fft_length={fft_length}")
        if mode not in _MODES:
            raise ValueError(f"Output mode is invalid, it must be one of {', '.join(_MODES)}. Received: mode={mode}")
        if scaling is not None and scaling not in ("density", "spectrum"):
            raise ValueError("Scaling is invalid, it must be `None`, 'density' or 'spectrum'. "
                             f"Received scaling={scaling}")
        if padding not in ("valid", "same"):
            raise ValueError(f"Padding is invalid, it should be 'valid', 'same'. Received: padding={padding}")
        if isinstance(window, str):
            initializers.STFT("real", window, scaling, periodic)  # an unknown window name raises here
        elif window is not None:
            window = np.asarray(window).tolist()  # an array window is kept as a list (JSON in get_config)
        super().__init__(**kwargs)
        self.mode = mode
        self.frame_length = int(frame_length)
        self.frame_step = frame_step
        self._frame_step = int(frame_step or self.frame_length // 2)
        self.fft_length = fft_length
        self._fft_length = int(fft_length or 2 ** int(math.ceil(math.log2(frame_length))))
        self.window, self.periodic, self.scaling = window, bool(periodic), scaling
        self.padding, self.expand_dims = padding, bool(expand_dims)
        self.data_format = standardize_data_format(data_format, self.name)
        self.input_spec = InputSpec(ndim=3)

    @property
    def _bins(self):
        return self._fft_length // 2 + 1

    def build(self, input_shape):
        shape = (self.frame_length, 1, self._bins)
        if self.mode != "imag":
            self.real_kernel = self.add_weight(
                shape=shape, initializer=initializers.STFT("real", self.window, self.scaling, self.periodic),
                name="real_kernel")
        if self.mode != "real":
            self.imag_kernel = self.add_weight(
                shape=shape, initializer=initializers.STFT("imag", self.window, self.scaling, self.periodic),
                name="imag_kernel")
        self.built = True

    def _transform(self, x, kernel):
        """x (batch * channels, time, 1) -> (batch * channels, new_time, bins)."""
        return ops.conv(x, ops.cast(kernel, x.dtype), strides=self._frame_step, padding=self.padding)

    def call(self, inputs):
        dtype = backend.standardize_dtype(inputs.dtype)
        if dtype not in ("float16", "float32", "float64"):
            raise TypeError(f"Invalid input type. Expected `float16`, `float32` or `float64`. "
                            f"Received: input type={dtype}")
        x = inputs if self.data_format == "channels_first" else ops.swapaxes(inputs, 1, 2)
        _, channels, time = x.shape                          # (batch, channels, time)
        x = ops.reshape(x, (-1, time, 1))                    # every channel alone
        re = self._transform(x, self.real_kernel) if self.mode != "imag" else None
        im = self._transform(x, self.imag_kernel) if self.mode != "real" else None
        if self.mode == "real":
            y = re
        elif self.mode == "imag":
            y = im
        elif self.mode == "angle":
            y = _elementwise.Arctan2.apply(im, re)
        elif self.mode == "stft":
            y = ops.concatenate([re, im], axis=-1)
        else:
            power = ops.square(re) + ops.square(im)
            if self.mode == "psd":
                y = power + ops.pad(power[..., 1:-1], [(0, 0), (0, 0), (1, 1)])
            else:  # the floors keep the input's dtype (float64 stays float64; ops.maximum would narrow it)
                y = ops.sqrt(_math.maximum(power, backend.epsilon()))
                if self.mode == "log":
                    y = ops.log(_math.maximum(y, backend.epsilon()))
        return self._arrange(y, channels)

    def _arrange(self, y, channels):
        """(batch * channels, new_time, freq) -> the output layout of the data format and expand_dims."""
        _, steps, freq = y.shape
        y = ops.reshape(y, (-1, channels, steps, freq))      # (batch, channels, new_time, freq)
        if self.expand_dims:
            return y if self.data_format == "channels_first" else ops.transpose(y, (0, 2, 3, 1))
        y = ops.reshape(ops.swapaxes(y, 2, 3), (-1, channels * freq, steps))
        return y if self.data_format == "channels_first" else ops.swapaxes(y, 1, 2)

    def compute_output_shape(self, input_shape):
        batch = input_shape[0]
        if self.data_format == "channels_last":
            time, channels = input_shape[1], input_shape[2]
        else:
            channels, time = input_shape[1], input_shape[2]
        freq = self._bins * (2 if self.mode == "stft" else 1)
        steps = None if time is None else ops.conv_output_length(time, self.frame_length, self.padding,
                                                                 self._frame_step, 1)
        if self.expand_dims:
            return (batch, steps, freq, channels) if self.data_format == "channels_last" \
                else (batch, channels, steps, freq)
        flat = None if channels is None else channels * freq
        return (batch, steps, flat) if self.data_format == "channels_last" else (batch, flat, steps)

    def get_config(self):
        config = super().get_config()
        config.update({"mode": self.mode, "frame_length": self.frame_length, "frame_step": self.frame_step,
                       "fft_length": self.fft_length, "window": self.window, "periodic": self.periodic,
                       "scaling": self.scaling, "padding": self.padding, "data_format": self.data_format,
                       "expand_dims": self.expand_dims})
        return config
