"""How the grounded-answer check (envs/logic_grounded.py) judges faithful and degenerate programs.

    python benchmarks/bench_logic_grounded.py [--data ../shared/data/proofwriter_dev.jsonl]

Faithful: the GPT-4-written `logic_program`s of ProofWriter dev whose clingo answer is the gold
label; the check should accept them all. Degenerate, built from each program that parses:
- "query copied": the rules dropped and the query added to the facts, so the answer is the copy;
- "predicate left out": every fact and rule that uses the query's predicate dropped (Unknown).
The check should reject them all, except where the degenerate program is itself a faithful
translation: a copied statement that the context states (depth 0), a left-out predicate that the
context never mentions. Those are counted apart as "exempt".
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

from envisions_ray.envs.logic_engine import LogicSettings
from envisions_ray.envs.logic_grounded import silent_on, states, why_ungrounded
from envisions_ray.envs.logic_program import LogicError, Program, answer_in, derive, parse

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "proofwriter_dev.jsonl"
LABELS = ("True", "False", "Unknown")


@dataclass(frozen=True)
class Record:
    context: str
    question: str
    label: str
    program: Program


def query_copied(program: Program) -> Program:
    return replace(program, facts=(*program.facts, program.query), rules=())


def predicate_left_out(program: Program) -> Program:
    def keeps(atoms) -> bool:
        return not any(atom.predicate.lower() == program.query.predicate.lower() for atom in atoms)

    return replace(
        program,
        facts=tuple(fact for fact in program.facts if keeps([fact])),
        rules=tuple(rule for rule in program.rules if keeps([*rule.body, rule.head])),
    )


def exempt(kind: str, record: Record) -> bool:
    """The degenerate program is a faithful translation too: the check accepts it by design."""
    if kind == "query copied":
        return states(record.context, record.question, negated=False)
    return silent_on(record.context, record.question)


DEGENERATE = {"query copied": query_copied, "predicate left out": predicate_left_out}


def judge(record: Record, program: Program, timeout_s: float) -> tuple[str, bool]:
    """(clingo's answer, whether the check accepts it); ("", False) for a program clingo refuses."""
    try:
        answered = answer_in(program.query, derive(program, timeout_s))
        return answered, why_ungrounded(program, record.context, record.question, timeout_s) is None
    except LogicError:
        return "", False


def faithful_table(records: list[Record], timeout_s: float) -> None:
    right, accepted = Counter(), Counter()
    for record in records:
        answered, grounded = judge(record, record.program, timeout_s)
        if answered == record.label:
            right[answered] += 1
            accepted[answered] += grounded
    print(f"{'faithful (right by clingo)':<26} {'right':>6} {'accepted':>9} {'share':>7}")
    for label in LABELS:
        print(f"{label:<26} {right[label]:>6} {accepted[label]:>9} {accepted[label] / max(1, right[label]):>7.1%}")
    total_right, total_accepted = sum(right.values()), sum(accepted.values())
    print(f"{'all':<26} {total_right:>6} {total_accepted:>9} {total_accepted / max(1, total_right):>7.1%}")


def degenerate_table(records: list[Record], timeout_s: float) -> None:
    print(f"{'degenerate':<20} {'exempt':>7} {'accepted':>9} {'others':>7} {'rejected':>9} {'share':>7} {'right':>6}")
    for kind, build in DEGENERATE.items():
        counts = Counter()
        for record in records:
            answered, grounded = judge(record, build(record.program), timeout_s)
            group = "exempt" if exempt(kind, record) else "other"
            counts[group] += 1
            counts[group, grounded] += 1
            counts[group, "right", grounded] += answered == record.label
        others, rejected = counts["other"], counts["other", False]
        print(
            f"{kind:<20} {counts['exempt']:>7} {counts['exempt', True]:>9} {others:>7} {rejected:>9}"
            f" {rejected / max(1, others):>7.1%} {counts['other', 'right', False]:>6}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEV, help="JSONL with context, question, answer, logic_program")
    args = parser.parse_args()
    if not args.data.is_file():
        parser.error(f"no such file: {args.data}")
    timeout_s = LogicSettings().timeout_s
    rows = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    records = []
    for row in rows:
        try:
            records.append(Record(row["context"], row["question"], row["answer"], parse(row["logic_program"])))
        except LogicError:
            continue  # not a program: nothing to judge
    print(f"{len(records)} of {len(rows)} GPT-4 programs parse\n")
    faithful_table(records, timeout_s)
    print()
    degenerate_table(records, timeout_s)
    print("\nexempt: the degenerate program is a faithful translation too (accepted: how many the check accepts);")
    print("others: the rest, of which 'rejected' are rejected; right: rejected ones whose answer is the gold")
    print("label, the positives the check takes away.")


if __name__ == "__main__":
    main()
