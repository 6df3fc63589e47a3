"""Decoding one image file to RGB pixels, whatever its mode: grey, palette, CMYK, RGBA, 16-bit.

PIL's ``convert("RGB")`` is right for 8-bit modes (CMYK through its colour transform, RGBA by
dropping alpha, as torchvision's loader does) but clips 16-bit and 32-bit grey to 255, which turns a
16-bit PNG white; those are scaled to 8 bits first. Anything PIL cannot decode is a one-line
:class:`DataError` naming the file.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hwnas.core.errors import HwnasError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage


class DataError(HwnasError):
    """A dataset that is missing, empty or in a form hwnas does not read."""


IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
_WIDE_GREY = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})


def decode_image(data: bytes | Path, source: str, size: tuple[int, int] | None = None) -> np.ndarray:
    """An RGB image as ``uint8 [H, W, 3]``, resized (bilinear) to ``size`` = (H, W) when given and
    different; anything PIL cannot read is a one-line :class:`DataError` naming ``source``."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
            rgb = _eight_bit(im).convert("RGB")
            if size is not None and rgb.size != (size[1], size[0]):
                rgb = rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            return np.asarray(rgb)
    except (OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, KeyError, struct.error,
            ZeroDivisionError, Image.DecompressionBombError) as exc:  # fmt: skip
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise DataError(f"{source}: cannot read the image ({first[:160]})") from None


def _eight_bit(im: PILImage) -> PILImage:
    """16-bit and 32-bit grey (``I;16``, ``I``, ``F``) as 8-bit grey, scaled rather than clipped: a
    16-bit image (or a 32-bit one whose max is above 255) divided by 257, floats in [0, 1] times 255, others clipped."""
    from PIL import Image

    if im.mode not in _WIDE_GREY:
        return im
    a = np.asarray(im).astype(np.float64)
    top = float(a.max()) if a.size else 0.0
    if im.mode == "F" and top <= 1.0:
        a = a * 255
    elif im.mode.startswith("I;16") or (im.mode == "I" and top > 255):
        a = a / 257
    return Image.fromarray(np.clip(np.round(a), 0, 255).astype(np.uint8), mode="L")
