"""``packages/`` is pure -- no database, no server -- and reads archives like the reference indexers:
expected-output tests on the real test data (as conda-index's), archive safety, multipart bodies."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard
from tests.conftest import TESTDATA
from tests.support.packages import file_member, link_member, make_conda

from condavault.errors import CorruptArchive, DecompressionLimit, InvalidRequest, PayloadTooLarge, UnsafePath
from condavault.packages import archive
from condavault.packages.archive import Limits
from condavault.packages.filename import parse_filename
from condavault.packages.multipart import FilesReader
from condavault.packages.spool import Received, check_sums, inspect, spool

LIMITS = Limits(max_decompressed_bytes=1 << 30, max_compression_ratio=250.0, max_members=500_000)
FIELDS = (
    "name",
    "version",
    "build",
    "build_number",
    "depends",
    "constrains",
    "subdir",
    "license",
    "license_family",
    "noarch",
    "track_features",
    "features",
    "timestamp",
    "md5",
    "size",
)
# hand-made fixtures whose records were renamed from other packages' bytes (not an indexer's output)
NOT_INDEXER_OUTPUT = ("conda-index-time-cut",)


def _packages() -> dict[str, Path]:
    return {hashlib.sha256(p.read_bytes()).hexdigest(): p for p in sorted((TESTDATA / "packages").glob("*/*"))}


@pytest.mark.needs_testdata
def test_records_match_what_conda_index_rattler_and_pixi_published_for_the_same_bytes() -> None:
    """Every package of the data set that a real channel's repodata lists (same sha256): our record
    equals the one conda-index / rattler-index published, field by field."""
    packages = _packages()
    compared = 0
    for rd in sorted((TESTDATA / "repodata").glob("**/repodata.json")):
        if any(part in NOT_INDEXER_OUTPUT for part in rd.parts):
            continue
        doc = json.loads(rd.read_text())
        for section in ("packages", "packages.conda"):
            for fn, expected in (doc.get(section) or {}).items():
                path = packages.get(expected.get("sha256"))
                if path is None:
                    continue
                received = Received.of_bytes(path.read_bytes())
                meta = inspect(received, path.name, LIMITS, path.parent.name)
                ours = {**meta.record, "md5": received.md5, "sha256": received.sha256, "size": received.size}
                for field in FIELDS:
                    a, b = ours.get(field), expected.get(field)
                    if a in (None, [], "") and b in (None, [], ""):
                        continue
                    assert a == b, f"{rd.relative_to(TESTDATA)} {fn}: {field} {a!r} != {b!r}"
                compared += 1
    assert compared >= 100, compared


@pytest.mark.needs_testdata
def test_every_package_of_the_data_set_reads() -> None:
    for path in _packages().values():
        received = Received.of_bytes(path.read_bytes())
        meta = inspect(received, path.name, LIMITS)
        stem = path.name.removesuffix(".conda").removesuffix(".tar.bz2")
        assert f"{meta.record['name']}-{meta.record['version']}-{meta.record['build']}" == stem
        assert meta.subdir == path.parent.name, path


def test_unsafe_member_paths_and_wrong_sums(tmp_path: Path) -> None:
    evil = make_conda(tmp_path, "evil", pkg_members=[file_member("../../etc/cron.d/x", b"x")])
    with pytest.raises(UnsafePath):
        inspect(Received.of_bytes(evil.read_bytes()), evil.name, LIMITS)
    good = make_conda(tmp_path, "good")
    r = Received.of_bytes(good.read_bytes())
    check_sums(r, good.name, expected_sha256=r.sha256, expected_size=r.size)
    with pytest.raises(InvalidRequest, match="sha256"):
        check_sums(r, good.name, expected_sha256="0" * 64)
    got = spool(lambda: _temp(tmp_path), 1 << 20, [good.read_bytes()[:100], good.read_bytes()[100:]])
    assert (got.sha256, got.md5, got.size) == (r.sha256, r.md5, r.size) and got.path is not None
    with pytest.raises(PayloadTooLarge):
        spool(lambda: _temp(tmp_path), 10, [b"x" * 11])
    assert [p.name for p in tmp_path.glob("*.part")] == [got.path.name]  # the refused one left nothing


def _temp(folder: Path) -> tuple[int, Path]:
    import tempfile

    fd, name = tempfile.mkstemp(dir=folder, suffix=".part")
    return fd, Path(name)


def _multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "b0und") -> bytes:
    out = io.BytesIO()
    for name, filename, data in parts:
        disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out.write(f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue()


def test_multipart_files_in_memory_and_spooled(tmp_path: Path) -> None:
    small, big = b"s" * 10, b"B" * 3000
    body = _multipart([("note", None, b"ignored"), ("file", "a.conda", small), ("file", "b.conda", big)])
    reader = FilesReader(
        "multipart/form-data; boundary=b0und", lambda: _temp(tmp_path), max_bytes=10_000, max_files=5, memory_limit=1000
    )
    for i in range(0, len(body), 7):  # fed in small pieces, as a network delivers it
        reader.feed(body[i : i + 7])
    files = reader.close()
    assert [(n, r.size, r.sha256) for n, r in files] == [
        ("a.conda", 10, hashlib.sha256(small).hexdigest()),
        ("b.conda", 3000, hashlib.sha256(big).hexdigest()),
    ]
    assert files[0][1].data == small and files[1][1].path is not None and files[1][1].path.read_bytes() == big
    reader.discard()
    assert list(tmp_path.glob("*.part")) == []


def test_multipart_limits_and_malformed_bodies(tmp_path: Path) -> None:
    def reader(**kw: int) -> FilesReader:
        return FilesReader(
            "multipart/form-data; boundary=b0und",
            lambda: _temp(tmp_path),
            **{"max_bytes": 100, "max_files": 2, "memory_limit": 50, **kw},
        )

    with pytest.raises(PayloadTooLarge, match="at most 2 files"):
        reader().feed(_multipart([("file", f"{i}.conda", b"x") for i in range(3)]))
    r = reader()
    with pytest.raises(PayloadTooLarge):
        r.feed(_multipart([("file", "a.conda", b"x" * 101)]))
    r.discard()
    assert list(tmp_path.glob("*.part")) == []  # the part spooled past memory_limit is gone too
    with pytest.raises(PayloadTooLarge, match="field"):
        reader().feed(_multipart([("note", None, b"x" * 70_000)]))
    with pytest.raises(InvalidRequest, match="boundary"):
        FilesReader("multipart/form-data", lambda: _temp(tmp_path), max_bytes=1, max_files=1)
    unfinished = reader()
    unfinished.feed(b'--b0und\r\nContent-Disposition: form-data; name="file"; filename="a.conda"\r\n\r\nab')
    with pytest.raises(InvalidRequest, match="ended early"):
        unfinished.close()


def _walk_log(data: bytes, filename: str) -> tuple[list[tuple[object, ...]], dict[str, bytes]]:
    """Everything a visitor of the walk sees (every member, its data), and the metadata files read."""
    seen: list[tuple[object, ...]] = []

    def visit(component: str, m: tarfile.TarInfo, read: Callable[..., bytes]) -> None:
        first = read(7) if m.isfile() else b""
        seen.append(
            (
                component,
                m.name,
                m.type,
                m.size if m.isfile() else 0,
                m.linkname,
                m.mode,
                m.mtime,
                first + (read() if m.isfile() else b""),
            )
        )

    info = archive.read_archive(data, parse_filename(filename), LIMITS, visit)
    return seen, info.files


@pytest.mark.needs_testdata
def test_the_in_memory_walk_of_small_components_sees_what_the_streaming_walk_sees(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Small components are read whole and their tar headers walked without ``tarfile``'s streaming
    machinery; every .conda of the data set gives the same members, data and metadata both ways."""
    fast_hits = 0
    real = archive._small_component

    def counting(*a: object) -> object:
        nonlocal fast_hits
        got = real(*a)  # type: ignore[arg-type]
        fast_hits += got is not None
        return got

    for path in sorted((TESTDATA / "packages").glob("*/*.conda")):
        data = path.read_bytes()
        monkeypatch.setattr(archive, "_small_component", counting)
        fast = _walk_log(data, path.name)
        monkeypatch.setattr(archive, "_small_component", lambda *a: None)
        assert fast == _walk_log(data, path.name), path
    assert fast_hits >= 300  # most components of real packages take the in-memory walk


