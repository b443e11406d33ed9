"""EA and STB (paper appendix B) on hand-computed cases."""

import pytest

from envisions_ray.data import task_input
from envisions_ray.metrics import (
    accuracy,
    accuracy_interval,
    executable_rate,
    exploratory_ability,
    parse_rate,
    per_task_accuracy,
    stability,
)
from envisions_ray.types import Outcome


def test_paper_worked_example():
    # Iteration 1 solves 1,000 inputs; iteration 2 solves 1,200, of which 800 were solved before.
    first = {f"a{i}" for i in range(1000)}
    second = {f"a{i}" for i in range(800)} | {f"b{i}" for i in range(400)}
    assert exploratory_ability([first, second]) == pytest.approx(0.4)
    assert stability([first, second]) == pytest.approx(0.8)


def test_three_iterations_accumulate_over_the_union_of_earlier_ones():
    m1, m2, m3 = {"a", "b"}, {"b", "c"}, {"a", "d", "e"}
    # i=2: before={a,b}: new {c} -> 1/2, kept {b} -> 1/2. i=3: before={a,b,c}: new {d,e} -> 2/3, kept {a} -> 1/3.
    assert exploratory_ability([m1, m2, m3]) == pytest.approx(1 / 2 + 2 / 3)
    assert stability([m1, m2, m3]) == pytest.approx(1 / 2 + 1 / 3)


def test_nothing_solved_before_contributes_nothing():
    assert exploratory_ability([set(), {"a"}]) == 0.0
    assert stability([set(), {"a"}, {"a"}]) == pytest.approx(1.0)


def test_accuracy():
    assert accuracy([1, 0, 1, 1]) == 0.75
    assert accuracy([]) == 0.0


def test_success_per_task_by_hand():
    inputs = [
        task_input("click-test", 0),
        task_input("enter-text", 0),
        task_input("click-test", 1),
        task_input("enter-text", 1),
        task_input("enter-text", 2),
    ]
    rewards = [1, 0, 1, 1, 0]
    assert per_task_accuracy(inputs, [Outcome(r) for r in rewards]) == {
        "click-test": 1.0,
        "enter-text": pytest.approx(1 / 3),
    }
    with pytest.raises(ValueError):  # an outcome per input, or the table is wrong
        per_task_accuracy(inputs, [Outcome(1)])


def test_parsed_counts_programs_that_failed_to_run_but_not_those_that_did_not_parse():
    errors = ["", "parse error: line 1: 'x' is not an atom", "unsafe variable", "", "timeout after 1s"]
    assert parse_rate(errors) == 4 / 5
    assert executable_rate(errors) == 2 / 5
    assert parse_rate([]) == 0.0


@pytest.mark.parametrize(
    "successes, n, low, high",
    [
        (0, 4, 0.0, 3.8415 / 7.8415),  # k = 0: the upper end is z^2 / (n + z^2)
        (4, 4, 4 / 7.8415, 1.0),
        # k = 5, n = 10: centre 0.5, half-width z * sqrt(0.025 + z^2 / 400) / (1 + z^2 / 10) = 0.26341
        (5, 10, 0.23659, 0.76341),
    ],
)
def test_the_accuracy_interval_is_wilsons(successes, n, low, high):
    rewards = [1] * successes + [0] * (n - successes)
    assert accuracy_interval(rewards) == pytest.approx((low, high), abs=1e-4)
