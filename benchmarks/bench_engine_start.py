"""Seconds of each part of a generator's engine start, as VLLMBackend starts it: the untied copy of
a tied model (envisions_ray/model.py `write_untied_copy`, through `ServedWeights`), then the vLLM
engine, broken down by vLLM's own log lines, then its first generate call.

The engine is built in a child process (this script again, with `--child`), whose stdout and
stderr are captured: the engine core and its worker are processes vLLM spawns, so their log lines
reach that captured output and nothing else (they did not reach a benchmark's output through Ray).
The child logs at INFO (VLLMBackend quiets vLLM to WARNING) and runs the engine as our CPU
generators do: unpinned (VLLM_CPU_OMP_THREADS_BIND=nobind) on generator.num_cpus OpenMP threads.
`--in-process` adds a column per mode with the engine core and its worker in the child's own
process, as VLLMBackend runs a CPU engine by default (`generator.engine_in_process`):
VLLM_ENABLE_V1_MULTIPROCESSING=0 and the "uni" executor, which vllm/platforms/cpu.py
`check_and_update_config` allows on CPU only with multiprocessing off; no process is spawned, and
vLLM is imported once.

Some parts come from the log lines' timestamps, which have whole seconds only: the start of the
engine core process and of its worker (a spawn, then the imports of torch and vLLM, before each
logs its first line), the compiled warm-up and the KV cache's allocation. The others are the
durations vLLM logs, or the child's own clock. Below the table, what a compiled start did with
vLLM's compile cache: it is keyed by the model's path among the rest of its config, and the
untied copy is written to a new scratch directory at each start, so a tied model compiles afresh.

    python benchmarks/bench_engine_start.py [--model smollm2|qwen2.5-coder-0.5b] [--modes eager,compiled]
        [--dtype auto|float32|bfloat16] [--in-process] [--show-log]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime

from envisions_ray.config import GeneratorConfig, load_config

MODES = ("compiled", "eager")
CHILD_TIMEOUT_S = 1800  # a compiled SmolLM2 engine took 4.5 min on two loaded cores; half an hour is a hang
# The child's own measurements, one JSON object on a line after this tag.
CHILD_TAG = "ENGINE-START-CHILD "
# The first generate call: one short prompt, a few tokens (first-call allocations, and in compiled
# mode any shape the warm-up did not cover).
FIRST_PROMPT, FIRST_TOKENS = "1 + 1 =", 8
# vLLM's log line: "(EngineCore pid=123) INFO 12-05 16:33:41 [core.py:133] ..." (vllm/logger.py's
# format, with the label of the process vLLM's multiprocessing adds; none in the process that logs
# first, or with the engine in process). The year is not logged, and no fraction of a second.
LOG_LINE = re.compile(
    r"^(?:\((?P<process>[A-Za-z]+)[^ ]* pid=\d+\) )?(?P<level>DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"(?P<stamp>\d\d-\d\d \d\d:\d\d:\d\d) (?P<text>.*)$"
)
STAMP_FORMAT = "%m-%d %H:%M:%S"
# The durations vLLM logs while it starts an engine (vLLM 0.32.0; files under site-packages/vllm):
# (part, pattern, file that logs it). A part indented by two spaces lies inside the one above it.
# On CPU, vLLM 0.32.0 logs no "torch.compile took" (vllm/compilation/monitor.py logs it in
# CompilationMode.VLLM_COMPILE only), so the compilation is timed by TIMED_SPANS below.
LOGGED_PARTS = (
    (
        "model built, no weights yet",
        r"Initializing model took ([\d.]+) seconds",
        "model_executor/model_loader/base_loader.py",
    ),
    ("weights loaded", r"Loading weights took ([\d.]+) seconds", "model_executor/model_loader/default_loader.py"),
    (
        "init engine: profile, KV cache, warm-up",
        r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s",
        "v1/engine/core.py",
    ),
    ("  of which the profiling/warm-up run", r"Initial profiling/warmup run took ([\d.]+) s", "compilation/monitor.py"),
)
# Parts vLLM does not time, from the timestamps of the lines that open and close them:
# (part, pattern of the first line, pattern of the last, file that logs them).
TIMED_SPANS = (
    (
        "  of which the compiled warm-up: torch.compile and its run",
        r"Warming up model for the compilation",
        r"Warming up done",
        "v1/worker/cpu_model_runner.py",
    ),
    (
        "  of which the KV cache allocated",
        r"CPU KV cache size: ",
        r"init engine \(profile, create kv cache, warmup model\) took",
        "v1/core/kv_cache_utils.py, v1/engine/core.py",
    ),
)
# What the compiled warm-up did with vLLM's compile cache (vllm/compilation/decorators.py), which is
# keyed by a hash of the model's config, the model's path included (vllm/config/model.py `compute_hash`).
COMPILE_CACHE = (
    (r"Directly load AOT compilation from path", "read from vLLM's compile cache"),
    (r"saved AOT compiled function to", "compiled, and saved to vLLM's compile cache"),
    (r"Compiling model again due to a load failure", "compiled: the cached one failed to load"),
)
# A process's start, from the last line of the process that spawns it to its own first line:
# (part, label of the spawning process, label of the spawned one). Labels as in LOG_LINE; the worker
# logs as "Worker" and "VllmWorker-0" (vllm/v1/executor/multiproc_executor.py).
SPAWNS = (
    ("engine core process start: spawn, imports", "MainProcess", "EngineCore"),
    ("worker process start: spawn, imports", "EngineCore", "Worker"),
)


@dataclass(frozen=True)
class Measured:
    """One engine start: its parts' seconds, and what it did with vLLM's compile cache."""

    parts: list[tuple[str, float | None]]
    compile_cache: str


@dataclass(frozen=True)
class LogLine:
    process: str  # MainProcess, EngineCore or Worker
    stamp: datetime
    text: str


def log_lines(output: str) -> list[LogLine]:
    """vLLM's log lines in captured output, in order; other lines (progress bars, warnings) dropped."""
    lines = []
    for raw in output.splitlines():
        match = LOG_LINE.match(raw.strip())
        if match:
            label = match["process"] or "MainProcess"
            process = "Worker" if "Worker" in label else label
            lines.append(LogLine(process, datetime.strptime(match["stamp"], STAMP_FORMAT), match["text"]))
    return lines


