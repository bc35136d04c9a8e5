"""Structured (JSON lines) or plain logs."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_STD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra=`` fields become keys (nested dicts and lists stay JSON).

    Never pass a reserved ``LogRecord`` attribute (``name``, ``msg``, ``args``, ``created``, ``module``,
    ``message`` ...) in ``extra=``: ``Logger.makeRecord`` raises ``KeyError`` for those. Nest dynamic
    dicts under one key instead (``extra={"sync": report}``); ``tests/unit/test_logging_calls.py`` checks.
    """

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for k, v in record.__dict__.items():
            if k not in _STD and not k.startswith("_"):
                out[k] = v if isinstance(v, str | int | float | bool | type(None) | dict | list) else repr(v)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        try:
            return json.dumps(out, default=repr)
        except (TypeError, ValueError):  # e.g. a nested dict with non-string keys
            return json.dumps({k: v if not isinstance(v, dict | list) else repr(v) for k, v in out.items()})


def setup_logging(fmt: str = "json", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
