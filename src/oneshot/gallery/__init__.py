"""The gallery: enrol classes from one example, identify, verify and reject strangers, persistently.

See ``docs/gallery.md``. :class:`Gallery` is the API; ``oneshot gallery ...`` (:mod:`oneshot.gallery.cli`) is
the command line on top of it. Names are imported lazily, so the CLI starts without loading FAISS.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ImageEmbedder": "oneshot.modalities.image",
    "Embedder": "oneshot.modalities.base",
    "Inline": "oneshot.modalities.base",
    "ClassInfo": "oneshot.gallery.results",
    "EnrolReport": "oneshot.gallery.results",
    "Gallery": "oneshot.gallery.gallery",
    "Identification": "oneshot.gallery.results",
    "Match": "oneshot.gallery.results",
    "Verification": "oneshot.gallery.results",
    "IndexSettings": "oneshot.gallery.index_settings",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'oneshot.gallery' has no attribute {name!r}")
