"""``condavault cve ...`` and ``condavault check-env``: the vulnerability database over the REST API."""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TaskProgressColumn, TextColumn, TransferSpeedColumn

from condavault.cli.client import Client, client_from
from condavault.cli.output import console, err_console, print_json, table

cve_app = typer.Typer(help="Vulnerability database: sync feeds, list, show, curate, report.", no_args_is_help=True)
STATUSES = "reported | active | mitigated | cleared | disputed"


def register(app: typer.Typer) -> None:
    app.add_typer(cve_app, name="cve")
    app.command("check-env")(check_env)


def _zip_dir(folder: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file() and p.suffix.lower() in (".json", ".yaml", ".yml", ".zip"):
                zf.write(p, p.relative_to(folder).as_posix())
    return buf.getvalue()


def _poll(client: Client, job: dict[str, Any]) -> dict[str, Any]:
    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), console=err_console) as bar:
        task = bar.add_task("queued", total=None)
        while True:
            job = client.get(f"/api/cves/sync/jobs/{job['id']}")
            total = job.get("total") or None
            bar.update(task, description=job.get("phase") or job["state"], completed=job.get("done", 0), total=total)
            if job["state"] in ("done", "failed"):
                return job
            time.sleep(0.3)


@cve_app.command("sync")
def sync(
    ctx: typer.Context,
    source: str = typer.Option(
        None, "--from", help="URL, or a local folder / zip / JSON file (uploaded). Default: configured sources."
    ),
    server_path: bool = typer.Option(False, "--server-path", help="--from names a path on the server, not here."),
    name: str = typer.Option(
        None,
        "--name",
        help="Name of an uploaded local source (default: the folder or file name); a later upload of the same "
        "name replaces that source's versions of the records it carries.",
    ),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Fetch advisories (CVE JSON 5, NVD API 2.0, OSV) or a PyPI <-> conda name mapping (parselmouth JSON or a
    table like the shipped one) and match them to package builds.

    Each source keeps its own version of every record; the advisories served are merged from all sources
    by alias, so sources can be synced in any order."""
    client = client_from(ctx)
    local = Path(source) if source and not server_path and "://" not in source else None
    if local is not None and local.exists():
        label = _source_name(name or local.resolve().name)
        if local.is_dir():
            data = _zip_dir(local)
        elif local.suffix.lower() == ".zip":
            data = local.read_bytes()
        else:  # a single JSON / YAML file goes as a one-file zip (it keeps its name, hence its format)
            data = _zip_single(local)
        ctype = "application/zip"
        with Progress(
            TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(), console=err_console
        ) as bar:
            task = bar.add_task(f"uploading {local.name}", total=len(data))

            def chunks() -> Any:
                for i in range(0, len(data), 256 * 1024):
                    bar.advance(task, len(data[i : i + 256 * 1024]))
                    yield data[i : i + 256 * 1024]

            job = client.post(
                "/api/cves/sync",
                params={"wait": False, "name": label},
                content=chunks(),
                headers={"Content-Type": ctype},
            )
    else:
        job = client.post("/api/cves/sync", json={"sources": [source] if source else [], "wait": False})
    job = _poll(client, job)
    if job["state"] == "failed":
        err_console.print(f"[red]sync failed:[/red] {job.get('error')}")
        raise typer.Exit(1)
    result = job.get("result") or {}
    if json_out:
        print_json(result)
        return
    names = f", {result['names']} name mapping entries" if result.get("names") else ""
    console.print(
        f"{result.get('records', 0)} records ({result.get('records_new', 0)} new, "
        f"{result.get('records_changed', 0)} changed, {result.get('records_unchanged', 0)} unchanged){names}; "
        f"advisories: {result.get('created', 0)} new, {result.get('updated', 0)} changed, "
        f"{result.get('removed', 0)} merged into others; links +{result.get('links_added', 0)} "
        f"-{result.get('links_removed', 0)} ~{result.get('links_updated', 0)} ({result.get('seconds', 0)} s)"
    )


@cve_app.command("sources")
def sources(
    ctx: typer.Context,
    remove: int = typer.Option(
        None,
        "--remove",
        help="Forget this source (id from the list): its records and name entries; the advisories "
        "it described are re-merged from the other sources, or removed.",
    ),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Synced sources: records per feed, name mapping entries, last outcome (needs system:admin)."""
    client = client_from(ctx)
    if remove is not None:
        out = client.request("DELETE", f"/api/cves/sources/{remove}")
        if json_out:
            print_json(out)
        else:
            console.print(
                f"removed {out['location']}: advisories {out['updated']} re-merged, {out['removed']} removed; "
                f"links -{out['links_removed']} ~{out['links_updated']}"
            )
        return
    rows = client.get("/api/cves/sources")
    if json_out:
        print_json(rows)
        return
    for r in rows:
        r["feeds"] = " ".join(f"{k}={v}" for k, v in sorted(r["feeds"].items()))
    table(rows, ["id", "location", "records", "feeds", "names", "last_run", "last_status"])


def _source_name(text: str) -> str:
    """A source name the API accepts (letters, digits, ``._-``; at most 100)."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")[:100]
    return cleaned or "upload"


def _zip_single(path: Path) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(path, path.name)
    return buf.getvalue()


@cve_app.command("list")
def list_cves(
    ctx: typer.Context,
    package: str = typer.Option(None, "--package", help="Only advisories affecting builds of this package."),
    channel: str = typer.Option(None, "--channel", help="Only advisories affecting files of this channel."),
    query: str = typer.Option(None, "--search", "-q", help="Search ids, aliases and summaries."),
    min_score: float = typer.Option(None, "--min-score"),
    limit: int = typer.Option(100, "--limit"),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """List advisories (with the number of affected files you may read)."""
    params = {"package": package, "channel": channel, "q": query, "min_score": min_score, "limit": limit}
    rows = client_from(ctx).get("/api/cves", params={k: v for k, v in params.items() if v is not None})
    if json_out:
        print_json(rows)
        return
    for r in rows:
        r["aliases"] = " ".join(r["aliases"][:3])
    table(rows, ["id", "score", "files", "aliases", "summary"])


@cve_app.command("show")
def show(
    ctx: typer.Context,
    ident: str = typer.Argument(..., help="CVE id or any alias."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """One advisory: aliases, scores, affected products and affected builds."""
    out = client_from(ctx).get(f"/api/cves/{ident}")
    if json_out:
        print_json(out)
        return
    score = f"score {out['score']} (CVSS {out['score_version']}, {out['score_source']})" if out["score"] else "no score"
    console.print(f"[bold]{out['id']}[/bold]  {score}  aliases: {', '.join(out['aliases'])}")
    console.print(out.get("summary") or "")
    table(out["scores"], ["version", "score", "vector", "source", "type", "feed"], title="scores")
    console.print(f"conda names: {', '.join(out['conda_names'])}")
    table(out["affected_files"], ["channel", "subdir", "filename", "status", "score"], title="affected builds")


@cve_app.command("files")
def files(
    ctx: typer.Context,
    ident: str = typer.Argument(..., help="CVE id or any alias."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Files linked to an advisory, with their curation status."""
    rows = client_from(ctx).get(f"/api/cves/{ident}/files")
    print_json(rows) if json_out else table(rows, ["link_id", "channel", "subdir", "filename", "status", "score"])


@cve_app.command("curate")
def curate(
    ctx: typer.Context,
    ident: str = typer.Argument(..., help="CVE id or any alias."),
    status: str = typer.Option(..., "--status", help=STATUSES),
    reason: str = typer.Option("", "--reason", help="Why (kept in the history and the audit log)."),
    link: list[int] = typer.Option(None, "--link", help="Link id (repeat)."),
    file: list[str] = typer.Option(None, "--file", help="channel/subdir/filename (repeat)."),
    package: str = typer.Option(None, "--package", help="Curate every build of this package (a rule)."),
    versions: str = typer.Option("*", "--versions", help="Version range of the rule, e.g. '>=1.2,<1.3'."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Set a curation status per link/file, or per package x version range (applies to future builds too)."""
    refs = []
    for f in file or []:
        parts = f.split("/")
        if len(parts) != 3:
            raise typer.BadParameter(f"{f!r}: expected channel/subdir/filename")
        refs.append({"channel": parts[0], "subdir": parts[1], "filename": parts[2]})
    body = {
        "status": status,
        "reason": reason,
        "link_ids": link or [],
        "files": refs,
        "package": package,
        "versions": versions,
    }
    out = client_from(ctx).post(f"/api/cves/{ident}/curate", json=body)
    if json_out:
        print_json(out)
        return
    if out.get("rule"):
        console.print(f"rule {out['rule']['id']}: {out['rule']['package']} {out['rule']['versions']} -> {status}")
    console.print(f"{len(out['changes'])} link(s) now {status}")


@cve_app.command("history")
def history(
    ctx: typer.Context,
    ident: str = typer.Argument(None, help="CVE id (default: all)."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Curation history: who changed what, when and why."""
    rows = client_from(ctx).get(f"/api/cves/{ident}/history" if ident else "/api/cves/history")
    print_json(rows) if json_out else table(rows, ["at", "actor", "advisory", "target", "before", "after", "reason"])


@cve_app.command("report")
def report(
    ctx: typer.Context,
    channel: str = typer.Option(None, "--channel", help="One channel (default: every channel you may read)."),
    fmt: str = typer.Option("table", "--format", help="table | json | csv"),
    package: str = typer.Option(None, "--package"),
) -> None:
    """Every advisory x file link with status, score and dependency-tree risk."""
    client = client_from(ctx)
    path = f"/api/channels/{channel}/cves" if channel else "/api/cves/report"
    params = {"format": "csv" if fmt == "csv" else "json", **({"package": package} if package else {})}
    if fmt == "csv":
        resp = client.http.get(path, params=params)
        if resp.status_code >= 400:
            client.request("GET", path, params=params)  # raises the API error
        print(resp.text, end="")
        return
    rows = client.get(path, params=params)
    if fmt == "json":
        print_json(rows)
        return
    table(rows, ["channel", "subdir", "filename", "advisory", "score", "status", "risk"])


def check_env(
    ctx: typer.Context,
    file: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="environment.yml, conda-lock.yml, pixi.lock, @EXPLICIT or spec list"
    ),
    channel: list[str] = typer.Option(None, "--channel", "-c", help="Channel of this server (repeat)."),
    platform: str = typer.Option("linux-64", "--platform"),
    threshold: float = typer.Option(None, "--threshold", help="Fail above this CVSS score."),
    fmt: str = typer.Option("table", "--format", help="table | json | cyclonedx"),
) -> None:
    """Solve an environment against this server's channels and report advisories with a verdict."""
    body = {
        "content": file.read_text(),
        "channels": channel or [],
        "platform": platform,
        "threshold": threshold,
        "format": "cyclonedx" if fmt == "cyclonedx" else "json",
    }
    out = client_from(ctx).post("/api/check-env", json=body)
    if fmt in ("json", "cyclonedx"):
        print(json.dumps(out, indent=2))
    else:
        rows = [
            {**p, "advisories": ", ".join(f"{a['advisory']}({a['score']},{a['status']})" for a in p["advisories"])}
            for p in out["packages"]
        ]
        table(rows, ["name", "version", "build", "channel", "verdict", "advisories"])
        console.print(f"verdict: [bold]{out['verdict']}[/bold] (threshold {out['threshold']})")
    if out.get("verdict") == "fail":
        raise typer.Exit(3)


@cve_app.command("accuracy")
def accuracy(
    ctx: typer.Context,
    labels: Path = typer.Argument(
        ...,
        exists=True,
        dir_okay=False,
        help='Labelled set: {"files": [{"file": "channel/subdir/fn", "advisories": [ids]'
        ', "set": "name"}], "goals": {"name": {"precision": p, "recall": r}}}',
    ),
    all_links: bool = typer.Option(
        False, "--all-links", help="Count every link as a prediction (default: only links that count)."
    ),
    check: bool = typer.Option(False, "--check", help="Exit with 4 when a goal of the labelled set is missed."),
    examples: int = typer.Option(10, "--examples", help="False positives / negatives to show per set."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Precision and recall of this server's links against a labelled set, by alias group.

    Each labelled file's advisories and its links are reduced to alias groups (an advisory with all its
    aliases is one group, as this server merged them). The files must be on the server (upload or import
    them first); every id of the set is looked up once (GET /api/cves/ID)."""
    from condavault.errors import CondavaultError
    from condavault.vulns.accuracy import evaluate, missed_goals, parse_labels

    try:
        items, goals = parse_labels(json.loads(labels.read_text()))
    except (ValueError, CondavaultError) as exc:
        err_console.print(f"[red]cannot read {labels}:[/red] {exc}")
        raise typer.Exit(2) from exc
    client = client_from(ctx)
    predicted: dict[str, list[str]] = {}
    group: dict[str, str] = {}
    channels = sorted({i.file.split("/", 1)[0] for i in items})
    ids = sorted({a for i in items for a in i.advisories})
    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), console=err_console) as bar:
        task = bar.add_task("reading links", total=len(channels) * 2 + len(ids))
        present: set[str] = set()
        for channel in channels:
            offset = 0
            while True:
                page = client.get(f"/api/channels/{channel}/files", params={"limit": 100000, "offset": offset})
                present.update(f"{channel}/{f['subdir']}/{f['filename']}" for f in page)
                if len(page) < 100000:
                    break
                offset += len(page)
            bar.advance(task)
            for row in client.get(f"/api/channels/{channel}/cves", params={"format": "json", "risk": False}):
                for ident in (row["advisory"], *row["aliases"]):
                    group[ident.upper()] = row["advisory"]
                if all_links or row["counts"]:
                    predicted.setdefault(f"{channel}/{row['subdir']}/{row['filename']}", []).append(row["advisory"])
            bar.advance(task)
        bar.update(task, description="resolving labelled ids")
        for ident in ids:
            if ident not in group:
                resp = client.http.get(f"/api/cves/{ident}")
                if resp.status_code == 200:
                    adv = resp.json()
                    for alias in (adv["id"], *adv["aliases"]):
                        group[alias.upper()] = adv["id"]
                elif resp.status_code != 404:
                    client.request("GET", f"/api/cves/{ident}")  # raises the API error
            bar.advance(task)
    missing = [i.file for i in items if i.file not in present]
    if missing:
        err_console.print(f"[red]{len(missing)} labelled files are not on the server[/red], e.g. {missing[:3]}")
        raise typer.Exit(2)
    scores = evaluate(items, predicted, lambda ident: group.get(ident.upper(), ident.upper()))
    missed = missed_goals(scores, goals)
    if json_out:
        print_json({"sets": {k: v.to_dict(examples) for k, v in scores.items()}, "goals": goals, "missed": missed})
    else:
        rows = []
        for name, score in scores.items():
            goal = goals.get(name, {})
            rows.append(
                {
                    "set": name,
                    "files": score.files,
                    "TP": score.tp,
                    "FP": score.fp,
                    "FN": score.fn,
                    "precision": f"{score.precision:.4f}",
                    "recall": f"{score.recall:.4f}",
                    "goal": f"{goal['precision']:g} / {goal['recall']:g}" if goal else "",
                }
            )
        table(rows, ["set", "files", "TP", "FP", "FN", "precision", "recall", "goal"], title="accuracy by alias group")
        for name, score in scores.items():
            if name != "all" and score.errors[:examples]:
                table(
                    [{"kind": k, "file": f, "advisory": g} for k, f, g in score.errors[:examples]],
                    ["kind", "file", "advisory"],
                    title=f"{name}: first errors",
                )
        for line in missed:
            err_console.print(f"[red]goal missed:[/red] {line}")
    if check and missed:
        raise typer.Exit(4)
