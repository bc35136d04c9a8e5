"""``condavault worker``: run jobs without serving HTTP (beside ``serve --no-worker`` replicas)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from condavault.cli.output import console
from condavault.cli.server import DATA_DIR, data_dir_of


def register(app: typer.Typer) -> None:
    app.command()(worker)


def worker(
    ctx: typer.Context,
    config: Path = typer.Option(None, "--config", envvar="CONDAVAULT_CONFIG", help="TOML settings file."),
    data_dir: Path = DATA_DIR,
    threads: int = typer.Option(None, "--threads", min=2, max=64, help="Job threads (default: job_threads)."),
) -> None:
    """Run durable jobs (mirror runs, CVE syncs, reindexing, purges, after-commit work), scheduled jobs
    and the index sweep, without serving HTTP. Any number of workers (and `serve` processes) share the
    jobs in the database; stop with SIGTERM or Ctrl-C (running jobs are queued again)."""
    from condavault.auth.services import bootstrap
    from condavault.config import load_settings
    from condavault.context import Context
    from condavault.db import migrate
    from condavault.logging import setup_logging

    settings = load_settings(config, data_dir=data_dir_of(ctx, data_dir), worker=True, job_threads=threads)
    setup_logging(settings.log_format, settings.log_level)
    from condavault.storage import open_blob_store

    open_blob_store(settings, check=True)  # an unusable store stops the start here, with one line
    context = Context.build(settings)
    try:
        migrate.check(context.db.engine, settings.db_url)
        bootstrap(context.db, settings.admin_token_path)
        context.start()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        where = settings.db_url.split("@")[-1]
        console.print(f"condavault worker running on {where} ({context.worker.threads} threads)")
        stop.wait()
    finally:
        context.close()
