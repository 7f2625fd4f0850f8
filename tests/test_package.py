"""The installed package as a user meets it: one version, encoders found by name from any folder."""

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import oneshot
from oneshot.cli import app
from oneshot.errors import OneshotError
from oneshot.weights import SHIPPED, resolve_checkpoint, shipped_path

ROOT = Path(__file__).resolve().parent.parent
runner = CliRunner()


def test_version_has_one_source():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"oneshot {oneshot.__version__}"
    assert f"## {oneshot.__version__}" in (ROOT / "CHANGELOG.md").read_text()


def test_every_shipped_encoder_is_package_data_and_loads():
    from oneshot.checkpoint import load_checkpoint

    package_dir = Path(oneshot.__file__).parent
    for name, entry in SHIPPED.items():
        path = shipped_path(name)
        assert path.parent == package_dir / "weights" and path.name == entry.file
        assert load_checkpoint(path).preprocessing.size == (56 if name == "omniglot-lake-v4" else 28)
        assert resolve_checkpoint(name) == path
    assert resolve_checkpoint("runs/x.safetensors") == Path("runs/x.safetensors")


def test_encoders_command_lists_the_shipped_ones():
    res = runner.invoke(app, ["encoders", "--json"])
    assert res.exit_code == 0
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert set(SHIPPED) <= set(rows)
    assert rows["omniglot"]["modality"] == "image" and "98.83" in rows["omniglot"]["figures"]


def test_gallery_by_encoder_name_reopens_from_another_folder(tmp_path, monkeypatch):
    from oneshot.gallery import Gallery

    rng = np.random.default_rng(0)
    img = (rng.random((28, 28)) > 0.8).astype(np.uint8) * 255
    from PIL import Image

    Image.fromarray(img).save(tmp_path / "a.png")
    with Gallery.open(tmp_path / "g.gallery", encoder="omniglot") as g:
        g.enrol("a", [tmp_path / "a.png"])
        assert g.info()["encoder_path"] == "omniglot"
    monkeypatch.chdir(tmp_path.parent)
    with Gallery.open(tmp_path / "g.gallery") as g:  # the embedder is reloaded by name, not by a path
        assert g.identify([tmp_path / "a.png"])[0].candidates[0].label == "a"


def test_unknown_encoder_name_is_a_clear_error():
    from oneshot.modalities import load_embedder

    with pytest.raises(OneshotError, match="built-in"):
        load_embedder("no-such-encoder")


def test_every_shipped_encoder_is_a_builtin_name():
    from oneshot.modalities import BUILTIN
    from oneshot.weights import LAKE_DEFAULT

    assert set(SHIPPED) <= set(BUILTIN)
    assert LAKE_DEFAULT in SHIPPED and LAKE_DEFAULT != "omniglot-lake"  # a new default is a new name
    assert SHIPPED[LAKE_DEFAULT].file != SHIPPED["omniglot-lake"].file


@pytest.mark.skipif(
    not (ROOT / "src" / "oneshot" / "weights" / "protonet_conv4_lake_v3.safetensors").is_file(),
    reason="the shipped omniglot-lake-v3 encoder is missing",
)
def test_galleries_of_the_first_lake_encoder_still_open_and_move_to_the_new_default(tmp_path):
    from PIL import Image

    from oneshot.gallery import Gallery
    from oneshot.weights import LAKE_DEFAULT

    rng = np.random.default_rng(1)
    for name in ("a", "b"):
        Image.fromarray((rng.random((28, 28)) > 0.15).astype(np.uint8) * 255).save(tmp_path / f"{name}.png")  # dark ink
    path = tmp_path / "old.gallery"
    with Gallery.open(path, encoder="omniglot-lake") as g:
        g.enrol("a", [tmp_path / "a.png"])
        g.enrol("b", [tmp_path / "b.png"])
        assert g.info()["encoder"] == "027b41b3b5d25d04"  # the id galleries made before v2 recorded
    with pytest.raises(OneshotError, match="reembed"):  # the new weights are another encoder: refused, not mixed
        Gallery.open(path, encoder=LAKE_DEFAULT)
    with Gallery.open(path) as g:  # reopened by its recorded name, with the weights it was made with
        assert g.identify([tmp_path / "a.png"])[0].candidates[0].label == "a"
        assert g.reembed(LAKE_DEFAULT) == 2
        info = g.info()
        assert info["encoder_path"] == LAKE_DEFAULT and info["encoder"] != "027b41b3b5d25d04"
    with Gallery.open(path) as g:
        assert g.identify([tmp_path / "b.png"])[0].candidates[0].label == "b"


