"""Issue 11: impossible episode shapes are refused at the edge, before any data is loaded, and the sizes the
edge knows (oneshot.shapes.PARTS) are those of the real data."""

from __future__ import annotations

import time
import zipfile

import numpy as np
import pytest
from conftest import data_dir, have_omniglot
from gallery_util import make_checkpoint, write_pngs
from typer.testing import CliRunner

from oneshot import experiment, shapes
from oneshot.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def no_data_loading(monkeypatch):
    """Any data loading is a failure here: the refusal must come first."""

    def refuse(*a, **k):
        raise AssertionError("data was loaded before the episode shape was checked")

    monkeypatch.setattr(experiment, "load_split", refuse)


def _refused(*args, match: str):
    t0 = time.perf_counter()
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and match in lines[0], res.output
    assert time.perf_counter() - t0 < 10


@pytest.mark.parametrize(
    "args,match",
    [
        (["--ways", 5000], "omniglot vinyals train has 4112 classes, too few for 5000-way"),
        (["--shots", 10, "--queries", 11], "need 21 examples per class but omniglot vinyals train has 20"),
        (
            ["--split", "lake", "--val-ways", 300],
            "omniglot lake val has 203 classes, too few for 300-way episodes: lower --val-ways",
        ),
        (["--val-shots", 6], "need 21 examples per class but omniglot vinyals val has 20"),
        (["--dataset", "att_faces", "--ways", 20], "att_faces train has 16 classes"),
        (["--dataset", "att_faces", "--ways", 5, "--val-ways", 4, "--queries", 10], "need 11 examples per class"),
    ],
)
def test_train_refuses_impossible_shapes_before_loading(tmp_path, args, match):
    _refused("train", "--out", tmp_path / "m.safetensors", "--data-dir", tmp_path, *args, match=match)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ck") / "c.safetensors", 0)


@pytest.mark.parametrize(
    "args,match",
    [
        (["--ways", 1700], "omniglot vinyals test has 1692 classes, too few for 1700-way"),
        (["--ways", 5, "--ways", 700, "--split", "val"], "omniglot vinyals val has 688 classes"),
        (["--shots", 5, "--queries", 16], "need 21 examples per class"),
        (["--protocol", "lake", "--ways", 660], "omniglot lake test has 659 classes"),
    ],
)
def test_evaluate_refuses_impossible_shapes_before_loading(tmp_path, checkpoint, args, match):
    _refused("evaluate", "--checkpoint", checkpoint, "--data-dir", tmp_path, *args, match=match)


def test_evaluate_on_a_folder_counts_it_by_listing(tmp_path, checkpoint, monkeypatch):
    from oneshot.data import folder

    monkeypatch.setattr(folder, "load_image_folder", lambda *a, **k: pytest.fail("folder decoded before the check"))
    imgs = (np.random.default_rng(0).random((9, 1, 28, 28)) * 255).astype(np.uint8)
    for i in range(3):
        write_pngs(tmp_path / "mine" / f"c{i}", imgs[3 * i : 3 * i + 3])
    common = ("evaluate", "--checkpoint", checkpoint, "--folder", tmp_path / "mine")
    _refused(*common, "--ways", 5, match="folder " + str(tmp_path / "mine") + " has 3 classes, too few for 5-way")
    _refused(*common, "--ways", 3, "--queries", 3, match="need 4 examples per class")


def test_demo_refuses_a_checkpoint_whose_data_cannot_supply_its_episodes(tmp_path, monkeypatch):
    from oneshot import checkpoint as ck_module

    ck = make_checkpoint(tmp_path / "faces.safetensors", 0)
    real = ck_module.load_checkpoint

    def as_faces(*a, **k):
        c = real(*a, **k)
        c.metadata["data"] = {"dataset": "att_faces", "split": "vinyals"}
        return c

    monkeypatch.setattr(ck_module, "load_checkpoint", as_faces)
    _refused("demo", "--checkpoint", ck, "--out", tmp_path / "d", "--data-dir", tmp_path, match="need 16 examples per class")
    assert not (tmp_path / "d").exists()


def test_known_sizes_match_the_data_lists():
    from oneshot.data.omniglot import EXPECTED, LAKE_VAL_ALPHABETS, VINYALS_COUNTS

    for part, n in VINYALS_COUNTS.items():
        assert shapes.part_size("omniglot", "vinyals", part) == (n, 20)
    assert shapes.part_size("omniglot", "lake", "test") == (EXPECTED["evaluation"][0], 20)
    assert shapes.part_size("omniglot", "lake", "trainval") == (EXPECTED["background"][0], 20)
    if not have_omniglot():
        pytest.skip("Omniglot not found: set ONESHOT_DATA")
    with zipfile.ZipFile(data_dir() / "omniglot" / "images_background.zip") as z:
        chars = {"/".join(m.split("/")[-3:-1]) for m in z.namelist() if m.endswith(".png")}
    val = sum(c.split("/")[0] in LAKE_VAL_ALPHABETS for c in chars)
    assert shapes.part_size("omniglot", "lake", "val") == (val, 20)
    assert shapes.part_size("omniglot", "lake", "train") == (len(chars) - val, 20)


@pytest.mark.parametrize("dataset,loader", [("att_faces", "faces_split"), ("neu", "neu_split")])
def test_known_sizes_match_the_photo_datasets(dataset, loader):
    from oneshot.data import archives

    parts = [p for d, p in shapes.PARTS if d == dataset]
    try:
        loaded = {p: getattr(archives, loader)(p, data_dir=data_dir()) for p in parts}
    except Exception as exc:  # noqa: BLE001 - the archives are optional
        pytest.skip(f"{dataset} not available: {exc}")
    for p, data in loaded.items():
        counts = [len(ix) for ix in data.class_indices]
        assert shapes.PARTS[(dataset, p)] == (len(counts), min(counts)), p
