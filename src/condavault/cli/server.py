"""Server-side commands: serve, db, check, reindex."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from condavault.cli.client import client_from
from condavault.cli.output import console, print_json

if TYPE_CHECKING:
    from condavault.config import Settings
    from condavault.db.session import Database

db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)


DATA_DIR = typer.Option(
    None, "--data-dir", envvar="CONDAVAULT_DATA_DIR", help="Server data folder (default ./condavault-data)."
)


def data_dir_of(ctx: typer.Context, data_dir: Path | None) -> Path | None:
    """``--data-dir`` given after the command, else before it (``condavault --data-dir D serve``)."""
    return data_dir or ctx.ensure_object(dict).get("data_dir")


def _settings(ctx: typer.Context, data_dir: Path | None = None, **over: Any) -> Settings:
    from condavault.config import load_settings

    return load_settings(data_dir=data_dir_of(ctx, data_dir), **over)


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.add_typer(db_app, name="db")
    app.command()(check)
    app.command()(reindex)


def serve(
    ctx: typer.Context,
    host: str = typer.Option(None, help="Address to listen on (default 127.0.0.1)."),
    port: int = typer.Option(None, help="Port (default 8080)."),
    workers: int = typer.Option(1, help="Web worker processes (each also runs job threads, unless --no-worker)."),
    no_worker: bool = typer.Option(False, "--no-worker", help="Serve only; leave jobs to `condavault worker`."),
    config: Path = typer.Option(None, "--config", envvar="CONDAVAULT_CONFIG", help="TOML settings file."),
    data_dir: Path = DATA_DIR,
) -> None:
    """Start the server (creates the data folder, database and admin token on first start)."""
    import uvicorn

    from condavault.app import create_app
    from condavault.config import load_settings
    from condavault.db import migrate
    from condavault.db.session import Database
    from condavault.logging import setup_logging
    from condavault.web.listener import uvicorn_options

    settings = load_settings(
        config, data_dir=data_dir_of(ctx, data_dir), host=host, port=port, worker=False if no_worker else None
    )
    setup_logging(settings.log_format, settings.log_level)
    from condavault.storage import open_blob_store

    if settings.blob_store != "local":  # an unusable store stops the start here, with one line
        open_blob_store(settings, check=True)
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    db = Database(settings.db_url)
    if migrate.current_revision(db.engine) is None and not _has_tables(db):
        migrate.upgrade(settings.db_url)  # a brand-new database: create the schema
    db.dispose()
    console.print(f"condavault serving {settings.data_dir} on http://{settings.host}:{settings.port}")
    options = uvicorn_options(settings)
    if workers <= 1:
        uvicorn.run(create_app(settings), workers=1, **options)
        return
    # Several processes: uvicorn imports the app factory in each worker, which reads its Settings from
    # the same CONDAVAULT_* environment. Bootstrap here, once, so the workers don't race to create the
    # admin token. Every process runs job threads: jobs, schedules and leases live in the database.
    from condavault.auth.services import bootstrap

    os.environ["CONDAVAULT_DATA_DIR"] = str(settings.data_dir)
    os.environ["CONDAVAULT_HOST"] = settings.host
    os.environ["CONDAVAULT_PORT"] = str(settings.port)
    if no_worker:
        os.environ["CONDAVAULT_WORKER"] = "false"
    if config is not None:
        os.environ["CONDAVAULT_CONFIG"] = str(Path(config).resolve())
    db = Database(settings.db_url)
    try:
        token = bootstrap(db, settings.admin_token_path)
    finally:
        db.dispose()
    if token:
        print(
            f"\ncondavault: created the admin token (shown once; also stored in {settings.admin_token_path}):\n"
            f"  {token}\n",
            flush=True,
        )
    options["http"] = "condavault.web.listener:WorkerProtocol"  # built in each worker (a class does not pickle)
    uvicorn.run("condavault.cli.server:worker_app", factory=True, workers=workers, **options)


def worker_app() -> Any:
    """App factory for ``serve --workers N`` (one call per worker process)."""
    from condavault.app import create_app
    from condavault.config import load_settings
    from condavault.logging import setup_logging

    settings = load_settings()
    setup_logging(settings.log_format, settings.log_level)
    return create_app(settings)


def _has_tables(db: Database) -> bool:
    from sqlalchemy import inspect

    return bool(inspect(db.engine).get_table_names())


@db_app.command("upgrade")
def db_upgrade(
    ctx: typer.Context,
    revision: str = typer.Argument("head", help="Target revision."),
    data_dir: Path = DATA_DIR,
) -> None:
    """Migrate the database to this version of condavault (back it up first)."""
    from condavault.db import migrate

    settings = _settings(ctx, data_dir)
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    migrate.upgrade(settings.db_url, revision)
    console.print(f"database at {migrate.head_revision(settings.db_url) if revision == 'head' else revision}")


@db_app.command("current")
def db_current(ctx: typer.Context, data_dir: Path = DATA_DIR) -> None:
    """Show the database's migration revision and the one this version needs."""
    from condavault.db import migrate
    from condavault.db.session import Database

    settings = _settings(ctx, data_dir)
    db = Database(settings.db_url)
    console.print(f"current: {migrate.current_revision(db.engine)}  needed: {migrate.head_revision(settings.db_url)}")


def check(
    ctx: typer.Context,
    repair: bool = typer.Option(
        False,
        help="Fix what can be fixed: rebuild stale or damaged indexes (shards included), mark records "
        "whose bytes are missing or corrupt as metadata-only, drop unreferenced blobs and old temp files.",
    ),
    grace: float = typer.Option(
        None,
        "--grace",
        min=0,
        help="Seconds an unreferenced blob is kept after its last write or use "
        "(default: blob_grace_seconds, 24 h). Younger blobs may belong to a write in progress.",
    ),
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    data_dir: Path = DATA_DIR,
) -> None:
    """Verify blobs, index files and shards against the database (safe beside a running server)."""
    from condavault.maintenance.check import run_check

    settings = _settings(ctx, data_dir)
    report = run_check(settings, repair=repair, progress=not json_out, grace=grace)
    if json_out:
        print_json(report)
    else:
        for key, value in report.items():
            console.print(f"{key}: {value if not isinstance(value, list) else len(value)}")
            if isinstance(value, list):
                for item in value[:50]:
                    console.print(f"  {item}")
    if report["problems"] and not repair:
        raise typer.Exit(1)


def reindex(ctx: typer.Context, channel: str = typer.Argument(..., help="Channel to rebuild.")) -> None:
    """Rebuild every index file of CHANNEL from the database."""
    out = client_from(ctx).post(f"/api/channels/{channel}/reindex")
    console.print(f"reindexed {channel}: {', '.join(out['reindexed'])}")
