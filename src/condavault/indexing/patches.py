"""Repodata patch instructions, applied record by record with conda-index's semantics.

conda-index (``_apply_instructions``) applies, in order: ``packages`` entries (keyed by ``.tar.bz2``
names, and the same entries again to the same-stem ``.conda``), ``packages.conda`` entries, then
``revoke`` and ``remove``. Entries only touch filenames that exist; each listed key replaces the
record's value (dicts merge recursively, lists are replaced, ``null`` stores null, new keys are
added); ``revoke`` sets ``revoked: true`` and appends ``package_has_been_revoked`` to ``depends``;
``remove`` hides the record (both formats) and lists its filename under ``removed``.
Applying per record gives the same result as applying to the whole repodata at once, which is what
lets the indexer patch only the records that changed.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any

from condavault.errors import InvalidIndexJson, InvalidRequest
from condavault.packages.validation import check_record

V1, V2 = ".tar.bz2", ".conda"


def _merge(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)
    return base


# what a patch entry is checked against: any record it can touch holds at least these
_PROBE = {"name": "probe", "version": "0", "build": "0", "build_number": 0}


def _check_entry(key: str, filename: Any, patch: Any) -> None:
    """A patch entry must leave a record that passes the rules every record passes (``check_record``):
    a patch is how a channel writer could otherwise serve a ``depends`` string, or an integer msgpack
    cannot encode, that breaks the subdir for every client."""
    if not isinstance(filename, str) or not isinstance(patch, dict):
        raise InvalidRequest(f"{key!r} must map filenames to objects", code="invalid_patch_instructions")
    try:
        check_record(_merge(dict(_PROBE), patch), source="repodata", filename=filename)
    except InvalidIndexJson as exc:
        raise InvalidRequest(
            f"patch of {key}[{filename!r}]: {exc.message}",
            code="invalid_patch_instructions",
            filename=filename,
            field=exc.details.get("field"),
        ) from None


@dataclass(frozen=True)
class PatchSet:
    packages: dict[str, dict[str, Any]] = field(default_factory=dict)
    packages_conda: dict[str, dict[str, Any]] = field(default_factory=dict)
    remove: frozenset[str] = frozenset()
    revoke: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, data: Any) -> PatchSet:
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise InvalidRequest("patch instructions must be a JSON object", code="invalid_patch_instructions")
        version = data.get("patch_instructions_version", 1)
        if version not in (1, 2):
            raise InvalidRequest(
                f"patch_instructions_version {version} is not supported (1 or 2)", code="invalid_patch_instructions"
            )
        for key in ("packages", "packages.conda"):
            entries = data.get(key) or {}
            if not isinstance(entries, dict):
                raise InvalidRequest(f"{key!r} must be an object", code="invalid_patch_instructions")
            for filename, patch in entries.items():
                _check_entry(key, filename, patch)
        for key in ("remove", "revoke"):
            names = data.get(key) or []
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise InvalidRequest(f"{key!r} must be a list of filenames", code="invalid_patch_instructions")
        return cls(
            packages=dict(data.get("packages") or {}),
            packages_conda=dict(data.get("packages.conda") or {}),
            remove=frozenset(data.get("remove") or ()),
            revoke=frozenset(data.get("revoke") or ()),
        )

    @classmethod
    def from_text(cls, text: str | None) -> PatchSet:
        return cls.parse(json.loads(text)) if text else cls()

    def __bool__(self) -> bool:
        return bool(self.packages or self.packages_conda or self.remove or self.revoke)

    def touches(self, filename: str) -> bool:
        twin = filename[: -len(V2)] + V1 if filename.endswith(V2) else filename
        return any(
            fn in coll
            for fn in {filename, twin}
            for coll in (self.packages, self.packages_conda, self.remove, self.revoke)
        )

    def apply(self, filename: str, record: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Return ``(patched record, removed)``; the input record is not modified."""
        if not self or not self.touches(filename):
            return record, False
        rec = copy.deepcopy(record)
        is_conda = filename.endswith(V2)
        twin = filename[: -len(V2)] + V1 if is_conda else filename
        if twin in self.packages:
            _merge(rec, self.packages[twin])
        if is_conda and filename in self.packages_conda:
            _merge(rec, self.packages_conda[filename])
        if filename in self.revoke or (is_conda and twin in self.revoke):
            rec["revoked"] = True
            rec["depends"] = [*rec.get("depends", []), "package_has_been_revoked"]
        removed = filename in self.remove or (is_conda and twin in self.remove)
        return rec, removed


def apply_to_repodata(repodata: dict[str, Any], patches: PatchSet) -> dict[str, Any]:
    """Patch a whole repodata dict (used by tests and metadata-only imports)."""
    out: dict[str, Any] = {k: v for k, v in repodata.items() if k not in ("packages", "packages.conda")}
    removed = set(repodata.get("removed", []))
    for key in ("packages", "packages.conda"):
        out[key] = {}
        for fn, rec in repodata.get(key, {}).items():
            patched, gone = patches.apply(fn, rec)
            if gone:
                removed.add(fn)
            else:
                out[key][fn] = patched
    out["removed"] = sorted(removed)
    return out
