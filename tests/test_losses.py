"""The losses count target tokens only, the DPO loss by hand, the self-reward, and what an
iteration's training reports of the examples over max_length."""

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from envisions_ray import training
from envisions_ray.config import load_config
from envisions_ray.losses import dpo_loss, sequence_logprobs, target_token_loss
from envisions_ray.methods import Examples
from envisions_ray.summary import format_summary
from envisions_ray.tokens import IGNORE
from envisions_ray.trained import Trained
from envisions_ray.types import PreferenceExample, TrainExample


def hand_run(tmp_path: Path) -> SimpleNamespace:
    """What `training.train_policy` reads of a Run."""
    return SimpleNamespace(
        cfg=load_config("conf/math_quickstart.yaml", []),
        run_dir=tmp_path,
        base_model="base",
        generators=SimpleNamespace(policy="/ck/iter-0"),
    )


def test_the_too_long_counts_reach_the_iteration_s_training_record_and_summary_line(monkeypatch, tmp_path):
    """The metrics line takes them from this record (driver.run_iteration, a Ray run: test_integration.py)."""
    jobs = iter([Trained("/ck/iter-1", 0.5, 0, dropped_too_long=2, prompt_cut=3), Trained("/ck/dpo", 0.7, 1, 1, 0)])
    monkeypatch.setattr(training, "train", lambda *args, **kwargs: next(jobs))
    examples = Examples([TrainExample("p", "t", "l1")] * 5, [PreferenceExample("p", "a", "b")] * 2)
    trained = training.train_policy(hand_run(tmp_path), 1, examples)
    assert trained == Trained("/ck/dpo", 0.5, restarts=1, dropped_too_long=3, prompt_cut=3, dpo_loss=0.7)
    line = {
        "iteration": 2,
        "inputs": 4,
        "explored": 2,
        "positives": 3,
        "unique_correct": 2,
        "pool_size": 9,
        "u1": 5,
        "u2": 0,
        "train_loss": 0.5,
        "train_prompt_cut": trained.prompt_cut,
        "train_dropped_too_long": trained.dropped_too_long,
        "eval": {},
        "seconds": {},
    }
    assert "loss 0.500 (over train.max_length: 3 prompts cut, 3 dropped)" in format_summary(line)
    assert "max_length" not in format_summary({**line, "train_prompt_cut": 0, "train_dropped_too_long": 0})


def test_when_every_example_is_too_long_nothing_is_trained_and_the_policy_stays(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(training, "train", lambda cfg, init, examples, *args: Trained(None, None, 0, len(examples)))
    trained = training.train_policy(hand_run(tmp_path), 1, Examples([TrainExample("p", "t", "l1")] * 4, []))
    assert trained.checkpoint == "/ck/iter-0" and trained.loss is None and trained.dropped_too_long == 4
    assert "[iter 2] nothing trained: every example's target alone is longer than train.max_length=" in (
        capsys.readouterr().out
    )


def test_loss_counts_only_target_tokens():
    # Vocabulary of 2. Logits favour token 1 with log-odds log(3): p(1) = 3/4, p(0) = 1/4.
    logits = torch.tensor([[[0.0, math.log(3)]] * 4])
    labels = torch.tensor([[IGNORE, IGNORE, 1, 0]])  # targets at positions 2 and 3
    expected = -(math.log(3 / 4) + math.log(1 / 4)) / 2
    assert abs(target_token_loss(logits, labels).item() - expected) < 1e-6
    # One more target token with p = 3/4 moves the mean: only the two (then three) targets count.
    three_targets = torch.tensor([[IGNORE, 1, 1, 0]])
    assert abs(target_token_loss(logits, three_targets).item() - (expected * 2 - math.log(3 / 4)) / 3) < 1e-6


def test_logits_that_predict_prompt_tokens_do_not_move_the_loss():
    torch.manual_seed(0)
    logits = torch.randn(1, 5, 7)
    labels = torch.tensor([[IGNORE, IGNORE, 3, 4, 5]])
    before = target_token_loss(logits, labels)
    changed = logits.clone()
    changed[0, 0] += 10 * torch.randn(7)  # position 0 predicts token 1, a prompt token
    assert torch.equal(target_token_loss(changed, labels), before)
    changed[0, 1] += 10 * torch.randn(7)  # position 1 predicts token 2, the first target token
    assert not torch.equal(target_token_loss(changed, labels), before)


def test_self_reward_is_the_mean_raw_logprob_of_sampled_tokens_before_the_first_pad():
    from envisions_ray.actors.hf_backend import mean_sampled_logprob

    # Two steps over a vocabulary of 2 (token 0 is pad/EOS). Raw logits give p(1) = 3/4 at step 1
    # and p(1) = 1/2 at step 2.
    step_logits = (torch.tensor([[0.0, math.log(3)]] * 2), torch.tensor([[0.0, 0.0]] * 2))
    tokens = torch.tensor([[1, 1], [1, 0]])  # row 2 ended after one token
    rewards = mean_sampled_logprob(step_logits, tokens, end_ids=[0])
    assert abs(rewards[0].item() - (math.log(3 / 4) + math.log(1 / 2)) / 2) < 1e-6
    assert abs(rewards[1].item() - math.log(3 / 4)) < 1e-6


def test_self_reward_leaves_out_eos_also_when_pad_is_another_token():
    from envisions_ray.actors.hf_backend import mean_sampled_logprob, sampled_mask

    # Vocabulary of 3: token 0 is pad, token 2 is EOS. p(1) = 3/4 at step 1; EOS then has p = 1/2.
    step_logits = (
        torch.tensor([[0.0, math.log(3), -100.0]]),
        torch.tensor([[-100.0, 0.0, 0.0]]),
        torch.tensor([[0.0, 0.0, 0.0]]),
    )
    tokens = torch.tensor([[1, 2, 0]])  # one token, EOS, then pad
    assert sampled_mask(tokens, [0, 2]).tolist() == [[1, 0, 0]]  # EOS is not counted, as vLLM does not count it
    assert abs(mean_sampled_logprob(step_logits, tokens, [0, 2]).item() - math.log(3 / 4)) < 1e-6


def test_sequence_logprobs_sum_only_the_target_tokens():
    # Two tokens of vocabulary 2; uniform logits make every token log(1/2).
    logits = torch.zeros((1, 4, 2))
    labels = torch.tensor([[IGNORE, IGNORE, 1, 0]])  # prompt of 2, target of 2
    assert sequence_logprobs(logits, labels).item() == pytest.approx(2 * math.log(0.5))


def test_dpo_loss_by_hand():
    # Policy margin (-1) - (-3) = 2, reference margin (-2) - (-2) = 0, beta 0.5: -log sigmoid(1).
    loss = dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]), torch.tensor([-2.0]), beta=0.5)
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-1))))
    # At the reference the loss is log 2, whatever the log-probs are.
    same = dpo_loss(
        torch.tensor([-1.0, -5.0]),
        torch.tensor([-3.0, -1.0]),
        torch.tensor([-1.0, -5.0]),
        torch.tensor([-3.0, -1.0]),
        beta=0.1,
    )
    assert same.item() == pytest.approx(math.log(2))
