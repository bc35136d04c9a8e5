"""The one exception tree of condavault.

Domain code raises these; ``condavault.app`` maps them to HTTP in one place and the CLI prints them.
Every error has a stable machine-readable ``code`` (used in the JSON error body
``{"error": {"code", "message", "details"}}``), an HTTP ``status`` and optional ``details``.

    CondavaultError (500)
    ├── SettingsError (500)             settings that cannot be used: the process refuses to start
    ├── InvalidRequest (400)            malformed input that is not a package
    │   ├── InvalidName (400)           channel/user/group names that break the naming rules
    │   ├── UpstreamNotAllowed (400)    a mirror/CVE source address the outbound URL policy refuses
    │   └── InvalidPackage (400)        an uploaded archive that must not be stored
    │       ├── (one subclass per rejection, each with its own code)
    │       └── Quarantined (422)   held back by the scanning stage (stored in quarantine)
    ├── PayloadTooLarge (413)           a request body (an upload, a JSON call) over its route's limit
    ├── RequestTimeout (408)            a request body that stalled or trickled in too slowly
    ├── Unauthenticated (401)           missing or invalid credentials
    ├── PermissionDenied (403)          valid credentials without the needed permission
    ├── NotFound (404)                  unknown channel, file, user, ... (also used to hide private names)
    ├── Conflict (409)                  a name or filename already taken by something else (also a
    │                                   unique constraint a concurrent writer won)
    │   └── LastAdmin (409)             a change that would leave no enabled administrator
    ├── Busy (409)                      an operation that must not run twice at once (mirror run, ...)
    ├── RateLimited (429)               too many failed logins
    ├── ScannerUnavailable (503)        a configured malware scanner (clamd) did not answer
    └── UpstreamError (502)             a mirror upstream failed after retries
"""

from __future__ import annotations

from typing import Any


class CondavaultError(Exception):
    """Base class. Raised directly only for unexpected internal failures."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = {k: v for k, v in details.items() if v is not None}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, details={self.details!r})"

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class InvalidRequest(CondavaultError):
    status = 400
    code = "invalid_request"


class InvalidName(InvalidRequest):
    code = "invalid_name"


class UpstreamNotAllowed(InvalidRequest):
    """An upstream URL (mirror, CVE source) that points where this server may not connect: checked when
    it is configured and again at every connection, after redirects and DNS resolution."""

    code = "upstream_not_allowed"


class InvalidPackage(InvalidRequest):
    """An archive that failed validation. Nothing of it is stored."""

    code = "invalid_package"


class NotACondaArchive(InvalidPackage):
    code = "not_a_conda_archive"


class CorruptArchive(InvalidPackage):
    code = "corrupt_archive"


class InvalidFilename(InvalidPackage):
    code = "invalid_filename"


class FilenameMismatch(InvalidPackage):
    code = "filename_mismatch"


class SubdirMismatch(InvalidPackage):
    code = "subdir_mismatch"


class UnsafePath(InvalidPackage):
    code = "unsafe_path"


class MissingMetadata(InvalidPackage):
    code = "missing_metadata"


class DecompressionLimit(InvalidPackage):
    code = "decompression_limit_exceeded"


class InvalidIndexJson(InvalidPackage):
    """``info/index.json`` (or an imported repodata record) with a field of the wrong type, range or
    syntax; ``details.field`` names it."""

    code = "invalid_index_json"


class ChecksumMismatch(InvalidPackage):
    code = "checksum_mismatch"


class Quarantined(InvalidPackage):
    """A file the scanning stage held back: stored in quarantine (never indexed, never served) until a
    reviewer releases it; ``details`` name the verdict, the rule and the file that fired."""

    status = 422
    code = "quarantined"


class ScannerUnavailable(CondavaultError):
    """A configured scanner (clamd) could not scan a file: the file is not stored (never unscanned)."""

    status = 503
    code = "scanner_unavailable"


class PayloadTooLarge(CondavaultError):
    status = 413
    code = "payload_too_large"


class RequestTimeout(CondavaultError):
    status = 408
    code = "request_timeout"


class Unauthenticated(CondavaultError):
    status = 401
    code = "unauthenticated"


class PermissionDenied(CondavaultError):
    status = 403
    code = "permission_denied"


class NotFound(CondavaultError):
    status = 404
    code = "not_found"


class Conflict(CondavaultError):
    status = 409
    code = "conflict"


class LastAdmin(Conflict):
    code = "last_admin"


class Busy(CondavaultError):
    status = 409
    code = "busy"


class LeaseLost(Busy):
    """A process's lease (an index run's subdir, a job) was taken over by another process: its work is not
    published; the new holder does it."""

    code = "lease_lost"


class RateLimited(CondavaultError):
    status = 429
    code = "rate_limited"


class UpstreamError(CondavaultError):
    status = 502
    code = "upstream_error"


class SettingsError(CondavaultError):
    """Invalid settings (environment, TOML file or flags): raised at start-up, before anything runs."""

    code = "invalid_settings"
