"""``condavault mirror ...``: mirrors of upstream channels through policy filters."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from condavault.cli.client import ApiError, Client, client_from
from condavault.cli.output import console, err_console, print_json, table

if TYPE_CHECKING:
    from condavault.mirror.config import MirrorConfig

mirror_app = typer.Typer(
    help="Mirror upstream conda channels into a channel through policy filters (plan, run, explain).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(mirror_app, name="mirror")


def _validate(data: dict[str, Any]) -> MirrorConfig:
    from pydantic import ValidationError

    from condavault.mirror.config import MirrorConfig, MirrorConfigError, _format_errors

    try:
        return MirrorConfig.model_validate(data)
    except ValidationError as exc:
        raise MirrorConfigError(f"invalid mirror config: {_format_errors(exc)}") from None


def _opt_list(values: list[str] | None) -> list[str]:
    out: list[str] = []
    for v in values or []:
        out.extend(p.strip() for p in v.split(",") if p.strip())
    return out


@mirror_app.command("create")
def create(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Mirror name."),
    upstream: str = typer.Option(..., help="Upstream channel: http(s) URL, file:// URL or local directory."),
    channel: str = typer.Option(..., help="Target channel (must exist unless --create-channel)."),
    subdirs: str = typer.Option(..., help="Comma-separated subdirs, e.g. linux-64,noarch."),
    mode: str = typer.Option("active", help="active (download now) | passive (index now, fetch on first request)."),
    cron: str = typer.Option(None, help='Schedule, a cron expression such as "0 * * * *".'),
    on_remove: str = typer.Option("remove", help="Files gone upstream or newly filtered out: remove | keep."),
    token: str = typer.Option(None, "--token", help="Upstream token, sent as Authorization: Bearer."),
    username: str = typer.Option(None, help="Upstream HTTP basic user."),
    password: str = typer.Option(None, help="Upstream HTTP basic password."),
    proxy: str = typer.Option(None, help="HTTP(S) proxy for upstream requests."),
    no_verify_tls: bool = typer.Option(False, "--no-verify-tls", help="Do not verify upstream TLS certificates."),
    create_channel: bool = typer.Option(False, "--create-channel", help="Create the target channel first."),
    only_spec: list[str] = typer.Option(None, "--only-spec", help="Mirror only these MatchSpecs (repeat)."),
    include_dependencies: bool = typer.Option(
        False, "--include-dependencies", help="With --only-spec: add their dependency closure."
    ),
    exclude_spec: list[str] = typer.Option(None, "--exclude-spec", help="Drop files matching these MatchSpecs."),
    include_spec: list[str] = typer.Option(None, "--include-spec", help="Re-admit files other filters dropped."),
    include_license: list[str] = typer.Option(None, "--include-license", help="Keep only these license families/SPDX."),
    exclude_license: list[str] = typer.Option(None, "--exclude-license", help="Drop these license families/SPDX."),
    date_from: str = typer.Option(None, help="Keep files published on or after YYYY-MM-DD."),
    date_to: str = typer.Option(None, help="Keep files published on or before YYYY-MM-DD."),
    only_signed: bool = typer.Option(False, "--only-signed", help="Drop unsigned files."),
    dedupe_conda_legacy: bool = typer.Option(
        False, "--dedupe-conda-legacy", help="Skip .tar.bz2 files that have a .conda twin."
    ),
    keep_latest: int = typer.Option(None, help="Keep the N newest versions of each package."),
    exclude_prereleases: bool = typer.Option(False, "--exclude-prereleases", help="Drop pre-release versions."),
    max_size: str = typer.Option(None, help="Drop files larger than this (e.g. 500MB)."),
    prune_unsatisfiable: str = typer.Option(
        None, help="drop | flag files whose dependencies the policy removed (keeps the mirror installable)."
    ),
    cve_score_threshold: float = typer.Option(None, help="Drop files with a CVE scored above this."),
    cve_score_exception: list[str] = typer.Option(None, "--cve-score-exception", help="CVE ids the threshold ignores."),
    exclude_cve_status: list[str] = typer.Option(
        None, "--exclude-cve-status", help="Drop files linked to CVEs in these statuses."
    ),
    exclude_non_curated_cve: bool = typer.Option(
        False, "--exclude-non-curated-cve", help="Drop files with any not-yet-reviewed CVE."
    ),
    max_dependency_risk: float = typer.Option(None, help="Drop files whose dependency tree risk is above this."),
) -> None:
    """Create mirror NAME of an upstream channel into --channel."""
    filters: dict[str, Any] = {
        "only_specs": _opt_list(only_spec),
        "include_dependencies": include_dependencies or None,
        "exclude_specs": _opt_list(exclude_spec),
        "include_specs": _opt_list(include_spec),
        "include_licenses": _opt_list(include_license),
        "exclude_licenses": _opt_list(exclude_license),
        "date_from": date_from,
        "date_to": date_to,
        "only_signed": only_signed or None,
        "dedupe_conda_legacy": dedupe_conda_legacy or None,
        "keep_latest": keep_latest,
        "exclude_prereleases": exclude_prereleases or None,
        "max_size": max_size,
        "prune_unsatisfiable": prune_unsatisfiable,
        "cve_score_threshold": cve_score_threshold,
        "cve_score_exceptions": _opt_list(cve_score_exception),
        "exclude_cve_statuses": _opt_list(exclude_cve_status),
        "exclude_non_curated_cve": exclude_non_curated_cve or None,
        "max_dependency_risk": max_dependency_risk,
    }
    data: dict[str, Any] = {
        "name": name,
        "upstream": upstream,
        "channel": channel,
        "subdirs": _opt_list([subdirs]),
        "mode": mode,
        "cron": cron,
        "on_remove": on_remove,
        "upstream_token": token,
        "upstream_username": username,
        "upstream_password": password,
        "proxy": proxy,
        "verify_tls": not no_verify_tls,
        "filters": {k: v for k, v in filters.items() if v not in (None, [])},
    }
    cfg = _validate({k: v for k, v in data.items() if v is not None})
    client = client_from(ctx)
    if create_channel:
        try:
            client.post("/api/channels", json={"name": channel})
        except ApiError as exc:
            if exc.status != 409:
                raise
    out = client.post("/api/mirrors", json=cfg.model_dump(mode="json"))
    console.print(f"created mirror {out['name']}: {out['upstream']} -> channel {out['channel']} ({out['mode']})")


@mirror_app.command("apply")
def apply(
    ctx: typer.Context, file: Path = typer.Argument(..., exists=True, dir_okay=False, help="mirror.yaml")
) -> None:
    """Create or update a mirror from a YAML file (see `mirror export`)."""
    text = file.read_text()
    from condavault.mirror.config import load_yaml

    load_yaml(text)  # unknown keys and bad values are reported here, before anything is sent
    out = client_from(ctx).post("/api/mirrors/apply", json={"yaml": text})
    console.print(f"applied mirror {out['name']}: {out['upstream']} -> channel {out['channel']} ({out['mode']})")


@mirror_app.command("export")
def export(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Mirror name."),
    output: Path = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
    secrets: bool = typer.Option(False, "--secrets", help="Include upstream credentials (default: '***')."),
) -> None:
    """Write a mirror's config as YAML (what `mirror apply` reads)."""
    resp = client_from(ctx).http.get(f"/api/mirrors/{name}/export", params={"secrets": secrets})
    if resp.status_code >= 400:
        err = resp.json().get("error", {})
        raise ApiError(resp.status_code, err.get("code", "error"), err.get("message", resp.text))
    if output:
        output.write_text(resp.text)
        console.print(f"wrote {output}")
    else:
        print(resp.text, end="")