def logged_durations(output: str) -> dict[str, float]:
    """Each LOGGED_PARTS duration found in the output, by part; the first of each (an engine logs each once)."""
    found = {}
    for part, pattern, _ in LOGGED_PARTS:
        match = re.search(pattern, output)
        if match:
            found[part] = float(match[1])
    return found


def spawn_seconds(lines: list[LogLine]) -> dict[str, float]:
    """Each SPAWNS part, from whole-second timestamps: the spawned process's first line less the
    spawning process's last line before it."""
    found = {}
    for part, parent, child in SPAWNS:
        first = next((i for i, line in enumerate(lines) if line.process == child), None)
        before = [line for line in lines[:first] if line.process == parent] if first is not None else []
        if before:
            found[part] = (lines[first].stamp - before[-1].stamp).total_seconds()
    return found


def span_seconds(lines: list[LogLine]) -> dict[str, float]:
    """Each TIMED_SPANS part found: its last line's timestamp less its first line's (whole seconds)."""
    found = {}
    for part, first, last, _ in TIMED_SPANS:
        opened = next((line for line in lines if re.search(first, line.text)), None)
        closed = next((line for line in lines if re.search(last, line.text)), None)
        if opened and closed:
            found[part] = (closed.stamp - opened.stamp).total_seconds()
    return found


def compile_cache(output: str) -> str:
    """What the compiled warm-up did with vLLM's compile cache; "" when it says nothing (eager)."""
    return next((what for pattern, what in COMPILE_CACHE if re.search(pattern, output)), "")


def child_measurements(output: str) -> dict[str, float]:
    """The child's own clock: the line after CHILD_TAG, or {} when it died before printing it."""
    for line in output.splitlines():
        if line.startswith(CHILD_TAG):
            return json.loads(line[len(CHILD_TAG) :])
    return {}


def parts_table(untied: float | None, output: str) -> list[tuple[str, float | None]]:
    """(part, seconds) in the order an engine starts; None where the output does not say. A part
    indented by two spaces lies inside the one above it. `rest of LLM()` is what the top-level parts
    leave of the engine's construction: its config, the wait for the weights' processing, the
    tokenizer and the handshakes between the processes."""
    child, logged, lines = child_measurements(output), logged_durations(output), log_lines(output)
    spawns, spans = spawn_seconds(lines), span_seconds(lines)
    parts = {**spawns, **logged, **spans}
    engine = child.get("engine")
    top_level = [parts.get(part) for part, *_ in SPAWNS + LOGGED_PARTS if not part.startswith(" ")]
    rest = engine - sum(seconds for seconds in top_level if seconds) if engine is not None else None
    order = [part for part, *_ in SPAWNS + LOGGED_PARTS[:3] + TIMED_SPANS[:1] + LOGGED_PARTS[3:] + TIMED_SPANS[1:]]
    rows: list[tuple[str, float | None]] = [
        ("untied copy (tied models only)", untied),
        ("import vllm", child.get("import")),
    ]
    rows += [(part, parts.get(part)) for part in order]
    rows += [("rest of LLM()", rest), ("engine: vllm.LLM(...) in all", engine)]
    rows += [(f"first generate call ({FIRST_TOKENS} tokens)", child.get("first_generate"))]
    known = [untied, child.get("import"), engine, child.get("first_generate")]
    rows.append(("total", sum(seconds for seconds in known if seconds is not None)))
    return rows


