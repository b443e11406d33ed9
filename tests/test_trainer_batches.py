"""The trainer's micro-batches (actors/train_job.py `grouped_batches`): every row in every pass, the
same number of batches on every rank, and rows of about one length together."""

from __future__ import annotations

import random

from envisions_ray.actors.train_job import grouped_batches


def padding_share(lengths: list[int], batches: list[list[int]]) -> float:
    padded = sum(max(lengths[i] for i in batch) * len(batch) for batch in batches)
    return 1 - sum(lengths[i] for batch in batches for i in batch) / padded


def test_one_group_of_the_whole_pass_pairs_neighbouring_lengths():
    lengths = [5, 1, 4, 2, 3, 6, 8, 7]
    batches = grouped_batches(lengths, micro_batch=2, world_size=1, group=4, seed=0)
    assert sorted(sorted(lengths[i] for i in batch) for batch in batches) == [[1, 2], [3, 4], [5, 6], [7, 8]]


def test_a_group_of_one_sorts_nothing_across_batches():
    lengths = list(range(12))
    plain = grouped_batches(lengths, micro_batch=3, world_size=1, group=1, seed=5)
    assert sorted(i for batch in plain for i in batch) == lengths  # every row once
    whole = grouped_batches(lengths, micro_batch=3, world_size=1, group=4, seed=5)
    # Sorted over the whole pass, a batch is three neighbours, padded 2 + 1 + 0 tokens: 12 in all.
    assert sum(max(batch) * 3 - sum(batch) for batch in whole) == 12
    assert sum(max(batch) * 3 - sum(batch) for batch in plain) > 12  # as drawn, rows of far lengths meet


def test_every_rank_gets_as_many_full_batches_and_every_row_is_trained():
    lengths = [random.Random(1).randrange(10, 200) for _ in range(11)]
    batches = grouped_batches(lengths, micro_batch=2, world_size=2, group=2, seed=3)
    per_rank = [batches[rank::2] for rank in range(2)]
    assert len(per_rank[0]) == len(per_rank[1]) == 3  # 11 rows padded to 12: 3 micro-steps of 2 x 2
    assert all(len(batch) == 2 for batch in batches)
    assert set(i for batch in batches for i in batch) == set(range(11))


def test_grouping_by_length_cuts_the_padding_and_each_pass_has_its_own_order():
    rng = random.Random(0)
    lengths = [rng.randrange(60, 224) for _ in range(160)]  # the spread of GSM8K's L1 examples
    plain = grouped_batches(lengths, micro_batch=4, world_size=1, group=1, seed=0)
    grouped = grouped_batches(lengths, micro_batch=4, world_size=1, group=8, seed=0)
    assert padding_share(lengths, grouped) < padding_share(lengths, plain) / 3
    assert grouped != grouped_batches(lengths, micro_batch=4, world_size=1, group=8, seed=1)
