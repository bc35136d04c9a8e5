"""Reading the lockfiles an environment bundle starts from (pixi.lock v5/v6, conda-lock, explicit), and
every malformed form refused with a precise message."""

from __future__ import annotations

from pathlib import Path

import pytest

from condavault.airgap.env import Package, topological
from condavault.airgap.lockfiles import InvalidLockfile, read_lockfile

URL = "https://cv.example/api/repo/main"
SHA_A, SHA_B = "1a" * 32, "2b" * 32
MD5_A, MD5_B = "a" * 32, "b" * 32

PIXI_V6 = f"""version: 6
environments:
  default:
    channels:
    - url: {URL}/
    packages:
      linux-64:
      - conda: {URL}/linux-64/tool-1.0-h0_0.conda
      - conda: {URL}/noarch/lib-2.0-0.tar.bz2
      osx-arm64:
      - conda: {URL}/noarch/lib-2.0-0.tar.bz2
  test:
    channels:
    - url: {URL}/
    packages:
      linux-64:
      - conda: {URL}/noarch/lib-2.0-0.tar.bz2
      - pypi: https://files.example/pkg-1.0-py3-none-any.whl
packages:
- conda: {URL}/linux-64/tool-1.0-h0_0.conda
  sha256: {SHA_A}
  md5: {MD5_A}
  depends:
  - lib >=2
  license: MIT
  size: 100
  timestamp: 1700000000000
- conda: {URL}/noarch/lib-2.0-0.tar.bz2
  sha256: {SHA_B}
  md5: {MD5_B}
  noarch: generic
  license: MIT
  size: 50
- pypi: https://files.example/pkg-1.0-py3-none-any.whl
  name: pkg
  version: '1.0'
  sha256: {"3" * 64}
"""

PIXI_V5 = f"""version: 5
environments:
  default:
    channels:
    - url: {URL}/
    packages:
      linux-64:
      - conda: {URL}/noarch/lib-2.0-0.tar.bz2
packages:
- kind: conda
  name: lib
  version: '2.0'
  build: '0'
  subdir: noarch
  url: {URL}/noarch/lib-2.0-0.tar.bz2
  sha256: {SHA_B}
  md5: {MD5_B}
  size: 50
"""

CONDA_LOCK = f"""version: 1
metadata:
  content_hash:
    linux-64: {"0" * 64}
  channels:
  - url: {URL}
    used_env_vars: []
  platforms: [linux-64, win-64]
  sources: [environment.yml]
package:
- name: tool
  version: '1.0'
  manager: conda
  platform: linux-64
  dependencies: {{lib: '>=2'}}
  url: {URL}/linux-64/tool-1.0-h0_0.conda
  hash: {{md5: {MD5_A}, sha256: {SHA_A}}}
  category: main
  optional: false
- name: tool
  version: '1.0'
  manager: conda
  platform: win-64
  dependencies: {{}}
  url: {URL}/win-64/tool-1.0-h0_0.conda
  hash: {{md5: {MD5_A}, sha256: {SHA_A}}}
  category: main
  optional: false
"""


Row = tuple[str, str, str | None, str | None]


def _read(tmp_path: Path, text: str, name: str = "lock", **kw: str) -> tuple[str, list[Row]]:
    path = tmp_path / name
    path.write_text(text)
    fmt, pkgs = read_lockfile(path, kw.get("platform", "linux-64"), kw.get("environment", "default"))
    return fmt, [(p.subdir, p.filename, p.sha256, p.md5) for p in pkgs]


def test_pixi_v6(tmp_path: Path) -> None:
    fmt, pkgs = _read(tmp_path, PIXI_V6)
    assert fmt == "pixi"
    assert sorted(pkgs) == [
        ("linux-64", "tool-1.0-h0_0.conda", SHA_A, MD5_A),
        ("noarch", "lib-2.0-0.tar.bz2", SHA_B, MD5_B),
    ]
    _, osx = _read(tmp_path, PIXI_V6, platform="osx-arm64")
    assert osx == [("noarch", "lib-2.0-0.tar.bz2", SHA_B, MD5_B)]


def test_pixi_v5(tmp_path: Path) -> None:
    assert _read(tmp_path, PIXI_V5) == ("pixi", [("noarch", "lib-2.0-0.tar.bz2", SHA_B, MD5_B)])


def test_conda_lock_takes_the_platform(tmp_path: Path) -> None:
    assert _read(tmp_path, CONDA_LOCK) == ("conda-lock", [("linux-64", "tool-1.0-h0_0.conda", SHA_A, MD5_A)])
    assert _read(tmp_path, CONDA_LOCK, platform="win-64")[1] == [("win-64", "tool-1.0-h0_0.conda", SHA_A, MD5_A)]


