"""A bundle carried as one ``.tar`` (or ``.tar.gz`` / ``.tgz``) file, unpacked safely.

The manifest and its signature must be the first two members: they are verified before anything else
is written. Then each member must be a regular file listed by the signed manifest, at its path and of
its size -- so no link, device, path trick, unlisted member or oversized member (a tar bomb) is ever
written: the bytes written are bounded by the signed manifest. The members are streamed (a
decompression bomb stops at the first member longer than listed).
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

from condavault.airgap.manifest import MANIFEST, SIGNATURE, Manifest, check_rel_path, rejected, verify
from condavault.signing.keys import PublicKey

SUFFIXES = (".tar", ".tar.gz", ".tgz")


def is_archive(path: Path) -> bool:
    return path.name.endswith(SUFFIXES)


def _member_name(member: tarfile.TarInfo) -> str:
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    return name


def _read_member(tf: tarfile.TarFile, member: tarfile.TarInfo, limit: int) -> bytes:
    if not member.isreg() or member.size > limit:
        raise rejected(f"{member.name} is not a regular file of at most {limit} bytes")
    fh = tf.extractfile(member)
    assert fh is not None
    return fh.read(limit + 1)


def unpack(path: Path, dest: Path, trusted: dict[str, PublicKey], *, max_files: int, max_bytes: int) -> None:
    """Unpack ``path`` into ``dest`` (replaced), verifying as it goes; raises ``bundle_rejected``."""
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with tarfile.open(path, mode="r|*") as tf:
            it = iter(tf)
            raw = sig = None
            members = 0
            for member in it:
                name = _member_name(member)
                if member.isdir() and name in ("", "."):
                    continue
                if name == MANIFEST:
                    raw = _read_member(tf, member, 512 * 1024 * 1024)
                elif name == SIGNATURE:
                    sig = _read_member(tf, member, 64 * 1024)
                else:
                    raise rejected(f"{path.name}: {MANIFEST} and {SIGNATURE} must be the first members")
                if raw is not None and sig is not None:
                    break
            if raw is None or sig is None:
                raise rejected(f"{path.name} holds no manifest")
            key = verify(raw, sig, trusted)
            manifest = Manifest.parse(raw, max_files=max_files)
            if manifest.origin_key != key.id:
                raise rejected("the manifest's origin key is not the key that signed it")
            if manifest.total_bytes > max_bytes:
                raise rejected(f"the bundle holds {manifest.total_bytes} bytes, over the limit ({max_bytes})")
            if manifest.parts:
                raise rejected("a split bundle is imported from a folder holding its parts, not from a tar file")
            (tmp / MANIFEST).write_bytes(raw)
            (tmp / SIGNATURE).write_bytes(sig)
            listed = {f.path: f for f in manifest.files}
            written: set[str] = set()
            for member in it:
                members += 1
                if members > len(listed) * 2 + 16:
                    raise rejected(f"{path.name} has more members than the manifest lists")
                name = _member_name(member)
                if member.isdir():
                    check_rel_path(name.rstrip("/"))
                    continue
                if not member.isreg():
                    raise rejected(f"{name} is not a regular file (links and devices are refused)", path=name)
                check_rel_path(name)
                entry = listed.get(name)
                if entry is None or name in written:
                    raise rejected(f"{name} is not listed in the manifest", path=name)
                if member.size != entry.size:
                    raise rejected(f"{name} has {member.size} bytes, the manifest says {entry.size}", path=name)
                target = tmp / name
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tf.extractfile(member)
                assert src is not None
                left = entry.size
                with open(target, "wb") as out:
                    while left > 0:
                        chunk = src.read(min(1024 * 1024, left))
                        if not chunk:
                            raise rejected(f"{name} is truncated", path=name)
                        out.write(chunk)
                        left -= len(chunk)
                written.add(name)
    except tarfile.TarError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise rejected(f"{path.name} is not a readable tar file ({exc})") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
