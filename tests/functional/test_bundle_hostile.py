"""Hostile bundles are rejected whole, with nothing imported: a tampered byte, an extra or missing file,
path traversal (folder and tar), a symlink, a decompression bomb inside a package, a tar bomb, a wrong or
unknown signature, and a replayed older bundle. Each is built in the test by editing a good bundle (and,
where the attack needs a valid signature, re-signing it with the exporting server's own key)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from condavault.airgap.export import export_bundle
from condavault.airgap.importer import Importer
from condavault.airgap.manifest import sign
from condavault.errors import Conflict, InvalidRequest
from condavault.signing.keys import SigningKey, load_or_create
from tests.functional.test_bundle import LATER, LINUX, bundle_cli, export, two_servers, upload
from tests.support.packages import file_member, make_conda
from tests.support.server import Server

PKG = f"channels/h/linux-64/{LINUX[0]}"


@pytest.fixture
def pair(tmp_path: Path, db_backend: str) -> Iterator[tuple[Server, Server, list[str]]]:
    yield from two_servers(tmp_path, db_backend)


def _manifest(b: Path) -> dict:
    return json.loads((b / "manifest.json").read_text())


def _resign(b: Path, doc: dict, key: SigningKey) -> None:
    raw = json.dumps(doc, indent=1, sort_keys=True).encode()
    (b / "manifest.json").write_bytes(raw)
    (b / "manifest.sig").write_bytes(sign(raw, key))


def _entry(doc: dict, path: str) -> dict:
    return next(f for f in doc["files"] if f["path"] == path)


def _rewrite(b: Path, doc: dict, rel: str, data: bytes) -> None:
    (b / rel).write_bytes(data)
    e = _entry(doc, rel)
    e["sha256"], e["size"] = hashlib.sha256(data).hexdigest(), len(data)


def tampered_byte(b: Path, key: SigningKey, tmp: Path) -> None:
    data = bytearray((b / PKG).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (b / PKG).write_bytes(bytes(data))


def extra_file(b: Path, key: SigningKey, tmp: Path) -> None:
    (b / "channels/h/linux-64/evil-1.0-0.conda").write_bytes(b"not listed")


def missing_file(b: Path, key: SigningKey, tmp: Path) -> None:
    (b / PKG).unlink()


def path_traversal(b: Path, key: SigningKey, tmp: Path) -> None:
    doc = _manifest(b)
    doc["files"].append({"path": "../outside.txt", "sha256": "0" * 64, "size": 1})
    (b.parent / "outside.txt").write_bytes(b"x")
    _resign(b, doc, key)


def symlink(b: Path, key: SigningKey, tmp: Path) -> None:
    outside = tmp / "elsewhere.conda"
    shutil.copyfile(b / PKG, outside)
    (b / PKG).unlink()
    os.symlink(outside, b / PKG)


def package_bomb(b: Path, key: SigningKey, tmp: Path) -> None:
    # a well-formed, correctly hashed and signed .conda whose payload expands 80 MB from a few KB
    bomb = make_conda(
        tmp,
        "dummy-a",
        "0.1.0",
        "hb0f4dca_0",
        "linux-64",
        pkg_members=[file_member("share/zeros", b"\0" * (80 * 1024 * 1024))],
        level=19,
    )
    data = bomb.read_bytes()
    doc = _manifest(b)
    _rewrite(b, doc, PKG, data)
    rec_path = doc["targets"]["channel:h"]["records_file"]
    lines = []
    for line in (b / rec_path).read_text().splitlines():
        d = json.loads(line)
        if d["file"] == PKG:
            r = json.loads(d["record"])
            r.update(sha256=hashlib.sha256(data).hexdigest(), md5=hashlib.md5(data).hexdigest(), size=len(data))
            d["record"] = json.dumps(r, sort_keys=True, separators=(",", ":"))
        lines.append(json.dumps(d))
    _rewrite(b, doc, rec_path, ("\n".join(lines) + "\n").encode())
    _resign(b, doc, key)


def wrong_signature(b: Path, key: SigningKey, tmp: Path) -> None:
    raw = (b / "manifest.json").read_bytes()
    (b / "manifest.json").write_bytes(raw.replace(b'"created": "', b'"created": "1', 1))


def unknown_key(b: Path, key: SigningKey, tmp: Path) -> None:
    stranger = SigningKey(Ed25519PrivateKey.generate())
    doc = _manifest(b)
    doc["origin_key"] = stranger.public.id
    _resign(b, doc, stranger)


def _tar_of(b: Path, extra: Callable[[tarfile.TarFile], None]) -> Path:
    out = b.with_suffix(".tar.gz")
    with tarfile.open(out, "w:gz") as tf:
        tf.add(b / "manifest.json", "manifest.json")
        tf.add(b / "manifest.sig", "manifest.sig")
        extra(tf)
    shutil.rmtree(b)
    return out


def tar_traversal(b: Path, key: SigningKey, tmp: Path) -> Path:
    def evil(tf: tarfile.TarFile) -> None:
        info = tarfile.TarInfo("../../escaped.txt")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"bad"))

    return _tar_of(b, evil)


def tar_bomb(b: Path, key: SigningKey, tmp: Path) -> Path:
    size = _entry(_manifest(b), PKG)["size"]

    def bomb(tf: tarfile.TarFile) -> None:  # a listed member, far longer than listed (zeros: tiny gzipped)
        info = tarfile.TarInfo(PKG)
        info.size = 200 * 1024 * 1024
        tf.addfile(info, io.BytesIO(b"\0" * info.size))
        assert info.size != size

    return _tar_of(b, bomb)


def tar_symlink(b: Path, key: SigningKey, tmp: Path) -> Path:
    def link(tf: tarfile.TarFile) -> None:
        info = tarfile.TarInfo(PKG)
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)

    return _tar_of(b, link)


ATTACKS = [
    tampered_byte,
    extra_file,
    missing_file,
    path_traversal,
    symlink,
    package_bomb,
    wrong_signature,
    unknown_key,
    tar_traversal,
    tar_bomb,
    tar_symlink,
]


def _nothing_imported(inside: Server, shas: set[str]) -> None:
    with inside.client() as c:
        assert c.get("/api/channels/h").status_code == 404
        assert c.get("/api/bundles").json()["imports"] == []
    assert not any(inside.ctx.blobs.exists(s) for s in shas)
    # nor a blob written ahead while verifying (staged files of the packages checked before the refusal)
    assert not list(inside.settings.blobs_path.glob("??/??/.*.part")), "staged blobs left behind"
    assert not list(inside.settings.data_dir.parent.glob("escaped.txt"))


def test_hostile_bundles_rejected_whole(pair, packages_dir: Path, tmp_path: Path) -> None:
    origin, inside, trusted = pair
    origin.channel("h")
    upload(origin, "h", packages_dir, LINUX)
    good = tmp_path / "good"
    export(origin, good, "--channel", "h")
    shas = {f["sha256"] for f in _manifest(good)["files"] if f["path"].endswith(".conda")}
    key = load_or_create(origin.settings)
    for attack in ATTACKS:
        work = tmp_path / attack.__name__
        work.mkdir()
        b = work / "bundle"
        shutil.copytree(good, b)
        target = attack(b, key, work) or b
        if attack is tampered_byte:  # the CLI as an operator runs it: exit code 2 and the error code
            proc = bundle_cli(inside, "bundle", "import", str(target), check=False, trusted=trusted)
            assert proc.returncode == 2, (attack.__name__, proc.stdout, proc.stderr)
            assert "bundle_rejected" in proc.stderr, (attack.__name__, proc.stderr)
        else:  # the same importer in the receiving server's process (faster than a CLI start per attack)
            with pytest.raises(InvalidRequest) as err:
                Importer(inside.ctx).run(target)
            assert err.value.code == "bundle_rejected", (attack.__name__, err.value)
        _nothing_imported(inside, shas)
    # the good bundle still imports (nothing above left state that gets in its way), here as a .tar.gz
    tar = tmp_path / "good.tar.gz"
    with tarfile.open(tar, "w:gz") as tf:
        for name in ("manifest.json", "manifest.sig"):
            tf.add(good / name, name)
        for f in _manifest(good)["files"]:
            tf.add(good / f["path"], f["path"])
    assert Importer(inside.ctx).run(tar).status == "imported"
    assert all(inside.ctx.blobs.exists(s) for s in shas)
    assert not any((inside.settings.data_dir / "bundles" / "unpacked").iterdir())  # the unpacked copy is gone
    assert not any((inside.settings.data_dir / "bundles" / "journal").iterdir())


def test_replayed_older_bundle_refused(pair, packages_dir: Path, tmp_path: Path) -> None:
    origin, inside, _trusted = pair
    origin.channel("h")
    upload(origin, "h", packages_dir, LINUX[:2])
    older = export_bundle(origin.ctx, tmp_path / "older", channels=["h"]).bundle_id
    upload(origin, "h", packages_dir, LINUX[2:])
    newer = export_bundle(origin.ctx, tmp_path / "newer", channels=["h"]).bundle_id
    assert Importer(inside.ctx).run(tmp_path / "newer").status == "imported"
    with pytest.raises(Conflict) as err:
        Importer(inside.ctx).run(tmp_path / "older")
    assert err.value.code == "bundle_replayed" and older in err.value.message and newer in err.value.message
    inside.ctx.settle()
    with inside.client() as c:
        repo = c.get("/api/repo/h/linux-64/repodata.json").json()
    assert set(repo["packages.conda"]) == set(LINUX)  # the newer state stands
    # the channel deleted on the receiving side: an incremental bundle cannot apply, a full one is needed
    with inside.client() as c:
        assert c.delete("/api/channels/h").status_code == 204
    upload(origin, "h", packages_dir, LATER[:1])
    export_bundle(origin.ctx, tmp_path / "inc", channels=["h"], since=newer)
    with pytest.raises(Conflict) as err:
        Importer(inside.ctx).run(tmp_path / "inc")
    assert err.value.code == "bundle_base_mismatch" and newer in err.value.message


@pytest.mark.parametrize("what", ["untrusted"])
def test_untrusted_receiver_refuses_dry_run_too(pair, packages_dir: Path, tmp_path: Path, what: str) -> None:
    origin, inside, _trusted = pair
    origin.channel("h")
    upload(origin, "h", packages_dir, LINUX[:1])
    export(origin, tmp_path / "b", "--channel", "h")
    proc = bundle_cli(inside, "bundle", "import", str(tmp_path / "b"), "--dry-run", check=False, trusted=[])
    assert proc.returncode == 2 and "does not trust" in proc.stderr, proc.stderr
