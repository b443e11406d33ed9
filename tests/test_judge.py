"""The Self-Rewarding baseline's judge: score parsing and best-against-worst pairs, by hand."""

import pytest

from envisions_ray.judge import best_against_worst, parse_score
from envisions_ray.types import Trajectory


@pytest.mark.parametrize(
    "reply, score", [("4", 4), (" 5/5", 5), ("Score: 0", 0), ("9", None), ("good", None), ("", None)]
)
def test_parse_score(reply, score):
    assert parse_score(reply, max_score=5) == score


def test_best_against_worst_per_input():
    x1, x2, x3 = (Trajectory("x", s, 0, 0.0, 0, "explore") for s in ("a", "b", "c"))
    y1, y2 = (Trajectory("y", s, 1, 0.0, 0, "explore") for s in ("d", "e"))
    z1 = Trajectory("z", "f", 1, 0.0, 0, "explore")
    pairs = best_against_worst([x1, x2, x3, y1, y2, z1], [2, 5, None, 3, 3, 4])
    # x: 5 beats 2 (c unparsed, left out); y: a tie gives nothing; z: one candidate gives nothing.
    assert pairs == [(x2, x1)]
