"""Binding a gallery to its embedder: what a new gallery records, and refusing an embedder of another fingerprint.

A gallery records its embedder's fingerprint and ``spec`` (a built-in name or a path, in the meta key
``encoder_path``, named before modalities existed). A gallery without an embedder (``dim=`` at creation) holds
precomputed vectors and records a ``vectors`` fingerprint.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from oneshot.errors import OneshotError
from oneshot.gallery.class_store import ClassStore
from oneshot.gallery.enrolment import STORE_MODES
from oneshot.gallery.identify_rule import RULE_KEY, default_rule
from oneshot.gallery.index_settings import IndexSettings
from oneshot.modalities import Embedder, fingerprint_id, fingerprint_modality, load_embedder, vector_fingerprint


def new_gallery_meta(enc: Embedder | None, dim: int | None, store: str, name: str, now: str) -> dict[str, Any]:
    """The meta of a new gallery, after checking the creation arguments (see ``Gallery.open``)."""
    if store not in STORE_MODES:
        raise OneshotError(f"unknown store mode {store!r}: choose one of {', '.join(STORE_MODES)}")
    if enc is None and dim is None:
        raise OneshotError("a new gallery needs an encoder checkpoint (or, for precomputed vectors, their dim)")
    if enc is not None and dim is not None and dim != enc.dim:
        raise OneshotError(f"dim {dim} does not match the encoder's {enc.dim}: leave dim out")
    fp = enc.fingerprint if enc is not None else vector_fingerprint(int(dim), name)  # type: ignore[arg-type]
    rule = default_rule(fingerprint_modality(fp))  # recorded only where it differs from an older gallery's
    return {
        "fingerprint": fp,
        "dim": int(fp["dim"]),
        "store": store,
        "index": IndexSettings().to_dict(),
        "encoder_path": enc.spec if enc is not None else None,
        "threshold": None,
        "calibration": None,
        "created": now,
        "gallery_id": new_gallery_id(),
    } | ({RULE_KEY: rule} if rule != "nearest_template" else {})


def new_gallery_id() -> str:
    """A random id binding a gallery file to its index cache (a copy made by ``export`` gets a new one)."""
    return uuid.uuid4().hex


def check_embedder(path: Path, fingerprint: dict[str, Any], enc: Embedder) -> Embedder:
    """``enc`` when its fingerprint is the gallery's; otherwise a :class:`OneshotError` naming both."""
    if fingerprint_id(enc.fingerprint) != fingerprint_id(fingerprint):
        raise OneshotError(
            f"gallery {path} was built with encoder {fingerprint_id(fingerprint)} "
            f"({fingerprint.get('kind')}), this one is {fingerprint_id(enc.fingerprint)}: use the gallery's "
            "encoder, or move the gallery to the new one with `oneshot gallery reembed`"
        )
    return enc


def load_recorded(path: Path, fingerprint: dict[str, Any], modality: str, where: str | None) -> Embedder:
    """The embedder a gallery recorded (``where``: its spec), checked against the gallery's fingerprint."""
    if modality == "vectors":
        raise OneshotError(f"gallery {path} holds precomputed vectors and has no encoder: give embeddings, not files")
    if not where:
        raise OneshotError(f"gallery {path} records no encoder: pass --encoder")
    try:
        enc = load_embedder(where)
    except OneshotError as exc:
        raise OneshotError(f"the encoder of gallery {path} ({where}) cannot be loaded ({exc}): pass --encoder") from None
    return check_embedder(path, fingerprint, enc)


def read_meta(store: ClassStore) -> dict[str, Any]:
    """The gallery's meta, checked to hold a fingerprint and a dimension; on any error the store is closed and
    a :class:`OneshotError` says what to do."""
    try:
        with store.read():
            meta = store.all_meta()
        if not isinstance(meta.get("fingerprint"), dict) or type(meta.get("dim")) is not int or meta["dim"] < 1:
            raise ValueError("fingerprint or dim")
    except OneshotError:
        store.close()
        raise
    except (ValueError, TypeError, KeyError) as exc:
        store.close()
        raise OneshotError(f"gallery {store.path} has damaged meta ({exc}): restore it from an export") from None
    return meta
