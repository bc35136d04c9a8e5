"""``condavault bundle ...``: signed bundles that carry packages and vulnerability data into air-gapped
networks (export on the connected side, import on the isolated side). See docs/airgap.md."""

from __future__ import annotations

import typer

bundle_app = typer.Typer(
    help="Air-gap bundles: export signed, incremental bundles of channels, mirrors and CVE data; import them "
    "on an isolated server; environment bundles (docs/airgap.md).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(bundle_app, name="bundle")
