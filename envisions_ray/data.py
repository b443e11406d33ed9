"""Datasets -> lists of `Example`.

A dataset is named by a spec string:
- `builtin:arith:train` / `builtin:arith:eval`: seeded arithmetic word problems (1-3 operations)
  generated here, so the quickstart downloads nothing. The two splits are disjoint by construction.
  `builtin:story:SPLIT`: multi-step problems of many shapes (`word_problems.py`), a curriculum.
- a path to JSONL with `question` and `answer` (GSM8K's `... #### 72` answers are reduced to `72`),
  and an `id`: by default the file's path and line, `PATH:LINE`, so that two files never share one.
  Other fields stay with the example for its environment: ProofWriter's `context` (the theory)
  is read by the logic environment.
- `ruletaker:PATH`: AllenAI's RuleTaker / ProofWriter release format (`meta-*.jsonl`), one theory
  per line with its questions; each question becomes one example, its theory the `context`.
- `hf:NAME[:CONFIG]:SPLIT`: a Hugging Face `datasets` dataset with `question`/`answer` columns
  (needs network access to the hub).
- `tasks:TASKS:FIRST_SEED`: generated inputs, one per (task, seed), for environments that make
  their own instances (MiniWoB++). TASKS is a comma list or a text file with one task per line;
  `size` counts seeds per task: FIRST_SEED, FIRST_SEED + 1, ... With `data.seed_stride`,
  iteration i moves every seed by i * stride (`for_iteration`), so each iteration meets new inputs.

Any spec but `tasks:` may end in a Python slice, `[START:STOP]`, taken before `size`: a dev split
is `gsm8k_train.jsonl[-500:]` and the training set that never meets it `gsm8k_train.jsonl[:-500]`.

Specs joined by ` + ` are a mix (a curriculum): their examples interleave one by one, so the first
`size` take every part in an equal share.

Within one set (the training set, each eval set) every id is unique: the candidate pool keeps an
input's samples under its id, so a second input with that id would lose its samples to the first.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import random
from dataclasses import replace
from pathlib import Path

from envisions_ray.errors import UserError
from envisions_ray.types import Example
from envisions_ray.word_problems import arithmetic_problem, story_problem

# One problem in EVAL_SHARE_PER_TEN goes to the eval split, decided by a hash of its text.
EVAL_SHARE_PER_TEN = 3
SPLITS = ("train", "eval")
MIX = " + "
RULETAKER_LABELS = {"true": "True", "false": "False", "unknown": "Unknown"}


def normalise_answer(raw: str) -> str:
    """GSM8K style: the number after '####', commas removed; otherwise the stripped text."""
    answer = raw.split("####")[-1] if "####" in raw else raw
    return answer.strip().replace(",", "")


def finite_answer(answer: str, where: str) -> str:
    """The expected answer, unless it is a number that is not finite: nan or inf, which no solution
    can be scored against (math compares numbers within a tolerance)."""
    try:
        number = float(answer)
    except ValueError:  # text (logic's True / False / Unknown): compared as it is
        return answer
    if not math.isfinite(number):
        raise UserError(f"{where}: the answer {answer!r} is not a finite number")
    return answer


def load_examples(spec: str, size: int | None = None, seed: int = 0) -> list[Example]:
    """Resolve a dataset spec. `size` keeps the first `size` examples (all when None); an id
    given twice among them is refused, naming both places."""
    examples = _examples(spec, size, seed)
    first_of: dict[str, Example] = {}
    for example in examples:
        first = first_of.setdefault(example.id, example)
        if first is not example:
            raise UserError(
                f"dataset '{spec}': id '{example.id}' is given twice, at {first.origin} and at {example.origin}; "
                "every input needs an id of its own"
            )
    return examples


def _examples(spec: str, size: int | None, seed: int) -> list[Example]:
    if MIX in spec:
        parts = [_examples(part.strip(), size, seed) for part in spec.split(MIX)]
        mixed = [x for group in itertools.zip_longest(*parts) for x in group if x is not None]
        return mixed if size is None else mixed[:size]
    if spec.startswith("tasks:"):
        return _task_seeds(spec, size)
    base, part = split_slice(spec)
    if part == slice(None):
        return _load(spec, size, seed)
    examples = _load(base, None, seed)[part]
    if not examples:
        raise UserError(f"dataset spec '{spec}': the slice holds no examples")
    return examples if size is None else examples[:size]


def split_slice(spec: str) -> tuple[str, slice]:
    """`PATH[START:STOP]` -> (PATH, slice(START, STOP)); a spec without one -> (spec, slice(None))."""
    if not spec.endswith("]") or "[" not in spec:
        return spec, slice(None)
    base, _, bounds = spec[:-1].rpartition("[")
    parts = bounds.split(":")
    if len(parts) != 2 or not all(p.strip().lstrip("-").isdigit() for p in parts if p.strip()):
        raise UserError(f"dataset spec '{spec}': the slice must be [START:STOP] with integers, e.g. [:-500]")
    start, stop = (int(p) if p.strip() else None for p in parts)
    return base, slice(start, stop)


def _load(spec: str, size: int | None, seed: int) -> list[Example]:
    """The first `size` examples of a spec without a slice (all when None)."""
    if spec.startswith("builtin:"):
        examples = _builtin(spec, size or 0, seed)
    elif spec.startswith("hf:"):
        examples = _hugging_face(spec)
    elif spec.startswith("ruletaker:"):
        examples = load_ruletaker(Path(spec.removeprefix("ruletaker:")))
    else:
        examples = load_jsonl(Path(spec))
    return examples if size is None else examples[:size]


def _task_seeds(spec: str, seeds_per_task: int | None) -> list[Example]:
    parts = spec.split(":")
    if len(parts) != 3 or not parts[2].lstrip("-").isdigit():
        raise UserError(f"dataset spec '{spec}' must be tasks:TASKS:FIRST_SEED (TASKS a comma list or a file)")
    listing, first_seed = Path(parts[1]), int(parts[2])
    if listing.is_file():
        lines = (line.split("#")[0].strip() for line in listing.read_text(encoding="utf-8").splitlines())
        tasks = [line for line in lines if line]
    else:
        tasks = [task.strip() for task in parts[1].split(",") if task.strip()]
    if not tasks or seeds_per_task is None or seeds_per_task < 1:
        raise UserError(f"dataset '{spec}' needs at least one task and a size (seeds per task) of 1 or more")
    seeds = range(first_seed, first_seed + seeds_per_task)
    return [replace(task_input(task, seed), origin=spec) for task in tasks for seed in seeds]


def task_input(task: str, seed: int) -> Example:
    """The input (task, seed); its id names both, so every iteration's inputs are new pool rows."""
    return Example(f"{task}@{seed}", task, "", {"task": task, "seed": seed})


