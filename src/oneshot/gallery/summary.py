"""``Gallery.info``: what a gallery holds and how it decides, in one JSON-ready dict."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from oneshot.gallery import cohort, thresholds
from oneshot.modalities import fingerprint_id

if TYPE_CHECKING:
    from oneshot.gallery.gallery import Gallery


def gallery_info(g: Gallery) -> dict[str, Any]:
    """Size, encoder fingerprint, thresholds and calibration, index, rules and cohort of ``g``, with a
    ``warning`` when the recorded calibration may no longer hold (:func:`~.thresholds.calibration_warning`)."""
    meta = g.store.all_meta()
    n_ex = g.store.count_examples()
    idx = g._index()
    info = {
        "path": str(g.path),
        "classes": len(g),
        "examples": n_ex,
        "dim": g.dim,
        "encoder": fingerprint_id(g.fingerprint),
        "fingerprint": g.fingerprint,
        "encoder_path": meta.get("encoder_path"),
        "store": g.store_mode,
        "threshold": meta.get("threshold"),
        "calibration": meta.get("calibration"),
        "index": {"kind": idx.kind, **g.settings.to_dict()},
        "identify_rule": g.identify_rule,
        "rejection_score": g.rejection_score,
        "cohort": cohort.read_info(g.store),
        "generation": g.index_cache.generation,
        "created": meta.get("created"),
    }
    warning = thresholds.calibration_warning(meta.get("calibration"), len(g), n_ex)
    if warning is not None:
        info["warning"] = warning
    return info
