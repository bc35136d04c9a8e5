"""Repo requests answered from memory by the HTTP protocol (``serving.fast``) answer exactly what the normal
path answers: through a real ``condavault serve`` (its listener is the one that answers from memory), every
request is sent twice -- as is, and with a query string, which always takes the normal path -- and the two
answers must be equal (status, headers but ``date``, body). ``condavault_http_answered_from_memory_total``
proves the fast path answered; denied, erroneous and download requests never do."""

from __future__ import annotations

import base64
import io
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgpack
import pytest
import zstandard

from tests.support.accounts import ok, wait_for
from tests.support.packages import make_conda
from tests.support.serve_process import ServeProcess, start_serve

PKG = "noarch/dependency-1.0-0.conda"
PKG2 = "noarch/dependent-1.0-0.conda"
SUB = "noarch"


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory, db_backend: str, packages_dir: Path) -> Iterator[ServeProcess]:
    handle = start_serve(tmp_path_factory.mktemp("fast") / "data", db_backend, ready_timeout=300)
    try:
        with handle.client() as c:
            for name, privacy in (("sf-pub", "public"), ("sf-priv", "private")):
                ok(c.post("/api/channels", json={"name": name, "privacy": privacy}))
                path = packages_dir / PKG
                ok(c.post(f"/api/channels/{name}/files", params={"filename": path.name}, content=path.read_bytes()))
            for who in ("sf-reader", "sf-out"):
                ok(c.post("/api/users", json={"username": who, "password": "correct-horse-battery"}))
                r = c.post("/api/tokens", json={"user": who, "scopes": [{"scope": "api"}], "name": who})
                ok(r)
                handle.env[who] = r.json()["token"]
                handle.env[who + "-id"] = str(r.json()["id"])
            ok(c.post("/api/channels/sf-priv/grants", json={"role": "viewer", "user": "sf-reader"}))
            for name in ("sf-pub", "sf-priv"):
                wait_for(lambda n=name: c.get(f"/api/repo/{n}/{SUB}/repodata_shards.msgpack.zst").status_code == 200)
        yield handle
    finally:
        handle.stop()


