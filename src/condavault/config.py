"""One typed Settings object, read once at start-up from ``CONDAVAULT_*`` variables or a TOML file."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    blob_store: Literal["local", "s3"] = "local"
    blob_dir: Path | None = None

    # ingest limits
    max_upload_bytes: int = 4 * GiB
    max_decompressed_bytes: int = 32 * GiB
    max_compression_ratio: float = 250.0
    max_members: int = 500_000

    # indexing
    zstd_level: int = 6
    shard_zstd_level: int = 16
    index_max_age: int = 30
    shard_retention_days: int = 7
    current_repodata: bool = True

    # jobs
    worker: bool = True
    job_threads: int = 4

    # mirror downloads
    mirror_concurrency: int = 8
    mirror_retries: int = 4
    mirror_timeout: float = 60.0

    # vulnerabilities
    vulns_mapping_file: Path | None = None
    vulns_cpe_mapping_file: Path | None = None

    # access
    session_secret: str | None = None
    audit_retention_days: int = 365
    admin_password: str | None = Field(default=None, description="bootstrap first admin password")

    # logging
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"

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
    def is_sqlite(self) -> bool:
        return self.db_url.startswith("sqlite")


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
    return Settings(**values)
