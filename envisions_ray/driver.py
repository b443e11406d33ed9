"""The driver: T iterations of explore -> refine -> filter -> pool -> train -> evaluate.

`run_iteration` is one whole iteration of ALGORITHM.md and reads top to bottom. Generation is
cut into chunks; each chunk's solutions go to the executor actors the moment it finishes
(`ray.wait`), so execution overlaps generation. Every executed batch is committed to the pool at
once, and every finished stage is marked there, which is all `--resume` needs.
"""
from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ray
from tqdm import tqdm

from actors.executor import start_executors
from actors.generator import Sample, start_generators
from actors.pool import CandidatePool
from actors.trainer import train
from envisions_ray.config import RunConfig, to_yaml
from envisions_ray.data import load_examples
from envisions_ray.errors import UserError
from envisions_ray.losses import TrainExample
from envisions_ray.metrics import accuracy, executable_rate, exploratory_ability, stability
from envisions_ray.model import TRAINED_MARKER, check_model_path, resolve_model_path
from envisions_ray.prompts import PromptBook
from envisions_ray.types import Example, Outcome, Trajectory
from envs import make_env

STAGES = ("explore", "refine", "select", "train", "eval")


@dataclass(frozen=True)
class Request:
    """One prompt to sample from, and what its solutions are about."""

    example: Example
    prompt: str
    parent: Trajectory | None = None  # set when the request refines this trajectory


@dataclass
class Run:
    """Everything one run holds: its config, data, prompts and actors."""

    cfg: RunConfig
    run_dir: Path
    base_model: str
    prompts: PromptBook
    train_set: list[Example]
    eval_sets: dict[str, list[Example]]
    problems: dict[str, str] = field(default_factory=dict)  # example id -> text the model reads
    generators: list = field(default_factory=list)
    executors: list = field(default_factory=list)
    pool: object = None
    policy: str = ""  # model path the generators currently hold

    def pool_call(self, method: str, *args):
        return ray.get(getattr(self.pool, method).remote(*args))


def prepare(cfg: RunConfig, convert_model: bool = True) -> Run:
    """Check everything a user can get wrong, before anything is written or started.

    Without `convert_model` a packaged model is only checked, not converted, so nothing is written.
    """
    prompts = PromptBook.load(cfg.env.prompt_file)
    train_set = load_examples(cfg.data.train, cfg.data.train_size, cfg.data.seed)
    eval_sets = {name: load_examples(spec, cfg.data.eval_size, cfg.data.seed) for name, spec in cfg.data.eval.items()}
    base_model = resolve_model_path(cfg.model.path, cfg.model.cache_dir) if convert_model else check_model_path(cfg.model.path)
    return Run(cfg, Path(cfg.run_dir).resolve(), base_model, prompts, train_set, eval_sets)


def run(cfg: RunConfig, resume: bool = False) -> None:
    session = prepare(cfg)
    _claim_run_dir(session.run_dir, resume)
    (session.run_dir / "config.yaml").write_text(to_yaml(cfg))
    connect_ray(cfg)
    session.pool = ray.remote(CandidatePool).options(num_cpus=0).remote(str(session.run_dir / "pool.sqlite"))
    try:
        start_actors(session)
        if not session.pool_call("is_done", -1, "eval"):
            scores, executable = evaluate(session, shots=cfg.algorithm.few_shot)
            _record(session, {"policy": 0, "eval": scores, "executable": executable})
            session.pool_call("mark_done", -1, "eval")
        for iteration in range(cfg.algorithm.iterations):
            run_iteration(session, iteration)
        print(f"done: {session.run_dir} (envisions report {session.run_dir} draws the curves)")
    finally:
        stop_actors(session)


