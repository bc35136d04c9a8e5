"""Every class of bad upload ends in its own 4xx code, and stores nothing: no blob, no row, no index change."""

from __future__ import annotations

import bz2
import io
import os
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from condavault.channels.models import Record
from tests.support.packages import file_member, link_member, make_conda, make_tar_bz2
from tests.support.server import Server, start_server, stop_server

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)


def _not_zip(d: Path) -> Path:
    p = d / "junk-1.0-0.conda"
    p.write_bytes(b"this is not an archive at all" * 10)
    return p


def _zip_without_info(d: Path) -> Path:
    p = d / "plainzip-1.0-0.conda"
    with zipfile.ZipFile(p, "w") as zf:
        zf.writestr("readme.txt", "hello")
    return p


def _wrong_extension(d: Path) -> Path:
    src = make_tar_bz2(d, "wrongext", "1.0", "0")
    p = d / "wrongext-1.0-0.conda"
    src.rename(p)
    return p


def _truncated_conda(d: Path) -> Path:
    p = make_conda(d, "trunc", "1.0", "0", pkg_members=[file_member("share/big.bin", bytes(range(256)) * 400)])
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p


def _truncated_bz2(d: Path) -> Path:
    p = make_tar_bz2(d, "truncbz", "1.0", "0", extra_members=[file_member("share/big.bin", bytes(range(256)) * 400)])
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p


def _corrupt_zstd(d: Path) -> Path:
    p = make_conda(d, "flipped", "1.0", "0")
    with zipfile.ZipFile(p) as zf:
        members = {i.filename: zf.read(i.filename) for i in zf.infolist()}
    info = bytearray(members["info-flipped-1.0-0.tar.zst"])
    for i in range(8, len(info), 7):
        info[i] ^= 0xFF
    members["info-flipped-1.0-0.tar.zst"] = bytes(info)
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return p


def _name_mismatch(d: Path) -> Path:
    return make_conda(d, "realname", "1.0", "0", filename="othername-1.0-0.conda")


def _version_mismatch_bz2(d: Path) -> Path:
    return make_tar_bz2(d, "verpkg", "2.0", "0", filename="verpkg-1.0-0.tar.bz2")


def _noarch_in_linux(d: Path) -> Path:
    return make_conda(d, "noarchlie", "1.0", "0", "linux-64", index_extra={"noarch": "generic"})


def _absolute_member(d: Path) -> Path:
    return make_conda(d, "abspath", "1.0", "0", pkg_members=[file_member("/etc/cron.d/evil", b"x")])


def _dotdot_member(d: Path) -> Path:
    return make_tar_bz2(d, "dotdot", "1.0", "0", extra_members=[file_member("lib/../../evil.sh", b"x")])


def _symlink_outside(d: Path) -> Path:
    return make_conda(d, "symlinky", "1.0", "0", pkg_members=[link_member("lib/passwd", "../../etc/passwd")])


def _absolute_symlink(d: Path) -> Path:
    return make_tar_bz2(d, "abslink", "1.0", "0", extra_members=[link_member("bin/sh", "/bin/sh")])


def _hardlink_outside(d: Path) -> Path:
    return make_conda(d, "hardlinky", "1.0", "0", pkg_members=[link_member("lib/x", "../outside", hard=True)])


def _bomb(d: Path) -> Path:
    """A tar header claiming 10 GiB behind a few bytes of zstd: refused before inflating anything."""
    info = tarfile.TarInfo("share/huge.bin")
    info.size = 10 * 1024**3
    header = info.tobuf(format=tarfile.GNU_FORMAT)
    import zstandard

    pkg = zstandard.ZstdCompressor().compress(header + bytes(512 * 64))
    p = make_conda(d, "bomb", "1.0", "0")
    with zipfile.ZipFile(p) as zf:
        members = {i.filename: zf.read(i.filename) for i in zf.infolist()}
    members["pkg-bomb-1.0-0.tar.zst"] = pkg
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return p


def _rezip_metadata(d: Path, name: str, tamper: Callable[[zipfile.ZipInfo, bytearray], None]) -> Path:
    """A .conda whose ``metadata.json`` member is deflated, then tampered with in the zip's bytes."""
    p = make_conda(d, name, "1.0", "0")
    with zipfile.ZipFile(p) as zf:
        members = {i.filename: zf.read(i.filename) for i in zf.infolist()}
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_STORED) as zf:
        for member, data in members.items():
            zf.writestr(member, data, compress_type=zipfile.ZIP_DEFLATED if member == "metadata.json" else None)
    raw = bytearray(p.read_bytes())
    with zipfile.ZipFile(p) as zf:
        tamper(zf.getinfo("metadata.json"), raw)
    p.write_bytes(bytes(raw))
    return p


def _central_header(raw: bytearray, name: str) -> int:
    """Offset of the central directory entry of ``name`` (where zipfile reads a member's method and flags)."""
    pos = raw.find(b"PK\x01\x02")
    while pos >= 0:
        size = int.from_bytes(raw[pos + 28 : pos + 30], "little")
        if raw[pos + 46 : pos + 46 + size] == name.encode():
            return pos
        pos = raw.find(b"PK\x01\x02", pos + 4)
    raise AssertionError(f"no central directory entry for {name}")


def _unknown_zip_method(d: Path) -> Path:
    """The compression method of a member set to a number no reader knows (both zip headers)."""

    def tamper(info: zipfile.ZipInfo, raw: bytearray) -> None:
        raw[info.header_offset + 8 : info.header_offset + 10] = (77).to_bytes(2, "little")
        central = _central_header(raw, info.filename)
        raw[central + 10 : central + 12] = (77).to_bytes(2, "little")

    return _rezip_metadata(d, "zipmethod", tamper)


def _corrupt_deflate(d: Path) -> Path:
    """The deflate stream of a member damaged (zlib's own error, not an OSError)."""

    def tamper(info: zipfile.ZipInfo, raw: bytearray) -> None:
        start = info.header_offset + 30 + len(info.filename.encode())
        for i in range(start, start + min(info.compress_size, 8)):
            raw[i] ^= 0xA5

    return _rezip_metadata(d, "deflatebad", tamper)


def _encrypted_member(d: Path) -> Path:
    """A member flagged as encrypted: zipfile asks for a password (a RuntimeError)."""

    def tamper(info: zipfile.ZipInfo, raw: bytearray) -> None:
        raw[info.header_offset + 6] |= 0x01
        raw[_central_header(raw, info.filename) + 8] |= 0x01

    return _rezip_metadata(d, "encrypted", tamper)


def _no_index(d: Path) -> Path:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info, data = file_member("info/about.json", b"{}")
        tar.addfile(info, io.BytesIO(data))
    p = d / "noindex-1.0-0.tar.bz2"
    p.write_bytes(bz2.compress(buf.getvalue()))
    return p


def _bad_filename(d: Path) -> Path:
    p = make_conda(d, "ok", "1.0", "0")
    q = d / "no_dashes.conda"
    p.rename(q)
    return q


CASES: list[tuple[str, Callable[[Path], Path], dict[str, str], int, str]] = [
    ("not-an-archive", _not_zip, {}, 400, "not_a_conda_archive"),
    ("zip-without-info", _zip_without_info, {}, 400, "not_a_conda_archive"),
    ("tarbz2-named-conda", _wrong_extension, {}, 400, "not_a_conda_archive"),
    ("truncated-conda", _truncated_conda, {}, 400, "corrupt_archive"),
    ("truncated-tar-bz2", _truncated_bz2, {}, 400, "corrupt_archive"),
    ("corrupt-zstd", _corrupt_zstd, {}, 400, "corrupt_archive"),
    ("unknown-zip-compression-method", _unknown_zip_method, {}, 400, "corrupt_archive"),
    ("corrupt-deflate-member", _corrupt_deflate, {}, 400, "corrupt_archive"),
    ("encrypted-zip-member", _encrypted_member, {}, 400, "corrupt_archive"),
    ("filename-vs-index-name", _name_mismatch, {}, 400, "filename_mismatch"),
    ("filename-vs-index-version", _version_mismatch_bz2, {}, 400, "filename_mismatch"),
    ("noarch-declaring-linux", _noarch_in_linux, {}, 400, "subdir_mismatch"),
    (
        "expected-subdir",
        lambda d: make_conda(d, "subdirpkg", "1.0", "0", "noarch"),
        {"subdir": "linux-64"},
        400,
        "subdir_mismatch",
    ),
    ("absolute-member", _absolute_member, {}, 400, "unsafe_path"),
    ("dotdot-member", _dotdot_member, {}, 400, "unsafe_path"),
    ("symlink-outside", _symlink_outside, {}, 400, "unsafe_path"),
    ("absolute-symlink", _absolute_symlink, {}, 400, "unsafe_path"),
    ("hardlink-outside", _hardlink_outside, {}, 400, "unsafe_path"),
    ("decompression-bomb", _bomb, {}, 400, "decompression_limit_exceeded"),
    ("missing-index-json", _no_index, {}, 400, "missing_metadata"),
    ("bad-filename", _bad_filename, {}, 400, "invalid_filename"),
    ("wrong-sha256", lambda d: make_conda(d, "shapkg", "1.0", "0"), {"sha256": "0" * 64}, 400, "checksum_mismatch"),
]


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory: pytest.TempPathFactory, db_backend: str) -> Iterator[Server]:
    handle, pg = start_server(tmp_path_factory.mktemp("limited"), db_backend, max_upload_bytes=64 * 1024)
    handle.channel("bad")
    make_conda(tmp_path_factory.mktemp("good"), "good", "1.0", "0")
    try:
        yield handle
    finally:
        stop_server(handle, pg)


def _state(server: Server) -> tuple[int, int, str]:
    server.ctx.settle()
    blobs = sum(1 for _ in server.ctx.blobs.iter_hashes())
    with server.ctx.db.session() as s:
        rows = s.scalar(select(func.count()).select_from(Record)) or 0
    with server.client(None) as c:
        etag = c.get("/api/repo/bad/noarch/repodata.json").headers["etag"]
    return blobs, rows, etag


@pytest.mark.parametrize(("label", "build", "params", "status", "code"), CASES, ids=[c[0] for c in CASES])
def test_bad_upload_is_rejected_and_leaves_nothing(
    limited_server: Server,
    tmp_path: Path,
    label: str,
    build: Callable[[Path], Path],
    params: dict[str, str],
    status: int,
    code: str,
) -> None:
    path = build(tmp_path)
    before = _state(limited_server)
    r = limited_server.upload("bad", path, **params)
    assert r.status_code == status, (label, r.text)
    err = r.json()["error"]
    assert err["code"] == code, (label, err)
    assert err["message"]
    assert _state(limited_server) == before
    assert not any(limited_server.ctx.blobs.tmp.iterdir()), "temp files left behind"


def test_oversized_upload_is_413_and_leaves_nothing(limited_server: Server, tmp_path: Path) -> None:
    noise = file_member("share/rand.bin", os.urandom(100_000))
    big = make_conda(tmp_path, "big", "1.0", "0", pkg_members=[noise])
    before = _state(limited_server)
    r = limited_server.upload("bad", big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large"
    assert _state(limited_server) == before
    proc = limited_server.cli("upload", "bad", str(big), check=False)
    assert proc.returncode == 2 and "payload_too_large" in proc.stdout + proc.stderr


def test_cli_reports_each_bad_file_and_keeps_going(limited_server: Server, tmp_path: Path) -> None:
    good = make_conda(tmp_path, "fine", "1.0", "0")
    bad = _symlink_outside(tmp_path)
    proc = limited_server.cli("upload", "bad", str(bad), str(good), check=False)
    assert proc.returncode == 2
    out = proc.stdout + proc.stderr
    assert "unsafe_path" in out and "1 created" in out
    with limited_server.client(None) as c:
        files = c.get("/api/repo/bad/noarch/repodata.json").json()["packages.conda"]
    assert "fine-1.0-0.conda" in files and "symlinky-1.0-0.conda" not in files


def test_unknown_channel_and_anonymous_writes(limited_server: Server, tmp_path: Path) -> None:
    pkg = make_conda(tmp_path, "anon", "1.0", "0")
    r = limited_server.upload("bad", pkg, token=None)
    assert r.status_code == 401
    r = limited_server.upload("no-such-channel", pkg)
    assert r.status_code == 404 and r.json()["error"]["code"] == "channel_not_found"
    with limited_server.client() as c:
        r = c.post("/api/channels", json={"name": "Bad Name!"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_name"
        r = c.post("/api/channels", json={"name": "linux-64"})
        assert r.status_code == 400
        r = c.post("/api/channels", json={"name": "bad"})
        assert r.status_code == 409 and r.json()["error"]["code"] == "channel_exists"
        r = c.post("/api/channels", json={"name": "x", "unknown": 1})
        assert r.status_code == 422
        r = c.put("/api/channels/bad/subdirs/noarch/patch-instructions", json={"patch_instructions_version": 9})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_patch_instructions"
