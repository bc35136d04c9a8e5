"""``condavault bundle env``: an environment as a self-contained channel folder, installed with no network.

Real server (SQLite and PostgreSQL), real packages from the test data set uploaded over HTTP, the real CLI
in a subprocess against the server's data folder and database, and real py-rattler installs (in a
subprocess whose only channel is the bundle folder and whose HTTP proxies point at a closed port, so any
network access fails the install).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from condavault.airgap.env import BundleBytesMissing, EnvRequest, plan_env_bundle, virtual_packages
from condavault.errors import CondavaultError
from tests.support.server import Server, free_port
from tests.support.static_channel import StaticChannel, build_channel, create_mirror, run_mirror

CHANNEL = "envsrc"
EXTRA = "envextra"
NOARCH = [
    "dependency-1.0-0.conda",
    "dependency-2.0-0.conda",
    "dependent-1.0-0.conda",
    "dependent-2.0-0.conda",
    "another_dependent-1.0-0.conda",
    "another_dependent-2.0-0.conda",
    "unsatisfiable-1.0-0.conda",
    "versioned-1.0-0.conda",
    "versioned-2.0-0.conda",
]
LINUX = ["dummy-a-0.1.0-hb0f4dca_0.conda", "dummy-c-0.1.0-hb0f4dca_0.conda", "cuda-0.1.0-h055459d_0.conda"]
EXTRA_LINUX = ["dummy-g-0.1.0-hb0f4dca_0.conda", "dummy-b-0.1.0-hb0f4dca_0.conda"]
SOLVED = {
    "noarch/another_dependent-2.0-0.conda",
    "noarch/dependent-2.0-0.conda",
    "noarch/dependency-2.0-0.conda",
    "linux-64/dummy-a-0.1.0-hb0f4dca_0.conda",
    "linux-64/dummy-c-0.1.0-hb0f4dca_0.conda",
}

# Solve (or take the records of an explicit file) and install from the bundle folder only, offline.
INSTALL = r"""
import asyncio, json, os, sys
from pathlib import Path
import rattler
from rattler import Channel, Gateway, Platform, SparseRepoData, install, solve

folder, prefix, explicit, specs = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]

async def main():
    channel = Channel((folder / "channel").as_uri())
    if explicit != "-":
        lines = [l.strip() for l in open(explicit) if l.strip() and not l.startswith(("#", "@"))]
        wanted = {l.split("#")[0]: l.split("#")[1] for l in lines}
        records = []
        for sd in ("linux-64", "noarch"):
            repo = SparseRepoData(channel, sd, folder / "channel" / sd / "repodata.json")
            for name in repo.package_names():
                for rec in repo.load_records(rattler.PackageName(name)):
                    if str(rec.url) in wanted:
                        assert rec.sha256.hex() == wanted.pop(str(rec.url)), rec.url
                        records.append(rec)
        assert not wanted, f"explicit lines without a record in the folder: {sorted(wanted)}"
    else:
        gateway = Gateway(cache_dir=os.path.join(prefix, "cache"))
        records = await solve(sources=[channel], specs=specs, gateway=gateway,
                              platforms=[Platform("linux-64"), Platform("noarch")], virtual_packages=[])
    await install(records, target_prefix=os.path.join(prefix, "env"), cache_dir=os.path.join(prefix, "pkgs"),
                  show_progress=False)
    meta = os.listdir(os.path.join(prefix, "env", "conda-meta"))
    return sorted(m[:-5] for m in meta if m.endswith(".json"))

