"""Eq. 2 filter, per-input dedup, and U1/U2 construction on hand-built pools."""

from envisions_ray.selection import build_training_set, dedupe, filter_pair, normalise_solution, preference_pairs
from envisions_ray.types import Trajectory


def traj(example_id, solution, reward, self_reward, source="explore"):
    return Trajectory(example_id, solution, reward, self_reward, 0, source)


def test_filter_keeps_the_only_correct_one():
    wrong, right = traj("x", "a", 0, -0.1), traj("x", "b", 1, -2.0, "refine")
    assert filter_pair(wrong, right) is right
    assert filter_pair(right, wrong) is right


def test_filter_both_correct_keeps_higher_self_reward():
    original, refined = traj("x", "a", 1, -0.9), traj("x", "b", 1, -0.4, "refine")
    assert filter_pair(original, refined) is refined
    assert filter_pair(traj("x", "a", 1, -0.1), refined).solution == "a"


def test_filter_both_wrong_keeps_original_even_if_refined_scores_higher():
    original, refined = traj("x", "a", 0, -3.0), traj("x", "b", 0, -0.1, "refine")
    assert filter_pair(original, refined) is original
    assert filter_pair(original, None) is original


def test_dedupe_is_per_input_and_ignores_blank_lines_and_trailing_space():
    a1 = traj("x", "def solution():\n    return 1", 1, -1.0)
    a2 = traj("x", "def solution():   \n\n    return 1\n", 1, -0.5)
    b1 = traj("y", "def solution():\n    return 1", 1, -1.0)
    assert normalise_solution(a2.solution) == a1.solution
    assert dedupe([a1, a2, b1]) == [a1, b1]


def test_u1_takes_top_positives_leaving_one_for_a_pair():
    # 4 positives ranked p1 > p2 > p3 > p4, 2 negatives n1 > n2.
    pool = [traj("x", f"p{i}", 1, -i) for i in (3, 1, 4, 2)] + [traj("x", "n2", 0, -2.0), traj("x", "n1", 0, -1.0)]
    result = build_training_set(pool, n1=10, n2=2, leave_positive_for_pair=True)
    # |U1| = min(10, max(1, 4 - 1)) = 3; the 1st negative pairs with positive rank 3 + 0 = p4.
    assert [t.solution for t in result.u1] == ["p1", "p2", "p3"]
    assert [(p.solution, n.solution) for p, n in result.u2] == [("p4", "n1")]


def test_u1_without_the_cap_uses_every_positive_and_no_pairs_remain():
    pool = [traj("x", "p1", 1, -1.0), traj("x", "p2", 1, -2.0), traj("x", "n1", 0, -1.0)]
    result = build_training_set(pool, n1=10, n2=2, leave_positive_for_pair=False)
    assert [t.solution for t in result.u1] == ["p1", "p2"]
    assert result.u2 == []


def test_n1_caps_u1_and_n2_caps_pairs():
    pool = [traj("x", f"p{i}", 1, -i) for i in range(1, 7)] + [traj("x", f"n{i}", 0, -i) for i in range(1, 5)]
    result = build_training_set(pool, n1=2, n2=3, leave_positive_for_pair=True)
    assert [t.solution for t in result.u1] == ["p1", "p2"]
    assert [(p.solution, n.solution) for p, n in result.u2] == [("p3", "n1"), ("p4", "n2"), ("p5", "n3")]


def test_single_positive_goes_to_u1_and_inputs_without_positives_give_nothing():
    pool = [traj("x", "p1", 1, -1.0), traj("x", "n1", 0, -1.0), traj("y", "n", 0, -0.1)]
    result = build_training_set(pool, n1=10, n2=2, leave_positive_for_pair=True)
    assert [(t.example_id, t.solution) for t in result.u1] == [("x", "p1")]
    assert result.u2 == []


def test_random_rank_is_seeded():
    pool = [traj("x", f"p{i}", 1, -i) for i in range(8)]
    first = build_training_set(pool, 3, 0, False, rank_by="random", seed=1).u1
    again = build_training_set(pool, 3, 0, False, rank_by="random", seed=1).u1
    assert first == again


def test_preference_pairs_reuse_positives_and_skip_inputs_without_one():
    pool = [
        traj("x", "p1", 1, -0.1),
        traj("x", "p2", 1, -0.5),
        traj("x", "n1", 0, -0.2),
        traj("x", "n2", 0, -0.3),
        traj("x", "n3", 0, -0.9),
        traj("y", "n", 0, -0.1),  # no positive: no pair
    ]
    pairs = preference_pairs(pool, n2=3)
    # Negatives by self-reward n1, n2, n3; positives cycle p1, p2, p1.
    assert [(p.solution, n.solution) for p, n in pairs] == [("p1", "n1"), ("p2", "n2"), ("p1", "n3")]
    assert [(p.solution, n.solution) for p, n in preference_pairs(pool, n2=1)] == [("p1", "n1")]


def test_an_empty_negative_ranks_last_despite_its_zero_self_reward():
    # The empty completion's self-reward is 0.0 (a mean over no tokens), above every real one.
    empty, blank, real = traj("x", "", 0, 0.0), traj("x", "  \n", 0, 0.0), traj("x", "return 1", 0, -0.5)
    positives = [
        traj("x", "def solution():\n    return 12", 1, -0.2),
        traj("x", "def solution():\n    return 6 * 2", 1, -0.3),
    ]
    for rank_by in ("self_reward", "random"):
        training = build_training_set(
            [empty, blank, real, *positives], n1=10, n2=1, leave_positive_for_pair=True, rank_by=rank_by
        )
        assert [negative.solution for _, negative in training.u2] == ["return 1"]
