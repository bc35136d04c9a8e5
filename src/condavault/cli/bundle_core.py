"""``condavault bundle export | import | verify | status | scan`` and ``condavault keys show``: the
air-gap bundle commands (added to the ``bundle`` group of ``condavault.cli.bundle``; docs/airgap.md).

``export`` and ``import`` run in this process against the server's data folder and database (like
``mirror run --local``): bundles are files on the server machine. ``status`` and ``scan`` talk to the API.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn

from condavault.cli.bundle import bundle_app
from condavault.cli.client import client_from
from condavault.cli.output import console, err_console, print_json, table
from condavault.cli.server import DATA_DIR, data_dir_of

if TYPE_CHECKING:
    from condavault.context import Context

keys_app = typer.Typer(help="The server's signing key (air-gap bundles).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")


@contextmanager
def _local(ctx: typer.Context, data_dir: Path | None) -> Iterator[Context]:
    from condavault.config import load_settings
    from condavault.context import Context
    from condavault.db import migrate

    settings = load_settings(data_dir=data_dir_of(ctx, data_dir), worker=False)
    cv = Context.build(settings, start_jobs=False)
    try:
        migrate.check(cv.db.engine, settings.db_url)
        yield cv
    finally:
        cv.close()


@contextmanager
def _bars(quiet: bool) -> Iterator[Any]:
    progress = Progress(
        TextColumn("{task.description:>8}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=err_console,
        disable=quiet,
        transient=False,
    )
    tasks: dict[str, Any] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = progress.add_task(phase, total=total or None)
        progress.update(tasks[phase], completed=done, total=total or None)

    with progress:
        yield update


@keys_app.command("show")
def keys_show(
    ctx: typer.Context, data_dir: Path = DATA_DIR, json_out: bool = typer.Option(False, "--json", help="Print JSON.")
) -> None:
    """Print this server's public key (created on first use): add it to ``trusted_keys`` on the receiving
    server."""
    from condavault.config import load_settings
    from condavault.signing.keys import key_path, load_or_create

    settings = load_settings(data_dir=data_dir_of(ctx, data_dir))
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = load_or_create(settings)
    if json_out:
        print_json({"key_id": key.public.id, "public_key": key.public.text, "path": str(key_path(settings))})
        return
    err_console.print(f"key id {key.public.id} ({key_path(settings)}); trust it on the receiving side with:")
    console.print(key.public.text)


@bundle_app.command("export")
def export(
    ctx: typer.Context,
    output: Path = typer.Option(..., "--output", "-o", help="Bundle folder to write (must not exist or be empty)."),
    channel: list[str] = typer.Option(None, "--channel", "-c", help="Channel to export (repeat)."),
    mirror: list[str] = typer.Option(None, "--mirror", "-m", help="Mirror whose channel to export (repeat)."),
    vulns: bool = typer.Option(
        False, "--vulns", help="Export the vulnerability data (advisories per source, name mappings, curation)."
    ),
    scanning: bool = typer.Option(
        False,
        "--scanning",
        help="Export the scanning data: the sha256 block list, and "
        "the ClamAV database files of clamav_database_dir when it is set.",
    ),
    since: str = typer.Option(None, "--since", help="Incremental: only what changed since this earlier bundle."),
    split: str = typer.Option(
        None,
        "--split",
        help="Spread the bundle over part-NNN folders of at most this size (e.g. 4G) for removable media.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON (the bundle id stays last)."),
    data_dir: Path = DATA_DIR,
) -> None:
    """Write a signed bundle of channels, mirrors, vulnerability data and/or scanning data (block list,
    ClamAV signatures); prints its bundle id last."""
    from condavault.airgap.export import export_bundle, parse_size

    size = parse_size(split) if split else None
    with _local(ctx, data_dir) as cv, _bars(json_out) as bar:
        rep = export_bundle(
            cv,
            output,
            channels=channel or [],
            mirrors=mirror or [],
            vulns=vulns,
            since=since,
            split=size,
            actor="cli",
            progress=bar,
            scanning=scanning,
        )
    if json_out:
        print_json(rep.to_dict())
    else:
        kind = f"incremental on {rep.parent_id}" if rep.parent_id else "full"
        console.print(
            f"{rep.output}: {kind}, {rep.records} records, {rep.removed} removals, {rep.files} files, "
            f"{rep.bytes} bytes" + (f", {rep.parts} parts" if rep.parts else "") + f" in {rep.seconds}s"
        )
    print(f"bundle {rep.bundle_id}")


@bundle_app.command("import")
def import_(
    ctx: typer.Context,
    paths: list[Path] = typer.Argument(
        ...,
        help="Bundle folder (or its .tar / .tar.gz). A split bundle: the "
        "folder holding its parts, or every part folder (part-001 part-002 ..., or a "
        "quoted glob such as '/media/*/part-*'), or its first part with the others "
        "beside it.",
        show_default=False,
        metavar="PATH",
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Check the signature and the file list; print records, bytes and disk needed; import nothing.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    data_dir: Path = DATA_DIR,
) -> None:
    """Verify a bundle (signature, every file's sha256, every package) and publish it atomically.

    Idempotent (a bundle imported before is a no-op); an interrupted import resumes where it stopped;
    an incremental bundle whose base is not the receiving side's state is refused naming the bundle it
    needs. A split bundle is imported only when every part is given (a missing one is named)."""
    from condavault.airgap.importer import Importer

    source = _expand(paths)
    with _local(ctx, data_dir) as cv:
        with _bars(json_out or dry_run) as bar:
            rep = Importer(cv, bar).run(source[0] if len(source) == 1 else source, dry_run=dry_run)
        if rep.status == "imported":
            cv.settle(timeout=3600)  # the index is published when the command returns
    if json_out:
        print_json(rep.to_dict())
        return
    if rep.status == "dry-run":
        rows = [
            {"target": t, "full": v.get("full"), "records": v.get("records"), "removed": v.get("removed")}
            for t, v in rep.targets.items()
        ]
        table(rows, ["target", "full", "records", "removed"], title=f"bundle {rep.bundle_id} (dry run)")
        console.print(
            f"records: {rep.records}, removals: {rep.removed}, files: {rep.files}, bytes: {rep.bytes}, "
            f"disk needed: {rep.disk_needed} (free: {rep.disk_free})"
        )
        return
    if rep.status == "already-imported":
        console.print(f"bundle {rep.bundle_id} was imported before: nothing to do")
        return
    resumed = f", {rep.resumed_files} verified before (resumed)" if rep.resumed_files else ""
    console.print(
        f"imported bundle {rep.bundle_id}: {rep.records} records, {rep.removed} removals, {rep.files} "
        f"files verified{resumed}, {rep.stored_blobs} new blobs in {rep.seconds}s"
    )
    if rep.scanning:
        sc = rep.scanning
        console.print(
            f"block list: {sc['entries']} entries ({sc['added']} new); ClamAV database: "
            f"{sc['clamav_installed']} of {sc['clamav_files']} files installed"
            + (f" ({sc['clamav_note']})" if sc.get("clamav_note") else ""),
            highlight=False,
        )
    if rep.vulns:
        v = rep.vulns
        console.print(
            f"vulnerability data: {v['records']} records ({v['records_new']} new), advisories "
            f"{v['created']} new, {v['updated']} updated; links +{v['links_added']} -{v['links_removed']}"
        )


def _expand(paths: list[Path]) -> list[Path]:
    """Arguments as given; one that does not exist and holds a glob pattern (quoted, so the shell left it)
    is expanded. Each path once."""
    import glob

    out: list[Path] = []
    for p in paths:
        text = str(p.expanduser())
        if not p.exists() and glob.has_magic(text):
            matches = sorted(Path(m) for m in glob.glob(text))
            if not matches:
                raise typer.BadParameter(f"{text} matches nothing", param_hint="PATHS")
            out.extend(matches)
        else:
            out.append(p)
    seen: set[Path] = set()
    return [p for p in out if not (p.absolute() in seen or seen.add(p.absolute()))]  # type: ignore[func-returns-value]


@bundle_app.command("status")
def status(
    ctx: typer.Context,
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Bundles this server exported and imported, and the bundle each target is at (through the API)."""
    data = client_from(ctx).get("/api/bundles")
    if json_out:
        print_json(data)
        return
    console.print(f"signing key {data['key']['id']}: {data['key']['public_key']}")
    table(data["exports"], ["bundle_id", "parent_id", "serial", "kinds", "created_at"], title="exported")
    table(data["imports"], ["bundle_id", "parent_id", "origin_key", "serial", "state", "finished_at"], title="imported")
    table(data["targets"], ["origin_key", "target", "bundle_id", "serial"], title="targets")


@bundle_app.command("scan")
def scan(ctx: typer.Context) -> None:
    """Import the bundles of the drop folder <data-dir>/airgap/ now (a job; through the API)."""
    out = client_from(ctx).post("/api/bundles/scan")
    console.print(f"started job {out['job_id']}; follow it with `condavault jobs show {out['job_id']}`")
