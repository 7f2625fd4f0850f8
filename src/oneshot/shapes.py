"""Episode shapes checked at the edge: what a dataset part can supply is known before it is loaded.

An N-way K-shot episode with Q queries per class needs N classes and, as :class:`~oneshot.data.samplers.EpisodeSampler`
draws from every class, K + Q examples in each. The class count and the fewest examples per class of every part
of the built-in datasets are fixed by their protocols (pinned by ``tests/test_reliability_shapes.py`` against the
loaded data), and a user's folder is counted by listing it; so ``train``, ``evaluate`` and ``demo`` refuse an
impossible shape in a second instead of after loading and embedding the data.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from oneshot.errors import OneshotError

_OMNIGLOT = {
    "vinyals": {"train": 4112, "val": 688, "test": 1692, "trainval": 4800},
    "lake": {"train": 761, "val": 203, "test": 659, "trainval": 964},
}
#: (dataset, part) -> (classes, fewest examples per class); Omniglot's are per split, 20 drawings each.
PARTS: dict[tuple[str, str], tuple[int, int]] = {
    **{(f"omniglot/{s}", p): (n, 20) for s, parts in _OMNIGLOT.items() for p, n in parts.items()},
    ("att_faces", "train"): (16, 10),
    ("att_faces", "val"): (4, 10),
    ("att_faces", "trainval"): (20, 10),
    ("att_faces", "test"): (20, 10),
    ("neu", "pool"): (1200, 1),
    ("neu", "val"): (6, 26),
    ("neu", "test"): (6, 61),
}


def part_size(dataset: str, split: str, part: str) -> tuple[int, int] | None:
    """(classes, fewest examples per class) of a built-in dataset's part, or None when it is not known."""
    key = f"omniglot/{split}" if dataset == "omniglot" else dataset
    return PARTS.get((key, part))


def _what(dataset: str, split: str, part: str) -> str:
    return f"omniglot {split} {part}" if dataset == "omniglot" else f"{dataset} {part}"


def folder_size(folder: str | Path) -> tuple[int, int]:
    """(classes, fewest examples per class) of a class-per-folder directory, by listing it."""
    from oneshot.data.folder import list_class_folders

    counts = [len(files) for files in list_class_folders(folder).values()]
    return len(counts), min(counts)


def check_shapes(
    size: tuple[int, int] | None, shapes: Iterable[tuple[int, int]], queries: int, what: str, hint: str = "--ways"
) -> None:
    """Refuse (N ways, K shots) shapes with ``queries`` per class that ``size`` = (classes, fewest examples per
    class) of ``what`` cannot supply; nothing is checked when the size is not known."""
    if size is None:
        return
    classes, fewest = size
    for ways, shots in shapes:
        if ways > classes:
            raise OneshotError(f"{what} has {classes} classes, too few for {ways}-way episodes: lower {hint}")
        if shots + queries > fewest:
            raise OneshotError(
                f"{shots}-shot episodes with {queries} queries need {shots + queries} examples per class but "
                f"{what} has {fewest} in some class: lower the shots or queries (at most {fewest} together)"
            )


def check_training(dataset: str, split: str, config: Any) -> None:
    """``train``: the training part must supply the training episodes and the validation part the validation
    episodes of ``config`` (a :class:`~oneshot.training.TrainConfig`)."""
    from oneshot.experiment import TRAIN_PARTS

    train_part, val_part = TRAIN_PARTS.get(dataset, ("train", "val"))
    shape = [(config.ways, config.shots)]
    check_shapes(part_size(dataset, split, train_part), shape, config.queries, _what(dataset, split, train_part))
    val = [(config.val_ways, config.val_shots)]
    check_shapes(part_size(dataset, split, val_part), val, config.val_queries, _what(dataset, split, val_part), "--val-ways")


def check_evaluation(
    metadata: dict[str, Any], split: str | None, part: str, folder: str | Path | None, shapes: list[tuple[int, int]], queries: int
) -> None:
    """``evaluate`` / ``demo``: the part of the checkpoint's dataset (``metadata``: the checkpoint's), or the
    user's ``folder``, must supply every (ways, shots) of ``shapes`` with ``queries`` per class."""
    if folder is not None:
        check_shapes(folder_size(folder), shapes, queries, f"folder {folder}")
        return
    data = metadata.get("data") or {}
    dataset, split = data.get("dataset", "omniglot"), split or data.get("split", "vinyals")
    check_shapes(part_size(str(dataset), str(split), part), shapes, queries, _what(str(dataset), str(split), part))
