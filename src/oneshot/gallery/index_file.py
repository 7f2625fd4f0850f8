"""The framing the gallery's index files share: a magic string, little-endian 64-bit section sizes (the first
is the JSON header's), the header, then the sections (see :mod:`oneshot.gallery.index` and
:mod:`oneshot.gallery.tanimoto` for what each writes)."""

from __future__ import annotations

import json
import struct
from typing import Any, BinaryIO


def read_frame(f: BinaryIO, magic: bytes, n_sizes: int) -> tuple[dict[str, Any], tuple[int, ...]] | None:
    """The JSON header and the other sections' sizes from an open index file, or None when ``magic`` is not
    its start. ``n_sizes`` counts the header's size too. Raises ``struct.error`` / ``ValueError`` when cut short."""
    if f.read(len(magic)) != magic:
        return None
    sizes = struct.unpack("<" + "Q" * n_sizes, f.read(8 * n_sizes))
    return json.loads(f.read(sizes[0])), sizes[1:]
