"""``condavault search`` and ``condavault provides``: the server's search, over the REST API."""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape

from condavault.cli.client import client_from
from condavault.cli.jobs import FINISHED, _follow
from condavault.cli.output import console, print_json, table

COLUMNS = ["channel", "name", "version", "build", "subdir", "license", "max_score", "matched", "summary"]


def register(app: typer.Typer) -> None:
    app.command("search")(search)
    app.command("provides")(provides)


def search(
    ctx: typer.Context,
    query: str = typer.Argument(
        "",
        help="Free text (typos are fine), a MatchSpec ('numpy >=1.20,<2 py39*'), or field terms: "
        "path:lib/libz.so.1, sha256:<hex>, cve:CVE-2022-37434, pkg:conda/<channel>/<name>@<version>, "
        "license:MIT, has:post-link. Empty: every package.",
    ),
    channel: str = typer.Option(None, "--channel", "-c", help="Only this channel."),
    subdir: str = typer.Option(None, "--subdir", help="Only packages with files for this subdir (e.g. linux-64)."),
    license: str = typer.Option(None, "--license", help="Only this license (* wildcards)."),
    score: str = typer.Option(
        None,
        "--score",
        help="Only packages whose worst CVE score is in this band: critical | high | medium | low | none.",
    ),
    sort: str = typer.Option("relevance", "--sort", help="relevance | name | newest."),
    page: int = typer.Option(1, "--page", min=1, max=1000, help="Page number."),
    per_page: int = typer.Option(20, "--per-page", min=1, max=100, help="Results per page."),
    json_out: bool = typer.Option(False, "--json", help="Print the whole JSON answer (results, facets, ...)."),
    reindex: bool = typer.Option(False, "--reindex", help="Admin: rebuild the search tables (a job) instead."),
    files: bool = typer.Option(
        True,
        "--files/--no-files",
        help="With --reindex: also read the file lists of stored packages that have none (slow on big servers).",
    ),
    wait: bool = typer.Option(False, "--wait", help="With --reindex: follow the job until it ends."),
) -> None:
    """Search every channel you may read."""
    client = client_from(ctx)
    if reindex:
        job_id = client.post("/api/search/reindex", params={"files": files})["job"]
        console.print(f"search reindex queued as job {job_id}")
        if wait:
            job = _follow(client, job_id)
            console.print(f"job {job_id}: {job['state']}" + (f" {job['result']}" if job.get("result") else ""))
            if job["state"] != "succeeded" or job["state"] not in FINISHED:
                raise typer.Exit(1)
        return
    params: dict[str, Any] = {"q": query, "sort": sort, "page": page, "per_page": per_page}
    for key, value in (("channel", channel), ("subdir", subdir), ("license", license), ("score", score)):
        if value:
            params[key] = value
    body = client.get("/api/search", params=params)
    if json_out:
        print_json(body)
        return
    rows = []
    for r in body["results"]:
        summary = (r.get("summary") or "").splitlines()[0][:60] if r.get("summary") else ""
        rows.append({**r, "summary": summary})
    shown = f"{(page - 1) * per_page + 1}-{(page - 1) * per_page + len(rows)}" if rows else "0"
    more = "+" if body.get("total_capped") else ""
    table(rows, COLUMNS, title=f"{shown} of {body['total']}{more} ({body['query_kind']})")
    if body.get("suggestion"):
        console.print(f"did you mean: [bold]{escape(body['suggestion'])}[/bold]?")


def provides(
    ctx: typer.Context,
    path: str = typer.Argument(..., help="A path inside a package, e.g. lib/libz.so.1."),
    page: int = typer.Option(1, "--page", min=1, max=1000, help="Page number."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Which package files (in channels you may read) provide this file."""
    body = client_from(ctx).get("/api/search/provides", params={"path": path, "page": page})
    if json_out:
        print_json(body)
        return
    table(
        body["results"],
        ["channel", "subdir", "filename", "size", "sha256"],
        title=f"{body['total']} file(s) provide {body['path']}",
    )
