"""Where the CLI's token comes from, and the error of a refused call (standard library only: the
``upload`` fast path, ``cli.uploading``, imports this without httpx or typer)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DEFAULT_URL = "http://127.0.0.1:8080"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or {}

    def __str__(self) -> str:
        return f"{self.message} [{self.code}, HTTP {self.status}]"


def resolve_token(token: str | None, data_dir: Path | None, url: str = DEFAULT_URL) -> tuple[str | None, str]:
    """The token the CLI sends, and where it came from, first match wins:

    1. ``--token``;
    2. the ``CONDAVAULT_TOKEN`` environment variable;
    3. the token ``condavault login`` saved for this server URL;
    4. a server data folder's ``admin-token`` (``--data-dir``, ``CONDAVAULT_DATA_DIR``, else
       ``./condavault-data`` when it exists): the first-start convenience on the server's own machine.

    A login to one server is therefore never overridden by a data folder that happens to be nearby.
    """
    if token:
        return token, "--token"
    if os.environ.get("CONDAVAULT_TOKEN"):
        return os.environ["CONDAVAULT_TOKEN"], "CONDAVAULT_TOKEN"
    saved = stored_token(url)
    if saved:
        return saved, f"condavault login ({credentials_path()})"
    d = data_dir or (Path(os.environ["CONDAVAULT_DATA_DIR"]) if os.environ.get("CONDAVAULT_DATA_DIR") else None)
    d = d or Path("condavault-data")
    if (d / "admin-token").is_file():
        return (d / "admin-token").read_text().strip(), f"admin token of the data folder {d.resolve()}"
    return None, "none (anonymous)"


def credentials_path() -> Path:
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "condavault" / "credentials.json"


def stored_token(url: str) -> str | None:
    try:
        data = json.loads(credentials_path().read_text())
    except (OSError, ValueError):
        return None
    entry = data.get(url.rstrip("/")) if isinstance(data, dict) else None
    return entry.get("token") if isinstance(entry, dict) else None


def store_token(url: str, username: str, token: str) -> Path:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data[url.rstrip("/")] = {"username": username, "token": token}
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, path)
    return path
