"""Does a threshold hold its false-accept rate when the gallery's classes were enrolled from K examples?

``Gallery.calibrate`` simulates galleries on validation classes. Until 2026-11-26 it built every simulated
template from one example; a gallery enrolled from K examples compares queries with the mean of K embeddings,
which scores strangers higher. This measures, on real embeddings, the false-accept rate a K-example gallery
actually gets at thresholds calibrated with 1-example templates and with K-example ones (``shots=K``, now the
gallery's default).

Protocol (CLINC150, the shipped MiniLM): the 150 intents are split at random (seed 0) into 75 calibration
intents (their ``val`` utterances, 20 each) and 75 test intents. ``calibrate`` (40 simulated splits, seed 0) gives
the identify threshold for a gallery of 37 classes at each target FAR. Then 30 seeded test galleries: 37 of the
test intents enrolled from K random ``test`` utterances each (template = normalised mean), the other 38 intents'
``test`` utterances are strangers; measured FAR = strangers whose best cosine reaches the threshold, TAR =
genuine queries (the enrolled intents' other utterances) identified correctly and accepted.
Writes ``benchmarks/results/calibration_shots.json``.

    python benchmarks/calibration_shots.py
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    import torch

    from oneshot.data.clinc150 import load_clinc150
    from oneshot.gallery.calibration import calibrate
    from oneshot.modalities import load_embedder
    from oneshot.provenance import command_line, provenance

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    d = load_clinc150()
    enc = load_embedder("text")
    pos = {n: i for i, n in enumerate(d.intents)}
    perm = np.random.default_rng(0).permutation(len(d.intents))
    cal_classes, test_classes = perm[:75], perm[75:]

    def split(name: str, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        s = d[name]
        y = np.array([pos[label] for label in s.labels])
        keep = np.isin(y, classes)
        return enc.embed_texts([t for t, k in zip(s.texts, keep, strict=True) if k], warn=False), y[keep]

    xv, yv = split("val", cal_classes)
    xt, yt = split("test", test_classes)
    size, rows = 37, []
    for shots in (1, 3, 5):
        for target in (0.01, 0.05):
            row: dict = {"gallery_shots": shots, "target_far": target}
            for cal_shots in sorted({1, shots}):
                rec = calibrate(xv, yv, target, size, trials=40, seed=0, shots=cal_shots)
                thr = rec["identify_threshold"]
                fars, tars = [], []
                for s in range(30):
                    r = np.random.default_rng(100 + s)
                    p = r.permutation(test_classes)
                    enrolled, strangers = np.sort(p[:size]), p[size:]
                    picks = [r.choice(np.flatnonzero(yt == c), shots, replace=False) for c in enrolled]
                    t = np.stack([xt[i].mean(0) for i in picks])
                    t /= np.linalg.norm(t, axis=1, keepdims=True)
                    fars.append(float(np.mean((xt[np.isin(yt, strangers)] @ t.T).max(1) >= thr)))
                    g = np.concatenate([np.setdiff1d(np.flatnonzero(yt == c), i) for c, i in zip(enrolled, picks, strict=True)])
                    scores = xt[g] @ t.T
                    right = enrolled[scores.argmax(1)] == yt[g]
                    tars.append(float(np.mean(right & (scores.max(1) >= thr))))
                row[f"calibrated_{cal_shots}_shot"] = {
                    "threshold": thr,
                    "measured_far": float(np.mean(fars)),
                    "measured_tar": float(np.mean(tars)),
                    "calibration_measured_far": rec["measured"]["identify_far"],
                }
            rows.append(row)
            print(json.dumps(row), flush=True)
    out = {
        "name": "calibration_shots",
        "protocol": "CLINC150, MiniLM; 75 calibration intents (val), 75 test intents (test); gallery of 37; 30 test galleries",
        "rows": rows,
        "seconds": time.perf_counter() - t0,
        **provenance(command_line()),
    }
    path = ROOT / "benchmarks" / "results" / "calibration_shots.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
