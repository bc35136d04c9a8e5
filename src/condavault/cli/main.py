"""``condavault``: the server and its command-line client."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.markup import escape

from condavault.cli import (
    admin,
    audit,
    blobs,
    bundle,
    bundle_core,
    channels,
    cve,
    jobs,
    mirror,
    scanning,
    search,
    server,
    tokens,
    users,
    verify,
    worker,
)
from condavault.cli.client import DEFAULT_URL, ApiError
from condavault.cli.output import err_console
from condavault.errors import CondavaultError

app = typer.Typer(
    name="condavault",
    help="On-premise conda package repository: hosted channels, filtered mirrors, CVE data, access control.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def root(
    ctx: typer.Context,
    url: str = typer.Option(None, envvar="CONDAVAULT_URL", help=f"Server URL (default {DEFAULT_URL})."),
    token: str = typer.Option(
        None,
        help="API token. Default, first found: CONDAVAULT_TOKEN, the `condavault login` token saved for the "
        "URL, the admin-token of the server data folder (--data-dir or ./condavault-data). "
        "`condavault whoami` says which one is used.",
    ),
    data_dir: Path = typer.Option(
        None, "--data-dir", envvar="CONDAVAULT_DATA_DIR", help="Server data folder (default ./condavault-data)."
    ),
) -> None:
    obj = ctx.ensure_object(dict)
    obj["url"] = url or DEFAULT_URL
    obj["data_dir"] = data_dir
    obj["flag_token"] = token


for _module in (
    server,
    channels,
    tokens,
    worker,
    jobs,
    mirror,
    cve,
    users,
    audit,
    admin,
    search,
    bundle,
    bundle_core,
    verify,
    scanning,
    blobs,
):
    _module.register(app)


def main() -> None:
    try:
        app()
    except ApiError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        for k, v in exc.details.items():
            err_console.print(f"  {escape(str(k))}: {escape(str(v))}")
        sys.exit(2 if 400 <= exc.status < 500 else 1)
    except CondavaultError as exc:
        err_console.print(f"[red]error:[/red] {escape(exc.message)} \\[{exc.code}]")
        sys.exit(2 if 400 <= exc.status < 500 else 1)


if __name__ == "__main__":
    main()
