import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from oneshot.data import Preprocessing, load_image_folder, load_lake_runs, load_omniglot
from oneshot.data.images import decode_image
from oneshot.data.omniglot import load_characters
from oneshot.errors import OneshotError


@pytest.mark.slow
def test_vinyals_split_sizes_and_rotations(vinyals_train, vinyals_val, vinyals_test):
    assert (vinyals_train.num_classes, vinyals_val.num_classes, vinyals_test.num_classes) == (4112, 688, 1692)
    assert len(vinyals_test) == 1692 * 20
    assert vinyals_test.images.shape[1:] == (1, 28, 28) and vinyals_test.images.dtype == torch.uint8
    # Rotations of one character are separate classes holding rotated copies of the same drawings.
    names = vinyals_test.class_names
    base = names[0].rsplit("/", 1)[0]
    rot0 = vinyals_test.images[vinyals_test.class_indices[names.index(f"{base}/rot000")]]
    rot90 = vinyals_test.images[vinyals_test.class_indices[names.index(f"{base}/rot090")]]
    assert torch.equal(torch.rot90(rot0, 1, dims=(2, 3)), rot90)
    # No class of one part appears in another.
    assert not set(vinyals_train.class_names) & set(vinyals_test.class_names)
    assert not set(vinyals_val.class_names) & set(vinyals_test.class_names)


@pytest.mark.slow
def test_lake_split_uses_background_vs_evaluation(omniglot_dir):
    test = load_omniglot("lake", "test", 28, omniglot_dir)
    train = load_omniglot("lake", "train", 28, omniglot_dir)
    val = load_omniglot("lake", "val", 28, omniglot_dir)
    assert test.num_classes == 659
    assert train.num_classes + val.num_classes == 964
    assert not {n.split("/")[0] for n in train.class_names} & {n.split("/")[0] for n in val.class_names}


def test_lake_runs_structure(omniglot_dir):
    runs = load_lake_runs(28, omniglot_dir)
    assert len(runs) == 20
    for r in runs:
        assert r.support.shape == (20, 1, 28, 28) and r.queries.shape == (20, 1, 28, 28)
        assert sorted(r.targets.tolist()) == list(range(20))  # each class queried once


def test_ink_is_bright_after_preprocessing(vinyals_test):
    x = vinyals_test.images[:50].float()
    # Omniglot strokes cover a minority of the page: mostly dark background, some bright ink.
    assert (x < 30).float().mean() > 0.7
    assert x.max() > 200


