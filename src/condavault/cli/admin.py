"""``condavault admin recover``: an administrator back, offline, on the server machine."""

from __future__ import annotations

import getpass
import os
import socket
import sys
from pathlib import Path

import typer

from condavault.cli.output import console, err_console
from condavault.cli.server import DATA_DIR, _settings

admin_app = typer.Typer(
    help="Emergency administration on the server machine (no running server needed).", no_args_is_help=True
)


def register(app: typer.Typer) -> None:
    app.add_typer(admin_app, name="admin")


@admin_app.command("recover")
def recover(
    ctx: typer.Context,
    user: str = typer.Option("admin", "--user", help="Account to make an enabled administrator (created if missing)."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Also set its password, read from stdin."),
    data_dir: Path = DATA_DIR,
) -> None:
    """Make an account an enabled administrator again and print a fresh API token for it.

    Works on the database of the data folder (--data-dir; CONDAVAULT_DATABASE_URL for PostgreSQL), not
    through the API: use it on the server machine when every administrator was demoted, disabled or lost.

    For the built-in admin the token is also written to <data-dir>/admin-token (mode 0600). Audited as
    admin:recover.
    """
    from condavault.audit.models import ChangeEvent
    from condavault.auth.admins import recover_admin
    from condavault.auth.services import SYSTEM_ADMIN
    from condavault.db import migrate
    from condavault.db.session import Database

    settings = _settings(ctx, data_dir)
    password = sys.stdin.readline().rstrip("\n") if password_stdin else None
    db = Database(settings.db_url)
    try:
        migrate.check(db.engine, settings.db_url)
        with db.write_session() as s:
            token, account = recover_admin(s, user, password)
            actor = f"{getpass.getuser()}@{socket.gethostname()}"
            s.add(
                ChangeEvent(
                    username=None,
                    action="admin:recover",
                    target=account.username,
                    after=_json({"by": actor, "password_set": password is not None}),
                )
            )
    finally:
        db.dispose()
    if account.username == SYSTEM_ADMIN:
        path = settings.admin_token_path
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        os.chmod(path, 0o600)
        err_console.print(f"token also written to {path}")
    err_console.print(f"{account.username} is an enabled administrator again (audited as admin:recover)")
    console.print(token)


def _json(value: object) -> str:
    import json

    return json.dumps(value, sort_keys=True)
