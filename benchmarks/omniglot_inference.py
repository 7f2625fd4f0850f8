"""Inference options of `oneshot evaluate` on Omniglot (issue 16): shift TTA, ensembles, transductive soft k-means.

Two steps, each through the one evaluation path (``oneshot.evaluation.evaluate``, ``evaluate_checkpoint``):

``select`` (VALIDATION only; writes ``benchmarks/results/omniglot_inference_val.json``):
  * Vinyals val, 1000 episodes of 5w1s and 20w1s (15 queries, seed 0): the default ProtoNet alone and in
    ensembles with the other committed Vinyals-split encoders (Siamese, memory, and the 128-filter augmented
    ProtoNet ``models/protonet_conv4_vinyals_w128.safetensors``, and with it the five-block 56x56 ProtoNet
    ``models/protonet_conv4b5_s56_vinyals.safetensors``: each member reads the images decoded at its own size),
    each without and with shift TTA; the inductive configuration kept is the best 20w1s (ties: fewer checkpoints,
    no TTA).
    Transductive soft k-means on the default ProtoNet (with TTA when TTA helped it): steps x temperature grid,
    the best 20w1s kept.
  * Lake split val (the 5 background alphabets held out of training), 1000 20w1s episodes, for Lake's runs:
    the same choices among the checkpoints trained on the Lake split's background alphabets only
    (``omniglot-lake`` ProtoNet, ``margin_conv4_lake``). Vinyals-split checkpoints never score Lake's runs:
    78 of the runs' 200 characters are Vinyals training classes.

``test`` (reads the val file's choices; writes ``benchmarks/results/omniglot_inference.json``): the chosen
inductive and transductive configurations on Vinyals test (5w1s, 5w5s, 20w1s, 20w5s; 1000 episodes) and the
Lake-split ones on Lake's 20 runs, each with the ``oneshot evaluate`` command that reproduces it.

``encoder --checkpoint PATH`` (a later Lake-split encoder, e.g. ``omniglot-lake-v2``; writes
``benchmarks/results/omniglot_inference_encoder_<stem>.json``): the same Lake-split val 20w1s (1000 episodes)
without and with shift TTA -- the TTA choice, validation only -- and Lake's 20 runs with each, so the README's
inference table shows the encoder's rows beside ``omniglot-lake``'s. With ``--split vinyals`` (a later
Vinyals-split encoder): Vinyals val 5w1s / 20w1s without and with TTA, then the four Vinyals test shapes with each.
``--transductive`` adds the soft k-means row (steps x temperature chosen on val 20w1s), reported as its own row.

``vinyals-test --checkpoint NAME`` (a Lake-split encoder whose ``encoder`` step has run; writes
``benchmarks/results/omniglot_inference_vinyals_test_<stem>.json``): the same encoder on the four Vinyals *test*
shapes (1000 episodes), with the TTA its Lake-split validation chose. Clean: the Vinyals test split is 13 of the
evaluation alphabets, none of which a Lake-split encoder saw (the script checks the character lists). Vinyals
*val* is not used: 4 of its 5 alphabets are Lake background alphabets the encoder was trained on.

``lake-choice`` (reads ``benchmarks/results/omniglot_val_probe_lake.json``, the Lake-split validation of the
shipped Lake-split encoders alone and together, with and without TTA, ``benchmarks/omniglot_val_probe.py``; writes
``benchmarks/results/omniglot_inference_lake_choice.json``): the configuration with the best val 20w1s (ties: fewer
members, no TTA) on Lake's 20 runs and on the four Vinyals test shapes (clean for Lake-split encoders, as above).
Members may read different input sizes (v3 28x28, v4 56x56): each is given the images decoded at its own size.

    python benchmarks/omniglot_inference.py select
    python benchmarks/omniglot_inference.py test
    python benchmarks/omniglot_inference.py encoder --checkpoint omniglot-lake-v2
    python benchmarks/omniglot_inference.py vinyals-test --checkpoint omniglot-lake-v4
    python benchmarks/omniglot_inference.py lake-choice
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from oneshot.checkpoint import load_checkpoint
from oneshot.evaluation import evaluate
from oneshot.experiment import STANDARD_SHAPES, evaluate_checkpoint, load_split
from oneshot.inference import InferenceOptions, combine, episode_rule, split_overlap, view_embeddings
from oneshot.provenance import command_line, provenance

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks/results"
VINYALS = {
    "protonet": "src/oneshot/weights/protonet_conv4_vinyals.safetensors",
    "siamese": "models/siamese_conv4_vinyals.safetensors",
    "memory": "models/memory_conv4_vinyals.safetensors",
    "protonet_w128": "models/protonet_conv4_vinyals_w128.safetensors",  # 128 filters + stroke augmentation, not kept alone
    # five blocks on 56x56 drawings + stroke augmentation (omniglot_s56_candidates.json), not kept alone
    "protonet_b5_s56": "models/protonet_conv4b5_s56_vinyals.safetensors",
}
LAKE = {
    "protonet_lake": "src/oneshot/weights/protonet_conv4_lake.safetensors",
    "margin_lake": "models/margin_conv4_lake.safetensors",
}
STEPS = (1, 2, 3, 5, 10)
TEMPERATURES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 64.0)


def member_views(members: dict[str, str], images_at) -> dict[str, torch.Tensor]:
    """Each member's five shift views (5, N, D) of the images (view 0: the image itself, i.e. no TTA);
    ``images_at(size)`` gives the same images decoded at a member's input size."""
    out = {}
    for n, p in members.items():
        ck = load_checkpoint(ROOT / p)
        out[n] = view_embeddings(ck.method, images_at(ck.preprocessing.size), torch.device("cpu"), "shift")
    return out