def run_iteration(run: Run, i: int) -> None:
    cfg, algo = run.cfg, run.cfg.algorithm
    if run.pool_call("is_done", i, "eval"):  # finished before a resume; start_actors loaded its policy
        return
    seconds: dict[str, float] = {}
    shots = algo.few_shot if run.policy == run.base_model else 0  # few-shot only for pi_0

    with _timed(seconds, "explore"):  # 1. K solutions per input from pi_i, executed, self-rewarded
        done = {t.example_id for t in run.pool_call("trajectories", i, "explore")}
        todo = [Request(x, run.prompts.explore(run.problems[x.id], shots)) for x in run.train_set if x.id not in done]
        stream(run, todo, algo.k, cfg.generator.temperature, cfg.generator.max_new_tokens, "explore", i)

    if algo.refine and i >= algo.refine_from_iteration:
        with _timed(seconds, "refine"):  # 2. one refined solution per explored one
            refined = {t.parent_id for t in run.pool_call("trajectories", i, "refine")}
            inputs = {x.id: x for x in run.train_set}
            parents = [t for t in run.pool_call("trajectories", i, "explore") if t.id not in refined]
            todo = [Request(inputs[t.example_id], run.prompts.refine(run.problems[t.example_id], t.solution), t) for t in parents]
            stream(run, todo, 1, cfg.generator.temperature, cfg.generator.max_new_tokens, "refine", i)

    with _timed(seconds, "select"):  # 3-5. eq. 2 filter, pool with dedup, U1 and U2
        long_term = algo.pool == "long_term"
        if not run.pool_call("is_done", i, "select"):
            run.pool_call("select", i, long_term)
            run.pool_call("mark_done", i, "select")
        n2 = algo.n2 if algo.l2 and algo.refine else 0  # the L2 ablations
        leave_positive = algo.leave_positive_for_pair and n2 > 0  # no pairs: no positive to keep back
        # The seed moves with i: a fresh shuffle each iteration when ranking at random.
        training = run.pool_call("training_set", algo.n1, n2, leave_positive, algo.rank, cfg.seed + i, None if long_term else i)
        examples = [TrainExample(run.prompts.explore(run.problems[t.example_id]), t.solution, "l1") for t in training.u1]
        examples += [TrainExample(run.prompts.refine(run.problems[p.example_id], n.solution), p.solution, "l2") for p, n in training.u2]
        _export(run.run_dir / f"iter-{i}" / "train.jsonl", examples)

    with _timed(seconds, "train"):  # 6. from the base model (or pi_i), L1 + L2
        checkpoint, loss = _trained(run, i)
        if checkpoint is None and examples:
            init = run.base_model if algo.train_from == "base" else run.policy
            checkpoint, loss = train(cfg.train, init, examples, str(run.run_dir / "checkpoints"), f"iter-{i}")
            run.pool_call("mark_done", i, "train", json.dumps({"checkpoint": checkpoint, "loss": loss}))
        if checkpoint and checkpoint != run.policy:  # 7. pi_{i+1}
            ray.get([g.load.remote(checkpoint) for g in run.generators])
            run.policy = checkpoint

    with _timed(seconds, "eval"):
        scores, executable = evaluate(run, shots=algo.few_shot if run.policy == run.base_model else 0)

    generated = run.pool_call("trajectories", i)  # explored and refined
    solved = [run.pool_call("solved_inputs", j) for j in range(i + 1)]
    summary = {
        "iteration": i + 1,
        "policy": i + 1,
        "inputs": len(run.train_set),
        "explored": len(solved[-1]),
        "positives": sum(t.reward for t in generated),
        "generated_executable": executable_rate([t.error for t in generated]),
        **run.pool_call("pool_counts"),
        "u1": len(training.u1),
        "u2": len(training.u2),
        "train_loss": loss,
        "eval": scores,
        "executable": executable,
        "ea": exploratory_ability(solved),
        "stb": stability(solved),
        "seconds": seconds,
    }
    _record(run, summary)
    run.pool_call("mark_done", i, "eval")