@mirror_app.command("list")
def list_(ctx: typer.Context, json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Mirrors you may see, with their last run."""
    rows = client_from(ctx).get("/api/mirrors")
    if json_out:
        print_json(rows)
        return
    for r in rows:
        last = r.get("last_run") or {}
        r["last_run"] = f"{last.get('status', '-')} {str(last.get('finished_at') or '')[:19]}" if last else "never"
        r["running"] = "yes" if r["running"] else ""
    table(rows, ["name", "channel", "mode", "cron", "upstream", "running", "last_run"])


@mirror_app.command("show")
def show(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Mirror name."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """One mirror: config, plan summary and last run."""
    out = client_from(ctx).get(f"/api/mirrors/{name}")
    if json_out:
        print_json(out)
        return
    console.print(
        f"[bold]{out['name']}[/bold]  {out['upstream']} -> {out['channel']}  mode={out['mode']}"
        f"  cron={out['cron'] or '-'}  running={out['running']}"
    )
    console.print(f"subdirs: {', '.join(out['subdirs'])}")
    filters = out["config"].get("filters") or {}
    set_filters = {k: v for k, v in filters.items() if v not in (None, [], {}, False)}
    console.print(f"filters: {json.dumps(set_filters) if set_filters else '(none: everything)'}")
    items = out.get("items") or {}
    if items.get("files"):
        console.print(f"plan: {items['files']} upstream files, {items['kept']} kept, states {items['states']}")
        if items["dropped"]:
            console.print("dropped by filter: " + ", ".join(f"{k}={v}" for k, v in sorted(items["dropped"].items())))
    if out.get("last_run"):
        _print_run(out["last_run"])


@mirror_app.command("plan")
def plan(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Mirror name."),
    limit: int = typer.Option(20, help="Files listed per section."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Dry run: what a run would add, remove and drop (and by which filter). Changes no files."""
    run = client_from(ctx).post(f"/api/mirrors/{name}/plan")
    if json_out:
        print_json(run)
        return
    if run["status"] != "completed":
        err_console.print(f"[red]plan failed:[/red] {run.get('error')}")
        raise typer.Exit(1)
    c = run["counts"]
    p = c.get("plan") or {}
    console.print(
        f"{c.get('files', 0)} upstream files: {c.get('kept', 0)} kept, {c.get('dropped', 0)} dropped, "
        f"{c.get('flagged', 0)} flagged ({run.get('plan_seconds') or 0:.2f}s)"
    )
    console.print(
        f"would add {c.get('to_add', 0)}, remove {c.get('to_remove', 0)} (on_remove: {p.get('on_remove')}),"
        f" refresh {c.get('to_refresh', 0)}; {c.get('present', 0)} already present"
    )
    for title, files in (("add", p.get("add") or []), ("remove", p.get("remove") or [])):
        for f in files[:limit]:
            console.print(f"  {'+' if title == 'add' else '-'} {f}")
        if len(files) > limit:
            console.print(f"  ... and {len(files) - limit} more")
    for filt, n in sorted((c.get("dropped_by_filter") or {}).items()):
        console.print(f"[bold]dropped by {filt}[/bold]: {n}")
        for d in (p.get("dropped") or {}).get(filt, [])[:limit]:
            console.print(f"  x {d['file']}  ({d['rule']}: {d['value']})")
    for d in (p.get("flagged") or [])[:limit]:
        console.print(f"  ! {d['file']} flagged by {d['filter']} ({d['rule']}: {d['value']})")


def _print_run(run: dict[str, Any]) -> None:
    c = run.get("counts") or {}
    dur = [
        f"plan {run['plan_seconds']:.2f}s" if run.get("plan_seconds") is not None else "",
        f"apply {run['apply_seconds']:.2f}s" if run.get("apply_seconds") is not None else "",
    ]
    console.print(
        f"run {run['id']} ({run['trigger']}{', dry run' if run.get('dry_run') else ''}): "
        f"[bold]{run['status']}[/bold] {' '.join(d for d in dur if d)}"
    )
    if c.get("unchanged"):
        console.print("  nothing changed upstream, in the config or in the channel")
    keys = [
        "files",
        "kept",
        "dropped",
        "downloaded",
        "bytes",
        "indexed_passive",
        "refreshed",
        "removed",
        "kept_removed_upstream",
        "failed",
        "retries",
    ]
    console.print("  " + ", ".join(f"{k}={c[k]}" for k in keys if c.get(k)))
    if c.get("dropped_by_filter"):
        console.print(
            "  dropped by filter: " + ", ".join(f"{k}={v}" for k, v in sorted(c["dropped_by_filter"].items()))
        )
    for f in run.get("failures") or []:
        console.print(f"  [red]failed[/red] {f['file']}: {f['message']} [{f['code']}]")
    if run.get("error"):
        console.print(f"  [red]error:[/red] {run['error']}")


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    )