print(json.dumps(asyncio.run(main())), flush=True)
os._exit(0)  # py-rattler's runtime threads sometimes crash at interpreter shutdown, after the work is done
"""


@pytest.fixture(scope="module")
def loaded(shared_server: Server, packages_dir: Path) -> Iterator[Server]:
    for name in (CHANNEL, EXTRA):
        shared_server.channel(name)
    for fn in NOARCH:
        assert shared_server.upload(CHANNEL, packages_dir / "noarch" / fn).status_code in (200, 201)
    for fn in LINUX:
        assert shared_server.upload(CHANNEL, packages_dir / "linux-64" / fn).status_code in (200, 201)
    for fn in EXTRA_LINUX:
        assert shared_server.upload(EXTRA, packages_dir / "linux-64" / fn).status_code in (200, 201)
    yield shared_server


def bundle_env(server: Server, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return server.cli(
        "--data-dir",
        str(server.settings.data_dir),
        "bundle",
        "env",
        *args,
        check=check,
        env={"CONDAVAULT_DATABASE_URL": server.settings.db_url},
    )


def offline_install(
    folder: Path, prefix: Path, *, explicit: Path | None = None, specs: tuple[str, ...] = ()
) -> list[str]:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there: any HTTP(S) request fails
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(prefix),
        "HTTP_PROXY": dead,
        "HTTPS_PROXY": dead,
        "http_proxy": dead,
        "https_proxy": dead,
        "ALL_PROXY": dead,
        "NO_PROXY": "",
    }
    proc = subprocess.run(
        [sys.executable, "-c", INSTALL, str(folder), str(prefix), str(explicit) if explicit else "-", *specs],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    names: list[str] = json.loads(proc.stdout.strip().splitlines()[-1])
    return names


def folder_files(folder: Path) -> set[str]:
    return {f"{p.parent.name}/{p.name}" for p in (folder / "channel").glob("*/*") if p.name != "repodata.json"}


def leftovers(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name)


def served_records(server: Server, channel: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    with server.client() as c:
        for sd in ("linux-64", "noarch"):
            r = c.get(f"/api/repo/{channel}/{sd}/repodata.json")
            if r.status_code == 404 and sd != "noarch":
                continue  # a channel without packages of that platform
            assert r.status_code == 200, r.text
            data = r.json()
            for key in ("packages", "packages.conda"):
                for fn, rec in data.get(key, {}).items():
                    out[f"{sd}/{fn}"] = rec
    return out


def test_solved_bundle_installs_offline(loaded: Server, tmp_path: Path) -> None:
    out = tmp_path / "env"
    proc = bundle_env(
        loaded,
        "--channel",
        CHANNEL,
        "--spec",
        "another_dependent",
        "--spec",
        "dummy-a",
        "--platform",
        "linux-64",
        "--output",
        str(out),
    )
    assert "wrote" in proc.stdout
    assert folder_files(out) == SOLVED
    # the files are the server's bytes, and each subdir's repodata lists exactly them, as served
    served = served_records(loaded, CHANNEL)
    for key in SOLVED:
        assert hashlib.sha256((out / "channel" / key).read_bytes()).hexdigest() == served[key]["sha256"]
    for sd in ("linux-64", "noarch"):
        repodata = json.loads((out / "channel" / sd / "repodata.json").read_text())
        assert repodata["info"]["subdir"] == sd
        listed = {f"{sd}/{fn}": rec for fn, rec in repodata["packages.conda"].items()}
        assert listed == {k: served[k] for k in SOLVED if k.startswith(sd + "/")}
    # the explicit file: @EXPLICIT, dependencies first, file:// URLs into the folder with sha256 anchors
    explicit = out / "environment-linux-64.txt"
    lines = explicit.read_text().splitlines()
    assert "# platform: linux-64" in lines and "@EXPLICIT" in lines
    urls = [line for line in lines if line.startswith("file://")]
    assert len(urls) == len(SOLVED)
    order = [u.split("#")[0].rsplit("/", 1)[1] for u in urls]
    assert (
        order.index("dependency-2.0-0.conda")
        < order.index("dependent-2.0-0.conda")
        < order.index("another_dependent-2.0-0.conda")
    )
    assert order.index("dummy-c-0.1.0-hb0f4dca_0.conda") < order.index("dummy-a-0.1.0-hb0f4dca_0.conda")
    for url in urls:
        path, anchor = url.split("#")
        assert path.startswith((out / "channel").as_uri() + "/")
        assert hashlib.sha256(Path(path[len("file://") :]).read_bytes()).hexdigest() == anchor
    env_yml = (out / "environment.yml").read_text()
    assert (out / "channel").as_uri() in env_yml and "nodefaults" in env_yml
    assert "dummy-a=0.1.0=hb0f4dca_0" in env_yml
    # a real client installs from the folder alone: solving again, and from the explicit file
    expected = [
        "another_dependent-2.0-0",
        "dependency-2.0-0",
        "dependent-2.0-0",
        "dummy-a-0.1.0-hb0f4dca_0",
        "dummy-c-0.1.0-hb0f4dca_0",
    ]
    assert offline_install(out, tmp_path / "p1", specs=("another_dependent", "dummy-a")) == expected
    assert offline_install(out, tmp_path / "p2", explicit=explicit) == expected
    assert leftovers(tmp_path) == []


def test_spec_constraints_and_several_channels(loaded: Server, tmp_path: Path) -> None:
    out = tmp_path / "env"
    bundle_env(
        loaded,
        "-c",
        CHANNEL,
        "-c",
        EXTRA,
        "-s",
        "dependent <2",
        "-s",
        "dummy-g",
        "-p",
        "linux-64",
        "-o",
        str(out),
        "--name",
        "tools",
        "--base-url",
        "file:///media/usb/tools/",
        "--explicit-hash",
        "md5",
        "--no-fetch",
    )
    assert folder_files(out) == {
        "noarch/dependent-1.0-0.conda",
        "noarch/dependency-1.0-0.conda",
        "linux-64/dummy-g-0.1.0-hb0f4dca_0.conda",
        "linux-64/dummy-b-0.1.0-hb0f4dca_0.conda",
    }
    summary = json.loads((out / "bundle.json").read_text())
    assert summary["channels"] == [CHANNEL, EXTRA] and summary["source"] == "solve"
    assert {p["filename"]: p["channel"] for p in summary["packages"]}["dummy-g-0.1.0-hb0f4dca_0.conda"] == EXTRA
    env_yml = (out / "environment.yml").read_text()
    assert "name: tools" in env_yml and "- file:///media/usb/tools/channel\n" in env_yml
    md5s = {p["filename"]: p["md5"] for p in summary["packages"]}
    lines = [line for line in (out / "environment-linux-64.txt").read_text().splitlines() if "://" in line]
    assert sorted(lines) == sorted(
        f"file:///media/usb/tools/channel/{p['subdir']}/{p['filename']}#{md5s[p['filename']]}"
        for p in summary["packages"]
    )
    assert offline_install(out, tmp_path / "p", specs=("dependent", "dummy-g")) == [
        "dependency-1.0-0",
        "dependent-1.0-0",
        "dummy-b-0.1.0-hb0f4dca_0",
        "dummy-g-0.1.0-hb0f4dca_0",
    ]


def test_patches_and_removals_carry_into_the_bundle(loaded: Server, packages_dir: Path, tmp_path: Path) -> None:
    """The bundle holds the records as the server serves them: a repodata patch (new depends) and a
    removal decide the solve, and the folder's repodata carries the patched record."""
    channel = loaded.channel("envpatched")
    for fn in ("dependency-1.0-0.conda", "dependency-2.0-0.conda", "dependent-1.0-0.conda", "dependent-2.0-0.conda"):
        assert loaded.upload(channel, packages_dir / "noarch" / fn).status_code in (200, 201)
    patch = {
        "packages.conda": {"dependent-1.0-0.conda": {"depends": ["dependency >=2.0"]}},
        "remove": ["dependent-2.0-0.conda"],
    }
    with loaded.client() as c:
        r = c.put(f"/api/channels/{channel}/subdirs/noarch/patch-instructions", json=patch)
        assert r.status_code == 200, r.text
    out = tmp_path / "env"
    bundle_env(loaded, "-c", channel, "-s", "dependent", "-p", "linux-64", "-o", str(out))
    assert folder_files(out) == {"noarch/dependent-1.0-0.conda", "noarch/dependency-2.0-0.conda"}
    noarch = json.loads((out / "channel" / "noarch" / "repodata.json").read_text())["packages.conda"]
    assert noarch["dependent-1.0-0.conda"]["depends"] == ["dependency >=2.0"]
    assert noarch["dependent-1.0-0.conda"] == served_records(loaded, channel)["noarch/dependent-1.0-0.conda"]
    assert offline_install(out, tmp_path / "p", specs=("dependent",)) == ["dependency-2.0-0", "dependent-1.0-0"]
    # a lockfile naming the removed file is refused like a missing one
    lock = tmp_path / "spec.txt"
    lock.write_text(f"@EXPLICIT\n{loaded.repo}/{channel}/noarch/dependent-2.0-0.conda\n")
    (tmp_path / "again").mkdir()
    _fails(loaded, tmp_path / "again", "-c", channel, "-l", str(lock), "-p", "linux-64", expect="dependent-2.0-0.conda")