def child_config(mode: str, in_process: bool) -> GeneratorConfig:
    """The math quickstart's generator settings (as bench_generate.py takes them), in `mode`."""
    quickstart = load_config("conf/math_quickstart.yaml", ["run_dir=unused"]).generator
    return GeneratorConfig(**{**quickstart.__dict__, "enforce_eager": mode == "eager", "engine_in_process": in_process})


def run_child(weights: str, mode: str, dtype: str, in_process: bool) -> None:
    """In the child: import vLLM, build the engine as VLLMBackend does, generate once, and print the
    clock's readings after CHILD_TAG. The environment comes from the parent (`child_environment`)."""
    from envisions_ray.actors.vllm_backend import engine_args

    cfg = child_config(mode, in_process)
    start = time.perf_counter()
    import vllm

    imported = time.perf_counter()
    llm = vllm.LLM(**engine_args(cfg, weights, dtype))  # the "uni" executor where in_process
    built = time.perf_counter()
    llm.generate([FIRST_PROMPT], vllm.SamplingParams(max_tokens=FIRST_TOKENS, temperature=0.0), use_tqdm=False)
    done = time.perf_counter()
    readings = {"import": imported - start, "engine": built - imported, "first_generate": done - built}
    print(CHILD_TAG + json.dumps(readings), flush=True)
    llm.llm_engine.engine_core.shutdown()


def child_environment(cfg: GeneratorConfig, in_process: bool) -> dict[str, str]:
    """This environment, with what VLLMBackend sets on a CPU machine, and vLLM's INFO lines on."""
    return {
        **os.environ,
        "VLLM_CPU_OMP_THREADS_BIND": "nobind",
        "OMP_NUM_THREADS": str(max(1, int(cfg.num_cpus))),
        "VLLM_LOGGING_LEVEL": "INFO",
        **({"VLLM_ENABLE_V1_MULTIPROCESSING": "0"} if in_process else {}),
    }


def measure(path: str, mode: str, dtype: str, in_process: bool, show_log: bool) -> Measured:
    """One engine start in `mode`: the untied copy here, the engine in a child process."""
    from envisions_ray.actors.vllm_backend import ServedWeights
    from envisions_ray.model import is_tied

    tied = is_tied(path)
    start = time.perf_counter()
    weights = ServedWeights(path)  # the copy, for a tied model, into a scratch directory
    untied = time.perf_counter() - start if tied else None
    try:
        command = [sys.executable, __file__, "--child", weights.path, "--modes", mode, "--dtype", dtype]
        command += ["--in-process"] if in_process else []
        env = child_environment(child_config(mode, in_process), in_process)
        done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=CHILD_TIMEOUT_S)
    finally:
        weights.close()
    output = done.stdout + done.stderr
    if show_log or done.returncode != 0:
        print(output)
    if done.returncode != 0:
        print(f"the child exited with {done.returncode}: its output is above")
    return Measured(parts_table(untied, output), compile_cache(output))


def print_table(model: str, tables: dict[str, Measured]) -> None:
    columns = list(tables)
    print(f"| part ({model}) | " + " | ".join(f"{column}, seconds" for column in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for i, (part, _) in enumerate(tables[columns[0]].parts):
        cells = [tables[column].parts[i][1] for column in columns]
        print(f"| {part} | " + " | ".join("–" if cell is None else f"{cell:.1f}" for cell in cells) + " |")
    for column, measured in tables.items():
        if measured.compile_cache:
            print(f"{column}: {measured.compile_cache}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--modes", default="eager,compiled", help="compiled and/or eager")
    parser.add_argument("--dtype", default="auto", help="auto: bf16 where the CPU multiplies it natively")
    parser.add_argument("--in-process", action="store_true", help="also each mode with no engine processes")
    parser.add_argument("--show-log", action="store_true", help="print each child's whole output")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # the weights the child's engine loads
    args = parser.parse_args()
    modes = [mode for mode in args.modes.split(",") if mode]
    if not modes or not set(modes) <= set(MODES):
        parser.error(f"--modes takes compiled and/or eager, got {args.modes}")
    from envisions_ray.model import resolve_dtype, resolve_model_path

    dtype = resolve_dtype(args.dtype)
    if args.child:
        run_child(args.child, modes[0], dtype, args.in_process)
        return
    path = resolve_model_path(args.model, "~/.cache/envisions-ray")
    print(f"{args.model} ({path}), {dtype}, engine parts from vLLM's log lines; one engine at a time")
    variants = [(mode, False) for mode in modes] + ([(mode, True) for mode in modes] if args.in_process else [])
    tables = {
        f"{mode}, in process" if in_process else mode: measure(path, mode, dtype, in_process, args.show_log)
        for mode, in_process in variants
    }
    print_table(args.model, tables)


if __name__ == "__main__":  # vLLM spawns its engine process, which imports this module again
    main()
