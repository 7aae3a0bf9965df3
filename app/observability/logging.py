"""JSON log lines. One line per request is written by the request middleware.

What is logged is decided by the call sites: never a prompt, a reply or a credential. The
formatter only serialises the record and the ``extra`` fields it was given.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
import time
from types import TracebackType
from typing import Any

import orjson

from app.scrub import scrub

LOGGER_NAME = "orchestrators"
ACCESS_LOGGER = f"{LOGGER_NAME}.access"

# Attributes every LogRecord has; anything else on a record came from `extra=` and is emitted.
_RESERVED = frozenset(vars(logging.LogRecord("x", 0, "x", 0, "x", None, None))) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's ANSI-coloured duplicate of the message
}


def _where(tb: TracebackType | None) -> str | None:
    frame = None
    while tb is not None:
        frame, tb = tb, tb.tb_next
    if frame is None:
        return None
    code = frame.tb_frame.f_code
    return f"{code.co_filename.rsplit('/', 1)[-1]}:{frame.tb_lineno} in {code.co_name}"


def _scrubbed(record: logging.LogRecord, payload: dict[str, Any]) -> dict[str, Any]:
    """The line's fields through the service's scrubber. The call sites log no request data, but
    libraries' records (and a mistake) may: a credential never reaches the log. The access log's
    fields are built by the request middleware from route templates, statuses and sanitised ids,
    one line per request: they skip it."""
    if record.name == ACCESS_LOGGER:
        return payload
    cleaned: dict[str, Any] = scrub(payload, pii=False)
    return cleaned


class JsonFormatter(logging.Formatter):
    """Format a record as one JSON object: time, level, logger, message and the extra fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                payload[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            # The type and where it was raised, not the message or the traceback text: those can
            # carry request data (a prompt, a token) into the logs.
            payload["exc_type"] = record.exc_info[0].__name__
            payload["exc_where"] = _where(record.exc_info[2])
        return orjson.dumps(_scrubbed(record, payload), default=str).decode()


class PlainFormatter(logging.Formatter):
    """Human-readable lines for development (ORCH_LOG_JSON=0), extras appended as key=value."""

    def format(self, record: logging.LogRecord) -> str:
        fields = _scrubbed(
            record,
            {
                "message": record.getMessage(),
                **{k: v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")},
            },
        )
        base = f"{self.formatTime(record)} {record.levelname:<7} {record.name}: {fields.pop('message')}"
        extras = [f"{key}={value}" for key, value in fields.items()]
        return base + (" " + " ".join(extras) if extras else "")


class BufferedStdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Log lines to stdout through a 64 KiB buffer. Access-log lines (one per request) are flushed
    every quarter second by a daemon thread and at shutdown; every other line is flushed at once.

    A flush per line is a system call per request; this keeps the access log off the hot path
    (a crash can lose up to a quarter second of access lines, never anything else).
    """

    FLUSH_EVERY_SEC = 0.25

    def __init__(self) -> None:
        raw = io.FileIO(os.dup(sys.stdout.fileno()), "w")
        super().__init__(io.TextIOWrapper(io.BufferedWriter(raw, buffer_size=1 << 16), encoding="utf-8"))
        threading.Thread(target=self._flush_forever, name="log-flush", daemon=True).start()

    def _flush_forever(self) -> None:
        while True:
            time.sleep(self.FLUSH_EVERY_SEC)
            self.flush()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            with self.lock:  # type: ignore[union-attr]
                self.stream.write(line + "\n")
                if record.name != ACCESS_LOGGER or record.levelno >= logging.WARNING:
                    self.stream.flush()
        except Exception:
            self.handleError(record)


def configure_logging(json_lines: bool, level: str) -> None:
    """Install one stdout handler on the root logger; uvicorn's loggers propagate into it."""
    # Records never print the caller's file/line, thread or process: skipping their lookup makes
    # each record several microseconds cheaper, and there is one per request.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler: logging.Handler
    try:
        handler = BufferedStdoutHandler()
    except (OSError, ValueError):  # stdout is not a file descriptor (embedded, some test runners)
        handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter() if json_lines else PlainFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # ORCH_LOG_LEVEL is the level of our own loggers and uvicorn's. Every other library stays at
    # WARNING whatever it is: their DEBUG and INFO lines carry what we promise never to log (the
    # SQLite driver logs each statement with its parameters: memory text, prompt words).
    levelno = logging.getLevelName(level)
    root.setLevel(max(levelno, logging.WARNING))
    for name in (LOGGER_NAME, "uvicorn"):
        logging.getLogger(name).setLevel(levelno)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    uvicorn_error = logging.getLogger("uvicorn.error")
    uvicorn_error.filters[:] = [_without_request_lines]
    # Our middleware writes the access log; uvicorn's would duplicate it (and log raw paths).
    logging.getLogger("uvicorn.access").disabled = True


def _without_request_lines(record: logging.LogRecord) -> bool:
    """uvicorn logs each WebSocket handshake on its error logger with the raw path and query
    (``'%s - "WebSocket %s" 403'``), where a token can sit; the service has no WebSocket route,
    and ``python -m app`` does not accept the upgrade at all (the request then gets an ordinary
    404 and one access line). Under another uvicorn command line, these lines are dropped."""
    return not (isinstance(record.msg, str) and '"WebSocket %s"' in record.msg)


def flush_logs() -> None:
    """Write out buffered log lines (at shutdown: uvicorn ends with a re-raised signal, no atexit)."""
    for handler in logging.getLogger().handlers:
        handler.flush()


def get_logger(name: str = "") -> logging.Logger:
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)
