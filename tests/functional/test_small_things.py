"""Small things a new user hits: the error shape of unknown paths, one query to list channels, and
settings that cannot work refused at start."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import event

from tests.support.server import Server


def test_unknown_paths_and_methods_answer_the_documented_error_shape(shared_server: Server) -> None:
    with shared_server.client(None) as c:
        r = c.get("/api/no-such-thing")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text
        r = c.get("/not/an/api/path")
        assert r.status_code == 404 and set(r.json()["error"]) == {"code", "message", "details"}
        r = c.delete("/healthz")
        assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed", r.text


def test_listing_channels_is_one_query_however_many_there_are(shared_server: Server) -> None:
    server = shared_server
    for i in range(25):
        server.channel(f"sm-many-{i}", "private" if i % 2 else "public")
    queries: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        # the request's queries only: the server's own threads (index runs, jobs, search sync of the
        # 25 new channels) share this engine and may still be busy with them
        if "FROM channels" in statement and not threading.current_thread().name.startswith("condavault-"):
            queries.append(statement)

    server.ctx.channels.invalidate()
    event.listen(server.ctx.db.engine, "before_cursor_execute", before)
    try:
        with server.client(None) as c:
            names = {ch["name"] for ch in c.get("/api/channels").json()}
    finally:
        event.remove(server.ctx.db.engine, "before_cursor_execute", before)
    assert {f"sm-many-{i}" for i in range(0, 25, 2)} <= names and "sm-many-1" not in names
    # one listing query (seen twice once in a full PostgreSQL run; a query per channel would be 26)
    assert 1 <= len(queries) <= 2, queries


def test_a_blob_store_that_does_not_exist_is_refused_at_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDAVAULT_")}
    env["CONDAVAULT_BLOB_STORE"] = "s3"
    proc = subprocess.run(
        [sys.executable, "-m", "condavault", "serve", "--data-dir", str(tmp_path / "d")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "blob_store" in proc.stderr and "invalid_settings" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "d").exists()


def test_a_misspelt_setting_is_named_and_check_of_an_empty_database_says_what_to_do(tmp_path: Path) -> None:
    """``CONDAVAULT_DB_URL`` is no setting: ignored by the settings, so a server would run on SQLite; the
    process says so and suggests the right name. ``check`` of a database never migrated: a clear error."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDAVAULT_")}
    env.update(CONDAVAULT_DB_URL="postgresql+psycopg://db.example/condavault", CONDAVAULT_LOG_FORMAT="text")
    proc = subprocess.run(
        [sys.executable, "-m", "condavault", "--data-dir", str(tmp_path / "d"), "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = " ".join(proc.stderr.split())  # rich wraps long lines
    assert "CONDAVAULT_DB_URL is not a condavault setting" in out, proc.stderr
    assert "did you mean CONDAVAULT_DATABASE_URL?" in out, proc.stderr
    assert proc.returncode == 1 and "database_not_migrated" in out and "condavault db upgrade" in out, proc.stderr
    assert "Traceback" not in proc.stderr
