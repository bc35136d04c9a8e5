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
each holding a copy of the manifest and its signature). The receiving side takes the parts wherever they
are (:func:`open_parts`: a folder holding them, the part folders themselves, or one of them with its
siblings beside it); every part must be present and carry the same signed manifest.

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
            code_detail="untrusted_key",
            key=key.text,
        )
    if not key.verify(signature, manifest_bytes):
        raise rejected(
            "the manifest signature does not verify (the manifest or its signature was altered)",
            code_detail="bad_signature",
        )
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
    part_dirs: dict[int, Path] = field(default_factory=dict)  # a split bundle: part number -> its folder

    def path_of(self, entry: FileEntry) -> Path:
        if not entry.part:
            return self.root / entry.path
        return self.part_dirs.get(entry.part, self.root / f"part-{entry.part:03d}") / entry.path

    @property
    def source(self) -> str:
        """Where it was read from (the parts' folders of a split bundle given one by one)."""
        dirs = sorted({p.parent for p in self.part_dirs.values()})
        return (
            str(self.root)
            if not self.part_dirs or dirs == [self.root]
            else ", ".join(str(self.part_dirs[n]) for n in sorted(self.part_dirs))
        )


def is_part_dir(path: Path) -> bool:
    """A ``part-NNN`` folder of a split bundle (by its name; its content is checked when opened)."""
    return bool(_PART_RE.match(path.name)) and path.is_dir() and not path.is_symlink()


def part_dirs_in(root: Path) -> list[Path]:
    """The ``part-NNN`` folders directly inside ``root`` (a folder the parts were copied into)."""
    return sorted(p for p in root.iterdir() if is_part_dir(p)) if root.is_dir() and not root.is_symlink() else []


def _signed_manifest(
    mdir: Path,
    trusted: dict[str, PublicKey],
    max_files: int,
    max_bytes: int,
) -> tuple[bytes, Manifest, PublicKey]:
    raw = _read_small(mdir / MANIFEST, MAX_MANIFEST_BYTES)
    sig = _read_small(mdir / SIGNATURE, 64 * 1024)
    key = verify(raw, sig, trusted)  # nothing of the manifest is trusted before this
    manifest = Manifest.parse(raw, max_files=max_files)
    if manifest.origin_key != key.id:
        raise rejected(f"the manifest names origin key {manifest.origin_key} but is signed by {key.id}")
    if manifest.total_bytes > max_bytes:
        raise rejected(f"the bundle holds {manifest.total_bytes} bytes, over airgap_max_bundle_bytes ({max_bytes})")
    return raw, manifest, key


def open_bundle(root: Path, trusted: dict[str, PublicKey], *, max_files: int, max_bytes: int) -> Opened:
    """Verify the signature, then walk the folder: exactly the listed files, regular, of their sizes. A
    folder without a manifest that holds ``part-NNN`` folders is a split bundle (:func:`open_parts`)."""
    st = os.lstat(root)
    if not stat.S_ISDIR(st.st_mode):
        raise rejected(f"{root} is not a folder")
    if not (root / MANIFEST).exists() and not (root / SIGNATURE).exists():
        parts = part_dirs_in(root)
        if not parts:
            raise rejected(f"{root} holds no manifest.json (not a bundle folder)")
        stray = sorted(p.name for p in root.iterdir() if p not in parts)
        if stray:  # the folder of a split bundle holds its parts and nothing else
            raise rejected(f"{stray[0]} in {root} is not a part of the bundle", path=stray[0])
        return open_parts(parts, trusted, max_files=max_files, max_bytes=max_bytes, root=root)
    raw, manifest, key = _signed_manifest(root, trusted, max_files, max_bytes)
    if manifest.parts:
        raise rejected(f"{root} is one part of a split bundle of {manifest.parts} parts: give every part")
    _walk(root, {f.path: f for f in manifest.files}, raw)
    return Opened(root, manifest, raw, key)


def open_parts(
    dirs: list[Path], trusted: dict[str, PublicKey], *, max_files: int, max_bytes: int, root: Path | None = None
) -> Opened:
    """A split bundle from its part folders, wherever each one is (e.g. one per removable medium): each
    must carry the same signed manifest and exactly the files the manifest lists for its part; every part
    must be there. Which part a folder is comes from its name (``part-NNN``) or, for a renamed folder,
    from the files it holds. A missing part refuses the bundle (``missing_parts`` in the details)."""
    if not dirs:
        raise rejected("no part folders given")
    for d in dirs:
        if not stat.S_ISDIR(os.lstat(d).st_mode):
            raise rejected(f"{d} is not a folder")
        if not (d / MANIFEST).is_file() or not (d / SIGNATURE).is_file():
            raise rejected(f"{d} holds no manifest.json and manifest.sig (still being copied?)", path=str(d))
    raw, manifest, key = _signed_manifest(dirs[0], trusted, max_files, max_bytes)
    if not manifest.parts:
        raise rejected(f"{dirs[0]} is a whole bundle, not a part of a split one: give it alone")
    by_part: dict[int, dict[str, FileEntry]] = {n: {} for n in range(1, manifest.parts + 1)}
    for f in manifest.files:
        if f.part not in by_part:
            raise rejected(f"{f.path} is in part {f.part}, but the bundle has {manifest.parts} parts")
        by_part[f.part][f.path] = f
    assigned: dict[int, Path] = {}
    for d in dirs:
        if _read_small(d / MANIFEST, MAX_MANIFEST_BYTES) != raw:
            raise rejected(f"{d} holds the manifest of another bundle (or an altered one)", path=str(d))
        m = _PART_RE.match(d.name)
        if m:
            n = int(d.name.split("-", 1)[1])
        else:  # renamed on the way: the part whose files it holds
            n = next((n for n, files in by_part.items() if any((d / rel).exists() for rel in files)), 0)
        if n not in by_part:
            raise rejected(f"{d}: the bundle has no part {n}", path=str(d))
        if n in assigned:
            raise rejected(f"part {n} given twice: {assigned[n]} and {d}", path=str(d))
        assigned[n] = d
    missing = sorted(set(by_part) - set(assigned))
    if missing:
        raise rejected(
            f"bundle {manifest.bundle_id} has {manifest.parts} parts; {len(missing)} missing: "
            + ", ".join(f"part-{n:03d}" for n in missing[:10])
            + (" ..." if len(missing) > 10 else ""),
            missing_parts=missing,
            parts=manifest.parts,
        )
    for n, d in sorted(assigned.items()):
        _walk(d, by_part[n], raw)
    if root is None:
        parents = {d.parent for d in assigned.values()}
        root = parents.pop() if len(parents) == 1 else assigned[1]
    return Opened(root, manifest, raw, key, assigned)


def _walk(root: Path, expected: dict[str, FileEntry], raw: bytes) -> None:
    """``root`` holds exactly ``expected`` (and the manifest and its signature): regular files of their
    listed sizes; no symlink, device or unlisted file."""
    control = {MANIFEST, SIGNATURE}
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
                if rel == MANIFEST and _read_small(Path(full), MAX_MANIFEST_BYTES) != raw:
                    raise rejected(f"{root / rel} differs from the verified manifest", path=rel)
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


def replay_error(bundle_id: str, serial: int, last_id: str, last_serial: int, target: str) -> Conflict:
    return Conflict(
        f"bundle {bundle_id} (serial {serial}) is older than bundle {last_id} (serial {last_serial}) already "
        f"imported for {target}: a replayed bundle is refused",
        code="bundle_replayed",
        bundle=bundle_id,
        newer=last_id,
    )
