"""Dependencies shared by every router."""

from __future__ import annotations

from fastapi import Depends, Request

from condavault.auth.deps import get_identity
from condavault.auth.identity import Identity
from condavault.context import Context


def get_ctx(request: Request) -> Context:
    return request.app.state.ctx  # type: ignore[no-any-return]


CtxDep = Depends(get_ctx)
# bounds of numeric parameters: beyond them databases overflow (and nobody pages that far)
MAX_OFFSET = 2**31 - 1
MAX_ID = 2**31 - 1
IdentityDep = Depends(get_identity)

__all__ = ["MAX_ID", "MAX_OFFSET", "CtxDep", "Identity", "IdentityDep", "get_ctx"]
