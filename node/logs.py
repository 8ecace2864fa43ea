"""``village run``'s logging: one handler on the root logger, as text or as JSON lines, and py-libp2p's records
routed through it.

Every line carries the time, the level, the subsystem (the logger's name: ``village.<subsystem>`` for ours,
``libp2p.<module>`` for py-libp2p's) and the message; peers' text in it is shown escaped (:mod:`node.textsafe`):

* ``text`` (the default): ``2026-12-06 03:11:33,409 INFO village.betanet: betanet listening on ...``
* ``json`` (``village run --log-format json``, for journald/Loki): one JSON object per line with ``time`` (RFC 3339,
  UTC, milliseconds), ``level``, ``subsystem``, ``message``, then ``peer`` (the mesh peer ID a line is about, given
  as ``extra={"peer": ...}``) and ``link`` (the link whose frame was being handled: :data:`LOG_LINK`) where known,
  and ``exception``/``stack`` when there is one. Control characters are JSON escapes (a record is always one line),
  and DEL, C1 and bidi controls are ``\\uNNNN`` (:func:`~node.textsafe.safe_json`).
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any

from node.textsafe import safe_json, safe_text

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LOG_FORMATS = ("text", "json")
# The link (its link ID) a task is serving; node.Node sets it in each link's task, whose children inherit it.
LOG_LINK: ContextVar[str | None] = ContextVar("village_log_link", default=None)


class SafeFormatter(logging.Formatter):
    """A log line with :func:`safe_text` over it: whatever a peer got into the message (or an exception's text) is
    shown escaped, never acted on by the terminal. A traceback keeps its own line breaks."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return safe_text(super().formatMessage(record))

    def formatException(self, ei: object) -> str:
        return "\n".join(safe_text(line) for line in super().formatException(ei).split("\n"))  # type: ignore[arg-type]

    def formatStack(self, stack_info: str) -> str:
        return "\n".join(safe_text(line) for line in super().formatStack(stack_info).split("\n"))


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module docstring for its keys)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "subsystem": record.name,
            "message": record.getMessage(),
        }
        peer = getattr(record, "peer", None)
        if peer is not None:
            out["peer"] = str(peer)
        link = LOG_LINK.get()
        if link is not None:
            out["link"] = link
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return safe_json(json.dumps(out, ensure_ascii=False))


# Libraries whose loggers are rewired to ours. py-libp2p's import (libp2p/utils/logging.py ``setup_logging``)
# sets ``propagate = False`` on "libp2p" with no handler (so its records reached only logging.lastResort: bare
# text, no time or subsystem), or, with LIBP2P_DEBUG, its own handlers and format on "libp2p" and "libp2p.<mod>".
LIBRARY_LOGGERS = ("libp2p",)


# py-libp2p's auto-connector (libp2p/network/auto_connector.py, 0.8) logs its state at INFO on every cycle — every
# 10 s while the node has fewer than 50 connections, as an idle node always has — and its import forces that
# logger to INFO: "... below target (200, ...); initiating 200 new dials" every 10 s with an empty peerstore.
AUTO_CONNECTOR_LOGGER = "libp2p.network.auto_connector"
# The per-cycle lines, by the start of their format string (the connections made stay as they are).
AUTO_CONNECTOR_CYCLE_LINES = ("AUTO_CONNECTOR_STATE:", "Connections (", "AutoConnector candidate pool low")


class RepeatedLineFilter(logging.Filter):
    """Drops a line that says again what the last one of its kind said: a record whose format string starts with one
    of ``prefixes`` passes only when its text differs from the last record passed for that prefix (so an idle node
    logs its auto-connector state once, then again when it changes); :attr:`dropped` counts the others. Other
    records pass untouched, and so does every record above INFO (a warning or an error is never dropped as a
    repeat) and one whose text cannot be formatted (bad arguments: the handler reports it, the caller never sees
    it). State: one last text per prefix."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.dropped = 0
        self._last: dict[str, str] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        template = record.msg
        if record.levelno > logging.INFO or not isinstance(template, str) or not template.startswith(self.prefixes):
            return True
        prefix = next(p for p in self.prefixes if template.startswith(p))
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a filter runs outside Handler.handleError: it would reach the caller
            return True
        if self._last.get(prefix) == text:
            self.dropped += 1
            return False
        self._last[prefix] = text
        return True


def quiet_auto_connector() -> RepeatedLineFilter:
    """Put a :class:`RepeatedLineFilter` over py-libp2p's auto-connector's per-cycle lines (replacing one put there
    before: the logger is the process's); returns it."""
    logger = logging.getLogger(AUTO_CONNECTOR_LOGGER)
    for old in [f for f in logger.filters if isinstance(f, RepeatedLineFilter)]:
        logger.removeFilter(old)
    quiet = RepeatedLineFilter(AUTO_CONNECTOR_CYCLE_LINES)
    logger.addFilter(quiet)
    return quiet


def repeated_lines_dropped() -> dict[str, int]:
    """The lines :class:`RepeatedLineFilter` dropped in this process, by logger (py-libp2p's auto-connector's:
    0 until it drops one), for the metrics (``village_log_lines_dropped_total``). The loggers are the process's,
    so several nodes in one process share the count, as they share the lines."""
    logger = logging.getLogger(AUTO_CONNECTOR_LOGGER)
    return {AUTO_CONNECTOR_LOGGER: sum(f.dropped for f in logger.filters if isinstance(f, RepeatedLineFilter))}


def adopt_library_loggers(names: tuple[str, ...] = LIBRARY_LOGGERS) -> None:
    """Route the loggers ``names`` (and their existing descendants) through the root handler, in our format: their
    own handlers are removed and they propagate again. Their levels are kept (py-libp2p: WARNING unless
    LIBP2P_DEBUG says otherwise), and py-libp2p's auto-connector says each state once (:func:`quiet_auto_connector`).
    Call it after the library is imported: its import configures its loggers."""
    prefixes = tuple(f"{name}." for name in names)
    for name in (*names, *(n for n in list(logging.Logger.manager.loggerDict) if n.startswith(prefixes))):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
    if "libp2p" in names:
        quiet_auto_connector()


def install_log_handler(
    level: str | int, stream: IO[str], *, fmt: str = "text", adopt: tuple[str, ...] = LIBRARY_LOGGERS
) -> logging.Handler:
    """``village run``'s logging: a handler on the root logger writing :class:`SafeFormatter` lines (``fmt="text"``)
    or :class:`JsonFormatter` objects (``fmt="json"``) to ``stream``, the loggers ``adopt`` of libraries imported
    already included (:func:`adopt_library_loggers`)."""
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else SafeFormatter(LOG_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    adopt_library_loggers(adopt)
    return handler
