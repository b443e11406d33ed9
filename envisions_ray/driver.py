"""The driver: T iterations of explore -> refine -> filter -> pool -> train -> evaluate.

`run_iteration` is one whole iteration of ALGORITHM.md and reads top to bottom. Generation is
cut into chunks; each chunk's solutions go to the executor actors the moment it finishes
(`ray.wait`), so execution overlaps generation. Every executed batch is committed to the pool at
once, and every finished stage is marked there, which is all `--resume` needs.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

import ray
import yaml
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from tqdm import tqdm

from envisions_ray import ray_workers
from envisions_ray.actors.backend import Sample
from envisions_ray.actors.executor import ExecutorPool
from envisions_ray.actors.generator import start_generators, stop_generators
from envisions_ray.actors.pool import CandidatePool, check_pool
from envisions_ray.actors.restarts import actor_restarts
from envisions_ray.best import (
    METRICS_FILE,
    best_policy,
    model_location,
    point_best,
    policy_model,
    policy_name,
    read_lines,
)
from envisions_ray.config import RunConfig, to_yaml
from envisions_ray.data import load_examples, problem_key, seeded_training_ids
from envisions_ray.envs import make_env, offline_describe
from envisions_ray.errors import UserError
from envisions_ray.methods import METHODS, Examples
from envisions_ray.metrics import (
    accuracy,
    accuracy_interval,
    executable_rate,
    exploratory_ability,
    mean_margin,
    parse_rate,
    per_task_accuracy,
    stability,
)
from envisions_ray.model import (
    TRAINED_MARKER,
    check_model_path,
    max_positions,
    model_directory,
    resolve_model_path,
    token_counts,
)
from envisions_ray.paths import CONFIG_FILE, absolute_paths
from envisions_ray.prompts import PromptBook
from envisions_ray.run_state import (
    Explorer,
    Generated,
    PoolClient,
    Request,
    Run,
    Sink,
    Streamed,
    policy_explorer,
    teacher_explorer,
)
from envisions_ray.teacher import Teacher
from envisions_ray.types import Example, Outcome, PreferenceExample, Sampling, TrainExample, Trajectory

DESCRIBE_BATCH = 16  # examples per describe call: few calls, yet spread over every executor
LOCK_FILE = "driver.lock"  # in the run directory; names the driver that holds it
POLICY_FILE = "policy"  # in the run directory: the checkpoint the generators hold, for one that restarts
WRITE_PROBE_PREFIX = ".envisions-write-probe-"  # made and removed where a run directory is to be created
POOL_FILE = "pool.sqlite"  # in the run directory: the candidate pool (actors/pool.py)


def prepare(cfg: RunConfig, convert_model: bool = True) -> Run:
    """The checks that need data or files (load_config has made the rest), before anything is
    written or started. Without `convert_model` a packaged model is only checked, not converted,
    so nothing is written."""
    from envisions_ray.memory import check_memory  # pure arithmetic on the model's config: no torch, no Ray

    if not cfg.data.eval:  # the policies would be trained unmeasured, and the best one unknown
        raise UserError("config: data.eval names no eval set; add one, e.g. data.eval.dev=builtin:arith:eval")
    prompts = PromptBook.load(cfg.env.prompt_file)
    train_set = load_examples(cfg.data.train, cfg.data.train_size, cfg.data.seed)
    eval_sets = {name: load_examples(spec, cfg.data.eval_size, cfg.data.seed) for name, spec in cfg.data.eval.items()}
    base_model = check_model_path(cfg.model.path)
    check_memory(cfg, base_model)  # a run that cannot fit is refused here, before a packaged model's conversion
    method = METHODS[cfg.method]
    teacher = Teacher(cfg.distill) if method.explorer == "teacher" else None
    _check_inputs(cfg, train_set, eval_sets, prompts)
    _check_context(cfg, base_model, prompts, train_set, eval_sets)
    _check_writable(Path(cfg.run_dir).resolve())  # before a minute's conversion, not after it
    if convert_model:
        base_model = resolve_model_path(cfg.model.path, cfg.model.cache_dir)
    if method.stage == "judge":
        prompts.judge("", "", cfg.self_rewarding.max_score)  # a prompt file without a judge fails here, not mid-run
    run = Run(cfg, Path(cfg.run_dir).resolve(), base_model, prompts, train_set, eval_sets)
    run.explorer = teacher_explorer(teacher) if teacher else policy_explorer(run)
    return run


def run_experiment(cfg: RunConfig, resume: bool = False) -> None:
    """`envisions run`: the base model's eval, then the iterations, resumed from the pool when asked."""
    cfg = absolute_paths(cfg, Path.cwd())  # saved so, config.yaml lets --resume run from anywhere
    run = prepare(cfg)
    run.policy_file = run.run_dir / POLICY_FILE
    with _claimed_run_dir(run.run_dir, resume):
        if resume:
            _check_resumable(run).close()  # before any actor starts
        (run.run_dir / CONFIG_FILE).write_text(to_yaml(cfg))
        connect_ray(cfg)
        # Beside the driver, so pool.sqlite lands in the run directory the driver writes (config.yaml,
        # metrics.jsonl); a zero-CPU actor could otherwise be placed on any node of a cluster.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        run.pool = PoolClient(
            # Restarted on the same pool.sqlite if it dies, and the call in hand retried (record is idempotent).
            ray.remote(CandidatePool)
            .options(num_cpus=0, scheduling_strategy=here, max_restarts=-1, max_task_retries=-1)
            .remote(str(run.run_dir / POOL_FILE))
        )
        try:
            run.restarts_seen = actor_restarts()  # this job's actors so far (a test session runs several runs)
            start_actors(run)
            best = _best(run, read_lines(run.run_dir))  # resumed: as metrics.jsonl and the pool record it
            if best is not None:
                point_best(run.run_dir, best["model"])
            if not run.pool.is_done(-1, "eval"):
                with _timed(run, -1, "eval"):
                    scores, generated = evaluate(run, shots=cfg.algorithm.few_shot, answers=_answers_file(run, 0))
                base = {
                    "policy": 0,
                    "grammar": bool(run.grammar),
                    **scores,
                    "tokens": {"eval": generated.tokens},
                    "generation": {"eval": asdict(generated)},
                    "seconds": run.pool.seconds(-1),
                    "env_events": _env_events(run),
                }
                _record(run, {**base, "restarts": _new_restarts(run)})
                run.pool.mark_done(-1, "eval")
            for iteration in range(cfg.algorithm.iterations):
                run_iteration(run, iteration)
            print(f"done: {run.run_dir} (envisions report {run.run_dir} draws the curves)")
        finally:
            stop_actors(run)


