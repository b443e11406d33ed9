"""`envisions`: run, eval, exec, report and sweep.

A mistake in what the user gave (config, data, model, run directory) prints one line and exits
with code 2; `--debug` shows the traceback instead. Anything else is a bug: its traceback, then one
line that says where to report it, and exit code 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from envisions_ray.config import EnvConfig, load_config
from envisions_ray.errors import UserError

FAILED = 1
USAGE_ERROR = 2
INTERRUPTED = 130  # the shell's code for Ctrl-C
# Where bugs go; setup.cfg names no project_urls to point at.
BUG_REPORTS = "the project's issue tracker"


def _parser() -> argparse.ArgumentParser:
    """The commands and their arguments."""
    parser = argparse.ArgumentParser(prog="envisions", description="ENVISIONS neural-symbolic self-training on Ray")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="self-train: explore, refine, filter, train, evaluate")
    run.add_argument("config", nargs="?", help="YAML in conf/")
    run.add_argument("overrides", nargs="*", help="key=value")
    run.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run")
    run.add_argument("--dry-run", action="store_true", help="check everything, print the plan, write nothing")

    evaluate = commands.add_parser("eval", help="greedy accuracy of a model on a dataset")
    evaluate.add_argument(
        "checkpoint", help="model directory, 'smollm2', or a run directory (its best policy, RUN_DIR/best)"
    )
    evaluate.add_argument(
        "dataset",
        help="JSONL path, builtin:arith:eval, ruletaker:PATH, hf:NAME[:CONFIG]:SPLIT or tasks:TASKS:FIRST_SEED",
    )
    evaluate.add_argument("overrides", nargs="*", help="key=value")
    evaluate.add_argument("--config", default="conf/math_quickstart.yaml")
    evaluate.add_argument("--size", type=int, help="first N examples (tasks: N seeds per task)")
    evaluate.add_argument(
        "--shots", type=int, help="demonstrations in the prompt (default: few-shot for the base model, 0 otherwise)"
    )
    evaluate.add_argument("--answers", metavar="JSONL", help="write each problem's answer, expected answer and reward")

    execute = commands.add_parser("exec", help="run one solution through a domain's environment")
    execute.add_argument("domain", help="environment name: math, logic or web")
    execute.add_argument("solution_file")
    execute.add_argument(
        "--input",
        required=True,
        help='the input as JSON, e.g. \'{"answer": "72"}\' or \'{"task": "click-test-2", "seed": 3}\'',
    )
    execute.add_argument("--config", help="YAML whose env settings to use")

    report = commands.add_parser("report", help="compare runs: a Markdown table and PNG plots")
    report.add_argument("run_dirs", nargs="+")
    written = report.add_mutually_exclusive_group()
    written.add_argument("--out", help="where report.md and the plots go (default: the runs' common parent)")
    written.add_argument(
        "--markdown", action="store_true", help="print the Markdown tables only and write nothing (docs/results/)"
    )

    sweep = commands.add_parser("sweep", help="several runs under one parent directory, then their report")
    sweep.add_argument("config", help="a run config with comma-listed overrides, or a sweep file (conf/sweeps/)")
    sweep.add_argument("overrides", nargs="*", help="key=value or key=v1,v2,... (every combination is a run)")
    sweep.add_argument("--parent", help="directory that holds the runs (default: the config's run_dir + '-sweep')")
    sweep.add_argument(
        "--dry-run", action="store_true", help="check every run's config and list the runs; write nothing"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    # Overrides may also follow options (`--size 200 key=value`), which argparse leaves over.
    args, extra = parser.parse_known_args(argv)
    stray = [word for word in extra if word.startswith("-") or "=" not in word]
    if stray or (extra and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        return {"run": _run, "eval": _eval, "exec": _exec, "report": _report, "sweep": _sweep}[args.command](args)
    except UserError as err:
        if args.debug:
            raise
        # Raised inside an actor, it arrives wrapped in Ray's error, the actor's traceback in its text.
        print(f"envisions: error: {getattr(err, 'cause', err)}", file=sys.stderr)
        return USAGE_ERROR
    except Exception:  # not the input: a bug, whose traceback is what a report needs
        traceback.print_exc()
        print(f"envisions: this is a bug; please report it with the traceback above at {BUG_REPORTS}", file=sys.stderr)
        return FAILED


def _run(args) -> int:
    from envisions_ray import driver
    from envisions_ray.paths import resumed_config
    from envisions_ray.plan import plan

    if args.resume:
        if args.config or args.overrides:
            raise UserError("--resume takes the run's own config.yaml: give no config or overrides")
        cfg = resumed_config(Path(args.resume))
    else:
        if args.config is None:
            raise UserError("run needs a CONFIG (e.g. conf/math_quickstart.yaml) or --resume RUN_DIR")
        cfg = load_config(args.config, args.overrides)
    if args.dry_run:
        print(plan(cfg, resume=bool(args.resume)))
        return 0
    try:
        driver.run_experiment(cfg, resume=bool(args.resume))
    except UserError:
        raise
    except (Exception, KeyboardInterrupt) as err:  # a bug or a lost cluster: the traceback, then what to do
        traceback.print_exc()
        resume = os.path.abspath(cfg.run_dir)  # from any directory
        print(f"envisions: the run stopped; continue it with: envisions run --resume {resume}", file=sys.stderr)
        return INTERRUPTED if isinstance(err, KeyboardInterrupt) else FAILED
    return 0


def _eval(args) -> int:
    from envisions_ray.eval_command import evaluate_model

    cfg = load_config(args.config, [*args.overrides, f"model.path={args.checkpoint}"])
    answers = Path(args.answers) if args.answers else None
    if answers is not None and not os.access(answers.parent.resolve(), os.W_OK):  # before a long eval, not after
        raise UserError(f"--answers {answers}: cannot write into {answers.parent.resolve()}")
    scores = evaluate_model(cfg, args.dataset, args.size, args.shots, answers)
    if "per_task" in scores:  # web: a table like paper table 11, then the JSON line
        from envisions_ray.report import per_task_table

        [(name, per_task)] = scores["per_task"].items()
        print(per_task_table({args.checkpoint: per_task}))
    [(name, value)] = scores["accuracy"].items()
    low, high = scores["ci95"][name]
    print(
        f"{name}: accuracy {value:.1%} [{low:.1%}, {high:.1%}] (95 % Wilson) on {scores['problems'][name]} problems; "
        f"parsed {scores['parsed'][name]:.1%}, ran {scores['executable'][name]:.1%}; "
        f"{scores['generated_tokens']} tokens in {scores['seconds']:.0f} s "
        f"({scores['generated_tokens'] / scores['seconds']:.0f} tokens/s); "
        f"{scores['prompt_tokens']} prompt tokens ({scores['prompt_tokens'] / scores['seconds']:.0f}/s), "
        f"{scores['cached_prompt_tokens'] / max(1, scores['prompt_tokens']):.0%} from the prefix cache"
    )
    print(json.dumps(scores))
    return 0


def _exec(args) -> int:
    from envisions_ray.data import text_field
    from envisions_ray.envs import make_env
    from envisions_ray.types import Example

    env_cfg = load_config(args.config, ["run_dir=unused"]).env if args.config else EnvConfig(name=args.domain)
    if env_cfg.name != args.domain:
        raise UserError(f"{args.config} configures the '{env_cfg.name}' environment, not '{args.domain}'")
    solution_path = Path(args.solution_file)
    if not solution_path.is_file():
        raise UserError(f"solution file not found: {solution_path}")
    try:
        solution = solution_path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{solution_path} is not a UTF-8 text file") from None
    try:
        fields = json.loads(args.input)
    except json.JSONDecodeError as err:
        raise UserError(f"--input is not valid JSON: {err.msg}") from None
    if not isinstance(fields, dict):
        raise UserError('--input must be a JSON object, e.g. \'{"answer": "72"}\'')
    example = Example(
        text_field(fields, "id", "--input", default="cli"),
        text_field(fields, "question", "--input", default=""),
        text_field(fields, "answer", "--input", default=""),
        {k: v for k, v in fields.items() if k not in ("id", "question", "answer")},
    )
    env = make_env(env_cfg)
    try:
        outcome = env.execute(solution, example)
    finally:
        env.close()
    print(json.dumps({"reward": outcome.reward, "output": outcome.output, "error": outcome.error}))
    return 0


def _report(args) -> int:
    from envisions_ray.report import markdown_tables, read_runs, report

    run_dirs = [Path(d) for d in args.run_dirs]
    if args.markdown:
        print(markdown_tables(read_runs(run_dirs)))
    else:
        print(report(run_dirs, Path(args.out) if args.out else None))
    return 0


def _sweep(args) -> int:
    from envisions_ray.report import report
    from envisions_ray.sweep import plan_sweep, run_sweep

    parent, runs = plan_sweep(args.config, args.overrides, args.parent)
    if args.dry_run:
        print(
            "\n".join(
                [f"sweep: {len(runs)} runs under {parent}", *(f"  {r.name}: method {r.cfg.method}" for r in runs)]
            )
        )
        return 0
    run_dirs = run_sweep(runs)
    print(report(run_dirs, parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
