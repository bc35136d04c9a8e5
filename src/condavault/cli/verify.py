"""``condavault verify FILE``: check a file's admission statement offline, with the server's public key alone
(docs/signing.md)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from condavault.cli.output import console, err_console, print_json


def register(app: typer.Typer) -> None:
    app.command("verify")(verify)


def _public_key(text: str) -> object:
    """``ed25519:<hex>``, or a file holding that text or a PEM public key (``openssl pkey -pubout``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from condavault.signing.keys import PublicKey

    value = text
    path = Path(text)
    if not text.startswith("ed25519:") and path.is_file():
        data = path.read_bytes()
        if b"BEGIN PUBLIC KEY" in data:
            try:
                pub = serialization.load_pem_public_key(data)
            except ValueError as exc:
                raise typer.BadParameter(f"{path}: not a PEM public key ({exc})") from None
            if not isinstance(pub, Ed25519PublicKey):
                raise typer.BadParameter(f"{path}: not an ed25519 public key")
            return PublicKey(pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
        value = data.decode("utf-8", "replace")
    return PublicKey.parse(value)


def verify(
    file: Path = typer.Argument(..., help="The package file (.conda or .tar.bz2) as downloaded."),
    statement: Path = typer.Option(
        None, "--statement", help="The admission statement (default: FILE.admission.json beside the file)."
    ),
    key: str = typer.Option(
        None,
        "--key",
        help="The server's public key: ed25519:<64 hex>, or a file with it or a PEM public key "
        "(`condavault keys show`, GET /api/signing/key). Default: the key of the local --data-dir.",
    ),
    data_dir: Path = typer.Option(None, "--data-dir", envvar="CONDAVAULT_DATA_DIR", help="Server data folder."),
    json_out: bool = typer.Option(False, "--json", help="Print the verified statement as JSON."),
) -> None:
    """Verify offline that FILE was admitted by a condavault server: the statement's DSSE signature must verify
    with the public key, and its subject must be FILE's name and sha256. Exit 0 when it holds, 1 when not."""
    from condavault.signing.admission import AdmissionError, sha256_file, verify_envelope
    from condavault.signing.keys import PublicKey

    if not file.is_file():
        raise typer.BadParameter(f"{file}: no such file", param_hint="FILE")
    stmt_path = statement or file.with_name(file.name + ".admission.json")
    if not stmt_path.is_file():
        raise typer.BadParameter(f"{stmt_path}: no such statement file", param_hint="--statement")
    if key is None:
        from condavault.config import load_settings
        from condavault.signing.keys import key_path, load_or_create

        settings = load_settings(data_dir=data_dir)
        if not key_path(settings).is_file():
            raise typer.BadParameter("no --key given and no server key in the data folder", param_hint="--key")
        pub: object = load_or_create(settings).public
    else:
        try:
            pub = _public_key(key)
        except Exception as exc:  # a malformed key is a usage error, never a traceback
            raise typer.BadParameter(str(getattr(exc, "message", exc)), param_hint="--key") from None
    assert isinstance(pub, PublicKey)
    if stmt_path.stat().st_size > 1024 * 1024:
        err_console.print(f"[red]FAILED:[/red] {escape(str(stmt_path))} is larger than 1 MiB: not a statement")
        raise typer.Exit(1)
    try:
        st = verify_envelope(stmt_path.read_bytes(), pub, sha256_file(file), file.name)
    except AdmissionError as exc:
        err_console.print(f"[red]FAILED:[/red] {escape(file.name)}: {escape(str(exc))}")
        raise typer.Exit(1) from None
    if json_out:
        print_json(st)
        return
    p = st.get("predicate") or {}
    console.print(
        f"OK: {escape(file.name)} admitted into channel {escape(str(p.get('channel')))}/{escape(str(p.get('subdir')))} "
        f"at {escape(str(p.get('time')))} under policy {escape(str(p.get('policy')))} (key {pub.id})"
    )