class _Bars:
    def __init__(self, progress: Progress) -> None:
        self.p = progress
        self.files = progress.add_task("files", total=None)
        self.bytes = progress.add_task("bytes", total=None)

    def update(self, run: dict[str, Any]) -> None:
        pr = run.get("progress") or {}
        phase = run.get("phase") or run.get("status") or ""
        self.p.update(
            self.files,
            description=f"files  [{phase}]",
            total=pr.get("total_items") or None,
            completed=pr.get("done_items", 0),
        )
        self.p.update(
            self.bytes, description="bytes", total=pr.get("total_bytes") or None, completed=pr.get("done_bytes", 0)
        )


def _follow(client: Client, name: str, run_id: int) -> dict[str, Any]:
    with _progress() as progress:
        bars = _Bars(progress)
        while True:
            run = client.get(f"/api/mirrors/{name}/runs/{run_id}")
            bars.update(run)
            if run["status"] in ("completed", "failed", "cancelled"):
                return run  # type: ignore[no-any-return]
            time.sleep(0.5)


@mirror_app.command("run")
def run(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Mirror name."),
    wait: bool = typer.Option(False, "--wait", help="Follow the run with progress bars until it ends."),
    full: bool = typer.Option(False, "--full", help="Re-plan even if upstream, config and channel are unchanged."),
    local: bool = typer.Option(
        False, "--local", help="Run in this process against the server's data folder and database (a worker)."
    ),
) -> None:
    """Run mirror NAME now (409 if it is already running)."""
    if local:
        out = _run_local(ctx, name, full)
    else:
        client = client_from(ctx)
        started = client.post(f"/api/mirrors/{name}/runs", params={"full": full})
        if not wait:
            console.print(
                f"started run {started['id']} of {name}; follow it with "
                f"`condavault mirror history {name}` or run with --wait"
            )
            return
        out = _follow(client, name, started["id"])
    _print_run(out)
    if out["status"] != "completed" or (out.get("counts") or {}).get("failed"):
        raise typer.Exit(1)


