"""Training recipes: find one by path or by its name under the recipes folder."""

from __future__ import annotations

from pathlib import Path

from .errors import UserError

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def recipe_path(name: str | Path) -> Path:
    """`name` as a path if it exists, else `recipes/<name>` (e.g. "smollm2-135m/arith_outcome.yaml")."""
    p = Path(name)
    if p.is_file():
        return p
    if (RECIPES / p).is_file():
        return RECIPES / p
    raise UserError(f"no recipe {str(name)!r}: give a YAML path or a name under {RECIPES}")
