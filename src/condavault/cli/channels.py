"""Channel and package commands (talk to a server over its REST API)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from urllib.parse import urlsplit

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from condavault.cli.client import ApiError, Client, client_from
from condavault.cli.output import console, err_console, print_json, table

OCTETS = "application/octet-stream"
BATCH_BYTES = 32 * 1024 * 1024  # per request of a batch upload (a file larger than this goes alone)
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


PACKAGE_SUFFIXES = (".conda", ".tar.bz2")


def _package_files(paths: list[Path]) -> list[Path]:
    """The given files, and the package files found under given folders (sorted, each once)."""
    out: dict[Path, None] = {}
    for p in paths:
        if p.is_dir():
            for f in sorted(p.rglob("*")):
                if f.is_file() and f.name.endswith(PACKAGE_SUFFIXES):
                    out[f] = None
        else:
            out[p] = None
    return list(out)


def _chunks(files: list[Path], max_files: int, max_bytes: int) -> list[list[Path]]:
    """Requests of at most ``max_files`` files and about ``max_bytes`` bytes each."""
    out: list[list[Path]] = []
    cur: list[Path] = []
    size = 0
    for f in files:
        n = f.stat().st_size
        if cur and (len(cur) >= max_files or size + n > max_bytes):
            out.append(cur)
            cur, size = [], 0
        cur.append(f)
        size += n
    if cur:
        out.append(cur)
    return out


def upload(
    ctx: typer.Context,
    channel: str = typer.Argument(..., help="Target channel."),
    # plain strings: typer's per-item Path coercion costs ~0.1 s of CPU for 1,000 files (checked below)
    files: list[str] = typer.Argument(
        ..., help="Package files (.conda, .tar.bz2), or folders to take every package file from."
    ),
    force: bool = typer.Option(False, "--force", help="Replace a file of the same name with different bytes."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Skip files already in the channel."),
    no_wait: bool = typer.Option(False, "--no-wait", help="Do not wait for the index to include the files."),
    parallel: int = typer.Option(4, "--parallel", min=1, max=32, help="Requests in flight at once (many files)."),
    batch_files: int = typer.Option(
        256, "--batch-files", min=1, max=1000, help="Files per request (many files; at most 32 MiB a request)."
    ),
) -> None:
    """Upload package files into CHANNEL, with a progress bar.

    Several files go as one upload batch: a few files per request, several requests at once, and the
    channel's index is published once, at the end (like a mirror run)."""
    client = client_from(ctx)
    given = [Path(f) for f in files]
    missing = [str(p) for p in given if not p.exists()]
    if missing:
        raise typer.BadParameter(f"{', '.join(missing[:5])} does not exist", param_hint="FILES")
    paths = _package_files(given)
    if not paths:
        raise typer.BadParameter("no package files (.conda, .tar.bz2) given")
    total = sum(f.stat().st_size for f in paths)
    counts: dict[str, int] = {}
    failures: list[str] = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=False,
    ) as progress:
        task = progress.add_task(f"uploading {len(paths)} file(s)", total=total)
        if len(paths) == 1:
            _upload_one(
                client,
                channel,
                paths[0],
                progress,
                task,
                counts,
                failures,
                force=force,
                skip_existing=skip_existing,
                wait=not no_wait,
            )
        else:
            _upload_batch(
                client,
                channel,
                paths,
                progress,
                task,
                counts,
                failures,
                force=force,
                skip_existing=skip_existing,
                wait=not no_wait,
                parallel=parallel,
                batch_files=batch_files,
            )
    console.print(", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "nothing uploaded")
    if failures:
        console.print(f"[red]{len(failures)} file(s) failed[/red]")
        raise typer.Exit(2)


def _upload_one(
    client: Client,
    channel: str,
    path: Path,
    progress: Progress,
    task: TaskID,
    counts: dict[str, int],
    failures: list[str],
    *,
    force: bool,
    skip_existing: bool,
    wait: bool,
) -> None:
    def chunks() -> Iterator[bytes]:
        with open(path, "rb") as fh:
            while chunk := fh.read(1024 * 1024):
                progress.advance(task, len(chunk))
                yield chunk

    try:
        out = client.post(
            f"/api/channels/{channel}/files",
            params={"filename": path.name, "force": force, "skip_existing": skip_existing, "wait": wait},
            content=chunks(),
            headers={"Content-Type": "application/octet-stream"},
        )
        counts[out["status"]] = counts.get(out["status"], 0) + 1
    except ApiError as exc:
        failures.append(path.name)
        progress.console.print(f"[red]{escape(path.name)}: {escape(str(exc))}[/red]")


def _upload_batch(
    client: Client,
    channel: str,
    paths: list[Path],
    progress: Progress,
    task: TaskID,
    counts: dict[str, int],
    failures: list[str],
    *,
    force: bool,
    skip_existing: bool,
    wait: bool,
    parallel: int,
    batch_files: int,
) -> None:
    batch = client.post(f"/api/channels/{channel}/uploads")["id"]
    lock = threading.Lock()

    def send(group: list[Path]) -> None:
        handles = [open(p, "rb") for p in group]  # noqa: SIM115 - closed below, after the request
        try:
            out = client.post(
                f"/api/channels/{channel}/uploads/{batch}/files",
                params={"force": force, "skip_existing": skip_existing},
                files=[("file", (p.name, fh, OCTETS)) for p, fh in zip(group, handles, strict=True)],
                buffered=len(group) > 1,  # many files: at most BATCH_BYTES (_chunks), one file may be larger
            )
            results = out["files"]
        except ApiError as exc:  # the whole request: every file of it failed
            results = [{"filename": p.name, "status": "failed", "error": {"message": str(exc)}} for p in group]
        finally:
            for fh in handles:
                fh.close()
        with lock:
            for r in results:
                counts[r["status"]] = counts.get(r["status"], 0) + 1
                if r["status"] == "failed":
                    failures.append(r["filename"])
                    err = r.get("error") or {}
                    msg = f"{err.get('message', '')} [{err.get('code', 'error')}]"
                    progress.console.print(f"[red]{escape(r['filename'])}: {escape(msg)}[/red]")
        progress.advance(task, sum(p.stat().st_size for p in group))

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        for f in [pool.submit(send, g) for g in _chunks(paths, batch_files, BATCH_BYTES)]:
            f.result()
    progress.update(task, description="publishing the index")
    out = client.post(f"/api/channels/{channel}/uploads/{batch}/commit", params={"wait": wait})
    if wait and not out.get("indexed"):
        progress.console.print("[yellow]the index is not published yet; it will be shortly[/yellow]")


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
    """Import records metadata-only (no package bytes) from a repodata.json (sent as is, streamed: the
    server reads it a record at a time)."""
    with open(repodata, "rb") as fh:
        out = client_from(ctx).post(
            f"/api/channels/{channel}/subdirs/{subdir}/import",
            content=fh,
            headers={"Content-Type": "application/json"},
            params={"base_url": base_url} if base_url else None,
        )
    console.print(f"imported: {out}")


class ConfigFormat(StrEnum):
    condarc = "condarc"
    pixi = "pixi"
    rattler = "rattler"


def client_config(
    ctx: typer.Context,
    channels: list[str] = typer.Argument(..., help="Channels to configure."),
    fmt: ConfigFormat = typer.Option(
        ConfigFormat.condarc,
        "--format",
        help="condarc (YAML for ~/.condarc), pixi (TOML for pixi.toml) or "
        "rattler (the JSON of a RATTLER_AUTH_FILE; needs --with-token).",
    ),
    with_token: bool = typer.Option(
        False, "--with-token", help="Issue a new read-only token for these channels and put it in the snippet."
    ),
    days: int = typer.Option(90, "--days", min=1, max=3650, help="Lifetime of the token issued by --with-token."),
) -> None:
    """Print the configuration that points conda/mamba, pixi or rattler at these channels, in one format
    (so it can be redirected into the file). --with-token never embeds your own token: it issues a read
    token limited to these channels (printed once, inside the snippet; revoke it with `condavault token
    revoke`)."""
    obj = ctx.ensure_object(dict)
    url = obj["url"].rstrip("/")
    if fmt == ConfigFormat.rattler and not with_token:
        raise typer.BadParameter("--format rattler prints credentials: add --with-token")
    tok = None
    if with_token:
        expires = (datetime.now(UTC) + timedelta(days=days)).isoformat()
        out = client_from(ctx).post(
            "/api/tokens",
            json={
                "scopes": [{"scope": "read", "channels": channels}],
                "expires_at": expires,
                "name": f"client-config {' '.join(channels)}"[:200],
            },
        )
        tok = out["token"]
        err_console.print(
            f"issued read token {out['prefix']} for {', '.join(channels)}, expires {expires[:10]} "
            f"(revoke: condavault token revoke {out['prefix']})"
        )
    base = f"{url}/api/repo/t/{tok}" if tok else f"{url}/api/repo"
    if fmt == ConfigFormat.condarc:
        print("# ~/.condarc (conda, mamba)")
        import yaml

        print(yaml.safe_dump({"channel_alias": base, "channels": list(channels)}, sort_keys=False), end="")
    elif fmt == ConfigFormat.pixi:
        print("# pixi.toml")
        print("[workspace]")
        print("channels = [" + ", ".join(json.dumps(f"{base}/{c}") for c in channels) + "]")
    else:
        host = urlsplit(url).hostname or ""  # rattler keys credentials by host name, without the port
        print(json.dumps({host: {"BearerToken": tok}}, indent=2))
