"""The logic environment: ProofWriter inputs described, programs scored, and runaway theories
stopped by the worker backstop while the executor actor lives on."""

import time

import psutil
import pytest
import ray
import yaml

from envisions_ray.actors.executor import ExecutorGroup
from envisions_ray.config import EnvConfig
from envisions_ray.envs.logic_engine import LogicEngine, LogicSettings
from envisions_ray.errors import UserError
from envisions_ray.types import Example
from tests.actor_process import actor_pid

THEORY = Example("p1", "Bob is kind.", "True", {"context": "Bob is big. Big people are kind."})
GOOD = "Facts:\nBig(Bob, True)\nRules:\nBig($x, True) >>> Kind($x, True)\nQuery:\nKind(Bob, True)\n"
SLACK_S = 2.0  # how far past the backstop a busy machine may hold the caller
WORKER_MODULE = "envisions_ray.envs.logic_worker"  # the engine runs `python -m` it


def grounding_bomb(entities: int = 30, variables: int = 6) -> str:
    """entities ** variables ground atoms: clingo's interrupt cannot stop grounding this."""
    facts = "\n".join(f"Node(E{i}, True)" for i in range(entities))
    names = [f"$v{j}" for j in range(variables)]
    body = " && ".join(f"Node({name}, True)" for name in names)
    return f"Facts:\n{facts}\nRules:\n{body} >>> Tuple({', '.join(names)}, True)\nQuery:\nNode(E1, True)\n"


def worker_pids() -> set[int]:
    """This process's live logic workers, by their command line."""
    found = set()
    for child in psutil.Process().children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and WORKER_MODULE in child.cmdline():
                found.add(child.pid)
        except psutil.NoSuchProcess:  # exited meanwhile
            continue
    return found


@pytest.fixture(scope="module")
def engine():
    env = LogicEngine(LogicSettings(timeout_s=0.5, backstop_margin_s=1.0))
    yield env
    env.close()


def test_describe_shows_the_theory_and_the_statement(engine):
    text = engine.describe(THEORY)
    assert text.startswith("Context: Bob is big. Big people are kind.\n") and text.endswith("Bob is kind.")
    with pytest.raises(UserError, match="'p2' has no 'context'"):
        engine.describe(Example("p2", "Bob is kind.", "True"))


@pytest.mark.parametrize("label, reward", [("True", 1), ("true", 1), ("Unknown", 0), ("False", 0)])
def test_scores_the_engine_answer_against_the_label(engine, label, reward):
    outcome = engine.execute(GOOD, Example("p", "q", label, THEORY.meta))
    assert (outcome.reward, outcome.output, outcome.error) == (reward, "True", "")


def test_bad_programs_score_zero_and_keep_the_reason(engine):
    parse_error = engine.execute("Facts:\nBig(Bob)\nQuery:\nKind(Bob, True)", THEORY)
    assert parse_error.reward == 0 and parse_error.error.startswith("parse error: line 2:")
    unsafe = engine.execute(
        "Facts:\nBig(Bob, True)\nRules:\nBig($x, True) >>> Kind($y, True)\nQuery:\nKind(Bob, True)", THEORY
    )
    assert unsafe.reward == 0 and "unsafe" in unsafe.error
    assert not unsafe.error.startswith("parse error")  # it parsed; the engine refused it


def test_grounding_bomb_is_killed_and_the_engine_goes_on(engine):
    before = worker_pids()
    start = time.monotonic()
    outcome = engine.execute(grounding_bomb(), THEORY)
    elapsed = time.monotonic() - start
    assert outcome.reward == 0 and "did not reply within 1.5s" in outcome.error
    assert elapsed < 1.5 + SLACK_S
    assert engine.execute(GOOD, THEORY).reward == 1
    after = worker_pids()
    assert before - after and after - before  # a fresh worker replaced the killed one


def test_memory_limit_turns_a_blow_up_into_an_error():
    env = LogicEngine(LogicSettings(timeout_s=30.0, backstop_margin_s=30.0, memory_mb=200))
    try:
        # Where the allocation fails (clingo or Python) decides the wording; each names memory.
        for shape in [(30, 6), (60, 4), (200, 3)]:
            outcome = env.execute(grounding_bomb(*shape), THEORY)
            assert outcome.reward == 0 and "memory" in outcome.error.lower()
            assert env.execute(GOOD, THEORY).reward == 1
    finally:
        env.close()


def test_grounding_bomb_does_not_kill_the_executor_actor(ray_session):
    [executor] = ExecutorGroup(
        EnvConfig(name="logic", num_executors=1, settings={"timeout_s": 0.5, "backstop_margin_s": 1.0})
    ).actors
    pid = ray.get(actor_pid(executor))
    bomb, good = ray.get(executor.execute.remote([(grounding_bomb(), THEORY), (GOOD, THEORY)]), timeout=60)
    assert bomb.reward == 0 and "did not reply" in bomb.error
    assert good.reward == 1
    assert ray.get(actor_pid(executor)) == pid  # the same actor process, never restarted
    ray.kill(executor)


@pytest.mark.parametrize("label", ["TRUE", " true ", "True"])
def test_labels_match_whatever_their_case_and_spaces(engine, label):
    assert engine.execute(GOOD, Example("p", "q", label, THEORY.meta)).reward == 1
    unknown = GOOD.replace("Query:\nKind(Bob, True)", "Query:\nKind(Ann, True)")
    assert engine.execute(unknown, Example("p", "q", " unknown ", THEORY.meta)).reward == 1


def test_each_demonstration_answers_its_own_question_one_per_label(engine):
    shots = yaml.safe_load(open("conf/prompts/logic.yaml"))["shots"]
    # The first, for 1-shot prompts: "If something is rough and big then it is not kind", and the
    # bear chases the mouse, so it is rough. Then one True and one Unknown, for 3-shot prompts.
    labels = ["False", "True", "Unknown"]
    assert len(shots) == len(labels)
    for shot, label in zip(shots, labels):
        context, question = shot["problem"].removeprefix("Context: ").split("\nQuestion: ")
        outcome = engine.execute(shot["solution"], Example("shot", question, label, {"context": context}))
        assert (outcome.reward, outcome.output) == (1, label)
