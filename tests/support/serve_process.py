"""``condavault serve`` as an operator starts it: a subprocess with production logging (INFO, JSON)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.server import create_pg_database, drop_pg_database, free_port


@dataclass
class ServeProcess:
    data_dir: Path
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    db_url: str | None
    pg_name: str | None = None
    token: str = ""
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, token: str | None = "admin", **kw: Any) -> httpx.Client:
        tok = self.token if token == "admin" else token
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {tok}"} if tok else {}, timeout=60, **kw
        )

    def logs(self) -> list[dict[str, Any]]:
        """The JSON log lines written so far (other lines are returned as ``{"raw": line}``)."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"raw": line})
        return out

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.pg_name:
            drop_pg_database(self.pg_name)


def _env(db_url: str | None, settings: dict[str, Any], python_path: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDAVAULT_")}
    env.update({"CONDAVAULT_LOG_FORMAT": "json", "CONDAVAULT_LOG_LEVEL": "INFO"})
    if db_url:
        env["CONDAVAULT_DATABASE_URL"] = db_url
    if python_path:  # another version of condavault (a rolling upgrade's old code)
        env["PYTHONPATH"] = python_path
    for key, value in settings.items():
        env[f"CONDAVAULT_{key.upper()}"] = json.dumps(value) if isinstance(value, list | bool) else str(value)
    return env


def start_serve(
    data_dir: Path,
    backend: str = "sqlite",
    *,
    db_url: str | None = None,
    port: int | None = None,
    args: tuple[str, ...] = (),
    name: str = "serve",
    python_path: str | None = None,
    ready_timeout: float = 60,
    **settings: Any,
) -> ServeProcess:
    """Start ``condavault serve`` on a free port (or ``port``) with ``settings`` as ``CONDAVAULT_*``
    variables. ``db_url``: share that database (another process's; not dropped by :meth:`stop`), else a
    new one of ``backend``. ``args``: more options (``--no-worker``)."""
    data_dir.parent.mkdir(parents=True, exist_ok=True)  # serve creates the data folder itself
    pg_name = None
    if db_url is None and backend != "sqlite":
        db_url, pg_name = create_pg_database()
    port = port or free_port()
    env = _env(db_url, settings, python_path)
    log_path = data_dir.parent / f"{data_dir.name}-{name}.log"
    log = open(log_path, "ab")  # noqa: SIM115 - the child writes it for its whole life
    proc = subprocess.Popen(
        [sys.executable, "-m", "condavault", "serve", "--data-dir", str(data_dir), "--port", str(port), *args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    handle = ServeProcess(data_dir, port, proc, log_path, db_url, pg_name, env=env)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            handle.stop()
            raise RuntimeError(f"condavault serve exited: {log_path.read_text()[-3000:]}")
        try:
            if httpx.get(f"{handle.url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    else:
        handle.stop()
        raise RuntimeError("condavault serve did not become ready")
    handle.token = (data_dir / "admin-token").read_text().strip()
    return handle


def start_worker(
    data_dir: Path, db_url: str | None, *, name: str = "worker", python_path: str | None = None, **settings: Any
) -> ServeProcess:
    """Start ``condavault worker`` on the data folder and database of a running server; returns once it
    runs jobs (its ``port`` is 0: it serves no HTTP)."""
    env = _env(db_url, settings, python_path)
    log_path = data_dir.parent / f"{data_dir.name}-{name}.log"
    log = open(log_path, "ab")  # noqa: SIM115 - the child writes it for its whole life
    start = log.tell()
    proc = subprocess.Popen(
        [sys.executable, "-m", "condavault", "worker", "--data-dir", str(data_dir)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    handle = ServeProcess(data_dir, 0, proc, log_path, db_url, None, env=env)
    deadline = time.monotonic() + 60
    while "condavault worker running" not in log_path.read_bytes()[start:].decode(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            handle.stop()
            raise RuntimeError(f"condavault worker did not start: {log_path.read_text()[-3000:]}")
        time.sleep(0.1)
    handle.token = (data_dir / "admin-token").read_text().strip()
    return handle
