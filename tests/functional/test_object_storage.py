"""Object storage (issue 16): a server whose blobs live in an S3 bucket (moto's standalone server, a real
S3 API over HTTP) -- serving by presigned redirect or streamed, index files with their ETag/304, start-up
refusal of an unusable store, and two web processes + one worker on PostgreSQL + S3 with no shared
filesystem and no package bytes on any local disk."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.s3_server import S3Server
from tests.support.serve_process import ServeProcess, start_serve
from tests.support.server import Server, create_pg_database, drop_pg_database, start_server, stop_server
from tests.support.static_channel import StaticChannel, build_channel, wait_run

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]
PACKAGES = [f"noarch/{n}-{v}-0.conda" for n in ("dependency", "dependent", "another_dependent") for v in ("1.0", "2.0")]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def s3_server(tmp_path: Path, db_backend: str, s3: S3Server) -> Iterator[tuple[Server, str]]:
    bucket = s3.new_bucket()
    handle, pg = start_server(tmp_path / "data", db_backend, **s3.settings(bucket, s3_prefix="cv"))
    try:
        yield handle, bucket
    finally:
        stop_server(handle, pg)


def _local_package_bytes(folders: list[Path], shas: set[str]) -> list[str]:
    """Files under ``folders`` whose bytes are one of the packages (by sha256)."""
    found = []
    for folder in folders:
        for p in folder.rglob("*"):
            if p.is_file() and not p.is_symlink() and _sha(p.read_bytes()) in shas:
                found.append(str(p))
    return found


def test_packages_redirect_to_presigned_urls_and_indexes_keep_etags(
    s3_server: tuple[Server, str], s3: S3Server, packages_dir: Path
) -> None:
    srv, bucket = s3_server
    srv.channel("s3-pub")
    srv.channel("s3-priv", "private")
    data = (packages_dir / PACKAGES[0]).read_bytes()
    for ch in ("s3-pub", "s3-priv"):
        assert srv.upload(ch, packages_dir / PACKAGES[0]).status_code == 200
    key = f"cv/{_sha(data)[:2]}/{_sha(data)[2:4]}/{_sha(data)}"
    assert key in s3.keys(bucket)
    url = f"/api/repo/s3-pub/{PACKAGES[0]}"
    with srv.client(None) as anon:
        r = anon.get(url)
        assert r.status_code == 307, r.text
        location = r.headers["location"]
        assert location.startswith(s3.url) and "X-Amz-Expires=300" in location
        assert r.headers["cache-control"] == "private, no-store"
        got = httpx.get(location)
        assert got.status_code == 200 and got.content == data
        assert anon.head(url).status_code == 307
        assert anon.get(f"/api/repo/s3-priv/{PACKAGES[0]}").status_code == 401  # authorised before any URL
        # index files: streamed, ETag from the database, 304 on revalidation
        idx = anon.get("/api/repo/s3-pub/noarch/repodata.json")
        assert idx.status_code == 200 and PACKAGES[0].split("/")[1] in idx.json()["packages.conda"]
        etag = idx.headers["etag"]
        assert anon.get("/api/repo/s3-pub/noarch/repodata.json", headers={"If-None-Match": etag}).status_code == 304
        zst = anon.get("/api/repo/s3-pub/noarch/repodata.json.zst")
        assert zst.status_code == 200 and zst.content[:4] == b"\x28\xb5\x2f\xfd"
        head = anon.head("/api/repo/s3-pub/noarch/repodata.json")
        assert head.status_code == 200 and head.content == b""
        assert int(head.headers["content-length"]) == len(idx.content)
        shards = anon.get("/api/repo/s3-pub/noarch/repodata_shards.msgpack.zst")
        assert shards.status_code == 200
    with srv.client() as admin:
        assert admin.get(f"/api/repo/s3-priv/{PACKAGES[0]}", follow_redirects=True).content == data
    assert not (srv.settings.data_dir / "blobs").exists()
    assert _local_package_bytes([srv.settings.data_dir], {_sha(data)}) == []


def test_streamed_packages_with_ranges(tmp_path: Path, s3: S3Server, packages_dir: Path) -> None:
    bucket = s3.new_bucket()
    srv, pg = start_server(tmp_path / "data", "sqlite", **s3.settings(bucket, s3_serve_mode="stream"))
    try:
        srv.channel("s3-stream")
        data = (packages_dir / PACKAGES[1]).read_bytes()
        assert srv.upload("s3-stream", packages_dir / PACKAGES[1]).status_code == 200
        url = f"/api/repo/s3-stream/{PACKAGES[1]}"
        with srv.client(None) as anon:
            r = anon.get(url)
            assert r.status_code == 200 and r.content == data
            assert r.headers["etag"] == f'"{_sha(data)}"' and r.headers["accept-ranges"] == "bytes"
            part = anon.get(url, headers={"Range": "bytes=10-19"})
            assert part.status_code == 206 and part.content == data[10:20]
            assert part.headers["content-range"] == f"bytes 10-19/{len(data)}"
            tail = anon.get(url, headers={"Range": "bytes=-7"})
            assert tail.status_code == 206 and tail.content == data[-7:]
            bad = anon.get(url, headers={"Range": f"bytes={len(data) + 5}-"})
            assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{len(data)}"
            head = anon.head(url)
            assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) == len(data)
            assert anon.get(url, headers={"If-None-Match": f'"{_sha(data)}"'}).status_code == 304
            # the object is gone from the bucket: a precise 404, never a 500
            s3.client().delete_object(Bucket=bucket, Key=f"{_sha(data)[:2]}/{_sha(data)[2:4]}/{_sha(data)}")
            gone = anon.get(url)
            assert gone.status_code == 404 and gone.json()["error"]["code"] == "blob_missing"
    finally:
        stop_server(srv, pg)


def _cli(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "condavault", *args], env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO
    )


def _env(**settings: Any) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDAVAULT_", "AWS_"))}
    env.update({f"CONDAVAULT_{k.upper()}": str(v) for k, v in settings.items()})
    env["COLUMNS"] = "400"  # the console wraps at the terminal width: one message, one line
    return env


def test_an_unusable_store_stops_the_start(tmp_path: Path, s3: S3Server) -> None:
    from tests.support.server import free_port

    cases = [
        ({**s3.settings("no-such-bucket")}, "no-such-bucket"),
        ({**s3.settings("b"), "s3_endpoint_url": f"http://127.0.0.1:{free_port()}"}, "blob store unusable"),
        ({"blob_store": "s3"}, "s3_bucket"),
        ({"blob_store": "ftp"}, "blob_store"),
    ]
    for i, (settings, says) in enumerate(cases):
        for command in (["serve", "--port", str(free_port())], ["worker"]):
            out = _cli([*command, "--data-dir", str(tmp_path / f"d{i}")], _env(**settings))
            assert out.returncode == 1, (command, settings, out.stdout, out.stderr)
            errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
            assert len(errors) == 1 and says in errors[0], out.stderr
            assert "Traceback" not in out.stderr
            if command[0] == "serve":
                assert not (tmp_path / f"d{i}").exists()  # refused before anything was created


# -- two web processes + one worker, PostgreSQL + S3, no shared filesystem ------------------------------------
def _start_worker(data_dir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    data_dir.mkdir(parents=True, exist_ok=True)
    log = open(data_dir.parent / f"{data_dir.name}-worker.log", "wb")  # noqa: SIM115 - the child writes it
    proc = subprocess.Popen(
        [sys.executable, "-m", "condavault", "worker", "--data-dir", str(data_dir)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    log.close()
    return proc


def _rattler(url: str, prefix: Path, spec: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RATTLER_")}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.support.rattler_client", url, str(prefix), spec],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.stdout.strip(), proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_two_web_processes_and_a_worker_share_postgresql_and_s3(
    tmp_path: Path, s3: S3Server, packages_dir: Path
) -> None:
    db_url, pg_name = create_pg_database()
    bucket = s3.new_bucket()
    password = "S3-proof-admin-Passw0rd!"
    common: dict[str, Any] = {
        "database_url": db_url,
        "upstream_allow_loopback": True,
        "admin_password": password,
        **s3.settings(bucket),
    }
    upstream_root = build_channel(packages_dir, tmp_path / "upstream", names={"dummy-a", "dummy-b", "dummy-c"})
    webs: list[ServeProcess] = []
    worker: subprocess.Popen[bytes] | None = None
    folders = [tmp_path / "web1", tmp_path / "web2", tmp_path / "worker"]
    try:
        webs.append(start_serve(folders[0], "sqlite", worker=False, **common))
        webs.append(start_serve(folders[1], "sqlite", worker=False, **common))
        web1, web2 = webs
        assert web1.token != web2.token  # each machine bootstrapped its own admin token, both valid
        worker = _start_worker(folders[2], webs[0].env | {"CONDAVAULT_WORKER": "true"})
        # upload through web 1
        with web1.client() as c:
            assert c.post("/api/channels", json={"name": "team", "privacy": "private"}).status_code == 201
            for p in PACKAGES:
                data = (packages_dir / p).read_bytes()
                r = c.post("/api/channels/team/files", params={"filename": Path(p).name}, content=data)
                assert r.status_code == 200, r.text
        # install through web 2 with py-rattler (token in the URL; packages come by presigned redirect)
        out = _rattler(f"{web2.url}/api/repo/t/{web2.token}/team", tmp_path / "rattler-team", "another_dependent")
        assert "error" not in out, out
        assert {n.rsplit("-", 2)[0] for n in out["installed"]} == {"another_dependent", "dependent", "dependency"}
        # a mirror run, executed by the worker (the web processes run no jobs)
        with StaticChannel(upstream_root) as upstream, web1.client() as c:
            assert c.post("/api/channels", json={"name": "mirrored"}).status_code == 201
            r = c.post(
                "/api/mirrors",
                json={"name": "up", "upstream": upstream.url, "channel": "mirrored", "subdirs": ["linux-64", "noarch"]},
            )
            assert r.status_code == 201, r.text
            r = c.post("/api/mirrors/up/runs")
            assert r.status_code == 202, r.text
            run = wait_run(c, "up", r.json()["id"], timeout=120)
            assert run["status"] == "completed", run
        out = _rattler(f"{web2.url}/api/repo/mirrored", tmp_path / "rattler-mirror", "dummy-a")
        assert "error" not in out, out
        assert any(n.startswith("dummy-a-") for n in out["installed"])

        def mirror_jobs(log: Path) -> list[dict[str, Any]]:
            lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
            return [x for x in lines if x.get("msg") == "job done" and x.get("kind") == "mirror.run"]

        assert [j["state"] for j in mirror_jobs(tmp_path / "worker-worker.log")] == ["succeeded"]
        assert mirror_jobs(web1.log_path) == [] and mirror_jobs(web2.log_path) == []
        with web2.client(None) as anon:  # a mirrored package through web 2: a presigned redirect into the bucket
            fn = next(iter(anon.get("/api/repo/mirrored/linux-64/repodata.json").json()["packages.conda"]))
            r = anon.get(f"/api/repo/mirrored/linux-64/{fn}")
            assert r.status_code == 307 and r.headers["location"].startswith(s3.url), r.text
        # the same signing key everywhere (kept in the database): admission statements verify alike
        keys = []
        for web in webs:
            with web.client() as c:
                r = c.get("/api/signing/key")
                assert r.status_code == 200, r.text
                keys.append(r.json())
        assert keys[0] == keys[1]
        # a browser session opened on web 1 is valid on web 2 (the session secret is shared through the database)
        with httpx.Client(base_url=web1.url) as browser:
            r = browser.post("/api/auth/login", json={"username": "admin", "password": password})
            assert r.status_code == 200, r.text
            cookies = browser.cookies
        with httpx.Client(base_url=web2.url, cookies=cookies) as browser:
            r = browser.get("/api/whoami")
            assert r.status_code == 200 and r.json()["username"] == "admin", r.text
        with httpx.Client(base_url=web2.url) as stranger:
            assert stranger.get("/api/whoami").json().get("username") != "admin"
        # no package bytes on any local disk: every blob is in the bucket
        shas = {_sha((packages_dir / p).read_bytes()) for p in PACKAGES}
        shas |= {_sha(p.read_bytes()) for p in upstream_root.rglob("*") if p.name.endswith((".conda", ".tar.bz2"))}
        assert _local_package_bytes(folders, shas) == []
        stored = {k.rsplit("/", 1)[-1] for k in s3.keys(bucket)}
        assert shas <= stored
    finally:
        if worker is not None:
            worker.terminate()
            try:
                worker.wait(timeout=30)
            except subprocess.TimeoutExpired:
                worker.kill()
        for web in webs:
            web.stop()
        drop_pg_database(pg_name)


def test_check_and_repair_on_s3(s3_server: tuple[Server, str], s3: S3Server, packages_dir: Path) -> None:
    from condavault.maintenance.check import run_check

    srv, bucket = s3_server
    srv.channel("s3-check")
    datas = [(packages_dir / p).read_bytes() for p in PACKAGES[:3]]
    for p in PACKAGES[:3]:
        assert srv.upload("s3-check", packages_dir / p).status_code == 200
    key = [f"cv/{_sha(d)[:2]}/{_sha(d)[2:4]}/{_sha(d)}" for d in datas]
    client = s3.client()
    client.delete_object(Bucket=bucket, Key=key[0])  # lost
    client.put_object(Bucket=bucket, Key=key[1], Body=b"not the package")  # damaged
    orphan = _sha(b"orphan")
    client.put_object(Bucket=bucket, Key=f"cv/{orphan[:2]}/{orphan[2:4]}/{orphan}", Body=b"orphan")
    report = run_check(srv.settings, progress=False)
    assert report["missing_blobs"] == [f"s3-check/{PACKAGES[0]}"]
    assert report["corrupt_blobs"] == [f"s3-check/{PACKAGES[1]}"]
    # orphans: ours, and the index files the uploads superseded (collected later by the server itself)
    assert report["orphan_blobs"] >= 1 and report["problems"] == 2
    # the server goes on meanwhile (it collects the index files it superseded itself), so the counts of
    # the runs below are not compared with each other: only what each run did with what it found
    young = run_check(srv.settings, repair=True, progress=False)  # default grace: 24 h, nothing goes
    assert young["orphan_blobs_deleted"] == 0 and young["orphan_blobs_within_grace"] >= 1
    assert any(k.endswith(orphan) for k in s3.keys(bucket))
    report = run_check(srv.settings, repair=True, progress=False, grace=0)
    assert report["orphan_blobs_deleted"] >= 1 and report["orphan_blobs_within_grace"] == 0
    keys = set(s3.keys(bucket))
    assert key[1] not in keys and key[2] in keys and not any(k.endswith(orphan) for k in keys)
    again = run_check(srv.settings, progress=False)
    assert again["problems"] == 0, again
    with srv.client(None) as anon:  # the package whose bytes are intact is still served
        r = anon.get(f"/api/repo/s3-check/{PACKAGES[2]}", follow_redirects=True)
        assert r.status_code == 200 and r.content == datas[2]


def test_moving_a_local_server_to_s3(tmp_path: Path, s3: S3Server, packages_dir: Path) -> None:
    from condavault.maintenance.check import run_check

    bucket = s3.new_bucket()
    data_dir = tmp_path / "data"
    srv, _ = start_server(data_dir, "sqlite")
    try:
        srv.channel("moving")
        for p in PACKAGES[:2]:
            assert srv.upload("moving", packages_dir / p).status_code == 200
        srv.ctx.settle()
        local = set(srv.ctx.blobs.iter_hashes())
    finally:
        stop_server(srv, None)
    env = _env(**{**s3.settings(bucket, s3_prefix="moved/"), "blob_store": "local"})
    first = _cli(["blobs", "copy", "--to", "s3", "--json", "--data-dir", str(data_dir)], env)
    assert first.returncode == 0, first.stderr
    counts = json.loads(first.stdout)
    assert counts["copied"] == len(local) and counts["already_there"] == 0 and counts["damaged"] == 0
    assert {k.removeprefix("moved/").rsplit("/", 1)[-1] for k in s3.keys(bucket)} == local
    again = json.loads(_cli(["blobs", "copy", "--json", "--data-dir", str(data_dir)], env).stdout)
    assert again["copied"] == 0 and again["already_there"] == len(local)
    assert all((data_dir / "blobs" / h[:2] / h[2:4] / h).is_file() for h in local)  # the folder is left alone
    # the same database on the bucket: everything served, nothing missing
    moved, _ = start_server(data_dir, "sqlite", **s3.settings(bucket, s3_prefix="moved/"))
    try:
        assert run_check(moved.settings, progress=False)["problems"] == 0
        with moved.client(None) as anon:
            r = anon.get(f"/api/repo/moving/{PACKAGES[0]}")
            assert r.status_code == 307
            assert httpx.get(r.headers["location"]).content == (packages_dir / PACKAGES[0]).read_bytes()
    finally:
        stop_server(moved, None)
    bad = _cli(["blobs", "copy", "--data-dir", str(data_dir)], _env())
    assert bad.returncode == 1 and "s3_bucket" in bad.stderr
