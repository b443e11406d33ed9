"""How many of ProofWriter dev's GPT-4 programs the logic grammar accepts whole, at what bounds, in
how many tokens.

    python benchmarks/bench_logic_grammar.py [--data ../shared/data/proofwriter_dev.jsonl]
        [--model qwen2.5-coder-0.5b] [--budget 640] [--before 6,6,3,2]

The programs are the GPT-4 `logic_program`s of ProofWriter dev (depth-5 theories), in the surface
form the grammar writes: `:::` comments stripped, no blank lines between sections, atoms written
`Name(a, b, Value)` with one space after each comma, and entities capitalised (34 programs write
`cat` in some atoms and `Cat` in others; the engine reads both as one constant). Predicate names
are left as GPT-4 wrote them: 11 programs use two-word ones (NotSmart) that the grammar's one-word
names refuse. Tokens are the model's tokenizer's: a program's, with the "\\n\\n" that stops
generation, as it follows the zero-shot prompt (as the trainer tokenises it).

Acceptance is xgrammar's own: the prompt file's grammar, and the same grammar with the `--before`
bounds (declarations, facts, rules, conditions a rule), compiled over the model's vocabulary, each
program's tokens fed to a GrammarMatcher, then the stop token. The sweep below it predicts the
share from the programs' counts (checked against xgrammar for the two grammars above) and lists,
for the bounds that hold at least 90 %, shortest first, the longest program they allow: the
length of a program whose every section runs to its bound with lines of median length, which is
what a model that repeats a line until the grammar stops it writes.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xgrammar
from transformers import AutoTokenizer

from envisions_ray.envs.logic_engine import LogicEngine
from envisions_ray.model import resolve_model_path
from envisions_ray.prompts import PromptBook
from envisions_ray.tokens import encode_prompt, target_ids
from envisions_ray.types import Example

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "proofwriter_dev.jsonl"
ATOM = re.compile(r"^([A-Za-z_]\w*)\s*\((.*)\)$")
NAME = re.compile(r"[A-Z][a-z]{1,7}")  # the grammar's `name ::= word`
ENTITY = re.compile(r"([A-Z][a-z]{1,7}){1,2}")  # `entity ::= word word?`
STOP = "\n\n"  # generator.stop: a blank line ends a program


@dataclass(frozen=True)
class Bounds:
    declarations: int
    facts: int
    rules: int
    conditions: int

    @classmethod
    def parse(cls, text: str) -> "Bounds":
        return cls(*(int(part) for part in text.split(",")))

    def __str__(self) -> str:
        return f"{self.declarations} / {self.facts} / {self.rules} / {self.conditions}"


@dataclass
class Measured:
    id: str
    text: str  # normalised, without the stop
    declarations: int
    facts: int
    rules: int
    conditions: int  # the most in one rule
    arity: int  # the most arguments of one atom, its value not counted
    misfit: str  # why the grammar cannot write it whatever its bounds; "" when it can
    tokens: int = 0  # with the stop
    line_tokens: tuple[list[int], ...] = ()  # of each declaration, fact and rule line, with its newline

    def within(self, bounds: Bounds) -> bool:
        return (
            not self.misfit
            and 1 <= self.declarations <= bounds.declarations
            and 1 <= self.facts <= bounds.facts
            and self.rules <= bounds.rules
            and self.conditions <= bounds.conditions
        )


def atom(text: str) -> tuple[str, list[str], str]:
    """`Name(a, b, Value)` as the grammar spells it, its arguments, and why the grammar cannot
    write it ("" when it can)."""
    match = ATOM.match(text.strip())
    if match is None:  # 6 programs negate an atom with `!`, which neither grammar nor parser has
        return text.strip(), [], "an atom negated with `!`"
    name, arguments = match.group(1), [a.strip() for a in match.group(2).split(",")]
    *terms, value = arguments
    terms = [t if t.startswith("$") else t[:1].upper() + t[1:] for t in terms]
    misfit = ""
    if NAME.fullmatch(name) is None:
        misfit = "a predicate name that is not one word of 2-8 letters (NotSmart)"
    elif not all(t.startswith("$") or ENTITY.fullmatch(t) for t in terms):
        misfit = "an entity that is not one or two words of 2-8 letters"
    return f"{name}({', '.join([*terms, value])})", terms, misfit


def normalise(record: dict) -> Measured:
    """The record's program in the grammar's surface form, and its counts."""
    section, lines, counts, conditions, arity, misfit = None, [], {}, 0, 0, ""
    for raw in record["logic_program"].splitlines():
        line = raw.split(":::", 1)[0].strip()
        if not line:
            continue  # the grammar has no blank lines: one would stop generation
        if line.endswith(":"):
            section = line[:-1]
            lines.append(line)
            continue
        counts[section] = counts.get(section, 0) + 1
        if section == "Rules":
            body, head = line.split(">>>")
            atoms = [atom(a) for a in body.split("&&")]
            conditions = max(conditions, len(atoms))
            atoms.append(atom(head))
            lines.append(" && ".join(a[0] for a in atoms[:-1]) + " >>> " + atoms[-1][0])
        else:
            atoms = [atom(line)]
            lines.append(atoms[0][0])
        arity = max([arity, *(len(a[1]) for a in atoms)])
        misfit = misfit or next((a[2] for a in atoms if a[2]), "")
    return Measured(
        record["id"],
        "\n".join(lines),
        counts.get("Predicates", 0),
        counts.get("Facts", 0),
        counts.get("Rules", 0),
        conditions,
        arity,
        misfit,
    )


def with_bounds(grammar: str, bounds: Bounds) -> str:
    """The grammar with its repetitions bounded as `bounds` says; everything else as it is."""
    for rule, low, high in (
        ("declaration", 1, bounds.declarations),
        ("fact", 1, bounds.facts),
        ("rule", 0, bounds.rules),
    ):
        grammar, count = re.subn(rf"\b{rule}\{{\d+,\d+\}}", f"{rule}{{{low},{high}}}", grammar)
        assert count == 1, f"the grammar has no bounded `{rule}{{m,n}}` in its root rule"
    conditions = '(" && " atom)?' if bounds.conditions == 2 else f'(" && " atom){{0,{bounds.conditions - 1}}}'
    grammar, count = re.subn(r'(rule ::= atom )\(" && " atom\)(\?|\{0,\d+\})', rf"\g<1>{conditions}", grammar)
    assert count == 1, 'the grammar\'s rule is not `atom (" && " atom)... " >>> " atom`'
    return grammar


def bounds_of(grammar: str) -> Bounds:
    def high(rule: str) -> int:
        return int(re.search(rf"\b{rule}\{{\d+,(\d+)\}}", grammar).group(1))

    more = re.search(r'rule ::= atom \(" && " atom\)(\?|\{0,(\d+)\})', grammar)
    return Bounds(high("declaration"), high("fact"), high("rule"), 1 + (int(more.group(2)) if more.group(2) else 1))


def accepted(compiled, stop_id: int, ids: list[list[int]]) -> list[bool]:
    """Whether the grammar takes each program's tokens, then the stop token (the program may end)."""
    results = []
    for program_ids in ids:
        matcher = xgrammar.GrammarMatcher(compiled)
        results.append(all(matcher.accept_token(t) for t in program_ids) and matcher.accept_token(stop_id))
    return results


