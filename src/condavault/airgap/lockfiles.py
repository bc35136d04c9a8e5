"""Lockfiles an environment bundle can start from: the conda packages one platform of an environment pins.

Three formats, told apart by their content (not their file name):

- **pixi.lock** (versions 5 and 6, and the older ones py-rattler still reads): YAML with ``version`` and
  ``environments``; read with py-rattler's lockfile parser. ``environment`` names the environment
  (default ``default``).
- **conda-lock** (``conda-lock.yml``, version 1): YAML with ``metadata`` and a ``package`` list whose
  entries carry ``manager``, ``platform``, ``url`` and ``hash``.
- **explicit** (``@EXPLICIT`` text, as ``conda list --explicit`` writes): one package URL a line, with an
  optional ``#<md5>``, ``#<sha256>`` or ``#sha256:<sha256>`` anchor.

Each gives a list of :class:`LockedPackage` (subdir, file name and the hashes the lockfile promises), which
the bundle then finds on the server. PyPI packages in a lockfile are refused (condavault serves conda
packages only), and so is anything that is not a ``.conda``/``.tar.bz2`` file URL.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from condavault.channels.naming import KNOWN_SUBDIRS
from condavault.errors import InvalidRequest

LockFormat = Literal["pixi", "conda-lock", "explicit"]
MAX_LOCKFILE_BYTES = 64 * 1024 * 1024  # the largest real lockfiles are a few MB
_MD5 = re.compile(r"^[0-9a-f]{32}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
# <name>-<version>-<build>.conda|.tar.bz2 (conda's characters; no separators, no leading dot)
_FILENAME = re.compile(r"^[A-Za-z0-9_+!][A-Za-z0-9_.+!-]*-[A-Za-z0-9_.+!]+-[A-Za-z0-9_.+!]+(\.conda|\.tar\.bz2)$")


class InvalidLockfile(InvalidRequest):
    """The lockfile cannot be read: unknown format, bad YAML, a package line that is not a conda package
    URL, a bad hash, PyPI packages, or no packages for the platform."""

    code = "invalid_lockfile"


@dataclass(frozen=True)
class LockedPackage:
    url: str
    subdir: str
    filename: str
    sha256: str | None = None
    md5: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.subdir, self.filename


def read_lockfile(path: Path, platform: str, environment: str = "default") -> tuple[LockFormat, list[LockedPackage]]:
    """The conda packages ``path`` pins for ``platform`` (and ``noarch``), in file order, deduplicated."""
    try:
        size = path.stat().st_size
        if size > MAX_LOCKFILE_BYTES:
            raise InvalidLockfile(f"lockfile {path} is {size} bytes, more than the {MAX_LOCKFILE_BYTES} allowed")
        raw = path.read_bytes()
    except OSError as exc:
        raise InvalidLockfile(f"cannot read lockfile {path}: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidLockfile(f"lockfile {path} is not UTF-8 text") from None
    fmt = detect_format(text, path)
    if fmt == "explicit":
        packages = parse_explicit(text)
    elif fmt == "conda-lock":
        packages = parse_conda_lock(_yaml(text, path), platform)
    else:
        packages = parse_pixi_lock(path, platform, environment)
    if not packages:
        raise InvalidLockfile(
            f"lockfile {path} ({fmt}) pins no conda packages for {platform}"
            + (f" in environment {environment!r}" if fmt == "pixi" else ""),
        )
    foreign = sorted({p.subdir for p in packages} - {platform, "noarch"})
    if foreign:
        raise InvalidLockfile(
            f"lockfile {path} pins packages of {', '.join(foreign)}, not of {platform}: give the platform it was "
            "locked for (--platform)",
        )
    return fmt, _dedupe(packages)


def detect_format(text: str, path: Path) -> LockFormat:
    if any(line.strip() == "@EXPLICIT" for line in text.splitlines()):
        return "explicit"
    data = _yaml(text, path)
    if isinstance(data, dict):
        if "environments" in data and "version" in data:
            return "pixi"
        if "package" in data and "metadata" in data:
            return "conda-lock"
    raise InvalidLockfile(
        f"{path} is not a lockfile condavault reads: expected a pixi.lock (version + environments), a "
        "conda-lock file (metadata + package) or an explicit file (@EXPLICIT)"
    )


def _yaml(text: str, path: Path) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise InvalidLockfile(f"{path} is not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None


def package_from_url(url: str, *, sha256: str | None = None, md5: str | None = None) -> LockedPackage:
    """A locked package from its URL (``.../<subdir>/<file>``), with hashes checked for shape."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "file", ""):
        raise InvalidLockfile(f"unsupported URL scheme in {url!r}")
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if len(segments) < 2 or not _FILENAME.match(segments[-1]) or segments[-2] not in KNOWN_SUBDIRS:
        raise InvalidLockfile(f"not a conda package URL (…/<subdir>/<name>-<version>-<build>.conda|.tar.bz2): {url!r}")
    if sha256 is not None and not _SHA256.match(sha256.lower()):
        raise InvalidLockfile(f"bad sha256 {sha256!r} for {url!r}")
    if md5 is not None and not _MD5.match(md5.lower()):
        raise InvalidLockfile(f"bad md5 {md5!r} for {url!r}")
    return LockedPackage(
        url=url,
        subdir=segments[-2],
        filename=segments[-1],
        sha256=sha256.lower() if sha256 else None,
        md5=md5.lower() if md5 else None,
    )