def split_at(split: str, part: str):
    """``size -> images`` of one split part, each size decoded once (labels checked equal across sizes)."""
    cache: dict[int, object] = {}

    def images_at(size: int) -> torch.Tensor:
        if size not in cache:
            cache[size] = load_split("omniglot", split, part, size, None)
            assert torch.equal(cache[size].labels, next(iter(cache.values())).labels)
        return cache[size].images

    return images_at


def score(data, method, z, rule, shapes, episodes) -> dict:
    """Accuracy and CI per shape of episodes scored from embeddings z by rule (the one path, ``evaluate``)."""
    out = {}
    for ways, shots in shapes:
        r = evaluate(method, data, ways, shots, 15, episodes, 0, "cpu", embeddings=z, rule=rule)
        out[f"{ways}w{shots}s"] = {"accuracy": r.accuracy, "ci95": r.ci95}
    return out


def select_split(split: str, members: dict[str, str], combos: list[tuple[str, ...]], shapes, episodes: int) -> dict:
    """Val grid of one split: inductive rows (combos x TTA), the choice, then the soft k-means grid."""
    data = load_split("omniglot", split, "val", 28, None)
    views = member_views(members, split_at(split, "val"))
    first = load_checkpoint(ROOT / members[combos[0][0]]).method
    rows, key = [], f"{shapes[-1][0]}w{shapes[-1][1]}s"
    for combo in combos:
        for tta in ("none", "shift"):
            z = combine([views[n] if tta == "shift" else views[n][:1] for n in combo])
            rule = episode_rule(first, len(combo), InferenceOptions(tta))
            rows.append({"members": list(combo), "tta": tta, **score(data, first, z, rule, shapes, episodes)})
            print(
                split,
                "+".join(combo),
                tta,
                {k: round(100 * v["accuracy"], 2) for k, v in rows[-1].items() if "w" in k},
                flush=True,
            )
    best = max(rows, key=lambda r: (round(r[key]["accuracy"], 5), -len(r["members"]), r["tta"] == "none"))
    single = [r for r in rows if r["members"] == [combos[0][0]]]
    tta = "shift" if single[1][key]["accuracy"] > single[0][key]["accuracy"] else "none"
    z = combine([views[combos[0][0]] if tta == "shift" else views[combos[0][0]][:1]])
    grid = []
    for steps in STEPS:
        for temp in TEMPERATURES:
            rule = episode_rule(first, 1, InferenceOptions(tta, True, steps, temp))
            grid.append({"steps": steps, "temperature": temp, "tta": tta, **score(data, first, z, rule, shapes, episodes)})
            print(split, "soft k-means", steps, temp, tta, round(100 * grid[-1][key]["accuracy"], 2), flush=True)
    chosen = max(grid, key=lambda r: (round(r[key]["accuracy"], 5), -r["steps"]))
    return {
        "split": f"{split} val",
        "criterion": key,
        "inductive": rows,
        "inductive_choice": {"members": best["members"], "tta": best["tta"]},
        "transductive": grid,
        "transductive_choice": {
            "member": combos[0][0],
            "tta": tta,
            "steps": chosen["steps"],
            "temperature": chosen["temperature"],
        },
    }


