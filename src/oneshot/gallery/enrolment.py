"""Enrolment: validate and embed a class's examples before anything is written, then write them in one go.

:func:`prepare` turns (label, examples) into a :class:`Prepared` enrolment (unit embeddings and what the
gallery keeps of each example); :func:`write_enrolments` inserts new classes or refines existing ones inside
the caller's transaction. A label given twice in one batch is one enrolment of all its examples. Importing
from another gallery writes through the same function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from oneshot.errors import OneshotError
from oneshot.gallery.class_store import Transaction
from oneshot.gallery.examples import as_list, check_label, class_template, embed_examples
from oneshot.modalities import Embedder, Example, check_vectors

#: What a gallery keeps of each example besides its embedding: the input bytes, the absolute path, or nothing.
STORE_MODES = ("inputs", "paths", "none")


@dataclass
class Prepared:
    """Validated examples of one enrolment: unit embeddings (n, D) and, per example, the stored input bytes,
    path (each None when not kept) and source name."""

    label: str
    vectors: np.ndarray
    inputs: list[bytes | None]
    paths: list[str | None]
    sources: list[str]
    metadata: dict[str, Any] | None = None

    def merged(self, other: Prepared) -> Prepared:
        """This enrolment followed by ``other`` of the same label."""
        return Prepared(
            self.label,
            np.concatenate([self.vectors, other.vectors]),
            self.inputs + other.inputs,
            self.paths + other.paths,
            self.sources + other.sources,
            self.metadata or other.metadata,
        )


def prepare(
    label: str,
    examples: Sequence[Example] | np.ndarray,
    dim: int,
    embedder: Callable[[], Embedder],
    store_mode: str,
    metadata: dict[str, Any] | None = None,
) -> Prepared:
    """Validate and embed one enrolment's examples (files, bytes, inline values or (D,) / (n, D) embeddings)."""
    label = check_label(label)
    if isinstance(examples, np.ndarray) and examples.dtype != object:
        if examples.ndim not in (1, 2):
            raise OneshotError(f"examples of {label!r} have shape {examples.shape}: give (D,) or (n, D) embeddings")
        examples = list(np.atleast_2d(examples))
    items = as_list(examples, f"no examples given for {label!r}: enrol at least one")
    vectors, raw = embed_examples(
        items, dim, embedder, lambda i: f"example {i} of {label!r}", f"the encoder's embedding of {label!r}"
    )
    return Prepared(
        label,
        vectors,
        inputs=[r.data if r is not None and store_mode == "inputs" else None for r in raw],
        paths=[r.path if r is not None and store_mode == "paths" else None for r in raw],
        sources=[r.name if r is not None else "vector" for r in raw],
        metadata=metadata,
    )


def with_synthetic(prep: Prepared, generator: Callable[[], Any], augment: int | None, dim: int) -> Prepared:
    """``prep`` and ``augment`` synthetic examples per real one from the embedder's generator (``generator()``:
    a :mod:`oneshot.generative` generator or None), stored as vectors of source ``synthetic``.

    ``None`` means the generator's validated default: on (8 per example) only when validation said it helps."""
    gen = generator()
    if augment is None:
        augment = 8 if gen is not None and gen.helps else 0
    if isinstance(augment, bool) or not isinstance(augment, int) or not 0 <= augment <= 100:
        raise OneshotError(f"augment={augment!r}: give a whole number of synthetic examples from 0 to 100")
    if augment == 0:
        return prep
    if gen is None:
        raise OneshotError(
            "this gallery's encoder has no generator (a <checkpoint>.generator.safetensors beside it): "
            "enrol without augment, or fit one with benchmarks/generative_augmentation.py"
        )
    synth = gen.sample(prep.vectors, augment, seed=0).reshape(-1, dim)
    synth = check_vectors(synth, dim, "synthetic examples")
    n = len(synth)
    return Prepared(
        prep.label,
        np.concatenate([prep.vectors, synth]),
        prep.inputs + [None] * n,
        prep.paths + [None] * n,
        prep.sources + ["synthetic"] * n,
        prep.metadata,
    )


def one_vector_each(labels: Sequence[str], vectors: np.ndarray) -> list[Prepared]:
    """Enrolments of one (already validated) unit embedding per label: labels (N,), vectors (N, D)."""
    return [Prepared(check_label(lab), vectors[i : i + 1], [None], [None], ["vector"]) for i, lab in enumerate(labels)]


def write_enrolments(tx: Transaction, items: list[Prepared], dim: int, now: str) -> list[tuple[int, bool, int]]:
    """Insert or refine the classes of ``items`` inside the transaction ``tx``.

    Returns:
        (class id, created, total examples) per item.
    """
    merged: dict[str, Prepared] = {}
    for it in items:
        merged[it.label] = merged[it.label].merged(it) if it.label in merged else it
    store = tx.store
    existing = store.find_labels(list(merged))
    result: dict[str, tuple[int, bool, int]] = {}
    new = [it for lab, it in merged.items() if lab not in existing]
    if new:
        first = store.next_class_id()
        rows = [(first + j, it.label, class_template(it.vectors), len(it.vectors), it.metadata) for j, it in enumerate(new)]
        tx.insert_classes(rows, now)
        result.update({it.label: (cid, True, len(it.vectors)) for (cid, *_), it in zip(rows, new, strict=False)})
    examples: list[tuple[int, np.ndarray, bytes | None, str | None, str]] = []
    for it in merged.values():
        if it.label in existing:
            cid, _ = existing[it.label]
            allv = np.concatenate([store.example_vectors(cid, dim), it.vectors])
            tx.refine_class(cid, class_template(allv), len(allv), now, it.metadata)
            result[it.label] = (cid, False, len(allv))
        cid = result[it.label][0]
        examples.extend(
            (cid, v, inp, p, src) for v, inp, p, src in zip(it.vectors, it.inputs, it.paths, it.sources, strict=False)
        )
    tx.add_examples(examples, now)
    return [result[it.label] for it in items]
