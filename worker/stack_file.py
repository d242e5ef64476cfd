"""`<data-dir>/stack.json`: what `breadcrumb dev` runs on — its database, journey config and API — so
commands typed in another shell (`breadcrumb report`) read the same store under the same policy as
the stack instead of the defaults. No keys are written to it."""

from __future__ import annotations

import json
import os
from pathlib import Path

NAME = "stack.json"


def write(data_dir: Path, database_url: str, journeys: Path, api_url: str) -> Path:
    path = data_dir / NAME
    path.write_text(json.dumps({"database_url": database_url, "journeys": str(journeys), "api": api_url}, indent=2))
    os.chmod(path, 0o600)  # a PostgreSQL URL may carry a password
    return path


def read(data_dir: str | Path) -> tuple[Path, dict] | None:
    """(path, settings) of the stack last started on `data_dir`, None when there is none (or it is unreadable)."""
    path = Path(data_dir) / NAME
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return (path, found) if isinstance(found, dict) else None
