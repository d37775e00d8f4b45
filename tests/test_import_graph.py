"""The import graph of drq/, replay/ and train.py, read from the source with ``ast`` (every import statement, those
inside functions too; ``if TYPE_CHECKING:`` blocks are left out, they never run):

- no agent module imports its sibling (``drq.agents.drqv2`` <-> ``drq.agents.sac``); what both need is in
  ``drq.agents.core``, which imports no agent;
- nothing on the training path (everything ``train.py`` reaches) imports the analysis wing (``drq.analysis``, by
  module name: health PNG report, sweep report, wandb dashboard).

``python tests/test_import_graph.py`` prints the graph (one line per module: what it imports from drq/ and replay/).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AGENT_MODULES = ("drq.agents.drqv2", "drq.agents.sac")
ANALYSIS = "drq.analysis"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _sources() -> dict[str, Path]:
    files = [*ROOT.glob("drq/**/*.py"), *ROOT.glob("replay/**/*.py"), ROOT / "train.py"]
    return {_module_name(p): p for p in files}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> set[str]:
    """Modules of ``known`` (or their packages) that ``tree`` imports at run time."""
    found: set[str] = set()

    def add(name: str) -> None:
        while name and name not in known:  # 'drq.agents.make_agent' -> 'drq.agents'
            name = name.rpartition(".")[0]
        if name:
            found.add(name)

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    add(alias.name)
            elif isinstance(child, ast.ImportFrom):
                if child.level:  # relative: from the module's package, up level - 1 more
                    base = module if is_package else module.rpartition(".")[0]
                    for _ in range(child.level - 1):
                        base = base.rpartition(".")[0]
                    target = f"{base}.{child.module}" if child.module else base
                else:
                    target = child.module or ""
                for alias in child.names:
                    add(f"{target}.{alias.name}")  # 'from drq import snapshot' imports the module drq.run.snapshot
            visit(child)

    visit(tree)
    found.discard(module)
    return found


def import_graph(extra_known: set[str] = frozenset()) -> dict[str, set[str]]:
    """``{module: modules it imports}`` over drq/, replay/ and train.py. ``extra_known``: module names that count
    as nodes even though no file here has them (``drq.analysis`` before it exists)."""
    sources = _sources()
    known = set(sources) | set(extra_known)
    return {name: _imported(ast.parse(path.read_text()), name, path.name == "__init__.py", known)
            for name, path in sources.items()}


def reachable(graph: dict[str, set[str]], roots: list[str]) -> set[str]:
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(graph.get(name, ()))
    return seen


def sibling_imports(graph: dict[str, set[str]]) -> list[str]:
    """``'a -> b'`` for every agent module (or the core) that imports an agent module other than itself."""
    bad = []
    for name in (*AGENT_MODULES, "drq.agents.core"):
        for other in sorted(graph.get(name, set()) & set(AGENT_MODULES)):
            bad.append(f"{name} -> {other}")
    return bad


def analysis_on_training_path(graph: dict[str, set[str]]) -> list[str]:
    """``'module -> drq.analysis...'`` for every module reachable from train.py that imports the analysis wing."""
    path = reachable(graph, ["train", "drq.run.trainer"])
    return sorted(f"{m} -> {t}" for m in path for t in graph.get(m, ())
                  if t == ANALYSIS or t.startswith(ANALYSIS + "."))


# ------------------------------------------------------------------------------------------------------------ tests
def test_the_walker_finds_imports_inside_functions_and_relative_ones():
    graph = import_graph()
    assert "drq.agents" in graph["drq.run.build"]  # `from drq.agents import make_agent` inside a function
    assert "drq.run.snapshot" in graph["drq.run.build"]  # `from drq.run import snapshot as snapshots`
    assert "replay.buffer" in graph["replay"]  # `from replay.buffer import ...` or relative
    path = reachable(graph, ["train", "drq.run.trainer"])
    assert {"drq.agents.drqv2", "drq.agents.sac", "drq.agents.core", "replay.buffer", "drq.envs.pixels"} <= path
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import drq.run.health\nimport drq.envs.pixels\n")
    assert _imported(tree, "x", False, {"drq.run.health", "drq.envs.pixels"}) == {"drq.envs.pixels"}


def test_no_agent_imports_its_sibling():
    graph = import_graph()
    assert sibling_imports(graph) == []
    assert {"drq.agents.core"} <= graph["drq.agents.drqv2"] and {"drq.agents.core"} <= graph["drq.agents.sac"]
    # the check itself fails on the layout this replaced (sac importing its helpers from drqv2)
    assert sibling_imports({**graph, "drq.agents.sac": {"drq.agents.drqv2"}}) == ["drq.agents.sac -> drq.agents.drqv2"]


def circles(graph: dict[str, set[str]], package: str) -> list[list[str]]:
    """Each import circle among ``package``'s modules, as ``[a, b, ..., a]`` (depth-first search, one per back edge)."""
    inside = {m: {t for t in graph[m] if t.startswith(package + ".")} for m in graph if m.startswith(package + ".")}
    found, done, path = [], set(), []

    def visit(m: str) -> None:
        path.append(m)
        for t in sorted(inside.get(m, ())):
            if t in path:
                found.append([*path[path.index(t):], t])
            elif t not in done:
                visit(t)
        path.pop()
        done.add(m)

    for m in sorted(inside):
        if m not in done:
            visit(m)
    return found


