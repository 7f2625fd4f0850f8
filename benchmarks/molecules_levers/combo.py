"""wd 1e-4 (current) vs wd 1e-4 + head dropout 0.7; 3 seeds each; rule fixed (w 1/3, beta 0/1); val100 seed 0."""
import sys, time
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import *
tox, x = data()
def evalset(paths):
    return mean_val_aucs(tox, x, paths)
res = {}
for name, kw in (("base", dict(weight_decay=1e-4)), ("hd07", dict(weight_decay=1e-4, head_dropout=0.7))):
    paths = []
    for seed in range(3):
        p = OUT / f"combo_{name}_s{seed}.safetensors"
        if not p.exists():
            t = time.process_time(); r = train(tox, x, p, seed=seed, **kw)
            print(name, seed, f"cpu {time.process_time()-t:.0f}s", flush=True)
        paths.append(p)
    res[name] = evalset(paths)
    print(name, {k: round(float(v.mean()), 4) for k, v in res[name].items()}, flush=True)
for k in (1, 10):
    print(f"K={k} hd07 - base: %+.2f ± %.2f" % paired(res["hd07"][k], res["base"][k]), flush=True)
