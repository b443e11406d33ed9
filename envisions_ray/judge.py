"""The Self-Rewarding baseline's judge (Yuan et al., 2024): the policy scores its own candidates
with the prompt file's `judge` template, and DPO trains on the best against the worst per input.

The environment's reward plays no part in it; that is the point of the comparison.
"""

from __future__ import annotations

import re
from collections import defaultdict

from envisions_ray.types import Trajectory


def parse_score(reply: str, max_score: int) -> int | None:
    """The first whole number in the judge's reply, if it is a score from 0 to max_score."""
    found = re.search(r"\d+", reply)
    if found is None:
        return None
    digits = found.group().lstrip("0") or "0"
    # Its length first: int() refuses a number of over 4,300 digits, which a reply may hold.
    if len(digits) > len(str(max_score)) or int(digits) > max_score:
        return None
    return int(digits)


def best_against_worst(candidates: list[Trajectory], scores: list[int | None]) -> list[tuple[Trajectory, Trajectory]]:
    """Per input, (highest-scored, lowest-scored) candidate; unparsed scores are left out, and an
    input whose candidates all score the same gives no pair. Ties go to the earlier candidate."""
    by_input: dict[str, list[tuple[int, Trajectory]]] = defaultdict(list)
    for candidate, score in zip(candidates, scores):
        if score is not None:
            by_input[candidate.example_id].append((score, candidate))
    pairs = []
    for example_id in sorted(by_input):
        scored = by_input[example_id]
        best = max(scored, key=lambda item: item[0])  # max and min keep the first of equals
        worst = min(scored, key=lambda item: item[0])
        if best[0] > worst[0]:
            pairs.append((best[1], worst[1]))
    return pairs