def test_shift_tta_encoders_are_their_own_encoder_and_reopen_by_name(tmp_path):
    """``NAME:tta=shift`` (and ``FILE:tta=shift``) averages the five shifted views, records its own fingerprint
    and spec, and a gallery made with it reopens with it and refuses the plain weights."""
    import torch
    from PIL import Image

    from oneshot.gallery import Gallery
    from oneshot.inference import view_embeddings
    from oneshot.modalities import load_embedder
    from oneshot.weights import shipped_path

    plain, tta = load_embedder("omniglot-lake"), load_embedder("omniglot-lake:tta=shift")
    by_file = load_embedder(f"{shipped_path('omniglot-lake')}:tta=shift")
    rng = np.random.default_rng(3)
    images = (rng.random((6, 1, 28, 28)) > 0.9).astype(np.uint8) * 255
    want = view_embeddings(plain.checkpoint.method, torch.from_numpy(images), torch.device("cpu"), "shift").mean(0)
    assert np.allclose(tta.embed_images(images), want.numpy(), atol=1e-5)
    assert np.array_equal(tta.embed_images(images), by_file.embed_images(images))
    assert not np.allclose(tta.embed_images(images), plain.embed_images(images), atol=1e-3)
    assert tta.spec == "omniglot-lake:tta=shift" and by_file.spec.endswith(".safetensors:tta=shift")
    assert tta.fingerprint == {**plain.fingerprint, "tta": "shift"} and "tta" not in plain.fingerprint
    Image.fromarray(255 - images[0, 0]).save(tmp_path / "a.png")
    with Gallery.open(tmp_path / "g.gallery", encoder="omniglot-lake:tta=shift") as g:
        g.enrol("a", [tmp_path / "a.png"], check=False)
    with Gallery.open(tmp_path / "g.gallery") as g:  # reopened with TTA from its recorded spec
        assert g.info()["encoder_path"] == "omniglot-lake:tta=shift"
        assert g.identify([tmp_path / "a.png"])[0].candidates[0].score == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(OneshotError, match="reembed"):
        Gallery.open(tmp_path / "g.gallery", encoder="omniglot-lake")
    with pytest.raises(OneshotError, match="tta='blur'"):
        load_embedder("omniglot-lake:tta=blur")
    with pytest.raises(OneshotError, match="omniglot-lake:zoom=2"):
        load_embedder("omniglot-lake:zoom=2")


def test_earlier_default_encoders_keep_their_weights_behind_their_names():
    """A new default is a new name: galleries made with an earlier default reopen with the weights they were made with."""
    from oneshot.modalities import load_embedder
    from oneshot.weights import LAKE_DEFAULT

    # tensors_sha256[:16] their galleries and results recorded
    recorded = {"omniglot-lake-v2": "ac21c59f7f0d34c1", "omniglot-lake-v3": "9228a72c67eec8a5"}
    for name, digest in recorded.items():
        assert load_embedder(name).fingerprint["tensors_sha256"][:16] == digest
        assert name != LAKE_DEFAULT


def test_the_default_lake_encoder_reads_56_pixel_drawings_and_refuses_other_sizes():
    """``omniglot-lake-v4`` reads 56x56 drawings; already-decoded images of another size are a clear error, not a
    crash inside the network (files are resized by its own preprocessing)."""
    from oneshot.modalities import load_embedder
    from oneshot.weights import LAKE_DEFAULT

    enc = load_embedder(LAKE_DEFAULT)
    assert enc.preprocessing.size == 56
    with pytest.raises(OneshotError, match="decode them at 56x56"):
        enc.embed_images(np.zeros((2, 1, 28, 28), np.uint8))
    z = enc.embed_images(np.zeros((2, 1, 56, 56), np.uint8))
    assert z.shape == (2, enc.dim) and np.isfinite(z).all()
