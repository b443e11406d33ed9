"""The engine matrix of benchmarks/bench_generate.py (benchmarks/vllm_matrix.py: bindings, threads,
KV-cache sizes) and the log-line parser of benchmarks/bench_engine_start.py, on canned vLLM output;
no engine starts, and neither imports torch."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """A benchmark script as a module (benchmarks/ is no package)."""
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench_generate():
    """The matrix bench_generate.py runs, without bench_generate.py's imports of torch and transformers."""
    return load_benchmark("vllm_matrix")


@pytest.fixture(scope="module")
def bench_engine_start():
    return load_benchmark("bench_engine_start")


def test_bindings_give_the_threads_vllm_runs(bench_generate):
    assert bench_generate.bind_threads("nobind", 3, auto_threads=1) == 3
    assert bench_generate.bind_threads("auto", 3, auto_threads=1) == 1
    assert bench_generate.bind_threads("0-1", 1, auto_threads=1) == 2
    assert bench_generate.bind_threads("0,2-4,3", 1, auto_threads=1) == 4  # a core listed twice counts once
    for bad in ("0-1|2-3", "all", "", "0,,1", "1-"):  # several ranks, or not a core list
        with pytest.raises(ValueError):
            bench_generate.bind_threads(bad, 1, auto_threads=1)


def test_the_matrix_multiplies_only_the_threads_of_unpinned_engines(bench_generate):
    engines = bench_generate.engine_matrix(
        ["eager", "compiled"], [32], [1.0, 2.0], ["float32"], ["nobind", "auto", "0-1"], [1, 2], auto_threads=1
    )
    # per mode and cache size: nobind on 1 and on 2 threads, auto once, 0-1 once
    assert len(engines) == 2 * 2 * 4
    first = engines[:4]
    assert [(e.bind, e.threads) for e in first] == [("nobind", 1), ("nobind", 2), ("auto", 1), ("0-1", 2)]
    assert {(e.mode, e.kv_cache_gib) for e in first} == {("eager", 1.0)}
    assert (
        "KV cache 1 GiB" in first[0].name
        and "bind auto, 1 thread" in first[2].name
        and first[1].name.endswith("2 threads")
    )


def test_the_estimate_counts_each_start_and_row(bench_generate):
    eager = bench_generate.Engine("eager", 32, 2.0, "float32", "nobind", 2)
    compiled = bench_generate.Engine("compiled", 32, 2.0, "float32", "nobind", 2)
    flops = int(bench_generate.GIGA)  # 1 GFLOP a token: a row of DECODE_ESTIMATE_GFLOPS tokens takes 1 s
    tokens = int(bench_generate.DECODE_ESTIMATE_GFLOPS)
    starts = bench_generate.START_ESTIMATE_SECONDS
    assert bench_generate.estimate_seconds([eager, compiled], 3, tokens, flops) == pytest.approx(
        starts["eager"] + starts["compiled"] + 2 * 3
    )


def test_an_engine_environment_is_set_then_restored(bench_generate, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "7")
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    engine = bench_generate.Engine("eager", 32, 2.0, "float32", "0-1", 2)
    with bench_generate.engine_environment(engine):
        assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0-1" and os.environ["OMP_NUM_THREADS"] == "2"
    assert os.environ["OMP_NUM_THREADS"] == "7" and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ
    with pytest.raises(RuntimeError), bench_generate.engine_environment(engine):
        raise RuntimeError("an engine that fails to start")
    assert os.environ["OMP_NUM_THREADS"] == "7" and "VLLM_CPU_OMP_THREADS_BIND" not in os.environ


def test_listed_options(bench_generate):
    assert bench_generate.listed("1, 2.5,", float) == [1.0, 2.5]
    assert bench_generate.listed("nobind,0-1", str) == ["nobind", "0-1"]