def select(episodes: int) -> None:
    t0 = time.perf_counter()
    v = [
        ("protonet",),
        ("protonet", "memory"),
        ("protonet", "siamese"),
        ("protonet", "siamese", "memory"),
        ("protonet", "protonet_w128"),
        ("protonet", "protonet_w128", "protonet_b5_s56"),  # members of two input sizes (28x28, 56x56)
    ]
    out = {
        "benchmark": "omniglot_inference_val",
        "episodes": episodes,
        "vinyals": select_split("vinyals", VINYALS, v, [(5, 1), (20, 1)], episodes),
        "lake": select_split("lake", LAKE, [("protonet_lake",), ("protonet_lake", "margin_lake")], [(20, 1)], episodes),
        "members": {**VINYALS, **LAKE},
    }
    out.update(seconds=time.perf_counter() - t0, **provenance(command_line()))
    (RESULTS / "omniglot_inference_val.json").write_text(json.dumps(out, indent=1) + "\n")


def cli(paths: list[str], opts: InferenceOptions, extra: str) -> str:
    """The `oneshot evaluate` command of a row."""
    ck = " ".join(f"--checkpoint {p}" for p in paths)
    t = f" --tta {opts.tta}" if opts.tta != "none" else ""
    k = f" --transductive --kmeans-steps {opts.steps} --kmeans-temperature {opts.temperature:g}" if opts.transductive else ""
    return f"oneshot evaluate {ck}{t}{k} {extra}"


def test(episodes: int) -> None:
    """The val choices on test, the cheapest rows first; the results file is rewritten after each row."""
    val = json.loads((RESULTS / "omniglot_inference_val.json").read_text())
    t0, rows, todo = time.perf_counter(), [], []
    for split, members in (("vinyals", VINYALS), ("lake", LAKE)):
        ind, tr = val[split]["inductive_choice"], val[split]["transductive_choice"]
        todo.append(
            (split, "transductive", [members[tr["member"]]], InferenceOptions(tr["tta"], True, tr["steps"], tr["temperature"]))
        )
        todo.append((split, "inductive", [members[n] for n in ind["members"]], InferenceOptions(ind["tta"])))
    todo.append(("lake", "plain", [LAKE["protonet_lake"]], InferenceOptions()))  # the Lake-split baseline on the runs
    todo.sort(key=lambda t: (t[0] == "vinyals" and t[1] == "inductive", t[0] == "vinyals"))
    for split, kind, paths, opts in todo:
        lake = split == "lake"
        extra = "--lake-runs --ways 20 --episodes 1" if lake else f"--standard --episodes {episodes}"
        shapes = [] if lake else STANDARD_SHAPES
        res = evaluate_checkpoint(
            ROOT / paths[0], shapes, episodes, ensemble=[ROOT / p for p in paths[1:]], inference=opts, lake_runs=lake
        )
        rows.append(dict(res.to_dict(), row=kind, split=split, members=paths, cli=cli(paths, opts, extra)))
        figs = [f"{100 * r.accuracy:.2f}" for r in res.results] + (
            [f"Lake {100 * res.lake_runs.accuracy:.2f}"] if res.lake_runs else []
        )
        print(split, kind, paths, opts.summary(), " / ".join(figs), flush=True)
        out = {"benchmark": "omniglot_inference", "episodes": episodes, "rows": rows, "seconds": time.perf_counter() - t0}
        out.update(provenance(command_line()))
        (RESULTS / "omniglot_inference.json").write_text(json.dumps(out, indent=1) + "\n")


