"""``condavault quarantine list|show|release|delete``, ``condavault blocklist import|remove`` and
``condavault scanning policy|rescan|verdict``: the malware-scanning stage's review side (docs/scanning.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from condavault.cli.client import client_from
from condavault.cli.output import console, table

quarantine_app = typer.Typer(help="Review files the scanning stage quarantined (never indexed, never served).",
                             no_args_is_help=True)  # fmt: skip
blocklist_app = typer.Typer(help="The block list of known-bad sha256s (archives or files inside them).",
                            no_args_is_help=True)  # fmt: skip
scanning_app = typer.Typer(help="Scanning policies, verdicts and rescans.", no_args_is_help=True)

COLUMNS = ["id", "channel", "subdir", "filename", "verdict", "rule", "path", "created_at"]


def register(app: typer.Typer) -> None:
    app.add_typer(quarantine_app, name="quarantine")
    app.add_typer(blocklist_app, name="blocklist")
    app.add_typer(scanning_app, name="scanning")


def _print(data: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True))


@quarantine_app.command("list")
def q_list(
    ctx: typer.Context,
    channel: str = typer.Option(None, "--channel", help="only this channel's files"),
    after: int = typer.Option(0, "--after", help="page: files after this id"),
    limit: int = typer.Option(100, "--limit", min=1, max=1000),
    as_json: bool = typer.Option(False, "--json", help="print JSON"),
) -> None:
    """Quarantined files, oldest first: verdict, the rule that fired and the file it fired on."""
    params: dict[str, Any] = {"after": after, "limit": limit}
    if channel:
        params["channel"] = channel
    out = client_from(ctx).get("/api/quarantine", params=params)
    if as_json:
        _print(out, True)
        return
    table(out["items"], COLUMNS, title="quarantine")
    if out.get("next_after"):
        console.print(f"more: --after {out['next_after']}")


@quarantine_app.command("show")
def q_show(ctx: typer.Context, qid: int = typer.Argument(..., help="quarantine id (see `list`)")) -> None:
    """One quarantined file: every finding, its ruleset, its record (JSON)."""
    _print(client_from(ctx).get(f"/api/quarantine/{qid}"), True)


@quarantine_app.command("release")
def q_release(ctx: typer.Context, qid: int = typer.Argument(..., help="quarantine id")) -> None:
    """Publish a quarantined file into its channel (the index is rebuilt; the decision is audited)."""
    out = client_from(ctx).post(f"/api/quarantine/{qid}/release")
    console.print(f"released {out['channel']}/{out['subdir']}/{out['filename']} ({out['status']})")


@quarantine_app.command("delete")
def q_delete(ctx: typer.Context, qid: int = typer.Argument(..., help="quarantine id")) -> None:
    """Delete a quarantined file and its bytes (unless another record uses them); audited."""
    out = client_from(ctx).request("DELETE", f"/api/quarantine/{qid}")
    console.print(f"deleted {out['channel']}/{out['subdir']}/{out['filename']}")


@blocklist_app.command("import")
def bl_import(
    ctx: typer.Context,
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="sha256 lines, or OSSF/OSV JSON"),
    source: str = typer.Option(None, "--source", help="a label stored with the entries (default: the file name)"),
) -> None:
    """Add known-bad sha256s: a file of lines '<sha256> [note]' (# comments), or OSSF malicious-packages /
    OSV JSON (every 'sha256' value in it). Matching archives, or archives containing a matching file, are
    quarantined from then on."""
    data = file.read_bytes()
    out = client_from(ctx).post(
        "/api/scanning/blocklist",
        params={"source": source or file.name},
        content=data,
        headers={"content-type": "application/octet-stream"},
    )
    console.print(f"{out['entries']} entries read, {out['added']} new (source {out['source']})")


@blocklist_app.command("remove")
def bl_remove(ctx: typer.Context, sha256: str = typer.Argument(..., help="the sha256 to remove")) -> None:
    """Remove one sha256 from the block list."""
    client_from(ctx).request("DELETE", f"/api/scanning/blocklist/{sha256}")
    console.print(f"removed {sha256}")


@scanning_app.command("policy")
def policy(
    ctx: typer.Context,
    channel: str = typer.Argument(..., help="channel name"),
    quarantine_suspicious: bool = typer.Option(
        None, "--quarantine-suspicious/--allow-suspicious", help="set: quarantine 'suspicious' verdicts too, or not"
    ),
) -> None:
    """Show or set a channel's scan policy."""
    c = client_from(ctx)
    if quarantine_suspicious is None:
        out = c.get(f"/api/channels/{channel}/scanning/policy")
    else:
        out = c.request(
            "PUT", f"/api/channels/{channel}/scanning/policy", json={"quarantine_suspicious": quarantine_suspicious}
        )
    _print(out, True)


@scanning_app.command("verdict")
def verdict(ctx: typer.Context, channel: str, subdir: str, filename: str) -> None:
    """A package's scan verdict and install-time code properties (JSON)."""
    _print(client_from(ctx).get(f"/api/channels/{channel}/scanning/files/{subdir}/{filename}"), True)


@scanning_app.command("rescan")
def rescan(
    ctx: typer.Context,
    limit: int = typer.Option(None, "--limit", min=1, help="look at most at this many records in this run"),
    restart: bool = typer.Option(False, "--restart", help="start from the first record, not the stored cursor"),
) -> None:
    """Rescan stored packages whose verdict predates the current rules (a job; resumable)."""
    body: dict[str, Any] = {"restart": restart}
    if limit:
        body["limit"] = limit
    out = client_from(ctx).post("/api/scanning/rescan", json=body)
    console.print(f"rescan job {out['job_id']} (rules {out['ruleset']}); see `condavault jobs show {out['job_id']}`")
