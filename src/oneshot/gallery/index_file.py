"""The framing the gallery's index files share: a magic string, little-endian 64-bit section sizes (the first
is the JSON header's), the header and the sized sections, then whatever a format adds (see
:mod:`oneshot.gallery.index` and :mod:`oneshot.gallery.tanimoto` for what each writes)."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any


def read_frame(path: Path, magic: bytes, n_sizes: int) -> tuple[dict[str, Any], list[memoryview], memoryview]:
    """(JSON header, the other sized sections, the rest of the file) of an index file whose ``n_sizes`` section
    sizes (the header's first) follow ``magic``.

    Raises:
        OSError: the file cannot be read. ValueError (``json.JSONDecodeError`` among them) or ``struct.error``:
            it does not start with ``magic``, a section is cut short, or the header is not JSON.
    """
    data = memoryview(path.read_bytes())
    if bytes(data[: len(magic)]) != magic:
        raise ValueError("not an index file of this kind")
    at = len(magic) + 8 * n_sizes
    sizes = struct.unpack("<" + "Q" * n_sizes, data[len(magic) : at])
    sections = []
    for size in sizes:
        sections.append(data[at : at + size])
        at += size
    if any(len(section) != size for section, size in zip(sections, sizes, strict=True)):
        raise ValueError("a section is cut short")
    return json.loads(bytes(sections[0])), sections[1:], data[at:]


def header_fields(file_format: int, index: Any, epoch: int, generation: int) -> dict[str, Any]:
    """The header fields every index file starts with, in this order: format, kind, dim, epoch, generation and
    the largest class id (``index`` has ``kind``, ``dim`` and ``max_id``)."""
    return {
        "format": file_format,
        "kind": index.kind,
        "dim": index.dim,
        "epoch": epoch,
        "generation": generation,
        "max_id": index.max_id,
    }


def frame(magic: bytes, header: dict[str, Any], sized: list[bytes], rest: list[bytes]) -> bytes:
    """The bytes of an index file: ``magic``, the sizes of the JSON header and of each ``sized`` section, the
    header, those sections, then ``rest`` (whose sizes the header records)."""
    head = json.dumps(header).encode()
    sizes = struct.pack("<" + "Q" * (1 + len(sized)), len(head), *(len(s) for s in sized))
    return b"".join([magic, sizes, head, *sized, *rest])
