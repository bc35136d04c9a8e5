"""Parse a search query (pure: no database).

A query is free text, a conda MatchSpec, field terms, or free text plus field terms:

* free text -- words over name, summary, description and keywords (exact name first, then prefix, then
  substring and text, then typo-tolerant matches);
* a MatchSpec -- ``numpy >=1.20,<2 py39*``, ``conda-forge::numpy[subdir=linux-64]``, ``zlib 1.2.11``: told
  apart from text by an operator (``=<>!~``), ``::``, ``[``, or a second word that starts with a digit or ``*``;
* ``path:lib/libz.so.1`` -- packages holding that file (exact path inside the package);
* ``sha256:<64 hex>`` -- the package with that sha256, or packages holding a file with it;
* ``cve:CVE-2022-37434`` -- builds the advisory (or an alias of it) is linked to;
* ``pkg:conda/<channel>/<name>@<version>`` -- a package URL (``?channel=&subdir=&build=`` qualifiers too);
* ``license:MIT`` (``*`` wildcards; case-insensitive), ``has:post-link`` (see :data:`HAS`).

Every error is an ``InvalidRequest`` naming the offending part.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote

from condavault.errors import InvalidRequest
from condavault.packages.filename import is_subdir
from condavault.packages.specs import ParsedSpec, parse_spec

MAX_QUERY = 500
FIELDS = ("path", "sha256", "cve", "pkg", "license", "has")
# has:<flag> -> the ``paths_summary`` keys of which one must be true (None: a CVE link)
HAS: dict[str, tuple[str, ...] | None] = {
    "post-link": ("post_link",),
    "pre-link": ("pre_link",),
    "pre-unlink": ("pre_unlink",),
    "link-scripts": ("pre_link", "post_link", "pre_unlink"),
    "activate": ("activate.d",),
    "deactivate": ("deactivate.d",),
    "activation": ("activate.d", "deactivate.d"),
    "prefix": ("binary_prefix", "text_prefix"),
    "cves": None,
}
_FIELD = re.compile(r"^(path|sha256|cve|pkg|license|has):(.*)$", re.IGNORECASE)
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")
_ADVISORY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{2,99}$")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]*$")
_SPEC_HINT = re.compile(r"::|\[|[=<>!~]")
_WORD = re.compile(r"[^\W_]+(?:[-_.][^\W_]+)*", re.UNICODE)


@dataclass(frozen=True)
class Purl:
    name: str
    version: str | None = None
    channel: str | None = None
    subdir: str | None = None
    build: str | None = None


@dataclass(frozen=True)
class Parsed:
    text: str = ""  # free text (lower case, single spaces)
    spec: ParsedSpec | None = None
    spec_channel: str | None = None
    spec_subdir: str | None = None
    paths: tuple[str, ...] = ()
    sha256: tuple[str, ...] = ()
    cves: tuple[str, ...] = ()
    purls: tuple[Purl, ...] = ()
    licenses: tuple[str, ...] = ()
    has: tuple[str, ...] = ()
    tokens: tuple[str, ...] = field(default=())

    @property
    def kind(self) -> str:
        """What the query mostly is: text | matchspec | path | sha256 | cve | pkg | license | has | all."""
        for name, value in (
            ("matchspec", self.spec),
            ("path", self.paths),
            ("sha256", self.sha256),
            ("cve", self.cves),
            ("pkg", self.purls),
            ("license", self.licenses),
            ("has", self.has),
        ):
            if value:
                return name
        return "text" if self.text else "all"

    @property
    def record_level(self) -> bool:
        """Whether records (not only package documents) must be matched."""
        return self.kind not in ("text", "all")

    @property
    def words(self) -> list[str]:
        return self.text.split()


def bad(message: str, **details: object) -> InvalidRequest:
    return InvalidRequest(message, code="invalid_query", **details)


def parse(q: str) -> Parsed:
    q = q.strip()
    if len(q) > MAX_QUERY:
        raise bad(f"the query is longer than {MAX_QUERY} characters")
    if any(ord(c) < 32 for c in q):
        raise bad("the query contains control characters")
    fields: dict[str, list[str]] = {f: [] for f in FIELDS}
    rest: list[str] = []
    for tok in q.split():
        m = _FIELD.match(tok)
        if m:
            key, value = m.group(1).lower(), m.group(2)
            if not value:
                raise bad(f"{key}: needs a value, e.g. {_example(key)}", field=key)
            fields[key].append(value)
        else:
            rest.append(tok)
    text = " ".join(rest)
    spec = spec_channel = spec_subdir = None
    if rest and _looks_like_spec(rest):
        spec, spec_channel, spec_subdir = _spec(text)
        text = ""
    return Parsed(
        text=text.lower(),
        spec=spec,
        spec_channel=spec_channel,
        spec_subdir=spec_subdir,
        paths=tuple(_path(v) for v in fields["path"]),
        sha256=tuple(_sha(v) for v in fields["sha256"]),
        cves=tuple(_cve(v) for v in fields["cve"]),
        purls=tuple(parse_purl("pkg:" + v) for v in fields["pkg"]),
        licenses=tuple(_license(v) for v in fields["license"]),
        has=tuple(_has(v) for v in fields["has"]),
        tokens=tuple(rest),
    )


def _example(key: str) -> str:
    return {
        "path": "path:lib/libz.so.1",
        "sha256": "sha256:<64 hex digits>",
        "cve": "cve:CVE-2022-37434",
        "pkg": "pkg:conda/<channel>/<name>@<version>",
        "license": "license:MIT",
        "has": f"has:post-link (one of {', '.join(HAS)})",
    }[key]


def _looks_like_spec(words: list[str]) -> bool:
    text = " ".join(words)
    if _SPEC_HINT.search(text):
        return True
    return 2 <= len(words) <= 3 and _NAME.match(words[0]) is not None and words[1][:1] in "0123456789*"


def _spec(text: str) -> tuple[ParsedSpec, str | None, str | None]:
    from rattler import MatchSpec

    try:
        ms = MatchSpec(text, strict=False)
        parsed = parse_spec(text)
    except Exception as exc:
        raise bad(f"not a valid MatchSpec: {text!r} ({str(exc).splitlines()[0][:200]})", spec=text) from None
    if not parsed.name or not _NAME.match(parsed.name):
        raise bad(f"a MatchSpec needs a package name: {text!r}", spec=text)
    channel = ms.channel.name if ms.channel is not None else None
    subdir = ms.subdir or None
    if subdir is not None and not is_subdir(subdir):
        raise bad(f"unknown subdir {subdir!r} in the MatchSpec", spec=text)
    return parsed, channel, subdir


def _path(value: str) -> str:
    p = value.replace("\\", "/").lstrip("/")
    if not p or len(p) > 1024:
        raise bad("path: needs a path inside a package (1 to 1024 characters), e.g. path:lib/libz.so.1")
    return p


def _sha(value: str) -> str:
    if not _HEX64.match(value):
        raise bad(f"sha256: needs 64 hexadecimal digits, got {value[:80]!r}", field="sha256")
    return value.lower()


def _cve(value: str) -> str:
    if not _ADVISORY.match(value):
        raise bad(f"cve: needs an advisory id such as CVE-2022-37434, got {value[:80]!r}", field="cve")
    return value.upper() if value.lower().startswith("cve-") else value


def _license(value: str) -> str:
    if len(value) > 200:
        raise bad("license: is longer than 200 characters", field="license")
    return value


def _has(value: str) -> str:
    v = value.lower()
    if v not in HAS:
        raise bad(f"has: knows {', '.join(HAS)}; got {value[:80]!r}", field="has")
    return v


def parse_purl(text: str) -> Purl:
    """``pkg:conda/[<channel>/]<name>[@<version>][?channel=&subdir=&build=&type=]`` (CEP 49 / purl-spec)."""
    if not text.lower().startswith("pkg:conda/"):
        raise bad(f"only conda package URLs are searchable (pkg:conda/...), got {text[:80]!r}", field="pkg")
    body = text[len("pkg:conda/") :]
    body, _, qualifiers = body.partition("?")
    body = body.split("#", 1)[0]
    path, _, version = body.partition("@")
    parts = [unquote(p) for p in path.split("/") if p]
    if not parts or len(parts) > 2:
        raise bad(f"a conda package URL is pkg:conda/<channel>/<name>@<version>, got {text[:80]!r}", field="pkg")
    name = parts[-1].lower()
    if not _NAME.match(name):
        raise bad(f"invalid package name {name!r} in the package URL", field="pkg")
    try:
        quals = {k.lower(): v[-1] for k, v in parse_qs(qualifiers, strict_parsing=bool(qualifiers)).items()}
    except ValueError:
        raise bad(f"invalid qualifiers in the package URL {text[:80]!r}", field="pkg") from None
    channel = parts[0] if len(parts) == 2 else quals.get("channel")
    if channel and "/" in channel:
        channel = channel.rstrip("/").rsplit("/", 1)[-1]  # a channel URL qualifier: its last segment
    subdir = quals.get("subdir")
    if subdir is not None and not is_subdir(subdir):
        raise bad(f"unknown subdir {subdir!r} in the package URL", field="pkg")
    version = unquote(version) if version else ""
    if len(version) > 100 or len(quals.get("build", "")) > 200:
        raise bad("the package URL's version or build is too long", field="pkg")
    return Purl(
        name=name, version=version or None, channel=channel or None, subdir=subdir, build=quals.get("build") or None
    )


def words_of(text: str) -> list[str]:
    """Alphanumeric runs of ``text`` (PostgreSQL tsquery terms)."""
    out: list[str] = []
    for w in _WORD.findall(text.lower()):
        out.extend(p for p in re.split(r"[-_.]", w) if p)
    return out
