"""Weight decay: 5 seeds each (fixed rule), paired vs baseline 5 seeds; and the benchmark's full selection for seed 0
(w, beta re-chosen) against the current model's seed-0 selection trunk."""
import sys, time
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import *
tox, x = data()
RULE = {1: (1.0, 0.0), 10: (3.0, 1.0)}
def single(p, k):
    f = Path(str(p) + f".k{k}.npy")
    if f.exists(): return np.load(f)
    w, b = RULE[k]; a = aucs(tox, ens_scorer([Member(load_checkpoint(p).method, x, tox)], k, w, b), k, 100, 0); np.save(f, a); return a
base = {s: OUT / f"sel_s{s}.safetensors" for s in range(5)}
for val in sys.argv[1:]:
    paths = {}
    for s in range(5):
        p = OUT / f"sel_weight_decay{val}_s{s}.safetensors"
        if not p.exists():
            t = time.process_time(); r = train(tox, x, p, seed=s, weight_decay=float(val))
            print(f"wd {val} seed {s}: best ep {r.best_episode//58}, cpu {time.process_time()-t:.0f}s", [round(h['val_accuracy'],4) for h in r.history], flush=True)
        paths[s] = p
    for k in (1, 10):
        a = np.stack([single(paths[s], k) for s in range(5)]); b = np.stack([single(base[s], k) for s in range(5)])
        per_seed = ((a - b).mean((1, 2)) * 100).round(2)
        print(f"wd {val} K={k}: 5-seed mean {a.mean():.4f} vs {b.mean():.4f} diff %+.2f ± %.2f (draws); per-seed diffs {per_seed}" % paired(a.mean(0), b.mean(0)), flush=True)
    m0 = [Member(load_checkpoint(paths[0]).method, x, tox)]
    for k in (1, 10):
        w, bt, tw, tb = choose(tox, m0, k)
        a = aucs(tox, ens_scorer(m0, k, w, bt), k, 100, 0); ref = single(base[0], k)
        print(f"wd {val} seed 0 full selection K={k}: w {w} beta {bt} | AhR {a[0].mean():.4f} ARE {a[1].mean():.4f} mean {a.mean():.4f} vs current {ref.mean():.4f} diff %+.2f ± %.2f" % paired(a, ref), flush=True)
