"""Split bundles (``--split``) taken from wherever the parts are: the part folders given one by one (as if
each came on its own medium), a quoted glob, the first part with its siblings; a missing part refuses the
bundle and names it; the drop folder waits until every part is there; a mirror reads a split bundle."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.functional.test_bundle import LINUX, bundle_cli, export, names_in, repodata, two_servers, upload
from tests.support.server import Server


@pytest.fixture
def pair(tmp_path: Path, db_backend: str) -> Iterator[tuple[Server, Server, list[str]]]:
    yield from two_servers(tmp_path, db_backend)


def _split(origin, packages_dir: Path, tmp_path: Path, channel: str) -> tuple[str, list[Path]]:
    origin.channel(channel)
    upload(origin, channel, packages_dir, LINUX)
    bid = export(origin, tmp_path / "split", "--channel", channel, "--split", "4000")  # small media
    parts = sorted((tmp_path / "split").iterdir())
    assert len(parts) >= 3 and all(p.name.startswith("part-") for p in parts), parts
    return bid, parts


def test_parts_from_several_places_missing_part_named(pair, packages_dir: Path, tmp_path: Path) -> None:
    origin, inside, trusted = pair
    bid, parts = _split(origin, packages_dir, tmp_path, "media")
    # each part on its own "medium"
    media = []
    for i, p in enumerate(parts):
        dest = tmp_path / f"usb{i}" / p.name
        dest.parent.mkdir()
        shutil.move(p, dest)
        media.append(dest)

    # one part left out: refused whole, naming it; nothing imported
    short = bundle_cli(inside, "bundle", "import", *map(str, media[:-1]), check=False, trusted=trusted)
    assert short.returncode == 2, short.stdout + short.stderr
    assert "bundle_rejected" in short.stderr and media[-1].name in short.stderr, short.stderr
    with inside.client() as c:
        assert c.get("/api/channels/media").status_code == 404

    # a part of another bundle in place of one of ours: refused
    other_bid, other_parts = _split(origin, packages_dir, tmp_path / "o", "other")
    mixed = bundle_cli(
        inside, "bundle", "import", *map(str, media[:-1]), str(other_parts[-1]), check=False, trusted=trusted
    )
    assert mixed.returncode == 2 and "another bundle" in mixed.stderr, mixed.stderr

    # every part, in any order, from several places
    out = bundle_cli(inside, "bundle", "import", *map(str, reversed(media)), trusted=trusted)
    assert f"imported bundle {bid}" in out.stdout, out.stdout
    inside.ctx.settle()
    assert repodata(inside, "media", "linux-64") == repodata(origin, "media", "linux-64")

    # a quoted glob is expanded by the command: the set is opened whole (and found imported before)
    again = bundle_cli(inside, "bundle", "import", str(tmp_path / "usb*" / "part-*"), trusted=trusted)
    assert "imported before: nothing to do" in again.stdout, again.stdout

    # the first part alone, its siblings beside it (copied into one folder)
    together = tmp_path / "together"
    together.mkdir()
    for p in other_parts:
        shutil.copytree(p, together / p.name)
    (together / "stray.txt").write_text("not a part")  # the folder of a split bundle holds its parts only
    stray = bundle_cli(inside, "bundle", "import", str(together), check=False, trusted=trusted)
    assert stray.returncode == 2 and "stray.txt" in stray.stderr, stray.stderr
    (together / "stray.txt").unlink()
    first = bundle_cli(inside, "bundle", "import", str(together / "part-001"), "--json", trusted=trusted)
    rep = json.loads(first.stdout)
    assert rep["bundle_id"] == other_bid and rep["status"] == "imported" and rep["records"] == len(LINUX), rep


def _scan(inside) -> dict:
    with inside.client() as c:
        r = c.post("/api/bundles/scan")
        assert r.status_code == 202, r.text
        job = r.json()["job_id"]
        for _ in range(600):
            j = c.get(f"/api/jobs/{job}").json()
            if j["state"] in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.1)
    assert j["state"] == "succeeded", j
    return j["result"]


def test_drop_folder_waits_for_every_part(pair, packages_dir: Path, tmp_path: Path) -> None:
    origin, inside, _trusted = pair
    bid, parts = _split(origin, packages_dir, tmp_path, "media")
    drop = inside.settings.airgap_path
    drop.mkdir(parents=True, exist_ok=True)
    shutil.move(parts[0], drop / parts[0].name)  # loose part folders, dropped as the media arrive
    res = _scan(inside)
    assert [b["status"] for b in res["bundles"]] == ["incomplete"], res
    assert res["bundles"][0]["missing_parts"] == list(range(2, len(parts) + 1)), res
    with inside.client() as c:
        assert c.get("/api/channels/media").status_code == 404
    for p in parts[1:]:
        shutil.move(p, drop / p.name)
    res = _scan(inside)
    assert [(b["status"], b.get("bundle_id")) for b in res["bundles"]] == [("imported", bid)], res
    inside.ctx.settle()
    assert repodata(inside, "media", "linux-64") == repodata(origin, "media", "linux-64")


def test_mirror_reads_a_split_bundle(pair, packages_dir: Path, tmp_path: Path) -> None:
    from tests.support.static_channel import create_mirror, run_mirror

    origin, inside, _trusted = pair
    _bid, parts = _split(origin, packages_dir, tmp_path, "src")
    create_mirror(
        inside,
        "fromsplit",
        str(parts[0] / "channels" / "src"),
        channel="filtered",
        filters={"exclude_specs": ["dummy-b"]},
    )
    run = run_mirror(inside, "fromsplit")
    assert run["status"] == "completed", run
    inside.ctx.settle()
    assert names_in(inside, "filtered") == set(LINUX) - {LINUX[1]}
    with inside.client() as c:  # the bytes are the bundle's
        for fn in set(LINUX) - {LINUX[1]}:
            r = c.get(f"/api/repo/filtered/linux-64/{fn}")
            assert r.status_code == 200
            want = json.loads(repodata(origin, "src", "linux-64"))["packages.conda"][fn]["sha256"]
            assert hashlib.sha256(r.content).hexdigest() == want
    # an altered repodata.json in one part: the run fails before reading anything
    repo = next((tmp_path / "split").glob("part-*/channels/src/linux-64/repodata.json"))
    repo.write_bytes(repo.read_bytes().replace(b"dummy-c", b"dummy-z"))
    bad = run_mirror(inside, "fromsplit", full=True)
    assert bad["status"] == "failed" and "altered" in json.dumps(bad), bad
