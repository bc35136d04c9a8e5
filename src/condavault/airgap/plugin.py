"""Wire the air-gap domain into a Context: the drop-folder import job (``airgap.import``), run on
``airgap_import_cron`` and on demand (``POST /api/bundles/scan``, ``condavault bundle scan``).

The drop folder is ``<data-dir>/airgap/``: each bundle folder (or ``.tar``/``.tar.gz`` file) found there is
imported, oldest serial first (so a monthly full bundle and its incrementals apply in order). A bundle
imported before is skipped cheaply; a refused one is reported in the job's result and tried again at
the next scan (e.g. its base arrives later); the folder itself is never modified.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from condavault.airgap.manifest import MANIFEST
from condavault.airgap.unpack import is_archive
from condavault.errors import CondavaultError
from condavault.jobs.registry import JobKind, JobRun
from condavault.jobs.schedule import ScheduleSpec

if TYPE_CHECKING:
    from condavault.context import Context

log = logging.getLogger(__name__)
IMPORT_KIND = "airgap.import"
IMPORT_LOCK = "airgap.import"


def candidates(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    out = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith("."):
            continue
        folder_bundle = p.is_dir() and not p.is_symlink() and ((p / MANIFEST).exists() or (p / "part-001").is_dir())
        if folder_bundle or (p.is_file() and is_archive(p)):
            out.append(p)
    return out


def scan(ctx: Context, run: JobRun | None = None) -> dict[str, Any]:
    """Import every bundle of the drop folder, in serial order; returns each one's outcome."""
    from condavault.airgap.importer import Importer

    folder = ctx.settings.airgap_path
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    importer = Importer(ctx)
    opened: list[tuple[int, str, Path]] = []
    results: list[dict[str, Any]] = []
    for path in candidates(folder):
        try:
            o = importer.open(path)
            opened.append((o.manifest.serial, o.manifest.bundle_id, path))
        except CondavaultError as exc:
            results.append({"path": path.name, "status": "rejected", "code": exc.code, "error": exc.message})
    for i, (_serial, _bid, path) in enumerate(sorted(opened)):
        if run is not None:
            run.check_cancelled()
            run.progress(phase="import", done=i, total=len(opened))
        try:
            rep = importer.run(path)
            results.append({"path": path.name, "bundle_id": rep.bundle_id, "status": rep.status,
                            "records": rep.records})
        except CondavaultError as exc:
            log.warning("bundle refused", extra={"path": str(path), "code": exc.code, "error": exc.message})
            results.append({"path": path.name, "status": "refused", "code": exc.code, "error": exc.message})
    return {"bundles": results}


def wire(ctx: Context) -> None:
    def run_scan(run: JobRun) -> dict[str, Any] | None:
        out = scan(ctx, run)
        # a scheduled scan of an empty folder leaves no row (quiet); one asked for always answers
        return out if out["bundles"] or run.params.get("on_demand") else None

    ctx.kinds.register(JobKind(IMPORT_KIND, run_scan, max_attempts=1, quiet=True,
                               description="import the bundles of the air-gap drop folder"))


def schedules(ctx: Context) -> list[ScheduleSpec]:
    return [ScheduleSpec(IMPORT_KIND, IMPORT_KIND, cron=ctx.settings.airgap_import_cron, lock_key=IMPORT_LOCK)]
