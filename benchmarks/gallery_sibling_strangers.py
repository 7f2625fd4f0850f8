"""Do calibrated thresholds hold when strangers are siblings of the enrolled classes?

``gallery_open_set.py`` draws its 100 enrolled and 500 stranger characters from all 20 evaluation alphabets, as the
calibration's validation strangers are drawn. A real gallery may be narrower: a user enrols characters of one
alphabet (one factory's defects, one family's faces), and the strangers that matter are the *rest of that
alphabet*. This benchmark measures that case, through the gallery, for each rejection score.

Protocol: for each evaluation alphabet with at least 40 characters (Lake split test), 20 of its characters are
enrolled from one random drawing each; queries are their other 19 drawings (genuine), every drawing of the
alphabet's other characters (*sibling* strangers) and every drawing of as many characters drawn from the other
alphabets (*unrelated* strangers). Thresholds come from ``Gallery.calibrate`` on the Lake validation alphabets for
a 20-class gallery, as a user would set them, either with strangers drawn from all validation alphabets
(``all``, the default calibration) or within each validation alphabet (``families``: ``--families``, each
simulated gallery enrolled from one alphabet and the rest of it as strangers). Reported per score
(``template_cosine``; ``snorm`` with the 761 Lake training characters' first drawings as the cohort, k = 200),
calibration and target: identification TAR and the measured FAR of sibling and of unrelated strangers, averaged
over the alphabets.

    python benchmarks/gallery_sibling_strangers.py [--tta shift] [--targets 0.01 0.001]

Writes ``benchmarks/results/gallery_sibling_strangers.json``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from oneshot.data import load_omniglot
from oneshot.gallery import Gallery, ImageEmbedder
from oneshot.provenance import provenance
from oneshot.weights import LAKE_DEFAULT, resolve_checkpoint

ROOT = Path(__file__).resolve().parent.parent
SCORES = ("template_cosine", "snorm")
CALIBRATIONS = ("all", "families")


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def run_alphabet(
    alphabet: str, seed: int, test, z: np.ndarray, val, z_val: np.ndarray, cohort: np.ndarray, args, tmp: Path
) -> dict:
    rng = np.random.default_rng(seed)
    alpha = np.array([n.split("/")[0] for n in test.class_names])
    own = rng.permutation(np.flatnonzero(alpha == alphabet))
    enrolled, siblings = own[:20], own[20:]
    unrelated = rng.choice(np.flatnonzero(alpha != alphabet), size=len(siblings), replace=False)
    members = test.class_indices
    enrol_idx = np.array([rng.choice(members[c]) for c in enrolled])
    gen_idx = np.concatenate([np.setdiff1d(members[c], [e]) for c, e in zip(enrolled, enrol_idx, strict=True)])
    truth = np.array([test.class_names[int(test.labels[i])] for i in gen_idx])
    sib_idx = np.concatenate([members[c] for c in siblings])
    unrel_idx = np.concatenate([members[c] for c in unrelated])
    out: dict = {"alphabet": alphabet, "seed": seed, "enrolled": 20, "sibling_characters": int(len(siblings)), "scores": {}}
    for score in SCORES:
        with Gallery.open(tmp / f"{alphabet}_{score}.gallery", dim=z.shape[1]) as g:
            g.enrol_vectors([test.class_names[c] for c in enrolled], z[enrol_idx])
            if score == "snorm":
                g.set_cohort(cohort, source="omniglot lake training characters, first drawing each")
                g.set_rejection_score("snorm")
            res: dict = {}
            val_alpha = np.array([n.split("/")[0] for n in val.class_names])[val.labels.numpy()]
            for cal in CALIBRATIONS:
                for far in args.targets:
                    g.calibrate(
                        z_val,
                        val.labels.numpy(),
                        target_far=far,
                        gallery_size=20,
                        groups=val_alpha if cal == "families" else None,
                    )
                    gen = g.identify(z[gen_idx], k=1)
                    res[f"{cal} {far:g}"] = {
                        "identify_tar": float(np.mean([r.label == t for r, t in zip(gen, truth, strict=True)])),
                        "sibling_far": float(np.mean([r.label is not None for r in g.identify(z[sib_idx], k=1)])),
                        "unrelated_far": float(np.mean([r.label is not None for r in g.identify(z[unrel_idx], k=1)])),
                    }
            res["closed_set_accuracy"] = float(np.mean([r.candidates[0].label == t for r, t in zip(gen, truth, strict=True)]))
            out["scores"][score] = res
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--encoder", default=LAKE_DEFAULT, help=f"built-in name or checkpoint (default {LAKE_DEFAULT})")
    p.add_argument("--tta", choices=("none", "shift"), default="shift")
    p.add_argument("--targets", type=float, nargs="+", default=[1e-2, 1e-3])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "gallery_sibling_strangers.json")
    args = p.parse_args()
    enc = ImageEmbedder(resolve_checkpoint(args.encoder), tta=args.tta)
    size = enc.preprocessing.size
    test, val = load_omniglot("lake", "test", size, args.data_dir), load_omniglot("lake", "val", size, args.data_dir)
    bg = load_omniglot("lake", "train", size, args.data_dir)
    t0 = time.perf_counter()
    z, z_val = unit(enc.embed_images(test.images.numpy())), unit(enc.embed_images(val.images.numpy()))
    cohort = unit(enc.embed_images(bg.images[np.array([m[0] for m in bg.class_indices])].numpy()))
    embed_seconds = time.perf_counter() - t0
    alphabets = sorted({n.split("/")[0] for n in test.class_names})
    big = [a for a in alphabets if sum(n.startswith(a + "/") for n in test.class_names) >= 40]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, a in enumerate(big):
            runs.append(run_alphabet(a, args.seed + i, test, z, val, z_val, cohort, args, Path(tmp)))
            line = " | ".join(
                f"{s}: closed {r['closed_set_accuracy']:.3f} "
                + " ".join(
                    f"@{k} TAR {v['identify_tar']:.3f} sib {v['sibling_far']:.4f} unrel {v['unrelated_far']:.4f}"
                    for k, v in r.items()
                    if k != "closed_set_accuracy"
                )
                for s, r in runs[-1]["scores"].items()
            )
            print(f"{a}: {line}", flush=True)
    summary: dict = {}
    for s in SCORES:
        summary[s] = {"closed_set_accuracy": float(np.mean([r["scores"][s]["closed_set_accuracy"] for r in runs]))}
        for k in (f"{cal} {far:g}" for cal in CALIBRATIONS for far in args.targets):
            summary[s][k] = {
                m: float(np.mean([r["scores"][s][k][m] for r in runs])) for m in ("identify_tar", "sibling_far", "unrelated_far")
            }
        print(s, json.dumps(summary[s]))
    args.out.write_text(
        json.dumps(
            {
                "benchmark": "gallery_sibling_strangers",
                "encoder": str(args.encoder),
                "tta": args.tta,
                "cohort": f"{len(cohort)} Lake training characters, first drawing each (k = 200)",
                "alphabets": big,
                "targets": args.targets,
                "calibrations": {"all": "strangers from all validation alphabets", "families": "within each validation alphabet"},
                "embed_seconds": embed_seconds,
                "summary": summary,
                "runs": runs,
                **provenance(),
            },
            indent=2,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
