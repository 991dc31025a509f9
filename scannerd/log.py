"""Logging: every line, ours or a library's, is one masked JSON object (key=value on a TTY).

- structlog and the stdlib loggers (asyncio, paho, sdnotify) end in the same writer: a line
  from paho or an asyncio traceback is as JSON and as masked as our own.
- A last-line-of-defence pass masks anything shaped like a payment code, 医保码 or health
  card that reaches a log line, in case a call site forgets model.mask().
- The event loop does as little as possible per line: the caller's thread only snapshots the
  call (level, logger, time, a formatted traceback, copies of mutable values) into a queue;
  one writer thread masks, renders and writes. The writer is woken only when it went idle, and
  while lines keep coming it gathers them for a few milliseconds into one write, so a busy
  daemon pays neither a futex wake nor a write(2) per line.
- Writing never blocks the event loop: when journald or a pipe is slow and the queue is full,
  lines are dropped and counted (`dropped_lines()`), and the writer says how many.
"""

from __future__ import annotations

import atexit
import collections
import datetime
import json as jsonlib
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Mapping, MutableMapping
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
# The shortest text either pattern above can match: anything shorter holds no code shape.
_SHORTEST_SECRET = 12

# Lines waiting for the writer; beyond this the loop drops rather than waits.
QUEUE_LINES = 10_000
# While lines keep coming, the writer waits this long after a write to gather the next ones
# into one write (log lines may reach the stream this much later; scans are not delayed).
BATCH_S = 0.02


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
    if len(text) < _SHORTEST_SECRET:
        return text
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


# --- the caller's side: snapshot the call, nothing more ------------------------------------------

# Values the writer can mask later as they are: immutable, and rendered without repr().
_PLAIN = frozenset({str, int, float, bool, type(None)})
# structlog's method names → the level a line carries (as structlog.stdlib.add_log_level does).
_LEVEL_OF = {"warn": "warning", "exception": "error", "fatal": "critical"}
# Where the caller's wall-clock time waits for the writer (rendered there as "timestamp").
_TIME_KEY = "_t"


