"""Per-request sampling seeds: the same config on the same machine explores the same programs.

A request's samples are drawn from a seed of its own, derived from what the request is (the run's
seed, the iteration, the stage, the input and, for a refinement, the sample it refines) and from
nothing about how it was sent: not its chunk, its place in the chunk, or the generator that
answered it. So `generator.chunk_size`, `generator.num_actors`, the round-robin order, a restarted
generator's rerun of its chunk and a resumed run all leave what a request draws as it was.

Sample k of a request with seed s is drawn from seed s + k: vLLM v1 gives the k-th of a request's
n child requests `seed + k` (vllm/v1/engine/parallel_sampling.py
`ParentRequest._get_child_sampling_params`), and the hf backend does the same. A seed is therefore
a multiple of SAMPLES_PER_SEED, and two requests draw from a common seed only if their hashes agree
on 46 bits (for 100,000 requests, a chance of about 1 in 14,000). Taken mod 2**31 and spread
over every integer, two of 10,000 requests with K = 5 would share one in five runs. Seeds stay
below 2**62: an int64 for vLLM and a valid seed for `torch.Generator`.
"""

from __future__ import annotations

import hashlib
import json

SAMPLES_PER_SEED = 1 << 16  # room for n seeds per request: s, s + 1, ..., s + n - 1
SEED_SLOTS = 1 << 46


def request_seed(run_seed: int, iteration: int, stage: str, input_id: str, parent: list | None = None) -> int:
    """The seed of one request's first sample. `parent` names the sample a refinement refines by
    its stable key (its iteration, source and sample index), never by its pool row id, which
    follows the order executed batches reached the pool; None for an exploration."""
    key = json.dumps([run_seed, iteration, stage, input_id, parent])
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return digest % SEED_SLOTS * SAMPLES_PER_SEED
