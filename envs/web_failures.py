"""Why a web episode failed, read from its Outcome: the messages envs/web_miniwob.py writes, and
the cause each one stands for. Light on purpose (no browser, no miniwob), so a report can group a
run's failures without the web stack installed."""

from __future__ import annotations

from envisions_ray.types import PARSE_ERROR

NO_ELEMENT = "no element on the page matches"
NO_OPTION = "has no option"
NOT_A_SELECT = "select needs a <select>"
NOT_FINISHED = "the program ended before the task did"
BROWSER_CRASHED = "the browser crashed twice"

# In the order a report lists them. "too long": refused for its length, or stopped at the
# episode's time limit.
CAUSES = ("parse error", "no element", "ended early", "wrong answer", "browser error", "too long")


def failure_cause(reward: int, error: str | None) -> str | None:
    """The cause of a failed episode; None for a success. A task that ended with no reward, or
    ended while the program still waited for an element, was answered wrongly."""
    if reward > 0:
        return None
    error = error or ""
    if error.startswith(PARSE_ERROR):
        return "parse error"
    if NO_ELEMENT in error or NO_OPTION in error or NOT_A_SELECT in error:
        return "no element"
    if error == NOT_FINISHED:
        return "ended early"
    if error.startswith(BROWSER_CRASHED):
        return "browser error"
    if not error or "the task ended before" in error:
        return "wrong answer"
    return "too long"
