"""Lever 1: train seeds 0..4 the benchmark's way (8 epochs, best epoch on validation); ensembles of 1/3/5."""
import sys, time, json
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import *
tox, x = data()
ms = []
for seed in range(5):
    p = OUT / f"sel_s{seed}.safetensors"
    if not p.exists():
        t = time.process_time(); r = train(tox, x, p, seed=seed)
        print(f"seed {seed}: best ep {r.best_episode//58}, cpu {time.process_time()-t:.0f}s", [round(h['val_accuracy'],4) for h in r.history], flush=True)
    ms.append(Member(load_checkpoint(p).method, x, tox))
res = {}
for name, mem, rank in [("single s0", ms[:1], False), ("ens3", ms[:3], False), ("ens5", ms, False), ("ens3 rank", ms[:3], True), ("ens5 rank", ms, True)]:
    for k in (1, 10):
        w, b, tw, tb = choose(tox, mem, k, rank)
        a = aucs(tox, ens_scorer(mem, k, w, b, rank), k, 100, 0)
        res[(name, k)] = a
        extra = "" if name == "single s0" else " diff %+.2f ± %.2f" % paired(a, res[("single s0", k)])
        print(f"{name} K={k}: w {w} beta {b} sel {max(tb.values()):.4f} | val100 AhR {a[0].mean():.4f} ARE {a[1].mean():.4f} mean {a.mean():.4f}{extra}", flush=True)
np.save(OUT / "ens1.npy", {f"{n}|{k}": v for (n, k), v in res.items()}, allow_pickle=True)