def run_iteration(run: Run, i: int) -> None:
    cfg, algo, method = run.cfg, run.cfg.algorithm, METHODS[run.cfg.method]
    if run.pool.is_done(i, "eval"):  # finished before a resume; start_actors loaded its policy
        return
    inputs = run.inputs(i)
    _describe(run, [x for j in range(i + 1) for x in run.inputs(j)])  # the pool may train on any of them
    generation: dict[str, Generated] = {}  # what the policy did, per stage
    shots = run.shots()  # few-shot for pi_0; a trained policy answers the prompt it was trained on

    # 1. K solutions per input from pi_i (or the teacher's one), executed, self-rewarded
    with _timed(run, i, "explore"):
        done = {t.example_id for t in run.pool.trajectories(i, "explore")}
        todo = [Request(x, _explore_prompt(run, x, shots)) for x in inputs if x.id not in done]
        generation["explore"] = stream(
            run, todo, method.explore_sampling(cfg), recording(run, i, "explore"), run.explorer
        ).generated

    if algo.refine and i >= algo.refine_from_iteration:
        with _timed(run, i, "refine"):  # 2. one refined solution per explored one
            refined = {t.parent_id for t in run.pool.trajectories(i, "refine")}
            by_id = {x.id: x for x in inputs}
            parents = [t for t in run.pool.trajectories(i, "explore") if t.id not in refined]
            todo = [
                Request(by_id[t.example_id], run.prompts.refine(run.problems[t.example_id], t.solution), t)
                for t in parents
            ]
            sampling = Sampling(1, cfg.generator.temperature, cfg.generator.max_new_tokens)
            generation["refine"] = stream(run, todo, sampling, recording(run, i, "refine")).generated

    with _timed(run, i, "select"):  # 3-4. eq. 2 filter, pool with dedup
        if not run.pool.is_done(i, "select"):
            run.pool.select(i, long_term=run.long_term)
            run.pool.mark_done(i, "select")

    with _timed(run, i, method.stage):  # 5. U1 and U2, or a baseline's own training data
        examples = method.examples(run, i)
    _export(run.run_dir / f"iter-{i}" / "train.jsonl", examples.sft + examples.pairs)

    with _timed(run, i, "train"):  # 6. from the base model (or pi_i), L1 + L2 (or a baseline's SFT / DPO)
        trained = _trained(run, i)
        if trained is None and (examples.sft or examples.pairs):
            if cfg.generator.num_gpus > 0 or cfg.generator.stop_while_training:
                _stop_generators(run)  # the trainer needs their GPUs or memory; they come back on the new weights
            trained = _train_policy(run, i, examples)
            run.pool.mark_done(i, "train", json.dumps(trained))

    with _timed(run, i, "handoff"):  # 7. pi_{i+1}: the generators take the new weights
        _use_policy(run, trained["checkpoint"] if trained else run.policy)

    with _timed(run, i, "eval"):
        # run.shots(): pi_{i+1} may be the base model, when nothing was trained
        scores, generation["eval"] = evaluate(run, run.shots(), answers=_answers_file(run, i + 1))
        margin = _logprob_margin(run, i)

    generated = run.pool.trajectories(i)  # explored and refined
    solved = [run.pool.solved_inputs(j) for j in range(i + 1)]
    explored = len(solved[-1])
    if cfg.data.seed_stride:  # every iteration has new seeds: EA and STB count the tasks solved
        task_of = {x.id: x.task for j in range(i + 1) for x in run.inputs(j)}
        solved = [{task_of[example_id] for example_id in ids} for ids in solved]
    summary = {
        "iteration": i + 1,
        "policy": i + 1,
        "method": cfg.method,
        "grammar": bool(run.grammar),  # were the policy's programs held to the prompt file's grammar
        "inputs": len(inputs),
        "explored": explored,
        "positives": sum(t.reward for t in generated),
        "generated_parsed": parse_rate([t.error for t in generated]),
        "generated_executable": executable_rate([t.error for t in generated]),
        **run.pool.pool_counts(),
        "u1": sum(e.kind == "l1" for e in examples.sft),
        "u2": sum(e.kind == "l2" for e in examples.sft),
        "pairs": len(examples.pairs),
        "train_loss": (trained or {}).get("loss"),
        "dpo_loss": (trained or {}).get("dpo_loss"),
        # Examples (a DPO pair counts once) over train.max_length (losses.tokenize): trained after a
        # cut prompt, or not at all when the target alone is over it. A training from before they were counted: 0.
        "train_prompt_cut": (trained or {}).get("prompt_cut", 0),
        "train_dropped_too_long": (trained or {}).get("dropped_too_long", 0),
        **scores,
        "delta_logp": margin,
        "ea": exploratory_ability(solved),
        "stb": stability(solved),
        "seconds": run.pool.seconds(i),  # of every driver that worked on it: a resumed one adds its own
        "tokens": {**{stage: used.tokens for stage, used in generation.items()}, **examples.tokens},
        "generation": {stage: asdict(used) for stage, used in generation.items()},
        "executors": {"now": len(run.executors.seats), "peak": run.executors.peak},  # the pool's size, as it scaled
        "env_events": _env_events(run),
        "restarts": {**_new_restarts(run), "train_worker_group": (trained or {}).get("restarts", 0)},
    }
    _record(run, summary)
    run.pool.mark_done(i, "eval")


