"""Confusion matrices for eval sets whose answers are labels (logic: True / False / Unknown).

Accuracy alone hides a policy that answers one label to everything: its recall per label shows it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

# What a solution that gave no label (it did not parse, failed or timed out) counts as.
NO_ANSWER = "none"
# An eval set is label-valued when its expected answers take at most this many values; GSM8K's
# take hundreds and web episodes have none.
MAX_LABELS = 5


@dataclass(frozen=True)
class Confusion:
    labels: tuple[str, ...]  # the expected answers, sorted
    counts: Counter[tuple[str, str]]  # (expected, predicted) -> answers; predicted may be NO_ANSWER

    @property
    def predicted(self) -> tuple[str, ...]:
        """The columns: every expected label, then any other answer given, then NO_ANSWER."""
        others = sorted({p for _, p in self.counts} - set(self.labels) - {NO_ANSWER})
        return (*self.labels, *others, NO_ANSWER)

    def expected(self, label: str) -> int:
        return sum(count for (expected, _), count in self.counts.items() if expected == label)

    def recall(self, label: str) -> float:
        """The share of the items labelled `label` that the policy answered `label`."""
        total = self.expected(label)
        return self.counts[label, label] / total if total else 0.0


def label_valued(expected: Iterable[str]) -> bool:
    values = set(expected) - {""}  # web episodes store no expected answer
    return 0 < len(values) <= MAX_LABELS


def confusion(pairs: Iterable[tuple[str, str]]) -> Confusion:
    """From (expected, predicted) answers; a predicted "" (no answer) counts as NO_ANSWER."""
    counts = Counter((expected, predicted or NO_ANSWER) for expected, predicted in pairs)
    return Confusion(tuple(sorted({expected for expected, _ in counts})), counts)
