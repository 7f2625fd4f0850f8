"""benchmarks/test_steps_val.py's rule (issue 17): per shape the highest validation accuracy; values within the tie
of the best go to the fewest steps; shapes never scored are left out."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from test_steps_val import choose  # noqa: E402


def _row(steps: int, accuracies: list[float]) -> dict:
    shapes = [(5, 1), (5, 5), (20, 1), (20, 5)]
    return {
        "test_steps": steps,
        "results": [{"ways": w, "shots": s, "accuracy": a} for (w, s), a in zip(shapes, accuracies, strict=True)],
    }


def test_the_best_per_shape_and_ties_to_fewer_steps():
    rows = [
        _row(12, [0.9658, 0.9929, 0.9275, 0.9802]),
        _row(1, [0.9487, 0.9743, 0.7216, 0.7980]),
        _row(8, [0.9647, 0.9925, 0.9268, 0.9770]),
    ]
    # 5w1s: 12 beats 8 by 0.11 points; 5w5s: 8 within 0.04; 20w1s: 8 within 0.07; 20w5s: 12 by 0.32
    assert choose(rows, 0.001) == {"5w1s": 12, "5w5s": 8, "20w1s": 8, "20w5s": 12}
    assert choose(rows, 0.0) == {"5w1s": 12, "5w5s": 12, "20w1s": 12, "20w5s": 12}  # no tie: the strict best
    assert choose(rows, 0.5) == {"5w1s": 1, "5w5s": 1, "20w1s": 1, "20w5s": 1}  # everything ties


def test_shapes_without_scores_are_not_chosen():
    row = {"test_steps": 3, "results": [{"ways": 5, "shots": 1, "accuracy": 0.9}]}
    assert choose([row], 0.001) == {"5w1s": 3}


def test_rows_with_other_options_compete_and_ties_prefer_the_training_options():
    plain = _row(4, [0.98, 0.99, 0.9300, 0.9700])
    smaller_step = {**_row(4, [0.97, 0.99, 0.9305, 0.9800]), "options": {"inner_lr": 0.1}}
    fewer = {**_row(2, [0.96, 0.98, 0.9400, 0.9600]), "options": {"inner_lr": 0.2}}
    # 5w1s/5w5s: the plain row (ties at 5w5s go to the training's own options); 20w1s: the 2-step row is best;
    # 20w5s: the smaller step size wins by a point
    assert choose([smaller_step, fewer, plain], 0.001) == {
        "5w1s": 4,
        "5w5s": 4,
        "20w1s": {"test_steps": 2, "inner_lr": 0.2},
        "20w5s": {"test_steps": 4, "inner_lr": 0.1},
    }
    # a wide tie: the fewest steps win even with an override
    assert choose([smaller_step, fewer, plain], 0.05)["5w1s"] == {"test_steps": 2, "inner_lr": 0.2}


def test_episode_shapes_parse_and_bad_ones_say_the_form():
    from oneshot.cli_common import episode_shape

    assert episode_shape("20x5") == (20, 5)
    assert episode_shape("5X1") == (5, 1)
    for bad, says in [("20", "WAYSxSHOTS"), ("5x1x2", "WAYSxSHOTS"), ("ax1", "WAYSxSHOTS"), ("1x1", "2 ways"), ("5x0", "1 shot")]:
        with pytest.raises(ValueError, match=says):
            episode_shape(bad)


def test_rows_from_other_weights_are_refused(tmp_path):
    """A row's checkpoint replaced since its sweep (or a file that does not say which weights it scored) is not
    added to: the choice would mix two models."""
    from test_steps_val import check_same_weights

    from oneshot.errors import OneshotError

    out = tmp_path / "x_test_steps_val.json"
    check_same_weights({"tensors_sha256": "a" * 64, "rows": []}, "a" * 64, out)  # the same weights: fine
    with pytest.raises(OneshotError, match="aaaaaaaaaaaa.*bbbbbbbbbbbb.*--out"):
        check_same_weights({"tensors_sha256": "a" * 64, "rows": []}, "b" * 64, out)
    with pytest.raises(OneshotError, match="does not record"):
        check_same_weights({"rows": []}, "b" * 64, out)


def test_committed_sweeps_name_the_weights_they_scored():
    import json

    for path in (ROOT / "benchmarks" / "results").glob("*_test_steps_val.json"):
        doc = json.loads(path.read_text())
        assert len(doc.get("tensors_sha256", "")) == 64, path.name