def train(*args, **kwargs):
    """`actors.trainer.train`, imported on first use: it loads torch and Ray Train (about 4 s on 2
    cores), which a command refused for bad input, or an eval, never needs."""
    from envisions_ray.actors.trainer import train as train_on_ray

    return train_on_ray(*args, **kwargs)


def _train_policy(run: Run, i: int, examples: Examples) -> dict:
    """SFT (L1 + L2 for ENVISIONS), then DPO on the pairs from the SFT model, which is also DPO's reference.
    A job whose every example is too long for train.max_length trains nothing; when no job trained,
    the policy stays, as when there is nothing to train."""
    cfg, storage = run.cfg, str(run.run_dir / "checkpoints")
    init = run.base_model if cfg.algorithm.train_from == "base" else run.policy
    trained = {"checkpoint": init, "loss": None, "dpo_loss": None}
    jobs = []
    if examples.sft:
        sft = train(cfg.train, init, examples.sft, storage, f"iter-{i}")
        jobs.append(sft)
        if sft.checkpoint is not None:
            trained.update(checkpoint=sft.checkpoint, loss=sft.loss)
    if examples.pairs:
        dpo_cfg = replace(cfg.train, lr=cfg.dpo.lr, warmup_ratio=cfg.dpo.warmup_ratio, epochs=cfg.dpo.epochs)
        dpo = train(dpo_cfg, trained["checkpoint"], examples.pairs, storage, f"iter-{i}-dpo", cfg.dpo.beta)
        jobs.append(dpo)
        if dpo.checkpoint is not None:
            trained.update(checkpoint=dpo.checkpoint, dpo_loss=dpo.loss)
    if all(job.checkpoint is None for job in jobs):
        print(
            f"[iter {i + 1}] nothing trained: every example's target alone is longer than "
            f"train.max_length={cfg.train.max_length} tokens; the policy stays",
            flush=True,
        )
        trained["checkpoint"] = run.policy
    return {
        **trained,
        "restarts": sum(job.restarts for job in jobs),
        "prompt_cut": sum(job.prompt_cut for job in jobs),
        "dropped_too_long": sum(job.dropped_too_long for job in jobs),
    }


def _logprob_margin(run: Run, i: int) -> float | None:
    """Δlog p: mean log p(a+) - log p(a-) under the new policy, over the U2 pairs ENVISIONS would build
    from this pool (the same construction for every method, so runs compare); None without pairs."""
    algo = run.cfg.algorithm
    training = run.pool.training_set(
        n1=algo.n1,
        n2=algo.n2,
        leave_positive_for_pair=True,
        rank_by=algo.rank,
        seed=run.cfg.seed + i,
        iteration=run.pool_scope(i),
    )
    pairs = training.u2
    if not pairs:
        return None
    prompts = [run.training_prompt(p.example_id) for p, _ in pairs]
    chosen = run.generators[0].logprob.remote(prompts, [p.solution for p, _ in pairs])
    rejected = run.generators[0].logprob.remote(prompts, [n.solution for _, n in pairs])
    return mean_margin(ray.get(chosen), ray.get(rejected))


