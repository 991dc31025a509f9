"""The log writer thread: woken only from idle, batching while busy, nothing lost or reordered,
and the caller's thread doing no more than a snapshot (issue 17 item 2)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator

import pytest
import structlog

from scannerd import log

from helpers import wait_for


class Collector:
    """A stream that records each write() (the writer's only thread touches it)."""

    def __init__(self) -> None:
        self.writes: list[str] = []
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def lines(self) -> list[dict[str, object]]:
        with self._lock:
            text = "".join(self.writes)
        return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def stream() -> Iterator[Collector]:
    out = Collector()
    log.configure("info", json=True, stream=out)  # type: ignore[arg-type]
    try:
        yield out
    finally:
        log.flush(timeout=5)
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
        logging.getLogger().setLevel(logging.WARNING)
        logging.captureWarnings(False)


def test_a_line_logged_while_the_writer_sleeps_wakes_it(stream: Collector) -> None:
    logger = structlog.get_logger("scannerd.t")
    writer = log._writer
    assert writer is not None
    for i in range(30):
        # Each line is logged once the writer is asleep (the previous line is out and nothing
        # follows it): only a wake-up from idle can bring it out.
        wait_for(lambda: writer._idle, 30)
        logger.info("ping", i=i)
        wait_for(lambda i=i: any(o.get("i") == i for o in stream.lines()), 30)
    assert [o["i"] for o in stream.lines()] == list(range(30))


def test_many_threads_lose_nothing_keep_their_order_and_share_writes(stream: Collector) -> None:
    per_thread, threads = 2000, 4

    def spam(t: int) -> None:
        logger = structlog.get_logger(f"scannerd.t{t}")
        for i in range(per_thread):
            logger.info("scan", t=t, i=i, masked="1345**********6789")

    workers = [threading.Thread(target=spam, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    log.flush(timeout=30)
    lines = stream.lines()
    assert len(lines) == per_thread * threads
    for t in range(threads):
        assert [o["i"] for o in lines if o["t"] == t] == list(range(per_thread))
        assert all(o["logger"] == f"scannerd.t{t}" for o in lines if o["t"] == t)
    # Lines that came faster than the writer wrote went out together, not one write(2) each.
    assert len(stream.writes) < len(lines) / 4


def test_a_value_changed_after_the_call_is_logged_as_it_was(stream: Collector) -> None:
    class Shifty:
        def __init__(self) -> None:
            self.state = "before"

        def __repr__(self) -> str:
            return f"Shifty({self.state})"

    items, shifty = ["a"], Shifty()
    structlog.get_logger("scannerd.t").info("snap", items=items, obj=shifty, d={"k": items})
    items.append("later")
    shifty.state = "after"
    log.flush(timeout=10)
    (line,) = stream.lines()
    assert line["items"] == ["a"] and line["obj"] == "Shifty(before)" and line["d"] == {"k": ["a"]}


def test_strings_are_masked_on_the_writer_thread_not_the_caller_s(stream: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[str] = []
    real = log.mask_secrets

    def recording(text: str) -> str:
        threads.append(threading.current_thread().name)
        return real(text)

    monkeypatch.setattr(log, "mask_secrets", recording)
    structlog.get_logger("scannerd.t").info("scan", note="paid with 134567890123456789", device="window-3")
    log.flush(timeout=10)
    (line,) = stream.lines()
    assert line["note"] == "paid with 1345**********6789"
    assert threads and set(threads) == {"scannerd-log-writer"}


def test_levels_loggers_and_stdlib_lines_keep_their_fields(stream: Collector) -> None:
    logger = structlog.get_logger("scannerd.t")
    logger.warning("w")
    logger.debug("not at info level")
    try:
        raise KeyError("134567890123456789")
    except KeyError:
        logger.exception("e")
    logging.getLogger("paho").error("lost %s", "broker")
    log.flush(timeout=10)
    lines = stream.lines()
    assert [(o["event"], o["level"], o["logger"]) for o in lines] == [
        ("w", "warning", "scannerd.t"), ("e", "error", "scannerd.t"), ("lost broker", "error", "paho")]
    assert "KeyError: '1345**********6789'" in str(lines[1]["exception"])
    assert all(isinstance(o["timestamp"], str) and len(str(o["timestamp"])) == 26 for o in lines)
