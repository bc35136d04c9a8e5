"""Cached MatchSpec and version helpers over plain records (py-rattler does the parsing and ordering)."""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from functools import lru_cache

from rattler import MatchSpec, Version, VersionSpec


@dataclass(frozen=True)
class ParsedSpec:
    name: str
    version: VersionSpec | None
    build: str | None
    text: str

    @property
    def is_virtual(self) -> bool:
        return self.name.startswith("__")

    def matches(self, version: str, build: str) -> bool:
        if self.version is not None:
            try:
                if not self.version.matches(parse_version(version)):
                    return False
            except Exception:
                return False
        if self.build is not None and self.build != "*":
            b = self.build
            if b.startswith("^") and b.endswith("$"):
                return re.match(b, build) is not None
            return fnmatch.fnmatchcase(build, b)
        return True


@lru_cache(maxsize=262144)
def parse_spec(text: str) -> ParsedSpec:
    ms = MatchSpec(text, strict=False)
    name = _name_of(ms, text)
    vs = VersionSpec(ms.version, strict=False) if ms.version and ms.version != "*" else None
    return ParsedSpec(name=name, version=vs, build=ms.build or None, text=text)


def _name_of(ms: MatchSpec, text: str) -> str:
    rep = repr(ms.name)
    m = re.search(r'"([^"]+)"', rep)
    if m:
        return m.group(1)
    return text.split()[0].split("[")[0].split("=")[0].split("<")[0].split(">")[0].split("!")[0].strip()


@lru_cache(maxsize=262144)
def parse_version(text: str) -> Version:
    return Version(text)


def version_key(text: str) -> Version:
    """Sort key in conda order; unparsable versions sort first."""
    try:
        return parse_version(text)
    except Exception:
        return parse_version("0")
