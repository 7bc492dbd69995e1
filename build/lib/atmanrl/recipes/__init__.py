"""Training recipes that ship with atmanrl, the way open-r1 ships its own: list them, copy one out, edit it.

    atmanrl recipes                                            # list
    atmanrl recipes copy smollm2-135m/arith_atmanrl.yaml my.yaml
    atmanrl train my.yaml

A recipe is named by its path under this folder ("smollm2-135m/arith_atmanrl.yaml"); a path to any YAML file
works wherever a name does.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import UserError

RECIPES = Path(__file__).resolve().parent


def list_recipes() -> list[str]:
    """Every shipped recipe's name, e.g. "smollm2-135m/arith_atmanrl.yaml" (accelerate configs included)."""
    return sorted(str(p.relative_to(RECIPES)) for p in RECIPES.glob("*/*.yaml"))


def describe(name: str) -> str:
    """The recipe's first comment line: what it trains, on what hardware."""
    for line in recipe_path(name).read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
    return ""


def recipe_path(name: str | Path) -> Path:
    """`name` as a path if that file exists, else the shipped recipe of that name."""
    p = Path(name)
    if p.is_file():
        return p
    for candidate in (RECIPES / p, RECIPES / Path(*p.parts[1:]) if p.parts[:1] == ("recipes",) else None):
        if candidate is not None and candidate.is_file():
            return candidate
    raise UserError(
        f"no recipe {str(name)!r}: give a YAML path or one of the shipped recipes (`atmanrl recipes`), "
        "e.g. smollm2-135m/arith_atmanrl.yaml"
    )


def copy_recipe(name: str, dest: str | Path | None = None, force: bool = False) -> Path:
    """Copy a shipped recipe to `dest` (default: its file name in the current folder) to edit it."""
    src = recipe_path(name)
    out = Path(dest) if dest is not None else Path(src.name)
    if out.is_dir():
        out = out / src.name
    if out.exists() and not force:
        raise UserError(f"{out} exists: pass another destination, or --force to overwrite it")
    shutil.copyfile(src, out)
    return out