def _run_local(ctx: typer.Context, name: str, full: bool) -> dict[str, Any]:
    """Run the mirror's job in this process (a worker of its own), against the server's database and data."""
    from condavault.config import load_settings
    from condavault.context import Context
    from condavault.db import migrate
    from condavault.mirror.tasks import start_run

    settings = load_settings(data_dir=ctx.ensure_object(dict).get("data_dir"), worker=False)
    cv = Context.build(settings, start_jobs=False)
    try:
        migrate.check(cv.db.engine, settings.db_url)
        with _progress() as progress:
            bars = _Bars(progress)
            return start_run(cv, name, trigger="worker", full=full, background=False, on_progress=bars.update)
    finally:
        cv.close()


@mirror_app.command("history")
def history(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Mirror name."),
    limit: int = typer.Option(20, help="Runs to show."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Past runs with counts and timings, newest first."""
    runs = client_from(ctx).get(f"/api/mirrors/{name}/runs", params={"limit": limit})
    if json_out:
        print_json(runs)
        return
    rows = []
    for r in runs:
        c = r["counts"]
        rows.append(
            {
                "id": r["id"],
                "status": r["status"],
                "trigger": r["trigger"] + (" (plan)" if r["dry_run"] else ""),
                "started": str(r["started_at"])[:19],
                "plan_s": f"{r['plan_seconds']:.2f}" if r["plan_seconds"] else "",
                "apply_s": f"{r['apply_seconds']:.2f}" if r["apply_seconds"] else "",
                "kept": c.get("kept"),
                "dropped": c.get("dropped"),
                "downloaded": c.get("downloaded", 0),
                "bytes": c.get("bytes", 0),
                "failed": c.get("failed", 0),
                "removed": c.get("removed", 0),
            }
        )
    table(
        rows,
        [
            "id",
            "status",
            "trigger",
            "started",
            "plan_s",
            "apply_s",
            "kept",
            "dropped",
            "downloaded",
            "bytes",
            "failed",
            "removed",
        ],
    )


@mirror_app.command("cancel")
def cancel(ctx: typer.Context, name: str = typer.Argument(..., help="Mirror name.")) -> None:
    """Ask the running run of NAME to stop."""
    out = client_from(ctx).post(f"/api/mirrors/{name}/cancel")
    console.print(f"cancelling run(s) {', '.join(map(str, out['cancelling']))}")


@mirror_app.command("delete")
def delete(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Mirror name."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask."),
) -> None:
    """Delete mirror NAME (its channel and the files already mirrored stay)."""
    if not yes:
        typer.confirm(f"Delete mirror {name}?", abort=True)
    client_from(ctx).request("DELETE", f"/api/mirrors/{name}")
    console.print(f"deleted mirror {name}")


@mirror_app.command("explain")
def explain(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Mirror name."),
    query: str = typer.Argument(..., help="Package name, filename or subdir/filename."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Why a package or file is (not) in the mirror: the filter, rule and value of the last plan."""
    out = client_from(ctx).get(f"/api/mirrors/{name}/explain", params={"q": query})
    if json_out:
        print_json(out)
        return
    for d in out["decisions"]:
        verdict = "[green]kept[/green]" if d["kept"] else "[red]dropped[/red]"
        flag = " [yellow](flagged)[/yellow]" if d["flag"] else ""
        console.print(
            f"{d['subdir']}/{d['filename']}: {verdict}{flag} by {d['filter']} "
            f"(rule: {d['rule']}; value: {d['value']}) state={d['state']}"
            + (f" error={d['error']}" if d.get("error") else "")
        )


@mirror_app.command("items")
def items(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Mirror name."),
    state: str = typer.Option(None, help="pending | done | failed | passive | dropped"),
    filter_: str = typer.Option(None, "--filter", help="Only decisions made by this filter."),
    limit: int = typer.Option(100, help="Rows to show."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """The stored plan: one decision per upstream file."""
    params = {k: v for k, v in {"state": state, "filter": filter_, "limit": limit}.items() if v is not None}
    rows = client_from(ctx).get(f"/api/mirrors/{name}/items", params=params)
    if json_out:
        print_json(rows)
    else:
        table(rows, ["subdir", "filename", "kept", "filter", "rule", "value", "state"])
