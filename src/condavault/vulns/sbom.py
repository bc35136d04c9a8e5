"""CycloneDX 1.5 JSON documents with ``vulnerabilities`` for package files and solved environments.

Components are conda packages with ``pkg:conda`` purls; one vulnerability entry is written per
(advisory, curation status), its ``analysis.state`` derived from the status:

=========  ===============
reported   in_triage
active     exploitable
mitigated  resolved
cleared    not_affected
disputed   false_positive
=========  ===============
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from condavault import __version__
from condavault.vulns.advisory import Advisory

ANALYSIS = {
    "reported": "in_triage",
    "active": "exploitable",
    "mitigated": "resolved",
    "cleared": "not_affected",
    "disputed": "false_positive",
}
METHODS = {"2.0": "CVSSv2", "3.0": "CVSSv3", "3.1": "CVSSv31", "4.0": "CVSSv4"}


def severity(score: float | None) -> str:
    if score is None:
        return "unknown"
    if score == 0:
        return "none"
    if score < 4:
        return "low"
    if score < 7:
        return "medium"
    if score < 9:
        return "high"
    return "critical"


def purl(name: str, version: str, build: str, subdir: str, channel: str | None = None) -> str:
    qualifiers = [f"build={quote(build)}", f"subdir={quote(subdir)}"]
    if channel:
        qualifiers.append(f"channel={quote(channel)}")
    return f"pkg:conda/{quote(name)}@{quote(version)}?" + "&".join(qualifiers)


def component(pkg: Mapping[str, Any]) -> dict[str, Any]:
    """A CycloneDX component for a package dict (name, version, build, subdir, [channel, sha256, license])."""
    ref = purl(pkg["name"], pkg["version"], pkg.get("build", ""), pkg.get("subdir", ""), pkg.get("channel"))
    comp: dict[str, Any] = {
        "type": "library",
        "bom-ref": ref,
        "name": pkg["name"],
        "version": pkg["version"],
        "purl": ref,
        "properties": [
            {"name": "conda:build", "value": pkg.get("build", "")},
            {"name": "conda:subdir", "value": pkg.get("subdir", "")},
            {"name": "conda:filename", "value": pkg.get("filename", "")},
        ],
    }
    if pkg.get("channel"):
        comp["properties"].append({"name": "conda:channel", "value": pkg["channel"]})
    if pkg.get("sha256"):
        comp["hashes"] = [{"alg": "SHA-256", "content": pkg["sha256"]}]
    if pkg.get("license"):
        comp["licenses"] = [{"license": {"name": str(pkg["license"])}}]
    return comp


def _source(advisory_id: str) -> dict[str, str]:
    if advisory_id.startswith("CVE-"):
        return {"name": "NVD", "url": f"https://nvd.nist.gov/vuln/detail/{advisory_id}"}
    if advisory_id.startswith("GHSA-"):
        return {"name": "GitHub", "url": f"https://github.com/advisories/{advisory_id}"}
    return {"name": "OSV", "url": f"https://osv.dev/vulnerability/{advisory_id}"}


def vulnerabilities(
    links: Iterable[tuple[str, Mapping[str, Any]]], advisories: Mapping[str, Advisory]
) -> list[dict[str, Any]]:
    """``links`` are (component bom-ref, link dict with advisory/status/status_reason)."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for ref, link in links:
        key = (link["advisory"], link["status"])
        entry = groups.get(key)
        if entry is None:
            adv = advisories.get(link["advisory"])
            entry = {
                "bom-ref": f"{link['advisory']}#{link['status']}",
                "id": link["advisory"],
                "source": _source(link["advisory"]),
                "ratings": [
                    {
                        "source": {"name": s.source or _source(link["advisory"])["name"]},
                        "score": s.score,
                        "severity": severity(s.score),
                        "method": METHODS.get(s.version, "other"),
                        "vector": s.vector,
                    }
                    for s in (adv.scores if adv else ())
                ],
                "description": adv.summary if adv else "",
                "references": [{"id": alias, "source": _source(alias)} for alias in (adv.aliases if adv else ())],
                "affects": [],
                "analysis": {"state": ANALYSIS.get(link["status"], "in_triage")},
            }
            if adv and adv.published:
                entry["published"] = adv.published
            if link.get("status_reason"):
                entry["analysis"]["detail"] = link["status_reason"]
            groups[key] = entry
        if not any(a["ref"] == ref for a in entry["affects"]):
            entry["affects"].append({"ref": ref})
    return list(groups.values())


