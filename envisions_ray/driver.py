"""The driver: T iterations of explore -> refine -> filter -> pool -> train -> evaluate.

`run_iteration` is one whole iteration of ALGORITHM.md, a screen of stages that reads top to
bottom. Each stage keeps its own bookkeeping (envisions_ray/stages.py): what a killed driver
finished is in the candidate pool, which is all `--resume` needs. Generation overlaps execution
(envisions_ray/streaming.py); the eval, the metrics line and the cluster have modules of their own.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from envisions_ray.actors.pool import BASE_MODEL
from envisions_ray.actors.restarts import actor_restarts
from envisions_ray.best import point_best, read_lines
from envisions_ray.cluster import connect_ray, start_actors, start_pool, stop_actors
from envisions_ray.config import RunConfig, to_yaml
from envisions_ray.data import load_examples, write_jsonl
from envisions_ray.errors import UserError
from envisions_ray.evaluation import answers_file, evaluate, logprob_margin
from envisions_ray.memory import check_memory
from envisions_ray.methods import METHODS, Examples
from envisions_ray.metrics_line import Scores
from envisions_ray.model import check_model_path, resolve_model_path
from envisions_ray.paths import CONFIG_FILE, POLICY_FILE, POOL_FILE, absolute_paths
from envisions_ray.prompts import PromptBook
from envisions_ray.records import base_line, best_so_far, iteration_line
from envisions_ray.resume import check_resumable
from envisions_ray.run_lock import claimed_run_dir
from envisions_ray.run_state import Generated, Request, Run, policy_explorer, teacher_explorer
from envisions_ray.stages import Stages
from envisions_ray.streaming import describe
from envisions_ray.teacher import Teacher
from envisions_ray.trained import Trained
from envisions_ray.training import train_policy
from envisions_ray.types import Sampling
from envisions_ray.validation import check_context, check_inputs, check_writable


def prepare(cfg: RunConfig, convert_model: bool = True) -> Run:
    """The checks that need data or files (load_config has made the rest), before anything is
    written or started. Without `convert_model` a packaged model is only checked, not converted,
    so nothing is written."""
    if not cfg.data.eval:  # the policies would be trained unmeasured, and the best one unknown
        raise UserError("config: data.eval names no eval set; add one, e.g. data.eval.dev=builtin:arith:eval")
    prompts = PromptBook.load(cfg.env.prompt_file)
    train_set = load_examples(cfg.data.train, cfg.data.train_size, cfg.data.seed)
    eval_sets = {name: load_examples(spec, cfg.data.eval_size, cfg.data.seed) for name, spec in cfg.data.eval.items()}
    base_model = check_model_path(cfg.model.path)
    check_memory(cfg, base_model)  # a run that cannot fit is refused here, before a packaged model's conversion
    method = METHODS[cfg.method]
    teacher = Teacher(cfg.distill) if method.explorer == "teacher" else None
    check_inputs(cfg, train_set, eval_sets, prompts)
    check_context(cfg, base_model, prompts, train_set, eval_sets)
    check_writable(Path(cfg.run_dir).resolve())  # before a minute's conversion, not after it
    if convert_model:
        base_model = resolve_model_path(cfg.model.path, cfg.model.cache_dir)
    if method.stage == "judge":
        prompts.judge("", "", cfg.self_rewarding.max_score)  # a prompt file without a judge fails here, not mid-run
    run = Run(cfg, Path(cfg.run_dir).resolve(), base_model, prompts, train_set, eval_sets)
    run.explorer = teacher_explorer(teacher) if teacher else policy_explorer(run.generators, run.grammar)
    return run


def run_experiment(cfg: RunConfig, resume: bool = False) -> None:
    """`envisions run`: the base model's eval, then the iterations, resumed from the pool when asked."""
    cfg = absolute_paths(cfg, Path.cwd())  # saved so, config.yaml lets --resume run from anywhere
    run = prepare(cfg)
    run.generators.policy_file = run.run_dir / POLICY_FILE
    with claimed_run_dir(run.run_dir, resume):
        if resume:
            check_resumable(run).close()  # before any actor starts
        (run.run_dir / CONFIG_FILE).write_text(to_yaml(cfg))
        connect_ray(cfg)
        run.pool = start_pool(run.run_dir / POOL_FILE)
        try:
            run.restarts_seen = actor_restarts()  # this job's actors so far (a test session runs several runs)
            start_actors(run)
            best = best_so_far(run, read_lines(run.run_dir))  # resumed: as metrics.jsonl and the pool record it
            if best is not None:
                point_best(run.run_dir, best["model"])
            evaluate_base_model(run)
            for iteration in range(cfg.algorithm.iterations):
                run_iteration(run, iteration)
            print(f"done: {run.run_dir} (envisions report {run.run_dir} draws the curves)")
        finally:
            stop_actors(run)


