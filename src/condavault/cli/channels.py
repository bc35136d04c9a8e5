"""Channel and package commands (talk to a server over its REST API)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from condavault.cli.client import ApiError, client_from
from condavault.cli.output import console, err_console, print_json, table

channel_app = typer.Typer(help="Create, list, show, change and delete channels.", no_args_is_help=True)
package_app = typer.Typer(help="List, remove, copy and move package files.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(channel_app, name="channel")
    app.add_typer(package_app, name="package")
    app.command()(upload)
    app.command("client-config")(client_config)
    app.command("import-repodata")(import_repodata)


@channel_app.command("create")
def channel_create(
    ctx: typer.Context,
    name: str,
    privacy: str = typer.Option("public", help="public | authenticated | private"),
    description: str = typer.Option("", help="Free text."),
) -> None:
    """Create channel NAME."""
    out = client_from(ctx).post("/api/channels", json={"name": name, "privacy": privacy, "description": description})
    console.print(f"created channel {out['name']} ({out['privacy']})")


@channel_app.command("list")
def channel_list(ctx: typer.Context, json_out: bool = typer.Option(False, "--json")) -> None:
    """Channels you may read."""
    rows = client_from(ctx).get("/api/channels")
    print_json(rows) if json_out else table(rows, ["name", "privacy", "description", "created_at"])


@channel_app.command("show")
def channel_show(ctx: typer.Context, name: str, json_out: bool = typer.Option(False, "--json")) -> None:
    """One channel with file counts per subdir."""
    out = client_from(ctx).get(f"/api/channels/{name}")
    if json_out:
        print_json(out)
        return
    console.print(f"[bold]{out['name']}[/bold]  privacy={out['privacy']}  {out['description']}")
    stats = out.get("stats") or {}
    table([{"subdir": k, **v} for k, v in sorted(stats.get("subdirs", {}).items())], ["subdir", "files", "bytes"])


@channel_app.command("update")
def channel_update(
    ctx: typer.Context,
    name: str,
    privacy: str = typer.Option(None, help="public | authenticated | private"),
    description: str = typer.Option(None),
) -> None:
    """Change a channel's privacy or description."""
    body = {k: v for k, v in {"privacy": privacy, "description": description}.items() if v is not None}
    out = client_from(ctx).request("PATCH", f"/api/channels/{name}", json=body)
    console.print(f"{out['name']}: privacy={out['privacy']}")


@channel_app.command("delete")
def channel_delete(ctx: typer.Context, name: str, yes: bool = typer.Option(False, "--yes", "-y")) -> None:
    """Delete channel NAME and all its records."""
    if not yes:
        typer.confirm(f"Delete channel {name} and all its files?", abort=True)
    client_from(ctx).request("DELETE", f"/api/channels/{name}")
    console.print(f"deleted channel {name}")


