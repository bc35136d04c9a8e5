"""Put the files of a labelled set (``benchmarks/vulns_labels.json``) on a server: ``package`` entries as tiny
real ``.conda`` builds uploaded through the ingest path, ``record`` entries as metadata-only imports."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.support.packages import make_conda
from tests.support.server import Server

LABELS = Path(__file__).resolve().parents[2] / "benchmarks" / "vulns_labels.json"


def materialise(server: Server, workdir: Path, labels: Path = LABELS) -> dict[str, Any]:
    """Create the labelled files on ``server``; returns the labelled set."""
    doc = json.loads(labels.read_text())
    channels = sorted({f["file"].split("/", 1)[0] for f in doc["files"]})
    with server.client() as c:
        for channel in channels:
            if c.get(f"/api/channels/{channel}").status_code == 404:
                server.channel(channel)
        imports: dict[tuple[str, str], dict[str, Any]] = {}
        uploads: list[tuple[str, Path]] = []
        for f in doc["files"]:
            channel, subdir, filename = f["file"].split("/")
            if f["kind"] == "record":
                rec = {"name": f["name"], "version": f["version"], "build": f["build"], "build_number": 0,
                       "depends": [], "subdir": subdir}  # fmt: skip
                imports.setdefault((channel, subdir), {})[filename] = rec
                continue
            workdir.mkdir(parents=True, exist_ok=True)
            path = make_conda(workdir, f["name"], f["version"], f["build"], subdir, filename=filename)
            uploads.append((channel, path))

        def upload(item: tuple[str, Path]) -> None:
            r = server.upload(*item)
            assert r.status_code == 200, r.text

        with ThreadPoolExecutor(4) as pool:  # like several clients uploading at once
            list(pool.map(upload, uploads))
        for (channel, subdir), records in imports.items():
            r = c.post(f"/api/channels/{channel}/subdirs/{subdir}/import", json={"packages": records})
            assert r.status_code == 200, r.text
        r = c.post("/api/cves/sweep")
        assert r.status_code == 200, r.text
    return doc  # type: ignore[no-any-return]
