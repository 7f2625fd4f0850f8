"""Inference options of the evaluation path (issue 16): shift TTA, ensembles, transductive soft k-means."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from gallery_util import make_checkpoint, write_pngs
from test_evaluation import synthetic_set
from typer.testing import CliRunner

from oneshot.cli import app
from oneshot.data.omniglot import LakeRun
from oneshot.errors import OneshotError, OneshotWarning
from oneshot.evaluation import evaluate, evaluate_lake_runs
from oneshot.experiment import evaluate_checkpoint
from oneshot.inference import (
    InferenceOptions,
    ensemble_embeddings,
    episode_rule,
    lake_check,
    shift_views,
    shifted,
    soft_kmeans,
    split_overlap_check,
    view_embeddings,
)
from oneshot.methods.base import nearest_prototype

CPU = torch.device("cpu")


def untrained(tmp_path, seed=0):
    from oneshot.checkpoint import load_checkpoint

    return load_checkpoint(make_checkpoint(tmp_path / f"m{seed}.safetensors", seed)).method.eval()


def test_shifted_moves_content_one_pixel_and_repeats_the_edge():
    x = torch.arange(2 * 5 * 5, dtype=torch.uint8).reshape(2, 1, 5, 5)
    right = shifted(x, 1, 0)
    assert right.shape == x.shape and right.dtype == torch.uint8
    assert torch.equal(right[..., 1:], x[..., :-1]) and torch.equal(right[..., 0], x[..., 0])
    up = shifted(x, 0, -1)
    assert torch.equal(up[..., :-1, :], x[..., 1:, :]) and torch.equal(up[..., -1, :], x[..., -1, :])
    assert shifted(x, 0, 0) is x
    assert shift_views(28) == [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)] and shift_views(105)[1] == (4, 0)


def test_tta_and_ensemble_shapes_determinism_and_norms(tmp_path):
    a, b = untrained(tmp_path, 0), untrained(tmp_path, 1)
    images = synthetic_set(4, 3).images
    views = view_embeddings(a, images, CPU, "shift")
    assert views.shape == (5, 12, 64)
    one = ensemble_embeddings([a], images, CPU, "shift")
    assert one.shape == (12, 64) and torch.equal(one, views.mean(0))
    assert torch.equal(one, ensemble_embeddings([a], images, CPU, "shift"))  # deterministic
    plain = ensemble_embeddings([a], images, CPU, "none")
    assert torch.equal(plain, views[0]) and not torch.allclose(plain, one)
    both = ensemble_embeddings([a, b], images, CPU, "shift")
    assert both.shape == (12, 128) and torch.allclose(both.norm(dim=1), torch.ones(12), atol=1e-5)


def soft_kmeans_loops(s, sl, q, ways, steps, temperature):
    """Brute-force reference: one class and one query at a time, float64."""
    s, q = s.double(), q.double()
    c = [s[sl == k].mean(0) for k in range(ways)]
    for _ in range(steps):
        w = []
        for j in range(len(q)):
            e = [float(torch.exp(-((q[j] - c[k]) ** 2).sum() / temperature)) for k in range(ways)]
            w.append([v / sum(e) for v in e])
        new = []
        for k in range(ways):
            num, den = s[sl == k].sum(0), float((sl == k).sum())
            for j in range(len(q)):
                num, den = num + w[j][k] * q[j], den + w[j][k]
            new.append(num / den)
        c = new
    return torch.tensor([[-float(((q[j] - c[k]) ** 2).sum()) for k in range(ways)] for j in range(len(q))], dtype=torch.float64)


@pytest.mark.parametrize("steps,temperature", [(1, 1.0), (3, 4.0), (5, 0.5)])
def test_soft_kmeans_matches_a_loop_reference(steps, temperature):
    g = torch.Generator().manual_seed(steps)
    s, q = torch.randn(6, 5, generator=g), torch.randn(7, 5, generator=g)
    sl = torch.tensor([0, 1, 2, 0, 1, 2])
    got = soft_kmeans(s.double(), sl, q.double(), 3, steps, temperature)
    assert torch.allclose(got, soft_kmeans_loops(s, sl, q, 3, steps, temperature), atol=1e-9)
    assert torch.equal(soft_kmeans(s, sl, q, 3, 0), nearest_prototype(s, sl, q, 3))


def test_options_off_give_exactly_the_plain_path(tmp_path):
    m = untrained(tmp_path)
    data = synthetic_set(12, 6)
    off = InferenceOptions()
    z = ensemble_embeddings([m], data.images, CPU, off.tta)
    plain = evaluate(m, data, 4, 1, 3, 40, 0, "cpu")
    assert evaluate(m, data, 4, 1, 3, 40, 0, "cpu", embeddings=z, rule=episode_rule(m, 1, off)).per_episode == plain.per_episode
    run = LakeRun("r", data.images[:4], data.images[6:10], torch.tensor([0, 0, 1, 1]))
    base = evaluate_lake_runs(m, [run])
    assert evaluate_lake_runs(m, [run], CPU, lambda x: ensemble_embeddings([m], x, CPU), episode_rule(m, 1, off)) == base
    tr = InferenceOptions(transductive=True, steps=2, temperature=8.0)
    r = evaluate(m, data, 4, 1, 3, 40, 0, "cpu", embeddings=z, rule=episode_rule(m, 1, tr))
    assert r.episodes == 40 and 0 <= r.accuracy <= 1
    assert tr.summary() == {"tta": "none", "rule": "soft_kmeans", "transductive": True, "steps": 2, "temperature": 8.0}


def test_evaluate_checkpoint_records_options_and_refuses_misuse(tmp_path):
    a, b = make_checkpoint(tmp_path / "a.safetensors", 0), make_checkpoint(tmp_path / "b.safetensors", 1)
    data = synthetic_set(6, 5)
    for c in range(6):
        write_pngs(tmp_path / "f" / f"c{c}", data.images[data.labels == c].numpy())
    args = dict(shapes=[(3, 1)], episodes=10, queries=2, folder=tmp_path / "f")
    plain = evaluate_checkpoint(a, **args).to_dict()
    assert "inference" not in plain and "ensemble" not in plain
    off = evaluate_checkpoint(a, inference=InferenceOptions(), **args).to_dict()
    assert off["results"] == plain["results"]
    both = evaluate_checkpoint(a, ensemble=[b], inference=InferenceOptions("shift"), **args).to_dict()
    assert both["inference"]["tta"] == "shift" and both["ensemble"] == [str(a), str(b)]
    with pytest.raises(OneshotError, match="verification"):
        evaluate_checkpoint(a, inference=InferenceOptions("shift"), verification=True, **args)
    with pytest.raises(OneshotError, match="tta"):
        InferenceOptions("flip")
    with pytest.raises(OneshotError, match="split lake"):
        lake_check([{"data": {"split": "vinyals"}}], plain=False)
    lake_check([{"data": {"split": "lake"}}], plain=False)
    res = CliRunner().invoke(
        app,
        ["evaluate", "--checkpoint", str(a), "--checkpoint", str(b), "--tta", "shift", "--transductive"]
        + ["--folder", str(tmp_path / "f"), "--ways", "3", "--episodes", "10", "--queries", "2", "--json"],
    )
    assert res.exit_code == 0, res.output
    obj = json.loads(res.stdout)
    assert obj["inference"]["rule"] == "soft_kmeans" and len(obj["ensemble"]) == 2 and np.isfinite(obj["accuracy"])


def test_scoring_a_split_part_with_training_characters_of_another_split_warns(omniglot_dir, recwarn):
    """Lake's background alphabets are Vinyals train and val alphabets; the Vinyals test alphabets are evaluation
    ones. So a Lake-split encoder on Vinyals test is clean, on Vinyals val it is not, and a Vinyals-split encoder on
    the Lake split's test part has seen some of its characters."""
    from oneshot.data.omniglot import character_keys

    lake = [{"data": {"dataset": "omniglot", "split": "lake", "train_part": "train"}}]
    vinyals = [{"data": {"dataset": "omniglot", "split": "vinyals", "train_part": "train"}}]
    assert not character_keys("lake", "train", omniglot_dir) & character_keys("vinyals", "test", omniglot_dir)
    split_overlap_check(lake, "vinyals", "test", omniglot_dir)  # clean: silent
    split_overlap_check(lake, "lake", "val", omniglot_dir)  # its own split: the split's parts are disjoint
    split_overlap_check([{"data": {"dataset": "att_faces"}}], "vinyals", "val", omniglot_dir)
    assert not [w for w in recwarn if issubclass(w.category, OneshotWarning)]
    with pytest.warns(OneshotWarning, match=r"131 of the 172 characters of the vinyals split's val part"):
        split_overlap_check(lake, "vinyals", "val", omniglot_dir)
    with pytest.warns(OneshotWarning, match=r"236 of the 659 characters of the lake split's test part"):
        split_overlap_check(lake + vinyals, "lake", "test", omniglot_dir)


