"""Package filenames and subdir names (CEP 26 / CEP 35)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from condavault.errors import InvalidFilename, InvalidRequest

EXTENSIONS = (".conda", ".tar.bz2")
_NAME_RE = re.compile(r"^[a-z0-9_][a-z0-9._-]*$")
_BUILD_RE = re.compile(r"^[a-zA-Z0-9_.+]*$")  # empty builds exist in old conda-forge repodata
_SUBDIR_RE = re.compile(r"^(noarch|[a-z0-9]+-[a-z0-9]+)$")
MAX_FILENAME = 211


@dataclass(frozen=True)
class PackageFilename:
    filename: str
    name: str
    version: str
    build: str
    ext: str

    @property
    def stem(self) -> str:
        return self.filename[: -len(self.ext)]


def split_ext(filename: str) -> tuple[str, str]:
    for ext in EXTENSIONS:
        if filename.endswith(ext):
            return filename[: -len(ext)], ext
    raise InvalidFilename(
        f"{filename!r} is not a conda package filename (expected .conda or .tar.bz2)", filename=filename
    )


def parse_filename(filename: str) -> PackageFilename:
    """Split ``name-version-build.ext``; the name may itself contain dashes."""
    if "/" in filename or "\\" in filename or filename.startswith("."):
        raise InvalidFilename(f"{filename!r} is not a plain file name", filename=filename)
    if len(filename) > MAX_FILENAME:
        raise InvalidFilename(f"filename longer than {MAX_FILENAME} characters", filename=filename)
    stem, ext = split_ext(filename)
    parts = stem.rsplit("-", 2)
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise InvalidFilename(f"{filename!r} is not of the form name-version-build{ext}", filename=filename)
    name, version, build = parts
    if not _NAME_RE.match(name.lower()) or not _BUILD_RE.match(build):
        raise InvalidFilename(f"{filename!r} has an invalid name or build string", filename=filename)
    return PackageFilename(filename, name, version, build, ext)


def is_package_filename(filename: str) -> bool:
    try:
        parse_filename(filename)
    except InvalidRequest:
        return False
    return True


def check_subdir(subdir: str) -> str:
    if len(subdir) > 32 or not _SUBDIR_RE.match(subdir):
        raise InvalidRequest(f"{subdir!r} is not a valid subdir name", code="invalid_subdir", subdir=subdir)
    return subdir


def is_subdir(value: str) -> bool:
    return len(value) <= 32 and bool(_SUBDIR_RE.match(value))
