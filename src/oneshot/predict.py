"""Classify new images from one example per class, with no retraining."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from oneshot.checkpoint import Checkpoint
from oneshot.data.folder import list_class_folders, load_image_files
from oneshot.data.images import Preprocessing, decode_image, image_files_in
from oneshot.errors import OneshotError
from oneshot.runtime import to_layout


@dataclass
class SupportSet:
    """Labelled support images: uint8 (S, C, H, W), labels (S,) into ``class_names``."""

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    files: list[Path]


def load_support(folder: str | Path, prep: Preprocessing) -> SupportSet:
    """A support set from a folder: either one sub-folder per class (any number of images each), or image
    files directly in the folder, each file one class named by its stem (``cat.png`` -> class ``cat``)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise OneshotError(f"support folder {folder} does not exist")
    subdirs = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    files_here = image_files_in(folder) if not subdirs else []
    if subdirs:
        classes = list_class_folders(folder)
        pairs = [(name, f) for name, fs in classes.items() for f in fs]
    elif files_here:
        pairs = [(f.stem, f) for f in files_here]
    else:
        raise OneshotError(f"support folder {folder} holds no images: add one image per class (or one sub-folder per class)")
    names = list(dict.fromkeys(n for n, _ in pairs))
    if len(names) < 2:
        raise OneshotError(f"support folder {folder} has {len(names)} class: one-shot classification needs at least 2")
    images = torch.from_numpy(np.stack([decode_image(f, prep) for _, f in pairs]))
    labels = torch.tensor([names.index(n) for n, _ in pairs], dtype=torch.long)
    return SupportSet(images, labels, names, [f for _, f in pairs])


def query_files(paths: list[Path]) -> list[Path]:
    """Expand folders into their image files (sorted); files are kept as given."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = image_files_in(p, recursive=True)
            if not found:
                raise OneshotError(f"query folder {p} holds no images")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise OneshotError(f"query {p} does not exist")
    if not out:
        raise OneshotError("no query images given")
    return out


@torch.no_grad()
def predict(
    ck: Checkpoint,
    support: SupportSet,
    queries: list[Path],
    device: torch.device | str = "cpu",
    prep: Preprocessing | None = None,
) -> list[dict]:
    """For each query file: predicted class, its probability (softmax over the method's logits) and logit.

    ``prep`` overrides the checkpoint's preprocessing (it must be the one the support set was decoded with).
    Warns (:class:`~oneshot.data.images.InputWarning`) when the inputs look unlike the encoder's training images.
    """
    import warnings

    from oneshot.data.images import InputWarning, domain_warning

    prep = prep or ck.preprocessing
    q = load_image_files(queries, prep)
    msg = domain_warning(torch.cat([support.images, q]).numpy(), ck.input_envelope, f"the checkpoint ({ck.domain})")
    if msg:
        warnings.warn(msg, InputWarning, stacklevel=2)
    dev = torch.device(device)
    s = to_layout(support.images.to(dev).float().div_(255), True)
    qx = to_layout(q.to(dev).float().div_(255), True)
    logits = ck.method.eval().classify(s, support.labels.to(dev), qx, len(support.class_names))
    probs = logits.float().softmax(1)
    out = []
    for i, path in enumerate(queries):
        k = int(probs[i].argmax())
        out.append(
            {"query": str(path), "class": support.class_names[k], "probability": float(probs[i, k]), "logit": float(logits[i, k])}
        )
    return out
