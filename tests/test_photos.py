"""Photograph datasets (AT&T faces, NEU defects), ResNet-12, SimCLR, the generator, and users' own folders."""

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import data_dir
from typer.testing import CliRunner

from oneshot.data.archives import FACES_PREPROCESSING, faces_split, load_att_faces, load_neu, neu_split
from oneshot.errors import OneshotError

ROOT = Path(__file__).resolve().parent.parent
P32 = FACES_PREPROCESSING.with_overrides(size=32)
N32 = FACES_PREPROCESSING.with_overrides(size=32, resize="stretch")

needs_faces = pytest.mark.skipif(not (data_dir() / "faces/att_faces.tar.gz").is_file(), reason="AT&T faces not found")
needs_neu = pytest.mark.skipif(not (data_dir() / "defects/NEU-DET.tar.gz").is_file(), reason="NEU-DET not found")


@needs_faces
def test_att_faces_from_the_real_archive():
    d = load_att_faces(P32, data_dir())
    assert d.images.shape == (400, 1, 32, 32) and d.images.dtype == torch.uint8
    assert d.class_names[:3] == ["s1", "s2", "s3"] and d.class_names[-1] == "s40"
    assert all(len(ix) == 10 for ix in d.class_indices)
    parts = {p: faces_split(p, P32, data_dir()) for p in ("train", "val", "test")}
    assert [parts[p].num_classes for p in ("train", "val", "test")] == [16, 4, 20]
    assert parts["test"].class_names[0] == "s21"
    assert not set(parts["train"].class_names) & set(parts["test"].class_names)


@needs_neu
def test_neu_from_the_real_archive_and_label_blind_pool():
    d = load_neu(N32, data_dir())
    assert d.images.shape == (1800, 1, 32, 32)
    assert d.class_names == ["crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches"]
    assert all(len(ix) == 300 for ix in d.class_indices)
    pool, val, test = (neu_split(p, N32, data_dir()) for p in ("pool", "val", "test"))
    assert (len(pool), len(val), len(test)) == (1200, 200, 400)
    assert pool.num_classes == 1200 and torch.equal(pool.labels, torch.arange(1200))  # no defect label in the pool
    ids = [set(map(int, (n[3:] for n in pool.class_names)))]
    assert len(ids[0]) == 1200
    assert test.num_classes == 6 and min(len(ix) for ix in test.class_indices) >= 20


def _rebuilt_archive(src: Path, dst: Path, spoil: str | None) -> None:
    """A copy of a dataset archive with one member's bytes replaced by garbage."""
    with tarfile.open(src, "r:gz") as tin, tarfile.open(dst, "w:gz") as tout:
        for m in tin:
            f = tin.extractfile(m) if m.isfile() else None
            data = f.read() if f else None
            if spoil and m.name.endswith(spoil):
                data = b"P5\n92 112\n255\n" + b"\x00" * 10  # a truncated PGM
                m.size = len(data)
            tout.addfile(m, io.BytesIO(data) if data is not None else None)


