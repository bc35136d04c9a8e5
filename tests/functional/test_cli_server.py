"""The ``condavault`` command as an operator runs it: serve, db upgrade, refusing an old schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.server import free_port


def _cv(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONDAVAULT_")}
    return subprocess.run(
        [sys.executable, "-m", "condavault", *args],
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_serve_on_fresh_folder_creates_everything_and_prints_token_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONDAVAULT_")}
    # `serve --data-dir D` (the README's form); the global `condavault --data-dir D serve` works too
    proc = subprocess.Popen(
        [sys.executable, "-m", "condavault", "serve", "--data-dir", str(data), "--port", str(port)],
        env=base,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        token_file = data / "admin-token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        # the CLI finds the token through --data-dir
        out = _cv("--url", url, "--data-dir", str(data), "channel", "create", "first")
        assert out.returncode == 0, out.stderr
        assert httpx.get(f"{url}/api/repo/first/noarch/repodata.json").status_code == 200
        assert httpx.post(f"{url}/api/channels", json={"name": "anon"}).status_code == 401
        assert httpx.get(f"{url}/api/whoami", headers={"Authorization": f"Bearer {token}"}).json()["is_admin"]
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    assert output.count(token) == 1, output


def test_server_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    data = tmp_path / "old"
    assert _cv("--data-dir", str(data), "db", "upgrade", "0001_core").returncode == 0
    proc = _cv("--data-dir", str(data), "serve", "--port", str(free_port()), timeout=60)
    assert proc.returncode != 0
    assert "condavault db upgrade" in proc.stdout + proc.stderr
    assert _cv("--data-dir", str(data), "db", "upgrade").returncode == 0
    current = _cv("db", "current", "--data-dir", str(data))
    head = current.stdout.split("needed:")[1].strip()
    assert current.stdout.split("current:")[1].split()[0] == head


def test_every_command_has_help() -> None:
    import typer

    from condavault.cli.main import app

    root = typer.main.get_command(app)
    missing: list[str] = []
    paths: list[str] = []

    def walk(cmd: Any, path: str) -> None:  # typer's own (vendored) click classes
        paths.append(path)
        if not (cmd.help or cmd.short_help):
            missing.append(path)
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, f"{path} {name}")

    walk(root, "condavault")
    assert len(root.commands) >= 10 and len(paths) > 80, paths
    assert missing == []
    out = _cv("upload", "--help")
    assert out.returncode == 0 and "--skip-existing" in out.stdout


def test_a_run_loads_only_the_modules_of_its_command() -> None:
    """The table of which modules define which command (a run builds only those) is what the modules
    register: every command, with the same subcommands as in the whole app. Each command is built alone
    in a fresh process: in one process, a module imported for another command would have added its
    subcommands to shared groups already (``users`` adds ``channel grant``)."""
    from condavault.cli.main import COMMANDS, MODULES, modules_for

    script = (
        "import json, sys, typer\n"
        "from condavault.cli.main import build_app\n"
        "def tree(cmd):\n"
        "    return {n: tree(c) for n, c in cmd.commands.items()} if hasattr(cmd, 'commands') else None\n"
        "print(json.dumps(tree(typer.main.get_command(build_app(tuple(sys.argv[1:]))))))\n"
    )

    def built(modules: tuple[str, ...]) -> Any:
        out = subprocess.run([sys.executable, "-c", script, *modules], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    whole = built(MODULES)
    assert set(whole) == set(COMMANDS)
    alone = {modules: built(modules) for modules in set(COMMANDS.values())}
    for name, modules in COMMANDS.items():
        assert alone[modules][name] == whole[name], name
    assert modules_for(["upload", "ch", "a.conda"]) == ("channels",)
    assert modules_for(["--url", "http://x", "--token=t", "bundle", "export"]) == ("bundle", "bundle_core")
    assert modules_for(["--help"]) == modules_for([]) == modules_for(["uplaod"]) == MODULES
    misspelt = _cv("uplaod")  # the suggestion needs every command
    assert misspelt.returncode == 2 and "upload" in misspelt.stderr
    out = _cv("--url", "http://127.0.0.1:9", "bundle", "--help")
    assert out.returncode == 0 and "export" in out.stdout and "env" in out.stdout
