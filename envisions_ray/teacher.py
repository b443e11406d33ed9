"""The distillation baseline's teacher: one answer per input, from a JSONL of teacher outputs
(offline) or from an OpenAI-compatible chat endpoint. What the environment accepts is kept."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import requests

from envisions_ray.config import DistillConfig
from envisions_ray.errors import UserError

# A chat model usually wraps code in a Markdown fence; the environment wants what is inside.
FENCED = re.compile(r"```[^\n]*\n(.*?)(?:```|$)", re.DOTALL)


def unfenced(reply: str) -> str:
    found = FENCED.search(reply)
    return found.group(1) if found else reply


class Teacher:
    def __init__(self, cfg: DistillConfig):
        self.cfg = cfg
        self.answers = _read_teacher_file(Path(cfg.teacher_file)) if cfg.teacher_file else None

    def answer(self, example_id: str, prompt: str) -> str:
        """The teacher's solution; an input the teacher file lacks gets an empty one (reward 0)."""
        if self.answers is not None:
            return self.answers.get(example_id, "")
        return unfenced(self._ask_endpoint(prompt))

    def _ask_endpoint(self, prompt: str) -> str:
        url = self.cfg.endpoint.rstrip("/") + "/chat/completions"
        key = os.environ.get(self.cfg.api_key_env, "")
        body = {
            "model": self.cfg.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": 0.0,
            "max_tokens": self.cfg.max_tokens,
        }
        try:
            response = requests.post(
                url, json=body, headers={"Authorization": f"Bearer {key}"} if key else {}, timeout=self.cfg.timeout_s
            )
            response.raise_for_status()
            return response.json()["choices"][0]["message"]["content"] or ""
        except requests.RequestException as err:
            raise UserError(f"distill: teacher endpoint {url} failed: {str(err).splitlines()[0]}") from None
        except (KeyError, IndexError, TypeError, ValueError):
            raise UserError(f"distill: teacher endpoint {url} did not answer in the chat-completions format") from None


def _read_teacher_file(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise UserError(f"distill: teacher file not found: {path}")
    answers = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            answers[str(record["id"])] = str(record["solution"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"{path}:{number}: a teacher record needs 'id' and 'solution'") from None
    return answers
