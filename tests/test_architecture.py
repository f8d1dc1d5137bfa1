"""The layers of docs/architecture.md, checked on the source: arrows run one way (app -> ui -> lab/train/io/render ->
diffusion, flows, data -> nets, schedules), no import cycle, the core never imports gradio or the CLI, the UI never
imports the CLI, and no tab imports another. Imports are read with `ast`, function-level ones included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "genapp"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str) -> set[str]:
    """Every module `name` imports (absolute names; `from genapp import data` counts as genapp.data)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names
                         if f"{node.module}.{alias.name}" in MODULES)
    return found


def genapp_imports(name: str) -> set[str]:
    """The genapp modules `name` imports, a package's __init__ excluded when a submodule of it is named."""
    inside = {m for m in imports_of(name) if m in MODULES and m != name}
    return {m for m in inside if not any(other.startswith(m + ".") for other in inside)}


# The one sanctioned upward call: the Hub mixin's `from_pretrained` on the lecture's classes hands over to the one
# strict loader in genapp.io, importing it when called (a user's `DDPM.from_pretrained(...)` must not skip it).
LAZY_UPWARD = {("genapp.diffusion", "genapp.io.hub"), ("genapp.flows", "genapp.io.hub")}
GRAPH = {name: {m for m in genapp_imports(name) if (name, m) not in LAZY_UPWARD} for name in MODULES}
CORE = [m for m in MODULES if not m.startswith(("genapp.ui", "genapp.cli", "genapp.__main__"))]


def test_the_import_graph_has_no_cycle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join([*path[path.index(nxt):], nxt]))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])


@pytest.mark.parametrize("name", CORE)
def test_the_core_imports_neither_gradio_nor_the_cli_nor_the_ui(name):
    bad = {m for m in imports_of(name) if m.split(".")[0] == "gradio" or m.startswith(("genapp.cli", "genapp.ui"))}
    assert bad == set(), f"{name} imports {sorted(bad)}"


def test_the_ui_never_imports_the_cli_and_no_tab_imports_another():
    for name in MODULES:
        if not name.startswith("genapp.ui"):
            continue
        assert not any(m.startswith(("genapp.cli", "genapp.__main__")) for m in imports_of(name)), name
        if name.startswith("genapp.ui.tabs."):
            tabs = {m for m in GRAPH[name] if m.startswith("genapp.ui.tabs.")}
            assert tabs == set(), f"{name} imports the tab(s) {sorted(tabs)}"


def test_the_lecture_stays_below_everything_else():
    """schedules, nets, diffusion and flows import only each other and the data's count check."""
    lecture = {"genapp.schedules", "genapp.nets", "genapp.diffusion", "genapp.flows"}
    for name in lecture:
        assert GRAPH[name] <= lecture | {"genapp.data", "genapp.data.toys"}, (name, GRAPH[name])
