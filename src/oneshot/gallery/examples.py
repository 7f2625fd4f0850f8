"""Examples in, unit vectors out: labels checked, examples read by the gallery's embedder, vectors validated.

What a gallery is given as one example is a file path, bytes, an :class:`~oneshot.modalities.Inline` value or
an embedding (D,); the embedder reads and embeds all but the last, in one batch. Templates are computed here
too (:func:`class_template`), so enrolment, import and re-embedding agree on them.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from oneshot.errors import OneshotError
from oneshot.modalities import Embedder, Example, Inline, RawInput, check_vectors

_SINGLE = (str, Path, bytes, Inline)


def unit(v: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation of (B, D) (or (D,))."""
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return (v / np.maximum(n, 1e-12)).astype(np.float32)


def class_template(vectors: np.ndarray) -> np.ndarray:
    """A class's template from its examples' unit embeddings (n, D): the normalised mean (its prototype)."""
    return vectors[0] if len(vectors) == 1 else unit(vectors.mean(0))


def label_key(label: str) -> str:
    """A label to look up (forget, rename, verify): NFC form, no other check, so that a label stored before
    the checks of :func:`check_label` existed can still be named."""
    if not isinstance(label, str) or not label:
        raise OneshotError("a class label must be a non-empty string")
    return unicodedata.normalize("NFC", label)


#: The longest label a gallery accepts (characters, after NFC normalisation).
MAX_LABEL = 256


def check_label(label: str) -> str:
    """A class label in Unicode NFC form; a :class:`OneshotError` for anything two users could not tell apart.

    Labels that print the same must be the same label: the label is normalised to NFC (so composed and
    decomposed accents agree) and refused when empty, longer than :data:`MAX_LABEL` characters, with leading
    or trailing white space, or holding an invisible character -- control characters (newlines, escape
    sequences), format characters (zero-width spaces and joiners, bidirectional controls such as U+202E),
    separators other than the plain space, private-use, surrogate or unassigned code points.
    """
    if not isinstance(label, str) or not label.strip():
        raise OneshotError("a class label must be a non-empty string")
    label = unicodedata.normalize("NFC", label)
    if len(label) > MAX_LABEL:
        raise OneshotError(f"label {label[:40]!r}... has {len(label)} characters: use at most {MAX_LABEL}")
    if label != label.strip():
        raise OneshotError(f"label {label!r} starts or ends with white space: remove it")
    for ch in label:
        cat = unicodedata.category(ch)
        if cat[0] == "C" or (cat[0] == "Z" and ch != " "):
            name = unicodedata.name(ch, "unnamed")
            raise OneshotError(
                f"label {label[:40]!r} holds the invisible character U+{ord(ch):04X} ({name}): "
                "use printable characters and plain spaces only"
            )
    return label


def as_list(examples: Sequence[Example] | Example, empty: str) -> list[Example]:
    """One example or several, as a list; ``empty`` is the error for none."""
    if isinstance(examples, _SINGLE):
        return [examples]
    if examples is None or len(examples) == 0:
        raise OneshotError(empty)
    return list(examples)


def embed_examples(
    items: Sequence[Example], dim: int, embedder: Callable[[], Embedder], item: Callable[[int], str], embedding: str
) -> tuple[np.ndarray, list[RawInput | None]]:
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