def percentiles(values) -> str:
    p50, p90, p95 = np.percentile(values, [50, 90, 95])
    return f"{p50:.0f} | {p90:.0f} | {p95:.0f} | {max(values):.0f}"


def share(flags) -> str:
    flags = list(flags)
    return f"{100 * sum(flags) / len(flags):.1f} % ({sum(flags)}/{len(flags)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEV, help="JSONL with context, question and logic_program")
    parser.add_argument("--model", default="qwen2.5-coder-0.5b", help="whose tokenizer counts the tokens")
    parser.add_argument("--prompt-file", type=Path, default=Path("conf/prompts/logic.yaml"))
    parser.add_argument("--budget", type=int, default=640, help="max_new_tokens to check the programs against")
    parser.add_argument("--before", type=Bounds.parse, default=Bounds(6, 6, 3, 2), help="bounds to compare with")
    parser.add_argument("--target", type=float, default=0.9, help="share the sweep's bounds must hold")
    args = parser.parse_args()
    if not args.data.is_file():
        parser.error(f"no such file: {args.data}")

    records = [json.loads(line) for line in args.data.read_text().splitlines() if line.strip()]
    programs = [normalise(r) for r in records]
    book = PromptBook.load(args.prompt_file)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(args.model, "~/.cache/envisions-ray"))
    problems = [LogicEngine.describe(Example(r["id"], r["question"], r["answer"], meta=r)) for r in records]

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    ids = [target_ids(tokenizer, book.explore(q), p.text + STOP) for q, p in zip(problems, programs)]
    for program, program_ids in zip(programs, ids):
        program.tokens = len(program_ids)
        kinds = {"Predicates": [], "Facts": [], "Rules": []}
        section = None
        for line in program.text.splitlines():
            if line.endswith(":"):
                section = line[:-1]
            elif section in kinds:
                kinds[section].append(count(line + "\n"))
        program.line_tokens = tuple(kinds.values())

    lines = [[n for p in programs for n in p.line_tokens[k]] for k in range(3)]  # every line of a kind
    shipped = bounds_of(book.grammar)
    info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer))
    compiler = xgrammar.GrammarCompiler(info, cache_enabled=False)
    stop_id = info.stop_token_ids[0]
    verdicts = {}
    for label, bounds in (("before", args.before), ("shipped", shipped)):
        start = time.perf_counter()
        compiled = compiler.compile_grammar(with_bounds(book.grammar, bounds))
        compile_s = time.perf_counter() - start
        verdicts[label] = (bounds, accepted(compiled, stop_id, ids), compile_s)
    demo = [target_ids(tokenizer, book.explore(s.problem), s.solution + STOP) for s in book.shots]
    demo_held = accepted(compiler.compile_grammar(book.grammar), stop_id, demo)

    theories = len({r["context"] for r in records})
    print(
        f"{len(programs)} GPT-4 programs ({theories} theories) of {args.data.name}, normalised; "
        f"tokens of the {args.model} tokenizer.\n"
    )
    print("| per program | p50 | p90 | p95 | max |")
    print("|---|---|---|---|---|")
    for label, values in (
        ("predicates", [p.declarations for p in programs]),
        ("facts", [p.facts for p in programs]),
        ("rules", [p.rules for p in programs]),
        ("conditions in a rule (most)", [p.conditions for p in programs]),
        ("arity (most, value not counted)", [p.arity for p in programs]),
        ("tokens, with the stop", [p.tokens for p in programs]),
        *((f"tokens of a {kind} line", lines[k]) for k, kind in enumerate(("declaration", "fact", "rule"))),
    ):
        print(f"| {label} | {percentiles(values)} |")
    print(f"\nIn a form the grammar can write, whatever its bounds: {share(not p.misfit for p in programs)}")
    for misfit in sorted({p.misfit for p in programs} - {""}):
        print(f"- not with {misfit}: {sum(p.misfit == misfit for p in programs)}")

    print(
        "\n| grammar | bounds: declarations / facts / rules / conditions | accepted by xgrammar "
        "| within bounds, counted | accepted and within --budget | compile |"
    )
    print("|---|---|---|---|---|---|")
    for label, (bounds, flags, compile_s) in verdicts.items():
        counted = [p.within(bounds) for p in programs]
        if counted != flags:
            disagree = [p.id for p, a, b in zip(programs, flags, counted) if a != b]
            print(f"<!-- xgrammar and the counts disagree on {len(disagree)}: {disagree[:5]} -->")
        fit = [a and p.tokens <= args.budget for p, a in zip(programs, flags)]
        print(
            f"| {label} | {bounds} | {share(flags)} | {share(counted)} | {share(fit)} at {args.budget} "
            f"| {1000 * compile_s:.0f} ms |"
        )
    print(f"\nThe shipped grammar accepts the demonstrations: {share(demo_held)}, {[len(d) for d in demo]} tokens")

    print("\n| max_new_tokens | programs within it | accepted by the shipped grammar and within it |")
    print("|---|---|---|")
    for budget in sorted({320, 384, 448, 512, 576, 640, 768, args.budget}):
        fit = [a and p.tokens <= budget for p, a in zip(programs, verdicts["shipped"][1])]
        print(f"| {budget} | {share(p.tokens <= budget for p in programs)} | {share(fit)} |")

    # The longest program bounds allow, as a model that repeats lines writes it: every section to its
    # bound, the headers and a query, its lines of the median length of their kind in the dev
    # programs, or of the longest length.
    fixed = count("Predicates:\nFacts:\nRules:\nQuery:\n") + count("Kind(Charlie, True)" + STOP)

    def longest(bounds: Bounds, pick) -> float:
        counts = (bounds.declarations, bounds.facts, bounds.rules)
        return fixed + sum(n * pick(lines[k]) for k, n in enumerate(counts))

    def row(bounds: Bounds, note: str = "") -> str:
        held = share(p.within(bounds) for p in programs)
        fit = share(p.within(bounds) and p.tokens <= args.budget for p in programs)
        lengths = f"{longest(bounds, np.median):.0f} / {longest(bounds, max):.0f}"
        return f"| {bounds}{note} | {held} | {fit} | {lengths} |"

    candidates = []
    for d, f, r in itertools.product(range(4, 13), range(4, 25), range(0, 21)):
        bounds = Bounds(d, f, r, 2)
        if sum(p.within(bounds) for p in programs) >= args.target * len(programs):
            candidates.append((longest(bounds, np.median), bounds))
    candidates.sort(key=lambda c: c[0])
    print(
        f"\nBounds that hold at least {100 * args.target:.0f} % of the programs, by the longest program they allow "
        f"(lines of the median / longest length: declaration {np.median(lines[0]):.0f} / {max(lines[0])}, "
        f"fact {np.median(lines[1]):.0f} / {max(lines[1])}, rule {np.median(lines[2]):.0f} / {max(lines[2])} "
        f"tokens); then the shipped bounds less one line of each kind, and the bounds before.\n"
    )
    print(
        "| bounds: declarations / facts / rules / conditions | within bounds | and within --budget "
        "| longest program at the bounds, median / longest lines |"
    )
    print("|---|---|---|---|")
    for _, bounds in candidates[:5]:
        print(row(bounds, " (shipped)" if bounds == shipped else ""))
    for k, kind in enumerate(("declaration", "fact", "rule")):
        fewer = Bounds(*(n - (i == k) for i, n in enumerate(vars(shipped).values())))
        print(row(fewer, f" (shipped, one {kind} fewer)"))
    print(row(args.before, " (before)"))

    one_shot = [len(encode_prompt(tokenizer, book.explore(q, 1))) for q in problems]
    zero_shot = [len(encode_prompt(tokenizer, book.explore(q))) for q in problems]
    refine = [len(encode_prompt(tokenizer, book.refine(q, p.text))) for q, p in zip(problems, programs)]
    tokens = [p.tokens for p in programs]
    print("\n| prompt and sequence, tokens | p50 | p90 | p95 | max |")
    print("|---|---|---|---|---|")
    for label, values in (
        ("1-shot exploration prompt", one_shot),
        ("1-shot prompt + program", [a + b for a, b in zip(one_shot, tokens)]),
        (f"1-shot prompt + --budget ({args.budget})", [a + args.budget for a in one_shot]),
        ("0-shot prompt + program + EOS (a training example)", [a + b + 1 for a, b in zip(zero_shot, tokens)]),
        ("refine prompt (the program as the solution)", refine),
        ("refine prompt + program + EOS (a refinement example)", [a + b + 1 for a, b in zip(refine, tokens)]),
        (
            f"refine prompt + program, both --budget ({args.budget}) long, + EOS",
            [a - b + 2 * args.budget + 1 for a, b in zip(refine, tokens)],
        ),
    ):
        print(f"| {label} | {percentiles(values)} |")


if __name__ == "__main__":
    main()
