"""Several processes behind a real nginx: two ``condavault serve --no-worker`` and a ``condavault worker``
on one database (SQLite and PostgreSQL), Debian's nginx in front (the configuration of docs/operations.md).

* an upload through web process 0, a py-rattler install through nginx; nginx sends the package bytes
  (``X-Accel-Redirect``: the web processes answer with headers only);
* a change made through web process 0 -- a revoked token, a channel made private, a removed package -- is
  seen by web process 1 (PostgreSQL: LISTEN/NOTIFY, and web 1 counts the messages it applied; SQLite:
  0.5 s cache lifetimes). The latency is measured by ``benchmarks/bench_scaleout.py``, not asserted here;
* ``kill -9`` of the worker (``node_name`` machine-a) in the middle of a mirror run: a worker of another
  machine (machine-b) takes the job over once its lease expired and a new run completes it; no file that
  was already stored is fetched from the upstream twice; the index lists exactly the channel's files.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.accounts import ok
from tests.support.cluster import Cluster, start_cluster
from tests.support.static_channel import StaticChannel, build_channel

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]
PACKAGES = [f"noarch/{n}-{v}-0.conda" for n in ("dependency", "dependent", "another_dependent") for v in ("1.0", "2.0")]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, db_backend: str) -> Iterator[Cluster]:
    c = start_cluster(tmp_path_factory.mktemp(f"cluster-{db_backend}"), db_backend, workers=0, mirror_concurrency=2)
    try:
        c.start_worker(0, node_name="machine-a")  # as if on machines of their own: leases must expire
        yield c
    finally:
        c.stop()


def _poll(fn: Any, timeout: float = 5.0) -> float:
    """Call ``fn`` until it returns true; returns the seconds it took (fails after ``timeout``)."""
    t0 = time.monotonic()
    while not fn():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not seen within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - t0


def test_upload_through_one_install_through_nginx(cluster: Cluster, packages_dir: Path, tmp_path: Path) -> None:
    web0, web1 = cluster.webs
    with cluster.client(base=web0.url) as c:
        ok(c.post("/api/channels", json={"name": "scale", "privacy": "public"}))
        for p in PACKAGES:
            r = c.post(
                "/api/channels/scale/files", params={"filename": Path(p).name}, content=(packages_dir / p).read_bytes()
            )
            assert r.status_code in (200, 201), r.text
    args = [
        sys.executable,
        "-m",
        "tests.support.rattler_client",
        f"{cluster.url}/api/repo/scale",
        str(tmp_path),
        "another_dependent",
    ]
    proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=180)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "error" not in out, (out, proc.stderr)
    assert {n.rsplit("-", 2)[0] for n in out["installed"]} == {"another_dependent", "dependent", "dependency"}
    assert any(n.startswith("another_dependent-2.0") for n in out["installed"])

    # nginx sent the bytes: the web process answers a download with X-Accel-Redirect and no body
    name = "another_dependent-2.0-0.conda"
    want = hashlib.sha256((packages_dir / "noarch" / name).read_bytes()).hexdigest()
    with cluster.client(None, base=web1.url) as direct:
        r = direct.get(f"/api/repo/scale/noarch/{name}")
        assert r.status_code == 200 and r.content == b""
        assert r.headers["x-accel-redirect"] == f"/_condavault_blobs/{want[:2]}/{want[2:4]}/{want}"
    with cluster.client(None) as c:
        r = c.get(f"/api/repo/scale/noarch/{name}")
        assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == want
        assert "x-accel-redirect" not in r.headers
        first = c.get("/api/repo/scale/noarch/repodata.json")
        assert first.status_code == 200 and name in first.json()["packages.conda"]
        again = c.get("/api/repo/scale/noarch/repodata.json", headers={"If-None-Match": first.headers["etag"]})
        assert again.status_code == 304
    assert f"GET /api/repo/scale/noarch/{name}" in cluster.nginx.access_log()  # type: ignore[union-attr]


def _received(cluster: Cluster, web: int) -> float:
    with cluster.client(base=cluster.webs[web].url) as c:
        text = c.get("/metrics").text
    lines = [ln for ln in text.splitlines() if ln.startswith("condavault_cache_invalidations_received_total")]
    return float(lines[0].split()[-1])


def test_changes_through_one_process_are_seen_by_the_other(
    cluster: Cluster, packages_dir: Path, db_backend: str
) -> None:
    web0, web1 = cluster.webs
    received = _received(cluster, 1)
    with cluster.client(base=web0.url) as admin0:
        ok(admin0.post("/api/users", json={"username": "scale-user"}))
        r = admin0.post("/api/tokens", json={"user": "scale-user", "scopes": [{"scope": "read"}]})
        ok(r)
        token, token_id = r.json()["token"], r.json()["id"]
        ok(admin0.post("/api/channels", json={"name": "scale-inv", "privacy": "public"}))
        pkg = packages_dir / "noarch" / "dependency-1.0-0.conda"
        r = admin0.post("/api/channels/scale-inv/files", params={"filename": pkg.name}, content=pkg.read_bytes())
        assert r.status_code in (200, 201), r.text

    with cluster.client(token, base=web1.url) as user1, cluster.client(None, base=web1.url) as anon1:
        assert user1.get("/api/whoami").status_code == 200  # cached in web 1 now
        assert anon1.get("/api/repo/scale-inv/noarch/repodata.json").status_code == 200
        assert anon1.get(f"/api/repo/scale-inv/noarch/{pkg.name}").status_code == 200
        with cluster.client(base=web0.url) as admin0:
            ok(admin0.delete(f"/api/tokens/{token_id}"))
            _poll(lambda: user1.get("/api/whoami").status_code == 401)
            ok(admin0.patch("/api/channels/scale-inv", json={"privacy": "private"}))
            _poll(lambda: anon1.get("/api/repo/scale-inv/noarch/repodata.json").status_code in (401, 404))
            ok(admin0.patch("/api/channels/scale-inv", json={"privacy": "public"}))
            _poll(lambda: anon1.get("/api/repo/scale-inv/noarch/repodata.json").status_code == 200)
            ok(admin0.post("/api/channels/scale-inv/files/remove", json={"files": [f"noarch/{pkg.name}"]}))
            _poll(lambda: anon1.get(f"/api/repo/scale-inv/noarch/{pkg.name}").status_code == 404)
            _poll(lambda: pkg.name not in anon1.get("/api/repo/scale-inv/noarch/repodata.json").text)
    if db_backend == "postgresql":  # web 1 was told, it did not just wait for its caches to expire
        assert _received(cluster, 1) >= received + 4


@pytest.fixture(scope="module")
def upstream(packages_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StaticChannel]:
    root = build_channel(packages_dir, tmp_path_factory.mktemp("upstream"), subdirs=("linux-64", "noarch"))
    with StaticChannel(root) as chan:
        yield chan


def test_kill_9_of_the_worker_mid_mirror_run(cluster: Cluster, upstream: StaticChannel) -> None:
    name = f"scale-mirror-{len(cluster.workers)}"
    with cluster.client(base=cluster.webs[0].url) as c:
        ok(c.post("/api/channels", json={"name": name, "privacy": "public"}))
        ok(
            c.post(
                "/api/mirrors",
                json={
                    "name": name,
                    "upstream": upstream.url,
                    "channel": name,
                    "subdirs": ["linux-64", "noarch"],
                    "filters": {"only_specs": ["clobber*"]},
                },
            )
        )
        before = dict(upstream.hits)
        upstream.default_delay = 0.3
        try:
            r = c.post(f"/api/mirrors/{name}/runs")
            assert r.status_code == 202, r.text
            victim = cluster.workers[-1]
            _poll(lambda: len(c.get(f"/api/channels/{name}/files").json()) >= 3, timeout=90)
            victim.proc.kill()  # SIGKILL: no cleanup of any kind
            victim.proc.wait(timeout=30)
            stored = {f["filename"] for f in c.get(f"/api/channels/{name}/files").json()}
            assert 3 <= len(stored) < 29
            runs = c.get(f"/api/mirrors/{name}/runs").json()
            assert [r["status"] for r in runs] == ["running"], runs
        finally:
            upstream.default_delay = 0.0
        # a worker on another machine takes the job over once its lease (job_lease_seconds=5) expired
        taker = cluster.start_worker(len(cluster.workers), node_name="machine-b")

        def finished() -> bool:
            runs = c.get(f"/api/mirrors/{name}/runs").json()
            return len(runs) == 2 and runs[0]["status"] in ("completed", "failed", "cancelled")

        _poll(finished, timeout=120)
        runs = c.get(f"/api/mirrors/{name}/runs").json()
        assert [r["status"] for r in runs] == ["completed", "failed"], runs
        assert f"resumed by run {runs[0]['id']}" in runs[1]["error"]

        def job() -> dict[str, Any]:
            jobs = c.get("/api/jobs", params={"kind": "mirror.run"}).json()
            (j,) = [j for j in jobs if j["params"].get("run_id") == runs[1]["id"]]
            return j  # type: ignore[no-any-return]

        _poll(lambda: job()["state"] != "running", timeout=30)  # the job ends just after its run
        assert job()["state"] == "succeeded" and job()["attempts"] == 2, job()
        assert job()["worker"].startswith("machine-b:") and job()["heartbeat_at"] is not None
        assert "job of a stopped worker taken back" in taker.log_text()
        files = c.get(f"/api/channels/{name}/files").json()
    fetched = {p.rsplit("/", 1)[-1]: n - before.get(p, 0) for p, n in upstream.hits.items()}
    assert all(fetched[f] == 1 for f in stored), fetched  # nothing already stored was downloaded again
    assert all(fetched[f["filename"]] >= 1 for f in files)
    assert len(files) == 29
    # the index lists exactly the channel's files, and nginx serves each of them intact
    with cluster.client(None) as anon:
        listed: dict[str, str] = {}
        for subdir in ("linux-64", "noarch"):
            body = anon.get(f"/api/repo/{name}/{subdir}/repodata.json").json()
            for fn, rec in {**body["packages"], **body["packages.conda"]}.items():
                listed[f"{subdir}/{fn}"] = rec["sha256"]
        assert listed == {f"{f['subdir']}/{f['filename']}": f["sha256"] for f in files}
        for path, sha in listed.items():
            r = anon.get(f"/api/repo/{name}/{path}")
            assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == sha, path


def test_the_listener_reconnects_after_its_connection_is_killed(cluster: Cluster, db_backend: str) -> None:
    if db_backend != "postgresql":
        pytest.skip("LISTEN/NOTIFY is PostgreSQL's; on SQLite the caches live 0.5 s (tested above)")
    import psycopg

    from tests.support.server import PG_ADMIN

    db = cluster.pg_name

    def listeners() -> set[int]:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'condavault-listen'"
                " AND query LIKE 'LISTEN %%'",  # its last statement: it listens
                (db,),
            ).fetchall()
        return {int(r[0]) for r in rows}

    alive = sum(p.proc.poll() is None for p in cluster.webs + cluster.workers)
    old = listeners()
    assert len(old) == alive  # one per process
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (sorted(old),))
    _poll(lambda: len(new := listeners()) == alive and not new & old, timeout=30)  # all connected again
    received = _received(cluster, 1)
    with cluster.client(base=cluster.webs[0].url) as admin0:
        ok(admin0.post("/api/users", json={"username": "scale-user-2"}))
        r = admin0.post("/api/tokens", json={"user": "scale-user-2", "scopes": [{"scope": "read"}]})
        ok(r)
        ok(admin0.delete(f"/api/tokens/{r.json()['id']}"))
    _poll(lambda: _received(cluster, 1) > received)  # delivered on the new connection
    web1 = cluster.webs[1].log_text()
    assert "cache listener lost its database connection; reconnecting" in web1
