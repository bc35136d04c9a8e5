"""``condavault blobs copy``: move a server from a local blob folder to S3 (docs/operations.md)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import typer

from condavault.cli.output import console, err_console, print_json
from condavault.cli.server import DATA_DIR, _settings

blobs_app = typer.Typer(help="The blob store (package and index files).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(blobs_app, name="blobs")


@blobs_app.command("copy")
def copy(
    ctx: typer.Context,
    to: str = typer.Option("s3", "--to", help="Destination backend: s3 (configured by the s3_* settings)."),
    json_out: bool = typer.Option(False, "--json", help="Print the counts as JSON."),
    data_dir: Path = DATA_DIR,
) -> None:
    """Copy every blob of the local blob folder (blob_dir) into the S3 bucket of the s3_* settings,
    checking each one's sha256 on the way; blobs already in the bucket are skipped, so it can run again
    (e.g. once while the server runs, once more after stopping it). The local folder is left as it is.
    Then set blob_store = "s3" and run `condavault check`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from condavault.errors import SettingsError
    from condavault.storage import open_blob_store

    if to != "s3":
        raise typer.BadParameter("only s3 is a destination", param_hint="--to")
    settings = _settings(ctx, data_dir)
    if not settings.s3_bucket:
        raise SettingsError("blobs copy --to s3 needs s3_bucket (CONDAVAULT_S3_BUCKET) and the other s3_* settings")
    src = open_blob_store(settings.model_copy(update={"blob_store": "local"}))
    dst = open_blob_store(settings.model_copy(update={"blob_store": "s3"}), check=True)
    hashes = list(src.iter_hashes())
    copied = present = damaged = 0
    nbytes = 0
    with Progress(
        TextColumn("copying blobs"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=json_out,
    ) as bar:
        task = bar.add_task("copy", total=len(hashes))
        for sha in hashes:
            bar.advance(task)
            if dst.exists(sha):
                present += 1
                continue
            fd, tmp = dst.temp_file()
            digest = hashlib.sha256()
            try:
                with src.open(sha) as fh, os.fdopen(fd, "wb") as out:
                    while chunk := fh.read(1024 * 1024):
                        digest.update(chunk)
                        out.write(chunk)
                if digest.hexdigest() != sha:
                    damaged += 1
                    err_console.print(f"[yellow]skipped damaged blob {sha} (run `condavault check --repair`)[/yellow]")
                    tmp.unlink(missing_ok=True)
                    continue
                nbytes += tmp.stat().st_size
                dst.put_file(tmp, sha)  # consumes the temp copy
                copied += 1
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
    counts = {
        "blobs": len(hashes),
        "copied": copied,
        "already_there": present,
        "damaged": damaged,
        "bytes_copied": nbytes,
    }
    if json_out:
        print_json(counts)
    else:
        console.print(f"{copied} blobs copied ({nbytes / 1e6:.1f} MB), {present} already there, {damaged} damaged")
    if damaged:
        raise typer.Exit(1)


__all__ = ["register"]
