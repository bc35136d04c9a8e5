"""A plain static conda channel on loopback, to be a mirror's upstream in tests, and mirror test helpers.

``build_channel(packages_dir, root)`` makes ``root/<subdir>/`` with symlinks to the real test packages
and a ``repodata.json`` built from each package's ``info/index.json`` (plus size, md5, sha256).
``StaticChannel(root)`` serves it with ``http.server.ThreadingHTTPServer`` (ETag + 304 on every file)
and offers fault injection: per-file delays, 5xx for the first N requests, slow answers (timeouts),
corrupted bytes; ``hits`` counts requests per path.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import tempfile
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from tests.support.server import Server


def _index_json(path: Path) -> dict[str, Any]:
    from conda_package_streaming.package_streaming import stream_conda_info

    for tar, member in stream_conda_info(str(path)):
        if member.name == "info/index.json":
            fh = tar.extractfile(member)
            assert fh is not None
            return dict(json.load(fh))
    raise ValueError(f"{path} has no info/index.json")


def _hashes(path: Path) -> tuple[int, str, str]:
    data = path.read_bytes()
    return len(data), hashlib.md5(data).hexdigest(), hashlib.sha256(data).hexdigest()


def build_channel(
    packages_dir: Path, root: Path, *, subdirs: tuple[str, ...] = ("linux-64", "noarch"), names: set[str] | None = None
) -> Path:
    """A channel directory of (symlinked) real packages with a repodata.json per subdir."""
    for subdir in subdirs:
        out = root / subdir
        out.mkdir(parents=True, exist_ok=True)
        rd: dict[str, Any] = {"info": {"subdir": subdir}, "packages": {}, "packages.conda": {}, "repodata_version": 1}
        src = packages_dir / subdir
        for path in sorted(src.glob("*")) if src.is_dir() else []:
            if not path.name.endswith((".conda", ".tar.bz2")):
                continue
            try:
                index = _index_json(path)
            except Exception:
                continue
            if names is not None and index.get("name") not in names:
                continue
            size, md5, sha = _hashes(path)
            index.update(size=size, md5=md5, sha256=sha)
            index.setdefault("subdir", subdir)
            section = "packages.conda" if path.name.endswith(".conda") else "packages"
            rd[section][path.name] = index
            link = out / path.name
            if not link.exists():
                os.symlink(path, link)
        (out / "repodata.json").write_text(json.dumps(rd, indent=1, sort_keys=True))
    return root


def write_repodata(root: Path, subdir: str, repodata: dict[str, Any]) -> None:
    (root / subdir).mkdir(parents=True, exist_ok=True)
    (root / subdir / "repodata.json").write_text(json.dumps(repodata))


class StaticChannel:
    """Serve ``root`` on ``http://127.0.0.1:<port>/``; use as a context manager."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.hits: Counter[str] = Counter()
        self.delay: dict[str, float] = {}  # filename -> seconds before answering
        self.default_delay = 0.0  # for every package file
        self.fail_first: dict[str, int] = {}  # filename -> answer 503 this many times
        self.stall_first: dict[str, int] = {}  # filename -> stall (longer than the client timeout) N times
        self.stall_seconds = 5.0
        self.corrupt: set[str] = set()
        self.gate: threading.Event | None = None  # package files wait for it when set
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> StaticChannel:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def package_hits(self) -> int:
        return sum(n for p, n in self.hits.items() if p.endswith((".conda", ".tar.bz2")))

    def _take(self, table: dict[str, int], name: str) -> bool:
        with self._lock:
            left = table.get(name, 0)
            if left > 0:
                table[name] = left - 1
                return True
            return False

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        chan = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self.do_GET(body=False)

            def do_GET(self, body: bool = True) -> None:
                path = self.path.split("?", 1)[0]
                with chan._lock:
                    chan.hits[path] += 1
                name = path.rsplit("/", 1)[-1]
                is_pkg = name.endswith((".conda", ".tar.bz2"))
                if chan._take(chan.fail_first, name):
                    return self._send(503, b"try again")
                if chan._take(chan.stall_first, name):
                    time.sleep(chan.stall_seconds)
                    return self._send(503, b"stalled")
                gate = chan.gate
                if is_pkg and gate is not None:
                    gate.wait(60)
                wait = chan.delay.get(name, chan.default_delay if is_pkg else 0.0)
                if wait:
                    time.sleep(wait)
                file = (chan.root / path.lstrip("/")).resolve()
                if ".." in path or not file.is_file():
                    return self._send(404, b"not found")
                data = file.read_bytes()
                etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                if name in chan.corrupt:
                    data = data[:-64] + bytes(b ^ 0xFF for b in data[-64:])
                self.send_response(200)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                if body:
                    self._write(data)
                return None

            def _send(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self._write(data)

            def _write(self, data: bytes) -> None:
                try:
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

        return Handler


# -- helpers for the mirror functional tests ------------------------------------------------------


def create_mirror(
    server: Server, name: str, upstream: str, *, channel: str | None = None, **cfg: Any
) -> dict[str, Any]:
    channel = channel or name
    with server.client() as c:
        if c.get(f"/api/channels/{channel}").status_code == 404:
            server.channel(channel)
        body = {"name": name, "upstream": upstream, "channel": channel, "subdirs": ["linux-64", "noarch"], **cfg}
        r = c.post("/api/mirrors", json=body)
        assert r.status_code == 201, r.text
        return r.json()


def run_mirror(server: Server, name: str, **params: Any) -> dict[str, Any]:
    with server.client() as c:
        r = c.post(f"/api/mirrors/{name}/runs", params={"wait": True, **params})
        assert r.status_code == 202, r.text
        return r.json()


def repodata_files(server: Server, channel: str, subdir: str = "noarch") -> dict[str, dict[str, Any]]:
    with server.client(None) as c:
        r = c.get(f"/api/repo/{channel}/{subdir}/repodata.json")
        assert r.status_code == 200, r.text
        body = r.json()
        return {**body["packages"], **body["packages.conda"]}


def check_served_files(server: Server, channel: str, subdirs: tuple[str, ...] = ("linux-64", "noarch")) -> int:
    """Every file the index lists downloads with exactly the sha256 the index gives. Returns the count."""
    n = 0
    with server.client(None) as c:
        for sd in subdirs:
            for fn, rec in repodata_files(server, channel, sd).items():
                r = c.get(f"/api/repo/{channel}/{sd}/{fn}")
                assert r.status_code == 200, (fn, r.text)
                assert hashlib.sha256(r.content).hexdigest() == rec["sha256"], fn
                n += 1
    return n


def solve_and_install(server: Server, channel: str, specs: list[str]) -> dict[str, str]:
    """py-rattler solves ``specs`` against the channel and installs them; returns name -> version."""
    from rattler import Channel, ChannelConfig, Subdir, install, solve

    async def go() -> dict[str, str]:
        cfg = ChannelConfig(channel_alias=f"{server.url}/api/repo/")
        recs = await solve(
            sources=[Channel(channel, cfg)],
            specs=specs,
            platforms=[Subdir("linux-64"), Subdir("noarch")],
            virtual_packages=[],
        )
        with tempfile.TemporaryDirectory() as d:
            await install(recs, target_prefix=str(Path(d) / "env"), cache_dir=str(Path(d) / "cache"))
            installed = {p.name for p in (Path(d) / "env" / "conda-meta").glob("*.json")}
        got = {r.name.normalized: str(r.version) for r in recs}
        assert len(installed) == len(got), installed
        return got

    return asyncio.run(go())


def wait_run(client: httpx.Client, name: str, run_id: int, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(f"/api/mirrors/{name}/runs/{run_id}").json()
        if run["status"] in ("completed", "failed", "cancelled"):
            return run  # type: ignore[no-any-return]
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} of {name} did not finish")
