"""Shared fixtures: real Omniglot data (from $ONESHOT_DATA) loaded once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    d = os.environ.get("ONESHOT_DATA") or str(ROOT.parent / "shared" / "data")
    return Path(d)


def have_omniglot() -> bool:
    return (data_dir() / "omniglot" / "images_background.zip").is_file()


requires_omniglot = pytest.mark.skipif(not have_omniglot(), reason="Omniglot not found: set ONESHOT_DATA")


@pytest.fixture(scope="session")
def omniglot_dir() -> Path:
    if not have_omniglot():
        pytest.skip("Omniglot not found: set ONESHOT_DATA")
    return data_dir()


@pytest.fixture(scope="session")
def vinyals_train(omniglot_dir):
    from oneshot.data import load_omniglot

    return load_omniglot("vinyals", "train", 28, omniglot_dir)


@pytest.fixture(scope="session")
def vinyals_val(omniglot_dir):
    from oneshot.data import load_omniglot

    return load_omniglot("vinyals", "val", 28, omniglot_dir)


@pytest.fixture(scope="session")
def vinyals_test(omniglot_dir):
    from oneshot.data import load_omniglot

    return load_omniglot("vinyals", "test", 28, omniglot_dir)


@pytest.fixture(scope="session")
def small_val(vinyals_val):
    """The first 200 validation classes (4000 images): fast validation inside training tests."""
    from oneshot.data import ImageSet

    keep = vinyals_val.labels < 200
    return ImageSet(vinyals_val.images[keep], vinyals_val.labels[keep], vinyals_val.class_names[:200])