@pytest.fixture(scope="module")
def upstream(packages_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StaticChannel]:
    names = {"another_dependent", "dependent", "dependency"}
    root = build_channel(packages_dir, tmp_path_factory.mktemp("upstream"), subdirs=("noarch",), names=names)
    with StaticChannel(root) as chan:
        yield chan


def test_passive_mirror_bytes_are_fetched_for_the_bundle(
    loaded: Server, upstream: StaticChannel, tmp_path: Path
) -> None:
    """A passive mirror indexes records without their bytes: the bundle downloads the ones it needs from the
    mirror's upstream (verified, stored like a first client request), or refuses with --no-fetch; a failed
    download writes nothing."""
    start = upstream.package_hits()  # the upstream serves the test on each database
    create_mirror(
        loaded,
        "envlazy",
        upstream.url,
        mode="passive",
        subdirs=["noarch"],
        filters={"only_specs": ["another_dependent"], "include_dependencies": True},
    )
    run = run_mirror(loaded, "envlazy")
    assert run["status"] == "completed" and run["counts"]["indexed_passive"] == 6
    assert upstream.package_hits() == start
    env = {"CONDAVAULT_DATABASE_URL": loaded.settings.db_url, "CONDAVAULT_UPSTREAM_ALLOW_LOOPBACK": "true"}

    def bundle(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return loaded.cli(
            "--data-dir",
            str(loaded.settings.data_dir),
            "bundle",
            "env",
            "-c",
            "envlazy",
            "-s",
            "another_dependent",
            "-p",
            "linux-64",
            "-o",
            str(out),
            *extra,
            check=False,
            env=env,
        )

    request = _request(channels=["envlazy"], specs=["another_dependent"])
    with pytest.raises(BundleBytesMissing, match="have no bytes on this server"):  # --no-fetch
        plan_env_bundle(loaded.ctx.db, request, loaded.ctx.blobs)
    (tmp_path / "a").mkdir()
    upstream.corrupt.add("dependency-2.0-0.conda")  # the upstream serves other bytes than its repodata says
    try:
        proc = bundle(tmp_path / "a" / "env")
    finally:
        upstream.corrupt.discard("dependency-2.0-0.conda")
    assert proc.returncode != 0 and "could not be downloaded" in proc.stderr, proc.stderr
    assert "dependency-2.0-0.conda" in proc.stderr and "Traceback" not in proc.stderr
    assert os.listdir(tmp_path / "a") == []
    out = tmp_path / "b"
    proc = bundle(out)
    assert proc.returncode == 0, proc.stderr
    assert folder_files(out) == {
        "noarch/another_dependent-2.0-0.conda",
        "noarch/dependent-2.0-0.conda",
        "noarch/dependency-2.0-0.conda",
    }
    for key in folder_files(out):
        assert (out / "channel" / key).read_bytes() == (upstream.root / key).read_bytes()
    # the platform's subdir has no package here: its repodata.json is still there, empty (as conda wants)
    empty = json.loads((out / "channel" / "linux-64" / "repodata.json").read_text())
    assert empty["info"] == {"subdir": "linux-64"} and empty["packages"] == empty["packages.conda"] == {}
    assert offline_install(out, tmp_path / "p", explicit=out / "environment-linux-64.txt") == [
        "another_dependent-2.0-0",
        "dependency-2.0-0",
        "dependent-2.0-0",
    ]
    # the bytes are the server's now: served to clients, and a second bundle downloads nothing
    hits = upstream.package_hits()
    with loaded.client(None) as c:
        assert c.get("/api/repo/envlazy/noarch/dependent-2.0-0.conda").status_code == 200
    assert len(plan_env_bundle(loaded.ctx.db, request, loaded.ctx.blobs).packages) == 3  # --no-fetch
    assert upstream.package_hits() == hits


def _pixi_v6(url: str, recs: dict[str, dict[str, Any]]) -> str:
    lines = [
        "version: 6",
        "environments:",
        "  default:",
        "    channels:",
        f"    - url: {url}/",
        "    packages:",
        "      linux-64:",
    ]
    lines += [f"      - conda: {url}/{key}" for key in sorted(recs)]
    lines.append("packages:")
    for key, rec in sorted(recs.items()):
        lines += [f"- conda: {url}/{key}", f"  sha256: {rec['sha256']}", f"  md5: {rec['md5']}"]
        if rec.get("depends"):
            lines.append("  depends:")
            lines += [f"  - {d}" for d in rec["depends"]]
        lines += [f"  license: {rec.get('license') or 'MIT'}", f"  size: {rec['size']}"]
    return "\n".join(lines) + "\n"


def _pixi_v5(url: str, recs: dict[str, dict[str, Any]]) -> str:
    lines = [
        "version: 5",
        "environments:",
        "  default:",
        "    channels:",
        f"    - url: {url}/",
        "    packages:",
        "      linux-64:",
    ]
    lines += [f"      - conda: {url}/{key}" for key in sorted(recs)]
    lines.append("packages:")
    for key, rec in sorted(recs.items()):
        lines += [
            "- kind: conda",
            f"  name: {rec['name']}",
            f"  version: '{rec['version']}'",
            f"  build: '{rec['build']}'",
            f"  subdir: {key.split('/')[0]}",
            f"  url: {url}/{key}",
            f"  sha256: {rec['sha256']}",
            f"  md5: {rec['md5']}",
        ]
        if rec.get("depends"):
            lines.append("  depends:")
            lines += [f"  - {d}" for d in rec["depends"]]
        lines += [f"  size: {rec['size']}"]
    return "\n".join(lines) + "\n"


def _conda_lock(url: str, recs: dict[str, dict[str, Any]]) -> str:
    import yaml

    doc = {
        "version": 1,
        "metadata": {
            "content_hash": {"linux-64": "0" * 64},
            "channels": [{"url": url, "used_env_vars": []}],
            "platforms": ["linux-64", "osx-64"],
            "sources": ["environment.yml"],
        },
        "package": [
            {
                "name": rec["name"],
                "version": rec["version"],
                "manager": "conda",
                "platform": "linux-64",
                "dependencies": {d.split()[0]: (d.split(maxsplit=1)[1:] or ["*"])[0] for d in rec.get("depends", [])},
                "url": f"{url}/{key}",
                "hash": {"md5": rec["md5"], "sha256": rec["sha256"]},
                "category": "main",
                "optional": False,
            }
            for key, rec in sorted(recs.items())
        ]
        + [  # another platform's package, which the linux-64 bundle leaves out
            {
                "name": "zlib",
                "version": "1.2.11",
                "manager": "conda",
                "platform": "osx-64",
                "dependencies": {},
                "url": f"{url}/osx-64/zlib-1.2.11-h1de35cc_3.conda",
                "hash": {"md5": "0" * 32, "sha256": "0" * 64},
                "category": "main",
                "optional": False,
            }
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False)


def _explicit(url: str, recs: dict[str, dict[str, Any]]) -> str:
    lines = ["# platform: linux-64", "@EXPLICIT"]
    lines += [f"{url}/{key}#{rec['md5']}" for key, rec in sorted(recs.items())]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("form", ["pixi-v6", "pixi-v5", "conda-lock", "explicit"])
def test_bundle_from_lockfile(loaded: Server, tmp_path: Path, form: str) -> None:
    served = served_records(loaded, CHANNEL)
    locked = {
        k: served[k]
        for k in (
            "noarch/dependency-1.0-0.conda",
            "noarch/dependent-1.0-0.conda",
            "linux-64/dummy-c-0.1.0-hb0f4dca_0.conda",
        )
    }
    url = f"{loaded.repo}/{CHANNEL}"
    writer, name = {
        "pixi-v6": (_pixi_v6, "pixi.lock"),
        "pixi-v5": (_pixi_v5, "pixi.lock"),
        "conda-lock": (_conda_lock, "conda-lock.yml"),
        "explicit": (_explicit, "spec.txt"),
    }[form]
    lockfile = tmp_path / name
    lockfile.write_text(writer(url, locked))
    out = tmp_path / "env"
    proc = bundle_env(
        loaded, "--channel", CHANNEL, "--lockfile", str(lockfile), "--platform", "linux-64", "--output", str(out)
    )
    assert "wrote" in proc.stdout
    assert folder_files(out) == set(locked)
    assert json.loads((out / "bundle.json").read_text())["source"] == form.split("-v")[0]
    assert offline_install(out, tmp_path / "p", explicit=out / "environment-linux-64.txt") == [
        "dependency-1.0-0",
        "dependent-1.0-0",
        "dummy-c-0.1.0-hb0f4dca_0",
    ]


def _fails(server: Server, tmp_path: Path, *args: str, expect: str) -> str:
    out = tmp_path / "env"
    proc = bundle_env(server, *args, "--output", str(out), check=False)
    assert proc.returncode != 0, proc.stdout
    assert expect in " ".join(proc.stderr.split()), proc.stderr  # the console wraps long messages
    assert "Traceback" not in proc.stderr
    assert not out.exists() and leftovers(tmp_path) == []
    return proc.stderr


def test_bad_input_is_refused_whole(loaded: Server, tmp_path: Path) -> None:
    base = ("--platform", "linux-64")
    _fails(loaded, tmp_path, "-c", "no-such-channel", "-s", "dependent", *base, expect="does not exist")
    _fails(loaded, tmp_path, "-c", CHANNEL, "-s", "unsatisfiable", *base, expect="cannot solve")
    # an output folder that already holds something is never touched
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    proc = bundle_env(loaded, "-c", CHANNEL, "-s", "dependent", *base, "-o", str(busy), check=False)
    assert proc.returncode != 0 and "already exists" in proc.stderr
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]


def test_bad_lockfiles_are_refused(loaded: Server, tmp_path: Path) -> None:
    """The CLI's answers; every malformed form is in tests/unit/test_airgap_lockfiles.py."""
    served = served_records(loaded, CHANNEL)
    url = f"{loaded.repo}/{CHANNEL}"
    base = ("-c", CHANNEL, "--platform", "linux-64")
    lock = tmp_path / "pixi.lock"

    def refused(text: str, expect: str) -> str:
        lock.write_text(text)
        return _fails(loaded, tmp_path, *base, "--lockfile", str(lock), expect=expect)

    # a package the server does not have: named in the error
    dependent = served["noarch/dependent-1.0-0.conda"]
    absent = {
        "noarch/dependent-1.0-0.conda": dependent,
        "noarch/ghost-9.9-0.conda": {**dependent, "name": "ghost", "version": "9.9"},
    }
    err = refused(_pixi_v6(url, absent), "not in channel")
    assert "noarch/ghost-9.9-0.conda" in err and "dependent-1.0" not in err
    # a package the server has under that name, but with other bytes (rebuilt upstream)
    refused(_pixi_v6(url, {"noarch/dependent-1.0-0.conda": {**dependent, "sha256": "ab" * 32}}), "hash differs")
    refused("version: 6\nenvironments: [\n", "not valid YAML")


def _request(**kw: Any) -> EnvRequest:
    args: dict[str, Any] = {
        "channels": [CHANNEL],
        "platform": "linux-64",
        "output": Path("/nonexistent/out"),
        "specs": ["another_dependent", "dummy-a"],
    }
    return EnvRequest(**{**args, **kw})


def test_plan_from_published_index_or_records(loaded: Server) -> None:
    """The solver reads the published repodata of up-to-date subdirs, else repodata built from the records:
    the same packages either way."""
    ctx = loaded.ctx
    ctx.settle()
    fast = plan_env_bundle(ctx.db, _request(), ctx.blobs)
    rows = plan_env_bundle(ctx.db, _request())
    assert [p.filename for p in fast.packages] == [p.filename for p in rows.packages]
    assert {f"{p.subdir}/{p.filename}" for p in fast.packages} == SOLVED


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        ({"specs": ["dependent >>=1["]}, "invalid spec"),
        ({"channels": [CHANNEL, "no-such-channel"]}, "'no-such-channel' does not exist"),
        ({"platform": "../etc"}, "unknown platform"),
        ({"platform": "noarch"}, "unknown platform"),
        ({"virtual_packages": ["glibc=2.17"]}, "--virtual-package"),
        ({"virtual_packages": ["__glibc"]}, "--virtual-package"),
        ({"specs": []}, "either --spec"),
        ({"lockfile": Path("/x/pixi.lock")}, "either --spec"),
        ({"channels": []}, "at least one --channel"),
        ({"base_url": "javascript:alert(1)"}, "--base-url"),
        ({"base_url": "file:///x\n@EXPLICIT\nhttps://evil.example/noarch/x-1-0.conda"}, "--base-url"),
        ({"explicit_hash": "crc32"}, "--explicit-hash"),
        ({"specs": ["dependent"] * 1001}, "at most"),
    ],
)
def test_request_checks(loaded: Server, change: dict[str, Any], expect: str) -> None:
    with pytest.raises(CondavaultError) as info:
        plan_env_bundle(loaded.ctx.db, _request(**change))
    assert expect in info.value.message and 400 <= info.value.status < 500


