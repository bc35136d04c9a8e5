"""``SharedSync``: concurrent barriers share one sync that started after each of them asked."""

from __future__ import annotations

import threading
import time

import pytest

from condavault.storage.local import SharedSync


class _Gate:
    """A sync that records when each call started and blocks the first call until released."""

    def __init__(self, fail_first: bool = False) -> None:
        self.calls: list[int] = []  # the number of tickets handed out when each call started
        self.release = threading.Event()
        self.fail_first = fail_first
        self.shared: SharedSync | None = None

    def __call__(self) -> None:
        assert self.shared is not None
        self.calls.append(self.shared._asked)
        if len(self.calls) == 1:
            self.release.wait(60)
            if self.fail_first:
                raise OSError("writeback error")


def _wait_for_tickets(shared: SharedSync, n: int) -> None:
    for _ in range(6000):
        if shared._asked >= n:
            return
        time.sleep(0.01)
    raise AssertionError(f"only {shared._asked} of {n} callers asked")


def _run(shared: SharedSync, errors: list[BaseException]) -> None:
    try:
        shared()
    except BaseException as exc:  # recorded for the test
        errors.append(exc)


@pytest.mark.parametrize("fail_first", [False, True])
def test_callers_that_ask_during_a_sync_share_the_next_one(fail_first: bool) -> None:
    gate = _Gate(fail_first)
    shared = gate.shared = SharedSync(gate)
    errors: list[BaseException] = []
    first = threading.Thread(target=_run, args=(shared, errors))
    first.start()
    _wait_for_tickets(shared, 1)
    while not gate.calls:  # the first sync runs (and blocks)
        time.sleep(0.01)
    others = [threading.Thread(target=_run, args=(shared, errors)) for _ in range(5)]
    for t in others:
        t.start()
    _wait_for_tickets(shared, 6)
    gate.release.set()
    for t in [first, *others]:
        t.join(60)
    # the first sync started before the five others asked, so it cannot cover them: one more sync, shared
    assert gate.calls == [1, 6]
    if fail_first:
        assert len(errors) == 1 and isinstance(errors[0], OSError)
    else:
        assert errors == []


def test_a_lone_caller_syncs_every_time() -> None:
    calls: list[int] = []
    shared = SharedSync(lambda: calls.append(1))
    for _ in range(3):
        shared()
    assert len(calls) == 3
