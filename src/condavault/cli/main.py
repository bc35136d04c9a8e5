"""``condavault``: the server and its command-line client."""

from __future__ import annotations

import atexit
import importlib
import os
import sys
import threading
from pathlib import Path

import typer
from rich.markup import escape

from condavault.cli.client import DEFAULT_URL, ApiError
from condavault.cli.output import err_console
from condavault.errors import CondavaultError

# Every command module, in the order their commands are listed by --help.
MODULES = (
    "server",
    "channels",
    "tokens",
    "worker",
    "jobs",
    "mirror",
    "cve",
    "users",
    "audit",
    "admin",
    "search",
    "bundle",
    "bundle_core",
    "verify",
    "scanning",
    "blobs",
)
# The modules that define each top-level command and its subcommands (a test builds each command alone,
# in a fresh process, and compares it with the whole app).
# A run loads only the modules of the command it was given: building the click commands of all of them
# and importing their modules is about a fifth of a second, longer than many commands take themselves.
COMMANDS: dict[str, tuple[str, ...]] = {
    **dict.fromkeys(("check", "db", "reindex", "serve"), ("server",)),
    "channel": ("channels", "users"),  # users adds channel grant/revoke to the channel group
    **dict.fromkeys(("client-config", "import-repodata", "package", "upload"), ("channels",)),
    **dict.fromkeys(("token", "whoami"), ("tokens",)),
    "worker": ("worker",),
    "jobs": ("jobs",),
    "mirror": ("mirror",),
    **dict.fromkeys(("check-env", "cve"), ("cve",)),
    **dict.fromkeys(("group", "login", "logout", "role", "user"), ("users",)),
    "audit": ("audit",),
    "admin": ("admin",),
    **dict.fromkeys(("provides", "search"), ("search",)),
    "bundle": ("bundle", "bundle_core"),  # bundle_core adds export/import/... to the bundle group
    "keys": ("bundle_core",),
    "verify": ("verify",),
    **dict.fromkeys(("blocklist", "quarantine", "scanning"), ("scanning",)),
    "blobs": ("blobs",),
}
ROOT_OPTIONS_WITH_VALUE = ("--url", "--token", "--data-dir")
_ROOT_OPTIONS_INLINE = tuple(f"{o}=" for o in ROOT_OPTIONS_WITH_VALUE)  # --url=http://...


def build_app(modules: tuple[str, ...] = MODULES) -> typer.Typer:
    """The ``condavault`` command with the commands of ``modules`` (all of them by default)."""
    app = typer.Typer(
        name="condavault",
        help="On-premise conda package repository: hosted channels, filtered mirrors, CVE data, access control.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    app.callback()(root)
    for name in MODULES:  # in the order of MODULES whatever the order asked
        if name in modules:
            importlib.import_module(f"condavault.cli.{name}").register(app)
    return app


def modules_for(argv: list[str]) -> tuple[str, ...]:
    """The command modules a run with these arguments needs: those of its command, or all of them (help,
    no command, a misspelt one: the answer lists or suggests every command)."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ROOT_OPTIONS_WITH_VALUE:
            i += 2
        elif arg.startswith(_ROOT_OPTIONS_INLINE):
            i += 1
        elif arg.startswith("-"):
            return MODULES
        else:
            return COMMANDS.get(arg, MODULES)
    return MODULES


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


def __getattr__(name: str) -> typer.Typer:
    """``condavault.cli.main.app``: the whole command (documentation tools, tests), built on first use."""
    if name == "app":
        globals()["app"] = built = build_app()
        return built
    raise AttributeError(name)


def main() -> None:
    try:
        try:
            build_app(modules_for(sys.argv[1:]))()
        except ApiError as exc:
            err_console.print(f"[red]error:[/red] {escape(str(exc))}")
            for k, v in exc.details.items():
                err_console.print(f"  {escape(str(k))}: {escape(str(v))}")
            sys.exit(2 if 400 <= exc.status < 500 else 1)
        except CondavaultError as exc:
            err_console.print(f"[red]error:[/red] {escape(exc.message)} \\[{exc.code}]")
            sys.exit(2 if 400 <= exc.status < 500 else 1)
    except SystemExit as exc:
        _exit(exc.code)
    _exit(0)


def _exit(code: object) -> None:
    """End the process without the interpreter's module teardown (about 0.1 s after a command that
    handled a thousand files: freeing every module and object one by one). What a normal exit does
    that matters is done first: the ``atexit`` handlers (logging's flush among them) and the standard
    streams flushed. A command that left a non-daemon thread running exits the normal way, which waits
    for it."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): printed, status 1, as the interpreter does
        print(code, file=sys.stderr)
        status = 1
    if any(t is not threading.main_thread() and not t.daemon for t in threading.enumerate()):
        sys.exit(status)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing more can be said on it
            pass
    os._exit(status)


if __name__ == "__main__":
    main()
