"""The event log: connections, subscriptions, flushes and errors, newest at the bottom."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from rich.text import Text
from textual.widgets import RichLog

from kline_tui.recorder.events import Event
from kline_tui.ui import format as fmt

__all__ = ["EventLogPanel"]

_LEVEL = {
    logging.DEBUG: ("·", "dim"),
    logging.INFO: (" ", ""),
    logging.WARNING: ("!", "yellow"),
    logging.ERROR: ("✖", "bold red"),
}


class EventLogPanel(RichLog):
    """A scrolling log fed with the pipeline's events at the app's repaint rate."""

    def __init__(
        self, *, id: str | None = None, time_format: Callable[[float], str] = fmt.clock_time
    ) -> None:
        super().__init__(
            id=id,
            max_lines=1000,
            min_width=20,
            wrap=True,
            markup=False,
            highlight=False,
            auto_scroll=True,
        )
        self.time_format = time_format

    def append(self, events: Iterable[Event]) -> None:
        for event in events:
            mark, style = _LEVEL.get(event.level, (" ", ""))
            line = Text()
            line.append(self.time_format(event.at), style="dim")
            line.append(f" {mark} ", style=style)
            line.append(event.message, style=style)
            self.write(line)

    def reload(self, events: Iterable[Event]) -> None:
        """Show exactly these events (the latest ones kept by the log)."""
        self.clear()
        self.append(events)
