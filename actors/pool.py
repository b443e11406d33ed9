"""The candidate pool: every trajectory of a run, in SQLite in the run directory.

Each batch of executed trajectories is committed as it arrives, so a killed run loses nothing it
already executed. Storing is idempotent: a trajectory's stable key (iteration, source, example,
parent, sample) is unique, so a `record` that Ray retries after the pool actor died, with the
batch already committed, stores nothing twice and returns the same ids.

`select` applies the eq. 2 filter and per-input dedup to one iteration and adds the winners to the
long-term pool; `training_set` builds U1 and U2 from that pool. The same database records which
stages of which iteration have finished, which is what `--resume` reads.

Durable against a kill: SQLite's rollback journal (its default; not WAL, whose shared memory does
not work on the network filesystems a cluster's run directory may live on), synced at every commit
(synchronous FULL). A killed writer's half-written transaction is rolled back at the next open.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from dataclasses import astuple, fields
from pathlib import Path

from envisions_ray.errors import UserError
from envisions_ray.selection import TrainingSet, build_training_set, dedupe, filter_pair, preference_pairs
from envisions_ray.types import Trajectory

COLUMNS = [f.name for f in fields(Trajectory)]
INSERT = f"INSERT OR IGNORE INTO trajectories ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
SCHEMA = """
CREATE TABLE IF NOT EXISTS trajectories (
    example_id TEXT NOT NULL, solution TEXT NOT NULL, reward INTEGER NOT NULL, self_reward REAL NOT NULL,
    iteration INTEGER NOT NULL, source TEXT NOT NULL, output TEXT, error TEXT,
    id INTEGER PRIMARY KEY, parent_id INTEGER REFERENCES trajectories(id),
    in_pool INTEGER NOT NULL DEFAULT 0, sample INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS by_iteration ON trajectories(iteration, source);
-- The stable key; a NULL parent would make every explored trajectory distinct, hence the -1.
CREATE UNIQUE INDEX IF NOT EXISTS stable_key
    ON trajectories(iteration, source, example_id, COALESCE(parent_id, -1), sample);
CREATE TABLE IF NOT EXISTS stages (iteration INTEGER, stage TEXT, detail TEXT, PRIMARY KEY (iteration, stage));
-- Wall time per stage and driver session, so that a resumed iteration's seconds add up.
CREATE TABLE IF NOT EXISTS stage_seconds (
    iteration INTEGER, stage TEXT, session TEXT, seconds REAL, PRIMARY KEY (iteration, stage, session)
);
"""
TABLES = ("trajectories", "stages", "stage_seconds")
BASE_MODEL = -1  # the iteration the base model's eval is kept under in `stages` and `stage_seconds`
RECOVERY = "restore it from a copy, or start the run again with another run_dir"


class CandidatePool:
    def __init__(self, path: str, read_only: bool = False):
        if read_only:  # for a report on a run that may still be writing it: no schema, no writes
            self.db = sqlite3.connect(f"{Path(path).absolute().as_uri()}?mode=ro", uri=True)
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(path)
        self.db.execute("PRAGMA synchronous = FULL")  # whatever this SQLite was built with
        try:
            self.db.executescript(SCHEMA)
        except sqlite3.OperationalError as err:  # a pool from before trajectories had a stable key
            raise UserError(
                f"{path} was written by an older envisions-ray ({err}); resume it with that version"
            ) from None

    def record(self, trajectories: list[Trajectory]) -> list[int]:
        """Store executed trajectories in one transaction; returns their ids, also of those stored before."""
        ids = []
        with self.db:
            for t in trajectories:
                cursor = self.db.execute(INSERT, astuple(t))
                if cursor.rowcount == 0:  # its key is taken: this batch was committed before
                    cursor = self.db.execute(
                        "SELECT id FROM trajectories WHERE iteration = ? AND source = ? AND example_id = ?"
                        " AND COALESCE(parent_id, -1) = ? AND sample = ?",
                        (t.iteration, t.source, t.example_id, -1 if t.parent_id is None else t.parent_id, t.sample),
                    )
                    ids.append(cursor.fetchone()[0])
                else:
                    ids.append(cursor.lastrowid)
        return ids

    def trajectories(
        self, iteration: int | None = None, source: str | None = None, in_pool: bool | None = None
    ) -> list[Trajectory]:
        where, params = _where(iteration=iteration, source=source, in_pool=in_pool)
        rows = self.db.execute(f"SELECT {', '.join(COLUMNS)} FROM trajectories {where} ORDER BY id", params)
        return [Trajectory(*row) for row in rows]

    def inputs(self, iteration: int | None = None, source: str | None = None) -> set[str]:
        """The inputs that have trajectories (of one iteration, one source, where given)."""
        where, params = _where(iteration=iteration, source=source)
        return {row[0] for row in self.db.execute(f"SELECT DISTINCT example_id FROM trajectories {where}", params)}

    def count(self, iteration: int, source: str) -> int:
        where, params = _where(iteration=iteration, source=source)
        return self.db.execute(f"SELECT COUNT(*) FROM trajectories {where}", params).fetchone()[0]

    def select(self, iteration: int, long_term: bool = True) -> int:
        """Eq. 2 over this iteration's (explored, refined) pairs, deduped against the pool; returns how many joined.

        Without long-term memory the pool is this iteration's alone, so dedup looks no further back.
        """
        refined_by_parent = {t.parent_id: t for t in self.trajectories(iteration, "refine")}
        winners = [filter_pair(t, refined_by_parent.get(t.id)) for t in self.trajectories(iteration, "explore")]
        already_pooled = self.trajectories(None if long_term else iteration, in_pool=True)
        joining = dedupe(already_pooled + winners)[len(already_pooled) :]
        with self.db:
            self.db.executemany("UPDATE trajectories SET in_pool = 1 WHERE id = ?", [(t.id,) for t in joining])
        return len(joining)

    def training_set(
        self,
        n1: int,
        n2: int,
        leave_positive_for_pair: bool,
        rank_by: str = "self_reward",
        seed: int = 0,
        iteration: int | None = None,
    ) -> TrainingSet:
        """U1 and U2 from the whole pool, or from one iteration's part of it (no long-term memory)."""
        pooled = self.trajectories(iteration, in_pool=True)
        return build_training_set(pooled, n1, n2, leave_positive_for_pair, rank_by, seed)

    def preference_pairs(
        self, n2: int, rank_by: str, seed: int, iteration: int | None = None
    ) -> list[tuple[Trajectory, Trajectory]]:
        """The SFT + DPO baseline's pairs, from the same pool U1 and U2 come from."""
        return preference_pairs(self.trajectories(iteration, in_pool=True), n2, rank_by, seed)

    def solved_inputs(self, iteration: int) -> set[str]:
        """M_i: inputs with at least one correct trajectory this iteration (explored or refined)."""
        rows = self.db.execute(
            "SELECT DISTINCT example_id FROM trajectories WHERE iteration = ? AND reward = 1", (iteration,)
        )
        return {row[0] for row in rows}

    def pool_counts(self) -> dict[str, int]:
        """Pooled trajectories, and distinct correct programs per input: without long-term memory
        each iteration pools its own copy of a program found again, which counts once."""
        pooled = self.trajectories(in_pool=True)
        return {"pool_size": len(pooled), "unique_correct": len(dedupe([t for t in pooled if t.reward]))}

    def mark_done(self, iteration: int, stage: str, detail: str | None = None) -> None:
        """Record a finished stage; `detail` (JSON) is what resuming needs of it, e.g. the checkpoint."""
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO stages VALUES (?, ?, ?)", (iteration, stage, detail))

    def is_done(self, iteration: int, stage: str) -> bool:
        return (
            self.db.execute("SELECT 1 FROM stages WHERE iteration = ? AND stage = ?", (iteration, stage)).fetchone()
            is not None
        )

    def stage_detail(self, iteration: int, stage: str) -> str | None:
        row = self.db.execute(
            "SELECT detail FROM stages WHERE iteration = ? AND stage = ?", (iteration, stage)
        ).fetchone()
        return row[0] if row else None

    def record_seconds(self, iteration: int, stage: str, session: str, seconds: float) -> None:
        """One driver session's total so far for a stage: replaced, so a retried call adds nothing."""
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO stage_seconds VALUES (?, ?, ?, ?)", (iteration, stage, session, seconds)
            )

    def seconds(self, iteration: int) -> dict[str, float]:
        """Each stage's wall time, summed over the driver sessions that worked on it, in stage order."""
        rows = self.db.execute(
            "SELECT stage, SUM(seconds) FROM stage_seconds WHERE iteration = ? GROUP BY stage ORDER BY MIN(rowid)",
            (iteration,),
        )
        return dict(rows.fetchall())

    def newest_checkpoint(self) -> str | None:
        """The checkpoint of the newest iteration that finished training (its detail names it)."""
        row = self.db.execute(
            "SELECT detail FROM stages WHERE stage = 'train' ORDER BY iteration DESC LIMIT 1"
        ).fetchone()
        return json.loads(row[0])["checkpoint"] if row else None

    def close(self) -> None:
        self.db.close()


def _where(**equal) -> tuple[str, list]:
    """A WHERE clause that each column equals its value; columns whose value is None are left out."""
    clauses, params = [], []
    for column, value in equal.items():
        if value is not None:
            clauses.append(f"{column} = ?")
            params.append(int(value) if isinstance(value, bool) else value)
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params


def check_pool(path: Path) -> None:
    """Refuse in one line a pool.sqlite that is no whole candidate pool: not SQLite, cut short or
    damaged (SQLite's quick_check), or without the tables a run makes. Never creates the file; a
    hot journal a killed writer left is rolled back, as any open does."""
    tables = set()
    try:
        with closing(sqlite3.connect(f"{path.absolute().as_uri()}?mode=rw", uri=True)) as db:
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as err:  # "file is not a database", "database disk image is malformed"
        verdict = str(err)
    if verdict != "ok":
        raise UserError(f"{path} is damaged ({verdict}): {RECOVERY}")
    missing = [table for table in TABLES if table not in tables]
    if missing:
        raise UserError(f"{path} is not a candidate pool (it has no table '{missing[0]}'): {RECOVERY}")
