"""``condavault jobs``: every kind of job of the server, from any process."""

from __future__ import annotations

import time
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

from condavault.cli.client import Client, client_from
from condavault.cli.output import console, err_console, print_json, table

jobs_app = typer.Typer(
    help="List, show, follow and cancel jobs (mirror runs, CVE syncs, reindexing, ...).", no_args_is_help=True
)
FINISHED = ("succeeded", "failed", "cancelled")


def register(app: typer.Typer) -> None:
    app.add_typer(jobs_app, name="jobs")


@jobs_app.command("list")
def list_jobs(
    ctx: typer.Context,
    kind: list[str] = typer.Option(None, "--kind", help="Only this kind (repeatable), e.g. mirror.run."),
    state: list[str] = typer.Option(None, "--state", help="queued | running | succeeded | failed | cancelled."),
    limit: int = typer.Option(50, min=1, max=1000, help="How many (newest first)."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Jobs, newest first (administrators see every job; others the jobs they started)."""
    rows = client_from(ctx).get("/api/jobs", params={"kind": kind or [], "state": state or [], "limit": limit})
    if json_out:
        print_json(rows)
        return
    for r in rows:
        r["progress"] = f"{r['done']}/{r['total']}" if r["total"] else (str(r["done"]) if r["done"] else "")
        r["created_at"] = str(r["created_at"])[:19]
    table(rows, ["id", "kind", "state", "phase", "progress", "created_by", "schedule", "created_at", "error"])


@jobs_app.command("schedules")
def schedules(ctx: typer.Context, json_out: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Scheduled jobs and when they fire next (administrators)."""
    rows = client_from(ctx).get("/api/jobs/schedules")
    if json_out:
        print_json(rows)
        return
    table(rows, ["name", "kind", "cron", "every_seconds", "next_at", "last_fired_at", "last_job_id"])


@jobs_app.command("show")
def show(
    ctx: typer.Context,
    job_id: int = typer.Argument(..., help="Job id."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Follow its progress until it ends."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """One job: state, progress, result or error."""
    client = client_from(ctx)
    job = _follow(client, job_id) if follow else client.get(f"/api/jobs/{job_id}")
    if json_out:
        print_json(job)
    else:
        _print(job)
    if follow and job["state"] != "succeeded":
        raise typer.Exit(1)


@jobs_app.command("cancel")
def cancel(ctx: typer.Context, job_id: int = typer.Argument(..., help="Job id.")) -> None:
    """Cancel a queued job, or ask a running one to stop."""
    job = client_from(ctx).post(f"/api/jobs/{job_id}/cancel")
    verb = {"cancelled": "cancelled", "running": "asked to stop"}.get(job["state"], job["state"])
    console.print(f"job {job_id} ({job['kind']}): {verb}")


def _print(job: dict[str, Any]) -> None:
    console.print(
        f"[bold]job {job['id']}[/bold] {job['kind']}: {job['state']}" + (f" ({job['phase']})" if job["phase"] else "")
    )
    for key in ("params", "created_by", "schedule", "attempts", "worker", "created_at", "started_at", "finished_at"):
        if job.get(key) not in (None, {}, ""):
            console.print(f"  {key}: {job[key]}")
    if job.get("total"):
        console.print(f"  progress: {job['done']}/{job['total']}")
    if job.get("result") is not None:
        console.print(f"  result: {job['result']}")
    if job.get("error"):
        console.print(f"  [red]error:[/red] {job['error']}")


def _follow(client: Client, job_id: int) -> dict[str, Any]:
    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), console=err_console) as bar:
        task = bar.add_task("queued", total=None)
        while True:
            job: dict[str, Any] = client.get(f"/api/jobs/{job_id}")
            bar.update(
                task, description=job["phase"] or job["state"], completed=job["done"] or 0, total=job["total"] or None
            )
            if job["state"] in FINISHED:
                return job
            time.sleep(0.3)
