"""Typed events: recorded in the transaction, run once after the commit (never after a rollback), and
the audit row of a change written exactly once even when ``run_write`` retries the transaction."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.exc import OperationalError

from condavault.audit.models import ChangeEvent
from condavault.channels.events import PackagesIngested
from condavault.events import Actor, AdminChange
from condavault.jobs.models import Job
from tests.support.server import Server

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)


@contextmanager
def lock_error_once(server: Server, statement_prefix: str) -> Iterator[list[str]]:
    """The first statement starting with ``statement_prefix`` fails as SQLite's "database is locked"
    (PostgreSQL's serialization failures take the same path): ``run_write`` retries the transaction."""
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith(statement_prefix) and not seen:
            seen.append(statement)
            raise OperationalError(statement, {}, Exception("database is locked"))

    event.listen(server.ctx.db.engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(server.ctx.db.engine, "before_cursor_execute", before)


def changes(server: Server, action: str) -> list[ChangeEvent]:
    with server.ctx.db.session() as s:
        return list(s.scalars(select(ChangeEvent).where(ChangeEvent.action == action)))


def test_a_retried_change_is_audited_once(server: Server) -> None:
    """``PUT patch-instructions`` whose transaction is retried: one audit row, with the right content."""
    server.channel("ev-patch")
    body = {"patch_instructions_version": 1, "packages": {}, "remove": ["x-1-0.tar.bz2"]}
    with lock_error_once(server, "UPDATE SUBDIR_STATES") as seen, server.client() as c:
        r = c.put("/api/channels/ev-patch/subdirs/noarch/patch-instructions", json=body)
        assert r.status_code == 200, r.text
    assert seen, "the transaction was not retried: the test proves nothing"
    (row,) = changes(server, "channel:patch")
    assert row.target == "ev-patch/noarch" and json.loads(row.after or "null") == body


def test_after_commit_work_never_runs_for_a_rolled_back_transaction(server: Server) -> None:
    ran: list[str] = []
    server.ctx.events.on_commit(AdminChange, lambda e: ran.append(e.action))
    change = AdminChange(Actor(username="t"), "test:rolled-back", "x")

    def fails(s: Any) -> None:
        server.ctx.events.record(s, change)
        raise RuntimeError("the change fails after recording its event")

    try:
        server.ctx.db.run_write(fails)
    except RuntimeError:
        pass
    assert ran == [] and changes(server, "test:rolled-back") == []
    server.ctx.events.emit(AdminChange(Actor(username="t"), "test:committed", "x"))
    assert ran == ["test:committed"] and len(changes(server, "test:committed")) == 1


def test_durable_follow_up_jobs_exist_only_with_their_change(server: Server) -> None:
    event_ = PackagesIngested(1, "nowhere", (), "t")
    server.ctx.worker.stop()  # keep the jobs queued, to count them

    def fails(s: Any) -> None:
        server.ctx.events.record(s, event_)
        raise RuntimeError("rolled back")

    try:
        server.ctx.db.run_write(fails)
    except RuntimeError:
        pass
    with server.ctx.db.session() as s:
        assert s.scalar(select(func.count()).select_from(Job).where(Job.kind.like("event.%"))) == 0
    (job_id,) = server.ctx.events.emit(event_)
    job = server.ctx.jobs.get(job_id)
    assert job["kind"] == "event.vulns.match_ingested" and job["state"] == "queued"
    assert PackagesIngested.from_params(job["params"]) == event_
