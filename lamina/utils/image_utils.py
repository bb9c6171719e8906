"""Images as files and arrays, with Keras's names: ``load_img``, ``img_to_array``, ``array_to_img``,
``save_img`` (Pillow images) and ``smart_resize`` (aspect-preserving resize of arrays).

Pillow is optional (``pip install 'lamina[image]'``) and imported inside the functions that need it, so
``import lamina`` never requires it; smart_resize needs only NumPy.
"""
import io
import pathlib
import warnings

import numpy as np

from .. import backend

__all__ = ["array_to_img", "img_to_array", "load_img", "save_img", "smart_resize"]

_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "hamming", "box", "lanczos")


def _pil():
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("This function needs Pillow (PIL), which is not installed. Install it with: "
                          "pip install 'lamina[image]'  (or pip install pillow)") from None
    return Image


def _data_format(data_format):
    data_format = data_format or "channels_last"
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(f"data_format must be 'channels_last' or 'channels_first'. Received: {data_format!r}")
    return data_format


def array_to_img(x, data_format=None, scale=True, dtype=None):
    """A PIL image from a (H, W, C) array (C in 1, 3, 4; (C, H, W) with channels_first).

    With ``scale`` the values are shifted and stretched so that their minimum is 0 and their maximum 255
    (a constant image becomes 0). 1 channel gives mode 'L' (or 'I' with values above 255), 3 'RGB',
    4 'RGBA'; values are cast (truncated) to uint8.
    """
    Image = _pil()
    x = np.asarray(x, dtype=dtype or backend.floatx())
    if x.ndim != 3:
        raise ValueError(f"Expected image array to have rank 3 (single image). Got array with shape: {x.shape}")
    if _data_format(data_format) == "channels_first":
        x = np.transpose(x, (1, 2, 0))
    if scale:
        x = x - x.min()
        top = x.max()
        x = (x / top if top != 0 else x) * 255
    channels = x.shape[2]
    if channels in (3, 4):
        return Image.fromarray(x.astype("uint8"), "RGB" if channels == 3 else "RGBA")
    if channels == 1:
        if x.max() > 255:
            return Image.fromarray(x[:, :, 0].astype("int32"), "I")
        return Image.fromarray(x[:, :, 0].astype("uint8"), "L")
    raise ValueError(f"Unsupported channel number: {channels}")


def img_to_array(img, data_format=None, dtype=None):
    """A (H, W, C) array (``(C, H, W)`` with channels_first) of dtype floatx from a PIL image; grayscale
    images get a channel axis of 1."""
    x = np.asarray(img, dtype=dtype or backend.floatx())
    first = _data_format(data_format) == "channels_first"
    if x.ndim == 3:
        return np.transpose(x, (2, 0, 1)) if first else x
    if x.ndim == 2:
        return x[None] if first else x[:, :, None]
    raise ValueError(f"Unsupported image shape: {x.shape}")


def save_img(path, x, data_format=None, file_format=None, scale=True, **kwargs):
    """Write array x as an image file (format from the file name's extension, or ``file_format``; required
    for file objects). RGBA written as JPEG is converted to RGB with a warning. kwargs go to PIL's save."""
    if file_format is None and isinstance(path, (str, pathlib.Path)):
        file_format = pathlib.Path(path).suffix[1:].lower()
    if file_format and file_format.lower() == "jpg":
        file_format = "jpeg"
    img = array_to_img(x, data_format=data_format, scale=scale)
    if img.mode == "RGBA" and file_format == "jpeg":
        warnings.warn("The JPEG format does not support RGBA images, converting to RGB.")
        img = img.convert("RGB")
    img.save(path, format=file_format, **kwargs)


def load_img(path, color_mode="rgb", target_size=None, interpolation="nearest", keep_aspect_ratio=False):
    """A PIL image read from path (str, pathlib.Path, bytes path, or io.BytesIO).

    Args:
        color_mode: 'rgb', 'rgba' or 'grayscale' (16- and 32-bit grayscale files keep their depth).
        target_size: (height, width) to resize to, or None.
        interpolation: PIL resampling: 'nearest', 'bilinear', 'bicubic', 'hamming', 'box' or 'lanczos'.
        keep_aspect_ratio: crop the centre to the target's aspect ratio before resizing.
    """
    Image = _pil()
    if isinstance(path, io.BytesIO):
        img = Image.open(path)
    elif isinstance(path, (pathlib.Path, bytes, str)):
        with open(path.resolve() if isinstance(path, pathlib.Path) else path, "rb") as f:
            img = Image.open(io.BytesIO(f.read()))
    else:
        raise TypeError(f"path should be path-like or io.BytesIO, not {type(path)}")
    if color_mode == "grayscale":
        if img.mode not in ("L", "I;16", "I"):
            img = img.convert("L")
    elif color_mode in ("rgb", "rgba"):
        mode = color_mode.upper()
        if img.mode != mode:
            img = img.convert(mode)
    else:
        raise ValueError('color_mode must be "grayscale", "rgb", or "rgba"')
    if target_size is None:
        return img
    size = (int(target_size[1]), int(target_size[0]))  # PIL sizes are (width, height)
    if img.size == size:
        return img
    if interpolation not in _INTERPOLATIONS:
        raise ValueError(f"Invalid interpolation method {interpolation} specified. Supported methods are "
                         f"{', '.join(_INTERPOLATIONS)}")
    resample = getattr(Image.Resampling, interpolation.upper())
    box = None
    if keep_aspect_ratio:
        w, h = img.size
        tw, th = size
        ch, cw = min(h, (w * th) // tw), min(w, (h * tw) // th)
        top, left = (h - ch) // 2, (w - cw) // 2
        box = (left, top, left + cw, top + ch)
    return img.resize(size, resample, box=box)


def smart_resize(x, size, interpolation="bilinear", data_format="channels_last", **kwargs):
    """Resize an image (H, W, C) or a batch (N, H, W, C) to ``size`` = (height, width) without distorting
    it: the largest centred window with the target's aspect ratio is cropped first, then resized with
    ``lamina.ops.image.resize``. Returns a NumPy array for NumPy input."""
    from .. import ops
    from ..tensor import Tensor
    if len(size) != 2:
        raise ValueError(f"Expected `size` to be a tuple of 2 integers, but got: {size}.")
    is_numpy = isinstance(x, np.ndarray)
    arr = x.data if isinstance(x, Tensor) else (x if is_numpy or backend.is_cupy_array(x) else np.asarray(x))
    if arr.ndim not in (3, 4):
        raise ValueError("Expected an image array with shape `(height, width, channels)`, or `(batch_size, "
                         f"height, width, channels)`, but got input with incorrect rank, of shape {arr.shape}.")
    last = _data_format(data_format) == "channels_last"
    h, w = (arr.shape[-3], arr.shape[-2]) if last else (arr.shape[-2], arr.shape[-1])
    th, tw = int(size[0]), int(size[1])
    ch = max(min(h, int(float(w * th) / tw)), 1)
    cw = max(min(w, int(float(h * tw) / th)), 1)
    top, left = int(float(h - ch) / 2), int(float(w - cw) / 2)
    rows, cols = slice(top, top + ch), slice(left, left + cw)
    arr = arr[..., rows, cols, :] if last else arr[..., rows, cols]
    out = ops.image.resize(arr, (th, tw), interpolation=interpolation, data_format=data_format)
    return backend.to_numpy(out.data if isinstance(out, Tensor) else out) if is_numpy else out
