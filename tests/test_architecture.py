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
        for name in re.findall(r"`([\w/]+)\.py`|`(\w+)/`", m.group(2)):
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


def test_no_import_circles():
    """No module reaches itself through atmanrl imports (function-level imports count: they are dependencies)."""
    graph: dict[str, set[str]] = {}
    for p in SRC.rglob("*.py"):
        name = _unit(p)
        if name != "__init__":
            graph.setdefault(name, set()).update(
                {m.split(".")[1] for m, _ in _imports(p) if m.count(".") >= 1}
            )
    graph = {k: v - {k} for k, v in graph.items()}
    circles = []
    for start in graph:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for nxt in graph.get(node, ()):
                if nxt == start:
                    circles.append(" -> ".join([*path, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*path, nxt]))
    assert not circles, sorted(set(circles))


def test_no_module_is_over_600_lines():
    long = {p.name: n for p in SRC.rglob("*.py") if (n := len(p.read_text().splitlines())) > 600}
    assert not long, long


def _unit(path: Path) -> str:
    """The architecture's unit a file belongs to: its module, or its subpackage (saliency/, recipes/)."""
    rel = path.relative_to(SRC)
    return rel.parts[0] if len(rel.parts) > 1 else path.stem


def test_no_module_imports_from_a_higher_layer():
    ranks = _layers()
    units = {_unit(p) for p in SRC.rglob("*.py")} - {"__init__"}
    assert units <= set(ranks), f"docs/architecture.md does not place {sorted(units - set(ranks))}"
    bad = []
    for path in SRC.rglob("*.py"):
        unit = _unit(path)
        if unit == "__init__":
            continue
        for module, _ in _imports(path):
            target = module.split(".")[1] if "." in module else None
            if target in ranks and ranks[target] > ranks[unit]:
                bad.append(f"{unit} (layer {ranks[unit]}) imports {target} (layer {ranks[target]})")
    assert not bad, bad
