"""The web domain in real headless Chromium: cleanup, determinism, the action language end to end,
a browser killed mid-run, and `envisions exec web`."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import ray
import yaml

from envisions_ray.actors.executor import ExecutorGroup
from envisions_ray.config import EnvConfig
from envisions_ray.data import task_input
from envisions_ray.envs.web_browser import DIRECTORY_PREFIX, wrapper_script
from envisions_ray.envs.web_miniwob import NOT_FINISHED, WebEnvironment, WebSettings
from envisions_ray.leftovers import processes_under
from envisions_ray.types import Outcome
from tests.actor_process import actor_pid

CLICK_ONE = 'click_text("ONE")'  # click-test-2: right on every seed
CAP_SYS_NICE = 23  # linux/capability.h


def browser_processes() -> list[int]:
    """Live chromedriver and Chromium processes (zombies left for init to reap do not count)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() in (
                "chromedriver",
                "chromium",
                "chrome_crashpad",
            ):
                if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def browser_pids(env: WebEnvironment) -> list[int]:
    """chromedriver, Chromium and its helpers of `env`'s browser: the live processes that name its directory."""
    return processes_under(str(env.browser.directory)) if env.browser else []


def profile_directories() -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob(f"{DIRECTORY_PREFIX}*"))


@pytest.fixture
def web():
    env = WebEnvironment(WebSettings())
    yield env
    env.close()


def test_after_100_episodes_no_browser_process_or_profile_is_left():
    before_processes, before_directories = set(browser_processes()), set(profile_directories())
    env = WebEnvironment(WebSettings())
    rewards = []
    for episode in range(100):  # two tasks in turn, ten at a time: each switch replaces the browser
        task = "click-test-2" if episode // 10 % 2 == 0 else "click-button"
        program = CLICK_ONE if task == "click-test-2" else 'click(tag="button", nth=1)'
        rewards.append(env.execute(program, task_input(task, episode)).reward)
        if episode == 50:
            running = browser_pids(env)
            assert len(running) >= 3  # chromedriver, the browser and its helpers, all found
            assert any(d not in before_directories for d in profile_directories())
    env.close()
    assert rewards.count(1) >= 50  # every click-test-2 episode; click-button only when the first button is it
    assert set(browser_processes()) - before_processes == set()
    assert set(profile_directories()) - before_directories == set()


@pytest.mark.parametrize(
    "task", ["click-checkboxes", "click-dialog", "search-engine", "social-media-all", "choose-date"]
)
def test_the_same_seed_gives_the_same_page_and_the_same_reward(web, task):
    # The task's demonstration solves its seed; episodes on another seed in between must not
    # change that page or that result (search-engine and the others keep state in the page).
    [shot] = [s for s in yaml.safe_load(Path("conf/prompts/web.yaml").read_text())["shots"] if s["task"] == task]
    first, other = task_input(task, shot["seed"]), task_input(task, shot["seed"] + 1)
    page = web.describe(first)
    for _ in range(3):
        web.describe(other)
        web.execute(shot["solution"], other)
        assert web.describe(first) == page  # refs included
        assert web.execute(shot["solution"], first) == Outcome(reward=1, output="1")


def test_describe_is_the_utterance_and_a_bounded_page(web):
    page = web.describe(task_input("social-media-all", 1))  # a long feed
    assert page.startswith("Task: Click the ")
    assert "more elements" in page and len(page) <= WebSettings().max_observation_chars + 40
    assert '[4] button "ONE" #subbtn' in web.describe(task_input("click-test-2", 3))


