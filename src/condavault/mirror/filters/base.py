"""The filter plugin API: records, decisions, context and the three filter protocols.

A filter never sees the database or the network. It gets a :class:`FileRecord` (one upstream file
with its repodata record) and a :class:`FilterContext` (optional providers for CVE links, dependency
risk and signatures) and answers with a :class:`Decision`, or ``None`` for "no objection".

Three kinds, told apart by the method they define (the engine never checks a filter by name):

* :class:`RecordFilter` -- ``decide(rec, ctx)``, one file at a time;
* :class:`GroupFilter` -- ``select(records, ctx)``, sees every file still kept (latest-N, closure);
* :class:`ExceptionFilter` -- ``readmit(rec, ctx)``, may bring back a file an earlier filter dropped.

Every filter class has ``name`` (its config key), ``stage`` (order in the chain, lower first),
``requires`` (names of :class:`FilterContext` providers it needs) and a ``from_config(cfg)`` classmethod
that returns an instance, or ``None`` when the config does not enable it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:
    from rattler import PackageRecord, Version

    from condavault.mirror.config import FilterConfig

__all__ = [
    "Decision",
    "ExceptionFilter",
    "FileKey",
    "FileRecord",
    "FilterContext",
    "GroupFilter",
    "RecordFilter",
    "VulnLink",
]

FileKey = tuple[str, str]
"""``(subdir, filename)``: the identity of one upstream file."""


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    """Why a file is kept or dropped.

    ``filter`` is the config key responsible (``exclude_specs``), ``rule`` the offending rule
    (``openssl <3``) and ``value`` what matched (``openssl 1.1.1w h7f8727e_2``). ``flag`` marks a kept
    file that a filter objects to without dropping it (``prune_unsatisfiable: flag``). The engine fills
    ``subdir``/``filename`` so decisions can be listed without their keys.
    """

    kept: bool
    filter: str
    rule: str
    value: str
    flag: bool = False
    subdir: str = ""
    filename: str = ""

    def for_file(self, key: FileKey) -> Decision:
        """This decision bound to one file."""
        return dataclasses.replace(self, subdir=key[0], filename=key[1])


@dataclasses.dataclass(frozen=True, slots=True)
class VulnLink:
    """One advisory linked to one file; ``cleared``/``mitigated`` links do not count against a threshold,
    nor does a link found through a bundled copy (``match_kind`` ``bundled``) until a curator confirms it
    (``active``). ``score`` is the advisory's effective score."""

    advisory_id: str
    aliases: tuple[str, ...] = ()
    score: float | None = None
    status: str = "reported"
    match_kind: str = "direct"

    @property
    def ids(self) -> frozenset[str]:
        """The advisory id and its aliases, upper-cased."""
        return frozenset(i.upper() for i in (self.advisory_id, *self.aliases))

    @property
    def counts(self) -> bool:
        """Whether this link still makes the file vulnerable."""
        if self.match_kind == "bundled":
            return self.status == "active"
        return self.status not in ("cleared", "mitigated")


@dataclasses.dataclass(frozen=True, eq=False)
class FileRecord:
    """One upstream file: its subdir (from the repodata it was listed in), filename and record dict."""

    subdir: str
    filename: str
    record: dict[str, Any]

    @property
    def key(self) -> FileKey:
        return (self.subdir, self.filename)

    @property
    def name(self) -> str:
        return str(self.record.get("name", ""))

    @property
    def version(self) -> str:
        return str(self.record.get("version", ""))

    @property
    def build(self) -> str:
        return str(self.record.get("build", ""))

    @property
    def depends(self) -> list[str]:
        return list(self.record.get("depends") or ())

    @property
    def ident(self) -> str:
        """``name version build``, the way conda prints a record."""
        return f"{self.name} {self.version} {self.build}"

    @property
    def is_conda(self) -> bool:
        return self.filename.endswith(".conda")

    @property
    def stem(self) -> str:
        """Filename without ``.conda`` / ``.tar.bz2``."""
        for ext in (".conda", ".tar.bz2"):
            if self.filename.endswith(ext):
                return self.filename[: -len(ext)]
        return self.filename

    @cached_property
    def parsed_version(self) -> Version:
        from rattler import Version

        return Version(self.version)

    @cached_property
    def timestamp(self) -> dt.datetime | None:
        """Publish time (UTC) from ``timestamp`` (ms, or s for old records), or ``None``."""
        ts = self.record.get("timestamp")
        if not isinstance(ts, int | float) or ts <= 0:
            return None
        if ts > 1e11:
            ts = ts / 1000.0
        return dt.datetime.fromtimestamp(ts, tz=dt.UTC)

    @cached_property
    def package_record(self) -> PackageRecord:
        """The record as a rattler ``PackageRecord`` (for ``MatchSpec.matches``)."""
        from rattler import PackageRecord
        from rattler.package.build_string import BuildString

        r = self.record
        noarch = r.get("noarch")
        if noarch is True:
            noarch = "generic"
        pr = PackageRecord(
            name=self.name,
            version=self.version,
            build=BuildString(self.build),
            build_number=int(r.get("build_number") or 0),
            subdir=self.subdir,
            arch=r.get("arch"),
            platform=r.get("platform"),
            noarch=noarch or None,  # type: ignore[arg-type]
            depends=self.depends,
            constrains=list(r.get("constrains") or ()),
            size=r.get("size"),
            license=r.get("license"),
            license_family=r.get("license_family"),
        )
        if r.get("sha256"):
            pr.sha256 = bytes.fromhex(r["sha256"])
        if r.get("md5"):
            pr.md5 = bytes.fromhex(r["md5"])
        tf = r.get("track_features")
        if tf:
            pr.track_features = tf.split() if isinstance(tf, str) else list(tf)
        if self.timestamp is not None:
            pr.timestamp = self.timestamp
        return pr


VulnLinksProvider = Callable[[str, str, dict[str, Any]], Sequence[VulnLink]]
DependencyRiskProvider = Callable[[str, str], float | None]
SignedProvider = Callable[[str, str, dict[str, Any]], bool]


@dataclasses.dataclass(frozen=True)
class FilterContext:
    """What filters may consult besides the record. Providers are optional; a filter lists the ones it
    needs in ``requires`` and the engine refuses to run it without them.

    ``protected`` is set by the engine: files re-admitted by an exception, which later filters may only
    flag, never drop.
    """

    vuln_links: VulnLinksProvider | None = None
    dependency_risk: DependencyRiskProvider | None = None
    is_signed: SignedProvider | None = None
    today: dt.date = dataclasses.field(default_factory=lambda: dt.datetime.now(dt.UTC).date())
    protected: frozenset[FileKey] = frozenset()


class _FilterBase(Protocol):
    name: ClassVar[str]
    stage: ClassVar[int]

    @property
    def requires(self) -> tuple[str, ...]: ...

    @classmethod
    def from_config(cls, cfg: FilterConfig) -> _FilterBase | None: ...


@runtime_checkable
class RecordFilter(_FilterBase, Protocol):
    """Judges one file on its own. Must be pure."""

    def decide(self, rec: FileRecord, ctx: FilterContext) -> Decision | None: ...


@runtime_checkable
class GroupFilter(_FilterBase, Protocol):
    """Judges the files still kept, together. Returns a decision for the files it has a word on."""

    def select(self, records: list[FileRecord], ctx: FilterContext) -> dict[FileKey, Decision]: ...


@runtime_checkable
class ExceptionFilter(_FilterBase, Protocol):
    """Re-admits a dropped file by returning a kept decision, or ``None``."""

    def readmit(self, rec: FileRecord, ctx: FilterContext) -> Decision | None: ...
