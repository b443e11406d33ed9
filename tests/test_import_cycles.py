"""No import cycles among the package's modules, counting the imports inside functions and under
`if TYPE_CHECKING:`, which import-linter's acyclic contract does not see (.importlinter). The
module graph is read from the source: every import statement of every module."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Where each part of the package lives: actors/ and envs/ are top-level folders, linked into the package.
ROOTS = {
    "envisions_ray": REPO / "envisions_ray",
    "envisions_ray.actors": REPO / "actors",
    "envisions_ray.envs": REPO / "envs",
}


def module_files() -> dict[str, Path]:
    """Every module of the package by its dotted name (a package by its __init__.py)."""
    files = {}
    for prefix, root in ROOTS.items():
        for path in root.glob("*.py"):  # flat folders; the links under envisions_ray/ are not followed
            files[prefix if path.stem == "__init__" else f"{prefix}.{path.stem}"] = path
    return files


def imported(module: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that `module` imports anywhere in its source; `from a import b` is the
    module a.b when there is one, else a."""
    package = module if path.stem == "__init__" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            found.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names)
    # Importing a.b.c runs a/__init__.py and a/b/__init__.py first: their imports are edges too.
    parents = {name.rsplit(".", depth)[0] for name in found for depth in range(1, name.count(".") + 1)}
    return {name for name in found | parents if name in known and name != module and not module.startswith(name + ".")}


def import_graph() -> dict[str, set[str]]:
    files = module_files()
    return {module: imported(module, path, set(files)) for module, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of the graph as the modules along it, the first repeated at the end; [] if none."""
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> list[str]:
        if module in path:
            return path[path.index(module) :] + [module]
        if module in done:
            return []
        path.append(module)
        for target in sorted(graph.get(module, ())):
            cycle = visit(target)
            if cycle:
                return cycle
        path.pop()
        done.add(module)
        return []

    for module in sorted(graph):
        cycle = visit(module)
        if cycle:
            return cycle
    return []


def test_the_graph_holds_every_kind_of_import():
    graph = import_graph()
    assert {"envisions_ray.driver", "envisions_ray.actors.executor", "envisions_ray.envs.math_sandbox"} <= set(graph)
    assert "envisions_ray.config" in graph["envisions_ray.methods"]  # under TYPE_CHECKING
    assert "envisions_ray.actors.hf_backend" in graph["envisions_ray.actors.generator"]  # inside a function


def test_a_cycle_is_found_and_named():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert not cycle, "import cycle: " + " -> ".join(cycle)
