"""Build the labelled set for ``condavault cve accuracy`` from the real advisories in testdata.

    /work/venv/bin/python benchmarks/vulns_labels.py [--out benchmarks/vulns_labels.json]

The labels are read straight from the raw records with code of their own (no condavault matching code,
no rattler): ``packaging`` (PEP 440) for PyPI versions, a small OpenSSL-aware comparator for C
libraries. Two sets:

* ``pypi``: for every PyPI project of ``testdata/vulns/osv-pypi`` and every version that any of its
  records names (``versions`` lists, ``introduced`` / ``fixed`` / ``last_affected`` events), one
  metadata-only conda record under the project's conda-forge name (``torch`` -> ``pytorch``, ``redis``
  -> ``redis-py``, ``jupyter-server`` -> ``jupyter_server``, ``opencv-python`` -> ``py-opencv``; others
  are spelled as on PyPI). Its advisories are the OSV records whose explicit ``versions`` list holds
  that version (PyPA enumerates the affected releases: the list is the truth), plus NVD records that
  name the project's CPE and have no OSV record, read from their CPE ranges.
* ``c-libs``: tiny ``.conda`` builds of openssl, curl / libcurl, zlib, sqlite / libsqlite and libxml2 at
  chosen versions, uploaded through the normal ingest path. OpenSSL's advisories come from the OpenSSL
  CNA's CVE 5 records (``testdata/vulns/cve5/openssl``: one range per maintenance line, ``defaultStatus``
  unaffected; the one ``version X, lessThan X`` entry of CVE-2023-2650 means "X's line before X", as the
  advisory text says: "OpenSSL 3.1.0 is affected, fixed in 3.1.1"); curl, zlib and sqlite from the NVD
  CPE configurations (and, for CVE-2023-38545, curl's own CVE 5 record: 7.69.0 <= v < 8.4.0). libxml2
  has no advisory in testdata: its builds must stay clean.

Each entry says how to make its file (``kind``: ``package`` or ``record``) so the accuracy test and the
benchmark build exactly the labelled files.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
from pathlib import Path
from typing import Any

import yaml
from packaging.version import InvalidVersion, Version

TESTDATA = Path(os.environ.get("CONDAVAULT_TESTDATA", "/work/shared/testdata"))
OUT = Path(__file__).with_name("vulns_labels.json")
CHANNEL = "accuracy"
CONDA_NAME = {"torch": "pytorch", "redis": "redis-py", "jupyter-server": "jupyter_server", "opencv-python": "py-opencv"}
NVD_PRODUCTS = {  # CPE vendor:product -> PyPI project, for NVD records of the projects above
    "djangoproject:django": "django",
    "palletsprojects:flask": "flask",
    "palletsprojects:werkzeug": "werkzeug",
    "palletsprojects:jinja": "jinja2",
    "pocoo:jinja2": "jinja2",
    "python:urllib3": "urllib3",
    "urllib3:urllib3": "urllib3",
    "python-requests:requests": "requests",
    "python-pillow:pillow": "pillow",
    "numpy:numpy": "numpy",
    "scipy:scipy": "scipy",
    "pyyaml:pyyaml": "pyyaml",
    "lxml:lxml": "lxml",
    "google:tensorflow": "tensorflow",
    "linuxfoundation:pytorch": "torch",
    "cryptography_project:cryptography": "cryptography",
    "paramiko:paramiko": "paramiko",
    "tornadoweb:tornado": "tornado",
    "ipython:ipython": "ipython",
    "jupyter:notebook": "notebook",
    "jupyter:jupyter_server": "jupyter-server",
    "sqlalchemy:sqlalchemy": "sqlalchemy",
    "aiohttp:aiohttp": "aiohttp",
    "aio-libs:aiohttp": "aiohttp",
    "encode:httpx": "httpx",
    "encode:uvicorn": "uvicorn",
    "pypa:pip": "pip",
    "pypa:setuptools": "setuptools",
    "python:setuptools": "setuptools",
    "pypa:wheel": "wheel",
    "mlflow:mlflow": "mlflow",
    "gitpython_project:gitpython": "gitpython",
    "google:protobuf-python": "protobuf",
}
C_VERSIONS = {
    "openssl": [
        "0.9.8zh", "1.0.0t", "1.0.1", "1.0.1f", "1.0.1g", "1.0.1u", "1.0.2", "1.0.2k", "1.0.2u", "1.0.2zf",
        "1.0.2zg", "1.0.2zh", "1.0.2zk", "1.1.0", "1.1.0l", "1.1.1", "1.1.1k", "1.1.1n", "1.1.1s", "1.1.1t",
        "1.1.1u", "1.1.1w", "1.1.1za", "3.0.0", "3.0.1", "3.0.2", "3.0.6", "3.0.7", "3.0.8", "3.0.9", "3.0.12",
        "3.0.13", "3.0.14", "3.0.15", "3.0.16", "3.1.0", "3.1.1", "3.1.2", "3.1.4", "3.1.7", "3.1.8", "3.2.0",
        "3.2.1", "3.2.3", "3.2.4", "3.3.0", "3.3.2", "3.3.3", "3.4.0", "3.4.1", "3.5.0",
    ],
    "curl": ["7.29.0", "7.32.0", "7.61.0", "7.61.1", "7.68.0", "7.69.0", "8.3.0", "8.4.0", "8.8.0", "8.9.0",
             "8.9.1", "8.10.1"],
    "libcurl": ["7.61.0", "7.61.1", "8.3.0", "8.4.0", "8.9.0", "8.9.1"],
    "zlib": ["1.2.8", "1.2.11", "1.2.12", "1.2.13", "1.3", "1.3.1"],
    "sqlite": ["3.31.1", "3.33.0", "3.34.0", "3.45.3"],
    "libsqlite": ["3.33.0", "3.34.0", "3.46.0"],
    "libxml2": ["2.9.10", "2.9.14", "2.10.3", "2.11.5", "2.12.7", "2.13.5"],
}  # fmt: skip
C_SUBDIR = "linux-64"
# curl, zlib and sqlite: read by hand from the NVD CPE configurations in testdata (and curl's own records)
C_HAND = {
    # NVD api-2.0-multi: cpe:2.3:a:haxx:libcurl versionEndExcluding 7.61.1 (the CNA's CVE 5 "7.61.1
    # affected" names the fixed release, see curl's advisory: "affected versions: 7.15.4 to 7.61.0")
    "CVE-2018-14618": {"curl": (None, "7.61.1"), "libcurl": (None, "7.61.1")},
    # curl's CVE 5 record (cvelistV5): affected from 7.69.0, fixed in 8.4.0 (no NVD record in testdata)
    "CVE-2023-38545": {"curl": ("7.69.0", "8.4.0"), "libcurl": ("7.69.0", "8.4.0")},
    # NVD: haxx:libcurl versionStartIncluding 7.32.0, versionEndExcluding 8.9.1
    "CVE-2024-7264": {"curl": ("7.32.0", "8.9.1"), "libcurl": ("7.32.0", "8.9.1")},
    # NVD fkie-cad: zlib:zlib versionEndIncluding 1.2.12 (expressed here as < 1.2.13)
    "CVE-2022-37434": {"zlib": (None, "1.2.13")},
    # NVD 1.1 feed: sqlite:sqlite versionEndExcluding 3.34.0
    "CVE-2021-20223": {"sqlite": (None, "3.34.0"), "libsqlite": (None, "3.34.0")},
}


def _pep440(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _conda_ok(version: str) -> bool:
    """A version string condavault accepts in a file name (PyPI strings with local parts are skipped)."""
    return bool(re.fullmatch(r"[0-9][0-9A-Za-z._!]*", version)) and "-" not in version


def _load_yaml(path: str) -> Any:
    return yaml.load(Path(path).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _intervals(entry: dict[str, Any]) -> list[tuple[Version | None, Version | None, bool]]:
    """(start, end, end inclusive) of an OSV entry's ECOSYSTEM ranges, read with PEP 440."""
    out = []
    for rng in entry.get("ranges") or ():
        if rng.get("type") == "GIT":
            continue
        start: Version | None = None
        opened = False
        for event in rng.get("events") or ():
            if "introduced" in event:
                start, opened = (None if str(event["introduced"]) == "0" else _pep440(str(event["introduced"]))), True
            elif "fixed" in event or "last_affected" in event:
                end = _pep440(str(event.get("fixed", event.get("last_affected"))))
                out.append((start, end, "last_affected" in event))
                opened = False
        if opened:
            out.append((start, None, False))
    return out


