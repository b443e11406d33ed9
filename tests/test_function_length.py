"""No function in envisions_ray/ is longer than a screen: one that grows past it is doing two
things, and the second one wants a name of its own."""

import ast
import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "envisions_ray"
MAX_LINES = 70  # from the def line to the last line of the body


def modules() -> list[Path]:
    """Every module of the package; actors/ and envs/ are links to the repository's top level."""
    return sorted(
        Path(root) / name
        for root, _, names in os.walk(PACKAGE, followlinks=True)
        for name in names
        if name.endswith(".py")
    )


def function_lengths(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        (f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}", node.end_lineno - node.lineno + 1)
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    ]


def test_every_module_of_the_package_is_walked():
    walked = {path.relative_to(PACKAGE).as_posix() for path in modules()}
    assert {"driver.py", "actors/train_job.py", "envs/math_sandbox.py"} <= walked


def test_no_function_is_longer_than_a_screen():
    too_long = [(where, length) for path in modules() for where, length in function_lengths(path) if length > MAX_LINES]
    assert not too_long, f"longer than {MAX_LINES} lines: {too_long}"