def test_corrupt_cache_is_rebuilt_not_trusted(omniglot_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ONESHOT_CACHE", str(tmp_path / "cache"))
    prep = Preprocessing(size=12)
    first = load_characters("evaluation", prep, omniglot_dir)
    cache_files = list((tmp_path / "cache" / "tensors").glob("*.safetensors"))
    assert len(cache_files) == 1
    size = cache_files[0].stat().st_size
    with open(cache_files[0], "r+b") as f:  # truncate the cache to half
        f.truncate(size // 2)
    again = load_characters("evaluation", prep, omniglot_dir)
    assert torch.equal(first.images, again.images) and first.keys == again.keys
    assert cache_files[0].stat().st_size == size


def test_missing_data_says_which_files_go_where(tmp_path, monkeypatch):
    monkeypatch.setenv("ONESHOT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ONESHOT_DATA", raising=False)
    # No network in tests: make the download fail the way an offline machine does.
    import urllib.request

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(OneshotError, match=r"images_background.zip.*into .*cache/omniglot"):
        load_omniglot("vinyals", "train", 28, empty)


def _write_fake_zip(folder: Path, name: str, n_chars: int, per_char: int) -> None:
    img = Image.new("L", (105, 105), 255)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    with zipfile.ZipFile(folder / name, "w") as zf:
        for c in range(n_chars):
            for k in range(per_char):
                zf.writestr(f"images_background/Alpha/character{c:02d}/{c:04d}_{k:02d}.png", buf.getvalue())


def test_incomplete_zip_is_rejected_by_structure(tmp_path, monkeypatch):
    monkeypatch.setenv("ONESHOT_CACHE", str(tmp_path / "cache"))
    _write_fake_zip(tmp_path, "images_background.zip", 3, 20)
    with pytest.raises(OneshotError, match="holds 3 characters / 60 drawings, expected 964 / 19280"):
        load_characters("background", Preprocessing(), tmp_path)


def test_truncated_zip_is_a_clear_error(omniglot_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("ONESHOT_CACHE", str(tmp_path / "cache"))
    src = omniglot_dir / "omniglot" / "images_evaluation.zip"
    data = src.read_bytes()
    (tmp_path / "images_evaluation.zip").write_bytes(data[: len(data) // 3])
    with pytest.raises(OneshotError, match="not a readable zip"):
        load_characters("evaluation", Preprocessing(), tmp_path)


def test_decode_rejects_non_images(tmp_path):
    bad = tmp_path / "note.png"
    bad.write_text("not an image")
    with pytest.raises(OneshotError, match="not a readable image"):
        decode_image(bad, Preprocessing())


def test_image_folder_dataset_and_sampler(tmp_path):
    rng = np.random.default_rng(0)
    for c in ["a", "b", "c"]:
        (tmp_path / c).mkdir()
        for k in range(4):
            Image.fromarray(rng.integers(0, 255, (40, 30), dtype=np.uint8)).save(tmp_path / c / f"{k}.png")
    (tmp_path / "a" / ".hidden.png").write_text("ignored")
    data = load_image_folder(tmp_path, Preprocessing(size=28, invert=False))
    assert data.num_classes == 3 and len(data) == 12
    assert data.images.shape == (12, 1, 28, 28)
    from oneshot.data import EpisodeSampler

    ep = next(iter(EpisodeSampler(data.class_indices, 3, 1, 3, 1, seed=0)))
    assert len(ep.support) == 3 and len(ep.query) == 9


def test_image_folder_with_an_empty_class_is_a_clear_error(tmp_path):
    (tmp_path / "a").mkdir()
    Image.new("L", (10, 10)).save(tmp_path / "a" / "x.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(OneshotError, match="class folder .*empty holds no image"):
        load_image_folder(tmp_path, Preprocessing())


def test_rotated_classes_quadruple_the_lake_training_classes(omniglot_dir):
    from oneshot.data.imageset import with_rotated_classes

    train = load_omniglot("lake", "train", 28, omniglot_dir)
    rot = with_rotated_classes(train)
    n = train.num_classes
    assert rot.num_classes == 4 * n and len(rot) == 4 * len(train)
    assert rot.class_names[:n] == train.class_names
    c = 17
    for k in (1, 2, 3):
        assert rot.class_names[c + k * n] == f"{train.class_names[c]}/rot{90 * k:03d}"
        turned = rot.images[rot.class_indices[c + k * n]]
        assert torch.equal(turned, torch.rot90(train.images[train.class_indices[c]], k, dims=(2, 3)))
    with pytest.raises(ValueError, match="square"):
        with_rotated_classes(type(train)(train.images[:, :, :, :20].contiguous(), train.labels, train.class_names))


def test_train_records_rotated_classes_and_the_stroke_augmentation(omniglot_dir, tmp_path):
    from typer.testing import CliRunner

    from oneshot.checkpoint import load_checkpoint
    from oneshot.cli import app
    from oneshot.cli_common import STROKE_AUGMENT

    out = tmp_path / "m.safetensors"
    args = ["train", "--split", "lake", "--rotated-classes", "--augment", "--out", str(out), "--episodes", "2"]
    args += ["--ways", "5", "--eval-every", "2", "--val-ways", "5", "--val-episodes", "2", "--data-dir", str(omniglot_dir)]
    res = CliRunner().invoke(app, [*args, "-e", "hidden=16"])
    assert res.exit_code == 0, res.output
    ck = load_checkpoint(out)
    config = ck.metadata["training"]["config"]
    assert config["rotated_classes"] is True
    assert config["augment"] == STROKE_AUGMENT and config["augment"]["flip"] == 0.0
    assert ck.metadata["encoder_options"] == {"in_channels": 1, "hidden": 16} and ck.metadata["embedding_dim"] == 16
    res = CliRunner().invoke(app, [*args, "-e", "width=3"])  # an option the encoder does not take: one line, exit 2
    assert res.exit_code == 2 and "width" in res.output
