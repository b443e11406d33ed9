"""The candidate pool's memory: long-term by default, one iteration's worth for the ablation."""

import re
import sqlite3
from types import SimpleNamespace

import pytest

from envisions_ray.actors.pool import RECOVERY, CandidatePool, check_pool
from envisions_ray.errors import UserError
from envisions_ray.types import Trajectory


def explored(
    example_id: str, solution: str, reward: int, iteration: int, self_reward: float = -1.0, sample: int = 0
) -> Trajectory:
    return Trajectory(example_id, solution, reward, self_reward, iteration, "explore", sample=sample)


def fill(pool: CandidatePool, long_term: bool) -> None:
    # Iteration 0 finds two right solutions to x; iteration 1 finds one of them again and a new wrong one.
    pool.record([explored("x", "return 12", 1, 0), explored("x", "return 3 * 4", 1, 0, -0.5, sample=1)])
    pool.select(0, long_term)
    pool.record([explored("x", "return 12", 1, 1), explored("x", "return 13", 0, 1, sample=1)])
    pool.select(1, long_term)


def test_long_term_pool_keeps_every_iteration_and_dedupes_across_them(tmp_path):
    pool = CandidatePool(str(tmp_path / "pool.sqlite"))
    fill(pool, long_term=True)
    # "return 12" from iteration 1 is a duplicate of iteration 0's and stays out.
    assert sorted(t.solution for t in pool.trajectories(in_pool=True)) == ["return 12", "return 13", "return 3 * 4"]
    training = pool.training_set(n1=10, n2=2, leave_positive_for_pair=True)
    # Two positives: U1 takes the higher self-reward one, the other pairs with the negative.
    assert [t.solution for t in training.u1] == ["return 3 * 4"]
    assert [(p.solution, n.solution) for p, n in training.u2] == [("return 12", "return 13")]


def test_current_iteration_pool_forgets_earlier_iterations(tmp_path):
    pool = CandidatePool(str(tmp_path / "pool.sqlite"))
    fill(pool, long_term=False)
    # Iteration 1's "return 12" joins its own iteration's pool although iteration 0 had it too.
    training = pool.training_set(n1=10, n2=2, leave_positive_for_pair=True, iteration=1)
    assert [t.solution for t in training.u1] == ["return 12"] and [t.iteration for t in training.u1] == [1]
    assert training.u2 == []  # its only positive went to U1
    assert pool.training_set(n1=10, n2=2, leave_positive_for_pair=False, iteration=0).u1[0].iteration == 0


def test_a_correct_text_counts_once_per_input_whichever_pool(tmp_path):
    for long_term in (True, False):
        pool = CandidatePool(str(tmp_path / f"pool-{long_term}.sqlite"))
        fill(pool, long_term)
        # "return 12" was found in both iterations: one unique correct program, with "return 3 * 4".
        assert pool.pool_counts()["unique_correct"] == 2


def test_a_batch_delivered_twice_is_stored_once_with_the_same_ids(tmp_path):
    # Ray retries `record` on a restarted pool when the first call died after its commit.
    pool = CandidatePool(str(tmp_path / "pool.sqlite"))
    batch = [explored("x", "return 12", 1, 0), explored("x", "return 13", 0, 0, sample=1)]
    first = pool.record(batch)
    pool.close()
    pool = CandidatePool(str(tmp_path / "pool.sqlite"))  # the restarted actor, on the same file
    assert pool.record(batch) == first
    refined = [Trajectory("x", "return 4 * 3", 1, -0.2, 0, "refine", parent_id=first[1])]
    assert pool.record(refined) == pool.record(refined)
    assert [(t.source, t.sample) for t in pool.trajectories()] == [("explore", 0), ("explore", 1), ("refine", 0)]
    # Another input, iteration or parent is another key.
    again = [explored("y", "return 12", 1, 0), explored("x", "return 12", 1, 1)]
    assert len(set(pool.record(again)) | set(first)) == 4


