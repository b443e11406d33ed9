"""The memory estimate (envisions_ray/memory.py): hand-computed parts, ZeRO's shares, checkpointing,
the calibration case, and the one-line refusal of a run that cannot fit."""

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from envisions_ray import memory
from envisions_ray.cli import main
from envisions_ray.config import RunConfig
from envisions_ray.errors import UserError
from envisions_ray.memory import (
    ACTIVATION_CALIBRATION,
    CHECKPOINT_BYTES_PER_HIDDEN,
    GIB,
    PACKAGED_CONFIGS,
    ModelShape,
    check_memory,
    estimate,
    model_shape,
)

QUICKSTART = "conf/math_quickstart.yaml"
# 2 layers of width 8, an MLP of 16, 2 heads of 4, a vocabulary of 10, the head tied to the embedding.
TINY = {
    "model_type": "llama",
    "hidden_size": 8,
    "intermediate_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "vocab_size": 10,
    "tie_word_embeddings": True,
}
# embedding 10 x 8; per layer q, k, v, o 4 x 8 x 8, MLP 3 x 8 x 16, two norms of 8; the final norm.
TINY_PARAMS = 80 + 2 * (256 + 384 + 16) + 8


def tiny_cfg(**train) -> RunConfig:
    cfg = RunConfig(run_dir="unused")
    cfg.train = replace(cfg.train, **{"num_workers": 1, "micro_batch_size": 2, "max_length": 3, **train})
    cfg.generator = replace(cfg.generator, backend="vllm", num_actors=1, num_gpus=0.0, kv_cache_gib=1.0)
    cfg.model = replace(cfg.model, dtype="float32")
    cfg.env = replace(cfg.env, num_executors=2, max_executors=None)
    return cfg


def test_parameters_are_counted_from_the_config():
    shape = ModelShape.from_config(TINY)
    assert (shape.params, shape.hidden_size, shape.intermediate_size, shape.num_layers) == (TINY_PARAMS, 8, 16, 2)
    assert ModelShape.from_config({**TINY, "tie_word_embeddings": False}).params == TINY_PARAMS + 80
    # The packaged Qwen's GGUF header: 630,167,424 parameters, its own output layer, q/k/v biases.
    assert ModelShape.from_config(PACKAGED_CONFIGS["qwen2.5-coder-0.5b"]).params == 630_167_424


def test_the_parts_of_one_worker_and_one_engine_by_hand():
    est = estimate(tiny_cfg(), ModelShape.from_config(TINY), zero=False, autocast=False)
    w = est.worker
    assert (w.weights, w.gradients, w.optimizer) == (4 * TINY_PARAMS, 4 * TINY_PARAMS, 8 * TINY_PARAMS)
    tokens = 2 * 3  # micro_batch_size x max_length
    assert w.activations == pytest.approx(tokens * 2 * (50 * 8 + 16 * 16) * ACTIVATION_CALIBRATION)  # float32
    assert w.logits == tokens * 10 * 4 * 3
    assert (w.reference, w.process) == (0, GIB)
    engine = est.engine
    assert engine.weights == 4 * (TINY_PARAMS + 80)  # float32, served with an untied copy of the head
    assert (engine.kv_cache, engine.process) == (GIB, 2 * GIB)
    assert est.rest == pytest.approx(1.4 * GIB)  # the driver and Ray, and 2 executors
    assert est.ray_train == pytest.approx(1.6 * GIB)  # Ray Train's own actors, while a job trains
    # CPU generators stay up through training, so the two add ...
    assert (
        est.peak == est.training == pytest.approx(w.total + engine.total + est.rest + est.ray_train + est.unaccounted)
    )
    # ... unless they give way to the trainer.
    cfg = tiny_cfg()
    cfg.generator = replace(cfg.generator, stop_while_training=True)
    stopping = estimate(cfg, ModelShape.from_config(TINY), zero=False, autocast=False)
    assert stopping.training == pytest.approx(w.total + est.rest + est.ray_train + est.unaccounted)


def test_bf16_generators_hold_half_the_bytes_and_gpu_generators_none_of_this_memory():
    shape = ModelShape.from_config(TINY)
    cfg = tiny_cfg()
    cfg.model = replace(cfg.model, dtype="bfloat16")
    assert estimate(cfg, shape, zero=False).engine.weights == 2 * (TINY_PARAMS + 80)
    cfg.generator = replace(cfg.generator, num_gpus=1.0)
    on_gpus = estimate(cfg, shape, zero=False)
    assert on_gpus.engine is None and on_gpus.engines_stopped_for_training
    assert on_gpus.peak == pytest.approx(on_gpus.worker.total + on_gpus.rest + on_gpus.ray_train + on_gpus.unaccounted)


@pytest.mark.parametrize(
    "stage, shares",  # (weights, gradients, optimizer) divided among the 4 workers
    [(1, (1, 1, 4)), (2, (1, 4, 4)), (3, (4, 4, 4))],
)
def test_zero_shares_states_among_the_workers(stage, shares):
    shape = ModelShape.from_config(TINY)
    cfg = tiny_cfg(num_workers=4, deepspeed=True, zero_stage=stage)
    w = estimate(cfg, shape, zero=True).worker
    assert (w.weights, w.gradients, w.optimizer) == tuple(
        whole / share for whole, share in zip((4 * TINY_PARAMS, 4 * TINY_PARAMS, 8 * TINY_PARAMS), shares)
    )
    # No DeepSpeed (off, or not importable): every DDP worker holds a whole replica.
    for plain in (
        estimate(cfg, shape, zero=False),
        estimate(replace(cfg, train=replace(cfg.train, deepspeed=False)), shape, zero=True),
    ):
        assert plain.zero_stage == 0 and plain.worker.optimizer == 8 * TINY_PARAMS


