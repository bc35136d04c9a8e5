"""A real S3 API for the tests: moto's standalone server (``python -m moto.server``) on a free port.

One process per test session (see the ``s3`` fixture in ``tests/conftest.py``); each test makes its own
bucket with :meth:`S3Server.new_bucket`, so tests never see each other's objects.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.server import free_port

ACCESS_KEY = "testing-key"
SECRET_KEY = "testing-secret"
REGION = "us-east-1"


@dataclass
class S3Server:
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}),
        )

    def new_bucket(self) -> str:
        name = f"cv-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        out: list[str] = []
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket):
            out.extend(o["Key"] for o in page.get("Contents", []))
        return out

    def settings(self, bucket: str, **extra: Any) -> dict[str, Any]:
        """``CONDAVAULT_*`` settings (lower-case names) of a server using ``bucket``."""
        return {
            "blob_store": "s3",
            "s3_endpoint_url": self.url,
            "s3_bucket": bucket,
            "s3_region": REGION,
            "s3_access_key_id": ACCESS_KEY,
            "s3_secret_access_key": SECRET_KEY,
            **extra,
        }

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_s3(folder: Path) -> S3Server:
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "moto.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CONDAVAULT_"))}
    log = open(log_path, "wb")  # noqa: SIM115 - the child writes it for its whole life
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    handle = S3Server(port, proc, log_path)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited: {log_path.read_text()[-2000:]}")
        try:
            httpx.get(f"{handle.url}/moto-api/", timeout=2)
            return handle
        except httpx.HTTPError:
            time.sleep(0.1)
    handle.stop()
    raise RuntimeError("moto server did not start")
