"""Air-gap bundles between two servers (two data folders, two databases): export on one, import on the
other with the real CLI in subprocesses; repodata equal byte for byte, py-rattler installs; incremental
bundles on top; a wrong base refused naming the bundle it needs; idempotent re-import; dry run; the
drop folder; an import killed with SIGKILL resumes without verifying the verified files again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from condavault.signing.keys import load_or_create
from tests.support.server import Server, start_server, stop_server

LINUX = [
    "dummy-a-0.1.0-hb0f4dca_0.conda",
    "dummy-b-0.1.0-hb0f4dca_0.conda",
    "dummy-c-0.1.0-hb0f4dca_0.conda",
    "dummy-d-0.1.0-hb0f4dca_0.conda",
]
LATER = ["dummy-f-0.1.0-hb0f4dca_0.conda", "dummy-g-0.1.0-hb0f4dca_0.conda"]
LAST = ["dummy-x-0.1.0-hb0f4dca_0.conda"]


def bundle_cli(
    server: Server, *args: str, check: bool = True, env: dict[str, str] | None = None, trusted: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real ``condavault`` CLI on ``server``'s data folder and database."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("CONDAVAULT_")}
    e.update(
        CONDAVAULT_DATA_DIR=str(server.settings.data_dir),
        CONDAVAULT_DATABASE_URL=server.settings.db_url,
        CONDAVAULT_TRUSTED_KEYS=json.dumps(trusted or []),
        COLUMNS="200",
        **(env or {}),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "condavault", *args], env=e, capture_output=True, text=True, timeout=600
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"condavault {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def export(server: Server, out: Path, *args: str) -> str:
    proc = bundle_cli(server, "bundle", "export", "--output", str(out), *args)
    return proc.stdout.split()[-1]  # the bundle id is the last word


def two_servers(tmp_path: Path, db_backend: str) -> Iterator[tuple[Server, Server, list[str]]]:
    """The connected server (``origin``) and an empty one (``inside``) that trusts its key."""
    origin, pg1 = start_server(tmp_path / "origin", db_backend)
    key = load_or_create(origin.settings).public.text
    inside, pg2 = start_server(tmp_path / "inside", db_backend, trusted_keys=[key])
    try:
        yield origin, inside, [key]
    finally:
        stop_server(inside, pg2)
        stop_server(origin, pg1)


@pytest.fixture
def pair(tmp_path: Path, db_backend: str) -> Iterator[tuple[Server, Server, list[str]]]:
    yield from two_servers(tmp_path, db_backend)


def upload(server: Server, channel: str, packages: Path, names: list[str]) -> None:
    for n in names:
        r = server.upload(channel, packages / "linux-64" / n)
        assert r.status_code == 200, r.text
    server.ctx.settle()


def repodata(server: Server, channel: str, subdir: str) -> bytes:
    with server.client() as c:
        r = c.get(f"/api/repo/{channel}/{subdir}/repodata.json")
        assert r.status_code == 200, r.text
        return r.content


def names_in(server: Server, channel: str) -> set[str]:
    return set(json.loads(repodata(server, channel, "linux-64")).get("packages.conda", {}))


def test_export_import_incremental_wrong_base_idempotent(pair, packages_dir: Path, tmp_path: Path) -> None:
    origin, inside, trusted = pair
    origin.channel("main")
    upload(origin, "main", packages_dir, LINUX)
    with origin.client() as c:  # a patch rides along: the published records are the patched ones
        r = c.put(
            "/api/channels/main/subdirs/linux-64/patch-instructions",
            json={"packages.conda": {LINUX[0]: {"depends": ["dummy-b"]}}},
        )
        assert r.status_code == 200, r.text
    origin.ctx.settle()
    b1 = export(origin, tmp_path / "b1", "--channel", "main")
    assert (tmp_path / "b1" / "manifest.json").is_file() and (tmp_path / "b1" / "manifest.sig").is_file()

    dry = bundle_cli(inside, "bundle", "import", str(tmp_path / "b1"), "--dry-run", trusted=trusted)
    assert "records: 4" in dry.stdout and "disk needed" in dry.stdout, dry.stdout
    with inside.client() as c:
        assert c.get("/api/channels/main").status_code == 404  # a dry run imports nothing

    out = bundle_cli(inside, "bundle", "import", str(tmp_path / "b1"), trusted=trusted)
    assert f"imported bundle {b1}" in out.stdout, out.stdout
    inside.ctx.settle()
    for sd in ("linux-64", "noarch"):
        assert repodata(inside, "main", sd) == repodata(origin, "main", sd)
    assert json.loads(repodata(inside, "main", "linux-64"))["packages.conda"][LINUX[0]]["depends"] == ["dummy-b"]

    # py-rattler solves and installs from the receiving server, with no other channel
    prefix = tmp_path / "rattler"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.support.rattler_client", f"{inside.repo}/main", str(prefix), "dummy-a"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "error" not in got, got
    assert any(p.startswith("dummy-a-0.1.0") for p in got["installed"]) and any(
        p.startswith("dummy-b-0.1.0") for p in got["installed"]
    ), got

    # incremental: two new files, one removed, the patch changed; then one more on top of that
    upload(origin, "main", packages_dir, LATER)
    with origin.client() as c:
        r = c.post("/api/channels/main/files/remove", json={"files": [f"linux-64/{LINUX[3]}"]})
        assert r.status_code == 200, r.text
        r = c.put(
            "/api/channels/main/subdirs/linux-64/patch-instructions",
            json={"packages.conda": {LINUX[1]: {"depends": ["dummy-c"]}}},
        )
        assert r.status_code == 200, r.text
    origin.ctx.settle()
    b2 = export(origin, tmp_path / "b2", "--channel", "main", "--since", b1)
    upload(origin, "main", packages_dir, LAST)
    b3 = export(origin, tmp_path / "b3", "--channel", "main", "--since", b2)
    m2 = json.loads((tmp_path / "b2" / "manifest.json").read_text())
    assert m2["parent_id"] == b1 and m2["targets"]["channel:main"]["records"] == 2
    assert m2["targets"]["channel:main"]["removed"] == 1

    wrong = bundle_cli(inside, "bundle", "import", str(tmp_path / "b3"), check=False, trusted=trusted)
    assert wrong.returncode == 2, wrong.stdout + wrong.stderr
    assert f"import bundle {b2} first" in wrong.stderr and "bundle_base_mismatch" in wrong.stderr, wrong.stderr
    assert names_in(inside, "main") == set(LINUX)  # refused whole

    bundle_cli(inside, "bundle", "import", str(tmp_path / "b2"), trusted=trusted)
    inside.ctx.settle()
    assert names_in(inside, "main") == set(LINUX[:3] + LATER)
    bundle_cli(inside, "bundle", "import", str(tmp_path / "b3"), trusted=trusted)
    inside.ctx.settle()
    for sd in ("linux-64", "noarch"):
        assert repodata(inside, "main", sd) == repodata(origin, "main", sd)

    again = bundle_cli(inside, "bundle", "import", str(tmp_path / "b2"), trusted=trusted)
    assert "imported before: nothing to do" in again.stdout
    with inside.client() as c:
        st = c.get("/api/bundles").json()
    assert [t["bundle_id"] for t in st["targets"] if t["target"] == "channel:main"] == [b3]
    assert {i["bundle_id"] for i in st["imports"]} == {b1, b2, b3}


def test_split_and_drop_folder(pair, packages_dir: Path, tmp_path: Path) -> None:
    origin, inside, trusted = pair
    origin.channel("media")
    upload(origin, "media", packages_dir, LINUX)
    bid = export(origin, tmp_path / "split", "--channel", "media", "--split", "4000")  # small media
    parts = sorted(p.name for p in (tmp_path / "split").iterdir())
    assert len(parts) >= 2 and all(p.startswith("part-") for p in parts), parts
    # the drop folder: the server's job imports it (on demand here; on airgap_import_cron otherwise)
    drop = inside.settings.airgap_path
    drop.mkdir(parents=True, exist_ok=True)
    os.rename(tmp_path / "split", drop / "split")
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
    assert j["result"]["bundles"] == [{"path": "split", "bundle_id": bid, "status": "imported", "records": 4}]
    inside.ctx.settle()
    assert repodata(inside, "media", "linux-64") == repodata(origin, "media", "linux-64")
    # the key to trust, as `keys show` prints it; what `bundle status` says on the receiving side
    assert bundle_cli(origin, "keys", "show").stdout.split() == trusted
    status = inside.cli("bundle", "status").stdout
    assert bid in status and "channel:media" in status, status


def test_killed_import_resumes_without_reverifying(pair, packages_dir: Path, tmp_path: Path) -> None:
    origin, inside, trusted = pair
    origin.channel("big")
    upload(origin, "big", packages_dir, LINUX + LATER + LAST)
    bid = export(origin, tmp_path / "b", "--channel", "big")
    e = {k: v for k, v in os.environ.items() if not k.startswith("CONDAVAULT_")}
    e.update(
        CONDAVAULT_DATA_DIR=str(inside.settings.data_dir),
        CONDAVAULT_DATABASE_URL=inside.settings.db_url,
        CONDAVAULT_TRUSTED_KEYS=json.dumps(trusted),
        CONDAVAULT_TEST_BUNDLE_PAUSE_AFTER="4",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "condavault", "bundle", "import", str(tmp_path / "b")],
        env=e,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    journal = inside.settings.data_dir / "bundles" / "journal" / f"{bid}.jsonl"
    for _ in range(1200):  # the test hook holds the import after 4 verified files (journal flushed)
        if journal.is_file() and len(journal.read_text().splitlines()) >= 4:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with inside.client() as c:
        assert c.get("/api/channels/big").status_code == 404  # nothing published by the killed run
    done = bundle_cli(inside, "bundle", "import", str(tmp_path / "b"), "--json", trusted=trusted)
    rep = json.loads(done.stdout)
    assert rep["status"] == "imported" and rep["resumed_files"] >= 4, rep
    assert rep["verified_files"] == rep["files"] - rep["resumed_files"]
    inside.ctx.settle()
    assert repodata(inside, "big", "linux-64") == repodata(origin, "big", "linux-64")
    assert not journal.exists()


def test_mirror_reads_a_bundle_folder_through_its_filters(pair, packages_dir: Path, tmp_path: Path) -> None:
    from tests.support.static_channel import create_mirror, run_mirror

    origin, inside, _trusted = pair
    origin.channel("src")
    upload(origin, "src", packages_dir, LINUX)
    export(origin, tmp_path / "b", "--channel", "src")
    # the inside network's own policy: dummy-b is not allowed in
    create_mirror(
        inside,
        "frombundle",
        str(tmp_path / "b" / "channels" / "src"),
        channel="filtered",
        filters={"exclude_specs": ["dummy-b"]},
    )
    run = run_mirror(inside, "frombundle")
    assert run["status"] == "completed", run
    inside.ctx.settle()
    assert names_in(inside, "filtered") == set(LINUX) - {LINUX[1]}
    # and the inside mirror's channel can travel on (--mirror exports the channel it fills)
    from condavault.airgap.export import export_bundle

    rep = export_bundle(inside.ctx, tmp_path / "onward", mirrors=["frombundle"])
    assert list(rep.targets) == ["channel:filtered"] and rep.records == len(LINUX) - 1
    # an altered repodata.json in the bundle: the run fails before reading anything
    repo = tmp_path / "b" / "channels" / "src" / "linux-64" / "repodata.json"
    repo.write_bytes(repo.read_bytes().replace(b"dummy-c", b"dummy-z"))
    bad = run_mirror(inside, "frombundle", full=True)
    assert bad["status"] == "failed" and "altered" in json.dumps(bad), bad