def test_ensemble_members_read_their_own_input_sizes(tmp_path):
    """A 28x28 and a 32x32 member: each embeds the folder decoded at its own size, so the ensemble scores the
    same in either order (the sum of the members' distances), and members of other preprocessing are refused."""
    from dataclasses import replace

    from oneshot.checkpoint import load_checkpoint, save_checkpoint

    a = make_checkpoint(tmp_path / "a.safetensors", 0)
    ck = load_checkpoint(make_checkpoint(tmp_path / "b0.safetensors", 1))
    meta = {k: ck.metadata[k] for k in ("encoder", "encoder_options")}
    b = save_checkpoint(
        tmp_path / "b.safetensors", ck.method, {**meta, "preprocessing": replace(ck.preprocessing, size=32).to_dict()}
    )
    data = synthetic_set(6, 5)
    for c in range(6):
        write_pngs(tmp_path / "f" / f"c{c}", data.images[data.labels == c].numpy())
    args = dict(shapes=[(3, 1)], episodes=30, queries=2, folder=tmp_path / "f", inference=InferenceOptions("shift"))
    ab = evaluate_checkpoint(a, ensemble=[b], **args).results[0].per_episode
    ba = evaluate_checkpoint(b, ensemble=[a], **args).results[0].per_episode
    assert np.allclose(ab, ba)
    inverted = save_checkpoint(
        tmp_path / "c.safetensors", ck.method, {**meta, "preprocessing": replace(ck.preprocessing, invert=False).to_dict()}
    )
    with pytest.raises(OneshotError, match="share their training preprocessing"):
        evaluate_checkpoint(a, ensemble=[inverted], **args)
    with pytest.raises(OneshotError, match="one tensor of the same images per member"):
        ensemble_embeddings([load_checkpoint(a).method] * 2, [data.images], CPU)


