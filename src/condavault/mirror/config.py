"""Mirror configuration: typed, strict (unknown keys are errors) and YAML round-trippable.

A mirror is described by :class:`MirrorConfig`; its policy by :class:`FilterConfig`, whose keys follow
Anaconda Server's mirror filters (``subdirs``, ``only_specs``, ``include_dependencies``, ``exclude_specs``,
``include_specs``, ``include_licenses``/``exclude_licenses``, ``date_from``/``date_to``, ``only_signed``,
``dedupe_conda_legacy``, the CVE keys) plus condavault's own (``keep_latest``, ``exclude_prereleases``,
``max_size``, ``prune_unsatisfiable``, ``max_dependency_risk``, ``plugins``).

``load_yaml(text)`` raises :class:`MirrorConfigError` (an ``InvalidRequest``) whose message names every
offending key; ``dump_yaml(cfg)`` omits defaults so ``load_yaml(dump_yaml(cfg)) == cfg``.
"""

from __future__ import annotations

import datetime as dt
import re
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from condavault.errors import InvalidRequest

__all__ = [
    "CVE_STATUSES",
    "LICENSE_FAMILIES",
    "FilterConfig",
    "KeepLatest",
    "MirrorConfig",
    "MirrorConfigError",
    "dump_yaml",
    "load_yaml",
    "parse_size",
    "spdx_licensing",
]

LICENSE_FAMILIES: tuple[str, ...] = (
    "agpl",
    "gpl2",
    "gpl3",
    "lgpl",
    "bsd",
    "mit",
    "apache",
    "psf",
    "public_domain",
    "proprietary",
    "other",
    "none",
)
CVE_STATUSES: tuple[str, ...] = ("reported", "active", "mitigated", "cleared", "disputed")
CveStatus = Literal["reported", "active", "mitigated", "cleared", "disputed"]

_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)


class MirrorConfigError(InvalidRequest):
    """A mirror configuration that cannot be used (bad YAML, unknown key, bad value, missing provider)."""

    code = "invalid_mirror_config"


def parse_size(value: int | str) -> int:
    """``"50MB"`` -> 50_000_000, ``"1GiB"`` -> 1_073_741_824, ``1024`` -> 1024 (bytes)."""
    if isinstance(value, bool):
        raise ValueError("size must be a number of bytes or a string like '50MB'")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("size must not be negative")
        return value
    m = _SIZE_RE.match(str(value))
    if not m:
        raise ValueError(f"cannot parse size {value!r}; use bytes or e.g. '50MB', '1.5GiB'")
    unit = (m.group(2) or "").lower()
    base = 1024 if "i" in unit else 1000
    power = "bkmgt".index(unit[0]) if unit else 0
    return int(float(m.group(1)) * base**power)


@lru_cache(maxsize=1)
def spdx_licensing() -> Any:
    """The shared SPDX ``Licensing`` (building it loads the whole license list, so it is done once)."""
    from license_expression import get_spdx_licensing

    return get_spdx_licensing()


def _check_license_entry(entry: str) -> str:
    entry = entry.strip()
    if entry.lower().replace("-", "_") in LICENSE_FAMILIES:
        return entry
    try:
        errors = list(spdx_licensing().validate(entry).errors)
    except Exception as exc:  # license_expression itself trips over some invalid input
        errors = [str(exc) or type(exc).__name__]
    if errors:
        raise ValueError(
            f"{entry!r} is neither a license family ({', '.join(LICENSE_FAMILIES)}) "
            f"nor a valid SPDX expression: {'; '.join(errors)}"
        )
    return entry


def _check_spec(spec: str) -> str:
    from rattler import MatchSpec

    try:
        MatchSpec(spec, strict=False, exact_names_only=False)
    except Exception as exc:
        raise ValueError(f"invalid MatchSpec {spec!r}: {exc}") from None
    return spec


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeepLatest(_Strict):
    """Keep the ``count`` newest versions per package name (and per build variant if ``per_variant``)."""

    count: int = Field(ge=1)
    per_variant: bool = False


class SigstoreIdentity(_Strict):
    """A signer trusted for CEP 27 attestations: OIDC issuer (exact), the certificate's SAN (a regular
    expression matched in full) and optionally the source repository (``owner/name``)."""

    issuer: str = Field(min_length=1, max_length=500)
    identity: str = Field(min_length=1, max_length=500)
    repository: str | None = Field(default=None, min_length=3, max_length=200, pattern=r"^[\w.-]+/[\w.-]+$")

    @field_validator("identity")
    @classmethod
    def _regex(cls, v: str) -> str:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. a FutureWarning for "[[": not the caller's business
                re.compile(v)
        except (re.error, OverflowError, RecursionError) as exc:
            raise ValueError(f"identity is not a regular expression: {str(exc)[:200]}") from None
        return v