def test_the_in_memory_walk_leaves_unusual_tars_to_tarfile(tmp_path: Path) -> None:
    """Long names (pax headers), devices, unsafe paths and damaged components: the in-memory walk steps
    aside (or finds the same thing) and the result is what the streaming walk says."""
    long_name = "share/" + "d" * 120 + "/x.txt"
    ok = make_conda(tmp_path, "longname", pkg_members=[file_member(long_name, b"x" * 3), link_member("a", "share")])
    names = [m[1] for m in _walk_log(ok.read_bytes(), ok.name)[0]]
    assert long_name in names and "a" in names
    dev = tarfile.TarInfo("dev/sda")
    dev.type = tarfile.BLKTYPE
    bad = make_conda(tmp_path, "device", pkg_members=[(dev, None)])
    with pytest.raises(UnsafePath, match="device"):
        inspect(Received.of_bytes(bad.read_bytes()), bad.name, LIMITS)
    evil = make_conda(tmp_path, "dotdot", pkg_members=[file_member("a/../../x", b"x")])
    with pytest.raises(UnsafePath):
        inspect(Received.of_bytes(evil.read_bytes()), evil.name, LIMITS)
    escape = make_conda(tmp_path, "symlink", pkg_members=[link_member("lib/x", "../../../etc/passwd")])
    with pytest.raises(UnsafePath):
        inspect(Received.of_bytes(escape.read_bytes()), escape.name, LIMITS)
    # a pkg tar cut short inside a member's data, compressed whole (so the zstd frame itself is sound)
    good = make_conda(tmp_path, "cut", pkg_members=[file_member("share/big.bin", bytes(5000))])
    with zipfile.ZipFile(good) as zf:
        parts = {n: zf.read(n) for n in zf.namelist()}
    pkg_name = next(n for n in parts if n.startswith("pkg-"))
    tar = zstandard.ZstdDecompressor().decompress(parts[pkg_name])
    parts[pkg_name] = zstandard.ZstdCompressor().compress(tar[:2048])
    cut = tmp_path / "cut2-1.0-0.conda"
    with zipfile.ZipFile(cut, "w") as zf:
        for n, raw in parts.items():
            zf.writestr(n.replace("cut-", "cut2-"), raw)
    with pytest.raises(CorruptArchive):
        inspect(Received.of_bytes(cut.read_bytes()), cut.name, LIMITS)
    # a tar bigger than the decompression limit is refused, whichever walk reads it
    tight = Limits(max_decompressed_bytes=4096, max_compression_ratio=250.0, max_members=100)
    with pytest.raises(DecompressionLimit):
        archive.read_archive(good.read_bytes(), parse_filename(good.name), tight)