def for_iteration(examples: list[Example], iteration: int, seed_stride: int) -> list[Example]:
    """Iteration i's inputs: (task, seed) inputs move to seed + i * stride; other inputs stay."""
    if seed_stride == 0:
        return examples
    return [task_input(x.task, x.meta["seed"] + iteration * seed_stride) if "seed" in x.meta else x for x in examples]


def problem_key(example: Example) -> tuple[str, str]:
    """What makes two problems the same: the question on the same context (ProofWriter repeats
    questions across theories)."""
    return " ".join(example.question.split()), str(example.meta.get("context", ""))


def seeded_training_ids(examples: list[Example], iterations: int, seed_stride: int) -> set[str]:
    """The (task, seed) inputs some iteration trains on: what an eval set must never contain."""
    return {x.id for i in range(iterations) for x in for_iteration(examples, i, seed_stride) if "seed" in x.meta}


def absolute_spec(spec: str, start: Path) -> str:
    """The spec with each file it names as an absolute path, relative ones taken from `start`;
    builtin:, hf: and task names stay as they are."""
    if MIX in spec:
        return MIX.join(absolute_spec(part.strip(), start) for part in spec.split(MIX))
    if spec.startswith(("builtin:", "hf:")):
        return spec
    if spec.startswith("tasks:"):
        parts = spec.split(":")
        # TASKS is a file only where one exists; otherwise a comma list of task names.
        if len(parts) == 3 and (start / parts[1]).is_file():
            parts[1] = os.path.join(start, parts[1])
        return ":".join(parts)
    base, _ = split_slice(spec)
    kind = "ruletaker:" if base.startswith("ruletaker:") else ""
    return kind + os.path.normpath(os.path.join(start, base.removeprefix(kind))) + spec[len(base) :]


def _records(path: Path):
    """(line number, JSON object) for each non-blank line of a dataset; errors name the file and line."""
    if not path.is_file():
        raise UserError(f"dataset not found: {path}")
    yield from json_records(path)


