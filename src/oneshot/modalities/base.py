"""What every modality shares: the :class:`Embedder` protocol, example reading, fingerprints, vector checks.

A *modality* (images, text, molecules) is one small module or package under :mod:`oneshot.modalities`: how its
examples are read and validated, its preprocessing, and the :class:`Embedder` s that turn them into vectors.
The gallery, the service and evaluation see only "examples in, float32 (B, D) vectors out" plus the
modality's name, so a text gallery can refuse an image with a message naming both.

Two words, two things:

- an **encoder** (:mod:`oneshot.encoders`) is an ``nn.Module`` a method trains (Conv-4, ResNet-12 ...);
- an **embedder** (this package) is a whole, frozen input pipeline -- reading, preprocessing, a trained
  method's ``embed`` (or a fingerprint function) -- with a *fingerprint* naming everything that shapes its
  vectors. Galleries store embedders' vectors and refuse an embedder with another fingerprint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Union, runtime_checkable

import numpy as np

from oneshot.errors import OneshotError


@dataclass(frozen=True)
class Inline:
    """An example given as a value rather than a file: a sentence (``kind="text"``), a SMILES (``"molecule"``).

    The command line wraps ``--text`` / ``--smiles`` values in it so that the receiving modality can refuse
    a value meant for another one with a message naming both.
    """

    value: str
    kind: str


#: What ``enrol`` / ``identify`` accept as one example: a file path, raw bytes, an :class:`Inline` value, or
#: an embedding (D,). A plain ``str`` means what the gallery's modality says (a path for images, the text
#: itself for text, a SMILES for molecules); a ``Path`` is always a file.
Example = Union[str, Path, bytes, Inline, np.ndarray]


@dataclass(frozen=True)
class RawInput:
    """One example read and checked by a modality, before embedding.

    Attributes:
        data: the bytes the embedder embeds and the gallery may store (so ``reembed`` works anywhere).
        name: a short display name for messages and the gallery's ``source`` column.
        path: the absolute path it was read from, or None.
    """

    data: bytes
    name: str
    path: str | None = None


@runtime_checkable
class Embedder(Protocol):
    """Anything that turns one modality's examples into vectors for a gallery.

    Attributes:
        modality: the modality's name (``image``, ``text``, ``molecule``).
        fingerprint: JSON document that changes whenever the vectors would (weights, preprocessing, dim ...).
        dim: the embedding size D.
        spec: what :func:`oneshot.modalities.load_embedder` accepts to load this embedder again (a built-in
            name or an absolute path), or None when it cannot be reloaded by name.
    """

    modality: str
    fingerprint: dict[str, Any]
    dim: int
    spec: str | None

    def read(self, example: str | Path | bytes | Inline) -> RawInput:
        """Read and validate one example (no embedding yet); a clear ``OneshotError`` when it cannot be used."""
        ...

    def embed(self, inputs: Sequence[bytes], names: Sequence[str]) -> np.ndarray:
        """``RawInput.data`` of B examples -> float32 (B, D); ``names`` label errors."""
        ...


def fingerprint_id(fingerprint: dict[str, Any]) -> str:
    """A short stable id of a fingerprint (first 16 hex digits of the SHA-256 of its canonical JSON)."""
    return hashlib.sha256(json.dumps(fingerprint, sort_keys=True).encode()).hexdigest()[:16]


def fingerprint_modality(fingerprint: dict[str, Any]) -> str:
    """The modality a gallery fingerprint belongs to (image checkpoints predate the ``modality`` field)."""
    if "modality" in fingerprint:
        return str(fingerprint["modality"])
    return "vectors" if fingerprint.get("kind") == "vectors" else "image"


def vector_fingerprint(dim: int, name: str = "vectors") -> dict[str, Any]:
    """Fingerprint of a gallery fed precomputed embeddings (no embedder)."""
    return {"kind": "vectors", "name": name, "dim": int(dim)}


def read_file(x: str | Path, name: str | None = None) -> RawInput:
    """Bytes of a file with a clear error when it cannot be read."""
    p = Path(x)
    try:
        return RawInput(p.read_bytes(), name or str(p), str(p.resolve()))
    except FileNotFoundError:
        raise OneshotError(f"{p} does not exist: check the path") from None
    except IsADirectoryError:
        raise OneshotError(f"{p} is a folder, not an example file: give the files in it") from None
    except OSError as exc:
        raise OneshotError(f"cannot read {p} ({exc.strerror}): check the file and its permissions") from None


#: Leading bytes of common image formats, to name what was given to a modality that cannot use it.
_IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"P5", b"P6", b"P2", b"RIFF")


def sniff(data: bytes) -> str:
    """A guess at what raw bytes hold: ``image`` (by magic bytes), ``text`` (valid UTF-8) or ``binary``."""
    if data.startswith(_IMAGE_MAGIC):
        return "image"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "binary"
    return "text"


def wrong_modality(expected: str, got: str, where: str = "this gallery") -> OneshotError:
    """The error for an example of another modality, naming both."""
    return OneshotError(
        f"{where} embeds {expected} examples and was given {got}: give it {expected}, "
        f"or use a gallery created with a {got} encoder"
    )


def check_vectors(v: np.ndarray, dim: int, what: str = "embedding") -> np.ndarray:
    """Validate and L2-normalise embeddings: (D,) or (B, D) finite, non-zero -> float32 (B, D) unit rows."""
    v = np.asarray(v)
    if v.ndim == 1:
        v = v[None]
    if v.ndim != 2 or v.shape[1] != dim:
        raise OneshotError(f"{what} has shape {tuple(v.shape)}, the gallery needs ({dim},) vectors: use the gallery's encoder")
    if not np.issubdtype(v.dtype, np.number):
        raise OneshotError(f"{what} is not numeric ({v.dtype})")
    v = v.astype(np.float32)
    if not np.isfinite(v).all():
        raise OneshotError(f"{what} contains NaN or infinite values: check the encoder's output")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    if (norms == 0).any():
        raise OneshotError(f"{what} is an all-zero vector and has no direction: it cannot be compared")
    return v / norms