def test_the_run_parts_import_each_other_without_a_circle():
    """The trainer's parts (drq/run/: build, resume, metrics, state, the loop) pass a run-state object down instead
    of importing each other both ways."""
    graph = import_graph()
    assert circles(graph, "drq.run") == []
    assert {"drq.run.build", "drq.run.resume", "drq.run.metrics", "drq.run.state"} <= graph["drq.run.trainer"]
    # the check finds a circle when one is planted (resume reaching back into the loop)
    planted = {**graph, "drq.run.resume": graph["drq.run.resume"] | {"drq.run.trainer"}}
    assert ["drq.run.resume", "drq.run.trainer", "drq.run.resume"] in circles(planted, "drq.run")


def test_training_path_does_not_import_the_analysis_wing():
    graph = import_graph(extra_known={ANALYSIS, f"{ANALYSIS}.health", f"{ANALYSIS}.report", f"{ANALYSIS}.dashboard"})
    assert analysis_on_training_path(graph) == []
    # and the check fails when a training-path module imports it
    tainted = {**graph, "drq.run.sinks": graph["drq.run.sinks"] | {f"{ANALYSIS}.dashboard"}}
    assert analysis_on_training_path(tainted) == [f"drq.run.sinks -> {ANALYSIS}.dashboard"]


def cycles(graph: dict[str, set[str]], prefix: str = "drq") -> list[list[str]]:
    """Import circles among the modules under ``prefix``, each as the path that closes it (depth-first search)."""
    found, done, path = [], set(), []

    def visit(name: str) -> None:
        if name in path:
            found.append(path[path.index(name):] + [name])
        elif name not in done:
            path.append(name)
            for other in sorted(graph.get(name, ())):
                if other == prefix or other.startswith(prefix + "."):
                    visit(other)
            done.add(path.pop())

    for name in sorted(graph):
        visit(name)
    return found


def test_no_import_circle_and_the_config_imports_nothing_from_run():
    graph = import_graph()
    assert cycles(graph) == []
    assert [f"{m} -> {t}" for m in graph if m.startswith("drq.config") for t in graph[m] if "drq.run" in t] == []
    assert cycles({**graph, "drq.config.schema": graph["drq.config.schema"] | {"drq.config.errors"}}) != []


if __name__ == "__main__":
    graph = import_graph()
    for name in sorted(graph):
        print(f"{name:24s} -> {', '.join(sorted(graph[name])) or '-'}")
    sys.exit(1 if sibling_imports(graph) or analysis_on_training_path(graph) else 0)
