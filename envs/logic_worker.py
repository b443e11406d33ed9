"""The logic engine's worker process: answers Logic-LLM programs with clingo, one JSON line each.

Started by envs/logic_engine.py as `python -m envisions_ray.envs.logic_worker MEMORY_MB`:

    stdin:  {"program": str, "timeout_s": float}      one JSON object per line
    stdout: {"answer": str, "error": str}             answer is True, False, Unknown or ""

clingo's interrupt stops solving but not grounding, so a theory whose grounding blows up is
stopped by the parent killing this whole process. The address-space limit makes a theory that
eats memory fail fast with an error instead of pushing the machine into swap.
"""

import json
import resource
import sys

from envisions_ray.envs.line_server import READY
from envisions_ray.envs.logic_program import LogicError, answer, parse
from envisions_ray.types import PARSE_ERROR

MB = 1024 * 1024
MAX_ERROR_CHARS = 500  # a reply stays one short line whatever the model wrote
OUT_OF_MEMORY = "the engine ran out of memory"


def write_line(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main() -> None:
    limit = int(sys.argv[1]) * MB
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    write_line(READY)
    for line in sys.stdin:
        try:
            request = json.loads(line)
            try:
                parse(request["program"])
            except LogicError as err:  # not a program at all, as against one the engine refused
                write_line({"answer": "", "error": f"{PARSE_ERROR}{err}"[:MAX_ERROR_CHARS]})
                continue
            try:
                write_line({"answer": answer(request["program"], request["timeout_s"]), "error": ""})
            except LogicError as err:
                write_line({"answer": "", "error": str(err)[:MAX_ERROR_CHARS]})
        except MemoryError:  # the engine replaces this worker: its heap may be left at the limit
            write_line({"answer": "", "error": OUT_OF_MEMORY})


if __name__ == "__main__":
    main()
