"""Several condavault processes on one database, behind a real nginx: two ``serve --no-worker`` web
processes, ``condavault worker`` processes, and nginx in front of the web processes (docs/operations.md,
"Several processes and machines"). They share the data folder (blobs are local files in this version)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support.nginx import BLOB_PREFIX, Nginx, start_nginx
from tests.support.serve_process import ServeProcess, start_serve, start_worker
from tests.support.server import create_pg_database, drop_pg_database, free_port


@dataclass
class Cluster:
    root: Path
    db_url: str | None
    pg_name: str | None
    settings: dict[str, Any]
    webs: list[ServeProcess] = field(default_factory=list)
    workers: list[ServeProcess] = field(default_factory=list)
    nginx: Nginx | None = None
    python_path: str | None = None  # the condavault code new processes run (None: this checkout)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def url(self) -> str:
        assert self.nginx is not None
        return self.nginx.url

    @property
    def token(self) -> str:
        return (self.data_dir / "admin-token").read_text().strip()

    def client(self, token: str | None = "admin", base: str | None = None) -> httpx.Client:
        tok = self.token if token == "admin" else token
        return httpx.Client(
            base_url=base or self.url, headers={"Authorization": f"Bearer {tok}"} if tok else {}, timeout=60
        )

    def start_web(self, i: int, port: int | None = None) -> ServeProcess:
        web = start_serve(
            self.data_dir,
            db_url=self.db_url,
            port=port,
            args=("--no-worker",),
            name=f"web{i}",
            python_path=self.python_path,
            **self.settings,
        )
        if i < len(self.webs):
            self.webs[i] = web
        else:
            self.webs.append(web)
        return web

    def start_worker(self, i: int, **extra: Any) -> ServeProcess:
        """Start worker ``i`` (``extra``: settings of this worker only, e.g. ``node_name``)."""
        w = start_worker(
            self.data_dir, self.db_url, name=f"worker{i}", python_path=self.python_path, **{**self.settings, **extra}
        )
        if i < len(self.workers):
            self.workers[i] = w
        else:
            self.workers.append(w)
        return w

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        for p in [*self.workers, *self.webs]:
            with contextlib.suppress(Exception):
                p.stop()
        if self.pg_name:
            drop_pg_database(self.pg_name)


def start_cluster(
    root: Path, backend: str, *, webs: int = 2, workers: int = 1, python_path: str | None = None, **settings: Any
) -> Cluster:
    """``webs`` web processes and ``workers`` workers on a new database of ``backend``, nginx in front.
    ``python_path``: run that condavault code (another version's ``src``) instead of this checkout's."""
    db_url, pg_name = (None, None) if backend == "sqlite" else create_pg_database()
    nginx_port = free_port()
    base = {
        "x_accel_redirect_prefix": BLOB_PREFIX,  # nginx sends the bytes of packages and index files
        "forwarded_allow_ips": ["127.0.0.1"],
        "public_url": f"http://127.0.0.1:{nginx_port}",
        "job_lease_seconds": 5,
        "upstream_allow_loopback": True,  # the tests' upstreams listen on loopback
    }
    cluster = Cluster(root, db_url, pg_name, {**base, **settings}, python_path=python_path)
    try:
        for i in range(webs):  # one at a time: the first creates the schema and the admin token
            cluster.start_web(i)
        for i in range(workers):
            cluster.start_worker(i)
        cluster.nginx = start_nginx(
            root / "nginx", [w.port for w in cluster.webs], cluster.data_dir / "blobs", port=nginx_port
        )
    except Exception:
        cluster.stop()
        raise
    return cluster
