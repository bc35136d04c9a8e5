"""``condavault audit downloads|changes``: query and export the audit log."""

from __future__ import annotations

import json
import sys
from typing import Any

import typer

from condavault.cli.client import client_from
from condavault.cli.output import table

audit_app = typer.Typer(help="Query and export the audit log (downloads, administrative changes).",
                        no_args_is_help=True)  # fmt: skip


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")


def _run(ctx: typer.Context, kind: str, params: dict[str, Any], fmt: str, columns: list[str]) -> None:
    query = {k: v for k, v in params.items() if v is not None}
    if fmt == "csv":
        resp = client_from(ctx).http.get(f"/api/audit/{kind}", params={**query, "format": "csv"})
        if resp.status_code >= 400:
            client_from(ctx).get(f"/api/audit/{kind}", params=query)  # raises the API error
        sys.stdout.write(resp.text)
        return
    rows = client_from(ctx).get(f"/api/audit/{kind}", params=query)
    if fmt == "json":
        print(json.dumps(rows, indent=2))
    else:
        table(rows, columns)


@audit_app.command("downloads")
def downloads(
    ctx: typer.Context,
    start: str = typer.Option(None, "--from", help="YYYY-MM-DD or ISO datetime"),
    end: str = typer.Option(None, "--to", help="YYYY-MM-DD (inclusive day) or ISO datetime"),
    user: str = typer.Option(None, "--user"),
    channel: str = typer.Option(None, "--channel"),
    package: str = typer.Option(None, "--package"),
    fmt: str = typer.Option("table", "--format", help="table | csv | json"),
) -> None:
    """Package downloads: time, user/token, address, user agent, channel, file, sha256."""
    params = {"from": start, "to": end, "user": user, "channel": channel, "package": package}
    _run(ctx, "downloads", params, fmt, ["at", "username", "ip", "channel", "subdir", "filename", "sha256"])


@audit_app.command("changes")
def changes(
    ctx: typer.Context,
    start: str = typer.Option(None, "--from"),
    end: str = typer.Option(None, "--to"),
    user: str = typer.Option(None, "--user"),
    channel: str = typer.Option(None, "--channel"),
    package: str = typer.Option(None, "--package"),
    action: str = typer.Option(None, "--action", help="action prefix, e.g. user: or channel:grant"),
    fmt: str = typer.Option("table", "--format", help="table | csv | json"),
) -> None:
    """Administrative changes: who changed what, with before/after."""
    params = {"from": start, "to": end, "user": user, "channel": channel, "package": package, "action": action}
    _run(ctx, "changes", params, fmt, ["at", "username", "action", "target"])