class FilterConfig(_Strict):
    """The mirror policy. Every key is optional; an empty config mirrors everything upstream has."""

    subdirs: list[str] | None = None
    only_specs: list[str] = []
    include_dependencies: bool = False
    exclude_specs: list[str] = []
    include_specs: list[str] = []
    include_licenses: list[str] = []
    exclude_licenses: list[str] = []
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    only_signed: bool = False
    # raw ed25519 public keys (64 hex digits) whose conda-content-trust signatures are trusted
    signature_keys: list[str] = []
    # signers whose Sigstore attestations (CEP 27, in CEP 50 sidecars) are trusted: any rule matching
    sigstore_identities: list[SigstoreIdentity] = Field(default=[], max_length=50)
    dedupe_conda_legacy: bool = False
    keep_latest: KeepLatest | None = None
    exclude_prereleases: bool = False
    max_size: int | None = None
    prune_unsatisfiable: Literal["drop", "flag"] | None = None
    cve_score_threshold: float | None = Field(default=None, ge=0.0, le=10.0)
    cve_score_exceptions: list[str] = []
    exclude_cve_statuses: list[CveStatus] = []
    exclude_non_curated_cve: bool = False
    max_dependency_risk: float | None = Field(default=None, ge=0.0)
    plugins: dict[str, dict[str, Any]] = {}

    @field_validator("only_specs", "exclude_specs", "include_specs")
    @classmethod
    def _specs(cls, v: list[str]) -> list[str]:
        return [_check_spec(s) for s in v]

    @field_validator("signature_keys")
    @classmethod
    def _signature_keys(cls, v: list[str]) -> list[str]:
        from condavault.signing.trust import normalise_key

        if len(v) > 100:
            raise ValueError("at most 100 signature_keys")
        return sorted({normalise_key(k) for k in v})

    @field_validator("include_licenses", "exclude_licenses")
    @classmethod
    def _licenses(cls, v: list[str]) -> list[str]:
        return [_check_license_entry(s) for s in v]

    @field_validator("keep_latest", mode="before")
    @classmethod
    def _keep_latest(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool):
            return {"count": v}
        return v

    @field_validator("max_size", mode="before")
    @classmethod
    def _max_size(cls, v: Any) -> Any:
        return None if v is None else parse_size(v)

    @field_validator("cve_score_exceptions")
    @classmethod
    def _cve_ids(cls, v: list[str]) -> list[str]:
        return [s.strip().upper() for s in v]

    @model_validator(mode="after")
    def _coherent(self) -> FilterConfig:
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError(f"date_from {self.date_from} is after date_to {self.date_to}")
        if self.include_dependencies and not self.only_specs:
            raise ValueError("include_dependencies needs only_specs")
        return self


class MirrorConfig(_Strict):
    """One mirror: where to read, which channel to fill, when, and with what policy."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    upstream: str
    channel: str = Field(min_length=1)
    subdirs: list[str] = Field(min_length=1)
    mode: Literal["active", "passive"] = "active"
    cron: str | None = None
    upstream_token: str | None = Field(default=None, repr=False)
    upstream_username: str | None = None
    upstream_password: str | None = Field(default=None, repr=False)
    proxy: str | None = None
    verify_tls: bool = True
    use_shards: bool = True  # read CEP-16 shards when the upstream has them (only changed ones re-fetched)
    on_remove: Literal["keep", "remove"] = "remove"
    # conda-forge scale (passive mirrors with per-file filters only): one streamed job per subdir, see
    # docs/mirrors.md "Mirroring all of conda-forge"; upstream signatures and its removed list are not carried
    streamed: bool = False
    filters: FilterConfig = FilterConfig()

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, v: str) -> str:
        parsed = urlparse(v)
        if parsed.scheme in ("http", "https"):
            if not parsed.netloc:
                raise ValueError(f"upstream URL {v!r} has no host")
        elif parsed.scheme == "file" or not parsed.scheme or Path(v).is_absolute():
            if not v.strip():
                raise ValueError("upstream must not be empty")
        else:
            raise ValueError(f"upstream {v!r} must be an http(s) URL, a file:// URL or a local path")
        return v.rstrip("/") or v

    @field_validator("proxy")
    @classmethod
    def _proxy(cls, v: str | None) -> str | None:
        if v is not None and urlparse(v).scheme not in ("http", "https", "socks5", "socks5h"):
            raise ValueError(f"proxy {v!r} must be an http(s):// or socks5:// URL")
        return v

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from croniter import croniter

        if not croniter.is_valid(v):
            raise ValueError(f"invalid cron expression {v!r}")
        return v

    @model_validator(mode="after")
    def _streamed(self) -> MirrorConfig:
        if self.streamed:
            from condavault.mirror.streamed import stream_blockers

            blockers = stream_blockers(self)
            if blockers:
                raise ValueError(f"streamed: true needs a passive mirror with per-file filters only; not {blockers}")
        return self

    @model_validator(mode="after")
    def _auth(self) -> MirrorConfig:
        if (self.upstream_username is None) != (self.upstream_password is None):
            raise ValueError("upstream_username and upstream_password must be given together")
        if self.upstream_token and self.upstream_username:
            raise ValueError("use either upstream_token or upstream_username/password, not both")
        extra = set(self.filters.subdirs or ()) - set(self.subdirs)
        if extra:
            raise ValueError(f"filters.subdirs {sorted(extra)} are not among the mirrored subdirs")
        return self


def _format_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key {loc!r}")
        else:
            parts.append(f"{loc or '<root>'}: {err['msg']}")
    return "; ".join(parts)


def load_yaml(text: str) -> MirrorConfig:
    """Parse one mirror from YAML; raise :class:`MirrorConfigError` naming each bad key."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MirrorConfigError(f"mirror config is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise MirrorConfigError("mirror config must be a YAML mapping")
    try:
        return MirrorConfig.model_validate(data)
    except ValidationError as exc:
        keys = [".".join(str(p) for p in e["loc"]) for e in exc.errors()]
        raise MirrorConfigError(
            f"invalid mirror config: {_format_errors(exc)}", keys=keys, mirror=data.get("name")
        ) from None


def dump_yaml(cfg: MirrorConfig) -> str:
    """Serialise to YAML, leaving out every value equal to its default."""
    data = cfg.model_dump(mode="json", exclude_defaults=True)
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)
