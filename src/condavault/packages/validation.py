"""Strict checks of a package's metadata before it reaches repodata (conda-protocol.md §2.3).

One bad record must not break a client's view of a whole subdir: rattler refuses repodata whose
``depends`` is a string, whose ``timestamp`` is text, or whose dependency holds a NUL, and a database
refuses integers past its columns. :func:`check_record` validates a record -- an archive's
``info/index.json`` (``source="index.json"``) or one entry of an imported repodata
(``source="repodata"``, which tolerates the ``null`` fields real channels carry) -- and raises
:class:`~condavault.errors.InvalidIndexJson` naming the first offending field. Every string must be
valid UTF-8 without NUL; nesting and sizes are bounded; each ``depends``/``constrains`` entry (and
each run_exports entry) must parse as a MatchSpec with py-rattler's lenient parser, the one conda
clients' repodata goes through.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from typing import Any

from condavault.errors import InvalidIndexJson
from condavault.packages.filename import is_subdir

MAX_INDEX_JSON = 1024 * 1024  # bytes of info/index.json (real ones are a few KiB)
MAX_DEPENDS = 4096  # entries of depends / constrains (a big metapackage has ~500)
MAX_SPEC = 1024  # characters of one MatchSpec
MAX_STRING = 64 * 1024  # characters of any other string field
MAX_DEPTH = 16  # nesting of unknown fields (rattler's JSON parser stops at 128)
MAX_BUILD_NUMBER = 2**31 - 1  # the records table's column
MAX_TIMESTAMP = 253402300799999  # 9999-12-31 in milliseconds
MIN_INT, MAX_INT = -(2**63), 2**63 - 1  # any integer of a record (shards are msgpack: 64 bits at most)
DB_LENGTHS = {"name": 100, "version": 100, "build": 200}
NOARCH = ("python", "generic")
DIGESTS = {"md5": 32, "sha256": 64}
_HEX = re.compile(r"[0-9a-fA-F]+")
LIST_FIELDS = ("depends", "constrains")
RUN_EXPORT_KEYS = ("weak", "strong", "weak_constrains", "strong_constrains", "noarch")


def _fail(field: str, problem: str, filename: str | None) -> InvalidIndexJson:
    where = f"{filename}: " if filename else ""
    return InvalidIndexJson(f"{where}field {field!r} {problem}", field=field, filename=filename)


@lru_cache(maxsize=65536)
def _spec_error(spec: str) -> str | None:
    from rattler import MatchSpec

    try:
        MatchSpec(spec, strict=False)
    except Exception as exc:  # rattler raises its own exception types
        return str(exc).split("\n", 1)[0][:200]
    return None


def check_text(value: Any, field: str, filename: str | None, *, limit: int = MAX_STRING) -> str:
    if not isinstance(value, str):
        raise _fail(field, f"must be a string, not {type(value).__name__}", filename)
    if len(value) > limit:
        raise _fail(field, f"is longer than {limit} characters", filename)
    if "\x00" in value:
        raise _fail(field, "contains a NUL character", filename)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _fail(field, "is not valid Unicode (a lone surrogate)", filename) from None
    return value


def check_specs(value: Any, field: str, filename: str | None, *, nullable: bool = False) -> list[str]:
    """A list of MatchSpec strings (``null`` is ``[]`` for legacy repodata when ``nullable``)."""
    if value is None and nullable:
        return []
    if not isinstance(value, list):
        raise _fail(field, f"must be a list of MatchSpec strings, not {type(value).__name__}", filename)
    if len(value) > MAX_DEPENDS:
        raise _fail(field, f"has more than {MAX_DEPENDS} entries", filename)
    for i, spec in enumerate(value):
        check_text(spec, f"{field}[{i}]", filename, limit=MAX_SPEC)
        problem = _spec_error(spec)
        if problem is not None:
            raise _fail(f"{field}[{i}]", f"is not a valid MatchSpec ({spec!r}: {problem})", filename)
    return value


def check_tree(value: Any, field: str, filename: str | None, depth: int = 0) -> None:
    """Any JSON value: bounded nesting, and every string (keys too) valid and NUL-free."""
    if depth > MAX_DEPTH:
        raise _fail(field, f"is nested deeper than {MAX_DEPTH} levels", filename)
    if isinstance(value, str):
        check_text(value, field, filename)
    elif isinstance(value, dict):
        for k, v in value.items():
            check_text(k, field, filename, limit=1024)
            check_tree(v, field, filename, depth + 1)
    elif isinstance(value, list):
        for v in value:
            check_tree(v, field, filename, depth + 1)
    elif isinstance(value, float) and not math.isfinite(value):
        raise _fail(field, "is not a finite number", filename)
    elif isinstance(value, int) and not MIN_INT <= value <= MAX_INT:  # what msgpack (shards) and clients hold
        raise _fail(field, "is an integer outside the signed 64-bit range", filename)


def _int_in(value: Any, field: str, low: int, high: int, filename: str | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(field, f"must be an integer, not {type(value).__name__}", filename)
    if not low <= value <= high:
        raise _fail(field, f"must be between {low} and {high}", filename)
    return value


def check_record(record: dict[str, Any], *, source: str = "index.json", filename: str | None = None) -> dict[str, Any]:
    """Validate ``record`` (see the module docstring) and return it; the one change made is an old
    index.json's digit-string ``build_number`` becoming an int."""
    legacy = source == "repodata"
    for key in ("name", "version", "build"):
        value = record.get(key)
        if key == "build" and value == "":
            continue  # empty builds exist in old conda-forge repodata
        text = check_text(value, key, filename, limit=DB_LENGTHS[key])
        if not text.strip():
            raise _fail(key, "must not be empty", filename)
    bn = record.get("build_number", 0)
    if not legacy and isinstance(bn, str) and bn.isdigit() and len(bn) < 12:
        bn = record["build_number"] = int(bn)  # old index.json files
    _int_in(bn, "build_number", 0, MAX_BUILD_NUMBER, filename)
    for key in LIST_FIELDS:
        if key in record:
            check_specs(record[key], key, filename, nullable=legacy)
    if record.get("subdir") is not None:  # absent or null in legacy packages: derived from platform/arch
        sd = check_text(record["subdir"], "subdir", filename, limit=32)
        if not is_subdir(sd):
            raise _fail("subdir", f"is not a valid subdir name ({sd!r})", filename)
    ts = record.get("timestamp")
    if ts is not None:
        _int_in(ts, "timestamp", 0, MAX_TIMESTAMP, filename)
    noarch = record.get("noarch")
    if noarch is not None and noarch is not False and not (noarch is True or noarch in NOARCH):
        raise _fail("noarch", f"must be one of {', '.join(NOARCH)} (or true for legacy packages)", filename)
    for key in ("track_features", "features"):
        value = record.get(key)
        if value is not None and not isinstance(value, str | list):
            raise _fail(key, "must be a string (or a list of strings)", filename)
    if "size" in record and record["size"] is not None:
        _int_in(record["size"], "size", 0, 2**62, filename)
    for key, length in DIGESTS.items():  # an imported record's checksums (index.json carries none)
        value = record.get(key)
        if value is not None and not (isinstance(value, str) and len(value) == length and _HEX.fullmatch(value)):
            raise _fail(key, f"must be {length} hexadecimal digits", filename)
    for key, value in record.items():
        check_tree(value, key, filename)
        if isinstance(key, str) and len(key) > 256:
            raise _fail(key[:40], "is a key longer than 256 characters", filename)
    return record


def check_run_exports(run_exports: dict[str, Any], filename: str | None) -> dict[str, Any]:
    for key, value in run_exports.items():
        check_specs(value, f"run_exports.{key}", filename)
    return run_exports


def parse_index_json(raw: bytes, filename: str | None) -> Any:
    """Decode ``info/index.json`` with a size bound (nesting is bounded by :func:`check_record`)."""
    if len(raw) > MAX_INDEX_JSON:
        raise InvalidIndexJson(
            f"{filename}: info/index.json is larger than {MAX_INDEX_JSON} bytes", field="index.json", filename=filename
        )
    try:
        return json.loads(raw)
    except RecursionError:
        raise InvalidIndexJson(
            f"{filename}: info/index.json is nested too deeply", field="index.json", filename=filename
        ) from None
