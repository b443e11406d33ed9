"""The vLLM engines benchmarks/bench_generate.py compares: one per combination of its options, with
the OpenMP threads each engine's worker runs, the environment that makes it run them, and a rough
estimate of the matrix's time. Apart from bench_generate.py so that its tests import no torch.

Bindings are values of vLLM's VLLM_CPU_OMP_THREADS_BIND (vllm/envs.py, read in
vllm/utils/ompmultiprocessing.py `OMPProcessManager._parse_omp_threads_bind_env`): `nobind`, our
default, runs the worker on OMP_NUM_THREADS threads, unpinned; `auto` pins one thread per physical
core of the first NUMA node, less one core kept for the scheduler process; a core list (`0-1`,
`0,1`) pins one thread per listed core. vLLM sets OMP_NUM_THREADS itself for the last two.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator, TypeVar

MODES = ("compiled", "eager")
# VLLM_CPU_OMP_THREADS_BIND's two words (vllm/utils/ompmultiprocessing.py); anything else is a core list.
NOBIND, AUTO_BIND = "nobind", "auto"
# One rank's core list as vLLM parses it (vllm/utils/cpu_resource_utils.py `parse_id_list`): ids and
# ranges. A `|` separates the lists of several ranks; our CPU engines have one worker, so it is refused.
CORE_LIST = re.compile(r"\d+(-\d+)?(,\d+(-\d+)?)*")
# For the estimate printed before the engines start, from SmolLM2 in float32 on a 2-vCPU AVX2 EPYC
# (docs/results/2026-11-30-epyc-avx2.md#generation): the slowest starts measured there, 188 s
# compiled and 57 s eager, rounded up; and its decode, about 40 tokens/s x 2 x 135M parameters =
# 11 GFLOP/s. A larger model starts more slowly; the generation estimate scales with its parameters.
START_ESTIMATE_SECONDS = {"compiled": 200.0, "eager": 60.0}
DECODE_ESTIMATE_GFLOPS = 11.0
GIGA = 1e9
Result = TypeVar("Result")


@dataclass(frozen=True)
class Engine:
    """One vLLM engine of the matrix: its settings, and the OpenMP threads its worker runs."""

    mode: str
    block_size: int
    kv_cache_gib: float
    dtype: str
    bind: str
    threads: int

    @property
    def name(self) -> str:
        return (
            f"vllm backend, {self.mode}, KV blocks of {self.block_size}, KV cache {self.kv_cache_gib:g} GiB, "
            f"{self.dtype}, bind {self.bind}, {self.threads} thread{'s' if self.threads != 1 else ''}"
        )


def listed(text: str, kind: Callable[[str], Result]) -> list[Result]:
    """A comma-separated option's values, each converted by `kind`."""
    return [kind(item.strip()) for item in text.split(",") if item.strip()]


def bind_threads(bind: str, threads: int, auto_threads: int) -> int:
    """The OpenMP threads vLLM's worker runs under a VLLM_CPU_OMP_THREADS_BIND value: OMP_NUM_THREADS
    for nobind, else one per pinned core (vllm/utils/ompmultiprocessing.py `configure_omp_envs`)."""
    if bind == NOBIND:
        return threads
    if bind == AUTO_BIND:
        return auto_threads
    if not CORE_LIST.fullmatch(bind):
        raise ValueError(f"a binding is nobind, auto or one core list such as 0-1 or 0,1; got {bind!r}")
    cores: set[int] = set()
    for part in bind.split(","):
        first, _, last = part.partition("-")
        cores.update(range(int(first), int(last or first) + 1))
    return len(cores)


def auto_bind_threads() -> int:
    """The threads `auto` binding gives one worker on this machine, as vLLM picks them on x86
    (vllm/utils/ompmultiprocessing.py `_get_autobind_cpu_ids`): one logical CPU per physical core of
    the first allowed NUMA node, less the one core it keeps for the scheduler where more than one is left."""
    from vllm.utils import cpu_resource_utils

    cpus = cpu_resource_utils.get_allowed_cpu_list()
    node = cpu_resource_utils.get_visible_memory_node()[0]
    cores = len({cpu.physical_core for cpu in cpus if cpu.numa_node == node})
    return cores - 1 if cores > 1 else cores


def engine_matrix(
    modes: list[str],
    block_sizes: list[int],
    kv_cache_gibs: list[float],
    dtypes: list[str],
    binds: list[str],
    threads: list[int],
    auto_threads: int,
) -> list[Engine]:
    """Every combination, in the order given, each engine once: a pinned binding sets its own
    thread count, so the thread counts multiply the nobind engines only."""
    engines = [
        Engine(mode, block_size, gib, dtype, bind, bind_threads(bind, count, auto_threads))
        for mode in modes
        for block_size in block_sizes
        for gib in kv_cache_gibs
        for dtype in dtypes
        for bind in binds
        for count in threads
    ]
    return list(dict.fromkeys(engines))


def estimate_seconds(engines: list[Engine], rows_per_engine: int, tokens_per_row: int, flops_per_token: int) -> float:
    """A rough upper estimate of the matrix's time: each engine's start, and each row's tokens (all
    of max_new_tokens, stops ignored, with the row's warm-up) at DECODE_ESTIMATE_GFLOPS, so the slower
    the bigger the model; the roofs and the baselines are left out."""
    starts = sum(START_ESTIMATE_SECONDS[engine.mode] for engine in engines)
    row_seconds = tokens_per_row * flops_per_token / (DECODE_ESTIMATE_GFLOPS * GIGA)
    return starts + len(engines) * rows_per_engine * row_seconds


@contextmanager
def engine_environment(engine: Engine) -> Iterator[None]:
    """The engine's binding and threads in this process's environment, which the engine's spawned
    processes inherit (VLLMBackend only sets them where unset); the previous values back afterwards."""
    settings = {"VLLM_CPU_OMP_THREADS_BIND": engine.bind, "OMP_NUM_THREADS": str(engine.threads)}
    saved = {key: os.environ.get(key) for key in settings}
    os.environ.update(settings)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
