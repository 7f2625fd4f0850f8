import sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import *
tox, x = data()
res = {}
for tag, seeds in (("single s0", [0]), ("ens3", [0, 1, 2])):
    ms = [Member(load_checkpoint(OUT / f"sel_s{s}.safetensors").method, x, tox) for s in seeds]
    for k in (1, 10):
        w, b, tw, tb = choose(tox, ms, k)
        res[f"{tag}|{k}"] = aucs(tox, ens_scorer(ms, k, w, b), k, 100, 0)
        print(tag, k, w, b, res[f"{tag}|{k}"].mean(), flush=True)
np.save(OUT / "ens1.npy", res, allow_pickle=True)
