"""Turning image files into the compact uint8 arrays every model reads.

A :class:`Preprocessing` travels with each checkpoint, so the pixels a model sees at prediction time
are made exactly as they were at training time.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from oneshot.errors import OneshotError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Preprocessing:
    """How an image file becomes a model input.

    Attributes:
        size: output height and width in pixels (square).
        channels: 1 (grey) or 3 (RGB).
        invert: store ``255 - pixel``; Omniglot draws black ink on white, and models learn ink as high values.
    """

    size: int = 28
    channels: int = 1
    invert: bool = True

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(size=int(d["size"]), channels=int(d["channels"]), invert=bool(d["invert"]))

    def apply(self, image: Image.Image) -> np.ndarray:
        """PIL image -> uint8 array of shape (channels, size, size)."""
        image = image.convert("L" if self.channels == 1 else "RGB")
        if image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.Resampling.LANCZOS)
        arr = np.asarray(image, dtype=np.uint8)
        if self.invert:
            arr = 255 - arr
        if arr.ndim == 2:
            arr = arr[None]
        else:
            arr = arr.transpose(2, 0, 1)
        return np.ascontiguousarray(arr)


def decode_image(data: bytes | Path | str, prep: Preprocessing, name: str | None = None) -> np.ndarray:
    """Decode image bytes or a file into a (C, H, W) uint8 array; a bad file is a :class:`OneshotError`."""
    label = name or str(data if not isinstance(data, bytes) else "<bytes>")
    try:
        if isinstance(data, bytes):
            image = Image.open(io.BytesIO(data))
        else:
            image = Image.open(data)
        image.load()
    except FileNotFoundError:
        raise OneshotError(f"image {label} does not exist") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise OneshotError(f"{label} is not a readable image ({exc.__class__.__name__}): replace or remove it") from None
    return prep.apply(image)


def is_image_file(path: Path) -> bool:
    """True for a regular, non-hidden file with an image suffix."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES
