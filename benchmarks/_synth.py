"""Synthetic conda packages for benchmarks: tiny (or deliberately big) but valid ``.conda`` files.

A ``.conda`` (CEP 35) is a zip, stored without compression, holding ``metadata.json``,
``info-<stem>.tar.zst`` (``info/index.json``, ``info/paths.json``, ``info/about.json``) and
``pkg-<stem>.tar.zst`` (the payload). The shapes follow the real packages in shared/testdata.

    make_conda(path, name, version, build, subdir, depends=[], payload_bytes=0) -> record dict

returns the repodata record of the file written (index.json fields + md5, sha256, size), so a
benchmark can seed a server metadata-only with exactly the records of the files it put on disk.
``conda_bytes(...)`` is the same without touching the disk.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import zstandard

_ARCH = {
    "linux-64": ("linux", "x86_64"),
    "linux-aarch64": ("linux", "aarch64"),
    "osx-64": ("osx", "x86_64"),
    "osx-arm64": ("osx", "arm64"),
    "win-64": ("win", "x86_64"),
}
_ZSTD = zstandard.ZstdCompressor(level=1)
_ZSTD_FAST = zstandard.ZstdCompressor(level=-1)  # for big incompressible payloads
_MTIME = 1_700_000_000


def _tar(members: Iterable[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = _MTIME
            ti.mode = 0o644
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


_EMPTY_PKG = _ZSTD.compress(_tar([]))


def index_json(
    name: str, version: str, build: str, subdir: str, depends: list[str] | None = None, build_number: int | None = None
) -> dict[str, Any]:
    if build_number is None:
        tail = build.rsplit("_", 1)[-1]
        build_number = int(tail) if tail.isdigit() else 0
    idx: dict[str, Any] = {
        "build": build,
        "build_number": build_number,
        "depends": list(depends or []),
        "license": "BSD-3-Clause",
        "name": name,
        "subdir": subdir,
        "timestamp": 1_700_000_000_000,
        "version": version,
    }
    if subdir == "noarch":
        idx["noarch"] = "generic"
    elif subdir in _ARCH:
        idx["platform"], idx["arch"] = _ARCH[subdir]
    return idx


def conda_bytes(
    name: str,
    version: str,
    build: str,
    subdir: str,
    depends: list[str] | None = None,
    payload_bytes: int = 0,
    *,
    build_number: int | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """The bytes of a valid ``.conda`` and its index.json dict."""
    stem = f"{name}-{version}-{build}"
    idx = index_json(name, version, build, subdir, depends, build_number)
    payload_name = f"share/{name}/data.bin"
    paths = {
        "paths": [{"_path": payload_name, "path_type": "hardlink", "sha256": "", "size_in_bytes": payload_bytes}]
        if payload_bytes
        else [],
        "paths_version": 1,
    }
    about = {"home": f"https://example.invalid/{name}", "license": "BSD-3-Clause", "summary": f"synthetic {name}"}
    info = _tar(
        [
            ("info/index.json", json.dumps(idx, indent=2, sort_keys=True).encode()),
            ("info/paths.json", json.dumps(paths, indent=2).encode()),
            ("info/about.json", json.dumps(about, indent=2).encode()),
        ]
    )
    # an incompressible payload: zstd stores it (ratio ~1), so the archive is ~payload_bytes on disk
    pkg = _ZSTD_FAST.compress(_tar([(payload_name, os.urandom(payload_bytes))])) if payload_bytes else _EMPTY_PKG
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("metadata.json", b'{"conda_pkg_format_version": 2}')
        zf.writestr(f"pkg-{stem}.tar.zst", pkg)
        zf.writestr(f"info-{stem}.tar.zst", _ZSTD.compress(info))
    return buf.getvalue(), idx


def record_of(data: bytes, idx: dict[str, Any]) -> dict[str, Any]:
    """The repodata record a conforming indexer publishes for these bytes."""
    rec = {k: v for k, v in idx.items() if k not in ("arch", "platform")}
    rec.update(md5=hashlib.md5(data).hexdigest(), sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    return rec


def make_conda(
    path: str | os.PathLike[str],
    name: str,
    version: str,
    build: str,
    subdir: str,
    depends: list[str] | None = None,
    payload_bytes: int = 0,
    *,
    build_number: int | None = None,
) -> dict[str, Any]:
    """Write ``<path>`` (a directory, or the full ``.conda`` file path) and return its repodata record."""
    p = Path(path)
    fn = f"{name}-{version}-{build}.conda"
    if p.is_dir() or not p.name.endswith(".conda"):
        p.mkdir(parents=True, exist_ok=True)
        p = p / fn
    data, idx = conda_bytes(name, version, build, subdir, depends, payload_bytes, build_number=build_number)
    p.write_bytes(data)
    rec = record_of(data, idx)
    rec["fn"] = p.name
    return rec


def synth_names(n_records: int, per_name: int = 20) -> list[tuple[str, str, str, list[str]]]:
    """A channel's worth of (name, version, build, depends): ~``per_name`` builds per package name,
    depending on a few earlier names, like conda-forge's linux-64 (about 20 records per name)."""
    out = []
    n_names = max(1, n_records // per_name)
    for i in range(n_records):
        k = i % n_names
        j = i // n_names
        name = f"pkg{k:05d}"
        version = f"{1 + j // 4}.{j % 4}.0"
        build = f"h{(k * 7919 + j) % 10**7:07x}_{j % 3}"
        deps = [f"pkg{(k * 31 + d) % n_names:05d} >={d}.0" for d in range(1, 1 + k % 4)]
        if k % 5 == 0:
            deps.append("libgcc-ng >=12")
        out.append((name, version, build, deps))
    return out


if __name__ == "__main__":  # quick self-check: write one and time 1,000
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        print(make_conda(d, "demo", "1.0", "h0_0", "linux-64", ["python >=3.10"]))
        t = time.perf_counter()
        for name, version, build, deps in synth_names(1000):
            make_conda(d, name, version, build, "linux-64", deps)
        print(f"1000 packages in {time.perf_counter() - t:.2f} s", file=sys.stderr)
