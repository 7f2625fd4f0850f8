"""Checking what a client sends before any model sees it: labels, metadata, file bytes, image headers.

Content is sniffed from the bytes (magic numbers, then PIL's header parser), never trusted from the file
name or the declared content type. An image's width x height is read from its header -- ``Image.open``
without ``load()`` decodes no pixels -- so a decompression bomb is refused before it is decoded.
"""

from __future__ import annotations

import io
import json
import re
import struct
import unicodedata
import warnings
from typing import Any

from PIL import Image, UnidentifiedImageError

from oneshot.errors import OneshotError
from oneshot.modalities import Embedder, Inline
from oneshot.modalities.base import sniff, wrong_modality
from oneshot.service.errors import ApiError

MAX_LABEL_CHARS = 128
MAX_METADATA_BYTES = 4096
_PATHLIKE = re.compile(r"[/\\]|\.\.")


def check_label(label: str, field: str = "label") -> str:
    """A label safe everywhere it is shown or used: 1-128 characters, no control or format characters, no
    path characters (``/``, ``\\``, ``..``). Surrounding spaces are removed."""
    if not isinstance(label, str):
        raise ApiError(422, "invalid_label", f"{field} must be text")
    label = label.strip()
    if not label:
        raise ApiError(422, "invalid_label", f"{field} is empty: give the class a name")
    if len(label) > MAX_LABEL_CHARS:
        raise ApiError(422, "invalid_label", f"{field} has {len(label)} characters: use at most {MAX_LABEL_CHARS}")
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") for c in label):
        raise ApiError(422, "invalid_label", f"{field} holds control or invisible characters: use plain text")
    if _PATHLIKE.search(label):
        raise ApiError(422, "invalid_label", f"{field} holds path characters ('/', '\\' or '..'): use a plain name")
    return label


def parse_metadata(text: str | None) -> dict[str, Any] | None:
    """The optional ``metadata`` form field: a JSON object of at most 4 KiB."""
    if text is None or text == "":
        return None
    if len(text.encode("utf-8", "surrogatepass")) > MAX_METADATA_BYTES:
        raise ApiError(422, "invalid_metadata", f"metadata is longer than {MAX_METADATA_BYTES} bytes: keep it short")
    try:
        value = json.loads(text)
    except ValueError:
        raise ApiError(
            422, "invalid_metadata", 'metadata is not valid JSON: give a JSON object such as {"room": "B12"}'
        ) from None
    if not isinstance(value, dict):
        raise ApiError(422, "invalid_metadata", 'metadata must be a JSON object such as {"room": "B12"}')
    return value


def check_image_header(data: bytes, max_pixels: int, name: str) -> None:
    """Refuse bytes PIL cannot identify as an image (415) or whose header claims more than ``max_pixels`` (413)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:  # parses the header only; no pixel is decoded
                w, h = im.size
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ApiError(413, "too_many_pixels", f"{name} is far larger than {max_pixels} pixels: send a smaller picture") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, struct.error):
        raise ApiError(
            415, "unsupported_media", f"{name} is not a readable image: send a PNG, JPEG, GIF, BMP, TIFF or WebP picture"
        ) from None
    if w * h > max_pixels:
        raise ApiError(
            413,
            "too_many_pixels",
            f"{name} is {w}x{h} = {w * h} pixels, above this service's limit of {max_pixels}: send a smaller picture",
        )
    if w < 1 or h < 1:
        raise ApiError(415, "unsupported_media", f"{name} has no pixels: send a picture")


def prepare_examples(
    files: list[tuple[str, bytes]], values: list[str], embedder: Embedder, modality: str, max_pixels: int, max_files: int
) -> list[bytes | Inline]:
    """Uploaded files (name, bytes) and inline values -> examples for the gallery, each checked.

    Files are sniffed: an image gallery takes only images (header-checked for size), any other modality
    refuses images with a message naming both; inline values are wrapped as ``Inline(value, modality)``.
    The embedder's own ``read`` then validates each example without embedding it.
    """
    if len(files) + len(values) == 0:
        raise ApiError(422, "invalid_request", "no example given: attach a file (field 'files') or give a value (field 'value')")
    if len(files) + len(values) > max_files:
        raise ApiError(422, "too_many_files", f"{len(files) + len(values)} examples in one request: send at most {max_files}")
    out: list[bytes | Inline] = []
    for name, data in files:
        name = _display(name)
        if not data:
            raise ApiError(422, "empty_file", f"{name} is empty: attach the file's content")
        kind = sniff(data)
        if modality == "image":
            if kind != "image":
                raise ApiError(
                    415,
                    "unsupported_media",
                    f"{name} is not an image (its bytes say {kind}): send a PNG, JPEG, GIF, BMP, TIFF or WebP picture",
                )
            check_image_header(data, max_pixels, name)
        elif kind == "image":
            raise ApiError(415, "unsupported_media", str(wrong_modality(modality, f"an image ({name})", "this service")))
        out.append(data)
    if values and modality == "image":
        raise ApiError(
            415, "unsupported_media", "this gallery embeds images: attach a picture file (field 'files'), not a text value"
        )
    for v in values:
        if not v.strip():
            raise ApiError(422, "empty_file", "an inline value is empty: give some text")
        out.append(Inline(v, kind=modality))
    for ex in out:
        try:
            embedder.read(ex)
        except OneshotError as exc:
            raise ApiError(415, "unsupported_media", str(exc)) from None
    return out


def _display(name: str | None) -> str:
    """A file name safe to echo in a message (no control characters, bounded)."""
    name = "".join(c for c in (name or "upload") if c.isprintable())[:80]
    return repr(name or "upload")