def evaluate_base_model(run: Run) -> None:
    """Policy 0: the base model, with the prompt file's few shots."""
    stages = Stages(run, BASE_MODEL)
    if stages.finished:
        return
    shots = run.cfg.algorithm.few_shot
    scores, generated = stages.timed("eval", lambda: evaluate(run, shots, answers_file(run, 0)))
    stages.record(base_line(run, scores, generated))


def run_iteration(run: Run, i: int) -> None:
    """Iteration i: pi_i explores and refines, the pool filters, pi_{i+1} trains and is evaluated."""
    stages, method = Stages(run, i), METHODS[run.cfg.method]
    if stages.finished:  # before a resume; start_actors loaded its policy
        return
    describe(run, [x for j in range(i + 1) for x in run.inputs(j)])  # the pool may train on any of them
    generation: dict[str, Generated] = {}  # what the policy did, per stage
    # 1. K solutions per input from pi_i (or the teacher's one), executed, self-rewarded
    sampling = method.explore_sampling(run.cfg)
    generation["explore"] = stages.sample("explore", _explore_requests(run, i), sampling, run.explorer)
    if _refines(run, i):  # 2. one refined solution per explored one
        generation["refine"] = stages.sample("refine", _refine_requests(run, i), _refine_sampling(run))
    stages.once("select", lambda: run.pool.select(i, long_term=run.long_term))  # 3-4. eq. 2 filter, dedup
    examples = stages.timed(method.stage, lambda: method.examples(run.method_context(), i))  # 5. U1, U2 or a baseline's
    _export(run.run_dir / f"iter-{i}" / "train.jsonl", examples)
    trained = stages.once("train", lambda: _train(run, i, examples), Trained)  # 6. L1 + L2, or SFT / DPO
    policy = trained.checkpoint if trained else run.generators.policy
    stages.timed("handoff", lambda: run.generators.use(policy))  # 7. pi_{i+1}
    scores, generation["eval"], margin = stages.timed("eval", lambda: _evaluate_policy(run, i))  # evaluate pi_{i+1}
    stages.record(iteration_line(run, i, examples, trained, scores, margin, generation))  # metrics.jsonl


def _explore_requests(run: Run, i: int) -> list[Request]:
    """Every input of iteration i, in pi_i's prompt: few-shot for pi_0, for a trained policy the
    prompt it was trained on."""
    shots = run.shots()
    return [Request(x, run.prompts.explore(run.problems[x.id], shots, x.task)) for x in run.inputs(i)]


def _refines(run: Run, i: int) -> bool:
    algo = run.cfg.algorithm
    return algo.refine and i >= algo.refine_from_iteration


def _refine_requests(run: Run, i: int) -> list[Request]:
    """One request per explored solution: its input's problem and the solution, to be refined."""
    inputs = {x.id: x for x in run.inputs(i)}
    return [
        Request(inputs[t.example_id], run.prompts.refine(run.problems[t.example_id], t.solution), t)
        for t in run.pool.trajectories(i, "explore")
    ]


def _refine_sampling(run: Run) -> Sampling:
    return Sampling(1, run.cfg.generator.temperature, run.cfg.generator.max_new_tokens)


def _train(run: Run, i: int, examples: Examples) -> Trained | None:
    """pi_{i+1}, from the base model (or pi_i); None when there is nothing to train on."""
    if not (examples.sft or examples.pairs):
        return None
    if run.cfg.generator.num_gpus > 0 or run.cfg.generator.stop_while_training:
        run.generators.stop()  # the trainer needs their GPUs or memory; they come back on the new weights
    return train_policy(run, i, examples)


def _evaluate_policy(run: Run, i: int) -> tuple[Scores, Generated, float | None]:
    """pi_{i+1}'s eval, in its own prompt (run.shots(): it may be the base model, when nothing was
    trained), and its Δlog p."""
    scores, generated = evaluate(run, run.shots(), answers_file(run, i + 1))
    return scores, generated, logprob_margin(run, i)


def _export(path: Path, examples: Examples) -> None:
    write_jsonl(path, [asdict(e) for e in examples.sft + examples.pairs])
