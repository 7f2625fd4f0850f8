"""The compact in-memory image store that samplers index into.

All images of a split live in one uint8 tensor; samplers yield integer indices and the batch is gathered
(and converted to float) on the training device, so there is no per-item Python work on the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


class ClassSet:
    """What samplers and the training loop need of any labelled set (images here, molecules in
    :class:`oneshot.data.assays.MoleculeSet`): one readable name per class, hence the number of classes."""

    class_names: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass
class ImageSet(ClassSet):
    """Images of several classes.

    Attributes:
        images: uint8 tensor (N, C, H, W).
        labels: int64 tensor (N,), values in ``[0, len(class_names))``.
        class_names: one readable name per class.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    _class_indices: list[np.ndarray] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {self.images.dtype} {tuple(self.images.shape)}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError("labels must have one entry per image")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def class_indices(self) -> list[np.ndarray]:
        """For each class, the indices of its images (ascending)."""
        if self._class_indices is None:
            labels = self.labels.numpy()
            order = np.argsort(labels, kind="stable")
            counts = np.bincount(labels, minlength=self.num_classes)
            self._class_indices = np.split(order, np.cumsum(counts)[:-1])
        return self._class_indices

    def gather(self, indices: torch.Tensor | np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        """Float batch (B, C, H, W) in [0, 1] of the given indices, built on ``device``."""
        idx = torch.as_tensor(indices, dtype=torch.long).to(self.images.device, non_blocking=True)
        batch = self.images.index_select(0, idx).to(device, non_blocking=True)
        return batch.float().div_(255.0)

    def on(self, device: torch.device | str) -> ImageSet:
        """The same set with its images held on ``device`` (labels stay on the CPU, where samplers read them):
        on a GPU, each batch is then gathered there, with no host-to-device copy of images per step."""
        if self.images.device == torch.device(device):
            return self
        return ImageSet(self.images.to(device), self.labels, self.class_names, self._class_indices)


def with_rotated_classes(data: ImageSet) -> ImageSet:
    """``data`` plus each class's 90, 180 and 270-degree rotations, each rotation a new class.

    The class-multiplying augmentation of Santoro et al. (2016) and Vinyals et al. (2016): a rotated character
    is a different symbol, so a split's training classes are quadrupled. Images (4N, C, H, W); class ``c`` of
    the input keeps its index, its rotation by ``90 k`` degrees is class ``c + k * num_classes`` and is named
    ``"<name>/rot<90 k>"``. Square images only (a rotation must keep the shape).
    """
    if data.images.shape[-1] != data.images.shape[-2]:
        raise ValueError(f"rotated classes need square images, got {tuple(data.images.shape[-2:])}")
    n = data.num_classes
    images = [data.images] + [torch.rot90(data.images, k, dims=(2, 3)) for k in (1, 2, 3)]
    labels = [data.labels + k * n for k in range(4)]
    names = list(data.class_names) + [f"{name}/rot{90 * k:03d}" for k in (1, 2, 3) for name in data.class_names]
    return ImageSet(torch.cat(images).contiguous(), torch.cat(labels), names)