@needs_faces
def test_corrupt_member_and_truncated_archive_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("ONESHOT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ONESHOT_DATA", raising=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    _rebuilt_archive(data_dir() / "faces/att_faces.tar.gz", bad / "att_faces.tar.gz", "s7/3.pgm")
    with pytest.raises(OneshotError, match=r"att_faces/s7/3.pgm is not a readable image"):
        load_att_faces(P32, bad)
    cut = tmp_path / "cut"
    cut.mkdir()
    raw = (data_dir() / "faces/att_faces.tar.gz").read_bytes()
    (cut / "att_faces.tar.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(OneshotError, match="not a readable tar.gz"):
        load_att_faces(P32, cut)


def test_resnet12_shapes_and_determinism():
    from oneshot.encoders import build_encoder, embedding_dim

    torch.manual_seed(0)
    full = build_encoder("resnet12", in_channels=3)
    assert embedding_dim(full, (3, 84, 84)) == 640
    torch.manual_seed(0)
    small = build_encoder("resnet12_small", in_channels=1, mean=0.5, std=0.25)
    torch.manual_seed(0)
    again = build_encoder("resnet12_small", in_channels=1, mean=0.5, std=0.25)
    x = torch.rand(3, 1, 48, 40)
    small.eval(), again.eval()
    assert small(x).shape == (3, 256)
    assert torch.equal(small(x), again(x))
    with pytest.raises(OneshotError):
        build_encoder("resnet12", widths=(1, 2))


@pytest.fixture
def one_thread():
    """Short training runs use one thread: two OpenMP threads on a loaded 2-core machine spin and slow down 5x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _short_run(tmp_path, dataset, method, episodes, ways, queries, **cfg):
    from oneshot.experiment import train_model
    from oneshot.training import TrainConfig

    config = TrainConfig(
        episodes=episodes,
        ways=ways,
        shots=1,
        queries=queries,
        eval_every=episodes,
        val_ways=4,
        val_shots=1,
        val_queries=5,
        val_episodes=50,
        precision="fp32",
        channels_last=False,
        **cfg,
    )
    out = tmp_path / f"{dataset}.safetensors"
    train_model(
        method,
        config,
        out,
        dataset=dataset,
        size=32,
        encoder="resnet12_small",
        encoder_options={"in_channels": 1, "widths": [8, 16, 32, 64], "mean": 0.4, "std": 0.2},
        data_dir=data_dir(),
    )
    return out


@pytest.mark.slow
@needs_faces
def test_short_faces_run_beats_its_untrained_model(tmp_path, one_thread):
    from oneshot.checkpoint import load_checkpoint
    from oneshot.encoders import build_encoder
    from oneshot.evaluation import evaluate
    from oneshot.methods import ProtoNet

    out = _short_run(tmp_path, "att_faces", "protonet", 60, 16, 4, augment={"flip": 0.5, "scale": [0.8, 1.0], "rotate": 10.0})
    ck = load_checkpoint(out)
    test = faces_split("test", ck.preprocessing, data_dir())
    trained = evaluate(ck.method, test, 20, 1, 5, 200, 0).accuracy
    torch.manual_seed(0)
    untrained = evaluate(
        ProtoNet(build_encoder("resnet12_small", **ck.metadata["encoder_options"])).eval(), test, 20, 1, 5, 200, 0
    ).accuracy
    assert trained > untrained + 0.05
    # The checkpoint states its preprocessing and the range of its training inputs.
    assert ck.metadata["preprocessing"] == {"size": 32, "channels": 1, "invert": False, "resize": "crop"}
    assert ck.input_envelope["images"] == 160 and ck.domain == "att_faces"


@pytest.mark.slow
@needs_faces
def test_warm_start_continues_from_a_checkpoint_and_records_it(tmp_path, one_thread):
    """``train_model(init=...)`` starts from a checkpoint's weights (validation at step 0 equals the
    checkpoint's), records where it came from, and refuses a checkpoint of other encoder options."""
    from oneshot.checkpoint import load_checkpoint, read_metadata
    from oneshot.experiment import train_model
    from oneshot.training import TrainConfig

    first = _short_run(tmp_path, "att_faces", "protonet", 4, 8, 2)
    cfg = TrainConfig(
        episodes=0, ways=8, queries=2, val_ways=4, val_queries=5, val_episodes=50, precision="fp32", channels_last=False
    )
    opts = {"in_channels": 1, "widths": [8, 16, 32, 64], "mean": 0.4, "std": 0.2}
    out = tmp_path / "warm.safetensors"
    kw = dict(dataset="att_faces", size=32, encoder="resnet12_small", data_dir=data_dir())
    train_model("protonet", cfg, out, encoder_options=opts, init=first, **kw)
    meta = read_metadata(out)["training"]
    assert meta["init_from"]["checkpoint"] == str(first) and meta["init_from"]["episodes"] == 4
    a, b = load_checkpoint(first).method.state_dict(), load_checkpoint(out).method.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(OneshotError, match="encoder options"):
        train_model("protonet", cfg, tmp_path / "x.safetensors", encoder_options={**opts, "mean": 0.5}, init=first, **kw)


@pytest.mark.slow
@needs_neu
def test_short_simclr_run_on_the_unlabelled_pool_beats_random_weights(tmp_path, one_thread):
    from oneshot.checkpoint import load_checkpoint
    from oneshot.encoders import build_encoder
    from oneshot.evaluation import evaluate
    from oneshot.methods import build_method

    out = _short_run(tmp_path, "neu", "simclr", 40, 32, 0)
    ck = load_checkpoint(out)
    assert ck.metadata["data"]["train_part"] == "pool"
    test = neu_split("test", ck.preprocessing, data_dir())
    trained = evaluate(ck.method, test, 6, 5, 10, 200, 0).accuracy
    torch.manual_seed(0)
    rand = build_method(
        "simclr", build_encoder("resnet12_small", **ck.metadata["encoder_options"]), **ck.metadata["method_options"]
    ).eval()
    assert trained > evaluate(rand, test, 6, 5, 10, 200, 0).accuracy + 0.03


@needs_neu
def test_logistic_rule_on_a_real_neu_episode_agrees_with_sklearn(one_thread):
    """The support-fitted logistic regression rule (SimCLR ``test_time="logistic"``) gives scikit-learn's
    ``LogisticRegression(C)`` probabilities on a real 6-way 5-shot NEU validation episode; the option changes
    no weights, and checkpoints scored by the prototype rule keep their stored options."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    import torch.nn.functional as F

    from oneshot.checkpoint import load_checkpoint
    from oneshot.data.samplers import EpisodeSampler
    from oneshot.evaluation import embed_all

    path = Path(__file__).resolve().parent.parent / "models/simclr_resnet12s_neu.safetensors"
    proto = load_checkpoint(path)
    lr = load_checkpoint(path, method_options={"test_time": "logistic", "logistic_c": 10.0})
    assert "test_time" not in proto.method.options() and lr.method.options()["test_time"] == "logistic"
    val = neu_split("val", proto.preprocessing, data_dir())
    z = embed_all(lr.method, val.images, torch.device("cpu"))
    assert torch.equal(z, embed_all(proto.method, val.images, torch.device("cpu")))
    ep = next(iter(EpisodeSampler(val.class_indices, 6, 5, 10, 1, 0)))
    ys = torch.arange(6).repeat_interleave(5)
    got = lr.method.classify_embeddings(z[ep.support], ys, z[ep.query], 6).exp()
    zs, zq = (F.normalize(z[i].double(), dim=1).numpy() for i in (ep.support, ep.query))
    want = sklearn.LogisticRegression(C=10.0, tol=1e-10, max_iter=10000).fit(zs, ys.numpy()).predict_proba(zq)
    assert np.abs(got.numpy() - want).max() < 1e-4
    assert (got.argmax(1).numpy() == want.argmax(1)).all()
    with pytest.raises(OneshotError, match="test_time"):
        load_checkpoint(path, method_options={"test_time": "svm"})


def test_generator_samples_stay_near_their_source_class(vinyals_val):
    from oneshot.evaluation import embed_all
    from oneshot.generative import Generator
    from oneshot.modalities.image import ImageEmbedder

    enc = ImageEmbedder(ROOT / "src/oneshot/weights/protonet_conv4_vinyals.safetensors")
    data = vinyals_val
    idx = np.concatenate(data.class_indices[:60])
    z = torch.nn.functional.normalize(
        embed_all(enc.checkpoint.method, data.images[torch.from_numpy(idx)], torch.device("cpu")), dim=1
    ).numpy()
    y = data.labels.numpy()[idx]
    gen = Generator.fit(z, y)
    gen.k, gen.alpha = 0, 1.0
    first = np.array([np.flatnonzero(y == c)[0] for c in np.unique(y)])
    s = gen.sample(z[first], 6, seed=0)
    assert s.shape == (len(first), 6, z.shape[1])
    assert np.allclose(np.linalg.norm(s, axis=-1), 1, atol=1e-4)
    means = gen.means  # base class means in class order
    nearest = (s.reshape(-1, z.shape[1]) @ means.T).argmax(1)
    assert (nearest == np.repeat(np.arange(len(first)), 6)).mean() > 0.9


def test_gallery_augment_adds_synthetic_examples_or_says_why_not(tmp_path):
    from oneshot.gallery import Gallery
    from oneshot.generative import Generator
    from oneshot.modalities.image import ImageEmbedder

    enc = ImageEmbedder(ROOT / "src/oneshot/weights/protonet_conv4_vinyals.safetensors")
    rng = np.random.default_rng(0)
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.where(rng.random((28, 28)) > 0.9, 0, 255).astype(np.uint8)).save(buf, "PNG")
    assert enc.generator is not None and not enc.generator.helps  # shipped beside the checkpoint; off by default
    enc.generator = None
    with Gallery.open(tmp_path / "g.gallery", encoder=enc) as g:
        with pytest.raises(OneshotError, match="no generator"):
            g.enrol("a", [buf.getvalue()], augment=3)
        assert len(g) == 0
        enc.generator = Generator.fit(rng.standard_normal((40, enc.dim)), np.repeat(np.arange(10), 4), rank=4)
        rep = g.enrol("a", [buf.getvalue()], augment=3)
        assert rep.n_examples == 4
        assert g.enrol("b", [buf.getvalue()]).n_examples == 1  # default: off unless validation said it helps


def test_evaluate_and_info_on_a_users_own_folder(tmp_path):
    from oneshot.cli import app

    rng = np.random.default_rng(0)
    from PIL import Image

    for c in range(5):  # five "classes" of photographs, files without suffixes (read by content)
        (tmp_path / f"c{c}").mkdir()
        base = rng.integers(0, 255, (40, 30))
        for k in range(6):
            Image.fromarray(np.clip(base + rng.integers(-20, 20, (40, 30)), 0, 255).astype(np.uint8)).save(
                tmp_path / f"c{c}" / f"img{k}", "PNG"
            )
    ck = str(ROOT / "src/oneshot/weights/protonet_conv4_vinyals.safetensors")
    r = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--checkpoint",
            ck,
            "--folder",
            str(tmp_path),
            "--ways",
            "5",
            "--queries",
            "5",
            "--episodes",
            "20",
            "--verification",
            "--pairs",
            "200",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert 0 <= out["accuracy"] <= 1 and out["ci95"] >= 0 and out["episodes"] == 20 and "verification" in out
    assert "warning:" in r.stderr and "look unlike" in r.stderr  # photographs fed to a handwriting model
    r = CliRunner().invoke(
        app, ["evaluate", "--checkpoint", ck, "--folder", str(tmp_path), "--ways", "5", "--queries", "9", "--episodes", "20"]
    )
    assert r.exit_code == 2 and "has 6 in some class" in r.stderr and "at most 6 together" in r.stderr
    r = CliRunner().invoke(app, ["info", ck])
    assert r.exit_code == 0 and "28x28 grey, resize stretch, inverted" in r.stdout


@pytest.mark.slow
@needs_faces
def test_dlib_face_pretrained_embedder_tells_people_apart():
    pytest.importorskip("dlib")
    from oneshot.modalities import load_embedder
    from oneshot.protocols.faces import raw_faces

    emb = load_embedder("dlib-face")
    assert emb.dim == 128 and emb.modality == "image"
    faces = raw_faces(data_dir())
    people = ["s21", "s22", "s23", "s24"]
    z = emb.embed([b for p in people for _, b in faces[p][:3]], [f"{p}-{k}" for p in people for k in range(3)])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    s = z @ z.T
    same = np.kron(np.eye(4), np.ones((3, 3))).astype(bool)
    off = ~np.eye(12, dtype=bool)
    assert s[same & off].min() > s[~same].max()  # every same-person pair beats every different-person pair
    with pytest.raises(OneshotError, match="refused|megapixel|not a readable"):
        emb.embed([b"not an image"], ["x"])


def test_calibration_is_per_domain(tmp_path):
    from oneshot.gallery import Gallery
    from oneshot.modalities.image import ImageEmbedder

    faces = ROOT / "models/protonet_resnet12s_att.safetensors"
    enc = ImageEmbedder(faces)
    assert enc.domain == "att_faces"
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((40, enc.dim)), np.repeat(np.arange(8), 5)
    with Gallery.open(tmp_path / "f.gallery", encoder=enc) as g:
        with pytest.raises(OneshotError, match="calibration data is omniglot but the gallery's encoder was trained on att_faces"):
            g.calibrate(x, y, domain="omniglot")
        assert g.info()["calibration"] is None
        rec = g.calibrate(x, y, domain="att_faces", unlike_fraction=0.9)
        assert rec["domain"]["mismatch"] and "look unlike" in rec["notes"][-1]
        assert "looks unlike the encoder's att_faces training images" in g.info()["warning"]
