"""The one mapping from domain errors to HTTP."""

from __future__ import annotations

from starlette.responses import JSONResponse

from condavault.errors import CondavaultError


def json_error(exc: CondavaultError) -> JSONResponse:
    headers = {}
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="condavault"'
    if exc.status == 429 and "retry_after" in exc.details:
        headers["Retry-After"] = str(exc.details["retry_after"])
    return JSONResponse(exc.to_dict(), status_code=exc.status, headers=headers)
