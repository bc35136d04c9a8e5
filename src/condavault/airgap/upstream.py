"""A bundle folder as a mirror's upstream: ``<bundle>/channels/<name>`` is a plain conda channel folder
(``<subdir>/repodata.json`` and the package files), so the mirror reads it like any local upstream and
its filters (CVE, license, specs ...) apply as for any mirror.

Before a run reads it, :func:`verify_upstream` checks the bundle: the manifest's signature against the
trusted keys, the folder against the manifest (no extra, missing, linked or resized file) and the sha256
of the channel's ``repodata.json`` files. The mirror then checks each package it takes against the
sha256 in that (now verified) repodata, so every byte it stores is covered by the signature.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from condavault.airgap.manifest import MANIFEST, open_bundle, rejected
from condavault.config import Settings
from condavault.signing.keys import trusted_keys


def bundle_of(root: Path) -> tuple[Path, str] | None:
    """(bundle folder, channel name) when ``root`` is ``<bundle>/channels/<name>``; else None."""
    if root.parent.name == "channels" and (root.parent.parent / MANIFEST).is_file():
        return root.parent.parent, root.name
    return None


def verify_upstream(settings: Settings, upstream: str) -> bool:
    """Verify the bundle a local upstream lives in (no-op for other upstreams); True if it was one."""
    from condavault.mirror.upstream import _local_root

    root = _local_root(upstream)
    if root is None:
        return False
    found = bundle_of(root.absolute())
    if found is None:
        return False
    folder, name = found
    opened = open_bundle(folder, trusted_keys(settings), max_files=settings.airgap_max_files,
                         max_bytes=settings.airgap_max_bundle_bytes)
    prefix = f"channels/{name}/"
    for f in opened.manifest.files:
        if f.path.startswith(prefix) and f.path.endswith("/repodata.json"):
            data = opened.path_of(f).read_bytes()
            if hashlib.sha256(data).hexdigest() != f.sha256:
                raise rejected(f"{f.path}: sha256 differs from the manifest's (altered)", path=f.path)
    return True
