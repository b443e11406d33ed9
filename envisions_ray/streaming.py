"""How a run asks: the policy (or another explorer) answers requests in chunks, and each chunk's
solutions go to the executor actors the moment it is answered (`ray.wait`), so execution overlaps
generation. The executors also tell what the model reads of each example (`describe`)."""

from __future__ import annotations

import time

import ray
from tqdm import tqdm

from envisions_ray.actors.backend import Sample
from envisions_ray.run_state import Explorer, Request, Run, Sink, Streamed, policy_explorer
from envisions_ray.types import Example, Sampling

DESCRIBE_BATCH = 16  # examples per describe call: few calls, yet spread over every executor


def stream(
    run: Run, requests: list[Request], sampling: Sampling, sink: Sink, explorer: Explorer | None = None
) -> Streamed:
    """Answer every request `sampling.n` times in chunks (by the policy, unless another explorer is
    given) and execute each chunk the moment it is answered; executed batches go to the sink. With
    generator.seeded_requests and a sink that names its seeding, each request carries its own seed."""
    explore = explorer or policy_explorer(run.generators, run.grammar)
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
            executors.tick()  # long waits grow the executor group
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
                executors.submit_execution(batch, jobs, request.example.task)
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


def describe(run: Run, examples: list[Example]) -> list[str]:
    """What the model reads for each example, asked of the executors once per example (web:
    a browser reset and a page rendering), spread over the pool."""
    todo = list({x.id: x for x in examples if x.id not in run.problems}.values())
    batches = [todo[start : start + DESCRIBE_BATCH] for start in range(0, len(todo), DESCRIBE_BATCH)]
    described = run.executors.describe(batches, [batch[0].task for batch in batches])
    run.problems.update({x.id: text for batch, texts in zip(batches, described) for x, text in zip(batch, texts)})
    run.tasks.update({x.id: x.task for x in todo})
    return [run.problems[x.id] for x in examples]
