"""The bundle format: a folder (or a ``.tar`` / ``.tar.gz`` of one) with a signed manifest.

```
<bundle>/manifest.json     version, bundle id, parent id, origin key id, serial, created, per-target
                           watermarks, and every payload file with its sha256 and size
<bundle>/manifest.sig      {"key": "ed25519:<hex>", "key_id": ..., "signature": <hex of the ed25519
                           signature of the exact bytes of manifest.json>}
<bundle>/channels/<name>/records.jsonl    one record per line (see ``export``)
<bundle>/channels/<name>/removed.jsonl    keys removed since the base (incremental bundles)
<bundle>/channels/<name>/patches.json     patch instructions per subdir
<bundle>/channels/<name>/<subdir>/repodata.json and package files: a conda channel folder
<bundle>/vulns/...                        per-source advisory records, name entries, curation
```

With ``--split SIZE`` the payload is spread over ``part-001/``, ``part-002/`` ... (each at most SIZE,
each holding a copy of the manifest and its signature): copy every part onto the receiving machine into
one folder and import that folder.

Everything is checked before anything is stored (:func:`scan`): the signature against the trusted keys,
then that the folder holds exactly the listed files -- regular files, no symlinks, no path leaving the
folder, no extra or missing file, each of its listed size -- and (``importer``) each file's sha256.
"""

from __future__ import annotations

import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from condavault.errors import Conflict, InvalidRequest
from condavault.signing.keys import PublicKey, SigningKey

FORMAT = "condavault-bundle"
VERSION = 1
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
MAX_MANIFEST_BYTES = 512 * 1024 * 1024
_PART_RE = re.compile(r"^part-\d{3,6}$")
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._+=@-]{1,255}$")


def rejected(message: str, **details: Any) -> InvalidRequest:
    """A bundle refused whole (nothing of it is imported)."""
    return InvalidRequest(f"bundle rejected: {message}", code="bundle_rejected", **details)


def check_rel_path(rel: str) -> str:
    """A payload path: relative, POSIX, no ``..``, no empty or hidden-trick segments."""
    if not isinstance(rel, str) or not rel or len(rel) > 1024 or "\\" in rel or "\x00" in rel:
        raise rejected(f"bad path {str(rel)[:80]!r}", path=str(rel)[:200])
    p = PurePosixPath(rel)
    if p.is_absolute() or any(seg in ("", ".", "..") or not _SEGMENT_RE.match(seg) for seg in rel.split("/")):
        raise rejected(f"path {rel[:200]!r} leaves the bundle or has unsafe characters", path=rel[:200])
    if rel in (MANIFEST, SIGNATURE) or _PART_RE.match(rel.split("/")[0]):
        raise rejected(f"path {rel[:200]!r} is reserved", path=rel[:200])
    return rel


@dataclass
class FileEntry:
    path: str
    sha256: str
    size: int
    part: int = 0  # 0: not split; else the part-NNN folder that holds it

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "sha256": self.sha256, "size": self.size}
        if self.part:
            out["part"] = self.part
        return out


