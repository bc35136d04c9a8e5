"""Validate a conda archive and read its ``info/`` metadata in one streaming pass.

Both components are walked member by member (never extracted): every member path is checked,
declared sizes are summed against the decompression limits before any data is inflated, and only
the few ``info/`` files the index needs are read.
"""

from __future__ import annotations

import bz2
import io
import json
import lzma
import posixpath
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from conda_package_streaming import package_streaming

from condavault.errors import (
    CorruptArchive,
    DecompressionLimit,
    FilenameMismatch,
    MissingMetadata,
    NotACondaArchive,
    UnsafePath,
)
from condavault.packages.filename import PackageFilename

try:  # the zstd module conda-package-streaming uses
    import backports.zstd as _zstd
except ImportError:  # pragma: no cover - Python 3.14+
    import compression.zstd as _zstd  # type: ignore[no-redef]

WANTED = {
    "info/index.json",
    "info/about.json",
    "info/run_exports.json",
    "info/paths.json",
    "info/files",  # the file list of old packages without paths.json (search)
    "info/security.json",
    "info/link.json",
}
MAX_META_FILE = 32 * 1024 * 1024
TAR_HEADER = 512
# a visitor of every member of the walk (e.g. the malware scan, in the same pass): (component "info" or
# "pkg", the tar member, a reader: ``read()`` the whole member or ``read(n)`` its next n bytes)
Visit = Callable[[str, tarfile.TarInfo, Callable[..., bytes]], None]
# what the standard readers raise on hostile bytes: besides the obvious, a zip member whose compression
# method number was tampered with (NotImplementedError, a RuntimeError) or that claims a password
# (RuntimeError), a corrupt deflate or lzma stream (zlib.error, LZMAError), a short zip64 record (struct.error)
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    tarfile.TarError,
    zipfile.BadZipFile,
    EOFError,
    OSError,
    ValueError,
    RuntimeError,
    struct.error,
    zlib.error,
    lzma.LZMAError,
    _zstd.ZstdError,
)


@dataclass(frozen=True)
class Limits:
    max_decompressed_bytes: int
    max_compression_ratio: float
    max_members: int
    ratio_floor: int = 64 * 1024 * 1024


@dataclass
class ArchiveInfo:
    """What an archive told us about itself."""

    files: dict[str, bytes] = field(default_factory=dict)
    members: int = 0
    declared_bytes: int = 0

    def json(self, path: str) -> Any | None:
        raw = self.files.get(path)
        if raw is None:
            return None
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CorruptArchive(f"{path} is not valid JSON: {exc}", member=path)
        except RecursionError:
            raise CorruptArchive(f"{path} is nested too deeply", member=path) from None


def check_member_path(name: str, *, root_prefix: str = "") -> str:
    """Reject absolute paths, ``..`` components and Windows drive letters; return the normalised path."""
    if not name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafePath(f"archive member {name!r} has an absolute path", member=name)
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise UnsafePath(f"archive member {name!r} escapes the package root", member=name)
    norm = posixpath.normpath(name)
    if norm.startswith(".."):
        raise UnsafePath(f"archive member {name!r} escapes the package root", member=name)
    return norm


def _check_link(member: tarfile.TarInfo) -> None:
    target = member.linkname
    if member.issym():
        if target.startswith("/") or (len(target) > 1 and target[1] == ":"):
            raise UnsafePath(f"symlink {member.name!r} points to absolute path {target!r}", member=member.name)
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(member.name), target))
        if resolved == ".." or resolved.startswith("../") or resolved.startswith("/"):
            raise UnsafePath(f"symlink {member.name!r} points outside the package ({target!r})", member=member.name)
    elif member.islnk():
        check_member_path(target)