def stream(run: Run, requests: list[Request], n: int, temperature: float, max_new_tokens: int, source: str | None, iteration: int) -> list[Outcome]:
    """Generate n solutions per request in chunks; execute each chunk as soon as it is generated.

    With `source` set the trajectories are committed to the pool batch by batch; the outcomes are
    returned in request order either way.
    """
    chunk = max(1, run.cfg.generator.chunk_size // n)  # prompts per call
    pending_generation = {}
    for c, start in enumerate(range(0, len(requests), chunk)):
        part = requests[start : start + chunk]
        generator = run.generators[c % len(run.generators)]
        ref = generator.sample.remote([r.prompt for r in part], n, temperature, max_new_tokens, source is not None)
        pending_generation[ref] = (start, part)
    pending_execution, outcomes, next_executor = {}, [None] * (len(requests) * n), 0
    generated = tqdm(total=len(requests), desc=f"{source or 'eval'}: generate", unit="prompt", position=0)
    executed = tqdm(total=len(requests) * n, desc=f"{source or 'eval'}: execute", unit="solution", position=1)
    while pending_generation or pending_execution:
        [ready], _ = ray.wait([*pending_generation, *pending_execution], num_returns=1)
        if ready in pending_generation:
            start, part = pending_generation.pop(ready)
            samples: list[list[Sample]] = ray.get(ready)
            # An input's n solutions stay in one batch, so the pool never holds half an input.
            share = -(-len(part) // len(run.executors))  # ceil: spread the chunk over every executor
            for begin in range(0, len(part), share):
                batch = [
                    ((start + r) * n + k, part[r], sample)
                    for r in range(begin, min(begin + share, len(part)))
                    for k, sample in enumerate(samples[r])
                ]
                executor = run.executors[next_executor % len(run.executors)]
                next_executor += 1
                pending_execution[executor.execute.remote([(s.text, r.example) for _, r, s in batch])] = batch
            generated.update(len(part))
        else:
            batch = pending_execution.pop(ready)
            results: list[Outcome] = ray.get(ready)
            for (slot, _, _), outcome in zip(batch, results):
                outcomes[slot] = outcome
            if source is not None:
                run.pool_call("record", [_trajectory(r, s, o, iteration, source) for (_, r, s), o in zip(batch, results)])
            executed.update(len(batch))
    generated.close()
    executed.close()
    return outcomes


def evaluate(run: Run, shots: int) -> tuple[dict[str, float], dict[str, float]]:
    """Greedy accuracy of the current policy on every eval set, and the share of its solutions that ran."""
    scores, executable = {}, {}
    for name, examples in run.eval_sets.items():
        problems = ray.get(run.executors[0].describe.remote(examples))
        requests = [Request(x, run.prompts.explore(p, shots)) for x, p in zip(examples, problems)]
        outcomes = stream(run, requests, 1, run.cfg.eval.temperature, run.cfg.eval.max_new_tokens, None, -1)
        scores[name] = accuracy([o.reward for o in outcomes])
        executable[name] = executable_rate([o.error for o in outcomes])
    return scores, executable


def evaluate_model(cfg: RunConfig, dataset: str, size: int | None, shots: int | None) -> dict[str, dict[str, float]]:
    """`envisions eval`: greedy accuracy of cfg.model.path (a model, or a run's newest checkpoint) on one dataset."""
    model = resolve_model_path(newest_checkpoint(Path(cfg.model.path)) or cfg.model.path, cfg.model.cache_dir)
    examples = load_examples(dataset, size, cfg.data.seed)
    session = Run(cfg, Path(cfg.run_dir), model, PromptBook.load(cfg.env.prompt_file), [], {dataset: examples})
    if shots is None:  # a model we trained answers the zero-shot prompt it was trained on
        shots = 0 if (Path(model) / TRAINED_MARKER).is_file() else cfg.algorithm.few_shot
    connect_ray(cfg)
    try:
        start_actors(session)
        scores, executable = evaluate(session, shots)
        return {"accuracy": scores, "executable": executable}
    finally:
        stop_actors(session)


def newest_checkpoint(run_dir: Path) -> str | None:
    """The last checkpoint a run directory's training wrote; None when `run_dir` is no run."""
    if not (run_dir / "pool.sqlite").is_file():
        return None
    pool = CandidatePool(str(run_dir / "pool.sqlite"))
    checkpoint = pool.newest_checkpoint()
    pool.close()
    if checkpoint is None:
        raise UserError(f"run {run_dir} has not finished training an iteration yet")
    return checkpoint


def plan(cfg: RunConfig) -> str:
    """`run --dry-run`: check config, model, data, environment and run directory; write nothing."""
    run = prepare(cfg, convert_model=False)
    make_env(cfg.env).close()
    existing = next((p for p in [run.run_dir, *run.run_dir.parents] if p.exists()), None)
    if existing is None or not os.access(existing, os.W_OK):
        raise UserError(f"run directory {run.run_dir} is not writable")
    if (run.run_dir / "pool.sqlite").exists():
        raise _existing_run(run.run_dir)
    algo, gen = cfg.algorithm, cfg.generator
    return "\n".join([
        f"plan: {algo.iterations} iterations of explore -> refine -> filter -> train -> eval",
        f"  model      {run.base_model} ({len(run.prompts.shots)} shots in the prompt file, {algo.few_shot} used in iteration 0)",
        f"  train      {len(run.train_set)} inputs from {cfg.data.train}, K={algo.k}, refine={'on' if algo.refine else 'off'}, N1={algo.n1}, N2={algo.n2}",
        f"  eval       " + ", ".join(f"{name} ({len(examples)} inputs)" for name, examples in run.eval_sets.items()),
        f"  actors     {gen.num_actors} x {gen.backend} generator, {cfg.env.num_executors} x {cfg.env.name} executor, {cfg.train.num_workers} train workers",
        f"  training   from {algo.train_from}, {cfg.train.epochs} epoch(s), lr {cfg.train.lr} {cfg.train.lr_schedule}",
        f"  run_dir    {run.run_dir}",
    ])


def connect_ray(cfg: RunConfig) -> None:
    """Join the cluster named by RAY_ADDRESS (ray job submit sets it), else start a local one sized to the run."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
        return
    cpus = cfg.generator.num_actors * cfg.generator.num_cpus + cfg.env.num_executors + cfg.train.num_workers * cfg.train.cpus_per_worker
    ray.init(num_cpus=int(cpus + 0.999), include_dashboard=False, logging_level="WARNING")


def start_actors(run: Run) -> None:
    run.executors = start_executors(run.cfg.env)
    described = ray.get(run.executors[0].describe.remote(run.train_set))
    run.problems = {x.id: text for x, text in zip(run.train_set, described)}
    newest = run.pool_call("newest_checkpoint") if run.pool else None  # set when resuming
    run.policy = newest or run.base_model
    run.generators = start_generators(run.cfg.generator, run.policy, run.cfg.model.dtype)


def stop_actors(run: Run) -> None:
    """Free the actors' CPUs and memory (and the pool's database handle) for whatever runs next."""
    for actor in [*run.generators, *run.executors, *([run.pool] if run.pool else [])]:
        ray.kill(actor)
    run.generators, run.executors, run.pool = [], [], None


def _trained(run: Run, i: int) -> tuple[str | None, float | None]:
    """(checkpoint, loss) of iteration i's finished training, or (None, None)."""
    detail = run.pool_call("stage_detail", i, "train")
    if detail is None:
        return None, None
    trained = json.loads(detail)
    return trained["checkpoint"], trained["loss"]


def _trajectory(request: Request, sample: Sample, outcome: Outcome, iteration: int, source: str) -> Trajectory:
    parent = request.parent.id if request.parent else None
    return Trajectory(request.example.id, sample.text, outcome.reward, sample.self_reward, iteration, source, outcome.output, outcome.error, None, parent)


def _claim_run_dir(run_dir: Path, resume: bool) -> None:
    """A new run needs an empty, writable directory; a resumed one needs its pool."""
    has_pool = (run_dir / "pool.sqlite").exists()
    if resume and not has_pool:
        raise UserError(f"nothing to resume in {run_dir}: it has no pool.sqlite")
    if not resume and has_pool:
        raise _existing_run(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise UserError(f"run directory {run_dir} is not writable: {err.strerror}") from None


def _existing_run(run_dir: Path) -> UserError:
    return UserError(f"{run_dir} already holds a run: resume it with --resume {run_dir}, or set another run_dir")


def _export(path: Path, examples: list[TrainExample]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(asdict(e)) + "\n" for e in examples))


def _record(run: Run, line: dict) -> None:
    with (run.run_dir / "metrics.jsonl").open("a") as metrics:
        metrics.write(json.dumps(line) + "\n")
    print(format_summary(line), flush=True)


def format_summary(line: dict) -> str:
    ran = line.get("executable", {})  # runs written before this field existed lack it
    scores = " ".join(f"{name}={value:.1%} (ran {ran.get(name, float('nan')):.0%})" for name, value in line["eval"].items())
    if "iteration" not in line:
        return f"[base model] eval {scores}"
    stages = " ".join(f"{stage}={s:.0f}s" for stage, s in line["seconds"].items())
    loss = "n/a" if line["train_loss"] is None else f"{line['train_loss']:.3f}"
    return (
        f"[iter {line['iteration']}] explored {line['explored']}/{line['inputs']} positives {line['positives']} "
        f"unique-correct {line['unique_correct']} pool {line['pool_size']} |U1| {line['u1']} |U2| {line['u2']} "
        f"loss {loss} eval {scores} | {stages}"
    )


@contextmanager
def _timed(seconds: dict[str, float], stage: str):
    start = time.perf_counter()
    yield
    seconds[stage] = time.perf_counter() - start
