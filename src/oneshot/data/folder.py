"""Users' own images: one folder per class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from oneshot.data.images import Preprocessing, decode_image, image_files_in
from oneshot.data.imageset import ImageSet
from oneshot.errors import OneshotError


def list_class_folders(root: str | Path) -> dict[str, list[Path]]:
    """``{class name: [image files]}`` for each sub-folder of ``root`` (sorted, hidden files skipped).

    Files are images by their content, not their suffix; files that are not images are skipped, and a class
    folder holding only such files is an error naming them.

    Raises :class:`OneshotError` when ``root`` is missing, has no class folders, or a class folder holds no image.
    """
    root = Path(root)
    if not root.is_dir():
        raise OneshotError(f"{root} is not a folder: give a folder with one sub-folder of images per class")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise OneshotError(f"{root} has no class folders: make one sub-folder per class and put its images in it")
    found: dict[str, list[Path]] = {}
    for folder in classes:
        files = image_files_in(folder)  # by content: any suffix; a folder of only unreadable files names them
        if not files:
            raise OneshotError(f"class folder {folder} holds no image: add at least one image or remove the folder")
        found[folder.name] = files
    return found


def load_image_folder(root: str | Path, prep: Preprocessing) -> ImageSet:
    """All images under ``root/<class>/`` as an :class:`ImageSet`, decoded with ``prep``."""
    classes = list_class_folders(root)
    images, labels = [], []
    for c, files in enumerate(classes.values()):
        for f in files:
            images.append(decode_image(f, prep))
            labels.append(c)
    return ImageSet(torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.long), list(classes))


def load_image_files(paths: list[Path], prep: Preprocessing) -> torch.Tensor:
    """uint8 tensor (B, C, H, W) of the given files; the first unreadable file is a :class:`OneshotError`."""
    if not paths:
        raise OneshotError("no query images given")
    return torch.from_numpy(np.stack([decode_image(p, prep) for p in paths]))
