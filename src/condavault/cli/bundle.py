"""``condavault bundle ...``: signed bundles that carry packages and vulnerability data into air-gapped
networks (export on the connected side, import on the isolated side). See docs/airgap.md."""

from __future__ import annotations

from pathlib import Path

import typer

bundle_app = typer.Typer(
    help="Air-gap bundles: export signed, incremental bundles of channels, mirrors and CVE data; import them "
    "on an isolated server; environment bundles (docs/airgap.md).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(bundle_app, name="bundle")


# -- bundle env (environment bundles) -------------------------------------------------------------------
@bundle_app.command("env")
def env(
    ctx: typer.Context,
    channel: list[str] = typer.Option(
        ...,
        "--channel",
        "-c",
        help="Channel to take packages from (repeat; the first channel that has a package wins).",
    ),
    spec: list[str] = typer.Option(None, "--spec", "-s", help="MatchSpec to solve for, e.g. 'numpy >=2' (repeat)."),
    lockfile: Path = typer.Option(
        None,
        "--lockfile",
        "-l",
        dir_okay=False,
        help="Take the exact packages of a "
        "lockfile instead of solving: pixi.lock, conda-lock.yml or an @EXPLICIT file.",
    ),
    platform: str = typer.Option(..., "--platform", "-p", help="Target platform, e.g. linux-64, osx-arm64, win-64."),
    output: Path = typer.Option(..., "--output", "-o", help="Folder to create (must not exist, or be empty)."),
    environment: str = typer.Option("default", "--environment", "-e", help="Environment of a pixi.lock."),
    virtual_package: list[str] = typer.Option(
        None,
        "--virtual-package",
        help="Virtual package of the target machine for the solve, NAME=VERSION[=BUILD] "
        "(repeat; replaces the default of that name, e.g. __glibc=2.17; NAME= drops it). Defaults: __unix, "
        "__linux=5.10, __glibc=2.28 (linux); __unix, __osx=11.0 (osx); __win (win); __archspec of the platform.",
    ),
    name: str = typer.Option("bundle", "--name", help="Environment name written in environment.yml."),
    base_url: str = typer.Option(
        None,
        "--base-url",
        help="URL the environment files use for the folder (default: "
        "its file:// URL here), e.g. file:///media/usb/env when it is mounted there.",
    ),
    explicit_hash: str = typer.Option(
        "sha256",
        "--explicit-hash",
        help="Anchor of the explicit file's lines: sha256, or md5 for older conda releases that only accept md5.",
    ),
    no_fetch: bool = typer.Option(
        False,
        "--no-fetch",
        help="Refuse packages whose bytes are not on the server "
        "(a passive mirror's) instead of downloading them from the mirror's upstream.",
    ),
    data_dir: Path = typer.Option(
        None, "--data-dir", envvar="CONDAVAULT_DATA_DIR", help="Server data folder (default ./condavault-data)."
    ),
) -> None:
    """Write one environment as a self-contained channel folder that conda, mamba, pixi and py-rattler install
    from with no network: DIR/channel/ (repodata + package files), DIR/environment-PLATFORM.txt (explicit) and
    DIR/environment.yml.

    Runs on the server machine, against its database and storage (like `check`). Packages are solved from the
    channels (--spec) or taken from a lockfile (--lockfile); each file is sha256-verified while copied. Nothing
    is left behind on failure. See docs/airgap.md, "Environment bundles".
    """
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn, TransferSpeedColumn

    from condavault.airgap.env import EnvRequest, passive_fetcher, plan_env_bundle, write_env_bundle
    from condavault.cli.output import console, err_console
    from condavault.cli.server import _settings
    from condavault.db import migrate
    from condavault.db.session import Database
    from condavault.storage import open_blob_store

    settings = _settings(ctx, data_dir)
    request = EnvRequest(
        channels=channel,
        platform=platform,
        output=output,
        specs=spec or [],
        lockfile=lockfile,
        environment=environment,
        virtual_packages=virtual_package or [],
        base_url=base_url,
        name=name,
        explicit_hash=explicit_hash,
    )
    db = Database(settings.db_url)
    blobs = open_blob_store(settings, check=True)
    try:
        migrate.check(db.engine, settings.db_url)
        plan = plan_env_bundle(db, request, blobs, fetch=None if no_fetch else passive_fetcher(settings))
    finally:
        db.dispose()
    err_console.print(f"{len(plan.packages)} packages ({plan.bytes / 1e6:.1f} MB) from {plan.source}")
    with Progress(
        TextColumn("copying"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task("copy", total=plan.bytes)
        result = write_env_bundle(blobs, plan, on_bytes=lambda n: progress.advance(task, n))
    for p in result.packages:
        console.print(f"  {p.subdir}/{p.filename}  ({p.channel})", highlight=False)
    console.print(f"wrote {result.output}: {len(result.packages)} packages, {result.bytes} bytes", highlight=False)
    console.print(f"  conda create -n {name} --file {result.explicit_file}", highlight=False)
    console.print(f"  conda env create -f {result.environment_file}", highlight=False)
