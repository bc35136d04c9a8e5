"""Scanning data in bundles (``bundle export --scanning``): the block list of known-bad sha256s and,
when ``clamav_database_dir`` is set, the ClamAV signature database files of that folder -- what an
isolated network cannot fetch for itself.

Import applies the block list exactly as ``condavault blocklist import`` does
(``scanning.services.import_blocklist``: entries added, known ones kept, audited as ``blocklist:import``
with the source ``bundle:<key id>``); from then on an archive whose sha256 (or a file inside it) is listed
is quarantined. The ClamAV files are installed into the receiving side's ``clamav_database_dir`` (each
written to a temporary name, fsynced, renamed), and clamd is asked to reload its database when
``clamd_socket`` is set. Both are covered by the manifest's signature like every other file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from condavault.airgap.manifest import rejected
from condavault.errors import InvalidRequest
from condavault.scanning.models import BlockedHash

if TYPE_CHECKING:
    from condavault.airgap.export import _Writer
    from condavault.context import Context

log = logging.getLogger(__name__)
PREFIX = "scanning"
SHA256 = re.compile(r"^[0-9a-f]{64}$")
# ClamAV database files (signatures, whitelists, configuration); nothing else is carried or installed
CLAMAV_NAME = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.(cvd|cld|cud|hdb|hsb|hdu|hsu|mdb|msb|mdu|msu|ndb|ndu|ldb|ldu|idb|cdb|crb|"
    r"cat|cbc|pdb|gdb|wdb|fp|sfp|ign|ign2|ftm|cfg|yar|yara|info|db)$"
)
MAX_CLAMAV_FILES = 1000


@dataclass
class Payload:
    entries: list[tuple[str, str]] = field(default_factory=list)  # (sha256, note)
    clamav: list[tuple[str, bytes]] = field(default_factory=list)  # (file name, bytes)


def export(ctx: Context, w: _Writer) -> tuple[dict[str, Any], dict[str, str]]:
    """Write the block list (and the ClamAV database files); returns the manifest target and its digest."""
    lines: list[str] = []
    with ctx.db.session() as s:
        for sha, source, note in s.execute(
            select(BlockedHash.sha256, BlockedHash.source, BlockedHash.note).order_by(BlockedHash.sha256)
        ):
            lines.append(json.dumps({"sha256": sha, "source": source, "note": note}, separators=(",", ":")))
    block = w.add_lines(f"{PREFIX}/blocklist.jsonl", iter(lines))
    clam: list[str] = []
    folder = ctx.settings.clamav_database_dir
    if folder is not None:
        if not folder.is_dir():
            raise InvalidRequest(f"clamav_database_dir {folder} is not a folder", code="clamav_dir_missing")
        for p in sorted(folder.iterdir()):
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode) and CLAMAV_NAME.match(p.name):
                if len(clam) >= MAX_CLAMAV_FILES:
                    raise InvalidRequest(
                        f"{folder} holds more than {MAX_CLAMAV_FILES} database files", code="clamav_dir_too_large"
                    )
                e = w.add_bytes(f"{PREFIX}/clamav/{p.name}", p.read_bytes())
                clam.append(e.path)
    digest = hashlib.sha256(block.sha256.encode() + "".join(clam).encode()).hexdigest()[:32]
    target = {
        "kind": "scanning",
        "watermark": digest,
        "base_watermark": None,
        "full": True,
        "entries": len(lines),
        "blocklist_file": block.path,
        "clamav_files": clam,
    }
    return target, {"watermark": digest}


def parse(spec: dict[str, Any], read: Callable[[str], bytes]) -> Payload:
    """The verified payload files, checked: well-formed entries, ClamAV files by their allowed names."""
    out = Payload()
    for n, line in enumerate(read(str(spec["blocklist_file"])).decode().splitlines(), 1):
        if not line.strip():
            continue
        doc = json.loads(line)
        sha = str(doc["sha256"]).lower()
        if not SHA256.match(sha):
            raise rejected(f"{spec['blocklist_file']} line {n}: {sha[:80]!r} is not a sha256")
        out.entries.append((sha, str(doc.get("note") or "")[:200]))
    files = spec.get("clamav_files") or []
    if not isinstance(files, list) or len(files) > MAX_CLAMAV_FILES:
        raise rejected("bad clamav_files")
    for rel in files:
        name = str(rel).removeprefix(f"{PREFIX}/clamav/")
        if f"{PREFIX}/clamav/{name}" != rel or not CLAMAV_NAME.match(name):
            raise rejected(f"{str(rel)[:200]!r} is not a ClamAV database file name")
        out.clamav.append((name, read(rel)))
    return out


def apply(ctx: Context, origin_key: str, bundle_id: str, payload: Payload) -> dict[str, Any]:
    """The block list as ``blocklist import`` applies it; the ClamAV files installed (see the module)."""
    from condavault.scanning.services import import_blocklist

    out: dict[str, Any] = {
        "entries": len(payload.entries),
        "added": 0,
        "clamav_files": len(payload.clamav),
        "clamav_installed": 0,
        "clamav_note": None,
    }
    if payload.entries:
        res = import_blocklist(
            ctx, payload.entries, f"bundle:{origin_key}", SimpleNamespace(username=f"bundle:{bundle_id}")
        )
        out["added"] = res["added"]
    if payload.clamav:
        folder = ctx.settings.clamav_database_dir
        if folder is None:
            out["clamav_note"] = "clamav_database_dir is not set: the ClamAV files were not installed"
            log.warning("bundle clamav files not installed", extra={"bundle": bundle_id})
        else:
            out["clamav_installed"] = install_clamav(folder, payload.clamav)
            out["clamav_note"] = reload_clamd(ctx.settings.clamd_socket)
    return out


def install_clamav(folder: Path, files: list[tuple[str, bytes]]) -> int:
    """Write each file to a temporary name in ``folder``, fsync, rename over the old one; then fsync the
    folder. Unchanged files are left alone. Returns how many were written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = 0
    for name, data in files:
        dest = folder / name
        if dest.is_file() and not dest.is_symlink() and dest.read_bytes() == data:
            continue
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written += 1
    dfd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return written


def reload_clamd(address: str | None) -> str | None:
    """Ask clamd to reload its signature database (``RELOAD``); a note when it could not be asked."""
    if not address:
        return None
    from condavault.scanning.engine import ClamdClient

    try:
        with ClamdClient(address, timeout=10.0)._connect() as sock:
            sock.sendall(b"zRELOAD\0")
            reply = sock.recv(256).rstrip(b"\0").decode("utf-8", "replace").strip()
    except OSError as exc:
        log.warning("clamd reload failed", extra={"clamd": address, "error": str(exc)})
        return f"clamd at {address} could not be asked to reload: {exc}"
    return None if reply.startswith("RELOADING") else f"clamd answered {reply!r} to RELOAD"