@dataclass
class Manifest:
    bundle_id: str
    origin_key: str
    serial: int
    created: str
    parent_id: str | None = None
    kinds: list[str] = field(default_factory=list)
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)  # "channel:<name>" | "vulns" -> watermark
    files: list[FileEntry] = field(default_factory=list)
    parts: int = 0

    def to_bytes(self) -> bytes:
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "bundle_id": self.bundle_id,
            "parent_id": self.parent_id,
            "origin_key": self.origin_key,
            "serial": self.serial,
            "created": self.created,
            "kinds": self.kinds,
            "parts": self.parts,
            "targets": self.targets,
            "files": [f.to_json() for f in self.files],
        }
        return json.dumps(doc, indent=1, sort_keys=True).encode()

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @classmethod
    def parse(cls, raw: bytes, *, max_files: int) -> Manifest:
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise rejected(f"manifest.json is not JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise rejected("manifest.json is not a condavault bundle manifest")
        if doc.get("version") != VERSION:
            raise rejected(f"bundle format version {doc.get('version')!r} is not supported (this reads {VERSION})")
        try:
            files = doc["files"]
            if not isinstance(files, list) or len(files) > max_files:
                raise rejected(f"the manifest lists more than {max_files} files")
            entries = []
            seen: set[str] = set()
            for f in files:
                path = check_rel_path(f["path"])
                sha, size, part = str(f["sha256"]), int(f["size"]), int(f.get("part", 0))
                if not re.fullmatch(r"[0-9a-f]{64}", sha) or size < 0 or part < 0:
                    raise rejected(f"bad entry for {path}")
                if path in seen:
                    raise rejected(f"{path} is listed twice")
                seen.add(path)
                entries.append(FileEntry(path, sha, size, part))
            targets = doc["targets"]
            if not isinstance(targets, dict):
                raise rejected("bad targets")
            return cls(
                bundle_id=_ident(doc["bundle_id"], "bundle id"),
                origin_key=_ident(doc["origin_key"], "origin key"),
                serial=int(doc["serial"]),
                created=str(doc["created"])[:40],
                parent_id=_ident(doc["parent_id"], "parent id") if doc.get("parent_id") else None,
                kinds=[str(k) for k in doc.get("kinds", [])],
                targets=targets,
                files=entries,
                parts=int(doc.get("parts", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise rejected(f"manifest.json is malformed ({exc!r})") from None


def _ident(value: Any, what: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
        raise rejected(f"bad {what} {str(value)[:80]!r}")
    return value


def sign(manifest_bytes: bytes, key: SigningKey) -> bytes:
    doc = {"key": key.public.text, "key_id": key.public.id, "signature": key.sign(manifest_bytes).hex()}
    return json.dumps(doc, indent=1).encode()


def verify(manifest_bytes: bytes, sig_bytes: bytes, trusted: dict[str, PublicKey]) -> PublicKey:
    """The trusted key that signed ``manifest_bytes``; refuses an unknown key or a bad signature."""
    try:
        doc = json.loads(sig_bytes)
        key = PublicKey.parse(doc["key"])
        signature = bytes.fromhex(doc["signature"])
    except (ValueError, KeyError, TypeError, InvalidRequest):
        raise rejected("manifest.sig is malformed") from None
    if key.id not in trusted or trusted[key.id].raw != key.raw:
        raise rejected(
            f"signed by key {key.id} ({key.text}), which this server does not trust; add it to trusted_keys",
            code_detail="untrusted_key", key=key.text,
        )
    if not key.verify(signature, manifest_bytes):
        raise rejected("the manifest signature does not verify (the manifest or its signature was altered)",
                       code_detail="bad_signature")
    return key


def _read_small(path: Path, limit: int) -> bytes:
    st = os.lstat(path)
    if not stat.S_ISREG(st.st_mode):
        raise rejected(f"{path.name} is not a regular file")
    if st.st_size > limit:
        raise rejected(f"{path.name} is larger than {limit} bytes")
    with open(path, "rb") as fh:
        return fh.read(limit + 1)


@dataclass
class Opened:
    """A bundle folder whose manifest verified and whose file list matches the folder exactly."""

    root: Path
    manifest: Manifest
    manifest_bytes: bytes
    key: PublicKey

    def path_of(self, entry: FileEntry) -> Path:
        base = self.root / f"part-{entry.part:03d}" if entry.part else self.root
        return base / entry.path


def _manifest_dir(root: Path) -> Path:
    if (root / MANIFEST).exists() or (root / SIGNATURE).exists():
        return root
    parts = sorted(p for p in root.iterdir() if _PART_RE.match(p.name)) if root.is_dir() else []
    if parts:
        return parts[0]
    raise rejected(f"{root} holds no manifest.json (not a bundle folder)")


def open_bundle(root: Path, trusted: dict[str, PublicKey], *, max_files: int, max_bytes: int) -> Opened:
    """Verify the signature, then walk the folder: exactly the listed files, regular, of their sizes."""
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode):
        raise rejected(f"{root} is not a folder")
    mdir = _manifest_dir(root)
    raw = _read_small(mdir / MANIFEST, MAX_MANIFEST_BYTES)
    sig = _read_small(mdir / SIGNATURE, 64 * 1024)
    key = verify(raw, sig, trusted)  # nothing of the manifest is trusted before this
    manifest = Manifest.parse(raw, max_files=max_files)
    if manifest.origin_key != key.id:
        raise rejected(f"the manifest names origin key {manifest.origin_key} but is signed by {key.id}")
    if manifest.total_bytes > max_bytes:
        raise rejected(f"the bundle holds {manifest.total_bytes} bytes, over airgap_max_bundle_bytes ({max_bytes})")
    expected: dict[str, FileEntry] = {}
    for f in manifest.files:
        key_path = f"part-{f.part:03d}/{f.path}" if f.part else f.path
        expected[key_path] = f
    control = {MANIFEST, SIGNATURE}
    if manifest.parts:
        control = {f"part-{i:03d}/{n}" for i in range(1, manifest.parts + 1) for n in (MANIFEST, SIGNATURE)}
    found: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel_dir = os.path.relpath(dirpath, root)
        for name in [*dirnames, *filenames]:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            full = os.path.join(dirpath, name)
            lst = os.lstat(full)
            if stat.S_ISLNK(lst.st_mode):
                raise rejected(f"{rel} is a symbolic link", path=rel)
            if stat.S_ISDIR(lst.st_mode):
                continue
            if not stat.S_ISREG(lst.st_mode):
                raise rejected(f"{rel} is not a regular file", path=rel)
            if rel in control:
                if manifest.parts and (rel.endswith(MANIFEST) and _read_small(Path(full), MAX_MANIFEST_BYTES) != raw):
                    raise rejected(f"{rel} differs from the first part's manifest", path=rel)
                continue
            entry = expected.get(rel)
            if entry is None:
                raise rejected(f"{rel} is not listed in the manifest", path=rel)
            if lst.st_size != entry.size:
                raise rejected(f"{rel} has {lst.st_size} bytes, the manifest says {entry.size}", path=rel)
            found.add(rel)
    missing = sorted(set(expected) - found)
    if missing:
        raise rejected(f"{len(missing)} listed file(s) are missing, e.g. {missing[0]}", path=missing[0])
    return Opened(root, manifest, raw, key)


def replay_error(bundle_id: str, serial: int, last_id: str, last_serial: int, target: str) -> Conflict:
    return Conflict(
        f"bundle {bundle_id} (serial {serial}) is older than bundle {last_id} (serial {last_serial}) already "
        f"imported for {target}: a replayed bundle is refused",
        code="bundle_replayed", bundle=bundle_id, newer=last_id,
    )
