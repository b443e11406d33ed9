"""`envisions report RUN_DIR...`: runs side by side, like paper tables 2, 3 and 5, and the figures.

It writes, into the output directory (by default the runs' common parent, or the run itself):
- `report.md`: final accuracy per run and eval set, held-in and held-out sets marked, their
  average, EA, STB and unique correct trajectories; each run's best policy (the one RUN_DIR/best
  keeps, chosen on its first eval set) and its accuracy on every set; for web eval sets, success
  per task for each run's base model and every iteration (paper table 11), each iteration's
  training data per task (inputs explored, positives, and U1 and U2 by the input id of each
  iter-N/train.jsonl row; tasks without a positive first) beside the task's success before and after,
  and why the final policy failed on its weakest tasks; then each run's iterations, and its speed
  and environment events;
- `accuracy.png` (per eval set, per iteration), `explored.png`, `ea_stb.png` (one point per run),
  `delta_logp.png`, `unique_correct.png` and `wall_time.png` (where each iteration's time went);
and it says where the runs' TensorBoard event files are (envisions_ray/tensorboard_scalars.py).
`envisions report --markdown` prints the tables only and writes nothing, for docs/results/ pages.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import yaml

from envisions_ray.actors.pool import CandidatePool
from envisions_ray.best import METRICS_FILE, answers_path, best_policy, policy_name, read_lines
from envisions_ray.confusion import Confusion, confusion, label_valued
from envisions_ray.data import json_records
from envisions_ray.errors import UserError
from envisions_ray.paths import POOL_FILE
from envisions_ray.task_training import TaskTraining, predates_ids, task_of, training_per_task, weakest_first
from envisions_ray.tensorboard_scalars import TENSORBOARD_DIR

# Horizontal distance, in iterations, between runs' points in the accuracy plot.
RUN_SPACING = 0.06
PLOTS = ("accuracy.png", "explored.png", "ea_stb.png", "delta_logp.png", "unique_correct.png", "wall_time.png")
# The weakest tasks whose failures are grouped by cause.
FAILURE_TASKS = 10
# Where an iteration's wall time went, in the order the stacked bars draw it.
TIME_PARTS = ("generate", "execute", "train", "handoff", "eval", "other")


@dataclass(frozen=True)
class RunRecord:
    name: str
    method: str
    held_out: frozenset[str]
    lines: list[dict]  # metrics.jsonl: the base model's line, then one per iteration
    directory: Path | None = None

    @property
    def iterations(self) -> list[dict]:
        return [line for line in self.lines if "iteration" in line]

    @property
    def final(self) -> dict:
        return self.lines[-1]

    @property
    def best(self) -> dict | None:
        """The best policy as the run recorded it (envisions_ray/best.py); decided now for older runs."""
        return self.final["best"] if "best" in self.final else best_policy(self.lines)


def _runs_in(directory: Path) -> list[Path]:
    """The directory itself if it is a run; else the runs directly in it (a sweep's parent), by name."""
    if (directory / METRICS_FILE).is_file():
        return [directory]
    runs = sorted(child for child in directory.glob("*") if (child / METRICS_FILE).is_file())
    return runs or [directory]  # not a run and holding none: read_metrics says so


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        raise UserError(f"{run_dir} has no {METRICS_FILE}: is it a run directory?")
    lines = read_lines(run_dir)
    if not lines:
        raise UserError(f"{path} is empty: the run has not evaluated its base model yet")
    return lines


def read_run(run_dir: Path) -> RunRecord:
    lines = read_metrics(run_dir)
    config_path = run_dir / "config.yaml"
    config = yaml.safe_load(config_path.read_text()) if config_path.is_file() else {}
    data = config.get("data") or {}
    held_out = frozenset(data.get("held_out") or [])
    return RunRecord(run_dir.name, config.get("method", "envisions"), held_out, lines, run_dir)


def read_runs(run_dirs: list[Path]) -> list[RunRecord]:
    """The runs given; a sweep's parent directory stands for the runs in it."""
    return [read_run(run_dir) for given in run_dirs for run_dir in _runs_in(given)]


def report(run_dirs: list[Path], out_dir: Path | None = None) -> str:
    """The Markdown report; also written, with the plots, to `out_dir`; then what was written, and
    the command that shows the runs' TensorBoard event files."""
    runs = read_runs(run_dirs)
    out_dir = out_dir or Path(os.path.commonpath([run.directory.resolve() for run in runs]))
    out_dir.mkdir(parents=True, exist_ok=True)
    text = markdown_tables(runs)
    (out_dir / "report.md").write_text(text + "\n")
    _plot_all(runs, out_dir)
    written = f"written: {out_dir / 'report.md'}, plots {', '.join(PLOTS)}"
    return "\n\n".join([text, "\n".join([written, *tensorboard_command(runs)])])


def markdown_tables(runs: list[RunRecord]) -> str:
    """The report's tables: the runs side by side, then each run's iterations and speed."""
    tables = [
        comparison_table(runs),
        best_table(runs),
        *grammar_tables(runs),
        *per_task_tables(runs),
        *training_tables(runs),
        *failure_tables(runs),
        *confusion_tables(runs),
    ]
    per_run = [table for run in runs for table in (iteration_table(run), speed_table(run))]
    return "\n\n".join([*tables, *per_run])


def tensorboard_command(runs: list[RunRecord]) -> list[str]:
    """The command that shows the runs' event files, if any wrote them: one run's directory, or the
    runs' common parent, which TensorBoard walks for every run's."""
    log_dirs = [run.directory / TENSORBOARD_DIR for run in runs if (run.directory / TENSORBOARD_DIR).is_dir()]
    if not log_dirs:  # tensorboard was not installed, or the runs are older than their event files
        return []
    return [f"TensorBoard: tensorboard --logdir {os.path.commonpath([d.resolve() for d in log_dirs])}"]


def comparison_table(runs: list[RunRecord]) -> str:
    """One row per run: its final accuracy per eval set (sets line up across runs), and the average."""
    sets, columns = _eval_set_columns(runs)
    header = [
        "run",
        "method",
        *columns,
        "average",
        "EA",
        "STB",
        "unique correct",
    ]
    rows = []
    for run in runs:
        scores = run.final["eval"]
        average = sum(scores.values()) / len(scores) if scores else float("nan")
        last = run.iterations[-1] if run.iterations else {}
        rows.append(
            [
                run.name,
                run.method,
                *(_percent(scores.get(name)) for name in sets),
                _percent(average),
                _number(last.get("ea")),
                _number(last.get("stb")),
                str(last.get("unique_correct", "–")),
            ]
        )
    return "## Final accuracy\n\n" + _markdown(header, rows)


def best_table(runs: list[RunRecord]) -> str:
    """One row per run: the policy it keeps as RUN_DIR/best, the set that chose it, and that
    policy's accuracy on every eval set (its last line, should it have been evaluated twice)."""
    sets, columns = _eval_set_columns(runs)
    header = ["run", "best", "chosen on", *columns]
    rows = []
    for run in runs:
        best = run.best
        if best is None:  # no eval set to choose by
            rows.append([run.name, "–", "–", *("–" for _ in sets)])
            continue
        scores = [line for line in run.lines if line["policy"] == best["policy"]][-1]["eval"]
        rows.append(
            [run.name, policy_name(best["policy"]), best["eval_set"], *(_percent(scores.get(name)) for name in sets)]
        )
    return "## Best policy (kept as RUN_DIR/best; `envisions eval RUN_DIR` evaluates it)\n\n" + _markdown(header, rows)


def _eval_set_columns(runs: list[RunRecord]) -> tuple[list[str], list[str]]:
    """Every run's final eval sets, sorted so that they line up across runs, and their column
    headers marked held-in or held-out."""
    sets = sorted({name for run in runs for name in run.final["eval"]})
    held_out = set().union(*(run.held_out for run in runs))
    return sets, [f"{name} ({'held-out' if name in held_out else 'held-in'})" for name in sets]


def grammar_tables(runs: list[RunRecord]) -> list[str]:
    """The grammar ablation: per run, grammar on or off, the share of programs that parsed (the
    base model's eval, the last iteration's exploration, the final eval) beside the accuracy."""
    if not any("grammar" in line for run in runs for line in run.lines):
        return []  # runs from before generator.grammar existed
    sets = sorted({name for run in runs for name in run.final["eval"]})
    header = ["run", "grammar", "explored parsed"]
    for name in sets:
        header += [f"{name} base parsed", f"{name} base", f"{name} final parsed", f"{name} final"]
    rows = []
    for run in runs:
        base, final = run.lines[0], run.final
        last = run.iterations[-1] if run.iterations else {}
        row = [
            run.name,
            {True: "on", False: "off"}.get(base.get("grammar"), "–"),
            _percent(last.get("generated_parsed")),
        ]
        for name in sets:
            row += [
                _percent(base.get("parsed", {}).get(name)),
                _percent(base["eval"].get(name)),
                _percent(final.get("parsed", {}).get(name)),
                _percent(final["eval"].get(name)),
            ]
        rows.append(row)
    return ["## Grammar: programs that parsed, and accuracy\n\n" + _markdown(header, rows)]


def per_task_tables(runs: list[RunRecord]) -> list[str]:
    """Per eval set with tasks: success per task, base model and every iteration of every run."""
    sets = sorted({name for run in runs for line in run.lines for name in line.get("per_task", {})})
    tables = []
    for name in sets:
        columns = {}
        for run in runs:
            for line in run.lines:
                if name in line.get("per_task", {}):
                    columns[f"{run.name} {policy_name(line['policy'])}"] = line["per_task"][name]
        tables.append(f"## Success per task: {name}\n\n" + per_task_table(columns))
    return tables


def per_task_table(columns: dict[str, dict[str, float]]) -> str:
    """Rows are tasks, columns are models, the last row their average over tasks (paper table 11)."""
    tasks = list(dict.fromkeys(task for scores in columns.values() for task in scores))
    rows = [[task, *(_percent(scores.get(task)) for scores in columns.values())] for task in tasks]
    averages = [sum(scores.values()) / len(scores) if scores else None for scores in columns.values()]
    rows.append(["**average**", *(_percent(value) for value in averages)])
    return _markdown(["task", *columns], rows)


def training_tables(runs: list[RunRecord]) -> list[str]:
    """Per run with success per task and a pool, per iteration: what exploring found for each task,
    what of it was trained on (U1, U2), and the task's success before and after training."""
    tables = []
    for run in runs:
        pool = run.directory / POOL_FILE if run.directory else None
        if pool is None or not pool.is_file() or not any(line.get("per_task") for line in run.lines):
            continue
        stored = CandidatePool(str(pool), read_only=True)
        for line in run.iterations:
            i = line["iteration"] - 1  # the pool's and iter-N's numbering: iteration 1 is pool iteration 0
            train_file = run.directory / f"iter-{i}" / "train.jsonl"
            rows = [row for _, row in json_records(train_file)] if train_file.is_file() else []
            per_task = training_per_task(
                stored.trajectories(iteration=i),
                rows,
                [task for scores in line.get("per_task", {}).values() for task in scores],
            )
            before = [earlier for earlier in run.lines if earlier["policy"] == line["policy"] - 1][-1:]
            tables.append(training_table(run.name, line, before[0] if before else {}, per_task, predates_ids(rows)))
        stored.close()
    return tables


def training_table(
    name: str, after: dict, before: dict, per_task: dict[str, TaskTraining], no_ids: bool = False
) -> str:
    """Tasks by positives, fewest first: the iteration's exploration, its U1 and U2 (not when its
    train.jsonl predates per-example ids: `no_ids`), and success per eval set of the policy that
    explored (`before`) and of the one trained (`after`)."""
    sets = list(after.get("per_task", {}))
    header = ["task", "inputs explored", "samples", "positives", "inputs with a positive"]
    header += [] if no_ids else ["U1", "U2"]
    header += [f"{set_name} {when}" for set_name in sets for when in ("before", "after")]
    rows = []
    for task in weakest_first(per_task):
        counts = per_task[task]
        row = [task, *(str(n) for n in (counts.inputs, counts.samples, counts.positives, counts.solved))]
        row += [] if no_ids else [str(counts.u1), str(counts.u2)]
        for set_name in sets:
            row += [_percent(line.get("per_task", {}).get(set_name, {}).get(task)) for line in (before, after)]
        rows.append(row)
    empty = sum(counts.positives == 0 for counts in per_task.values())
    explorer = policy_name(before["policy"]) if before else "–"
    note = "Its train.jsonl predates per-example ids: no U1 or U2 per task.\n\n" if no_ids else ""
    return (
        f"## Training data per task: {name} {policy_name(after['policy'])} (explored by {explorer})\n\n"
        f"{empty} of the {len(per_task)} tasks had no positive.\n\n" + note + _markdown(header, rows)
    )


def iteration_table(run: RunRecord) -> str:
    names = sorted({name for line in run.lines for name in line["eval"]})
    # "parsed": the share of eval solutions in the domain's language; "ran": that the environment
    # could execute at all, right or wrong.
    header = [
        "policy",
        *names,
        *(f"{name} parsed" for name in names),
        *(f"{name} ran" for name in names),
        *("explored", "explored parsed", "positives", "pool", "U1", "U2", "loss", "Δlog p"),
    ]
    rows = [
        [
            policy_name(line["policy"]),
            *(_percent(line["eval"].get(name)) for name in names),
            *(_percent(line.get("parsed", {}).get(name), digits=0) for name in names),
            *(_percent(line.get("executable", {}).get(name), digits=0) for name in names),
            str(line.get("explored", "")),
            _percent(line.get("generated_parsed"), digits=0),
            *(str(line.get(key, "")) for key in ("positives", "pool_size", "u1", "u2")),
            "" if line.get("train_loss") is None else f"{line['train_loss']:.3f}",
            "" if line.get("delta_logp") is None else f"{line['delta_logp']:+.2f}",
        ]
        for line in run.lines
    ]
    return f"## {run.name} ({run.method})\n\n" + _markdown(header, rows)


def confusion_tables(runs: list[RunRecord]) -> list[str]:
    """Per run and label-valued eval set (logic): every evaluated policy's confusion matrix, from
    the answers it stored, with its recall per label; a collapsed policy shows as one full column."""
    tables = []
    for run in runs:
        by_set: dict[str, dict[int, Confusion]] = {}
        for policy in dict.fromkeys(line["policy"] for line in run.lines):  # one evaluated twice: its last answers
            rows = _answers(run, policy)
            for name in dict.fromkeys(row["eval_set"] for row in rows):
                pairs = [(row["expected"], row["output"]) for row in rows if row["eval_set"] == name]
                if label_valued(expected for expected, _ in pairs):
                    by_set.setdefault(name, {})[policy] = confusion(pairs)
        for name, per_policy in by_set.items():
            columns = list(dict.fromkeys(label for matrix in per_policy.values() for label in matrix.predicted))
            header = ["policy", "expected", *(f"answered {label}" for label in columns), "recall"]
            rows = [
                [
                    policy_name(policy),
                    label,
                    *(str(matrix.counts[label, answered]) for answered in columns),
                    _percent(matrix.recall(label)),
                ]
                for policy, matrix in per_policy.items()
                for label in matrix.labels
            ]
            tables.append(f"## Confusion per policy: {run.name}, {name}\n\n" + _markdown(header, rows))
    return tables


def _answers(run: RunRecord, policy: int) -> list[dict]:
    """The answers a policy gave on the run's eval sets, as `evaluate` stored them; none if absent."""
    path = answers_path(run.directory, policy) if run.directory else None
    if path is None or not path.is_file():
        return []
    return [row for _, row in json_records(path)]


def failure_tables(runs: list[RunRecord]) -> list[str]:
    """Per run with web eval answers: the final policy's FAILURE_TASKS weakest tasks, their failed
    episodes by cause (envs/web_failures.py), and one example of each cause."""
    from envisions_ray.envs.web_failures import CAUSES, failure_cause

    tables = []
    for run in runs:
        rows = _answers(run, run.final["policy"]) if run.final.get("per_task") else []
        if not rows:
            continue
        for name, scores in run.final["per_task"].items():
            weakest = sorted(scores, key=lambda task: (scores[task], task))[:FAILURE_TASKS]
            failed = [
                (task_of(row["id"]), failure_cause(row["reward"], row["error"]), row)
                for row in rows
                if row["eval_set"] == name and row["reward"] <= 0 and task_of(row["id"]) in weakest
            ]
            counts = Counter((task, cause) for task, cause, _ in failed)
            by_task = [[task, *(str(counts[task, cause]) for cause in CAUSES)] for task in weakest]
            by_task.append(["**all**", *(str(sum(counts[task, cause] for task in weakest)) for cause in CAUSES)])
            first_of = {cause: row for _, cause, row in reversed(failed)}  # the first failure of each cause
            examples = [
                [
                    cause,
                    row["id"],
                    f"`{_one_line(row['solution'])}`",
                    _one_line(row["error"] or f"task reward {row['output']}"),
                ]
                for cause in CAUSES
                if (row := first_of.get(cause)) is not None
            ]
            tables.append(
                f"## Why {run.name} {policy_name(run.final['policy'])} failed on its {len(weakest)} "
                f"weakest tasks: {name}\n\n"
                + _markdown(["task", *CAUSES], by_task)
                + "\n\n"
                + _markdown(["cause", "input", "program", "what happened"], examples)
            )
    return tables


def wall_time_parts(line: dict) -> dict[str, float]:
    """Where a metrics line's wall time went: generation and the executions that outlasted it (in
    exploring and refining), training, loading the new policy, evaluation, and the rest (selection,
    the method's examples, ...)."""
    seconds, generation = line.get("seconds", {}), line.get("generation", {})
    generate = sum(generation.get(stage, {}).get("seconds", 0.0) for stage in ("explore", "refine"))
    searched = sum(seconds.get(stage, 0.0) for stage in ("explore", "refine"))
    parts = {
        "generate": generate,
        "execute": max(0.0, searched - generate),
        "train": seconds.get("train", 0.0),
        "handoff": seconds.get("handoff", 0.0),
        "eval": seconds.get("eval", 0.0),
    }
    parts["other"] = max(0.0, sum(seconds.values()) - sum(parts.values()))
    return parts


def speed_table(run: RunRecord) -> str:
    """Per metrics line: episodes and their rate, generated and prompt tokens per second of
    generation (the prefix cache's share of the prompts), where the time went, and the
    environments' events (web: browsers started, crashed, restarted; peak Chromium processes)."""
    header = [
        "policy",
        "episodes",
        "episodes/s",
        "tokens/s",
        "prompt tokens/s",
        "cached",
        *(f"{part} s" for part in TIME_PARTS),
        "env events",
    ]
    rows = []
    for line in run.lines:
        generation = list(line.get("generation", {}).values())
        if not generation:
            continue
        episodes = sum(used["answers"] for used in generation)
        busy = sum(line["seconds"].get(stage, 0.0) for stage in line["generation"])
        generating = sum(used["seconds"] for used in generation)
        prompt = sum(used["prompt_tokens"] for used in generation)
        events = ", ".join(f"{key} {value}" for key, value in sorted(line.get("env_events", {}).items()))
        rows.append(
            [
                policy_name(line["policy"]),
                str(episodes),
                _rate(episodes, busy),
                _rate(sum(used["tokens"] for used in generation), generating),
                _rate(prompt, generating),
                _percent(
                    sum(used["cached_prompt_tokens"] for used in generation) / prompt if prompt else None, digits=0
                ),
                *(f"{value:.0f}" for value in wall_time_parts(line).values()),
                events,
            ]
        )
    return f"## {run.name}: speed\n\n" + _markdown(header, rows)


def _rate(count: float, seconds: float) -> str:
    return f"{count / seconds:.1f}" if seconds else "–"


def _one_line(text: str) -> str:
    """Text for a Markdown table cell: its lines joined, its pipes escaped."""
    return " ⏎ ".join(text.splitlines()).replace("|", "\\|")


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(
        ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(row) + " |" for row in rows)]
    )


