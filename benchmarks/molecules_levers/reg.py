"""Lever 2: trunk regularisation. Each variant: seeds 0..2 trained the benchmark's way (8 epochs, best on
validation); rule fixed (w 1/3, beta 0/1); val100 seed 0; AUC averaged over the 3 single models, paired on draws
against the same for the baseline trunk (sel_s{0,1,2})."""
import sys, time
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import *
tox, x = data()
def evalset(paths):
    return mean_val_aucs(tox, x, paths)
bf = OUT / "reg_base.npy"
if bf.exists():
    base = np.load(bf, allow_pickle=True).item()
else:
    base = evalset([OUT / f"sel_s{s}.safetensors" for s in range(3)]); np.save(bf, base, allow_pickle=True)
    print("baseline (mean of 3 seeds):", {k: round(v.mean(), 4) for k, v in base.items()}, flush=True)
for arg in sys.argv[1:]:
    name, val = arg.split("=")
    kw = {name: float(val)} if name not in ("width", "hidden", "epochs") else ({"width": int(val)} if name == "width" else {"epochs": int(val)} if name == "epochs" else {"hidden": [int(val)], "enc_dropout": 0.2})
    paths, eps = [], []
    for seed in range(3):
        p = OUT / f"sel_{name}{val}_s{seed}.safetensors"
        if not p.exists():
            t = time.process_time(); r = train(tox, x, p, seed=seed, **kw)
            print(f"{arg} seed {seed}: best ep {r.best_episode//(r.episodes_run//len(r.history))}, cpu {time.process_time()-t:.0f}s", [round(h['val_accuracy'],4) for h in r.history], flush=True)
        paths.append(p)
    res = evalset(paths)
    print(f"{arg}: " + " | ".join(f"K={k} AhR {res[k][0].mean():.4f} ARE {res[k][1].mean():.4f} mean {res[k].mean():.4f} diff %+.2f ± %.2f" % paired(res[k], base[k]) for k in (1, 10)), flush=True)
