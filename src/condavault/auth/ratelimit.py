"""Failed-login throttling per account and per client address, kept in the database so every
replica sees the same counters."""

from __future__ import annotations

import math
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from condavault.auth.models import LoginThrottle
from condavault.db.base import utcnow
from condavault.db.session import Database
from condavault.errors import RateLimited


class LoginThrottler:
    def __init__(self, db: Database, *, per_account: int, per_ip: int, window_seconds: int, block_seconds: int) -> None:
        self.db = db
        self.per_account = per_account
        self.per_ip = per_ip
        self.window = timedelta(seconds=window_seconds)
        self.block = timedelta(seconds=block_seconds)

    def keys(self, username: str, ip: str | None) -> list[tuple[str, int]]:
        out = [("user:" + username.casefold()[:250], self.per_account)]
        if ip:
            out.append(("ip:" + ip[:64], self.per_ip))
        return out

    def check(self, keys: list[tuple[str, int]]) -> None:
        """Raise RateLimited (with ``retry_after`` seconds) when any key is blocked."""
        now = utcnow()
        with self.db.session() as s:
            rows = s.scalars(select(LoginThrottle).where(LoginThrottle.key.in_([k for k, _ in keys])))
            wait = max(
                ((r.blocked_until - now).total_seconds() for r in rows if r.blocked_until and r.blocked_until > now),
                default=0.0,
            )
        if wait > 0:
            raise RateLimited(
                "too many failed logins; try again later", code="too_many_failed_logins", retry_after=math.ceil(wait)
            )

    def failure(self, keys: list[tuple[str, int]]) -> None:
        for _ in range(3):
            try:
                self.db.run_write(lambda s: self._failure(s, keys))
                return
            except IntegrityError:  # two replicas created the same counter at once
                continue

    def _failure(self, s: Session, keys: list[tuple[str, int]]) -> None:
        now = utcnow()
        for key, limit in keys:
            row = s.get(LoginThrottle, key)
            if row is None:
                row = LoginThrottle(key=key, failures=0, window_start=now)
                s.add(row)
            elif row.window_start + self.window <= now and not (row.blocked_until and row.blocked_until > now):
                row.failures, row.window_start, row.blocked_until = 0, now, None
            row.failures += 1
            if row.failures >= limit:
                row.blocked_until = now + self.block
        s.flush()

    def success(self, username: str) -> None:
        key = "user:" + username.casefold()[:250]

        def work(s: Session) -> None:
            row = s.get(LoginThrottle, key)
            if row is not None:
                s.delete(row)

        self.db.run_write(work)

    def purge(self) -> None:
        cutoff = utcnow() - self.window - self.block

        def work(s: Session) -> None:
            for row in s.scalars(select(LoginThrottle).where(LoginThrottle.window_start < cutoff)):
                if not row.blocked_until or row.blocked_until < utcnow():
                    s.delete(row)

        self.db.run_write(work)
