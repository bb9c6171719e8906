"""``keras.preprocessing.image``: image files and arrays (Pillow for files)."""
from ..utils.image_utils import array_to_img, img_to_array, load_img, save_img, smart_resize  # noqa: F401

__all__ = ["array_to_img", "img_to_array", "load_img", "save_img", "smart_resize"]