class _Walker:
    def __init__(self, info: ArchiveInfo, limits: Limits, compressed_size: int, visit: Visit | None = None) -> None:
        self.info = info
        self.limits = limits
        self.compressed_size = max(compressed_size, 1)
        self.visit = visit

    def account(self, size: int, where: str) -> None:
        info = self.info
        info.members += 1
        info.declared_bytes += size + TAR_HEADER
        if info.members > self.limits.max_members:
            raise DecompressionLimit(f"archive has more than {self.limits.max_members} members", member=where)
        if info.declared_bytes > self.limits.max_decompressed_bytes:
            raise DecompressionLimit(
                f"archive expands to more than {self.limits.max_decompressed_bytes} bytes", member=where
            )
        ratio = info.declared_bytes / self.compressed_size
        if info.declared_bytes > self.limits.ratio_floor and ratio > self.limits.max_compression_ratio:
            raise DecompressionLimit(
                f"archive decompression ratio exceeds {self.limits.max_compression_ratio:g}", member=where
            )

    def walk(self, stream: Any, *, info_prefix: str = "info/", component: str | None = None) -> None:
        for tar, member in stream:
            comp = component or ("info" if member.name.startswith("info/") else "pkg")
            name = check_member_path(member.name)
            if member.isdev() or member.isfifo():
                raise UnsafePath(f"archive member {name!r} is a device or fifo", member=name)
            if member.issym() or member.islnk():
                _check_link(member)
            self.account(member.size if member.isfile() else 0, name)
            data: bytes | None = None
            if name in WANTED and member.isfile() and name.startswith(info_prefix):
                if member.size > MAX_META_FILE:
                    raise DecompressionLimit(f"{name} is larger than {MAX_META_FILE} bytes", member=name)
                fh = tar.extractfile(member)
                if fh is not None:
                    self.info.files[name] = data = fh.read()
            if self.visit is not None:
                self.visit(comp, member, _reader(tar, member, data))


def _reader(tar: Any, member: tarfile.TarInfo, data: bytes | None) -> Callable[..., bytes]:
    """``read()``: the whole member; ``read(n)``: its next ``n`` bytes (b"" at its end)."""
    fh: Any = io.BytesIO(data) if data is not None else None

    def read(n: int = -1) -> bytes:
        nonlocal fh
        if fh is None:
            fh = tar.extractfile(member) or io.BytesIO()
        return bytes(fh.read(n))

    return read


def _sniff(source: Path | bytes) -> str:
    if isinstance(source, bytes):
        head = source[:4]
    else:
        with open(source, "rb") as fh:
            head = fh.read(4)
    if head.startswith(b"PK\x03\x04"):
        return ".conda"
    if head.startswith(b"BZh"):
        return ".tar.bz2"
    return ""


def read_archive(source: Path | bytes, fn: PackageFilename, limits: Limits, visit: Visit | None = None) -> ArchiveInfo:
    """Validate ``source`` (a file, or the bytes of one, named ``fn``) and return its metadata files.
    ``visit`` sees every member in the same pass. Raises ``InvalidPackage`` kinds."""
    kind = _sniff(source)
    if not kind:
        raise NotACondaArchive(f"{fn.filename} is neither a .conda (zip) nor a .tar.bz2 archive", filename=fn.filename)
    if kind != fn.ext:
        raise NotACondaArchive(
            f"{fn.filename} has the extension {fn.ext} but holds a {kind} archive", filename=fn.filename
        )
    info = ArchiveInfo()
    size = len(source) if isinstance(source, bytes) else source.stat().st_size
    walker = _Walker(info, limits, size, visit)
    try:
        if kind == ".conda":
            _read_conda(io.BytesIO(source) if isinstance(source, bytes) else source, fn, walker)
        else:
            with _open(source) as raw, bz2.open(raw, "rb") as reader:
                walker.walk(package_streaming.tar_generator(reader))
    except (UnsafePath, DecompressionLimit, FilenameMismatch, MissingMetadata, NotACondaArchive):
        raise
    except _DECODE_ERRORS as exc:
        raise CorruptArchive(f"{fn.filename} is truncated or corrupt: {exc}", filename=fn.filename)
    if "info/index.json" not in info.files:
        raise MissingMetadata(f"{fn.filename} has no info/index.json", filename=fn.filename)
    return info


def _open(source: Path | bytes) -> BinaryIO:
    return io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")


