"""CLINC150 (Larson et al. 2019, "An Evaluation Dataset for Intent Classification and Out-of-Scope
Prediction", EMNLP): 150 intents in 10 domains, 100 / 20 / 30 utterances per intent in train / val / test,
plus out-of-scope (``oos``) utterances 100 / 100 / 1000 in ``oos_train`` / ``oos_val`` / ``oos_test``.

The official file is ``data_full.json`` (keys ``train``, ``val``, ``test``, ``oos_train``, ``oos_val``,
``oos_test``; each a list of ``[utterance, intent]``). It is found with the project's resolution order
(``--data-dir``, ``$ONESHOT_DATA``, the user cache) in a ``text/clinc150/`` subfolder or directly, downloaded
with checksum verification when absent, and validated by structure (the counts above) before use.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from oneshot.data.paths import RemoteFile, locate_files
from oneshot.errors import OneshotError

CLINC150_FILE = RemoteFile(
    "data_full.json",
    "https://raw.githubusercontent.com/clinc/oos-eval/master/data/data_full.json",
    "sha256:36923c3705a59e08fe9c3883d8bc2dd966ef93e22cb78ac41171782a698d56e0",
)
#: (split, utterances it must hold); in-scope splits hold the same number per intent.
EXPECTED = {"train": 15000, "val": 3000, "test": 4500, "oos_train": 100, "oos_val": 100, "oos_test": 1000}
N_INTENTS = 150
OOS = "oos"


@dataclass(frozen=True)
class TextSplit:
    """Utterances and their labels (intent names; ``oos`` for out-of-scope)."""

    texts: list[str]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def by_label(self) -> dict[str, list[str]]:
        """label -> its utterances in file order."""
        out: dict[str, list[str]] = {}
        for t, lab in zip(self.texts, self.labels, strict=True):
            out.setdefault(lab, []).append(t)
        return out


@dataclass(frozen=True)
class Clinc150:
    """The whole dataset: ``splits[name]`` for the six splits and the sorted list of the 150 ``intents``."""

    splits: dict[str, TextSplit]
    intents: list[str]
    path: Path

    def __getitem__(self, split: str) -> TextSplit:
        if split not in self.splits:
            raise OneshotError(f"CLINC150 has no split {split!r}: use one of {', '.join(self.splits)}")
        return self.splits[split]


def intent_description(intent: str) -> str:
    """The zero-shot description made from an intent's name: ``book_flight`` -> ``book flight``."""
    return intent.replace("_", " ").strip()


def load_clinc150(data_dir: str | Path | None = None) -> Clinc150:
    """Find, check and read ``data_full.json`` (see the module docstring for where it is looked for)."""
    path = locate_files("text/clinc150", [CLINC150_FILE], data_dir)[CLINC150_FILE.name]
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OneshotError(f"{path} is not the CLINC150 JSON file ({exc}): replace it with the official data_full.json") from None
    splits: dict[str, TextSplit] = {}
    for name, n in EXPECTED.items():
        rows = raw.get(name) if isinstance(raw, dict) else None
        if not isinstance(rows, list) or len(rows) != n or not all(isinstance(r, list) and len(r) == 2 for r in rows):
            got = len(rows) if isinstance(rows, list) else "no"
            raise OneshotError(
                f"{path} is not the full CLINC150 file: split {name!r} has {got} rows, expected {n} "
                "[utterance, intent] pairs; replace it with the official data_full.json"
            )
        splits[name] = TextSplit([str(r[0]) for r in rows], [str(r[1]) for r in rows])
    intents = sorted(set(splits["train"].labels))
    if len(intents) != N_INTENTS or OOS in intents:
        raise OneshotError(f"{path}: train holds {len(intents)} intents, expected {N_INTENTS} in-scope ones")
    for name in ("train", "val", "test"):
        counts = {lab: len(v) for lab, v in splits[name].by_label().items()}
        if set(counts) != set(intents) or len(set(counts.values())) != 1:
            raise OneshotError(f"{path}: split {name!r} does not hold the same intents in equal numbers; replace the file")
    for name in ("oos_train", "oos_val", "oos_test"):
        if set(splits[name].labels) != {OOS}:
            raise OneshotError(f"{path}: split {name!r} holds labels other than 'oos'; replace the file")
    return Clinc150(splits, intents, path)


def sample_support(split: TextSplit, intents: list[str], shots: int, seed: int) -> dict[str, list[str]]:
    """``shots`` utterances per intent drawn without replacement from ``split`` (seeded; same seed, same draw).

    One ``numpy.random.default_rng((seed, 13))`` permutes each intent's utterances (file order, intents in the
    order given) and the first ``shots`` are taken, so draws of 1, 5 and 10 shots are nested; this is the draw
    of ``benchmarks/text_clinc150.py``, so ``oneshot evaluate --domain text`` reproduces its frozen rows.
    """
    import numpy as np

    groups = split.by_label()
    rng = np.random.default_rng((seed, 13))
    out: dict[str, list[str]] = {}
    for intent in intents:
        pool = groups.get(intent, [])
        if len(pool) < shots:
            raise OneshotError(f"intent {intent!r} has {len(pool)} utterances, fewer than {shots} shots")
        out[intent] = [pool[int(i)] for i in rng.permutation(len(pool))[:shots]]
    return out


def base_novel_split(intents: list[str], n_novel: int = 50, seed: int = 0) -> tuple[list[str], list[str]]:
    """Seeded split of the intents into base (fine-tuning) and novel (evaluation) sets, both sorted."""
    rng = random.Random(f"clinc150-novel-{seed}")
    novel = sorted(rng.sample(sorted(intents), n_novel))
    base = sorted(set(intents) - set(novel))
    return base, novel
