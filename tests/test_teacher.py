"""The distillation teacher: a JSONL file offline, or an OpenAI-compatible endpoint (a local stub here)."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from envisions_ray.config import DistillConfig
from envisions_ray.errors import UserError
from envisions_ray.teacher import Teacher, unfenced


def test_teacher_file_answers_by_id_and_missing_inputs_get_nothing(tmp_path):
    path = tmp_path / "teacher.jsonl"
    path.write_text(json.dumps({"id": "a1", "solution": "def solution():\n    return 3"}) + "\n\n")
    teacher = Teacher(DistillConfig(teacher_file=str(path)))
    assert teacher.answer("a1", "any prompt") == "def solution():\n    return 3"
    assert teacher.answer("a2", "any prompt") == ""


def test_a_bad_teacher_file_names_file_and_line(tmp_path):
    path = tmp_path / "teacher.jsonl"
    path.write_text(json.dumps({"id": "a1", "solution": "x"}) + "\n" + json.dumps({"id": "a2"}) + "\n")
    with pytest.raises(UserError, match=r"teacher.jsonl:2: a teacher record needs 'id' and 'solution'"):
        Teacher(DistillConfig(teacher_file=str(path)))
    with pytest.raises(UserError, match="teacher file not found"):
        Teacher(DistillConfig(teacher_file=str(tmp_path / "missing.jsonl")))


def test_code_fences_are_removed():
    assert unfenced("Here:\n```python\ndef solution():\n    return 1\n```\nDone.") == "def solution():\n    return 1\n"
    assert unfenced("def solution():\n    return 1") == "def solution():\n    return 1"


class ChatStub(BaseHTTPRequestHandler):
    """Answers /v1/chat/completions as OpenAI's API does, and remembers what it was sent."""

    requests: list = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ChatStub.requests.append((self.path, self.headers.get("Authorization"), body))
        if self.path != "/v1/chat/completions":
            self.send_error(404)
            return
        reply = {
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "```python\ndef solution():\n    return 7\n```"},
                }
            ]
        }
        payload = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    server = HTTPServer(("127.0.0.1", 0), ChatStub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    ChatStub.requests.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_endpoint_is_asked_once_in_the_chat_format(endpoint, monkeypatch):
    monkeypatch.setenv("TEACHER_KEY", "sk-test")
    teacher = Teacher(DistillConfig(endpoint=f"{endpoint}/v1", model="big-teacher", api_key_env="TEACHER_KEY"))
    assert teacher.answer("a1", "Question: 3 + 4?\n") == "def solution():\n    return 7\n"
    ((path, auth, body),) = ChatStub.requests
    assert path == "/v1/chat/completions" and auth == "Bearer sk-test"
    assert body["model"] == "big-teacher" and body["messages"] == [{"role": "user", "content": "Question: 3 + 4?\n"}]
    assert body["temperature"] == 0.0


def test_a_failing_endpoint_is_one_line(endpoint):
    teacher = Teacher(DistillConfig(endpoint=f"{endpoint}/wrong", model="m"))
    with pytest.raises(UserError, match=r"teacher endpoint .*/wrong/chat/completions failed: 404"):
        teacher.answer("a1", "prompt")
