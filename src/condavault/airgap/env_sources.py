"""What an environment bundle's solve reads: each channel's repodata as a file (the published index when it
is current, else built from the records table) and the virtual packages assumed on the target machine."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from condavault.channels.models import Record
from condavault.errors import InvalidRequest
from condavault.indexing import builder
from condavault.indexing.models import PublishedFile, SubdirState
from condavault.serving.decompressed import copy_json
from condavault.storage.interfaces import BlobStore

CHUNK = 1024 * 1024
# the virtual packages a target machine is assumed to have, per platform family (``--virtual-package``
# overrides one by name); conservative versions so that most builds qualify
DEFAULT_VIRTUAL_PACKAGES: dict[str, list[str]] = {
    "linux": ["__unix=0=0", "__linux=5.10=0", "__glibc=2.28=0"],
    "osx": ["__unix=0=0", "__osx=11.0=0"],
    "win": ["__win=0=0"],
}
ARCHSPEC = {
    "64": "x86_64",
    "aarch64": "aarch64",
    "arm64": "arm64",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
    "32": "x86",
    "armv7l": "armv7l",
    "riscv64": "riscv64",
}


def virtual_string(v: Any) -> str:
    return f"{v.name.normalized}={v.version}={v.build_string}"


def repodata_file(s: Session, blobs: BlobStore | None, channel_id: int, subdir: str, path: Path) -> Path:
    """``path`` holding the subdir's repodata for the solver: its published repodata when that is current
    (a hard link: it stays readable if a newer index replaces the blob meanwhile), else repodata built from
    the records table."""
    path.parent.mkdir(parents=True, exist_ok=True)
    found = _current_repodata_blob(s, channel_id, subdir) if blobs is not None else None
    if found is not None and found[1] is not None and blobs is not None:  # served from its .zst blob
        try:
            copy_json(blobs, found[1], path)
            return path
        except FileNotFoundError:
            pass  # collected since: build it from the rows
    elif found is not None and blobs is not None:
        published = found[0]
        local = blobs.local_path(published)
        try:
            if local is None:  # a remote store: a copy
                with blobs.open(published) as src, open(path, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
                return path
            os.link(local, path)
            return path
        except FileNotFoundError:
            pass  # collected since: build it from the rows
        except OSError:  # another file system: a copy
            try:
                shutil.copyfile(local, path)  # type: ignore[arg-type]
                return path
            except FileNotFoundError:
                pass
    path.write_bytes(_repodata_from_rows(s, channel_id, subdir))
    return path


def _current_repodata_blob(s: Session, channel_id: int, subdir: str) -> tuple[str, str | None] | None:
    """The published ``repodata.json``'s (sha256, source) when it is current."""
    state = s.execute(
        select(SubdirState.change_seq, SubdirState.indexed_seq).where(
            SubdirState.channel_id == channel_id, SubdirState.subdir == subdir
        )
    ).first()
    if state is None or state.indexed_seq < state.change_seq:
        return None
    row = s.execute(
        select(PublishedFile.sha256, PublishedFile.source_sha256).where(
            PublishedFile.channel_id == channel_id,
            PublishedFile.subdir == subdir,
            PublishedFile.path == "repodata.json",
        )
    ).first()
    return (row[0], row[1]) if row is not None else None


def match_spec(spec: str) -> Any:
    import rattler

    try:
        return rattler.MatchSpec(spec)
    except Exception as exc:
        raise InvalidRequest(f"invalid spec {spec!r}: {str(exc).strip()[:500]}", code="invalid_spec") from None


def virtual_packages(platform: str, overrides: Sequence[str]) -> list[Any]:
    """The virtual packages assumed on the target: the platform's defaults, each ``NAME=VERSION[=BUILD]`` of
    ``overrides`` replacing the default of the same name (``NAME=`` removes it)."""
    import rattler

    family, _, arch = platform.partition("-")
    wanted: dict[str, str] = {}
    for item in [*DEFAULT_VIRTUAL_PACKAGES.get(family, []), f"__archspec=1={ARCHSPEC.get(arch, arch)}"]:
        wanted[item.split("=", 1)[0]] = item
    for item in overrides:
        name, sep, rest = item.partition("=")
        if not name.startswith("__") or not sep:
            raise InvalidRequest(
                f"--virtual-package wants NAME=VERSION[=BUILD] with NAME starting with __: {item!r}",
                code="invalid_virtual_package",
            )
        if rest:
            wanted[name] = item
        else:
            wanted.pop(name, None)
    out = []
    for item in wanted.values():
        name, version, *build = item.split("=")
        try:
            out.append(
                rattler.GenericVirtualPackage(
                    rattler.PackageName(name),
                    rattler.Version(version),
                    rattler.BuildString(build[0] if build and build[0] else "0"),
                )
            )
        except Exception as exc:
            raise InvalidRequest(f"invalid virtual package {item!r}: {exc}", code="invalid_virtual_package") from None
    return out


def _repodata_from_rows(s: Session, channel_id: int, subdir: str) -> bytes:
    """The subdir's repodata as served, built from the records table (the index may lag behind it)."""
    q = (
        select(Record.filename, Record.name, Record.fragment, Record.removed, Record.run_exports)
        .where(Record.channel_id == channel_id, Record.subdir == subdir, Record.removed.is_(False))
        .order_by(Record.name)
        .execution_options(yield_per=2000)
    )
    rows: dict[str, list[builder.RecordRow]] = {}
    for r in s.execute(q):
        rows.setdefault(r.name, []).append(builder.RecordRow(*r))
    return builder.compose_repodata(subdir, {n: builder.build_segment(rs) for n, rs in rows.items()})
