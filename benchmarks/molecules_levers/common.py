"""mol5 lever experiments: shared helpers (validation only: NR-AhR, SR-ARE)."""
import os, time, json
from pathlib import Path
import numpy as np, torch
from oneshot.data.molecules import load_tox21, TOX21_TRAIN
from oneshot.modalities.molecule.train import TOX21_VAL, molecule_metadata
from oneshot.modalities.molecule.prior import prior_features, PRIOR_ENCODER, prior_config, WEIGHT_GRID, BETA_GRID
from oneshot.data.assays import MoleculeSet, assay_auc, assay_rows, draw_support, roc_auc
from oneshot.checkpoint import load_checkpoint

OUT = Path(os.environ.get("MOLECULE_LEVERS_DIR", "/tmp/molecule_levers"))  # features, checkpoints, AUC arrays
OUT.mkdir(parents=True, exist_ok=True)
TRAIN7 = [t for t in TOX21_TRAIN if t not in TOX21_VAL]
torch.set_num_threads(1)

def data():
    tox = load_tox21(None, on_invalid="skip")
    f = OUT / "x.npy"
    if f.exists():
        x = np.load(f)
    else:
        x = prior_features(tox); np.save(f, x)
    return tox, x

def train(tox, x, out, seed=0, epochs=8, select=True, head_dropout=0.5, weight_decay=1e-5, width=512, lr=1e-3, tasks=TRAIN7, batch=128, hidden=(), enc_dropout=0.0, pos_weight=1.0):
    from oneshot.encoders.molecule_mlp import MoleculeMLP
    from oneshot.methods.activity_prior import ActivityPrior
    from oneshot.training import train as loop
    torch.manual_seed(seed)
    enc_opts = dict(PRIOR_ENCODER, out_dim=width, hidden=list(hidden), dropout=enc_dropout)
    encoder = MoleculeMLP(**enc_opts)
    tr = MoleculeSet(x, tox, tasks)
    rows = np.flatnonzero((~np.isnan(tr.multitask_targets())).any(1))
    encoder.set_descriptor_stats(torch.from_numpy(np.asarray(x[rows], np.float32)))
    cls = ActivityPrior
    if pos_weight != 1.0:
        import torch.nn.functional as F
        from oneshot.methods.base import LossOutput
        class PW(ActivityPrior):
            def loss(self, episode):
                y = self.targets[episode.classes]
                logits = self.heads(self.dropout(self.embed(episode.support))).float()
                mask = ~torch.isnan(y)
                per = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(y), reduction="none", pos_weight=torch.tensor(pos_weight))
                flat = logits.detach()[mask]
                return LossOutput((per * mask).sum() / mask.sum().clamp_min(1), torch.stack([-flat, flat], 1), y[mask].long())
        cls = PW
    m = cls(encoder, num_tasks=len(tasks), head_dropout=head_dropout, batch_size=batch, evidence_weights={"1": 1.0, "10": 3.0})
    cfg = prior_config(len(rows), epochs, batch, seed)
    cfg.weight_decay = weight_decay; cfg.lr = lr
    if not select:
        cfg.eval_every = cfg.episodes
    val = MoleculeSet(x, tox, TOX21_VAL, val_shots=1, val_draws=20, val_seed=cfg.val_seed)
    meta = molecule_metadata(tox, tasks, TOX21_VAL, enc_opts, 1, 20)
    res = loop(m, tr, val, cfg, out, meta)
    Path(str(out) + ".resume").unlink(missing_ok=True)
    return res

class Member:
    def __init__(self, method, x, tox):
        self.m = method
        self.z = MoleculeSet(x, tox, TOX21_VAL).embed(method)

def ens_scorer(members, shots, w, beta, rank=False):
    from scipy.stats import rankdata
    scs = []
    for mb in members:
        mb.m.evidence_weights = {str(shots): w}; mb.m.head_betas = {str(shots): beta}
        scs.append(mb.m.assay_scorer(mb.z, shots))
    def score(s, sl, q, d):
        outs = [f(s, sl, q, d) for f in scs]
        if rank:
            outs = [rankdata(o) for o in outs]
        return np.mean(outs, 0)
    return score

#: The scoring rule the lever runs hold fixed: K -> (w_K, beta_K).
RULE = {1: (1.0, 0.0), 10: (3.0, 1.0)}

def mean_val_aucs(tox, x, paths):
    """K -> (2 validation assays, 100 draws) ROC-AUCs averaged over the single models at ``paths`` (rule fixed)."""
    out = {}
    for k in (1, 10):
        w, b = RULE[k]
        out[k] = np.mean([aucs(tox, ens_scorer([Member(load_checkpoint(p).method, x, tox)], k, w, b), k, 100, 0) for p in paths], 0)
    return out

def aucs(tox, scorer, shots, draws, seed):
    return np.array([assay_auc(tox, t, scorer, shots, draws, seed).aucs for t in TOX21_VAL])  # (2, draws)

def choose(tox, members, shots, rank=False, draws=20):
    """w then beta on seed-1 draws as the benchmark does."""
    tw = {w: aucs(tox, ens_scorer(members, shots, w, 0.0, rank), shots, draws, 1).mean() for w in WEIGHT_GRID}
    w = max(tw, key=lambda v: (tw[v], -v))
    tb = {b: aucs(tox, ens_scorer(members, shots, w, b, rank), shots, draws, 1).mean() for b in BETA_GRID}
    b = max(tb, key=lambda v: (tb[v], -v))
    return w, b, tw, tb

def paired(a, b):
    d = (a - b).ravel() * 100
    return d.mean(), 1.96 * d.std(ddof=1) / np.sqrt(len(d))
