"""The text work behind ``oneshot train / evaluate / predict --domain text`` (the CLI only parses and prints)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from oneshot.errors import OneshotError


def finetune_config(options: dict[str, Any], seed: int, max_minutes: float) -> Any:
    """A :class:`FinetuneConfig` from ``-o KEY=VALUE`` options, refusing unknown keys."""
    from oneshot.modalities.text.finetune import FinetuneConfig

    known = {f.name for f in dataclasses.fields(FinetuneConfig)}
    bad = sorted(set(options) - known)
    if bad:
        raise OneshotError(
            f"unknown text fine-tuning option {bad[0]!r}: use {', '.join(sorted(known - {'seed', 'max_minutes'}))}"
        )
    return FinetuneConfig(**dict(options, seed=seed, max_minutes=max_minutes))


def training_examples(
    examples: Path | None, clinc150_shots: int | None, seed: int, data_dir: Path | None
) -> tuple[dict[str, list[str]], dict]:
    """label -> texts from a CSV / JSON lines file, or K per intent drawn (seeded) from CLINC150's train split."""
    if (examples is None) == (clinc150_shots is None):
        raise OneshotError("give exactly one of --examples FILE (CSV or JSON lines: label, text) or --clinc150-shots K")
    if examples is not None:
        from oneshot.modalities.text.files import is_table, read_table

        if not is_table(examples):
            raise OneshotError(f"{examples}: --examples needs a .csv, .tsv or .jsonl file with label and text columns")
        table = read_table(examples)
        out = {lab: e.examples + ([e.description] if e.description else []) for lab, e in table.items()}
        return out, {"source": str(Path(examples).resolve()), "classes": len(out), "examples": sum(map(len, out.values()))}
    from oneshot.data.clinc150 import load_clinc150, sample_support

    if clinc150_shots is None or clinc150_shots < 1:
        raise OneshotError("--clinc150-shots must be at least 1")
    data = load_clinc150(data_dir)
    sup = sample_support(data["train"], data.intents, clinc150_shots, seed)
    return sup, {
        "source": "clinc150 train",
        "shots": clinc150_shots,
        "seed": seed,
        "classes": len(sup),
        "examples": sum(map(len, sup.values())),
    }


def train_text(
    out: Path,
    examples: dict[str, list[str]],
    data: dict,
    *,
    encoder: str,
    options: dict[str, Any],
    seed: int,
    max_minutes: float,
    command: str,
    progress: Callable[[str, int, int, float], None] | None = None,
) -> dict[str, Any]:
    """Tune ``encoder`` on ``examples`` (body when ``-o epochs=N``, then the contrastive head) and write ``out``."""
    import torch

    from oneshot.modalities import load_embedder
    from oneshot.modalities.text.embedder import TextEmbedder, fingerprint_id_of
    from oneshot.modalities.text.finetune import (
        attach_head,
        finetune,
        save_finetuned,
        train_head,
    )

    if out.exists() and not out.is_dir():
        raise OneshotError(f"{out} is a file: --out for a text model is a folder")
    cfg = finetune_config(options, seed, max_minutes)
    if len(examples) < 2:
        raise OneshotError("fine-tuning needs at least 2 labels: give examples of several classes")
    torch.manual_seed(seed)
    enc = load_embedder(encoder)
    if not isinstance(enc, TextEmbedder):
        raise OneshotError(f"--encoder {encoder} is not a text encoder: give 'text' or a sentence-transformers folder")
    base = fingerprint_id_of(enc)
    t0 = time.perf_counter()
    from oneshot.modalities.text.finetune import FinetuneResult

    body = FinetuneResult(0, 0.0, sum(map(len, examples.values())), len(examples), float("nan"), False)
    if cfg.epochs > 0:
        body = finetune(enc, examples, cfg, progress=(lambda s, n, loss: progress("body", s, n, loss)) if progress else None)
    labels = list(examples)
    texts = [t for lab in labels for t in examples[lab]]
    y = np.array([i for i, lab in enumerate(labels) for _ in examples[lab]])
    head_loss = float("nan")
    if cfg.head_steps > 0:
        x = enc.embed_texts(texts)
        a, b, head_loss = train_head(x, y, cfg, progress=(lambda s, n, loss: progress("head", s, n, loss)) if progress else None)
        attach_head(enc, a, b)
    seconds = time.perf_counter() - t0
    result = dataclasses.replace(body, seconds=seconds, final_loss=head_loss if cfg.head_steps > 0 else body.final_loss)
    save_finetuned(enc, out, base=base, cfg=cfg, result=result, command=command, data=data)
    tuned = TextEmbedder(out)  # proves the folder loads; its fingerprint is what galleries will record
    from oneshot.modalities.base import fingerprint_id

    return {
        "out": str(out),
        "seconds": seconds,
        "body_steps": body.steps,
        "head_steps": cfg.head_steps,
        "classes": len(labels),
        "examples": len(texts),
        "fingerprint": fingerprint_id(tuned.fingerprint),
        "base_encoder": base,
    }