def encoder(checkpoint: str, episodes: int, split: str = "lake", transductive: bool = False) -> None:
    """One encoder alone: val 20w1s (and 5w1s on the Vinyals split) without / with shift TTA (the choice), then
    Lake's 20 runs (a Lake-split encoder) or the Vinyals test shapes (a Vinyals-split one) with each. With
    ``transductive``: the soft k-means grid on val (with the chosen TTA), its best 20w1s on test, its own row."""
    from oneshot.weights import resolve_checkpoint

    t0, path = time.perf_counter(), resolve_checkpoint(checkpoint).resolve()
    shown = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    ck = load_checkpoint(path)
    method = ck.method
    data = load_split("omniglot", split, "val", ck.preprocessing.size, None)  # at the encoder's own input size
    val_shapes = [(5, 1), (20, 1)] if split == "vinyals" else [(20, 1)]
    views = member_views({"encoder": shown}, lambda size: data.images)["encoder"]
    val = {
        tta: score(
            data,
            method,
            combine([views if tta == "shift" else views[:1]]),
            episode_rule(method, 1, InferenceOptions(tta)),
            val_shapes,
            episodes,
        )
        for tta in ("none", "shift")
    }
    chosen = "shift" if val["shift"]["20w1s"]["accuracy"] > val["none"]["20w1s"]["accuracy"] else "none"
    rows = []
    for tta in ("none", "shift"):
        opts = InferenceOptions(tta)
        if split == "vinyals":
            res = evaluate_checkpoint(path, STANDARD_SHAPES, episodes, inference=opts)
            extra, figs = f"--standard --episodes {episodes}", " / ".join(f"{100 * r.accuracy:.2f}" for r in res.results)
        else:
            res = evaluate_checkpoint(path, [], episodes, inference=opts, lake_runs=True)
            extra, figs = "--lake-runs --ways 20 --episodes 1", f"Lake's runs {100 * res.lake_runs.accuracy:.2f}"
        rows.append(dict(res.to_dict(), tta=tta, val=val[tta], cli=cli([checkpoint], opts, extra)))
        print(f"{shown} TTA {tta}: val 20w1s {100 * val[tta]['20w1s']['accuracy']:.2f}, test {figs}", flush=True)
    if transductive:
        z = combine([views if chosen == "shift" else views[:1]])
        grid = []
        for steps in STEPS:
            for temp in TEMPERATURES:
                rule = episode_rule(method, 1, InferenceOptions(chosen, True, steps, temp))
                grid.append({"steps": steps, "temperature": temp, **score(data, method, z, rule, [(20, 1)], episodes)})
                print("soft k-means", steps, temp, round(100 * grid[-1]["20w1s"]["accuracy"], 2), flush=True)
        best = max(grid, key=lambda r: (round(r["20w1s"]["accuracy"], 5), -r["steps"]))
        opts = InferenceOptions(chosen, True, best["steps"], best["temperature"])
        lake = split == "lake"
        res = evaluate_checkpoint(path, [] if lake else STANDARD_SHAPES, episodes, inference=opts, lake_runs=lake)
        extra = "--lake-runs --ways 20 --episodes 1" if lake else f"--standard --episodes {episodes}"
        rows.append(dict(res.to_dict(), tta=chosen, row="transductive", val=best, grid=grid, cli=cli([checkpoint], opts, extra)))
        print(f"{shown} transductive {opts.summary()}: val 20w1s {100 * best['20w1s']['accuracy']:.2f}", flush=True)
    meta = load_checkpoint(path).metadata.get("training", {})
    out = {
        "benchmark": "omniglot_inference_encoder",
        "checkpoint": shown,
        "name": checkpoint,
        "split": split,
        "training": meta,
        "episodes": episodes,
    }
    out.update(tta_choice=chosen, rows=rows, seconds=time.perf_counter() - t0, **provenance(command_line()))
    (RESULTS / f"omniglot_inference_encoder_{path.stem}.json").write_text(json.dumps(out, indent=1) + "\n")


def refuse_unclean(paths: list[Path]) -> None:
    """Stop unless every checkpoint is scored on Vinyals test characters it never trained on (a recorded figure is
    refused where ``oneshot evaluate`` would only warn)."""
    overlap = split_overlap([load_checkpoint(p).metadata for p in paths], "vinyals", "test", None)
    if overlap:
        trained, seen, total = overlap
        raise SystemExit(f"{seen} of the {total} Vinyals test characters are {trained}-split training characters: not a clean test")


