"""``condavault upload``: the work of the command, on the standard library only.

The CLI's other commands go through typer, rich and httpx, which take about 0.25 s of CPU to import (more
on a busy machine) -- a quarter of a bulk upload of 1,000 small files. So ``condavault upload ...`` is
parsed here first (:func:`fast_main`, called by ``cli.main.main`` before anything else is imported); a
form it does not know (``--help``, an unknown option) goes to typer, whose ``upload`` command
(``cli.channels``) calls the same :func:`run`. One implementation, two parsers of the same options.

HTTP is ``http.client`` with one keep-alive connection per thread; a batch request's body is a multipart
stream of the files (read 1 MiB at a time). Proxies (``HTTP(S)_PROXY``/``NO_PROXY``) and CA bundles
(``SSL_CERT_FILE``, else certifi's, as httpx does) are honoured like the rest of the CLI.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from condavault.cli.credentials import DEFAULT_URL, ApiError, resolve_token

PACKAGE_SUFFIXES = (".conda", ".tar.bz2")
BATCH_BYTES = 32 * 1024 * 1024  # per request of a batch upload (a file larger than this goes alone)
BATCH_FILES = 256  # files per request (many files)
PARALLEL = 4  # requests in flight at once
CHUNK = 1024 * 1024
TIMEOUT = 600.0


class UsageError(Exception):
    """A bad argument, reported before anything is sent (exit status 2)."""


@dataclass
class Options:
    channel: str
    files: list[str]
    force: bool = False
    skip_existing: bool = False
    wait: bool = True
    parallel: int = PARALLEL
    batch_files: int = BATCH_FILES


# -- the files ------------------------------------------------------------------------------------------
def package_files(paths: list[Path]) -> list[Path]:
    """The given files, and the package files found under given folders (sorted, each once)."""
    out: dict[Path, None] = {}
    for p in paths:
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.name.endswith(PACKAGE_SUFFIXES):
                    out[f] = None
        else:
            out[p] = None
    return list(out)


def chunks(files: list[tuple[Path, int]], max_files: int, max_bytes: int) -> list[list[tuple[Path, int]]]:
    """Requests of at most ``max_files`` files and about ``max_bytes`` bytes each."""
    out: list[list[tuple[Path, int]]] = []
    cur: list[tuple[Path, int]] = []
    size = 0
    for f, n in files:
        if cur and (len(cur) >= max_files or size + n > max_bytes):
            out.append(cur)
            cur, size = [], 0
        cur.append((f, n))
        size += n
    if cur:
        out.append(cur)
    return out


# -- HTTP -------------------------------------------------------------------------------------------------
class Http:
    """One keep-alive connection per thread to one server; JSON answers; errors as :class:`ApiError`."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"not an http(s) URL: {url!r}")
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.headers["User-Agent"] = "condavault-cli"
        self.proxy = _proxy_for(parts.scheme, self.host)
        self._local = threading.local()

    def _conn(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            target = urlsplit(self.proxy) if self.proxy else None
            host = target.hostname if target and target.hostname else self.host
            port = (target.port or 80) if target else self.port
            if self.https:
                conn = http.client.HTTPSConnection(host, port, timeout=TIMEOUT, context=_ssl_context())
                if target:
                    conn.set_tunnel(self.host, self.port)
            else:
                conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
            self._local.conn = conn
        return conn

    def request(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        body: Callable[[], Iterator[bytes]] | None = None,
        length: int = 0,
        content_type: str | None = None,
    ) -> Any:
        url = self.prefix + path
        if params:
            url += "?" + urlencode({k: (str(v).lower() if isinstance(v, bool) else v) for k, v in params.items()})
        if self.proxy and not self.https:
            url = f"http://{self.host}:{self.port}{url}"
        headers = dict(self.headers)
        headers["Content-Length"] = str(length)
        if content_type:
            headers["Content-Type"] = content_type
        for attempt in (1, 2):
            reused = getattr(self._local, "conn", None) is not None
            conn = self._conn()
            try:
                conn.request(method, url, body=body() if body else None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                self._local.conn = None
                # a kept-alive connection the server closed while it was idle: the request never
                # reached it, send it again once on a new connection
                stale = isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError))
                if attempt == 1 and reused and stale:
                    continue
                raise ApiError(0, "connection_error", f"cannot reach {self.url}: {exc}") from exc
        if resp.will_close:
            conn.close()
            self._local.conn = None
        if resp.status >= 400:
            try:
                err = json.loads(data)["error"]
                raise ApiError(resp.status, err.get("code", "error"), err.get("message", ""), err.get("details"))
            except (ValueError, KeyError, TypeError, AttributeError):
                text = data.decode("utf-8", "replace")[:500]
                raise ApiError(resp.status, "http_error", text or resp.reason) from None
        return json.loads(data) if data else None


