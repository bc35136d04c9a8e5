"""Reading a verified bundle's data files (``bundle import`` step 3b): the per-channel plans (records, removals,
patches; each record checked as an upload's is, each carried trust entry checked) and the vulnerability and
scanning payloads. Nothing here touches the database or the blob store."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from condavault.airgap import scanning as scanning_bundle
from condavault.airgap import vulns as vulns_bundle
from condavault.airgap.manifest import FileEntry, Opened, rejected
from condavault.errors import CondavaultError
from condavault.packages.filename import check_subdir, parse_filename
from condavault.packages.validation import check_record
from condavault.signing.carry import TrustEntry
from condavault.signing.models import STATUSES
from condavault.signing.trust import Outcome, is_signatures_entry


@dataclass
class ChannelPlan:
    target: str
    name: str
    spec: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    removed: list[tuple[str, str]] = field(default_factory=list)
    patches: dict[str, str | None] = field(default_factory=dict)


def parse_targets(opened: Opened, datas: dict[str, bytes]) -> tuple[list[ChannelPlan], Any, Any]:
    """The bundle's targets from its verified data files: one plan per channel (records checked as uploads
    are, removals, patches) and the vulnerability and scanning payloads, if carried."""
    m = opened.manifest
    entries = {f.path: f for f in m.files}

    def read(rel: str) -> bytes:
        if rel not in entries:
            raise rejected(f"{rel} is named by the manifest but not listed")
        if rel in datas:
            return datas[rel]
        data = opened.path_of(entries[rel]).read_bytes()  # verified earlier (a resumed run)
        if hashlib.sha256(data).hexdigest() != entries[rel].sha256:
            raise rejected(f"{rel}: sha256 differs from the manifest's (altered)", path=rel)
        return data

    plans: list[ChannelPlan] = []
    vpayload = spayload = None
    try:
        for target, spec in sorted(m.targets.items()):
            if spec.get("kind") == "vulns":
                vpayload = vulns_bundle.parse(spec, read)
                continue
            if spec.get("kind") == "scanning":
                spayload = scanning_bundle.parse(spec, read)
                continue
            if spec.get("kind") != "channel":
                raise rejected(f"unknown target kind {spec.get('kind')!r}")
            plan = ChannelPlan(target, str(spec["channel"]), spec)
            for line in read(spec["records_file"]).decode().splitlines():
                doc = json.loads(line)
                sd, fn = check_subdir(str(doc["subdir"])), str(doc["filename"])
                parse_filename(fn)
                record = json.loads(doc["record"])
                check_record(record, source="repodata", filename=fn)
                if doc.get("file"):
                    e = entries.get(doc["file"])
                    if e is None or e.sha256 != record.get("sha256") or e.size != record.get("size"):
                        raise rejected(f"{sd}/{fn}: its record does not match the file {doc['file']}")
                elif doc.get("has_blob"):
                    raise rejected(f"{sd}/{fn}: no file for a record with bytes")
                if doc.get("trust") is not None:
                    doc["trust"] = trust_entry(sd, fn, record, doc, entries)
                doc["record"] = record
                plan.records.append(doc)
            for line in read(spec["removed_file"]).decode().splitlines():
                if line:
                    sd, fn = json.loads(line).split("/", 1)
                    plan.removed.append((check_subdir(sd), fn))
            patches = json.loads(read(spec["patches_file"]))
            plan.patches = {check_subdir(k): (v if v is None else str(v)) for k, v in patches.items()}
            plans.append(plan)
    except CondavaultError as exc:
        if exc.code == "bundle_rejected":
            raise
        raise rejected(exc.message) from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise rejected(f"malformed data file ({exc!r})") from None
    return plans, vpayload, spayload


def trust_entry(
    sd: str, fn: str, record: dict[str, Any], doc: dict[str, Any], entries: dict[str, FileEntry]
) -> TrustEntry:
    """A record's carried trust from a bundle line, checked: a well-formed signatures entry, and a sidecar
    listed in the manifest whose sha256 is the record's ``attestations_sha256``."""
    t = doc["trust"]
    if not isinstance(t, dict):
        raise rejected(f"{sd}/{fn}: malformed trust entry")
    sigs = t.get("signatures")
    if sigs is not None and (not isinstance(sigs, str) or not is_signatures_entry(json.loads(sigs))):
        raise rejected(f"{sd}/{fn}: malformed signatures entry")
    signed = t.get("signed_record")
    if signed is not None and (
        not isinstance(signed, str) or len(signed) > 1024 * 1024 or not isinstance(json.loads(signed), dict)
    ):
        raise rejected(f"{sd}/{fn}: malformed signed record")
    sidecar = t.get("sidecar_sha256")
    size = None
    if sidecar is not None:
        path = doc.get("sidecar_file")
        e = entries.get(path) if isinstance(path, str) else None
        if e is None or e.sha256 != sidecar or record.get("attestations_sha256") != sidecar:
            raise rejected(f"{sd}/{fn}: its attestation sidecar does not match the record")
        size = e.size
    status = t.get("status")
    if status not in STATUSES:
        raise rejected(f"{sd}/{fn}: unknown signature status {status!r}")
    text = {k: (str(t[k])[:2000] if t.get(k) is not None else None) for k in ("method", "identity", "detail")}
    return TrustEntry(
        sd,
        fn,
        sigs,
        sidecar,
        size,
        Outcome(status, text["method"], text["identity"], text["detail"]),
        signed if sigs is not None else None,
    )