def test_programs_run_step_by_step_and_failures_keep_their_reason(web):
    x = task_input("click-test-2", 3)
    assert web.execute(CLICK_ONE, x).reward == 1
    wrong = web.execute('click_text("TWO")', x)
    assert (wrong.reward, wrong.output) == (0, "-1")
    assert "parse error: line 1" in web.execute("import os\nos.system('true')", x).error
    unknown = web.execute("click(ref=99)", x)
    assert unknown.reward == 0 and "no element on the page matches ref=99" in unknown.error
    assert web.execute('click(tag="input_text")', x).error.startswith("line 1: no element")
    # The task ends at the first click; the second click's element is gone with the page.
    late = web.execute('click_text("ONE")\nclick_text("TWO")', x)
    assert (late.reward, late.error) == (1, "")  # the task ended at ONE: TWO is never clicked
    idle = web.execute('click(id="area")', x)  # clicks nothing that ends the task
    assert (idle.reward, idle.error) == (0, NOT_FINISHED)


def test_an_episode_is_bounded_in_typed_text_and_in_wall_time():
    x = task_input("enter-text", 1)
    env = WebEnvironment(WebSettings(episode_timeout_s=0.01))
    try:
        start = time.monotonic()
        flood = env.execute(f'type(tag="input_text", "{"x" * 100_000}")', x)  # took minutes before
        assert flood.reward == 0 and flood.error == "the program types 100000 characters, more than 1000"
        assert time.monotonic() - start < 1.0  # refused before any browser time is spent
        idle = env.execute('click(id="area")\nclick(id="area")', x)  # the second click is past the bound
        assert (idle.reward, idle.error) == (0, "the episode ran past 0.01s")
    finally:
        env.close()


def test_a_step_can_name_an_element_that_an_earlier_step_made_appear(web):
    x = task_input("search-engine", 1)
    page = web.describe(x)
    assert "Search" in page and "search-title" not in page  # no results before searching
    target = page.split('Task: Use the textbox to enter "')[1].split('"')[0]
    program = f'type(id="search-text", "{target}")\nclick(id="search")\nclick(cls="search-title", nth=1)'
    outcome = web.execute(program, x)
    assert outcome.error == "" and outcome.output != ""  # the result link was found and clicked


def test_select_and_mouse_click_drive_widgets_a_javascript_click_cannot(web):
    chooser = task_input("choose-list", 1)
    wanted = web.describe(chooser).split("Select ")[1].split(" from the list")[0]
    assert web.execute(f'select(id="options", "{wanted}")\nclick_text("Submit")', chooser).reward == 1
    assert "has no option" in web.execute('select(id="options", "no such fruit")', chooser).error
    spinner = task_input("use-spinner", 1)  # "Select -7 with the spinner"
    assert "Select -7" in web.describe(spinner)
    assert web.execute('mouse_click(cls="ui-spinner-down")\n' * 7 + 'click_text("Submit")', spinner).reward == 1


def test_a_killed_browser_is_replaced_and_its_episode_retried(web):
    x = task_input("click-test-2", 3)
    assert web.execute(CLICK_ONE, x).reward == 1
    browser = next(pid for pid in browser_pids(web) if "--type=" not in Path(f"/proc/{pid}/cmdline").read_text())
    os.kill(browser, signal.SIGKILL)
    assert web.execute(CLICK_ONE, x).reward == 1
    assert browser not in browser_pids(web)
    assert web.events == {"starts": 2, "crashes": 1, "restarts": 1}


def test_chromium_runs_at_the_executors_priority_and_cannot_raise_it(tmp_path, web):
    # The wrapper with a stand-in for Chromium that reports its niceness and capabilities.
    stand_in = tmp_path / "report"
    stand_in.write_text("#!/bin/sh\nnice\ngrep CapBnd /proc/self/status\n")
    stand_in.chmod(0o700)
    wrapper = tmp_path / "chrome"
    wrapper.write_text(wrapper_script(str(stand_in), [], os.getpriority(os.PRIO_PROCESS, 0) + 3))
    wrapper.chmod(0o700)
    niceness, capabilities = subprocess.run([str(wrapper)], capture_output=True, text=True, check=True).stdout.split(
        "\n"
    )[:2]
    assert int(niceness) == os.getpriority(os.PRIO_PROCESS, 0) + 3
    assert not int(capabilities.split()[1], 16) & (1 << CAP_SYS_NICE)
    # The real browser: as root Chromium lifted its display threads to nice -8 before the wrapper.
    assert web.execute(CLICK_ONE, task_input("click-test-2", 0)).reward == 1
    threads = [task for pid in browser_pids(web) for task in Path(f"/proc/{pid}/task").iterdir()]
    assert threads and all(
        os.getpriority(os.PRIO_PROCESS, int(task.name)) >= os.getpriority(os.PRIO_PROCESS, 0) for task in threads
    )