def test_virtual_packages_of_the_target_decide_the_solve(loaded: Server) -> None:
    """``cuda`` needs ``__cuda >=12``: no bundle for a target without a GPU driver, one with
    ``--virtual-package __cuda=12.4``; ``NAME=`` drops a default."""
    db = loaded.ctx.db
    with pytest.raises(CondavaultError, match="cannot solve"):
        plan_env_bundle(db, _request(specs=["cuda"]))
    plan = plan_env_bundle(db, _request(specs=["cuda"], virtual_packages=["__cuda=12.4"]))
    assert [p.filename for p in plan.packages] == ["cuda-0.1.0-h055459d_0.conda"]
    with pytest.raises(CondavaultError, match="cannot solve"):
        plan_env_bundle(db, _request(specs=["cuda"], virtual_packages=["__cuda=11.8"]))
    names = {v.name.normalized for v in virtual_packages("linux-64", ["__glibc="])}
    assert "__glibc" not in names and {"__unix", "__linux", "__archspec"} <= names


def test_metadata_only_records_are_refused(loaded: Server) -> None:
    """A passive mirror's record whose bytes were never fetched cannot go into a bundle."""
    from sqlalchemy import update

    from condavault.channels.models import Record

    ctx = loaded.ctx
    with ctx.db.session() as s:
        s.execute(update(Record).where(Record.filename == "dummy-c-0.1.0-hb0f4dca_0.conda").values(has_blob=False))
    try:
        with pytest.raises(BundleBytesMissing) as info:
            plan_env_bundle(ctx.db, _request(), ctx.blobs)
        assert "dummy-c-0.1.0-hb0f4dca_0.conda" in info.value.message
    finally:
        with ctx.db.session() as s:
            s.execute(update(Record).where(Record.filename == "dummy-c-0.1.0-hb0f4dca_0.conda").values(has_blob=True))


def test_corrupt_stored_bytes_abort_the_bundle(loaded: Server, tmp_path: Path) -> None:
    served = served_records(loaded, EXTRA)
    sha = served["linux-64/dummy-b-0.1.0-hb0f4dca_0.conda"]["sha256"]
    path = loaded.ctx.blobs.local_path(sha)
    saved = path.read_bytes()
    path.write_bytes(saved[:-1] + bytes([saved[-1] ^ 1]))
    try:
        _fails(
            loaded, tmp_path, "-c", EXTRA, "-s", "dummy-b", "--platform", "linux-64", expect="do not match their sha256"
        )
    finally:
        path.write_bytes(saved)