def _inside(version: Version, intervals: list[tuple[Version | None, Version | None, bool]]) -> bool:
    return any(
        (lo is None or version >= lo) and (hi is None or (version <= hi if incl else version < hi))
        for lo, hi, incl in intervals
    )


def _osv() -> tuple[dict[str, set[str]], dict[tuple[str, str], set[str]], dict[str, set[str]], list[Any]]:
    """(project -> versions named, (project, version) -> affected record ids, record id -> its ids,
    [(project, record id, listed PEP 440 versions, intervals)] of the records that are not withdrawn)."""
    versions: dict[str, set[str]] = {}
    affected: dict[tuple[str, str], set[str]] = {}
    ids: dict[str, set[str]] = {}
    records: list[Any] = []
    for path in sorted(glob.glob(str(TESTDATA / "vulns/osv-pypi/*/*.yaml"))):
        rec = _load_yaml(path)
        ids[rec["id"]] = {rec["id"], *rec.get("aliases", [])}
        withdrawn = bool(rec.get("withdrawn"))  # not a vulnerability (its versions still become records)
        for entry in rec["affected"]:
            project = entry["package"]["name"].lower()
            named = versions.setdefault(project, set())
            for v in entry.get("versions") or ():
                named.add(str(v))
                if not withdrawn:
                    affected.setdefault((project, str(v)), set()).add(rec["id"])
            if not withdrawn:
                listed = {p for p in (_pep440(str(v)) for v in entry.get("versions") or ()) if p is not None}
                records.append((project, rec["id"], listed, _intervals(entry)))
            for rng in entry.get("ranges") or ():
                if rng.get("type") == "GIT":  # commit hashes, not versions
                    continue
                for event in rng.get("events") or ():
                    for key in ("introduced", "fixed", "last_affected"):
                        if key in event and str(event[key]) != "0":
                            named.add(str(event[key]))
    return versions, affected, ids, records