# Lines of a real eager SmolLM2 start (benchmarks/bench_engine_start.py's child, vLLM 0.32.0 CPU,
# 2 vCPUs, bf16), cut short, with the noise between them that the parser must skip.
EAGER_OUTPUT = """\
Triton is installed, but doesn't include CPU backend. Disabling Triton.
(MainProcess pid=30479) INFO 12-05 16:33:22 [api_utils.py:286] non-default args: {'dtype': 'bfloat16'}
(MainProcess pid=30479) INFO 12-05 16:33:22 [compilation.py:317] Enabled custom fusions: norm_quant, act_quant
Triton is installed, but doesn't include CPU backend. Disabling Triton.
(EngineCore pid=744) INFO 12-05 16:33:41 [core.py:133] Initializing a V1 LLM engine (v0.32.0) with config: ...
(EngineCore pid=744) INFO 12-05 16:33:41 [ompmultiprocessing.py:185] OpenMP thread binding info:
(EngineCore pid=744) INFO 12-05 16:33:41 [ompmultiprocessing.py:185] \treserved_cpus=[]
[W1205 16:33:53.199039600 utils.cpp:68] Warning: NUMA binding: Using MEMBIND policy for memory allocation
(VllmWorker-0 pid=31013) WARNING 12-05 16:33:53 [vllm.py:725] Model Runner V2 requires Triton; using V1.
(Worker pid=31013) INFO 12-05 16:33:54 [cpu_model_runner.py:68] Starting to load model /tmp/es-untied-8h54ijx0...
(Worker pid=31013) INFO 12-05 16:33:54 [base_loader.py:82] Initializing model took 0.189519 seconds
Loading safetensors checkpoint shards: 100% Completed | 1/1 [00:00<00:00,  1.79it/s]
(Worker pid=31013) INFO 12-05 16:33:55 [default_loader.py:501] Loading weights took 0.60 seconds
(EngineCore pid=744) INFO 12-05 16:33:59 [kv_cache_utils.py:2327] CPU KV cache size: 93,184 tokens
(EngineCore pid=744) INFO 12-05 16:34:06 [core.py:402] init engine (profile, create kv cache, warmup model) took 7.89 s
(MainProcess pid=30479) INFO 12-05 16:34:10 [hf.py:648] Detected the chat template content format to be 'string'.
ENGINE-START-CHILD {"import": 1.3, "engine": 54.6, "first_generate": 0.5}
"""
# Lines of the real compiled start that followed, on the same machine (pids shortened, paths cut).
COMPILED_OUTPUT = """\
(Worker pid=253) INFO 12-05 16:36:07 [default_loader.py:501] Loading weights took 1.80 seconds
(Worker pid=253) INFO 12-05 16:36:09 [cpu_model_runner.py:87] Warming up model for the compilation...
(EngineCore pid=98) INFO 12-05 16:37:11 [shm_broadcast.py:871] No available shared memory broadcast block found
(Worker pid=253) INFO 12-05 16:38:28 [decorators.py:743] [backbone] saved AOT compiled function to /root/.cache/vllm
(Worker pid=253) INFO 12-05 16:38:38 [monitor.py:91] [backbone] Initial profiling/warmup run took 9.82 s
(Worker pid=253) INFO 12-05 16:38:45 [cpu_model_runner.py:91] Warming up done.
(Worker pid=253) INFO 12-05 16:38:45 [cpu_worker.py:260] Explicitly set (2.0/23.54) GiB for KV cache on node 0.
(EngineCore pid=98) INFO 12-05 16:38:45 [kv_cache_utils.py:2327] CPU KV cache size: 93,184 tokens
(EngineCore pid=98) INFO 12-05 16:38:56 [core.py:402] init engine (profile, create kv cache, warmup model) took 166.69 s
"""


def test_the_parser_reads_the_parts_of_an_eager_start(bench_engine_start):
    table = dict(bench_engine_start.parts_table(10.5, EAGER_OUTPUT))
    assert table["untied copy (tied models only)"] == 10.5
    assert table["import vllm"] == 1.3
    assert table["engine core process start: spawn, imports"] == 19.0  # 16:33:22 -> 16:33:41
    assert table["worker process start: spawn, imports"] == 12.0  # 16:33:41 -> the VllmWorker line at 16:33:53
    assert table["model built, no weights yet"] == pytest.approx(0.189519)
    assert table["weights loaded"] == 0.60
    assert table["init engine: profile, KV cache, warm-up"] == 7.89
    assert table["  of which the profiling/warm-up run"] is None  # eager: vLLM skips the warm-up on CPU
    assert table["  of which the KV cache allocated"] == 7.0  # 16:33:59 -> 16:34:06
    assert table["rest of LLM()"] == pytest.approx(54.6 - 19 - 12 - 0.189519 - 0.60 - 7.89)
    assert table["total"] == pytest.approx(10.5 + 1.3 + 54.6 + 0.5)


def test_the_parser_reads_compilation_and_survives_a_child_that_died(bench_engine_start):
    table = dict(bench_engine_start.parts_table(None, COMPILED_OUTPUT))
    assert table["  of which the compiled warm-up: torch.compile and its run"] == 156.0  # 16:36:09 -> 16:38:45
    assert table["  of which the profiling/warm-up run"] == 9.82
    assert table["  of which the KV cache allocated"] == 11.0  # 16:38:45 -> 16:38:56
    assert table["init engine: profile, KV cache, warm-up"] == 166.69
    assert table["untied copy (tied models only)"] is None  # an untied model: no copy
    assert table["engine: vllm.LLM(...) in all"] is None and table["rest of LLM()"] is None
    assert table["engine core process start: spawn, imports"] is None  # no MainProcess line before it
    assert bench_engine_start.compile_cache(COMPILED_OUTPUT) == "compiled, and saved to vLLM's compile cache"
    assert bench_engine_start.compile_cache(EAGER_OUTPUT) == ""


def test_an_engine_in_process_logs_without_a_process_label(bench_engine_start):
    """With VLLM_ENABLE_V1_MULTIPROCESSING=0 nothing is spawned: the lines carry no label."""
    output = "INFO 12-05 16:50:01 [default_loader.py:501] Loading weights took 0.60 seconds\n"
    (line,) = bench_engine_start.log_lines(output)
    assert line.process == "MainProcess" and line.stamp.minute == 50
    table = dict(bench_engine_start.parts_table(None, output))
    assert table["weights loaded"] == 0.60 and table["worker process start: spawn, imports"] is None


def test_log_lines_are_told_apart_from_noise(bench_engine_start):
    lines = bench_engine_start.log_lines(EAGER_OUTPUT)
    assert [line.process for line in lines].count("Worker") == 4  # VllmWorker-0 is the worker too
    assert all(line.process in {"MainProcess", "EngineCore", "Worker"} for line in lines)
    assert lines[0].text.startswith("[api_utils.py:286]")