def stream(
    run: Run, requests: list[Request], sampling: Sampling, sink: Sink, explorer: Explorer | None = None
) -> Streamed:
    """Answer every request `sampling.n` times in chunks (by the policy, unless another explorer is
    given) and execute each chunk the moment it is answered; executed batches go to the sink. With
    generator.seeded_requests and a sink that names its seeding, each request carries its own seed."""
    explore = explorer or policy_explorer(run)
    n = sampling.n
    chunk = max(1, run.cfg.generator.chunk_size // n)  # prompts per call
    seeding = sink.seeding if run.cfg.generator.seeded_requests else None  # each request's own seed, or none
    pending_generation = {}
    for c, start in enumerate(range(0, len(requests), chunk)):
        part = requests[start : start + chunk]
        seeds = None if seeding is None else [request.seed(run.cfg.seed, *seeding) for request in part]
        pending_generation[explore(part, sampling, sink.with_self_reward, c, seeds)] = (start, part)
    result = Streamed([""] * (len(requests) * n), [None] * (len(requests) * n))
    started, generated_by = time.perf_counter(), result.generated
    generated = tqdm(total=len(requests), desc=f"{sink.label}: generate", unit="prompt", position=0)
    executed = tqdm(total=len(requests) * n, desc=f"{sink.label}: execute", unit="solution", position=1)
    executors = run.executors
    while pending_generation or executors.busy:
        ready, _ = ray.wait([*pending_generation, *executors.in_flight()], num_returns=1, timeout=run.cfg.env.poll_s)
        if not ready:
            executors.tick()  # long waits grow the executor pool
        elif ready[0] in pending_generation:
            start, part = pending_generation.pop(ready[0])
            samples: list[list[Sample]] = ray.get(ready[0])
            generated_by.tokens += sum(sample.num_tokens for per_request in samples for sample in per_request)
            generated_by.prompt_tokens += sum(per_request[0].prompt_tokens for per_request in samples)
            generated_by.cached_prompt_tokens += sum(per_request[0].cached_prompt_tokens for per_request in samples)
            generated_by.answers += sum(len(per_request) for per_request in samples)
            generated_by.seconds = time.perf_counter() - started
            # One call per input: its n solutions land in the pool together, never half an input.
            for r, (request, per_request) in enumerate(zip(part, samples)):
                batch = [((start + r) * n + k, request, sample) for k, sample in enumerate(per_request)]
                jobs = [(sample.text, request.example) for sample in per_request]
                executors.submit(batch, "execute", (jobs,), request.example.task)
            generated.update(len(part))
        else:
            batch, results = executors.collect(ready[0])
            for (slot, _, sample), outcome in zip(batch, results):
                result.solutions[slot], result.outcomes[slot] = sample.text, outcome
            if sink.keep is not None:
                sink.keep([(request, sample, outcome) for (_, request, sample), outcome in zip(batch, results)])
            executed.update(len(batch))
    generated.close()
    executed.close()
    return result


def recording(run: Run, i: int, source: str) -> Sink:
    """A sink that commits every executed batch to the pool as iteration i's `source` trajectories;
    each request is sampled from a seed of (i, source) and what it asks (`Request.seed`)."""

    def keep(batch: list[tuple[Request, Sample, Outcome]]) -> None:
        # A batch is one request's n samples, in order: the position is each one's `sample` key.
        run.pool.record(
            [_trajectory(request, sample, outcome, i, source, k) for k, (request, sample, outcome) in enumerate(batch)]
        )

    return Sink(source, with_self_reward=True, keep=keep, seeding=(i, source))


def evaluate(run: Run, shots: int, answers: Path | None = None) -> tuple[dict[str, dict[str, float]], Generated]:
    """Greedy accuracy of the current policy per eval set ("eval") with its 95 % interval ("ci95"),
    the share of its solutions that parsed ("parsed") and that ran ("executable"), for task inputs the accuracy per task
    ("per_task"), with eval.refine the accuracy after one refine pass ("eval_refine"); and what the
    policy generated. Each answer, with the expected one, goes to the JSONL file `answers` if given."""
    scores, generated, rows = {"eval": {}, "ci95": {}, "parsed": {}, "executable": {}}, Generated(), []
    for name, examples in run.eval_sets.items():
        problems = _describe(run, examples)
        requests = [Request(x, run.prompts.explore(p, shots, x.task)) for x, p in zip(examples, problems)]
        greedy = Sampling(1, run.cfg.eval.temperature, run.cfg.eval.max_new_tokens)
        answered = stream(run, requests, greedy, Sink("eval"))
        generated += answered.generated
        rows += [
            {"eval_set": name, "id": x.id, "expected": x.answer, "solution": solution, **asdict(outcome)}
            for x, solution, outcome in zip(examples, answered.solutions, answered.outcomes)
        ]
        scores["eval"][name] = accuracy([o.reward for o in answered.outcomes])
        scores["ci95"][name] = accuracy_interval([o.reward for o in answered.outcomes])
        if any(x.task for x in examples):  # web: success per task, as paper table 11
            scores.setdefault("per_task", {})[name] = per_task_accuracy(examples, answered.outcomes)
        scores["parsed"][name] = parse_rate([o.error for o in answered.outcomes])
        scores["executable"][name] = executable_rate([o.error for o in answered.outcomes])
        if run.cfg.eval.refine:  # paper table 8: one refine pass at inference
            again = [Request(x, run.prompts.refine(p, a)) for x, p, a in zip(examples, problems, answered.solutions)]
            refined = stream(run, again, greedy, Sink("eval"))
            generated += refined.generated
            scores.setdefault("eval_refine", {})[name] = accuracy([o.reward for o in refined.outcomes])
    if answers is not None:
        _write_jsonl(answers, rows)
    return scores, generated


def evaluate_model(
    cfg: RunConfig, dataset: str, size: int | None, shots: int | None, answers: Path | None = None
) -> dict[str, dict[str, float]]:
    """`envisions eval`: greedy accuracy of cfg.model.path (a model, or a run's best policy, RUN_DIR/best)
    on one dataset; each answer to the JSONL file `answers` if given. For a run, "policy" says which."""
    best = best_model(Path(cfg.model.path))
    model = resolve_model_path(best["model"] if best else cfg.model.path, cfg.model.cache_dir)
    if best is not None:
        print(
            f"{cfg.model.path}: evaluating its best policy, {policy_name(best['policy'])} "
            f"({best['eval_set']} {best['accuracy']:.1%} in the run): {best['model']}",
            flush=True,
        )
    if size is None and dataset.startswith("tasks:"):  # generated inputs have no natural end
        size = cfg.data.eval_size
    examples = load_examples(dataset, size, cfg.data.seed)
    run = Run(cfg, Path(cfg.run_dir), model, PromptBook.load(cfg.env.prompt_file), [], {dataset: examples})
    if shots is None:  # a model we trained answers the prompt it was trained on
        shots = cfg.algorithm.trained_shots if (Path(model) / TRAINED_MARKER).is_file() else cfg.algorithm.few_shot
    start = time.perf_counter()
    connect_ray(cfg)
    try:
        start_actors(run)
        started = time.perf_counter()
        scores, generated = evaluate(run, shots, answers)
        seconds = time.perf_counter() - started
        return {
            "accuracy": scores.pop("eval"),
            "problems": {dataset: len(examples)},
            **scores,
            "generated_tokens": generated.tokens,
            "prompt_tokens": generated.prompt_tokens,
            "cached_prompt_tokens": generated.cached_prompt_tokens,
            "seconds": seconds,
            # Ray and the actors launched; an engine loads in its actor meanwhile, and the eval's
            # first call waits for it, so "seconds" holds the engine's start.
            "start_seconds": started - start,
            **({"policy": best} if best else {}),
        }
    finally:
        stop_actors(run)


def best_model(run_dir: Path) -> dict | None:
    """What `envisions eval RUN_DIR` evaluates: the run's best policy as its last metrics line records
    it, {"policy", "eval_set", "accuracy", "model"}; None when `run_dir` is no run."""
    if not (run_dir / POOL_FILE).is_file():
        return None
    check_pool(run_dir / POOL_FILE)
    lines = read_lines(run_dir)
    best = lines[-1].get("best") if lines else None
    if best is None and lines:  # a run from before the best was recorded: decided the same way now
        best = best_policy(lines)
        if best is not None:
            pool = CandidatePool(str(run_dir / POOL_FILE))
            base = yaml.safe_load((run_dir / CONFIG_FILE).read_text())["model"]["path"]
            best["model"] = policy_model(pool.stage_detail, best["policy"], base)
            pool.close()
    if best is None:
        raise UserError(f"run {run_dir} has not evaluated a policy yet")
    return best


def plan(cfg: RunConfig, resume: bool = False) -> str:
    """`run --dry-run`: check config, model, data, environment and run directory; write nothing.
    Resuming, also what the run has done, as its pool and metrics record it, and what comes next."""
    from envisions_ray.memory import check_memory

    run = prepare(cfg, convert_model=False)
    make_env(cfg.env).close()
    progress = resume_progress(run) if resume else []
    if not resume and (run.run_dir / POOL_FILE).exists():
        raise _existing_run(run.run_dir)
    algo, gen = cfg.algorithm, cfg.generator
    executors = (
        f"{cfg.env.num_executors}-{cfg.env.max_executors}" if cfg.env.max_executors else str(cfg.env.num_executors)
    )
    grammar = "on" if run.grammar else ("off" if run.prompts.grammar else "none in the prompt file")
    return "\n".join(
        [
            f"plan: {algo.iterations} iterations of explore -> refine -> filter -> train -> eval",
            f"  model      {run.base_model} "
            f"({len(run.prompts.shots)} shots in the prompt file, {algo.few_shot} used in iteration 0, "
            f"{algo.trained_shots} by trained policies)",
            f"  train      {len(run.train_set)} inputs from {cfg.data.train}, K={algo.k}, "
            f"refine={'on' if algo.refine else 'off'}, N1={algo.n1}, N2={algo.n2}",
            "  eval       " + ", ".join(f"{name} ({len(examples)} inputs)" for name, examples in run.eval_sets.items()),
            f"  actors     {gen.num_actors} x {gen.backend} generator (grammar {grammar}), "
            f"{executors} x {cfg.env.name} executor, "
            f"{cfg.train.num_workers} train workers",
            f"  training   from {algo.train_from}, "
            + (f"{cfg.train.steps} steps, " if cfg.train.steps else f"{cfg.train.epochs} epoch(s), ")
            + f"lr {cfg.train.lr} {cfg.train.lr_schedule}",
            "  memory     " + "\n             ".join(check_memory(cfg, run.base_model)),
            f"  run_dir    {run.run_dir}",
            *progress,
        ]
    )


def resume_progress(run: Run) -> list[str]:
    """What a resumed run finds done, as its pool and metrics record it, and what it does next: the
    first stage that run_iteration would not skip."""
    pool, lines = _check_resumable(run), read_lines(run.run_dir)
    scores = {line["policy"]: " ".join(f"{name}={value:.1%}" for name, value in line["eval"].items()) for line in lines}
    rows, upcoming = {}, None
    if pool.is_done(-1, "eval"):
        rows["base model"] = f"evaluated: {scores.get(0, '')}"
    else:
        rows["base model"], upcoming = "not evaluated", "the base model's eval"
    for i in range(run.cfg.algorithm.iterations):
        if pool.is_done(i, "eval"):
            rows[f"iter {i + 1}"] = f"done: {scores.get(i + 1, '')}"
            continue
        rows[f"iter {i + 1}"], stage = _iteration_progress(run, pool, i)
        upcoming = upcoming or f"iter {i + 1}, from its {stage} stage"
    pool.close()
    rows["next"] = upcoming or "nothing: every iteration is done"
    return [f"resume: {run.run_dir}", *(f"  {label:<11}{text}" for label, text in rows.items())]


def _iteration_progress(run: Run, pool: CandidatePool, i: int) -> tuple[str, str]:
    """What is done of iteration i, which is not evaluated yet, and the first stage left to do."""
    algo = run.cfg.algorithm
    inputs, explored = len(run.inputs(i)), len(pool.inputs(i, "explore"))
    samples, refined = pool.count(i, "explore"), pool.count(i, "refine")
    stages = {  # in run_iteration's order: what is done of each, and whether all of it is
        "explore": (f"explored {explored}/{inputs} inputs", explored == inputs),
        "refine": (f"refined {refined}/{samples} samples", refined == samples),
        "select": ("selected", pool.is_done(i, "select")),
        "train": ("trained", pool.is_done(i, "train")),
        "eval": ("", False),
    }
    if not algo.refine or i < algo.refine_from_iteration:
        del stages["refine"]
    done = ", ".join(text for name, (text, complete) in stages.items() if complete or name in ("explore", "refine"))
    return done, next(name for name, (_, complete) in stages.items() if not complete)


def _check_resumable(run: Run) -> CandidatePool:
    """The run's pool, opened once its file and metrics.jsonl are found whole and every input it
    holds samples of is one of the run's: other data would mix two runs' memories."""
    path = run.run_dir / POOL_FILE
    if not path.is_file():
        raise _nothing_to_resume(run.run_dir)
    check_pool(path)
    read_lines(run.run_dir)
    pool = CandidatePool(str(path))
    known = {x.id for i in range(run.cfg.algorithm.iterations) for x in run.inputs(i)}
    strangers = sorted(pool.inputs() - known)
    if strangers:
        pool.close()
        raise UserError(
            f"{path} holds samples of input '{strangers[0]}', which data.train no longer gives: the data or its "
            "ids changed since the run started; resume on the data it started with, or start the run again with "
            "another run_dir"
        )
    return pool


def connect_ray(cfg: RunConfig) -> None:
    """Join the cluster named by RAY_ADDRESS (ray job submit sets it), else start a local one sized to the run."""
    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
        return
    executors = max(cfg.env.max_executors or 0, cfg.env.num_executors)
    cpus = (
        cfg.generator.num_actors * cfg.generator.num_cpus
        + executors
        + cfg.train.num_workers * cfg.train.cpus_per_worker
    )
    resources = {name: amount * executors for name, amount in cfg.env.resources.items()}  # e.g. one browser each
    # "local": always a new instance; otherwise ray.init joins a cluster that `ray start` on this
    # machine recorded in /tmp/ray/ray_current_cluster, and then refuses num_cpus.
    ray.init(
        address="local",
        num_cpus=int(cpus + 0.999),
        resources=resources,
        include_dashboard=False,
        logging_level="WARNING",
        runtime_env={"worker_process_setup_hook": f"{ray_workers.__name__}.{ray_workers.setup.__name__}"},
    )


def start_actors(run: Run) -> None:
    run.executors = ExecutorPool(run.cfg.env)
    newest = run.pool.newest_checkpoint() if run.pool else None  # set when resuming
    _use_policy(run, newest or run.base_model)


def _use_policy(run: Run, model: str) -> None:
    """Generators on `model`: loaded in place into running ones, or started when there are none."""
    if run.policy_file is not None:  # first: a generator restarted from now on must come back on `model`
        run.policy_file.write_text(model)
    if not run.generators:
        policy_file = str(run.policy_file) if run.policy_file else None
        run.generators = start_generators(run.cfg.generator, model, run.cfg.model.dtype, policy_file)
    elif model != run.policy:
        ray.get([g.load.remote(model) for g in run.generators])
    run.policy = model


def _stop_generators(run: Run) -> None:
    stop_generators(run.generators)
    run.generators = []


def stop_actors(run: Run) -> None:
    """Free the actors' CPUs and memory (and the pool's database handle) for whatever runs next."""
    _stop_generators(run)
    if run.executors is not None:
        run.executors.close()
    if run.pool is not None:
        ray.kill(run.pool.actor)
    run.executors, run.pool = None, None


def _describe(run: Run, examples: list[Example]) -> list[str]:
    """What the model reads for each example, asked of the executors once per example (web:
    a browser reset and a page rendering), spread over the pool."""
    todo = list({x.id: x for x in examples if x.id not in run.problems}.values())
    batches = [todo[start : start + DESCRIBE_BATCH] for start in range(0, len(todo), DESCRIBE_BATCH)]
    described = run.executors.map("describe", [(batch,) for batch in batches], [batch[0].task for batch in batches])
    run.problems.update({x.id: text for batch, texts in zip(batches, described) for x, text in zip(batch, texts)})
    run.tasks.update({x.id: x.task for x in todo})
    return [run.problems[x.id] for x in examples]


def _explore_prompt(run: Run, example: Example, shots: int) -> str:
    return run.prompts.explore(run.problems[example.id], shots, example.task)


def _check_inputs(
    cfg: RunConfig, train_set: list[Example], eval_sets: dict[str, list[Example]], prompts: PromptBook
) -> None:
    """No eval set meets a training problem (the same question on the same context; for generated
    (task, seed) inputs, a seed some iteration trains on), and every task has its demonstration
    for the few-shot prompt."""
    trained = seeded_training_ids(train_set, max(cfg.algorithm.iterations, 1), cfg.data.seed_stride)
    for name, examples in eval_sets.items():
        shared = sorted(trained & {x.id for x in examples})
        if shared:
            raise UserError(
                f"config: eval set '{name}' shares inputs with training (first: {shared[0]}); "
                "move its first seed past the training seeds"
            )
    training_problems = {problem_key(x) for x in train_set if not x.task}
    for name, examples in eval_sets.items():
        leaked = next((x for x in examples if problem_key(x) in training_problems), None)
        if leaked is not None:
            raise UserError(
                f"config: eval set '{name}' holds a training problem ({leaked.id}: {leaked.question[:60]!r}); "
                "hold it out of data.train, e.g. PATH[:-500] for training and PATH[-500:] for dev"
            )
    wanted = max(cfg.algorithm.few_shot, cfg.algorithm.trained_shots)
    for x in [*train_set, *(x for examples in eval_sets.values() for x in examples)]:
        if len(prompts.shots_for(x.task)) < wanted:
            count = len(prompts.shots_for(x.task))
            raise UserError(
                f"{cfg.env.prompt_file} has {count} demonstration(s)"
                + (f" for task '{x.task}'" if x.task else "")
                + f", fewer than algorithm.few_shot ({cfg.algorithm.few_shot}) or algorithm.trained_shots "
                f"({cfg.algorithm.trained_shots})"
            )


def _check_context(
    cfg: RunConfig, base_model: str, prompts: PromptBook, train_set: list[Example], eval_sets: dict[str, list[Example]]
) -> None:
    """Every exploration and eval prompt leaves room for its answer: its tokens and max_new_tokens
    within generator.max_model_len and the model's max_position_embeddings. Counted where the model's
    tokenizer.json is here (a directory, a converted packaged model) and the environment tells the
    problem without running (math, logic); a web page is only seen in a browser."""
    describe = offline_describe(cfg.env.name)
    if describe is None:
        return
    algo = cfg.algorithm
    shots = max(algo.few_shot, algo.trained_shots if algo.iterations else 0)  # the more shots, the longer
    asked = [(x, "generator.max_new_tokens", cfg.generator.max_new_tokens) for x in train_set]
    asked += [(x, "eval.max_new_tokens", cfg.eval.max_new_tokens) for examples in eval_sets.values() for x in examples]
    directory = model_directory(base_model, cfg.model.cache_dir)
    lengths = token_counts(directory, [prompts.explore(describe(x), shots, x.task) for x, _, _ in asked])
    if lengths is None:
        return
    limits = [(cfg.generator.max_model_len, "generator.max_model_len")]
    positions = max_positions(directory)
    if positions is not None:
        limits.append((positions, f"max_position_embeddings in {directory / 'config.json'}"))
    limit, limited_by = min(limits)
    length, (x, key, room) = max(zip(lengths, asked), key=lambda pair: pair[0] + pair[1][2])
    if length + room > limit:
        raise UserError(
            f"config: the prompt of input '{x.id}' ({shots} shots) is {length} tokens, and {key} ({room}) more "
            f"make {length + room}: over the {limit} of {limited_by}"
        )


def _check_writable(run_dir: Path) -> None:
    """The run directory exists as a writable directory, or its nearest existing parent is one. Tried,
    not read from permission bits, which root, read-only mounts and /proc make untrue: a directory is
    made there and removed."""
    try:
        existing = next(p for p in [run_dir, *run_dir.parents] if p.exists())
    except OSError as err:  # a name too long
        raise UserError(f"run directory {run_dir} is not writable: {err.strerror}") from None
    if not existing.is_dir():
        raise UserError(f"run directory {run_dir} is not writable: {existing} is not a directory")
    try:
        tempfile.TemporaryDirectory(dir=existing, prefix=WRITE_PROBE_PREFIX).cleanup()
    except OSError as err:
        raise UserError(
            f"run directory {run_dir} is not writable: no directory can be made in {existing} ({err.strerror})"
        ) from None


def _trained(run: Run, i: int) -> dict | None:
    """Iteration i's finished training: {"checkpoint", "loss", "dpo_loss"}, or None."""
    detail = run.pool.stage_detail(i, "train")
    return None if detail is None else {"loss": None, "dpo_loss": None, **json.loads(detail)}


def _trajectory(
    request: Request, sample: Sample, outcome: Outcome, iteration: int, source: str, index: int
) -> Trajectory:
    return Trajectory(
        request.example.id,
        sample.text,
        outcome.reward,
        sample.self_reward,
        iteration,
        source,
        outcome.output,
        outcome.error,
        parent_id=request.parent.id if request.parent else None,
        sample=index,
    )


@contextmanager
def _claimed_run_dir(run_dir: Path, resume: bool):
    """A new run needs an empty, writable directory; a resumed one needs its pool. Either way one
    driver at a time: the lock is the kernel's, so it goes with a killed driver and --resume works."""
    has_pool = (run_dir / POOL_FILE).exists()
    if resume and not has_pool:
        raise _nothing_to_resume(run_dir)
    if not resume and has_pool:
        raise _existing_run(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = (run_dir / LOCK_FILE).open("a+")
    except OSError as err:
        raise UserError(f"run directory {run_dir} is not writable: {err.strerror}") from None
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            raise UserError(f"{run_dir} is in use by another driver ({lock.read().strip()}); stop it first") from None
        lock.truncate(0)
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        lock.flush()
        yield


def _nothing_to_resume(run_dir: Path) -> UserError:
    return UserError(f"nothing to resume in {run_dir}: it has no {POOL_FILE}")


def _existing_run(run_dir: Path) -> UserError:
    return UserError(f"{run_dir} already holds a run: resume it with --resume {run_dir}, or set another run_dir")


def _export(path: Path, examples: list[TrainExample | PreferenceExample]) -> None:
    _write_jsonl(path, [asdict(e) for e in examples])


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def _answers_file(run: Run, policy: int) -> Path:
    """Where policy k's eval answers go: 0 is the base model, k the policy after iteration k."""
    return run.run_dir / "answers" / f"policy-{policy}.jsonl"


def _new_restarts(run: Run) -> dict[str, int]:
    """Restarts of each kind since the last metrics line: Ray restarts dead actors unseen, and its
    actor table counts them."""
    now = actor_restarts()
    new = {kind: now[kind] - run.restarts_seen[kind] for kind in now}
    run.restarts_seen = now
    return new


def _record(run: Run, line: dict) -> None:
    """Append a metrics line with the best policy so far (envisions_ray/best.py), then point
    RUN_DIR/best at it: a driver killed in between leaves the line, and a resumed one re-links."""
    line = {**line, "best": _best(run, [*read_lines(run.run_dir), line])}
    with (run.run_dir / METRICS_FILE).open("a") as metrics:
        metrics.write(json.dumps(line) + "\n")
    if line["best"] is not None:
        point_best(run.run_dir, line["best"]["model"])
    print(format_summary(line), flush=True)


def _best(run: Run, lines: list[dict]) -> dict | None:
    """The best of these metrics lines, with its model ("model"); None without an eval set."""
    best = best_policy(lines)
    if best is None:
        return None
    return {**best, "model": model_location(policy_model(run.pool.stage_detail, best["policy"], run.base_model))}


def format_summary(line: dict) -> str:
    ran, parsed, bounds = (line.get(key, {}) for key in ("executable", "parsed", "ci95"))  # older runs lack them
    scores = " ".join(
        f"{name}={value:.1%}{_interval(bounds.get(name))} "
        f"(parsed {parsed.get(name, float('nan')):.0%} ran {ran.get(name, float('nan')):.0%})"
        for name, value in line["eval"].items()
    )
    if "eval_refine" in line:
        scores += " refined " + " ".join(f"{name}={value:.1%}" for name, value in line["eval_refine"].items())
    restarted = " ".join(f"{kind}={n}" for kind, n in line.get("restarts", {}).items() if n)
    faults = f" | restarted {restarted}" if restarted else ""
    if "iteration" not in line:
        return f"[base model] eval {scores}{faults}"
    best = line.get("best")  # older runs lack it
    if best is not None:
        scores += f" | best {policy_name(best['policy'])} ({best['eval_set']}={best['accuracy']:.1%})"
    stages = " ".join(f"{stage}={s:.0f}s" for stage, s in line["seconds"].items())
    loss = "n/a" if line["train_loss"] is None else f"{line['train_loss']:.3f}"
    if line.get("dpo_loss") is not None:
        loss += f" dpo-loss {line['dpo_loss']:.3f}"
    cut, dropped = line.get("train_prompt_cut", 0), line.get("train_dropped_too_long", 0)  # older runs lack them
    if cut or dropped:
        loss += f" (over train.max_length: {cut} prompts cut, {dropped} dropped)"
    margin = "" if line.get("delta_logp") is None else f" Δlogp {line['delta_logp']:+.2f}"
    return (
        f"[iter {line['iteration']}] explored {line['explored']}/{line['inputs']} positives {line['positives']} "
        f"unique-correct {line['unique_correct']} pool {line['pool_size']} |U1| {line['u1']} |U2| {line['u2']} "
        f"loss {loss}{margin} eval {scores} | {stages}{faults}"
    )


def _interval(bounds: list[float] | None) -> str:
    return "" if bounds is None else f" [{bounds[0]:.1%}, {bounds[1]:.1%}]"


def _env_events(run: Run) -> dict[str, int]:
    """Since this driver started: the environments' own counts (web: browser starts, crashes,
    restarts), and the peak count of env.count_processes on this node (web: Chromium processes)."""
    return {**run.executors.events(), "peak_processes": run.executors.peak_processes}


@contextmanager
def _timed(run: Run, i: int, stage: str):
    """Adds the block's wall time to iteration i's `stage` (select and a method's examples may
    share one), in the pool under this driver's session: a retried call rewrites, never adds twice."""
    start = time.perf_counter()
    yield
    total = run.stage_seconds.get((i, stage), 0.0) + time.perf_counter() - start
    run.stage_seconds[(i, stage)] = total
    run.pool.record_seconds(i, stage, run.session, total)
