"""Config: YAML + overrides into typed dataclasses, and one-line errors that name the key."""

import pytest
import torch

from envisions_ray.config import RunConfig, load_config
from envisions_ray.errors import UserError


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_yaml_and_overrides_are_typed(tmp_path):
    cfg = load_config(write(tmp_path, "run_dir: r\nalgorithm:\n  k: 3\n"), ["train.lr=1e-4", "algorithm.refine=false"])
    assert isinstance(cfg, RunConfig)
    assert (cfg.algorithm.k, cfg.train.lr, cfg.algorithm.refine) == (3, 1e-4, False)
    assert cfg.algorithm.n1 == 10 and cfg.algorithm.n2 == 2  # paper defaults stay


def test_unknown_key_names_it_and_the_nearest_valid_one(tmp_path):
    with pytest.raises(UserError) as err:
        load_config(write(tmp_path, "run_dir: r\n"), ["algorithm.itrations=3"])
    assert "algorithm.itrations" in str(err.value) and "algorithm.iterations" in str(err.value)
    with pytest.raises(UserError) as err:
        load_config(write(tmp_path, "run_dir: r\ntrain:\n  lerning_rate: 1\n"))
    assert "train.lerning_rate" in str(err.value) and "did you mean 'train." in str(err.value)
    assert "\n" not in str(err.value)


def test_wrong_type_names_the_key(tmp_path):
    with pytest.raises(UserError) as err:
        load_config(write(tmp_path, "run_dir: r\n"), ["algorithm.k=five"])
    assert "algorithm.k" in str(err.value) and "\n" not in str(err.value)


def test_choices_and_missing_run_dir(tmp_path):
    with pytest.raises(UserError, match="algorithm.train_from"):
        load_config(write(tmp_path, "run_dir: r\n"), ["algorithm.train_from=middle"])
    with pytest.raises(UserError, match="run_dir"):
        load_config(write(tmp_path, "seed: 1\n"))
    with pytest.raises(UserError, match="no such file"):
        load_config(tmp_path / "absent.yaml")


def test_every_shipped_config_loads():
    from pathlib import Path

    for path in sorted(Path(__file__).parents[1].glob("conf/*.yaml")):
        assert load_config(path).run_dir


def test_env_settings_are_checked_against_the_env_own_schema(tmp_path):
    cfg = load_config(write(tmp_path, "run_dir: r\nenv:\n  name: logic\n  settings:\n    timeout_s: 0.5\n"))
    assert cfg.env.settings == {
        "timeout_s": 0.5,
        "backstop_margin_s": 2.0,
        "memory_mb": 1024,
        "grounded_positives": False,
    }  # defaults filled in
    with pytest.raises(UserError) as err:
        load_config(write(tmp_path, "run_dir: r\n"), ["env.settings.timout_s=3"])
    assert "env.settings.timout_s" in str(err.value) and "did you mean 'env.settings.timeout_s'" in str(err.value)
    with pytest.raises(UserError, match="'env.settings.memory_mb' has the wrong type"):
        load_config(write(tmp_path, "run_dir: r\nenv:\n  name: logic\n"), ["env.settings.memory_mb=lots"])
    with pytest.raises(UserError, match="unknown environment 'chess'"):
        load_config(write(tmp_path, "run_dir: r\n"), ["env.name=chess"])


def test_a_method_fixes_its_settings_whatever_the_yaml_says(tmp_path):
    path = write(tmp_path, "run_dir: r\nalgorithm:\n  iterations: 3\n  train_from: last\n")
    star = load_config(path, ["method=star_env"])
    assert (star.method, star.algorithm.refine, star.algorithm.train_from, star.algorithm.iterations) == (
        "star_env",
        False,
        "base",
        3,
    )
    assert load_config(path, ["method=few_shot"]).algorithm.iterations == 0
    assert load_config(path, ["method=sft_dpo"]).algorithm.train_from == "last"
    assert load_config(path).algorithm.refine is True  # envisions changes nothing
    with pytest.raises(UserError, match="'method' must be one of envisions, star_env"):
        load_config(path, ["method=ppo"])


