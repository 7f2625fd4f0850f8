"""Text intents on CLINC150 (Larson et al. 2019): the issue-13 protocols, written to benchmarks/results/.

Protocols (docs/text.md):
 1. 150-way K-shot (K = 1, 5, 10), support drawn from ``train`` (seeded), queries = the 4,500 in-scope ``test``
    utterances: (a) the frozen encoder, nearest template; (b) the encoder tuned on the K-shot support itself
    (a SetFit-style contrastive head, ``oneshot.modalities.text.finetune``; ``--body-epochs`` also tunes the
    transformer, minutes per run on the 2-core CPU).
 2. Novel intents: 100 base / 50 novel intents (``base_novel_split(seed=0)``); tuned on the base intents' full
    training data only; 50-way 1- and 5-shot on the novel intents' test utterances, frozen vs tuned, same draws.
 3. Zero-shot: 150-way from intent-name descriptions only (the wording chosen on ``val``); description + 1
    example against 1 example alone (and + 5 against 5).
 4. Out of scope: all 150 intents from 5 examples; the rejection threshold calibrated on ``val`` + ``oos_val``
    only; in-scope accuracy, OOS recall, OOS precision on ``test`` + ``oos_test``.
 5. Speed: sentences embedded per second (batch 64) and enrol / identify latency in a 10,000-class text gallery.
 9. Protocol 2 with the transformer body tuned on the base intents (supervised contrastive, CPFT / SetFit style):
    each ``--base-body-grid`` setting (epochs:lr) tunes a fresh encoder on the base intents' train data; the
    one with the best novel-intent ``val`` accuracy (50-way 1- and 5-shot, support seeds 1000+ from train) is
    scored on ``test`` against the frozen encoder on protocol 2's draws; written by ``--protocols 9 --out
    benchmarks/results/text_clinc150_novel_body.json``.
 8. Protocol 7 with the ``mean_distance`` rejection score among the candidates (chosen on ``val``), the
    classifier settings read from ``--classifier-from``; written by ``--protocols 8 --select-seeds 1000 1001
    --out benchmarks/results/text_clinc150_oos.json``.
 6. / 7. The few-shot intent classifier (cosine-softmax from the description + examples templates, mixed with a
    lexical TF-IDF view) on protocols 1 and 4, every setting chosen on ``val`` (benchmarks/text_clinc150_levers.py);
    written by ``--protocols 6,7 --out benchmarks/results/text_clinc150_classifier.json``.

The head's settings are chosen on ``val`` (support from train with seeds 1000+, never the test split).
Embeddings of the dataset are cached per encoder fingerprint ($ONESHOT_CACHE/text-embeddings).

Usage: python benchmarks/text_clinc150.py [--seeds 10] [--protocols 1,2,3,4,5] [--body-epochs 0 --body-seeds 1]
       python benchmarks/text_clinc150.py --protocols 6,7 --select-seeds 1000 1001 --out benchmarks/results/text_clinc150_classifier.json
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from oneshot.data.clinc150 import base_novel_split, intent_description, load_clinc150
from oneshot.modalities.text.intents import (
    calibrate_oos_threshold,
    class_templates,
    mean_ci95,
    nearest,
    oos_metrics,
)
from oneshot.provenance import git_commit, machine_description, now_iso

PUBLISHED = {
    5: "USE+ConveRT 90.49, DNNC 91.02, CPFT 92.34, ICDA 92.62",
    10: "USE+ConveRT 93.26, DNNC 93.76, CPFT 94.18, ICDA 94.84",
}
ZERO_SHOT_WORDINGS = {"name": "{}", "request": "a request to {}", "question": "{}?"}


def draw(labels: np.ndarray, classes: list[int], shots: int, seed: int) -> np.ndarray:
    """Indices of ``shots`` examples per class (seeded; the first K of one permutation, so draws are nested)."""
    rng = np.random.default_rng((seed, 13))
    out = []
    for c in classes:
        idx = np.flatnonzero(labels == c)
        out.append(rng.permutation(idx)[:shots])
    return np.concatenate(out)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        from oneshot.modalities import load_embedder
        from oneshot.modalities.text.cache import cached_embeddings

        torch.set_num_threads(args.threads)
        self.args = args
        self.data = load_clinc150(args.data_dir)
        self.intents = self.data.intents
        self.pos = {n: i for i, n in enumerate(self.intents)}
        self.embedder = load_embedder(args.encoder)
        self.emb: dict[str, np.ndarray] = {}
        self.lab: dict[str, np.ndarray] = {}
        for split in ("train", "val", "test", "oos_val", "oos_test", "oos_train"):
            t0 = time.perf_counter()
            self.emb[split] = cached_embeddings(self.embedder, self.data[split].texts, f"clinc150-{split}")
            self.lab[split] = np.array([self.pos.get(x, -1) for x in self.data[split].labels])
            print(f"embeddings {split}: {len(self.emb[split])} in {time.perf_counter() - t0:.1f}s", flush=True)
        self.description_texts = [intent_description(n) for n in self.intents]
        self.descriptions = self.embedder.embed_texts(self.description_texts)

    # ------------------------------------------------------------------ helpers
    def head(self, x: np.ndarray, y: np.ndarray, cfg):
        from oneshot.modalities.text.finetune import apply_head, train_head

        t0 = time.perf_counter()
        a, b, _ = train_head(x, y, cfg)
        return (lambda v: apply_head(v, a, b)), time.perf_counter() - t0

    def accuracy(self, sup: np.ndarray, classes: list[int], qsplit: str, transform=None, prior=None) -> float:
        """Nearest template over ``classes``; queries = ``qsplit`` utterances of those classes."""
        remap = {c: i for i, c in enumerate(classes)}
        xs = self.emb["train"][sup]
        ys = np.array([remap[c] for c in self.lab["train"][sup]])
        qmask = np.isin(self.lab[qsplit], classes)
        xq = self.emb[qsplit][qmask]
        yq = np.array([remap[c] for c in self.lab[qsplit][qmask]])
        if transform is not None:
            xs, xq = transform(xs), transform(xq)
            prior = transform(prior) if prior is not None else None
        t = class_templates(xs, ys, len(classes), prior=prior)
        return float((nearest(xq, t)[0] == yq).mean())

    def head_config(self, **kw):
        from oneshot.modalities.text.finetune import FinetuneConfig

        return FinetuneConfig(**kw)

    # ------------------------------------------------------------------ model selection on val
    def select_head(self) -> dict:
        classes = list(range(len(self.intents)))
        grid = [dict(head_steps=300, head_l2=1e-3, temperature=tau) for tau in (0.05, 0.1, 0.2)]
        grid.append(dict(head_steps=150, head_l2=1e-3, temperature=0.1))
        rows = []
        for g in grid:
            accs = []
            for seed in self.args.select_seeds:
                sup = draw(self.lab["train"], classes, 5, seed)
                tf, _ = self.head(self.emb["train"][sup], self.lab["train"][sup], self.head_config(seed=seed, **g))
                accs.append(self.accuracy(sup, classes, "val", tf))
            rows.append(dict(g, val_accuracy=float(np.mean(accs))))
            print("select", rows[-1], flush=True)
        frozen = float(
            np.mean([self.accuracy(draw(self.lab["train"], classes, 5, s), classes, "val") for s in self.args.select_seeds])
        )
        best = max(rows, key=lambda r: r["val_accuracy"])
        return {
            "grid": rows,
            "frozen_val_accuracy": frozen,
            "chosen": {k: best[k] for k in ("head_steps", "head_l2", "temperature")},
            "protocol": f"150-way 5-shot, support seeds {self.args.select_seeds} from train, queries: all of val",
        }

    # ------------------------------------------------------------------ protocols
    def protocol1(self, chosen: dict) -> dict:
        classes = list(range(len(self.intents)))
        out = []
        for shots in (1, 5, 10):
            frozen, tuned, secs = [], [], []
            for seed in range(self.args.seeds):
                sup = draw(self.lab["train"], classes, shots, seed)
                frozen.append(self.accuracy(sup, classes, "test"))
                if seed < self.args.tuned_seeds:
                    tf, s = self.head(self.emb["train"][sup], self.lab["train"][sup], self.head_config(seed=seed, **chosen))
                    tuned.append(self.accuracy(sup, classes, "test", tf))
                    secs.append(s)
            row = {
                "shots": shots,
                "frozen": self._agg(frozen),
                "tuned_head": self._agg(tuned),
                "tuned_head_seconds_mean": float(np.mean(secs)) if secs else None,
                "published": PUBLISHED.get(shots),
            }
            if self.args.body_epochs and shots in self.args.body_shots:
                row["tuned_body"] = self.body_rows(shots, chosen)
            out.append(row)
            print("protocol1", json.dumps(row), flush=True)
        return {"rows": out}

    def body_rows(self, shots: int, chosen: dict) -> dict:
        """Tune the whole transformer (SetFit's body) on the support, then the head; re-embed test (slow)."""
        from oneshot.modalities import load_embedder
        from oneshot.modalities.text.finetune import FinetuneConfig, finetune

        classes = list(range(len(self.intents)))
        accs, secs = [], []
        for seed in range(self.args.body_seeds):
            sup = draw(self.lab["train"], classes, shots, seed)
            enc = load_embedder(self.args.encoder)
            examples: dict[str, list[str]] = {}
            for i in sup:
                examples.setdefault(self.data["train"].labels[i], []).append(self.data["train"].texts[i])
            cfg = FinetuneConfig(epochs=self.args.body_epochs, seed=seed)
            res = finetune(enc, examples, cfg)
            xs = enc.embed_texts([self.data["train"].texts[i] for i in sup], warn=False)
            xq = enc.embed_texts(self.data["test"].texts, warn=False)
            t = class_templates(xs, self.lab["train"][sup], len(classes))
            accs.append(float((nearest(xq, t)[0] == self.lab["test"]).mean()))
            secs.append(res.seconds)
            print("body", shots, seed, accs[-1], res.seconds, flush=True)
        return dict(self._agg(accs), epochs=self.args.body_epochs, fine_tune_seconds_mean=float(np.mean(secs)))

    def protocol2(self, chosen: dict) -> dict:
        base, novel = base_novel_split(self.intents, 50, seed=0)
        b_idx = [self.pos[n] for n in base]
        n_idx = [self.pos[n] for n in novel]
        mask = np.isin(self.lab["train"], b_idx)
        cfg = self.head_config(seed=0, **dict(chosen, head_steps=max(chosen["head_steps"], 300)))
        tf, secs = self.head(self.emb["train"][mask], self.lab["train"][mask], cfg)
        rows = []
        for shots in (1, 5):
            fr, tu = [], []
            for seed in range(self.args.seeds):
                sup = draw(self.lab["train"], n_idx, shots, seed)
                fr.append(self.accuracy(sup, n_idx, "test"))
                tu.append(self.accuracy(sup, n_idx, "test", tf))
            rows.append(
                {
                    "ways": 50,
                    "shots": shots,
                    "frozen": self._agg(fr),
                    "tuned_on_base": self._agg(tu),
                    "tuned_beats_frozen_in_seeds": int(sum(t > f for t, f in zip(tu, fr))),
                }
            )
            print("protocol2", json.dumps(rows[-1]), flush=True)
        return {
            "novel_intents": novel,
            "split": "oneshot.data.clinc150.base_novel_split(intents, 50, seed=0)",
            "base_training_examples": int(mask.sum()),
            "head_seconds": secs,
            "rows": rows,
        }

    def protocol9(self) -> dict:
        """Novel intents with the whole encoder tuned on the base intents (settings chosen on novel ``val``)."""
        import copy

        from oneshot.modalities import load_embedder
        from oneshot.modalities.text.finetune import FinetuneConfig, finetune, interpolate_weights

        base, novel = base_novel_split(self.intents, 50, seed=0)
        n_idx = [self.pos[n] for n in novel]
        base_set = set(base)
        examples: dict[str, list[str]] = {}
        for text, label in zip(self.data["train"].texts, self.data["train"].labels, strict=True):
            if label in base_set:
                examples.setdefault(label, []).append(text)
        masks = {s: np.isin(self.lab[s], n_idx) for s in ("train", "val", "test")}

        def novel_embeddings(enc, splits) -> dict[str, np.ndarray]:
            out = {}
            for s in splits:
                texts = [t for t, m in zip(self.data[s].texts, masks[s], strict=True) if m]
                full = np.zeros((len(self.lab[s]), self.emb[s].shape[1]), np.float32)
                full[masks[s]] = enc.embed_texts(texts, warn=False)
                out[s] = full
            return out

        def accuracies(emb: dict[str, np.ndarray], qsplit: str, shots: int, seeds) -> list[float]:
            remap = {c: i for i, c in enumerate(n_idx)}
            qm = masks[qsplit]
            yq = np.array([remap[c] for c in self.lab[qsplit][qm]])
            accs = []
            for seed in seeds:
                sup = draw(self.lab["train"], n_idx, shots, seed)
                ys = np.array([remap[c] for c in self.lab["train"][sup]])
                t = class_templates(emb["train"][sup], ys, len(n_idx))
                accs.append(float((nearest(emb[qsplit][qm], t)[0] == yq).mean()))
            return accs

        val_seeds = list(range(1000, 1000 + self.args.seeds))
        frozen_val = {k: float(np.mean(accuracies(self.emb, "val", k, val_seeds))) for k in (1, 5)}
        print("protocol9 frozen val", frozen_val, flush=True)
        grid, best, best_state = [], None, None
        for setting in self.args.base_body_grid:
            epochs, lr = setting.split(":")
            cfg = FinetuneConfig(epochs=int(epochs), lr=float(lr), views=1, seed=0)
            enc = load_embedder(self.args.encoder)
            start = copy.deepcopy(enc.model.state_dict())
            res = finetune(enc, examples, cfg)
            tuned = copy.deepcopy(enc.model.state_dict())
            for alpha in self.args.base_body_alphas:
                enc.model.load_state_dict(tuned)
                if alpha < 1.0:
                    interpolate_weights(enc.model, start, alpha)
                emb = novel_embeddings(enc, ("train", "val"))
                val = {k: float(np.mean(accuracies(emb, "val", k, val_seeds))) for k in (1, 5)}
                row = {
                    "epochs": int(epochs),
                    "lr": float(lr),
                    "views": 1,
                    "interpolate": float(alpha),
                    "fine_tune_seconds": res.seconds,
                    "steps": res.steps,
                    "val_1shot": val[1],
                    "val_5shot": val[5],
                    "val_mean": (val[1] + val[5]) / 2,
                }
                grid.append(row)
                print("protocol9 select", json.dumps(row), flush=True)
                if best is None or row["val_mean"] > best["val_mean"]:
                    best, best_state = row, copy.deepcopy(enc.model.state_dict())
        assert best is not None and best_state is not None
        enc = load_embedder(self.args.encoder)
        enc.model.load_state_dict(best_state)
        emb = novel_embeddings(enc, ("train", "test"))
        rows = []
        for shots in (1, 5):
            fr = accuracies(self.emb, "test", shots, range(self.args.seeds))
            tu = accuracies(emb, "test", shots, range(self.args.seeds))
            rows.append(
                {
                    "ways": 50,
                    "shots": shots,
                    "frozen": self._agg(fr),
                    "tuned_body_on_base": self._agg(tu),
                    "tuned_beats_frozen_in_seeds": int(sum(t > f for t, f in zip(tu, fr))),
                }
            )
            print("protocol9", json.dumps(rows[-1]), flush=True)
        return {
            "novel_intents": novel,
            "split": "oneshot.data.clinc150.base_novel_split(intents, 50, seed=0)",
            "base_training_examples": sum(len(v) for v in examples.values()),
            "selection": {
                "rule": "highest mean of 50-way 1- and 5-shot novel-intent val accuracy",
                "seeds": val_seeds,
                "frozen_val_1shot": frozen_val[1],
                "frozen_val_5shot": frozen_val[5],
                "grid": grid,
                "chosen": best,
            },
            "rows": rows,
        }

    def protocol3(self) -> dict:
        classes = list(range(len(self.intents)))
        wordings = {}
        for key, fmt in ZERO_SHOT_WORDINGS.items():
            d = self.embedder.embed_texts([fmt.format(intent_description(n)) for n in self.intents])
            val = float((nearest(self.emb["val"], d)[0] == self.lab["val"]).mean())
            wordings[key] = {"format": fmt, "val_accuracy": val, "vectors": d}
        best = max(wordings, key=lambda k: wordings[k]["val_accuracy"])
        desc = wordings[best]["vectors"]
        zero = float((nearest(self.emb["test"], desc)[0] == self.lab["test"]).mean())
        rows = []
        for shots in (1, 5):
            ex, both = [], []
            for seed in range(self.args.seeds):
                sup = draw(self.lab["train"], classes, shots, seed)
                ex.append(self.accuracy(sup, classes, "test"))
                both.append(self.accuracy(sup, classes, "test", prior=desc))
            rows.append({"shots": shots, "examples_only": self._agg(ex), "description_plus_examples": self._agg(both)})
            print("protocol3", json.dumps(rows[-1]), flush=True)
        return {
            "wordings_val": {k: {"format": v["format"], "val_accuracy": v["val_accuracy"]} for k, v in wordings.items()},
            "chosen_wording": best,
            "zero_shot_test_accuracy": zero,
            "rule": "template = unit(mean of unit description + unit examples)",
            "rows": rows,
        }

    def protocol4(self, chosen: dict) -> dict:
        classes = list(range(len(self.intents)))
        out = {}
        for name in ("frozen", "tuned_head"):
            recs = []
            for seed in range(self.args.seeds if name == "frozen" else self.args.tuned_seeds):
                sup = draw(self.lab["train"], classes, 5, seed)
                tf = None
                if name == "tuned_head":
                    tf, _ = self.head(self.emb["train"][sup], self.lab["train"][sup], self.head_config(seed=seed, **chosen))
                f = tf or (lambda v: v)
                t = class_templates(f(self.emb["train"][sup]), self.lab["train"][sup], len(classes))
                vp, vs = nearest(f(self.emb["val"]), t)
                _, os_ = nearest(f(self.emb["oos_val"]), t)
                th = calibrate_oos_threshold(vp, vs, self.lab["val"], os_, max_drop=self.args.max_drop)
                tp, ts = nearest(f(self.emb["test"]), t)
                _, ots = nearest(f(self.emb["oos_test"]), t)
                m = oos_metrics(tp, ts, self.lab["test"], ots, th.threshold)
                m0 = oos_metrics(tp, ts, self.lab["test"], ots, None)
                recs.append(
                    dict(
                        m,
                        no_rejection_accuracy=m0["in_scope_accuracy"],
                        threshold=th.threshold,
                        val_oos_recall=th.val_oos_recall,
                        val_accuracy=th.val_accuracy,
                    )
                )
            agg = {k: self._agg([r[k] for r in recs]) for k in recs[0]}
            out[name] = agg
            print("protocol4", name, json.dumps(agg), flush=True)
        return {
            "shots": 5,
            "max_drop": self.args.max_drop,
            "rule": "highest threshold whose val in-scope accuracy (rejections wrong) stays within max_drop of no rejection",
            "results": out,
        }

    def protocol5(self) -> dict:
        import torch

        from oneshot.gallery import Gallery

        texts = self.data["test"].texts[:640]
        self.embedder._encode(texts[:64])
        by_threads = {}
        for th in (1, 2):  # on a contended CPU one thread can beat two (OpenMP waits on a busy core)
            torch.set_num_threads(th)
            t0 = time.perf_counter()
            self.embedder._encode(texts)
            by_threads[str(th)] = len(texts) / (time.perf_counter() - t0)
        torch.set_num_threads(self.args.threads)
        rate = max(by_threads.values())
        n = self.args.gallery_classes
        vecs = self.emb["train"][:n]
        res = {
            "sentences_per_second_batch64": rate,
            "sentences_per_second_by_threads": by_threads,
            "sentences_timed": len(texts),
            "load_average": os.getloadavg(),
        }
        with tempfile.TemporaryDirectory() as tmp:
            with Gallery.open(Path(tmp) / "g.gallery", encoder=self.embedder) as g:
                g.set_identify_rule("nearest_template")  # the FAISS search's latency (the classifier stops at 1,000 classes)
                t0 = time.perf_counter()
                g.enrol_vectors([f"c{i:05d}" for i in range(n)], vecs)
                res["bulk_vectors_enrol_seconds"] = time.perf_counter() - t0
                g.identify(vecs[:1])
                enrol_ms, ident_ms = [], []
                queries = self.data["val"].texts[: self.args.latency_repeats * 2]
                for i in range(self.args.latency_repeats):
                    t0 = time.perf_counter()
                    g.enrol(f"new{i}", [queries[2 * i]])
                    enrol_ms.append(1000 * (time.perf_counter() - t0))
                    t0 = time.perf_counter()
                    g.identify([queries[2 * i + 1]], k=5)
                    ident_ms.append(1000 * (time.perf_counter() - t0))
                res.update(
                    gallery_classes=len(g),
                    enrol_ms_p50=float(np.median(enrol_ms)),
                    enrol_ms_p90=float(np.percentile(enrol_ms, 90)),
                    identify_ms_p50=float(np.median(ident_ms)),
                    identify_ms_p90=float(np.percentile(ident_ms, 90)),
                    latency_repeats=self.args.latency_repeats,
                )
        print("protocol5", json.dumps(res), flush=True)
        return res

    @staticmethod
    def _agg(values: list[float]) -> dict:
        if not values:
            return {"mean": None, "ci95": None, "n": 0, "values": []}
        m, ci = mean_ci95(values)
        return {"mean": m, "ci95": ci, "n": len(values), "values": [float(v) for v in values]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10, help="seeded support draws per row")
    ap.add_argument(
        "--tuned-seeds",
        type=int,
        default=10,
        help="draws for the tuned-head rows (each trains a head: ~30-60 s on the shared CPU)",
    )
    ap.add_argument("--protocols", default="1,2,3,4,5")
    ap.add_argument("--encoder", default="text")
    ap.add_argument("--body-epochs", type=int, default=0, help="also tune the transformer body (slow on CPU)")
    ap.add_argument("--body-seeds", type=int, default=1)
    ap.add_argument("--body-shots", type=int, nargs="*", default=[5])
    ap.add_argument(
        "--base-body-grid",
        nargs="+",
        default=["1:2e-5", "1:5e-5", "2:5e-5"],
        help="protocol 9: body-tuning settings EPOCHS:LR tried on the base intents (chosen on novel val)",
    )
    ap.add_argument(
        "--base-body-alphas",
        type=float,
        nargs="+",
        default=[0.5, 0.7, 1.0],
        help="protocol 9: WiSE-FT mixing weights of the tuned body tried with each setting (1: tuned weights only)",
    )
    ap.add_argument("--select-seeds", type=int, nargs="+", default=[1000], help="support draws for choosing the head on val")
    ap.add_argument("--max-drop", type=float, default=0.02)
    ap.add_argument(
        "--classifier-from",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "text_clinc150_classifier.json",
        help="protocol 8: the classifier settings chosen on val by a protocol 6/7 run",
    )
    ap.add_argument("--gallery-classes", type=int, default=10000)
    ap.add_argument("--latency-repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is faster than 2 on the shared CPU)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "text_clinc150.json")
    args = ap.parse_args()
    protos = {int(p) for p in args.protocols.split(",") if p}
    t_start = time.perf_counter()
    b = Bench(args)
    result: dict = {
        "name": "text_clinc150",
        "encoder": args.encoder,
        "encoder_fingerprint": b.embedder.fingerprint,
        "seeds": args.seeds,
        "tuned_seeds": args.tuned_seeds,
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "commit": git_commit(),
        "machine": machine_description(),
        "load_average_at_start": os.getloadavg(),
        "date": now_iso(),
    }
    if protos & {1, 2, 4}:
        result["head_selection"] = b.select_head()
    chosen = result.get("head_selection", {}).get("chosen", {})
    if 1 in protos:
        result["protocol1"] = b.protocol1(chosen)
    if 2 in protos:
        result["protocol2"] = b.protocol2(chosen)
    if 9 in protos:
        result["protocol9"] = b.protocol9()
    if 3 in protos:
        result["protocol3"] = b.protocol3()
    if 4 in protos:
        result["protocol4"] = b.protocol4(chosen)
    if 5 in protos:
        result["protocol5"] = b.protocol5()
    if protos & {6, 7}:
        from text_clinc150_levers import Levers

        lev = Levers(b, draw, Bench._agg)
        result["classifier_selection"] = lev.select()
        if 6 in protos:
            result["protocol6"] = lev.protocol6(result["classifier_selection"])
        if 7 in protos:
            result["protocol7"] = lev.protocol7(result["classifier_selection"])
    if 8 in protos:
        from text_clinc150_levers import OOS_RULES_8, Levers

        sel = json.loads(args.classifier_from.read_text())["classifier_selection"]
        result["classifier_selection_from"] = str(args.classifier_from.relative_to(ROOT))
        result["protocol8"] = Levers(b, draw, Bench._agg).protocol7(sel, rules=OOS_RULES_8, reject_classes=(False,))
    result["total_seconds"] = time.perf_counter() - t_start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
