"""The gallery's thresholds: read, set by hand, or set from a calibration on validation data of a domain.

A calibration (:func:`oneshot.gallery.calibration.calibrate`) is recorded with the domain it was measured on:
data of a named domain other than the encoder's training domain is refused (a handwriting threshold is
meaningless for faces), and data whose pixels mostly look unlike the encoder's training images is recorded as a
mismatch. :func:`calibration_warning` says when a recorded calibration no longer fits the gallery.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from oneshot.errors import OneshotError
from oneshot.gallery import calibration, rejection
from oneshot.gallery.class_store import ClassStore
from oneshot.gallery.normalise import CohortNorm
from oneshot.modalities import Embedder, check_vectors
from oneshot.ranges import in_range


def read_thresholds(store: ClassStore, score: str = rejection.TEMPLATE_COSINE) -> dict[str, float | None]:
    """The current ``identify`` and ``verify`` thresholds (None when not set; identify also when it was set on
    another rejection score than ``score``, :mod:`oneshot.gallery.rejection`; verify when it is on another score
    than :func:`~oneshot.gallery.rejection.verify_score` of ``score``)."""
    t = store.get_meta("threshold") or {}
    same = rejection.threshold_score(t) == score
    same_verify = rejection.verify_score(rejection.threshold_score(t)) == rejection.verify_score(score)
    return {"identify": t.get("identify") if same else None, "verify": t.get("verify") if same_verify else None}


def set_manual_thresholds(
    store: ClassStore, identify: float | None, verify: float | None, now: str, score: str = rejection.TEMPLATE_COSINE
) -> None:
    """Set thresholds by hand (recorded as ``manual``, the identify one on the rejection ``score``; a threshold
    left None keeps its value)."""
    low, high = rejection.SCORE_RANGE[score]
    in_range(f"identify threshold (a {score} score)", identify, low, high)
    v_score = rejection.verify_score(score)
    in_range(f"verify threshold (a {v_score} score)", verify, *rejection.SCORE_RANGE[v_score])
    cur = read_thresholds(store, score)
    with store.write() as tx:
        tx.set_meta(
            "threshold",
            {
                "identify": identify if identify is not None else cur["identify"],
                "verify": verify if verify is not None else cur["verify"],
                "identify_score": score,
                "source": "manual",
                "set": now,
            },
        )


def encoder_domain(modality: str, embedder: Callable[[], Embedder]) -> str | None:
    """The training domain of the gallery's embedder (``omniglot``, ``att_faces`` ...) when it records one."""
    if modality == "vectors":
        return None
    try:
        return getattr(embedder(), "domain", None)
    except OneshotError:
        return None


def gallery_shots(store: ClassStore) -> int:
    """The examples per class a calibration should simulate for this gallery: the median ``n_examples`` of its
    classes (a text description counts as an example), at least 1; 1 for an empty gallery."""
    with store.read():
        counts = [row[2] for row in store.list_classes()]
    return max(1, int(np.median(counts))) if counts else 1


def supported_shots(labels: np.ndarray, wanted: int) -> int:
    """The largest K <= ``wanted`` for which at least 4 validation classes have K + 1 examples (at least 1)."""
    counts = np.sort(np.unique(np.asarray(labels), return_counts=True)[1])[::-1]
    fourth = int(counts[3]) if len(counts) >= 4 else 0
    return max(1, min(wanted, fourth - 1))


def shots_for(store: ClassStore, labels: np.ndarray, shots: int | None) -> dict[str, Any]:
    """``shots`` / ``shots_wanted`` for :func:`calibration_record`: an explicit ``shots`` as given, else the
    gallery's (:func:`gallery_shots`) capped by what the validation ``labels`` allow (:func:`supported_shots`)."""
    if shots is not None:
        return {"shots": shots}
    wanted = gallery_shots(store)
    return {"shots": supported_shots(labels, wanted), "shots_wanted": wanted}


