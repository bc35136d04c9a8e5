"""Reading an upstream's sharded repodata (CEP 16) into the one repodata dict the planner takes.

The shard index (``<subdir>/repodata_shards.msgpack.zst``) maps each package name to the sha256 of its
shard; shards are content-addressed and immutable, so a re-sync fetches the index (ETag) and only the
shards whose hash it has not seen, each verified against its hash. Shards are kept in a cache folder per
upstream subdir; those the current index no longer names are deleted after a successful read.

Limits as conda's: 16 MiB decompressed per shard, 128 MiB for the index.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import msgpack
import zstandard

from condavault.errors import UpstreamError

__all__ = ["INDEX", "ShardCache", "ShardIndex", "assemble", "decode_index", "decode_shard"]

INDEX = "repodata_shards.msgpack.zst"
MAX_SHARD = 16 * 1024 * 1024
MAX_INDEX = 128 * 1024 * 1024


def _unzstd(body: bytes, cap: int, what: str) -> bytes:
    try:
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)) as reader:
            data = reader.read(cap + 1)
    except zstandard.ZstdError as exc:
        raise UpstreamError(f"{what}: not valid zstd ({exc})", code="invalid_upstream_repodata") from exc
    if len(data) > cap:
        limit = f"{cap // (1024 * 1024)} MiB"
        raise UpstreamError(f"{what}: larger than {limit} decompressed", code="invalid_upstream_repodata")
    return data


def _unpack(data: bytes, what: str) -> dict[str, Any]:
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, msgpack.UnpackException) as exc:
        raise UpstreamError(f"{what}: not valid msgpack ({exc})", code="invalid_upstream_repodata") from exc
    if not isinstance(obj, dict):
        raise UpstreamError(f"{what}: not a map", code="invalid_upstream_repodata")
    return obj


def _hex(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, list) and all(isinstance(v, int) for v in value):  # mamba accepts arrays of ints too
        return bytes(value).hex()
    return value


@dataclass(frozen=True)
class ShardIndex:
    info: dict[str, Any]
    shards: dict[str, str]  # package name -> lowercase hex sha256
    url: str

    def shard_url(self, digest: str) -> str:
        base = str(self.info.get("shards_base_url") or "")
        if base and not base.endswith("/"):
            base += "/"
        return urljoin(self.url, base) + f"{digest}.msgpack.zst"

    def package_base(self) -> str | None:
        """Where the packages live when the index says (``base_url``), as an absolute URL with a ``/``."""
        base = str(self.info.get("base_url") or "")
        if not base:
            return None
        return urljoin(self.url, base if base.endswith("/") else base + "/")


def decode_index(body: bytes, url: str) -> ShardIndex:
    obj = _unpack(_unzstd(body, MAX_INDEX, url), url)
    shards = obj.get("shards")
    if not isinstance(shards, dict):
        raise UpstreamError(f"{url}: shard index without a 'shards' map", code="invalid_upstream_repodata")
    out = {}
    for name, digest in shards.items():
        hexed = _hex(digest)
        if not isinstance(name, str) or not isinstance(hexed, str) or len(hexed) != 64:
            raise UpstreamError(f"{url}: bad shard entry for {name!r}", code="invalid_upstream_repodata")
        out[name] = hexed
    info = obj.get("info")
    return ShardIndex(info if isinstance(info, dict) else {}, out, url)


def decode_shard(body: bytes, digest: str, url: str) -> dict[str, Any]:
    """One shard, verified against the hash the index gave for it."""
    got = hashlib.sha256(body).hexdigest()
    if got != digest:
        raise UpstreamError(
            f"{url}: shard bytes hash to {got}, the index says {digest}", code="upstream_checksum_mismatch"
        )
    return _unpack(_unzstd(body, MAX_SHARD, url), url)


def assemble(subdir: str, shards: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A ``repodata.json``-shaped dict from shards: hashes as hex, CEP-21 ``run_exports`` left out."""
    packages: dict[str, Any] = {}
    conda: dict[str, Any] = {}
    removed: list[str] = []
    for shard in shards:
        for key, target in (("packages", packages), ("packages.conda", conda)):
            for fn, rec in (shard.get(key) or {}).items():
                if not isinstance(rec, dict):
                    continue
                rec = {k: _hex(v) if k in ("md5", "sha256") else v for k, v in rec.items() if k != "run_exports"}
                target[fn] = rec
        removed.extend(str(fn) for fn in shard.get("removed") or ())
    return {
        "info": {"subdir": subdir},
        "packages": packages,
        "packages.conda": conda,
        "removed": sorted(set(removed)),
        "repodata_version": 1,
    }


class ShardCache:
    """Shards of one upstream subdir on disk, by hash."""

    def __init__(self, root: Path | None) -> None:
        self.root = root

    def get(self, digest: str) -> bytes | None:
        if self.root is None:
            return None
        try:
            return (self.root / digest).read_bytes()
        except OSError:
            return None

    def put(self, digest: str, body: bytes) -> None:
        if self.root is None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".{digest}.tmp"
        tmp.write_bytes(body)
        tmp.replace(self.root / digest)

    def keep_only(self, digests: set[str]) -> None:
        if self.root is None or not self.root.is_dir():
            return
        for path in self.root.iterdir():
            if path.name not in digests:
                path.unlink(missing_ok=True)
