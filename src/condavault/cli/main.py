"""``condavault``: the server and its command-line client."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.markup import escape

from condavault.cli import channels, server, tokens, worker
from condavault.cli.client import DEFAULT_URL, ApiError, resolve_token
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
    token: str = typer.Option(None, envvar="CONDAVAULT_TOKEN", help="API token (default: <data-dir>/admin-token)."),
    data_dir: Path = typer.Option(
        None, "--data-dir", envvar="CONDAVAULT_DATA_DIR", help="Server data folder (default ./condavault-data)."
    ),
) -> None:
    obj = ctx.ensure_object(dict)
    obj["url"] = url or DEFAULT_URL
    obj["data_dir"] = data_dir
    obj["token"] = resolve_token(token, data_dir or Path("condavault-data"), obj["url"])


server.register(app)
channels.register(app)
tokens.register(app)
worker.register(app)

_DOMAIN_CLIS = ("mirror", "cve", "users", "audit", "admin")
for _module in (f"condavault.cli.{name}" for name in _DOMAIN_CLIS):
    try:
        __import__(_module)
        sys.modules[_module].register(app)  # type: ignore[attr-defined]
    except ModuleNotFoundError as exc:  # domain not installed in this build
        if exc.name != _module:
            raise


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