def upload(
    ctx: typer.Context,
    channel: str = typer.Argument(..., help="Target channel."),
    files: list[Path] = typer.Argument(..., exists=True, dir_okay=False, help="Package files (.conda, .tar.bz2)."),
    force: bool = typer.Option(False, "--force", help="Replace a file of the same name with different bytes."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Skip files already in the channel."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Do not wait for the index to include the files."),
) -> None:
    """Upload package files into CHANNEL, with a progress bar."""
    client = client_from(ctx)
    total = sum(f.stat().st_size for f in files)
    failures = 0
    counts: dict[str, int] = {}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    ) as progress:
        task = progress.add_task(f"uploading {len(files)} file(s)", total=total)
        for path in files:

            def chunks(path: Path = path):  # type: ignore[no-untyped-def]
                with open(path, "rb") as fh:
                    while chunk := fh.read(1024 * 1024):
                        progress.advance(task, len(chunk))
                        yield chunk

            try:
                out = client.post(
                    f"/api/channels/{channel}/files",
                    params={"filename": path.name, "force": force, "skip_existing": skip_existing, "wait": not no_wait},
                    content=chunks(),
                    headers={"Content-Type": "application/octet-stream"},
                )
                counts[out["status"]] = counts.get(out["status"], 0) + 1
            except ApiError as exc:
                failures += 1
                progress.console.print(f"[red]{escape(path.name)}: {escape(str(exc))}[/red]")
    console.print(", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "nothing uploaded")
    if failures:
        console.print(f"[red]{failures} file(s) failed[/red]")
        raise typer.Exit(2)


@package_app.command("list")
def package_list(
    ctx: typer.Context,
    channel: str,
    subdir: str = typer.Option(None),
    name: str = typer.Option(None, "--name", help="Package name."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Files in CHANNEL."""
    rows = client_from(ctx).get(
        f"/api/channels/{channel}/files", params={k: v for k, v in {"subdir": subdir, "package": name}.items() if v}
    )
    print_json(rows) if json_out else table(rows, ["subdir", "filename", "size", "sha256"])


@package_app.command("remove")
def package_remove(
    ctx: typer.Context, channel: str, files: list[str] = typer.Argument(..., help="subdir/filename")
) -> None:
    """Remove files from CHANNEL."""
    out = client_from(ctx).post(f"/api/channels/{channel}/files/remove", json={"files": files})
    console.print(f"removed {len(out['removed'])} file(s)")


def _copy(ctx: typer.Context, source: str, target: str, files: list[str], move: bool, force: bool) -> None:
    out = client_from(ctx).post(
        f"/api/channels/{source}/files/copy", json={"files": files, "to": target, "move": move, "force": force}
    )
    verb = "moved" if move else "copied"
    console.print(f"{verb} {len(out['copied'])} file(s), {len(out['unchanged'])} already there")


@package_app.command("copy")
def package_copy(
    ctx: typer.Context,
    source: str,
    target: str,
    files: list[str] = typer.Argument(..., help="subdir/filename"),
    force: bool = typer.Option(False, "--force"),
) -> None:
    """Copy files from SOURCE channel to TARGET channel."""
    _copy(ctx, source, target, files, False, force)


@package_app.command("move")
def package_move(
    ctx: typer.Context,
    source: str,
    target: str,
    files: list[str] = typer.Argument(..., help="subdir/filename"),
    force: bool = typer.Option(False, "--force"),
) -> None:
    """Move files from SOURCE channel to TARGET channel."""
    _copy(ctx, source, target, files, True, force)


def import_repodata(
    ctx: typer.Context,
    channel: str,
    subdir: str,
    repodata: Path = typer.Argument(..., exists=True, dir_okay=False, help="A repodata.json file."),
    base_url: str = typer.Option(None, help="Where the files can be downloaded later."),
) -> None:
    """Import records metadata-only (no package bytes) from a repodata.json."""
    data = json.loads(repodata.read_text())
    out = client_from(ctx).post(
        f"/api/channels/{channel}/subdirs/{subdir}/import",
        json=data,
        params={"base_url": base_url} if base_url else None,
    )
    console.print(f"imported: {out}")


def client_config(
    ctx: typer.Context,
    channels: list[str] = typer.Argument(..., help="Channels to configure."),
    token: bool = typer.Option(False, "--with-token", help="Embed the current token in the channel URLs."),
) -> None:
    """Print the .condarc and pixi/rattler snippets that point clients at this server."""
    obj = ctx.ensure_object(dict)
    base = obj["url"].rstrip("/") + "/api/repo"
    tok = obj.get("token") if token else None
    alias = f"{obj['url'].rstrip('/')}/api/repo/t/{tok}" if tok else base
    lines = ["# ~/.condarc (conda, mamba)", f"channel_alias: {alias}", "channels:"]
    lines += [f"  - {c}" for c in channels]
    lines += ["", "# pixi.toml", "[workspace]", "channels = [" + ", ".join(f'"{alias}/{c}"' for c in channels) + "]"]
    lines += ["", "# rattler / pixi command line", " ".join(f"-c {alias}/{c}" for c in channels)]
    if not tok:
        lines += ["", "# private channels: `pixi auth login <host> --token <TOKEN>` or put /t/<TOKEN>/ in the URL"]
    print("\n".join(lines))