@pytest.mark.slow
def test_mixed_size_ensemble_on_lakes_runs_equals_its_members_by_hand(omniglot_dir):
    """The shipped 28x28 v3 and 56x56 v4 Lake-split encoders together on Lake's runs: the same score as
    combining each member's embeddings of the runs decoded at its own size, by hand."""
    from oneshot.checkpoint import load_checkpoint
    from oneshot.data.omniglot import load_lake_runs
    from oneshot.inference import combine
    from oneshot.methods.base import nearest_prototype
    from oneshot.weights import resolve_checkpoint

    v3, v4 = resolve_checkpoint("omniglot-lake-v3"), resolve_checkpoint("omniglot-lake-v4")
    res = evaluate_checkpoint(v4, [], ensemble=[v3], lake_runs=True, data_dir=omniglot_dir)
    members = [
        (load_checkpoint(v4).method, load_lake_runs(56, omniglot_dir)),
        (load_checkpoint(v3).method, load_lake_runs(28, omniglot_dir)),
    ]
    right = 0
    for i in range(20):
        s = combine([view_embeddings(m, runs[i].support, CPU) for m, runs in members])
        q = combine([view_embeddings(m, runs[i].queries, CPU) for m, runs in members])
        right += int((nearest_prototype(s, torch.arange(20), q, 20).argmax(1) == members[0][1][i].targets).sum())
    assert res.lake_runs.accuracy == pytest.approx(right / 400) and right > 370


def test_a_short_evaluation_embeds_only_the_images_its_episodes_draw(tmp_path, monkeypatch):
    """Two episodes of a 30-image folder draw 18 images at most: only those are embedded, and the scores are the
    ones of the whole-split path, plain and with TTA."""
    from oneshot.checkpoint import load_checkpoint
    from oneshot.data.folder import load_image_folder
    from oneshot.evaluation import episode_images
    from oneshot.inference import view_embeddings as real_views

    a = make_checkpoint(tmp_path / "a.safetensors", 0)
    data = synthetic_set(6, 5)
    for c in range(6):
        write_pngs(tmp_path / "f" / f"c{c}", data.images[data.labels == c].numpy())
    ck = load_checkpoint(a)
    folder = load_image_folder(tmp_path / "f", ck.preprocessing)
    used = episode_images(folder, [(3, 1)], 2, 2, 0)
    assert 3 <= len(used) <= 18 and (np.diff(used) > 0).all()
    seen: list[int] = []

    def counting(method, images, device, tta="none", **kw):
        seen.append(images.shape[0])
        return real_views(method, images, device, tta, **kw)

    monkeypatch.setattr("oneshot.inference.view_embeddings", counting)
    args = dict(shapes=[(3, 1)], episodes=2, queries=2, folder=tmp_path / "f")
    short = evaluate_checkpoint(a, inference=InferenceOptions("shift"), **args).results[0].per_episode
    assert seen == [len(used)]
    z = ensemble_embeddings([ck.method], folder.images, CPU, "shift")
    full = evaluate(
        ck.method, folder, 3, 1, 2, 2, 0, "cpu", embeddings=z, rule=episode_rule(ck.method, 1, InferenceOptions("shift"))
    )
    assert np.allclose(short, full.per_episode)
    plain = evaluate_checkpoint(a, **args).results[0].per_episode
    assert np.allclose(plain, evaluate(ck.method, folder, 3, 1, 2, 2, 0, "cpu", precision="fp32").per_episode)
    assert evaluate_checkpoint(a, shapes=[(3, 1)], episodes=50, queries=2, folder=tmp_path / "f").results[0].episodes == 50
