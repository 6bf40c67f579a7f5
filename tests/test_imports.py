"""The modules of bot/, cogs/ and storage/ import each other without a cycle, and storage never
imports discord. Built from the source (top-level imports, TYPE_CHECKING blocks excluded)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("bot", "cogs", "storage")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imported(path: Path, name: str, known: set[str], *, typing: bool = False) -> set[str]:
    """The known modules `path` imports at its top level (inside functions they are deferred);
    with `typing`, also those imported only for the type checker."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    pending: list[ast.stmt] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.If):
            if typing or not _type_checking(node):
                pending.extend(node.body + node.orelse)
            else:
                pending.extend(node.orelse)
        elif isinstance(node, ast.Try):
            pending.extend(node.body + node.orelse + node.finalbody)
            for handler in node.handlers:
                pending.extend(handler.body)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod.
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in known else base)
    return {m for m in found if m in known and m != name}


def graph(*, typing: bool = False) -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imported(path, name, known, typing=typing) for name, path in mods.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)) is not None:
            return cycle
    return None


def test_the_graph_is_built_from_real_imports() -> None:
    edges = graph()
    assert "bot.engine._facade" in edges["bot.client"] or "bot.engine" in edges["bot.client"]
    assert "bot.engine._common" in edges["bot.engine._poller"]
    assert "storage.lifecycle" in edges["storage.jobs"]


def test_there_is_no_import_cycle_among_bot_cogs_and_storage() -> None:
    assert find_cycle(graph()) is None


def test_there_is_no_cycle_for_the_type_checker_either() -> None:
    """Imports under TYPE_CHECKING count for mypy: bot/ui.py names the bot by a Protocol instead."""
    assert find_cycle(graph(typing=True)) is None


def test_nothing_imports_the_client_but_the_entry_point() -> None:
    """bot/client.py -> bot/engine -> bot/ui.py -> bot/client.py was a cycle; the client is on top."""
    importers = {name for name, deps in graph().items() if "bot.client" in deps}
    assert importers <= {"bot.__main__", "bot.check"}
    assert "bot.client" not in graph(typing=True)["bot.ui"]


def test_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_storage_never_imports_discord() -> None:
    for name, path in modules().items():
        if name.startswith("storage"):
            tree = ast.parse(path.read_text())
            names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
            names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
            assert not any(n == "discord" or n.startswith("discord.") for n in names), name
