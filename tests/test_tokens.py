"""Token rows: prompt and padding tokens are labelled IGNORE; targets end with EOS. An example over
max_length loses prompt tokens, never target ones, and is dropped and counted when its target
alone does not fit."""

import pytest

from envisions_ray.errors import UserError
from envisions_ray.tokens import IGNORE, Fitting, Tokenized, collate, fitting, scored_rows, tokenize, tokenize_pair
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
    row = tokenize(WordTokenizer(), TrainExample("ab", "cd", "l1"), max_length=100)
    assert row.input_ids == [97, 98, 99, 100, 0]
    assert row.labels == [IGNORE, IGNORE, 99, 100, 0]


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


def test_collate_pads_with_ignored_labels():
    rows = [Tokenized([5, 6, 7], [IGNORE, 6, 7], prompt_cut=False), Tokenized([5], [IGNORE], prompt_cut=False)]
    batch = collate(rows, pad_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [5, 0, 0]]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7], [IGNORE, IGNORE, IGNORE]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_a_scored_target_that_does_not_fit_alone_is_refused_not_scored_in_part():
    # "abc" + EOS is 4 tokens: it fits in 4 after a prompt cut to nothing, not in 3.
    [row] = scored_rows(WordTokenizer(), ["xy"], ["abc"], 4)
    assert list(row.input_ids) == [ord("a"), ord("b"), ord("c"), 0]
    with pytest.raises(UserError, match="longer than generator.max_model_len"):
        scored_rows(WordTokenizer(), ["xy"], ["abc"], 3)