def test_distill_needs_exactly_one_teacher_and_held_out_names_an_eval_set(tmp_path):
    path = write(tmp_path, "run_dir: r\ndata:\n  eval:\n    arith: builtin:arith:eval\n")
    with pytest.raises(UserError, match="method distill needs exactly one teacher"):
        load_config(path, ["method=distill"])
    assert load_config(path, ["method=distill", "distill.teacher_file=t.jsonl"]).algorithm.iterations == 1
    assert load_config(path, ["data.held_out=[arith]"]).data.held_out == ["arith"]
    with pytest.raises(UserError, match="data.held_out names 'gsm8k', which is not in data.eval"):
        load_config(path, ["data.held_out=[gsm8k]"])


@pytest.mark.parametrize(
    "name, env, iterations, epochs", [("math_paper", "math", 10, 1), ("logic_paper", "logic", 8, 2)]
)
def test_paper_configs_ask_for_the_paper_s_8_gpu_settings(name, env, iterations, epochs):
    cfg = load_config(f"conf/{name}.yaml")
    assert (cfg.env.name, cfg.algorithm.iterations, cfg.train.epochs, cfg.algorithm.k) == (env, iterations, epochs, 5)
    train = cfg.train
    assert (train.num_workers, train.use_gpu, train.zero_stage, train.gradient_checkpointing) == (8, True, 3, True)
    assert (train.global_batch_size, train.lr, train.lr_schedule, train.warmup_ratio, train.max_length) == (
        128,
        2e-5,
        "linear",
        0.03,
        2048,
    )
    assert (cfg.generator.backend, cfg.generator.num_gpus, cfg.model.dtype, cfg.algorithm.train_from) == (
        "vllm",
        1,
        "bfloat16",
        "base",
    )


def test_the_math_paper_config_gives_deepspeed_the_paper_s_8_gpu_step():
    from envisions_ray.actors.train_job import accumulation_steps, deepspeed_config

    train = load_config("conf/math_paper.yaml").train
    accumulation = accumulation_steps(train, world_size=8)
    assert accumulation * train.micro_batch_size * 8 == 128  # global batch 128 by accumulation
    ds = deepspeed_config(train, accumulation, total_steps=100)
    assert (
        ds["zero_optimization"] == {"stage": 3}
        and ds["bf16"] == {"enabled": True}
        and ds["gradient_accumulation_steps"] == 4
    )


def test_epochs_step_at_the_end_of_every_pass_and_steps_cycle_the_data():
    from envisions_ray.actors.train_job import step_plan

    # 5 micro-batches a pass, 2 per step: steps after batches 2, 4 and the short 5th, twice.
    assert step_plan(5, 2, epochs=2, steps=None) == [False, True, False, True, True] * 2
    # 3 steps of 2 micro-batches whatever the data: the 6th micro-batch starts a second pass.
    assert step_plan(5, 2, epochs=2, steps=3) == [False, True] * 3
    # A method with few examples trains as long as one with many.
    assert sum(step_plan(1, 4, epochs=1, steps=7)) == sum(step_plan(40, 4, epochs=1, steps=7)) == 7


def test_the_two_hour_recipe_is_the_quick_recipe_scaled_up():
    scaled = ["algorithm.iterations=3", "data.train_size=168"]
    quick = load_config("conf/math_gsm8k_qwen_quick.yaml", ["run_dir=runs/math_gsm8k_qwen", *scaled])
    assert load_config("conf/math_gsm8k_qwen.yaml") == quick


def test_a_config_that_extends_a_missing_file_or_itself_is_refused_in_one_line(tmp_path):
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nrun_dir: x\n")
    with pytest.raises(UserError, match="no such file: .*b.yaml"):
        load_config(tmp_path / "a.yaml")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(UserError, match="a.yaml extends itself through a.yaml -> b.yaml"):
        load_config(tmp_path / "a.yaml")


def test_train_steps_must_be_positive():
    with pytest.raises(UserError, match="'train.steps' must be 1 or more"):
        load_config("conf/math_quickstart.yaml", ["train.steps=0"])


