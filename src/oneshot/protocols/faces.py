"""The AT&T faces protocol: people s1-s20 train (s17-s20 validate), s21-s40 test, never seen in training.

* 20-way 1-shot identification over seeded episodes (9 queries per person), with a 95% CI;
* verification on *all* pairs of test images (900 same-person, 19,000 different-person): ROC, AUC, EER, TAR at
  FAR 1e-2 and 1e-3, cosine similarity;
* the gallery flow: a real :class:`~oneshot.gallery.Gallery` with the checkpoint's own decoding of the original
  PGM files; each of 15 test people enrolled from one image, their other nine images identified, the 5 remaining
  test people (50 images) are strangers; thresholds calibrated on the training people s1-s20 only.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oneshot.data.archives import ATT, _read_members, faces_split
from oneshot.data.images import Preprocessing
from oneshot.data.imageset import ImageSet
from oneshot.data.paths import locate_files
from oneshot.errors import OneshotError
from oneshot.evaluation import embed_all, evaluate
from oneshot.methods.base import Method
from oneshot.verification import VerificationResult, metrics, roc_curve

TEST_WAYS = 20


def all_pairs_verification(z: torch.Tensor, labels: torch.Tensor) -> tuple[VerificationResult, np.ndarray, np.ndarray]:
    """Cosine scores of every unordered pair of embeddings (N, D): metrics, scores, same-class flags."""
    zn = torch.nn.functional.normalize(z.float(), dim=1)
    s = (zn @ zn.T).numpy()
    iu = np.triu_indices(len(z), 1)
    lab = labels.numpy()
    scores, same = s[iu], lab[iu[0]] == lab[iu[1]]
    return metrics(scores, same, 0, "cosine"), scores, same


def score_method(method: Method, test: ImageSet, episodes: int, seed: int = 0) -> dict[str, Any]:
    """20-way 1-shot accuracy (CI) and all-pairs verification of one method on the test people."""
    z = embed_all(method, test.images, torch.device("cpu"))
    acc = evaluate(method, test, TEST_WAYS, 1, 9, episodes, seed, embeddings=z)
    ver, scores, same = all_pairs_verification(z, test.labels)
    far, tar, _ = roc_curve(scores, same)
    return {
        "accuracy": acc.accuracy,
        "ci95": acc.ci95,
        "episodes": episodes,
        "ways": TEST_WAYS,
        "shots": 1,
        "queries": 9,
        "verification": ver.summary(),
        "_roc": (far, tar),
    }


def raw_faces(data_dir: str | Path | None = None) -> dict[str, list[tuple[int, bytes]]]:
    """The original PGM bytes of every person: ``{"s1": [(image number, bytes), ...]}`` in image order."""
    path = locate_files(ATT.dataset, [ATT.remote], data_dir)[ATT.remote.name]
    out: dict[str, list[tuple[int, bytes]]] = {}
    for person, k, _, data in _read_members(path, ATT):
        out.setdefault(person, []).append((k, data))
    return {p: sorted(v) for p, v in out.items()}


def gallery_flow(
    encoder: Any,
    target_fars: tuple[float, ...] = (1e-2, 1e-3),
    strangers: int = 5,
    data_dir: str | Path | None = None,
    augment: int = 0,
    domain: str | None = "att_faces",
) -> dict[str, Any]:
    """Enrol test people from one original image each, identify the rest, reject strangers (see module doc).

    ``encoder`` is a checkpoint path or an embedder; ``domain`` is what the calibration data is (checked against
    the encoder's training domain; None for a pretrained embedder)."""
    from oneshot.gallery import Gallery
    from oneshot.modalities import load_embedder

    faces = raw_faces(data_dir)
    test_people = [f"s{i}" for i in range(21, 41)]
    enrolled, outsiders = test_people[:-strangers], test_people[-strangers:]
    train_people = [f"s{i}" for i in range(1, 21)]
    enc = load_embedder(encoder)
    out: dict[str, Any] = {"enrolled": len(enrolled), "strangers": len(outsiders), "calibrated_on": "s1-s20", "rates": []}
    with tempfile.TemporaryDirectory() as tmp:
        g = Gallery.open(Path(tmp) / "faces.gallery", encoder=enc, create=True)
        try:
            for p in enrolled:
                g.enrol(p, [faces[p][0][1]], augment=augment)
            cal_x = g.embed([b for p in train_people for _, b in faces[p]])
            cal_y = np.array([i for i, p in enumerate(train_people) for _ in faces[p]])
            genuine = [(p, b) for p in enrolled for _, b in faces[p][1:]]
            stranger = [b for p in outsiders for _, b in faces[p]]
            ids_g = g.identify([b for _, b in genuine], k=1)
            ids_s = g.identify(stranger, k=1)
            out["closed_set_accuracy"] = float(
                np.mean([r.candidates[0].label == p for r, (p, _) in zip(ids_g, genuine, strict=False)])
            )
            for far in target_fars:
                rec = g.calibrate(cal_x, cal_y, target_far=far, gallery_size=len(enrolled), source="att s1-s20", domain=domain)
                t = rec["identify_threshold"]
                best_g = np.array([r.candidates[0].score for r in ids_g])
                correct = np.array([r.candidates[0].label == p for r, (p, _) in zip(ids_g, genuine, strict=False)])
                best_s = np.array([r.candidates[0].score for r in ids_s])
                out["rates"].append(
                    {
                        "target_far": far,
                        "identify_threshold": t,
                        "tar": float(np.mean(correct & (best_g >= t))),
                        "stranger_far": float(np.mean(best_s >= t)),
                        "genuine_queries": len(genuine),
                        "stranger_queries": len(stranger),
                        "calibration_measured_far": rec["measured"]["identify_far"],
                    }
                )
        finally:
            g.close()
    return out


def plot_rocs(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str) -> Path:
    """Several ROC curves (TAR against log FAR) in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    floor = 1e-5
    for name, (far, tar) in curves.items():
        ax.plot(np.maximum(far, floor), tar, lw=1.5, label=name)
    ax.set_xscale("log")
    ax.set_xlim(floor, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false-accept rate")
    ax.set_ylabel("true-accept rate")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def run_faces(
    checkpoint: str | Path, episodes: int = 1000, roc_png: str | Path | None = None, data_dir: str | Path | None = None
) -> dict[str, Any]:
    """The whole faces protocol for one checkpoint plus the raw-pixel and eigenface baselines (same episodes)."""
    from oneshot.checkpoint import load_checkpoint
    from oneshot.protocols.baselines import eigenfaces, raw_pixels

    ck = load_checkpoint(checkpoint)
    prep: Preprocessing = ck.preprocessing
    test = faces_split("test", prep, data_dir)
    rows: dict[str, Any] = {}
    rows["trained"] = score_method(ck.method, test, episodes)
    rows["raw_pixels"] = score_method(raw_pixels(), test, episodes)
    eig, k, val_scores = eigenfaces(
        faces_split("train", prep, data_dir), faces_split("val", prep, data_dir), faces_split("trainval", prep, data_dir)
    )
    rows["eigenfaces"] = score_method(eig, test, episodes)
    rows["eigenfaces"].update(components=k, validation_by_components=val_scores)
    try:  # the optional pretrained face descriptor (weights inside a package), at the archive's own resolution
        from oneshot.modalities.dlib_face import DlibFaceEmbedder
        from oneshot.protocols.baselines import PretrainedEmbedding

        dlib_prep = Preprocessing(size=92, channels=3, invert=False, resize="crop")
        emb = DlibFaceEmbedder()
        rows["dlib_face"] = score_method(PretrainedEmbedding(emb).eval(), faces_split("test", dlib_prep, data_dir), episodes)
        rows["dlib_face"].update(
            preprocessing=dlib_prep.to_dict(),
            detector_found_faces=emb.found_faces,
            note="pretrained by dlib on about 3 million faces (not trained here)",
        )
        dlib_gallery = gallery_flow(emb, data_dir=data_dir, domain=None)
    except OneshotError as exc:
        rows["dlib_face"] = {"unavailable": str(exc)}
        dlib_gallery = None
    curves = {n: r.pop("_roc") for n, r in rows.items() if "_roc" in r}
    out: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "preprocessing": prep.to_dict(),
        "test_people": "s21-s40",
        "methods": rows,
        "gallery": gallery_flow(checkpoint, data_dir=data_dir),
    }
    if dlib_gallery is not None:
        out["gallery_dlib_face"] = dlib_gallery
    if roc_png:
        names = {
            "trained": f"{ck.metadata['method']} {ck.metadata['encoder']}",
            "raw_pixels": "raw pixels",
            "eigenfaces": f"eigenfaces (k={k})",
            "dlib_face": "dlib ResNet (pretrained)",
        }
        out["roc_png"] = str(plot_rocs({names[n]: c for n, c in curves.items()}, roc_png, "AT&T faces s21-s40, all pairs"))
    return out
