"""Structured logging on stderr: one ``key=value`` line (or one JSON object) per record.

Both roles log through it. Loggers are named ``clickacall.relay...`` and ``clickacall.control...``; context goes in ``extra`` or in a
:class:`ContextAdapter` (the allocation or call id on every line)::

    log = ContextAdapter(logging.getLogger("clickacall.relay.turn"), alloc="a1b2")
    log.info("allocated", extra={"client": "203.0.113.x", "lifetime": 600})

gives::

    ts=2025-01-01T12:00:00.000Z level=info logger=clickacall.relay.turn worker=0 pid=4242 msg=allocated alloc=a1b2 client=203.0.113.x lifetime=600

This module formats what it is given and adds no address of its own: callers pass client and
peer addresses already truncated unless the operator opted in with ``--log-full-ips``.
Each line carries the worker index (``main`` in the supervisor) and the process id; a worker
process calls :func:`set_worker` once after it starts.
"""

from __future__ import annotations

import json as _json
import logging
import os
import sys
import time
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

ROOT_LOGGER = "clickacall"

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
    "worker",
}

_worker = "main"


def set_worker(index: int | str) -> None:
    """Tag this process's lines with ``worker=index``. Call once in each worker process."""
    global _worker
    _worker = str(index)


class _WorkerFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "worker"):  # keep a worker given in ``extra``
            record.worker = _worker
        return True


def _timestamp(created: float) -> str:
    seconds = int(created)
    millis = int((created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _fields(record: logging.LogRecord) -> dict[str, object]:
    out: dict[str, object] = {
        "ts": _timestamp(record.created),
        "level": record.levelname.lower(),
        "logger": record.name,
        "worker": getattr(record, "worker", _worker),
        "pid": record.process if record.process is not None else os.getpid(),
        "msg": record.getMessage(),
    }
    for key, value in vars(record).items():
        if key not in _STANDARD and not key.startswith("_"):
            out[key] = value
    if record.exc_info and record.exc_info[0] is not None:
        out["exc"] = logging.Formatter().formatException(record.exc_info)
    if record.stack_info:
        out["stack"] = record.stack_info
    return out


def _kv_value(value: object) -> str:
    text = value if isinstance(value, str) else str(value)
    if text and not any(c in text for c in ' ="\\\n\r\t') and text.isprintable():
        return text
    return _json.dumps(text, ensure_ascii=False)


class KeyValueFormatter(logging.Formatter):
    """``ts=... level=info logger=... worker=0 pid=42 msg="..." key=value ...`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{k}={_kv_value(v)}" for k, v in _fields(record).items())


class JsonFormatter(logging.Formatter):
    """One JSON object per line with the same fields as :class:`KeyValueFormatter`."""

    def format(self, record: logging.LogRecord) -> str:
        return _json.dumps(_fields(record), ensure_ascii=False, default=str)


class ContextAdapter(logging.LoggerAdapter[logging.Logger]):
    """A logger that adds fixed fields (e.g. ``alloc=...``) to every record it emits."""

    def __init__(self, logger: logging.Logger, **context: object) -> None:
        super().__init__(logger, context)

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra: Mapping[str, object] = kwargs.get("extra") or {}
        kwargs["extra"] = {**(self.extra or {}), **extra}
        return msg, kwargs


_handler: logging.Handler | None = None


def setup_logging(
    level: str = "info",
    *,
    json: bool = False,
    stream: TextIO | None = None,
    also: tuple[str, ...] = (),
) -> None:
    """Send log records to ``stream`` (stderr) in key=value or JSON-lines form: the one logging
    setup of both roles (the relay node and the control plane).

    ``level`` ("debug", "info", "warning", "error") applies to the ``clickacall`` loggers and
    to the loggers named in ``also`` (the control plane's HTTP server, ``uvicorn``); other
    libraries (asyncio, uvloop) log warnings and above. Calling it again replaces the earlier
    setup, so a worker process may call it after fork.
    """
    global _handler
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if json else KeyValueFormatter())
    handler.addFilter(_WorkerFilter())
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in (ROOT_LOGGER, *also):
        logging.getLogger(name).setLevel(numeric)
    logging.captureWarnings(True)
    _handler = handler
