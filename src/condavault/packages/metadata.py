"""Turn an archive's ``info/`` files into a repodata record plus the extras channeldata needs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from condavault.errors import CorruptArchive, FilenameMismatch, InvalidIndexJson, SubdirMismatch
from condavault.packages.archive import ArchiveInfo
from condavault.packages.filename import PackageFilename, is_subdir
from condavault.packages.validation import check_record, check_run_exports, check_tree, parse_index_json

# index.json keys conda-index drops before publishing (conda-protocol.md §2.3)
DROPPED_KEYS = {
    "arch",
    "platform",
    "has_prefix",
    "mtime",
    "ucs",
    "requires_features",
    "binstar",
    "target-triplet",
    "machine",
    "operatingsystem",
}
RUN_EXPORT_KEYS = ("weak", "strong", "weak_constrains", "strong_constrains", "noarch")

_PLATFORM_ARCH = {
    ("linux", "x86_64"): "linux-64",
    ("linux", "x86"): "linux-32",
    ("osx", "x86_64"): "osx-64",
    ("osx", "arm64"): "osx-arm64",
    ("win", "x86_64"): "win-64",
    ("win", "x86"): "win-32",
    ("linux", "aarch64"): "linux-aarch64",
    ("linux", "ppc64le"): "linux-ppc64le",
}


@dataclass
class PackageMetadata:
    record: dict[str, Any]  # index.json fields, cleaned (no md5/sha256/size yet)
    about: dict[str, Any]
    run_exports: dict[str, Any]
    paths_summary: dict[str, bool]
    security: dict[str, Any] | None
    # (path, sha256, size) of every file inside the package (``search_files``)
    files: list[tuple[str, str | None, int | None]] = field(default_factory=list)

    @property
    def subdir(self) -> str:
        return str(self.record["subdir"])


def derive_subdir(index: dict[str, Any]) -> str | None:
    if index.get("subdir"):
        return str(index["subdir"])
    if index.get("noarch"):
        return "noarch"
    key = (str(index.get("platform") or ""), str(index.get("arch") or ""))
    return _PLATFORM_ARCH.get(key)


def normalise_run_exports(raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if isinstance(raw, list):
        return {"weak": raw} if raw else {}
    if isinstance(raw, dict):
        return {k: v for k, v in raw.items() if k in RUN_EXPORT_KEYS}
    raise CorruptArchive("info/run_exports.json is neither a list nor an object")


def paths_summary(paths: Any) -> dict[str, bool]:
    """The channeldata booleans derived from ``info/paths.json``."""
    summary = {
        "activate.d": False,
        "deactivate.d": False,
        "binary_prefix": False,
        "text_prefix": False,
        "pre_link": False,
        "post_link": False,
        "pre_unlink": False,
    }
    entries = paths.get("paths", []) if isinstance(paths, dict) else []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        p = str(entry.get("_path", ""))
        if "etc/conda/activate.d" in p:
            summary["activate.d"] = True
        if "etc/conda/deactivate.d" in p:
            summary["deactivate.d"] = True
        if entry.get("prefix_placeholder"):
            if entry.get("file_mode") == "binary":
                summary["binary_prefix"] = True
            else:
                summary["text_prefix"] = True
        base = p.rsplit("/", 1)[-1]
        for script in ("pre-link", "post-link", "pre-unlink"):
            if base.startswith(".") and f"-{script}." in base:
                summary[script.replace("-", "_")] = True
    return summary


MAX_PATH = 1024


def file_list(paths: Any, files_txt: bytes | None) -> list[tuple[str, str | None, int | None]]:
    """(path, sha256, size) of every file of a package: ``info/paths.json`` when present, else the bare
    path list of ``info/files`` (old packages). Paths longer than ``MAX_PATH`` or with a NUL are left out."""
    out: dict[str, tuple[str, str | None, int | None]] = {}
    if isinstance(paths, dict) and isinstance(paths.get("paths"), list):
        for e in paths["paths"]:
            if not isinstance(e, dict):
                continue
            p = e.get("_path")
            if not isinstance(p, str) or not p or len(p) > MAX_PATH or "\x00" in p:
                continue
            sha = e.get("sha256")
            size = e.get("size_in_bytes")
            out[p] = (
                p,
                sha.lower() if isinstance(sha, str) and len(sha) == 64 else None,
                size if isinstance(size, int) and not isinstance(size, bool) and 0 <= size < 2**62 else None,
            )
        return list(out.values())
    if files_txt:
        for line in files_txt.decode("utf-8", "replace").splitlines():
            p = line.strip()
            if p and len(p) <= MAX_PATH and "\x00" not in p:
                out[p] = (p, None, None)
    return list(out.values())


def build_metadata(info: ArchiveInfo, fn: PackageFilename, expected_subdir: str | None) -> PackageMetadata:
    index = parse_index_json(info.files["info/index.json"], fn.filename)
    if not isinstance(index, dict):
        raise CorruptArchive("info/index.json is not a JSON object", filename=fn.filename)
    for key in ("name", "version", "build"):
        if not isinstance(index.get(key), str) or (key != "build" and not index[key]):
            raise InvalidIndexJson(f"info/index.json lacks {key!r}", field=key, filename=fn.filename)
    check_record(index, filename=fn.filename)  # types, ranges, sizes, MatchSpecs: nothing that breaks clients
    triple = (index["name"], index["version"], index["build"])
    if triple != (fn.name, fn.version, fn.build):
        raise FilenameMismatch(
            f"{fn.filename} does not match info/index.json ({'-'.join(triple)}{fn.ext})",
            filename=fn.filename,
            index_json="-".join(triple),
        )
    subdir = derive_subdir(index)
    if subdir is None or not is_subdir(subdir):
        raise SubdirMismatch(f"info/index.json names no valid subdir ({subdir!r})", filename=fn.filename)
    if index.get("noarch") and subdir != "noarch":
        raise SubdirMismatch(f"noarch package declares subdir {subdir!r}", filename=fn.filename, subdir=subdir)
    if expected_subdir is not None and expected_subdir != subdir:
        raise SubdirMismatch(
            f"{fn.filename} is a {subdir} package, not {expected_subdir}",
            filename=fn.filename,
            subdir=subdir,
            expected=expected_subdir,
        )
    record = {k: v for k, v in index.items() if k not in DROPPED_KEYS}
    record["subdir"] = subdir
    record.setdefault("depends", [])
    about = info.json("info/about.json") or {}
    check_tree(about, "about.json", fn.filename)
    security = info.json("info/security.json")
    check_tree(security, "security.json", fn.filename)
    paths = info.json("info/paths.json")
    return PackageMetadata(
        record=record,
        about=about if isinstance(about, dict) else {},
        run_exports=check_run_exports(normalise_run_exports(info.json("info/run_exports.json")), fn.filename),
        paths_summary=paths_summary(paths),
        security=security,
        files=file_list(paths, info.files.get("info/files")),
    )


def record_json(record: dict[str, Any]) -> str:
    """Deterministic compact JSON of a record (sorted keys)."""
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