def test_explicit_anchors(tmp_path: Path) -> None:
    text = "\n".join(
        [
            "# platform: linux-64",
            "@EXPLICIT",
            f"{URL}/linux-64/tool-1.0-h0_0.conda#{MD5_A}",
            f"{URL}/noarch/lib-2.0-0.tar.bz2#sha256:{SHA_B}",
            f"file:///media/usb/channel/noarch/other-1-0.conda#{SHA_A.upper()}",
            f"{URL}/noarch/plain-1-0.conda",
            f"{URL}/noarch/lib-2.0-0.tar.bz2#sha256:{SHA_B}",  # twice: kept once
        ]
    )
    assert _read(tmp_path, text) == (
        "explicit",
        [
            ("linux-64", "tool-1.0-h0_0.conda", None, MD5_A),
            ("noarch", "lib-2.0-0.tar.bz2", SHA_B, None),
            ("noarch", "other-1-0.conda", SHA_A, None),
            ("noarch", "plain-1-0.conda", None, None),
        ],
    )


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("version: 6\nenvironments: [\n", "not valid YAML"),
        ("just: some\nyaml: file\n", "not a lockfile condavault reads"),
        ("- a\n- b\n", "not a lockfile condavault reads"),
        ("", "not a lockfile condavault reads"),
        (f"{URL}/noarch/lib-2.0-0.tar.bz2\n@EXPLICIT\n", "must follow @EXPLICIT"),
        ("@EXPLICIT\nhttps://x.example/not-a-package.txt\n", "not a conda package URL"),
        ("@EXPLICIT\nhttps://x.example/lib-2.0-0.conda\n", "not a conda package URL"),
        ("@EXPLICIT\nhttps://x.example/../../etc/passwd.conda\n", "not a conda package URL"),
        ("@EXPLICIT\nhttps://x.example/noarch/.hidden-1-0.conda\n", "not a conda package URL"),
        ("@EXPLICIT\nftp://x.example/noarch/lib-2.0-0.conda\n", "unsupported URL scheme"),
        (f"@EXPLICIT\n{URL}/noarch/lib-2.0-0.conda#nothex\n", "bad md5"),
        (f"@EXPLICIT\n{URL}/noarch/lib-2.0-0.conda#sha256:abc\n", "bad sha256"),
        ("@EXPLICIT\n", "pins no conda packages"),
        (
            f"# platform: osx-64\n@EXPLICIT\n{URL}/osx-64/tool-1.0-h0_0.conda\n",
            "pins packages of osx-64, not of linux-64",
        ),
        (f"@EXPLICIT\n{URL}/noarch/lib-2.0-0.conda#{MD5_A}\n{URL}/noarch/lib-2.0-0.conda#{MD5_B}\n", "twice"),
        (PIXI_V6.replace("version: 6", "version: 99"), "cannot read pixi lockfile"),
        (PIXI_V6.replace(f"sha256: {SHA_A}", "sha256: zz"), "cannot read pixi lockfile"),
        (CONDA_LOCK.replace("version: 1", "version: 7"), "version 7 is not supported"),
        (CONDA_LOCK.replace("manager: conda\n  platform: linux-64", "manager: pip\n  platform: linux-64"), "PyPI"),
        (
            CONDA_LOCK.replace("manager: conda\n  platform: linux-64", "manager: npm\n  platform: linux-64"),
            "unknown manager",
        ),
        (CONDA_LOCK.replace(f"  url: {URL}/linux-64/tool-1.0-h0_0.conda\n", ""), "needs `url` and `hash`"),
        (
            CONDA_LOCK.replace("platforms: [linux-64, win-64]", "platforms: [win-64]").replace(
                "platform: linux-64", "platform: osx-64"
            ),
            "pins no conda packages",
        ),
    ],
)
def test_malformed_lockfiles(tmp_path: Path, text: str, expect: str) -> None:
    with pytest.raises(InvalidLockfile) as info:
        _read(tmp_path, text)
    assert expect in info.value.message and info.value.status == 400


def test_pixi_environment_and_platform_must_exist(tmp_path: Path) -> None:
    with pytest.raises(InvalidLockfile, match=r"no environment 'prod' \(it has: default, test\)"):
        _read(tmp_path, PIXI_V6, environment="prod")
    with pytest.raises(InvalidLockfile, match="has no platform win-64"):
        _read(tmp_path, PIXI_V6, platform="win-64")
    with pytest.raises(InvalidLockfile, match=r"PyPI packages.*pkg"):
        _read(tmp_path, PIXI_V6, environment="test")


def test_unreadable_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidLockfile, match="cannot read lockfile"):
        read_lockfile(tmp_path / "missing.lock", "linux-64")
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(InvalidLockfile, match="not UTF-8"):
        read_lockfile(tmp_path / "bin", "linux-64")


def _pkg(name: str, depends: list[str]) -> Package:
    import json

    frag = json.dumps({"name": name, "depends": depends})
    return Package("c", "noarch", f"{name}-1-0.conda", name, "1", "0", "0" * 64, None, 1, frag, None, True)


def test_topological_order_puts_dependencies_first() -> None:
    pkgs = [
        _pkg("app", ["lib >=1", "python"]),
        _pkg("python", ["libc"]),
        _pkg("lib", ["python 3.*"]),
        _pkg("libc", []),
        _pkg("cyc-a", ["cyc-b"]),
        _pkg("cyc-b", ["cyc-a"]),
    ]
    order = [p.name for p in topological(pkgs)]
    assert sorted(order) == sorted(p.name for p in pkgs)
    assert order.index("libc") < order.index("python") < order.index("lib") < order.index("app")