def _nvd_records() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted(glob.glob(str(TESTDATA / "vulns/nvd/**/*.json"), recursive=True)):
        doc = json.loads(Path(path).read_text())
        if "vulnerabilities" in doc:
            out += [v["cve"] for v in doc["vulnerabilities"]]
        elif "CVE_Items" in doc:
            for item in doc["CVE_Items"]:
                matches = []
                stack = list(item["configurations"]["nodes"])
                while stack:
                    node = stack.pop()
                    matches += [{**m, "criteria": m["cpe23Uri"]} for m in node.get("cpe_match", [])]
                    stack += node.get("children", [])
                out.append({"id": item["cve"]["CVE_data_meta"]["ID"], "matches": matches})
        else:
            out.append(doc)
    for rec in out:
        if "matches" not in rec:
            rec["matches"] = [
                m for conf in rec.get("configurations", []) for n in conf["nodes"] for m in n.get("cpeMatch", [])
            ]
    return out


def _in_cpe_range(version: Version, match: dict[str, Any]) -> bool:
    exact = match["criteria"].split(":")[5]
    bounds = [match.get(k) for k in ("versionStartIncluding", "versionStartExcluding",
                                     "versionEndIncluding", "versionEndExcluding")]  # fmt: skip
    if not any(bounds):
        return exact not in ("*", "-") and _pep440(exact) == version
    parsed = [None if b is None else _pep440(b) for b in bounds]
    si, se, ei, ee = parsed
    return not (
        (si is not None and version < si)
        or (se is not None and version <= se)
        or (ei is not None and version > ei)
        or (ee is not None and version >= ee)
    )


def pypi_labels() -> tuple[list[dict[str, Any]], list[str]]:
    """The ``pypi`` entries, and the files left out because a record contradicts itself about them: the
    version is inside the record's ranges but not in its explicit list (or its list names a version its
    ranges exclude). Such a version is not labelled either way."""
    versions, affected, ids, records = _osv()
    contradicted: set[tuple[str, Version]] = set()
    for project, _rid, listed, intervals in records:
        for version in versions[project]:
            pv = _pep440(version)
            if pv is not None and intervals and (pv in listed) != _inside(pv, intervals):
                contradicted.add((project, pv))
    osv_ids = {i.upper() for group in ids.values() for i in group}
    nvd: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for rec in _nvd_records():
        if rec["id"].upper() in osv_ids or rec.get("vulnStatus") == "Rejected":
            continue  # an OSV record describes it: its versions list is the truth
        for match in rec["matches"]:
            if not match.get("vulnerable", True):
                continue
            parts = match["criteria"].split(":")
            project = NVD_PRODUCTS.get(f"{parts[3]}:{parts[4]}")
            if project is not None:
                nvd.setdefault(project, []).append((rec["id"], match))
    listed: dict[tuple[str, Version], set[str]] = {}  # PEP 440 equality: "2.5" is "2.5.0"
    for (project, version), recs in affected.items():
        pv = _pep440(version)
        if pv is not None:
            listed.setdefault((project, pv), set()).update(recs)
    entries = []
    left_out = []
    for project in sorted(versions):
        name = CONDA_NAME.get(project, project)
        for version in sorted(v for v in versions[project] if _conda_ok(v)):
            pv = _pep440(version)
            if pv is None or (project, pv) in contradicted:
                left_out.append(f"{name} {version}")
                continue
            labelled = set(affected.get((project, version), ())) | (listed.get((project, pv), set()) if pv else set())
            for cve, match in nvd.get(project, ()):
                if pv is not None and _in_cpe_range(pv, match):
                    labelled.add(cve)
            entries.append(_entry("pypi", "record", name, version, "pyhd8ed1ab_0", "noarch", labelled, ".tar.bz2"))
    return entries, left_out