def document(
    packages: list[Mapping[str, Any]],
    links: Iterable[tuple[str, Mapping[str, Any]]],
    advisories: Mapping[str, Advisory],
    *,
    root: Mapping[str, Any] | None = None,
    dependencies: Mapping[str, list[str]] | None = None,
    name: str = "environment",
) -> dict[str, Any]:
    """A CycloneDX 1.5 BOM. ``root`` becomes ``metadata.component`` (a package file's SBOM)."""
    comps = [component(p) for p in packages]
    meta_component = (
        component(root) if root is not None else {"type": "application", "bom-ref": f"env:{name}", "name": name}
    )
    bom: dict[str, Any] = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid4()}",
        "version": 1,
        "metadata": {
            "timestamp": datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
            "tools": {"components": [{"type": "application", "name": "condavault", "version": __version__}]},
            "component": meta_component,
        },
        "components": [c for c in comps if c["bom-ref"] != meta_component["bom-ref"]],
        "vulnerabilities": vulnerabilities(links, advisories),
    }
    if dependencies is not None:
        refs = {c["bom-ref"] for c in comps} | {meta_component["bom-ref"]}
        bom["dependencies"] = [
            {"ref": ref, "dependsOn": sorted({d for d in deps if d in refs and d != ref})}
            for ref, deps in dependencies.items()
            if ref in refs
        ]
    return bom


def validate(bom: Mapping[str, Any]) -> list[str]:
    """Structural checks of a CycloneDX 1.5 document (the fields and references this module writes)."""
    problems: list[str] = []
    if bom.get("bomFormat") != "CycloneDX":
        problems.append("bomFormat must be CycloneDX")
    if bom.get("specVersion") != "1.5":
        problems.append("specVersion must be 1.5")
    if not str(bom.get("serialNumber", "")).startswith("urn:uuid:"):
        problems.append("serialNumber must be a urn:uuid")
    refs: set[str] = set()
    meta = bom.get("metadata", {}).get("component")
    for comp in [*(bom.get("components") or []), *([meta] if meta else [])]:
        for key in ("type", "name", "bom-ref"):
            if not comp.get(key):
                problems.append(f"component without {key}: {comp}")
        if comp.get("bom-ref") in refs:
            problems.append(f"duplicate bom-ref {comp.get('bom-ref')}")
        refs.add(comp.get("bom-ref"))
        if "purl" in comp and not str(comp["purl"]).startswith("pkg:conda/"):
            problems.append(f"bad purl {comp['purl']}")
    for vuln in bom.get("vulnerabilities") or []:
        if not vuln.get("id"):
            problems.append("vulnerability without id")
        for a in vuln.get("affects") or []:
            if a.get("ref") not in refs:
                problems.append(f"{vuln.get('id')} affects unknown ref {a.get('ref')}")
        for r in vuln.get("ratings") or []:
            if r.get("method") not in ("CVSSv2", "CVSSv3", "CVSSv31", "CVSSv4", "OWASP", "SSVC", "other"):
                problems.append(f"bad rating method {r.get('method')}")
            if r.get("severity") not in ("critical", "high", "medium", "low", "info", "none", "unknown"):
                problems.append(f"bad severity {r.get('severity')}")
        state = (vuln.get("analysis") or {}).get("state")
        if state not in (None, *ANALYSIS.values(), "resolved_with_pedigree"):
            problems.append(f"bad analysis state {state}")
    for dep in bom.get("dependencies") or []:
        if dep.get("ref") not in refs:
            problems.append(f"dependency of unknown ref {dep.get('ref')}")
    return problems
