"""Solving with py-rattler over records this server holds (or a mirror's upstream universe).

A :class:`Universe` writes one ``repodata.json`` per subdir into a private temp folder (from the
published, patched fragments) and opens it as ``rattler.SparseRepoData``, so a solve only parses the
records of the names it visits. :class:`TreeSolver` answers "which records does this one record
install with?" (its dependency tree, as conda would install it on a generic machine of its platform),
for many records in a row, reusing the open repodata and one event loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
import json
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rattler

__all__ = ["VIRTUAL", "SolvedRecord", "TreeSolver", "Universe", "Unsolvable", "virtual_packages"]

VIRTUAL = {
    "linux": [("__unix", "0"), ("__linux", "5.15"), ("__glibc", "2.35"), ("__archspec", "1")],
    "osx": [("__unix", "0"), ("__osx", "14.0"), ("__archspec", "1")],
    "win": [("__win", "0"), ("__archspec", "1")],
}
DEFAULT_PLATFORM = "linux-64"  # what a channel holding only noarch records is solved for
SOLVE_TIMEOUT = dt.timedelta(seconds=30)
PARALLEL = 4  # solves in flight at once (rattler solves on its own threads)


def virtual_packages(platform: str) -> list[rattler.GenericVirtualPackage]:
    """A generic machine of ``platform`` (``linux-64`` → ``__unix``, ``__linux``, ``__glibc``, ...)."""
    family = platform.split("-", 1)[0]
    return [
        rattler.GenericVirtualPackage(rattler.PackageName(n), rattler.Version(v), rattler.BuildString("0"))
        for n, v in VIRTUAL.get(family, [])
    ]


@dataclass(frozen=True)
class SolvedRecord:
    channel: str  # the channel name the Universe gave this record's source
    subdir: str
    filename: str
    name: str
    version: str
    build: str
    depends: tuple[str, ...]


@dataclass(frozen=True)
class Unsolvable:
    reason: str


class Universe:
    """Repodata of one or more sources (channel name → subdir → ``repodata.json`` text), opened lazily.

    ``source(name, subdir)`` returns the repodata text of that channel's subdir (``None`` if empty).
    The :class:`TreeSolver` that uses it closes it (removing the temp folder).
    """

    def __init__(self, names: Sequence[str], source: Callable[[str, str], str | None], base_url: str) -> None:
        self.names = list(names)
        self._source = source
        self.base_url = base_url.rstrip("/")
        self._tmp = Path(tempfile.mkdtemp(prefix="condavault-solve-"))
        self._sparse: dict[tuple[str, str], rattler.SparseRepoData] = {}

    def channel_url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def sparse(self, platform: str) -> list[rattler.SparseRepoData]:
        out = []
        for name in self.names:
            for sd in (platform, "noarch") if platform != "noarch" else ("noarch",):
                key = (name, sd)
                if key not in self._sparse:
                    path = self._tmp / name / sd / "repodata.json"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_text(self._source(name, sd) or empty_repodata(sd))
                    self._sparse[key] = rattler.SparseRepoData(rattler.Channel(self.channel_url(name)), sd, str(path))
                out.append(self._sparse[key])
        return out

    def close(self) -> None:
        self._sparse.clear()
        gc.collect()  # rattler objects must go while the interpreter is whole
        shutil.rmtree(self._tmp, ignore_errors=True)


def empty_repodata(subdir: str) -> str:
    return json.dumps({"info": {"subdir": subdir}, "packages": {}, "packages.conda": {}, "repodata_version": 1})


def repodata_text(subdir: str, fragments: Iterable[tuple[str, str]]) -> str:
    """A ``repodata.json`` from (filename, record JSON) pairs."""
    pkgs: list[str] = []
    conda: list[str] = []
    for fn, frag in fragments:
        (conda if fn.endswith(".conda") else pkgs).append(json.dumps(fn) + ":" + frag)
    return (
        '{"info":{"subdir":'
        + json.dumps(subdir)
        + '},"packages":{'
        + ",".join(pkgs)
        + '},"packages.conda":{'
        + ",".join(conda)
        + '},"repodata_version":1}'
    )


def repodata_from_records(records: Mapping[tuple[str, str], Mapping[str, Any]]) -> Callable[[str, str], str | None]:
    """A Universe source over one in-memory set of records keyed by (subdir, filename)."""
    by_subdir: dict[str, list[tuple[str, str]]] = {}
    for (sd, fn), rec in records.items():
        by_subdir.setdefault(sd, []).append((fn, json.dumps({**rec, "subdir": sd})))
    return lambda _name, sd: repodata_text(sd, by_subdir[sd]) if sd in by_subdir else None


class TreeSolver:
    """Solves the install tree of single records of a :class:`Universe`.

    A record in subdir ``S`` is solved for platform ``S``; a ``noarch`` record for every platform subdir
    in ``platforms`` (its tree is the union; it is unsolvable only if unsolvable everywhere).
    The solver owns the universe: closing one closes both.
    """

    def __init__(self, universe: Universe, platforms: Iterable[str] = ()) -> None:
        self.universe = universe
        self.platforms = sorted({p for p in platforms if p != "noarch"}) or [DEFAULT_PLATFORM]
        self._loop = asyncio.new_event_loop()
        self._channel_of = {universe.channel_url(n): n for n in universe.names}

    def close(self) -> None:
        """Close the event loop and the universe (its temp folder)."""
        self._loop.close()
        self.universe.close()

    def __enter__(self) -> TreeSolver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def solve(self, specs: Sequence[str], platform: str) -> list[SolvedRecord]:
        """One environment; raises ``rattler`` errors when it cannot be solved."""
        return self._loop.run_until_complete(self._solve(list(specs), platform))

    def trees(
        self, wanted: Sequence[tuple[str, str, str, str]]
    ) -> dict[tuple[str, str, str, str], list[SolvedRecord] | Unsolvable]:
        """The tree of each (subdir, name, version, build), several solves in flight at once."""
        return self._loop.run_until_complete(self._trees(list(dict.fromkeys(wanted))))

    async def _trees(
        self, wanted: list[tuple[str, str, str, str]]
    ) -> dict[tuple[str, str, str, str], list[SolvedRecord] | Unsolvable]:
        out: dict[tuple[str, str, str, str], list[SolvedRecord] | Unsolvable] = {}
        for i in range(0, len(wanted), PARALLEL):
            part = wanted[i : i + PARALLEL]
            for key, result in zip(part, await asyncio.gather(*(self._tree(*k) for k in part)), strict=True):
                out[key] = result
        return out

    async def _tree(self, subdir: str, name: str, version: str, build: str) -> list[SolvedRecord] | Unsolvable:
        spec = f"{name} =={version} {build}"
        found: dict[tuple[str, str], SolvedRecord] = {}
        reasons = []
        for platform in self.platforms if subdir == "noarch" else [subdir]:
            try:
                for rec in await self._solve([spec], platform):
                    found[(rec.subdir, rec.filename)] = rec
            except Exception as exc:  # rattler raises SolverError (and friends) for unsatisfiable specs
                reasons.append(f"{platform}: {_explain(exc)}")
        return list(found.values()) if found else Unsolvable("; ".join(reasons) or "no solution")

    async def _solve(self, specs: list[str], platform: str) -> list[SolvedRecord]:
        solved = await rattler.solve_with_sparse_repodata(
            specs,
            self.universe.sparse(platform),
            virtual_packages=virtual_packages(platform),
            timeout=SOLVE_TIMEOUT,
        )
        return [self._solved(rec) for rec in solved]

    def _solved(self, rec: rattler.RepoDataRecord) -> SolvedRecord:
        channel_url = str(rec.channel or "").rstrip("/")
        return SolvedRecord(
            channel=self._channel_of.get(channel_url, channel_url.rsplit("/", 1)[-1]),
            subdir=rec.subdir,
            filename=rec.file_name,
            name=rec.name.normalized,
            version=str(rec.version),
            build=str(rec.build),
            depends=tuple(rec.depends),
        )


def _explain(exc: BaseException) -> str:
    """The solver's explanation on one line: "... no viable options: broken 1.0 would require missing-lib *, ..."."""
    lines = [ln.lstrip(" │├└─") for ln in str(exc).strip().splitlines()]
    return " ".join(ln for ln in lines if ln)[:300] or type(exc).__name__