def _proxy_for(scheme: str, host: str) -> str | None:
    """The proxy URL the environment names for this server (httpx's rules: HTTP(S)_PROXY, ALL_PROXY,
    NO_PROXY), or None. ``urllib.request`` is imported only when a proxy variable is set."""
    if not any(k.lower() in ("http_proxy", "https_proxy", "all_proxy") for k in os.environ):
        return None
    import urllib.request

    proxies = urllib.request.getproxies()
    proxy = proxies.get(scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _ssl_context() -> Any:
    import ssl

    cafile = os.environ.get("SSL_CERT_FILE")
    if not cafile:
        try:
            import certifi

            cafile = certifi.where()
        except ImportError:
            cafile = None
    return ssl.create_default_context(cafile=cafile, capath=os.environ.get("SSL_CERT_DIR"))


def _file_stream(path: Path, progress: Progress) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            progress.advance(len(chunk))
            yield chunk


def _multipart(group: list[tuple[Path, int]]) -> tuple[Callable[[], Iterator[bytes]], int, str]:
    """A ``multipart/form-data`` body of the files as ``file`` fields: the stream (a function giving
    it, again on a retry), its length, its type."""
    boundary = secrets.token_hex(16)
    heads = []
    for p, _ in group:
        name = p.name.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
        heads.append(
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
        )
    tail = f"--{boundary}--\r\n".encode()
    length = sum(len(h) + n + 2 for h, (_, n) in zip(heads, group, strict=True)) + len(tail)

    def stream() -> Iterator[bytes]:
        for h, (p, _) in zip(heads, group, strict=True):
            yield h
            with open(p, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    yield chunk
            yield b"\r\n"
        yield tail

    return stream, length, f"multipart/form-data; boundary={boundary}"


# -- output -------------------------------------------------------------------------------------------
class Progress:
    """A one-line progress bar on stderr when it is a terminal; nothing otherwise."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done = label, max(total, 1), 0
        self.tty = sys.stderr.isatty()
        self._lock = threading.Lock()

    def advance(self, n: int) -> None:
        with self._lock:
            self.done += n
            self._draw()

    def describe(self, label: str) -> None:
        with self._lock:
            self.label = label
            self._draw()

    def say(self, line: str) -> None:
        with self._lock:
            if self.tty:
                sys.stderr.write("\r\x1b[K")
            sys.stderr.write(line + "\n")
            self._draw()

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()

    def _draw(self) -> None:
        if not self.tty:
            return
        frac = min(self.done / self.total, 1.0)
        bar = "#" * int(frac * 30)
        sys.stderr.write(f"\r\x1b[K{self.label} [{bar:<30}] {self.done / 1e6:.1f}/{self.total / 1e6:.1f} MB")
        sys.stderr.flush()


def _error_line(filename: str, message: str, code: str) -> str:
    red = "\x1b[31m{}\x1b[0m" if sys.stderr.isatty() else "{}"
    return red.format(f"{filename}: {message} [{code}]")


@dataclass
class Tally:
    counts: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, results: list[dict[str, Any]], progress: Progress) -> None:
        with self.lock:
            for r in results:
                status = r.get("status", "failed")
                self.counts[status] = self.counts.get(status, 0) + 1
                if status == "failed":
                    self.failures.append(r["filename"])
                    err = r.get("error") or {}
                    progress.say(_error_line(r["filename"], err.get("message", ""), err.get("code", "error")))


# -- the command ----------------------------------------------------------------------------------------
def run(url: str, token: str | None, opts: Options) -> int:
    """Upload ``opts.files`` into ``opts.channel``; returns the exit status (0; 2 when a file failed).
    Raises :class:`UsageError` for bad arguments and :class:`ApiError` when the server refuses the whole
    upload (an unknown channel, no permission) or cannot be reached."""
    given = [Path(f) for f in opts.files]
    missing = [str(p) for p in given if not p.exists()]
    if missing:
        raise UsageError(f"{', '.join(missing[:5])} does not exist")
    paths = package_files(given)
    if not paths:
        raise UsageError("no package files (.conda, .tar.bz2) given")
    sized = [(p, p.stat().st_size) for p in paths]
    http_ = Http(url, token)
    tally = Tally()
    progress = Progress(f"uploading {len(paths)} file(s)", sum(n for _, n in sized))
    try:
        if len(sized) == 1:
            _upload_one(http_, opts, sized[0], progress, tally)
        else:
            _upload_batch(http_, opts, sized, progress, tally)
    finally:
        progress.close()
    print(", ".join(f"{n} {k}" for k, n in sorted(tally.counts.items())) or "nothing uploaded", flush=True)
    if tally.failures:
        print(f"{len(tally.failures)} file(s) failed", flush=True)
        return 2
    return 0


def _upload_one(http_: Http, opts: Options, item: tuple[Path, int], progress: Progress, tally: Tally) -> None:
    path, size = item
    params = {"filename": path.name, "force": opts.force, "skip_existing": opts.skip_existing, "wait": opts.wait}
    try:
        out = http_.request(
            "POST",
            f"/api/channels/{quote(opts.channel, safe='')}/files",
            params,
            lambda: _file_stream(path, progress),
            size,
            "application/octet-stream",
        )
        tally.add([out], progress)
    except ApiError as exc:
        tally.add(
            [
                {
                    "filename": path.name,
                    "status": "failed",
                    "error": {"message": exc.message, "code": f"{exc.code}, HTTP {exc.status}"},
                }
            ],
            progress,
        )


def _upload_batch(http_: Http, opts: Options, files: list[tuple[Path, int]], progress: Progress, tally: Tally) -> None:
    base = f"/api/channels/{quote(opts.channel, safe='')}/uploads"
    batch = http_.request("POST", base)["id"]

    def send(group: list[tuple[Path, int]]) -> None:
        body, length, ctype = _multipart(group)
        try:
            out = http_.request(
                "POST",
                f"{base}/{batch}/files",
                {"force": opts.force, "skip_existing": opts.skip_existing},
                body,
                length,
                ctype,
            )
            results = out["files"]
        except ApiError as exc:  # the whole request: every file of it failed
            err = {"message": exc.message, "code": f"{exc.code}, HTTP {exc.status}"}
            results = [{"filename": p.name, "status": "failed", "error": err} for p, _ in group]
        tally.add(results, progress)
        progress.advance(sum(n for _, n in group))

    groups = chunks(files, opts.batch_files, BATCH_BYTES)
    with ThreadPoolExecutor(max_workers=max(1, min(opts.parallel, len(groups)))) as pool:
        for f in [pool.submit(send, g) for g in groups]:
            f.result()
    progress.describe("publishing the index")
    out = http_.request("POST", f"{base}/{batch}/commit", {"wait": opts.wait})
    if opts.wait and not out.get("indexed"):
        progress.say("the index is not published yet; it will be shortly")


# -- the fast parser ----------------------------------------------------------------------------------
_GLOBAL = {"--url": "url", "--token": "token", "--data-dir": "data_dir"}
_FLAGS = {"--force": "force", "--skip-existing": "skip_existing", "--no-wait": "no_wait"}
_INTS = {"--parallel": ("parallel", 1, 32), "--batch-files": ("batch_files", 1, 1000)}


def parse(argv: list[str]) -> tuple[dict[str, str], Options] | None:
    """``[--url U] [--token T] [--data-dir D] upload [options] CHANNEL FILE...``, or None for anything
    else (typer then parses it: help, other commands, a form this does not know)."""
    glob: dict[str, str] = {}
    i = 0
    while i < len(argv) and argv[i] != "upload":
        name, eq, value = argv[i].partition("=")
        if name not in _GLOBAL:
            return None
        if not eq:
            if i + 1 >= len(argv):
                return None
            i, value = i + 1, argv[i + 1]
        glob[_GLOBAL[name]] = value
        i += 1
    if i >= len(argv):
        return None
    flags: dict[str, bool] = {}
    ints: dict[str, int] = {}
    positional: list[str] = []
    rest = iter(argv[i + 1 :])
    only_args = False
    for arg in rest:
        if only_args or not arg.startswith("-") or arg == "-":
            positional.append(arg)
        elif arg == "--":
            only_args = True
        elif arg in _FLAGS:
            flags[_FLAGS[arg]] = True
        elif arg.partition("=")[0] in _INTS:
            name, eq, value = arg.partition("=")
            value = value if eq else next(rest, "")
            key, lo, hi = _INTS[name]
            if not value.isdigit() or not lo <= int(value) <= hi:
                return None  # typer says what is wrong with it
            ints[key] = int(value)
        else:
            return None
    if len(positional) < 2:
        return None
    opts = Options(
        channel=positional[0],
        files=positional[1:],
        force=flags.get("force", False),
        skip_existing=flags.get("skip_existing", False),
        wait=not flags.get("no_wait", False),
        parallel=ints.get("parallel", PARALLEL),
        batch_files=ints.get("batch_files", BATCH_FILES),
    )
    return glob, opts


def fast_main(argv: list[str]) -> int | None:
    """Run ``condavault upload`` without the typer CLI when ``argv`` is a form :func:`parse` knows;
    returns the exit status, or None (the caller then runs the typer CLI)."""
    parsed = parse(argv)
    if parsed is None:
        return None
    glob, opts = parsed
    url = glob.get("url") or os.environ.get("CONDAVAULT_URL") or DEFAULT_URL
    data_dir = glob.get("data_dir") or os.environ.get("CONDAVAULT_DATA_DIR")
    token, _ = resolve_token(glob.get("token"), Path(data_dir) if data_dir else None, url)
    try:
        return run(url, token, opts)
    except UsageError as exc:
        print(
            f"Usage: condavault upload [OPTIONS] CHANNEL FILES...\nError: Invalid value for FILES: {exc}",
            file=sys.stderr,
        )
        return 2
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        for k, v in exc.details.items():
            print(f"  {k}: {v}", file=sys.stderr)
        return 2 if 400 <= exc.status < 500 else 1