def _openssl_key(version: str) -> tuple[int, ...]:
    """OpenSSL order: 1.1.1 < 1.1.1a < ... < 1.1.1z < 1.1.1za < 1.1.2 (letters are numbers after the base)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)*)([a-z]*)", version)
    assert m is not None, version
    letters = tuple(ord(c) - 96 for c in m.group(2))
    return tuple(int(p) for p in m.group(1).split(".")) + (letters or (0,))


def _openssl_affected(version: str, entries: list[dict[str, Any]]) -> bool:
    key = _openssl_key(version)
    starts = {e["version"] for e in entries if e.get("lessThan") and e["lessThan"] != e["version"]}
    for e in entries:
        if e.get("status") != "affected":
            continue
        lo, hi, le = e["version"], e.get("lessThan"), e.get("lessThanOrEqual")
        if hi is None and le is None:
            if key == _openssl_key(lo):
                return True
            continue
        if hi is not None and hi == lo:  # "3.1.1 lessThan 3.1.1" beside lines with real starts: X's line
            assert starts, e
            lo = ".".join([*lo.split(".")[:-1], "0"])
        below = (hi is None or key < _openssl_key(hi)) and (le is None or key <= _openssl_key(le))
        if _openssl_key(lo) <= key and below:
            return True
    return False  # defaultStatus is "unaffected" in every OpenSSL record


def c_labels() -> list[dict[str, Any]]:
    openssl: list[tuple[str, list[dict[str, Any]]]] = []
    for path in sorted(glob.glob(str(TESTDATA / "vulns/cve5/openssl/*.json"))):
        rec = json.loads(Path(path).read_text())
        (entry,) = rec["containers"]["cna"]["affected"]
        assert entry.get("defaultStatus") == "unaffected", path
        openssl.append((rec["cveMetadata"]["cveId"], entry["versions"]))
    entries = []
    for name, versions in C_VERSIONS.items():
        for version in versions:
            labelled: set[str] = set()
            if name == "openssl":
                labelled = {cve for cve, ranges in openssl if _openssl_affected(version, ranges)}
            v = _pep440(version) if name != "openssl" else None
            for cve, by_name in C_HAND.items():
                if name in by_name and v is not None:
                    lo, hi = by_name[name]
                    if (lo is None or v >= Version(lo)) and v < Version(hi):
                        labelled.add(cve)
            entries.append(_entry("c-libs", "package", name, version, "h0_0", C_SUBDIR, labelled, ".conda"))
    return entries


def _entry(set_: str, kind: str, name: str, version: str, build: str, subdir: str, advisories: set[str],
           ext: str) -> dict[str, Any]:  # fmt: skip
    filename = f"{name}-{version}-{build}{ext}"
    return {
        "file": f"{CHANNEL}/{subdir}/{filename}",
        "set": set_,
        "kind": kind,
        "name": name,
        "version": version,
        "build": build,
        "subdir": subdir,
        "advisories": sorted(advisories),
    }


def build() -> dict[str, Any]:
    pypi, left_out = pypi_labels()
    files = pypi + c_labels()
    return {
        "left_out": left_out,
        "description": "condavault accuracy labels built by benchmarks/vulns_labels.py from testdata/vulns "
        "(OSV versions lists, NVD CPE configurations, OpenSSL CNA CVE 5 ranges); see its docstring",
        "goals": {"pypi": {"precision": 0.99, "recall": 0.99}, "c-libs": {"precision": 0.99, "recall": 0.98}},
        "files": files,
    }


def dumps(labels: dict[str, Any]) -> str:
    """JSON with one labelled file per line (readable, diffable)."""
    head = {k: v for k, v in labels.items() if k != "files"}
    lines = ",\n".join("  " + json.dumps(f, sort_keys=True, separators=(",", ":")) for f in labels["files"])
    return json.dumps(head, indent=1, sort_keys=True)[:-2] + ',\n "files": [\n' + lines + "\n ]\n}\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    labels = build()
    args.out.write_text(dumps(labels))
    per_set: dict[str, list[int]] = {}
    for f in labels["files"]:
        counts = per_set.setdefault(f["set"], [0, 0])
        counts[0] += 1
        counts[1] += len(f["advisories"])
    for name, (n, pairs) in sorted(per_set.items()):
        print(f"{name}: {n} files, {pairs} labelled (file, advisory) pairs")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