def parse_explicit(text: str) -> list[LockedPackage]:
    out: list[LockedPackage] = []
    seen_marker = False
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line == "@EXPLICIT":
            seen_marker = True
            continue
        if not seen_marker:
            raise InvalidLockfile(f"explicit file line {number}: package lines must follow @EXPLICIT: {line!r}")
        url, _, anchor = line.partition("#")
        sha256 = md5 = None
        anchor = anchor.strip().lower()
        if anchor.startswith("sha256:"):
            sha256 = anchor[len("sha256:") :]
        elif len(anchor) == 64:
            sha256 = anchor
        elif anchor:
            md5 = anchor
        try:
            out.append(package_from_url(url.strip(), sha256=sha256, md5=md5))
        except InvalidLockfile as exc:
            raise InvalidLockfile(f"explicit file line {number}: {exc.message}") from None
    return out


def parse_conda_lock(data: Any, platform: str) -> list[LockedPackage]:
    if not isinstance(data, dict) or not isinstance(data.get("package"), list):
        raise InvalidLockfile("conda-lock file without a `package` list")
    version = data.get("version")
    if version not in (1, None):
        raise InvalidLockfile(f"conda-lock file version {version!r} is not supported (version 1 is)")
    out: list[LockedPackage] = []
    pypi: list[str] = []
    for i, entry in enumerate(data["package"]):
        if not isinstance(entry, dict):
            raise InvalidLockfile(f"conda-lock package #{i + 1} is not a mapping")
        if entry.get("platform") not in (platform, "noarch"):
            continue
        manager = entry.get("manager", "conda")
        if manager == "pip":
            pypi.append(str(entry.get("name")))
            continue
        if manager != "conda":
            raise InvalidLockfile(f"conda-lock package #{i + 1}: unknown manager {manager!r}")
        url, hashes = entry.get("url"), entry.get("hash") or {}
        if not isinstance(url, str) or not isinstance(hashes, dict):
            raise InvalidLockfile(f"conda-lock package #{i + 1} ({entry.get('name')}): needs `url` and `hash`")
        try:
            out.append(package_from_url(url, sha256=_opt_str(hashes.get("sha256")), md5=_opt_str(hashes.get("md5"))))
        except InvalidLockfile as exc:
            raise InvalidLockfile(f"conda-lock package #{i + 1} ({entry.get('name')}): {exc.message}") from None
    _refuse_pypi(pypi)
    return out


def parse_pixi_lock(path: Path, platform: str, environment: str) -> list[LockedPackage]:
    import rattler

    try:
        lock = rattler.LockFile.from_path(path)
    except Exception as exc:  # rattler raises its own exception types for every parse problem
        raise InvalidLockfile(f"cannot read pixi lockfile {path}: {_first_line(exc)}") from None
    env = lock.environment(environment)
    if env is None:
        names = sorted(name for name, _ in lock.environments())
        raise InvalidLockfile(f"pixi lockfile has no environment {environment!r} (it has: {', '.join(names)})")
    target = next((p for p in env.platforms() if str(p) == platform), None)
    if target is None:
        have = ", ".join(sorted(str(p) for p in env.platforms()))
        raise InvalidLockfile(f"environment {environment!r} of the pixi lockfile has no platform {platform} ({have})")
    pypi = env.pypi_packages_for_platform(target) or []
    _refuse_pypi([str(getattr(p, "name", p)) for p in pypi])
    out: list[LockedPackage] = []
    for rec in env.conda_repodata_records_for_platform(target) or []:
        url = str(rec.url)
        sha = rec.sha256.hex() if rec.sha256 else None
        md5 = rec.md5.hex() if rec.md5 else None
        try:
            out.append(package_from_url(url, sha256=sha, md5=md5))
        except InvalidLockfile as exc:
            raise InvalidLockfile(f"pixi lockfile package {rec.file_name}: {exc.message}") from None
    return out


def _refuse_pypi(names: list[str]) -> None:
    if names:
        shown = ", ".join(sorted(set(names))[:20])
        raise InvalidLockfile(
            f"the lockfile pins PyPI packages, which condavault does not serve: {shown}; "
            "bundle their wheels another way, or lock a conda-only environment",
            pypi=sorted(set(names)),
        )


def _opt_str(v: Any) -> str | None:
    return v if isinstance(v, str) and v else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]


def _dedupe(packages: list[LockedPackage]) -> list[LockedPackage]:
    by_key: dict[tuple[str, str], LockedPackage] = {}
    for p in packages:
        old = by_key.get(p.key)
        if old is not None and (
            (old.sha256 and p.sha256 and old.sha256 != p.sha256) or (old.md5 and p.md5 and old.md5 != p.md5)
        ):
            raise InvalidLockfile(f"the lockfile pins {p.subdir}/{p.filename} twice with different hashes")
        by_key.setdefault(p.key, p)
    return list(by_key.values())
