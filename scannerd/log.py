"""Logging: every line, ours or a library's, is one masked JSON object (key=value on a TTY).

- structlog and the stdlib loggers (asyncio, paho, sdnotify) share one pipeline: structlog's
  stdlib integration renders both through the same ProcessorFormatter, so a line from paho or
  an asyncio traceback is as JSON and as masked as our own.
- A last-line-of-defence processor masks anything shaped like a payment code, 医保码 or health
  card that reaches a log line, in case a call site forgets model.mask().
- Writing never blocks the event loop: lines are rendered on the caller's thread and handed
  to one writer thread through a bounded queue. When journald or a pipe is slow and the queue
  is full, lines are dropped and counted (`dropped_lines()`), and the writer says how many.
"""

from __future__ import annotations

import atexit
import json as jsonlib
import logging
import queue
import re
import sys
import threading
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

__all__ = ["configure", "dropped_lines", "flush", "mask_event_dict", "mask_secrets"]

# 12+ digits in a row is shaped like a payment code, a 医保码 (424… 28 digits), an ID number or
# a card number.
_LONG_DIGITS = re.compile(r"\d{12,}")
# 20+ letters and digits in a row (the base64 alphabet without '/'; '/', '-', '_', '.' and '='
# split topics, paths and names into short pieces): EMV CPV01 codes (hQVDUFYwMQ…),
# the 64-hex health card id, `opc…` 医保码 and tokens whose shape is not public. Masked only when
# it holds a digit and letters (below), so words, identifiers and metric names pass.
# Linear time: a greedy run with nothing after it to backtrack for (a hostile 64 KB line is
# masked in one pass).
_LONG_TOKEN = re.compile(r"(?<![A-Za-z0-9+])[A-Za-z0-9+]{20,}")
# Event ids are ULIDs: 26 Crockford base32 characters, first one 0–7. They name a scan without
# revealing it and are what an operator greps for, so they stay readable.
_ULID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")
_MIN_DIGITS, _MIN_LETTERS = 1, 2

# Lines waiting for the writer; beyond this the loop drops rather than waits.
QUEUE_LINES = 10_000


def _mask_middle(s: str) -> str:
    return s[:4] + "*" * (len(s) - 8) + s[-4:]


def _mask_token(match: re.Match[str]) -> str:
    s = match.group(0)
    if _ULID.fullmatch(s):
        return s
    digits = sum(c.isdigit() for c in s)
    letters = sum(c.isalpha() for c in s)
    if digits < _MIN_DIGITS or letters < _MIN_LETTERS:
        return s
    return _mask_middle(s)


def mask_secrets(text: str) -> str:
    """`text` with every code-shaped run masked in the middle (4 characters kept each side)."""
    text = _LONG_DIGITS.sub(lambda m: _mask_middle(m.group(0)), text)
    return _LONG_TOKEN.sub(_mask_token, text)


def _mask_value(value: Any) -> Any:
    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        return value if abs(value) < 10**11 else mask_secrets(str(value))
    if isinstance(value, Mapping):
        return {k: _mask_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_mask_value(v) for v in value]
    # Anything else would be repr()'d by the renderer: mask that text instead.
    return mask_secrets(repr(value))


def mask_event_dict(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask every value, nested ones and reprs of objects included."""
    for key, value in event_dict.items():
        if not key.startswith("_"):  # structlog's own bookkeeping (_record, _from_structlog)
            event_dict[key] = _mask_value(value)
    return event_dict


# --- the writer -----------------------------------------------------------------------------


class _Writer:
    """One thread writing rendered lines to a stream; the only place a slow stream can block."""

    def __init__(self, stream: TextIO, capacity: int) -> None:
        self.stream = stream
        self.lines: queue.Queue[str | None] = queue.Queue(capacity)
        self.dropped = 0
        self._reported = 0
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="scannerd-log-writer", daemon=True)
        self.thread.start()

    def put(self, line: str) -> None:
        try:
            self.lines.put_nowait(line)
        except queue.Full:
            with self._lock:
                self.dropped += 1

    def _run(self) -> None:
        while True:
            line = self.lines.get()
            if line is None:
                return
            with self._lock:
                lost, self._reported = self.dropped - self._reported, self.dropped
            try:
                if lost:
                    self.stream.write(f'{{"event":"log_lines_dropped","level":"warning","count":{lost}}}\n')
                self.stream.write(line + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass  # stderr closed or gone: nothing left to tell

    def close(self, timeout: float) -> None:
        """Write what is queued, for at most `timeout` seconds (a stuck stream is abandoned)."""
        try:
            self.lines.put(None, timeout=timeout)
        except queue.Full:
            return
        self.thread.join(timeout)


class _QueueHandler(logging.Handler):
    """Formats on the caller's thread (masking, tracebacks), queues the line, never waits."""

    def __init__(self, writer: _Writer) -> None:
        super().__init__()
        self.writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            line = jsonlib.dumps({"event": "log_format_failed", "level": "error", "logger": record.name})
        self.writer.put(line)


_writer: _Writer | None = None


def dropped_lines() -> int:
    """Log lines dropped because the output could not keep up (for metrics)."""
    return _writer.dropped if _writer is not None else 0


def flush(timeout: float = 2.0) -> None:
    """Write out queued lines (at exit); gives up after `timeout` when the stream is stuck."""
    global _writer
    if _writer is not None:
        _writer.close(timeout)
        _writer = None


def _route_uncaught_exceptions() -> None:
    """Tracebacks Python prints itself (an exception ending a thread or the main program, one
    ignored in a __del__) go through logging too: one masked JSON line each, not raw text."""
    crash = logging.getLogger("scannerd.crash")

    def excepthook(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
        crash.critical("uncaught_exception", exc_info=(kind, exc, tb))
        flush()

    def thread_excepthook(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        thread = args.thread.name if args.thread is not None else "?"
        crash.error("thread_exception thread=%s", thread, exc_info=(args.exc_type, args.exc_value, args.exc_traceback))  # type: ignore[arg-type]

    def unraisablehook(unraisable: Any) -> None:
        exc = unraisable.exc_value
        info = (type(exc), exc, unraisable.exc_traceback) if exc is not None else None
        crash.warning("exception_ignored in %r: %s", unraisable.object, unraisable.err_msg or "", exc_info=info)

    sys.excepthook = excepthook
    threading.excepthook = thread_excepthook
    sys.unraisablehook = unraisablehook


def configure(level: str = "info", json: bool | None = None, stream: TextIO | None = None) -> None:
    """Route structlog and stdlib logging to `stream` (default stderr) as described above."""
    global _writer
    stream = sys.stderr if stream is None else stream
    if json is None:
        json = not stream.isatty()
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if json
        else structlog.processors.LogfmtRenderer(key_order=["timestamp", "level", "event"], drop_missing=True)
    )
    numeric = logging.getLevelName(level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=False),
    ]
    formatter = structlog.stdlib.ProcessorFormatter(
        # Lines from stdlib loggers (asyncio, paho, sdnotify) get the same fields as ours.
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # A traceback becomes one string field of the one JSON line, then is masked.
            structlog.processors.format_exc_info,
            mask_event_dict,
            renderer,
        ],
    )
    flush()
    _writer = _Writer(stream, QUEUE_LINES)
    atexit.unregister(flush)  # once, however often configure() runs
    atexit.register(flush)
    handler = _QueueHandler(_writer)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    logging.captureWarnings(True)
    _route_uncaught_exceptions()
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
