"""Trajectory selection (ALGORITHM.md steps 3-5): the eq. 2 filter, per-input dedup, U1 and U2.

Pure functions over `Trajectory` values; the candidate-pool actor calls them.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

from envisions_ray.types import Trajectory


@dataclass(frozen=True)
class TrainingSet:
    u1: list[Trajectory]  # positives, trained as (prompt(x), a+)
    u2: list[tuple[Trajectory, Trajectory]]  # (a+, a-) pairs, trained as (refine_prompt(x; a-), a+)


def filter_pair(original: Trajectory, refined: Trajectory | None) -> Trajectory:
    """Eq. 2: the correct one if exactly one is correct; both correct: higher self-reward; both wrong: the original."""
    if refined is None:
        return original
    if original.reward != refined.reward:
        return original if original.reward else refined
    if original.reward and refined.self_reward > original.self_reward:
        return refined
    return original


def normalise_solution(solution: str) -> str:
    """Text used to dedupe: trailing spaces and blank lines do not make a solution new."""
    lines = (line.rstrip() for line in solution.strip().splitlines())
    return "\n".join(line for line in lines if line)


def dedupe(trajectories: list[Trajectory]) -> list[Trajectory]:
    """Keep the first trajectory of each (input, normalised solution); across inputs nothing is merged."""
    seen, kept = set(), []
    for trajectory in trajectories:
        key = (trajectory.example_id, normalise_solution(trajectory.solution))
        if key not in seen:
            seen.add(key)
            kept.append(trajectory)
    return kept


def rank(trajectories: list[Trajectory], by: str, seed: int = 0) -> list[Trajectory]:
    """Highest self-reward first (ties broken by text, for determinism), or a seeded shuffle; empty
    solutions last either way. An empty completion has no tokens, so its self-reward (a mean over
    none) is 0, the highest possible value: ranked by it, it would become U2's "current code"."""
    if by == "random":
        shuffled = list(trajectories)
        random.Random(seed).shuffle(shuffled)
        return sorted(shuffled, key=lambda t: not t.solution.strip())
    return sorted(trajectories, key=lambda t: (not t.solution.strip(), -t.self_reward, t.solution))


def build_training_set(
    pool: list[Trajectory], n1: int, n2: int, leave_positive_for_pair: bool, rank_by: str = "self_reward", seed: int = 0
) -> TrainingSet:
    """Eqs. 3-5 per input: U1 = top positives; U2 pairs the m-th negative with positive |U1| + m."""
    by_input: dict[str, list[Trajectory]] = defaultdict(list)
    for trajectory in pool:
        by_input[trajectory.example_id].append(trajectory)
    u1, u2 = [], []
    for example_id in sorted(by_input):
        candidates = by_input[example_id]
        positives = rank([t for t in candidates if t.reward], rank_by, seed)
        negatives = rank([t for t in candidates if not t.reward], rank_by, seed)
        if not positives:
            continue
        u1_size = min(n1, max(1, len(positives) - 1) if leave_positive_for_pair else len(positives))
        u1.extend(positives[:u1_size])
        for m, negative in enumerate(negatives[:n2]):
            if u1_size + m >= len(positives):
                break
            u2.append((positives[u1_size + m], negative))
    return TrainingSet(u1, u2)


def preference_pairs(
    pool: list[Trajectory], n2: int, rank_by: str = "self_reward", seed: int = 0
) -> list[tuple[Trajectory, Trajectory]]:
    """DPO pairs for the SFT + DPO baseline: per input, the top n2 negatives, each with the next
    positive in rank order (cycling when there are fewer positives). Unlike U2 the positives may
    also be SFT targets: DPO does not need a positive held back."""
    by_input: dict[str, list[Trajectory]] = defaultdict(list)
    for trajectory in pool:
        by_input[trajectory.example_id].append(trajectory)
    pairs = []
    for example_id in sorted(by_input):
        positives = rank([t for t in by_input[example_id] if t.reward], rank_by, seed)
        negatives = rank([t for t in by_input[example_id] if not t.reward], rank_by, seed)
        if positives:
            pairs.extend((positives[m % len(positives)], negative) for m, negative in enumerate(negatives[:n2]))
    return pairs