def evaluate_text(encoder: str, shots: list[int], seeds: int, split: str, data_dir: Path | None) -> dict[str, Any]:
    """150-way K-shot accuracy on CLINC150 (support from train, queries the whole ``split``) of the two rules a
    text gallery can identify with, on the same support draws: the nearest template of the examples
    (``accuracy``, ``ci95``) and the few-shot intent classifier (``classifier_accuracy``, ``classifier_ci95``:
    :func:`~oneshot.modalities.text.lexical.fit_mixed` on the examples and each intent's description, the intent
    name with underscores as spaces, as ``oneshot predict`` and a gallery enrolled with ``--description`` fit it)."""
    from oneshot.data.clinc150 import intent_description, load_clinc150, sample_support
    from oneshot.modalities import load_embedder
    from oneshot.modalities.text.cache import cached_embeddings
    from oneshot.modalities.text.embedder import TextEmbedder
    from oneshot.modalities.text.intents import class_templates, mean_ci95, nearest
    from oneshot.modalities.text.lexical import fit_mixed

    if split not in ("val", "test"):
        raise OneshotError(f"--split {split!r}: text evaluation uses val or test")
    if seeds < 1 or any(k < 1 or k > 100 for k in shots):
        raise OneshotError("--seeds must be >= 1 and --shots between 1 and 100")
    enc = load_embedder(encoder)
    if not isinstance(enc, TextEmbedder):
        raise OneshotError(f"--encoder {encoder} is not a text encoder: give 'text' or a sentence-transformers folder")
    data = load_clinc150(data_dir)
    n = len(data.intents)
    pos = {name: i for i, name in enumerate(data.intents)}
    q = cached_embeddings(enc, data[split].texts, f"clinc150-{split}")
    yq = np.array([pos[lab] for lab in data[split].labels])
    desc_texts = [intent_description(name) for name in data.intents]
    desc = enc.embed_texts(desc_texts, warn=False)
    rows = []
    for k in shots:
        accs, clf_accs, secs = [], [], []
        for seed in range(seeds):
            sup = sample_support(data["train"], data.intents, k, seed)
            texts = [t for name in data.intents for t in sup[name]]
            x, y = enc.embed_texts(texts, warn=False), np.repeat(np.arange(n), k)
            accs.append(float((nearest(q, class_templates(x, y, n))[0] == yq).mean()))
            t0 = time.perf_counter()
            model = fit_mixed(x, texts, y, n, desc, desc_texts)
            secs.append(time.perf_counter() - t0)
            clf_accs.append(float((model.proba(q, data[split].texts).argmax(1) == yq).mean()))
        (m, ci), (cm, cci) = mean_ci95(accs), mean_ci95(clf_accs)
        rows.append(
            {
                "ways": n,
                "shots": k,
                "accuracy": m,
                "ci95": ci,
                "classifier_accuracy": cm,
                "classifier_ci95": cci,
                "classifier_fit_seconds": float(np.mean(secs)),
                "seeds": seeds,
            }
        )
    rules = {
        "accuracy": "nearest template of the K examples",
        "classifier_accuracy": "few-shot intent classifier (cosine softmax from the description + examples templates, "
        "mixed 0.8 / 0.2 with the lexical TF-IDF view)",
    }
    return {"dataset": "clinc150", "split": split, "encoder": encoder, "rules": rules, "results": rows}


