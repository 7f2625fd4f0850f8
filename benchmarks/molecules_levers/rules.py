"""Levers 3/4: scoring-rule variants on the seed-0 selection trunk (no retraining).
Each variant: its weight chosen on the seed-1 20 draws (benchmark's selection draws), compared on val100 seed 0."""
import sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from common import *
from oneshot.methods.activity_prior import head_mixture, evidence_gap
tox, x = data()
base = np.load(OUT / "ens1.npy", allow_pickle=True).item()
m = load_checkpoint(OUT / "sel_s0.safetensors").method
z = MoleculeSet(x, tox, TOX21_VAL).embed(m).astype(np.float64)
with torch.no_grad():
    H = m.heads(torch.from_numpy(z).float()).double().numpy()   # (N, T)
zn = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
Hs = (H - H.mean(0)) / H.std(0)
from scipy.stats import rankdata
Hr = np.stack([rankdata(h) for h in H.T], 1) / len(H)
BETA = {1: 0.0, 10: 1.0}; W = {1: 1.0, 10: 3.0}

def prior_of(Hm, beta):
    def p(s, sl, q):
        return Hm[q].mean(1) if beta == 0 else Hm[q] @ head_mixture(Hm[s], sl, beta)
    return p

def knn_gap(s, sl, q, k):
    sim = zn[q] @ zn[s].T
    a = np.sort(sim[:, sl == 1], 1)[:, -k:].mean(1); b = np.sort(sim[:, sl == 0], 1)[:, -k:].mean(1)
    return a - b

def make(kind, shots, v):
    beta, w = BETA[shots], W[shots]
    if kind == "std_prior":   # per-head standardised logits for the prior; v = w
        pr = prior_of(Hs, beta); return lambda s, sl, q, d: pr(s, sl, q) + v * evidence_gap(z[s], sl, z[q])
    if kind == "rank_prior":
        pr = prior_of(Hr, beta); return lambda s, sl, q, d: pr(s, sl, q) + v * evidence_gap(z[s], sl, z[q])
    if kind == "knn3":  # kNN gap instead of ProtoNet evidence; v = weight
        pr = prior_of(H, beta); return lambda s, sl, q, d: pr(s, sl, q) + v * knn_gap(s, sl, q, 3)
    if kind == "knn3_plus":  # kNN gap in addition to the evidence
        pr = prior_of(H, beta); return lambda s, sl, q, d: pr(s, sl, q) + w * evidence_gap(z[s], sl, z[q]) + v * knn_gap(s, sl, q, 3)
    if kind == "trans":  # transductive: queries' top v fraction by the rule's score join the active prototype
        pr = prior_of(H, beta)
        def f(s, sl, q, d):
            s0 = pr(s, sl, q) + w * evidence_gap(z[s], sl, z[q])
            n = max(1, int(v * len(q)))
            top = q[np.argsort(-s0)[:n]]
            c1 = np.concatenate([zn[s[sl == 1]], zn[top]]).mean(0); c0 = zn[s[sl == 0]].mean(0)
            ev = ((zn[q] - c0) ** 2).sum(1) - ((zn[q] - c1) ** 2).sum(1)
            return pr(s, sl, q) + w * ev
        return f
GRIDS = {"std_prior": WEIGHT_GRID, "rank_prior": (0.0, 0.01, 0.03, 0.1, 0.3, 1.0), "knn3": WEIGHT_GRID,
         "knn3_plus": (0.0, 0.3, 1.0, 3.0, 10.0), "trans": (0.0, 0.01, 0.03, 0.1)}
for kind in sys.argv[1:]:
    for k in (1, 10):
        if kind.startswith("knn") and k == 1: continue
        t = {v: aucs(tox, make(kind, k, v), k, 20, 1).mean() for v in GRIDS[kind]}
        v = max(t, key=lambda u: (t[u], -u))
        a = aucs(tox, make(kind, k, v), k, 100, 0); ref = base[f"single s0|{k}"]
        print(f"{kind} K={k}: grid {{{', '.join(f'{u}: {s:.4f}' for u, s in t.items())}}} -> {v} | val100 AhR {a[0].mean():.4f} ARE {a[1].mean():.4f} mean {a.mean():.4f} diff %+.2f ± %.2f" % paired(a, ref), flush=True)
