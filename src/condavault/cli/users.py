"""Users, groups, roles, channel grants and login (talk to a server over its REST API)."""

from __future__ import annotations

import getpass
import json
import time
from typing import Any

import typer

from condavault.cli.client import Client, client_from, credentials_path, store_token, stored_token
from condavault.cli.output import console, err_console, print_json, table

user_app = typer.Typer(help="Create, list, disable and enable accounts; reset passwords.", no_args_is_help=True)
group_app = typer.Typer(help="Create groups and manage their members.", no_args_is_help=True)
role_app = typer.Typer(help="List roles; create, change and delete custom roles.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(user_app, name="user")
    app.add_typer(group_app, name="group")
    app.add_typer(role_app, name="role")
    app.command()(login)
    app.command()(logout)
    from condavault.cli.channels import channel_app

    channel_app.command("grant")(channel_grant)
    channel_app.command("revoke")(channel_revoke)
    channel_app.command("grants")(channel_grants)


# -- users -------------------------------------------------------------------------------------


def _password(given: str | None, prompt: bool) -> str | None:
    if given:
        return given
    if prompt:
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise typer.BadParameter("passwords differ")
        return first
    return None


@user_app.command("create")
def user_create(
    ctx: typer.Context,
    name: str,
    password: str = typer.Option(None, "--password", help="Initial password (prompted with --prompt)."),
    prompt: bool = typer.Option(False, "--prompt", help="Ask for the password."),
    admin: bool = typer.Option(False, "--admin", help="Make a global administrator."),
    service: bool = typer.Option(False, "--service", help="A service account (tokens only, no password)."),
    email: str = typer.Option(None),
) -> None:
    """Create account NAME."""
    body = {
        "username": name,
        "password": _password(password, prompt),
        "is_admin": admin,
        "is_service": service,
        "email": email,
    }
    out = client_from(ctx).post("/api/users", json=body)
    kind = "service account" if out["is_service"] else ("administrator" if out["is_admin"] else "user")
    console.print(f"created {kind} {out['username']}")


@user_app.command("list")
def user_list(ctx: typer.Context, json_out: bool = typer.Option(False, "--json")) -> None:
    """All accounts."""
    rows = client_from(ctx).get("/api/users")
    if json_out:
        print_json(rows)
        return
    for r in rows:
        r["groups"] = ",".join(r["groups"])
    table(rows, ["username", "source", "is_admin", "is_service", "disabled", "groups", "last_login_at"])


def _patch(ctx: typer.Context, name: str, body: dict[str, Any]) -> dict[str, Any]:
    return client_from(ctx).request("PATCH", f"/api/users/{name}", json=body)  # type: ignore[no-any-return]


@user_app.command("disable")
def user_disable(ctx: typer.Context, name: str) -> None:
    """Disable NAME: its tokens and sessions stop working at once."""
    _patch(ctx, name, {"disabled": True})
    console.print(f"disabled {name}")


@user_app.command("enable")
def user_enable(ctx: typer.Context, name: str) -> None:
    """Enable NAME again."""
    _patch(ctx, name, {"disabled": False})
    console.print(f"enabled {name}")


@user_app.command("reset-password")
def user_reset_password(
    ctx: typer.Context,
    name: str,
    password: str = typer.Option(None, "--password", help="New password (prompted when absent)."),
) -> None:
    """Set a new password for NAME (ends its web sessions)."""
    client_from(ctx).post(f"/api/users/{name}/password", json={"password": _password(password, True)})
    console.print(f"password of {name} changed")


@user_app.command("delete")
def user_delete(ctx: typer.Context, name: str, yes: bool = typer.Option(False, "--yes", "-y")) -> None:
    """Delete NAME and its tokens."""
    if not yes:
        typer.confirm(f"Delete user {name}?", abort=True)
    client_from(ctx).request("DELETE", f"/api/users/{name}")
    console.print(f"deleted {name}")


# -- groups ------------------------------------------------------------------------------------


@group_app.command("create")
def group_create(ctx: typer.Context, name: str, description: str = typer.Option("")) -> None:
    """Create group NAME."""
    client_from(ctx).post("/api/groups", json={"name": name, "description": description})
    console.print(f"created group {name}")


@group_app.command("list")
def group_list(ctx: typer.Context, json_out: bool = typer.Option(False, "--json")) -> None:
    """Groups and members."""
    rows = client_from(ctx).get("/api/groups")
    if json_out:
        print_json(rows)
        return
    for r in rows:
        r["members"] = ",".join(m["username"] + ("" if m["source"] == "local" else f"({m['source']})")
                                for m in r["members"])  # fmt: skip
    table(rows, ["name", "source", "members", "description"])


@group_app.command("add")
def group_add(ctx: typer.Context, group: str, user: str) -> None:
    """Add USER to GROUP."""
    client_from(ctx).request("PUT", f"/api/groups/{group}/members/{user}")
    console.print(f"added {user} to {group}")


@group_app.command("remove")
def group_remove(ctx: typer.Context, group: str, user: str) -> None:
    """Remove USER from GROUP."""
    client_from(ctx).request("DELETE", f"/api/groups/{group}/members/{user}")
    console.print(f"removed {user} from {group}")


@group_app.command("delete")
def group_delete(ctx: typer.Context, group: str) -> None:
    """Delete GROUP (and its grants)."""
    client_from(ctx).request("DELETE", f"/api/groups/{group}")
    console.print(f"deleted group {group}")


# -- roles -------------------------------------------------------------------------------------


@role_app.command("list")
def role_list(ctx: typer.Context, json_out: bool = typer.Option(False, "--json")) -> None:
    """Roles and their permissions."""
    rows = client_from(ctx).get("/api/roles")
    if json_out:
        print_json(rows)
        return
    for r in rows:
        r["permissions"] = ",".join(r["permissions"])
    table(rows, ["name", "builtin", "permissions", "description"])


@role_app.command("create")
def role_create(
    ctx: typer.Context,
    name: str,
    permission: list[str] = typer.Option(..., "--permission", "-p", help="e.g. channel:read (repeatable)"),
    description: str = typer.Option(""),
) -> None:
    """Create custom role NAME."""
    client_from(ctx).post("/api/roles", json={"name": name, "permissions": permission, "description": description})
    console.print(f"created role {name}")


@role_app.command("delete")
def role_delete(ctx: typer.Context, name: str) -> None:
    """Delete custom role NAME."""
    client_from(ctx).request("DELETE", f"/api/roles/{name}")
    console.print(f"deleted role {name}")


# -- channel grants ----------------------------------------------------------------------------


def _subject(group: str | None, user: str | None) -> dict[str, str]:
    if bool(group) == bool(user):
        raise typer.BadParameter("give exactly one of --group or --user")
    return {"group": group} if group else {"user": user}  # type: ignore[dict-item]


def channel_grant(
    ctx: typer.Context,
    channel: str,
    role: str = typer.Option(..., "--role", help="owner | contributor | viewer | a custom role"),
    group: str = typer.Option(None, "--group"),
    user: str = typer.Option(None, "--user"),
) -> None:
    """Give a group or user a role on CHANNEL."""
    client_from(ctx).post(f"/api/channels/{channel}/grants", json={"role": role, **_subject(group, user)})
    console.print(f"granted {role} on {channel} to {group or user}")


def channel_revoke(
    ctx: typer.Context,
    channel: str,
    role: str = typer.Option(..., "--role"),
    group: str = typer.Option(None, "--group"),
    user: str = typer.Option(None, "--user"),
) -> None:
    """Take a role on CHANNEL away from a group or user."""
    client_from(ctx).request(
        "DELETE", f"/api/channels/{channel}/grants", params={"role": role, **_subject(group, user)}
    )
    console.print(f"revoked {role} on {channel} from {group or user}")


def channel_grants(ctx: typer.Context, channel: str, json_out: bool = typer.Option(False, "--json")) -> None:
    """Who has which role on CHANNEL."""
    rows = client_from(ctx).get(f"/api/channels/{channel}/grants")
    print_json(rows) if json_out else table(rows, ["role", "user", "group", "created_at"])


# -- login -------------------------------------------------------------------------------------


def login(
    ctx: typer.Context,
    username: str = typer.Option(None, "--username", "-u", help="Account name (prompted when absent)."),
    password: str = typer.Option(None, "--password", envvar="CONDAVAULT_PASSWORD", help="Prompted when absent."),
    sso: bool = typer.Option(False, "--sso", help="Single sign-on through the browser (device flow)."),
    print_token: bool = typer.Option(False, "--print", help="Print the token instead of storing it."),
) -> None:
    """Log in and store an API token in ~/.config/condavault/credentials.json (or print it)."""
    obj = ctx.ensure_object(dict)
    client = Client(obj["url"], None)
    if sso:
        start = client.post("/api/auth/oidc/device")
        err_console.print(
            f"Open {start.get('verification_uri_complete') or start['verification_uri']} "
            f"and enter the code [bold]{start['user_code']}[/bold]"
        )
        deadline = time.monotonic() + start["expires_in"]
        interval = max(1, int(start["interval"]))
        while True:
            out = client.post("/api/auth/oidc/device/poll", json={"handle": start["handle"]})
            if out["status"] == "done":
                break
            if time.monotonic() > deadline:
                raise typer.Exit(2)
            time.sleep(interval)
    else:
        username = username or input("username: ")
        password = password or getpass.getpass("password: ")
        out = client.post("/api/auth/login", json={"username": username, "password": password, "issue_token": True})
    if print_token:
        print(out["token"])
        return
    path = store_token(obj["url"], out["username"], out["token"])
    console.print(f"logged in as {out['username']}; token stored in {path}")


def logout(ctx: typer.Context) -> None:
    """Revoke the stored login token and forget it."""
    obj = ctx.ensure_object(dict)
    token = stored_token(obj["url"])
    if token:
        try:
            Client(obj["url"], token).request("DELETE", f"/api/tokens/{token.split('-')[1]}")
        except Exception as exc:  # the token may be gone already
            err_console.print(f"could not revoke the token: {exc}")
        path = credentials_path()
        data = json.loads(path.read_text())
        data.pop(obj["url"].rstrip("/"), None)
        path.write_text(json.dumps(data, indent=2))
    console.print("logged out")