def test_the_pool_counts_the_browsers_of_retired_executors_and_its_peak_processes(ray_session):
    cfg = EnvConfig(
        name="web",
        num_executors=1,
        max_executors=2,
        grow_after_s=0.0,
        shrink_after_s=0.5,
        poll_s=0.05,
        count_processes=DIRECTORY_PREFIX,
        count_every_s=0.0,
    )
    pool = ExecutorGroup(cfg)
    # Each episode waits settle_s (1 s) for an element that never comes: long enough that the
    # second executor gets work and starts a browser of its own.
    batches = [[('click_text("NOPE")', task_input("click-test-2", seed))] for seed in range(10)]
    assert [o.reward for [o] in pool.execute(batches, ["click-test-2"] * 10)] == [0] * 10
    assert pool.stats().peak == 2
    counted = pool.events()  # one browser per executor: the task never switched
    assert counted == {"starts": 2}
    time.sleep(0.6)
    pool.tick()
    assert pool.stats().size == 1  # one retired, with its browser ...
    assert pool.events() == counted  # ... and its count stays
    assert pool.stats().peak_processes >= 3  # chromedriver, Chromium and its helpers
    pool.close()


def test_killing_the_browser_mid_run_loses_no_episode(ray_session):
    pool = ExecutorGroup(EnvConfig(name="web", num_executors=1, max_retries=1, resources={"browser": 1}))
    jobs = [(CLICK_ONE, task_input("click-test-2", seed)) for seed in range(40)]
    owner = ray.get(actor_pid(pool.actors[0]))
    ref = pool.actors[0].execute.remote(jobs)

    def kill_the_browser_once_it_runs():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for directory in Path(tempfile.gettempdir()).glob(f"{DIRECTORY_PREFIX}{owner}-*"):
                for pid in processes_under(str(directory)):
                    try:
                        command = Path(f"/proc/{pid}/cmdline").read_bytes()
                    except OSError:  # gone meanwhile
                        continue
                    if b"--type=" not in command and b"chromium" in command:
                        time.sleep(0.3)  # a few episodes in
                        os.kill(pid, signal.SIGKILL)
                        return pid
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_browser_once_it_runs)
    killer.start()
    outcomes = ray.get(ref, timeout=180)
    killer.join()
    assert [o.reward for o in outcomes] == [1] * 40
    os.kill(owner, signal.SIGKILL)  # the actor itself: Ray restarts it; its orphaned browser is swept
    assert [o.reward for o in ray.get(pool.actors[0].execute.remote(jobs[:3]), timeout=120)] == [1, 1, 1]
    assert not any(str(owner) == d.name.removeprefix(DIRECTORY_PREFIX).split("-")[0] for d in profile_directories())
    pool.close()


def test_envisions_exec_web_runs_a_program_in_a_fresh_browser(tmp_path):
    program = tmp_path / "program.txt"
    program.write_text(CLICK_ONE + "\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "envisions_ray.cli",
            "exec",
            "web",
            str(program),
            "--input",
            '{"task": "click-test-2", "seed": 3}',
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == {"reward": 1, "output": "1", "error": ""}
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "envisions_ray.cli",
            "exec",
            "web",
            str(program),
            "--input",
            '{"task": "no-such-task", "seed": 3}',
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (
        bad.returncode == 2
        and bad.stderr.strip() == "envisions: error: web input 'cli': miniwob has no task 'no-such-task'"
    )
