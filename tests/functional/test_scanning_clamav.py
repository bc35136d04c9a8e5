"""ClamAV through a real ``clamd`` (Debian's clamav-daemon), started by the test with a tiny offline
signature database written here (freshclam never runs): a payload file matching a signature only ClamAV
knows is quarantined on upload with the rule ``clamav:<signature>``; a clean package passes."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.packages import scan_sample
from tests.support.server import Server, start_server, stop_server
from tests.support.static_channel import repodata_files

CLAMD = shutil.which("clamd") or ("/usr/sbin/clamd" if os.path.exists("/usr/sbin/clamd") else None)
PAYLOAD = b"condavault clamav test payload: only the local signature database knows these bytes\n"
SIGNATURE = "Condavault.Test.Payload"


def _ping(sock: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(str(sock))
            s.sendall(b"zPING\0")
            return s.recv(16).startswith(b"PONG")
    except OSError:
        return False


@pytest.fixture(scope="module")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if CLAMD is None:
        pytest.skip("clamd is not installed (apt-get install clamav-daemon)")
    root = tmp_path_factory.mktemp("clamd")
    (root / "db").mkdir()
    (root / "db" / "condavault.hdb").write_text(f"{hashlib.md5(PAYLOAD).hexdigest()}:{len(PAYLOAD)}:{SIGNATURE}\n")
    sock = root / "clamd.sock"
    conf = root / "clamd.conf"
    conf.write_text(
        f"LocalSocket {sock}\nDatabaseDirectory {root / 'db'}\nForeground yes\n"
        f"LogFile {root / 'clamd.log'}\nPidFile {root / 'clamd.pid'}\n" + ("User root\n" if os.geteuid() == 0 else "")
    )
    proc = subprocess.Popen([CLAMD, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120  # a start-up bound, not an assertion on speed
        while not _ping(sock):
            if proc.poll() is not None or time.monotonic() > deadline:
                log = (root / "clamd.log").read_text() if (root / "clamd.log").exists() else ""
                pytest.fail(f"clamd did not start: {log[-2000:]}")
            time.sleep(0.2)
        yield sock
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def clam_server(tmp_path_factory: pytest.TempPathFactory, db_backend: str, clamd: Path) -> Iterator[Server]:
    handle, pg = start_server(tmp_path_factory.mktemp("data"), db_backend, clamd_socket=str(clamd))
    try:
        yield handle
    finally:
        stop_server(handle, pg)


def test_clamd_signature_quarantines_an_upload(clam_server: Server, tmp_path: Path) -> None:
    server = clam_server
    ch = server.channel("clam")
    bad = scan_sample(tmp_path, "clam-bad", kind="blocked", blob=PAYLOAD)
    good = scan_sample(tmp_path, "clam-good")
    assert server.upload(ch, good).status_code == 200
    r = server.upload(ch, bad)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "quarantined"
    assert err["details"]["rule"].startswith(f"clamav:{SIGNATURE}") and err["details"]["path"] == "lib/payload.bin"
    assert set(repodata_files(server, ch)) == {good.name}
    with server.client() as c:
        (row,) = c.get("/api/quarantine", params={"channel": ch}).json()["items"]
    assert row["filename"] == bad.name and row["rule"].startswith("clamav:")


def test_unreachable_clamd_refuses_the_file_never_stores_it_unscanned(tmp_path: Path, db_backend: str) -> None:
    server, pg = start_server(tmp_path / "data", db_backend, clamd_socket=str(tmp_path / "no-clamd.sock"))
    try:
        ch = server.channel("clam-down")
        p = scan_sample(tmp_path, "clam-down")
        r = server.upload(ch, p)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "scanner_unavailable"
        assert repodata_files(server, ch) == {}
        with server.client() as c:
            assert c.get("/api/quarantine", params={"channel": ch}).json()["items"] == []
    finally:
        stop_server(server, pg)
