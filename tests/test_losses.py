"""Loss masking: prompt and padding tokens never count; targets end with EOS. An example over
max_length loses prompt tokens, never target ones, and is dropped and counted when its target
alone does not fit."""

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from envisions_ray import driver
from envisions_ray.actors.trainer import Trained
from envisions_ray.config import load_config
from envisions_ray.errors import UserError
from envisions_ray.losses import (
    IGNORE,
    Fitting,
    collate,
    dpo_loss,
    fitting,
    scored_rows,
    sequence_logprobs,
    target_token_loss,
    tokenize,
    tokenize_pair,
)
from envisions_ray.methods import Examples
from envisions_ray.types import PreferenceExample, TrainExample


class WordTokenizer:
    """One id per character, enough to check where the mask falls."""

    eos_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


class BosWordTokenizer(WordTokenizer):
    """The same, with a BOS that the tokenizer adds, as Llama's does."""

    bos_token_id = 1

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": ([self.bos_token_id] if add_special_tokens else []) + super().__call__(text)["input_ids"]}


def test_prompt_tokens_are_masked_and_eos_closes_the_target():
    ids, labels = tokenize(WordTokenizer(), TrainExample("ab", "cd", "l1"), max_length=100)
    assert ids == [97, 98, 99, 100, 0]
    assert labels == [IGNORE, IGNORE, 99, 100, 0]


def test_an_example_that_fits_exactly_is_unchanged():
    row = tokenize(WordTokenizer(), TrainExample("ab", "cd", "l1"), max_length=5)
    assert row.input_ids == [97, 98, 99, 100, 0] and row.labels == [IGNORE, IGNORE, 99, 100, 0]
    assert not row.prompt_cut
    with_bos = tokenize(BosWordTokenizer(), TrainExample("ab", "cd", "l1"), max_length=6)
    assert with_bos.input_ids == [1, 97, 98, 99, 100, 0] and not with_bos.prompt_cut


def test_an_over_long_example_keeps_its_target_and_eos_and_loses_the_prompt_s_first_tokens():
    # "abcd" + "ef" + EOS is 7 tokens; 5 leave room for the prompt's last 2, "cd".
    row = tokenize(WordTokenizer(), TrainExample("abcd", "ef", "l1"), max_length=5)
    assert row.input_ids == [99, 100, 101, 102, 0] and row.labels == [IGNORE, IGNORE, 101, 102, 0]
    assert row.prompt_cut


def test_a_cut_prompt_keeps_its_bos():
    # BOS + "abcd" + "ef" + EOS is 8 tokens; 5 leave room for BOS and the prompt's last one, "d".
    row = tokenize(BosWordTokenizer(), TrainExample("abcd", "ef", "l1"), max_length=5)
    assert row.input_ids == [1, 100, 101, 102, 0] and row.labels == [IGNORE, IGNORE, 101, 102, 0]
    assert row.prompt_cut


def test_a_target_too_long_alone_is_dropped_and_counted():
    examples = [TrainExample("a", "cd", "l1"), TrainExample("ab", "efg", "l1"), TrainExample("ab", "efgh", "l1")]
    rows = [tokenize(WordTokenizer(), e, max_length=4) for e in examples]
    assert rows[0].input_ids == [97, 99, 100, 0] and not rows[0].prompt_cut
    assert rows[1].input_ids == [101, 102, 103, 0] and rows[1].prompt_cut  # the whole prompt, none of the target
    assert rows[2] is None  # "efgh" + EOS: 5
    assert fitting(rows) == Fitting(dropped_too_long=1, prompt_cut=1)
    assert tokenize(BosWordTokenizer(), TrainExample("ab", "efg", "l1"), max_length=4) is None  # BOS + 4


def test_a_preference_pair_shares_one_prompt_cut_for_its_longer_target():
    # The rejected "fgh" + EOS is 4 tokens: both rows keep the prompt's last 2 of max_length 6.
    pair = tokenize_pair(WordTokenizer(), PreferenceExample("abcd", "e", "fgh"), max_length=6)
    assert pair.chosen.input_ids == [99, 100, 101, 0] and pair.chosen.labels == [IGNORE, IGNORE, 101, 0]
    assert pair.rejected.input_ids == [99, 100, 102, 103, 104, 0]
    assert pair.rejected.labels == [IGNORE, IGNORE, 102, 103, 104, 0]
    assert pair.prompt_cut
    dropped = tokenize_pair(WordTokenizer(), PreferenceExample("abcd", "e", "fgh"), max_length=3)
    assert dropped is None  # the chosen fits, the rejected does not: no pair
    assert fitting([pair, dropped]) == Fitting(dropped_too_long=1, prompt_cut=1)


def hand_run(tmp_path: Path) -> SimpleNamespace:
    """What `driver._train_policy` reads of a Run."""
    return SimpleNamespace(
        cfg=load_config("conf/math_quickstart.yaml", []), run_dir=tmp_path, base_model="base", policy="/ck/iter-0"
    )


def test_the_too_long_counts_reach_the_iteration_s_training_record_and_summary_line(monkeypatch, tmp_path):
    """The metrics line takes them from this record (driver.run_iteration, a Ray run: test_integration.py)."""
    jobs = iter([Trained("/ck/iter-1", 0.5, 0, dropped_too_long=2, prompt_cut=3), Trained("/ck/dpo", 0.7, 1, 1, 0)])
    monkeypatch.setattr(driver, "train", lambda *args, **kwargs: next(jobs))
    examples = Examples([TrainExample("p", "t", "l1")] * 5, [PreferenceExample("p", "a", "b")] * 2)
    trained = driver._train_policy(hand_run(tmp_path), 1, examples)
    assert trained == {
        "checkpoint": "/ck/dpo",
        "loss": 0.5,
        "dpo_loss": 0.7,
        "restarts": 1,
        "prompt_cut": 3,
        "dropped_too_long": 3,
    }
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
        "train_prompt_cut": trained["prompt_cut"],
        "train_dropped_too_long": trained["dropped_too_long"],
        "eval": {},
        "seconds": {},
    }
    assert "loss 0.500 (over train.max_length: 3 prompts cut, 3 dropped)" in driver.format_summary(line)
    assert "max_length" not in driver.format_summary({**line, "train_prompt_cut": 0, "train_dropped_too_long": 0})


def test_when_every_example_is_too_long_nothing_is_trained_and_the_policy_stays(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(driver, "train", lambda cfg, init, examples, *args: Trained(None, None, 0, len(examples)))
    trained = driver._train_policy(hand_run(tmp_path), 1, Examples([TrainExample("p", "t", "l1")] * 4, []))
    assert trained["checkpoint"] == "/ck/iter-0" and trained["loss"] is None and trained["dropped_too_long"] == 4
    assert "[iter 2] nothing trained: every example's target alone is longer than train.max_length=" in (
        capsys.readouterr().out
    )


def test_collate_pads_with_ignored_labels():
    batch = collate([([5, 6, 7], [IGNORE, 6, 7]), ([5], [IGNORE])], pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [IGNORE, IGNORE, IGNORE]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


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


def test_a_scored_target_that_does_not_fit_alone_is_refused_not_scored_in_part():
    # "abc" + EOS is 4 tokens: it fits in 4 after a prompt cut to nothing, not in 3.
    [row] = scored_rows(WordTokenizer(), ["xy"], ["abc"], 4)
    assert list(row.input_ids) == [ord("a"), ord("b"), ord("c"), 0]
    with pytest.raises(UserError, match="longer than generator.max_model_len"):
        scored_rows(WordTokenizer(), ["xy"], ["abc"], 3)