def _snapshot(fields: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Make `fields` safe to render later on another thread: a traceback is formatted now (only
    this thread knows its exception) and anything mutable or repr()'d is masked into a copy now."""
    if "exc_info" in fields:
        fields = structlog.processors.format_exc_info(None, "", fields)
    for key, value in fields.items():
        if type(value) not in _PLAIN:
            fields[key] = _mask_value(value)
    return fields


class _QueueLogger:
    """structlog's final logger: hands the processed call to the writer (see configure)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def _queue(self, fields: MutableMapping[str, Any]) -> None:
        writer = _writer
        if writer is not None:
            writer.put(fields)

    debug = info = warning = warn = error = critical = exception = fatal = msg = _queue


_loggers: dict[str, _QueueLogger] = {}


def _logger_for(*args: Any) -> _QueueLogger:
    """structlog's logger factory: one _QueueLogger per name, made once."""
    name = str(args[0]) if args else "scannerd"
    logger = _loggers.get(name)
    if logger is None:
        logger = _loggers[name] = _QueueLogger(name)
    return logger


def _stamp(logger: Any, method: str, fields: MutableMapping[str, Any]) -> Any:
    """structlog's one processor: level, logger, time; the call's dict goes on to _QueueLogger
    as it is (a tuple return: no copy into keyword arguments)."""
    fields["level"] = _LEVEL_OF.get(method, method)
    fields["logger"] = logger.name if isinstance(logger, _QueueLogger) else "?"
    fields[_TIME_KEY] = time.time()
    return (_snapshot(fields),), {}


class _StdlibHandler(logging.Handler):
    """Lines of stdlib loggers (asyncio, paho, sdnotify, warnings): the same snapshot, the same
    writer. The message is formatted here, since its arguments may change after the call."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields: dict[str, Any] = {"event": record.getMessage(), "level": record.levelname.lower(),
                                      "logger": record.name, _TIME_KEY: record.created}
            if record.exc_info:
                fields["exc_info"] = record.exc_info
            if record.stack_info:
                fields["stack"] = record.stack_info
            line = _snapshot(fields)
        except Exception:  # a broken log call must not break the caller
            line = {"event": "log_format_failed", "level": "error", "logger": record.name, _TIME_KEY: time.time()}
        writer = _writer
        if writer is not None:
            writer.put(line)


# --- the writer's side: mask, render, write ------------------------------------------------------

Render = Callable[[MutableMapping[str, Any]], str]


def _timestamp(t: float) -> str:
    # What structlog's TimeStamper(fmt="iso", utc=False) wrote: local time, no offset.
    return datetime.datetime.fromtimestamp(t).isoformat()


def _finish(fields: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Mask what the snapshot left plain and put the time in its place, as the line's last key."""
    t = fields.pop(_TIME_KEY, None)
    for key, value in fields.items():
        kind = type(value)
        if kind is str:
            if len(value) >= _SHORTEST_SECRET:
                fields[key] = mask_secrets(value)
        elif kind is int and abs(value) >= 10**11:
            fields[key] = mask_secrets(str(value))
    if t is not None:
        fields["timestamp"] = _timestamp(t)
    if "exception" in fields:
        fields["exception"] = fields.pop("exception")  # after the timestamp, as structlog had it
    return fields


def _json_renderer() -> Render:
    def render(fields: MutableMapping[str, Any]) -> str:
        return jsonlib.dumps(_finish(fields), ensure_ascii=False, default=repr)

    return render


def _logfmt_renderer() -> Render:
    logfmt = structlog.processors.LogfmtRenderer(key_order=["timestamp", "level", "event"], drop_missing=True)

    def render(fields: MutableMapping[str, Any]) -> str:
        return str(logfmt(None, "", _finish(fields)))

    return render


_STOP = object()


class _Writer:
    """One thread rendering and writing lines to a stream; the only place a slow stream blocks."""

    def __init__(self, stream: TextIO, capacity: int, render: Render) -> None:
        self.stream = stream
        self.capacity = capacity
        self.render = render
        self.pending: collections.deque[Any] = collections.deque()
        self.dropped = 0
        self._reported = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = threading.Event()  # cuts the batching pause short at close()
        # True while the writer is (about to be) asleep: only then does a put() wake it.
        self._idle = False
        self.thread = threading.Thread(target=self._run, name="scannerd-log-writer", daemon=True)
        self.thread.start()

    def put(self, item: Any) -> None:
        if len(self.pending) >= self.capacity:
            with self._lock:
                self.dropped += 1
            return
        self.pending.append(item)
        if self._idle:
            self._idle = False
            self._wake.set()

    def _run(self) -> None:
        pending = self.pending
        while True:
            self._wake.clear()
            self._idle = True
            if not pending:  # checked after _idle is set: a put() from now on wakes us
                self._wake.wait()
            self._idle = False
            lines: list[str] = []
            stop = False
            while pending:
                item = pending.popleft()
                if item is _STOP:
                    stop = True
                    break
                lines.append(self._render(item))
            self._write(lines)
            if stop:
                return
            self._closing.wait(BATCH_S)  # busy: let the next lines gather into one write

    def _render(self, item: MutableMapping[str, Any]) -> str:
        try:
            return self.render(item)
        except Exception:  # one unrenderable line must not stop the writer
            return jsonlib.dumps({"event": "log_format_failed", "level": "error", "logger": str(item.get("logger"))})

    def _write(self, lines: list[str]) -> None:
        with self._lock:
            lost, self._reported = self.dropped - self._reported, self.dropped
        if lost:
            lines.insert(0, f'{{"event":"log_lines_dropped","level":"warning","count":{lost}}}')
        if not lines:
            return
        try:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass  # stderr closed or gone: nothing left to tell

    def close(self, timeout: float) -> None:
        """Write what is queued, for at most `timeout` seconds (a stuck stream is abandoned)."""
        self.pending.append(_STOP)  # past the capacity check: the stop must get in
        self._idle = False
        self._closing.set()
        self._wake.set()
        self.thread.join(timeout)


_writer: _Writer | None = None


def dropped_lines() -> int:
    """Log lines dropped because the output could not keep up (for metrics)."""
    return _writer.dropped if _writer is not None else 0


def flush(timeout: float = 2.0) -> None:
    """Write out queued lines (at exit); gives up after `timeout` when the stream is stuck."""
    global _writer
    if _writer is not None:
        writer, _writer = _writer, None
        writer.close(timeout)


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
    numeric = logging.getLevelName(level.upper())
    flush()
    _writer = _Writer(stream, QUEUE_LINES, _json_renderer() if json else _logfmt_renderer())
    atexit.unregister(flush)  # once, however often configure() runs
    atexit.register(flush)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(_StdlibHandler())
    root.setLevel(numeric)
    logging.captureWarnings(True)
    _route_uncaught_exceptions()
    structlog.configure(
        processors=[_stamp],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_logger_for,
        cache_logger_on_first_use=False,
    )
