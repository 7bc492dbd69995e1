"""The layering that docs/architecture.md states, checked on the source: no module imports a private name of
another, and no module imports one from a higher layer."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "atmanrl"
DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(imported atmanrl module, names) for every `from . import` / `from .x import` in a file, nested ones too
    (imports inside functions are dependencies all the same)."""
    out = []
    package = path.parent.relative_to(SRC.parent).parts  # ("atmanrl",) or ("atmanrl", "recipes")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {  # `if TYPE_CHECKING:` imports name a type for annotations; nothing runs them
        id(n)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and getattr(block.test, "id", None) == "TYPE_CHECKING"
        for n in ast.walk(block)
    }
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or id(node) in typing_only:
            continue
        if node.level:
            base = list(package[: len(package) - node.level + 1])
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
        elif node.module and node.module.startswith("atmanrl"):
            module = node.module
        else:
            continue
        out.append((module, [a.name for a in node.names]))
    return out


def _layers() -> dict[str, int]:
    """module file -> its layer's rank, from the table in docs/architecture.md (rows in layer order)."""
    ranks: dict[str, int] = {}
    order: list[str] = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = re.match(r"\| (\w[\w ]*) \| (.+?) \| .+ \|$", line)
        if not m or m.group(1) == "layer":
            continue
        if m.group(1) not in order:
            order.append(m.group(1))
        for name in re.findall(r"`([\w/]+)\.py`|`(recipes)/`", m.group(2)):
            ranks[next(n for n in name if n)] = order.index(m.group(1))
    return ranks


def test_no_module_imports_a_private_name_of_another():
    bad = [
        f"{path.relative_to(SRC)}: {module}.{name}"
        for path in SRC.rglob("*.py")
        for module, names in _imports(path)
        for name in names
        if name.startswith("_")
    ]
    assert not bad, bad


def test_no_module_imports_from_a_higher_layer():
    ranks = _layers()
    modules = {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"}
    assert modules <= set(ranks), f"docs/architecture.md does not place {sorted(modules - set(ranks))}"
    bad = []
    for path in SRC.glob("*.py"):
        if path.stem == "__init__":
            continue
        for module, _ in _imports(path):
            target = module.split(".")[1] if "." in module else None
            if target in ranks and ranks[target] > ranks[path.stem]:
                bad.append(f"{path.stem} (layer {ranks[path.stem]}) imports {target} (layer {ranks[target]})")
    assert not bad, bad
