"""Turning image files into the compact uint8 arrays every model reads.

A :class:`Preprocessing` travels with each checkpoint, so the pixels a model sees at prediction time
are made exactly as they were at training time. Every step is stated there and documented in
``docs/images.md``:

1. **Size check before decoding**: the header's width x height must not exceed :data:`MAX_PIXELS`
   (64 megapixels, ``$ONESHOT_MAX_PIXELS`` overrides), so a "decompression bomb" is refused in one line
   without allocating its pixels.
2. **Orientation**: the EXIF orientation tag of phone photographs is applied.
3. **Mode**: transparent images (RGBA, LA, palette or grey with a transparency key) are composited on the
   ``background`` grey level (white by default: Omniglot's paper); 16-bit images are scaled by their bit depth
   (65535 -> 255), 32-bit integer images by 16 bits when their values fit, float images from [0, 1]; palette,
   CMYK, YCbCr, LAB and HSV images are converted to RGB by Pillow; colour becomes grey by ITU-R 601 luma
   (``L = 0.299 R + 0.587 G + 0.114 B``), grey becomes colour by repeating the channel.
4. **Resize** to ``size`` x ``size`` by the ``resize`` policy: ``stretch`` (the whole image, aspect ratio not
   kept: the Omniglot checkpoints' policy), ``pad`` (the whole image, aspect kept, padded with ``background``)
   or ``crop`` (shorter side to ``size``, centre crop). Lanczos filtering. An upscale of more than
   :data:`EXTREME_UPSCALE` times warns.
5. **Inversion** (``invert``): ``255 - pixel``, so dark ink on light paper becomes high values.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from oneshot.errors import OneshotError, OneshotWarning

#: Suffixes of common image files (kept for callers; folders are read by content, see :func:`sniff_image`).
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".ppm", ".tif", ".tiff", ".webp"}
#: Largest image (width x height) decoded: 64 megapixels (8192 x 8192; phone cameras give 12-50 MP).
MAX_PIXELS = 64 * 1024 * 1024
#: Upscale factor above which decoding warns that the input is far smaller than the model's input.
EXTREME_UPSCALE = 8.0
RESIZE_POLICIES = ("stretch", "pad", "crop")
MAX_SIZE = 1024


class InputWarning(OneshotWarning):
    """Inputs that work but probably not as the user expects (out-of-domain pixels, extreme upscaling)."""


def max_pixels() -> int:
    """The pixel limit in force: ``$ONESHOT_MAX_PIXELS`` when set to a positive integer, else :data:`MAX_PIXELS`."""
    env = os.environ.get("ONESHOT_MAX_PIXELS", "")
    return int(env) if env.isdigit() and int(env) > 0 else MAX_PIXELS


@dataclass(frozen=True)
class Preprocessing:
    """How an image file becomes a model input (stored in every checkpoint; see the module docstring).

    Attributes:
        size: output height and width in pixels (square).
        channels: 1 (grey) or 3 (RGB).
        invert: store ``255 - pixel``; Omniglot draws black ink on white, and models learn ink as high values.
        resize: ``stretch`` (default, aspect ratio not kept), ``pad`` (aspect kept, padded) or ``crop``
            (aspect kept, centre crop).
        background: grey level 0-255 that transparent pixels and padding take, before inversion (255: white).

    Fields added after the first checkpoints are written to :meth:`to_dict` only when they differ from their
    defaults, so older checkpoints and the gallery fingerprints made from them stay byte-identical.
    """

    size: int = 28
    channels: int = 1
    invert: bool = True
    resize: str = "stretch"
    background: int = 255

    _ALWAYS = ("size", "channels", "invert")

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 8 <= self.size <= MAX_SIZE:
            raise OneshotError(f"preprocessing size {self.size!r} must be an integer from 8 to {MAX_SIZE}")
        if self.channels not in (1, 3) or isinstance(self.channels, bool):
            raise OneshotError(f"preprocessing channels {self.channels!r} must be 1 (grey) or 3 (colour)")
        if not isinstance(self.invert, bool):
            raise OneshotError(f"preprocessing invert {self.invert!r} must be true or false")
        if self.resize not in RESIZE_POLICIES:
            raise OneshotError(f"resize policy {self.resize!r} is unknown: choose one of {', '.join(RESIZE_POLICIES)}")
        if isinstance(self.background, bool) or not isinstance(self.background, int) or not 0 <= self.background <= 255:
            raise OneshotError(f"background {self.background!r} must be a grey level from 0 to 255")

    def to_dict(self) -> dict[str, Any]:
        defaults = Preprocessing.__dataclass_fields__
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in self._ALWAYS or value != defaults[f.name].default:
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, d: Any) -> Preprocessing:
        """Rebuild from :meth:`to_dict`'s output; anything malformed is a :class:`OneshotError`."""
        if not isinstance(d, dict):
            raise OneshotError(f"preprocessing {d!r} is not a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise OneshotError(f"preprocessing has unknown fields {sorted(unknown)}: written by a newer oneshot?")
        missing = [k for k in cls._ALWAYS if k not in d]
        if missing:
            raise OneshotError(f"preprocessing lacks {missing}")
        return cls(**d)

    def with_overrides(self, **changes: Any) -> Preprocessing:
        """A copy with some fields changed (``None`` values are ignored), validated."""
        return cls_replace(self, {k: v for k, v in changes.items() if v is not None})

    def describe(self) -> str:
        """One line for humans: ``28x28 grey, stretch, inverted (ink high)``."""
        return (
            f"{self.size}x{self.size} {'grey' if self.channels == 1 else 'RGB'}, resize {self.resize}, "
            f"{'inverted (255 - pixel)' if self.invert else 'not inverted'}, background {self.background}"
        )

    def apply(self, image: Image.Image, name: str = "image") -> np.ndarray:
        """PIL image -> uint8 array of shape (channels, size, size)."""
        image = to_mode(image, "L" if self.channels == 1 else "RGB", self.background)
        w, h = image.size
        if w < 1 or h < 1:
            raise OneshotError(f"{name} has no pixels ({w}x{h})")
        s = self.size
        if self.resize == "stretch":
            factor = max(s / w, s / h)
        elif self.resize == "pad":
            factor = s / max(w, h)
        else:
            factor = s / min(w, h)
        if factor > EXTREME_UPSCALE:
            warnings.warn(
                f"{name} is {w}x{h}, upscaled {factor:.0f}x to the model's {s}x{s}: expect a blurry input",
                InputWarning,
                stacklevel=2,
            )
        if self.resize == "stretch":
            if image.size != (s, s):
                image = image.resize((s, s), Image.Resampling.LANCZOS)
        elif self.resize == "pad":
            nw, nh = max(1, round(w * factor)), max(1, round(h * factor))
            image = image.resize((nw, nh), Image.Resampling.LANCZOS) if (nw, nh) != (w, h) else image
            fill = self.background if image.mode == "L" else (self.background,) * 3
            canvas = Image.new(image.mode, (s, s), fill)
            canvas.paste(image, ((s - nw) // 2, (s - nh) // 2))
            image = canvas
        else:
            nw, nh = max(s, round(w * factor)), max(s, round(h * factor))
            image = image.resize((nw, nh), Image.Resampling.LANCZOS) if (nw, nh) != (w, h) else image
            left, top = (nw - s) // 2, (nh - s) // 2
            image = image.crop((left, top, left + s, top + s))
        arr = np.asarray(image, dtype=np.uint8)
        if self.invert:
            arr = 255 - arr
        if arr.ndim == 2:
            arr = arr[None]
        else:
            arr = arr.transpose(2, 0, 1)
        return np.ascontiguousarray(arr)


def cls_replace(prep: Preprocessing, changes: dict[str, Any]) -> Preprocessing:
    d = {f.name: getattr(prep, f.name) for f in fields(prep)}
    unknown = set(changes) - set(d)
    if unknown:
        raise OneshotError(f"unknown preprocessing fields {sorted(unknown)}: choose from {', '.join(d)}")
    d.update(changes)
    return Preprocessing(**d)


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def to_mode(image: Image.Image, target: str, background: int = 255) -> Image.Image:
    """Any Pillow image -> ``L`` or ``RGB`` as the module docstring documents (alpha composited on ``background``)."""
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(image).astype(np.float64)
        if mode == "I" and a.size and (a.min() < 0 or a.max() > 65535):
            lo, hi = float(a.min()), float(a.max())
            a = (a - lo) / (hi - lo or 1.0) * 255.0
        else:
            a = a * (255.0 / 65535.0)
        image = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    elif mode == "F":
        a = np.nan_to_num(np.asarray(image).astype(np.float64))
        a = a * 255.0 if a.size and a.min() >= 0 and a.max() <= 1.0 else a
        image = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L")
    elif _has_alpha(image):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (background, background, background, 255))
        image = Image.alpha_composite(canvas, rgba).convert("RGB")
    elif mode not in ("1", "L", "RGB"):
        image = image.convert("RGB")  # palette, CMYK, YCbCr, LAB, HSV ...
    return image if image.mode == target else image.convert(target)


def open_image(data: bytes | Path | str, name: str | None = None) -> Image.Image:
    """Open, check the header's pixel count, decode (all errors one-line :class:`OneshotError` s)."""
    label = name or str(data if not isinstance(data, bytes) else "<bytes>")
    limit = max_pixels()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
        w, h = image.size
        if w * h > limit:
            raise OneshotError(
                f"{label} claims {w}x{h} pixels, more than the {limit // 2**20} megapixel limit: "
                "shrink it first (or raise $ONESHOT_MAX_PIXELS)"
            )
        image.load()
        image = ImageOps.exif_transpose(image) or image
    except FileNotFoundError:
        raise OneshotError(f"image {label} does not exist") from None
    except IsADirectoryError:
        raise OneshotError(f"{label} is a folder, not an image file") from None
    except Image.DecompressionBombError:
        raise OneshotError(
            f"{label} claims more than {limit // 2**20} megapixels in its header: refused before "
            "decoding; shrink it first (or raise $ONESHOT_MAX_PIXELS)"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, TypeError, EOFError, MemoryError, struct.error) as exc:
        raise OneshotError(f"{label} is not a readable image ({exc.__class__.__name__}): replace or remove it") from None
    return image


def decode_image(data: bytes | Path | str, prep: Preprocessing, name: str | None = None) -> np.ndarray:
    """Decode image bytes or a file into a (C, H, W) uint8 array; a bad file is a :class:`OneshotError`."""
    label = name or str(data if not isinstance(data, bytes) else "<bytes>")
    image = open_image(data, label)
    try:
        return prep.apply(image, label)
    except (OSError, ValueError) as exc:
        raise OneshotError(f"{label} could not be converted ({exc.__class__.__name__}): replace or remove it") from None


def sniff_image(path: Path) -> str | None:
    """None when Pillow recognises ``path`` as an image by its content (header only), else why not."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.size  # noqa: B018 -- header parsed
        return None
    except Image.DecompressionBombError:
        return None  # an image; decoding will refuse it with the size message
    except UnidentifiedImageError:
        return "not an image format Pillow recognises"
    except OSError as exc:
        return exc.strerror or exc.__class__.__name__
    except Exception as exc:  # noqa: BLE001 -- any parser failure means "not readable"
        return exc.__class__.__name__


def is_image_file(path: Path) -> bool:
    """True for a regular, non-hidden file whose *content* is an image (the suffix does not matter)."""
    return path.is_file() and not path.name.startswith(".") and sniff_image(path) is None


def image_files_in(folder: Path, recursive: bool = False) -> list[Path]:
    """The image files of ``folder`` by content (sorted; hidden files skipped).

    Raises :class:`OneshotError` naming each file and why when the folder holds files but none is an image.
    """
    candidates = sorted(
        p
        for p in (folder.rglob("*") if recursive else folder.iterdir())
        if p.is_file() and not p.name.startswith(".") and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )
    good, bad = [], []
    for p in candidates:
        why = sniff_image(p)
        (good.append(p) if why is None else bad.append(f"{p.name} ({why})"))
    if not good and bad:
        shown = "; ".join(bad[:5]) + (f"; and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise OneshotError(f"no file in {folder} is a readable image: {shown}")
    return good


# ---------------------------------------------------------------- what inputs look like
#: Features of a preprocessed image that tell drawings from photographs and dark from light backgrounds.
STAT_NAMES = ("mean", "std", "midtones")


def image_stats(images: np.ndarray) -> np.ndarray:
    """uint8 (B, C, H, W) -> float (B, 3): mean and std of pixels in [0, 1], fraction of pixels in (0.2, 0.8)."""
    x = images.reshape(images.shape[0], -1).astype(np.float32) / 255.0
    return np.stack([x.mean(1), x.std(1), ((x > 0.2) & (x < 0.8)).mean(1)], 1)


def stats_envelope(images: np.ndarray) -> dict[str, Any]:
    """The range of :func:`image_stats` over training images: 0.1% and 99.9% quantiles per feature."""
    s = image_stats(images)
    lo, hi = np.quantile(s, 0.001, axis=0), np.quantile(s, 0.999, axis=0)
    return {
        "features": list(STAT_NAMES),
        "low": [round(float(v), 4) for v in lo],
        "high": [round(float(v), 4) for v in hi],
        "images": int(len(s)),
    }


def out_of_envelope(images: np.ndarray, envelope: dict[str, Any], margin: float = 0.05) -> np.ndarray:
    """(B,) bool: images whose statistics fall outside ``envelope`` widened by ``margin`` (absolute)."""
    s = image_stats(images)
    lo = np.asarray(envelope["low"]) - margin
    hi = np.asarray(envelope["high"]) + margin
    return np.asarray(((s < lo) | (s > hi)).any(1))


#: :func:`stats_envelope` of Omniglot's Vinyals training split at 28 x 28, inverted, for checkpoints written before
#: checkpoints recorded their own (``tests/test_images.py`` recomputes it from the real data).
OMNIGLOT_ENVELOPE: dict[str, Any] = {
    "features": list(STAT_NAMES),
    "low": [0.0052, 0.0544, 0.0051],
    "high": [0.1831, 0.3302, 0.1365],
    "images": 82240,
}


def checkpoint_envelope(metadata: dict[str, Any]) -> dict[str, Any] | None:
    """The training-input envelope a checkpoint records, Omniglot's for older Omniglot checkpoints, else None."""
    env = metadata.get("input_envelope")
    if isinstance(env, dict) and {"low", "high"} <= set(env):
        return env
    data = metadata.get("data") or {}
    if data.get("dataset", "omniglot") == "omniglot" and (metadata.get("preprocessing") or {}).get("invert", True):
        return OMNIGLOT_ENVELOPE
    return None


def domain_warning(images: np.ndarray, envelope: dict[str, Any] | None, what: str) -> str | None:
    """A one-line warning when most of a batch (or a single input) looks unlike the encoder's training images."""
    if envelope is None or len(images) == 0:
        return None
    bad = out_of_envelope(images, envelope)
    if bad.sum() == 0 or bad.mean() < 0.5:
        return None
    s = image_stats(images[bad]).mean(0)
    lo, hi = envelope["low"], envelope["high"]
    detail = ", ".join(f"{n} {v:.2f} (training {a:.2f}-{b:.2f})" for n, v, a, b in zip(STAT_NAMES, s, lo, hi, strict=False))
    return (
        f"{int(bad.sum())} of {len(images)} inputs look unlike the images {what} was trained on ({detail}): "
        "scores may be meaningless; check the preprocessing with `oneshot info` (inversion, channels) or use "
        "an encoder trained on such images"
    )
