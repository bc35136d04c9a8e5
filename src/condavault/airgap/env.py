"""Environment bundles: one environment as a self-contained channel folder, for an air-gapped machine.

``condavault bundle env`` runs on the server machine (it reads the database and the blob store directly,
like ``check``) and writes::

    DIR/channel/<platform>/repodata.json   the bundled records of that subdir (patched, as served)
    DIR/channel/noarch/repodata.json       always, even empty (conda needs it)
    DIR/channel/<subdir>/<package files>   copied from storage, each sha256-verified while copied
    DIR/environment-<platform>.txt         explicit spec (@EXPLICIT, file:// URLs with sha256 anchors)
    DIR/environment.yml                    the pinned packages, with the folder as the only channel
    DIR/bundle.json                        what was bundled from where (channels, specs or lockfile)

The packages come from a solve (py-rattler, against the channels' records read from the database: no
HTTP) or from a lockfile (pixi.lock, conda-lock, explicit; see :mod:`condavault.airgap.lockfiles`) whose
every package must be on the server with the same hash. Everything is written into a hidden sibling
folder and renamed to ``DIR`` at the end, so a failed or interrupted run leaves no half-written bundle.

:func:`plan_env_bundle` decides the packages (and fails early with a precise error: unknown channel,
invalid or unsolvable spec, a locked package missing from the server, ...); packages of a passive mirror
whose bytes were never downloaded are fetched from its upstream first (:func:`passive_fetcher`, the same
path as a client's first request). :func:`write_env_bundle` writes the folder.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, tuple_
from sqlalchemy.orm import Session

from condavault.airgap.env_sources import match_spec, repodata_file, virtual_packages, virtual_string
from condavault.airgap.lockfiles import LockedPackage, read_lockfile
from condavault.channels.models import Channel, Record
from condavault.channels.naming import KNOWN_SUBDIRS
from condavault.db.session import Database
from condavault.errors import CondavaultError, Conflict, InvalidRequest, NotFound
from condavault.indexing import builder
from condavault.storage.interfaces import BlobStore

if TYPE_CHECKING:
    from condavault.config import Settings
    from condavault.context import Context

CHUNK = 1024 * 1024
MAX_SPECS = 1000


class BundleBytesMissing(CondavaultError):
    """A package chosen for the bundle has no bytes on this server (a metadata-only record of a passive
    mirror) or its stored bytes do not match its sha256."""

    status = 409
    code = "package_bytes_unavailable"


@dataclass(frozen=True)
class EnvRequest:
    channels: Sequence[str]
    platform: str
    output: Path
    specs: Sequence[str] = ()
    lockfile: Path | None = None
    environment: str = "default"  # of a pixi.lock
    virtual_packages: Sequence[str] = ()
    base_url: str | None = None  # what the environment files call the folder (default: its file:// URL)
    name: str = "bundle"  # environment.yml's name
    explicit_hash: str = "sha256"  # anchor of the explicit file lines: sha256 | md5 (for old conda)


@dataclass(frozen=True)
class Package:
    """One package file of the bundle: where it comes from and the record it is published with."""

    channel: str
    subdir: str
    filename: str
    name: str
    version: str
    build: str
    sha256: str
    md5: str | None
    size: int
    fragment: str  # the patched repodata record, as served
    run_exports: str | None
    has_blob: bool

    def depends(self) -> list[str]:
        try:
            deps = json.loads(self.fragment).get("depends") or []
        except ValueError:  # pragma: no cover - fragments are written by the indexer
            return []
        return [str(d).split()[0] for d in deps if str(d).strip()]


@dataclass
class EnvPlan:
    request: EnvRequest
    packages: list[Package]
    source: str  # "solve" or the lockfile's format
    channels: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(p.size for p in self.packages)


@dataclass(frozen=True)
class EnvBundle:
    output: Path
    packages: list[Package]
    bytes: int
    explicit_file: Path
    environment_file: Path


# -- planning -----------------------------------------------------------------------------------------
def plan_env_bundle(
    db: Database, request: EnvRequest, blobs: BlobStore | None = None, *, fetch: Fetcher | None = None
) -> EnvPlan:
    """The packages of the bundle, or a precise error. Reads the database (and, with ``blobs``, the published
    repodata of subdirs whose index is up to date, instead of building it again from the records). Records
    whose bytes are not on the server (a passive mirror's) are handed to ``fetch`` (see
    :func:`passive_fetcher`), then read again; without it, or if they are still missing, it is an error."""
    _check_request(request)
    source: str = "solve"
    with db.session() as s:
        channels = _channels(s, request.channels)
        if request.lockfile is not None:
            fmt, locked = read_lockfile(request.lockfile, request.platform, request.environment)
            packages, source = _from_lockfile(s, channels, locked), fmt
        else:
            packages = _solve(s, channels, request, blobs)
    missing = [p for p in packages if not p.has_blob or not p.sha256]
    if missing and fetch is not None:
        failures = fetch(missing)
        packages = _reread(db, packages, missing, [name for _, name in channels])
        missing = [p for p in packages if not p.has_blob or not p.sha256]
        if missing:
            why = "; ".join(f"{p.subdir}/{p.filename}: {failures.get(p.filename, 'not fetched')}" for p in missing[:20])
            raise BundleBytesMissing(
                f"{len(missing)} package(s) of the environment could not be downloaded from their mirror's "
                f"upstream: {why}",
                files=[p.filename for p in missing],
            )
    if missing:
        names = ", ".join(f"{p.channel}/{p.subdir}/{p.filename}" for p in missing[:20])
        raise BundleBytesMissing(
            f"{len(missing)} package(s) of the environment have no bytes on this server (metadata-only records "
            f"of a passive mirror): {names}; let the bundle download them (without --no-fetch), or run the mirror in "
            "active mode",
            files=[p.filename for p in missing],
        )
    return EnvPlan(request, topological(packages), source, [name for _, name in channels])


def _check_request(req: EnvRequest) -> None:
    if req.platform not in KNOWN_SUBDIRS or req.platform == "noarch":
        raise InvalidRequest(
            f"unknown platform {req.platform!r}: use a conda subdir such as linux-64, osx-arm64 or win-64",
            code="invalid_platform",
        )
    if not req.channels:
        raise InvalidRequest("give at least one --channel", code="invalid_request")
    if (req.lockfile is None) == (not req.specs):
        raise InvalidRequest("give either --spec (one or more) or --lockfile, not both", code="invalid_request")
    if len(req.specs) > MAX_SPECS:
        raise InvalidRequest(f"at most {MAX_SPECS} specs", code="invalid_spec")
    if req.explicit_hash not in ("sha256", "md5"):
        raise InvalidRequest("--explicit-hash is sha256 or md5", code="invalid_request")
    if req.base_url is not None and (
        not req.base_url.startswith(("file://", "http://", "https://"))
        or any(c.isspace() or c in "#?" or ord(c) < 32 for c in req.base_url)
    ):
        raise InvalidRequest(
            f"--base-url must be a file://, http:// or https:// URL without spaces, '#' or '?': {req.base_url!r}",
            code="invalid_request",
        )
    check_output(req.output)


def check_output(output: Path) -> None:
    """``output`` must not exist yet (or be an empty folder); its parent must be a folder."""
    if output.is_symlink() or (output.exists() and (not output.is_dir() or any(output.iterdir()))):
        raise Conflict(
            f"{output} already exists and is not an empty folder: choose a new --output", code="output_exists"
        )
    parent = output.absolute().parent
    if parent.exists() and not parent.is_dir():
        raise InvalidRequest(f"{parent} is not a folder", code="invalid_output")


def _channels(s: Session, names: Sequence[str]) -> list[tuple[int, str]]:
    out: list[tuple[int, str]] = []
    for name in dict.fromkeys(names):
        cid = s.scalar(select(Channel.id).where(Channel.name == name))
        if cid is None:
            raise NotFound(f"channel {name!r} does not exist on this server", code="channel_not_found", channel=name)
        out.append((cid, name))
    return out


_COLUMNS = (
    Record.subdir,
    Record.filename,
    Record.name,
    Record.version,
    Record.build,
    Record.sha256,
    Record.md5,
    Record.size,
    Record.fragment,
    Record.run_exports,
    Record.has_blob,
)


def _package(channel: str, row: Any) -> Package:
    subdir, filename, name, version, build, sha, md5, size, fragment, run_exports, has_blob = row
    return Package(
        channel,
        subdir,
        filename,
        name,
        version,
        build,
        sha or "",
        md5,
        int(size or 0),
        fragment,
        run_exports,
        bool(has_blob),
    )


def _lookup(
    s: Session, channel_id: int, channel: str, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], Package]:
    """The live (not removed) records of ``keys`` (subdir, filename) in one channel."""
    wanted = sorted(set(keys))
    out: dict[tuple[str, str], Package] = {}
    for i in range(0, len(wanted), 400):
        batch = wanted[i : i + 400]
        q = select(*_COLUMNS).where(
            Record.channel_id == channel_id,
            Record.removed.is_(False),
            tuple_(Record.subdir, Record.filename).in_(batch),
        )
        for row in s.execute(q):
            out[(row[0], row[1])] = _package(channel, row)
    return out


def _from_lockfile(s: Session, channels: list[tuple[int, str]], locked: list[LockedPackage]) -> list[Package]:
    found: dict[tuple[str, str], Package] = {}
    for cid, name in channels:
        rest = [p.key for p in locked if p.key not in found]
        if not rest:
            break
        for key, pkg in _lookup(s, cid, name, rest).items():
            found.setdefault(key, pkg)
    missing = [p for p in locked if p.key not in found]
    if missing:
        shown = ", ".join(f"{p.subdir}/{p.filename}" for p in missing[:20])
        more = f" and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise NotFound(
            f"{len(missing)} package(s) of the lockfile are not in channel(s) {', '.join(n for _, n in channels)}: "
            f"{shown}{more}",
            code="package_not_found",
            files=[f"{p.subdir}/{p.filename}" for p in missing],
        )
    out: list[Package] = []
    for p in locked:
        pkg = found[p.key]
        if (p.sha256 and pkg.sha256 and p.sha256 != pkg.sha256) or (
            not p.sha256 and p.md5 and pkg.md5 and p.md5 != pkg.md5
        ):
            raise Conflict(
                f"{p.subdir}/{p.filename} in channel {pkg.channel} is not the file the lockfile pins (its hash "
                "differs): it was rebuilt under the same name; re-lock against this server",
                code="hash_mismatch",
                file=f"{p.subdir}/{p.filename}",
            )
        out.append(pkg)
    return out


# -- bytes of passive mirrors -------------------------------------------------------------------------
Fetcher = Callable[[list["Package"]], dict[str, str]]


def _reread(db: Database, packages: list[Package], changed: list[Package], order: list[str]) -> list[Package]:
    """``packages`` with the records of ``changed`` read again (their bytes may have arrived)."""
    fresh: dict[tuple[str, str, str], Package] = {}
    with db.session() as s:
        for name in order:
            keys = [(p.subdir, p.filename) for p in changed if p.channel == name]
            cid = s.scalar(select(Channel.id).where(Channel.name == name)) if keys else None
            if cid is not None:
                fresh.update({(name, *k): v for k, v in _lookup(s, cid, name, keys).items()})
    return [fresh.get((p.channel, p.subdir, p.filename), p) for p in packages]


def passive_fetcher(settings: Settings, *, concurrency: int = 4) -> Fetcher:
    """Downloads metadata-only records' bytes the way a first client request would (the passive mirror's
    fetcher: from its upstream, verified, stored): ``{filename: error}`` for the ones that failed."""

    def fetch(missing: list[Package]) -> dict[str, str]:
        from condavault.context import Context

        ctx = Context.build(settings, start_jobs=False)
        try:
            return asyncio.run(_fetch_all(ctx, missing, concurrency))
        finally:
            ctx.close()

    return fetch


async def _fetch_all(ctx: Context, missing: list[Package], concurrency: int) -> dict[str, str]:
    from condavault.serving.lookup import Target

    failures: dict[str, str] = {}
    gate = asyncio.Semaphore(concurrency)

    async def one(p: Package) -> None:
        ref = ctx.channels.lookup(p.channel)
        if ref is None:  # pragma: no cover - deleted meanwhile
            failures[p.filename] = "channel deleted"
            return
        target = Target(
            sha256=p.sha256,
            size=p.size,
            content_type="application/octet-stream",
            last_modified=0.0,
            kind="package",
            has_blob=False,
            filename=p.filename,
        )
        async with gate:
            try:
                await ctx.fetch_missing(ref, p.subdir, target)
            except CondavaultError as exc:
                failures[p.filename] = exc.message
            except Exception as exc:  # an upstream's odd failure: reported per file, the bundle is not written
                failures[p.filename] = f"{type(exc).__name__}: {exc}"

    await asyncio.gather(*(one(p) for p in missing))
    return failures


# -- solving ------------------------------------------------------------------------------------------
def _solve(s: Session, channels: list[tuple[int, str]], req: EnvRequest, blobs: BlobStore | None) -> list[Package]:
    from condavault.airgap.solver import SolveFailed, solve_in_child

    for spec in req.specs:
        match_spec(spec)
    virtual = [virtual_string(v) for v in virtual_packages(req.platform, req.virtual_packages)]
    subdirs = [req.platform, "noarch"]
    with tempfile.TemporaryDirectory(prefix="condavault-env-") as work:
        sources: list[tuple[str, str, str]] = []
        for i, (cid, _name) in enumerate(channels):
            base = Path(work) / f"c{i}"
            for subdir in subdirs:
                path = repodata_file(s, blobs, cid, subdir, base / subdir / "repodata.json")
                sources.append((base.as_uri() + "/", subdir, str(path)))
        try:
            urls = solve_in_child(list(req.specs), sources, virtual)
        except SolveFailed as exc:
            raise SolveFailed(
                f"cannot solve {', '.join(req.specs)} for {req.platform} from channel(s) "
                f"{', '.join(n for _, n in channels)}: {exc.message[:4000]}"
            ) from None
    picked: dict[int, list[tuple[str, str]]] = {}
    for url in urls:
        parts = url.rstrip("/").split("/")
        picked.setdefault(int(parts[-3][1:]), []).append((parts[-2], parts[-1]))
    out: list[Package] = []
    for index, keys in picked.items():
        cid, name = channels[index]
        found = _lookup(s, cid, name, keys)
        out.extend(found[k] for k in keys)
    return out


def topological(packages: list[Package]) -> list[Package]:
    """Dependencies before their dependents (by name; cycles broken by name order), as explicit files want."""
    by_name: dict[str, list[Package]] = {}
    for p in sorted(packages, key=lambda p: (p.name, p.subdir, p.filename)):
        by_name.setdefault(p.name, []).append(p)
    out: list[Package] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str) -> None:
        stack: list[tuple[str, Iterable[str]]] = [(name, iter(_deps(by_name[name])))]
        state[name] = 1
        while stack:
            current, deps = stack[-1]
            for dep in deps:
                if dep in by_name and dep not in state:
                    state[dep] = 1
                    stack.append((dep, iter(_deps(by_name[dep]))))
                    break
            else:
                stack.pop()
                state[current] = 2
                out.extend(by_name[current])

    for name in by_name:
        if name not in state:
            visit(name)
    return out


def _deps(pkgs: list[Package]) -> list[str]:
    return sorted({d for p in pkgs for d in p.depends()})


# -- writing ------------------------------------------------------------------------------------------
def write_env_bundle(blobs: BlobStore, plan: EnvPlan, *, on_bytes: Callable[[int], None] | None = None) -> EnvBundle:
    """Write the bundle folder (into a hidden sibling, renamed at the end: all or nothing)."""
    req = plan.request
    output = req.output.absolute()
    check_output(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.parent / f".{output.name}.tmp-{secrets.token_hex(4)}"
    staging.mkdir(mode=0o755)
    try:
        subdirs = sorted({req.platform, "noarch", *(p.subdir for p in plan.packages)})
        for subdir in subdirs:
            (staging / "channel" / subdir).mkdir(parents=True)
        for p in plan.packages:
            _copy_verified(blobs, p, staging / "channel" / p.subdir / p.filename, on_bytes)
        for subdir in subdirs:
            rows = [
                builder.RecordRow(p.filename, p.name, p.fragment, False, p.run_exports)
                for p in plan.packages
                if p.subdir == subdir
            ]
            by_name: dict[str, list[builder.RecordRow]] = {}
            for r in rows:
                by_name.setdefault(r.name, []).append(r)
            segments = {n: builder.build_segment(rs) for n, rs in by_name.items()}
            _write(staging / "channel" / subdir / "repodata.json", builder.compose_repodata(subdir, segments))
        base = (req.base_url or output.as_uri()).rstrip("/")
        explicit = staging / f"environment-{req.platform}.txt"
        _write(explicit, explicit_text(plan, base).encode())
        _write(staging / "environment.yml", environment_yml(plan, base).encode())
        _write(staging / "bundle.json", json.dumps(_summary(plan, base), indent=2).encode())
        _fsync_dir(staging)
        if output.exists():
            output.rmdir()  # an empty folder (checked above): replaced by the finished bundle
        os.replace(staging, output)
        _fsync_dir(output.parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return EnvBundle(output, plan.packages, plan.bytes, output / explicit.name, output / "environment.yml")


def _copy_verified(blobs: BlobStore, p: Package, dest: Path, on_bytes: Callable[[int], None] | None) -> None:
    digest = hashlib.sha256()
    n = 0
    try:
        src = blobs.open(p.sha256)
    except FileNotFoundError:
        raise BundleBytesMissing(
            f"the stored bytes of {p.channel}/{p.subdir}/{p.filename} are missing (run `condavault check`)",
            file=p.filename,
        ) from None
    with src, open(dest, "xb") as out:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
            n += len(chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))
        out.flush()
        os.fsync(out.fileno())
    if digest.hexdigest() != p.sha256 or (p.size and n != p.size):
        raise BundleBytesMissing(
            f"the stored bytes of {p.channel}/{p.subdir}/{p.filename} do not match their sha256 (run "
            "`condavault check --repair`)",
            file=p.filename,
        )


def _write(path: Path, data: bytes) -> None:
    with open(path, "xb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def explicit_text(plan: EnvPlan, base: str) -> str:
    req = plan.request
    lines = [
        "# This file may be used to create an environment using:",
        "# $ conda create --name <env> --file <this file>",
        f"# platform: {req.platform}",
        f"# made by condavault bundle env from channel(s) {', '.join(plan.channels)} ({plan.source})",
        "@EXPLICIT",
    ]
    for p in plan.packages:
        anchor = p.sha256 if req.explicit_hash == "sha256" else (p.md5 or p.sha256)
        lines.append(f"{base}/channel/{p.subdir}/{p.filename}#{anchor}")
    return "\n".join(lines) + "\n"


def environment_yml(plan: EnvPlan, base: str) -> str:
    import yaml

    doc = {
        "name": plan.request.name,
        "channels": [f"{base}/channel", "nodefaults"],
        "dependencies": [f"{p.name}={p.version}={p.build}" for p in sorted(plan.packages, key=lambda p: p.name)],
    }
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def _summary(plan: EnvPlan, base: str) -> dict[str, Any]:
    req = plan.request
    return {
        "kind": "condavault-environment-bundle",
        "version": 1,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "platform": req.platform,
        "channels": plan.channels,
        "source": plan.source,
        "specs": list(req.specs),
        "lockfile": req.lockfile.name if req.lockfile else None,
        "base_url": base,
        "packages": [
            {
                "channel": p.channel,
                "subdir": p.subdir,
                "filename": p.filename,
                "sha256": p.sha256,
                "md5": p.md5,
                "size": p.size,
            }
            for p in plan.packages
        ],
    }
