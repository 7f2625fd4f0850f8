"""Open-set Omniglot through the gallery: enrol 100 characters from one drawing, reject 500 strangers.

Encoder (``--encoder``: a built-in name or a checkpoint file): by default the gallery's default Omniglot
encoder (``oneshot.weights.LAKE_DEFAULT``, ``omniglot-lake-v4`` since 2026-11-27: five conv blocks on 56x56
drawings, trained on the Lake split's background alphabets; its training command is in its metadata,
``oneshot info omniglot-lake-v4``); ``--tta shift`` embeds with shift test-time augmentation (the gallery's
``omniglot-lake-v4:tta=shift``, the TTA its validation chose). Earlier encoders stay measurable by name
(``omniglot-lake-v3``, ``omniglot-lake-v2``, ``omniglot-lake``).

Protocol, per seed (``--seeds``): from the 659 evaluation-set characters, 100 are enrolled from one random
drawing each (as PNG files, through ``Gallery.enrol``); queries are their 19 other drawings (1,900 genuine)
and all 20 drawings of 500 other, never-enrolled characters (10,000 strangers). Thresholds come from
``Gallery.calibrate`` on the Lake validation alphabets (203 characters, disjoint from training and test) for
false-accept targets 1e-2 and 1e-3, for a gallery of 100 classes. Reported on the test queries:

* closed-set accuracy: genuine queries whose best match is their own class;
* identification at each target: FAR = strangers whose best score reaches the identify threshold, TAR =
  genuine queries whose best match is their own class *and* reaches it;
* verification at each target: FAR over all (stranger, enrolled class) pairs, TAR over (genuine, own class).

``--verify-from enrolments`` sets the verify threshold from the gallery's own enrolments (each enrolled drawing
against the 99 other templates: 9,900 impostor comparisons, :mod:`oneshot.gallery.enrolment_impostors`) at
the targets they resolve (1e-2; at 1e-3 the gallery refuses and validation's threshold is used, recorded).

Writes ``benchmarks/results/gallery_open_set.json`` for ``omniglot-lake`` (the published first row) and
``gallery_open_set_<checkpoint file stem>.json`` for any other encoder (``--out`` overrides), so each
encoder's figures sit beside the others' and the README table shows one block per encoder. ``--seeds``
fewer than the default five is recorded in the file and shown in the README caption.

``--levers`` measures the open-set levers one at a time on the same enrolled and stranger sets (computed on
the embeddings, the gallery's own templates and cosine scores): score normalisation against a cohort of
background templates (one drawing of each of the 761 Lake training characters; ``snorm`` and ``cohort_mean``
of :mod:`oneshot.gallery.normalise`) and the identification calibration procedure (``simulated`` galleries
vs ``extrapolated`` from pairwise impostors). A lever is *kept* only when, on the validation characters at
both targets, its calibrated thresholds keep the measured false-accept rates within target and accept more
genuine identifications than the plain gallery. Writes ``benchmarks/results/gallery_open_set_levers.json``
(``gallery_open_set_levers_<checkpoint file stem>.json`` for encoders other than ``omniglot-lake``).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from oneshot.data import load_omniglot
from oneshot.errors import OneshotError
from oneshot.gallery import Gallery, ImageEmbedder
from oneshot.provenance import provenance
from oneshot.weights import LAKE_DEFAULT, SHIPPED, resolve_checkpoint

ROOT = Path(__file__).resolve().parent.parent
FIRST_ENCODER = "protonet_conv4_lake"  # omniglot-lake: its results keep their original file names


def default_out(
    encoder: Path,
    levers: bool,
    tta: str = "none",
    score: str = "template_cosine",
    verify_from: str = "validation",
    confidence: float | None = None,
) -> Path:
    """``benchmarks/results/gallery_open_set[_levers][_<encoder stem>][_tta_shift][_snorm][_verify_enrolments]
    [_confidence<C>].json`` (no stem for omniglot-lake)."""
    name = "gallery_open_set_levers" if levers else "gallery_open_set"
    plain = tta == "none" and score == "template_cosine" and verify_from == "validation" and confidence is None
    suffix = "" if encoder.stem == FIRST_ENCODER and plain else f"_{encoder.stem}"
    tail = ("" if tta == "none" else f"_tta_{tta}") + ("" if score == "template_cosine" else f"_{score}")
    tail += "" if verify_from == "validation" else f"_verify_{verify_from}"
    tail += "" if confidence is None else f"_confidence{confidence:g}"
    return ROOT / "benchmarks" / "results" / f"{name}{suffix}{tail}.json"


def background_cohort(enc: ImageEmbedder, size: int, data_dir: str | None) -> np.ndarray:
    """Unit embeddings (K, D) of one drawing (the first) of each Lake background (training) character."""
    bg = load_omniglot("lake", "train", size, data_dir)
    first = np.array([m[0] for m in bg.class_indices])
    cohort = enc.embed_images(bg.images[first].numpy())
    return cohort / np.linalg.norm(cohort, axis=1, keepdims=True)


def write_png(path: Path, img: np.ndarray) -> Path:
    from PIL import Image

    Image.fromarray(255 - img[0]).save(path)  # model inputs store ink high; files draw ink dark
    return path


def run_seed(
    seed: int,
    enc: ImageEmbedder,
    test,
    z_test: np.ndarray,
    val,
    z_val: np.ndarray,
    targets: list[float],
    workdir: Path,
    cohort: np.ndarray | None = None,
    verify_from: str = "validation",
    confidence: float | None = None,
) -> dict:
    """One seed through the gallery; with a ``cohort`` (K, D) the gallery stores it and rejects on ``snorm``.
    ``verify_from="enrolments"``: the verify threshold from the gallery's own 100 enrolments where they resolve
    the target (``Gallery.calibrate``); where the gallery refuses (too few comparisons), from validation, as a
    user would, with the refusal recorded. ``confidence``: thresholds that keep each rate at most the target with
    that confidence (``Gallery.calibrate(confidence=...)``)."""
    rng = np.random.default_rng(seed)
    labels = test.labels.numpy()
    chars = rng.permutation(test.num_classes)
    enrolled, strangers = chars[:100], chars[100:600]
    members = test.class_indices
    enrol_idx = np.array([rng.choice(members[c]) for c in enrolled])
    gen_idx = np.concatenate([np.setdiff1d(members[c], [e]) for c, e in zip(enrolled, enrol_idx)])
    imp_idx = np.concatenate([members[c] for c in strangers])
    path = workdir / f"open_set_{seed}.gallery"
    out: dict = {
        "seed": seed,
        "enrolled": 100,
        "strangers": 500,
        "genuine_queries": int(len(gen_idx)),
        "stranger_queries": int(len(imp_idx)),
    }
    t0 = time.perf_counter()
    with Gallery.open(path, encoder=enc) as g:
        warnings = 0
        for c, e in zip(enrolled, enrol_idx):
            f = write_png(workdir / f"enrol_{seed}_{c}.png", test.images[e].numpy())
            warnings += len(g.enrol(test.class_names[c], [f], check=False).warnings)
        out["enrol_seconds"] = time.perf_counter() - t0
        if cohort is not None:
            g.set_cohort(cohort, source="omniglot lake background, first drawing of each character")
            g.set_rejection_score("snorm")
        # Queries through the same embeddings: check a few through files give identical answers.
        files = [write_png(workdir / f"q_{seed}_{i}.png", test.images[i].numpy()) for i in gen_idx[:20]]
        by_file, by_vec = g.identify(files, k=1), g.identify(z_test[gen_idx[:20]], k=1)
        assert [r.label for r in by_file] == [r.label for r in by_vec], "file and embedding queries disagree"
        # (S-norm divides by a cohort deviation of about 0.02: float rounding grows with it)
        assert np.allclose([r.score for r in by_file], [r.score for r in by_vec], atol=1e-3), "scores disagree"
        gen_res, imp_res = g.identify(z_test[gen_idx], k=1), g.identify(z_test[imp_idx], k=1)  # no threshold yet
        gen_scores, imp_scores = (np.array([[r.score] for r in res]) for res in (gen_res, imp_res))
        correct = np.array([r.label == test.class_names[labels[q]] for r, q in zip(gen_res, gen_idx)])
        out["closed_set_accuracy"] = float(correct.mean())
        # Verification pairs: genuine vs own template, strangers vs every enrolled template.
        tmpl = np.stack(
            [
                np.frombuffer(
                    g.store.conn.execute("SELECT template FROM classes WHERE label = ?", (test.class_names[c],)).fetchone()[0],
                    np.float32,
                )
                for c in enrolled
            ]
        )
        own = {c: j for j, c in enumerate(enrolled)}
        pair = g.cohort_norm().scores if cohort is not None else (lambda a, b: a @ b.T)  # the gallery's verify score
        gen_own = np.array([own[labels[q]] for q in gen_idx])
        gen_pair = pair(z_test[gen_idx], tmpl)[np.arange(len(gen_idx)), gen_own]
        imp_pair = pair(z_test[imp_idx], tmpl).ravel()
        out["targets"] = {}
        for far in targets:
            kw = dict(target_far=far, gallery_size=100, source="omniglot lake val", confidence=confidence)
            refused = None
            try:
                rec = g.calibrate(z_val, val.labels.numpy(), verify_from=verify_from, **kw)
            except OneshotError as e:
                refused = str(e)
                rec = g.calibrate(z_val, val.labels.numpy(), **kw)
            ti, tv = rec["identify_threshold"], rec["verify_threshold"]
            out["targets"][f"{far:g}"] = {
                "verify_source": rec["verify_source"],
                "enrolments_refused": refused,
                "identify_threshold": ti,
                "verify_threshold": tv,
                "validation_measured": rec["measured"],
                "identify_far": float(np.mean(imp_scores[:, 0] >= ti)),
                "identify_tar": float(np.mean(correct & (gen_scores[:, 0] >= ti))),
                "verify_far": float(np.mean(imp_pair >= tv)),
                "verify_tar": float(np.mean(gen_pair >= tv)),
                "verify_pairs": {"genuine": int(len(gen_pair)), "impostor": int(len(imp_pair))},
                # A bound, not a result: thresholds read off these very strangers at exactly the target rate
                # (what a perfect calibration would reach with this encoder and score).
                "oracle_identify_tar": float(np.mean(correct & (gen_scores[:, 0] > np.quantile(imp_scores[:, 0], 1 - far)))),
                "oracle_verify_tar": float(np.mean(gen_pair > np.quantile(imp_pair, 1 - far))),
            }
        got = [g.verify(z_test[q], test.class_names[labels[q]]).score for q in gen_idx[:10]]
        assert np.allclose(got, gen_pair[:10], atol=1e-4), "Gallery.verify and the pair scores disagree"
        out["enrol_warnings"] = warnings
    return out


def enrolments_on_validation(z_val: np.ndarray, labels: np.ndarray, targets: list[float], workdir: Path, draws: int = 20) -> dict:
    """The choice check of ``--verify-from enrolments``, on validation only: simulated deployments inside the
    validation characters (100 enrolled from one random drawing, every drawing of the others as strangers), the
    verify threshold from each vector gallery's own enrolments (``Gallery.calibrate``'s path), and the rates it gives
    on those strangers and on the enrolled characters' other drawings, per target it resolves."""
    from oneshot.gallery.enrolment_impostors import verify_from_enrolments

    members = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    out: dict = {"draws": draws, "enrolled": 100, "targets": {}}
    for far in targets:
        rows = []
        for d in range(draws):
            rng = np.random.default_rng(1000 + d)
            chars = rng.permutation(len(members))
            enrolled, strangers = chars[:100], chars[100:]
            pick = [int(rng.choice(members[c])) for c in enrolled]
            with Gallery.open(workdir / f"val_{far:g}_{d}.gallery", dim=z_val.shape[1]) as g:
                g.enrol_vectors([f"v{c}" for c in enrolled], z_val[pick])
                try:
                    own = verify_from_enrolments(g.store, g.dim, lambda a, b: a @ b.T, far)
                except OneshotError:
                    break
                _, tmpl = g.store.all_templates(g.dim)
            imp = z_val[np.concatenate([members[c] for c in strangers])] @ tmpl.T
            gen = np.concatenate([z_val[np.setdiff1d(members[c], [e])] @ tmpl[j] for j, (c, e) in enumerate(zip(enrolled, pick))])
            rows.append((float(np.mean(imp >= own["threshold"])), float(np.mean(gen >= own["threshold"]))))
        if rows:
            far_, tar = np.array(rows).T
            out["targets"][f"{far:g}"] = {
                "verify_far": float(far_.mean()),
                "verify_far_std": float(far_.std(ddof=1)),
                "verify_tar": float(tar.mean()),
            }
            print(f"validation deployments, target {far:g}: verify FAR {far_.mean():.4f} +- {far_.std(ddof=1):.4f} TAR {tar.mean():.3f}")
        else:
            out["targets"][f"{far:g}"] = "refused: too few comparisons for this target"
    return out