def test_a_stages_seconds_add_up_over_driver_sessions(tmp_path):
    pool = CandidatePool(str(tmp_path / "pool.sqlite"))
    pool.record_seconds(0, "explore", "first", 10.0)
    pool.record_seconds(0, "explore", "first", 30.0)  # the same session's newer total replaces
    pool.record_seconds(0, "select", "first", 1.0)
    pool.record_seconds(0, "explore", "resumed", 5.0)
    pool.record_seconds(0, "explore", "resumed", 5.0)  # a retried call adds nothing
    pool.record_seconds(1, "explore", "resumed", 7.0)
    assert pool.seconds(0) == {"explore": 35.0, "select": 1.0}


def test_a_pool_from_before_the_stable_key_is_refused_in_one_line(tmp_path):
    path = tmp_path / "pool.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE trajectories (example_id TEXT, solution TEXT, iteration INTEGER, source TEXT)")
    with pytest.raises(UserError, match="written by an older envisions-ray"):
        CandidatePool(str(path))


def test_two_same_named_files_in_a_mix_keep_their_k_samples_under_their_own_ids(tmp_path):
    from envisions_ray.actors.backend import Sample
    from envisions_ray.data import load_examples
    from envisions_ray.run_state import Request
    from envisions_ray.stages import recording
    from envisions_ray.types import Outcome

    files = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        files.append(tmp_path / folder / "train.jsonl")
        files[-1].write_text(
            f'{{"question": "{folder}: 1 + 1?", "answer": "2"}}\n{{"question": "{folder}: 2?", "answer": "2"}}\n'
        )
    inputs = load_examples(" + ".join(map(str, files)))
    pool = CandidatePool(str(tmp_path / "pool.sqlite"))
    keep = recording(SimpleNamespace(pool=pool), 0, "explore").keep
    k = 3
    for x in inputs:  # as driver.stream delivers them: each input's K executed samples in one batch
        keep([(Request(x, x.question), Sample(f"{x.question} #{s}", -1.0, 1), Outcome(1)) for s in range(k)])
    stored: dict[str, list[str]] = {}
    for t in pool.trajectories(0, "explore"):
        stored.setdefault(t.example_id, []).append(t.solution)
    assert len(inputs) == 4 and stored == {x.id: [f"{x.question} #{s}" for s in range(k)] for x in inputs}


def whole_pool(path) -> None:
    pool = CandidatePool(str(path))
    pool.record([explored(f"x{i}", "return 12\n" * 20, 1, 0, sample=k) for i in range(100) for k in range(4)])
    pool.close()


def cut_in_half(path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def another_database(path) -> None:
    path.unlink()
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (text TEXT)")


@pytest.mark.parametrize(
    "damage, why",
    [
        (cut_in_half, "is damaged (database disk image is malformed)"),
        (lambda path: path.write_text("not a database\n"), "is damaged (file is not a database)"),
        (lambda path: path.write_bytes(b""), "is not a candidate pool (it has no table 'trajectories')"),
        (another_database, "is not a candidate pool (it has no table 'trajectories')"),
    ],
)
def test_a_damaged_or_foreign_pool_file_is_refused_in_one_line(tmp_path, damage, why):
    path = tmp_path / "pool.sqlite"
    whole_pool(path)
    check_pool(path)
    damage(path)
    with pytest.raises(UserError, match=re.escape(f"{path} {why}")) as refused:
        check_pool(path)
    assert "\n" not in str(refused.value) and str(refused.value).endswith(RECOVERY)


def test_the_pool_commits_through_a_synced_rollback_journal(tmp_path):
    pool = CandidatePool(str(tmp_path / "pool.sqlite"))
    assert pool.db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    assert pool.db.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL


def test_a_read_only_pool_reads_what_was_written_and_refuses_to_write(tmp_path):
    path = str(tmp_path / "pool.sqlite")
    pool = CandidatePool(path)
    written = [Trajectory("a", "x = 1", 1, -0.5, 0, "explore"), Trajectory("b", "x = 2", 0, -0.7, 1, "explore")]
    pool.record(written)
    pool.close()
    reader = CandidatePool(path, read_only=True)
    assert [t.example_id for t in reader.trajectories(iteration=1)] == ["b"]
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reader.record([Trajectory("c", "x = 3", 1, -0.1, 1, "explore")])
    reader.close()
    assert [t.example_id for t in CandidatePool(path, read_only=True).trajectories()] == ["a", "b"]