def json_records(path: Path):
    """(line number, JSON object) for each non-blank line of a JSONL file; errors name the file and line."""
    with path.open("rb") as lines:  # decoded line by line, so a bad byte is reported at its line
        for number, raw in enumerate(lines, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise UserError(f"{path}:{number}: not UTF-8 ({err.reason} at byte {err.start})") from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise UserError(f"{path}:{number}: a record must be a JSON object")
            yield number, record


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """One JSON object a line, as `json_records` reads them back; the directory is made if need be."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _json_type(value) -> str:
    names = {type(None): "null", bool: "a boolean", list: "a list", dict: "an object"}
    return names.get(type(value), type(value).__name__)


def text_field(record: dict, key: str, where: str, default: str | None = None) -> str:
    """A question or answer as text: a string, or a number written as one (JSON `72` is "72").

    null, booleans, lists and objects are refused: str(None) is "None", which `return None` would match.
    """
    if key not in record and default is not None:
        return default
    value = record.get(key)
    if isinstance(value, str) or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return str(value)
    found = "missing" if key not in record else _json_type(value)
    raise UserError(f"{where}: '{key}' must be a string or a number, not {found}")


def load_jsonl(path: Path) -> list[Example]:
    examples = []
    for number, record in _records(path):
        where = f"{path}:{number}"
        question, answer = text_field(record, "question", where), text_field(record, "answer", where)
        example_id = text_field(record, "id", where, default=where)
        meta = {k: v for k, v in record.items() if k not in ("id", "question", "answer")}
        examples.append(Example(example_id, question, finite_answer(normalise_answer(answer), where), meta, where))
    if not examples:
        raise UserError(f"dataset is empty: {path}")
    return examples


def load_ruletaker(path: Path) -> list[Example]:
    """One example per question; answers true / false / "Unknown" become True / False / Unknown."""
    examples = []
    for number, record in _records(path):
        questions = record.get("questions")
        if not isinstance(record.get("theory"), str) or not isinstance(questions, (dict, list)):
            raise UserError(f"{path}:{number}: a RuleTaker record needs 'theory' and 'questions'")
        # The release keys questions Q1, Q2, ...; some conversions keep them as a list.
        items = questions.items() if isinstance(questions, dict) else enumerate(questions, start=1)
        for key, question in items:
            if (
                not isinstance(question, dict)
                or not isinstance(question.get("question"), str)
                or "answer" not in question
            ):
                raise UserError(f"{path}:{number}: question {key} needs a 'question' string and an 'answer'")
            label = RULETAKER_LABELS.get(str(question["answer"]).lower())
            if label is None:
                raise UserError(
                    f"{path}:{number}: question {key} has answer {question['answer']!r}, not true, false or Unknown"
                )
            meta = {"context": record["theory"], "depth": question.get("QDep")}
            where = f"{path}:{number}"
            example_id = f"{record.get('id', where)}-{key}"
            examples.append(Example(example_id, question["question"], label, meta, where))
    if not examples:
        raise UserError(f"dataset is empty: {path}")
    return examples


def _hugging_face(spec: str) -> list[Example]:
    parts = spec.split(":")[1:]
    if len(parts) not in (2, 3):
        raise UserError(f"dataset spec '{spec}' must be hf:NAME[:CONFIG]:SPLIT")
    name, config, split = (parts[0], None, parts[1]) if len(parts) == 2 else parts
    import datasets

    try:
        rows = datasets.load_dataset(name, config, split=split)
    except Exception as err:  # offline, unknown name or split: the library's own message
        raise UserError(f"dataset '{spec}' could not be loaded: {str(err).splitlines()[0]}") from None
    # The config is in the id where there is one: two configs of a dataset share row numbers.
    prefix = "-".join(part for part in (name, config, split) if part)
    return [
        Example(
            f"{prefix}-{i}",
            r["question"],
            finite_answer(normalise_answer(str(r["answer"])), f"{spec} row {i}"),
            origin=f"{spec} row {i}",
        )
        for i, r in enumerate(rows)
    ]


def _builtin(spec: str, size: int, seed: int) -> list[Example]:
    generators = {"arith": arithmetic_problem, "story": story_problem}
    parts = spec.split(":")
    if len(parts) != 3 or parts[1] not in generators or parts[2] not in SPLITS:
        raise UserError(
            f"unknown builtin dataset '{spec}': use builtin:KIND:SPLIT, KIND arith or story, SPLIT train or eval"
        )
    kind, split = parts[1:]
    rng = random.Random(seed)
    examples, seen = [], set()
    while len(examples) < size:
        question, answer = generators[kind](rng)
        if question in seen or problem_split(question) != split:
            continue
        seen.add(question)
        examples.append(Example(f"{kind}-{split}-{len(examples)}", question, str(answer), origin=spec))
    return examples


def problem_split(question: str) -> str:
    """Which split a problem belongs to; a pure function of its text, so splits never overlap."""
    bucket = int(hashlib.sha1(question.encode()).hexdigest(), 16) % 10
    return "eval" if bucket < EVAL_SHARE_PER_TEN else "train"
