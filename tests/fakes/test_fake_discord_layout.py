"""The fake Discord package's seams: its public API, and the cross-seam declarations matching the mixins."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import tests.fakes.discord as fake_discord
from tests.fakes.discord import FakeDiscord
from tests.fakes.discord._state import FakeState

PACKAGE = Path(fake_discord.__file__).parent


def _signature(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    kind = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
    decorators = " ".join(f"@{ast.unparse(d)}" for d in node.decorator_list)
    returns = ast.unparse(node.returns) if node.returns else ""
    return f"{decorators} {kind} {node.name}({ast.unparse(node.args)}) -> {returns}"


def _declared_cross_seam() -> dict[str, str]:
    """The methods FakeState declares under TYPE_CHECKING (what one seam calls on another)."""
    tree = ast.parse((PACKAGE / "_state.py").read_text())
    state = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "FakeState")
    block = next(n for n in state.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING")
    return {
        n.name: _signature(n) for n in block.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
    }


def _implemented() -> dict[str, list[str]]:
    """Every method of the mixins and of FakeDiscord itself, by name."""
    found: dict[str, list[str]] = {}
    for path in sorted(PACKAGE.glob("_*.py")):
        for cls in ast.parse(path.read_text()).body:
            if isinstance(cls, ast.ClassDef) and (cls.name.endswith("Mixin") or cls.name == "FakeDiscord"):
                for n in cls.body:
                    if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef):
                        found.setdefault(n.name, []).append(_signature(n))
    return found


def test_public_api_is_reexported() -> None:
    for name in (
        "FakeDiscord",
        "FakeInteraction",
        "Intent",
        "Perm",
        "RecordedCall",
        "patched_discord",
        "shard_of",
    ):
        assert name in fake_discord.__all__
        assert getattr(fake_discord, name) is not None
    assert set(fake_discord.__all__) <= set(dir(fake_discord))


def test_cross_seam_declarations_match_exactly_one_implementation() -> None:
    declared = _declared_cross_seam()
    implemented = _implemented()
    assert declared, "FakeState declares no cross-seam methods"
    for name, signature in declared.items():
        assert implemented.get(name) == [signature], name


def test_fake_discord_is_one_class_of_mixins_sharing_one_state() -> None:
    mixins = [c for c in FakeDiscord.__mro__[1:] if c.__name__.endswith("Mixin")]
    assert len(mixins) == 9  # _entitlements.py (Premium Apps) is the ninth seam
    assert all(issubclass(m, FakeState) for m in mixins)
    # No seam shadows another: each method (but __init__, which FakeDiscord extends) has one home.
    owners: dict[str, list[str]] = {}
    for cls in (FakeDiscord, *mixins, FakeState):
        for name, member in vars(cls).items():
            if name == "__init__":
                continue
            if inspect.isfunction(member) or isinstance(member, property | staticmethod):
                owners.setdefault(name, []).append(cls.__name__)
    assert {n: o for n, o in owners.items() if len(o) > 1} == {}
