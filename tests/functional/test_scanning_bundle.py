"""Bundle import goes through the scanning stage: a signed bundle holding a package the receiving server
judges malicious (here: its sha256 is on the receiver's block list) is refused whole, naming the rule, and
nothing of it is imported; once the entry is gone, the same bundle imports."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from condavault.airgap.importer import Importer
from condavault.channels.models import Channel
from condavault.errors import InvalidRequest
from condavault.scanning import services as svc
from tests.functional.test_bundle import LINUX, export, two_servers, upload
from tests.support.server import Server


@pytest.fixture
def pair(tmp_path: Path, db_backend: str) -> Iterator[tuple[Server, Server, list[str]]]:
    yield from two_servers(tmp_path, db_backend)


def test_bundle_with_a_blocked_package_is_refused_whole(pair, packages_dir: Path, tmp_path: Path) -> None:
    origin, inside, _trusted = pair
    origin.channel("sb")
    upload(origin, "sb", packages_dir, LINUX[:2])
    bundle = tmp_path / "bundle"
    export(origin, bundle, "--channel", "sb")
    bad = hashlib.sha256((packages_dir / "linux-64" / LINUX[1]).read_bytes()).hexdigest()
    svc.import_blocklist(inside.ctx, [(bad, "test")], "test", None)
    inside.ctx.domains.scanning.blocked.invalidate()
    with pytest.raises(InvalidRequest) as err:
        Importer(inside.ctx).run(bundle)
    assert err.value.code == "bundle_rejected"
    assert "quarantined" in err.value.message and "blocklist" in err.value.message, err.value.message
    with inside.ctx.db.session() as s:
        assert s.scalar(select(Channel).where(Channel.name == "sb")) is None
    with inside.client() as c:
        assert all(i["state"] != "done" for i in c.get("/api/bundles").json()["imports"])
    assert not inside.ctx.blobs.exists(bad)
    assert svc.remove_blocked(inside.ctx, bad, None)
    inside.ctx.domains.scanning.blocked.invalidate()
    rep = Importer(inside.ctx).run(bundle)
    inside.ctx.settle()
    with inside.client() as c:  # an imported channel is private
        rd = c.get("/api/repo/sb/linux-64/repodata.json").json()
    assert set(rd.get("packages.conda", {})) == set(LINUX[:2]), (rep, rd)