def calibration_record(
    embeddings: np.ndarray,
    labels: np.ndarray,
    dim: int,
    n_classes: int,
    *,
    target_far: float,
    gallery_size: int | None,
    trials: int,
    seed: int,
    source: str,
    domain: str | None,
    enc_domain: str | None,
    unlike_fraction: float | None,
    now: str,
    identify_score: str = rejection.TEMPLATE_COSINE,
    shots: int = 1,
    shots_wanted: int | None = None,
    cohort: CohortNorm | None = None,
    groups: np.ndarray | None = None,
    verify_source: dict[str, Any] | None = None,
    confidence: float | None = None,
) -> dict[str, Any]:
    """The calibration record of validation embeddings (N, D) with labels (N,) for a gallery of ``gallery_size``
    classes (default: ``n_classes``, at least 1), with the domain it was measured on (see ``Gallery.calibrate``).

    The verify threshold is on the cosine (on S-norm for ``snorm``); the identify threshold, its measured rates
    and the ``stranger_best`` / ``genuine_best`` summaries are on ``identify_score`` (recorded in the record): for
    ``mean_distance`` the same simulated splits (same seed) are scored by
    :func:`oneshot.gallery.rejection.one_shot_mean_distance`; for ``snorm`` every score (verify and identify) is
    ``cohort.scores`` (the gallery's stored cohort, required then). Templates are means of ``shots`` examples;
    ``shots_wanted`` (the gallery's own examples per class, when more than the validation classes allow) is
    recorded with a note. ``groups`` (N,): each example's family, for thresholds that hold against sibling
    strangers (:func:`oneshot.gallery.calibration.calibrate`). ``verify_source``: the verify threshold measured on
    the gallery's own enrolments (:func:`oneshot.gallery.enrolment_impostors.verify_from_enrolments`), used
    instead of the validation one; None: from the validation classes. ``confidence``: thresholds that keep the
    rates at most ``target_far`` with that confidence (:func:`oneshot.gallery.calibration.allowed_exceedances`)."""
    if domain is not None and enc_domain is not None and domain != enc_domain:
        raise OneshotError(
            f"calibration data is {domain} but the gallery's encoder was trained on {enc_domain}: "
            f"calibrate on validation classes of {enc_domain} (e.g. --folder DIR)"
        )
    in_range("target_far", target_far, 0, 1, low_open=True, high_open=True)
    in_range("gallery_size", gallery_size, 1)
    in_range("trials", trials, 1, 100000)
    x = check_vectors(embeddings, dim, "calibration embeddings")
    size = gallery_size if gallery_size is not None else max(1, n_classes)
    given: dict[str, Any] = {"confidence": confidence}
    if verify_source is not None:
        given["verify_threshold"] = verify_source["threshold"]
    if identify_score == rejection.SNORM:
        if cohort is None:
            raise OneshotError("snorm calibration needs the gallery's cohort: set one with `oneshot gallery cohort`")
        rec = calibration.calibrate(
            x, np.asarray(labels), target_far, size, trials, seed, snorm_score(cohort), shots=shots, groups=groups, **given
        )
        rec["cohort"] = {"size": len(cohort.cohort), "k": cohort.k}
    else:
        rec = calibration.calibrate(x, np.asarray(labels), target_far, size, trials, seed, shots=shots, groups=groups, **given)
    if identify_score == rejection.MEAN_DISTANCE:
        md = calibration.calibrate(
            x,
            np.asarray(labels),
            target_far,
            size,
            trials,
            seed,
            rejection.one_shot_mean_distance,
            shots=shots,
            groups=groups,
            confidence=confidence,
        )
        rec["identify_threshold"] = md["identify_threshold"]
        for key in ("identify_far", "identify_tar"):
            rec["measured"][key] = md["measured"][key]
        for key in ("stranger_best", "genuine_best"):
            rec["scores"][key] = md["scores"][key]
    rec["identify_score"] = identify_score
    rec["verify_source"] = verify_source or {"source": "validation"}
    if verify_source is not None:
        rec["notes"].append(
            f"verify threshold from the gallery's own {verify_source['comparisons']} impostor comparisons "
            f"({verify_source['classes']} classes; validation's would be {rec['validation_verify_threshold']:.4f}): "
            f"it assumes {verify_source['assumes']}"
        )
    if shots_wanted is not None and shots_wanted > shots:
        rec["shots_wanted"] = int(shots_wanted)
        rec["notes"].append(
            f"the gallery's classes have {shots_wanted} examples each (median) but the validation classes allow "
            f"templates of {shots}: give validation classes with {shots_wanted + 1}+ examples for thresholds that fit"
        )
    rec["source"] = source
    mismatch = unlike_fraction is not None and unlike_fraction > 0.5
    rec["domain"] = {
        "data": domain or source or "embeddings",
        "encoder": enc_domain,
        "unlike_encoder_inputs": unlike_fraction,
        "mismatch": bool(mismatch),
    }
    if unlike_fraction is not None and mismatch:
        rec["notes"].append(
            f"{100 * unlike_fraction:.0f}% of the calibration inputs look unlike the images the "
            f"encoder ({enc_domain}) was trained on: these thresholds may not hold for its domain"
        )
    rec["date"] = now
    return rec