def _percent(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}%}"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def accuracy_points(run: RunRecord, name: str) -> tuple[list[int], list[float], list[list[float]] | None]:
    """Policy, accuracy (%) and the distances down and up to its 95 % interval, for one eval set;
    no distances when a line has no interval (metrics written before intervals were)."""
    lines = [line for line in run.lines if name in line["eval"]]
    accuracies = [100 * line["eval"][name] for line in lines]
    intervals = [line.get("ci95", {}).get(name) for line in lines]
    if None in intervals:
        return [line["policy"] for line in lines], accuracies, None
    down = [accuracy - 100 * low for accuracy, (low, _) in zip(accuracies, intervals)]
    up = [100 * high - accuracy for accuracy, (_, high) in zip(accuracies, intervals)]
    return [line["policy"] for line in lines], accuracies, [down, up]


def _plot_all(runs: list[RunRecord], out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; works without a display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    def save(figure, name: str) -> None:
        figure.tight_layout()
        figure.savefig(out_dir / name, dpi=120)
        plt.close(figure)

    def per_iteration(axes, key: str, label: str) -> None:
        for run in runs:
            points = [(line["policy"], line[key]) for line in run.iterations if line.get(key) is not None]
            if points:
                axes.plot(*zip(*points), marker="o", label=run.name)
        style(axes, label)

    def style(axes, label: str) -> None:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        axes.set_xlabel("iteration (0 = base model)")
        axes.set_ylabel(label)
        axes.grid(alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="small")

    sets = sorted({name for run in runs for line in run.lines for name in line["eval"]})
    figure, grid = plt.subplots(1, max(1, len(sets)), figsize=(5 * max(1, len(sets)), 4), squeeze=False)
    for axes, name in zip(grid[0], sets):
        drawn = [accuracy_points(run, name) for run in runs]
        for index, (run, (policies, accuracies, errors)) in enumerate(zip(runs, drawn)):
            shift = RUN_SPACING * (index - (len(runs) - 1) / 2)  # side by side, so the bars do not overlap
            x = [policy + shift for policy in policies]
            axes.errorbar(x, accuracies, yerr=errors, marker="o", capsize=3, label=run.name)
        axes.set_title(name + (" (bars: 95 % interval)" if any(errors for *_, errors in drawn) else ""))
        style(axes, "eval accuracy (%)")
    save(figure, "accuracy.png")

    figure, axes = plt.subplots(figsize=(6, 4))
    per_iteration(axes, "explored", "explored samples (inputs solved)")
    save(figure, "explored.png")

    figure, axes = plt.subplots(figsize=(6, 4))
    per_iteration(axes, "delta_logp", "Δlog p over U2 pairs (nats)")
    save(figure, "delta_logp.png")

    _plot_totals(runs, plt, save)


def _plot_totals(runs: list[RunRecord], plt, save) -> None:
    """One point or bar per run or policy: EA against STB, where each policy's time went, and the
    unique correct trajectories."""
    figure, axes = plt.subplots(figsize=(6, 4))
    for run in runs:
        last = run.iterations[-1] if run.iterations else {}
        if last.get("ea") is not None:
            axes.scatter(last["ea"], last["stb"], s=40)
            axes.annotate(
                run.name, (last["ea"], last["stb"]), textcoords="offset points", xytext=(4, 4), fontsize="small"
            )
    axes.margins(0.25)  # room for the labels beside the points
    axes.set_xlabel("exploratory ability (EA)")
    axes.set_ylabel("stability (STB)")
    axes.grid(alpha=0.3)
    save(figure, "ea_stb.png")

    figure, axes = plt.subplots(figsize=(max(6, 0.5 * sum(len(run.lines) for run in runs)), 4))
    bars = [(f"{run.name}\n{policy_name(line['policy'])}", wall_time_parts(line)) for run in runs for line in run.lines]
    bottoms = [0.0] * len(bars)
    for part in TIME_PARTS:
        minutes = [parts[part] / 60 for _, parts in bars]
        axes.bar([label for label, _ in bars], minutes, bottom=bottoms, label=part)
        bottoms = [bottom + value for bottom, value in zip(bottoms, minutes)]
    axes.set_ylabel("wall time (min)")
    axes.tick_params(axis="x", labelrotation=90, labelsize="small")
    axes.legend(fontsize="small")
    save(figure, "wall_time.png")

    figure, axes = plt.subplots(figsize=(max(6, 1.2 * len(runs)), 4))
    counts = [(run.iterations[-1] if run.iterations else {}).get("unique_correct", 0) for run in runs]
    axes.bar([run.name for run in runs], counts)
    axes.set_ylabel("unique correct trajectories in the pool")
    axes.tick_params(axis="x", labelrotation=30)
    save(figure, "unique_correct.png")
