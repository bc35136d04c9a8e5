"""Debian's real nginx in front of condavault web processes, started by the tests as the test user.

The configuration is the one docs/operations.md documents ("Behind nginx"): an upstream of the web
processes (a refused or broken connection goes to the next one: ``proxy_next_upstream``), the internal
``X-Accel-Redirect`` location aliasing the blob folder, forwarded headers. Its pid file, logs and temp
folders live in the test's folder. ``scripts/install-test-services`` installs nginx.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.server import free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
BLOB_PREFIX = "/_condavault_blobs"


def nginx_config(
    root: Path,
    port: int,
    upstreams: list[int],
    blob_dir: Path,
    *,
    workers: int = 1,
    access_log: bool = True,
    static_file: Path | None = None,
) -> str:
    """The nginx.conf of docs/operations.md, with the test's ports and folders. ``static_file``: also serve
    that file at ``/static/<name>`` (the benchmark's reference: nginx alone answering 304s)."""
    user = "user root root;\n" if os.geteuid() == 0 else ""  # workers must read the (0700) blob folder
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=0;" for p in upstreams)
    temp = "\n".join(f"    {k}_temp_path {root}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    static = ""
    if static_file is not None:
        static = f"""
        location = /static/{static_file.name} {{
            alias {static_file};
            etag on;
        }}"""
    log = f"{root}/access.log" if access_log else "off"
    return f"""{user}worker_processes {workers};
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
{temp}
    access_log {log};
    sendfile on;
    tcp_nopush on;
    default_type application/octet-stream;
    upstream condavault {{
{servers}
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;            # condavault enforces max_upload_bytes itself
        proxy_request_buffering off;       # uploads stream through
        location / {{
            proxy_pass http://condavault;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            # a web process that is restarting refuses connections or closes its idle ones: retry the other
            proxy_next_upstream error timeout http_502 http_503;
            proxy_next_upstream_tries 3;
            proxy_connect_timeout 2s;
            proxy_read_timeout 300s;
        }}
        location {BLOB_PREFIX}/ {{
            internal;
            alias {blob_dir}/;
        }}{static}
    }}
}}
"""


@dataclass
class Nginx:
    root: Path
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def access_log(self) -> str:
        path = self.root / "access.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def error_log(self) -> str:
        path = self.root / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # fast shutdown
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_nginx(root: Path, upstreams: list[int], blob_dir: Path, port: int | None = None, **kw: object) -> Nginx:
    """Write the configuration under ``root``, check it (``nginx -t``) and start nginx on ``port`` (or a
    free one)."""
    if not os.path.exists(NGINX):
        raise RuntimeError("nginx is not installed: run scripts/install-test-services")
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    conf = root / "nginx.conf"
    conf.write_text(nginx_config(root, port, upstreams, blob_dir, **kw))  # type: ignore[arg-type]
    args = [NGINX, "-p", str(root), "-c", str(conf), "-e", str(root / "error.log")]
    checked = subprocess.run([*args, "-t"], capture_output=True, text=True)
    if checked.returncode != 0:
        raise RuntimeError(f"nginx -t failed: {checked.stderr}")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    handle = Nginx(root, port, proc)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nginx exited: {handle.error_log()}")
        try:
            httpx.get(f"{handle.url}/healthz", timeout=2)
            return handle
        except httpx.HTTPError:
            time.sleep(0.05)
    handle.stop()
    raise RuntimeError("nginx did not start")
