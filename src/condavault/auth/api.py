"""REST routes for tokens and the caller's identity."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from condavault.auth.identity import Identity
from condavault.auth.models import Token, User
from condavault.auth.permissions import Permission
from condavault.auth.policy import authorize
from condavault.auth.schemas import TokenCreate, TokenCreated, TokenOut, WhoAmI
from condavault.auth.services import find_token, issue_token
from condavault.context import Context
from condavault.db.base import utcnow
from condavault.errors import NotFound, Unauthenticated
from condavault.web.deps import CtxDep, IdentityDep

router = APIRouter(prefix="/api", tags=["auth"])


@router.get("/whoami", response_model=WhoAmI)
def whoami(identity: Identity = IdentityDep) -> WhoAmI:
    return WhoAmI(
        authenticated=identity.authenticated,
        username=identity.username,
        is_admin=identity.is_admin,
        token_id=identity.token_id,
        scopes=[s.to_dict() for s in identity.scopes] if identity.scopes else None,
    )


@router.post("/tokens", response_model=TokenCreated, status_code=201, summary="Create a token (shown once)")
def create_token(body: TokenCreate, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> TokenCreated:
    if not identity.authenticated:
        raise Unauthenticated("authentication required", code="authentication_required")
    with ctx.db.write_session() as s:
        if body.user and body.user != identity.username:
            authorize(identity, Permission.USER_MANAGE)
            user = s.scalar(select(User).where(User.username == body.user))
            if user is None:
                raise NotFound(f"user {body.user!r} not found", code="user_not_found")
        else:
            user = s.get(User, identity.user_id)
            assert user is not None
        token, row = issue_token(
            s,
            user,
            [sc.model_dump() for sc in body.scopes],
            name=body.name,
            expires_at=body.expires_at,
            created_by=identity.username,
        )
        out = TokenCreated(**TokenOut.of(row, user.username).model_dump(), token=token)
    ctx.record_change(
        identity,
        "token:create",
        f"{user.username}/{out.prefix}",
        None,
        {"scopes": out.scopes, "expires_at": str(out.expires_at)},
    )
    return out


@router.get("/tokens", response_model=list[TokenOut], summary="Tokens of the caller (all tokens for admins)")
def list_tokens(all_users: bool = False, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> list[TokenOut]:
    if not identity.authenticated:
        raise Unauthenticated("authentication required", code="authentication_required")
    with ctx.db.session() as s:
        q = select(Token, User.username).join(User, User.id == Token.user_id)
        if all_users:
            authorize(identity, Permission.USER_MANAGE)
        else:
            q = q.where(Token.user_id == identity.user_id)
        return [TokenOut.of(t, u) for t, u in s.execute(q.order_by(Token.id))]


@router.delete("/tokens/{token_or_id}", response_model=TokenOut, summary="Revoke a token (effective at once)")
def revoke_token(token_or_id: str, ctx: Context = CtxDep, identity: Identity = IdentityDep) -> TokenOut:
    if not identity.authenticated:
        raise Unauthenticated("authentication required", code="authentication_required")
    with ctx.db.write_session() as s:
        row = find_token(s, token_or_id)
        if row.user_id != identity.user_id:
            try:
                authorize(identity, Permission.USER_MANAGE)
            except Exception:
                raise NotFound("token not found", code="token_not_found")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
        user = s.get(User, row.user_id)
        out = TokenOut.of(row, user.username if user else "?")
    ctx.auth.invalidate()
    ctx.record_change(identity, "token:revoke", f"{out.user}/{out.prefix}")
    return out
