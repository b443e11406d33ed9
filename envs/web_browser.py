"""One headless Chromium running one MiniWoB++ task, through the PyPI package `miniwob`.

How our Chrome flags reach Chromium. miniwob starts Chrome inside `gymnasium.make()` with only
headless, no-sandbox and disable-gpu, and has no hook for more. What it does support is the pair of
variables MINIWOB_CHROME_BINARY / MINIWOB_CHROMEDRIVER, read when the driver starts. So each browser
gets its own directory holding a wrapper script that execs Debian's chromium with our flags
appended; MINIWOB_CHROME_BINARY points at the wrapper. chromedriver supports a wrapper as the
browser binary as long as it execs Chrome, which stays chromedriver's child. chromedriver gets a
wrapper too, and both keep the executor's CPU priority (`wrapper_script`).

The fresh --user-data-dir. The wrapper must not pass one: chromedriver already passes its own
profile directory and waits for Chrome to write DevToolsActivePort into it, so a second one makes
the start fail with "DevToolsActivePort file doesn't exist". chromedriver makes that profile with
mkdtemp under $TMPDIR, so TMPDIR is pointed at the browser's directory while the driver starts: the
profile (and Chrome's shared-memory files, with --disable-dev-shm-usage) land inside it. Closing
quits the driver, kills whatever still runs from the directory, and removes it.

The variables are process-wide; they are set only around `gymnasium.make()`, and an executor
actor owns one browser at a time.
"""

from __future__ import annotations

import os
import shlex

import gymnasium
import miniwob
from miniwob.action import ActionSpaceConfig, ActionTypes
from miniwob.reward import get_raw_reward

from envisions_ray.envs.web_actions import KEYS
from envisions_ray.leftovers import owned_directory, remove_directory

DIRECTORY_PREFIX = "envisions-chromium-"
gymnasium.register_envs(miniwob)


def action_space() -> ActionSpaceConfig:
    """Every miniwob action type, and exactly the keys the action language can press."""
    return ActionSpaceConfig(action_types=list(ActionTypes), allowed_keys=tuple(KEYS.values()))


def wrapper_script(binary: str, flags: list[str], niceness: int) -> str:
    """A script that runs `binary` (Chromium with our flags, or chromedriver) at the executor's
    niceness, unable to raise its own priority.

    Why: Ray runs its workers, the generator's vLLM engine among them, at nice 15, but chromedriver
    starts Chrome from a thread at nice 0, and Chromium and chromedriver running as root lift some
    threads to nice -8, so the browsers outranked generation for the CPU. Dropping CAP_SYS_NICE (root only;
    others lack it anyway) keeps every thread at the niceness it starts with. On 88 episodes of the
    44 tasks (2 cores, 2026-12-02) the eval took 269 s instead of 287 s, with the same answers."""
    launch = f'nice -n "$(({niceness} - $(nice)))" {shlex.quote(binary)} "$@" {shlex.join(flags)}'
    as_root = f'if [ "$(id -u)" = 0 ]; then exec setpriv --bounding-set=-sys_nice -- {launch}; fi'
    return f"#!/bin/sh\n{as_root}\nexec {launch}\n"


class Browser:
    def __init__(self, task: str, chrome_binary: str, chromedriver: str, flags: list[str], refresh: bool) -> None:
        self.task = task
        # The owner's pid in the name lets a later executor clean up after one that was killed.
        self.directory = owned_directory(DIRECTORY_PREFIX)
        niceness = os.getpriority(os.PRIO_PROCESS, 0)
        wrapper, driver_wrapper = self.directory / "chrome", self.directory / "chromedriver"
        wrapper.write_text(wrapper_script(chrome_binary, flags, niceness))
        driver_wrapper.write_text(wrapper_script(chromedriver, [], niceness))  # it raises its threads too
        for script in (wrapper, driver_wrapper):
            script.chmod(0o700)
        launch = {
            "MINIWOB_CHROME_BINARY": str(wrapper),
            "MINIWOB_CHROMEDRIVER": str(driver_wrapper),
            "TMPDIR": str(self.directory),
        }
        saved = {name: os.environ.get(name) for name in launch}
        os.environ.update(launch)
        try:
            # Tasks that keep page state across resets reload the page every episode, so a seed
            # always gives the same instance.
            self.env = gymnasium.make(
                f"miniwob/{task}-v1",
                disable_env_checker=True,
                reward_processor=get_raw_reward,
                action_space_config=action_space(),
                refresh_freq=int(refresh),
            )
        except BaseException:
            self.close()
            raise
        finally:
            for name, value in saved.items():
                if value is None:
                    del os.environ[name]
                else:
                    os.environ[name] = value
        self.page = self.env.unwrapped

    def reset(self, seed: int) -> dict:
        # A numpy int would reach JavaScript as "np.int64(3)". Screenshots are never read.
        observation, _ = self.env.reset(seed=int(seed), options={"record_screenshots": False})
        return observation

    def step(self, action_type: ActionTypes, **fields) -> tuple[dict, bool, float]:
        """One action; the new observation, whether the episode ended, and the raw task reward."""
        action = self.page.create_action(action_type, **fields)
        observation, reward, terminated, _, info = self.env.step(action)
        return observation, terminated, float(info.get("raw_reward", reward))

    def key_index(self, key: str) -> int:
        return self.page.action_space_config.allowed_keys.index(KEYS[key])

    @property
    def driver(self):
        return self.page.instance.driver

    def close(self) -> None:
        if hasattr(self, "env"):
            try:
                self.env.close()  # quits Chrome through chromedriver, then stops chromedriver
            except Exception:  # a crashed browser cannot be quit politely; the sweep below ends it
                pass
            del self.env
        remove_directory(self.directory)