def predict_text(
    support: Path,
    queries: list[str],
    encoder: str,
    nearest_template: bool = False,
    score_kind: str = "template_cosine",
    unlabeled: list[str] | None = None,
) -> tuple[list[str], list[dict[str, Any]]]:
    """Classify query texts given a CSV / JSON lines support file (label, text[, description]).

    Default: the few-shot intent classifier (:func:`oneshot.modalities.text.lexical.fit_mixed`: cosine-softmax
    weights started at the description + examples templates, mixed with a lexical TF-IDF view), probability =
    its mixed probability; score = the cosine to the predicted class's template (what an out-of-scope
    threshold is set on). ``nearest_template``: the nearest template, probability = softmax over classes of
    cosine / 0.05 (the fine-tuning temperature). ``score_kind`` ``mean_distance``: score = minus the squared
    distance of the query to the nearest class mean (description included), as a text gallery rejects on it
    (:mod:`oneshot.gallery.rejection`); each prediction names its ``score_kind``. ``unlabeled``: utterances without
    labels the classifier is self-trained on (:func:`oneshot.modalities.text.selftrain.fit_self_trained`)."""
    from oneshot.choices import check_choice
    from oneshot.modalities import load_embedder
    from oneshot.modalities.text.classifier import MEAN_DISTANCE, TEMPLATE_COSINE, mean_distance
    from oneshot.modalities.text.embedder import TextEmbedder, read_text_example
    from oneshot.modalities.text.files import is_table, read_table
    from oneshot.modalities.text.intents import class_means, class_templates

    check_choice("predict", "score", score_kind, (TEMPLATE_COSINE, MEAN_DISTANCE))
    if not is_table(support):
        raise OneshotError(f"{support}: text support is a .csv, .tsv or .jsonl file with label and text (or description) columns")
    table = read_table(support)
    if not queries:
        raise OneshotError("give query texts with --text (or files holding one query each)")
    for qt in queries:
        read_text_example(qt)
    if unlabeled is not None and nearest_template:
        raise OneshotError("--unlabeled self-trains the few-shot intent classifier: drop --nearest-template to use it")
    for ut in unlabeled or []:
        read_text_example(ut)
    enc = load_embedder(encoder)
    if not isinstance(enc, TextEmbedder):
        raise OneshotError(f"--encoder {encoder} is not a text encoder: give 'text' or a sentence-transformers folder")
    labels = list(table)
    classes = [table[lab] for lab in labels]
    q = enc.embed_texts(queries)
    if nearest_template:
        per = [c.examples + ([c.description] if c.description else []) for c in classes]
        texts: list[str] = [str(t) for ts in per for t in ts]
        y = np.array([i for i, ts in enumerate(per) for _ in ts])
        x = enc.embed_texts(texts)
        s = q @ class_templates(x, y, len(labels)).T
        p = np.exp((s - s.max(1, keepdims=True)) / 0.05)
        p /= p.sum(1, keepdims=True)
        best = s.argmax(1)
        score = s[np.arange(len(s)), best]
        if score_kind == MEAN_DISTANCE:
            score = mean_distance(q, class_means(x, y, len(labels)))
    else:
        p, score = _classify(enc, classes, q, queries, score_kind, unlabeled)
        best = p.argmax(1)
    out = [
        {"query": qt, "class": labels[int(i)], "score": float(score[j]), "probability": float(p[j, i]), "score_kind": score_kind}
        for j, (qt, i) in enumerate(zip(queries, best, strict=True))
    ]
    return labels, out


def _classify(
    enc: Any, classes: list[Any], q: np.ndarray, queries: list[str], score_kind: str, unlabeled: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities (Q, C), rejection score (Q,)) from the few-shot intent classifier (self-trained on the
    ``unlabeled`` utterances when given): the template cosine of the predicted class, or ``mean_distance`` to the
    class means."""
    from oneshot.modalities.text.classifier import TEMPLATE_COSINE
    from oneshot.modalities.text.lexical import fit_mixed
    from oneshot.modalities.text.selftrain import fit_self_trained

    texts = [str(t) for c in classes for t in c.examples]
    y = np.array([i for i, c in enumerate(classes) for _ in c.examples], np.int64)
    x = enc.embed_texts(texts) if texts else np.zeros((0, enc.dim), np.float32)
    desc = [c.description or None for c in classes]
    dv = enc.embed_texts([d for d in desc if d]) if any(desc) else np.zeros((0, enc.dim), np.float32)
    prior = np.zeros((len(classes), enc.dim), np.float32)
    prior[[i for i, d in enumerate(desc) if d]] = dv
    if unlabeled:
        model = fit_self_trained(x, texts, y, len(classes), enc.embed_texts(unlabeled), unlabeled, prior, desc)
    else:
        model = fit_mixed(x, texts, y, len(classes), prior, desc)
    p = model.proba(q, queries)
    if score_kind != TEMPLATE_COSINE:
        return p, model.embedding.rejection_scores(q, score_kind)
    return p, model.embedding.rejection_scores(q, TEMPLATE_COSINE, predicted=p.argmax(1))
