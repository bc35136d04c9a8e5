"""Token commands."""

from __future__ import annotations

from datetime import UTC, datetime

import typer

from condavault.cli.client import client_from
from condavault.cli.output import console, print_json, table

token_app = typer.Typer(help="Create, list and revoke API tokens.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(token_app, name="token")
    app.command()(whoami)


def whoami(ctx: typer.Context) -> None:
    """Who the server thinks you are, and which token the CLI sent (``credentials``: --token,
    CONDAVAULT_TOKEN, the saved login of this URL, or a data folder's admin token)."""
    client = client_from(ctx)
    out = client.get("/api/whoami")
    obj = ctx.ensure_object(dict)
    print_json({**out, "server": client.url, "credentials": obj.get("token_source")})


@token_app.command("create")
def token_create(
    ctx: typer.Context,
    scope: list[str] = typer.Option(["api"], "--scope", help="api | read | upload (repeatable)"),
    channel: list[str] = typer.Option(None, "--channel", help="Limit read/upload scopes to these channels."),
    user: str = typer.Option(None, "--user", help="Owner (admins only; default: you)."),
    expires: str = typer.Option(None, "--expires", help="Expiry date YYYY-MM-DD or ISO datetime (UTC)."),
    name: str = typer.Option("", "--name", help="A label."),
) -> None:
    """Create a token; it is printed once, as the last word of the output."""
    expires_at = None
    if expires:
        dt = datetime.fromisoformat(expires)
        expires_at = (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).isoformat()
    scopes = [{"scope": s, "channels": list(channel) if channel and s != "api" else None} for s in scope]
    out = client_from(ctx).post(
        "/api/tokens", json={"scopes": scopes, "user": user, "expires_at": expires_at, "name": name}
    )
    console.print(f"token {out['id']} for {out['user']} (prefix {out['prefix']}), shown once:")
    print(out["token"])


@token_app.command("list")
def token_list(
    ctx: typer.Context, all_users: bool = typer.Option(False, "--all"), json_out: bool = typer.Option(False, "--json")
) -> None:
    """Your tokens (``--all``: everyone's, admins only)."""
    rows = client_from(ctx).get("/api/tokens", params={"all_users": all_users})
    if json_out:
        print_json(rows)
    else:
        for r in rows:
            r["scopes"] = ",".join(
                f"{s['scope']}" + (f":{'+'.join(s['channels'])}" if s.get("channels") else "") for s in r["scopes"]
            )
        table(rows, ["id", "prefix", "user", "name", "scopes", "expires_at", "revoked_at"])


@token_app.command("revoke")
def token_revoke(ctx: typer.Context, token: str = typer.Argument(..., help="The token, its prefix or its id.")) -> None:
    """Revoke a token (effective on the next request)."""
    # a full token is sent as its prefix: secrets never go into URLs (and server logs)
    ref = token.split("-")[1] if token.startswith("cv-") and token.count("-") >= 2 else token
    out = client_from(ctx).request("DELETE", f"/api/tokens/{ref}")
    console.print(f"revoked token {out['id']} ({out['prefix']})")
