"""Every ``extra=`` of a log call in ``src/`` is a dict literal whose keys are not reserved ``LogRecord``
attributes (``Logger.makeRecord`` raises ``KeyError`` for ``created``, ``name``, ``message`` ...), and the
production JSON formatter renders nested fields as JSON."""

from __future__ import annotations

import ast
import json
import logging
from pathlib import Path

from condavault.logging import JsonFormatter

SRC = Path(__file__).resolve().parents[2] / "src" / "condavault"
LOG_METHODS = {"debug", "info", "warning", "warn", "error", "exception", "critical", "log"}
RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def _bad_extras(tree: ast.AST) -> list[str]:
    bad = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in LOG_METHODS:
            continue
        for kw in node.keywords:
            if kw.arg != "extra":
                continue
            if not isinstance(kw.value, ast.Dict):
                bad.append(f"line {node.lineno}: extra= is not a dict literal (its keys cannot be checked)")
                continue
            for key in kw.value.keys:
                if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
                    bad.append(f"line {node.lineno}: extra= key is not a string literal")
                elif key.value in RESERVED:
                    bad.append(f"line {node.lineno}: extra= key {key.value!r} is a reserved LogRecord attribute")
    return bad


def test_no_reserved_or_dynamic_extra_keys_in_src() -> None:
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        problems += [f"{path.relative_to(SRC)} {p}" for p in _bad_extras(ast.parse(path.read_text(), str(path)))]
    assert problems == []


def test_the_checker_catches_the_sync_report_bug() -> None:
    code = "log.info('done', extra=report.to_dict())\nlog.info('x', extra={'created': 1, 'ok': 2})\n"
    assert len(_bad_extras(ast.parse(code))) == 2


def test_json_formatter_keeps_nested_fields() -> None:
    logger = logging.getLogger("condavault.test")
    record = logger.makeRecord(
        "condavault.test", logging.INFO, __file__, 1, "sync done", (), None, extra={"sync": {"created": 3, "x": [1]}}
    )
    out = json.loads(JsonFormatter().format(record))
    assert out["msg"] == "sync done" and out["sync"] == {"created": 3, "x": [1]}
    odd = logger.makeRecord("condavault.test", logging.INFO, __file__, 1, "odd", (), None, extra={"m": {(1, 2): 3}})
    assert json.loads(JsonFormatter().format(odd))["m"] == "{(1, 2): 3}"


def test_test_servers_log_like_serve_and_catch_logging_errors(tmp_path: Path) -> None:
    """The test servers' logging is serve's (JSON at INFO) and a broken log call is recorded (the autouse
    ``_no_logging_errors`` fixture then fails the test), whether it fails in a handler or in makeRecord."""
    from tests.support.server import LOGGING_ERRORS, production_logging

    from condavault.config import load_settings

    production_logging(load_settings(data_dir=tmp_path))
    root = logging.getLogger()
    assert root.level == logging.INFO and isinstance(root.handlers[0].formatter, JsonFormatter)
    log = logging.getLogger("condavault.test")
    log.info("two values %s %s", 1)  # the handler's "--- Logging error ---"
    try:
        log.info("reserved", extra={"created": 1})
    except KeyError:
        log.exception("job failed")  # what the job runner does with it
    assert len(LOGGING_ERRORS) == 2, LOGGING_ERRORS
    LOGGING_ERRORS.clear()
