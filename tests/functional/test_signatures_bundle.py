"""Carried signatures and CEP 50 sidecars survive an air-gap bundle (export on one server, import on another,
both real, with the real CLI) and a copy / move between channels (docs/signing.md)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.functional.test_bundle import bundle_cli, export, two_servers
from tests.support.server import Server
from tests.support.signed_upstream import Upstream, check_carried, served, signed_upstream, trust
from tests.support.static_channel import create_mirror, repodata_files, run_mirror


@pytest.fixture(scope="module")
def upstream(packages_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    yield from signed_upstream(packages_dir, tmp_path_factory.mktemp("signed-upstream"))


@pytest.fixture
def pair(tmp_path: Path, db_backend: str) -> Iterator[tuple[Server, Server, list[str]]]:
    yield from two_servers(tmp_path, db_backend)


def test_bundle_and_copies_carry_signatures_and_sidecars(
    pair: tuple[Server, Server, list[str]], upstream: Upstream, tmp_path: Path
) -> None:
    origin, inside, trusted = pair
    create_mirror(origin, "signed", upstream.chan.url, filters={"signature_keys": [upstream.key_hex]})
    assert run_mirror(origin, "signed")["status"] == "completed"
    files = set(repodata_files(origin, "signed"))
    check_carried(origin, "signed", upstream, files)

    export(origin, tmp_path / "b1", "--channel", "signed")
    sidecars = sorted((tmp_path / "b1").rglob("*.sigs.*"))
    assert len(sidecars) == len(upstream.sidecars)  # in the bundle, listed (and so verified) like any file
    # a copy of the bundle whose sidecar was altered (one byte) is refused as a whole, naming the file
    shutil.copytree(tmp_path / "b1", tmp_path / "bad")
    victim = tmp_path / "bad" / sidecars[0].relative_to(tmp_path / "b1")
    data = bytearray(victim.read_bytes())
    data[-3] ^= 0x01
    victim.write_bytes(bytes(data))
    bad = bundle_cli(inside, "bundle", "import", str(tmp_path / "bad"), check=False, trusted=trusted)
    assert bad.returncode != 0 and victim.name in bad.stdout + bad.stderr, (bad.stdout, bad.stderr)
    with inside.client() as c:
        assert c.get("/api/channels/signed").status_code == 404

    bundle_cli(inside, "bundle", "import", str(tmp_path / "b1"), trusted=trusted)
    inside.ctx.settle()
    check_carried(inside, "signed", upstream, files)
    assert served(inside, "signed")["signatures"] == served(origin, "signed")["signatures"]
    for fn in upstream.signed_trusted:  # the outcome rides along with the bundle the receiver trusts
        assert trust(inside, "signed", fn)["status"] == "verified"

    # copy and move between channels keep them; the source of a move loses the file and its row
    inside.channel("copied")
    inside.channel("moved")
    signed_fn = sorted(upstream.signed_trusted)[0]
    side_fn = next(fn for fn in upstream.sidecars if fn not in upstream.repodata["signatures"])
    with inside.client() as c:
        r = c.post(
            "/api/channels/signed/files/copy",
            json={"to": "copied", "files": [f"noarch/{signed_fn}", f"noarch/{side_fn}"]},
        )
        assert r.status_code == 200, r.text
        r = c.post(
            "/api/channels/signed/files/copy", json={"to": "moved", "files": [f"noarch/{side_fn}"], "move": True}
        )
        assert r.status_code == 200, r.text
    inside.ctx.settle()
    check_carried(inside, "copied", upstream, {signed_fn, side_fn})
    check_carried(inside, "moved", upstream, {side_fn})
    assert trust(inside, "copied", signed_fn)["status"] == "verified"
    assert side_fn not in repodata_files(inside, "signed")
