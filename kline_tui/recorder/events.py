"""The event log: connections, subscriptions, flushes and errors, as one-line messages.

The CLI prints them on stderr; the UI shows the most recent ones. Both read the same log. Every
message is made safe for a terminal here, once: messages quote servers (close reasons, error
messages, symbols), and an escape sequence in one must not reach the screen or a log file.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from kline_tui.safe_text import safe_text

__all__ = ["MESSAGE_LIMIT", "Event", "EventLog"]

MESSAGE_LIMIT = 1000  # characters of one event's message; longer ones end in an ellipsis


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened. `at` is local wall time (for display only)."""

    at: float
    level: int  # logging levels: DEBUG, INFO, WARNING, ERROR
    message: str


class EventLog:
    """Keeps the latest events and passes each to the subscribers."""

    def __init__(self, keep: int = 1000) -> None:
        self.recent: collections.deque[Event] = collections.deque(maxlen=keep)
        self._subscribers: list[Callable[[Event], None]] = []
        self.errors = 0

    def subscribe(self, callback: Callable[[Event], None]) -> None:
        """Call `callback` with every event from now on."""
        self._subscribers.append(callback)

    def emit(self, level: int, message: str, at: float | None = None) -> None:
        """Record one event (its message stripped of control characters and cut to
        MESSAGE_LIMIT) and pass it to every subscriber. `at` is when it happened (local wall
        time; now by default: another process's events keep their own time)."""
        event = Event(time.time() if at is None else at, level, safe_text(message, MESSAGE_LIMIT))
        self.recent.append(event)
        if level >= logging.ERROR:
            self.errors += 1
        for callback in self._subscribers:
            callback(event)

    def debug(self, message: str) -> None:
        self.emit(logging.DEBUG, message)

    def info(self, message: str) -> None:
        self.emit(logging.INFO, message)

    def warning(self, message: str) -> None:
        self.emit(logging.WARNING, message)

    def error(self, message: str) -> None:
        self.emit(logging.ERROR, message)
