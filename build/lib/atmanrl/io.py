"""Reading and writing our files: JSONL in, atomic JSON/JSONL out."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .errors import UserError


def check_writable(path: str | Path) -> Path:
    """Fail early, before hours of work, when an output file cannot be written."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot create folder {parent} for {path}: {e.strerror}; choose another output path"
        ) from e
    if not os.access(parent, os.W_OK):
        raise UserError(f"folder {parent} is not writable: choose another output path for {path.name}")
    return path


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write via a temporary file and rename, so a killed run never leaves a half-written file."""
    path = check_writable(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; outputs get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_jsonl(path: str | Path, errors: list[str] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object). Bad lines go to `errors` as one-line messages instead of raising."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"input file {path} does not exist")
    errors = errors if errors is not None else []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                errors.append(f"{path}:{n}: not UTF-8 text; re-encode the file as UTF-8")
                continue
            except json.JSONDecodeError as e:
                errors.append(f"{path}:{n}: malformed JSON ({e.msg}); fix or remove the line")
                continue
            if not isinstance(obj, dict):
                errors.append(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
                continue
            yield n, obj
