import numpy as np
import pytest

from oneshot.data.samplers import EpisodeSampler
from oneshot.errors import OneshotError


def uniform_classes(n_classes=30, per_class=20):
    return [np.arange(c * per_class, (c + 1) * per_class) for c in range(n_classes)]


def ragged_classes():
    sizes = [7, 12, 9, 20, 8, 15]
    out, start = [], 0
    for s in sizes:
        out.append(np.arange(start, start + s))
        start += s
    return out


@pytest.mark.parametrize("classes", [uniform_classes(), ragged_classes()])
def test_episode_shape_counts_and_no_leakage(classes):
    label_of = {int(i): c for c, idx in enumerate(classes) for i in idx}
    sampler = EpisodeSampler(classes, ways=5, shots=2, queries=3, episodes=50, seed=3)
    for ep in sampler:
        assert ep.support.shape == (10,) and ep.query.shape == (15,)
        assert len(set(ep.classes.tolist())) == 5, "a class repeated inside an episode"
        assert not set(ep.support.tolist()) & set(ep.query.tolist()), "an image is both support and query"
        assert len(set(ep.support.tolist()) | set(ep.query.tolist())) == 25
        for c in range(5):
            assert {label_of[int(i)] for i in ep.support[c * 2 : (c + 1) * 2]} == {int(ep.classes[c])}
            assert {label_of[int(i)] for i in ep.query[c * 3 : (c + 1) * 3]} == {int(ep.classes[c])}


def test_deterministic_and_seed_dependent():
    a = [e.support.tolist() + e.query.tolist() for e in EpisodeSampler(uniform_classes(), 5, 1, 5, 20, seed=1)]
    b = [e.support.tolist() + e.query.tolist() for e in EpisodeSampler(uniform_classes(), 5, 1, 5, 20, seed=1)]
    c = [e.support.tolist() + e.query.tolist() for e in EpisodeSampler(uniform_classes(), 5, 1, 5, 20, seed=2)]
    assert a == b
    assert a != c


def test_resume_start_yields_the_same_later_episodes():
    full = list(EpisodeSampler(uniform_classes(), 5, 1, 5, 10, seed=4))
    tail = list(EpisodeSampler(uniform_classes(), 5, 1, 5, 10, seed=4, start=6))
    assert len(tail) == 4
    for x, y in zip(full[6:], tail):
        assert (x.support == y.support).all() and (x.query == y.query).all()


def test_classes_are_drawn_roughly_uniformly():
    counts = np.zeros(30)
    for ep in EpisodeSampler(uniform_classes(), 5, 1, 1, 3000, seed=0):
        counts[ep.classes] += 1
    expected = 3000 * 5 / 30
    assert np.abs(counts - expected).max() < 0.25 * expected


def test_too_many_ways_is_a_clear_error():
    with pytest.raises(OneshotError, match="20-way episodes need 20 classes but the data has 6"):
        EpisodeSampler(ragged_classes(), 20, 1, 1, 1)


def test_shots_plus_queries_larger_than_a_class_is_a_clear_error():
    with pytest.raises(OneshotError, match="needs 10 examples per class but class #0 has 7"):
        EpisodeSampler(ragged_classes(), 3, 5, 5, 1)
