"""``packages/`` is pure -- no database, no server -- and reads archives like the reference indexers:
expected-output tests on the real test data (as conda-index's), archive safety, multipart bodies."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
from tests.conftest import TESTDATA
from tests.support.packages import file_member, make_conda

from condavault.errors import InvalidRequest, PayloadTooLarge, UnsafePath
from condavault.packages.archive import Limits
from condavault.packages.multipart import FilesReader
from condavault.packages.spool import Received, check_sums, inspect, spool

LIMITS = Limits(max_decompressed_bytes=1 << 30, max_compression_ratio=250.0, max_members=500_000)
FIELDS = ("name", "version", "build", "build_number", "depends", "constrains", "subdir", "license",
          "license_family", "noarch", "track_features", "features", "timestamp", "md5", "size")
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
    reader = FilesReader("multipart/form-data; boundary=b0und", lambda: _temp(tmp_path), max_bytes=10_000,
                         max_files=5, memory_limit=1000)
    for i in range(0, len(body), 7):  # fed in small pieces, as a network delivers it
        reader.feed(body[i : i + 7])
    files = reader.close()
    assert [(n, r.size, r.sha256) for n, r in files] == [
        ("a.conda", 10, hashlib.sha256(small).hexdigest()), ("b.conda", 3000, hashlib.sha256(big).hexdigest())
    ]
    assert files[0][1].data == small and files[1][1].path is not None and files[1][1].path.read_bytes() == big
    reader.discard()
    assert list(tmp_path.glob("*.part")) == []


def test_multipart_limits_and_malformed_bodies(tmp_path: Path) -> None:
    def reader(**kw: int) -> FilesReader:
        return FilesReader("multipart/form-data; boundary=b0und", lambda: _temp(tmp_path),
                           **{"max_bytes": 100, "max_files": 2, "memory_limit": 50, **kw})

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
    unfinished.feed(b"--b0und\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.conda\"\r\n\r\nab")
    with pytest.raises(InvalidRequest, match="ended early"):
        unfinished.close()
