"""SetFit-style few-shot fine-tuning of a sentence encoder (Tunstall et al. 2022, "Efficient Few-Shot Learning
Without Prompts"): the encoder is tuned contrastively on the labelled few, then classes are nearest templates.

Where SetFit forms explicit positive / negative pairs, this forms them all at once inside each batch with the
supervised contrastive loss (Khosla et al. 2020, "Supervised Contrastive Learning"): a batch holds P classes x
up to K of their examples, each example passed ``views`` times with dropout on (SimCSE, Gao et al. 2021, so
a 1-shot class still has a positive); every same-class pair in the batch is a positive pair, every other pair a
negative one, on cosine similarities divided by a temperature. ``interpolate`` < 1 then mixes the tuned weights
with the starting ones (WiSE-FT, Wortsman et al. 2022, "Robust fine-tuning of zero-shot models"): the mixed
model keeps more of what the pretrained encoder knew about classes the tuning data never showed (on CLINC150's
novel intents it beat both the frozen and the fully tuned encoder on validation, docs/text.md). The tuned model is written as a
sentence-transformers folder with safetensors weights and a provenance file (:data:`PROVENANCE_FILE`) whose
weights checksum ``TextEmbedder`` verifies on load.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from oneshot.errors import OneshotError
from oneshot.modalities.text.embedder import (
    PROVENANCE_FILE,
    TextEmbedder,
    fingerprint_id_of,
    weights_sha256,
)


@dataclass
class FinetuneConfig:
    """Fine-tuning settings (defaults chosen on CLINC150's validation split, docs/text.md).

    Attributes:
        head_steps: steps of the contrastive head on the (frozen or tuned) encoder's embeddings; 0: no head.
        head_lr / head_l2: Adam learning rate of the head; L2 pull of its residual weights towards zero
            (the head starts as the identity and stays near it).
        head_dropout: feature dropout making the ``views`` of one embedding differ.
        head_classes_per_batch / head_shots_per_batch: P x K of the head's batches.
        epochs: passes of body (transformer) fine-tuning over the examples; 0 (the default) keeps the body
            frozen -- on the 2-core CPU it costs minutes per epoch (docs/text.md).
        classes_per_batch: P; ``shots_per_batch``: K, at most this many examples of a class per batch.
        views: dropout views of each example per batch (2 gives every 1-shot class a positive).
        lr: AdamW learning rate (linear warm-up over the first 10% of steps, then linear decay).
        temperature: of the supervised contrastive loss on cosine similarities.
        max_tokens: training texts are cut to this many tokens (embedding later uses the model's own limit).
        max_minutes: stop early after this long (0: no limit); ``seed`` fixes batches, dropout and init.
        interpolate: a in (0, 1]: after body tuning the weights become ``(1 - a) * start + a * tuned``
            (WiSE-FT); 1 (the default) keeps the tuned weights.
    """

    head_steps: int = 150
    head_lr: float = 1e-3
    head_l2: float = 1e-3
    head_dropout: float = 0.1
    head_classes_per_batch: int = 64
    head_shots_per_batch: int = 8
    epochs: int = 0
    classes_per_batch: int = 16
    shots_per_batch: int = 4
    views: int = 2
    lr: float = 5e-5
    temperature: float = 0.1
    weight_decay: float = 0.01
    max_tokens: int = 64
    max_minutes: float = 0.0
    seed: int = 0
    interpolate: float = 1.0


@dataclass
class FinetuneResult:
    """What a fine-tuning run did: steps, seconds, the last loss and the mean loss of the last epoch."""

    steps: int
    seconds: float
    examples: int
    classes: int
    final_loss: float
    stopped_early: bool


def supcon_loss(emb: Any, labels: Any, temperature: float) -> Any:
    """Supervised contrastive loss (Khosla et al. 2020, eq. 2) on unit embeddings (B, D) with labels (B,)."""
    import torch

    sim = emb @ emb.T / temperature
    eye = torch.eye(len(emb), dtype=torch.bool, device=emb.device)
    sim = sim.masked_fill(eye, float("-inf"))
    logp = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~eye
    has = pos.any(1)
    if not has.any():
        return emb.sum() * 0.0
    per = -(logp.masked_fill(~pos, 0.0).sum(1) / pos.sum(1).clamp(min=1))
    return per[has].mean()


def _batches(groups: list[list[str]], cfg: FinetuneConfig, rng: random.Random) -> list[list[tuple[str, int]]]:
    """One epoch: every example once, in batches of P classes x up to K examples each."""
    chunks: list[list[tuple[str, int]]] = []
    for c, texts in enumerate(groups):
        t = texts[:]
        rng.shuffle(t)
        for s in range(0, len(t), cfg.shots_per_batch):
            chunks.append([(x, c) for x in t[s : s + cfg.shots_per_batch]])
    rng.shuffle(chunks)
    out: list[list[tuple[str, int]]] = []
    cur: list[tuple[str, int]] = []
    seen: set[int] = set()
    n = 0
    for ch in chunks:
        cur.extend(ch)
        seen.add(ch[0][1])
        n += 1
        if n == cfg.classes_per_batch:
            out.append(cur)
            cur, n, seen = [], 0, set()
    if cur:
        out.append(cur)
    return out


def finetune(
    embedder: TextEmbedder,
    examples: dict[str, list[str]],
    cfg: FinetuneConfig | None = None,
    progress: Callable[[int, int, float], None] | None = None,
) -> FinetuneResult:
    """Tune ``embedder.model`` in place on labelled texts (label -> its texts); at least 2 classes.

    ``progress(step, total_steps, loss)`` is called after each step. The model is left in eval mode; the
    embedder's fingerprint is recomputed by :func:`save_finetuned` once the weights are written.
    """
    import torch

    cfg = cfg or FinetuneConfig()
    if not 0.0 < cfg.interpolate <= 1.0:
        raise OneshotError(f"interpolate must be in (0, 1] (got {cfg.interpolate}): 1 keeps the tuned weights, 0.5 mixes half")
    groups = [[t.strip() for t in v if t and t.strip()] for v in examples.values()]
    groups = [g for g in groups if g]
    if len(groups) < 2:
        raise OneshotError("fine-tuning needs examples of at least 2 classes: give more labelled texts")
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    model = embedder.model
    tokenizer = model.tokenizer
    params = [p for p in model.parameters() if p.requires_grad]
    start = {k: v.detach().clone() for k, v in model.state_dict().items()} if cfg.interpolate < 1.0 else None
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    epochs = [_batches(groups, cfg, rng) for _ in range(cfg.epochs)]
    total = sum(len(e) for e in epochs)
    warm = max(1, math.ceil(0.1 * total))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else max(0.0, (total - s) / max(1, total - warm))
    )
    device = next(model.parameters()).device
    model.train()
    step, loss_v, t0, stopped = 0, float("nan"), time.perf_counter(), False
    try:
        for batches in epochs:
            for batch in batches:
                texts = [t for t, _ in batch] * cfg.views
                labels = torch.tensor([c for _, c in batch] * cfg.views, device=device)
                feats = tokenizer(
                    texts, padding=True, truncation=True, max_length=min(cfg.max_tokens, embedder.max_tokens), return_tensors="pt"
                )
                feats = {k: v.to(device) for k, v in feats.items()}
                emb = model(feats)["sentence_embedding"]
                emb = torch.nn.functional.normalize(emb, dim=-1)
                loss = supcon_loss(emb, labels, cfg.temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                step += 1
                loss_v = float(loss.detach())
                if progress is not None:
                    progress(step, total, loss_v)
                if cfg.max_minutes and time.perf_counter() - t0 > 60 * cfg.max_minutes:
                    stopped = True
                    break
            if stopped:
                break
    finally:
        model.eval()
    if start is not None:
        interpolate_weights(model, start, cfg.interpolate)
    return FinetuneResult(step, time.perf_counter() - t0, sum(len(g) for g in groups), len(groups), loss_v, stopped)


def interpolate_weights(model: Any, start: dict[str, Any], alpha: float) -> None:
    """Set ``model``'s floating-point weights to ``(1 - alpha) * start + alpha * current`` in place (WiSE-FT).

    ``start`` is a ``state_dict`` copy taken before tuning; integer buffers (e.g. position ids) are left as they are.
    """
    import torch

    current = model.state_dict()
    with torch.no_grad():
        mixed = {k: (1.0 - alpha) * start[k] + alpha * v if v.is_floating_point() else v for k, v in current.items()}
    model.load_state_dict(mixed)


def save_finetuned(
    embedder: TextEmbedder,
    out: str | Path,
    *,
    base: dict[str, Any],
    cfg: FinetuneConfig,
    result: FinetuneResult,
    command: str,
    data: dict[str, Any],
) -> Path:
    """Write the tuned model as a sentence-transformers folder (safetensors) with its provenance; returns it.

    An existing folder is refused unless it is an earlier oneshot text model (it is then replaced whole).
    """
    import shutil
    import tempfile

    from oneshot.provenance import git_commit, machine_description, now_iso

    out = Path(out)
    if out.exists() and not (out / PROVENANCE_FILE).is_file():
        raise OneshotError(f"{out} exists and is not a oneshot text model: choose a new --out folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        embedder.model.save(str(tmp), safe_serialization=True)
        for junk in tmp.rglob("*.bin"):
            junk.unlink()
        prov = {
            "format": "oneshot-text-model",
            "version": 1,
            "weights_sha256": weights_sha256(tmp),
            "base_encoder": base,
            "config": asdict(cfg),
            "result": asdict(result),
            "data": data,
            "command": command,
            "commit": git_commit(),
            "machine": machine_description(),
            "date": now_iso(),
        }
        (tmp / PROVENANCE_FILE).write_text(json.dumps(prov, indent=2), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


__all__ = [
    "FinetuneConfig",
    "FinetuneResult",
    "finetune",
    "fingerprint_id_of",
    "interpolate_weights",
    "save_finetuned",
    "supcon_loss",
]


def train_head(
    x: Any, labels: Any, cfg: FinetuneConfig, progress: Callable[[int, int, float], None] | None = None
) -> tuple[Any, Any, float]:
    """A residual linear head ``z = normalise(x + x A^T + b)`` trained with the supervised contrastive loss.

    Args:
        x: unit embeddings (N, D) float32 (numpy or torch) of the labelled examples.
        labels: (N,) integer classes.
    Returns:
        (A (D, D), b (D,), last loss) as torch tensors; ``A = 0, b = 0`` is the identity (the frozen encoder).
    """
    import torch

    threads = torch.get_num_threads()
    # The head's matrices are small: one thread avoids OpenMP waits, which on the shared 2-core CPU made 50 steps
    # take 28 s with two threads against about 3 s with one.
    torch.set_num_threads(1)
    try:
        return _train_head(x, labels, cfg, progress)
    finally:
        torch.set_num_threads(threads)


def _train_head(
    x: Any, labels: Any, cfg: FinetuneConfig, progress: Callable[[int, int, float], None] | None
) -> tuple[Any, Any, float]:
    import numpy as np
    import torch

    x = torch.as_tensor(np.asarray(x, np.float32))
    y = torch.as_tensor(np.asarray(labels)).long()
    d = x.shape[1]
    g = torch.Generator().manual_seed(cfg.seed)
    a = torch.zeros(d, d, requires_grad=True)
    b = torch.zeros(d, requires_grad=True)
    opt = torch.optim.Adam([a, b], lr=cfg.head_lr)
    classes = torch.unique(y)
    members = [torch.nonzero(y == c).flatten() for c in classes]
    p = min(cfg.head_classes_per_batch, len(classes))
    loss_v = float("nan")
    for step in range(cfg.head_steps):
        pick = torch.randperm(len(classes), generator=g)[:p]
        idx = []
        for c in pick.tolist():
            m = members[c]
            idx.append(m[torch.randperm(len(m), generator=g)[: cfg.head_shots_per_batch]])
        ii = torch.cat(idx)
        xb = x[ii].repeat(cfg.views, 1)
        yb = y[ii].repeat(cfg.views)
        if cfg.head_dropout > 0:
            keep = (torch.rand(xb.shape, generator=g) >= cfg.head_dropout).float() / (1 - cfg.head_dropout)
            xb = xb * keep
        z = torch.nn.functional.normalize(xb + xb @ a.T + b, dim=-1)
        loss = supcon_loss(z, yb, cfg.temperature) + cfg.head_l2 * (a.pow(2).sum() + b.pow(2).sum())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_v = float(loss.detach())
        if progress is not None:
            progress(step + 1, cfg.head_steps, loss_v)
    return a.detach(), b.detach(), loss_v


def apply_head(x: Any, a: Any, b: Any) -> Any:
    """numpy (N, D) unit embeddings -> the head's unit embeddings (N, D) float32 (what the saved model outputs)."""
    import numpy as np

    z = x + x @ a.numpy().T + b.numpy()
    return (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)


def attach_head(embedder: TextEmbedder, a: Any, b: Any) -> None:
    """Append the head to the embedder's sentence-transformers pipeline: Dense(I + A, b) then Normalize."""
    import torch

    try:
        from sentence_transformers.sentence_transformer.modules import Dense, Normalize  # type: ignore[attr-defined]
    except ImportError:  # older sentence-transformers
        from sentence_transformers.models import Dense, Normalize  # type: ignore[no-redef]
    d = a.shape[0]
    dense = Dense(
        d, d, bias=True, activation_function=torch.nn.Identity(), init_weight=(torch.eye(d) + a).clone(), init_bias=b.clone()
    )
    model = embedder.model
    model.append(dense)
    model.append(Normalize())
    model.eval()
