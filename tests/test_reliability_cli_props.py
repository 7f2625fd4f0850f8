"""Issue 11: property tests over the options of ``train``, ``evaluate`` and ``demo``: any combination of values
either passes every check (and reaches the data, stubbed here so nothing is loaded or trained) or ends in one
``error:`` line with exit status 2 (or click's own usage error for a value of the wrong type); never a traceback.

The data loaders are replaced by a stub that raises :class:`Reached`, so each example costs milliseconds."""

from __future__ import annotations

import pytest
from gallery_util import make_checkpoint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from oneshot import experiment
from oneshot.cli import app
from oneshot.methods import METHODS

PROPS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
runner = CliRunner()


class Reached(Exception):
    """Every check passed: the command went on to load data."""


@pytest.fixture(scope="module")
def stubbed():
    """Data loading (and the faces protocol) replaced by :class:`Reached` for the whole module."""
    from oneshot.protocols import faces

    mp = pytest.MonkeyPatch()

    def reached(*a, **k):
        raise Reached

    mp.setattr(experiment, "load_split", reached)
    mp.setattr(faces, "run_faces", reached)
    yield
    mp.undo()


@pytest.fixture(scope="module")
def where(tmp_path_factory, stubbed):
    root = tmp_path_factory.mktemp("props")
    return root, make_checkpoint(root / "c.safetensors", 0)


NUM = st.one_of(
    st.integers(-3, 70),
    st.sampled_from([0, 1, 2, -(10**12), 10**12]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["nan", "inf", "-inf", "1e309", "0.5", "abc", ""]),
)


def _choice(*valid: str) -> st.SearchStrategy:
    return st.one_of(st.sampled_from(valid), st.text(max_size=8))


DEVICE = st.sampled_from(["auto", "cpu", "cuda", "cuda:7", "mps", "tpu", "", "cpu:0"])
TRAIN = {
    **{
        f"--{o}": NUM
        for o in (
            "episodes",
            "ways",
            "shots",
            "queries",
            "lr",
            "lr-step",
            "lr-gamma",
            "eval-every",
            "val-ways",
            "val-shots",
            "val-episodes",
            "patience",
            "max-minutes",
            "seed",
            "size",
        )
    },
    "--method": _choice(*METHODS),
    "--split": _choice("vinyals", "lake"),
    "--precision": _choice("auto", "fp32", "bf16"),
    "--dataset": _choice("omniglot", "att_faces", "neu"),
    "--encoder": _choice("conv4", "resnet12", "resnet12_small"),
    "--device": DEVICE,
    "--option": st.sampled_from(["", "x", "a=b", "=1", "temperature=nan", "distance=cosine"]),
}
EVALUATE = {
    **{f"--{o}": NUM for o in ("ways", "shots", "queries", "episodes", "pairs", "seed")},
    "--split": _choice("test", "val", "train", "trainval"),
    "--protocol": _choice("vinyals", "lake"),
    "--similarity": _choice("auto", "cosine", "neg-sqdist"),
    "--resize": _choice("stretch", "pad", "crop"),
    "--device": DEVICE,
    "--option": st.sampled_from(["", "x", "a=b", "=1"]),
}
EVALUATE_FLAGS = ["--standard", "--verification", "--invert", "--no-invert"]
DEMO = {"--episodes": NUM, "--train-minutes": NUM, "--device": DEVICE}


def _args(data, options: dict, flags: tuple = ()) -> list[str]:
    names = data.draw(st.lists(st.sampled_from(sorted(options)), min_size=1, max_size=4, unique=True))
    args = [a for n in names for a in (n, str(data.draw(options[n])))]
    return args + data.draw(st.lists(st.sampled_from(list(flags)), max_size=2, unique=True)) if flags else args


def _works_or_one_line_error(args: list[str]) -> None:
    res = runner.invoke(app, args)
    if isinstance(res.exception, Reached):
        return  # every check passed
    assert res.exception is None or isinstance(res.exception, SystemExit), (args, res.output, res.exc_info)
    assert "Traceback" not in res.output, (args, res.output)
    assert res.exit_code == 2, (args, res.output)
    errs = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(errs) == 1 or "Usage:" in res.output, (args, res.output)


@PROPS
@given(st.data())
def test_train_options(where, data):
    root, _ = where
    _works_or_one_line_error(["train", "--out", str(root / "t" / "m.safetensors"), "--data-dir", str(root), *_args(data, TRAIN)])


@PROPS
@given(st.data())
def test_evaluate_options(where, data):
    root, ck = where
    args = _args(data, EVALUATE, tuple(EVALUATE_FLAGS))
    _works_or_one_line_error(["evaluate", "--checkpoint", str(ck), "--data-dir", str(root), *args])


@PROPS
@given(st.data(), st.sampled_from(["omniglot", "faces", "x"]), st.booleans())
def test_demo_options(where, data, what, own_checkpoint):
    root, ck = where
    ckpt = str(ck) if own_checkpoint else str(root / "missing.safetensors")
    args = ["demo", what, "--checkpoint", ckpt, "--out", str(root / "demo"), "--data-dir", str(root)]
    _works_or_one_line_error(args + _args(data, DEMO))