LEVERS = [  # (name, normalisation, k, identify calibration)
    ("plain (as the gallery does)", "none", 0, "auto"),
    ("S-norm, top-50 cohort", "snorm", 50, "auto"),
    ("S-norm, top-200 cohort", "snorm", 200, "auto"),
    ("cohort-mean subtraction, top-50", "cohort_mean", 50, "auto"),
    ("calibration extrapolated from pairwise impostors", "none", 0, "extrapolated"),
]


def run_levers(
    seeds: list[int], test, z_test: np.ndarray, val, z_val: np.ndarray, cohort: np.ndarray, targets: list[float]
) -> list[dict]:
    """Each lever on each seed: validation-measured and test rates at each target."""
    from oneshot.gallery.calibration import calibrate
    from oneshot.gallery.normalise import CohortNorm

    labels = test.labels.numpy()
    out = []
    for name, kind, k, ident in LEVERS:
        norm = CohortNorm(cohort, kind, k or 1)
        row: dict = {"lever": name, "normalisation": kind, "cohort_k": k, "identify_calibration": ident, "runs": []}
        row["validation"] = {}
        recs = {}
        for far in targets:
            rec = calibrate(z_val, val.labels.numpy(), far, 100, score=norm.scores, identify_method=ident)
            recs[far] = rec
            row["validation"][f"{far:g}"] = {
                **rec["measured"],
                "identify_threshold": rec["identify_threshold"],
                "verify_threshold": rec["verify_threshold"],
            }
        for seed in seeds:
            rng = np.random.default_rng(seed)  # the same draws as run_seed
            chars = rng.permutation(test.num_classes)
            enrolled, strangers = chars[:100], chars[100:600]
            members = test.class_indices
            enrol_idx = np.array([rng.choice(members[c]) for c in enrolled])
            gen_idx = np.concatenate([np.setdiff1d(members[c], [e]) for c, e in zip(enrolled, enrol_idx)])
            imp_idx = np.concatenate([members[c] for c in strangers])
            tmpl = z_test[enrol_idx]
            gs, im = norm.scores(z_test[gen_idx], tmpl), norm.scores(z_test[imp_idx], tmpl)
            own = np.array([int(np.flatnonzero(enrolled == labels[q])[0]) for q in gen_idx])
            correct = gs.argmax(1) == own
            gen_best, imp_best = gs.max(1), im.max(1)
            gen_pair = gs[np.arange(len(gen_idx)), own]
            r: dict = {"seed": seed, "closed_set_accuracy": float(correct.mean()), "targets": {}}
            for far in targets:
                ti, tv = recs[far]["identify_threshold"], recs[far]["verify_threshold"]
                r["targets"][f"{far:g}"] = {
                    "identify_far": float(np.mean(imp_best >= ti)),
                    "identify_tar": float(np.mean(correct & (gen_best >= ti))),
                    "verify_far": float(np.mean(im >= tv)),
                    "verify_tar": float(np.mean(gen_pair >= tv)),
                }
            row["runs"].append(r)
        row["test"] = {"closed_set_accuracy": float(np.mean([r["closed_set_accuracy"] for r in row["runs"]]))}
        for far in targets:
            key = f"{far:g}"
            row["test"][key] = {
                m: float(np.mean([r["targets"][key][m] for r in row["runs"]]))
                for m in ("identify_far", "identify_tar", "verify_far", "verify_tar")
            }
        out.append(row)
        v = row["validation"]
        print(
            f"{name}: val "
            + "; ".join(
                f"{k_}: id FAR {x['identify_far']:.4f} TAR {x['identify_tar']:.4f} ver TAR {x['verify_tar']:.4f}"
                for k_, x in v.items()
            )
            + f" | test closed {row['test']['closed_set_accuracy']:.4f} "
            + "; ".join(
                f"{k_}: id FAR {row['test'][k_]['identify_far']:.4f} TAR {row['test'][k_]['identify_tar']:.4f} ver FAR {row['test'][k_]['verify_far']:.5f} TAR {row['test'][k_]['verify_tar']:.4f}"
                for k_ in v
            ),
            flush=True,
        )
    base = out[0]["validation"]
    for row in out:
        v = row["validation"]
        row["kept"] = row is not out[0] and all(
            v[k]["identify_far"] <= float(k) and v[k]["verify_far"] <= float(k) and v[k]["identify_tar"] > base[k]["identify_tar"]
            for k in v
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--encoder", type=Path, default=Path(LAKE_DEFAULT), help=f"built-in name or checkpoint (default {LAKE_DEFAULT})"
    )
    p.add_argument("--data-dir", default=None)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--targets", type=float, nargs="+", default=[1e-2, 1e-3])
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--levers", action="store_true", help="measure the open-set levers (gallery_open_set_levers.json)")
    p.add_argument("--tta", choices=("none", "shift"), default="none", help="the encoder's test-time augmentation")
    p.add_argument(
        "--score",
        choices=("template_cosine", "snorm"),
        default="template_cosine",
        help="the gallery's rejection score; snorm stores the background cohort in each gallery (default k)",
    )
    p.add_argument(
        "--verify-from",
        choices=("validation", "enrolments"),
        default="validation",
        help="where the verify threshold comes from (Gallery.calibrate verify_from): enrolments where they resolve the target",
    )
    p.add_argument(
        "--confidence",
        type=float,
        default=None,
        help="calibrate thresholds that keep each rate at most the target with this confidence (e.g. 0.95)",
    )
    args = p.parse_args()
    name = str(args.encoder) if str(args.encoder) in SHIPPED else None
    args.encoder = resolve_checkpoint(args.encoder).resolve()
    args.out = args.out or default_out(args.encoder, args.levers, args.tta, args.score, args.verify_from, args.confidence)
    enc = ImageEmbedder(args.encoder, spec=name, tta=args.tta)  # the gallery records NAME[:tta=shift] or the path
    size = enc.preprocessing.size
    test = load_omniglot("lake", "test", size, args.data_dir)
    val = load_omniglot("lake", "val", size, args.data_dir)
    t0 = time.perf_counter()
    z_test, z_val = enc.embed_images(test.images.numpy()), enc.embed_images(val.images.numpy())
    z_test /= np.linalg.norm(z_test, axis=1, keepdims=True)  # the gallery compares L2-normalised embeddings
    z_val /= np.linalg.norm(z_val, axis=1, keepdims=True)
    embed_seconds = time.perf_counter() - t0
    if args.levers:
        cohort = background_cohort(enc, size, args.data_dir)
        rows = run_levers(args.seeds, test, z_test, val, z_val, cohort, args.targets)
        args.out.write_text(
            json.dumps(
                {
                    "benchmark": "gallery_open_set_levers",
                    "encoder": str(args.encoder),
                    "encoder_fingerprint": enc.fingerprint["tensors_sha256"][:16],
                    "tta": args.tta,
                    "cohort": f"{len(cohort)} background characters, first drawing each",
                    "seeds": args.seeds,
                    "targets": args.targets,
                    "rule": "kept when, on validation at every target, identify and verify FAR <= target and identify TAR > plain",
                    "levers": rows,
                    **provenance(),
                    "load_average_at_start": os.getloadavg(),
                },
                indent=2,
            )
        )
        print(f"wrote {args.out}")
        return
    cohort = background_cohort(enc, size, args.data_dir) if args.score == "snorm" else None
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        check = None
        if args.verify_from == "enrolments":
            check = enrolments_on_validation(z_val, val.labels.numpy(), args.targets, Path(tmp))
        for seed in args.seeds:
            runs.append(
                run_seed(seed, enc, test, z_test, val, z_val, args.targets, Path(tmp), cohort, args.verify_from, args.confidence)
            )
            r = runs[-1]
            line = "  ".join(
                f"FAR {k}: id FAR {v['identify_far']:.4f} TAR {v['identify_tar']:.4f} | ver FAR {v['verify_far']:.5f} TAR {v['verify_tar']:.4f}"
                for k, v in r["targets"].items()
            )
            print(f"seed {seed}: closed-set {r['closed_set_accuracy']:.4f}  {line}", flush=True)

    def agg(get) -> dict:
        v = np.array([get(r) for r in runs])
        return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "per_seed": v.tolist()}

    summary = {"closed_set_accuracy": agg(lambda r: r["closed_set_accuracy"])}
    for far in args.targets:
        k = f"{far:g}"
        summary[k] = {
            m: agg(lambda r, m=m: r["targets"][k][m])
            for m in ("identify_far", "identify_tar", "verify_far", "verify_tar", "identify_threshold", "verify_threshold")
        }
        if "oracle_identify_tar" in runs[0]["targets"][k]:
            summary[k].update({m: agg(lambda r, m=m: r["targets"][k][m]) for m in ("oracle_identify_tar", "oracle_verify_tar")})
    result = {
        "benchmark": "gallery_open_set",
        "encoder": str(args.encoder.relative_to(ROOT) if args.encoder.is_relative_to(ROOT) else args.encoder),
        "encoder_name": next((n for n, e in SHIPPED.items() if e.file == args.encoder.name), None),
        "encoder_fingerprint": enc.fingerprint["tensors_sha256"][:16],
        "tta": args.tta,
        "rejection_score": args.score,
        "verify_from": args.verify_from,
        "confidence": args.confidence,
        "verify_from_validation_check": check,
        "cohort": None if cohort is None else f"{len(cohort)} background characters, first drawing each (k = 200)",
        "encoder_spec": enc.spec,
        "seeds": args.seeds,
        "embed_seconds": embed_seconds,
        "protocol": "Omniglot evaluation set (Lake split test): 100 characters enrolled from 1 drawing, queries = their 19 "
        "other drawings + all 20 drawings of 500 never-enrolled characters; thresholds calibrated on the Lake "
        "validation alphabets for a 100-class gallery",
        "summary": summary,
        "runs": runs,
        **provenance(),
        "load_average_at_start": os.getloadavg(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"closed-set accuracy {summary['closed_set_accuracy']['mean']:.4f} +- {summary['closed_set_accuracy']['std']:.4f}")
    for far in args.targets:
        s = summary[f"{far:g}"]
        print(
            f"target FAR {far:g}: identify FAR {s['identify_far']['mean']:.4f} TAR {s['identify_tar']['mean']:.4f}; "
            f"verify FAR {s['verify_far']['mean']:.5f} TAR {s['verify_tar']['mean']:.4f}; at exactly the target "
            f"(thresholds read off the strangers, a bound): identify TAR {s['oracle_identify_tar']['mean']:.4f}, "
            f"verify TAR {s['oracle_verify_tar']['mean']:.4f}"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
