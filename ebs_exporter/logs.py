"""Log lines in the Prometheus ecosystem's shape: logfmt (the default) or one JSON object per line.

Both carry the same keys: `ts` (RFC 3339, UTC, milliseconds), `level` (debug, info, warn,
error), `logger`, `caller` (file:line), `msg`, and `exc` when an exception is logged. The
standard library's logging with a small formatter does this; a structured-logging library
would add a dependency to the privileged pod for the same few lines.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING, "error": logging.ERROR}
FORMATS = ("logfmt", "json")
_LEVEL_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn", logging.ERROR: "error"}
# A logfmt value needs quotes when it is empty or holds a space, '=', '"' or a control character.
_NEEDS_QUOTES = re.compile(r'[\s="\x00-\x1f\x7f]|^$')
_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _level(record: logging.LogRecord) -> str:
    if record.levelno >= logging.ERROR:
        return "error"
    return _LEVEL_NAMES.get(record.levelno, "debug" if record.levelno < logging.INFO else "warn")


def _timestamp(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def fields(record: logging.LogRecord) -> dict[str, str]:
    out = {
        "ts": _timestamp(record.created),
        "level": _level(record),
        "logger": record.name,
        "caller": f"{os.path.basename(record.pathname)}:{record.lineno}",
        "msg": record.getMessage(),
    }
    if record.exc_info:
        out["exc"] = logging.Formatter().formatException(record.exc_info)
    return out


def logfmt_value(value: str) -> str:
    if not _NEEDS_QUOTES.search(value):
        return value
    escaped = "".join(_ESCAPES.get(c, c if c >= " " else f"\\u{ord(c):04x}") for c in value)
    return f'"{escaped}"'


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={logfmt_value(v)}" for k, v in fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(fields(record), ensure_ascii=False)


def configure(level: str = "info", fmt: str = "logfmt") -> None:
    """Replaces the root logger's handlers with one writing to stderr in `fmt`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else LogfmtFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