@pytest.mark.parametrize("schedule", ["linear", "cosine", "constant"])
@pytest.mark.parametrize("total_steps", [1, 2, 5, 33])  # fewer than 1 / warmup_ratio: no warm-up
def test_the_first_optimizer_step_of_a_short_run_moves_the_weights(schedule, total_steps):
    """A one-step run used to get one warm-up step at learning rate 0 and leave the model as it was."""
    from envisions_ray.actors.train_job import _optimizer_and_schedule
    from envisions_ray.config import TrainConfig

    model = torch.nn.Linear(2, 1)
    before = model.weight.detach().clone()
    optimizer, lr_schedule = _optimizer_and_schedule(
        model, TrainConfig(lr=1e-3, lr_schedule=schedule, warmup_ratio=0.03), total_steps
    )
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    lr_schedule.step()
    assert not torch.equal(model.weight, before)


@pytest.mark.parametrize(
    "asked, native, expected", [(True, True, torch.bfloat16), (True, False, None), (False, True, None)]
)
def test_cpu_bf16_autocasts_only_where_the_cpu_multiplies_bf16(monkeypatch, asked, native, expected):
    import envisions_ray.actors.train_job
    from envisions_ray.config import TrainConfig

    monkeypatch.setattr(envisions_ray.actors.train_job, "bf16_matmul_supported", lambda: native)
    with envisions_ray.actors.train_job._precision(TrainConfig(cpu_bf16=asked)):
        product = torch.ones(2, 2) @ torch.ones(2, 2)
    assert product.dtype == (expected or torch.float32)


@pytest.mark.parametrize(
    "asked, cuda, cuda_bf16, cpu_bf16, expected",
    [
        ("auto", False, False, True, "bfloat16"),
        ("auto", False, False, False, "float32"),
        ("auto", True, True, False, "bfloat16"),
        ("auto", True, False, True, "float32"),  # the generator's device decides, not the host CPU
        ("float32", False, False, True, "float32"),
        ("bfloat16", False, False, False, "bfloat16"),
    ],
)
def test_auto_dtype_is_bf16_only_where_the_generators_device_multiplies_it(
    monkeypatch, asked, cuda, cuda_bf16, cpu_bf16, expected
):
    import envisions_ray.model

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: cuda_bf16)
    monkeypatch.setattr(envisions_ray.model, "bf16_matmul_supported", lambda: cpu_bf16)
    assert envisions_ray.model.resolve_dtype(asked) == expected


def test_cpu_flags_are_read_from_the_kernel():
    from envisions_ray.cpu import BF16_MATMUL_FLAGS, bf16_matmul_supported, cpu_flags

    flags = cpu_flags()
    assert bf16_matmul_supported() == bool(flags & BF16_MATMUL_FLAGS)
    assert not flags or {"sse2", "fp", "asimd"} & flags  # an x86 or Arm flag list, not another field


def test_dpo_epochs_follow_train_epochs_unless_set():
    assert (
        load_config("conf/math_quickstart.yaml", ["run_dir=x", "method=sft_dpo"]).dpo.epochs == 3
    )  # the quickstart's train.epochs
    assert load_config("conf/math_quickstart.yaml", ["run_dir=x", "method=sft_dpo", "dpo.epochs=1"]).dpo.epochs == 1


@pytest.mark.parametrize(
    "override, needle",
    [
        ("model.dtype=bf16", "'model.dtype' must be one of auto, float32, bfloat16, float16"),
        ("algorithm.k=0", "'algorithm.k' must be 1 or more, got 0"),
        ("algorithm.iterations=-1", "'algorithm.iterations' must be 0 or more"),
        ("data.train_size=-5", "'data.train_size' must be 1 or more"),
        ("data.seed_stride=3", "data.seed_stride (3) is below data.train_size (64)"),
    ],
)
def test_load_config_refuses_what_a_run_would_refuse_later(override, needle):
    """Before, each of these passed `--dry-run`: bf16 failed inside an actor, k=0 after the base eval."""
    with pytest.raises(UserError) as refused:
        load_config("conf/math_quickstart.yaml", [override])
    assert needle in str(refused.value)


def test_a_run_directory_written_before_algorithm_pool_was_renamed_still_loads(tmp_path):
    old = tmp_path / "config.yaml"
    old.write_text("run_dir: runs/old\nalgorithm:\n  pool: current_iteration\n")
    assert load_config(old).algorithm.memory == "current_iteration"
    with pytest.raises(UserError, match="algorithm.pool"):
        load_config(None, ["run_dir=x", "algorithm.pool=current_iteration"])