def metric(serve: ServeProcess, name: str) -> float:
    for line in httpx.get(f"{serve.url}/metrics", timeout=30).text.splitlines():
        if line.startswith(f"{name} "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def memory_answers(serve: ServeProcess) -> float:
    return metric(serve, "condavault_http_answered_from_memory_total")


def answer(client: httpx.Client, method: str, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    r = client.request(method, path, headers=headers)
    got = {k: v for k, v in r.headers.items() if k != "date"}
    return r.status_code, got, r.content


def shard_path(serve: ServeProcess, channel: str, name: str, token: str | None = None) -> str:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    r = httpx.get(f"{serve.url}/api/repo/{channel}/{SUB}/repodata_shards.msgpack.zst", headers=headers, timeout=30)
    ok(r, 200)
    index = msgpack.unpackb(zstandard.ZstdDecompressor().stream_reader(io.BytesIO(r.content)).read())
    return f"/api/repo/{channel}/{SUB}/shards/{index['shards'][name].hex()}.msgpack.zst"


def same_as_normal_path(
    serve: ServeProcess, method: str, path: str, headers: dict[str, str], tries: int = 30
) -> tuple[int, bool]:
    """Send the request until it is answered from memory (at most ``tries`` rounds of three requests in
    a row on one connection: the caches of index entries live 0.25 s), each answer equal to the normal
    path's; returns (status, whether one was answered from memory)."""
    with httpx.Client(base_url=serve.url, timeout=30) as client:
        normal = answer(client, method, path + "?normal-path", headers)
        for _ in range(tries):
            before = memory_answers(serve)
            for _ in range(3):
                got = answer(client, method, path, headers)
                assert got == normal, (path, headers)
            if memory_answers(serve) > before:
                return got[0], True
    return normal[0], False


def _cred(serve: ServeProcess, who: str, how: str) -> tuple[str, dict[str, str]]:
    """(URL prefix, headers) presenting ``who``'s token ``how``."""
    if who == "anonymous":
        return "", {}
    tok = serve.token if who == "admin" else serve.env[who]
    if how == "url":
        return f"/t/{tok}", {}
    if how == "basic":
        return "", {"Authorization": "Basic " + base64.b64encode(f"x:{tok}".encode()).decode()}
    return "", {"Authorization": f"Bearer {tok}"}


CASES = [
    # channel, who, how, expected status of a 304-able revalidation, answered from memory?
    ("sf-pub", "anonymous", "", 304, True),
    ("sf-pub", "sf-out", "bearer", 304, True),
    ("sf-priv", "anonymous", "", 401, False),
    ("sf-priv", "sf-out", "bearer", 403, False),
    ("sf-priv", "sf-out", "url", 403, False),
    ("sf-priv", "sf-reader", "bearer", 304, True),
    ("sf-priv", "sf-reader", "url", 304, True),
    ("sf-priv", "sf-reader", "basic", 304, True),
    ("sf-priv", "admin", "bearer", 304, True),
    ("sf-nope", "sf-reader", "bearer", 403, False),
    ("sf-nope", "anonymous", "", 401, False),
]


@pytest.mark.parametrize(("channel", "who", "how", "status", "fast"), CASES)
def test_revalidations_and_shards_answer_as_the_normal_path(
    serve: ServeProcess, channel: str, who: str, how: str, status: int, fast: bool
) -> None:
    prefix, headers = _cred(serve, who, how)
    zst = f"/api/repo{prefix}/{channel}/{SUB}/repodata.json.zst"
    owner = serve.token
    real = "sf-priv" if channel == "sf-priv" else "sf-pub"
    etag = httpx.head(f"{serve.url}/api/repo/t/{owner}/{real}/{SUB}/repodata.json.zst").headers["etag"]
    tries = 30 if fast else 3  # a request never answered from memory: a few rounds show it
    assert same_as_normal_path(serve, "GET", zst, {**headers, "If-None-Match": etag}, tries) == (status, fast)
    inm = {**headers, "If-None-Match": f'W/"x", {etag}'}
    assert same_as_normal_path(serve, "HEAD", zst, inm, tries) == (status, fast)
    last_modified = httpx.head(f"{serve.url}/api/repo/t/{owner}/sf-pub/{SUB}/repodata.json.zst").headers[
        "last-modified"
    ]
    if channel == "sf-pub":
        assert same_as_normal_path(serve, "GET", zst, {**headers, "If-Modified-Since": last_modified}) == (304, fast)
        # a changed file (another ETag) is never a 304: the whole file, by the normal path
        assert same_as_normal_path(serve, "GET", zst, {**headers, "If-None-Match": '"other"'}, tries=2) == (200, False)
    if status == 304:
        shard = shard_path(serve, real, "dependency", owner)
        shard = shard.replace("/api/repo/", f"/api/repo{prefix}/", 1)
        assert same_as_normal_path(serve, "GET", shard, headers) == (200, True)
        assert same_as_normal_path(serve, "HEAD", shard, headers) == (200, True)
        assert same_as_normal_path(serve, "GET", shard, {**headers, "Range": "bytes=0-9"}) == (200, True)
        shard_etag = httpx.head(f"{serve.url}{shard}", headers=headers).headers["etag"]
        assert same_as_normal_path(serve, "GET", shard, {**headers, "If-None-Match": shard_etag}) == (304, True)


def test_bad_credentials_and_unknown_files_take_the_normal_path(serve: ServeProcess) -> None:
    zst = f"/api/repo/sf-pub/{SUB}/repodata.json.zst"
    etag = httpx.head(f"{serve.url}{zst}").headers["etag"]
    for headers in (
        {"Authorization": "Bearer not-a-token", "If-None-Match": etag},
        {"Authorization": "Basic bm90LWEtdG9rZW4=", "If-None-Match": etag},
        {"Authorization": "Digest x", "If-None-Match": etag},
        {"X-Auth": "not-a-token", "If-None-Match": etag},
    ):
        assert same_as_normal_path(serve, "GET", zst, headers, tries=3) == (401, False), headers
    for path in (
        f"/api/repo/sf-pub/{SUB}/shards/{'0' * 64}.msgpack.zst",
        f"/api/repo/sf-pub/{SUB}/nothing.json",
        "/api/repo/sf-pub",
        f"/api/repo/sf-pub/{SUB}/shards/{'0' * 63}.msgpack.zst",
    ):
        status, fast = same_as_normal_path(serve, "GET", path, {"If-None-Match": etag}, tries=3)
        assert status == 404 and not fast, path
    # a cached token revoked: 401 at once (the same caches, the same invalidation)
    _prefix, headers = _cred(serve, "sf-out", "bearer")
    assert same_as_normal_path(serve, "GET", zst, {**headers, "If-None-Match": etag}) == (304, True)
    with serve.client() as c:
        ok(c.delete(f"/api/tokens/{serve.env['sf-out-id']}"))
    wait_for(lambda: httpx.get(f"{serve.url}{zst}", headers={**headers, "If-None-Match": etag}).status_code == 401)
    assert same_as_normal_path(serve, "GET", zst, {**headers, "If-None-Match": etag}, tries=3) == (401, False)


def test_downloads_are_audited_and_never_answered_from_memory(serve: ServeProcess) -> None:
    _prefix, headers = _cred(serve, "sf-reader", "bearer")
    url = f"{serve.url}/api/repo/sf-priv/{PKG}"
    with serve.client() as c:
        rows = c.get("/api/audit/downloads", params={"user": "sf-reader", "channel": "sf-priv"}).json()
    before = memory_answers(serve)
    for _ in range(3):
        r = httpx.get(url, headers=headers)
        ok(r, 200)
    assert memory_answers(serve) == before
    with serve.client() as c:
        wait_for(
            lambda: (
                len(c.get("/api/audit/downloads", params={"user": "sf-reader", "channel": "sf-priv"}).json())
                >= len(rows) + 3
            )
        )


def _read_responses(sock: socket.socket, n: int) -> list[tuple[int, dict[str, str], bytes]]:
    buf = b""
    out: list[tuple[int, dict[str, str], bytes]] = []
    while len(out) < n:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed after {len(out)} responses"
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = 0 if lines[0].split()[1] == "304" else int(headers.get("content-length", "0"))
        while len(buf) < length:
            chunk = sock.recv(65536)
            assert chunk
            buf += chunk
        out.append((int(lines[0].split()[1]), headers, buf[:length]))
        buf = buf[length:]
    return out


def test_pipelined_requests_are_answered_in_order(serve: ServeProcess) -> None:
    zst = f"/api/repo/sf-pub/{SUB}/repodata.json.zst"
    etag = httpx.head(f"{serve.url}{zst}").headers["etag"]
    same_as_normal_path(serve, "GET", zst, {"If-None-Match": etag})  # cached now
    revalidate = f"GET {zst} HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n".encode()
    download = f"GET /api/repo/sf-pub/{PKG} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    with socket.create_connection(("127.0.0.1", serve.port), timeout=30) as sock:
        sock.sendall(revalidate + download + revalidate + download + revalidate)
        got = _read_responses(sock, 5)
    assert [g[0] for g in got] == [304, 200, 304, 200, 304]
    assert got[1][2] == got[3][2] and len(got[1][2]) == int(got[1][1]["content-length"]) > 0
    # HTTP/1.0 and Connection: close take the normal path, which closes the connection
    for req in (
        f"GET {zst} HTTP/1.0\r\nIf-None-Match: {etag}\r\n\r\n",
        f"GET {zst} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nIf-None-Match: {etag}\r\n\r\n",
    ):
        with socket.create_connection(("127.0.0.1", serve.port), timeout=30) as sock:
            sock.sendall(req.encode())
            (status, _headers, _body) = _read_responses(sock, 1)[0]
            assert status == 304
            assert sock.recv(1) == b""  # closed


def test_new_and_superseded_shards_after_the_subdir_was_loaded(serve: ServeProcess, packages_dir: Path) -> None:
    old = shard_path(serve, "sf-pub", "dependency")
    assert same_as_normal_path(serve, "GET", old, {}) == (200, True)  # the subdir's shards are loaded
    with serve.client() as c:
        for rel in (PKG2, "noarch/dependency-2.0-0.conda"):
            path = packages_dir / rel
            ok(c.post("/api/channels/sf-pub/files", params={"filename": path.name}, content=path.read_bytes()))
    wait_for(lambda: shard_path(serve, "sf-pub", "dependency") != old)
    new = wait_for(lambda: _shard_or_none(serve, "dependent"))
    assert httpx.get(f"{serve.url}{new}").status_code == 200  # a name the loaded subdir did not have
    assert same_as_normal_path(serve, "GET", new, {}) == (200, True)
    assert same_as_normal_path(serve, "GET", shard_path(serve, "sf-pub", "dependency"), {}) == (200, True)
    r = httpx.get(f"{serve.url}{old}")  # superseded, kept for the retention period: still served
    assert r.status_code == 200 and r.headers["cache-control"] == "public, max-age=31536000, immutable"


def shard_loads(serve: ServeProcess) -> float:
    return metric(serve, "condavault_shard_lookups_loaded_total")


def test_a_publish_keeps_the_loaded_shards(serve: ServeProcess, tmp_path: Path) -> None:
    """Shards are content-addressed: after a publish the server keeps the subdir's shards it loaded and reads
    only the new one, instead of every current shard of the subdir again (at 300 k records that re-read
    cost as much as the index run). A deleted channel's shards are forgotten at once."""
    with serve.client() as c:
        ok(c.post("/api/channels", json={"name": "sf-keep", "privacy": "public"}))
        for name in ("keep-a", "keep-b", "keep-c"):
            pkg = make_conda(tmp_path, name)
            ok(c.post("/api/channels/sf-keep/files", params={"filename": pkg.name}, content=pkg.read_bytes()))
    wait_for(lambda: _shard_or_none(serve, "keep-c", "sf-keep"))
    before = {n: shard_path(serve, "sf-keep", n) for n in ("keep-a", "keep-b", "keep-c")}
    for path in before.values():  # the first one reads the subdir's shards at once, the others are hits
        assert httpx.get(f"{serve.url}{path}").status_code == 200
    loads = shard_loads(serve)

    pkg = make_conda(tmp_path, "keep-a", "2.0")
    with serve.client() as c:
        ok(c.post("/api/channels/sf-keep/files", params={"filename": pkg.name}, content=pkg.read_bytes()))
    wait_for(lambda: shard_path(serve, "sf-keep", "keep-a") != before["keep-a"])
    new = shard_path(serve, "sf-keep", "keep-a")
    r = httpx.get(f"{serve.url}{new}")
    assert r.status_code == 200
    listed = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(r.content), raw=False)["packages.conda"]
    assert pkg.name in listed
    for path in before.values():  # the superseded shard of keep-a too (kept for the retention period)
        assert same_as_normal_path(serve, "GET", path, {}) == (200, True)
    assert same_as_normal_path(serve, "GET", new, {}) == (200, True)
    assert shard_loads(serve) == loads  # the publish did not make the server read them all again

    with serve.client() as c:
        ok(c.delete("/api/channels/sf-keep"))
        assert c.get(before["keep-b"]).status_code == 404
        assert c.get(new).status_code == 404


def _shard_or_none(serve: ServeProcess, name: str, channel: str = "sf-pub") -> str | None:
    try:
        return shard_path(serve, channel, name)
    except KeyError:
        return None


def test_a_shard_never_read_is_read_by_the_fast_path_and_a_damaged_one_is_not(
    serve: ServeProcess, tmp_path: Path
) -> None:
    """A shard whose bytes this process has not read yet is read from its blob file by the fast path
    (the cold solve's case) -- unless the file is damaged: then the normal path reports it, and once
    the file is whole again the next request is answered from memory. (A publish of the channel in
    between drops its lookups, and the normal path would read the bytes first: then try a new name.)"""
    with serve.client() as c:
        ok(c.post("/api/channels", json={"name": "sf-cold", "privacy": "public"}))
    read_by_fast_path = False
    for attempt in range(5):
        name = f"sf-cold-{attempt}"  # a name no other test has: a shard nobody read yet
        pkg = make_conda(tmp_path, name)
        with serve.client() as c:
            ok(c.post("/api/channels/sf-cold/files", params={"filename": pkg.name}, content=pkg.read_bytes()))
            wait_for(lambda c=c, fn=pkg.name: fn in c.get(f"/api/repo/sf-cold/{SUB}/current_repodata.json").text)
        shard = wait_for(lambda n=name: _shard_or_none(serve, n, "sf-cold"))
        sha = shard.rsplit("/", 1)[1][:64]
        blob = serve.data_dir / "blobs" / sha[:2] / sha[2:4] / sha
        good = blob.read_bytes()
        with httpx.Client(base_url=serve.url, timeout=30) as client:
            blob.write_bytes(b"\0" * len(good))  # damaged before any request read it
            try:
                before = memory_answers(serve)
                for _ in range(3):
                    r = client.get(shard)
                    assert r.status_code == 404 and r.json()["error"]["code"] == "blob_missing"
                assert memory_answers(serve) == before  # never answered from memory
            finally:
                blob.write_bytes(good)
            before = memory_answers(serve)
            r = client.get(shard)
            assert r.status_code == 200 and r.content == good
            assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
            read_by_fast_path = memory_answers(serve) == before + 1
        assert same_as_normal_path(serve, "GET", shard, {}) == (200, True)
        if read_by_fast_path:
            break
    assert read_by_fast_path


def test_a_restarted_server_primes_the_published_shards_before_any_request(tmp_path: Path) -> None:
    """A restarted process loads the current shards of the recently published subdirs by itself, and reads
    their bytes ahead, so a cold solve's first shard requests wait for neither (a restarted server was
    1.35x nginx on a cold solve; the goal is 1.2x). No shard is requested before the priming is over: a
    shard damaged on disk after it is still served whole, from memory."""
    data = tmp_path / "data"
    first = start_serve(data)
    try:
        with first.client() as c:
            for channel in ("rp-a", "rp-b"):
                ok(c.post("/api/channels", json={"name": channel, "privacy": "public"}))
                (tmp_path / channel).mkdir()
                for name in ("rp-one", "rp-two"):
                    pkg = make_conda(tmp_path / channel, name)
                    url = f"/api/channels/{channel}/files"
                    ok(c.post(url, params={"filename": pkg.name}, content=pkg.read_bytes()))
                wait_for(lambda c=c, ch=channel: "rp-two" in c.get(f"/api/repo/{ch}/{SUB}/current_repodata.json").text)
            wait_for(lambda: _shard_or_none(first, "rp-two", "rp-b"))
    finally:
        first.stop()
    shards = {}
    again = start_serve(data)
    try:
        wait_for(lambda: shard_loads(again) >= 2)  # both subdirs, with no request for them
        # ... and their bytes read ahead: then a damaged file no longer matters to this process
        wait_for(lambda: "primed the shard lookups" in again.log_path.read_text())
        for channel in ("rp-a", "rp-b"):
            for name in ("rp-one", "rp-two"):
                shards[(channel, name)] = shard_path(again, channel, name)
        sha = shards[("rp-a", "rp-one")].rsplit("/", 1)[1][:64]
        blob = data / "blobs" / sha[:2] / sha[2:4] / sha
        good = blob.read_bytes()
        blob.write_bytes(b"\0" * len(good))
        loads = shard_loads(again)
        for path in shards.values():
            r = httpx.get(f"{again.url}{path}")
            assert r.status_code == 200
        assert httpx.get(f"{again.url}{shards[('rp-a', 'rp-one')]}").content == good
        assert shard_loads(again) == loads == 2
    finally:
        again.stop()
