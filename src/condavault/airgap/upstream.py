"""A bundle folder as a mirror's upstream: ``<bundle>/channels/<name>`` is a plain conda channel folder
(``<subdir>/repodata.json`` and the package files), so the mirror reads it like any local upstream and
its filters (CVE, license, specs ...) apply as for any mirror.

Before a run reads it, :func:`verify_upstream` checks the bundle: the manifest's signature against the
trusted keys, the folder against the manifest (no extra, missing, linked or resized file) and the sha256
of the channel's ``repodata.json`` files. The mirror then checks each package it takes against the
sha256 in that (now verified) repodata, so every byte it stores is covered by the signature.

A **split** bundle spreads a channel's files over its parts (``<bundle>/part-NNN/channels/<name>/...``):
give the upstream as ``<bundle>/part-001/channels/<name>`` (any part) or ``<bundle>/channels/<name>``
(the folder holding the parts). After verifying every part, the run reads a view of the channel: a
folder under ``<data-dir>/bundles/views/`` of links to the verified files, one per bundle and channel.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from condavault.airgap.manifest import MANIFEST, Opened, is_part_dir, open_bundle, part_dirs_in, rejected
from condavault.config import Settings
from condavault.signing.keys import trusted_keys


def bundle_of(root: Path) -> tuple[Path, str] | None:
    """(bundle folder, channel name) when ``root`` is ``<bundle>/channels/<name>`` (also of a split
    bundle: ``<bundle>/part-NNN/channels/<name>``, or the folder holding the parts); else None."""
    if root.parent.name != "channels":
        return None
    base, name = root.parent.parent, root.name
    if (base / MANIFEST).is_file():
        return (base.parent, name) if is_part_dir(base) else (base, name)
    if part_dirs_in(base):
        return base, name
    return None


def verify_upstream(settings: Settings, upstream: str) -> Path | None:
    """Verify the bundle a local upstream lives in; returns the folder the mirror is to read (the channel
    folder itself, or for a split bundle a view of it), or None when the upstream is not in a bundle."""
    from condavault.mirror.upstream import _local_root

    root = _local_root(upstream)
    if root is None:
        return None
    found = bundle_of(root.absolute())
    if found is None:
        return None
    folder, name = found
    opened = open_bundle(
        folder, trusted_keys(settings), max_files=settings.airgap_max_files, max_bytes=settings.airgap_max_bundle_bytes
    )
    prefix = f"channels/{name}/"
    for f in opened.manifest.files:
        if f.path.startswith(prefix) and f.path.endswith("/repodata.json"):
            data = opened.path_of(f).read_bytes()
            if hashlib.sha256(data).hexdigest() != f.sha256:
                raise rejected(f"{f.path}: sha256 differs from the manifest's (altered)", path=f.path)
    if not opened.manifest.parts:
        return folder / "channels" / name
    return _view(settings, opened, name)


def _view(settings: Settings, opened: Opened, name: str) -> Path:
    """``<data-dir>/bundles/views/<bundle id>/<name>``: the channel's files of every part, as symbolic links
    to the verified part files (written under a temporary name, then renamed; rebuilt on each run)."""
    prefix = f"channels/{name}/"
    files = [f for f in opened.manifest.files if f.path.startswith(prefix)]
    if not files:
        raise rejected(f"bundle {opened.manifest.bundle_id} carries no channel {name!r}")
    views = settings.data_dir / "bundles" / "views" / opened.manifest.bundle_id
    dest = views / name
    tmp = views / f".{name}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    for f in files:
        link = tmp / f.path[len(prefix) :]
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(opened.path_of(f), link)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)
    return dest
