"""Web environment: MiniWoB++ tasks in real headless Chromium, driven by a parsed action program.

An input is (task, seed): `Example.meta` holds both. `describe` resets the task to the seed and
renders the page (envs/web_dom.py); `execute` parses the program (envs/web_actions.py; parsed,
never executed as Python), resets to the same seed, and runs the steps open-loop against the live
page, as in the paper. Success is a raw task reward above 0 (docs/domains/web.md "Scoring").

b = 0, with the reason kept, for a program that does not parse, a step whose element is not on the
page (after `settle_s` of waiting for it to appear), or a program that ends before the task does.
A browser that crashes mid-episode is replaced and the episode run once more.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from dataclasses import dataclass, field

import gymnasium
import numpy as np
from miniwob.action import ActionTypes
from selenium.common.exceptions import NoSuchElementException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from urllib3.exceptions import HTTPError

from envisions_ray.envs.web_actions import ActionError, Step, matches, parse_program
from envisions_ray.envs.web_browser import DIRECTORY_PREFIX, Browser
from envisions_ray.envs.web_dom import Element, page_elements, render
from envisions_ray.envs.web_failures import BROWSER_CRASHED, NO_ELEMENT, NO_OPTION, NOT_A_SELECT, NOT_FINISHED
from envisions_ray.errors import UserError
from envisions_ray.leftovers import sweep_orphans
from envisions_ray.types import PARSE_ERROR, Example, Outcome

# What a dead Chromium or chromedriver looks like from here: WebDriver's errors, or no connection.
BROWSER_LOST = (WebDriverException, HTTPError, ConnectionError)


@dataclass
class WebSettings:
    """`env.settings` of the web domain."""

    chrome_binary: str = "/usr/bin/chromium"
    chromedriver: str = "/usr/bin/chromedriver"
    # Without these Chromium stalls on a closed network (background fetches, component updates).
    # miniwob passes --headless, --no-sandbox and --disable-gpu too; the repeat is harmless.
    chrome_flags: list[str] = field(
        default_factory=lambda: [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--lang=en-US",
        ]
    )
    # Tasks that keep page state across resets (miniwob's registry marks them nondeterministic):
    # their page is reloaded every episode, so the same seed always gives the same instance.
    reload_tasks: list[str] = field(
        default_factory=lambda: [
            "choose-date",
            "click-dialog",
            "click-dialog-2",
            "click-scroll-list",
            "search-engine",
            "social-media-all",
        ]
    )
    # The observation's length bound: about 600 tokens of SmolLM2's tokenizer.
    max_observation_chars: int = 2000
    # How long a step waits for the element it names to appear (animations, late-built widgets).
    settle_s: float = 1.0
    poll_s: float = 0.05
    max_steps: int = 200  # a program longer than this is cut with b = 0
    # Bounds on one episode: a program typing more than this is refused before it runs (10 KB of
    # typing takes half a minute), and one whose actions run past this wall time stops with b = 0.
    max_typed_chars: int = 1000
    episode_timeout_s: float = 20.0


class WebEnvironment:
    Settings = WebSettings

    def __init__(self, cfg: WebSettings) -> None:
        self.cfg = cfg
        for binary in (cfg.chrome_binary, cfg.chromedriver):
            if shutil.which(binary) is None:
                raise UserError(
                    f"the web environment needs {binary}: "
                    "run scripts/setup.sh (apt-get install chromium chromium-driver)"
                )
        self.browser: Browser | None = None
        # Browsers started, crashes caught, and browsers started to replace a crashed one; the
        # executor actor reports them (`Executor.events`).
        self.events: Counter[str] = Counter()

    def describe(self, example: Example) -> str:
        observation = self._with_browser(lambda: self._reset(example))
        return render(
            observation["utterance"], page_elements(observation["dom_elements"]), self.cfg.max_observation_chars
        )

    def execute(self, solution: str, example: Example) -> Outcome:
        try:
            steps = parse_program(solution)
        except ActionError as err:
            return Outcome(reward=0, error=f"{PARSE_ERROR}{err}")
        if len(steps) > self.cfg.max_steps:
            return Outcome(reward=0, error=f"the program has {len(steps)} actions, more than {self.cfg.max_steps}")
        typed = sum(len(step.text) * step.times for step in steps if step.verb == "type")
        if typed > self.cfg.max_typed_chars:
            return Outcome(
                reward=0, error=f"the program types {typed} characters, more than {self.cfg.max_typed_chars}"
            )
        try:
            return self._with_browser(lambda: self._episode(steps, example))
        except BROWSER_LOST as err:
            return Outcome(reward=0, error=f"{BROWSER_CRASHED}: {type(err).__name__}")

    def close(self) -> None:
        self._close_browser()
        sweep_orphans(DIRECTORY_PREFIX)  # a killed sibling's browser, if no browser started since

    def __del__(self) -> None:
        if hasattr(self, "browser"):
            self.close()

    def _with_browser(self, work):
        """`work()`; if the browser dies under it, a fresh browser and `work()` once more."""
        try:
            return work()
        except BROWSER_LOST:
            self.events["crashes"] += 1
            self._close_browser()  # the next reset starts a new one
        self.events["restarts"] += 1
        try:
            return work()
        except BROWSER_LOST:
            self.events["crashes"] += 1
            self._close_browser()
            raise

    def _episode(self, steps: list[Step], example: Example) -> Outcome:
        observation = self._reset(example)
        deadline = time.monotonic() + self.cfg.episode_timeout_s
        for step in steps:
            try:
                for _ in range(step.times):
                    if time.monotonic() > deadline:
                        return Outcome(reward=0, error=f"the episode ran past {self.cfg.episode_timeout_s}s")
                    observation, done, raw = self._act(step, observation)
                    if done:
                        break
            except ActionError as err:
                return Outcome(reward=0, error=str(err))
            if done:  # steps left over are not run: the episode, and the page, are gone
                return Outcome(reward=int(raw > 0), output=f"{raw:g}")
        return Outcome(reward=0, output="0", error=NOT_FINISHED)

    def _act(self, step: Step, observation: dict) -> tuple[dict, bool, float]:
        browser = self.browser
        if step.verb == "press":
            return browser.step(ActionTypes.PRESS_KEY, key=browser.key_index(step.text))
        element, observation = self._find(step, observation)
        if step.verb == "click":
            return browser.step(ActionTypes.CLICK_ELEMENT, ref=element.ref)
        if step.verb == "type":
            return browser.step(ActionTypes.FOCUS_ELEMENT_AND_TYPE_TEXT, ref=element.ref, text=step.text)
        if step.verb == "mouse_click":
            centre = np.array([element.left + element.width / 2, element.top + element.height / 2], dtype=np.float32)
            return browser.step(ActionTypes.CLICK_COORDS, coords=centre)
        # select: a <select>'s options are not on miniwob's page list, so WebDriver picks by text.
        if not element.tag.startswith("select"):
            raise ActionError(f"line {step.line}: {NOT_A_SELECT}, and [{element.ref}] is {element.tag}")
        menu = Select(browser.driver.find_element(By.CSS_SELECTOR, f'[data-wob_ref="{element.ref}"]'))
        try:
            menu.select_by_visible_text(step.text)
        except NoSuchElementException:
            raise ActionError(f"line {step.line}: [{element.ref}] {NO_OPTION} '{step.text}'") from None
        return browser.step(ActionTypes.NONE)

    def _find(self, step: Step, observation: dict) -> tuple[Element, dict]:
        """The step's element on the live page, waiting up to settle_s for it to appear."""
        deadline = time.monotonic() + self.cfg.settle_s
        while True:
            elements = page_elements(observation["dom_elements"])
            found = [e for e in elements if matches(step.target, e)] or [
                e for e in elements if matches(step.target, e, exact_case=False)
            ]
            if len(found) >= step.target.nth:
                return found[step.target.nth - 1], observation
            if time.monotonic() > deadline:
                raise ActionError(f"line {step.line}: {NO_ELEMENT} {step.target}")
            time.sleep(self.cfg.poll_s)
            observation, done, _ = self.browser.step(ActionTypes.NONE)
            if done:
                raise ActionError(f"line {step.line}: the task ended before {step.target} appeared")

    def _reset(self, example: Example) -> dict:
        task, seed = example.meta.get("task"), example.meta.get("seed")
        if not isinstance(task, str) or not isinstance(seed, int):
            raise UserError(
                f"web input '{example.id}' needs a task name and an integer seed, got task={task!r} seed={seed!r}"
            )
        if f"miniwob/{task}-v1" not in gymnasium.registry:
            raise UserError(f"web input '{example.id}': miniwob has no task '{task}'")
        if self.browser is None or self.browser.task != task:
            self._close_browser()
            self.events["starts"] += 1
            self.browser = Browser(
                task,
                self.cfg.chrome_binary,
                self.cfg.chromedriver,
                self.cfg.chrome_flags,
                task in self.cfg.reload_tasks,
            )
        return self.browser.reset(seed)

    def _close_browser(self) -> None:
        if self.browser is not None:
            self.browser.close()
            self.browser = None
