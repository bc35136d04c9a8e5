"""The environment bundle's solve, in a child process.

py-rattler's async runtime can crash the interpreter while it shuts down after a solve (SIGSEGV or SIGABRT
once the work is done, in about one run of ten with py-rattler 0.28): run in the ``condavault`` process,
that would turn a written bundle into a failed command. The child reads one JSON request on stdin, prints
one JSON answer on stdout and leaves with ``os._exit`` (no interpreter shutdown). It also gives the solver's
memory (a large channel's repodata) back to the system as soon as it ends.

    python -m condavault.airgap.solver < {"specs": [...], "sources": [[channel_url, subdir, path], ...],
                                          "virtual_packages": ["__glibc=2.28=0", ...]}
    -> {"urls": [...]} | {"error": "..."}
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

from condavault.errors import CondavaultError, InvalidRequest

TIMEOUT = 3600.0


class SolveFailed(InvalidRequest):
    code = "unsolvable"


def solve_in_child(specs: list[str], sources: list[tuple[str, str, str]], virtual_packages: list[str]) -> list[str]:
    """The URLs of the solved records (``sources``: channel URL, subdir, repodata path). Raises
    :class:`SolveFailed` with the solver's explanation."""
    request = json.dumps({"specs": specs, "sources": sources, "virtual_packages": virtual_packages})
    proc = subprocess.run(
        [sys.executable, "-m", "condavault.airgap.solver"],
        input=request,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    answer: dict[str, Any] = {}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            answer = json.loads(line)
            break
    if "urls" in answer:
        return [str(u) for u in answer["urls"]]
    if "error" in answer:
        raise SolveFailed(str(answer["error"]))
    raise CondavaultError(
        f"the solver process failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}", code="solver_failed"
    )


async def _solve(req: dict[str, Any]) -> list[str]:
    import rattler

    sparse = [rattler.SparseRepoData(rattler.Channel(url), subdir, path) for url, subdir, path in req["sources"]]
    virtual = []
    for item in req["virtual_packages"]:
        name, version, build = item.split("=", 2)
        virtual.append(
            rattler.GenericVirtualPackage(
                rattler.PackageName(name), rattler.Version(version), rattler.BuildString(build)
            )
        )
    records = await rattler.solve_with_sparse_repodata(
        req["specs"],
        sparse,
        virtual_packages=virtual,
        channel_priority=rattler.ChannelPriority.Strict,
    )
    return [str(r.url) for r in records]


def main() -> None:  # pragma: no cover - runs in the child process
    try:
        out: dict[str, Any] = {"urls": asyncio.run(_solve(json.loads(sys.stdin.read())))}
    except Exception as exc:  # the solver's explanation goes back to the parent
        out = {"error": str(exc).strip()[:8000] or type(exc).__name__}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":  # pragma: no cover
    main()