def vinyals_test(checkpoint: str, episodes: int) -> None:
    """A Lake-split encoder on the Vinyals test shapes, with the TTA chosen on Lake-split validation."""
    from oneshot.weights import resolve_checkpoint

    t0, path = time.perf_counter(), resolve_checkpoint(checkpoint).resolve()
    shown = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    if load_checkpoint(path).metadata.get("data", {}).get("split") != "lake":
        raise SystemExit(f"{checkpoint} was not trained on the Lake split: score it with the encoder step")
    refuse_unclean([path])
    enc = RESULTS / f"omniglot_inference_encoder_{path.stem}.json"
    if not enc.is_file():
        raise SystemExit(f"{enc.name} is missing: run the encoder step first (it makes the TTA choice on validation)")
    tta = json.loads(enc.read_text())["tta_choice"]
    opts = InferenceOptions(tta)
    res = evaluate_checkpoint(path, STANDARD_SHAPES, episodes, split="vinyals", inference=opts)
    extra = f"--protocol vinyals --standard --episodes {episodes}"
    print(f"{shown} TTA {tta} on Vinyals test: " + " / ".join(f"{100 * r.accuracy:.2f}" for r in res.results), flush=True)
    out = {"benchmark": "omniglot_inference_vinyals_test", "checkpoint": shown, "name": checkpoint, "tta_choice": tta}
    out.update(res.to_dict(), cli=cli([checkpoint], opts, extra), seconds=time.perf_counter() - t0)
    out.update(provenance(command_line()))
    (RESULTS / f"omniglot_inference_vinyals_test_{path.stem}.json").write_text(json.dumps(out, indent=1) + "\n")


def lake_choice(episodes: int) -> None:
    """The Lake-split validation's best configuration of the shipped Lake-split encoders, on Lake's runs and on
    the Vinyals test shapes."""
    probe = json.loads((RESULTS / "omniglot_val_probe_lake.json").read_text())
    best = max(probe["rows"], key=lambda r: (round(r["20w1s"]["accuracy"], 5), -len(r["members"]), r["tta"] == "none"))
    paths, opts = [ROOT / p for p in best["members"]], InferenceOptions(best["tta"])
    if any(load_checkpoint(p).metadata.get("data", {}).get("split") != "lake" for p in paths):
        raise SystemExit("the probe's members must all be Lake-split encoders")
    refuse_unclean(paths)
    t0, rows = time.perf_counter(), []
    for kind, extra in (
        ("lake", "--lake-runs --ways 20 --episodes 1"),
        ("vinyals", f"--protocol vinyals --standard --episodes {episodes}"),
    ):
        lake = kind == "lake"
        res = evaluate_checkpoint(
            paths[0], [] if lake else STANDARD_SHAPES, episodes, split=kind, ensemble=paths[1:], inference=opts, lake_runs=lake
        )
        figs = (
            f"Lake's runs {100 * res.lake_runs.accuracy:.2f}"
            if lake
            else " / ".join(f"{100 * r.accuracy:.2f}" for r in res.results)
        )
        print(kind, best["members"], best["tta"], figs, flush=True)
        rows.append(dict(res.to_dict(), split=kind, cli=cli(best["members"], opts, extra)))
    out = {"benchmark": "omniglot_inference_lake_choice", "choice": best, "probe": probe["command"], "rows": rows}
    out.update(seconds=time.perf_counter() - t0, **provenance(command_line()))
    (RESULTS / "omniglot_inference_lake_choice.json").write_text(json.dumps(out, indent=1) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=("select", "test", "encoder", "vinyals-test", "lake-choice"))
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--checkpoint", default="omniglot-lake-v2", help="encoder step: a built-in name or checkpoint file")
    p.add_argument("--split", choices=("lake", "vinyals"), default="lake", help="encoder step: the split it was trained on")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--transductive", action="store_true", help="encoder step: also the soft k-means row (own row)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.step == "encoder":
        encoder(a.checkpoint, a.episodes, a.split, a.transductive)
    elif a.step == "vinyals-test":
        vinyals_test(a.checkpoint, a.episodes)
    elif a.step == "lake-choice":
        lake_choice(a.episodes)
    else:
        select(a.episodes) if a.step == "select" else test(a.episodes)


if __name__ == "__main__":
    main()
