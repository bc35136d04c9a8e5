"""MatchSpec helpers shared by spec filters, the dependency closure and pruning (parsed once, cached)."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rattler import MatchSpec

    from condavault.mirror.filters.base import FileRecord

__all__ = ["first_match", "is_virtual", "matches", "parse_spec", "spec_name"]


@lru_cache(maxsize=65536)
def parse_spec(spec: str) -> MatchSpec | None:
    """Parse a MatchSpec leniently (globs allowed in names); ``None`` if it cannot be parsed."""
    from rattler import MatchSpec

    try:
        return MatchSpec(spec, strict=False, exact_names_only=False)
    except Exception:
        return None


@lru_cache(maxsize=65536)
def spec_name(spec: str) -> str | None:
    """The exact package name a spec is about, or ``None`` for glob/regex names and bad specs."""
    ms = parse_spec(spec)
    if ms is None:
        return None
    name = ms.name.as_package_name()
    return None if name is None else name.normalized


def is_virtual(spec: str) -> bool:
    """Virtual packages (``__glibc``, ``__cuda`` ...) are provided by the installing machine."""
    return spec.lstrip().startswith("__")


def matches(spec: str, rec: FileRecord) -> bool:
    """Whether ``rec`` satisfies ``spec``. Unparseable specs, and records rattler cannot represent
    (e.g. an invalid version), match nothing."""
    ms = parse_spec(spec)
    if ms is None:
        return False
    try:
        return bool(ms.matches(rec.package_record))
    except Exception:
        return False


def first_match(specs: list[str], rec: FileRecord) -> str | None:
    """The first spec of ``specs`` that ``rec`` matches."""
    for spec in specs:
        name = spec_name(spec)
        if name is not None and name != rec.name.lower():
            continue
        if matches(spec, rec):
            return spec
    return None
