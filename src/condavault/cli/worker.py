"""``condavault worker``: background jobs without the web server (for ``serve --no-worker`` replicas)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from condavault.cli.output import console
from condavault.cli.server import DATA_DIR, data_dir_of
from condavault.config import load_settings


def register(app: typer.Typer) -> None:
    app.command()(worker)


def worker(
    ctx: typer.Context,
    config: Path = typer.Option(None, "--config", envvar="CONDAVAULT_CONFIG", help="TOML settings file."),
    data_dir: Path = DATA_DIR,
) -> None:
    """Run indexing, mirror syncs, CVE refreshes and other jobs, without serving HTTP."""
    from condavault.app import create_app
    from condavault.auth.services import bootstrap
    from condavault.context import Context
    from condavault.db import migrate
    from condavault.logging import setup_logging

    settings = load_settings(config, data_dir=data_dir_of(ctx, data_dir), worker=True)
    setup_logging(settings.log_format, settings.log_level)
    context = Context.build(settings)
    migrate.check(context.db.engine, settings.db_url)
    bootstrap(context.db, settings.admin_token_path)
    app = create_app(settings, ctx=context)  # installs every domain's start-up hooks
    for fn in app.state.startup:
        fn(context)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    console.print(f"condavault worker running on {settings.db_url.split('@')[-1]}")
    stop.wait()
    context.close()
