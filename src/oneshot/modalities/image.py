"""Images: files decoded by a checkpoint's own :class:`~oneshot.data.images.Preprocessing`, embedded by its method."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oneshot.errors import OneshotError
from oneshot.modalities.base import Inline, RawInput, read_file, wrong_modality

MODALITY = "image"


def read_image_example(example: str | Path | bytes | Inline) -> RawInput:
    """A path (``str`` or ``Path``) or raw bytes; an inline text or SMILES is refused naming both modalities."""
    if isinstance(example, Inline):
        raise wrong_modality(MODALITY, f"{example.kind} ({example.value[:40]!r})")
    if isinstance(example, bytes):
        return RawInput(example, "<bytes>", None)
    return read_file(example)


class ImageEmbedder:
    """Images through a oneshot checkpoint: its own preprocessing, then ``method.embed``.

    Attributes:
        path: the checkpoint file.
        spec: how a gallery reloads it: a built-in name (``omniglot``) or the checkpoint's absolute path, with
            ``:tta=shift`` appended when test-time augmentation is on.
        fingerprint: tensors SHA-256, method, encoder, their options and the preprocessing (and ``tta`` when on:
            the vectors differ, so a gallery refuses the same weights with another setting).
        dim: embedding size D.
        tta: ``none``, or ``shift``: each embedding is the mean of the image's and of its four one-step shifted
            copies' embeddings (:func:`oneshot.inference.view_embeddings`; five forward passes per image).
    """

    modality = MODALITY

    def __init__(
        self,
        path: str | Path,
        device: str = "cpu",
        batch_size: int | None = None,
        spec: str | None = None,
        preprocessing: dict[str, Any] | None = None,
        tta: str = "none",
    ) -> None:
        from oneshot.checkpoint import load_checkpoint
        from oneshot.inference import TTA_MODES

        if tta not in TTA_MODES:
            raise OneshotError(f"unknown test-time augmentation tta={tta!r}: choose one of {', '.join(TTA_MODES)}")
        self.tta = tta

        self.path = Path(path)
        self.spec: str | None = spec or str(self.path.resolve())
        self.checkpoint = load_checkpoint(self.path, device=device)
        if not self.checkpoint.method.embeds_independently:
            raise OneshotError(
                f"{self.path} is a {self.checkpoint.metadata['method']} checkpoint, which does not embed "
                "inputs independently: a gallery needs an embedding method such as protonet"
            )
        self.device = device
        self.batch_size = batch_size
        # Overrides (e.g. {"invert": False} for white-on-black drawings) change the fingerprint, as they change vectors.
        self.preprocessing = self.checkpoint.preprocessing.with_overrides(**(preprocessing or {}))
        if preprocessing:
            self.spec = None  # a path alone would reload the stored preprocessing
        elif tta != "none" and not self.spec.endswith(f":tta={tta}"):
            self.spec = f"{self.spec}:tta={tta}"
        self.input_envelope = self.checkpoint.input_envelope
        from oneshot.generative import Generator, generator_path

        gpath = generator_path(self.path)
        self.generator = Generator.load(gpath) if gpath.is_file() else None
        self.domain = self.checkpoint.domain
        meta = self.checkpoint.metadata
        probe = np.zeros((1, self.preprocessing.channels, self.preprocessing.size, self.preprocessing.size), np.uint8)
        self.dim = int(self._embed(probe).shape[1])
        # The fingerprint's fields are those of galleries made before modalities existed: keep them as they are.
        self.fingerprint: dict[str, Any] = {
            "kind": "checkpoint",
            "tensors_sha256": meta["tensors_sha256"],
            "method": meta["method"],
            "method_options": meta.get("method_options", {}),
            "encoder": meta.get("encoder"),
            "encoder_options": meta.get("encoder_options", {}),
            "preprocessing": self.preprocessing.to_dict(),
            "dim": self.dim,
        }
        if tta != "none":  # only then: galleries made without TTA keep their fingerprint
            self.fingerprint["tta"] = tta

    def _embed(self, images: np.ndarray) -> np.ndarray:
        """uint8 (B, C, H, W) -> float32 (B, D), through the method's one embedding entry point."""
        import torch

        from oneshot.inference import view_embeddings

        views = view_embeddings(
            self.checkpoint.method,
            torch.from_numpy(images),
            torch.device(self.device),
            self.tta,
            batch_size=self.batch_size,
            channels_last=False,
        )
        z = views[0] if len(views) == 1 else views.mean(0)
        return z.cpu().numpy().astype(np.float32, copy=False)

    def read(self, example: str | Path | bytes | Inline) -> RawInput:
        return read_image_example(example)

    def embed(self, inputs: Sequence[bytes], names: Sequence[str]) -> np.ndarray:
        from oneshot.data.images import decode_image

        images = np.stack([decode_image(b, self.preprocessing, name=n) for b, n in zip(inputs, names, strict=False)])
        self.warn_if_unlike_training(images)
        return self._embed(images)

    def warn_if_unlike_training(self, images: np.ndarray) -> str | None:
        """Warn (:class:`~oneshot.data.images.InputWarning`) when a preprocessed batch (B, C, H, W) looks unlike the
        encoder's training images; returns the message or None."""
        import warnings

        from oneshot.data.images import InputWarning, domain_warning

        msg = domain_warning(images, self.input_envelope, f"{self.path.name} ({self.domain})")
        if msg:
            warnings.warn(msg, InputWarning, stacklevel=3)
        return msg

    def unlike_fraction(self, inputs: Sequence[bytes]) -> float | None:
        """Fraction of raw image inputs whose preprocessed pixels fall outside the training envelope (None: unknown)."""
        from oneshot.data.images import decode_image, out_of_envelope

        if self.input_envelope is None or not inputs:
            return None
        images = np.stack([decode_image(b, self.preprocessing) for b in inputs])
        return float(out_of_envelope(images, self.input_envelope).mean())

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        """Already preprocessed uint8 images (B, C, H, W) -> float32 (B, D) (benchmarks, calibration); images of
        another size or channel count than the encoder's preprocessing are refused (decode them at its size)."""
        want = (self.preprocessing.channels, self.preprocessing.size, self.preprocessing.size)
        if images.ndim != 4 or tuple(images.shape[1:]) != want:
            raise OneshotError(
                f"images of shape {tuple(images.shape)} given to an encoder that reads (B, {want[0]}, {want[1]}, {want[2]}): "
                f"decode them at {want[1]}x{want[2]} (e.g. load_omniglot(..., size={want[1]})) or pass files"
            )
        return self._embed(np.ascontiguousarray(images))