def _read_conda(source: Path | BinaryIO, fn: PackageFilename, walker: _Walker) -> None:
    with zipfile.ZipFile(source) as zf:
        names = [i.filename for i in zf.infolist()]
        for n in names:
            check_member_path(n)
        info_members = [n for n in names if n.startswith("info-") and n.endswith(".tar.zst")]
        pkg_members = [n for n in names if n.startswith("pkg-") and n.endswith(".tar.zst")]
        if "metadata.json" not in names or len(info_members) != 1:
            raise NotACondaArchive(
                f"{fn.filename} is a zip file but not a .conda package (needs metadata.json and one info-*.tar.zst)",
                filename=fn.filename,
            )
        if info_members[0] != f"info-{fn.stem}.tar.zst":
            raise FilenameMismatch(
                f"{fn.filename} contains {info_members[0]}, not info-{fn.stem}.tar.zst", filename=fn.filename
            )
        if len(pkg_members) > 1 or (pkg_members and pkg_members[0] != f"pkg-{fn.stem}.tar.zst"):
            raise FilenameMismatch(f"{fn.filename} contains unexpected members {pkg_members}", filename=fn.filename)
        meta_info = zf.getinfo("metadata.json")
        if meta_info.file_size > MAX_META_FILE:  # the read stops at the declared size: this bounds it
            raise DecompressionLimit(f"metadata.json is larger than {MAX_META_FILE} bytes", member="metadata.json")
        raw_meta = zf.read(meta_info)
        try:  # old conda-package-handling wrote an empty metadata.json: tolerated, like conda does
            meta = json.loads(raw_meta) if raw_meta.strip() else {}
        except (ValueError, UnicodeDecodeError) as exc:
            raise CorruptArchive(f"metadata.json is not valid JSON: {exc}", filename=fn.filename)
        version = meta.get("conda_pkg_format_version", 2) if isinstance(meta, dict) else None
        if version != 2:
            raise NotACondaArchive(
                f"{fn.filename}: unsupported conda_pkg_format_version {version!r}", filename=fn.filename
            )
        for component in ("info", "pkg") if pkg_members else ("info",):
            member = info_members[0] if component == "info" else pkg_members[0]
            stream: Any = _small_component(zf, member, walker.limits)
            if stream is None:  # large, or anything unusual: the streaming reader (which also names errors)
                stream = package_streaming.stream_conda_component(fn.filename, component=component, zf=zf)
            walker.walk(stream, info_prefix="info/" if component == "info" else "\0", component=component)


SMALL_COMPONENT = 1024 * 1024  # bytes of a component's tar read whole into memory (small packages: most uploads)
_PLAIN_TYPES = frozenset((tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE))
_ZERO_BLOCK = bytes(TAR_HEADER)


class _InMemoryTar:
    """What the walk uses of a ``TarFile`` (``extractfile``), over a tar held in memory."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf

    def extractfile(self, member: tarfile.TarInfo) -> io.BytesIO:
        return io.BytesIO(self.buf[member.offset_data : member.offset_data + member.size])


_Members = list[tuple[_InMemoryTar, tarfile.TarInfo]]


def _small_component(zf: zipfile.ZipFile, name: str, limits: Limits) -> _Members | None:
    """The members of a small component without the streaming machinery of ``tarfile`` (most of the cost
    of checking a small package): the zstd frame must declare its size, at most ``SMALL_COMPONENT`` (and
    within the limits), and the tar must hold only plain members (files, folders, links) with ustar/v7
    headers. Anything else -- pax or GNU long-name headers, devices, a bad header, a truncated tar, a
    frame that is not what it declares -- returns None: the caller then streams the component with
    ``tarfile``, as for big packages, which checks (and reports) it as before. The limits are checked
    by the walk for each member, as in the streaming path."""
    zinfo = zf.getinfo(name)
    bound = min(SMALL_COMPONENT, limits.max_decompressed_bytes)
    if zinfo.file_size > bound:
        return None
    raw = zf.read(zinfo)
    try:
        size = _zstd.get_frame_info(raw).decompressed_size
        if size is None or size > bound or _zstd.get_frame_size(raw) != len(raw):
            return None  # unknown size, too big, or more than one frame
        d = _zstd.ZstdDecompressor()
        buf = d.decompress(raw, max_length=size)
        if not d.eof or len(buf) != size:
            return None
    except _zstd.ZstdError:
        return None
    tar = _InMemoryTar(buf)
    out: _Members = []
    pos = 0
    while pos + TAR_HEADER <= len(buf):
        block = buf[pos : pos + TAR_HEADER]
        if block == _ZERO_BLOCK:
            return out  # the end of the archive (what follows is padding, as for tarfile)
        try:
            ti = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError:
            return None
        if ti.type not in _PLAIN_TYPES or ti.size < 0:
            return None
        ti.offset, ti.offset_data = pos, pos + TAR_HEADER
        if ti.isdir():
            ti.name = ti.name.rstrip("/")
        pos += TAR_HEADER
        if ti.isreg():
            pos += -(-ti.size // TAR_HEADER) * TAR_HEADER
            if ti.offset_data + ti.size > len(buf):
                return None  # truncated
        out.append((tar, ti))
    return None  # no end-of-archive marker: let tarfile decide
