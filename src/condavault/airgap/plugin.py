"""Wire the air-gap domain into a Context: the drop-folder import job (``airgap.import``), run on
``airgap_import_cron`` and on demand (``POST /api/bundles/scan``, ``condavault bundle scan``).

The drop folder is ``<data-dir>/airgap/``: each bundle folder (or ``.tar``/``.tar.gz`` file) found there is
imported, oldest serial first (so a monthly full bundle and its incrementals apply in order). A bundle
imported before is skipped cheaply; a refused one is reported in the job's result and tried again at
the next scan (e.g. its base arrives later); the folder itself is never modified.

A split bundle is picked up only once **all** its parts are there: either in one folder
(``airgap/<name>/part-001`` ...) or as part folders dropped side by side (``airgap/part-001``, grouped
by their manifest). Until then the scan reports it ``incomplete`` (which parts it has) and leaves it.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from condavault.airgap.manifest import MANIFEST, is_part_dir, part_dirs_in
from condavault.airgap.unpack import is_archive
from condavault.errors import CondavaultError
from condavault.jobs.registry import JobKind, JobRun
from condavault.jobs.schedule import ScheduleSpec

if TYPE_CHECKING:
    from condavault.context import Context

log = logging.getLogger(__name__)
IMPORT_KIND = "airgap.import"
IMPORT_LOCK = "airgap.import"


def candidates(folder: Path) -> list[tuple[str, Path | list[Path]]]:
    """(name, bundle) of each bundle in the drop folder: bundle folders, archives, folders holding the
    parts of a split bundle, and loose ``part-NNN`` folders grouped by their manifest."""
    if not folder.is_dir():
        return []
    out: list[tuple[str, Path | list[Path]]] = []
    loose: dict[str, list[Path]] = {}
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        if is_part_dir(p):
            loose.setdefault(_digest(p / MANIFEST), []).append(p)
            continue
        folder_bundle = p.is_dir() and not p.is_symlink() and ((p / MANIFEST).exists() or bool(part_dirs_in(p)))
        if folder_bundle or (p.is_file() and is_archive(p)):
            out.append((p.name, p))
    for parts in loose.values():
        out.append((",".join(p.name for p in parts), parts))
    return out


def _digest(path: Path) -> str:
    """Groups loose part folders (not a check: each part's manifest is verified when the bundle is opened)."""
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return f"unreadable:{path}"


def scan(ctx: Context, run: JobRun | None = None) -> dict[str, Any]:
    """Import every bundle of the drop folder, in serial order; returns each one's outcome."""
    from condavault.airgap.importer import Importer

    folder = ctx.settings.airgap_path
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    importer = Importer(ctx)
    opened: list[tuple[int, str, str, Path | list[Path]]] = []
    results: list[dict[str, Any]] = []
    for name, path in candidates(folder):
        try:
            o = importer.open(path)
            opened.append((o.manifest.serial, o.manifest.bundle_id, name, path))
        except CondavaultError as exc:
            if "missing_parts" in exc.details:  # a split bundle still arriving: not an error, looked at again
                parts = int(exc.details.get("parts") or 0)
                missing = list(exc.details["missing_parts"])
                results.append(
                    {
                        "path": name,
                        "status": "incomplete",
                        "parts": parts,
                        "missing_parts": missing[:100],
                        "error": exc.message,
                    }
                )
                continue
            results.append({"path": name, "status": "rejected", "code": exc.code, "error": exc.message})
    for i, (_serial, _bid, name, path) in enumerate(sorted(opened, key=lambda o: (o[0], o[1], o[2]))):
        if run is not None:
            run.check_cancelled()
            run.progress(phase="import", done=i, total=len(opened))
        try:
            rep = importer.run(path)
            results.append({"path": name, "bundle_id": rep.bundle_id, "status": rep.status, "records": rep.records})
        except CondavaultError as exc:
            log.warning("bundle refused", extra={"path": name, "code": exc.code, "error": exc.message})
            results.append({"path": name, "status": "refused", "code": exc.code, "error": exc.message})
    return {"bundles": results}


def wire(ctx: Context) -> None:
    def run_scan(run: JobRun) -> dict[str, Any] | None:
        out = scan(ctx, run)
        # a scheduled scan of an empty folder leaves no row (quiet); one asked for always answers
        return out if out["bundles"] or run.params.get("on_demand") else None

    ctx.kinds.register(
        JobKind(
            IMPORT_KIND,
            run_scan,
            max_attempts=1,
            quiet=True,
            description="import the bundles of the air-gap drop folder",
        )
    )


def schedules(ctx: Context) -> list[ScheduleSpec]:
    return [ScheduleSpec(IMPORT_KIND, IMPORT_KIND, cron=ctx.settings.airgap_import_cron, lock_key=IMPORT_LOCK)]
