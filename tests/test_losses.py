"""Loss masking: prompt and padding tokens never count; targets end with EOS."""

import math

import pytest
import torch

from envisions_ray.losses import IGNORE, collate, dpo_loss, sequence_logprobs, target_token_loss, tokenize
from envisions_ray.types import TrainExample


class WordTokenizer:
    """One id per character, enough to check where the mask falls."""

    eos_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


def test_prompt_tokens_are_masked_and_eos_closes_the_target():
    ids, labels = tokenize(WordTokenizer(), TrainExample("ab", "cd", "l1"), max_length=100)
    assert ids == [97, 98, 99, 100, 0]
    assert labels == [IGNORE, IGNORE, 99, 100, 0]


def test_truncation_keeps_ids_and_labels_aligned():
    ids, labels = tokenize(WordTokenizer(), TrainExample("abc", "de", "l2"), max_length=4)
    assert ids == [97, 98, 99, 100] and labels == [IGNORE, IGNORE, IGNORE, 100]


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