def snorm_score(cohort: CohortNorm) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Calibration's score for ``snorm``: (Q, D) unit queries x (T, D) templates (means of K examples,
    re-normalised as the gallery's templates are) -> (Q, T) S-norm."""

    def score(q: np.ndarray, t: np.ndarray) -> np.ndarray:
        return cohort.scores(q, t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12))

    return score


def save_calibration(store: ClassStore, rec: dict[str, Any], target_far: float) -> None:
    """Store a calibration record and the thresholds it chose (recorded as ``calibrated``), in one transaction."""
    with store.write() as tx:
        tx.set_meta("calibration", rec)
        tx.set_meta(
            "threshold",
            {
                "identify": rec["identify_threshold"],
                "verify": rec["verify_threshold"],
                "identify_score": rec.get("identify_score", rejection.TEMPLATE_COSINE),
                "source": "calibrated",
                "target_far": target_far,
                "set": rec["date"],
            },
        )


def calibration_warning(cal: dict[str, Any] | None, n_classes: int, n_examples: int = 0) -> str | None:
    """Why the recorded calibration ``cal`` may not hold for a gallery of ``n_classes`` classes holding
    ``n_examples`` stored examples (0: not known), or None."""
    said: list[str] = []
    shots = int((cal or {}).get("shots", 1))
    per = n_examples / n_classes if n_classes and n_examples else None
    if cal and per is not None and not (shots / 2 < per < shots * 2):
        said.append(
            f"calibrated with templates of {shots} example{'s' if shots != 1 else ''}, the gallery's classes now "
            f"have {per:.1f} on average: the false-accept rates have changed; run calibrate again"
        )
    if cal and n_classes and not (cal["gallery_size"] / 2 <= n_classes <= cal["gallery_size"] * 2):
        said.append(
            f"calibrated for {cal['gallery_size']} classes, the gallery now has {n_classes}: "
            "the identify false-accept rate has changed; run calibrate again"
        )
    if cal and (cal.get("domain") or {}).get("mismatch"):
        said.append(
            f"calibrated on {cal['domain']['data']}, which looks unlike the encoder's "
            f"{cal['domain']['encoder']} training images: calibrate on data of that domain"
        )
    return "; ".join(said) or None


def folder_inputs(
    embed: Callable[[list], np.ndarray], encoder: Embedder, folder: str | Path, families: bool = False
) -> tuple[np.ndarray, np.ndarray, float | None, np.ndarray | None]:
    """A folder of validation classes (one sub-folder of files per class; with ``families``, one sub-folder per
    family holding one per class) -> embeddings (N, D), class labels (N,), the fraction of inputs that look
    unlike the encoder's training images (None when it cannot say) and each example's family (N,) or None."""
    from oneshot.data.folder import list_class_folders

    root = Path(folder)
    if families:
        tops = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
        if not tops:
            raise OneshotError(f"{folder} has no family folders: make one sub-folder per family, each with one per class")
        per_family = []
        for top in tops:
            if not any(p.is_dir() for p in top.iterdir()):
                raise OneshotError(f"family folder {top} holds no class folders: put one sub-folder per class in each family")
            per_family.append(list_class_folders(top))
    else:
        per_family = [list_class_folders(root)]
    class_files = [(fam, fs) for fam, classes in enumerate(per_family) for fs in classes.values()]
    files = [f for _, fs in class_files for f in fs]
    labels = np.repeat(np.arange(len(class_files)), [len(fs) for _, fs in class_files])
    groups = np.repeat([fam for fam, _ in class_files], [len(fs) for _, fs in class_files]) if families else None
    x = embed(files)
    unlike = None
    if hasattr(encoder, "unlike_fraction"):
        unlike = encoder.unlike_fraction([encoder.read(f).data for f in files])
    return x, labels, unlike, groups