def test_gradient_checkpointing_keeps_one_layer_input_per_layer():
    shape = ModelShape.from_config(TINY)
    plain = estimate(tiny_cfg(), shape, zero=False, autocast=False).worker
    checkpointed = estimate(tiny_cfg(gradient_checkpointing=True), shape, zero=False, autocast=False).worker
    layer = (50 * 8 + 16 * 16) * ACTIVATION_CALIBRATION
    assert checkpointed.activations == pytest.approx(6 * (2 * CHECKPOINT_BYTES_PER_HIDDEN * 8 + layer))
    assert checkpointed.activations < plain.activations and checkpointed.total < plain.total


def test_dpo_adds_a_reference_and_doubles_the_sequences():
    shape = ModelShape.from_config(TINY)
    sft = estimate(tiny_cfg(), shape, zero=False).worker
    dpo = estimate(replace(tiny_cfg(), method="sft_dpo"), shape, zero=False).worker
    assert dpo.reference == 4 * TINY_PARAMS
    assert (dpo.activations, dpo.logits) == pytest.approx((2 * sft.activations, 2 * sft.logits))


def test_the_measured_case_is_reproduced():
    # Qwen2.5-Coder-0.5B, one plain replica, AdamW, bf16 autocast, 4 x 384 tokens: 15.5 GiB measured,
    # 13.1 GiB with gradient checkpointing (memory.py ACTIVATION_CALIBRATION).
    shape = ModelShape.from_config(PACKAGED_CONFIGS["qwen2.5-coder-0.5b"])
    cfg = tiny_cfg(micro_batch_size=4, max_length=384)
    plain = estimate(cfg, shape, zero=False, autocast=True).worker.total / GIB
    cfg.train = replace(cfg.train, gradient_checkpointing=True)
    checkpointed = estimate(cfg, shape, zero=False, autocast=True).worker.total / GIB
    assert plain == pytest.approx(15.5, abs=0.15) and checkpointed == pytest.approx(13.1, abs=0.15)


def test_the_shape_comes_from_the_weights_or_a_known_table(tiny_model, tmp_path):
    shape = model_shape(tiny_model, str(tmp_path))
    config = json.loads((Path(tiny_model) / "config.json").read_text())
    assert shape.params == ModelShape.from_config(config).params  # safetensors headers against the config
    assert model_shape("qwen2.5-coder-0.5b", str(tmp_path)).params == 630_167_424  # not converted: the table
    assert "no config.json" in model_shape("some-org/some-model", str(tmp_path))


def test_a_run_that_cannot_fit_is_refused_in_one_line(tiny_model, monkeypatch):
    cfg = replace(tiny_cfg(), model=replace(tiny_cfg().model, path=tiny_model))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(memory, "machine_memory", lambda: 4 * GIB)
    with pytest.raises(UserError) as refused:
        check_memory(cfg, tiny_model)
    message = str(refused.value)
    assert "\n" not in message and message.startswith("memory: this run would peak at about")
    assert "of this machine's 4.0 GiB" in message and "train.gradient_checkpointing=true" in message
    monkeypatch.setattr(memory, "machine_memory", lambda: 64 * GIB)
    assert "of 64.0 GiB here" in check_memory(cfg, tiny_model)[0]
    monkeypatch.setattr(memory, "machine_memory", lambda: 4 * GIB)
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")  # a cluster: printed, not refused
    assert "on a cluster" in check_memory(cfg, tiny_model)[0]


def test_a_refused_run_starts_nothing(tiny_model, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(memory, "machine_memory", lambda: GIB)
    run_dir = tmp_path / "run"
    assert main(["run", QUICKSTART, f"run_dir={run_dir}", f"model.path={tiny_model}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "memory: this run would peak" in err
    assert not run_dir.exists()  # refused in prepare, before the run directory is claimed or Ray started


def run_envisions(*argv):
    done = subprocess.run(
        [sys.executable, "-m", "envisions_ray.cli", *argv], capture_output=True, text=True, timeout=120
    )
    return done.returncode, done.stdout, done.stderr


def test_dry_run_prints_the_memory_line_and_refuses_what_no_machine_holds(tiny_model, tmp_path):
    run_dir = tmp_path / "run"
    code, out, _ = run_envisions(
        "run", QUICKSTART, f"run_dir={run_dir}", f"model.path={tiny_model}", "generator.kv_cache_gib=0.5", "--dry-run"
    )
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith("  memory"))
    assert "GiB at peak" in line and "refused above 90%" in line
    assert "1 train worker x" in out and "1 generator x" in out
    # 100,000 sequences of 100,000 tokens: tens of TiB of logits.
    code, _, err = run_envisions(
        "run", QUICKSTART, f"run_dir={run_dir}", f"model.path={tiny_model}", "--dry-run",
        "train.micro_batch_size=100000", "train.max_length=100000",
    )  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and "memory: this run would peak" in err
    assert not run_dir.exists()
