"""Layering rules that code review alone misses: only ``channels/`` writes the records table, and
``packages/`` (reading archives) touches neither the database nor the web framework."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "condavault"
RECORD_WRITES = re.compile(
    r"(insert|update|delete)\(\s*Record\b|\bRecord\.__table__|table\(\s*Record\s*\)|\bput_records?\(|"
    r"\bimport_repodata\(|\bremove_records\(|\bcopy_records\("
)


def _modules(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "migrations" not in p.parts)


def test_only_channels_writes_the_records_table() -> None:
    offenders = []
    for path in _modules(SRC):
        rel = path.relative_to(SRC)
        if rel.parts[0] == "channels":
            continue
        text = path.read_text()
        for m in RECORD_WRITES.finditer(text):
            line = text[: m.start()].count("\n") + 1
            src_line = text.splitlines()[line - 1]
            if re.match(r"\s*(from|import|def)\b", src_line) or "rec_svc." in src_line or "records." in src_line:
                continue  # calling channels/ is the point; defining nothing here
            offenders.append(f"{rel}:{line}: {src_line.strip()}")
        tree = ast.parse(text)
        for node in ast.walk(tree):  # ORM writes: assigning attributes of Record rows, or new Record(...)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Record":
                offenders.append(f"{rel}:{node.lineno}: Record(...)")
    assert offenders == [], "only channels/ may write records:\n" + "\n".join(offenders)


def test_packages_is_pure() -> None:
    for path in _modules(SRC / "packages"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                mod = node.module
            elif isinstance(node, ast.Import):
                mod = node.names[0].name
            else:
                continue
            assert not mod.startswith(
                ("sqlalchemy", "fastapi", "starlette", "condavault.db", "condavault.channels", "condavault.context")
            ), f"{path.name} imports {mod}"


def test_callers_use_the_blob_store_protocol() -> None:
    """Every caller gets its store from ``storage.open_blob_store`` and types it as ``BlobStore``: the local
    folder's class (and its file paths) stay inside ``storage/``, so an S3 store works everywhere."""
    offenders = []
    for path in _modules(SRC):
        rel = path.relative_to(SRC)
        if rel.parts[0] == "storage":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "LocalBlobStore" in line or re.search(r"\bblobs\.(path|root)\b", line):
                offenders.append(f"{rel}:{n}: {line.strip()}")
    assert offenders == [], "use the BlobStore protocol (materialize/open/local_path):\n" + "\n".join(offenders)
