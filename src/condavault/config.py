"""One typed Settings object, read once at start-up from ``CONDAVAULT_*`` variables or a TOML file."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from condavault.auth.backends.settings import LdapSettings, OidcSettings
from condavault.errors import SettingsError

GiB = 1024**3
MiB = 1024**2


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONDAVAULT_", extra="forbid")

    data_dir: Path = Path("condavault-data")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<data_dir>/condavault.db"
    )
    host: str = "127.0.0.1"
    port: int = 8080
    public_url: str | None = Field(default=None, description="External URL, used in client config snippets")

    # storage
    blob_store: Literal["local", "s3"] = Field(
        default="local", description="'local' (a folder, blob_dir) or 's3' (an S3-compatible bucket, s3_*)"
    )
    blob_dir: Path | None = None
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 API endpoint (MinIO, Ceph, moto...); default: AWS for s3_region"
    )
    s3_bucket: str | None = Field(default=None, description="bucket of the blobs (must exist)")
    s3_region: str | None = Field(default=None, description="region of the bucket (also signs presigned URLs)")
    s3_prefix: str = Field(default="", max_length=200, description="key prefix of every blob, e.g. 'condavault/'")
    s3_access_key_id: str | None = Field(
        default=None, description="default: the standard AWS chain (AWS_ACCESS_KEY_ID, profile, instance role)"
    )
    s3_secret_access_key: str | None = None
    s3_serve_mode: Literal["redirect", "stream"] = Field(
        default="redirect", description="packages: 307 to a presigned URL, or streamed through condavault"
    )
    s3_presign_seconds: int = Field(default=300, ge=10, le=7 * 24 * 3600, description="lifetime of presigned URLs")

    # ingest limits
    max_upload_bytes: int = 4 * GiB
    max_decompressed_bytes: int = 32 * GiB
    max_compression_ratio: float = 250.0
    max_members: int = 500_000

    # indexing
    zstd_level: int = 1  # of each index bucket, compressed when written: on real repodata no larger than 3 or 5
    shard_zstd_level: int = 16
    index_max_age: int = 30
    x_accel_redirect_prefix: str | None = Field(
        default=None,
        description="behind nginx: answer blob GETs with an X-Accel-Redirect to <prefix>/ab/cd/<sha256> "
        "(an internal location aliasing the blob folder) so nginx sends the bytes (sendfile)",
    )
    index_retention_seconds: int = Field(
        default=600,
        ge=0,
        description="superseded index files are deleted by the server this long after they "
        "were replaced (never less than index_max_age + 5 s)",
    )
    shard_retention_days: int = 7
    current_repodata: bool = True

    # jobs
    worker: bool = True
    job_threads: int = Field(default=4, ge=2, le=64, description="threads running durable jobs in a worker")
    node_name: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9._-]{1,100}$",
        description="this machine's name in job and index leases (default: the host name); unique per machine",
    )
    job_lease_seconds: float = Field(
        default=60.0,
        ge=5,
        le=3600,
        description="a job whose worker stopped renewing its lease (a lost machine) is taken over after this",
    )
    jobs_retention_days: float = Field(default=30.0, gt=0, description="finished jobs are kept this long")

    # mirror downloads
    # files in flight at once, each on a connection of its own (async, not threads): small files are bound
    # by the upstream's latency per request, not by bandwidth or CPU, so a few dozen pay off
    mirror_concurrency: int = 48
    mirror_retries: int = 4
    mirror_timeout: float = 60.0
    # passive mirrors streamed one subdir at a time: upstream records per transaction (issue 15)
    mirror_batch_records: int = Field(default=5000, ge=100, le=50_000)

    # vulnerabilities
    vulns_mapping_file: Path | None = None
    vulns_cpe_mapping_file: Path | None = None

    # access
    session_secret: str | None = None
    audit_retention_days: int = 365
    audit_queue_max: int = Field(
        default=100_000, ge=1000, description="downloads waiting to be written to the audit log, at most"
    )
    admin_password: str | None = Field(default=None, description="bootstrap first admin password")

    # hostile clients: request bodies, slow clients, proxies (docs/security.md)
    max_body_bytes: int = Field(default=1 * MiB, description="JSON/form bodies of ordinary API calls")
    max_auth_body_bytes: int = Field(default=64 * 1024, description="bodies of login and token calls")
    max_anonymous_body_bytes: int = Field(
        default=64 * 1024, description="bodies read before credentials are checked, and of anonymous callers"
    )
    max_anonymous_document_bytes: int = Field(
        default=256 * 1024, description="environment files checked anonymously (POST /api/check-env)"
    )
    max_metadata_body_bytes: int = Field(
        default=512 * MiB, description="repodata imports and patch instructions (authorised callers only)"
    )
    header_timeout: float = Field(default=20.0, gt=0, description="seconds a client may take to send its headers")
    max_header_bytes: int = Field(default=64 * 1024, ge=4096, description="request line plus headers")
    body_timeout: float = Field(
        default=30.0,
        gt=0,
        description="seconds without body bytes before a request is dropped (408); also the "
        "deadline of a whole small body",
    )
    min_upload_rate: int = Field(
        default=1024, ge=0, description="bytes/s an upload must average over each body_timeout window"
    )
    keep_alive_timeout: float = Field(default=5.0, gt=0, description="idle seconds before a kept-alive connection ends")
    limit_concurrency: int = Field(default=2048, ge=16, description="open connections + tasks before new ones get 503")
    forwarded_allow_ips: list[str] = Field(
        default_factory=list,
        description="proxies whose X-Forwarded-For/-Proto are trusted (addresses or CIDRs); empty trusts none",
    )
    # outbound requests: mirror and CVE upstreams (condavault.outbound.policy)
    upstream_allow_hosts: list[str] = Field(
        default_factory=list, description="if set, upstreams must match one of these names, *.suffixes or CIDRs"
    )
    upstream_deny_hosts: list[str] = Field(default_factory=list, description="names, *.suffixes or CIDRs refused")
    upstream_allow_loopback: bool = Field(default=False, description="allow 127.0.0.0/8 and ::1 upstreams")
    upstream_allow_private: bool = Field(default=True, description="allow RFC 1918 / ULA / CGNAT upstreams")
    # maintenance
    blob_grace_seconds: int = Field(
        default=24 * 3600, ge=0, description="unreferenced blobs younger than this are never collected"
    )
    temp_grace_seconds: int = Field(default=3600, ge=60, description="temp files younger than this are in flight")

    # air-gap bundles and signing (docs/airgap.md)
    signing_key_file: Path | None = Field(
        default=None,
        description="ed25519 PEM key that signs exported bundles; default <data_dir>/keys/server-ed25519.pem",
    )
    trusted_keys: list[str] = Field(
        default_factory=list,
        description="public keys (ed25519:<hex>) whose bundles this server imports, besides its own",
    )
    airgap_import_cron: str = Field(
        default="*/15 * * * *", description="cron of the scan of the drop folder <data_dir>/airgap/ for bundles"
    )
    airgap_max_bundle_bytes: int = Field(
        default=2 * 1024 * GiB, description="a bundle (all its files) larger than this is refused unread"
    )
    airgap_max_files: int = Field(default=5_000_000, description="files one bundle may list, at most")

    # malware and suspicious-content scanning (docs/scanning.md)
    scanning: bool = Field(default=True, description="scan every ingested package (structure, YARA, block list)")
    clamd_socket: str | None = Field(
        default=None, description="clamd socket (a path, or host:port) to scan payload files with ClamAV"
    )
    scan_rules_dir: Path | None = Field(
        default=None, description="extra YARA rules (*.yar) scanned besides the shipped rule set"
    )
    clamav_database_dir: Path | None = Field(
        default=None,
        description="ClamAV signature database folder (clamd's DatabaseDirectory): `bundle export "
        "--scanning` carries its files, `bundle import` installs them there (air-gapped networks)",
    )
    scan_quarantine_suspicious: bool = Field(
        default=False, description="quarantine 'suspicious' verdicts too (a channel's policy may override)"
    )
    scan_rescan_cron: str = Field(
        default="23 3 * * *", description="cron of the rescan of verdicts reached under older rules (bounded run)"
    )
    scan_rescan_limit: int = Field(default=20_000, ge=1, description="records one scheduled rescan looks at, at most")
    scan_max_file_bytes: int = Field(
        default=64 * MiB, ge=0, description="payload files larger than this are hashed but not matched by rules"
    )
    sigstore_trusted_root: Path | None = Field(
        default=None,
        description="a Sigstore trusted_root.json: attestation sidecars are verified offline against it",
    )

    # logging
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"

    # access: identity providers, sessions, login throttling (auth domain; docs/access.md)
    ldap: LdapSettings | None = Field(default=None, description="LDAP / Active Directory login and group sync")
    oidc: OidcSettings | None = Field(default=None, description="OpenID Connect single sign-on")
    ldap_sync_minutes: int = Field(default=60, description="LDAP group sync period; 0 disables it")
    session_max_age: int = Field(default=12 * 3600, description="web session lifetime in seconds")
    login_max_failures: int = Field(default=5, description="failed logins per account before a block")
    login_max_failures_per_ip: int = Field(default=50, description="failed logins per client address")
    login_window_seconds: int = 900
    login_block_seconds: int = 900
    cli_login_token_days: int = Field(default=90, description="lifetime of tokens made by `condavault login`")
    audit_downloads: bool = Field(default=True, description="record every package download in the audit log")

    @model_validator(mode="after")
    def _s3_needs_a_bucket(self) -> Settings:
        if self.blob_store == "s3" and not self.s3_bucket:
            raise ValueError("blob_store = 's3' needs s3_bucket (CONDAVAULT_S3_BUCKET)")
        return self

    @field_validator("data_dir", mode="after")
    @classmethod
    def _absolute(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'condavault.db'}"

    @property
    def blobs_path(self) -> Path:
        return (self.blob_dir or self.data_dir / "blobs").resolve()

    @property
    def tmp_path(self) -> Path:
        return self.data_dir / "tmp"

    @property
    def admin_token_path(self) -> Path:
        return self.data_dir / "admin-token"

    @property
    def airgap_path(self) -> Path:
        """The drop folder of air-gap bundles."""
        return self.data_dir / "airgap"

    @property
    def is_sqlite(self) -> bool:
        return self.db_url.startswith("sqlite")

    # vulnerabilities: feeds and schedules (vulns domain; see docs/vulnerabilities.md)
    vulns_sources: list[str] = Field(
        default_factory=list,
        description="CVE/NVD/OSV sources synced on a schedule: http(s) URLs of JSON or zip files, local dirs or zips",
    )
    vulns_refresh_cron: str = Field(default="0 * * * *", description="cron of the source refresh (hourly)")
    vulns_import_dir: Path | None = Field(
        default=None, description="air-gap drop folder: zip/JSON feeds found here are imported on vulns_import_cron"
    )
    vulns_import_cron: str = Field(default="30 2 * * *", description="cron of the air-gap folder import (daily)")
    vulns_sweep_seconds: float = Field(
        default=5.0, description="period of the sweep matching records that arrived without an ingest event"
    )
    vulns_policy_threshold: float = Field(default=7.0, description="default CVSS threshold of check-env verdicts")
    vulns_score_preference: list[str] = Field(
        default_factory=lambda: ["nvd:3.x", "nvd:4.0", "nvd:2.0", "*:3.x", "*:4.0", "*:2.0"],
        description="which of an advisory's scores is its effective score (WHO:VERSION, first fit wins); "
        "every threshold uses it (docs/vulnerabilities.md)",
    )
    vulns_feed_priority: list[str] = Field(
        default_factory=lambda: ["osv", "nvd", "nvd-1.1", "cve5"],
        description="which feed's affected entries decide a conda name when several describe it",
    )
    vulns_match_bundled: bool = Field(
        default=True, description="link packages that bundle a copy of a PyPI project (labelled, not counting)"
    )

    @field_validator("vulns_score_preference", mode="after")
    @classmethod
    def _score_preference(cls, v: list[str]) -> list[str]:
        from condavault.vulns.scoring import check_preference

        return list(check_preference(v))


# ``CONDAVAULT_*`` variables that are not settings: read by the command-line client, or by the test suite
NOT_SETTINGS = frozenset({"url", "token", "config", "password", "admin_password", "testdata", "chromium"})
NOT_SETTINGS_PREFIXES = ("test_", "fuzz_")


def unknown_environment(environ: dict[str, str] | None = None) -> list[str]:
    """A sentence for each ``CONDAVAULT_*`` environment variable that is no setting (a misspelt name is
    otherwise ignored without a word: ``CONDAVAULT_DB_URL`` would leave the server on SQLite)."""
    import difflib

    env = os.environ if environ is None else environ
    known = {name.upper() for name in Settings.model_fields}
    out = []
    for key in sorted(env):
        if not key.startswith("CONDAVAULT_"):
            continue
        name = key[len("CONDAVAULT_") :]
        field = name.split("__", 1)[0]
        if field in known or name.lower() in NOT_SETTINGS or name.lower().startswith(NOT_SETTINGS_PREFIXES):
            continue
        close = difflib.get_close_matches(field, known, n=1, cutoff=0.6)
        hint = f"; did you mean CONDAVAULT_{close[0]}?" if close else ""
        out.append(f"the environment variable {key} is not a condavault setting and is ignored{hint}")
    return out


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings: explicit overrides > environment > TOML file (``CONDAVAULT_CONFIG``) > defaults."""
    values: dict[str, Any] = {}
    path = config_file or (Path(os.environ["CONDAVAULT_CONFIG"]) if os.environ.get("CONDAVAULT_CONFIG") else None)
    if path is not None:
        with open(path, "rb") as fh:
            values.update(tomllib.load(fh))
    env_keys = {k[len("CONDAVAULT_") :].lower() for k in os.environ if k.startswith("CONDAVAULT_")}
    for key in env_keys:
        values.pop(key, None)  # the environment wins over the file
    values.update({k: v for k, v in overrides.items() if v is not None})
    values.pop("config", None)
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors(include_url=False)
        )
        raise SettingsError(f"invalid settings: {problems}", problems=[e["msg"] for e in exc.errors()]) from None
