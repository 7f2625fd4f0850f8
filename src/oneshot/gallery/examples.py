"""Examples in, unit vectors out: labels checked, examples read by the gallery's embedder, vectors validated.

What a gallery is given as one example is a file path, bytes, an :class:`~oneshot.modalities.Inline` value or
an embedding (D,); the embedder reads and embeds all but the last, in one batch. Templates are computed here
too (:func:`class_template`), so enrolment, import and re-embedding agree on them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from oneshot.errors import OneshotError
from oneshot.modalities import Embedder, Example, Inline, RawInput, check_vectors

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SINGLE = (str, Path, bytes, Inline)


def unit(v: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation of (B, D) (or (D,))."""
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return (v / np.maximum(n, 1e-12)).astype(np.float32)


def class_template(vectors: np.ndarray) -> np.ndarray:
    """A class's template from its examples' unit embeddings (n, D): the normalised mean (its prototype)."""
    return vectors[0] if len(vectors) == 1 else unit(vectors.mean(0))


def check_label(label: str) -> str:
    """A class label stripped of surrounding space; a :class:`OneshotError` for an empty, long or odd one."""
    if not isinstance(label, str) or not label.strip():
        raise OneshotError("a class label must be a non-empty string")
    label = label.strip()
    if len(label) > 256 or _CONTROL.search(label):
        raise OneshotError(f"label {label[:40]!r}... is too long or holds control characters: use a short plain name")
    return label


def as_list(examples: Sequence[Example] | Example, empty: str) -> list[Example]:
    """One example or several, as a list; ``empty`` is the error for none."""
    if isinstance(examples, _SINGLE):
        return [examples]
    if examples is None or len(examples) == 0:
        raise OneshotError(empty)
    return list(examples)


def embed_examples(items: Sequence[Example], dim: int, embedder: Callable[[], Embedder], item: Callable[[int], str],
                   embedding: str) -> tuple[np.ndarray, list[RawInput | None]]:
    """Unit vectors (n, D) of ``items`` and, for each, what the embedder read (None for a given embedding).

    Args:
        embedder: returns the gallery's embedder (called only when an item needs reading).
        item: names item i in errors about a given embedding; ``embedding`` names the embedder's output.
    """
    vectors = np.zeros((len(items), dim), np.float32)
    raw: dict[int, RawInput] = {}
    for i, x in enumerate(items):
        if isinstance(x, np.ndarray):
            vectors[i] = check_vectors(x, dim, item(i))[0]
        else:
            raw[i] = embedder().read(x)
    if raw:
        emb = embedder().embed([r.data for r in raw.values()], [r.name for r in raw.values()])
        vectors[list(raw)] = check_vectors(emb, dim, embedding)
    return vectors, [raw.get(i) for i in range(len(items))]
